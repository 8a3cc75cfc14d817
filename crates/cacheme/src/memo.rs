//! Runtime support for `#[cacheme]` functions: the few helpers the code the
//! attribute generates calls, next to the public API (`Cache::lookup`,
//! `Lookup`, `Manager`, `IntoInvalidKeys`). Nothing here decides anything
//! about caching; it only bridges what a macro cannot write by itself:
//!
//! - [`DefaultKey`]: the key of a fn without `key = ..` (its path and its
//!   arguments, serialized and escaped), with a readable compile error for
//!   an argument that does not serialize ([`KeyArg`]);
//! - [`error_policy!`](crate::__private::error_policy): whether concurrent
//!   callers share a failed load's error (`E: Clone`) or each run the loader,
//!   picked at compile time;
//! - [`infallible`], [`infallible_blocking`], [`into_value`]: the loader and
//!   the result of a fn whose return type is not a `Result`;
//! - [`load_unless_skipped`], [`load_blocking_unless_skipped`]: the load of a
//!   fn with `skip = ..`, whose lookup is not even built when the call skips;
//! - [`MemoNode`]: the node of `#[cacheme(node = ..)]`, with one compile
//!   error, on the node, when it caches another type than the fn returns.
//!
//! All of it is re-exported in `cacheme::__private`, which is not public API.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;

use serde::Serialize;

use crate::cache::Cache;
use crate::error::LoadError;
use crate::key::push_escaped;
use crate::lookup::{CacheValue, Lookup};
use crate::node::Node;

/// The default key of a `#[cacheme]` fn without `key` or `node`: the fn's
/// path, then `:` and each argument serialized to JSON and escaped with
/// [`push_escaped`](crate::key::push_escaped).
///
/// Escaped values never contain `:`, so different arguments always give
/// different keys, and so do different functions. The path is what
/// [`std::any::type_name`] prints for a closure defined in the fn, without
/// its `::{{closure}}` suffix: it names the impl the fn is in, and its
/// generic arguments, e.g. `app::Repo<app::User>::count`. (A compiler
/// upgrade may change how it is printed; that only makes the first calls
/// after the upgrade miss.)
///
/// ```
/// use cacheme::__private::DefaultKey;
///
/// fn site() -> DefaultKey {
///     DefaultKey::of(&|| ())
/// }
/// let key = site().arg("name", "tom:*").arg("id", &7);
/// assert!(key.is_complete());
/// assert!(key.into_string().ends_with("::site:%22tom%3A%2A%22:7"));
/// ```
#[derive(Debug, Clone)]
pub struct DefaultKey {
    key: String,
    complete: bool,
}

impl DefaultKey {
    /// Start the key of the fn that defines the closure `site`.
    pub fn of<F>(site: &F) -> Self {
        let _ = site;
        let mut path = std::any::type_name::<F>();
        while let Some(outer) = path.strip_suffix("::{{closure}}") {
            path = outer;
        }
        DefaultKey {
            key: path.to_owned(),
            complete: true,
        }
    }

    /// Append one argument. If it does not serialize, the call is not cached
    /// (reported with `tracing`), so [`is_complete`](Self::is_complete) turns false.
    pub fn arg<T: KeyArg + ?Sized>(mut self, name: &str, value: &T) -> Self {
        if !self.complete {
            return self;
        }
        if let Err(error) = value.push_key_arg(&mut self.key) {
            tracing::warn!(
                function = %self.key,
                argument = name,
                %error,
                "cacheme: an argument of a #[cacheme] fn does not serialize; the call is not cached"
            );
            self.complete = false;
        }
        self
    }

    /// False if an argument did not serialize: the call must skip the cache.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The key.
    pub fn into_string(self) -> String {
        self.key
    }
}

/// An argument that can be part of a [`DefaultKey`]: anything `Serialize`.
///
/// ```
/// use cacheme::__private::KeyArg;
/// let mut key = String::from("app::get_cat");
/// "Tom".push_key_arg(&mut key).expect("a string serializes");
/// assert_eq!(key, "app::get_cat:%22Tom%22");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of the default cache key: it is an argument of a #[cacheme] fn without `key`",
    label = "this argument does not implement `serde::Serialize`",
    note = "the default key serializes every argument: derive or implement `serde::Serialize` for `{Self}`, \
            or give the fn a key, e.g. #[cacheme(key = format!(\"cat:{{}}\", cat.id))]"
)]
pub trait KeyArg {
    /// Append `:` and the escaped JSON of `self` to `key`.
    fn push_key_arg(&self, key: &mut String) -> Result<(), serde_json::Error>;
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> KeyArg for T {
    fn push_key_arg(&self, key: &mut String) -> Result<(), serde_json::Error> {
        let json = serde_json::to_string(self)?;
        key.push(':');
        push_escaped(key, &json);
        // JSON writes NaN, inf and -inf alike as `null`: such an argument
        // gets its MessagePack bytes too, so f(-inf) and f(inf) differ.
        if crate::nonfinite::contains_non_finite(self) {
            let bytes = rmp_serde::to_vec(self)
                .map_err(<serde_json::Error as serde::ser::Error>::custom)?;
            key.push_str(":~");
            for byte in bytes {
                key.push_str(&format!("{byte:02x}"));
            }
        }
        Ok(())
    }
}

/// The `Ok` and `Err` types of a `Result` return type, named through the
/// type so that aliases (`io::Result<T>`, `fmt::Result`) work.
///
/// ```
/// use cacheme::__private::ResultParts;
/// let ok: <std::io::Result<u8> as ResultParts>::Ok = 1;
/// let err: <std::fmt::Result as ResultParts>::Err = std::fmt::Error;
/// # let _ = (ok, err);
/// ```
pub trait ResultParts {
    /// The type of the `Ok` value: what is cached.
    type Ok;
    /// The error type: returned to the caller, never cached.
    type Err;
}

impl<T, E> ResultParts for Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// How a `#[cacheme]` fn returning `Result<V, E>` handles a failed load that
/// other callers in this process waited for: with `share`, they get a clone
/// of the error; without, each runs the loader itself. `unshare` turns the
/// runtime's [`LoadError`] back into the fn's plain `E`.
///
/// Built by [`error_policy!`](crate::__private::error_policy).
///
/// ```
/// use cacheme::LoadError;
/// let policy = cacheme::__private::error_policy!(Result<u8, String>);
/// assert!(policy.share);
/// assert_eq!((policy.unshare)(LoadError::Own("boom".to_owned())), "boom");
/// ```
#[derive(Debug)]
pub struct ErrorPolicy<E> {
    /// Pass to [`Lookup::share_errors`].
    pub share: bool,
    /// Turn the load's error into the fn's error.
    pub unshare: fn(LoadError<E>) -> E,
}

impl<E> Clone for ErrorPolicy<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ErrorPolicy<E> {}

/// Names a fn's return type `R` for [`error_policy!`](crate::__private::error_policy),
/// which picks between [`ShareClonedErrors`] and [`KeepErrorsOwn`] by
/// autoref specialization: the first applies when the error type is `Clone`.
///
/// ```
/// use cacheme::__private::{ErrorSharing, KeepErrorsOwn as _, ShareClonedErrors as _};
/// struct NotClone;
/// // A method call on `&ErrorSharing<R>` finds `ShareClonedErrors` (implemented
/// // for `ErrorSharing<R>`) first, when it applies; else `KeepErrorsOwn`
/// // (implemented for `&ErrorSharing<R>`), one auto-reference further.
/// assert!((&ErrorSharing::<Result<(), String>>::new()).policy().share);
/// assert!(!(&ErrorSharing::<Result<(), NotClone>>::new()).policy().share);
/// ```
pub struct ErrorSharing<R>(PhantomData<fn() -> R>);

impl<R> std::fmt::Debug for ErrorSharing<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrorSharing")
    }
}

impl<R> ErrorSharing<R> {
    /// The marker.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        ErrorSharing(PhantomData)
    }
}

/// The policy for `Clone` errors: shared, and cloned for each waiter.
///
/// ```
/// use cacheme::__private::{ErrorSharing, ShareClonedErrors};
/// assert!(ErrorSharing::<Result<(), String>>::new().policy().share);
/// ```
pub trait ShareClonedErrors {
    /// The error type.
    type Error;
    /// The policy.
    fn policy(&self) -> ErrorPolicy<Self::Error>;
}

impl<T, E: Clone> ShareClonedErrors for ErrorSharing<Result<T, E>> {
    type Error = E;
    fn policy(&self) -> ErrorPolicy<E> {
        ErrorPolicy {
            share: true,
            unshare: shared_error,
        }
    }
}

/// The policy for other errors: not shared, so every caller gets its own.
///
/// ```
/// use cacheme::__private::{ErrorSharing, KeepErrorsOwn};
/// struct NotClone;
/// assert!(!(&ErrorSharing::<Result<(), NotClone>>::new()).policy().share);
/// ```
pub trait KeepErrorsOwn {
    /// The error type.
    type Error;
    /// The policy.
    fn policy(&self) -> ErrorPolicy<Self::Error>;
}

impl<T, E> KeepErrorsOwn for &ErrorSharing<Result<T, E>> {
    type Error = E;
    fn policy(&self) -> ErrorPolicy<E> {
        ErrorPolicy {
            share: false,
            unshare: own_error,
        }
    }
}

/// The error of a load that shares errors (its own, or a clone of the one
/// it waited for).
fn shared_error<E: Clone>(error: LoadError<E>) -> E {
    error
        .into_inner()
        .expect("a #[cacheme] fn's lookup never returns a timeout (see load_unless_skipped)")
}

/// The error of a load that did not share errors: always this caller's own,
/// since the runtime never hands another caller's error to a lookup made
/// with `share_errors(false)` (it loads for itself instead).
fn own_error<E>(error: LoadError<E>) -> E {
    match error {
        LoadError::Own(error) => error,
        LoadError::Shared(_) => {
            unreachable!("a lookup with share_errors(false) is never handed a shared error")
        }
        LoadError::TimedOut(_) => {
            unreachable!(
                "a #[cacheme] fn's lookup never returns a timeout (see load_unless_skipped)"
            )
        }
    }
}

/// The [`ErrorPolicy`] of a `#[cacheme]` fn returning the `Result` type
/// `$ret`: errors are shared among concurrent callers if the error type is
/// `Clone` (and can be seen to be so where the macro is used), not shared
/// otherwise.
///
/// ```
/// #[derive(Debug)]
/// struct NotClone;
/// let shared = cacheme::__private::error_policy!(Result<u8, String>);
/// let own = cacheme::__private::error_policy!(Result<u8, NotClone>);
/// assert!(shared.share);
/// assert!(!own.share);
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __cacheme_error_policy {
    ($ret:ty) => {{
        #[allow(unused_imports)]
        use $crate::__private::{KeepErrorsOwn as _, ShareClonedErrors as _};
        (&$crate::__private::ErrorSharing::<$ret>::new()).policy()
    }};
}

/// The loader of an async fn that returns a plain value: its body, as `Ok`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let loaded = cache.lookup("answer").load(|| cacheme::__private::infallible(async { 42 })).await;
/// assert_eq!(cacheme::__private::into_value(loaded), 42);
/// # }
/// ```
pub async fn infallible<T>(body: impl Future<Output = T>) -> Result<T, Infallible> {
    Ok(body.await)
}

/// The loader of a plain fn that returns a plain value: its body, as `Ok`.
///
/// ```
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let loaded = cache
///     .lookup("answer")
///     .load_blocking(|| cacheme::__private::infallible_blocking(|| 42));
/// assert_eq!(cacheme::__private::into_value(loaded), 42);
/// ```
pub fn infallible_blocking<T>(body: impl FnOnce() -> T) -> Result<T, Infallible> {
    Ok(body())
}

/// The value of a load whose loader cannot fail.
///
/// ```
/// let loaded: Result<u8, cacheme::LoadError<std::convert::Infallible>> = Ok(7);
/// assert_eq!(cacheme::__private::into_value(loaded), 7);
/// ```
pub fn into_value<T>(loaded: Result<T, LoadError<Infallible>>) -> T {
    match loaded {
        Ok(value) => value,
        Err(LoadError::Own(never)) => match never {},
        Err(LoadError::Shared(never)) => match *never {},
        Err(LoadError::TimedOut(_)) => {
            unreachable!(
                "a #[cacheme] fn's lookup never returns a timeout (see load_unless_skipped)"
            )
        }
    }
}

/// The load of a `#[cacheme(skip = ..)]` fn: [`Lookup::load`], or, when the
/// call skips the cache (`lookup` is `None`: `skip` was true, so no key, node
/// or cache was even looked at), the loader alone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use cacheme::__private::load_unless_skipped;
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let loader = || async { Ok::<_, std::convert::Infallible>(1) };
/// assert_eq!(load_unless_skipped(Some(cache.lookup("one")), loader).await.ok(), Some(1));
/// let loader = || async { Ok::<_, std::convert::Infallible>(2) };
/// assert_eq!(load_unless_skipped(Some(cache.lookup("one")), loader).await.ok(), Some(1));
/// let loader = || async { Ok::<_, std::convert::Infallible>(3) };
/// assert_eq!(load_unless_skipped::<u8, _, _, _>(None, loader).await.ok(), Some(3));
/// # }
/// ```
pub async fn load_unless_skipped<V, F, Fut, E>(
    lookup: Option<Lookup<'_, V>>,
    loader: F,
) -> Result<V, LoadError<E>>
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    match lookup {
        // The fn's error type cannot carry a timeout: past the hard timeout
        // its call is served an expired value if there is one, else waits.
        Some(lookup) => lookup.timeout_errors(false).load(loader).await,
        None => loader().await.map_err(LoadError::Own),
    }
}

/// [`load_unless_skipped`] for a plain fn: [`Lookup::load_blocking`], or the
/// loader alone when the call skips the cache.
///
/// ```
/// use cacheme::__private::load_blocking_unless_skipped;
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let one = || Ok::<_, std::convert::Infallible>(1);
/// assert_eq!(load_blocking_unless_skipped(Some(cache.lookup("one")), one).ok(), Some(1));
/// let three = || Ok::<_, std::convert::Infallible>(3);
/// assert_eq!(load_blocking_unless_skipped::<u8, _, _>(None, three).ok(), Some(3));
/// ```
pub fn load_blocking_unless_skipped<V, F, E>(
    lookup: Option<Lookup<'_, V>>,
    loader: F,
) -> Result<V, LoadError<E>>
where
    V: CacheValue,
    F: FnOnce() -> Result<V, E>,
    E: Send + Sync + 'static,
{
    match lookup {
        Some(lookup) => lookup.timeout_errors(false).load_blocking(loader),
        None => loader().map_err(LoadError::Own),
    }
}

/// A node whose value is `V`: what `#[cacheme(node = ..)]` needs of the
/// node when the fn returns `V`. Implemented for every node, with its
/// `Value`.
///
/// ```
/// use cacheme::Node;
/// use cacheme::__private::NodeOf;
///
/// #[derive(Node)]
/// #[node(key = "cat:{id}", value = String)]
/// struct CatNode { id: u64 }
///
/// fn key_of<N: NodeOf<String>>(node: &N, cache: &cacheme::Cache) -> String {
///     node.lookup_in(cache).key().to_owned()
/// }
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// assert_eq!(key_of(&CatNode { id: 1 }, &cache), "cat:1");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a node whose value is `{V}`, the type this #[cacheme] fn caches",
    label = "`node = ..` needs a `#[derive(Node)]` type with `value = {V}`",
    note = "a #[cacheme(node = ..)] fn returns its node's value type (or a `Result` of it)"
)]
pub trait NodeOf<V>: Node {
    /// The node's [`Lookup`](crate::Manager::lookup), typed as the fn's value.
    fn lookup_in<'a>(&self, cache: &Cache) -> Lookup<'a, V>;
    /// The node's hit hook.
    fn on_hit(&self, key: &str, value: &V);
    /// The node's miss hook.
    fn on_miss(&self, key: &str);
}

#[diagnostic::do_not_recommend]
impl<N: Node> NodeOf<N::Value> for N {
    fn lookup_in<'a>(&self, cache: &Cache) -> Lookup<'a, N::Value> {
        cache.objects::<N>().lookup(self)
    }
    fn on_hit(&self, key: &str, value: &N::Value) {
        self.hit(key, value);
    }
    fn on_miss(&self, key: &str) {
        self.miss(key);
    }
}

/// The node of a `#[cacheme(node = ..)]` fn caching `V`: the node, and its
/// lookup and hooks typed as `V`. Checking that the node caches `V` happens
/// once, in [`new`](Self::new), so that a mismatch is reported once, on the
/// node.
///
/// ```
/// use cacheme::Node;
/// use cacheme::__private::MemoNode;
///
/// #[derive(Node)]
/// #[node(key = "cat:{id}", value = String)]
/// struct CatNode { id: u64 }
///
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let node = MemoNode::<String, _>::new(CatNode { id: 1 });
/// assert_eq!(node.lookup(&cache).key(), "cat:1");
/// node.hit("cat:1", &"Tom".to_owned()); // the node's hooks (none here)
/// ```
pub struct MemoNode<V: 'static, N> {
    node: N,
    lookup: fn(&N, &Cache) -> Lookup<'static, V>,
    hit: fn(&N, &str, &V),
    miss: fn(&N, &str),
}

impl<V, N: std::fmt::Debug> std::fmt::Debug for MemoNode<V, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MemoNode").field(&self.node).finish()
    }
}

impl<V: CacheValue, N> MemoNode<V, N> {
    /// `node`, for a fn caching `V`.
    pub fn new(node: N) -> Self
    where
        N: NodeOf<V>,
    {
        MemoNode {
            node,
            lookup: |node, cache| node.lookup_in(cache),
            hit: N::on_hit,
            miss: N::on_miss,
        }
    }

    /// The node's lookup on `cache`: its key, the node type's spec and the
    /// node's dependency groups.
    pub fn lookup<'a>(&self, cache: &Cache) -> Lookup<'a, V> {
        (self.lookup)(&self.node, cache)
    }

    /// The node's hit hook.
    pub fn hit(&self, key: &str, value: &V) {
        (self.hit)(&self.node, key, value);
    }

    /// The node's miss hook.
    pub fn miss(&self, key: &str) {
        (self.miss)(&self.node, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of_this_fn() -> DefaultKey {
        DefaultKey::of(&|| ())
    }

    struct Repo<T>(PhantomData<T>);

    impl<T> Repo<T> {
        fn key() -> DefaultKey {
            DefaultKey::of(&|| ())
        }
    }

    #[test]
    fn default_keys_name_the_fn_and_its_generics() {
        let key = key_of_this_fn().into_string();
        assert!(key.ends_with("memo::tests::key_of_this_fn"), "{key}");
        let users = Repo::<u8>::key().into_string();
        let orders = Repo::<u16>::key().into_string();
        assert!(users.ends_with("memo::tests::Repo<u8>::key"), "{users}");
        assert_ne!(users, orders);
    }

    #[test]
    fn arguments_are_escaped_and_cannot_collide() {
        let pairs = [("a", "b:c"), ("a:b", "c"), ("a", "b")];
        let keys: Vec<String> = pairs
            .iter()
            .map(|(a, b)| key_of_this_fn().arg("a", a).arg("b", b).into_string())
            .collect();
        for key in &keys {
            let args = key.rsplitn(3, ':').take(2).count();
            assert_eq!(args, 2, "{key}");
        }
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert!(keys[0].ends_with(":%22a%22:%22b%3Ac%22"), "{}", keys[0]);
    }

    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }

    #[test]
    fn an_argument_that_fails_to_serialize_makes_the_key_incomplete() {
        let key = key_of_this_fn().arg("a", &1).arg("b", &Unserializable);
        assert!(!key.is_complete());
    }

    #[derive(Debug, PartialEq)]
    struct NotClone(u8);

    #[test]
    fn errors_are_shared_only_when_they_clone() {
        let cloned = crate::__cacheme_error_policy!(Result<(), String>);
        assert!(cloned.share);
        let shared = LoadError::Shared(std::sync::Arc::new("boom".to_owned()));
        assert_eq!((cloned.unshare)(shared), "boom");

        let own = crate::__cacheme_error_policy!(std::result::Result<(), NotClone>);
        assert!(!own.share);
        assert_eq!((own.unshare)(LoadError::Own(NotClone(1))), NotClone(1));
    }

    fn generic_policy<E>() -> ErrorPolicy<E> {
        crate::__cacheme_error_policy!(Result<u8, E>)
    }

    fn generic_clone_policy<E: Clone>() -> ErrorPolicy<E> {
        crate::__cacheme_error_policy!(Result<u8, E>)
    }

    #[test]
    fn generic_errors_are_shared_when_the_bound_says_clone() {
        assert!(!generic_policy::<String>().share);
        assert!(generic_clone_policy::<String>().share);
    }
}
