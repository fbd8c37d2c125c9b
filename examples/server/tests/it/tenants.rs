//! Tenants are isolated from each other, and a rotation can be finished.

use http::StatusCode;
use serde_json::Value;
use tower_twilio_example_server::{
    db::NewTenant,
    twilio_presets::{Preset, SignedRequest},
};

use crate::support::{Process, Server, TestDb, on_both_databases, status, statuses};

const ACME: &str = "AC0000000000000000000000000000ac3e";
const GLOBEX: &str = "AC000000000000000000000000000b10be";

on_both_databases! {
    /// A tenant's callback never adds to or changes another tenant's message record, not even
    /// through a shared idempotency token; the API shows each tenant's record.
    a_tenant_cannot_touch_another_tenants_message;
}

fn with_idempotency_token(mut signed: SignedRequest, token: &str) -> SignedRequest {
    for (name, value) in &mut signed.headers {
        if name == "i-twilio-idempotency-token" {
            *value = token.to_owned();
        }
    }
    signed
}

fn record<'a>(message: &'a Value, tenant: &str) -> &'a Value {
    message["records"]
        .as_array()
        .unwrap_or_else(|| panic!("records: {message}"))
        .iter()
        .find(|r| r["tenant_id"] == tenant)
        .unwrap_or_else(|| panic!("no record of {tenant}: {message}"))
}

async fn a_tenant_cannot_touch_another_tenants_message(db: TestDb) {
    let store = db.open().await;
    for (id, name, sid, token) in [
        ("acme", "Acme", ACME, "acme-token"),
        ("globex", "Globex", GLOBEX, "globex-token"),
    ] {
        store
            .add_tenant(&NewTenant {
                id,
                name,
                account_sid: sid,
                auth_token: token,
                legacy: false,
            })
            .await
            .unwrap();
    }
    store.close().await;
    let server = Server::start(db.config()).await;
    let sid = "SM5555555555555555555555555555acme";
    let callback = |account: &str, token: &str, value: &str| {
        server.webhook(&status(value), account, token, &[("MessageSid", sid)])
    };
    for value in ["sent", "delivered"] {
        let (code, body, _) = server.send(&callback(ACME, "acme-token", value)).await;
        assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    }
    // Globex signs a callback for Acme's message (its own account, its own token: verified).
    let (code, body, _) = server
        .send(&callback(GLOBEX, "globex-token", "failed"))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    // … and takes an idempotency token before Acme's next delivery uses it.
    let stolen = with_idempotency_token(
        callback(GLOBEX, "globex-token", "undelivered"),
        "idem-shared",
    );
    assert_eq!(server.send(&stolen).await.0, StatusCode::NO_CONTENT);
    let read = with_idempotency_token(callback(ACME, "acme-token", "read"), "idem-shared");
    assert_eq!(server.send(&read).await.0, StatusCode::NO_CONTENT);

    let (code, message) = server.message(sid).await;
    assert_eq!(code, StatusCode::OK, "{message}");
    assert_eq!(message["message_sid"], sid);
    let acme = record(&message, "acme");
    assert_eq!(acme["account_sid"], ACME);
    assert_eq!(acme["status"], "read");
    let names: Vec<String> = statuses(acme).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        names,
        ["sent", "delivered", "read"],
        "Acme's record, untouched by Globex"
    );
    let globex = record(&message, "globex");
    assert_eq!(globex["account_sid"], GLOBEX);
    let names: Vec<String> = statuses(globex).into_iter().map(|(s, _)| s).collect();
    assert_eq!(names, ["failed", "undelivered"]);
    assert_eq!(message["records"].as_array().unwrap().len(), 2);
    server.stop().await;
    db.drop_database().await;
}

/// `tenant rotate` keeps the old token as secondary; `tenant retire-secondary` ends the
/// rotation, after which the old token no longer verifies.
#[tokio::test]
async fn retiring_the_secondary_token_ends_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("webhooks.db");
    let db = db.to_str().unwrap();
    std::fs::write(dir.path().join("old.token"), "old-token\n").unwrap();
    std::fs::write(dir.path().join("new.token"), "new-token\n").unwrap();
    let tenant = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("--database-url")
            .arg(db)
            .arg("tenant")
            .args(args)
            .current_dir(dir.path())
            .env_remove("TWILIO_AUTH_TOKEN")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !text.contains("old-token") && !text.contains("new-token"),
            "{text}"
        );
        (output.status.success(), text)
    };
    let ok = |args: &[&str]| {
        let (success, text) = tenant(args);
        assert!(success, "tenant {args:?}: {text}");
        text
    };
    ok(&[
        "add",
        "--id",
        "acme",
        "--name",
        "Acme",
        "--account-sid",
        ACME,
        "--auth-token-file",
        "old.token",
    ]);
    ok(&["rotate", "--id", "acme", "--auth-token-file", "new.token"]);
    assert!(ok(&["list"]).contains("primary, secondary"));

    let sms = |server: &Process, token: &str| {
        let params = Preset::Sms.params(ACME);
        tower_twilio_example_server::twilio_presets::sign_request(
            &format!("http://{}/twilio/sms", server.addr),
            tower_twilio_example_server::twilio_presets::Body::Form(params),
            tower_twilio_example_server::twilio_presets::Signer::AuthToken(token.as_bytes()),
        )
    };
    let env = [
        ("DATABASE_URL", db),
        ("ADMIN_TOKEN", "admin-token-0123456789"),
    ];
    let server = Process::start(&[], &env).await;
    assert_eq!(
        server.send(&sms(&server, "new-token"), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.send(&sms(&server, "old-token"), None).await.status,
        StatusCode::OK,
        "during the rotation"
    );
    server.stop().await;

    let text = ok(&["retire-secondary", "--id", "acme"]);
    assert!(text.contains("acme"), "{text}");
    let listed = ok(&["list"]);
    assert!(
        listed.contains("primary") && !listed.contains("secondary"),
        "{listed}"
    );
    // Nothing to retire any more, and no such tenant: clear errors.
    let (success, text) = tenant(&["retire-secondary", "--id", "acme"]);
    assert!(!success && text.contains("no secondary"), "{text}");
    let (success, text) = tenant(&["retire-secondary", "--id", "nobody"]);
    assert!(!success && text.contains("nobody"), "{text}");

    let server = Process::start(&[], &env).await;
    assert_eq!(
        server.send(&sms(&server, "new-token"), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.send(&sms(&server, "old-token"), None).await.status,
        StatusCode::FORBIDDEN,
        "the retired token no longer verifies"
    );
    server.stop().await;
}

/// A database written by the previous version (histories keyed by SID alone, no
/// `schema_version`) is upgraded at start: its history is kept, under its tenant.
#[tokio::test]
async fn an_earlier_database_is_upgraded() {
    let db = TestDb::sqlite();
    let tower_twilio_example_server::db::Location::Sqlite(path) = &db.location else {
        unreachable!()
    };
    sqlx::any::install_default_drivers();
    let old = sqlx::AnyPool::connect(&format!("sqlite:{}?mode=rwc", path.display()))
        .await
        .unwrap();
    for statement in [
        "CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, account_sid TEXT UNIQUE, auth_token TEXT)",
        "CREATE TABLE webhook_log (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, query TEXT,
            user_agent TEXT, outcome TEXT NOT NULL, rejection_reason TEXT, tenant_id TEXT,
            account_sid TEXT, message_sid TEXT, message_status TEXT, credential TEXT, status_code BIGINT)",
        "CREATE TABLE message_status (id INTEGER PRIMARY KEY AUTOINCREMENT, message_sid TEXT NOT NULL,
            status TEXT NOT NULL, error_code TEXT, tenant_id TEXT, account_sid TEXT,
            idempotency_token TEXT UNIQUE, received_at_ms BIGINT NOT NULL)",
        "INSERT INTO tenants VALUES ('acme', 'Acme', 'AC0000000000000000000000000000ac3e', 'acme-token')",
        "INSERT INTO message_status (message_sid, status, tenant_id, account_sid, received_at_ms)
            VALUES ('SMold', 'sent', 'acme', 'AC0000000000000000000000000000ac3e', 1796000000000),
                   ('SMold', 'delivered', 'acme', 'AC0000000000000000000000000000ac3e', 1796000000001)",
    ] {
        sqlx::query(statement).execute(&old).await.unwrap();
    }
    old.close().await;

    let server = Server::start(db.config()).await;
    let (code, message) = server.message("SMold").await;
    assert_eq!(code, StatusCode::OK, "{message}");
    let acme = record(&message, "acme");
    let names: Vec<String> = statuses(acme).into_iter().map(|(s, _)| s).collect();
    assert_eq!(names, ["sent", "delivered"]);
    let legacy = server.webhook(&Preset::Sms, ACME, "acme-token", &[]);
    assert_eq!(server.send(&legacy).await.0, StatusCode::OK);
    server.stop().await;
}

on_both_databases! {
    /// A database made by the server of the previous schema (its changes counted in
    /// `schema_version`, all six made) is upgraded at start: its tenants, log and histories
    /// are kept, and the next start finds it current.
    a_database_at_schema_version_6_is_upgraded;
    /// The same for a database three changes in: the three changes it lacks are made, its
    /// history carried over.
    a_database_at_schema_version_3_is_upgraded;
}

async fn a_database_at_schema_version_6_is_upgraded(db: TestDb) {
    a_database_at_schema_version_is_upgraded(db, 6).await;
}

async fn a_database_at_schema_version_3_is_upgraded(db: TestDb) {
    a_database_at_schema_version_is_upgraded(db, 3).await;
}

/// Writes the schema the server made at `version` (3 or 6) by hand, with a legacy tenant, a
/// message history and a log row; starts the server on it twice.
async fn a_database_at_schema_version_is_upgraded(db: TestDb, version: i64) {
    use tower_twilio_example_server::db::Location;

    let (url, id) = match &db.location {
        Location::Sqlite(path) => (
            format!("sqlite:{}?mode=rwc", path.display()),
            "INTEGER PRIMARY KEY AUTOINCREMENT",
        ),
        Location::Postgres(url) => (
            url.clone(),
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        ),
    };
    // The idempotency token and its uniqueness were dropped from the histories at version 4.
    let token = if version < 4 {
        ", idempotency_token TEXT, UNIQUE (tenant_id, idempotency_token)"
    } else {
        ""
    };
    let mut statements = vec![
        "CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, account_sid TEXT UNIQUE,
            auth_token TEXT)"
            .to_owned(),
        "CREATE TABLE tenant_settings (tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
            account_sid TEXT NOT NULL UNIQUE, primary_auth_token TEXT NOT NULL,
            secondary_auth_token TEXT)"
            .to_owned(),
        "CREATE TABLE shared_keys (key_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL
            REFERENCES tenants (id), secret TEXT NOT NULL, algorithm TEXT NOT NULL)"
            .to_owned(),
        format!(
            "CREATE TABLE webhook_log (id {id}, received_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, query TEXT,
            user_agent TEXT, outcome TEXT NOT NULL, rejection_reason TEXT, tenant_id TEXT,
            account_sid TEXT, message_sid TEXT, message_status TEXT, credential TEXT,
            status_code BIGINT, client_ip TEXT, request_id TEXT, call_sid TEXT, call_status TEXT,
            recording_status TEXT, diagnosis_url TEXT, diagnosis_fix TEXT)"
        ),
        "CREATE INDEX webhook_log_by_time ON webhook_log (received_at_ms)".to_owned(),
        format!(
            "CREATE TABLE message_history (id {id}, tenant_id TEXT NOT NULL,
            message_sid TEXT NOT NULL, status TEXT NOT NULL, error_code TEXT, account_sid TEXT,
            received_at_ms BIGINT NOT NULL{token})"
        ),
        "CREATE INDEX message_history_by_sid ON message_history (message_sid, tenant_id, id)"
            .to_owned(),
        format!(
            "CREATE TABLE call_history (id {id}, tenant_id TEXT NOT NULL, call_sid TEXT NOT NULL,
            kind TEXT NOT NULL, status TEXT NOT NULL, recording_sid TEXT, duration TEXT,
            error_code TEXT, account_sid TEXT, received_at_ms BIGINT NOT NULL{token})"
        ),
        "CREATE INDEX call_history_by_sid ON call_history (call_sid, tenant_id, id)".to_owned(),
        "CREATE TABLE schema_version (version BIGINT NOT NULL)".to_owned(),
        format!("INSERT INTO tenants VALUES ('acme', 'Acme', '{ACME}', 'acme-token')"),
        format!(
            "INSERT INTO message_history (tenant_id, message_sid, status, account_sid,
                received_at_ms)
            VALUES ('acme', 'SMold', 'sent', '{ACME}', 1796000000000),
                   ('acme', 'SMold', 'delivered', '{ACME}', 1796000000001)"
        ),
        "INSERT INTO webhook_log (received_at_ms, updated_at_ms, method, path, outcome,
            tenant_id, status_code)
        VALUES (1796000000002, 1796000000002, 'POST', '/twilio/status', 'processed', 'acme', 204)"
            .to_owned(),
        // A copy, under the name it was logged with before version 7.
        "INSERT INTO webhook_log (received_at_ms, updated_at_ms, method, path, outcome,
            tenant_id)
        VALUES (1796000000003, 1796000000003, 'POST', '/twilio/status', 'duplicate', 'acme')"
            .to_owned(),
    ];
    if version >= 5 {
        statements.push("CREATE TABLE credential_changes (version BIGINT NOT NULL)".to_owned());
        statements.push("INSERT INTO credential_changes (version) VALUES (0)".to_owned());
    }
    if version >= 6 {
        statements.push("ALTER TABLE webhook_log ADD COLUMN replay_key TEXT".to_owned());
        statements
            .push("CREATE INDEX webhook_log_by_replay_key ON webhook_log (replay_key)".to_owned());
    }
    for applied in 1..=version {
        statements.push(format!(
            "INSERT INTO schema_version (version) VALUES ({applied})"
        ));
    }
    sqlx::any::install_default_drivers();
    let old = sqlx::AnyPool::connect(&url).await.unwrap();
    for statement in &statements {
        sqlx::query(statement)
            .execute(&old)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    old.close().await;

    for start in ["upgraded", "current"] {
        let server = Server::start(db.config()).await;
        let (code, message) = server.message("SMold").await;
        assert_eq!(code, StatusCode::OK, "{start}: {message}");
        let names: Vec<String> = statuses(record(&message, "acme"))
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(names, ["sent", "delivered"], "{start}");
        let legacy = server.webhook(&Preset::Sms, ACME, "acme-token", &[]);
        assert_eq!(server.send(&legacy).await.0, StatusCode::OK, "{start}");
        let log = server.webhooks(10).await;
        assert!(
            log.iter()
                .any(|row| row["path"] == "/twilio/status" && row["status_code"] == 204),
            "{start}: the old log row is kept: {log:#?}"
        );
        let mut old_rows: Vec<_> = log
            .iter()
            .filter(|row| row["path"] == "/twilio/status")
            .map(|row| row["outcome"].as_str())
            .collect();
        old_rows.sort_unstable();
        assert_eq!(
            old_rows,
            [Some("copy"), Some("processed")],
            "{start}: the old copy is renamed: {log:#?}"
        );
        server.stop().await;
    }
    db.drop_database().await;
}
