//! Macros for [cacheme](https://docs.rs/cacheme): the attribute
//! [`#[cacheme(...)]`](macro@cacheme) that memoizes fns and methods, and the
//! derives `#[derive(Node)]` and `#[derive(InvalidNode)]`. Use them through
//! `cacheme`, which re-exports all three (`use cacheme::{InvalidNode, Node,
//! cacheme};`); the generated code refers to `::cacheme`.
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

mod attrs;
mod cacheme_attr;
mod expand;
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
/// `#[node(...)]` takes `key` and `value` (required), and `ttl`,
/// `refresh_after`, `stale`, `version`, `tag`, `invalid_nodes`, `hit` and
/// `miss`; see the [crate documentation](crate) for each of them.
#[proc_macro_derive(Node, attributes(node))]
pub fn derive_node(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::node(&input)
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
/// `#[invalid_node(...)]` takes only `key`: a template of the fields, or the
/// path of a `fn(&Self) -> String`.
#[proc_macro_derive(InvalidNode, attributes(invalid_node))]
pub fn derive_invalid_node(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::invalid_node(&input)
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
/// | `skip` | a `bool` expression: when true the body runs and the cache is not touched: `skip = cat.is_none()` | false |
/// | `hit` | called with the key and the value when the value comes from the cache: a `fn(&str, &V)` path, or a closure that may use the parameters | the node's, or none |
/// | `miss` | called with the key before the body runs: a `fn(&str)` or a closure | the node's, or none |
/// | `invalid_sources` | fns that make [invalidation sources](https://docs.rs/cacheme/latest/cacheme/sources/) for this fn's tag: `invalid_sources = [user_changes]` with `fn user_changes() -> impl InvalidationSource`; started by `Cache::connect_sources` | none |
/// | `cache` | the `cacheme::Cache` to use (a `Cache`, `&Cache` or `Arc<Cache>` expression): `cache = self.cache` | `cacheme::global()` |
///
/// Nothing is silently ignored: `key`, `invalid_keys`, `tag` and
/// `invalid_sources` next to `node` are compile errors, since the node says
/// those itself (`#[node(key = .., invalid_nodes = .., tag = ..)]`). A
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
/// **`self` is not part of the default key.** Two instances of a type share
/// the values of their `#[cacheme]` methods; if what a method returns
/// depends on `self`, write the key: `key = format!("shop:{}:cat:{}", self.id, cat.id)`.
/// `_` parameters are left out too (they cannot change the result).
///
/// Every other argument must implement `serde::Serialize`, or the fn does not
/// compile (with a message saying so). If serializing fails at run time, the
/// call skips the cache (and says so through `tracing`).
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
/// the arguments cannot see them. The first example above becomes (`..`
/// stands for the `#[allow(..)]` of lints that the unreachable `return`
/// would trip):
///
/// ```text
/// async fn get_cat(cat: &Cat) -> Result<CatInfo, AppError> {
///     let spec = {
///         static SPEC: ::cacheme::Spec =
///             ::cacheme::Spec::function(::core::concat!(::core::module_path!(), "::get_cat"))
///                 .with_tag("cats")
///                 .with_ttl(::core::time::Duration::from_secs(300));
///         ::cacheme::__private::inventory::submit! { ::cacheme::__private::Registration::new(&SPEC) }
///         &SPEC
///     };
///     let cache: &::cacheme::Cache = &::cacheme::global();
///     // `E: Clone`? Then waiters share the error; otherwise each loads.
///     let errors = ::cacheme::__private::error_policy!(Result<CatInfo, AppError>);
///     cache
///         .lookup::<CatInfo>(format!("cat:{}", cat.name))
///         .spec(spec)
///         .share_errors(errors.share)
///         .load(|| async {
///             #[allow(..)]
///             if false {
///                 // Fixes the block's output type, so that `?` works in the body.
///                 let fake_return: Result<CatInfo, AppError> = loop {};
///                 return fake_return;
///             }
///             Ok(CatInfo { name: cat.name.clone(), toys: 3 }) // the body
///         })
///         .await
///         .map_err(errors.unshare)
/// }
/// ```
///
/// With a node, and a fn that returns a plain value:
///
/// ```text
/// // #[cacheme(node = CatNode { id: cat.id }, skip = cat.id == 0)]
/// async fn cat_info(&self, cat: &Cat) -> CatInfo {
///     let cache: &::cacheme::Cache = &::cacheme::global();
///     // Checks, once and on the node, that the node caches `CatInfo`.
///     let node = ::cacheme::__private::MemoNode::<CatInfo, _>::new(CatNode { id: cat.id });
///     let hit = |key: &str, value: &CatInfo| node.hit(key, value);
///     let miss = |key: &str| node.miss(key);
///     let loaded = node
///         .lookup(cache)
///         .skip(cat.id == 0)
///         .hit(&hit)
///         .miss(&miss)
///         .load(|| ::cacheme::__private::infallible(async { /* as above */ }))
///         .await;
///     ::cacheme::__private::into_value(loaded)
/// }
/// ```
///
/// And a plain fn with groups and hooks (the second example above, without
/// `cache = ..`):
///
/// ```text
/// fn book_owner(book: &Book) -> Owner {
///     let spec = { /* as above, with `stale: Some(false)` and the tag "book_owner" */ };
///     let cache: &::cacheme::Cache = &::cacheme::global();
///     let hit: ::cacheme::HitHook<'_, Owner> = &on_hit;
///     let miss: ::cacheme::MissHook<'_> = &on_miss;
///     let loaded = cache
///         .lookup::<Owner>(format!("book:{}>owner", book.id))
///         .spec(spec)
///         .depends_on([format!("user:{}", book.owner_id)])
///         .hit(hit)
///         .miss(miss)
///         .load_blocking(|| ::cacheme::__private::infallible_blocking(|| -> Owner { /* the body */ }));
///     ::cacheme::__private::into_value(loaded)
/// }
/// ```
///
/// Without `key`, the key is built first:
///
/// ```text
/// let key = ::cacheme::__private::DefaultKey::of(&|| ()).arg("id", &id).arg("shelf", shelf);
/// let skip = !key.is_complete(); // an argument did not serialize
/// cache.lookup::<Book>(key.into_string()).spec(spec).skip(skip) // ...
/// ```
#[proc_macro_attribute]
pub fn cacheme(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    match cacheme_attr::expand(args.into(), item.into()) {
        Ok(expanded) => expanded.into(),
        // The fn stays as written, so that its callers do not fail too.
        Err(error) => {
            let mut tokens = original;
            tokens.extend(error.into_compile_error());
            tokens.into()
        }
    }
}
