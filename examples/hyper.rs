//! Answers Twilio SMS webhooks with hyper 1 and hyper-util, verifying the signature of each one
//! first.
//!
//! Run with
//!
//! ```text
//! TWILIO_AUTH_TOKEN=your_auth_token cargo run --example hyper
//! ```
//!
//! - `TWILIO_AUTH_TOKEN` (required): the auth token of your Twilio account.
//! - `PUBLIC_URL` (optional): the base URL Twilio calls, e.g. `https://abc123.ngrok.app`.
//!   Without it, each request's own `Host` header is used, with `https`.
//! - `PORT` (optional, default 3000): the port to listen on, on 127.0.0.1.
//!
//! The whole server is the webhook endpoint: every request is verified, then `POST /twilio/sms`
//! is answered and anything else gets 404. Refused requests are logged on the
//! `tower_twilio::security` target (`RUST_LOG` overrides the default `info` filter).
#![allow(clippy::print_stdout)]

use std::{convert::Infallible, net::Ipv4Addr};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tower::ServiceBuilder;
use tower_twilio::{
    Credentials, PeerAddr, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody, VerifiedWebhook,
};
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

    // The layer finds the peer address in the `PeerAddr` extension inserted below.
    let mut twilio =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", Secret::new(token)?));
    if let Some(base) = &public_url {
        twilio = twilio.public_url(PublicUrl::fixed(base)?);
    }
    let service = ServiceBuilder::new().layer(twilio).service_fn(handle);

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let base = public_url
        .as_deref()
        .unwrap_or("https://<this server's public host>");
    println!(
        "set the Messaging webhook of your Twilio number to: POST {}/twilio/sms",
        base.trim_end_matches('/')
    );
    loop {
        let (stream, remote) = listener.accept().await?;
        let service = ServiceBuilder::new()
            .map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddr(remote));
                request
            })
            .service(service.clone());
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = connection.await {
                tracing::debug!(%remote, %error, "connection closed with an error");
            }
        });
    }
}

/// Only verified requests get here (anything but `POST /twilio/sms` gets 404). The log names
/// the verified account; the message itself (numbers, text) stays out of it.
async fn handle(request: Request<VerifiedBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST || request.uri().path() != "/twilio/sms" {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    let Some(webhook) = request.extensions().get::<VerifiedWebhook>() else {
        unreachable!("the layer inserts VerifiedWebhook into every request it passes on");
    };
    tracing::info!(account_sid = webhook.account_sid(), "verified SMS");
    let mut response = Response::new(Full::new(Bytes::from_static(REPLY.as_bytes())));
    let xml = HeaderValue::from_static("text/xml");
    response.headers_mut().insert(header::CONTENT_TYPE, xml);
    Ok(response)
}
