//! The code the derives generate.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, Fields};

use crate::attrs::{self, Errors, KeySource, Millis};
use crate::template::{self, Segment};

/// `#[derive(Node)]`.
pub(crate) fn node(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let fields = errors.take(named_fields(input, "Node"));
    let names = field_names(fields.as_deref());
    let args = errors.take(attrs::node_args(input, &names));
    let key = match (&fields, &args) {
        (Some(fields), Some(args)) => errors.take(key_fn(&args.key, input, fields)),
        _ => None,
    };
    errors.finish()?;
    let (Some(fields), Some(args), Some(key)) = (fields, args, key) else {
        unreachable!("errors were reported above")
    };

    let ident = &input.ident;
    let name = ident.unraw().to_string();
    let tag = args.tag.unwrap_or_else(|| name.clone());
    let value = &args.value;
    let ttl = args.ttl.map(duration).map(|ttl| quote!(.with_ttl(#ttl)));
    let stale = args.stale.map(|stale| quote!(.with_stale(#stale)));
    let version = args.version.map(|version| quote!(.with_version(#version)));
    let refresh_after = args
        .refresh_after
        .map(duration)
        .map(|age| quote!(.with_refresh_after(#age)));
    let invalid_nodes = args.invalid_nodes.map(|path| {
        // Spanned on the method's name: a return type that is not
        // `IntoInvalidKeys` is reported there.
        let span = path
            .path
            .segments
            .last()
            .map_or_else(|| path.span(), |last| last.ident.span());
        let push_into = quote_spanned!(span=> ::cacheme::IntoInvalidKeys::push_into);
        quote! {
            fn invalid_nodes(&self, out: &mut ::cacheme::InvalidKeys) {
                #push_into(#path(self), out);
            }
        }
    });
    // The hooks are coerced to fn pointers first, so that a wrong signature
    // is reported on the user's path, with the expected signature.
    let hit = args.hit.map(|path| {
        quote! {
            fn hit(&self, key: &str, value: &Self::Value) {
                let hit: fn(&Self, &str, &Self::Value) = #path;
                hit(self, key, value);
            }
        }
    });
    let miss = args.miss.map(|path| {
        quote! {
            fn miss(&self, key: &str) {
                let miss: fn(&Self, &str) = #path;
                miss(self, key);
            }
        }
    });
    // A local tier keeps values in memory and hands out copies: it needs Clone.
    let local = (args.local_ttl.is_some() || args.local_capacity.is_some()).then(|| {
        let ttl = match args.local_ttl {
            Some(millis) => duration(millis),
            None => quote!(::cacheme::LocalSpec::DEFAULT.ttl()),
        };
        let capacity = match args.local_capacity {
            Some(capacity) => quote!(#capacity),
            None => quote!(::cacheme::LocalSpec::DEFAULT.capacity()),
        };
        quote!(::cacheme::LocalSpec::new(#ttl, #capacity))
    });
    let local_clone = local.is_some().then(|| {
        quote_spanned! {value.span()=>
            const LOCAL_CLONE: ::core::option::Option<::cacheme::__private::CloneFn<Self::Value>> =
                ::core::option::Option::Some(::cacheme::__private::local_clone::<#value>);
        }
    });
    let local = local.map(|local| quote!(.with_local(#local)));
    let from = from_impl(input, &fields);
    Ok(quote! {
        impl ::cacheme::Node for #ident {
            type Value = #value;

            const SPEC: &'static ::cacheme::Spec = &::cacheme::Spec::node(#name)
                .with_tag(#tag)
                #ttl
                #stale
                #version
                #refresh_after
                #local;
            #local_clone

            #key
            #invalid_nodes
            #hit
            #miss
        }

        #from

        ::cacheme::__private::inventory::submit! {
            ::cacheme::__private::Registration::new(<#ident as ::cacheme::Node>::SPEC)
        }
    })
}

/// `#[derive(InvalidNode)]`.
pub(crate) fn invalid_node(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let fields = errors.take(named_fields(input, "InvalidNode"));
    let names = field_names(fields.as_deref());
    let args = errors.take(attrs::invalid_node_args(input, &names));
    let key = match (&fields, &args) {
        (Some(fields), Some(args)) => errors.take(key_fn(&args.key, input, fields)),
        _ => None,
    };
    errors.finish()?;
    let (Some(fields), Some(key)) = (fields, key) else {
        unreachable!("errors were reported above")
    };

    let ident = &input.ident;
    let from = from_impl(input, &fields);
    Ok(quote! {
        impl ::cacheme::InvalidNode for #ident {
            #key
        }

        impl ::cacheme::IntoInvalidKeys for #ident {
            fn push_into(self, out: &mut ::cacheme::InvalidKeys) {
                out.push(::cacheme::InvalidNode::key(&self));
            }
        }

        impl ::cacheme::IntoInvalidKeys for &#ident {
            fn push_into(self, out: &mut ::cacheme::InvalidKeys) {
                out.push(::cacheme::InvalidNode::key(self));
            }
        }

        #from
    })
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

/// The names placeholders use for `fields` (`type` for `r#type`).
fn field_names(fields: Option<&[&Field]>) -> Vec<String> {
    fields
        .unwrap_or_default()
        .iter()
        .filter_map(|field| field.ident.as_ref())
        .map(|ident| ident.unraw().to_string())
        .collect()
}

/// `fn key(&self) -> String`, from a template or a method.
fn key_fn(key: &KeySource, input: &DeriveInput, fields: &[&Field]) -> syn::Result<TokenStream> {
    let template = match key {
        KeySource::Method(path) => {
            // Coerced to a fn pointer first, like the hooks.
            return Ok(quote! {
                fn key(&self) -> ::std::string::String {
                    let key: fn(&Self) -> ::std::string::String = #path;
                    key(self)
                }
            });
        }
        KeySource::Template(template) => template,
    };
    let owner = input.ident.unraw().to_string();
    let names = field_names(Some(fields));
    let segments = template::parse(&template.value(), &owner, &names)
        .map_err(|message| syn::Error::new_spanned(template, message))?;

    if let [Segment::Literal(text)] = segments.as_slice() {
        return Ok(quote! {
            fn key(&self) -> ::std::string::String {
                ::std::string::String::from(#text)
            }
        });
    }
    let mut capacity = 0;
    let mut pushes = Vec::new();
    for segment in &segments {
        match segment {
            Segment::Literal(text) => {
                capacity += text.len();
                let mut chars = text.chars();
                pushes.push(match (chars.next(), chars.next()) {
                    (Some(c), None) => quote!(key.push(#c);),
                    _ => quote!(key.push_str(#text);),
                });
            }
            Segment::Field(name) => {
                // Values are usually short: numbers, ids, slugs.
                capacity += 8;
                let position = names.iter().position(|n| n == name);
                let Some(field) = position.map(|i| fields[i]) else {
                    unreachable!("the template parser checked the field names")
                };
                let ident = &field.ident;
                // Spanned on the field's type: a type without `Display` is reported there.
                let push_escaped = quote_spanned!(field.ty.span()=> ::cacheme::key::push_escaped);
                pushes.push(quote!(#push_escaped(&mut key, &self.#ident);));
            }
        }
    }
    let capacity = Literal::usize_unsuffixed(capacity);
    Ok(quote! {
        fn key(&self) -> ::std::string::String {
            let mut key = ::std::string::String::with_capacity(#capacity);
            #(#pushes)*
            key
        }
    })
}

/// `From` the fields: the one field's type, a tuple of several, or `()`.
fn from_impl(input: &DeriveInput, fields: &[&Field]) -> TokenStream {
    let ident = &input.ident;
    let names: Vec<_> = fields.iter().map(|field| &field.ident).collect();
    let types: Vec<_> = fields.iter().map(|field| &field.ty).collect();
    match (names.as_slice(), types.as_slice()) {
        ([], []) => quote! {
            impl ::core::convert::From<()> for #ident {
                fn from(_: ()) -> Self {
                    Self {}
                }
            }
        },
        ([name], [ty]) => quote! {
            impl ::core::convert::From<#ty> for #ident {
                fn from(#name: #ty) -> Self {
                    Self { #name }
                }
            }
        },
        _ => quote! {
            impl ::core::convert::From<(#(#types),*)> for #ident {
                fn from((#(#names),*): (#(#types),*)) -> Self {
                    Self { #(#names),* }
                }
            }
        },
    }
}

/// `Some(Duration::from_secs(..))` or `from_millis`.
fn duration(Millis(millis): Millis) -> TokenStream {
    if millis.is_multiple_of(1000) {
        let secs = Literal::u64_unsuffixed(millis / 1000);
        quote!(::core::time::Duration::from_secs(#secs))
    } else {
        let millis = Literal::u64_unsuffixed(millis);
        quote!(::core::time::Duration::from_millis(#millis))
    }
}
