//! The default key of a `#[cacheme]` method includes its receiver, serialized
//! like the other arguments: two instances never share a value unless they
//! serialize the same. (It once left `self` out: `tenant_b.count()` returned
//! `tenant_a`'s result.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cacheme::{Cache, cacheme};
use serde::Serialize;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache::builder().build().expect("memory store"))
}

/// What identifies a tenant is serialized; its counter is not.
#[derive(Serialize)]
struct Tenant {
    name: String,
    #[serde(skip)]
    loads: AtomicUsize,
}

impl Tenant {
    fn new(name: &str) -> Self {
        Tenant {
            name: name.to_owned(),
            loads: AtomicUsize::new(0),
        }
    }

    fn load(&self, what: &str) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("{what} of {}", self.name)
    }

    #[cacheme(cache = cache())]
    fn count(&self) -> String {
        self.load("count")
    }

    #[cacheme(cache = cache())]
    async fn describe(&self, kind: &str) -> String {
        self.load(kind)
    }

    #[cacheme(cache = cache())]
    fn renamed(&mut self, to: String) -> String {
        self.name = to;
        self.load("renamed")
    }

    #[cacheme(cache = cache())]
    fn shared(self: Arc<Self>) -> String {
        self.load("shared")
    }
}

fn loads(tenant: &Tenant) -> usize {
    tenant.loads.load(Ordering::SeqCst)
}

#[test]
fn two_receivers_get_their_own_values() {
    let a = Tenant::new("a");
    let b = Tenant::new("b");
    assert_eq!(a.count(), "count of a");
    assert_eq!(b.count(), "count of b");
    assert_eq!(a.count(), "count of a");
    assert_eq!((loads(&a), loads(&b)), (1, 1));

    // The same fields: the same key, so the value is shared.
    let another_a = Tenant::new("a");
    assert_eq!(another_a.count(), "count of a");
    assert_eq!(loads(&another_a), 0);
}

#[tokio::test]
async fn async_methods_too() {
    let c = Tenant::new("c");
    let d = Tenant::new("d");
    assert_eq!(c.describe("cats").await, "cats of c");
    assert_eq!(d.describe("cats").await, "cats of d");
    assert_eq!(c.describe("cats").await, "cats of c");
    assert_eq!(c.describe("dogs").await, "dogs of c");
    assert_eq!((loads(&c), loads(&d)), (2, 1));
}

#[test]
fn mut_and_smart_pointer_receivers_too() {
    let mut e = Tenant::new("e");
    let mut f = Tenant::new("f");
    assert_eq!(e.renamed("x".into()), "renamed of x");
    // `f` differs from `e` as it was when called: its own value.
    assert_eq!(f.renamed("x".into()), "renamed of x");
    assert_eq!((loads(&e), loads(&f)), (1, 1));

    let g = Arc::new(Tenant::new("g"));
    let h = Arc::new(Tenant::new("h"));
    assert_eq!(Arc::clone(&g).shared(), "shared of g");
    assert_eq!(Arc::clone(&h).shared(), "shared of h");
    assert_eq!(Arc::clone(&g).shared(), "shared of g");
    assert_eq!((loads(&g), loads(&h)), (1, 1));
}
