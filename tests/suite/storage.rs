//! What is stored, and how: the envelope, bad values under our keys, the
//! key layout, and indexes that never outgrow the live keys.

use std::time::Duration;

use crate::fixtures::*;
use cacheme::__private::wire::{Envelope, MAGIC, State, VERSION};
use std::convert::Infallible;

fn raw_get(conn: &mut redis::Connection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(conn).expect("GET")
}

fn raw_set(conn: &mut redis::Connection, key: &str, value: &[u8]) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .exec(conn)
        .expect("SET");
}

/// The stored value is an envelope: magic, version, state, codec, write time,
/// then the MessagePack payload; invalidation flips the state byte in place
/// and keeps the TTL.
#[tokio::test]
async fn values_are_envelopes_and_invalidation_flips_state_in_place() {
    let fx = Fixture::redis();
    let mut conn = fx.redis_connection().expect("redis");
    let cats = fx.cache.objects::<CatNode>();
    cats.get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "Tom")) })
        .await
        .expect("load");
    let bytes = raw_get(&mut conn, "CM:{cat:1}").expect("stored");
    assert_eq!(&bytes[..4], &[MAGIC, VERSION, 0, 0]);
    let envelope = Envelope::parse(&bytes).expect("our envelope");
    assert_eq!(envelope.state, State::Fresh);
    assert_eq!(envelope.decode::<Cat>().expect("payload"), cat(1, "Tom"));
    let payload: Cat = rmp_serde_decode(envelope.payload);
    assert_eq!(
        payload,
        cat(1, "Tom"),
        "plain MessagePack, readable by any client"
    );

    let ttl_before: i64 = redis::cmd("PTTL")
        .arg("CM:{cat:1}")
        .query(&mut conn)
        .expect("PTTL");
    cats.invalid(1).await.expect("invalidation");
    let bytes = raw_get(&mut conn, "CM:{cat:1}").expect("still stored");
    assert_eq!(
        Envelope::parse(&bytes).expect("envelope").state,
        State::Stale
    );
    let ttl_after: i64 = redis::cmd("PTTL")
        .arg("CM:{cat:1}")
        .query(&mut conn)
        .expect("PTTL");
    assert!(
        ttl_after > 0 && ttl_after <= ttl_before,
        "ttl kept: {ttl_before} -> {ttl_after}"
    );
}

fn rmp_serde_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    // The payload is MessagePack with named fields; serde_json is not enough
    // here, so go through cacheme's own codec, which is rmp-serde.
    cacheme::Codec::MessagePack
        .decode(bytes)
        .expect("MessagePack")
}

/// Bytes under our key that are not a value of ours (foreign, truncated, a
/// newer format, or a payload of another type) are a miss: the loader runs,
/// its value overwrites them, and the caller never sees an error.
#[tokio::test]
async fn unreadable_values_are_misses_and_are_overwritten() {
    let fx = Fixture::redis();
    let mut conn = fx.redis_connection().expect("redis");
    let cats = fx.cache.objects::<CatNode>();
    let good = {
        cats.get_or_load(100, || async { Ok::<_, Infallible>(cat(100, "x")) })
            .await
            .expect("load");
        raw_get(&mut conn, "CM:{cat:100}").expect("stored")
    };
    let mut newer = good.clone();
    newer[1] = VERSION + 1;
    let other_type = {
        let payload = cacheme::Codec::MessagePack
            .encode(&"a string, not a Cat")
            .expect("encode");
        let header = cacheme::__private::wire::Header {
            codec: cacheme::Codec::MessagePack,
            written_at_ms: 1,
            claim_seq: 0,
            fresh_until_ms: 0,
            dependencies: &[],
        };
        cacheme::__private::wire::seal(&header, &payload).expect("no names")
    };
    // A value of protocol v1: read as unreadable, reloaded, overwritten.
    let mut v1 = vec![MAGIC, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    v1.extend_from_slice(&good[good.len() - 10..]);
    let cases: [(&str, Vec<u8>); 6] = [
        ("foreign", b"hello from another program".to_vec()),
        ("empty", Vec::new()),
        ("truncated", good[..7].to_vec()),
        ("newer format", newer),
        ("older format (protocol v1)", v1),
        ("payload of another type", other_type),
    ];
    for (id, (what, bytes)) in (1u64..).zip(cases) {
        let key = format!("CM:{{cat:{id}}}");
        raw_set(&mut conn, &key, &bytes);
        assert_eq!(cats.get(id).await, None, "{what}: a miss");
        let loaded = cats
            .get_or_load(id, || async move { Ok::<_, Infallible>(cat(id, "fresh")) })
            .await
            .expect("never an error");
        assert_eq!(loaded, cat(id, "fresh"), "{what}");
        let stored = raw_get(&mut conn, &key).expect("overwritten");
        assert_eq!(
            Envelope::parse(&stored)
                .and_then(|e| e.decode::<Cat>())
                .expect("ours now"),
            cat(id, "fresh"),
            "{what}: overwritten by the fresh load"
        );
        assert_eq!(cats.get(id).await, Some(cat(id, "fresh")));
    }
    assert!(fx.cache.stats().unreadable >= 5, "{:?}", fx.cache.stats());
}

on_both_stores! {
    /// The struct behind a key changed: the old payload no longer decodes, so
    /// it is a miss and is replaced.
    async fn a_changed_type_is_a_miss(fx) {
        fx.cache.lookup::<String>("cat:1").load(|| async { Ok::<_, Infallible>("old shape".to_owned()) }).await.expect("load");
        let cats = fx.cache.objects::<CatNode>();
        assert_eq!(cats.get(1).await, None);
        let loaded = cats.get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "new shape")) }).await.expect("load");
        assert_eq!(loaded, cat(1, "new shape"));
        assert_eq!(cats.get(1).await, Some(cat(1, "new shape")));
    }

    /// Payloads of at least `compress_above` bytes are stored LZ4-compressed
    /// (here a 10 KB value in under a third of its size) and read back by
    /// caches with any setting.
    async fn large_values_are_stored_compressed(fx) {
        fx.cache.update_settings(|s| s.compress_above = Some(1024));
        let big: Vec<String> = (0..600).map(|i| format!("cat {i} likes fish")).collect();
        let plain = cacheme::Codec::MessagePack.encode(&big).expect("encodes").len();
        assert!(plain > 10_000, "{plain}");
        let loaded = fx.cache.lookup::<Vec<String>>("compressed").load(|| async { Ok::<_, Infallible>(big.clone()) }).await.expect("load");
        assert_eq!(loaded, big);
        fx.cache.update_settings(|s| s.compress_above = None);
        assert_eq!(fx.cache.lookup::<Vec<String>>("compressed").get().await, Some(big.clone()));
        if let Some(server) = &fx.server {
            let mut conn = admin_connection(server);
            let key = format!("{}{{compressed}}", fx.cache.prefix());
            let stored: usize = redis::cmd("STRLEN").arg(&key).query(&mut conn).expect("STRLEN");
            assert!(stored * 3 < plain, "stored {stored} bytes of {plain}");
        }
        // Small values stay as they are.
        fx.cache.update_settings(|s| s.compress_above = Some(1024));
        fx.cache.lookup::<String>("small").load(|| async { Ok::<_, Infallible>("tiny".to_owned()) }).await.expect("load");
        assert_eq!(fx.cache.lookup::<String>("small").get().await.as_deref(), Some("tiny"));
    }

    /// Values larger than `max_value_size` are returned but not stored.
    async fn oversized_values_are_returned_not_stored(fx) {
        fx.cache.update_settings(|s| s.max_value_size = 64);
        let big = "x".repeat(1000);
        let value = fx.cache.lookup::<String>("big").load(|| async { Ok::<_, Infallible>(big.clone()) }).await.expect("load");
        assert_eq!(value, big);
        assert_eq!(fx.cache.lookup::<String>("big").get().await, None);
        assert_eq!(fx.cache.stats().not_stored, 1);
        // The lease was released: the next caller loads at once.
        let again = fx.cache.lookup::<String>("big").load(|| async { Ok::<_, Infallible>("x".to_owned()) }).await.expect("load");
        assert_eq!(again, "x");
    }
}

/// A key, its lease and its value share a Redis Cluster hash slot (hash
/// tags), so every script touches a single slot.
#[tokio::test]
async fn a_key_and_its_lease_share_a_hash_slot() {
    for key in ["cat:1", "owner:1:cat:2", "a}b", "{x}", "猫"] {
        // The layout of docs/data-model.md: `{prefix}{{key}}` and its lease.
        let value = format!("CM:{{{key}}}");
        let lease = format!("{value}:lease");
        assert_eq!(
            hash_slot(&value),
            hash_slot(&lease),
            "{key}: {value} vs {lease}"
        );
    }
    // The slots of different keys differ (the tag is the key, not the prefix).
    assert_ne!(hash_slot("CM:{cat:1}"), hash_slot("CM:{cat:2}"));
}

/// What invalidation keeps in Redis never outgrows its bound: tags and
/// groups have no index keys (values list their dependencies), and the
/// invalidation log is capped at `invalidation_log_len` entries (about:
/// Redis trims capped streams in whole nodes of ~100 entries). Once the
/// values expire, only the sequence and its log are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_state_stays_bounded() {
    let fx = Fixture::redis();
    let mut conn = fx.redis_connection().expect("redis");
    let cache = fx.cache.clone();
    cache.update_settings(|s| {
        s.op_timeout = Duration::from_secs(10);
        s.invalidation_log_len = 100;
    });
    for id in 0..1_000u64 {
        cache
            .lookup::<u64>(format!("exp:{id}"))
            .ttl(Some(Duration::from_millis(500)))
            .depends_on(format!("group:{}", id % 10))
            .load(|| async move { Ok::<_, Infallible>(id) })
            .await
            .expect("load");
    }
    for round in 0..1_000u64 {
        cache
            .create_invalidation()
            .invalid_key(format!("group:{}", round % 10))
            .run()
            .await
            .expect("invalidation");
    }
    let xlen: u64 = redis::cmd("XLEN")
        .arg("CM:{inv}:log")
        .query(&mut conn)
        .expect("XLEN");
    assert!((100..=300).contains(&xlen), "the log holds {xlen} entries");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["CM:{inv}:log", "CM:{inv}:seq"]);
}
