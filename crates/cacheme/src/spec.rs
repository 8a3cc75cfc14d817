//! The static description of a node type or a cached function, and the
//! `inventory` registry that lists them.

use std::time::Duration;

/// What kind of thing a [`Spec`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `#[derive(Node)]` type.
    Node,
    /// A `#[cacheme]` function.
    Function,
}

/// How a node type or a cached function caches: its tag and its meta
/// (the seed's `class Meta`). Built by the macros; `None` fields fall back to
/// the cache's [`Settings`](crate::Settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The node type's name, or the function's path.
    pub name: &'static str,
    /// The tag its keys are indexed under (`cacheme::tag(..)`).
    pub tag: &'static str,
    /// Node or function.
    pub kind: Kind,
    /// Time to live of its values.
    pub ttl: Option<Duration>,
    /// Whether readers accept stale values (the seed's `Meta.stale`).
    pub stale: Option<bool>,
    /// A version appended to every key, so that changing it starts afresh.
    pub version: Option<&'static str>,
    /// Refresh a value ahead of its expiry once it is this old.
    pub refresh_after: Option<Duration>,
    /// Keep values in an in-process tier in front of the store, kept coherent
    /// across processes by invalidation events.
    pub local: Option<LocalSpec>,
}

/// The in-process tier of a node type or function: how long entries live
/// (at most; invalidations remove them within milliseconds everywhere) and
/// how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSpec {
    /// Time to live of a local entry.
    pub ttl: Duration,
    /// Most entries kept (least recently and frequently used go first).
    pub capacity: u64,
}

impl LocalSpec {
    /// The defaults used when only one of `local_ttl` / `local_capacity` is given.
    pub const DEFAULT: LocalSpec = LocalSpec {
        ttl: Duration::from_secs(60),
        capacity: 10_000,
    };
}

impl Spec {
    /// A spec with only a name and a tag; everything else from the settings.
    ///
    /// ```
    /// use cacheme::{Kind, Spec};
    /// const SPEC: Spec = Spec::new("get_cat", "cats", Kind::Function);
    /// assert_eq!(SPEC.tag, "cats");
    /// ```
    pub const fn new(name: &'static str, tag: &'static str, kind: Kind) -> Self {
        Spec {
            name,
            tag,
            kind,
            ttl: None,
            stale: None,
            version: None,
            refresh_after: None,
            local: None,
        }
    }

    /// The cache key with this spec's version appended (`key@version`).
    pub fn versioned(&self, key: String) -> String {
        match self.version {
            Some(version) => {
                let mut key = key;
                key.push('@');
                key.push_str(version);
                key
            }
            None => key,
        }
    }
}

/// An entry of the registry: every node type and cached function submits one.
#[derive(Debug)]
pub struct Registration {
    /// What was registered.
    pub spec: &'static Spec,
}

impl Registration {
    /// A registration for `spec` (used by the macros with `inventory::submit!`).
    pub const fn new(spec: &'static Spec) -> Self {
        Registration { spec }
    }
}

inventory::collect!(Registration);

/// Every registered node type and cached function.
pub fn registered() -> impl Iterator<Item = &'static Spec> {
    inventory::iter::<Registration>.into_iter().map(|r| r.spec)
}
