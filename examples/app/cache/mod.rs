//! The application's cache: set-up in one place, nodes and invalid nodes in
//! their own files (the seed's `cache.py`, `nodes.py`, `invalid_nodes.py`).

pub(crate) mod invalid_nodes;
pub(crate) mod nodes;

use std::time::Duration;

/// Install the global cache: Redis when `REDIS_URL` is set, memory otherwise.
pub(crate) fn init() -> Result<cacheme::Cache, cacheme::Error> {
    let builder = cacheme::Cache::builder()
        .prefix("APP:")
        .herd_retry(5, Duration::from_millis(20))
        .stale(true);
    let builder = match std::env::var("REDIS_URL") {
        Ok(url) => builder.redis_url(url),
        Err(_) => builder.memory(),
    };
    builder.install()
}
