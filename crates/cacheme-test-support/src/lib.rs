//! Test helpers for cacheme: run real, throw-away `redis-server` processes.
//!
//! Integration tests that need Redis start their own server with
//! [`RedisServer::start`]. Every server listens on its own free loopback port,
//! keeps its files in its own temporary directory, persists nothing, and is
//! killed (and its directory removed) when the [`RedisServer`] value is
//! dropped, including when the test panics. Many tests in one test binary can
//! therefore each run their own server in parallel.
//!
//! ```no_run
//! use cacheme_test_support::RedisServer;
//!
//! let server = RedisServer::start();
//! let mut con = server.connection();
//! let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).expect("SET");
//!
//! // Extra configuration goes through the builder.
//! let small = RedisServer::builder()
//!     .arg("--maxmemory")
//!     .arg("1mb")
//!     .arg("--maxmemory-policy")
//!     .arg("noeviction")
//!     .start();
//! println!("connect to {}", small.url());
//! ```
//!
//! # Faults
//!
//! A server can be [killed](RedisServer::kill) (SIGKILL) and
//! [restarted](RedisServer::restart) on the same port, or
//! [paused](RedisServer::pause) (SIGSTOP) and [resumed](RedisServer::resume)
//! (SIGCONT) to simulate a hung server: while paused, connections are still
//! accepted by the kernel but no command is ever answered.
//!
//! # The `redis-server` binary
//!
//! The binary is `redis-server` from `PATH`, unless the environment variable
//! `REDIS_SERVER_BIN` names another one, or the builder is given an explicit
//! [`binary`](RedisServerBuilder::binary). On Debian and Ubuntu it is installed
//! with `apt-get install redis-server`; `./scripts/test` installs it when it is
//! missing.
//!
//! # Leaks
//!
//! Dropping a [`RedisServer`] always stops its process. For the cases where
//! the value is never dropped (a server kept in a `static`, `std::process::exit`,
//! an aborting panic, the test binary being killed), each server is paired with
//! a tiny `sh` watchdog that kills it and removes its directory as soon as
//! the test process is gone. The watchdog ignores SIGINT, SIGTERM and SIGHUP,
//! so that it outlives a test process killed with its whole process group
//! (Ctrl-C, `timeout`), but it never outlives that process.
//!
//! This crate is for tests only and is not published.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable that overrides the `redis-server` binary.
pub const REDIS_SERVER_BIN_ENV: &str = "REDIS_SERVER_BIN";

/// How long [`RedisServer::start`] waits for a new server to answer `PING`.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh ports [`RedisServer::start`] tries when the one it picked is
/// taken by someone else before `redis-server` could bind it.
const PORT_ATTEMPTS: usize = 10;

/// The port of the shared development Redis; never handed out.
const RESERVED_PORT: u16 = 6379;

/// Ports of live servers started by this process, so that two servers in
/// the same test binary never race for the same port.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A `redis-server` child process owned by a test.
///
/// Created with [`RedisServer::start`] or [`RedisServer::builder`]. The
/// process is killed and its temporary directory removed on drop.
///
/// `RedisServer` is `Send + Sync`; the fault helpers that only signal the
/// process ([`pause`](Self::pause), [`resume`](Self::resume)) take `&self`,
/// those that replace it ([`kill`](Self::kill), [`restart`](Self::restart))
/// take `&mut self`.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    args: Vec<OsString>,
    startup_timeout: Duration,
    process: Mutex<Option<Process>>,
}

/// Builder for a [`RedisServer`] with extra configuration.
///
/// ```no_run
/// use cacheme_test_support::RedisServer;
///
/// let server = RedisServer::builder()
///     .arg("--maxmemory")
///     .arg("1mb")
///     .arg("--maxmemory-policy")
///     .arg("noeviction")
///     .start();
/// # drop(server);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    binary: Option<PathBuf>,
    args: Vec<OsString>,
    startup_timeout: Option<Duration>,
}

impl RedisServerBuilder {
    /// Appends one command-line argument for `redis-server`.
    ///
    /// Extra arguments come after the helper's own (`--port`, `--bind`,
    /// `--save ""`, ...), so they can also override them, except for `--port`,
    /// `--bind` and `--dir`, which the helper relies on.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several command-line arguments for `redis-server`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Uses this `redis-server` binary instead of `$REDIS_SERVER_BIN` or the
    /// one on `PATH`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// How long to wait for the server to answer `PING` after (re)starting it.
    /// Defaults to [`DEFAULT_STARTUP_TIMEOUT`].
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Starts the server on a free loopback port and waits until it answers
    /// `PING`.
    ///
    /// # Panics
    ///
    /// If the binary cannot be found or run, if no free port could be bound
    /// after several attempts, or if the server does not come up within the
    /// startup timeout. The message includes the tail of the server's log.
    #[track_caller]
    pub fn start(self) -> RedisServer {
        let binary = self.binary.unwrap_or_else(default_binary);
        let startup_timeout = self.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT);
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut server = RedisServer {
                port: reserve_free_port(),
                dir: create_temp_dir(),
                binary: binary.clone(),
                args: self.args.clone(),
                startup_timeout,
                process: Mutex::new(None),
            };
            match server.launch() {
                Ok(()) => return server,
                // Someone bound the port between our probe and the server's
                // bind. Dropping `server` releases the port and removes its
                // directory; try again with another port.
                Err(LaunchError::PortTaken(details)) => last_failure = details,
                Err(LaunchError::Fatal(message)) => {
                    drop(server);
                    panic!("{message}");
                }
            }
        }
        panic!(
            "redis-server could not bind a free loopback port in {PORT_ATTEMPTS} attempts; \
             last failure:\n{last_failure}"
        );
    }
}

impl RedisServer {
    /// Starts a `redis-server` with the default configuration on a free
    /// loopback port and waits until it answers `PING`.
    ///
    /// Shorthand for `RedisServer::builder().start()`; see
    /// [`RedisServerBuilder::start`] for the panics.
    #[track_caller]
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    /// Returns a builder for a server with extra configuration.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The connection URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TCP port the server listens on (on 127.0.0.1). It stays the same
    /// across [`restart`](Self::restart)s.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `redis` client for this server (no connection is made yet).
    #[track_caller]
    pub fn client(&self) -> redis::Client {
        match redis::Client::open(self.url()) {
            Ok(client) => client,
            Err(e) => panic!("invalid redis URL {}: {e}", self.url()),
        }
    }

    /// A new synchronous connection, for setting up and checking state in
    /// tests.
    ///
    /// The connection has no read or write timeout; set one with
    /// [`redis::Connection::set_read_timeout`] when the server may be
    /// [paused](Self::pause).
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    #[track_caller]
    pub fn connection(&self) -> redis::Connection {
        match self.client().get_connection() {
            Ok(con) => con,
            Err(e) => panic!("cannot connect to redis-server at {}: {e}", self.url()),
        }
    }

    /// The process id of the server process, or `None` after
    /// [`kill`](Self::kill) (until [`restart`](Self::restart)).
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(|p| p.redis.id())
    }

    /// The path of the server's log file (kept across restarts, removed on
    /// drop).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The last lines of the server's log and of its stdout/stderr, for
    /// failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir)
    }

    /// Whether the server process exists and has not exited. A
    /// [paused](Self::pause) server is still running.
    pub fn is_running(&self) -> bool {
        self.running_pid().is_some()
    }

    /// Kills the server with SIGKILL and waits for it to exit. Nothing is
    /// persisted, so all data is lost. Does nothing if it is not running.
    ///
    /// The port stays reserved for [`restart`](Self::restart) within this
    /// process, but another process could take it in the meantime.
    pub fn kill(&mut self) {
        if let Some(process) = self.lock().take() {
            process.stop();
        }
    }

    /// Starts the server again on the same port with the same arguments and
    /// waits until it answers `PING`. Kills it first if it is still running.
    ///
    /// The server comes back empty: nothing is persisted.
    ///
    /// # Panics
    ///
    /// If the port was taken by another process while the server was down,
    /// or if the server does not come up within the startup timeout.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill();
        match self.launch() {
            Ok(()) => {}
            Err(LaunchError::PortTaken(details)) => panic!(
                "cannot restart redis-server: port {} was taken by another process while the \
                 server was down\n{details}",
                self.port
            ),
            Err(LaunchError::Fatal(message)) => panic!("cannot restart redis-server: {message}"),
        }
    }

    /// Suspends the server with SIGSTOP. Connections are still accepted by
    /// the kernel, but no command is answered until [`resume`](Self::resume).
    ///
    /// # Panics
    ///
    /// If the server is not running or the signal cannot be sent.
    #[track_caller]
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a server suspended with [`pause`](Self::pause) (SIGCONT).
    ///
    /// # Panics
    ///
    /// If the server is not running or the signal cannot be sent.
    #[track_caller]
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn lock(&self) -> MutexGuard<'_, Option<Process>> {
        // A panic while holding the lock leaves the state consistent.
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pid, if the process exists and has not exited.
    fn running_pid(&self) -> Option<u32> {
        let mut guard = self.lock();
        let process = guard.as_mut()?;
        match process.redis.try_wait() {
            Ok(None) => Some(process.redis.id()),
            _ => None,
        }
    }

    #[track_caller]
    fn signal(&self, signal: &str) {
        let Some(pid) = self.running_pid() else {
            panic!(
                "cannot send SIG{signal}: redis-server on port {} is not running",
                self.port
            );
        };
        // The shell's `kill` builtin keeps this std-only and does not need
        // procps' `kill` binary to be installed.
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

    /// Spawns the process on `self.port` and waits for it to answer.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let log = self.log_path();
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .map_err(|e| LaunchError::Fatal(format!("cannot create output file: {e}")))?;
        let stderr = output
            .try_clone()
            .map_err(|e| LaunchError::Fatal(format!("cannot create output file: {e}")))?;

        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(stderr));

        let redis = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(LaunchError::Fatal(missing_binary_message(&self.binary, &e)));
            }
            Err(e) => {
                return Err(LaunchError::Fatal(format!(
                    "cannot run redis-server binary `{}`: {e}",
                    self.binary.display()
                )));
            }
        };
        let watchdog = spawn_watchdog(redis.id(), &self.dir);
        *self.lock() = Some(Process { redis, watchdog });

        let deadline = Instant::now() + self.startup_timeout;
        loop {
            let exited = match self.lock().as_mut() {
                Some(process) => process.redis.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                if let Some(process) = self.lock().take() {
                    process.stop();
                }
                return Err(self.exited_error(status));
            }
            let pid = self.pid().unwrap_or_default();
            match self.probe(pid) {
                Probe::Ready => return Ok(()),
                // Another server answers on our port: ours will fail to bind.
                Probe::Impostor | Probe::NotYet => {}
            }
            if Instant::now() >= deadline {
                if let Some(process) = self.lock().take() {
                    process.stop();
                }
                return Err(LaunchError::Fatal(format!(
                    "redis-server on port {} did not answer PING within {:?}\n{}",
                    self.port,
                    self.startup_timeout,
                    self.log_tail()
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn exited_error(&self, status: ExitStatus) -> LaunchError {
        let tail = self.log_tail();
        let details = format!(
            "redis-server on port {} exited during startup ({status})\n{tail}",
            self.port
        );
        if tail.contains("Address already in use") || tail.contains("Could not create server TCP") {
            LaunchError::PortTaken(details)
        } else {
            LaunchError::Fatal(details)
        }
    }

    /// Checks that the server on our port answers PING and is our process
    /// (not some other server that grabbed the port).
    fn probe(&self, pid: u32) -> Probe {
        let timeout = Duration::from_millis(250);
        let Ok(client) = redis::Client::open(self.url()) else {
            return Probe::NotYet;
        };
        let Ok(mut con) = client.get_connection_with_timeout(timeout) else {
            return Probe::NotYet;
        };
        if con.set_read_timeout(Some(timeout)).is_err()
            || con.set_write_timeout(Some(timeout)).is_err()
        {
            return Probe::NotYet;
        }
        let Ok(pong) = redis::cmd("PING").query::<String>(&mut con) else {
            return Probe::NotYet;
        };
        if pong != "PONG" {
            return Probe::NotYet;
        }
        let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut con) else {
            return Probe::NotYet;
        };
        let server_pid = info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        match server_pid {
            Some(p) if p == pid => Probe::Ready,
            Some(_) => Probe::Impostor,
            None => Probe::NotYet,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(process) = self.lock().take() {
            process.stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
        release_port(self.port);
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("url", &self.url())
            .field("pid", &self.pid())
            .field("dir", &self.dir)
            .field("binary", &self.binary)
            .field("args", &self.args)
            .finish()
    }
}

enum LaunchError {
    /// The server could not bind its port (someone else holds it).
    PortTaken(String),
    /// Anything else: the message is the panic message.
    Fatal(String),
}

enum Probe {
    Ready,
    Impostor,
    NotYet,
}

/// A running `redis-server` and its watchdog.
struct Process {
    redis: Child,
    watchdog: Option<Child>,
}

impl Process {
    fn stop(mut self) {
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

fn default_binary() -> PathBuf {
    match std::env::var_os(REDIS_SERVER_BIN_ENV) {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => PathBuf::from("redis-server"),
    }
}

fn missing_binary_message(binary: &Path, error: &io::Error) -> String {
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

/// Creates a fresh, uniquely named directory under the system temp dir.
fn create_temp_dir() -> PathBuf {
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

fn ports_in_use() -> MutexGuard<'static, Option<HashSet<u16>>> {
    PORTS_IN_USE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Picks a free loopback port by binding port 0, and reserves it within
/// this process until [`release_port`].
fn reserve_free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read the bound port: {e}"))
            .port();
        drop(listener);
        if port == RESERVED_PORT {
            continue;
        }
        if ports_in_use().get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("cannot find a free loopback port");
}

fn release_port(port: u16) {
    if let Some(ports) = ports_in_use().as_mut() {
        ports.remove(&port);
    }
}

/// The last lines of `redis.log` and of the captured stdout/stderr.
fn log_tail(dir: &Path) -> String {
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
