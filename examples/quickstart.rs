//! Quickstart: cacheme on the embedded memory store, so it runs anywhere.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Swap the store for Redis with one line:
//! `cacheme::Cache::builder().redis_url("redis://127.0.0.1/").install()?;`

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};

use cacheme::{InvalidNode, Node};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cat {
    id: u64,
    name: String,
    owner_id: u64,
}

/// The key is built from the fields; values live 5 minutes.
#[derive(Node)]
#[node(key = "cat:{id}", value = Cat, ttl = 300, invalid_nodes = Self::owner)]
struct CatNode {
    id: u64,
    owner_id: u64,
}

impl CatNode {
    fn owner(&self) -> OwnerInvalid {
        OwnerInvalid { id: self.owner_id }
    }
}

/// Invalidating an owner invalidates every cat that declared it.
#[derive(InvalidNode)]
#[invalid_node(key = "owner:{id}")]
struct OwnerInvalid {
    id: u64,
}

static LOADS: AtomicU32 = AtomicU32::new(0);

/// The slow source of truth the cache sits in front of.
async fn load_cat(id: u64, name: &str) -> Result<Cat, Infallible> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    Ok(Cat {
        id,
        name: name.to_owned(),
        owner_id: 7,
    })
}

#[tokio::main]
async fn main() {
    println!("quickstart: cacheme on the embedded memory store (no Redis needed)");
    let cats = CatNode::objects();

    let show = |what: &str, cat: &Cat| {
        let loads = LOADS.load(Ordering::Relaxed);
        println!("{what:<44} -> {} ({loads} loads so far)", cat.name);
    };

    let cat = cats
        .get_or_load((1, 7), || load_cat(1, "Tom"))
        .await
        .expect("the loader cannot fail");
    show("get_or_load cat 1: miss, the loader ran", &cat);

    let cat = cats
        .get_or_load((1, 7), || load_cat(1, "not called"))
        .await
        .expect("the loader cannot fail");
    show("get_or_load cat 1 again: hit", &cat);

    OwnerInvalid::objects()
        .invalid(7)
        .await
        .expect("memory store");
    println!("invalidated owner 7: cat 1 is now stale");

    let stale = cats.get((1, 7)).await.expect("stale data is kept");
    show("get cat 1: stale value served (stale on)", &stale);

    let cat = cats
        .get_or_load((1, 7), || load_cat(1, "Tom, renamed"))
        .await
        .expect("the loader cannot fail");
    show("get_or_load cat 1: refreshed by this caller", &cat);

    cacheme::tag("CatNode")
        .invalid()
        .await
        .expect("a registered tag");
    println!("tag CatNode invalidated: its values are deleted");
    println!(
        "{:<44} -> {:?}",
        "get cat 1 after the tag invalidation",
        cats.get((1, 7)).await
    );

    let stats = cacheme::global().stats();
    println!(
        "demo: loads={} hits={} misses={} invalidated={}",
        stats.load, stats.hit, stats.miss, stats.invalidated
    );
}
