//! `#[derive(Node)]` and `#[derive(InvalidNode)]`: the struct and its
//! attribute are read and checked ([`parse`]), then turned into impls of the
//! runtime's traits ([`emit`]).

mod emit;
mod parse;

use proc_macro2::TokenStream;
use syn::{Data, DeriveInput, Field, Fields};

use crate::args::Errors;

/// `#[derive(Node)]`.
pub(crate) fn derive_node(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let fields = errors.take(named_fields(input, "Node"));
    let node = parse::node(input, fields.as_deref(), &mut errors);
    let node = errors.finish_with(node)?;
    Ok(emit::node(input, &node))
}

/// `#[derive(InvalidNode)]`.
pub(crate) fn derive_invalid_node(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let fields = errors.take(named_fields(input, "InvalidNode"));
    let node = parse::invalid_node(input, fields.as_deref(), &mut errors);
    let node = errors.finish_with(node)?;
    Ok(emit::invalid_node(input, &node))
}

/// The named fields of a struct (none for a unit struct); an error for
/// tuple structs, enums, unions and generic structs.
fn named_fields<'a>(input: &'a DeriveInput, derive: &str) -> syn::Result<Vec<&'a Field>> {
    let ident = &input.ident;
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => Ok(fields.named.iter().collect()),
            Fields::Unit => Ok(Vec::new()),
            Fields::Unnamed(fields) => Err(syn::Error::new_spanned(
                fields,
                format!(
                    "#[derive({derive})] needs named fields, which the key template refers to: \
                     write `struct {ident} {{ id: u64 }}` rather than `struct {ident}(u64)`"
                ),
            )),
        },
        Data::Enum(data) => Err(syn::Error::new_spanned(
            data.enum_token,
            format!(
                "#[derive({derive})] works on structs with named fields, not on enums: \
                 write one struct per kind of key, e.g. `struct {ident} {{ id: u64 }}`"
            ),
        )),
        Data::Union(data) => Err(syn::Error::new_spanned(
            data.union_token,
            format!("#[derive({derive})] works on structs with named fields, not on unions"),
        )),
    };
    if !input.generics.params.is_empty() {
        let generics = syn::Error::new_spanned(
            &input.generics,
            format!(
                "#[derive({derive})] does not support generic structs: a node type has one tag and \
                 is registered once, so write a concrete struct (one per value type) with owned fields"
            ),
        );
        return Err(match fields {
            Ok(_) => generics,
            Err(mut error) => {
                error.combine(generics);
                error
            }
        });
    }
    fields
}
