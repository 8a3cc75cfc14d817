//! The embedded default store: the same semantics as the Redis commands and
//! scripts, in one process.
//!
//! [`MemoryState`] is plain data with an explicit clock (`now_ms` arguments),
//! so the protocol's model check can drive it with a fake clock;
//! [`MemoryStore`] puts it behind a mutex with the system clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::envelope::{self, STALE, STATE_OFFSET, Stored as Parsed, WAITERS_OFFSET};
use crate::key::StoreKeys;
use crate::protocol::{Claim, Lease};

use super::{ClaimRefresh, Extend, Fill, LogEntry, Removal};

#[derive(Debug, Clone)]
struct Stored {
    bytes: Vec<u8>,
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct LeaseKey {
    token: String,
    waiters: bool,
    expires_at_ms: u64,
}

/// Everything the memory store holds, with an explicit clock.
#[derive(Debug, Default, Clone)]
pub(crate) struct MemoryState {
    values: HashMap<String, Stored>,
    leases: HashMap<String, LeaseKey>,
    /// The invalidation sequence's last number.
    seq: u64,
    /// Its log: (number, payload), oldest first.
    log: VecDeque<LogEntry>,
    writes_since_sweep: usize,
}

/// Sweep expired values after this many writes, so that keys nobody reads
/// again do not pile up.
const SWEEP_EVERY: usize = 1024;

/// Whether `bytes` is a placeholder, and of which token.
fn placeholder(bytes: &[u8]) -> Option<(&[u8], bool)> {
    match Parsed::parse(bytes) {
        Ok(Parsed::Loading { token, waiters }) => Some((token, waiters)),
        _ => None,
    }
}

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

    fn live_lease(&mut self, lease_key: &str, now_ms: u64) -> Option<&mut LeaseKey> {
        if self
            .leases
            .get(lease_key)
            .is_some_and(|l| l.expires_at_ms <= now_ms)
        {
            self.leases.remove(lease_key);
        }
        self.leases.get_mut(lease_key)
    }

    fn put(&mut self, value_key: &str, bytes: Vec<u8>, expires_at_ms: Option<u64>, now_ms: u64) {
        self.values.insert(
            value_key.to_owned(),
            Stored {
                bytes,
                expires_at_ms,
            },
        );
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= SWEEP_EVERY {
            self.sweep(now_ms);
        }
    }

    /// Write raw bytes under a key, with no expiry (tests of foreign values).
    #[cfg(test)]
    pub(crate) fn put_raw(&mut self, key: &str, bytes: &[u8], now_ms: u64) {
        self.put(key, bytes.to_vec(), None, now_ms);
    }

    /// `SET key placeholder NX PX lease GET`: what the key held, or `None`
    /// when it was empty and now holds the placeholder.
    pub(crate) fn read_claim(
        &mut self,
        value_key: &str,
        placeholder: &[u8],
        lease_ms: u64,
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        if let Some(found) = self.get(value_key, now_ms) {
            return Some(found);
        }
        self.put(
            value_key,
            placeholder.to_vec(),
            Some(now_ms + lease_ms),
            now_ms,
        );
        None
    }

    /// The watch script: set a placeholder's waiters flag; what the key holds.
    pub(crate) fn watch(&mut self, value_key: &str, now_ms: u64) -> Option<Vec<u8>> {
        let stored = self.live_value(value_key, now_ms)?;
        let found = stored.bytes.clone();
        if placeholder(&stored.bytes).is_some() {
            stored.bytes[WAITERS_OFFSET] = 1;
        }
        Some(found)
    }

    /// The claim script: take the lease key if the value is still the one
    /// judged, or register as a waiter.
    pub(crate) fn claim_refresh(
        &mut self,
        op: &ClaimRefresh<'_>,
        now_ms: u64,
    ) -> (Claim, Option<Vec<u8>>) {
        let found = self.get(op.keys.value(), now_ms);
        let still = found
            .as_deref()
            .is_some_and(|v| placeholder(v).is_none() && v.starts_with(op.expected));
        if !still {
            return (Claim::Changed, found);
        }
        let lease_key = op.keys.lease();
        match self.live_lease(&lease_key, now_ms) {
            None => {
                self.leases.insert(
                    lease_key,
                    LeaseKey {
                        token: op.token.to_owned(),
                        waiters: false,
                        expires_at_ms: now_ms + op.lease_ms,
                    },
                );
                (Claim::Acquired, found)
            }
            Some(lease) => {
                if op.wait {
                    lease.waiters = true;
                }
                (Claim::Busy, found)
            }
        }
    }

    /// Push a lease's expiry forward if `token` still holds it.
    pub(crate) fn extend(&mut self, op: &Extend<'_>, now_ms: u64) -> bool {
        match op.lease {
            Lease::Placeholder => match self.live_value(op.keys.value(), now_ms) {
                Some(stored)
                    if placeholder(&stored.bytes)
                        .is_some_and(|(token, _)| token == op.token.as_bytes()) =>
                {
                    stored.expires_at_ms = Some(now_ms + op.lease_ms);
                    true
                }
                _ => false,
            },
            Lease::Key => match self.live_lease(&op.keys.lease(), now_ms) {
                Some(lease) if lease.token == op.token => {
                    lease.expires_at_ms = now_ms + op.lease_ms;
                    true
                }
                _ => false,
            },
        }
    }

    /// Take the lease back if `token` holds it. Returns (held, waiters).
    fn take_lease(
        &mut self,
        keys: &StoreKeys,
        lease: Lease,
        token: &str,
        now_ms: u64,
    ) -> (bool, bool) {
        match lease {
            Lease::Placeholder => {
                let waiters = match self.live_value(keys.value(), now_ms) {
                    Some(stored) => match placeholder(&stored.bytes) {
                        Some((held, waiters)) if held == token.as_bytes() => waiters,
                        _ => return (false, false),
                    },
                    None => return (false, false),
                };
                self.values.remove(keys.value());
                (true, waiters)
            }
            Lease::Key => {
                let lease_key = keys.lease();
                match self.live_lease(&lease_key, now_ms) {
                    Some(held) if held.token == token => {
                        let waiters = held.waiters;
                        self.leases.remove(&lease_key);
                        (true, waiters)
                    }
                    _ => (false, false),
                }
            }
        }
    }

    /// The fill script: store the value only if the lease is still ours.
    /// Returns (stored, waiters to wake).
    pub(crate) fn fill(&mut self, op: &Fill<'_>, now_ms: u64) -> (bool, bool) {
        let (held, waiters) = self.take_lease(op.keys, op.lease, op.token, now_ms);
        if !held {
            return (false, false);
        }
        let expires = op.expiry_ms().map(|ttl| now_ms.saturating_add(ttl));
        self.put(op.keys.value(), op.envelope.to_vec(), expires, now_ms);
        (true, waiters)
    }

    /// Give a lease back. Returns whether waiters must be woken.
    pub(crate) fn release(
        &mut self,
        keys: &StoreKeys,
        lease: Lease,
        token: &str,
        now_ms: u64,
    ) -> bool {
        self.take_lease(keys, lease, token, now_ms).1
    }

    /// The invalidate script: revoke the lease key and any placeholder, then
    /// mark the value stale in place (keeping its expiry) or delete it.
    /// Returns (whether a value was marked or deleted, whether waiters must
    /// be woken).
    pub(crate) fn invalidate(
        &mut self,
        keys: &StoreKeys,
        removal: Removal,
        now_ms: u64,
    ) -> (bool, bool) {
        let mut waiters = self.leases.remove(&keys.lease()).is_some_and(|l| l.waiters);
        let Some(stored) = self.live_value(keys.value(), now_ms) else {
            return (false, waiters);
        };
        if let Some((_, placeholder_waiters)) = placeholder(&stored.bytes) {
            waiters |= placeholder_waiters;
            self.values.remove(keys.value());
            return (false, waiters);
        }
        let is_value = envelope::Envelope::parse(&stored.bytes).is_ok();
        if removal == Removal::Delete || !is_value {
            self.values.remove(keys.value());
        } else {
            stored.bytes[STATE_OFFSET] = STALE;
        }
        (true, waiters)
    }

    /// The record script: number an invalidation and log it.
    pub(crate) fn record(&mut self, payload: &[u8], log_len: u64) -> u64 {
        self.seq += 1;
        self.log.push_back((self.seq, payload.to_vec()));
        while self.log.len() as u64 > log_len.max(1) {
            self.log.pop_front();
        }
        self.seq
    }

    /// The sequence's number and the log from `from` on.
    pub(crate) fn read_log(&self, from: u64, count: usize) -> (u64, Vec<LogEntry>) {
        let entries = self
            .log
            .iter()
            .filter(|(seq, _)| *seq >= from)
            .take(count)
            .cloned()
            .collect();
        (self.seq, entries)
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
    use crate::codec::Codec;
    use crate::envelope::{Header, placeholder as new_placeholder, seal};

    fn keys(key: &str) -> StoreKeys {
        StoreKeys::new("CM:", key)
    }

    fn value() -> Vec<u8> {
        seal(
            &Header {
                codec: Codec::MessagePack,
                written_at_ms: 1,
                claim_seq: 0,
                fresh_until_ms: 0,
                dependencies: &[],
            },
            &[0xC0],
        )
        .expect("no names")
    }

    fn fill<'a>(keys: &'a StoreKeys, lease: Lease, token: &'a str, envelope: &'a [u8]) -> Fill<'a> {
        Fill {
            keys,
            lease,
            token,
            envelope,
            ttl_ms: Some(500),
        }
    }

    fn claim<'a>(keys: &'a StoreKeys, token: &'a str, expected: &'a [u8]) -> ClaimRefresh<'a> {
        ClaimRefresh {
            keys,
            token,
            lease_ms: 1000,
            expected,
            wait: true,
        }
    }

    #[test]
    fn a_cold_read_claims_and_only_its_fill_lands() {
        let mut state = MemoryState::default();
        let k = keys("a");
        let (p1, p2) = (new_placeholder("t1"), new_placeholder("t2"));
        assert_eq!(state.read_claim(k.value(), &p1, 100, 0), None);
        assert_eq!(state.read_claim(k.value(), &p2, 100, 0), Some(p1.clone()));
        let v = value();
        assert_eq!(
            state.fill(&fill(&k, Lease::Placeholder, "t2", &v), 1),
            (false, false)
        );
        assert_eq!(
            state.fill(&fill(&k, Lease::Placeholder, "t1", &v), 1),
            (true, false)
        );
        assert_eq!(state.read_claim(k.value(), &p2, 100, 2), Some(v.clone()));
        // Expired by its ttl (written at 1, ttl 500): cold again.
        assert_eq!(state.read_claim(k.value(), &p2, 100, 501), None);
    }

    #[test]
    fn watchers_are_woken_by_the_fill() {
        let mut state = MemoryState::default();
        let k = keys("a");
        let p1 = new_placeholder("t1");
        state.read_claim(k.value(), &p1, 100, 0);
        assert_eq!(state.watch(k.value(), 0), Some(p1));
        assert_eq!(
            state.fill(&fill(&k, Lease::Placeholder, "t1", &value()), 1),
            (true, true)
        );
    }

    #[test]
    fn a_placeholder_expires_with_its_lease() {
        let mut state = MemoryState::default();
        let k = keys("a");
        state.read_claim(k.value(), &new_placeholder("t1"), 100, 0);
        assert_eq!(
            state.read_claim(k.value(), &new_placeholder("t2"), 100, 100),
            None
        );
    }

    #[test]
    fn invalidation_revokes_leases_and_marks_stale() {
        let mut state = MemoryState::default();
        let k = keys("a");
        let v = value();
        state.read_claim(k.value(), &new_placeholder("t1"), 100, 0);
        // A load that began before the invalidation cannot fill.
        assert_eq!(state.invalidate(&k, Removal::MarkStale, 1), (false, false));
        assert_eq!(
            state.fill(&fill(&k, Lease::Placeholder, "t1", &v), 2),
            (false, false)
        );
        // A value is marked in place.
        state.read_claim(k.value(), &new_placeholder("t2"), 100, 3);
        state.fill(&fill(&k, Lease::Placeholder, "t2", &v), 3);
        assert_eq!(state.invalidate(&k, Removal::MarkStale, 4), (true, false));
        let stale = state.get(k.value(), 4).expect("still there");
        assert_eq!(stale[STATE_OFFSET], STALE);
        // Its refresh under the lease key is revoked by the next invalidation.
        let expected = &stale[..envelope::HEADER_LEN];
        assert_eq!(
            state.claim_refresh(&claim(&k, "t3", expected), 5).0,
            Claim::Acquired
        );
        assert_eq!(
            state.claim_refresh(&claim(&k, "t4", expected), 5).0,
            Claim::Busy
        );
        assert_eq!(state.invalidate(&k, Removal::MarkStale, 6), (true, true));
        assert_eq!(
            state.fill(&fill(&k, Lease::Key, "t3", &v), 7),
            (false, false)
        );
    }

    #[test]
    fn a_claim_on_a_changed_value_is_refused() {
        let mut state = MemoryState::default();
        let k = keys("a");
        let v = value();
        state.read_claim(k.value(), &new_placeholder("t1"), 100, 0);
        state.fill(&fill(&k, Lease::Placeholder, "t1", &v), 0);
        assert_eq!(
            state.claim_refresh(&claim(&k, "t2", b"something else"), 1),
            (Claim::Changed, Some(v))
        );
    }

    #[test]
    fn foreign_values_are_deleted_by_invalidation() {
        let mut state = MemoryState::default();
        let k = keys("a");
        state.put(k.value(), b"hello".to_vec(), None, 0);
        assert_eq!(state.invalidate(&k, Removal::MarkStale, 0), (true, false));
        assert_eq!(state.get(k.value(), 0), None);
    }

    #[test]
    fn leases_expire_and_extend() {
        let mut state = MemoryState::default();
        let k = keys("a");
        state.read_claim(k.value(), &new_placeholder("t1"), 1000, 0);
        let extend = |token| Extend {
            keys: &k,
            lease: Lease::Placeholder,
            token,
            lease_ms: 1000,
        };
        assert!(state.extend(&extend("t1"), 900));
        assert!(!state.extend(&extend("t2"), 900));
        assert!(
            state
                .read_claim(k.value(), &new_placeholder("t2"), 1000, 1899)
                .is_some()
        );
        assert_eq!(
            state.read_claim(k.value(), &new_placeholder("t2"), 1000, 1900),
            None
        );
    }

    #[test]
    fn the_log_is_capped() {
        let mut state = MemoryState::default();
        for i in 0..5u8 {
            state.record(&[i], 3);
        }
        let (seq, entries) = state.read_log(1, 10);
        assert_eq!(seq, 5);
        assert_eq!(entries, vec![(3, vec![2]), (4, vec![3]), (5, vec![4])]);
        assert_eq!(state.read_log(5, 10).1, vec![(5, vec![4])]);
    }
}
