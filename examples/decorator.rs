//! `#[cacheme]`: memoized functions and methods, on the embedded memory
//! store, so it runs anywhere.
//!
//! ```text
//! cargo run --example decorator
//! ```
//!
//! Swap the store for Redis with one line:
//! `cacheme::Cache::builder().redis_url("redis://127.0.0.1/").install()?;`

use std::sync::atomic::{AtomicU32, Ordering};

use cacheme::{Node, cacheme};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cat {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CatInfo {
    name: String,
    toys: u32,
}

#[derive(Debug, Clone)]
enum AppError {
    NoSuchCat(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::NoSuchCat(why) => write!(f, "no such cat: {why}"),
        }
    }
}

static LOADS: AtomicU32 = AtomicU32::new(0);

fn loads() -> u32 {
    LOADS.load(Ordering::Relaxed)
}

/// A dynamic key from the arguments, a tag, five minutes of cache. `Err` is
/// returned as it is and never cached.
#[cacheme(key = format!("cat:{}", cat.name), tag = "cats", ttl = 300)]
async fn get_cat(cat: &Cat) -> Result<CatInfo, AppError> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    if cat.name.is_empty() {
        return Err(AppError::NoSuchCat(format!("cat {} has no name", cat.id)));
    }
    Ok(CatInfo {
        name: cat.name.clone(),
        toys: 3,
    })
}

/// A node: the key, ttl and tag are `CatNode`'s, shared with its manager.
#[derive(Node)]
#[node(key = "cat-info:{id}", value = CatInfo, ttl = 300)]
struct CatNode {
    id: u64,
}

/// `Serialize`: `self` is part of the default key of its methods.
#[derive(Serialize)]
struct Shelter;

impl Shelter {
    /// A method: the node is built from the arguments; cat 0 is never cached.
    #[cacheme(node = CatNode { id: cat.id }, skip = cat.id == 0)]
    async fn cat_info(&self, cat: &Cat) -> CatInfo {
        LOADS.fetch_add(1, Ordering::Relaxed);
        CatInfo {
            name: cat.name.clone(),
            toys: 1,
        }
    }

    /// No `key`: the key is the method's path, `self` and its arguments.
    #[cacheme]
    async fn toys_of(&self, name: &str, age: u32) -> Vec<String> {
        LOADS.fetch_add(1, Ordering::Relaxed);
        vec![format!("a mouse for {name}, {age}")]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Book {
    id: u64,
    owner_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Owner {
    id: u64,
    name: String,
}

fn on_hit(key: &str, owner: &Owner) {
    println!("    hit  {key} -> {}", owner.name);
}

fn on_miss(key: &str) {
    println!("    miss {key}");
}

/// A plain fn (no async runtime needed), in the dependency group of its
/// owner, with hit/miss callbacks, never served stale.
#[cacheme(
    key = format!("book:{}>owner", book.id),
    invalid_keys = [format!("user:{}", book.owner_id)],
    hit = on_hit,
    miss = on_miss,
    stale = false
)]
fn book_owner(book: &Book) -> Owner {
    LOADS.fetch_add(1, Ordering::Relaxed);
    Owner {
        id: book.owner_id,
        name: "Ann".into(),
    }
}

fn blocking_part() {
    println!("a plain fn, called from a plain thread:");
    let book = Book {
        id: 100,
        owner_id: 200,
    };
    book_owner(&book);
    book_owner(&book);
    cacheme::create_invalidation()
        .invalid_key("user:200")
        .run_blocking()
        .expect("memory store");
    println!("  user 200 changed: book 100's owner is invalid");
    book_owner(&book);
    println!("  loads so far: {}", loads());
}

async fn async_part() {
    println!("async fns and methods:");
    let tom = Cat {
        id: 1,
        name: "Tom".into(),
    };
    let info = get_cat(&tom).await.expect("Tom has a name");
    get_cat(&tom).await.expect("cached");
    println!("  get_cat(Tom) twice: {info:?}, loads so far: {}", loads());

    let nameless = Cat {
        id: 2,
        name: String::new(),
    };
    let error = get_cat(&nameless).await.expect_err("no name");
    let again = get_cat(&nameless).await.expect_err("errors are not cached");
    println!(
        "  get_cat(nameless) twice: `{error}` / `{again}` (not cached), loads so far: {}",
        loads()
    );

    cacheme::tag("cats").invalid().await.expect("registered");
    println!("  tag `cats` invalidated: its values are deleted");

    let shelter = Shelter;
    shelter.cat_info(&tom).await;
    let cached = CatNode::objects().get(1).await;
    println!("  cat_info(Tom) is CatNode 1's value: {cached:?}");
    let stray = Cat {
        id: 0,
        name: "Stray".into(),
    };
    shelter.cat_info(&stray).await;
    shelter.cat_info(&stray).await;
    println!(
        "  cat_info(cat 0) twice, skipped: loads so far: {}",
        loads()
    );

    shelter.toys_of("Tom", 3).await;
    shelter.toys_of("Tom", 3).await;
    shelter.toys_of("Tom", 4).await;
    println!(
        "  toys_of(Tom, 3) twice, (Tom, 4) once: loads so far: {}",
        loads()
    );
}

fn main() {
    println!("decorator: #[cacheme] on the embedded memory store (no Redis needed)");
    blocking_part();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async_part());
    let stats = cacheme::global().stats();
    println!(
        "demo: loads={} hits={} misses={} invalidated={}",
        loads(),
        stats.hit,
        stats.miss,
        stats.invalidated
    );
}
