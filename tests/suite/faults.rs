//! Fail-open under faults: Redis down at start-up, killed mid-load and
//! mid-burst, restarted on the same port, paused, full. Every time: callers
//! get correct values, nothing panics, no call hangs past the timeout, and
//! hits resume by themselves once Redis answers again.
//!
//! The time bounds asserted here are hang detectors (several times the
//! per-operation timeout), not performance measurements.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cacheme::{Cache, Error};
use cacheme_test_support::RedisServer;
use tokio::sync::Notify;

const OP_TIMEOUT: Duration = Duration::from_millis(200);
/// No call may take longer than this (the loaders here are instant).
const HANG: Duration = Duration::from_secs(2);

fn cache_for(url: &str) -> Cache {
    Cache::builder()
        .redis_url(url)
        .op_timeout(OP_TIMEOUT)
        .circuit_breaker(3, Duration::from_millis(300))
        .build()
        .expect("cache")
}

/// The value every loader returns for `key`: what callers must get.
fn truth(key: &str) -> String {
    format!("value of {key}")
}

async fn get(cache: &Cache, key: &str) -> String {
    let started = Instant::now();
    let value = cache
        .lookup::<String>(key)
        .load(|| async { Ok::<_, Infallible>(truth(key)) })
        .await
        .expect("loaders here cannot fail, and store trouble never reaches the caller");
    assert!(
        started.elapsed() < HANG,
        "a call took {:?}",
        started.elapsed()
    );
    assert_eq!(value, truth(key));
    value
}

/// Call until a call is served from Redis (a hit), within a bound.
async fn hits_resume(cache: &Cache, key: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let hits = cache.stats().hit;
        get(cache, key).await;
        get(cache, key).await;
        if cache.stats().hit > hits {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("hits did not resume: {:?}", cache.stats());
}

/// Redis is not there when the service starts: calls run their loaders,
/// invalidations report the error, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let cache = cache_for(&url);
    for i in 0..10 {
        get(&cache, &format!("k{i}")).await;
    }
    assert_eq!(cache.lookup::<String>("k1").get().await, None);
    let error = cache
        .create_invalidation()
        .key("k1")
        .run()
        .await
        .expect_err("an invalidation that did not happen is reported");
    assert!(error.is_unavailable(), "{error}");
    let stats = cache.stats();
    assert!(stats.store_error >= 3, "{stats:?}");
    assert!(stats.breaker_opened >= 1, "{stats:?}");
    assert!(
        stats.short_circuited >= 1,
        "the breaker spared the later calls: {stats:?}"
    );
    assert_eq!(stats.load, 10);

    // Blocking code, too.
    let blocking = cache.clone();
    tokio::task::spawn_blocking(move || {
        let value = blocking
            .lookup::<String>("b")
            .load_blocking(|| Ok::<_, Infallible>(truth("b")))
            .expect("fails open");
        assert_eq!(value, truth("b"));
        assert!(
            blocking
                .create_invalidation()
                .key("b")
                .run_blocking()
                .is_err()
        );
    })
    .await
    .expect("blocking");

    // Redis comes up: the same cache starts caching, no restart needed.
    server.restart();
    hits_resume(&cache, "k1").await;
}

/// `kill -9` while a load runs: the caller gets its value (the fill fails);
/// after a restart on the same port, hits resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_a_load() {
    let mut server = RedisServer::start();
    let cache = cache_for(&server.url());
    let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let load = {
        let (cache, started, gate) = (cache.clone(), started.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .lookup::<String>("slow")
                .load(|| async move {
                    started.notify_one();
                    gate.notified().await;
                    Ok::<_, Infallible>(truth("slow"))
                })
                .await
        })
    };
    started.notified().await;
    server.kill();
    gate.notify_one();
    assert_eq!(
        load.await.expect("task").expect("fails open"),
        truth("slow")
    );
    assert!(cache.stats().store_error >= 1);

    server.restart();
    hits_resume(&cache, "slow").await;
}

/// `kill -9` during a burst of hits from many tasks: every call returns the
/// right value, none errs or hangs; hits resume after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_a_burst_of_hits() {
    let mut server = RedisServer::start();
    let cache = cache_for(&server.url());
    for i in 0..10 {
        get(&cache, &format!("hot{i}")).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let (cache, stop) = (cache.clone(), stop.clone());
            tokio::spawn(async move {
                let mut calls = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    get(&cache, &format!("hot{}", (t + calls) % 10)).await;
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits_before = cache.stats().hit;
    assert!(hits_before > 0);
    server.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut calls = 0;
    for task in tasks {
        calls += task.await.expect("no task panicked");
    }
    assert!(calls > 100, "{calls}");
    let stats = cache.stats();
    assert!(
        stats.store_error > 0 || stats.short_circuited > 0,
        "{stats:?}"
    );
    hits_resume(&cache, "hot3").await;
}

/// A paused server (SIGSTOP: connections stay open, nothing answers): calls
/// cost at most the timeout, then nothing once the breaker opens; after it
/// resumes, hits come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server() {
    let server = RedisServer::start();
    let cache = cache_for(&server.url());
    get(&cache, "p").await;
    server.pause();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        get(&cache, "p").await;
        slowest = slowest.max(started.elapsed());
    }
    let stats = cache.stats();
    assert!(stats.breaker_opened >= 1, "{stats:?}");
    assert!(
        stats.short_circuited >= 10,
        "most calls did not wait at all: {stats:?}"
    );
    assert!(slowest < OP_TIMEOUT * 3, "slowest call {slowest:?}");
    server.resume();
    hits_resume(&cache, "p").await;
}

/// `CLIENT PAUSE` (the server is up but holds every client): the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause() {
    let server = RedisServer::start();
    let cache = cache_for(&server.url());
    get(&cache, "c").await;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .exec(&mut server.connection())
        .expect("CLIENT PAUSE");
    for _ in 0..10 {
        get(&cache, "c").await;
    }
    assert!(cache.stats().store_error >= 1, "{:?}", cache.stats());
    hits_resume(&cache, "c").await;
}

/// A full server (`maxmemory` with `noeviction`) refuses writes but answers
/// reads: values are returned (not stored), existing values are still hits,
/// and the breaker stays closed, since the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_server_with_noeviction() {
    let server = RedisServer::builder()
        .args(["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
        .start();
    let cache = cache_for(&server.url());
    get(&cache, "early").await;
    // Fill it up with ever smaller values until even a small write fails.
    let mut conn = server.connection();
    let mut written = 0u64;
    for size in [64 * 1024, 1024, 16] {
        let filler = vec![b'x'; size];
        loop {
            let set: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("fill:{written}"))
                .arg(&filler)
                .exec(&mut conn);
            if set.is_err() {
                break;
            }
            written += 1;
            assert!(written < 1_000_000, "the server never filled up");
        }
    }
    for i in 0..20 {
        get(&cache, &format!("late{i}")).await;
    }
    let stats = cache.stats();
    assert!(stats.store_error >= 1, "fills were refused: {stats:?}");
    assert_eq!(
        stats.breaker_opened, 0,
        "OOM is an answer, not an outage: {stats:?}"
    );
    let hits = stats.hit;
    get(&cache, "early").await;
    assert_eq!(cache.stats().hit, hits + 1, "reads still work");
}

/// Store errors are returned by invalidations, with the command and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_errors_say_what_failed() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let cache = cache_for(&url);
    let error = cache
        .create_invalidation()
        .invalid_key("user:1")
        .run()
        .await
        .expect_err("down");
    // A group invalidation is one script on the invalidation sequence.
    match &error {
        Error::Redis { command, key, .. } => {
            assert_eq!(*command, "record");
            assert_eq!(key, "invalidation sequence");
        }
        Error::Timeout { command, .. } | Error::Unavailable { command, .. } => {
            assert_eq!(*command, "record");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(error.to_string().contains("record"), "{error}");
}
