//! The attributes of the derives, read with the shared parser and checked
//! against the struct.

use darling::FromMeta;
use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::{Attribute, DeriveInput, ExprPath, Field, Ident, Path, Type};

use crate::args::usage::{INVALID_NODE, NODE};
use crate::args::values::{self, KeySource, Millis};
use crate::args::{self, Attr, Code, Errors};
use crate::template::{self, Segment};

/// The arguments of `#[node(...)]`, as written.
#[derive(FromMeta, Default)]
struct NodeArgs {
    key: Option<Code>,
    value: Option<Code>,
    ttl: Option<Code>,
    ttl_for: Option<Code>,
    stale: Option<Code>,
    version: Option<Code>,
    tag: Option<Code>,
    refresh_after: Option<Code>,
    invalid_nodes: Option<Code>,
    hit: Option<Code>,
    miss: Option<Code>,
    local_ttl: Option<Code>,
    local_capacity: Option<Code>,
    fail_safe: Option<Code>,
    fail_safe_throttle: Option<Code>,
    soft_timeout: Option<Code>,
    hard_timeout: Option<Code>,
    #[darling(rename = "crate")]
    krate: Option<Code>,
}

/// The arguments of `#[invalid_node(...)]`, as written.
#[derive(FromMeta, Default)]
struct InvalidNodeArgs {
    key: Option<Code>,
    #[darling(rename = "crate")]
    krate: Option<Code>,
}

/// A `#[derive(Node)]`, checked: what the impls are made of.
pub(super) struct Node<'a> {
    pub(super) krate: Path,
    pub(super) fields: Vec<&'a Field>,
    pub(super) key: Key<'a>,
    pub(super) value: Type,
    /// Given only when it is not the struct's name.
    pub(super) tag: Option<String>,
    pub(super) ttl: Option<Millis>,
    /// `ttl_for = Self::ttl_of`: the time to live computed from the value.
    pub(super) ttl_for: Option<ExprPath>,
    pub(super) stale: Option<bool>,
    pub(super) version: Option<String>,
    pub(super) refresh_after: Option<Millis>,
    pub(super) invalid_nodes: Option<ExprPath>,
    pub(super) hit: Option<ExprPath>,
    pub(super) miss: Option<ExprPath>,
    /// A local tier: its ttl and capacity, each defaulted if absent.
    pub(super) local: Option<(Option<Millis>, Option<u64>)>,
    /// Fail-safe and loader timeouts: (the spec builder's suffix, duration).
    pub(super) fail_safe: Vec<(&'static str, Millis)>,
}

/// A `#[derive(InvalidNode)]`, checked.
pub(super) struct InvalidNode<'a> {
    pub(super) krate: Path,
    pub(super) fields: Vec<&'a Field>,
    pub(super) key: Key<'a>,
}

/// How `fn key(&self)` makes the key.
pub(super) enum Key<'a> {
    /// `key = Self::cache_key`.
    Method(ExprPath),
    /// `key = "cat:{id}"`: literal text and fields, in order.
    Template(Vec<Piece<'a>>),
}

/// A piece of a key template.
pub(super) enum Piece<'a> {
    Text(String),
    Field(&'a Field),
}

/// Read and check `#[node(...)]`; `fields` is `None` if the struct's shape
/// was refused (the attribute is still read, for its own errors).
pub(super) fn node<'a>(
    input: &'a DeriveInput,
    fields: Option<&[&'a Field]>,
    errors: &mut Errors,
) -> Option<Node<'a>> {
    let example = template::example(&owner(input), &names(fields));
    let Some(lists) = lists(&input.attrs, &NODE, errors) else {
        errors.push(syn::Error::new_spanned(
            &input.ident,
            format!(
                "#[derive(Node)] needs a #[node(...)] attribute with at least `key` and `value`, \
                 e.g. #[node(key = \"{example}\", value = YourValueType)]"
            ),
        ));
        return None;
    };
    let attribute = lists.first;
    let args::Parsed { args, given } = args::read::<NodeArgs>(&NODE, lists.tokens, errors);
    let given = |name: &str| given.iter().any(|ident| ident == name);
    let NodeArgs {
        key,
        value,
        ttl,
        ttl_for,
        stale,
        version,
        tag,
        refresh_after,
        invalid_nodes,
        hit,
        miss,
        local_ttl,
        local_capacity,
        fail_safe,
        fail_safe_throttle,
        soft_timeout,
        hard_timeout,
        krate,
    } = args;

    if !given("key") {
        errors.push(syn::Error::new_spanned(
            attribute,
            format!(
                "#[node(...)] needs `key`: a template of the fields such as `key = \"{example}\"`, \
                 or a method such as `key = Self::cache_key`"
            ),
        ));
    }
    if !given("value") {
        errors.push(syn::Error::new_spanned(
            attribute,
            "#[node(...)] needs `value`: the type cached under this node, e.g. `value = Cat` or `value = Vec<Cat>`",
        ));
    }
    // In the table's order, which is how the messages are listed.
    let key = key.and_then(|code| errors.take(key_of(&NODE, input, fields, &code)));
    let value = value.and_then(|code| errors.take(args::type_of(&code)));
    let duration = |name, code: Option<Code>, errors: &mut Errors| {
        code.and_then(|code| errors.take(values::duration(&NODE, name, &code).map(|d| (d, code))))
    };
    let method = |name, code: Option<Code>, errors: &mut Errors| {
        code.and_then(|code| errors.take(values::method(&NODE, name, &code)))
    };
    let ttl = duration("ttl", ttl, errors);
    let stale = stale.and_then(|code| errors.take(values::flag(&NODE, "stale", &code)));
    let version = version.and_then(|code| errors.take(values::string(&NODE, "version", &code)));
    let tag = tag.and_then(|code| errors.take(values::tag_name(&NODE, &code)));
    let refresh_after = duration("refresh_after", refresh_after, errors);
    if let (Some((ttl, _)), Some((refresh, code))) = (&ttl, &refresh_after)
        && refresh >= ttl
    {
        errors.push(syn::Error::new_spanned(
            code,
            format!(
                "`refresh_after` ({refresh}) must be shorter than `ttl` ({ttl}), \
                 or values expire before they are refreshed"
            ),
        ));
    }
    let invalid_nodes = method("invalid_nodes", invalid_nodes, errors);
    let ttl_for = method("ttl_for", ttl_for, errors);
    let hit = method("hit", hit, errors);
    let miss = method("miss", miss, errors);
    let local_ttl = duration("local_ttl", local_ttl, errors).map(|(millis, _)| millis);
    let local_capacity =
        local_capacity.and_then(|code| errors.take(values::count(&NODE, "local_capacity", &code)));
    let local =
        (given("local_ttl") || given("local_capacity")).then_some((local_ttl, local_capacity));
    let fail_safe: Vec<(&'static str, Millis)> = [
        ("fail_safe", fail_safe),
        ("fail_safe_throttle", fail_safe_throttle),
        ("soft_timeout", soft_timeout),
        ("hard_timeout", hard_timeout),
    ]
    .into_iter()
    .filter_map(|(name, code)| Some((name, duration(name, code, errors)?.0)))
    .collect();
    let krate = values::runtime_path(&NODE, krate.as_ref(), errors);
    Some(Node {
        krate,
        fields: fields?.to_vec(),
        key: key?,
        value: value?,
        tag,
        ttl: ttl.map(|(millis, _)| millis),
        ttl_for,
        stale,
        version,
        refresh_after: refresh_after.map(|(millis, _)| millis),
        invalid_nodes,
        hit,
        miss,
        local,
        fail_safe,
    })
}

/// Read and check `#[invalid_node(...)]`.
pub(super) fn invalid_node<'a>(
    input: &'a DeriveInput,
    fields: Option<&[&'a Field]>,
    errors: &mut Errors,
) -> Option<InvalidNode<'a>> {
    let example = template::example(&owner(input), &names(fields));
    let Some(lists) = lists(&input.attrs, &INVALID_NODE, errors) else {
        errors.push(syn::Error::new_spanned(
            &input.ident,
            format!(
                "#[derive(InvalidNode)] needs a #[invalid_node(key = ...)] attribute, \
                 e.g. #[invalid_node(key = \"{example}\")]"
            ),
        ));
        return None;
    };
    let attribute = lists.first;
    let parsed = args::read::<InvalidNodeArgs>(&INVALID_NODE, lists.tokens, errors);
    let krate = values::runtime_path(&INVALID_NODE, parsed.args.krate.as_ref(), errors);
    if parsed.name("key").is_none() {
        errors.push(syn::Error::new_spanned(
            attribute,
            format!(
                "#[invalid_node(...)] needs `key`: a template of the fields such as \
                 `key = \"{example}\"`, or a method such as `key = Self::cache_key`"
            ),
        ));
    }
    let key = parsed
        .args
        .key
        .and_then(|code| errors.take(key_of(&INVALID_NODE, input, fields, &code)));
    Some(InvalidNode {
        krate,
        fields: fields?.to_vec(),
        key: key?,
    })
}

/// Every `#[node(..)]` (or `#[invalid_node(..)]`) of the struct.
struct Lists<'a> {
    first: &'a Attribute,
    tokens: Vec<TokenStream>,
}

/// The contents of every attribute named `attr`; `None` if there is none.
fn lists<'a>(attrs: &'a [Attribute], attr: &Attr, errors: &mut Errors) -> Option<Lists<'a>> {
    let mut found = attrs.iter().filter(|a| a.path().is_ident(attr.name));
    let first = found.next()?;
    let tokens = std::iter::once(first)
        .chain(found)
        .filter_map(|attribute| errors.take(attribute.meta.require_list()))
        .map(|list| list.tokens.clone())
        .collect();
    Some(Lists { first, tokens })
}

/// The key: a method, or a template checked against the fields (when they
/// are known).
fn key_of<'a>(
    attr: &Attr,
    input: &DeriveInput,
    fields: Option<&[&'a Field]>,
    code: &Code,
) -> syn::Result<Key<'a>> {
    let template = match values::key_source(attr, code)? {
        KeySource::Method(path) => return Ok(Key::Method(path)),
        KeySource::Template(template) => template,
    };
    let Some(fields) = fields else {
        // The struct's shape is reported; a template cannot be checked.
        return Ok(Key::Template(Vec::new()));
    };
    let names = names(Some(fields));
    let segments = template::parse(&template.value(), &owner(input), &names)
        .map_err(|message| syn::Error::new_spanned(&template, message))?;
    let pieces = segments
        .into_iter()
        .map(|segment| match segment {
            Segment::Literal(text) => Piece::Text(text),
            Segment::Field(name) => {
                let position = names.iter().position(|n| *n == name);
                Piece::Field(fields[position.expect("the template parser checked the field names")])
            }
        })
        .collect();
    Ok(Key::Template(pieces))
}

/// The struct's name, as placeholders and messages spell it.
fn owner(input: &DeriveInput) -> String {
    input.ident.unraw().to_string()
}

/// The names placeholders use for `fields` (`type` for `r#type`).
fn names(fields: Option<&[&Field]>) -> Vec<String> {
    fields
        .unwrap_or_default()
        .iter()
        .filter_map(|field| field.ident.as_ref())
        .map(|ident: &Ident| ident.unraw().to_string())
        .collect()
}
