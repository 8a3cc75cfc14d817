//! `objects().set(args, value)` and `objects().refresh(args, loader)` on
//! both stores: what a caller observes, and that neither ever lets a load
//! that began before them write an older value after them.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cacheme::{LoadError, Node};
use tokio::sync::Notify;

/// A node of this file's own.
#[derive(Debug, Node)]
#[node(key = "written:{id}", value = String, ttl = 300)]
pub(crate) struct WrittenNode {
    pub(crate) id: u64,
}

on_both_stores! {
    /// `set` stores the value, over what was cached.
    async fn set_stores_the_value(fx) {
        let objects = fx.cache.objects::<WrittenNode>();
        objects.set(1, "first".to_owned()).await.expect("set");
        assert_eq!(objects.get(1).await.as_deref(), Some("first"));
        objects.set(1, "second".to_owned()).await.expect("set");
        assert_eq!(objects.get(1).await.as_deref(), Some("second"));
        let loaded = objects
            .get_or_load(1, || async { Ok::<_, Infallible>("loaded".to_owned()) })
            .await
            .expect("cached");
        assert_eq!(loaded, "second", "served from the cache, not loaded");
        let cache = fx.cache.clone();
        tokio::task::spawn_blocking(move || {
            let objects = cache.objects::<WrittenNode>();
            objects.set_blocking(2, "blocking".to_owned()).expect("set");
            assert_eq!(objects.get_blocking(2).as_deref(), Some("blocking"));
        })
        .await
        .expect("blocking");
    }

    /// A load that read the source before a `set` cannot fill after it.
    async fn set_wins_over_a_load_in_flight(fx) {
        let objects = fx.cache.objects::<WrittenNode>();
        let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let load = {
            let (objects, started, gate) = (objects.clone(), started.clone(), gate.clone());
            tokio::spawn(async move {
                objects
                    .get_or_load(3, || async move {
                        started.notify_one();
                        gate.notified().await;
                        Ok::<_, Infallible>("old".to_owned())
                    })
                    .await
            })
        };
        started.notified().await;
        objects.set(3, "new".to_owned()).await.expect("set");
        gate.notify_one();
        assert_eq!(load.await.expect("task").expect("loads"), "old", "its caller gets what it loaded");
        assert_eq!(objects.get(3).await.as_deref(), Some("new"));
        assert!(fx.cache.stats().fill_revoked >= 1);
    }

    /// `refresh` reloads now; a failed reload keeps the cached value and
    /// returns the error; while another caller loads the key, it does not
    /// load at all.
    async fn refresh_reloads_under_the_lease(fx) {
        let objects = fx.cache.objects::<WrittenNode>();
        objects.get_or_load(4, || async { Ok::<_, Infallible>("v1".to_owned()) }).await.expect("loads");
        objects.refresh(4, || async { Ok::<_, Infallible>("v2".to_owned()) }).await.expect("refreshes");
        assert_eq!(objects.get(4).await.as_deref(), Some("v2"));
        let failed = objects
            .refresh(4, || async { Err::<String, _>(std::io::Error::other("source down")) })
            .await;
        assert!(matches!(failed, Err(LoadError::Own(ref e)) if e.to_string() == "source down"), "{failed:?}");
        assert_eq!(objects.get(4).await.as_deref(), Some("v2"));
        // An empty key is loaded too.
        objects.refresh(5, || async { Ok::<_, Infallible>("fresh".to_owned()) }).await.expect("refreshes");
        assert_eq!(objects.get(5).await.as_deref(), Some("fresh"));

        let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let load = {
            let (objects, started, gate) = (objects.clone(), started.clone(), gate.clone());
            tokio::spawn(async move {
                objects
                    .get_or_load(6, || async move {
                        started.notify_one();
                        gate.notified().await;
                        Ok::<_, Infallible>("theirs".to_owned())
                    })
                    .await
            })
        };
        started.notified().await;
        let runs = AtomicU64::new(0);
        objects
            .refresh(6, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>("mine".to_owned())
            })
            .await
            .expect("refresh");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "the key was being loaded: left to that load");
        gate.notify_one();
        load.await.expect("task").expect("loads");
        assert_eq!(objects.get(6).await.as_deref(), Some("theirs"));

        let cache = fx.cache.clone();
        tokio::task::spawn_blocking(move || {
            let objects = cache.objects::<WrittenNode>();
            objects.refresh_blocking(4, || Ok::<_, Infallible>("v3".to_owned())).expect("refreshes");
            assert_eq!(objects.get_blocking(4).as_deref(), Some("v3"));
        })
        .await
        .expect("blocking");
    }
}

/// With `ttl_jitter_percent`, the stored TTLs of keys written together
/// spread over ± that share of the TTL (on Redis, read with `PTTL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_jitter_spreads_expiries() {
    let server = cacheme_test_support::RedisServer::start();
    let cache = cacheme::Cache::builder()
        .redis_url(server.url())
        .ttl_jitter_percent(50)
        .build()
        .expect("cache");
    let mut conn = server.connection();
    let mut ttls = Vec::new();
    for id in 0..40 {
        cache
            .objects::<WrittenNode>()
            .set(id, format!("v{id}"))
            .await
            .expect("set");
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("{}{{written:{id}}}", cache.prefix()))
            .query(&mut conn)
            .expect("PTTL");
        assert!(
            (140_000..=450_000).contains(&pttl),
            "{pttl} ms for a 300 s TTL ± 50 %"
        );
        ttls.push(pttl / 1000);
    }
    ttls.sort_unstable();
    ttls.dedup();
    assert!(ttls.len() > 20, "the expiries spread: {ttls:?}");
}
