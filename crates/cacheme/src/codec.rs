//! How values become bytes: the codecs, and their errors.

use serde::Serialize;
use serde::de::DeserializeOwned;

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
    pub(crate) fn byte(self) -> u8 {
        match self {
            Codec::MessagePack => 0,
            Codec::Json => 1,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
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

    /// A compressed payload that does not decompress.
    pub(crate) fn decompress(
        codec: Codec,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        CodecError {
            codec,
            operation: CodecOperation::Decode,
            source: Self::boxed(error),
        }
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
