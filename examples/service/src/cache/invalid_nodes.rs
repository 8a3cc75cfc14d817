//! Invalid nodes: the dependency groups that cached values declare
//! (Python cacheme's `invalid_nodes.py`).
//!
//! Invalidating a group makes every value that declared it stale, in O(1)
//! whatever their number. In the invalidating process that holds before
//! the call returns; other processes learn it from the cache's event
//! channel (within about a millisecond, `just coherence`). The service
//! therefore uses groups for derived values (a user's summary), and key
//! invalidations, which need no event, for everything a client reads back
//! right after writing it (see `nodes.rs`).

use cacheme::InvalidNode;

/// Everything derived from one user's data: their summary.
#[derive(Debug, InvalidNode)]
#[invalid_node(key = "user:{id}")]
pub struct UserInvalid {
    /// The user's id.
    pub id: i64,
}
