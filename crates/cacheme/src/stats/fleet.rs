//! Fleet stats: every process publishes its per-node counters to Redis
//! (when `Settings::fleet_stats` is on), so that a tool sums them across the
//! fleet without reaching the processes.
//!
//! Two keys under the cache's prefix, in one hash slot (`{stats}`):
//!
//! | key                      | type | holds                                             |
//! |--------------------------|------|---------------------------------------------------|
//! | `CM:{stats}:procs`       | zset | process id → when it last reported (ms)           |
//! | `CM:{stats}:reports`     | hash | process id → its report (JSON, [`ProcessReport`]) |
//!
//! One script writes a report, drops those older than [`max_age`], keeps
//! at most [`MAX_PROCESSES`] (the oldest go first), and sets both keys to
//! expire after `max_age`: the structure is bounded, and it disappears when
//! the whole fleet stops reporting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::{NodeStats, StatsSnapshot};
use crate::cache::Inner;
use crate::settings::Settings;
use crate::storage::now_ms;

/// The most processes the structure keeps.
pub const MAX_PROCESSES: usize = 1_000;

/// The shortest interval between reports.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long a report counts as current: three intervals, at least 15 s.
pub fn max_age(interval: Duration) -> Duration {
    interval.saturating_mul(3).max(Duration::from_secs(15))
}

/// The Redis keys of a cache's fleet stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetKeys {
    /// The sorted set of reporting processes, scored by their last report (ms).
    pub procs: String,
    /// The hash of their reports.
    pub reports: String,
}

impl FleetKeys {
    /// The keys under `prefix`.
    ///
    /// ```
    /// let keys = cacheme::ops::FleetKeys::new("CM:");
    /// assert_eq!(keys.procs, "CM:{stats}:procs");
    /// assert_eq!(keys.reports, "CM:{stats}:reports");
    /// ```
    pub fn new(prefix: &str) -> Self {
        FleetKeys {
            procs: format!("{prefix}{{stats}}:procs"),
            reports: format!("{prefix}{{stats}}:reports"),
        }
    }
}

/// One process's report, as published in the fleet stats hash.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ProcessReport {
    /// The process's id in the fleet (random, per cache).
    pub process: String,
    /// Its host name, when known.
    pub host: String,
    /// Its operating-system process id.
    pub pid: u32,
    /// When it reported, in ms since the Unix epoch.
    pub at_ms: u64,
    /// How often it reports, in ms.
    pub interval_ms: u64,
    /// Its cache's totals.
    pub totals: StatsSnapshot,
    /// Per node: counters, histograms, and rates over its last interval.
    pub nodes: Vec<NodeReport>,
}

/// One node in a [`ProcessReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct NodeReport {
    /// Its counters and histograms since the process started.
    #[serde(flatten)]
    pub node: NodeStats,
    /// Loads per second over the process's last interval.
    pub loads_per_sec: f64,
    /// Calls served or missed (`hit + local_hit + miss`) per second over
    /// the last interval.
    pub calls_per_sec: f64,
}

impl ProcessReport {
    /// Whether this report is older than [`max_age`] of its interval at `now_ms`.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        let age = Duration::from_millis(now_ms.saturating_sub(self.at_ms));
        age > max_age(Duration::from_millis(self.interval_ms))
    }
}

/// Write a report, prune, bound, expire: see the module's docs.
const PUBLISH: &str = r"
local now = tonumber(ARGV[3])
local oldest = now - tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. oldest)
for _, process in ipairs(old) do redis.call('HDEL', KEYS[2], process) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. oldest)
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if extra > 0 then
  local gone = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  for _, process in ipairs(gone) do redis.call('HDEL', KEYS[2], process) end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return redis.call('ZCARD', KEYS[1])
";

/// The reports of the processes that reported recently, oldest first.
/// Reports that do not parse (another version's) are skipped.
pub fn read_reports(
    con: &mut dyn redis::ConnectionLike,
    prefix: &str,
) -> redis::RedisResult<Vec<ProcessReport>> {
    let keys = FleetKeys::new(prefix);
    let raw: HashMap<String, String> = redis::cmd("HGETALL").arg(&keys.reports).query(con)?;
    let now = now_ms();
    let mut reports: Vec<ProcessReport> = raw
        .values()
        .filter_map(|json| serde_json::from_str::<ProcessReport>(json).ok())
        .filter(|report| !report.is_stale(now))
        .collect();
    reports.sort_by(|a, b| (a.at_ms, &a.process).cmp(&(b.at_ms, &b.process)));
    Ok(reports)
}

/// What the publisher remembers between two reports.
#[derive(Default)]
pub(crate) struct Publisher {
    connection: Option<redis::Connection>,
    /// Per node: (loads, calls) at the last report, and when it was.
    last: HashMap<String, (u64, u64)>,
    last_at: Option<Instant>,
    failing: bool,
}

impl Publisher {
    /// Build this process's report, with the rates since the last one.
    fn report(&mut self, inner: &Inner, settings: &Settings) -> ProcessReport {
        let now = Instant::now();
        let elapsed = self
            .last_at
            .map(|at| now.duration_since(at).as_secs_f64())
            .filter(|s| *s > 0.0);
        self.last_at = Some(now);
        let nodes = inner
            .stats
            .nodes()
            .into_iter()
            .map(|node| {
                let loads = node.stats.load;
                let calls = node
                    .stats
                    .hit
                    .saturating_add(node.stats.local_hit)
                    .saturating_add(node.stats.miss);
                let (last_loads, last_calls) = self
                    .last
                    .insert(node.name.clone(), (loads, calls))
                    .unwrap_or((loads, calls));
                let rate = |now: u64, before: u64| match elapsed {
                    Some(secs) => now.saturating_sub(before) as f64 / secs,
                    None => 0.0,
                };
                NodeReport {
                    loads_per_sec: rate(loads, last_loads),
                    calls_per_sec: rate(calls, last_calls),
                    node,
                }
            })
            .collect();
        ProcessReport {
            process: format!("{:016x}", inner.publisher),
            host: host_name(),
            pid: std::process::id(),
            at_ms: now_ms(),
            interval_ms: u64::try_from(settings.stats_interval.as_millis()).unwrap_or(u64::MAX),
            totals: inner.stats.snapshot(),
            nodes,
        }
    }

    /// Publish one report now.
    pub(crate) fn publish(&mut self, inner: &Inner, settings: &Settings) -> crate::Result<()> {
        let report = self.report(inner, settings);
        let result = self.send(inner, settings, &report);
        match &result {
            Ok(()) => self.failing = false,
            Err(error) => {
                self.connection = None;
                if !self.failing {
                    tracing::warn!(error = %crate::error::Chain(error), "cacheme: cannot publish fleet stats; retrying every interval");
                }
                self.failing = true;
            }
        }
        result
    }

    fn send(
        &mut self,
        inner: &Inner,
        settings: &Settings,
        report: &ProcessReport,
    ) -> crate::Result<()> {
        let crate::storage::Backend::Redis(store) = &inner.backend else {
            return Ok(());
        };
        // (Not on a Redis Cluster yet: the reports would need the slot's
        // node; see docs/operations.md.)
        let Some(client) = store.client() else {
            return Err(crate::Error::NoBlockingConnection {
                command: "publish fleet stats",
            });
        };
        let redis_error = |source| crate::Error::Redis {
            command: "EVALSHA",
            key: FleetKeys::new(&inner.prefix).reports,
            source,
        };
        let connection = match &mut self.connection {
            Some(connection) => connection,
            empty => {
                let timeout = settings.op_timeout.max(MIN_INTERVAL);
                let connection = client
                    .get_connection_with_timeout(timeout)
                    .map_err(redis_error)?;
                connection
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| connection.set_write_timeout(Some(timeout)))
                    .map_err(redis_error)?;
                empty.insert(connection)
            }
        };
        let json = serde_json::to_string(report).expect("a report is plain data: it serializes");
        let keys = FleetKeys::new(&inner.prefix);
        let max_age =
            u64::try_from(max_age(settings.stats_interval).as_millis()).unwrap_or(u64::MAX);
        let _: u64 = redis::Script::new(PUBLISH)
            .key(&keys.procs)
            .key(&keys.reports)
            .arg(&report.process)
            .arg(json)
            .arg(report.at_ms)
            .arg(max_age)
            .arg(MAX_PROCESSES)
            .invoke(connection)
            .map_err(redis_error)?;
        Ok(())
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// The thread that publishes fleet stats and (with the `metrics` feature)
/// reports to the `metrics` facade, every `stats_interval`, while its cache
/// lives; and what it remembers between reports.
#[derive(Default)]
pub(crate) struct Reporter {
    started: AtomicBool,
    publisher: Mutex<Publisher>,
    #[cfg(feature = "metrics")]
    facade: Mutex<super::facade::Facade>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Start the thread, once, if there is anything to report.
    pub(crate) fn start_if_needed(&self, inner: &Arc<Inner>, settings: &Settings) {
        let needed = settings.fleet_stats || cfg!(feature = "metrics");
        if !needed || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(inner);
        let spawned = std::thread::Builder::new()
            .name("cacheme-stats".into())
            .spawn(move || run(&weak));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cacheme: cannot start the stats thread; no fleet stats or metrics");
        }
    }

    /// Report to the `metrics` facade now (with the `metrics` feature).
    pub(crate) fn report_metrics(&self, inner: &Inner) {
        #[cfg(feature = "metrics")]
        self.facade
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .report(inner);
        #[cfg(not(feature = "metrics"))]
        let _ = inner;
    }

    /// Publish fleet stats now.
    pub(crate) fn publish(&self, inner: &Inner, settings: &Settings) -> crate::Result<()> {
        self.publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .publish(inner, settings)
    }
}

fn run(cache: &Weak<Inner>) {
    loop {
        let Some(inner) = cache.upgrade() else { return };
        let settings = inner.settings();
        inner.reporter.report_metrics(&inner);
        if settings.fleet_stats {
            let _ = inner.reporter.publish(&inner, &settings);
        }
        let pause = settings.stats_interval.max(MIN_INTERVAL);
        drop((inner, settings));
        std::thread::sleep(pause);
    }
}
