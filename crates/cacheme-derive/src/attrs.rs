//! The `#[node(...)]` and `#[invalid_node(...)]` attributes.
//!
//! They are parsed by hand rather than as `syn::Meta`, because `value = Vec<Cat>`
//! is a type, not an expression: `Meta` parsing would reject it.

use std::fmt::Display;

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, DeriveInput, Expr, ExprLit, ExprPath, Ident, Lit, LitStr, Token, Type};

use crate::template;

/// What `#[node(...)]` takes.
const NODE_ATTRS: &[&str] = &[
    "key",
    "value",
    "ttl",
    "stale",
    "version",
    "tag",
    "refresh_after",
    "invalid_nodes",
    "hit",
    "miss",
    "local_ttl",
    "local_capacity",
];

/// What `#[invalid_node(...)]` takes.
const INVALID_NODE_ATTRS: &[&str] = &["key"];

/// How a key is made.
pub(crate) enum KeySource {
    /// `key = "cat:{id}"`.
    Template(LitStr),
    /// `key = Self::cache_key`: a `fn(&Self) -> String`.
    Method(ExprPath),
}

/// A duration given in the attribute, in milliseconds.
#[derive(Clone, Copy)]
pub(crate) struct Millis(pub(crate) u64);

/// The parsed `#[node(...)]`.
pub(crate) struct NodeArgs {
    pub(crate) key: KeySource,
    pub(crate) value: Type,
    pub(crate) ttl: Option<Millis>,
    pub(crate) stale: Option<bool>,
    pub(crate) version: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) refresh_after: Option<Millis>,
    pub(crate) invalid_nodes: Option<ExprPath>,
    pub(crate) hit: Option<ExprPath>,
    pub(crate) miss: Option<ExprPath>,
    pub(crate) local_ttl: Option<Millis>,
    pub(crate) local_capacity: Option<u64>,
}

/// The parsed `#[invalid_node(...)]`.
pub(crate) struct InvalidNodeArgs {
    pub(crate) key: KeySource,
}

/// Collects errors so that one compilation reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Keep the value of `result`, or its error.
    pub(crate) fn take<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// All the errors so far, and `error`.
    pub(crate) fn with(self, error: syn::Error) -> syn::Error {
        match self.0 {
            Some(mut errors) => {
                errors.combine(error);
                errors
            }
            None => error,
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// One `name`, `name = expr` or `value = Type` in the attribute.
struct Arg {
    name: Ident,
    value: Option<ArgValue>,
}

enum ArgValue {
    Expr(Expr),
    Type(Type),
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `parse_any` so that a keyword (`type = ..`) gets the "unknown attribute" error.
        let name = input.call(Ident::parse_any)?;
        if input.peek(syn::token::Paren) {
            return Err(syn::Error::new(
                input.span(),
                format!("write `{name} = ...` rather than `{name}(...)`"),
            ));
        }
        if input.parse::<Option<Token![=]>>()?.is_none() {
            return Ok(Arg { name, value: None });
        }
        let value = if name == "value" {
            // `value = "Vec<Cat>"` (darling's style) is accepted too.
            match input.parse::<Option<LitStr>>()? {
                Some(text) => ArgValue::Type(text.parse()?),
                None => ArgValue::Type(input.parse()?),
            }
        } else {
            ArgValue::Expr(input.parse()?)
        };
        Ok(Arg {
            name,
            value: Some(value),
        })
    }
}

/// The arguments of every `#[attr(...)]`, in order, with parse errors pushed
/// to `errors`; `None` if there is no such attribute.
fn collect<'a>(
    attrs: &'a [Attribute],
    attr: &str,
    errors: &mut Errors,
) -> Option<(&'a Attribute, Vec<Arg>)> {
    let mut first = None;
    let mut args = Vec::new();
    for attribute in attrs.iter().filter(|a| a.path().is_ident(attr)) {
        first.get_or_insert(attribute);
        let parsed = attribute.parse_args_with(Punctuated::<Arg, Token![,]>::parse_terminated);
        if let Some(parsed) = errors.take(parsed) {
            args.extend(parsed);
        }
    }
    first.map(|first| (first, args))
}

/// Parse `#[node(...)]`.
pub(crate) fn node_args(input: &DeriveInput, fields: &[String]) -> syn::Result<NodeArgs> {
    let mut errors = Errors::default();
    let Some((attribute, args)) = collect(&input.attrs, "node", &mut errors) else {
        let error = syn::Error::new_spanned(
            &input.ident,
            format!(
                "#[derive(Node)] needs a #[node(...)] attribute with at least `key` and `value`, \
                 e.g. #[node(key = \"{}\", value = YourValueType)]",
                template::example(&input.ident.unraw().to_string(), fields)
            ),
        );
        return Err(errors.with(error));
    };

    let (mut key, mut value, mut ttl, mut stale, mut version, mut tag) =
        (None, None, None, None, None, None);
    let (mut refresh_after, mut invalid_nodes, mut hit, mut miss) = (None, None, None, None);
    let (mut local_ttl, mut local_capacity) = (None, None);
    let mut refresh_expr = None;
    let mut seen: Vec<String> = Vec::new();
    for Arg { name, value: arg } in args {
        let text = name.to_string();
        if seen.contains(&text) {
            errors.push(syn::Error::new_spanned(
                &name,
                format!("`{name}` is given twice: keep one"),
            ));
            continue;
        }
        seen.push(text.clone());
        match text.as_str() {
            "key" => key = errors.take(key_source(&name, &arg)),
            "value" => value = errors.take(value_type(&name, &arg)),
            "ttl" => ttl = errors.take(duration(&name, &arg)),
            "stale" => stale = errors.take(boolean(&name, &arg)),
            "version" => version = errors.take(string(&name, &arg, "\"v2\"")),
            "tag" => tag = errors.take(tag_name(&name, &arg)),
            "refresh_after" => {
                refresh_after = errors.take(duration(&name, &arg));
                refresh_expr = expr_of(&name, &arg).ok().cloned();
            }
            "invalid_nodes" => {
                invalid_nodes =
                    errors.take(method(&name, &arg, "fn(&Self) -> impl IntoInvalidKeys"))
            }
            "hit" => hit = errors.take(method(&name, &arg, "fn(&Self, &str, &Value)")),
            "miss" => miss = errors.take(method(&name, &arg, "fn(&Self, &str)")),
            "local_ttl" => local_ttl = errors.take(duration(&name, &arg)),
            "local_capacity" => local_capacity = errors.take(count(&name, &arg)),
            _ => errors.push(unknown(&name, "node", NODE_ATTRS)),
        }
    }
    if let (Some(Millis(refresh)), Some(Millis(ttl)), Some(expr)) =
        (refresh_after, ttl, refresh_expr)
        && refresh >= ttl
    {
        errors.push(syn::Error::new_spanned(
            expr,
            format!(
                "`refresh_after` ({}) must be shorter than `ttl` ({}), \
                 or values expire before they are refreshed",
                Show(refresh),
                Show(ttl)
            ),
        ));
    }
    if key.is_none() && !seen.iter().any(|n| n == "key") {
        errors.push(syn::Error::new_spanned(
            attribute,
            format!(
                "#[node(...)] needs `key`: a template of the fields such as `key = \"{}\"`, \
                 or a method such as `key = Self::cache_key`",
                template::example(&input.ident.unraw().to_string(), fields)
            ),
        ));
    }
    if value.is_none() && !seen.iter().any(|n| n == "value") {
        errors.push(syn::Error::new_spanned(
            attribute,
            "#[node(...)] needs `value`: the type cached under this node, e.g. `value = Cat` or `value = Vec<Cat>`",
        ));
    }
    errors.finish()?;
    let (Some(key), Some(value)) = (key, value) else {
        unreachable!("a missing or invalid key or value is reported above")
    };
    Ok(NodeArgs {
        key,
        value,
        ttl,
        stale,
        version,
        tag,
        refresh_after,
        invalid_nodes,
        hit,
        miss,
        local_ttl,
        local_capacity,
    })
}

/// A positive whole number: `local_capacity = 10000`.
fn count(name: &Ident, value: &Option<ArgValue>) -> syn::Result<u64> {
    let expr = expr_of(name, value)?;
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => match int.base10_parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(syn::Error::new_spanned(
                expr,
                format!("`{name}` must be a whole number above zero, e.g. `{name} = 10000`"),
            )),
        },
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{name}` takes a whole number of entries, e.g. `{name} = 10000`"),
        )),
    }
}

/// Parse `#[invalid_node(...)]`.
pub(crate) fn invalid_node_args(
    input: &DeriveInput,
    fields: &[String],
) -> syn::Result<InvalidNodeArgs> {
    let mut errors = Errors::default();
    let example = template::example(&input.ident.unraw().to_string(), fields);
    let Some((attribute, args)) = collect(&input.attrs, "invalid_node", &mut errors) else {
        let error = syn::Error::new_spanned(
            &input.ident,
            format!(
                "#[derive(InvalidNode)] needs a #[invalid_node(key = ...)] attribute, e.g. #[invalid_node(key = \"{example}\")]"
            ),
        );
        return Err(errors.with(error));
    };
    let mut key = None;
    let mut seen = false;
    for Arg { name, value } in args {
        if name != "key" {
            errors.push(unknown(&name, "invalid_node", INVALID_NODE_ATTRS));
        } else if seen {
            errors.push(syn::Error::new_spanned(
                &name,
                "`key` is given twice: keep one",
            ));
        } else {
            seen = true;
            key = errors.take(key_source(&name, &value));
        }
    }
    if !seen {
        errors.push(syn::Error::new_spanned(
            attribute,
            format!(
                "#[invalid_node(...)] needs `key`: a template of the fields such as `key = \"{example}\"`, \
                 or a method such as `key = Self::cache_key`"
            ),
        ));
    }
    errors.finish()?;
    let Some(key) = key else {
        unreachable!("a missing or invalid key is reported above")
    };
    Ok(InvalidNodeArgs { key })
}

fn unknown(name: &Ident, attr: &str, valid: &[&str]) -> syn::Error {
    let list = valid.join(", ");
    let message = match suggestion(&name.to_string(), valid) {
        Some(best) => format!(
            "unknown attribute `{name}` in #[{attr}(...)]: did you mean `{best}`? It takes: {list}"
        ),
        None => format!("unknown attribute `{name}` in #[{attr}(...)]: it takes: {list}"),
    };
    syn::Error::new_spanned(name, message)
}

/// The valid name closest to a misspelled one, if it is close enough.
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

fn expr_of<'a>(name: &Ident, value: &'a Option<ArgValue>) -> syn::Result<&'a Expr> {
    match value {
        Some(ArgValue::Expr(expr)) => Ok(ungroup(expr)),
        // Only `value` is parsed as a type.
        Some(ArgValue::Type(ty)) => Err(syn::Error::new_spanned(
            ty,
            format!("`{name}` takes an expression"),
        )),
        None => Err(syn::Error::new_spanned(
            name,
            format!("`{name}` needs a value: {}", usage(&name.to_string())),
        )),
    }
}

/// The expression inside the invisible groups a `macro_rules!` fragment
/// (`#[node(key = $key)]`) comes in.
fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => ungroup(&group.expr),
        expr => expr,
    }
}

/// How an attribute is written, for messages.
fn usage(name: &str) -> &'static str {
    match name {
        "key" => "`key = \"cat:{id}\"` (a template) or `key = Self::cache_key` (a method)",
        "value" => "`value = Cat`",
        "ttl" => "`ttl = 300` (seconds) or `ttl = \"5m\"`",
        "refresh_after" => "`refresh_after = 60` (seconds) or `refresh_after = \"1m\"`",
        "stale" => "`stale = true` or `stale = false`",
        "version" => "`version = \"v2\"`",
        "tag" => "`tag = \"cats\"`",
        "invalid_nodes" => "`invalid_nodes = Self::groups`",
        "hit" => "`hit = Self::on_hit`",
        "miss" => "`miss = Self::on_miss`",
        _ => "`name = value`",
    }
}

fn key_source(name: &Ident, value: &Option<ArgValue>) -> syn::Result<KeySource> {
    match expr_of(name, value)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(KeySource::Template(text.clone())),
        Expr::Path(path) => Ok(KeySource::Method(path.clone())),
        other => Err(syn::Error::new_spanned(
            other,
            "`key` must be a template string such as `key = \"cat:{id}\"`, \
             or the path of a method `fn(&self) -> String` such as `key = Self::cache_key`",
        )),
    }
}

fn value_type(name: &Ident, value: &Option<ArgValue>) -> syn::Result<Type> {
    match value {
        Some(ArgValue::Type(ty)) => Ok(ty.clone()),
        _ => Err(syn::Error::new_spanned(
            name,
            "`value` needs the type cached under this node: `value = Cat`",
        )),
    }
}

/// The milliseconds of a duration literal: `300` (seconds), `1500ms` / `5m`
/// (a suffixed literal), or a string with a unit (`"1500ms"`, `"30s"`, ..).
pub(crate) fn duration_literal(expr: &Expr) -> Option<u64> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => parse_duration(&format!("{}{}", int.base10_digits(), int.suffix())),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => parse_duration(&text.value()),
        _ => None,
    }
}

fn duration(name: &Ident, value: &Option<ArgValue>) -> syn::Result<Millis> {
    let expr = expr_of(name, value)?;
    let millis = duration_literal(expr);
    match millis {
        Some(0) => Err(syn::Error::new_spanned(
            expr,
            format!("`{name}` must be longer than zero; leave it out to use the cache's default"),
        )),
        Some(millis) => Ok(Millis(millis)),
        None => Err(syn::Error::new_spanned(
            expr,
            format!(
                "`{name}` must be whole seconds (`{name} = 300`) or a string with a unit: \
                 `{name} = \"1500ms\"`, `\"30s\"`, `\"5m\"`, `\"2h\"` or `\"1d\"`"
            ),
        )),
    }
}

/// `"300"`, `"1500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"` in milliseconds.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit: u64 = match unit.trim() {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// A duration for messages.
struct Show(u64);

impl Display for Show {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

fn boolean(name: &Ident, value: &Option<ArgValue>) -> syn::Result<bool> {
    if value.is_none() {
        return Ok(true); // `#[node(stale)]`
    }
    match expr_of(name, value)? {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) => Ok(flag.value),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` takes `true` or `false`: `{name} = true`"),
        )),
    }
}

fn string(name: &Ident, value: &Option<ArgValue>, example: &str) -> syn::Result<String> {
    match expr_of(name, value)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) if !text.value().is_empty() => Ok(text.value()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Err(syn::Error::new_spanned(
            text,
            format!("`{name}` must not be empty: `{name} = {example}`, or leave it out"),
        )),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` takes a string literal: `{name} = {example}`"),
        )),
    }
}

fn tag_name(name: &Ident, value: &Option<ArgValue>) -> syn::Result<String> {
    let tag = string(name, value, "\"cats\"")?;
    if tag.contains(['{', '}']) {
        return Err(syn::Error::new_spanned(
            expr_of(name, value)?,
            "`tag` must not contain `{` or `}`: they delimit the tag in its Redis key (`CM:tag:{cats}`)",
        ));
    }
    Ok(tag)
}

fn method(name: &Ident, value: &Option<ArgValue>, signature: &str) -> syn::Result<ExprPath> {
    match expr_of(name, value)? {
        Expr::Path(path) => Ok(path.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!(
                "`{name}` takes the path of a function `{signature}`, such as {}; \
                 write the code in a method and name it here",
                usage(&name.to_string())
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Some(300_000));
        assert_eq!(parse_duration("1500ms"), Some(1_500));
        assert_eq!(parse_duration("30s"), Some(30_000));
        assert_eq!(parse_duration("5m"), Some(300_000));
        assert_eq!(parse_duration("2h"), Some(7_200_000));
        assert_eq!(parse_duration("1d"), Some(86_400_000));
        assert_eq!(parse_duration(" 5 m "), Some(300_000));
        for bad in [
            "",
            "abc",
            "5x",
            "1.5s",
            "-1",
            "s",
            "300u64",
            "99999999999999999999",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggestion("ttll", NODE_ATTRS), Some("ttl"));
        assert_eq!(
            suggestion("invalid_node", NODE_ATTRS),
            Some("invalid_nodes")
        );
        assert_eq!(suggestion("refresh", NODE_ATTRS), Some("refresh_after"));
        assert_eq!(suggestion("on_hit", NODE_ATTRS), Some("hit"));
        assert_eq!(suggestion("values", NODE_ATTRS), Some("value"));
        assert_eq!(suggestion("expire_in", NODE_ATTRS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
