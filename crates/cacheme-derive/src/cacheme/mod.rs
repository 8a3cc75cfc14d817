//! `#[cacheme(...)]`: memoize a fn or a method.
//!
//! The item and the arguments are read ([`parse`], with the shared parser),
//! checked ([`check`]), turned into a [`plan`] of what to generate, and
//! emitted as a few statements around the fn's original body ([`emit`]).

mod batch;
mod check;
mod emit;
mod parse;
mod plan;

use proc_macro2::TokenStream;

use crate::args::Errors;

/// `#[cacheme(args)] item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let function = parse::item(item)?;
    let mut errors = Errors::default();
    let parsed = parse::args(args, &mut errors);
    if parsed.name("batch").is_some()
        || parsed.name("each").is_some()
        || parsed.name("by").is_some()
    {
        return batch::expand(&function, parsed, errors);
    }
    let plan = plan::Plan::new(&function, parsed, &mut errors);
    let plan = errors.finish_with(plan)?;
    Ok(emit::function(&plan, function))
}
