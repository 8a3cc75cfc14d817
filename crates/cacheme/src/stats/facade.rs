//! The `metrics` feature: the counters and histograms, reported to the
//! ecosystem's `metrics` facade (Prometheus, StatsD, OpenTelemetry
//! exporters...) every `stats_interval`, and by `Cache::publish_stats`.
//!
//! Counters are set to their absolute values (`Counter::absolute`), so that
//! a call pays nothing for the facade; histogram samples recorded since the
//! last report are handed over bucket by bucket (`record_many`).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `cacheme_requests_total` | `node`, `result` = `hit` \| `stale_hit` \| `local_hit` \| `miss` | calls, by how they were served (the results partition the calls) |
//! | `cacheme_loads_total` | `node`, `outcome` = `ok` \| `error` \| `timeout` | loader runs |
//! | `cacheme_load_seconds` | `node` | how long loaders ran (histogram) |
//! | `cacheme_read_seconds` | `node` | how long reads of the store took (histogram) |
//! | `cacheme_<counter>_total` | `node` | every other per-node counter of `StatsSnapshot` (`fill`, `wait`, `store_error`...) |
//! | `cacheme_<counter>_total` | — | the cache-wide ones (`breaker_opened`, `invalidated`, `invalidation_queued`...) |

use std::collections::HashMap;
use std::time::Duration;

use super::{Latency, NodeStats};
use crate::cache::Inner;

/// Counters reported through `cacheme_requests_total` and `cacheme_loads_total`.
const FOLDED: [&str; 7] = [
    "hit",
    "stale_hit",
    "local_hit",
    "miss",
    "load",
    "load_error",
    "load_timeout",
];

/// Counters that belong to no node: reported from the totals, unlabelled.
const CACHE_WIDE: [&str; 6] = [
    "breaker_opened",
    "local_invalidation",
    "invalidated",
    "invalidation_queued",
    "invalidation_retried",
    "invalidation_dropped",
];

/// What the facade was given so far: per node, the histograms reported.
#[derive(Default)]
pub(crate) struct Facade {
    described: bool,
    reported: HashMap<String, (Latency, Latency)>,
}

impl Facade {
    /// Report every node's counters and the new histogram samples.
    pub(crate) fn report(&mut self, inner: &Inner) {
        if !self.described {
            describe();
            self.described = true;
        }
        for node in inner.stats.nodes() {
            self.report_node(&node);
        }
        let totals = inner.stats.snapshot();
        for (name, value) in totals.fields() {
            if CACHE_WIDE.contains(&name) {
                metrics::counter!(format!("cacheme_{name}_total")).absolute(value);
            }
        }
    }

    fn report_node(&mut self, node: &NodeStats) {
        let name = node.name.clone();
        let s = &node.stats;
        let requests = [
            ("hit", s.hit.saturating_sub(s.stale_hit)),
            ("stale_hit", s.stale_hit),
            ("local_hit", s.local_hit),
            ("miss", s.miss),
        ];
        for (result, value) in requests {
            metrics::counter!("cacheme_requests_total", "node" => name.clone(), "result" => result)
                .absolute(value);
        }
        let failed = s.load_error.saturating_add(s.load_timeout);
        let loads = [
            ("ok", s.load.saturating_sub(failed)),
            ("error", s.load_error),
            ("timeout", s.load_timeout),
        ];
        for (outcome, value) in loads {
            metrics::counter!("cacheme_loads_total", "node" => name.clone(), "outcome" => outcome)
                .absolute(value);
        }
        for (counter, value) in s.fields() {
            if !FOLDED.contains(&counter) && !CACHE_WIDE.contains(&counter) {
                metrics::counter!(format!("cacheme_{counter}_total"), "node" => name.clone())
                    .absolute(value);
            }
        }
        let (loads_before, reads_before) = self.reported.entry(name.clone()).or_default();
        let histograms = [
            ("cacheme_load_seconds", &node.load_time, loads_before),
            ("cacheme_read_seconds", &node.read_time, reads_before),
        ];
        for (metric, now, before) in histograms {
            let new = now.since(before);
            if new.count() > 0 {
                let histogram = metrics::histogram!(metric, "node" => name.clone());
                for (value, count) in new.buckets() {
                    histogram
                        .record_many(seconds(value), usize::try_from(count).unwrap_or(usize::MAX));
                }
            }
            *before = now.clone();
        }
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn describe() {
    metrics::describe_counter!(
        "cacheme_requests_total",
        "Cache calls by node and result (hit, stale_hit, local_hit, miss)"
    );
    metrics::describe_counter!(
        "cacheme_loads_total",
        "Loader runs by node and outcome (ok, error, timeout)"
    );
    metrics::describe_histogram!(
        "cacheme_load_seconds",
        metrics::Unit::Seconds,
        "How long loaders ran, by node"
    );
    metrics::describe_histogram!(
        "cacheme_read_seconds",
        metrics::Unit::Seconds,
        "How long reads of the store took, by node"
    );
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// A metric's value in a snapshot, by name and labels.
    fn find<'a>(
        metrics: &'a [(
            metrics_util::CompositeKey,
            Option<metrics::Unit>,
            Option<metrics::SharedString>,
            DebugValue,
        )],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a DebugValue> {
        metrics.iter().find_map(|(key, _, _, value)| {
            let key = key.key();
            let matches = key.name() == name
                && labels.iter().all(|(l, v)| {
                    key.labels()
                        .any(|label| label.key() == *l && label.value() == *v)
                });
            matches.then_some(value)
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_facade_gets_per_node_series() {
        let cache = crate::Cache::builder().build().expect("memory store");
        for _ in 0..3 {
            let _: u32 = cache
                .lookup("k")
                .load(|| async { Ok::<_, std::io::Error>(1) })
                .await
                .expect("loads");
        }
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || cache.publish_stats())
            .expect("memory: nothing to publish");
        let metrics = snapshotter.snapshot().into_vec();
        let counter = |name, labels: &[(&str, &str)]| match find(&metrics, name, labels) {
            Some(DebugValue::Counter(value)) => *value,
            other => panic!("{name} {labels:?}: {other:?}"),
        };
        assert_eq!(
            counter(
                "cacheme_requests_total",
                &[("node", "lookup"), ("result", "hit")]
            ),
            2
        );
        assert_eq!(
            counter(
                "cacheme_requests_total",
                &[("node", "lookup"), ("result", "miss")]
            ),
            1
        );
        assert_eq!(
            counter(
                "cacheme_requests_total",
                &[("node", "lookup"), ("result", "local_hit")]
            ),
            0
        );
        assert_eq!(
            counter(
                "cacheme_loads_total",
                &[("node", "lookup"), ("outcome", "ok")]
            ),
            1
        );
        assert_eq!(counter("cacheme_fill_total", &[("node", "lookup")]), 1);
        assert_eq!(counter("cacheme_invalidated_total", &[]), 0);
        match find(&metrics, "cacheme_load_seconds", &[("node", "lookup")]) {
            Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 1),
            other => panic!("cacheme_load_seconds: {other:?}"),
        }

        // The next report hands over only the new samples.
        let _: u32 = cache
            .lookup("other")
            .load(|| async { Ok::<_, std::io::Error>(2) })
            .await
            .expect("loads");
        metrics::with_local_recorder(&recorder, || cache.publish_stats()).expect("memory");
        let metrics = snapshotter.snapshot().into_vec();
        match find(&metrics, "cacheme_load_seconds", &[("node", "lookup")]) {
            Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 1, "one new load"),
            other => panic!("cacheme_load_seconds: {other:?}"),
        }
        let loads = find(
            &metrics,
            "cacheme_loads_total",
            &[("node", "lookup"), ("outcome", "ok")],
        );
        assert!(matches!(loads, Some(DebugValue::Counter(2))), "{loads:?}");
    }
}
