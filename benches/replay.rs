//! The replay guard's own costs: the key, the memory store, and a Redis round trip.
//!
//! Run with
//!
//! ```text
//! cargo bench --bench replay
//! TWILIO_TEST_REDIS_URL=redis://127.0.0.1:6379/ cargo bench --bench replay --features redis
//! ```
//!
//! Groups (see docs/BENCHMARKS.md):
//!
//! - `replay/key`: `ReplayKey::new` over a 28-character HMAC-SHA1 signature.
//! - `replay/memory/new_webhook`: the key, a claim and a complete on a `MemoryStore`, as for
//!   every new webhook (the window is so short that each entry has expired by the next
//!   iteration, so the store also drops one old entry each time, as it does in steady state).
//! - `replay/memory/duplicate`: the key and a claim that finds the webhook done.
//! - `replay/redis/new_webhook`, `replay/redis/duplicate`: the same on a `RedisStore` (feature
//!   `redis`, when `TWILIO_TEST_REDIS_URL` names a server): the round trips.
//! - `replay_guard_layer/sms/signature_layer` and `replay_guard_layer/sms/with_guard`: the
//!   benchmark SMS (`benches/payloads/a_sms.*`), each request a new webhook with its own
//!   `MessageSid` and signature, through `TwilioSignatureLayer` alone and through
//!   `TwilioSignatureLayer` + `ReplayGuardLayer::default()`, to a handler that answers a short
//!   TwiML `<Message>` (read whole, as a server sends it). The difference is what the guard
//!   adds to a new webhook. Requests are signed ahead in batches of 1024, outside the timing;
//!   the guarded service gets a fresh `ReplayGuardLayer::default()` (and memory store) every
//!   50 000 webhooks (`REPLAY_GUARD_FRESH_EVERY` to change it), outside the timing too, so the
//!   store never fills. The store's size matters: a new webhook's entry goes to a random place
//!   in its hash table, which a large store holds outside the CPU's caches.
//! - With `REPLAY_GUARD_PAIRED=ROUNDS` set, the same two services are also timed in pairs
//!   before the group: ROUNDS times a batch of 1024 new webhooks through each, one right after
//!   the other (which goes first alternates), and the median and quartiles of the per-webhook
//!   difference go to standard error (`replay_guard_layer/sms paired: …`). Both halves of a
//!   pair see the same load, so on a shared machine this difference is steadier than the one
//!   between the two criterion estimates, taken seconds apart.
//!
//! ```text
//! cargo bench --bench replay -- '^replay_guard_layer/' --sample-size 200 --measurement-time 10
//! REPLAY_GUARD_PAIRED=400 cargo bench --bench replay -- '^replay_guard_layer/'
//! ```
#![allow(missing_docs)]

use std::{
    convert::Infallible,
    hint::black_box,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_twilio::{
    Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody,
    form::Params,
    replay::{Claim, MemoryStore, Record, ReplayKey, ReplayStore, StoredAnswer},
    replay_guard::{ReplayGuardLayer, ReplayOutcome},
    signature::{Algorithm, sign},
};

#[allow(dead_code)]
mod payloads;

const SIGNATURE: &[u8] = b"RSOYDt4T1cUTdK1PDd93/VVr8B8=";
const LEASE: Duration = Duration::from_secs(60);

fn key() -> ReplayKey {
    ReplayKey::new(Algorithm::HmacSha1, black_box(SIGNATURE))
}

/// A short TwiML answer, as a copy would be given, kept for `window`.
fn done(window: Duration) -> Record {
    let answer = StoredAnswer::new(
        http::StatusCode::OK,
        Some(http::HeaderValue::from_static("text/xml")),
        bytes::Bytes::from_static(b"<Response><Message>hi</Message></Response>"),
    );
    Record::new(answer, window)
}

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    group.bench_function("key", |b| b.iter(key));

    let store = MemoryStore::default();
    group.bench_function("memory/new_webhook", |b| {
        b.iter(|| {
            let key = key();
            let Ok(Claim::Claimed(token)) = store.claim(&key, LEASE).into_inner() else {
                panic!("the previous entry has expired");
            };
            store
                .complete(&key, token, done(Duration::from_nanos(1)))
                .into_inner()
        });
    });

    let store = MemoryStore::default();
    let Ok(Claim::Claimed(token)) = store.claim(&key(), LEASE).into_inner() else {
        panic!("a new store");
    };
    store
        .complete(&key(), token, done(Duration::from_secs(3600)))
        .into_inner()
        .unwrap();
    group.bench_function("memory/duplicate", |b| {
        b.iter(|| {
            let claim = store.claim(&key(), LEASE).into_inner();
            assert!(matches!(claim.unwrap(), Claim::Done(_)));
        });
    });
    group.finish();
}

#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    use tower_twilio::replay::RedisStore;

    let Ok(url) = std::env::var("TWILIO_TEST_REDIS_URL") else {
        eprintln!("replay/redis: skipped (TWILIO_TEST_REDIS_URL is not set)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime
        .block_on(RedisStore::connect(&url))
        .expect("connect to TWILIO_TEST_REDIS_URL")
        .prefix("bench:");
    let mut group = c.benchmark_group("replay");
    group.bench_function("redis/new_webhook", |b| {
        b.to_async(&runtime).iter(|| async {
            let key = key();
            let Ok(Claim::Claimed(token)) = store.claim(&key, LEASE).await else {
                panic!("the previous entry was released");
            };
            // Release rather than complete, so that the next iteration finds the key new: the
            // same two round trips as claim + complete.
            store.release(&key, token).await.unwrap();
        });
    });
    let Ok(Claim::Claimed(token)) = runtime.block_on(store.claim(&key(), LEASE)) else {
        panic!("a fresh key");
    };
    runtime
        .block_on(store.complete(&key(), token, done(Duration::from_secs(60))))
        .unwrap();
    group.bench_function("redis/duplicate", |b| {
        b.to_async(&runtime).iter(|| async {
            assert!(matches!(
                store.claim(&key(), LEASE).await.unwrap(),
                Claim::Done(_)
            ));
        });
    });
    group.finish();
}

#[cfg(not(feature = "redis"))]
fn redis(_: &mut Criterion) {}

/// Signs the benchmark SMS again and again, each time with a new `MessageSid` (and so a new
/// signature): every request is a new webhook.
struct NewSms {
    secret: Secret,
    sent: u64,
}

impl NewSms {
    /// The `MessageSid` (also `SmsMessageSid` and `SmsSid`) of `a_sms.body`.
    const SID: &'static str = "SM2b48b65095782f1aed3eb072bc5abfff";

    fn next(&mut self) -> Request<Full<Bytes>> {
        let sms = &payloads::PAYLOADS[0];
        self.sent += 1;
        let body = std::str::from_utf8(sms.body)
            .expect("a form body")
            .replace(Self::SID, &format!("SM{:032x}", self.sent));
        let signature = sign(
            self.secret.expose_secret(),
            Algorithm::HmacSha1,
            sms.url,
            Params::parse(body.as_bytes()).iter(),
        );
        Request::post(sms.path)
            .header("host", "example.com")
            .header("content-type", sms.content_type)
            .header("x-twilio-signature", signature)
            .header("user-agent", "TwilioProxy/1.1")
            .body(Full::new(Bytes::from(body)))
            .expect("valid request")
    }
}

/// Requests signed ahead at a time, outside the timing.
const BATCH: usize = 1024;
/// Webhooks one guarded service (its memory store) takes before a fresh one: 50 000 with their
/// answers take about 32 MB of the default store's 64 MiB.
const FRESH_EVERY: u64 = 50_000;

/// A service to time new webhooks through, made again (outside the timing) every
/// `fresh_every` webhooks.
struct Timed<S, M> {
    make: M,
    service: S,
    since_fresh: u64,
    fresh_every: u64,
    /// What every answer carries.
    outcome: Option<ReplayOutcome>,
}

impl<S, B, M> Timed<S, M>
where
    M: Fn() -> S,
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    fn new(make: M, outcome: Option<ReplayOutcome>) -> Self {
        Self {
            service: make(),
            make,
            since_fresh: 0,
            fresh_every: std::env::var("REPLAY_GUARD_FRESH_EVERY")
                .ok()
                .and_then(|every| every.parse().ok())
                .unwrap_or(FRESH_EVERY)
                // More than 100 000 would fill the default store.
                .clamp(BATCH as u64, 100_000),
            outcome,
        }
    }

    /// Times `iters` new webhooks; checks (outside the timing) that every answer was 200 and
    /// carried the expected outcome.
    fn time(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        sms: &mut NewSms,
        iters: u64,
    ) -> Duration {
        let (mut elapsed, mut done) = (Duration::ZERO, 0);
        while done < iters {
            let batch = (iters - done).min(BATCH as u64);
            if self.since_fresh + batch > self.fresh_every {
                self.service = (self.make)();
                self.since_fresh = 0;
            }
            let requests: Vec<_> = (0..batch).map(|_| sms.next()).collect();
            let (service, outcome) = (&self.service, self.outcome);
            let started = Instant::now();
            let expected = runtime.block_on(async {
                let mut expected = 0;
                for request in requests {
                    let response = service.clone().oneshot(request).await.expect("infallible");
                    let ok = response.status() == http::StatusCode::OK
                        && ReplayOutcome::of(&response) == outcome;
                    let body = response.into_body().collect().await.expect("the answer");
                    black_box(body);
                    expected += u64::from(ok);
                }
                expected
            });
            elapsed += started.elapsed();
            assert_eq!(expected, batch, "every webhook new and answered 200");
            done += batch;
            self.since_fresh += batch;
        }
        elapsed
    }
}

/// What the guard adds to a new webhook through the whole layer: the benchmark SMS through
/// `TwilioSignatureLayer` alone and with `ReplayGuardLayer::default()` after it, side by side.
fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let secret = Secret::new(payloads::TOKEN).expect("non-empty token");
    let twilio =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", secret.clone()))
            .public_url(PublicUrl::fixed(payloads::PUBLIC_BASE).expect("valid base URL"));
    let handler = service_fn(|_: Request<VerifiedBody>| async {
        let twiml = Bytes::from_static(b"<Response><Message>Got it</Message></Response>");
        let mut response = Response::new(Full::new(twiml));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        Ok::<_, Infallible>(response)
    });
    let plain = ServiceBuilder::new().layer(twilio.clone()).service(handler);
    let guarded = || {
        ServiceBuilder::new()
            .layer(twilio.clone())
            .layer(ReplayGuardLayer::default())
            .service(handler)
    };
    let mut sms = NewSms { secret, sent: 0 };

    let mut plain = Timed::new(|| plain.clone(), None);
    let mut guarded = Timed::new(guarded, Some(ReplayOutcome::First));

    if let Some(rounds) = std::env::var("REPLAY_GUARD_PAIRED")
        .ok()
        .and_then(|rounds| rounds.parse::<usize>().ok())
        .filter(|&rounds| rounds > 0)
    {
        // Which half of a pair goes first alternates.
        let batch = BATCH as u64;
        let mut differences = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let (plain_time, guarded_time) = if round % 2 == 0 {
                let plain_time = plain.time(&runtime, &mut sms, batch);
                (plain_time, guarded.time(&runtime, &mut sms, batch))
            } else {
                let guarded_time = guarded.time(&runtime, &mut sms, batch);
                (plain.time(&runtime, &mut sms, batch), guarded_time)
            };
            let per_webhook = |time: Duration| time.as_secs_f64() * 1e9 / BATCH as f64;
            differences.push(per_webhook(guarded_time) - per_webhook(plain_time));
        }
        differences.sort_by(f64::total_cmp);
        let at = |quarter: usize| differences[(differences.len() - 1) * quarter / 4];
        eprintln!(
            "replay_guard_layer/sms paired: the guard adds {:.0} ns per new webhook (median of \
             {rounds} pairs of {BATCH}; quartiles {:.0} to {:.0} ns)",
            at(2),
            at(1),
            at(3)
        );
    }

    let mut group = c.benchmark_group("replay_guard_layer");
    group.bench_function("sms/signature_layer", |b| {
        b.iter_custom(|iters| plain.time(&runtime, &mut sms, iters));
    });
    group.bench_function("sms/with_guard", |b| {
        b.iter_custom(|iters| guarded.time(&runtime, &mut sms, iters));
    });
    group.finish();
}

criterion_group!(benches, memory, redis, layer);
criterion_main!(benches);
