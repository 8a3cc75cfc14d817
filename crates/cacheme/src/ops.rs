//! For operating tools (the `cacheme` command-line tool, scripts, tests):
//! where a cache keeps things in Redis, and how to read them without the
//! value's Rust type.
//!
//! ```
//! use cacheme::ops;
//! assert_eq!(ops::value_key("CM:", "cat:1"), "CM:{cat:1}");
//! assert_eq!(ops::lease_key("CM:", "cat:1"), "CM:{cat:1}:lease");
//! assert_eq!(ops::cache_key_of("CM:", "CM:{cat:1}"), Some("cat:1"));
//! assert_eq!(ops::cache_key_of("CM:", "CM:{cat:1}:lease"), None);
//! ```
//!
//! The layout is in `docs/data-model.md`; fleet stats in
//! `docs/operations.md`.

use crate::codec::Codec;
use crate::envelope::{Dependency, Envelope, State, Stored, Unreadable};
use crate::events::{Invalidated, LOG_FIELD, SequenceKeys};
use crate::key::{StoreKeys, escape_glob};

pub use crate::stats::fleet::{
    FleetKeys, MAX_PROCESSES, NodeReport, ProcessReport, max_age, read_reports,
};

/// The Redis key of the value of cache key `key`: `{prefix}{key}`.
pub fn value_key(prefix: &str, key: &str) -> String {
    StoreKeys::new(prefix, key).value().to_owned()
}

/// The Redis key of the lease of cache key `key`: `{prefix}{key}:lease`.
pub fn lease_key(prefix: &str, key: &str) -> String {
    StoreKeys::new(prefix, key).lease()
}

/// The cache key of a value key found in Redis, if `redis_key` is one of
/// this prefix's value keys (not a lease, not the invalidation sequence,
/// not the fleet stats).
pub fn cache_key_of<'k>(prefix: &str, redis_key: &'k str) -> Option<&'k str> {
    let key = redis_key
        .strip_prefix(prefix)?
        .strip_prefix('{')?
        .strip_suffix('}')?;
    (!key.contains('}')).then_some(key)
}

/// The `SCAN MATCH` glob of every value and lease key under `prefix` (it
/// matches the cache's own bookkeeping keys too: filter with [`cache_key_of`]).
pub fn scan_all_glob(prefix: &str) -> String {
    format!("{}\\{{*", escape_glob(prefix))
}

/// The `SCAN MATCH` glob of the value and lease keys whose cache keys match
/// the Redis glob `pattern` (filter with [`cache_key_of`] and
/// [`glob_match`]).
pub fn scan_glob(prefix: &str, pattern: &str) -> String {
    crate::key::scan_glob(prefix, pattern)
}

/// Redis's glob matching, as `SCAN MATCH` does it.
///
/// ```
/// assert!(cacheme::ops::glob_match("cat:*", "cat:1"));
/// assert!(!cacheme::ops::glob_match("cat:?", "cat:10"));
/// ```
pub fn glob_match(pattern: &str, text: &str) -> bool {
    crate::key::glob_match(pattern.as_bytes(), text.as_bytes())
}

/// `url` with its password replaced by `***`, for messages.
///
/// ```
/// assert_eq!(cacheme::ops::redact_url("redis://app:secret@h:6379/"), "redis://app:***@h:6379/");
/// ```
pub fn redact_url(url: &str) -> String {
    crate::settings::redact(url)
}

/// What a value key holds, decoded without the value's type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Inspected {
    /// A value.
    Value(InspectedValue),
    /// A placeholder: a caller holds the lease of this cold key and loads it.
    Loading {
        /// The loader's lease token.
        token: String,
        /// Callers wait for the fill.
        waiters: bool,
    },
}

/// A stored value's envelope, decoded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InspectedValue {
    /// `fresh`, or `stale` (invalidated in place).
    pub state: &'static str,
    /// `msgpack` or `json`.
    pub codec: &'static str,
    /// When it was written, in ms since the Unix epoch.
    pub written_at_ms: u64,
    /// The invalidation sequence number its loader had seen (its claim).
    pub claim_seq: u64,
    /// Past this (ms since the epoch) it is kept only for the fail-safe; 0: no limit.
    pub fresh_until_ms: u64,
    /// The tag it was written under.
    pub tag: Option<String>,
    /// Its dependency groups.
    pub groups: Vec<String>,
    /// The whole stored size, in bytes.
    pub size: usize,
    /// The payload's size, in bytes.
    pub payload_size: usize,
    /// The payload as JSON, when it decodes without its type (MessagePack
    /// maps with string keys, arrays, numbers, strings...).
    pub payload: Option<serde_json::Value>,
}

/// Decode what a value key holds.
///
/// ```
/// use cacheme::ops::{self, Inspected};
/// use cacheme::__private::wire::{Dependency, Header, seal};
/// let payload = cacheme::Codec::MessagePack.encode(&("Tom", 3)).expect("encodes");
/// let deps = [Dependency::Tag("cats"), Dependency::Group("user:7")];
/// let header = Header { codec: cacheme::Codec::MessagePack, written_at_ms: 1, claim_seq: 2, fresh_until_ms: 0, dependencies: &deps };
/// let bytes = seal(&header, &payload).expect("small");
/// let Inspected::Value(value) = ops::inspect(&bytes).expect("ours") else { panic!("a value") };
/// assert_eq!((value.state, value.codec, value.tag.as_deref()), ("fresh", "msgpack", Some("cats")));
/// assert_eq!(value.groups, ["user:7"]);
/// assert_eq!(value.payload, Some(serde_json::json!(["Tom", 3])));
/// ```
///
/// # Errors
///
/// The bytes are not ours (foreign, truncated, another format version).
pub fn inspect(bytes: &[u8]) -> Result<Inspected, Unreadable> {
    match Stored::parse(bytes)? {
        Stored::Loading { token, waiters } => Ok(Inspected::Loading {
            token: String::from_utf8_lossy(token).into_owned(),
            waiters,
        }),
        Stored::Value(envelope) => Ok(Inspected::Value(inspect_envelope(&envelope, bytes.len()))),
    }
}

fn inspect_envelope(envelope: &Envelope<'_>, size: usize) -> InspectedValue {
    let mut tag = None;
    let mut groups = Vec::new();
    for dependency in envelope.dependencies() {
        match dependency {
            Dependency::Tag(name) => tag = Some(name.to_owned()),
            Dependency::Group(name) => groups.push(name.to_owned()),
        }
    }
    let bytes = envelope.payload_bytes().ok();
    let bytes = bytes.as_deref().unwrap_or_default();
    let payload = match envelope.codec {
        Codec::MessagePack => rmp_serde::from_slice(bytes).ok(),
        Codec::Json => serde_json::from_slice(bytes).ok(),
    };
    InspectedValue {
        state: match envelope.state {
            State::Fresh => "fresh",
            State::Stale => "stale",
        },
        codec: match envelope.codec {
            Codec::MessagePack => "msgpack",
            Codec::Json => "json",
        },
        written_at_ms: envelope.written_at_ms,
        claim_seq: envelope.claim_seq,
        fresh_until_ms: envelope.fresh_until_ms,
        tag,
        groups,
        size,
        payload_size: envelope.payload.len(),
        payload,
    }
}

/// The tag and groups of stored bytes (a value's), without decoding the
/// payload; `None` for a placeholder or bytes that are not ours.
pub fn dependencies_of(bytes: &[u8]) -> Option<(Option<String>, Vec<String>, &'static str)> {
    let Ok(Stored::Value(envelope)) = Stored::parse(bytes) else {
        return None;
    };
    let value = inspect_envelope(&envelope, bytes.len());
    Some((value.tag, value.groups, value.state))
}

/// The Redis keys of the invalidation sequence: its counter and its log
/// (a stream, entry ID `<seq>-1`, field [`LOG_ENTRY_FIELD`]).
pub fn invalidation_keys(prefix: &str) -> (String, String) {
    let keys = SequenceKeys::new(prefix);
    (keys.seq, keys.log)
}

/// The stream field of an invalidation log entry that holds its payload.
pub const LOG_ENTRY_FIELD: &str = LOG_FIELD;

/// One entry of the invalidation log, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedInvalidation {
    /// Cache keys marked stale or deleted.
    pub keys: Vec<String>,
    /// Tags invalidated (their values are never served again).
    pub tags: Vec<String>,
    /// Groups invalidated (their values are stale).
    pub groups: Vec<String>,
    /// A pattern invalidation.
    pub everything: bool,
}

/// Decode a log entry's payload; `None` when this build cannot read it.
pub fn parse_logged_invalidation(payload: &[u8]) -> Option<LoggedInvalidation> {
    let Invalidated {
        keys,
        tags,
        groups,
        everything,
        ..
    } = Invalidated::parse(payload)?;
    Some(LoggedInvalidation {
        keys,
        tags,
        groups,
        everything,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_keys_are_not_cache_keys() {
        assert_eq!(cache_key_of("CM:", "CM:{inv}:seq"), None);
        assert_eq!(cache_key_of("CM:", "CM:{stats}:procs"), None);
        assert_eq!(cache_key_of("CM:", "OTHER:{a}"), None);
        assert_eq!(cache_key_of("CM:", "CM:{a:b}"), Some("a:b"));
        assert_eq!(scan_all_glob("C*M:"), "C\\*M:\\{*");
    }

    #[test]
    fn placeholders_and_foreign_bytes() {
        let placeholder = crate::envelope::placeholder("tok");
        assert_eq!(
            inspect(&placeholder),
            Ok(Inspected::Loading {
                token: "tok".into(),
                waiters: false
            })
        );
        assert_eq!(inspect(b"hello"), Err(Unreadable::Foreign));
        assert_eq!(dependencies_of(&placeholder), None);
    }

    #[test]
    fn log_payloads_decode() {
        let invalidated = Invalidated {
            tags: vec!["cats".into()],
            groups: vec!["user:1".into()],
            ..Invalidated::default()
        };
        let logged = parse_logged_invalidation(&invalidated.payload()).expect("ours");
        assert_eq!(
            (logged.tags, logged.groups),
            (vec!["cats".to_owned()], vec!["user:1".to_owned()])
        );
        assert_eq!(parse_logged_invalidation(b"\xff"), None);
    }
}
