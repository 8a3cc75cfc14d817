//! The local tier: served from memory with no store command, kept coherent
//! across processes for every kind of invalidation, switched off while the
//! event subscription is down, bounded by its capacity.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use cacheme::{Cache, InvalidNode, Node, Pattern};
use cacheme_test_support::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Price {
    sku: u64,
    cents: u64,
}

/// A node with a local tier, in a dependency group and under a tag.
#[derive(Debug, Node)]
#[node(key = "price:{sku}", value = Price, tag = "prices", local_ttl = 60, local_capacity = 1000,
       invalid_nodes = Self::shop)]
struct PriceNode {
    sku: u64,
    shop: u64,
}

impl PriceNode {
    fn shop(&self) -> ShopInvalid {
        ShopInvalid { id: self.shop }
    }
}

#[derive(Debug, InvalidNode)]
#[invalid_node(key = "shop:{id}")]
struct ShopInvalid {
    id: u64,
}

/// A tiny tier, to see evictions.
#[derive(Debug, Node)]
#[node(key = "tiny:{id}", value = u64, local_capacity = 4)]
struct TinyNode {
    id: u64,
}

fn cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("cache")
}

fn get_calls(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

async fn load_price(cache: &Cache, sku: u64, shop: u64, cents: u64) -> Price {
    cache
        .objects::<PriceNode>()
        .get_or_load((sku, shop), || async move {
            Ok::<_, Infallible>(Price { sku, cents })
        })
        .await
        .expect("load")
}

/// Wait (bounded) for the local tier to be usable: it is off until the
/// event subscription is up.
async fn subscribed(cache: &Cache) {
    for _ in 0..400 {
        if cache.local_tiers_active() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the event subscription never came up");
}

/// Is `sku` in `cache`'s local tier? (A `get` that counts a local hit.)
async fn is_local(cache: &Cache, sku: u64, shop: u64) -> bool {
    let before = cache.stats().local_hit;
    let _ = cache.objects::<PriceNode>().get((sku, shop)).await;
    cache.stats().local_hit > before
}

/// A second read of a key is served from memory: no store command at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_hit_sends_nothing_to_redis() {
    let server = RedisServer::start();
    let cache = cache(&server);
    subscribed(&cache).await;
    load_price(&cache, 1, 9, 100).await;
    let gets = get_calls(&server);
    for _ in 0..10 {
        assert_eq!(load_price(&cache, 1, 9, 999).await.cents, 100);
    }
    assert_eq!(get_calls(&server), gets, "no GET reached the server");
    let stats = cache.stats();
    assert_eq!((stats.local_hit, stats.load), (10, 1), "{stats:?}");
}

/// Every kind of invalidation, made in one process, removes the entry from
/// the local tier of another (another `Cache`: its own subscriber, flights
/// and tiers), and the next read there gets the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalidation_reaches_other_processes() {
    let server = RedisServer::start();
    let (writer, reader) = (cache(&server), cache(&server));
    subscribed(&reader).await;
    subscribed(&writer).await;
    let kinds: [(&str, u64); 5] = [
        ("node", 1),
        ("invalid node", 2),
        ("tag", 3),
        ("pattern", 4),
        ("invalid_all", 5),
    ];
    for (kind, sku) in kinds {
        load_price(&reader, sku, 7, 100).await;
        assert!(is_local(&reader, sku, 7).await, "{kind}: cached locally");
        match kind {
            "node" => {
                writer
                    .objects::<PriceNode>()
                    .invalid((sku, 7))
                    .await
                    .expect("invalid");
            }
            "invalid node" => {
                writer
                    .invalid_objects::<ShopInvalid>()
                    .invalid(7)
                    .await
                    .expect("invalid");
            }
            "tag" => {
                writer.tag("prices").invalid().await.expect("tag");
            }
            "pattern" => {
                writer
                    .create_invalidation()
                    .pattern(Pattern::prefix("price:"))
                    .run()
                    .await
                    .expect("pattern");
            }
            _ => {
                writer
                    .objects::<PriceNode>()
                    .invalid_all()
                    .await
                    .expect("invalid_all");
            }
        }
        let mut gone = false;
        for _ in 0..400 {
            if !is_local(&reader, sku, 7).await {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(gone, "{kind}: the local entry was not removed");
        let fresh = reader
            .objects::<PriceNode>()
            .lookup(&PriceNode { sku, shop: 7 })
            .stale(false)
            .load(|| async move { Ok::<_, Infallible>(Price { sku, cents: 200 }) })
            .await
            .expect("load");
        assert_eq!(
            fresh.cents, 200,
            "{kind}: the next read is not the old value"
        );
    }
    assert!(reader.stats().local_invalidation >= 5);
}

/// The invalidating process's own tier is cleaned before the call returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invalidating_process_sees_it_at_once() {
    let server = RedisServer::start();
    let cache = cache(&server);
    subscribed(&cache).await;
    load_price(&cache, 1, 7, 100).await;
    assert!(is_local(&cache, 1, 7).await);
    cache
        .objects::<PriceNode>()
        .invalid((1, 7))
        .await
        .expect("invalid");
    assert!(!is_local(&cache, 1, 7).await);
}

/// While the subscription is down (Redis gone), nothing is served from the
/// local tier: it may have missed events. It comes back with Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_switches_the_tier_off() {
    let mut server = RedisServer::start();
    let cache = cache(&server);
    subscribed(&cache).await;
    load_price(&cache, 1, 7, 100).await;
    assert!(is_local(&cache, 1, 7).await);
    server.kill();
    let mut off = false;
    for _ in 0..400 {
        if !cache.local_tiers_active() {
            off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(off, "the tier stayed on without a subscription");
    let price = load_price(&cache, 1, 7, 300).await;
    assert_eq!(
        price.cents, 300,
        "fails open: the loader's value, not the local one"
    );
    server.restart();
    subscribed(&cache).await;
    load_price(&cache, 2, 7, 100).await;
    assert!(
        is_local(&cache, 2, 7).await,
        "back once the subscription is"
    );
}

/// The tier holds at most its capacity, and counts what it evicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_is_bounded_and_counts_evictions() {
    let cache = Cache::builder().build().expect("memory");
    for id in 0..100 {
        cache
            .objects::<TinyNode>()
            .get_or_load(id, || async move { Ok::<_, Infallible>(id) })
            .await
            .expect("load");
    }
    let stats = cache.stats();
    assert!(stats.local_eviction >= 90, "{stats:?}");
}

/// The child process of the two-process test: reads keys into its local
/// tier, then, for each invalidation the parent announces on stdin, checks
/// that its entry goes away and that the next read is the new value.
#[test]
fn coherence_child() {
    let Ok(url) = std::env::var("CACHEME_COHERENCE_CHILD_URL") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let cache = Cache::builder().redis_url(url).build().expect("cache");
        subscribed(&cache).await;
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.expect("stdin");
            let mut words = line.split_whitespace();
            let (Some(command), Some(sku)) = (words.next(), words.next()) else {
                continue;
            };
            let sku: u64 = sku.parse().expect("a sku");
            match command {
                "load" => {
                    load_price(&cache, sku, 7, 100).await;
                    assert!(is_local(&cache, sku, 7).await);
                    println!("loaded {sku}");
                }
                "check" => {
                    let mut gone = false;
                    for _ in 0..500 {
                        if !is_local(&cache, sku, 7).await {
                            gone = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let fresh = cache
                        .objects::<PriceNode>()
                        .lookup(&PriceNode { sku, shop: 7 })
                        .stale(false)
                        .load(|| async move { Ok::<_, Infallible>(Price { sku, cents: 200 }) })
                        .await
                        .expect("load");
                    println!("checked {sku} gone={gone} cents={}", fresh.cents);
                }
                _ => {}
            }
            std::io::stdout().flush().expect("flush");
        }
    });
}

/// Two real processes: every kind of invalidation made here reaches the
/// child's local tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalidation_reaches_another_real_process() {
    let server = RedisServer::start();
    let cache = cache(&server);
    subscribed(&cache).await;
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "local_tier::coherence_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHEME_COHERENCE_CHILD_URL", server.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut expect = move |prefix: String| -> String {
        // (libtest may print `test local_tier::coherence_child ... ` on the same line.)
        for line in from_child.by_ref() {
            let line = line.expect("child output");
            if let Some(at) = line.find(&prefix) {
                return line[at..].to_owned();
            }
        }
        panic!("the child stopped before `{prefix}`");
    };
    for (kind, sku) in [
        ("node", 11),
        ("invalid node", 12),
        ("tag", 13),
        ("pattern", 14),
        ("invalid_all", 15),
    ] {
        writeln!(to_child, "load {sku}").expect("to child");
        expect(format!("loaded {sku}"));
        let removed = match kind {
            "node" => cache.objects::<PriceNode>().invalid((sku, 7)).await,
            "invalid node" => cache
                .invalid_objects::<ShopInvalid>()
                .invalid(7)
                .await
                .map(|()| 1),
            "tag" => cache.tag("prices").invalid().await.map(|()| 1),
            "pattern" => {
                cache
                    .create_invalidation()
                    .pattern(Pattern::literal(&format!("price:{sku}")))
                    .run()
                    .await
            }
            _ => cache.objects::<PriceNode>().invalid_all().await.map(|()| 1),
        };
        assert!(removed.expect("invalidation") >= 1, "{kind}");
        writeln!(to_child, "check {sku}").expect("to child");
        let line = expect(format!("checked {sku}"));
        assert_eq!(line, format!("checked {sku} gone=true cents=200"), "{kind}");
    }
    drop(to_child);
    let status = child.wait().expect("child exit");
    assert!(status.success(), "the child failed");
}

/// `#[cacheme(local_ttl = .., local_capacity = ..)]` gives a function its
/// own local tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decorated_functions_have_local_tiers_too() {
    use cacheme::cacheme;

    #[cacheme(cache = cache, key = format!("rate:{id}"), local_ttl = 60, local_capacity = 100)]
    async fn rate(cache: &Cache, id: u64) -> u64 {
        id * 10
    }

    let server = RedisServer::start();
    let cache = cache(&server);
    subscribed(&cache).await;
    assert_eq!(rate(&cache, 4).await, 40);
    let gets = get_calls(&server);
    assert_eq!(rate(&cache, 4).await, 40);
    assert_eq!(get_calls(&server), gets, "served from the local tier");
    assert_eq!(cache.stats().local_hit, 1);
    cache
        .create_invalidation()
        .key("rate:4")
        .run()
        .await
        .expect("invalidation");
    assert_eq!(rate(&cache, 4).await, 40);
    assert_eq!(cache.stats().local_hit, 1, "the invalidation removed it");
}
