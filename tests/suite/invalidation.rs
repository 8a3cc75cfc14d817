//! Invalidation, as the seed documents it: "Invalid all keys for tag" and
//! `create_invalidation(key=, invalid_key=, pattern=)`, alone and together.

use crate::fixtures::*;
use cacheme::{Error, Pattern};
use std::convert::Infallible;

async fn load_string(cache: &cacheme::Cache, key: &str, group: Option<&str>) {
    let value = format!("value of {key}");
    cache
        .lookup::<String>(key)
        .depends_on(group)
        .load(|| async { Ok::<_, Infallible>(value) })
        .await
        .expect("load");
}

async fn read(cache: &cacheme::Cache, key: &str, stale: bool) -> Option<String> {
    cache.lookup::<String>(key).stale(stale).get().await
}

on_every_store! {
    /// "Invalid all keys for tag": every node type registers its tag (its
    /// name, or `tag = ".."`); `tag(..).invalid()` deletes its keys directly
    /// and says how many.
    async fn tag_invalidation_deletes_and_counts(fx) {
        let names: Vec<String> = cacheme::tags().iter().map(|t| t.name().to_owned()).collect();
        for expected in ["CatNode", "cats", "HookedNode", "ShortNode"] {
            assert!(names.contains(&expected.to_owned()), "{expected} in {names:?}");
        }
        let cats_tag = cacheme::tag("cats");
        assert_eq!(cats_tag.specs().len(), 1);
        assert_eq!(cats_tag.specs()[0].name(), "OwnedCatNode");

        let owned = fx.cache.objects::<OwnedCatNode>();
        for id in 0..4 {
            owned.get_or_load((1, id), || async move { Ok::<_, Infallible>(cat(id, "c")) }).await.expect("load");
        }
        let cats = fx.cache.objects::<CatNode>();
        cats.get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "stays")) }).await.expect("load");

        fx.cache.tag("cats").invalid().await.expect("invalidation");
        assert_eq!(owned.get((1, 0)).await, None);
        assert_eq!(cats.get(1).await, Some(cat(1, "stays")));
        fx.cache.tag("CatNode").invalid().await.expect("invalidation");
        assert_eq!(cats.get(1).await, None, "tag invalidation leaves no stale data");
    }

    /// An unknown tag is an error that lists the known ones.
    async fn unknown_tags_are_errors(fx) {
        match fx.cache.tag("catz").invalid().await {
            Err(Error::UnknownTag { name, known }) => {
                assert_eq!(name, "catz");
                assert!(known.contains("cats"), "{known}");
            }
            other => panic!("expected UnknownTag, got {other:?}"),
        }
    }

    /// `create_invalidation(key=..)`: one key, marked stale.
    async fn invalidation_by_key(fx) {
        load_string(&fx.cache, "a:1", None).await;
        load_string(&fx.cache, "a:2", None).await;
        let n = fx.cache.create_invalidation().key("a:1").run().await.expect("invalidation");
        assert_eq!(n, 1);
        assert_eq!(read(&fx.cache, "a:1", false).await, None);
        assert_eq!(read(&fx.cache, "a:1", true).await.as_deref(), Some("value of a:1"), "stale data stays");
        assert_eq!(read(&fx.cache, "a:2", false).await.as_deref(), Some("value of a:2"));
    }

    /// `create_invalidation(invalid_key=..)`: every key stored under the
    /// invalid key, marked stale.
    async fn invalidation_by_invalid_key(fx) {
        load_string(&fx.cache, "b:1", Some("user:1")).await;
        load_string(&fx.cache, "b:2", Some("user:1")).await;
        load_string(&fx.cache, "b:3", Some("user:2")).await;
        let n = fx.cache.create_invalidation().invalid_key("user:1").run().await.expect("invalidation");
        assert_eq!(n, 0, "O(1): a group invalidation counts no values");
        assert_eq!(read(&fx.cache, "b:1", false).await, None);
        assert_eq!(read(&fx.cache, "b:2", true).await.as_deref(), Some("value of b:2"));
        assert_eq!(read(&fx.cache, "b:3", false).await.as_deref(), Some("value of b:3"));
    }

    /// `create_invalidation(pattern=..)`: matched keys deleted directly.
    async fn invalidation_by_pattern(fx) {
        for key in ["test1", "test2", "other"] {
            load_string(&fx.cache, key, None).await;
        }
        let n = fx.cache.create_invalidation().pattern(Pattern::glob("test*")).run().await.expect("invalidation");
        assert_eq!(n, 2);
        assert_eq!(read(&fx.cache, "test1", true).await, None, "deleted: no stale data");
        assert_eq!(read(&fx.cache, "other", false).await.as_deref(), Some("value of other"));
    }

    /// User input in a pattern is escaped unless the caller asks for a raw glob.
    async fn patterns_escape_user_input(fx) {
        for key in ["x*", "xa", "x?"] {
            load_string(&fx.cache, key, None).await;
        }
        let n = fx.cache.create_invalidation().pattern(Pattern::literal("x*")).run().await.expect("invalidation");
        assert_eq!(n, 1, "only the key that is literally `x*`");
        assert_eq!(read(&fx.cache, "xa", false).await.as_deref(), Some("value of xa"));
        let n = fx.cache.create_invalidation().pattern(Pattern::prefix("x?")).run().await.expect("invalidation");
        assert_eq!(n, 1);
        assert_eq!(read(&fx.cache, "xa", false).await.as_deref(), Some("value of xa"));
    }

    /// The three kinds together, in one call, as in the seed.
    async fn key_invalid_key_and_pattern_together(fx) {
        load_string(&fx.cache, "k:1", None).await;
        load_string(&fx.cache, "g:1", Some("grp:1")).await;
        load_string(&fx.cache, "p:1", None).await;
        load_string(&fx.cache, "p:2", None).await;
        load_string(&fx.cache, "untouched", None).await;
        let n = fx
            .cache
            .create_invalidation()
            .key("k:1")
            .invalid_key("grp:1")
            .pattern(Pattern::prefix("p:"))
            .run()
            .await
            .expect("invalidation");
        assert_eq!(n, 3, "the key and the two pattern matches (the group is O(1), uncounted)");
        assert_eq!(read(&fx.cache, "k:1", true).await.as_deref(), Some("value of k:1"), "key: stale");
        assert_eq!(read(&fx.cache, "g:1", false).await, None);
        assert_eq!(read(&fx.cache, "p:2", true).await, None, "pattern: deleted");
        assert_eq!(read(&fx.cache, "untouched", false).await.as_deref(), Some("value of untouched"));
    }

    /// A tag with many keys is invalidated at once: none of them is served.
    async fn large_tags_are_invalidated_completely(fx) {
        let cats = fx.cache.objects::<CatNode>();
        for id in 0..2500 {
            cats.get_or_load(id, || async move { Ok::<_, Infallible>(cat(id, "c")) }).await.expect("load");
        }
        cats.invalid_all().await.expect("invalidation");
        for id in 0..2500 {
            assert_eq!(cats.get(id).await, None, "cat {id}");
        }
    }

    /// Blocking invalidations.
    async fn blocking_invalidations(fx) {
        load_string(&fx.cache, "q:1", Some("grp:q")).await;
        load_string(&fx.cache, "q:2", None).await;
        let cache = fx.cache.clone();
        let (a, b, c) = tokio::task::spawn_blocking(move || {
            (
                cache.create_invalidation().invalid_key("grp:q").run_blocking().expect("group"),
                cache.create_invalidation().pattern(Pattern::glob("q:*")).run_blocking().expect("pattern"),
                cache.tag("lookup").invalid_blocking().expect("tag"),
            )
        })
        .await
        .expect("blocking");
        // The group is O(1) and uncounted; the pattern deleted q:1 and q:2.
        assert_eq!((a, b, c), (0, 2, ()));
    }
}
