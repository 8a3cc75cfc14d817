//! Cache nodes: one struct per kind of cached value; the fields form the
//! key (Python cacheme's `nodes.py`).
//!
//! Each entity is cached as two nodes:
//!
//! - a **version node** (`user:{id}:version`): the row's current version,
//!   read from the store on every request (Redis, or this process's memory)
//!   and never served stale. Writes invalidate it by key, which changes
//!   Redis itself before the write's response is sent, so a reader in any
//!   process sees the new version as soon as the write has returned;
//! - a **body node** (`user:{id}:v{version}`): the row as of that version.
//!   A version never changes, so the body needs no invalidation and every
//!   process may keep it in its local tier: reading it costs no round trip,
//!   and it can never be old.
//!
//! Lists (a user's books, a user's cats) are nodes holding `(id, version)`
//! pairs, invalidated by key by every write that changes a member or the
//! membership; the bodies then come from the local tiers.

use cacheme::Node;

use super::invalid_nodes::UserInvalid;
use crate::db::{Book, Cat, Ref, User};

/// The current version of user `id`, `None` when there is no such user.
#[derive(Debug, Node)]
#[node(key = "user:{id}:version", value = Option<i64>, ttl = 3600, stale = false, tag = "users")]
pub struct UserVersionNode {
    /// The user's id.
    pub id: i64,
}

/// User `id` at `version`, kept in every process's local tier.
#[derive(Debug, Node)]
#[node(key = "user:{id}:v{version}", value = User, ttl = 3600, tag = "users",
       local_ttl = "10m", local_capacity = 50_000)]
pub struct UserNode {
    /// The user's id.
    pub id: i64,
    /// The version the body is of.
    pub version: i64,
}

/// The current version of book `id`.
#[derive(Debug, Node)]
#[node(key = "book:{id}:version", value = Option<i64>, ttl = 3600, stale = false, tag = "books")]
pub struct BookVersionNode {
    /// The book's id.
    pub id: i64,
}

/// Book `id` at `version`.
#[derive(Debug, Node)]
#[node(key = "book:{id}:v{version}", value = Book, ttl = 3600, tag = "books",
       local_ttl = "10m", local_capacity = 100_000)]
pub struct BookNode {
    /// The book's id.
    pub id: i64,
    /// The version the body is of.
    pub version: i64,
}

/// The current version of cat `id`.
#[derive(Debug, Node)]
#[node(key = "cat:{id}:version", value = Option<i64>, ttl = 3600, stale = false, tag = "cats")]
pub struct CatVersionNode {
    /// The cat's id.
    pub id: i64,
}

/// Cat `id` at `version`.
#[derive(Debug, Node)]
#[node(key = "cat:{id}:v{version}", value = Cat, ttl = 3600, tag = "cats",
       local_ttl = "10m", local_capacity = 100_000)]
pub struct CatNode {
    /// The cat's id.
    pub id: i64,
    /// The version the body is of.
    pub version: i64,
}

/// The books of user `owner_id`: ids and versions, by id.
#[derive(Debug, Node)]
#[node(key = "user:{owner_id}:books", value = Vec<Ref>, ttl = 3600, stale = false,
       tag = "books", invalid_nodes = Self::owner)]
pub struct UserBooksNode {
    /// The owner's id.
    pub owner_id: i64,
}

impl UserBooksNode {
    fn owner(&self) -> UserInvalid {
        UserInvalid { id: self.owner_id }
    }
}

/// The cats of user `owner_id`: ids and versions, by id.
#[derive(Debug, Node)]
#[node(key = "user:{owner_id}:cats", value = Vec<Ref>, ttl = 3600, stale = false,
       tag = "cats", invalid_nodes = Self::owner)]
pub struct UserCatsNode {
    /// The owner's id.
    pub owner_id: i64,
}

impl UserCatsNode {
    fn owner(&self) -> UserInvalid {
        UserInvalid { id: self.owner_id }
    }
}
