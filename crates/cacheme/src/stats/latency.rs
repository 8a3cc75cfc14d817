//! Latency histograms: hdrhistogram, in microseconds.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest time a histogram tells apart: an hour (longer ones count as an hour).
const MAX_MICROS: u64 = 3_600_000_000;
/// Significant digits kept: 1% resolution.
const DIGITS: u8 = 2;

fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, DIGITS)
        .expect("1 µs .. 1 h at 2 digits are valid bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A distribution of durations (1 µs to 1 h, 1% resolution), as
/// [`NodeStats`](crate::NodeStats) keeps them for loads and store reads.
/// Histograms of several processes or nodes [merge](Latency::merge) exactly.
///
/// ```
/// use std::time::Duration;
/// let mut latency = cacheme::Latency::default();
/// latency.record(Duration::from_millis(10));
/// latency.record(Duration::from_millis(30));
/// assert_eq!(latency.count(), 2);
/// let p50 = latency.quantile(0.5);
/// assert!(p50 >= Duration::from_micros(9_900) && p50 <= Duration::from_micros(10_100));
/// assert!(latency.max() >= Duration::from_micros(29_700));
/// ```
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Buckets", try_from = "Buckets")]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { histogram: empty() }
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl Latency {
    /// Add one duration.
    pub fn record(&mut self, duration: Duration) {
        self.histogram.saturating_record(micros(duration));
    }

    /// How many durations it holds.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The duration at quantile `q` (0.0 ..= 1.0; 0.99 is the p99); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.histogram.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.histogram.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    /// The mean; zero when empty.
    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.histogram.mean() / 1e6)
    }

    /// The longest duration (to the histogram's resolution); zero when empty.
    pub fn max(&self) -> Duration {
        if self.histogram.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.histogram.max())
    }

    /// Add every duration of `other` (another process's, another node's).
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    /// The durations recorded since `earlier` (a previous copy of this one).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn since(&self, earlier: &Latency) -> Latency {
        let mut delta = self.clone();
        if delta.histogram.subtract(&earlier.histogram).is_err() {
            // `earlier` is not a previous copy (the counters were reset):
            // everything is new.
            return self.clone();
        }
        delta
    }

    /// Each distinct recorded value (µs, to the histogram's resolution)
    /// with its count.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.histogram.iter_recorded().map(|bucket| {
            (
                Duration::from_micros(bucket.value_iterated_to()),
                bucket.count_at_value(),
            )
        })
    }
}

/// How a [`Latency`] is written (fleet stats, `--json`): `[µs, count]` pairs.
#[derive(serde::Serialize, serde::Deserialize)]
struct Buckets {
    /// `[value in µs, count]` for each recorded bucket.
    us: Vec<[u64; 2]>,
}

impl From<Latency> for Buckets {
    fn from(latency: Latency) -> Self {
        Buckets {
            us: latency
                .histogram
                .iter_recorded()
                .map(|bucket| [bucket.value_iterated_to(), bucket.count_at_value()])
                .collect(),
        }
    }
}

impl TryFrom<Buckets> for Latency {
    type Error = String;

    fn try_from(buckets: Buckets) -> Result<Self, String> {
        let mut histogram = empty();
        for [value, count] in buckets.us {
            histogram
                .record_n(value.min(MAX_MICROS), count)
                .map_err(|error| format!("latency bucket {value} µs: {error}"))?;
        }
        Ok(Latency { histogram })
    }
}

/// A live histogram: recorded into under a mutex (once per remote read or load).
#[derive(Debug, Default)]
pub(crate) struct Recorder(Mutex<Latency>);

impl Recorder {
    pub(crate) fn record(&self, duration: Duration) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(duration);
    }

    pub(crate) fn snapshot(&self) -> Latency {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_merges() {
        let mut a = Latency::default();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms));
        }
        let json = serde_json::to_string(&a).expect("serializes");
        let back: Latency = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, a);
        let mut b = Latency::default();
        b.record(Duration::from_secs(7200));
        b.merge(&back);
        assert_eq!(b.count(), 101);
        assert_eq!(b.max(), Duration::from_secs(3600).max(b.max()));
        let p50 = b.quantile(0.5);
        assert!(
            p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(52),
            "{p50:?}"
        );
        let since = b.since(&back);
        assert_eq!(since.count(), 1);
    }
}
