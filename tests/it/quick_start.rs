//! The README's Quick start, as a newcomer runs it: `examples/quick_start.rs` is the README's
//! code word for word, and served over TCP with the public URL the README's local test uses, it
//! answers a signed SMS with TwiML as `text/xml`, refuses an unsigned or forged one with a 403
//! that shows in the log output the quick start sets up.

use std::{net::SocketAddr, path::Path};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower_twilio::{PublicUrl, Secret, signature::Algorithm};

use crate::support::{Captured, SMS_BODY, TOKEN, token, twilio_signature};

#[allow(dead_code)] // its `main`: run by `cargo run --example quick_start`
#[path = "../../examples/quick_start.rs"]
mod example;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The Rust block under `## Quick start` in the README.
fn readme_quick_start() -> String {
    let readme = read("README.md");
    let section = readme
        .split("\n## Quick start\n")
        .nth(1)
        .expect("a Quick start section");
    let code = section
        .split_once("```rust")
        .and_then(|(_, rest)| rest.split_once('\n'))
        .and_then(|(_, rest)| rest.split_once("\n```\n"))
        .expect("a Rust block in the Quick start")
        .0;
    format!("{code}\n")
}

#[test]
fn the_readme_quick_start_is_the_example_word_for_word() {
    let example = read("examples/quick_start.rs");
    // The example's own doc comment (how to run it) is not in the README.
    let code: String = example
        .split_inclusive('\n')
        .skip_while(|line| line.starts_with("//!") || line.trim().is_empty())
        .collect();
    assert_eq!(readme_quick_start(), code);
    // The commands the README gives next run this example with the public URL they sign for.
    let readme = read("README.md");
    assert!(
        readme.contains(&format!(
            "TWILIO_AUTH_TOKEN={TOKEN} PUBLIC_URL=http://127.0.0.1:3000 cargo run --example quick_start"
        )),
        "the README's command to run the quick start"
    );
    assert!(
        readme.contains(&format!(
            "TWILIO_AUTH_TOKEN={TOKEN} cargo run -p tower-twilio-example-server --bin send_webhook -- --url http://127.0.0.1:3000/twilio/sms sms"
        )),
        "the README's signed test SMS"
    );
}

/// The quick start's app on a loopback port, with `PUBLIC_URL` set to match it as the
/// README's local test does.
async fn serve(token: Secret) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let public_url = PublicUrl::fixed(&format!("http://{addr}")).unwrap();
    tokio::spawn(async move {
        axum::serve(listener, example::app(token, public_url))
            .await
            .unwrap();
    });
    addr
}

/// POSTs `SMS_BODY` to `/twilio/sms` with this signature (none for `None`), as `send_webhook`
/// does: status, content type, body.
async fn post(addr: SocketAddr, signature: Option<String>) -> (StatusCode, String, String) {
    let mut request = Request::post(format!("http://{addr}/twilio/sms"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(signature) = signature {
        request = request.header("x-twilio-signature", signature);
    }
    let request = request.body(Full::new(Bytes::from_static(SMS_BODY.as_bytes())));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.request(request.unwrap()),
    )
    .await
    .expect("an answer within 30 s")
    .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_signed_sms_gets_twiml_as_xml_and_a_refusal_shows_in_the_output() {
    // The quick start's subscriber, `tracing_subscriber::fmt()` with its defaults, writing here.
    assert!(readme_quick_start().contains("    tracing_subscriber::fmt().init();\n"));
    let output = Captured::default();
    let writer = output.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let addr = serve(token()).await;
    let url = format!("http://{addr}/twilio/sms");

    let signed = twilio_signature(TOKEN, Algorithm::HmacSha1, &url, SMS_BODY);
    let (status, content_type, body) = post(addr, Some(signed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // As text/plain, Twilio would send "<Response/>" back to the sender as an SMS.
    assert_eq!(content_type, "text/xml");
    assert_eq!(body, "<Response/>");
    assert!(
        !output.text().contains("tower_twilio::security"),
        "{}",
        output.text()
    );

    let (status, _, _) = post(addr, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let forged = twilio_signature("not-the-token", Algorithm::HmacSha1, &url, SMS_BODY);
    let (status, _, _) = post(addr, Some(forged)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let printed = output.text();
    let refusals: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains("tower_twilio::security"))
        .collect();
    assert_eq!(refusals.len(), 2, "{printed}");
    assert!(refusals[0].contains("WARN"), "{printed}");
    assert!(refusals[1].contains("ERROR"), "{printed}");
}
