//! The webhook log is bounded: by rows and age, and every stored field has a size cap; and it
//! keeps the client IP and the request id of each webhook.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use tower_twilio_example_server::{
    db::{Outcome, Timestamp, WebhookRow},
    webhook_log::Retention,
};

use crate::support::{ACCOUNT, Server, TOKEN, TestDb, on_both_databases};
use tower_twilio_example_server::twilio_presets::Preset;

on_both_databases! {
    /// A forged request with huge fields is stored with each field capped (a malformed
    /// AccountSid is refused before any lookup and not stored at all); a verified one's
    /// parameters are capped too; client IP and request id are stored and shown.
    oversized_fields_are_capped_and_client_ip_and_request_id_kept;
}

async fn oversized_fields_are_capped_and_client_ip_and_request_id_kept(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let huge_sid = format!("AC{}", "9".repeat(60_000));
    let body = format!("AccountSid={huge_sid}&Body=hi");
    // Long in its names: an unverified request's query values are not logged at all.
    let query = (0..3_000)
        .map(|i| format!("q{i}=x"))
        .collect::<Vec<_>>()
        .join("&");
    let path = format!("/twilio/{}", "p".repeat(4_000));
    let forged = Request::post(format!("{}{path}?{query}", server.base()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "u".repeat(6_000))
        .header("x-request-id", "req-from-the-proxy-1")
        .header("x-twilio-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .body(Full::from(body))
        .unwrap();
    let (code, _, _) = server.request(forged).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    // A webhook without a request id gets one; its (signed) huge MessageSid is capped.
    let huge_message_sid = format!("SM{}", "9".repeat(5_000));
    let sms = server.webhook(
        &Preset::Sms,
        ACCOUNT,
        TOKEN,
        &[("MessageSid", huge_message_sid.as_str())],
    );
    assert_eq!(server.send(&sms).await.0, StatusCode::OK);

    let log = server.webhooks(10).await;
    let forged = &log[1];
    assert_eq!(forged["outcome"], "rejected");
    assert_eq!(forged["rejection_reason"], "invalid_account_sid");
    assert_eq!(forged["account_sid"], serde_json::Value::Null);
    let message_sid = log[0]["message_sid"].as_str().unwrap();
    assert_eq!(message_sid.chars().count(), 65, "{message_sid}");
    assert!(message_sid.ends_with('…'));
    for (field, cap) in [("query", 1024), ("user_agent", 256), ("path", 1024)] {
        let value = forged[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {forged}"));
        assert!(
            value.chars().count() <= cap + 1,
            "{field} is {} chars",
            value.chars().count()
        );
        assert!(value.ends_with('…'), "{field} is marked as cut");
    }
    let logged_query = forged["query"].as_str().unwrap();
    assert!(
        logged_query.starts_with("q0=[redacted]&q1=[redacted]&"),
        "{logged_query}"
    );
    assert_eq!(forged["client_ip"], "127.0.0.1");
    assert_eq!(forged["request_id"], "req-from-the-proxy-1");
    let generated = log[0]["request_id"].as_str().unwrap();
    assert!(generated.len() >= 16, "{generated}");
    assert_eq!(log[0]["client_ip"], "127.0.0.1");
    server.stop().await;
    db.drop_database().await;
}

on_both_databases! {
    /// An `X-Request-Id` longer than 64 bytes (here 10 000), or not printable ASCII, is
    /// replaced by a random one, in the answer and in the log; one of 64 bytes is kept.
    an_odd_request_id_is_replaced;
}

async fn an_odd_request_id_is_replaced(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let longest = "r".repeat(64);
    for (sent, kept) in [
        ("x".repeat(10_000), false),
        ("r".repeat(65), false),
        ("req with spaces".to_owned(), false),
        (longest.clone(), true),
    ] {
        let sms = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[]);
        let mut request = Request::post(&sms.url).header("x-request-id", &sent);
        for (name, value) in &sms.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::from(sms.body.clone())).unwrap();
        let response = crate::support::bounded("request", server.client.request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answered = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let logged = server.webhooks(1).await[0]["request_id"].clone();
        assert_eq!(logged, answered.as_str());
        if kept {
            assert_eq!(answered, sent);
        } else {
            assert!(
                answered.len() == 32 && answered.bytes().all(|b| b.is_ascii_hexdigit()),
                "{} bytes sent, {answered:?} answered",
                sent.len()
            );
        }
    }
    server.stop().await;
    db.drop_database().await;
}

on_both_databases! {
    /// The log keeps at most `max_rows` rows and nothing older than `max_age`: old rows go at
    /// start, and the oldest go as new ones arrive.
    retention_by_rows_and_age;
}

async fn retention_by_rows_and_age(db: TestDb) {
    let day_ms = 86_400_000;
    let store = db.open().await;
    for age_days in [40, 3] {
        store
            .insert_webhook(&WebhookRow::new(
                Timestamp::from_millis(Timestamp::now().millis() - age_days * day_ms),
                "POST".to_owned(),
                format!("/twilio/old-{age_days}"),
                Outcome::Rejected,
            ))
            .await
            .unwrap();
    }
    store.close().await;
    let mut config = db.config_with_account();
    config.retention = Retention {
        max_rows: 5,
        max_age: Duration::from_secs(7 * 86_400),
    };
    let server = Server::start(config).await;
    let log = server.webhooks(100).await;
    let paths: Vec<&str> = log.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/twilio/old-3"],
        "the 40-day-old row is gone at start"
    );

    for n in 0..12 {
        let sms = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[("Body", &format!("n{n}"))]);
        assert_eq!(server.send(&sms).await.0, StatusCode::OK);
    }
    let log = server.webhooks(100).await;
    assert_eq!(log.len(), 5, "{log:#?}");
    assert!(
        log.iter().all(|e| e["path"] == "/twilio/sms"),
        "the oldest went first"
    );
    let ids: Vec<i64> = log.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1] + 1),
        "the newest five: {ids:?}"
    );
    server.stop().await;
    db.drop_database().await;
}
