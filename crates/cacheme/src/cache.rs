//! The cache handle, the global instance, and the per-cache machinery
//! (flights, wake-ups, the fill subscriber, the lease keeper).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::codec::Codec;
use crate::driver::Keeper;
use crate::events::SequenceKeys;
use crate::flight::Flights;
use crate::key::StoreKeys;
use crate::local::LocalTiers;
use crate::lookup::Lookup;
use crate::protocol::Policy;
use crate::settings::{CacheBuilder, Settings, Source};
use crate::stamps::Stamps;
use crate::stats::{NodeStats, Stats, StatsSnapshot};
use crate::storage::endpoint::Endpoint;
use crate::storage::{self, Backend, MemoryStore, RedisStore, Reporting};
use crate::wakeups::Wakeups;
use crate::{Error, Result};

/// A cache: where values live and how calls behave.
///
/// Cheap to clone (a shared handle). Most applications install one globally
/// ([`CacheBuilder::install`]) and use `Node::objects()` and `#[cacheme]`
/// functions, which find it by themselves; tests and programs with several
/// caches pass handles explicitly ([`Cache::objects`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let value: String = cache
///     .lookup("greeting")
///     .load(|| async { Ok::<_, std::convert::Infallible>("hello".to_owned()) })
///     .await
///     .expect("the loader cannot fail");
/// assert_eq!(value, "hello");
/// assert_eq!(cache.lookup::<String>("greeting").get().await.as_deref(), Some("hello"));
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) prefix: String,
    pub(crate) codec: Codec,
    /// A copy of `settings.enabled`, read by every call without loading the settings.
    enabled: AtomicBool,
    settings: ArcSwap<Settings>,
    pub(crate) backend: Backend,
    pub(crate) flights: Flights,
    pub(crate) wakeups: Arc<Wakeups>,
    pub(crate) stats: Arc<Stats>,
    /// The local tiers, and their coherence.
    pub(crate) local: LocalTiers,
    warn_gate: crate::breaker::WarnGate,
    /// Keys whose oversized values were already reported.
    oversize_warned: Mutex<std::collections::HashSet<String>>,
    /// "An async call outside a tokio runtime" was reported.
    no_runtime_warned: AtomicBool,
    /// Renews and releases the leases this process holds.
    pub(crate) keeper: Keeper,
    /// What this process knows of the invalidation sequence.
    pub(crate) stamps: Stamps,
    /// This process's id in the invalidations it publishes.
    pub(crate) publisher: u64,
    subscriber_stop: Arc<AtomicBool>,
    /// Invalidations the store could not take, retried in the background.
    pub(crate) pending: crate::invalidation::Pending,
    /// `connect_sources` ran: the registered sources are started once.
    pub(crate) sources_connected: AtomicBool,
    /// Publishes fleet stats and reports to the `metrics` facade.
    pub(crate) reporter: crate::stats::fleet::Reporter,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.inner.prefix)
            .field("backend", &self.inner.backend)
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.subscriber_stop.store(true, Ordering::Relaxed);
    }
}

impl Cache {
    /// Start building a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    pub(crate) fn from_builder(builder: CacheBuilder) -> Result<Cache> {
        let wakeups = Arc::new(Wakeups::default());
        let subscriber_stop = Arc::new(AtomicBool::new(false));
        let sequence = SequenceKeys::new(&builder.prefix);
        let endpoint = match &builder.source {
            Source::Redis { .. } => Endpoint::open(&builder.connect)?,
            // A cluster's nodes are its own source (storage::cluster).
            _ => None,
        };
        let backend = match builder.source {
            Source::Memory => Backend::Memory(MemoryStore::default()),
            Source::Redis {
                manager,
                #[cfg(feature = "deadpool")]
                pool,
            } => {
                let described = match &endpoint {
                    Some(endpoint) => endpoint.describe().to_owned(),
                    None => "application connection".to_owned(),
                };
                #[cfg(feature = "deadpool")]
                let pool_source = pool.map(|pool| storage::redis::AsyncSource::Pool {
                    pool,
                    current: ArcSwapOption::empty(),
                });
                #[cfg(not(feature = "deadpool"))]
                let pool_source = None;
                let async_source = match (manager, pool_source) {
                    (Some(manager), _) => storage::redis::AsyncSource::Manager(manager),
                    (None, Some(pool)) => pool,
                    (None, None) => storage::redis::AsyncSource::Endpoint(ArcSwapOption::empty()),
                };
                Backend::Redis(RedisStore::new(
                    endpoint.clone(),
                    async_source,
                    described,
                    sequence.clone(),
                ))
            }
            #[cfg(not(feature = "cluster"))]
            Source::Cluster(_) => Backend::Memory(MemoryStore::default()),
            #[cfg(feature = "cluster")]
            Source::Cluster(crate::settings::ClusterSource { urls, connection }) => {
                let described = crate::settings::describe_cluster(&urls);
                let cluster =
                    storage::cluster::ClusterSource::new(&urls, connection).map_err(|source| {
                        Error::Connect {
                            url: described.clone(),
                            source,
                        }
                    })?;
                Backend::Redis(RedisStore::new(
                    None,
                    storage::redis::AsyncSource::Cluster(Box::new(cluster)),
                    described,
                    sequence.clone(),
                ))
            }
        };
        // The memory store needs no events to stay coherent: one process.
        let memory = matches!(backend, Backend::Memory(_));
        let local = LocalTiers::new(memory);
        let log_len = usize::try_from(builder.settings.invalidation_log_len).unwrap_or(usize::MAX);
        let inner = Arc::new(Inner {
            local,
            prefix: builder.prefix,
            codec: builder.codec,
            enabled: AtomicBool::new(builder.settings.enabled),
            settings: ArcSwap::from_pointee(builder.settings),
            backend,
            flights: Flights::default(),
            wakeups,
            stats: Arc::default(),
            warn_gate: Default::default(),
            oversize_warned: Mutex::new(Default::default()),
            no_runtime_warned: AtomicBool::new(false),
            keeper: Keeper::default(),
            stamps: Stamps::new(log_len, memory),
            publisher: publisher_id(),
            subscriber_stop,
            sources_connected: AtomicBool::new(false),
            pending: Default::default(),
            reporter: Default::default(),
        });
        inner.reporter.start_if_needed(&inner, &inner.settings());
        if let Backend::Redis(store) = &inner.backend
            && let endpoint = store.endpoint().cloned()
            && let clients = store.subscriber_clients()
            && (endpoint.is_some() || !clients.is_empty())
        {
            crate::subscriber::spawn(
                endpoint,
                clients,
                sequence.channel,
                Arc::downgrade(&inner),
                inner.subscriber_stop.clone(),
            );
        }
        Ok(Cache { inner })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Whether caching is on (Python cacheme's `ENABLE_CACHE`).
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled()
    }

    /// Turn caching on or off. Takes effect on the next call.
    pub fn set_enabled(&self, enabled: bool) {
        self.update_settings(|settings| settings.enabled = enabled);
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        (**self.inner.settings.load()).clone()
    }

    /// Change settings (Python cacheme's `update_settings`); takes effect on the
    /// next call. The prefix and the codec are not settings: they say where
    /// and how values are stored, so they are fixed when the cache is built.
    ///
    /// ```
    /// let cache = cacheme::Cache::builder().build().expect("memory store");
    /// cache.update_settings(|s| s.stale = false);
    /// assert!(!cache.settings().stale);
    /// ```
    pub fn update_settings(&self, update: impl FnOnce(&mut Settings)) {
        let mut settings = self.settings();
        update(&mut settings);
        self.inner
            .enabled
            .store(settings.enabled, Ordering::Relaxed);
        self.inner.settings.store(Arc::new(settings));
        self.inner
            .reporter
            .start_if_needed(&self.inner, &self.inner.settings());
    }

    /// A copy of this cache's counters, in total (see
    /// [`node_stats`](Self::node_stats) for them per node).
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The counters and histograms of every node type and cached function
    /// called so far, in the order they were first called (ad-hoc
    /// [`lookup`](Self::lookup)s count under `lookup`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = cacheme::Cache::builder().build().expect("memory store");
    /// assert!(cache.node_stats().is_empty());
    /// let _: Option<u8> = cache.lookup("k").get().await;
    /// let nodes = cache.node_stats();
    /// assert_eq!((nodes[0].name.as_str(), nodes[0].stats.miss), ("lookup", 1));
    /// # }
    /// ```
    pub fn node_stats(&self) -> Vec<NodeStats> {
        self.inner.stats.nodes()
    }

    /// Publish this process's per-node counters to Redis now, for `cacheme
    /// stats` (what [`Settings::fleet_stats`] does every `stats_interval`),
    /// and, with the `metrics` feature, report them to the `metrics` facade
    /// now. A memory cache publishes nothing.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached, or the cache has no URL to make the
    /// blocking connection this uses.
    pub fn publish_stats(&self) -> Result<()> {
        let settings = self.inner.settings();
        self.inner.reporter.report_metrics(&self.inner);
        self.inner.reporter.publish(&self.inner, &settings)
    }

    /// The counters and histograms of the node type or cached function
    /// named `name` (its spec's name), if it was called.
    pub fn stats_of(&self, name: &str) -> Option<NodeStats> {
        self.node_stats().into_iter().find(|node| node.name == name)
    }

    /// True while local tiers may serve values: always on the memory store;
    /// on Redis, while the invalidation event subscription is up (without it
    /// a process could miss invalidations, so its tiers are emptied and unused).
    pub fn local_tiers_active(&self) -> bool {
        self.inner.local.is_connected()
    }

    /// Check, in one round trip over a new connection, that Redis is
    /// reachable, accepts the credentials, runs scripts, and lets the ACL
    /// user run every command cacheme sends on its keys (`{prefix}*`) and
    /// its event channel; see [`CacheBuilder::verify`]. Blocks (with
    /// Sentinel, until the sentinels name a primary, up to
    /// `max(op_timeout, 2 s)`); from async code, use [`verify`](Self::verify).
    ///
    /// The memory store always passes. A cache that only has the
    /// application's connection (no URL) cannot be checked:
    /// [`Error::NoBlockingConnection`].
    pub fn verify_blocking(&self) -> Result<()> {
        let store = match &self.inner.backend {
            Backend::Memory(_) => return Ok(()),
            Backend::Redis(store) => store,
        };
        let endpoint = store
            .endpoint()
            .ok_or(Error::NoBlockingConnection { command: "verify" })?;
        let timeout = self.settings().op_timeout.max(VERIFY_MIN_TIMEOUT);
        storage::verify::verify_blocking(endpoint, store.sequence(), timeout)
    }

    /// [`verify_blocking`](Self::verify_blocking) from async code (on
    /// tokio's blocking thread pool).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cacheme::Result<()> {
    /// let cache = cacheme::Cache::builder().build()?;
    /// cache.verify().await?; // the memory store always passes
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify(&self) -> Result<()> {
        if matches!(self.inner.backend, Backend::Memory(_)) {
            return Ok(());
        }
        let cache = self.clone();
        match tokio::task::spawn_blocking(move || cache.verify_blocking()).await {
            Ok(result) => result,
            Err(_) => Err(Error::NoRuntime { command: "verify" }),
        }
    }

    /// True if values are kept in Redis (as opposed to this process's memory).
    pub fn is_redis(&self) -> bool {
        matches!(self.inner.backend, Backend::Redis(_))
    }
}

impl Inner {
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The settings for one call.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    pub(crate) fn reporting(&self, settings: &Settings) -> Reporting<'_> {
        Reporting {
            wakeups: &self.wakeups,
            stats: &self.stats,
            node: None,
            warn_gate: &self.warn_gate,
            timeout: settings.op_timeout,
            limits: crate::breaker::Limits {
                threshold: settings.breaker_threshold,
                cooldown: settings.breaker_cooldown,
            },
        }
    }

    pub(crate) fn store_keys(&self, key: &str) -> StoreKeys {
        StoreKeys::new(&self.prefix, key)
    }

    /// The protocol policy for a lookup: its own overrides, then its spec's
    /// meta, then the settings.
    pub(crate) fn policy_for<V>(&self, lookup: &Lookup<'_, V>, background_refresh: bool) -> Policy {
        let settings = self.settings.load();
        Policy {
            stale: lookup.stale_ok(&settings),
            refresh_after: lookup.effective_refresh_after(),
            retries: settings.herd_retries,
            interval: settings.herd_interval,
            background_refresh,
            soft_timeout: lookup.effective_soft_timeout(&settings),
        }
    }

    /// Report, once, that async calls are made outside a tokio runtime
    /// (they run their loaders and never cache).
    pub(crate) fn warn_no_runtime(&self) {
        self.stats.store_error();
        if !self.no_runtime_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cacheme: an async call was made outside a tokio runtime; it runs its loader and \
                 caches nothing (use the blocking twin of the call, or call it inside a runtime)"
            );
        }
    }

    /// Report an oversized value once per key.
    pub(crate) fn warn_oversize(&self, key: &str, size: usize, max: usize) {
        let mut warned = self
            .oversize_warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned.len() < 10_000 && warned.insert(key.to_owned()) {
            tracing::warn!(
                key,
                size,
                max,
                "cacheme: value is larger than max_value_size; returned but not stored"
            );
        }
    }
}

/// A random id for this process's cache, in the invalidations it publishes.
fn publisher_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The least time `verify` gives Redis (and the sentinels) to answer.
const VERIFY_MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

static GLOBAL: ArcSwapOption<Inner> = ArcSwapOption::const_empty();

/// Make `cache` the global cache.
pub fn install(cache: Cache) {
    GLOBAL.store(Some(cache.inner));
}

/// The global cache: the one installed last, or else an in-memory cache with
/// default settings (created on first use), so that examples and tests run
/// without any set-up.
pub fn global() -> Cache {
    if let Some(inner) = GLOBAL.load_full() {
        return Cache { inner };
    }
    let default = Cache::builder()
        .build()
        .expect("the default memory cache has a valid prefix");
    GLOBAL.compare_and_swap(&None::<Arc<Inner>>, Some(default.inner.clone()));
    Cache {
        inner: GLOBAL.load_full().unwrap_or(default.inner),
    }
}
