//! The replay guard's stores: the memory store's byte bound, and the Redis store against a
//! real `redis-server` (`TWILIO_TEST_REDIS_URL`, which `.ci/run` sets). Outside CI, without
//! it, these tests are reported as ignored with the reason (`build.rs` sets `skip_redis`);
//! under `CI` they run and fail without it.

use std::time::Duration;

use tower_twilio::{
    replay::{
        Claim, MemoryStore, Record, ReplayKey, ReplayStore, ReplayStoreErrorKind, StoredAnswer,
    },
    signature::Algorithm,
};

const LEASE: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(24 * 3600);

fn key(n: u64) -> ReplayKey {
    ReplayKey::new(Algorithm::HmacSha1, format!("{n:027}=").as_bytes())
}

/// "Done" without an answer body, as the older guard records it.
fn done() -> StoredAnswer {
    StoredAnswer::done_only(http::StatusCode::OK)
}

/// [`done`], kept for `window`.
fn kept(window: Duration) -> Record {
    let answer = done();
    Record::new(answer, window)
}

/// Records `count` distinct verified webhooks (claim, then complete) in `store`.
fn record(store: &MemoryStore, range: std::ops::Range<u64>) {
    for n in range {
        let Ok(Claim::Claimed(token)) = store.claim(&key(n), LEASE).into_inner() else {
            panic!("webhook {n} was not new");
        };
        store
            .complete(&key(n), token, kept(WINDOW))
            .into_inner()
            .unwrap();
    }
}

// Every byte the store allocates is counted (allocation-counter is this binary's allocator):
// filled to its limit, growth slack included, it stays under the bytes it was given, and the
// next new webhook is refused rather than let in by forgetting an old one.
#[test]
fn memory_store_stays_within_its_byte_limit_under_100_000_webhooks() {
    const WEBHOOKS: u64 = 100_000;
    let max_bytes = MemoryStore::FIXED_BYTES + WEBHOOKS as usize * MemoryStore::ENTRY_BYTES;
    let store = MemoryStore::new(max_bytes);
    assert_eq!(store.capacity(), WEBHOOKS as usize);
    let info = allocation_counter::measure(|| record(&store, 0..WEBHOOKS));
    println!(
        "memory store: {WEBHOOKS} webhooks, peak {} bytes of heap ({} per webhook), limit {max_bytes}",
        info.bytes_max,
        info.bytes_max / WEBHOOKS
    );
    assert!(
        info.bytes_max <= max_bytes as u64,
        "peak {} > limit {max_bytes}",
        info.bytes_max
    );
    let refused = store.claim(&key(WEBHOOKS), LEASE).into_inner().unwrap_err();
    assert_eq!(refused.kind(), ReplayStoreErrorKind::Full);
    assert_eq!(
        store.claim(&key(0), LEASE).into_inner().unwrap(),
        Claim::Done(done())
    );
    // The worst cases: a store that fills just past one of the hash table's growth steps
    // (7/8 of a power of two), where the table is at its emptiest and both the old and the new
    // one are allocated for a moment; and tiny stores, where the fixed part dominates.
    for entries in [
        1, 2, 8, 15, 29, 57, 113, 225, 449, 897, 1793, 3585, 7169, 14337,
    ] {
        let max_bytes = MemoryStore::FIXED_BYTES + entries * MemoryStore::ENTRY_BYTES;
        let store = MemoryStore::new(max_bytes);
        assert_eq!(store.capacity(), entries);
        let info = allocation_counter::measure(|| record(&store, 0..entries as u64));
        println!(
            "{entries} entries: {} bytes ({} per entry)",
            info.bytes_max,
            info.bytes_max / entries as u64
        );
        assert!(
            info.bytes_max <= max_bytes as u64,
            "{entries} entries: {}",
            info.bytes_max
        );
    }
}

// The same bound where the store's own tables are emptiest: just past a step of its slots
// (the first chunk doubles up to 1024 slots, the next ones are made whole) and of its index.
#[test]
fn memory_store_stays_within_its_byte_limit_just_past_its_growth_steps() {
    for entries in [5, 9, 17, 33, 65, 129, 257, 513, 1025, 2049, 4097, 8193] {
        let max_bytes = MemoryStore::FIXED_BYTES + entries * MemoryStore::ENTRY_BYTES;
        let store = MemoryStore::new(max_bytes);
        let info = allocation_counter::measure(|| record(&store, 0..entries as u64));
        println!(
            "{entries} entries: {} bytes ({} per entry)",
            info.bytes_max,
            info.bytes_max / entries as u64
        );
        assert!(
            info.bytes_max <= max_bytes as u64,
            "{entries} entries: {}",
            info.bytes_max
        );
    }
}

#[cfg(feature = "redis")]
pub(crate) mod redis {
    //! A Redis server for the tests: the shared one, or a private one a test may stop.

    use std::{
        io::Write as _,
        process::{Child, Command, Stdio},
        sync::Once,
        time::Duration,
    };

    use tower_twilio::replay::RedisStore;

    /// The URL of the shared test server, or `None` (and a line on standard error, once) when
    /// it is not configured outside CI: only a test run with `--include-ignored` gets here
    /// without one. Under `CI` a missing server is a failure.
    pub(crate) fn url() -> Option<String> {
        match std::env::var("TWILIO_TEST_REDIS_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("CI is set but TWILIO_TEST_REDIS_URL is not: .ci/run starts Redis")
            }
            Err(_) => {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| {
                    let _ = writeln!(
                        std::io::stderr(),
                        "replay tests: skipping Redis (TWILIO_TEST_REDIS_URL is not set; \
                         scripts/test_redis.sh start DIR prints one)"
                    );
                });
                None
            }
        }
    }

    /// A store on the shared server with a prefix of its own, so tests do not meet.
    pub(crate) async fn store(url: &str) -> RedisStore {
        store_with_prefix(url, &format!("test:{}:", random_hex())).await
    }

    /// A store (its own connection) on the shared server, keys under `prefix`.
    pub(crate) async fn store_with_prefix(url: &str, prefix: &str) -> RedisStore {
        RedisStore::connect(url).await.unwrap().prefix(prefix)
    }

    /// `N` instances on the shared server: `N` connections to one key space of their own.
    pub(crate) async fn instances<const N: usize>(url: &str) -> [RedisStore; N] {
        let prefix = format!("test:{}:", random_hex());
        let mut stores = Vec::new();
        for _ in 0..N {
            stores.push(store_with_prefix(url, &prefix).await);
        }
        stores.try_into().unwrap()
    }

    /// Random enough to keep test runs apart (std's hasher keys are random per instance).
    pub(crate) fn random_hex() -> String {
        use std::hash::BuildHasher as _;
        let random = std::collections::hash_map::RandomState::new().hash_one(0u8);
        format!("{random:016x}")
    }

    /// A `redis-server` of this test's own, on a free loopback port, killed on drop.
    pub(crate) struct PrivateRedis {
        child: Option<Child>,
        pub(crate) url: String,
    }

    impl PrivateRedis {
        /// Starts one, or `None` outside CI when `redis-server` is not installed.
        pub(crate) async fn start() -> Option<Self> {
            url()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                ])
                // Nothing is written: no snapshots, no append-only file.
                .args(["--appendonly", "no", "--dir"])
                .arg(std::env::temp_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test_redis.sh installs it)");
            let url = format!("redis://127.0.0.1:{port}/");
            let server = Self {
                child: Some(child),
                url,
            };
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Some(server);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the private redis-server did not start listening");
        }

        /// Kills the server and waits for it to be gone.
        pub(crate) fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use std::time::Duration;

    use tower_twilio::replay::{Claim, ReplayStore, ReplayStoreErrorKind};

    use super::{LEASE, WINDOW, done, kept, key, redis};

    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn a_key_is_claimed_once_done_after_complete_and_free_after_release() {
        let Some(url) = redis::url() else { return };
        let store = redis::store(&url).await;
        let Claim::Claimed(first) = store.claim(&key(1), LEASE).await.unwrap() else {
            panic!("a new key")
        };
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::InFlight);
        store.release(&key(1), first).await.unwrap();
        let Claim::Claimed(second) = store.claim(&key(1), LEASE).await.unwrap() else {
            panic!("released, so new again")
        };
        // A late release with a stale token deletes nothing.
        store.release(&key(1), first).await.unwrap();
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::InFlight);
        store.complete(&key(1), second, kept(WINDOW)).await.unwrap();
        assert_eq!(
            store.claim(&key(1), LEASE).await.unwrap(),
            Claim::Done(done())
        );
        // Releasing after completion does not undo it.
        store.release(&key(1), second).await.unwrap();
        assert_eq!(
            store.claim(&key(1), LEASE).await.unwrap(),
            Claim::Done(done())
        );
    }

    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn concurrent_claims_from_four_connections_have_exactly_one_winner() {
        let Some(url) = redis::url() else { return };
        // Four connection managers (as four instances would have) on one key space.
        let stores: [_; 4] = redis::instances(&url).await;
        let claims = futures_join(
            stores
                .iter()
                .cycle()
                .take(50)
                .map(|s| s.claim(&key(7), LEASE)),
        )
        .await;
        let won = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::Claimed(_))))
            .count();
        let in_flight = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::InFlight)))
            .count();
        assert_eq!((won, in_flight), (1, 49), "{claims:?}");
    }

    async fn futures_join<F: std::future::Future + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    }

    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn a_done_key_is_new_again_after_its_window() {
        let Some(url) = redis::url() else { return };
        let store = redis::store(&url).await;
        let Claim::Claimed(token) = store.claim(&key(2), LEASE).await.unwrap() else {
            panic!("a new key")
        };
        store
            .complete(&key(2), token, kept(Duration::from_millis(200)))
            .await
            .unwrap();
        assert_eq!(
            store.claim(&key(2), LEASE).await.unwrap(),
            Claim::Done(done())
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            store.claim(&key(2), LEASE).await,
            Ok(Claim::Claimed(_))
        ));
    }

    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn a_stopped_server_is_an_unavailable_error_never_a_new_key() {
        let Some(mut server) = redis::PrivateRedis::start().await else {
            return;
        };
        let store = tower_twilio::replay::RedisStore::connect(&server.url)
            .await
            .unwrap();
        let Claim::Claimed(_) = store.claim(&key(3), LEASE).await.unwrap() else {
            panic!("a new key")
        };
        server.stop();
        for n in [3, 4] {
            let error = store.claim(&key(n), LEASE).await.unwrap_err();
            assert_eq!(error.kind(), ReplayStoreErrorKind::Unavailable, "{error}");
        }
    }
}

/// The guard through the real layers: a counting handler behind `TwilioSignatureLayer` and a
/// `ReplayGuardLayer`, both reporting to one sink, driven by signed requests.
pub(crate) mod layer {
    use std::{
        collections::VecDeque,
        convert::Infallible,
        sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use tokio::sync::Semaphore;
    use tower::{Service, ServiceBuilder, ServiceExt};
    use tower_twilio::{
        Credentials, PublicUrl, Rejection, RejectionKind, ResponseBody, TwilioSignatureLayer,
        VerifiedBody,
        events::{
            Outcome, SecurityEvent, Severity,
            log::{WebhookLogEntry, WebhookOutcome},
        },
        replay_guard::{ReplayGuardLayer, ReplayOutcome},
        signature::{Algorithm, url_with_body_sha256},
    };

    use crate::support::{
        PUBLIC, RecordingSink, SMS_BODY, TOKEN, signed_post, store::SendStore, token,
        twilio_signature,
    };

    /// The inner service: counts its runs, answers with the next scripted status (200 when the
    /// script is empty), and can be held at a gate.
    #[derive(Clone, Default)]
    pub(crate) struct Handler {
        runs: Arc<AtomicUsize>,
        script: Arc<Mutex<VecDeque<StatusCode>>>,
        gate: Option<Arc<Semaphore>>,
    }

    impl Handler {
        pub(crate) fn answering(statuses: &[StatusCode]) -> Self {
            Self {
                script: Arc::new(Mutex::new(statuses.iter().copied().collect())),
                ..Self::default()
            }
        }

        /// A handler that waits for a permit of `gate` before answering.
        pub(crate) fn gated(gate: &Arc<Semaphore>) -> Self {
            Self {
                gate: Some(Arc::clone(gate)),
                ..Self::default()
            }
        }

        pub(crate) fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }

        pub(crate) async fn run(self) -> Result<Response<Full<Bytes>>, Infallible> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            let status = self.script.lock().unwrap().pop_front();
            let mut response = Response::new(Full::new(Bytes::from_static(b"handled")));
            *response.status_mut() = status.unwrap_or(StatusCode::OK);
            Ok(response)
        }
    }

    /// What the layer reported: its security events and webhook-log entries.
    #[derive(Clone, Default)]
    pub(crate) struct Reports {
        pub(crate) sink: RecordingSink,
        log: Arc<Mutex<Vec<WebhookLogEntry>>>,
    }

    impl Reports {
        pub(crate) fn events(&self) -> Vec<SecurityEvent> {
            self.sink.events()
        }

        /// The final outcome of every webhook, in the order they finished.
        pub(crate) fn final_outcomes(&self) -> Vec<WebhookOutcome> {
            let log = self.log.lock().unwrap();
            log.iter()
                .map(|entry| entry.outcome)
                .filter(|outcome| outcome.is_final())
                .collect()
        }
    }

    pub(crate) type Answer = Response<ResponseBody<tower_twilio::ResponseBody<Full<Bytes>>>>;

    /// The signature layer, then `guard`, then `handler`; both layers report to `reports`.
    pub(crate) fn service<St: SendStore>(
        guard: ReplayGuardLayer<St>,
        handler: &Handler,
        reports: &Reports,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Answer,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static {
        let log = Arc::clone(&reports.log);
        let layer = TwilioSignatureLayer::new(
            Credentials::new()
                .tenant("acme")
                .auth_token("primary", token()),
        )
        .public_url(PublicUrl::fixed(PUBLIC).unwrap())
        .on_security_event(reports.sink.clone())
        .on_webhook(move |entry: &WebhookLogEntry| log.lock().unwrap().push(entry.clone()));
        let guard = guard.on_security_event(reports.sink.clone());
        let handler = handler.clone();
        ServiceBuilder::new()
            .layer(layer)
            .layer(guard)
            .service_fn(move |_: Request<VerifiedBody>| handler.clone().run())
    }

    /// The SMS webhook with its `MessageSid` replaced: a different signed webhook per `n`.
    pub(crate) fn sms(n: u32) -> Request<Full<Bytes>> {
        let body = SMS_BODY.replace("MessageSid=SM0123", &format!("MessageSid=SM{n:032}"));
        signed_post("/twilio/sms", &body)
    }

    /// A JSON webhook signed through `bodySHA256`.
    pub(crate) fn json() -> Request<Full<Bytes>> {
        let json =
            br#"{"AccountSid":"AC0123ffffffffffffffffffffffffffff","MessageStatus":"delivered"}"#;
        let url = url_with_body_sha256(&format!("{PUBLIC}/twilio/status"), json);
        let signature = twilio_signature(TOKEN, Algorithm::HmacSha1, &url, "");
        Request::post(url.strip_prefix(PUBLIC).unwrap())
            .header("content-type", "application/json")
            .header("x-twilio-signature", signature)
            .body(Full::new(Bytes::from_static(json)))
            .unwrap()
    }

    pub(crate) fn kind(answer: &Answer) -> Option<RejectionKind> {
        answer.extensions().get::<Rejection>().map(Rejection::kind)
    }

    /// A copy's answer: the handler's first answer (200), the typed reason, the guard's
    /// outcome.
    pub(crate) fn assert_copy(answer: &Answer) {
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(kind(answer), Some(RejectionKind::ReplayCopy));
        assert_eq!(ReplayOutcome::of(answer), Some(ReplayOutcome::Copy));
    }

    /// Exactly one event, `replay_copy` at info, and the log's final outcome `copy`.
    pub(crate) fn assert_one_copy_event(reports: &Reports) {
        let events = reports.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].event_type(), "replay_copy");
        assert_eq!(events[0].outcome, Outcome::Copy);
        assert_eq!(events[0].severity, Severity::Info);
        assert_eq!(
            events[0].account_sid.as_deref(),
            Some("AC0123ffffffffffffffffffffffffffff")
        );
        assert_eq!(events[0].tenant_id.as_deref(), Some("acme"));
        assert_eq!(events[0].url, "https://api.example.com/twilio/sms");
    }

    /// Sends `copies` copies of one webhook at once through `services` in turn, and returns
    /// the answers.
    pub(crate) async fn race<Svc>(services: &[Svc], copies: usize) -> Vec<Answer>
    where
        Svc: Service<Request<Full<Bytes>>, Response = Answer, Error = Infallible>
            + Clone
            + Send
            + 'static,
        Svc::Future: Send + 'static,
    {
        let start = Arc::new(tokio::sync::Barrier::new(copies));
        let tasks: Vec<_> = (0..copies)
            .map(|i| {
                let service = services[i % services.len()].clone();
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    service.oneshot(sms(1)).await.unwrap()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    /// 50 copies of one webhook across `services`: 25 race while the handler holds the first
    /// (they wait for it), then, once `settle` has passed and the first has finished, 25 more.
    /// Asserts that the handler ran once and every other copy got the first answer (or, had a
    /// wait run out, `409`).
    pub(crate) async fn race_in_two_waves<Svc>(
        services: Vec<Svc>,
        gate: &Semaphore,
        handler: &Handler,
        settle: Duration,
    ) where
        Svc: Service<Request<Full<Bytes>>, Response = Answer, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        Svc::Future: Send + 'static,
    {
        let racing = tokio::spawn({
            let services = services.clone();
            async move { race(&services, 25).await }
        });
        while handler.runs() == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(settle).await;
        gate.add_permits(1);
        let mut answers = racing.await.unwrap();
        answers.extend(race(&services, 25).await);
        assert_eq!(answers.len(), 50);
        assert_one_handled(&answers);
        assert_eq!(handler.runs(), 1);
    }

    /// One answer from the handler; every other one a documented answer: `409` (a wait ran
    /// out) or the first answer.
    pub(crate) fn assert_one_handled(answers: &[Answer]) {
        let handled = answers.iter().filter(|a| kind(a).is_none()).count();
        let in_flight = answers
            .iter()
            .filter(|a| kind(a) == Some(RejectionKind::ReplayInFlight))
            .inspect(|a| assert_eq!(a.status(), StatusCode::CONFLICT))
            .count();
        let copies = answers
            .iter()
            .filter(|a| kind(a) == Some(RejectionKind::ReplayCopy))
            .inspect(|a| assert_copy(a))
            .count();
        assert_eq!(handled, 1);
        assert_eq!(handled + in_flight + copies, answers.len());
        println!("race: 1 handled, {in_flight} waits ran out (409), {copies} copies (200)");
    }
}

mod memory_guard {
    use std::{sync::Arc, time::Duration};

    use http::StatusCode;
    use tokio::sync::Semaphore;
    use tower::ServiceExt;
    use tower_twilio::{
        RejectionKind,
        events::{Outcome, Severity, log::WebhookOutcome},
        replay::MemoryStore,
        replay_guard::{ReplayGuardLayer, ReplayOutcome, StoreFailure},
    };

    use super::layer::*;

    #[tokio::test]
    async fn a_webhook_sent_twice_reaches_the_handler_once() {
        let (handler, reports) = (Handler::default(), Reports::default());
        let service = service(ReplayGuardLayer::default(), &handler, &reports);
        let first = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(kind(&first), None);
        assert!(reports.events().is_empty());

        assert_eq!(ReplayOutcome::of(&first), Some(ReplayOutcome::First));
        let second = service.clone().oneshot(sms(1)).await.unwrap();
        assert_copy(&second);
        assert_eq!(crate::support::body_string(second).await, "handled");
        assert_eq!(handler.runs(), 1);
        assert_one_copy_event(&reports);
        assert_eq!(
            reports.final_outcomes(),
            [
                WebhookOutcome::Processed(StatusCode::OK),
                WebhookOutcome::Copy
            ]
        );
        assert_eq!(WebhookOutcome::Copy.as_str(), "copy");
        assert_eq!(Outcome::Copy.as_str(), "copy");

        // Each copy is one event and one `copy` in the log.
        assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
        assert_eq!(reports.events().len(), 2);
        assert_eq!(reports.final_outcomes().len(), 3);
        assert_eq!(reports.final_outcomes()[2], WebhookOutcome::Copy);

        // A different webhook is new.
        let other = service.clone().oneshot(sms(2)).await.unwrap();
        assert_eq!((other.status(), kind(&other)), (StatusCode::OK, None));
        assert_eq!(handler.runs(), 2);
    }

    #[tokio::test]
    async fn a_copy_of_a_json_webhook_gets_the_first_answer() {
        let (handler, reports) = (Handler::default(), Reports::default());
        let service = service(ReplayGuardLayer::default(), &handler, &reports);
        assert_eq!(kind(&service.clone().oneshot(json()).await.unwrap()), None);
        let second = service.clone().oneshot(json()).await.unwrap();
        assert_eq!(second.status(), StatusCode::OK);
        assert_eq!(kind(&second), Some(RejectionKind::ReplayCopy));
        assert_eq!(crate::support::body_string(second).await, "handled");
        assert_eq!(handler.runs(), 1);
    }

    #[tokio::test]
    async fn a_tampered_copy_is_still_refused_and_stores_nothing() {
        let (handler, reports) = (Handler::default(), Reports::default());
        let store = MemoryStore::default();
        let service = service(ReplayGuardLayer::new(store.clone()), &handler, &reports);
        let mut tampered = sms(1);
        *tampered.body_mut() = http_body_util::Full::new(bytes::Bytes::from(
            crate::support::SMS_BODY.replace("Body=Hello", "Body=Hellp"),
        ));
        let answer = service.clone().oneshot(tampered).await.unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        assert_eq!(kind(&answer), Some(RejectionKind::SignatureMismatch));
        assert!(store.is_empty(), "nothing is kept per forged request");
        assert_eq!(handler.runs(), 0);
    }

    #[tokio::test]
    async fn a_failed_webhook_runs_again_when_twilio_retries() {
        let reports = Reports::default();
        let handler = Handler::answering(&[StatusCode::INTERNAL_SERVER_ERROR]);
        let service = service(ReplayGuardLayer::default(), &handler, &reports);
        let first = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let retry = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!((retry.status(), kind(&retry)), (StatusCode::OK, None));
        assert_eq!(handler.runs(), 2);
        assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
        assert_eq!(handler.runs(), 2);
    }

    #[tokio::test]
    async fn a_copy_whose_wait_runs_out_gets_409_with_one_warning_then_the_first_answer() {
        let gate = Arc::new(Semaphore::new(0));
        let (handler, reports) = (Handler::gated(&gate), Reports::default());
        let guard = ReplayGuardLayer::default().wait(Duration::from_millis(50));
        let service = service(guard, &handler, &reports);
        let first = tokio::spawn(service.clone().oneshot(sms(1)));
        while handler.runs() == 0 {
            tokio::task::yield_now().await;
        }
        let copy = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!(copy.status(), StatusCode::CONFLICT);
        assert_eq!(kind(&copy), Some(RejectionKind::ReplayInFlight));
        assert_eq!(ReplayOutcome::of(&copy), Some(ReplayOutcome::WaitRanOut));
        let events = reports.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type(), "replay_in_flight");
        assert_eq!(events[0].severity, Severity::Warning);
        assert_eq!(events[0].url, "https://api.example.com/twilio/sms");
        assert_eq!(events[0].tenant_id.as_deref(), Some("acme"));
        assert_eq!(
            reports.final_outcomes(),
            [WebhookOutcome::Failed(Some(StatusCode::CONFLICT))]
        );
        gate.add_permits(1);
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
        assert_eq!(handler.runs(), 1);
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_lets_the_retry_through() {
        let gate = Arc::new(Semaphore::new(0));
        let (handler, reports) = (Handler::gated(&gate), Reports::default());
        let store = MemoryStore::default();
        let service = service(ReplayGuardLayer::new(store.clone()), &handler, &reports);
        let mut first = Box::pin(service.clone().oneshot(sms(1)));
        assert!(futures_poll_once(first.as_mut()).await.is_none());
        assert_eq!((handler.runs(), store.len()), (1, 1));
        drop(first);
        assert!(store.is_empty(), "the claim is released on drop");
        gate.add_permits(1);
        let retry = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!((retry.status(), kind(&retry)), (StatusCode::OK, None));
        assert_eq!(handler.runs(), 2);
    }

    /// Polls `future` once; `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = Some(future);
        std::future::poll_fn(|cx| {
            let poll = std::pin::Pin::new(future.as_mut().unwrap()).poll(cx);
            std::task::Poll::Ready(match poll {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_window_the_webhook_is_accepted_again() {
        let (handler, reports) = (Handler::default(), Reports::default());
        let guard = ReplayGuardLayer::default().window(Duration::from_secs(3600));
        let service = service(guard, &handler, &reports);
        service.clone().oneshot(sms(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
        tokio::time::advance(Duration::from_secs(1)).await;
        let again = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!((again.status(), kind(&again)), (StatusCode::OK, None));
        assert_eq!(handler.runs(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_copies_across_four_instances_sharing_one_store_run_once() {
        let store = MemoryStore::default();
        let gate = Arc::new(Semaphore::new(0));
        let (handler, reports) = (Handler::gated(&gate), Reports::default());
        let services: Vec<_> = (0..4)
            .map(|_| service(ReplayGuardLayer::new(store.clone()), &handler, &reports))
            .collect();
        race_in_two_waves(services, &gate, &handler, Duration::from_millis(50)).await;
    }

    /// Room for one webhook and its answer.
    fn store_for_one() -> MemoryStore {
        let answer = MemoryStore::ANSWER_BYTES + b"handled".len();
        MemoryStore::new(MemoryStore::FIXED_BYTES + MemoryStore::ENTRY_BYTES + answer)
    }

    #[tokio::test]
    async fn a_full_store_refuses_with_503_when_told_to_and_never_forgets() {
        let store = store_for_one();
        let (handler, reports) = (Handler::default(), Reports::default());
        let guard = ReplayGuardLayer::new(store).on_store_failure(StoreFailure::Refuse);
        let service = service(guard, &handler, &reports);
        assert_eq!(kind(&service.clone().oneshot(sms(1)).await.unwrap()), None);
        let refused = service.clone().oneshot(sms(2)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(kind(&refused), Some(RejectionKind::ReplayStoreFailed));
        assert_eq!(
            ReplayOutcome::of(&refused),
            Some(ReplayOutcome::StoreRefused)
        );
        let events = reports.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type(), "replay_store_failed");
        assert_eq!(events[0].outcome, Outcome::Rejected);
        assert_eq!(events[0].severity, Severity::Critical);
        // The webhook it holds is still a copy.
        assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
        assert_eq!(handler.runs(), 1);
    }

    #[tokio::test]
    async fn a_full_store_runs_new_webhooks_unguarded_by_default_with_a_critical_event() {
        let store = store_for_one();
        let (handler, reports) = (Handler::default(), Reports::default());
        let service = service(ReplayGuardLayer::new(store), &handler, &reports);
        service.clone().oneshot(sms(1)).await.unwrap();
        let passed = service.clone().oneshot(sms(2)).await.unwrap();
        assert_eq!((passed.status(), kind(&passed)), (StatusCode::OK, None));
        assert_eq!(
            ReplayOutcome::of(&passed),
            Some(ReplayOutcome::RanUnguarded)
        );
        assert_eq!(handler.runs(), 2);
        let events = reports.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type(), "replay_store_failed");
        assert_eq!(events[0].outcome, Outcome::PassedWithoutReplayCheck);
        assert_eq!(events[0].severity, Severity::Critical);
        // What the store holds is still guarded.
        assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
        assert_eq!(handler.runs(), 2);
    }

    /// `tower_twilio_replay_copies_total` moves by one per copy kept from the handler,
    /// and by nothing for a first run, a failed one, its retry, a copy whose wait ran out
    /// (counted as degraded instead), or a forgery; a copy is not counted as refused.
    #[cfg(feature = "metrics")]
    #[tokio::test(flavor = "current_thread")]
    async fn each_copy_moves_the_replay_counter_by_one() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
        use tower_twilio::metrics::{REFUSED, REPLAY_COPIES, REPLAY_DEGRADED};

        /// How far each counter moved since the last call: (copies, refused, degraded).
        fn moved(snapshotter: &Snapshotter) -> (u64, u64, u64) {
            let mut counts = (0, 0, 0);
            for (key, .., value) in snapshotter.snapshot().into_vec() {
                let DebugValue::Counter(n) = value else {
                    continue;
                };
                match key.key().name() {
                    REPLAY_COPIES => counts.0 += n,
                    REFUSED => counts.1 += n,
                    REPLAY_DEGRADED => counts.2 += n,
                    _ => {}
                }
            }
            counts
        }

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let gate = Arc::new(Semaphore::new(0));
        let (handler, reports) = (Handler::gated(&gate), Reports::default());
        let guard = ReplayGuardLayer::default().wait(Duration::from_millis(20));
        let service = service(guard, &handler, &reports);

        // A first run, and a copy whose wait runs out while it runs: no copy counted.
        let mut first = Box::pin(service.clone().oneshot(sms(1)));
        assert!(futures_poll_once(first.as_mut()).await.is_none());
        let copy = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!(kind(&copy), Some(RejectionKind::ReplayInFlight));
        gate.add_permits(1);
        assert_eq!(first.await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            moved(&snapshotter),
            (0, 0, 1),
            "the 409 is a degraded request"
        );

        for n in 1..=3 {
            assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
            assert_eq!(moved(&snapshotter), (1, 0, 0), "copy #{n}");
        }
        assert_eq!(handler.runs(), 1);

        // A failed webhook and Twilio's retry both run: neither is a copy.
        let failing = Handler::answering(&[StatusCode::INTERNAL_SERVER_ERROR]);
        let service = super::layer::service(ReplayGuardLayer::default(), &failing, &reports);
        for expected in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK] {
            let answer = service.clone().oneshot(sms(2)).await.unwrap();
            assert_eq!((answer.status(), kind(&answer)), (expected, None));
        }
        assert_eq!(moved(&snapshotter), (0, 0, 0));
        assert_copy(&service.clone().oneshot(sms(2)).await.unwrap());
        assert_eq!(moved(&snapshotter), (1, 0, 0));

        // A tampered copy is refused before the guard: not a copy.
        let mut tampered = sms(2);
        *tampered.body_mut() = http_body_util::Full::new(bytes::Bytes::from(
            crate::support::SMS_BODY
                .replace("MessageSid=SM0123", &format!("MessageSid=SM{:032}", 2))
                .replace("Body=Hello", "Body=Hellp"),
        ));
        let answer = service.clone().oneshot(tampered).await.unwrap();
        assert_eq!(kind(&answer), Some(RejectionKind::SignatureMismatch));
        assert_eq!(moved(&snapshotter), (0, 1, 0));
    }
}

#[cfg(feature = "redis")]
mod redis_guard {
    use std::{sync::Arc, time::Duration};

    use http::StatusCode;
    use tokio::sync::Semaphore;
    use tower::ServiceExt;
    use tower_twilio::{
        RejectionKind,
        events::{Outcome, Severity},
        replay::RedisStore,
        replay_guard::{ReplayGuardLayer, StoreFailure},
    };

    use super::{layer::*, redis};

    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_copies_across_four_instances_sharing_one_redis_run_once() {
        let Some(url) = redis::url() else { return };
        let gate = Arc::new(Semaphore::new(0));
        let (handler, reports) = (Handler::gated(&gate), Reports::default());
        // Four instances: four connection managers, one key space.
        let stores: [_; 4] = redis::instances(&url).await;
        let services = stores
            .map(|store| service(ReplayGuardLayer::new(store), &handler, &reports))
            .into();
        race_in_two_waves(services, &gate, &handler, Duration::from_millis(100)).await;
    }

    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn a_500_from_the_handler_lets_the_same_webhook_run_again() {
        let Some(url) = redis::url() else { return };
        let reports = Reports::default();
        let handler = Handler::answering(&[StatusCode::INTERNAL_SERVER_ERROR]);
        let store = redis::store(&url).await;
        let service = service(ReplayGuardLayer::new(store), &handler, &reports);
        let first = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let retry = service.clone().oneshot(sms(1)).await.unwrap();
        assert_eq!((retry.status(), kind(&retry)), (StatusCode::OK, None));
        assert_copy(&service.clone().oneshot(sms(1)).await.unwrap());
        assert_eq!(handler.runs(), 2);
        assert_one_copy_event(&reports);
    }

    // Redis goes away under a running service: a guard told to refuse accepts nothing (neither
    // the copy of a processed webhook nor a new one) and nothing panics; the default guard
    // runs new webhooks unguarded with a critical event.
    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn redis_stopped_mid_test_fails_closed_and_accepts_nothing_twice() {
        let Some(mut server) = redis::PrivateRedis::start().await else {
            return;
        };
        let store = RedisStore::connect(&server.url).await.unwrap();
        let (handler, reports) = (Handler::default(), Reports::default());
        let refusing = ReplayGuardLayer::new(store.clone()).on_store_failure(StoreFailure::Refuse);
        let closed = service(refusing, &handler, &reports);
        let open_reports = Reports::default();
        let open = service(ReplayGuardLayer::new(store), &handler, &open_reports);
        assert_eq!(kind(&closed.clone().oneshot(sms(1)).await.unwrap()), None);
        assert_copy(&closed.clone().oneshot(sms(1)).await.unwrap());

        server.stop();
        for n in [1, 1, 2] {
            let answer = closed.clone().oneshot(sms(n)).await.unwrap();
            assert_eq!(
                answer.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook {n}"
            );
            assert_eq!(kind(&answer), Some(RejectionKind::ReplayStoreFailed));
        }
        assert_eq!(
            handler.runs(),
            1,
            "nothing accepted while the store is down"
        );
        let failures: Vec<_> = reports
            .events()
            .into_iter()
            .filter(|e| e.event_type() == "replay_store_failed")
            .collect();
        assert_eq!(failures.len(), 3);
        assert!(failures.iter().all(|e| e.severity == Severity::Critical));

        let passed = open.clone().oneshot(sms(3)).await.unwrap();
        assert_eq!((passed.status(), kind(&passed)), (StatusCode::OK, None));
        assert_eq!(handler.runs(), 2);
        let events = open_reports.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].outcome, Outcome::PassedWithoutReplayCheck);
        assert_eq!(events[0].severity, Severity::Critical);
    }
}

// 100 000 distinct verified webhooks through the layers with the default memory store: all are
// processed, and the heap the run keeps afterwards (the store's entries and stored answers;
// every request's own allocations are freed) is counted and stays within the bound the store
// promises. A copy of the first still gets the first answer.
#[test]
fn memory_stays_bounded_through_the_layer_under_100_000_distinct_webhooks() {
    use tower::ServiceExt;
    use tower_twilio::replay_guard::ReplayGuardLayer;

    const WEBHOOKS: u32 = 100_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let handler = layer::Handler::default();
    let store = MemoryStore::default();
    // Without the tests' recording sink and log, which keep everything they are given.
    let twilio = tower_twilio::TwilioSignatureLayer::new(
        tower_twilio::Credentials::new().auth_token("primary", crate::support::token()),
    )
    .public_url(tower_twilio::PublicUrl::fixed(crate::support::PUBLIC).unwrap())
    .on_security_event(());
    let guard = ReplayGuardLayer::new(store.clone()).on_security_event(());
    let service = tower::ServiceBuilder::new()
        .layer(twilio)
        .layer(guard)
        .service_fn({
            let handler = handler.clone();
            move |_: http::Request<tower_twilio::VerifiedBody>| handler.clone().run()
        });
    let info = allocation_counter::measure(|| {
        runtime.block_on(async {
            for n in 0..WEBHOOKS {
                let answer = service.clone().oneshot(layer::sms(n)).await.unwrap();
                assert!(layer::kind(&answer).is_none(), "webhook {n}");
            }
        });
    });
    assert_eq!(
        (handler.runs(), store.len()),
        (WEBHOOKS as usize, WEBHOOKS as usize)
    );
    // Each webhook's entry and its stored answer ("handled").
    let per_webhook = MemoryStore::ENTRY_BYTES + MemoryStore::ANSWER_BYTES + b"handled".len();
    let bound = MemoryStore::FIXED_BYTES + WEBHOOKS as usize * per_webhook;
    println!(
        "layer + memory store: {WEBHOOKS} distinct webhooks, {} bytes kept ({} per webhook), \
         peak {} bytes; bound {bound}",
        info.bytes_current,
        info.bytes_current / i64::from(WEBHOOKS),
        info.bytes_max
    );
    assert!(info.bytes_current <= bound as i64, "{}", info.bytes_current);
    let copy = runtime.block_on(service.oneshot(layer::sms(0))).unwrap();
    layer::assert_copy(&copy);
}

// The raw signature is never stored or printed: not by the key, the guard, the store, the layer
// or an error.
#[test]
fn nothing_of_the_replay_guard_prints_the_signature() {
    use tower_twilio::{
        Credentials, TwilioSignatureLayer, replay::ReplayStoreError, replay_guard::ReplayGuardLayer,
    };

    let request = layer::sms(1);
    let signature = request.headers()["x-twilio-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let key = ReplayKey::new(Algorithm::HmacSha1, signature.as_bytes());
    let store = MemoryStore::default();
    let token = match store.claim(&key, LEASE).into_inner().unwrap() {
        Claim::Claimed(token) => token,
        other => panic!("{other:?}"),
    };
    let guard = ReplayGuardLayer::new(store.clone());
    let layer = TwilioSignatureLayer::new(Credentials::new());
    let error = ReplayStoreError::new(ReplayStoreErrorKind::Full);
    let printed = [
        format!("{key:?} {}", key.to_hex()),
        format!("{store:?} {guard:?} {layer:?} {token:?}"),
        format!("{error:?} {error}"),
    ];
    for text in printed {
        assert!(!text.contains(&signature[..8]), "{text}");
        assert!(
            !text.contains(&hex::encode(&signature.as_bytes()[..8])),
            "{text}"
        );
    }
}

#[cfg(feature = "redis")]
#[cfg_attr(
    skip_redis,
    ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
)]
#[tokio::test]
async fn a_redis_connection_error_never_shows_the_password() {
    let Some(url) = redis::url() else { return };
    // The test server has no password, so authenticating with one fails.
    let with_password = url.replacen("redis://", "redis://:s3cret-pw@", 1);
    let error = tower_twilio::replay::RedisStore::connect(&with_password)
        .await
        .unwrap_err();
    let printed = format!("{error} {error:?}");
    assert_eq!(error.kind(), ReplayStoreErrorKind::Unavailable);
    assert!(!printed.contains("s3cret"), "{printed}");
}
