//! Nothing sent to Sentry carries a Twilio signature, the signature-settings header,
//! `Authorization` or a cookie. The server binary reports to a stand-in ingest endpoint: a
//! small HTTP server on 127.0.0.1 that keeps every envelope it receives.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::support::{LIMIT, Process};

/// Values that must never reach Sentry, each unmistakable.
/// 20 bytes, the length of an HMAC-SHA1: a well-formed but wrong signature.
const SIGNATURE: &str = "c2lnLW1hcmtlci0yMC1ieXRlcyE=";
/// 32 bytes, the length of an HMAC-SHA256.
const SIGNATURE_256: &str = "c2lnLW1hcmtlci0zMi1ieXRlcy1mb3Itc2hhLTI1NiE=";
const SETTINGS: &str = "settings_marker_q7w8e9";
const AUTHORIZATION: &str = "authorization-marker-a1s2d3";
const COOKIE: &str = "cookie-marker-z4x5c6";

/// Keeps the raw bytes of every request; answers each with 200 and `{}`.
async fn ingest() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0; 8192];
                // Headers, then Content-Length bytes of body.
                loop {
                    let Ok(n) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                kept.lock().unwrap().push(request);
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    (format!("http://public@{addr}/42"), received)
}

#[tokio::test]
async fn nothing_sent_to_sentry_carries_signatures_or_credentials() {
    let (dsn, received) = ingest().await;
    let account = "AC77777777777777777777777777777777";
    let server = Process::start(
        &[],
        &[
            ("SENTRY_DSN", &dsn),
            ("ADMIN_TOKEN", "admin-token-0123456789"),
            ("TWILIO_ACCOUNT_SID", account),
            ("TWILIO_AUTH_TOKEN", "0123456789abcdef0123456789abcdef"),
        ],
    )
    .await;
    // A forged webhook (a critical security event) carrying every sensitive header.
    let forged = server
        .call(
            "POST",
            "/twilio/sms?From=%2B1",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", SIGNATURE),
                ("authorization", &format!("Basic {AUTHORIZATION}")),
                ("cookie", &format!("session={COOKIE}")),
            ],
            &format!("AccountSid={account}&Body=hi"),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let settings = server
        .call(
            "POST",
            "/twilio/status",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", SIGNATURE_256),
                (
                    "x-twilio-webhooks-signature-settings",
                    &format!("key={SETTINGS},algorithm=HMAC_SHA256"),
                ),
                ("cookie", &format!("twilio_admin={COOKIE}")),
            ],
            &format!("AccountSid={account}&MessageStatus=sent"),
        )
        .await;
    assert_eq!(settings.status, StatusCode::FORBIDDEN);

    // Both events reach the stand-in.
    let deadline = Instant::now() + LIMIT;
    let envelopes = loop {
        let envelopes: Vec<String> = received
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        if envelopes
            .iter()
            .filter(|e| e.contains("\"type\":\"event\""))
            .count()
            >= 2
        {
            break envelopes;
        }
        assert!(
            Instant::now() < deadline,
            "no events at the ingest endpoint: {envelopes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let all = envelopes.join("\n");
    assert!(
        all.contains("signature_mismatch") || all.contains("unknown_shared_key"),
        "{all}"
    );
    for secret in [SIGNATURE, SIGNATURE_256, SETTINGS, AUTHORIZATION, COOKIE] {
        assert!(!all.contains(secret), "{secret} was sent to Sentry:\n{all}");
    }
    let lower = all.to_ascii_lowercase();
    for header in [
        "x-twilio-signature",
        "x-twilio-webhooks-signature-settings",
        "\"authorization\"",
        "\"cookie\"",
    ] {
        assert!(
            !lower.contains(header),
            "{header} was sent to Sentry:\n{all}"
        );
    }
    server.stop().await;
}

/// Issue 19: a genuine webhook refused for its URL (the server was not told its public URL)
/// sent its query, values included, to Sentry in `extra.url` and, from the mismatch doctor,
/// `extra.diagnosis_matched_url`. Both keep the names only now, the diagnosis (which comes
/// from the doctor's thread) included.
#[tokio::test]
async fn no_query_value_of_a_refused_webhook_reaches_sentry() {
    use tower_twilio_example_server::twilio_presets::{Body, Signer, sign_request};

    const CODE: &str = "493817";
    const PHONE: &str = "14155550100";
    let (dsn, received) = ingest().await;
    let account = "AC77777777777777777777777777777777";
    let token = "0123456789abcdef0123456789abcdef";
    let server = Process::start(
        &[],
        &[
            ("SENTRY_DSN", &dsn),
            ("ADMIN_TOKEN", "admin-token-0123456789"),
            ("TWILIO_ACCOUNT_SID", account),
            ("TWILIO_AUTH_TOKEN", token),
            ("DIAGNOSE_MISMATCHES", "true"),
        ],
    )
    .await;
    // A Gather action whose URL carries the caller's number and a one-time code, signed by
    // Twilio for the public https URL; the server rebuilds http://…
    let signed = sign_request(
        &format!("https://hooks.example.com/twilio/sms?Code={CODE}&From=%2B{PHONE}"),
        Body::Form(vec![
            ("AccountSid".to_owned(), account.to_owned()),
            ("Body".to_owned(), "Hi".to_owned()),
        ]),
        Signer::AuthToken(token.as_bytes()),
    );
    let answer = server.send(&signed, Some("hooks.example.com")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // The refusal and the diagnosis that follows it reach the stand-in.
    let deadline = Instant::now() + LIMIT;
    let all = loop {
        let all = received
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        if all.contains("signature_mismatch") && all.contains("diagnosis_matched_url") {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "no diagnosed event at the ingest endpoint: {all}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for value in [CODE, PHONE] {
        assert!(!all.contains(value), "{value} was sent to Sentry:\n{all}");
    }
    assert!(all.contains("mismatch_diagnosed"), "{all}");
    assert!(all.contains("Code=[redacted]"), "{all}");
    server.stop().await;
}
