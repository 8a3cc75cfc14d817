//! The event subscriber: one thread per Redis cache, listening on the
//! cache's event channel (see [`crate::events`]). It wakes the callers that
//! wait for a fill, and applies invalidations: to what this process knows
//! of the invalidation sequence (`crate::stamps`), to the local tiers, to
//! the in-process flights.
//!
//! It runs on a plain thread with a blocking connection, so it serves async
//! and blocking callers alike and needs no runtime.
//!
//! Nothing may be missed silently:
//!
//! - Invalidations are numbered. An entry that skips numbers, a subscription
//!   that (re)starts, and an unreadable message all send the thread to the
//!   invalidation log for what it missed; what the log no longer has is
//!   *lost*: values claimed before it are reloaded rather than trusted, and
//!   the local tiers are emptied.
//! - When no numbered event has arrived for [`SEQUENCE_CHECK`] (50 ms),
//!   the sequence is read: an event dropped without a disconnect is noticed
//!   even when no later event reveals the gap.
//! - A connection that goes quiet is pinged: a half-open connection (the
//!   server gone without a reset) is noticed within [`HEALTH`] + the read
//!   timeout, and replaced.
//! - While the subscription is down, the local tiers are unused, waiters
//!   fall back to their wait interval, and the thread reads the log at every
//!   attempt, so that tag and group invalidations still reach this process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::cache::Inner;
use crate::events::{Invalidated, Message};
use crate::storage::endpoint::Endpoint;
use crate::storage::{ReadLog, SequenceFloor};

/// How long a read blocks before the thread checks whether to stop (and
/// whether to check the sequence).
const POLL: Duration = Duration::from_millis(25);
/// How often the sequence is read when no numbered event arrived: an event
/// that Redis dropped without closing the connection (output-buffer limits,
/// a lossy link) is noticed within this time even if no other event follows
/// it, and what it said is read back from the log. One small request (the
/// sequence and an empty log range) per interval, only while the channel
/// brings no invalidations.
const SEQUENCE_CHECK: Duration = Duration::from_millis(50);
/// Pause between reconnection attempts.
const BACKOFF: Duration = Duration::from_millis(200);
/// How long the connection may stay quiet before it is pinged.
pub(crate) const HEALTH: Duration = Duration::from_secs(1);
/// How long connecting (and waiting for the sentinels to name a primary)
/// may take.
const CONNECT: Duration = Duration::from_secs(1);
/// Log entries read per request when catching up.
const LOG_PAGE: usize = 10_000;

/// Start the subscriber thread. It stops when `stop` is set or the cache is
/// dropped. With an `endpoint` (one server, or the primary Sentinel names),
/// it listens on the endpoint's current primary, and moves when that
/// changes. Otherwise it listens through the first of `clients` and, when
/// that connection fails, through the next one (a Redis Cluster broadcasts
/// the channel to every node, so any node will do).
pub(crate) fn spawn(
    endpoint: Option<Endpoint>,
    clients: Vec<redis::Client>,
    channel: String,
    cache: Weak<Inner>,
    stop: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new()
        .name("cacheme-subscriber".into())
        .spawn(move || run(endpoint.as_ref(), &clients, &channel, &cache, &stop));
    if let Err(error) = spawned {
        tracing::warn!(%error, "cacheme: cannot start the subscriber thread; waiters will poll");
    }
}

fn run(
    endpoint: Option<&Endpoint>,
    clients: &[redis::Client],
    channel: &str,
    cache: &Weak<Inner>,
    stop: &AtomicBool,
) {
    let mut reported = false;
    let mut attempt = 0;
    // The nodes to listen on: those given, then those learnt from a cluster.
    let mut candidates = clients.to_vec();
    while !stop.load(Ordering::Relaxed) && cache.strong_count() > 0 {
        let listened = match endpoint {
            Some(endpoint) => endpoint.primary(CONNECT).and_then(|primary| {
                let followed = Followed {
                    endpoint,
                    generation: primary.generation,
                    addr: &primary.addr,
                };
                listen(
                    &primary.client,
                    Some(followed),
                    channel,
                    cache,
                    stop,
                    &mut candidates,
                )
            }),
            None => {
                let Some(client) = candidates.get(attempt % candidates.len().max(1)).cloned()
                else {
                    return;
                };
                attempt += 1;
                listen(&client, None, channel, cache, stop, &mut candidates)
            }
        };
        match listened {
            Ok(()) => return,
            Err(error) => {
                if !reported {
                    tracing::warn!(
                        error = %crate::error::Chain(&error),
                        channel,
                        redis = endpoint.map(Endpoint::describe),
                        "cacheme: event subscription lost; reconnecting"
                    );
                    reported = true;
                }
                // Events may have been missed: waiters look again, and the
                // local tiers stop serving until the subscription is back.
                let Some(cache) = cache.upgrade() else { return };
                cache.local.set_connected(false);
                cache.wakeups.wake_all();
                // Keep up with the sequence from the log meanwhile.
                let _ = catch_up(&cache);
                drop(cache);
                std::thread::sleep(BACKOFF);
            }
        }
    }
}

/// The endpoint's primary a subscription listens on.
struct Followed<'a> {
    endpoint: &'a Endpoint,
    generation: u64,
    addr: &'a str,
}

/// Subscribe and dispatch until stopped (Ok) or the connection fails, or
/// the followed endpoint names another primary (Err).
fn listen(
    client: &redis::Client,
    followed: Option<Followed<'_>>,
    channel: &str,
    cache: &Weak<Inner>,
    stop: &AtomicBool,
    candidates: &mut Vec<redis::Client>,
) -> redis::RedisResult<()> {
    let mut conn = client
        .get_connection_with_timeout(CONNECT)
        .inspect_err(|e| {
            if let Some(followed) = &followed {
                followed.endpoint.suspect(e);
            }
        })?;
    warn_on_eviction_policy(&mut conn);
    #[cfg(feature = "cluster")]
    {
        crate::storage::cluster::learn_nodes(client, &mut conn, candidates);
        if let Some(cache) = cache.upgrade()
            && let crate::storage::Backend::Redis(store) = &cache.backend
        {
            store.note_nodes(candidates);
        }
    }
    #[cfg(not(feature = "cluster"))]
    let _ = candidates;
    if let Some(followed) = &followed
        && followed.generation > 1
        && let Some(cache) = cache.upgrade()
    {
        // Sentinel promoted this primary: its sequence may be behind numbers
        // the former one gave after the promotion (and this process may have
        // applied them). Move it past them, so that no invalidation made here
        // is taken for one already applied.
        let settings = cache.settings();
        cache
            .backend
            .run_blocking(&SequenceFloor, &cache.reporting(&settings))
            .map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot move the invalidation sequence past the former primary's",
                    e.to_string(),
                ))
            })?;
    }
    let mut pubsub = conn.as_pubsub();
    pubsub.set_read_timeout(Some(POLL))?;
    pubsub.subscribe(channel)?;
    // Subscribed: what was invalidated before now is in the log.
    match cache.upgrade() {
        Some(cache) => {
            if catch_up(&cache).is_err() {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot read the invalidation log",
                )));
            }
            cache.local.set_connected(true);
        }
        None => return Ok(()),
    }
    let mut last_heard = Instant::now();
    let mut last_numbered = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(followed) = &followed
            && followed.endpoint.generation() != followed.generation
        {
            // Sentinel promoted another primary: subscribe there (and read
            // the log there for what was missed meanwhile).
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the primary changed",
                followed.addr.to_owned(),
            )));
        }
        if last_numbered.elapsed() >= SEQUENCE_CHECK {
            let Some(cache) = cache.upgrade() else {
                return Ok(());
            };
            // Nothing numbered came for a while: was something dropped?
            // (Errors are the store's trouble: the next check tries again.)
            let _ = catch_up(&cache);
            last_numbered = Instant::now();
        }
        match pubsub.get_message() {
            Ok(message) => {
                last_heard = Instant::now();
                let Some(cache) = cache.upgrade() else {
                    return Ok(());
                };
                let payload = message.get_payload_bytes();
                if payload.first() == Some(&crate::events::INVALIDATED) {
                    last_numbered = Instant::now();
                }
                dispatch(&cache, payload);
            }
            Err(error) if error.is_timeout() => {
                if last_heard.elapsed() >= HEALTH {
                    // A quiet connection may be half-open: ask.
                    let _: redis::Value = pubsub.ping()?;
                    last_heard = Instant::now();
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// The `maxmemory-policy` values under which cacheme keeps its promises:
/// nothing is evicted, or any key may be (the sequence too, which restarts
/// above every number it gave; see docs/reliability.md). Under the
/// `volatile-*` policies only keys with a TTL are evicted: a lease (a
/// placeholder, with its lease time) may go mid-load while the sequence,
/// which has no TTL, stays, so a second process may load the same key.
const SAFE_EVICTION_POLICIES: [&str; 4] =
    ["noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random"];

/// Warn (once per subscription) when the server evicts under a policy that
/// cacheme does not support. `CONFIG` may be refused (managed Redis, ACL):
/// then nothing is said.
fn warn_on_eviction_policy(conn: &mut redis::Connection) {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(conn);
    if let Ok(reply) = reply
        && let [_, policy] = reply.as_slice()
        && !SAFE_EVICTION_POLICIES.contains(&policy.as_str())
    {
        tracing::warn!(
            policy = policy.as_str(),
            "cacheme: the server's maxmemory-policy can evict a lease in the middle of a load \
             (then a key may be loaded twice); use noeviction or an allkeys-* policy \
             (see docs/reliability.md)"
        );
    }
}

/// Act on one message of the event channel.
pub(crate) fn dispatch(cache: &Inner, payload: &[u8]) {
    match Message::parse(payload) {
        Message::Wake(key) => cache.wakeups.wake(key),
        Message::Invalidated(seq, Some(invalidated)) => {
            if seq > cache.stamps.known() + 1 {
                // Entries are missing before this one: read them back first.
                let _ = catch_up(cache);
            }
            crate::invalidation::applied(cache, &invalidated, seq);
        }
        Message::Invalidated(seq, None) => {
            // Written by a build that this one cannot read: assume the worst.
            tracing::warn!(
                seq,
                "cacheme: an invalidation this build cannot read; emptying local tiers"
            );
            let _ = catch_up(cache);
            cache.stamps.skip_to(seq);
            cache.local.clear();
        }
        Message::Other => {}
    }
}

/// Read what was invalidated since the last entry this process applied,
/// from the log (written once for blocking and async callers). Entries the
/// log no longer has are lost: values claimed before them become unknown
/// (reloaded), and the local tiers are emptied.
macro_rules! catch_up {
    ($cache:ident, $run_op:ident $(, .$await:tt)?) => {{
        let settings = $cache.settings();
        let report = $cache.reporting(&settings);
        loop {
            let from = $cache.stamps.known() + 1;
            let op = ReadLog { from, count: LOG_PAGE };
            let (current, entries) = $cache.backend.$run_op(&op, &report)$(.$await)??;
            if !apply_log($cache, from, current, entries) {
                $cache.stamps.set_synced();
                return Ok(());
            }
        }
    }};
}

/// [`catch_up!`] from blocking code (the subscriber thread).
pub(crate) fn catch_up(cache: &Inner) -> crate::Result<()> {
    catch_up!(cache, run_blocking)
}

/// [`catch_up!`] from async code: a process reads the log once before it
/// first reads or claims a value, so that what it judges and what it
/// claims are numbered against the shared sequence.
pub(crate) async fn catch_up_async(cache: &Inner) -> crate::Result<()> {
    catch_up!(cache, run, .await)
}

/// Apply one page of the log read from `from`; true if there may be more.
fn apply_log(
    cache: &Inner,
    from: u64,
    current: u64,
    entries: Vec<crate::storage::LogEntry>,
) -> bool {
    let first = entries.first().map(|(seq, _)| *seq);
    let lost = match first {
        Some(first) => first > from,
        None => current >= from,
    };
    if lost {
        let up_to = first.map_or(current, |first| first - 1);
        // (From 1: the first read of the log, nothing was known to lose.)
        if from > 1 {
            tracing::warn!(
                from,
                up_to,
                "cacheme: invalidations were lost (no longer in the log); values claimed before them are reloaded"
            );
            cache.local.clear();
        }
        cache.stamps.skip_to(up_to);
    }
    let full = entries.len() == LOG_PAGE;
    for (seq, payload) in entries {
        match Invalidated::parse(&payload) {
            Some(invalidated) => crate::invalidation::applied(cache, &invalidated, seq),
            None => {
                cache.stamps.skip_to(seq);
                cache.local.clear();
            }
        }
    }
    full
}
