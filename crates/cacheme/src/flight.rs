//! In-process singleflight: concurrent callers of one key share one read
//! and one load.
//!
//! The first caller of a key becomes the leader and runs the protocol; the
//! others wait for its [`Outcome`]. A leader that returns without an outcome
//! (it panicked, or its future was dropped) leaves [`Outcome::Retry`], so a
//! waiter takes over instead of hanging.

use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

/// What the leader hands to the callers that waited for it.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// The envelope bytes of the value (read or loaded); each waiter decodes.
    Value(Arc<[u8]>),
    /// The loader's error, type-erased; waiters downcast it to their `E`.
    Error(Arc<dyn Any + Send + Sync>),
    /// No value to share: read again.
    Retry,
}

/// One key's flight.
pub(crate) struct Flight {
    /// When its leader started: a flight older than the longest load
    /// (`max_load_time`) is hung, and later callers start a new one.
    started: Instant,
    outcome: OnceLock<Outcome>,
    /// An expired value the leader holds while it reloads: waiters may take
    /// it after their soft timeout (fail-safe).
    fallback: OnceLock<Arc<[u8]>>,
    done: Event,
    waiters: AtomicUsize,
}

impl Flight {
    fn new() -> Self {
        Flight {
            started: Instant::now(),
            outcome: OnceLock::new(),
            fallback: OnceLock::new(),
            done: Event::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Wait for the leader's outcome.
    pub(crate) async fn wait(&self) -> Outcome {
        loop {
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            let listener = self.done.listen();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            listener.await;
        }
    }

    /// The expired value the leader offered, if any.
    pub(crate) fn fallback(&self) -> Option<Arc<[u8]>> {
        self.fallback.get().cloned()
    }

    /// Wait for the leader's outcome, at most `budget`.
    pub(crate) async fn wait_for(&self, budget: std::time::Duration) -> Option<Outcome> {
        tokio::time::timeout(budget, self.wait()).await.ok()
    }

    /// Block until the leader's outcome, at most `budget`.
    pub(crate) fn wait_blocking_for(&self, budget: std::time::Duration) -> Option<Outcome> {
        let deadline = std::time::Instant::now() + budget;
        loop {
            if let Some(outcome) = self.outcome.get() {
                return Some(outcome.clone());
            }
            let listener = self.done.listen();
            if let Some(outcome) = self.outcome.get() {
                return Some(outcome.clone());
            }
            listener.wait_deadline(deadline)?;
        }
    }

    /// Block until the leader's outcome.
    #[cfg(test)]
    pub(crate) fn wait_blocking(&self) -> Outcome {
        loop {
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            let listener = self.done.listen();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            listener.wait();
        }
    }
}

/// The flights in progress, by value key. Every read that reaches the store
/// joins and leaves this map, so it hashes with foldhash (randomly seeded per
/// process, as quick_cache's local tiers are) rather than SipHash, and each
/// key is allocated once, shared by the map and the leader.
#[derive(Default)]
pub(crate) struct Flights {
    flights: Mutex<HashMap<Arc<str>, Arc<Flight>, foldhash::fast::RandomState>>,
}

/// Whether this caller leads the flight or waits for it.
pub(crate) enum Join<'a> {
    /// Run the protocol, then [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for the leader's outcome.
    Waiter(Arc<Flight>),
}

/// The leader's duty to hand over an outcome.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Arc<str>,
    flight: Arc<Flight>,
    finished: bool,
}

impl Flights {
    /// Join the flight for `key`, or start it. A flight that started more
    /// than `hung_after` ago (the longest a load may hold its lease) is left
    /// to its leader: this caller starts a new one, which the store lets
    /// load once the hung leader's lease has lapsed.
    pub(crate) fn join(&self, key: &str, hung_after: Duration) -> Join<'_> {
        let key: Arc<str> = Arc::from(key);
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        match flights.entry(key) {
            Entry::Occupied(entry) if entry.get().started.elapsed() <= hung_after => {
                let flight = entry.get();
                flight.waiters.fetch_add(1, Ordering::Release);
                Join::Waiter(flight.clone())
            }
            Entry::Occupied(mut entry) => {
                let key = entry.key().clone();
                let flight = Arc::new(Flight::new());
                entry.insert(flight.clone());
                Join::Leader(Leader {
                    flights: self,
                    key,
                    flight,
                    finished: false,
                })
            }
            Entry::Vacant(entry) => {
                let key = entry.key().clone();
                let flight = entry.insert(Arc::new(Flight::new())).clone();
                Join::Leader(Leader {
                    flights: self,
                    key,
                    flight,
                    finished: false,
                })
            }
        }
    }

    /// Detach the flight for `key` (after an invalidation) so that later
    /// callers start a new one instead of joining a read that began before.
    pub(crate) fn forget(&self, key: &str) {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

impl Leader<'_> {
    /// Offer the waiters an expired value to serve if they stop waiting.
    pub(crate) fn offer_fallback(&self, bytes: &[u8]) {
        let _ = self.flight.fallback.set(Arc::from(bytes));
    }

    /// Hand the outcome to the waiters, if there are any; `outcome` is only
    /// computed when someone waits.
    pub(crate) fn finish(mut self, outcome: impl FnOnce() -> Outcome) {
        self.detach();
        // After `detach` no caller can join, so the count is final.
        if self.flight.waiters.load(Ordering::Acquire) > 0 {
            let _ = self.flight.outcome.set(outcome());
            self.flight.done.notify(usize::MAX);
        }
        self.finished = true;
    }

    fn detach(&self) {
        let mut flights = self
            .flights
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // By `&str`: two cheap hashes rather than an `Arc` clone (two atomic
        // read-modify-writes) for the entry API, on every read's way out.
        let key: &str = &self.key;
        if flights
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
        {
            flights.remove(key);
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Panicked or cancelled before finishing: let a waiter take over.
        self.detach();
        let _ = self.flight.outcome.set(Outcome::Retry);
        self.flight.done.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREVER: Duration = Duration::MAX;

    #[test]
    fn waiters_get_the_leaders_outcome() {
        let flights = Flights::default();
        let Join::Leader(leader) = flights.join("k", FOREVER) else {
            panic!("first caller leads")
        };
        let Join::Waiter(flight) = flights.join("k", FOREVER) else {
            panic!("second caller waits")
        };
        leader.finish(|| Outcome::Value(Arc::from(&b"v"[..])));
        match flight.wait_blocking() {
            Outcome::Value(bytes) => assert_eq!(&*bytes, b"v"),
            _ => panic!("expected the value"),
        }
        // The flight is over: the next caller leads again.
        assert!(matches!(flights.join("k", FOREVER), Join::Leader(_)));
    }

    #[test]
    fn a_dropped_leader_leaves_retry() {
        let flights = Flights::default();
        let leader = flights.join("k", FOREVER);
        let Join::Waiter(flight) = flights.join("k", FOREVER) else {
            panic!("second caller waits")
        };
        drop(leader);
        assert!(matches!(flight.wait_blocking(), Outcome::Retry));
    }

    #[test]
    fn a_panicking_leader_leaves_retry() {
        let flights = Arc::new(Flights::default());
        let Join::Waiter(flight) = ({
            let Join::Leader(leader) = flights.join("k", FOREVER) else {
                panic!("first caller leads")
            };
            let waiter = flights.join("k", FOREVER);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _leader = leader;
                panic!("loader panicked");
            }));
            assert!(result.is_err());
            waiter
        }) else {
            panic!("second caller waits")
        };
        assert!(matches!(flight.wait_blocking(), Outcome::Retry));
    }

    #[test]
    fn a_hung_flight_is_not_joined() {
        let flights = Flights::default();
        let Join::Leader(_hung) = flights.join("k", FOREVER) else {
            panic!("the first caller leads");
        };
        std::thread::sleep(Duration::from_millis(5));
        let Join::Leader(_new) = flights.join("k", Duration::ZERO) else {
            panic!("a hung flight is not joined");
        };
        assert!(matches!(flights.join("k", FOREVER), Join::Waiter(_)));
    }

    #[test]
    fn forget_starts_a_new_flight() {
        let flights = Flights::default();
        let _leader = flights.join("k", FOREVER);
        flights.forget("k");
        assert!(matches!(flights.join("k", FOREVER), Join::Leader(_)));
    }
}
