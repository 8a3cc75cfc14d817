//! Nodes and invalid nodes: the typed form of cache keys and of the
//! dependency groups that invalidate them (Python cacheme's `Node` and `InvalidNode`).

use crate::lookup::CacheValue;
use crate::manager::{InvalidManager, Manager};
use crate::spec::Spec;

/// A cache node: a struct whose fields form a key, and the type of the value
/// cached under it. Implemented by `#[derive(Node)]`.
///
/// ```
/// use cacheme::Node;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
/// struct Cat { id: u64, name: String }
///
/// #[derive(Node)]
/// #[node(key = "cat:{id}", value = Cat, ttl = 300)]
/// struct CatNode { id: u64 }
///
/// assert_eq!(CatNode { id: 7 }.key(), "cat:7");
/// assert_eq!(CatNode::SPEC.tag(), "CatNode");
/// ```
pub trait Node: Sized + Send + Sync + 'static {
    /// The type of the value cached under this node.
    type Value: CacheValue;
    /// Tag and meta (ttl, stale, version, local tier).
    const SPEC: &'static Spec;
    /// How to copy a value out of the local tier; set by the derive when the
    /// node has one (`local_ttl` / `local_capacity`), which needs `Clone`.
    #[doc(hidden)]
    const LOCAL_CLONE: Option<CloneFn<Self::Value>> = None;
    /// The time to live computed from a loaded value (`None` from it: no
    /// expiry), set by `#[node(ttl_for = Self::ttl_of)]`; overrides `ttl`.
    const TTL_FOR: Option<TtlFn<Self::Value>> = None;

    /// The cache key (without prefix and version).
    fn key(&self) -> String;

    /// The dependency groups (invalid nodes) this node belongs to, computed
    /// from its fields (Python cacheme's `invalid_nodes()`).
    fn invalid_nodes(&self, out: &mut InvalidKeys) {
        let _ = out;
    }

    /// Called with the key and the value when a value comes from the cache.
    /// A `#[cacheme(hit = ..)]` hook replaces it.
    fn hit(&self, key: &str, value: &Self::Value) {
        let _ = (key, value);
    }

    /// Called with the key when the loader is about to run.
    /// A `#[cacheme(miss = ..)]` hook replaces it.
    fn miss(&self, key: &str) {
        let _ = key;
    }

    /// The manager of this node type on the global cache (Python cacheme's `Node.objects`).
    fn objects() -> Manager<Self> {
        Manager::global()
    }
}

/// Copies a value out of a local tier (`Clone::clone` of the value type).
#[doc(hidden)]
pub type CloneFn<V> = fn(&V) -> V;

/// A value's time to live computed from the value (`None`: no expiry), as
/// `#[node(ttl_for = ..)]` and [`Lookup::ttl_for`](crate::Lookup::ttl_for)
/// take it.
#[doc(hidden)]
pub type TtlFn<V> = fn(&V) -> Option<std::time::Duration>;

/// A dependency group: invalidating one invalidates every key that declared
/// it (Python cacheme's `InvalidNode`; stored as `{prefix}{key}:invalid`).
/// Implemented by `#[derive(InvalidNode)]`.
///
/// ```
/// use cacheme::InvalidNode;
///
/// #[derive(InvalidNode)]
/// #[invalid_node(key = "user:{id}")]
/// struct UserInvalid { id: u64 }
///
/// assert_eq!(UserInvalid { id: 200 }.key(), "user:200");
/// ```
pub trait InvalidNode: Sized + Send + Sync + 'static {
    /// The invalid key.
    fn key(&self) -> String;

    /// The manager of this invalid node type on the global cache.
    fn objects() -> InvalidManager<Self> {
        InvalidManager::global()
    }
}

/// A list of invalid keys (dependency groups) a value belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidKeys(Vec<String>);

impl InvalidKeys {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one invalid key.
    pub fn push(&mut self, key: impl Into<String>) {
        let key = key.into();
        if !key.is_empty() && !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    /// The keys.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Anything that names invalid keys: a string, an invalid node, or a list,
/// option, tuple or nesting of those (Python cacheme's `invalid_keys` may return
/// one key or a list).
///
/// ```
/// use cacheme::{IntoInvalidKeys, InvalidKeys};
/// let mut keys = InvalidKeys::new();
/// (vec!["user:1", "user:2"], Some("shop:9".to_owned()), [["a:1"], ["a:2"]]).push_into(&mut keys);
/// assert_eq!(keys.as_slice(), ["user:1", "user:2", "shop:9", "a:1", "a:2"]);
/// ```
pub trait IntoInvalidKeys {
    /// Append the keys to `out`.
    fn push_into(self, out: &mut InvalidKeys);
}

impl IntoInvalidKeys for String {
    fn push_into(self, out: &mut InvalidKeys) {
        out.push(self);
    }
}

impl IntoInvalidKeys for &String {
    fn push_into(self, out: &mut InvalidKeys) {
        out.push(self.as_str());
    }
}

impl IntoInvalidKeys for &str {
    fn push_into(self, out: &mut InvalidKeys) {
        out.push(self);
    }
}

impl IntoInvalidKeys for () {
    fn push_into(self, _: &mut InvalidKeys) {}
}

impl IntoInvalidKeys for InvalidKeys {
    fn push_into(self, out: &mut InvalidKeys) {
        for key in self.0 {
            out.push(key);
        }
    }
}

impl<T: IntoInvalidKeys> IntoInvalidKeys for Vec<T> {
    fn push_into(self, out: &mut InvalidKeys) {
        for item in self {
            item.push_into(out);
        }
    }
}

impl<T: IntoInvalidKeys, const N: usize> IntoInvalidKeys for [T; N] {
    fn push_into(self, out: &mut InvalidKeys) {
        for item in self {
            item.push_into(out);
        }
    }
}

impl<T: IntoInvalidKeys + Clone> IntoInvalidKeys for &[T] {
    fn push_into(self, out: &mut InvalidKeys) {
        for item in self {
            item.clone().push_into(out);
        }
    }
}

impl<T: IntoInvalidKeys> IntoInvalidKeys for Option<T> {
    fn push_into(self, out: &mut InvalidKeys) {
        if let Some(item) = self {
            item.push_into(out);
        }
    }
}

macro_rules! tuple_invalid_keys {
    ($($name:ident),+) => {
        impl<$($name: IntoInvalidKeys),+> IntoInvalidKeys for ($($name,)+) {
            #[allow(non_snake_case)]
            fn push_into(self, out: &mut InvalidKeys) {
                let ($($name,)+) = self;
                $($name.push_into(out);)+
            }
        }
    };
}

tuple_invalid_keys!(A);
tuple_invalid_keys!(A, B);
tuple_invalid_keys!(A, B, C);
tuple_invalid_keys!(A, B, C, D);
tuple_invalid_keys!(A, B, C, D, F);
tuple_invalid_keys!(A, B, C, D, F, G);
