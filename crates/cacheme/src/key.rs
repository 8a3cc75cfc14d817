//! Keys: escaping the values that fill a key template, and the names of the
//! Redis keys that belong to one cache key.
//!
//! # Escaping
//!
//! A node's key template (`"cat:{id}"`) is literal text with placeholders. The
//! value that fills a placeholder is escaped: every ASCII character other than
//! letters, digits, `_`, `-` and `.` becomes `%XX`. Non-ASCII text is kept as
//! it is. So a value can never contain `:`, `>`, `*`, `?`, `[`, `]`, `\`,
//! `{`, `}` or a space: it cannot reach into another node's keyspace, and it
//! cannot widen a pattern invalidation. The derive macro refuses templates in
//! which two placeholders are not separated by such a character, which makes
//! the whole encoding injective (different field values, different keys; see
//! the property test below).
//!
//! # Redis keys
//!
//! For a cache key `cat:1` and the prefix `CM:`:
//!
//! | key                     | holds                                         |
//! |-------------------------|-----------------------------------------------|
//! | `CM:{cat:1}`            | the value (or the placeholder of its loader), with Redis's own TTL |
//! | `CM:{cat:1}:lease`      | the token of the one caller refreshing `cat:1` |
//!
//! The braces are Redis Cluster hash tags: a key and its lease always live in
//! the same slot, so the scripts that touch both are cluster-safe.

use std::fmt::{self, Write};

/// True for the characters a placeholder value may contain unescaped.
pub(crate) fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || !c.is_ascii()
}

/// Append `value` (its `Display` form) to `out`, escaped for use inside a key.
///
/// ```
/// let mut key = String::from("cat:");
/// cacheme::key::push_escaped(&mut key, &"tom:*");
/// assert_eq!(key, "cat:tom%3A%2A");
/// cacheme::key::push_escaped(&mut key, &42);
/// assert_eq!(key, "cat:tom%3A%2A42");
/// ```
pub fn push_escaped<T: fmt::Display + ?Sized>(out: &mut String, value: &T) {
    struct Escaper<'a>(&'a mut String);
    impl Write for Escaper<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                if is_plain(c) {
                    self.0.push(c);
                } else {
                    // `c` is ASCII here, so it is a single byte.
                    let _ = write!(self.0, "%{:02X}", c as u32);
                }
            }
            Ok(())
        }
    }
    // Writing into a String cannot fail; a `Display` impl that returns an
    // error leaves what it wrote so far, which is still a valid key.
    let _ = write!(Escaper(out), "{value}");
}

/// `value` escaped for use inside a key (see [`push_escaped`]).
pub fn escape<T: fmt::Display + ?Sized>(value: &T) -> String {
    let mut out = String::new();
    push_escaped(&mut out, value);
    out
}

/// Escape a literal string for use inside a Redis glob pattern, so that it
/// matches only itself.
///
/// ```
/// assert_eq!(cacheme::key::escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
/// ```
pub fn escape_glob(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Redis key names that belong to one cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreKeys {
    value: String,
}

impl StoreKeys {
    /// The store keys of `key` under `prefix`.
    pub(crate) fn new(prefix: &str, key: &str) -> Self {
        let mut value = String::with_capacity(prefix.len() + key.len() + 2);
        value.push_str(prefix);
        value.push('{');
        value.push_str(key);
        value.push('}');
        StoreKeys { value }
    }

    /// The key holding the value envelope: `{prefix}{key}`.
    pub(crate) fn value(&self) -> &str {
        &self.value
    }

    /// The key holding the lease: `{prefix}{key}:lease`.
    pub(crate) fn lease(&self) -> String {
        format!("{}:lease", self.value)
    }
}

/// The `SCAN MATCH` glob that finds the value and lease keys of the cache
/// keys matching `pattern` (a Redis glob over cache keys, e.g. `cat:*`). It
/// also matches other keys; [`scanned_cache_key`] sorts them out.
pub(crate) fn scan_glob(prefix: &str, pattern: &str) -> String {
    format!("{}\\{{{pattern}\\}}*", escape_glob(prefix))
}

/// The cache key of a value key (`{prefix}{key}`) or lease key
/// (`{prefix}{key}:lease`) found by a scan, if it is one of those and the
/// cache key matches `pattern`.
pub(crate) fn scanned_cache_key<'a>(
    prefix: &str,
    pattern: &str,
    redis_key: &'a str,
) -> Option<&'a str> {
    let inner = redis_key.strip_prefix(prefix)?.strip_prefix('{')?;
    let inner = inner.strip_suffix(":lease").unwrap_or(inner);
    let key = inner.strip_suffix('}')?;
    glob_match(pattern.as_bytes(), key.as_bytes()).then_some(key)
}

/// Redis's glob matching (`*`, `?`, `[a-z]`, `[^a]`, `\x`), as `SCAN MATCH` does it.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star_p, mut star_t) = (None, 0);
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = Some(p);
                    star_t = t;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(pattern, p, text[t])
                        && matched
                    {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_t += 1;
                t = star_t;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Match one byte against the class starting at `pattern[start] == b'['`.
/// Returns (matched, index after the class), or None if the class is unclosed.
fn match_class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = if pattern[i] <= pattern[i + 2] {
                (pattern[i], pattern[i + 2])
            } else {
                (pattern[i + 2], pattern[i])
            };
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    if i >= pattern.len() {
        return None;
    }
    Some((matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_characters_are_escaped() {
        for (input, expected) in [
            ("", ""),
            ("plain_Text-1.0", "plain_Text-1.0"),
            ("a:b", "a%3Ab"),
            ("a>b", "a%3Eb"),
            ("*", "%2A"),
            ("?", "%3F"),
            ("[x]", "%5Bx%5D"),
            ("\\", "%5C"),
            ("{}", "%7B%7D"),
            ("a b", "a%20b"),
            ("100%", "100%25"),
            ("猫", "猫"),
            ("\n", "%0A"),
        ] {
            assert_eq!(escape(input), expected, "escaping {input:?}");
        }
    }

    #[test]
    fn store_key_names() {
        let keys = StoreKeys::new("CM:", "cat:1");
        assert_eq!(keys.value(), "CM:{cat:1}");
        assert_eq!(keys.lease(), "CM:{cat:1}:lease");
        assert_eq!(scan_glob("CM:", "cat:*"), "CM:\\{cat:*\\}*");
        assert_eq!(scan_glob("a*", "x"), "a\\*\\{x\\}*");
        assert_eq!(
            scanned_cache_key("CM:", "cat:*", "CM:{cat:1}"),
            Some("cat:1")
        );
        assert_eq!(
            scanned_cache_key("CM:", "cat:*", "CM:{cat:1}:lease"),
            Some("cat:1")
        );
        assert_eq!(
            scanned_cache_key("CM:", "cat:*", "CM:{cat:1}:invalid"),
            None
        );
        assert_eq!(scanned_cache_key("CM:", "cat", "CM:{cat}x}"), None);
        assert_eq!(scanned_cache_key("CM:", "cat", "CM:tag:{cat}"), None);
    }

    /// A two-placeholder template `t:{a}:{b}`, as the derive macro builds it.
    fn two_field_key(a: &str, b: &str) -> String {
        let mut key = String::from("t:");
        push_escaped(&mut key, a);
        key.push(':');
        push_escaped(&mut key, b);
        key
    }

    #[test]
    fn glob_matches_like_redis() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[abc]x", "bx", true),
            ("[^abc]x", "bx", false),
            ("[a-c]x", "cx", true),
            ("[c-a]x", "bx", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("CM:\\{cat:*\\}", "CM:{cat:1}", true),
            ("CM:\\{cat:*\\}", "CM:{cat:1}:lease", false),
            ("*:lease", "CM:{a}:lease", true),
            ("a[", "a[", false),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    proptest! {
        #[test]
        fn escaping_is_injective(a in ".*", b in ".*") {
            prop_assume!(a != b);
            prop_assert_ne!(escape(&a), escape(&b));
        }

        #[test]
        fn template_keys_are_injective(a1 in ".*", b1 in ".*", a2 in ".*", b2 in ".*") {
            prop_assume!((&a1, &b1) != (&a2, &b2));
            prop_assert_ne!(two_field_key(&a1, &b1), two_field_key(&a2, &b2));
        }

        #[test]
        fn escaped_values_cannot_widen_a_pattern(a in ".*") {
            let escaped = escape(&a);
            const SPECIAL: [char; 10] = ['*', '?', '[', ']', '\\', ':', '>', '{', '}', ' '];
            let widens = escaped.contains(SPECIAL);
            prop_assert!(!widens, "{} contains a special character", escaped);
        }

        #[test]
        fn value_keys_never_collide_with_their_leases(a in ".+", b in ".+") {
            let ka = StoreKeys::new("CM:", &a);
            let kb = StoreKeys::new("CM:", &b);
            let sequence = crate::events::SequenceKeys::new("CM:");
            let lease = kb.lease();
            prop_assert_ne!(ka.value(), lease.as_str());
            for shared in [&sequence.seq, &sequence.log] {
                prop_assert_ne!(ka.value(), shared.as_str());
            }
        }
    }
}
