//! Redis Cluster: what only a cluster can show. The suites that run on one
//! server run on the cluster too (`on_every_store!` in nodes.rs, batch.rs,
//! invalidation.rs and correctness.rs); here are the decorator, the herd
//! across processes, local-tier coherence, which slots a node's operations
//! touch, failover under load and live resharding.
//!
//! The tests that kill or move nodes start a cluster of their own; the
//! others share the binary's cluster (`fixtures::cluster()`), each under a
//! key prefix of its own.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheme::{Cache, Node, Pattern, cacheme};
use cacheme_test_support::RedisCluster;
use serde::{Deserialize, Serialize};

use crate::fixtures::*;

/// Wait until the cache's event subscription is up (bounded).
async fn subscribed(cache: &Cache) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.local_tiers_active() {
        assert!(
            Instant::now() < deadline,
            "the event subscription never came up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn cache_on(cluster: &RedisCluster, prefix: &str) -> Cache {
    Cache::builder()
        .cluster_urls(cluster.node_urls())
        .prefix(prefix)
        .build()
        .expect("valid cluster urls")
}

// ------------------------------------------------------------ decorator --

#[derive(Serialize)]
struct Owners {
    #[serde(skip)]
    cache: Cache,
    #[serde(skip)]
    loads: Counter,
}

impl Owners {
    #[cacheme(key = format!("Book:{}>owner", book.id), tag = "cluster_owners",
              invalid_keys = [OwnerInvalid { id: book.owner_id }], cache = self.cache)]
    async fn owner(&self, book: &Book) -> Owner {
        let version = self.loads.hit();
        Owner {
            id: book.owner_id,
            name: format!("owner v{version}"),
        }
    }

    #[cacheme(node = CatInfoNode { id: cat.id }, cache = self.cache)]
    fn info_blocking(&self, cat: &Cat) -> CatInfo {
        CatInfo::of(cat, self.loads.hit())
    }
}

/// `#[cacheme]` on the cluster: keys, tags, invalid keys, a node, blocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decorator_on_the_cluster() {
    let owners = Arc::new(Owners {
        cache: cluster_cache(),
        loads: Counter::default(),
    });
    let books: Vec<Book> = (0..20)
        .map(|id| Book {
            id,
            owner_id: id % 4,
        })
        .collect();
    for book in &books {
        assert_eq!(
            owners.owner(book).await.name,
            format!("owner v{}", book.id + 1)
        );
    }
    for book in &books {
        assert_eq!(
            owners.owner(book).await.name,
            format!("owner v{}", book.id + 1),
            "a hit"
        );
    }
    assert_eq!(owners.loads.get(), 20);
    // Owner 1's five books are stale; a stale-on caller refreshes one of them.
    owners
        .cache
        .invalid_objects::<OwnerInvalid>()
        .invalid(1)
        .await
        .expect("group");
    let _ = owners.owner(&books[1]).await;
    assert_eq!(owners.loads.get(), 21, "one refresh");
    // The tag deletes all twenty, over every primary.
    owners
        .cache
        .tag("cluster_owners")
        .invalid()
        .await
        .expect("tag");
    for book in &books {
        let _ = owners.owner(book).await;
    }
    assert_eq!(owners.loads.get(), 41);

    let blocking = owners.clone();
    let infos = tokio::task::spawn_blocking(move || {
        let tom = cat(1077, "Tom"); // (77 is the decorator hook test's own id)
        (blocking.info_blocking(&tom), blocking.info_blocking(&tom))
    })
    .await
    .expect("blocking");
    assert_eq!(infos.0, infos.1, "the second call is a hit");
    assert_one_slot_per_op(&owners.cache);
}

// ----------------------------------------------------------------- herd --

/// Two processes (two caches) × 50 tasks on each of 8 cold keys spread
/// over the primaries: each key is loaded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_herd_loads_once_across_processes() {
    let fx = Fixture::cluster();
    let other = fx.other_process();
    subscribed(&fx.cache).await;
    subscribed(&other).await;
    let loads: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for cache in [fx.cache.clone(), other.clone()] {
        for task in 0..50u64 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..8u64 {
                    let key = (task + round) % 8;
                    let loads = loads.clone();
                    let value = cache
                        .lookup::<u64>(&format!("herd:{key}"))
                        .load(|| async move {
                            loads[key as usize].fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Ok::<_, Infallible>(key * 10)
                        })
                        .await
                        .expect("infallible");
                    assert_eq!(value, key * 10);
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    let slots: BTreeSet<u16> = (0..8)
        .map(|key| hash_slot(&value_key(&fx.cache, &format!("herd:{key}"))))
        .collect();
    let primaries: BTreeSet<_> = slots
        .iter()
        .map(|slot| cluster().primary_of_slot(*slot))
        .collect();
    assert!(
        primaries.len() >= 2,
        "the keys are spread over primaries: {primaries:?}"
    );
    let per_key: Vec<u64> = loads.iter().map(|l| l.load(Ordering::SeqCst)).collect();
    assert_eq!(per_key, vec![1; 8], "loads per key");
    assert_one_slot_per_op(&fx.cache);
    assert_one_slot_per_op(&other);
}

// ----------------------------------------------------------- local tier --

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fare {
    route: u64,
    cents: u64,
}

#[derive(Debug, Node)]
#[node(key = "fare:{route}", value = Fare, tag = "cluster_fares", local_ttl = 60,
       local_capacity = 1000, invalid_nodes = Self::line)]
struct FareNode {
    route: u64,
    line: u64,
}

impl FareNode {
    fn line(&self) -> OwnerInvalid {
        OwnerInvalid {
            id: 1000 + self.line,
        }
    }
}

async fn is_local(cache: &Cache, route: u64, line: u64) -> bool {
    let before = cache.stats().local_hit;
    let _ = cache.objects::<FareNode>().get((route, line)).await;
    cache.stats().local_hit > before
}

/// Every kind of invalidation by one process empties the local tier of
/// another, through the cluster's broadcast channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tiers_stay_coherent_across_processes() {
    let fx = Fixture::cluster();
    let (writer, reader) = (fx.cache.clone(), fx.other_process());
    subscribed(&writer).await;
    subscribed(&reader).await;
    for (kind, route) in [
        ("node", 1),
        ("group", 2),
        ("tag", 3),
        ("pattern", 4),
        ("all", 5),
    ] {
        let load = |cents: u64| {
            reader
                .objects::<FareNode>()
                .lookup(&FareNode { route, line: 7 })
                .stale(false)
                .load(move || async move { Ok::<_, Infallible>(Fare { route, cents }) })
        };
        assert_eq!(load(100).await.expect("load").cents, 100);
        assert!(is_local(&reader, route, 7).await, "{kind}: cached locally");
        let objects = writer.objects::<FareNode>();
        match kind {
            "node" => {
                objects.invalid((route, 7)).await.expect("node");
            }
            "group" => {
                let users = writer.invalid_objects::<OwnerInvalid>();
                users.invalid(1007).await.expect("group");
            }
            "tag" => writer.tag("cluster_fares").invalid().await.expect("tag"),
            "pattern" => {
                let run = writer
                    .create_invalidation()
                    .pattern(Pattern::prefix("fare:"))
                    .run();
                run.await.expect("pattern");
            }
            _ => objects.invalid_all().await.expect("invalid_all"),
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_local(&reader, route, 7).await {
            assert!(
                Instant::now() < deadline,
                "{kind}: the local entry was not removed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(
            load(200).await.expect("load").cents,
            200,
            "{kind}: not the old value"
        );
    }
    assert_one_slot_per_op(&writer);
    assert_one_slot_per_op(&reader);
}

// ------------------------------------------------------------ one slot --

/// `CROSSSLOT` errors counted by every node (`INFO errorstats`).
fn server_cross_slot_errors(cluster: &RedisCluster) -> u64 {
    cluster
        .primaries()
        .into_iter()
        .map(|node| {
            let info: String = redis::cmd("INFO")
                .arg("errorstats")
                .query(&mut cluster.node_connection(node))
                .expect("INFO errorstats");
            info.lines()
                .find_map(|line| line.strip_prefix("errorstat_CROSSSLOT:count="))
                .and_then(|count| count.trim().parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// The keys under `prefix` on every primary.
fn keys_with_prefix(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    let glob = format!("{}*", cacheme::key::escape_glob(prefix));
    let mut keys = Vec::new();
    for node in cluster.primaries() {
        let found: Vec<String> = redis::cmd("KEYS")
            .arg(&glob)
            .query(&mut cluster.node_connection(node))
            .expect("KEYS");
        keys.extend(found);
    }
    keys.sort();
    keys
}

/// A key, its lease and what its group and tag invalidations write: shown
/// with `CLUSTER KEYSLOT`, a node's operations touch the key's slot and
/// the `{inv}` slot, never two slots in one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_operations_touch_one_slot_each() {
    let fx = Fixture::cluster();
    let cache = &fx.cache;
    let cluster = cluster();
    let owned = cache.objects::<OwnedCatNode>();
    let value = value_key(cache, "owner:7:cat:1");
    let slot = cluster.keyslot(&value);
    assert_eq!(
        cluster.keyslot(&format!("{value}:lease")),
        slot,
        "the lease"
    );
    let inv = |name: &str| cluster.keyslot(&format!("{}{{inv}}:{name}", cache.prefix()));
    let inv_slot = inv("seq");
    assert_eq!(
        (inv("log"), inv("events")),
        (inv_slot, inv_slot),
        "the sequence's home"
    );

    // A cold load (claim, fill), a refresh under the lease key, and every
    // kind of invalidation.
    let load = |name: &'static str| {
        owned
            .lookup(&OwnedCatNode { owner_id: 7, id: 1 })
            .stale(true)
            .load(move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, Infallible>(cat(1, name))
            })
    };
    load("Tom").await.expect("load");
    owned.invalid((7, 1)).await.expect("key");
    let refresh = tokio::spawn(load("Tom II"));
    // While the refresh runs, its lease key is in the value's slot.
    let lease = format!("{value}:lease");
    wait_until_async("the refresh holds the lease key", || {
        keys_with_prefix(cluster, cache.prefix()).contains(&lease)
    })
    .await;
    let stored = keys_with_prefix(cluster, cache.prefix());
    let slots: BTreeSet<u16> = stored.iter().map(|key| cluster.keyslot(key)).collect();
    assert_eq!(slots, BTreeSet::from([slot, inv_slot]), "keys: {stored:?}");
    refresh.await.expect("task").expect("refresh");
    cache
        .invalid_objects::<UserInvalid>()
        .invalid(7)
        .await
        .expect("group");
    cache.tag("cats").invalid().await.expect("tag");
    cache
        .create_invalidation()
        .pattern(Pattern::prefix("owner:7:"))
        .run()
        .await
        .expect("pattern");
    load("Tom III").await.expect("load");

    let stored = keys_with_prefix(cluster, cache.prefix());
    for key in &stored {
        let key_slot = cluster.keyslot(key);
        assert!(
            key_slot == slot || key_slot == inv_slot,
            "{key} is in slot {key_slot}"
        );
    }
    assert_one_slot_per_op(cache);
    assert_eq!(server_cross_slot_errors(cluster), 0, "CROSSSLOT on a node");
}

// ------------------------------------------------- failover, resharding --

/// What the load of a failover or resharding test saw.
#[derive(Debug, Default)]
struct Soak {
    calls: AtomicU64,
    wrong_values: AtomicU64,
    errors_to_caller: AtomicU64,
    invalidations: AtomicU64,
    invalidation_errors: AtomicU64,
}

/// 64 tasks reading, loading and invalidating `keys` until `stop`. The
/// source of each key is a version; an invalidation bumps it, then
/// invalidates (durably: a replica has it, so a failover cannot lose it).
/// A call that starts after an invalidation of version v returned must
/// be served v or newer.
fn spawn_soak(
    cache: &Cache,
    keys: Arc<Vec<String>>,
    soak: Arc<Soak>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let versions: Arc<HashMap<String, (AtomicU64, AtomicU64)>> = Arc::new(
        keys.iter()
            .map(|key| (key.clone(), (AtomicU64::new(0), AtomicU64::new(0))))
            .collect(),
    );
    (0..64u64)
        .map(|task| {
            let (cache, keys, soak, stop, versions) = (
                cache.clone(),
                keys.clone(),
                soak.clone(),
                stop.clone(),
                versions.clone(),
            );
            tokio::spawn(async move {
                let mut round = task;
                while !stop.load(Ordering::SeqCst) {
                    round += 7;
                    let key = &keys[(round as usize) % keys.len()];
                    let (source, completed) = &versions[key];
                    if task % 16 == 0 {
                        let version = source.fetch_add(1, Ordering::SeqCst) + 1;
                        soak.invalidations.fetch_add(1, Ordering::Relaxed);
                        let run = cache
                            .create_invalidation()
                            .key(key.as_str())
                            .durable(1, Duration::from_millis(500))
                            .run();
                        match run.await {
                            Ok(_) => {
                                let _ = completed.fetch_max(version, Ordering::SeqCst);
                            }
                            Err(_) => {
                                let _ = soak.invalidation_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let floor = completed.load(Ordering::SeqCst);
                    let served = cache
                        .lookup::<u64>(key)
                        .stale(false)
                        .load(|| async {
                            let version = source.load(Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok::<_, Infallible>(version)
                        })
                        .await;
                    soak.calls.fetch_add(1, Ordering::Relaxed);
                    match served {
                        Ok(version) if version < floor => {
                            let _ = soak.wrong_values.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            let _ = soak.errors_to_caller.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}

/// Kill the primary of a hot key under 64 tasks of reads, loads and
/// invalidations: its replica is promoted, callers get no error and no
/// wrong value, and hits on the key resume (bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_fails_over_without_errors() {
    let cluster = Arc::new(RedisCluster::start());
    let cache = cache_on(&cluster, "fo:");
    subscribed(&cache).await;
    let keys: Arc<Vec<String>> = Arc::new((0..32).map(|i| format!("hot:{i}")).collect());
    let (soak, stop) = (Arc::new(Soak::default()), Arc::new(AtomicBool::new(false)));
    let tasks = spawn_soak(&cache, keys.clone(), soak.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let hot = value_key(&cache, "hot:0");
    let killed = tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || cluster.kill_primary_of(&hot)
    })
    .await
    .expect("kill");
    let killed_at = Instant::now();
    let promoted_after = tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || cluster.wait_for_failover(killed)
    })
    .await
    .expect("failover");
    let promoted_at = killed_at + promoted_after;
    // Hits resume: a `get` (which never loads) finds the reloaded value.
    let hits_before = cache.stats().hit;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if cache.lookup::<u64>("hot:0").get().await.is_some() && cache.stats().hit > hits_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hits did not resume within 10 s of the promotion"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resumed = promoted_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("soak task");
    }
    let stats = cache.stats();
    println!(
        "failover: promoted after {promoted_after:?}, hits resumed {resumed:?} after the promotion; \
         {soak:?}; {stats:?}"
    );
    assert_eq!(soak.errors_to_caller.load(Ordering::SeqCst), 0, "{soak:?}");
    assert_eq!(soak.wrong_values.load(Ordering::SeqCst), 0, "{soak:?}");
    assert!(soak.calls.load(Ordering::SeqCst) > 1000, "{soak:?}");
    assert_one_slot_per_op(&cache);
}

/// Move the slots of hot keys between primaries (live, key by key, so
/// that callers meet `ASK` and `TRYAGAIN`) while they are loaded and
/// invalidated: no wrong value, no stale set, no lost invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_loses_nothing() {
    let cluster = Arc::new(RedisCluster::start());
    let cache = cache_on(&cluster, "rs:");
    subscribed(&cache).await;
    let keys: Arc<Vec<String>> = Arc::new((0..16).map(|i| format!("hot:{i}")).collect());
    let (soak, stop) = (Arc::new(Soak::default()), Arc::new(AtomicBool::new(false)));
    let tasks = spawn_soak(&cache, keys.clone(), soak.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let moved = tokio::task::spawn_blocking({
        let (cluster, keys, prefix) = (cluster.clone(), keys.clone(), cache.prefix().to_owned());
        move || {
            let mut moved = 0;
            let slots: BTreeSet<u16> = keys
                .iter()
                .take(4)
                .map(|key| cluster.keyslot(&format!("{prefix}{{{key}}}")))
                .collect();
            for slot in slots {
                let from = cluster.primary_of_slot(slot);
                let to = cluster
                    .primaries()
                    .into_iter()
                    .find(|p| *p != from)
                    .expect("another");
                let mut migration = cluster.start_slot_migration(slot, to);
                // One key at a time, with the load running in between.
                while migration.migrate_keys(1) > 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(50));
                moved += migration.finish();
            }
            moved
        }
    })
    .await
    .expect("resharding");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("soak task");
    }
    let stats = cache.stats();
    println!("resharding: {moved} keys moved; {soak:?}; {stats:?}");
    assert_eq!(soak.errors_to_caller.load(Ordering::SeqCst), 0, "{soak:?}");
    assert_eq!(soak.wrong_values.load(Ordering::SeqCst), 0, "{soak:?}");
    // An invalidation may fail (a durable one whose `WAIT` or retries outlast
    // the timeouts on a loaded machine): it says so, and it is queued, not
    // lost: the queue drains once the moves are over.
    let failed = soak.invalidation_errors.load(Ordering::SeqCst);
    assert!(
        failed * 10 < soak.invalidations.load(Ordering::SeqCst),
        "{soak:?}"
    );
    cache
        .flush_invalidations()
        .await
        .expect("the queued invalidations run");
    assert_eq!(cache.pending_invalidations(), 0);
    assert_one_slot_per_op(&cache);
    // After the moves, an invalidation still reaches every key.
    for key in keys.iter() {
        cache
            .lookup::<u64>(key)
            .load(|| async { Ok::<_, Infallible>(1) })
            .await
            .expect("load");
    }
    cache
        .create_invalidation()
        .pattern(Pattern::prefix("hot:"))
        .run()
        .await
        .expect("pattern");
    for key in keys.iter() {
        assert_eq!(
            cache.lookup::<u64>(key).get().await,
            None,
            "{key} survived the pattern"
        );
    }
}

/// An application that names one node only, and that node fails: async
/// and blocking calls and the event subscription carry on through the
/// nodes learnt from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_node_is_enough_when_it_fails() {
    let cluster = Arc::new(RedisCluster::start());
    let probe = "seeded:1";
    let seed = cluster.primary_of_key(&format!("one:{{{probe}}}"));
    let cache = Cache::builder()
        .cluster_urls([format!("redis://{seed}/")])
        .prefix("one:")
        .build()
        .expect("a valid url");
    subscribed(&cache).await;
    // Blocking calls have a connection (made from the seed) before it fails.
    let blocking = cache.clone();
    tokio::task::spawn_blocking(move || {
        blocking
            .lookup::<u64>("warm")
            .load_blocking(|| Ok::<_, Infallible>(1))
            .expect("load")
    })
    .await
    .expect("blocking");
    let load = |value: u64| {
        cache
            .lookup::<u64>(probe)
            .load(move || async move { Ok::<_, Infallible>(value) })
    };
    assert_eq!(load(1).await.expect("load"), 1);

    tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || {
            cluster.kill_node(seed);
            cluster.wait_for_failover(seed)
        }
    })
    .await
    .expect("failover");
    // The subscription moves to a node learnt from the seed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let _ = load(2).await;
        if cache.local_tiers_active() && cache.lookup::<u64>(probe).get().await.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no subscription or no hits after the seed failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = cache.stats().hit;
    assert!(cache.lookup::<u64>(probe).get().await.is_some());
    assert!(cache.stats().hit > hits, "a hit from the promoted replica");
    // Blocking calls too.
    let blocking = cache.clone();
    let served = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let before = blocking.stats();
            let value = blocking
                .lookup::<u64>("after")
                .load_blocking(|| Ok::<_, Infallible>(3));
            let after = blocking.stats();
            if after.store_error == before.store_error
                && after.short_circuited == before.short_circuited
                && after.store_request > before.store_request
            {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "blocking calls never reached the cluster again"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("blocking");
    assert_eq!(served.expect("load"), 3);
    // And invalidations reach the other nodes' subscribers.
    cache
        .create_invalidation()
        .key(probe)
        .run()
        .await
        .expect("invalidation");
    assert_one_slot_per_op(&cache);
}
