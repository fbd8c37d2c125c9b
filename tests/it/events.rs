//! Security events and the webhook log.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_twilio::{
    Credentials, PeerAddr, PublicUrl, RejectionKind, TwilioSignatureLayer, VerifiedBody,
    events::{
        Outcome, Severity,
        log::{WebhookLogEntry, WebhookOutcome},
    },
    resolver::{Resolution, ResolveRequest},
    signature::Algorithm,
};

use crate::support::*;

fn with_context(mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    request
        .headers_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    request
        .extensions_mut()
        .insert(PeerAddr("198.51.100.7:5000".parse().unwrap()));
    request
}

/// Replaces the body of a signed form POST, signed again for the new body.
fn resign(request: &mut Request<Full<Bytes>>, body: &str) {
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        body,
    );
    request
        .headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    *request.body_mut() = Full::new(Bytes::from(body.to_owned()));
}

/// One request per rejection reason; each emits exactly one event with every context field.
#[tokio::test]
async fn each_rejection_reason_emits_one_event_with_its_context() {
    type Change = fn(&mut Request<Full<Bytes>>);
    let cases: Vec<(RejectionKind, Change)> = vec![
        (RejectionKind::MissingSignature, |r| {
            r.headers_mut().remove("x-twilio-signature");
        }),
        (RejectionKind::DuplicateSignature, |r| {
            let v = r.headers()["x-twilio-signature"].clone();
            r.headers_mut().append("x-twilio-signature", v);
        }),
        (RejectionKind::MalformedSignature, |r| {
            r.headers_mut()
                .insert("x-twilio-signature", "x".parse().unwrap());
        }),
        (RejectionKind::MalformedSettings, |r| {
            r.headers_mut().insert(
                "x-twilio-webhooks-signature-settings",
                "algorithm=HMAC_SHA1".parse().unwrap(),
            );
        }),
        (RejectionKind::UnsupportedAlgorithm, |r| {
            r.headers_mut().insert(
                "x-twilio-webhooks-signature-settings",
                "key=k,algorithm=HMAC_SHA3".parse().unwrap(),
            );
        }),
        (RejectionKind::UnsupportedContentType, |r| {
            r.headers_mut()
                .insert("content-type", "text/csv".parse().unwrap());
        }),
        (RejectionKind::SignatureMismatch, |r| {
            *r.uri_mut() = "/twilio/sms?x".parse().unwrap();
        }),
        (RejectionKind::BodyHashMismatch, |r| {
            // A signed bodySHA256 URL with a different JSON body.
            let url = tower_twilio::signature::url_with_body_sha256(
                &format!("{PUBLIC}/twilio/sms"),
                b"{}",
            );
            let sig = twilio_signature(TOKEN, Algorithm::HmacSha1, &url, "");
            *r.uri_mut() = url.strip_prefix(PUBLIC).unwrap().parse().unwrap();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut()
                .insert("x-twilio-signature", sig.parse().unwrap());
            *r.body_mut() = Full::new(Bytes::from_static(
                b"{\"AccountSid\":\"AC0123ffffffffffffffffffffffffffff\"}",
            ));
        }),
        (RejectionKind::UnknownAccount, |r| {
            *r.body_mut() = Full::new(Bytes::from_static(
                b"AccountSid=ACeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            ));
        }),
        (RejectionKind::UnknownSharedKey, |r| {
            r.headers_mut().insert(
                "x-twilio-webhooks-signature-settings",
                "key=nope,algorithm=HMAC_SHA1".parse().unwrap(),
            );
        }),
        (RejectionKind::UnresolvableUrl, |r| {
            *r.uri_mut() = "*".parse().unwrap();
        }),
        (RejectionKind::BodyTooLarge, |r| {
            *r.body_mut() = Full::new(Bytes::from(vec![b'a'; 70_000]));
        }),
        (RejectionKind::TooManyParameters, |r| {
            let body = (0..1001).map(|i| format!("p{i}=1&")).collect::<String>();
            resign(r, &body);
        }),
        (RejectionKind::MethodNotAllowed, |r| {
            *r.method_mut() = http::Method::PUT;
        }),
        (RejectionKind::ConflictingAccountSid, |r| {
            let body = format!("{SMS_BODY}&AccountSid=ACcccccccccccccccccccccccccccccccc");
            resign(r, &body);
        }),
        (RejectionKind::InvalidAccountSid, |r| {
            resign(
                r,
                &SMS_BODY.replace("AccountSid=AC0123ffff", "AccountSid=AC0123"),
            );
        }),
        (RejectionKind::InvalidSharedKeyId, |r| {
            r.headers_mut().insert(
                "x-twilio-webhooks-signature-settings",
                "key=no/slashes,algorithm=HMAC_SHA1".parse().unwrap(),
            );
        }),
        (RejectionKind::AccountMismatch, |r| {
            // Signed with acme's token, naming an account acme's credentials do not own.
            let body = SMS_BODY.replace(
                "AccountSid=AC0123ffffffffffffffffffffffffffff",
                "AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            );
            resign(r, &body);
        }),
        (RejectionKind::ResolverFailed, |r| {
            *r.body_mut() = Full::new(Bytes::from_static(
                b"AccountSid=ACdddddddddddddddddddddddddddddddd",
            ));
        }),
    ];
    let resolver = |req: ResolveRequest| async move {
        let result: Resolution = match req.account_sid() {
            Some("ACdddddddddddddddddddddddddddddddd") => Err("lookup timed out".into()),
            Some("AC0123ffffffffffffffffffffffffffff") => Ok(Some(
                Credentials::new()
                    .tenant("acme")
                    .auth_token("primary", token()),
            )),
            // A resolver that maps this SID to the credentials of another account.
            Some("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") => Ok(Some(
                Credentials::new()
                    .tenant("acme")
                    .account("AC0123ffffffffffffffffffffffffffff")
                    .auth_token("primary", token()),
            )),
            _ => Ok(None),
        };
        result
    };
    for (kind, change) in cases {
        let sink = RecordingSink::default();
        let layer = TwilioSignatureLayer::new(resolver)
            .public_url(PublicUrl::fixed(PUBLIC).unwrap())
            .on_security_event(sink.clone());
        let mut request = with_context(signed_post("/twilio/sms", SMS_BODY));
        change(&mut request);
        let response = ServiceBuilder::new()
            .layer(layer)
            .service_fn(echo)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), kind.status(), "{kind:?}");
        let events = sink.events();
        assert_eq!(events.len(), 1, "{kind:?}: {events:?}");
        let event = &events[0];
        assert_eq!(event.reason, kind);
        assert_eq!(event.event_type(), kind.as_str());
        assert_eq!(event.outcome, Outcome::Rejected);
        assert_eq!(event.provider, "twilio");
        let method = if kind == RejectionKind::MethodNotAllowed {
            http::Method::PUT
        } else {
            http::Method::POST
        };
        assert_eq!(event.method, method, "{kind:?}");
        assert_eq!(
            event.user_agent.as_deref(),
            Some("TwilioProxy/1.1"),
            "{kind:?}"
        );
        assert_eq!(event.request_id.as_deref(), Some("req-42"), "{kind:?}");
        assert_eq!(event.client_ip, "198.51.100.7".parse().ok(), "{kind:?}");
        assert!(
            event.url.contains("/twilio/sms") || kind == RejectionKind::UnresolvableUrl,
            "{kind:?}: {}",
            event.url
        );
        assert!(event.timestamp.elapsed().unwrap().as_secs() < 60);
        let expected_severity = match kind {
            RejectionKind::SignatureMismatch
            | RejectionKind::BodyHashMismatch
            | RejectionKind::UnknownAccount
            | RejectionKind::UnknownSharedKey
            | RejectionKind::ResolverFailed
            | RejectionKind::ConflictingAccountSid
            | RejectionKind::AccountMismatch => Severity::Critical,
            RejectionKind::BodyTooLarge | RejectionKind::TooManyParameters => Severity::Info,
            _ => Severity::Warning,
        };
        assert_eq!(event.severity, expected_severity, "{kind:?}");
        if kind == RejectionKind::SignatureMismatch {
            assert_eq!(event.tenant_id.as_deref(), Some("acme"));
            assert_eq!(
                event.account_sid.as_deref(),
                Some("AC0123ffffffffffffffffffffffffffff")
            );
        }
        let shown = format!("{event:?}");
        for secret in [
            TOKEN,
            &twilio_signature(
                TOKEN,
                Algorithm::HmacSha1,
                &format!("{PUBLIC}/twilio/sms"),
                SMS_BODY,
            ),
            "Hello",
        ] {
            assert!(
                !shown.contains(secret),
                "{kind:?} event shows {secret:?}: {shown}"
            );
        }
    }
}

/// The tracing sink's output: structured, on a stable target, free of secrets. The example
/// entry in docs/TWILIO_WEBHOOK_SETUP.md is this test's output (run with `UPDATE_DOCS=1` to
/// rewrite it after a deliberate change).
#[tokio::test(flavor = "current_thread")]
async fn tracing_events_are_structured_and_the_docs_show_a_real_one() {
    let (captured, _guard) = capture_json_logs();

    let layer = TwilioSignatureLayer::new(
        Credentials::new()
            .tenant("acme")
            .auth_token("primary", token()),
    )
    .public_url(PublicUrl::fixed(PUBLIC).unwrap());
    let mut forged = with_context(signed_post("/twilio/sms", SMS_BODY));
    *forged.body_mut() = Full::new(Bytes::from(SMS_BODY.replace("Hello", "Send+money+to")));
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(echo)
        .oneshot(forged)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let output = captured.text();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "{output}");
    let mut entry: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(entry["target"], "tower_twilio::security");
    assert_eq!(entry["level"], "ERROR");
    assert_eq!(entry["event_type"], "signature_mismatch");
    assert_eq!(entry["outcome"], "rejected");
    assert_eq!(entry["tenant_id"], "acme");
    assert_eq!(entry["account_sid"], "AC0123ffffffffffffffffffffffffffff");
    assert_eq!(entry["client_ip"], "198.51.100.7");
    assert_eq!(entry["url"], "https://api.example.com/twilio/sms");
    assert_eq!(entry["request_id"], "req-42");
    for secret in [TOKEN, "money", "x-twilio-signature"] {
        assert!(
            !lines[0].contains(secret),
            "log shows {secret:?}: {}",
            lines[0]
        );
    }

    // The docs show this entry, with the timestamp fixed.
    entry["timestamp"] = "2026-11-28T12:00:00.000000Z".into();
    let example = serde_json::to_string_pretty(&entry).unwrap();
    let docs_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/TWILIO_WEBHOOK_SETUP.md");
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    let (start, end) = (
        "<!-- example-log-entry:start -->\n```json\n",
        "\n```\n<!-- example-log-entry:end -->",
    );
    let from = docs
        .find(start)
        .expect("docs have the example-log-entry markers")
        + start.len();
    let to = docs[from..].find(end).expect("end marker") + from;
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(
            &docs_path,
            format!("{}{example}{}", &docs[..from], &docs[to..]),
        )
        .unwrap();
    } else {
        assert_eq!(
            &docs[from..to],
            example,
            "the docs' example log entry is stale: run with UPDATE_DOCS=1"
        );
    }
}

#[derive(Clone, Default)]
struct RecordingLog(Arc<Mutex<Vec<WebhookLogEntry>>>);

impl RecordingLog {
    fn outcomes(&self) -> Vec<(u64, WebhookOutcome)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.id, e.outcome))
            .collect()
    }
}

/// The webhook log sees every request once from receipt to exactly one final outcome.
#[tokio::test]
async fn the_webhook_log_sees_every_request_from_receipt_to_outcome() {
    let log = RecordingLog::default();
    let recorder = log.clone();
    let layer = TwilioSignatureLayer::new(
        Credentials::new()
            .tenant("acme")
            .auth_token("primary", token()),
    )
    .public_url(PublicUrl::fixed(PUBLIC).unwrap())
    .on_security_event(())
    .on_webhook(move |entry: &WebhookLogEntry| recorder.0.lock().unwrap().push(entry.clone()));
    let handler = |request: Request<VerifiedBody>| async move {
        let status = match request.uri().path() {
            "/twilio/fail" => StatusCode::INTERNAL_SERVER_ERROR,
            "/twilio/slow" => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                StatusCode::OK
            }
            _ => StatusCode::OK,
        };
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        Ok::<_, Infallible>(response)
    };
    let service = ServiceBuilder::new().layer(layer).service_fn(handler);

    let processed = service
        .clone()
        .oneshot(signed_post("/twilio/sms", SMS_BODY))
        .await
        .unwrap();
    assert_eq!(processed.status(), StatusCode::OK);
    let mut forged = signed_post("/twilio/sms", SMS_BODY);
    forged.headers_mut().remove("x-twilio-signature");
    assert_eq!(
        service.clone().oneshot(forged).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let failed = service
        .clone()
        .oneshot(signed_post("/twilio/fail", SMS_BODY))
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // A request whose client goes away while the handler runs.
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        service
            .clone()
            .oneshot(signed_post("/twilio/slow", SMS_BODY)),
    )
    .await;
    assert!(abandoned.is_err());

    let outcomes = log.outcomes();
    let mut ids: Vec<u64> = outcomes.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{outcomes:?}");
    let of = |i: usize| -> Vec<WebhookOutcome> {
        outcomes
            .iter()
            .filter(|(id, _)| *id == ids[i])
            .map(|(_, s)| *s)
            .collect()
    };
    assert_eq!(
        of(0),
        [
            WebhookOutcome::Received,
            WebhookOutcome::Verified,
            WebhookOutcome::Processed(StatusCode::OK)
        ]
    );
    assert_eq!(
        of(1),
        [
            WebhookOutcome::Received,
            WebhookOutcome::Rejected(RejectionKind::MissingSignature)
        ]
    );
    assert_eq!(
        of(2),
        [
            WebhookOutcome::Received,
            WebhookOutcome::Verified,
            WebhookOutcome::Failed(Some(StatusCode::INTERNAL_SERVER_ERROR))
        ]
    );
    assert_eq!(
        of(3),
        [
            WebhookOutcome::Received,
            WebhookOutcome::Verified,
            WebhookOutcome::Failed(None)
        ]
    );
    for i in 0..4 {
        assert_eq!(
            of(i).iter().filter(|s| s.is_final()).count(),
            1,
            "exactly one final outcome"
        );
    }
    let entries = log.0.lock().unwrap();
    let verified = entries
        .iter()
        .find(|e| e.outcome == WebhookOutcome::Verified)
        .unwrap();
    let webhook = verified.webhook.as_ref().unwrap();
    assert_eq!(webhook.params().get("MessageSid"), Some("SM0123"));
    assert_eq!(webhook.tenant_id(), Some("acme"));
    assert_eq!(verified.path, "/twilio/sms");
}

#[cfg(feature = "sentry")]
mod sentry {
    use super::*;
    use tower_twilio::events::{SentrySink, TracingSink};

    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn forged() -> Request<Full<Bytes>> {
        let mut request = with_context(signed_post("/twilio/sms", SMS_BODY));
        *request.body_mut() = Full::new(Bytes::from(SMS_BODY.replace("Hello", "Hullo")));
        request
    }

    #[test]
    fn a_forged_request_is_one_sentry_event_with_tags_in_the_request_scope() {
        let events = sentry_core::test::with_captured_events(|| {
            run(async {
                let layer = TwilioSignatureLayer::new(
                    Credentials::new()
                        .tenant("acme")
                        .auth_token("primary", token()),
                )
                .public_url(PublicUrl::fixed(PUBLIC).unwrap())
                .on_security_event((TracingSink::new(), SentrySink::new()));
                // sentry-tower gives each request its own hub, with the request in its scope.
                let service = ServiceBuilder::new()
                    .layer(sentry_tower::NewSentryLayer::<Request<Full<Bytes>>>::new_from_top())
                    .layer(sentry_tower::SentryHttpLayer::new())
                    .layer(layer)
                    .service_fn(echo);
                let response = service.oneshot(forged()).await.unwrap();
                assert_eq!(response.status(), StatusCode::FORBIDDEN);
            });
        });
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(event.tags["provider"], "twilio");
        assert_eq!(event.tags["event_type"], "signature_mismatch");
        assert_eq!(event.tags["tenant_id"], "acme");
        assert_eq!(event.extra["client_ip"], "198.51.100.7");
        assert_eq!(event.extra["request_id"], "req-42");
        // The per-request hub's scope added the request to the event.
        let request = event
            .request
            .as_ref()
            .expect("the event joined the request's scope");
        assert_eq!(request.method.as_deref(), Some("POST"));
        let shown = format!("{event:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains("Hullo"),
            "{shown}"
        );
    }

    #[test]
    fn a_burst_of_forgeries_is_a_bounded_number_of_sentry_events() {
        let events = sentry_core::test::with_captured_events(|| {
            run(async {
                let layer = TwilioSignatureLayer::new(
                    Credentials::new()
                        .tenant("acme")
                        .auth_token("primary", token()),
                )
                .public_url(PublicUrl::fixed(PUBLIC).unwrap())
                .on_security_event(SentrySink::new());
                let service = ServiceBuilder::new().layer(layer).service_fn(echo);
                for _ in 0..1000 {
                    let response = service.clone().oneshot(forged()).await.unwrap();
                    assert_eq!(response.status(), StatusCode::FORBIDDEN);
                }
            });
        });
        assert_eq!(
            events.len(),
            10,
            "the default limit is 10 per type and tenant per minute"
        );
        // Warnings (a missing signature) are not sent to Sentry by default.
        let warnings = sentry_core::test::with_captured_events(|| {
            run(async {
                let layer =
                    TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
                        .public_url(PublicUrl::fixed(PUBLIC).unwrap())
                        .on_security_event(SentrySink::new());
                let mut request = forged();
                request.headers_mut().remove("x-twilio-signature");
                ServiceBuilder::new()
                    .layer(layer)
                    .service_fn(echo)
                    .oneshot(request)
                    .await
                    .unwrap();
            });
        });
        assert!(warnings.is_empty());
    }
}

/// Issue 19: a genuine webhook refused for its URL (here the public URL is configured as
/// `http`) sent its whole query, values included, to every sink: in the event's URL, in the
/// diagnosis, in the Sentry extras and the webhook log. Names stay; values are redacted.
mod no_parameter_values {
    use std::time::{Duration, Instant};

    use tower_twilio::events::{OnSecurityEvent, SecurityEvent, TracingSink};

    use super::*;

    /// Values of the query that must reach no sink.
    /// (The last ends in `=`, as base64 values do: it is a value all the same.)
    const VALUES: [&str; 3] = ["14155550100", "493817", "c2VjcmV0LWNvZGU="];
    const TARGET: &str = "/twilio/gather?From=%2B14155550100&Code=493817&Token=c2VjcmV0LWNvZGU=";

    /// Runs a webhook Twilio signed for `https://…` through a layer configured with `http://…`,
    /// and returns every security event (the diagnosed one included) and log entry.
    fn refused() -> (Vec<SecurityEvent>, Vec<WebhookLogEntry>) {
        let sink = crate::support::RecordingSink::default();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let log = {
            let entries = Arc::clone(&entries);
            move |entry: &WebhookLogEntry| entries.lock().unwrap().push(entry.clone())
        };
        let layer = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
            .public_url(PublicUrl::fixed("http://api.example.com").unwrap())
            .diagnose_mismatches_per_second(20)
            .on_webhook(log)
            .on_security_event(sink.clone());
        let signature = twilio_signature(
            TOKEN,
            Algorithm::HmacSha1,
            &format!("{PUBLIC}{TARGET}"),
            SMS_BODY,
        );
        let request = Request::post(TARGET)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(Full::new(Bytes::from_static(SMS_BODY.as_bytes())))
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = runtime
            .block_on(
                ServiceBuilder::new()
                    .layer(layer)
                    .service_fn(echo)
                    .oneshot(request),
            )
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        // The diagnosis may come after the response.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sink.events().iter().any(|e| e.diagnosis.is_some()) {
            assert!(Instant::now() < deadline, "no diagnosis");
            std::thread::sleep(Duration::from_millis(5));
        }
        let entries = entries.lock().unwrap().clone();
        (sink.events(), entries)
    }

    fn assert_clean(what: &str, text: &str) {
        for value in VALUES {
            assert!(!text.contains(value), "{what} holds {value}: {text}");
        }
    }

    #[test]
    fn security_events_and_the_diagnosis_keep_names_only() {
        let (events, _) = refused();
        for event in &events {
            assert_clean("the event's URL", &event.url);
            assert!(
                event.url.contains("From=") && event.url.contains("Code="),
                "{}",
                event.url
            );
            if let Some(diagnosis) = &event.diagnosis {
                assert_clean("the diagnosis", &diagnosis.to_string());
                assert_clean("the matched URL", diagnosis.matched_url());
                assert!(
                    diagnosis
                        .matched_url()
                        .starts_with("https://api.example.com/twilio/gather?From=")
                );
                assert_eq!(diagnosis.public_base(), Some("https://api.example.com"));
            }
        }
    }

    #[test]
    fn the_tracing_sink_keeps_names_only() {
        let (events, _) = refused();
        let (captured, _guard) = capture_json_logs();
        for event in &events {
            TracingSink::new().on_security_event(event);
        }
        let text = captured.text();
        assert!(text.contains("diagnosis_matched_url"), "{text}");
        assert_clean("the tracing output", &text);
    }

    #[test]
    fn the_webhook_log_keeps_names_only_for_refused_requests() {
        let (_, entries) = refused();
        assert!(entries.iter().any(|e| e.diagnosis.is_some()));
        for entry in &entries {
            let query = entry.query.as_deref().unwrap_or_default();
            assert!(
                query.contains("From=") && query.contains("Code="),
                "{query}"
            );
            assert_clean("the log entry's query", query);
            if let Some(diagnosis) = &entry.diagnosis {
                assert_clean("the logged diagnosis", &diagnosis.to_string());
            }
        }
    }

    #[cfg(feature = "sentry")]
    #[test]
    fn the_sentry_sink_keeps_names_only() {
        let (events, _) = refused();
        let captured = sentry_core::test::with_captured_events(|| {
            let sink = tower_twilio::events::SentrySink::new();
            for event in &events {
                sink.on_security_event(event);
            }
        });
        assert!(!captured.is_empty());
        let text = format!("{captured:?}");
        assert!(text.contains("diagnosis_matched_url"), "{text}");
        assert_clean("what Sentry got", &text);
    }
}
