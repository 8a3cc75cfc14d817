//! `cacheme invalidate`: through the library, so that it is the same
//! invalidation an application runs (leases revoked, the sequence bumped,
//! every process told).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cacheme::{Cache, Pattern, Settings, ops};
use clap::Args;
use serde_json::json;

use crate::error::{CliError, redis};
use crate::output::progress;
use crate::{Global, connect, scan};

/// What to invalidate (at least one).
#[derive(Debug, Args)]
pub(crate) struct Targets {
    /// A cache key: its value is marked stale. Repeatable.
    #[arg(long = "key", value_name = "KEY")]
    keys: Vec<String>,
    /// A tag: every value written under it is never served again (O(1)). Repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A dependency group (invalid key): every value in it is stale (O(1)). Repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// A Redis glob over cache keys (`cat:*`): matching values are deleted
    /// (a scan, with a progress bar; Ctrl-C stops it between pages).
    #[arg(long = "pattern", value_name = "GLOB")]
    patterns: Vec<String>,
    /// Count what would be invalidated; change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Targets {
    fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.tags.is_empty()
            && self.groups.is_empty()
            && self.patterns.is_empty()
    }
}

pub(crate) fn run(global: &Global, targets: Targets) -> Result<ExitCode, CliError> {
    if targets.is_empty() {
        return Err(CliError::Usage(
            "name something to invalidate: --key, --tag, --group or --pattern",
        ));
    }
    // Check the URL and the server first, for a clear error.
    let mut con = connect(global)?;
    if targets.dry_run {
        return dry_run(global, &mut con, &targets);
    }
    drop(con);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(invalidate(global, targets))
}

async fn invalidate(global: &Global, targets: Targets) -> Result<ExitCode, CliError> {
    let mut settings = Settings::default();
    // A failed invalidation is reported here, not queued in a process that exits.
    settings.invalidation_queue = 0;
    settings.op_timeout = Duration::from_secs(10);
    let cache = Cache::builder()
        .redis_url(global.url.clone())
        .prefix(global.prefix.clone())
        .settings(settings)
        .build()
        .map_err(|source| CliError::Cache {
            what: "cannot set up the cache",
            source,
        })?;
    let paged = !targets.keys.is_empty() || !targets.patterns.is_empty();
    let bar = progress(
        global,
        (targets.patterns.is_empty() && !targets.keys.is_empty())
            .then_some(targets.keys.len() as u64),
        "invalidating",
    );
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut invalidation = cache.create_invalidation();
    for key in &targets.keys {
        invalidation = invalidation.key(key.clone());
    }
    for tag in &targets.tags {
        invalidation = invalidation.tag(tag.clone());
    }
    for group in &targets.groups {
        invalidation = invalidation.invalid_key(group.clone());
    }
    for pattern in &targets.patterns {
        invalidation = invalidation.pattern(Pattern::glob(pattern.clone()));
    }
    if paged {
        let (bar, stop) = (bar.clone(), interrupted.clone());
        let keys = targets.keys.len() as u64;
        invalidation = invalidation.on_progress(move |progress| {
            if keys > 0 && progress.scanned == 0 {
                bar.set_position(keys.min(bar.length().unwrap_or(keys)));
            } else {
                bar.set_position(progress.scanned);
            }
            bar.set_message(format!("invalidating ({} values)", progress.invalidated));
            !stop.load(Ordering::Relaxed)
        });
    }
    let run = invalidation.run();
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            result = &mut run => break result,
            _ = tokio::signal::ctrl_c(), if !interrupted.load(Ordering::Relaxed) => {
                // Stop between pages; what was done is still announced.
                interrupted.store(true, Ordering::Relaxed);
                bar.set_message("stopping after this page");
            }
        }
    };
    // (The last state stays on screen: how far it got.)
    bar.finish();
    let count = result.map_err(|source| CliError::Cache {
        what: "the invalidation failed",
        source,
    })?;
    let stopped = interrupted.load(Ordering::Relaxed);
    if global.json {
        println!(
            "{:#}",
            json!({
                "invalidated": count,
                "interrupted": stopped,
                "keys": targets.keys,
                "tags": targets.tags,
                "groups": targets.groups,
                "patterns": targets.patterns,
            })
        );
    } else {
        let mut what = Vec::new();
        if !targets.keys.is_empty() || !targets.patterns.is_empty() {
            what.push(format!("{count} values marked stale or deleted"));
        }
        for tag in &targets.tags {
            what.push(format!(
                "tag `{tag}` (every value under it is no longer served)"
            ));
        }
        for group in &targets.groups {
            what.push(format!("group `{group}` (every value in it is stale)"));
        }
        let status = if stopped {
            "interrupted after"
        } else {
            "invalidated"
        };
        println!("{status}: {}", what.join("; "));
    }
    Ok(if stopped {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Count what each target would invalidate, without changing anything.
fn dry_run(
    global: &Global,
    con: &mut redis::Connection,
    targets: &Targets,
) -> Result<ExitCode, CliError> {
    let mut keys_found = 0u64;
    for key in &targets.keys {
        let exists: bool = redis::cmd("EXISTS")
            .arg(ops::value_key(&global.prefix, key))
            .query(con)
            .map_err(redis("EXISTS"))?;
        keys_found += u64::from(exists);
    }
    let mut matched = 0u64;
    if !targets.patterns.is_empty() {
        let bar = progress(global, None, "scanning");
        for pattern in &targets.patterns {
            let glob = ops::scan_glob(&global.prefix, pattern);
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&glob)
                    .arg("COUNT")
                    .arg(1000)
                    .query(con)
                    .map_err(redis("SCAN"))?;
                bar.inc(keys.len() as u64);
                matched += keys
                    .iter()
                    .filter_map(|key| ops::cache_key_of(&global.prefix, key))
                    .filter(|key| ops::glob_match(pattern, key))
                    .count() as u64;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        bar.finish_and_clear();
    }
    let census = if targets.tags.is_empty() && targets.groups.is_empty() {
        scan::Census::default()
    } else {
        scan::census(global, con)?
    };
    let count_of = |map: &std::collections::BTreeMap<String, scan::Sizes>, names: &[String]| {
        names
            .iter()
            .map(|name| (name.clone(), map.get(name).map_or(0, |sizes| sizes.values)))
            .collect::<Vec<_>>()
    };
    let tags = count_of(&census.tags, &targets.tags);
    let groups = count_of(&census.groups, &targets.groups);
    if global.json {
        println!(
            "{:#}",
            json!({
                "dry_run": true,
                "keys": keys_found,
                "pattern_values": matched,
                "tags": tags.iter().map(|(n, c)| json!({"tag": n, "values": c})).collect::<Vec<_>>(),
                "groups": groups.iter().map(|(n, c)| json!({"group": n, "values": c})).collect::<Vec<_>>(),
            })
        );
    } else {
        if !targets.keys.is_empty() {
            println!(
                "would mark stale: {keys_found} of {} keys",
                targets.keys.len()
            );
        }
        if !targets.patterns.is_empty() {
            println!("would delete: {matched} values matching the patterns");
        }
        for (tag, count) in &tags {
            println!("would invalidate tag `{tag}`: {count} values");
        }
        for (group, count) in &groups {
            println!("would invalidate group `{group}`: {count} values");
        }
        println!("dry run: nothing was changed");
    }
    Ok(ExitCode::SUCCESS)
}
