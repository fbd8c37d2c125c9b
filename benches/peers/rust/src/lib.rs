//! The Rust crates that can verify a Twilio webhook, each behind the same small interface, on
//! the payloads of `benches/payloads`.
//!
//! For every crate, [`Peer::prepare`] builds what a web framework hands the application (the
//! crate's request type, its header list) and is not timed; [`Peer::verify`] is what the
//! application then runs to get a verdict, from the raw body on: parsing the form where the
//! crate leaves that to its caller, and the crate's own check. `src/main.rs` checks the
//! verdicts, `benches/rust_peers.rs` times the checks whose verdicts are right.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

/// The auth token every payload is signed with.
pub const TOKEN: &str = include_str!("../../../payloads/token");

/// One webhook as Twilio sends it.
pub struct Payload {
    /// File name in `benches/payloads`.
    pub name: &'static str,
    /// The public URL Twilio called.
    pub url: &'static str,
    /// Path and query of that URL.
    pub path: &'static str,
    /// The body's bytes.
    pub body: &'static [u8],
    /// Its Content-Type.
    pub content_type: &'static str,
    /// X-Twilio-Signature.
    pub signature: &'static str,
}

macro_rules! payload {
    ($name:literal) => {
        Payload {
            name: $name,
            url: include_str!(concat!("../../../payloads/", $name, ".url")),
            path: include_str!(concat!("../../../payloads/", $name, ".path")),
            body: include_bytes!(concat!("../../../payloads/", $name, ".body")),
            content_type: include_str!(concat!("../../../payloads/", $name, ".ctype")),
            signature: include_str!(concat!("../../../payloads/", $name, ".sig")),
        }
    };
}

/// SMS, status callback, MMS, JSON: the payloads of `benches/payloads`.
pub static PAYLOADS: [Payload; 4] = [
    payload!("a_sms"),
    payload!("b_status"),
    payload!("c_mms"),
    payload!("d_json"),
];

impl Payload {
    /// A form body (the others are JSON, signed with `bodySHA256` in the URL).
    pub fn is_form(&self) -> bool {
        self.content_type
            .starts_with("application/x-www-form-urlencoded")
    }

    /// The request as received.
    pub fn genuine(&'static self) -> Input {
        Input {
            payload: self,
            body: self.body.to_vec(),
            signature: self.signature.to_owned(),
        }
    }

    /// The same request with one character of a value changed (the first letter or digit after
    /// the first `=` of a form, or the first `:` of JSON): a verifier must reject it.
    pub fn changed_body(&'static self) -> Input {
        let mut body = self.body.to_vec();
        let after = if self.is_form() { b'=' } else { b':' };
        let start = body.iter().position(|&b| b == after).expect("a value") + 1;
        let at = start
            + body[start..]
                .iter()
                .position(u8::is_ascii_alphanumeric)
                .expect("a letter or digit");
        body[at] = match body[at] {
            b'9' | b'Z' | b'z' => body[at] - 1,
            other => other + 1,
        };
        Input {
            payload: self,
            body,
            signature: self.signature.to_owned(),
        }
    }

    /// The request with a well-formed but wrong signature: a verifier must reject it.
    pub fn wrong_signature(&'static self) -> Input {
        let mut signature = self.signature.to_owned();
        let first = if signature.starts_with('A') { "B" } else { "A" };
        signature.replace_range(..1, first);
        Input {
            payload: self,
            body: self.body.to_vec(),
            signature,
        }
    }
}

/// A request to verify: a payload, possibly with its body or signature changed.
pub struct Input {
    /// The payload it comes from (URL, path, content type).
    pub payload: &'static Payload,
    /// The body received.
    pub body: Vec<u8>,
    /// The X-Twilio-Signature received.
    pub signature: String,
}

/// The host the payloads' URLs name.
const HOST: &str = "example.com";

/// A Rust crate that verifies Twilio webhooks.
pub trait Peer {
    /// What the framework hands over: the crate's request type, or the headers.
    type Prepared;

    /// The crate and version, as in the table.
    fn name(&self) -> &'static str;

    /// The crate's name alone: the benchmark id, `rust_peers/ID/PAYLOAD`.
    fn id(&self) -> &'static str {
        self.name().split(' ').next().expect("a name")
    }

    /// Whether the crate says it verifies this kind of webhook; `None` if it does, else why not.
    fn unsupported(&self, payload: &Payload) -> Option<&'static str>;

    /// Builds what a web framework would hand the application (not timed).
    fn prepare(&self, input: &Input) -> Self::Prepared;

    /// The crate's verdict, from the raw body on: `true` for a request it accepts.
    fn verify(&self, prepared: Self::Prepared) -> bool;
}

/// Polls a future that has nothing to wait for (the crates' bodies are in memory) once.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future waits for something: the body is in memory"),
    }
}

/// The form parameters as the two twilio-rs forks hand them to the application.
pub struct FormMap(pub BTreeMap<String, String>);

impl twilio::FromMap for FormMap {
    fn from_map(map: BTreeMap<String, String>) -> Result<Box<Self>, twilio::TwilioError> {
        Ok(Box::new(Self(map)))
    }
}

impl twilio_agnostic::FromMap for FormMap {
    fn from_map(map: BTreeMap<String, String>) -> Result<Box<Self>, twilio_agnostic::TwilioError> {
        Ok(Box::new(Self(map)))
    }
}

/// `twilio` 1.1.0 (twilio-rs): `Client::parse_request` on a hyper 0.14 request. It collects the
/// body, decodes the form into a `BTreeMap`, signs `https://` + Host + path + the sorted
/// pairs, and compares; the signed URL never has a query string, so it cannot verify a webhook
/// whose URL has one (the JSON kind always does).
pub struct TwilioRs(pub twilio::Client);

impl TwilioRs {
    /// A client with the payloads' token.
    pub fn new() -> Self {
        Self(twilio::Client::new(
            "AC00000000000000000000000000000000",
            TOKEN,
        ))
    }
}

impl Default for TwilioRs {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for TwilioRs {
    type Prepared = hyper::Request<hyper::Body>;

    fn name(&self) -> &'static str {
        "twilio 1.1.0"
    }

    fn unsupported(&self, payload: &Payload) -> Option<&'static str> {
        (!payload.is_form()).then_some("forms only")
    }

    fn prepare(&self, input: &Input) -> Self::Prepared {
        hyper::Request::post(input.payload.path)
            .header("host", HOST)
            .header("content-type", input.payload.content_type)
            .header("x-twilio-signature", &input.signature)
            .body(hyper::Body::from(input.body.clone()))
            .expect("a valid request")
    }

    fn verify(&self, request: Self::Prepared) -> bool {
        ready(self.0.parse_request::<FormMap>(request)).is_ok()
    }
}

/// `twilio-agnostic` 1.0.0, a twilio-rs fork: `Client::parse_request` on an `http` 0.2
/// request with the body in memory; the same signed string, HMAC-SHA1 from `rust-crypto`.
pub struct TwilioAgnostic(pub twilio_agnostic::Client);

impl TwilioAgnostic {
    /// A client with the payloads' token.
    pub fn new() -> Self {
        Self(twilio_agnostic::Client::new(
            "AC00000000000000000000000000000000",
            TOKEN,
        ))
    }
}

impl Default for TwilioAgnostic {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for TwilioAgnostic {
    type Prepared = (http02::request::Parts, Vec<u8>);

    fn name(&self) -> &'static str {
        "twilio-agnostic 1.0.0"
    }

    fn unsupported(&self, payload: &Payload) -> Option<&'static str> {
        (!payload.is_form()).then_some("forms only")
    }

    fn prepare(&self, input: &Input) -> Self::Prepared {
        let (parts, ()) = http02::Request::post(input.payload.path)
            .header("host", HOST)
            .header("content-type", input.payload.content_type)
            .header("x-twilio-signature", &input.signature)
            .body(())
            .expect("a valid request")
            .into_parts();
        (parts, input.body.clone())
    }

    fn verify(&self, (parts, body): Self::Prepared) -> bool {
        let request = http02::Request::from_parts(parts, body.as_slice());
        ready(self.0.parse_request::<FormMap>(request)).is_ok()
    }
}

/// `sms-twilio` 0.3.0 (smskit): `InboundWebhook::verify(headers, body)` with the webhook URL set
/// on the client. It decodes the form with `serde_urlencoded`, sorts the pairs, signs, and
/// compares the base64 strings.
pub struct SmsTwilio {
    /// One client per webhook URL: the URL is part of its configuration.
    clients: Vec<(&'static str, sms_twilio::TwilioClient)>,
}

impl SmsTwilio {
    /// A client for each payload's URL.
    pub fn new() -> Self {
        let clients = PAYLOADS
            .iter()
            .map(|p| {
                let client =
                    sms_twilio::TwilioClient::new("AC00000000000000000000000000000000", TOKEN)
                        .with_webhook_url(p.url);
                (p.url, client)
            })
            .collect();
        Self { clients }
    }
}

impl Default for SmsTwilio {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for SmsTwilio {
    type Prepared = (&'static str, sms_core::Headers, Vec<u8>);

    fn name(&self) -> &'static str {
        "sms-twilio 0.3.0"
    }

    fn unsupported(&self, payload: &Payload) -> Option<&'static str> {
        (!payload.is_form()).then_some("forms only")
    }

    fn prepare(&self, input: &Input) -> Self::Prepared {
        let headers = vec![
            ("Host".to_owned(), HOST.to_owned()),
            (
                "Content-Type".to_owned(),
                input.payload.content_type.to_owned(),
            ),
            ("X-Twilio-Signature".to_owned(), input.signature.clone()),
        ];
        (input.payload.url, headers, input.body.clone())
    }

    fn verify(&self, (url, headers, body): Self::Prepared) -> bool {
        use sms_core::InboundWebhook as _;
        let (_, client) = self
            .clients
            .iter()
            .find(|(u, _)| *u == url)
            .expect("a client for every payload URL");
        client.verify(&headers, &body).is_ok()
    }
}

/// `webhook-verify` 0.1.0: `verify(Provider::Twilio, headers, body, secret, options)`, the
/// caller parsing the form into `VerifyOptions::form_params` (its docs say to, with the URL in
/// `request_url`); for a JSON body its docs say to pass no parameters, so only the URL
/// (with `bodySHA256`) is checked, not the body.
pub struct WebhookVerify(pub webhook_verify::Secret);

impl WebhookVerify {
    /// The payloads' token.
    pub fn new() -> Self {
        Self(webhook_verify::Secret::new(TOKEN))
    }
}

impl Default for WebhookVerify {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for WebhookVerify {
    type Prepared = (&'static Payload, Vec<(String, String)>, Vec<u8>);

    fn name(&self) -> &'static str {
        "webhook-verify 0.1.0"
    }

    fn unsupported(&self, _payload: &Payload) -> Option<&'static str> {
        None
    }

    fn prepare(&self, input: &Input) -> Self::Prepared {
        let headers = vec![
            ("Host".to_owned(), HOST.to_owned()),
            (
                "Content-Type".to_owned(),
                input.payload.content_type.to_owned(),
            ),
            ("X-Twilio-Signature".to_owned(), input.signature.clone()),
        ];
        (input.payload, headers, input.body.clone())
    }

    fn verify(&self, (payload, headers, body): Self::Prepared) -> bool {
        let params: Vec<(String, String)> = if payload.is_form() {
            parse_form(&body)
        } else {
            Vec::new()
        };
        let options = webhook_verify::VerifyOptions::default()
            .with_request_url(payload.url)
            .with_form_params(params);
        webhook_verify::verify(
            webhook_verify::Provider::Twilio,
            &headers,
            &body,
            &self.0,
            options,
        )
        .is_ok()
    }
}

/// A form body decoded into owned pairs, as `url::form_urlencoded` (what the twilio-rs forks use
/// inside) does: the caller's part for crates that take parsed parameters.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}
