//! The invalidation sequence, as this process knows it: how tags and groups
//! are invalidated in O(1).
//!
//! Every invalidation gets the next number of one sequence, kept by the store
//! (an `INCR` on Redis), together with the tags and groups it invalidates;
//! the store keeps the last entries in a log (a capped Redis stream) and
//! announces each on the event channel. A value records the sequence number
//! its loader had seen when it claimed the key, and its tag and groups (see
//! [`crate::envelope`]). So a reader knows, without asking the store, whether
//! a value was written before an invalidation of one of its dependencies:
//!
//! - every dependency's last invalidation is older than the claim → current;
//! - a group was invalidated after the claim → stale (served to stale-on
//!   readers while one caller refreshes, a miss for the others);
//! - its tag was invalidated after the claim → deleted (a miss for everyone:
//!   Python cacheme's tag invalidation deletes);
//! - the claim is older than what this process knows of the sequence (the
//!   log was trimmed, or events were lost beyond recovery) → unknown: treated
//!   as deleted, so the value is reloaded once.
//!
//! A load that was in flight when its group or tag was invalidated carries a
//! claim number from before the invalidation, so its value is never served
//! as current, whenever it is written.
//!
//! [`Stamps`] is that knowledge: the highest sequence number this process has
//! applied (with all before it) and, for the entries since its *horizon*, the
//! last invalidation of each tag and group. It is fed by this process's own
//! invalidations (before they return), by the event subscriber (in order,
//! recovering gaps from the log), and at start-up by the log. It holds at
//! most `capacity` entries; older ones move the horizon.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::envelope::Dependency;

/// What the invalidation sequence says about a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// None of its dependencies was invalidated after its claim.
    Current,
    /// A group it depends on was invalidated after its claim.
    Stale,
    /// Its tag was invalidated after its claim: it is deleted.
    Deleted,
    /// Its claim is older than this process's horizon: reload it.
    Unknown,
}

/// One invalidation of the sequence: its number and the tags and groups it
/// invalidated (key and pattern invalidations have neither).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) tags: Vec<String>,
    pub(crate) groups: Vec<String>,
}

/// What [`Stamps::apply`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It was new: applied.
    New,
    /// Already known (a duplicate, or one's own invalidation echoed back),
    /// or older than the horizon.
    Known,
}

#[derive(Debug, Default)]
struct Table {
    /// Every entry up to here was applied (or skipped past).
    known: u64,
    /// The highest entry applied; entries between `known` and it may be
    /// missing (not yet received).
    latest: u64,
    /// Claims before this are unknown: what was invalidated before it may
    /// not be recorded below.
    horizon: u64,
    /// Entries applied beyond `known`, out of order.
    ahead: BTreeSet<u64>,
    tags: HashMap<Box<str>, u64>,
    groups: HashMap<Box<str>, u64>,
    /// The entries since the horizon that named tags or groups, by number.
    recorded: BTreeMap<u64, Entry>,
}

/// This process's knowledge of the invalidation sequence.
#[derive(Debug)]
pub(crate) struct Stamps {
    /// A copy of `table.latest`, read by every hit without a lock.
    latest: AtomicU64,
    /// The log was read once: until then nothing this process reads or
    /// claims can be judged (a store that is not shared starts synced).
    synced: AtomicBool,
    table: RwLock<Table>,
    capacity: usize,
}

impl Stamps {
    /// An empty table keeping at most `capacity` entries that name tags or groups.
    pub(crate) fn new(capacity: usize, synced: bool) -> Self {
        Stamps {
            latest: AtomicU64::new(0),
            synced: AtomicBool::new(synced),
            table: RwLock::new(Table::default()),
            capacity: capacity.max(1),
        }
    }

    /// Whether the log was read once (see [`Stamps::set_synced`]).
    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// This process has read the invalidation log: its knowledge of the
    /// sequence can be trusted from now on.
    pub(crate) fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// The highest sequence number applied. A load records it as its claim
    /// number when it takes its lease: every invalidation up to it was
    /// recorded by the store before this process heard of it, so the data a
    /// load reads after this point postdates them all.
    pub(crate) fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// Every entry up to this number was applied: the subscriber recovers
    /// what lies between it and a new entry from the log.
    pub(crate) fn known(&self) -> u64 {
        self.read().known
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The verdict on a value claimed at `claim_seq` with these dependencies.
    pub(crate) fn judge<'a>(
        &self,
        claim_seq: u64,
        dependencies: impl IntoIterator<Item = Dependency<'a>>,
    ) -> Verdict {
        #[cfg(test)]
        if mutant::IGNORE_STAMPS.with(std::cell::Cell::get) {
            return Verdict::Current;
        }
        // The common case: nothing was invalidated since the claim.
        if claim_seq >= self.latest() {
            return Verdict::Current;
        }
        let table = self.read();
        if claim_seq < table.horizon {
            return Verdict::Unknown;
        }
        let mut verdict = Verdict::Current;
        for dependency in dependencies {
            let last = match dependency {
                Dependency::Tag(tag) => table.tags.get(tag),
                Dependency::Group(group) => table.groups.get(group),
            };
            if last.is_some_and(|&seq| seq > claim_seq) {
                match dependency {
                    Dependency::Tag(_) => return Verdict::Deleted,
                    Dependency::Group(_) => verdict = Verdict::Stale,
                }
            }
        }
        verdict
    }

    /// Apply an entry of the sequence, in order or not.
    pub(crate) fn apply(&self, entry: &Entry) -> Applied {
        let mut table = self.write();
        if entry.seq <= table.known
            || entry.seq <= table.horizon
            || table.ahead.contains(&entry.seq)
        {
            return Applied::Known;
        }
        for tag in &entry.tags {
            let last = table.tags.entry(tag.as_str().into()).or_default();
            *last = (*last).max(entry.seq);
        }
        for group in &entry.groups {
            let last = table.groups.entry(group.as_str().into()).or_default();
            *last = (*last).max(entry.seq);
        }
        if !entry.tags.is_empty() || !entry.groups.is_empty() {
            table.recorded.insert(entry.seq, entry.clone());
            while table.recorded.len() > self.capacity {
                let (_, oldest) = table
                    .recorded
                    .pop_first()
                    .expect("longer than the capacity");
                table.forget(&oldest);
            }
        }
        table.ahead.insert(entry.seq);
        table.advance();
        table.latest = table.latest.max(entry.seq);
        self.latest.store(table.latest, Ordering::Release);
        Applied::New
    }

    /// Entries up to `seq` that were not applied are lost (trimmed from the
    /// log before this process read them): values claimed before `seq`
    /// become unknown.
    pub(crate) fn skip_to(&self, seq: u64) {
        let mut table = self.write();
        if seq <= table.known {
            return;
        }
        table.horizon = table.horizon.max(seq);
        table.known = seq;
        table.ahead.retain(|&ahead| ahead > seq);
        table.advance();
        // Nothing at or before the horizon is needed any more.
        let kept = table.recorded.split_off(&(seq + 1));
        let dropped = std::mem::replace(&mut table.recorded, kept);
        for entry in dropped.values() {
            table.forget(entry);
        }
        table.latest = table.latest.max(seq);
        self.latest.store(table.latest, Ordering::Release);
    }
}

impl Table {
    /// Count the entries applied out of order that are now contiguous.
    fn advance(&mut self) {
        while self.ahead.remove(&(self.known + 1)) {
            self.known += 1;
        }
    }

    /// Move the horizon past `oldest`, dropping what only it recorded.
    fn forget(&mut self, oldest: &Entry) {
        self.horizon = self.horizon.max(oldest.seq);
        for tag in &oldest.tags {
            if self.tags.get(tag.as_str()) == Some(&oldest.seq) {
                self.tags.remove(tag.as_str());
            }
        }
        for group in &oldest.groups {
            if self.groups.get(group.as_str()) == Some(&oldest.seq) {
                self.groups.remove(group.as_str());
            }
        }
    }
}

/// A mutant for the model check: judges every value current (as if the
/// invalidation sequence were ignored); the model check must catch it.
#[cfg(test)]
pub(crate) mod mutant {
    thread_local! {
        pub(crate) static IGNORE_STAMPS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dependency::{Group, Tag};

    fn entry(seq: u64, tags: &[&str], groups: &[&str]) -> Entry {
        Entry {
            seq,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn values_claimed_before_an_invalidation_of_their_dependencies_are_not_current() {
        let stamps = Stamps::new(100, true);
        let deps = [Tag("cats"), Group("user:7")];
        assert_eq!(stamps.judge(0, deps), Verdict::Current);
        assert_eq!(stamps.apply(&entry(1, &[], &["user:7"])), Applied::New);
        assert_eq!(stamps.judge(0, deps), Verdict::Stale);
        assert_eq!(stamps.judge(1, deps), Verdict::Current, "claimed after it");
        assert_eq!(stamps.apply(&entry(2, &["cats"], &[])), Applied::New);
        assert_eq!(stamps.judge(1, deps), Verdict::Deleted);
        assert_eq!(
            stamps.judge(0, deps),
            Verdict::Deleted,
            "a tag wins over a group"
        );
        // Other dependencies are untouched.
        assert_eq!(
            stamps.judge(0, [Tag("dogs"), Group("user:8")]),
            Verdict::Current
        );
    }

    #[test]
    fn entries_apply_out_of_order_and_known_counts_the_contiguous_ones() {
        let stamps = Stamps::new(100, true);
        assert_eq!(stamps.apply(&entry(1, &[], &[])), Applied::New);
        assert_eq!(stamps.apply(&entry(1, &[], &[])), Applied::Known);
        assert_eq!(stamps.apply(&entry(3, &["cats"], &[])), Applied::New);
        assert_eq!((stamps.known(), stamps.latest()), (1, 3));
        // Entry 3 counts at once, although 2 has not arrived.
        assert_eq!(stamps.judge(2, [Tag("cats")]), Verdict::Deleted);
        assert_eq!(stamps.apply(&entry(2, &[], &[])), Applied::New);
        assert_eq!((stamps.known(), stamps.latest()), (3, 3));
        assert_eq!(stamps.apply(&entry(3, &["cats"], &[])), Applied::Known);
    }

    #[test]
    fn the_horizon_moves_past_trimmed_entries() {
        let stamps = Stamps::new(2, true);
        stamps.apply(&entry(1, &[], &["a"]));
        stamps.apply(&entry(2, &[], &["b"]));
        stamps.apply(&entry(3, &[], &["c"]));
        // Entry 1 was forgotten: claims before it are unknown.
        assert_eq!(stamps.judge(0, [Group("z")]), Verdict::Unknown);
        assert_eq!(stamps.judge(1, [Group("a")]), Verdict::Current);
        assert_eq!(stamps.judge(1, [Group("b")]), Verdict::Stale);
    }

    #[test]
    fn skipping_lost_entries_makes_older_claims_unknown() {
        let stamps = Stamps::new(10, true);
        stamps.apply(&entry(1, &["cats"], &[]));
        stamps.apply(&entry(7, &["dogs"], &[]));
        stamps.skip_to(5);
        assert_eq!((stamps.known(), stamps.latest()), (5, 7));
        assert_eq!(stamps.judge(4, [Tag("birds")]), Verdict::Unknown);
        assert_eq!(stamps.judge(5, [Tag("cats")]), Verdict::Current);
        assert_eq!(stamps.judge(5, [Tag("dogs")]), Verdict::Deleted);
        assert_eq!(stamps.apply(&entry(6, &[], &[])), Applied::New);
        assert_eq!(stamps.known(), 7);
    }
}
