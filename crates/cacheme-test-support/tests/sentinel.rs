//! Tests for `SentinelGroup`: one group (a primary, a replica, three
//! sentinels) through a requested failover, a node's return and a SIGKILL
//! of the primary.

use std::time::{Duration, Instant};

use cacheme_test_support::{MASTER_NAME, SentinelGroup};

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn role(url: &str) -> String {
    let mut con = connect(url);
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut con).expect("ROLE");
    redis::from_redis_value(role.into_iter().next().expect("ROLE is not empty")).expect("role")
}

#[test]
fn sentinels_fail_over_on_request_and_after_a_kill() {
    let started = Instant::now();
    let group = SentinelGroup::builder().requirepass("s3cret").start();
    let start_time = started.elapsed();

    assert_eq!(group.master_name(), MASTER_NAME);
    assert_eq!(group.sentinel_addrs().len(), 3);
    let first = group.primary_addr();
    let replicas = group.replica_addrs();
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    let replica = replicas[0];
    assert_ne!(first, replica);
    let url = group.sentinel_url();
    assert!(url.starts_with("redis+sentinel://127.0.0.1:") && url.ends_with("/mymaster"));
    assert!(
        group
            .sentinel_urls()
            .iter()
            .all(|u| u.starts_with("redis://127.0.0.1:"))
    );
    assert_eq!(role(&group.primary_url()), "master");

    // Data written to the primary reaches the replica.
    let mut con = connect(&group.primary_url());
    let () = redis::cmd("SET")
        .arg("k")
        .arg("1")
        .query(&mut con)
        .expect("SET");
    let () = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query::<i64>(&mut con)
        .map(drop)
        .expect("WAIT");

    // A requested failover promotes the replica.
    let requested = group.failover();
    assert_eq!(group.primary_addr(), replica);
    let mut con = connect(&group.primary_url());
    assert_eq!(role(&group.primary_url()), "master");
    let value: String = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    assert_eq!(value, "1");

    // The old primary rejoins as a replica of the new one.
    let rejoin = Instant::now();
    group.restart_node(first);
    let rejoin_time = rejoin.elapsed();
    assert_eq!(group.replica_addrs(), vec![first]);
    let () = redis::cmd("SET")
        .arg("k")
        .arg("2")
        .query(&mut con)
        .expect("SET");
    let () = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query::<i64>(&mut con)
        .map(drop)
        .expect("WAIT");

    // SIGKILL of the primary: the sentinels notice and promote.
    let killed = group.kill_primary();
    assert!(!group.server(replica).is_running());
    assert_eq!(group.primary_addr(), first);
    let mut con = connect(&group.primary_url());
    let value: String = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    assert_eq!(value, "2");

    // Drop stops every process, the killed one included.
    let pids: Vec<u32> = group
        .sentinels()
        .iter()
        .chain([group.server(first), group.server(replica)])
        .filter_map(|s| s.pid())
        .collect();
    assert_eq!(pids.len(), 4, "three sentinels and the live data node");
    drop(con);
    drop(group);
    for pid in pids {
        assert!(!process_is_alive(pid), "{pid} survived drop");
    }

    eprintln!(
        "sentinel timings: start {start_time:?}, SENTINEL FAILOVER to promotion {requested:?}, \
         old primary back as replica {rejoin_time:?}, SIGKILL to promotion {killed:?}"
    );
}

/// Whether `pid` exists and is not a zombie.
fn process_is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}
