//! Tokens to `name = value` arguments, checked against the usage table.

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Token, Type, token};

use super::usage::{Attr, Shape};
use super::{Code, Errors};

/// One argument with a known name.
pub(super) struct Arg {
    pub(super) name: Ident,
    /// `None` when the value was bad (and reported).
    pub(super) value: Option<Code>,
}

/// The name as the table spells it (`r#type` is `type`).
pub(super) fn name_of(ident: &Ident) -> String {
    ident.unraw().to_string()
}

/// The arguments in `tokens` whose names `attr` takes and are not in
/// `seen` (the names of the attribute's earlier arguments, which this adds
/// to); every problem is pushed to `errors`.
pub(super) fn parse(
    attr: &Attr,
    tokens: TokenStream,
    seen: &mut Vec<Ident>,
    errors: &mut Errors,
) -> Vec<Arg> {
    let mut args = Vec::new();
    let parser = |input: ParseStream<'_>| {
        while !input.is_empty() {
            if let Some(arg) = parse_one(attr, input, seen, errors)? {
                args.push(arg);
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    };
    if let Err(error) = parser.parse2(tokens) {
        errors.push(error);
    }
    args
}

/// One argument, up to the next comma; `None` if it was reported.
fn parse_one(
    attr: &Attr,
    input: ParseStream<'_>,
    seen: &mut Vec<Ident>,
    errors: &mut Errors,
) -> syn::Result<Option<Arg>> {
    let name_value = format!(
        "#[{}(...)] takes `name = value` arguments, e.g. {}",
        attr.name, attr.example
    );
    if input.peek(Lit) {
        let lit: Lit = input.parse()?;
        errors.push(syn::Error::new_spanned(lit, name_value));
        return Ok(None);
    }
    // `parse_any`: a keyword (`crate`, `type`) is a name too.
    let name = input.call(Ident::parse_any)?;
    let text = name_of(&name);
    if input.peek(Token![::]) {
        let mut path = TokenStream::from(TokenTree::Ident(name));
        while input.peek(Token![::]) {
            let colons: Token![::] = input.parse()?;
            let segment = input.call(Ident::parse_any)?;
            colons.to_tokens(&mut path);
            path.extend([TokenTree::Ident(segment)]);
        }
        errors.push(syn::Error::new_spanned(
            path,
            format!("{name_value}; names are: {}", attr.names()),
        ));
        skip_value(input)?;
        return Ok(None);
    }
    let Some(argument) = attr.argument(&text) else {
        errors.push(attr.unknown(&name));
        skip_value(input)?;
        return Ok(None);
    };
    if seen.iter().any(|earlier| name_of(earlier) == text) {
        errors.push(syn::Error::new_spanned(
            &name,
            format!("`{text}` is given twice: keep one"),
        ));
        skip_value(input)?;
        return Ok(None);
    }
    seen.push(name.clone());
    let usage = argument.usage;
    if input.peek(token::Paren) || input.peek(token::Bracket) || input.peek(token::Brace) {
        // `ttl(300)`: reported whole, name and group.
        let group: TokenTree = input.parse()?;
        errors.push(syn::Error::new_spanned(
            quote!(#name #group),
            format!("write `{text} = ...` rather than `{text}(...)`: {usage}"),
        ));
        return Ok(Some(Arg { name, value: None }));
    }
    if !input.peek(Token![=]) {
        let value = match argument.shape {
            // `stale` alone: `stale = true`.
            Shape::Flag => Some(Code(Expr::Lit(ExprLit {
                attrs: Vec::new(),
                lit: Lit::Bool(LitBool::new(true, name.span())),
            }))),
            Shape::Expr | Shape::Type => {
                errors.push(syn::Error::new_spanned(
                    &name,
                    format!("`{text}` needs a value: {usage}"),
                ));
                None
            }
        };
        return Ok(Some(Arg { name, value }));
    }
    input.parse::<Token![=]>()?;
    let value = match argument.shape {
        Shape::Expr | Shape::Flag => Some(Code(input.parse()?)),
        Shape::Type => match parse_type(input) {
            Some(ty) => Some(Code(Expr::Verbatim(ty.into_token_stream()))),
            None => {
                let expr: Expr = input.parse()?;
                errors.push(syn::Error::new_spanned(
                    expr,
                    format!("`{text}` takes a type: {usage}"),
                ));
                None
            }
        },
    };
    Ok(Some(Arg { name, value }))
}

/// A type, or a string literal holding one (`value = "Vec<Cat>"`, darling's
/// style); `None`, with nothing consumed, if there is no type.
fn parse_type(input: ParseStream<'_>) -> Option<Type> {
    if input.peek(LitStr) {
        let fork = input.fork();
        let text: LitStr = fork.parse().ok()?;
        let ty = text.parse::<Type>().ok()?;
        if fork.is_empty() || fork.peek(Token![,]) {
            input.parse::<LitStr>().ok()?;
            return Some(ty);
        }
        return None;
    }
    let fork = input.fork();
    fork.parse::<Type>().ok()?;
    if !(fork.is_empty() || fork.peek(Token![,])) {
        return None;
    }
    input.parse().ok()
}

/// Skip the rest of an argument that was reported: `= value`, if any.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    if input.parse::<Option<Token![=]>>()?.is_none() {
        return Ok(());
    }
    let fork = input.fork();
    if fork.parse::<Expr>().is_ok() && (fork.is_empty() || fork.peek(Token![,])) {
        return input.parse::<Expr>().map(drop);
    }
    if parse_type(input).is_some() {
        return Ok(());
    }
    // Neither: up to the next comma.
    input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tree, next)) = rest.token_tree() {
            if matches!(&tree, TokenTree::Punct(punct) if punct.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    })
}
