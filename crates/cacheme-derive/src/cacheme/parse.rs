//! The item and the attribute's arguments, as written.

use darling::FromMeta;
use proc_macro2::TokenStream;
use syn::ItemFn;

use crate::args::usage::CACHEME;
use crate::args::{self, Code, Errors, Parsed};

/// The arguments of `#[cacheme(...)]`, by name.
#[derive(FromMeta, Default)]
pub(super) struct Args {
    pub(super) key: Option<Code>,
    pub(super) node: Option<Code>,
    pub(super) invalid_keys: Option<Code>,
    pub(super) tag: Option<Code>,
    pub(super) ttl: Option<Code>,
    pub(super) stale: Option<Code>,
    pub(super) skip: Option<Code>,
    pub(super) hit: Option<Code>,
    pub(super) miss: Option<Code>,
    pub(super) invalid_sources: Option<Code>,
    pub(super) cache: Option<Code>,
    pub(super) local_ttl: Option<Code>,
    pub(super) local_capacity: Option<Code>,
    pub(super) fail_safe: Option<Code>,
    pub(super) fail_safe_throttle: Option<Code>,
    pub(super) soft_timeout: Option<Code>,
    pub(super) hard_timeout: Option<Code>,
    pub(super) batch: Option<Code>,
    pub(super) each: Option<Code>,
    pub(super) by: Option<Code>,
    #[darling(rename = "crate")]
    pub(super) krate: Option<Code>,
}

/// The attribute's arguments.
pub(super) fn args(tokens: TokenStream, errors: &mut Errors) -> Parsed<Args> {
    args::read(&CACHEME, [tokens], errors)
}

/// The item: a fn or method with a body.
pub(super) fn item(item: TokenStream) -> syn::Result<ItemFn> {
    syn::parse2::<ItemFn>(item.clone()).map_err(|error| {
        match syn::parse2::<syn::TraitItemFn>(item) {
            Ok(declaration) if declaration.default.is_none() => syn::Error::new_spanned(
                &declaration.sig,
                "#[cacheme] needs the fn's body: put it on the fn in an `impl` block, \
                 or on a trait method with a default body",
            ),
            _ => syn::Error::new(
                error.span(),
                format!("#[cacheme] goes on a fn or a method: {error}"),
            ),
        }
    })
}
