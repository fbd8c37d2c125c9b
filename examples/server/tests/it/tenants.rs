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
