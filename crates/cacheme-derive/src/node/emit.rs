//! The impls the derives generate: `Node` or `InvalidNode` and
//! `IntoInvalidKeys`, `From` the fields, and the node's registration.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{DeriveInput, Field, Path};

use super::parse::{InvalidNode, Key, Node, Piece};
use crate::args::values::respanned;

/// `#[derive(Node)]`.
pub(super) fn node(input: &DeriveInput, node: &Node<'_>) -> TokenStream {
    let krate = &node.krate;
    let ident = &input.ident;
    let name = ident.unraw().to_string();
    let value = &node.value;
    let tag = node.tag.as_ref().map(|tag| quote!(.with_tag(#tag)));
    let ttl = node.ttl.map(|ttl| quote!(.with_ttl(#ttl)));
    let stale = node.stale.map(|stale| quote!(.with_stale(#stale)));
    let version = node.version.as_ref().map(|v| quote!(.with_version(#v)));
    let refresh_after = node
        .refresh_after
        .map(|age| quote!(.with_refresh_after(#age)));
    let fail_safe = node.fail_safe.iter().map(|(name, duration)| {
        let builder = quote::format_ident!("with_{}", name);
        quote!(.#builder(#duration))
    });
    // A local tier keeps values in memory and hands out copies: it needs Clone.
    let local = node.local.map(|(ttl, capacity)| {
        let ttl = match ttl {
            Some(ttl) => quote!(#ttl),
            None => quote!(#krate::LocalSpec::DEFAULT.ttl()),
        };
        let capacity = match capacity {
            Some(capacity) => quote!(#capacity),
            None => quote!(#krate::LocalSpec::DEFAULT.capacity()),
        };
        quote!(.with_local(#krate::LocalSpec::new(#ttl, #capacity)))
    });
    let local_clone = local.is_some().then(|| {
        // Spanned on the value type: a type without `Clone` is reported there.
        let krate = respanned(krate, value.span());
        quote_spanned! {value.span()=>
            const LOCAL_CLONE: ::core::option::Option<#krate::__private::CloneFn<Self::Value>> =
                ::core::option::Option::Some(#krate::__private::local_clone::<#value>);
        }
    });
    let key = key_fn(&node.key, krate);
    let invalid_nodes = node.invalid_nodes.as_ref().map(|path| {
        // Spanned on the method's name: a return type that is not
        // `IntoInvalidKeys` is reported there.
        let span = path
            .path
            .segments
            .last()
            .map_or_else(|| path.span(), |last| last.ident.span());
        let push_into = respanned(krate, span);
        let push_into = quote_spanned!(span=> #push_into::IntoInvalidKeys::push_into);
        quote! {
            fn invalid_nodes(&self, out: &mut #krate::InvalidKeys) {
                #push_into(#path(self), out);
            }
        }
    });
    // The hooks are coerced to fn pointers first, so that a wrong signature
    // is reported on the user's path, with the expected signature.
    let hit = node.hit.as_ref().map(|path| {
        quote! {
            fn hit(&self, key: &str, value: &Self::Value) {
                let hit: fn(&Self, &str, &Self::Value) = #path;
                hit(self, key, value);
            }
        }
    });
    let ttl_for = node.ttl_for.as_ref().map(|path| {
        quote! {
            const TTL_FOR: ::core::option::Option<
                fn(&Self::Value) -> ::core::option::Option<::core::time::Duration>,
            > = ::core::option::Option::Some(#path);
        }
    });
    let miss = node.miss.as_ref().map(|path| {
        quote! {
            fn miss(&self, key: &str) {
                let miss: fn(&Self, &str) = #path;
                miss(self, key);
            }
        }
    });
    let from = from_impl(input, &node.fields);
    quote! {
        #[automatically_derived]
        impl #krate::Node for #ident {
            type Value = #value;

            const SPEC: &'static #krate::Spec = &#krate::Spec::node(#name)
                #tag
                #ttl
                #stale
                #version
                #refresh_after
                #local
                #(#fail_safe)*;
            #local_clone
            #ttl_for

            #key
            #invalid_nodes
            #hit
            #miss
        }

        #from

        #krate::__private::inventory::submit! {
            #krate::__private::Registration::new(<#ident as #krate::Node>::SPEC)
        }
    }
}

/// `#[derive(InvalidNode)]`.
pub(super) fn invalid_node(input: &DeriveInput, node: &InvalidNode<'_>) -> TokenStream {
    let krate = &node.krate;
    let ident = &input.ident;
    let key = key_fn(&node.key, krate);
    let from = from_impl(input, &node.fields);
    quote! {
        #[automatically_derived]
        impl #krate::InvalidNode for #ident {
            #key
        }

        #[automatically_derived]
        impl #krate::IntoInvalidKeys for #ident {
            fn push_into(self, out: &mut #krate::InvalidKeys) {
                out.push(#krate::InvalidNode::key(&self));
            }
        }

        #[automatically_derived]
        impl #krate::IntoInvalidKeys for &#ident {
            fn push_into(self, out: &mut #krate::InvalidKeys) {
                out.push(#krate::InvalidNode::key(self));
            }
        }

        #from
    }
}

/// `fn key(&self) -> String`, from a method or a template.
fn key_fn(key: &Key<'_>, krate: &Path) -> TokenStream {
    let pieces = match key {
        Key::Method(path) => {
            // Coerced to a fn pointer first, like the hooks.
            return quote! {
                fn key(&self) -> ::std::string::String {
                    let key: fn(&Self) -> ::std::string::String = #path;
                    key(self)
                }
            };
        }
        Key::Template(pieces) => pieces,
    };
    if let [Piece::Text(text)] = pieces.as_slice() {
        return quote! {
            fn key(&self) -> ::std::string::String {
                ::std::string::String::from(#text)
            }
        };
    }
    let mut capacity = 0;
    let mut pushes = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => {
                capacity += text.len();
                let mut chars = text.chars();
                pushes.push(match (chars.next(), chars.next()) {
                    (Some(c), None) => quote!(key.push(#c);),
                    _ => quote!(key.push_str(#text);),
                });
            }
            Piece::Field(field) => {
                // Values are usually short: numbers, ids, slugs.
                capacity += 8;
                let ident = &field.ident;
                // Spanned on the field's type: a type without `Display` is reported there.
                let span = field.ty.span();
                let push_escaped = respanned(krate, span);
                let push_escaped = quote_spanned!(span=> #push_escaped::key::push_escaped);
                pushes.push(quote!(#push_escaped(&mut key, &self.#ident);));
            }
        }
    }
    let capacity = Literal::usize_unsuffixed(capacity);
    quote! {
        fn key(&self) -> ::std::string::String {
            let mut key = ::std::string::String::with_capacity(#capacity);
            #(#pushes)*
            key
        }
    }
}

/// `From` the fields: the one field's type, a tuple of several, or `()`.
fn from_impl(input: &DeriveInput, fields: &[&Field]) -> TokenStream {
    let ident = &input.ident;
    let names: Vec<_> = fields.iter().map(|field| &field.ident).collect();
    let types: Vec<_> = fields.iter().map(|field| &field.ty).collect();
    let (source, pattern) = match (names.as_slice(), types.as_slice()) {
        ([], []) => (quote!(()), quote!(())),
        ([name], [ty]) => (quote!(#ty), quote!(#name)),
        _ => (quote!((#(#types),*)), quote!((#(#names),*))),
    };
    quote! {
        #[automatically_derived]
        impl ::core::convert::From<#source> for #ident {
            fn from(#pattern: #source) -> Self {
                Self { #(#names),* }
            }
        }
    }
}
