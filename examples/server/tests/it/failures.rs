//! What the server answers when its database fails: `503` when the database cannot be reached,
//! `500` when a query fails for another reason (a fault of the server); never the database's
//! own text.

use http::StatusCode;
use tower_twilio_example_server::db::Timestamp;

use crate::support::{Server, TestDb, on_both_databases};

on_both_databases! {
    /// A row that does not decode is a fault of the server: `500`, with a message that shows
    /// nothing of the row. A database that cannot be reached is `503`.
    a_query_that_fails_is_500_and_an_unreachable_database_503;
}

async fn a_query_that_fails_is_500_and_an_unreachable_database_503(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let now = Timestamp::now().millis();
    db.execute(&[&format!(
        "INSERT INTO webhook_log (received_at_ms, updated_at_ms, method, path, outcome)
         VALUES ({now}, {now}, 'POST', '/twilio/sms', 'not-an-outcome')"
    )])
    .await;
    let (code, body) = server.get("/api/webhooks").await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        body,
        r#"{"error":"a database query failed: a fault of this server, described in its log"}"#
    );

    // The server's pool, closed under it: nothing reaches the database any more.
    server.db.close().await;
    let (code, body) = server.get("/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, r#"{"error":"the database is unavailable"}"#);
    let (code, _) = server.get("/api/webhooks").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    // Not stopped: its log writer could not write its last entries, and would retry for the
    // whole drain deadline. Dropped with the test.
    drop(server);
    db.drop_database().await;
}
