//! Invalid nodes: the dependency groups that nodes declare.

use cacheme::InvalidNode;

/// Everything cached about one shop.
#[derive(InvalidNode)]
#[invalid_node(key = "shop:{id}")]
pub(crate) struct ShopInvalid {
    pub(crate) id: u64,
}
