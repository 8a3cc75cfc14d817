//! `#[cacheme]` on the global cache: a fn without `cache = ..` uses whatever
//! cache was installed last, and its default tag is the fn's name. In a
//! binary of its own (moved out of the decorator tests of `tests/suite`),
//! since installing the global changes it for the whole process.

#[path = "suite/fixtures.rs"]
mod fixtures;

use cacheme::cacheme;
use fixtures::*;

/// The default tag is the fn's name; on the global cache, `cacheme::tag(..)`
/// finds it.
#[cacheme(key = format!("global:{id}"))]
async fn global_cat(id: u64) -> String {
    GLOBAL_LOADS.hit();
    format!("cat {id}")
}

static GLOBAL_LOADS: Counter = Counter::new();

#[tokio::test]
async fn the_global_cache_and_the_default_tag() {
    let global = cache();
    cacheme::install(global.clone());
    assert_eq!(global_cat(1).await, "cat 1");
    assert_eq!(global_cat(1).await, "cat 1");
    assert_eq!(GLOBAL_LOADS.get(), 1);
    assert!(is_stored(&global, "global:1"));
    cacheme::tag("global_cat").invalid().await.expect("tag");
    assert_eq!(global_cat(1).await, "cat 1");
    assert_eq!(GLOBAL_LOADS.get(), 2);
}
