//! The middleware end to end through `ServiceExt::oneshot`.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_twilio::{
    Credentials, PublicUrl, Rejection, RejectionKind, TwilioSignatureLayer, VerifiedBody,
    VerifiedWebhook,
    events::Outcome,
    form::Params,
    public_url::ForwardedHeaders,
    resolver::ResolveRequest,
    signature::{Algorithm, sign, url_with_body_sha256},
};

use crate::support::*;

/// Echoes the body it received, and the verified context, so tests can see both.
async fn echo(request: Request<VerifiedBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let webhook = request.extensions().get::<VerifiedWebhook>().cloned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut response = Response::new(Full::new(body));
    if let Some(webhook) = webhook {
        response.extensions_mut().insert(webhook);
    }
    Ok(response)
}

fn layer(sink: &RecordingSink) -> TwilioSignatureLayer<Credentials, RecordingSink> {
    TwilioSignatureLayer::new(
        Credentials::new()
            .tenant("acme")
            .auth_token("primary", token()),
    )
    .public_url(PublicUrl::fixed(PUBLIC).unwrap())
    .on_security_event(sink.clone())
}

async fn send<B>(
    layer: TwilioSignatureLayer<Credentials, RecordingSink>,
    request: Request<B>,
) -> Response<tower_twilio::ResponseBody<Full<Bytes>>>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<tower_twilio::BoxError>,
{
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(echo)
        .oneshot(request)
        .await
        .unwrap()
}

/// Asserts the three things every rejection must show: status, typed reason, one event.
fn assert_rejected<B>(
    response: &Response<B>,
    sink: &RecordingSink,
    kind: RejectionKind,
    status: StatusCode,
) {
    assert_eq!(response.status(), status, "{kind:?}");
    let rejection = response
        .extensions()
        .get::<Rejection>()
        .expect("rejection in extensions");
    assert_eq!(rejection.kind(), kind);
    let events = sink.events();
    assert_eq!(
        events.len(),
        1,
        "exactly one event for {kind:?}: {events:?}"
    );
    assert_eq!(events[0].reason, kind);
    assert_eq!(events[0].outcome, Outcome::Rejected);
    assert_eq!(events[0].provider, "twilio");
}

#[tokio::test]
async fn signed_request_reaches_the_handler_with_the_same_bytes() {
    let sink = RecordingSink::default();
    let response = send(layer(&sink), signed_post("/twilio/sms", SMS_BODY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let webhook = response
        .extensions()
        .get::<VerifiedWebhook>()
        .cloned()
        .expect("verified context");
    assert_eq!(webhook.account_sid(), Some("AC0123"));
    assert_eq!(webhook.tenant_id(), Some("acme"));
    assert_eq!(webhook.credential(), "primary");
    assert_eq!(webhook.algorithm(), Algorithm::HmacSha1);
    assert_eq!(webhook.idempotency_token(), Some("idem-1"));
    assert_eq!(webhook.params().get("Body"), Some("Hello \u{1F44B} world"));
    assert_eq!(webhook.url(), "https://api.example.com/twilio/sms");
    assert_eq!(body_string(response).await, SMS_BODY);
    assert!(sink.events().is_empty());
}

#[tokio::test]
async fn any_changed_byte_is_refused() {
    let good = signed_post("/twilio/sms", SMS_BODY);
    let signature = good.headers()["x-twilio-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let tampered_body = SMS_BODY.replace("Hello", "Jello");
    let mut tampered_sig = signature.clone().into_bytes();
    tampered_sig[3] = if tampered_sig[3] == b'A' { b'B' } else { b'A' };
    let cases = [
        ("/twilio/sms", tampered_body.as_str(), signature.clone()),
        ("/twilio/sms?x=1", SMS_BODY, signature.clone()),
        ("/twilio/smS", SMS_BODY, signature.clone()),
        (
            "/twilio/sms",
            SMS_BODY,
            String::from_utf8(tampered_sig).unwrap(),
        ),
    ];
    for (path, body, signature) in cases {
        let sink = RecordingSink::default();
        let mut request = signed_post(path, body);
        request
            .headers_mut()
            .insert("x-twilio-signature", signature.parse().unwrap());
        let response = send(layer(&sink), request).await;
        assert_rejected(
            &response,
            &sink,
            RejectionKind::SignatureMismatch,
            StatusCode::FORBIDDEN,
        );
        assert_eq!(body_string(response).await, "Forbidden");
    }
}

#[tokio::test]
async fn header_problems_are_refused_with_their_reason() {
    let cases: [(&str, fn(&mut Request<Full<Bytes>>), RejectionKind); 6] = [
        (
            "missing",
            |r| {
                r.headers_mut().remove("x-twilio-signature");
            },
            RejectionKind::MissingSignature,
        ),
        (
            "duplicate",
            |r| {
                let v = r.headers()["x-twilio-signature"].clone();
                r.headers_mut().append("x-twilio-signature", v);
            },
            RejectionKind::DuplicateSignature,
        ),
        (
            "malformed",
            |r| {
                r.headers_mut()
                    .insert("x-twilio-signature", "abc".parse().unwrap());
            },
            RejectionKind::MalformedSignature,
        ),
        (
            "algorithm",
            |r| {
                r.headers_mut().insert(
                    "x-twilio-webhooks-signature-settings",
                    "key=k,algorithm=HMAC_MD5".parse().unwrap(),
                );
            },
            RejectionKind::UnsupportedAlgorithm,
        ),
        (
            "settings without key",
            |r| {
                r.headers_mut().insert(
                    "x-twilio-webhooks-signature-settings",
                    "algorithm=HMAC_SHA256".parse().unwrap(),
                );
            },
            RejectionKind::MalformedSettings,
        ),
        (
            "content type",
            |r| {
                r.headers_mut()
                    .insert("content-type", "text/plain".parse().unwrap());
            },
            RejectionKind::UnsupportedContentType,
        ),
    ];
    for (what, change, kind) in cases {
        let sink = RecordingSink::default();
        let mut request = signed_post("/twilio/sms", SMS_BODY);
        change(&mut request);
        let response = send(layer(&sink), request).await;
        assert_rejected(&response, &sink, kind, StatusCode::FORBIDDEN);
        assert_eq!(
            sink.events()[0].user_agent.as_deref(),
            Some("TwilioProxy/1.1"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn oversize_bodies_get_413_without_being_buffered() {
    let sink = RecordingSink::default();
    let limited = layer(&sink).max_body_size(100).unwrap();
    // By Content-Length: refused before any byte is read. The body would panic if polled.
    struct Untouchable;
    impl http_body::Body for Untouchable {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            panic!("the body was read");
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(10_000_000)
        }
    }
    let (parts, _) = signed_post("/twilio/sms", SMS_BODY).into_parts();
    let response = send(limited.clone(), Request::from_parts(parts, Untouchable)).await;
    assert_rejected(
        &response,
        &sink,
        RejectionKind::BodyTooLarge,
        StatusCode::PAYLOAD_TOO_LARGE,
    );

    // Streamed without a length: refused as soon as it passes the limit; later chunks are never
    // pulled.
    let sink = RecordingSink::default();
    let limited = layer(&sink).max_body_size(100).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let chunks = Chunks {
        pulled: Arc::clone(&pulled),
        remaining: 1000,
    };
    let (parts, _) = signed_post("/twilio/sms", SMS_BODY).into_parts();
    let response = send(limited, Request::from_parts(parts, chunks)).await;
    assert_rejected(
        &response,
        &sink,
        RejectionKind::BodyTooLarge,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        3,
        "stopped at the chunk that crossed the limit"
    );
}

/// An endless-looking body of 40-byte chunks with no size hint, counting what is pulled.
struct Chunks {
    pulled: Arc<AtomicUsize>,
    remaining: usize,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.pulled.fetch_add(1, Ordering::SeqCst);
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        self.remaining -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'a';
            40
        ])))))
    }
}
