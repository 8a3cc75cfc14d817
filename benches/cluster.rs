#![allow(missing_docs)]
//! cacheme on a Redis Cluster (issue 13): a cluster of 3 primaries with a
//! replica each, started by this program (`cacheme-test-support`), then
//!
//! 1. the herd: 4 processes × 50 tasks on one cold key (a 200 ms loader);
//!    `loads` counts loader runs across the processes (an `INCR` on the
//!    cluster);
//! 2. a zipf trace: 20,000 requests (zipf 1.0 over 50,000 keys, the
//!    generator of `benches/trace.rs`) replayed by 200 tasks with 20 ms loads;
//!    `loads` must equal the number of distinct keys;
//! 3. remote hits: one key read 20,000 times in turn through cacheme (no
//!    local tier) and as a raw `GET` over redis-rs's async cluster connection,
//!    the same run (the raw `GET` decodes nothing: the ratio is an upper bound
//!    of cacheme's cost over the floor);
//! 4. a fault soak (20 s; the single-server soak of `just faults` runs 60 s):
//!    64 tasks read, load and invalidate 64 keys (invalidations `durable(1)`,
//!    versions checked as in `benches/faults.rs`) while the primary of a hot
//!    key is SIGKILLed, its replica promoted, the old primary restarted (it
//!    rejoins as a replica), twice. `failover_recovered_ms` is the longest
//!    time from a promotion to the first hit on a key of the failed primary.
//!
//! Last line:
//!
//! ```text
//! cluster primaries=3 loads=1 trace_loads_eq_unique=true faults_errors_to_caller=0 wrong_values=0 failover_recovered_ms=..
//! ```
//!
//! Run it with `just cluster` (= `cargo bench -p cacheme-benches --bench
//! cluster`). Without `--bench` (as `cargo test --workspace --all-targets`
//! runs it) it is a smaller smoke run that asserts the same promises.

use std::collections::HashSet;
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cacheme::Cache;
use cacheme_test_support::RedisCluster;

#[path = "shared/zipf.rs"]
mod zipf;
use zipf::zipf_trace;

const HERD_KEY: &str = "herd:key";
/// The loads counter, outside every cache's prefix.
const HERD_LOADS: &str = "bench:herd:loads";

#[derive(Debug, Clone, Copy)]
struct Shape {
    herd_processes: usize,
    herd_tasks: usize,
    herd_load: Duration,
    trace_requests: usize,
    trace_keys: usize,
    trace_tasks: usize,
    trace_load: Duration,
    hits: usize,
    soak: Duration,
    kills: usize,
}

const FULL: Shape = Shape {
    herd_processes: 4,
    herd_tasks: 50,
    herd_load: Duration::from_millis(200),
    trace_requests: 20_000,
    trace_keys: 50_000,
    trace_tasks: 200,
    trace_load: Duration::from_millis(20),
    hits: 20_000,
    soak: Duration::from_secs(20),
    kills: 2,
};

const SMOKE: Shape = Shape {
    herd_processes: 2,
    herd_tasks: 5,
    herd_load: Duration::from_millis(50),
    trace_requests: 2_000,
    trace_keys: 5_000,
    trace_tasks: 50,
    trace_load: Duration::from_millis(5),
    hits: 1_000,
    soak: Duration::from_secs(6),
    kills: 1,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        herd_child(&args[at + 1..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let shape = if full { FULL } else { SMOKE };
    let cluster = Arc::new(RedisCluster::start());
    let primaries = cluster.primaries().len();
    println!(
        "cluster: {primaries} primaries, {} nodes: {}",
        cluster.node_urls().len(),
        cluster.node_urls().join(" ")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let loads = herd(&cluster, shape);
    let trace_ok = runtime.block_on(trace(&cluster, shape));
    runtime.block_on(hits(&cluster, shape));
    let soak = runtime.block_on(soak(cluster.clone(), shape));
    let line = format!(
        "cluster primaries={primaries} loads={loads} trace_loads_eq_unique={trace_ok} \
         faults_errors_to_caller={} wrong_values={} failover_recovered_ms={}",
        soak.errors_to_caller, soak.wrong_values, soak.recovered_ms_max
    );
    println!("{line}");
    if !full {
        // The smoke run in `cargo test` checks the promises, so CI fails if they break.
        assert!(
            loads == 1
                && trace_ok
                && soak.errors_to_caller == 0
                && soak.wrong_values == 0
                && soak.cross_slot == 0,
            "the cluster smoke run found a problem: {line}"
        );
    }
}

fn cache(cluster: &RedisCluster, prefix: &str) -> Cache {
    cache_on(&cluster.node_urls(), prefix)
}

fn cache_on(urls: &[String], prefix: &str) -> Cache {
    Cache::builder()
        .cluster_urls(urls.iter().cloned())
        .prefix(prefix)
        .herd_retry(10, Duration::from_millis(100))
        .build()
        .expect("cache")
}

// ----------------------------------------------------------------- herd --

fn herd(cluster: &RedisCluster, shape: Shape) -> u64 {
    let mut conn = cluster.connection();
    redis::cmd("DEL")
        .arg(HERD_LOADS)
        .exec(&mut conn)
        .expect("DEL");
    let urls = cluster.node_urls().join(",");
    let start_at = unix_ms() + 2500;
    let children: Vec<_> = (0..shape.herd_processes)
        .map(|_| {
            Command::new(std::env::current_exe().expect("this binary"))
                .args([
                    "--child",
                    &urls,
                    &start_at.to_string(),
                    &shape.herd_tasks.to_string(),
                    &shape.herd_load.as_millis().to_string(),
                ])
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
    latencies.sort_by(f64::total_cmp);
    let loads: u64 = redis::cmd("GET")
        .arg(HERD_LOADS)
        .query::<Option<u64>>(&mut conn)
        .expect("GET")
        .unwrap_or(0);
    println!(
        "cluster herd processes={} tasks={} loads={loads} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        shape.herd_processes,
        shape.herd_tasks,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
    );
    loads
}

fn herd_child(args: &[String]) {
    let urls: Vec<String> = args[0].split(',').map(str::to_owned).collect();
    let start_at: u64 = args[1].parse().expect("a start instant");
    let tasks: usize = args[2].parse().expect("tasks");
    let load = Duration::from_millis(args[3].parse().expect("load ms"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let latencies = runtime.block_on(async move {
        let cache = cache_on(&urls, "herd:");
        let counter = redis::cluster::ClusterClient::new(urls.clone())
            .expect("urls")
            .get_async_connection()
            .await
            .expect("counter connection");
        // Connect (and subscribe) before the start so that set-up is not measured.
        let _ = cache.lookup::<String>("herd:warm-up").get().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        while !cache.local_tiers_active() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wait = start_at.saturating_sub(unix_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let tasks: Vec<_> = (0..tasks)
            .map(|_| {
                let (cache, mut counter) = (cache.clone(), counter.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let value = cache
                        .lookup::<String>(HERD_KEY)
                        .load(|| async move {
                            let _: u64 = redis::cmd("INCR")
                                .arg(HERD_LOADS)
                                .query_async(&mut counter)
                                .await
                                .expect("INCR");
                            tokio::time::sleep(load).await;
                            Ok::<_, Infallible>("loaded".to_owned())
                        })
                        .await
                        .expect("the loader cannot fail");
                    assert_eq!(value, "loaded");
                    started.elapsed()
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.push(task.await.expect("task"));
        }
        latencies
    });
    let line: Vec<String> = latencies
        .iter()
        .map(|d| d.as_micros().to_string())
        .collect();
    println!("{}", line.join(" "));
}

// ---------------------------------------------------------------- trace --

async fn trace(cluster: &RedisCluster, shape: Shape) -> bool {
    let trace = Arc::new(zipf_trace(
        shape.trace_keys,
        1.0,
        shape.trace_requests,
        0x5EED,
    ));
    let unique = trace.iter().collect::<HashSet<_>>().len() as u64;
    let cache = cache(cluster, "trace:");
    let _ = cache.lookup::<String>("trace:warm-up").get().await;
    let (cursor, loads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..shape.trace_tasks)
        .map(|_| {
            let (cache, trace, cursor, loads) =
                (cache.clone(), trace.clone(), cursor.clone(), loads.clone());
            tokio::spawn(async move {
                loop {
                    let at = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(&key) = trace.get(at) else { break };
                    let loads = loads.clone();
                    let value = cache
                        .lookup::<u64>(&format!("row:{key}"))
                        .ttl(Some(Duration::from_secs(600)))
                        .load(|| async move {
                            loads.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(shape.trace_load).await;
                            Ok::<_, Infallible>(key)
                        })
                        .await
                        .expect("the loader cannot fail");
                    assert_eq!(value, key, "wrong value for row {key}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let wall = started.elapsed();
    let loads = loads.load(Ordering::Relaxed);
    let floor = shape.trace_load.as_secs_f64() * loads as f64 / shape.trace_tasks as f64;
    let stats = cache.stats();
    println!(
        "cluster trace requests={} unique={unique} loads={loads} tasks={} wall_s={:.2} floor_s={:.2} \
         round_trips={} store_errors={} cross_slot_errors={}",
        shape.trace_requests,
        shape.trace_tasks,
        wall.as_secs_f64(),
        floor,
        stats.store_request,
        stats.store_error,
        stats.cross_slot_error,
    );
    loads == unique
}

// ----------------------------------------------------------------- hits --

async fn hits(cluster: &RedisCluster, shape: Shape) {
    let cache = cache(cluster, "hits:");
    let value = "x".repeat(200);
    let stored = value.clone();
    cache
        .lookup::<String>("hot")
        .load(|| async move { Ok::<_, Infallible>(stored) })
        .await
        .expect("load");
    let mut raw = cluster
        .client()
        .get_async_connection()
        .await
        .expect("cluster connection");
    let raw_key = format!("{}{{raw}}", cache.prefix());
    let _: () = redis::cmd("SET")
        .arg(&raw_key)
        .arg(&value)
        .query_async(&mut raw)
        .await
        .expect("SET");
    // Alternate rounds so that both see the same machine noise.
    let (mut ours, mut floor) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..10 {
        let started = Instant::now();
        for _ in 0..shape.hits / 10 {
            let hit = cache.lookup::<String>("hot").get().await;
            assert_eq!(hit.as_deref(), Some(value.as_str()));
        }
        ours += started.elapsed();
        let started = Instant::now();
        for _ in 0..shape.hits / 10 {
            let got: Option<String> = redis::cmd("GET")
                .arg(&raw_key)
                .query_async(&mut raw)
                .await
                .expect("GET");
            assert!(got.is_some());
        }
        floor += started.elapsed();
    }
    let per = |total: Duration| total.as_secs_f64() * 1e6 / shape.hits as f64;
    println!(
        "cluster hit cacheme_us={:.1} raw_get_us={:.1} ratio={:.2}",
        per(ours),
        per(floor),
        per(ours) / per(floor)
    );
}

// ----------------------------------------------------------------- soak --

const SOAK_KEYS: usize = 64;
const SOAK_TASKS: u64 = 64;

#[derive(Debug, Default)]
struct SoakResult {
    errors_to_caller: u64,
    wrong_values: u64,
    recovered_ms_max: u64,
    cross_slot: u64,
}

async fn soak(cluster: Arc<RedisCluster>, shape: Shape) -> SoakResult {
    let cache = cache(&cluster, "soak:");
    let _ = cache.lookup::<u64>("soak:warm-up").get().await;
    // Per key: the source's version, and the newest version whose
    // invalidation returned (no call starting after it may see older).
    let current: Arc<Vec<AtomicU64>> =
        Arc::new((0..SOAK_KEYS).map(|_| AtomicU64::new(0)).collect());
    let safe: Arc<Vec<AtomicU64>> = Arc::new((0..SOAK_KEYS).map(|_| AtomicU64::new(0)).collect());
    let (calls, wrong, errors, inval_errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..SOAK_TASKS)
        .map(|task| {
            let (cache, current, safe, stop) =
                (cache.clone(), current.clone(), safe.clone(), stop.clone());
            let (calls, wrong, errors, inval_errors) = (
                calls.clone(),
                wrong.clone(),
                errors.clone(),
                inval_errors.clone(),
            );
            tokio::spawn(async move {
                let mut rng = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let key = (rng % SOAK_KEYS as u64) as usize;
                    let name = format!("k:{key}");
                    if rng % 10 == 0 {
                        let version = current[key].fetch_add(1, Ordering::SeqCst) + 1;
                        let run = cache
                            .create_invalidation()
                            .key(name)
                            .durable(1, Duration::from_millis(500))
                            .run()
                            .await;
                        match run {
                            Ok(_) => {
                                safe[key].fetch_max(version, Ordering::SeqCst);
                            }
                            Err(_) => {
                                inval_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                    let floor = safe[key].load(Ordering::SeqCst);
                    let source = &current[key];
                    let served = cache
                        .lookup::<u64>(&name)
                        .stale(false)
                        .load(|| async {
                            let version = source.load(Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok::<_, Infallible>(version)
                        })
                        .await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    match served {
                        Ok(version) if version < floor => {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let between = shape.soak / (shape.kills as u32 + 1);
    let mut recovered = Vec::new();
    for kill in 0..shape.kills {
        tokio::time::sleep(between.saturating_sub(Duration::from_millis(500))).await;
        // A key whose primary is killed: a different primary each time.
        let probe = format!("k:{kill}");
        let probe_key = format!("{}{{{probe}}}", cache.prefix());
        let (killed, promoted_after) = tokio::task::spawn_blocking({
            let cluster = cluster.clone();
            move || {
                let killed = cluster.kill_primary_of(&probe_key);
                (killed, cluster.wait_for_failover(killed))
            }
        })
        .await
        .expect("failover");
        let promoted = Instant::now();
        let hits_before = cache.stats().hit;
        let deadline = promoted + Duration::from_secs(30);
        loop {
            let hit = cache.lookup::<u64>(&probe).get().await.is_some();
            if hit && cache.stats().hit > hits_before {
                break;
            }
            assert!(Instant::now() < deadline, "hits did not resume within 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let resumed = promoted.elapsed();
        println!(
            "cluster failover kill={} node={killed} promoted_after_ms={} hits_resumed_ms={}",
            kill + 1,
            promoted_after.as_millis(),
            resumed.as_millis()
        );
        recovered.push(resumed);
        // The old primary comes back as a replica of its successor.
        tokio::task::spawn_blocking({
            let cluster = cluster.clone();
            move || cluster.restart_node(killed)
        })
        .await
        .expect("restart");
    }
    tokio::time::sleep(shape.soak.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker");
    }
    let stats = cache.stats();
    let result = SoakResult {
        errors_to_caller: errors.load(Ordering::Relaxed),
        wrong_values: wrong.load(Ordering::Relaxed),
        recovered_ms_max: recovered
            .iter()
            .map(|d| d.as_millis() as u64)
            .max()
            .unwrap_or(0),
        cross_slot: stats.cross_slot_error,
    };
    println!(
        "cluster faults seconds={} calls={} kills={} errors_to_caller={} wrong_values={} \
         invalidation_errors={} recovered_ms={:?} store_errors={} short_circuited={} cross_slot_errors={}",
        shape.soak.as_secs(),
        calls.load(Ordering::Relaxed),
        shape.kills,
        result.errors_to_caller,
        result.wrong_values,
        inval_errors.load(Ordering::Relaxed),
        recovered
            .iter()
            .map(Duration::as_millis)
            .collect::<Vec<_>>(),
        stats.store_error,
        stats.short_circuited,
        stats.cross_slot_error,
    );
    result
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
