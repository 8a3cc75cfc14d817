//! Operating it (issue 17): counters and histograms per node, fleet stats
//! published to Redis (bounded, expiring), and the spans of loads, waits
//! and invalidations.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cacheme::{Cache, Node, ops};
use serde::{Deserialize, Serialize};

use crate::fixtures::{cache, redis, server};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Bird {
    id: u64,
}

#[derive(Debug, Node)]
#[node(key = "bird:{id}", value = Bird, ttl = 300)]
struct BirdNode {
    id: u64,
}

#[derive(Debug, Node)]
#[node(key = "fish:{id}", value = Bird, ttl = 300)]
struct FishNode {
    id: u64,
}

#[derive(Debug, Node)]
#[node(key = "owl:{id}", value = Bird, local_ttl = 60, local_capacity = 100)]
struct OwlNode {
    id: u64,
}

async fn bird(cache: &Cache, id: u64) -> Bird {
    cache
        .objects::<BirdNode>()
        .get_or_load(id, || async move { Ok::<_, std::io::Error>(Bird { id }) })
        .await
        .expect("loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_are_kept_per_node() {
    let cache = cache();
    for _ in 0..3 {
        bird(&cache, 1).await;
    }
    let failed = cache
        .objects::<FishNode>()
        .get_or_load(1, || async {
            Err::<Bird, _>(std::io::Error::other("down"))
        })
        .await;
    assert!(failed.is_err());

    let birds = cache.stats_of("BirdNode").expect("BirdNode was called");
    assert!(!birds.function);
    assert_eq!(
        (
            birds.stats.miss,
            birds.stats.load,
            birds.stats.fill,
            birds.stats.hit
        ),
        (1, 1, 1, 2)
    );
    assert!(birds.stats.store_request >= 4, "{:?}", birds.stats);
    assert_eq!(birds.load_time.count(), 1);
    assert_eq!(birds.read_time.count(), 3, "one timed read per call");
    assert!(birds.read_time.quantile(0.5) > Duration::ZERO);

    let fish = cache.stats_of("FishNode").expect("FishNode was called");
    assert_eq!(
        (fish.stats.load, fish.stats.load_error, fish.stats.hit),
        (1, 1, 0)
    );
    assert_eq!(fish.load_time.count(), 1);

    // The totals are the sum of the nodes.
    let mut sum = cacheme::StatsSnapshot::default();
    for node in cache.node_stats() {
        sum.add(&node.stats);
    }
    let totals = cache.stats();
    assert_eq!(
        (sum.hit, sum.miss, sum.load, sum.load_error),
        (totals.hit, totals.miss, totals.load, totals.load_error)
    );
    // (The cache's own requests, such as reading the invalidation log once,
    // count in the totals only.)
    assert!(sum.store_request <= totals.store_request);
    assert_eq!(birds.stats.hit_ratio(), Some(2.0 / 3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hits_count_under_their_node() {
    let cache = Cache::builder().build().expect("memory");
    for _ in 0..4 {
        cache
            .objects::<OwlNode>()
            .get_or_load(7, || async { Ok::<_, std::io::Error>(Bird { id: 7 }) })
            .await
            .expect("loads");
    }
    let owls = cache.stats_of("OwlNode").expect("OwlNode was called");
    assert_eq!(
        (owls.stats.local_miss, owls.stats.local_hit, owls.stats.load),
        (1, 3, 1)
    );
    assert_eq!(cache.stats().local_hit, 3);
}

/// Poll until `check` holds (the reporter thread runs on its own clock).
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_stats_are_published_bounded_and_expire() {
    let prefix = "fleet1:";
    let build = || {
        Cache::builder()
            .redis_url(server().url())
            .prefix(prefix)
            .build()
            .expect("cache")
    };
    // Off by default: nothing is published.
    let quiet = build();
    bird(&quiet, 1).await;
    let keys = ops::FleetKeys::new(prefix);
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&keys.procs)
        .arg(&keys.reports)
        .query(&mut redis())
        .expect("EXISTS");
    assert_eq!(exists, 0, "fleet stats are off by default");

    // A process that publishes every 100 ms, by the setting.
    let publishing = Cache::builder()
        .redis_url(server().url())
        .prefix(prefix)
        .fleet_stats(Duration::from_millis(100))
        .build()
        .expect("cache");
    bird(&publishing, 11).await;
    bird(&publishing, 12).await;
    let report = eventually("the periodic report", || {
        let reports = ops::read_reports(&mut redis(), prefix).expect("HGETALL");
        reports.into_iter().find(|r| {
            r.nodes
                .iter()
                .any(|n| n.node.name == "BirdNode" && n.node.stats.load == 2)
        })
    });
    assert_eq!(report.pid, std::process::id());
    assert_eq!(report.interval_ms, 100);
    assert_eq!(report.totals.load, 2);

    // Another process publishing on demand: the fleet has two reports.
    quiet.publish_stats().expect("published");
    let reports = ops::read_reports(&mut redis(), prefix).expect("HGETALL");
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let loads: u64 = reports
        .iter()
        .flat_map(|r| &r.nodes)
        .filter(|n| n.node.name == "BirdNode")
        .map(|n| n.node.stats.load)
        .sum();
    assert!(loads >= 2, "both processes' loads: {loads}");

    // One hash slot, bounded: a report older than three intervals is
    // dropped by the next publish, and both keys expire.
    let tag = |key: &str| {
        key[key.find('{').expect("a hash tag")..=key.find('}').expect("closed")].to_owned()
    };
    assert_eq!(
        (tag(&keys.procs), tag(&keys.reports)),
        ("{stats}".to_owned(), "{stats}".to_owned())
    );
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(&keys.procs)
        .arg(1)
        .arg("ghost")
        .cmd("HSET")
        .arg(&keys.reports)
        .arg("ghost")
        .arg("{}")
        .query(&mut redis())
        .expect("a stale report");
    quiet.publish_stats().expect("published");
    let ghost: bool = redis::cmd("HEXISTS")
        .arg(&keys.reports)
        .arg("ghost")
        .query(&mut redis())
        .expect("HEXISTS");
    assert!(!ghost, "stale reports are pruned");
    for key in [&keys.procs, &keys.reports] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query(&mut redis())
            .expect("PTTL");
        let max_age = ops::max_age(Duration::from_secs(5)).as_millis() as i64;
        assert!(ttl > 0 && ttl <= max_age, "{key} expires: {ttl} ms");
    }
}

// ------------------------------------------------------------------ spans --

/// The spans a subscriber saw: name and fields.
#[derive(Default, Clone)]
struct Spans(Arc<Mutex<Vec<(String, Fields)>>>);

/// A span's fields, in the order recorded.
type Fields = Vec<(String, String)>;

impl Spans {
    fn named(&self, name: &str) -> Vec<Fields> {
        let spans = self.0.lock().expect("not poisoned");
        spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

struct Visitor<'a>(&'a mut Fields);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        ));
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Vec::new();
        span.record(&mut Visitor(&mut fields));
        let mut spans = self.0.lock().expect("not poisoned");
        spans.push((span.metadata().name().to_owned(), fields));
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.0.lock().expect("not poisoned");
        let index = usize::try_from(span.into_u64()).expect("small") - 1;
        values.record(&mut Visitor(&mut spans[index].1));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The spans are checked in a process of their own (this binary, run again
/// for `spans_child`), whose global subscriber is set before any span is
/// made: `tracing` caches whether a call site is wanted, and other tests'
/// threads, with no subscriber, would race a thread-local one to it.
#[test]
fn loads_waits_and_invalidations_have_spans_with_their_outcome() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "stats::spans_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHEME_SPANS_CHILD", "1")
        .output()
        .expect("child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("spans checked"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn spans_child() {
    if std::env::var("CACHEME_SPANS_CHILD").is_err() {
        return;
    }
    let spans = Spans::default();
    tracing::subscriber::set_global_default(spans.clone()).expect("the first subscriber");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(check_spans(spans));
    println!("spans checked");
}

async fn check_spans(spans: Spans) {
    let cache = cache();
    bird(&cache, 3).await;
    bird(&cache, 3).await;
    let _ = cache
        .objects::<FishNode>()
        .get_or_load(3, || async {
            Err::<Bird, _>(std::io::Error::other("down"))
        })
        .await;
    cache
        .objects::<BirdNode>()
        .invalid(3)
        .await
        .expect("invalidated");

    let loads = spans.named("cacheme.load");
    assert_eq!(loads.len(), 2, "one span per load, none for the hit");
    assert_eq!(field(&loads[0], "node"), Some("BirdNode"));
    assert_eq!(field(&loads[0], "key"), Some("bird:3"));
    assert_eq!(field(&loads[0], "outcome"), Some("ok"));
    assert_eq!(field(&loads[1], "node"), Some("FishNode"));
    assert_eq!(field(&loads[1], "outcome"), Some("error"));
    let invalidations = spans.named("cacheme.invalidate");
    assert_eq!(invalidations.len(), 1);
    assert_eq!(field(&invalidations[0], "outcome"), Some("ok"));
    assert_eq!(field(&invalidations[0], "count"), Some("1"));
    assert!(field(&invalidations[0], "keys").is_some_and(|k| k.contains("bird:3")));

    // A caller that waits for this process's load of the key: a wait span.
    let gate = Arc::new(tokio::sync::Notify::new());
    let slow = {
        let gate = gate.clone();
        move || async move {
            gate.notified().await;
            Ok::<_, std::io::Error>(Bird { id: 9 })
        }
    };
    let birds = cache.objects::<BirdNode>();
    let leader = birds.get_or_load(9, slow);
    let waiter = bird(&cache, 9);
    let release = async {
        // (The waiter has joined the leader's flight once it is counted.)
        while cache.stats_of("BirdNode").map_or(0, |n| n.stats.coalesced) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
    };
    let (led, waited, ()) = tokio::join!(leader, waiter, release);
    assert_eq!((led.expect("loads").id, waited.id), (9, 9));
    let waits = spans.named("cacheme.wait");
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(field(&waits[0], "node"), Some("BirdNode"));
    assert_eq!(field(&waits[0], "key"), Some("bird:9"));
    assert_eq!(field(&waits[0], "outcome"), Some("value"));

    // Redacted: the spans keep the node and the outcome, not the key.
    cache.update_settings(|s| s.redact_keys = true);
    bird(&cache, 4).await;
    cache
        .objects::<BirdNode>()
        .invalid(4)
        .await
        .expect("invalidated");
    let loads = spans.named("cacheme.load");
    let last = loads.last().expect("a span");
    assert_eq!(field(last, "node"), Some("BirdNode"));
    assert_eq!(field(last, "outcome"), Some("ok"));
    assert_eq!(field(last, "key"), None);
    let invalidations = spans.named("cacheme.invalidate");
    assert_eq!(field(invalidations.last().expect("a span"), "keys"), None);
}
