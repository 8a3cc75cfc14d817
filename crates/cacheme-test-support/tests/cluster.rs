//! Tests for `RedisCluster`, against one real cluster of 6 redis-server
//! processes: started once, then checked for slots, resharding, failover and
//! a node's return, in that order (a second cluster would double the cost on
//! CI's 2 CPUs).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cacheme_test_support::{CLUSTER_SLOTS, RedisCluster};

fn set(con: &mut redis::cluster::ClusterConnection, key: &str, value: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(con)
        .unwrap_or_else(|e| panic!("SET {key}: {e}"));
}

fn get(con: &mut redis::cluster::ClusterConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(con)
        .unwrap_or_else(|e| panic!("GET {key}: {e}"))
}

#[test]
fn cluster_serves_all_slots_reshards_fails_over_and_takes_a_node_back() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    let start_time = started.elapsed();

    // Shape: 3 primaries, each with one replica, covering every slot once.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    assert_eq!(cluster.node_addrs().len(), 6);
    let mut covered = 0u32;
    let mut replicas = HashSet::new();
    for &primary in &primaries {
        covered += cluster
            .slots_of(primary)
            .iter()
            .map(|r| u32::from(r.end() - r.start()) + 1)
            .sum::<u32>();
        let of = cluster.replicas_of(primary);
        assert_eq!(of.len(), 1, "{primary} has replicas {of:?}");
        replicas.extend(of);
    }
    assert_eq!(covered, u32::from(CLUSTER_SLOTS));
    assert_eq!(replicas.len(), 3);
    for addr in cluster.node_addrs() {
        assert_ne!(addr.port(), 6379);
        assert!(addr.ip().is_loopback());
    }

    // Key routing: CLUSTER KEYSLOT agrees with the hash tag rule.
    assert_eq!(cluster.keyslot("{user}:1"), cluster.keyslot("{user}:2"));
    assert_eq!(cluster.keyslot("foo"), 12182);
    let mut con = cluster.connection();
    for i in 0..50 {
        set(&mut con, &format!("k{i}"), &format!("v{i}"));
    }

    // Resharding: move a slot with keys in it to another primary, live.
    let slot = cluster.keyslot("k7");
    let source = cluster.primary_of_slot(slot);
    let target = *primaries
        .iter()
        .find(|p| **p != source)
        .expect("another primary");
    // `{k7}:...` hashes like `k7`: 250 more keys in the same slot.
    let extra: Vec<String> = (0..250).map(|i| format!("{{k7}}:m{i}")).collect();
    assert_eq!(cluster.keyslot(&extra[0]), slot);
    for key in &extra {
        set(&mut con, key, "moved");
    }
    let resharding = Instant::now();
    let mut migration = cluster.start_slot_migration(slot, target);
    let first_batch = migration.migrate_keys(10);
    assert_eq!(first_batch, 10);
    // Mid-migration, the cluster client follows ASK for moved keys and
    // reads the others from the source.
    for key in &extra {
        assert_eq!(
            get(&mut con, key).as_deref(),
            Some("moved"),
            "{key} mid-migration"
        );
    }
    let moved = migration.finish();
    let resharding_time = resharding.elapsed();
    assert_eq!(
        moved,
        extra.len() + 1,
        "every key of the slot moved (k7 too)"
    );
    assert_eq!(cluster.primary_of_key("k7"), target);
    assert_eq!(get(&mut con, "k7").as_deref(), Some("v7"));
    for key in &extra {
        assert_eq!(get(&mut con, key).as_deref(), Some("moved"));
    }
    assert_eq!(
        cluster.move_slot(slot, target),
        0,
        "moving to the owner is a no-op"
    );
    cluster.wait_for_healthy();

    // Failover: SIGKILL the primary of a key; its replica takes over.
    let old_replicas = cluster.replicas_of(cluster.primary_of_key("k1"));
    let old = cluster.kill_primary_of("k1");
    assert!(!cluster.node(old).is_running());
    let failover_time = cluster.wait_for_failover(old);
    let new = cluster.primary_of_key("k1");
    assert_ne!(new, old);
    assert_eq!(
        old_replicas,
        vec![new],
        "the old primary's replica was promoted"
    );
    let mut con = cluster.connection();
    // The replica had the data (replication is asynchronous, but nothing was
    // written just before the kill).
    assert_eq!(get(&mut con, "k1").as_deref(), Some("v1"));
    set(&mut con, "k1", "after-failover");

    // The old primary comes back as a replica of the new one.
    let restart = Instant::now();
    cluster.restart_node(old);
    let restart_time = restart.elapsed();
    assert_eq!(cluster.replicas_of(new), vec![old]);
    assert_eq!(cluster.primaries().len(), 3);
    assert_eq!(get(&mut con, "k1").as_deref(), Some("after-failover"));

    eprintln!(
        "cluster timings: start {start_time:?}, resharding one slot ({moved} keys) \
         {resharding_time:?}, failover after kill {failover_time:?}, \
         node restart to healthy {restart_time:?}"
    );
    assert!(
        failover_time < Duration::from_secs(15),
        "failover took {failover_time:?}"
    );

    // Drop stops every node and removes every directory.
    let nodes: Vec<(u32, PathBuf)> = cluster
        .node_addrs()
        .into_iter()
        .map(|addr| {
            let node = cluster.node(addr);
            let dir = node.log_path().parent().expect("dir").to_path_buf();
            (node.pid().expect("running"), dir)
        })
        .collect();
    drop(con);
    drop(cluster);
    for (pid, dir) in nodes {
        assert!(!process_is_alive(pid), "node {pid} survived drop");
        assert!(!dir.exists(), "{} survived drop", dir.display());
    }
}

/// Whether `pid` exists and is not a zombie.
fn process_is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}
