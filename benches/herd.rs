#![allow(missing_docs)]
//! The herd: 4 processes × 50 tasks ask for one key at the same instant while
//! its loader takes 200 ms. Three cases, one line each, the cold key last:
//!
//! ```text
//! herd case=stale_on processes=4 tasks=50 loads=1 p50_ms=0.9 p99_ms=2.1 max_ms=2.4
//! herd case=stale_off processes=4 tasks=50 loads=1 p50_ms=203.0 p99_ms=205.2 max_ms=205.9
//! herd case=cold processes=4 tasks=50 loads=1 p50_ms=203.1 p99_ms=211.4 max_ms=214.0
//! ```
//!
//! - `cold`: nothing cached.
//! - `stale_on`: the key was invalidated; readers accept stale data.
//! - `stale_off`: the key was invalidated; readers do not accept stale data.
//!
//! `loads` counts loader runs across all processes (an `INCR` on the server).
//! Latencies are per call, from the common start instant. Run it with
//! `just herd` (= `cargo bench -p cacheme-benches --bench herd`); it starts
//! its own redis-server and re-runs this binary as the child processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cacheme::Cache;
use cacheme_test_support::RedisServer;

const KEY: &str = "herd:key";
const LOADS: &str = "herd:loads";

#[derive(Debug, Clone, Copy)]
struct Shape {
    processes: usize,
    tasks: usize,
    load: Duration,
    /// The waiters' budget: `retries` waits of at most `interval` (they are
    /// woken as soon as the value lands; this only bounds a lost wake-up).
    retries: u32,
    interval: Duration,
}

const SHAPE: Shape = Shape {
    processes: 4,
    tasks: 50,
    load: Duration::from_millis(200),
    retries: 10,
    interval: Duration::from_millis(50),
};

/// `cargo test --workspace --all-targets` runs this binary without
/// `--bench`: a quick smoke run of the same program, so that CI keeps it
/// working.
const SMOKE: Shape = Shape {
    processes: 2,
    tasks: 5,
    load: Duration::from_millis(20),
    retries: 10,
    interval: Duration::from_millis(50),
};

fn shape() -> Shape {
    if std::env::args().any(|a| a == "--bench") || std::env::var_os("HERD_FULL").is_some() {
        SHAPE
    } else {
        SMOKE
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Cold,
    StaleOn,
    StaleOff,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Cold => "cold",
            Case::StaleOn => "stale_on",
            Case::StaleOff => "stale_off",
        }
    }

    fn parse(name: &str) -> Option<Case> {
        [Case::Cold, Case::StaleOn, Case::StaleOff]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(&args[at + 1..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes the binary
    }
    parent(shape());
}

fn parent(shape: Shape) {
    let server = RedisServer::start();
    let mut conn = server.connection();
    println!(
        "herd: {} processes x {} tasks, loader {} ms, waiters' budget {} x {} ms, redis {}",
        shape.processes,
        shape.tasks,
        shape.load.as_millis(),
        shape.retries,
        shape.interval.as_millis(),
        server.url()
    );
    for case in [Case::StaleOn, Case::StaleOff, Case::Cold] {
        redis::cmd("FLUSHALL").exec(&mut conn).expect("FLUSHALL");
        if case != Case::Cold {
            prepare_invalidated_key(&server.url(), shape);
        }
        redis::cmd("DEL").arg(LOADS).exec(&mut conn).expect("DEL");

        let start_at = unix_ms() + 1500;
        let children: Vec<_> = (0..shape.processes)
            .map(|_| {
                Command::new(std::env::current_exe().expect("this binary"))
                    .args(["--child", case.name(), &server.url(), &start_at.to_string()])
                    .envs((shape.tasks == SHAPE.tasks).then_some(("HERD_FULL", "1")))
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("child process")
            })
            .collect();
        let mut latencies: Vec<f64> = Vec::new();
        for child in children {
            let output = child.wait_with_output().expect("child output");
            assert!(output.status.success(), "a child failed: {output:?}");
            let text = String::from_utf8(output.stdout).expect("utf-8");
            latencies.extend(
                text.split_whitespace()
                    .map(|us| us.parse::<f64>().expect("a latency in µs") / 1000.0),
            );
        }
        let loads: u64 = redis::cmd("GET")
            .arg(LOADS)
            .query::<Option<u64>>(&mut conn)
            .expect("GET")
            .unwrap_or(0);
        latencies.sort_by(f64::total_cmp);
        assert_eq!(latencies.len(), shape.processes * shape.tasks);
        if shape.tasks != SHAPE.tasks {
            // The smoke run in `cargo test` checks the promise, so CI fails if it breaks.
            assert_eq!(
                loads,
                1,
                "{}: exactly one load across the processes",
                case.name()
            );
        }
        println!(
            "herd case={} processes={} tasks={} loads={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            case.name(),
            shape.processes,
            shape.tasks,
            loads,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0),
        );
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn cache(url: &str, shape: Shape) -> Cache {
    Cache::builder()
        .redis_url(url)
        .herd_retry(shape.retries, shape.interval)
        .build()
        .expect("cache")
}

/// Store a value, then invalidate it: stale data under the key.
fn prepare_invalidated_key(url: &str, shape: Shape) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let cache = cache(url, shape);
        cache
            .lookup::<String>(KEY)
            .load(|| async { Ok::<_, std::convert::Infallible>("old".to_owned()) })
            .await
            .expect("load");
        cache
            .create_invalidation()
            .key(KEY)
            .run()
            .await
            .expect("invalidation");
    });
}

fn child(args: &[String]) {
    let case = Case::parse(&args[0]).expect("a case name");
    let url = args[1].clone();
    let start_at: u64 = args[2].parse().expect("a start instant");
    let shape = shape();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let latencies = runtime.block_on(async move {
        let cache = cache(&url, shape);
        let counter = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("counter connection");
        // Connect before the start so that set-up is not measured.
        let _ = cache.lookup::<String>("herd:warm-up").get().await;

        let wait = start_at.saturating_sub(unix_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let tasks: Vec<_> = (0..shape.tasks)
            .map(|_| {
                let cache = cache.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let value = cache
                        .lookup::<String>(KEY)
                        .stale(case != Case::StaleOff)
                        .load_detached(move || load(counter, shape.load))
                        .await
                        .expect("the loader cannot fail");
                    assert!(value == "new" || (case == Case::StaleOn && value == "old"));
                    started.elapsed()
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(shape.tasks);
        for task in tasks {
            latencies.push(task.await.expect("task"));
        }
        // Let a background refresh started here finish before exiting.
        if case == Case::StaleOn {
            tokio::time::sleep(shape.load + Duration::from_millis(300)).await;
        }
        latencies
    });
    let line: Vec<String> = latencies
        .iter()
        .map(|d| d.as_micros().to_string())
        .collect();
    println!("{}", line.join(" "));
}

/// The loader: counts itself on the server, then takes `time`.
async fn load(
    mut counter: redis::aio::MultiplexedConnection,
    time: Duration,
) -> Result<String, std::convert::Infallible> {
    let _: u64 = redis::cmd("INCR")
        .arg(LOADS)
        .query_async(&mut counter)
        .await
        .expect("INCR");
    tokio::time::sleep(time).await;
    Ok("new".to_owned())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
