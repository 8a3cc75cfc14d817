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
//! then count as done. `just faults` runs it (`cargo bench -p
//! cacheme-benches --bench faults`); under `cargo test` it runs a 4-second
//! smoke version that asserts the two zero counts.

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
    let full = std::env::args().any(|a| a == "--bench");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = if full { 60 } else { 4 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let line = runtime.block_on(soak(Duration::from_secs(seconds), full));
    println!("{line}");
    if !full {
        assert!(
            line.contains("errors_to_caller=0 wrong_values=0"),
            "the smoke soak found a problem: {line}"
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
