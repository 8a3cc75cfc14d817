//! [`Lookup`]: one cached value and how to get it. The entry point that
//! managers and `#[cacheme]` functions build on.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::driver::{self, Before};
use crate::error::LoadError;
use crate::node::{IntoInvalidKeys, InvalidKeys};
use crate::spec::{Registration, Spec};
use crate::storage;

/// A type that can be cached: serde both ways, shareable across threads.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: cached values must implement serde's `Serialize` and `DeserializeOwned`",
    label = "this value would be stored in the cache",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or cache a type that has them"
)]
pub trait CacheValue: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> CacheValue for T {}

/// A type that can be kept in a local tier: the tier hands out copies.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be kept in a local tier: the tier hands out copies, so it must implement `Clone`",
    label = "this value would be kept in the local tier",
    note = "add `#[derive(Clone)]` to the type, or remove `local_ttl` / `local_capacity`"
)]
pub trait LocalValue: CacheValue + Clone {}

impl<T: CacheValue + Clone> LocalValue for T {}

/// Copy a value out of the local tier (what `#[node(local_ttl = ..)]` uses).
pub fn local_clone<V: LocalValue>(value: &V) -> V {
    value.clone()
}

/// The spec of ad-hoc lookups made with [`Cache::lookup`] without one.
pub(crate) static LOOKUP_SPEC: Spec = Spec::function("lookup");
inventory::submit!(Registration::new(&LOOKUP_SPEC));

/// Computes the dependency groups of a value once it is loaded.
pub type GroupsOf<'a, V> = &'a (dyn Fn(&V, &mut InvalidKeys) + Sync);
/// A hit hook: called with the key and the value served from the cache.
pub type HitHook<'a, V> = &'a (dyn Fn(&str, &V) + Sync);
/// A miss hook: called with the key before this caller runs the loader.
pub type MissHook<'a> = &'a (dyn Fn(&str) + Sync);

/// One cached value: its key, how it is cached, what it depends on, and
/// which hooks to call. Get one from [`Cache::lookup`] (or, for nodes, from
/// their manager), then [`load`](Lookup::load) or [`get`](Lookup::get) it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let owner: String = cache
///     .lookup("book:100>owner")
///     .ttl(Some(Duration::from_secs(300)))
///     .depends_on("user:200")
///     .load(|| async { Ok::<_, std::convert::Infallible>("Ann".to_owned()) })
///     .await
///     .expect("the loader cannot fail");
/// assert_eq!(owner, "Ann");
/// // Invalidating the group marks the value stale.
/// cache.create_invalidation().invalid_key("user:200").run().await.expect("memory store");
/// # }
/// ```
#[must_use = "a lookup does nothing until `.load(..)` or `.get()` is called"]
pub struct Lookup<'a, V> {
    pub(crate) cache: Cache,
    /// Borrowed when the caller already has it as a `&str`: a hit then
    /// copies no key.
    pub(crate) key: Cow<'a, str>,
    pub(crate) spec: &'static Spec,
    pub(crate) ttl: Option<Option<Duration>>,
    pub(crate) stale: Option<bool>,
    pub(crate) refresh_after: Option<Duration>,
    pub(crate) fail_safe: Option<Duration>,
    pub(crate) fail_safe_throttle: Option<Duration>,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    /// A hard timeout may end the call with `LoadError::TimedOut` (else it
    /// only serves an expired value, and the call waits without one).
    pub(crate) timeout_errors: bool,
    pub(crate) groups: InvalidKeys,
    pub(crate) groups_of: Option<GroupsOf<'a, V>>,
    pub(crate) hit: Option<HitHook<'a, V>>,
    pub(crate) miss: Option<MissHook<'a>>,
    pub(crate) share_errors: bool,
    pub(crate) skip: bool,
    /// Copies values out of the local tier, when the lookup uses one.
    pub(crate) local_clone: Option<fn(&V) -> V>,
    /// The time to live computed from the loaded value, when given.
    pub(crate) ttl_for: Option<fn(&V) -> Option<Duration>>,
}

impl<V> std::fmt::Debug for Lookup<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("key", &self.key)
            .field("spec", &self.spec.name())
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A lookup of the value under `key` (a cache key, without the prefix).
    pub fn lookup<'a, V: CacheValue>(&self, key: impl Into<Cow<'a, str>>) -> Lookup<'a, V> {
        Lookup {
            cache: self.clone(),
            key: key.into(),
            spec: &LOOKUP_SPEC,
            ttl: None,
            stale: None,
            refresh_after: None,
            fail_safe: None,
            fail_safe_throttle: None,
            soft_timeout: None,
            hard_timeout: None,
            timeout_errors: true,
            groups: InvalidKeys::default(),
            groups_of: None,
            hit: None,
            miss: None,
            share_errors: true,
            skip: false,
            local_clone: None,
            ttl_for: None,
        }
    }
}

/// What a call's settings resolve to: its own choices, else its spec's, else
/// the cache settings'.
impl<V> Lookup<'_, V> {
    /// Whether this call accepts stale values: the lookup's own choice, else
    /// its spec's, else the settings'. The one place this is decided.
    pub(crate) fn stale_ok(&self, settings: &crate::Settings) -> bool {
        self.stale.or(self.spec.stale()).unwrap_or(settings.stale)
    }

    /// The time to live of a value stored by this call, likewise resolved
    /// (`None`: no expiry).
    /// With `ttl_jitter_percent`, spread by the key's own fixed amount.
    pub(crate) fn effective_ttl(&self, settings: &crate::Settings) -> Option<Duration> {
        let ttl = match self.ttl {
            Some(ttl) => ttl,
            None => self.spec.ttl().or(settings.default_ttl),
        };
        ttl.map(|ttl| jittered(ttl, settings.ttl_jitter_percent, &self.key))
    }

    /// The time to live of `value` as stored by this call: computed from the
    /// value when the call has a `ttl_for`, else [`Self::effective_ttl`].
    pub(crate) fn ttl_of(&self, value: &V, settings: &crate::Settings) -> Option<Duration> {
        match self.ttl_for {
            Some(ttl_for) => {
                ttl_for(value).map(|ttl| jittered(ttl, settings.ttl_jitter_percent, &self.key))
            }
            None => self.effective_ttl(settings),
        }
    }

    /// The age past which this call refreshes a value, likewise resolved.
    pub(crate) fn effective_refresh_after(&self) -> Option<Duration> {
        self.refresh_after.or(self.spec.refresh_after())
    }

    /// How long past its TTL a value is kept for the fail-safe (likewise).
    pub(crate) fn effective_fail_safe(&self, settings: &crate::Settings) -> Option<Duration> {
        self.fail_safe
            .or(self.spec.fail_safe())
            .or(settings.fail_safe_max)
    }

    /// The fail-safe throttle (likewise).
    pub(crate) fn effective_fail_safe_throttle(&self, settings: &crate::Settings) -> Duration {
        self.fail_safe_throttle
            .or(self.spec.fail_safe_throttle())
            .unwrap_or(settings.fail_safe_throttle)
    }

    /// The soft loader timeout (likewise).
    pub(crate) fn effective_soft_timeout(&self, settings: &crate::Settings) -> Option<Duration> {
        self.soft_timeout
            .or(self.spec.soft_timeout())
            .or(settings.soft_timeout)
    }

    /// The hard loader timeout (likewise).
    pub(crate) fn effective_hard_timeout(&self, settings: &crate::Settings) -> Option<Duration> {
        self.hard_timeout
            .or(self.spec.hard_timeout())
            .or(settings.hard_timeout)
    }
}

impl<'a, V: CacheValue> Lookup<'a, V> {
    /// Cache under this spec's tag, with its meta (ttl, stale, version).
    /// The version is appended to the key.
    pub fn spec(mut self, spec: &'static Spec) -> Self {
        if let Some(group) = spec.versions_group(&self.key) {
            self.groups.push(group);
            self.key = Cow::Owned(spec.versioned(self.key.into_owned()));
        }
        self.spec = spec;
        self
    }

    /// Time to live of the stored value (`None`: no expiry), overriding the
    /// spec and the settings.
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Compute the time to live from the loaded value (`None`: no expiry),
    /// overriding [`ttl`](Self::ttl), the spec and the settings: a token
    /// that expires in 10 minutes is cached for 10 minutes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// let cache = cacheme::Cache::builder().build().expect("memory store");
    /// let token = cache
    ///     .lookup::<(String, u64)>("token:7")
    ///     .ttl_for(|(_, expires_in)| Some(Duration::from_secs(*expires_in)))
    ///     .load(|| async { Ok::<_, std::io::Error>(("secret".to_owned(), 600)) })
    ///     .await
    ///     .expect("loads");
    /// assert_eq!(token.1, 600);
    /// # }
    /// ```
    pub fn ttl_for(mut self, ttl_for: fn(&V) -> Option<Duration>) -> Self {
        self.ttl_for = Some(ttl_for);
        self
    }

    /// Accept stale values or not, overriding the spec and the settings.
    pub fn stale(mut self, stale: bool) -> Self {
        self.stale = Some(stale);
        self
    }

    /// Refresh the value ahead of its expiry once it is this old: callers keep
    /// being served the cached value while exactly one of them (in the whole
    /// fleet) reloads it. With [`load`](Self::load) that caller reloads
    /// before returning; with [`load_detached`](Self::load_detached) the
    /// reload runs in the background and every caller is served at once.
    pub fn refresh_after(mut self, age: Duration) -> Self {
        self.refresh_after = Some(age);
        self
    }

    /// Fail-safe: keep the value `max` past its TTL, and serve it when its
    /// reload fails or times out (overriding the spec and the settings).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// let cache = cacheme::Cache::builder().build().expect("memory store");
    /// let price = || {
    ///     cache
    ///         .lookup::<u32>("price:7")
    ///         .ttl(Some(Duration::from_millis(1)))
    ///         .fail_safe(Duration::from_secs(60))
    /// };
    /// price().load(|| async { Ok::<_, std::io::Error>(100) }).await.expect("loads");
    /// tokio::time::sleep(Duration::from_millis(5)).await;
    /// // Expired, and the source is down: the expired value is served.
    /// let served = price()
    ///     .load(|| async { Err::<u32, _>(std::io::Error::other("source down")) })
    ///     .await
    ///     .expect("served by the fail-safe");
    /// assert_eq!(served, 100);
    /// # }
    /// ```
    pub fn fail_safe(mut self, max: Duration) -> Self {
        self.fail_safe = Some(max);
        self
    }

    /// After a failed reload, serve the expired value for `throttle` before
    /// the source is tried again (overriding the spec and the settings).
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = Some(throttle);
        self
    }

    /// With an expired value in hand, wait at most `timeout` for another
    /// caller's reload before being served the expired value.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// Stop waiting for this call's own loader after `timeout` (async
    /// calls): the expired value is served if there is one, else
    /// [`LoadError::TimedOut`] is returned; the load is dropped.
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = Some(timeout);
        self
    }

    /// Whether a hard timeout may end the call with an error (for callers
    /// whose error type cannot carry one, like `#[cacheme]` fns).
    pub(crate) fn timeout_errors(mut self, errors: bool) -> Self {
        self.timeout_errors = errors;
        self
    }

    /// The value depends on these invalid keys (dependency groups): it is
    /// invalidated when any of them is.
    pub fn depends_on(mut self, keys: impl IntoInvalidKeys) -> Self {
        keys.push_into(&mut self.groups);
        self
    }

    /// The value depends on invalid keys computed from the value itself
    /// (Python cacheme's `c.cacheme_result`); called once per load, before the fill.
    pub fn depends_on_value(mut self, groups: GroupsOf<'a, V>) -> Self {
        self.groups_of = Some(groups);
        self
    }

    /// Call `hook` with the key and the value when the value comes from the
    /// cache (or from a concurrent caller's load).
    pub fn hit(mut self, hook: HitHook<'a, V>) -> Self {
        self.hit = Some(hook);
        self
    }

    /// Call `hook` with the key when this caller is about to run the loader.
    pub fn miss(mut self, hook: MissHook<'a>) -> Self {
        self.miss = Some(hook);
        self
    }

    /// Skip the cache entirely when `skip` is true: the loader runs, nothing
    /// is read or stored (Python cacheme's `skip`).
    pub fn skip(mut self, skip: bool) -> Self {
        self.skip = skip;
        self
    }

    /// Whether callers waiting in this process for a load that fails get the
    /// leader's error, shared (the default), or run the loader themselves.
    pub fn share_errors(mut self, share: bool) -> Self {
        self.share_errors = share;
        self
    }

    /// Use the local tier of this lookup's spec (`local_ttl` /
    /// `local_capacity` on the node or function), if it has one: values are
    /// then served from this process's memory, without a store round trip,
    /// while invalidations remove them everywhere within milliseconds.
    /// Managers and `#[cacheme]` functions do this by themselves.
    pub fn local(mut self) -> Self
    where
        V: LocalValue,
    {
        self.local_clone = Some(local_clone::<V>);
        self
    }

    /// The cache key (without the prefix, with the version).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value from the cache, or from `loader` (run by exactly one caller
    /// among the concurrent ones, in this process and across processes).
    ///
    /// Store trouble never reaches the caller: the loader runs and the
    /// failure is logged and counted. A loader error is returned and not
    /// cached.
    pub async fn load<F, Fut, E>(self, loader: F) -> Result<V, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let local = match driver::before_store(&self) {
            Before::Served(value) => return Ok(value),
            Before::Bypass => return Box::pin(loader()).await.map_err(LoadError::Own),
            Before::Store(local) => local,
        };
        driver::load_async(&self, loader, false, local).await.result
    }

    /// [`load`](Self::load), but when the value needs a refresh (it is stale
    /// and stale values are accepted, or it is older than `refresh_after`),
    /// this caller too is served the cached value at once, and the refresh
    /// (one per key across the fleet) runs in a background task. The loader
    /// must own its data (`'static`) to be run after this call returns.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// let cache = cacheme::Cache::builder().build().expect("memory store");
    /// let price = |v: u32| async move { Ok::<_, std::convert::Infallible>(v) };
    /// let lookup = || cache.lookup::<u32>("price:7").refresh_after(Duration::from_millis(1));
    /// assert_eq!(lookup().load_detached(move || price(100)).await.expect("loads"), 100);
    /// tokio::time::sleep(Duration::from_millis(5)).await;
    /// // Old enough to refresh: served the cached value at once, refreshed behind.
    /// assert_eq!(lookup().load_detached(move || price(101)).await.expect("cached"), 100);
    /// # }
    /// ```
    pub async fn load_detached<F, Fut, E>(self, loader: F) -> Result<V, LoadError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let local = match driver::before_store(&self) {
            Before::Served(value) => return Ok(value),
            Before::Bypass => return Box::pin(loader()).await.map_err(LoadError::Own),
            Before::Store(local) => local,
        };
        let led = driver::load_async(&self, loader, true, local).await;
        let read = led.refresh_from();
        if let Some(loader) = led.refresh_with {
            tokio::spawn(driver::refresh_async(self.detached(), loader, read));
        }
        led.result
    }

    /// The parts of this lookup that a background task can own (no hooks).
    fn detached(&self) -> Lookup<'static, V> {
        Lookup {
            cache: self.cache.clone(),
            key: Cow::Owned(self.key.clone().into_owned()),
            spec: self.spec,
            ttl: self.ttl,
            stale: self.stale,
            refresh_after: self.refresh_after,
            fail_safe: self.fail_safe,
            fail_safe_throttle: self.fail_safe_throttle,
            soft_timeout: self.soft_timeout,
            hard_timeout: self.hard_timeout,
            timeout_errors: self.timeout_errors,
            groups: self.groups.clone(),
            groups_of: None,
            hit: None,
            miss: None,
            share_errors: self.share_errors,
            skip: self.skip,
            local_clone: self.local_clone,
            ttl_for: self.ttl_for,
        }
    }

    /// [`load`](Self::load) for blocking code: no async runtime needed.
    pub fn load_blocking<F, E>(self, loader: F) -> Result<V, LoadError<E>>
    where
        F: FnOnce() -> Result<V, E>,
        E: Send + Sync + 'static,
    {
        match driver::before_store(&self) {
            Before::Served(value) => Ok(value),
            Before::Bypass => loader().map_err(LoadError::Own),
            Before::Store(local) => driver::load_blocking(&self, loader, local),
        }
    }

    /// The cached value, if there is one this caller may be served (fresh,
    /// or stale with stale on). Never runs a loader. Store trouble reads as
    /// `None` (it is logged and counted); use [`try_get`](Self::try_get) to
    /// tell it apart from a miss.
    pub async fn get(self) -> Option<V> {
        self.try_get().await.ok().flatten()
    }

    /// [`get`](Self::get), with store trouble as an error: `Ok(None)` is a
    /// miss, `Err` means the store could not be asked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cacheme::Error> {
    /// let cache = cacheme::Cache::builder().build()?;
    /// assert_eq!(cache.lookup::<String>("nothing here").try_get().await?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_get(self) -> crate::Result<Option<V>> {
        let read = match self.before_get() {
            None => return Ok(None),
            Some(GetStep::Done(value)) => return Ok(Some(value)),
            Some(GetStep::Read(read)) => read,
        };
        let inner = &self.cache.inner;
        driver::sync_async(inner).await;
        let started = std::time::Instant::now();
        let bytes = inner
            .backend
            .run(
                &storage::Get { keys: &read.keys },
                &inner.reporting(&read.settings).for_node(self.spec),
            )
            .await?;
        inner.stats.of(self.spec).record_read(started.elapsed());
        Ok(self.after_get(read, bytes))
    }

    /// [`get`](Self::get) for blocking code.
    pub fn get_blocking(self) -> Option<V> {
        self.try_get_blocking().ok().flatten()
    }

    /// [`try_get`](Self::try_get) for blocking code.
    pub fn try_get_blocking(self) -> crate::Result<Option<V>> {
        let read = match self.before_get() {
            None => return Ok(None),
            Some(GetStep::Done(value)) => return Ok(Some(value)),
            Some(GetStep::Read(read)) => read,
        };
        let inner = &self.cache.inner;
        driver::sync_blocking(inner);
        let started = std::time::Instant::now();
        let bytes = inner.backend.run_blocking(
            &storage::Get { keys: &read.keys },
            &inner.reporting(&read.settings).for_node(self.spec),
        )?;
        inner.stats.of(self.spec).record_read(started.elapsed());
        Ok(self.after_get(read, bytes))
    }

    /// What a `get` does before its read: nothing when the cache is off or
    /// skipped, the local tier's value when it has one.
    fn before_get(&self) -> Option<GetStep<V>> {
        let inner = &self.cache.inner;
        if !inner.enabled() || self.skip {
            return None;
        }
        Some(match driver::LocalUse::check(self, inner) {
            Ok(value) => GetStep::Done(value),
            Err(local) => GetStep::Read(GetRead {
                local,
                settings: inner.settings(),
                keys: inner.store_keys(&self.key),
            }),
        })
    }

    /// Serve what the read found, and keep it locally when fresh.
    fn after_get(&self, read: GetRead<V>, bytes: Option<Vec<u8>>) -> Option<V> {
        let (value, fresh) = driver::servable(self, &read.settings, bytes.as_deref())?;
        if let (Some(local), Some(bytes)) = (read.local.filter(|_| fresh), &bytes) {
            local.fill(&self.cache.inner, self, &value, bytes);
        }
        Some(value)
    }
}

/// `ttl`, moved by up to ± `percent` % by an amount fixed by `key` (its
/// FNV-1a hash: the same in every process and on every call), at least 1 ms.
pub(crate) fn jittered(ttl: Duration, percent: u8, key: &str) -> Duration {
    if percent == 0 {
        return ttl;
    }
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // A position in [-1, 1], in 1/1000ths.
    let position = i128::from(hash % 2001) - 1000;
    let ttl_ms = i128::try_from(ttl.as_millis()).unwrap_or(i128::MAX / 200_000);
    let moved = ttl_ms + ttl_ms * i128::from(percent.min(100)) * position / 100_000;
    Duration::from_millis(u64::try_from(moved.max(1)).unwrap_or(u64::MAX))
}

/// The steps of a `get`.
enum GetStep<V> {
    Done(V),
    Read(GetRead<V>),
}

/// A `get` about to read the store.
struct GetRead<V> {
    local: Option<driver::LocalUse<V>>,
    settings: std::sync::Arc<crate::Settings>,
    keys: crate::key::StoreKeys,
}

#[cfg(test)]
mod jitter_tests {
    use super::jittered;
    use std::time::Duration;

    #[test]
    fn jitter_stays_within_its_bounds_is_fixed_per_key_and_spreads_keys() {
        let ttl = Duration::from_secs(300);
        assert_eq!(jittered(ttl, 0, "cat:1"), ttl);
        let ttls: Vec<Duration> = (0..200)
            .map(|id| jittered(ttl, 10, &format!("cat:{id}")))
            .collect();
        for moved in &ttls {
            assert!(
                *moved >= Duration::from_secs(270) && *moved <= Duration::from_secs(330),
                "{moved:?}"
            );
        }
        let below = ttls.iter().filter(|t| **t < ttl).count();
        assert!((50..150).contains(&below), "{below} of 200 below the ttl");
        assert_eq!(jittered(ttl, 10, "cat:7"), jittered(ttl, 10, "cat:7"));
        assert!(jittered(Duration::from_millis(1), 100, "k") >= Duration::from_millis(1));
    }
}
