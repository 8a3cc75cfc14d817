#![allow(missing_docs)]
//! The fault soak: 64 tasks read and invalidate 100 keys against a
//! redis-server that this program kills (`kill -9`) and restarts at random
//! moments, checking every value a read returns against the source of truth.
//! It runs at most 60 s and prints, last:
//!
//! ```text
//! faults seconds=60 calls=123456 kills=6 errors_to_caller=0 wrong_values=0 recovered_ms_max=180
//! ```
//!
//! - `calls`: reads (`Lookup::load`, stale-off).
//! - `errors_to_caller`: reads that returned an error (the loader never fails,
//!   so any error would be cacheme's).
//! - `wrong_values`: reads that returned a value older than the last
//!   invalidation that had returned before the read started.
//! - `recovered_ms_max`: the longest time from the server answering again
//!   (after a restart) to the first cache hit.
//!
//! Invalidations that fail while the server is down are retried by the task
//! until they succeed (the caller decides; cacheme reports them) and only
//! then count as done.
//!
//! Before the soak, two runs against a failing and a slow source (issue
//! 14), one line each (extra fields after the ones shown):
//!
//! ```text
//! failsafe outage_s=30 warmed=1000 errors_to_caller=0 loader_calls_per_key_max=6 first_fresh_ms_after_recovery=4985 ..
//! slowsource load_ms=500 soft_timeout_ms=50 p99_ms=.. loads_per_key=1 ..
//! ```
//!
//! - `failsafe` ([`failsafe`]): the fail-safe over a 30 s outage of the
//!   source; targets: `errors_to_caller=0`, `loader_calls_per_key_max` ≤
//!   outage / throttle + 1 = 7, `first_fresh_ms_after_recovery` ≤ one
//!   throttle (5,000 ms).
//! - `slowsource` ([`slowsource`]): 4 processes (this binary again) read
//!   expired keys through a 500 ms source with a 50 ms soft timeout;
//!   targets: `p99_ms` ≤ 55, `loads_per_key=1`, the slow loads' results
//!   stored (`stored=10/10`).
//!
//! `just faults` runs it all (`cargo bench -p cacheme-benches --bench
//! faults`: about 40 s, then the 60 s soak); under `cargo test` it runs a
//! smoke version of each (a 2 s outage, 2 processes, a 4 s soak) that
//! asserts the zero counts and `loads_per_key=1`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheme::Cache;
use cacheme_test_support::RedisServer;

const TASKS: usize = 64;
const KEYS: usize = 100;

struct Truth {
    /// The source of truth: each key's current version.
    current: Vec<AtomicU64>,
    /// The version whose invalidation has returned: reads that start later
    /// must not get anything older.
    safe: Vec<AtomicU64>,
}

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    errors_to_caller: AtomicU64,
    wrong_values: AtomicU64,
}

/// A small xorshift generator: the soak needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng((nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--slowsource-child") {
        slowsource_child(&args[at + 1..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let seconds = if full { 60 } else { 4 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let failsafe_shape = if full { FAILSAFE } else { FAILSAFE_SMOKE };
    let failsafe_line = runtime.block_on(failsafe(failsafe_shape));
    println!("{failsafe_line}");
    let slow_shape = if full { SLOW } else { SLOW_SMOKE };
    let slow_line = slowsource(slow_shape, full);
    println!("{slow_line}");

    let line = runtime.block_on(soak(Duration::from_secs(seconds), full));
    println!("{line}");
    if !full {
        assert!(
            line.contains("errors_to_caller=0 wrong_values=0"),
            "the smoke soak found a problem: {line}"
        );
        assert!(
            failsafe_line.contains(" errors_to_caller=0 "),
            "the smoke fail-safe run returned errors: {failsafe_line}"
        );
        assert!(
            slow_line.contains(" loads_per_key=1 "),
            "the smoke slow-source run loaded a key twice: {slow_line}"
        );
    }
}

async fn soak(length: Duration, full: bool) -> String {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("cache");
    let truth = Arc::new(Truth {
        current: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
        safe: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
    });
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let workers: Vec<_> = (0..TASKS)
        .map(|t| {
            let (cache, truth, counts, stop) =
                (cache.clone(), truth.clone(), counts.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = Rng::seeded(t as u64);
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.below(KEYS as u64) as usize;
                    if rng.below(10) == 0 {
                        invalidate(&cache, &truth, key).await;
                    } else {
                        read(&cache, &truth, &counts, key).await;
                    }
                }
            })
        })
        .collect();

    // Chaos: kill the server at random moments, keep it down a while,
    // restart it on the same port, and time how long until hits resume.
    let mut rng = Rng::seeded(7);
    let mut kills = 0;
    let mut recovered_max = Duration::ZERO;
    loop {
        // Full run: up 1.5 to 6.5 s, down 0.2 to 1.5 s. Smoke run: shorter.
        let (up_for, down_for) = if full {
            (1500 + rng.below(5000), 200 + rng.below(1300))
        } else {
            (400 + rng.below(400), 200 + rng.below(300))
        };
        let (up_for, down_for) = (
            Duration::from_millis(up_for),
            Duration::from_millis(down_for),
        );
        let margin = if full {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(500)
        };
        if started.elapsed() + up_for + down_for + margin > length {
            break;
        }
        tokio::time::sleep(up_for).await;
        server.kill();
        kills += 1;
        tokio::time::sleep(down_for).await;
        server.restart();
        // Hits resume for the workers' own cache (its breaker opened while
        // the server was down), not for a fresh one.
        let answering = Instant::now();
        let hits = cache.stats().hit;
        while cache.stats().hit == hits && answering.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        recovered_max = recovered_max.max(answering.elapsed());
    }
    let remaining = length.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("no worker panicked");
    }
    format!(
        "faults seconds={} calls={} kills={} errors_to_caller={} wrong_values={} recovered_ms_max={}",
        started.elapsed().as_secs(),
        counts.calls.load(Ordering::Relaxed),
        kills,
        counts.errors_to_caller.load(Ordering::Relaxed),
        counts.wrong_values.load(Ordering::Relaxed),
        recovered_max.as_millis(),
    )
}

async fn read(cache: &Cache, truth: &Truth, counts: &Counts, key: usize) {
    let floor = truth.safe[key].load(Ordering::SeqCst);
    let result = cache
        .lookup::<u64>(format!("key:{key}"))
        .stale(false)
        .load(|| async {
            Ok::<_, std::convert::Infallible>(truth.current[key].load(Ordering::SeqCst))
        })
        .await;
    counts.calls.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(version) if version >= floor => {}
        Ok(_) => {
            counts.wrong_values.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            counts.errors_to_caller.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Change the source, then invalidate; retry the invalidation until it is
/// done (a caller that must not lose it), then record it as safe.
async fn invalidate(cache: &Cache, truth: &Truth, key: usize) {
    let version = truth.current[key].fetch_add(1, Ordering::SeqCst) + 1;
    loop {
        match cache
            .create_invalidation()
            .key(format!("key:{key}"))
            .run()
            .await
        {
            Ok(_) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    truth.safe[key].fetch_max(version, Ordering::SeqCst);
}

// ------------------------------------------------------------- fail-safe --

/// The fail-safe run: keys warmed, then the source fails for `outage`.
#[derive(Debug, Clone, Copy)]
struct FailSafeShape {
    outage: Duration,
    keys: usize,
    readers: usize,
    /// The warmed values' TTL: they expire early in the outage.
    ttl: Duration,
    /// `fail_safe_max`: how long past its TTL a value is kept.
    max: Duration,
    /// `fail_safe_throttle`: how long an expired value is served again after
    /// a failed reload before the source is tried again.
    throttle: Duration,
}

const FAILSAFE: FailSafeShape = FailSafeShape {
    outage: Duration::from_secs(30),
    keys: 1000,
    readers: 16,
    ttl: Duration::from_secs(2),
    max: Duration::from_secs(120),
    throttle: Duration::from_secs(5),
};

const FAILSAFE_SMOKE: FailSafeShape = FailSafeShape {
    outage: Duration::from_secs(2),
    keys: 100,
    readers: 8,
    ttl: Duration::from_millis(200),
    max: Duration::from_secs(60),
    throttle: Duration::from_millis(500),
};

/// The source of the fail-safe run: down or up, and what it was asked.
struct FlakySource {
    down: AtomicBool,
    /// What it returns when up: [`BEFORE`], then [`AFTER`] the outage.
    value: AtomicU64,
    /// Loader calls per key while the source was down.
    calls_down: Vec<AtomicU64>,
    /// When the run started: the origin of the `*_ms` fields below.
    epoch: Instant,
    /// Per key: when its last failed loader call ended (ms since `epoch`),
    /// which starts a throttle window.
    last_failure_ms: Vec<AtomicU64>,
    /// Per key: from the end of its last throttle window (or from the
    /// recovery, if later) to the first read that returned the new value,
    /// in ms: how long the key waited for a reader (the bench's reads are
    /// random, so a key may go unread for a few hundred ms).
    read_gap_ms: Vec<AtomicU64>,
    /// Per key: ms from the recovery to the first read that returned the
    /// value loaded after it, plus one (0: not yet).
    fresh_after: Vec<AtomicU64>,
    errors_to_caller: AtomicU64,
    reads: AtomicU64,
}

/// The value the source returns before the outage, and after it.
const BEFORE: u64 = 1;
const AFTER: u64 = 2;

/// `failsafe outage_s=30 warmed=1000 errors_to_caller=.. loader_calls_per_key_max=.. first_fresh_ms_after_recovery=..`:
/// 1,000 keys loaded (TTL 2 s, fail-safe kept 120 s, throttle 5 s), then
/// the loader fails for 30 s while 16 tasks read random keys (a 1 ms pause
/// between reads); then it works again, and the tasks read until every key
/// was served a value loaded after the recovery (or one throttle and 5 s
/// have passed). `first_fresh_ms_after_recovery`: per key, from the
/// recovery to the first read that returned the new value, the largest
/// over the keys (`first_fresh_ms_min`: the smallest); `read_gap_ms_max`:
/// the largest part of that spent after the key's throttle window had
/// ended, waiting for a reader to ask for it.
async fn failsafe(shape: FailSafeShape) -> String {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .fail_safe(shape.max, shape.throttle)
        .build()
        .expect("cache");
    let source = Arc::new(FlakySource {
        down: AtomicBool::new(false),
        value: AtomicU64::new(BEFORE),
        calls_down: (0..shape.keys).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
        last_failure_ms: (0..shape.keys).map(|_| AtomicU64::new(0)).collect(),
        read_gap_ms: (0..shape.keys).map(|_| AtomicU64::new(0)).collect(),
        fresh_after: (0..shape.keys).map(|_| AtomicU64::new(0)).collect(),
        errors_to_caller: AtomicU64::new(0),
        reads: AtomicU64::new(0),
    });
    for key in 0..shape.keys {
        let value = failsafe_read(&cache, &source, key, shape, None).await;
        assert_eq!(value, Some(BEFORE), "warming fs:{key}");
    }

    source.down.store(true, Ordering::SeqCst);
    let outage_started = Instant::now();
    let recovered: Arc<std::sync::OnceLock<Instant>> = Arc::new(std::sync::OnceLock::new());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..shape.readers)
        .map(|r| {
            let (cache, source, recovered, stop) = (
                cache.clone(),
                source.clone(),
                recovered.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut rng = Rng::seeded(1000 + r as u64);
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.below(shape.keys as u64) as usize;
                    let since = recovered.get().copied();
                    failsafe_read(&cache, &source, key, shape, since).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(shape.outage).await;
    source.value.store(AFTER, Ordering::SeqCst);
    source.down.store(false, Ordering::SeqCst);
    let recovery = Instant::now();
    recovered.set(recovery).expect("set once");
    let outage = outage_started.elapsed();
    let deadline = shape.throttle + Duration::from_secs(5);
    while recovery.elapsed() < deadline
        && source
            .fresh_after
            .iter()
            .any(|at| at.load(Ordering::Relaxed) == 0)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("no reader panicked");
    }
    let fresh: Vec<u64> = source
        .fresh_after
        .iter()
        .map(|at| at.load(Ordering::Relaxed))
        .filter(|&at| at > 0)
        .map(|at| at - 1)
        .collect();
    let stats = cache.stats();
    format!(
        "failsafe outage_s={} warmed={} errors_to_caller={} loader_calls_per_key_max={} first_fresh_ms_after_recovery={} \
         throttle_ms={} ttl_ms={} reads={} keys_fresh={} first_fresh_ms_min={} read_gap_ms_max={} loader_calls_down={} fail_safe_served={}",
        outage.as_secs(),
        shape.keys,
        source.errors_to_caller.load(Ordering::Relaxed),
        source
            .calls_down
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0),
        fresh
            .iter()
            .max()
            .map_or_else(|| "none".to_owned(), |ms| ms.to_string()),
        shape.throttle.as_millis(),
        shape.ttl.as_millis(),
        source.reads.load(Ordering::Relaxed),
        fresh.len(),
        fresh
            .iter()
            .min()
            .map_or_else(|| "none".to_owned(), |ms| ms.to_string()),
        source
            .read_gap_ms
            .iter()
            .map(|gap| gap.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0),
        source
            .calls_down
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>(),
        stats.fail_safe_served,
    )
}

/// One read of `fs:{key}` through the fail-safe; counts what the caller
/// got. `recovered`: when the source came back, if it has.
async fn failsafe_read(
    cache: &Cache,
    source: &FlakySource,
    key: usize,
    shape: FailSafeShape,
    recovered: Option<Instant>,
) -> Option<u64> {
    let result = cache
        .lookup::<u64>(format!("fs:{key}"))
        .ttl(Some(shape.ttl))
        .stale(false)
        .load(|| async {
            if source.down.load(Ordering::SeqCst) {
                source.calls_down[key].fetch_add(1, Ordering::Relaxed);
                let now = source.epoch.elapsed().as_millis() as u64;
                source.last_failure_ms[key].store(now, Ordering::Relaxed);
                Err(std::io::Error::other("the source is down"))
            } else {
                Ok(source.value.load(Ordering::SeqCst))
            }
        })
        .await;
    source.reads.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(value) => {
            if value == AFTER
                && let Some(recovered) = recovered
            {
                let ms = recovered.elapsed().as_millis() as u64 + 1;
                let first = source.fresh_after[key]
                    .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
                if first {
                    let now = source.epoch.elapsed().as_millis() as u64;
                    let window_end = source.last_failure_ms[key].load(Ordering::Relaxed)
                        + shape.throttle.as_millis() as u64;
                    let recovery = recovered.duration_since(source.epoch).as_millis() as u64;
                    source.read_gap_ms[key].store(
                        now.saturating_sub(window_end.max(recovery)),
                        Ordering::Relaxed,
                    );
                }
            }
            Some(value)
        }
        Err(_) => {
            source.errors_to_caller.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

// ----------------------------------------------------------- slow source --

/// The slow-source run: processes × tasks read `keys` expired keys at the
/// same instant; the source takes `load` to answer.
#[derive(Debug, Clone, Copy)]
struct SlowShape {
    processes: usize,
    tasks: usize,
    keys: usize,
    load: Duration,
    soft_timeout: Duration,
}

const SLOW: SlowShape = SlowShape {
    processes: 4,
    tasks: 50,
    keys: 10,
    load: Duration::from_millis(500),
    soft_timeout: Duration::from_millis(50),
};

const SLOW_SMOKE: SlowShape = SlowShape {
    processes: 2,
    tasks: 10,
    keys: 2,
    load: Duration::from_millis(200),
    soft_timeout: Duration::from_millis(50),
};

/// TTL of the values written before the slow run: they are expired (kept
/// by the fail-safe) when it starts.
const SLOW_TTL: Duration = Duration::from_millis(300);
const SLOW_FAIL_SAFE: Duration = Duration::from_secs(60);

fn slow_key(key: usize) -> String {
    format!("slow:{key}")
}

fn slow_loads_key(key: usize) -> String {
    format!("slow-loads:{key}")
}

/// `slowsource load_ms=500 soft_timeout_ms=50 p99_ms=.. loads_per_key=..`:
/// 10 keys written (TTL 300 ms, fail-safe 60 s) and left to expire; then 4
/// processes (this binary again) × 50 tasks, task `t` reading key `t % 10`
/// at the same instant with `soft_timeout(50 ms)`, through a source that
/// takes 500 ms. Latencies are per call; `loads_per_key` is the most loader
/// runs of any key across the processes (an `INCR` on the server);
/// afterwards a new cache reads every key, to check that the slow loads'
/// results were stored (`stored=`).
fn slowsource(shape: SlowShape, full: bool) -> String {
    let server = RedisServer::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lookup = |cache: &Cache, key: usize| {
        cache
            .lookup::<u64>(slow_key(key))
            .ttl(Some(SLOW_TTL))
            .fail_safe(SLOW_FAIL_SAFE)
    };
    runtime.block_on(async {
        let cache = Cache::builder().redis_url(&url).build().expect("cache");
        for key in 0..shape.keys {
            lookup(&cache, key)
                .load(|| async { Ok::<_, std::convert::Infallible>(BEFORE) })
                .await
                .expect("load");
        }
        tokio::time::sleep(SLOW_TTL + Duration::from_millis(100)).await;
    });

    let start_at = unix_ms() + 1500;
    let children: Vec<_> = (0..shape.processes)
        .map(|_| {
            Command::new(std::env::current_exe().expect("this binary"))
                .args([
                    "--slowsource-child",
                    &url,
                    &start_at.to_string(),
                    if full { "full" } else { "smoke" },
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("child process")
        })
        .collect();
    let mut latencies: Vec<f64> = Vec::new();
    let mut served_expired = 0;
    for child in children {
        let output = child.wait_with_output().expect("child output");
        assert!(output.status.success(), "a child failed: {output:?}");
        let text = String::from_utf8(output.stdout).expect("utf-8");
        for call in text.split_whitespace() {
            let (us, value) = call.split_once('=').expect("µs=value");
            latencies.push(us.parse::<f64>().expect("a latency in µs") / 1000.0);
            if value.parse::<u64>().expect("a value") == BEFORE {
                served_expired += 1;
            }
        }
    }
    assert_eq!(latencies.len(), shape.processes * shape.tasks);
    latencies.sort_by(f64::total_cmp);

    let mut conn = server.connection();
    let loads: Vec<u64> = (0..shape.keys)
        .map(|key| {
            redis::cmd("GET")
                .arg(slow_loads_key(key))
                .query::<Option<u64>>(&mut conn)
                .expect("GET")
                .unwrap_or(0)
        })
        .collect();
    // Were the slow loads' results stored? A new cache (a new process, as
    // far as cacheme can tell) reads each key without loading.
    let stored = runtime.block_on(async {
        let cache = Cache::builder().redis_url(&url).build().expect("cache");
        let mut stored = 0;
        for key in 0..shape.keys {
            if lookup(&cache, key).get().await == Some(AFTER) {
                stored += 1;
            }
        }
        stored
    });
    format!(
        "slowsource load_ms={} soft_timeout_ms={} p99_ms={:.1} loads_per_key={} p50_ms={:.1} max_ms={:.1} \
         processes={} callers={} keys={} served_expired={} stored={}/{}",
        shape.load.as_millis(),
        shape.soft_timeout.as_millis(),
        percentile(&latencies, 0.99),
        loads.iter().max().copied().unwrap_or(0),
        percentile(&latencies, 0.50),
        latencies.last().copied().unwrap_or(0.0),
        shape.processes,
        latencies.len(),
        shape.keys,
        served_expired,
        stored,
        shape.keys,
    )
}

/// One process of the slow-source run: its tasks read at `start_at`, and it
/// prints `µs=value` per call.
fn slowsource_child(args: &[String]) {
    let url = args[0].clone();
    let start_at: u64 = args[1].parse().expect("a start instant");
    let shape = if args[2] == "full" { SLOW } else { SLOW_SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let calls = runtime.block_on(async move {
        let cache = Cache::builder().redis_url(&url).build().expect("cache");
        let counter = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("counter connection");
        // Connect (and read the invalidation log) before the start.
        let _ = cache.lookup::<u64>("slow:warm-up").get().await;
        let wait = start_at.saturating_sub(unix_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let tasks: Vec<_> = (0..shape.tasks)
            .map(|t| {
                let (cache, mut counter) = (cache.clone(), counter.clone());
                let key = t % shape.keys;
                tokio::spawn(async move {
                    let started = Instant::now();
                    let value = cache
                        .lookup::<u64>(slow_key(key))
                        .ttl(Some(SLOW_TTL))
                        .fail_safe(SLOW_FAIL_SAFE)
                        .soft_timeout(shape.soft_timeout)
                        .load(|| async move {
                            let _: u64 = redis::cmd("INCR")
                                .arg(slow_loads_key(key))
                                .query_async(&mut counter)
                                .await
                                .expect("INCR");
                            tokio::time::sleep(shape.load).await;
                            Ok::<_, std::convert::Infallible>(AFTER)
                        })
                        .await
                        .expect("the loader cannot fail");
                    (started.elapsed(), value)
                })
            })
            .collect();
        let mut calls = Vec::with_capacity(shape.tasks);
        for task in tasks {
            calls.push(task.await.expect("task"));
        }
        calls
    });
    let line: Vec<String> = calls
        .iter()
        .map(|(took, value)| format!("{}={value}", took.as_micros()))
        .collect();
    println!("{}", line.join(" "));
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
