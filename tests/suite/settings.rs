//! Settings and connections (the seed's `set_connection` and
//! `update_settings`): defaults, `ENABLE_CACHE` checked on every call, the
//! prefix, TTLs, and the three ways to reach Redis.

use std::time::Duration;

use crate::fixtures::*;
use cacheme::{Cache, Settings};
use cacheme_test_support::RedisServer;
use std::convert::Infallible;

#[test]
fn defaults_are_the_seeds() {
    let settings = Settings::default();
    assert!(settings.stale, "STALE: True");
    assert_eq!(settings.herd_retries, 5, "THUNDERING_HERD_RETRY_COUNT: 5");
    // The seed polled every 20 ms; waiters here are woken by the fill, so
    // the interval is only a bound, and longer: 5 × 1 s covers loads of up
    // to ~5 s with one load (5 × 20 ms sent waiters to load after 100 ms).
    assert_eq!(settings.herd_interval, Duration::from_secs(1));
    assert_eq!(settings.default_ttl, None);
    assert!(settings.op_timeout < Duration::from_secs(1));
    let cache = Cache::builder().build().expect("memory");
    assert_eq!(cache.prefix(), "CM:", "REDIS_CACHE_PREFIX default");
    assert!(cache.is_enabled(), "ENABLE_CACHE default");
}

#[test]
fn prefixes_with_hash_tag_braces_are_refused() {
    let error = Cache::builder()
        .prefix("CM{x}:")
        .build()
        .expect_err("braces");
    assert!(error.to_string().contains("hash tags"), "{error}");
}

#[test]
fn bad_urls_are_reported() {
    let error = Cache::builder()
        .redis_url("http://nope")
        .build()
        .expect_err("not a redis url");
    assert!(matches!(error, cacheme::Error::Connect { .. }), "{error}");
}

on_both_stores! {
    /// `ENABLE_CACHE` is read on every call: turning it off makes every call
    /// run its loader and leaves the store alone; turning it on again caches.
    async fn enabled_is_checked_on_every_call(fx) {
        let cats = fx.cache.objects::<CatNode>();
        let loads = Counter::default();
        let load = || async { loads.hit(); Ok::<_, Infallible>(cat(1, "Tom")) };
        fx.cache.set_enabled(false);
        cats.get_or_load(1, load).await.expect("load");
        cats.get_or_load(1, load).await.expect("load");
        assert_eq!(loads.get(), 2);
        assert_eq!(cats.get(1).await, None);
        if let Some(mut conn) = fx.redis_connection() {
            assert!(redis_keys(&mut conn).is_empty(), "disabled: nothing written");
        }
        fx.cache.set_enabled(true);
        cats.get_or_load(1, load).await.expect("load");
        cats.get_or_load(1, load).await.expect("load");
        assert_eq!(loads.get(), 3);
    }

    /// `update_settings`: a change takes effect on the next call.
    async fn settings_update_on_the_next_call(fx) {
        let cats = fx.cache.objects::<CatNode>();
        cats.get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "Tom")) }).await.expect("load");
        cats.invalid(1).await.expect("invalidation");
        // CatNode does not set `stale`, so the global setting decides.
        assert_eq!(cats.get(1).await, Some(cat(1, "Tom")));
        fx.cache.update_settings(|s| s.stale = false);
        assert_eq!(cats.get(1).await, None);
        fx.cache.update_settings(|s| s.stale = true);
        assert_eq!(cats.get(1).await, Some(cat(1, "Tom")));
    }

    /// "Timeout(ttl) support": values expire by the store's own clock.
    async fn ttl_expires_values(fx) {
        let short = fx.cache.objects::<ShortNode>();
        short.get_or_load(1, || async { Ok::<_, Infallible>(11) }).await.expect("load");
        assert_eq!(short.get(1).await, Some(11));
        if let Some(mut conn) = fx.redis_connection() {
            let pttl: i64 = redis::cmd("PTTL").arg("CM:{short:1}").query(&mut conn).expect("PTTL");
            assert!((1..=1000).contains(&pttl), "redis holds the ttl: {pttl}");
            let ttl: i64 = redis::cmd("PTTL").arg("CM:{cat:1}").query(&mut conn).expect("PTTL");
            assert_eq!(ttl, -2, "nothing else was written");
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(short.get(1).await, None);
    }

    /// The default TTL applies to nodes that set none; a node's own TTL wins.
    async fn default_ttl_applies_to_nodes_without_one(fx) {
        fx.cache.update_settings(|s| s.default_ttl = Some(Duration::from_millis(500)));
        fx.cache.lookup::<u32>("no-ttl").load(|| async { Ok::<_, Infallible>(1) }).await.expect("load");
        fx.cache.objects::<CatNode>().get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "Tom")) }).await.expect("load");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(fx.cache.lookup::<u32>("no-ttl").get().await, None);
        assert_eq!(fx.cache.objects::<CatNode>().get(1).await, Some(cat(1, "Tom")), "CatNode's ttl is 300 s");
    }
}

/// The prefix starts every key written to Redis.
#[tokio::test]
async fn prefix_starts_every_key() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix("MYCACHE:")
        .build()
        .expect("cache");
    cache
        .objects::<OwnedCatNode>()
        .get_or_load((1, 2), || async { Ok::<_, Infallible>(cat(2, "c")) })
        .await
        .expect("load");
    let keys = redis_keys(&mut server.connection());
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("MYCACHE:")), "{keys:?}");
    assert!(
        keys.contains(&"MYCACHE:{owner:1:cat:2}".to_owned()),
        "{keys:?}"
    );
    // Tags and groups have no keys of their own (they live in the values'
    // envelopes); the invalidation sequence does.
    assert!(keys.contains(&"MYCACHE:{inv}:seq".to_owned()), "{keys:?}");
}

/// Two caches in one process, with different prefixes on one server, do
/// not see each other's values.
#[tokio::test]
async fn two_caches_in_one_process() {
    let server = RedisServer::start();
    let a = Cache::builder()
        .redis_url(server.url())
        .prefix("A:")
        .build()
        .expect("a");
    let b = Cache::builder()
        .redis_url(server.url())
        .prefix("B:")
        .build()
        .expect("b");
    a.objects::<CatNode>()
        .get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "from a")) })
        .await
        .expect("load");
    assert_eq!(b.objects::<CatNode>().get(1).await, None);
    b.objects::<CatNode>()
        .get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "from b")) })
        .await
        .expect("load");
    a.objects::<CatNode>()
        .invalid_all()
        .await
        .expect("invalidation");
    assert_eq!(b.objects::<CatNode>().get(1).await, Some(cat(1, "from b")));
}

/// The application's own `ConnectionManager` carries the async commands.
#[tokio::test]
async fn connects_through_an_existing_connection_manager() {
    let server = RedisServer::start();
    let manager = server
        .client()
        .get_connection_manager()
        .await
        .expect("connection manager");
    let cache = Cache::builder()
        .connection_manager(manager)
        .build()
        .expect("cache");
    let cats = cache.objects::<CatNode>();
    cats.get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "Tom")) })
        .await
        .expect("load");
    assert_eq!(cats.get(1).await, Some(cat(1, "Tom")));
    assert_eq!(cache.stats().store_error, 0);
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg("CM:{cat:1}")
        .query(&mut server.connection())
        .expect("GET");
    assert!(
        raw.is_some(),
        "written through the application's connection"
    );
    // Without a URL there is no blocking connection: blocking calls fail open.
    let cats = cats.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        cats.get_or_load_blocking(2, || Ok::<_, Infallible>(cat(2, "loaded")))
    })
    .await
    .expect("blocking")
    .expect("fails open: the loader's value");
    assert_eq!(blocking, cat(2, "loaded"));
}

/// The application's deadpool pool is accepted; commands run on one
/// connection taken out of it.
#[tokio::test]
async fn connects_through_an_existing_deadpool_pool() {
    let server = RedisServer::start();
    let pool = deadpool_redis::Config::from_url(server.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .expect("pool");
    let cache = Cache::builder()
        .deadpool(pool)
        .redis_url(server.url())
        .build()
        .expect("cache");
    let cats = cache.objects::<CatNode>();
    cats.get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "Tom")) })
        .await
        .expect("load");
    assert_eq!(cats.get(1).await, Some(cat(1, "Tom")));
    assert_eq!(cache.stats().store_error, 0);
    assert_eq!(cats.invalid(1).await.expect("invalidation"), 1);
}
