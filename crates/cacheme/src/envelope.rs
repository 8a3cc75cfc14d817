//! Bytes on the wire: a 12-byte header in front of the serialized payload.
//!
//! ```text
//! offset  size  field
//! 0       1     magic, 0xCE ("cacheme envelope")
//! 1       1     format version, 1
//! 2       1     state: 0 fresh, 1 stale (flipped in place by invalidation)
//! 3       1     codec: 0 MessagePack (named fields), 1 JSON
//! 4       8     write time, milliseconds since the Unix epoch, big endian
//! 12      ..    payload
//! ```
//!
//! Invalidation flips the state byte with `SETRANGE key 2 "\x01"`, which keeps
//! the value and its TTL. Anything under our key that does not parse is
//! reported as [`Unreadable`] and treated as a miss by the protocol.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// First byte of every envelope.
pub const MAGIC: u8 = 0xCE;
/// The envelope format this build writes and reads.
pub const VERSION: u8 = 1;
/// Offset of the state byte (what `mark_stale` rewrites).
pub const STATE_OFFSET: usize = 2;
/// Length of the header in front of the payload.
pub const HEADER_LEN: usize = 12;
/// State byte of a fresh value.
pub const FRESH: u8 = 0;
/// State byte of a value that was invalidated in place.
pub const STALE: u8 = 1;

/// How payloads are serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack via `rmp-serde`, structs as maps (field names kept, so a
    /// changed struct is detected on decode instead of silently misread).
    #[default]
    MessagePack,
    /// JSON via `serde_json`: larger, readable with `redis-cli`.
    Json,
}

impl Codec {
    fn byte(self) -> u8 {
        match self {
            Codec::MessagePack => 0,
            Codec::Json => 1,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Codec::MessagePack),
            1 => Some(Codec::Json),
            _ => None,
        }
    }

    /// Serialize a value with this codec.
    ///
    /// ```
    /// use cacheme::Codec;
    /// assert_eq!(Codec::Json.encode(&[1, 2]).expect("a list encodes"), b"[1,2]");
    /// assert!(Codec::Json.encode(&f64::NAN).is_err()); // JSON has no NaN
    /// ```
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        let encoded = match self {
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(CodecError::boxed),
            // serde_json writes non-finite floats as `null`, which does not
            // read back: refuse them rather than store what cannot round-trip.
            Codec::Json if crate::nonfinite::contains_non_finite(value) => {
                Err(CodecError::boxed(NonFiniteFloat))
            }
            Codec::Json => serde_json::to_vec(value).map_err(CodecError::boxed),
        };
        encoded.map_err(|source| CodecError {
            codec: self,
            operation: CodecOperation::Encode,
            source,
        })
    }

    /// Deserialize a value with this codec.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        let decoded = match self {
            Codec::MessagePack => rmp_serde::from_slice(bytes).map_err(CodecError::boxed),
            Codec::Json => serde_json::from_slice(bytes).map_err(CodecError::boxed),
        };
        decoded.map_err(|source| CodecError {
            codec: self,
            operation: CodecOperation::Decode,
            source,
        })
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::MessagePack => "MessagePack",
            Codec::Json => "JSON",
        })
    }
}

/// A float JSON cannot hold.
#[derive(Debug)]
struct NonFiniteFloat;

impl std::fmt::Display for NonFiniteFloat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON cannot represent NaN or an infinite float")
    }
}

impl std::error::Error for NonFiniteFloat {}

/// Whether a [`CodecError`] happened while encoding or decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecOperation {
    /// Turning a value into bytes.
    Encode,
    /// Turning bytes into a value.
    Decode,
}

/// A value could not be serialized, or bytes could not be deserialized.
/// The serializer's own error is the [`source`](std::error::Error::source).
#[derive(Debug, Clone)]
pub struct CodecError {
    codec: Codec,
    operation: CodecOperation,
    source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
}

impl CodecError {
    fn boxed(
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> std::sync::Arc<dyn std::error::Error + Send + Sync> {
        std::sync::Arc::new(error)
    }

    /// The codec that failed.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Encoding or decoding.
    pub fn operation(&self) -> CodecOperation {
        self.operation
    }
}

impl PartialEq for CodecError {
    fn eq(&self, other: &Self) -> bool {
        self.codec == other.codec
            && self.operation == other.operation
            && self.source.to_string() == other.source.to_string()
    }
}

impl Eq for CodecError {}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.operation {
            CodecOperation::Encode => write!(f, "{} cannot encode the value", self.codec),
            CodecOperation::Decode => write!(f, "{} cannot decode the stored bytes", self.codec),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Whether a stored value is current or was invalidated in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Written by a load and not invalidated since.
    Fresh,
    /// Invalidated in place: readers with stale on may still serve it.
    Stale,
}

/// The parsed header of an envelope, borrowed from the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Fresh or stale.
    pub state: State,
    /// How the payload is serialized.
    pub codec: Codec,
    /// When the value was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
    /// The serialized value.
    pub payload: &'a [u8],
}

/// Why stored bytes could not be read as one of our values.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A state or codec byte with no meaning.
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
            Unreadable::BadHeader => f.write_str("envelope header has an unknown state or codec"),
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

impl<'a> Envelope<'a> {
    /// Parse the header of stored bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Unreadable> {
        if bytes.len() < HEADER_LEN {
            if bytes.first().is_some_and(|&b| b != MAGIC) {
                return Err(Unreadable::Foreign);
            }
            return Err(Unreadable::Truncated { len: bytes.len() });
        }
        if bytes[0] != MAGIC {
            return Err(Unreadable::Foreign);
        }
        if bytes[1] > VERSION {
            return Err(Unreadable::NewerFormat { version: bytes[1] });
        }
        if bytes[1] != VERSION {
            return Err(Unreadable::BadHeader);
        }
        let state = match bytes[STATE_OFFSET] {
            FRESH => State::Fresh,
            STALE => State::Stale,
            _ => return Err(Unreadable::BadHeader),
        };
        let codec = Codec::from_byte(bytes[3]).ok_or(Unreadable::BadHeader)?;
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[4..HEADER_LEN]);
        Ok(Envelope {
            state,
            codec,
            written_at_ms: u64::from_be_bytes(time),
            payload: &bytes[HEADER_LEN..],
        })
    }

    /// Decode the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Unreadable> {
        self.codec.decode(self.payload).map_err(Unreadable::Payload)
    }
}

/// Build a fresh envelope around an already serialized payload.
pub fn seal(codec: Codec, written_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&[MAGIC, VERSION, FRESH, codec.byte()]);
    bytes.extend_from_slice(&written_at_ms.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The first two bytes of every envelope this build writes; the stores check
/// them before flipping the state byte, so foreign values are never modified.
pub(crate) const PREFIX: [u8; 2] = [MAGIC, VERSION];

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Cat {
        id: u32,
        name: String,
    }

    #[test]
    fn golden_bytes() {
        let payload = Codec::MessagePack
            .encode(&Cat {
                id: 7,
                name: "Tom".into(),
            })
            .expect("a plain struct encodes");
        let bytes = seal(Codec::MessagePack, 0x0102_0304_0506_0708, &payload);
        let expected: &[u8] = &[
            0xCE, 0x01, 0x00, 0x00, // magic, version, fresh, msgpack
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // write time
            0x82, // map of 2
            0xA2, b'i', b'd', 0x07, // "id": 7
            0xA4, b'n', b'a', b'm', b'e', 0xA3, b'T', b'o', b'm', // "name": "Tom"
        ];
        assert_eq!(bytes, expected);
        let envelope = Envelope::parse(&bytes).expect("golden bytes parse");
        assert_eq!(envelope.state, State::Fresh);
        assert_eq!(envelope.written_at_ms, 0x0102_0304_0506_0708);
        assert_eq!(
            envelope.decode::<Cat>().expect("golden payload decodes"),
            Cat {
                id: 7,
                name: "Tom".into()
            }
        );
    }

    #[test]
    fn json_codec_round_trips() {
        let payload = Codec::Json.encode(&vec![1, 2, 3]).expect("encodes");
        let bytes = seal(Codec::Json, 5, &payload);
        assert_eq!(&bytes[12..], b"[1,2,3]");
        let envelope = Envelope::parse(&bytes).expect("parses");
        assert_eq!(
            envelope.decode::<Vec<i32>>().expect("decodes"),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn stale_flag_is_read() {
        let mut bytes = seal(Codec::MessagePack, 1, &[0xC0]);
        bytes[STATE_OFFSET] = STALE;
        assert_eq!(Envelope::parse(&bytes).expect("parses").state, State::Stale);
    }

    #[test]
    fn unreadable_inputs_are_classified() {
        assert_eq!(Envelope::parse(b""), Err(Unreadable::Truncated { len: 0 }));
        assert_eq!(
            Envelope::parse(&[MAGIC, VERSION, 0]),
            Err(Unreadable::Truncated { len: 3 })
        );
        assert_eq!(
            Envelope::parse(b"hello world, not ours"),
            Err(Unreadable::Foreign)
        );
        assert_eq!(Envelope::parse(b"{}"), Err(Unreadable::Foreign));
        let mut newer = seal(Codec::MessagePack, 1, &[0xC0]);
        newer[1] = 9;
        assert_eq!(
            Envelope::parse(&newer),
            Err(Unreadable::NewerFormat { version: 9 })
        );
        let mut bad_state = seal(Codec::MessagePack, 1, &[0xC0]);
        bad_state[STATE_OFFSET] = 7;
        assert_eq!(Envelope::parse(&bad_state), Err(Unreadable::BadHeader));
        let mut bad_codec = seal(Codec::MessagePack, 1, &[0xC0]);
        bad_codec[3] = 9;
        assert_eq!(Envelope::parse(&bad_codec), Err(Unreadable::BadHeader));
    }

    #[test]
    fn payload_of_another_type_is_unreadable() {
        let payload = Codec::MessagePack
            .encode(&"just a string")
            .expect("encodes");
        let bytes = seal(Codec::MessagePack, 1, &payload);
        let envelope = Envelope::parse(&bytes).expect("header parses");
        assert!(matches!(
            envelope.decode::<Cat>(),
            Err(Unreadable::Payload(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(envelope) = Envelope::parse(&bytes) {
                let _ = envelope.decode::<Cat>();
            }
        }
    }
}
