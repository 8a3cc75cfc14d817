#![allow(missing_docs)]
//! What an invalidation costs with protocol v2 (issue 12): a tag over
//! 100,000 keys, an invalid node (dependency group) over 1,000 keys, and one
//! key, each a single call against a redis-server this program starts; then
//! the server's `used_memory`. Last line:
//!
//! ```text
//! invalidation tag_keys=100000 tag_ms=0.21 group_keys=1000 group_ms=0.09 key_us=62.1 memory_bytes_after=41234567
//! ```
//!
//! - The values are written by cacheme itself (`objects().get_or_load`, a
//!   row of about 120 bytes, TTL one hour): 100,000 under the node type
//!   `BulkRow` (tag `bulk`), 1,000 that depend on the invalid node
//!   `Team { id: 1 }`, one plain key.
//! - `tag_ms`: `tag("bulk").invalid()` over the 100,000 freshly written keys
//!   (the first and only one that finds them all live). `group_ms`: the
//!   median of 21 calls of `invalid_objects::<Team>().invalid(1)` (values
//!   are marked stale, not deleted, so every call finds the 1,000 keys).
//!   `key_us`: the median of 1,000 calls of `create_invalidation().key(..)`
//!   on one stored key (marked stale each time). Each call returns when
//!   Redis has changed, the event is published and this process has applied
//!   it.
//! - Then it checks what the calls promise: no value of the tag is served
//!   (`get` of every 100th key is `None`, here and in a second cache that
//!   reads the invalidation log as a new process does), and a stale-off read
//!   of a group member runs its loader.
//! - `memory_bytes_after`: `used_memory` (`INFO memory`) after all of it.
//!   Tag-invalidated values are unreadable but not deleted: they are
//!   reclaimed by their TTL or when reloaded. The line before the last says
//!   how much memory the data took (`invalidation memory ..`: empty, after
//!   the writes, after the invalidations).
//!
//! Protocol v1 measured 801 ms for the tag and 6.17 ms for the group
//! (docs/benchmarks.md, 2026-11-25); targets (issue 12): tag ≤ 5 ms,
//! group ≤ 1 ms.
//!
//! `just invalidation` runs it (`cargo bench -p cacheme-benches --bench
//! invalidation`). Under `cargo test --workspace --all-targets` (no
//! `--bench`) a small version (1,000 tagged keys, 100 in the group) runs in
//! a second and asserts the checks above.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use cacheme::{Cache, InvalidNode, Node};
use cacheme_test_support::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy)]
struct Shape {
    tag_keys: u64,
    group_keys: u64,
    group_calls: usize,
    key_calls: usize,
}

const FULL: Shape = Shape {
    tag_keys: 100_000,
    group_keys: 1000,
    group_calls: 21,
    key_calls: 1000,
};

const SMOKE: Shape = Shape {
    tag_keys: 1000,
    group_keys: 100,
    group_calls: 3,
    key_calls: 10,
};

/// Concurrent loads while writing the data.
const WRITERS: u64 = 64;
const TTL: Duration = Duration::from_secs(3600);

/// What the loader returns: a row of about 120 bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    name: String,
    score: f64,
}

fn row(id: u64) -> Row {
    Row {
        id,
        name: format!("row {id:>12} as the database would return it ........................"),
        score: id as f64 / 7.0,
    }
}

/// The tagged values.
#[derive(Node)]
#[node(key = "bulk:{id}", value = Row, tag = "bulk", ttl = 3600)]
struct BulkRow {
    id: u64,
}

/// The group's values.
#[derive(Node)]
#[node(key = "member:{id}", value = Row, ttl = 3600)]
struct Member {
    id: u64,
}

/// The invalid node the group's values depend on.
#[derive(InvalidNode)]
#[invalid_node(key = "team:{id}")]
struct Team {
    id: u64,
}

const ONE_KEY: &str = "one";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes the binary
    }
    let full = args.iter().any(|a| a == "--bench");
    let shape = if full { FULL } else { SMOKE };
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut admin = server.connection();
    let line = runtime.block_on(measure(&server, &mut admin, shape));
    println!("{line}");
}

async fn measure(server: &RedisServer, admin: &mut redis::Connection, shape: Shape) -> String {
    let cache = Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("cache");
    let memory_empty = used_memory(admin);
    let writing = Instant::now();
    write_tagged(&cache, shape.tag_keys).await;
    let members = cache.objects::<Member>();
    for id in 0..shape.group_keys {
        members
            .lookup(&Member { id })
            .depends_on(Team { id: 1 })
            .load(|| async move { Ok::<_, Infallible>(row(id)) })
            .await
            .expect("fill");
    }
    cache
        .lookup::<Row>(ONE_KEY)
        .ttl(Some(TTL))
        .load(|| async { Ok::<_, Infallible>(row(0)) })
        .await
        .expect("fill");
    let memory_filled = used_memory(admin);
    let keys: u64 = redis::cmd("DBSIZE").query(admin).expect("DBSIZE");
    println!(
        "invalidation setup: {} tagged, {} in the group, 1 key written by cacheme in {:.1} s; {} keys in redis {}",
        shape.tag_keys,
        shape.group_keys,
        writing.elapsed().as_secs_f64(),
        keys,
        server.url()
    );

    // The tag: one call over every live key.
    let started = Instant::now();
    cache.tag("bulk").invalid().await.expect("tag invalidation");
    let tag = started.elapsed();

    // The group: the same work every call (its values are marked stale).
    let mut group = Vec::with_capacity(shape.group_calls);
    for _ in 0..shape.group_calls {
        let started = Instant::now();
        cache
            .invalid_objects::<Team>()
            .invalid(1)
            .await
            .expect("group invalidation");
        group.push(started.elapsed());
    }

    // One key, marked stale each time.
    let mut key = Vec::with_capacity(shape.key_calls);
    for _ in 0..shape.key_calls {
        let started = Instant::now();
        let marked = cache
            .create_invalidation()
            .key(ONE_KEY)
            .run()
            .await
            .expect("key invalidation");
        key.push(started.elapsed());
        assert_eq!(marked, 1, "the key was there to invalidate");
    }
    let memory_after = used_memory(admin);

    check_invalidated(&cache, server, &members, shape).await;
    println!(
        "invalidation memory used_bytes_empty={memory_empty} used_bytes_filled={memory_filled} used_bytes_after={memory_after} (tag-invalidated values stay until their TTL or a reload)"
    );
    println!(
        "invalidation calls tag_ms={:.3} group_ms_min={:.3} group_ms_max={:.3} key_us_min={:.1} key_us_p99={:.1}",
        ms(tag),
        ms(*group.iter().min().expect("calls")),
        ms(*group.iter().max().expect("calls")),
        us(*key.iter().min().expect("calls")),
        us(percentile(&mut key.clone(), 0.99)),
    );
    format!(
        "invalidation tag_keys={} tag_ms={:.3} group_keys={} group_ms={:.3} key_us={:.1} memory_bytes_after={}",
        shape.tag_keys,
        ms(tag),
        shape.group_keys,
        ms(percentile(&mut group, 0.5)),
        us(percentile(&mut key, 0.5)),
        memory_after,
    )
}

/// `count` values under the tag, loaded through cacheme by [`WRITERS`]
/// concurrent tasks.
async fn write_tagged(cache: &Cache, count: u64) {
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let objects = cache.objects::<BulkRow>();
            tokio::spawn(async move {
                let mut id = w;
                while id < count {
                    objects
                        .get_or_load(id, || async move { Ok::<_, Infallible>(row(id)) })
                        .await
                        .expect("fill");
                    id += WRITERS;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("no writer panicked");
    }
    // Every value is there, and served from Redis.
    let hits = cache.stats().hit;
    let objects = cache.objects::<BulkRow>();
    for id in (0..count).step_by(100) {
        assert_eq!(objects.get(id).await, Some(row(id)), "bulk:{id} stored");
    }
    assert!(cache.stats().hit > hits, "the values were read from Redis");
}

/// What the calls promise, checked after they were timed.
async fn check_invalidated(
    cache: &Cache,
    server: &RedisServer,
    members: &cacheme::Manager<Member>,
    shape: Shape,
) {
    // No tagged value is served, here or by a process that starts now.
    let other = Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("cache");
    for reader in [cache, &other] {
        let objects = reader.objects::<BulkRow>();
        for id in (0..shape.tag_keys).step_by(100) {
            assert_eq!(
                objects.get(id).await,
                None,
                "bulk:{id} served after its tag was invalidated"
            );
        }
    }
    // A group member is stale: a stale-off read loads it again.
    let loaded = std::sync::atomic::AtomicBool::new(false);
    let value = members
        .lookup(&Member { id: 0 })
        .stale(false)
        .depends_on(Team { id: 1 })
        .load(|| async {
            loaded.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, Infallible>(row(0))
        })
        .await
        .expect("reload");
    assert_eq!(value, row(0));
    assert!(
        loaded.load(std::sync::atomic::Ordering::Relaxed),
        "a group member was served fresh after the group was invalidated"
    );
}

fn used_memory(admin: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(admin).expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

/// Nearest-rank percentile.
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
