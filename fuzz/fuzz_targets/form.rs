//! Form decoding and canonicalisation: `Params::parse` over arbitrary bytes, then the signing
//! no-ops (pair order, identical repeats, re-encoding) must not change the signature, and the
//! body must verify with the signature `sign` made for it.
#![no_main]

mod common;

use common::{FORM, TOKEN};
use http::Method;
use libfuzzer_sys::fuzz_target;
use tower_twilio::{
    Secret,
    form::Params,
    signature::{Algorithm, sign},
    verify::{UrlForm, WebhookRequest},
};

const URL: &str = "https://example.com/twilio/sms?tenant=7";

fuzz_target!(|data: &[u8]| {
    let params = Params::parse(data);
    let pairs: Vec<(&str, &str)> = params.iter().collect();
    assert_eq!(pairs.len(), params.len());
    assert_eq!(params.is_empty(), pairs.is_empty());
    for (name, value) in &pairs {
        let first = params.get(name).expect("a parsed name is found");
        assert_eq!(params.get_all(name).next(), Some(first));
        assert!(params.get_all(name).any(|v| v == *value));
    }

    let signature = sign(TOKEN, Algorithm::HmacSha1, URL, pairs.iter().copied());

    // Signing no-ops: order and identical repeats.
    let reversed = pairs.iter().rev().copied();
    assert_eq!(sign(TOKEN, Algorithm::HmacSha1, URL, reversed), signature);
    let doubled = pairs.iter().chain(pairs.iter()).copied();
    assert_eq!(sign(TOKEN, Algorithm::HmacSha1, URL, doubled), signature);

    // Re-encoding the decoded pairs gives the same pairs back.
    let reencoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().copied())
        .finish();
    let again = Params::parse(reencoded.as_bytes());
    assert!(
        again.iter().eq(params.iter()),
        "re-encoding changed the pairs"
    );

    // And the body verifies, encoded either way.
    let secret = Secret::new(TOKEN).unwrap();
    for body in [data, reencoded.as_bytes()] {
        let verified = WebhookRequest::new(&Method::POST, URL, body)
            .content_type(FORM)
            .signature(signature.as_bytes())
            .max_params(usize::MAX)
            .verify([&secret])
            .expect("a body verifies with the signature made for it");
        assert_eq!(verified.url_form, UrlForm::AsReceived);
    }
});
