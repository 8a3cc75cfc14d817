#![allow(missing_docs)]
//! Which connection should the hot path use? One GET of a 200-byte value
//! over: a redis-rs multiplexed connection, a `ConnectionManager`, and a
//! `deadpool-redis` pool checkout; and the throughput of 64 concurrent tasks
//! on each. Figures and the command are in `docs/connections.md`.
//!
//! Run pinned to one CPU (client and server share it; see docs/benchmarks.md):
//! `taskset -c 0 cargo bench -p cacheme-benches --bench connections`

use std::time::{Duration, Instant};

use cacheme_test_support::RedisServer;
use criterion::{Criterion, criterion_group, criterion_main};
use redis::AsyncCommands;

const KEY: &str = "bench:value";
const TASKS: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn connections(c: &mut Criterion) {
    let server = RedisServer::start();
    pin_to_cpu0(&server);
    let rt = runtime();
    let client = server.client();
    let (multiplexed, manager, pool) = rt.block_on(async {
        let mut multiplexed = client
            .get_multiplexed_async_connection()
            .await
            .expect("multiplexed");
        let _: () = multiplexed.set(KEY, vec![7u8; 200]).await.expect("SET");
        let manager = client.get_connection_manager().await.expect("manager");
        let pool = deadpool_redis::Config::from_url(server.url())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("pool");
        (multiplexed, manager, pool)
    });

    let mut group = c.benchmark_group("get_200b");
    group.bench_function("multiplexed", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = multiplexed.clone();
            async move { conn.get::<_, Vec<u8>>(KEY).await.expect("GET") }
        })
    });
    group.bench_function("connection_manager", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = manager.clone();
            async move { conn.get::<_, Vec<u8>>(KEY).await.expect("GET") }
        })
    });
    group.bench_function("deadpool_checkout", |b| {
        b.to_async(&rt).iter(|| {
            let pool = pool.clone();
            async move {
                let mut conn = pool.get().await.expect("checkout");
                conn.get::<_, Vec<u8>>(KEY).await.expect("GET")
            }
        })
    });
    group.finish();

    // Throughput: 64 tasks, each doing GETs for a fixed time.
    let mut group = c.benchmark_group("get_200b_64_tasks");
    group.sample_size(10);
    group.bench_function("multiplexed", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let conn = multiplexed.clone();
            async move {
                spread(iters, move || {
                    let mut conn = conn.clone();
                    async move { conn.get::<_, Vec<u8>>(KEY).await.expect("GET") }
                })
                .await
            }
        })
    });
    group.bench_function("connection_manager", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let conn = manager.clone();
            async move {
                spread(iters, move || {
                    let mut conn = conn.clone();
                    async move { conn.get::<_, Vec<u8>>(KEY).await.expect("GET") }
                })
                .await
            }
        })
    });
    group.bench_function("deadpool_checkout", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = pool.clone();
            async move {
                spread(iters, move || {
                    let pool = pool.clone();
                    async move {
                        let mut conn = pool.get().await.expect("checkout");
                        conn.get::<_, Vec<u8>>(KEY).await.expect("GET")
                    }
                })
                .await
            }
        })
    });
    group.finish();
}

/// Run `iters` calls of `call` spread over 64 concurrent tasks; the time per call.
async fn spread<F, Fut>(iters: u64, call: F) -> Duration
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + 'static,
{
    let per_task = iters.div_ceil(TASKS as u64);
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let call = call.clone();
                    tokio::task::spawn_local(async move {
                        for _ in 0..per_task {
                            call().await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
        })
        .await;
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * TASKS as u64) as f64)
}

/// Put the server on CPU 0 too, when `taskset` exists.
fn pin_to_cpu0(server: &RedisServer) {
    if let Some(pid) = server.pid() {
        let _ = std::process::Command::new("taskset")
            .args(["-pc", "0", &pid.to_string()])
            .output();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = connections
}
criterion_main!(benches);
