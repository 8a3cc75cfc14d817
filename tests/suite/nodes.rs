//! Nodes and invalid nodes, as the seed documents them: "Node for better
//! management", "Declaring Node and InvalidNode", "Node Meta", "Invalid from
//! Node", "Get a single node value". Each test runs on the memory store, on a
//! real redis-server and on a Redis Cluster.

use crate::fixtures::*;
use std::convert::Infallible;

on_every_store! {
    /// "Get a single node value": `objects().get` never loads; it returns
    /// what a load stored.
    async fn get_a_single_node_value(fx) {
        let cats = fx.cache.objects::<CatNode>();
        assert_eq!(cats.get(1).await, None);

        let loads = Counter::default();
        let tom = cats
            .get_or_load(1, || async { loads.hit(); Ok::<_, Infallible>(cat(1, "Tom")) })
            .await
            .expect("loader is infallible");
        assert_eq!(tom, cat(1, "Tom"));
        assert_eq!(cats.get(1).await, Some(cat(1, "Tom")));

        // A second load of the same node is a hit: the loader does not run.
        let again = cats
            .get_or_load(1, || async { loads.hit(); Ok::<_, Infallible>(cat(1, "Other")) })
            .await
            .expect("loader is infallible");
        assert_eq!(again, cat(1, "Tom"));
        assert_eq!(loads.get(), 1);
        let stats = fx.cache.stats();
        assert_eq!((stats.hit, stats.miss, stats.load), (2, 2, 1), "{stats:?}");
    }

    /// "Invalid from Node": one node's key becomes stale. A stale-on reader
    /// (CatNode accepts stale data) may still be served it; the caller that
    /// refreshes gets the new value.
    async fn invalidating_a_node_leaves_stale_data(fx) {
        let cats = fx.cache.objects::<CatNode>();
        cats.get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "Tom")) }).await.expect("load");
        assert_eq!(cats.invalid(1).await.expect("invalidation"), 1);
        assert_eq!(cats.invalid(99).await.expect("invalidation"), 0, "nothing cached under 99");

        // Stale on: `get` still serves the old value.
        assert_eq!(cats.get(1).await, Some(cat(1, "Tom")));
        // Stale off (a lookup that refuses stale data): a miss.
        let stale_off = fx.cache.objects::<CatNode>().lookup(&CatNode { id: 1 }).stale(false);
        assert_eq!(stale_off.get().await, None);

        // The next loading caller refreshes it.
        let fresh = cats
            .get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "Tom II")) })
            .await
            .expect("load");
        assert_eq!(fresh, cat(1, "Tom II"));
        assert_eq!(cats.get(1).await, Some(cat(1, "Tom II")));
    }

    /// "Node Meta": `stale = false` on the node makes invalidated values
    /// misses for every reader of it.
    async fn node_meta_stale_false(fx) {
        let owned = fx.cache.objects::<OwnedCatNode>();
        let loads = Counter::default();
        let load = |name: &'static str| {
            let loads = &loads;
            move || async move { loads.hit(); Ok::<_, Infallible>(cat(1, name)) }
        };
        owned.get_or_load((7, 1), load("Tom")).await.expect("load");
        assert_eq!(owned.get((7, 1)).await, Some(cat(1, "Tom")));
        assert_eq!(owned.invalid((7, 1)).await.expect("invalidation"), 1);
        assert_eq!(owned.get((7, 1)).await, None, "stale = false: no stale data");
        let fresh = owned.get_or_load((7, 1), load("Tom II")).await.expect("load");
        assert_eq!(fresh, cat(1, "Tom II"));
        assert_eq!(loads.get(), 2);
    }

    /// "Invalid from Node": `UserInvalid.objects.invalid(id=..)` invalidates
    /// every key that declared that invalid node, and only those.
    async fn invalid_node_invalidates_its_dependents(fx) {
        let owned = fx.cache.objects::<OwnedCatNode>();
        for (owner, id) in [(7, 1), (7, 2), (8, 3)] {
            owned
                .get_or_load((owner, id), || async move { Ok::<_, Infallible>(cat(id, "cat")) })
                .await
                .expect("load");
        }
        let users = fx.cache.invalid_objects::<UserInvalid>();
        users.invalid(7).await.expect("invalidation");
        assert_eq!(owned.get((7, 1)).await, None);
        assert_eq!(owned.get((7, 2)).await, None);
        assert_eq!(owned.get((8, 3)).await, Some(cat(3, "cat")), "owner 8 is untouched");
        users.invalid(42).await.expect("invalidation");
    }

    /// "Invalid from Node": `TestNode.objects.invalid()` (here `invalid_all`)
    /// deletes every key of the node type, directly: no stale data.
    async fn invalid_all_deletes_every_key_of_the_node(fx) {
        let cats = fx.cache.objects::<CatNode>();
        for id in 1..=3 {
            cats.get_or_load(id, || async move { Ok::<_, Infallible>(cat(id, "cat")) })
                .await
                .expect("load");
        }
        let owned = fx.cache.objects::<OwnedCatNode>();
        owned.get_or_load((1, 1), || async { Ok::<_, Infallible>(cat(1, "other node")) }).await.expect("load");

        cats.invalid_all().await.expect("invalidation");
        for id in 1..=3 {
            assert_eq!(cats.get(id).await, None, "deleted, not stale: even stale-on readers miss");
        }
        assert_eq!(owned.get((1, 1)).await, Some(cat(1, "other node")), "other node types stay");
        cats.invalid_all().await.expect("invalidation");
    }

    /// Nodes with several fields take a tuple of the fields, or the node itself.
    async fn multi_field_nodes_take_tuples_or_nodes(fx) {
        let owned = fx.cache.objects::<OwnedCatNode>();
        owned.get_or_load((3, 4), || async { Ok::<_, Infallible>(cat(4, "Kit")) }).await.expect("load");
        assert_eq!(owned.get(OwnedCatNode { owner_id: 3, id: 4 }).await, Some(cat(4, "Kit")));
        assert_eq!(owned.get((4, 3)).await, None, "field order matters");
    }

    /// A node may write its key by hand (the seed's `def key(self)`), and
    /// declare `hit` / `miss` hooks (called with the key).
    async fn hand_written_keys_and_hooks(fx) {
        let name = format!("hooks-{}", fx.store_name());
        let node = || HookedNode { name: name.clone() };
        let key = format!("hooked:{name}@v2");
        let hooked = fx.cache.objects::<HookedNode>();
        let value = format!("value of {name}");
        hooked.get_or_load(node(), || async { Ok::<_, Infallible>(value.clone()) }).await.expect("load");
        assert_eq!(hook_calls("miss", &key), 1);
        assert_eq!(hook_calls("hit", &key), 0);
        hooked.get_or_load(node(), || async { Ok::<_, Infallible>(value.clone()) }).await.expect("load");
        assert_eq!(hook_calls("hit", &key), 1);
        assert_eq!(hook_calls("miss", &key), 1);
        assert_eq!(hooked.lookup(&node()).key(), key, "the version is part of the key");
    }

    /// Loader errors are returned to the caller and not cached.
    async fn loader_errors_are_not_cached(fx) {
        let cats = fx.cache.objects::<CatNode>();
        let error = cats
            .get_or_load(5, || async { Err::<Cat, _>(std::io::Error::other("database down")) })
            .await
            .expect_err("the loader failed");
        assert_eq!(error.to_string(), "database down");
        assert_eq!(cats.get(5).await, None);
        let ok = cats.get_or_load(5, || async { Ok::<_, std::io::Error>(cat(5, "back")) }).await.expect("load");
        assert_eq!(ok, cat(5, "back"));
    }

    /// Blocking code uses the same managers without a runtime.
    async fn blocking_api(fx) {
        let cache = fx.cache.clone();
        tokio::task::spawn_blocking(move || {
            let cats = cache.objects::<CatNode>();
            assert_eq!(cats.get_blocking(9), None);
            let tom = cats
                .get_or_load_blocking(9, || Ok::<_, Infallible>(cat(9, "Tom")))
                .expect("load");
            assert_eq!(cats.get_blocking(9), Some(tom));
            assert_eq!(cats.invalid_blocking(9).expect("invalidation"), 1);
            cats.invalid_all_blocking().expect("invalidation");
            assert_eq!(cats.get_blocking(9), None);
            cache.invalid_objects::<UserInvalid>().invalid_blocking(1).expect("invalidation");
        })
        .await
        .expect("blocking test");
    }
}

/// The blocking API works on a thread that never saw a tokio runtime.
#[test]
fn blocking_api_needs_no_runtime() {
    let fx = Fixture::redis();
    let cats = fx.cache.objects::<CatNode>();
    let tom = cats
        .get_or_load_blocking(1, || Ok::<_, Infallible>(cat(1, "Tom")))
        .expect("load");
    assert_eq!(cats.get_blocking(1), Some(tom));
    assert_eq!(fx.cache.stats().fill, 1, "the value was stored in redis");
}

/// A value whose lifetime it carries itself (a token and its expiry).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Token {
    secret: String,
    expires_in_ms: u64,
}

/// `ttl_for`: each token is cached as long as it lives; `ttl` is the
/// fallback it overrides.
#[derive(Debug, cacheme::Node)]
#[node(key = "token:{id}", value = Token, ttl = 3600, ttl_for = Self::ttl_of)]
struct TokenNode {
    id: u64,
}

impl TokenNode {
    fn ttl_of(token: &Token) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(token.expires_in_ms))
    }
}

on_both_stores! {
    /// `#[node(ttl_for = ..)]`: the time to live comes from the value.
    async fn a_node_ttl_can_come_from_the_value(fx) {
        let tokens = fx.cache.objects::<TokenNode>();
        let short = Token { secret: "a".to_owned(), expires_in_ms: 150 };
        let long = Token { secret: "b".to_owned(), expires_in_ms: 60_000 };
        for (id, token) in [(1, &short), (2, &long)] {
            let token = token.clone();
            tokens.get_or_load(id, || async move { Ok::<_, Infallible>(token) }).await.expect("load");
        }
        if let Some(server) = &fx.server {
            let mut conn = admin_connection(server);
            let mut pttl = |key: &str| -> i64 {
                redis::cmd("PTTL").arg(format!("{}{{{key}}}", fx.cache.prefix())).query(&mut conn).expect("PTTL")
            };
            let (short_ttl, long_ttl) = (pttl("token:1"), pttl("token:2"));
            assert!((1..=150).contains(&short_ttl), "{short_ttl}");
            assert!((59_000..=60_000).contains(&long_ttl), "{long_ttl}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(tokens.get(1).await, None, "expired with its own ttl");
        assert_eq!(tokens.get(2).await, Some(long));
    }
}
