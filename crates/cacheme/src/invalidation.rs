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

use crate::Result;
use crate::cache::{Cache, Inner, global};
use crate::events::Invalidated;
use crate::key::{self, StoreKeys};
use crate::storage::{Invalidate, PAGE, Record, Removal, ScanPage};

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

    /// A raw Redis glob, as in the seed (`test*`). Do not build it from user
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
/// (the seed's `create_invalidation(key=, invalid_key=, pattern=)`).
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
        for batch in $plan.store_keys.chunks(PAGE) {
            let op = Invalidate { keys: batch, removal: Removal::MarkStale };
            count += backend.$run_op(&op, &$report)$(.$await)??;
        }
        for (glob, pattern) in &$plan.patterns {
            let mut cursor = 0;
            loop {
                let (next, found) = backend.$run_op(&ScanPage { glob, cursor }, &$report)$(.$await)??;
                let keys = scanned(&$inner, pattern, &found);
                if !keys.is_empty() {
                    let op = Invalidate { keys: &keys, removal: Removal::Delete };
                    count += backend.$run_op(&op, &$report)$(.$await)??;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        if !$plan.invalidated.is_empty() {
            let payload = $plan.invalidated.payload();
            let op = Record { payload: &payload, log_len: $settings.invalidation_log_len };
            let seq = backend.$run_op(&op, &$report)$(.$await)??;
            applied(&$inner, &$plan.invalidated, seq);
        }
        for _ in 0..count {
            $inner.stats.invalidated();
        }
        Ok(count)
    }};
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
        };
        (cache, plan)
    }

    /// Run it. Returns how many values the keys and patterns marked stale or
    /// deleted (tags and invalid keys are invalidated in O(1), without
    /// counting their values).
    #[doc(alias = "invalidate")]
    pub async fn run(self) -> Result<u64> {
        let (cache, plan) = self.plan();
        let inner = &cache.inner;
        let settings = inner.settings();
        let report = inner.reporting(&settings);
        execute!(inner, plan, report, settings, run, .await)
    }

    /// [`run`](Self::run) for blocking code.
    #[doc(alias = "invalidate")]
    pub fn run_blocking(self) -> Result<u64> {
        let (cache, plan) = self.plan();
        let inner = &cache.inner;
        let settings = inner.settings();
        let report = inner.reporting(&settings);
        execute!(inner, plan, report, settings, run_blocking)
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
    inner.stamps.apply(&invalidated.entry(seq));
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
