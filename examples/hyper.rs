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
use http::{Method, Request, Response, StatusCode, header};
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

    // The layer finds the peer address in the `PeerAddr` extension inserted below.
    let mut twilio =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", Secret::new(token)?));
    if let Some(base) = &public_url {
        twilio = twilio.public_url(PublicUrl::fixed(base)?);
    }
    let service = ServiceBuilder::new().layer(twilio).service_fn(handle);

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("{}", webhook_url_hint(public_url.as_deref()));
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

/// Only verified requests get here.
async fn handle(request: Request<VerifiedBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST || request.uri().path() != "/twilio/sms" {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    let Some(webhook) = request.extensions().get::<VerifiedWebhook>() else {
        unreachable!("the layer inserts VerifiedWebhook into every request it passes on");
    };
    let from = webhook.params().get("From").unwrap_or("unknown");
    let body = webhook.params().get("Body").unwrap_or_default();
    tracing::info!(from, account_sid = webhook.account_sid(), "verified SMS");
    let twiml = twiml_message(&format!("You said: {body}"));
    let mut response = Response::new(Full::new(Bytes::from(twiml)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "text/xml".parse().unwrap());
    Ok(response)
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
