//! What `#[derive(Node)]` and `#[derive(InvalidNode)]` generate, used
//! through the `cacheme` runtime.

use std::sync::Mutex;
use std::time::Duration;

use cacheme::{Cache, IntoInvalidKeys, InvalidKeys, InvalidNode, Node};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cat {
    id: u64,
    name: String,
}

/// A node with every attribute.
#[derive(Debug, Node)]
#[node(
    key = "cat:{id}",
    value = Cat,
    ttl = 300,
    stale = false,
    version = "v1",
    tag = "cats",
    refresh_after = 60,
    invalid_nodes = Self::groups,
    hit = Self::on_hit,
    miss = Self::on_miss
)]
struct CatNode {
    id: u64,
}

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn events() -> Vec<String> {
    EVENTS
        .lock()
        .map(|events| events.clone())
        .unwrap_or_default()
}

fn record(event: String) {
    if let Ok(mut events) = EVENTS.lock() {
        events.push(event);
    }
}

impl CatNode {
    /// Two different invalid node types.
    fn groups(&self) -> (UserInvalid, ShopInvalid) {
        (
            UserInvalid { id: self.id * 10 },
            ShopInvalid {
                shop: 3,
                region: "eu".into(),
            },
        )
    }

    fn on_hit(&self, key: &str, value: &Cat) {
        record(format!("hit {key} {}", value.name));
    }

    fn on_miss(&self, key: &str) {
        record(format!("miss {key}"));
    }
}

#[derive(Debug, InvalidNode)]
#[invalid_node(key = "user:{id}")]
struct UserInvalid {
    id: u64,
}

#[derive(Debug, InvalidNode)]
#[invalid_node(key = "shop:{shop}:{region}")]
struct ShopInvalid {
    shop: u32,
    region: String,
}

/// Several fields of different types; a String that gets escaped.
#[derive(Debug, PartialEq, Node)]
#[node(key = "owner:{owner}>cat:{name}", value = Vec<Cat>, ttl = "1500ms")]
struct OwnerCats {
    owner: u64,
    name: String,
}

/// A hand-written key, as in Python cacheme's `def key(self)`.
#[derive(Debug, Node)]
#[node(key = Self::cache_key, value = String)]
struct Legacy {
    a: u8,
    b: u8,
}

impl Legacy {
    fn cache_key(&self) -> String {
        format!("legacy:{}+{}", self.a, self.b)
    }
}

#[derive(InvalidNode)]
#[invalid_node(key = Self::cache_key)]
struct LegacyInvalid {
    x: u8,
}

impl LegacyInvalid {
    fn cache_key(&self) -> String {
        format!("legacy-group:{}", self.x)
    }
}

/// No fields: a constant key.
#[derive(Debug, Node)]
#[node(key = "config", value = String, ttl = "5m")]
struct Config;

/// Braced, empty: also a constant key, with literal braces.
#[derive(Debug, Node)]
#[node(key = "{{all}}", value = u32)]
struct All {}

/// Raw identifier fields.
#[derive(Debug, Node)]
#[node(key = "kind:{type}/{r#match}", value = u32)]
struct Raw {
    r#type: u8,
    r#match: bool,
}

#[test]
fn keys_are_escaped() {
    assert_eq!(CatNode { id: 1 }.key(), "cat:1");
    let node = OwnerCats {
        owner: 7,
        name: "tom:*?".into(),
    };
    assert_eq!(node.key(), "owner:7>cat:tom%3A%2A%3F");
    let node = OwnerCats {
        owner: 7,
        name: "猫 x".into(),
    };
    assert_eq!(node.key(), "owner:7>cat:猫%20x");
    assert_eq!(Legacy { a: 1, b: 2 }.key(), "legacy:1+2");
    assert_eq!(Config.key(), "config");
    assert_eq!(All {}.key(), "{all}");
    assert_eq!(
        Raw {
            r#type: 1,
            r#match: true
        }
        .key(),
        "kind:1/true"
    );
    assert_eq!(
        ShopInvalid {
            shop: 1,
            region: "a/b".into()
        }
        .key(),
        "shop:1:a%2Fb"
    );
    assert_eq!(LegacyInvalid { x: 4 }.key(), "legacy-group:4");
}

#[test]
fn from_the_fields() {
    let node: CatNode = 1u64.into();
    assert_eq!(node.id, 1);
    let node: OwnerCats = (7, String::from("tom")).into();
    assert_eq!(
        node,
        OwnerCats {
            owner: 7,
            name: "tom".into()
        }
    );
    let node: Legacy = (1, 2).into();
    assert_eq!(node.key(), "legacy:1+2");
    let _: Config = ().into();
    let _: All = ().into();
    let node: UserInvalid = 5.into();
    assert_eq!(node.key(), "user:5");
}

#[test]
fn specs() {
    assert_eq!(
        *CatNode::SPEC,
        cacheme::Spec::node("CatNode")
            .with_tag("cats")
            .with_ttl(Duration::from_secs(300))
            .with_stale(false)
            .with_version("v1")
            .with_refresh_after(Duration::from_secs(60))
    );
    assert_eq!(
        *OwnerCats::SPEC,
        cacheme::Spec::node("OwnerCats").with_ttl(Duration::from_millis(1500))
    );
    assert_eq!(Config::SPEC.ttl(), Some(Duration::from_secs(300)));
    assert_eq!(Legacy::SPEC.ttl(), None);
    assert_eq!(Raw::SPEC.name(), "Raw");
    assert!(!Raw::SPEC.is_function());
}

#[test]
fn nodes_are_registered() {
    let specs: Vec<&cacheme::Spec> = cacheme::tags()
        .iter()
        .flat_map(|tag| tag.specs().to_vec())
        .collect();
    let names: Vec<&str> = specs.iter().map(|spec| spec.name()).collect();
    for name in ["CatNode", "OwnerCats", "Legacy", "Config", "All", "Raw"] {
        assert!(names.contains(&name), "{name} is not in {names:?}");
    }
    let cats = specs.iter().find(|spec| spec.name() == "CatNode");
    assert_eq!(cats, Some(&CatNode::SPEC));
}

#[test]
fn invalid_nodes_of_two_types() {
    let mut keys = InvalidKeys::new();
    CatNode { id: 2 }.invalid_nodes(&mut keys);
    assert_eq!(keys.as_slice(), ["user:20", "shop:3:eu"]);

    // Nodes without `invalid_nodes` have none.
    let mut keys = InvalidKeys::new();
    Legacy { a: 1, b: 1 }.invalid_nodes(&mut keys);
    assert!(keys.is_empty());

    // Invalid nodes, by value and by reference, are `IntoInvalidKeys`.
    let user = UserInvalid { id: 1 };
    let mut keys = InvalidKeys::new();
    (&user, vec![UserInvalid { id: 2 }], LegacyInvalid { x: 3 }).push_into(&mut keys);
    assert_eq!(keys.as_slice(), ["user:1", "user:2", "legacy-group:3"]);
}

#[tokio::test]
async fn hooks_and_manager() {
    let cache = Cache::builder().build().expect("memory cache");
    let cats = cache.objects::<CatNode>();
    let load = || async {
        Ok::<_, std::io::Error>(Cat {
            id: 41,
            name: "Tom".into(),
        })
    };
    assert_eq!(cats.get(41).await, None);
    let cat = cats
        .get_or_load(41, load)
        .await
        .expect("the loader succeeds");
    assert_eq!(cats.get_or_load(41, load).await.expect("cached"), cat);
    assert_eq!(events(), ["miss cat:41@v1", "hit cat:41@v1 Tom"]);

    // Invalidating a group the node declared marks its value stale; the
    // node does not serve stale values.
    cache
        .invalid_objects::<UserInvalid>()
        .invalid(410)
        .await
        .expect("memory store");
    assert_eq!(cats.get(41).await, None);
}

#[tokio::test]
async fn integer_literals_infer_the_field_type() {
    // `invalid` takes `impl Into<CatNode>`; the only `From` impl with an
    // integer source is `From<u64>`, so `1` is inferred as `u64`.
    CatNode::objects().invalid(1).await.expect("memory store");
    UserInvalid::objects()
        .invalid(1)
        .await
        .expect("memory store");
    assert_eq!(OwnerCats::objects().get((7, "tom".to_owned())).await, None);
    let _ = Config::objects().invalid(()).await.expect("memory store");
}
