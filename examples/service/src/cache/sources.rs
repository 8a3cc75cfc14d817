//! An invalidation source: PostgreSQL's `LISTEN`/`NOTIFY`.
//!
//! Migration 2 puts a trigger on `cats` that sends, at the commit of every
//! change, a notification in cacheme's source message format (`key
//! cat:7:version`, one line per key). Writes that bypass the service (a
//! `psql` session, a batch job, another application) therefore reach the
//! cache too. The service's own cat handlers invalidate by themselves as
//! well: they must not answer before the cache has changed, and a
//! notification arrives a little later.

use std::collections::VecDeque;
use std::time::Duration;

use cacheme::sources::{InvalidationSource, NextEvent, SourceEvent};
use sqlx::postgres::{PgListener, PgPool};

/// The tag whose values a lost notification invalidates: every cat value.
pub const CATS_TAG: &str = "cats";

/// The channel the trigger of migration 2 notifies for `schema`.
pub fn cats_channel(schema: &str) -> String {
    format!("cacheme_cats_{schema}")
}

/// The cats table's notifications, as invalidation events.
#[derive(Debug)]
pub struct CatNotifications {
    listener: PgListener,
    pending: VecDeque<SourceEvent>,
}

impl CatNotifications {
    /// Listen for the notifications of `schema`'s `cats` table.
    pub async fn listen(pool: &PgPool, schema: &str) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(&cats_channel(schema)).await?;
        Ok(CatNotifications {
            listener,
            pending: VecDeque::new(),
        })
    }

    async fn next_event(&mut self) -> Option<SourceEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.listener.try_recv().await {
                Ok(Some(notification)) => {
                    match SourceEvent::parse_message(notification.payload()) {
                        Ok(events) => self.pending.extend(events),
                        Err(error) => tracing::warn!(
                            %error,
                            payload = notification.payload(),
                            "a cats notification that is not a source message"
                        ),
                    }
                }
                // The connection dropped and was re-established:
                // notifications sent meanwhile are lost, so every cat value
                // is invalidated.
                Ok(None) => {
                    tracing::warn!("the cats notification listener reconnected");
                    return Some(SourceEvent::All);
                }
                Err(sqlx::Error::PoolClosed) => return None,
                Err(error) => {
                    tracing::warn!(%error, "cats notifications: retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl InvalidationSource for CatNotifications {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(self.next_event())
    }
}
