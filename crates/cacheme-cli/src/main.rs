//! `cacheme`: look at and act on a cacheme cache in Redis, from a shell.
//!
//! ```text
//! cacheme inspect cat:1                 # the decoded value, its lease, its tag and groups
//! cacheme tags                          # tags in Redis, with their values and sizes
//! cacheme nodes                         # dependency groups (invalid nodes), likewise
//! cacheme invalidate --tag cats         # O(1); --key, --group, --pattern too; --dry-run
//! cacheme stats --watch                 # fleet stats per node (Settings::fleet_stats)
//! ```
//!
//! Global options: `--url` (or `REDIS_URL`; default `redis://127.0.0.1:6379/`),
//! `--prefix` (default `CM:`), `--json` for scripts. See docs/operations.md.

mod error;
mod inspect;
mod invalidate;
mod output;
mod scan;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::CliError;

/// Inspect and operate a cacheme cache in Redis.
#[derive(Debug, Parser)]
#[command(name = "cacheme", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
struct Global {
    /// Redis URL (`redis://[user:password@]host:port/db`); never printed with its password.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/",
        global = true,
        hide_env_values = true
    )]
    url: String,
    /// The cache's key prefix.
    #[arg(long, default_value = "CM:", global = true)]
    prefix: String,
    /// Print JSON (one document; one per line with `--watch`).
    #[arg(long, global = true)]
    json: bool,
    /// Progress bars on stderr: `auto` (when stderr is a terminal), `always`
    /// (plain lines when it is not), `never`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, global = true)]
    progress: ProgressMode,
}

/// When to draw progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what is stored under a cache key: state, write time, TTL, codec,
    /// size, tag and groups, lease and waiters, the payload as JSON.
    Inspect {
        /// The cache key (without the prefix), e.g. `cat:1`.
        key: String,
    },
    /// List the tags of the values in Redis, with how many values and bytes.
    Tags,
    /// List the dependency groups (invalid nodes) of the values in Redis,
    /// with how many values and bytes.
    Nodes,
    /// Invalidate by key, tag, group or pattern.
    Invalidate(invalidate::Targets),
    /// Per-node stats summed across the fleet (the processes that publish
    /// them: `Settings::fleet_stats`).
    Stats {
        /// Refresh the table in place until interrupted.
        #[arg(long)]
        watch: bool,
        /// How often `--watch` refreshes, in seconds.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("cacheme: {}", error.chain());
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let global = cli.global;
    match cli.command {
        Command::Inspect { key } => inspect::run(&global, &key),
        Command::Tags => scan::run(&global, scan::Index::Tags),
        Command::Nodes => scan::run(&global, scan::Index::Groups),
        Command::Invalidate(targets) => invalidate::run(&global, targets),
        Command::Stats { watch, interval } => {
            let interval = Duration::try_from_secs_f64(interval)
                .ok()
                .filter(|i| !i.is_zero())
                .ok_or(CliError::Usage(
                    "--interval must be a positive number of seconds",
                ))?;
            stats::run(&global, watch, interval)
        }
    }
}

/// A blocking connection to the server `--url` names, with clear errors.
fn connect(global: &Global) -> Result<redis::Connection, CliError> {
    let url = cacheme::ops::redact_url(&global.url);
    let client = redis::Client::open(global.url.as_str()).map_err(|source| CliError::BadUrl {
        url: url.clone(),
        source,
    })?;
    let connection = client
        .get_connection_with_timeout(Duration::from_secs(3))
        .map_err(|source| CliError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let timeout = Some(Duration::from_secs(10));
    connection
        .set_read_timeout(timeout)
        .and_then(|()| connection.set_write_timeout(timeout))
        .map_err(|source| CliError::Unreachable { url, source })?;
    Ok(connection)
}
