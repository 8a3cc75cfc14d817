//! What a request can fail with, and the HTTP answer for each.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::cache::reads::{LoadFailure, ReadError};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such row: 404.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of row.
        what: &'static str,
        /// Its id.
        id: i64,
    },
    /// The request names something that does not exist, or is malformed: 422.
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with existing data (a duplicate e-mail): 409.
    #[error("{0}")]
    Conflict(String),
    /// PostgreSQL failed while writing: 503.
    #[error("database error while {doing}: {source}")]
    Database {
        /// What the request was doing.
        doing: &'static str,
        /// What the database said.
        source: sqlx::Error,
    },
    /// A read's loader failed (PostgreSQL) or timed out: 503.
    #[error("reading {what}: {source}")]
    Read {
        /// What was read.
        what: &'static str,
        /// Why it failed.
        source: ReadError,
    },
    /// An invalidation asked for through the admin endpoint failed: 503.
    #[error("invalidation failed: {0}")]
    Cache(#[from] cacheme::Error),
}

impl ApiError {
    /// `source`, met while `doing`: constraint violations become 409 or 422.
    pub fn database(doing: &'static str, source: sqlx::Error) -> ApiError {
        let code = source
            .as_database_error()
            .and_then(|error| error.code())
            .map(|code| code.into_owned());
        match code.as_deref() {
            Some("23505") => ApiError::Conflict(format!("{doing}: already exists")),
            Some("23503") => ApiError::Invalid(format!("{doing}: the owner does not exist")),
            _ => ApiError::Database { doing, source },
        }
    }

    /// A read of `what` that failed.
    pub fn read(what: &'static str) -> impl FnOnce(ReadError) -> ApiError {
        move |source| ApiError::Read { what, source }
    }

    /// A `#[cacheme]` function's own failure.
    pub fn load(what: &'static str) -> impl FnOnce(LoadFailure) -> ApiError {
        move |failure| ApiError::Read {
            what,
            source: ReadError::Own(failure),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Database { .. } | ApiError::Read { .. } | ApiError::Cache(_) => {
                tracing::error!(error = %self, "request failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}
