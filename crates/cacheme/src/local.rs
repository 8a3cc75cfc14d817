//! The local tier: an in-process cache in front of the store, for the node
//! types and functions that ask for one (`local_ttl`, `local_capacity`),
//! kept coherent across processes by invalidation events.
//!
//! - Every invalidation is announced on the cache's event channel (after the
//!   store has changed) and applied to its own process's tiers before it
//!   returns; every other process applies it when it arrives: keys are
//!   removed, a pattern invalidation empties every tier, a tag empties its
//!   tier.
//! - An entry keeps its value's claim number and groups, and every hit is
//!   judged by the invalidation sequence like a remote one (see
//!   `crate::stamps`), so group invalidations need no scan of the tiers.
//! - An entry lives at most `local_ttl`, and never past its value's own TTL
//!   or refresh age.
//! - A value read from the store is put in the tier only if no event was
//!   applied since the read began (a sequence number, checked and bumped
//!   under a lock), so a read racing an invalidation cannot re-insert the
//!   value the invalidation removed.
//! - A process whose event subscription is down serves nothing from its
//!   tiers and clears them: it may have missed events.
//!
//! Entries are values, decoded once and cloned out on each hit.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use crate::envelope::{Dependency, Envelope};
use crate::events::Invalidated;
use crate::spec::{LocalSpec, Spec};
use crate::stamps::{Stamps, Verdict};
use crate::stats::Stats;

/// A local entry: the decoded value, when it expires, and how to copy it out
/// (the value type's `Clone::clone`, given by the lookup, so that a tier needs
/// no `Clone` bound of its own).
struct Held<V> {
    value: V,
    expires_at_ms: u64,
    clone: fn(&V) -> V,
    /// The value's claim number.
    claim_seq: u64,
    /// Its groups, when it has any (its tag is its tier's).
    groups: Option<Arc<[Box<str>]>>,
}

impl<V> Clone for Held<V> {
    fn clone(&self) -> Self {
        Held {
            value: (self.clone)(&self.value),
            expires_at_ms: self.expires_at_ms,
            clone: self.clone,
            claim_seq: self.claim_seq,
            groups: self.groups.clone(),
        }
    }
}

/// A value to keep in a tier: the value, how to copy it out, its stored
/// envelope (its claim number and groups), and when it must go at the latest.
pub(crate) struct NewEntry<'e, V> {
    pub(crate) value: V,
    pub(crate) clone: fn(&V) -> V,
    pub(crate) envelope: &'e Envelope<'e>,
    pub(crate) until_ms: u64,
}

/// Counts evictions; evicted entries are dropped after the shard lock is released.
#[derive(Clone)]
struct CountEvictions(Arc<Stats>, &'static Spec);

impl<V> quick_cache::Lifecycle<String, Held<V>> for CountEvictions {
    type RequestState = [Option<(String, Held<V>)>; 2];

    fn on_evict(&self, state: &mut Self::RequestState, key: String, entry: Held<V>) {
        self.0.of(self.1).local_eviction();
        if let Some(slot) = state.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some((key, entry));
        }
    }
}

type Entries<V> = quick_cache::sync::Cache<
    String,
    Held<V>,
    quick_cache::UnitWeighter,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// One node type's or function's tier, holding values of one type.
struct TypedTier<V> {
    tag: &'static str,
    ttl_ms: u64,
    entries: Entries<V>,
    /// The tiers' coarse clock (ms since the epoch), kept by the sweeper, so
    /// that a hit reads no clock.
    clock: Arc<AtomicU64>,
}

/// A tier, whatever the type of its values: what events and the sweeper need.
pub(crate) trait Tier: Send + Sync {
    /// The tag of the node type or function it belongs to.
    fn tag(&self) -> &'static str;
    /// Its entries' time to live.
    fn ttl_ms(&self) -> u64;
    /// Drop one key.
    fn remove(&self, key: &str);
    /// Drop everything.
    fn clear(&self);
    /// Drop the entries that expired by `now_ms`.
    fn drop_expired(&self, now_ms: u64);
    /// For the typed access of lookups.
    fn as_any(&self) -> &dyn Any;
}

impl<V: Send + Sync + 'static> Tier for TypedTier<V> {
    fn tag(&self) -> &'static str {
        self.tag
    }
    fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }
    fn remove(&self, key: &str) {
        self.entries.remove(key);
    }
    fn clear(&self) {
        self.entries.clear();
    }
    fn drop_expired(&self, now_ms: u64) {
        self.entries.retain(|_, held| held.expires_at_ms > now_ms);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The most tiers one cache holds: one per node type or function that asks
/// for one. Past it, further ones go without (and say so once).
const MAX_TIERS: usize = 64;

/// The tiers, by the address of their `Spec`: append-only slots, so that a
/// hit finds its tier with a few atomic loads and no lock.
struct Slots([OnceLock<(usize, Arc<dyn Tier>)>; MAX_TIERS]);

impl Slots {
    fn iter(&self) -> impl Iterator<Item = &(usize, Arc<dyn Tier>)> {
        self.0.iter().map_while(OnceLock::get)
    }

    fn find(&self, id: usize) -> Option<&Arc<dyn Tier>> {
        self.iter().find(|(i, _)| *i == id).map(|(_, tier)| tier)
    }
}

/// What the tiers and their sweeper share.
struct Shared {
    tiers: Slots,
    clock: Arc<AtomicU64>,
}

/// The tiers of one cache.
pub(crate) struct LocalTiers {
    shared: Arc<Shared>,
    create: Mutex<()>,
    /// Bumped by every event; fills check it under the read lock.
    seq: RwLock<u64>,
    /// Events are flowing (always for the memory store).
    connected: AtomicBool,
    /// The "too many tiers" warning was given.
    full_reported: AtomicBool,
}

impl LocalTiers {
    pub(crate) fn new(connected: bool) -> Self {
        LocalTiers {
            shared: Arc::new(Shared {
                tiers: Slots(std::array::from_fn(|_| OnceLock::new())),
                clock: Arc::new(AtomicU64::new(now_ms())),
            }),
            create: Mutex::new(()),
            seq: RwLock::new(0),
            connected: AtomicBool::new(connected),
            full_reported: AtomicBool::new(false),
        }
    }

    /// Look `key` up in the tier of `spec`: the value on a hit; on a miss,
    /// the tier to fill (`Err(Some)`), or `Err(None)` when `spec` has no tier
    /// or the tiers are not in use (events are not flowing).
    pub(crate) fn get<V: Send + Sync + 'static>(
        &self,
        spec: &'static Spec,
        stats: &Arc<Stats>,
        stamps: &Stamps,
        key: &str,
    ) -> Result<V, Option<Arc<dyn Tier>>> {
        let Some(local) = spec.local() else {
            return Err(None);
        };
        if !self.connected.load(Ordering::Acquire) {
            return Err(None);
        }
        let id = std::ptr::from_ref(spec) as usize;
        if let Some(tier) = self.shared.tiers.find(id) {
            // Another value type under the same spec: no tier for it.
            let Some(typed) = tier.as_any().downcast_ref::<TypedTier<V>>() else {
                return Err(None);
            };
            return match typed.get(key, stamps) {
                Some(value) => Ok(value),
                None => Err(Some(tier.clone())),
            };
        }
        Err(self.create::<V>(id, spec, local, stats))
    }

    /// The tier of `spec`, made on first use.
    #[cfg(test)]
    pub(crate) fn tier<V: Send + Sync + 'static>(
        &self,
        spec: &'static Spec,
        stats: &Arc<Stats>,
    ) -> Option<Arc<dyn Tier>> {
        match self.get::<V>(spec, stats, &Stamps::new(1, true), "") {
            Ok(_) => None,
            Err(tier) => tier,
        }
    }

    fn create<V: Send + Sync + 'static>(
        &self,
        id: usize,
        spec: &'static Spec,
        local: LocalSpec,
        stats: &Arc<Stats>,
    ) -> Option<Arc<dyn Tier>> {
        let tag = spec.tag();
        let _creating = self.create.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tier) = self.shared.tiers.find(id) {
            return Some(tier.clone());
        }
        let Some(slot) = self.shared.tiers.0.iter().find(|slot| slot.get().is_none()) else {
            if !self.full_reported.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    tag,
                    max = MAX_TIERS,
                    "cacheme: too many local tiers in one cache; this one goes without"
                );
            }
            return None;
        };
        let first = self.shared.tiers.iter().next().is_none();
        let capacity = local.capacity().max(1);
        let tier: Arc<dyn Tier> = Arc::new(TypedTier::<V> {
            tag,
            ttl_ms: local.ttl().as_millis() as u64,
            entries: Entries::with(
                usize::try_from(capacity).unwrap_or(usize::MAX),
                capacity,
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions(stats.clone(), spec),
            ),
            clock: self.shared.clock.clone(),
        });
        // Under the creation lock: nobody else fills this slot.
        let _ = slot.set((id, tier.clone()));
        if first {
            Sweeper::spawn(Arc::downgrade(&self.shared));
        }
        Some(tier)
    }

    /// Whether events are flowing, so that the tiers are in use.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The sequence number to give [`insert`](Self::insert) after a read.
    pub(crate) fn seq(&self) -> u64 {
        *self.seq.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep `value` under `key` unless an event was applied since `seq`.
    pub(crate) fn insert<V: Send + Sync + 'static>(
        &self,
        tier: &dyn Tier,
        key: &str,
        entry: NewEntry<'_, V>,
        seq: u64,
    ) {
        let NewEntry {
            value,
            clone,
            envelope,
            until_ms,
        } = entry;
        let Some(typed) = tier.as_any().downcast_ref::<TypedTier<V>>() else {
            return;
        };
        let groups: Vec<Box<str>> = envelope
            .dependencies()
            .filter_map(|dependency| match dependency {
                Dependency::Group(group) => Some(group.into()),
                Dependency::Tag(_) => None,
            })
            .collect();
        let current = self.seq.read().unwrap_or_else(PoisonError::into_inner);
        if *current == seq && self.connected.load(Ordering::Acquire) {
            let held = Held {
                value,
                expires_at_ms: now_ms().saturating_add(typed.ttl_ms).min(until_ms),
                clone,
                claim_seq: envelope.claim_seq,
                groups: (!groups.is_empty()).then(|| Arc::from(groups)),
            };
            typed.entries.insert(key.to_owned(), held);
        }
    }

    /// Apply an invalidation (groups need nothing here: entries are judged
    /// by the invalidation sequence on every hit).
    pub(crate) fn apply(&self, invalidated: &Invalidated, stats: &Stats) {
        let mut seq = self.seq.write().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        stats.local_invalidation();
        for (_, tier) in self.shared.tiers.iter() {
            if invalidated.everything || invalidated.tags.iter().any(|t| t == tier.tag()) {
                tier.clear();
            } else {
                for key in &invalidated.keys {
                    tier.remove(key);
                }
            }
        }
    }

    /// Empty every tier (events were lost: what they hold cannot be trusted).
    pub(crate) fn clear(&self) {
        let mut seq = self.seq.write().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        for (_, tier) in self.shared.tiers.iter() {
            tier.clear();
        }
    }

    /// The event subscription came up or went down: either way, what the
    /// tiers hold may have missed events, so they are emptied; while it is
    /// down they are not used.
    pub(crate) fn set_connected(&self, connected: bool) {
        let mut seq = self.seq.write().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        self.connected.store(connected, Ordering::Release);
        for (_, tier) in self.shared.tiers.iter() {
            tier.clear();
        }
    }
}

impl<V> TypedTier<V> {
    /// A copy of the value under `key`, if it has not expired and no
    /// invalidation of its tag or groups came after its claim.
    fn get(&self, key: &str, stamps: &Stamps) -> Option<V> {
        let held = self.entries.get(key)?;
        let clock = self.clock.load(Ordering::Relaxed);
        // The coarse clock may be up to a tick (at most 1 s) behind: an
        // entry that close to its end is judged by the real clock.
        if held.expires_at_ms <= clock
            || (held.expires_at_ms - clock <= MAX_TICK_MS && held.expires_at_ms <= now_ms())
        {
            return None;
        }
        if held.claim_seq >= stamps.latest() {
            return Some(held.value);
        }
        let groups = held.groups.iter().flat_map(|groups| groups.iter());
        let dependencies = std::iter::once(Dependency::Tag(self.tag))
            .chain(groups.map(|group| Dependency::Group(group)));
        match stamps.judge(held.claim_seq, dependencies) {
            Verdict::Current => Some(held.value),
            _ => {
                self.entries.remove(key);
                None
            }
        }
    }
}

/// Keeps the coarse clock and drops expired entries, on its own thread, for
/// as long as the tiers live.
struct Sweeper;

impl Sweeper {
    fn spawn(shared: Weak<Shared>) {
        let spawned = std::thread::Builder::new()
            .name("cacheme-local-sweeper".into())
            .spawn(move || Sweeper::run(&shared));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cacheme: cannot start the local tier sweeper; entries expire only when replaced");
        }
    }

    fn run(shared: &Weak<Shared>) {
        let mut last_sweep = 0;
        while let Some(shared) = shared.upgrade() {
            let now = now_ms();
            shared.clock.store(now, Ordering::Relaxed);
            let tiers: Vec<Arc<dyn Tier>> = shared.tiers.iter().map(|(_, t)| t.clone()).collect();
            // Tick at a tenth of the shortest local ttl, within 10 ms .. 1 s.
            let shortest = tiers.iter().map(|t| t.ttl_ms()).min().unwrap_or(1000);
            let tick = (shortest / 10).clamp(10, MAX_TICK_MS);
            // Drop expired entries about four times per ttl.
            if now.saturating_sub(last_sweep) >= (shortest / 4).max(tick) {
                last_sweep = now;
                for tier in &tiers {
                    tier.drop_expired(now);
                }
            }
            drop((tiers, shared));
            std::thread::sleep(Duration::from_millis(tick));
        }
    }
}

/// The coarse clock's longest tick (ms).
const MAX_TICK_MS: u64 = 1000;

fn now_ms() -> u64 {
    crate::storage::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Invalidated;
    static SPEC: Spec = Spec::function("t")
        .with_tag("tag")
        .with_local(LocalSpec::new(std::time::Duration::from_secs(60), 100));

    /// The tiers, and a lookup of `key` in SPEC's tier of Strings.
    fn get(tiers: &LocalTiers, stats: &Arc<Stats>, key: &str) -> Option<String> {
        tiers
            .get::<String>(&SPEC, stats, &Stamps::new(1, true), key)
            .ok()
    }

    fn fill(tiers: &LocalTiers, tier: &Arc<dyn Tier>, key: &str, value: &str, seq: u64) {
        let bytes = crate::envelope::seal(
            &crate::envelope::Header {
                codec: crate::Codec::MessagePack,
                written_at_ms: 0,
                claim_seq: 0,
                fresh_until_ms: 0,
                dependencies: &[],
            },
            &[],
        )
        .expect("no names");
        let envelope = Envelope::parse(&bytes).expect("sealed");
        let entry = NewEntry {
            value: value.to_owned(),
            clone: String::clone,
            envelope: &envelope,
            until_ms: u64::MAX,
        };
        tiers.insert(&**tier, key, entry, seq);
    }

    #[test]
    fn an_event_during_a_read_keeps_the_old_value_out() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers
            .tier::<String>(&SPEC, &stats)
            .expect("the spec asks for a tier");
        let seq = tiers.seq();
        // The read fetched the old value; meanwhile an event arrives.
        tiers.apply(
            &Invalidated {
                keys: vec!["k".into()],
                ..Invalidated::default()
            },
            &stats,
        );
        fill(&tiers, &tier, "k", "old", seq);
        assert_eq!(get(&tiers, &stats, "k"), None);
        // A read that began after the event may fill.
        fill(&tiers, &tier, "k", "new", tiers.seq());
        assert_eq!(get(&tiers, &stats, "k").as_deref(), Some("new"));
    }

    #[test]
    fn events_remove_keys_tags_or_everything() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier::<String>(&SPEC, &stats).expect("tier");
        let put = |key: &str| fill(&tiers, &tier, key, key, tiers.seq());
        put("a");
        put("b");
        tiers.apply(
            &Invalidated {
                keys: vec!["a".into()],
                ..Invalidated::default()
            },
            &stats,
        );
        assert_eq!(get(&tiers, &stats, "a"), None);
        assert!(get(&tiers, &stats, "b").is_some());
        tiers.apply(
            &Invalidated {
                tags: vec!["other".into()],
                ..Invalidated::default()
            },
            &stats,
        );
        assert!(get(&tiers, &stats, "b").is_some());
        tiers.apply(
            &Invalidated {
                tags: vec!["tag".into()],
                ..Invalidated::default()
            },
            &stats,
        );
        assert_eq!(get(&tiers, &stats, "b"), None);
        put("c");
        tiers.apply(
            &Invalidated {
                everything: true,
                ..Invalidated::default()
            },
            &stats,
        );
        assert_eq!(get(&tiers, &stats, "c"), None);
        assert_eq!(stats.snapshot().local_invalidation, 4);
    }

    #[test]
    fn a_lost_subscription_empties_and_disables_the_tiers() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier::<String>(&SPEC, &stats).expect("tier");
        fill(&tiers, &tier, "a", "a", tiers.seq());
        tiers.set_connected(false);
        assert!(
            tiers.tier::<String>(&SPEC, &stats).is_none(),
            "not used while down"
        );
        tiers.set_connected(true);
        assert_eq!(get(&tiers, &stats, "a"), None, "emptied");
        assert!(tiers.tier::<String>(&SPEC, &stats).is_some());
    }

    #[test]
    fn values_of_another_type_have_no_tier() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier::<String>(&SPEC, &stats).expect("tier");
        fill(&tiers, &tier, "a", "a", tiers.seq());
        assert!(
            tiers
                .get::<u32>(&SPEC, &stats, &Stamps::new(1, true), "a")
                .is_err()
        );
        assert!(tiers.tier::<u32>(&SPEC, &stats).is_none());
    }

    #[test]
    fn expired_entries_are_not_served() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier::<String>(&SPEC, &stats).expect("tier");
        fill(&tiers, &tier, "a", "a", tiers.seq());
        assert!(get(&tiers, &stats, "a").is_some());
        // The coarse clock passes the entry's expiry (ttl 60 s).
        tiers
            .shared
            .clock
            .fetch_add(61_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get(&tiers, &stats, "a"), None);
    }
}
