//! `crate = path`: the three macros used through a re-export of cacheme
//! under another name, the generated code naming that path.

/// An application's own facade over cacheme.
mod app {
    pub(crate) mod caching {
        pub(crate) use cacheme::*;
    }
}

use app::caching::{InvalidKeys, InvalidNode as _, Node as _};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cat {
    id: u64,
}

#[derive(app::caching::InvalidNode)]
#[invalid_node(crate = crate::app::caching, key = "owner:{owner}")]
struct OwnerInvalid {
    owner: u64,
}

#[derive(app::caching::Node)]
#[node(
    crate = crate::app::caching,
    key = "cat:{id}",
    value = Cat,
    ttl = 60,
    local_ttl = 5,
    invalid_nodes = Self::owner
)]
struct CatNode {
    id: u64,
}

impl CatNode {
    fn owner(&self) -> OwnerInvalid {
        OwnerInvalid {
            owner: self.id * 10,
        }
    }
}

/// Serde's spelling, a string, works too.
#[app::caching::cacheme(crate = "crate::app::caching", key = format!("cat:{id}"), tag = "cats")]
fn get_cat(id: u64) -> Result<Cat, std::io::Error> {
    Ok(Cat { id })
}

#[app::caching::cacheme(crate = crate::app::caching, node = CatNode { id }, skip = id == 0)]
async fn cat_by_node(id: u64) -> Cat {
    Cat { id }
}

mod nested {
    /// An absolute path works from any module.
    #[crate::app::caching::cacheme(crate = crate::app::caching)]
    pub(crate) fn double(x: u64) -> u64 {
        x * 2
    }
}

#[test]
fn the_derives_work_through_the_re_export() {
    assert_eq!(CatNode { id: 1 }.key(), "cat:1");
    assert_eq!(
        CatNode::SPEC.ttl(),
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(OwnerInvalid::from(7).key(), "owner:7");
    let mut keys = InvalidKeys::new();
    CatNode { id: 1 }.invalid_nodes(&mut keys);
    assert_eq!(keys.as_slice(), ["owner:10"]);
}

#[tokio::test]
async fn the_attribute_works_through_the_re_export() {
    assert_eq!(get_cat(3).expect("loads"), Cat { id: 3 });
    assert_eq!(cat_by_node(4).await, Cat { id: 4 });
    assert_eq!(nested::double(21), 42);
}
