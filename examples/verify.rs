//! Verifies one webhook the way Twilio signs it, then the same webhook with one byte changed.
//!
//! Run with
//!
//! ```text
//! cargo run --example verify
//! ```
//!
//! Set `TWILIO_AUTH_TOKEN` to use your own token instead of a demo one.
#![allow(clippy::print_stdout)]

use http::{HeaderMap, Method};
use tower_twilio::{
    Secret,
    form::Params,
    signature::{Algorithm, SIGNATURE_HEADER, sign},
    verify::WebhookRequest,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token = std::env::var("TWILIO_AUTH_TOKEN")
        .unwrap_or_else(|_| "0123456789abcdef0123456789abcdef".to_owned());
    let token = Secret::new(token)?;
    let url = "https://example.com/twilio/sms";
    let body = "AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100\
                &To=%2B14155550199&Body=Hello+from+Twilio&MessageSid=SM0123";

    let signature = sign(
        token.expose_secret(),
        Algorithm::HmacSha1,
        url,
        Params::parse(body.as_bytes()).iter(),
    );
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/x-www-form-urlencoded".parse()?);
    headers.insert(SIGNATURE_HEADER, signature.parse()?);

    for (label, body) in [
        ("signed by Twilio", body.to_owned()),
        ("body changed", body.replace("Hello", "Jello")),
    ] {
        let request = WebhookRequest::from_parts(&Method::POST, url, &headers, body.as_bytes());
        match request.verify([&token]) {
            Ok(verified) => println!("{label}: verified ({})", verified.algorithm),
            Err(reason) => println!("{label}: rejected ({reason})"),
        }
    }
    Ok(())
}
