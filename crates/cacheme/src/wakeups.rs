//! Waiting for another caller's fill without polling.
//!
//! A caller that finds the lease taken registers here *before* its claim
//! script runs, then sleeps until the key is announced (by the memory store
//! directly, or by the Redis subscriber when the filler publishes) or until
//! its wait interval passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use event_listener::{Event, EventListener, Listener};

/// Events by value key.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    events: Mutex<HashMap<String, Arc<Event>>>,
}

/// A registration for one key; wait on it once.
pub(crate) struct Ticket<'a> {
    wakeups: &'a Wakeups,
    key: String,
    event: Arc<Event>,
    listener: Option<EventListener>,
}

impl Wakeups {
    /// Register interest in `key`; announcements after this call are not missed.
    pub(crate) fn listen(&self, key: &str) -> Ticket<'_> {
        let event = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone();
        let listener = event.listen();
        Ticket {
            wakeups: self,
            key: key.to_owned(),
            event,
            listener: Some(listener),
        }
    }

    /// Wake everyone waiting for `key`.
    pub(crate) fn wake(&self, key: &str) {
        let event = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if let Some(event) = event {
            event.notify(usize::MAX);
        }
    }

    /// Wake every waiter (the subscription was lost: announcements may have been missed).
    pub(crate) fn wake_all(&self) {
        let events: Vec<_> = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, event) in events {
            event.notify(usize::MAX);
        }
    }
}

impl Ticket<'_> {
    /// Sleep until woken or `timeout` passes. True if woken.
    pub(crate) async fn wait(mut self, timeout: Duration) -> bool {
        match self.listener.take() {
            Some(listener) => tokio::time::timeout(timeout, listener).await.is_ok(),
            None => false,
        }
    }

    /// Block the thread until woken or `timeout` passes. True if woken.
    pub(crate) fn wait_blocking(mut self, timeout: Duration) -> bool {
        match self.listener.take() {
            Some(listener) => listener.wait_timeout(timeout).is_some(),
            None => false,
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.listener = None;
        let mut events = self
            .wakeups
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Remove the entry when this was the last ticket for it.
        if let Some(current) = events.get(&self.key)
            && Arc::ptr_eq(current, &self.event)
            && Arc::strong_count(&self.event) == 2
        {
            events.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_after_listen_is_not_missed() {
        let wakeups = Wakeups::default();
        let ticket = wakeups.listen("k");
        wakeups.wake("k");
        assert!(ticket.wait_blocking(Duration::from_secs(5)));
        assert!(wakeups.events.lock().expect("lock").is_empty());
    }

    #[test]
    fn an_unwoken_ticket_times_out_and_cleans_up() {
        let wakeups = Wakeups::default();
        let ticket = wakeups.listen("k");
        assert!(!ticket.wait_blocking(Duration::from_millis(5)));
        assert!(wakeups.events.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn async_waiters_are_woken() {
        let wakeups = Arc::new(Wakeups::default());
        let ticket = wakeups.listen("k");
        let other = wakeups.clone();
        std::thread::spawn(move || other.wake("k"));
        assert!(ticket.wait(Duration::from_secs(5)).await);
    }
}
