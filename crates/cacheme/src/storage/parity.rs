//! A differential property test: the same random sequences of store
//! operations run against the memory store ([`MemoryState`]) and against
//! the Lua scripts on a real redis-server, and every reply is compared. It
//! ties the model check (which runs on the memory store) to the scripts
//! that run in production.
//!
//! Time: leases live [`LEASE_MS`]; a `Sleep` waits well past that on both
//! stores (the memory store's clock jumps, Redis really sleeps), so no
//! operation lands near an expiry.

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;

use super::endpoint::{ConnectOptions, Endpoint};
use super::memory::MemoryState;
use super::redis::{AsyncSource, RedisStore};
use super::{
    ClaimRefresh, Extend, Fill, Get, Invalidate, Op, ReadClaim, ReadLog, Record, Release, Removal,
    Watch,
};
use crate::codec::Codec;
use crate::envelope::{self, Dependency, Header};
use crate::events::SequenceKeys;
use crate::key::StoreKeys;
use crate::protocol::{Claim, Lease};

const LEASE_MS: u64 = 100;
const SLEEP_MS: u64 = 150;
const TOKENS: [&str; 3] = [
    "aaaaaaaaaaaaaaaaaaaaaaaa",
    "bbbbbbbbbbbbbbbbbbbbbbbb",
    "cccccccccccccccccccccccc",
];
const KEYS: [&str; 2] = ["k1", "k2"];

#[derive(Debug, Clone)]
enum Action {
    Get(usize),
    ReadClaim(usize, usize),
    Watch(usize),
    /// Claim the lease key for what the actor last read of the key.
    Claim(usize, usize, bool),
    Fill(usize, usize, bool, u8, Option<u64>),
    Release(usize, usize, bool),
    Extend(usize, usize, bool),
    Invalidate(usize, bool),
    Record(u8),
    ReadLog(u64),
    /// Write foreign bytes under a key.
    Foreign(usize),
    Sleep,
}

fn action() -> impl Strategy<Value = Action> {
    let key = 0..KEYS.len();
    let token = 0..TOKENS.len();
    prop_oneof![
        2 => key.clone().prop_map(Action::Get),
        4 => (key.clone(), token.clone()).prop_map(|(k, t)| Action::ReadClaim(k, t)),
        1 => key.clone().prop_map(Action::Watch),
        3 => (key.clone(), token.clone(), any::<bool>()).prop_map(|(k, t, w)| Action::Claim(k, t, w)),
        4 => (key.clone(), token.clone(), any::<bool>(), any::<u8>(), prop::option::of(1_000u64..100_000))
            .prop_map(|(k, t, p, v, ttl)| Action::Fill(k, t, p, v, ttl)),
        1 => (key.clone(), token.clone(), any::<bool>()).prop_map(|(k, t, p)| Action::Release(k, t, p)),
        1 => (key.clone(), token.clone(), any::<bool>()).prop_map(|(k, t, p)| Action::Extend(k, t, p)),
        2 => (key.clone(), any::<bool>()).prop_map(|(k, d)| Action::Invalidate(k, d)),
        1 => any::<u8>().prop_map(Action::Record),
        1 => (0u64..6).prop_map(Action::ReadLog),
        1 => key.clone().prop_map(Action::Foreign),
        1 => Just(Action::Sleep),
    ]
}

fn lease(placeholder: bool) -> Lease {
    if placeholder {
        Lease::Placeholder
    } else {
        Lease::Key
    }
}

/// The two stores, side by side.
struct Pair {
    memory: MemoryState,
    now: u64,
    redis: RedisStore,
    conn: redis::Connection,
    /// The first sequence number each store gave (Redis starts its sequence
    /// at the server's time): sequence numbers are compared relative to it.
    seq_base: Option<(u64, u64)>,
    /// What each key was last read as, for the claims' expected header.
    last_read: [Option<Vec<u8>>; 2],
}

impl Pair {
    fn run<O: Op>(&mut self, op: &O) -> (O::Output, O::Output) {
        let memory = op.apply(&mut self.memory, self.now, &mut Vec::new());
        let redis = self
            .redis
            .run_blocking(op, Duration::from_secs(5))
            .expect("redis answers");
        (memory, redis)
    }
}

fn keys(k: usize) -> StoreKeys {
    StoreKeys::new("CM:", KEYS[k])
}

fn value(v: u8) -> Vec<u8> {
    let payload = Codec::MessagePack.encode(&v).expect("encodes");
    envelope::seal(
        &Header {
            codec: Codec::MessagePack,
            written_at_ms: 1,
            claim_seq: u64::from(v),
            fresh_until_ms: 0,
            dependencies: &[Dependency::Tag("t"), Dependency::Group("g")],
        },
        &payload,
    )
    .expect("short names")
}

fn check(pair: &mut Pair, action: &Action) -> Result<(), TestCaseError> {
    match *action {
        Action::Get(k) => {
            let keys = keys(k);
            let (m, r) = pair.run(&Get { keys: &keys });
            prop_assert_eq!(&m, &r, "GET {}", keys.value());
            pair.last_read[k] = m;
        }
        Action::ReadClaim(k, t) => {
            let keys = keys(k);
            let placeholder = envelope::placeholder(TOKENS[t]);
            let (m, r) = pair.run(&ReadClaim {
                keys: &keys,
                placeholder: &placeholder,
                lease_ms: LEASE_MS,
            });
            prop_assert_eq!(&m, &r, "read-claim {}", keys.value());
            pair.last_read[k] = m;
        }
        Action::Watch(k) => {
            let keys = keys(k);
            let (m, r) = pair.run(&Watch { keys: &keys });
            prop_assert_eq!(&m, &r, "watch");
            pair.last_read[k] = m;
        }
        Action::Claim(k, t, wait) => {
            let keys = keys(k);
            let expected = pair.last_read[k]
                .as_deref()
                .map(|read| read[..read.len().min(envelope::HEADER_LEN)].to_vec())
                .unwrap_or_default();
            let (m, r): ((Claim, _), (Claim, _)) = pair.run(&ClaimRefresh {
                keys: &keys,
                token: TOKENS[t],
                lease_ms: LEASE_MS,
                expected: &expected,
                wait,
            });
            prop_assert_eq!(&m, &r, "claim");
        }
        Action::Fill(k, t, placeholder, v, ttl_ms) => {
            let keys = keys(k);
            let envelope = value(v);
            let (m, r) = pair.run(&Fill {
                keys: &keys,
                lease: lease(placeholder),
                token: TOKENS[t],
                envelope: &envelope,
                ttl_ms,
            });
            prop_assert_eq!(m, r, "fill");
        }
        Action::Release(k, t, placeholder) => {
            let keys = keys(k);
            pair.run(&Release {
                keys: &keys,
                lease: lease(placeholder),
                token: TOKENS[t],
            });
        }
        Action::Extend(k, t, placeholder) => {
            let keys = keys(k);
            let (m, r) = pair.run(&Extend {
                keys: &keys,
                lease: lease(placeholder),
                token: TOKENS[t],
                lease_ms: LEASE_MS,
            });
            prop_assert_eq!(m, r, "extend");
        }
        Action::Invalidate(k, delete) => {
            let keys = [keys(k)];
            let removal = if delete {
                Removal::Delete
            } else {
                Removal::MarkStale
            };
            let (m, r) = pair.run(&Invalidate {
                keys: &keys,
                removal,
            });
            prop_assert_eq!(m, r, "invalidate");
        }
        Action::Record(byte) => {
            let (m, r) = pair.run(&Record {
                payload: &[byte],
                log_len: 1_000,
            });
            let (m0, r0) = *pair.seq_base.get_or_insert((m - 1, r - 1));
            prop_assert_eq!(m - m0, r - r0, "sequence numbers");
        }
        Action::ReadLog(from) => {
            let Some((m0, r0)) = pair.seq_base else {
                return Ok(());
            };
            let (_, m) = ReadLog {
                from: m0 + from,
                count: 100,
            }
            .apply(&mut pair.memory, pair.now, &mut Vec::new());
            let (_, r) = pair
                .redis
                .run_blocking(
                    &ReadLog {
                        from: r0 + from,
                        count: 100,
                    },
                    Duration::from_secs(5),
                )
                .expect("redis answers");
            let m: Vec<_> = m.into_iter().map(|(seq, p)| (seq - m0, p)).collect();
            let r: Vec<_> = r.into_iter().map(|(seq, p)| (seq - r0, p)).collect();
            prop_assert_eq!(m, r, "log");
        }
        Action::Foreign(k) => {
            let keys = keys(k);
            pair.memory
                .put_raw(keys.value(), b"foreign bytes", pair.now);
            let _: () = redis::cmd("SET")
                .arg(keys.value())
                .arg(&b"foreign bytes"[..])
                .query(&mut pair.conn)
                .expect("SET");
        }
        Action::Sleep => {
            pair.now += SLEEP_MS;
            std::thread::sleep(Duration::from_millis(SLEEP_MS));
        }
    }
    Ok(())
}

fn server() -> &'static cacheme_test_support::RedisServer {
    static SERVER: OnceLock<cacheme_test_support::RedisServer> = OnceLock::new();
    SERVER.get_or_init(cacheme_test_support::RedisServer::start)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_memory_store_and_the_lua_scripts_agree(
        actions in prop::collection::vec(action(), 1..40)
            .prop_filter("at most two sleeps", |a| a.iter().filter(|a| matches!(a, Action::Sleep)).count() <= 2)
    ) {
        let server = server();
        let mut conn = server.connection();
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
        let endpoint = Endpoint::open(&ConnectOptions {
            url: Some(server.url()),
            ..ConnectOptions::default()
        })
        .expect("url");
        let mut pair = Pair {
            memory: MemoryState::default(),
            now: 1_000_000,
            redis: RedisStore::new(
                endpoint,
                AsyncSource::Endpoint(Default::default()),
                "parity".into(),
                SequenceKeys::new("CM:"),
            ),
            conn,
            seq_base: None,
            last_read: [None, None],
        };
        for action in &actions {
            check(&mut pair, action)?;
        }
        // The end state agrees too.
        for k in 0..KEYS.len() {
            check(&mut pair, &Action::Get(k))?;
        }
    }
}
