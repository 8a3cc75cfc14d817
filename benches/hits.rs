#![allow(missing_docs)]
//! What a cache call costs, beside the physical floor and the peers (issue 5).
//! The four criterion groups each have a baseline; `benches/report.rs` turns
//! their medians into the ratios of `docs/benchmarks.md`.
//!
//! - `remote_hit`: a value of a 10-field struct (`Profile`, ≈200 bytes as
//!   cacheme stores it) read from Redis. Baseline `raw_get_decode`: one GET
//!   of the very bytes cacheme stored, over a redis-rs
//!   `MultiplexedConnection`, plus decoding them with cacheme's codec
//!   (`wire::Envelope::parse(..)?.decode()`): the floor. Against it: cacheme
//!   through `Cache::lookup(key).load(..)`, through a node manager
//!   (`objects().get_or_load(..)`) and through a `#[cacheme]` async fn; and
//!   the `cached` crate's Redis hit (`#[concurrent_cached]` over
//!   `cached::AsyncRedisCache`, the same struct, MessagePack). `raw_get`
//!   (the GET alone, no decode) shows what decoding costs. Target: cacheme
//!   ≤ 1.04× the floor.
//! - `local_hit`: a node with a local tier (`local_ttl = 600`,
//!   `local_capacity = 10000`), hit through the manager and through
//!   `Lookup::local()`, against `quick_cache::sync::Cache<String, Profile>::get`
//!   (which clones the value out, as the tier does). `*_key_built` rows get
//!   the key ready-made; `*_format_key` rows build it from the id with
//!   `format!` (the manager always does). Target: ≤ 1.5× quick_cache's `get`.
//!   For reference, the alternative design: `redis_tracking_get_decode`, a
//!   `GET` answered from redis-rs's RESP3 client-side cache (`cache-aio`,
//!   `CLIENT TRACKING`) plus decoding the bytes.
//! - `miss_fill`: a cold key each iteration, the loader returning at once:
//!   cacheme's `load` (read, lease, fill) against naive cache-aside (GET
//!   miss, then SET of the same envelope with the same TTL).
//! - `invalidate`: one key; an invalid node (dependency group) with 1,000
//!   keys; a tag with 100,000 keys, written before each iteration (outside
//!   the timing) by pipelined raw writes in cacheme's format. Keys and groups
//!   are marked stale (their members stay indexed, so every iteration does
//!   the same work); the tag's keys are deleted, so they are written again.
//!
//! Printed before criterion starts: `hits setup: ..` (the CPUs this process
//! may run on, whether the server was pinned, the stored sizes).
//!
//! Run pinned to one CPU (the bench pins its redis-server to CPU 0 itself):
//! `taskset -c 0 cargo bench -p cacheme-benches --bench hits`, or
//! `./scripts/bench` for the whole report. Under `cargo test` (criterion's
//! test mode) every routine runs once and the tag holds 1,000 keys, so the
//! binary takes seconds.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached::macros::concurrent_cached;
use cacheme::__private::wire::{Dependency, Envelope, Header, seal};
use cacheme::Codec;
use cacheme::{Cache, InvalidNode, Node, cacheme};
use cacheme_test_support::RedisServer;
use criterion::{Criterion, SamplingMode};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::caching::CacheConfig;
use serde::{Deserialize, Serialize};

/// A realistic cached row: ten fields, about 200 bytes as cacheme stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    email: String,
    city: String,
    country: String,
    age: u32,
    score: f64,
    active: bool,
    tags: Vec<String>,
    created_at: u64,
}

fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: "Augusta Ada King".to_owned(),
        email: "ada.lovelace@example.com".to_owned(),
        city: "London".to_owned(),
        country: "United Kingdom".to_owned(),
        age: 36,
        score: 97.25,
        active: true,
        tags: vec![
            "mathematics".to_owned(),
            "poetry".to_owned(),
            "analytical-engine".to_owned(),
        ],
        created_at: 1_700_000_000_000 + id,
    }
}

/// The id every hit reads.
const ID: u64 = 1;
/// The cache key of `ID` (what the lookup, the manager and the decorated fn use).
const KEY: &str = "profile:1";
/// The Redis key cacheme stores it under (prefix `CM:`; see docs/data-model.md).
const REDIS_KEY: &str = "CM:{profile:1}";
/// Time to live of everything the bench writes through a loader.
const TTL: Duration = Duration::from_secs(3600);

/// A node over the same keys as `KEY` (`profile:{id}`), no local tier.
#[derive(Node)]
#[node(key = "profile:{id}", value = Profile)]
struct ProfileNode {
    id: u64,
}

/// A node with a local tier.
#[derive(Node)]
#[node(key = "local:{id}", value = Profile, local_ttl = 600, local_capacity = 10000)]
struct LocalProfile {
    id: u64,
}

/// The dependency group of the `invalidate` group's 1,000 keys.
#[derive(InvalidNode)]
#[invalid_node(key = "team:{id}")]
struct Team {
    id: u64,
}

/// Registers the tag `bulk` (what the 100,000 raw-written keys are indexed under).
#[derive(Node)]
#[node(key = "bulk:{id}", value = Profile, tag = "bulk")]
struct BulkProfile {
    id: u64,
}

/// Loader runs; every hit routine checks that it did not move.
static LOADS: AtomicU64 = AtomicU64::new(0);
static CACHE: OnceLock<Cache> = OnceLock::new();
static CACHED_URL: OnceLock<String> = OnceLock::new();

fn cache() -> &'static Cache {
    CACHE.get().expect("the bench builds its cache first")
}

async fn load_profile(id: u64) -> Result<Profile, Infallible> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    Ok(profile(id))
}

/// The decorated fn: cached under `profile:{id}`, on the bench's cache.
#[cacheme(key = format!("profile:{id}"), cache = cache())]
async fn decorated_profile(id: u64) -> Profile {
    LOADS.fetch_add(1, Ordering::Relaxed);
    profile(id)
}

/// The peer: the `cached` crate's Redis store (multiplexed connection,
/// MessagePack), on the bench's server.
#[concurrent_cached(
    map_error = r##"|e| format!("{e:?}")"##,
    ty = "cached::AsyncRedisCache<u64, Profile>",
    create = r##"{
        cached::AsyncRedisCache::builder("hits")
            .connection_string(CACHED_URL.get().expect("the bench sets the URL first"))
            .ttl(TTL)
            .build()
            .await
            .expect("cached's Redis store")
    }"##,
    companions = false
)]
async fn cached_profile(id: u64) -> Result<Profile, String> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    Ok(profile(id))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Put the server on CPU 0 too, when `taskset` exists.
fn pin_to_cpu0(server: &RedisServer) -> bool {
    server.pid().is_some_and(|pid| {
        std::process::Command::new("taskset")
            .args(["-pc", "0", &pid.to_string()])
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// The CPUs this process may run on (`Cpus_allowed_list`), as Linux says.
fn cpus_allowed() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Cpus_allowed_list:")
                    .map(|cpus| cpus.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Panics if a routine meant to hit ran a loader.
fn assert_no_loads(since: u64, what: &str) {
    let now = LOADS.load(Ordering::Relaxed);
    assert_eq!(now, since, "{what}: a hit ran the loader");
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;
/// One criterion group's benches.
type Benches = fn(&Bench, &mut Group<'_>);

struct Bench {
    rt: tokio::runtime::Runtime,
    conn: MultiplexedConnection,
    /// The server's URL.
    url: String,
    /// `cargo bench` (not criterion's test mode under `cargo test`).
    full: bool,
}

// ------------------------------------------------------------- remote hit --

fn remote_hit(bench: &Bench, group: &mut Group<'_>) {
    let Bench { rt, conn, .. } = bench;
    let c = cache();
    // Fill once through cacheme and once through `cached`, then only hits.
    let (envelope_len, cached_len) = rt.block_on(async {
        c.lookup::<Profile>(KEY)
            .ttl(Some(TTL))
            .load(|| load_profile(ID))
            .await
            .expect("fill");
        cached_profile(ID).await.expect("cached fill");
        let mut conn = conn.clone();
        let ours: Vec<u8> = conn.get(REDIS_KEY).await.expect("GET");
        let theirs: Vec<u8> = conn.get("cached-redis-store:hits:1").await.expect("GET");
        assert_eq!(
            Envelope::parse(&ours)
                .expect("envelope")
                .decode::<Profile>()
                .expect("decode"),
            profile(ID)
        );
        (ours.len(), theirs.len())
    });
    println!(
        "hits setup: stored bytes cacheme_envelope={envelope_len} cached={cached_len} \
         (a 10-field struct; cacheme keeps field names, cached writes positional MessagePack)"
    );
    let loads = LOADS.load(Ordering::Relaxed);

    group.bench_function("raw_get_decode", |b| {
        b.to_async(rt).iter(|| {
            let mut conn = conn.clone();
            async move {
                let bytes: Vec<u8> = conn.get(REDIS_KEY).await.expect("GET");
                let value: Profile = Envelope::parse(&bytes)
                    .expect("envelope")
                    .decode()
                    .expect("decode");
                value
            }
        })
    });
    group.bench_function("raw_get", |b| {
        b.to_async(rt).iter(|| {
            let mut conn = conn.clone();
            async move { conn.get::<_, Vec<u8>>(REDIS_KEY).await.expect("GET") }
        })
    });
    group.bench_function("cacheme_lookup", |b| {
        b.to_async(rt).iter(|| async {
            c.lookup::<Profile>(black_box(KEY))
                .load(|| load_profile(ID))
                .await
                .expect("hit")
        })
    });
    group.bench_function("cacheme_manager", |b| {
        b.to_async(rt).iter(|| async {
            c.objects::<ProfileNode>()
                .get_or_load(black_box(ID), || load_profile(ID))
                .await
                .expect("hit")
        })
    });
    group.bench_function("cacheme_decorated", |b| {
        b.to_async(rt)
            .iter(|| async { decorated_profile(black_box(ID)).await })
    });
    group.bench_function("cached_redis", |b| {
        b.to_async(rt)
            .iter(|| async { cached_profile(black_box(ID)).await.expect("hit") })
    });
    interleaved(bench);
    assert_no_loads(loads, "remote_hit");
}

/// The `remote_hit` routines, by index, for [`interleaved`]; the first is the floor.
const REMOTE: [&str; 6] = [
    "raw_get_decode",
    "raw_get",
    "cacheme_lookup",
    "cacheme_manager",
    "cacheme_decorated",
    "cached_redis",
];

/// `calls` calls of `REMOTE[which]`; the time per call.
async fn burst(which: usize, calls: u32, conn: &MultiplexedConnection) -> Duration {
    let c = cache();
    let start = Instant::now();
    for _ in 0..calls {
        match which {
            0 => {
                let bytes: Vec<u8> = conn.clone().get(REDIS_KEY).await.expect("GET");
                let value: Profile = Envelope::parse(&bytes)
                    .expect("envelope")
                    .decode()
                    .expect("decode");
                black_box(value);
            }
            1 => {
                black_box(
                    conn.clone()
                        .get::<_, Vec<u8>>(REDIS_KEY)
                        .await
                        .expect("GET"),
                );
            }
            2 => {
                black_box(
                    c.lookup::<Profile>(black_box(KEY))
                        .load(|| load_profile(ID))
                        .await
                        .expect("hit"),
                );
            }
            3 => {
                black_box(
                    c.objects::<ProfileNode>()
                        .get_or_load(black_box(ID), || load_profile(ID))
                        .await
                        .expect("hit"),
                );
            }
            4 => {
                black_box(decorated_profile(black_box(ID)).await);
            }
            _ => {
                black_box(cached_profile(black_box(ID)).await.expect("hit"));
            }
        }
    }
    start.elapsed() / calls
}

/// A cross-check of the `remote_hit` ratios that slow drift of the machine
/// cannot bias: rounds of a short burst of each routine in turn (starting
/// with a different one each round), and for each routine the median over
/// the rounds of its time divided by the floor's in the same round. Printed
/// as `hits interleaved ..` lines, which the report quotes.
fn interleaved(bench: &Bench) {
    let (rounds, calls) = if bench.full { (1000, 20) } else { (2, 2) };
    let n = REMOTE.len();
    let mut times = vec![Vec::with_capacity(rounds); n];
    bench.rt.block_on(async {
        for round in 0..rounds {
            for k in 0..n {
                let which = (round + k) % n;
                times[which].push(burst(which, calls, &bench.conn).await);
            }
        }
    });
    print_interleaved("remote_hit", &REMOTE, &times, rounds, calls);
}

/// Prints one `hits interleaved ..` line per routine: its median time per
/// call over the rounds, and the median (p25, p75) of its time divided by
/// the first routine's (the baseline) in the same round.
fn print_interleaved(
    group: &str,
    names: &[&str],
    times: &[Vec<Duration>],
    rounds: usize,
    calls: u32,
) {
    let quantile =
        |sorted: &[f64], q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    for (which, name) in names.iter().enumerate() {
        let mut ratios: Vec<f64> = times[which]
            .iter()
            .zip(&times[0])
            .map(|(t, floor)| t.as_secs_f64() / floor.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mut own: Vec<f64> = times[which].iter().map(|t| t.as_secs_f64() * 1e6).collect();
        own.sort_by(f64::total_cmp);
        println!(
            "hits interleaved group={group} bench={name} rounds={rounds} calls_per_round={calls} \
             median_us={:.2} ratio_median={:.3} ratio_p25={:.3} ratio_p75={:.3}",
            quantile(&own, 0.5),
            quantile(&ratios, 0.5),
            quantile(&ratios, 0.25),
            quantile(&ratios, 0.75),
        );
    }
}

// -------------------------------------------------------------- local hit --

fn local_hit(bench: &Bench, group: &mut Group<'_>) {
    let rt = &bench.rt;
    let c = cache();
    // The tier is used only while the event subscription is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.local_tiers_active() {
        assert!(
            Instant::now() < deadline,
            "the local tier never became active"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let manager = c.objects::<LocalProfile>();
    rt.block_on(async {
        manager
            .get_or_load(ID, || load_profile(ID))
            .await
            .expect("fill");
        let before = c.stats().local_hit;
        manager
            .get_or_load(ID, || load_profile(ID))
            .await
            .expect("hit");
        assert_eq!(c.stats().local_hit, before + 1, "not a local hit");
    });
    let quick: quick_cache::sync::Cache<String, Profile> = quick_cache::sync::Cache::new(10_000);
    let key = LocalProfile { id: ID }.key();
    quick.insert(key.clone(), profile(ID));
    let loads = LOADS.load(Ordering::Relaxed);
    let local_hits = c.stats().local_hit;

    group.bench_function("quick_cache_key_built", |b| {
        b.to_async(rt)
            .iter(|| async { quick.get(black_box(key.as_str())).expect("hit") })
    });
    group.bench_function("cacheme_lookup_local_key_built", |b| {
        b.to_async(rt).iter(|| async {
            c.lookup::<Profile>(black_box(key.as_str()))
                .spec(LocalProfile::SPEC)
                .local()
                .load(|| load_profile(ID))
                .await
                .expect("hit")
        })
    });
    group.bench_function("quick_cache_format_key", |b| {
        b.to_async(rt).iter(|| async {
            quick
                .get(format!("local:{}", black_box(ID)).as_str())
                .expect("hit")
        })
    });
    group.bench_function("cacheme_manager_format_key", |b| {
        b.to_async(rt).iter(|| async {
            manager
                .get_or_load(black_box(ID), || load_profile(ID))
                .await
                .expect("hit")
        })
    });
    group.bench_function("cacheme_lookup_local_format_key", |b| {
        b.to_async(rt).iter(|| async {
            c.lookup::<Profile>(format!("local:{}", black_box(ID)))
                .spec(LocalProfile::SPEC)
                .local()
                .load(|| load_profile(ID))
                .await
                .expect("hit")
        })
    });
    tracked_hit(bench, group, &format!("CM:{{{key}}}"));
    assert_no_loads(loads, "local_hit");
    assert!(
        c.stats().local_hit > local_hits || filtered_out("local_hit/"),
        "no local hits counted"
    );
}

/// Whether criterion's name filter (`cargo bench --bench hits -- remote_hit`)
/// leaves out every bench whose name starts with `prefix`: their sanity
/// checks are then skipped.
fn filtered_out(prefix: &str) -> bool {
    std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .any(|filter| !prefix.contains(&filter) && !filter.starts_with(prefix))
}

/// The alternative to cacheme's tier that issue 6 asks to measure: Redis's
/// server-assisted client-side caching (RESP3 `CLIENT TRACKING`), as redis-rs
/// offers it (`cache-aio`). A `GET` of a tracked key is answered from the
/// connection's own cache, and the bytes still have to be decoded.
fn tracked_hit(bench: &Bench, group: &mut Group<'_>, redis_key: &str) {
    let rt = &bench.rt;
    let client = redis::Client::open(format!("{}?protocol=resp3", bench.url)).expect("url");
    let config = redis::AsyncConnectionConfig::new().set_cache_config(CacheConfig::new());
    let tracked = rt.block_on(async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("RESP3 connection with client-side caching");
        for _ in 0..2 {
            let bytes: Vec<u8> = conn.get(redis_key).await.expect("GET");
            assert!(!bytes.is_empty(), "the local node's value is in Redis");
        }
        conn
    });
    let stats = || tracked.get_cache_statistics().expect("caching is on");
    assert!(
        stats().hit >= 1,
        "the second GET was not served from the client cache"
    );
    let misses = stats().miss;
    group.bench_function("redis_tracking_get_decode", |b| {
        b.to_async(rt).iter(|| {
            let mut conn = tracked.clone();
            async move {
                let bytes: Vec<u8> = conn.get(black_box(redis_key)).await.expect("GET");
                let value: Profile = Envelope::parse(&bytes)
                    .expect("envelope")
                    .decode()
                    .expect("decode");
                value
            }
        })
    });
    assert_eq!(stats().miss, misses, "a tracked GET went to Redis");
}

// -------------------------------------------------------------- miss fill --

/// The `miss_fill` routines, by index, for the interleaved check; the first
/// is the baseline.
const MISS: [&str; 2] = ["naive_get_set", "cacheme_load"];

/// Keys never used before (each miss routine reads a cold key).
static NEXT_COLD: AtomicU64 = AtomicU64::new(0);

/// Naive cache-aside on a cold key: GET (a miss), load, SET of the same
/// envelope cacheme would store, with the same TTL.
async fn naive_miss(conn: &MultiplexedConnection) -> Profile {
    let n = NEXT_COLD.fetch_add(1, Ordering::Relaxed);
    let mut conn = conn.clone();
    let key = format!("CM:{{naive:{n}}}");
    let found: Option<Vec<u8>> = conn.get(&key).await.expect("GET");
    assert!(found.is_none(), "a cold key was found");
    let loaded = load_profile(ID).await.expect("loaded");
    let payload = Codec::MessagePack.encode(&loaded).expect("encode");
    let sealed = sealed(&payload);
    let _: () = conn.set_ex(&key, sealed, TTL.as_secs()).await.expect("SET");
    loaded
}

/// cacheme on a cold key: the claiming read, the load, the fill.
async fn cacheme_miss() -> Profile {
    let n = NEXT_COLD.fetch_add(1, Ordering::Relaxed);
    cache()
        .lookup::<Profile>(format!("miss:{n}"))
        .ttl(Some(TTL))
        .load(|| load_profile(ID))
        .await
        .expect("loaded")
}

fn miss_fill(bench: &Bench, group: &mut Group<'_>) {
    let Bench { rt, conn, .. } = bench;
    let loads = LOADS.load(Ordering::Relaxed);
    group.bench_function("naive_get_set", |b| {
        b.to_async(rt).iter(|| naive_miss(conn))
    });
    group.bench_function("cacheme_load", |b| b.to_async(rt).iter(cacheme_miss));
    // The same two, interleaved (see `interleaved`): rounds of a burst of
    // each in turn, each routine's time divided by naive's in the round.
    let (rounds, calls) = if bench.full { (500, 20) } else { (2, 2) };
    let mut times = vec![Vec::with_capacity(rounds); MISS.len()];
    rt.block_on(async {
        for round in 0..rounds {
            for k in 0..MISS.len() {
                let which = (round + k) % MISS.len();
                let start = Instant::now();
                for _ in 0..calls {
                    if which == 0 {
                        black_box(naive_miss(conn).await);
                    } else {
                        black_box(cacheme_miss().await);
                    }
                }
                times[which].push(start.elapsed() / calls);
            }
        }
    });
    print_interleaved("miss_fill", &MISS, &times, rounds, calls);
    assert!(
        LOADS.load(Ordering::Relaxed) > loads,
        "the miss routines ran their loaders"
    );
}

// ------------------------------------------------------------- invalidate --

/// Writes `count` values of the tag `bulk` as cacheme would have: value keys
/// `CM:{bulk:i}` holding envelopes that name the tag (protocol v2 keeps no
/// index); 1,000 keys per MSET, 10 MSETs per pipeline (so that no single
/// request outlasts the connection's response timeout on a busy machine).
async fn write_bulk(conn: &mut MultiplexedConnection, count: u64) {
    let payload = Codec::MessagePack.encode(&profile(ID)).expect("encode");
    let envelope = sealed(&payload);
    let mut start = 0;
    while start < count {
        let mut pipe = redis::pipe();
        for _ in 0..10 {
            if start >= count {
                break;
            }
            let end = (start + 1000).min(count);
            let mut mset = redis::cmd("MSET");
            for i in start..end {
                mset.arg(format!("CM:{{bulk:{i}}}")).arg(&envelope);
            }
            pipe.add_command(mset).ignore();
            start = end;
        }
        let _: () = pipe.query_async(conn).await.expect("bulk write");
    }
}

fn invalidate(bench: &Bench, group: &mut Group<'_>) {
    let Bench { rt, conn, full, .. } = bench;
    let c = cache();
    rt.block_on(async {
        c.lookup::<Profile>("inv:one")
            .ttl(Some(TTL))
            .load(|| load_profile(0))
            .await
            .expect("fill");
        for i in 0..1000 {
            c.lookup::<Profile>(format!("member:{i}"))
                .ttl(Some(TTL))
                .depends_on(Team { id: 1 })
                .load(|| load_profile(i))
                .await
                .expect("fill");
        }
    });

    group.sample_size(50);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("one_key", |b| {
        b.to_async(rt).iter(|| async {
            let marked = c
                .create_invalidation()
                .key("inv:one")
                .run()
                .await
                .expect("invalidate");
            assert_eq!(marked, 1);
        })
    });

    group.sample_size(20);
    group.bench_function("group_1000", |b| {
        b.to_async(rt).iter(|| async {
            c.invalid_objects::<Team>()
                .invalid(1)
                .await
                .expect("invalidate");
        })
    });

    let count: u64 = if *full { 100_000 } else { 1_000 };
    assert_eq!(BulkProfile::SPEC.tag(), "bulk");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("tag_100k", |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut conn = conn.clone();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                write_bulk(&mut conn, count).await;
                let start = Instant::now();
                c.tag("bulk").invalid().await.expect("invalidate");
                total += start.elapsed();
            }
            total
        })
    });
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs this in test mode.
    let full = std::env::args().any(|a| a == "--bench");
    let server = RedisServer::start();
    let pinned = pin_to_cpu0(&server);
    println!(
        "hits setup: process cpus_allowed={} redis_server_pinned_to_cpu0={pinned}",
        cpus_allowed()
    );
    CACHE
        .set(
            Cache::builder()
                .redis_url(server.url())
                .build()
                .expect("cache"),
        )
        .unwrap_or_else(|_| unreachable!("set once"));
    CACHED_URL
        .set(server.url())
        .unwrap_or_else(|_| unreachable!("set once"));
    let rt = runtime();
    let conn = rt.block_on(async {
        server
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("multiplexed connection")
    });
    let bench = Bench {
        rt,
        conn,
        url: server.url(),
        full,
    };

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let groups: [(&str, Benches); 4] = [
        ("remote_hit", remote_hit),
        ("local_hit", local_hit),
        ("miss_fill", miss_fill),
        ("invalidate", invalidate),
    ];
    for (name, run) in groups {
        let mut group = criterion.benchmark_group(name);
        run(&bench, &mut group);
        group.finish();
    }
    criterion.final_summary();
    drop(bench);
    drop(server);
}

/// A value as cacheme writes it (tag `bulk`, claimed at sequence 0).
fn sealed(payload: &[u8]) -> Vec<u8> {
    let header = Header {
        codec: Codec::MessagePack,
        written_at_ms: now_ms(),
        claim_seq: 0,
        fresh_until_ms: 0,
        dependencies: &[Dependency::Tag("bulk")],
    };
    seal(&header, payload).expect("short names")
}
