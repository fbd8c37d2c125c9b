//! The hostile-input table: requests an attacker can send, each with the outcome it must get.
//!
//! Rows that an `http::Request` can express go through the whole layer with
//! `tower::ServiceExt::oneshot` (`hostile_request_table`); the ones that need the wire (lying
//! `Content-Length`, chunked encoding, unusual request targets) go through a real hyper server
//! on 127.0.0.1 over a raw `TcpStream`. Every network step is bounded by [`bounded`]; nothing
//! asserts on time.

use std::{
    future::Future,
    net::SocketAddr,
    num::NonZeroUsize,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_twilio::{
    Credentials, PeerAddr, PublicUrl, Rejection, RejectionKind, Secret, TwilioSignatureLayer,
    events::{Outcome, TracingSink},
    public_url::Scheme,
    signature::Algorithm,
};

use crate::support::*;

/// The longest any single network step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("bounded step timed out")
}

const SHARED_KEY_ID: &str = "webhooks_sharedkey_1";
const SHARED_SECRET: &str = "shared-key-secret-0123456789";
const FORM: &str = "application/x-www-form-urlencoded";

type Layer = TwilioSignatureLayer<Credentials, RecordingSink>;

fn credentials() -> Credentials {
    Credentials::new()
        .account("AC0123ffffffffffffffffffffffffffff")
        .auth_token("primary", token())
        .shared_key(SHARED_KEY_ID, Secret::new(SHARED_SECRET).unwrap())
}

/// The layer most rows use: fixed public URL, default limits.
fn fixed(sink: &RecordingSink) -> Layer {
    layer_with(credentials(), sink)
}

fn request_host(sink: &RecordingSink) -> Layer {
    TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::request_host(Scheme::Https))
        .on_security_event(sink.clone())
}

fn behind_proxy(sink: &RecordingSink) -> Layer {
    TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::trust_forwarded(every_field_from_10_8()))
        .on_security_event(sink.clone())
}

fn large_bodies(sink: &RecordingSink) -> Layer {
    fixed(sink)
        .max_body_size(NonZeroUsize::new(1024 * 1024).unwrap())
        .max_params(NonZeroUsize::new(10_000).unwrap())
}

fn exact_only(sink: &RecordingSink) -> Layer {
    fixed(sink).exact_urls_only(true)
}

/// A form POST to `target` with `body` and the given signature headers.
fn post(target: &str, body: impl Into<Bytes>, signatures: &[&[u8]]) -> Request<Full<Bytes>> {
    let mut request = Request::post(target)
        .header("host", "internal:3000")
        .header("content-type", FORM)
        .header("user-agent", "TwilioProxy/1.1")
        .body(Full::new(body.into()))
        .unwrap();
    for value in signatures {
        request.headers_mut().append(
            "x-twilio-signature",
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    request
}

/// A form POST to `path`, signed for `signed_path` and `signed_body` under [`PUBLIC`].
fn post_signed_for(
    path: &str,
    body: &str,
    signed_path: &str,
    signed_body: &str,
) -> Request<Full<Bytes>> {
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}{signed_path}"),
        signed_body,
    );
    post(path, body.to_owned(), &[signature.as_bytes()])
}

fn with_header(
    mut request: Request<Full<Bytes>>,
    name: &'static str,
    value: &[u8],
) -> Request<Full<Bytes>> {
    request
        .headers_mut()
        .append(name, HeaderValue::from_bytes(value).unwrap());
    request
}

fn without_header(mut request: Request<Full<Bytes>>, name: &'static str) -> Request<Full<Bytes>> {
    request.headers_mut().remove(name);
    request
}

fn from_peer(mut request: Request<Full<Bytes>>, peer: &str) -> Request<Full<Bytes>> {
    request
        .extensions_mut()
        .insert(PeerAddr(peer.parse().unwrap()));
    request
}

/// A body whose signature contains `+` or `/`, so that its base64url spelling differs.
fn body_with_non_url_safe_signature() -> (String, String) {
    (0..)
        .map(|i| format!("Body=probe{i}&AccountSid=AC0123ffffffffffffffffffffffffffff"))
        .map(|body| {
            let signature = twilio_signature(
                TOKEN,
                Algorithm::HmacSha1,
                &format!("{PUBLIC}/twilio/sms"),
                &body,
            );
            (body, signature)
        })
        .find(|(_, signature)| signature.contains(['+', '/']))
        .unwrap()
}

/// A SharedKey (HMAC-SHA256) request.
fn shared_key_post(settings: &[&[u8]]) -> Request<Full<Bytes>> {
    let signature = twilio_signature(
        SHARED_SECRET,
        Algorithm::HmacSha256,
        &format!("{PUBLIC}/twilio/sms"),
        SMS_BODY,
    );
    let mut request = post("/twilio/sms", SMS_BODY, &[signature.as_bytes()]);
    for value in settings {
        request.headers_mut().append(
            "x-twilio-webhooks-signature-settings",
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    request
}

fn many_params(count: usize) -> String {
    (0..count)
        .map(|i| format!("p{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Reaches the handler with its body unchanged; no event.
    Pass,
    /// Refused with this reason and status, and exactly one event.
    Reject(RejectionKind, StatusCode),
}

use Expect::Pass;

const fn forbidden(kind: RejectionKind) -> Expect {
    Expect::Reject(kind, StatusCode::FORBIDDEN)
}

struct Row {
    name: &'static str,
    layer: fn(&RecordingSink) -> Layer,
    request: Request<Full<Bytes>>,
    expect: Expect,
}

fn row(
    name: &'static str,
    layer: fn(&RecordingSink) -> Layer,
    request: Request<Full<Bytes>>,
    expect: Expect,
) -> Row {
    Row {
        name,
        layer,
        request,
        expect,
    }
}

fn rows() -> Vec<Row> {
    use RejectionKind::*;

    let url = format!("{PUBLIC}/twilio/sms");
    let good = twilio_signature(TOKEN, Algorithm::HmacSha1, &url, SMS_BODY);
    let (probe_body, probe_sig) = body_with_non_url_safe_signature();
    let base64url = probe_sig.replace('+', "-").replace('/', "_");
    let oversized = "A".repeat(10 * 1024);
    let mut non_ascii = good.as_bytes()[..26].to_vec();
    non_ascii.extend_from_slice("é".as_bytes());
    let ten_thousand = many_params(10_000);

    vec![
        // --- the signature header
        row(
            "valid request (control)",
            fixed,
            signed_post("/twilio/sms", SMS_BODY),
            Pass,
        ),
        row(
            "missing signature header",
            fixed,
            post("/twilio/sms", SMS_BODY, &[]),
            forbidden(MissingSignature),
        ),
        row(
            "duplicate signature header (both valid)",
            fixed,
            post("/twilio/sms", SMS_BODY, &[good.as_bytes(), good.as_bytes()]),
            forbidden(DuplicateSignature),
        ),
        row(
            "empty signature header",
            fixed,
            post("/twilio/sms", SMS_BODY, &[b""]),
            forbidden(MalformedSignature),
        ),
        row(
            "10 KB signature header",
            fixed,
            post("/twilio/sms", SMS_BODY, &[oversized.as_bytes()]),
            forbidden(MalformedSignature),
        ),
        row(
            "non-ASCII signature header",
            fixed,
            post("/twilio/sms", SMS_BODY, &[&non_ascii]),
            forbidden(MalformedSignature),
        ),
        row(
            "base64url signature",
            fixed,
            post("/twilio/sms", probe_body.clone(), &[base64url.as_bytes()]),
            forbidden(MalformedSignature),
        ),
        row(
            "standard base64 of the same MAC (control)",
            fixed,
            post("/twilio/sms", probe_body, &[probe_sig.as_bytes()]),
            Pass,
        ),
        row(
            "unpadded signature",
            fixed,
            post(
                "/twilio/sms",
                SMS_BODY,
                &[good.trim_end_matches('=').as_bytes()],
            ),
            forbidden(MalformedSignature),
        ),
        row(
            "signature in lower case",
            fixed,
            post(
                "/twilio/sms",
                SMS_BODY,
                &[good.to_ascii_lowercase().as_bytes()],
            ),
            forbidden(SignatureMismatch),
        ),
        // --- the settings header
        row(
            "SharedKey request with HMAC-SHA256 (control)",
            fixed,
            shared_key_post(&[b"key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"]),
            Pass,
        ),
        row(
            "two settings headers",
            fixed,
            shared_key_post(&[
                b"key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
                b"key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
            ]),
            forbidden(MalformedSettings),
        ),
        row(
            "unknown algorithm",
            fixed,
            shared_key_post(&[b"key=webhooks_sharedkey_1,algorithm=HMAC_SHA512"]),
            forbidden(UnsupportedAlgorithm),
        ),
        row(
            "settings header without a key id",
            fixed,
            shared_key_post(&[b"algorithm=HMAC_SHA256"]),
            forbidden(MalformedSettings),
        ),
        row(
            "settings header naming an unknown key id",
            fixed,
            shared_key_post(&[b"key=webhooks_sharedkey_2,algorithm=HMAC_SHA256"]),
            forbidden(UnknownSharedKey),
        ),
        row(
            "settings header that is not UTF-8",
            fixed,
            shared_key_post(&[b"key=\xff\xfe,algorithm=HMAC_SHA256"]),
            forbidden(MalformedSettings),
        ),
        // --- the body: encodings
        row(
            "invalid percent-encoding in the body, signed as the official libraries decode it",
            fixed,
            post_signed_for(
                "/twilio/sms",
                "Body=%ZZ&Other=%&A=%4",
                "/twilio/sms",
                "Body=%ZZ&Other=%&A=%4",
            ),
            Pass,
        ),
        row(
            "invalid escape %ZZ and its escaped spelling %25ZZ decode alike (signing no-op)",
            fixed,
            post_signed_for("/twilio/sms", "Body=%25ZZ", "/twilio/sms", "Body=%ZZ"),
            Pass,
        ),
        row(
            "invalid UTF-8 in the body (escaped and raw), decoded to U+FFFD",
            fixed,
            {
                let body: &[u8] = b"Body=caf%E9&Raw=\xff\xfe";
                let signature = twilio_signature(TOKEN, Algorithm::HmacSha1, &url, body);
                post(
                    "/twilio/sms",
                    Bytes::from_static(body),
                    &[signature.as_bytes()],
                )
            },
            Pass,
        ),
        row(
            "different invalid UTF-8 bytes both decode to U+FFFD (signing no-op)",
            fixed,
            post_signed_for("/twilio/sms", "Body=caf%FF", "/twilio/sms", "Body=caf%E9"),
            Pass,
        ),
        row(
            "body + re-encoded as %20 (signing no-op)",
            fixed,
            post_signed_for("/twilio/sms", "Body=a%20b", "/twilio/sms", "Body=a+b"),
            Pass,
        ),
        row(
            "body value changed from + to %2B",
            fixed,
            post_signed_for("/twilio/sms", "Body=a%2Bb", "/twilio/sms", "Body=a+b"),
            forbidden(SignatureMismatch),
        ),
        // --- the query: signed raw
        row(
            "invalid percent-encoding in the query, signed raw",
            fixed,
            post_signed_for(
                "/twilio/sms?x=%ZZ&y=%",
                SMS_BODY,
                "/twilio/sms?x=%ZZ&y=%",
                SMS_BODY,
            ),
            Pass,
        ),
        row(
            "invalid UTF-8 (escaped) in the query, signed raw",
            fixed,
            post_signed_for(
                "/twilio/sms?x=%FF%FE",
                SMS_BODY,
                "/twilio/sms?x=%FF%FE",
                SMS_BODY,
            ),
            Pass,
        ),
        row(
            "query %ZZ re-escaped as %25ZZ",
            fixed,
            post_signed_for(
                "/twilio/sms?x=%25ZZ",
                SMS_BODY,
                "/twilio/sms?x=%ZZ",
                SMS_BODY,
            ),
            forbidden(SignatureMismatch),
        ),
        row(
            "query signed with +, received with %20",
            fixed,
            post_signed_for(
                "/twilio/sms?q=a%20b",
                SMS_BODY,
                "/twilio/sms?q=a+b",
                SMS_BODY,
            ),
            forbidden(SignatureMismatch),
        ),
        row(
            "query signed with %20, received with + (twilio-node re-serialises it: lenient no-op)",
            fixed,
            post_signed_for(
                "/twilio/sms?q=a+b",
                SMS_BODY,
                "/twilio/sms?q=a%20b",
                SMS_BODY,
            ),
            Pass,
        ),
        row(
            "query signed with %20, received with +, exact URLs only",
            exact_only,
            post_signed_for(
                "/twilio/sms?q=a+b",
                SMS_BODY,
                "/twilio/sms?q=a%20b",
                SMS_BODY,
            ),
            forbidden(SignatureMismatch),
        ),
        // --- size
        row(
            "1001 parameters, over the default limit of 1000",
            fixed,
            post_signed_for(
                "/twilio/sms",
                &many_params(1001),
                "/twilio/sms",
                &many_params(1001),
            ),
            Expect::Reject(TooManyParameters, StatusCode::PAYLOAD_TOO_LARGE),
        ),
        row(
            "1001 parameters in a GET's query",
            fixed,
            {
                let query = many_params(1001);
                let path = format!("/twilio/sms?{query}");
                let signature =
                    twilio_signature(TOKEN, Algorithm::HmacSha1, &format!("{PUBLIC}{path}"), "");
                Request::get(path)
                    .header("host", "internal:3000")
                    .header("x-twilio-signature", signature)
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            },
            Expect::Reject(TooManyParameters, StatusCode::PAYLOAD_TOO_LARGE),
        ),
        row(
            "1000 parameters (the default limit)",
            fixed,
            post_signed_for(
                "/twilio/sms",
                &many_params(1000),
                "/twilio/sms",
                &many_params(1000),
            ),
            Pass,
        ),
        row(
            "10 000 parameters within raised limits",
            large_bodies,
            post_signed_for("/twilio/sms", &ten_thousand, "/twilio/sms", &ten_thousand),
            Pass,
        ),
        row(
            "10 000 parameters over the default 64 KiB limit",
            fixed,
            post_signed_for("/twilio/sms", &ten_thousand, "/twilio/sms", &ten_thousand),
            Expect::Reject(BodyTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
        ),
        // --- bodies the signature cannot cover
        row(
            "JSON body without bodySHA256",
            fixed,
            {
                let request = post_signed_for("/twilio/sms", "{}", "/twilio/sms", "");
                let mut request = without_header(request, "content-type");
                request
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                request
            },
            forbidden(UnsupportedContentType),
        ),
        row(
            "form body with two Content-Type headers",
            fixed,
            with_header(
                signed_post("/twilio/sms", SMS_BODY),
                "content-type",
                FORM.as_bytes(),
            ),
            forbidden(UnsupportedContentType),
        ),
        // --- Host
        row(
            "Host missing, URL from the request",
            request_host,
            without_header(
                post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY),
                "host",
            ),
            forbidden(UnresolvableUrl),
        ),
        row(
            "Host duplicated, URL from the request",
            request_host,
            with_header(
                post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY),
                "host",
                b"api.example.com",
            ),
            forbidden(UnresolvableUrl),
        ),
        row(
            "Host with userinfo, URL from the request",
            request_host,
            {
                let request = post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY);
                with_header(
                    without_header(request, "host"),
                    "host",
                    b"evil@api.example.com",
                )
            },
            forbidden(UnresolvableUrl),
        ),
        row(
            "Host with a port that is not a number, URL from the request",
            request_host,
            {
                let request = post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY);
                with_header(
                    without_header(request, "host"),
                    "host",
                    b"api.example.com:443x",
                )
            },
            forbidden(UnresolvableUrl),
        ),
        row(
            "Host is the public host, URL from the request (control)",
            request_host,
            {
                let request = post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY);
                with_header(without_header(request, "host"), "host", b"api.example.com")
            },
            Pass,
        ),
        // --- forwarding headers
        row(
            "X-Forwarded-Host/-Proto spoofed by an untrusted peer",
            behind_proxy,
            from_peer(
                with_header(
                    with_header(
                        post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY),
                        "x-forwarded-host",
                        b"api.example.com",
                    ),
                    "x-forwarded-proto",
                    b"https",
                ),
                "203.0.113.9:4000",
            ),
            forbidden(SignatureMismatch),
        ),
        row(
            "Forwarded spoofed by an untrusted peer",
            behind_proxy,
            from_peer(
                with_header(
                    post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY),
                    "forwarded",
                    b"for=198.51.100.7;proto=https;host=api.example.com",
                ),
                "203.0.113.9:4000",
            ),
            forbidden(SignatureMismatch),
        ),
        row(
            "the same Forwarded header from the trusted proxy (control)",
            behind_proxy,
            from_peer(
                with_header(
                    post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY),
                    "forwarded",
                    b"for=198.51.100.7;proto=https;host=api.example.com",
                ),
                "10.0.0.5:4000",
            ),
            Pass,
        ),
        row(
            "a client's forged Forwarded element before the proxy's",
            behind_proxy,
            from_peer(
                with_header(
                    post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY),
                    "forwarded",
                    b"for=1.1.1.1;host=api.example.com, for=198.51.100.7;proto=https;host=internal",
                ),
                "10.0.0.5:4000",
            ),
            forbidden(SignatureMismatch),
        ),
        row(
            "malformed X-Forwarded-Host from the trusted proxy",
            behind_proxy,
            from_peer(
                with_header(
                    post_signed_for("/twilio/sms", SMS_BODY, "/twilio/sms", SMS_BODY),
                    "x-forwarded-host",
                    b"api.example.com/evil",
                ),
                "10.0.0.5:4000",
            ),
            forbidden(UnresolvableUrl),
        ),
    ]
}

#[tokio::test]
async fn hostile_request_table() {
    let mut failures = Vec::new();
    let rows = rows();
    let count = rows.len();
    for Row {
        name,
        layer,
        request,
        expect,
    } in rows
    {
        let sink = RecordingSink::default();
        let sent = request.body().clone().collect().await.unwrap().to_bytes();
        let response = ServiceBuilder::new()
            .layer(layer(&sink))
            .service_fn(echo)
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let kind = response
            .extensions()
            .get::<Rejection>()
            .map(Rejection::kind);
        let events: Vec<_> = sink
            .events()
            .iter()
            .map(|e| (e.reason, e.outcome))
            .collect();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let got = match kind {
            None if status == StatusCode::OK && body == sent && events.is_empty() => Pass,
            Some(kind) if events == [(kind, Outcome::Rejected)] => Expect::Reject(kind, status),
            _ => {
                failures.push(format!(
                    "{name}: status {status}, rejection {kind:?}, events {events:?}"
                ));
                continue;
            }
        };
        if got != expect {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    println!("hostile table: {count} rows, {} failed", failures.len());
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// A body that fails mid-stream

/// Yields one chunk of a form body, then an error, as a connection reset would.
struct FailingBody {
    sent: bool,
}

impl Body for FailingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.sent {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset mid-body",
            ))));
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            b"AccountSid=AC0123ffffffffffffffffffffffffffff&Bo",
        )))))
    }
}

#[tokio::test]
async fn body_that_errors_mid_stream_is_a_400() {
    let sink = RecordingSink::default();
    let (parts, _) = signed_post("/twilio/sms", SMS_BODY).into_parts();
    let request = Request::from_parts(parts, FailingBody { sent: false });
    let response = ServiceBuilder::new()
        .layer(fixed(&sink))
        .service_fn(echo)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let rejection = response.extensions().get::<Rejection>().unwrap();
    assert_eq!(rejection.kind(), RejectionKind::BodyReadFailed);
    let events = sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, RejectionKind::BodyReadFailed);
}

// ---------------------------------------------------------------------------------------------
// Values that end up in events

/// Header values cannot hold CR, LF or other control characters (`http` refuses them), but the
/// unverified `AccountSid` comes from the body and can hold anything, and header values can
/// hold quotes, markup and bytes that are not UTF-8. A malformed `AccountSid` is refused before
/// any lookup and never recorded; the rest must reach the event as field data, not be spliced
/// into the message, and the JSON log must stay one valid line per event.
#[tokio::test(flavor = "current_thread")]
async fn injected_values_stay_data_in_events_and_json_logs() {
    let (captured, _guard) = capture_json_logs();

    let evil_sid = "AC\u{1b}[31mRED\u{1b}[0m\"},\"level\":\"INFO\r\n{\"forged\":true}\u{0}<script>alert(1)</script>";
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("AccountSid", evil_sid)
        .append_pair("Body", "hi")
        .finish();
    let long_agent = format!(
        "Mozilla/5.0 \"quoted\" <script>x</script> {}",
        "A".repeat(8 * 1024)
    );
    let request_id: &[u8] = b"id\" injected=\"1 \xff\xfe {\"json\":1}";

    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed(PUBLIC).unwrap())
        .on_security_event((TracingSink::new(), sink.clone()));
    // The malformed AccountSid is refused before any lookup, and stays out of the event.
    let request = with_header(
        without_header(
            post_signed_for("/twilio/sms?q=%22%3Cscript%3E", &body, "/twilio/sms", "x=1"),
            "user-agent",
        ),
        "user-agent",
        long_agent.as_bytes(),
    );
    let request = with_header(request, "x-request-id", request_id);
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(echo)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The event holds the values verbatim, as separate fields; the 8 KB agent cut to its
    // first 256 bytes, marked, so that no header's size is copied into every event.
    let kept_agent = format!("{}…", &long_agent[..256]);
    let events = sink.events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.reason, RejectionKind::InvalidAccountSid);
    assert_eq!(event.account_sid, None);
    assert_eq!(event.user_agent.as_deref(), Some(kept_agent.as_str()));
    assert_eq!(
        event.request_id.as_deref(),
        Some(String::from_utf8_lossy(request_id).as_ref())
    );
    // The query's values are redacted: only its names reach a sink.
    assert_eq!(event.url, format!("{PUBLIC}/twilio/sms?q=[redacted]"));

    // The JSON log: exactly one line, valid JSON, control characters escaped, the message
    // fixed, every value in its own field.
    let output = captured.text(); // panics unless the log is UTF-8
    assert!(!output.contains('\u{1b}'), "raw ESC in the log");
    assert!(!output.contains('\0'), "raw NUL in the log");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "one line per event: {output}");
    assert!(!lines[0].contains('\r'));
    let entry: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
    assert_eq!(entry["message"], "twilio webhook invalid_account_sid");
    assert!(
        !output.contains("RED"),
        "the malformed AccountSid is not logged"
    );
    assert_eq!(entry["user_agent"], kept_agent.as_str());
    assert_eq!(
        entry["request_id"],
        String::from_utf8_lossy(request_id).as_ref()
    );
    assert_eq!(entry["level"], "WARN");
    assert!(entry.get("forged").is_none());
}

// ---------------------------------------------------------------------------------------------
// On the wire: a real hyper server on 127.0.0.1

/// Serves `layer` around the echo handler with hyper's HTTP/1 server, optionally behind a
/// tower-http timeout.
async fn serve(layer: Layer, timeout: Option<Duration>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                return;
            };
            let service = ServiceBuilder::new()
                .option_layer(timeout.map(|t| {
                    tower_http::timeout::TimeoutLayer::with_status_code(
                        StatusCode::REQUEST_TIMEOUT,
                        t,
                    )
                }))
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(PeerAddr(remote));
                    request
                })
                .layer(layer.clone())
                .service_fn(echo);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    addr
}

/// Reads until the peer closes or a full response (head, and a `Content-Length` body) is in.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return String::from_utf8_lossy(&data[..end + 4 + length]).into_owned();
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return text,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

fn head(target: &str, signature: &str, extra: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\n\
         Host: internal:3000\r\n\
         Content-Type: {FORM}\r\n\
         X-Twilio-Signature: {signature}\r\n\
         {extra}\r\n"
    )
}

async fn connect(addr: SocketAddr) -> TcpStream {
    bounded(TcpStream::connect(addr)).await.unwrap()
}

/// Connects to `addr` and sends a signed SMS webhook whose `Content-Length` announces 100 bytes
/// more than follow.
async fn send_short_body(addr: SocketAddr) -> TcpStream {
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        SMS_BODY,
    );
    let mut stream = connect(addr).await;
    let announced = SMS_BODY.len() + 100;
    let request = format!(
        "{}{SMS_BODY}",
        head(
            "/twilio/sms",
            &signature,
            &format!("Content-Length: {announced}\r\n")
        )
    );
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    stream
}

/// Waits until `sink` has an event (the server handles the request on its own task).
async fn first_event(sink: &RecordingSink) -> tower_twilio::events::SecurityEvent {
    bounded(async {
        loop {
            if let Some(event) = sink.events().into_iter().next() {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn content_length_shorter_than_announced_and_connection_closed_is_a_read_failure() {
    let sink = RecordingSink::default();
    let addr = serve(fixed(&sink), None).await;
    let mut stream = send_short_body(addr).await;
    // The client gives up sending: hyper sees the body end early and fails it.
    bounded(stream.shutdown()).await.unwrap();
    let response = bounded(read_response(&mut stream)).await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 400 "),
        "{response}"
    );
    let event = first_event(&sink).await;
    assert_eq!(event.reason, RejectionKind::BodyReadFailed);
    assert_eq!(sink.events().len(), 1);
}

#[tokio::test]
async fn content_length_shorter_than_announced_from_a_silent_client_is_cut_by_the_timeout() {
    let sink = RecordingSink::default();
    let addr = serve(fixed(&sink), Some(Duration::from_millis(300))).await;
    let mut stream = send_short_body(addr).await;
    // The client keeps the connection open and sends nothing more: the server's timeout
    // answers, and the request never reaches the handler.
    let response = bounded(read_response(&mut stream)).await;
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(sink.events().is_empty(), "no verdict was reached");
}

#[tokio::test]
async fn bytes_past_content_length_are_not_part_of_the_body() {
    let sink = RecordingSink::default();
    let addr = serve(fixed(&sink), None).await;
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        SMS_BODY,
    );
    let mut stream = connect(addr).await;
    let request = format!(
        "{}{SMS_BODY}&Body=smuggled",
        head(
            "/twilio/sms",
            &signature,
            &format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                SMS_BODY.len()
            )
        )
    );
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let response = bounded(read_response(&mut stream)).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(
        body, SMS_BODY,
        "the handler got exactly the announced bytes"
    );
    assert!(sink.events().is_empty());
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_a_413() {
    let sink = RecordingSink::default();
    let addr = serve(
        fixed(&sink).max_body_size(NonZeroUsize::new(1024).unwrap()),
        None,
    )
    .await;
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        SMS_BODY,
    );
    let mut stream = connect(addr).await;
    bounded(
        stream.write_all(
            head("/twilio/sms", &signature, "Transfer-Encoding: chunked\r\n").as_bytes(),
        ),
    )
    .await
    .unwrap();
    // 4 × 600 bytes, no Content-Length to refuse up front: the layer must count.
    let chunk = format!("Body={}", "x".repeat(595));
    for _ in 0..4 {
        let frame = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        if stream.write_all(frame.as_bytes()).await.is_err() {
            break; // the server already answered and closed
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let response = bounded(read_response(&mut stream)).await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    let event = first_event(&sink).await;
    assert_eq!(event.reason, RejectionKind::BodyTooLarge);
}

#[tokio::test]
async fn absolute_form_target_verifies_against_the_configured_url() {
    let sink = RecordingSink::default();
    let addr = serve(fixed(&sink), None).await;
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        SMS_BODY,
    );
    let mut stream = connect(addr).await;
    let request = format!(
        "{}{SMS_BODY}",
        head(
            "https://api.example.com/twilio/sms",
            &signature,
            &format!("Content-Length: {}\r\n", SMS_BODY.len())
        )
    );
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let response = bounded(read_response(&mut stream)).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(sink.events().is_empty());

    // With the URL taken from the request, an absolute target's authority wins over Host,
    // and another authority than the signed one fails.
    let sink = RecordingSink::default();
    let addr = serve(request_host(&sink), None).await;
    let mut stream = connect(addr).await;
    let request = format!(
        "{}{SMS_BODY}",
        head(
            "https://evil.example.com/twilio/sms",
            &signature,
            &format!("Content-Length: {}\r\n", SMS_BODY.len())
        )
    );
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let response = bounded(read_response(&mut stream)).await;
    assert!(response.starts_with("HTTP/1.1 403 "), "{response}");
    assert_eq!(
        first_event(&sink).await.reason,
        RejectionKind::SignatureMismatch
    );
}

#[tokio::test]
async fn authority_form_target_is_refused() {
    let sink = RecordingSink::default();
    let addr = serve(fixed(&sink), None).await;
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        SMS_BODY,
    );
    let mut stream = connect(addr).await;
    let request = format!(
        "{}{SMS_BODY}",
        head(
            "api.example.com:443",
            &signature,
            &format!("Content-Length: {}\r\n", SMS_BODY.len())
        )
    )
    .replacen("POST", "CONNECT", 1);
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let response = bounded(read_response(&mut stream)).await;
    assert!(response.starts_with("HTTP/1.1 403 "), "{response}");
    let event = first_event(&sink).await;
    assert_eq!(event.reason, RejectionKind::UnresolvableUrl);
}

#[tokio::test]
async fn raw_non_ascii_in_the_request_target_never_reaches_the_layer() {
    let sink = RecordingSink::default();
    let addr = serve(fixed(&sink), None).await;
    let mut stream = connect(addr).await;
    let mut request = b"POST /twilio/sms?x=\xff\xfe HTTP/1.1\r\n".to_vec();
    request.extend_from_slice(
        format!("Host: internal\r\nContent-Type: {FORM}\r\nX-Twilio-Signature: x\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    bounded(stream.write_all(&request)).await.unwrap();
    let response = bounded(read_response(&mut stream)).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(sink.events().is_empty(), "hyper refused it first");
}

/// A forged request with a 20 KB path and a 30 KB query: the webhook log's entries (handed to
/// every `OnWebhook`, which may store or ship them) keep a bounded part of each, as the event
/// does of the URL.
#[tokio::test]
async fn webhook_log_keeps_a_bounded_part_of_a_long_path_and_query() {
    use std::sync::{Arc, Mutex};
    use tower_twilio::events::log::WebhookLogEntry;

    let entries: Arc<Mutex<Vec<WebhookLogEntry>>> = Arc::default();
    let record = Arc::clone(&entries);
    let sink = RecordingSink::default();
    let layer = fixed(&sink)
        .on_webhook(move |entry: &WebhookLogEntry| record.lock().unwrap().push(entry.clone()));
    let names: Vec<_> = (0..5_000).map(|i| format!("n{i}")).collect();
    let target = format!("/twilio/{}?{}", "p".repeat(20_000), names.join("&"));
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(echo)
        .oneshot(post(&target, "Body=hi", &[b"forged"]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let bound = 2048 + '…'.len_utf8();
    assert!(sink.events()[0].url.len() <= bound);
    let entries = entries.lock().unwrap();
    assert!(entries.len() >= 2, "received and rejected");
    for entry in entries.iter() {
        assert!(
            entry.path.len() <= bound,
            "path: {} bytes",
            entry.path.len()
        );
        assert!(entry.path.starts_with("/twilio/ppp") && entry.path.ends_with('…'));
        let query = entry.query.as_deref().unwrap();
        assert!(query.len() <= bound, "query: {} bytes", query.len());
    }
}

/// A `User-Agent` of bytes that are not UTF-8: each becomes U+FFFD, three bytes, and the event
/// still keeps at most 256 bytes of text.
#[tokio::test]
async fn a_user_agent_of_invalid_bytes_is_kept_to_256_bytes() {
    let sink = RecordingSink::default();
    let request = with_header(
        without_header(post("/twilio/sms", "Body=hi", &[b"forged"]), "user-agent"),
        "user-agent",
        &[0xff; 300],
    );
    let response = ServiceBuilder::new()
        .layer(fixed(&sink))
        .service_fn(echo)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let agent = sink.events()[0].user_agent.clone().unwrap();
    assert!(agent.len() <= 256 + '…'.len_utf8(), "{} bytes", agent.len());
    assert!(agent.starts_with('\u{fffd}') && agent.ends_with('…'));
}
