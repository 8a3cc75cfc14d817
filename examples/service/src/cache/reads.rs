//! Reads through the cache: nodes for entities and lists, `#[cacheme]`
//! functions for derived values. Each function's loader is the data layer;
//! the cache decides whether it runs.

use std::collections::HashMap;
use std::future::Future;

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

/// A row with a version.
pub trait Versioned {
    /// The row's version.
    fn version(&self) -> i64;
}

impl Versioned for User {
    fn version(&self) -> i64 {
        self.version
    }
}

impl Versioned for Book {
    fn version(&self) -> i64 {
        self.version
    }
}

impl Versioned for Cat {
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

/// The bodies of `refs`, from body node `B`: rows the list's loader just
/// read are used as they are; the others are read one by one.
///
/// Batch reads (`get_or_load_many`, issue 15) plug in here: one call for
/// every ref, one store round trip for the ones no local tier holds.
async fn bodies<T, B, F, Fut>(
    refs: &[Ref],
    mut fetched: HashMap<i64, T>,
    fetch: F,
) -> Result<Vec<T>, ReadError>
where
    T: Versioned + Send + Sync + 'static,
    B: Node<Value = T> + From<(i64, i64)>,
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<Option<T>, sqlx::Error>>,
{
    let mut out = Vec::with_capacity(refs.len());
    for &Ref { id, version } in refs {
        let row = fetched.remove(&id);
        let fetch = &fetch;
        let body = B::objects()
            .get_or_load((id, version), || async move {
                match row {
                    Some(row) if row.version() >= version => Ok(row),
                    _ => fetch(id).await?.ok_or(LoadFailure::Gone),
                }
            })
            .await;
        match body {
            Ok(body) => out.push(body),
            Err(error) if matches!(error.loader_error(), Some(LoadFailure::Gone)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(out)
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
    bodies::<_, BookNode, _, _>(&refs, fetched, |id| db.book(id)).await
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
    bodies::<_, CatNode, _, _>(&refs, fetched, |id| db.cat(id)).await
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
