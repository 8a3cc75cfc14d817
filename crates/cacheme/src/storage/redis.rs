//! Redis behind the [`Op`](super::Op) interface: the scripts that must be
//! atomic, the connections, timeouts and the `NOSCRIPT` retry.
//!
//! Each script touches one key and its lease, which share a Redis Cluster
//! hash slot (see [`crate::key`]); index updates are separate commands
//! pipelined in front of the fill.
//!
//! Connections: async calls use one multiplexed connection (a
//! `ConnectionManager` made from the URL on first use, or the application's
//! own `ConnectionManager`, or one connection detached from its deadpool
//! pool); blocking calls use a small pool of plain connections made from the
//! URL. The measurements behind this choice are in `docs/connections.md`.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisError, RedisResult, ToRedisArgs, Value};

use super::{Op, RedisContext, Request};
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

/// Lua helpers shared by the scripts: our envelopes start with 0xCE 0x01;
/// byte 3 is the state (0 fresh, 1 stale); bytes 5..12 the write time.
const ENVELOPE_LUA: &str = r"
local function ours(v) return v and string.len(v) >= 12 and string.sub(v, 1, 2) == '\206\1' end
local function fresh(v) return ours(v) and string.byte(v, 3) == 0 end
local function written_at(v)
  local n = 0
  for i = 5, 12 do n = n * 256 + string.byte(v, i) end
  return n
end
local function held_by(lease, token) return lease and string.sub(lease, 1, string.len(token)) == token end
";

/// KEYS: value, lease. ARGV: token, lease ms, fresh-since ms, stale ok ('1'/'0').
/// Returns {2, value} when the value is current, {1, value} when this caller
/// now holds the lease, {0, value} when someone else does (and registers the
/// caller as a waiter by appending '+' to the lease, unless the value is
/// servable to it).
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if fresh(v) and written_at(v) >= tonumber(ARGV[3]) then return {2, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, v} end
if not (fresh(v) or (ours(v) and ARGV[4] == '1')) then redis.call('APPEND', KEYS[2], '+') end
return {0, v}
";

/// KEYS: value, lease. ARGV: token, envelope, ttl ms ('0': none), channel,
/// lease ms. Writes the value only if `token` still holds the lease (taken
/// with `GETDEL`; a lease that turns out to be someone else's is put back),
/// and wakes waiters.
const FILL: &str = r"
local lease = redis.call('GETDEL', KEYS[2])
if not held_by(lease, ARGV[1]) then
  if lease then redis.call('SET', KEYS[2], lease, 'PX', ARGV[5]) end
  return 0
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if string.len(lease) > string.len(ARGV[1]) then redis.call('PUBLISH', ARGV[4], 'F' .. KEYS[1]) end
return 1
";

/// KEYS: value, lease. ARGV: token, channel, lease ms. Drops the lease if
/// `token` holds it, and wakes waiters so that one of them loads.
const RELEASE: &str = r"
local lease = redis.call('GETDEL', KEYS[2])
if not held_by(lease, ARGV[1]) then
  if lease then redis.call('SET', KEYS[2], lease, 'PX', ARGV[3]) end
  return 0
end
if string.len(lease) > string.len(ARGV[1]) then redis.call('PUBLISH', ARGV[2], 'F' .. KEYS[1]) end
return 1
";

/// KEYS: lease. ARGV: token, lease ms.
const EXTEND: &str = r"
if held_by(redis.call('GET', KEYS[1]), ARGV[1]) then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// KEYS: value, lease. ARGV: channel, 'stale' | 'delete'.
/// Revokes the lease (waking its waiters), then marks the value stale in
/// place (TTL kept; foreign values untouched) or deletes it. Returns 1 if a
/// value was marked or deleted.
const INVALIDATE: &str = r"
local lease = redis.call('GET', KEYS[2])
if lease then
  redis.call('DEL', KEYS[2])
  if string.sub(lease, -1) == '+' then redis.call('PUBLISH', ARGV[1], 'F' .. KEYS[1]) end
end
if ARGV[2] == 'delete' then return redis.call('UNLINK', KEYS[1]) end
if redis.call('GETRANGE', KEYS[1], 0, 1) == '\206\1' then
  redis.call('SETRANGE', KEYS[1], 2, '\1')
  return 1
end
return 0
";

/// The scripts, with their hashes.
pub(crate) struct Scripts {
    pub(crate) claim: Script,
    pub(crate) fill: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
    pub(crate) invalidate: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_helpers = |body: &str| -> &'static str {
            Box::leak(format!("{ENVELOPE_LUA}{body}").into_boxed_str())
        };
        Scripts {
            claim: Script::new(with_helpers(CLAIM)),
            fill: Script::new(with_helpers(FILL)),
            release: Script::new(with_helpers(RELEASE)),
            extend: Script::new(with_helpers(EXTEND)),
            invalidate: Script::new(with_helpers(INVALIDATE)),
        }
    }
}

/// The scripts are the same for every store; build (and leak) them once.
fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(Scripts::new)
}

/// Where async commands go.
pub(crate) enum AsyncSource {
    /// A `ConnectionManager` made from the URL on first use (it needs a
    /// tokio runtime to start its driver task).
    Url(OnceLock<ConnectionManager>),
    /// The application's own `ConnectionManager`.
    Manager(ConnectionManager),
    /// The application's deadpool pool: one connection is taken out of it and
    /// multiplexed; on a connection error it is dropped and another is taken.
    #[cfg(feature = "deadpool")]
    Pool {
        pool: deadpool_redis::Pool,
        current: arc_swap::ArcSwapOption<redis::aio::MultiplexedConnection>,
    },
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
    client: Option<redis::Client>,
    described: String,
    channel: String,
    async_source: AsyncSource,
    blocking: Mutex<Vec<redis::Connection>>,
}

/// How many idle blocking connections are kept.
const BLOCKING_IDLE: usize = 16;

impl RedisStore {
    /// A store with the given connection sources.
    pub(crate) fn new(
        client: Option<redis::Client>,
        async_source: AsyncSource,
        described: String,
        channel: String,
    ) -> Self {
        RedisStore {
            breaker: crate::breaker::Breaker::default(),
            client,
            described,
            channel,
            async_source,
            blocking: Mutex::new(Vec::new()),
        }
    }

    /// The client made from the URL, if the cache was given one.
    pub(crate) fn client(&self) -> Option<&redis::Client> {
        self.client.as_ref()
    }

    /// What the store connects to (URL without password, or the source kind).
    pub(crate) fn describe(&self) -> &str {
        &self.described
    }

    /// The context to build requests in; `eval` after a `NOSCRIPT`.
    fn context(&self, eval: bool) -> RedisContext<'_> {
        RedisContext {
            channel: &self.channel,
            scripts: scripts(),
            eval,
        }
    }

    /// Run an op over the async connection, within `timeout`.
    pub(crate) async fn run<O: Op>(&self, op: &O, timeout: Duration) -> Result<O::Output> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime { command: O::NAME });
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
            Err(_) => return Err(timeout_error::<O>(op, timeout)),
        };
        op.reply(value)
            .map_err(|source| redis_error::<O>(op, source))
    }

    async fn async_connection(&self, timeout: Duration) -> RedisResult<AsyncConnection> {
        match &self.async_source {
            AsyncSource::Url(cell) => {
                if let Some(manager) = cell.get() {
                    return Ok(AsyncConnection::Manager(manager.clone()));
                }
                let client = self
                    .client
                    .as_ref()
                    .expect("a Url source is only built together with its client");
                // The response timeout is ours (around every request, so that
                // it follows `op_timeout` changes); a second timer in the
                // connection would only cost time on the hot path.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(None)
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(200));
                let manager = client.get_connection_manager_lazy(config)?;
                Ok(AsyncConnection::Manager(
                    cell.get_or_init(|| manager).clone(),
                ))
            }
            AsyncSource::Manager(manager) => Ok(AsyncConnection::Manager(manager.clone())),
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

    fn forget_async_connection(&self, error: &RedisError) {
        #[cfg(feature = "deadpool")]
        if let AsyncSource::Pool { current, .. } = &self.async_source
            && (error.is_unrecoverable_error() || error.is_io_error())
        {
            current.store(None);
        }
        let _ = error;
    }

    /// Run an op over a blocking connection (socket timeouts = `timeout`).
    pub(crate) fn run_blocking<O: Op>(&self, op: &O, timeout: Duration) -> Result<O::Output> {
        let client = self
            .client
            .as_ref()
            .ok_or(Error::NoBlockingConnection { command: O::NAME })?;
        let request = op.request(&self.context(false));
        let idle = self
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => connect_blocking(client, timeout).map_err(|e| redis_error::<O>(op, e))?,
        };
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
                    idle.push(conn);
                }
                op.reply(value)
                    .map_err(|source| redis_error::<O>(op, source))
            }
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
    current: &arc_swap::ArcSwapOption<redis::aio::MultiplexedConnection>,
) -> RedisResult<AsyncConnection> {
    let conn = pool.get().await.map_err(|e| {
        RedisError::from((
            redis::ErrorKind::Io,
            "cannot take a connection from the deadpool pool",
            e.to_string(),
        ))
    })?;
    let conn = deadpool_redis::Connection::take(conn);
    current.store(Some(std::sync::Arc::new(conn.clone())));
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
