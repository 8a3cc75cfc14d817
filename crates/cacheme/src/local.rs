//! The local tier: an in-process cache in front of the store, for the node
//! types and functions that ask for one (`local_ttl`, `local_capacity`),
//! kept coherent across processes by invalidation events.
//!
//! - Every invalidation publishes an [`Event`] on the cache's channel (after
//!   the store has changed) and applies it to its own process's tiers before
//!   it returns; every other process applies it when it arrives.
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
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::spec::{LocalSpec, Spec};
use crate::stats::Stats;

/// What an invalidation tells the local tiers of every process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Event {
    /// Cache keys whose values changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) keys: Vec<String>,
    /// Tags whose every value was deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// A pattern invalidation: drop everything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) everything: bool,
}

/// The first byte of an event message on the channel (`F` is a fill).
pub(crate) const EVENT: u8 = b'I';

impl Event {
    /// The message published on the channel.
    pub(crate) fn message(&self) -> Vec<u8> {
        let mut message = vec![EVENT];
        // Plain strings and booleans: encoding cannot fail.
        message.extend(rmp_serde::to_vec(self).unwrap_or_default());
        message
    }

    /// Read a message published by [`Event::message`].
    pub(crate) fn parse(payload: &[u8]) -> Option<Event> {
        rmp_serde::from_slice(payload).ok()
    }
}

/// A local entry: the decoded value, and when it expires.
#[derive(Clone)]
struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    expires_at_ms: u64,
}

/// Counts evictions; evicted entries are dropped after the shard lock is released.
#[derive(Clone)]
struct CountEvictions(Arc<Stats>);

impl quick_cache::Lifecycle<String, Entry> for CountEvictions {
    type RequestState = [Option<(String, Entry)>; 2];

    fn on_evict(&self, state: &mut Self::RequestState, key: String, entry: Entry) {
        self.0.local_eviction();
        if let Some(slot) = state.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some((key, entry));
        }
    }
}

type Entries = quick_cache::sync::Cache<
    String,
    Entry,
    quick_cache::UnitWeighter,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// One node type's or function's tier.
pub(crate) struct Tier {
    tag: &'static str,
    ttl_ms: u64,
    entries: Entries,
    /// The tiers' coarse clock (ms since the epoch), kept by the sweeper, so
    /// that a hit reads no clock.
    clock: Arc<AtomicU64>,
}

/// What the tiers and their sweeper share.
struct Shared {
    tiers: ArcSwap<Vec<(usize, Arc<Tier>)>>,
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
}

impl LocalTiers {
    pub(crate) fn new(connected: bool) -> Self {
        LocalTiers {
            shared: Arc::new(Shared {
                tiers: ArcSwap::from_pointee(Vec::new()),
                clock: Arc::new(AtomicU64::new(now_ms())),
            }),
            create: Mutex::new(()),
            seq: RwLock::new(0),
            connected: AtomicBool::new(connected),
        }
    }

    /// Look `key` up in the tier of `spec`: the value on a hit; on a miss,
    /// the tier to fill (`Err(Some)`), or `Err(None)` when `spec` has no tier
    /// or the tiers are not in use (events are not flowing).
    pub(crate) fn get<V: 'static>(
        &self,
        spec: &'static Spec,
        stats: &Arc<Stats>,
        key: &str,
        clone: fn(&V) -> V,
    ) -> Result<V, Option<Arc<Tier>>> {
        let Some(local) = spec.local else {
            return Err(None);
        };
        if !self.connected.load(Ordering::Acquire) {
            return Err(None);
        }
        let id = std::ptr::from_ref(spec) as usize;
        {
            let tiers = self.shared.tiers.load();
            if let Some((_, tier)) = tiers.iter().find(|(i, _)| *i == id) {
                return match tier.get(key, clone) {
                    Some(value) => Ok(value),
                    None => Err(Some(tier.clone())),
                };
            }
        }
        Err(Some(self.create(id, spec.tag, local, stats)))
    }

    /// The tier of `spec`, made on first use.
    #[cfg(test)]
    pub(crate) fn tier(&self, spec: &'static Spec, stats: &Arc<Stats>) -> Option<Arc<Tier>> {
        match self.get::<()>(spec, stats, "", |_| ()) {
            Ok(()) => None,
            Err(tier) => tier,
        }
    }

    fn create(
        &self,
        id: usize,
        tag: &'static str,
        local: LocalSpec,
        stats: &Arc<Stats>,
    ) -> Arc<Tier> {
        let _creating = self.create.lock().unwrap_or_else(PoisonError::into_inner);
        let tiers = self.shared.tiers.load_full();
        if let Some((_, tier)) = tiers.iter().find(|(i, _)| *i == id) {
            return tier.clone();
        }
        let tier = Arc::new(Tier::new(
            tag,
            local,
            stats.clone(),
            self.shared.clock.clone(),
        ));
        let mut grown = (*tiers).clone();
        grown.push((id, tier.clone()));
        self.shared.tiers.store(Arc::new(grown));
        if tiers.is_empty() {
            Sweeper::spawn(Arc::downgrade(&self.shared));
        }
        tier
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
        tier: &Tier,
        key: &str,
        value: V,
        seq: u64,
    ) {
        let current = self.seq.read().unwrap_or_else(PoisonError::into_inner);
        if *current == seq && self.connected.load(Ordering::Acquire) {
            let entry = Entry {
                value: Arc::new(value),
                expires_at_ms: now_ms() + tier.ttl_ms,
            };
            tier.entries.insert(key.to_owned(), entry);
        }
    }

    /// Apply an invalidation event.
    pub(crate) fn apply(&self, event: &Event, stats: &Stats) {
        let mut seq = self.seq.write().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        stats.local_invalidation();
        for (_, tier) in self.shared.tiers.load().iter() {
            if event.everything || event.tags.iter().any(|t| t == tier.tag) {
                tier.entries.clear();
            } else {
                for key in &event.keys {
                    tier.entries.remove(key.as_str());
                }
            }
        }
    }

    /// The event subscription came up or went down: either way, what the
    /// tiers hold may have missed events, so they are emptied; while it is
    /// down they are not used.
    pub(crate) fn set_connected(&self, connected: bool) {
        let mut seq = self.seq.write().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        self.connected.store(connected, Ordering::Release);
        for (_, tier) in self.shared.tiers.load().iter() {
            tier.entries.clear();
        }
    }
}

impl Tier {
    fn new(tag: &'static str, local: LocalSpec, stats: Arc<Stats>, clock: Arc<AtomicU64>) -> Self {
        let capacity = local.capacity.max(1);
        let entries = Entries::with(
            usize::try_from(capacity).unwrap_or(usize::MAX),
            capacity,
            quick_cache::UnitWeighter,
            quick_cache::DefaultHashBuilder::default(),
            CountEvictions(stats),
        );
        Tier {
            tag,
            ttl_ms: local.ttl.as_millis() as u64,
            entries,
            clock,
        }
    }

    /// A copy of the value under `key`, if there is one of type `V` that has
    /// not expired.
    fn get<V: 'static>(&self, key: &str, clone: fn(&V) -> V) -> Option<V> {
        let entry = self.entries.get(key)?;
        if entry.expires_at_ms <= self.clock.load(Ordering::Relaxed) {
            return None;
        }
        entry.value.downcast_ref::<V>().map(clone)
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
            let tiers = shared.tiers.load_full();
            // Tick at a tenth of the shortest local ttl, within 10 ms .. 1 s.
            let shortest = tiers.iter().map(|(_, t)| t.ttl_ms).min().unwrap_or(1000);
            let tick = (shortest / 10).clamp(10, 1000);
            // Drop expired entries about four times per ttl.
            if now.saturating_sub(last_sweep) >= (shortest / 4).max(tick) {
                last_sweep = now;
                for (_, tier) in tiers.iter() {
                    tier.entries.retain(|_, entry| entry.expires_at_ms > now);
                }
            }
            drop((tiers, shared));
            std::thread::sleep(Duration::from_millis(tick));
        }
    }
}

fn now_ms() -> u64 {
    crate::storage::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Kind;

    static SPEC: Spec = Spec {
        local: Some(LocalSpec {
            ttl: std::time::Duration::from_secs(60),
            capacity: 100,
        }),
        ..Spec::new("t", "tag", Kind::Function)
    };

    #[test]
    fn events_round_trip_through_the_channel_format() {
        let event = Event {
            keys: vec!["cat:1".into()],
            tags: vec!["cats".into()],
            everything: false,
        };
        let message = event.message();
        assert_eq!(message[0], EVENT);
        assert_eq!(Event::parse(&message[1..]), Some(event));
        assert_eq!(Event::parse(b"\xff garbage"), None);
    }

    #[test]
    fn an_event_during_a_read_keeps_the_old_value_out() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier(&SPEC, &stats).expect("the spec asks for a tier");
        let seq = tiers.seq();
        // The read fetched the old value; meanwhile an event arrives.
        tiers.apply(
            &Event {
                keys: vec!["k".into()],
                ..Event::default()
            },
            &stats,
        );
        tiers.insert(&tier, "k", "old".to_owned(), seq);
        assert_eq!(tier.get("k", String::clone), None);
        // A read that began after the event may fill.
        let seq = tiers.seq();
        tiers.insert(&tier, "k", "new".to_owned(), seq);
        assert_eq!(tier.get("k", String::clone).as_deref(), Some("new"));
    }

    #[test]
    fn events_remove_keys_tags_or_everything() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier(&SPEC, &stats).expect("tier");
        let fill = |key: &str| tiers.insert(&tier, key, key.to_owned(), tiers.seq());
        fill("a");
        fill("b");
        tiers.apply(
            &Event {
                keys: vec!["a".into()],
                ..Event::default()
            },
            &stats,
        );
        assert_eq!(tier.get("a", String::clone), None);
        assert!(tier.get("b", String::clone).is_some());
        tiers.apply(
            &Event {
                tags: vec!["other".into()],
                ..Event::default()
            },
            &stats,
        );
        assert!(tier.get("b", String::clone).is_some());
        tiers.apply(
            &Event {
                tags: vec!["tag".into()],
                ..Event::default()
            },
            &stats,
        );
        assert_eq!(tier.get("b", String::clone), None);
        fill("c");
        tiers.apply(
            &Event {
                everything: true,
                ..Event::default()
            },
            &stats,
        );
        assert_eq!(tier.get("c", String::clone), None);
        assert_eq!(stats.snapshot().local_invalidation, 4);
    }

    #[test]
    fn a_lost_subscription_empties_and_disables_the_tiers() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier(&SPEC, &stats).expect("tier");
        tiers.insert(&tier, "a", "a".to_owned(), tiers.seq());
        tiers.set_connected(false);
        assert_eq!(tier.get("a", String::clone), None);
        assert!(tiers.tier(&SPEC, &stats).is_none(), "not used while down");
        tiers.set_connected(true);
        assert!(tiers.tier(&SPEC, &stats).is_some());
    }

    #[test]
    fn a_value_of_another_type_is_not_returned() {
        let stats = Arc::new(Stats::default());
        let tiers = LocalTiers::new(true);
        let tier = tiers.tier(&SPEC, &stats).expect("tier");
        tiers.insert(&tier, "a", 7u32, tiers.seq());
        assert_eq!(tier.get("a", String::clone), None);
    }
}
