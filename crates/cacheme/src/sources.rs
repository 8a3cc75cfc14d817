//! Invalidation sources: streams of "this changed" events that invalidate
//! cached values when they fire (Python cacheme's `invalid_sources`, Django
//! signals there).
//!
//! A source is anything that implements [`InvalidationSource`]: an app's
//! [`tokio::sync::mpsc`] channel of [`SourceEvent`]s, a Redis pub/sub
//! channel ([`RedisChannelSource`]), or your own (a Postgres `LISTEN`, a
//! message queue...). [`connect`] feeds a source into invalidations of one
//! tag: [`SourceEvent::All`] deletes everything under the tag,
//! [`SourceEvent::Keys`] and [`SourceEvent::InvalidKeys`] mark those keys, or
//! every key of those dependency groups, stale.
//!
//! ```
//! use cacheme::sources::{self, SourceEvent};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = cacheme::Cache::builder().build().expect("memory store");
//! let (changes, source) = tokio::sync::mpsc::channel(16);
//! let task = sources::connect(&cache, "cats", source);
//!
//! // Somewhere in the app, when a cat changes:
//! changes.send(SourceEvent::Keys(vec!["cat:1".to_owned()])).await.expect("connected");
//! # drop(changes);
//! # task.await.expect("the task ends with its source");
//! # }
//! ```
//!
//! A `#[cacheme]` fn lists the sources of its tag with
//! `invalid_sources = [user_changes, ..]`: fns `fn() -> impl InvalidationSource`,
//! registered with `inventory` and started together by
//! [`Cache::connect_sources`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::{Error, Result};

/// What a source says changed.
///
/// ```
/// use cacheme::sources::SourceEvent;
/// let event = SourceEvent::InvalidKeys(vec!["user:7".to_owned()]);
/// assert_eq!(event.to_message(), "invalid_key user:7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// Everything under the connected tag: deleted.
    All,
    /// These cache keys: marked stale.
    Keys(Vec<String>),
    /// Every key in these dependency groups (invalid keys): marked stale.
    InvalidKeys(Vec<String>),
}

impl SourceEvent {
    /// Parse the text of a message: one command per line, `all`,
    /// `key <cache key>` or `invalid_key <invalid key>` (the key is the rest
    /// of the line, spaces included). Consecutive lines of one command are
    /// merged into one event.
    ///
    /// ```
    /// use cacheme::sources::SourceEvent;
    /// assert_eq!(
    ///     SourceEvent::parse_message("key cat:1\nkey cat:2\ninvalid_key user:7"),
    ///     Ok(vec![
    ///         SourceEvent::Keys(vec!["cat:1".into(), "cat:2".into()]),
    ///         SourceEvent::InvalidKeys(vec!["user:7".into()]),
    ///     ])
    /// );
    /// assert_eq!(SourceEvent::parse_message("all"), Ok(vec![SourceEvent::All]));
    /// assert!(SourceEvent::parse_message("drop everything").is_err());
    /// ```
    pub fn parse_message(text: &str) -> std::result::Result<Vec<SourceEvent>, ParseEventError> {
        let mut events: Vec<SourceEvent> = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (command, key) = match line.split_once(' ') {
                Some((command, key)) => (command, Some(key)),
                None => (line.trim(), None),
            };
            let event = match (command, key) {
                ("all", None) => SourceEvent::All,
                ("key", Some(key)) if !key.is_empty() => SourceEvent::Keys(vec![key.to_owned()]),
                ("invalid_key", Some(key)) if !key.is_empty() => {
                    SourceEvent::InvalidKeys(vec![key.to_owned()])
                }
                _ => {
                    return Err(ParseEventError::BadLine {
                        line: line.to_owned(),
                    });
                }
            };
            match (events.last_mut(), event) {
                (Some(SourceEvent::Keys(keys)), SourceEvent::Keys(more))
                | (Some(SourceEvent::InvalidKeys(keys)), SourceEvent::InvalidKeys(more)) => {
                    keys.extend(more)
                }
                (_, event) => events.push(event),
            }
        }
        if events.is_empty() {
            return Err(ParseEventError::Empty);
        }
        Ok(events)
    }

    /// The text of this event as a message (the inverse of
    /// [`parse_message`](Self::parse_message)). Keys must not contain line
    /// breaks.
    ///
    /// ```
    /// use cacheme::sources::SourceEvent;
    /// let event = SourceEvent::Keys(vec!["cat:1".into(), "cat:2".into()]);
    /// assert_eq!(event.to_message(), "key cat:1\nkey cat:2");
    /// assert_eq!(SourceEvent::parse_message(&event.to_message()), Ok(vec![event]));
    /// ```
    pub fn to_message(&self) -> String {
        let (command, keys) = match self {
            SourceEvent::All => return "all".to_owned(),
            SourceEvent::Keys(keys) => ("key", keys),
            SourceEvent::InvalidKeys(keys) => ("invalid_key", keys),
        };
        let lines: Vec<String> = keys.iter().map(|key| format!("{command} {key}")).collect();
        lines.join("\n")
    }
}

/// Why a message on an invalidation channel is not an invalidation
/// ([`SourceEvent::parse_message`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseEventError {
    /// A line that is none of `all`, `key <cache key>`, `invalid_key <invalid key>`.
    #[error(
        "`{line}` is not an invalidation: write `all`, `key <cache key>` or `invalid_key <invalid key>`"
    )]
    BadLine {
        /// The line as received.
        line: String,
    },
    /// A message with no command at all.
    #[error("an empty message is not an invalidation")]
    Empty,
}

/// The future of [`InvalidationSource::next`].
///
/// ```
/// use cacheme::sources::{NextEvent, SourceEvent};
/// let next: NextEvent<'static> = Box::pin(async { Some(SourceEvent::All) });
/// # drop(next);
/// ```
pub type NextEvent<'a> = Pin<Box<dyn Future<Output = Option<SourceEvent>> + Send + 'a>>;

/// Anything that yields invalidation events. `next` returns `None` when the
/// source is closed for good; [`connect`] then stops.
///
/// ```
/// use cacheme::sources::{InvalidationSource, NextEvent, SourceEvent};
///
/// /// A source that says "everything changed" once.
/// struct Once(bool);
///
/// impl InvalidationSource for Once {
///     fn next(&mut self) -> NextEvent<'_> {
///         let first = !std::mem::replace(&mut self.0, true);
///         Box::pin(async move { first.then_some(SourceEvent::All) })
///     }
/// }
/// ```
pub trait InvalidationSource: Send + 'static {
    /// The next event, or `None` once the source is closed.
    fn next(&mut self) -> NextEvent<'_>;
}

impl InvalidationSource for mpsc::Receiver<SourceEvent> {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(self.recv())
    }
}

impl InvalidationSource for mpsc::UnboundedReceiver<SourceEvent> {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(self.recv())
    }
}

impl InvalidationSource for Box<dyn InvalidationSource> {
    fn next(&mut self) -> NextEvent<'_> {
        (**self).next()
    }
}

/// `source`, boxed (what a registered source fn's result becomes).
///
/// ```
/// let (_changes, source) = tokio::sync::mpsc::unbounded_channel();
/// let boxed: Box<dyn cacheme::sources::InvalidationSource> = cacheme::sources::boxed(source);
/// # drop(boxed);
/// ```
pub fn boxed(source: impl InvalidationSource) -> Box<dyn InvalidationSource> {
    Box::new(source)
}

/// Feed `source`'s events into invalidations of `tag` on `cache`, on a task
/// of the current tokio runtime, until the source closes.
///
/// An invalidation that fails (Redis unreachable...) is logged and retried
/// with a growing pause (50 ms to 5 s) until it succeeds; later events wait
/// for it, so none is dropped or reordered.
///
/// # Panics
///
/// Outside a tokio runtime, like `tokio::spawn`.
///
/// ```
/// use cacheme::sources::{self, SourceEvent};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = cacheme::Cache::builder().build().expect("memory store");
/// let (changes, source) = tokio::sync::mpsc::unbounded_channel();
/// let task = sources::connect(&cache, "cats", source);
/// changes.send(SourceEvent::All).expect("connected");
/// drop(changes); // closes the source: the task ends
/// task.await.expect("the task does not panic");
/// # }
/// ```
pub fn connect(
    cache: &Cache,
    tag: impl Into<String>,
    source: impl InvalidationSource,
) -> JoinHandle<()> {
    let cache = cache.clone();
    let tag = tag.into();
    let mut source = source;
    tokio::spawn(async move {
        while let Some(event) = source.next().await {
            invalidate(&cache, &tag, &event).await;
        }
        tracing::debug!(tag, "cacheme: invalidation source closed");
    })
}

/// The first pause before retrying a failed invalidation, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Run the invalidation `event` asks for, retrying until it succeeds.
async fn invalidate(cache: &Cache, tag: &str, event: &SourceEvent) {
    let invalidation = match event {
        SourceEvent::All => cache.create_invalidation().tag(tag),
        SourceEvent::Keys(keys) => keys.iter().fold(cache.create_invalidation(), |inv, key| {
            inv.key(key.as_str())
        }),
        SourceEvent::InvalidKeys(keys) => {
            keys.iter().fold(cache.create_invalidation(), |inv, key| {
                inv.invalid_key(key.as_str())
            })
        }
    };
    let mut pause = RETRY_FIRST;
    let mut attempt = 1u32;
    loop {
        match invalidation.clone().run().await {
            Ok(count) => {
                if attempt > 1 {
                    tracing::info!(
                        tag,
                        ?event,
                        attempt,
                        "cacheme: source invalidation done after retrying"
                    );
                }
                tracing::debug!(tag, ?event, count, "cacheme: source invalidation");
                return;
            }
            Err(error) => {
                tracing::warn!(
                    tag, ?event, attempt, error = %crate::error::Chain(&error), retry_in = ?pause,
                    "cacheme: source invalidation failed; retrying"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// A Redis pub/sub channel as an invalidation source. Publish messages in
/// the format of [`SourceEvent::parse_message`] (`all`, `key <k>`,
/// `invalid_key <k>`, one per line) from any process:
///
/// ```text
/// PUBLISH cat-changes "key cat:1"
/// ```
///
/// The subscription runs on its own thread over a plain connection (like the
/// cache's own fill subscriber) and is started by the first
/// [`next`](InvalidationSource::next). When it drops, it is re-established;
/// since messages may have been missed meanwhile, an [`SourceEvent::All`]
/// is then emitted (turn that off with
/// [`all_on_reconnect(false)`](Self::all_on_reconnect)). Messages that do
/// not parse are logged and skipped.
///
/// ```
/// use cacheme::sources::RedisChannelSource;
/// let source = RedisChannelSource::new("redis://127.0.0.1:6379/", "cat-changes")
///     .expect("a valid url");
/// # drop(source);
/// ```
pub struct RedisChannelSource {
    client: redis::Client,
    channel: String,
    all_on_reconnect: bool,
    events: Option<mpsc::Receiver<SourceEvent>>,
}

impl std::fmt::Debug for RedisChannelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannelSource")
            .field("channel", &self.channel)
            .field("all_on_reconnect", &self.all_on_reconnect)
            .field("started", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

/// How long a read of the subscription blocks before the thread checks
/// whether its source was dropped.
const POLL: Duration = Duration::from_millis(250);
/// The pause between reconnection attempts.
const RECONNECT: Duration = Duration::from_millis(200);

impl RedisChannelSource {
    /// A source listening on `channel` of the Redis server at `redis_url`.
    /// Fails only if the URL is not a Redis URL; connecting happens later.
    pub fn new(redis_url: &str, channel: impl Into<String>) -> Result<Self> {
        let client = redis::Client::open(redis_url).map_err(|source| Error::Connect {
            url: crate::settings::redact(redis_url),
            source,
        })?;
        Ok(Self::from_client(client, channel))
    }

    /// A source listening on `channel` through `client`.
    ///
    /// ```
    /// use cacheme::sources::RedisChannelSource;
    /// let client = redis::Client::open("redis://127.0.0.1/").expect("a valid url");
    /// let source = RedisChannelSource::from_client(client, "cat-changes").all_on_reconnect(false);
    /// # drop(source);
    /// ```
    pub fn from_client(client: redis::Client, channel: impl Into<String>) -> Self {
        RedisChannelSource {
            client,
            channel: channel.into(),
            all_on_reconnect: true,
            events: None,
        }
    }

    /// Whether to emit [`SourceEvent::All`] after the subscription was lost
    /// and re-established (default: true).
    pub fn all_on_reconnect(mut self, all: bool) -> Self {
        self.all_on_reconnect = all;
        self
    }

    fn start(&mut self) -> &mut mpsc::Receiver<SourceEvent> {
        self.events.get_or_insert_with(|| {
            let (events, receiver) = mpsc::channel(64);
            let client = self.client.clone();
            let channel = self.channel.clone();
            let all_on_reconnect = self.all_on_reconnect;
            let spawned = std::thread::Builder::new()
                .name("cacheme-source".into())
                .spawn(move || subscribe(&client, &channel, all_on_reconnect, &events));
            if let Err(error) = spawned {
                // The sender is gone with the closure: `next` returns None.
                tracing::warn!(%error, "cacheme: cannot start the thread of a Redis channel source");
            }
            receiver
        })
    }
}

impl InvalidationSource for RedisChannelSource {
    fn next(&mut self) -> NextEvent<'_> {
        Box::pin(async move { self.start().recv().await })
    }
}

/// The source's thread: subscribe, forward events, re-subscribe when the
/// subscription drops; stop when the source is dropped.
fn subscribe(
    client: &redis::Client,
    channel: &str,
    all_on_reconnect: bool,
    events: &mpsc::Sender<SourceEvent>,
) {
    let mut subscribed_before = false;
    let mut reported = false;
    while !events.is_closed() {
        let mut on_subscribed = || {
            if subscribed_before && all_on_reconnect {
                tracing::info!(
                    channel,
                    "cacheme: invalidation channel re-subscribed; invalidating the whole tag, \
                     since messages may have been missed"
                );
                if events.blocking_send(SourceEvent::All).is_err() {
                    return false;
                }
            }
            subscribed_before = true;
            reported = false;
            true
        };
        match listen(client, channel, events, &mut on_subscribed) {
            Ok(()) => return,
            Err(error) => {
                if !reported {
                    tracing::warn!(%error, channel, "cacheme: invalidation channel subscription lost; reconnecting");
                    reported = true;
                }
                std::thread::sleep(RECONNECT);
            }
        }
    }
}

/// Subscribe and forward until the source is dropped (Ok) or the connection
/// fails (Err).
fn listen(
    client: &redis::Client,
    channel: &str,
    events: &mpsc::Sender<SourceEvent>,
    on_subscribed: &mut dyn FnMut() -> bool,
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(channel)?;
    pubsub.set_read_timeout(Some(POLL))?;
    if !on_subscribed() {
        return Ok(());
    }
    loop {
        if events.is_closed() {
            return Ok(());
        }
        let message = match pubsub.get_message() {
            Ok(message) => message,
            Err(error) if error.is_timeout() => continue,
            Err(error) => return Err(error),
        };
        let payload = String::from_utf8_lossy(message.get_payload_bytes());
        match SourceEvent::parse_message(&payload) {
            Ok(parsed) => {
                for event in parsed {
                    if events.blocking_send(event).is_err() {
                        return Ok(());
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(channel, %reason, "cacheme: skipping a message on an invalidation channel")
            }
        }
    }
}

/// A source registered for a tag by `#[cacheme(invalid_sources = [..])]`
/// (used by the code the macro generates; not public API).
///
/// ```
/// use cacheme::sources::{self, SourceRegistration, SourceEvent};
///
/// fn user_changes() -> tokio::sync::mpsc::UnboundedReceiver<SourceEvent> {
///     tokio::sync::mpsc::unbounded_channel().1
/// }
///
/// // What `#[cacheme(tag = "users", invalid_sources = [user_changes])]` submits:
/// static REGISTRATION: SourceRegistration =
///     SourceRegistration::new("users", "user_changes", || sources::boxed(user_changes()));
/// assert_eq!(REGISTRATION.tag, "users");
/// ```
#[doc(hidden)]
#[derive(Debug)]
pub struct SourceRegistration {
    /// The tag the source's events invalidate.
    pub tag: &'static str,
    /// The source fn's name, for logs.
    pub name: &'static str,
    /// Makes the source.
    pub make: fn() -> Box<dyn InvalidationSource>,
}

impl SourceRegistration {
    /// A registration (used by the macro with `inventory::submit!`).
    pub const fn new(
        tag: &'static str,
        name: &'static str,
        make: fn() -> Box<dyn InvalidationSource>,
    ) -> Self {
        SourceRegistration { tag, name, make }
    }
}

inventory::collect!(SourceRegistration);

/// Every source registered with `#[cacheme(invalid_sources = [..])]`
/// (not public API).
///
/// ```
/// for source in cacheme::sources::registered_sources() {
///     println!("{} invalidates the tag {}", source.name, source.tag);
/// }
/// ```
#[doc(hidden)]
pub fn registered_sources() -> impl Iterator<Item = &'static SourceRegistration> {
    inventory::iter::<SourceRegistration>.into_iter()
}

impl Cache {
    /// Start every registered invalidation source (`#[cacheme(invalid_sources
    /// = [..])]`), each [connected](connect) to its fn's tag on this cache.
    /// Call it at start-up, inside a tokio runtime; abort the returned tasks
    /// to stop them. Only the first call starts anything: later calls on the
    /// same cache return no tasks, so each source runs once.
    ///
    /// A registered source fn takes no arguments. A source that needs an
    /// application object (a database pool, a channel receiver) is started
    /// with [`connect`] instead, which takes any source value:
    /// `cacheme::sources::connect(&cache, "users", my_source)`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = cacheme::Cache::builder().build().expect("memory store");
    /// let tasks = cache.connect_sources();
    /// # for task in tasks { task.abort(); }
    /// # }
    /// ```
    pub fn connect_sources(&self) -> Vec<JoinHandle<()>> {
        if self
            .inner
            .sources_connected
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::debug!("cacheme: connect_sources called again; the sources already run");
            return Vec::new();
        }
        registered_sources()
            .map(|registration| {
                tracing::debug!(
                    source = registration.name,
                    tag = registration.tag,
                    "cacheme: connecting an invalidation source"
                );
                connect(self, registration.tag, (registration.make)())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for event in [
            SourceEvent::All,
            SourceEvent::Keys(vec!["a b".into(), "c:*".into()]),
            SourceEvent::InvalidKeys(vec!["user:1".into()]),
        ] {
            assert_eq!(
                SourceEvent::parse_message(&event.to_message()),
                Ok(vec![event])
            );
        }
    }

    #[test]
    fn bad_messages_are_refused() {
        for bad in ["", "\n", "key", "key ", "all now", "keys a", "invalid_key"] {
            assert!(SourceEvent::parse_message(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn channel_events_invalidate_the_tag() {
        let cache = Cache::builder().build().expect("memory store");
        let value: u32 = cache
            .lookup("k")
            .load(|| async { Ok::<_, std::convert::Infallible>(1) })
            .await
            .expect("infallible");
        assert_eq!(value, 1);
        let (changes, source) = mpsc::unbounded_channel();
        let task = connect(&cache, "lookup", source);
        changes.send(SourceEvent::All).expect("connected");
        drop(changes);
        task.await.expect("no panic");
        assert_eq!(cache.lookup::<u32>("k").get().await, None);
    }
}
