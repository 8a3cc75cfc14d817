#![allow(missing_docs)]
//! The zipf trace (issue 5): 200,000 requests over a zipf key space, replayed
//! by 1,000 tasks against a redis-server this program starts, once per
//! implementation, each loader run sleeping 100 ms. One line per
//! implementation, cacheme's last (fields after `floor_s` cut here):
//!
//! ```text
//! trace impl=naive requests=200000 unique=55377 loads=.. redis_cmds=.. gets=.. wall_s=.. floor_s=.. .. redis_cpu_s=.. redis_cpu_vs_naive=1.000
//! trace impl=cached requests=200000 unique=55377 loads=.. redis_cmds=.. gets=.. wall_s=.. floor_s=.. .. redis_cpu_s=.. redis_cpu_vs_naive=..
//! trace impl=cacheme_remote requests=200000 unique=55377 loads=.. redis_cmds=.. gets=.. wall_s=.. floor_s=.. .. redis_cpu_s=.. redis_cpu_vs_naive=..
//! trace impl=cacheme requests=200000 unique=55377 loads=.. redis_cmds=.. gets=.. wall_s=.. floor_s=.. .. redis_cpu_s=.. redis_cpu_vs_naive=..
//! ```
//!
//! - The implementations: `naive` is cache-aside by hand over one
//!   `ConnectionManager` (`GET`; on a miss, load, then `SET .. PX` with the
//!   same TTL; JSON values). `cached` is the `cached` crate's Redis store:
//!   `#[concurrent_cached(ty = "cached::AsyncRedisCache<..>", create = ..)]`,
//!   the macro over `AsyncRedisCache` built with `connection_manager(true)`
//!   (not the shorthand `redis = true`, which reads its URL from an
//!   environment variable); on a miss it runs the function, then `PSETEX`.
//!   `cacheme` is a node type with a local tier (`#[node(ttl = ..,
//!   local_ttl = .., local_capacity = ..)]`, the capacity above the number of
//!   distinct keys) read with `objects().get_or_load`, on a cache with
//!   `herd_retry(10, 50 ms)` (a budget above the 100 ms load).
//!   `cacheme_remote` is the same without the local tier (a node type with
//!   the same key and TTL, no `local_ttl`): every request goes to Redis.
//! - The trace: zipf, exponent 1.0, over 392,012 keys, drawn by inverting the
//!   cumulative distribution with a fixed-seed splitmix64 (the generator of
//!   `benches/local_tier.rs`); those parameters give 55,377 distinct keys in
//!   200,000 requests. Every implementation replays the same sequence: 1,000
//!   tasks each take the next request from one shared cursor until none are
//!   left.
//! - Before each replay the implementation is warmed up on a key outside the
//!   trace (connections made; cacheme's subscription up and its scripts
//!   loaded), then the server is cleared (`FLUSHALL`, `CONFIG RESETSTAT`).
//! - `loads`: loader runs (the loader counts itself, then sleeps).
//! - `redis_cmds`: the sum of `calls` over every `cmdstat_*` line of
//!   `INFO commandstats`, less this program's own `INFO`, `CONFIG` and
//!   `FLUSHALL`. Redis also counts the commands a Lua script runs
//!   (`redis.call`), one each, on top of the `EVALSHA` itself: cacheme's
//!   claim script is `EVALSHA` + `GET` + `SET`, its fill `EVALSHA` + `GET` +
//!   `SET` + `DEL`. `gets` is `cmdstat_get`, so it counts those in-script
//!   `GET`s too. The per-command breakdown is printed first
//!   (`trace cmdstats ..`), then the server time per call of each command
//!   (`trace cmdtime ..`, from the `usec` of `INFO commandstats`; a
//!   script's time includes the commands it ran).
//! - `wall_s`: from the start of the tasks to the end of the last request.
//!   `floor_s` = `loads` × load time ÷ tasks: the time the loads alone take
//!   if every task is always loading.
//! - Further fields: `wall_vs_floor`, `dup_loads` (= `loads` − `unique`),
//!   and for cacheme (both variants) `cmds_vs_naive`, `round_trips` (`Cache::stats()
//!   .store_request`: one per request sent, a pipeline or script counting
//!   one), `local_hits`, `coalesced` (callers that waited in this process for
//!   another caller's read or load of the same key), `misses`, `fills`,
//!   `waits`, `store_errors`. Every line ends with `redis_cpu_s`, the CPU
//!   time the redis-server process used during the replay (the change of
//!   `used_cpu_user` + `used_cpu_sys` in `INFO cpu`, read just before and
//!   just after it), and `redis_cpu_vs_naive`, that time divided by naive
//!   cache-aside's in the same run.
//! - `trace time ..` lines say where the tasks' time went, summed over the
//!   requests and divided by the tasks (so that they add up to `wall_s`):
//!   before a loader run (reads, claims), the runs themselves (the nominal
//!   load plus timer lag), after them (writes), requests that ran no loader
//!   (hits, waits for another caller's load), and idle (the end of the
//!   trace); then the same per loader run, in ms, and the CPU used by this
//!   process and by redis-server during the replay.
//!
//! Targets (issue 5): for cacheme, `loads == unique`, `wall_s` ≤ 1.03 ×
//! `floor_s`, and `redis_cmds` ≤ 0.75 × naive's in the same run. Issue 12:
//! `redis_cpu_vs_naive` ≤ 0.8 for cacheme, ≤ 1.2 for `cacheme_remote`.
//!
//! `just trace` runs it (`cargo bench -p cacheme-benches --bench trace`).
//! Under `cargo test --workspace --all-targets` (no `--bench`) a small trace
//! (2,000 requests, 50 tasks, 10 ms loads) runs in a few seconds and asserts
//! `loads == unique` for both cacheme variants.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cached::macros::concurrent_cached;
use cacheme::{Cache, Node, StatsSnapshot};
use cacheme_test_support::RedisServer;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

#[path = "shared/zipf.rs"]
mod zipf;
use zipf::zipf_trace;

#[derive(Debug, Clone, Copy)]
struct Shape {
    requests: usize,
    /// The key space the zipf distribution is over.
    keys: usize,
    tasks: usize,
    load: Duration,
}

const FULL: Shape = Shape {
    requests: 200_000,
    keys: 392_012,
    tasks: 1000,
    load: Duration::from_millis(100),
};

/// `cargo test --workspace --all-targets` runs this binary without
/// `--bench`: the same program on a small trace, so that CI keeps it working.
const SMOKE: Shape = Shape {
    requests: 2_000,
    keys: 4_000,
    tasks: 50,
    load: Duration::from_millis(10),
};

const ZIPF_EXPONENT: f64 = 1.0;
const SEED: u64 = 0x00C0_FFEE;
/// A key outside the trace, read before the replay to warm connections up.
const WARM_UP: u64 = u64::MAX;
/// Long enough that nothing expires during a run.
const TTL: Duration = Duration::from_secs(3600);

/// What the loader returns: a row of about 120 bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    name: String,
    score: f64,
}

/// cacheme's node: the fields form the key; a local tier in front of Redis
/// that holds the whole working set.
#[derive(Node)]
#[node(
    key = "trace:{id}",
    value = Row,
    ttl = 3600,
    local_ttl = 3600,
    local_capacity = 100_000
)]
struct TraceNode {
    id: u64,
}

/// The same node without a local tier: every request goes to Redis
/// (`trace impl=cacheme_remote`).
#[derive(Node)]
#[node(key = "trace:{id}", value = Row, ttl = 3600)]
struct TraceRemoteNode {
    id: u64,
}

/// Loader runs, by every implementation (reset before each).
static LOADS: AtomicU64 = AtomicU64::new(0);
/// How long a loader run takes, in ms (set once from the shape).
static LOAD_MS: AtomicU64 = AtomicU64::new(0);
/// Where `cached`'s store connects (the macro builds it on first call).
static CACHED_URL: OnceLock<String> = OnceLock::new();

tokio::task_local! {
    /// The request the current task is serving: when it started, and when
    /// its loader run (if any) ended.
    static REQUEST: RequestTiming;
}

struct RequestTiming {
    started: Instant,
    load_ended: Cell<Option<Instant>>,
}

/// Time spent around loader runs, summed over the requests that ran one.
struct AroundLoads {
    /// From the request's start to its loader's start (reads, claims).
    before_ns: AtomicU64,
    /// The loader runs themselves (the nominal load time, plus timer lag).
    load_ns: AtomicU64,
    /// From the loader's end to the request's end (writes).
    after_ns: AtomicU64,
    /// Requests that ran no loader (hits, and waits for another's load).
    other_ns: AtomicU64,
}

static AROUND: AroundLoads = AroundLoads {
    before_ns: AtomicU64::new(0),
    load_ns: AtomicU64::new(0),
    after_ns: AtomicU64::new(0),
    other_ns: AtomicU64::new(0),
};

/// The source of truth: counts itself, then takes the load time.
async fn load(id: u64) -> Row {
    LOADS.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let _ = REQUEST.try_with(|r| {
        let before = started.duration_since(r.started).as_nanos() as u64;
        AROUND.before_ns.fetch_add(before, Ordering::Relaxed);
    });
    tokio::time::sleep(Duration::from_millis(LOAD_MS.load(Ordering::Relaxed))).await;
    let ended = Instant::now();
    AROUND
        .load_ns
        .fetch_add((ended - started).as_nanos() as u64, Ordering::Relaxed);
    let _ = REQUEST.try_with(|r| r.load_ended.set(Some(ended)));
    Row {
        id,
        name: format!("row {id:>12} of the zipf trace, as the database would return it ......."),
        score: id as f64 / 7.0,
    }
}

/// The `cached` crate: its async Redis store behind `#[concurrent_cached]`.
#[concurrent_cached(
    ty = "cached::AsyncRedisCache<u64, Row>",
    create = r#"{
        cached::AsyncRedisCache::builder("trace")
            .ttl(TTL)
            .connection_string(CACHED_URL.get().expect("the URL is set before the first call"))
            .connection_manager(true)
            .build()
            .await
            .expect("cached's Redis store")
    }"#,
    map_error = r#"|e| format!("{e:?}")"#
)]
async fn cached_row(id: u64) -> Result<Row, String> {
    Ok(load(id).await)
}

/// Naive cache-aside: `GET`; on a miss, load, then `SET` with the TTL.
async fn naive_row(mut conn: ConnectionManager, id: u64) -> Row {
    let key = format!("trace:{id}");
    let found: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    if let Some(bytes) = found {
        return serde_json::from_slice(&bytes).expect("a row");
    }
    let row = load(id).await;
    redis::cmd("SET")
        .arg(&key)
        .arg(serde_json::to_vec(&row).expect("a row serializes"))
        .arg("PX")
        .arg(TTL.as_millis() as u64)
        .exec_async(&mut conn)
        .await
        .expect("SET");
    row
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Naive,
    Cached,
    /// cacheme without its local tier.
    CachemeRemote,
    Cacheme,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Naive => "naive",
            Impl::Cached => "cached",
            Impl::CachemeRemote => "cacheme_remote",
            Impl::Cacheme => "cacheme",
        }
    }
}

/// What one replay measured.
struct Run {
    which: Impl,
    loads: u64,
    cmdstats: BTreeMap<String, u64>,
    /// Server time per command (`usec` of `INFO commandstats`), in µs; a
    /// script's includes the commands it ran.
    cmdusec: BTreeMap<String, u64>,
    wall: Duration,
    /// The task time around loads, summed: before, load, after, other (ns).
    around: [u64; 4],
    /// CPU seconds used during the replay by this process and by redis-server
    /// (`None` where they cannot be read).
    cpu: (Option<f64>, Option<f64>),
    /// cacheme's own counters.
    stats: Option<StatsSnapshot>,
}

impl Run {
    fn redis_cmds(&self) -> u64 {
        self.cmdstats.values().sum()
    }

    fn gets(&self) -> u64 {
        self.cmdstats.get("get").copied().unwrap_or(0)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes the binary
    }
    let full = args.iter().any(|a| a == "--bench");
    let shape = if full { FULL } else { SMOKE };
    LOAD_MS.store(shape.load.as_millis() as u64, Ordering::Relaxed);

    let trace = Arc::new(zipf_trace(shape.keys, ZIPF_EXPONENT, shape.requests, SEED));
    let unique = trace.iter().collect::<HashSet<_>>().len() as u64;
    let server = RedisServer::start();
    println!(
        "trace: {} requests, zipf {} over {} keys (seed {:#x}): {} distinct; {} tasks; loader {} ms; redis {}",
        shape.requests,
        ZIPF_EXPONENT,
        shape.keys,
        SEED,
        unique,
        shape.tasks,
        shape.load.as_millis(),
        server.url()
    );

    let runs: Vec<Run> = [
        Impl::Naive,
        Impl::Cached,
        Impl::CachemeRemote,
        Impl::Cacheme,
    ]
    .into_iter()
    .map(|which| replay_with(which, &server, &trace, shape))
    .collect();
    for run in &runs {
        let breakdown: Vec<String> = run
            .cmdstats
            .iter()
            .map(|(name, calls)| format!("{name}={calls}"))
            .collect();
        println!(
            "trace cmdstats impl={} {}",
            run.which.name(),
            breakdown.join(" ")
        );
    }
    for run in &runs {
        // Server time per call of each command (a script's includes the
        // commands it ran), and all calls' time together, in µs.
        let per_call: Vec<String> = run
            .cmdusec
            .iter()
            .map(|(name, usec)| {
                let calls = run.cmdstats.get(name).copied().unwrap_or(0).max(1);
                format!("{name}={:.2}", *usec as f64 / calls as f64)
            })
            .collect();
        println!(
            "trace cmdtime impl={} usec_per_call: {}",
            run.which.name(),
            per_call.join(" ")
        );
    }
    for run in &runs {
        // Where the tasks' time went, per task (wall_s = the sum + idle), and
        // per loader run.
        let [before, load, after, other] =
            run.around.map(|ns| ns as f64 / 1e9 / shape.tasks as f64);
        let per_load = |ns: u64| ns as f64 / 1e6 / run.loads.max(1) as f64;
        println!(
            "trace time impl={} per_task_s: before_loads={:.3} loads={:.3} after_loads={:.3} other_requests={:.3} idle={:.3} per_load_ms: before={:.2} load={:.2} after={:.2} cpu_s: this_process={} redis_server={}",
            run.which.name(),
            before,
            load,
            after,
            other,
            run.wall.as_secs_f64() - (before + load + after + other),
            per_load(run.around[0]),
            per_load(run.around[1]),
            per_load(run.around[2]),
            seconds(run.cpu.0),
            seconds(run.cpu.1),
        );
    }
    let naive = &runs[0];
    for run in &runs {
        println!("{}", line(run, shape, unique, naive));
    }

    if !full {
        // The smoke run checks the promise, so CI fails if it breaks.
        for run in runs.iter().filter(|run| run.stats.is_some()) {
            assert_eq!(
                run.loads,
                unique,
                "{}: exactly one load per distinct key",
                run.which.name()
            );
        }
    }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_owned(), |s| format!("{s:.2}"))
}

fn line(run: &Run, shape: Shape, unique: u64, naive: &Run) -> String {
    let floor = run.loads as f64 * shape.load.as_secs_f64() / shape.tasks as f64;
    let wall = run.wall.as_secs_f64();
    let mut line = format!(
        "trace impl={} requests={} unique={} loads={} redis_cmds={} gets={} wall_s={:.2} floor_s={:.2} wall_vs_floor={:.3} dup_loads={}",
        run.which.name(),
        shape.requests,
        unique,
        run.loads,
        run.redis_cmds(),
        run.gets(),
        wall,
        floor,
        wall / floor,
        run.loads as i64 - unique as i64,
    );
    if let Some(stats) = run.stats {
        line.push_str(&format!(
            " cmds_vs_naive={:.3} round_trips={} local_hits={} coalesced={} misses={} fills={} waits={} store_errors={}",
            run.redis_cmds() as f64 / naive.redis_cmds() as f64,
            stats.store_request,
            stats.local_hit,
            stats.coalesced,
            stats.miss,
            stats.fill,
            stats.wait,
            stats.store_error,
        ));
    }
    // What the replay cost the Redis server, against naive cache-aside's.
    let ratio = match (run.cpu.1, naive.cpu.1) {
        (Some(used), Some(naive)) if naive > 0.0 => format!("{:.3}", used / naive),
        _ => "?".to_owned(),
    };
    let used = run
        .cpu
        .1
        .map_or_else(|| "?".to_owned(), |s| format!("{s:.3}"));
    line.push_str(&format!(" redis_cpu_s={used} redis_cpu_vs_naive={ratio}"));
    line
}

/// Set up one implementation (connections made and warm), clear the server
/// and its counters, replay the trace, and read the counters.
fn replay_with(which: Impl, server: &RedisServer, trace: &Arc<Vec<u64>>, shape: Shape) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut admin = server.connection();
    let url = server.url();
    let trace = trace.clone();
    runtime.block_on(async move {
        match which {
            Impl::Naive => {
                let conn = ConnectionManager::new(server.client())
                    .await
                    .expect("connection manager");
                let cpu_before = reset(&mut admin);
                let wall = replay(&trace, shape.tasks, move |id| {
                    let conn = conn.clone();
                    async move {
                        assert_eq!(naive_row(conn, id).await.id, id);
                    }
                })
                .await;
                counted(which, wall, None, cpu_before, &mut admin)
            }
            Impl::Cached => {
                CACHED_URL.set(url).expect("cached runs once");
                // The store and its connection are made on the first call.
                cached_row(WARM_UP).await.expect("warm-up");
                let cpu_before = reset(&mut admin);
                let wall = replay(&trace, shape.tasks, |id| async move {
                    assert_eq!(cached_row(id).await.expect("cached").id, id);
                })
                .await;
                counted(which, wall, None, cpu_before, &mut admin)
            }
            Impl::CachemeRemote => {
                replay_cacheme::<TraceRemoteNode>(which, url, &trace, shape, &mut admin).await
            }
            Impl::Cacheme => {
                replay_cacheme::<TraceNode>(which, url, &trace, shape, &mut admin).await
            }
        }
    })
}

/// cacheme's replay through the node type `N` (with or without a local
/// tier).
async fn replay_cacheme<N>(
    which: Impl,
    url: String,
    trace: &Arc<Vec<u64>>,
    shape: Shape,
    admin: &mut redis::Connection,
) -> Run
where
    N: Node<Value = Row> + From<u64>,
{
    let cache = Cache::builder()
        .redis_url(url)
        .herd_retry(10, Duration::from_millis(50))
        .build()
        .expect("cache");
    // Wait for the event subscription that turns the local tier on (and
    // wakes waiters), then connect and load the scripts with one cold key.
    let subscribing = Instant::now();
    while !cache.local_tiers_active() {
        assert!(
            subscribing.elapsed() < Duration::from_secs(10),
            "the event subscription never came up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let objects = cache.objects::<N>();
    objects
        .get_or_load(WARM_UP, || async {
            Ok::<_, Infallible>(load(WARM_UP).await)
        })
        .await
        .expect("warm-up");
    let cpu_before = reset(admin);
    let before = cache.stats();
    let wall = replay(trace, shape.tasks, move |id| {
        let objects = objects.clone();
        async move {
            let row = objects
                .get_or_load(id, || async move { Ok::<_, Infallible>(load(id).await) })
                .await
                .expect("the loader cannot fail");
            assert_eq!(row.id, id);
        }
    })
    .await;
    let stats = difference(cache.stats(), before);
    // Counted while the cache lives: dropping it unsubscribes.
    counted(which, wall, Some(stats), cpu_before, admin)
}

/// Read the counters at the end of a replay.
fn counted(
    which: Impl,
    wall: Duration,
    stats: Option<StatsSnapshot>,
    cpu_before: (Option<f64>, Option<f64>),
    admin: &mut redis::Connection,
) -> Run {
    let cpu_after = cpu(admin);
    let used = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
    Run {
        which,
        loads: LOADS.load(Ordering::Relaxed),
        cmdstats: cmdstats(admin, "calls="),
        cmdusec: cmdstats(admin, "usec="),
        wall,
        around: [
            &AROUND.before_ns,
            &AROUND.load_ns,
            &AROUND.after_ns,
            &AROUND.other_ns,
        ]
        .map(|counter| counter.load(Ordering::Relaxed)),
        cpu: (
            used(cpu_before.0, cpu_after.0),
            used(cpu_before.1, cpu_after.1),
        ),
        stats,
    }
}

/// Clear the data, the command counters and the load counters; the CPU
/// used so far.
fn reset(admin: &mut redis::Connection) -> (Option<f64>, Option<f64>) {
    redis::cmd("FLUSHALL").exec(admin).expect("FLUSHALL");
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(admin)
        .expect("CONFIG RESETSTAT");
    LOADS.store(0, Ordering::Relaxed);
    for counter in [
        &AROUND.before_ns,
        &AROUND.load_ns,
        &AROUND.after_ns,
        &AROUND.other_ns,
    ] {
        counter.store(0, Ordering::Relaxed);
    }
    cpu(admin)
}

/// CPU seconds used so far by this process (from `/proc/self/stat`, so on
/// Linux only) and by redis-server (`INFO cpu`).
fn cpu(admin: &mut redis::Connection) -> (Option<f64>, Option<f64>) {
    // Fields 14 and 15 (utime, stime), in clock ticks of (almost always) 10 ms;
    // the command name (field 2) may hold spaces, so count after its ')'.
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        });
    let info: Option<String> = redis::cmd("INFO").arg("cpu").query(admin).ok();
    let server = info.and_then(|info| {
        let field = |name: &str| {
            info.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        };
        Some(field("used_cpu_user")? + field("used_cpu_sys")?)
    });
    (own, server)
}

/// `field` (`calls=` or `usec=`) per command since the reset, without this
/// program's own commands.
fn cmdstats(admin: &mut redis::Connection, field: &str) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(admin)
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let value = rest.split(',').find_map(|f| f.strip_prefix(field))?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .filter(|(name, _): &(String, u64)| {
            !matches!(name.as_str(), "info" | "flushall") && !name.starts_with("config")
        })
        .collect()
}

/// `tasks` tasks take the next request from one cursor until none are left;
/// returns the time until the last one is done.
async fn replay<F, Fut>(trace: &Arc<Vec<u64>>, tasks: usize, request: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (trace, cursor, request) = (trace.clone(), cursor.clone(), request.clone());
            tokio::spawn(async move {
                loop {
                    let at = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(&id) = trace.get(at) else { break };
                    let timing = RequestTiming {
                        started: Instant::now(),
                        load_ended: Cell::new(None),
                    };
                    let (started, load_ended) = REQUEST
                        .scope(timing, async {
                            request(id).await;
                            REQUEST.with(|r| (r.started, r.load_ended.get()))
                        })
                        .await;
                    let (counter, since) = match load_ended {
                        Some(ended) => (&AROUND.after_ns, ended),
                        None => (&AROUND.other_ns, started),
                    };
                    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("no request panicked");
    }
    started.elapsed()
}

/// The counters that moved between two snapshots (only those printed).
fn difference(after: StatsSnapshot, before: StatsSnapshot) -> StatsSnapshot {
    let mut moved = after;
    moved.store_request -= before.store_request;
    moved.local_hit -= before.local_hit;
    moved.coalesced -= before.coalesced;
    moved.miss -= before.miss;
    moved.fill -= before.fill;
    moved.wait -= before.wait;
    moved.store_error -= before.store_error;
    moved
}
