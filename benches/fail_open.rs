#![allow(missing_docs)]
//! What a call costs while Redis is down and the circuit breaker is open,
//! against the bare loader it runs. The loader is some tens of µs of CPU work (not a
//! sleep, whose timer granularity would hide everything else); the ratio is
//! what matters. Target: ≤ 2× the bare loader.
//!
//! `taskset -c 0 cargo bench -p cacheme-benches --bench fail_open`

use std::hint::black_box;
use std::time::Duration;

use cacheme::Cache;
use cacheme_test_support::RedisServer;
use criterion::{Criterion, criterion_group, criterion_main};

/// Some tens of µs of work that the compiler cannot skip.
fn work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

async fn loader(seed: u64) -> Result<u64, std::convert::Infallible> {
    Ok(work(black_box(seed)))
}

fn fail_open(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .circuit_breaker(3, Duration::from_secs(3600))
        .build()
        .expect("cache");
    server.kill();
    // Trip the breaker: the first calls pay the connection failure.
    runtime.block_on(async {
        for _ in 0..5 {
            let _ = cache.lookup::<u64>("k").load(|| loader(1)).await;
        }
    });
    assert!(cache.stats().breaker_opened >= 1, "{:?}", cache.stats());

    let mut group = c.benchmark_group("redis_down");
    group.bench_function("bare_loader", |b| {
        b.to_async(&runtime).iter(|| loader(black_box(2)))
    });
    group.bench_function("get_breaker_open", |b| {
        b.to_async(&runtime)
            .iter(|| cache.lookup::<u64>("k").load(|| loader(black_box(2))))
    });
    group.finish();
    assert!(cache.stats().short_circuited > 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = fail_open
}
criterion_main!(benches);
