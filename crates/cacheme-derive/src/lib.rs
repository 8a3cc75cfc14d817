//! Macros for [cacheme](https://docs.rs/cacheme): the attribute
//! [`#[cacheme(...)]`](macro@cacheme) that memoizes fns and methods, and the
//! derives `#[derive(Node)]` and `#[derive(InvalidNode)]`. Use them through
//! `cacheme`, which re-exports all three (`use cacheme::{InvalidNode, Node,
//! cacheme};`). The generated code refers to `::cacheme`; a crate that
//! re-exports cacheme under another path names it with `crate = ..` (like
//! serde's `#[serde(crate = "..")]`), on any of the three:
//! `#[node(crate = my_app::cache, ..)]`, `#[invalid_node(crate = my_app::cache, ..)]`,
//! `#[cacheme(crate = my_app::cache, ..)]`.
//!
//! # `#[derive(Node)]`
//!
//! A node is a struct whose fields make a cache key, and the type of the
//! value cached under it (the Python package's `class CatNode(Node)`).
//!
//! ```
//! use cacheme::{InvalidKeys, InvalidNode, Node};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct Cat { id: u64, name: String }
//!
//! #[derive(InvalidNode)]
//! #[invalid_node(key = "owner:{owner}")]
//! struct OwnerInvalid { owner: u64 }
//!
//! #[derive(Node)]
//! #[node(
//!     key = "cat:{id}",            // required: a template of the fields, or `Self::some_fn`
//!     value = Cat,                 // required: the type cached under this node
//!     ttl = 300,                   // seconds; or "1500ms", "30s", "5m", "2h", "1d"
//!     refresh_after = "4m",        // refresh ahead of expiry once a value is this old
//!     stale = false,               // don't serve stale values after an invalidation
//!     version = "v2",              // appended to every key: `cat:1@v2`
//!     tag = "cats",                // defaults to the struct's name, "CatNode"
//!     invalid_nodes = Self::groups,
//!     hit = Self::on_hit,
//!     miss = Self::on_miss,
//!     local_ttl = 10,              // an in-process tier, whose entries live at most 10 s
//!     local_capacity = 10000,      // and are at most 10,000 (each defaults if absent)
//! )]
//! struct CatNode { id: u64, owner: u64 }
//!
//! impl CatNode {
//!     // Anything `IntoInvalidKeys`: an invalid node, a tuple or Vec of them, a String...
//!     fn groups(&self) -> OwnerInvalid {
//!         OwnerInvalid { owner: self.owner }
//!     }
//!     fn on_hit(&self, key: &str, value: &Cat) {
//!         println!("hit {key}: {}", value.name);
//!     }
//!     fn on_miss(&self, key: &str) {
//!         println!("miss {key}");
//!     }
//! }
//!
//! let node = CatNode { id: 1, owner: 7 };
//! assert_eq!(node.key(), "cat:1");
//! assert_eq!(CatNode::SPEC.tag(), "cats");
//! assert_eq!(CatNode::SPEC.ttl(), Some(std::time::Duration::from_secs(300)));
//! let mut groups = InvalidKeys::new();
//! node.invalid_nodes(&mut groups);
//! assert_eq!(groups.as_slice(), ["owner:7"]);
//!
//! // `From` the fields, in order, so managers take them directly:
//! let node: CatNode = (1, 7).into();
//! # let _ = node;
//! // CatNode::objects().get((1, 7)).await
//! ```
//!
//! The derive implements [`cacheme::Node`](https://docs.rs/cacheme/latest/cacheme/trait.Node.html)
//! (with its `SPEC`), `From` the fields (the one field's type; a tuple of
//! several in declaration order; `()` for none), and registers the node with
//! `inventory` so that `cacheme::tags()` lists it.
//!
//! # `#[derive(InvalidNode)]`
//!
//! An invalid node is a dependency group: invalidating it invalidates every
//! value that declared it (the Python package's `InvalidNode`).
//!
//! ```
//! use cacheme::{IntoInvalidKeys, InvalidKeys, InvalidNode};
//!
//! #[derive(InvalidNode)]
//! #[invalid_node(key = "user:{id}")] // or `key = Self::some_fn`
//! struct UserInvalid { id: u64 }
//!
//! assert_eq!(UserInvalid { id: 200 }.key(), "user:200");
//!
//! let mut keys = InvalidKeys::new();
//! (UserInvalid::from(1), &UserInvalid { id: 2 }).push_into(&mut keys);
//! assert_eq!(keys.as_slice(), ["user:1", "user:2"]);
//! ```
//!
//! It implements `cacheme::InvalidNode`, `cacheme::IntoInvalidKeys` for the
//! type and for references to it, and the same `From` impls as `Node`.
//!
//! # Key templates
//!
//! `{field}` is replaced by the field's `Display` form, escaped by
//! `cacheme::key::push_escaped`: every ASCII character other than letters,
//! digits, `_`, `-` and `.` becomes `%XX`. `{{` and `}}` are literal braces.
//!
//! ```
//! # use cacheme::Node;
//! #[derive(Node)]
//! #[node(key = "shop:{shop}/cat:{name}", value = u64)]
//! struct CatCount { shop: u32, name: String }
//!
//! let node = CatCount { shop: 3, name: "tom:*".into() };
//! assert_eq!(node.key(), "shop:3/cat:tom%3A%2A");
//! ```
//!
//! Two placeholders must be separated by a character that values cannot
//! contain unescaped (`:`, `/`, `>`, `|`, ...), so that different field values
//! always give different keys; `"{a}{b}"` or `"{a}-{b}"` is a compile error.
//! A placeholder must name a field; unknown names are compile errors.
//!
//! # Restrictions
//!
//! Both derives take structs with named fields, or unit structs. Tuple
//! structs, enums and unions are rejected, and so are generic structs: a node
//! type has one tag and one registration, and its `SPEC` could not be
//! registered for every instantiation. Write one concrete struct per value type.

mod args;
mod cacheme;
mod node;
#[cfg(test)]
mod snapshots;
mod template;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `cacheme::Node`, `From` the fields, and registers the node.
///
/// ```
/// use cacheme::Node;
///
/// #[derive(Node)]
/// #[node(key = "cat:{id}", value = String, ttl = 300)]
/// struct CatNode { id: u64 }
///
/// assert_eq!(CatNode::from(1).key(), "cat:1");
/// ```
///
/// `#[node(...)]` takes `key` and `value` (required), and `ttl`, `ttl_for`
/// (the time to live computed from each value, `fn(&Value) ->
/// Option<Duration>`), `refresh_after`, `stale`, `version`, `tag`, `invalid_nodes`, `hit`,
/// `miss`, `local_ttl`, `local_capacity` and `crate`; see the
/// [crate documentation](crate) for each of them. A misspelt name is a
/// compile error that suggests the right one.
#[proc_macro_derive(Node, attributes(node))]
pub fn derive_node(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    node::derive_node(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `cacheme::InvalidNode`, `cacheme::IntoInvalidKeys` and `From`
/// the fields.
///
/// ```
/// use cacheme::InvalidNode;
///
/// #[derive(InvalidNode)]
/// #[invalid_node(key = "user:{id}")]
/// struct UserInvalid { id: u64 }
///
/// assert_eq!(UserInvalid::from(200).key(), "user:200");
/// ```
///
/// `#[invalid_node(...)]` takes `key`: a template of the fields, or the
/// path of a `fn(&Self) -> String`; and `crate`, the path of a re-export of
/// cacheme.
#[proc_macro_derive(InvalidNode, attributes(invalid_node))]
pub fn derive_invalid_node(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    node::derive_invalid_node(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Memoizes a fn or a method (the Python package's `@cacheme` decorator):
/// its result is cached under a key computed from its arguments, loaded once
/// among concurrent callers, and invalidated by key, tag or dependency group.
///
/// ```
/// use cacheme::cacheme;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Cat { id: u64, name: String }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct CatInfo { name: String, toys: u32 }
///
/// #[derive(Debug, Clone)]
/// struct AppError;
///
/// #[cacheme(key = format!("cat:{}", cat.name), tag = "cats", ttl = 300)]
/// async fn get_cat(cat: &Cat) -> Result<CatInfo, AppError> {
///     Ok(CatInfo { name: cat.name.clone(), toys: 3 }) // your database here
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tom = Cat { id: 1, name: "Tom".into() };
/// let info = get_cat(&tom).await.expect("loaded");     // runs the body, stores the value
/// assert_eq!(get_cat(&tom).await.expect("cached"), info); // from the cache
/// cacheme::tag("cats").invalid().await?;                  // every key of the tag, deleted
/// # Ok(())
/// # }
/// ```
///
/// # Arguments
///
/// Every argument is optional. Expressions see the fn's parameters by name,
/// and `self` (the Python package's container `c`).
///
/// | argument | what | default |
/// |---|---|---|
/// | `key` | an expression giving the key, anything `Into<String>`: `key = format!("cat:{}", cat.name)` | the default key, below |
/// | `node` | an expression building a `#[derive(Node)]` value: `node = CatNode { id: cat.id }`. The key, tag, ttl, stale, version, groups and hooks are the node's; its `value` type must be what the fn caches | — |
/// | `invalid_keys` | the dependency groups of the value, anything `cacheme::IntoInvalidKeys`: one key, a list, nested lists, an `Option`, invalid nodes. May use the loaded value as `cacheme_result` (a `&V`) | none |
/// | `tag` | a string literal: the tag the keys are indexed under (`cacheme::tag("cats")`) | the fn's name |
/// | `ttl` | seconds (`ttl = 300`) or a string with a unit (`"1500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`); the Python package's `timeout` | the cache's `default_ttl` |
/// | `stale` | a `bool` expression: whether callers may be served a stale value while one refreshes it | the cache's setting |
/// | `skip` | a `bool` expression, evaluated first: when true the body runs alone, and no key, node or hook is even built, nor the cache touched, so those may assume it is false: `key = format!("cat:{}", cat.unwrap().id), skip = cat.is_none()` | false |
/// | `hit` | called with the key and the value when the value comes from the cache: a `fn(&str, &V)` path, or a closure that may use the parameters | the node's, or none |
/// | `miss` | called with the key before the body runs: a `fn(&str)` or a closure | the node's, or none |
/// | `invalid_sources` | fns that make [invalidation sources](https://docs.rs/cacheme/latest/cacheme/sources/) for this fn's tag: `invalid_sources = [user_changes]` with `fn user_changes() -> impl InvalidationSource`; started by `Cache::connect_sources` | none |
/// | `cache` | the `cacheme::Cache` to use (a `Cache`, `&Cache` or `Arc<Cache>` expression): `cache = self.cache` | `cacheme::global()` |
/// | `local_ttl` | an in-process tier in front of the store, whose entries live at most this long: seconds or a string with a unit, like `ttl` | none; 60 s with `local_capacity` |
/// | `local_capacity` | the most entries of that tier: `local_capacity = 10000` | none; 10,000 with `local_ttl` |
/// | `crate` | the path of the cacheme crate, for a crate that re-exports it: `crate = my_app::cache` | `::cacheme` |
///
/// Nothing is silently ignored: `key`, `invalid_keys`, `tag`,
/// `invalid_sources`, `local_ttl` and `local_capacity` next to `node` are
/// compile errors, since the node says those itself
/// (`#[node(key = .., invalid_nodes = .., tag = .., local_ttl = ..)]`); so
/// are unknown names, with a suggestion when one is close. A
/// decorator's `hit` or `miss` replaces the node's; `ttl` and `stale` override
/// the node's.
///
/// # The default key
///
/// Without `key` or `node`, the key is the fn's path and its arguments, each
/// serialized to JSON and escaped (`cacheme::key::push_escaped`): for
/// `get_cat(&Cat { id: 1, .. }, 7)` in the module `cats` of the crate
/// `my_app`, `my_app::cats::get_cat:%7B%22id%22%3A1..%7D:7`.
/// Escaped values never contain `:`, so two different argument lists never
/// share a key. The path names the impl and the generic arguments
/// (`app::Repo<app::User>::count`), so methods of different types, and
/// instantiations of a generic fn, never share keys either.
///
/// A method's receiver is part of its default key, serialized like the other
/// arguments: two instances share a value only if they serialize the same.
/// Derive `Serialize` for the type (with `#[serde(skip)]` on the fields that
/// do not change what the methods return, such as a `Cache` or a
/// connection pool), or write the key:
/// `key = format!("shop:{}:cat:{}", self.id, cat.id)`. `_` parameters are
/// left out (they cannot change the result).
///
/// Every argument, `self` included, must implement `serde::Serialize`, or
/// the fn does not compile (with a message saying what to do). If
/// serializing fails at run time, the call skips the cache (and says so
/// through `tracing`).
///
/// # Return types
///
/// - `Result<V, E>`, or an alias of it (`io::Result<V>`, `anyhow::Result<V>`):
///   `V` is cached; an `Err` is returned to the caller as it is and never
///   cached. If `E: Clone`, callers of the same key waiting in this process
///   for a load that fails get a clone of its error; otherwise each of them
///   runs the body itself (chosen at compile time).
/// - anything else is cached as a whole, `Option<V>` included: `None` is a
///   value, cached like `Some`.
/// - `()` is a compile error: there is nothing to cache.
///
/// The cached type must implement `Serialize`, `DeserializeOwned`, `Send`,
/// `Sync` and be `'static`.
///
/// # Async and blocking
///
/// An `async fn` loads with `Lookup::load`; a plain `fn` with
/// `Lookup::load_blocking`, over plain Redis connections: it needs no tokio
/// runtime. The fn keeps its signature, visibility, generics, attributes and
/// doc comment; methods (`&self`, `&mut self`, `self: Arc<Self>`), trait
/// impls, generic fns and `impl Trait` parameters work. `return` and `?` in
/// the body return from the body, as before.
///
/// ```
/// use cacheme::{Cache, cacheme};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Book { id: u64, owner_id: u64 }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Owner { id: u64, name: String }
///
/// fn on_hit(key: &str, owner: &Owner) { println!("hit {key}: {}", owner.name) }
/// fn on_miss(key: &str) { println!("miss {key}") }
///
/// struct Shelf { cache: Cache }
///
/// impl Shelf {
///     #[cacheme(
///         key = format!("book:{}>owner", book.id),
///         invalid_keys = [format!("user:{}", book.owner_id)],
///         hit = on_hit, miss = on_miss, stale = false,
///         cache = self.cache,
///     )]
///     fn book_owner(&self, book: &Book) -> Owner {
///         Owner { id: book.owner_id, name: "Ann".into() } // your database here
///     }
/// }
///
/// let shelf = Shelf { cache: Cache::builder().build().expect("memory store") };
/// let book = Book { id: 100, owner_id: 200 };
/// let owner = shelf.book_owner(&book); // no runtime needed
/// shelf.cache.create_invalidation().invalid_key("user:200").run_blocking().expect("memory store");
/// assert_eq!(shelf.book_owner(&book), owner); // reloaded
/// ```
///
/// # `invalid_keys` and the loaded value
///
/// When `invalid_keys` does not mention `cacheme_result`, its keys are known
/// before the load, and the key joins those groups before the body runs
/// (`Lookup::depends_on`): an invalidation of a group that lands while the
/// body runs is never lost. When it does (the Python package's
/// `c.cacheme_result`), the groups can only be known after the load, so the
/// key joins them with the value (`Lookup::depends_on_value`): an
/// invalidation of such a group during the load does not reach the value
/// being loaded.
///
/// ```
/// # use cacheme::cacheme;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Book { id: u64, owner_id: u64 }
/// #[cacheme(key = format!("book:{id}"), invalid_keys = format!("user:{}", cacheme_result.owner_id))]
/// fn book(id: u64) -> Book {
///     Book { id, owner_id: 200 } // the owner is known once the book is loaded
/// }
/// # book(100);
/// ```
///
/// # What it generates
///
/// A few statements around the body, calling the runtime's public API
/// (`Cache::lookup`, `Lookup`, `IntoInvalidKeys`) and small helpers of
/// `cacheme::__private`; the generated locals are hygienic, so the body and
/// the arguments cannot see them. What follows are real expansions, kept
/// equal to the snapshot tests of this crate (`src/snapshots/`); `db::..`
/// stands for your code.
///
/// An async fn returning a `Result`, with
/// `#[cacheme(key = format!("cat:{}", cat.name), tag = "cats", ttl = 300, invalid_keys = format!("owner:{}", cat.owner))]`.
/// The fn's spec is a `static`, registered with `inventory` for
/// `cacheme::tags()`; `error_policy!` picks at compile time whether callers
/// waiting for the same load share its error (when `E: Clone`) or each load
/// for themselves; the unreachable `return` fixes the async block's output
/// type, so that `?` works in the body:
///
/// ```text
/// async fn get_cat(cat: &Cat) -> Result<CatInfo, AppError> {
///     let spec = {
///         static SPEC: ::cacheme::Spec = ::cacheme::Spec::function(
///                 ::core::concat!(::core::module_path!(), "::get_cat"),
///             )
///             .with_tag("cats")
///             .with_ttl(::core::time::Duration::from_secs(300));
///         ::cacheme::__private::inventory::submit! {
///             ::cacheme::__private::Registration::new(& SPEC)
///         }
///         &SPEC
///     };
///     let errors = ::cacheme::__private::error_policy!(Result < CatInfo, AppError >);
///     let cache: &::cacheme::Cache = &::cacheme::global();
///     cache
///         .lookup::<CatInfo>(format!("cat:{}", cat.name))
///         .spec(spec)
///         .depends_on(format!("owner:{}", cat.owner))
///         .share_errors(errors.share)
///         .load(|| async {
///             #[allow(
///                 unknown_lints,
///                 unreachable_code,
///                 clippy::diverging_sub_expression,
///                 clippy::empty_loop,
///                 clippy::let_unit_value,
///                 clippy::let_with_type_underscore,
///                 clippy::needless_return,
///                 clippy::unreachable
///             )]
///             if false {
///                 let fake_return: Result<CatInfo, AppError> = loop {};
///                 return fake_return;
///             }
///             let info = db::load(cat).await?;
///             Ok(info)
///         })
///         .await
///         .map_err(errors.unshare)
/// }
/// ```
///
/// A plain fn returning a plain value, with
/// `#[cacheme(key = format!("book:{}>owner", book.id), invalid_keys = [format!("user:{}", book.owner_id)], hit = on_hit, miss = on_miss, stale = false)]`:
///
/// ```text
/// fn book_owner(book: &Book) -> Owner {
///     let spec = {
///         static SPEC: ::cacheme::Spec = ::cacheme::Spec::function(
///                 ::core::concat!(::core::module_path!(), "::book_owner"),
///             )
///             .with_tag("book_owner")
///             .with_stale(false);
///         ::cacheme::__private::inventory::submit! {
///             ::cacheme::__private::Registration::new(& SPEC)
///         }
///         &SPEC
///     };
///     let hit: ::cacheme::HitHook<'_, Owner> = &on_hit;
///     let miss: ::cacheme::MissHook<'_> = &on_miss;
///     let cache: &::cacheme::Cache = &::cacheme::global();
///     let loaded = cache
///         .lookup::<Owner>(format!("book:{}>owner", book.id))
///         .spec(spec)
///         .depends_on([format!("user:{}", book.owner_id)])
///         .hit(hit)
///         .miss(miss)
///         .load_blocking(|| ::cacheme::__private::infallible_blocking(|| -> Owner {
///             db::owner_of(book)
///         }));
///     ::cacheme::__private::into_value(loaded)
/// }
/// ```
///
/// A method without `key`, with `#[cacheme(cache = self.cache, local_ttl = 10)]`:
/// the default key is built from `self` and the arguments; an argument that
/// does not serialize makes the call skip the cache:
///
/// ```text
/// pub fn count(&self, shelf: &str, min_pages: u32) -> usize {
///     let spec = {
///         static SPEC: ::cacheme::Spec = ::cacheme::Spec::function(
///                 ::core::concat!(::core::module_path!(), "::count"),
///             )
///             .with_tag("count")
///             .with_local(
///                 ::cacheme::LocalSpec::new(
///                     ::core::time::Duration::from_secs(10),
///                     ::cacheme::LocalSpec::DEFAULT.capacity(),
///                 ),
///             );
///         ::cacheme::__private::inventory::submit! {
///             ::cacheme::__private::Registration::new(& SPEC)
///         }
///         &SPEC
///     };
///     let cache: &::cacheme::Cache = &(self.cache);
///     let key = ::cacheme::__private::DefaultKey::of(&|| ())
///         .arg("self", self)
///         .arg("shelf", shelf)
///         .arg("min_pages", &min_pages);
///     let incomplete = !key.is_complete();
///     let loaded = cache
///         .lookup::<usize>(key.into_string())
///         .spec(spec)
///         .local()
///         .skip(incomplete)
///         .load_blocking(|| ::cacheme::__private::infallible_blocking(|| -> usize {
///             self.books
///                 .iter()
///                 .filter(|b| b.shelf == shelf && b.pages >= min_pages)
///                 .count()
///         }));
///     ::cacheme::__private::into_value(loaded)
/// }
/// ```
///
/// With `skip`, the skip is evaluated first, and a call that skips runs the
/// body alone: no key or node is built, no hook called, no cache touched. With
/// `#[cacheme(node = CatNode { id: cat.unwrap().id }, skip = cat.is_none())]`
/// (the node's hooks are its own, `#[node(hit = .., miss = ..)]`):
///
/// ```text
/// async fn cat_info(cat: Option<&Cat>) -> Option<CatInfo> {
///     let skip: bool = cat.is_none();
///     let node;
///     let hit;
///     let miss;
///     let lookup = if skip {
///         ::core::option::Option::None
///     } else {
///         let cache: &::cacheme::Cache = &::cacheme::global();
///         node = ::cacheme::__private::MemoNode::<
///             Option<CatInfo>,
///             _,
///         >::new(CatNode { id: cat.unwrap().id });
///         hit = |key: &str, value: &Option<CatInfo>| node.hit(key, value);
///         miss = |key: &str| node.miss(key);
///         ::core::option::Option::Some(node.lookup(cache).hit(&hit).miss(&miss))
///     };
///     let loaded = ::cacheme::__private::load_unless_skipped(
///             lookup,
///             || ::cacheme::__private::infallible(async {
///                 #[allow(
///                     unknown_lints,
///                     unreachable_code,
///                     clippy::diverging_sub_expression,
///                     clippy::empty_loop,
///                     clippy::let_unit_value,
///                     clippy::let_with_type_underscore,
///                     clippy::needless_return,
///                     clippy::unreachable
///                 )]
///                 if false {
///                     let fake_return: Option<CatInfo> = loop {};
///                     return fake_return;
///                 }
///                 db::load(cat?.id).await
///             }),
///         )
///         .await;
///     ::cacheme::__private::into_value(loaded)
/// }
/// ```
#[proc_macro_attribute]
pub fn cacheme(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    match cacheme::expand(args.into(), item.into()) {
        Ok(expanded) => expanded.into(),
        // The fn stays as written, so that its callers do not fail too.
        Err(error) => {
            let mut tokens = original;
            tokens.extend(error.into_compile_error());
            tokens.into()
        }
    }
}
