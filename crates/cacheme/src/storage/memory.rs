//! The embedded default store: the same semantics as the Redis scripts, in
//! one process.
//!
//! [`MemoryState`] is plain data with an explicit clock (`now_ms` arguments),
//! so the protocol's model check can drive it with a fake clock;
//! [`MemoryStore`] puts it behind a mutex with the system clock.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::envelope::{self, PREFIX, STALE};
use crate::key::StoreKeys;
use crate::protocol::Claim;

use super::{IndexAdd, Scoring};

#[derive(Debug, Clone)]
struct Stored {
    bytes: Vec<u8>,
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Lease {
    token: String,
    waiters: bool,
    expires_at_ms: u64,
}

/// Everything the memory store holds, with an explicit clock.
#[derive(Debug, Default, Clone)]
pub(crate) struct MemoryState {
    values: HashMap<String, Stored>,
    leases: HashMap<String, Lease>,
    indexes: HashMap<String, HashMap<String, Option<u64>>>,
    writes_since_sweep: usize,
}

/// Sweep expired values after this many writes, so that keys nobody reads
/// again do not pile up.
const SWEEP_EVERY: usize = 1024;

impl MemoryState {
    /// The bytes under a value key (`GET`).
    pub(crate) fn get(&mut self, value_key: &str, now_ms: u64) -> Option<Vec<u8>> {
        self.live_value(value_key, now_ms).map(|s| s.bytes.clone())
    }

    fn live_value(&mut self, value_key: &str, now_ms: u64) -> Option<&mut Stored> {
        let expired = self
            .values
            .get(value_key)
            .is_some_and(|s| s.expires_at_ms.is_some_and(|at| at <= now_ms));
        if expired {
            self.values.remove(value_key);
        }
        self.values.get_mut(value_key)
    }

    fn live_lease(&mut self, lease_key: &str, now_ms: u64) -> Option<&mut Lease> {
        if self
            .leases
            .get(lease_key)
            .is_some_and(|l| l.expires_at_ms <= now_ms)
        {
            self.leases.remove(lease_key);
        }
        self.leases.get_mut(lease_key)
    }

    /// The claim script: report a current value, or take the lease, or
    /// register as a waiter. Returns the value found either way.
    pub(crate) fn claim(
        &mut self,
        request: &ClaimRequest<'_>,
        now_ms: u64,
    ) -> (Claim, Option<Vec<u8>>) {
        let found = self.get(request.keys.value(), now_ms);
        if let Some(bytes) = &found
            && is_current(bytes, request.fresh_since_ms)
        {
            return (Claim::Current, found);
        }
        let lease_key = request.keys.lease();
        match self.live_lease(&lease_key, now_ms) {
            None => {
                self.leases.insert(
                    lease_key,
                    Lease {
                        token: request.token.to_owned(),
                        waiters: false,
                        expires_at_ms: now_ms + request.lease_ms,
                    },
                );
                (Claim::Acquired, found)
            }
            Some(lease) => {
                let servable = found
                    .as_deref()
                    .is_some_and(|bytes| is_servable(bytes, request.stale_ok));
                if !servable {
                    lease.waiters = true;
                }
                (Claim::Busy, found)
            }
        }
    }

    /// Push a lease's expiry forward if `token` still holds it.
    pub(crate) fn extend(
        &mut self,
        keys: &StoreKeys,
        token: &str,
        lease_ms: u64,
        now_ms: u64,
    ) -> bool {
        match self.live_lease(&keys.lease(), now_ms) {
            Some(lease) if lease.token == token => {
                lease.expires_at_ms = now_ms + lease_ms;
                true
            }
            _ => false,
        }
    }

    /// The fill script: index the key, then store the value only if `token`
    /// still holds the lease. Returns (stored, waiters to wake).
    pub(crate) fn fill(&mut self, request: &FillRequest<'_>, now_ms: u64) -> (bool, bool) {
        for add in request.indexes {
            self.index_add(
                add,
                request.keys.cache_key(request.prefix),
                Scoring::Set,
                now_ms,
            );
        }
        let lease_key = request.keys.lease();
        let waiters = match self.live_lease(&lease_key, now_ms) {
            Some(lease) if lease.token == request.token => lease.waiters,
            _ => return (false, false),
        };
        self.leases.remove(&lease_key);
        self.values.insert(
            request.keys.value().to_owned(),
            Stored {
                bytes: request.envelope.to_vec(),
                expires_at_ms: request.ttl_ms.map(|ttl| now_ms + ttl),
            },
        );
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= SWEEP_EVERY {
            self.sweep(now_ms);
        }
        (true, waiters)
    }

    /// Give a lease back. Returns whether waiters must be woken.
    pub(crate) fn release(&mut self, keys: &StoreKeys, token: &str, now_ms: u64) -> bool {
        let lease_key = keys.lease();
        match self.live_lease(&lease_key, now_ms) {
            Some(lease) if lease.token == token => {
                let waiters = lease.waiters;
                self.leases.remove(&lease_key);
                waiters
            }
            _ => false,
        }
    }

    /// Mark a value stale in place (keeping its expiry) and revoke its lease.
    /// Returns (whether a value was marked, whether waiters must be woken).
    pub(crate) fn mark_stale(&mut self, keys: &StoreKeys, now_ms: u64) -> (bool, bool) {
        let marked = match self.live_value(keys.value(), now_ms) {
            Some(stored) if stored.bytes.starts_with(&PREFIX) => {
                stored.bytes[envelope::STATE_OFFSET] = STALE;
                true
            }
            _ => false,
        };
        let waiters = self.leases.remove(&keys.lease()).is_some_and(|l| l.waiters);
        (marked, waiters)
    }

    /// Delete a value and revoke its lease. Returns (whether a value was
    /// deleted, whether waiters must be woken).
    pub(crate) fn delete(&mut self, keys: &StoreKeys, now_ms: u64) -> (bool, bool) {
        let waiters = self.leases.remove(&keys.lease()).is_some_and(|l| l.waiters);
        let deleted = self.live_value(keys.value(), now_ms).is_some();
        self.values.remove(keys.value());
        (deleted, waiters)
    }

    /// `ZADD` (or `ZADD GT` with [`Scoring::Extend`]), then prune when due.
    pub(crate) fn index_add(
        &mut self,
        add: &IndexAdd,
        member: &str,
        scoring: Scoring,
        now_ms: u64,
    ) {
        let index = self.indexes.entry(add.index.clone()).or_default();
        let expiry = add.expiry.at(now_ms);
        match (scoring, index.get_mut(member)) {
            (Scoring::Extend, Some(current)) => {
                // GT: None (never) is the greatest expiry.
                if current.is_some_and(|c| expiry.is_none_or(|e| e > c)) {
                    *current = expiry;
                }
            }
            _ => {
                index.insert(member.to_owned(), expiry);
            }
        }
        if add.prune {
            index.retain(|_, expiry| expiry.is_none_or(|at| at > now_ms));
        }
    }

    /// The live members of an index (cache keys).
    pub(crate) fn index_members(&mut self, index: &str, now_ms: u64) -> Vec<String> {
        self.indexes
            .get(index)
            .map(|members| {
                members
                    .iter()
                    .filter(|(_, expiry)| expiry.is_none_or(|at| at > now_ms))
                    .map(|(member, _)| member.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of members stored in an index, expired or not (for tests of pruning).
    #[cfg(test)]
    pub(crate) fn index_len(&self, index: &str) -> usize {
        self.indexes.get(index).map_or(0, HashMap::len)
    }

    /// Remove members from an index.
    pub(crate) fn index_remove(&mut self, index: &str, members: &[String]) {
        if let Some(set) = self.indexes.get_mut(index) {
            for member in members {
                set.remove(member);
            }
            if set.is_empty() {
                self.indexes.remove(index);
            }
        }
    }

    /// Value and lease keys matching a Redis glob (as `SCAN MATCH` sees them).
    pub(crate) fn scan(&mut self, glob: &str, now_ms: u64) -> Vec<String> {
        self.sweep(now_ms);
        self.values
            .keys()
            .chain(self.leases.keys())
            .filter(|key| crate::key::glob_match(glob.as_bytes(), key.as_bytes()))
            .cloned()
            .collect()
    }

    fn sweep(&mut self, now_ms: u64) {
        self.writes_since_sweep = 0;
        self.values
            .retain(|_, s| s.expires_at_ms.is_none_or(|at| at > now_ms));
        self.leases.retain(|_, l| l.expires_at_ms > now_ms);
    }
}

/// A fresh value written at or after `fresh_since_ms`.
fn is_current(bytes: &[u8], fresh_since_ms: u64) -> bool {
    match envelope::Envelope::parse(bytes) {
        Ok(e) => e.state == envelope::State::Fresh && e.written_at_ms >= fresh_since_ms,
        Err(_) => false,
    }
}

/// A value a reader may be given while someone else loads.
fn is_servable(bytes: &[u8], stale_ok: bool) -> bool {
    match envelope::Envelope::parse(bytes) {
        Ok(e) => e.state == envelope::State::Fresh || stale_ok,
        Err(_) => false,
    }
}

/// What the claim script needs.
#[derive(Debug)]
pub(crate) struct ClaimRequest<'a> {
    /// The key being claimed.
    pub(crate) keys: &'a StoreKeys,
    /// This caller's lease token.
    pub(crate) token: &'a str,
    /// Lease lifetime.
    pub(crate) lease_ms: u64,
    /// A fresh value written at or after this time needs no load.
    pub(crate) fresh_since_ms: u64,
    /// The caller may be served a stale value (and then needs no wake-up).
    pub(crate) stale_ok: bool,
}

/// What the fill script needs.
#[derive(Debug)]
pub(crate) struct FillRequest<'a> {
    /// The store's key prefix.
    pub(crate) prefix: &'a str,
    /// The key being filled.
    pub(crate) keys: &'a StoreKeys,
    /// The lease token the fill is conditional on.
    pub(crate) token: &'a str,
    /// The sealed envelope.
    pub(crate) envelope: &'a [u8],
    /// Time to live, if any.
    pub(crate) ttl_ms: Option<u64>,
    /// Lease lifetime (to put back a lease that is not ours).
    pub(crate) lease_ms: u64,
    /// Indexes the key joins before it is written.
    pub(crate) indexes: &'a [IndexAdd],
}

/// [`MemoryState`] behind a mutex, on the system clock.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    pub(crate) state: Mutex<MemoryState>,
}

impl MemoryStore {
    /// Run `f` on the state. A poisoned lock is recovered: the state is plain
    /// data and every operation leaves it consistent.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Codec, seal};

    fn keys(key: &str) -> StoreKeys {
        StoreKeys::new("CM:", key)
    }

    fn claim<'a>(keys: &'a StoreKeys, token: &'a str, stale_ok: bool) -> ClaimRequest<'a> {
        ClaimRequest {
            keys,
            token,
            lease_ms: 1000,
            fresh_since_ms: 0,
            stale_ok,
        }
    }

    fn fill<'a>(keys: &'a StoreKeys, token: &'a str, envelope: &'a [u8]) -> FillRequest<'a> {
        FillRequest {
            prefix: "CM:",
            keys,
            token,
            envelope,
            ttl_ms: Some(500),
            lease_ms: 1000,
            indexes: &[],
        }
    }

    #[test]
    fn claim_fill_read() {
        let mut state = MemoryState::default();
        let k = keys("a");
        let value = seal(Codec::MessagePack, 1, &[0xC0]);
        assert_eq!(state.claim(&claim(&k, "t1", false), 0).0, Claim::Acquired);
        assert_eq!(state.claim(&claim(&k, "t2", false), 0).0, Claim::Busy);
        assert_eq!(state.fill(&fill(&k, "t2", &value), 1), (false, false));
        assert_eq!(state.fill(&fill(&k, "t1", &value), 1), (true, true));
        assert_eq!(state.get(k.value(), 2), Some(value.clone()));
        assert_eq!(state.claim(&claim(&k, "t3", false), 2).0, Claim::Current);
        // Expired by its ttl (written at 1, ttl 500).
        assert_eq!(state.get(k.value(), 501), None);
    }

    #[test]
    fn invalidation_revokes_the_lease_and_marks_stale() {
        let mut state = MemoryState::default();
        let k = keys("a");
        let value = seal(Codec::MessagePack, 1, &[0xC0]);
        state.claim(&claim(&k, "t1", false), 0);
        state.fill(&fill(&k, "t1", &value), 0);
        state.claim(&claim(&k, "t2", false), 0); // current: no lease
        assert_eq!(state.mark_stale(&k, 1), (true, false));
        let stale = state.get(k.value(), 1).expect("still there");
        assert_eq!(stale[envelope::STATE_OFFSET], STALE);
        // A load that began before the invalidation cannot fill.
        assert_eq!(state.claim(&claim(&k, "t3", false), 2).0, Claim::Acquired);
        state.mark_stale(&k, 3);
        assert_eq!(state.fill(&fill(&k, "t3", &value), 4), (false, false));
    }

    #[test]
    fn stale_readers_are_not_registered_as_waiters() {
        let mut state = MemoryState::default();
        let k = keys("a");
        let value = seal(Codec::MessagePack, 1, &[0xC0]);
        state.claim(&claim(&k, "t1", false), 0);
        state.fill(&fill(&k, "t1", &value), 0);
        state.mark_stale(&k, 1);
        assert_eq!(state.claim(&claim(&k, "t2", true), 1).0, Claim::Acquired);
        assert_eq!(state.claim(&claim(&k, "t3", true), 1).0, Claim::Busy);
        assert_eq!(state.fill(&fill(&k, "t2", &value), 2), (true, false));
    }

    #[test]
    fn foreign_values_are_not_marked() {
        let mut state = MemoryState::default();
        let k = keys("a");
        state.values.insert(
            k.value().to_owned(),
            Stored {
                bytes: b"hello".to_vec(),
                expires_at_ms: None,
            },
        );
        assert_eq!(state.mark_stale(&k, 0), (false, false));
        assert_eq!(state.get(k.value(), 0), Some(b"hello".to_vec()));
    }

    #[test]
    fn registration_only_pushes_expiry_later() {
        let mut state = MemoryState::default();
        let add = |ms| IndexAdd {
            index: "i".into(),
            expiry: super::super::Expiry::After(ms),
            prune: false,
        };
        state.index_add(&add(1000), "k", Scoring::Set, 0);
        state.index_add(&add(10), "k", Scoring::Extend, 0);
        assert_eq!(state.indexes["i"]["k"], Some(1000));
        state.index_add(&add(5000), "k", Scoring::Extend, 0);
        assert_eq!(state.indexes["i"]["k"], Some(5000));
        state.index_add(&add(10), "k", Scoring::Set, 0);
        assert_eq!(state.indexes["i"]["k"], Some(10));
    }

    #[test]
    fn leases_expire() {
        let mut state = MemoryState::default();
        let k = keys("a");
        state.claim(&claim(&k, "t1", false), 0);
        assert!(state.extend(&k, "t1", 1000, 900));
        assert!(!state.extend(&k, "t2", 1000, 900));
        assert_eq!(state.claim(&claim(&k, "t2", false), 1899).0, Claim::Busy);
        assert_eq!(
            state.claim(&claim(&k, "t2", false), 1900).0,
            Claim::Acquired
        );
    }

    #[test]
    fn indexes_prune_expired_members_on_write() {
        let mut state = MemoryState::default();
        let value = seal(Codec::MessagePack, 1, &[0xC0]);
        let index = vec![IndexAdd {
            index: "CM:tag:{t}".into(),
            expiry: super::super::Expiry::After(100),
            prune: true,
        }];
        for i in 0..50 {
            let k = keys(&format!("k{i}"));
            state.claim(&claim(&k, "t", false), 0);
            state.fill(
                &FillRequest {
                    indexes: &index,
                    ..fill(&k, "t", &value)
                },
                0,
            );
        }
        assert_eq!(state.index_len("CM:tag:{t}"), 50);
        let k = keys("late");
        state.claim(&claim(&k, "t", false), 200);
        let late = vec![IndexAdd {
            expiry: super::super::Expiry::After(100),
            ..index[0].clone()
        }];
        state.fill(
            &FillRequest {
                indexes: &late,
                ..fill(&k, "t", &value)
            },
            200,
        );
        assert_eq!(state.index_len("CM:tag:{t}"), 1);
        assert_eq!(
            state.index_members("CM:tag:{t}", 200),
            vec!["late".to_owned()]
        );
    }
}
