//! "Verified means verified": each attack of issue 14, replayed through the real layer by an
//! attacker who holds one captured webhook or one tenant's own token. Every request here must
//! be refused with its own typed reason; the inner service must never run.

use std::{
    convert::Infallible,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::Path, routing::post};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_twilio::{
    Credentials, PublicUrl, Rejection, RejectionKind, Secret, TwilioSignatureLayer, VerifiedBody,
    VerifiedWebhook,
    resolver::{AccountMap, ResolveRequest},
    signature::{Algorithm, url_with_body_sha256},
};

use crate::support::*;

const FORM: &str = "application/x-www-form-urlencoded";
const ACCOUNT_A: &str = "AC0123456789abcdef0123456789abcdef";
const ACCOUNT_B: &str = "ACfedcba9876543210fedcba9876543210";
const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn secret(text: &str) -> Secret {
    Secret::new(text).unwrap()
}

/// What the inner service saw: how many calls, and the last verified context.
#[derive(Clone, Default)]
struct Seen {
    calls: Arc<AtomicUsize>,
    webhook: Arc<std::sync::Mutex<Option<VerifiedWebhook>>>,
}

/// Sends `request` through `layer` around a service that records what it receives; returns
/// the response's status and typed rejection.
async fn send<R>(
    layer: TwilioSignatureLayer<R, RecordingSink>,
    request: Request<Full<Bytes>>,
    seen: &Seen,
) -> (StatusCode, Option<RejectionKind>)
where
    R: tower_twilio::ResolveCredentials + Clone + Send + 'static,
{
    let seen = seen.clone();
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |request: Request<VerifiedBody>| {
            let seen = seen.clone();
            async move {
                seen.calls.fetch_add(1, Ordering::SeqCst);
                *seen.webhook.lock().unwrap() =
                    request.extensions().get::<VerifiedWebhook>().cloned();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        })
        .oneshot(request)
        .await
        .unwrap();
    let kind = response
        .extensions()
        .get::<Rejection>()
        .map(Rejection::kind);
    (response.status(), kind)
}

fn layer_for<R>(resolver: R) -> TwilioSignatureLayer<R, RecordingSink> {
    TwilioSignatureLayer::new(resolver)
        .public_url(PublicUrl::fixed(PUBLIC).unwrap())
        .on_security_event(RecordingSink::default())
}

fn single_account() -> Credentials {
    Credentials::new()
        .account(ACCOUNT_A)
        .auth_token("primary", secret(TOKEN_A))
}

fn sms_body(account: &str) -> String {
    format!("MessageSid=SM0123&AccountSid={account}&From=%2B14155550100&To=%2B14155550199&Body=hi")
}

/// A form POST of `body` to `/twilio/sms`, signed with the auth token `token`.
fn signed_sms(token: &str, body: &str) -> Request<Full<Bytes>> {
    let url = format!("{PUBLIC}/twilio/sms");
    form_post(
        "/twilio/sms",
        body,
        &twilio_signature(token, Algorithm::HmacSha1, &url, body),
    )
}

fn form_post(target: &str, body: &str, signature: &str) -> Request<Full<Bytes>> {
    Request::post(target)
        .header("content-type", FORM)
        .header("x-twilio-signature", signature)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Path binding.

/// A captured SMS webhook, signed for `/twilio/sms`, replayed at paths the lenient URL forms
/// resolve back to `/twilio/sms`.
const PATH_ATTACKS: [&str; 8] = [
    "/twilio/recordings/%2e%2e/sms",
    "/twilio/recordings/%2E%2E/sms",
    "/twilio/recordings/.%2e/sms",
    "/twilio/voice/../sms",
    "/twilio/./sms",
    "/twilio/recordings/%2e%2e/%2e/sms",
    "/twilio\\sms",
    "/twilio/x\\..\\sms",
];

#[tokio::test]
async fn a_signature_for_one_path_does_not_verify_at_another() {
    let body = sms_body(ACCOUNT_A);
    let signature = twilio_signature(
        TOKEN_A,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        &body,
    );
    for target in PATH_ATTACKS {
        let seen = Seen::default();
        let Ok(request) = std::panic::catch_unwind(|| form_post(target, &body, &signature)) else {
            panic!("{target} is not a request target http accepts");
        };
        let (status, kind) = send(layer_for(single_account()), request, &seen).await;
        assert_eq!(
            (status, kind),
            (
                StatusCode::FORBIDDEN,
                Some(RejectionKind::SignatureMismatch)
            ),
            "{target}"
        );
        assert_eq!(seen.calls.load(Ordering::SeqCst), 0, "{target}");
    }
    // The genuine request still verifies, and so do the spellings that cannot change routing.
    let seen = Seen::default();
    let ok = send(
        layer_for(single_account()),
        form_post("/twilio/sms", &body, &signature),
        &seen,
    )
    .await;
    assert_eq!(ok, (StatusCode::OK, None));
}

/// The path attack through a real axum router: with a `/twilio/recordings/{*rest}` route, the
/// captured SMS webhook must not reach the recordings handler with `rest = "../sms"`.
#[tokio::test]
async fn a_captured_sms_webhook_does_not_reach_the_recordings_route() {
    let recordings = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&recordings);
    let app = Router::new()
        .route("/twilio/sms", post(|| async { "sms" }))
        .route(
            "/twilio/recordings/{*rest}",
            post(move |Path(rest): Path<String>| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    format!("recording {rest}")
                }
            }),
        )
        .route_layer(
            TwilioSignatureLayer::new(single_account())
                .public_url(PublicUrl::fixed(PUBLIC).unwrap())
                .on_security_event(()),
        );
    let body = sms_body(ACCOUNT_A);
    let signature = twilio_signature(
        TOKEN_A,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        &body,
    );
    for target in [
        "/twilio/recordings/%2e%2e/sms",
        "/twilio/recordings/..%2Fsms",
        "/twilio/recordings/x/../../sms",
    ] {
        let response = app
            .clone()
            .oneshot(form_post(target, &body, &signature))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{target}");
    }
    assert_eq!(recordings.load(Ordering::SeqCst), 0);
    let response = app
        .oneshot(form_post("/twilio/sms", &body, &signature))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A GET signed over a 1000-pair query must not verify with more pairs appended: node's
/// `querystring` stops at 1000 keys, so its re-serialised form drops them. (At the default
/// `max_params` of 1000 such a query is refused before the signature is looked at; the binding
/// rule is checked with the limit raised.)
#[tokio::test]
async fn query_pairs_past_a_thousand_are_not_dropped() {
    let mut query = String::from("AccountSid=");
    query.push_str(ACCOUNT_A);
    for i in 1..1000 {
        query.push_str(&format!("&p{i}=v"));
    }
    let signature = twilio_signature(
        TOKEN_A,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/voice?{query}"),
        "",
    );
    // `'` in the signed-for query forces the lenient re-serialisations to be computed.
    let appended = format!("/twilio/voice?{query}&To=%2B1999&Tenant=evil&x='");
    let seen = Seen::default();
    let request = || {
        Request::get(appended.as_str())
            .header("x-twilio-signature", &signature)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let raised = layer_for(single_account()).max_params(NonZeroUsize::new(2000).unwrap());
    let (status, kind) = send(raised, request(), &seen).await;
    assert_eq!(
        (status, kind),
        (
            StatusCode::FORBIDDEN,
            Some(RejectionKind::SignatureMismatch)
        )
    );
    let (status, kind) = send(layer_for(single_account()), request(), &seen).await;
    assert_eq!(
        (status, kind),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(RejectionKind::TooManyParameters)
        )
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// 2. Body and method binding.

/// A JSON webhook: URL-only signature over a URL that carries `bodySHA256`.
fn json_webhook() -> (String, String, &'static str) {
    let body = r#"{"AccountSid":"AC0123456789abcdef0123456789abcdef","MessageStatus":"delivered"}"#;
    let url = url_with_body_sha256(&format!("{PUBLIC}/twilio/status"), body.as_bytes());
    let signature = twilio_signature(TOKEN_A, Algorithm::HmacSha1, &url, "");
    let target = url[PUBLIC.len()..].to_owned();
    (target, signature, body)
}

#[tokio::test]
async fn a_json_webhook_replayed_as_get_head_or_a_form_fails_the_body_hash() {
    let (target, signature, body) = json_webhook();
    let genuine = Request::post(target.as_str())
        .header("content-type", "application/json")
        .header("x-twilio-signature", &signature)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let ok = send(layer_for(single_account()), genuine, &Seen::default()).await;
    assert_eq!(ok, (StatusCode::OK, None));

    let get = Request::get(target.as_str())
        .header("x-twilio-signature", &signature)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let forms = ["", "&&&", "AccountSid=ACfedcba9876543210fedcba9876543210"].map(|form| {
        Request::post(target.as_str())
            .header("content-type", FORM)
            .header("x-twilio-signature", &signature)
            .body(Full::new(Bytes::from(form)))
            .unwrap()
    });
    for (what, request) in std::iter::once(("GET", get)).chain(
        ["form ''", "form '&&&'", "form with a body"]
            .into_iter()
            .zip(forms),
    ) {
        let seen = Seen::default();
        let outcome = send(layer_for(single_account()), request, &seen).await;
        assert_eq!(
            outcome,
            (StatusCode::FORBIDDEN, Some(RejectionKind::BodyHashMismatch)),
            "{what}"
        );
        assert_eq!(seen.calls.load(Ordering::SeqCst), 0, "{what}");
    }
}

#[tokio::test]
async fn only_get_and_post_verify() {
    let body = sms_body(ACCOUNT_A);
    let signature = twilio_signature(
        TOKEN_A,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        &body,
    );
    let (target, json_signature, json) = json_webhook();
    for method in ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        for (target, content_type, body, signature) in [
            ("/twilio/sms", FORM, body.as_str(), signature.as_str()),
            (
                target.as_str(),
                "application/json",
                json,
                json_signature.as_str(),
            ),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(target)
                .header("content-type", content_type)
                .header("x-twilio-signature", signature)
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap();
            let seen = Seen::default();
            let (status, kind) = send(layer_for(single_account()), request, &seen).await;
            assert_eq!(
                kind,
                Some(RejectionKind::MethodNotAllowed),
                "{method} {target}"
            );
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {target}");
            assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Account binding. Tenant B holds only its own token and wants `account_sid()` to say A.

fn two_tenants() -> AccountMap {
    AccountMap::new()
        .insert_account(
            ACCOUNT_A,
            Credentials::new()
                .tenant("tenant-a")
                .auth_token("primary", secret(TOKEN_A))
                .shared_key("key_a", secret("shared-secret-of-a")),
        )
        .insert_account(
            ACCOUNT_B,
            Credentials::new()
                .tenant("tenant-b")
                .auth_token("primary", secret(TOKEN_B))
                .shared_key("key_b", secret("shared-secret-of-b")),
        )
}

#[tokio::test]
async fn a_repeated_account_sid_with_two_values_is_refused() {
    // The layer read the first value, `Form<HashMap>` reads the last.
    for body in [
        format!("AccountSid={ACCOUNT_B}&Body=hi&AccountSid={ACCOUNT_A}"),
        format!("AccountSid={ACCOUNT_A}&Body=hi&AccountSid={ACCOUNT_B}"),
    ] {
        let seen = Seen::default();
        let outcome = send(layer_for(two_tenants()), signed_sms(TOKEN_B, &body), &seen).await;
        assert_eq!(
            outcome,
            (
                StatusCode::FORBIDDEN,
                Some(RejectionKind::ConflictingAccountSid)
            ),
            "{body}"
        );
        assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
    }
    // The same value twice is one account.
    let body = format!("AccountSid={ACCOUNT_B}&Body=hi&AccountSid={ACCOUNT_B}");
    let seen = Seen::default();
    let outcome = send(layer_for(two_tenants()), signed_sms(TOKEN_B, &body), &seen).await;
    assert_eq!(outcome, (StatusCode::OK, None));
    let webhook = seen.webhook.lock().unwrap().clone().unwrap();
    assert_eq!(webhook.account_sid(), Some(ACCOUNT_B));
}

#[tokio::test]
async fn query_and_body_naming_two_accounts_are_refused() {
    // JSON: the query says B (the resolver picks B's token), the body says A.
    let json = format!(r#"{{"AccountSid":"{ACCOUNT_A}","MessageStatus":"delivered"}}"#);
    let url = url_with_body_sha256(
        &format!("{PUBLIC}/twilio/status?AccountSid={ACCOUNT_B}"),
        json.as_bytes(),
    );
    let signature = twilio_signature(TOKEN_B, Algorithm::HmacSha1, &url, "");
    let request = Request::post(&url[PUBLIC.len()..])
        .header("content-type", "application/json")
        .header("x-twilio-signature", &signature)
        .body(Full::new(Bytes::from(json)))
        .unwrap();
    let seen = Seen::default();
    let outcome = send(layer_for(two_tenants()), request, &seen).await;
    assert_eq!(
        outcome,
        (
            StatusCode::FORBIDDEN,
            Some(RejectionKind::ConflictingAccountSid)
        )
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);

    // Form: the query says B, the body says A.
    let body = sms_body(ACCOUNT_A);
    let url = format!("{PUBLIC}/twilio/sms?AccountSid={ACCOUNT_B}");
    let signature = twilio_signature(TOKEN_B, Algorithm::HmacSha1, &url, &body);
    let seen = Seen::default();
    let outcome = send(
        layer_for(two_tenants()),
        form_post(&url[PUBLIC.len()..], &body, &signature),
        &seen,
    )
    .await;
    assert_eq!(
        outcome,
        (
            StatusCode::FORBIDDEN,
            Some(RejectionKind::ConflictingAccountSid)
        )
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_shared_key_verifies_only_for_its_own_account() {
    // B signs, with B's SharedKey, a body that names A.
    let body = sms_body(ACCOUNT_A);
    let url = format!("{PUBLIC}/twilio/sms");
    let signature = twilio_signature("shared-secret-of-b", Algorithm::HmacSha256, &url, &body);
    let request = |signature: &str| {
        Request::post("/twilio/sms")
            .header("content-type", FORM)
            .header("x-twilio-signature", signature)
            .header(
                "x-twilio-webhooks-signature-settings",
                "key=key_b,algorithm=HMAC_SHA256",
            )
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap()
    };
    // By AccountMap (keys inserted with their account), by a closure resolver that looks the key
    // up by id only, and by a static `Credentials`.
    let by_key_id_only = |request: ResolveRequest| async move {
        Ok(match request.shared_key_id() {
            Some("key_b") => Some(
                Credentials::new()
                    .account(ACCOUNT_B)
                    .shared_key("key_b", secret("shared-secret-of-b")),
            ),
            _ => None,
        })
    };
    let b_only = Credentials::new()
        .account(ACCOUNT_B)
        .shared_key("key_b", secret("shared-secret-of-b"));

    let seen = Seen::default();
    let outcome = send(layer_for(two_tenants()), request(&signature), &seen).await;
    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, Some(RejectionKind::AccountMismatch)),
        "AccountMap"
    );
    let outcome = send(layer_for(by_key_id_only), request(&signature), &seen).await;
    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, Some(RejectionKind::AccountMismatch)),
        "closure"
    );
    let outcome = send(layer_for(b_only), request(&signature), &seen).await;
    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, Some(RejectionKind::AccountMismatch)),
        "Credentials"
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);

    // The same key, signing a body that names its own account, verifies and reports it.
    let own = sms_body(ACCOUNT_B);
    let signature = twilio_signature("shared-secret-of-b", Algorithm::HmacSha256, &url, &own);
    let request = Request::post("/twilio/sms")
        .header("content-type", FORM)
        .header("x-twilio-signature", &signature)
        .header(
            "x-twilio-webhooks-signature-settings",
            "key=key_b,algorithm=HMAC_SHA256",
        )
        .body(Full::new(Bytes::from(own)))
        .unwrap();
    let seen = Seen::default();
    let outcome = send(layer_for(two_tenants()), request, &seen).await;
    assert_eq!(outcome, (StatusCode::OK, None));
    let webhook = seen.webhook.lock().unwrap().clone().unwrap();
    assert_eq!(webhook.account_sid(), Some(ACCOUNT_B));
    assert_eq!(webhook.tenant_id(), Some("tenant-b"));
}

/// A SharedKey whose resolver does not say which account it belongs to verifies nothing.
#[tokio::test]
async fn a_shared_key_without_an_account_verifies_nothing() {
    let body = sms_body(ACCOUNT_B);
    let url = format!("{PUBLIC}/twilio/sms");
    let signature = twilio_signature("shared-secret-of-b", Algorithm::HmacSha256, &url, &body);
    let request = Request::post("/twilio/sms")
        .header("content-type", FORM)
        .header("x-twilio-signature", &signature)
        .header(
            "x-twilio-webhooks-signature-settings",
            "key=key_b,algorithm=HMAC_SHA256",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let unowned = Credentials::new().shared_key("key_b", secret("shared-secret-of-b"));
    let seen = Seen::default();
    let outcome = send(layer_for(unowned), request, &seen).await;
    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, Some(RejectionKind::AccountMismatch))
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

/// A single-account `Credentials` that names its account refuses requests naming another one,
/// even when signed with its own token.
#[tokio::test]
async fn credentials_for_one_account_refuse_another_account_sid() {
    let body = sms_body(ACCOUNT_B);
    let seen = Seen::default();
    let outcome = send(
        layer_for(single_account()),
        signed_sms(TOKEN_A, &body),
        &seen,
    )
    .await;
    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, Some(RejectionKind::AccountMismatch))
    );
}

/// Event Streams: a JSON array of CloudEvents with no top-level `AccountSid`; the tenant comes
/// from the path the resolver sees.
#[tokio::test]
async fn event_streams_webhooks_verify_by_path() {
    let events = r#"[{"specversion":"1.0","type":"com.twilio.messaging.message.delivered","source":"/2010-04-01/Accounts/ACfedcba9876543210fedcba9876543210/Messages/SM1.json","id":"EZ1","dataschema":"https://events-schemas.twilio.com/Messaging.MessageStatus/1","datacontenttype":"application/json","time":"2026-11-30T08:00:00.000Z","data":{"accountSid":"ACfedcba9876543210fedcba9876543210","messageSid":"SM1","messageStatus":"DELIVERED"}}]"#;
    let url = url_with_body_sha256(
        &format!("{PUBLIC}/twilio/events/tenant-b"),
        events.as_bytes(),
    );
    let signature = twilio_signature(TOKEN_B, Algorithm::HmacSha1, &url, "");
    let by_path = |request: ResolveRequest| async move {
        Ok(match request.uri().path() {
            "/twilio/events/tenant-b" => Some(
                Credentials::new()
                    .tenant("tenant-b")
                    .account(ACCOUNT_B)
                    .auth_token("primary", secret(TOKEN_B)),
            ),
            _ => None,
        })
    };
    let request = |target: &str| {
        Request::post(target)
            .header("content-type", "application/json")
            .header("x-twilio-signature", &signature)
            .body(Full::new(Bytes::from(events)))
            .unwrap()
    };
    let seen = Seen::default();
    let outcome = send(layer_for(by_path), request(&url[PUBLIC.len()..]), &seen).await;
    assert_eq!(outcome, (StatusCode::OK, None));
    let webhook = seen.webhook.lock().unwrap().clone().unwrap();
    assert_eq!(webhook.tenant_id(), Some("tenant-b"));
    assert_eq!(webhook.account_sid(), Some(ACCOUNT_B));

    // Another tenant's path with this body: its resolver answer has another token.
    let other = url.replace("tenant-b", "tenant-a");
    let outcome = send(
        layer_for(by_path),
        request(&other[PUBLIC.len()..]),
        &Seen::default(),
    )
    .await;
    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, Some(RejectionKind::UnknownAccount))
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Input hygiene before any resolver call.

#[tokio::test]
async fn malformed_account_sids_and_key_ids_never_reach_the_resolver() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    let resolver = move |_request: ResolveRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(None) }
    };
    let huge = "A".repeat(60_000);
    for sid in [
        "AC0123",
        "ac0123456789abcdef0123456789abcdef",
        "AC0123456789abcdef0123456789abcdeg",
        "AC0123456789abcdef0123456789abcdef0",
        "SK0123456789abcdef0123456789abcdef",
        huge.as_str(),
        "",
    ] {
        let body = format!("AccountSid={sid}&Body=hi");
        let outcome = send(
            layer_for(resolver.clone()),
            signed_sms(TOKEN_A, &body),
            &Seen::default(),
        )
        .await;
        assert_eq!(
            outcome,
            (
                StatusCode::FORBIDDEN,
                Some(RejectionKind::InvalidAccountSid)
            ),
            "{}",
            &sid[..sid.len().min(40)]
        );
    }
    let long_key = "k".repeat(300);
    for key in ["key with space", "key\"quote", "k%20", long_key.as_str()] {
        let body = sms_body(ACCOUNT_A);
        let request = Request::post("/twilio/sms")
            .header("content-type", FORM)
            .header(
                "x-twilio-signature",
                twilio_signature("s", Algorithm::HmacSha256, "x", ""),
            )
            .header(
                "x-twilio-webhooks-signature-settings",
                format!("key={key},algorithm=HMAC_SHA256"),
            )
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let outcome = send(layer_for(resolver.clone()), request, &Seen::default()).await;
        assert_eq!(
            outcome,
            (
                StatusCode::FORBIDDEN,
                Some(RejectionKind::InvalidSharedKeyId)
            ),
            "{}",
            &key[..key.len().min(40)]
        );
    }
    assert_eq!(asked.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// 7. Per-header proxy trust. nginx sets X-Forwarded-Proto and X-Forwarded-For and passes a
// client's own `Forwarded` header through untouched.

/// A request that reached the app through a trusted nginx at 10.0.0.1: the proxy set
/// `X-Forwarded-Proto: https` and appended the client to `X-Forwarded-For`; the client itself
/// sent `Forwarded: host=…;for=…`, which nginx passed on.
fn through_nginx(
    target: &str,
    body: &str,
    signature: &str,
    client_forwarded: &str,
) -> Request<Full<Bytes>> {
    let mut request = Request::post(target)
        .header("host", "api.example.com")
        .header("content-type", FORM)
        .header("x-twilio-signature", signature)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "198.51.100.7")
        .header("forwarded", client_forwarded)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    request
        .extensions_mut()
        .insert(tower_twilio::PeerAddr("10.0.0.1:40000".parse().unwrap()));
    request
}

#[tokio::test]
async fn a_forwarded_field_the_proxy_does_not_set_is_ignored() {
    use tower_twilio::public_url::{ForwardedField, ForwardedHeaders};

    // The attacker captured a webhook Twilio signed for https://evil.example/twilio/sms
    // (another app's URL) and replays it through our nginx, naming that host in `Forwarded`.
    let body = sms_body(ACCOUNT_A);
    let evil = twilio_signature(
        TOKEN_A,
        Algorithm::HmacSha1,
        "https://evil.example/twilio/sms",
        &body,
    );
    let layer = |sink: &RecordingSink| {
        TwilioSignatureLayer::new(single_account())
            .public_url(PublicUrl::trust_forwarded(
                ForwardedHeaders::new()
                    .trust_proxy("10.0.0.0/8".parse().unwrap())
                    .read(ForwardedField::XForwardedProto)
                    .read(ForwardedField::XForwardedFor),
            ))
            .on_security_event(sink.clone())
    };
    let sink = RecordingSink::default();
    let request = through_nginx(
        "/twilio/sms",
        &body,
        &evil,
        "for=203.0.113.66;host=evil.example;proto=https",
    );
    let outcome = send(layer(&sink), request, &Seen::default()).await;
    assert_eq!(
        outcome,
        (
            StatusCode::FORBIDDEN,
            Some(RejectionKind::SignatureMismatch)
        )
    );
    let event = &sink.events()[0];
    assert_eq!(event.url, "https://api.example.com/twilio/sms");
    assert_eq!(event.client_ip, "198.51.100.7".parse().ok());

    // The genuine webhook, signed for our URL, verifies through the same proxy.
    let ours = twilio_signature(
        TOKEN_A,
        Algorithm::HmacSha1,
        "https://api.example.com/twilio/sms",
        &body,
    );
    let request = through_nginx(
        "/twilio/sms",
        &body,
        &ours,
        "for=203.0.113.66;host=evil.example",
    );
    let sink = RecordingSink::default();
    let outcome = send(layer(&sink), request, &Seen::default()).await;
    assert_eq!(outcome, (StatusCode::OK, None));
}
