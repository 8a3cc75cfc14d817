//! `#[cacheme]` on plain (blocking) fns and methods, against a real
//! redis-server: the twins of `decorator.rs`. Every test runs on a
//! plain test thread, with no tokio runtime anywhere: the blocking path of
//! the runtime works without one.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::fixtures::*;
use cacheme::{Cache, cacheme};
use serde::Serialize;

/// The loaders of `flaky_*` wait until the gate is open.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().expect("gate");
        while !*open {
            open = self.opened.wait(open).expect("gate");
        }
    }

    fn open(&self) {
        *self.open.lock().expect("gate") = true;
        self.opened.notify_all();
    }
}

/// The seed's serializer class, with blocking methods. `self` is part of a
/// default key; nothing of it tells two `Cats` apart.
#[derive(Serialize)]
struct Cats {
    #[serde(skip)]
    cache: Cache,
    #[serde(skip)]
    loads: Counter,
    #[serde(skip)]
    gate: Gate,
}

impl Cats {
    fn new() -> Self {
        Cats {
            cache: cache(),
            loads: Counter::default(),
            gate: Gate::default(),
        }
    }

    /// "Dynamic key based on args/kwargs".
    #[cacheme(key = format!("cat:{}", cat.name), cache = self.cache)]
    fn get_cat(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Node for better management".
    #[cacheme(node = CatInfoNode { id: cat.id }, cache = self.cache)]
    fn cat_by_node(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Skip cache based on args/kwargs".
    #[cacheme(
        node = MaybeCatNode { id: cat.map_or(0, |cat| cat.id) },
        skip = cat.is_none(),
        cache = self.cache
    )]
    fn maybe_cat(&self, cat: Option<&Cat>) -> Option<CatInfo> {
        let version = self.loads.hit();
        cat.map(|cat| CatInfo::of(cat, version))
    }

    /// "Invalid all keys for tag".
    #[cacheme(key = format!("tagged:{}", cat.name), tag = "blocking_cats", cache = self.cache)]
    fn tagged_cat(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Hit/miss function support".
    #[cacheme(key = format!("hooked:{}", cat.name), hit = on_hit, miss = on_miss, cache = self.cache)]
    fn hooked_cat(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// The decorator's `miss` replaces the node's; the node's `hit` stays.
    #[cacheme(
        node = CatInfoNode { id: cat.id },
        miss = |key: &str| log_hook(&format!("closure miss {}", cat.name), key),
        cache = self.cache
    )]
    fn node_with_miss(&self, cat: &Cat) -> CatInfo {
        let version = self.loads.hit();
        CatInfo::of(cat, version)
    }

    /// "Timeout(ttl) support".
    #[cacheme(key = format!("ttl:{}", cat.name), ttl = 300, cache = self.cache)]
    fn cat_for_five_minutes(&self, cat: &Cat) -> CatInfo {
        CatInfo::of(cat, self.loads.hit())
    }

    #[cacheme(key = format!("short:{}", cat.name), ttl = "1500ms", cache = self.cache)]
    fn cat_for_a_moment(&self, cat: &Cat) -> CatInfo {
        CatInfo::of(cat, self.loads.hit())
    }

    /// The seed's serializer example.
    #[cacheme(
        key = format!("{}>owner", book.cache_key()),
        invalid_keys = [OwnerInvalid { id: book.owner_id }],
        cache = self.cache
    )]
    fn get_owner(&self, book: &Book) -> Owner {
        let version = self.loads.hit();
        Owner {
            id: book.owner_id,
            name: format!("owner v{version}"),
        }
    }

    /// `invalid_keys` from the loaded value (`c.cacheme_result`), nested lists.
    #[cacheme(
        key = format!("Book:{id}"),
        invalid_keys = vec![vec![format!("User:{}", cacheme_result.owner_id)], vec![format!("Shelf:{id}")]],
        stale = false,
        cache = self.cache
    )]
    fn book(&self, id: u64) -> Book {
        self.loads.hit();
        Book { id, owner_id: 200 }
    }

    /// The default key.
    #[cacheme(cache = self.cache)]
    fn describe(&self, name: &str, kind: &str) -> String {
        format!("{name}/{kind} v{}", self.loads.hit())
    }

    #[cacheme(cache = self.cache)]
    fn count_pairs(&self, pairs: &HashMap<(u8, u8), u8>) -> usize {
        self.loads.hit();
        pairs.len()
    }

    /// `Result`, with `?` and `return` in the body.
    #[cacheme(key = format!("parsed:{text}"), cache = self.cache)]
    fn parse(&self, text: &str) -> Result<u64, AppError> {
        self.loads.hit();
        if text.is_empty() {
            return Err(AppError::NotFound(0));
        }
        let number: u64 = text.parse()?;
        Ok(number)
    }

    /// `Option`: `None` is cached too.
    #[cacheme(key = format!("found:{id}"), cache = self.cache)]
    fn find(&self, id: u64) -> Option<CatInfo> {
        self.loads.hit();
        (id != 0).then(|| CatInfo::of(&cat(id, "Tom"), 1))
    }

    #[cacheme(key = format!("flaky:shared:{id}"), cache = self.cache)]
    fn flaky_shared(&self, id: u64) -> Result<u64, SharedError> {
        let load = self.loads.hit();
        self.gate.wait();
        Err(SharedError(format!("load {load} of {id} failed")))
    }

    #[cacheme(key = format!("flaky:own:{id}"), cache = self.cache)]
    fn flaky_own(&self, id: u64) -> Result<u64, OwnError> {
        let load = self.loads.hit();
        self.gate.wait();
        Err(OwnError(format!("load {load} of {id} failed")))
    }

    /// A generic method with the default key.
    #[cacheme(cache = self.cache)]
    fn count<T: Serialize>(&self, items: &[T]) -> usize {
        self.loads.hit();
        items.len()
    }
}

fn on_hit(key: &str, info: &CatInfo) {
    log_hook(&format!("blocking hit {}", info.id), key);
}

fn on_miss(key: &str) {
    log_hook("blocking miss", key);
}

/// A free generic fn, a `where` clause, a `std::io::Result` alias, and the
/// cache as an argument.
#[cacheme(key = format!("setting:{name:?}"), cache = cache)]
pub(crate) fn read_setting<T>(cache: &Cache, name: &T, loads: &Counter) -> std::io::Result<String>
where
    T: std::fmt::Debug + ?Sized,
{
    if loads.hit() > 5 {
        return Err(std::io::Error::other("too many loads"));
    }
    Ok(format!("value of {name:?}"))
}

/// Parameters named like the generated code's locals do not clash with
/// them (the generated names are hygienic). On the global cache, which is
/// the in-memory default in this binary.
#[cacheme(key = format!("clash:{key}:{node}:{spec}"), skip = *skip)]
fn clashing_names(key: &str, node: u32, spec: u8, skip: &bool, loads: &Counter) -> String {
    let cache = "the body's own `cache`";
    format!("{key} {node} {spec} {cache} v{}", loads.hit())
}

/// A trait's default method.
trait Described {
    fn cache(&self) -> &Cache;
    fn loads(&self) -> &Counter;

    #[cacheme(key = format!("described:{id}"), cache = self.cache())]
    fn describe_id(&self, id: u64) -> String {
        format!("{id} v{}", self.loads().hit())
    }
}

impl Described for Cats {
    fn cache(&self) -> &Cache {
        &self.cache
    }
    fn loads(&self) -> &Counter {
        &self.loads
    }
}

#[test]
fn no_runtime_here() {
    assert!(tokio::runtime::Handle::try_current().is_err());
}

#[test]
fn dynamic_key_from_args() {
    let cats = Cats::new();
    let tom = cats.get_cat(&cat(1, "Tom"));
    assert_eq!(tom, CatInfo::of(&cat(1, "Tom"), 1));
    assert!(is_stored(&cats.cache, "cat:Tom"));
    assert_eq!(cats.get_cat(&cat(1, "Tom")), tom);
    cats.get_cat(&cat(2, "Felix"));
    assert_eq!(cats.loads.get(), 2);
    assert_eq!(stored_keys(&cats.cache), ["cat:Felix", "cat:Tom"]);
}

#[test]
fn node_for_better_management() {
    let cats = Cats::new();
    let tom = cats.cat_by_node(&cat(11, "Tom"));
    assert_eq!(cats.cat_by_node(&cat(11, "Tom")), tom);
    assert_eq!(cats.loads.get(), 1);
    let manager = cats.cache.objects::<CatInfoNode>();
    assert_eq!(manager.get_blocking(11), Some(tom));
    let ttl = pttl(&cats.cache, "cat:11");
    assert!(ttl > 290_000 && ttl <= 300_000, "the node's ttl: {ttl}");
    assert_eq!(hook_calls("node miss", "cat:11"), 1);
    manager.invalid_all_blocking().expect("invalidation");
    assert_eq!(
        cats.cat_by_node(&cat(11, "Tom")),
        CatInfo::of(&cat(11, "Tom"), 2)
    );
}

#[test]
fn decorator_hooks_replace_the_nodes() {
    let cats = Cats::new();
    let cat = cat(78, "Hooked");
    cats.node_with_miss(&cat);
    cats.node_with_miss(&cat);
    assert_eq!(hook_calls("closure miss Hooked", "cat:78"), 1);
    assert_eq!(
        hook_calls("node miss", "cat:78"),
        0,
        "the decorator's miss replaces the node's"
    );
    assert_eq!(hook_calls("node hit", "cat:78"), 1, "the node's hit stays");
}

#[test]
fn skip_cache() {
    let cats = Cats::new();
    assert_eq!(cats.maybe_cat(None), None);
    assert_eq!(cats.maybe_cat(None), None);
    assert_eq!(cats.loads.get(), 2);
    assert!(stored_keys(&cats.cache).is_empty());
    let tom = cat(3, "Tom");
    let info = cats.maybe_cat(Some(&tom));
    assert_eq!(cats.maybe_cat(Some(&tom)), info);
    assert_eq!(cats.loads.get(), 3);
    assert_eq!(stored_keys(&cats.cache), ["maybe:3"]);
}

#[test]
fn invalid_all_keys_for_tag() {
    let cats = Cats::new();
    cats.tagged_cat(&cat(1, "Tom"));
    cats.tagged_cat(&cat(2, "Felix"));
    cats.tagged_cat(&cat(1, "Tom"));
    assert_eq!(cats.loads.get(), 2);
    let tag = cats.cache.tag("blocking_cats");
    assert_eq!(tag.specs().len(), 1);
    assert!(tag.specs()[0].is_function());
    // (In O(1): the values stay stored, never served again.)
    tag.invalid_blocking().expect("tag");
    cats.tagged_cat(&cat(1, "Tom"));
    assert_eq!(cats.loads.get(), 3);
}

#[test]
fn hit_and_miss_callbacks() {
    let cats = Cats::new();
    cats.hooked_cat(&cat(5, "Hooks"));
    cats.hooked_cat(&cat(5, "Hooks"));
    cats.hooked_cat(&cat(5, "Hooks"));
    assert_eq!(hook_calls("blocking miss", "hooked:Hooks"), 1);
    assert_eq!(hook_calls("blocking hit 5", "hooked:Hooks"), 2);
}

#[test]
fn timeout_ttl() {
    let cats = Cats::new();
    let tom = cat(1, "Tom");
    cats.cat_for_five_minutes(&tom);
    let ttl = pttl(&cats.cache, "ttl:Tom");
    assert!(ttl > 290_000 && ttl <= 300_000, "ttl = 300: {ttl} ms left");
    cats.cat_for_a_moment(&tom);
    let ttl = pttl(&cats.cache, "short:Tom");
    assert!(ttl > 0 && ttl <= 1_500, "ttl = \"1500ms\": {ttl} ms left");
}

#[test]
fn book_owner_serializer_example() {
    let cats = Cats::new();
    let book = Book {
        id: 100,
        owner_id: 200,
    };
    let owner = cats.get_owner(&book);
    assert!(is_stored(&cats.cache, "Book:100>owner"));
    assert_eq!(group_members(&cats.cache, "User:200"), ["Book:100>owner"]);
    assert_eq!(cats.get_owner(&book), owner);
    cats.cache
        .create_invalidation()
        .invalid_key("User:200")
        .run_blocking()
        .expect("invalidation"); // O(1): a group invalidation counts no values
    assert_eq!(cats.get_owner(&book).name, "owner v2");
    assert_eq!(cats.loads.get(), 2);
}

#[test]
fn invalid_keys_from_the_result() {
    let cats = Cats::new();
    let book = cats.book(100);
    assert_eq!(group_members(&cats.cache, "User:200"), ["Book:100"]);
    assert_eq!(group_members(&cats.cache, "Shelf:100"), ["Book:100"]);
    assert_eq!(cats.book(100), book);
    assert_eq!(cats.loads.get(), 1);
    cats.cache
        .invalid_objects::<OwnerInvalid>()
        .invalid_blocking(200)
        .expect("invalidation");
    // stale = false: even a reader that does not load sees nothing now.
    assert_eq!(
        cats.cache
            .lookup::<Book>("Book:100")
            .stale(false)
            .get_blocking(),
        None
    );
    cats.book(100);
    assert_eq!(cats.loads.get(), 2);
}

#[test]
fn the_default_key_never_mixes_arguments() {
    let cats = Cats::new();
    let calls = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("a*", "c"),
        ("a", "*c"),
        ("a", "c"),
    ];
    for (name, kind) in calls {
        cats.describe(name, kind);
    }
    for (name, kind) in calls {
        assert!(
            cats.describe(name, kind)
                .starts_with(&format!("{name}/{kind} "))
        );
    }
    assert_eq!(cats.loads.get(), 5);
    let keys = stored_keys(&cats.cache);
    assert!(
        keys.contains(
            &"suite::decorator_blocking::Cats::describe:%7B%7D:%22a%22:%22b%3Ac%22".to_owned()
        ),
        "{keys:?}"
    );
}

#[test]
fn an_argument_that_does_not_serialize_is_not_cached() {
    let cats = Cats::new();
    let pairs = HashMap::from([((1, 2), 3)]);
    assert_eq!(cats.count_pairs(&pairs), 1);
    assert_eq!(cats.count_pairs(&pairs), 1);
    assert_eq!(cats.loads.get(), 2);
    assert!(stored_keys(&cats.cache).is_empty());
}

#[test]
fn result_caches_ok_and_returns_err_untouched() {
    let cats = Cats::new();
    assert_eq!(cats.parse(""), Err(AppError::NotFound(0)));
    let bad = cats.parse("x1");
    assert_eq!(
        bad,
        Err(AppError::BadNumber("invalid digit found in string".into()))
    );
    assert_eq!(cats.parse("x1"), bad);
    assert_eq!(cats.loads.get(), 3);
    assert!(stored_keys(&cats.cache).is_empty());
    assert_eq!(cats.parse("42"), Ok(42));
    assert_eq!(cats.parse("42"), Ok(42));
    assert_eq!(cats.loads.get(), 4);
}

#[test]
fn option_caches_none_too() {
    let cats = Cats::new();
    assert_eq!(cats.find(0), None);
    assert_eq!(cats.find(0), None);
    assert_eq!(cats.loads.get(), 1);
    assert!(is_stored(&cats.cache, "found:0"));
}

/// Two threads call `call` on one key; the first one's load fails once the
/// second one waits for it.
fn two_failing_callers<E: Send>(
    cats: &Cats,
    call: impl Fn() -> Result<u64, E> + Sync,
) -> (Result<u64, E>, Result<u64, E>) {
    std::thread::scope(|scope| {
        let first = scope.spawn(&call);
        wait_until("the first caller loads", || cats.loads.get() == 1);
        let second = scope.spawn(&call);
        wait_until("the second caller waits for the first", || {
            cats.cache.stats().coalesced == 1
        });
        cats.gate.open();
        (
            first.join().expect("no panic"),
            second.join().expect("no panic"),
        )
    })
}

#[test]
fn clone_errors_are_shared_with_waiting_callers() {
    let cats = Cats::new();
    let (first, second) = two_failing_callers(&cats, || cats.flaky_shared(1));
    let failed = Err(SharedError("load 1 of 1 failed".into()));
    assert_eq!((first, second), (failed.clone(), failed));
    assert_eq!(cats.loads.get(), 1);
}

#[test]
fn other_errors_are_not_shared() {
    let cats = Cats::new();
    let (first, second) = two_failing_callers(&cats, || cats.flaky_own(1));
    assert_eq!(first, Err(OwnError("load 1 of 1 failed".into())));
    assert_eq!(second, Err(OwnError("load 2 of 1 failed".into())));
    assert_eq!(cats.loads.get(), 2);
}

#[test]
fn generic_fns_key_each_type_apart() {
    let cats = Cats::new();
    assert_eq!(cats.count(&[1u8, 2]), 2);
    assert_eq!(cats.count(&[1u16, 2]), 2);
    assert_eq!(cats.count(&[1u8, 2]), 2);
    assert_eq!(cats.loads.get(), 2);
}

#[test]
fn free_generic_fns() {
    let cache = cache();
    let loads = Counter::default();
    assert_eq!(
        read_setting(&cache, "volume", &loads).expect("read"),
        "value of \"volume\""
    );
    assert_eq!(
        read_setting(&cache, "volume", &loads).expect("read"),
        "value of \"volume\""
    );
    assert_eq!(
        read_setting(&cache, &7, &loads).expect("read"),
        "value of 7"
    );
    assert_eq!(loads.get(), 2);
    assert_eq!(stored_keys(&cache), ["setting:\"volume\"", "setting:7"]);
}

#[test]
fn parameters_named_like_the_generated_locals() {
    let loads = Counter::default();
    let value = clashing_names("k", 1, 2, &false, &loads);
    assert_eq!(value, "k 1 2 the body's own `cache` v1");
    assert_eq!(clashing_names("k", 1, 2, &false, &loads), value);
    assert_eq!(
        clashing_names("k", 1, 2, &true, &loads),
        "k 1 2 the body's own `cache` v2"
    );
    assert_eq!(loads.get(), 2);
}

#[test]
fn trait_default_methods() {
    let cats = Cats::new();
    assert_eq!(cats.describe_id(4), "4 v1");
    assert_eq!(cats.describe_id(4), "4 v1");
    assert!(is_stored(&cats.cache, "described:4"));
}

#[test]
fn calls_from_many_threads_load_once() {
    let cats = Arc::new(Cats::new());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let cats = cats.clone();
            std::thread::spawn(move || cats.get_cat(&cat(9, "Threads")))
        })
        .collect();
    for thread in threads {
        assert_eq!(
            thread.join().expect("no panic"),
            CatInfo::of(&cat(9, "Threads"), 1)
        );
    }
    assert_eq!(cats.loads.get(), 1);
}
