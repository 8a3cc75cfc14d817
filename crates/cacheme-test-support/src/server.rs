//! One throw-away `redis-server` process: [`RedisServer`] and its builder.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::acl::{self, ADMIN_USER, AclUser, Auth, DefaultUser};
use crate::ports::{release_port, reserve_free_port};
use crate::process::{self, Process};
use crate::tls::{TlsCertificates, TlsClientAuth, TlsFiles};

/// How long [`RedisServer::start`] waits for a new server to answer `PING`.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh ports [`RedisServer::start`] tries when the one it picked is
/// taken by someone else before `redis-server` could bind it.
const PORT_ATTEMPTS: usize = 10;

/// How long one `redis-cli` call of [`RedisServer::cli`] may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The cluster bus port (`--cluster-port`) of a cluster node.
    bus_port: Option<u16>,
    dir: PathBuf,
    binary: PathBuf,
    args: Vec<OsString>,
    startup_timeout: Duration,
    auth: Option<Auth>,
    tls: Option<TlsFiles>,
    config: Option<ConfigFile>,
    process: Mutex<Option<Process>>,
}

/// A configuration file written into the server's directory before its
/// first start and passed as the first argument (sentinels need one, since
/// they rewrite it).
#[derive(Clone)]
pub(crate) struct ConfigFile {
    pub(crate) name: &'static str,
    pub(crate) contents: String,
    /// Run `redis-server FILE --sentinel`.
    pub(crate) sentinel: bool,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The contents may hold a password (`sentinel auth-pass`).
        f.debug_struct("ConfigFile")
            .field("name", &self.name)
            .field("sentinel", &self.sentinel)
            .finish_non_exhaustive()
    }
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
///
/// Authentication and TLS:
///
/// ```no_run
/// use cacheme_test_support::{RedisServer, TlsClientAuth};
///
/// let server = RedisServer::builder()
///     .disable_default_user()
///     .acl_user("app", "secret", "~CM:* &CM:* +@all")
///     .tls(TlsClientAuth::Required)
///     .start();
/// assert!(server.user_url("app").starts_with("rediss://app:secret@127.0.0.1:"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    binary: Option<PathBuf>,
    args: Vec<OsString>,
    startup_timeout: Option<Duration>,
    default_user: Option<DefaultUser>,
    users: Vec<AclUser>,
    tls_client_auth: Option<TlsClientAuth>,
    tls_certificates: Option<TlsCertificates>,
    config: Option<ConfigFile>,
    cluster_bus: bool,
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

    /// Gives the `default` user this password (what `requirepass` does), so
    /// that clients must `AUTH`. [`RedisServer::user_url`]`("default")` is a
    /// URL with it. Replaces an earlier
    /// [`disable_default_user`](Self::disable_default_user).
    ///
    /// # Panics
    ///
    /// If the password is empty or contains whitespace.
    #[track_caller]
    pub fn requirepass(mut self, password: impl Into<String>) -> Self {
        let password = password.into();
        acl::check_acl_word("password", &password);
        self.default_user = Some(DefaultUser::Password(password));
        self
    }

    /// Turns the `default` user off: every client must log in as a named
    /// user. Replaces an earlier [`requirepass`](Self::requirepass).
    pub fn disable_default_user(mut self) -> Self {
        self.default_user = Some(DefaultUser::Disabled);
        self
    }

    /// Adds an ACL user with a password and ACL rules, written to the
    /// server's ACL file as `user NAME on >PASSWORD RULES`, for example
    /// `acl_user("app", "secret", "~CM:* &CM:* +@all")`.
    ///
    /// The `default` user stays open (no password) unless
    /// [`requirepass`](Self::requirepass) or
    /// [`disable_default_user`](Self::disable_default_user) say otherwise.
    ///
    /// # Panics
    ///
    /// If the name or password is empty or contains whitespace, or the name
    /// is `default` (use [`requirepass`](Self::requirepass)).
    #[track_caller]
    pub fn acl_user(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        rules: impl Into<String>,
    ) -> Self {
        let (name, password) = (name.into(), password.into());
        acl::check_acl_word("user name", &name);
        acl::check_acl_word("password", &password);
        assert!(
            name != "default" && name != ADMIN_USER,
            "acl_user: the user name {name:?} is reserved; use requirepass() for `default`"
        );
        self.users.push(AclUser {
            name,
            password,
            rules: rules.into(),
        });
        self
    }

    /// Makes the server TLS-only (`--port 0 --tls-port PORT`), with a new
    /// private CA and certificates generated for it (see
    /// [`TlsCertificates::generate`]) unless
    /// [`tls_certificates`](Self::tls_certificates) gives some.
    ///
    /// The certificates are written to the server's directory; see
    /// [`RedisServer::tls`].
    pub fn tls(mut self, client_auth: TlsClientAuth) -> Self {
        self.tls_client_auth = Some(client_auth);
        self
    }

    /// Makes the server TLS-only with these certificates (client
    /// certificates [required](TlsClientAuth::Required) unless
    /// [`tls`](Self::tls) says otherwise).
    pub fn tls_certificates(mut self, certificates: TlsCertificates) -> Self {
        self.tls_certificates = Some(certificates);
        self
    }

    /// Writes `contents` to `name` in the server's directory before its first
    /// start, and runs `redis-server DIR/NAME [--sentinel] ...`.
    pub(crate) fn config_file(
        mut self,
        name: &'static str,
        contents: String,
        sentinel: bool,
    ) -> Self {
        self.config = Some(ConfigFile {
            name,
            contents,
            sentinel,
        });
        self
    }

    /// Reserves a second free port for the cluster bus (`--cluster-port`),
    /// since `PORT + 10000` may be taken or out of range.
    pub(crate) fn cluster_bus(mut self) -> Self {
        self.cluster_bus = true;
        self
    }

    /// Starts the server on a free loopback port and waits until it answers
    /// `PING`.
    ///
    /// # Panics
    ///
    /// If the binary cannot be found or run (or, for a TLS server,
    /// `redis-cli`), if no free port could be bound after several attempts,
    /// or if the server does not come up within the startup timeout. The
    /// message includes the tail of the server's log.
    #[track_caller]
    pub fn start(self) -> RedisServer {
        let binary = self.binary.unwrap_or_else(process::default_server_binary);
        let startup_timeout = self.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT);
        let auth = (self.default_user.is_some() || !self.users.is_empty()).then(|| Auth {
            default_user: self.default_user.unwrap_or(DefaultUser::Open),
            users: self.users,
            admin_password: acl::generate_secret(),
        });
        let tls = match (self.tls_client_auth, self.tls_certificates) {
            (None, None) => None,
            (client_auth, certificates) => Some((
                certificates.unwrap_or_else(TlsCertificates::generate),
                client_auth.unwrap_or_default(),
            )),
        };
        if tls.is_some() {
            // TLS servers are probed with redis-cli.
            if let Err(message) = process::check_redis_cli() {
                panic!("{message}");
            }
        }
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut server = RedisServer {
                port: reserve_free_port(),
                bus_port: self.cluster_bus.then(reserve_free_port),
                dir: process::create_temp_dir(),
                binary: binary.clone(),
                args: self.args.clone(),
                startup_timeout,
                auth: auth.clone(),
                tls: None,
                config: self.config.clone(),
                process: Mutex::new(None),
            };
            let launched = server
                .prepare_dir(tls.clone())
                .and_then(|()| server.launch());
            match launched {
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

    /// The connection URL without credentials: `redis://127.0.0.1:PORT/`, or
    /// `rediss://127.0.0.1:PORT/` for a [TLS](RedisServerBuilder::tls) server.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/", self.scheme(), self.port)
    }

    /// The URL that logs in as `user` with the password it was given:
    /// `redis://USER:PASSWORD@127.0.0.1:PORT/` (`rediss://` with TLS).
    /// `"default"` names the [`requirepass`](RedisServerBuilder::requirepass)
    /// password.
    ///
    /// ```no_run
    /// use cacheme_test_support::RedisServer;
    ///
    /// let server = RedisServer::builder()
    ///     .acl_user("app", "secret", "~CM:* &CM:* +@all")
    ///     .start();
    /// let client = redis::Client::open(server.user_url("app")).expect("valid URL");
    /// # drop(client);
    /// ```
    ///
    /// # Panics
    ///
    /// If the server has no such user with a password.
    #[track_caller]
    pub fn user_url(&self, user: &str) -> String {
        let password = self.auth.as_ref().and_then(|auth| auth.password_of(user));
        match password {
            Some(password) => self.url_with_credentials(user, password),
            None => panic!(
                "user_url: redis-server on port {} has no user {user:?} with a password; \
                 users with passwords: {:?}",
                self.port,
                self.auth.as_ref().map(Auth::user_names).unwrap_or_default()
            ),
        }
    }

    /// A URL with any credentials, for example a wrong password:
    /// `redis://USER:PASSWORD@127.0.0.1:PORT/` (`rediss://` with TLS), or
    /// `redis://:PASSWORD@...` when `user` is empty. Both are percent-encoded.
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!(
            "{}://{}127.0.0.1:{}/",
            self.scheme(),
            acl::url_userinfo(user, password),
            self.port
        )
    }

    /// The TCP port the server listens on (on 127.0.0.1). It stays the same
    /// across [`restart`](Self::restart)s. For a TLS server, it is the TLS
    /// port (the plain port is disabled).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// The certificate files of a [TLS](RedisServerBuilder::tls) server, or
    /// `None` for a plain one.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A `redis` client for this server (no connection is made yet). On a
    /// server with a password or ACL users, the client logs in as an
    /// internal administrator that may run every command.
    ///
    /// # Panics
    ///
    /// For a [TLS](RedisServerBuilder::tls) server: this crate does not enable
    /// the `redis` crate's TLS features (so that in the workspace's tests they
    /// are on only when cacheme's own `tls` feature turns them on). Use
    /// [`cli`](Self::cli), or build a TLS client from [`tls`](Self::tls).
    #[track_caller]
    pub fn client(&self) -> redis::Client {
        assert!(
            self.tls.is_none(),
            "RedisServer::client/connection: redis-server on port {} speaks TLS only, and \
             cacheme-test-support does not enable the redis crate's TLS features; use \
             RedisServer::cli, or build a TLS client from the files of RedisServer::tls",
            self.port
        );
        let url = self.admin_url();
        match redis::Client::open(url.as_str()) {
            Ok(client) => client,
            Err(e) => panic!("invalid redis URL {}: {e}", self.url()),
        }
    }

    /// A new synchronous connection, for setting up and checking state in
    /// tests. Logs in like [`client`](Self::client).
    ///
    /// The connection has no read or write timeout; set one with
    /// [`redis::Connection::set_read_timeout`] when the server may be
    /// [paused](Self::pause).
    ///
    /// # Panics
    ///
    /// If the server cannot be reached, or is a TLS server (see
    /// [`client`](Self::client)).
    #[track_caller]
    pub fn connection(&self) -> redis::Connection {
        match self.client().get_connection() {
            Ok(con) => con,
            Err(e) => panic!("cannot connect to redis-server at {}: {e}", self.url()),
        }
    }

    /// Runs `redis-cli` against this server with `args` as the command and
    /// returns what it printed, without the trailing newline. TLS and the
    /// internal administrator's credentials are passed for you, so this also
    /// works for TLS servers and servers whose `default` user is disabled.
    ///
    /// ```no_run
    /// use cacheme_test_support::{RedisServer, TlsClientAuth};
    ///
    /// let server = RedisServer::builder().tls(TlsClientAuth::Required).start();
    /// assert_eq!(server.cli(["PING"]), "PONG");
    /// ```
    ///
    /// # Panics
    ///
    /// If `redis-cli` cannot be run, takes longer than 30 s, or exits with an
    /// error (an error reply counts: it runs with `-e`). The message includes
    /// its output and the server's log tail.
    #[track_caller]
    pub fn cli<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        match self.run_cli(&args, CLI_TIMEOUT) {
            Ok(stdout) => stdout,
            Err(message) => panic!(
                "redis-cli {args:?} against redis-server on port {} failed: {message}\n{}",
                self.port,
                self.log_tail()
            ),
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
        process::log_tail(&self.dir)
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
        self.stop();
    }

    /// Starts the server again on the same port with the same arguments and
    /// waits until it answers `PING`. Kills it first if it is still running.
    ///
    /// The server comes back empty: nothing is persisted. Files in its
    /// directory (a cluster node's `nodes.conf`, a sentinel's configuration,
    /// the ACL file, the TLS certificates) are kept.
    ///
    /// # Panics
    ///
    /// If the port was taken by another process while the server was down,
    /// or if the server does not come up within the startup timeout.
    #[track_caller]
    pub fn restart(&mut self) {
        self.relaunch();
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

    /// [`kill`](Self::kill) for owners that share the server (a cluster).
    pub(crate) fn stop(&self) {
        if let Some(process) = self.lock().take() {
            process.stop();
        }
    }

    /// [`restart`](Self::restart) for owners that share the server.
    #[track_caller]
    pub(crate) fn relaunch(&self) {
        self.stop();
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

    /// A connection with connect, read and write timeouts, logged in like
    /// [`client`](Self::client); `Err` is a message for a panic.
    pub(crate) fn connect_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<redis::Connection, String> {
        let fail = |e: redis::RedisError| format!("cannot connect to {}: {e}", self.url());
        let client = redis::Client::open(self.admin_url().as_str()).map_err(fail)?;
        let con = client.get_connection_with_timeout(timeout).map_err(fail)?;
        con.set_read_timeout(Some(timeout)).map_err(fail)?;
        con.set_write_timeout(Some(timeout)).map_err(fail)?;
        Ok(con)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// The URL the helper itself uses: with the administrator's
    /// credentials when the server has authentication.
    fn admin_url(&self) -> String {
        match &self.auth {
            Some(auth) => self.url_with_credentials(ADMIN_USER, &auth.admin_password),
            None => self.url(),
        }
    }

    /// redis-cli arguments that reach this server: address, TLS, login.
    fn cli_connection_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string().into(),
        ];
        if let Some(tls) = &self.tls {
            args.extend(tls.cli_args());
        }
        if let Some(auth) = &self.auth {
            args.extend([
                "--user".into(),
                ADMIN_USER.into(),
                "--pass".into(),
                auth.admin_password.clone().into(),
                "--no-auth-warning".into(),
            ]);
        }
        args
    }

    fn run_cli(&self, command: &[OsString], timeout: Duration) -> Result<String, String> {
        let mut args = self.cli_connection_args();
        args.push("-e".into());
        args.extend(command.iter().cloned());
        let output = process::run_redis_cli(&args, timeout)?;
        if output.status.success() {
            let mut stdout = output.stdout;
            while stdout.ends_with('\n') {
                stdout.pop();
            }
            Ok(stdout)
        } else {
            Err(output.describe())
        }
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
        process::send_signal(pid, signal);
    }

    /// Writes the files the server needs into its new directory: TLS
    /// certificates, the ACL file, the configuration file.
    fn prepare_dir(
        &mut self,
        tls: Option<(TlsCertificates, TlsClientAuth)>,
    ) -> Result<(), LaunchError> {
        let fatal = |what: &str, e: std::io::Error| {
            LaunchError::Fatal(format!(
                "cannot write the {what} of redis-server into {}: {e}",
                self.dir.display()
            ))
        };
        if let Some((certificates, client_auth)) = tls {
            let files = TlsFiles::write(&self.dir, certificates, client_auth)
                .map_err(|e| fatal("TLS certificates", e))?;
            self.tls = Some(files);
        }
        if let Some(auth) = &self.auth {
            fs::write(self.acl_path(), auth.acl_file()).map_err(|e| fatal("ACL file", e))?;
        }
        if let Some(config) = &self.config {
            fs::write(self.dir.join(config.name), &config.contents)
                .map_err(|e| fatal("configuration file", e))?;
        }
        Ok(())
    }

    fn acl_path(&self) -> PathBuf {
        self.dir.join("users.acl")
    }

    /// Spawns the process on `self.port` and waits for it to answer.
    fn launch(&self) -> Result<(), LaunchError> {
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
        if let Some(config) = &self.config {
            // The configuration file must be the first argument.
            command.arg(self.dir.join(config.name));
            if config.sentinel {
                command.arg("--sentinel");
            }
        }
        match &self.tls {
            Some(tls) => command.args(tls.server_args(self.port)),
            None => command.arg("--port").arg(self.port.to_string()),
        };
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log);
        if self.auth.is_some() {
            command.arg("--aclfile").arg(self.acl_path());
        }
        if let Some(bus_port) = self.bus_port {
            command.arg("--cluster-port").arg(bus_port.to_string());
        }
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(stderr));

        let redis = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(LaunchError::Fatal(process::missing_binary_message(
                    &self.binary,
                    &e,
                )));
            }
            Err(e) => {
                return Err(LaunchError::Fatal(format!(
                    "cannot run redis-server binary `{}`: {e}",
                    self.binary.display()
                )));
            }
        };
        *self.lock() = Some(Process::watched(redis, &self.dir));

        let deadline = Instant::now() + self.startup_timeout;
        loop {
            let exited = match self.lock().as_mut() {
                Some(process) => process.redis.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                self.stop();
                return Err(self.exited_error(status));
            }
            let pid = self.pid().unwrap_or_default();
            match self.probe(pid) {
                Probe::Ready => return Ok(()),
                // Another server answers on our port: ours will fail to bind.
                Probe::Impostor | Probe::NotYet => {}
            }
            if Instant::now() >= deadline {
                self.stop();
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
        let info = if self.tls.is_some() {
            // The redis crate has no TLS here (see `client`): ask redis-cli.
            match self.run_cli(&["INFO".into(), "server".into()], Duration::from_secs(2)) {
                Ok(info) => info,
                Err(_) => return Probe::NotYet,
            }
        } else {
            let Ok(mut con) = self.connect_with_timeout(timeout) else {
                return Probe::NotYet;
            };
            match redis::cmd("PING").query::<String>(&mut con) {
                Ok(pong) if pong == "PONG" => {}
                _ => return Probe::NotYet,
            }
            match redis::cmd("INFO").arg("server").query::<String>(&mut con) {
                Ok(info) => info,
                Err(_) => return Probe::NotYet,
            }
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
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
        release_port(self.port);
        if let Some(bus_port) = self.bus_port {
            release_port(bus_port);
        }
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
            .field("users", &self.auth.as_ref().map(Auth::user_names))
            .field("tls", &self.tls.as_ref().map(TlsFiles::client_auth))
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

/// Starts `count` servers from `builder` on parallel threads.
///
/// # Panics
///
/// Like [`RedisServerBuilder::start`], after the servers that did start are
/// stopped.
pub(crate) fn start_many(builder: &RedisServerBuilder, count: usize) -> Vec<RedisServer> {
    let results: Vec<thread::Result<RedisServer>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|_| scope.spawn(|| builder.clone().start()))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut servers = Vec::with_capacity(count);
    let mut failure = None;
    for result in results {
        match result {
            Ok(server) => servers.push(server),
            Err(payload) => failure = failure.or(Some(payload)),
        }
    }
    if let Some(payload) = failure {
        drop(servers);
        panic::resume_unwind(payload);
    }
    servers
}
