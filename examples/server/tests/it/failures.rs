//! What the server answers when its database fails: `503` when the database cannot be reached,
//! `500` when a query fails for another reason (a fault of the server); never the database's
//! own text. A status callback that cannot be recorded is answered with the error, logged at
//! `ERROR` and counted, and Twilio's retry of it (`#rp=5xx`) is recorded.

use http::StatusCode;
use tower_twilio_example_server::{
    db::{Location, Timestamp},
    error::AppError,
    routes::STATUS_NOT_RECORDED,
    twilio_presets::{Body, Preset, Signer, sign_request},
};

use crate::support::{
    ACCOUNT, BodyParam, Process, Server, TOKEN, TestDb, execute, on_both_databases, status,
    statuses,
};

/// Makes every insert into `call_history` fail.
fn refuse_call_writes(db: &TestDb) -> &'static [&'static str] {
    match db.location {
        Location::Sqlite(_) => &[
            "CREATE TRIGGER refuse_for_the_test BEFORE INSERT ON call_history
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ],
        Location::Postgres(_) => &[
            "CREATE FUNCTION refuse_for_the_test() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            "CREATE TRIGGER refuse_for_the_test BEFORE INSERT ON call_history
             FOR EACH ROW EXECUTE FUNCTION refuse_for_the_test()",
        ],
    }
}

/// Makes every insert into `message_history` fail, as a database that refuses a write does.
fn refuse_status_writes(db: &TestDb) -> &'static [&'static str] {
    match db.location {
        Location::Sqlite(_) => &[SQLITE_REFUSE],
        Location::Postgres(_) => &[
            "CREATE FUNCTION refuse_for_the_test() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            "CREATE TRIGGER refuse_for_the_test BEFORE INSERT ON message_history
             FOR EACH ROW EXECUTE FUNCTION refuse_for_the_test()",
        ],
    }
}

const SQLITE_REFUSE: &str = "CREATE TRIGGER refuse_for_the_test BEFORE INSERT ON message_history
     BEGIN SELECT RAISE(ABORT, 'refused by the test'); END";

/// Lets `message_history` take inserts again.
fn allow_status_writes(db: &TestDb) -> &'static [&'static str] {
    match db.location {
        Location::Sqlite(_) => &["DROP TRIGGER refuse_for_the_test"],
        Location::Postgres(_) => &["DROP TRIGGER refuse_for_the_test ON message_history"],
    }
}

on_both_databases! {
    /// A status callback whose record cannot be written gets a `500` (not a success Twilio
    /// would take as done), its webhook log row says `failed` with that status, and nothing is
    /// recorded. The replay guard keeps no error answer, so the same signed callback sent
    /// again (Twilio's retry, when the callback URL has `#rp=5xx`) runs the handler and is
    /// recorded, once.
    a_status_callback_that_cannot_be_recorded_fails_and_its_retry_is_recorded;

    /// The same for a call's status callback and a recording's: each is answered `500`, and
    /// its webhook log row says `failed`.
    a_call_or_recording_callback_that_cannot_be_recorded_fails;

    /// A row that does not decode is a fault of the server: `500`, with a message that shows
    /// nothing of the row. A database that cannot be reached is `503`.
    a_query_that_fails_is_500_and_an_unreachable_database_503;

    /// A real refused write, kept as the server keeps it, shows nothing of the row in `Debug`
    /// (PostgreSQL's own error quotes it), and no `Debug` of the server's state shows the
    /// database password.
    debug_shows_no_refused_value_and_no_database_password;
}

async fn a_status_callback_that_cannot_be_recorded_fails_and_its_retry_is_recorded(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    db.execute(refuse_status_writes(&db)).await;
    let callback = server.webhook(&status("delivered"), ACCOUNT, TOKEN, &[]);
    let sid = callback.body_param("MessageSid").unwrap();

    let (code, body, _) = server.send(&callback).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(!body.contains("refused by the test"), "{body}");
    assert_eq!(server.message(&sid).await.0, StatusCode::NOT_FOUND);
    let log = server.webhooks(1).await;
    assert_eq!(log[0]["outcome"], "failed", "{log:?}");
    assert_eq!(log[0]["status_code"], 500);
    assert_eq!(log[0]["message_sid"], sid.as_str());

    db.execute(allow_status_writes(&db)).await;
    let (code, body, _) = server.send(&callback).await;
    assert_eq!(
        code,
        StatusCode::NO_CONTENT,
        "the retry runs the handler: {body}"
    );
    let (code, record) = server.message(&sid).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(statuses(&record), [("delivered".to_owned(), None)]);
    let log = server.webhooks(1).await;
    assert_eq!(log[0]["outcome"], "processed", "{log:?}");
    server.stop().await;
    db.drop_database().await;
}

async fn a_call_or_recording_callback_that_cannot_be_recorded_fails(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    db.execute(refuse_call_writes(&db)).await;
    for (n, preset) in [
        Preset::CallStatus("completed".to_owned()),
        Preset::Recording("completed".to_owned()),
    ]
    .into_iter()
    .enumerate()
    {
        let callback = server.webhook(&preset, ACCOUNT, TOKEN, &[]);
        let (code, body, _) = server.send(&callback).await;
        assert_eq!(
            code,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{preset:?}: {body}"
        );
        assert!(!body.contains("refused by the test"), "{body}");
        let log = server.webhooks(n + 2).await;
        assert_eq!(log.len(), n + 1, "one row a callback: {log:?}");
        assert_eq!(log[0]["outcome"], "failed", "{preset:?}: {log:?}");
        assert_eq!(log[0]["status_code"], 500);
    }
    server.stop().await;
    db.drop_database().await;
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

async fn debug_shows_no_refused_value_and_no_database_password(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    const VALUE: &str = "+14155550100";
    let insert = format!("INSERT INTO tenants (id, name) VALUES ('{VALUE}', 'Refused')");
    db.execute(&[&insert]).await;
    let url = match &db.location {
        Location::Sqlite(path) => format!("sqlite:{}", path.display()),
        Location::Postgres(url) => url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let refused = sqlx::query(&insert).execute(&pool).await.unwrap_err();
    pool.close().await;
    if let Location::Postgres(_) = db.location {
        assert!(
            format!("{refused:?}").contains(VALUE),
            "PostgreSQL's error quotes the row: {refused:?}"
        );
    }
    let kept = format!("{:?}", AppError::from(refused));
    assert!(!kept.contains(VALUE), "{kept}");
    // What failed, and the code: PostgreSQL's unique violation, SQLite's primary key.
    assert!(kept.contains("a unique violation, code "), "{kept}");
    assert!(kept.contains("23505") || kept.contains("1555"), "{kept}");

    if let Location::Postgres(url) = &db.location {
        let password = url::Url::parse(url).unwrap().password().unwrap().to_owned();
        for shown in [
            format!("{:?}", server.db),
            format!("{:?}", server.startup),
            format!("{:?}", db.config()),
        ] {
            assert!(!shown.contains(&format!(":{password}@")), "{shown}");
        }
    }
    server.stop().await;
    db.drop_database().await;
}

/// The server binary: the lost callback is one `ERROR` line that carries the request id (which
/// finds its webhook log row) and none of the callback's values or the database's text, and a
/// count on `/metrics`.
#[tokio::test]
async fn a_status_callback_that_cannot_be_recorded_is_logged_at_error_and_counted() {
    const ADMIN: &str = "admin-failures-5b8d2e7c1a9f3e4d6b0c";
    let server = Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let database = format!("sqlite:{}", server.dir.path().join("webhooks.db").display());
    execute(&database, &[SQLITE_REFUSE]).await;
    let callback = sign_request(
        &format!("http://{}/twilio/status", server.addr),
        Body::Form(Preset::Status("undelivered".to_owned()).params(ACCOUNT)),
        Signer::AuthToken(TOKEN.as_bytes()),
    );
    let sid = callback.body_param("MessageSid").unwrap();
    let answer = server.send(&callback, None).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = answer.headers["x-request-id"].to_str().unwrap();

    let line = server
        .wait_for_log_line(&["a status callback could not be recorded", request_id])
        .await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["level"], "ERROR", "{line}");
    assert_eq!(entry["kind"], "message", "{line}");
    assert_eq!(entry["tenant"], "default", "{line}");
    assert!(
        entry["failure"]
            .as_str()
            .unwrap()
            .starts_with("the database refused the statement (code "),
        "{line}"
    );
    for hidden in [
        sid.as_str(),
        "undelivered",
        "30003",
        "refused by the test",
        "+1415",
    ] {
        assert!(!line.contains(hidden), "{hidden} in {line}");
    }

    let metrics = server
        .call(
            "GET",
            "/metrics",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            "",
        )
        .await;
    let series = format!("{STATUS_NOT_RECORDED}{{kind=\"message\"}} 1");
    assert!(
        metrics.body.lines().any(|line| line == series),
        "{series} in {}",
        metrics.body
    );
    server.stop().await;
}
