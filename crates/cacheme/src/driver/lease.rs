//! A held lease: renewed while its load runs, given back when its holder
//! goes away without filling.
//!
//! - **Renewal** runs on one keeper thread per cache, for async and blocking
//!   loads alike, so that a loader that blocks its own thread or task cannot
//!   starve it. A failed renewal is retried at the next tick. Renewal stops
//!   after `max_load_time`: a hung loader does not keep a key uncacheable
//!   for the whole fleet (another caller then takes the lease over, and the
//!   hung load's fill is refused).
//! - **Release on drop**: a [`HeldLease`] dropped before its fill or release
//!   (the caller's future was cancelled, the loader or a hook panicked)
//!   hands the release to the keeper thread, which sends it at once, so
//!   that waiters do not sit out the lease's lifetime.
//!
//! A cache whose Redis connection is the application's own
//! `ConnectionManager` (no URL, hence no blocking connection) renews async
//! loads from a tokio task instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::cache::Inner;
use crate::key::StoreKeys;
use crate::protocol::Lease;
use crate::storage::{Extend, Release};

/// One lease the keeper looks after.
#[derive(Debug, Clone)]
struct Kept {
    keys: StoreKeys,
    token: String,
    lease: Lease,
    since: Instant,
}

#[derive(Debug, Default)]
struct Work {
    /// Leases to renew, by id.
    renew: HashMap<u64, Kept>,
    /// Leases to give back.
    release: Vec<Kept>,
}

/// The keeper of a cache's leases: its thread renews and releases them.
#[derive(Debug, Default)]
pub(crate) struct Keeper {
    work: Mutex<Work>,
    wake: Condvar,
    next_id: AtomicU64,
    started: OnceLock<()>,
}

/// A lease this caller holds, from its claim to its fill or release.
pub(crate) struct HeldLease {
    cache: Arc<Inner>,
    id: Option<u64>,
    kept: Kept,
    /// A tokio task renewing it, when the keeper thread cannot.
    task: Option<tokio::task::JoinHandle<()>>,
    done: bool,
}

impl HeldLease {
    /// Start looking after `token`'s lease on `keys`.
    pub(crate) fn hold(cache: &Arc<Inner>, keys: &StoreKeys, token: &str, lease: Lease) -> Self {
        let kept = Kept {
            keys: keys.clone(),
            token: token.to_owned(),
            lease,
            since: Instant::now(),
        };
        let mut held = HeldLease {
            cache: cache.clone(),
            id: None,
            kept,
            task: None,
            done: false,
        };
        if cache.backend.can_block() {
            let keeper = &cache.keeper;
            keeper.start(cache);
            let id = keeper.next_id.fetch_add(1, Ordering::Relaxed);
            keeper.lock().renew.insert(id, held.kept.clone());
            held.id = Some(id);
        } else if tokio::runtime::Handle::try_current().is_ok() {
            held.task = Some(tokio::spawn(renew_async(
                Arc::downgrade(cache),
                held.kept.clone(),
            )));
        }
        held
    }

    /// The fill or the release was sent (whatever it answered): nothing
    /// more to do.
    pub(crate) fn done(mut self) {
        self.done = true;
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let keeper = &self.cache.keeper;
        let mut work = keeper.lock();
        if let Some(id) = self.id {
            work.renew.remove(&id);
        }
        if self.done {
            return;
        }
        // Cancelled or panicked with the lease: give it back now.
        if self.cache.backend.can_block() {
            work.release.push(self.kept.clone());
            drop(work);
            keeper.start(&self.cache);
            keeper.wake.notify_one();
        } else if tokio::runtime::Handle::try_current().is_ok() {
            drop(work);
            let (cache, kept) = (self.cache.clone(), self.kept.clone());
            tokio::spawn(async move {
                let op = Release {
                    keys: &kept.keys,
                    lease: kept.lease,
                    token: &kept.token,
                };
                let _ = cache
                    .backend
                    .run(&op, &cache.reporting(&cache.settings()))
                    .await;
            });
        }
    }
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(&self, cache: &Arc<Inner>) {
        self.started.get_or_init(|| {
            let weak = Arc::downgrade(cache);
            let spawned = std::thread::Builder::new()
                .name("cacheme-lease-keeper".into())
                .spawn(move || Keeper::run(&weak));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cacheme: cannot start the lease keeper thread");
            }
        });
    }

    fn run(cache: &Weak<Inner>) {
        let mut last_renewal = Instant::now();
        loop {
            let Some(inner) = cache.upgrade() else { return };
            let settings = inner.settings();
            let tick = (settings.lease_ttl / 3).max(Duration::from_millis(10));
            let (release, renew) = {
                let mut work = inner.keeper.lock();
                let release = std::mem::take(&mut work.release);
                let renew: Vec<Kept> = if last_renewal.elapsed() >= tick {
                    work.renew.values().cloned().collect()
                } else {
                    Vec::new()
                };
                (release, renew)
            };
            let report = inner.reporting(&settings);
            for kept in &release {
                let op = Release {
                    keys: &kept.keys,
                    lease: kept.lease,
                    token: &kept.token,
                };
                let _ = inner.backend.run_blocking(&op, &report);
            }
            if !renew.is_empty() || last_renewal.elapsed() >= tick {
                last_renewal = Instant::now();
            }
            let lease_ms = settings.lease_ttl.as_millis() as u64;
            for kept in &renew {
                if kept.since.elapsed() > settings.max_load_time {
                    continue;
                }
                let op = Extend {
                    keys: &kept.keys,
                    lease: kept.lease,
                    token: &kept.token,
                    lease_ms,
                };
                // A failure is retried at the next tick.
                let _ = inner.backend.run_blocking(&op, &report);
            }
            let keeper = &inner.keeper;
            let work = keeper.lock();
            if work.release.is_empty() {
                let wait = tick.saturating_sub(last_renewal.elapsed());
                let (work, _) = keeper
                    .wake
                    .wait_timeout(work, wait)
                    .unwrap_or_else(PoisonError::into_inner);
                drop(work);
            } else {
                drop(work);
            }
        }
    }
}

/// Renew one lease from a tokio task (caches without a blocking connection).
async fn renew_async(cache: Weak<Inner>, kept: Kept) {
    loop {
        let Some(inner) = cache.upgrade() else { return };
        let settings = inner.settings();
        drop(inner);
        tokio::time::sleep(settings.lease_ttl / 3).await;
        if kept.since.elapsed() > settings.max_load_time {
            return;
        }
        let Some(inner) = cache.upgrade() else { return };
        let op = Extend {
            keys: &kept.keys,
            lease: kept.lease,
            token: &kept.token,
            lease_ms: settings.lease_ttl.as_millis() as u64,
        };
        let _ = inner.backend.run(&op, &inner.reporting(&settings)).await;
    }
}

/// A new lease token: 24 hex digits, unique across processes: this
/// process's id and a random number (made once), then a counter. Every read
/// that reaches Redis makes one (its placeholder, in case the key is cold),
/// so it costs a counter increment and 8 hex digits, nothing more.
pub(crate) fn new_token() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        format!("{:08x}{:08x}", std::process::id(), hasher.finish() as u32)
    });
    // (Wraps after 2^32 tokens: a lease that old has long expired.)
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) as u32;
    let mut token = String::with_capacity(prefix.len() + 8);
    token.push_str(prefix);
    for shift in (0..8).rev() {
        let digit = (count >> (shift * 4)) & 0xf;
        token.push(char::from_digit(digit, 16).expect("a nibble is a hex digit"));
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_24_hex_digits_and_distinct() {
        let tokens: Vec<String> = (0..1000).map(|_| new_token()).collect();
        for token in &tokens {
            assert_eq!(token.len(), 24, "{token}");
            assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
        }
        let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
        assert_eq!(distinct.len(), tokens.len());
    }
}
