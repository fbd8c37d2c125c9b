//! The server `benches/http/run.sh` loads: the same axum app twice, on two ports, once plain
//! and once behind `TwilioSignatureLayer`, so that one process measures both.
//!
//! Run with
//!
//! ```text
//! TWILIO_AUTH_TOKEN=... cargo run --release --example bench_server -- 127.0.0.1:8081 127.0.0.1:8082
//! ```
//!
//! The first address serves the app without the layer, the second with it. Both answer
//! `POST /twilio/{sms,status,mms,json}` with a short TwiML body after reading the request body.
//! The public URL the signatures were made for is `https://example.com` (set `PUBLIC_URL` to
//! change it). One thread serves both, so pin the process to one core.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;

use axum::{Router, body::Bytes, http::header, routing::post};
use tower_twilio::{Credentials, PublicUrl, Secret, TwilioSignatureLayer};

/// What every route does, with or without the layer: read the body, answer TwiML.
async fn webhook(body: Bytes) -> ([(header::HeaderName, &'static str); 1], &'static str) {
    std::hint::black_box(body);
    ([(header::CONTENT_TYPE, "text/xml")], "<Response/>")
}

fn app() -> Router {
    Router::new()
        .route("/twilio/sms", post(webhook))
        .route("/twilio/status", post(webhook))
        .route("/twilio/mms", post(webhook))
        .route("/twilio/json", post(webhook))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addresses = std::env::args().skip(1);
    let plain: SocketAddr = addresses
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:8081")
        .parse()?;
    let verified: SocketAddr = addresses
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:8082")
        .parse()?;
    let token = Secret::new(std::env::var("TWILIO_AUTH_TOKEN")?)?;
    let public_url = std::env::var("PUBLIC_URL").unwrap_or_else(|_| "https://example.com".into());
    let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token))
        .public_url(PublicUrl::fixed(&public_url)?);

    let plain_listener = tokio::net::TcpListener::bind(plain).await?;
    let verified_listener = tokio::net::TcpListener::bind(verified).await?;
    println!("without the layer: http://{plain}");
    println!("with the layer: http://{verified}");
    let (a, b) = tokio::join!(
        axum::serve(plain_listener, app()),
        axum::serve(verified_listener, app().route_layer(twilio)),
    );
    a?;
    b?;
    Ok(())
}
