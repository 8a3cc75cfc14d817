//! Cache nodes: one struct per kind of cached value; the fields form the key.

use cacheme::Node;

use super::invalid_nodes::ShopInvalid;
use crate::db::Product;

/// One product, invalidated with its shop.
#[derive(Node)]
#[node(key = "product:{id}", value = Product, ttl = 600, invalid_nodes = Self::shop)]
pub(crate) struct ProductNode {
    pub(crate) id: u64,
    pub(crate) shop_id: u64,
}

impl ProductNode {
    fn shop(&self) -> ShopInvalid {
        ShopInvalid { id: self.shop_id }
    }
}

/// The product ids of a shop; stale lists are never served.
#[derive(Node)]
#[node(key = "shop:{shop_id}:products", value = Vec<u64>, ttl = 60, stale = false, invalid_nodes = Self::shop)]
pub(crate) struct ShopProductsNode {
    pub(crate) shop_id: u64,
}

impl ShopProductsNode {
    fn shop(&self) -> ShopInvalid {
        ShopInvalid { id: self.shop_id }
    }
}
