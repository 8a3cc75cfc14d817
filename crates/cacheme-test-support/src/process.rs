//! Child processes: spawning with a watchdog, signals, temporary
//! directories, log tails, and short-lived commands with a time limit.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable that overrides the `redis-server` binary.
pub const REDIS_SERVER_BIN_ENV: &str = "REDIS_SERVER_BIN";

/// Environment variable that overrides the `redis-cli` binary.
///
/// Without it, `redis-cli` is taken from the directory of
/// `$REDIS_SERVER_BIN` when that names a path with a `redis-cli` beside it,
/// and from `PATH` otherwise.
pub const REDIS_CLI_BIN_ENV: &str = "REDIS_CLI_BIN";

/// A running `redis-server` and its watchdog.
pub(crate) struct Process {
    pub(crate) redis: Child,
    watchdog: Option<Child>,
}

impl Process {
    /// Wraps a freshly spawned server and pairs it with a watchdog that
    /// kills it (and removes `dir`) when the test process dies.
    pub(crate) fn watched(redis: Child, dir: &Path) -> Process {
        let watchdog = spawn_watchdog(redis.id(), dir);
        Process { redis, watchdog }
    }

    /// SIGKILLs the server and reaps it.
    pub(crate) fn stop(mut self) {
        // Stop the watchdog first, so that it can never signal a pid that
        // has been reaped below and reused by another process.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // SIGKILL also ends a SIGSTOPped process.
        let _ = self.redis.kill();
        let _ = self.redis.wait();
    }
}

/// Spawns `sh` waiting on a pipe from this process: when the pipe closes
/// because the test process is gone without dropping the server, it kills
/// the server and removes its directory. It is itself SIGKILLed when the
/// server is stopped normally. Best effort: returns `None` if `sh` cannot be
/// run.
fn spawn_watchdog(pid: u32, dir: &Path) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(
            "trap '' INT TERM HUP; read -r _; \
             kill -s KILL \"$1\" 2>/dev/null; rm -rf -- \"$2\"",
        )
        .arg("cacheme-redis-watchdog")
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Sends `signal` (a name such as `STOP`) to `pid`.
///
/// The shell's `kill` builtin keeps this std-only and does not need procps'
/// `kill` binary to be installed.
#[track_caller]
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg("kill -s \"$1\" \"$2\"")
        .arg("cacheme-redis-signal")
        .arg(signal)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `sh` to send SIG{signal} to {pid}: {e}"));
    assert!(
        status.success(),
        "sending SIG{signal} to redis-server (pid {pid}) failed: {status}"
    );
}

/// The `redis-server` binary: `$REDIS_SERVER_BIN`, else `redis-server` on
/// `PATH`.
pub(crate) fn default_server_binary() -> PathBuf {
    match std::env::var_os(REDIS_SERVER_BIN_ENV) {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => PathBuf::from("redis-server"),
    }
}

/// The `redis-cli` binary: `$REDIS_CLI_BIN`, else the one beside
/// `$REDIS_SERVER_BIN`, else `redis-cli` on `PATH`.
pub(crate) fn default_cli_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(REDIS_CLI_BIN_ENV).filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let server = default_server_binary();
    if let Some(dir) = server.parent().filter(|d| !d.as_os_str().is_empty()) {
        let beside = dir.join("redis-cli");
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("redis-cli")
}

pub(crate) fn missing_binary_message(binary: &Path, error: &io::Error) -> String {
    let from_env = std::env::var_os(REDIS_SERVER_BIN_ENV)
        .filter(|v| !v.is_empty())
        .is_some_and(|v| Path::new(&v) == binary);
    let source = if from_env {
        format!(" (from ${REDIS_SERVER_BIN_ENV})")
    } else if binary == Path::new("redis-server") {
        " (looked up on PATH)".to_owned()
    } else {
        String::new()
    };
    format!(
        "redis-server binary `{}`{source} not found: {error}. The tests need a real \
         redis-server: install it (`apt-get install redis-server` on Debian/Ubuntu) or run \
         `./scripts/test`, which installs it; or point ${REDIS_SERVER_BIN_ENV} at the binary.",
        binary.display()
    )
}

fn missing_cli_message(binary: &Path, error: &io::Error) -> String {
    format!(
        "redis-cli binary `{}` not found: {error}. Clusters, TLS servers and sentinels are \
         set up and checked with redis-cli: install it (`apt-get install redis-tools` on \
         Debian/Ubuntu) or run `./scripts/test`, which installs it; or point \
         ${REDIS_CLI_BIN_ENV} at the binary.",
        binary.display()
    )
}

/// What a finished short-lived command printed.
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Everything the command printed, for failure messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `redis-cli` with `args`, killing it if it runs longer than
/// `timeout`. `Err` carries a message for a panic.
pub(crate) fn run_redis_cli<I, S>(args: I, timeout: Duration) -> Result<Output, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let binary = default_cli_binary();
    let mut command = Command::new(&binary);
    command.args(args);
    match run_with_timeout(command, timeout) {
        Err(e) if e.kind() == ErrorKind::NotFound => Err(missing_cli_message(&binary, &e)),
        Err(e) => Err(format!("cannot run `{}`: {e}", binary.display())),
        Ok(None) => Err(format!(
            "`{}` did not finish within {timeout:?} and was killed",
            binary.display()
        )),
        Ok(Some(output)) => Ok(output),
    }
}

/// Checks that `redis-cli` can be run (`redis-cli --version`), so that a
/// missing binary is reported at once with the install hint rather than as
/// a server that never becomes ready.
pub(crate) fn check_redis_cli() -> Result<(), String> {
    let output = run_redis_cli(["--version"], Duration::from_secs(10))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{} --version` failed:\n{}",
            default_cli_binary().display(),
            output.describe()
        ))
    }
}

/// Runs `command` to completion with its output captured; `Ok(None)` if it
/// had to be killed after `timeout`.
fn run_with_timeout(mut command: Command, timeout: Duration) -> io::Result<Option<Output>> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    };
    let collect = |reader: Option<thread::JoinHandle<String>>| {
        reader
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default()
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    Ok(status.map(|status| Output {
        status,
        stdout,
        stderr,
    }))
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Calls `check` every `interval` until it returns `Ok` or `timeout` has
/// passed; then the error is the last reason `check` gave.
pub(crate) fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(reason) if Instant::now() >= deadline => return Err(reason),
            Err(_) => thread::sleep(interval),
        }
    }
}

/// Creates a fresh, uniquely named directory under the system temp dir.
pub(crate) fn create_temp_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "cacheme-redis-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = base.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!(
                "cannot create a temporary directory for redis-server in {}: {e}",
                base.display()
            ),
        }
    }
}

/// The last lines of `redis.log` and of the captured stdout/stderr.
pub(crate) fn log_tail(dir: &Path) -> String {
    const LINES: usize = 30;
    let mut out = String::new();
    for (name, label) in [("redis.log", "redis.log"), ("stdout.log", "stdout/stderr")] {
        let path = dir.join(name);
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            continue;
        }
        let start = lines.len().saturating_sub(LINES);
        let _ = writeln!(out, "--- last lines of {label} ({}) ---", path.display());
        for line in &lines[start..] {
            let _ = writeln!(out, "{line}");
        }
    }
    if out.is_empty() {
        out.push_str("(redis-server wrote no log output)\n");
    }
    out
}
