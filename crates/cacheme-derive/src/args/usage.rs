//! The usage table: every argument of the three attributes, how it is
//! written, and what shape its value has. Every message about an argument
//! (unknown, repeated, missing its value, with a bad value) quotes its row.

use syn::Ident;
use syn::ext::IdentExt;

/// One of the three attributes.
pub(crate) struct Attr {
    /// The attribute's name: `node`, `invalid_node`, `cacheme`.
    pub(crate) name: &'static str,
    /// A complete example, for messages about the attribute's form.
    pub(crate) example: &'static str,
    /// What it takes.
    pub(crate) arguments: &'static [Argument],
}

/// One argument of an attribute.
pub(crate) struct Argument {
    pub(crate) name: &'static str,
    pub(crate) shape: Shape,
    /// How it is written: `` `ttl = 300` or `ttl = "5m"` (seconds, ...)``.
    pub(crate) usage: &'static str,
}

/// What follows an argument's `=`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// An expression, taken as written.
    Expr,
    /// A type: `value = Vec<Cat>`, which is not an expression.
    Type,
    /// An expression, or nothing: `stale` alone means `stale = true`.
    Flag,
}

const fn arg(name: &'static str, usage: &'static str) -> Argument {
    Argument {
        name,
        shape: Shape::Expr,
        usage,
    }
}

/// The durations: whole seconds, or a string with a unit.
const TTL: &str = r#"`ttl = 300` or `ttl = "5m"` (seconds, or "1500ms", "30s", "5m", "2h", "1d")"#;
const LOCAL_TTL: &str =
    r#"`local_ttl = 10` or `local_ttl = "500ms"` (seconds, or "1500ms", "30s", "5m", "2h", "1d")"#;
const REFRESH_AFTER: &str = r#"`refresh_after = 60` or `refresh_after = "1m"` (seconds, or "1500ms", "30s", "5m", "2h", "1d"; shorter than `ttl`)"#;
const LOCAL_CAPACITY: &str = "`local_capacity = 10000` (entries)";
const FAIL_SAFE: &str = r#"`fail_safe = "1h"` (keep values this long past their TTL, served when their reload fails; seconds, or "1500ms", "30s", "5m", "2h", "1d")"#;
const FAIL_SAFE_THROTTLE: &str = r#"`fail_safe_throttle = "30s"` (after a failed reload, serve the expired value this long before retrying the source)"#;
const SOFT_TIMEOUT: &str =
    r#"`soft_timeout = "50ms"` (callers waiting for a reload get the expired value after this)"#;
const HARD_TIMEOUT: &str =
    r#"`hard_timeout = "2s"` (the loader's own caller stops waiting after this)"#;
const TAG: &str = r#"`tag = "cats"` (tags are registered at compile time)"#;
const CRATE: Argument = arg(
    "crate",
    "`crate = my_app::cacheme` (the path at which your crate re-exports cacheme; `::cacheme` by default)",
);

/// `#[node(...)]`, on `#[derive(Node)]`.
pub(crate) const NODE: Attr = Attr {
    name: "node",
    example: r#"#[node(key = "cat:{id}", value = Cat)]"#,
    arguments: &[
        Argument {
            name: "key",
            shape: Shape::Expr,
            usage: r#"`key = "cat:{id}"` (a template of the fields) or `key = Self::cache_key` (a method `fn(&self) -> String`)"#,
        },
        Argument {
            name: "value",
            shape: Shape::Type,
            usage: "`value = Cat` (the type cached under this node)",
        },
        arg("ttl", TTL),
        arg(
            "ttl_for",
            "`ttl_for = Self::ttl_of` (a fn `fn(&Value) -> Option<Duration>`: the time to live computed from each value, `None` for no expiry; overrides `ttl`)",
        ),
        Argument {
            name: "stale",
            shape: Shape::Flag,
            usage: "`stale = false` or `stale = true` (`stale` alone means true)",
        },
        arg(
            "version",
            r#"`version = "v2"` (appended to every key: `cat:1@v2`)"#,
        ),
        arg("tag", TAG),
        arg("refresh_after", REFRESH_AFTER),
        arg(
            "invalid_nodes",
            "`invalid_nodes = Self::groups` (a method `fn(&self) -> impl IntoInvalidKeys`)",
        ),
        arg(
            "hit",
            "`hit = Self::on_hit` (a method `fn(&self, &str, &Value)`)",
        ),
        arg(
            "miss",
            "`miss = Self::on_miss` (a method `fn(&self, &str)`)",
        ),
        arg("local_ttl", LOCAL_TTL),
        arg("local_capacity", LOCAL_CAPACITY),
        arg("fail_safe", FAIL_SAFE),
        arg("fail_safe_throttle", FAIL_SAFE_THROTTLE),
        arg("soft_timeout", SOFT_TIMEOUT),
        arg("hard_timeout", HARD_TIMEOUT),
        CRATE,
    ],
};

/// `#[invalid_node(...)]`, on `#[derive(InvalidNode)]`.
pub(crate) const INVALID_NODE: Attr = Attr {
    name: "invalid_node",
    example: r#"#[invalid_node(key = "user:{id}")]"#,
    arguments: &[
        arg(
            "key",
            r#"`key = "user:{id}"` (a template of the fields) or `key = Self::cache_key` (a method `fn(&self) -> String`)"#,
        ),
        CRATE,
    ],
};

/// `#[cacheme(...)]`.
pub(crate) const CACHEME: Attr = Attr {
    name: "cacheme",
    example: r#"#[cacheme(key = format!("cat:{}", cat.id))]"#,
    arguments: &[
        arg(
            "key",
            r#"`key = format!("cat:{}", cat.id)` (anything `Into<String>`)"#,
        ),
        arg(
            "node",
            "`node = CatNode { id: cat.id }` (a `#[derive(Node)]` value)",
        ),
        arg(
            "invalid_keys",
            r#"`invalid_keys = format!("user:{}", book.owner_id)` (one key, a list, an invalid node...)"#,
        ),
        arg("tag", TAG),
        arg("ttl", TTL),
        arg("stale", "`stale = false` (a `bool` expression)"),
        arg("skip", "`skip = cat.id == 0` (a `bool` expression)"),
        arg("hit", "`hit = on_hit` (a `fn(&str, &Value)` or a closure)"),
        arg("miss", "`miss = on_miss` (a `fn(&str)` or a closure)"),
        arg(
            "invalid_sources",
            "`invalid_sources = [user_changes]` (fns returning an `InvalidationSource`)",
        ),
        arg(
            "cache",
            "`cache = self.cache` (a `Cache`, `&Cache` or `Arc<Cache>`)",
        ),
        arg("local_ttl", LOCAL_TTL),
        arg("local_capacity", LOCAL_CAPACITY),
        arg("fail_safe", FAIL_SAFE),
        arg("fail_safe_throttle", FAIL_SAFE_THROTTLE),
        arg("soft_timeout", SOFT_TIMEOUT),
        arg("hard_timeout", HARD_TIMEOUT),
        arg(
            "batch",
            "`batch = ids` (the fn's `Vec<Id>` parameter: each id is cached on its own, and only the missing ones reach the body)",
        ),
        arg(
            "each",
            "`each = id` (the name under which `key` / `node` see one id of the batch)",
        ),
        arg(
            "by",
            "`by = |cat: &Cat| cat.id` (the id of a value the batch fn returns in its `Vec`)",
        ),
        CRATE,
    ],
};

impl Attr {
    /// The row of `name`.
    pub(crate) fn argument(&self, name: &str) -> Option<&'static Argument> {
        self.arguments.iter().find(|argument| argument.name == name)
    }

    /// How `name` is written; `name` is always one of this attribute's.
    pub(crate) fn usage(&self, name: &str) -> &'static str {
        self.argument(name)
            .map_or("`name = value`", |argument| argument.usage)
    }

    /// The names it takes, for messages: `key, value, ttl, ...`.
    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.arguments.iter().map(|a| a.name).collect();
        names.join(", ")
    }

    /// "unknown argument `tll` in #[cacheme(...)]; did you mean `ttl`? ..."
    pub(crate) fn unknown(&self, name: &Ident) -> syn::Error {
        let text = name.unraw().to_string();
        let names: Vec<&str> = self.arguments.iter().map(|a| a.name).collect();
        let attr = self.name;
        let message = match suggestion(&text, &names) {
            Some(best) => format!(
                "unknown argument `{text}` in #[{attr}(...)]; did you mean `{best}`? {}",
                self.usage(best)
            ),
            None => format!(
                "unknown argument `{text}` in #[{attr}(...)]; it takes: {}",
                self.names()
            ),
        };
        syn::Error::new_spanned(name, message)
    }
}

/// The valid name closest to a misspelt one, if it is close enough.
pub(crate) fn suggestion<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, candidate)| {
            *distance <= 2.max(candidate.len() / 3)
                || name.contains(candidate)
                || candidate.contains(name)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(attr: &Attr) -> Vec<&'static str> {
        attr.arguments.iter().map(|a| a.name).collect()
    }

    #[test]
    fn suggestions() {
        let node = names(&NODE);
        assert_eq!(suggestion("ttll", &node), Some("ttl"));
        assert_eq!(suggestion("tll", &node), Some("ttl"));
        assert_eq!(suggestion("invalid_node", &node), Some("invalid_nodes"));
        assert_eq!(suggestion("refresh", &node), Some("refresh_after"));
        assert_eq!(suggestion("on_hit", &node), Some("hit"));
        assert_eq!(suggestion("values", &node), Some("value"));
        assert_eq!(suggestion("local_tll", &node), Some("local_ttl"));
        assert_eq!(suggestion("krate", &node), Some("crate"));
        assert_eq!(suggestion("expire_in", &node), None);
        let cacheme = names(&CACHEME);
        assert_eq!(suggestion("ky", &cacheme), Some("key"));
        assert_eq!(suggestion("invalid_key", &cacheme), Some("invalid_keys"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn every_argument_has_one_row_and_a_usage_naming_it() {
        for attr in [&NODE, &INVALID_NODE, &CACHEME] {
            let names = names(attr);
            for argument in attr.arguments {
                let rows = names.iter().filter(|n| **n == argument.name).count();
                assert_eq!(rows, 1, "{} in #[{}]", argument.name, attr.name);
                assert!(
                    argument
                        .usage
                        .starts_with(&format!("`{} = ", argument.name)),
                    "{}",
                    argument.usage
                );
            }
        }
    }
}
