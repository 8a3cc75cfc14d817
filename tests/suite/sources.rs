//! Invalidation sources (the seed's `invalid_sources`): a Redis pub/sub
//! channel registered on a `#[cacheme]` fn and started with
//! `Cache::connect_sources`, an app channel connected by hand, a
//! subscription that survives a Redis restart, and an invalidation retried
//! until Redis answers again. Against real redis-servers.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::fixtures::*;
use cacheme::sources::{self, InvalidationSource, RedisChannelSource, SourceEvent};
use cacheme::{Cache, cacheme};
use cacheme_test_support::RedisServer;

/// The cache of the registered fn below.
fn source_cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(cache)
}

/// A source fn: the Redis channel `cat-changes` of the binary's server.
fn cat_changes() -> RedisChannelSource {
    RedisChannelSource::new(&server().url(), "cat-changes").expect("a valid url")
}

/// A source fn returning a boxed source: a channel nobody sends on.
fn quiet() -> Box<dyn InvalidationSource> {
    let (_, source) = tokio::sync::mpsc::unbounded_channel::<SourceEvent>();
    sources::boxed(source)
}

static CAT_LOADS: Counter = Counter::new();

/// "invalid_sources: something cause invalidation": the sources of this
/// fn's tag are registered with it.
#[cacheme(
    key = format!("cat:{id}"),
    tag = "source_cats",
    invalid_sources = [cat_changes, quiet],
    cache = source_cache()
)]
async fn get_cat(id: u64) -> String {
    format!("cat {id} v{}", CAT_LOADS.hit())
}

/// Publish `message` on `channel` until a subscriber receives it.
fn publish(server: &RedisServer, channel: &str, message: &str) {
    let mut conn = server.connection();
    wait_until("the source is subscribed", || {
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query(&mut conn)
            .expect("PUBLISH");
        receivers > 0
    });
}

/// Whether `key` has a value that a stale-off reader is served.
async fn is_fresh(cache: &Cache, key: &str) -> bool {
    cache
        .lookup::<String>(key)
        .stale(false)
        .get()
        .await
        .is_some()
}

/// Wait until `ready` resolves to true, for at most `limit`.
async fn eventually<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_redis_channel_invalidates_the_fns_tag() {
    let mut registered: Vec<_> = sources::registered_sources()
        .map(|source| (source.tag, source.name))
        .collect();
    registered.sort();
    assert_eq!(
        registered,
        [("source_cats", "cat_changes"), ("source_cats", "quiet")]
    );
    let cache = source_cache();
    let tasks = cache.connect_sources();
    assert_eq!(tasks.len(), 2);

    assert_eq!(get_cat(1).await, "cat 1 v1");
    assert_eq!(get_cat(1).await, "cat 1 v1");
    assert!(is_fresh(cache, "cat:1").await);

    // Another process says cat 1 changed.
    publish(server(), "cat-changes", "key cat:1");
    eventually("cat:1 is invalidated", Duration::from_secs(5), || async {
        !is_fresh(cache, "cat:1").await
    })
    .await;
    assert_eq!(get_cat(1).await, "cat 1 v2");

    // `all`: every key of the tag is deleted.
    get_cat(2).await;
    publish(server(), "cat-changes", "all");
    eventually("the tag is emptied", Duration::from_secs(5), || async {
        // Deleted: not even a stale-on reader is served them.
        let stale_ok = |key| cache.lookup::<String>(key).stale(true).get();
        stale_ok("cat:1").await.is_none() && stale_ok("cat:2").await.is_none()
    })
    .await;
    assert_eq!(get_cat(2).await, "cat 2 v4");

    // A message that does not parse is skipped; the next one still works.
    publish(server(), "cat-changes", "drop table cats");
    publish(server(), "cat-changes", "key cat:2");
    eventually("cat:2 is invalidated", Duration::from_secs(5), || async {
        !is_fresh(cache, "cat:2").await
    })
    .await;
    for task in tasks {
        task.abort();
    }
}

#[cacheme(
    key = format!("Book:{}>owner", book.id),
    invalid_keys = format!("User:{}", book.owner_id),
    cache = cache
)]
async fn book_owner(cache: &Cache, book: &Book, loads: &Counter) -> Owner {
    Owner {
        id: book.owner_id,
        name: format!("owner v{}", loads.hit()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_channel_invalidates_dependency_groups() {
    let cache = cache();
    let loads = Counter::default();
    let book = Book {
        id: 100,
        owner_id: 200,
    };
    let (changes, source) = tokio::sync::mpsc::channel(8);
    let task = sources::connect(&cache, "book_owner", source);

    assert_eq!(book_owner(&cache, &book, &loads).await.name, "owner v1");
    assert_eq!(book_owner(&cache, &book, &loads).await.name, "owner v1");
    changes
        .send(SourceEvent::InvalidKeys(vec!["User:200".into()]))
        .await
        .expect("connected");
    eventually(
        "Book:100>owner is invalidated",
        Duration::from_secs(5),
        || async { !is_fresh_owner(&cache, "Book:100>owner").await },
    )
    .await;
    assert_eq!(book_owner(&cache, &book, &loads).await.name, "owner v2");

    // Closing the channel ends the task.
    drop(changes);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task ends with its source")
        .expect("no panic");
}

async fn is_fresh_owner(cache: &Cache, key: &str) -> bool {
    cache
        .lookup::<Owner>(key)
        .stale(false)
        .get()
        .await
        .is_some()
}

async fn store(cache: &Cache, key: &str, value: &str) {
    let value = value.to_owned();
    cache
        .lookup::<String>(key)
        .load(|| async { Ok::<_, std::convert::Infallible>(value) })
        .await
        .expect("infallible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_survives_a_redis_restart() {
    // The source's own server; the cache is in memory.
    let mut server = RedisServer::start();
    let cache = Cache::builder().build().expect("memory store");
    let source = RedisChannelSource::new(&server.url(), "changes").expect("a valid url");
    let task = sources::connect(&cache, "lookup", source);

    store(&cache, "a", "1").await;
    publish(&server, "changes", "key a");
    eventually("a is invalidated", Duration::from_secs(5), || async {
        !is_fresh(&cache, "a").await
    })
    .await;

    // The subscription drops and comes back; messages may have been missed
    // meanwhile, so the whole tag is invalidated.
    store(&cache, "b", "2").await;
    assert!(is_fresh(&cache, "b").await);
    server.restart();
    eventually(
        "the tag is invalidated after the reconnection",
        Duration::from_secs(10),
        || async { cache.lookup::<String>("b").get().await.is_none() },
    )
    .await;

    // And it goes on listening.
    store(&cache, "c", "3").await;
    publish(&server, "changes", "key c");
    eventually("c is invalidated", Duration::from_secs(5), || async {
        !is_fresh(&cache, "c").await
    })
    .await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_invalidation_is_retried_until_redis_answers() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("a valid url");
    store(&cache, "k", "v").await;
    let (changes, source) = tokio::sync::mpsc::unbounded_channel();
    let task = sources::connect(&cache, "lookup", source);

    server.pause();
    changes
        .send(SourceEvent::Keys(vec!["k".into()]))
        .expect("connected");
    eventually("the invalidation fails", Duration::from_secs(5), || async {
        cache.stats().store_error > 0
    })
    .await;
    server.resume();
    // The failed attempt is retried until one succeeds (counted), and the
    // value is then marked stale in Redis.
    eventually(
        "a retried invalidation succeeds",
        Duration::from_secs(15),
        || async { cache.stats().invalidated >= 1 },
    )
    .await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg("CM:{k}")
        .query(&mut server.connection())
        .expect("GET");
    assert_eq!(
        stored.get(cacheme::__private::wire::STATE_OFFSET),
        Some(&cacheme::__private::wire::STALE)
    );
    task.abort();
}
