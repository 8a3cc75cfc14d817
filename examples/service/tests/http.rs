//! The service over HTTP, as real processes, against the PostgreSQL on
//! 127.0.0.1:5432 (database `test`, trust auth; `DATABASE_URL` overrides)
//! and redis-servers of their own. Each test works in a schema of its own,
//! dropped at the end.
//!
//! Every test is skipped, saying so, when no PostgreSQL is reachable.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cacheme_test_support::RedisServer;
use serde_json::{Value, json};
use service::client::Client;
use service::db::{Book, Cat, User};
use service::routes::Stats;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Say that a test is skipped, past libtest's capture of `println!` (which
/// hides the output of passing tests): straight to the process's stderr.
fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {why}");
}

/// A schema of this test's own, dropped (with everything in it) on drop.
struct Schema {
    name: String,
}

impl Schema {
    /// A new schema, or `None` (with a message saying the test is skipped)
    /// when PostgreSQL cannot be reached.
    async fn create(test: &str) -> Option<Schema> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = database_url();
        let reachable =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(&url)).await;
        match reachable {
            Ok(Ok(pool)) => pool.close().await,
            Ok(Err(error)) => {
                skipped(&format!(
                    "{test}: no PostgreSQL reachable at {url} ({error})"
                ));
                return None;
            }
            Err(_) => {
                skipped(&format!(
                    "{test}: no PostgreSQL answered at {url} within 5 s"
                ));
                return None;
            }
        }
        let name = format!(
            "svc_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The service creates and migrates it; make sure no leftover of a
        // crashed run with the same pid is in the way.
        service::db::drop_schema(&url, &name)
            .await
            .expect("drop a leftover schema");
        Some(Schema { name })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside the test's runtime: clean up on a thread of
        // its own with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(service::db::drop_schema(&database_url(), &name))
        });
        if let Ok(Err(error)) = cleanup.join() {
            eprintln!("could not drop schema {}: {error}", self.name);
        }
    }
}

/// A running service process, killed on drop.
struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Service {
    /// Start the service binary in `schema` with the cache `store`
    /// (`redis`, `memory`, `off`) and Redis at `redis`.
    fn start(schema: &Schema, store: &str, redis: Option<&RedisServer>) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_service"));
        command
            .env("LISTEN", "127.0.0.1:0")
            .env("DATABASE_URL", database_url())
            .env("DATABASE_SCHEMA", &schema.name)
            .env("DATABASE_POOL", "4")
            .env("SEED_USERS", "0")
            .env("CACHE", store)
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(redis) = redis {
            command.env("REDIS_URL", redis.url());
        }
        let mut child = command.spawn().expect("start the service binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the service exited before listening")
                .expect("service output");
            if let Some(rest) = line.strip_prefix("listening on http://") {
                let addr = rest.split_whitespace().next().expect("an address");
                break addr.parse().expect("a socket address");
            }
        };
        // Keep draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Service { child, addr }
    }

    fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get<T: serde::de::DeserializeOwned>(client: &mut Client, path: &str) -> T {
    let response = client.get(path).await.expect("an answer");
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.json().expect("JSON")
}

async fn status(client: &mut Client, path: &str) -> u16 {
    client.get(path).await.expect("an answer").status
}

async fn send<T: serde::de::DeserializeOwned>(
    client: &mut Client,
    method: &str,
    path: &str,
    body: Value,
) -> T {
    let response = match method {
        "POST" => client.post(path, &body).await,
        _ => client.put(path, &body).await,
    }
    .expect("an answer");
    assert!(
        response.status == 200 || response.status == 201,
        "{method} {path}: {} {}",
        response.status,
        response.text()
    );
    response.json().expect("JSON")
}

async fn stats(client: &mut Client) -> Stats {
    get(client, "/stats").await
}

/// Every endpoint, once: create, read, update, delete, lists, summary,
/// search and the errors. Returns the user created.
async fn every_endpoint(client: &mut Client) -> User {
    let ann: User = send(
        client,
        "POST",
        "/users",
        json!({"name": "Ann", "email": "ann@x"}),
    )
    .await;
    let bob: User = send(
        client,
        "POST",
        "/users",
        json!({"name": "Bob", "email": "bob@x"}),
    )
    .await;
    assert_eq!(
        get::<User>(client, &format!("/users/{}", ann.id)).await,
        ann
    );
    let duplicate = client
        .post("/users", &json!({"name": "Ann", "email": "ann@x"}))
        .await
        .expect("an answer");
    assert_eq!(duplicate.status, 409, "{}", duplicate.text());

    let book: Book = send(
        client,
        "POST",
        "/books",
        json!({"title": "Dune", "owner_id": ann.id}),
    )
    .await;
    let orphan = client
        .post("/books", &json!({"title": "x", "owner_id": 999_999}))
        .await
        .expect("an answer");
    assert_eq!(orphan.status, 422, "{}", orphan.text());
    let cat: Cat = send(
        client,
        "POST",
        "/cats",
        json!({"name": "Tom", "age": 3, "owner_id": ann.id}),
    )
    .await;

    assert_eq!(
        get::<Book>(client, &format!("/books/{}", book.id)).await,
        book
    );
    assert_eq!(get::<Cat>(client, &format!("/cats/{}", cat.id)).await, cat);
    let books: Vec<Book> = get(client, &format!("/users/{}/books", ann.id)).await;
    assert_eq!(books, vec![book.clone()]);
    let cats: Vec<Cat> = get(client, &format!("/users/{}/cats", ann.id)).await;
    assert_eq!(cats, vec![cat.clone()]);
    let summary: Value = get(client, &format!("/users/{}/summary", ann.id)).await;
    assert_eq!(summary["counts"], json!({"books": 1, "cats": 1}));
    let found: Vec<Book> = get(client, "/books?prefix=Du").await;
    assert_eq!(found, vec![book.clone()]);

    // The book changes hands: both owners' lists, both summaries and the
    // search follow at once (this process made the write).
    let moved: Book = send(
        client,
        "PUT",
        &format!("/books/{}", book.id),
        json!({"title": "Dune Messiah", "owner_id": bob.id}),
    )
    .await;
    assert_eq!(moved.version, book.version + 1);
    assert_eq!(
        get::<Book>(client, &format!("/books/{}", book.id)).await,
        moved
    );
    assert!(
        get::<Vec<Book>>(client, &format!("/users/{}/books", ann.id))
            .await
            .is_empty()
    );
    assert_eq!(
        get::<Vec<Book>>(client, &format!("/users/{}/books", bob.id)).await,
        vec![moved.clone()]
    );
    let summary: Value = get(client, &format!("/users/{}/summary", bob.id)).await;
    assert_eq!(summary["counts"], json!({"books": 1, "cats": 0}));
    assert!(
        get::<Vec<Book>>(client, "/books?prefix=Dune%20")
            .await
            .len()
            == 1
    );
    assert!(
        get::<Vec<Book>>(client, "/books?prefix=Dunes")
            .await
            .is_empty()
    );

    let renamed: User = send(
        client,
        "PUT",
        &format!("/users/{}", ann.id),
        json!({"name": "Anna"}),
    )
    .await;
    assert_eq!(
        get::<User>(client, &format!("/users/{}", ann.id)).await,
        renamed
    );
    let summary: Value = get(client, &format!("/users/{}/summary", ann.id)).await;
    assert_eq!(summary["user"]["name"], "Anna");

    let deleted = client
        .delete(&format!("/cats/{}", cat.id))
        .await
        .expect("an answer");
    assert_eq!(deleted.status, 204);
    assert_eq!(status(client, &format!("/cats/{}", cat.id)).await, 404);
    assert!(
        get::<Vec<Cat>>(client, &format!("/users/{}/cats", ann.id))
            .await
            .is_empty()
    );

    assert_eq!(status(client, "/users/999999").await, 404);
    assert_eq!(status(client, "/books/999999").await, 404);
    assert_eq!(status(client, "/users/999999/summary").await, 404);
    renamed
}

/// Repeated reads of one user: how many statements they sent to PostgreSQL.
async fn queries_for_reads(client: &mut Client, user: &User) -> u64 {
    let before = stats(client).await.db_queries;
    for _ in 0..20 {
        assert_eq!(
            &get::<User>(client, &format!("/users/{}", user.id)).await,
            user
        );
        get::<Vec<Book>>(client, &format!("/users/{}/books", user.id)).await;
        get::<Value>(client, &format!("/users/{}/summary", user.id)).await;
    }
    stats(client).await.db_queries - before
}

#[tokio::test]
async fn every_endpoint_round_trips_on_redis() {
    let Some(schema) = Schema::create("every_endpoint_round_trips_on_redis").await else {
        return;
    };
    let redis = RedisServer::start();
    let service = Service::start(&schema, "redis", Some(&redis));
    let mut client = service.client();
    let user = every_endpoint(&mut client).await;
    // Warm: the reads send nothing to PostgreSQL.
    queries_for_reads(&mut client, &user).await;
    assert_eq!(queries_for_reads(&mut client, &user).await, 0);
    let stats = stats(&mut client).await;
    assert_eq!(stats.store, "redis");
    assert!(stats.hits > 0 && stats.local_hits > 0, "{stats:?}");
    assert_eq!(stats.store_errors, 0, "{stats:?}");
    // cacheme's per-node metrics, in Prometheus' text format.
    let metrics = client.get("/metrics").await.expect("an answer");
    assert_eq!(metrics.status, 200);
    let metrics = metrics.text();
    assert!(
        metrics.contains("cacheme_requests_total{")
            && metrics.contains("result=\"local_hit\"")
            && metrics.contains("cacheme_load_seconds"),
        "{metrics}"
    );

    // The admin endpoint: a pattern deletes every version key, so the next
    // read loads again.
    let before = self::stats(&mut client).await.db_queries;
    let answer: Value = send(
        &mut client,
        "POST",
        "/admin/invalidate",
        json!({"patterns": ["user:*:version"], "tags": ["summaries"]}),
    )
    .await;
    assert!(
        answer["invalidated"].as_u64().expect("a count") >= 1,
        "{answer}"
    );
    get::<User>(&mut client, &format!("/users/{}", user.id)).await;
    get::<Value>(&mut client, &format!("/users/{}/summary", user.id)).await;
    assert!(self::stats(&mut client).await.db_queries > before);
}

#[tokio::test]
async fn every_endpoint_round_trips_on_the_memory_store_and_uncached() {
    let Some(schema) = Schema::create("every_endpoint_round_trips_on_the_memory_store").await
    else {
        return;
    };
    let memory = Service::start(&schema, "memory", None);
    let mut client = memory.client();
    let user = every_endpoint(&mut client).await;
    queries_for_reads(&mut client, &user).await;
    assert_eq!(queries_for_reads(&mut client, &user).await, 0);
    drop(memory);

    let off = Service::start(&schema, "off", None);
    let mut client = off.client();
    assert_eq!(stats(&mut client).await.store, "off");
    // Every read goes to PostgreSQL: 20 × (user, list, summary's two).
    assert_eq!(queries_for_reads(&mut client, &user).await, 80);
    every_endpoint_again(&mut client).await;
}

/// `every_endpoint` on tables that already hold its rows.
async fn every_endpoint_again(client: &mut Client) {
    let user: User = send(
        client,
        "POST",
        "/users",
        json!({"name": "Cy", "email": "cy@x"}),
    )
    .await;
    let book: Book = send(
        client,
        "POST",
        "/books",
        json!({"title": "Emma", "owner_id": user.id}),
    )
    .await;
    let changed: Book = send(
        client,
        "PUT",
        &format!("/books/{}", book.id),
        json!({"title": "Emma 2"}),
    )
    .await;
    assert_eq!(
        get::<Book>(client, &format!("/books/{}", book.id)).await,
        changed
    );
}

/// A write through one process is read back through another at once, for
/// every entity and list, with both processes keeping local tiers: the
/// version keys live in Redis and are invalidated by key before the write
/// answers, and bodies are keyed by version.
#[tokio::test]
async fn a_write_is_never_followed_by_an_old_read_across_processes() {
    let Some(schema) = Schema::create("a_write_is_never_followed_by_an_old_read").await else {
        return;
    };
    let redis = RedisServer::start();
    let a = Service::start(&schema, "redis", Some(&redis));
    let b = Service::start(&schema, "redis", Some(&redis));
    let mut a = a.client();
    let mut b = b.client();
    let ann: User = send(
        &mut a,
        "POST",
        "/users",
        json!({"name": "Ann", "email": "ann@x"}),
    )
    .await;
    let bob: User = send(
        &mut a,
        "POST",
        "/users",
        json!({"name": "Bob", "email": "bob@x"}),
    )
    .await;
    let book: Book = send(
        &mut a,
        "POST",
        "/books",
        json!({"title": "t0", "owner_id": ann.id}),
    )
    .await;
    let cat: Cat = send(
        &mut a,
        "POST",
        "/cats",
        json!({"name": "c0", "age": 0, "owner_id": ann.id}),
    )
    .await;

    for round in 1..=100_i64 {
        // Alternate which process writes and which reads.
        let (writer, reader) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        // Both processes hold the current values in their local tiers.
        for client in [&mut *writer, &mut *reader] {
            get::<User>(client, &format!("/users/{}", ann.id)).await;
            get::<Book>(client, &format!("/books/{}", book.id)).await;
            get::<Cat>(client, &format!("/cats/{}", cat.id)).await;
            get::<Vec<Book>>(client, &format!("/users/{}/books", ann.id)).await;
            get::<Vec<Book>>(client, &format!("/users/{}/books", bob.id)).await;
            get::<Vec<Cat>>(client, &format!("/users/{}/cats", ann.id)).await;
        }
        let name = format!("Ann {round}");
        let user: User = send(
            writer,
            "PUT",
            &format!("/users/{}", ann.id),
            json!({"name": name}),
        )
        .await;
        assert_eq!(
            get::<User>(reader, &format!("/users/{}", ann.id)).await,
            user,
            "round {round}"
        );

        let owner = if round % 2 == 0 { ann.id } else { bob.id };
        let title = format!("t{round}");
        let moved: Book = send(
            writer,
            "PUT",
            &format!("/books/{}", book.id),
            json!({"title": title, "owner_id": owner}),
        )
        .await;
        assert_eq!(
            get::<Book>(reader, &format!("/books/{}", book.id)).await,
            moved,
            "round {round}"
        );
        let ann_books: Vec<Book> = get(reader, &format!("/users/{}/books", ann.id)).await;
        let bob_books: Vec<Book> = get(reader, &format!("/users/{}/books", bob.id)).await;
        let (holder, other) = if owner == ann.id {
            (ann_books, bob_books)
        } else {
            (bob_books, ann_books)
        };
        assert_eq!(holder, vec![moved.clone()], "round {round}");
        assert!(other.is_empty(), "round {round}: {other:?}");

        let aged: Cat = send(
            writer,
            "PUT",
            &format!("/cats/{}", cat.id),
            json!({"age": round}),
        )
        .await;
        assert_eq!(
            get::<Cat>(reader, &format!("/cats/{}", cat.id)).await,
            aged,
            "round {round}"
        );
        assert_eq!(
            get::<Vec<Cat>>(reader, &format!("/users/{}/cats", ann.id)).await,
            vec![aged],
            "round {round}"
        );
    }
    // The reads did use the local tiers.
    for client in [&mut a, &mut b] {
        let stats = stats(client).await;
        assert!(stats.local_tiers_active, "{stats:?}");
        assert!(stats.local_hits > 100, "{stats:?}");
    }

    // Derived values (the summary, in the user's dependency group) reach
    // the other process with the cache's invalidation event: within about
    // a millisecond, and surely within 5 s.
    get::<Value>(&mut b, &format!("/users/{}/summary", ann.id)).await;
    send::<Cat>(
        &mut a,
        "POST",
        "/cats",
        json!({"name": "c1", "age": 1, "owner_id": ann.id}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let summary: Value = get(&mut b, &format!("/users/{}/summary", ann.id)).await;
        if summary["counts"]["cats"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the summary never followed: {summary}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With Redis killed, every endpoint still answers from PostgreSQL (the
/// cache fails open), writes still land and are read back; when Redis is
/// back the cache serves again.
#[tokio::test]
async fn the_service_keeps_answering_with_redis_killed() {
    let Some(schema) = Schema::create("the_service_keeps_answering_with_redis_killed").await else {
        return;
    };
    let mut redis = RedisServer::start();
    let service = Service::start(&schema, "redis", Some(&redis));
    let mut client = service.client();
    let user = every_endpoint(&mut client).await;
    queries_for_reads(&mut client, &user).await;

    redis.kill();
    for _ in 0..3 {
        queries_for_reads(&mut client, &user).await;
    }
    assert!(stats(&mut client).await.store_errors > 0);
    let renamed: User = send(
        &mut client,
        "PUT",
        &format!("/users/{}", user.id),
        json!({"name": "Redis-less"}),
    )
    .await;
    assert_eq!(
        get::<User>(&mut client, &format!("/users/{}", user.id)).await,
        renamed
    );
    every_endpoint_again(&mut client).await;
    // Without the cache every read costs PostgreSQL.
    assert!(queries_for_reads(&mut client, &renamed).await > 0);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        queries_for_reads(&mut client, &renamed).await;
        if queries_for_reads(&mut client, &renamed).await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get::<User>(&mut client, &format!("/users/{}", user.id)).await,
        renamed
    );
}

/// A write made straight in PostgreSQL reaches the cache through the
/// `NOTIFY` trigger and the service's invalidation source.
#[tokio::test]
async fn a_write_made_in_sql_reaches_the_cache() {
    let Some(schema) = Schema::create("a_write_made_in_sql_reaches_the_cache").await else {
        return;
    };
    let redis = RedisServer::start();
    let service = Service::start(&schema, "redis", Some(&redis));
    let mut client = service.client();
    let user: User = send(
        &mut client,
        "POST",
        "/users",
        json!({"name": "Ann", "email": "ann@x"}),
    )
    .await;
    let cat: Cat = send(
        &mut client,
        "POST",
        "/cats",
        json!({"name": "Tom", "age": 1, "owner_id": user.id}),
    )
    .await;
    assert_eq!(
        get::<Cat>(&mut client, &format!("/cats/{}", cat.id)).await,
        cat
    );
    get::<Vec<Cat>>(&mut client, &format!("/users/{}/cats", user.id)).await;

    let pool = sqlx::PgPool::connect(&database_url())
        .await
        .expect("PostgreSQL");
    sqlx::query(&format!(
        "UPDATE {}.cats SET name = 'Tom (from psql)' WHERE id = $1",
        schema.name
    ))
    .bind(cat.id)
    .execute(&pool)
    .await
    .expect("UPDATE");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now: Cat = get(&mut client, &format!("/cats/{}", cat.id)).await;
        let list: Vec<Cat> = get(&mut client, &format!("/users/{}/cats", user.id)).await;
        if now.name == "Tom (from psql)" && list == vec![now.clone()] {
            assert_eq!(now.version, cat.version + 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never followed: {now:?} {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.close().await;
}
