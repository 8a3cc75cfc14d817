//! Writes through a manager: `objects().refresh(args, loader)` and
//! `objects().set(args, value)` (the driver is `driver::write`).

use std::convert::Infallible;
use std::future::Future;

use crate::Result;
use crate::driver::write;
use crate::error::LoadError;
use crate::manager::Manager;
use crate::node::Node;

impl<N: Node> Manager<N> {
    /// Reload the value now with `loader`, under the key's lease: the fill
    /// lands only if no invalidation revoked the lease meanwhile. When
    /// another caller (in any process) is already loading this key, its load
    /// is left to finish and `loader` is not called. A loader error is
    /// returned, and the cached value stays as it was.
    ///
    /// ```
    /// # use cacheme::Node;
    /// #[derive(Node)]
    /// #[node(key = "price:{id}", value = u32)]
    /// struct PriceNode { id: u64 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cacheme::LoadError<std::io::Error>> {
    /// let prices = PriceNode::objects();
    /// prices.get_or_load(7, || async { Ok::<_, std::io::Error>(100) }).await?;
    /// prices.refresh(7, || async { Ok::<_, std::io::Error>(120) }).await?;
    /// assert_eq!(prices.get(7).await, Some(120));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh<F, Fut, E>(
        &self,
        args: impl Into<N>,
        loader: F,
    ) -> Result<(), LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<N::Value, E>>,
        E: Send + Sync + 'static,
    {
        let node = args.into();
        write::refresh_now_async(&self.lookup(&node), loader).await
    }

    /// [`refresh`](Self::refresh) for blocking code.
    pub fn refresh_blocking<F, E>(&self, args: impl Into<N>, loader: F) -> Result<(), LoadError<E>>
    where
        F: FnOnce() -> Result<N::Value, E>,
        E: Send + Sync + 'static,
    {
        let node = args.into();
        write::refresh_now_blocking(&self.lookup(&node), loader)
    }

    /// Store `value` as the node's value, as after a change of its source
    /// (the seed's `set`): the key is invalidated first, which revokes any
    /// load in flight (a load that read the source before the change can
    /// never fill after it), then `value` is written under the key's lease.
    /// If another caller takes the lease in between, its load began after
    /// the invalidation and its value is the one stored. Errors are the
    /// invalidation's (the store could not be reached): the value is then
    /// not written.
    ///
    /// ```
    /// # use cacheme::Node;
    /// #[derive(Node)]
    /// #[node(key = "price:{id}", value = u32)]
    /// struct PriceNode { id: u64 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cacheme::Error> {
    /// PriceNode::objects().set(8, 250).await?;
    /// assert_eq!(PriceNode::objects().get(8).await, Some(250));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set(&self, args: impl Into<N>, value: N::Value) -> Result<()> {
        let node = args.into();
        self.cache()
            .create_invalidation()
            .key(N::SPEC.versioned(node.key()))
            .run()
            .await?;
        let stored =
            write::refresh_now_async(&self.lookup(&node), || async { Ok::<_, Infallible>(value) })
                .await;
        match stored {
            Ok(()) => Ok(()),
            Err(LoadError::Own(never)) => match never {},
            Err(LoadError::Shared(never)) => match *never {},
            // (A refresh has no hard timeout of its own to report.)
            Err(LoadError::TimedOut(_)) => Ok(()),
        }
    }

    /// [`set`](Self::set) for blocking code.
    pub fn set_blocking(&self, args: impl Into<N>, value: N::Value) -> Result<()> {
        let node = args.into();
        self.cache()
            .create_invalidation()
            .key(N::SPEC.versioned(node.key()))
            .run_blocking()?;
        let stored =
            write::refresh_now_blocking(&self.lookup(&node), || Ok::<_, Infallible>(value));
        match stored {
            Ok(()) | Err(LoadError::TimedOut(_)) => Ok(()),
            Err(LoadError::Own(never)) => match never {},
            Err(LoadError::Shared(never)) => match *never {},
        }
    }
}
