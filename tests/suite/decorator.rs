//! `#[cacheme]` on async fns and methods, against a real redis-server: one
//! test per decorator example of the seed's README ("Dynamic key based on
//! args/kwargs", "Node for better management", "Skip cache", "Invalid all
//! keys for tag", "Hit/miss function support", "Timeout(ttl) support", the
//! Book/User serializer example, `c.cacheme_result`), and what the Rust form
//! adds (the default key, `Result` and `Option` returns, error sharing,
//! generic fns, the shapes of methods). The blocking twins are in
//! `decorator_blocking.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::fixtures::*;
use cacheme::{Cache, cacheme};
use serde::Serialize;
use tokio::sync::Semaphore;

/// The seed's serializer class: methods with `self`, a cache of their own.
/// `self` is part of a default key; nothing of it tells two `Cats` apart.
#[derive(Serialize)]
struct Cats {
    #[serde(skip)]
    cache: Cache,
    #[serde(skip)]
    loads: Counter,
    /// The loaders of `flaky_*` wait for a permit.
    #[serde(skip)]
    gate: Semaphore,
}

impl Cats {
    fn new() -> Self {
        Cats {
            cache: cache(),
            loads: Counter::default(),
            gate: Semaphore::new(0),
        }
    }

    /// "Dynamic key based on args/kwargs": `key=lambda c: 'cat:{name}'.format(name=c.cat.name)`.
    #[cacheme(key = format!("cat:{}", cat.name), cache = self.cache)]
    async fn get_cat(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Node for better management": `node=lambda c: CatNode(cat=c.cat)`.
    #[cacheme(node = CatInfoNode { id: cat.id }, cache = self.cache)]
    async fn cat_by_node(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Skip cache based on args/kwargs": `skip=lambda c: c.cat is None`.
    #[cacheme(
        node = MaybeCatNode { id: cat.map_or(0, |cat| cat.id) },
        skip = cat.is_none(),
        cache = self.cache
    )]
    async fn maybe_cat(&self, cat: Option<&Cat>) -> Option<CatInfo> {
        let version = self.loads.hit();
        cat.map(|cat| CatInfo::of(cat, version))
    }

    /// "Invalid all keys for tag": `tag='cats'`.
    #[cacheme(key = format!("tagged:{}", cat.name), tag = "async_cats", cache = self.cache)]
    async fn tagged_cat(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Hit/miss function support": `hit=lambda key, result, c: ..`, `miss=lambda key, c: ..`.
    #[cacheme(key = format!("hooked:{}", cat.name), hit = on_hit, miss = on_miss, cache = self.cache)]
    async fn hooked_cat(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// Hooks that see the arguments (the seed's container `c`) are closures;
    /// the decorator's `hit` replaces the node's, the node's `miss` stays.
    #[cacheme(
        node = CatInfoNode { id: cat.id },
        hit = |key: &str, info: &CatInfo| log_hook(&format!("closure hit {} {}", cat.name, info.id), key),
        cache = self.cache
    )]
    async fn node_with_hit(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Timeout(ttl) support": `timeout=300`.
    #[cacheme(key = format!("ttl:{}", cat.name), ttl = 300, cache = self.cache)]
    async fn cat_for_five_minutes(&self, cat: &Cat) -> CatInfo {
        CatInfo::of(cat, self.loads.hit())
    }

    #[cacheme(key = format!("short:{}", cat.name), ttl = "1500ms", cache = self.cache)]
    async fn cat_for_a_moment(&self, cat: &Cat) -> CatInfo {
        CatInfo::of(cat, self.loads.hit())
    }

    /// The seed's serializer example: `key=lambda c: c.obj.cache_key + ">" + "owner"`,
    /// `invalid_keys=lambda c: [c.obj.owner.cache_key]`.
    #[cacheme(
        key = format!("{}>owner", book.cache_key()),
        invalid_keys = [OwnerInvalid { id: book.owner_id }],
        cache = self.cache
    )]
    async fn get_owner(&self, book: &Book) -> Owner {
        let version = self.loads.hit();
        Owner {
            id: book.owner_id,
            name: format!("owner v{version}"),
        }
    }

    /// The same with `stale = false`: after an invalidation no caller is
    /// served the old owner.
    #[cacheme(
        key = format!("{}>owner/fresh", book.cache_key()),
        invalid_keys = format!("User:{}", book.owner_id),
        stale = false,
        cache = self.cache
    )]
    async fn get_fresh_owner(&self, book: &Book) -> Owner {
        let version = self.loads.hit();
        Owner {
            id: book.owner_id,
            name: format!("owner v{version}"),
        }
    }

    /// `invalid_keys` computed from the loaded value (the seed's `c.cacheme_result`):
    /// the owner is only known once the book is loaded.
    #[cacheme(
        key = format!("Book:{id}"),
        invalid_keys = format!("User:{}", cacheme_result.owner_id),
        cache = self.cache
    )]
    async fn book(&self, id: u64) -> Book {
        self.loads.hit();
        Book { id, owner_id: 200 }
    }

    /// The default key: the method's path and its arguments (not `self`).
    #[cacheme(cache = self.cache)]
    async fn describe(&self, name: &str, kind: &str) -> String {
        format!("{name}/{kind} v{}", self.loads.hit())
    }

    /// An argument that fails to serialize at run time (JSON object keys
    /// must be strings): the call is not cached.
    #[cacheme(cache = self.cache)]
    async fn count_pairs(&self, pairs: &HashMap<(u8, u8), u8>) -> usize {
        self.loads.hit();
        pairs.len()
    }

    /// `Result`: only `Ok` is cached; `?` and `return` work in the body.
    #[cacheme(key = format!("parsed:{text}"), cache = self.cache)]
    async fn parse(&self, text: &str) -> Result<u64, AppError> {
        self.loads.hit();
        if text.is_empty() {
            return Err(AppError::NotFound(0));
        }
        let number: u64 = text.parse()?;
        Ok(number)
    }

    /// `Option`: `None` is cached too.
    #[cacheme(key = format!("found:{id}"), cache = self.cache)]
    async fn find(&self, id: u64) -> Option<CatInfo> {
        self.loads.hit();
        (id != 0).then(|| CatInfo::of(&cat(id, "Tom"), 1))
    }

    /// A `Clone` error is shared with the callers that waited for the load.
    #[cacheme(key = format!("flaky:shared:{id}"), cache = self.cache)]
    async fn flaky_shared(&self, id: u64) -> Result<u64, SharedError> {
        let load = self.loads.hit();
        self.gate.acquire().await.expect("open").forget();
        Err(SharedError(format!("load {load} of {id} failed")))
    }

    /// An error that is not `Clone` is not: each caller runs the loader.
    #[cacheme(key = format!("flaky:own:{id}"), cache = self.cache)]
    async fn flaky_own(&self, id: u64) -> Result<u64, OwnError> {
        let load = self.loads.hit();
        self.gate.acquire().await.expect("open").forget();
        Err(OwnError(format!("load {load} of {id} failed")))
    }

    /// A generic method with the default key: the key names the type.
    #[cacheme(cache = self.cache)]
    async fn count<T: Serialize + Sync>(&self, items: &[T]) -> usize {
        self.loads.hit();
        items.len()
    }

    /// `impl Trait` arguments, with a key.
    #[cacheme(key = format!("shown:{shown}"), cache = self.cache)]
    pub(crate) async fn show(&self, shown: impl std::fmt::Display + Sync) -> String {
        self.loads.hit();
        shown.to_string()
    }

    /// `&mut self`.
    #[cacheme(key = format!("mut:{id}"), cache = self.cache)]
    async fn bump(&mut self, id: u64) -> u64 {
        self.loads.hit() + id
    }

    /// `self: Arc<Self>`, so that the call can be spawned.
    #[cacheme(key = format!("arc:{id}"), cache = self.cache)]
    async fn shared_self(self: Arc<Self>, id: u64) -> u64 {
        self.loads.hit() + id
    }
}

fn on_hit(key: &str, info: &CatInfo) {
    log_hook(&format!("hit {}", info.id), key);
}

fn on_miss(key: &str) {
    log_hook("miss", key);
}

/// A trait with an async method; `#[cacheme]` on its implementation.
trait CatRepo {
    async fn name_of(&self, id: u64) -> String;
}

impl CatRepo for Cats {
    #[cacheme(key = format!("repo:{id}"), cache = self.cache)]
    async fn name_of(&self, id: u64) -> String {
        format!("cat {id} v{}", self.loads.hit())
    }
}

#[tokio::test]
async fn dynamic_key_from_args() {
    let cats = Cats::new();
    let tom = cats.get_cat(&cat(1, "Tom")).await;
    assert_eq!(tom, CatInfo::of(&cat(1, "Tom"), 1));
    assert!(is_stored(&cats.cache, "cat:Tom"));

    // Same key: served from Redis, the loader does not run.
    assert_eq!(cats.get_cat(&cat(1, "Tom")).await, tom);
    // Another name, another key.
    let felix = cats.get_cat(&cat(2, "Felix")).await;
    assert_eq!(felix, CatInfo::of(&cat(2, "Felix"), 2));
    assert_eq!(cats.loads.get(), 2);
    assert_eq!(stored_keys(&cats.cache), ["cat:Felix", "cat:Tom"]);
}

#[tokio::test]
async fn node_for_better_management() {
    let cats = Cats::new();
    let tom = cats.cat_by_node(&cat(1, "Tom")).await;
    assert_eq!(cats.cat_by_node(&cat(1, "Tom")).await, tom);
    assert_eq!(cats.loads.get(), 1);

    // The value is the node's: its manager sees it, its ttl applies, and its hooks ran.
    let manager = cats.cache.objects::<CatInfoNode>();
    assert_eq!(manager.get(1).await, Some(tom.clone()));
    let ttl = pttl(&cats.cache, "cat:1");
    assert!(
        ttl > 290_000 && ttl <= 300_000,
        "the node's ttl of 300 s: {ttl}"
    );
    assert_eq!(hook_calls("node miss", "cat:1"), 1);
    assert!(hook_calls("node hit", "cat:1") >= 1);

    // Invalidating through the node reloads on the next call.
    manager.invalid_all().await.expect("invalidation");
    assert_eq!(
        cats.cat_by_node(&cat(1, "Tom")).await,
        CatInfo::of(&cat(1, "Tom"), 2)
    );
}

#[tokio::test]
async fn decorator_hooks_replace_the_nodes() {
    let cats = Cats::new();
    let cat = cat(77, "Hooked");
    // Other tests share CatInfoNode's hook log: 77 is this test's own id.
    cats.node_with_hit(&cat).await;
    cats.node_with_hit(&cat).await;
    assert_eq!(
        hook_calls("node miss", "cat:77"),
        1,
        "the node's miss hook stays"
    );
    assert_eq!(
        hook_calls("node hit", "cat:77"),
        0,
        "the decorator's hit hook replaces it"
    );
    assert_eq!(hook_calls("closure hit Hooked 77", "cat:77"), 1);
}

#[tokio::test]
async fn skip_cache() {
    let cats = Cats::new();
    // Skipped: the fn runs every time and nothing is stored.
    assert_eq!(cats.maybe_cat(None).await, None);
    assert_eq!(cats.maybe_cat(None).await, None);
    assert_eq!(cats.loads.get(), 2);
    assert!(stored_keys(&cats.cache).is_empty());

    // Not skipped: cached under the node.
    let tom = cat(3, "Tom");
    let info = cats.maybe_cat(Some(&tom)).await;
    assert_eq!(cats.maybe_cat(Some(&tom)).await, info);
    assert_eq!(cats.loads.get(), 3);
    assert_eq!(stored_keys(&cats.cache), ["maybe:3"]);
}

#[tokio::test]
async fn invalid_all_keys_for_tag() {
    let cats = Cats::new();
    cats.tagged_cat(&cat(1, "Tom")).await;
    cats.tagged_cat(&cat(2, "Felix")).await;
    cats.tagged_cat(&cat(1, "Tom")).await;
    assert_eq!(cats.loads.get(), 2);

    // The tag is registered with the fn's spec.
    let tag = cacheme::tags()
        .into_iter()
        .find(|tag| tag.name() == "async_cats")
        .expect("the tag `async_cats` is registered");
    let spec = tag.specs()[0];
    assert!(spec.is_function());
    assert!(
        spec.name().ends_with("suite::decorator::tagged_cat"),
        "{}",
        spec.name()
    );

    // "Invalid will delete keys directly, no stale data."
    // (In O(1): the values stay stored, never served again; the next call
    // loads.)
    cats.cache.tag("async_cats").invalid().await.expect("tag");
    assert_eq!(
        cats.tagged_cat(&cat(1, "Tom")).await,
        CatInfo::of(&cat(1, "Tom"), 3)
    );
}

#[tokio::test]
async fn hit_and_miss_callbacks() {
    let cats = Cats::new();
    cats.hooked_cat(&cat(5, "Hooks")).await;
    assert_eq!(hook_calls("miss", "hooked:Hooks"), 1);
    assert_eq!(hook_calls("hit 5", "hooked:Hooks"), 0);
    cats.hooked_cat(&cat(5, "Hooks")).await;
    cats.hooked_cat(&cat(5, "Hooks")).await;
    assert_eq!(hook_calls("miss", "hooked:Hooks"), 1);
    assert_eq!(hook_calls("hit 5", "hooked:Hooks"), 2);
}

#[tokio::test]
async fn timeout_ttl() {
    let cats = Cats::new();
    let tom = cat(1, "Tom");
    cats.cat_for_five_minutes(&tom).await;
    let ttl = pttl(&cats.cache, "ttl:Tom");
    assert!(ttl > 290_000 && ttl <= 300_000, "ttl = 300: {ttl} ms left");
    cats.cat_for_a_moment(&tom).await;
    let ttl = pttl(&cats.cache, "short:Tom");
    assert!(ttl > 0 && ttl <= 1_500, "ttl = \"1500ms\": {ttl} ms left");
    // Without ttl (and no default), values do not expire.
    cats.get_cat(&tom).await;
    assert_eq!(pttl(&cats.cache, "cat:Tom"), -1);
}

#[tokio::test]
async fn book_owner_serializer_example() {
    let cats = Cats::new();
    let book = Book {
        id: 100,
        owner_id: 200,
    };
    let owner = cats.get_owner(&book).await;
    assert_eq!(owner.name, "owner v1");
    // "the cache key will be Book:100>owner", stored under the invalid key User:200.
    assert!(is_stored(&cats.cache, "Book:100>owner"));
    assert_eq!(group_members(&cats.cache, "User:200"), ["Book:100>owner"]);
    assert_eq!(cats.get_owner(&book).await, owner);

    // Changing user 200 invalidates it; the next call reloads.
    cats.cache
        .create_invalidation()
        .invalid_key("User:200")
        .run()
        .await
        .expect("invalidation"); // O(1): a group invalidation counts no values
    assert_eq!(cats.get_owner(&book).await.name, "owner v2");
    assert_eq!(cats.loads.get(), 2);

    // With stale = false, a reader that does not load is not served the old
    // owner either.
    let fresh = cats.get_fresh_owner(&book).await;
    assert_eq!(fresh.name, "owner v3");
    let lookup = || {
        cats.cache
            .lookup::<Owner>("Book:100>owner/fresh")
            .stale(false)
    };
    assert_eq!(lookup().get().await, Some(fresh));
    cats.cache
        .invalid_objects::<OwnerInvalid>()
        .invalid(200)
        .await
        .expect("invalidation");
    assert_eq!(lookup().get().await, None);
    assert_eq!(cats.get_fresh_owner(&book).await.name, "owner v4");
}

#[tokio::test]
async fn invalid_keys_from_the_result() {
    let cats = Cats::new();
    let book = cats.book(100).await;
    assert_eq!(book.owner_id, 200);
    assert_eq!(group_members(&cats.cache, "User:200"), ["Book:100"]);
    assert_eq!(cats.book(100).await, book);
    assert_eq!(cats.loads.get(), 1);

    cats.cache
        .create_invalidation()
        .invalid_key("User:200")
        .run()
        .await
        .expect("invalidation"); // O(1): a group invalidation counts no values
    cats.book(100).await;
    assert_eq!(cats.loads.get(), 2);
}

#[tokio::test]
async fn the_default_key_never_mixes_arguments() {
    let cats = Cats::new();
    // Values with `:` and `*` in them cannot make two calls share a key.
    let calls = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("a*", "c"),
        ("a", "*c"),
        ("a", "c"),
    ];
    for (name, kind) in calls {
        assert_eq!(
            cats.describe(name, kind).await,
            format!("{name}/{kind} v{}", cats.loads.get())
        );
    }
    assert_eq!(cats.loads.get(), 5);
    for (name, kind) in calls {
        assert!(
            cats.describe(name, kind)
                .await
                .starts_with(&format!("{name}/{kind} "))
        );
    }
    assert_eq!(cats.loads.get(), 5, "every second call is a hit");

    // The key is the method's path and the escaped JSON of `self` and the arguments.
    let keys = stored_keys(&cats.cache);
    assert_eq!(keys.len(), 5);
    assert!(
        keys.contains(&"suite::decorator::Cats::describe:%7B%7D:%22a%3Ab%22:%22c%22".to_owned()),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|key| key.matches(':').count() == 9),
        "{keys:?}"
    );
}

#[tokio::test]
async fn an_argument_that_does_not_serialize_is_not_cached() {
    let cats = Cats::new();
    let pairs = HashMap::from([((1, 2), 3)]);
    assert_eq!(cats.count_pairs(&pairs).await, 1);
    assert_eq!(cats.count_pairs(&pairs).await, 1);
    assert_eq!(cats.loads.get(), 2, "not cached: the fn runs every time");
    assert!(stored_keys(&cats.cache).is_empty());
}

#[tokio::test]
async fn result_caches_ok_and_returns_err_untouched() {
    let cats = Cats::new();
    assert_eq!(cats.parse("").await, Err(AppError::NotFound(0)));
    let bad = cats.parse("x1").await;
    assert_eq!(
        bad,
        Err(AppError::BadNumber("invalid digit found in string".into()))
    );
    assert_eq!(cats.parse("x1").await, bad);
    assert_eq!(cats.loads.get(), 3, "errors are never cached");
    assert!(stored_keys(&cats.cache).is_empty());

    assert_eq!(cats.parse("42").await, Ok(42));
    assert_eq!(cats.parse("42").await, Ok(42));
    assert_eq!(cats.loads.get(), 4);
    assert_eq!(stored_keys(&cats.cache), ["parsed:42"]);
}

#[tokio::test]
async fn option_caches_none_too() {
    let cats = Cats::new();
    assert_eq!(cats.find(0).await, None);
    assert_eq!(cats.find(0).await, None);
    assert_eq!(cats.loads.get(), 1, "None is a value: cached");
    assert!(is_stored(&cats.cache, "found:0"));
    assert!(cats.find(1).await.is_some());
    assert_eq!(cats.loads.get(), 2);
}

/// Two concurrent callers of one key; the first one's load fails once the
/// second one waits for it.
async fn two_failing_callers<E: std::fmt::Debug>(
    cats: &Cats,
    call: impl AsyncFn() -> Result<u64, E>,
) -> (Result<u64, E>, Result<u64, E>) {
    let open_gate = async {
        wait_until_async("the second caller waits for the first", || {
            cats.cache.stats().coalesced == 1
        })
        .await;
        cats.gate.add_permits(2);
    };
    let (first, second, ()) = tokio::join!(call(), call(), open_gate);
    (first, second)
}

#[tokio::test]
async fn clone_errors_are_shared_with_waiting_callers() {
    let cats = Cats::new();
    let (first, second) = two_failing_callers(&cats, || cats.flaky_shared(1)).await;
    let failed = Err(SharedError("load 1 of 1 failed".into()));
    assert_eq!((first, second), (failed.clone(), failed));
    assert_eq!(cats.loads.get(), 1, "one load, its error shared");
}

#[tokio::test]
async fn other_errors_are_not_shared() {
    let cats = Cats::new();
    let (first, second) = two_failing_callers(&cats, || cats.flaky_own(1)).await;
    // Either caller may lead (the first poll of the first call may yield
    // before it joins the flight): each got the error of its own load.
    let mut errors = [first, second];
    errors.sort_by_key(|result| format!("{result:?}"));
    assert_eq!(
        errors,
        [
            Err(OwnError("load 1 of 1 failed".into())),
            Err(OwnError("load 2 of 1 failed".into()))
        ]
    );
    assert_eq!(
        cats.loads.get(),
        2,
        "the waiting caller ran the loader itself"
    );
}

#[tokio::test]
async fn generic_fns_key_each_type_apart() {
    let cats = Cats::new();
    assert_eq!(cats.count(&[1u8, 2]).await, 2);
    assert_eq!(cats.count(&[1u16, 2]).await, 2);
    assert_eq!(cats.count(&[1u8, 2]).await, 2);
    assert_eq!(cats.loads.get(), 2, "same JSON, different types: two keys");
    let keys = stored_keys(&cats.cache);
    assert!(
        keys.contains(&"suite::decorator::Cats::count<u8>:%7B%7D:%5B1%2C2%5D".to_owned()),
        "{keys:?}"
    );
}

#[tokio::test]
async fn methods_of_every_shape() {
    let mut cats = Cats::new();
    assert_eq!(cats.show(7).await, "7");
    assert_eq!(cats.show("7").await, "7", "same key");
    assert_eq!(cats.bump(10).await, 12);
    assert_eq!(cats.bump(10).await, 12);
    assert_eq!(cats.name_of(3).await, "cat 3 v3");
    assert_eq!(cats.name_of(3).await, "cat 3 v3");
    assert_eq!(cats.loads.get(), 3);

    // The future is `Send`: it can be spawned.
    let cats = Arc::new(cats);
    let spawned = tokio::spawn(cats.clone().shared_self(1));
    assert_eq!(spawned.await.expect("no panic"), 5);
    assert_eq!(cats.clone().shared_self(1).await, 5);
    assert_eq!(cats.loads.get(), 4);
}

#[tokio::test]
async fn a_disabled_cache_runs_the_fn() {
    let cats = Cats::new();
    cats.cache.set_enabled(false);
    cats.get_cat(&cat(1, "Tom")).await;
    cats.get_cat(&cat(1, "Tom")).await;
    assert_eq!(cats.loads.get(), 2);
    assert!(stored_keys(&cats.cache).is_empty());
}

#[tokio::test]
async fn concurrent_callers_load_once() {
    // Ten concurrent callers, one load (the runtime's guarantee, through the macro).
    let cats = Arc::new(Cats::new());
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let cats = cats.clone();
            tokio::spawn(async move { cats.get_cat(&cat(9, "Slow")).await })
        })
        .collect();
    for call in calls {
        let info = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("in time")
            .expect("no panic");
        assert_eq!(info, CatInfo::of(&cat(9, "Slow"), 1));
    }
    assert_eq!(cats.loads.get(), 1);
}
