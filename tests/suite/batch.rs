//! Many keys in one call: `get_many` and `get_or_load_many` (and their
//! blocking twins) on the memory store and on real redis-servers. Each test
//! reads like what a user would observe: values in the order of the ids,
//! one loader call with the missing ids, round trips counted by the cache's
//! own `store_request` counter (one per pipeline) and, on Redis, by the
//! server's `INFO commandstats`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cacheme::{Cache, LoadError, Node};
use tokio::sync::{Barrier, Notify};

use crate::fixtures::{Cat, OwnedCatNode, UserInvalid, cat, hook_calls, log_hook};

/// A node of this file's own (its own tag and keys).
#[derive(Debug, Node)]
#[node(key = "batch-cat:{id}", value = Cat, ttl = 300, tag = "batch_cats",
       hit = Self::on_hit, miss = Self::on_miss)]
pub(crate) struct BatchCatNode {
    pub(crate) id: u64,
}

impl BatchCatNode {
    fn on_hit(&self, key: &str, value: &Cat) {
        assert_eq!(value.id, self.id);
        log_hook("batch hit", key);
    }
    fn on_miss(&self, key: &str) {
        log_hook("batch miss", key);
    }
}

/// The cat a loader returns for an id.
fn cat_of(id: u64) -> Cat {
    cat(id, &format!("cat {id}"))
}

/// A batch loader that records every call's ids, and returns the cats of
/// the ids `has` accepts.
#[derive(Clone)]
struct Loader {
    calls: Arc<Mutex<Vec<Vec<u64>>>>,
    has: fn(u64) -> bool,
}

impl Loader {
    fn new() -> Self {
        Loader {
            calls: Arc::default(),
            has: |_| true,
        }
    }
    fn with(has: fn(u64) -> bool) -> Self {
        Loader {
            has,
            ..Loader::new()
        }
    }
    async fn load(&self, ids: Vec<u64>) -> Result<Vec<(u64, Cat)>, Infallible> {
        Ok(self.load_blocking(ids).expect("infallible"))
    }
    fn load_blocking(&self, ids: Vec<u64>) -> Result<Vec<(u64, Cat)>, Infallible> {
        self.calls.lock().expect("calls").push(ids.clone());
        let has = self.has;
        // In reverse: the order of what a loader returns does not matter.
        Ok(ids
            .into_iter()
            .rev()
            .filter(|id| has(*id))
            .map(|id| (id, cat_of(id)))
            .collect())
    }
    fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().expect("calls").clone()
    }
}

/// The cats of `ids`, as `get_or_load_many` returns them.
fn cats(ids: &[u64]) -> Vec<Option<Cat>> {
    ids.iter().map(|&id| Some(cat_of(id))).collect()
}

/// How many round trips `cache` made since `before` (one per request or pipeline).
fn round_trips(cache: &Cache, before: u64) -> u64 {
    cache.stats().store_request - before
}

/// `INFO commandstats` calls of each command on the test's server.
fn command_calls(conn: &mut redis::Connection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The cache keys of `fx`'s store that hold something (Redis only).
fn holds(conn: &mut redis::Connection, cache: &Cache, id: u64) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("{}{{batch-cat:{id}}}", cache.prefix()))
        .query(conn)
        .expect("EXISTS")
}

on_every_store! {
    /// Values come back in the order of the ids, duplicates included; the
    /// loader is called once, with each missing id once; cached ids are not
    /// loaded; an empty input makes no call at all. A warm batch is one
    /// round trip (an `MGET`), a cold one three (the `MGET`, the claims, the
    /// fills).
    async fn order_duplicates_empty_input_and_partial_hits(fx) {
        let objects = fx.cache.objects::<BatchCatNode>();
        let loader = Loader::new();
        // Warm up: the first read of a process reads the invalidation log.
        let warm = objects.get_or_load_many([1, 2], |ids| loader.load(ids)).await.expect("loads");
        assert_eq!(warm, cats(&[1, 2]));

        let before = fx.cache.stats().store_request;
        let got = objects
            .get_or_load_many([5, 2, 5, 1, 3], |ids| loader.load(ids))
            .await
            .expect("loads");
        assert_eq!(got, cats(&[5, 2, 5, 1, 3]));
        assert_eq!(loader.calls(), [vec![1, 2], vec![5, 3]]);
        assert_eq!(round_trips(&fx.cache, before), 3, "one MGET, one pipeline of claims, one of fills");

        let before = fx.cache.stats().store_request;
        let got = objects
            .get_or_load_many([3, 3, 1, 5, 2], |ids| loader.load(ids))
            .await
            .expect("cached");
        assert_eq!(got, cats(&[3, 3, 1, 5, 2]));
        assert_eq!(loader.calls().len(), 2, "every id was cached");
        assert_eq!(round_trips(&fx.cache, before), 1, "one MGET");

        let none: Vec<u64> = Vec::new();
        let before = fx.cache.stats().store_request;
        let got = objects.get_or_load_many(none.clone(), |ids| loader.load(ids)).await.expect("empty");
        assert!(got.is_empty());
        assert!(objects.get_many(none).await.is_empty());
        assert_eq!(loader.calls().len(), 2, "no loader call for no ids");
        assert_eq!(round_trips(&fx.cache, before), 0);

        // get_many: hits only, in order, one round trip, never a load.
        let before = fx.cache.stats().store_request;
        let got = objects.get_many([9, 1, 9, 2]).await;
        assert_eq!(got, [None, Some(cat_of(1)), None, Some(cat_of(2))]);
        assert_eq!(round_trips(&fx.cache, before), 1);
        assert_eq!(loader.calls().len(), 2);
    }

    /// Hit and miss hooks, and the stats, count every element.
    async fn hooks_and_stats_per_element(fx) {
        let objects = fx.cache.objects::<BatchCatNode>();
        let loader = Loader::new();
        // Keys of this test's own: the hook log is shared by the binary.
        let base = match fx.store_name() { "redis" => 1_000, "cluster" => 3_000, "redis_tls_acl" => 4_000, _ => 2_000 };
        objects.get_or_load_many([base], |ids| loader.load(ids)).await.expect("loads");
        let before = fx.cache.stats();
        objects
            .get_or_load_many([base, base + 1, base + 2], |ids| loader.load(ids))
            .await
            .expect("loads");
        let after = fx.cache.stats();
        assert_eq!(after.hit - before.hit, 1);
        assert_eq!(after.miss - before.miss, 2);
        assert_eq!(after.load - before.load, 2);
        assert_eq!(after.fill - before.fill, 2);
        assert_eq!(hook_calls("batch hit", &format!("batch-cat:{base}")), 1);
        assert_eq!(hook_calls("batch miss", &format!("batch-cat:{base}")), 1);
        assert_eq!(hook_calls("batch miss", &format!("batch-cat:{}", base + 1)), 1);
        assert_eq!(hook_calls("batch miss", &format!("batch-cat:{}", base + 2)), 1);
    }

    /// Ids the loader does not return are absent (`None`), not cached, and
    /// their leases are given back at once: the next caller loads them
    /// without waiting.
    async fn a_loader_that_returns_fewer_values(fx) {
        let objects = fx.cache.objects::<BatchCatNode>();
        let evens = Loader::with(|id| id % 2 == 0);
        let got = objects
            .get_or_load_many([1, 2, 3, 4], |ids| evens.load(ids))
            .await
            .expect("loads");
        assert_eq!(got, [None, Some(cat_of(2)), None, Some(cat_of(4))]);
        assert_eq!(objects.get_many([1, 2, 3, 4]).await, [None, Some(cat_of(2)), None, Some(cat_of(4))]);
        if let Some(mut conn) = fx.redis_connection() {
            assert!(!holds(&mut conn, &fx.cache, 1), "no value, and no placeholder left");
            assert!(holds(&mut conn, &fx.cache, 2));
        }
        let waits = fx.cache.stats().wait;
        let all = Loader::new();
        let got = objects.get_or_load_many([3, 1], |ids| all.load(ids)).await.expect("loads");
        assert_eq!(got, cats(&[3, 1]));
        assert_eq!(all.calls(), [vec![3, 1]]);
        assert_eq!(fx.cache.stats().wait, waits, "the leases were released: nobody waited");
    }

    /// A loader error is returned; nothing is cached, the leases are given
    /// back, and the next call loads again without waiting.
    async fn loader_errors(fx) {
        let objects = fx.cache.objects::<BatchCatNode>();
        let loader = Loader::new();
        objects.get_or_load_many([7], |ids| loader.load(ids)).await.expect("loads");
        let result = objects
            .get_or_load_many([7, 8, 9], |_ids: Vec<u64>| async {
                Err::<Vec<(u64, Cat)>, _>(std::io::Error::other("database down"))
            })
            .await;
        match result {
            Err(LoadError::Own(error)) => assert_eq!(error.to_string(), "database down"),
            other => panic!("expected the loader's error, got {other:?}"),
        }
        assert_eq!(objects.get_many([7, 8, 9]).await, [Some(cat_of(7)), None, None]);
        let waits = fx.cache.stats().wait;
        let got = objects.get_or_load_many([8, 9], |ids| loader.load(ids)).await.expect("loads");
        assert_eq!(got, cats(&[8, 9]));
        assert_eq!(fx.cache.stats().wait, waits);
        assert_eq!(fx.cache.stats().load_error, 2, "one per element of the failed batch");
    }

    /// An invalidation while a batch loads: the ids it touched are not
    /// stored as fresh (the key's lease was revoked: the fill is refused);
    /// the others are stored.
    async fn key_invalidation_during_a_batch_load(fx) {
        let objects = fx.cache.objects::<BatchCatNode>();
        let started = Arc::new(Notify::new());
        let gate = Arc::new(Notify::new());
        let load = {
            let (objects, started, gate) = (objects.clone(), started.clone(), gate.clone());
            tokio::spawn(async move {
                objects
                    .get_or_load_many([11, 12], |ids: Vec<u64>| {
                        let (started, gate) = (started.clone(), gate.clone());
                        async move {
                            started.notify_one();
                            gate.notified().await;
                            // The values from before the invalidation.
                            Ok::<_, Infallible>(ids.into_iter().map(|id| (id, cat(id, "old"))).collect::<Vec<_>>())
                        }
                    })
                    .await
            })
        };
        started.notified().await;
        objects.invalid(11).await.expect("invalidates");
        gate.notify_one();
        let got = load.await.expect("task").expect("loads");
        assert_eq!(got, [Some(cat(11, "old")), Some(cat(12, "old"))], "the caller gets what it loaded");
        assert_eq!(fx.cache.stats().fill_revoked, 1);
        assert_eq!(objects.get_many([11, 12]).await, [None, Some(cat(12, "old"))]);
    }

    /// A group invalidation while a batch of stale-off values loads: no
    /// reader is served a value of that group loaded before it.
    async fn group_invalidation_during_a_batch_load(fx) {
        let objects = fx.cache.objects::<OwnedCatNode>();
        let started = Arc::new(Notify::new());
        let gate = Arc::new(Notify::new());
        let load = {
            let (objects, started, gate) = (objects.clone(), started.clone(), gate.clone());
            tokio::spawn(async move {
                objects
                    .get_or_load_many([(70, 1), (71, 2)], |ids: Vec<(u64, u64)>| {
                        let (started, gate) = (started.clone(), gate.clone());
                        async move {
                            started.notify_one();
                            gate.notified().await;
                            Ok::<_, Infallible>(ids.into_iter().map(|ids| (ids, cat(ids.1, "old"))).collect::<Vec<_>>())
                        }
                    })
                    .await
            })
        };
        started.notified().await;
        fx.cache.invalid_objects::<UserInvalid>().invalid(70).await.expect("invalidates");
        gate.notify_one();
        load.await.expect("task").expect("loads");
        assert_eq!(objects.get_many([(70, 1), (71, 2)]).await, [None, Some(cat(2, "old"))]);
        let calls: Mutex<Vec<Vec<(u64, u64)>>> = Mutex::default();
        let fresh = objects
            .get_or_load_many([(70, 1), (71, 2)], |ids: Vec<(u64, u64)>| {
                calls.lock().expect("calls").push(ids.clone());
                async move {
                    Ok::<_, Infallible>(ids.into_iter().map(|ids| (ids, cat_of(ids.1))).collect::<Vec<_>>())
                }
            })
            .await
            .expect("loads");
        assert_eq!(fresh, [Some(cat_of(1)), Some(cat(2, "old"))]);
        assert_eq!(*calls.lock().expect("calls"), [vec![(70, 1)]], "only the invalidated one reloads");
    }

    /// Concurrent batches that overlap load each id once (in one process:
    /// two tasks; on Redis also two caches, standing for two processes).
    async fn overlapping_batches_load_each_id_once(fx) {
        let second = fx.other_process();
        let loads: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let barrier = Arc::new(Barrier::new(4));
        let tasks: Vec<_> = [(&fx.cache, 0..30), (&second, 15..45), (&fx.cache, 10..40), (&second, 0..45)]
            .into_iter()
            .map(|(cache, ids)| {
                let (cache, loads, barrier) = ((*cache).clone(), loads.clone(), barrier.clone());
                let ids: Vec<u64> = ids.collect();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let got = cache
                        .objects::<BatchCatNode>()
                        .get_or_load_many(ids.clone(), |missing: Vec<u64>| {
                            let loads = loads.clone();
                            async move {
                                for id in &missing {
                                    *loads.lock().expect("loads").entry(*id).or_default() += 1;
                                }
                                tokio::time::sleep(Duration::from_millis(30)).await;
                                Ok::<_, Infallible>(missing.into_iter().map(|id| (id, cat_of(id))).collect::<Vec<_>>())
                            }
                        })
                        .await;
                    (ids, got)
                })
            })
            .collect();
        for task in tasks {
            let (ids, got) = task.await.expect("task");
            assert_eq!(got.expect("loads"), cats(&ids));
        }
        let loads = loads.lock().expect("loads");
        assert_eq!(loads.len(), 45, "every id loaded");
        let twice: Vec<_> = loads.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "ids loaded more than once: {twice:?}");
    }

    /// The blocking twins, from a thread without a runtime.
    async fn blocking_twins(fx) {
        let cache = fx.cache.clone();
        tokio::task::spawn_blocking(move || {
            let objects = cache.objects::<BatchCatNode>();
            let loader = Loader::new();
            let got = objects
                .get_or_load_many_blocking([21, 22, 21], |ids| loader.load_blocking(ids))
                .expect("loads");
            assert_eq!(got, cats(&[21, 22, 21]));
            let got = objects
                .get_or_load_many_blocking([23, 22], |ids| loader.load_blocking(ids))
                .expect("loads");
            assert_eq!(got, cats(&[23, 22]));
            assert_eq!(loader.calls(), [vec![21, 22], vec![23]]);
            assert_eq!(objects.get_many_blocking([21, 24, 23]), [Some(cat_of(21)), None, Some(cat_of(23))]);
        })
        .await
        .expect("blocking task");
    }
}

/// On Redis, a cold batch of 50 is one `MGET`, 50 `SET NX GET` claims in
/// one pipeline and 50 fills in another: three round trips, counted by the
/// server too; a warm one is one `MGET`. A key holding another Redis type fails its
/// own read only: that key is repaired and read again, and the id joins
/// the batch's one loader call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_per_id_failures_on_redis() {
    let fx = crate::fixtures::Fixture::redis();
    let mut conn = fx.redis_connection().expect("redis");
    let objects = fx.cache.objects::<BatchCatNode>();
    let loader = Loader::new();
    objects
        .get_or_load_many([0], |ids| loader.load(ids))
        .await
        .expect("warm-up");

    let ids: Vec<u64> = (100..150).collect();
    let (before, calls) = (fx.cache.stats().store_request, command_calls(&mut conn));
    let got = objects
        .get_or_load_many(ids.clone(), |ids| loader.load(ids))
        .await
        .expect("loads");
    assert_eq!(got, cats(&ids));
    let after = command_calls(&mut conn);
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - calls.get(name).copied().unwrap_or(0);
    assert_eq!(round_trips(&fx.cache, before), 3);
    assert_eq!(delta("mget"), 1);
    // (Redis counts the SETs that scripts make too: 50 claims, 50 in fills.)
    assert_eq!(delta("set"), 100, "one claiming read and one fill per id");
    assert_eq!(delta("evalsha") + delta("eval"), 50, "one fill per id");
    assert_eq!(loader.calls().len(), 2);

    let (before, calls) = (fx.cache.stats().store_request, command_calls(&mut conn));
    let got = objects
        .get_or_load_many(ids.clone(), |ids| loader.load(ids))
        .await
        .expect("cached");
    assert_eq!(got, cats(&ids));
    let after = command_calls(&mut conn);
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - calls.get(name).copied().unwrap_or(0);
    assert_eq!(round_trips(&fx.cache, before), 1);
    assert_eq!(delta("mget"), 1);
    assert_eq!(delta("set"), 0);
    assert_eq!(delta("evalsha") + delta("eval"), 0);

    // A hash where a value of id 201 would be: that id's read fails alone;
    // the key is repaired (deleted) and read again, and the id joins the
    // one loader call.
    let foreign = format!("{}{{batch-cat:201}}", fx.cache.prefix());
    let _: () = redis::cmd("HSET")
        .arg(&foreign)
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .expect("HSET");
    let got = objects
        .get_or_load_many([200, 201, 202], |ids| loader.load(ids))
        .await
        .expect("loads");
    assert_eq!(got, cats(&[200, 201, 202]));
    assert_eq!(
        loader.calls().last(),
        Some(&vec![200, 201, 202]),
        "one loader call, the repaired id included"
    );
    assert!((200..203).all(|id| holds(&mut conn, &fx.cache, id)));
    let kind: String = redis::cmd("TYPE")
        .arg(&foreign)
        .query(&mut conn)
        .expect("TYPE");
    assert_eq!(kind, "string", "the foreign value was replaced");
    assert!(fx.cache.stats().store_error >= 1);
}

// ------------------------------------------------------ #[cacheme] batch --

mod memoized {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use cacheme::{Cache, cacheme};

    use super::{BatchCatNode, cat_of};
    use crate::fixtures::Cat;

    /// The ids each call of a body got.
    type Calls = Mutex<Vec<Vec<u64>>>;

    /// A `Vec` result: `by` tells each cat's id. Cats above 100 do not exist.
    #[cacheme(batch = ids, each = id, key = format!("memo-cat:{id}"), by = |cat: &Cat| cat.id,
              cache = cache, tag = "batch_memo_cats")]
    async fn get_cats(cache: &Cache, calls: &Calls, ids: Vec<u64>) -> Vec<Cat> {
        calls.lock().expect("calls").push(ids.clone());
        ids.into_iter()
            .filter(|id| *id <= 100)
            .map(cat_of)
            .collect()
    }

    /// A map result, per node, with a `Result`.
    #[cacheme(batch = ids, each = id, node = BatchCatNode { id }, cache = cache)]
    async fn cats_by_id(
        cache: &Cache,
        calls: &Calls,
        ids: Vec<u64>,
    ) -> Result<HashMap<u64, Cat>, std::io::Error> {
        calls.lock().expect("calls").push(ids.clone());
        if ids.contains(&666) {
            return Err(std::io::Error::other("cursed id"));
        }
        Ok(ids.into_iter().map(|id| (id, cat_of(id))).collect())
    }

    /// A plain fn, with a `BTreeMap`.
    #[cacheme(batch = ids, each = id, key = format!("memo-name:{id}"), cache = cache)]
    fn names(cache: &Cache, calls: &Calls, ids: Vec<u64>) -> BTreeMap<u64, String> {
        calls.lock().expect("calls").push(ids.clone());
        ids.into_iter()
            .map(|id| (id, format!("name {id}")))
            .collect()
    }

    on_both_stores! {
        /// Only the missing ids reach the body; results keep the order of
        /// the ids (a `Vec`) or carry them (a map); absent ids are left out.
        async fn only_missing_ids_reach_the_body(fx) {
            let calls = Calls::default();
            let cats = get_cats(&fx.cache, &calls, vec![1, 2]).await;
            assert_eq!(cats, [cat_of(1), cat_of(2)]);
            let cats = get_cats(&fx.cache, &calls, vec![3, 1, 101, 3, 2]).await;
            assert_eq!(cats, [cat_of(3), cat_of(1), cat_of(3), cat_of(2)], "101 does not exist");
            assert_eq!(*calls.lock().expect("calls"), [vec![1, 2], vec![3, 101]]);
            assert!(get_cats(&fx.cache, &calls, vec![]).await.is_empty());
            assert_eq!(calls.lock().expect("calls").len(), 2);

            let calls = Calls::default();
            let cats = cats_by_id(&fx.cache, &calls, vec![5, 6]).await.expect("loads");
            assert_eq!(cats, HashMap::from([(5, cat_of(5)), (6, cat_of(6))]));
            // The node's key: the manager sees what the fn cached.
            assert_eq!(fx.cache.objects::<BatchCatNode>().get_many([5, 6, 7]).await, [Some(cat_of(5)), Some(cat_of(6)), None]);
            let error = cats_by_id(&fx.cache, &calls, vec![5, 666]).await.expect_err("cursed");
            assert_eq!(error.to_string(), "cursed id");
            let cats = cats_by_id(&fx.cache, &calls, vec![6, 7]).await.expect("loads");
            assert_eq!(cats.len(), 2);
            assert_eq!(*calls.lock().expect("calls"), [vec![5, 6], vec![666], vec![7]]);

            let cache = fx.cache.clone();
            tokio::task::spawn_blocking(move || {
                let calls = Calls::default();
                assert_eq!(names(&cache, &calls, vec![1, 2]).len(), 2);
                let got = names(&cache, &calls, vec![2, 3]);
                assert_eq!(got, BTreeMap::from([(2, "name 2".to_owned()), (3, "name 3".to_owned())]));
                assert_eq!(*calls.lock().expect("calls"), [vec![1, 2], vec![3]]);
            })
            .await
            .expect("blocking");
        }
    }
}
