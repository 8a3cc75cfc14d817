//! The pub/sub subscriber: one thread per Redis cache, listening on the
//! cache's event channel and waking the callers that wait for a fill.
//!
//! It runs on a plain thread with a blocking connection, so it serves async
//! and blocking callers alike and needs no runtime. When the subscription
//! drops it reconnects; meanwhile waiters fall back to their wait interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::wakeups::Wakeups;

/// How long a read blocks before the thread checks whether to stop.
const POLL: Duration = Duration::from_millis(250);
/// Pause between reconnection attempts.
const BACKOFF: Duration = Duration::from_millis(200);

/// Start the subscriber thread. It stops when `stop` is set or the wake-up
/// registry is dropped.
pub(crate) fn spawn(
    client: redis::Client,
    channel: String,
    wakeups: Weak<Wakeups>,
    stop: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new()
        .name("cacheme-subscriber".into())
        .spawn(move || run(&client, &channel, &wakeups, &stop));
    if let Err(error) = spawned {
        tracing::warn!(%error, "cacheme: cannot start the subscriber thread; waiters will poll");
    }
}

fn run(client: &redis::Client, channel: &str, wakeups: &Weak<Wakeups>, stop: &AtomicBool) {
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) && wakeups.strong_count() > 0 {
        match listen(client, channel, wakeups, stop) {
            Ok(()) => return,
            Err(error) => {
                if !reported {
                    tracing::warn!(%error, channel, "cacheme: event subscription lost; reconnecting");
                    reported = true;
                }
                // Announcements may have been missed: let waiters look again.
                if let Some(wakeups) = wakeups.upgrade() {
                    wakeups.wake_all();
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
    wakeups: &Weak<Wakeups>,
    stop: &AtomicBool,
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(channel)?;
    pubsub.set_read_timeout(Some(POLL))?;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match pubsub.get_message() {
            Ok(message) => {
                let Some(wakeups) = wakeups.upgrade() else {
                    return Ok(());
                };
                dispatch(&wakeups, message.get_payload_bytes());
            }
            Err(error) if error.is_timeout() => {}
            Err(error) => return Err(error),
        }
    }
}

/// Act on one event: `F<value key>` announces a fill (or a released or
/// revoked lease) of that key.
fn dispatch(wakeups: &Wakeups, payload: &[u8]) {
    if let Some(key) = payload.strip_prefix(b"F")
        && let Ok(key) = std::str::from_utf8(key)
    {
        wakeups.wake(key);
    }
}
