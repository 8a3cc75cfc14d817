//! Test helpers for cacheme: run real, throw-away Redis deployments.
//!
//! Integration tests that need Redis start their own, on free loopback
//! ports, each process with its own temporary directory, nothing persisted,
//! everything killed (and every directory removed) on drop, including when
//! the test panics. Many tests in one test binary can therefore each run
//! their own in parallel.
//!
//! | helper | what runs |
//! | --- | --- |
//! | [`RedisServer`] | one `redis-server`; optionally [TLS-only](RedisServerBuilder::tls) with generated certificates, with a [password](RedisServerBuilder::requirepass) or [ACL users](RedisServerBuilder::acl_user) |
//! | [`RedisCluster`] | a Redis Cluster, 3 primaries + 3 replicas by default, with failover and live resharding |
//! | [`SentinelGroup`] | a primary, a replica and three sentinels monitoring `mymaster` |
//! | [`FaultProxy`] | a RESP-aware TCP proxy that drops, delays or duplicates pub/sub messages and stalls or cuts connections |
//!
//! ```no_run
//! use cacheme_test_support::RedisServer;
//!
//! let server = RedisServer::start();
//! let mut con = server.connection();
//! let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).expect("SET");
//!
//! // Extra configuration goes through the builder.
//! let small = RedisServer::builder()
//!     .arg("--maxmemory")
//!     .arg("1mb")
//!     .arg("--maxmemory-policy")
//!     .arg("noeviction")
//!     .start();
//! println!("connect to {}", small.url());
//! ```
//!
//! # Faults
//!
//! A server can be [killed](RedisServer::kill) (SIGKILL) and
//! [restarted](RedisServer::restart) on the same port, or
//! [paused](RedisServer::pause) (SIGSTOP) and [resumed](RedisServer::resume)
//! (SIGCONT) to simulate a hung server: while paused, connections are still
//! accepted by the kernel but no command is ever answered. A cluster node or
//! a sentinel group's primary can be killed to test failover
//! ([`RedisCluster::kill_primary_of`], [`SentinelGroup::kill_primary`]); a
//! [`FaultProxy`] loses messages without closing the connection.
//!
//! # TLS and authentication
//!
//! ```no_run
//! use cacheme_test_support::{RedisServer, TlsClientAuth};
//!
//! let server = RedisServer::builder()
//!     .tls(TlsClientAuth::Required)
//!     .requirepass("admin-secret")
//!     .acl_user("app", "secret", "~CM:* &CM:* +@all")
//!     .start();
//! let tls = server.tls().expect("TLS server");
//! println!(
//!     "{} trusting {} with {} / {}",
//!     server.user_url("app"), // rediss://app:secret@127.0.0.1:PORT/
//!     tls.ca_cert_path().display(),
//!     tls.client_cert_path().display(),
//!     tls.client_key_path().display(),
//! );
//! assert_eq!(server.cli(["PING"]), "PONG");
//! ```
//!
//! This crate enables the `redis` crate's `cluster` feature (for
//! [`RedisCluster::client`]) but none of its TLS features, so that in the
//! workspace's tests TLS is on only when cacheme's own feature turns it on.
//! TLS servers are therefore checked with `redis-cli --tls`
//! ([`RedisServer::cli`]), and [`RedisServer::connection`] is not available
//! for them.
//!
//! # Binaries
//!
//! `redis-server` comes from `PATH`, unless the environment variable
//! `REDIS_SERVER_BIN` names another one, or the builder is given an explicit
//! [`binary`](RedisServerBuilder::binary). `redis-cli` (for clusters, TLS
//! servers and [`RedisServer::cli`]) comes from `REDIS_CLI_BIN`, else from
//! beside `REDIS_SERVER_BIN`, else from `PATH`. On Debian and Ubuntu they
//! are installed with `apt-get install redis-server redis-tools`;
//! `./scripts/test` installs them when they are missing.
//!
//! # Leaks
//!
//! Dropping a [`RedisServer`] always stops its process. For the cases where
//! the value is never dropped (a server kept in a `static`, `std::process::exit`,
//! an aborting panic, the test binary being killed), each server is paired with
//! a tiny `sh` watchdog that kills it and removes its directory as soon as
//! the test process is gone. The watchdog ignores SIGINT, SIGTERM and SIGHUP,
//! so that it outlives a test process killed with its whole process group
//! (Ctrl-C, `timeout`), but it never outlives that process. Cluster nodes and
//! sentinels are [`RedisServer`]s, so the same holds for them.
//!
//! This crate is for tests only and is not published.

mod acl;
mod cluster;
mod ports;
mod process;
mod proxy;
mod resp;
mod sentinel;
mod server;
mod tls;

pub use cluster::{
    CLUSTER_SLOTS, DEFAULT_CLUSTER_TIMEOUT, DEFAULT_NODE_TIMEOUT, RedisCluster,
    RedisClusterBuilder, SlotMigration,
};
pub use process::{REDIS_CLI_BIN_ENV, REDIS_SERVER_BIN_ENV};
pub use proxy::{DEFAULT_SEED, FaultProxy, ProxyStats};
pub use sentinel::{
    DEFAULT_DOWN_AFTER, DEFAULT_FAILOVER_TIMEOUT, DEFAULT_SENTINEL_TIMEOUT, MASTER_NAME,
    SentinelGroup, SentinelGroupBuilder,
};
pub use server::{DEFAULT_STARTUP_TIMEOUT, RedisServer, RedisServerBuilder};
pub use tls::{TlsCertificates, TlsClientAuth, TlsFiles};
