//! Reads through the cache: nodes for entities and lists, `#[cacheme]`
//! functions for derived values. Each function's loader is the data layer;
//! the cache decides whether it runs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use cacheme::{LoadError, Node, cacheme};
use serde::{Deserialize, Serialize};

use super::invalid_nodes::UserInvalid;
use super::nodes::{
    BookNode, BookVersionNode, CatNode, CatVersionNode, UserBooksNode, UserCatsNode, UserNode,
    UserVersionNode,
};
use crate::db::{Book, Cat, Counts, Db, Ref, User};

/// Why a loader produced no value (never cached).
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The row does not exist (any more).
    #[error("no such row")]
    Gone,
}

/// What a read returns when it fails: the loader's failure, or a hard
/// timeout. Store trouble never shows up here: the cache fails open.
pub type ReadError = LoadError<LoadFailure>;

/// A row with an id and a version.
pub trait Versioned {
    /// The row's id.
    fn id(&self) -> i64;
    /// The row's version.
    fn version(&self) -> i64;
}

impl Versioned for User {
    fn id(&self) -> i64 {
        self.id
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl Versioned for Book {
    fn id(&self) -> i64 {
        self.id
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl Versioned for Cat {
    fn id(&self) -> i64 {
        self.id
    }
    fn version(&self) -> i64 {
        self.version
    }
}

/// Read row `id` through its version node `V` and its body node `B`.
///
/// A miss on the version loads the whole row (one query) and keeps it for
/// the body, so a cold read costs one query, like an uncached one.
async fn versioned<T, V, B, F, Fut>(id: i64, fetch: F) -> Result<Option<T>, ReadError>
where
    T: Versioned + Send + Sync + 'static,
    V: Node<Value = Option<i64>> + From<i64>,
    B: Node<Value = T> + From<(i64, i64)>,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, sqlx::Error>>,
{
    let mut fetched: Option<T> = None;
    let slot = &mut fetched;
    let fetch = &fetch;
    let version = V::objects()
        .get_or_load(id, || async move {
            let row = fetch().await?;
            let version = row.as_ref().map(Versioned::version);
            *slot = row;
            Ok(version)
        })
        .await?;
    let Some(version) = version else {
        return Ok(None);
    };
    let body = B::objects()
        .get_or_load((id, version), || async move {
            // The row the version came from, or the row as it is now: its
            // version is the one asked for or a newer one, never an older.
            match fetched {
                Some(row) if row.version() >= version => Ok(row),
                _ => fetch().await?.ok_or(LoadFailure::Gone),
            }
        })
        .await;
    match body {
        Ok(body) => Ok(Some(body)),
        // Deleted since its version was read.
        Err(error) if matches!(error.loader_error(), Some(LoadFailure::Gone)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// User `id`.
pub async fn user(db: &Db, id: i64) -> Result<Option<User>, ReadError> {
    versioned::<_, UserVersionNode, UserNode, _, _>(id, || db.user(id)).await
}

/// Book `id`.
pub async fn book(db: &Db, id: i64) -> Result<Option<Book>, ReadError> {
    versioned::<_, BookVersionNode, BookNode, _, _>(id, || db.book(id)).await
}

/// Cat `id`.
pub async fn cat(db: &Db, id: i64) -> Result<Option<Cat>, ReadError> {
    versioned::<_, CatVersionNode, CatNode, _, _>(id, || db.cat(id)).await
}

/// The bodies of `refs`, from body node `B`, with one batch read: the
/// local tiers first, then one `MGET` for the rest, then one loader call for
/// what the store lacks. The rows the list's loader just read are used as
/// they are; the others come from one query (`fetch_many`). Rows deleted
/// since the list was cached are left out.
async fn bodies<T, B, F, Fut>(
    refs: &[Ref],
    fetched: HashMap<i64, T>,
    fetch_many: F,
) -> Result<Vec<T>, ReadError>
where
    T: Versioned + Clone + Send + Sync + 'static,
    B: Node<Value = T> + From<(i64, i64)>,
    F: Fn(Vec<i64>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, sqlx::Error>>,
{
    let fetched = Mutex::new(fetched);
    let (fetched, fetch_many) = (&fetched, &fetch_many);
    let ids = refs.iter().map(|r| (r.id, r.version));
    let bodies = B::objects()
        .get_or_load_many(ids, |missing: Vec<(i64, i64)>| async move {
            let mut rows =
                std::mem::take(&mut *fetched.lock().unwrap_or_else(PoisonError::into_inner));
            // A row's version is the one asked for or a newer one, never an
            // older: an older one is read again.
            let absent: Vec<i64> = missing
                .iter()
                .filter(|(id, version)| rows.get(id).is_none_or(|row| row.version() < *version))
                .map(|(id, _)| *id)
                .collect();
            if !absent.is_empty() {
                rows.extend(
                    fetch_many(absent)
                        .await?
                        .into_iter()
                        .map(|row| (row.id(), row)),
                );
            }
            let found: Vec<((i64, i64), T)> = missing
                .into_iter()
                .filter_map(|(id, version)| {
                    let row = rows.remove(&id).filter(|row| row.version() >= version)?;
                    Some(((id, version), row))
                })
                .collect();
            Ok::<_, LoadFailure>(found)
        })
        .await?;
    Ok(bodies.into_iter().flatten().collect())
}

/// The books of user `owner_id`.
pub async fn books_of(db: &Db, owner_id: i64) -> Result<Vec<Book>, ReadError> {
    let mut fetched = HashMap::new();
    let slot = &mut fetched;
    let refs = UserBooksNode::objects()
        .get_or_load(owner_id, || async move {
            let books = db.books_of(owner_id).await?;
            let refs = books.iter().map(|b| Ref {
                id: b.id,
                version: b.version,
            });
            let refs = refs.collect();
            *slot = books.into_iter().map(|book| (book.id, book)).collect();
            Ok(refs)
        })
        .await?;
    bodies::<_, BookNode, _, _>(
        &refs,
        fetched,
        |ids| async move { db.books_by_ids(&ids).await },
    )
    .await
}

/// The cats of user `owner_id`.
pub async fn cats_of(db: &Db, owner_id: i64) -> Result<Vec<Cat>, ReadError> {
    let mut fetched = HashMap::new();
    let slot = &mut fetched;
    let refs = UserCatsNode::objects()
        .get_or_load(owner_id, || async move {
            let cats = db.cats_of(owner_id).await?;
            let refs = cats.iter().map(|c| Ref {
                id: c.id,
                version: c.version,
            });
            let refs = refs.collect();
            *slot = cats.into_iter().map(|cat| (cat.id, cat)).collect();
            Ok(refs)
        })
        .await?;
    bodies::<_, CatNode, _, _>(
        &refs,
        fetched,
        |ids| async move { db.cats_by_ids(&ids).await },
    )
    .await
}

/// A user and how many books and cats they have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The user.
    pub user: User,
    /// Their counts.
    pub counts: Counts,
}

/// User `id`'s summary: memoized for a minute, in the dependency group of
/// the user (every write to their books and cats invalidates it), and kept
/// an hour past its TTL to be served if PostgreSQL fails (fail-safe).
#[cacheme(
    key = format!("user:{id}:summary"),
    invalid_keys = UserInvalid { id },
    tag = "summaries",
    ttl = 60,
    fail_safe = "1h"
)]
pub async fn summary(db: &Db, id: i64) -> Result<Summary, LoadFailure> {
    let user = db.user(id).await?.ok_or(LoadFailure::Gone)?;
    let counts = db.counts(id).await?;
    Ok(Summary { user, counts })
}

/// The longest title prefix searched for.
pub const MAX_PREFIX: usize = 64;

/// The first 20 books whose title starts with `prefix`, memoized for a
/// minute under the tag `book-search`, which every book write invalidates
/// (a search may hold any book, so no narrower invalidation would do).
#[cacheme(key = format!("books:search:{prefix}"), tag = "book-search", ttl = 60)]
pub async fn search_books(db: &Db, prefix: &str) -> Result<Vec<Book>, LoadFailure> {
    Ok(db.search_books(prefix).await?)
}
