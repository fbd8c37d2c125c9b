//! Verification cost, from raw URL and body bytes to a verdict, on four Twilio-shaped payloads.
//!
//! Run with
//!
//! ```text
//! cargo bench --bench verify
//! cargo bench --bench verify -- verify/valid     # one group
//! ```
//!
//! Groups (see docs/BENCHMARKS.md for what each number means):
//!
//! - `verify/valid/NAME`, `verify/invalid/NAME`: `WebhookRequest::verify` with the payload's
//!   signature, and with a well-formed but wrong one (which tries every candidate URL).
//! - `parts/*/NAME`: the pieces on their own: parse and canonicalise the form, HMAC-SHA1 over
//!   the signed string with the `hmac` crate directly (fresh key, and a pre-keyed state), the
//!   SHA-256 of a JSON body, and the decode-and-compare of the received signature.
//! - `layer/NAME`, `layer_baseline/NAME`: one request through `tower::ServiceExt::oneshot`, with
//!   and without `TwilioSignatureLayer` in front of a trivial service.
//! - `layer/with_replay_guard/NAME`: the same with a `ReplayGuard` on the memory store, each
//!   request a new webhook: the difference to `layer/with/NAME` is the guard's cost.
//! - `growth/params/N`, `growth/body_bytes/N`: verification of generated form bodies with more
//!   parameters or a longer value, to show the cost grows linearly.
#![allow(missing_docs)]

use std::{convert::Infallible, hint::black_box, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use http::{Method, Request, Response};
use http_body_util::Full;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_twilio::{
    __private::write_canonical,
    Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody,
    form::Params,
    replay::{ClaimToken, MemoryStore, Record, ReplayKey, ReplayStore},
    replay_guard::ReplayGuardLayer,
    verify::{VerifyError, WebhookRequest},
};

mod growth;
mod payloads;

use payloads::{PAYLOADS, PUBLIC_BASE, TOKEN};

fn secret() -> Secret {
    Secret::new(TOKEN).expect("non-empty token")
}

fn verify(c: &mut Criterion) {
    let secret = secret();
    let mut group = c.benchmark_group("verify");
    for payload in &PAYLOADS {
        assert!(payload.request(payload.signature).verify([&secret]).is_ok());
        group.bench_function(BenchmarkId::new("valid", payload.name), |b| {
            b.iter(|| black_box(payload.request(black_box(payload.signature))).verify([&secret]));
        });
    }
    for payload in &PAYLOADS {
        let wrong = payload.wrong_signature();
        assert_eq!(
            payload.request(&wrong).verify([&secret]),
            Err(VerifyError::SignatureMismatch)
        );
        group.bench_function(BenchmarkId::new("invalid", payload.name), |b| {
            b.iter(|| black_box(payload.request(black_box(&wrong))).verify([&secret]));
        });
    }
    group.finish();
}

fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    for payload in &PAYLOADS {
        if payload.is_form() {
            group.bench_function(BenchmarkId::new("parse_canonicalize", payload.name), |b| {
                b.iter(|| {
                    let mut out = Vec::new();
                    write_canonical(&Params::parse(black_box(payload.body)), &mut out);
                    out
                });
            });
        } else {
            group.bench_function(BenchmarkId::new("body_sha256", payload.name), |b| {
                b.iter(|| Sha256::digest(black_box(payload.body)));
            });
        }
    }
    for payload in &PAYLOADS {
        let signed = payload.signed_string();
        group.bench_function(BenchmarkId::new("hmac_sha1", payload.name), |b| {
            b.iter(|| {
                let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(black_box(TOKEN.as_bytes()))
                    .expect("any key length");
                mac.update(black_box(&signed));
                mac.finalize().into_bytes()
            });
        });
        let keyed =
            <Hmac<Sha1> as KeyInit>::new_from_slice(TOKEN.as_bytes()).expect("any key length");
        group.bench_function(BenchmarkId::new("hmac_sha1_prekeyed", payload.name), |b| {
            b.iter(|| {
                let mut mac = black_box(&keyed).clone();
                mac.update(black_box(&signed));
                mac.finalize().into_bytes()
            });
        });
    }
    // The comparison: decode the received base64 and compare the MAC in constant time.
    let payload = &PAYLOADS[0];
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(TOKEN.as_bytes()).expect("any key");
    mac.update(&payload.signed_string());
    let computed = mac.finalize().into_bytes();
    group.bench_function("compare", |b| {
        b.iter(|| {
            let mut decoded = [0u8; 33];
            let len = base64::engine::general_purpose::STANDARD
                .decode_slice(black_box(payload.signature.as_bytes()), &mut decoded)
                .expect("valid base64");
            bool::from(subtle::ConstantTimeEq::ct_eq(
                &decoded[..len],
                black_box(computed.as_slice()),
            ))
        });
    });
    group.finish();
}

/// A memory store whose window is zero (the guard's window is at least a minute).
#[derive(Clone)]
struct Forgetful(MemoryStore);

impl ReplayStore for Forgetful {
    type ClaimFuture = <MemoryStore as ReplayStore>::ClaimFuture;
    type RenewFuture = <MemoryStore as ReplayStore>::RenewFuture;
    type CompleteFuture = <MemoryStore as ReplayStore>::CompleteFuture;
    type ReleaseFuture = <MemoryStore as ReplayStore>::ReleaseFuture;
    type WaitFuture = <MemoryStore as ReplayStore>::WaitFuture;

    fn claim(&self, key: &ReplayKey, lease: Duration) -> Self::ClaimFuture {
        self.0.claim(key, lease)
    }
    fn renew(&self, key: &ReplayKey, token: ClaimToken, lease: Duration) -> Self::RenewFuture {
        self.0.renew(key, token, lease)
    }
    fn complete(&self, key: &ReplayKey, token: ClaimToken, record: Record) -> Self::CompleteFuture {
        let window = Duration::ZERO;
        self.0
            .complete(key, token, Record::new(record.answer, window))
    }
    fn release(&self, key: &ReplayKey, token: ClaimToken) -> Self::ReleaseFuture {
        self.0.release(key, token)
    }
    fn wait(&self, key: &ReplayKey, attempt: u32) -> Self::WaitFuture {
        self.0.wait(key, attempt)
    }
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let credentials = Credentials::new().auth_token("primary", secret());
    let twilio = TwilioSignatureLayer::new(credentials)
        .public_url(PublicUrl::fixed(PUBLIC_BASE).expect("valid base URL"));
    let with_layer =
        ServiceBuilder::new()
            .layer(twilio)
            .service(service_fn(|_: Request<VerifiedBody>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            }));
    // The same layer followed by a replay guard on the memory store, which forgets a webhook as
    // soon as it is recorded, so each request takes the path of a new webhook (key, claim,
    // inner service, complete) and drops one expired entry, as in steady state.
    let guard = ReplayGuardLayer::new(Forgetful(MemoryStore::default()));
    let twilio_guarded =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", secret()))
            .public_url(PublicUrl::fixed(PUBLIC_BASE).expect("valid base URL"));
    let with_guard = ServiceBuilder::new()
        .layer(twilio_guarded)
        .layer(guard)
        .service(service_fn(|_: Request<VerifiedBody>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let without_layer = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    });

    let mut group = c.benchmark_group("layer");
    for payload in &PAYLOADS {
        let status = runtime
            .block_on(with_layer.clone().oneshot(payload.http_request()))
            .expect("infallible")
            .status();
        assert_eq!(status, http::StatusCode::OK, "{}", payload.name);
        group.bench_function(BenchmarkId::new("with", payload.name), |b| {
            b.to_async(&runtime)
                .iter(|| with_layer.clone().oneshot(payload.http_request()));
        });
        let answer = runtime
            .block_on(with_guard.clone().oneshot(payload.http_request()))
            .expect("infallible");
        assert_eq!(answer.status(), http::StatusCode::OK, "{}", payload.name);
        assert!(
            answer
                .extensions()
                .get::<tower_twilio::Rejection>()
                .is_none()
        );
        group.bench_function(BenchmarkId::new("with_replay_guard", payload.name), |b| {
            b.to_async(&runtime)
                .iter(|| with_guard.clone().oneshot(payload.http_request()));
        });
        group.bench_function(BenchmarkId::new("without", payload.name), |b| {
            b.to_async(&runtime)
                .iter(|| without_layer.oneshot(payload.http_request()));
        });
    }
    group.finish();
}

fn growth(c: &mut Criterion) {
    let secret = secret();
    let mut group = c.benchmark_group("growth");
    let run = |group: &mut criterion::BenchmarkGroup<'_, _>,
               id: BenchmarkId,
               body: String,
               throughput: Throughput| {
        let signature = growth::signature(&secret, &body);
        let request = WebhookRequest::new(&Method::POST, growth::URL, body.as_bytes())
            .content_type(b"application/x-www-form-urlencoded")
            .signature(signature.as_bytes());
        assert!(request.verify([&secret]).is_ok());
        group.throughput(throughput);
        group.bench_function(id, |b| b.iter(|| black_box(request).verify([&secret])));
    };
    for count in growth::PARAMS {
        run(
            &mut group,
            BenchmarkId::new("params", count),
            growth::body_with_params(count),
            Throughput::Elements(count as u64),
        );
    }
    for bytes in growth::BODY_BYTES {
        let body = growth::body_with_text(bytes);
        let len = body.len() as u64;
        run(
            &mut group,
            BenchmarkId::new("body_bytes", bytes),
            body,
            Throughput::Bytes(len),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = verify, parts, layer, growth
}
criterion_main!(benches);
