//! What the protocol needs from a store, and the two stores that provide it.
//!
//! Every store operation is a small struct implementing [`Op`]: how it is
//! sent to Redis (a command or a pipeline around one of the scripts in
//! [`redis`]), how the reply is read, and what it does to the embedded
//! [`memory::MemoryState`]. The [`Backend`] runs an op on whichever store the
//! cache uses, asynchronously or from blocking code; the two drivers share
//! everything else.

pub(crate) mod memory;
pub(crate) mod redis;

use std::time::{Duration, Instant};

use ::redis::{Cmd, Pipeline, RedisResult, Value};

use crate::breaker::{Admission, Limits, Outcome, WarnGate};
use crate::key::StoreKeys;
use crate::protocol::Claim;
use crate::stats::Stats;
use crate::wakeups::Wakeups;
use crate::{Error, Result};

pub(crate) use self::memory::MemoryStore;
use self::memory::{ClaimRequest, FillRequest, MemoryState};
pub(crate) use self::redis::RedisStore;

/// A key's membership in an index (tag or dependency group). Members are
/// scored by when they expire, and expired members are pruned on writes, so
/// indexes never outgrow the live keys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IndexAdd {
    /// The index's Redis key.
    pub(crate) index: String,
    /// When the member expires, counted from when the op runs.
    pub(crate) expiry: Expiry,
    /// Prune expired members of this index on this write.
    pub(crate) prune: bool,
}

/// When an index member expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// This many milliseconds after the op runs.
    After(u64),
    /// Never (the value has no TTL).
    Never,
}

impl Expiry {
    /// The absolute expiry (ms since the epoch) for an op running at `now_ms`.
    pub(crate) fn at(self, now_ms: u64) -> Option<u64> {
        match self {
            Expiry::After(ms) => Some(now_ms + ms),
            Expiry::Never => None,
        }
    }

    fn score(self, now_ms: u64) -> String {
        match self.at(now_ms) {
            Some(at) => at.to_string(),
            None => "+inf".to_owned(),
        }
    }
}

/// How an index write treats a member that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scoring {
    /// Set the member's expiry (a fill knows the value's real expiry).
    Set,
    /// Only push the expiry later (a registration before a load must not
    /// shorten the life of a value that is already there).
    Extend,
}

/// Append index writes to a pipeline: `ZADD [GT]`, then the prune when due.
fn push_index_writes(pipe: &mut Pipeline, member: &str, indexes: &[IndexAdd], scoring: Scoring) {
    let now = now_ms();
    for add in indexes {
        let zadd = pipe.cmd("ZADD").arg(&add.index);
        if scoring == Scoring::Extend {
            zadd.arg("GT");
        }
        zadd.arg(add.expiry.score(now)).arg(member).ignore();
        if add.prune {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&add.index)
                .arg("-inf")
                .arg(format!("({now}"))
                .ignore();
        }
    }
}

/// What an op sends to Redis.
pub(crate) enum Request {
    /// One command; its reply is the op's reply.
    Command(Cmd),
    /// Several commands; the reply is an array with one entry per command.
    Pipeline(Pipeline),
}

/// What Redis-side ops need besides their own fields.
pub(crate) struct RedisContext<'a> {
    pub(crate) channel: &'a str,
    pub(crate) scripts: &'a redis::Scripts,
    /// Send scripts with `EVAL` (their body) rather than `EVALSHA`: the
    /// retry after a `NOSCRIPT` (a restarted or flushed server).
    pub(crate) eval: bool,
}

impl RedisContext<'_> {
    /// The command that runs `script` on these keys and arguments.
    fn script<A: ::redis::ToRedisArgs>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[A],
    ) -> Cmd {
        script.call(keys, args, self.eval)
    }
}

/// One store operation, for both stores.
pub(crate) trait Op {
    /// What the op returns.
    type Output;
    /// Its name in errors and logs.
    const NAME: &'static str;
    /// The key (or index, or pattern) it is about, for errors and logs.
    fn subject(&self) -> &str;
    /// The Redis request.
    fn request(&self, cx: &RedisContext<'_>) -> Request;
    /// Read the Redis reply.
    fn reply(&self, value: Value) -> RedisResult<Self::Output>;
    /// Run against the memory store; value keys whose waiters must be woken
    /// go into `wake`.
    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output;
}

/// Read a value key.
pub(crate) struct Get<'a> {
    pub(crate) keys: &'a StoreKeys,
}

impl Op for Get<'_> {
    type Output = Option<Vec<u8>>;
    const NAME: &'static str = "GET";
    fn subject(&self) -> &str {
        self.keys.value()
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.keys.value());
        Request::Command(cmd)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        state.get(self.keys.value(), now_ms)
    }
}

/// Put the key in its indexes, then take the lease unless the value is
/// current, or register as a waiter. One round trip.
pub(crate) struct ClaimLease<'a> {
    pub(crate) claim: ClaimRequest<'a>,
    pub(crate) register: Register<'a>,
}

impl Op for ClaimLease<'_> {
    type Output = (Claim, Option<Vec<u8>>);
    const NAME: &'static str = "claim";
    fn subject(&self) -> &str {
        self.claim.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        let r = &self.claim;
        let mut pipe = ::redis::pipe();
        self.register.push_writes(&mut pipe);
        pipe.add_command(cx.script(
            &cx.scripts.claim,
            &[r.keys.value(), &r.keys.lease()],
            &[
                r.token,
                &r.lease_ms.to_string(),
                &r.fresh_since_ms.to_string(),
                if r.stale_ok { "1" } else { "0" },
            ],
        ));
        Request::Pipeline(pipe)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let ((code, found),): ((i64, Option<Vec<u8>>),) = ::redis::from_redis_value(value)?;
        let claim = match code {
            1 => Claim::Acquired,
            2 => Claim::Current,
            _ => Claim::Busy,
        };
        Ok((claim, found))
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        self.register.apply(state, now_ms);
        state.claim(&self.claim, now_ms)
    }
}

/// Index the key, then write the value if the lease is still ours.
pub(crate) struct Fill<'a>(pub(crate) FillRequest<'a>);

impl Op for Fill<'_> {
    type Output = bool;
    const NAME: &'static str = "fill";
    fn subject(&self) -> &str {
        self.0.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        let r = &self.0;
        let mut pipe = ::redis::pipe();
        push_index_writes(
            &mut pipe,
            r.keys.cache_key(r.prefix),
            r.indexes,
            Scoring::Set,
        );
        pipe.add_command(cx.script(
            &cx.scripts.fill,
            &[r.keys.value(), &r.keys.lease()],
            &[
                r.token.as_bytes(),
                r.envelope,
                r.ttl_ms.unwrap_or(0).to_string().as_bytes(),
                cx.channel.as_bytes(),
                r.lease_ms.to_string().as_bytes(),
            ],
        ));
        Request::Pipeline(pipe)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let (stored,): (i64,) = ::redis::from_redis_value(value)?;
        Ok(stored == 1)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output {
        let (stored, waiters) = state.fill(&self.0, now_ms);
        if waiters {
            wake.push(self.0.keys.value().to_owned());
        }
        stored
    }
}

/// Give the lease back after a failed load.
pub(crate) struct Release<'a> {
    pub(crate) keys: &'a StoreKeys,
    pub(crate) token: &'a str,
    /// To put back a lease that turns out not to be ours.
    pub(crate) lease_ms: u64,
}

impl Op for Release<'_> {
    type Output = ();
    const NAME: &'static str = "release";
    fn subject(&self) -> &str {
        self.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        Request::Command(cx.script(
            &cx.scripts.release,
            &[self.keys.value(), &self.keys.lease()],
            &[self.token, cx.channel, &self.lease_ms.to_string()],
        ))
    }
    fn reply(&self, _: Value) -> RedisResult<Self::Output> {
        Ok(())
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output {
        if state.release(self.keys, self.token, now_ms) {
            wake.push(self.keys.value().to_owned());
        }
    }
}

/// A key's registration in its indexes before its load, so that
/// invalidations of its tag or groups find it while the load runs. Sent with
/// the claim, and again with every lease renewal.
pub(crate) struct Register<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) keys: &'a StoreKeys,
    pub(crate) indexes: &'a [IndexAdd],
}

impl Register<'_> {
    /// The `ZADD GT` (and prune) commands, in front of what follows.
    fn push_writes(&self, pipe: &mut Pipeline) {
        push_index_writes(
            pipe,
            self.keys.cache_key(self.prefix),
            self.indexes,
            Scoring::Extend,
        );
    }

    /// The same on the memory store.
    fn apply(&self, state: &mut MemoryState, now_ms: u64) {
        let member = self.keys.cache_key(self.prefix);
        for add in self.indexes {
            state.index_add(add, member, Scoring::Extend, now_ms);
        }
    }
}

/// Keep a lease alive while a long load runs, and the key's registration in
/// its indexes with it.
pub(crate) struct Extend<'a> {
    pub(crate) register: Register<'a>,
    pub(crate) token: &'a str,
    pub(crate) lease_ms: u64,
}

impl Op for Extend<'_> {
    type Output = bool;
    const NAME: &'static str = "extend";
    fn subject(&self) -> &str {
        self.register.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        let keys = self.register.keys;
        let mut pipe = ::redis::pipe();
        self.register.push_writes(&mut pipe);
        pipe.add_command(cx.script(
            &cx.scripts.extend,
            &[&keys.lease()],
            &[self.token, &self.lease_ms.to_string()],
        ));
        Request::Pipeline(pipe)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let (extended,): (i64,) = ::redis::from_redis_value(value)?;
        Ok(extended == 1)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        self.register.apply(state, now_ms);
        state.extend(self.register.keys, self.token, self.lease_ms, now_ms)
    }
}

/// How an invalidation treats the values it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Flip the state byte: stale-on readers may still serve the value.
    MarkStale,
    /// Delete the value.
    Delete,
}

/// Invalidate a batch of keys: revoke their leases, and mark or delete their values.
pub(crate) struct Invalidate<'a> {
    pub(crate) keys: &'a [StoreKeys],
    pub(crate) removal: Removal,
}

impl Op for Invalidate<'_> {
    type Output = u64;
    const NAME: &'static str = "invalidate";
    fn subject(&self) -> &str {
        self.keys.first().map_or("", StoreKeys::value)
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        let mode = match self.removal {
            Removal::MarkStale => "stale",
            Removal::Delete => "delete",
        };
        let mut pipe = ::redis::pipe();
        for keys in self.keys {
            pipe.add_command(cx.script(
                &cx.scripts.invalidate,
                &[keys.value(), &keys.lease()],
                &[cx.channel, mode],
            ));
        }
        Request::Pipeline(pipe)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let counts: Vec<u64> = ::redis::from_redis_value(value)?;
        Ok(counts.iter().sum())
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output {
        let mut count = 0;
        for keys in self.keys {
            let (removed, waiters) = match self.removal {
                Removal::MarkStale => state.mark_stale(keys, now_ms),
                Removal::Delete => state.delete(keys, now_ms),
            };
            count += u64::from(removed);
            if waiters {
                wake.push(keys.value().to_owned());
            }
        }
        count
    }
}

/// Announce an invalidation on the cache's channel (after the store changed),
/// for the local tiers of the other processes.
pub(crate) struct Announce<'a> {
    pub(crate) message: &'a [u8],
}

impl Op for Announce<'_> {
    type Output = ();
    const NAME: &'static str = "PUBLISH";
    fn subject(&self) -> &str {
        "events"
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(cx.channel).arg(self.message);
        Request::Command(cmd)
    }
    fn reply(&self, _: Value) -> RedisResult<Self::Output> {
        Ok(())
    }
    fn apply(&self, _: &mut MemoryState, _: u64, _: &mut Vec<String>) -> Self::Output {
        // One process: the invalidation applied its event directly.
    }
}

/// One page of an index's members (cache keys).
pub(crate) struct IndexPage<'a> {
    pub(crate) index: &'a str,
    pub(crate) cursor: u64,
}

/// How many members or keys one page asks for.
pub(crate) const PAGE: usize = 1000;

impl Op for IndexPage<'_> {
    /// (next cursor, 0 when done; members)
    type Output = (u64, Vec<String>);
    const NAME: &'static str = "ZSCAN";
    fn subject(&self) -> &str {
        self.index
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("ZSCAN");
        cmd.arg(self.index).arg(self.cursor).arg("COUNT").arg(PAGE);
        Request::Command(cmd)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let (cursor, pairs): (u64, Vec<String>) = ::redis::from_redis_value(value)?;
        let now = now_ms() as f64;
        let members = pairs
            .chunks_exact(2)
            .filter(|pair| pair[1].parse::<f64>().map_or(true, |expiry| expiry > now))
            .map(|pair| pair[0].clone())
            .collect();
        Ok((cursor, members))
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        (0, state.index_members(self.index, now_ms))
    }
}

/// Remove members from an index.
pub(crate) struct IndexRemove<'a> {
    pub(crate) index: &'a str,
    pub(crate) members: &'a [String],
}

impl Op for IndexRemove<'_> {
    type Output = ();
    const NAME: &'static str = "ZREM";
    fn subject(&self) -> &str {
        self.index
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("ZREM");
        cmd.arg(self.index).arg(self.members);
        Request::Command(cmd)
    }
    fn reply(&self, _: Value) -> RedisResult<Self::Output> {
        Ok(())
    }
    fn apply(&self, state: &mut MemoryState, _: u64, _: &mut Vec<String>) -> Self::Output {
        state.index_remove(self.index, self.members);
    }
}

/// One page of value keys matching a glob.
pub(crate) struct ScanPage<'a> {
    pub(crate) glob: &'a str,
    pub(crate) cursor: u64,
}

impl Op for ScanPage<'_> {
    /// (next cursor, 0 when done; value keys)
    type Output = (u64, Vec<String>);
    const NAME: &'static str = "SCAN";
    fn subject(&self) -> &str {
        self.glob
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(self.glob)
            .arg("COUNT")
            .arg(PAGE);
        Request::Command(cmd)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        (0, state.scan(self.glob, now_ms))
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The store a cache uses.
pub(crate) enum Backend {
    /// The embedded default.
    Memory(MemoryStore),
    /// A Redis server.
    Redis(RedisStore),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Memory(_) => f.write_str("Memory"),
            Backend::Redis(store) => write!(f, "Redis({})", store.describe()),
        }
    }
}

/// What a backend needs besides the op: where to report, and its limits.
pub(crate) struct Reporting<'a> {
    pub(crate) wakeups: &'a Wakeups,
    pub(crate) stats: &'a Stats,
    pub(crate) warn_gate: &'a WarnGate,
    /// The per-operation timeout.
    pub(crate) timeout: Duration,
    /// When the circuit breaker opens, and for how long.
    pub(crate) limits: Limits,
}

impl Backend {
    /// Run an op from async code.
    pub(crate) async fn run<O: Op>(&self, op: &O, report: &Reporting<'_>) -> Result<O::Output> {
        match self {
            Backend::Memory(store) => Ok(apply(store, op, report)),
            Backend::Redis(store) => {
                let admission = admit::<O>(store, report)?;
                // Boxed: a Redis request's future (its command, connection,
                // reply and timer) is half a KB, inline in every future that
                // awaits an op; a small allocation is cheaper than carrying
                // it (and copying it) through the protocol's futures.
                let result = Box::pin(store.run(op, report.timeout)).await;
                record(store, admission, result, report)
            }
        }
    }

    /// Run an op from blocking code.
    pub(crate) fn run_blocking<O: Op>(&self, op: &O, report: &Reporting<'_>) -> Result<O::Output> {
        match self {
            Backend::Memory(store) => Ok(apply(store, op, report)),
            Backend::Redis(store) => {
                let admission = admit::<O>(store, report)?;
                let result = store.run_blocking(op, report.timeout);
                record(store, admission, result, report)
            }
        }
    }
}

/// Ask the breaker; a refusal costs nothing but a counter.
fn admit<O: Op>(store: &RedisStore, report: &Reporting<'_>) -> Result<Admission> {
    match store.breaker.admit(Instant::now()) {
        Admission::Refuse { retry_in } => {
            report.stats.short_circuited();
            Err(Error::Unavailable {
                command: O::NAME,
                retry_in,
            })
        }
        admission => {
            report.stats.store_request();
            Ok(admission)
        }
    }
}

/// Tell the breaker how an op went; count and log failures (at most one
/// warning a second, with the number held back).
fn record<T>(
    store: &RedisStore,
    admission: Admission,
    result: Result<T>,
    report: &Reporting<'_>,
) -> Result<T> {
    let outcome = match &result {
        Err(error) if unreachable(error) => Outcome::Unreachable,
        _ => Outcome::Answered,
    };
    let now = Instant::now();
    if store.breaker.record(admission, outcome, report.limits, now) {
        report.stats.breaker_opened();
        tracing::warn!(
            cooldown = ?report.limits.cooldown,
            "cacheme: redis unreachable; circuit breaker open, calls run their loaders without waiting for redis"
        );
    }
    if let Err(error) = &result {
        report.stats.store_error();
        if let Some(held_back) = report.warn_gate.pass(Duration::from_secs(1), now) {
            tracing::warn!(error = %crate::error::Chain(error), held_back, "cacheme store operation failed");
        }
    }
    result
}

/// Errors that say Redis could not be reached in time, as opposed to an
/// answer (out of memory, wrong type) from a server that is up.
fn unreachable(error: &Error) -> bool {
    match error {
        Error::Timeout { .. } => true,
        Error::Redis { source, .. } => {
            source.is_io_error()
                || source.is_timeout()
                || source.is_connection_refusal()
                || source.is_connection_dropped()
                || source.is_unrecoverable_error()
        }
        _ => false,
    }
}

fn apply<O: Op>(store: &MemoryStore, op: &O, report: &Reporting<'_>) -> O::Output {
    report.stats.store_request();
    let mut wake = Vec::new();
    let output = store.with(|state| op.apply(state, now_ms(), &mut wake));
    for key in &wake {
        report.wakeups.wake(key);
    }
    output
}

impl From<(&'static str, &str, ::redis::RedisError)> for Error {
    fn from((command, key, source): (&'static str, &str, ::redis::RedisError)) -> Self {
        Error::Redis {
            command,
            key: key.to_owned(),
            source,
        }
    }
}
