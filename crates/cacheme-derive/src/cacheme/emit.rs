//! The code: a few statements around the fn's body, calling the runtime's
//! public API (`Cache::lookup`, `Lookup`, `IntoInvalidKeys`) and small
//! helpers of `__private`. The generated locals are hygienic
//! (`Span::mixed_site`): the body and the argument expressions cannot see
//! them, and they cannot shadow the fn's parameters.
//!
//! With `skip = ..`, the skip is evaluated first, and the lookup is built
//! only when the call does not skip: a skipped call runs the body and touches
//! nothing else (no key, node, hook or cache).

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn};

use super::check::{RESULT, Returns};
use super::plan::{KeyPlan, Plan, SpecPlan};
use crate::args::values::respanned;

/// The generated locals.
struct Locals {
    skip: Ident,
    spec: Ident,
    cache: Ident,
    key: Ident,
    incomplete: Ident,
    node: Ident,
    hit: Ident,
    miss: Ident,
    groups: Ident,
    out: Ident,
    errors: Ident,
    lookup: Ident,
    loaded: Ident,
    fake_return: Ident,
}

impl Locals {
    fn new() -> Self {
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Locals {
            skip: local("skip"),
            spec: local("spec"),
            cache: local("cache"),
            key: local("key"),
            incomplete: local("incomplete"),
            node: local("node"),
            hit: local("hit"),
            miss: local("miss"),
            groups: local("groups"),
            out: local("out"),
            errors: local("errors"),
            lookup: local("lookup"),
            loaded: local("loaded"),
            fake_return: local("fake_return"),
        }
    }
}

/// A step of building the lookup.
enum Step {
    /// `let name = ..;`
    Let(TokenStream),
    /// A local the lookup borrows: `let name = init;`, or, when the lookup is
    /// built only if the call does not skip, declared before (`let name;`)
    /// and set while building it (`name = init;`).
    Borrowed(Ident, TokenStream),
}

/// `#[cacheme(..)]`'s fn: the original, with the body run through a lookup.
pub(super) fn function(plan: &Plan, function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let Locals {
        skip,
        spec,
        cache,
        key,
        incomplete,
        node,
        hit,
        miss,
        groups,
        out,
        errors,
        lookup,
        loaded,
        fake_return,
    } = Locals::new();
    let krate = &plan.krate;
    let value = &plan.value;
    let ret = &plan.ret;

    // Before anything else: whether the call skips the cache, then what
    // evaluates nothing of the caller's.
    let mut statements = Vec::new();
    if let Some(expr) = &plan.skip {
        // Spanned on the expression: one that is not a `bool` is reported there.
        let bool_type = quote_spanned!(expr.0.span()=> bool);
        statements.push(quote!(let #skip: #bool_type = #expr;));
    }
    if let Some(plan) = &plan.spec {
        statements.push(spec_statement(plan, &spec, krate));
    }
    let mut calls = Vec::new();
    if let Some(expr) = &plan.hit {
        statements.push(quote!(let #hit: #krate::HitHook<'_, #value> = &#expr;));
    }
    if let Some(expr) = &plan.miss {
        statements.push(quote!(let #miss: #krate::MissHook<'_> = &#expr;));
    }
    if let Some(groups_plan) = plan.invalid_keys.as_ref().filter(|g| g.uses_result) {
        let result = Ident::new(RESULT, Span::call_site());
        let expr = &groups_plan.code;
        statements.push(quote! {
            let #groups = |#result: &#value, #out: &mut #krate::InvalidKeys| {
                #krate::IntoInvalidKeys::push_into(#expr, #out);
            };
        });
    }
    if plan.returns == Returns::Result {
        statements.push(quote!(let #errors = #krate::__private::error_policy!(#ret);));
    }

    // The lookup: its cache, where its key comes from, its settings.
    let mut steps = vec![Step::Let(match &plan.cache {
        Some(expr) => quote!(let #cache: &#krate::Cache = &(#expr);),
        None => quote!(let #cache: &#krate::Cache = &#krate::global();),
    })];
    let new_lookup = match &plan.key {
        KeyPlan::Given(expr) => quote!(#cache.lookup::<#value>(#expr).spec(#spec)),
        KeyPlan::Node(expr) => {
            // A node of another value type is reported on the node.
            let span = expr.0.span();
            let memo_node = respanned(krate, span);
            let memo_node =
                quote_spanned!(span=> #memo_node::__private::MemoNode::<#value, _>::new);
            steps.push(Step::Borrowed(node.clone(), quote!(#memo_node(#expr))));
            quote!(#node.lookup(#cache))
        }
        KeyPlan::Default(args) => {
            let args = args.iter().map(|arg| {
                let (name, value) = (&arg.name, &arg.value);
                quote!(.arg(#name, #value))
            });
            steps.push(Step::Let(quote! {
                let #key = #krate::__private::DefaultKey::of(&|| ()) #(#args)*;
            }));
            quote!(#cache.lookup::<#value>(#key.into_string()).spec(#spec))
        }
    };
    if plan.spec.as_ref().is_some_and(|spec| spec.local.is_some()) {
        calls.push(quote!(.local()));
    }
    if let Some(ttl) = plan.ttl {
        calls.push(quote!(.ttl(::core::option::Option::Some(#ttl))));
    }
    if let Some(stale) = &plan.stale {
        calls.push(quote!(.stale(#stale)));
    }
    for (name, duration) in &plan.fail_safe {
        let builder = quote::format_ident!("{}", name);
        calls.push(quote!(.#builder(#duration)));
    }
    if let KeyPlan::Default(_) = plan.key {
        // An argument that does not serialize: the call skips the cache.
        steps.push(Step::Let(quote!(let #incomplete = !#key.is_complete();)));
        calls.push(quote!(.skip(#incomplete)));
    }
    if let Some(groups_plan) = &plan.invalid_keys {
        calls.push(match groups_plan.uses_result {
            true => quote!(.depends_on_value(&#groups)),
            false => {
                let expr = &groups_plan.code;
                quote!(.depends_on(#expr))
            }
        });
    }
    let is_node = matches!(plan.key, KeyPlan::Node(_));
    match (&plan.hit, is_node) {
        (Some(_), _) => calls.push(quote!(.hit(#hit))),
        (None, true) => {
            let hook = quote!(|key: &str, value: &#value| #node.hit(key, value));
            steps.push(Step::Borrowed(hit.clone(), hook));
            calls.push(quote!(.hit(&#hit)));
        }
        (None, false) => {}
    }
    match (&plan.miss, is_node) {
        (Some(_), _) => calls.push(quote!(.miss(#miss))),
        (None, true) => {
            let hook = quote!(|key: &str| #node.miss(key));
            steps.push(Step::Borrowed(miss.clone(), hook));
            calls.push(quote!(.miss(&#miss)));
        }
        (None, false) => {}
    }
    if plan.returns == Returns::Result {
        calls.push(quote!(.share_errors(#errors.share)));
    }

    // The body, as the loader.
    let body = &block.stmts;
    let loader = if plan.is_async {
        // The unreachable `return` fixes the async block's output type, so
        // that `?` and `return` in the body work (as `tracing::instrument` does).
        let block = quote! {
            async {
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
                if false {
                    let #fake_return: #ret = loop {};
                    return #fake_return;
                }
                #(#body)*
            }
        };
        match plan.returns {
            Returns::Result => quote!(|| #block),
            Returns::Value => quote!(|| #krate::__private::infallible(#block)),
        }
    } else {
        match plan.returns {
            Returns::Result => quote!(|| -> #ret #block),
            Returns::Value => quote!(|| #krate::__private::infallible_blocking(|| -> #ret #block)),
        }
    };

    let load = match &plan.skip {
        None => {
            for step in steps {
                statements.push(match step {
                    Step::Let(statement) => statement,
                    Step::Borrowed(name, init) => quote!(let #name = #init;),
                });
            }
            match plan.is_async {
                true => quote!(#new_lookup #(#calls)* .load(#loader).await),
                false => quote!(#new_lookup #(#calls)* .load_blocking(#loader)),
            }
        }
        Some(_) => {
            let mut building = Vec::new();
            for step in steps {
                building.push(match step {
                    Step::Let(statement) => statement,
                    Step::Borrowed(name, init) => {
                        statements.push(quote!(let #name;));
                        quote!(#name = #init;)
                    }
                });
            }
            statements.push(quote! {
                let #lookup = if #skip {
                    ::core::option::Option::None
                } else {
                    #(#building)*
                    ::core::option::Option::Some(#new_lookup #(#calls)*)
                };
            });
            match plan.is_async {
                true => quote!(#krate::__private::load_unless_skipped(#lookup, #loader).await),
                false => quote!(#krate::__private::load_blocking_unless_skipped(#lookup, #loader)),
            }
        }
    };
    let tail = match plan.returns {
        Returns::Result => quote!(#load.map_err(#errors.unshare)),
        Returns::Value => quote! {
            let #loaded = #load;
            #krate::__private::into_value(#loaded)
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

/// `let spec = { static SPEC: Spec = ..; inventory::submit!(..); &SPEC };`
pub(super) fn spec_statement(plan: &SpecPlan, spec: &Ident, krate: &syn::Path) -> TokenStream {
    let SpecPlan {
        name,
        tag,
        ttl,
        stale,
        sources,
        local,
    } = plan;
    let path = format!("::{name}");
    let mut builders = vec![quote!(.with_tag(#tag))];
    if let Some(ttl) = ttl {
        builders.push(quote!(.with_ttl(#ttl)));
    }
    if let Some(stale) = stale {
        builders.push(quote!(.with_stale(#stale)));
    }
    if let Some((ttl, capacity)) = local {
        let ttl = match ttl {
            Some(ttl) => ttl.to_token_stream(),
            None => quote!(#krate::LocalSpec::DEFAULT.ttl()),
        };
        let capacity = match capacity {
            Some(capacity) => quote!(#capacity),
            None => quote!(#krate::LocalSpec::DEFAULT.capacity()),
        };
        builders.push(quote!(.with_local(#krate::LocalSpec::new(#ttl, #capacity))));
    }
    let sources = sources.iter().map(|path| {
        let source_name = path.to_token_stream().to_string().replace(' ', "");
        quote! {
            #krate::__private::inventory::submit! {
                #krate::sources::SourceRegistration::new(#tag, #source_name, || {
                    #krate::sources::boxed(#path())
                })
            }
        }
    });
    quote! {
        let #spec = {
            static SPEC: #krate::Spec =
                #krate::Spec::function(::core::concat!(::core::module_path!(), #path))
                    #(#builders)*;
            #krate::__private::inventory::submit! {
                #krate::__private::Registration::new(&SPEC)
            }
            #(#sources)*
            &SPEC
        };
    }
}
