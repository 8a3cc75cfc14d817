//! `#[cacheme(batch = ids, each = id, key = ..)]`: a fn that takes many ids
//! and returns their values, memoized per id, so that only the missing ids
//! reach its body (one call with all of them).
//!
//! ```text
//! #[cacheme(batch = ids, each = id, key = format!("cat:{id}"), by = |cat: &Cat| cat.id)]
//! async fn get_cats(ids: Vec<u64>) -> Vec<Cat> { .. }
//! ```
//!
//! The generated code builds one lookup per id (its key or node, with `id`
//! bound to a copy of the id), and calls the runtime's batch loader
//! (`__private::load_many`) with the body as the loader of the missing ids:
//! the body sees the batch parameter holding only those. A `Vec<V>` result
//! is matched back to its ids with `by`; a map (`HashMap<Id, V>`,
//! `BTreeMap<Id, V>`) carries its ids.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type};

use super::check::{self, Returns};
use super::emit::spec_statement;
use super::parse::Args;
use super::plan::{SpecArgs, SpecPlan};
use crate::args::usage::CACHEME;
use crate::args::values;
use crate::args::{Code, Errors, Parsed};

/// The kind of collection a batch fn returns.
enum Collection {
    /// `Vec<V>`: each value's id is computed by `by`.
    Vec(Code),
    /// A map from ids to values.
    Map,
}

/// The arguments a batch fn cannot take (yet), with why.
const UNSUPPORTED: &[&str] = &[
    "skip",
    "fail_safe",
    "fail_safe_throttle",
    "soft_timeout",
    "hard_timeout",
];

/// `#[cacheme(batch = ..)]`'s fn.
pub(super) fn expand(
    function: &ItemFn,
    parsed: Parsed<Args>,
    mut errors: Errors,
) -> syn::Result<TokenStream> {
    let errors = &mut errors;
    let krate = values::runtime_path(&CACHEME, parsed.args.krate.as_ref(), errors);
    let returns = check::function(function, &krate, errors);
    check::arguments(&parsed, errors);
    for name in UNSUPPORTED {
        if let Some(ident) = parsed.name(name) {
            errors.push(syn::Error::new_spanned(
                ident,
                format!(
                    "`{name}` is not supported on a batch fn (`batch = ..`): remove it, or \
                     cache the ids one by one with a fn of one id"
                ),
            ));
        }
    }
    let local_given = parsed.name("local_ttl").is_some() || parsed.name("local_capacity").is_some();
    let args = &parsed.args;
    let ids = match &args.batch {
        Some(code) => errors.take(batch_parameter(function, code)),
        None => {
            errors.push(syn::Error::new(
                Span::call_site(),
                "`each` and `by` go with `batch = ids`, the fn's `Vec<Id>` parameter: \
                 add it, e.g. #[cacheme(batch = ids, each = id, key = format!(\"cat:{id}\"))]",
            ));
            None
        }
    };
    let each = match (&args.batch, &args.each) {
        (_, Some(code)) => errors.take(plain_name(code, "each", "`each = id`")),
        (Some(batch), None) => {
            errors.push(syn::Error::new_spanned(
                batch,
                "a batch fn needs `each = id`: the name under which `key` or `node` see one \
                 id, e.g. #[cacheme(batch = ids, each = id, key = format!(\"cat:{id}\"))]",
            ));
            None
        }
        (None, None) => None,
    };
    if args.key.is_none() && args.node.is_none() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "a batch fn caches each id under a key of its own: give \
             `key = format!(\"cat:{id}\")` or `node = CatNode { id }` (with `each = id`)",
        ));
    }
    if let Some(groups) = &args.invalid_keys
        && check::mentions_result(groups.to_token_stream())
    {
        errors.push(syn::Error::new_spanned(
            groups,
            "a batch fn's `invalid_keys` is computed per id before loading, so it cannot use \
             `cacheme_result`",
        ));
    }
    // (Without `batch`, the fn is not a batch fn: its return type is not
    // judged as one.)
    let collection = returns
        .as_ref()
        .filter(|_| args.batch.is_some())
        .and_then(|(_, value)| errors.take(collection(value, args.by.as_ref())));
    let SpecArgs {
        tag,
        ttl,
        local_ttl,
        local_capacity,
        sources,
        stale: literal_stale,
    } = SpecArgs::read(args, &function.sig.ident.unraw().to_string(), errors);
    errors_so_far(errors)?;
    let (
        Some((returns, collection_type)),
        Some((ids, id_type)),
        Some(each),
        Some(collection),
        Some(tag),
    ) = (returns, ids, each, collection, tag)
    else {
        unreachable!("every part is there when there was no error")
    };
    let value = element_type(&collection_type, &collection);
    let spec = args.node.is_none().then(|| SpecPlan {
        name: function.sig.ident.unraw().to_string(),
        tag,
        ttl,
        stale: literal_stale,
        sources,
        local: local_given.then_some((local_ttl, local_capacity)),
    });
    let batch = Batch {
        krate,
        returns,
        value,
        ids,
        id_type,
        each,
        collection,
        ttl: if args.node.is_some() { ttl } else { None },
        stale: match (&args.node, literal_stale) {
            (Some(_), _) | (None, None) => args.stale.clone(),
            (None, Some(_)) => None,
        },
        spec,
    };
    Ok(batch.emit(function.clone(), &parsed.args))
}

/// Every error so far, or nothing.
fn errors_so_far(errors: &mut Errors) -> syn::Result<()> {
    std::mem::take(errors).finish()
}

/// The batch parameter named by `batch = ..`, and its ids' type (`Vec<Id>`).
fn batch_parameter(function: &ItemFn, code: &Code) -> syn::Result<(Ident, Type)> {
    let name = plain_name(code, "batch", "`batch = ids`")?;
    let mut names = Vec::new();
    for input in &function.sig.inputs {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        let Pat::Ident(pat) = &*typed.pat else {
            continue;
        };
        if pat.ident != name {
            names.push(pat.ident.unraw().to_string());
            continue;
        }
        return match vec_element(&typed.ty) {
            Some(id) => Ok((pat.ident.clone(), id.clone())),
            None => Err(syn::Error::new_spanned(
                &typed.ty,
                format!(
                    "the batch parameter `{name}` must be a `Vec` of ids (`{name}: Vec<u64>`): \
                     each id is cached on its own"
                ),
            )),
        };
    }
    Err(syn::Error::new_spanned(
        code,
        format!(
            "`batch = {name}` names the fn's `Vec<Id>` parameter, but the fn has no parameter \
             `{name}`; its parameters are: {}",
            names.join(", ")
        ),
    ))
}

/// A plain identifier argument.
fn plain_name(code: &Code, name: &str, usage: &str) -> syn::Result<Ident> {
    match &code.0 {
        Expr::Path(path) if path.qself.is_none() => match path.path.get_ident() {
            Some(ident) => Ok(ident.clone()),
            None => Err(syn::Error::new_spanned(
                code,
                format!("`{name}` takes a plain name: {usage}"),
            )),
        },
        _ => Err(syn::Error::new_spanned(
            code,
            format!("`{name}` takes a plain name: {usage}"),
        )),
    }
}

/// `T` of `Vec<T>`.
fn vec_element(ty: &Type) -> Option<&Type> {
    let (last, args) = last_segment(ty)?;
    (last == "Vec").then_some(())?;
    args.first().copied()
}

/// The last segment of a path type, and its type arguments.
fn last_segment(ty: &Type) -> Option<(String, Vec<&Type>)> {
    let Type::Path(path) = ty else {
        return match ty {
            Type::Group(group) => last_segment(&group.elem),
            Type::Paren(paren) => last_segment(&paren.elem),
            _ => None,
        };
    };
    let last = path.path.segments.last()?;
    let args = match &last.arguments {
        PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((last.ident.to_string(), args))
}

/// What the fn returns: a `Vec` (with `by`) or a map (without).
fn collection(value: &TokenStream, by: Option<&Code>) -> syn::Result<Collection> {
    let ty: Type = syn::parse2(value.clone())?;
    let kind = last_segment(&ty).map(|(last, args)| (last, args.len()));
    match (kind, by) {
        (Some((last, 1)), Some(by)) if last == "Vec" => Ok(Collection::Vec(by.clone())),
        (Some((last, 1)), None) if last == "Vec" => Err(syn::Error::new_spanned(
            &ty,
            "a batch fn that returns a `Vec` of values needs `by = |value: &Value| value.id`: \
             how to tell which id each value is for (or return a `HashMap<Id, Value>`)",
        )),
        (Some((last, 2)), None) if last.ends_with("Map") => Ok(Collection::Map),
        (Some((last, 2)), Some(by)) if last.ends_with("Map") => Err(syn::Error::new_spanned(
            by,
            "a map already says which id each value is for: remove `by`",
        )),
        _ => Err(syn::Error::new_spanned(
            &ty,
            "a batch fn returns its values as a `Vec<Value>` (with `by = ..`) or as a map \
             (`HashMap<Id, Value>`, `BTreeMap<Id, Value>`)",
        )),
    }
}

/// The cached type: `V` of `Vec<V>` or of `HashMap<Id, V>`.
fn element_type(collection_type: &TokenStream, collection: &Collection) -> Type {
    let ty: Type = syn::parse2(collection_type.clone()).expect("checked by `collection`");
    let (_, args) = last_segment(&ty).expect("checked by `collection`");
    match collection {
        Collection::Vec(_) => args[0].clone(),
        Collection::Map => args[1].clone(),
    }
}

/// What the generated code needs.
struct Batch {
    krate: syn::Path,
    returns: Returns,
    /// The cached type (one id's value).
    value: Type,
    /// The batch parameter.
    ids: Ident,
    id_type: Type,
    /// The name one id goes by in `key` / `node`.
    each: Ident,
    collection: Collection,
    /// Set on each lookup (with a node: the spec is the node type's).
    ttl: Option<values::Millis>,
    stale: Option<Code>,
    spec: Option<SpecPlan>,
}

impl Batch {
    fn emit(&self, function: ItemFn, args: &Args) -> TokenStream {
        let ItemFn {
            attrs,
            vis,
            sig,
            block,
        } = function;
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        let (spec, cache, make, nodes, hits, misses, lookups, key_of) = (
            local("spec"),
            local("cache"),
            local("make"),
            local("nodes"),
            local("hits"),
            local("misses"),
            local("lookups"),
            local("key_of"),
        );
        let (hit, miss, body_loader, loader, missing, loaded, values, fake_return) = (
            local("hit"),
            local("miss"),
            local("body"),
            local("loader"),
            local("missing"),
            local("loaded"),
            local("values"),
            local("fake_return"),
        );
        let Batch {
            krate,
            value,
            ids,
            id_type,
            each,
            ..
        } = self;
        let ret = match &sig.output {
            ReturnType::Type(_, ty) => ty.to_token_stream(),
            ReturnType::Default => unreachable!("checked: the fn returns something"),
        };

        let mut statements = Vec::new();
        if let Some(plan) = &self.spec {
            statements.push(spec_statement(plan, &spec, krate));
        }
        if let Some(expr) = &args.hit {
            statements.push(quote!(let #hit: #krate::HitHook<'_, #value> = &#expr;));
        }
        if let Some(expr) = &args.miss {
            statements.push(quote!(let #miss: #krate::MissHook<'_> = &#expr;));
        }
        statements.push(match &args.cache {
            Some(expr) => quote!(let #cache: &#krate::Cache = &(#expr);),
            None => quote!(let #cache: &#krate::Cache = &#krate::global();),
        });

        let mut calls = Vec::new();
        if self.spec.as_ref().is_some_and(|spec| spec.local.is_some()) {
            calls.push(quote!(.local()));
        }
        if let Some(ttl) = self.ttl {
            calls.push(quote!(.ttl(::core::option::Option::Some(#ttl))));
        }
        if let Some(stale) = &self.stale {
            calls.push(quote!(.stale(#stale)));
        }
        if let Some(groups) = &args.invalid_keys {
            calls.push(quote!(.depends_on(#groups)));
        }
        if args.hit.is_some() {
            calls.push(quote!(.hit(#hit)));
        }
        if args.miss.is_some() {
            calls.push(quote!(.miss(#miss)));
        }
        let clone_id = quote!(let #each: #id_type = ::core::clone::Clone::clone(#each););
        match (&args.node, &args.key) {
            (Some(node), _) => {
                let span = node.0.span();
                let memo_node = values::respanned(krate, span);
                let memo_node =
                    quote_spanned!(span=> #memo_node::__private::MemoNode::<#value, _>::new);
                let node_of = quote!(|#each: &#id_type| { #clone_id #memo_node(#node) });
                statements.push(quote! {
                    let #nodes: ::std::vec::Vec<_> = #ids.iter().map(#node_of).collect();
                });
                let mut hooks = Vec::new();
                if args.hit.is_none() {
                    statements.push(quote! {
                        let #hits: ::std::vec::Vec<_> = #nodes
                            .iter()
                            .map(|node| move |key: &str, value: &#value| node.hit(key, value))
                            .collect();
                    });
                    hooks.push(quote!(let lookup = lookup.hit(&#hits[at]);));
                }
                if args.miss.is_none() {
                    statements.push(quote! {
                        let #misses: ::std::vec::Vec<_> = #nodes
                            .iter()
                            .map(|node| move |key: &str| node.miss(key))
                            .collect();
                    });
                    hooks.push(quote!(let lookup = lookup.miss(&#misses[at]);));
                }
                statements.push(quote! {
                    let #lookups: ::std::vec::Vec<#krate::Lookup<'_, #value>> = #nodes
                        .iter()
                        .enumerate()
                        .map(|(at, node)| {
                            let lookup = node.lookup(#cache) #(#calls)*;
                            #(#hooks)*
                            lookup
                        })
                        .collect();
                    let #key_of = |#each: &#id_type| -> ::std::string::String {
                        ::std::borrow::ToOwned::to_owned((#node_of)(#each).lookup(#cache).key())
                    };
                });
            }
            (None, Some(key)) => {
                statements.push(quote! {
                    let #make = |#each: &#id_type| {
                        #clone_id
                        #cache.lookup::<#value>(#key).spec(#spec) #(#calls)*
                    };
                    let #lookups: ::std::vec::Vec<#krate::Lookup<'_, #value>> =
                        #ids.iter().map(&#make).collect();
                    let #key_of = |#each: &#id_type| -> ::std::string::String {
                        ::std::borrow::ToOwned::to_owned(#make(#each).key())
                    };
                });
            }
            (None, None) => unreachable!("checked: a key or a node"),
        }

        // The body, as the loader of the missing ids: it sees the batch
        // parameter holding only those.
        let body = &block.stmts;
        let allow = quote! {
            #[allow(
                unknown_lints,
                unreachable_code,
                clippy::diverging_sub_expression,
                clippy::empty_loop,
                clippy::let_unit_value,
                clippy::let_with_type_underscore,
                clippy::needless_return,
                clippy::unreachable
            )]
        };
        let is_async = sig.asyncness.is_some();
        statements.push(if is_async {
            quote! {
                let #body_loader = |#ids: ::std::vec::Vec<#id_type>| async move {
                    #allow
                    if false {
                        let #fake_return: #ret = loop {};
                        return #fake_return;
                    }
                    #(#body)*
                };
            }
        } else {
            quote!(let #body_loader = |#ids: ::std::vec::Vec<#id_type>| -> #ret #block;)
        });
        // The body's collection as `(id, value)` pairs: a map is one.
        let (pairs, map_pairs) = match &self.collection {
            Collection::Vec(by) => (
                quote!(#krate::__private::vec_pairs(#loaded, #by)),
                quote!(|#values| #krate::__private::vec_pairs(#values, #by)),
            ),
            Collection::Map => (quote!(#loaded), quote!(|#values| #values)),
        };
        let to_pairs = match (self.returns, &self.collection) {
            (Returns::Value, _) => quote! {
                ::core::result::Result::Ok::<_, ::core::convert::Infallible>(#pairs)
            },
            (Returns::Result, Collection::Map) => quote!(#loaded),
            (Returns::Result, Collection::Vec(_)) => quote!(#loaded.map(#map_pairs)),
        };
        statements.push(if is_async {
            quote! {
                let #loader = |#missing: ::std::vec::Vec<#id_type>| {
                    let #loaded = #body_loader(#missing);
                    async move {
                        let #loaded = #loaded.await;
                        #to_pairs
                    }
                };
            }
        } else {
            quote! {
                let #loader = |#missing: ::std::vec::Vec<#id_type>| {
                    let #loaded = #body_loader(#missing);
                    #to_pairs
                };
            }
        });
        let load = if is_async {
            quote! {
                #krate::__private::load_many(
                    #lookups, ::core::clone::Clone::clone(&#ids), &#key_of, #loader,
                ).await
            }
        } else {
            quote! {
                #krate::__private::load_many_blocking(
                    #lookups, ::core::clone::Clone::clone(&#ids), &#key_of, #loader,
                )
            }
        };
        let collect = match &self.collection {
            Collection::Vec(_) => quote!(#krate::__private::vec_of(#values)),
            Collection::Map => quote!(#krate::__private::map_of(&#ids, #values)),
        };
        let tail = match self.returns {
            Returns::Value => quote! {
                let #values = #krate::__private::into_value(#load);
                #collect
            },
            Returns::Result => quote! {
                match #load {
                    ::core::result::Result::Ok(#values) => ::core::result::Result::Ok(#collect),
                    ::core::result::Result::Err(#values) => {
                        ::core::result::Result::Err(#krate::__private::batch_error(#values))
                    }
                }
            },
        };
        quote! {
            #(#attrs)*
            #vis #sig {
                #(#statements)*
                #tail
            }
        }
    }
}
