//! [`Run`]: one leader's call, everything but the I/O. The drivers
//! (`steps.rs`) ask it for each step's op, perform the op, and hand it the
//! reply; it feeds the [`ReadFlow`] and keeps what the steps produce.

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lease::{HeldLease, new_token};
use crate::Result;
use crate::cache::Inner;
use crate::envelope::{self, Dependency, Envelope, Header};
use crate::error::{Chain, LoadError};
use crate::flight::{Leader, Outcome};
use crate::key::StoreKeys;
use crate::lookup::{CacheValue, Lookup};
use crate::node::InvalidKeys;
use crate::protocol::{Claim, Found, Lease, ReadFlow, Serve, Step};
use crate::settings::Settings;
use crate::stamps::Verdict;
use crate::stats::Counted;
use crate::storage::{
    ClaimRefresh, Fill, Get, Invalidate, ReadClaim, Release, Removal, Watch, now_ms,
};

/// One leader's call: the flow and everything the steps produce.
pub(crate) struct Run<'r, 'a, V, E> {
    pub(super) lookup: &'r Lookup<'a, V>,
    pub(super) inner: &'r Arc<Inner>,
    pub(super) settings: Arc<Settings>,
    pub(super) keys: StoreKeys,
    pub(super) flow: ReadFlow,
    /// This caller's lease token, made when it first claims (a hit needs none).
    token: OnceCell<String>,
    placeholder: OnceCell<Vec<u8>>,
    /// What the key held at the last read, watch or claim.
    read: Option<Vec<u8>>,
    /// The invalidation sequence this process had seen before the step that
    /// took the lease: the claim number of the value this call loads.
    seen_seq: Cell<u64>,
    claim_seq: u64,
    /// Boxed: only loads need it.
    held: Option<Box<HeldLease>>,
    /// Boxed, like `error`: values and errors of any size stay out of the
    /// protocol's future (only loads pay for the box).
    loaded: Option<Box<V>>,
    sealed: Option<Vec<u8>>,
    ttl_ms: Option<u64>,
    /// This caller waited for another caller's load at least once.
    waited: bool,
    /// Reads are plain GETs (see [`Run::reads_only`]).
    reads_only: bool,
    /// The loader outlasted the hard timeout.
    timed_out: bool,
    /// The key held another Redis type: delete it before reading again.
    repair_pending: bool,
    /// A repair was tried (once per call).
    repaired: bool,
    error: Option<Box<E>>,
    leader: Option<Leader<'r>>,
}

impl<'r, 'a, V: CacheValue, E: Send + Sync + 'static> Run<'r, 'a, V, E> {
    pub(super) fn new(
        lookup: &'r Lookup<'a, V>,
        inner: &'r Arc<Inner>,
        keys: StoreKeys,
        leader: Option<Leader<'r>>,
        flow: ReadFlow,
    ) -> Self {
        let settings = inner.settings();
        let ttl_ms = lookup
            .effective_ttl(&settings)
            .map(|ttl| millis(ttl).max(1));
        Run {
            lookup,
            inner,
            settings,
            keys,
            flow,
            token: OnceCell::new(),
            placeholder: OnceCell::new(),
            read: None,
            seen_seq: Cell::new(0),
            claim_seq: 0,
            held: None,
            loaded: None,
            sealed: None,
            ttl_ms,
            waited: false,
            reads_only: false,
            timed_out: false,
            repair_pending: false,
            repaired: false,
            error: None,
            leader,
        }
    }

    /// A background refresh starts from the value its caller was served.
    pub(super) fn with_read(mut self, read: Option<Vec<u8>>) -> Self {
        self.read = read;
        self
    }

    /// Where this call counts: the totals and its node (looked up when
    /// needed: keeping it would grow the protocol's future).
    pub(super) fn stats(&self) -> Counted<'r> {
        self.inner.stats.of(self.lookup.spec)
    }

    fn token(&self) -> &str {
        self.token.get_or_init(new_token)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// What the key held, judged for this caller.
    fn found(&self) -> Found {
        judge_bytes(self.inner, self.lookup, self.read.as_deref(), now_ms())
    }

    pub(super) fn read_op(&self) -> ReadClaim<'_> {
        self.seen_seq.set(self.inner.stamps.latest());
        let placeholder = self
            .placeholder
            .get_or_init(|| envelope::placeholder(self.token.get_or_init(new_token)));
        ReadClaim {
            keys: &self.keys,
            placeholder,
            lease_ms: self.lease_ms(),
        }
    }

    /// Whether reads are plain `GET`s: the server refused the claiming
    /// read for lack of memory (`noeviction`), so this call reads without
    /// claiming (and loads without storing on a miss).
    pub(super) fn reads_only(&self) -> bool {
        self.reads_only
    }

    /// The deletion of a foreign value found by the last read, once.
    pub(super) fn repair_op(&mut self) -> Option<Invalidate<'_>> {
        if !std::mem::take(&mut self.repair_pending) {
            return None;
        }
        Some(Invalidate {
            keys: std::slice::from_ref(&self.keys),
            removal: Removal::Delete,
        })
    }

    pub(super) fn get_op(&self) -> Get<'_> {
        Get { keys: &self.keys }
    }

    /// The read's reply, and how long the store took to give it.
    /// A read of the store answered after `took`: into the node's histogram.
    pub(super) fn record_read<T>(&self, reply: &Result<T>, took: Duration) {
        if reply.is_ok() {
            self.stats().record_read(took);
        }
    }

    pub(super) fn after_read(&mut self, reply: Result<Option<Vec<u8>>>) -> Step {
        match reply {
            Ok(None) if self.reads_only => {
                self.read = None;
                self.flow.on_store_error()
            }
            Ok(None) => {
                self.read = None;
                self.take_lease(Lease::Placeholder);
                self.flow.on_read(Found::Missing, true, now_ms())
            }
            Ok(Some(bytes)) => {
                self.read = Some(bytes);
                self.flow.on_read(self.found(), false, now_ms())
            }
            Err(error) if !self.repaired && error.is_wrong_type() => {
                // Another Redis type (a hash, a list...) under the key:
                // written by something else, never servable. Delete it
                // (see `repair_op`) and read again, once.
                self.repaired = true;
                self.repair_pending = true;
                Step::Read
            }
            Err(error) if !self.reads_only && error.is_out_of_memory() => {
                // A full server under `noeviction` refuses every write, the
                // claiming read included: read again with a plain GET.
                self.reads_only = true;
                Step::Read
            }
            Err(error) => {
                if !self.reads_only && error.may_have_run() {
                    // The claiming read may still run when the server
                    // resumes, leaving this caller's placeholder: give it
                    // back once the store answers.
                    self.inner
                        .pending
                        .release_later(self.inner, &self.keys, self.token());
                }
                self.flow.on_store_error()
            }
        }
    }

    pub(super) fn watch_op(&self) -> Watch<'_> {
        Watch { keys: &self.keys }
    }

    pub(super) fn after_watch(&mut self, reply: Result<Option<Vec<u8>>>) -> Step {
        match reply {
            Ok(read) => {
                self.read = read;
                self.flow.on_watch(self.found(), now_ms())
            }
            Err(_) => self.flow.on_store_error(),
        }
    }

    /// Hand the value just read to this process's waiters (before an inline refresh).
    pub(super) fn share(&mut self) -> Step {
        if let (Some(leader), Some(read)) = (self.leader.take(), &self.read) {
            leader.finish(|| Outcome::Value(Arc::from(read.as_slice())));
        }
        self.flow.on_shared()
    }

    pub(super) fn claim_op(&self, wait: bool) -> ClaimRefresh<'_> {
        self.seen_seq.set(self.inner.stamps.latest());
        let expected = match &self.read {
            Some(read) => &read[..read.len().min(envelope::HEADER_LEN)],
            None => &[],
        };
        ClaimRefresh {
            keys: &self.keys,
            token: self.token.get_or_init(new_token),
            lease_ms: self.lease_ms(),
            expected,
            wait,
        }
    }

    pub(super) fn after_claim(&mut self, reply: Result<(Claim, Option<Vec<u8>>)>) -> Step {
        match reply {
            Ok((claim, read)) => {
                if claim == Claim::Changed {
                    self.read = read;
                } else if read.is_some() {
                    // Keep what the first read found: it may be the stale
                    // value to serve while someone refreshes.
                    self.read = read;
                }
                if claim == Claim::Acquired {
                    self.take_lease(Lease::Key);
                }
                self.flow.on_claim(claim, self.found(), now_ms())
            }
            Err(_) => self.flow.on_store_error(),
        }
    }

    fn take_lease(&mut self, lease: Lease) {
        self.claim_seq = self.seen_seq.get();
        let held = HeldLease::hold(self.inner, &self.keys, self.token(), lease);
        self.held = Some(Box::new(held));
    }

    /// This caller waits for another's load: its span (trace level:
    /// `cacheme.wait`, ended with whether it was woken).
    pub(super) fn begin_wait(&mut self) {
        self.stats().wait();
        self.waited = true;
    }

    /// The span of a wait for another process's load (trace level:
    /// `cacheme.wait`; its outcome is `woken` or `interval`).
    pub(super) fn wait_span(&self) -> tracing::Span {
        crate::stats::span!(TRACE, "cacheme.wait", self.lookup, &self.settings)
    }

    pub(super) fn after_wait(&mut self, woken: bool) -> Step {
        if woken {
            self.stats().woken();
        }
        self.flow.on_wait_done()
    }

    pub(super) fn begin_load(&self) {
        if self.flow.has_fail_safe()
            && let (Some(leader), Some(read)) = (&self.leader, &self.read)
        {
            // Callers waiting in this process may take the expired value
            // after their soft timeout, while this load runs.
            leader.offer_fallback(read);
        }
        let stats = self.stats();
        stats.miss();
        stats.load();
        if self.flow.lease().is_none() && self.waited {
            stats.wait_exhausted();
        }
        if let Some(miss) = self.lookup.miss {
            miss(&self.lookup.key);
        }
    }

    /// The loader is about to run: its span (debug level: `cacheme.load`,
    /// with the node, the key unless `Settings::redact_keys`, and the
    /// outcome once it ends), and when it started.
    pub(super) fn start_load(&self) -> Loading {
        Loading {
            span: crate::stats::span!(DEBUG, "cacheme.load", self.lookup, &self.settings),
            started: Instant::now(),
        }
    }

    /// The loader ended (or was given up): record how long it ran.
    pub(super) fn end_load(&self, loading: &Loading, outcome: &'static str) {
        self.stats().record_load(loading.started.elapsed());
        loading.span.record("outcome", outcome);
    }

    /// How long this call waits for its own loader, if a hard timeout
    /// applies: when it may end in an error, or serve an expired value.
    pub(super) fn hard_timeout(&self) -> Option<std::time::Duration> {
        if self.lookup.timeout_errors || self.flow.has_fail_safe() {
            self.lookup.effective_hard_timeout(&self.settings)
        } else {
            None
        }
    }

    /// The loader outlasted the hard timeout (its future was dropped).
    pub(super) fn after_timeout(&mut self, after: std::time::Duration) -> Step {
        let _ = after;
        self.stats().load_timeout();
        self.timed_out = true;
        self.flow.on_loaded(false, false)
    }

    pub(super) fn after_load(&mut self, result: std::result::Result<V, E>) -> Step {
        match result {
            Ok(value) => {
                let storable = self.seal(&value);
                self.loaded = Some(Box::new(value));
                self.flow.on_loaded(true, storable)
            }
            Err(error) => {
                self.stats().load_error();
                self.error = Some(Box::new(error));
                self.flow.on_loaded(false, false)
            }
        }
    }

    /// Serialize the value into an envelope with its claim number and
    /// dependencies (the tag, the groups known upfront and those computed
    /// from the value). False when it must not be stored: it does not
    /// serialize, it is too large, or an invalidation of one of its
    /// dependencies is already known to have happened since the claim (the
    /// load may predate it).
    fn seal(&mut self, value: &V) -> bool {
        let mut groups = self.lookup.groups.clone();
        if let Some(groups_of) = self.lookup.groups_of {
            groups_of(value, &mut groups);
        }
        let dependencies = dependencies(self.lookup.spec.tag(), &groups);
        let codec = self.inner.codec;
        let payload = match codec.encode(value) {
            Ok(payload) => payload,
            Err(error) => {
                self.stats().not_stored();
                tracing::warn!(key = %self.lookup.key, error = %Chain(&error), "cacheme: value does not serialize; returned but not stored");
                return false;
            }
        };
        if self.lookup.ttl_for.is_some() {
            // The time to live comes from the value itself.
            self.ttl_ms = self
                .lookup
                .ttl_of(value, &self.settings)
                .map(|ttl| millis(ttl).max(1));
        }
        let now = now_ms();
        let header = Header {
            codec,
            written_at_ms: now,
            claim_seq: self.claim_seq,
            fresh_until_ms: match (self.fail_safe_ms(), self.ttl_ms) {
                (Some(_), Some(ttl)) => now.saturating_add(ttl),
                _ => 0,
            },
            dependencies: &dependencies,
        };
        let sealed = match self.settings.compress_above {
            Some(threshold) => envelope::seal_compressing(&header, &payload, threshold),
            None => envelope::seal(&header, &payload),
        };
        let Some(sealed) = sealed else {
            self.stats().not_stored();
            tracing::warn!(key = %self.lookup.key, "cacheme: a dependency name is longer than 65,535 bytes; returned but not stored");
            return false;
        };
        let max = self.settings.max_value_size;
        if sealed.len() > max {
            self.stats().not_stored();
            self.inner
                .warn_oversize(&self.lookup.key, sealed.len(), max);
            return false;
        }
        let current = self.flow.lease().is_none()
            || self
                .inner
                .stamps
                .judge(self.claim_seq, dependencies.iter().copied())
                == Verdict::Current;
        self.sealed = Some(sealed);
        if !current {
            // Invalidated while it loaded: not stored, not shared.
            self.stats().fill_revoked();
        }
        current
    }

    /// The fill, when the flow holds a lease and the value was sealed.
    pub(super) fn fill_op(&self) -> Option<Fill<'_>> {
        Some(Fill {
            keys: &self.keys,
            lease: self.flow.lease()?,
            token: self.token(),
            envelope: self.sealed.as_deref()?,
            ttl_ms: self.stored_ttl_ms(),
        })
    }

    /// How long past its TTL a stored value is kept (fail-safe), if at all.
    fn fail_safe_ms(&self) -> Option<u64> {
        self.lookup.effective_fail_safe(&self.settings).map(millis)
    }

    /// How long a stored value lives in the store: its TTL, plus the
    /// fail-safe's extra time when there is one.
    fn stored_ttl_ms(&self) -> Option<u64> {
        self.ttl_ms
            .map(|ttl| ttl.saturating_add(self.fail_safe_ms().unwrap_or(0)))
    }

    /// The throttle's write-back: the expired value read, fresh for
    /// `fail_safe_throttle`, kept for the fail-safe's time after that.
    pub(super) fn throttle_op(&mut self) -> Option<Fill<'_>> {
        let throttle = self.lookup.effective_fail_safe_throttle(&self.settings);
        let throttle_ms = u64::try_from(throttle.as_millis()).unwrap_or(u64::MAX);
        let fresh_until = now_ms().saturating_add(throttle_ms);
        self.sealed = Some(envelope::with_fresh_until(
            self.read.as_deref()?,
            fresh_until,
        ));
        Some(Fill {
            keys: &self.keys,
            lease: self.flow.lease()?,
            token: self.token(),
            envelope: self.sealed.as_deref()?,
            ttl_ms: Some(throttle_ms.saturating_add(self.fail_safe_ms().unwrap_or(0))),
        })
    }

    pub(super) fn after_throttle(&mut self) -> Step {
        if let Some(held) = self.held.take() {
            held.done();
        }
        self.flow.on_throttled()
    }

    pub(super) fn after_fill(&mut self, reply: Result<bool>) -> Step {
        if let Some(held) = self.held.take() {
            held.done();
        }
        match reply {
            Ok(true) => {
                self.stats().fill();
                self.flow.on_filled(true)
            }
            Ok(false) => {
                // The lease was revoked by an invalidation while we loaded.
                self.stats().fill_revoked();
                self.flow.on_filled(false)
            }
            Err(_) => self.flow.on_store_error(),
        }
    }

    pub(super) fn release_op(&self) -> Option<Release<'_>> {
        Some(Release {
            keys: &self.keys,
            lease: self.flow.lease()?,
            token: self.token(),
        })
    }

    pub(super) fn after_release(&mut self) -> Step {
        if let Some(held) = self.held.take() {
            held.done();
        }
        self.flow.on_released(self.loaded.is_some())
    }

    /// Serve the value read; if it does not decode, the flow goes on as for
    /// an unusable value.
    pub(super) fn serve(&mut self, serve: Serve) -> std::result::Result<V, Step> {
        let decoded = match self.read.as_deref().map(Envelope::parse) {
            Some(Ok(envelope)) => envelope.decode::<V>(),
            Some(Err(reason)) => Err(reason),
            None => Err(envelope::Unreadable::Truncated { len: 0 }),
        };
        match decoded {
            Ok(value) => {
                let stats = self.stats();
                stats.hit();
                if serve.stale {
                    stats.stale_hit();
                }
                if serve.fail_safe {
                    stats.fail_safe_served();
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
                self.stats().unreadable();
                tracing::warn!(key = %self.lookup.key, reason = %Chain(&reason), "cacheme: stored value does not decode; reloading it");
                Err(self.flow.on_undecodable())
            }
        }
    }

    /// The bytes served, for the local tier: what was read.
    pub(super) fn read_bytes(&self) -> Option<&[u8]> {
        self.read.as_deref()
    }

    /// The bytes of the value loaded and stored, for the local tier.
    pub(super) fn sealed_bytes(&self) -> Option<&[u8]> {
        self.sealed.as_deref()
    }

    pub(super) fn finish_loaded(&mut self, shareable: bool) -> V {
        if let Some(leader) = self.leader.take() {
            let sealed = self.sealed.clone();
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

    pub(super) fn finish_error(&mut self) -> LoadError<E> {
        if self.timed_out {
            if let Some(leader) = self.leader.take() {
                leader.finish(|| Outcome::Retry);
            }
            let after = self.hard_timeout().unwrap_or_default();
            return LoadError::TimedOut(after);
        }
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

/// A load in progress: its span, and when it started.
pub(crate) struct Loading {
    pub(super) span: tracing::Span,
    started: Instant,
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A value's dependencies: its tag, then its groups.
pub(crate) fn dependencies<'d>(tag: &'d str, groups: &'d InvalidKeys) -> Vec<Dependency<'d>> {
    let mut dependencies = Vec::with_capacity(1 + groups.len());
    dependencies.push(Dependency::Tag(tag));
    dependencies.extend(groups.as_slice().iter().map(|g| Dependency::Group(g)));
    dependencies
}

/// What stored bytes are to a reader of this cache: judged by their state
/// byte and by the invalidation sequence. Reports what is not ours.
pub(crate) fn judge_bytes<V>(
    inner: &Inner,
    lookup: &Lookup<'_, V>,
    read: Option<&[u8]>,
    now_ms: u64,
) -> Found {
    match crate::protocol::judge(&inner.stamps, read, now_ms) {
        Ok(found) => found,
        Err(reason) => {
            inner.stats.of(lookup.spec).unreadable();
            tracing::warn!(key = %lookup.key, reason = %Chain(&reason), "cacheme: unreadable value under our key; treating it as a miss");
            Found::Unusable
        }
    }
}
