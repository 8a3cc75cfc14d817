//! One error type for everything a caller can see.
//!
//! Reads never return these: when the store fails, a read runs the loader and
//! the failure goes to `tracing` and to the stats (the cache fails open).
//! Invalidations, settings and connection set-up do return them, so that an
//! invalidation is never silently dropped.

use std::time::Duration;

/// Everything that can go wrong in cacheme, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis answered a command with an error, or the connection failed.
    /// The cause is the [`source`](std::error::Error::source) of this error.
    #[error("redis {command} on `{key}` failed")]
    Redis {
        /// The command or script that failed (`GET`, `fill`, `mark_stale`...).
        command: &'static str,
        /// The cache key the command was about (or the index / pattern).
        key: String,
        /// What the client or the server said.
        #[source]
        source: redis::RedisError,
    },

    /// Redis did not answer within the per-operation timeout.
    #[error("redis {command} on `{key}` did not answer within {timeout:?}")]
    Timeout {
        /// The command or script that timed out.
        command: &'static str,
        /// The cache key the command was about.
        key: String,
        /// The configured per-operation timeout.
        timeout: Duration,
    },

    /// The circuit breaker is open after repeated failures; the store is not
    /// being called until the cool-down ends.
    #[error(
        "redis is unavailable (circuit breaker open for another {retry_in:?}); `{command}` was not sent"
    )]
    Unavailable {
        /// The command that was not sent.
        command: &'static str,
        /// How long until the breaker lets a probe through.
        retry_in: Duration,
    },

    /// A blocking call was made on a cache that has no blocking connection.
    #[error(
        "`{command}` was called from blocking code, but this cache has no blocking Redis connection; \
         build it with `.redis_url(..)` (alone or next to `.connection_manager(..)` / `.deadpool(..)`)"
    )]
    NoBlockingConnection {
        /// The command that could not be sent.
        command: &'static str,
    },

    /// An async call was made outside of a tokio runtime, so the async Redis
    /// connection could not be started.
    #[error(
        "`{command}` needs a tokio runtime for its Redis connection; call it from async code \
         inside a runtime, or use the blocking twin of the call (`load_blocking`, \
         `get_or_load_blocking`, `invalid_blocking`, `run_blocking`...)"
    )]
    NoRuntime {
        /// The command that could not be sent.
        command: &'static str,
    },

    /// The Redis URL or connection settings could not be used. The cause is
    /// the [`source`](std::error::Error::source) of this error.
    #[error("cannot connect to redis with `{url}`")]
    Connect {
        /// The URL (password removed) that was given.
        url: String,
        /// Why the client rejected it.
        #[source]
        source: redis::RedisError,
    },

    /// Redis refused the credentials (a wrong password, an unknown or
    /// disabled user), found by [`verify`](crate::CacheBuilder::verify).
    #[error("redis at `{url}` refused the credentials of user `{user}`")]
    Authentication {
        /// The URL or sentinels (password removed).
        url: String,
        /// The ACL user that tried to log in (`default` when none was given).
        user: String,
        /// What the server said.
        #[source]
        source: redis::RedisError,
    },

    /// The ACL user may not run a command cacheme needs, or not on cacheme's
    /// keys or channel; found by [`verify`](crate::CacheBuilder::verify).
    /// docs/deployments.md gives the minimal ACL rule.
    #[error(
        "the redis user `{user}` may not run `{command}`, which cacheme needs: {reason} \
         (the minimal ACL rule is in docs/deployments.md)"
    )]
    PermissionDenied {
        /// The ACL user.
        user: String,
        /// The command refused (`XADD`, `PUBLISH`, `EVALSHA`...).
        command: String,
        /// What the server said (which command, key or channel).
        reason: String,
    },

    /// A durable invalidation was not acknowledged by enough replicas in
    /// time (it was applied on the primary).
    #[error("the invalidation reached {acknowledged} of {wanted} replicas within {timeout:?}")]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that acknowledged.
        acknowledged: u32,
        /// How long it waited.
        timeout: Duration,
    },

    /// A key is empty or otherwise unusable.
    #[error("cache key `{key}` is not usable: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// `cacheme::tag(name)` was asked for a tag that no node or function registered.
    #[error("no node or cached function registered the tag `{name}`; registered tags: {known}")]
    UnknownTag {
        /// The tag that was asked for.
        name: String,
        /// The registered tags, comma-separated.
        known: String,
    },
}

impl Error {
    /// True when Redis refused a write for lack of memory (`OOM`, under the
    /// `noeviction` policy).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::Redis { source, .. } if source.code() == Some("OOM"))
    }

    /// True when the key holds another Redis type (`WRONGTYPE`): something
    /// other than cacheme wrote it.
    pub(crate) fn is_wrong_type(&self) -> bool {
        matches!(self, Error::Redis { source, .. } if source.code() == Some("WRONGTYPE"))
    }

    /// True when the command may have run on the server although its reply
    /// did not arrive (a timeout, a connection lost after sending).
    pub(crate) fn may_have_run(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Redis { source, .. } => source.is_io_error() || source.is_connection_dropped(),
            _ => false,
        }
    }

    /// True when the error means the store could not be reached or did not
    /// answer in time (as opposed to a bad argument).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Redis { .. }
                | Error::Timeout { .. }
                | Error::Unavailable { .. }
                | Error::NoBlockingConnection { .. }
                | Error::NoRuntime { .. }
        )
    }
}

/// The error a loading call returns when the loader failed.
///
/// The caller whose loader ran gets its own error back ([`LoadError::Own`]);
/// callers that waited for that same load in this process get the same error,
/// shared ([`LoadError::Shared`]). Loader errors are never cached.
#[derive(Debug)]
pub enum LoadError<E> {
    /// This caller's own loader failed.
    Own(E),
    /// Another caller's loader failed while this caller waited for it.
    Shared(std::sync::Arc<E>),
    /// The loader ran longer than the hard timeout and there was no expired
    /// value to serve instead (see `Settings::hard_timeout`).
    TimedOut(std::time::Duration),
}

impl<E> LoadError<E> {
    /// The loader's error (this caller's own, or the one it waited for);
    /// `None` for a timeout.
    pub fn loader_error(&self) -> Option<&E> {
        match self {
            LoadError::Own(error) => Some(error),
            LoadError::Shared(shared) => Some(shared),
            LoadError::TimedOut(_) => None,
        }
    }

    /// The loader's error, owned when possible and cloned from the shared
    /// one otherwise; `None` for a timeout.
    pub fn into_inner(self) -> Option<E>
    where
        E: Clone,
    {
        match self {
            LoadError::Own(error) => Some(error),
            LoadError::Shared(shared) => Some(std::sync::Arc::unwrap_or_clone(shared)),
            LoadError::TimedOut(_) => None,
        }
    }
}

/// Transparent for the loader's errors: a `LoadError` displays as the
/// loader's error and has its source, so an error chain (`anyhow`'s `{:#}`)
/// prints each cause once.
impl<E: std::fmt::Display> std::fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::TimedOut(after) => write!(f, "the loader did not finish within {after:?}"),
            LoadError::Own(error) => std::fmt::Display::fmt(error, f),
            LoadError::Shared(error) => std::fmt::Display::fmt(&**error, f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.loader_error()?.source()
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Displays an error and its causes, `a: b: c`, for log lines (whose
/// readers have no error chain to walk).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many times `needle` occurs in `haystack`.
    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn each_cause_is_printed_once_in_an_error_chain() {
        // (A RedisError made from an io::Error displays that error and also
        // returns it as its source: redis-rs's own doubling, not ours.)
        let refused = redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection refused",
            "by 127.0.0.1:1".to_owned(),
        ));
        let error = anyhow::Error::new(Error::Redis {
            command: "GET",
            key: "cat:1".into(),
            source: refused,
        });
        let chain = format!("{error:#}");
        assert_eq!(count(&chain, "connection refused"), 1, "{chain}");
        assert!(
            chain.starts_with("redis GET on `cat:1` failed: "),
            "{chain}"
        );

        let connect = Error::Connect {
            url: "redis://u:***@host".into(),
            source: redis::Client::open("nonsense://").expect_err("a bad scheme"),
        };
        let chain = format!("{:#}", anyhow::Error::new(connect));
        assert!(chain.starts_with("cannot connect to redis with `redis://u:***@host`: "));
        let (_, first_cause) = chain.split_once(": ").expect("a cause");
        assert_eq!(count(&chain, first_cause), 1, "{chain}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the database is down")]
    struct DbDown(#[source] std::io::Error);

    #[test]
    fn a_load_error_is_transparent() {
        let own = LoadError::Own(DbDown(std::io::Error::other("socket closed")));
        let chain = format!("{:#}", anyhow::Error::new(own));
        assert_eq!(chain, "the database is down: socket closed");
        let shared = LoadError::Shared(std::sync::Arc::new(DbDown(std::io::Error::other("x"))));
        assert_eq!(
            format!("{:#}", anyhow::Error::new(shared)),
            "the database is down: x"
        );
    }

    #[test]
    fn codec_errors_and_unreadable_values_are_errors_with_causes() {
        let error = crate::Codec::MessagePack
            .decode::<u32>(b"\xa3abc")
            .expect_err("a string is not a u32");
        let unreadable = crate::Unreadable::Payload(error);
        let chain = format!("{:#}", anyhow::Error::new(unreadable));
        assert!(
            chain.starts_with(
                "payload does not decode: MessagePack cannot decode the stored bytes: "
            ),
            "{chain}"
        );
        let nan = crate::Codec::Json
            .encode(&f64::NAN)
            .expect_err("JSON has no NaN");
        assert_eq!(
            format!("{:#}", anyhow::Error::new(nan)),
            "JSON cannot encode the value: JSON cannot represent NaN or an infinite float"
        );
    }

    #[test]
    fn the_chain_helper_prints_every_cause() {
        let error = LoadError::Own(DbDown(std::io::Error::other("socket closed")));
        assert_eq!(
            Chain(&error).to_string(),
            "the database is down: socket closed"
        );
    }
}
