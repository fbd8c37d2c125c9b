//! The handlers' error type: each failure is an answer, with its status and a JSON body
//! `{"error": "…"}`. Handlers return `Result<_, AppError>` and use `?`; a database error
//! converts on its own, is logged, and is answered without its details.
//!
//! A database error is kept only as a [`DbFailure`]: whether the database could not be reached
//! (`503`) or the statement failed (`500`: a bug, such as a column that does not decode), and
//! what failed, in words that name no value. The driver's own text never goes further (into
//! `Debug`, the log or an answer): a PostgreSQL error's detail quotes the row it refused (a
//! phone number, a message), and a decode error the value it could not read.

use std::{borrow::Cow, fmt};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sqlx::error::ErrorKind;
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
    /// `503 Service Unavailable` when the database could not be reached, else `500 Internal
    /// Server Error`. Logged when it is made; the answer does not say how it failed.
    Database(DbFailure),
    /// `502 Bad Gateway`: the inspector's test webhook could not be sent.
    SendFailed(BoxError),
    /// `504 Gateway Timeout`: the inspector's test webhook got no answer in time.
    SendTimedOut,
}

/// Logs the failure (at `ERROR`, without the driver's text) and keeps only the [`DbFailure`].
impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        let failure = DbFailure::from(&error);
        tracing::error!(%failure, "the database failed");
        Self::Database(failure)
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
            Self::Database(failure) if failure.unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable".to_owned(),
            ),
            Self::Database(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "a database query failed: a fault of this server, described in its log".to_owned(),
            ),
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

/// A database call's failure as this server tells it (see the module docs): never the driver's
/// message, a value, a URL or a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbFailure {
    /// The database could not serve the call now: a connection, the pool, a lock, a shutdown,
    /// a full disk. Any other failure is the server's fault (a statement the database refused,
    /// a column that does not decode).
    pub unavailable: bool,
    /// What failed: the kind of error, and for a statement the database refused its code and
    /// the constraint or table it names.
    pub what: Cow<'static, str>,
}

impl From<&sqlx::Error> for DbFailure {
    fn from(error: &sqlx::Error) -> Self {
        use sqlx::Error as E;
        let (unavailable, what): (bool, Cow<'static, str>) = match error {
            E::Io(error) => (
                true,
                format!("the connection failed: {}", error.kind()).into(),
            ),
            E::Tls(_) => (true, "TLS with the database failed".into()),
            E::PoolTimedOut => (true, "no database connection was free in time".into()),
            E::PoolClosed => (true, "the connection pool is closed".into()),
            E::WorkerCrashed => (true, "the database connection's worker stopped".into()),
            E::Protocol(_) => (true, "the database connection broke".into()),
            E::Database(db) => {
                let code = db.code();
                let kind = match db.kind() {
                    ErrorKind::UniqueViolation => "a unique violation, ",
                    ErrorKind::ForeignKeyViolation => "a foreign key violation, ",
                    ErrorKind::NotNullViolation => "a not-null violation, ",
                    ErrorKind::CheckViolation => "a check violation, ",
                    _ => "",
                };
                let mut what = format!(
                    "the database refused the statement ({kind}code {})",
                    code.as_deref().unwrap_or("none")
                );
                for (name, value) in [("constraint", db.constraint()), ("table", db.table())] {
                    if let Some(value) = value {
                        what = format!("{what}, {name} {value}");
                    }
                }
                (
                    code.as_deref().is_some_and(is_unavailable_code),
                    what.into(),
                )
            }
            E::ColumnDecode { index, .. } => {
                (false, format!("column {index} did not decode").into())
            }
            E::Decode(_) => (false, "a value did not decode".into()),
            E::ColumnNotFound(name) => (false, format!("no column {name}").into()),
            E::ColumnIndexOutOfBounds { index, len } => {
                (false, format!("no column {index} in a row of {len}").into())
            }
            E::TypeNotFound { type_name } => (false, format!("no type {type_name}").into()),
            E::RowNotFound => (false, "no row was found".into()),
            E::Encode(_) => (false, "a value could not be encoded".into()),
            E::Configuration(_) => (false, "the database configuration is invalid".into()),
            E::Migrate(_) => (false, "a migration failed".into()),
            _ => (false, "the database call failed".into()),
        };
        Self { unavailable, what }
    }
}

/// A failed lookup as the credential resolver reports it (through `?`, as a `BoxError`).
impl From<sqlx::Error> for DbFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::from(&error)
    }
}

/// Whether a database error code says the database could not serve the statement now, rather
/// than that the statement was wrong. A PostgreSQL SQLSTATE has five characters: connection
/// exceptions (class `08`), a serialization failure or deadlock (`40`), insufficient resources
/// such as a full disk or too many connections (`53`), operator intervention such as a
/// shutdown (`57`), system errors (`58`). SQLite's codes are numbers (extended codes, whose low
/// byte is the primary code): busy (5), locked (6), out of memory (7), an I/O error (10), full
/// (13), cannot open (14).
fn is_unavailable_code(code: &str) -> bool {
    if code.len() == 5 {
        return matches!(&code[..2], "08" | "40" | "53" | "57" | "58");
    }
    code.parse::<u32>()
        .is_ok_and(|extended| matches!(extended & 0xff, 5 | 6 | 7 | 10 | 13 | 14))
}

impl fmt::Display for DbFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for DbFailure {}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use sqlx::error::DatabaseError;

    use super::*;

    /// A database error as PostgreSQL reports a refused row: a value in its message and detail.
    #[derive(Debug)]
    struct Refused {
        code: &'static str,
    }

    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.message())
        }
    }

    impl std::error::Error for Refused {}

    impl DatabaseError for Refused {
        fn message(&self) -> &str {
            "invalid input syntax: \"+14155550100\" (Failing row contains (+14155550100, Hi))"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(self.code.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn constraint(&self) -> Option<&str> {
            Some("message_history_check")
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn refused(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Refused { code }))
    }

    async fn answer(error: sqlx::Error) -> (StatusCode, String) {
        let response = AppError::from(error).into_response();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn an_unreachable_database_is_503_and_a_failed_statement_500() {
        let unavailable = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
            sqlx::Error::Protocol("unexpected message".into()),
            refused("08006"),
            refused("57P01"),
            refused("53100"),
            refused("40P01"),
            // SQLite: busy, a busy recovery (extended), locked, an I/O error.
            refused("5"),
            refused("261"),
            refused("6"),
            refused("3338"),
        ];
        let failed = [
            sqlx::Error::ColumnDecode {
                index: "outcome".into(),
                source: "\"+14155550100\" is not a webhook outcome".into(),
            },
            sqlx::Error::Decode("bad".into()),
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("nope".into()),
            // PostgreSQL: unique, check and syntax; SQLite: a constraint (a trigger's RAISE),
            // a generic error (no such table).
            refused("23505"),
            refused("23514"),
            refused("42601"),
            refused("1811"),
            refused("1"),
        ];
        let cases = unavailable
            .into_iter()
            .map(|error| (error, StatusCode::SERVICE_UNAVAILABLE))
            .chain(
                failed
                    .into_iter()
                    .map(|error| (error, StatusCode::INTERNAL_SERVER_ERROR)),
            );
        for (error, expected) in cases {
            let shown = error.to_string();
            let (status, body) = answer(error).await;
            assert_eq!(status, expected, "{shown}");
            // The same words for every failure of a kind: nothing of the error itself.
            let said = if expected == StatusCode::SERVICE_UNAVAILABLE {
                "the database is unavailable"
            } else {
                "a database query failed: a fault of this server, described in its log"
            };
            assert_eq!(body, serde_json::json!({ "error": said }).to_string());
        }
    }

    #[test]
    fn neither_debug_nor_display_shows_the_drivers_text() {
        let errors = [
            refused("23514"),
            sqlx::Error::ColumnDecode {
                index: "status".into(),
                source: "\"+14155550100\" is not valid".into(),
            },
            sqlx::Error::Configuration(
                "postgres://app:hunter2@db.example.com/app is not valid".into(),
            ),
            sqlx::Error::Protocol("+14155550100".into()),
        ];
        for error in errors {
            let failure = DbFailure::from(&error);
            let app = AppError::Database(failure.clone());
            for shown in [
                format!("{app:?}"),
                format!("{failure}"),
                format!("{failure:?}"),
            ] {
                for secret in ["14155550100", "hunter2", "db.example.com", "Failing row"] {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
            }
        }
        assert_eq!(
            DbFailure::from(&refused("23514")).what,
            "the database refused the statement (code 23514), constraint message_history_check"
        );
        assert_eq!(
            DbFailure::from(&sqlx::Error::ColumnDecode {
                index: "\"outcome\"".into(),
                source: "x".into(),
            })
            .to_string(),
            "column \"outcome\" did not decode"
        );
    }
}
