//! Just enough of RESP2 and RESP3 for the fault proxy: where a frame ends,
//! and whether it is a pub/sub delivery or a subscription count. No I/O.

/// How deeply aggregates may nest before the stream is treated as
/// malformed (Redis itself never nests deeply).
const MAX_DEPTH: usize = 64;

/// The stream is not RESP (or uses a part the proxy does not parse, such as
/// RESP3 streamed strings); the proxy then forwards it untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

/// The kind of pub/sub delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// `message`: a `SUBSCRIBE` channel's message.
    Message,
    /// `pmessage`: a `PSUBSCRIBE` pattern's message.
    PMessage,
    /// `smessage`: a sharded channel's message.
    SMessage,
}

/// What a complete server frame means to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A delivery shaped frame: an array (RESP2) or push (RESP3) of
    /// `message`/`smessage` + 2 elements or `pmessage` + 3.
    Delivery { delivery: Delivery, push: bool },
    /// A subscription confirmation carrying the new subscription count:
    /// `(un)subscribe`, `p(un)subscribe` (classic) or `s(un)subscribe`
    /// (sharded, counted separately by Redis).
    Subscriptions { shard: bool, count: i64, push: bool },
    /// `+RESET`: the connection left pub/sub mode.
    Reset,
    /// Anything else.
    Other,
}

/// The length of the first complete frame in `buf`, or `None` if `buf`
/// holds only part of it.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    skip(buf, 0, 0)
}

/// Where the value starting at `pos` ends, or `None` if incomplete.
fn skip(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError(format!(
            "aggregates nested deeper than {MAX_DEPTH}"
        )));
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(line_end) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..line_end];
    let next = line_end + 2;
    match tag {
        // Simple string, error, integer, null, boolean, double, big number.
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(next)),
        // Bulk string, bulk error, verbatim string.
        b'$' | b'!' | b'=' => {
            let len = parse_int(line)?;
            let Ok(len) = usize::try_from(len) else {
                // `$-1`: the RESP2 null bulk string.
                return Ok(Some(next));
            };
            let end = next + len + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(ProtocolError("bulk string not followed by CRLF".into()));
            }
            Ok(Some(end))
        }
        // Array, set, push; map and attribute hold key-value pairs.
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let count = parse_int(line)?;
            let Ok(count) = usize::try_from(count) else {
                // `*-1`: the RESP2 null array.
                return Ok(Some(next));
            };
            let count = if matches!(tag, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            let mut at = next;
            for _ in 0..count {
                match skip(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(ProtocolError(format!(
            "unexpected RESP type byte {:?}",
            char::from(other)
        ))),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

fn parse_int(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "bad length {:?} (streamed RESP3 values are not supported)",
                String::from_utf8_lossy(line)
            ))
        })
}

/// Classifies a complete frame (as delimited by [`frame_len`]).
pub(crate) fn classify(frame: &[u8]) -> FrameKind {
    let Some(&tag) = frame.first() else {
        return FrameKind::Other;
    };
    let Some(header_end) = find_crlf(frame, 1) else {
        return FrameKind::Other;
    };
    if tag == b'+' {
        return if frame[1..header_end].eq_ignore_ascii_case(b"RESET") {
            FrameKind::Reset
        } else {
            FrameKind::Other
        };
    }
    if tag != b'*' && tag != b'>' {
        return FrameKind::Other;
    }
    let push = tag == b'>';
    let Ok(count) = parse_int(&frame[1..header_end]) else {
        return FrameKind::Other;
    };
    let first = header_end + 2;
    let Some((name, second)) = string_at(frame, first) else {
        return FrameKind::Other;
    };
    let name = name.to_ascii_lowercase();
    let delivery = match (name.as_slice(), count) {
        (b"message", 3) => Some(Delivery::Message),
        (b"smessage", 3) => Some(Delivery::SMessage),
        (b"pmessage", 4) => Some(Delivery::PMessage),
        _ => None,
    };
    if let Some(delivery) = delivery {
        return FrameKind::Delivery { delivery, push };
    }
    let shard = match name.as_slice() {
        b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" => false,
        b"ssubscribe" | b"sunsubscribe" => true,
        _ => return FrameKind::Other,
    };
    if count != 3 {
        return FrameKind::Other;
    }
    let Ok(Some(third)) = skip(frame, second, 1) else {
        return FrameKind::Other;
    };
    match integer_at(frame, third) {
        Some(count) => FrameKind::Subscriptions { shard, count, push },
        None => FrameKind::Other,
    }
}

/// The name of the command in a complete client frame (a RESP array of
/// bulk strings, or an inline command line), lowercased.
pub(crate) fn command_name(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.first() == Some(&b'*') {
        let header_end = find_crlf(frame, 1)?;
        let (name, _) = string_at(frame, header_end + 2)?;
        Some(name.to_ascii_lowercase())
    } else {
        let line = frame.split(|&b| b == b'\n').next()?;
        let word = line
            .split(|b| b.is_ascii_whitespace())
            .find(|w| !w.is_empty())?;
        Some(word.to_ascii_lowercase())
    }
}

/// The length of the first complete client command in `buf`: a RESP frame,
/// or an inline command ending in a newline.
pub(crate) fn command_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => frame_len(buf),
        Some(_) => Ok(buf.iter().position(|&b| b == b'\n').map(|i| i + 1)),
    }
}

/// A bulk or simple string at `pos`, and where the next value starts.
fn string_at(frame: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let tag = *frame.get(pos)?;
    let line_end = find_crlf(frame, pos + 1)?;
    match tag {
        b'+' => Some((&frame[pos + 1..line_end], line_end + 2)),
        b'$' => {
            let len = usize::try_from(parse_int(&frame[pos + 1..line_end]).ok()?).ok()?;
            let start = line_end + 2;
            let value = frame.get(start..start + len)?;
            Some((value, start + len + 2))
        }
        _ => None,
    }
}

fn integer_at(frame: &[u8], pos: usize) -> Option<i64> {
    if frame.get(pos) != Some(&b':') {
        return None;
    }
    let line_end = find_crlf(frame, pos + 1)?;
    parse_int(&frame[pos + 1..line_end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(frame: &[u8]) {
        assert_eq!(frame_len(frame), Ok(Some(frame.len())), "{frame:?}");
        for cut in 0..frame.len() {
            assert_eq!(
                frame_len(&frame[..cut]),
                Ok(None),
                "prefix {cut} of {frame:?}"
            );
        }
    }

    #[test]
    fn frames_of_every_type_end_where_they_should() {
        for frame in [
            &b"+OK\r\n"[..],
            b"-ERR no\r\n",
            b":42\r\n",
            b"$5\r\nhello\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",1.5\r\n",
            b"(123\r\n",
            b"!3\r\nerr\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"%1\r\n+k\r\n*1\r\n:1\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            b"|1\r\n+key\r\n+value\r\n",
        ] {
            whole(frame);
        }
    }

    #[test]
    fn a_bulk_string_may_contain_crlf() {
        whole(b"$4\r\n\r\n\r\n\r\n");
    }

    #[test]
    fn two_frames_are_split_at_the_first() {
        assert_eq!(frame_len(b"+OK\r\n:1\r\n"), Ok(Some(5)));
    }

    #[test]
    fn garbage_and_streamed_values_are_errors() {
        assert!(frame_len(b"hello\r\n").is_err());
        assert!(frame_len(b"$?\r\n;4\r\nabcd\r\n;0\r\n").is_err());
        assert!(frame_len(b"$3\r\nabcXY").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert!(frame_len(deep.as_bytes()).is_err());
    }

    #[test]
    fn deliveries_are_recognised_in_both_protocols() {
        let message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(
            classify(message),
            FrameKind::Delivery {
                delivery: Delivery::Message,
                push: false
            }
        );
        let pmessage = b">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(
            classify(pmessage),
            FrameKind::Delivery {
                delivery: Delivery::PMessage,
                push: true
            }
        );
        let smessage = b">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(
            classify(smessage),
            FrameKind::Delivery {
                delivery: Delivery::SMessage,
                push: true
            }
        );
        // Wrong arity: a reply that merely starts with "message".
        assert_eq!(
            classify(b"*2\r\n$7\r\nmessage\r\n$2\r\nch\r\n"),
            FrameKind::Other
        );
        assert_eq!(classify(b"$7\r\nmessage\r\n"), FrameKind::Other);
    }

    #[test]
    fn subscription_counts_and_reset_are_recognised() {
        assert_eq!(
            classify(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
            FrameKind::Subscriptions {
                shard: false,
                count: 1,
                push: false
            }
        );
        assert_eq!(
            classify(b">3\r\n$12\r\nsunsubscribe\r\n$2\r\nch\r\n:0\r\n"),
            FrameKind::Subscriptions {
                shard: true,
                count: 0,
                push: true
            }
        );
        // `UNSUBSCRIBE` with nothing subscribed names a null channel.
        assert_eq!(
            classify(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            FrameKind::Subscriptions {
                shard: false,
                count: 0,
                push: false
            }
        );
        assert_eq!(classify(b"+RESET\r\n"), FrameKind::Reset);
        assert_eq!(classify(b"+OK\r\n"), FrameKind::Other);
    }

    #[test]
    fn client_commands_are_named() {
        let subscribe = b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n";
        assert_eq!(command_len(subscribe), Ok(Some(subscribe.len())));
        assert_eq!(command_name(subscribe).as_deref(), Some(&b"subscribe"[..]));
        assert_eq!(command_len(b"PING\r\nGET"), Ok(Some(6)));
        assert_eq!(
            command_name(b"  Psubscribe a*\r\n").as_deref(),
            Some(&b"psubscribe"[..])
        );
        assert_eq!(command_len(b"PIN"), Ok(None));
    }
}
