//! `/metrics`: Prometheus text, behind the admin token, with the layer's counters moving as
//! webhooks arrive.

use http::StatusCode;
use tower_twilio_example_server::twilio_presets::{Body, Signer, sign_request};

use crate::support::Process;

const ADMIN: &str = "admin-metrics-7c2e9a4b1d3f5e6a8b0c2d4f";
const ACCOUNT_SID: &str = "AC00000000000000000000000000000042";
const TOKEN: &str = "metrics-test-auth-token-0123456789";

/// The value of the sample `name{labels}` (labels as printed, in order), or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

async fn scrape(server: &Process) -> String {
    let auth = format!("Bearer {ADMIN}");
    let answer = server
        .call("GET", "/metrics", &[("authorization", &auth)], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    answer.body
}

#[tokio::test]
async fn the_counters_move_with_the_webhooks_and_need_the_admin_token() {
    let server = Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", TOKEN),
        ],
    )
    .await;
    let locked = server.call("GET", "/metrics", &[], "").await;
    assert_eq!(locked.status, StatusCode::UNAUTHORIZED);

    let base = format!("http://{}", server.addr);
    let sms = |token: &str| {
        sign_request(
            &format!("{base}/twilio/sms"),
            Body::Form(vec![
                ("AccountSid".to_owned(), ACCOUNT_SID.to_owned()),
                ("Body".to_owned(), "Hi".to_owned()),
            ]),
            Signer::AuthToken(token.as_bytes()),
        )
    };
    for _ in 0..3 {
        assert_eq!(server.send(&sms(TOKEN), None).await.status, StatusCode::OK);
    }
    for _ in 0..2 {
        let answer = server.send(&sms("not-the-token"), None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }

    let text = scrape(&server).await;
    // The env account is the tenant named after its AccountSid.
    let verified = text
        .lines()
        .filter(|l| l.starts_with("tower_twilio_webhooks_verified_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum::<f64>();
    assert_eq!(verified, 3.0, "{text}");
    let refused = text
        .lines()
        .filter(|l| {
            l.starts_with("tower_twilio_webhooks_refused_total{")
                && l.contains("reason=\"signature_mismatch\"")
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum::<f64>();
    assert_eq!(refused, 2.0, "{text}");
    // The same signed SMS three times: the replay guard kept the last two from the handler.
    assert_eq!(
        sample(&text, "tower_twilio_replay_copies_total"),
        2.0,
        "{text}"
    );
    // Every lookup was timed.
    assert_eq!(
        sample(
            &text,
            "tower_twilio_credential_lookup_seconds_count{outcome=\"found\"}"
        ),
        5.0,
        "{text}"
    );
    // Nothing secret in it.
    assert!(!text.contains(TOKEN) && !text.contains(ADMIN));
    server.stop().await;
}
