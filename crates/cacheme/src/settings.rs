//! Settings and the builder that connects a cache (Python cacheme's
//! `set_connection` and `update_settings`).

use std::time::Duration;

use crate::cache::Cache;
use crate::codec::Codec;
use crate::storage::endpoint::{ConnectOptions, SentinelOptions};
use crate::{Error, Result};

/// Settings that can change while the cache runs
/// ([`Cache::update_settings`]); read on every call.
///
/// The defaults are Python cacheme's (stale data on, no TTL, 5 herd retries), but
/// for the herd interval: Python cacheme polled every 20 ms; here waiters are woken
/// as soon as the value is filled, so the interval is only a bound, and 1 s
/// keeps loads of up to about 5 s down to one load (5 × 20 ms sent waiters
/// to load for themselves after 100 ms).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Caching on or off (Python cacheme's `ENABLE_CACHE`). When off, every call
    /// runs its loader and reads nothing; invalidations still run, so that
    /// other processes (with caching on) do not keep serving old values.
    pub enabled: bool,
    /// Serve stale (invalidated) values while one caller refreshes them
    /// (Python cacheme's `STALE`). Node meta and decorator arguments override it.
    pub stale: bool,
    /// TTL of values whose node or function sets none.
    pub default_ttl: Option<Duration>,
    /// How many times a caller waits for another caller's load before it
    /// loads for itself (Python cacheme's `THUNDERING_HERD_RETRY_COUNT`).
    pub herd_retries: u32,
    /// The longest single wait (Python cacheme's `THUNDERING_HERD_RETRY_TIME`).
    /// Waiters are woken as soon as the value is filled, so this is a bound,
    /// not a polling period.
    pub herd_interval: Duration,
    /// The longest a single store operation may take before the call fails
    /// open (runs the loader, or returns the error to an invalidation).
    pub op_timeout: Duration,
    /// Lifetime of a load lease. It is renewed while the loader runs, so it
    /// only matters when a process dies mid-load: others take over after it.
    pub lease_ttl: Duration,
    /// How long a lease is renewed for one load, at most. A loader that runs
    /// longer (hung on a dead connection, say) stops holding the key: another
    /// caller loads it, and the long load's result is not stored.
    pub max_load_time: Duration,
    /// How many invalidations the shared invalidation log keeps (about), and
    /// how many tag and group invalidations each process remembers. A value
    /// claimed before the oldest one a process knows is reloaded once rather
    /// than trusted.
    pub invalidation_log_len: u64,
    /// Fail-safe: how long past its TTL a value is kept, to be served when
    /// its reload fails or times out (`None`: off, the default). Node meta
    /// and decorator arguments override it.
    pub fail_safe_max: Option<Duration>,
    /// After a failed reload, how long the expired value is served again
    /// before anyone in the fleet retries the source (default 30 s).
    pub fail_safe_throttle: Duration,
    /// With an expired value in hand, how long a caller waits for another
    /// caller's reload before it is served the expired value (`None`: it
    /// waits its herd budget).
    pub soft_timeout: Option<Duration>,
    /// How long a loader may run before its caller stops waiting (async
    /// calls): it is served the expired value when there is one, else gets
    /// [`LoadError::TimedOut`](crate::LoadError::TimedOut); the load is
    /// dropped and its lease released. `None` (the default): no limit.
    pub hard_timeout: Option<Duration>,
    /// Values whose encoded size exceeds this are returned but not stored.
    pub max_value_size: usize,
    /// Payloads of at least this many bytes are stored LZ4-compressed when
    /// that makes them shorter (recorded in the envelope; readers of any
    /// setting read both). `None` (the default): never compressed.
    pub compress_above: Option<usize>,
    /// How many targets (keys, groups, tags, patterns) of invalidations that
    /// failed to reach the store are queued for retry (default 100,000; 0:
    /// none are).
    pub invalidation_queue: usize,
    /// After this many consecutive failures to reach Redis, the circuit
    /// breaker opens: calls stop waiting for Redis (they run their loaders at
    /// once) for [`breaker_cooldown`](Self::breaker_cooldown), then one probe
    /// decides whether it closes.
    pub breaker_threshold: u32,
    /// How long the circuit breaker stays open before it probes Redis again.
    pub breaker_cooldown: Duration,
    /// Leave cache keys out of the `tracing` spans of loads and waits
    /// (`cacheme.load`, `cacheme.wait`) and of invalidations, for keys that
    /// hold personal data (default: keys are recorded).
    pub redact_keys: bool,
    /// Publish this process's per-node counters to Redis every
    /// [`stats_interval`](Self::stats_interval), for `cacheme stats` to sum
    /// across the fleet (default off; see docs/operations.md). Needs a
    /// Redis cache built with a URL.
    pub fleet_stats: bool,
    /// How often fleet stats are published, and (with the `metrics`
    /// feature) how often the counters are reported to the `metrics`
    /// facade (default 5 s; at least 100 ms).
    pub stats_interval: Duration,
    /// Spread stored TTLs by up to ± this percentage (0 to 100; default 0),
    /// so that the keys of a warm-up do not all expire at once. Each key's
    /// spread is fixed (a hash of the key): the same key always gets the
    /// same TTL, in the store and in the local tier.
    pub ttl_jitter_percent: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            stale: true,
            default_ttl: None,
            herd_retries: 5,
            herd_interval: Duration::from_secs(1),
            op_timeout: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(3),
            max_load_time: Duration::from_secs(60),
            invalidation_log_len: 100_000,
            max_value_size: 8 * 1024 * 1024,
            compress_above: None,
            invalidation_queue: 100_000,
            fail_safe_max: None,
            fail_safe_throttle: Duration::from_secs(30),
            soft_timeout: None,
            hard_timeout: None,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_millis(500),
            redact_keys: false,
            fleet_stats: false,
            stats_interval: Duration::from_secs(5),
            ttl_jitter_percent: 0,
        }
    }
}

/// Where a cache keeps its values.
pub(crate) enum Source {
    Memory,
    /// Redis, reached through the builder's [`ConnectOptions`] (a URL or
    /// sentinels), the application's connections, or both.
    Redis {
        manager: Option<redis::aio::ConnectionManager>,
        #[cfg(feature = "deadpool")]
        pool: Option<deadpool_redis::Pool>,
    },
    /// A Redis Cluster (only built with the `cluster` feature).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Cluster(ClusterSource),
}

/// A Redis Cluster's initial nodes, and the application's own async
/// connection if it gave one.
pub(crate) struct ClusterSource {
    #[cfg(feature = "cluster")]
    pub(crate) urls: Vec<String>,
    #[cfg(feature = "cluster")]
    pub(crate) connection: Option<redis::cluster_async::ClusterConnection>,
}

impl Source {
    /// Redis, keeping the application connections already given (a
    /// cluster's are dropped: the last choice of store wins).
    fn redis(self) -> Source {
        match self {
            Source::Memory | Source::Cluster(_) => Source::Redis {
                manager: None,
                #[cfg(feature = "deadpool")]
                pool: None,
            },
            redis => redis,
        }
    }
}

/// Builds a [`Cache`]: where it stores values and how it behaves.
///
/// ```
/// use std::time::Duration;
///
/// let cache = cacheme::Cache::builder()
///     .prefix("MYCACHE:")
///     .herd_retry(5, Duration::from_millis(20))
///     .stale(true)
///     .build()
///     .expect("the memory store needs no connection");
/// assert_eq!(cache.prefix(), "MYCACHE:");
/// ```
///
/// Managed and secured Redis (TLS, ACL users, Sentinel) is configured here
/// too; see `docs/deployments.md`:
///
/// ```no_run
/// let cache = cacheme::Cache::builder()
///     .redis_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster")
///     .username("cacheme")
///     .password(std::env::var("REDIS_PASSWORD").unwrap_or_default())
///     .verify() // build() checks the connection, the scripts and the ACL
///     .build()?;
/// # Ok::<(), cacheme::Error>(())
/// ```
#[must_use]
pub struct CacheBuilder {
    pub(crate) settings: Settings,
    pub(crate) prefix: String,
    pub(crate) codec: Codec,
    pub(crate) source: Source,
    pub(crate) connect: ConnectOptions,
    pub(crate) verify: bool,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            settings: Settings::default(),
            prefix: "CM:".to_owned(),
            codec: Codec::MessagePack,
            source: Source::Memory,
            connect: ConnectOptions::default(),
            verify: false,
        }
    }
}

impl CacheBuilder {
    /// Store values in this process's memory (the default).
    pub fn memory(mut self) -> Self {
        self.source = Source::Memory;
        self
    }

    /// Store values in Redis at `url`. Async calls use one multiplexed,
    /// self-reconnecting connection; blocking calls, the lease keeper and
    /// the fill announcements use plain connections made from the same URL.
    ///
    /// - `redis://[user:password@]host:port/db`: one server; the user is an
    ///   ACL user (Redis 6+), or leave it out for `requirepass`.
    /// - `rediss://...`: the same over TLS (the `tls` feature, which adds
    ///   `tls_ca` and `tls_client_cert`).
    /// - `redis+sentinel://[user:password@]host:port[,host:port...]/master[/db]`:
    ///   the primary that these sentinels monitor as `master`, followed
    ///   across failovers (`rediss+sentinel://` over TLS). The credentials
    ///   are the data nodes'; the sentinels are asked without any.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.connect.url = Some(url.into());
        self.connect.sentinel = None;
        self.source = self.source.redis();
        self
    }

    /// Store values in the primary that these sentinels (`host:port`)
    /// monitor as `master`, and follow it across failovers: the builder
    /// form of a `redis+sentinel://` URL (plain TCP, database 0).
    pub fn sentinel<S: Into<String>>(
        mut self,
        sentinels: impl IntoIterator<Item = S>,
        master: impl Into<String>,
    ) -> Self {
        self.connect.sentinel = Some(SentinelOptions {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master.into(),
            tls: false,
            db: 0,
        });
        self.source = self.source.redis();
        self
    }

    /// Log in as this ACL user (over the URL's); used by every connection
    /// made from [`redis_url`](Self::redis_url) or
    /// [`sentinel`](Self::sentinel).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.connect.username = Some(username.into());
        self
    }

    /// Log in with this password (over the URL's). It is never shown: not
    /// in `Debug` output, errors or logs.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.connect.password = Some(password.into());
        self
    }

    /// Trust these CA certificates (PEM) for `rediss://` connections,
    /// instead of the system's roots: a private CA.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.connect.tls.ca = Some(ca_pem.into());
        self
    }

    /// Present this client certificate chain and private key (PEM) on
    /// `rediss://` connections: mutual TLS.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.connect.tls.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Make [`build`](Self::build) and [`install`](Self::install) check,
    /// in one round trip, that Redis is reachable, accepts the credentials,
    /// runs scripts, and lets the user run every command cacheme sends on
    /// its keys and channel. A refusal is an [`Error::Authentication`] or
    /// an [`Error::PermissionDenied`] naming the command. Without it,
    /// nothing is checked before the first call, and a refused command is
    /// a counted fail-open (`store_errors`, and a warning). See also
    /// [`Cache::verify`].
    pub fn verify(mut self) -> Self {
        self.verify = true;
        self
    }

    /// Send async commands over the application's own `ConnectionManager`.
    /// Add [`redis_url`](Self::redis_url) too for blocking calls and for
    /// push wake-ups of waiting callers (without it, waiters re-check every
    /// `herd_interval`).
    pub fn connection_manager(mut self, manager: redis::aio::ConnectionManager) -> Self {
        #[cfg(feature = "deadpool")]
        let pool = match self.source {
            Source::Redis { pool, .. } => pool,
            Source::Memory | Source::Cluster(_) => None,
        };
        self.source = Source::Redis {
            manager: Some(manager),
            #[cfg(feature = "deadpool")]
            pool,
        };
        self
    }

    /// Send async commands over a connection taken from the application's
    /// `deadpool_redis::Pool`. The connection is detached from the pool and
    /// multiplexed (a pool checkout costs a `PING` round trip per command;
    /// see `docs/connections.md`); after a connection error another one is
    /// taken. Add [`redis_url`](Self::redis_url) too for blocking calls and
    /// push wake-ups.
    #[cfg(feature = "deadpool")]
    #[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
    pub fn deadpool(mut self, pool: deadpool_redis::Pool) -> Self {
        let manager = match self.source {
            Source::Redis { manager, .. } => manager,
            Source::Memory | Source::Cluster(_) => None,
        };
        self.source = Source::Redis {
            manager,
            pool: Some(pool),
        };
        self
    }

    /// Store values in a Redis Cluster whose nodes include these
    /// (`redis://host:port`; a few are enough, the others are discovered).
    /// Async calls use redis-rs's async cluster connection (one multiplexed
    /// connection per node, following `MOVED`/`ASK` and failovers), blocking
    /// calls a few synchronous cluster connections, and the event subscriber
    /// listens on one of these nodes (the next one when it fails). See
    /// `docs/deployments.md`.
    ///
    /// ```
    /// let cache = cacheme::Cache::builder()
    ///     .cluster_urls(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .build()
    ///     .expect("valid URLs; nothing is connected before first use");
    /// # drop(cache);
    /// ```
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster_urls<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        let urls = urls.into_iter().map(Into::into).collect();
        self.source = match self.source {
            Source::Cluster(ClusterSource { connection, .. }) => {
                Source::Cluster(ClusterSource { urls, connection })
            }
            _ => Source::Cluster(ClusterSource {
                urls,
                connection: None,
            }),
        };
        self
    }

    /// Send async commands over the application's own Redis Cluster
    /// connection. Add [`cluster_urls`](Self::cluster_urls) too for blocking
    /// calls and for push wake-ups and coherent local tiers (the event
    /// subscriber needs a node to listen on).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster_connection(
        mut self,
        connection: redis::cluster_async::ClusterConnection,
    ) -> Self {
        self.source = match self.source {
            Source::Cluster(ClusterSource { urls, .. }) => Source::Cluster(ClusterSource {
                urls,
                connection: Some(connection),
            }),
            _ => Source::Cluster(ClusterSource {
                urls: Vec::new(),
                connection: Some(connection),
            }),
        };
        self
    }

    /// Prefix of every key this cache writes (default `CM:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Turn caching on or off (Python cacheme's `ENABLE_CACHE`); can be changed
    /// later with [`Cache::set_enabled`]. When off, every call runs its
    /// loader and the store is not touched.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.settings.enabled = enabled;
        self
    }

    /// Serve stale values while one caller refreshes (default on).
    pub fn stale(mut self, stale: bool) -> Self {
        self.settings.stale = stale;
        self
    }

    /// TTL for values whose node or function sets none (default none).
    pub fn default_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.settings.default_ttl = ttl;
        self
    }

    /// Spread stored TTLs by up to ± `percent` % (at most 100), fixed per key:
    /// keys loaded together do not all expire together (default 0).
    ///
    /// ```
    /// let cache = cacheme::Cache::builder().ttl_jitter_percent(10).build().expect("memory store");
    /// assert_eq!(cache.settings().ttl_jitter_percent, 10);
    /// ```
    pub fn ttl_jitter_percent(mut self, percent: u8) -> Self {
        self.settings.ttl_jitter_percent = percent.min(100);
        self
    }

    /// How many times, and at most how long each time, a caller waits for
    /// another caller's load (default 5 × 1 s; waiters are woken by the fill,
    /// so this is a bound, not a polling period).
    pub fn herd_retry(mut self, retries: u32, interval: Duration) -> Self {
        self.settings.herd_retries = retries;
        self.settings.herd_interval = interval;
        self
    }

    /// The longest a single store operation may take (default 250 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.settings.op_timeout = timeout;
        self
    }

    /// Lifetime of a load lease (default 3 s; renewed while loading).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.settings.lease_ttl = ttl;
        self
    }

    /// Fail-safe: keep values `max` past their TTL, and serve them when
    /// their reload fails or times out; after a failure, serve the expired
    /// value for `throttle` before the source is tried again (default off).
    pub fn fail_safe(mut self, max: Duration, throttle: Duration) -> Self {
        self.settings.fail_safe_max = Some(max);
        self.settings.fail_safe_throttle = throttle;
        self
    }

    /// Loader timeouts: past `soft`, callers waiting for a reload are served
    /// the expired value (fail-safe); past `hard`, the loader's own caller
    /// stops waiting (see [`Settings::hard_timeout`]).
    pub fn loader_timeouts(mut self, soft: Option<Duration>, hard: Option<Duration>) -> Self {
        self.settings.soft_timeout = soft;
        self.settings.hard_timeout = hard;
        self
    }

    /// Largest encoded value that is stored (default 8 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.settings.max_value_size = bytes;
        self
    }

    /// Store payloads of at least `bytes` bytes LZ4-compressed, when that
    /// makes them shorter (see [`Settings::compress_above`]).
    ///
    /// ```
    /// let cache = cacheme::Cache::builder().compress_above(4096).build().expect("memory");
    /// # let _ = cache;
    /// ```
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.settings.compress_above = Some(bytes);
        self
    }

    /// Open the circuit breaker after `threshold` consecutive failures to
    /// reach Redis, for `cooldown` (default 5 failures, 500 ms).
    pub fn circuit_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.settings.breaker_threshold = threshold;
        self.settings.breaker_cooldown = cooldown;
        self
    }

    /// Publish per-node counters to Redis every `interval`, for `cacheme
    /// stats` (see [`Settings::fleet_stats`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = cacheme::Cache::builder()
    ///     .fleet_stats(Duration::from_secs(5))
    ///     .build()
    ///     .expect("no connection is made yet");
    /// assert!(cache.settings().fleet_stats);
    /// ```
    pub fn fleet_stats(mut self, interval: Duration) -> Self {
        self.settings.fleet_stats = true;
        self.settings.stats_interval = interval;
        self
    }

    /// Leave keys out of spans (see [`Settings::redact_keys`]).
    pub fn redact_keys(mut self, redact: bool) -> Self {
        self.settings.redact_keys = redact;
        self
    }

    /// How values are serialized (default MessagePack).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Replace all updatable settings at once.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Build the cache. No connection is made yet: Redis is reached on first
    /// use, and a cache whose Redis is down still answers (it fails open);
    /// unless [`verify`](Self::verify) was asked for, in which case this
    /// blocks for one round trip (and, with Sentinel, until the sentinels
    /// name the primary, up to `max(op_timeout, 2 s)`).
    pub fn build(self) -> Result<Cache> {
        if self.prefix.contains(['{', '}']) {
            return Err(Error::InvalidKey {
                key: self.prefix,
                reason: "the prefix cannot contain `{` or `}` (they delimit Redis Cluster hash tags)",
            });
        }
        let verify = self.verify;
        let cache = Cache::from_builder(self)?;
        if verify {
            cache.verify_blocking()?;
        }
        Ok(cache)
    }

    /// Build the cache and install it as the global one, used by
    /// `Node::objects()`, `cacheme::tag(..)` and `#[cacheme]` functions.
    pub fn install(self) -> Result<Cache> {
        let cache = self.build()?;
        crate::cache::install(cache.clone());
        Ok(cache)
    }
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Memory => "memory".to_owned(),
            Source::Redis { .. } if self.connect.is_set() => self.connect.describe(),
            Source::Redis { .. } => "application connection".to_owned(),
            #[cfg(feature = "cluster")]
            Source::Cluster(cluster) => describe_cluster(&cluster.urls),
            #[cfg(not(feature = "cluster"))]
            Source::Cluster(_) => "cluster".to_owned(),
        };
        f.debug_struct("CacheBuilder")
            .field("source", &source)
            .field("connect", &self.connect)
            .field("verify", &self.verify)
            .field("prefix", &self.prefix)
            .field("codec", &self.codec)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A cluster's initial nodes (passwords removed), for logs and errors.
#[cfg(feature = "cluster")]
pub(crate) fn describe_cluster(urls: &[String]) -> String {
    if urls.is_empty() {
        return "application cluster connection".to_owned();
    }
    let urls: Vec<String> = urls.iter().map(|url| redact(url)).collect();
    format!("cluster [{}]", urls.join(", "))
}

/// A URL with its password replaced by `***`, for logs and errors. Every
/// URL that cacheme shows (in `Debug` output, errors and log lines) goes
/// through here.
pub(crate) fn redact(url: &str) -> String {
    // The user info runs from the scheme (or the start, for a string that
    // is not quite a URL) to the last `@`: a password may hold `@` and `/`.
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    let Some(at) = url.rfind('@').filter(|&at| at >= start) else {
        return url.to_owned();
    };
    let userinfo = &url[start..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..start], &userinfo[..colon], &url[at..]),
        None => format!("{}***{}", &url[..start], &url[at..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://user:secret@host:6379"),
            "redis://user:***@host:6379"
        );
        assert_eq!(redact("redis://secret@host"), "redis://***@host");
        assert_eq!(
            redact("rediss://app:p@ss/w:rd@host:1/0"),
            "rediss://app:***@host:1/0"
        );
        assert_eq!(redact("app:secret@host"), "app:***@host");
        assert_eq!(
            redact("redis+sentinel://u:secret@a:1,b:2/m"),
            "redis+sentinel://u:***@a:1,b:2/m"
        );
    }
}
