//! Shared fixtures of the `#[cacheme]` tests (`tests/decorator.rs`,
//! `tests/decorator_blocking.rs`, `tests/sources.rs`): one redis-server per
//! test binary, a cache with its own key prefix per test (so tests running
//! in parallel never see each other's keys), the seed's types, and counters.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cacheme::{Cache, InvalidNode, Node};
use cacheme_test_support::RedisServer;
use serde::{Deserialize, Serialize};

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

/// A plain connection, for assertions on what is stored.
pub fn redis() -> redis::Connection {
    server().connection()
}

/// The Redis key holding the value of `key` in `cache`.
pub fn value_key(cache: &Cache, key: &str) -> String {
    format!("{}{{{key}}}", cache.prefix())
}

/// Whether a value is stored under `key` in `cache`.
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

/// The members of the dependency group `group` in `cache`.
pub fn group_members(cache: &Cache, group: &str) -> Vec<String> {
    let mut members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}{{{group}}}:invalid", cache.prefix()))
        .arg(0)
        .arg(-1)
        .query(&mut redis())
        .expect("ZRANGE");
    members.sort();
    members
}

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

/// The seed's `CatNode`, with hooks that log their calls.
#[derive(Debug, Node)]
#[node(key = "cat:{id}", value = CatInfo, ttl = 300, hit = Self::on_hit, miss = Self::on_miss)]
pub struct CatNode {
    pub id: u64,
}

impl CatNode {
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

/// Hook calls, as (event, key).
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

/// The seed's `obj.owner.cache_key`, as an invalid node.
#[derive(Debug, InvalidNode)]
#[invalid_node(key = "User:{id}")]
pub struct UserInvalid {
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
