//! The drivers of the protocol: one async, one blocking, written once.
//!
//! A call goes through three rooms:
//!
//! 1. [`before_store`]: what needs no I/O at all (the enabled and skip
//!    checks, the local tier). A local hit ends here.
//! 2. The in-process flight (`join_or_lead!`, expanded for async and
//!    blocking): concurrent callers of one key in this process share one
//!    read and one load. Waiters are bounded by the herd budget
//!    (`herd_retries` × `herd_interval`), like waiters in other processes:
//!    past it they load for themselves, without storing.
//! 3. The leader's [`Run`](run::Run), stepped by the loop in `steps.rs`:
//!    ask the [`ReadFlow`] what to do, do it (a store op, a wait, the
//!    loader), feed the result back. Everything that is not I/O lives in
//!    `run.rs`; `lease.rs` renews and releases the lease the leader holds.

pub(crate) mod batch;
mod lease;
mod run;
mod steps;
pub(crate) mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use lease::Keeper;
pub(crate) use run::judge_bytes;

use self::run::Run;
use crate::Result;
use crate::cache::Inner;
use crate::envelope::{Envelope, Stored};
use crate::error::LoadError;
use crate::flight::{Join, Outcome};
use crate::local::Tier;
use crate::lookup::{CacheValue, Lookup};
use crate::protocol::{Found, ReadFlow, Step};
use crate::settings::Settings;
use crate::storage::now_ms;

/// How a call ended.
pub(crate) struct Led<V, E, F> {
    pub(crate) result: Result<V, LoadError<E>>,
    /// The loader, unused, when the value served must be refreshed in the
    /// background (only with [`Lookup::load_detached`]).
    pub(crate) refresh_with: Option<F>,
    /// The stored bytes of the value served, when it is current (from a
    /// fresh read, or a load whose fill was not refused): it may go into the
    /// local tier, and a background refresh starts from it.
    bytes: Option<Arc<[u8]>>,
}

impl<V, E, F> Led<V, E, F> {
    /// A result that must not go into the local tier.
    fn plain(result: Result<V, LoadError<E>>) -> Self {
        Led {
            result,
            refresh_with: None,
            bytes: None,
        }
    }

    fn value(value: V, bytes: Option<Arc<[u8]>>) -> Self {
        Led {
            result: Ok(value),
            refresh_with: None,
            bytes,
        }
    }

    /// The bytes the background refresh starts from.
    pub(crate) fn refresh_from(&self) -> Option<Vec<u8>> {
        self.bytes.as_deref().map(<[u8]>::to_vec)
    }
}

/// Where a call goes before any store I/O.
pub(crate) enum Before<V> {
    /// Served from the local tier.
    Served(V),
    /// The cache is left out of this call: run the loader, store nothing.
    Bypass,
    /// To the store; with the local tier to fill afterwards, if one is used.
    Store(Option<LocalUse<V>>),
}

/// The part of a call that needs no I/O, shared by both drivers: the
/// enabled and skip checks, then the local tier. A local hit ends here,
/// without entering the store's (much larger) future.
pub(crate) fn before_store<V: CacheValue>(lookup: &Lookup<'_, V>) -> Before<V> {
    if bypass(lookup) {
        return Before::Bypass;
    }
    match LocalUse::check(lookup, &lookup.cache.inner) {
        Ok(value) => Before::Served(value),
        Err(local) => Before::Store(local),
    }
}

/// The async driver, after [`before_store`] sent the call to the store:
/// through the in-process flight for the key, then the local tier's fill.
pub(crate) async fn load_async<V, F, Fut, E>(
    lookup: &Lookup<'_, V>,
    loader: F,
    detached: bool,
    local: Option<LocalUse<V>>,
) -> Led<V, E, F>
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    let inner = &lookup.cache.inner;
    // The store's timers and connection need a tokio runtime: without one,
    // say so once (and count it), then run the loader.
    if tokio::runtime::Handle::try_current().is_err() {
        inner.warn_no_runtime();
        return Led::plain(Box::pin(loader()).await.map_err(LoadError::Own));
    }
    sync_async(inner).await;
    // Boxed: the store's part is a large future (the whole protocol), and
    // keeping it inline would make every call, local hits included, move it.
    let led = Box::pin(load_remote_async(lookup, inner, loader, detached)).await;
    if let (Some(local), Ok(value), Some(bytes)) = (local, &led.result, &led.bytes) {
        local.fill(inner, lookup, value, bytes);
    }
    led
}

/// The blocking driver: the same as [`load_async`], without `.await`.
pub(crate) fn load_blocking<V, F, E>(
    lookup: &Lookup<'_, V>,
    loader: F,
    local: Option<LocalUse<V>>,
) -> Result<V, LoadError<E>>
where
    V: CacheValue,
    F: FnOnce() -> Result<V, E>,
    E: Send + Sync + 'static,
{
    let inner = &lookup.cache.inner;
    sync_blocking(inner);
    let led = load_remote_blocking(lookup, inner, loader, false);
    if let (Some(local), Ok(value), Some(bytes)) = (local, &led.result, &led.bytes) {
        local.fill(inner, lookup, value, bytes);
    }
    led.result
}

/// Await a flight's outcome boxed (async), or block for it.
macro_rules! wait_flight {
    ($wait:expr, $await:tt) => {
        Box::pin($wait).$await
    };
    ($wait:expr) => {
        $wait
    };
}

/// Join the in-process flight for the key, or lead it: written once for
/// both drivers (`$(.$await)?` is `.await` for the async one).
macro_rules! join_or_lead {
    (
        fn $name:ident<$($generic:ident),*> where { $($bound:tt)+ };
        lead = $lead:ident, wait_flight = $wait_flight:ident, blocking = $blocking:expr,
        load = |$load_fn:ident| $load:expr;
        $($async:ident)? $(.$await:tt)?
    ) => {
        $($async)? fn $name<V, E, $($generic),*>(
            lookup: &Lookup<'_, V>,
            inner: &Arc<Inner>,
            loader: F,
            detached: bool,
        ) -> Led<V, E, F>
        where
            V: CacheValue,
            E: Send + Sync + 'static,
            $($bound)+
        {
            let keys = inner.store_keys(&lookup.key);
            let mut loader = Some(loader);
            loop {
                let hung_after = inner.settings().max_load_time;
                match inner.flights.join(keys.value(), hung_after) {
                    Join::Leader(leader) => {
                        let loader = loader
                            .take()
                            .expect("only a leader takes the loader, and it returns");
                        let flow = ReadFlow::read(inner.policy_for(lookup, detached));
                        let mut run = Run::new(lookup, inner, keys, Some(leader), flow);
                        return $lead(&mut run, loader)$(.$await)?;
                    }
                    Join::Waiter(flight) => {
                        inner.stats.of(lookup.spec).coalesced();
                        // Waiting for this process's leader: a trace span.
                        let span = crate::stats::span!(TRACE, "cacheme.wait", lookup, inner.settings());
                        // With a soft timeout, a waiter whose leader holds an
                        // expired value takes it past that time (fail-safe).
                        let (mut budget, soft_timeout) = {
                            let settings = inner.settings();
                            (herd_budget(&settings), lookup.effective_soft_timeout(&settings))
                        };
                        if $blocking && blocks_its_runtime() {
                            // The leader may be a task of the runtime that
                            // this blocking call holds: waiting would freeze it.
                            budget = Duration::ZERO;
                        }
                        if let Some(soft) = soft_timeout.filter(|soft| *soft < budget) {
                            match wait_flight!(flight.$wait_flight(soft) $(, $await)?) {
                                Some(outcome) => match noted(&span, waited(lookup, inner, outcome)) {
                                    Waited::Value(value, bytes) => return Led::value(value, bytes),
                                    Waited::Error(error) => return Led::plain(Err(error)),
                                    Waited::Retry => continue,
                                },
                                None => {
                                    if let Some(led) = serve_fallback(lookup, inner, &flight) {
                                        span.record("outcome", "fail_safe");
                                        return led;
                                    }
                                    budget -= soft;
                                }
                            }
                        }
                        // (Boxed in the async driver: waiting is the rare path.)
                        match wait_flight!(flight.$wait_flight(budget) $(, $await)?) {
                            Some(outcome) => match noted(&span, waited(lookup, inner, outcome)) {
                                Waited::Value(value, bytes) => return Led::value(value, bytes),
                                Waited::Error(error) => return Led::plain(Err(error)),
                                // The leader had nothing this caller may take:
                                // read for ourselves (a new flight).
                                Waited::Retry => continue,
                            },
                            None => {
                                if let Some(led) = serve_fallback(lookup, inner, &flight) {
                                    span.record("outcome", "fail_safe");
                                    return led;
                                }
                                // The leader's load outlasts the herd budget:
                                // load alone, without storing.
                                span.record("outcome", "exhausted");
                                inner.stats.of(lookup.spec).wait_exhausted();
                                let $load_fn = loader.take().expect("the loader is still ours");
                                return Led::plain($load.map_err(LoadError::Own));
                            }
                        }
                    }
                }
            }
        }
    };
}

join_or_lead! {
    fn load_remote_async<F, Fut> where { F: FnOnce() -> Fut, Fut: Future<Output = Result<V, E>> };
    lead = lead_async, wait_flight = wait_for, blocking = false,
    load = |load| Box::pin(load()).await;
    async .await
}

join_or_lead! {
    fn load_remote_blocking<F> where { F: FnOnce() -> Result<V, E> };
    lead = lead_blocking, wait_flight = wait_blocking_for, blocking = true,
    load = |load| load();
}

/// Before its first read, a process reads the invalidation log (once):
/// until then it could neither judge what it reads nor number what it
/// claims. If the store cannot be reached, the call goes on (it fails open)
/// and the next one tries again.
pub(crate) async fn sync_async(inner: &Inner) {
    if !inner.stamps.is_synced() {
        let _ = Box::pin(crate::subscriber::catch_up_async(inner)).await;
    }
}

/// [`sync_async`] for blocking code.
pub(crate) fn sync_blocking(inner: &Inner) {
    if !inner.stamps.is_synced() {
        let _ = crate::subscriber::catch_up(inner);
    }
}

/// The expired value a flight's leader offered, served to a waiter that
/// stops waiting (fail-safe), if it decodes.
fn serve_fallback<V: CacheValue, E, F>(
    lookup: &Lookup<'_, V>,
    inner: &Inner,
    flight: &crate::flight::Flight,
) -> Option<Led<V, E, F>> {
    let bytes = flight.fallback()?;
    let value = Envelope::parse(&bytes).ok()?.decode::<V>().ok()?;
    let stats = inner.stats.of(lookup.spec);
    stats.hit();
    stats.fail_safe_served();
    if let Some(hit) = lookup.hit {
        hit(&lookup.key, &value);
    }
    Some(Led::value(value, None))
}

/// Whether this thread runs a current-thread tokio runtime (a blocking call
/// from async code): waiting here would stop every task of that runtime,
/// the leader of the flight this caller would wait for included. Warns once.
fn blocks_its_runtime() -> bool {
    let current_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
        handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
    });
    if current_thread {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "cacheme: a blocking call inside a current-thread tokio runtime does not wait \
                 for loads of this process (it would stop the runtime): it loads by itself; \
                 call the async version instead"
            );
        });
    }
    current_thread
}

/// How long a caller waits for other callers' loads, at most.
fn herd_budget(settings: &Settings) -> Duration {
    settings
        .herd_interval
        .saturating_mul(settings.herd_retries.max(1))
}

/// Lead a read: run the flow until it serves something.
async fn lead_async<V, F, Fut, E>(run: &mut Run<'_, '_, V, E>, loader: F) -> Led<V, E, F>
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    let mut loader = Some(loader);
    let mut step = run.flow.start();
    loop {
        match steps::steps_async(run, step, &mut loader).await {
            Step::Serve(serve) => match run.serve(serve) {
                Ok(value) => {
                    let current = !serve.stale && !serve.refresh;
                    let bytes = run.read_bytes().map(Arc::from);
                    return Led {
                        result: Ok(value),
                        refresh_with: if serve.refresh { loader } else { None },
                        bytes: if current || serve.refresh {
                            bytes
                        } else {
                            None
                        },
                    };
                }
                Err(next) => step = next,
            },
            Step::ServeLoaded { shareable } => {
                let bytes = shareable
                    .then(|| run.sealed_bytes().map(Arc::from))
                    .flatten();
                return Led::value(run.finish_loaded(shareable), bytes);
            }
            _ => return Led::plain(Err(run.finish_error())),
        }
    }
}

/// [`lead_async`] without `.await`.
fn lead_blocking<V, F, E>(run: &mut Run<'_, '_, V, E>, loader: F) -> Led<V, E, F>
where
    V: CacheValue,
    F: FnOnce() -> Result<V, E>,
    E: Send + Sync + 'static,
{
    let mut loader = Some(loader);
    let mut step = run.flow.start();
    loop {
        match steps::steps_blocking(run, step, &mut loader) {
            Step::Serve(serve) => match run.serve(serve) {
                Ok(value) => {
                    let bytes = (!serve.stale).then(|| run.read_bytes().map(Arc::from));
                    return Led::value(value, bytes.flatten());
                }
                Err(next) => step = next,
            },
            Step::ServeLoaded { shareable } => {
                let bytes = shareable
                    .then(|| run.sealed_bytes().map(Arc::from))
                    .flatten();
                return Led::value(run.finish_loaded(shareable), bytes);
            }
            _ => return Led::plain(Err(run.finish_error())),
        }
    }
}

/// A background refresh: claim, load, fill; nothing to serve. `read` is
/// the value its caller was served (the claim goes on only while it is
/// still there).
pub(crate) async fn refresh_async<V, F, Fut, E>(
    lookup: Lookup<'_, V>,
    loader: F,
    read: Option<Vec<u8>>,
) where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    let inner = lookup.cache.inner.clone();
    sync_async(&inner).await;
    let keys = inner.store_keys(&lookup.key);
    let flow = ReadFlow::refresh(inner.policy_for(&lookup, true));
    let mut run = Run::<V, E>::new(&lookup, &inner, keys, None, flow).with_read(read);
    let start = run.flow.start();
    steps::steps_async(&mut run, start, &mut Some(loader)).await;
}

/// Record in the wait's span how it ended.
fn noted<V, E>(span: &tracing::Span, waited: Waited<V, E>) -> Waited<V, E> {
    let outcome = match &waited {
        Waited::Value(..) => "value",
        Waited::Error(_) => "error",
        Waited::Retry => "retry",
    };
    span.record("outcome", outcome);
    waited
}

/// What a caller that waited for another caller's flight ends up with.
enum Waited<V, E> {
    /// The value, and its bytes when it is current.
    Value(V, Option<Arc<[u8]>>),
    Error(LoadError<E>),
    Retry,
}

/// Turn a flight outcome into what a waiting caller returns: the waiter
/// judges the value by its own policy (a stale-off caller never takes a
/// stale value from a stale-on leader).
fn waited<V: CacheValue, E: Send + Sync + 'static>(
    lookup: &Lookup<'_, V>,
    inner: &Inner,
    outcome: Outcome,
) -> Waited<V, E> {
    match outcome {
        Outcome::Value(bytes) => {
            // (An expired value is what the leader served by the fail-safe:
            // taken too.)
            let stale = match judge_bytes(inner, lookup, Some(&bytes), now_ms()) {
                Found::Value { stale, .. } => stale,
                _ => return Waited::Retry,
            };
            if stale && !lookup.stale_ok(&inner.settings()) {
                return Waited::Retry;
            }
            match Envelope::parse(&bytes).and_then(|e| e.decode::<V>()) {
                Ok(value) => {
                    let stats = inner.stats.of(lookup.spec);
                    stats.hit();
                    if stale {
                        stats.stale_hit();
                    }
                    if let Some(hit) = lookup.hit {
                        hit(&lookup.key, &value);
                    }
                    Waited::Value(value, (!stale).then_some(bytes))
                }
                // Another type under the same key: read for ourselves.
                Err(_) => Waited::Retry,
            }
        }
        // A caller that does not share errors never gets another caller's:
        // it loads for itself (its error type may not be cloneable).
        Outcome::Error(_) if !lookup.share_errors => Waited::Retry,
        Outcome::Error(error) => match error.downcast::<E>() {
            Ok(error) => Waited::Error(LoadError::Shared(error)),
            Err(_) => Waited::Retry,
        },
        Outcome::Retry => Waited::Retry,
    }
}

/// A lookup's local tier, when it has one in use: where a value read from the
/// store goes, if no invalidation event arrived since `seq`.
pub(crate) struct LocalUse<V> {
    tier: Arc<dyn Tier>,
    clone: fn(&V) -> V,
    seq: u64,
}

impl<V: CacheValue> LocalUse<V> {
    /// The value from the local tier (`Ok`), or what to fill it with after
    /// the store was read (`Err`; `None` when there is no tier in use).
    pub(crate) fn check(lookup: &Lookup<'_, V>, inner: &Inner) -> Result<V, Option<Self>> {
        let Some(clone) = lookup.local_clone else {
            return Err(None);
        };
        match inner
            .local
            .get::<V>(lookup.spec, &inner.stats, &inner.stamps, &lookup.key)
        {
            Ok(value) => {
                inner.stats.of(lookup.spec).local_hit();
                if let Some(hit) = lookup.hit {
                    hit(&lookup.key, &value);
                }
                Ok(value)
            }
            Err(None) => Err(None),
            Err(Some(tier)) => {
                inner.stats.of(lookup.spec).local_miss();
                // Read the sequence before the store: an event after this
                // point keeps the value read from the store out of the tier.
                let seq = inner.local.seq();
                Err(Some(LocalUse { tier, clone, seq }))
            }
        }
    }

    /// Keep a current value read or loaded through the store, with what
    /// its stored bytes say: its claim number and dependencies (judged on
    /// every local hit, like a remote one), and when it expires.
    pub(crate) fn fill(self, inner: &Inner, lookup: &Lookup<'_, V>, value: &V, bytes: &[u8]) {
        let Ok(Stored::Value(envelope)) = Stored::parse(bytes) else {
            return;
        };
        let settings = inner.settings();
        // Never longer than the value itself lives, nor past its refresh age.
        let mut until = u64::MAX;
        // From the writer's clock, unless it is ahead of ours: a clock 30 s
        // ahead must not keep a 1 s value here for 31 s.
        let written_at_ms = envelope.written_at_ms.min(crate::storage::now_ms());
        for limit in [
            lookup.ttl_of(value, &settings),
            lookup.effective_refresh_after(),
        ]
        .into_iter()
        .flatten()
        {
            let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            until = until.min(written_at_ms.saturating_add(limit));
        }
        let entry = crate::local::NewEntry {
            value: (self.clone)(value),
            clone: self.clone,
            envelope: &envelope,
            until_ms: until,
        };
        inner
            .local
            .insert(&*self.tier, &lookup.key, entry, self.seq);
    }
}

/// Whether the cache is left out of this call entirely.
fn bypass<V>(lookup: &Lookup<'_, V>) -> bool {
    if lookup.skip || !lookup.cache.inner.enabled() {
        return true;
    }
    if lookup.key.is_empty() {
        tracing::warn!(
            spec = lookup.spec.name(),
            "cacheme: empty cache key; the call is not cached"
        );
        return true;
    }
    false
}

/// The value in `bytes` (what a `get` read), if a reader with these settings
/// may be served it, and whether it is current; counted as a hit or a miss.
pub(crate) fn servable<V: CacheValue>(
    lookup: &Lookup<'_, V>,
    settings: &Settings,
    bytes: Option<&[u8]>,
) -> Option<(V, bool)> {
    let inner = &lookup.cache.inner;
    let stats = inner.stats.of(lookup.spec);
    // An expired value is a miss for `get`: it is kept only to be served
    // when a reload fails.
    let stale = match judge_bytes(inner, lookup, bytes, now_ms()) {
        Found::Value {
            stale,
            expired: false,
            ..
        } if !stale || lookup.stale_ok(settings) => stale,
        _ => {
            stats.miss();
            return None;
        }
    };
    let envelope = Envelope::parse(bytes?).ok()?;
    match envelope.decode::<V>() {
        Ok(value) => {
            stats.hit();
            if stale {
                stats.stale_hit();
            }
            Some((value, !stale))
        }
        Err(reason) => {
            stats.unreadable();
            stats.miss();
            tracing::warn!(key = %lookup.key, reason = %crate::error::Chain(&reason), "cacheme: unreadable value under our key; treating it as a miss");
            None
        }
    }
}

#[cfg(test)]
mod future_size {
    use super::*;
    use std::convert::Infallible;

    /// A value larger than the future's budget cares about.
    #[derive(serde::Serialize, serde::Deserialize, Clone)]
    struct Large {
        text: [String; 8],
        numbers: [u64; 16],
    }

    fn protocol_future_size<V: CacheValue>() -> usize {
        let cache = crate::Cache::builder().build().expect("memory store");
        let lookup = cache.lookup::<V>("k");
        let inner = &lookup.cache.inner;
        // A loader whose future is large too: it must not be inline either.
        let loader = || async {
            let buffer = [0u8; 4096];
            std::future::ready(()).await;
            std::hint::black_box(&buffer);
            Err::<V, Infallible>(unreachable_loader())
        };
        let future = load_remote_async(&lookup, inner, loader, false);
        let protocol = std::mem::size_of_val(&future);
        drop(future);
        // What a local hit builds and moves: the whole call's future.
        let call = cache.lookup::<V>("k").load(loader);
        protocol.max(std::mem::size_of_val(&call))
    }

    fn unreachable_loader() -> Infallible {
        unreachable!("the future is measured, never run")
    }

    /// Every read that reaches the store allocates the protocol's future
    /// (it is boxed, to keep local hits small; the call's own future, which a
    /// local hit builds and moves, is checked too). At most 1 KB, glibc serves
    /// that from its per-thread cache; past it, each remote hit paid for a
    /// slow allocation and a multi-KB copy (a 9 KB future once cost a
    /// remote hit 17,000 instructions). So: whatever the value's size or
    /// the loader's, the future stays under 1 KB (values, errors, loads,
    /// store requests and rare connection paths are boxed inside it).
    #[test]
    fn the_futures_stay_under_a_kilobyte() {
        for (what, size) in [
            ("String", protocol_future_size::<String>()),
            ("a 320-byte struct", protocol_future_size::<Large>()),
        ] {
            assert!(size <= 1024, "a future for {what} is {size} bytes");
        }
    }
}
