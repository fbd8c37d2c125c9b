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

use axum::{Router, http::header, response::IntoResponse, routing::post};
use tonic::{
    service::Routes,
    transport::{
        Server,
        server::{TcpConnectInfo, TcpIncoming},
    },
};
use tower_twilio::{Credentials, PublicUrl, Secret, TwilioSignatureLayer};
use tracing_subscriber::EnvFilter;

/// The reply: one SMS, the same text every time; nothing from the request goes into the XML.
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
    let base = public_url
        .as_deref()
        .unwrap_or("https://<this server's public host>");
    println!(
        "set the Messaging webhook of your Twilio number to: POST {}/twilio/sms",
        base.trim_end_matches('/')
    );
    Server::builder()
        // Twilio sends webhooks over HTTP/1.1; gRPC clients use HTTP/2.
        .accept_http1(true)
        .add_routes(Routes::from(routes))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await?;
    Ok(())
}

/// Only verified requests get here.
async fn incoming_sms() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/xml")], REPLY)
}
