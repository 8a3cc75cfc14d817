//! The service's cache: set-up in one place, nodes and invalid nodes in
//! their own files (Python cacheme's `cache.py`, `nodes.py`, `invalid_nodes.py`),
//! the reads and what each write invalidates beside them.

pub mod invalid_nodes;
pub mod invalidate;
pub mod nodes;
pub mod reads;
pub mod sources;

use crate::settings::{Settings, Store};

/// Build the cache the settings ask for and install it as the global one
/// (which `Node::objects()` and `#[cacheme]` functions use).
pub fn install(settings: &Settings) -> Result<cacheme::Cache, cacheme::Error> {
    let builder = cacheme::Cache::builder().prefix(settings.cache_prefix.clone());
    let builder = match &settings.store {
        Store::Redis(url) => builder.redis_url(url.clone()),
        Store::Memory => builder.memory(),
        // Off: every call runs its loader; invalidations still run (on an
        // empty memory store), so the handlers need no special case.
        Store::Off => builder.memory().enabled(false),
    };
    builder.install()
}
