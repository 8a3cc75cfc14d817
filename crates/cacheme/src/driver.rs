//! The two drivers of the protocol: one async, one blocking.
//!
//! Both are the same loop over [`Step`]s: ask the [`ReadFlow`] what to do,
//! do it (a store op, a wait, the loader), feed the result back. Everything
//! that is not I/O (building ops, reading replies, hooks, stats, the
//! in-process flight) lives in [`Run`], shared by both; the drivers only
//! differ in `.await`. What needs no I/O at all (the enabled and skip
//! checks, the local tier) runs first, in [`before_store`].

use std::cell::OnceCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::cache::{Inner, Keeper, new_token};
use crate::envelope::{self, Envelope};
use crate::error::LoadError;
use crate::flight::{Join, Leader, Outcome};
use crate::key::StoreKeys;
use crate::local::Tier;
use crate::lookup::{CacheValue, Lookup};
use crate::protocol::{Claim, Found, ReadFlow, Serve, Step};
use crate::settings::Settings;
use crate::storage::memory::{ClaimRequest, FillRequest};
use crate::storage::{
    self, ClaimLease, Expiry, Extend, Fill, Get, IndexAdd, Register, Release, now_ms,
};

/// What a caller that waited for another caller's flight ends up with.
enum Waited<V, E> {
    /// The value, and whether it is fresh (not stale).
    Value(V, bool),
    Error(LoadError<E>),
    Retry,
}

/// How a call ended.
pub(crate) struct Led<V, E, F> {
    pub(crate) result: Result<V, LoadError<E>>,
    /// The loader, unused, when the value served must be refreshed in the
    /// background (only with [`Lookup::load_detached`]).
    pub(crate) refresh_with: Option<F>,
    /// The value is current (from a fresh read, or a load whose fill was not
    /// refused): it may go into the local tier.
    fresh: bool,
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
    // The store's timers and connection need a tokio runtime.
    if tokio::runtime::Handle::try_current().is_err() {
        return Led::plain(Box::pin(loader()).await.map_err(LoadError::Own));
    }
    // Boxed: the store's part is a large future (the whole protocol), and
    // keeping it inline would make every call, local hits included, move it.
    let led = Box::pin(load_remote_async(lookup, inner, loader, detached)).await;
    if let (Some(local), Ok(value)) = (local, &led.result)
        && led.fresh
    {
        local.fill(inner, &lookup.key, value);
    }
    led
}

/// Join the in-process flight for the key, or lead it.
async fn load_remote_async<V, F, Fut, E>(
    lookup: &Lookup<'_, V>,
    inner: &Arc<Inner>,
    loader: F,
    detached: bool,
) -> Led<V, E, F>
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    let keys = inner.store_keys(&lookup.key);
    let mut loader = Some(loader);
    let mut rounds = 0;
    loop {
        match inner.flights.join(keys.value()) {
            Join::Leader(leader) => {
                let loader = loader
                    .take()
                    .expect("only a leader takes the loader, and it returns");
                let flow = ReadFlow::read(inner.policy_for(lookup, detached));
                let mut run = Run::new(lookup, inner, keys, Some(leader), flow);
                return lead_async(&mut run, loader).await;
            }
            Join::Waiter(flight) => {
                inner.stats.coalesced();
                match waited(lookup, inner, flight.wait().await) {
                    Waited::Value(value, fresh) => return Led::value(value, fresh),
                    Waited::Error(error) => return Led::plain(Err(error)),
                    Waited::Retry => rounds += 1,
                }
            }
        }
        if rounds > inner.settings().herd_retries {
            let loader = loader.take().expect("the loader is still ours");
            return Led::plain(Box::pin(loader()).await.map_err(LoadError::Own));
        }
    }
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
        match steps_async(run, step, &mut loader).await {
            Step::Serve(serve) => match run.serve(serve) {
                Ok(value) => {
                    return Led {
                        result: Ok(value),
                        refresh_with: if serve.refresh { loader } else { None },
                        fresh: !serve.stale && !serve.refresh,
                    };
                }
                Err(next) => step = next,
            },
            Step::ServeLoaded { shareable } => {
                return Led::value(run.finish_loaded(shareable), shareable);
            }
            _ => return Led::plain(Err(run.finish_error())),
        }
    }
}

/// A background refresh: claim, load, fill; nothing to serve.
pub(crate) async fn refresh_async<V, F, Fut, E>(lookup: Lookup<'_, V>, loader: F)
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    let inner = lookup.cache.inner.clone();
    let keys = inner.store_keys(&lookup.key);
    let flow = ReadFlow::refresh(inner.policy_for(&lookup, true));
    let mut run = Run::<V, E>::new(&lookup, &inner, keys, None, flow);
    let start = run.flow.start();
    steps_async(&mut run, start, &mut Some(loader)).await;
}

/// Perform steps until the flow reaches one that ends it (a `Serve*`,
/// `ServeError` or `Done`), which is returned.
async fn steps_async<V, F, Fut, E>(
    run: &mut Run<'_, '_, V, E>,
    mut step: Step,
    loader: &mut Option<F>,
) -> Step
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    let inner = run.inner;
    let backend = &inner.backend;
    let report = inner.reporting(&run.settings);
    let mut ticket = None;
    loop {
        step = match step {
            Step::Read => {
                let reply = backend.run(&run.get_op(), &report).await;
                run.after_read(reply)
            }
            Step::Share => run.share(),
            Step::Claim => {
                ticket = Some(inner.wakeups.listen(run.keys.value()));
                let reply = backend.run(&run.claim_op(), &report).await;
                run.after_claim(reply)
            }
            Step::Wait(interval) => {
                run.begin_wait();
                let woken = match ticket.take() {
                    Some(ticket) => ticket.wait(interval).await,
                    None => false,
                };
                run.after_wait(woken)
            }
            Step::Load => {
                run.begin_load();
                let loader = loader.take().expect("a flow loads at most once");
                // Boxed, both, and made inside the box: the loader's future
                // (any size) and the lease renewal's store op would otherwise
                // be inline in the protocol's future, which every remote hit
                // allocates.
                let result = if run.flow.holds_lease() {
                    let extend = run.extend_op();
                    let lease_ttl = run.settings.lease_ttl;
                    Box::pin(renewing_lease(
                        loader(),
                        backend,
                        &extend,
                        &report,
                        lease_ttl,
                    ))
                    .await
                } else {
                    Box::pin(loader()).await
                };
                run.after_load(result)
            }
            Step::Fill => match run.fill_op() {
                Some(fill) => {
                    let reply = backend.run(&fill, &report).await;
                    run.after_fill(reply)
                }
                None => {
                    let _ = backend.run(&run.release_op(), &report).await;
                    run.after_fill(Ok(false))
                }
            },
            Step::Release => {
                let _ = backend.run(&run.release_op(), &report).await;
                run.flow.on_released()
            }
            end @ (Step::Serve(_) | Step::ServeLoaded { .. } | Step::ServeError | Step::Done) => {
                return end;
            }
        };
    }
}

/// Run `load` while renewing the lease every third of its lifetime.
async fn renewing_lease<T>(
    load: impl Future<Output = T>,
    backend: &storage::Backend,
    extend: &Extend<'_>,
    report: &storage::Reporting<'_>,
    lease_ttl: Duration,
) -> T {
    let renew = async {
        loop {
            tokio::time::sleep(lease_ttl / 3).await;
            if !matches!(backend.run(extend, report).await, Ok(true)) {
                // Lost or unreachable: the fill will tell.
                return;
            }
        }
    };
    tokio::pin!(load);
    tokio::select! {
        biased;
        output = &mut load => output,
        () = renew => load.await,
    }
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
    let (result, fresh) = load_remote_blocking(lookup, inner, loader);
    if let (Some(local), Ok(value)) = (local, &result)
        && fresh
    {
        local.fill(inner, &lookup.key, value);
    }
    result
}

/// [`load_remote_async`] without `.await`; the bool says whether the value is fresh.
fn load_remote_blocking<V, F, E>(
    lookup: &Lookup<'_, V>,
    inner: &Arc<Inner>,
    loader: F,
) -> (Result<V, LoadError<E>>, bool)
where
    V: CacheValue,
    F: FnOnce() -> Result<V, E>,
    E: Send + Sync + 'static,
{
    let keys = inner.store_keys(&lookup.key);
    let mut loader = Some(loader);
    let mut rounds = 0;
    loop {
        match inner.flights.join(keys.value()) {
            Join::Leader(leader) => {
                let loader = loader
                    .take()
                    .expect("only a leader takes the loader, and it returns");
                let flow = ReadFlow::read(inner.policy_for(lookup, false));
                let mut run = Run::new(lookup, inner, keys, Some(leader), flow);
                return lead_blocking(&mut run, loader);
            }
            Join::Waiter(flight) => {
                inner.stats.coalesced();
                match waited(lookup, inner, flight.wait_blocking()) {
                    Waited::Value(value, fresh) => return (Ok(value), fresh),
                    Waited::Error(error) => return (Err(error), false),
                    Waited::Retry => rounds += 1,
                }
            }
        }
        if rounds > inner.settings().herd_retries {
            let loader = loader.take().expect("the loader is still ours");
            return (loader().map_err(LoadError::Own), false);
        }
    }
}

fn lead_blocking<V, F, E>(run: &mut Run<'_, '_, V, E>, loader: F) -> (Result<V, LoadError<E>>, bool)
where
    V: CacheValue,
    F: FnOnce() -> Result<V, E>,
    E: Send + Sync + 'static,
{
    let mut loader = Some(loader);
    let mut step = run.flow.start();
    loop {
        match steps_blocking(run, step, &mut loader) {
            Step::Serve(serve) => match run.serve(serve) {
                Ok(value) => return (Ok(value), !serve.stale),
                Err(next) => step = next,
            },
            Step::ServeLoaded { shareable } => {
                return (Ok(run.finish_loaded(shareable)), shareable);
            }
            _ => return (Err(run.finish_error()), false),
        }
    }
}

/// [`steps_async`] without `.await`.
fn steps_blocking<V, F, E>(
    run: &mut Run<'_, '_, V, E>,
    mut step: Step,
    loader: &mut Option<F>,
) -> Step
where
    V: CacheValue,
    F: FnOnce() -> Result<V, E>,
    E: Send + Sync + 'static,
{
    let inner = run.inner;
    let backend = &inner.backend;
    let report = inner.reporting(&run.settings);
    let mut ticket = None;
    loop {
        step = match step {
            Step::Read => {
                let reply = backend.run_blocking(&run.get_op(), &report);
                run.after_read(reply)
            }
            Step::Share => run.share(),
            Step::Claim => {
                ticket = Some(inner.wakeups.listen(run.keys.value()));
                let reply = backend.run_blocking(&run.claim_op(), &report);
                run.after_claim(reply)
            }
            Step::Wait(interval) => {
                run.begin_wait();
                let woken = match ticket.take() {
                    Some(ticket) => ticket.wait_blocking(interval),
                    None => false,
                };
                run.after_wait(woken)
            }
            Step::Load => {
                run.begin_load();
                let load = loader.take().expect("a flow loads at most once");
                let result = if run.flow.holds_lease() {
                    let _renewed = Keeper::keep(inner, &run.keys, run.token(), run.registration());
                    load()
                } else {
                    load()
                };
                run.after_load(result)
            }
            Step::Fill => match run.fill_op() {
                Some(fill) => {
                    let reply = backend.run_blocking(&fill, &report);
                    run.after_fill(reply)
                }
                None => {
                    let _ = backend.run_blocking(&run.release_op(), &report);
                    run.after_fill(Ok(false))
                }
            },
            Step::Release => {
                let _ = backend.run_blocking(&run.release_op(), &report);
                run.flow.on_released()
            }
            end @ (Step::Serve(_) | Step::ServeLoaded { .. } | Step::ServeError | Step::Done) => {
                return end;
            }
        };
    }
}

impl<V, E, F> Led<V, E, F> {
    /// A result that must not go into the local tier.
    fn plain(result: Result<V, LoadError<E>>) -> Self {
        Led {
            result,
            refresh_with: None,
            fresh: false,
        }
    }

    fn value(value: V, fresh: bool) -> Self {
        Led {
            result: Ok(value),
            refresh_with: None,
            fresh,
        }
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
        match inner.local.get::<V>(lookup.spec, &inner.stats, &lookup.key) {
            Ok(value) => {
                inner.stats.local_hit();
                if let Some(hit) = lookup.hit {
                    hit(&lookup.key, &value);
                }
                Ok(value)
            }
            Err(None) => Err(None),
            Err(Some(tier)) => {
                inner.stats.local_miss();
                // Read the sequence before the store: an event after this
                // point keeps the value read from the store out of the tier.
                let seq = inner.local.seq();
                Err(Some(LocalUse { tier, clone, seq }))
            }
        }
    }

    /// Keep a fresh value read or loaded through the store.
    pub(crate) fn fill(self, inner: &Inner, key: &str, value: &V) {
        inner
            .local
            .insert(&*self.tier, key, (self.clone)(value), self.clone, self.seq);
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

/// Turn a flight outcome into what a waiting caller returns.
fn waited<V: CacheValue, E: Send + Sync + 'static>(
    lookup: &Lookup<'_, V>,
    inner: &Inner,
    outcome: Outcome,
) -> Waited<V, E> {
    match outcome {
        Outcome::Value(bytes) => match Envelope::parse(&bytes)
            .and_then(|e| Ok((e.decode::<V>()?, e.state == envelope::State::Fresh)))
        {
            Ok((value, fresh)) => {
                inner.stats.hit();
                if let Some(hit) = lookup.hit {
                    hit(&lookup.key, &value);
                }
                Waited::Value(value, fresh)
            }
            // Another type under the same key: read for ourselves.
            Err(_) => Waited::Retry,
        },
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

/// Classify what a read returned; report what is not ours.
fn classify(inner: &Inner, key: &str, read: Option<&[u8]>) -> Found {
    match read {
        None => Found::Missing,
        Some(bytes) => match Envelope::parse(bytes) {
            Ok(envelope) => Found::Value {
                state: envelope.state,
                written_at_ms: envelope.written_at_ms,
            },
            Err(reason) => {
                inner.stats.unreadable();
                tracing::warn!(key, reason = %crate::error::Chain(&reason), "cacheme: unreadable value under our key; treating it as a miss");
                Found::Unreadable
            }
        },
    }
}

/// The value in `bytes` (what a `get` read), if a reader with these settings
/// may be served it, and whether it is fresh; counted as a hit or a miss.
pub(crate) fn servable<V: CacheValue>(
    lookup: &Lookup<'_, V>,
    settings: &Settings,
    bytes: Option<&[u8]>,
) -> Option<(V, bool)> {
    let stats = &lookup.cache.inner.stats;
    let stale_ok = lookup.stale_ok(settings);
    let decoded = match bytes.map(Envelope::parse) {
        None => None,
        Some(Ok(envelope)) if envelope.state == envelope::State::Stale && !stale_ok => None,
        Some(Ok(envelope)) => Some(envelope.decode().map(|value| (value, envelope.state))),
        Some(Err(reason)) => Some(Err(reason)),
    };
    match decoded {
        Some(Ok((value, state))) => {
            stats.hit();
            if state == envelope::State::Stale {
                stats.stale_hit();
            }
            Some((value, state == envelope::State::Fresh))
        }
        Some(Err(reason)) => {
            stats.unreadable();
            stats.miss();
            tracing::warn!(key = %lookup.key, reason = %crate::error::Chain(&reason), "cacheme: unreadable value under our key; treating it as a miss");
            None
        }
        None => {
            stats.miss();
            None
        }
    }
}

/// One leader's call: the flow and everything the steps produce.
struct Run<'r, 'a, V, E> {
    lookup: &'r Lookup<'a, V>,
    inner: &'r Arc<Inner>,
    settings: Arc<Settings>,
    keys: StoreKeys,
    flow: ReadFlow,
    /// This caller's lease token, made when it first claims (a hit needs none).
    token: OnceCell<String>,
    read: Option<Vec<u8>>,
    /// Boxed, like `error`: values and errors of any size stay out of the
    /// protocol's future (only loads pay for the box).
    loaded: Option<Box<V>>,
    sealed: Option<Vec<u8>>,
    /// The indexes the key joins before loading (tag and groups known
    /// upfront), made when it first takes the lease.
    registration: OnceCell<Vec<IndexAdd>>,
    /// The indexes written with the fill (also the groups of the value).
    indexes: Vec<IndexAdd>,
    ttl_ms: Option<u64>,
    /// This caller waited for another caller's load at least once.
    waited: bool,
    error: Option<Box<E>>,
    leader: Option<Leader<'r>>,
}

impl<'r, 'a, V: CacheValue, E: Send + Sync + 'static> Run<'r, 'a, V, E> {
    fn new(
        lookup: &'r Lookup<'a, V>,
        inner: &'r Arc<Inner>,
        keys: StoreKeys,
        leader: Option<Leader<'r>>,
        flow: ReadFlow,
    ) -> Self {
        let settings = inner.settings();
        let ttl = lookup.effective_ttl(&settings);
        let ttl_ms = ttl.map(|ttl| (ttl.as_millis() as u64).max(1));
        Run {
            lookup,
            inner,
            settings,
            keys,
            flow,
            token: OnceCell::new(),
            read: None,
            loaded: None,
            sealed: None,
            registration: OnceCell::new(),
            indexes: Vec::new(),
            ttl_ms,
            waited: false,
            error: None,
            leader,
        }
    }

    fn found(&self) -> Found {
        classify(self.inner, &self.lookup.key, self.read.as_deref())
    }

    fn token(&self) -> &str {
        self.token.get_or_init(new_token)
    }

    /// Registered until the load is over: the lease's life (renewed with
    /// it), plus the value's TTL so that registering never shortens it.
    fn registration(&self) -> &[IndexAdd] {
        self.registration.get_or_init(|| {
            self.inner.indexes(
                Some(self.lookup.spec.tag()),
                self.lookup.groups.as_slice(),
                Expiry::After(self.ttl_ms.unwrap_or(0) + self.lease_ms()),
                true,
            )
        })
    }

    fn get_op(&self) -> Get<'_> {
        Get { keys: &self.keys }
    }

    fn after_read(&mut self, reply: Result<Option<Vec<u8>>>) -> Step {
        match reply {
            Ok(read) => {
                self.read = read;
                self.flow.on_read(self.found(), now_ms())
            }
            Err(_) => self.flow.on_store_error(),
        }
    }

    /// Hand the value just read to this process's waiters (before an inline refresh).
    fn share(&mut self) -> Step {
        if let (Some(leader), Some(read)) = (self.leader.take(), &self.read) {
            leader.finish(|| Outcome::Value(Arc::from(read.as_slice())));
        }
        self.flow.on_shared()
    }

    fn claim_op(&self) -> ClaimLease<'_> {
        // (The flow knows how old a value may be: refresh_after and values
        // already found undecodable.)
        ClaimLease {
            claim: ClaimRequest {
                keys: &self.keys,
                token: self.token(),
                lease_ms: self.lease_ms(),
                fresh_since_ms: self.flow.fresh_since_ms(now_ms()),
                stale_ok: self.flow.stale_ok(),
            },
            register: self.register(),
        }
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease_ttl.as_millis() as u64
    }

    fn after_claim(&mut self, reply: Result<(Claim, Option<Vec<u8>>)>) -> Step {
        match reply {
            Ok((claim, read)) => {
                // Keep what the first read found when the key is gone now:
                // it may be the stale value to serve while someone refreshes.
                if read.is_some() {
                    self.read = read;
                }
                self.flow.on_claim(claim, self.found(), now_ms())
            }
            Err(_) => self.flow.on_store_error(),
        }
    }

    fn begin_wait(&mut self) {
        self.inner.stats.wait();
        self.waited = true;
    }

    fn after_wait(&mut self, woken: bool) -> Step {
        if woken {
            self.inner.stats.woken();
        }
        self.flow.on_wait_done()
    }

    fn begin_load(&self) {
        let stats = &self.inner.stats;
        stats.miss();
        stats.load();
        if !self.flow.holds_lease() && self.waited {
            stats.wait_exhausted();
        }
        if let Some(miss) = self.lookup.miss {
            miss(&self.lookup.key);
        }
    }

    fn after_load(&mut self, result: Result<V, E>) -> Step {
        match result {
            Ok(value) => {
                if self.flow.holds_lease() {
                    self.prepare_fill(&value);
                } else {
                    self.seal(&value);
                }
                self.loaded = Some(Box::new(value));
                self.flow.on_loaded(true)
            }
            Err(error) => {
                self.inner.stats.load_error();
                self.error = Some(Box::new(error));
                self.flow.on_loaded(false)
            }
        }
    }

    /// Serialize the value into an envelope, if it can be and is not too large.
    fn seal(&mut self, value: &V) {
        match self.inner.codec.encode(value) {
            Ok(payload) => {
                let sealed = envelope::seal(self.inner.codec, now_ms(), &payload);
                let max = self.settings.max_value_size;
                if sealed.len() > max {
                    self.inner.stats.not_stored();
                    self.inner
                        .warn_oversize(&self.lookup.key, sealed.len(), max);
                } else {
                    self.sealed = Some(sealed);
                }
            }
            Err(reason) => {
                self.inner.stats.not_stored();
                tracing::warn!(key = %self.lookup.key, reason = %crate::error::Chain(&reason), "cacheme: value does not serialize; returned but not stored");
            }
        }
    }

    /// Seal the value, and work out the index writes that go with the fill:
    /// every index (the tag, the groups known upfront, and the groups
    /// computed from the value, unknown until now), with the value's real
    /// expiry, so that members leave their indexes when the value expires.
    /// (Pruning happened with the registration.)
    fn prepare_fill(&mut self, value: &V) {
        self.seal(value);
        let mut groups = self.lookup.groups.clone();
        if let Some(groups_of) = self.lookup.groups_of {
            groups_of(value, &mut groups);
        }
        let expiry = match self.ttl_ms {
            Some(ms) => Expiry::After(ms),
            None => Expiry::Never,
        };
        self.indexes = self.inner.indexes(
            Some(self.lookup.spec.tag()),
            groups.as_slice(),
            expiry,
            false,
        );
    }

    /// The fill, or None when the value cannot be stored (then the lease is released).
    fn fill_op(&self) -> Option<Fill<'_>> {
        let sealed = self.sealed.as_deref()?;
        Some(Fill(FillRequest {
            prefix: &self.inner.prefix,
            keys: &self.keys,
            token: self.token(),
            envelope: sealed,
            ttl_ms: self.ttl_ms,
            lease_ms: self.lease_ms(),
            indexes: &self.indexes,
        }))
    }

    fn after_fill(&mut self, reply: Result<bool>) -> Step {
        match reply {
            Ok(true) => {
                self.inner.stats.fill();
                self.flow.on_filled(true)
            }
            Ok(false) if self.sealed.is_some() => {
                // The lease was revoked by an invalidation while we loaded.
                self.inner.stats.fill_revoked();
                self.flow.on_filled(false)
            }
            // Not storable: returned to the caller, released.
            Ok(false) => self.flow.on_filled(true),
            Err(_) => self.flow.on_store_error(),
        }
    }

    fn release_op(&self) -> Release<'_> {
        Release {
            keys: &self.keys,
            token: self.token(),
            lease_ms: self.lease_ms(),
        }
    }

    fn register(&self) -> Register<'_> {
        Register {
            prefix: &self.inner.prefix,
            keys: &self.keys,
            indexes: self.registration(),
        }
    }

    fn extend_op(&self) -> Extend<'_> {
        Extend {
            register: self.register(),
            token: self.token(),
            lease_ms: self.settings.lease_ttl.as_millis() as u64,
        }
    }

    /// Serve the value read; if it does not decode, the flow goes on as for a miss.
    fn serve(&mut self, serve: Serve) -> Result<V, Step> {
        let (decoded, written_at_ms) = match self.read.as_deref().map(Envelope::parse) {
            Some(Ok(envelope)) => (envelope.decode::<V>(), envelope.written_at_ms),
            Some(Err(reason)) => (Err(reason), 0),
            None => (Err(envelope::Unreadable::Truncated { len: 0 }), 0),
        };
        match decoded {
            Ok(value) => {
                let stats = &self.inner.stats;
                stats.hit();
                if serve.stale {
                    stats.stale_hit();
                }
                if let (Some(leader), Some(read)) = (self.leader.take(), &self.read) {
                    leader.finish(|| Outcome::Value(Arc::from(read.as_slice())));
                }
                if let Some(hit) = self.lookup.hit {
                    hit(&self.lookup.key, &value);
                }
                Ok(value)
            }
            Err(reason) => {
                self.inner.stats.unreadable();
                tracing::warn!(key = %self.lookup.key, reason = %crate::error::Chain(&reason), "cacheme: stored value does not decode; reloading it");
                Err(self.flow.on_undecodable(written_at_ms, now_ms()))
            }
        }
    }

    fn finish_loaded(&mut self, shareable: bool) -> V {
        if let Some(leader) = self.leader.take() {
            let sealed = self.sealed.take();
            leader.finish(|| match sealed {
                Some(sealed) if shareable => Outcome::Value(Arc::from(sealed)),
                _ => Outcome::Retry,
            });
        }
        *self
            .loaded
            .take()
            .expect("the flow serves a loaded value only after a successful load")
    }

    fn finish_error(&mut self) -> LoadError<E> {
        let error = *self
            .error
            .take()
            .expect("the flow serves an error only after a failed load");
        let Some(leader) = self.leader.take() else {
            return LoadError::Own(error);
        };
        if !self.lookup.share_errors {
            leader.finish(|| Outcome::Retry);
            return LoadError::Own(error);
        }
        let mut own = Some(error);
        let mut shared = None;
        leader.finish(|| {
            let error = Arc::new(own.take().expect("taken once"));
            shared = Some(error.clone());
            Outcome::Error(error)
        });
        match (own, shared) {
            (Some(error), _) => LoadError::Own(error),
            (None, Some(shared)) => LoadError::Shared(shared),
            (None, None) => unreachable!("the error is either kept or shared"),
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
