//! The global cache (the seed's module-level `cacheme` after
//! `set_connection` and `update_settings`): managers, tags and
//! `create_invalidation` use whatever cache was installed last. One test in
//! this binary, since the global is shared by the whole process.

#[path = "suite/fixtures.rs"]
mod fixtures;

use cacheme::{Cache, InvalidNode, Node, Pattern};
use cacheme_test_support::RedisServer;
use fixtures::*;
use std::convert::Infallible;

#[tokio::test]
async fn installed_cache_is_used_by_managers_tags_and_invalidations() {
    // Before anything is installed, the global cache is in memory.
    assert!(!cacheme::global().is_redis());
    CatNode::objects()
        .get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "in memory")) })
        .await
        .expect("load");

    let server = RedisServer::start();
    let installed = Cache::builder()
        .redis_url(server.url())
        .prefix("MYCACHE:")
        .install()
        .expect("install");
    assert!(cacheme::global().is_redis());
    assert_eq!(
        CatNode::objects().get(1).await,
        None,
        "a new cache: nothing in it"
    );

    CatNode::objects()
        .get_or_load(1, || async { Ok::<_, Infallible>(cat(1, "in redis")) })
        .await
        .expect("load");
    OwnedCatNode::objects()
        .get_or_load((5, 1), || async { Ok::<_, Infallible>(cat(1, "owned")) })
        .await
        .expect("load");
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg("MYCACHE:{cat:1}")
        .query(&mut server.connection())
        .expect("GET");
    assert!(raw.is_some(), "stored in the installed redis");

    UserInvalid::objects()
        .invalid(5)
        .await
        .expect("invalidation");
    assert_eq!(OwnedCatNode::objects().get((5, 1)).await, None);
    cacheme::tag("CatNode").invalid().await.expect("tag");
    assert_eq!(CatNode::objects().get(1).await, None);
    let n = cacheme::create_invalidation()
        .pattern(Pattern::glob("*"))
        .run()
        .await
        .expect("pattern");
    // Tag and group invalidations are O(1): the two values they invalidated
    // are still stored (never served), until the pattern deletes them.
    assert_eq!(n, 2, "both invalidated values were still stored");
    assert_eq!(installed.stats().fill, 2);
}
