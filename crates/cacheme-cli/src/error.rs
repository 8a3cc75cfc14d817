//! What can go wrong, with what the user needs to fix it.

use std::fmt::Write;

/// Errors of the `cacheme` tool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The URL does not parse.
    #[error("invalid redis URL `{url}`")]
    BadUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// The server cannot be reached.
    #[error("cannot reach redis at `{url}`")]
    Unreachable {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// A command failed on the server.
    #[error("redis {command} failed")]
    Redis {
        command: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// The library refused or failed.
    #[error("{what}")]
    Cache {
        what: &'static str,
        #[source]
        source: cacheme::Error,
    },
    /// A wrong combination of options.
    #[error("{0}")]
    Usage(&'static str),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// The message with its causes: `a: b: c`.
    pub(crate) fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            // (Some errors repeat their source in their own message.)
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                let _ = write!(text, ": {cause_text}");
            }
            source = cause.source();
        }
        text
    }

    /// 2 for usage errors (like clap's), 1 otherwise.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// `map_err` for a failed Redis command.
pub(crate) fn redis(command: &'static str) -> impl Fn(redis::RedisError) -> CliError {
    move |source| CliError::Redis { command, source }
}
