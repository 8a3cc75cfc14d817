//! The one attribute parser of the three macros.
//!
//! `#[node(...)]`, `#[invalid_node(...)]` and `#[cacheme(...)]` are read the
//! same way, by [`read`]:
//!
//! 1. the tokens become `name = value` arguments ([`syntax`]): a value is an
//!    expression taken as written, or a type for `value = Vec<Cat>` (which
//!    `syn::Meta` cannot parse), as the attribute's [usage table](usage) says;
//! 2. each name is checked against that table: an unknown name gets a
//!    suggestion, a repeated one an error;
//! 3. darling matches the arguments to the fields of the macro's own
//!    `#[derive(FromMeta)]` struct, each field an `Option<Code>`;
//! 4. the macro reads each value with [`values`], where durations, counts,
//!    tag names and paths are parsed, each in one place.
//!
//! Every error goes to one [`Errors`], so that all the errors of an input are
//! reported at once. (It collects `syn::Error`s rather than darling's: a
//! `syn::Error::new_spanned` underlines a whole expression, where darling's
//! error keeps the span of its first token only.)

mod syntax;
pub(crate) mod usage;
pub(crate) mod values;

use darling::FromMeta;
use darling::ast::NestedMeta;
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Expr, Ident, Meta, MetaNameValue, Path, Type};

pub(crate) use usage::Attr;

/// Collects errors, so that one compilation reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The value of `result`, or `None` and its error kept.
    pub(crate) fn take<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// Every error so far, if any.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }

    /// Every error so far, or `value`, which is `Some` when nothing failed.
    pub(crate) fn finish_with<T>(self, value: Option<T>) -> syn::Result<T> {
        self.finish()?;
        Ok(value.expect("a value is missing only after an error"))
    }
}

/// An argument's value, as written. (darling's own `syn::Expr` parses a
/// string literal's contents as code, which would turn `key = "cat:1"` into
/// an error.) A type (`value = Vec<Cat>`) is kept as `Expr::Verbatim`.
#[derive(Clone)]
pub(crate) struct Code(pub(crate) Expr);

impl FromMeta for Code {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        Ok(Code(ungroup(expr).clone()))
    }
}

impl ToTokens for Code {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.0.to_tokens(tokens);
    }
}

/// The expression inside the invisible groups a `macro_rules!` fragment
/// (`#[cacheme(key = $key)]`) comes in.
pub(crate) fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => ungroup(&group.expr),
        expr => expr,
    }
}

/// A type argument, read back from its `Code`.
pub(crate) fn type_of(code: &Code) -> syn::Result<Type> {
    syn::parse2(code.to_token_stream())
}

/// An attribute's arguments: darling's struct of them, and every valid name
/// given (with its span), bad values included.
pub(crate) struct Parsed<T> {
    pub(crate) args: T,
    pub(crate) given: Vec<Ident>,
}

impl<T> Parsed<T> {
    /// The name as written, if `name` was given.
    pub(crate) fn name(&self, name: &str) -> Option<&Ident> {
        self.given
            .iter()
            .find(|ident| syntax::name_of(ident) == name)
    }
}

/// Read the arguments of `attr` from the contents of its parentheses (one
/// stream per attribute: `#[node(..)]` may be written several times).
pub(crate) fn read<T: FromMeta + Default>(
    attr: &Attr,
    lists: impl IntoIterator<Item = TokenStream>,
    errors: &mut Errors,
) -> Parsed<T> {
    let mut given: Vec<Ident> = Vec::new();
    let mut items = Vec::new();
    for tokens in lists {
        for arg in syntax::parse(attr, tokens, &mut given, errors) {
            if let Some(value) = arg.value {
                items.push(NestedMeta::Meta(Meta::NameValue(MetaNameValue {
                    path: Path::from(Ident::new(&syntax::name_of(&arg.name), arg.name.span())),
                    eq_token: Default::default(),
                    value: value.0,
                })));
            }
        }
    }
    // Every name is known and given once, and every value is an `Expr`: the
    // match cannot fail, but its errors are kept should it ever.
    let args = errors
        .take(T::from_list(&items).map_err(syn::Error::from))
        .unwrap_or_default();
    Parsed { args, given }
}
