//! What the fn and the arguments must be: the checks that need no plan.

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::{GenericArgument, Ident, ItemFn, Path, PathArguments, ReturnType, Type};

use super::parse::Args;
use crate::args::{Errors, Parsed};

/// The identifier through which `invalid_keys` sees the loaded value.
pub(super) const RESULT: &str = "cacheme_result";

/// How the fn returns its value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Returns {
    /// `Result<V, E>` (or an alias): `Ok` is cached, `Err` returned as is.
    Result,
    /// Anything else: the whole value is cached.
    Value,
}

/// Check what the fn looks like; return how it returns its value, and the
/// cached type.
pub(super) fn function(
    function: &ItemFn,
    krate: &Path,
    errors: &mut Errors,
) -> Option<(Returns, TokenStream)> {
    let sig = &function.sig;
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "#[cacheme] cannot cache a `const fn`: remove `const`, or remove #[cacheme]",
        ));
    }
    let name = &sig.ident;
    let returns = match &sig.output {
        ReturnType::Default => Err(syn::Error::new_spanned(
            sig,
            format!(
                "#[cacheme] caches what a fn returns, and `{name}` returns nothing: there is nothing \
                 to cache. Return the value to cache, or remove #[cacheme]"
            ),
        )),
        ReturnType::Type(_, ty) => value_type(name, ty, krate),
    };
    errors.take(returns)
}

/// How a fn returning `ty` returns its value, and the cached type.
pub(super) fn value_type(
    name: &Ident,
    ty: &Type,
    krate: &Path,
) -> syn::Result<(Returns, TokenStream)> {
    match ty {
        Type::Group(group) => value_type(name, &group.elem, krate),
        Type::Paren(paren) => value_type(name, &paren.elem, krate),
        Type::Tuple(tuple) if tuple.elems.is_empty() => Err(syn::Error::new_spanned(
            ty,
            format!(
                "#[cacheme] caches what a fn returns, and `{name}` returns `()`: there is nothing \
                 to cache. Return the value to cache, or remove #[cacheme]"
            ),
        )),
        Type::Never(_) => Err(syn::Error::new_spanned(
            ty,
            format!("`{name}` never returns: there is nothing to cache; remove #[cacheme]"),
        )),
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            ty,
            "#[cacheme] needs a concrete return type to store and read back: \
             write the type rather than `impl Trait`",
        )),
        Type::Path(path) if path.qself.is_none() => {
            let Some(last) = path.path.segments.last() else {
                return Ok((Returns::Value, ty.to_token_stream()));
            };
            if last.ident != "Result" {
                return Ok((Returns::Value, ty.to_token_stream()));
            }
            // `Result<T, E>`, `io::Result<T>`, `anyhow::Result<T>`: the first
            // argument is the value. Otherwise (`fmt::Result`) ask the type.
            let first = match &last.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
                    GenericArgument::Type(ty) => Some(ty),
                    _ => None,
                }),
                _ => None,
            };
            let value = match first {
                Some(value) => value.to_token_stream(),
                None => quote!(<#ty as #krate::__private::ResultParts>::Ok),
            };
            Ok((Returns::Result, value))
        }
        _ => Ok((Returns::Value, ty.to_token_stream())),
    }
}

/// Nothing is silently dropped: what a node says itself cannot be said
/// again next to it; and only `invalid_keys` may use the loaded value.
pub(super) fn arguments(parsed: &Parsed<Args>, errors: &mut Errors) {
    let args = &parsed.args;
    if args.node.is_some() {
        let local = if args.local_ttl.is_some() {
            "local_ttl"
        } else {
            "local_capacity"
        };
        let conflicts = [
            (
                "key",
                "`key` and `node` both give the cache key: keep one. With `node`, the key is \
                 the node's (its #[node(key = ..)]); remove `node` to use `key` instead",
            ),
            (
                "invalid_keys",
                "a node declares its dependency groups itself, with #[node(invalid_nodes = ..)]: \
                 remove `invalid_keys` here, or use `key = ..` instead of `node`",
            ),
            (
                "tag",
                "a node's values are indexed under the node's tag: set it with \
                 #[node(tag = ..)], and remove `tag` here",
            ),
            (
                local,
                "a node declares its local tier itself, with \
                 #[node(local_ttl = .., local_capacity = ..)]: move it there",
            ),
            (
                "invalid_sources",
                "`invalid_sources` registers sources for this fn's own tag, and with `node` the \
                 tag is the node's: connect the source to it at start-up with \
                 `cacheme::sources::connect(&cache, <YourNode as cacheme::Node>::SPEC.tag, source)`",
            ),
        ];
        for (name, message) in conflicts {
            if let Some(ident) = parsed.name(name) {
                errors.push(syn::Error::new_spanned(ident, message));
            }
        }
    }
    for (code, name) in [
        (&args.key, "key"),
        (&args.node, "node"),
        (&args.skip, "skip"),
        (&args.stale, "stale"),
        (&args.cache, "cache"),
    ] {
        if let Some(code) = code
            && mentions_result(code.to_token_stream())
        {
            errors.push(syn::Error::new_spanned(
                code,
                format!(
                    "`{name}` is computed before the value is loaded, so it cannot use \
                     `{RESULT}`; only `invalid_keys` can"
                ),
            ));
        }
    }
}

/// True if the tokens mention `cacheme_result`.
pub(super) fn mentions_result(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == RESULT,
        TokenTree::Group(group) => mentions_result(group.stream()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::format_ident;

    #[test]
    fn result_mentions_are_found_in_nested_groups() {
        assert!(mentions_result(quote!([format!(
            "u:{}",
            cacheme_result.id
        )])));
        assert!(!mentions_result(quote!([format!("u:{}", book.owner_id)])));
    }

    #[test]
    fn value_types() {
        let name = format_ident!("f");
        let krate: Path = syn::parse_quote!(::cacheme);
        let value = |ty: Type| {
            value_type(&name, &ty, &krate)
                .map(|(_, value)| value.to_string())
                .unwrap_or_else(|error| error.to_string())
        };
        assert_eq!(value(syn::parse_quote!(Result<u8, E>)), "u8");
        assert_eq!(value(syn::parse_quote!(io::Result<Vec<u8>>)), "Vec < u8 >");
        assert_eq!(
            value(syn::parse_quote!(fmt::Result)),
            "< fmt :: Result as :: cacheme :: __private :: ResultParts > :: Ok"
        );
        assert_eq!(value(syn::parse_quote!(Option<u8>)), "Option < u8 >");
        assert!(value(syn::parse_quote!(())).contains("nothing to cache"));
        assert!(value(syn::parse_quote!(impl Serialize)).contains("concrete"));
    }
}
