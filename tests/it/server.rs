//! The example server (`examples/server`), started in-process on `127.0.0.1:0` with a temporary
//! SQLite file, and with a fresh PostgreSQL database when `TWILIO_TEST_POSTGRES_URL` is set
//! (`.ci/run` starts one). Each scenario runs against both; requests are built and signed by
//! the same code as `examples/send_webhook.rs`.
//!
//! Every network step is bounded by [`LIMIT`]; nothing is timed.

// The server's command line uses parts of it these tests do not.
#[allow(dead_code)]
#[path = "../../examples/server/app.rs"]
mod app;

use std::{future::Future, io::Write as _, net::SocketAddr, sync::Once, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_twilio::{BoxError, signature::Algorithm};

use app::{
    Config, Startup,
    db::{Db, Location, NewTenant},
    twilio_presets,
    webhook_log::LogSender,
};
use twilio_presets::{Body, Preset, SignedRequest, Signer, apply_overrides, sign_request};

/// The longest any one step (start, request, shutdown) may take.
const LIMIT: Duration = Duration::from_secs(30);

const ACCOUNT: &str = "AC11111111111111111111111111111111";
const TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {LIMIT:?}"))
}

// ---- databases -------------------------------------------------------------------------------

/// A database of its own for one test, and a directory for the demo token file.
struct TestDb {
    location: Location,
    dir: tempfile::TempDir,
    /// For dropping the PostgreSQL database at the end: (admin URL, database name).
    postgres: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks.db");
        Self {
            location: Location::parse(path.to_str().unwrap()).unwrap(),
            dir,
            postgres: None,
        }
    }

    /// A fresh database on the server `TWILIO_TEST_POSTGRES_URL` names, or `None` (and a line
    /// on standard error, once) when it is not set.
    async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("TWILIO_TEST_POSTGRES_URL") else {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                // Written past the test harness's capture, so that it shows in a normal run.
                let _ = writeln!(
                    std::io::stderr(),
                    "server tests: skipping PostgreSQL (TWILIO_TEST_POSTGRES_URL is not set); SQLite only"
                );
            });
            return None;
        };
        sqlx::any::install_default_drivers();
        let name = format!("tower_twilio_test_{}", twilio_presets::random_hex(6));
        let admin = sqlx::AnyPool::connect(&admin_url)
            .await
            .expect("connect to TWILIO_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create a test database (the user needs CREATEDB)");
        admin.close().await;
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Some(Self {
            location: Location::parse(url.as_str()).unwrap(),
            dir: tempfile::tempdir().unwrap(),
            postgres: Some((admin_url, name)),
        })
    }

    fn config(&self) -> Config {
        let mut config = Config::new(self.location.clone());
        config.demo_token_file = self.dir.path().join(".twilio-demo-token");
        config
    }

    fn config_with_account(&self) -> Config {
        let mut config = self.config();
        config.account = Some((ACCOUNT.to_owned(), TOKEN.to_owned()));
        config
    }

    async fn open(&self) -> Db {
        Db::open(&self.location).await.unwrap()
    }

    async fn drop_database(self) {
        if let Some((admin_url, name)) = self.postgres
            && let Ok(admin) = sqlx::AnyPool::connect(&admin_url).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }
}

/// Runs `scenario` against SQLite and against PostgreSQL (when configured).
macro_rules! on_both_databases {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::TestDb::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::TestDb::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    )*};
}

on_both_databases! {
    /// A signed SMS gets a TwiML echo with the tenant's name; a call gets TwiML `<Say>`.
    signed_sms_and_call_get_twiml;
    /// Status callbacks are recorded per message in order, unknown values included.
    status_callbacks_make_an_ordered_history;
    /// Forged and unsigned webhooks get 403 and are logged as rejected, with the reason.
    forged_webhooks_are_refused_and_logged;
    /// The webhook-log API: limit, newest first, outcomes, handler status codes, bad limits.
    the_webhook_log_api_shows_every_outcome;
    /// Demo mode: a demo tenant, a 0600 token file, and a webhook signed with it works.
    demo_mode_works_end_to_end;
    /// Stopping and starting again on the same database keeps tenants, log and history, and
    /// the log was fully written before the stop.
    a_restart_keeps_everything;
    /// `tenant_settings` wins over the legacy `tenants` table, which is asked only for accounts
    /// the first does not know; rotation keeps the old token valid; SharedKeys work.
    credentials_come_from_the_preferred_then_the_legacy_source;
}

// ---- the server ------------------------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    startup: Startup,
    log: LogSender,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), BoxError>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Server {
    async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (router, handles) = bounded("start", app::build(config, addr)).await.unwrap();
        let startup = handles.startup.clone();
        let log = handles.log.clone();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(app::serve(listener, router, handles, async move {
            let _ = stop.await;
        }));
        Self {
            addr,
            startup,
            log,
            shutdown,
            task,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Graceful shutdown: in-flight requests finish, the webhook log is drained.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        bounded("shutdown", self.task).await.unwrap().unwrap();
    }

    /// The public base URL (no proxy: the server's own address).
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A form webhook for `preset`, with `overrides`, signed with `token`.
    fn webhook(
        &self,
        preset: &Preset,
        account: &str,
        token: &str,
        overrides: &[(&str, &str)],
    ) -> SignedRequest {
        let mut params = preset.params(account);
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        apply_overrides(&mut params, &overrides);
        sign_request(
            &format!("{}{}", self.base(), preset.path()),
            Body::Form(params),
            Signer::AuthToken(token.as_bytes()),
        )
    }

    async fn send(&self, signed: &SignedRequest) -> (StatusCode, String, Option<String>) {
        let mut request = Request::builder().method(signed.method).uri(format!(
            "http://{}{}",
            self.addr,
            signed.path_and_query()
        ));
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(signed.body.clone())))
            .unwrap();
        self.request(request).await
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(format!("http://{}{path}", self.addr))
            .body(Full::default())
            .unwrap();
        let (status, body, _) = self.request(request).await;
        (status, body)
    }

    async fn request(&self, request: Request<Full<Bytes>>) -> (StatusCode, String, Option<String>) {
        bounded("request", async {
            let response = self.client.request(request).await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                String::from_utf8(body.to_vec()).unwrap(),
                content_type,
            )
        })
        .await
    }

    /// `GET /api/webhooks?limit=…` once the log has caught up.
    async fn webhooks(&self, limit: usize) -> Vec<Value> {
        bounded("log flush", self.log.flush()).await;
        let (status, body) = self.get(&format!("/api/webhooks?limit={limit}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    async fn message(&self, sid: &str) -> (StatusCode, Value) {
        let (status, body) = self.get(&format!("/api/messages/{sid}")).await;
        (status, serde_json::from_str(&body).unwrap())
    }
}

fn statuses(history: &Value) -> Vec<(String, Option<String>)> {
    history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["status"].as_str().unwrap().to_owned(),
                s["error_code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn status(preset_status: &str) -> Preset {
    Preset::Status(preset_status.to_owned())
}

// ---- scenarios -------------------------------------------------------------------------------

async fn signed_sms_and_call_get_twiml(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    assert_eq!(server.startup.env_tenant.as_deref(), Some("default"));
    assert!(
        server.startup.demo.is_none(),
        "an account is configured: no demo tenant"
    );
    assert_eq!(server.startup.public_base.as_deref(), Some(&*server.base()));

    let sms = server.webhook(
        &Preset::Sms,
        ACCOUNT,
        TOKEN,
        &[("Body", "1 < 2 & \"3\" 👋")],
    );
    let (status, body, content_type) = server.send(&sms).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type.as_deref(), Some("text/xml; charset=utf-8"));
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>Default tenant \
         (TWILIO_ACCOUNT_SID) received your message: 1 &lt; 2 &amp; &quot;3&quot; 👋\
         </Message></Response>"
    );

    let call = server.webhook(&Preset::Voice, ACCOUNT, TOKEN, &[]);
    let (status, body, _) = server.send(&call).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("<Response><Say>Hello from Default tenant (TWILIO_ACCOUNT_SID)."),
        "{body}"
    );

    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

    let log = server.webhooks(10).await;
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0]["path"], "/twilio/voice");
    assert_eq!(log[1]["path"], "/twilio/sms");
    assert_eq!(log[1]["outcome"], "processed");
    assert_eq!(
        log[1]["message_sid"].as_str(),
        sms.body_param("MessageSid").as_deref()
    );
    assert_eq!(log[1]["message_status"], "received");
    assert_eq!(log[1]["tenant_id"], "default");
    server.stop().await;
    db.drop_database().await;
}

async fn status_callbacks_make_an_ordered_history(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let sid = "SM22222222222222222222222222222222";
    for value in ["sent", "delivered", "read", "weird_status"] {
        let callback = server.webhook(&status(value), ACCOUNT, TOKEN, &[("MessageSid", sid)]);
        let (code, body, _) = server.send(&callback).await;
        assert_eq!(code, StatusCode::NO_CONTENT, "{value}: {body}");
    }
    let (code, history) = server.message(sid).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(history["message_sid"], sid);
    assert_eq!(history["status"], "weird_status");
    assert_eq!(history["account_sid"], ACCOUNT);
    assert_eq!(
        statuses(&history),
        [
            ("sent".to_owned(), None),
            ("delivered".to_owned(), None),
            ("read".to_owned(), None),
            ("weird_status".to_owned(), None),
        ]
    );

    // Every documented value is kept as it is, with its ErrorCode; a retried delivery (same
    // idempotency token) counts once.
    let other = "SM33333333333333333333333333333333";
    for value in twilio_presets::MESSAGE_STATUSES {
        let callback = server.webhook(&status(value), ACCOUNT, TOKEN, &[("MessageSid", other)]);
        assert_eq!(
            server.send(&callback).await.0,
            StatusCode::NO_CONTENT,
            "{value}"
        );
        if *value == "undelivered" {
            assert_eq!(
                server.send(&callback).await.0,
                StatusCode::NO_CONTENT,
                "retry"
            );
        }
    }
    let (_, history) = server.message(other).await;
    let recorded = statuses(&history);
    let names: Vec<&str> = recorded.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, twilio_presets::MESSAGE_STATUSES);
    assert_eq!(
        recorded[4],
        ("undelivered".to_owned(), Some("30003".to_owned()))
    );
    assert_eq!(recorded[5], ("failed".to_owned(), Some("30008".to_owned())));

    // A JSON body, verified through bodySHA256, is read the same way.
    let json =
        format!(r#"{{"AccountSid":"{ACCOUNT}","MessageSid":"{sid}","MessageStatus":"delivered"}}"#);
    let callback = sign_request(
        &format!("{}/twilio/status", server.base()),
        Body::Raw {
            content_type: "application/json".to_owned(),
            bytes: json.into_bytes(),
        },
        Signer::AuthToken(TOKEN.as_bytes()),
    );
    assert!(callback.url.contains("?bodySHA256="), "{}", callback.url);
    let (code, body, _) = server.send(&callback).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let (_, history) = server.message(sid).await;
    assert_eq!(statuses(&history).last().unwrap().0, "delivered");

    // A callback without a status is the handler's 400, not a rejection.
    let mut incomplete = server.webhook(&status("sent"), ACCOUNT, TOKEN, &[]);
    incomplete = resign_without(&server, &incomplete, &["MessageStatus", "SmsStatus"]);
    assert_eq!(server.send(&incomplete).await.0, StatusCode::BAD_REQUEST);

    let (code, error) = server.message("SM_not_a_message").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("SM_not_a_message"),
        "{error}"
    );
    server.stop().await;
    db.drop_database().await;
}

/// `signed` again, without the parameters `names`.
fn resign_without(server: &Server, signed: &SignedRequest, names: &[&str]) -> SignedRequest {
    let params: Vec<(String, String)> = form_urlencoded::parse(&signed.body)
        .filter(|(k, _)| !names.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    sign_request(
        &format!("{}/twilio/status", server.base()),
        Body::Form(params),
        Signer::AuthToken(TOKEN.as_bytes()),
    )
}

trait BodyParam {
    fn body_param(&self, name: &str) -> Option<String>;
}

impl BodyParam for SignedRequest {
    fn body_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

async fn forged_webhooks_are_refused_and_logged(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;

    // Signed with the wrong token.
    let wrong = server.webhook(&Preset::Sms, ACCOUNT, "not-the-token", &[]);
    let (code, body, _) = server.send(&wrong).await;
    assert_eq!((code, body.as_str()), (StatusCode::FORBIDDEN, "Forbidden"));

    // Signed correctly, then the body changed.
    let mut tampered = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[("Body", "pay 10")]);
    tampered.body = String::from_utf8(tampered.body)
        .unwrap()
        .replace("10", "99")
        .into_bytes();
    assert_eq!(server.send(&tampered).await.0, StatusCode::FORBIDDEN);

    // No signature at all.
    let mut unsigned = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[]);
    unsigned
        .headers
        .retain(|(name, _)| name != "x-twilio-signature");
    assert_eq!(server.send(&unsigned).await.0, StatusCode::FORBIDDEN);

    // An account nobody knows.
    let stranger = server.webhook(
        &Preset::Sms,
        "AC99999999999999999999999999999999",
        TOKEN,
        &[],
    );
    assert_eq!(server.send(&stranger).await.0, StatusCode::FORBIDDEN);

    let log = server.webhooks(10).await;
    let seen: Vec<(&str, &str, Option<&str>)> = log
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                e["rejection_reason"].as_str().unwrap(),
                e["account_sid"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "rejected",
                "unknown_account",
                Some("AC99999999999999999999999999999999")
            ),
            ("rejected", "missing_signature", None),
            ("rejected", "signature_mismatch", Some(ACCOUNT)),
            ("rejected", "signature_mismatch", Some(ACCOUNT)),
        ]
    );
    assert_eq!(
        log[2]["tenant_id"], "default",
        "the tenant whose secret did not match"
    );
    for entry in &log {
        assert!(entry["status_code"].is_null(), "{entry}");
        assert!(
            entry["message_sid"].is_null(),
            "unverified parameters are not logged: {entry}"
        );
        assert!(!entry.to_string().contains(TOKEN));
    }
    server.stop().await;
    db.drop_database().await;
}

async fn the_webhook_log_api_shows_every_outcome(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let sms = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[]);
    assert_eq!(server.send(&sms).await.0, StatusCode::OK);
    let forged = server.webhook(&Preset::Sms, ACCOUNT, "forged", &[]);
    assert_eq!(server.send(&forged).await.0, StatusCode::FORBIDDEN);
    let callback = server.webhook(&status("delivered"), ACCOUNT, TOKEN, &[]);
    assert_eq!(server.send(&callback).await.0, StatusCode::NO_CONTENT);
    let incomplete = resign_without(&server, &callback, &["MessageSid", "SmsSid"]);
    assert_eq!(server.send(&incomplete).await.0, StatusCode::BAD_REQUEST);

    let log = server.webhooks(100).await;
    let ids: Vec<i64> = log.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let outcomes: Vec<(&str, Option<i64>)> = log
        .iter()
        .map(|e| (e["outcome"].as_str().unwrap(), e["status_code"].as_i64()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("failed", Some(400)),
            ("processed", Some(204)),
            ("rejected", None),
            ("processed", Some(200)),
        ]
    );
    let delivered = &log[1];
    assert_eq!(
        delivered["message_sid"].as_str(),
        callback.body_param("MessageSid").as_deref()
    );
    assert_eq!(delivered["message_status"], "delivered");
    assert_eq!(delivered["credential"], "primary");
    assert_eq!(delivered["method"], "POST");
    assert_eq!(delivered["path"], "/twilio/status");
    let received_at = delivered["received_at"].as_str().unwrap();
    assert!(
        received_at.len() == 24 && received_at.ends_with('Z'),
        "{received_at}"
    );

    let newest_two = server.webhooks(2).await;
    assert_eq!(newest_two, log[..2]);
    assert_eq!(
        server.webhooks(1_000_000).await.len(),
        4,
        "clamped, not refused"
    );
    for bad in ["abc", "0", "-1", "1.5"] {
        let (code, body) = server.get(&format!("/api/webhooks?limit={bad}")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "limit={bad}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .starts_with("limit must be"),
            "{body}"
        );
    }
    let (code, body) = server.get("/api/webhooks").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    server.stop().await;
    db.drop_database().await;
}

async fn demo_mode_works_end_to_end(db: TestDb) {
    let server = Server::start(db.config()).await;
    let demo = server
        .startup
        .demo
        .clone()
        .expect("no account, no tenants: demo mode");
    assert!(demo.created);
    assert_eq!(server.startup.tenants, 1);
    assert_eq!(demo.token_file, db.dir.path().join(".twilio-demo-token"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&demo.token_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is the owner's only");
    }
    let token = std::fs::read_to_string(&demo.token_file).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 32);

    let sms = server.webhook(&Preset::Sms, &demo.account_sid, token, &[("Body", "hi")]);
    let (code, body, _) = server.send(&sms).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body.contains("<Message>Demo tenant received your message: hi</Message>"),
        "{body}"
    );
    let wrong = server.webhook(&Preset::Sms, &demo.account_sid, "wrong-token", &[]);
    assert_eq!(server.send(&wrong).await.0, StatusCode::FORBIDDEN);

    let log = server.webhooks(10).await;
    assert_eq!(log[0]["outcome"], "rejected");
    assert_eq!(log[1]["outcome"], "processed");
    assert_eq!(log[1]["tenant_id"], "demo");
    server.stop().await;

    // Started again: the same demo tenant, not a new one.
    let again = Server::start(db.config()).await;
    let demo_again = again.startup.demo.clone().unwrap();
    assert!(!demo_again.created);
    assert_eq!(demo_again.account_sid, demo.account_sid);
    let sms = again.webhook(&Preset::Sms, &demo.account_sid, token, &[]);
    assert_eq!(again.send(&sms).await.0, StatusCode::OK);
    again.stop().await;
    db.drop_database().await;
}

async fn a_restart_keeps_everything(db: TestDb) {
    let sid = "SM44444444444444444444444444444444";
    let server = Server::start(db.config_with_account()).await;
    for value in ["sent", "delivered"] {
        let callback = server.webhook(&status(value), ACCOUNT, TOKEN, &[("MessageSid", sid)]);
        assert_eq!(server.send(&callback).await.0, StatusCode::NO_CONTENT);
    }
    let forged = server.webhook(&Preset::Sms, ACCOUNT, "forged", &[]);
    assert_eq!(server.send(&forged).await.0, StatusCode::FORBIDDEN);
    // No flush: stopping must write the whole log by itself.
    server.stop().await;

    // The database as the first server left it.
    let store = db.open().await;
    let rows = store.recent_webhooks(10).await.unwrap();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["rejected", "processed", "processed"],
        "every final stage written"
    );
    store.close().await;

    let server = Server::start(db.config_with_account()).await;
    assert!(server.startup.demo.is_none());
    let (_, history) = server.message(sid).await;
    assert_eq!(
        statuses(&history),
        [("sent".to_owned(), None), ("delivered".to_owned(), None)]
    );
    let read = server.webhook(&status("read"), ACCOUNT, TOKEN, &[("MessageSid", sid)]);
    assert_eq!(server.send(&read).await.0, StatusCode::NO_CONTENT);
    let log = server.webhooks(10).await;
    assert_eq!(log.len(), 4);
    assert_eq!(log[0]["message_status"], "read");
    assert_eq!(log[1]["rejection_reason"], "signature_mismatch");
    assert!(
        log[0]["id"].as_i64() > log[1]["id"].as_i64(),
        "ids keep growing across restarts"
    );
    server.stop().await;
    db.drop_database().await;
}

async fn credentials_come_from_the_preferred_then_the_legacy_source(db: TestDb) {
    const ACME: &str = "AC000000000000000000000000000000ac";
    const GLOBEX: &str = "AC0000000000000000000000000000000b";
    const INITECH: &str = "AC0000000000000000000000000000000c";
    let store = db.open().await;
    // acme: once legacy (token t0), rotated twice: tenant_settings has t2 (primary) and t1.
    store
        .add_tenant(&NewTenant {
            id: "acme",
            name: "Acme",
            account_sid: ACME,
            auth_token: "acme-t0",
            legacy: true,
        })
        .await
        .unwrap();
    store.rotate("acme", "acme-t1").await.unwrap();
    store.rotate("acme", "acme-t2").await.unwrap();
    // globex: legacy only.
    store
        .add_tenant(&NewTenant {
            id: "globex",
            name: "Globex",
            account_sid: GLOBEX,
            auth_token: "globex-token",
            legacy: true,
        })
        .await
        .unwrap();
    // initech: preferred, with a SharedKey.
    store
        .add_tenant(&NewTenant {
            id: "initech",
            name: "Initech",
            account_sid: INITECH,
            auth_token: "initech-token",
            legacy: false,
        })
        .await
        .unwrap();
    store
        .add_shared_key("initech", "initech_key_1", "shared-secret", "HMAC_SHA256")
        .await
        .unwrap();
    let listed = format!("{:?}", store.list_tenants().await.unwrap());
    for secret in ["acme-t", "globex-token", "initech-token", "shared-secret"] {
        assert!(
            !listed.contains(secret),
            "tenant list shows a secret: {listed}"
        );
    }
    assert!(listed.contains("initech_key_1 (HMAC_SHA256)"), "{listed}");
    store.close().await;

    let server = Server::start(db.config()).await;
    assert!(server.startup.demo.is_none(), "tenants exist: no demo mode");
    let sms = |account: &str, token: &str| server.webhook(&Preset::Sms, account, token, &[]);
    let cases = [
        (sms(ACME, "acme-t2"), StatusCode::OK),
        (sms(ACME, "acme-t1"), StatusCode::OK), // the old token, during the rotation
        (sms(ACME, "acme-t0"), StatusCode::FORBIDDEN), // stale legacy token: never consulted
        (sms(GLOBEX, "globex-token"), StatusCode::OK), // legacy source
        (sms(INITECH, "initech-token"), StatusCode::OK),
    ];
    for (request, expected) in &cases {
        let (code, body, _) = server.send(request).await;
        assert_eq!(code, *expected, "{request:?}: {body}");
    }
    assert!(
        server
            .send(&cases[3].0)
            .await
            .1
            .contains("<Message>Globex received")
    );

    let shared_key = |key_id: &str, secret: &str, algorithm| {
        sign_request(
            &format!("{}/twilio/status", server.base()),
            Body::Form(status("delivered").params(INITECH)),
            Signer::SharedKey {
                secret: secret.as_bytes(),
                key_id,
                algorithm,
            },
        )
    };
    let (code, body, _) = server
        .send(&shared_key(
            "initech_key_1",
            "shared-secret",
            Algorithm::HmacSha256,
        ))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    for (request, reason) in [
        (
            shared_key("initech_key_1", "initech-token", Algorithm::HmacSha256),
            "signature_mismatch",
        ),
        (
            shared_key("no_such_key", "shared-secret", Algorithm::HmacSha256),
            "unknown_shared_key",
        ),
    ] {
        assert_eq!(
            server.send(&request).await.0,
            StatusCode::FORBIDDEN,
            "{reason}"
        );
    }

    let log = server.webhooks(100).await;
    let seen: Vec<(Option<&str>, Option<&str>, Option<&str>)> = log
        .iter()
        .rev()
        .map(|e| {
            (
                e["tenant_id"].as_str(),
                e["credential"].as_str(),
                e["rejection_reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Some("acme"), Some("primary"), None),
            (Some("acme"), Some("secondary"), None),
            (Some("acme"), None, Some("signature_mismatch")),
            (Some("globex"), Some("primary"), None),
            (Some("initech"), Some("primary"), None),
            (Some("globex"), Some("primary"), None),
            (Some("initech"), Some("shared_key:initech_key_1"), None),
            (Some("initech"), None, Some("signature_mismatch")),
            (None, None, Some("unknown_shared_key")),
        ]
    );
    server.stop().await;
    db.drop_database().await;
}

// The inspector page, in a real headless browser.
mod inspector;
