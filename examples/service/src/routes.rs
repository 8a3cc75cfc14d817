//! The HTTP API. Reads go through `cache::reads`; writes run in a
//! transaction and, once it has committed, invalidate through
//! `cache::invalidate` before answering.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cache::invalidate;
use crate::cache::reads::{self, LoadFailure, MAX_PREFIX, Summary};
use crate::db::{self, Book, Cat, Db, User};
use crate::error::ApiError;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The data layer.
    pub db: Db,
    /// The cache (also installed as the global one).
    pub cache: cacheme::Cache,
    /// `redis`, `memory` or `off`.
    pub store: &'static str,
    /// Renders the metrics recorded through the `metrics` facade (cacheme's
    /// per-node counters and histograms), for `GET /metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user).put(update_user))
        .route("/users/{id}/books", get(books_of))
        .route("/users/{id}/cats", get(cats_of))
        .route("/users/{id}/summary", get(summary))
        .route("/books", get(search_books).post(create_book))
        .route("/books/{id}", get(get_book).put(update_book))
        .route("/cats", post(create_cat))
        .route(
            "/cats/{id}",
            get(get_cat).put(update_cat).delete(delete_cat),
        )
        .route("/admin/invalidate", post(admin_invalidate))
        .with_state(state)
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The counters the load test reads: statements sent to PostgreSQL and the
/// cache's own. `GET /metrics` has cacheme's per-node metrics in
/// Prometheus' text format.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Statements sent to PostgreSQL by this process.
    pub db_queries: u64,
    /// `redis`, `memory` or `off`.
    pub store: String,
    /// Values served from the store.
    pub hits: u64,
    /// Values served from a local tier.
    pub local_hits: u64,
    /// Calls that found nothing usable.
    pub misses: u64,
    /// Loaders run.
    pub loads: u64,
    /// Store operations that failed or timed out (the calls failed open).
    pub store_errors: u64,
    /// Values invalidated.
    pub invalidated: u64,
    /// Whether the local tiers are in use (the event channel is up).
    pub local_tiers_active: bool,
}

async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let cache = state.cache.stats();
    Json(Stats {
        db_queries: db::queries(),
        store: state.store.to_owned(),
        hits: cache.hit,
        local_hits: cache.local_hit,
        misses: cache.miss,
        loads: cache.load,
        store_errors: cache.store_error,
        invalidated: cache.invalidated,
        local_tiers_active: state.cache.local_tiers_active(),
    })
}

/// Prometheus' text format: cacheme's metrics (`cacheme_requests_total
/// {node, result}`, `cacheme_load_seconds`...), reported now rather than at
/// the next `stats_interval`.
async fn metrics(State(state): State<AppState>) -> String {
    let cache = state.cache.clone();
    // (It also publishes the fleet stats when they are on: a blocking call.)
    let published = tokio::task::spawn_blocking(move || cache.publish_stats()).await;
    if let Ok(Err(error)) = published {
        tracing::debug!(%error, "fleet stats not published");
    }
    state.metrics.render()
}

async fn get_user(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<User> {
    reads::user(&state.db, id)
        .await
        .map_err(ApiError::read("user"))?
        .map(Json)
        .ok_or(ApiError::NotFound { what: "user", id })
}

/// The body of `POST /users`.
#[derive(Debug, Deserialize)]
struct NewUser {
    name: String,
    email: String,
}

async fn create_user(
    State(state): State<AppState>,
    Json(new): Json<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let doing = "creating a user";
    let failed = |error| ApiError::database(doing, error);
    let mut write = state.db.begin().await.map_err(failed)?;
    let user = write
        .insert_user(&new.name, &new.email)
        .await
        .map_err(failed)?;
    write.commit().await.map_err(failed)?;
    invalidate::user_changed(&user).await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// The body of `PUT /users/{id}`.
#[derive(Debug, Deserialize)]
struct UserChange {
    name: Option<String>,
    email: Option<String>,
}

async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(change): Json<UserChange>,
) -> ApiResult<User> {
    let doing = "updating a user";
    let failed = |error| ApiError::database(doing, error);
    let mut write = state.db.begin().await.map_err(failed)?;
    let user = write
        .update_user(id, change.name.as_deref(), change.email.as_deref())
        .await
        .map_err(failed)?
        .ok_or(ApiError::NotFound { what: "user", id })?;
    write.commit().await.map_err(failed)?;
    invalidate::user_changed(&user).await;
    Ok(Json(user))
}

async fn books_of(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Vec<Book>> {
    reads::books_of(&state.db, id)
        .await
        .map(Json)
        .map_err(ApiError::read("books"))
}

async fn cats_of(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Vec<Cat>> {
    reads::cats_of(&state.db, id)
        .await
        .map(Json)
        .map_err(ApiError::read("cats"))
}

async fn summary(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Summary> {
    match reads::summary(&state.db, id).await {
        Ok(summary) => Ok(Json(summary)),
        Err(LoadFailure::Gone) => Err(ApiError::NotFound { what: "user", id }),
        Err(failure) => Err(ApiError::load("summary")(failure)),
    }
}

/// The query of `GET /books`.
#[derive(Debug, Deserialize)]
struct Search {
    prefix: String,
}

async fn search_books(
    State(state): State<AppState>,
    Query(search): Query<Search>,
) -> ApiResult<Vec<Book>> {
    if search.prefix.len() > MAX_PREFIX {
        return Err(ApiError::Invalid(format!(
            "the prefix is longer than {MAX_PREFIX} bytes"
        )));
    }
    reads::search_books(&state.db, &search.prefix)
        .await
        .map(Json)
        .map_err(ApiError::load("book search"))
}

async fn get_book(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Book> {
    reads::book(&state.db, id)
        .await
        .map_err(ApiError::read("book"))?
        .map(Json)
        .ok_or(ApiError::NotFound { what: "book", id })
}

/// The body of `POST /books`.
#[derive(Debug, Deserialize)]
struct NewBook {
    title: String,
    owner_id: i64,
}

async fn create_book(
    State(state): State<AppState>,
    Json(new): Json<NewBook>,
) -> Result<(StatusCode, Json<Book>), ApiError> {
    let doing = "creating a book";
    let failed = |error| ApiError::database(doing, error);
    let mut write = state.db.begin().await.map_err(failed)?;
    let book = write
        .insert_book(&new.title, new.owner_id)
        .await
        .map_err(failed)?;
    write.commit().await.map_err(failed)?;
    invalidate::book_changed(None, &book).await;
    Ok((StatusCode::CREATED, Json(book)))
}

/// The body of `PUT /books/{id}`.
#[derive(Debug, Deserialize)]
struct BookChange {
    title: Option<String>,
    owner_id: Option<i64>,
}

async fn update_book(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(change): Json<BookChange>,
) -> ApiResult<Book> {
    let doing = "updating a book";
    let failed = |error| ApiError::database(doing, error);
    let mut write = state.db.begin().await.map_err(failed)?;
    let before = write
        .book_for_update(id)
        .await
        .map_err(failed)?
        .ok_or(ApiError::NotFound { what: "book", id })?;
    let after = write
        .update_book(id, change.title.as_deref(), change.owner_id)
        .await
        .map_err(failed)?
        .ok_or(ApiError::NotFound { what: "book", id })?;
    write.commit().await.map_err(failed)?;
    invalidate::book_changed(Some(&before), &after).await;
    Ok(Json(after))
}

async fn get_cat(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Cat> {
    reads::cat(&state.db, id)
        .await
        .map_err(ApiError::read("cat"))?
        .map(Json)
        .ok_or(ApiError::NotFound { what: "cat", id })
}

/// The body of `POST /cats`.
#[derive(Debug, Deserialize)]
struct NewCat {
    name: String,
    age: i32,
    owner_id: i64,
}

async fn create_cat(
    State(state): State<AppState>,
    Json(new): Json<NewCat>,
) -> Result<(StatusCode, Json<Cat>), ApiError> {
    let doing = "creating a cat";
    let failed = |error| ApiError::database(doing, error);
    let mut write = state.db.begin().await.map_err(failed)?;
    let cat = write
        .insert_cat(&new.name, new.age, new.owner_id)
        .await
        .map_err(failed)?;
    write.commit().await.map_err(failed)?;
    invalidate::cat_changed(None, Some(&cat)).await;
    Ok((StatusCode::CREATED, Json(cat)))
}

/// The body of `PUT /cats/{id}`.
#[derive(Debug, Deserialize)]
struct CatChange {
    name: Option<String>,
    age: Option<i32>,
    owner_id: Option<i64>,
}

async fn update_cat(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(change): Json<CatChange>,
) -> ApiResult<Cat> {
    let doing = "updating a cat";
    let failed = |error| ApiError::database(doing, error);
    let mut write = state.db.begin().await.map_err(failed)?;
    let before = write
        .cat_for_update(id)
        .await
        .map_err(failed)?
        .ok_or(ApiError::NotFound { what: "cat", id })?;
    let after = write
        .update_cat(id, change.name.as_deref(), change.age, change.owner_id)
        .await
        .map_err(failed)?
        .ok_or(ApiError::NotFound { what: "cat", id })?;
    write.commit().await.map_err(failed)?;
    invalidate::cat_changed(Some(&before), Some(&after)).await;
    Ok(Json(after))
}

async fn delete_cat(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let doing = "deleting a cat";
    let failed = |error| ApiError::database(doing, error);
    let mut write = state.db.begin().await.map_err(failed)?;
    let cat = write
        .delete_cat(id)
        .await
        .map_err(failed)?
        .ok_or(ApiError::NotFound { what: "cat", id })?;
    write.commit().await.map_err(failed)?;
    invalidate::cat_changed(Some(&cat), None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /admin/invalidate`: any mix of the four kinds.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdminInvalidation {
    /// Cache keys, marked stale (`user:7:version`).
    keys: Vec<String>,
    /// Dependency groups, every member marked stale (`user:7`).
    invalid_keys: Vec<String>,
    /// Tags, every value deleted (`book-search`).
    tags: Vec<String>,
    /// Redis globs over keys, every match deleted (`book:*`).
    patterns: Vec<String>,
}

/// The answer of `POST /admin/invalidate`.
#[derive(Debug, Serialize)]
struct Invalidated {
    /// Values marked or deleted by key and pattern (tags and groups are
    /// not counted: they are O(1) whatever their size).
    invalidated: u64,
}

async fn admin_invalidate(
    State(state): State<AppState>,
    Json(request): Json<AdminInvalidation>,
) -> ApiResult<Invalidated> {
    let mut invalidation = state.cache.create_invalidation();
    for key in request.keys {
        invalidation = invalidation.key(key);
    }
    for group in request.invalid_keys {
        invalidation = invalidation.invalid_key(group);
    }
    for tag in request.tags {
        invalidation = invalidation.tag(tag);
    }
    for pattern in request.patterns {
        invalidation = invalidation.pattern(cacheme::Pattern::glob(pattern));
    }
    let invalidated = invalidation.run().await?;
    Ok(Json(Invalidated { invalidated }))
}
