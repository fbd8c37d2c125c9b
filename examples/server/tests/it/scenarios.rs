//! The example server's scenarios, each against SQLite and PostgreSQL (see `support`); requests
//! are built and signed by the same code as the signing tool.

use http::StatusCode;
use serde_json::Value;
use tower_twilio::signature::Algorithm;
use tower_twilio_example_server::{
    PublicUrlConfig,
    db::NewTenant,
    replay::ReplayGuardConfig,
    twilio_presets::{self, Body, Preset, Signer, sign_request},
};

use crate::support::{
    ACCOUNT, BodyParam, Server, TOKEN, TestDb, on_both_databases, redis_url, resign_without,
    status, statuses,
};

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
    /// The same signed webhook twice is processed once (the log says `copy`); a different
    /// one is processed; a tampered copy is still refused.
    a_replayed_webhook_is_processed_once;
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
        body.contains("<Gather")
            && body.contains("<Say>Hello from Default tenant (TWILIO_ACCOUNT_SID)."),
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
    assert_eq!(history["records"][0]["status"], "weird_status");
    assert_eq!(history["records"][0]["account_sid"], ACCOUNT);
    assert_eq!(
        statuses(&history),
        [
            ("sent".to_owned(), None),
            ("delivered".to_owned(), None),
            ("read".to_owned(), None),
            ("weird_status".to_owned(), None),
        ]
    );

    // Every documented value is kept as it is, with its ErrorCode; a retried delivery (the
    // same signed request) gets the first answer from the replay guard and counts once.
    let other = "SM33333333333333333333333333333333";
    for value in twilio_presets::MESSAGE_STATUSES {
        let callback = server.webhook(&status(value), ACCOUNT, TOKEN, &[("MessageSid", other)]);
        assert_eq!(
            server.send(&callback).await.0,
            StatusCode::NO_CONTENT,
            "{value}"
        );
        if *value == "undelivered" {
            let (code, body, _) = server.send(&callback).await;
            assert_eq!(code, StatusCode::NO_CONTENT, "retry");
            assert_eq!(body, "", "retry: the first answer");
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
        "every final outcome written"
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
    let mut bodies = Vec::new();
    for (request, expected) in &cases {
        let (code, body, _) = server.send(request).await;
        assert_eq!(code, *expected, "{request:?}: {body}");
        bodies.push(body);
    }
    // Read from the first answer: sending it again would be a copy.
    assert!(
        bodies[3].contains("<Message>Globex received"),
        "{}",
        bodies[3]
    );

    let shared_key_for = |account: &str, key_id: &str, secret: &str, algorithm| {
        sign_request(
            &format!("{}/twilio/status", server.base()),
            Body::Form(status("delivered").params(account)),
            Signer::SharedKey {
                secret: secret.as_bytes(),
                key_id,
                algorithm,
            },
        )
    };
    let shared_key =
        |key_id: &str, secret: &str, algorithm| shared_key_for(INITECH, key_id, secret, algorithm);
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
        // initech's SharedKey vouching for a status callback that names acme's account.
        (
            shared_key_for(
                ACME,
                "initech_key_1",
                "shared-secret",
                Algorithm::HmacSha256,
            ),
            "account_mismatch",
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
            (Some("initech"), Some("shared_key:initech_key_1"), None),
            (Some("initech"), None, Some("signature_mismatch")),
            (None, None, Some("unknown_shared_key")),
            (Some("initech"), None, Some("account_mismatch")),
        ]
    );
    server.stop().await;
    db.drop_database().await;
}

async fn a_replayed_webhook_is_processed_once(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let sms = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[("Body", "once")]);
    let (code, first, _) = server.send(&sms).await;
    assert_eq!(code, StatusCode::OK);
    assert!(first.contains("<Message>"), "{first}");
    let (code, again, content_type) = server.send(&sms).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        again, first,
        "a copy gets the first answer: the same reply, not a second one"
    );
    assert!(
        content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/xml")),
        "{content_type:?}"
    );

    let other = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[("Body", "another")]);
    let (code, body, _) = server.send(&other).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("<Message>"), "{body}");

    let mut tampered = sms.clone();
    tampered.body = String::from_utf8(tampered.body)
        .unwrap()
        .replace("once", "twice")
        .into_bytes();
    assert_eq!(server.send(&tampered).await.0, StatusCode::FORBIDDEN);

    let log = server.webhooks(10).await;
    let outcomes: Vec<&str> = log.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["rejected", "processed", "copy", "processed"]);
    assert_eq!(log[2]["message_sid"], log[3]["message_sid"]);
    assert_eq!(log[2]["tenant_id"], "default");
    server.stop().await;
    db.drop_database().await;
}

/// Two server processes behind one public URL (as behind a load balancer), one database and
/// one `redis-server`: a webhook sent to each is processed once; a different one is processed;
/// a tampered one is refused.
#[tokio::test]
#[cfg_attr(
    skip_redis,
    ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
)]
async fn two_servers_sharing_one_redis_process_a_webhook_once() {
    let Some(redis) = redis_url() else { return };
    let db = TestDb::sqlite();
    const PUBLIC: &str = "https://webhooks.example.test";
    let config = || {
        let mut config = db.config_with_account();
        config.public_url = PublicUrlConfig::Fixed(PUBLIC.to_owned());
        config.replay_guard = ReplayGuardConfig::parse(&redis).unwrap();
        config
    };
    let first = Server::start(config()).await;
    let second = Server::start(config()).await;
    assert_eq!(second.startup.replay_guard.to_string(), redis);

    // A unique MessageSid: runs of this test share the Redis server.
    let sid = format!("SM{}", twilio_presets::random_hex(16));
    let sign = |body: &str| {
        let mut params = Preset::Sms.params(ACCOUNT);
        twilio_presets::apply_overrides(
            &mut params,
            &[
                ("MessageSid".to_owned(), sid.clone()),
                ("Body".to_owned(), body.to_owned()),
            ],
        );
        sign_request(
            &format!("{PUBLIC}/twilio/sms"),
            Body::Form(params),
            Signer::AuthToken(TOKEN.as_bytes()),
        )
    };
    let sms = sign("to both");
    let (code, answer, _) = first.send(&sms).await;
    assert_eq!(code, StatusCode::OK);
    assert!(answer.contains("<Message>"), "{answer}");
    let (code, body, _) = second.send(&sms).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, answer, "the second server gives the first answer");

    let (code, body, _) = second.send(&sign("different")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("<Message>"), "{body}");

    let mut tampered = sms.clone();
    tampered.body = String::from_utf8(tampered.body)
        .unwrap()
        .replace("both", "all")
        .into_bytes();
    assert_eq!(first.send(&tampered).await.0, StatusCode::FORBIDDEN);

    // Both write to the one database; each log writer at its own pace, so compare as a set.
    first.webhooks(1).await;
    let log = second.webhooks(10).await;
    let mut outcomes: Vec<(&str, Option<&str>)> = log
        .iter()
        .map(|e| (e["outcome"].as_str().unwrap(), e["message_sid"].as_str()))
        .collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        [
            ("copy", Some(&*sid)),
            ("processed", Some(&*sid)),
            ("processed", Some(&*sid)),
            ("rejected", None),
        ]
    );
    first.stop().await;
    second.stop().await;
}

/// `/twilio/voice` is in the delivery scope: Twilio's retry of one request (the same
/// `I-Twilio-Idempotency-Token`) gets the first answer and is logged `copy`; the same
/// signed request with a new token (a menu that loops back) runs the handler again.
#[tokio::test]
async fn a_voice_retry_gets_the_first_answer_and_a_loop_runs_again() {
    let db = TestDb::sqlite();
    let server = Server::start(db.config_with_account()).await;
    // One signed call request; Twilio sends each delivery with its own token.
    let call = server.webhook(&Preset::Voice, ACCOUNT, TOKEN, &[]);
    let with_token = |token: &str| {
        let mut call = call.clone();
        call.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("i-twilio-idempotency-token"));
        call.headers
            .push(("I-Twilio-Idempotency-Token".to_owned(), token.to_owned()));
        call
    };
    let (code, first, _) = server.send(&with_token("token-1")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(first.contains("<Response>"), "{first}");
    let (code, retry, _) = server.send(&with_token("token-1")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(retry, first, "Twilio's retry gets the first answer");
    let (code, again, _) = server.send(&with_token("token-2")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(again.contains("<Response>"), "{again}");

    let log = server.webhooks(10).await;
    let outcomes: Vec<&str> = log.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["processed", "copy", "processed"]);
    server.stop().await;
}

/// Two server processes behind one public URL and one PostgreSQL database, which keeps both
/// the webhook log and the replay guard (`REPLAY_GUARD=postgres://…`, no Redis): a webhook sent
/// to each runs the handler once.
#[tokio::test]
#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
async fn two_servers_sharing_one_postgres_database_process_a_webhook_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (admin_url, name) = db.postgres.clone().unwrap();
    let mut database_url = url::Url::parse(&admin_url).unwrap();
    database_url.set_path(&name);
    const PUBLIC: &str = "https://webhooks.example.test";
    let config = || {
        let mut config = db.config_with_account();
        config.public_url = PublicUrlConfig::Fixed(PUBLIC.to_owned());
        config.replay_guard = ReplayGuardConfig::parse(database_url.as_str()).unwrap();
        config
    };
    let first = Server::start(config()).await;
    let second = Server::start(config()).await;
    let shown = second.startup.replay_guard.to_string();
    let password = database_url.password().unwrap_or("(none)");
    assert!(
        shown.starts_with("postgres") && !shown.contains(&format!(":{password}@")),
        "the password is hidden: {shown}"
    );

    let mut params = Preset::Sms.params(ACCOUNT);
    let sid = format!("SM{}", twilio_presets::random_hex(16));
    twilio_presets::apply_overrides(&mut params, &[("MessageSid".to_owned(), sid.clone())]);
    let sms = sign_request(
        &format!("{PUBLIC}/twilio/sms"),
        Body::Form(params),
        Signer::AuthToken(TOKEN.as_bytes()),
    );
    let (code, body, _) = first.send(&sms).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("<Message>"), "{body}");
    let (code, _, _) = second.send(&sms).await;
    assert_eq!(code, StatusCode::OK);

    first.webhooks(1).await;
    let log = second.webhooks(10).await;
    let outcomes: Vec<&str> = log
        .iter()
        .filter(|e| e["message_sid"].as_str() == Some(&*sid))
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 2, "{log:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == "processed").count(),
        1,
        "the handler ran once: {outcomes:?}"
    );
    first.stop().await;
    second.stop().await;
    db.drop_database().await;
}
