#![allow(missing_docs)]
//! Many keys in one call (issue 15), against their baselines, in one run.
//!
//! - `hot_100`: 100 cached values (a small struct) read through
//!   `objects().get_many(ids)` and `get_or_load_many(ids, ..)`; baseline
//!   `raw_mget_decode`: one `MGET` of the very bytes cacheme stored, over a
//!   redis-rs `MultiplexedConnection`, plus decoding each with cacheme's
//!   codec (the floor); and `sequential_gets`: 100 `objects().get(id)`, one
//!   after the other (what the API offered before). Targets: ≤ 1.15× the
//!   floor, ≥ 20× faster than the sequential gets.
//! - `cold_100`: 100 keys that are not cached (fresh ids each iteration),
//!   through `get_or_load_many` with a loader that returns at once; baseline
//!   `naive`: an `MGET` (all misses), the loader, then one pipeline of
//!   `SET PX` of the same envelopes. Target: ≤ 1.5× naive.
//!
//! After criterion, `batch ratio ...` lines give the same comparisons from a
//! plain timing loop of this run (median of 15 rounds of 50 calls each).
//!
//! `cargo bench -p cacheme-benches --bench batch`; under `cargo test`
//! (criterion's test mode) each routine runs once.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheme::__private::wire::{Dependency, Envelope, Header, seal};
use cacheme::{Cache, Codec, Node};
use cacheme_test_support::RedisServer;
use criterion::Criterion;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

/// A small row: what a page of cats holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cat {
    id: u64,
    name: String,
    owner_id: u64,
    lives: u8,
}

fn cat(id: u64) -> Cat {
    Cat {
        id,
        name: format!("cat number {id}"),
        owner_id: id % 7,
        lives: 9,
    }
}

#[derive(Node)]
#[node(key = "bcat:{id}", value = Cat, ttl = 3600)]
struct CatNode {
    id: u64,
}

const N: u64 = 100;
const TTL_MS: u64 = 3_600_000;

/// A cold batch's loader: every id, at once.
async fn load(ids: Vec<u64>) -> Result<Vec<(u64, Cat)>, Infallible> {
    Ok(ids.into_iter().map(|id| (id, cat(id))).collect())
}

struct Bench {
    rt: tokio::runtime::Runtime,
    cache: Cache,
    conn: MultiplexedConnection,
    hot: Vec<u64>,
    hot_keys: Vec<String>,
    next_cold: AtomicU64,
}

impl Bench {
    async fn get_many(&self) -> usize {
        let got = self
            .cache
            .objects::<CatNode>()
            .get_many(self.hot.clone())
            .await;
        got.iter().flatten().count()
    }

    async fn get_or_load_many(&self, ids: Vec<u64>) -> usize {
        let got = self
            .cache
            .objects::<CatNode>()
            .get_or_load_many(ids, load)
            .await
            .expect("infallible");
        got.iter().flatten().count()
    }

    async fn sequential_gets(&self) -> usize {
        let objects = self.cache.objects::<CatNode>();
        let mut found = 0;
        for id in &self.hot {
            found += usize::from(objects.get(*id).await.is_some());
        }
        found
    }

    async fn raw_mget_decode(&self) -> usize {
        let mut conn = self.conn.clone();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&self.hot_keys)
            .query_async(&mut conn)
            .await
            .expect("MGET");
        values
            .iter()
            .flatten()
            .filter_map(|bytes| Envelope::parse(bytes).ok()?.decode::<Cat>().ok())
            .count()
    }

    fn cold_ids(&self) -> Vec<u64> {
        let start = self.next_cold.fetch_add(N, Ordering::Relaxed);
        (start..start + N).collect()
    }

    /// Cache-aside by hand: MGET (misses), load, one pipeline of SETs.
    async fn naive(&self, ids: Vec<u64>) -> usize {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("naive:{{bcat:{id}}}"))
            .collect();
        let found: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("MGET");
        let loaded = load(ids).await.expect("infallible");
        let mut pipe = redis::pipe();
        for (key, (_, value)) in keys.iter().zip(&loaded) {
            let payload = Codec::MessagePack.encode(value).expect("encodes");
            pipe.cmd("SET")
                .arg(key)
                .arg(sealed(&payload))
                .arg("PX")
                .arg(TTL_MS)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("SETs");
        found.len() + loaded.len()
    }
}

/// A value as cacheme writes it (tag `CatNode`, claimed at sequence 0).
fn sealed(payload: &[u8]) -> Vec<u8> {
    let header = Header {
        codec: Codec::MessagePack,
        written_at_ms: now_ms(),
        claim_seq: 0,
        fresh_until_ms: 0,
        dependencies: &[Dependency::Tag("CatNode")],
    };
    seal(&header, payload).expect("short names")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The median time of one call of `run`, over `rounds` rounds of `calls`.
fn median<F: Fn() -> usize>(rounds: usize, calls: usize, run: F) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(run());
            }
            start.elapsed() / u32::try_from(calls).unwrap_or(u32::MAX)
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let cache = Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("cache");
    let conn = rt.block_on(async {
        server
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("connection")
    });
    let hot: Vec<u64> = (0..N).collect();
    let hot_keys = hot.iter().map(|id| format!("CM:{{bcat:{id}}}")).collect();
    let bench = Bench {
        rt,
        cache,
        conn,
        hot,
        hot_keys,
        next_cold: AtomicU64::new(1_000_000),
    };
    // Warm the hot keys (and the process's first read of the invalidation log).
    let loaded = bench.rt.block_on(bench.get_or_load_many(bench.hot.clone()));
    assert_eq!(loaded, N as usize);
    assert_eq!(bench.rt.block_on(bench.raw_mget_decode()), N as usize);

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("hot_100");
        group.bench_function("raw_mget_decode", |b| {
            b.iter(|| bench.rt.block_on(bench.raw_mget_decode()));
        });
        group.bench_function("get_many", |b| {
            b.iter(|| bench.rt.block_on(bench.get_many()));
        });
        group.bench_function("get_or_load_many", |b| {
            b.iter(|| bench.rt.block_on(bench.get_or_load_many(bench.hot.clone())));
        });
        group.bench_function("sequential_gets", |b| {
            b.iter(|| bench.rt.block_on(bench.sequential_gets()));
        });
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("cold_100");
        group.bench_function("naive", |b| {
            b.iter(|| bench.rt.block_on(bench.naive(bench.cold_ids())));
        });
        group.bench_function("get_or_load_many", |b| {
            b.iter(|| bench.rt.block_on(bench.get_or_load_many(bench.cold_ids())));
        });
        group.finish();
    }
    criterion.final_summary();

    let (rounds, calls) = if full { (15, 50) } else { (1, 1) };
    let time = |run: &dyn Fn() -> usize| median(rounds, calls, run);
    let floor = time(&|| bench.rt.block_on(bench.raw_mget_decode()));
    let many = time(&|| bench.rt.block_on(bench.get_many()));
    let many_load = time(&|| bench.rt.block_on(bench.get_or_load_many(bench.hot.clone())));
    let sequential = time(&|| bench.rt.block_on(bench.sequential_gets()));
    let naive = time(&|| bench.rt.block_on(bench.naive(bench.cold_ids())));
    let cold = time(&|| bench.rt.block_on(bench.get_or_load_many(bench.cold_ids())));
    println!(
        "batch ratio hot_100 raw_mget_decode_us={:.1} get_many_us={:.1} get_many_vs_floor={:.2} get_or_load_many_vs_floor={:.2} sequential_gets_us={:.1} sequential_vs_get_many={:.1}",
        micros(floor),
        micros(many),
        micros(many) / micros(floor),
        micros(many_load) / micros(floor),
        micros(sequential),
        micros(sequential) / micros(many),
    );
    let before = bench.cache.stats().store_request;
    bench.rt.block_on(bench.get_or_load_many(bench.cold_ids()));
    let trips = bench.cache.stats().store_request - before;
    println!(
        "batch ratio cold_100 naive_us={:.1} get_or_load_many_us={:.1} vs_naive={:.2} round_trips={trips}",
        micros(naive),
        micros(cold),
        micros(cold) / micros(naive),
    );
    drop(bench);
    drop(server);
}
