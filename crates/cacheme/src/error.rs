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
    #[error("redis {command} on `{key}` failed: {source}")]
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
         inside a runtime, or use the blocking API (`.blocking()`)"
    )]
    NoRuntime {
        /// The command that could not be sent.
        command: &'static str,
    },

    /// The Redis URL or connection settings could not be used.
    #[error("cannot connect to redis with `{url}`: {source}")]
    Connect {
        /// The URL (password removed) that was given.
        url: String,
        /// Why the client rejected it.
        #[source]
        source: redis::RedisError,
    },

    /// A value could not be serialized for storage.
    #[error("cannot encode the value for `{key}`: {reason}")]
    Encode {
        /// The cache key of the value.
        key: String,
        /// What the serializer said.
        reason: String,
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
}

impl<E> LoadError<E> {
    /// The error, owned when possible and cloned from the shared one otherwise.
    pub fn into_inner(self) -> E
    where
        E: Clone,
    {
        match self {
            LoadError::Own(error) => error,
            LoadError::Shared(shared) => std::sync::Arc::unwrap_or_clone(shared),
        }
    }
}

impl<E> std::ops::Deref for LoadError<E> {
    type Target = E;
    fn deref(&self) -> &E {
        match self {
            LoadError::Own(error) => error,
            LoadError::Shared(shared) => shared,
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&**self, f)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self)
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
