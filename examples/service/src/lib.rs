//! An HTTP service on axum whose data lives in PostgreSQL, cached with
//! cacheme: users, the books they own, and cats (the entities of Python
//! cacheme's README).
//!
//! ```text
//! cargo run -p service                                   # memory store
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run -p service # Redis
//! curl localhost:3000/users/1/books
//! ```
//!
//! - `db`: the data layer (sqlx), which counts its statements;
//! - `cache`: everything about caching — `nodes.rs`, `invalid_nodes.rs`,
//!   the reads (`reads.rs`), what each write invalidates (`invalidate.rs`)
//!   and a PostgreSQL `NOTIFY` invalidation source (`sources.rs`);
//! - `routes`: the handlers;
//! - `client`: the small HTTP client of the tests and the load generator.
//!
//! The guide (`docs/`) walks through it; `just loadtest` measures it.

pub mod cache;
pub mod client;
pub mod db;
pub mod error;
pub mod routes;
pub mod settings;

use std::net::SocketAddr;

use settings::{Settings, Store};

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL could not be reached, or the migrations failed.
    #[error("database at {url}: {source}")]
    Database {
        /// The database URL.
        url: String,
        /// What went wrong.
        source: sqlx::Error,
    },
    /// The cache could not be built.
    #[error("cache: {0}")]
    Cache(#[from] cacheme::Error),
    /// The Prometheus recorder could not be installed (another recorder is).
    #[error("metrics recorder: {source}")]
    Metrics {
        /// What went wrong.
        source: metrics_exporter_prometheus::BuildError,
    },
    /// The listening socket.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Run the service until Ctrl-C or SIGTERM: connect to PostgreSQL (creating
/// and migrating the schema), install the cache, connect the invalidation
/// source, seed empty tables, and serve. Prints `listening on http://ADDR`
/// once it accepts connections.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let database = |source| StartError::Database {
        url: settings.database_url.clone(),
        source,
    };
    let pool = db::connect(&settings.database_url, &settings.schema, settings.pool_size)
        .await
        .map_err(database)?;
    let db = db::Db::new(pool);
    let cache = cache::install(&settings)?;
    let store = match settings.store {
        Store::Redis(_) => "redis",
        Store::Memory => "memory",
        Store::Off => "off",
    };
    if settings.store != Store::Off {
        let source = cache::sources::CatNotifications::listen(db.pool(), &settings.schema)
            .await
            .map_err(database)?;
        cacheme::sources::connect(&cache, cache::sources::CATS_TAG, source);
    }
    if settings.seed_users > 0
        && db::seed(&db, settings.seed_users, 3, 2)
            .await
            .map_err(database)?
    {
        tracing::info!(users = settings.seed_users, "seeded the empty tables");
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: settings.listen,
        source,
    })?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|source| StartError::Metrics { source })?;
    let app = routes::router(routes::AppState {
        db,
        cache,
        store,
        metrics,
    });
    println!(
        "listening on http://{addr} (cache: {store}, schema: {})",
        settings.schema
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// The guide's chapters (`docs/guide/`), compiled as doc tests: every
/// `rust` block in them builds against this crate and its dependencies,
/// and runs unless it is marked `no_run`.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../../docs/guide/introduction.md")]
    struct Introduction;
    #[doc = include_str!("../../../docs/guide/getting-started.md")]
    struct GettingStarted;
    #[doc = include_str!("../../../docs/guide/nodes.md")]
    struct Nodes;
    #[doc = include_str!("../../../docs/guide/decorator.md")]
    struct Decorator;
    #[doc = include_str!("../../../docs/guide/invalidation.md")]
    struct Invalidation;
    #[doc = include_str!("../../../docs/guide/stale-data.md")]
    struct StaleData;
    #[doc = include_str!("../../../docs/guide/local-tier.md")]
    struct LocalTier;
    #[doc = include_str!("../../../docs/guide/failure.md")]
    struct Failure;
    #[doc = include_str!("../../../docs/guide/service.md")]
    struct Service;
    #[doc = include_str!("../../../docs/guide/performance.md")]
    struct Performance;
    #[doc = include_str!("../../../docs/guide/from-python.md")]
    struct FromPython;
}
