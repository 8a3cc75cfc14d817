//! `#[cacheme(...)]`: memoize a fn or a method.
//!
//! The attribute's arguments are read with darling into [`Args`] (each one an
//! expression, taken as written), checked, and turned into a few statements
//! around the fn's original body: a `Spec` registered with `inventory` (or
//! the node's), a `Lookup` built with the runtime's public API, and the body
//! as the lookup's loader. The generated code's local names are hygienic
//! (`Span::mixed_site`): the body and the argument expressions cannot see
//! them, and they cannot shadow the fn's parameters.

use darling::FromMeta;
use darling::ast::NestedMeta;
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Expr, ExprLit, FnArg, GenericArgument, Ident, ItemFn, Lit, Meta, Pat, PathArguments,
    ReturnType, Type,
};

use crate::attrs::{Errors, duration_literal, suggestion};

/// What `#[cacheme(...)]` takes.
const ARGS: &[&str] = &[
    "key",
    "node",
    "invalid_keys",
    "tag",
    "ttl",
    "stale",
    "skip",
    "hit",
    "miss",
    "invalid_sources",
    "cache",
    "local_ttl",
    "local_capacity",
];

/// The identifier through which `invalid_keys` sees the loaded value.
const RESULT: &str = "cacheme_result";

/// An argument's expression, as written. (darling's own `syn::Expr` parses
/// a string literal's contents as code, which would turn `key = "cat:1"`
/// into an error.)
#[derive(Clone)]
struct Code(Expr);

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
/// comes in.
fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => ungroup(&group.expr),
        expr => expr,
    }
}

/// The arguments of `#[cacheme(...)]`, by name.
#[derive(FromMeta, Default)]
struct Args {
    key: Option<Code>,
    node: Option<Code>,
    invalid_keys: Option<Code>,
    tag: Option<Code>,
    ttl: Option<Code>,
    stale: Option<Code>,
    skip: Option<Code>,
    hit: Option<Code>,
    miss: Option<Code>,
    invalid_sources: Option<Code>,
    cache: Option<Code>,
    local_ttl: Option<Code>,
    local_capacity: Option<Code>,
}

/// How the fn returns its value.
enum Returns {
    /// `Result<V, E>` (or an alias): `Ok` is cached, `Err` returned as is.
    Result,
    /// Anything else: the whole value is cached.
    Value,
}

/// `#[cacheme(args)] item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let function = parse_fn(item)?;
    let mut errors = Errors::default();
    let args = errors.take(parse_args(args));
    let returns = errors.take(check_fn(&function));
    errors.finish()?;
    let (Some((args, names)), Some((returns, value))) = (args, returns) else {
        unreachable!("errors were reported above")
    };
    let plan = Plan::new(&function, args, &names, returns, value)?;
    Ok(plan.into_tokens(function))
}

/// The item: a fn or method with a body.
fn parse_fn(item: TokenStream) -> syn::Result<ItemFn> {
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

/// The arguments, and the span of each name given.
fn parse_args(tokens: TokenStream) -> syn::Result<(Args, Vec<(String, Span)>)> {
    let items = NestedMeta::parse_meta_list(tokens)?;
    let mut errors = Errors::default();
    let mut names: Vec<(String, Span)> = Vec::new();
    let mut known = Vec::new();
    for item in items {
        let meta = match item {
            NestedMeta::Meta(meta) => meta,
            NestedMeta::Lit(lit) => {
                errors.push(syn::Error::new_spanned(
                    lit,
                    "#[cacheme(...)] takes `name = value` arguments, e.g. #[cacheme(key = format!(\"cat:{}\", cat.id))]",
                ));
                continue;
            }
        };
        let Some(ident) = meta.path().get_ident() else {
            errors.push(syn::Error::new_spanned(
                meta.path(),
                format!(
                    "#[cacheme(...)] takes `name = value` arguments; names are: {}",
                    ARGS.join(", ")
                ),
            ));
            continue;
        };
        let name = ident.unraw().to_string();
        if !ARGS.contains(&name.as_str()) {
            errors.push(unknown(ident, &name));
            continue;
        }
        if names.iter().any(|(seen, _)| *seen == name) {
            errors.push(syn::Error::new_spanned(
                ident,
                format!("`{name}` is given twice: keep one"),
            ));
            continue;
        }
        names.push((name.clone(), ident.span()));
        match meta {
            Meta::NameValue(_) => known.push(NestedMeta::Meta(meta)),
            Meta::Path(_) => errors.push(syn::Error::new_spanned(
                ident,
                format!("`{name}` needs a value: {}", usage(&name)),
            )),
            Meta::List(list) => errors.push(syn::Error::new_spanned(
                &list,
                format!(
                    "write `{name} = ...` rather than `{name}(...)`: {}",
                    usage(&name)
                ),
            )),
        }
    }
    let args = errors.take(Args::from_list(&known).map_err(syn::Error::from));
    errors.finish()?;
    Ok((args.unwrap_or_default(), names))
}

fn unknown(ident: &Ident, name: &str) -> syn::Error {
    let list = ARGS.join(", ");
    let message = match suggestion(name, ARGS) {
        Some(best) => format!(
            "unknown argument `{name}` in #[cacheme(...)]: did you mean `{best}`? It takes: {list}"
        ),
        None => format!("unknown argument `{name}` in #[cacheme(...)]: it takes: {list}"),
    };
    syn::Error::new_spanned(ident, message)
}

/// How an argument is written, for messages.
fn usage(name: &str) -> &'static str {
    match name {
        "key" => "`key = format!(\"cat:{}\", cat.id)` (anything `Into<String>`)",
        "node" => "`node = CatNode { id: cat.id }`",
        "invalid_keys" => {
            "`invalid_keys = format!(\"user:{}\", book.owner_id)` (one key, a list, an invalid node...)"
        }
        "tag" => "`tag = \"cats\"`",
        "ttl" => "`ttl = 300` (seconds) or `ttl = \"5m\"`",
        "stale" => "`stale = false`",
        "skip" => "`skip = cat.id == 0`",
        "hit" => "`hit = on_hit` (a `fn(&str, &Value)`)",
        "miss" => "`miss = on_miss` (a `fn(&str)`)",
        "invalid_sources" => {
            "`invalid_sources = [user_changes]` (fns returning an `InvalidationSource`)"
        }
        "cache" => "`cache = self.cache` (a `Cache` or `&Cache`)",
        "local_ttl" => "`local_ttl = 10` (seconds) or `local_ttl = \"500ms\"`",
        "local_capacity" => "`local_capacity = 10000` (entries)",
        _ => "`name = value`",
    }
}

/// Check what the fn looks like; return how it returns its value, and the
/// type of the value.
fn check_fn(function: &ItemFn) -> syn::Result<(Returns, TokenStream)> {
    let sig = &function.sig;
    let mut errors = Errors::default();
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
        ReturnType::Type(_, ty) => value_type(name, ty),
    };
    let returns = errors.take(returns);
    errors.finish()?;
    Ok(returns.expect("a return type error is reported above"))
}

fn value_type(name: &Ident, ty: &Type) -> syn::Result<(Returns, TokenStream)> {
    match ty {
        Type::Group(group) => value_type(name, &group.elem),
        Type::Paren(paren) => value_type(name, &paren.elem),
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
                None => quote!(<#ty as ::cacheme::__private::ResultParts>::Ok),
            };
            Ok((Returns::Result, value))
        }
        _ => Ok((Returns::Value, ty.to_token_stream())),
    }
}

/// True if the tokens mention `cacheme_result`.
fn mentions_result(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == RESULT,
        TokenTree::Group(group) => mentions_result(group.stream()),
        _ => false,
    })
}

/// Everything the generated code needs, checked.
struct Plan {
    returns: Returns,
    /// The cached type.
    value: TokenStream,
    /// The fn's return type.
    ret: TokenStream,
    is_async: bool,
    cache: Option<Code>,
    key: KeyPlan,
    /// With a key (given or default): the fn's spec, registered.
    spec: Option<SpecPlan>,
    invalid_keys: Option<(Code, bool)>,
    ttl: Option<u64>,
    stale: Option<Code>,
    skip: Option<Code>,
    hit: Option<Code>,
    miss: Option<Code>,
}

enum KeyPlan {
    Given(Code),
    Node(Code),
    /// The default key: the parameters that are part of it.
    Default(Vec<KeyParam>),
}

/// A parameter that is part of the default key.
struct KeyParam {
    name: Ident,
    /// The spans of the first and last tokens of its type.
    type_span: (Span, Span),
    /// Its type is a reference: pass it as it is.
    is_reference: bool,
}

struct SpecPlan {
    name: String,
    tag: String,
    ttl: Option<u64>,
    stale: Option<bool>,
    sources: Vec<syn::Path>,
    /// A local tier: its ttl (ms) and capacity, each defaulted if absent.
    local: Option<(Option<u64>, Option<u64>)>,
}

impl Plan {
    fn new(
        function: &ItemFn,
        args: Args,
        names: &[(String, Span)],
        returns: Returns,
        value: TokenStream,
    ) -> syn::Result<Plan> {
        let mut errors = Errors::default();
        let span_of = |name: &str| {
            names
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(Span::call_site, |(_, span)| *span)
        };
        let fn_name = function.sig.ident.unraw().to_string();

        // Nothing is silently dropped: what a node says itself cannot be
        // said again next to it.
        if args.node.is_some() {
            let node_conflicts = [
                (
                    args.key.is_some(),
                    "key",
                    "`key` and `node` both give the cache key: keep one. With `node`, the key is \
                     the node's (its #[node(key = ..)]); remove `node` to use `key` instead",
                ),
                (
                    args.invalid_keys.is_some(),
                    "invalid_keys",
                    "a node declares its dependency groups itself, with #[node(invalid_nodes = ..)]: \
                     remove `invalid_keys` here, or use `key = ..` instead of `node`",
                ),
                (
                    args.tag.is_some(),
                    "tag",
                    "a node's values are indexed under the node's tag: set it with \
                     #[node(tag = ..)], and remove `tag` here",
                ),
                (
                    args.local_ttl.is_some() || args.local_capacity.is_some(),
                    if args.local_ttl.is_some() {
                        "local_ttl"
                    } else {
                        "local_capacity"
                    },
                    "a node declares its local tier itself, with \
                     #[node(local_ttl = .., local_capacity = ..)]: move it there",
                ),
                (
                    args.invalid_sources.is_some(),
                    "invalid_sources",
                    "`invalid_sources` registers sources for this fn's own tag, and with `node` the \
                     tag is the node's: connect the source to it at start-up with \
                     `cacheme::sources::connect(&cache, <YourNode as cacheme::Node>::SPEC.tag, source)`",
                ),
            ];
            for (given, name, message) in node_conflicts {
                if given {
                    errors.push(syn::Error::new(span_of(name), message));
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

        let tag = match &args.tag {
            Some(code) => errors.take(tag_name(code)),
            None => Some(fn_name.clone()),
        };
        let ttl = args.ttl.as_ref().and_then(|code| errors.take(ttl(code)));
        let local_ttl = args
            .local_ttl
            .as_ref()
            .and_then(|code| errors.take(local_ttl(code)));
        let local_capacity = args
            .local_capacity
            .as_ref()
            .and_then(|code| errors.take(local_capacity(code)));
        let local = (args.local_ttl.is_some() || args.local_capacity.is_some())
            .then_some((local_ttl, local_capacity));
        let sources = match &args.invalid_sources {
            Some(code) => errors.take(source_paths(code)).unwrap_or_default(),
            None => Vec::new(),
        };
        let key = match (&args.node, &args.key) {
            (Some(node), _) => KeyPlan::Node(node.clone()),
            (None, Some(key)) => KeyPlan::Given(key.clone()),
            (None, None) => match errors.take(key_params(function)) {
                Some(params) => KeyPlan::Default(params),
                None => KeyPlan::Default(Vec::new()),
            },
        };
        errors.finish()?;

        let literal_stale = match &args.stale {
            Some(Code(Expr::Lit(ExprLit {
                lit: Lit::Bool(flag),
                ..
            }))) => Some(flag.value),
            _ => None,
        };
        let is_node = matches!(key, KeyPlan::Node(_));
        let spec = (!is_node).then(|| SpecPlan {
            name: fn_name,
            tag: tag.expect("a tag error is reported above"),
            ttl,
            stale: literal_stale,
            sources,
            local,
        });
        Ok(Plan {
            returns,
            value,
            ret: match &function.sig.output {
                ReturnType::Type(_, ty) => ty.to_token_stream(),
                ReturnType::Default => unreachable!("a fn returning nothing is refused above"),
            },
            is_async: function.sig.asyncness.is_some(),
            cache: args.cache,
            key,
            invalid_keys: args.invalid_keys.map(|code| {
                let uses_result = mentions_result(code.to_token_stream());
                (code, uses_result)
            }),
            // With a spec, a literal ttl or stale is in it; otherwise (node,
            // or a computed `stale`) it is set on the lookup.
            ttl: if is_node { ttl } else { None },
            stale: if is_node || literal_stale.is_none() {
                args.stale
            } else {
                None
            },
            skip: args.skip,
            hit: args.hit,
            miss: args.miss,
            spec,
        })
    }

    fn into_tokens(self, function: ItemFn) -> TokenStream {
        let ItemFn {
            attrs,
            vis,
            sig,
            block,
        } = function;
        // The generated locals, invisible to the body and the arguments.
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        let cache = local("cache");
        let spec = local("spec");
        let key = local("key");
        let errors = local("errors");
        let node = local("node");
        let hit = local("hit");
        let miss = local("miss");
        let groups = local("groups");
        let out = local("out");
        let loaded = local("loaded");
        let skip = local("skip");
        let fake_return = local("fake_return");
        let value = &self.value;
        let ret = &self.ret;
        let mut statements = Vec::new();

        if let Some(plan) = &self.spec {
            statements.push(plan.to_statement(&spec));
        }
        statements.push(match &self.cache {
            Some(expr) => quote!(let #cache: &::cacheme::Cache = &(#expr);),
            None => quote!(let #cache: &::cacheme::Cache = &::cacheme::global();),
        });

        // The lookup: where its key comes from.
        let mut skips: Vec<TokenStream> = Vec::new();

        let lookup = match &self.key {
            KeyPlan::Given(expr) => quote!(#cache.lookup::<#value>(#expr).spec(#spec)),
            KeyPlan::Node(expr) => {
                // A node of another value type is reported on the node.
                let memo_node = quote_spanned!(expr.0.span()=> ::cacheme::__private::MemoNode::<#value, _>::new);
                statements.push(quote!(let #node = #memo_node(#expr);));
                quote!(#node.lookup(#cache))
            }
            KeyPlan::Default(params) => {
                let args = params.iter().map(|param| {
                    let text = param.name.unraw().to_string();
                    // Errors about the argument point at its type: the
                    // expression spans from the type's first token to its last.
                    let (first, last) = param.type_span;
                    let name =
                        Ident::new(&param.name.to_string(), param.name.span().located_at(last));
                    let value = match param.is_reference {
                        true => quote!(#name),
                        false => quote_spanned!(first=> &#name),
                    };
                    quote!(.arg(#text, #value))
                });
                statements.push(quote! {
                    let #key = ::cacheme::__private::DefaultKey::of(&|| ()) #(#args)*;
                });
                skips.push(quote!(!#key.is_complete()));
                quote!(#cache.lookup::<#value>(#key.into_string()).spec(#spec))
            }
        };

        // Settings on the lookup.
        let mut calls = Vec::new();
        if self.spec.as_ref().is_some_and(|spec| spec.local.is_some()) {
            calls.push(quote!(.local()));
        }
        if let Some(ttl) = self.ttl {
            let duration = duration(ttl);
            calls.push(quote!(.ttl(::core::option::Option::Some(#duration))));
        }
        if let Some(stale) = &self.stale {
            calls.push(quote!(.stale(#stale)));
        }
        if let Some(expr) = &self.skip {
            skips.push(expr.to_token_stream());
        }
        // The default key's reason to skip is computed before the key is
        // moved into the lookup.
        match (&self.key, skips.as_slice()) {
            (_, []) => {}
            (KeyPlan::Default(_), [only]) => {
                statements.push(quote!(let #skip = #only;));
                calls.push(quote!(.skip(#skip)));
            }
            (_, [only]) => calls.push(quote!(.skip(#only))),
            (_, [first, second]) => {
                statements.push(quote!(let #skip = #first || (#second);));
                calls.push(quote!(.skip(#skip)));
            }
            _ => unreachable!("at most two reasons to skip"),
        }
        if let Some((expr, uses_result)) = &self.invalid_keys {
            if *uses_result {
                let result = Ident::new(RESULT, Span::call_site());
                statements.push(quote! {
                    let #groups = |#result: &#value, #out: &mut ::cacheme::InvalidKeys| {
                        ::cacheme::IntoInvalidKeys::push_into(#expr, #out);
                    };
                });
                calls.push(quote!(.depends_on_value(&#groups)));
            } else {
                calls.push(quote!(.depends_on(#expr)));
            }
        }
        let is_node = matches!(self.key, KeyPlan::Node(_));
        match (&self.hit, is_node) {
            (Some(expr), _) => {
                statements.push(quote!(let #hit: ::cacheme::HitHook<'_, #value> = &#expr;));
                calls.push(quote!(.hit(#hit)));
            }
            (None, true) => {
                statements.push(quote! {
                    let #hit = |key: &str, value: &#value| #node.hit(key, value);
                });
                calls.push(quote!(.hit(&#hit)));
            }
            (None, false) => {}
        }
        match (&self.miss, is_node) {
            (Some(expr), _) => {
                statements.push(quote!(let #miss: ::cacheme::MissHook<'_> = &#expr;));
                calls.push(quote!(.miss(#miss)));
            }
            (None, true) => {
                statements.push(quote! {
                    let #miss = |key: &str| #node.miss(key);
                });
                calls.push(quote!(.miss(&#miss)));
            }
            (None, false) => {}
        }
        if let Returns::Result = self.returns {
            statements.push(quote!(let #errors = ::cacheme::__private::error_policy!(#ret);));
            calls.push(quote!(.share_errors(#errors.share)));
        }

        // The body, as the loader.
        let body = &block.stmts;
        let loader = if self.is_async {
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
            match self.returns {
                Returns::Result => quote!(.load(|| #block).await),
                Returns::Value => quote!(.load(|| ::cacheme::__private::infallible(#block)).await),
            }
        } else {
            match self.returns {
                Returns::Result => quote!(.load_blocking(|| -> #ret #block)),
                Returns::Value => quote! {
                    .load_blocking(|| ::cacheme::__private::infallible_blocking(|| -> #ret #block))
                },
            }
        };
        let tail = match self.returns {
            Returns::Result => quote! {
                #lookup
                    #(#calls)*
                    #loader
                    .map_err(#errors.unshare)
            },
            Returns::Value => quote! {
                let #loaded = #lookup
                    #(#calls)*
                    #loader;
                ::cacheme::__private::into_value(#loaded)
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

impl SpecPlan {
    /// `let spec = { static SPEC: Spec = ..; inventory::submit!(..); &SPEC };`
    fn to_statement(&self, spec: &Ident) -> TokenStream {
        let SpecPlan {
            name,
            tag,
            ttl,
            stale,
            sources,
            local,
        } = self;
        let path = format!("::{name}");
        let new = quote! {
            ::cacheme::Spec::function(::core::concat!(::core::module_path!(), #path))
                .with_tag(#tag)
        };
        let mut fields = Vec::new();
        if let Some(ttl) = ttl {
            let duration = duration(*ttl);
            fields.push(quote!(.with_ttl(#duration)));
        }
        if let Some(stale) = stale {
            fields.push(quote!(.with_stale(#stale)));
        }
        if let Some((local_ttl, capacity)) = local {
            let local_ttl = match local_ttl {
                Some(millis) => duration(*millis),
                None => quote!(::cacheme::LocalSpec::DEFAULT.ttl()),
            };
            let capacity = match capacity {
                Some(capacity) => quote!(#capacity),
                None => quote!(::cacheme::LocalSpec::DEFAULT.capacity()),
            };
            fields.push(quote!(.with_local(::cacheme::LocalSpec::new(#local_ttl, #capacity))));
        }
        let value = quote!(#new #(#fields)*);
        let sources = sources.iter().map(|path| {
            let source_name = path.to_token_stream().to_string().replace(' ', "");
            quote! {
                ::cacheme::__private::inventory::submit! {
                    ::cacheme::sources::SourceRegistration::new(#tag, #source_name, || {
                        ::cacheme::sources::boxed(#path())
                    })
                }
            }
        });
        quote! {
            let #spec = {
                static SPEC: ::cacheme::Spec = #value;
                ::cacheme::__private::inventory::submit! {
                    ::cacheme::__private::Registration::new(&SPEC)
                }
                #(#sources)*
                &SPEC
            };
        }
    }
}

/// `Duration::from_secs(..)` or `from_millis(..)`.
fn duration(millis: u64) -> TokenStream {
    if millis.is_multiple_of(1000) {
        let secs = proc_macro2::Literal::u64_unsuffixed(millis / 1000);
        quote!(::core::time::Duration::from_secs(#secs))
    } else {
        let millis = proc_macro2::Literal::u64_unsuffixed(millis);
        quote!(::core::time::Duration::from_millis(#millis))
    }
}

fn tag_name(code: &Code) -> syn::Result<String> {
    match &code.0 {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => {
            let tag = text.value();
            if tag.is_empty() {
                Err(syn::Error::new_spanned(
                    text,
                    "`tag` must not be empty: `tag = \"cats\"`, or leave it out to use the fn's name",
                ))
            } else if tag.contains(['{', '}']) {
                Err(syn::Error::new_spanned(
                    text,
                    "`tag` must not contain `{` or `}`: they delimit the tag in its Redis key (`CM:tag:{cats}`)",
                ))
            } else {
                Ok(tag)
            }
        }
        other => Err(syn::Error::new_spanned(
            other,
            "`tag` takes a string literal: `tag = \"cats\"` (it is registered at compile time)",
        )),
    }
}

fn ttl(code: &Code) -> syn::Result<u64> {
    let millis = duration_literal(&code.0);
    match millis {
        Some(0) => Err(syn::Error::new_spanned(
            code,
            "`ttl` must be longer than zero; leave it out to use the cache's default",
        )),
        Some(millis) => Ok(millis),
        None => Err(syn::Error::new_spanned(
            code,
            "`ttl` must be whole seconds (`ttl = 300`) or a string with a unit: \
             `ttl = \"1500ms\"`, `\"30s\"`, `\"5m\"`, `\"2h\"` or `\"1d\"`",
        )),
    }
}

/// `invalid_sources = [a, b]` (or one path alone).
fn local_ttl(code: &Code) -> syn::Result<u64> {
    match duration_literal(&code.0) {
        Some(millis) if millis > 0 => Ok(millis),
        _ => Err(syn::Error::new_spanned(
            code,
            "`local_ttl` must be whole seconds above zero (`local_ttl = 10`) or a string with \
             a unit: `local_ttl = \"500ms\"`, `\"30s\"`, `\"5m\"`",
        )),
    }
}

fn local_capacity(code: &Code) -> syn::Result<u64> {
    match &code.0 {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => match int.base10_parse::<u64>() {
            Ok(capacity) if capacity > 0 => Ok(capacity),
            _ => Err(syn::Error::new_spanned(
                code,
                "`local_capacity` must be a whole number of entries above zero, e.g. `local_capacity = 10000`",
            )),
        },
        _ => Err(syn::Error::new_spanned(
            code,
            "`local_capacity` takes a whole number of entries, e.g. `local_capacity = 10000`",
        )),
    }
}

fn source_paths(code: &Code) -> syn::Result<Vec<syn::Path>> {
    let elems: Vec<&Expr> = match &code.0 {
        Expr::Array(array) => array.elems.iter().collect(),
        other => vec![other],
    };
    let mut errors = Errors::default();
    let mut paths = Vec::new();
    for elem in elems {
        match ungroup(elem) {
            Expr::Path(path) if path.qself.is_none() => paths.push(path.path.clone()),
            other => errors.push(syn::Error::new_spanned(
                other,
                "`invalid_sources` lists fns that make a source, e.g. \
                 `invalid_sources = [user_changes]` with `fn user_changes() -> impl InvalidationSource`",
            )),
        }
    }
    errors.finish()?;
    Ok(paths)
}

/// The parameters that form the default key: every named one, except
/// `self` and `_`.
fn key_params(function: &ItemFn) -> syn::Result<Vec<KeyParam>> {
    let mut errors = Errors::default();
    let mut params = Vec::new();
    for input in &function.sig.inputs {
        let FnArg::Typed(typed) = input else { continue };
        match &*typed.pat {
            Pat::Ident(ident) if ident.subpat.is_none() => {
                let mut tokens = typed.ty.to_token_stream().into_iter();
                let first = tokens.next().map_or_else(|| typed.ty.span(), |t| t.span());
                let last = tokens.last().map_or(first, |t| t.span());
                params.push(KeyParam {
                    name: ident.ident.clone(),
                    type_span: (first, last),
                    is_reference: matches!(&*typed.ty, Type::Reference(_))
                        && ident.by_ref.is_none(),
                });
            }
            Pat::Wild(_) => {}
            other => errors.push(syn::Error::new_spanned(
                other,
                "without `key`, the cache key is made of the fn's arguments, and this one has no \
                 name: bind it to a name (`point: Point`) or give a key, e.g. \
                 #[cacheme(key = format!(\"point:{}:{}\", x, y))]",
            )),
        }
    }
    errors.finish()?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::format_ident;

    fn expanded(args: TokenStream, item: TokenStream) -> String {
        expand(args, item)
            .unwrap_or_else(|error| panic!("expands: {error}"))
            .to_string()
    }

    #[test]
    fn result_mentions_are_found_in_nested_groups() {
        assert!(mentions_result(quote!([format!(
            "u:{}",
            cacheme_result.id
        )])));
        assert!(!mentions_result(quote!([format!("u:{}", book.owner_id)])));
    }

    /// The three examples of the issue; prints what they expand to (run
    /// with `--nocapture` and format with rustfmt to read it).
    #[test]
    fn the_issue_examples_expand() {
        let examples = [
            (
                quote!(key = format!("cat:{}", cat.name), tag = "cats", ttl = 300),
                quote!(
                    async fn get_cat(cat: &Cat) -> Result<CatInfo, AppError> {
                        load(cat).await
                    }
                ),
            ),
            (
                quote!(node = CatNode { id: cat.id }, skip = cat.id == 0),
                quote!(
                    async fn cat_info(&self, cat: &Cat) -> CatInfo {
                        self.load(cat).await
                    }
                ),
            ),
            (
                quote!(
                    key = format!("book:{}>owner", book.id),
                    invalid_keys = [format!("user:{}", book.owner_id)],
                    hit = on_hit,
                    miss = on_miss,
                    stale = false
                ),
                quote!(
                    fn book_owner(book: &Book) -> Owner {
                        owner_of(book)
                    }
                ),
            ),
            (
                quote!(invalid_keys = format!("user:{}", cacheme_result.owner_id)),
                quote!(
                    pub fn book(id: u64, shelf: &str) -> std::io::Result<Book> {
                        find(id, shelf)
                    }
                ),
            ),
        ];
        let expected = [
            "lookup :: < CatInfo > (format ! (\"cat:{}\" , cat . name))",
            "MemoNode :: < CatInfo , _ > :: new (CatNode { id : cat . id })",
            ". depends_on ([format ! (\"user:{}\" , book . owner_id)])",
            ". depends_on_value (& groups)",
        ];
        for ((args, item), expected) in examples.into_iter().zip(expected) {
            let code = expanded(args, item);
            println!("{code}\n");
            assert!(code.contains(expected), "{expected}\nis not in\n{code}");
        }
    }

    #[test]
    fn value_types() {
        let name = format_ident!("f");
        let value = |ty: Type| {
            value_type(&name, &ty)
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
