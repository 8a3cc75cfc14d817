//! A small fleet to try the `cacheme` tool on: three "processes" (caches
//! with their own fleet ids) on one Redis, each publishing its per-node
//! stats every second, with cats, owners and a slow report.
//!
//! ```text
//! redis-server --port 6400 &
//! cargo run -p cacheme-cli --example fleet -- redis://127.0.0.1:6400/ 60 &
//! cargo run -p cacheme-cli -- --url redis://127.0.0.1:6400/ stats --watch
//! ```
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use cacheme::{Cache, InvalidNode, Node};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cat {
    id: u64,
    name: String,
    owner: u64,
}

/// A cat, in its owner's group.
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

/// A slow report, cached briefly.
#[derive(Debug, Node)]
#[node(key = "report:{day}", value = String, ttl = 5)]
struct ReportNode {
    day: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let fleet: Vec<Cache> = (0..3)
        .map(|_| {
            Cache::builder()
                .redis_url(url.clone())
                .fleet_stats(Duration::from_secs(1))
                .build()
        })
        .collect::<Result<_, _>>()?;
    println!(
        "fleet of {} publishing to {}; running {seconds} s",
        fleet.len(),
        cacheme::ops::redact_url(&url)
    );
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        for (i, cache) in fleet.iter().enumerate() {
            let id = (round * 7 + i as u64) % 50;
            let owner = id % 5;
            cache
                .objects::<CatNode>()
                .get_or_load(CatNode { id, owner }, || async move {
                    tokio::time::sleep(Duration::from_millis(2 + id % 8)).await;
                    Ok::<_, std::io::Error>(Cat {
                        id,
                        name: format!("cat {id}"),
                        owner,
                    })
                })
                .await?;
            cache
                .objects::<ReportNode>()
                .get_or_load(round / 100, || async move {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    Ok::<_, std::io::Error>(format!("report for day {}", round / 100))
                })
                .await?;
        }
        if round.is_multiple_of(500) {
            fleet[0]
                .invalid_objects::<OwnerInvalid>()
                .invalid(round % 5)
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for cache in &fleet {
        cache.publish_stats()?;
    }
    Ok(())
}
