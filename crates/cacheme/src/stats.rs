//! Counters a cache keeps about itself.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters, updated with relaxed atomics.
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $( $name: AtomicU64, )*
        }

        impl Stats {
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

        /// A copy of a cache's counters at one moment ([`Cache::stats`](crate::Cache::stats)).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
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
