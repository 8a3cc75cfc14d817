//! Redis behind the [`Op`](super::Op) interface: the scripts that must be
//! atomic, the connections, timeouts and the `NOSCRIPT` retry.
//!
//! Each script touches one Redis Cluster hash slot: a key and its lease
//! (see [`crate::key`]), or the invalidation sequence (see [`crate::events`]).
//!
//! Connections: async calls use one multiplexed connection (a
//! `ConnectionManager` made from the URL on first use, or the application's
//! own `ConnectionManager`, or one connection detached from its deadpool
//! pool); blocking calls use a small pool of plain connections made from the
//! URL. The measurements behind this choice are in `docs/connections.md`.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisError, RedisResult, ToRedisArgs, Value};

use arc_swap::ArcSwapOption;

use super::endpoint::Endpoint;
use super::{Op, RedisContext, Request};
use crate::events::SequenceKeys;
use crate::{Error, Result};

/// A Lua script called by its SHA1 (`EVALSHA`), loaded on `NOSCRIPT`.
pub(crate) struct Script {
    code: &'static str,
    hash: String,
}

impl Script {
    fn new(code: &'static str) -> Self {
        Script {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// The `EVALSHA` command for these keys and arguments, or with `eval`
    /// the `EVAL` of the script's body (which also loads it on the server).
    pub(crate) fn call<A: ToRedisArgs>(&self, keys: &[&str], args: &[A], eval: bool) -> Cmd {
        let mut cmd = if eval {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(self.code);
            cmd
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&self.hash);
            cmd
        };
        cmd.arg(keys.len()).arg(keys).arg(args);
        cmd
    }
}

/// Lua helpers shared by the scripts, after the envelope's and the event
/// channel's facts (generated from the Rust constants, so the two sides
/// cannot disagree).
const HELPERS_LUA: &str = r"
local function held_by(lease, token) return lease and string.sub(lease, 1, string.len(token)) == token end
local function has_waiters(lease, token) return string.len(lease) > string.len(token) end
-- A GET that repairs a key holding another Redis type (a hash, a list...):
-- such a key is deleted and reads as empty.
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then redis.call('UNLINK', key) return false end
  return v
end
local function start_sequence(key)
  local seq = redis.call('GET', key)
  if seq then return seq end
  -- Start at the server's time in microseconds: a sequence that was lost
  -- (flushed, evicted) restarts above every number it gave before.
  local t = redis.call('TIME')
  seq = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', key, seq)
  return seq
end
";

/// KEYS: value. Sets the waiters flag of a placeholder; returns what the key holds.
const WATCH: &str = r"
local v = get(KEYS[1])
if loading(v) and string.byte(v, WAITERS_AT) == 0 then
  redis.call('SETRANGE', KEYS[1], WAITERS_AT - 1, '\1')
end
return v
";

/// KEYS: value, lease. ARGV: token, lease ms, expected header, wait ('1'/'0').
/// {2, value}: the key no longer starts with the expected header (or holds
/// nothing, or a placeholder): judge it again. {1, value}: this caller now
/// holds the lease key. {0, value}: someone else does (and with wait, this
/// caller is registered as a waiter: a '+' appended to the lease).
const CLAIM: &str = r"
local v = get(KEYS[1])
if not v or loading(v) or string.sub(v, 1, string.len(ARGV[3])) ~= ARGV[3] then return {2, v} end
-- (A lease key of another Redis type is repaired: deleted, then taken.)
if not get(KEYS[2]) and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, v} end
if ARGV[4] == '1' then redis.call('APPEND', KEYS[2], '+') end
return {0, v}
";

/// KEYS: value, lease. ARGV: token, envelope, ttl ms ('0': none), channel,
/// lease ('p': placeholder, 'k': lease key). Writes the value only if the
/// token still holds the lease, and wakes waiters.
const FILL: &str = r"
local woken
if ARGV[5] == 'p' then
  local v = get(KEYS[1])
  if not loading_by(v, ARGV[1]) then return 0 end
  woken = string.byte(v, WAITERS_AT) ~= 0
else
  local lease = get(KEYS[2])
  if not held_by(lease, ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[2])
  woken = has_waiters(lease, ARGV[1])
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if woken then redis.call('PUBLISH', ARGV[4], WAKE .. KEYS[1]) end
return 1
";

/// KEYS: value, lease. ARGV: token, channel, lease ('p' / 'k'). Drops the
/// lease if the token holds it, and wakes waiters so that one of them loads.
const RELEASE: &str = r"
local woken
if ARGV[3] == 'p' then
  local v = get(KEYS[1])
  if not loading_by(v, ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[1])
  woken = string.byte(v, WAITERS_AT) ~= 0
else
  local lease = get(KEYS[2])
  if not held_by(lease, ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[2])
  woken = has_waiters(lease, ARGV[1])
end
if woken then redis.call('PUBLISH', ARGV[2], WAKE .. KEYS[1]) end
return 1
";

/// KEYS: value, lease. ARGV: token, lease ms, lease ('p' / 'k').
const EXTEND: &str = r"
if ARGV[3] == 'p' then
  if loading_by(get(KEYS[1]), ARGV[1]) then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return 0
end
if held_by(get(KEYS[2]), ARGV[1]) then return redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
";

/// KEYS: value, lease. ARGV: channel, 'stale' | 'delete'.
/// Revokes the lease (the lease key, or a placeholder in the value key),
/// waking its waiters; then marks the value stale in place (TTL kept) or
/// deletes it. Foreign values are deleted. When marking fails (out of
/// memory under `noeviction`), the value is deleted instead: an
/// invalidation never leaves a value fresh. Returns 1 if a value was marked
/// or deleted.
const INVALIDATE: &str = r"
local woken = false
local lease = get(KEYS[2])
if lease then
  redis.call('DEL', KEYS[2])
  woken = string.sub(lease, -1) == '+'
end
local v = get(KEYS[1])
local count = 0
if loading(v) then
  redis.call('DEL', KEYS[1])
  woken = woken or string.byte(v, WAITERS_AT) ~= 0
elseif v then
  count = 1
  if ARGV[2] == 'delete' or not is_value(v) then
    redis.call('UNLINK', KEYS[1])
  elseif string.byte(v, STATE_AT) ~= STALE then
    local marked = redis.pcall('SETRANGE', KEYS[1], STATE_AT - 1, string.char(STALE))
    if type(marked) == 'table' and marked.err then redis.call('UNLINK', KEYS[1]) end
  end
end
if woken then redis.call('PUBLISH', ARGV[1], WAKE .. KEYS[1]) end
return count
";

/// KEYS: sequence, log. ARGV: channel, payload, log length. Numbers an
/// invalidation, keeps it in the capped log, announces it.
const RECORD: &str = r"
start_sequence(KEYS[1])
local seq = redis.call('INCR', KEYS[1])
-- (Lua 5.1 would print a number this large as 1.7e+15.)
local digits = string.format('%.0f', seq)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], digits .. '-1', LOG_FIELD, ARGV[2])
redis.call('PUBLISH', ARGV[1], INVALIDATED .. digits .. ' ' .. ARGV[2])
return seq
";

/// KEYS: sequence. The current number (starting the sequence if needed).
/// KEYS: sequence. After a failover: moves the sequence up to the server's
/// time in microseconds (where a new sequence starts), so that it never
/// gives again a number that the former primary gave after the promotion
/// (writes it took then are lost with it). Returns the current number.
const FLOOR: &str = r"
local t = redis.call('TIME')
local floor = t[1] .. string.format('%06d', tonumber(t[2]))
local seq = redis.call('GET', KEYS[1])
if not seq or tonumber(seq) < tonumber(floor) then
  redis.call('SET', KEYS[1], floor)
  return tonumber(floor)
end
return tonumber(seq)
";

const SEQUENCE: &str = r"
return tonumber(start_sequence(KEYS[1]))
";

/// The scripts, with their hashes.
pub(crate) struct Scripts {
    pub(crate) watch: Script,
    pub(crate) claim: Script,
    pub(crate) fill: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
    pub(crate) invalidate: Script,
    pub(crate) record: Script,
    pub(crate) sequence: Script,
    pub(crate) floor: Script,
}

impl Scripts {
    fn new() -> Self {
        let prelude = format!(
            "{}{}{HELPERS_LUA}",
            crate::envelope::lua_prelude(),
            crate::events::lua_prelude()
        );
        let with_helpers =
            |body: &str| -> &'static str { Box::leak(format!("{prelude}{body}").into_boxed_str()) };
        // Invalidations must work on a full server (maxmemory reached): the
        // scripts that mark, delete and record are allowed to run under OOM
        // (Redis 7 script flags; the flags line must come first). The log
        // stays capped, so they add at most a bounded amount of memory.
        let allowed_oom = |body: &str| -> &'static str {
            Box::leak(format!("#!lua flags=allow-oom\n{prelude}{body}").into_boxed_str())
        };
        Scripts {
            watch: Script::new(with_helpers(WATCH)),
            claim: Script::new(with_helpers(CLAIM)),
            fill: Script::new(with_helpers(FILL)),
            release: Script::new(allowed_oom(RELEASE)),
            extend: Script::new(with_helpers(EXTEND)),
            invalidate: Script::new(allowed_oom(INVALIDATE)),
            record: Script::new(allowed_oom(RECORD)),
            sequence: Script::new(with_helpers(SEQUENCE)),
            floor: Script::new(with_helpers(FLOOR)),
        }
    }
}

/// The scripts are the same for every store; build (and leak) them once.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(Scripts::new)
}

/// Where async commands go.
pub(crate) enum AsyncSource {
    /// A `ConnectionManager` made from the endpoint on first use (it needs a
    /// tokio runtime to start its driver task), and made again when the
    /// endpoint's primary changes (a Sentinel failover).
    Endpoint(ArcSwapOption<Managed>),
    /// The application's own `ConnectionManager`.
    Manager(ConnectionManager),
    /// The application's deadpool pool: one connection is taken out of it and
    /// multiplexed; on a connection error it is dropped and another is taken.
    #[cfg(feature = "deadpool")]
    Pool {
        pool: deadpool_redis::Pool,
        current: ArcSwapOption<redis::aio::MultiplexedConnection>,
    },
    /// A Redis Cluster: async and blocking cluster connections (see
    /// [`super::cluster`]); the store's `client` is then `None`.
    #[cfg(feature = "cluster")]
    Cluster(Box<super::cluster::ClusterSource>),
}

/// A `ConnectionManager` for one generation of the endpoint's primary.
pub(crate) struct Managed {
    generation: u64,
    manager: ConnectionManager,
}

/// A connection for one async request.
enum AsyncConnection {
    Manager(ConnectionManager),
    #[cfg(feature = "deadpool")]
    Multiplexed(redis::aio::MultiplexedConnection),
}

/// The Redis store.
pub(crate) struct RedisStore {
    pub(crate) breaker: crate::breaker::Breaker,
    endpoint: Option<Endpoint>,
    described: String,
    sequence: SequenceKeys,
    async_source: AsyncSource,
    /// Idle blocking connections, with the generation of the primary they
    /// were made for.
    blocking: Mutex<Vec<(u64, redis::Connection)>>,
}

/// How many idle blocking connections are kept.
const BLOCKING_IDLE: usize = 16;

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.stop();
        }
    }
}

impl RedisStore {
    /// A store with the given connection sources.
    pub(crate) fn new(
        endpoint: Option<Endpoint>,
        async_source: AsyncSource,
        described: String,
        sequence: SequenceKeys,
    ) -> Self {
        RedisStore {
            breaker: crate::breaker::Breaker::default(),
            endpoint,
            described,
            sequence,
            async_source,
            blocking: Mutex::new(Vec::new()),
        }
    }

    /// Where connections made by cacheme go (from the URL or the
    /// sentinels), if the cache was given one.
    pub(crate) fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    /// Whether blocking ops can run (a URL, sentinels or cluster nodes
    /// were given).
    pub(crate) fn can_block(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let AsyncSource::Cluster(cluster) = &self.async_source {
            return cluster.can_block();
        }
        self.endpoint.is_some()
    }

    /// A client for the endpoint's current primary (one server, or the one
    /// the sentinels name now), if the cache was given a URL or sentinels
    /// and the primary is known (`None` on a cluster: its connections go by
    /// slot).
    pub(crate) fn client(&self) -> Option<redis::Client> {
        let primary = self.endpoint.as_ref()?.primary(Duration::ZERO).ok()?;
        Some(primary.client.clone())
    }

    /// The servers the event subscriber of a cluster may listen on, in
    /// order of preference (tried in turn); empty for other stores, whose
    /// subscriber follows the [`endpoint`](Self::endpoint).
    pub(crate) fn subscriber_clients(&self) -> Vec<redis::Client> {
        #[cfg(feature = "cluster")]
        if let AsyncSource::Cluster(cluster) = &self.async_source {
            return cluster.subscriber_clients();
        }
        Vec::new()
    }

    /// Tell a cluster store which nodes the subscriber knows (the nodes it
    /// learnt from the cluster), for new blocking connections.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn note_nodes(&self, clients: &[redis::Client]) {
        #[cfg(feature = "cluster")]
        if let AsyncSource::Cluster(cluster) = &self.async_source {
            cluster.note_nodes(clients);
        }
        let _ = clients;
    }

    /// Whether the store is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let AsyncSource::Cluster(_) = &self.async_source {
            return true;
        }
        false
    }

    /// What the store connects to (URL without password, or the source kind).
    pub(crate) fn describe(&self) -> &str {
        &self.described
    }

    /// The names of the sequence keys and the event channel.
    pub(crate) fn sequence(&self) -> &SequenceKeys {
        &self.sequence
    }

    /// The context to build requests in; `eval` after a `NOSCRIPT`.
    fn context(&self, eval: bool) -> RedisContext<'_> {
        RedisContext {
            sequence: &self.sequence,
            scripts: scripts(),
            eval,
        }
    }

    /// Run an op over the async connection, within `timeout`.
    pub(crate) async fn run<O: Op>(&self, op: &O, timeout: Duration) -> Result<O::Output> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime { command: O::NAME });
        }
        #[cfg(feature = "cluster")]
        if let AsyncSource::Cluster(cluster) = &self.async_source {
            return Box::pin(self.run_cluster(cluster, op, timeout)).await;
        }
        let request = op.request(&self.context(false));
        let attempt = async {
            let mut conn = self.async_connection(timeout).await?;
            let mut reply = send_async(&mut conn, &request).await;
            if reply.as_ref().is_err_and(is_noscript) {
                // The server lost its scripts (restarted, flushed): send this
                // request's scripts by body, which loads them again. Boxed,
                // so that this rare path does not grow every request's future.
                let by_body = op.request(&self.context(true));
                reply = Box::pin(send_async(&mut conn, &by_body)).await;
            }
            if let Err(error) = &reply {
                self.forget_async_connection(error);
            }
            reply
        };
        let value = match tokio::time::timeout(timeout, attempt).await {
            Ok(reply) => reply.map_err(|source| redis_error::<O>(op, source))?,
            Err(_) => {
                if let Some(endpoint) = &self.endpoint {
                    endpoint.suspect_timeout();
                }
                return Err(timeout_error::<O>(op, timeout));
            }
        };
        op.reply(value)
            .map_err(|source| redis_error::<O>(op, source))
    }

    async fn async_connection(&self, timeout: Duration) -> RedisResult<AsyncConnection> {
        match &self.async_source {
            AsyncSource::Endpoint(cell) => {
                let endpoint = self
                    .endpoint
                    .as_ref()
                    .expect("an Endpoint source is only built together with its endpoint");
                if let Some(managed) = &*cell.load()
                    && managed.generation == endpoint.generation()
                {
                    return Ok(AsyncConnection::Manager(managed.manager.clone()));
                }
                // Boxed: rare (first use, failover), and waiting for the
                // sentinels would grow every request's future.
                Box::pin(self.new_manager(cell, endpoint, timeout)).await
            }
            AsyncSource::Manager(manager) => Ok(AsyncConnection::Manager(manager.clone())),
            #[cfg(feature = "cluster")]
            AsyncSource::Cluster(_) => unreachable!("cluster ops run in run_cluster"),
            #[cfg(feature = "deadpool")]
            AsyncSource::Pool { pool, current } => {
                if let Some(conn) = current.load_full() {
                    return Ok(AsyncConnection::Multiplexed((*conn).clone()));
                }
                // Boxed: deadpool's `get` is a future of several KB, and
                // inline it would grow every request's future (and the copy
                // of it that every remote read makes) for a rare slow path.
                Box::pin(take_from_pool(pool, current)).await
            }
        }
    }

    /// A `ConnectionManager` for the endpoint's current primary, kept for
    /// the next requests.
    async fn new_manager(
        &self,
        cell: &ArcSwapOption<Managed>,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> RedisResult<AsyncConnection> {
        let primary = endpoint.primary_async(timeout).await?;
        // The response timeout is ours (around every request, so that it
        // follows `op_timeout` changes); a second timer in the connection
        // would only cost time on the hot path.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let fresh = Arc::new(Managed {
            generation: primary.generation,
            manager: primary.client.get_connection_manager_lazy(config)?,
        });
        // Concurrent callers may each make one; the first for this
        // generation is kept (an older one is replaced).
        let previous = cell.rcu(|current| match current {
            Some(current) if current.generation >= fresh.generation => Some(current.clone()),
            _ => Some(fresh.clone()),
        });
        let kept = match previous {
            Some(previous) if previous.generation >= fresh.generation => previous,
            _ => fresh,
        };
        Ok(AsyncConnection::Manager(kept.manager.clone()))
    }

    fn forget_async_connection(&self, error: &RedisError) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.suspect(error);
        }
        #[cfg(feature = "deadpool")]
        if let AsyncSource::Pool { current, .. } = &self.async_source
            && (error.is_unrecoverable_error() || error.is_io_error())
        {
            current.store(None);
        }
    }

    /// Run an op over a blocking connection (socket timeouts = `timeout`).
    pub(crate) fn run_blocking<O: Op>(&self, op: &O, timeout: Duration) -> Result<O::Output> {
        #[cfg(feature = "cluster")]
        if let AsyncSource::Cluster(cluster) = &self.async_source {
            return self.run_cluster_blocking(cluster, op, timeout);
        }
        let endpoint = self
            .endpoint
            .as_ref()
            .ok_or(Error::NoBlockingConnection { command: O::NAME })?;
        let request = op.request(&self.context(false));
        let (generation, mut conn) = self
            .blocking_connection(endpoint, timeout)
            .map_err(|e| redis_error::<O>(op, e))?;
        let result = (|| {
            conn.set_read_timeout(Some(timeout))?;
            conn.set_write_timeout(Some(timeout))?;
            let mut reply = send_blocking(&mut conn, &request);
            if reply.as_ref().is_err_and(is_noscript) {
                reply = send_blocking(&mut conn, &op.request(&self.context(true)));
            }
            reply
        })();
        match result {
            Ok(value) => {
                let mut idle = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() < BLOCKING_IDLE {
                    idle.push((generation, conn));
                }
                op.reply(value)
                    .map_err(|source| redis_error::<O>(op, source))
            }
            Err(source) if source.is_timeout() => {
                endpoint.suspect_timeout();
                Err(timeout_error::<O>(op, timeout))
            }
            Err(source) => {
                endpoint.suspect(&source);
                Err(redis_error::<O>(op, source))
            }
        }
    }

    /// An idle blocking connection to the current primary, or a new one.
    fn blocking_connection(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> RedisResult<(u64, redis::Connection)> {
        let generation = endpoint.generation();
        {
            let mut idle = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
            // Connections to a former primary are dropped.
            idle.retain(|(made_for, _)| *made_for == generation);
            if let Some(conn) = idle.pop() {
                return Ok(conn);
            }
        }
        let primary = endpoint.primary(timeout)?;
        let conn =
            connect_blocking(&primary.client, timeout).inspect_err(|e| endpoint.suspect(e))?;
        Ok((primary.generation, conn))
    }
}

// ------------------------------------------------------------ Redis Cluster --

#[cfg(feature = "cluster")]
impl RedisStore {
    /// [`run`](Self::run) on a cluster: each command to its key's slot (or
    /// to the node the op names), a pipeline split by slot.
    async fn run_cluster<O: Op>(
        &self,
        cluster: &super::cluster::ClusterSource,
        op: &O,
        timeout: Duration,
    ) -> Result<O::Output> {
        let request = op.request(&self.context(false));
        let attempt = async {
            let mut reply = cluster.send_async(&request, op.node(), op.written()).await;
            if reply.as_ref().is_err_and(is_noscript) {
                // A node without our scripts (restarted, or a promoted
                // replica that never ran them): send them by body.
                let by_body = op.request(&self.context(true));
                reply = cluster.send_async(&by_body, op.node(), op.written()).await;
            }
            reply
        };
        let value = match tokio::time::timeout(timeout, attempt).await {
            Ok(reply) => reply.map_err(|source| redis_error::<O>(op, source))?,
            Err(_) => return Err(timeout_error::<O>(op, timeout)),
        };
        op.reply(value)
            .map_err(|source| redis_error::<O>(op, source))
    }

    /// [`run_blocking`](Self::run_blocking) on a cluster.
    fn run_cluster_blocking<O: Op>(
        &self,
        cluster: &super::cluster::ClusterSource,
        op: &O,
        timeout: Duration,
    ) -> Result<O::Output> {
        if !cluster.can_block() {
            return Err(Error::NoBlockingConnection { command: O::NAME });
        }
        let request = op.request(&self.context(false));
        let (node, written) = (op.node(), op.written());
        let mut reply = cluster.send_blocking(&request, node, written, timeout);
        if reply.as_ref().is_err_and(is_noscript) {
            let by_body = op.request(&self.context(true));
            reply = cluster.send_blocking(&by_body, node, written, timeout);
        }
        match reply {
            Ok(value) => op
                .reply(value)
                .map_err(|source| redis_error::<O>(op, source)),
            Err(source) if source.is_timeout() => Err(timeout_error::<O>(op, timeout)),
            Err(source) => Err(redis_error::<O>(op, source)),
        }
    }
}

fn connect_blocking(client: &redis::Client, timeout: Duration) -> RedisResult<redis::Connection> {
    client.get_connection_with_timeout(timeout)
}

async fn send_async(conn: &mut AsyncConnection, request: &Request) -> RedisResult<Value> {
    async fn send<C: ConnectionLike>(conn: &mut C, request: &Request) -> RedisResult<Value> {
        match request {
            Request::Command(cmd) => cmd.query_async(conn).await,
            Request::Pipeline(pipe) => pipe.query_async(conn).await,
        }
    }
    match conn {
        AsyncConnection::Manager(manager) => send(manager, request).await,
        #[cfg(feature = "deadpool")]
        AsyncConnection::Multiplexed(multiplexed) => send(multiplexed, request).await,
    }
}

/// Take a connection out of the application's pool, detach it and keep it.
#[cfg(feature = "deadpool")]
async fn take_from_pool(
    pool: &deadpool_redis::Pool,
    current: &ArcSwapOption<redis::aio::MultiplexedConnection>,
) -> RedisResult<AsyncConnection> {
    let conn = pool.get().await.map_err(|e| {
        RedisError::from((
            redis::ErrorKind::Io,
            "cannot take a connection from the deadpool pool",
            e.to_string(),
        ))
    })?;
    let conn = deadpool_redis::Connection::take(conn);
    current.store(Some(Arc::new(conn.clone())));
    Ok(AsyncConnection::Multiplexed(conn))
}

fn send_blocking(conn: &mut redis::Connection, request: &Request) -> RedisResult<Value> {
    match request {
        Request::Command(cmd) => cmd.query(conn),
        Request::Pipeline(pipe) => pipe.query(conn),
    }
}

fn is_noscript(error: &RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

fn redis_error<O: Op>(op: &O, source: RedisError) -> Error {
    Error::Redis {
        command: O::NAME,
        key: op.subject().to_owned(),
        source,
    }
}

fn timeout_error<O: Op>(op: &O, timeout: Duration) -> Error {
    Error::Timeout {
        command: O::NAME,
        key: op.subject().to_owned(),
        timeout,
    }
}
