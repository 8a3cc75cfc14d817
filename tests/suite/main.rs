//! The integration tests, in one binary: each module is one area, against
//! the memory store and real redis-server processes (started by
//! `cacheme-test-support` on free loopback ports, killed on drop).
//!
//! One binary links the library once, and lets the tests of every area run
//! in parallel. The tests that install the global cache are apart
//! (`tests/global.rs`, `tests/global_decorator.rs`): the global is shared by
//! the whole process, and the one test here that uses it
//! (`decorator_blocking`'s `clashing_names`) counts on its in-memory default.
//!
//! Run one area with `cargo test --test suite local_tier::`. Two tests start
//! this binary again as a second process, running one test of it by its full
//! name (`protocol::crash_child`, `local_tier::coherence_child`).

#[macro_use]
mod fixtures;

mod batch;
mod cluster;
mod correctness;
mod decorator;
mod decorator_blocking;
mod deployments;
mod fail_safe;
mod faults;
mod invalidation;
mod local_tier;
mod nodes;
mod protocol;
mod public_api;
mod settings;
mod sources;
mod stats;
mod storage;
mod writes;
