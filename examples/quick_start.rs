//! The README's Quick start, word for word (`tests/it/quick_start.rs` compares them and sends
//! it signed, unsigned and forged webhooks). Run with
//!
//! ```text
//! TWILIO_AUTH_TOKEN=0123456789abcdef0123456789abcdef PUBLIC_URL=http://127.0.0.1:3000 cargo run --example quick_start
//! ```

use axum::{Router, http::header, response::IntoResponse, routing::post};
use tower_twilio::{Credentials, PublicUrl, Secret, TwilioSignatureLayer};

// TwiML is XML: served as text/plain, Twilio would send the markup itself as the reply SMS.
async fn incoming_sms() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/xml")], "<Response/>")
}

/// `POST /twilio/sms`, for Twilio only.
pub fn app(token: Secret, public_url: PublicUrl) -> Router {
    let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token))
        .public_url(public_url);
    Router::new()
        .route("/twilio/sms", post(incoming_sms))
        .route_layer(twilio)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every refusal is logged (target `tower_twilio::security`): without a subscriber, a 403
    // would leave no trace.
    tracing_subscriber::fmt().init();
    let token = std::env::var("TWILIO_AUTH_TOKEN").map_err(|_| "set TWILIO_AUTH_TOKEN")?;
    // The URL Twilio calls, as entered in the Twilio console, minus the path. Without
    // `.public_url` the layer assumes `https://` and the request's own `Host` header, so a
    // request over plain http would never verify.
    let public_url = std::env::var("PUBLIC_URL").map_err(|_| "set PUBLIC_URL")?;
    let app = app(Secret::new(token)?, PublicUrl::fixed(&public_url)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
