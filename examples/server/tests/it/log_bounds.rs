//! The webhook log is bounded: every stored field has a size cap, and it keeps the client IP
//! and the request id of each webhook.

use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::{ACCOUNT, Server, TOKEN, TestDb, on_both_databases};
use tower_twilio_example_server::twilio_presets::Preset;

on_both_databases! {
    /// A forged request with huge fields is stored with each field capped; client IP and
    /// request id are stored and shown.
    oversized_fields_are_capped_and_client_ip_and_request_id_kept;
}

async fn oversized_fields_are_capped_and_client_ip_and_request_id_kept(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let huge_sid = format!("AC{}", "9".repeat(60_000));
    let body = format!("AccountSid={huge_sid}&Body=hi");
    let query = "q=".to_owned() + &"x".repeat(30_000);
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
    // A webhook without a request id gets one.
    let sms = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[]);
    assert_eq!(server.send(&sms).await.0, StatusCode::OK);

    let log = server.webhooks(10).await;
    let forged = &log[1];
    assert_eq!(forged["outcome"], "rejected");
    for (field, cap) in [
        ("account_sid", 64),
        ("query", 1024),
        ("user_agent", 256),
        ("path", 1024),
    ] {
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
    assert_eq!(forged["client_ip"], "127.0.0.1");
    assert_eq!(forged["request_id"], "req-from-the-proxy-1");
    let generated = log[0]["request_id"].as_str().unwrap();
    assert!(generated.len() >= 16, "{generated}");
    assert_eq!(log[0]["client_ip"], "127.0.0.1");
    server.stop().await;
    db.drop_database().await;
}
