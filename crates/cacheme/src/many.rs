//! Many keys in one call: `objects().get_many(ids)` and
//! `objects().get_or_load_many(ids, loader)` (the batch driver is
//! `driver::batch`).

use std::future::Future;

use crate::driver::batch;
use crate::error::LoadError;
use crate::lookup::{CacheValue, Lookup};
use crate::manager::Manager;
use crate::node::Node;

impl<N: Node> Manager<N> {
    /// The lookups of `nodes`, each with its node's hooks.
    fn lookups_with_hooks<'h>(
        &self,
        nodes: &[N],
        hits: &'h [impl Fn(&str, &N::Value) + Sync],
        misses: &'h [impl Fn(&str) + Sync],
    ) -> Vec<Lookup<'h, N::Value>> {
        nodes
            .iter()
            .zip(hits.iter().zip(misses))
            .map(|(node, (hit, miss))| self.lookup(node).hit(hit).miss(miss))
            .collect()
    }

    /// The cached values of many ids, in the order of `ids` (`None` for a
    /// miss); never runs a loader. The local tier first, then one round
    /// trip (an `MGET`) for the rest; duplicate ids are read
    /// once. Store trouble reads as misses, as with [`get`](Self::get).
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
    /// let cats = CatNode::objects();
    /// cats.get_or_load(1, || async { Ok::<_, std::io::Error>(Cat { id: 1, name: "Tom".into() }) })
    ///     .await
    ///     .expect("the loader succeeds");
    /// let found = cats.get_many([1, 2]).await;
    /// assert_eq!(found, [Some(Cat { id: 1, name: "Tom".into() }), None]);
    /// # }
    /// ```
    pub async fn get_many<A: Into<N>>(
        &self,
        ids: impl IntoIterator<Item = A>,
    ) -> Vec<Option<N::Value>> {
        let nodes: Vec<N> = ids.into_iter().map(Into::into).collect();
        let lookups: Vec<_> = nodes.iter().map(|node| self.lookup(node)).collect();
        batch::get_many_async(&lookups).await
    }

    /// [`get_many`](Self::get_many) for blocking code.
    pub fn get_many_blocking<A: Into<N>>(
        &self,
        ids: impl IntoIterator<Item = A>,
    ) -> Vec<Option<N::Value>> {
        let nodes: Vec<N> = ids.into_iter().map(Into::into).collect();
        let lookups: Vec<_> = nodes.iter().map(|node| self.lookup(node)).collect();
        batch::get_many_blocking(&lookups)
    }

    /// The values of many ids, in the order of `ids`: cached ones from the
    /// cache, the others from **one** call of `loader` with every id that is
    /// neither cached nor being loaded by another caller (in any process);
    /// ids another caller is loading are waited for, as with
    /// [`get_or_load`](Self::get_or_load).
    ///
    /// The loader gets the missing ids (each once, in the order of their
    /// first occurrence) and returns `(id, value)` pairs, in any order; an id
    /// it leaves out is not cached and comes back as `None` (and counts as a
    /// load error in the stats). A loader error is returned (nothing it
    /// loaded is cached, and the leases are given back).
    ///
    /// Round trips: none when the local tier has every value; otherwise one
    /// `MGET`; for the keys it found empty, one pipeline of claims (`SET key
    /// placeholder NX PX lease GET`), then the loader, then one pipeline of
    /// fills; one more for refresh claims when some values are stale for
    /// this reader. Each id keeps the single-key guarantees: one
    /// load per cold id across processes, no stale set, hit and miss hooks
    /// and stats per id, and store trouble that only makes that id load
    /// without being stored.
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
    /// /// One query for many cats, as a database would answer it.
    /// async fn cats_from_db(ids: Vec<u64>) -> Result<Vec<(u64, Cat)>, std::io::Error> {
    ///     Ok(ids.into_iter().filter(|id| *id != 404)
    ///         .map(|id| (id, Cat { id, name: format!("cat {id}") }))
    ///         .collect())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cacheme::LoadError<std::io::Error>> {
    /// let cats = CatNode::objects().get_or_load_many([3, 1, 404, 3], cats_from_db).await?;
    /// let names: Vec<_> = cats.iter().map(|cat| cat.as_ref().map(|c| c.name.as_str())).collect();
    /// assert_eq!(names, [Some("cat 3"), Some("cat 1"), None, Some("cat 3")]);
    /// // Now cached: the loader is not called.
    /// let again = CatNode::objects()
    ///     .get_or_load_many([1, 3], |_ids: Vec<u64>| async { Ok::<Vec<(u64, Cat)>, std::io::Error>(vec![]) })
    ///     .await?;
    /// assert!(again.iter().all(Option::is_some));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_load_many<A, F, Fut, I, E>(
        &self,
        ids: impl IntoIterator<Item = A>,
        loader: F,
    ) -> Result<Vec<Option<N::Value>>, LoadError<E>>
    where
        A: Into<N> + Clone,
        F: Fn(Vec<A>) -> Fut,
        Fut: Future<Output = Result<I, E>>,
        I: IntoIterator<Item = (A, N::Value)>,
        N::Value: Clone,
        E: Send + Sync + 'static,
    {
        let args: Vec<A> = ids.into_iter().collect();
        let nodes: Vec<N> = args.iter().cloned().map(Into::into).collect();
        let (hits, misses) = hooks(&nodes);
        let lookups = self.lookups_with_hooks(&nodes, &hits, &misses);
        batch::load_many_async(lookups, args, &key_of::<N, A>, loader).await
    }

    /// [`get_or_load_many`](Self::get_or_load_many) for blocking code.
    pub fn get_or_load_many_blocking<A, F, I, E>(
        &self,
        ids: impl IntoIterator<Item = A>,
        loader: F,
    ) -> Result<Vec<Option<N::Value>>, LoadError<E>>
    where
        A: Into<N> + Clone,
        F: Fn(Vec<A>) -> Result<I, E>,
        I: IntoIterator<Item = (A, N::Value)>,
        N::Value: Clone,
        E: Send + Sync + 'static,
    {
        let args: Vec<A> = ids.into_iter().collect();
        let nodes: Vec<N> = args.iter().cloned().map(Into::into).collect();
        let (hits, misses) = hooks(&nodes);
        let lookups = self.lookups_with_hooks(&nodes, &hits, &misses);
        batch::load_many_blocking(lookups, args, &key_of::<N, A>, loader)
    }
}

/// The cache key of an id, as its lookup has it (with the node's version).
fn key_of<N: Node, A: Into<N> + Clone>(arg: &A) -> String {
    N::SPEC.versioned(arg.clone().into().key())
}

/// Each node's hit and miss hooks.
#[allow(clippy::type_complexity)]
fn hooks<N: Node>(
    nodes: &[N],
) -> (
    Vec<impl Fn(&str, &N::Value) + Sync + '_>,
    Vec<impl Fn(&str) + Sync + '_>,
) {
    let hits = nodes
        .iter()
        .map(|node| move |key: &str, value: &N::Value| node.hit(key, value))
        .collect();
    let misses = nodes
        .iter()
        .map(|node| move |key: &str| node.miss(key))
        .collect();
    (hits, misses)
}

/// Not public API: the batch form of `#[cacheme]` (`batch = ..`): load the
/// values of `lookups` (one per input), calling `loader` once with the
/// arguments of those that must load.
#[doc(hidden)]
pub async fn load_many<V, A, F, Fut, I, E>(
    lookups: Vec<Lookup<'_, V>>,
    args: Vec<A>,
    key_of: &(dyn Fn(&A) -> String + Sync),
    loader: F,
) -> Result<Vec<Option<V>>, LoadError<E>>
where
    V: CacheValue + Clone,
    A: Clone,
    F: Fn(Vec<A>) -> Fut,
    Fut: Future<Output = Result<I, E>>,
    I: IntoIterator<Item = (A, V)>,
    E: Send + Sync + 'static,
{
    batch::load_many_async(memo_lookups(lookups), args, key_of, loader).await
}

/// A `#[cacheme]` fn's error type cannot carry a timeout: past the hard
/// timeout its call is served an expired value if there is one, else waits
/// (as `load_unless_skipped` does for single values).
fn memo_lookups<'a, V: CacheValue>(lookups: Vec<Lookup<'a, V>>) -> Vec<Lookup<'a, V>> {
    lookups
        .into_iter()
        .map(|lookup| lookup.timeout_errors(false))
        .collect()
}

/// Not public API: a batch fn's `Vec<V>` as the loader's `(id, value)`
/// pairs, each id computed by the fn's `by = ..`.
#[doc(hidden)]
pub fn vec_pairs<T, V>(values: Vec<V>, by: impl Fn(&V) -> T) -> Vec<(T, V)> {
    values
        .into_iter()
        .map(|value| (by(&value), value))
        .collect()
}

/// Not public API: a batch fn's `Vec<V>` result: the values found, in the
/// order of the ids (absent ones left out, duplicates repeated).
#[doc(hidden)]
pub fn vec_of<V>(values: Vec<Option<V>>) -> Vec<V> {
    values.into_iter().flatten().collect()
}

/// Not public API: a batch fn's map result (`HashMap<T, V>`, `BTreeMap<T,
/// V>`...): each id found, with its value.
#[doc(hidden)]
pub fn map_of<T: Clone, V, M: FromIterator<(T, V)>>(ids: &[T], values: Vec<Option<V>>) -> M {
    ids.iter()
        .cloned()
        .zip(values)
        .filter_map(|(id, value)| Some((id, value?)))
        .collect()
}

/// Not public API: the loader's error of a batch fn (its lookups share no
/// errors and give no timeouts).
#[doc(hidden)]
pub fn own_error<E>(error: LoadError<E>) -> E {
    match error {
        LoadError::Own(error) => error,
        LoadError::Shared(_) | LoadError::TimedOut(_) => {
            unreachable!("a batch fn's lookups share no errors and give no timeouts")
        }
    }
}

/// Not public API: [`load_many`] for blocking code.
#[doc(hidden)]
pub fn load_many_blocking<V, A, F, I, E>(
    lookups: Vec<Lookup<'_, V>>,
    args: Vec<A>,
    key_of: &(dyn Fn(&A) -> String + Sync),
    loader: F,
) -> Result<Vec<Option<V>>, LoadError<E>>
where
    V: CacheValue + Clone,
    A: Clone,
    F: Fn(Vec<A>) -> Result<I, E>,
    I: IntoIterator<Item = (A, V)>,
    E: Send + Sync + 'static,
{
    batch::load_many_blocking(memo_lookups(lookups), args, key_of, loader)
}
