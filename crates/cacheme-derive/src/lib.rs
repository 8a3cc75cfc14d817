//! Derive macros for [cacheme](https://docs.rs/cacheme): `#[derive(Node)]`
//! and `#[derive(InvalidNode)]`. Use them through `cacheme`, which re-exports
//! both (`use cacheme::{InvalidNode, Node};`); the generated code refers to
//! `::cacheme`.
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
//! assert_eq!(CatNode::SPEC.tag, "cats");
//! assert_eq!(CatNode::SPEC.ttl, Some(std::time::Duration::from_secs(300)));
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
//! `inventory` so that `cacheme::registered()` lists it.
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
