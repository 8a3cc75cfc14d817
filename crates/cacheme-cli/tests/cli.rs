//! The `cacheme` binary end to end, against a real redis-server: what a
//! person sees, and the `--json` shapes scripts rely on.
#![allow(missing_docs)]

use std::time::Duration;

use assert_cmd::Command;
use cacheme::{Cache, InvalidNode, Node};
use cacheme_test_support::RedisServer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cat {
    id: u64,
    name: String,
}

#[derive(Debug, Node)]
#[node(key = "cat:{id}", value = Cat, ttl = 300, tag = "cats", invalid_nodes = Self::owner)]
struct CatNode {
    id: u64,
    owner: u64,
}

impl CatNode {
    fn owner(&self) -> OwnerInvalid {
        OwnerInvalid { id: self.owner }
    }
}

#[derive(Debug, InvalidNode)]
#[invalid_node(key = "owner:{id}")]
struct OwnerInvalid {
    id: u64,
}

fn cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .build()
        .expect("cache")
}

/// Store cats 1..=n, cat `i` owned by owner `i % 2`.
async fn store_cats(cache: &Cache, n: u64) {
    for id in 1..=n {
        cache
            .objects::<CatNode>()
            .get_or_load(CatNode { id, owner: id % 2 }, || async move {
                Ok::<_, std::io::Error>(Cat {
                    id,
                    name: format!("cat {id}"),
                })
            })
            .await
            .expect("loads");
    }
}

fn cacheme(server: &RedisServer) -> Command {
    let mut command = Command::cargo_bin("cacheme").expect("the binary is built");
    command
        .arg("--url")
        .arg(server.url())
        .env_remove("REDIS_URL");
    command
}

fn json(output: &[u8]) -> Value {
    serde_json::from_slice(output)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(output)))
}

fn stdout(command: &mut Command) -> String {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_decoded_envelope() {
    let server = RedisServer::start();
    let cache = cache(&server);
    store_cats(&cache, 1).await;

    let text = stdout(cacheme(&server).args(["inspect", "cat:1"]));
    assert!(
        text.contains("key         cat:1  (redis key CM:{cat:1})"),
        "{text}"
    );
    assert!(text.contains("state       fresh\n"), "{text}");
    assert!(text.contains("codec       msgpack\n"), "{text}");
    assert!(text.contains("tag         cats\n"), "{text}");
    assert!(text.contains("groups      owner:1\n"), "{text}");
    assert!(text.contains("lease       none\n"), "{text}");
    assert!(
        text.contains(r#"payload     {"id":1,"name":"cat 1"}"#),
        "{text}"
    );

    let output = cacheme(&server)
        .args(["--json", "inspect", "cat:1"])
        .output()
        .expect("runs");
    assert!(output.status.success());
    let report = json(&output.stdout);
    assert_eq!(report["exists"], true);
    assert_eq!(report["kind"], "value");
    assert_eq!(report["state"], "fresh");
    assert_eq!(report["codec"], "msgpack");
    assert_eq!(report["tag"], "cats");
    assert_eq!(report["groups"], serde_json::json!(["owner:1"]));
    assert_eq!(
        report["payload"],
        serde_json::json!({"id": 1, "name": "cat 1"})
    );
    let ttl = report["ttl_ms"].as_u64().expect("a TTL");
    assert!(ttl > 290_000 && ttl <= 300_000, "{ttl}");
    assert!(
        report["size"].as_u64().expect("a size")
            > report["payload_size"].as_u64().expect("a payload size")
    );
    assert!(report["written_at_ms"].as_u64().is_some());
    assert_eq!(report["lease"], Value::Null);

    // A group invalidation is O(1): the bytes do not change, the log says stale.
    cache
        .invalid_objects::<OwnerInvalid>()
        .invalid(1)
        .await
        .expect("invalidated");
    let report = json(
        &cacheme(&server)
            .args(["--json", "inspect", "cat:1"])
            .output()
            .expect("runs")
            .stdout,
    );
    assert_eq!(report["state"], "stale");
    assert_eq!(report["state_byte"], "fresh");
    assert_eq!(report["invalidated_by"]["group"], "owner:1");

    // A missing key: exit code 1, said plainly.
    let output = cacheme(&server)
        .args(["inspect", "cat:404"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("missing: nothing stored under this key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_groups_with_their_sizes() {
    let server = RedisServer::start();
    store_cats(&cache(&server), 5).await;

    let text = stdout(cacheme(&server).arg("tags"));
    assert!(
        text.starts_with("TAG   VALUES  STALE  BYTES\ncats       5      0"),
        "{text}"
    );
    assert!(text.contains("1 tags, 5 values ("), "{text}");

    let groups = json(
        &cacheme(&server)
            .args(["nodes", "--json"])
            .output()
            .expect("runs")
            .stdout,
    );
    let groups = groups.as_array().expect("an array");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["group"], "owner:0");
    assert_eq!(groups[0]["values"], 2);
    assert_eq!(groups[1]["group"], "owner:1");
    assert_eq!(groups[1]["values"], 3);
    assert!(groups[1]["bytes"].as_u64().expect("bytes") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_by_pattern_with_progress_and_a_count() {
    let server = RedisServer::start();
    let cache = cache(&server);
    store_cats(&cache, 30).await;

    // A dry run counts and changes nothing.
    let text = stdout(cacheme(&server).args([
        "invalidate",
        "--pattern",
        "cat:1*",
        "--tag",
        "cats",
        "--dry-run",
    ]));
    assert_eq!(
        text,
        "would delete: 11 values matching the patterns\nwould invalidate tag `cats`: 30 values\ndry run: nothing was changed\n"
    );
    assert_eq!(cache.stats().invalidated, 0);

    let output = cacheme(&server)
        .args(["--progress", "always", "invalidate", "--pattern", "cat:1*"])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "invalidated: 11 values marked stale or deleted\n"
    );
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(
        progress.contains("invalidating (11 values)"),
        "progress on stderr: {progress}"
    );
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("CM:{cat:1*")
        .query(&mut server.connection())
        .expect("KEYS");
    assert!(left.is_empty(), "{left:?}");
    // The invalidating process told the others: this cache reloads.
    assert_eq!(
        cache
            .objects::<CatNode>()
            .get(CatNode { id: 10, owner: 0 })
            .await,
        None
    );

    let report = json(
        &cacheme(&server)
            .args([
                "--json",
                "invalidate",
                "--key",
                "cat:2",
                "--key",
                "cat:3",
                "--group",
                "owner:0",
            ])
            .output()
            .expect("runs")
            .stdout,
    );
    assert_eq!(report["invalidated"], 2);
    assert_eq!(report["interrupted"], false);
    assert_eq!(report["groups"], serde_json::json!(["owner:0"]));

    let text = stdout(cacheme(&server).args(["invalidate", "--tag", "cats"]));
    assert_eq!(
        text,
        "invalidated: tag `cats` (every value under it is no longer served)\n"
    );
    let report = json(
        &cacheme(&server)
            .args(["--json", "inspect", "cat:4"])
            .output()
            .expect("runs")
            .stdout,
    );
    assert_eq!(report["state"], "invalidated");
    assert_eq!(report["invalidated_by"]["tag"], "cats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_stats_per_node() {
    let server = RedisServer::start();
    let text = stdout(cacheme(&server).arg("stats"));
    assert!(text.contains("0 processes reporting"), "{text}");
    assert!(text.contains("turn on `Settings::fleet_stats`"), "{text}");

    let caches: Vec<Cache> = (0..2)
        .map(|_| {
            Cache::builder()
                .redis_url(server.url())
                .fleet_stats(Duration::from_secs(60))
                .build()
                .expect("cache")
        })
        .collect();
    for cache in &caches {
        store_cats(cache, 3).await;
        store_cats(cache, 3).await;
        cache.publish_stats().expect("published");
    }
    let report = json(
        &cacheme(&server)
            .args(["stats", "--json"])
            .output()
            .expect("runs")
            .stdout,
    );
    assert_eq!(report["processes"], 2);
    let node = &report["nodes"][0];
    assert_eq!(node["node"], "CatNode");
    assert_eq!(node["processes"], 2);
    // 3 loads in the first process; all 12 calls of both, 9 of them hits.
    assert_eq!(node["stats"]["load"], 3);
    assert_eq!(node["stats"]["hit"], 9);
    assert_eq!(node["hit_ratio"], 0.75);
    assert_eq!(node["load_ms"]["count"], 3);
    assert!(node["read_ms"]["p99"].as_f64().expect("p99") > 0.0);

    let text = stdout(cacheme(&server).arg("stats"));
    assert!(text.contains("2 processes reporting"), "{text}");
    assert!(text.contains("NODE     PROCS  CALLS   HIT%"), "{text}");
    assert!(text.contains("CatNode      2     12  75.0%"), "{text}");
}

#[test]
fn clear_errors_and_no_password_printed() {
    let mut bad = Command::cargo_bin("cacheme").expect("built");
    let output = bad
        .args(["--url", "http://nope", "tags"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("cacheme: invalid redis URL `http://nope`"),
        "{stderr}"
    );

    // A port nothing listens on (a server started and stopped).
    let url = {
        let server = RedisServer::start();
        server.url().replace("redis://", "redis://app:hunter2@")
    };
    let mut unreachable = Command::cargo_bin("cacheme").expect("built");
    let output = unreachable
        .env("REDIS_URL", &url)
        .arg("tags")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("cacheme: cannot reach redis at `redis://app:***@127.0.0.1:"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let mut nothing = Command::cargo_bin("cacheme").expect("built");
    let output = nothing
        .args(["--url", &url, "invalidate"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("name something to invalidate"));
}
