//! `create_invalidation`: invalidate by key, by invalid key (dependency
//! group), by pattern and by tag, alone or together.
//!
//! | target        | what happens to the values                                   | cost        |
//! |---------------|--------------------------------------------------------------|-------------|
//! | key           | marked stale in place (stale-on readers may still serve them)| one script per key |
//! | invalid key   | every dependent value is stale                               | O(1)        |
//! | tag           | every value is deleted (never served again)                  | O(1)        |
//! | pattern       | deleted                                                      | a scan      |
//!
//! Keys and patterns change the values in place and revoke their leases, so
//! a load that began before the invalidation cannot store its result. Tags
//! and invalid keys are O(1): the invalidation takes the next number of the
//! invalidation sequence, and every value claimed before it that depends on
//! the tag or group is judged stale or deleted by its readers, loads in
//! flight included (see `crate::stamps`). Every invalidation is announced to
//! the other processes (their local tiers and what they know of the
//! sequence) before it returns. Invalidations return their errors: an
//! invalidation that did not happen must not go unnoticed.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::Result;
use crate::cache::{Cache, Inner, global};
use crate::events::Invalidated;
use crate::key::{self, StoreKeys};
use crate::storage::{Invalidate, PAGE, Primaries, Record, Removal, ScanPage, WaitReplicas};

/// A pattern over cache keys, for pattern invalidation.
///
/// Patterns are Redis globs (`*`, `?`, `[..]`). User input must never become
/// a glob by accident: [`Pattern::prefix`] and [`Pattern::literal`] escape
/// their text, and only [`Pattern::glob`] takes a raw glob.
///
/// ```
/// use cacheme::Pattern;
/// assert_eq!(Pattern::prefix("cat:").as_glob(), "cat:*");
/// assert_eq!(Pattern::prefix("a*b").as_glob(), "a\\*b*");
/// assert_eq!(Pattern::glob("test*").as_glob(), "test*");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Keys that start with `prefix` (escaped: `*`, `?`, `[`, `]`, `\` match themselves).
    pub fn prefix(prefix: &str) -> Self {
        Pattern(format!("{}*", key::escape_glob(prefix)))
    }

    /// Exactly this key (escaped).
    pub fn literal(key: &str) -> Self {
        Pattern(key::escape_glob(key))
    }

    /// A raw Redis glob, as in Python cacheme (`test*`). Do not build it from user
    /// input; use [`key::escape_glob`](crate::key::escape_glob) on such parts.
    pub fn glob(glob: impl Into<String>) -> Self {
        Pattern(glob.into())
    }

    /// The glob.
    pub fn as_glob(&self) -> &str {
        &self.0
    }
}

/// An invalidation to run: any mix of keys, invalid keys, patterns and tags
/// (Python cacheme's `create_invalidation(key=, invalid_key=, pattern=)`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cacheme::Error> {
/// use cacheme::Pattern;
/// let removed = cacheme::create_invalidation()
///     .key("cat:1")
///     .invalid_key("user:200")
///     .pattern(Pattern::glob("test*"))
///     .run()
///     .await?;
/// assert_eq!(removed, 0); // nothing was cached
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "an invalidation does nothing until `.run()` or `.run_blocking()`"]
pub struct Invalidation {
    cache: Option<Cache>,
    keys: Vec<String>,
    invalid_keys: Vec<String>,
    patterns: Vec<Pattern>,
    tags: Vec<String>,
    /// Replicas that must acknowledge the invalidation, and how long to wait.
    durable: Option<(u32, Duration)>,
    /// Told after each page of keys; may stop the invalidation.
    progress: Option<ProgressHook>,
}

/// How far an invalidation got, as told to its
/// [`on_progress`](Invalidation::on_progress) hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidationProgress {
    /// Values marked stale or deleted so far.
    pub invalidated: u64,
    /// Keys a pattern's scan went through so far (value and lease keys).
    pub scanned: u64,
}

/// The progress hook (a shared closure).
#[derive(Clone)]
struct ProgressHook(std::sync::Arc<dyn Fn(InvalidationProgress) -> bool + Send + Sync>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

/// Tell the hook, if any; false when it asks to stop.
fn keep_going(hook: Option<&ProgressHook>, progress: InvalidationProgress) -> bool {
    hook.is_none_or(|hook| (hook.0)(progress))
}

/// Start an invalidation on the global cache.
pub fn create_invalidation() -> Invalidation {
    Invalidation::default()
}

impl Cache {
    /// Start an invalidation on this cache.
    pub fn create_invalidation(&self) -> Invalidation {
        Invalidation {
            cache: Some(self.clone()),
            ..Invalidation::default()
        }
    }
}

/// Run a plan: written once for async and blocking code (`$(.$await)?`).
macro_rules! execute {
    ($inner:ident, $plan:ident, $report:ident, $settings:ident, $run_op:ident $(, .$await:tt)?) => {{
        let backend = &$inner.backend;
        let mut count = 0;
        let mut scanned_keys = 0;
        let mut stopped = false;
        let hook = $plan.progress.as_ref();
        // On a cluster, a durable invalidation waits for the replicas of
        // the primaries it wrote to (of every primary when it wrote many
        // slots), so that a primary that is down elsewhere does not fail it.
        let mut written = Written::new($plan.durable.is_some() && backend.is_cluster());
        for batch in $plan.store_keys.chunks(PAGE) {
            let op = Invalidate { keys: batch, removal: Removal::MarkStale };
            count += backend.$run_op(&op, &$report)$(.$await)??;
            written.note(batch);
            if !keep_going(hook, InvalidationProgress { invalidated: count, scanned: 0 }) {
                stopped = true;
                break;
            }
        }
        // A cluster's keys are spread over its primaries: scan each of them
        // (the invalidation of a key found goes to its slot's node).
        let primaries = if $plan.patterns.is_empty() || !backend.is_cluster() {
            Vec::new()
        } else {
            backend.$run_op(&Primaries, &$report)$(.$await)??
        };
        let nodes: Vec<Option<&str>> = if backend.is_cluster() {
            primaries.iter().map(|node| Some(node.as_str())).collect()
        } else {
            vec![None]
        };
        for (glob, pattern) in &$plan.patterns {
            if stopped {
                break;
            }
            for node in &nodes {
                let mut cursor = 0;
                loop {
                    let page = ScanPage { glob, cursor, node: *node };
                    let (next, found) = backend.$run_op(&page, &$report)$(.$await)??;
                    scanned_keys += found.len() as u64;
                    let keys = scanned(&$inner, pattern, &found);
                    if !keys.is_empty() {
                        let op = Invalidate { keys: &keys, removal: Removal::Delete };
                        count += backend.$run_op(&op, &$report)$(.$await)??;
                        written.note(&keys);
                    }
                    let progress = InvalidationProgress { invalidated: count, scanned: scanned_keys };
                    if !keep_going(hook, progress) {
                        // What was done is announced below all the same.
                        stopped = true;
                        break;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                if stopped {
                    break;
                }
            }
        }
        if !$plan.invalidated.is_empty() {
            let payload = $plan.invalidated.payload();
            let op = Record { payload: &payload, log_len: $settings.invalidation_log_len };
            let seq = backend.$run_op(&op, &$report)$(.$await)??;
            applied(&$inner, &$plan.invalidated, seq);
            written.note_key(crate::events::SequenceKeys::new(&$inner.prefix).seq);
        }
        if let Some((replicas, timeout)) = $plan.durable {
            let op = WaitReplicas { replicas, timeout, written: written.keys() };
            let acknowledged = backend.$run_op(&op, &$report)$(.$await)??;
            if acknowledged < replicas {
                return Err(crate::Error::NotReplicated {
                    wanted: replicas,
                    acknowledged,
                    timeout,
                });
            }
        }
        for _ in 0..count {
            $inner.stats.invalidated();
        }
        Ok(count)
    }};
}

/// The keys a durable invalidation on a cluster wrote, for its `WAIT`.
struct Written {
    track: bool,
    keys: Vec<String>,
}

impl Written {
    /// Past this many keys, `WAIT` asks every primary.
    const MAX: usize = 64;

    fn new(track: bool) -> Self {
        Written {
            track,
            keys: Vec::new(),
        }
    }

    fn note(&mut self, keys: &[StoreKeys]) {
        for keys in keys {
            self.note_key(keys.value().to_owned());
        }
    }

    fn note_key(&mut self, key: String) {
        if self.track && self.keys.len() <= Self::MAX {
            self.keys.push(key);
        }
    }

    /// The keys written; empty (every primary) when they were too many.
    fn keys(self) -> Vec<String> {
        if self.keys.len() > Self::MAX {
            Vec::new()
        } else {
            self.keys
        }
    }
}

impl Invalidation {
    /// Invalidate one key (marked stale).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Invalidate every value that depends on this invalid key (stale), in
    /// O(1) whatever their number.
    pub fn invalid_key(mut self, invalid_key: impl Into<String>) -> Self {
        self.invalid_keys.push(invalid_key.into());
        self
    }

    /// Delete every key matching the pattern.
    pub fn pattern(mut self, pattern: Pattern) -> Self {
        self.patterns.push(pattern);
        self
    }

    /// Delete every value written under the tag, in O(1) whatever their
    /// number (they are never served again, and are reclaimed by their TTL
    /// or when reloaded).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Durable mode: before returning, wait (at most `timeout`) until
    /// `replicas` replicas have the invalidation (Redis `WAIT`), so that a
    /// failover right after it cannot lose it; fewer acknowledgements make
    /// the call fail with [`Error::NotReplicated`](crate::Error::NotReplicated).
    /// (On the memory store there are no replicas: a no-op.)
    pub fn durable(mut self, replicas: u32, timeout: Duration) -> Self {
        self.durable = Some((replicas, timeout));
        self
    }

    /// Call `hook` after each page of keys (up to 1,000 keys or scanned
    /// keys) with how far the invalidation got; when it returns `false`,
    /// the invalidation stops there, and what it did is still announced to
    /// the other processes. Tags and invalid keys are O(1): they are not
    /// paged. A queued retry (see [`run`](Self::run)) runs without the hook.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cacheme::Error> {
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// let cache = cacheme::Cache::builder().build()?;
    /// let pages = Arc::new(AtomicU64::new(0));
    /// let seen = pages.clone();
    /// cache
    ///     .create_invalidation()
    ///     .key("cat:1")
    ///     .on_progress(move |_progress| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///         true
    ///     })
    ///     .run()
    ///     .await?;
    /// assert_eq!(pages.load(Ordering::Relaxed), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_progress(
        mut self,
        hook: impl Fn(InvalidationProgress) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(ProgressHook(std::sync::Arc::new(hook)));
        self
    }

    /// How many targets it names.
    fn len(&self) -> usize {
        self.keys.len() + self.invalid_keys.len() + self.patterns.len() + self.tags.len()
    }

    fn plan(self) -> (Cache, Plan) {
        let cache = self.cache.unwrap_or_else(global);
        let prefix = &cache.inner.prefix;
        let keys: Vec<String> = self.keys.into_iter().filter(|k| !k.is_empty()).collect();
        let store_keys = keys.iter().map(|k| StoreKeys::new(prefix, k)).collect();
        let patterns = self
            .patterns
            .iter()
            .map(|pattern| {
                (
                    key::scan_glob(prefix, pattern.as_glob()),
                    pattern.as_glob().to_owned(),
                )
            })
            .collect();
        let invalidated = Invalidated {
            publisher: cache.inner.publisher,
            everything: !self.patterns.is_empty(),
            keys,
            tags: self.tags,
            groups: self
                .invalid_keys
                .into_iter()
                .filter(|g| !g.is_empty())
                .collect(),
        };
        let plan = Plan {
            store_keys,
            patterns,
            invalidated,
            durable: self.durable,
            progress: self.progress,
        };
        (cache, plan)
    }

    /// Run it. Returns how many values the keys and patterns marked stale or
    /// deleted (tags and invalid keys are invalidated in O(1), without
    /// counting their values).
    #[doc(alias = "invalidate")]
    ///
    /// When the store cannot be reached (it is down, it timed out, the
    /// circuit breaker is open), the error is returned **and** the
    /// invalidation is queued (merged with others, bounded by
    /// `Settings::invalidation_queue`) and retried in the background until
    /// the store answers; [`Cache::flush_invalidations`] waits for the queue.
    pub async fn run(self) -> Result<u64> {
        let retry = self.clone();
        let (cache, plan) = self.plan();
        let inner = &cache.inner;
        let span = invalidation_span(inner, &plan);
        let result = tracing::Instrument::instrument(
            async {
                let settings = inner.settings();
                let report = inner.reporting(&settings);
                execute!(inner, plan, report, settings, run, .await)
            },
            span.clone(),
        )
        .await;
        record_outcome(&span, &result);
        after_run(&cache, retry, result)
    }

    /// [`run`](Self::run) for blocking code.
    #[doc(alias = "invalidate")]
    pub fn run_blocking(self) -> Result<u64> {
        let retry = self.clone();
        let (cache, plan) = self.plan();
        let inner = &cache.inner;
        let span = invalidation_span(inner, &plan);
        let result = span.in_scope(|| {
            let settings = inner.settings();
            let report = inner.reporting(&settings);
            execute!(inner, plan, report, settings, run_blocking)
        });
        record_outcome(&span, &result);
        after_run(&cache, retry, result)
    }
}

/// The span of an invalidation (debug level: `cacheme.invalidate`), with
/// what it names (keys, groups and patterns left out with
/// `Settings::redact_keys`), and its outcome and count once it ends.
fn invalidation_span(inner: &Inner, plan: &Plan) -> tracing::Span {
    let span = tracing::debug_span!(
        "cacheme.invalidate",
        tags = ?plan.invalidated.tags,
        keys = tracing::field::Empty,
        groups = tracing::field::Empty,
        patterns = tracing::field::Empty,
        outcome = tracing::field::Empty,
        count = tracing::field::Empty,
    );
    if !span.is_disabled() && !inner.settings().redact_keys {
        span.record("keys", tracing::field::debug(&plan.invalidated.keys));
        span.record("groups", tracing::field::debug(&plan.invalidated.groups));
        let patterns: Vec<&str> = plan.patterns.iter().map(|(_, p)| p.as_str()).collect();
        span.record("patterns", tracing::field::debug(&patterns));
    }
    span
}

fn record_outcome(span: &tracing::Span, result: &Result<u64>) {
    match result {
        Ok(count) => {
            span.record("outcome", "ok");
            span.record("count", count);
        }
        Err(_) => {
            span.record("outcome", "error");
        }
    }
}

/// Queue an invalidation the store could not take.
fn after_run(cache: &Cache, invalidation: Invalidation, result: Result<u64>) -> Result<u64> {
    if let Err(error) = &result
        && error.is_unavailable()
    {
        cache.inner.pending.push(&cache.inner, invalidation);
    }
    result
}

/// Invalidations that failed because the store could not be reached, merged
/// into one (keys, groups, tags and patterns each once), retried by a
/// background thread (or task) until the store answers.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    queued: Mutex<Option<Invalidation>>,
    /// Placeholders this process may have left behind: claiming reads whose
    /// reply never came (a timeout) may still run when the server resumes.
    /// Each is released (if it is still this token's) by the retry thread,
    /// so that other processes do not wait for a lease nobody holds.
    orphans: Mutex<Vec<Orphan>>,
    retrier: std::sync::OnceLock<()>,
    /// Targets taken out of the queue by a retry that has not finished:
    /// still pending for [`Cache::pending_invalidations`].
    retrying: std::sync::atomic::AtomicUsize,
}

/// A placeholder that a claiming read may have left: its key and token,
/// and until when it can exist (its lease time).
#[derive(Debug)]
struct Orphan {
    keys: crate::key::StoreKeys,
    token: String,
    until: std::time::Instant,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Invalidation>> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many targets wait.
    pub(crate) fn len(&self) -> usize {
        let queued = self.lock();
        queued.as_ref().map_or(0, Invalidation::len)
            + self.retrying.load(std::sync::atomic::Ordering::Acquire)
    }

    fn push(&self, inner: &std::sync::Arc<Inner>, invalidation: Invalidation) {
        let limit = inner.settings().invalidation_queue;
        if limit == 0 {
            return;
        }
        let mut queued = self.lock();
        let merged = merge(queued.take(), invalidation);
        if merged.len() > limit {
            // Full: keep what was queued; this one is lost (and said so).
            inner.stats.invalidation_dropped();
            tracing::warn!(
                limit,
                "cacheme: the queue of failed invalidations is full; an invalidation was dropped"
            );
            return;
        }
        *queued = Some(merged);
        drop(queued);
        inner.stats.invalidation_queued();
        self.start(inner);
    }

    /// Take what is queued, to retry it; [`Pending::retried`] must follow.
    fn take(&self) -> Option<(Invalidation, usize)> {
        let mut queued = self.lock();
        let taken = queued.take()?;
        let len = taken.len();
        self.retrying
            .fetch_add(len, std::sync::atomic::Ordering::AcqRel);
        Some((taken, len))
    }

    /// A retry of `len` targets ended (run, or put back).
    fn retried(&self, len: usize) {
        self.retrying
            .fetch_sub(len, std::sync::atomic::Ordering::AcqRel);
    }

    fn orphans(&self) -> std::sync::MutexGuard<'_, Vec<Orphan>> {
        self.orphans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Release, once the store answers, the placeholder that a claiming read
    /// without reply may have written (nothing if it did not, or if another
    /// caller's is there by then). Bounded like the invalidation queue.
    pub(crate) fn release_later(
        &self,
        inner: &std::sync::Arc<Inner>,
        keys: &crate::key::StoreKeys,
        token: &str,
    ) {
        let settings = inner.settings();
        let mut orphans = self.orphans();
        if orphans.len() >= settings.invalidation_queue {
            return;
        }
        orphans.push(Orphan {
            keys: keys.clone(),
            token: token.to_owned(),
            until: std::time::Instant::now() + settings.lease_ttl,
        });
        drop(orphans);
        self.start(inner);
    }

    /// Release the orphans whose lease may still run; keep those the store
    /// could not be asked about.
    fn release_orphans(&self, inner: &Inner) {
        let orphans = std::mem::take(&mut *self.orphans());
        if orphans.is_empty() {
            return;
        }
        let settings = inner.settings();
        let report = inner.reporting(&settings);
        let now = std::time::Instant::now();
        let mut kept = Vec::new();
        for orphan in orphans.into_iter().filter(|orphan| orphan.until > now) {
            let release = crate::storage::Release {
                keys: &orphan.keys,
                lease: crate::protocol::Lease::Placeholder,
                token: &orphan.token,
            };
            if let Err(error) = inner.backend.run_blocking(&release, &report)
                && error.is_unavailable()
            {
                kept.push(orphan);
            }
        }
        self.orphans().extend(kept);
    }

    /// Put back what a retry could not run.
    fn put_back(&self, invalidation: Invalidation) {
        let mut queued = self.lock();
        *queued = Some(merge(queued.take(), invalidation));
    }

    fn start(&self, inner: &std::sync::Arc<Inner>) {
        self.retrier.get_or_init(|| {
            let weak = std::sync::Arc::downgrade(inner);
            let spawned = std::thread::Builder::new()
                .name("cacheme-invalidation-retry".into())
                .spawn(move || Pending::retry(&weak));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cacheme: cannot start the invalidation retry thread");
            }
        });
    }

    /// The retry loop: every breaker cool-down, run what is queued.
    fn retry(cache: &std::sync::Weak<Inner>) {
        loop {
            let Some(inner) = cache.upgrade() else { return };
            let pause = inner
                .settings()
                .breaker_cooldown
                .max(Duration::from_millis(50));
            if inner.backend.can_block() {
                inner.pending.release_orphans(&inner);
            }
            if inner.backend.can_block()
                && let Some((queued, len)) = inner.pending.take()
            {
                let cache = Cache {
                    inner: inner.clone(),
                };
                match retry_one(&cache, queued) {
                    Ok(()) => inner.stats.invalidation_retried(),
                    Err(queued) => inner.pending.put_back(*queued),
                }
                inner.pending.retried(len);
            }
            drop(inner);
            std::thread::sleep(pause);
        }
    }
}

/// Run a queued invalidation from blocking code; `Err` gives it back when
/// the store still cannot be reached.
fn retry_one(cache: &Cache, queued: Invalidation) -> std::result::Result<(), Box<Invalidation>> {
    let retry = queued.clone();
    let (cache, plan) = Invalidation {
        cache: Some(cache.clone()),
        ..queued
    }
    .plan();
    let inner = &cache.inner;
    let result: Result<u64> = (|| {
        let settings = inner.settings();
        let report = inner.reporting(&settings);
        execute!(inner, plan, report, settings, run_blocking)
    })();
    match result {
        Ok(_) => Ok(()),
        Err(error) if error.is_unavailable() => Err(Box::new(retry)),
        Err(error) => {
            tracing::warn!(error = %crate::error::Chain(&error), "cacheme: a queued invalidation failed; dropped");
            inner.stats.invalidation_dropped();
            Ok(())
        }
    }
}

/// Two invalidations as one: each target once.
fn merge(queued: Option<Invalidation>, more: Invalidation) -> Invalidation {
    let Some(mut queued) = queued else {
        return Invalidation {
            cache: None,
            progress: None,
            ..more
        };
    };
    fn union<T: Ord + Clone>(into: &mut Vec<T>, more: Vec<T>) {
        let mut set: BTreeSet<T> = into.drain(..).collect();
        set.extend(more);
        into.extend(set);
    }
    union(&mut queued.keys, more.keys);
    union(&mut queued.invalid_keys, more.invalid_keys);
    union(&mut queued.tags, more.tags);
    let mut globs: Vec<String> = queued.patterns.drain(..).map(|p| p.0).collect();
    union(&mut globs, more.patterns.into_iter().map(|p| p.0).collect());
    queued.patterns = globs.into_iter().map(Pattern).collect();
    queued.durable = queued.durable.or(more.durable);
    queued
}

impl Cache {
    /// How many invalidation targets (keys, groups, tags, patterns) wait in
    /// the queue of invalidations the store could not take.
    pub fn pending_invalidations(&self) -> usize {
        self.inner.pending.len()
    }

    /// Run the queued invalidations now, and wait for them. `Err` (and they
    /// stay queued) while the store cannot be reached.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cacheme::Error> {
    /// let cache = cacheme::Cache::builder().build()?;
    /// cache.flush_invalidations().await?;
    /// assert_eq!(cache.pending_invalidations(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn flush_invalidations(&self) -> Result<()> {
        let Some((queued, len)) = self.inner.pending.take() else {
            return Ok(());
        };
        let retry = queued.clone();
        let result = Invalidation {
            cache: Some(self.clone()),
            ..queued
        }
        .run_without_queue()
        .await;
        if result.as_ref().is_err_and(crate::Error::is_unavailable) {
            self.inner.pending.put_back(retry);
        }
        self.inner.pending.retried(len);
        result.map(drop)
    }
}

impl Invalidation {
    async fn run_without_queue(self) -> Result<u64> {
        let (cache, plan) = self.plan();
        let inner = &cache.inner;
        let settings = inner.settings();
        let report = inner.reporting(&settings);
        execute!(inner, plan, report, settings, run, .await)
    }
}

/// What one invalidation does, worked out before any I/O.
struct Plan {
    /// The keys to mark stale.
    store_keys: Vec<StoreKeys>,
    /// (`SCAN` glob, pattern over cache keys) of each pattern.
    patterns: Vec<(String, String)>,
    /// What the other processes are told.
    invalidated: Invalidated,
    durable: Option<(u32, Duration)>,
    progress: Option<ProgressHook>,
}

/// The cache keys of the value and lease keys a scan found, matching the
/// pattern, once each.
fn scanned(inner: &Inner, pattern: &str, found: &[String]) -> Vec<StoreKeys> {
    let mut cache_keys: Vec<&str> = found
        .iter()
        .filter_map(|redis_key| key::scanned_cache_key(&inner.prefix, pattern, redis_key))
        .collect();
    cache_keys.sort_unstable();
    cache_keys.dedup();
    cache_keys
        .into_iter()
        .map(|k| inner.store_keys(k))
        .collect()
}

/// The invalidation numbered `seq` is recorded: apply it in this process
/// before returning (what it knows of the sequence, its local tiers, its
/// flights), as the other processes will when its event reaches them.
pub(crate) fn applied(inner: &Inner, invalidated: &Invalidated, seq: u64) {
    if inner.stamps.apply(&invalidated.entry(seq)) == crate::stamps::Applied::Known {
        // Applied already (one's own invalidation, echoed by the channel;
        // or read twice from the log): the local tiers were cleaned then.
        return;
    }
    inner.local.apply(invalidated, &inner.stats);
    for key in &invalidated.keys {
        inner.flights.forget(inner.store_keys(key).value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_escape_unless_raw() {
        assert_eq!(Pattern::literal("a?").as_glob(), "a\\?");
        assert_eq!(Pattern::prefix("[x]").as_glob(), "\\[x\\]*");
    }
}
