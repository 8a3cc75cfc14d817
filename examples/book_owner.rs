//! The seed's serializer example, on Redis: a book's owner is cached under
//! `Book:100>owner` and stored under the invalid key `User:200`, so that
//! changing user 200 invalidates every book-owner entry of theirs.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example book_owner
//! ```
//!
//! Without a reachable Redis the calls still return the loader's values
//! (cacheme fails open); the example says so at the end.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

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

impl Book {
    fn cache_key(&self) -> String {
        format!("Book:{}", self.id)
    }
}

fn user_cache_key(id: u64) -> String {
    format!("User:{id}")
}

/// The serializer method of the seed, cached.
async fn get_owner(cache: &cacheme::Cache, book: &Book, name: &str) -> Owner {
    cache
        .lookup(format!("{}>owner", book.cache_key()))
        .depends_on(user_cache_key(book.owner_id))
        .load(|| async {
            println!(
                "  (loading the owner of book {} from the database)",
                book.id
            );
            Ok::<_, Infallible>(Owner {
                id: book.owner_id,
                name: name.to_owned(),
            })
        })
        .await
        .expect("the loader cannot fail")
}

#[tokio::main]
async fn main() -> Result<(), cacheme::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let cache = cacheme::Cache::builder()
        .redis_url(&url)
        .prefix("CM:example:")
        .build()?;
    let book = Book {
        id: 100,
        owner_id: 200,
    };

    println!("owner: {:?}", get_owner(&cache, &book, "Ann").await);
    println!(
        "owner: {:?} (cached under Book:100>owner)",
        get_owner(&cache, &book, "unused").await
    );

    let marked = cache
        .create_invalidation()
        .invalid_key(user_cache_key(200))
        .run()
        .await;
    match marked {
        Ok(marked) => println!("user 200 changed: {marked} entry invalidated through User:200"),
        Err(error) => println!("invalidation failed (is Redis up at {url}?): {error}"),
    }
    let fresh = cache
        .lookup::<Owner>("Book:100>owner")
        .stale(false)
        .get()
        .await;
    println!("stale-off read after the invalidation: {fresh:?}");
    println!("owner: {:?}", get_owner(&cache, &book, "Ann Smith").await);

    cache.create_invalidation().tag("lookup").run().await.ok();
    let stats = cache.stats();
    if stats.store_error > 0 {
        println!("note: Redis was not reachable at {url}; every call ran its loader (fail-open)");
    }
    println!(
        "book_owner: loads={} hits={} store_errors={}",
        stats.load, stats.hit, stats.store_error
    );
    Ok(())
}
