//! Shared fixtures for the integration tests: caches on the memory store and
//! on a real redis-server started for the test, and the nodes of the seed's
//! examples.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cacheme::{Cache, InvalidNode, Node};
use cacheme_test_support::RedisServer;
use serde::{Deserialize, Serialize};

/// A cache for one test, with its server when it is on Redis.
pub struct Fixture {
    pub cache: Cache,
    pub server: Option<RedisServer>,
}

impl Fixture {
    pub fn memory() -> Self {
        Fixture {
            cache: Cache::builder().build().expect("memory cache"),
            server: None,
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
        }
    }

    /// A plain connection to the test's server, for assertions on raw keys.
    pub fn redis_connection(&self) -> Option<redis::Connection> {
        self.server.as_ref().map(RedisServer::connection)
    }

    pub fn is_redis(&self) -> bool {
        self.server.is_some()
    }
}

/// Define one test per store: `mod name { memory(), redis() }`.
#[macro_export]
macro_rules! on_both_stores {
    ($( $(#[$meta:meta])* async fn $name:ident($fx:ident) $body:block )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let $fx = $crate::common::Fixture::memory();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let $fx = $crate::common::Fixture::redis();
                $body
            }
        }
    )*};
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
/// hit and miss hooks that count their calls.
#[derive(Debug, Node)]
#[node(key = Self::cache_key, value = String, hit = Self::on_hit, miss = Self::on_miss, version = "v2")]
pub struct HookedNode {
    pub name: String,
}

/// Hook calls, as (event, key): tests look for their own unique keys.
pub static HOOK_LOG: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

pub fn hook_calls(event: &str, key: &str) -> usize {
    HOOK_LOG
        .lock()
        .expect("hook log")
        .iter()
        .filter(|(e, k)| *e == event && k == key)
        .count()
}

impl HookedNode {
    fn cache_key(&self) -> String {
        format!("hooked:{}", cacheme::key::escape(&self.name))
    }
    fn on_hit(&self, key: &str, value: &String) {
        assert_eq!(value, &format!("value of {}", self.name));
        HOOK_LOG
            .lock()
            .expect("hook log")
            .push(("hit", key.to_owned()));
    }
    fn on_miss(&self, key: &str) {
        HOOK_LOG
            .lock()
            .expect("hook log")
            .push(("miss", key.to_owned()));
    }
}

/// A node with a one-second TTL.
#[derive(Debug, Node)]
#[node(key = "short:{id}", value = u64, ttl = 1)]
pub struct ShortNode {
    pub id: u64,
}

/// A loader that counts its calls.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn hit(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
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

/// Every key on the server, sorted.
pub fn redis_keys(conn: &mut redis::Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
    keys.sort();
    keys
}
