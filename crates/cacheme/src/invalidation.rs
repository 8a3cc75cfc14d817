//! `create_invalidation`: invalidate by key, by invalid key (dependency
//! group), by pattern and by tag, alone or together.
//!
//! | target        | what happens to the values                                   |
//! |---------------|--------------------------------------------------------------|
//! | key           | marked stale in place (stale-on readers may still serve them)|
//! | invalid key   | every dependent key marked stale                             |
//! | tag           | deleted                                                      |
//! | pattern       | deleted                                                      |
//!
//! In every case the keys' leases are revoked, so a load that began before
//! the invalidation cannot store its result. Invalidations return their
//! errors: an invalidation that did not happen must not go unnoticed.

use std::collections::VecDeque;

use crate::Result;
use crate::cache::{Cache, Inner, global};
use crate::key::{self, StoreKeys};
use crate::local::Event;
use crate::storage::{Announce, IndexPage, IndexRemove, Invalidate, Removal, Reporting, ScanPage};

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

impl Invalidation {
    /// Invalidate one key (marked stale).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Invalidate every key that depends on this invalid key (marked stale).
    pub fn invalid_key(mut self, invalid_key: impl Into<String>) -> Self {
        self.invalid_keys.push(invalid_key.into());
        self
    }

    /// Delete every key matching the pattern.
    pub fn pattern(mut self, pattern: Pattern) -> Self {
        self.patterns.push(pattern);
        self
    }

    /// Delete every key written under the tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    fn into_sweep(self) -> (Cache, Sweep) {
        let cache = self.cache.unwrap_or_else(global);
        let prefix = &cache.inner.prefix;
        let mut sweep = Sweep::default();
        let keys: Vec<StoreKeys> = self
            .keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| StoreKeys::new(prefix, k))
            .collect();
        if !keys.is_empty() {
            sweep.work.push_back(Work::Invalidate {
                keys,
                removal: Removal::MarkStale,
            });
        }
        for group in &self.invalid_keys {
            sweep.work.push_back(Work::Page {
                index: key::group_index(prefix, group),
                cursor: 0,
                removal: Removal::MarkStale,
            });
        }
        for tag in &self.tags {
            sweep.work.push_back(Work::Page {
                index: key::tag_index(prefix, tag),
                cursor: 0,
                removal: Removal::Delete,
            });
        }
        for pattern in &self.patterns {
            sweep.work.push_back(Work::Scan {
                glob: key::scan_glob(prefix, pattern.as_glob()),
                pattern: pattern.as_glob().to_owned(),
                cursor: 0,
            });
        }
        // Once the store has changed, tell the local tiers about whole tags
        // and patterns (the keys of each batch are told as they go).
        if !self.tags.is_empty() || !self.patterns.is_empty() {
            sweep.work.push_back(Work::Announce(Event {
                tags: self.tags.clone(),
                everything: !self.patterns.is_empty(),
                ..Event::default()
            }));
        }
        (cache, sweep)
    }

    /// Run it. Returns how many values were marked stale or deleted.
    pub async fn run(self) -> Result<u64> {
        let (cache, mut sweep) = self.into_sweep();
        let inner = &cache.inner;
        // Invalidations run even with caching off in this process: other
        // processes may have caching on and must not keep old values.
        let settings = inner.settings();
        let report = inner.reporting(&settings);
        while let Some(work) = sweep.work.pop_front() {
            let done = run_work(inner, &work, &report).await?;
            sweep.after(inner, work, done);
        }
        Ok(sweep.removed)
    }

    /// [`run`](Self::run) for blocking code.
    pub fn run_blocking(self) -> Result<u64> {
        let (cache, mut sweep) = self.into_sweep();
        let inner = &cache.inner;
        // Invalidations run even with caching off in this process: other
        // processes may have caching on and must not keep old values.
        let settings = inner.settings();
        let report = inner.reporting(&settings);
        while let Some(work) = sweep.work.pop_front() {
            let done = run_work_blocking(inner, &work, &report)?;
            sweep.after(inner, work, done);
        }
        Ok(sweep.removed)
    }
}

/// One unit of invalidation work.
#[derive(Debug)]
enum Work {
    /// Read one page of an index; invalidate its members with `removal`
    /// (deleting also removes them from the index).
    Page {
        index: String,
        cursor: u64,
        removal: Removal,
    },
    /// Read one page of the value and lease keys matching a glob; delete
    /// the values and revoke the leases of the cache keys matching `pattern`.
    Scan {
        glob: String,
        pattern: String,
        cursor: u64,
    },
    /// Invalidate these keys.
    Invalidate {
        keys: Vec<StoreKeys>,
        removal: Removal,
    },
    /// Remove members from an index.
    Unindex { index: String, members: Vec<String> },
    /// Tell the local tiers of this process, then of the others.
    Announce(Event),
}

/// What a unit of work returned.
enum Done {
    Page { cursor: u64, keys: Vec<String> },
    Count(u64),
    Nothing,
}

/// The plan of one invalidation: a queue of work, grown by the pages read.
#[derive(Default)]
struct Sweep {
    work: VecDeque<Work>,
    removed: u64,
}

impl Sweep {
    fn after(&mut self, inner: &Inner, work: Work, done: Done) {
        match (work, done) {
            (
                Work::Page { index, removal, .. },
                Done::Page {
                    cursor,
                    keys: members,
                },
            ) => {
                if cursor != 0 {
                    self.work.push_front(Work::Page {
                        index: index.clone(),
                        cursor,
                        removal,
                    });
                }
                if members.is_empty() {
                    return;
                }
                let keys = members.iter().map(|m| inner.store_keys(m)).collect();
                if removal == Removal::Delete {
                    self.work.push_front(Work::Unindex { index, members });
                }
                self.work.push_front(Work::Invalidate { keys, removal });
            }
            (Work::Scan { glob, pattern, .. }, Done::Page { cursor, keys }) => {
                let mut cache_keys: Vec<&str> = keys
                    .iter()
                    .filter_map(|redis_key| {
                        key::scanned_cache_key(&inner.prefix, &pattern, redis_key)
                    })
                    .collect();
                cache_keys.sort_unstable();
                cache_keys.dedup();
                let keys: Vec<StoreKeys> = cache_keys
                    .into_iter()
                    .map(|k| inner.store_keys(k))
                    .collect();
                if cursor != 0 {
                    self.work.push_front(Work::Scan {
                        glob,
                        pattern,
                        cursor,
                    });
                }
                if !keys.is_empty() {
                    self.work.push_front(Work::Invalidate {
                        keys,
                        removal: Removal::Delete,
                    });
                }
            }
            (Work::Invalidate { keys, .. }, Done::Count(count)) => {
                for keys in &keys {
                    inner.flights.forget(keys.value());
                }
                self.work.push_front(Work::Announce(Event {
                    keys: keys
                        .iter()
                        .map(|k| k.cache_key(&inner.prefix).to_owned())
                        .collect(),
                    ..Event::default()
                }));
                for _ in 0..count {
                    inner.stats.invalidated();
                }
                self.removed += count;
            }
            _ => {}
        }
    }
}

async fn run_work(inner: &Inner, work: &Work, report: &Reporting<'_>) -> Result<Done> {
    let backend = &inner.backend;
    Ok(match work {
        Work::Page { index, cursor, .. } => {
            let (cursor, keys) = backend
                .run(
                    &IndexPage {
                        index,
                        cursor: *cursor,
                    },
                    report,
                )
                .await?;
            Done::Page { cursor, keys }
        }
        Work::Scan { glob, cursor, .. } => {
            let (cursor, keys) = backend
                .run(
                    &ScanPage {
                        glob,
                        cursor: *cursor,
                    },
                    report,
                )
                .await?;
            Done::Page { cursor, keys }
        }
        Work::Invalidate { keys, removal } => {
            let op = Invalidate {
                keys,
                removal: *removal,
            };
            Done::Count(backend.run(&op, report).await?)
        }
        Work::Unindex { index, members } => {
            backend.run(&IndexRemove { index, members }, report).await?;
            Done::Nothing
        }
        Work::Announce(event) => {
            inner.local.apply(event, &inner.stats);
            backend
                .run(
                    &Announce {
                        message: &event.message(),
                    },
                    report,
                )
                .await?;
            Done::Nothing
        }
    })
}

fn run_work_blocking(inner: &Inner, work: &Work, report: &Reporting<'_>) -> Result<Done> {
    let backend = &inner.backend;
    Ok(match work {
        Work::Page { index, cursor, .. } => {
            let (cursor, keys) = backend.run_blocking(
                &IndexPage {
                    index,
                    cursor: *cursor,
                },
                report,
            )?;
            Done::Page { cursor, keys }
        }
        Work::Scan { glob, cursor, .. } => {
            let (cursor, keys) = backend.run_blocking(
                &ScanPage {
                    glob,
                    cursor: *cursor,
                },
                report,
            )?;
            Done::Page { cursor, keys }
        }
        Work::Invalidate { keys, removal } => {
            let op = Invalidate {
                keys,
                removal: *removal,
            };
            Done::Count(backend.run_blocking(&op, report)?)
        }
        Work::Unindex { index, members } => {
            backend.run_blocking(&IndexRemove { index, members }, report)?;
            Done::Nothing
        }
        Work::Announce(event) => {
            inner.local.apply(event, &inner.stats);
            backend.run_blocking(
                &Announce {
                    message: &event.message(),
                },
                report,
            )?;
            Done::Nothing
        }
    })
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
