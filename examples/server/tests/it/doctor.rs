//! The mismatch doctor through the real server: a webhook whose URL the server rebuilds wrong
//! is still refused, and its log entry names the URL Twilio signed and the `PUBLIC_URL` to set.

use http::StatusCode;
use serde_json::Value;
use tower_twilio_example_server::twilio_presets::{Body, Signer, sign_request};

use crate::support::Process;

const ADMIN: &str = "admin-doctor-5e1f0a9c3b7d2e4f6a8c0b1d";
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "doctor-test-auth-token-0123456789";

async fn log_entries(server: &Process) -> Vec<Value> {
    let auth = format!("Bearer {ADMIN}");
    let answer = server
        .call("GET", "/api/webhooks", &[("authorization", &auth)], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// The log's entries once the newest `of` of them carries a diagnosis: the doctor runs after
/// the response.
async fn diagnosed_entries(server: &Process, of: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let entries = log_entries(server).await;
        if entries.len() > of && entries[of]["diagnosis"] != Value::Null {
            return entries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no diagnosis logged: {entries:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn sms(url: &str, token: &str) -> tower_twilio_example_server::twilio_presets::SignedRequest {
    sign_request(
        url,
        Body::Form(vec![
            ("AccountSid".to_owned(), ACCOUNT_SID.to_owned()),
            ("From".to_owned(), "+14155550100".to_owned()),
            ("Body".to_owned(), "Hi".to_owned()),
        ]),
        Signer::AuthToken(token.as_bytes()),
    )
}

#[tokio::test]
async fn a_webhook_signed_for_the_public_https_url_is_refused_and_explained() {
    // No PUBLIC_URL: the server verifies against http://127.0.0.1:PORT, as a new user's does
    // behind a TLS-terminating tunnel.
    let server = Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("DIAGNOSE_MISMATCHES", "true"),
        ],
    )
    .await;
    let signed = sms("https://hooks.example.com/twilio/sms", TOKEN);
    let mut headers: Vec<(&str, &str)> = signed
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    headers.push(("host", "hooks.example.com"));
    headers.push(("x-forwarded-proto", "https"));
    let body = String::from_utf8(signed.body.clone()).unwrap();
    let answer = server.call("POST", "/twilio/sms", &headers, &body).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // Nothing of the diagnosis in the response.
    assert!(
        !answer.body.contains("hooks.example.com"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("PUBLIC_URL"), "{}", answer.body);

    let entries = diagnosed_entries(&server, 0).await;
    let entry = &entries[0];
    assert_eq!(entry["outcome"], "rejected");
    assert_eq!(entry["rejection_reason"], "signature_mismatch");
    assert_eq!(
        entry["diagnosis"]["matched_url"],
        "https://hooks.example.com/twilio/sms"
    );
    assert_eq!(
        entry["diagnosis"]["fix"],
        "set PUBLIC_URL=https://hooks.example.com"
    );

    // A forgery (the wrong token) is refused too, and explained by nothing.
    let forged = sms("https://hooks.example.com/twilio/sms", "not-the-token");
    let mut headers: Vec<(&str, &str)> = forged
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    headers.push(("host", "hooks.example.com"));
    let body = String::from_utf8(forged.body.clone()).unwrap();
    let answer = server.call("POST", "/twilio/sms", &headers, &body).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // The doctor takes requests in order: once the genuine one sent next is diagnosed, the
    // forgery has been through it.
    let answer = server.send(&signed, Some("hooks.example.com")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let entries = diagnosed_entries(&server, 0).await;
    assert_eq!(entries[1]["rejection_reason"], "signature_mismatch");
    assert_eq!(entries[1]["diagnosis"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn diagnosis_is_off_unless_asked_for_outside_demo_mode() {
    let server = Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", TOKEN),
        ],
    )
    .await;
    let signed = sms("https://hooks.example.com/twilio/sms", TOKEN);
    let answer = server.send(&signed, Some("hooks.example.com")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let entries = log_entries(&server).await;
    assert_eq!(entries[0]["rejection_reason"], "signature_mismatch");
    assert_eq!(entries[0]["diagnosis"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn demo_mode_diagnoses_by_default() {
    let server = Process::start(&[], &[("ADMIN_TOKEN", ADMIN)]).await;
    let token = std::fs::read_to_string(server.dir.path().join(".twilio-demo-token")).unwrap();
    let stdout = server.stdout();
    let account_sid = stdout
        .split("--account-sid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the banner names the demo account")
        .to_owned();
    let signed = sign_request(
        "https://hooks.example.com/twilio/sms",
        Body::Form(vec![("AccountSid".to_owned(), account_sid)]),
        Signer::AuthToken(token.trim().as_bytes()),
    );
    let answer = server.send(&signed, Some("hooks.example.com")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let entries = diagnosed_entries(&server, 0).await;
    assert_eq!(
        entries[0]["diagnosis"]["matched_url"],
        "https://hooks.example.com/twilio/sms"
    );
    server.stop().await;
}

/// `count` comma-separated made-up hosts: a forged `X-Forwarded-Host` of issue 19.
fn many_hosts(count: usize) -> String {
    (0..count)
        .map(|i| format!("h{i}.io"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Issue 19, through the server with the doctor on: a forged SMS naming a known account with
/// 8 000 forwarded hosts took 48 s to refuse in a debug build (4.4 s in release), holding a
/// worker thread all along, so that two of them in flight kept a genuine webhook waiting. The
/// doctor now runs off the request path: each forgery is refused at once, for a known account
/// as for an unknown one, and a genuine SMS sent meanwhile is answered.
#[tokio::test]
async fn forged_requests_with_thousands_of_forwarded_hosts_are_refused_at_once() {
    use std::time::{Duration, Instant};

    let server = Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("DIAGNOSE_MISMATCHES", "true"),
        ],
    )
    .await;
    let url = format!("http://{}/twilio/sms", server.addr);
    let hosts = many_hosts(8_000);
    let forged = |account: &str| {
        sign_request(
            &url,
            Body::Form(vec![
                ("AccountSid".to_owned(), account.to_owned()),
                ("From".to_owned(), "+14155550100".to_owned()),
                ("Body".to_owned(), "Hi".to_owned()),
            ]),
            Signer::AuthToken(b"not-the-token-at-all"),
        )
    };
    let send_forged = |account: &'static str| {
        let signed = forged(account);
        let server = &server;
        let hosts = &hosts;
        async move {
            let mut headers: Vec<(&str, &str)> = signed
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            headers.push(("x-forwarded-host", hosts));
            let body = String::from_utf8(signed.body.clone()).unwrap();
            let started = Instant::now();
            let answer = server.call("POST", "/twilio/sms", &headers, &body).await;
            (answer.status, started.elapsed())
        }
    };
    // Issue 19's targets are 10 ms for a refusal and 100 ms for the genuine SMS, in release;
    // the bounds here are generous for a debug build on a loaded machine, and still far under
    // what the doctor on the request path took.
    let bound = Duration::from_secs(1);
    const UNKNOWN: &str = "ACeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    for account in [ACCOUNT_SID, UNKNOWN] {
        let (status, took) = send_forged(account).await;
        println!("forged request with 8000 hosts, {account}: {status} in {took:?}");
        assert_eq!(status, StatusCode::FORBIDDEN, "{account}");
        assert!(took < bound, "{account}: refused in {took:?}");
    }

    let genuine = async {
        // Sent once both forgeries are on their way.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let signed = sms(&url, TOKEN);
        let started = Instant::now();
        let answer = server.send(&signed, None).await;
        (answer.status, started.elapsed())
    };
    let ((first, _), (second, _), (status, took)) =
        tokio::join!(send_forged(ACCOUNT_SID), send_forged(ACCOUNT_SID), genuine);
    println!("genuine SMS beside two forgeries: {status} in {took:?}");
    assert_eq!(
        (first, second),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN)
    );
    assert_eq!(status, StatusCode::OK);
    assert!(took < bound, "the genuine SMS took {took:?}");
    server.stop().await;
}

/// Issue 19: a forged request with 2 000 forwarded hosts and a 60 KB query grew the server's
/// memory by 1.3 GB while the doctor built every candidate URL. Its memory now stays within a
/// few MB, measured while the request is answered and while its diagnosis runs after it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_forged_request_with_many_hosts_and_a_long_query_holds_little_memory() {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, Ordering},
        },
        time::Duration,
    };

    let server = Arc::new(
        Process::start(
            &[],
            &[
                ("ADMIN_TOKEN", ADMIN),
                ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
                ("TWILIO_AUTH_TOKEN", TOKEN),
                ("DIAGNOSE_MISMATCHES", "true"),
            ],
        )
        .await,
    );
    // Warm up: the first requests allocate what every request reuses.
    let plain = sms(
        &format!("http://{}/twilio/sms", server.addr),
        "not-the-token",
    );
    for _ in 0..3 {
        assert_eq!(
            server.send(&plain, None).await.status,
            StatusCode::FORBIDDEN
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.rss_kb();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (server, peak, done) = (Arc::clone(&server), Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(server.rss_kb(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let target = format!("/twilio/sms?q={}", "x".repeat(60 * 1024));
    let forged = sms(&format!("http://{}{target}", server.addr), "not-the-token");
    let hosts = many_hosts(2_000);
    let mut headers: Vec<(&str, &str)> = forged
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    headers.push(("x-forwarded-host", &hosts));
    let body = String::from_utf8(forged.body.clone()).unwrap();
    let answer = server.call("POST", &target, &headers, &body).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // The diagnosis runs after the response: keep measuring while it does.
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    println!("RSS grew by {grown} kB with 2000 hosts and a 60 KB query");
    assert!(grown < 16 * 1024, "RSS grew by {grown} kB");
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}
