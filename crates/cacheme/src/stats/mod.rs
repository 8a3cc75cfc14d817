//! Counters a cache keeps about itself: in total, and per node type or
//! cached function (by its spec's name), with a load-time and a
//! remote-read-time histogram per node.
//!
//! A counter is a relaxed atomic add. A call finds its node's counters by
//! the address of its `&'static Spec` in a fixed open-addressed table (a
//! hash, one or two atomic loads, no lock): that is all a local hit pays on
//! top of the totals. Histograms (hdrhistogram, microseconds, two
//! significant digits) sit behind a mutex per node, taken once per remote
//! read and once per load.

#[cfg(feature = "metrics")]
pub(crate) mod facade;
pub(crate) mod fleet;
mod latency;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::spec::Spec;

pub use latency::Latency;
pub(crate) use latency::Recorder;

/// A span for one call of a node (`$level`: `DEBUG` or `TRACE`), with its
/// `node`, its `key` (unless `Settings::redact_keys`) and an empty
/// `outcome` to record when it ends. Costs a relaxed load when no
/// subscriber wants it.
macro_rules! span {
    ($level:ident, $name:literal, $lookup:expr, $settings:expr) => {{
        let span = tracing::span!(
            tracing::Level::$level,
            $name,
            node = $lookup.spec.name(),
            key = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        if !span.is_disabled() && !$settings.redact_keys {
            span.record("key", &*$lookup.key);
        }
        span
    }};
}
pub(crate) use span;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters, updated with relaxed atomics.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( $name: AtomicU64, )*
        }

        impl Counters {
            $(
                pub(crate) fn $name(&self) {
                    self.$name.fetch_add(1, Ordering::Relaxed);
                }
            )*

            pub(crate) fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }

        // (Every counter, though some only ever count in the totals.)
        #[allow(dead_code)]
        impl Counted<'_> {
            $(
                #[inline]
                pub(crate) fn $name(&self) {
                    self.totals.$name();
                    if let Some(node) = self.node {
                        node.counters.$name();
                    }
                }
            )*
        }

        /// A copy of a cache's counters at one moment: the cache's totals
        /// ([`Cache::stats`](crate::Cache::stats)) or one node's
        /// ([`NodeStats::stats`]).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        #[non_exhaustive]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl StatsSnapshot {
            /// Every counter with its name, in a fixed order.
            ///
            /// ```
            /// let stats = cacheme::StatsSnapshot::default();
            /// assert!(stats.fields().iter().any(|(name, value)| *name == "hit" && *value == 0));
            /// ```
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }

            /// Add `other`'s counts to these (to sum processes or nodes).
            pub fn add(&mut self, other: &StatsSnapshot) {
                $( self.$name = self.$name.saturating_add(other.$name); )*
            }
        }
    };
}

counters! {
    /// Values served from the store (fresh or stale) or from another caller's read.
    hit,
    /// Of those, stale values served while a refresh ran.
    stale_hit,
    /// Calls that found no servable value.
    miss,
    /// Loader runs started by this process.
    load,
    /// Loader runs that returned an error.
    load_error,
    /// Loaded values stored.
    fill,
    /// Fills refused because an invalidation revoked the lease meanwhile.
    fill_revoked,
    /// Times a caller waited for another caller's load.
    wait,
    /// Of those waits, the ones ended by an announcement (a fill, a released
    /// or revoked lease) rather than by the interval running out.
    woken,
    /// Callers that spent their wait budget and loaded for themselves.
    wait_exhausted,
    /// Callers that waited in this process for a concurrent caller's read or load.
    coalesced,
    /// Values under our keys that could not be read (foreign, truncated, newer
    /// format, or a payload that no longer decodes).
    unreadable,
    /// Loaded values not stored because they exceed `max_value_size` or do not serialize.
    not_stored,
    /// Requests sent to the store: one round trip each (a pipeline or a
    /// script is one request).
    store_request,
    /// Store operations that failed (error or timeout).
    store_error,
    /// Of those, the ones a Redis Cluster refused as touching several hash
    /// slots (`CROSSSLOT`): a bug, as every operation touches one slot.
    cross_slot_error,
    /// Store operations not sent because the circuit breaker was open.
    short_circuited,
    /// Times the circuit breaker opened.
    breaker_opened,
    /// Keys invalidated (marked stale or deleted) by this process.
    invalidated,
    /// Values served from the local tier (no store operation).
    local_hit,
    /// Lookups of a local tier that found nothing there.
    local_miss,
    /// Local entries evicted for room.
    local_eviction,
    /// Invalidation events applied to the local tiers (from this process
    /// or from others).
    local_invalidation,
    /// Expired values served because their reload failed, timed out, or
    /// outlasted the caller's wait (fail-safe).
    fail_safe_served,
    /// Loads that outlasted the hard timeout.
    load_timeout,
    /// Invalidations queued because the store could not be reached.
    invalidation_queued,
    /// Queued invalidations that ran later.
    invalidation_retried,
    /// Invalidations lost: the queue was full, or a retry failed for good.
    invalidation_dropped,
}

impl StatsSnapshot {
    /// Values served (from the store, the local tier or another caller's
    /// read) over the calls that were served or missed: `(hit + local_hit) /
    /// (hit + local_hit + miss)`, or `None` before any call.
    ///
    /// ```
    /// let mut stats = cacheme::StatsSnapshot::default();
    /// assert_eq!(stats.hit_ratio(), None);
    /// stats.hit = 3;
    /// stats.miss = 1;
    /// assert_eq!(stats.hit_ratio(), Some(0.75));
    /// ```
    pub fn hit_ratio(&self) -> Option<f64> {
        let served = self.hit.saturating_add(self.local_hit);
        let calls = served.saturating_add(self.miss);
        (calls > 0).then(|| served as f64 / calls as f64)
    }
}

/// One node type's or cached function's counters and histograms
/// ([`Cache::node_stats`](crate::Cache::node_stats)).
///
/// Counters that belong to no node are only in the cache's totals
/// ([`Cache::stats`](crate::Cache::stats)): `breaker_opened`,
/// `local_invalidation`, those of invalidations (`invalidated`,
/// `invalidation_*`), which name keys, tags and groups, not nodes, and the
/// store requests of the cache's own bookkeeping (reading the invalidation
/// log, renewing and releasing leases).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let _: u32 = cache.lookup("n").load(|| async { Ok::<_, std::io::Error>(1) }).await.expect("loads");
/// let _: u32 = cache.lookup("n").load(|| async { Ok::<_, std::io::Error>(1) }).await.expect("cached");
/// // Ad-hoc lookups count under the name "lookup".
/// let node = cache.stats_of("lookup").expect("counted");
/// assert_eq!((node.stats.hit, node.stats.miss, node.stats.load), (1, 1, 1));
/// assert_eq!(node.load_time.count(), 1);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// The spec's name: the node type's name or the function's path.
    pub name: String,
    /// True for a `#[cacheme]` function (or an ad-hoc lookup), false for a node type.
    pub function: bool,
    /// Its counters.
    pub stats: StatsSnapshot,
    /// How long its loaders ran.
    pub load_time: Latency,
    /// How long its reads of the store took (the request's round trip).
    pub read_time: Latency,
}

/// Where a call counts: the cache's totals and, when known, its node.
#[derive(Clone, Copy)]
pub(crate) struct Counted<'s> {
    totals: &'s Counters,
    node: Option<&'s NodeCounters>,
}

impl Counted<'_> {
    /// A load ran for `elapsed`.
    pub(crate) fn record_load(&self, elapsed: Duration) {
        if let Some(node) = self.node {
            node.load_time.record(elapsed);
        }
    }

    /// A read of the store took `elapsed`.
    pub(crate) fn record_read(&self, elapsed: Duration) {
        if let Some(node) = self.node {
            node.read_time.record(elapsed);
        }
    }
}

/// One node's live counters and histograms.
#[derive(Debug)]
pub(crate) struct NodeCounters {
    name: &'static str,
    function: bool,
    counters: Counters,
    load_time: Recorder,
    read_time: Recorder,
}

impl NodeCounters {
    fn new(name: &'static str, function: bool) -> Self {
        NodeCounters {
            name,
            function,
            counters: Counters::default(),
            load_time: Recorder::default(),
            read_time: Recorder::default(),
        }
    }

    fn snapshot(&self) -> NodeStats {
        NodeStats {
            name: self.name.to_owned(),
            function: self.function,
            stats: self.counters.snapshot(),
            load_time: self.load_time.snapshot(),
            read_time: self.read_time.snapshot(),
        }
    }
}

/// Slots of the node table (a power of two). Past this many distinct spec
/// addresses, calls count under [`OTHER`].
const SLOTS: usize = 1024;

/// The name nodes count under once the table is full.
pub(crate) const OTHER: &str = "(other)";

/// A slot of the node table: a spec's address and its node, set once.
type Slot = OnceLock<(usize, Arc<NodeCounters>)>;

/// The per-node counters of one cache, found by spec address: a fixed
/// open-addressed table of append-only slots (probed with atomic loads, never
/// locked on the way to a known node); distinct addresses of one name (a
/// `const` spec promoted at several places) share one entry.
struct NodeTable {
    slots: Box<[Slot; SLOTS]>,
    /// Every node, in the order first seen; taken to add one.
    nodes: Mutex<Vec<Arc<NodeCounters>>>,
    other: OnceLock<Arc<NodeCounters>>,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            slots: Box::new(std::array::from_fn(|_| OnceLock::new())),
            nodes: Mutex::new(Vec::new()),
            other: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for NodeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTable").finish_non_exhaustive()
    }
}

impl NodeTable {
    fn start(id: usize) -> usize {
        // Fibonacci hashing of the address (its low bits are alignment).
        let hash = (id as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (hash >> (64 - SLOTS.trailing_zeros())) as usize
    }

    #[inline]
    fn get(&self, spec: &'static Spec) -> &NodeCounters {
        let id = std::ptr::from_ref(spec) as usize;
        let start = Self::start(id);
        // The first probe finds it, unless another spec took its slot first.
        if let Some((slot_id, node)) = self.slots[start].get()
            && *slot_id == id
        {
            return node;
        }
        for probe in 1..SLOTS {
            match self.slots[(start + probe) & (SLOTS - 1)].get() {
                Some((slot_id, node)) if *slot_id == id => return node,
                Some(_) => {}
                None => break,
            }
        }
        self.add(spec, id, start)
    }

    #[cold]
    fn add(&self, spec: &'static Spec, id: usize, start: usize) -> &NodeCounters {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        for probe in 0..SLOTS {
            let slot = &self.slots[(start + probe) & (SLOTS - 1)];
            match slot.get() {
                Some((slot_id, node)) if *slot_id == id => return node,
                Some(_) => {}
                None => {
                    let node = match nodes.iter().find(|n| n.name == spec.name()) {
                        Some(node) => node.clone(),
                        None => {
                            let node = Arc::new(NodeCounters::new(spec.name(), spec.is_function()));
                            nodes.push(node.clone());
                            node
                        }
                    };
                    // Under the lock: nobody else fills a slot.
                    let _ = slot.set((id, node));
                    return &slot.get().expect("the slot was just set").1;
                }
            }
        }
        self.other.get_or_init(|| {
            tracing::warn!(
                max = SLOTS,
                "cacheme: more node types and functions than the stats table holds; the rest count as `(other)`"
            );
            let other = Arc::new(NodeCounters::new(OTHER, true));
            nodes.push(other.clone());
            other
        })
    }

    fn snapshot(&self) -> Vec<NodeStats> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.iter().map(|node| node.snapshot()).collect()
    }
}

/// A cache's counters: its totals, and per node.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    totals: Counters,
    nodes: NodeTable,
}

impl std::ops::Deref for Stats {
    type Target = Counters;

    /// The totals, for counts that belong to no node.
    fn deref(&self) -> &Counters {
        &self.totals
    }
}

impl Stats {
    /// Where the calls of `spec` count: the totals and its node.
    #[inline]
    pub(crate) fn of(&self, spec: &'static Spec) -> Counted<'_> {
        Counted {
            totals: &self.totals,
            node: Some(self.nodes.get(spec)),
        }
    }

    /// The totals only.
    pub(crate) fn totals(&self) -> Counted<'_> {
        Counted {
            totals: &self.totals,
            node: None,
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        self.totals.snapshot()
    }

    /// Every node counted so far, in the order first seen.
    pub(crate) fn nodes(&self) -> Vec<NodeStats> {
        self.nodes.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: Spec = Spec::node("A");
    static B: Spec = Spec::function("b::f");
    static A_AGAIN: Spec = Spec::node("A");

    #[test]
    fn counts_go_to_the_totals_and_the_node() {
        let stats = Stats::default();
        stats.of(&A).hit();
        stats.of(&A).hit();
        stats.of(&B).miss();
        stats.of(&A_AGAIN).load();
        stats.breaker_opened();
        stats.totals().store_error();
        let totals = stats.snapshot();
        assert_eq!((totals.hit, totals.miss, totals.load), (2, 1, 1));
        assert_eq!((totals.breaker_opened, totals.store_error), (1, 1));
        let nodes = stats.nodes();
        assert_eq!(nodes.len(), 2, "one entry per name: {nodes:?}");
        let a = nodes.iter().find(|n| n.name == "A").expect("A counted");
        assert_eq!(
            (a.stats.hit, a.stats.load, a.stats.breaker_opened),
            (2, 1, 0)
        );
        assert!(!a.function);
        let b = nodes.iter().find(|n| n.name == "b::f").expect("b counted");
        assert_eq!((b.stats.hit, b.stats.miss), (0, 1));
        assert!(b.function);
    }

    #[test]
    fn histograms_record_per_node() {
        let stats = Stats::default();
        stats.of(&A).record_load(Duration::from_millis(20));
        stats.of(&A).record_load(Duration::from_millis(40));
        stats.of(&A).record_read(Duration::from_micros(100));
        stats.totals().record_load(Duration::from_secs(1));
        let a = &stats.nodes()[0];
        assert_eq!(a.load_time.count(), 2);
        assert_eq!(a.read_time.count(), 1);
        let p99 = a.load_time.quantile(0.99);
        assert!(
            p99 >= Duration::from_millis(39) && p99 <= Duration::from_millis(41),
            "{p99:?}"
        );
    }

    #[test]
    fn a_full_table_counts_under_other() {
        let stats = Stats::default();
        let specs: Vec<&'static Spec> = (0..SLOTS + 3)
            .map(|i| {
                &*Box::leak(Box::new(Spec::node(Box::leak(
                    format!("n{i}").into_boxed_str(),
                ))))
            })
            .collect();
        for spec in &specs {
            stats.of(spec).hit();
        }
        // Known nodes are still found after the table filled.
        stats.of(specs[0]).hit();
        let nodes = stats.nodes();
        assert_eq!(nodes.len(), SLOTS + 1);
        let other = nodes
            .iter()
            .find(|n| n.name == OTHER)
            .expect("overflow node");
        assert_eq!(other.stats.hit, 3);
        let first = nodes.iter().find(|n| n.name == "n0").expect("n0");
        assert_eq!(first.stats.hit, 2);
        assert_eq!(stats.snapshot().hit, SLOTS as u64 + 4);
    }
}
