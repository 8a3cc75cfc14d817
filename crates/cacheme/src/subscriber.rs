//! The pub/sub subscriber: one thread per Redis cache, listening on the
//! cache's event channel: it wakes the callers that wait for a fill, and
//! applies invalidation events to the local tiers.
//!
//! It runs on a plain thread with a blocking connection, so it serves async
//! and blocking callers alike and needs no runtime. When the subscription
//! drops it reconnects; meanwhile waiters fall back to their wait interval
//! and the local tiers are emptied and unused (they may miss events).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cache::Inner;
use crate::local::{EVENT, Event};

/// How long a read blocks before the thread checks whether to stop.
const POLL: Duration = Duration::from_millis(250);
/// Pause between reconnection attempts.
const BACKOFF: Duration = Duration::from_millis(200);

/// Start the subscriber thread. It stops when `stop` is set or the cache is
/// dropped.
pub(crate) fn spawn(
    client: redis::Client,
    channel: String,
    cache: Weak<Inner>,
    stop: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new()
        .name("cacheme-subscriber".into())
        .spawn(move || run(&client, &channel, &cache, &stop));
    if let Err(error) = spawned {
        tracing::warn!(%error, "cacheme: cannot start the subscriber thread; waiters will poll");
    }
}

fn run(client: &redis::Client, channel: &str, cache: &Weak<Inner>, stop: &AtomicBool) {
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) && cache.strong_count() > 0 {
        match listen(client, channel, cache, stop) {
            Ok(()) => return,
            Err(error) => {
                if !reported {
                    tracing::warn!(%error, channel, "cacheme: event subscription lost; reconnecting");
                    reported = true;
                }
                // Events may have been missed: waiters look again, and the
                // local tiers stop serving until the subscription is back.
                if let Some(cache) = cache.upgrade() {
                    cache.local.set_connected(false);
                    cache.wakeups.wake_all();
                }
                std::thread::sleep(BACKOFF);
            }
        }
    }
}

/// Subscribe and dispatch until stopped (Ok) or the connection fails (Err).
fn listen(
    client: &redis::Client,
    channel: &str,
    cache: &Weak<Inner>,
    stop: &AtomicBool,
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(channel)?;
    pubsub.set_read_timeout(Some(POLL))?;
    match cache.upgrade() {
        Some(cache) => cache.local.set_connected(true),
        None => return Ok(()),
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match pubsub.get_message() {
            Ok(message) => {
                let Some(cache) = cache.upgrade() else {
                    return Ok(());
                };
                dispatch(&cache, message.get_payload_bytes());
            }
            Err(error) if error.is_timeout() => {}
            Err(error) => return Err(error),
        }
    }
}

/// Act on one message: `F<value key>` announces a fill (or a released or
/// revoked lease) of that key; `I<event>` an invalidation.
fn dispatch(cache: &Inner, payload: &[u8]) {
    match payload.split_first() {
        Some((b'F', key)) => {
            if let Ok(key) = std::str::from_utf8(key) {
                cache.wakeups.wake(key);
            }
        }
        Some((&EVENT, event)) => {
            // An event this build cannot read: drop everything rather than
            // keep what it may have invalidated.
            let event = Event::parse(event).unwrap_or(Event {
                everything: true,
                ..Event::default()
            });
            cache.local.apply(&event, &cache.stats);
            for key in &event.keys {
                cache.flights.forget(cache.store_keys(key).value());
            }
        }
        _ => {}
    }
}
