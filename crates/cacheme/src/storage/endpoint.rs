//! Where a Redis store connects: one server (plain or TLS, with or without
//! an ACL user), or the primary that a set of Sentinels names, followed
//! across failovers.
//!
//! Every connection a Redis cache makes (the multiplexed async connection,
//! the blocking connections of blocking calls and of the lease keeper, the
//! subscriber's pub/sub connection) is made from the [`Primary`] that
//! [`Endpoint::primary`] returns. A primary carries a *generation*: when
//! Sentinel promotes another server, the generation grows, and connections
//! made for an older one are dropped and made again (see `storage::redis`
//! and `subscriber`).
//!
//! Redis Cluster (a later variant) would be one more [`Target`]: it routes
//! by slot rather than through one primary.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{
    Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, RedisResult,
};

use crate::settings::redact;
use crate::{Error, Result};

/// The URL scheme of a Sentinel-managed primary (`rediss+sentinel` for TLS).
pub(crate) const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// [`SENTINEL_SCHEME`] over TLS.
pub(crate) const SENTINEL_TLS_SCHEME: &str = "rediss+sentinel://";

/// How often the Sentinel watcher asks the sentinels who the primary is.
const SENTINEL_POLL: Duration = Duration::from_millis(250);
/// The soonest the watcher asks again after an error hinted at a failover.
const SENTINEL_MIN_INTERVAL: Duration = Duration::from_millis(50);
/// How long one question to a sentinel or a candidate primary may take.
const SENTINEL_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// How a cache reaches Redis, as the builder collected it.
#[derive(Clone, Default)]
pub(crate) struct ConnectOptions {
    /// `redis://`, `rediss://` or `redis+sentinel://` URL.
    pub(crate) url: Option<String>,
    /// The ACL user, over the URL's.
    pub(crate) username: Option<String>,
    /// The password, over the URL's.
    pub(crate) password: Option<String>,
    /// Sentinels and master name given to the builder (over a URL).
    pub(crate) sentinel: Option<SentinelOptions>,
    /// Private CA and client certificate.
    #[cfg(feature = "tls")]
    pub(crate) tls: TlsOptions,
}

/// Sentinels (`host:port`) and the name of the primary they monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentinelOptions {
    pub(crate) sentinels: Vec<String>,
    pub(crate) master: String,
    /// Connect to the data nodes and the sentinels over TLS.
    pub(crate) tls: bool,
    /// The database number on the data nodes.
    pub(crate) db: i64,
}

/// Certificates for TLS connections, PEM.
#[cfg(feature = "tls")]
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    /// CA certificates to trust instead of the system's roots.
    pub(crate) ca: Option<Vec<u8>>,
    /// Client certificate chain and private key, for mutual TLS.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl ConnectOptions {
    /// Whether Redis was asked for (a URL or Sentinels).
    pub(crate) fn is_set(&self) -> bool {
        self.url.is_some() || self.sentinel.is_some()
    }

    /// What these options connect to, password removed.
    pub(crate) fn describe(&self) -> String {
        match (&self.sentinel, &self.url) {
            (Some(sentinel), _) => describe_sentinels(sentinel),
            (None, Some(url)) => redact(url),
            (None, None) => "no redis url".to_owned(),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ConnectOptions");
        out.field("target", &self.describe())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"));
        #[cfg(feature = "tls")]
        out.field("tls_ca", &self.tls.ca.is_some())
            .field("tls_client_cert", &self.tls.client.is_some());
        out.finish()
    }
}

fn describe_sentinels(sentinel: &SentinelOptions) -> String {
    let scheme = if sentinel.tls {
        SENTINEL_TLS_SCHEME
    } else {
        SENTINEL_SCHEME
    };
    format!(
        "{scheme}{}/{}",
        sentinel.sentinels.join(","),
        sentinel.master
    )
}

/// One server to connect to: a client for it, and the generation of the
/// primary it belongs to.
pub(crate) struct Primary {
    pub(crate) client: Client,
    /// Grows each time Sentinel names another primary (always 0 for a
    /// plain server).
    pub(crate) generation: u64,
    /// `host:port`, for logs.
    pub(crate) addr: String,
}

/// Where a Redis store's connections go. Cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct Endpoint {
    shared: Arc<Shared>,
}

struct Shared {
    /// The URL or sentinels, password removed.
    described: String,
    /// The ACL user connections log in as (`default` when none is given).
    user: String,
    target: Target,
}

enum Target {
    /// One server at a fixed address.
    Server(Arc<Primary>),
    /// The primary the sentinels name, watched by a thread.
    Sentinel(Arc<SentinelWatch>),
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shared.described)
    }
}

impl Endpoint {
    /// The endpoint of these options, or `None` when they name no Redis.
    /// No connection is made: a Sentinel endpoint starts its watcher
    /// thread, which finds the primary in the background.
    pub(crate) fn open(options: &ConnectOptions) -> Result<Option<Endpoint>> {
        let described = options.describe();
        let connect_error = |source: RedisError| Error::Connect {
            url: described.clone(),
            source,
        };
        let sentinel = match (&options.sentinel, &options.url) {
            (Some(sentinel), _) => Some(sentinel.clone()),
            (None, Some(url)) if is_sentinel_url(url) => {
                Some(parse_sentinel_url(url).map_err(connect_error)?)
            }
            (None, Some(_)) => None,
            (None, None) => return Ok(None),
        };
        #[cfg(feature = "tls")]
        install_crypto_provider();
        let (target, user) = match sentinel {
            Some(sentinel) => {
                let node = data_node_settings(options, &sentinel).map_err(connect_error)?;
                let user = node.username().unwrap_or("default").to_owned();
                let watch = SentinelWatch::start(options, sentinel, node).map_err(connect_error)?;
                (Target::Sentinel(watch), user)
            }
            None => {
                let url = options.url.as_deref().unwrap_or_default();
                let info = connection_info(url, options).map_err(connect_error)?;
                let user = info
                    .redis_settings()
                    .username()
                    .unwrap_or("default")
                    .to_owned();
                let addr = addr_of(info.addr());
                let client = client_for(info, options).map_err(connect_error)?;
                let primary = Primary {
                    client,
                    generation: 0,
                    addr,
                };
                (Target::Server(Arc::new(primary)), user)
            }
        };
        Ok(Some(Endpoint {
            shared: Arc::new(Shared {
                described,
                user,
                target,
            }),
        }))
    }

    /// The URL or the sentinels, password removed.
    pub(crate) fn describe(&self) -> &str {
        &self.shared.described
    }

    /// The ACL user connections log in as.
    pub(crate) fn user(&self) -> &str {
        &self.shared.user
    }

    /// Whether the primary is found through Sentinel.
    pub(crate) fn is_sentinel(&self) -> bool {
        matches!(self.shared.target, Target::Sentinel(_))
    }

    /// The current primary's generation; connections made for another one
    /// are stale.
    pub(crate) fn generation(&self) -> u64 {
        match &self.shared.target {
            Target::Server(_) => 0,
            Target::Sentinel(watch) => watch.generation.load(Ordering::Acquire),
        }
    }

    /// The current primary, waiting up to `wait` for the sentinels to name
    /// one when none is known yet (blocking).
    pub(crate) fn primary(&self, wait: Duration) -> RedisResult<Arc<Primary>> {
        match &self.shared.target {
            Target::Server(primary) => Ok(primary.clone()),
            Target::Sentinel(watch) => watch.primary_blocking(wait),
        }
    }

    /// [`primary`](Self::primary) from async code.
    pub(crate) async fn primary_async(&self, wait: Duration) -> RedisResult<Arc<Primary>> {
        match &self.shared.target {
            Target::Server(primary) => Ok(primary.clone()),
            Target::Sentinel(watch) => watch.primary_async(wait).await,
        }
    }

    /// A request failed with `error`: if it may mean that the primary moved
    /// (the connection broke, the server is now a read-only replica), ask
    /// the sentinels again now rather than at the next poll.
    pub(crate) fn suspect(&self, error: &RedisError) {
        if let Target::Sentinel(watch) = &self.shared.target
            && may_have_moved(error)
        {
            watch.ask_again();
        }
    }

    /// A request timed out: as [`suspect`](Self::suspect).
    pub(crate) fn suspect_timeout(&self) {
        if let Target::Sentinel(watch) = &self.shared.target {
            watch.ask_again();
        }
    }

    /// Stop the watcher thread (the store is dropped).
    pub(crate) fn stop(&self) {
        if let Target::Sentinel(watch) = &self.shared.target {
            watch.stop.store(true, Ordering::Relaxed);
            watch.wake.notify_all();
        }
    }
}

/// Errors after which the primary may be elsewhere.
fn may_have_moved(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

fn is_sentinel_url(url: &str) -> bool {
    url.starts_with(SENTINEL_SCHEME) || url.starts_with(SENTINEL_TLS_SCHEME)
}

fn invalid(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, what, detail))
}

/// `redis+sentinel://[user:password@]host:port[,host:port...]/master[/db]`
/// (`rediss+sentinel://` for TLS). The credentials are the data nodes'.
/// Returns the sentinels and master; the credentials are read by
/// [`data_node_settings`].
fn parse_sentinel_url(url: &str) -> RedisResult<SentinelOptions> {
    let (tls, rest) = match url.strip_prefix(SENTINEL_TLS_SCHEME) {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix(SENTINEL_SCHEME).unwrap_or(url)),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.contains(':') {
                h.to_owned()
            } else {
                format!("{h}:26379")
            }
        })
        .collect();
    if sentinels.is_empty() {
        return Err(invalid(
            "a sentinel URL needs at least one sentinel",
            redact(url),
        ));
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let master = segments.next().ok_or_else(|| {
        invalid(
            "a sentinel URL needs the master name as its path: redis+sentinel://HOST:PORT,.../MASTER[/DB]",
            redact(url),
        )
    })?;
    let db = match segments.next() {
        Some(db) => db
            .parse()
            .map_err(|_| invalid("the database is not a number", redact(url)))?,
        None => 0,
    };
    Ok(SentinelOptions {
        sentinels,
        master: master.to_owned(),
        tls,
        db,
    })
}

/// The login and database of the data nodes: from the URL's user info
/// (parsed by redis-rs, which decodes it), then the builder's.
fn data_node_settings(
    options: &ConnectOptions,
    sentinel: &SentinelOptions,
) -> RedisResult<RedisConnectionInfo> {
    let userinfo = options
        .url
        .as_deref()
        .filter(|url| is_sentinel_url(url))
        .and_then(|url| {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            let authority = rest.split('/').next().unwrap_or_default();
            authority.rsplit_once('@').map(|(userinfo, _)| userinfo)
        });
    let mut settings = match userinfo {
        // Any host will do: only the credentials are read.
        Some(userinfo) => format!("redis://{userinfo}@localhost/")
            .as_str()
            .into_connection_info()?
            .redis_settings()
            .clone(),
        None => RedisConnectionInfo::default(),
    };
    settings = settings.set_db(sentinel.db);
    Ok(with_credentials(settings, options))
}

/// The builder's user and password over those of the URL.
fn with_credentials(
    mut settings: RedisConnectionInfo,
    options: &ConnectOptions,
) -> RedisConnectionInfo {
    if let Some(user) = &options.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &options.password {
        settings = settings.set_password(password);
    }
    settings
}

/// The URL's connection info, with the builder's credentials.
fn connection_info(url: &str, options: &ConnectOptions) -> RedisResult<ConnectionInfo> {
    if url.starts_with("rediss://") && cfg!(not(feature = "tls")) {
        return Err(invalid(
            "rediss:// URLs need cacheme's `tls` feature",
            "add `features = [\"tls\"]` to the cacheme dependency".to_owned(),
        ));
    }
    let info = url.into_connection_info()?;
    let settings = with_credentials(info.redis_settings().clone(), options);
    Ok(info.set_redis_settings(settings))
}

fn addr_of(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
        _ => "?".to_owned(),
    }
}

/// A client for `info`, with the builder's certificates on a TLS address.
fn client_for(info: ConnectionInfo, options: &ConnectOptions) -> RedisResult<Client> {
    #[cfg(feature = "tls")]
    if matches!(info.addr(), ConnectionAddr::TcpTls { .. })
        && (options.tls.ca.is_some() || options.tls.client.is_some())
    {
        let certificates = redis::TlsCertificates {
            client_tls: options
                .tls
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: options.tls.ca.clone(),
        };
        return Client::build_with_tls(info, certificates);
    }
    let _ = options;
    Client::open(info)
}

/// rustls needs one crypto provider for the process; cacheme brings ring.
/// An application that installed its own keeps it.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one at the same time: either is fine.
        // (rustls 0.23.48 deprecates ring's provider in favour of aws-lc-rs,
        // for post-quantum key exchange; aws-lc-rs needs CMake to build, so
        // cacheme stays on ring, and an application that wants aws-lc-rs
        // installs it before building the cache.)
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    }
}

/// The watcher of a Sentinel-managed primary: its thread asks the sentinels
/// who the primary is every [`SENTINEL_POLL`] (and at once when a request
/// failed in a way that hints at a failover), checks with `ROLE` that the
/// server they name is a primary, and publishes it with a new generation.
struct SentinelWatch {
    sentinel: SentinelOptions,
    /// Scheme, credentials and certificates of the data nodes.
    options: ConnectOptions,
    node: RedisConnectionInfo,
    state: Mutex<WatchState>,
    generation: AtomicU64,
    /// Wakes blocking callers waiting for a first primary, and the thread.
    wake: Condvar,
    /// Wakes async callers waiting for a first primary.
    found: tokio::sync::Notify,
    stop: AtomicBool,
}

#[derive(Default)]
struct WatchState {
    current: Option<Arc<Primary>>,
    /// A request failed: ask again before the next poll.
    ask_again: bool,
    /// Why the last attempt found no primary, for errors.
    last_error: Option<String>,
}

impl SentinelWatch {
    fn start(
        options: &ConnectOptions,
        sentinel: SentinelOptions,
        node: RedisConnectionInfo,
    ) -> RedisResult<Arc<SentinelWatch>> {
        let watch = Arc::new(SentinelWatch {
            sentinel,
            options: options.clone(),
            node,
            state: Mutex::new(WatchState::default()),
            generation: AtomicU64::new(0),
            wake: Condvar::new(),
            found: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
        });
        // Checked now, so that a bad address is an error of `build`.
        for addr in &watch.sentinel.sentinels {
            watch.sentinel_client(addr)?;
        }
        let thread_watch = watch.clone();
        std::thread::Builder::new()
            .name("cacheme-sentinel".into())
            .spawn(move || thread_watch.run())
            .map_err(|e| {
                RedisError::from((
                    ErrorKind::Io,
                    "cannot start the sentinel watcher thread",
                    e.to_string(),
                ))
            })?;
        Ok(watch)
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ask_again(&self) {
        let mut state = self.lock();
        if !state.ask_again {
            state.ask_again = true;
            self.wake.notify_all();
        }
    }

    fn no_primary(&self, state: &WatchState) -> RedisError {
        RedisError::from((
            ErrorKind::Io,
            "the sentinels named no reachable primary yet",
            format!(
                "{}: {}",
                describe_sentinels(&self.sentinel),
                state.last_error.as_deref().unwrap_or("still asking")
            ),
        ))
    }

    fn primary_blocking(&self, wait: Duration) -> RedisResult<Arc<Primary>> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            if let Some(primary) = &state.current {
                return Ok(primary.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.no_primary(&state));
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    async fn primary_async(&self, wait: Duration) -> RedisResult<Arc<Primary>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.found.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if let Some(primary) = &state.current {
                    return Ok(primary.clone());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(self.no_primary(&state));
                }
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// The thread: ask, publish, wait for the next poll or a hint.
    fn run(&self) {
        let mut last_ask;
        let mut reported: Option<String> = None;
        // One connection per sentinel, kept between polls.
        let mut connections: Vec<Option<redis::Connection>> =
            self.sentinel.sentinels.iter().map(|_| None).collect();
        // A hint (a failed request) asks for the primary's role again even
        // when the sentinels still name the same server.
        let mut hinted = true;
        while !self.stop.load(Ordering::Relaxed) {
            last_ask = Instant::now();
            match self.find_primary(&mut connections, hinted) {
                Ok(addr) => {
                    reported = None;
                    self.publish(addr);
                }
                Err(reason) => {
                    if reported.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(
                            sentinels = %describe_sentinels(&self.sentinel),
                            %reason,
                            "cacheme: the sentinels named no reachable primary"
                        );
                        reported = Some(reason.clone());
                    }
                    self.lock().last_error = Some(reason);
                }
            }
            let mut state = self.lock();
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let since = last_ask.elapsed();
                if state.ask_again && since >= SENTINEL_MIN_INTERVAL {
                    state.ask_again = false;
                    hinted = true;
                    break;
                }
                let until = if state.ask_again {
                    SENTINEL_MIN_INTERVAL
                } else {
                    SENTINEL_POLL
                };
                if since >= until {
                    hinted = std::mem::take(&mut state.ask_again);
                    break;
                }
                state = self
                    .wake
                    .wait_timeout(state, until - since)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }

    /// Make `addr` the current primary if it is not already.
    fn publish(&self, addr: (String, u16)) {
        let name = format!("{}:{}", addr.0, addr.1);
        let mut state = self.lock();
        if state.current.as_ref().is_some_and(|p| p.addr == name) {
            return;
        }
        let client = match self.node_client(&addr.0, addr.1) {
            Ok(client) => client,
            Err(error) => {
                state.last_error = Some(format!("{name}: {error}"));
                return;
            }
        };
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let previous = state.current.as_ref().map(|p| p.addr.clone());
        state.current = Some(Arc::new(Primary {
            client,
            generation,
            addr: name.clone(),
        }));
        state.last_error = None;
        self.generation.store(generation, Ordering::Release);
        drop(state);
        match previous {
            Some(previous) => tracing::warn!(
                master = %self.sentinel.master,
                from = %previous,
                to = %name,
                "cacheme: the sentinels promoted another primary; connections follow it"
            ),
            None => {
                tracing::debug!(master = %self.sentinel.master, primary = %name, "cacheme: primary found through sentinel")
            }
        }
        self.wake.notify_all();
        self.found.notify_waiters();
    }

    /// Ask each sentinel in turn for the primary's address, and keep the
    /// first one that answers `ROLE` as a master (the Sentinel client
    /// protocol: a sentinel may be stale, the server itself is not). The
    /// role of the current primary is asked again only after a hint.
    fn find_primary(
        &self,
        connections: &mut [Option<redis::Connection>],
        hinted: bool,
    ) -> Result<(String, u16), String> {
        let current = self.lock().current.as_ref().map(|p| p.addr.clone());
        let mut reasons = Vec::new();
        for (sentinel, conn) in self.sentinel.sentinels.iter().zip(connections) {
            let addr = match self.ask_sentinel(sentinel, conn) {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    reasons.push(format!(
                        "{sentinel} does not know {:?}",
                        self.sentinel.master
                    ));
                    continue;
                }
                Err(error) => {
                    *conn = None;
                    reasons.push(format!("{sentinel}: {error}"));
                    continue;
                }
            };
            let unchanged = current.as_deref() == Some(format!("{}:{}", addr.0, addr.1).as_str());
            if unchanged && !hinted {
                return Ok(addr);
            }
            match self.is_master(&addr) {
                Ok(true) => return Ok(addr),
                Ok(false) => reasons.push(format!(
                    "{sentinel} names {}:{}, which is not a primary (yet)",
                    addr.0, addr.1
                )),
                Err(error) => reasons.push(format!("{}:{}: {error}", addr.0, addr.1)),
            }
        }
        Err(reasons.join("; "))
    }

    fn ask_sentinel(
        &self,
        sentinel: &str,
        conn: &mut Option<redis::Connection>,
    ) -> RedisResult<Option<(String, u16)>> {
        let conn = match conn {
            Some(conn) => conn,
            None => {
                let client = self.sentinel_client(sentinel)?;
                let fresh = client.get_connection_with_timeout(SENTINEL_QUERY_TIMEOUT)?;
                fresh.set_read_timeout(Some(SENTINEL_QUERY_TIMEOUT))?;
                fresh.set_write_timeout(Some(SENTINEL_QUERY_TIMEOUT))?;
                conn.insert(fresh)
            }
        };
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.sentinel.master)
            .query(conn)
    }

    fn is_master(&self, addr: &(String, u16)) -> RedisResult<bool> {
        let client = self.node_client(&addr.0, addr.1)?;
        let mut conn = client.get_connection_with_timeout(SENTINEL_QUERY_TIMEOUT)?;
        conn.set_read_timeout(Some(SENTINEL_QUERY_TIMEOUT))?;
        conn.set_write_timeout(Some(SENTINEL_QUERY_TIMEOUT))?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
        let first = role.into_iter().next();
        Ok(
            first
                .is_some_and(|v| redis::from_redis_value::<String>(v).is_ok_and(|r| r == "master")),
        )
    }

    fn scheme(&self) -> &'static str {
        if self.sentinel.tls { "rediss" } else { "redis" }
    }

    /// A client for a sentinel (no credentials: sentinels are asked as
    /// `default`).
    fn sentinel_client(&self, addr: &str) -> RedisResult<Client> {
        let info = format!("{}://{addr}/", self.scheme()).into_connection_info()?;
        client_for(info, &self.options)
    }

    /// A client for a data node, with the data nodes' login.
    fn node_client(&self, host: &str, port: u16) -> RedisResult<Client> {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let info = format!("{}://{host}:{port}/", self.scheme())
            .into_connection_info()?
            .set_redis_settings(self.node.clone());
        client_for(info, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_parsed() {
        let parsed =
            parse_sentinel_url("redis+sentinel://a:1,b:2,c/mymaster/3").expect("valid URL");
        assert_eq!(parsed.sentinels, ["a:1", "b:2", "c:26379"]);
        assert_eq!(parsed.master, "mymaster");
        assert_eq!(parsed.db, 3);
        assert!(!parsed.tls);
        let parsed = parse_sentinel_url("rediss+sentinel://app:p%40ss@a:1/m").expect("valid URL");
        assert_eq!(parsed.sentinels, ["a:1"]);
        assert!(parsed.tls);
        assert_eq!(parsed.db, 0);

        let options = ConnectOptions {
            url: Some("rediss+sentinel://app:p%40ss@a:1/m".into()),
            ..ConnectOptions::default()
        };
        let node = data_node_settings(&options, &parsed).expect("credentials");
        assert_eq!(node.username(), Some("app"));
        assert_eq!(node.password(), Some("p@ss"));
        let options = ConnectOptions {
            password: Some("other".into()),
            ..options
        };
        let node = data_node_settings(&options, &parsed).expect("credentials");
        assert_eq!(
            node.password(),
            Some("other"),
            "the builder's password wins"
        );
    }

    #[test]
    fn bad_sentinel_urls_are_refused_without_their_password() {
        for url in [
            "redis+sentinel://u:secret@/m",
            "redis+sentinel://u:secret@a:1",
            "redis+sentinel://u:secret@a:1/m/x",
        ] {
            let error = parse_sentinel_url(url).expect_err("invalid");
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }

    #[test]
    fn options_do_not_show_passwords() {
        let options = ConnectOptions {
            url: Some("redis://app:secret1@h:1/".into()),
            username: Some("app".into()),
            password: Some("secret2".into()),
            ..ConnectOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("redis://app:***@h:1/"), "{shown}");
    }
}
