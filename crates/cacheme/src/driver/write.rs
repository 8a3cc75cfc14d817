//! Writes a caller asks for: `refresh` (reload now, under the lease) and
//! `set` (store a value the caller has, without ever writing stale data).
//!
//! Both are the protocol's refresh flow ([`ReadFlow::refresh`]), the one a
//! background refresh runs: take the key's lease (its lease key when a
//! value is there, a placeholder when it is empty), load, fill only while
//! the lease is still ours. So a refresh never overwrites a newer value
//! that an invalidation made room for, and when another caller already
//! holds the lease (it is loading), this one leaves the key to it.
//!
//! `set` first invalidates the key: that revokes any lease in flight, so a
//! load that began before the caller's change cannot fill after it; then it
//! refreshes with the caller's value as the loader. If another caller takes
//! the lease in between, its load began after the change, and this value is
//! not written (that load's is).

use std::future::Future;

use super::run::Run;
use super::steps;
use crate::error::LoadError;
use crate::lookup::{CacheValue, Lookup};
use crate::protocol::ReadFlow;

/// The loader's error, kept aside while the run records only that it failed.
#[derive(Debug)]
struct Failed;

/// Reload `lookup`'s value now with `loader`, under the lease; `Ok` also
/// when another caller holds the lease (its reload is in flight) or the
/// store cannot be reached (nothing is written then).
pub(crate) async fn refresh_now_async<V, F, Fut, E>(
    lookup: &Lookup<'_, V>,
    loader: F,
) -> Result<(), LoadError<E>>
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    if super::bypass(lookup) {
        return Ok(());
    }
    let inner = lookup.cache.inner.clone();
    if tokio::runtime::Handle::try_current().is_err() {
        inner.warn_no_runtime();
        return Ok(());
    }
    super::sync_async(&inner).await;
    let keys = inner.store_keys(&lookup.key);
    let flow = ReadFlow::refresh(inner.policy_for(lookup, true));
    let mut run = Run::<V, Failed>::new(lookup, &inner, keys, None, flow);
    let mut error = None;
    let mut loader = Some(|| async {
        match loader().await {
            Ok(value) => Ok(value),
            Err(failed) => {
                error = Some(failed);
                Err(Failed)
            }
        }
    });
    let start = run.flow.start();
    steps::steps_async(&mut run, start, &mut loader).await;
    drop(loader);
    error.map_or(Ok(()), |error| Err(LoadError::Own(error)))
}

/// [`refresh_now_async`] for blocking code.
pub(crate) fn refresh_now_blocking<V, F, E>(
    lookup: &Lookup<'_, V>,
    loader: F,
) -> Result<(), LoadError<E>>
where
    V: CacheValue,
    F: FnOnce() -> Result<V, E>,
    E: Send + Sync + 'static,
{
    if super::bypass(lookup) {
        return Ok(());
    }
    let inner = lookup.cache.inner.clone();
    super::sync_blocking(&inner);
    let keys = inner.store_keys(&lookup.key);
    let flow = ReadFlow::refresh(inner.policy_for(lookup, true));
    let mut run = Run::<V, Failed>::new(lookup, &inner, keys, None, flow);
    let mut error = None;
    let mut loader = Some(|| match loader() {
        Ok(value) => Ok(value),
        Err(failed) => {
            error = Some(failed);
            Err(Failed)
        }
    });
    let start = run.flow.start();
    steps::steps_blocking(&mut run, start, &mut loader);
    drop(loader);
    error.map_or(Ok(()), |error| Err(LoadError::Own(error)))
}
