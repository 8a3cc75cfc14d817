//! The herd protocol: exactly one load per cold key (in one process and
//! across processes), waiters woken rather than polling, no stale sets,
//! refresh ahead, loader errors. Concurrency is forced with barriers and
//! counters, not sleeps. Two `Cache` instances on one server stand for two
//! processes (each has its own flights, wake-ups and subscriber); the crash
//! test uses a real second process: this test binary, run again.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cacheme::{Cache, LoadError, Pattern};
use cacheme_test_support::RedisServer;
use tokio::sync::{Barrier, Notify};

/// Wait (bounded) until `done` holds; the bound only turns a hang into a failure.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn redis_cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("cache")
}

/// Waiters of `cache` wait one 10 s interval: if they were not woken, they
/// would wait it out (and `woken` would stay 0).
fn only_woken_waiters(cache: &Cache) {
    cache.update_settings(|s| {
        s.herd_retries = 1;
        s.herd_interval = Duration::from_secs(10);
    });
}

/// What a spawned `load` of a `String` returns.
type Loading<E> = tokio::task::JoinHandle<Result<String, LoadError<E>>>;

/// Load `key` through `cache` in a task, with `gate` as the loader.
fn spawn_gated_load(
    cache: &Cache,
    key: &'static str,
    gate: &GatedLoader,
    value: &str,
) -> Loading<Infallible> {
    let (cache, gate, value) = (cache.clone(), gate.clone(), value.to_owned());
    tokio::spawn(async move { cache.lookup::<String>(key).load(|| gate.load(value)).await })
}

/// Load `key` through `cache` in a task, with a loader that returns `value` at once.
fn spawn_load<E: Send + Sync + 'static>(
    cache: &Cache,
    key: &'static str,
    value: &str,
) -> Loading<E> {
    let (cache, value) = (cache.clone(), value.to_owned());
    tokio::spawn(async move {
        cache
            .lookup::<String>(key)
            .load(|| async { Ok::<_, E>(value) })
            .await
    })
}

/// A loader that waits at a gate before returning `value`, counting its runs.
#[derive(Clone, Default)]
struct GatedLoader {
    runs: Arc<AtomicU64>,
    started: Arc<Notify>,
    gate: Arc<Notify>,
}

impl GatedLoader {
    async fn load<V>(&self, value: V) -> Result<V, Infallible> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        self.gate.notified().await;
        Ok(value)
    }
    fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }
}

on_both_stores! {
    /// Concurrent callers of one cold key in one process share one read and
    /// one load.
    async fn one_load_for_concurrent_callers_in_a_process(fx) {
        let loads = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, loads, barrier) = (fx.cache.clone(), loads.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    cache
                        .lookup::<String>("cold")
                        .load(|| async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, Infallible>("value".to_owned())
                        })
                        .await
                        .expect("load")
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), "value");
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let stats = fx.cache.stats();
        assert_eq!(stats.load, 1, "{stats:?}");
        assert!(stats.coalesced >= 1, "{stats:?}");
    }

    /// A leader that panics, or whose call is dropped, does not leave its
    /// waiters hanging: one of them takes over.
    async fn a_panicking_or_cancelled_leader_hands_over(fx) {
        for cancel in [false, true] {
            let key = format!("leader-gone-{cancel}");
            let started = Arc::new(Notify::new());
            let leader = {
                let (cache, key, started) = (fx.cache.clone(), key.clone(), started.clone());
                tokio::spawn(async move {
                    cache
                        .lookup::<String>(key)
                        .load(|| async move {
                            started.notify_one();
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if !cancel {
                                panic!("the loader panicked");
                            }
                            std::future::pending::<Result<String, Infallible>>().await
                        })
                        .await
                })
            };
            started.notified().await;
            let coalesced = fx.cache.stats().coalesced;
            let waiter = {
                let (cache, key) = (fx.cache.clone(), key.clone());
                tokio::spawn(async move {
                    cache
                        .lookup::<String>(key)
                        .load(|| async { Ok::<_, Infallible>("from the waiter".to_owned()) })
                        .await
                })
            };
            eventually("the waiter joined the flight", || fx.cache.stats().coalesced > coalesced).await;
            if cancel {
                leader.abort();
            }
            assert!(leader.await.is_err(), "the leader panicked or was cancelled");
            let value = waiter.await.expect("waiter task").expect("waiter loads");
            assert_eq!(value, "from the waiter");
        }
    }

    /// A loader error goes to the waiters of this process too, shared, and is
    /// not cached.
    async fn loader_errors_are_shared_and_not_cached(fx) {
        let gate = GatedLoader::default();
        let leader = {
            let (cache, gate) = (fx.cache.clone(), gate.clone());
            tokio::spawn(async move {
                cache
                    .lookup::<String>("failing")
                    .load(|| async move {
                        gate.load(()).await.ok();
                        Err::<String, _>(std::io::Error::other("source down"))
                    })
                    .await
            })
        };
        gate.started.notified().await;
        let waiter = spawn_load::<std::io::Error>(&fx.cache, "failing", "never runs");
        eventually("the waiter joined", || fx.cache.stats().coalesced == 1).await;
        gate.gate.notify_one();
        let leader_error = leader.await.expect("task").expect_err("the loader failed");
        let waiter_error = waiter.await.expect("task").expect_err("the error is shared");
        assert_eq!(waiter_error.to_string(), "source down");
        assert!(matches!(waiter_error, LoadError::Shared(_)));
        assert_eq!(leader_error.to_string(), "source down");
        assert_eq!(gate.runs(), 1);
        assert_eq!(fx.cache.lookup::<String>("failing").get().await, None, "errors are not cached");
        let value = fx
            .cache
            .lookup::<String>("failing")
            .load(|| async { Ok::<_, std::io::Error>("back".to_owned()) })
            .await
            .expect("the next caller retries");
        assert_eq!(value, "back");
    }

    /// No stale sets: a load that began before an invalidation never stores
    /// its result as fresh, whatever kind of invalidation it was.
    async fn a_load_that_began_before_an_invalidation_is_not_stored(fx) {
        #[derive(Debug, Clone, Copy)]
        enum Kind { Key, Group, Tag, Pattern }
        for kind in [Kind::Key, Kind::Group, Kind::Tag, Kind::Pattern] {
            let key = format!("race:{kind:?}");
            let gate = GatedLoader::default();
            let load = {
                let (cache, gate, key) = (fx.cache.clone(), gate.clone(), key.clone());
                tokio::spawn(async move {
                    cache
                        .lookup::<String>(key)
                        .depends_on("group:race")
                        .load(|| gate.load("old".to_owned()))
                        .await
                        .expect("load")
                })
            };
            // The loader has read the source; now the source changes and the
            // key is invalidated.
            gate.started.notified().await;
            let invalidation = fx.cache.create_invalidation();
            let invalidation = match kind {
                Kind::Key => invalidation.key(key.clone()),
                Kind::Group => invalidation.invalid_key("group:race"),
                Kind::Tag => invalidation.tag("lookup"),
                Kind::Pattern => invalidation.pattern(Pattern::prefix("race:")),
            };
            invalidation.run().await.expect("invalidation");
            gate.gate.notify_one();
            assert_eq!(load.await.expect("task"), "old", "the caller still gets its own value");

            // A stale-off reader that starts after the invalidation returned
            // must not get the old value.
            let read = fx.cache.lookup::<String>(key.clone()).stale(false);
            assert_eq!(read.get().await, None, "{kind:?}: the old value was stored as fresh");
            let fresh = fx
                .cache
                .lookup::<String>(key.clone())
                .stale(false)
                .load(|| async { Ok::<_, Infallible>("new".to_owned()) })
                .await
                .expect("load");
            assert_eq!(fresh, "new", "{kind:?}");
        }
        assert!(fx.cache.stats().fill_revoked >= 4, "{:?}", fx.cache.stats());
    }

    /// Refresh ahead: past `refresh_after`, callers are served the cached value
    /// at once while exactly one refresh runs in the background.
    async fn refresh_ahead_serves_at_once_and_refreshes_once(fx) {
        // Each load returns the next version; the refresh waits at a gate
        // until every caller has been served.
        let version = Arc::new(AtomicU64::new(1));
        let gate = Arc::new(Notify::new());
        let loader = |version: Arc<AtomicU64>, gate: Option<Arc<Notify>>| move || async move {
            let v = version.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = gate {
                gate.notified().await;
            }
            Ok::<_, Infallible>(v)
        };
        let lookup = |cache: &Cache| cache.lookup::<u64>("hot").refresh_after(Duration::from_millis(50));
        assert_eq!(lookup(&fx.cache).load_detached(loader(version.clone(), None)).await.expect("load"), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;

        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, version, gate) = (fx.cache.clone(), version.clone(), gate.clone());
                tokio::spawn(async move {
                    lookup(&cache).load_detached(loader(version, Some(gate))).await.expect("load")
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), 1, "every caller is served the cached value at once");
        }
        eventually("one refresh started", || version.load(Ordering::SeqCst) == 3).await;
        gate.notify_one();
        let cache = fx.cache.clone();
        let mut refreshed = None;
        for _ in 0..400 {
            refreshed = lookup(&cache).get().await;
            if refreshed == Some(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(refreshed, Some(2));
        assert_eq!(version.load(Ordering::SeqCst), 3, "exactly one refresh ran");
    }
}

/// Across processes: one load for a cold key, and the waiter is woken by the
/// fill announcement, not by its wait interval running out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_load_across_processes_and_waiters_are_woken() {
    let server = RedisServer::start();
    let a = redis_cache(&server);
    let b = redis_cache(&server);
    only_woken_waiters(&b);
    let gate = GatedLoader::default();
    let first = spawn_gated_load(&a, "cold", &gate, "A");
    gate.started.notified().await;
    let second = spawn_load::<Infallible>(&b, "cold", "B");
    eventually("B waits for A's load", || b.stats().wait == 1).await;
    gate.gate.notify_one();
    assert_eq!(first.await.expect("task").expect("load"), "A");
    assert_eq!(
        second.await.expect("task").expect("load"),
        "A",
        "B got A's value"
    );
    let stats = b.stats();
    assert_eq!((stats.load, stats.woken), (0, 1), "{stats:?}");
}

/// A long load keeps its lease alive: another process keeps waiting instead
/// of loading a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_load_keeps_its_lease() {
    let server = RedisServer::start();
    let a = redis_cache(&server);
    a.update_settings(|s| s.lease_ttl = Duration::from_millis(300));
    let b = redis_cache(&server);
    b.update_settings(|s| {
        s.herd_retries = 50;
        s.herd_interval = Duration::from_millis(100);
    });
    let gate = GatedLoader::default();
    let first = spawn_gated_load(&a, "long", &gate, "A");
    gate.started.notified().await;
    let second = spawn_load::<Infallible>(&b, "long", "B");
    // Three lease lifetimes pass while A loads.
    tokio::time::sleep(Duration::from_millis(900)).await;
    gate.gate.notify_one();
    assert_eq!(second.await.expect("task").expect("load"), "A");
    assert_eq!(first.await.expect("task").expect("load"), "A");
    assert_eq!(b.stats().load, 0, "B never loaded: A's lease stayed alive");
}

/// A failed load releases its lease at once and wakes the waiters of other
/// processes, so that one of them loads without waiting for the lease to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_releases_its_lease_and_wakes_others() {
    let server = RedisServer::start();
    let a = redis_cache(&server);
    let b = redis_cache(&server);
    only_woken_waiters(&b);
    let gate = GatedLoader::default();
    let first = {
        let (a, gate) = (a.clone(), gate.clone());
        tokio::spawn(async move {
            a.lookup::<String>("flaky")
                .load(|| async move {
                    gate.load(()).await.ok();
                    Err::<String, _>(std::io::Error::other("boom"))
                })
                .await
        })
    };
    gate.started.notified().await;
    let second = spawn_load::<std::io::Error>(&b, "flaky", "B");
    eventually("B waits", || b.stats().wait == 1).await;
    gate.gate.notify_one();
    assert!(first.await.expect("task").is_err());
    assert_eq!(second.await.expect("task").expect("B loads"), "B");
    let stats = b.stats();
    assert_eq!(
        (stats.woken, stats.load, stats.fill),
        (1, 1, 1),
        "{stats:?}"
    );
}

/// With stale data and stale on, the callers of other processes are served
/// the stale value at once while one refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_readers_do_not_wait_for_the_refresh() {
    let server = RedisServer::start();
    let a = redis_cache(&server);
    let b = redis_cache(&server);
    a.lookup::<String>("page")
        .load(|| async { Ok::<_, Infallible>("v1".to_owned()) })
        .await
        .expect("load");
    a.create_invalidation()
        .key("page")
        .run()
        .await
        .expect("invalidation");
    let gate = GatedLoader::default();
    let refresh = spawn_gated_load(&a, "page", &gate, "v2");
    gate.started.notified().await;
    // A holds the refresh lease; B is served the stale value without waiting.
    let served = b
        .lookup::<String>("page")
        .load(|| async { Ok::<_, Infallible>("B".to_owned()) })
        .await
        .expect("load");
    assert_eq!(served, "v1");
    let stats = b.stats();
    assert_eq!(
        (stats.stale_hit, stats.wait, stats.load),
        (1, 0, 0),
        "{stats:?}"
    );
    gate.gate.notify_one();
    assert_eq!(refresh.await.expect("task").expect("load"), "v2");
    assert_eq!(
        b.lookup::<String>("page").get().await.as_deref(),
        Some("v2")
    );
}

/// The crash test's child: takes the lease of `crash` and loads forever.
/// Runs only when the parent test starts this binary with the env var set.
#[test]
fn crash_child() {
    let Ok(url) = std::env::var("CACHEME_CRASH_CHILD_URL") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let cache = Cache::builder().redis_url(url).build().expect("cache");
        cache.update_settings(|s| s.lease_ttl = Duration::from_millis(500));
        let _ = cache
            .lookup::<String>("crash")
            .load(|| async {
                println!("child: loading");
                std::future::pending::<Result<String, Infallible>>().await
            })
            .await;
    });
}

/// A lease dies with a crashed process: after `kill -9` of the loading
/// process, another one takes the lease once it expires, and stores its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_loader_does_not_block_the_key() {
    use std::io::BufRead;
    let server = RedisServer::start();
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "protocol::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHEME_CRASH_CHILD_URL", server.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child process");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    tokio::task::spawn_blocking(move || {
        for line in lines.by_ref() {
            if line.expect("child output").contains("child: loading") {
                return;
            }
        }
        panic!("the child never started loading");
    })
    .await
    .expect("child started");
    child.kill().expect("kill -9 the child");
    child.wait().expect("reap the child");

    // A cold key's lease is its loader's placeholder in the value key.
    let held: Option<Vec<u8>> = redis::cmd("GET")
        .arg("CM:{crash}")
        .query(&mut server.connection())
        .expect("GET");
    let held = held.expect("the dead process's lease is still there");
    assert!(
        matches!(
            cacheme::__private::wire::Stored::parse(&held),
            Ok(cacheme::__private::wire::Stored::Loading { .. })
        ),
        "a placeholder: {held:?}"
    );

    let cache = redis_cache(&server);
    cache.update_settings(|s| {
        s.herd_retries = 40;
        s.herd_interval = Duration::from_millis(50);
    });
    let value = cache
        .lookup::<String>("crash")
        .load(|| async { Ok::<_, Infallible>("survivor".to_owned()) })
        .await
        .expect("load");
    assert_eq!(value, "survivor");
    let stats = cache.stats();
    assert_eq!(
        (stats.fill, stats.wait_exhausted),
        (1, 0),
        "took the expired lease: {stats:?}"
    );
}
