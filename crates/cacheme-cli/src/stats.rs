//! `cacheme stats [--watch]`: the per-node stats every process publishes
//! (`Settings::fleet_stats`), summed across the fleet.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use cacheme::ops::{self, ProcessReport};
use cacheme::{Latency, StatsSnapshot};
use serde_json::json;

use crate::error::{CliError, redis};
use crate::output::{human, now_ms, table, utc};
use crate::{Global, connect};

/// One node, across the fleet.
#[derive(Debug, Default)]
struct Fleet {
    processes: u64,
    stats: StatsSnapshot,
    load_time: Latency,
    read_time: Latency,
    loads_per_sec: f64,
    calls_per_sec: f64,
}

fn sum(reports: &[ProcessReport]) -> BTreeMap<String, Fleet> {
    let mut nodes: BTreeMap<String, Fleet> = BTreeMap::new();
    for report in reports {
        for node in &report.nodes {
            let fleet = nodes.entry(node.node.name.clone()).or_default();
            fleet.processes += 1;
            fleet.stats.add(&node.node.stats);
            fleet.load_time.merge(&node.node.load_time);
            fleet.read_time.merge(&node.node.read_time);
            fleet.loads_per_sec += node.loads_per_sec;
            fleet.calls_per_sec += node.calls_per_sec;
        }
    }
    nodes
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn millis(latency: &Latency, q: f64) -> String {
    if latency.count() == 0 {
        "-".to_owned()
    } else {
        human(latency.quantile(q))
    }
}

fn render_json(reports: &[ProcessReport], nodes: &BTreeMap<String, Fleet>) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "at_ms": now_ms(),
        "processes": reports.len(),
        "nodes": nodes.iter().map(|(name, f)| json!({
            "node": name,
            "processes": f.processes,
            "hit_ratio": f.stats.hit_ratio(),
            "calls_per_sec": f.calls_per_sec,
            "loads_per_sec": f.loads_per_sec,
            "load_ms": { "count": f.load_time.count(), "p50": ms(f.load_time.quantile(0.5)), "p99": ms(f.load_time.quantile(0.99)), "max": ms(f.load_time.max()) },
            "read_ms": { "count": f.read_time.count(), "p50": ms(f.read_time.quantile(0.5)), "p99": ms(f.read_time.quantile(0.99)) },
            "stats": f.stats,
        })).collect::<Vec<_>>(),
    })
}

fn render_table(
    global: &Global,
    reports: &[ProcessReport],
    nodes: &BTreeMap<String, Fleet>,
) -> String {
    let mut out = format!(
        "fleet stats under `{}`: {} processes reporting, at {}\n\n",
        global.prefix,
        reports.len(),
        utc(now_ms())
    );
    if reports.is_empty() {
        out.push_str(
            "no process publishes fleet stats here: turn on `Settings::fleet_stats` \
             (`Cache::builder().fleet_stats(interval)`) in the applications\n",
        );
        return out;
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|(name, f)| {
            let s = &f.stats;
            let calls = s.hit + s.local_hit + s.miss;
            vec![
                name.clone(),
                f.processes.to_string(),
                calls.to_string(),
                percent(s.hit_ratio()),
                format!("{:.1}", f.calls_per_sec),
                s.load.to_string(),
                format!("{:.1}", f.loads_per_sec),
                millis(&f.load_time, 0.5),
                millis(&f.load_time, 0.99),
                millis(&f.read_time, 0.99),
                (s.load_error + s.store_error).to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "NODE", "PROCS", "CALLS", "HIT%", "CALLS/S", "LOADS", "LOADS/S", "LOAD P50",
            "LOAD P99", "READ P99", "ERRORS",
        ],
        &rows,
    ));
    out
}

pub(crate) fn run(global: &Global, watch: bool, interval: Duration) -> Result<ExitCode, CliError> {
    let mut con = connect(global)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if watch {
        // Ctrl-C ends the watch after the current refresh.
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                });
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    loop {
        let reports = ops::read_reports(&mut con, &global.prefix).map_err(redis("HGETALL"))?;
        let nodes = sum(&reports);
        let mut stdout = std::io::stdout().lock();
        let written = if global.json {
            let document = render_json(&reports, &nodes);
            if watch {
                writeln!(stdout, "{document}")
            } else {
                writeln!(stdout, "{document:#}")
            }
        } else if watch {
            // Redraw in place: home, clear the screen.
            write!(
                stdout,
                "\x1b[H\x1b[2J{}",
                render_table(global, &reports, &nodes)
            )
        } else {
            write!(stdout, "{}", render_table(global, &reports, &nodes))
        };
        if written.and_then(|()| stdout.flush()).is_err() {
            // The reader went away (a closed pipe): nothing more to show.
            return Ok(ExitCode::SUCCESS);
        }
        drop(stdout);
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        let deadline = std::time::Instant::now() + interval;
        while std::time::Instant::now() < deadline {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
}
