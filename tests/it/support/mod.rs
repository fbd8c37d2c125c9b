//! Helpers shared by the integration tests.

pub(crate) mod store;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower_twilio::{
    Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody, VerifiedWebhook,
    events::{OnSecurityEvent, SecurityEvent},
    form::Params,
    public_url::{ForwardedField, ForwardedHeaders},
    signature::{Algorithm, sign},
};

/// Forwarding headers with every field read ([`ForwardedField::ALL`]), trusted from proxies in
/// 10.0.0.0/8: the widest trust an operator can give.
pub(crate) fn every_field_from_10_8() -> ForwardedHeaders {
    ForwardedField::ALL
        .into_iter()
        .fold(ForwardedHeaders::new(), ForwardedHeaders::read)
        .trust_proxy("10.0.0.0/8".parse().unwrap())
}

pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const PUBLIC: &str = "https://api.example.com";
pub(crate) const SMS_BODY: &str = "ToCountry=US&ToState=CA&SmsMessageSid=SM0123&NumMedia=0\
    &ToCity=&FromZip=94105&SmsSid=SM0123&FromState=CA&SmsStatus=received&FromCity=SAN+FRANCISCO\
    &Body=Hello+%F0%9F%91%8B+world&FromCountry=US&To=%2B14155550199&ToZip=&NumSegments=1\
    &MessageSid=SM0123&AccountSid=AC0123ffffffffffffffffffffffffffff&From=%2B14155550100&ApiVersion=2010-04-01";

pub(crate) fn token() -> Secret {
    Secret::new(TOKEN).unwrap()
}

/// The `X-Twilio-Signature` Twilio sends for a request to `url` with this form `body`: the
/// HMAC of the URL and the decoded parameters. A GET or a `bodySHA256` webhook signs its URL
/// only: pass an empty body. Every test in this suite signs through here.
pub(crate) fn twilio_signature(
    secret: impl AsRef<[u8]>,
    algorithm: Algorithm,
    url: &str,
    body: impl AsRef<[u8]>,
) -> String {
    sign(
        secret.as_ref(),
        algorithm,
        url,
        Params::parse(body.as_ref()).iter(),
    )
}

/// A form POST to `path`, signed for `PUBLIC ‖ path` with `TOKEN`.
pub(crate) fn signed_post(path: &str, body: &str) -> Request<Full<Bytes>> {
    let signature = twilio_signature(TOKEN, Algorithm::HmacSha1, &format!("{PUBLIC}{path}"), body);
    Request::post(path)
        .header("host", "internal:3000")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .header("i-twilio-idempotency-token", "idem-1")
        .header("user-agent", "TwilioProxy/1.1")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// The layer most tests use: tenant `acme` with `TOKEN` as its primary auth token, the fixed
/// public URL `PUBLIC`, events to `sink`.
pub(crate) fn layer(sink: &RecordingSink) -> TwilioSignatureLayer<Credentials, RecordingSink> {
    layer_with(
        Credentials::new()
            .tenant("acme")
            .auth_token("primary", token()),
        sink,
    )
}

/// [`layer`] with other credentials.
pub(crate) fn layer_with(
    credentials: Credentials,
    sink: &RecordingSink,
) -> TwilioSignatureLayer<Credentials, RecordingSink> {
    TwilioSignatureLayer::new(credentials)
        .public_url(PublicUrl::fixed(PUBLIC).unwrap())
        .on_security_event(sink.clone())
}

/// The inner service of most tests: answers with the body it received, and puts the verified
/// context into the response extensions, so tests can see both.
pub(crate) async fn echo(
    request: Request<VerifiedBody>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let webhook = request.extensions().get::<VerifiedWebhook>().cloned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut response = Response::new(Full::new(body));
    if let Some(webhook) = webhook {
        response.extensions_mut().insert(webhook);
    }
    Ok(response)
}

/// Collects a response body.
pub(crate) async fn body_string<B>(response: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A sink that keeps every event.
#[derive(Clone, Default)]
pub(crate) struct RecordingSink {
    events: Arc<Mutex<Vec<SecurityEvent>>>,
}

impl RecordingSink {
    pub(crate) fn events(&self) -> Vec<SecurityEvent> {
        self.events.lock().unwrap().clone()
    }
}

impl OnSecurityEvent for RecordingSink {
    fn on_security_event(&self, event: &SecurityEvent) {
        self.events.lock().unwrap().push(event.clone());
    }
}

/// A writer the JSON tracing subscriber of [`capture_json_logs`] appends to.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this thread's tracing events, as one flat JSON object per line, to the returned
/// buffer until the guard drops. Use with a current-thread runtime.
pub(crate) fn capture_json_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}
