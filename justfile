# Everyday shortcuts over scripts/. `just` is optional: on a fresh machine
# without it, run `./scripts/test` (installs redis-server if missing, then
# runs every check and test) and `cargo run --example quickstart` directly.

# Run the quickstart example.
demo:
    ./scripts/demo

# The example service (axum + PostgreSQL on 127.0.0.1:5432, database `test`),
# caching in its own memory; `REDIS_URL=redis://127.0.0.1:6379/ just service` for Redis.
service:
    cargo run -p service

# The service under a zipf load, cache off then on (about a minute, PostgreSQL
# needed); last line: `loadtest rps_off=.. rps_on=.. p99_ms_off=.. p99_ms_on=.. db_queries_off=.. db_queries_on=..`.
loadtest:
    cargo build --release -p service --bins
    ./target/release/loadtest

# Build the guide (docs/ as an mdBook) into target/book.
book:
    mdbook build docs

# Run every check and test (fmt, clippy, tests, doc tests, rustdoc); prints `test: ok`.
test *args:
    ./scripts/test {{args}}

# Check formatting and run clippy.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the workspace.
fmt:
    cargo fmt --all

# The herd: 4 processes x 50 tasks on one key (cold, stale on, stale off);
# last line: `herd case=cold processes=4 tasks=50 loads=1 p50_ms=.. p99_ms=.. max_ms=..`.
herd:
    cargo bench -p cacheme-benches --bench herd

# Source failures, then the fault soak (about 40 s, then at most 60 s):
# `failsafe outage_s=30 warmed=1000 errors_to_caller=.. loader_calls_per_key_max=.. first_fresh_ms_after_recovery=.. ..`
# (the loader fails for 30 s after 1,000 keys were warmed),
# `slowsource load_ms=500 soft_timeout_ms=50 p99_ms=.. loads_per_key=.. ..`
# (4 processes read expired keys through a 500 ms source), then the soak that
# kills and restarts redis under 64 tasks; last line:
# `faults seconds=60 calls=.. kills=.. errors_to_caller=0 wrong_values=0 recovered_ms_max=..`.
faults:
    cargo bench -p cacheme-benches --bench faults

# Local tier coherence across two processes (1,000 invalidations), after the
# same for RESP3 client-side caching (`coherence impl=redis_tracking ..`) and
# over a proxy that drops 1 % of pub/sub messages
# (`coherence impl=lossy drop=0.01 invalidations=1000 lost=.. ..`);
# last line: `coherence invalidations=1000 p50_ms=.. p99_ms=.. max_ms=.. lost=0`.
coherence:
    cargo bench -p cacheme-benches --bench coherence

# The zipf trace (200,000 requests, 1,000 tasks, 100 ms loads) for naive
# cache-aside, the `cached` crate, cacheme without its local tier
# (`trace impl=cacheme_remote ..`) and cacheme, counting Redis commands and
# Redis server CPU; last line:
# `trace impl=cacheme requests=200000 unique=55377 loads=.. redis_cmds=.. gets=.. wall_s=.. floor_s=.. .. redis_cpu_s=.. redis_cpu_vs_naive=..`.
trace:
    cargo bench -p cacheme-benches --bench trace

# What an invalidation costs (a tag over 100,000 keys, an invalid node over
# 1,000, one key) and the memory left after; one line:
# `invalidation tag_keys=100000 tag_ms=.. group_keys=1000 group_ms=.. key_us=.. memory_bytes_after=..`.
invalidation:
    cargo bench -p cacheme-benches --bench invalidation

# The benchmarks of issue 5 (a few minutes): criterion's remote hit, local hit,
# miss and invalidation groups (pinned to CPU 0 with their redis-server), the
# zipf trace when benches/trace.rs exists, then docs/benchmarks.md and its plots.
bench:
    ./scripts/bench

# cacheme on a spawned Redis Cluster (3 primaries + replicas, about a minute):
# the herd (4 processes x 50 tasks), a zipf trace, remote hits against a raw
# GET, and a 20 s fault soak with two primary kills; last line:
# `cluster primaries=3 loads=1 trace_loads_eq_unique=true faults_errors_to_caller=0 wrong_values=0 failover_recovered_ms=..`.
cluster:
    cargo bench -p cacheme-benches --bench cluster
