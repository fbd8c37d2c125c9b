//! The handlers' error type: each failure is an answer, with its status and a JSON body
//! `{"error": "…"}`. Handlers return `Result<_, AppError>` and use `?`; a database error
//! converts on its own, is logged, and is answered without its details.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tower_twilio::BoxError;

/// Why a request was not served.
#[derive(Debug)]
pub enum AppError {
    /// `400 Bad Request`: what is wrong with the request.
    BadRequest(String),
    /// `404 Not Found`: what was not found.
    NotFound(String),
    /// `409 Conflict`: what this server's configuration does not allow.
    Conflict(&'static str),
    /// `503 Service Unavailable`: the database failed. Logged; the answer does not say how.
    Database(sqlx::Error),
    /// `502 Bad Gateway`: the inspector's test webhook could not be sent.
    SendFailed(BoxError),
    /// `504 Gateway Timeout`: the inspector's test webhook got no answer in time.
    SendTimedOut,
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// The body of every error answer.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
            Self::Conflict(message) => (StatusCode::CONFLICT, message.to_owned()),
            Self::Database(error) => {
                tracing::error!(%error, "the database failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable".to_owned(),
                )
            }
            Self::SendFailed(error) => (
                StatusCode::BAD_GATEWAY,
                format!("sending the test webhook failed: {error}"),
            ),
            Self::SendTimedOut => (
                StatusCode::GATEWAY_TIMEOUT,
                "the test webhook timed out".to_owned(),
            ),
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}
