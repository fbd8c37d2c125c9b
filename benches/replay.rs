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
//!
//! The guard's cost through the whole layer is `layer/with_replay_guard` against `layer/with`
//! in the `verify` bench.
#![allow(missing_docs)]

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use tower_twilio::{
    replay::{Claim, MemoryStore, ReplayKey, ReplayStore, StoredAnswer},
    signature::Algorithm,
};

const SIGNATURE: &[u8] = b"RSOYDt4T1cUTdK1PDd93/VVr8B8=";
const LEASE: Duration = Duration::from_secs(60);

fn key() -> ReplayKey {
    ReplayKey::new(Algorithm::HmacSha1, black_box(SIGNATURE))
}

/// A short TwiML answer, as a copy would be given.
fn done() -> StoredAnswer {
    StoredAnswer::new(
        http::StatusCode::OK,
        Some(http::HeaderValue::from_static("text/xml")),
        bytes::Bytes::from_static(b"<Response><Message>hi</Message></Response>"),
    )
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
                .complete(&key, token, done(), Duration::from_nanos(1))
                .into_inner()
        });
    });

    let store = MemoryStore::default();
    let Ok(Claim::Claimed(token)) = store.claim(&key(), LEASE).into_inner() else {
        panic!("a new store");
    };
    store
        .complete(&key(), token, done(), Duration::from_secs(3600))
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
        .block_on(store.complete(&key(), token, done(), Duration::from_secs(60)))
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

criterion_group!(benches, memory, redis);
criterion_main!(benches);
