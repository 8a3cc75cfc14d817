//! cacheme's per-node metrics, exported for Prometheus.
//!
//! The `metrics` feature of cacheme reports through the `metrics` facade;
//! any exporter works. Here, metrics-exporter-prometheus renders the text a
//! Prometheus server scrapes (an application would serve `handle.render()`
//! on `/metrics`, or use the exporter's own HTTP listener).
//!
//! ```text
//! cargo run -p cacheme-cli --example prometheus            # in memory
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run -p cacheme-cli --example prometheus
//! ```
#![allow(missing_docs)]

use std::time::Duration;

use cacheme::{Cache, Node};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cat {
    id: u64,
    name: String,
}

#[derive(Debug, Node)]
#[node(key = "cat:{id}", value = Cat, ttl = 300)]
struct CatNode {
    id: u64,
}

#[derive(Debug, Node)]
#[node(key = "dog:{id}", value = Cat, ttl = 300, local_ttl = 30, local_capacity = 100)]
struct DogNode {
    id: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The exporter, installed as the global `metrics` recorder.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
        )?
        .install_recorder()?;

    // 2. A cache: it reports every `stats_interval` (5 s by default).
    let mut builder = Cache::builder().prefix("prometheus-example:");
    if let Ok(url) = std::env::var("REDIS_URL") {
        builder = builder.redis_url(url);
    }
    let cache = builder.build()?;

    // 3. Some traffic: cats from the store, dogs from the local tier.
    for round in 0..3 {
        for id in 1..=4 {
            cache
                .objects::<CatNode>()
                .get_or_load(id, || async move {
                    tokio::time::sleep(Duration::from_millis(2 * id)).await;
                    Ok::<_, std::io::Error>(Cat {
                        id,
                        name: format!("cat {id}"),
                    })
                })
                .await?;
            cache
                .objects::<DogNode>()
                .get_or_load(id, || async move {
                    Ok::<_, std::io::Error>(Cat {
                        id,
                        name: format!("dog {id}, round {round}"),
                    })
                })
                .await?;
        }
    }

    // 4. Report now rather than at the next interval, and print what a
    //    Prometheus server would scrape.
    if let Err(error) = cache.publish_stats() {
        eprintln!("fleet stats not published: {error}");
    }
    print!("{}", handle.render());
    Ok(())
}
