//! The middleware end to end through `ServiceExt::oneshot`.

use std::{
    convert::Infallible,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_twilio::{
    Credentials, PublicUrl, Rejection, RejectionKind, Secret, TwilioSignatureLayer, VerifiedBody,
    VerifiedWebhook,
    events::Outcome,
    public_url::{ForwardedField, ForwardedHeaders},
    resolver::{ResolveCredentials, ResolveRequest},
    signature::{Algorithm, url_with_body_sha256},
};

use crate::support::*;

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
    assert_eq!(
        webhook.account_sid(),
        Some("AC0123ffffffffffffffffffffffffffff")
    );
    assert_eq!(webhook.tenant_id(), Some("acme"));
    assert_eq!(webhook.credential(), "primary");
    assert_eq!(webhook.algorithm(), Algorithm::HmacSha1);
    assert_eq!(webhook.idempotency_token(), Some("idem-1"));
    assert_eq!(webhook.params().get("Body"), Some("Hello \u{1F44B} world"));
    assert_eq!(webhook.url(), "https://api.example.com/twilio/sms");
    assert_eq!(body_string(response).await, SMS_BODY);
    assert!(sink.events().is_empty());
}

/// Fixed credentials answer at once (no view of the request, nothing awaited); a resolver that
/// answers every request with the same credentials through a future must reach the same
/// verdicts and the same context.
#[tokio::test]
async fn fixed_credentials_and_a_resolver_answering_them_agree() {
    let credentials = Credentials::new()
        .tenant("acme")
        .auth_token("new", Secret::new("another-token").unwrap())
        .auth_token("primary", token());
    let owned = credentials
        .clone()
        .account("AC0123ffffffffffffffffffffffffffff");
    let other = credentials
        .clone()
        .account("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    // The same tenant with a SharedKey of its account instead.
    let shared = Credentials::new()
        .tenant("acme")
        .account("AC0123ffffffffffffffffffffffffffff")
        .shared_key("k1", token());
    let forged = {
        let mut request = signed_post("/twilio/sms", SMS_BODY);
        *request.body_mut() = Full::new(Bytes::from(SMS_BODY.replace("Hello", "Hallo")));
        request
    };
    // Signed with the SharedKey `key_id` names (as `TOKEN`).
    let shared_key_signed = |key_id: &str| {
        let url = format!("{PUBLIC}/twilio/sms");
        let signature = twilio_signature(TOKEN, Algorithm::HmacSha256, &url, SMS_BODY);
        let mut request = signed_post("/twilio/sms", SMS_BODY);
        let headers = request.headers_mut();
        headers.insert("x-twilio-signature", signature.parse().unwrap());
        let settings = format!("key={key_id},algorithm=HMAC_SHA256");
        headers.insert(
            "x-twilio-webhooks-signature-settings",
            settings.parse().unwrap(),
        );
        request
    };
    let requests = || {
        [
            signed_post("/twilio/sms", SMS_BODY),
            signed_post("/twilio/sms", "Body=no+account"),
            signed_post("/elsewhere", SMS_BODY),
            forged.clone(),
            shared_key_signed("k1"),
            shared_key_signed("k2"),
        ]
    };
    let cases = [credentials, owned, other, shared]
        .into_iter()
        .flat_map(|credentials| [(credentials.clone(), false), (credentials, true)]);
    for (credentials, report_only) in cases {
        assert!(credentials.fixed_credentials().is_some());
        for request in requests() {
            let (parts, body) = request.into_parts();
            let copy = || Request::from_parts(parts.clone(), body.clone());
            let outcome = |response: Response<tower_twilio::ResponseBody<Full<Bytes>>>| {
                let webhook = response.extensions().get::<VerifiedWebhook>().map(|w| {
                    let parts = (w.account_sid(), w.tenant_id(), w.credential(), w.url());
                    format!("{parts:?}")
                });
                let kind = response
                    .extensions()
                    .get::<Rejection>()
                    .map(Rejection::kind);
                (response.status(), kind, webhook)
            };
            let fixed_sink = RecordingSink::default();
            let fixed = layer_with(credentials.clone(), &fixed_sink).report_only(report_only);
            let fixed = send(fixed, copy()).await;
            let answering_sink = RecordingSink::default();
            let answering = {
                let credentials = credentials.clone();
                let resolver = move |_: ResolveRequest| {
                    std::future::ready(Ok::<_, tower_twilio::BoxError>(Some(credentials.clone())))
                };
                let layer = TwilioSignatureLayer::new(resolver)
                    .public_url(PublicUrl::fixed(PUBLIC).unwrap())
                    .report_only(report_only)
                    .on_security_event(answering_sink.clone());
                ServiceBuilder::new()
                    .layer(layer)
                    .service_fn(echo)
                    .oneshot(copy())
                    .await
                    .unwrap()
            };
            let what = format!(
                "{} {:?} {:?} report-only {report_only}",
                parts.uri,
                parts.headers.get("x-twilio-webhooks-signature-settings"),
                credentials.account_sid()
            );
            assert_eq!(outcome(fixed), outcome(answering), "{what}");
            let reasons = |sink: &RecordingSink| {
                let events = sink.events();
                events
                    .iter()
                    .map(|e| {
                        (
                            e.reason,
                            e.outcome,
                            e.tenant_id.clone(),
                            e.account_sid.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(reasons(&fixed_sink), reasons(&answering_sink), "{what}");
        }
    }
}

/// Twilio signs a URL with its basic-auth credentials in it: the layer verifies against them,
/// and the handler's context never shows them.
#[tokio::test]
async fn a_base_url_with_userinfo_verifies_and_the_context_hides_it() {
    let base = "https://twilio:hunter2@api.example.com";
    let body = SMS_BODY;
    let signature = twilio_signature(TOKEN, Algorithm::HmacSha1, &format!("{base}/sms"), body);
    let request = Request::post("/sms")
        .header("host", "internal:3000")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let sink = RecordingSink::default();
    let with_userinfo = layer(&sink).public_url(PublicUrl::fixed(base).unwrap());
    let response = send(with_userinfo, request).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", sink.events());
    let webhook = response.extensions().get::<VerifiedWebhook>().unwrap();
    assert_eq!(webhook.url(), "https://[redacted]@api.example.com/sms");
    // Under a base without userinfo, an `@` in the path is not userinfo: the URL is kept as it
    // is.
    let (response, sink) = {
        let sink = RecordingSink::default();
        (send(layer(&sink), signed_post("/a@b", body)).await, sink)
    };
    assert_eq!(response.status(), StatusCode::OK, "{:?}", sink.events());
    let webhook = response.extensions().get::<VerifiedWebhook>().unwrap();
    assert_eq!(webhook.url(), format!("{PUBLIC}/a@b"));
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
    let limited = layer(&sink).max_body_size(NonZeroUsize::new(100).unwrap());
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
    let limited = layer(&sink).max_body_size(NonZeroUsize::new(100).unwrap());
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

#[tokio::test]
async fn resolver_outcomes_are_kept_apart() {
    let called = Arc::new(AtomicUsize::new(0));

    // Unknown account: 403, one event, handler never runs.
    let sink = RecordingSink::default();
    let counter = Arc::clone(&called);
    let unknown = TwilioSignatureLayer::new(move |_req: ResolveRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(None) }
    })
    .public_url(PublicUrl::fixed(PUBLIC).unwrap())
    .on_security_event(sink.clone());
    let response = ServiceBuilder::new()
        .layer(unknown)
        .service_fn(|_: Request<VerifiedBody>| async {
            panic!("handler ran") as Result<Response<Full<Bytes>>, Infallible>
        })
        .oneshot(signed_post("/twilio/sms", SMS_BODY))
        .await
        .unwrap();
    assert_rejected(
        &response,
        &sink,
        RejectionKind::UnknownAccount,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(
        sink.events()[0].account_sid.as_deref(),
        Some("AC0123ffffffffffffffffffffffffffff")
    );

    // Lookup failed: 503, one event, handler never runs.
    let sink = RecordingSink::default();
    let failing = TwilioSignatureLayer::new(|_req: ResolveRequest| async {
        Err::<Option<Credentials>, _>("database is down".into())
    })
    .public_url(PublicUrl::fixed(PUBLIC).unwrap())
    .on_security_event(sink.clone());
    let response = ServiceBuilder::new()
        .layer(failing)
        .service_fn(|_: Request<VerifiedBody>| async {
            panic!("handler ran") as Result<Response<Full<Bytes>>, Infallible>
        })
        .oneshot(signed_post("/twilio/sms", SMS_BODY))
        .await
        .unwrap();
    assert_rejected(
        &response,
        &sink,
        RejectionKind::ResolverFailed,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    let rejection = response.extensions().get::<Rejection>().unwrap();
    assert!(
        rejection.to_string().contains("database is down"),
        "{rejection}"
    );
    assert_eq!(called.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_resolver_sees_the_account_sid_of_form_get_and_json_requests() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let resolver = move |req: ResolveRequest| {
        record
            .lock()
            .unwrap()
            .push(req.account_sid().map(str::to_owned));
        async { Ok(Some(Credentials::new().auth_token("primary", token()))) }
    };
    let layer = TwilioSignatureLayer::new(resolver).public_url(PublicUrl::fixed(PUBLIC).unwrap());
    let service = ServiceBuilder::new().layer(layer).service_fn(echo);

    let form = signed_post("/twilio/sms", SMS_BODY);
    assert_eq!(
        service.clone().oneshot(form).await.unwrap().status(),
        StatusCode::OK
    );

    let get_url = format!(
        "{PUBLIC}/twilio/voice?CallSid=CA1&AccountSid=AC11111111111111111111111111111111&From=%2B1415"
    );
    let get_sig = twilio_signature(TOKEN, Algorithm::HmacSha1, &get_url, "");
    let get = Request::get(
        "/twilio/voice?CallSid=CA1&AccountSid=AC11111111111111111111111111111111&From=%2B1415",
    )
    .header("x-twilio-signature", get_sig)
    .body(Full::new(Bytes::new()))
    .unwrap();
    let response = service.clone().oneshot(get).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let webhook = response.extensions().get::<VerifiedWebhook>().unwrap();
    assert_eq!(webhook.params().get("From"), Some("+1415"));

    let json =
        br#"{"AccountSid":"AC22222222222222222222222222222222","MessageStatus":"delivered"}"#;
    let json_url = url_with_body_sha256(&format!("{PUBLIC}/twilio/status"), json);
    let json_sig = twilio_signature(TOKEN, Algorithm::HmacSha1, &json_url, "");
    let json_request = Request::post(json_url.strip_prefix(PUBLIC).unwrap())
        .header("content-type", "application/json")
        .header("x-twilio-signature", json_sig)
        .body(Full::new(Bytes::from_static(json)))
        .unwrap();
    let response = service.clone().oneshot(json_request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_string(response).await.as_bytes(), json);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            Some("AC0123ffffffffffffffffffffffffffff".to_owned()),
            Some("AC11111111111111111111111111111111".to_owned()),
            Some("AC22222222222222222222222222222222".to_owned())
        ]
    );
}

/// Two tenants: one mid-rotation (old and new token valid), one on SharedKeys.
#[tokio::test]
async fn two_tenants_accept_exactly_what_their_secrets_signed() {
    let old = tower_twilio::Secret::new("old-token-aaaaaaaaaaaaaaaaaaaaaaa").unwrap();
    let new = tower_twilio::Secret::new("new-token-bbbbbbbbbbbbbbbbbbbbbbb").unwrap();
    let shared_key = tower_twilio::Secret::new("shared-key-secret-cccccccccccccc").unwrap();
    let tenant_b_token = tower_twilio::Secret::new("tenant-b-auth-token-dddddddddddd").unwrap();
    let rotating = Credentials::new()
        .tenant("tenant-a")
        .auth_token("primary", new.clone())
        .auth_token("secondary", old.clone());
    let on_shared_keys = Credentials::new()
        .tenant("tenant-b")
        .auth_token("primary", tenant_b_token.clone())
        .shared_key("webhooks_sharedkey_b1", shared_key.clone());
    let resolver = tower_twilio::resolver::AccountMap::new()
        .insert_account("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", rotating)
        .insert_account("ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", on_shared_keys);
    let sink = RecordingSink::default();
    let service = ServiceBuilder::new()
        .layer(
            TwilioSignatureLayer::new(resolver)
                .public_url(PublicUrl::fixed(PUBLIC).unwrap())
                .on_security_event(sink.clone()),
        )
        .service_fn(echo);

    let request = |account: &str,
                   secret: &tower_twilio::Secret,
                   algorithm: Algorithm,
                   settings: Option<&str>| {
        let body = format!("AccountSid={account}&Body=hi&From=%2B14155550100");
        let url = format!("{PUBLIC}/twilio/sms");
        let signature = twilio_signature(secret.expose_secret(), algorithm, &url, &body);
        let mut builder = Request::post("/twilio/sms")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature);
        if let Some(settings) = settings {
            builder = builder.header("x-twilio-webhooks-signature-settings", settings);
        }
        builder.body(Full::new(Bytes::from(body))).unwrap()
    };
    let settings = Some("key=webhooks_sharedkey_b1,algorithm=HMAC_SHA256");
    let cases: Vec<(
        &str,
        Request<Full<Bytes>>,
        Result<(&str, &str), RejectionKind>,
    )> = vec![
        (
            "A new token",
            request(
                "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                &new,
                Algorithm::HmacSha1,
                None,
            ),
            Ok(("tenant-a", "primary")),
        ),
        (
            "A old token",
            request(
                "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                &old,
                Algorithm::HmacSha1,
                None,
            ),
            Ok(("tenant-a", "secondary")),
        ),
        (
            "A signed by B",
            request(
                "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                &tenant_b_token,
                Algorithm::HmacSha1,
                None,
            ),
            Err(RejectionKind::SignatureMismatch),
        ),
        (
            "B auth token",
            request(
                "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                &tenant_b_token,
                Algorithm::HmacSha1,
                None,
            ),
            Ok(("tenant-b", "primary")),
        ),
        (
            "B shared key",
            request(
                "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                &shared_key,
                Algorithm::HmacSha256,
                settings,
            ),
            Ok(("tenant-b", "shared_key:webhooks_sharedkey_b1")),
        ),
        // The settings header pins the SharedKey: the auth token is never tried for it.
        (
            "B auth token under settings",
            request(
                "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                &tenant_b_token,
                Algorithm::HmacSha256,
                settings,
            ),
            Err(RejectionKind::SignatureMismatch),
        ),
        // And a SharedKey signature without the header is not accepted as an auth-token one.
        (
            "B shared key without settings",
            request(
                "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                &shared_key,
                Algorithm::HmacSha1,
                None,
            ),
            Err(RejectionKind::SignatureMismatch),
        ),
        (
            "unknown key id",
            request(
                "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                &shared_key,
                Algorithm::HmacSha256,
                Some("key=nope,algorithm=HMAC_SHA256"),
            ),
            Err(RejectionKind::UnknownSharedKey),
        ),
        (
            "unknown account",
            request(
                "ACcccccccccccccccccccccccccccccccc",
                &new,
                Algorithm::HmacSha1,
                None,
            ),
            Err(RejectionKind::UnknownAccount),
        ),
    ];
    for (what, request, expected) in cases {
        let response = service.clone().oneshot(request).await.unwrap();
        match expected {
            Ok((tenant, label)) => {
                assert_eq!(response.status(), StatusCode::OK, "{what}");
                let webhook = response.extensions().get::<VerifiedWebhook>().unwrap();
                assert_eq!(
                    (webhook.tenant_id(), webhook.credential()),
                    (Some(tenant), label),
                    "{what}"
                );
            }
            Err(kind) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
                assert_eq!(
                    response.extensions().get::<Rejection>().unwrap().kind(),
                    kind,
                    "{what}"
                );
            }
        }
    }
    assert_eq!(sink.events().len(), 5, "one event per refused request");
}

#[tokio::test]
async fn report_only_mode_passes_failures_on_and_reports_them() {
    let sink = RecordingSink::default();
    let layer = layer(&sink).report_only(true);
    let mut forged = signed_post("/twilio/sms", SMS_BODY);
    forged.headers_mut().remove("x-twilio-signature");
    let response = send(layer.clone(), forged).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.extensions().get::<VerifiedWebhook>().is_none(),
        "not marked verified"
    );
    let events = sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, Outcome::PassedInReportOnlyMode);
    assert_eq!(events[0].event_type(), "passed_in_report_only_mode");
    assert_eq!(events[0].reason, RejectionKind::MissingSignature);
    // Signed requests are still verified, with no event.
    let response = send(layer, signed_post("/twilio/sms", SMS_BODY)).await;
    assert!(response.extensions().get::<VerifiedWebhook>().is_some());
    assert_eq!(sink.events().len(), 1);
}

/// Limits on resources hold in report-only mode too: a body with more parameters than the
/// limit is refused whether or not it carries a signature, while an unsigned one within the
/// limit is passed on.
#[tokio::test]
async fn report_only_mode_still_refuses_too_many_parameters() {
    let sink = RecordingSink::default();
    let layer = layer(&sink).report_only(true);
    let many: String = (0..1001).map(|i| format!("p{i}=1&")).collect();
    let unsigned = |body: &str| {
        let mut request = signed_post("/twilio/sms", body);
        request.headers_mut().remove("x-twilio-signature");
        request
    };
    for request in [
        unsigned(&many),
        signed_post("/twilio/sms", &many),
        Request::get(format!("/twilio/sms?{many}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    ] {
        let response = send(layer.clone(), request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert!(
        sink.events()
            .iter()
            .all(|event| event.reason == RejectionKind::TooManyParameters
                && event.outcome == Outcome::Rejected),
        "{:?}",
        sink.events()
    );
    let response = send(layer, unsigned(SMS_BODY)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn forwarded_headers_only_matter_from_trusted_peers() {
    // The three fields the requests below carry; every one must come from a trusted peer.
    let read = [
        ForwardedField::XForwardedProto,
        ForwardedField::XForwardedHost,
        ForwardedField::XForwardedFor,
    ];
    let public = PublicUrl::trust_forwarded(
        read.into_iter()
            .fold(ForwardedHeaders::new(), ForwardedHeaders::read)
            .trust_proxy("10.0.0.0/8".parse().unwrap()),
    );
    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
        .public_url(public)
        .on_security_event(sink.clone());
    // Signed for the public URL; the app sees http://internal:3000.
    let from = |peer: &str| {
        let mut request = signed_post("/twilio/sms", SMS_BODY);
        request
            .headers_mut()
            .insert("x-forwarded-proto", "https".parse().unwrap());
        request
            .headers_mut()
            .insert("x-forwarded-host", "api.example.com".parse().unwrap());
        request
            .headers_mut()
            .insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
        let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
        request
            .extensions_mut()
            .insert(tower_twilio::PeerAddr(addr));
        request
    };
    let service = ServiceBuilder::new().layer(layer).service_fn(echo);
    assert_eq!(
        service
            .clone()
            .oneshot(from("10.1.2.3"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The same headers from an untrusted peer change nothing: the URL is the request's own.
    let response = service.clone().oneshot(from("203.0.113.9")).await.unwrap();
    assert_rejected(
        &response,
        &sink,
        RejectionKind::SignatureMismatch,
        StatusCode::FORBIDDEN,
    );
    let event = &sink.events()[0];
    assert_eq!(event.url, "https://internal:3000/twilio/sms");
    assert_eq!(event.client_ip, "203.0.113.9".parse().ok());

    // A spoofed request signed for the attacker's chosen URL fails from an untrusted peer too.
    let sink = RecordingSink::default();
    let spoof_layer = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
        .public_url(PublicUrl::trust_forwarded(every_field_from_10_8()))
        .on_security_event(sink.clone());
    let mut request = signed_post("/twilio/sms", SMS_BODY);
    request.headers_mut().insert(
        "forwarded",
        "proto=https;host=api.example.com".parse().unwrap(),
    );
    request
        .extensions_mut()
        .insert(tower_twilio::PeerAddr("203.0.113.9:1".parse().unwrap()));
    let response = ServiceBuilder::new()
        .layer(spoof_layer)
        .service_fn(echo)
        .oneshot(request)
        .await
        .unwrap();
    assert_rejected(
        &response,
        &sink,
        RejectionKind::SignatureMismatch,
        StatusCode::FORBIDDEN,
    );
}

#[tokio::test]
async fn unresolvable_urls_and_unreadable_bodies_are_refused() {
    let sink = RecordingSink::default();
    let layer_from_host =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
            .on_security_event(sink.clone());
    let mut request = signed_post("/twilio/sms", SMS_BODY);
    request.headers_mut().remove("host");
    let response = ServiceBuilder::new()
        .layer(layer_from_host)
        .service_fn(echo)
        .oneshot(request)
        .await
        .unwrap();
    assert_rejected(
        &response,
        &sink,
        RejectionKind::UnresolvableUrl,
        StatusCode::FORBIDDEN,
    );

    struct Broken;
    impl http_body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Ready(Some(Err(std::io::Error::other("connection reset"))))
        }
    }
    let sink = RecordingSink::default();
    let (parts, _) = signed_post("/twilio/sms", SMS_BODY).into_parts();
    let response = send(layer(&sink), Request::from_parts(parts, Broken)).await;
    assert_rejected(
        &response,
        &sink,
        RejectionKind::BodyReadFailed,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test]
async fn the_debug_of_a_get_webhook_shows_no_parameter_value() {
    let sink = RecordingSink::default();
    let path = "/twilio/voice?CallSid=CA1&From=%2B14155550100";
    let signature = twilio_signature(TOKEN, Algorithm::HmacSha1, &format!("{PUBLIC}{path}"), "");
    let request = Request::get(path)
        .header("x-twilio-signature", signature)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(layer(&sink), request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let webhook = response.extensions().get::<VerifiedWebhook>().unwrap();
    // The accessor is the signed URL byte for byte; only Debug redacts.
    assert_eq!(webhook.url(), format!("{PUBLIC}{path}"));
    for printed in [format!("{webhook:?}"), format!("{webhook:#?}")] {
        assert!(!printed.contains("14155550100"), "{printed}");
        assert!(!printed.contains("CA1"), "{printed}");
        assert!(printed.contains("/twilio/voice?CallSid="), "{printed}");
    }
}
