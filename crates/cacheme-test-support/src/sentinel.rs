//! A Sentinel-managed primary: one primary, one replica, three sentinels.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::cluster::parse_fields;
use crate::process::wait_until;
use crate::server::{RedisServer, RedisServerBuilder, start_many};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// The default `down-after-milliseconds`: small, so that failover is quick.
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_millis(1000);

/// The default `failover-timeout`.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);

/// The default bound on every wait of a group.
pub const DEFAULT_SENTINEL_TIMEOUT: Duration = Duration::from_secs(60);

/// How many sentinels a group runs, and how many must agree.
const SENTINELS: usize = 3;
const QUORUM: usize = 2;

/// How long one query of one process may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the waits poll.
const POLL: Duration = Duration::from_millis(20);

/// One primary, one replica and three sentinels on free loopback ports,
/// monitoring the primary as [`MASTER_NAME`] (`mymaster`) with quorum 2.
///
/// [`start`](Self::start) returns when the replica's link is up and all
/// three sentinels see the primary (not down), the replica and each other.
/// Every process is killed and every directory removed on drop.
///
/// ```no_run
/// use cacheme_test_support::SentinelGroup;
///
/// let group = SentinelGroup::start();
/// let old = group.primary_addr();
/// let took = group.failover(); // SENTINEL FAILOVER mymaster
/// assert_ne!(group.primary_addr(), old);
/// println!("promoted after {took:?}");
///
/// let took = group.kill_primary(); // SIGKILL, then the sentinels promote
/// println!("promoted {took:?} after the kill");
/// ```
pub struct SentinelGroup {
    sentinels: Vec<RedisServer>,
    /// The initial primary, then the initial replica.
    data: Vec<RedisServer>,
    password: Option<String>,
    timeout: Duration,
}

/// Builder for a [`SentinelGroup`] with other timings or a password.
///
/// ```no_run
/// use std::time::Duration;
/// use cacheme_test_support::SentinelGroup;
///
/// let group = SentinelGroup::builder()
///     .requirepass("s3cret")
///     .down_after(Duration::from_millis(2000))
///     .start();
/// assert!(group.primary_url().starts_with("redis://default:s3cret@127.0.0.1:"));
/// ```
#[derive(Clone)]
pub struct SentinelGroupBuilder {
    down_after: Duration,
    failover_timeout: Duration,
    timeout: Duration,
    password: Option<String>,
}

impl Default for SentinelGroupBuilder {
    fn default() -> Self {
        SentinelGroupBuilder {
            down_after: DEFAULT_DOWN_AFTER,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            timeout: DEFAULT_SENTINEL_TIMEOUT,
            password: None,
        }
    }
}

impl fmt::Debug for SentinelGroupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelGroupBuilder")
            .field("down_after", &self.down_after)
            .field("failover_timeout", &self.failover_timeout)
            .field("timeout", &self.timeout)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SentinelGroupBuilder {
    /// `sentinel down-after-milliseconds`: how long the primary may not
    /// answer before a sentinel thinks it is down. Default
    /// [`DEFAULT_DOWN_AFTER`].
    pub fn down_after(mut self, down_after: Duration) -> Self {
        self.down_after = down_after;
        self
    }

    /// `sentinel failover-timeout`. Default [`DEFAULT_FAILOVER_TIMEOUT`].
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// The bound on every wait (start, failover, restart). Default
    /// [`DEFAULT_SENTINEL_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Protects the primary and the replica with this password for the
    /// `default` user ([`RedisServerBuilder::requirepass`]); replication
    /// (`masterauth`) and the sentinels (`sentinel auth-pass`) use it too.
    /// The sentinels themselves stay open.
    ///
    /// # Panics
    ///
    /// If the password is empty or contains whitespace.
    #[track_caller]
    pub fn requirepass(mut self, password: impl Into<String>) -> Self {
        let password = password.into();
        crate::acl::check_acl_word("password", &password);
        self.password = Some(password);
        self
    }

    /// Starts the primary and the replica, then the sentinels, and waits
    /// until every sentinel sees both and the other sentinels.
    ///
    /// # Panics
    ///
    /// If a process does not start or the group is not ready within the
    /// timeout; the message includes the reason and the log tails.
    #[track_caller]
    pub fn start(self) -> SentinelGroup {
        let mut data_node = RedisServer::builder().args(["--repl-diskless-sync-delay", "0"]);
        if let Some(password) = &self.password {
            data_node = data_node
                .requirepass(password.clone())
                .arg("--masterauth")
                .arg(password);
        }
        let data = start_many(&data_node, 2);
        let primary_port = data[0].port();
        let mut config = String::new();
        let _ = writeln!(
            config,
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {QUORUM}"
        );
        let _ = writeln!(
            config,
            "sentinel down-after-milliseconds {MASTER_NAME} {}",
            self.down_after.as_millis().max(1)
        );
        let _ = writeln!(
            config,
            "sentinel failover-timeout {MASTER_NAME} {}",
            self.failover_timeout.as_millis().max(1)
        );
        let _ = writeln!(config, "sentinel parallel-syncs {MASTER_NAME} 1");
        if let Some(password) = &self.password {
            let _ = writeln!(config, "sentinel auth-pass {MASTER_NAME} {password}");
        }
        let mut group = SentinelGroup {
            sentinels: Vec::new(),
            data,
            password: self.password,
            timeout: self.timeout,
        };
        group.make_replica(group.data[1].addr(), group.data[0].addr());
        let sentinel = RedisServerBuilder::default().config_file("sentinel.conf", config, true);
        group.sentinels = start_many(&sentinel, SENTINELS);
        group.wait_for_ready();
        group
    }
}

impl SentinelGroup {
    /// Starts a group with the default settings; see
    /// [`SentinelGroupBuilder::start`] for the panics.
    #[track_caller]
    pub fn start() -> SentinelGroup {
        SentinelGroup::builder().start()
    }

    /// Returns a builder for other timings or a password.
    pub fn builder() -> SentinelGroupBuilder {
        SentinelGroupBuilder::default()
    }

    /// The master name the sentinels monitor, [`MASTER_NAME`].
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// The sentinels' addresses.
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(RedisServer::addr).collect()
    }

    /// `redis://127.0.0.1:PORT/` of every sentinel, as redis-rs's
    /// `SentinelClient` takes them.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// All sentinels and the master name in one string:
    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster`.
    /// redis-rs does not parse this form itself; it is for a cacheme URL
    /// scheme that may.
    pub fn sentinel_url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The sentinel processes, to pause or kill one.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The password of the primary and the replica, if the group has one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The data node (primary or replica) at `addr`.
    ///
    /// # Panics
    ///
    /// If no data node of the group has that address.
    #[track_caller]
    pub fn server(&self, addr: SocketAddr) -> &RedisServer {
        match self.data.iter().find(|s| s.addr() == addr) {
            Some(server) => server,
            None => panic!(
                "{addr} is not a primary or replica of this group; they are {:?}",
                self.data.iter().map(RedisServer::addr).collect::<Vec<_>>()
            ),
        }
    }

    /// The current primary, as the first sentinel that answers reports it
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME mymaster`).
    #[track_caller]
    pub fn primary_addr(&self) -> SocketAddr {
        let mut reasons = Vec::new();
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            match master_addr(sentinel) {
                Ok(addr) => return addr,
                Err(reason) => reasons.push(reason),
            }
        }
        panic!("no sentinel answered: {reasons:?}\n{}", self.log_tails());
    }

    /// `redis://127.0.0.1:PORT/` of the current primary, with the password
    /// (`redis://default:PASSWORD@...`) when the group has one.
    #[track_caller]
    pub fn primary_url(&self) -> String {
        let primary = self.server(self.primary_addr());
        match &self.password {
            Some(_) => primary.user_url("default"),
            None => primary.url(),
        }
    }

    /// The replicas the first sentinel that answers knows and does not
    /// think are down.
    #[track_caller]
    pub fn replica_addrs(&self) -> Vec<SocketAddr> {
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            if let Ok(replicas) = replicas(sentinel) {
                return replicas
                    .iter()
                    .filter(|r| r.get("flags").is_some_and(|f| !f.contains("s_down")))
                    .filter_map(replica_addr)
                    .collect();
            }
        }
        panic!("no sentinel answered\n{}", self.log_tails());
    }

    /// Asks the first running sentinel for a failover (`SENTINEL FAILOVER
    /// mymaster`, retried while it answers that no replica is suitable yet or
    /// a failover is in progress) and waits until a sentinel reports a new
    /// primary that answers as a master. Returns the time from the request
    /// to that moment; before returning, also waits until every sentinel
    /// reports the new primary.
    ///
    /// The old primary becomes a replica of the new one when the sentinels
    /// reconfigure it, which Redis does some seconds later;
    /// [`restart_node`](Self::restart_node) does it at once.
    #[track_caller]
    pub fn failover(&self) -> Duration {
        let old = self.primary_addr();
        let started = Instant::now();
        let asked = wait_until(self.timeout, Duration::from_millis(100), || {
            let sentinel = self
                .sentinels
                .iter()
                .find(|s| s.is_running())
                .ok_or("no sentinel is running")?;
            let mut con = sentinel.connect_with_timeout(QUERY_TIMEOUT)?;
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(MASTER_NAME)
                .query::<()>(&mut con)
                .map_err(|e| format!("SENTINEL FAILOVER {MASTER_NAME}: {e}"))
        });
        if let Err(reason) = asked {
            panic!(
                "the sentinels refused a failover for {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            );
        }
        self.wait_for_promotion(old, started)
    }

    /// SIGKILLs the current primary and waits until the sentinels have
    /// promoted the replica (as [`failover`](Self::failover) does). Returns
    /// the time from the kill to the promotion.
    #[track_caller]
    pub fn kill_primary(&self) -> Duration {
        let old = self.primary_addr();
        self.server(old).stop();
        let started = Instant::now();
        self.wait_for_promotion(old, started)
    }

    /// Restarts a primary or replica process (killed or not) on its port,
    /// makes it a replica of the current primary (`REPLICAOF`, as the
    /// sentinels would after a while), and waits until its link is up and
    /// every sentinel sees it as a replica that is not down. The node comes
    /// back empty and resyncs.
    ///
    /// # Panics
    ///
    /// If `addr` is the current primary, or the node does not rejoin within
    /// the timeout.
    #[track_caller]
    pub fn restart_node(&self, addr: SocketAddr) {
        let primary = self.primary_addr();
        assert_ne!(
            addr, primary,
            "restart_node: {addr} is the current primary; kill_primary() or failover() first"
        );
        self.server(addr).relaunch();
        self.make_replica(addr, primary);
        let seen = wait_until(self.timeout, POLL, || {
            for sentinel in &self.sentinels {
                let replicas = replicas(sentinel)?;
                let entry = replicas
                    .iter()
                    .find(|r| replica_addr(r) == Some(addr))
                    .ok_or_else(|| format!("{} does not know {addr}", sentinel.addr()))?;
                let flags = entry.get("flags").map(String::as_str).unwrap_or_default();
                if flags != "slave" {
                    return Err(format!("{} sees {addr} as {flags:?}", sentinel.addr()));
                }
            }
            Ok(())
        });
        if let Err(reason) = seen {
            panic!(
                "{addr} did not rejoin as a replica within {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            );
        }
    }

    /// The last log lines of every process, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (what, server) in self
            .data
            .iter()
            .map(|s| ("data node", s))
            .chain(self.sentinels.iter().map(|s| ("sentinel", s)))
        {
            let _ = writeln!(
                out,
                "=== {what} {} ({}) ===\n{}",
                server.addr(),
                if server.is_running() {
                    "running"
                } else {
                    "not running"
                },
                server.log_tail()
            );
        }
        out
    }

    /// `REPLICAOF primary` on `replica`, then waits for its link.
    #[track_caller]
    fn make_replica(&self, replica: SocketAddr, primary: SocketAddr) {
        let node = self.server(replica);
        let linked = wait_until(self.timeout, POLL, || {
            let mut con = node.connect_with_timeout(QUERY_TIMEOUT)?;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .map_err(|e| format!("INFO replication: {e}"))?;
            let fields = parse_fields(&info);
            let port = primary.port().to_string();
            if fields.get("master_port") != Some(&port) {
                redis::cmd("REPLICAOF")
                    .arg("127.0.0.1")
                    .arg(primary.port())
                    .query::<()>(&mut con)
                    .map_err(|e| format!("REPLICAOF: {e}"))?;
                return Err("REPLICAOF sent".into());
            }
            match fields.get("master_link_status").map(String::as_str) {
                Some("up") => Ok(()),
                other => Err(format!("master_link_status is {other:?}")),
            }
        });
        if let Err(reason) = linked {
            panic!(
                "{replica} did not become a replica of {primary} within {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            );
        }
    }

    /// Waits until every sentinel sees the primary up, the replica, and the
    /// two other sentinels.
    #[track_caller]
    fn wait_for_ready(&self) {
        let primary = self.data[0].addr();
        let replica = self.data[1].addr();
        let ready = wait_until(self.timeout, POLL, || {
            for sentinel in &self.sentinels {
                let at = sentinel.addr();
                let master = master(sentinel)?;
                let field = |name: &str| master.get(name).map(String::as_str).unwrap_or_default();
                if field("flags") != "master" {
                    return Err(format!("{at} sees the primary as {:?}", field("flags")));
                }
                if field("port") != primary.port().to_string() {
                    return Err(format!("{at} monitors port {}", field("port")));
                }
                let others = (SENTINELS - 1).to_string();
                if field("num-other-sentinels") != others {
                    return Err(format!(
                        "{at} knows {} other sentinels, not {others}",
                        field("num-other-sentinels")
                    ));
                }
                let replicas = replicas(sentinel)?;
                let seen = replicas.iter().any(|r| {
                    replica_addr(r) == Some(replica)
                        && r.get("flags").map(String::as_str) == Some("slave")
                        && r.get("master-link-status").map(String::as_str) == Some("ok")
                });
                if !seen {
                    return Err(format!("{at} does not see the replica {replica} up"));
                }
            }
            Ok(())
        });
        if let Err(reason) = ready {
            panic!(
                "the sentinel group is not ready after {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            );
        }
    }

    /// Waits until a sentinel reports a primary other than `old` that
    /// answers as a master; returns the time since `started`. Then waits
    /// until every running sentinel reports it.
    #[track_caller]
    fn wait_for_promotion(&self, old: SocketAddr, started: Instant) -> Duration {
        let promoted = wait_until(self.timeout, POLL, || {
            for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                let Ok(addr) = master_addr(sentinel) else {
                    continue;
                };
                if addr != old && self.answers_as_master(addr) {
                    return Ok(addr);
                }
            }
            Err(format!(
                "no sentinel reports a primary other than {old} yet"
            ))
        });
        let elapsed = started.elapsed();
        let new = match promoted {
            Ok(new) => new,
            Err(reason) => panic!(
                "no failover from {old} within {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            ),
        };
        let agreed = wait_until(self.timeout, POLL, || {
            for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                let addr = master_addr(sentinel)?;
                if addr != new {
                    return Err(format!("{} still reports {addr}", sentinel.addr()));
                }
            }
            Ok(())
        });
        if let Err(reason) = agreed {
            panic!(
                "the sentinels do not agree on the new primary {new} within {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            );
        }
        elapsed
    }

    fn answers_as_master(&self, addr: SocketAddr) -> bool {
        let Some(server) = self.data.iter().find(|s| s.addr() == addr) else {
            return false;
        };
        let Ok(mut con) = server.connect_with_timeout(QUERY_TIMEOUT) else {
            return false;
        };
        let role: Result<Vec<redis::Value>, _> = redis::cmd("ROLE").query(&mut con);
        role.ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|first| redis::from_redis_value::<String>(first).ok())
            .is_some_and(|role| role == "master")
    }
}

impl fmt::Debug for SentinelGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelGroup")
            .field("sentinels", &self.sentinel_addrs())
            .field(
                "data_nodes",
                &self.data.iter().map(RedisServer::addr).collect::<Vec<_>>(),
            )
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn sentinel_query<T: redis::FromRedisValue>(
    sentinel: &RedisServer,
    args: &[&str],
) -> Result<T, String> {
    let mut con = sentinel.connect_with_timeout(QUERY_TIMEOUT)?;
    let mut cmd = redis::cmd("SENTINEL");
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.query(&mut con)
        .map_err(|e| format!("{}: SENTINEL {}: {e}", sentinel.addr(), args.join(" ")))
}

fn master_addr(sentinel: &RedisServer) -> Result<SocketAddr, String> {
    let (host, port): (String, u16) =
        sentinel_query(sentinel, &["GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| format!("{}: the primary's host is {host:?}", sentinel.addr()))?;
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

fn master(sentinel: &RedisServer) -> Result<HashMap<String, String>, String> {
    sentinel_query(sentinel, &["MASTER", MASTER_NAME])
}

fn replicas(sentinel: &RedisServer) -> Result<Vec<HashMap<String, String>>, String> {
    sentinel_query(sentinel, &["REPLICAS", MASTER_NAME])
}

fn replica_addr(entry: &HashMap<String, String>) -> Option<SocketAddr> {
    let ip: Ipv4Addr = entry.get("ip")?.parse().ok()?;
    let port: u16 = entry.get("port")?.parse().ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}
