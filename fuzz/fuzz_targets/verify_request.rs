//! Whole-request verification with arbitrary method, URL, body and headers.
//!
//! Input: `method 0xFF url 0xFF body 0xFF content-type 0xFF signature 0xFF settings 0xFF
//! secret`; a missing field is an absent header (an empty secret means the fixed one).
//!
//! Checks: no panic; the secret-free checks agree with `verify`; a method other than `GET` or
//! `POST` is refused as such; a `GET` or `POST` form request whose signature `sign` made for
//! the same URL and body (with the algorithm the settings header names) verifies, unless its
//! URL carries `bodySHA256` (then the body hash decides); a JSON `POST` signed through
//! `bodySHA256` verifies and fails when changed; and a form request that verifies exactly as
//! received, with its parameters covered, carries the signature `sign` computes.
#![no_main]

mod common;

use common::{FORM, Fields, TOKEN};

/// A header field holding only this byte is an absent header.
const ABSENT: u8 = 0xFE;
use http::Method;
use libfuzzer_sys::fuzz_target;
use tower_twilio::{
    __private::{check_method, check_without_secrets},
    Secret,
    form::{Params, is_form_urlencoded},
    signature::{Algorithm, SignatureSettings, sign, url_with_body_sha256},
    verify::{Covered, UrlForm, VerifyError, WebhookRequest},
};

fuzz_target!(|data: &[u8]| {
    let fields = Fields::new(data);
    let Ok(method) = Method::from_bytes(fields.bytes(0)) else {
        return;
    };
    let url = fields.text(1);
    let body = fields.bytes(2);
    let secret_bytes = match fields.bytes(6) {
        [] => TOKEN,
        bytes => bytes,
    };
    let secret = Secret::new(secret_bytes).unwrap();
    let header = |index: usize| fields.get(index).filter(|value| *value != [ABSENT]);

    let mut request = WebhookRequest::new(&method, &url, body);
    if let Some(value) = header(3) {
        request = request.content_type(value);
    }
    if let Some(value) = header(4) {
        request = request.signature(value);
    }
    if let Some(value) = header(5) {
        request = request.signature_settings(value);
    }

    let precheck = check_without_secrets(&request);
    let verdict = request.verify([&secret]);
    let exact_verdict = request.exact_urls_only(true).verify([&secret]);
    match (&precheck, &verdict) {
        (Err(e), v) => assert_eq!(v, &Err(*e)),
        (Ok(()), Ok(_)) => {}
        (Ok(()), Err(e)) => assert!(
            matches!(
                e,
                VerifyError::SignatureMismatch | VerifyError::BodyHashMismatch
            ),
            "{e:?}"
        ),
    }
    if exact_verdict.is_ok() {
        assert!(verdict.is_ok(), "exact-only accepted what lenient refused");
    }

    // Accepted as received: the header is what `sign` computes (unless the UTF-16 order,
    // which only differs for characters above U+FFFF, was the one that matched).
    if let (Ok(verified), Some(sig)) = (&verdict, header(4))
        && verified.url_form == UrlForm::AsReceived
        && verified.covered == Covered::FormParams
        && header(3).is_some_and(is_form_urlencoded)
        && !body.iter().any(|&b| b >= 0xF0)
        && !body
            .windows(2)
            .any(|w| w[0] == b'%' && matches!(w[1], b'f' | b'F'))
    {
        let params = Params::parse(body);
        assert_eq!(
            sign(secret_bytes, verified.algorithm, &url, params.iter()).as_bytes(),
            sig
        );
    }

    // Only GET and POST are Twilio's: anything else is refused before the signature counts.
    if check_method(&method).is_err() {
        assert_eq!(verdict, Err(VerifyError::MethodNotAllowed));
        return;
    }
    // A bodySHA256 in the URL binds the body whatever the content type; a GET has no body.
    // Over-approximated on purpose: any piece of the whole URL whose decoded name or value
    // holds `bodySHA256`, wherever the `?`, `#` and `=` fall (an `=` in the host makes the
    // query part of a value here), so that no URL the verifier reads as hash-bound is taken
    // for a plain form.
    let query_has_hash = Params::parse(url.as_bytes())
        .iter()
        .any(|(name, value)| name.contains("bodySHA256") || value.contains("bodySHA256"));
    if query_has_hash || (method == Method::GET && !body.is_empty()) {
        return;
    }

    // Round trip: signed by `sign` for this URL and body, it verifies.
    let algorithm = header(5)
        .and_then(|value| SignatureSettings::parse(value).ok())
        .map_or(Algorithm::HmacSha1, |settings| settings.algorithm());
    let params = Params::parse(body);
    let signature = sign(secret_bytes, algorithm, &url, params.iter());
    // (Without the parameter limit: a fuzzed body may hold more than 1000 pairs.)
    let mut signed = WebhookRequest::new(&method, &url, body)
        .content_type(FORM)
        .signature(signature.as_bytes())
        .max_params(usize::MAX);
    if let Some(value) = header(5)
        && SignatureSettings::parse(value).is_ok()
    {
        signed = signed.signature_settings(value);
    }
    let verified = signed.verify([&secret]).expect("signed by `sign`");
    assert_eq!(verified.algorithm, algorithm);
    assert_eq!(verified.url_form, UrlForm::AsReceived);

    // A non-form body signed through bodySHA256, when the URL leaves room for it.
    if method == Method::POST && !url.contains('#') {
        let hashed_url = url_with_body_sha256(&url, body);
        let no_params: [(&str, &str); 0] = [];
        let signature = sign(secret_bytes, Algorithm::HmacSha1, &hashed_url, no_params);
        let json = WebhookRequest::new(&method, &hashed_url, body)
            .content_type(b"application/json")
            .signature(signature.as_bytes());
        json.verify([&secret]).expect("signed through bodySHA256");
        let mut changed = body.to_vec();
        changed.push(b' ');
        let changed = WebhookRequest::new(&method, &hashed_url, &changed)
            .content_type(b"application/json")
            .signature(signature.as_bytes());
        assert_eq!(
            changed.verify([&secret]),
            Err(VerifyError::BodyHashMismatch)
        );
    }
});
