//! The fixtures of the integration tests: caches on the memory store and on
//! real redis-servers, assertions on what Redis holds, counters and the hook
//! log, and the seed's types and nodes.
//!
//! Two ways to get a cache:
//! - [`Fixture`] (and [`on_both_stores!`]): a cache of the test's own, on the
//!   memory store or on a redis-server started for the test;
//! - [`cache()`]: a cache on the binary's one redis-server ([`server()`]),
//!   under a key prefix of its own, so that tests running in parallel never
//!   see each other's keys (the `#[cacheme]` tests).
//!
//! Node types and `#[cacheme]` fns register their tags in one process-wide
//! registry, which `cacheme::tags()` and `cacheme::tag(..)` read: a test
//! that counts a tag's members uses a tag of its own (`cats` here,
//! `async_cats` in decorator.rs, `blocking_cats`, `source_cats`, `prices`).
//!
//! Also compiled into `tests/global.rs` and `tests/global_decorator.rs`
//! (`#[path]`), the binaries of the tests that install the global cache.
#![allow(dead_code, unreachable_pub, missing_docs, unused_macros)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cacheme::{Cache, CacheBuilder, InvalidNode, Node};
use cacheme_test_support::{RedisCluster, RedisServer, TlsClientAuth};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- caches --

/// A cache for one test, with its server when it is on Redis.
pub struct Fixture {
    pub cache: Cache,
    pub server: Option<RedisServer>,
    /// On the binary's Redis Cluster ([`cluster()`]), under a prefix of its own.
    pub on_cluster: bool,
}

impl Fixture {
    pub fn memory() -> Self {
        Fixture {
            cache: Cache::builder().build().expect("memory cache"),
            server: None,
            on_cluster: false,
        }
    }

    pub fn redis() -> Self {
        let server = RedisServer::start();
        let cache = Cache::builder()
            .redis_url(server.url())
            .build()
            .expect("a valid redis url");
        Fixture {
            cache,
            server: Some(server),
            on_cluster: false,
        }
    }

    /// Redis as managed services run it: TLS only, client certificates
    /// required, and the cache logs in as an ACL user with the minimal rule
    /// of docs/deployments.md (see [`secured_server`]).
    ///
    /// Its operation timeout is 1 s rather than 250 ms: a TLS handshake of
    /// this unoptimized test build, on a machine busy with the other tests,
    /// can take longer than 250 ms (tests of timeouts set their own).
    pub fn redis_tls_acl() -> Self {
        let server = secured_server();
        let cache = builder_for(&server)
            .op_timeout(Duration::from_secs(1))
            .build()
            .expect("a valid redis url");
        Fixture {
            cache,
            server: Some(server),
            on_cluster: false,
        }
    }

    /// A cache on the binary's Redis Cluster, under a key prefix of its own.
    pub fn cluster() -> Self {
        Fixture {
            cache: cluster_cache(),
            server: None,
            on_cluster: true,
        }
    }

    /// Another process on the fixture's store: a second cache on its Redis
    /// (or cluster, under the same prefix), or the fixture's own cache on the
    /// memory store (one process only).
    pub fn other_process(&self) -> Cache {
        if self.on_cluster {
            return Cache::builder()
                .cluster_urls(cluster().node_urls())
                .prefix(self.cache.prefix())
                .build()
                .expect("valid cluster urls");
        }
        match &self.server {
            Some(server) => builder_for(server).build().expect("a valid redis url"),
            None => self.cache.clone(),
        }
    }

    /// "memory", "redis", "redis_tls_acl" or "cluster": for names that must
    /// differ per store.
    pub fn store_name(&self) -> &'static str {
        match (&self.server, self.on_cluster) {
            (_, true) => "cluster",
            (Some(server), false) if server.tls().is_some() => "redis_tls_acl",
            (Some(_), false) => "redis",
            (None, false) => "memory",
        }
    }

    /// A plain connection to the test's server, for assertions on raw keys
    /// (as an administrator, over TLS on a secured server).
    pub fn redis_connection(&self) -> Option<redis::Connection> {
        self.server.as_ref().map(admin_connection)
    }

    pub fn is_redis(&self) -> bool {
        self.server.is_some()
    }
}

/// Define one test per store: `mod name { memory(), redis(), redis_tls_acl() }`
/// (the last on a TLS server with client certificates, as an ACL user with
/// the minimal rule of docs/deployments.md).
macro_rules! on_both_stores {
    ($( $(#[$meta:meta])* async fn $name:ident($fx:ident) $body:block )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let $fx = $crate::fixtures::Fixture::memory();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let $fx = $crate::fixtures::Fixture::redis();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_tls_acl() {
                let $fx = $crate::fixtures::Fixture::redis_tls_acl();
                $body
            }
        }
    )*};
}

/// Define one test per store, the Redis Cluster included: `mod name {
/// memory(), redis(), redis_tls_acl(), cluster() }`. The cluster's variant also checks that
/// no operation was refused as cross-slot.
macro_rules! on_every_store {
    ($( $(#[$meta:meta])* async fn $name:ident($fx:ident) $body:block )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let $fx = $crate::fixtures::Fixture::memory();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let $fx = $crate::fixtures::Fixture::redis();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_tls_acl() {
                let $fx = $crate::fixtures::Fixture::redis_tls_acl();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                let $fx = $crate::fixtures::Fixture::cluster();
                let cache = $fx.cache.clone();
                $body
                $crate::fixtures::assert_one_slot_per_op(&cache);
            }
        }
    )*};
}

/// The binary's Redis Cluster (3 primaries, 1 replica each), started on
/// first use and shared by the tests, each under a prefix of its own. Tests
/// that kill or move nodes start a cluster of their own.
pub fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

/// A cache on the binary's cluster, under a key prefix of its own.
pub fn cluster_cache() -> Cache {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("c{}:", NEXT.fetch_add(1, Ordering::Relaxed));
    Cache::builder()
        .cluster_urls(cluster().node_urls())
        .prefix(prefix)
        .build()
        .expect("valid cluster urls")
}

/// No operation of `cache` was refused as touching several hash slots.
pub fn assert_one_slot_per_op(cache: &Cache) {
    let stats = cache.stats();
    assert_eq!(stats.cross_slot_error, 0, "CROSSSLOT errors: {stats:?}");
}

/// The ACL rules of the minimal rule in docs/deployments.md (what follows
/// `user cacheme on >PASSWORD`).
pub fn documented_acl_rule() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deployments.md");
    let docs = std::fs::read_to_string(path).expect("docs/deployments.md");
    docs.lines()
        .find_map(|line| line.strip_prefix("user cacheme on >PASSWORD "))
        .expect("docs/deployments.md gives the rule as `user cacheme on >PASSWORD ...`")
        .trim()
        .to_owned()
}

/// A TLS-only server that requires client certificates; the `default` user
/// has a password (for the tests' own assertions), and the `cacheme` user
/// has the minimal ACL rule of docs/deployments.md.
pub fn secured_server() -> RedisServer {
    RedisServer::builder()
        .tls(TlsClientAuth::Required)
        .requirepass("fixture-admin-pw")
        .acl_user("cacheme", "fixture-pw", documented_acl_rule())
        .start()
}

/// A cache builder for `server`: its URL, or on a [`secured_server`] its
/// `cacheme` user, CA and client certificate.
pub fn builder_for(server: &RedisServer) -> CacheBuilder {
    match server.tls() {
        None => Cache::builder().redis_url(server.url()),
        Some(tls) => Cache::builder()
            .redis_url(server.user_url("cacheme"))
            .tls_ca(tls.ca_cert_pem())
            .tls_client_cert(tls.client_cert_pem(), tls.client_key_pem()),
    }
}

/// A connection to `server` that may run every command (over TLS as the
/// `default` user on a [`secured_server`]).
pub fn admin_connection(server: &RedisServer) -> redis::Connection {
    let Some(tls) = server.tls() else {
        return server.connection();
    };
    let certificates = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: tls.client_cert_pem().to_vec(),
            client_key: tls.client_key_pem().to_vec(),
        }),
        root_cert: Some(tls.ca_cert_pem().to_vec()),
    };
    redis::Client::build_with_tls(server.user_url("default"), certificates)
        .and_then(|client| client.get_connection())
        .expect("a TLS connection to the test's server")
}

/// The test binary's redis-server (killed by its watchdog when the binary exits).
pub fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// A cache on the binary's server, under a key prefix of its own.
pub fn cache() -> Cache {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("t{}:", NEXT.fetch_add(1, Ordering::Relaxed));
    Cache::builder()
        .redis_url(server().url())
        .prefix(prefix)
        .build()
        .expect("a valid redis url")
}

/// A plain connection to the binary's server, for assertions on what is stored.
pub fn redis() -> redis::Connection {
    server().connection()
}

// ------------------------------------------------------ what Redis holds --

/// The Redis key holding the value of `key` in `cache`.
pub fn value_key(cache: &Cache, key: &str) -> String {
    format!("{}{{{key}}}", cache.prefix())
}

/// Whether a value is stored under `key` in `cache` (on the binary's server).
pub fn is_stored(cache: &Cache, key: &str) -> bool {
    let exists: bool = redis::cmd("EXISTS")
        .arg(value_key(cache, key))
        .query(&mut redis())
        .expect("EXISTS");
    exists
}

/// The remaining time to live of `key`'s value, in ms (-1: none, -2: no value).
pub fn pttl(cache: &Cache, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(value_key(cache, key))
        .query(&mut redis())
        .expect("PTTL")
}

/// The cache keys stored under `cache`'s prefix, sorted.
pub fn stored_keys(cache: &Cache) -> Vec<String> {
    let pattern = format!("{}{{*", cacheme::key::escape_glob(cache.prefix()));
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis())
        .expect("KEYS");
    keys.retain(|key| !key.ends_with(":lease") && !key.ends_with(":invalid"));
    let mut keys: Vec<String> = keys
        .into_iter()
        .filter_map(|key| {
            let inner = key.strip_prefix(cache.prefix())?.strip_prefix('{')?;
            Some(inner.strip_suffix('}')?.to_owned())
        })
        .collect();
    keys.sort();
    keys
}

/// The stored values that depend on the group `group` in `cache` (each
/// value lists its tag and groups in its envelope).
pub fn group_members(cache: &Cache, group: &str) -> Vec<String> {
    use cacheme::__private::wire::{Dependency, Envelope};
    let mut conn = redis();
    stored_keys(cache)
        .into_iter()
        .filter(|key| {
            let bytes: Option<Vec<u8>> = redis::cmd("GET")
                .arg(value_key(cache, key))
                .query(&mut conn)
                .expect("GET");
            bytes.is_some_and(|bytes| {
                Envelope::parse(&bytes).is_ok_and(|envelope| {
                    envelope
                        .dependencies()
                        .any(|d| d == Dependency::Group(group))
                })
            })
        })
        .collect()
}

/// Every key on the server, sorted.
pub fn redis_keys(conn: &mut redis::Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
    keys.sort();
    keys
}

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

// --------------------------------------------------------------- waiting --

/// Wait until `ready` holds, for at most five seconds.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`wait_until`] for async tests.
pub async fn wait_until_async(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// -------------------------------------------------------------- counting --

/// Counts loader runs.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn hit(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Hook calls, as (event, key), from every test of the binary.
static HOOKS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

pub fn log_hook(event: &str, key: &str) {
    HOOKS
        .lock()
        .expect("hook log")
        .push((event.to_owned(), key.to_owned()));
}

/// How many times `event` was logged for `key` (tests use keys of their own).
pub fn hook_calls(event: &str, key: &str) -> usize {
    HOOKS
        .lock()
        .expect("hook log")
        .iter()
        .filter(|(e, k)| e == event && k == key)
        .count()
}

// ------------------------------------------------------ the seed's types --

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cat {
    pub id: u64,
    pub name: String,
}

pub fn cat(id: u64, name: &str) -> Cat {
    Cat {
        id,
        name: name.to_owned(),
    }
}

/// The seed's `CatNode`: one field, a ttl, stale data accepted.
#[derive(Debug, Node)]
#[node(key = "cat:{id}", value = Cat, ttl = 300)]
pub struct CatNode {
    pub id: u64,
}

/// A node with two fields, in the dependency group of its owner, that does
/// not accept stale data (the seed's `Meta: stale = False`).
#[derive(Debug, Node)]
#[node(key = "owner:{owner_id}:cat:{id}", value = Cat, stale = false, tag = "cats", invalid_nodes = Self::groups)]
pub struct OwnedCatNode {
    pub owner_id: u64,
    pub id: u64,
}

impl OwnedCatNode {
    fn groups(&self) -> UserInvalid {
        UserInvalid { id: self.owner_id }
    }
}

/// The seed's `InvalidNode`: `user:{id}`.
#[derive(Debug, InvalidNode)]
#[invalid_node(key = "user:{id}")]
pub struct UserInvalid {
    pub id: u64,
}

/// A node whose key is written by hand (the seed's `def key(self)`), with
/// hit and miss hooks that log their calls.
#[derive(Debug, Node)]
#[node(key = Self::cache_key, value = String, hit = Self::on_hit, miss = Self::on_miss, version = "v2")]
pub struct HookedNode {
    pub name: String,
}

impl HookedNode {
    fn cache_key(&self) -> String {
        format!("hooked:{}", cacheme::key::escape(&self.name))
    }
    fn on_hit(&self, key: &str, value: &String) {
        assert_eq!(value, &format!("value of {}", self.name));
        log_hook("hit", key);
    }
    fn on_miss(&self, key: &str) {
        log_hook("miss", key);
    }
}

/// A node with a one-second TTL.
#[derive(Debug, Node)]
#[node(key = "short:{id}", value = u64, ttl = 1)]
pub struct ShortNode {
    pub id: u64,
}

/// What the seed's `some_function(cat)` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatInfo {
    pub id: u64,
    pub description: String,
}

impl CatInfo {
    pub fn of(cat: &Cat, version: u64) -> Self {
        CatInfo {
            id: cat.id,
            description: format!("{} (v{version})", cat.name),
        }
    }
}

/// The seed's `CatNode` of its decorator examples (`node=lambda c:
/// CatNode(cat=c.cat)`): a cat's info, with hooks that log their calls.
#[derive(Debug, Node)]
#[node(key = "cat:{id}", value = CatInfo, ttl = 300, hit = Self::on_hit, miss = Self::on_miss)]
pub struct CatInfoNode {
    pub id: u64,
}

impl CatInfoNode {
    fn on_hit(&self, key: &str, _: &CatInfo) {
        log_hook("node hit", key);
    }
    fn on_miss(&self, key: &str) {
        log_hook("node miss", key);
    }
}

/// A node whose value may be missing (the seed's skip example returns `None`
/// for no cat).
#[derive(Debug, Node)]
#[node(key = "maybe:{id}", value = Option<CatInfo>)]
pub struct MaybeCatNode {
    pub id: u64,
}

/// The seed's serializer example: a book and its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pub id: u64,
    pub owner_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub id: u64,
    pub name: String,
}

impl Book {
    /// The seed's `obj.cache_key`.
    pub fn cache_key(&self) -> String {
        format!("Book:{}", self.id)
    }
}

/// The seed's `obj.owner.cache_key`, as an invalid node: `User:{id}`.
#[derive(Debug, InvalidNode)]
#[invalid_node(key = "User:{id}")]
pub struct OwnerInvalid {
    pub id: u64,
}

/// An error that can be cloned: shared with concurrent callers.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedError(pub String);

/// An error that cannot be cloned: each caller runs the loader itself.
#[derive(Debug, PartialEq)]
pub struct OwnError(pub String);

/// The application's error, with `From` conversions for `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    NotFound(u64),
    BadNumber(String),
}

impl From<std::num::ParseIntError> for AppError {
    fn from(error: std::num::ParseIntError) -> Self {
        AppError::BadNumber(error.to_string())
    }
}
