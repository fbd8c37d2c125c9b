//! Serves the gRPC health service and a verified Twilio SMS webhook on one port with tonic.
//!
//! Run with
//!
//! ```text
//! TWILIO_AUTH_TOKEN=your_auth_token cargo run --example tonic
//! ```
//!
//! - `TWILIO_AUTH_TOKEN` (required): the auth token of your Twilio account.
//! - `PUBLIC_URL` (optional): the base URL Twilio calls, e.g. `https://abc123.ngrok.app`.
//!   Without it, each request's own `Host` header is used, with `https`.
//! - `PORT` (optional, default 3000): the port to listen on, on 127.0.0.1.
//!
//! gRPC (`grpc.health.v1.Health`, over HTTP/2) is not verified: the layer sits on the webhook
//! route only, as a `route_layer`. Putting it on the whole server with
//! `Server::builder().layer(..)` would refuse every gRPC call, which carries no Twilio
//! signature. The webhook is served over HTTP/1.1 (as Twilio sends it) and HTTP/2. Refused
//! requests are logged on the `tower_twilio::security` target (`RUST_LOG` overrides the
//! default `info` filter).
#![allow(clippy::print_stdout)]

use std::net::Ipv4Addr;

use axum::{Extension, Router, http::header, response::IntoResponse, routing::post};
use tonic::{
    service::Routes,
    transport::{
        Server,
        server::{TcpConnectInfo, TcpIncoming},
    },
};
use tower_twilio::{Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedWebhook};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let Ok(token) = std::env::var("TWILIO_AUTH_TOKEN") else {
        eprintln!(
            "error: TWILIO_AUTH_TOKEN is not set. Set it to your account's auth token \
             (Twilio Console > Account > API keys & tokens)."
        );
        std::process::exit(2);
    };
    let public_url = std::env::var("PUBLIC_URL").ok();
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number, not {port:?}"))?,
        Err(_) => 3000,
    };

    let mut twilio =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", Secret::new(token)?))
            // tonic puts the peer address in `TcpConnectInfo`.
            .peer_addr_with(|ext| {
                ext.get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr)
                    .map(|addr| addr.ip())
            });
    if let Some(base) = &public_url {
        twilio = twilio.public_url(PublicUrl::fixed(base)?);
    }

    // `grpc.health.v1.Health` reports the server ("") as SERVING from the start.
    let (_health_reporter, health_service) = tonic_health::server::health_reporter();
    let webhook = Router::new()
        .route("/twilio/sms", post(incoming_sms))
        .route_layer(twilio);
    let routes = Routes::new(health_service)
        .into_axum_router()
        .merge(webhook);

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr} (gRPC health: grpc.health.v1.Health/Check)");
    println!("{}", webhook_url_hint(public_url.as_deref()));
    Server::builder()
        // Twilio sends webhooks over HTTP/1.1; gRPC clients use HTTP/2.
        .accept_http1(true)
        .add_routes(Routes::from(routes))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await?;
    Ok(())
}

/// Only verified requests get here.
async fn incoming_sms(Extension(webhook): Extension<VerifiedWebhook>) -> impl IntoResponse {
    let from = webhook.params().get("From").unwrap_or("unknown");
    let body = webhook.params().get("Body").unwrap_or_default();
    tracing::info!(from, account_sid = webhook.account_sid(), "verified SMS");
    (
        [(header::CONTENT_TYPE, "text/xml")],
        twiml_message(&format!("You said: {body}")),
    )
}

/// A TwiML document that replies with one SMS.
fn twiml_message(text: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>{}</Message></Response>"#,
        xml_escape(text)
    )
}

/// Escapes text for an XML element, dropping the characters XML 1.0 does not allow.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn webhook_url_hint(public_url: Option<&str>) -> String {
    match public_url {
        Some(base) => format!(
            "set the Messaging webhook of your Twilio number to: POST {}/twilio/sms",
            base.trim_end_matches('/')
        ),
        None => "set the Messaging webhook of your Twilio number to: POST \
                 https://<this server's public host>/twilio/sms \
                 (set PUBLIC_URL if a proxy or tunnel changes the host)"
            .to_owned(),
    }
}
