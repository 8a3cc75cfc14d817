//! An application laid out the way the seed recommends: the cache code in its
//! own module, with `nodes.rs` and `invalid_nodes.rs`.
//!
//! ```text
//! cargo run --example app                      # memory store
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example app
//! ```

mod cache;

use cache::invalid_nodes::ShopInvalid;
use cache::nodes::{ProductNode, ShopProductsNode};
use cacheme::{InvalidNode, Node};

/// The application's data layer (a database in a real service).
mod db {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Product {
        pub(crate) id: u64,
        pub(crate) shop_id: u64,
        pub(crate) title: String,
    }

    pub(crate) async fn product(id: u64, shop_id: u64) -> Result<Product, std::io::Error> {
        println!("  db: SELECT product {id}");
        Ok(Product {
            id,
            shop_id,
            title: format!("product #{id}"),
        })
    }

    pub(crate) async fn shop_products(shop_id: u64) -> Result<Vec<u64>, std::io::Error> {
        println!("  db: SELECT products of shop {shop_id}");
        Ok(vec![1, 2, 3])
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    cache::init()?;

    let ids = ShopProductsNode::objects()
        .get_or_load(9, || db::shop_products(9))
        .await?;
    for &id in &ids {
        let product = ProductNode::objects()
            .get_or_load((id, 9), || db::product(id, 9))
            .await?;
        println!("{product:?}");
    }
    println!("second pass, from the cache:");
    for &id in &ids {
        let product = ProductNode::objects()
            .get_or_load((id, 9), || db::product(id, 9))
            .await?;
        println!("{product:?}");
    }

    // The shop changed: everything that declared it is invalidated.
    ShopInvalid::objects().invalid(9).await?;
    println!("shop 9 changed: every entry that declared it is invalidated");

    let stats = cacheme::global().stats();
    println!("app: loads={} hits={}", stats.load, stats.hit);
    Ok(())
}
