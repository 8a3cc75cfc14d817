#![allow(missing_docs)]
//! Which crate backs the local tier (issue 6)? `moka::sync::Cache` against
//! `quick_cache::sync::Cache`, in the same run, holding what the local tier
//! will hold: `String` keys (~30 bytes) and 200-byte `Arc<[u8]>` values,
//! cloned out on every hit.
//!
//! Criterion groups (medians are what docs/local-tier-crates.md quotes):
//! - `get_hit`: one `get` of a present key, one thread: `hot_key` asks for
//!   the same key each time; `10k_keys` walks 10,000 present keys.
//!   `std_hashmap` is a control: a read-only `HashMap` lookup plus the `Arc`
//!   clone, i.e. the floor without any cache bookkeeping.
//! - `insert`: `replace` overwrites a present key; `new_key_full_cache`
//!   inserts a fresh key into a cache already at capacity (10,000), so each
//!   insert also pays for an eviction (or, in moka, an admission decision).
//! - `get_hit_2_threads`: two threads each doing `get`s at once, on the same
//!   key or each on its own key; the time is per `get` per thread. Only
//!   meaningful unpinned on a machine with at least 2 CPUs; the
//!   `std_hashmap/own_key` control shares nothing, so its slowdown against
//!   one thread is the machine's, not a cache's.
//!
//! Printed before criterion starts (plain counts, no timing):
//! - `hit_ratio`: a zipf trace (exponent 1.0, 200,000 requests over 385,000
//!   keys, ~55,000 distinct; fixed-seed splitmix64) replayed as
//!   "get; on a miss, insert" into caches of 1,000, 10,000 and 50,000
//!   entries, next to Belady's optimum and the infinite-cache bound. The
//!   trace is fixed, but both crates seed their hashers at random, so each
//!   ratio is the mean of 3 replays, with their range.
//! - `memory`: resident memory per entry beyond the key and value bytes,
//!   measured in a child process per crate (this binary, re-run).
//!
//! Under `cargo test` (criterion's test mode) the trace is a tenth as long
//! and the memory step is skipped, so the binary finishes in seconds.
//!
//! Run pinned for the single-thread figures, then unpinned for the 2-thread
//! group (the machine has 2 vCPUs):
//! `taskset -c 0 cargo bench -p cacheme-benches --bench local_tier`
//! `cargo bench -p cacheme-benches --bench local_tier -- get_hit_2_threads`

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hint::black_box;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group};

#[path = "shared/zipf.rs"]
mod zipf;
use zipf::zipf_trace;

type Value = Arc<[u8]>;

const VALUE_LEN: usize = 200;
/// Entries present in the caches that the latency groups read.
const PRESENT: u64 = 10_000;
/// The environment variable that makes this binary a memory-measuring child.
const MEMORY_CHILD: &str = "LOCAL_TIER_MEMORY_CHILD";

fn key(i: u64) -> String {
    format!("cacheme:bench:local_tier:{i}")
}

fn value(i: u64) -> Value {
    Arc::from(vec![i as u8; VALUE_LEN])
}

/// The two crates behind one face; each method is the one call the local
/// tier would make.
trait Local: Send + Sync + Sized {
    const NAME: &'static str;
    /// A cache bounded to `entries` entries, with the crate's defaults.
    fn with_capacity(entries: u64) -> Self;
    fn get(&self, key: &str) -> Option<Value>;
    fn insert(&self, key: String, value: Value);
    /// Finish deferred work (moka applies evictions in batches).
    fn settle(&self) {}
}

impl Local for moka::sync::Cache<String, Value> {
    const NAME: &'static str = "moka";
    fn with_capacity(entries: u64) -> Self {
        moka::sync::Cache::new(entries)
    }
    fn get(&self, key: &str) -> Option<Value> {
        moka::sync::Cache::get(self, key)
    }
    fn insert(&self, key: String, value: Value) {
        moka::sync::Cache::insert(self, key, value)
    }
    fn settle(&self) {
        self.run_pending_tasks();
    }
}

impl Local for quick_cache::sync::Cache<String, Value> {
    const NAME: &'static str = "quick_cache";
    fn with_capacity(entries: u64) -> Self {
        quick_cache::sync::Cache::new(usize::try_from(entries).expect("capacity fits usize"))
    }
    fn get(&self, key: &str) -> Option<Value> {
        quick_cache::sync::Cache::get(self, key)
    }
    fn insert(&self, key: String, value: Value) {
        quick_cache::sync::Cache::insert(self, key, value)
    }
}

type Moka = moka::sync::Cache<String, Value>;
type Quick = quick_cache::sync::Cache<String, Value>;

/// A cache of capacity `capacity` into which keys `0..PRESENT` were inserted.
fn filled<C: Local>(capacity: u64) -> C {
    let cache = C::with_capacity(capacity);
    for i in 0..PRESENT {
        cache.insert(key(i), value(i));
    }
    cache.settle();
    cache
}

/// A cache with room to spare holding all of keys `0..PRESENT` (quick_cache
/// may evict before it is full: its capacity is split over its shards).
fn holding_all<C: Local>() -> C {
    let cache: C = filled(2 * PRESENT);
    for i in 0..PRESENT {
        assert!(cache.get(&key(i)).is_some(), "{}: key {i} missing", C::NAME);
    }
    cache
}

// ---------------------------------------------------------------- latency --

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// A read-only `std::collections::HashMap` (SipHash) of keys `0..PRESENT`:
/// the floor under any cache's `get` (hash, probe, clone the `Arc`), with no
/// bookkeeping at all, and under two threads the measure of the machine.
fn std_map() -> HashMap<String, Value> {
    (0..PRESENT).map(|i| (key(i), value(i))).collect()
}

fn get_hit_one(group: &mut Group<'_>, name: &str, get: impl Fn(&str) -> Option<Value>) {
    let hot = key(7);
    group.bench_function(format!("{name}/hot_key"), |b| {
        b.iter(|| black_box(get(black_box(&hot))).expect("hit"))
    });
    let keys: Vec<String> = (0..PRESENT).map(key).collect();
    let mut i = 0;
    group.bench_function(format!("{name}/10k_keys"), |b| {
        b.iter(|| {
            i = if i + 1 == keys.len() { 0 } else { i + 1 };
            black_box(get(black_box(&keys[i]))).expect("hit")
        })
    });
}

fn get_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_hit");
    let moka: Moka = holding_all();
    get_hit_one(&mut group, Moka::NAME, |k| moka.get(k));
    let quick: Quick = holding_all();
    get_hit_one(&mut group, Quick::NAME, |k| quick.get(k));
    let map = std_map();
    get_hit_one(&mut group, "std_hashmap", |k| map.get(k).cloned());
    group.finish();
}

fn insert_one<C: Local>(group: &mut Group<'_>) {
    let cache: C = filled(PRESENT);
    let present = key(7);
    let v = value(7);
    group.bench_function(format!("{}/replace", C::NAME), |b| {
        b.iter_batched(
            || present.clone(),
            |k| cache.insert(k, v.clone()),
            BatchSize::SmallInput,
        )
    });
    let mut next = PRESENT;
    group.bench_function(format!("{}/new_key_full_cache", C::NAME), |b| {
        b.iter_batched(
            || {
                next += 1;
                key(next)
            },
            |k| cache.insert(k, v.clone()),
            BatchSize::SmallInput,
        )
    });
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert");
    insert_one::<Moka>(&mut group);
    insert_one::<Quick>(&mut group);
    group.finish();
}

/// Runs `op(thread)` `iters` times on each of two threads (0 and 1) started
/// together; returns the longer thread's time.
fn two_threads<F: Fn(usize) + Sync>(iters: u64, op: &F) -> Duration {
    let start = Barrier::new(2);
    let run = |thread: usize| {
        start.wait();
        let t = Instant::now();
        for _ in 0..iters {
            op(thread);
        }
        t.elapsed()
    };
    std::thread::scope(|s| {
        let other = s.spawn(|| run(1));
        let mine = run(0);
        mine.max(other.join().expect("bench thread"))
    })
}

fn get_hit_2_threads_one(
    group: &mut Group<'_>,
    name: &str,
    get: impl Fn(&str) -> Option<Value> + Sync,
) {
    let keys = [key(7), key(8)];
    group.bench_function(format!("{name}/same_key"), |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|_| {
                black_box(get(black_box(&keys[0]))).expect("hit");
            })
        })
    });
    group.bench_function(format!("{name}/own_key"), |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|thread| {
                black_box(get(black_box(&keys[thread]))).expect("hit");
            })
        })
    });
}

fn get_hit_2_threads(c: &mut Criterion) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("get_hit_2_threads: only {cpus} CPU available; the two threads take turns");
    }
    let mut group = c.benchmark_group("get_hit_2_threads");
    group.sample_size(30);
    let moka: Moka = holding_all();
    get_hit_2_threads_one(&mut group, Moka::NAME, |k| moka.get(k));
    let quick: Quick = holding_all();
    get_hit_2_threads_one(&mut group, Quick::NAME, |k| quick.get(k));
    let map = std_map();
    get_hit_2_threads_one(&mut group, "std_hashmap", |k| map.get(k).cloned());
    group.finish();
}

// -------------------------------------------------------------- hit ratio --

/// Replays the trace as "get; on a miss, insert"; returns the hit ratio.
fn replay<C: Local>(trace: &[u64], capacity: u64) -> f64 {
    let cache = C::with_capacity(capacity);
    let v = value(0);
    let mut hits = 0usize;
    for &k in trace {
        let k = key(k);
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, v.clone());
        }
    }
    hits as f64 / trace.len() as f64
}

/// Both crates seed their hashers at random, so a replay can differ by a few
/// hundredths of a percent from the next: `RUNS` replays, each on a new
/// cache, as "mean (min..max)".
fn replays<C: Local>(trace: &[u64], capacity: u64) -> (f64, String) {
    const RUNS: usize = 3;
    let ratios: Vec<f64> = (0..RUNS).map(|_| replay::<C>(trace, capacity)).collect();
    let mean = ratios.iter().sum::<f64>() / RUNS as f64;
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, format!("{mean:.4} ({min:.4}..{max:.4})"))
}

/// Belady's optimum (evict the entry used farthest in the future, and do not
/// admit an entry that would be evicted first): the best any policy can do.
fn belady(trace: &[u64], capacity: usize) -> f64 {
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, &k) in trace.iter().enumerate().rev() {
        if let Some(j) = seen.insert(k, i) {
            next_use[i] = j;
        }
    }
    let mut cached: HashSet<u64> = HashSet::new();
    let mut by_next: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut hits = 0usize;
    for (i, &k) in trace.iter().enumerate() {
        if cached.contains(&k) {
            hits += 1;
            by_next.remove(&(i, k));
            by_next.insert((next_use[i], k));
            continue;
        }
        if next_use[i] == usize::MAX {
            continue;
        }
        if cached.len() == capacity {
            let &(farthest, victim) = by_next.last().expect("full cache has entries");
            if farthest <= next_use[i] {
                continue;
            }
            by_next.pop_last();
            cached.remove(&victim);
        }
        cached.insert(k);
        by_next.insert((next_use[i], k));
    }
    hits as f64 / trace.len() as f64
}

fn hit_ratios(full: bool) {
    // ~55,000 distinct keys in 200,000 requests at exponent 1.0.
    let (keys, requests, capacities): (usize, usize, &[u64]) = if full {
        (385_000, 200_000, &[1_000, 10_000, 50_000])
    } else {
        (38_500, 20_000, &[100, 1_000, 5_000])
    };
    let trace = zipf_trace(keys, 1.0, requests, 0x00C0_FFEE);
    let distinct = trace.iter().collect::<HashSet<_>>().len();
    println!(
        "hit_ratio trace: zipf exponent=1.0 keys={keys} requests={requests} distinct={distinct} \
         infinite_cache={:.4}",
        (requests - distinct) as f64 / requests as f64
    );
    for &capacity in capacities {
        let (moka, moka_text) = replays::<Moka>(&trace, capacity);
        let (quick, quick_text) = replays::<Quick>(&trace, capacity);
        let opt = belady(
            &trace,
            usize::try_from(capacity).expect("capacity fits usize"),
        );
        println!(
            "hit_ratio capacity={capacity} moka={moka_text} quick_cache={quick_text} \
             belady={opt:.4} quick_cache/moka={:.3}",
            quick / moka
        );
    }
    println!(
        "hit_ratio quick_cache shards={} (4 per available CPU, capacity split evenly)",
        Quick::with_capacity(capacities[1]).num_shards()
    );
}

// ----------------------------------------------------------------- memory --

/// Resident set size of this process, from /proc (Linux only).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// In a child process: fills one cache with `N` entries whose keys and values
/// were allocated beforehand, and prints the growth of resident memory per
/// entry, i.e. the crate's own cost per entry.
fn memory_child<C: Local>() {
    const N: u64 = 200_000;
    let mut entries: Vec<(String, Value)> = (0..N).map(|i| (key(i), value(i))).collect();
    let cache = C::with_capacity(N);
    let before = rss_bytes().expect("rss");
    for (k, v) in entries.drain(..) {
        cache.insert(k, v);
    }
    cache.settle();
    let after = rss_bytes().expect("rss");
    let present = (0..N).filter(|&i| cache.get(&key(i)).is_some()).count();
    println!(
        "memory {} entries={present} overhead_bytes_per_entry={:.0}",
        C::NAME,
        after.saturating_sub(before) as f64 / present as f64
    );
}

fn memory() {
    if rss_bytes().is_none() {
        println!("memory: /proc/self/statm not readable; skipped");
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    for name in [Moka::NAME, Quick::NAME] {
        let out = Command::new(&exe)
            .env(MEMORY_CHILD, name)
            .output()
            .expect("memory child");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = get_hit, insert, get_hit_2_threads
}

fn main() {
    match std::env::var(MEMORY_CHILD).as_deref() {
        Ok(Moka::NAME) => return memory_child::<Moka>(),
        Ok(Quick::NAME) => return memory_child::<Quick>(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test` runs this in test mode.
    let full = std::env::args().any(|a| a == "--bench");
    hit_ratios(full);
    if full {
        memory();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
