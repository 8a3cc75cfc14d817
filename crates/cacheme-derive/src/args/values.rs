//! The values of arguments: durations, counts, flags, strings, tag names and
//! paths, each parsed here and nowhere else. Every message quotes the
//! argument's row of the [usage table](super::usage).

use std::fmt;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{Expr, ExprLit, ExprPath, Lit, LitStr, Path};

use super::usage::Attr;
use super::{Code, Errors, ungroup};

/// A duration given in an attribute, in milliseconds; above zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Millis(pub(crate) u64);

/// `Duration::from_secs(..)`, or `from_millis(..)` when it is not whole seconds.
impl ToTokens for Millis {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let Millis(millis) = *self;
        tokens.extend(if millis.is_multiple_of(1000) {
            let secs = Literal::u64_unsuffixed(millis / 1000);
            quote!(::core::time::Duration::from_secs(#secs))
        } else {
            let millis = Literal::u64_unsuffixed(millis);
            quote!(::core::time::Duration::from_millis(#millis))
        });
    }
}

/// `300s`, `1500ms`: for messages.
impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

/// A duration above zero: `300` (seconds), a suffixed literal (`1500ms`,
/// `5m`), or a string with a unit (`"1500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`).
pub(crate) fn duration(attr: &Attr, name: &str, code: &Code) -> syn::Result<Millis> {
    let millis = match &code.0 {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => parse_duration(&format!("{}{}", int.base10_digits(), int.suffix())),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => parse_duration(&text.value()),
        _ => None,
    };
    let usage = attr.usage(name);
    match millis {
        Some(0) => Err(syn::Error::new_spanned(
            code,
            format!(
                "`{name}` must be longer than zero: leave it out for the default, or write {usage}"
            ),
        )),
        Some(millis) => Ok(Millis(millis)),
        None => Err(syn::Error::new_spanned(
            code,
            format!("`{name}` must be whole seconds or a string with a unit: {usage}"),
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

/// A whole number above zero: `local_capacity = 10000`.
pub(crate) fn count(attr: &Attr, name: &str, code: &Code) -> syn::Result<u64> {
    match &code.0 {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => match int.base10_parse::<u64>() {
            Ok(count) if count > 0 => Ok(count),
            _ => Err(syn::Error::new_spanned(
                code,
                format!("`{name}` must be above zero: {}", attr.usage(name)),
            )),
        },
        _ => Err(syn::Error::new_spanned(
            code,
            format!("`{name}` takes a whole number: {}", attr.usage(name)),
        )),
    }
}

/// `true` or `false`.
pub(crate) fn flag(attr: &Attr, name: &str, code: &Code) -> syn::Result<bool> {
    match &code.0 {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) => Ok(flag.value),
        _ => Err(syn::Error::new_spanned(
            code,
            format!("`{name}` takes `true` or `false`: {}", attr.usage(name)),
        )),
    }
}

/// A string literal, not empty.
pub(crate) fn string(attr: &Attr, name: &str, code: &Code) -> syn::Result<String> {
    let usage = attr.usage(name);
    match &code.0 {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) if text.value().is_empty() => Err(syn::Error::new_spanned(
            text,
            format!("`{name}` must not be empty: leave it out, or write {usage}"),
        )),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(text.value()),
        _ => Err(syn::Error::new_spanned(
            code,
            format!("`{name}` takes a string literal: {usage}"),
        )),
    }
}

/// A tag: a string without `{` or `}`.
pub(crate) fn tag_name(attr: &Attr, code: &Code) -> syn::Result<String> {
    let tag = string(attr, "tag", code)?;
    if tag.contains(['{', '}']) {
        return Err(syn::Error::new_spanned(
            code,
            "`tag` must not contain `{` or `}`: they delimit the tag in its Redis key (`CM:tag:{cats}`)",
        ));
    }
    Ok(tag)
}

/// The path of a method: `hit = Self::on_hit`.
pub(crate) fn method(attr: &Attr, name: &str, code: &Code) -> syn::Result<ExprPath> {
    match &code.0 {
        Expr::Path(path) => Ok(path.clone()),
        _ => Err(syn::Error::new_spanned(
            code,
            format!(
                "`{name}` takes the path of a method: {}; write the code in a method and name it here",
                attr.usage(name)
            ),
        )),
    }
}

/// How a node's key is made.
pub(crate) enum KeySource {
    /// `key = "cat:{id}"`.
    Template(LitStr),
    /// `key = Self::cache_key`: a `fn(&Self) -> String`.
    Method(ExprPath),
}

/// A node's key: a template or a method.
pub(crate) fn key_source(attr: &Attr, code: &Code) -> syn::Result<KeySource> {
    match &code.0 {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(KeySource::Template(text.clone())),
        Expr::Path(path) => Ok(KeySource::Method(path.clone())),
        _ => Err(syn::Error::new_spanned(
            code,
            format!(
                "`key` takes a template of the fields or the path of a method: {}",
                attr.usage("key")
            ),
        )),
    }
}

/// `crate = my_app::cacheme` (or `crate = "my_app::cacheme"`, serde's way):
/// a path without generic arguments.
pub(crate) fn crate_path(attr: &Attr, code: &Code) -> syn::Result<Path> {
    let path = match &code.0 {
        Expr::Path(ExprPath {
            qself: None, path, ..
        }) => Some(path.clone()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => text.parse::<Path>().ok(),
        _ => None,
    };
    match path {
        Some(path) if path.segments.iter().all(|s| s.arguments.is_none()) => Ok(path),
        _ => Err(syn::Error::new_spanned(
            code,
            format!(
                "`crate` takes the path of the cacheme crate: {}",
                attr.usage("crate")
            ),
        )),
    }
}

/// The runtime's path: `crate = ..`, or `::cacheme`.
pub(crate) fn runtime_path(attr: &Attr, code: Option<&Code>, errors: &mut Errors) -> Path {
    code.and_then(|code| errors.take(crate_path(attr, code)))
        .unwrap_or_else(|| syn::parse_quote!(::cacheme))
}

/// `path` with every token at `span`: for a path inside `quote_spanned!`,
/// so that the whole call it starts is reported at `span`.
pub(crate) fn respanned(path: &Path, span: Span) -> TokenStream {
    path.to_token_stream()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

/// One path or a list of them: `invalid_sources = [a, b]`.
pub(crate) fn paths(attr: &Attr, name: &str, code: &Code) -> syn::Result<Vec<Path>> {
    let elems: Vec<&Expr> = match &code.0 {
        Expr::Array(array) => array.elems.iter().collect(),
        other => vec![other],
    };
    let mut errors = Errors::default();
    let mut paths = Vec::new();
    for elem in elems {
        match ungroup(elem) {
            Expr::Path(path) if path.qself.is_none() => paths.push(path.path.clone()),
            other => errors.push(syn::Error::new_spanned(
                other,
                format!("`{name}` lists paths of fns: {}", attr.usage(name)),
            )),
        }
    }
    errors.finish()?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::super::usage::{CACHEME, NODE};
    use super::*;

    fn code(tokens: TokenStream) -> Code {
        Code(syn::parse2(tokens).expect("an expression"))
    }

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
        let ttl = |tokens| duration(&NODE, "ttl", &code(tokens));
        assert_eq!(ttl(quote!(300)).ok(), Some(Millis(300_000)));
        assert_eq!(ttl(quote!(1500ms)).ok(), Some(Millis(1_500)));
        assert_eq!(ttl(quote!("5m")).ok(), Some(Millis(300_000)));
        let zero = ttl(quote!(0)).err().map(|e| e.to_string());
        assert!(zero.is_some_and(|m| m.contains("longer than zero")));
        let bad = ttl(quote!(1.5)).err().map(|e| e.to_string());
        assert_eq!(
            bad.as_deref(),
            Some(
                r#"`ttl` must be whole seconds or a string with a unit: `ttl = 300` or `ttl = "5m"` (seconds, or "1500ms", "30s", "5m", "2h", "1d")"#
            )
        );
    }

    #[test]
    fn durations_print_as_written_in_code() {
        assert_eq!(
            Millis(300_000).to_token_stream().to_string(),
            ":: core :: time :: Duration :: from_secs (300)"
        );
        assert_eq!(
            Millis(1_500).to_token_stream().to_string(),
            ":: core :: time :: Duration :: from_millis (1500)"
        );
        assert_eq!(Millis(1_500).to_string(), "1500ms");
        assert_eq!(Millis(60_000).to_string(), "60s");
    }

    #[test]
    fn counts_tags_and_paths() {
        let capacity = |tokens| count(&CACHEME, "local_capacity", &code(tokens));
        assert_eq!(capacity(quote!(10000)).ok(), Some(10_000));
        assert!(capacity(quote!(0)).is_err());
        assert!(capacity(quote!("10")).is_err());

        assert_eq!(
            tag_name(&NODE, &code(quote!("cats"))).ok().as_deref(),
            Some("cats")
        );
        assert!(tag_name(&NODE, &code(quote!("{cats}"))).is_err());
        assert!(tag_name(&NODE, &code(quote!(""))).is_err());
        assert!(tag_name(&NODE, &code(quote!(cats))).is_err());

        let path = |tokens| {
            crate_path(&NODE, &code(tokens))
                .map(|path| path.to_token_stream().to_string())
                .ok()
        };
        assert_eq!(path(quote!(my::cacheme)).as_deref(), Some("my :: cacheme"));
        assert_eq!(path(quote!(::cacheme)).as_deref(), Some(":: cacheme"));
        assert_eq!(path(quote!("self::re")).as_deref(), Some("self :: re"));
        assert_eq!(path(quote!(1 + 2)), None);
        assert_eq!(path(quote!("not a path")), None);
        assert_eq!(path(quote!(Vec::<u8>)), None);
    }
}
