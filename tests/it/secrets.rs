//! No secret appears in any `Debug` or `Display` output.

use http::{HeaderMap, Method};
use tower_twilio::{
    Secret,
    form::Params,
    signature::{Algorithm, SignatureSettings},
    verify::WebhookRequest,
};

use crate::support::twilio_signature;

const TOKEN: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";

#[test]
fn no_public_type_prints_the_secret() {
    let secret = Secret::new(TOKEN).unwrap();
    let url = "https://example.com/sms";
    let body = b"From=%2B14155550100&Body=hello";
    let signature = twilio_signature(secret.expose_secret(), Algorithm::HmacSha1, url, body);
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    headers.insert("x-twilio-signature", signature.parse().unwrap());
    let request = WebhookRequest::from_parts(&Method::POST, url, &headers, body);
    let verified = request.verify([&secret]).unwrap();
    let rejected = request
        .verify([&Secret::new("other").unwrap()])
        .unwrap_err();
    let settings = SignatureSettings::parse(b"key=k,algorithm=HMAC_SHA256").unwrap();

    let printed = [
        format!("{secret:?}"),
        format!("{secret:#?}"),
        format!("{request:?}"),
        format!("{verified:?}"),
        format!("{rejected:?} {rejected}"),
        format!("{settings:?}"),
        format!("{:?}", Secret::new("").unwrap_err()),
        format!("{:?}", Params::parse(body)),
    ];
    for text in printed {
        assert!(!text.contains(TOKEN), "secret printed: {text}");
        // Not even a prefix of it.
        assert!(
            !text.contains(&TOKEN[..8]),
            "part of the secret printed: {text}"
        );
    }
}
