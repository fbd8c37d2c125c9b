//! Answers Twilio SMS webhooks with axum, verifying the signature of each one first.
//!
//! Run with
//!
//! ```text
//! TWILIO_AUTH_TOKEN=your_auth_token cargo run --example axum
//! ```
//!
//! - `TWILIO_AUTH_TOKEN` (required): the auth token of your Twilio account.
//! - `PUBLIC_URL` (optional): the base URL Twilio calls, e.g. `https://abc123.ngrok.app`.
//!   Without it, each request's own `Host` header is used, with `https`.
//! - `PORT` (optional, default 3000): the port to listen on, on 127.0.0.1.
//!
//! Only `POST /twilio/sms` is verified; `GET /healthz` is open. Refused requests are logged on
//! the `tower_twilio::security` target (`RUST_LOG` overrides the default `info` filter).
#![allow(clippy::print_stdout)]

use std::net::{Ipv4Addr, SocketAddr};

use axum::{
    Extension, Router,
    extract::ConnectInfo,
    http::header,
    response::IntoResponse,
    routing::{get, post},
};
use tower_twilio::{Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedWebhook};
use tracing_subscriber::EnvFilter;

/// The reply: one SMS, the same text every time. Nothing from the request goes into the XML,
/// so nothing needs escaping (text that does must be XML-escaped, and characters XML 1.0
/// forbids removed).
const REPLY: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>Received: this message was verified as sent by Twilio.</Message></Response>"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let token = std::env::var("TWILIO_AUTH_TOKEN").map_err(|_| {
        "set TWILIO_AUTH_TOKEN to your account's auth token (Twilio Console > Account > API keys & tokens)"
    })?;
    let public_url = std::env::var("PUBLIC_URL").ok();
    let port: u16 = std::env::var("PORT")
        .map_or(Ok(3000), |port| port.parse())
        .map_err(|_| "PORT must be a port number")?;

    let mut twilio =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", Secret::new(token)?))
            // axum puts the peer address in `ConnectInfo` (see `into_make_service_with_connect_info`).
            .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
    if let Some(base) = &public_url {
        twilio = twilio.public_url(PublicUrl::fixed(base)?);
    }

    let app = Router::new()
        .route("/twilio/sms", post(incoming_sms))
        // Applies to the routes above only.
        .route_layer(twilio)
        .route("/healthz", get(|| async { "ok" }));

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let base = public_url
        .as_deref()
        .unwrap_or("https://<this server's public host>");
    println!(
        "set the Messaging webhook of your Twilio number to: POST {}/twilio/sms",
        base.trim_end_matches('/')
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// Only verified requests get here. The log names the verified account and which secret
/// matched; the message itself (numbers, text) stays out of it.
async fn incoming_sms(Extension(webhook): Extension<VerifiedWebhook>) -> impl IntoResponse {
    tracing::info!(
        account_sid = webhook.account_sid(),
        credential = webhook.credential(),
        "verified SMS"
    );
    ([(header::CONTENT_TYPE, "text/xml")], REPLY)
}
