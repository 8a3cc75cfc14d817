//! Many ops of one kind in one round trip: the pipelines of batch reads
//! (`get_many`, `get_or_load_many`).
//!
//! [`Pipelined`] wraps a slice of single-command ops; on Redis it is one
//! pipeline, on the memory store the ops run one after the other under one
//! lock. Each op keeps its own reply, and with [`Pipelined::per_op_errors`]
//! its own error (a key holding another Redis type fails its read, not the
//! batch's): the driver judges every element on its own, as the single-key
//! driver would.

use ::redis::{RedisResult, Value};

use super::memory::MemoryState;
use super::{ClaimRefresh, Fill, Get, Op, ReadClaim, RedisContext, Release, Request};
use std::time::Duration;

use super::Reporting;
use crate::{Error, Result};

/// An op that is one Redis command (so that many of them form a pipeline
/// whose replies are theirs, one each).
pub(crate) trait OneCommand: Op {}

impl OneCommand for Get<'_> {}
impl OneCommand for ReadClaim<'_> {}
impl OneCommand for ClaimRefresh<'_> {}
impl OneCommand for Fill<'_> {}
impl OneCommand for Release<'_> {}

/// Read many value keys in one command (`MGET`): nothing else. A key of
/// another Redis type reads as empty (`MGET` does not fail for it).
pub(crate) struct MultiGet<'a> {
    pub(crate) keys: &'a [&'a crate::key::StoreKeys],
}

impl Op for MultiGet<'_> {
    /// What each key holds, in order.
    type Output = Vec<Option<Vec<u8>>>;
    const NAME: &'static str = "MGET";
    fn subject(&self) -> &str {
        self.keys.first().map_or("", |keys| keys.value())
    }
    fn request(&self, _: &RedisContext<'_>) -> Request {
        let mut cmd = ::redis::cmd("MGET");
        for keys in self.keys {
            cmd.arg(keys.value());
        }
        Request::Command(cmd)
    }
    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        Ok(::redis::from_redis_value(value)?)
    }
    fn apply(&self, state: &mut MemoryState, now_ms: u64, _: &mut Vec<String>) -> Self::Output {
        self.keys
            .iter()
            .map(|keys| state.get(keys.value(), now_ms))
            .collect()
    }
}

/// Many ops of one kind, sent in one pipeline.
pub(crate) struct Pipelined<'o, O> {
    ops: &'o [O],
    /// Each op's error is its own (`ignore_errors`); only for ops that run
    /// no script: a script's `NOSCRIPT` must fail the whole pipeline, so
    /// that the store sends it again with the scripts' bodies.
    per_op_errors: bool,
}

impl<'o, O: OneCommand> Pipelined<'o, O> {
    /// The ops of a script: the first error fails them all (and a
    /// `NOSCRIPT` resends the pipeline with `EVAL`).
    pub(crate) fn new(ops: &'o [O]) -> Self {
        Pipelined {
            ops,
            per_op_errors: false,
        }
    }

    /// Plain commands: each op's error is its own.
    pub(crate) fn per_op_errors(ops: &'o [O]) -> Self {
        Pipelined {
            ops,
            per_op_errors: true,
        }
    }
}

impl<O: OneCommand> Op for Pipelined<'_, O> {
    /// One reply per op, in order.
    type Output = Vec<Result<O::Output>>;
    const NAME: &'static str = O::NAME;

    fn subject(&self) -> &str {
        self.ops.first().map_or("", Op::subject)
    }

    fn request(&self, cx: &RedisContext<'_>) -> Request {
        let mut pipe = ::redis::pipe();
        if self.per_op_errors {
            pipe.ignore_errors();
        }
        for op in self.ops {
            match op.request(cx) {
                Request::Command(cmd) => {
                    pipe.add_command(cmd);
                }
                // (`OneCommand` ops are single commands; a pipeline would be
                // flattened here, and its replies would no longer be one
                // per op.)
                Request::Pipeline(inner) => {
                    for cmd in inner.cmd_iter() {
                        pipe.add_command(cmd.clone());
                    }
                }
            }
        }
        Request::Pipeline(pipe)
    }

    fn reply(&self, value: Value) -> RedisResult<Self::Output> {
        let replies: Vec<Value> = ::redis::from_redis_value(value)?;
        if replies.len() != self.ops.len() {
            return Err(::redis::RedisError::from((
                ::redis::ErrorKind::Client,
                "a pipeline's reply does not have one entry per command",
                format!("{} commands, {} replies", self.ops.len(), replies.len()),
            )));
        }
        Ok(self
            .ops
            .iter()
            .zip(replies)
            .map(|(op, reply)| {
                reply
                    .extract_error()
                    .and_then(|reply| op.reply(reply))
                    .map_err(|source| Error::Redis {
                        command: O::NAME,
                        key: op.subject().to_owned(),
                        source,
                    })
            })
            .collect())
    }

    fn apply(&self, state: &mut MemoryState, now_ms: u64, wake: &mut Vec<String>) -> Self::Output {
        self.ops
            .iter()
            .map(|op| Ok(op.apply(state, now_ms, wake)))
            .collect()
    }
}

/// One op's share of a pipeline that failed as a whole (no connection,
/// timeout, breaker open): the same kind of error, for each element.
pub(crate) fn share_of(error: &Error) -> Error {
    match error {
        Error::Timeout {
            command,
            key,
            timeout,
        } => Error::Timeout {
            command,
            key: key.clone(),
            timeout: *timeout,
        },
        Error::Unavailable { command, retry_in } => Error::Unavailable {
            command,
            retry_in: *retry_in,
        },
        Error::Redis {
            command,
            key,
            source,
        } => Error::Redis {
            command,
            key: key.clone(),
            source: ::redis::RedisError::from((
                source.kind(),
                "the pipeline failed",
                source.to_string(),
            )),
        },
        other => Error::Redis {
            command: "pipeline",
            key: String::new(),
            source: ::redis::RedisError::from((
                ::redis::ErrorKind::Io,
                "the pipeline failed",
                other.to_string(),
            )),
        },
    }
}

/// The replies of a pipeline, one per op: its own, or a share of the
/// pipeline's failure. An op's own error is counted and logged here, like
/// the failure of a single request (the pipeline's is, by the backend).
pub(crate) fn each<T>(
    reply: Result<Vec<Result<T>>>,
    len: usize,
    report: &Reporting<'_>,
) -> Vec<Result<T>> {
    match reply {
        Ok(replies) => {
            for error in replies.iter().filter_map(|reply| reply.as_ref().err()) {
                report.stats.store_error();
                let now = std::time::Instant::now();
                if let Some(held_back) = report.warn_gate.pass(Duration::from_secs(1), now) {
                    tracing::warn!(error = %crate::error::Chain(error), held_back, "cacheme store operation failed");
                }
            }
            replies
        }
        Err(error) => (0..len).map(|_| Err(share_of(&error))).collect(),
    }
}
