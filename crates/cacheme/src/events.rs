//! The event channel and the invalidation log: what goes over them, in one
//! place (the Lua scripts get these facts from [`lua_prelude`]).
//!
//! One pub/sub channel per cache, `{prefix}{inv}:events`, carries two kinds
//! of message:
//!
//! - `F<value key>`: the key was filled, or its lease released or revoked;
//!   callers waiting for it look again.
//! - `I<seq> <payload>`: invalidation number `seq` of the sequence; the
//!   payload (MessagePack) says what it invalidated ([`Invalidated`]).
//!
//! The same payloads are kept in the invalidation log, a capped stream
//! `{prefix}{inv}:log` whose entry IDs are `<seq>-1`, so that a process that
//! missed messages (a gap in the sequence, a reconnect, a restart) reads
//! them back. The sequence counter is `{prefix}{inv}:seq`. The three share
//! the hash tag `{inv}`, so the script that numbers, logs and announces an
//! invalidation touches one Redis Cluster slot.

use serde::{Deserialize, Serialize};

use crate::stamps::Entry;

/// First byte of a wake-up message.
pub(crate) const WAKE: u8 = b'F';
/// First byte of an invalidation message.
pub(crate) const INVALIDATED: u8 = b'I';
/// The field that holds the payload in a log entry.
pub(crate) const LOG_FIELD: &str = "e";

/// The names of a cache's sequence keys and channel.
#[derive(Debug, Clone)]
pub(crate) struct SequenceKeys {
    /// The counter.
    pub(crate) seq: String,
    /// The capped log of recent invalidations.
    pub(crate) log: String,
    /// The event channel.
    pub(crate) channel: String,
}

impl SequenceKeys {
    pub(crate) fn new(prefix: &str) -> Self {
        SequenceKeys {
            seq: format!("{prefix}{{inv}}:seq"),
            log: format!("{prefix}{{inv}}:log"),
            channel: format!("{prefix}{{inv}}:events"),
        }
    }
}

/// What one invalidation did, as other processes need to know it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Invalidated {
    /// The process that invalidated (random per process), for logs.
    #[serde(default)]
    pub(crate) publisher: u64,
    /// Cache keys whose values were marked stale or deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) keys: Vec<String>,
    /// Tags invalidated (their values are deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// Dependency groups invalidated (their values are stale).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<String>,
    /// A pattern invalidation: local tiers drop everything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) everything: bool,
}

impl Invalidated {
    /// The payload of the message and of the log entry.
    pub(crate) fn payload(&self) -> Vec<u8> {
        // Plain strings, integers and booleans: encoding cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Read a payload. `None` for bytes this build cannot read.
    pub(crate) fn parse(payload: &[u8]) -> Option<Invalidated> {
        rmp_serde::from_slice(payload).ok()
    }

    /// Its entry of the invalidation sequence, numbered `seq`.
    pub(crate) fn entry(&self, seq: u64) -> Entry {
        Entry {
            seq,
            tags: self.tags.clone(),
            groups: self.groups.clone(),
        }
    }

    /// Nothing to tell anyone.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.tags.is_empty() && self.groups.is_empty() && !self.everything
    }
}

/// A message received on the event channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// Wake the callers waiting for this value key.
    Wake(&'a str),
    /// Invalidation number `seq`; `None` when its payload is unreadable
    /// (written by a newer build): the receiver must then assume the worst.
    Invalidated(u64, Option<Invalidated>),
    /// Not ours.
    Other,
}

impl<'a> Message<'a> {
    /// Parse a message of the event channel.
    pub(crate) fn parse(bytes: &'a [u8]) -> Self {
        match bytes.split_first() {
            Some((&WAKE, key)) => std::str::from_utf8(key).map_or(Message::Other, Message::Wake),
            Some((&INVALIDATED, rest)) => {
                let Some(space) = rest.iter().position(|&b| b == b' ') else {
                    return Message::Other;
                };
                let seq = std::str::from_utf8(&rest[..space])
                    .ok()
                    .and_then(|digits| digits.parse().ok());
                match seq {
                    Some(seq) => Message::Invalidated(seq, Invalidated::parse(&rest[space + 1..])),
                    None => Message::Other,
                }
            }
            _ => Message::Other,
        }
    }
}

/// The sequence number of a log entry ID (`<seq>-1`).
pub(crate) fn seq_of_log_id(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// The facts above as Lua definitions, for the scripts.
pub(crate) fn lua_prelude() -> String {
    format!(
        "local WAKE, INVALIDATED, LOG_FIELD = '{}', '{}', '{LOG_FIELD}'\n",
        WAKE as char, INVALIDATED as char
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let invalidated = Invalidated {
            publisher: 7,
            keys: vec!["cat:1".into()],
            tags: vec!["cats".into()],
            groups: vec!["user:1".into()],
            everything: false,
        };
        let mut message = format!("I{} ", 42).into_bytes();
        message.extend(invalidated.payload());
        assert_eq!(
            Message::parse(&message),
            Message::Invalidated(42, Some(invalidated.clone()))
        );
        assert_eq!(Message::parse(b"FCM:{cat:1}"), Message::Wake("CM:{cat:1}"));
        assert_eq!(
            Message::parse(b"I43 \xff\xfe"),
            Message::Invalidated(43, None)
        );
        assert_eq!(Message::parse(b"Ixx payload"), Message::Other);
        assert_eq!(Message::parse(b"hello"), Message::Other);
        assert_eq!(Message::parse(b""), Message::Other);
        assert_eq!(seq_of_log_id("42-1"), Some(42));
        let entry = invalidated.entry(42);
        assert_eq!(entry.tags, ["cats"]);
        assert_eq!(entry.groups, ["user:1"]);
    }

    #[test]
    fn the_lua_prelude_names_the_message_kinds() {
        assert_eq!(
            lua_prelude(),
            "local WAKE, INVALIDATED, LOG_FIELD = 'F', 'I', 'e'\n"
        );
    }
}
