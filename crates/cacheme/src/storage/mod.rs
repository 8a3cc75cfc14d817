//! What the protocol needs from a store, and the two stores that provide it.
//!
//! Every store operation is a small struct implementing [`Op`]: how it is
//! sent to Redis (a command, or one of the scripts in [`redis`]), how the
//! reply is read, and what it does to the embedded
//! [`memory::MemoryState`]. Reading one op shows what it means on both
//! stores. The [`Backend`] runs an op on whichever store the cache uses,
//! asynchronously or from blocking code; the two drivers share everything
//! else.
//!
//! Every op touches one Redis Cluster hash slot: a key's value and lease
//! (`{key}`), or the invalidation sequence (`{inv}`).

pub(crate) mod batch;
#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod memory;
#[cfg(test)]
mod parity;
pub(crate) mod redis;
pub(crate) mod verify;

use std::time::{Duration, Instant};

use ::redis::{Cmd, Pipeline, RedisResult, Value};

use crate::breaker::{Admission, Limits, Outcome, WarnGate};
use crate::events::SequenceKeys;
use crate::key::StoreKeys;
use crate::protocol::{Claim, Lease};
use crate::stats::{Counted, Stats};
use crate::wakeups::Wakeups;
use crate::{Error, Result};

use self::memory::MemoryState;
pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::RedisStore;

/// What an op sends to Redis.
pub(crate) enum Request {
    /// One command; its reply is the op's reply.
    Command(Cmd),
    /// Several commands; the reply is an array with one entry per command.
    Pipeline(Pipeline),
}

/// What Redis-side ops need besides their own fields.
pub(crate) struct RedisContext<'a> {
    pub(crate) sequence: &'a SequenceKeys,
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

    fn channel(&self) -> &str {
        &self.sequence.channel
    }
}

/// One store operation, for both stores.
pub(crate) trait Op {
    /// What the op returns.
    type Output;
    /// Its name in errors and logs.
    const NAME: &'static str;
    /// The key (or pattern) it is about, for errors and logs.
    fn subject(&self) -> &str;
    /// The Redis request.
    fn request(&self, cx: &RedisContext<'_>) -> Request;
    /// Read the Redis reply.
    fn reply(&self, value: Value) -> RedisResult<Self::Output>;
    /// Run against the memory store; value keys whose waiters must be woken
    /// go into `wake`.
    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output;
    /// On a Redis Cluster, the node (`host:port`) the request must go to;
    /// `None` (the default): the node of its keys' slot.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn node(&self) -> Option<&str> {
        None
    }
    /// On a Redis Cluster, for a keyless command about earlier writes
    /// (`WAIT`): the keys written, whose slots' primaries it goes to, the
    /// replies combined by their minimum. Empty (the default): routed as
    /// redis-rs routes the command.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn written(&self) -> &[String] {
        &[]
    }
}

/// The argument that says which lease a script works on.
fn lease_mode(lease: Lease) -> &'static str {
    match lease {
        Lease::Placeholder => "p",
        Lease::Key => "k",
    }
}

/// Read a value key, nothing else (`get`, which never loads).
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

/// Read a value key, and claim it if it is empty: `SET key <placeholder> NX
/// PX <lease> GET`. One command, no script: a hit costs what a `GET` costs.
pub(crate) struct ReadClaim<'a> {
    pub(crate) keys: &'a StoreKeys,
    /// This caller's placeholder (see `envelope::placeholder`).
    pub(crate) placeholder: &'a [u8],
    pub(crate) lease_ms: u64,
}

impl Op for ReadClaim<'_> {
    /// What the key held; `None` means it was empty and now holds our placeholder.
    type Output = Option<Vec<u8>>;
    const NAME: &'static str = "read";
    fn subject(&self) -> &str {
        self.keys.value()
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.keys.value())
            .arg(self.placeholder)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms)
            .arg("GET");
        Request::Command(cmd)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        state.read_claim(self.keys.value(), self.placeholder, self.lease_ms, now_ms)
    }
}

/// Register as a waiter of the placeholder in a value key (set its waiters
/// flag, so that the fill announces itself); returns what the key holds.
pub(crate) struct Watch<'a> {
    pub(crate) keys: &'a StoreKeys,
}

impl Op for Watch<'_> {
    type Output = Option<Vec<u8>>;
    const NAME: &'static str = "watch";
    fn subject(&self) -> &str {
        self.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        Request::Command(cx.script(&cx.scripts.watch, &[self.keys.value()], &[] as &[&str]))
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        state.watch(self.keys.value(), now_ms)
    }
}

/// Take a key's lease key to refresh the value there, if it is still the
/// value the caller judged; or register as a waiter.
pub(crate) struct ClaimRefresh<'a> {
    pub(crate) keys: &'a StoreKeys,
    pub(crate) token: &'a str,
    pub(crate) lease_ms: u64,
    /// The first bytes (header) of the value judged: the claim only goes on
    /// while the key still starts with them.
    pub(crate) expected: &'a [u8],
    /// Register as a waiter when the lease is busy.
    pub(crate) wait: bool,
}

impl Op for ClaimRefresh<'_> {
    type Output = (Claim, Option<Vec<u8>>);
    const NAME: &'static str = "claim";
    fn subject(&self) -> &str {
        self.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        Request::Command(cx.script(
            &cx.scripts.claim,
            &[self.keys.value(), &self.keys.lease()],
            &[
                self.token.as_bytes(),
                self.lease_ms.to_string().as_bytes(),
                self.expected,
                if self.wait { b"1" } else { b"0" },
            ],
        ))
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let (code, found): (i64, Option<Vec<u8>>) = ::redis::from_redis_value(value)?;
        Ok((claim_of(code), found))
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        state.claim_refresh(self, now_ms)
    }
}

/// The claim script's answer codes.
fn claim_of(code: i64) -> Claim {
    match code {
        1 => Claim::Acquired,
        2 => Claim::Changed,
        _ => Claim::Busy,
    }
}

/// Write the loaded value if the lease is still ours; wake waiters.
pub(crate) struct Fill<'a> {
    pub(crate) keys: &'a StoreKeys,
    pub(crate) lease: Lease,
    pub(crate) token: &'a str,
    pub(crate) envelope: &'a [u8],
    /// Time to live, if any.
    pub(crate) ttl_ms: Option<u64>,
}

/// The longest time to live sent to a store: Redis refuses a `PX` whose
/// expiry time overflows its clock (`i64` milliseconds), so a longer one
/// (`Duration::MAX`, say) means "no expiry" (about 146 million years).
pub(crate) const MAX_TTL_MS: u64 = (i64::MAX / 2) as u64;

impl Fill<'_> {
    /// The time to live the store applies: `None` for no expiry.
    pub(crate) fn expiry_ms(&self) -> Option<u64> {
        self.ttl_ms.filter(|ttl| *ttl <= MAX_TTL_MS)
    }
}

impl Op for Fill<'_> {
    type Output = bool;
    const NAME: &'static str = "fill";
    fn subject(&self) -> &str {
        self.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        Request::Command(cx.script(
            &cx.scripts.fill,
            &[self.keys.value(), &self.keys.lease()],
            &[
                self.token.as_bytes(),
                self.envelope,
                self.expiry_ms().unwrap_or(0).to_string().as_bytes(),
                cx.channel().as_bytes(),
                lease_mode(self.lease).as_bytes(),
            ],
        ))
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let stored: i64 = ::redis::from_redis_value(value)?;
        Ok(stored == 1)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output {
        let (stored, waiters) = state.fill(self, now_ms);
        if waiters {
            wake.push(self.keys.value().to_owned());
        }
        stored
    }
}

/// Give the lease back (the load failed, or its value is not stored); wake waiters.
pub(crate) struct Release<'a> {
    pub(crate) keys: &'a StoreKeys,
    pub(crate) lease: Lease,
    pub(crate) token: &'a str,
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
            &[self.token, cx.channel(), lease_mode(self.lease)],
        ))
    }
    fn reply(&self, _: Value) -> RedisResult<Self::Output> {
        Ok(())
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output {
        if state.release(self.keys, self.lease, self.token, now_ms) {
            wake.push(self.keys.value().to_owned());
        }
    }
}

/// Keep a lease alive while a long load runs.
pub(crate) struct Extend<'a> {
    pub(crate) keys: &'a StoreKeys,
    pub(crate) lease: Lease,
    pub(crate) token: &'a str,
    pub(crate) lease_ms: u64,
}

impl Op for Extend<'_> {
    type Output = bool;
    const NAME: &'static str = "extend";
    fn subject(&self) -> &str {
        self.keys.value()
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        Request::Command(cx.script(
            &cx.scripts.extend,
            &[self.keys.value(), &self.keys.lease()],
            &[
                self.token,
                &self.lease_ms.to_string(),
                lease_mode(self.lease),
            ],
        ))
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let extended: i64 = ::redis::from_redis_value(value)?;
        Ok(extended == 1)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        state.extend(self, now_ms)
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

/// Invalidate a batch of keys: revoke their leases (placeholder or lease
/// key), and mark or delete their values. Foreign values are deleted.
pub(crate) struct Invalidate<'a> {
    pub(crate) keys: &'a [StoreKeys],
    pub(crate) removal: Removal,
}

impl Op for Invalidate<'_> {
    /// How many values were marked or deleted.
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
                &[cx.channel(), mode],
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
            let (removed, waiters) = state.invalidate(keys, self.removal, now_ms);
            count += u64::from(removed);
            if waiters {
                wake.push(keys.value().to_owned());
            }
        }
        count
    }
}

/// Number an invalidation in the sequence, keep it in the log, and announce
/// it on the event channel (one script on the `{inv}` slot).
pub(crate) struct Record<'a> {
    /// The invalidation's payload (`events::Invalidated::payload`).
    pub(crate) payload: &'a [u8],
    /// How many entries the log keeps (about).
    pub(crate) log_len: u64,
}

impl Op for Record<'_> {
    /// The invalidation's sequence number.
    type Output = u64;
    const NAME: &'static str = "record";
    fn subject(&self) -> &str {
        "invalidation sequence"
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        Request::Command(cx.script(
            &cx.scripts.record,
            &[&cx.sequence.seq, &cx.sequence.log],
            &[
                cx.channel().as_bytes(),
                self.payload,
                self.log_len.to_string().as_bytes(),
            ],
        ))
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, state: &mut MemoryState, _: u64, _: &mut Vec<String>) -> Self::Output {
        state.record(self.payload, self.log_len)
    }
}

/// After a failover: move the invalidation sequence up to the new primary's
/// time in microseconds, past any number the former primary gave (see the
/// `FLOOR` script); other processes then see a gap, read the log, and treat
/// what it lacks as lost.
pub(crate) struct SequenceFloor;

impl Op for SequenceFloor {
    /// The sequence's number afterwards.
    type Output = u64;
    const NAME: &'static str = "sequence floor";
    fn subject(&self) -> &str {
        "invalidation sequence"
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        Request::Command(cx.script(&cx.scripts.floor, &[&cx.sequence.seq], &[] as &[&str]))
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, state: &mut MemoryState, _: u64, _: &mut Vec<String>) -> Self::Output {
        // One process, no failover: nothing to move past.
        state.read_log(u64::MAX, 0).0
    }
}

/// The sequence's current number, and the log's entries from `from` on (at
/// most `count`): what a process that missed events reads back.
pub(crate) struct ReadLog {
    pub(crate) from: u64,
    pub(crate) count: usize,
}

/// An `XRANGE` entry as Redis returns it: its ID and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// One log entry: its sequence number and payload.
pub(crate) type LogEntry = (u64, Vec<u8>);

impl Op for ReadLog {
    /// (the current sequence number, 0 if none yet; entries in order)
    type Output = (u64, Vec<LogEntry>);
    const NAME: &'static str = "XRANGE";
    fn subject(&self) -> &str {
        "invalidation log"
    }
    fn request(&self, cx: &RedisContext<'_>) -> Request {
        let mut pipe = ::redis::pipe();
        pipe.add_command(cx.script(&cx.scripts.sequence, &[&cx.sequence.seq], &[] as &[&str]));
        pipe.cmd("XRANGE")
            .arg(&cx.sequence.log)
            .arg(format!("{}-0", self.from.max(1)))
            .arg("+")
            .arg("COUNT")
            .arg(self.count);
        Request::Pipeline(pipe)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let (current, entries): (u64, Vec<StreamEntry>) = ::redis::from_redis_value(value)?;
        let entries = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let seq = crate::events::seq_of_log_id(&id)?;
                let (_, payload) = fields
                    .into_iter()
                    .find(|(field, _)| field == crate::events::LOG_FIELD)?;
                Some((seq, payload))
            })
            .collect();
        Ok((current, entries))
    }
    fn apply(&self, state: &mut MemoryState, _: u64, _: &mut Vec<String>) -> Self::Output {
        state.read_log(self.from, self.count)
    }
}

/// Wait until `replicas` replicas have this connection's writes (`WAIT`),
/// at most `timeout`.
pub(crate) struct WaitReplicas {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
    /// On a cluster, the keys written (empty: ask every primary).
    pub(crate) written: Vec<String>,
}

impl Op for WaitReplicas {
    /// How many replicas acknowledged.
    type Output = u32;
    const NAME: &'static str = "WAIT";
    fn subject(&self) -> &str {
        "replicas"
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("WAIT");
        cmd.arg(self.replicas).arg(self.timeout.as_millis() as u64);
        Request::Command(cmd)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, _: &mut MemoryState, _: u64, _: &mut Vec<String>) -> Self::Output {
        // One process, no replicas: nothing to wait for.
        self.replicas
    }
    fn written(&self) -> &[String] {
        &self.written
    }
}

/// One page of value keys matching a glob (on one node of a cluster).
pub(crate) struct ScanPage<'a> {
    pub(crate) glob: &'a str,
    pub(crate) cursor: u64,
    /// The primary to scan (`host:port`), on a cluster.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) node: Option<&'a str>,
}

/// How many keys one page asks for.
pub(crate) const PAGE: usize = 1000;

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
    fn node(&self) -> Option<&str> {
        self.node
    }
}

/// The primaries of a Redis Cluster (`CLUSTER SLOTS`), as `host:port`: the
/// nodes a pattern invalidation scans.
pub(crate) struct Primaries;

impl Op for Primaries {
    type Output = Vec<String>;
    const NAME: &'static str = "CLUSTER SLOTS";
    fn subject(&self) -> &str {
        "cluster primaries"
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        Request::Command(cmd)
    }
    #[cfg(feature = "cluster")]
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        self::cluster::primaries_of_slots(value)
    }
    #[cfg(not(feature = "cluster"))]
    fn reply(&self, _: Value) -> RedisResult<Self::Output> {
        Ok(Vec::new())
    }
    fn apply(&self, _: &mut MemoryState, _: u64, _: &mut Vec<String>) -> Self::Output {
        Vec::new()
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
    /// The node of the call that sent the op, whose counts it goes to
    /// besides the totals (see [`Reporting::for_node`]).
    pub(crate) node: Option<&'static crate::Spec>,
    pub(crate) warn_gate: &'a WarnGate,
    /// The per-operation timeout.
    pub(crate) timeout: Duration,
    /// When the circuit breaker opens, and for how long.
    pub(crate) limits: Limits,
}

impl<'a> Reporting<'a> {
    /// Count the ops in the node of `spec` too.
    pub(crate) fn for_node(mut self, spec: &'static crate::Spec) -> Self {
        self.node = Some(spec);
        self
    }

    /// Where the op counts.
    fn counted(&self) -> Counted<'a> {
        match self.node {
            Some(spec) => self.stats.of(spec),
            None => self.stats.totals(),
        }
    }
}

impl Backend {
    /// Whether blocking ops can run (the memory store, or Redis with a URL).
    pub(crate) fn can_block(&self) -> bool {
        match self {
            Backend::Memory(_) => true,
            Backend::Redis(store) => store.can_block(),
        }
    }

    /// Whether the store is a Redis Cluster (pattern invalidations scan
    /// every primary).
    pub(crate) fn is_cluster(&self) -> bool {
        match self {
            Backend::Memory(_) => false,
            Backend::Redis(store) => store.is_cluster(),
        }
    }

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
            report.counted().short_circuited();
            Err(Error::Unavailable {
                command: O::NAME,
                retry_in,
            })
        }
        admission => {
            report.counted().store_request();
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
        report.counted().store_error();
        if is_cross_slot(error) {
            report.counted().cross_slot_error();
        }
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

/// A command refused because its keys are in different hash slots (a bug
/// of ours on a cluster: every op must touch one slot).
fn is_cross_slot(error: &Error) -> bool {
    matches!(error, Error::Redis { source, .. }
        if source.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::CrossSlot))
}

fn apply<O: Op>(store: &MemoryStore, op: &O, report: &Reporting<'_>) -> O::Output {
    report.counted().store_request();
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
