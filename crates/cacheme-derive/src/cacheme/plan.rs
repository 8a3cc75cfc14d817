//! The plan: what the generated code does, decided from the checked fn and
//! arguments, with every value parsed.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, Ident, ItemFn, Lit, Pat, Path, Receiver, ReturnType, Type};

use super::check::{self, Returns};
use super::parse::Args;
use crate::args::usage::CACHEME;
use crate::args::values::{self, Millis};
use crate::args::{Code, Errors, Parsed};

/// Everything the generated code needs, checked.
pub(super) struct Plan {
    /// The runtime's path: `::cacheme`, or `crate = ..`.
    pub(super) krate: Path,
    pub(super) returns: Returns,
    /// The cached type.
    pub(super) value: TokenStream,
    /// The fn's return type.
    pub(super) ret: TokenStream,
    pub(super) is_async: bool,
    /// `skip = ..`: evaluated first; when true, nothing else is.
    pub(super) skip: Option<Code>,
    pub(super) cache: Option<Code>,
    pub(super) key: KeyPlan,
    /// With a key (given or default): the fn's spec, registered.
    pub(super) spec: Option<SpecPlan>,
    pub(super) invalid_keys: Option<Groups>,
    /// Set on the lookup: a node's spec is the node type's.
    pub(super) ttl: Option<Millis>,
    /// Set on the lookup: a node's, or one that is not a literal.
    pub(super) stale: Option<Code>,
    pub(super) hit: Option<Code>,
    pub(super) miss: Option<Code>,
    /// Fail-safe and loader timeouts, set on the lookup: (the lookup
    /// builder's name, duration).
    pub(super) fail_safe: Vec<(&'static str, Millis)>,
}

/// Where the key comes from.
pub(super) enum KeyPlan {
    /// `key = ..`.
    Given(Code),
    /// `node = ..`.
    Node(Code),
    /// The default key: the fn's path and these arguments.
    Default(Vec<KeyArg>),
}

/// An argument of the default key.
pub(super) struct KeyArg {
    /// Its name: the parameter's, or `self`.
    pub(super) name: String,
    /// A reference to it, spanned over its type (or the receiver): a type
    /// without `Serialize` is reported there.
    pub(super) value: TokenStream,
}

/// `invalid_keys = ..`.
pub(super) struct Groups {
    pub(super) code: Code,
    /// It mentions `cacheme_result`: computed from the loaded value.
    pub(super) uses_result: bool,
}

/// The fn's own spec.
pub(super) struct SpecPlan {
    pub(super) name: String,
    pub(super) tag: String,
    pub(super) ttl: Option<Millis>,
    pub(super) stale: Option<bool>,
    pub(super) sources: Vec<Path>,
    /// A local tier: its ttl and capacity, each defaulted if absent.
    pub(super) local: Option<(Option<Millis>, Option<u64>)>,
}

impl Plan {
    /// The plan of `function` with `parsed`; `None` after an error.
    pub(super) fn new(
        function: &ItemFn,
        parsed: Parsed<Args>,
        errors: &mut Errors,
    ) -> Option<Plan> {
        let krate = values::runtime_path(&CACHEME, parsed.args.krate.as_ref(), errors);
        let returns = check::function(function, &krate, errors);
        check::arguments(&parsed, errors);
        let local_given =
            parsed.name("local_ttl").is_some() || parsed.name("local_capacity").is_some();
        let args = parsed.args;
        let fn_name = function.sig.ident.unraw().to_string();

        let SpecArgs {
            tag,
            ttl,
            local_ttl,
            local_capacity,
            sources,
            stale: literal_stale,
        } = SpecArgs::read(&args, &fn_name, errors);
        let fail_safe: Vec<(&'static str, Millis)> = [
            ("fail_safe", &args.fail_safe),
            ("fail_safe_throttle", &args.fail_safe_throttle),
            ("soft_timeout", &args.soft_timeout),
            ("hard_timeout", &args.hard_timeout),
        ]
        .into_iter()
        .filter_map(|(name, code)| {
            let code = code.as_ref()?;
            Some((name, errors.take(values::duration(&CACHEME, name, code))?))
        })
        .collect();
        let key = match (args.node, args.key) {
            (Some(node), _) => KeyPlan::Node(node),
            (None, Some(key)) => KeyPlan::Given(key),
            (None, None) => KeyPlan::Default(errors.take(key_args(function)).unwrap_or_default()),
        };
        let (returns, value) = returns?;
        let tag = tag?;

        let is_node = matches!(key, KeyPlan::Node(_));
        let spec = (!is_node).then(|| SpecPlan {
            name: fn_name,
            tag,
            ttl,
            stale: literal_stale,
            sources,
            local: local_given.then_some((local_ttl, local_capacity)),
        });
        let ret = match &function.sig.output {
            ReturnType::Type(_, ty) => ty.to_token_stream(),
            ReturnType::Default => return None,
        };
        Some(Plan {
            krate,
            returns,
            value,
            ret,
            is_async: function.sig.asyncness.is_some(),
            skip: args.skip,
            cache: args.cache,
            key,
            spec,
            invalid_keys: args.invalid_keys.map(|code| Groups {
                uses_result: check::mentions_result(code.to_token_stream()),
                code,
            }),
            // With a spec, a literal ttl or stale is in it; otherwise (node,
            // or a computed `stale`) it is set on the lookup.
            ttl: if is_node { ttl } else { None },
            stale: if is_node || literal_stale.is_none() {
                args.stale
            } else {
                None
            },
            hit: args.hit,
            miss: args.miss,
            fail_safe,
        })
    }
}

/// The arguments of the default key: the receiver and every named
/// parameter, except `_`.
/// What a `#[cacheme]` fn's spec is made of, read from its arguments
/// (plain and batch fns alike): the tag (the fn's name by default), the
/// durations and capacity, the invalidation sources, and `stale` when it is
/// a literal (an expression is resolved at run time).
pub(super) struct SpecArgs {
    pub(super) tag: Option<String>,
    pub(super) ttl: Option<Millis>,
    pub(super) local_ttl: Option<Millis>,
    pub(super) local_capacity: Option<u64>,
    pub(super) sources: Vec<Path>,
    pub(super) stale: Option<bool>,
}

impl SpecArgs {
    pub(super) fn read(args: &Args, fn_name: &str, errors: &mut Errors) -> Self {
        let duration = |name, code: &Option<Code>, errors: &mut Errors| {
            let code = code.as_ref()?;
            errors.take(values::duration(&CACHEME, name, code))
        };
        SpecArgs {
            tag: match &args.tag {
                Some(code) => errors.take(values::tag_name(&CACHEME, code)),
                None => Some(fn_name.to_owned()),
            },
            ttl: duration("ttl", &args.ttl, errors),
            local_ttl: duration("local_ttl", &args.local_ttl, errors),
            local_capacity: args
                .local_capacity
                .as_ref()
                .and_then(|code| errors.take(values::count(&CACHEME, "local_capacity", code))),
            sources: match &args.invalid_sources {
                Some(code) => errors
                    .take(values::paths(&CACHEME, "invalid_sources", code))
                    .unwrap_or_default(),
                None => Vec::new(),
            },
            stale: match &args.stale {
                Some(Code(Expr::Lit(ExprLit {
                    lit: Lit::Bool(flag),
                    ..
                }))) => Some(flag.value),
                _ => None,
            },
        }
    }
}

fn key_args(function: &ItemFn) -> syn::Result<Vec<KeyArg>> {
    let mut errors = Errors::default();
    let mut args = Vec::new();
    for input in &function.sig.inputs {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                args.push(KeyArg {
                    name: "self".to_owned(),
                    value: receiver_ref(receiver),
                });
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        match &*typed.pat {
            Pat::Ident(ident) if ident.subpat.is_none() => {
                // The expression spans the type, from its first token to its
                // last: `&name` with `&` at the first and `name` at the last.
                let mut tokens = typed.ty.to_token_stream().into_iter();
                let first = tokens.next().map_or_else(|| typed.ty.span(), |t| t.span());
                let last = tokens.last().map_or(first, |t| t.span());
                let name = Ident::new(
                    &ident.ident.to_string(),
                    ident.ident.span().located_at(last),
                );
                let is_reference =
                    matches!(&*typed.ty, Type::Reference(_)) && ident.by_ref.is_none();
                args.push(KeyArg {
                    name: ident.ident.unraw().to_string(),
                    value: match is_reference {
                        true => quote!(#name),
                        false => quote_spanned!(first=> &#name),
                    },
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
    Ok(args)
}

/// A `&Self` to the receiver, spanned over it: `self` for `&self`, `&*self`
/// for `&mut self` and smart pointers (`self: Arc<Self>`), `&self` for `self`.
fn receiver_ref(receiver: &Receiver) -> TokenStream {
    let this = &receiver.self_token;
    let by_value = match &*receiver.ty {
        _ if receiver.colon_token.is_none() => receiver.reference.is_none(),
        Type::Path(path) => path.qself.is_none() && path.path.is_ident("Self"),
        _ => false,
    };
    let start = match &receiver.reference {
        Some((and, _)) => and.span,
        None => this.span,
    };
    match (&receiver.reference, receiver.mutability) {
        _ if by_value => quote_spanned!(start=> &#this),
        (Some(_), None) if receiver.colon_token.is_none() => quote!(#this),
        _ => quote_spanned!(start=> &*#this),
    }
}
