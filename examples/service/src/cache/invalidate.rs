//! What each write invalidates, called by the handlers after the
//! transaction has committed (invalidating before the commit would let a
//! reader reload the old row and cache it again).
//!
//! - **keys** (version nodes, list nodes): strict in every process as soon
//!   as the call returns, because they change the store itself;
//! - **groups** (`UserInvalid`: summaries) and **tags** (`book-search`):
//!   O(1) whatever the number of values; strict in this process, and in
//!   the others once the cache's event reaches them (about a millisecond).
//!
//! A failed invalidation (Redis unreachable) is logged here and queued by
//! cacheme, which retries it until it lands; the write itself has happened
//! and is reported as done.

use cacheme::{InvalidNode, Node};

use super::invalid_nodes::UserInvalid;
use super::nodes::{BookVersionNode, CatVersionNode, UserBooksNode, UserCatsNode, UserVersionNode};
use crate::db::{Book, Cat, User};

fn report(what: &str, result: cacheme::Result<impl Sized>) {
    if let Err(error) = result {
        tracing::warn!(%error, what, "invalidation failed; cacheme retries it");
    }
}

/// User `user` was inserted or updated.
pub async fn user_changed(user: &User) {
    report(
        "user version",
        UserVersionNode::objects().invalid(user.id).await,
    );
    report("user group", UserInvalid::objects().invalid(user.id).await);
}

/// A book was inserted (`before` is `None`) or updated.
pub async fn book_changed(before: Option<&Book>, after: &Book) {
    report(
        "book version",
        BookVersionNode::objects().invalid(after.id).await,
    );
    let mut owners = vec![after.owner_id];
    owners.extend(before.map(|book| book.owner_id));
    owners.dedup();
    for owner in owners {
        report("book list", UserBooksNode::objects().invalid(owner).await);
        report("user group", UserInvalid::objects().invalid(owner).await);
    }
    report("book search", cacheme::tag("book-search").invalid().await);
}

/// A cat was inserted (`before` is `None`), updated or deleted (`after` is
/// `None`).
pub async fn cat_changed(before: Option<&Cat>, after: Option<&Cat>) {
    let Some(id) = after.or(before).map(|cat| cat.id) else {
        return;
    };
    report("cat version", CatVersionNode::objects().invalid(id).await);
    let mut owners: Vec<i64> = before
        .iter()
        .chain(after.iter())
        .map(|c| c.owner_id)
        .collect();
    owners.dedup();
    for owner in owners {
        report("cat list", UserCatsNode::objects().invalid(owner).await);
        report("user group", UserInvalid::objects().invalid(owner).await);
    }
}
