//! When the source fails or hangs (issue 14): the fail-safe serves expired
//! values and throttles retries, loader timeouts bound every caller, and
//! in-process waiters honour the herd budget.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, LoadError, Lookup};

/// A lookup of `key` that expires after 50 ms and is kept a minute for the
/// fail-safe, retried at most every `throttle`.
fn expiring<'a>(cache: &Cache, key: &'a str, throttle: Duration) -> Lookup<'a, u64> {
    cache
        .lookup::<u64>(key)
        .ttl(Some(Duration::from_millis(50)))
        .fail_safe(Duration::from_secs(60))
        .fail_safe_throttle(throttle)
}

async fn ok(value: u64) -> Result<u64, io::Error> {
    Ok(value)
}

async fn down() -> Result<u64, io::Error> {
    Err(io::Error::other("the source is down"))
}

on_both_stores! {
    /// An expired value is reloaded; if the reload fails, the expired value
    /// is served (not the error), and the source is not tried again until
    /// the throttle passes; then a working source refreshes it.
    async fn an_expired_value_is_served_when_its_reload_fails(fx) {
        let throttle = Duration::from_millis(300);
        let value = expiring(&fx.cache, "price", throttle).load(|| ok(1)).await.expect("loads");
        assert_eq!(value, 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let calls = AtomicU64::new(0);
        let failing = || {
            calls.fetch_add(1, Ordering::Relaxed);
            down()
        };
        let served = expiring(&fx.cache, "price", throttle).load(failing).await;
        assert_eq!(served.expect("the fail-safe serves the expired value"), 1);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // Within the throttle: served again, the source is left alone.
        let served = expiring(&fx.cache, "price", throttle).load(failing).await;
        assert_eq!(served.expect("throttled"), 1);
        assert_eq!(calls.load(Ordering::Relaxed), 1, "no retry within the throttle");
        let stats = fx.cache.stats();
        assert_eq!(stats.fail_safe_served, 1, "{stats:?}");
        // After it: the source is tried again, and works.
        tokio::time::sleep(throttle + Duration::from_millis(50)).await;
        let value = expiring(&fx.cache, "price", throttle).load(|| ok(2)).await.expect("reloads");
        assert_eq!(value, 2);
    }

    /// Without the fail-safe (or without an expired value), a loader error
    /// is returned, as before.
    async fn without_the_fail_safe_errors_are_returned(fx) {
        let lookup = || fx.cache.lookup::<u64>("plain").ttl(Some(Duration::from_millis(50)));
        lookup().load(|| ok(1)).await.expect("loads");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(lookup().load(down).await.is_err());
        // `get` never serves an expired value.
        expiring(&fx.cache, "kept", Duration::from_secs(1)).load(|| ok(1)).await.expect("loads");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(expiring(&fx.cache, "kept", Duration::from_secs(1)).get().await, None);
    }

    /// An invalidated value is never served by the fail-safe: an
    /// invalidation is not an expiry.
    async fn the_fail_safe_never_serves_invalidated_values(fx) {
        let lookup = || expiring(&fx.cache, "invalidated", Duration::from_secs(1)).stale(false);
        lookup().load(|| ok(1)).await.expect("loads");
        tokio::time::sleep(Duration::from_millis(80)).await;
        fx.cache.create_invalidation().key("invalidated").run().await.expect("invalidation");
        assert!(lookup().load(down).await.is_err(), "the stale value is not served");
    }

    /// A hard timeout ends the wait for a hung loader: the expired value is
    /// served if there is one, else `LoadError::TimedOut`; the load's lease
    /// is given back, so the next caller loads at once.
    async fn a_hard_timeout_bounds_a_hung_loader(fx) {
        let hung = || std::future::pending::<Result<u64, io::Error>>();
        let start = Instant::now();
        let outcome = fx
            .cache
            .lookup::<u64>("hung")
            .hard_timeout(Duration::from_millis(100))
            .load(hung)
            .await;
        assert!(matches!(outcome, Err(LoadError::TimedOut(_))), "{outcome:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        let value = fx.cache.lookup::<u64>("hung").load(|| ok(7)).await.expect("the lease was released");
        assert_eq!(value, 7);

        expiring(&fx.cache, "slow", Duration::from_secs(1)).load(|| ok(3)).await.expect("loads");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let served = expiring(&fx.cache, "slow", Duration::from_secs(1))
            .hard_timeout(Duration::from_millis(100))
            .load(hung)
            .await
            .expect("served the expired value");
        assert_eq!(served, 3);
        let stats = fx.cache.stats();
        assert_eq!(stats.load_timeout, 2, "{stats:?}");
    }
}

/// "A caller that joins a load already running in its own process waits
/// for the whole load, whatever herd_retry says": no more. With
/// `herd_retry(1, 50 ms)` and a 3 s load, the second caller stops waiting
/// after its budget and loads for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_waiters_honour_the_herd_budget() {
    let cache = Cache::builder()
        .herd_retry(1, Duration::from_millis(50))
        .build()
        .expect("memory");
    let slow_started = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (cache, started) = (cache.clone(), slow_started.clone());
        tokio::spawn(async move {
            cache
                .lookup::<u64>("slow")
                .load(|| async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<_, Infallible>(1)
                })
                .await
        })
    };
    slow_started.notified().await;
    let start = Instant::now();
    let value = cache
        .lookup::<u64>("slow")
        .load(|| async { Ok::<_, Infallible>(2) })
        .await
        .expect("loads");
    let waited = start.elapsed();
    assert_eq!(value, 2, "loaded for itself");
    assert!(
        waited < Duration::from_secs(1),
        "waited {waited:?}, not the 3 s load"
    );
    assert_eq!(cache.stats().wait_exhausted, 1);
    leader.abort();
}

/// The same for plain (blocking) callers.
#[test]
fn blocking_in_process_waiters_honour_the_herd_budget() {
    let cache = Cache::builder()
        .herd_retry(1, Duration::from_millis(50))
        .build()
        .expect("memory");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let leader = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            cache.lookup::<u64>("slow").load_blocking(|| {
                started_tx.send(()).expect("the test waits");
                std::thread::sleep(Duration::from_secs(2));
                Ok::<_, Infallible>(1)
            })
        })
    };
    started_rx.recv().expect("the leader started");
    let start = Instant::now();
    let value = cache
        .lookup::<u64>("slow")
        .load_blocking(|| Ok::<_, Infallible>(2))
        .expect("loads");
    assert_eq!(value, 2);
    assert!(start.elapsed() < Duration::from_secs(1));
    leader.join().expect("leader").expect("loads");
}

/// A soft timeout: a caller waiting (in the same process) for the reload of
/// an expired value gets the expired value after the soft timeout, while the
/// slow reload goes on and is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_expired_value_at_the_soft_timeout() {
    let cache = Cache::builder().build().expect("memory");
    let lookup =
        || expiring(&cache, "soft", Duration::from_secs(1)).soft_timeout(Duration::from_millis(50));
    lookup().load(|| ok(1)).await.expect("loads");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let reload = {
        let (cache, started) = (cache.clone(), started.clone());
        tokio::spawn(async move {
            expiring(&cache, "soft", Duration::from_secs(1))
                .load(|| async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    ok(2).await
                })
                .await
        })
    };
    started.notified().await;
    let start = Instant::now();
    let served = lookup().load(down).await.expect("the expired value");
    assert_eq!(served, 1);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(reload.await.expect("task").expect("reloaded"), 2);
    assert_eq!(lookup().get().await, Some(2), "the slow reload was stored");
}

/// "A failed invalidation is an `Err` that the caller must retry by hand":
/// it is still an `Err` (the caller knows), and it is also queued and
/// retried once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_invalidations_are_queued_and_retried() {
    let mut server = cacheme_test_support::RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(200))
        .circuit_breaker(2, Duration::from_millis(100))
        .build()
        .expect("cache");
    let lookup = || cache.lookup::<u64>("queued").stale(false);
    lookup().load(|| ok(1)).await.expect("loads");
    server.kill();
    let failed = cache.create_invalidation().key("queued").run().await;
    assert!(failed.is_err(), "the caller is told");
    assert_eq!(cache.pending_invalidations(), 1);
    assert!(cache.flush_invalidations().await.is_err(), "still down");
    assert_eq!(cache.pending_invalidations(), 1);
    server.restart();
    // Redis is back: the background retry runs the queued invalidation.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.pending_invalidations() > 0 {
        assert!(
            Instant::now() < deadline,
            "the queued invalidation never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cache.stats().invalidation_retried >= 1);
    assert_eq!(cache.stats().invalidation_queued, 1);
}

/// `durable(replicas, timeout)`: the invalidation returns once replicas have
/// it, and fails with `NotReplicated` when too few do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_invalidations_wait_for_replicas() {
    let primary = cacheme_test_support::RedisServer::start();
    let replica = cacheme_test_support::RedisServer::builder()
        .arg("--replicaof")
        .arg("127.0.0.1")
        .arg(primary.port().to_string())
        .start();
    let mut conn = replica.connection();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .expect("INFO");
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cache = Cache::builder()
        .redis_url(primary.url())
        .build()
        .expect("cache");
    cache
        .create_invalidation()
        .tag("lookup")
        .durable(1, Duration::from_secs(2))
        .run()
        .await
        .expect("one replica acknowledges");
    let error = cache
        .create_invalidation()
        .tag("lookup")
        .durable(2, Duration::from_millis(100))
        .run()
        .await
        .expect_err("there is only one replica");
    assert!(
        matches!(
            error,
            cacheme::Error::NotReplicated {
                wanted: 2,
                acknowledged: 1,
                ..
            }
        ),
        "{error:?}"
    );
}
