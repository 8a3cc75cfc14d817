//! Managers: `CatNode::objects()` and `UserInvalid::objects()` (Python cacheme's
//! `Node.objects`).

use std::future::Future;
use std::marker::PhantomData;

use crate::Result;
use crate::cache::{Cache, global};
use crate::error::LoadError;
use crate::invalidation::Invalidation;
use crate::lookup::Lookup;
use crate::node::{InvalidNode, Node};

/// The manager of a node type: get, load and invalidate its values.
///
/// `args` is anything that converts into the node: the field's value for a
/// one-field node (`CatNode::objects().invalid(1)`), a tuple of the fields
/// in order for several, or the node itself.
///
/// ```
/// # use cacheme::Node;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
/// # struct Cat { id: u64, name: String }
/// #[derive(Node)]
/// #[node(key = "cat:{id}", value = Cat)]
/// struct CatNode { id: u64 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cat = CatNode::objects()
///     .get_or_load(1, || async { Ok::<_, std::io::Error>(Cat { id: 1, name: "Tom".into() }) })
///     .await
///     .expect("the loader succeeds");
/// assert_eq!(CatNode::objects().get(1).await, Some(cat));
/// CatNode::objects().invalid(1).await.expect("memory store");
/// # }
/// ```
pub struct Manager<N> {
    cache: Option<Cache>,
    node: PhantomData<fn() -> N>,
}

impl<N> Clone for Manager<N> {
    fn clone(&self) -> Self {
        Manager {
            cache: self.cache.clone(),
            node: PhantomData,
        }
    }
}

impl<N> std::fmt::Debug for Manager<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("node", &std::any::type_name::<N>())
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// The manager of node type `N` on this cache.
    pub fn objects<N: Node>(&self) -> Manager<N> {
        Manager {
            cache: Some(self.clone()),
            node: PhantomData,
        }
    }

    /// The manager of invalid node type `G` on this cache.
    pub fn invalid_objects<G: InvalidNode>(&self) -> InvalidManager<G> {
        InvalidManager {
            cache: Some(self.clone()),
            node: PhantomData,
        }
    }
}

impl<N: Node> Manager<N> {
    /// The manager on the global cache (looked up on every call).
    pub fn global() -> Self {
        Manager {
            cache: None,
            node: PhantomData,
        }
    }

    /// The cache this manager works on.
    pub fn cache(&self) -> Cache {
        self.cache.clone().unwrap_or_else(global)
    }

    /// A [`Lookup`] of `node`'s value: its key, spec and dependency groups.
    /// The building block of the other methods and of `#[cacheme(node = ..)]`.
    pub fn lookup<'a>(&self, node: &N) -> Lookup<'a, N::Value> {
        // `Cache::lookup` takes its own handle: borrow ours rather than
        // cloning it first (one reference-count round trip less per call).
        let mut lookup = match &self.cache {
            Some(cache) => cache.lookup(node.key()),
            None => global().lookup(node.key()),
        }
        .spec(N::SPEC);
        node.invalid_nodes(&mut lookup.groups);
        lookup.local_clone = N::LOCAL_CLONE;
        lookup.ttl_for = N::TTL_FOR;
        lookup
    }

    /// The cached value, or `None`; never runs a loader (Python cacheme's
    /// `objects.get`). Stale values count when the node accepts them. Store
    /// trouble also reads as `None`; [`try_get`](Self::try_get) tells it apart.
    pub async fn get(&self, args: impl Into<N>) -> Option<N::Value> {
        self.lookup(&args.into()).get().await
    }

    /// [`get`](Self::get) for blocking code.
    pub fn get_blocking(&self, args: impl Into<N>) -> Option<N::Value> {
        self.lookup(&args.into()).get_blocking()
    }

    /// [`get`](Self::get), telling a miss (`Ok(None)`) from store trouble
    /// (`Err`, e.g. Redis down or the circuit breaker open).
    pub async fn try_get(&self, args: impl Into<N>) -> Result<Option<N::Value>> {
        self.lookup(&args.into()).try_get().await
    }

    /// [`try_get`](Self::try_get) for blocking code.
    pub fn try_get_blocking(&self, args: impl Into<N>) -> Result<Option<N::Value>> {
        self.lookup(&args.into()).try_get_blocking()
    }

    /// The cached value, or the loader's (run once among concurrent callers,
    /// stored, indexed under the node's tag and groups). The node's `hit` and
    /// `miss` hooks are called.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        args: impl Into<N>,
        loader: F,
    ) -> Result<N::Value, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<N::Value, E>>,
        E: Send + Sync + 'static,
    {
        let node = args.into();
        let hit = |key: &str, value: &N::Value| node.hit(key, value);
        let miss = |key: &str| node.miss(key);
        self.lookup(&node).hit(&hit).miss(&miss).load(loader).await
    }

    /// [`get_or_load`](Self::get_or_load) for blocking code.
    pub fn get_or_load_blocking<F, E>(
        &self,
        args: impl Into<N>,
        loader: F,
    ) -> Result<N::Value, LoadError<E>>
    where
        F: FnOnce() -> Result<N::Value, E>,
        E: Send + Sync + 'static,
    {
        let node = args.into();
        let hit = |key: &str, value: &N::Value| node.hit(key, value);
        let miss = |key: &str| node.miss(key);
        self.lookup(&node)
            .hit(&hit)
            .miss(&miss)
            .load_blocking(loader)
    }

    /// Invalidate one node's value: it becomes stale (served to stale-on
    /// readers while one caller refreshes; a miss for stale-off readers), and
    /// a load in flight for it will not store its result. Returns how many
    /// values were marked (0 or 1).
    #[doc(alias = "invalidate")]
    pub async fn invalid(&self, args: impl Into<N>) -> Result<u64> {
        self.invalidation_of(&args.into()).run().await
    }

    /// [`invalid`](Self::invalid) for blocking code.
    #[doc(alias = "invalidate")]
    pub fn invalid_blocking(&self, args: impl Into<N>) -> Result<u64> {
        self.invalidation_of(&args.into()).run_blocking()
    }

    /// Delete every value of this node type (everything under its tag), in
    /// O(1) whatever their number: none is served again, loads in flight
    /// included.
    #[doc(alias = "invalidate_all")]
    pub async fn invalid_all(&self) -> Result<()> {
        self.cache()
            .create_invalidation()
            .tag(N::SPEC.tag())
            .run()
            .await
            .map(drop)
    }

    /// [`invalid_all`](Self::invalid_all) for blocking code.
    #[doc(alias = "invalidate_all")]
    pub fn invalid_all_blocking(&self) -> Result<()> {
        self.cache()
            .create_invalidation()
            .tag(N::SPEC.tag())
            .run_blocking()
            .map(drop)
    }

    fn invalidation_of(&self, node: &N) -> Invalidation {
        let key = node.key();
        let invalidation = self.cache().create_invalidation();
        match N::SPEC.versions_group(&key) {
            // Every version's value of this key, not only this version's.
            Some(group) => invalidation.invalid_key(group).key(N::SPEC.versioned(key)),
            None => invalidation.key(key),
        }
    }
}

/// The manager of an invalid node type: invalidate every key that declared it.
///
/// ```
/// # use cacheme::InvalidNode;
/// #[derive(InvalidNode)]
/// #[invalid_node(key = "user:{id}")]
/// struct UserInvalid { id: u64 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// UserInvalid::objects().invalid(200).await.expect("memory store");
/// # }
/// ```
pub struct InvalidManager<G> {
    cache: Option<Cache>,
    node: PhantomData<fn() -> G>,
}

impl<G> Clone for InvalidManager<G> {
    fn clone(&self) -> Self {
        InvalidManager {
            cache: self.cache.clone(),
            node: PhantomData,
        }
    }
}

impl<G> std::fmt::Debug for InvalidManager<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvalidManager")
            .field("node", &std::any::type_name::<G>())
            .finish_non_exhaustive()
    }
}

impl<G: InvalidNode> InvalidManager<G> {
    /// The manager on the global cache (looked up on every call).
    pub fn global() -> Self {
        InvalidManager {
            cache: None,
            node: PhantomData,
        }
    }

    fn invalidation_of(&self, args: impl Into<G>) -> Invalidation {
        let cache = self.cache.clone().unwrap_or_else(global);
        cache.create_invalidation().invalid_key(args.into().key())
    }

    /// Make stale every value that depends on this invalid node, loads in
    /// flight included, in O(1) whatever their number.
    #[doc(alias = "invalidate")]
    pub async fn invalid(&self, args: impl Into<G>) -> Result<()> {
        self.invalidation_of(args).run().await.map(drop)
    }

    /// [`invalid`](Self::invalid) for blocking code.
    #[doc(alias = "invalidate")]
    pub fn invalid_blocking(&self, args: impl Into<G>) -> Result<()> {
        self.invalidation_of(args).run_blocking().map(drop)
    }
}
