//! A real Redis Cluster of throw-away `redis-server` processes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::process::{self, wait_until};
use crate::server::RedisServer;

/// The number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// The default `cluster-node-timeout`: small, so that failover is quick.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The default bound on every wait of a cluster (start, failover,
/// resharding, restart).
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one query of one node may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the waits poll the nodes.
const POLL: Duration = Duration::from_millis(20);

/// Keys moved by one `MIGRATE` of [`RedisCluster::move_slot`].
const MIGRATE_BATCH: usize = 100;

/// The `MIGRATE` timeout, in milliseconds.
const MIGRATE_TIMEOUT_MS: u64 = 5000;

/// A Redis Cluster of local `redis-server` processes: by default 3
/// primaries with 1 replica each, on free loopback ports.
///
/// [`start`](Self::start) returns once every node reports `cluster_state:ok`,
/// all 16384 slots are served, every node sees the same slot owners and every
/// replica's link to its primary is up. Nodes are named by their address
/// (`127.0.0.1:PORT`), which stays the same across
/// [restarts](Self::restart_node). Every process is killed and every
/// directory removed on drop (with a watchdog per node, as for
/// [`RedisServer`]).
///
/// Waits panic after [`DEFAULT_CLUSTER_TIMEOUT`] (see
/// [`RedisClusterBuilder::timeout`]) with the reason and the nodes' logs.
///
/// Nodes run with `cluster-node-timeout` 1000 ms (see
/// [`RedisClusterBuilder::node_timeout`]) and
/// `cluster-replica-validity-factor 0`, so a killed primary's replica takes
/// over within about 2-3 s. Each node gets its own cluster bus port
/// (`cluster-port`), since `PORT + 10000` may be taken or out of range.
///
/// Resharding ([`move_slot`](Self::move_slot)) drives `CLUSTER SETSLOT` and
/// `MIGRATE` itself rather than running `redis-cli --cluster reshard`: it
/// moves exactly the slot a test names (reshard picks the slots), it can stop
/// in the middle of a migration ([`start_slot_migration`](Self::start_slot_migration))
/// so that a test sees `ASK` and `TRYAGAIN`, it takes milliseconds, and a
/// failing step names the command and the node.
///
/// ```no_run
/// use cacheme_test_support::RedisCluster;
///
/// let cluster = RedisCluster::start();
/// let mut con = cluster.connection();
/// let _: () = redis::cmd("SET").arg("user:1").arg("v").query(&mut con).expect("SET");
///
/// // Failover: SIGKILL the key's primary; its replica takes over.
/// let old = cluster.kill_primary_of("user:1");
/// let took = cluster.wait_for_failover(old);
/// assert_ne!(cluster.primary_of_key("user:1"), old);
/// println!("failover took {took:?}");
///
/// // Resharding: move the key's slot to another primary, live.
/// let slot = cluster.keyslot("user:1");
/// let target = cluster
///     .primaries()
///     .into_iter()
///     .find(|p| *p != cluster.primary_of_slot(slot))
///     .expect("another primary");
/// cluster.move_slot(slot, target);
/// assert_eq!(cluster.primary_of_key("user:1"), target);
/// ```
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    primaries: usize,
    replicas: usize,
    timeout: Duration,
    killed: Mutex<HashMap<u16, Killed>>,
}

/// What was known about a node when [`RedisCluster::kill_node`] killed it.
struct Killed {
    at: Instant,
    /// Its replicas then, if it was a primary.
    replicas: Vec<u16>,
    /// One slot it served then.
    slot: Option<u16>,
}

/// Builder for a [`RedisCluster`] with another shape or configuration.
///
/// ```no_run
/// use std::time::Duration;
/// use cacheme_test_support::RedisCluster;
///
/// let cluster = RedisCluster::builder()
///     .primaries(3)
///     .replicas(1)
///     .node_timeout(Duration::from_millis(2000))
///     .node_arg("--maxmemory")
///     .node_arg("64mb")
///     .start();
/// assert_eq!(cluster.primaries().len(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct RedisClusterBuilder {
    primaries: usize,
    replicas: usize,
    node_timeout: Duration,
    timeout: Duration,
    args: Vec<OsString>,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        RedisClusterBuilder {
            primaries: 3,
            replicas: 1,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            timeout: DEFAULT_CLUSTER_TIMEOUT,
            args: Vec::new(),
        }
    }
}

impl RedisClusterBuilder {
    /// The number of primaries (at least 3, which `redis-cli --cluster
    /// create` requires). Default 3.
    pub fn primaries(mut self, primaries: usize) -> Self {
        self.primaries = primaries;
        self
    }

    /// The number of replicas of each primary. Default 1.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// `cluster-node-timeout`: how long a node may be unreachable before it
    /// is considered failing. Default [`DEFAULT_NODE_TIMEOUT`].
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// The bound on every wait (start, failover, resharding, restart).
    /// Default [`DEFAULT_CLUSTER_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Appends a `redis-server` argument for every node.
    pub fn node_arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Starts the nodes, creates the cluster with `redis-cli --cluster
    /// create` and waits until it is healthy.
    ///
    /// # Panics
    ///
    /// If fewer than 3 primaries were asked for, `redis-cli` is missing, a
    /// node does not start, `redis-cli --cluster create` fails, or the
    /// cluster is not healthy within the timeout. The message includes the
    /// reason and the nodes' log tails.
    #[track_caller]
    pub fn start(self) -> RedisCluster {
        assert!(
            self.primaries >= 3,
            "a Redis Cluster needs at least 3 primaries (redis-cli --cluster create \
             refuses fewer), got {}",
            self.primaries
        );
        // The cluster is created with redis-cli: check it before starting
        // six servers.
        if let Err(message) = process::check_redis_cli() {
            panic!("{message}");
        }
        let count = self.primaries * (1 + self.replicas);
        let node_timeout_ms = self.node_timeout.as_millis().max(1).to_string();
        let node = RedisServer::builder()
            .cluster_bus()
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(&node_timeout_ms)
            // A replica may always take over, however long it was cut off.
            .args(["--cluster-replica-validity-factor", "0"])
            // Replicas sync at once instead of waiting 5 s for company.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(&self.args);
        let nodes = crate::server::start_many(&node, count);
        let cluster = RedisCluster {
            nodes,
            primaries: self.primaries,
            replicas: self.replicas,
            timeout: self.timeout,
            killed: Mutex::new(HashMap::new()),
        };
        let mut args: Vec<OsString> = vec!["--cluster".into(), "create".into()];
        args.extend(cluster.nodes.iter().map(|n| n.addr().to_string().into()));
        args.extend([
            "--cluster-replicas".into(),
            self.replicas.to_string().into(),
            "--cluster-yes".into(),
        ]);
        match process::run_redis_cli(&args, self.timeout) {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "redis-cli --cluster create failed\n{}\n{}",
                output.describe(),
                cluster.log_tails()
            ),
            Err(message) => panic!("{message}\n{}", cluster.log_tails()),
        }
        cluster.wait_for_healthy();
        cluster
    }
}

impl RedisCluster {
    /// Starts a cluster of 3 primaries with 1 replica each; see
    /// [`RedisClusterBuilder::start`] for the panics.
    #[track_caller]
    pub fn start() -> RedisCluster {
        RedisCluster::builder().start()
    }

    /// Returns a builder for another shape or configuration.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// The addresses of all nodes, in start order, including killed ones.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// `redis://127.0.0.1:PORT/` of every node, the initial nodes for a
    /// cluster client.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The server behind a node, to pause it, read its log, or connect to
    /// it directly.
    ///
    /// # Panics
    ///
    /// If `addr` is not a node of this cluster.
    #[track_caller]
    pub fn node(&self, addr: SocketAddr) -> &RedisServer {
        match self.nodes.iter().find(|n| n.addr() == addr) {
            Some(node) => node,
            None => panic!(
                "{addr} is not a node of this cluster; nodes: {:?}",
                self.node_addrs()
            ),
        }
    }

    /// The primaries that serve slots now, ordered by their first slot.
    #[track_caller]
    pub fn primaries(&self) -> Vec<SocketAddr> {
        let topology = self.topology();
        let mut primaries: Vec<&NodeLine> = topology.primaries().collect();
        primaries.sort_by_key(|p| p.slots.first().map(|r| *r.start()));
        primaries.iter().map(|p| p.addr()).collect()
    }

    /// The replicas of `primary` now.
    ///
    /// # Panics
    ///
    /// If no node of the cluster has that address.
    #[track_caller]
    pub fn replicas_of(&self, primary: SocketAddr) -> Vec<SocketAddr> {
        let topology = self.topology();
        let Some(line) = topology.by_port(primary.port()) else {
            panic!("{primary} is not a node of this cluster\n{topology}");
        };
        topology.replicas_of(&line.id).map(NodeLine::addr).collect()
    }

    /// The slot ranges `primary` serves now.
    #[track_caller]
    pub fn slots_of(&self, primary: SocketAddr) -> Vec<RangeInclusive<u16>> {
        let topology = self.topology();
        topology
            .by_port(primary.port())
            .map(|line| line.slots.clone())
            .unwrap_or_default()
    }

    /// The node id of a node (as in `CLUSTER NODES`).
    #[track_caller]
    pub fn node_id(&self, addr: SocketAddr) -> String {
        let topology = self.topology();
        match topology.by_port(addr.port()) {
            Some(line) => line.id.clone(),
            None => panic!("{addr} is not a node of this cluster\n{topology}"),
        }
    }

    /// The hash slot of `key`, from `CLUSTER KEYSLOT` on a live node.
    #[track_caller]
    pub fn keyslot(&self, key: &str) -> u16 {
        let slot: i64 = self.query_any(|con| {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(con)
                .map_err(|e| format!("CLUSTER KEYSLOT {key:?}: {e}"))
        });
        u16::try_from(slot).expect("CLUSTER KEYSLOT answers 0..16384")
    }

    /// The primary that serves `slot` now.
    ///
    /// # Panics
    ///
    /// If no primary serves it (a failover in progress).
    #[track_caller]
    pub fn primary_of_slot(&self, slot: u16) -> SocketAddr {
        let topology = self.topology();
        match topology.owner_of(slot) {
            Some(line) => line.addr(),
            None => panic!("no primary serves slot {slot}\n{topology}"),
        }
    }

    /// The primary that serves `key` now (`CLUSTER KEYSLOT`, then
    /// `CLUSTER NODES`).
    #[track_caller]
    pub fn primary_of_key(&self, key: &str) -> SocketAddr {
        self.primary_of_slot(self.keyslot(key))
    }

    /// A cluster client whose initial nodes are all the nodes.
    #[track_caller]
    pub fn client(&self) -> redis::cluster::ClusterClient {
        match redis::cluster::ClusterClient::new(self.node_urls()) {
            Ok(client) => client,
            Err(e) => panic!(
                "cannot build a cluster client for {:?}: {e}",
                self.node_urls()
            ),
        }
    }

    /// A new synchronous cluster connection (follows `MOVED` and `ASK`).
    #[track_caller]
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        match self.client().get_connection() {
            Ok(con) => con,
            Err(e) => panic!(
                "cannot connect to the cluster at {:?}: {e}\n{}",
                self.node_urls(),
                self.log_tails()
            ),
        }
    }

    /// A plain connection to one node, with 2 s timeouts.
    #[track_caller]
    pub fn node_connection(&self, addr: SocketAddr) -> redis::Connection {
        match self.node(addr).connect_with_timeout(QUERY_TIMEOUT) {
            Ok(con) => con,
            Err(e) => panic!("{e}\n{}", self.node(addr).log_tail()),
        }
    }

    /// SIGKILLs a node. The cluster notices after the node timeout; see
    /// [`wait_for_failover`](Self::wait_for_failover) and
    /// [`restart_node`](Self::restart_node).
    #[track_caller]
    pub fn kill_node(&self, addr: SocketAddr) {
        let node = self.node(addr);
        let topology = self.topology();
        let (replicas, slot) = match topology.by_port(addr.port()) {
            Some(line) => (
                topology
                    .replicas_of(&line.id)
                    .map(|r| r.port)
                    .collect::<Vec<_>>(),
                line.slots.first().map(|r| *r.start()),
            ),
            None => (Vec::new(), None),
        };
        node.stop();
        self.killed().insert(
            addr.port(),
            Killed {
                at: Instant::now(),
                replicas,
                slot,
            },
        );
    }

    /// SIGKILLs the primary that serves `key` and returns its address.
    #[track_caller]
    pub fn kill_primary_of(&self, key: &str) -> SocketAddr {
        let primary = self.primary_of_key(key);
        self.kill_node(primary);
        primary
    }

    /// Waits until a replica of `old_primary` has been promoted, serves the
    /// old primary's slots in the view of every live node, and every live
    /// node reports `cluster_state:ok`. Returns the time from the
    /// [kill](Self::kill_node) (or from this call, for a primary that was
    /// not killed through this cluster) to that moment.
    ///
    /// # Panics
    ///
    /// If `old_primary` had no replica or no slot, or the failover does not
    /// complete within the timeout.
    #[track_caller]
    pub fn wait_for_failover(&self, old_primary: SocketAddr) -> Duration {
        let known = self
            .killed()
            .get(&old_primary.port())
            .map(|k| (k.at, k.replicas.clone(), k.slot));
        let (started, replicas, slot) = match known {
            Some(known) => known,
            None => {
                let topology = self.topology();
                let line = topology.by_port(old_primary.port());
                let replicas = line
                    .map(|l| topology.replicas_of(&l.id).map(|r| r.port).collect())
                    .unwrap_or_default();
                let slot = line.and_then(|l| l.slots.first().map(|r| *r.start()));
                (Instant::now(), replicas, slot)
            }
        };
        assert!(
            !replicas.is_empty(),
            "wait_for_failover: {old_primary} had no replica to promote"
        );
        let Some(slot) = slot else {
            panic!("wait_for_failover: {old_primary} served no slot");
        };
        let result = wait_until(self.timeout, POLL, || {
            let promoted = replicas
                .iter()
                .copied()
                .find(|&port| {
                    let node = self.node(loopback(port));
                    node.is_running() && role(node).is_ok_and(|role| role == "master")
                })
                .ok_or_else(|| format!("no replica of {old_primary} is a primary yet"))?;
            for node in self.live_nodes() {
                let info = cluster_info(node)?;
                if info.get("cluster_state").map(String::as_str) != Some("ok") {
                    return Err(format!(
                        "{} reports {:?}",
                        node.addr(),
                        info.get("cluster_state")
                    ));
                }
                let owner = node_topology(node)?.owner_of(slot).map(|l| l.port);
                if owner != Some(promoted) {
                    return Err(format!(
                        "{} sees slot {slot} served by {owner:?}, not by the promoted 127.0.0.1:{promoted}",
                        node.addr()
                    ));
                }
            }
            Ok(())
        });
        let elapsed = started.elapsed();
        if let Err(reason) = result {
            panic!(
                "failover of {old_primary} did not complete within {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            );
        }
        elapsed
    }

    /// Restarts a node (killed or not) on its port with its `nodes.conf`,
    /// so that it rejoins with its identity (a former primary comes back
    /// as a replica of the node that took over), and waits until the whole
    /// cluster is healthy again. The node comes back empty and resyncs.
    #[track_caller]
    pub fn restart_node(&self, addr: SocketAddr) {
        self.node(addr).relaunch();
        self.killed().remove(&addr.port());
        self.wait_for_healthy();
    }

    /// Waits until every node is running and reports `cluster_state:ok`, all
    /// slots are served, every node sees the same slot owners, each primary
    /// has its replicas and every replica's link is up.
    ///
    /// # Panics
    ///
    /// If that does not happen within the timeout (for example while a node
    /// is killed).
    #[track_caller]
    pub fn wait_for_healthy(&self) {
        if let Err(reason) = wait_until(self.timeout, POLL, || self.check_healthy()) {
            panic!(
                "the cluster is not healthy after {:?}: {reason}\n{}",
                self.timeout,
                self.log_tails()
            );
        }
    }

    /// Moves `slot` to the primary `to`, live, with its keys:
    /// `CLUSTER SETSLOT IMPORTING/MIGRATING`, then `CLUSTER GETKEYSINSLOT` and
    /// `MIGRATE ... KEYS` in batches of 100, then `CLUSTER SETSLOT NODE` on
    /// every primary (target first, then source). Returns when every live
    /// node sees `to` as the slot's owner, with the number of keys moved.
    /// Does nothing if `to` already serves it.
    ///
    /// Clients see `ASK` redirections (and `TRYAGAIN` for multi-key commands)
    /// during the move and `MOVED` after it. For a test that acts in the
    /// middle of a migration, see [`start_slot_migration`](Self::start_slot_migration).
    ///
    /// # Panics
    ///
    /// If `to` is not a primary, a step fails (for example `BUSYKEY`: the
    /// target already has one of the keys), or the nodes do not agree within
    /// the timeout.
    #[track_caller]
    pub fn move_slot(&self, slot: u16, to: SocketAddr) -> usize {
        self.start_slot_migration(slot, to).finish()
    }

    /// Starts moving `slot` to the primary `to` and returns the migration in
    /// progress: the slot is `MIGRATING` on its owner and `IMPORTING` on
    /// `to`, and no key has moved yet. Move keys with
    /// [`SlotMigration::migrate_keys`], end with [`SlotMigration::finish`].
    ///
    /// ```no_run
    /// use cacheme_test_support::RedisCluster;
    ///
    /// let cluster = RedisCluster::start();
    /// let slot = cluster.keyslot("hot");
    /// let to = cluster
    ///     .primaries()
    ///     .into_iter()
    ///     .find(|p| *p != cluster.primary_of_slot(slot))
    ///     .expect("another primary");
    /// let mut migration = cluster.start_slot_migration(slot, to);
    /// migration.migrate_keys(10); // some keys moved: clients get ASK for them
    /// let moved = migration.finish();
    /// # let _ = moved;
    /// ```
    #[track_caller]
    pub fn start_slot_migration(&self, slot: u16, to: SocketAddr) -> SlotMigration<'_> {
        assert!(slot < CLUSTER_SLOTS, "slot {slot} is out of range");
        let topology = self.topology();
        let Some(source) = topology.owner_of(slot) else {
            panic!("start_slot_migration: no primary serves slot {slot}\n{topology}");
        };
        let Some(target) = topology.by_port(to.port()) else {
            panic!("start_slot_migration: {to} is not a node of this cluster\n{topology}");
        };
        assert!(
            target.is_primary(),
            "start_slot_migration: {to} is not a primary\n{topology}"
        );
        let migration = SlotMigration {
            cluster: self,
            slot,
            from: source.addr(),
            to,
            from_id: source.id.clone(),
            to_id: target.id.clone(),
            moved: 0,
        };
        if migration.from != to {
            migration.run(to, &["CLUSTER", "SETSLOT"], |cmd| {
                cmd.arg(slot).arg("IMPORTING").arg(&migration.from_id);
            });
            migration.run(migration.from, &["CLUSTER", "SETSLOT"], |cmd| {
                cmd.arg(slot).arg("MIGRATING").arg(&migration.to_id);
            });
        }
        migration
    }

    /// The last log lines of every node, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "=== node {} ({}) ===\n{}",
                node.addr(),
                if node.is_running() {
                    "running"
                } else {
                    "not running"
                },
                node.log_tail()
            );
        }
        out
    }

    fn killed(&self) -> MutexGuard<'_, HashMap<u16, Killed>> {
        self.killed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// Runs `query` on the first live node that answers.
    #[track_caller]
    fn query_any<T>(
        &self,
        mut query: impl FnMut(&mut redis::Connection) -> Result<T, String>,
    ) -> T {
        let mut reasons = Vec::new();
        for node in self.live_nodes() {
            match node
                .connect_with_timeout(QUERY_TIMEOUT)
                .and_then(|mut con| query(&mut con))
            {
                Ok(value) => return value,
                Err(reason) => reasons.push(format!("{}: {reason}", node.addr())),
            }
        }
        panic!(
            "no node of the cluster answered: {reasons:?}\n{}",
            self.log_tails()
        );
    }

    /// `CLUSTER NODES` from the first live node that answers.
    #[track_caller]
    fn topology(&self) -> Topology {
        self.query_any(|con| {
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(con)
                .map_err(|e| format!("CLUSTER NODES: {e}"))?;
            Topology::parse(&text)
        })
    }

    fn check_healthy(&self) -> Result<(), String> {
        let expected_nodes = self.nodes.len().to_string();
        let slots = CLUSTER_SLOTS.to_string();
        let mut first_map: Option<(SocketAddr, SlotMap)> = None;
        for node in &self.nodes {
            let addr = node.addr();
            if !node.is_running() {
                return Err(format!("{addr} is not running"));
            }
            let info = cluster_info(node)?;
            for (field, want) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", slots.as_str()),
                ("cluster_slots_ok", slots.as_str()),
                ("cluster_known_nodes", expected_nodes.as_str()),
            ] {
                let got = info.get(field).map(String::as_str);
                if got != Some(want) {
                    return Err(format!("{addr} reports {field}:{got:?}, not {want}"));
                }
            }
            let topology = node_topology(node)?;
            for line in &topology.nodes {
                if let Some(flag) = line
                    .flags
                    .iter()
                    .find(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
                {
                    return Err(format!("{addr} sees 127.0.0.1:{} as {flag}", line.port));
                }
                if !line.connected {
                    return Err(format!("{addr} has no link to 127.0.0.1:{}", line.port));
                }
            }
            let primaries: Vec<&NodeLine> = topology.primaries().collect();
            if primaries.len() != self.primaries {
                return Err(format!(
                    "{addr} sees {} primaries serving slots, not {}",
                    primaries.len(),
                    self.primaries
                ));
            }
            for primary in &primaries {
                let replicas = topology.replicas_of(&primary.id).count();
                if replicas != self.replicas {
                    return Err(format!(
                        "{addr} sees {replicas} replicas of 127.0.0.1:{}, not {}",
                        primary.port, self.replicas
                    ));
                }
            }
            let map = topology.slot_map();
            match &first_map {
                None => first_map = Some((addr, map)),
                Some((first, first_map)) if *first_map != map => {
                    return Err(format!("{addr} and {first} disagree on slot owners"));
                }
                Some(_) => {}
            }
            let Some(myself) = topology.myself() else {
                return Err(format!("{addr}: CLUSTER NODES has no `myself` line"));
            };
            if !myself.is_primary() {
                let replication = info_section(node, "replication")?;
                if replication.get("master_link_status").map(String::as_str) != Some("up") {
                    return Err(format!("replica {addr}: link to its primary is not up"));
                }
            }
            if !myself.migrations.is_empty() {
                return Err(format!("{addr} is migrating slots {:?}", myself.migrations));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("nodes", &self.node_addrs())
            .field("primaries", &self.primaries)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

/// A slot being moved between primaries; from
/// [`RedisCluster::start_slot_migration`].
///
/// Call [`finish`](Self::finish) to complete it: dropping it leaves the slot
/// `MIGRATING`/`IMPORTING` (which the cluster tolerates, with `ASK`
/// redirections, until it is dropped too).
#[must_use = "a slot migration must be finished with SlotMigration::finish"]
pub struct SlotMigration<'a> {
    cluster: &'a RedisCluster,
    slot: u16,
    from: SocketAddr,
    to: SocketAddr,
    from_id: String,
    to_id: String,
    moved: usize,
}

impl SlotMigration<'_> {
    /// The slot being moved.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The primary the slot is moving from.
    pub fn source(&self) -> SocketAddr {
        self.from
    }

    /// The primary the slot is moving to.
    pub fn target(&self) -> SocketAddr {
        self.to
    }

    /// Moves up to `max` of the keys still on the source (`CLUSTER
    /// GETKEYSINSLOT`, then one `MIGRATE ... KEYS`) and returns how many
    /// moved; 0 when none is left.
    ///
    /// # Panics
    ///
    /// If `MIGRATE` fails, for example with `BUSYKEY` because the target
    /// already holds one of the keys.
    #[track_caller]
    pub fn migrate_keys(&mut self, max: usize) -> usize {
        if self.from == self.to || max == 0 {
            return 0;
        }
        let slot = self.slot;
        let keys: Vec<Vec<u8>> = self.query(self.from, |con| {
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(max)
                .query(con)
        });
        if keys.is_empty() {
            return 0;
        }
        let to_port = self.to.port();
        let _: redis::Value = self.query(self.from, |con| {
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("KEYS")
                .arg(&keys)
                .query(con)
        });
        self.moved += keys.len();
        keys.len()
    }

    /// Moves the remaining keys, assigns the slot to the target on every
    /// live primary (target first, then source, then the others) and waits
    /// until every live node agrees. Returns the number of keys moved by
    /// the whole migration.
    #[track_caller]
    pub fn finish(mut self) -> usize {
        if self.from == self.to {
            return 0;
        }
        while self.migrate_keys(MIGRATE_BATCH) > 0 {}
        let cluster = self.cluster;
        let others: Vec<SocketAddr> = cluster
            .primaries()
            .into_iter()
            .filter(|p| *p != self.from && *p != self.to)
            .collect();
        let slot = self.slot;
        for addr in [self.to, self.from].into_iter().chain(others) {
            let to_id = self.to_id.clone();
            self.run(addr, &["CLUSTER", "SETSLOT"], |cmd| {
                cmd.arg(slot).arg("NODE").arg(&to_id);
            });
        }
        let to_port = self.to.port();
        let agreed = wait_until(cluster.timeout, POLL, || {
            for node in cluster.live_nodes() {
                let topology = node_topology(node)?;
                let owner = topology.owner_of(slot).map(|l| l.port);
                if owner != Some(to_port) {
                    return Err(format!(
                        "{} sees slot {slot} served by {owner:?}",
                        node.addr()
                    ));
                }
                if topology
                    .myself()
                    .is_some_and(|m| m.migrations.iter().any(|(s, _)| *s == slot))
                {
                    return Err(format!(
                        "{} still marks slot {slot} as migrating",
                        node.addr()
                    ));
                }
            }
            Ok(())
        });
        if let Err(reason) = agreed {
            panic!(
                "slot {slot} moved to {}, but the nodes do not agree within {:?}: {reason}\n{}",
                self.to,
                cluster.timeout,
                cluster.log_tails()
            );
        }
        self.moved
    }

    #[track_caller]
    fn run(&self, addr: SocketAddr, command: &[&str], args: impl FnOnce(&mut redis::Cmd)) {
        let mut cmd = redis::cmd(command[0]);
        for part in &command[1..] {
            cmd.arg(*part);
        }
        args(&mut cmd);
        let _: redis::Value = self.query(addr, |con| cmd.query(con));
    }

    #[track_caller]
    fn query<T>(
        &self,
        addr: SocketAddr,
        query: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> T {
        let node = self.cluster.node(addr);
        let timeout = Duration::from_millis(MIGRATE_TIMEOUT_MS) * 2;
        let result = node
            .connect_with_timeout(timeout)
            .and_then(|mut con| query(&mut con).map_err(|e| e.to_string()));
        match result {
            Ok(value) => value,
            Err(e) => panic!(
                "moving slot {} from {} to {}: a command to {addr} failed: {e}\n{}",
                self.slot,
                self.from,
                self.to,
                node.log_tail()
            ),
        }
    }
}

impl fmt::Debug for SlotMigration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMigration")
            .field("slot", &self.slot)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("moved", &self.moved)
            .finish()
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// `INFO <section>` of a node as `field -> value`.
fn info_section(node: &RedisServer, section: &str) -> Result<HashMap<String, String>, String> {
    let mut con = node.connect_with_timeout(QUERY_TIMEOUT)?;
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut con)
        .map_err(|e| format!("{}: INFO {section}: {e}", node.addr()))?;
    Ok(parse_fields(&text))
}

fn cluster_info(node: &RedisServer) -> Result<HashMap<String, String>, String> {
    let mut con = node.connect_with_timeout(QUERY_TIMEOUT)?;
    let text: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut con)
        .map_err(|e| format!("{}: CLUSTER INFO: {e}", node.addr()))?;
    Ok(parse_fields(&text))
}

fn role(node: &RedisServer) -> Result<String, String> {
    info_section(node, "replication")?
        .remove("role")
        .ok_or_else(|| format!("{}: INFO replication has no role", node.addr()))
}

fn node_topology(node: &RedisServer) -> Result<Topology, String> {
    let mut con = node.connect_with_timeout(QUERY_TIMEOUT)?;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut con)
        .map_err(|e| format!("{}: CLUSTER NODES: {e}", node.addr()))?;
    Topology::parse(&text).map_err(|e| format!("{}: {e}", node.addr()))
}

/// `field:value` lines (INFO, CLUSTER INFO).
pub(crate) fn parse_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    primary_id: Option<String>,
    connected: bool,
    slots: Vec<RangeInclusive<u16>>,
    /// `[slot->-id]` and `[slot-<-id]` markers (on the `myself` line only).
    migrations: Vec<(u16, String)>,
}

impl NodeLine {
    fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_primary(&self) -> bool {
        self.has_flag("master")
    }
}

/// Served slot ranges and their owners' ports.
type SlotMap = Vec<(RangeInclusive<u16>, u16)>;

/// One node's view of the cluster.
#[derive(Debug, Clone)]
struct Topology {
    nodes: Vec<NodeLine>,
}

impl Topology {
    fn parse(text: &str) -> Result<Topology, String> {
        let nodes = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_node_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topology { nodes })
    }

    fn by_port(&self, port: u16) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.port == port)
    }

    fn myself(&self) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.has_flag("myself"))
    }

    /// Primaries that serve at least one slot and are not failed.
    fn primaries(&self) -> impl Iterator<Item = &NodeLine> {
        self.nodes
            .iter()
            .filter(|n| n.is_primary() && !n.has_flag("fail") && !n.slots.is_empty())
    }

    fn replicas_of<'a>(&'a self, primary_id: &'a str) -> impl Iterator<Item = &'a NodeLine> {
        self.nodes
            .iter()
            .filter(move |n| n.primary_id.as_deref() == Some(primary_id))
    }

    fn owner_of(&self, slot: u16) -> Option<&NodeLine> {
        self.nodes
            .iter()
            .filter(|n| n.is_primary())
            .find(|n| n.slots.iter().any(|r| r.contains(&slot)))
    }

    /// Every served range and its owner's port, sorted.
    fn slot_map(&self) -> SlotMap {
        let mut map: SlotMap = self
            .nodes
            .iter()
            .filter(|n| n.is_primary())
            .flat_map(|n| n.slots.iter().map(|r| (r.clone(), n.port)))
            .collect();
        map.sort_by_key(|(r, _)| *r.start());
        map
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cluster view:")?;
        for n in &self.nodes {
            writeln!(
                f,
                "  127.0.0.1:{} {} {} primary={} slots={:?}",
                n.port,
                n.id,
                n.flags.join(","),
                n.primary_id.as_deref().unwrap_or("-"),
                n.slots
            )?;
        }
        Ok(())
    }
}

fn parse_node_line(line: &str) -> Result<NodeLine, String> {
    let bad = |what: &str| format!("bad CLUSTER NODES line ({what}): {line:?}");
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(bad("fewer than 8 fields"));
    }
    // ip:port@cport[,hostname]
    let address = fields[1].split([',', '@']).next().unwrap_or_default();
    let port = address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| bad("address"))?;
    let mut slots = Vec::new();
    let mut migrations = Vec::new();
    for entry in &fields[8..] {
        if let Some(marker) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            let (slot, peer) = marker
                .split_once("->-")
                .or_else(|| marker.split_once("-<-"))
                .ok_or_else(|| bad("migration marker"))?;
            let slot = slot.parse().map_err(|_| bad("migration slot"))?;
            migrations.push((slot, peer.to_owned()));
            continue;
        }
        let range = match entry.split_once('-') {
            Some((a, b)) => a.parse::<u16>().ok().zip(b.parse::<u16>().ok()),
            None => entry.parse::<u16>().ok().map(|s| (s, s)),
        };
        let (start, end) = range.ok_or_else(|| bad("slot range"))?;
        slots.push(start..=end);
    }
    Ok(NodeLine {
        id: fields[0].to_owned(),
        port,
        flags: fields[2].split(',').map(str::to_owned).collect(),
        primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
        connected: fields[7] == "connected",
        slots,
        migrations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,host master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave,fail 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 disconnected
";

    #[test]
    fn cluster_nodes_output_is_parsed() {
        let t = Topology::parse(NODES).expect("parse");
        assert_eq!(t.nodes.len(), 5);
        assert_eq!(t.myself().map(|m| m.port), Some(30001));
        assert_eq!(
            t.myself().map(|m| m.migrations.clone()),
            Some(vec![(
                5461,
                "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1".to_owned()
            )])
        );
        assert_eq!(t.owner_of(0).map(|n| n.port), Some(30001));
        assert_eq!(t.owner_of(5461).map(|n| n.port), Some(30002));
        assert_eq!(t.owner_of(16383).map(|n| n.port), Some(30003));
        assert_eq!(t.primaries().count(), 3);
        let replicas: Vec<u16> = t
            .replicas_of("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
            .map(|n| n.port)
            .collect();
        assert_eq!(replicas, [30004]);
        let failed = t.by_port(30005).expect("30005");
        assert!(failed.has_flag("fail") && !failed.connected);
        assert_eq!(t.slot_map().len(), 3);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(Topology::parse("abc 127.0.0.1:1@2 master").is_err());
        assert!(Topology::parse("a 127.0.0.1:x@2 master - 0 0 1 connected").is_err());
    }
}
