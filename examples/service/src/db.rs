//! The data layer: PostgreSQL through sqlx, no cache in sight.
//!
//! Every statement the service sends goes through this module, which counts
//! them ([`queries`]): the load test compares that count with the cache off
//! and on. `BEGIN` and `COMMIT` are not counted.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Unique e-mail address.
    pub email: String,
    /// Bumped by every update.
    pub version: i64,
}

/// A book, owned by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Primary key.
    pub id: i64,
    /// Title.
    pub title: String,
    /// The user who owns it.
    pub owner_id: i64,
    /// Bumped by every update.
    pub version: i64,
}

/// A cat, owned by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cat {
    /// Primary key.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Age in years.
    pub age: i32,
    /// The user who owns it.
    pub owner_id: i64,
    /// Bumped by every update.
    pub version: i64,
}

/// An entity's id and version: what list nodes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Primary key.
    pub id: i64,
    /// Version.
    pub version: i64,
}

/// A user's counts, as the summary endpoint shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// How many books the user owns.
    pub books: i64,
    /// How many cats the user owns.
    pub cats: i64,
}

static QUERIES: AtomicU64 = AtomicU64::new(0);

/// How many statements this process has sent to PostgreSQL.
pub fn queries() -> u64 {
    QUERIES.load(Ordering::Relaxed)
}

fn counted() {
    QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// The migrations in `migrations/`, compiled into the binary.
const MIGRATIONS: [(i64, &str, &str); 2] = [
    (
        1,
        "entities",
        include_str!("../migrations/0001_entities.sql"),
    ),
    (
        2,
        "notify cats",
        include_str!("../migrations/0002_notify_cats.sql"),
    ),
];

/// The embedded migrations as a sqlx migration source (the `migrate!()`
/// macro would need sqlx's compile-time macros).
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send>>
    {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Connect to `url`, create `schema` if needed, and run the migrations in
/// it. Every connection of the pool works in `schema` (its `search_path`).
pub async fn connect(url: &str, schema: &str, pool_size: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    // One connection outside the pool creates the schema first.
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    // `schema` is checked by the settings: lowercase letters, digits, `_`.
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .connect_with(options.options([("search_path", schema)]))
        .await?;
    let migrator = Migrator::new(Embedded)
        .await
        .map_err(|error| sqlx::Error::Migrate(Box::new(error)))?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// Drop `schema` and everything in it (the tests' clean-up).
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), sqlx::Error> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

fn user(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        version: row.try_get("version")?,
    })
}

fn book(row: &PgRow) -> Result<Book, sqlx::Error> {
    Ok(Book {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        owner_id: row.try_get("owner_id")?,
        version: row.try_get("version")?,
    })
}

fn cat(row: &PgRow) -> Result<Cat, sqlx::Error> {
    Ok(Cat {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        age: row.try_get("age")?,
        owner_id: row.try_get("owner_id")?,
        version: row.try_get("version")?,
    })
}

/// Reads.
impl Db {
    /// User `id`.
    pub async fn user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        counted();
        sqlx::query("SELECT id, name, email, version FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    /// Book `id`.
    pub async fn book(&self, id: i64) -> Result<Option<Book>, sqlx::Error> {
        counted();
        sqlx::query("SELECT id, title, owner_id, version FROM books WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(book)
            .transpose()
    }

    /// Cat `id`.
    pub async fn cat(&self, id: i64) -> Result<Option<Cat>, sqlx::Error> {
        counted();
        sqlx::query("SELECT id, name, age, owner_id, version FROM cats WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(cat)
            .transpose()
    }

    /// The books with these ids (those that exist).
    pub async fn books_by_ids(&self, ids: &[i64]) -> Result<Vec<Book>, sqlx::Error> {
        counted();
        sqlx::query("SELECT id, title, owner_id, version FROM books WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(book)
            .collect()
    }

    /// The cats with these ids (those that exist).
    pub async fn cats_by_ids(&self, ids: &[i64]) -> Result<Vec<Cat>, sqlx::Error> {
        counted();
        sqlx::query("SELECT id, name, age, owner_id, version FROM cats WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(cat)
            .collect()
    }

    /// The books of user `owner_id`, by id.
    pub async fn books_of(&self, owner_id: i64) -> Result<Vec<Book>, sqlx::Error> {
        counted();
        sqlx::query(
            "SELECT id, title, owner_id, version FROM books WHERE owner_id = $1 ORDER BY id",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(book)
        .collect()
    }

    /// The cats of user `owner_id`, by id.
    pub async fn cats_of(&self, owner_id: i64) -> Result<Vec<Cat>, sqlx::Error> {
        counted();
        sqlx::query(
            "SELECT id, name, age, owner_id, version FROM cats WHERE owner_id = $1 ORDER BY id",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(cat)
        .collect()
    }

    /// How many books and cats user `owner_id` has.
    pub async fn counts(&self, owner_id: i64) -> Result<Counts, sqlx::Error> {
        counted();
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM books WHERE owner_id = $1) AS books, \
                    (SELECT count(*) FROM cats WHERE owner_id = $1) AS cats",
        )
        .bind(owner_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            books: row.try_get("books")?,
            cats: row.try_get("cats")?,
        })
    }

    /// The first 20 books whose title starts with `prefix`, by title.
    pub async fn search_books(&self, prefix: &str) -> Result<Vec<Book>, sqlx::Error> {
        counted();
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        sqlx::query(
            "SELECT id, title, owner_id, version FROM books WHERE title LIKE $1 \
             ORDER BY title, id LIMIT 20",
        )
        .bind(pattern)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(book)
        .collect()
    }
}

/// The data layer: a pool of connections, each in the service's schema.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
}

/// A write in progress: statements run in one transaction, which
/// [`commit`](Self::commit) ends. Dropped without a commit, it rolls back.
#[derive(Debug)]
pub struct Write {
    tx: Transaction<'static, Postgres>,
}

impl Db {
    /// The data layer over `pool`.
    pub fn new(pool: PgPool) -> Db {
        Db { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begin a write.
    pub async fn begin(&self) -> Result<Write, sqlx::Error> {
        Ok(Write {
            tx: self.pool.begin().await?,
        })
    }
}

/// Writes. Every update bumps the row's version (a trigger, migration 1).
impl Write {
    /// Commit.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Insert a user.
    pub async fn insert_user(&mut self, name: &str, email: &str) -> Result<User, sqlx::Error> {
        counted();
        let row = sqlx::query(
            "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, name, email, version",
        )
        .bind(name)
        .bind(email)
        .fetch_one(&mut *self.tx)
        .await?;
        user(&row)
    }

    /// Change user `id`'s name and e-mail (`None`: unchanged).
    pub async fn update_user(
        &mut self,
        id: i64,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Option<User>, sqlx::Error> {
        counted();
        sqlx::query(
            "UPDATE users SET name = coalesce($2, name), email = coalesce($3, email) \
             WHERE id = $1 RETURNING id, name, email, version",
        )
        .bind(id)
        .bind(name)
        .bind(email)
        .fetch_optional(&mut *self.tx)
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }

    /// Book `id`, locked until the commit.
    pub async fn book_for_update(&mut self, id: i64) -> Result<Option<Book>, sqlx::Error> {
        counted();
        sqlx::query("SELECT id, title, owner_id, version FROM books WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(book)
            .transpose()
    }

    /// Insert a book.
    pub async fn insert_book(&mut self, title: &str, owner_id: i64) -> Result<Book, sqlx::Error> {
        counted();
        let row = sqlx::query(
            "INSERT INTO books (title, owner_id) VALUES ($1, $2) \
             RETURNING id, title, owner_id, version",
        )
        .bind(title)
        .bind(owner_id)
        .fetch_one(&mut *self.tx)
        .await?;
        book(&row)
    }

    /// Change book `id`'s title and owner (`None`: unchanged).
    pub async fn update_book(
        &mut self,
        id: i64,
        title: Option<&str>,
        owner_id: Option<i64>,
    ) -> Result<Option<Book>, sqlx::Error> {
        counted();
        sqlx::query(
            "UPDATE books SET title = coalesce($2, title), owner_id = coalesce($3, owner_id) \
             WHERE id = $1 RETURNING id, title, owner_id, version",
        )
        .bind(id)
        .bind(title)
        .bind(owner_id)
        .fetch_optional(&mut *self.tx)
        .await?
        .as_ref()
        .map(book)
        .transpose()
    }

    /// Cat `id`, locked until the commit.
    pub async fn cat_for_update(&mut self, id: i64) -> Result<Option<Cat>, sqlx::Error> {
        counted();
        sqlx::query("SELECT id, name, age, owner_id, version FROM cats WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(cat)
            .transpose()
    }

    /// Insert a cat.
    pub async fn insert_cat(
        &mut self,
        name: &str,
        age: i32,
        owner_id: i64,
    ) -> Result<Cat, sqlx::Error> {
        counted();
        let row = sqlx::query(
            "INSERT INTO cats (name, age, owner_id) VALUES ($1, $2, $3) \
             RETURNING id, name, age, owner_id, version",
        )
        .bind(name)
        .bind(age)
        .bind(owner_id)
        .fetch_one(&mut *self.tx)
        .await?;
        cat(&row)
    }

    /// Change cat `id` (`None`: unchanged).
    pub async fn update_cat(
        &mut self,
        id: i64,
        name: Option<&str>,
        age: Option<i32>,
        owner_id: Option<i64>,
    ) -> Result<Option<Cat>, sqlx::Error> {
        counted();
        sqlx::query(
            "UPDATE cats SET name = coalesce($2, name), age = coalesce($3, age), \
             owner_id = coalesce($4, owner_id) WHERE id = $1 RETURNING id, name, age, owner_id, version",
        )
        .bind(id)
        .bind(name)
        .bind(age)
        .bind(owner_id)
        .fetch_optional(&mut *self.tx)
        .await?
        .as_ref()
        .map(cat)
        .transpose()
    }

    /// Delete cat `id`.
    pub async fn delete_cat(&mut self, id: i64) -> Result<Option<Cat>, sqlx::Error> {
        counted();
        sqlx::query("DELETE FROM cats WHERE id = $1 RETURNING id, name, age, owner_id, version")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(cat)
            .transpose()
    }
}

/// Fill empty tables with `users` users, each with `books_per_user` books
/// and `cats_per_user` cats (the load test's data). Returns whether it
/// seeded (tables that already hold users are left alone).
pub async fn seed(
    db: &Db,
    users: i64,
    books_per_user: i64,
    cats_per_user: i64,
) -> Result<bool, sqlx::Error> {
    let mut write = db.begin().await?;
    counted();
    let existing: i64 = sqlx::query("SELECT count(*) FROM users")
        .fetch_one(&mut *write.tx)
        .await?
        .try_get(0)?;
    if existing > 0 {
        return Ok(false);
    }
    // The trigger of migration 2 would announce every seeded cat; nobody
    // has read them yet, so it is off while seeding (transactionally).
    let statements: [(&str, &[i64]); 5] = [
        ("ALTER TABLE cats DISABLE TRIGGER cats_notify", &[]),
        (
            "INSERT INTO users (name, email) \
             SELECT 'user ' || n, 'user' || n || '@example.com' FROM generate_series(1, $1) AS n",
            &[users],
        ),
        (
            "INSERT INTO books (title, owner_id) SELECT 'book ' || u || '.' || k, u \
             FROM generate_series(1, $1) AS u, generate_series(1, $2) AS k",
            &[users, books_per_user],
        ),
        (
            "INSERT INTO cats (name, age, owner_id) SELECT 'cat ' || u || '.' || k, (u + k) % 20, u \
             FROM generate_series(1, $1) AS u, generate_series(1, $2) AS k",
            &[users, cats_per_user],
        ),
        ("ALTER TABLE cats ENABLE TRIGGER cats_notify", &[]),
    ];
    for (statement, arguments) in statements {
        counted();
        let mut query = sqlx::query(statement);
        for &argument in arguments {
            query = query.bind(argument);
        }
        query.execute(&mut *write.tx).await?;
    }
    write.commit().await?;
    Ok(true)
}
