//! `skip = ..` is evaluated before anything else: a skipped call runs the
//! body and builds no key or node, calls no hook and touches no cache. Until
//! it was, `key = format!("cat:{}", cat.unwrap().name), skip = cat.is_none()`
//! panicked when called with `None`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use cacheme::{Cache, Node, cacheme};

#[derive(Debug, Clone, PartialEq)]
struct Cat {
    name: String,
}

#[derive(Node)]
#[node(key = "cat:{name}", value = String)]
struct CatNode {
    name: String,
}

/// What one fn did: its cache used, its miss hook called, its body run.
#[derive(Default)]
struct Counts {
    cache: AtomicUsize,
    misses: AtomicUsize,
    loads: AtomicUsize,
}

impl Counts {
    const fn new() -> Self {
        Counts {
            cache: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            loads: AtomicUsize::new(0),
        }
    }

    /// The cache, counted.
    fn cache(&self) -> &'static Cache {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        self.cache.fetch_add(1, Ordering::SeqCst);
        CACHE.get_or_init(|| Cache::builder().build().expect("memory store"))
    }

    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::SeqCst);
    }

    /// The body.
    fn load(&self, cat: Option<&Cat>) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        cat.map_or_else(|| "nobody".to_owned(), |cat| cat.name.clone())
    }

    /// (cache uses, misses, loads).
    fn get(&self) -> (usize, usize, usize) {
        (
            self.cache.load(Ordering::SeqCst),
            self.misses.load(Ordering::SeqCst),
            self.loads.load(Ordering::SeqCst),
        )
    }
}

const SKIPPED: &str = "`skip = cat.is_none()` comes first";

static BY_KEY: Counts = Counts::new();
static BY_NODE: Counts = Counts::new();
static BY_KEY_BLOCKING: Counts = Counts::new();
static BY_NODE_BLOCKING: Counts = Counts::new();

#[cacheme(
    key = format!("key:{}", cat.expect(SKIPPED).name),
    skip = cat.is_none(),
    miss = |_key: &str| BY_KEY.miss(),
    cache = BY_KEY.cache()
)]
async fn by_key(cat: Option<&Cat>) -> String {
    BY_KEY.load(cat)
}

#[cacheme(
    node = CatNode { name: cat.expect(SKIPPED).name.clone() },
    skip = cat.is_none(),
    miss = |_key: &str| BY_NODE.miss(),
    cache = BY_NODE.cache()
)]
async fn by_node(cat: Option<&Cat>) -> String {
    BY_NODE.load(cat)
}

#[cacheme(
    key = format!("blocking:{}", cat.expect(SKIPPED).name),
    skip = cat.is_none(),
    miss = |_key: &str| BY_KEY_BLOCKING.miss(),
    cache = BY_KEY_BLOCKING.cache()
)]
fn by_key_blocking(cat: Option<&Cat>) -> Result<String, std::io::Error> {
    Ok(BY_KEY_BLOCKING.load(cat))
}

#[cacheme(
    node = CatNode { name: cat.expect(SKIPPED).name.clone() },
    skip = cat.is_none(),
    miss = |_key: &str| BY_NODE_BLOCKING.miss(),
    cache = BY_NODE_BLOCKING.cache()
)]
fn by_node_blocking(cat: Option<&Cat>) -> String {
    BY_NODE_BLOCKING.load(cat)
}

#[tokio::test]
async fn an_async_fn_with_a_key_skips_before_building_it() {
    assert_eq!(by_key(None).await, "nobody");
    assert_eq!(by_key(None).await, "nobody");
    assert_eq!(BY_KEY.get(), (0, 0, 2), "the body ran twice, alone");

    let tom = Cat { name: "tom".into() };
    assert_eq!(by_key(Some(&tom)).await, "tom");
    assert_eq!(by_key(Some(&tom)).await, "tom");
    assert_eq!(BY_KEY.get(), (2, 1, 3), "loaded once, then cached");
}

#[tokio::test]
async fn an_async_fn_with_a_node_skips_before_building_it() {
    assert_eq!(by_node(None).await, "nobody");
    assert_eq!(BY_NODE.get(), (0, 0, 1));

    let ann = Cat { name: "ann".into() };
    assert_eq!(by_node(Some(&ann)).await, "ann");
    assert_eq!(by_node(Some(&ann)).await, "ann");
    assert_eq!(BY_NODE.get(), (2, 1, 2));
}

#[test]
fn a_plain_fn_with_a_key_skips_before_building_it() {
    assert_eq!(by_key_blocking(None).expect("loads"), "nobody");
    assert_eq!(BY_KEY_BLOCKING.get(), (0, 0, 1));

    let kit = Cat { name: "kit".into() };
    assert_eq!(by_key_blocking(Some(&kit)).expect("loads"), "kit");
    assert_eq!(by_key_blocking(Some(&kit)).expect("cached"), "kit");
    assert_eq!(BY_KEY_BLOCKING.get(), (2, 1, 2));
}

#[test]
fn a_plain_fn_with_a_node_skips_before_building_it() {
    assert_eq!(by_node_blocking(None), "nobody");
    assert_eq!(BY_NODE_BLOCKING.get(), (0, 0, 1));

    let max = Cat { name: "max".into() };
    assert_eq!(by_node_blocking(Some(&max)), "max");
    assert_eq!(by_node_blocking(Some(&max)), "max");
    assert_eq!(BY_NODE_BLOCKING.get(), (2, 1, 2));
}
