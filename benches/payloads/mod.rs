//! The four benchmark payloads of this directory (see README.md), loaded at compile time, with
//! the requests built from them. Shared by `benches/verify.rs` and the allocation test
//! (`tests/it/allocations.rs`), so both measure the same requests.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use tower_twilio::{__private::write_canonical, form::Params, verify::WebhookRequest};

/// The auth token every payload is signed with.
pub(crate) const TOKEN: &str = include_str!("token");

/// The public base URL the payloads were signed for.
pub(crate) const PUBLIC_BASE: &str = "https://example.com";

/// One payload.
pub(crate) struct Payload {
    pub(crate) name: &'static str,
    pub(crate) url: &'static str,
    pub(crate) path: &'static str,
    pub(crate) body: &'static [u8],
    pub(crate) content_type: &'static str,
    pub(crate) signature: &'static str,
}

macro_rules! payload {
    ($name:literal) => {
        Payload {
            name: $name,
            url: include_str!(concat!($name, ".url")),
            path: include_str!(concat!($name, ".path")),
            body: include_bytes!(concat!($name, ".body")),
            content_type: include_str!(concat!($name, ".ctype")),
            signature: include_str!(concat!($name, ".sig")),
        }
    };
}

/// SMS, status callback, MMS, JSON.
pub(crate) const PAYLOADS: [Payload; 4] = [
    payload!("a_sms"),
    payload!("b_status"),
    payload!("c_mms"),
    payload!("d_json"),
];

impl Payload {
    pub(crate) fn is_form(&self) -> bool {
        self.content_type
            .starts_with("application/x-www-form-urlencoded")
    }

    /// The payload's signature with its first character changed: still well-formed, wrong.
    pub(crate) fn wrong_signature(&self) -> String {
        let mut forged = self.signature.to_owned();
        let first = if forged.starts_with('A') { "B" } else { "A" };
        forged.replace_range(..1, first);
        forged
    }

    /// What HMAC-SHA1 runs over: the URL, then the canonical form parameters.
    pub(crate) fn signed_string(&self) -> Vec<u8> {
        let mut signed = self.url.as_bytes().to_vec();
        if self.is_form() {
            write_canonical(&Params::parse(self.body), &mut signed);
        }
        signed
    }

    /// The pure verifier's view of the payload, with `signature`.
    pub(crate) fn request<'a>(&'a self, signature: &'a str) -> WebhookRequest<'a> {
        WebhookRequest::new(&Method::POST, self.url, self.body)
            .content_type(self.content_type.as_bytes())
            .signature(signature.as_bytes())
    }

    /// The payload as the HTTP request Twilio sends.
    pub(crate) fn http_request(&self) -> Request<Full<Bytes>> {
        Request::post(self.path)
            .header("host", "example.com")
            .header("content-type", self.content_type)
            .header("x-twilio-signature", self.signature)
            .header("user-agent", "TwilioProxy/1.1")
            .body(Full::new(Bytes::from_static(self.body)))
            .expect("valid request")
    }
}
