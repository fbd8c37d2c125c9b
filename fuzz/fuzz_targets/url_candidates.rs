//! URL candidate construction: the port helpers over arbitrary strings, the crate's WHATWG
//! serialiser against the `url` crate's, then whole verification so that the lenient
//! candidates (the SDKs' re-serialised forms) are computed for arbitrary URLs.
//!
//! Input: `url 0xFF body`.
#![no_main]

mod common;

use common::{FORM, Fields, TOKEN};
use http::Method;
use libfuzzer_sys::fuzz_target;
use tower_twilio::{
    __private::{Unserializable, add_default_port, binds_same_request, remove_port, whatwg_form},
    Secret,
    form::Params,
    signature::{Algorithm, sign},
    verify::{UrlForm, VerifyError, WebhookRequest},
};

fuzz_target!(|data: &[u8]| {
    let fields = Fields::new(data);
    let url = fields.text(0);
    let body = fields.bytes(1);

    let removed = remove_port(&url);
    let added = add_default_port(&url);
    // Both are idempotent, and undo each other.
    assert_eq!(remove_port(&removed), removed);
    assert_eq!(add_default_port(&added), added);
    if added != url {
        assert_eq!(remove_port(&added), url, "added {added:?}");
    }
    if removed != url {
        assert_ne!(add_default_port(&removed), removed);
    }
    assert!(
        removed == url || added == url,
        "a URL has a port or has none"
    );

    // The WHATWG form is the `url` crate's wherever ours gives one, and ours refuses as invalid
    // only what `url` refuses; the other refusals are out of scope by design (another scheme,
    // a host that needs international domain name processing).
    let theirs = url::Url::parse(&url).ok().map(String::from);
    match whatwg_form(&url) {
        Ok(ours) if theirs.as_deref() == Some(ours.as_str()) => {}
        // `url` never removes a segment like `c:` with `..` (a `file:` rule in the Standard);
        // ours follows the Standard. A path with `..` has no lenient form anyway.
        Ok(ours) if theirs.is_some() && drive_letter_then_dots(&url) => {
            assert!(!binds_same_request(&url, &ours), "{url:?}");
        }
        Ok(ours) => panic!("{url:?}: ours {ours:?}, url {theirs:?}"),
        Err(Unserializable::Invalid) => assert_eq!(theirs, None, "{url:?}"),
        Err(_) => {}
    }

    // A URL that carries bodySHA256 binds the body by its hash, not by form parameters: the
    // round trips below are for form requests. The query ends at a `#`.
    if url.split_once('?').is_some_and(|(_, query)| {
        let query = query.split('#').next().unwrap_or_default();
        Params::parse(query.as_bytes()).get("bodySHA256").is_some()
    }) {
        return;
    }

    let secret = Secret::new(TOKEN).unwrap();
    let params = Params::parse(body);
    let request = |sig: &'_ str| {
        WebhookRequest::new(&Method::POST, &url, body)
            .content_type(FORM)
            .signature(sig.as_bytes())
            .max_params(usize::MAX)
            .verify([&secret])
    };
    // Signed for the URL as received.
    let exact = sign(TOKEN, Algorithm::HmacSha1, &url, params.iter());
    let verified = request(&exact).expect("signed for this URL");
    assert_eq!(verified.url_form, UrlForm::AsReceived);
    // Signed for its other port spelling.
    let other = if removed != url { &removed } else { &added };
    if *other != url {
        let sig = sign(TOKEN, Algorithm::HmacSha1, other, params.iter());
        let verified = request(&sig).expect("signed for the other port spelling");
        assert_ne!(verified.url_form, UrlForm::Normalized);
    }
    // Signed for something else: every candidate, lenient ones included, is tried and fails.
    let sig = sign(
        TOKEN,
        Algorithm::HmacSha1,
        "urn:not-this-url",
        params.iter(),
    );
    if url != "urn:not-this-url" {
        match request(&sig) {
            Err(VerifyError::SignatureMismatch) => {}
            // A lenient form of the URL may itself be the other URL.
            Ok(v) => assert_eq!(v.url_form, UrlForm::Normalized),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    // The exact-only mode never matches a lenient form.
    let exact_only = WebhookRequest::new(&Method::POST, &url, body)
        .content_type(FORM)
        .signature(exact.as_bytes())
        .exact_urls_only(true)
        .max_params(usize::MAX)
        .verify([&secret]);
    assert!(exact_only.is_ok());
});

/// Whether a segment is a Windows drive letter (`c:`, `c|`) and a later one a double-dot
/// segment.
fn drive_letter_then_dots(url: &str) -> bool {
    let url = url
        .trim_matches(|c: char| c <= ' ')
        .replace(['\t', '\n', '\r'], "");
    let mut drive_letter = false;
    for segment in url.split(['/', '\\', '?', '#']) {
        let bytes = segment.as_bytes();
        if bytes.len() == 2 && bytes[0].is_ascii_alphabetic() && matches!(bytes[1], b':' | b'|') {
            drive_letter = true;
        }
        let lower = segment.to_ascii_lowercase();
        if drive_letter && matches!(lower.as_str(), ".." | ".%2e" | "%2e." | "%2e%2e") {
            return true;
        }
    }
    false
}
