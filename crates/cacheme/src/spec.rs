//! The static description of a node type or a cached function, and the
//! `inventory` registry that lists them.

use std::time::Duration;

/// How a node type or a cached function caches: its name, its tag and its
/// meta (Python cacheme's `class Meta`). Built by the macros with the `const`
/// builder methods below; what a spec leaves unset falls back to the cache's
/// [`Settings`](crate::Settings).
///
/// ```
/// use std::time::Duration;
/// use cacheme::Spec;
///
/// const SPEC: Spec = Spec::function("get_cat")
///     .with_tag("cats")
///     .with_ttl(Duration::from_secs(300))
///     .with_stale(false);
/// assert_eq!(SPEC.tag(), "cats");
/// assert_eq!(SPEC.ttl(), Some(Duration::from_secs(300)));
/// assert_eq!(SPEC.stale(), Some(false));
/// assert!(SPEC.is_function());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    name: &'static str,
    tag: &'static str,
    function: bool,
    ttl: Option<Duration>,
    stale: Option<bool>,
    version: Option<&'static str>,
    refresh_after: Option<Duration>,
    local: Option<LocalSpec>,
    fail_safe: Option<Duration>,
    fail_safe_throttle: Option<Duration>,
    soft_timeout: Option<Duration>,
    hard_timeout: Option<Duration>,
}

/// The in-process tier of a node type or function: how long entries live
/// (at most; invalidations remove them within milliseconds everywhere) and
/// how many there may be.
///
/// ```
/// use std::time::Duration;
/// let local = cacheme::LocalSpec::new(Duration::from_secs(10), 1_000);
/// assert_eq!(local.ttl(), Duration::from_secs(10));
/// assert_eq!(local.capacity(), 1_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSpec {
    ttl: Duration,
    capacity: u64,
}

impl LocalSpec {
    /// The defaults used when only one of `local_ttl` / `local_capacity` is
    /// given: 60 s, 10,000 entries.
    pub const DEFAULT: LocalSpec = LocalSpec::new(Duration::from_secs(60), 10_000);

    /// A tier whose entries live at most `ttl`, holding at most `capacity` entries.
    pub const fn new(ttl: Duration, capacity: u64) -> Self {
        LocalSpec { ttl, capacity }
    }

    /// Time to live of a local entry.
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Most entries kept (least recently and frequently used go first).
    pub const fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl Spec {
    /// The spec of a node type named `name`, tagged with its name.
    pub const fn node(name: &'static str) -> Self {
        Spec {
            name,
            tag: name,
            function: false,
            ttl: None,
            stale: None,
            version: None,
            refresh_after: None,
            local: None,
            fail_safe: None,
            fail_safe_throttle: None,
            soft_timeout: None,
            hard_timeout: None,
        }
    }

    /// The spec of a cached function named `name`, tagged with its name.
    pub const fn function(name: &'static str) -> Self {
        Spec {
            function: true,
            ..Spec::node(name)
        }
    }

    /// Index values under `tag` instead of the name.
    pub const fn with_tag(self, tag: &'static str) -> Self {
        Spec { tag, ..self }
    }

    /// Values live `ttl`.
    pub const fn with_ttl(self, ttl: Duration) -> Self {
        Spec {
            ttl: Some(ttl),
            ..self
        }
    }

    /// Whether readers accept stale values (Python cacheme's `Meta.stale`).
    pub const fn with_stale(self, stale: bool) -> Self {
        Spec {
            stale: Some(stale),
            ..self
        }
    }

    /// Append `version` to every key (`cat:1@v2`), so that changing it starts afresh.
    pub const fn with_version(self, version: &'static str) -> Self {
        Spec {
            version: Some(version),
            ..self
        }
    }

    /// Refresh a value ahead of its expiry once it is `age` old.
    pub const fn with_refresh_after(self, age: Duration) -> Self {
        Spec {
            refresh_after: Some(age),
            ..self
        }
    }

    /// Keep values in an in-process tier in front of the store.
    pub const fn with_local(self, local: LocalSpec) -> Self {
        Spec {
            local: Some(local),
            ..self
        }
    }

    /// Fail-safe: keep values `max` past their TTL, served when their reload
    /// fails or times out.
    pub const fn with_fail_safe(self, max: Duration) -> Self {
        Spec {
            fail_safe: Some(max),
            ..self
        }
    }

    /// After a failed reload, serve the expired value this long before the
    /// source is tried again.
    pub const fn with_fail_safe_throttle(self, throttle: Duration) -> Self {
        Spec {
            fail_safe_throttle: Some(throttle),
            ..self
        }
    }

    /// Callers waiting for a reload are served the expired value after this.
    pub const fn with_soft_timeout(self, timeout: Duration) -> Self {
        Spec {
            soft_timeout: Some(timeout),
            ..self
        }
    }

    /// The loader's caller stops waiting after this (async calls).
    pub const fn with_hard_timeout(self, timeout: Duration) -> Self {
        Spec {
            hard_timeout: Some(timeout),
            ..self
        }
    }

    /// The fail-safe duration past the TTL, if it sets one.
    pub const fn fail_safe(&self) -> Option<Duration> {
        self.fail_safe
    }

    /// The fail-safe throttle, if it sets one.
    pub const fn fail_safe_throttle(&self) -> Option<Duration> {
        self.fail_safe_throttle
    }

    /// The soft loader timeout, if it sets one.
    pub const fn soft_timeout(&self) -> Option<Duration> {
        self.soft_timeout
    }

    /// The hard loader timeout, if it sets one.
    pub const fn hard_timeout(&self) -> Option<Duration> {
        self.hard_timeout
    }

    /// The node type's name, or the function's path.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The tag its values are indexed under (`cacheme::tag(..)`).
    pub const fn tag(&self) -> &'static str {
        self.tag
    }

    /// True for a `#[cacheme]` function, false for a node type.
    pub const fn is_function(&self) -> bool {
        self.function
    }

    /// Time to live of its values, if it sets one.
    pub const fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether readers accept stale values, if it says.
    pub const fn stale(&self) -> Option<bool> {
        self.stale
    }

    /// The version appended to every key, if any.
    pub const fn version(&self) -> Option<&'static str> {
        self.version
    }

    /// The age past which a value is refreshed ahead of its expiry, if any.
    pub const fn refresh_after(&self) -> Option<Duration> {
        self.refresh_after
    }

    /// Its in-process tier, if it has one.
    pub const fn local(&self) -> Option<LocalSpec> {
        self.local
    }

    /// The cache key with this spec's version appended (`key@version`).
    pub(crate) fn versioned(&self, key: String) -> String {
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

    /// The dependency group that every version of `key` belongs to
    /// (`key@*`), when this spec is versioned: invalidating a key through
    /// its manager invalidates this group too, so that the values of the
    /// other versions (an older deploy's, during a rolling deploy) are not
    /// served either.
    pub(crate) fn versions_group(&self, key: &str) -> Option<String> {
        self.version.map(|_| format!("{key}@*"))
    }
}

/// An entry of the registry: every node type and cached function submits one.
#[doc(hidden)]
#[derive(Debug)]
pub struct Registration {
    spec: &'static Spec,
}

impl Registration {
    /// A registration for `spec` (used by the macros with `inventory::submit!`).
    pub const fn new(spec: &'static Spec) -> Self {
        Registration { spec }
    }
}

inventory::collect!(Registration);

/// Every registered node type and cached function.
pub(crate) fn registered() -> impl Iterator<Item = &'static Spec> {
    inventory::iter::<Registration>.into_iter().map(|r| r.spec)
}
