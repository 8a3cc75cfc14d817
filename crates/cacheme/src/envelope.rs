//! Bytes on the wire: what a value key holds.
//!
//! A value key holds either a **value** (a header, the value's dependencies,
//! then the serialized payload) or a **placeholder**: the lease of the one
//! caller loading a cold key, written by the read that found the key empty
//! (`SET key placeholder NX PX lease GET`), replaced by the fill.
//!
//! ```text
//! value                                   placeholder
//! offset size field                       offset size field
//! 0      1    magic 0xCE                  0      1    magic 0xCE
//! 1      1    format version 2            1      1    format version 2
//! 2      1    state: 0 fresh, 1 stale     2      1    state: 2 loading
//! 3      1    codec: 0 MessagePack,       3      1    waiters: 0 none, 1 some
//!             1 JSON; + 0x80 when the     4      ..   the loader's lease token
//!             payload is LZ4-compressed
//!             (size-prepended)
//! 4      8    write time, ms since the
//!             Unix epoch (big endian)
//! 12     8    claim sequence (big endian)
//! 20     8    fresh until, ms since the
//!             Unix epoch (0: no limit)
//! 28     2    dependency count n
//! 30     ..   n × (kind 't' tag | 'g' group, length u16, name)
//! ..     ..   payload
//! ```
//!
//! The **claim sequence** is the invalidation sequence number the loader's
//! process had seen when it took the lease; the **dependencies** are the
//! tag and the dependency groups (invalid keys) of the value. A reader serves
//! the value only if none of them was invalidated after the claim sequence
//! (see [`crate::stamps`]): that is how a tag or a group is invalidated in
//! O(1), and how a load that was in flight when its group was invalidated is
//! never served.
//!
//! Invalidating a key flips the state byte in place (`SETRANGE key 2 "\x01"`),
//! keeping the value and its TTL. Anything under our key that does not parse
//! (including values of format 1, written by cacheme before protocol v2) is
//! [`Unreadable`]: a miss, reloaded and overwritten.

use crate::codec::{Codec, CodecError};

/// First byte of every value and placeholder.
pub const MAGIC: u8 = 0xCE;
/// The format this build writes and reads.
pub const VERSION: u8 = 2;
/// Offset of the state byte (what `mark_stale` rewrites).
pub const STATE_OFFSET: usize = 2;
/// Offset of a placeholder's waiters flag (set by callers that wait for it).
pub(crate) const WAITERS_OFFSET: usize = 3;
/// Offset of a placeholder's lease token.
pub(crate) const TOKEN_OFFSET: usize = 4;
/// Length of a value's fixed header (before the dependencies).
pub const HEADER_LEN: usize = 30;
/// Offset of the fresh-until time (what a fail-safe throttle rewrites).
pub(crate) const FRESH_UNTIL_OFFSET: usize = 20;
/// State byte of a fresh value.
pub const FRESH: u8 = 0;
/// State byte of a value that was invalidated in place.
pub const STALE: u8 = 1;
/// State byte of a placeholder: the key is being loaded.
pub const LOADING: u8 = 2;
/// Kind byte of a tag dependency.
pub(crate) const TAG: u8 = b't';
/// Kind byte of a dependency group.
pub(crate) const GROUP: u8 = b'g';

/// Whether a stored value is current or was invalidated in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Written by a load and not invalidated since.
    Fresh,
    /// Invalidated in place: readers with stale on may still serve it.
    Stale,
}

/// What a value depends on: the tag it was written under, or a dependency
/// group (Python cacheme's invalid key). Invalidating either invalidates the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency<'a> {
    /// A tag: its invalidation deletes the value (it is never served again).
    Tag(&'a str),
    /// A dependency group: its invalidation makes the value stale.
    Group(&'a str),
}

impl<'a> Dependency<'a> {
    /// The dependency's name as the invalidation sequence records it:
    /// `t:<tag>` or `g:<group>`.
    pub fn field(&self) -> String {
        match self {
            Dependency::Tag(tag) => format!("t:{tag}"),
            Dependency::Group(group) => format!("g:{group}"),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Dependency::Tag(_) => TAG,
            Dependency::Group(_) => GROUP,
        }
    }

    fn name(&self) -> &'a str {
        match self {
            Dependency::Tag(name) | Dependency::Group(name) => name,
        }
    }
}

/// What a value key holds, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored<'a> {
    /// A value.
    Value(Envelope<'a>),
    /// A placeholder: a caller holds the lease of this cold key and loads it.
    Loading {
        /// The loader's lease token.
        token: &'a [u8],
        /// Someone waits for the fill (the filler then announces it).
        waiters: bool,
    },
}

/// The parsed header of a stored value, borrowed from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Fresh or stale.
    pub state: State,
    /// How the payload is serialized.
    pub codec: Codec,
    /// When the value was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
    /// The invalidation sequence the loader had seen when it claimed the key.
    pub claim_seq: u64,
    /// Past this time (ms since the Unix epoch) the value is expired: kept
    /// only to be served if its reload fails (fail-safe). 0: no limit.
    pub fresh_until_ms: u64,
    deps: &'a [u8],
    deps_count: usize,
    /// The payload is LZ4-compressed (its size prepended): see
    /// [`Envelope::payload_bytes`].
    pub compressed: bool,
    /// The serialized value (compressed when `compressed`).
    pub payload: &'a [u8],
}

/// The bit of the codec byte that marks a compressed payload.
const COMPRESSED: u8 = 0x80;

/// Why stored bytes could not be read as one of our values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreadable {
    /// Shorter than the header.
    Truncated {
        /// How many bytes there were.
        len: usize,
    },
    /// Does not start with our magic byte: another program wrote this key.
    Foreign,
    /// Written by a newer cacheme with a format this build does not know.
    NewerFormat {
        /// The version byte found.
        version: u8,
    },
    /// Written by an older cacheme (format 1, before protocol v2): reloaded
    /// and overwritten like any other unreadable value.
    OlderFormat {
        /// The version byte found.
        version: u8,
    },
    /// A state or codec byte with no meaning, or a damaged dependency list.
    BadHeader,
    /// The header is fine, but the payload does not decode into the expected
    /// type (the struct changed, or the bytes were damaged).
    Payload(CodecError),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Truncated { len } => write!(f, "truncated envelope ({len} bytes)"),
            Unreadable::Foreign => f.write_str("not a cacheme value (foreign bytes)"),
            Unreadable::NewerFormat { version } => {
                write!(
                    f,
                    "envelope format {version} is newer than this build's {VERSION}"
                )
            }
            Unreadable::OlderFormat { version } => {
                write!(
                    f,
                    "envelope format {version} is older than this build's {VERSION}"
                )
            }
            Unreadable::BadHeader => f.write_str("envelope header is damaged"),
            Unreadable::Payload(_) => f.write_str("payload does not decode"),
        }
    }
}

impl std::error::Error for Unreadable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unreadable::Payload(error) => Some(error),
            _ => None,
        }
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    let pair = bytes.get(at..at + 2)?;
    Some(usize::from(u16::from_be_bytes([pair[0], pair[1]])))
}

impl<'a> Stored<'a> {
    /// Parse what a value key holds.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Unreadable> {
        let Some(&magic) = bytes.first() else {
            return Err(Unreadable::Truncated { len: 0 });
        };
        if magic != MAGIC {
            return Err(Unreadable::Foreign);
        }
        let Some(&version) = bytes.get(1) else {
            return Err(Unreadable::Truncated { len: bytes.len() });
        };
        if version > VERSION {
            return Err(Unreadable::NewerFormat { version });
        }
        if version < VERSION {
            return Err(Unreadable::OlderFormat { version });
        }
        match bytes.get(STATE_OFFSET) {
            None => Err(Unreadable::Truncated { len: bytes.len() }),
            Some(&LOADING) => match bytes.get(WAITERS_OFFSET) {
                Some(&waiters) if bytes.len() > TOKEN_OFFSET => Ok(Stored::Loading {
                    token: &bytes[TOKEN_OFFSET..],
                    waiters: waiters != 0,
                }),
                _ => Err(Unreadable::Truncated { len: bytes.len() }),
            },
            Some(_) => Envelope::parse(bytes).map(Stored::Value),
        }
    }
}

impl<'a> Envelope<'a> {
    /// Parse a stored value (not a placeholder).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Unreadable> {
        if bytes.len() < HEADER_LEN {
            return Err(match bytes.first() {
                Some(&magic) if magic != MAGIC => Unreadable::Foreign,
                _ => Unreadable::Truncated { len: bytes.len() },
            });
        }
        if bytes[0] != MAGIC {
            return Err(Unreadable::Foreign);
        }
        match bytes[1] {
            VERSION => {}
            version if version > VERSION => return Err(Unreadable::NewerFormat { version }),
            version => return Err(Unreadable::OlderFormat { version }),
        }
        let state = match bytes[STATE_OFFSET] {
            FRESH => State::Fresh,
            STALE => State::Stale,
            _ => return Err(Unreadable::BadHeader),
        };
        let compressed = bytes[3] & COMPRESSED != 0;
        let codec = Codec::from_byte(bytes[3] & !COMPRESSED).ok_or(Unreadable::BadHeader)?;
        let deps_count = u16_at(bytes, 28).ok_or(Unreadable::BadHeader)?;
        // Walk the dependency list once to find where the payload starts.
        let mut at = HEADER_LEN;
        for _ in 0..deps_count {
            if !matches!(bytes.get(at), Some(&TAG | &GROUP)) {
                return Err(Unreadable::BadHeader);
            }
            let len = u16_at(bytes, at + 1).ok_or(Unreadable::BadHeader)?;
            at += 3 + len;
            if at > bytes.len() {
                return Err(Unreadable::BadHeader);
            }
        }
        Ok(Envelope {
            state,
            codec,
            written_at_ms: u64_at(bytes, 4),
            claim_seq: u64_at(bytes, 12),
            fresh_until_ms: u64_at(bytes, FRESH_UNTIL_OFFSET),
            deps: &bytes[HEADER_LEN..at],
            deps_count,
            compressed,
            payload: &bytes[at..],
        })
    }

    /// The value's dependencies: its tag and its groups. Names that are not
    /// UTF-8 (damaged bytes) are skipped.
    pub fn dependencies(&self) -> impl Iterator<Item = Dependency<'a>> + 'a {
        let mut rest = self.deps;
        (0..self.deps_count).filter_map(move |_| {
            let (&kind, tail) = rest.split_first()?;
            let len = u16_at(tail, 0)?;
            let name = tail.get(2..2 + len)?;
            rest = &tail[2 + len..];
            let name = std::str::from_utf8(name).ok()?;
            Some(if kind == TAG {
                Dependency::Tag(name)
            } else {
                Dependency::Group(name)
            })
        })
    }

    /// The serialized value, decompressed if it was compressed.
    pub fn payload_bytes(&self) -> Result<std::borrow::Cow<'a, [u8]>, Unreadable> {
        if !self.compressed {
            return Ok(std::borrow::Cow::Borrowed(self.payload));
        }
        lz4_flex::decompress_size_prepended(self.payload)
            .map(std::borrow::Cow::Owned)
            .map_err(|error| Unreadable::Payload(CodecError::decompress(self.codec, error)))
    }

    /// Decode the payload into `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, Unreadable> {
        self.codec
            .decode(&self.payload_bytes()?)
            .map_err(Unreadable::Payload)
    }
}

/// What goes into a value's header besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// How the payload was serialized.
    pub codec: Codec,
    /// When the value is written (ms since the Unix epoch).
    pub written_at_ms: u64,
    /// The invalidation sequence the loader had seen when it claimed the key.
    pub claim_seq: u64,
    /// When the value expires but may still be served if its reload fails
    /// (fail-safe); 0: no such limit.
    pub fresh_until_ms: u64,
    /// Its tag and groups. Names longer than 65,535 bytes are not recorded
    /// (such a value is not stored: see [`seal`]).
    pub dependencies: &'a [Dependency<'a>],
}

/// The same value with another fresh-until time (a fail-safe throttle:
/// the value served again for a while after its reload failed).
pub(crate) fn with_fresh_until(bytes: &[u8], fresh_until_ms: u64) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    if bytes.len() >= HEADER_LEN {
        bytes[FRESH_UNTIL_OFFSET..FRESH_UNTIL_OFFSET + 8]
            .copy_from_slice(&fresh_until_ms.to_be_bytes());
    }
    bytes
}

/// Build a fresh value around an already serialized payload. `None` when a
/// dependency name is longer than 65,535 bytes or there are more than
/// 65,535 of them (the value is then not stored).
pub fn seal(header: &Header<'_>, payload: &[u8]) -> Option<Vec<u8>> {
    seal_payload(header, payload, false)
}

/// [`seal`] with the payload compressed (LZ4, size prepended) when it is at
/// least `threshold` bytes long and compression makes it shorter.
pub(crate) fn seal_compressing(
    header: &Header<'_>,
    payload: &[u8],
    threshold: usize,
) -> Option<Vec<u8>> {
    if payload.len() >= threshold {
        let compressed = lz4_flex::compress_prepend_size(payload);
        if compressed.len() < payload.len() {
            return seal_payload(header, &compressed, true);
        }
    }
    seal_payload(header, payload, false)
}

fn seal_payload(header: &Header<'_>, payload: &[u8], compressed: bool) -> Option<Vec<u8>> {
    let deps_len: usize = header.dependencies.iter().map(|d| 3 + d.name().len()).sum();
    let mut bytes = Vec::with_capacity(HEADER_LEN + deps_len + payload.len());
    let codec = header.codec.byte() | if compressed { COMPRESSED } else { 0 };
    bytes.extend_from_slice(&[MAGIC, VERSION, FRESH, codec]);
    bytes.extend_from_slice(&header.written_at_ms.to_be_bytes());
    bytes.extend_from_slice(&header.claim_seq.to_be_bytes());
    bytes.extend_from_slice(&header.fresh_until_ms.to_be_bytes());
    let count = u16::try_from(header.dependencies.len()).ok()?;
    bytes.extend_from_slice(&count.to_be_bytes());
    for dependency in header.dependencies {
        let name = dependency.name().as_bytes();
        let len = u16::try_from(name.len()).ok()?;
        bytes.push(dependency.kind());
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(name);
    }
    bytes.extend_from_slice(payload);
    Some(bytes)
}

/// A placeholder: the lease of `token` on a cold key, no waiters yet.
pub fn placeholder(token: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TOKEN_OFFSET + token.len());
    bytes.extend_from_slice(&[MAGIC, VERSION, LOADING, 0]);
    bytes.extend_from_slice(token.as_bytes());
    bytes
}

/// The facts above as Lua definitions, in front of every script, so that
/// the scripts and this module can never disagree (Lua strings are 1-based).
pub(crate) fn lua_prelude() -> String {
    format!(
        r"local HEAD = '\{MAGIC}\{VERSION}'
local STATE_AT, WAITERS_AT, TOKEN_AT, HEADER_LEN = {state}, {waiters}, {token}, {header}
local FRESH, STALE, LOADING = {FRESH}, {STALE}, {LOADING}
local function ours(v) return v and string.len(v) > TOKEN_AT and string.sub(v, 1, 2) == HEAD end
local function loading(v) return ours(v) and string.byte(v, STATE_AT) == LOADING end
local function loading_by(v, token) return loading(v) and string.sub(v, TOKEN_AT) == token end
local function is_value(v) return ours(v) and string.len(v) >= HEADER_LEN and string.byte(v, STATE_AT) ~= LOADING end
",
        state = STATE_OFFSET + 1,
        waiters = WAITERS_OFFSET + 1,
        token = TOKEN_OFFSET + 1,
        header = HEADER_LEN,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Cat {
        id: u32,
        name: String,
    }

    fn header<'a>(deps: &'a [Dependency<'a>]) -> Header<'a> {
        Header {
            codec: Codec::MessagePack,
            written_at_ms: 0x0102_0304_0506_0708,
            claim_seq: 9,
            fresh_until_ms: 0,
            dependencies: deps,
        }
    }

    #[test]
    fn golden_bytes() {
        let payload = Codec::MessagePack
            .encode(&Cat {
                id: 7,
                name: "Tom".into(),
            })
            .expect("a plain struct encodes");
        let deps = [Dependency::Tag("cats"), Dependency::Group("user:1")];
        let bytes = seal(&header(&deps), &payload).expect("short names");
        let expected: &[u8] = &[
            0xCE, 0x02, 0x00, 0x00, // magic, version, fresh, msgpack
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // write time
            0, 0, 0, 0, 0, 0, 0, 9, // claim sequence
            0, 0, 0, 0, 0, 0, 0, 0, // fresh until: no limit
            0, 2, // two dependencies
            b't', 0, 4, b'c', b'a', b't', b's', // tag "cats"
            b'g', 0, 6, b'u', b's', b'e', b'r', b':', b'1', // group "user:1"
            0x82, // map of 2
            0xA2, b'i', b'd', 0x07, // "id": 7
            0xA4, b'n', b'a', b'm', b'e', 0xA3, b'T', b'o', b'm', // "name": "Tom"
        ];
        assert_eq!(bytes, expected);
        let Stored::Value(envelope) = Stored::parse(&bytes).expect("golden bytes parse") else {
            panic!("a value, not a placeholder");
        };
        assert_eq!(envelope.state, State::Fresh);
        assert_eq!(envelope.written_at_ms, 0x0102_0304_0506_0708);
        assert_eq!(envelope.claim_seq, 9);
        assert_eq!(envelope.dependencies().collect::<Vec<_>>(), deps);
        assert_eq!(
            envelope.decode::<Cat>().expect("golden payload decodes"),
            Cat {
                id: 7,
                name: "Tom".into()
            }
        );
    }

    #[test]
    fn large_payloads_are_compressed_and_read_back() {
        let value: Vec<String> = (0..500).map(|i| format!("cat number {i}")).collect();
        let payload = Codec::MessagePack.encode(&value).expect("encodes");
        let plain = seal(&header(&[]), &payload).expect("no names");
        let small = seal_compressing(&header(&[]), &payload, usize::MAX).expect("no names");
        assert_eq!(small, plain, "under the threshold: unchanged");
        let packed = seal_compressing(&header(&[]), &payload, 1024).expect("no names");
        assert!(
            packed.len() * 3 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let Ok(Stored::Value(envelope)) = Stored::parse(&packed) else {
            panic!("a value");
        };
        assert!(envelope.compressed);
        assert_eq!(envelope.decode::<Vec<String>>(), Ok(value));
        // Damaged compressed bytes are unreadable, not a panic.
        let mut damaged = packed.clone();
        let at = damaged.len() - 10;
        damaged.truncate(at);
        let Ok(Stored::Value(envelope)) = Stored::parse(&damaged) else {
            panic!("a value");
        };
        assert!(envelope.decode::<Vec<String>>().is_err());
    }

    #[test]
    fn placeholders_carry_the_token_and_the_waiters_flag() {
        let mut bytes = placeholder("abc123");
        assert_eq!(
            Stored::parse(&bytes),
            Ok(Stored::Loading {
                token: b"abc123",
                waiters: false
            })
        );
        bytes[WAITERS_OFFSET] = 1;
        assert_eq!(
            Stored::parse(&bytes),
            Ok(Stored::Loading {
                token: b"abc123",
                waiters: true
            })
        );
        // A placeholder is never read as a value.
        assert_eq!(
            Envelope::parse(&bytes),
            Err(Unreadable::Truncated { len: 10 })
        );
    }

    #[test]
    fn json_codec_round_trips() {
        let payload = Codec::Json.encode(&vec![1, 2, 3]).expect("encodes");
        let bytes = seal(
            &Header {
                codec: Codec::Json,
                ..header(&[])
            },
            &payload,
        )
        .expect("no names");
        assert_eq!(&bytes[HEADER_LEN..], b"[1,2,3]");
        let envelope = Envelope::parse(&bytes).expect("parses");
        assert_eq!(
            envelope.decode::<Vec<i32>>().expect("decodes"),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn stale_flag_is_read() {
        let mut bytes = seal(&header(&[]), &[0xC0]).expect("no names");
        bytes[STATE_OFFSET] = STALE;
        assert_eq!(Envelope::parse(&bytes).expect("parses").state, State::Stale);
    }

    #[test]
    fn unreadable_inputs_are_classified() {
        assert_eq!(Stored::parse(b""), Err(Unreadable::Truncated { len: 0 }));
        assert_eq!(
            Stored::parse(&[MAGIC, VERSION, 0]),
            Err(Unreadable::Truncated { len: 3 })
        );
        assert_eq!(
            Stored::parse(b"hello world, not ours"),
            Err(Unreadable::Foreign)
        );
        assert_eq!(Stored::parse(b"{}"), Err(Unreadable::Foreign));
        let mut newer = seal(&header(&[]), &[0xC0]).expect("no names");
        newer[1] = 9;
        assert_eq!(
            Stored::parse(&newer),
            Err(Unreadable::NewerFormat { version: 9 })
        );
        // A value of protocol v1 (a 12-byte header) is an older format.
        let v1 = [MAGIC, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xC0];
        assert_eq!(
            Stored::parse(&v1),
            Err(Unreadable::OlderFormat { version: 1 })
        );
        let mut bad_state = seal(&header(&[]), &[0xC0]).expect("no names");
        bad_state[STATE_OFFSET] = 7;
        assert_eq!(Stored::parse(&bad_state), Err(Unreadable::BadHeader));
        let mut bad_codec = seal(&header(&[]), &[0xC0]).expect("no names");
        bad_codec[3] = 9;
        assert_eq!(Stored::parse(&bad_codec), Err(Unreadable::BadHeader));
        // A dependency list that runs past the end.
        let mut bad_deps = seal(&header(&[Dependency::Tag("t")]), &[]).expect("short");
        bad_deps.truncate(bad_deps.len() - 1);
        assert_eq!(Stored::parse(&bad_deps), Err(Unreadable::BadHeader));
    }

    #[test]
    fn payload_of_another_type_is_unreadable() {
        let payload = Codec::MessagePack
            .encode(&"just a string")
            .expect("encodes");
        let bytes = seal(&header(&[]), &payload).expect("no names");
        let envelope = Envelope::parse(&bytes).expect("header parses");
        assert!(matches!(
            envelope.decode::<Cat>(),
            Err(Unreadable::Payload(_))
        ));
    }

    #[test]
    fn the_lua_prelude_names_this_module_s_constants() {
        let prelude = lua_prelude();
        assert!(prelude.starts_with("local HEAD = '\\206\\2'"), "{prelude}");
        assert!(prelude.contains("local STATE_AT, WAITERS_AT, TOKEN_AT, HEADER_LEN = 3, 4, 5, 30"));
        assert!(prelude.contains("local FRESH, STALE, LOADING = 0, 1, 2"));
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(Stored::Value(envelope)) = Stored::parse(&bytes) {
                let _ = envelope.dependencies().count();
                let _ = envelope.decode::<Cat>();
            }
        }

        #[test]
        fn sealed_values_round_trip(
            tags in proptest::collection::vec("[a-z:]{0,8}", 0..3),
            groups in proptest::collection::vec("[a-z:0-9]{0,8}", 0..3),
            claim_seq: u64,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
        ) {
            let mut deps: Vec<Dependency<'_>> = tags.iter().map(|t| Dependency::Tag(t)).collect();
            deps.extend(groups.iter().map(|g| Dependency::Group(g)));
            let bytes = seal(&Header { claim_seq, ..header(&deps) }, &payload).expect("short");
            let envelope = Envelope::parse(&bytes).expect("sealed bytes parse");
            proptest::prop_assert_eq!(envelope.claim_seq, claim_seq);
            proptest::prop_assert_eq!(envelope.dependencies().collect::<Vec<_>>(), deps);
            proptest::prop_assert_eq!(envelope.payload, &payload[..]);
        }
    }
}
