//! `ReplayGuardLayer` through the real layers: `TwilioSignatureLayer` in front, a counting
//! handler behind, signed requests in.

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
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneService};
use tower_twilio::{
    BoxError, Credentials, PublicUrl, Rejection, RejectionKind, TwilioSignatureLayer, VerifiedBody,
    replay::{MemoryStore, ReplayStore},
    replay_guard::{ReplayGuardLayer, ReplayOutcome, Scope, StoreFailure},
};

use tower_twilio::events::{Outcome, Severity};

use crate::support::{
    PUBLIC, SMS_BODY, signed_post,
    store::{Fault, SendStore, TestStore},
    token,
};

type App =
    BoxCloneService<Request<Full<Bytes>>, Response<UnsyncBoxBody<Bytes, BoxError>>, Infallible>;

/// The inner service: counts its runs, answers `<Message>reply N</Message>` (N: its run) as
/// TwiML with the next scripted status (200 when the script is empty), can be held at a gate
/// or made slow.
#[derive(Clone, Default)]
struct Handler {
    runs: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    gate: Option<Arc<Semaphore>>,
    delay: Option<Duration>,
    padding: usize,
}

impl Handler {
    fn answering(statuses: &[StatusCode]) -> Self {
        Self {
            script: Arc::new(Mutex::new(statuses.iter().copied().collect())),
            ..Self::default()
        }
    }

    fn gated(mut self, gate: &Arc<Semaphore>) -> Self {
        self.gate = Some(Arc::clone(gate));
        self
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    async fn run(self) -> Result<Response<Full<Bytes>>, Infallible> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let status = self.script.lock().unwrap().pop_front();
        let twiml = format!(
            "<Response><Message>reply {run}{}</Message></Response>",
            noise(self.padding, run)
        );
        let mut response = Response::new(Full::new(Bytes::from(twiml)));
        *response.status_mut() = status.unwrap_or(StatusCode::OK);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        Ok(response)
    }
}

/// `len` letters that no store compresses (xorshift), different for each `seed`.
fn noise(len: usize, seed: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// The body both layers hand back.
type Layered = tower_twilio::ResponseBody<tower_twilio::ResponseBody<Full<Bytes>>>;

/// The signature layer (credentials that name no account, as in the README's quick start),
/// then `guard`, then `handler`.
fn app<St: SendStore>(guard: ReplayGuardLayer<St>, handler: &Handler) -> App {
    let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
        .public_url(PublicUrl::fixed(PUBLIC).unwrap());
    let handler = handler.clone();
    let service = ServiceBuilder::new()
        .layer(twilio)
        .layer(guard)
        .service_fn(move |_: Request<VerifiedBody>| handler.clone().run());
    BoxCloneService::new(ServiceExt::<Request<Full<Bytes>>>::map_response(
        service,
        |response: Response<Layered>| response.map(BodyExt::boxed_unsync),
    ))
}

/// What a response said.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
    kind: Option<RejectionKind>,
}

fn send(
    app: &App,
    request: Request<Full<Bytes>>,
) -> impl std::future::Future<Output = Answer> + Send + 'static {
    let call = app.clone().oneshot(request);
    async move { answer(call.await.unwrap()).await }
}

async fn answer(response: Response<UnsyncBoxBody<Bytes, BoxError>>) -> Answer {
    let kind = response
        .extensions()
        .get::<Rejection>()
        .map(Rejection::kind);
    let (parts, body) = response.into_parts();
    // A server takes an exact size hint for the `Content-Length` it writes (hyper does): every
    // answer's hint must hold the bytes it gives.
    let hint = http_body::Body::size_hint(&body);
    let body = body.collect().await.unwrap().to_bytes();
    let len = body.len() as u64;
    assert!(
        hint.lower() <= len && hint.upper().is_none_or(|upper| len <= upper),
        "size hint {hint:?} for a body of {len} bytes"
    );
    Answer {
        status: parts.status,
        content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
        body,
        kind,
    }
}

fn sms(n: u32) -> Request<Full<Bytes>> {
    let body = SMS_BODY.replace("MessageSid=SM0123", &format!("MessageSid=SM{n:032}"));
    signed_post("/twilio/sms", &body)
}

/// A voice request with `token` as its `I-Twilio-Idempotency-Token` (none with `None`).
fn voice(token: Option<&str>) -> Request<Full<Bytes>> {
    let body = "AccountSid=AC0123ffffffffffffffffffffffffffff&CallSid=CA0123&Digits=1";
    let mut request = signed_post("/twilio/voice", body);
    match token {
        Some(token) => {
            request
                .headers_mut()
                .insert("i-twilio-idempotency-token", token.parse().unwrap());
        }
        None => {
            request.headers_mut().remove("i-twilio-idempotency-token");
        }
    }
    request
}

fn assert_first_answer(copy: &Answer, first: &Answer) {
    assert_eq!(first.kind, None);
    assert_eq!(copy.kind, Some(RejectionKind::ReplayCopy));
    assert_eq!(
        (copy.status, &copy.content_type, &copy.body),
        (first.status, &first.content_type, &first.body),
        "the copy gets the first answer byte for byte"
    );
}

/// Waits until `handler` has started `n` runs.
async fn started(handler: &Handler, n: usize) {
    while handler.runs() < n {
        tokio::task::yield_now().await;
    }
}

/// A captured form webhook replayed with its `AccountSid` pair split at another boundary
/// (`Account=SidAC…`): the signed string (keys and values concatenated in key order) is the
/// same, so it verifies, but it names no account. With credentials that name no account, a
/// key built from the claimed account let it run the handler again.
fn boundary_shifted() -> (Request<Full<Bytes>>, Request<Full<Bytes>>) {
    let original = signed_post("/twilio/sms", SMS_BODY);
    let shifted_body = SMS_BODY.replace("AccountSid=AC0123", "Account=SidAC0123");
    let shifted = signed_post("/twilio/sms", &shifted_body);
    assert_eq!(
        shifted.headers()["x-twilio-signature"],
        original.headers()["x-twilio-signature"],
        "the same signed string"
    );
    (original, shifted)
}

#[tokio::test]
async fn a_boundary_shifted_replay_gets_the_first_answer_and_does_not_run_the_handler() {
    let handler = Handler::default();
    let app = app(ReplayGuardLayer::default(), &handler);
    let (original, shifted) = boundary_shifted();
    let first = send(&app, original).await;
    assert_eq!(first.status, StatusCode::OK);
    let replay = send(&app, shifted).await;
    assert_first_answer(&replay, &first);
    assert_eq!(handler.runs(), 1, "the replay ran the handler again");
}

#[tokio::test]
async fn a_copy_gets_the_first_answer_byte_for_byte() {
    let handler = Handler::answering(&[StatusCode::CREATED]);
    let app = app(ReplayGuardLayer::default(), &handler);
    let first = send(&app, sms(1)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        first.body,
        "<Response><Message>reply 1</Message></Response>"
    );
    for _ in 0..3 {
        assert_first_answer(&send(&app, sms(1)).await, &first);
    }
    assert_eq!(handler.runs(), 1);
    // Another webhook is new.
    assert_eq!(
        send(&app, sms(2)).await.body,
        "<Response><Message>reply 2</Message></Response>"
    );
    assert_eq!(handler.runs(), 2);
}

#[tokio::test]
async fn the_longest_settings_work_like_any_other() {
    // `Duration::MAX` for the window, lease and wait made the memory store's expiry
    // (`Instant::now() + window`) overflow on the first webhook.
    let handler = Handler::default();
    let guard = ReplayGuardLayer::default()
        .window(Duration::MAX)
        .lease(Duration::MAX)
        .wait(Duration::MAX);
    let app = app(guard, &handler);
    let first = send(&app, sms(1)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_first_answer(&send(&app, sms(1)).await, &first);
    assert_eq!(handler.runs(), 1);
}

#[tokio::test]
async fn when_the_first_attempt_fails_the_waiting_copy_runs_the_handler_itself() {
    let gate = Arc::new(Semaphore::new(0));
    let handler = Handler::answering(&[StatusCode::INTERNAL_SERVER_ERROR]).gated(&gate);
    let app = app(ReplayGuardLayer::default(), &handler);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, sms(1)).await }
    });
    started(&handler, 1).await;
    let copy = tokio::spawn({
        let app = app.clone();
        async move { send(&app, sms(1)).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(handler.runs(), 1, "the copy waits rather than runs");
    gate.add_permits(2);
    let (first, copy) = (first.await.unwrap(), copy.await.unwrap());
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!((copy.status, copy.kind), (StatusCode::OK, None));
    assert_eq!(copy.body, "<Response><Message>reply 2</Message></Response>");
    assert_eq!(handler.runs(), 2);
    // And its answer is the one stored.
    assert_first_answer(&send(&app, sms(1)).await, &copy);
}

#[tokio::test]
async fn when_the_first_attempt_is_dropped_the_waiting_copy_runs_the_handler_itself() {
    let gate = Arc::new(Semaphore::new(0));
    let handler = Handler::default().gated(&gate);
    let app = app(ReplayGuardLayer::default(), &handler);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, sms(1)).await }
    });
    started(&handler, 1).await;
    let copy = tokio::spawn({
        let app = app.clone();
        async move { send(&app, sms(1)).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    first.abort(); // the client went away
    let _ = first.await;
    gate.add_permits(1);
    let copy = copy.await.unwrap();
    assert_eq!((copy.status, copy.kind), (StatusCode::OK, None));
    assert_eq!(handler.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_copy_whose_wait_runs_out_gets_409_and_the_first_answer_is_still_stored() {
    let gate = Arc::new(Semaphore::new(0));
    let handler = Handler::default().gated(&gate);
    let guard = ReplayGuardLayer::default().wait(Duration::from_secs(2));
    let app = app(guard, &handler);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, sms(1)).await }
    });
    started(&handler, 1).await;
    let copy = send(&app, sms(1)).await;
    assert_eq!(copy.status, StatusCode::CONFLICT);
    assert_eq!(copy.kind, Some(RejectionKind::ReplayInFlight));
    gate.add_permits(1);
    let first = first.await.unwrap();
    assert_first_answer(&send(&app, sms(1)).await, &first);
    assert_eq!(handler.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_keeps_its_claim_past_the_lease() {
    // Lease 3 s; the handler takes 20 s; a copy arrives at 12 s and may wait 30 s. Without
    // renewal the claim would lapse at 3 s and the copy would run the handler again.
    let handler = Handler {
        delay: Some(Duration::from_secs(20)),
        ..Handler::default()
    };
    let guard = ReplayGuardLayer::default().wait(Duration::from_secs(30));
    let app = app(guard, &handler);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, sms(1)).await }
    });
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(handler.runs(), 1);
    let copy = send(&app, sms(1)).await;
    let first = first.await.unwrap();
    assert_first_answer(&copy, &first);
    assert_eq!(handler.runs(), 1);
}

#[tokio::test]
async fn a_menu_loop_runs_each_pass_in_the_delivery_scope_and_a_retry_does_not() {
    let handler = Handler::default();
    let app = app(ReplayGuardLayer::default().scope(Scope::Delivery), &handler);
    // A <Redirect> back to the menu: the same signed request, a new delivery token each time.
    for (pass, token) in ["menu-1", "menu-2", "menu-3"].into_iter().enumerate() {
        let answer = send(&app, voice(Some(token))).await;
        assert_eq!(
            (answer.status, answer.kind),
            (StatusCode::OK, None),
            "pass {pass}"
        );
    }
    assert_eq!(handler.runs(), 3);
    // Twilio's retry of one of them: the same token, the first answer.
    let retry = send(&app, voice(Some("menu-2"))).await;
    assert_eq!(retry.kind, Some(RejectionKind::ReplayCopy));
    assert_eq!(
        retry.body,
        "<Response><Message>reply 2</Message></Response>"
    );
    assert_eq!(handler.runs(), 3);
    // Without a token, the signature alone is the key: the copy gets the first answer.
    let untokened = send(&app, voice(None)).await;
    assert_eq!(untokened.kind, None);
    assert_first_answer(&send(&app, voice(None)).await, &untokened);
    assert_eq!(handler.runs(), 4);
}

#[tokio::test]
async fn in_the_content_scope_a_fresh_token_does_not_make_a_replay_new() {
    let handler = Handler::default();
    let app = app(ReplayGuardLayer::default(), &handler);
    let first = send(&app, voice(Some("a"))).await;
    assert_first_answer(&send(&app, voice(Some("b"))).await, &first);
    assert_eq!(handler.runs(), 1);
}

#[tokio::test]
async fn an_answer_larger_than_the_bound_reaches_twilio_whole_and_its_copies_get_an_empty_answer() {
    let handler = Handler {
        padding: 200,
        ..Handler::default()
    };
    let app = app(ReplayGuardLayer::default().max_answer_bytes(100), &handler);
    let first = send(&app, sms(1)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.body.len() > 200 && first.body.ends_with(b"</Message></Response>"));
    let copy = send(&app, sms(1)).await;
    assert_eq!(copy.kind, Some(RejectionKind::ReplayCopy));
    assert_eq!(copy.status, StatusCode::OK);
    assert_eq!(
        copy.body,
        r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
    );
    assert_eq!(handler.runs(), 1);
}

#[tokio::test]
async fn a_request_without_a_verified_webhook_is_refused_with_500() {
    let (logs, _guard) = crate::support::capture_json_logs();
    let handler = Handler::default();
    let h = handler.clone();
    // The guard without the signature layer in front.
    let app = ServiceBuilder::new()
        .layer(ReplayGuardLayer::default())
        .service_fn(move |_: Request<Full<Bytes>>| h.clone().run());
    let response = app.oneshot(sms(1)).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response
            .extensions()
            .get::<Rejection>()
            .map(Rejection::kind),
        Some(RejectionKind::ReplayGuardMisplaced)
    );
    assert_eq!(handler.runs(), 0, "never passed on");
    assert_eq!(ReplayOutcome::of(&response), Some(ReplayOutcome::Misplaced));
    let logged = logs.text();
    assert!(logged.contains(r#""level":"ERROR""#), "{logged}");
    assert!(logged.contains("replay_guard_misplaced"), "{logged}");
}

#[tokio::test]
async fn a_misplaced_guard_reports_one_critical_event_to_its_sink() {
    let sink = crate::support::RecordingSink::default();
    let handler = Handler::default();
    let h = handler.clone();
    let app = ServiceBuilder::new()
        .layer(ReplayGuardLayer::default().on_security_event(sink.clone()))
        .service_fn(move |_: Request<Full<Bytes>>| h.clone().run());
    let mut request = sms(1);
    *request.uri_mut() = "/twilio/sms?From=%2B14155550100".parse().unwrap();
    app.oneshot(request).await.unwrap();
    let events = sink.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type(), "replay_guard_misplaced");
    assert_eq!(events[0].outcome, Outcome::Rejected);
    assert_eq!(events[0].severity, Severity::Critical);
    assert!(!events[0].url.contains("14155550100"), "{}", events[0].url);
    assert_eq!(handler.runs(), 0);
}

#[tokio::test]
async fn a_failing_store_loses_nothing_by_default_and_refuses_when_told_to() {
    let (logs, _guard) = crate::support::capture_json_logs();
    let handler = Handler::default();
    let unguarded = app(ReplayGuardLayer::new(TestStore::down()), &handler);
    let answer = send(&unguarded, sms(1)).await;
    assert_eq!((answer.status, answer.kind), (StatusCode::OK, None));
    assert_eq!(handler.runs(), 1);
    let refusing = app(
        ReplayGuardLayer::new(TestStore::down()).on_store_failure(StoreFailure::Refuse),
        &handler,
    );
    let answer = send(&refusing, sms(1)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.kind, Some(RejectionKind::ReplayStoreFailed));
    assert_eq!(handler.runs(), 1);
    let logged = logs.text();
    let errors = error_lines(&logged);
    assert_eq!(
        errors.len(),
        2,
        "one ERROR line per degraded request: {logged}"
    );
    assert!(
        errors
            .iter()
            .all(|line| line.contains("replay_store_failed")),
        "{logged}"
    );
}

/// The lines logged at `ERROR`.
fn error_lines(logged: &str) -> Vec<&str> {
    logged
        .lines()
        .filter(|line| line.contains(r#""level":"ERROR""#))
        .collect()
}

#[tokio::test]
async fn a_misplaced_guard_or_a_lost_record_logs_one_error_line_per_request() {
    let (logs, _guard) = crate::support::capture_json_logs();
    let handler = Handler::default();
    let h = handler.clone();
    let misplaced = ServiceBuilder::new()
        .layer(ReplayGuardLayer::default())
        .service_fn(move |_: Request<Full<Bytes>>| h.clone().run());
    misplaced.oneshot(sms(1)).await.unwrap();
    let logged = logs.text();
    let errors = error_lines(&logged);
    assert_eq!(errors.len(), 1, "{logged}");
    assert!(errors[0].contains("replay_guard_misplaced"), "{logged}");

    let (logs, _guard) = crate::support::capture_json_logs();
    let forgetful = app(ReplayGuardLayer::new(forgets_completions()), &handler);
    send(&forgetful, sms(2)).await;
    let logged = logs.text();
    let errors = error_lines(&logged);
    assert_eq!(errors.len(), 1, "{logged}");
    assert!(errors[0].contains("replay_store_failed"), "{logged}");
}

/// A memory store whose `complete` fails: claims work, a processed webhook is never recorded.
fn forgets_completions() -> TestStore {
    TestStore::new(MemoryStore::default(), Fault::CompleteFails)
}

#[tokio::test]
async fn a_processed_webhook_the_store_failed_to_record_is_reported_once() {
    let sink = crate::support::RecordingSink::default();
    let handler = Handler::default();
    let guard = ReplayGuardLayer::new(forgets_completions()).on_security_event(sink.clone());
    let app = app(guard, &handler);
    let answer = send(&app, sms(1)).await;
    assert_eq!((answer.status, answer.kind), (StatusCode::OK, None));
    assert_eq!(handler.runs(), 1);
    let events = sink.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason, RejectionKind::ReplayStoreFailed);
    assert_eq!(events[0].outcome, Outcome::PassedWithoutReplayCheck);
    assert_eq!(events[0].severity, Severity::Critical);
    assert_eq!(events[0].url, "https://api.example.com/twilio/sms");
    assert_eq!(events[0].user_agent.as_deref(), Some("TwilioProxy/1.1"));
}

#[tokio::test]
async fn stored_answers_keep_the_memory_store_within_its_bytes() {
    // Room for three entries with their answers: the fourth webhook does not fit, and runs
    // unguarded (reported) rather than being lost.
    let answer_len =
        "<Response><Message>reply 1</Message></Response>".len() + "text/xml; charset=utf-8".len();
    let one = MemoryStore::ENTRY_BYTES + MemoryStore::ANSWER_BYTES + answer_len;
    let store = MemoryStore::new(MemoryStore::FIXED_BYTES + 3 * one);
    let handler = Handler::default();
    let app = app(ReplayGuardLayer::new(store.clone()), &handler);
    for n in 1..=3 {
        send(&app, sms(n)).await;
    }
    assert_eq!(store.used_bytes(), 3 * one);
    let fourth = send(&app, sms(4)).await;
    assert_eq!((fourth.status, fourth.kind), (StatusCode::OK, None));
    assert_eq!(store.len(), 3, "nothing evicted");
    for n in 1..=3 {
        assert_eq!(
            send(&app, sms(n)).await.kind,
            Some(RejectionKind::ReplayCopy)
        );
    }
    assert_eq!(handler.runs(), 4);
}

/// The store contract, written once: run against the memory store, and against a real Redis
/// and a real PostgreSQL.
pub(crate) mod contract {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use tower_twilio::{
        replay::{Claim, DeliveryClaim, Record, ReplayKey, ReplayStore, StoredAnswer},
        signature::Algorithm,
    };

    const LEASE: Duration = Duration::from_secs(5);

    /// `answer`, kept for a minute.
    fn kept(answer: StoredAnswer) -> Record {
        let window = Duration::from_secs(60);
        Record::new(answer, window)
    }

    fn key(n: u8) -> ReplayKey {
        ReplayKey::new(Algorithm::HmacSha1, &[n; 28])
    }

    fn answer() -> StoredAnswer {
        StoredAnswer::new(
            StatusCode::OK,
            Some(HeaderValue::from_static("text/xml")),
            Bytes::from_static(b"<Response><Message>hi</Message></Response>"),
        )
    }

    pub(crate) async fn run<St: ReplayStore>(store: &St) {
        // Claimed once, in flight for every other claim.
        let Ok(Claim::Claimed(first)) = store.claim(&key(1), LEASE).await else {
            panic!("a new key")
        };
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::InFlight);
        assert!(store.renew(&key(1), first, LEASE).await.unwrap());
        // Released, new again; a stale token releases and renews nothing.
        store.release(&key(1), first).await.unwrap();
        let Ok(Claim::Claimed(second)) = store.claim(&key(1), LEASE).await else {
            panic!("released, so new again")
        };
        assert_ne!(first, second);
        store.release(&key(1), first).await.unwrap();
        assert!(!store.renew(&key(1), first, LEASE).await.unwrap());
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::InFlight);
        // Completed with its answer: every claim gets the answer, a release undoes nothing.
        store
            .complete(&key(1), second, kept(answer()))
            .await
            .unwrap();
        assert_eq!(
            store.claim(&key(1), LEASE).await.unwrap(),
            Claim::Done(answer())
        );
        store.release(&key(1), second).await.unwrap();
        assert!(!store.renew(&key(1), second, LEASE).await.unwrap());
        assert_eq!(
            store.claim(&key(1), LEASE).await.unwrap(),
            Claim::Done(answer())
        );
        // "Done" only.
        let Ok(Claim::Claimed(token)) = store.claim(&key(2), LEASE).await else {
            panic!("a new key")
        };
        let done = StoredAnswer::done_only(StatusCode::NO_CONTENT);
        store
            .complete(&key(2), token, kept(done.clone()))
            .await
            .unwrap();
        assert_eq!(
            store.claim(&key(2), LEASE).await.unwrap(),
            Claim::Done(done)
        );
        // A wait on a settled key finishes.
        tokio::time::timeout(Duration::from_secs(10), store.wait(&key(2), 0))
            .await
            .expect("a wait is bounded");
        // A claim that is not renewed lapses.
        let short = Duration::from_millis(100);
        let Ok(Claim::Claimed(_)) = store.claim(&key(3), short).await else {
            panic!("a new key")
        };
        tokio::time::sleep(short * 3).await;
        assert!(matches!(
            store.claim(&key(3), LEASE).await,
            Ok(Claim::Claimed(_))
        ));
    }

    /// `claim_delivery`: at most `max` deliveries of one webhook per period, each a key of
    /// its own; a key that exists is answered whatever the count.
    pub(crate) async fn run_deliveries<St: ReplayStore>(store: &St) {
        let period = Duration::from_secs(2);
        // The `n`th delivery of the webhook signed with `signature`.
        let nth = |signature: u8, n: u8| {
            DeliveryClaim::new(
                ReplayKey::for_delivery(Algorithm::HmacSha1, &[signature; 28], &[n]),
                ReplayKey::deliveries(Algorithm::HmacSha1, &[signature; 28]),
                2,
                period,
                LEASE,
            )
        };
        let delivery = |n: u8| nth(9, n).key;
        let claim = |n: u8| store.claim_delivery(&nth(9, n));
        let Ok(Claim::Claimed(first)) = claim(1).await else {
            panic!("a new delivery")
        };
        assert_eq!(claim(1).await.unwrap(), Claim::InFlight);
        store
            .complete(&delivery(1), first, kept(answer()))
            .await
            .unwrap();
        assert_eq!(claim(1).await.unwrap(), Claim::Done(answer()));
        assert!(matches!(claim(2).await, Ok(Claim::Claimed(_))));
        assert_eq!(claim(3).await.unwrap(), Claim::TooManyDeliveries);
        assert_eq!(claim(3).await.unwrap(), Claim::TooManyDeliveries);
        // The kept ones are still answered.
        assert_eq!(claim(1).await.unwrap(), Claim::Done(answer()));
        assert_eq!(claim(2).await.unwrap(), Claim::InFlight);
        // Another webhook has a count of its own.
        assert!(matches!(
            store.claim_delivery(&nth(8, 3)).await,
            Ok(Claim::Claimed(_))
        ));
        // A new period counts again.
        tokio::time::sleep(period * 2).await;
        assert!(matches!(claim(3).await, Ok(Claim::Claimed(_))));
        assert_eq!(claim(1).await.unwrap(), Claim::Done(answer()));
    }

    #[tokio::test]
    async fn memory_store() {
        run(&tower_twilio::replay::MemoryStore::default()).await;
        run_deliveries(&tower_twilio::replay::MemoryStore::default()).await;
    }

    #[cfg(feature = "redis")]
    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn redis_store() {
        let Some(url) = crate::replay::redis::url() else {
            return;
        };
        run(&crate::replay::redis::store(&url).await).await;
        run_deliveries(&crate::replay::redis::store(&url).await).await;
    }

    #[cfg(feature = "postgres")]
    #[cfg_attr(
        skip_postgres,
        ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn postgres_store() {
        let Some(url) = crate::postgres_store::postgres::url() else {
            return;
        };
        run(&crate::postgres_store::postgres::store(&url).await).await;
        run_deliveries(&crate::postgres_store::postgres::store(&url).await).await;
    }
}

/// Two instances on one store: a copy arriving at the second while the first runs waits for
/// it and gets the first answer, and so does a later copy on either instance. One body, run
/// on each store.
mod across_instances {
    use super::*;

    /// Yields until `done` holds: a condition another task brings about.
    async fn until(done: impl Fn() -> bool) {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The body: `one` and `two` are two instances' connections to one store.
    async fn a_concurrent_copy_gets_the_first_answer<St: SendStore>(one: St, two: St) {
        let two = TestStore::new(two, Fault::None);
        let gate = Arc::new(Semaphore::new(0));
        let handler = Handler::default().gated(&gate);
        let (a, b) = (
            app(ReplayGuardLayer::new(one), &handler),
            app(ReplayGuardLayer::new(two.clone()), &handler),
        );
        let first = tokio::spawn(send(&a, sms(1)));
        started(&handler, 1).await;
        let copy = tokio::spawn(send(&b, sms(1)));
        // The copy reached the store and was told the first attempt is in flight: it waits.
        until(|| two.in_flight() > 0 || copy.is_finished()).await;
        assert!(!copy.is_finished(), "the copy waits for the first attempt");
        assert_eq!(handler.runs(), 1, "the copy waits rather than runs");
        gate.add_permits(1);
        let (first, copy) = (first.await.unwrap(), copy.await.unwrap());
        assert_eq!(
            (first.status, &first.body[..]),
            (
                StatusCode::OK,
                &b"<Response><Message>reply 1</Message></Response>"[..]
            )
        );
        assert_first_answer(&copy, &first);
        // A later copy, on either instance, gets it from the store.
        assert_first_answer(&send(&b, sms(1)).await, &first);
        assert_first_answer(&send(&a, sms(1)).await, &first);
        assert_eq!(handler.runs(), 1);
    }

    /// Two guards on one memory store, as two services of one process.
    #[tokio::test]
    async fn on_one_memory_store() {
        let store = MemoryStore::default();
        a_concurrent_copy_gets_the_first_answer(store.clone(), store).await;
    }

    /// Two connections to one Redis.
    #[cfg(feature = "redis")]
    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn on_redis() {
        use crate::replay::redis;
        let Some(url) = redis::url() else { return };
        let [one, two] = redis::instances(&url).await;
        a_concurrent_copy_gets_the_first_answer(one, two).await;
    }

    /// Two pools on one PostgreSQL table.
    #[cfg(feature = "postgres")]
    #[cfg_attr(
        skip_postgres,
        ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn on_postgres() {
        use crate::postgres_store::postgres;
        let Some(url) = postgres::url() else { return };
        let [one, two] = postgres::instances(&url).await;
        a_concurrent_copy_gets_the_first_answer(one, two).await;
    }
}

/// Two instances on one PostgreSQL table: the first is killed mid-handler (its response
/// future is never polled nor dropped again, so it neither answers, renews nor releases), and
/// Twilio's retry on the second waits for the dead claim's short lease to lapse, then runs
/// the handler itself within the guard's wait, and its answer is the one stored.
#[cfg(feature = "postgres")]
#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
#[tokio::test]
async fn across_instances_on_postgres_a_killed_first_attempt_lets_the_retry_run_on_the_other() {
    use crate::postgres_store::postgres;
    let Some(url) = postgres::url() else { return };
    let [one, two] = postgres::instances(&url).await;
    // The first attempt hangs in the handler; later runs answer at once.
    let gate = Arc::new(Semaphore::new(0));
    let hanging = Handler::default().gated(&gate);
    let handler = Handler::default();
    let lease = Duration::from_secs(1);
    let a = app(ReplayGuardLayer::new(one).lease(lease), &hanging);
    let b = app(ReplayGuardLayer::new(two).lease(lease), &handler);
    let mut killed = Box::pin(a.oneshot(sms(1)));
    while hanging.runs() < 1 {
        assert!(
            tokio::time::timeout(Duration::from_millis(10), &mut killed)
                .await
                .is_err(),
            "the first attempt hangs"
        );
    }
    // The instance dies: nothing of it runs again, not even its drop.
    std::mem::forget(killed);
    let started = tokio::time::Instant::now();
    let retry = send(&b, sms(1)).await;
    assert_eq!(retry.kind, None, "the retry ran the handler: {retry:?}");
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(
        retry.body,
        "<Response><Message>reply 1</Message></Response>"
    );
    assert_eq!(handler.runs(), 1);
    assert!(
        started.elapsed() < ReplayGuardLayer::DEFAULT_WAIT,
        "within the guard's wait: {:?}",
        started.elapsed()
    );
    // Its answer is the one stored.
    assert_first_answer(&send(&b, sms(1)).await, &retry);
    assert_eq!((hanging.runs(), handler.runs()), (1, 1));
}

// Every byte the store allocates is counted (allocation-counter is this binary's allocator):
// 100 000 webhooks, each with a TwiML answer that a copy was given once (which makes the
// answer's bytes shared), stay under the bytes the store was given, and the next new webhook
// is refused rather than let in by forgetting an old one.
#[test]
fn memory_store_with_answers_stays_within_its_bytes_under_100_000_webhooks() {
    use tower_twilio::{
        replay::{Claim, Record, ReplayKey, ReplayStoreErrorKind, StoredAnswer},
        signature::Algorithm,
    };

    const WEBHOOKS: usize = 100_000;
    let twiml = Bytes::from(format!(
        "<Response><Message>{}</Message></Response>",
        "x".repeat(120)
    ));
    let content_type = HeaderValue::from_static("text/xml; charset=utf-8");
    let answer = StoredAnswer::new(StatusCode::OK, Some(content_type), twiml);
    let one = MemoryStore::ENTRY_BYTES + MemoryStore::ANSWER_BYTES + answer.len();
    let max_bytes = MemoryStore::FIXED_BYTES + WEBHOOKS * one;
    let store = MemoryStore::new(max_bytes);
    let key = |n: usize| ReplayKey::new(Algorithm::HmacSha1, format!("{n:027}=").as_bytes());
    let lease = Duration::from_secs(5);
    let window = Duration::from_secs(3600);
    let kept = Record::new(answer.clone(), window);
    let info = allocation_counter::measure(|| {
        for n in 0..WEBHOOKS {
            let Ok(Claim::Claimed(token)) = store.claim(&key(n), lease).into_inner() else {
                panic!("webhook {n} was not new");
            };
            store
                .complete(&key(n), token, kept.clone())
                .into_inner()
                .unwrap();
            let Ok(Claim::Done(copy)) = store.claim(&key(n), lease).into_inner() else {
                panic!("webhook {n} was not done");
            };
            assert_eq!(copy, answer);
        }
    });
    println!(
        "memory store with answers: {WEBHOOKS} webhooks, peak {} bytes ({} per webhook), limit {max_bytes}",
        info.bytes_max,
        info.bytes_max / WEBHOOKS as u64
    );
    assert!(
        info.bytes_max <= max_bytes as u64,
        "peak {} > limit {max_bytes}",
        info.bytes_max
    );
    let refused = store.claim(&key(WEBHOOKS), lease).into_inner().unwrap_err();
    assert_eq!(refused.kind(), ReplayStoreErrorKind::Full);
}

/// The signature layer's webhook log (`on_webhook`) records a copy the guard answered with the
/// stored answer as `copy`, not as a second `processed`.
#[tokio::test]
async fn the_webhook_log_records_a_copy_as_copy_not_processed() {
    use tower_twilio::events::log::{WebhookLogEntry, WebhookOutcome};

    let entries: Arc<Mutex<Vec<WebhookOutcome>>> = Arc::default();
    let recorded = Arc::clone(&entries);
    let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
        .public_url(PublicUrl::fixed(PUBLIC).unwrap())
        .on_webhook(move |entry: &WebhookLogEntry| {
            if entry.outcome.is_final() {
                recorded.lock().unwrap().push(entry.outcome);
            }
        });
    let handler = Handler::default();
    let app = ServiceBuilder::new()
        .layer(twilio)
        .layer(ReplayGuardLayer::default())
        .service_fn({
            let handler = handler.clone();
            move |_: Request<VerifiedBody>| handler.clone().run()
        });
    for _ in 0..2 {
        let response = app.clone().oneshot(sms(7)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "<Response><Message>reply 1</Message></Response>");
    }
    assert_eq!(handler.runs(), 1);
    assert_eq!(
        *entries.lock().unwrap(),
        [
            WebhookOutcome::Processed(StatusCode::OK),
            WebhookOutcome::Copy
        ]
    );
}

// tower-http's `Timeout` answers with `ResBody::default()`: it sits directly outside the guard.
#[tokio::test(start_paused = true)]
async fn a_timeout_directly_outside_the_guard_answers_with_an_empty_body() {
    use tower_http::timeout::TimeoutLayer;

    let gate = Arc::new(Semaphore::new(0));
    let handler = Handler::default().gated(&gate);
    let h = handler.clone();
    let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
        .public_url(PublicUrl::fixed(PUBLIC).unwrap());
    let service = ServiceBuilder::new()
        .layer(twilio)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(1),
        ))
        .layer(ReplayGuardLayer::default())
        .service_fn(move |_: Request<VerifiedBody>| h.clone().run());
    let response = service.oneshot(sms(1)).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(handler.runs(), 1);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}

/// Once the handler has answered 2xx it has acted: whatever happens to its answer afterwards
/// (the client goes away while it streams, the body fails, the request is dropped while the
/// store records it), a copy must not run it again.
mod cut_answers {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use http_body::Frame;
    use tokio::sync::mpsc;

    use super::*;

    /// A response body fed by the test, frame by frame; it ends when the sender is dropped.
    struct Streamed(mpsc::UnboundedReceiver<Result<Bytes, BoxError>>);

    impl http_body::Body for Streamed {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|frame| frame.map(|data| data.map(Frame::data)))
        }
    }

    type Feed = mpsc::UnboundedSender<Result<Bytes, BoxError>>;

    type StreamingApp =
        BoxCloneService<Request<Full<Bytes>>, Response<UnsyncBoxBody<Bytes, BoxError>>, Infallible>;

    /// The signature layer, `guard`, and a handler that answers `200` with the first part of
    /// its TwiML at once. On its first run the rest is up to the test (the feed goes to
    /// `feeds`); on later runs the answer is whole at once.
    fn streaming_app(
        guard: ReplayGuardLayer,
        runs: &Arc<AtomicUsize>,
        feeds: mpsc::UnboundedSender<Feed>,
    ) -> StreamingApp {
        let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
            .public_url(PublicUrl::fixed(PUBLIC).unwrap());
        let runs = Arc::clone(runs);
        let service = ServiceBuilder::new().layer(twilio).layer(guard).service_fn(
            move |_: Request<VerifiedBody>| {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let (feed, body) = mpsc::unbounded_channel();
                feed.send(Ok(Bytes::from(format!("<Response><Message>reply {run}"))))
                    .unwrap();
                if run == 1 {
                    feeds.send(feed).unwrap();
                } else {
                    feed.send(Ok(Bytes::from_static(b"</Message></Response>")))
                        .unwrap();
                }
                let mut response = Response::new(Streamed(body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/xml; charset=utf-8"),
                );
                async move { Ok::<_, Infallible>(response) }
            },
        );
        type Both = tower_twilio::ResponseBody<tower_twilio::ResponseBody<Streamed>>;
        BoxCloneService::new(ServiceExt::<Request<Full<Bytes>>>::map_response(
            service,
            |response: Response<Both>| response.map(BodyExt::boxed_unsync),
        ))
    }

    /// The empty answer a copy gets when only "done" was kept, for a form webhook.
    const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

    fn warn_lines(logged: &str) -> Vec<&str> {
        logged
            .lines()
            .filter(|line| line.contains(r#""level":"WARN""#))
            .collect()
    }

    /// The client (Twilio, after its read timeout between two packets) goes away while the
    /// guard reads the handler's 2xx answer for the store. Releasing the claim then would let
    /// the retry run the handler a second time.
    #[tokio::test]
    async fn a_2xx_answer_dropped_while_it_is_read_marks_the_webhook_done() {
        let (logs, _guard) = crate::support::capture_json_logs();
        let runs = Arc::new(AtomicUsize::new(0));
        let (feeds, mut fed) = mpsc::unbounded_channel();
        let app = streaming_app(ReplayGuardLayer::default(), &runs, feeds);
        let mut first = Box::pin(app.clone().oneshot(sms(1)));
        let feed = tokio::select! {
            _ = &mut first => panic!("answered before its body ended"),
            feed = fed.recv() => feed.unwrap(),
        };
        // The guard has read the first part and waits for the rest.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut first)
                .await
                .is_err()
        );
        drop(first); // the connection closed
        let copy = send(&app, sms(1)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the copy ran the handler again"
        );
        assert_eq!(copy.kind, Some(RejectionKind::ReplayCopy));
        assert_eq!(
            (copy.status, &copy.body[..]),
            (StatusCode::OK, EMPTY_TWIML.as_bytes())
        );
        drop(feed);
        let logged = logs.text();
        let warned = warn_lines(&logged);
        assert_eq!(warned.len(), 1, "reported once: {logged}");
        assert!(warned[0].contains("cut"), "{logged}");
    }

    /// The handler's 2xx answer fails half-way (its stream broke): it acted all the same.
    #[tokio::test]
    async fn a_2xx_answer_whose_body_fails_while_it_is_read_marks_the_webhook_done() {
        let (logs, _guard) = crate::support::capture_json_logs();
        let runs = Arc::new(AtomicUsize::new(0));
        let (feeds, mut fed) = mpsc::unbounded_channel();
        let app = streaming_app(ReplayGuardLayer::default(), &runs, feeds);
        let first = tokio::spawn(app.clone().oneshot(sms(1)));
        let feed = fed.recv().await.unwrap();
        feed.send(Err("the template engine failed".into())).unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        // The client gets the part that was read, then the error (hyper cuts the connection).
        let mut body = first.into_body();
        let part = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(part, "<Response><Message>reply 1");
        assert!(body.frame().await.unwrap().is_err());
        let copy = send(&app, sms(1)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the copy ran the handler again"
        );
        assert_eq!(copy.kind, Some(RejectionKind::ReplayCopy));
        assert_eq!(
            (copy.status, &copy.body[..]),
            (StatusCode::OK, EMPTY_TWIML.as_bytes())
        );
        let logged = logs.text();
        let warned = warn_lines(&logged);
        assert_eq!(warned.len(), 1, "reported once: {logged}");
        assert!(warned[0].contains("cut"), "{logged}");
    }

    /// A memory store whose `complete` and `release` take a second to reach it, as a shared
    /// store's round trip does; the detached variants start the operation on the runtime, as
    /// the Redis and PostgreSQL stores do.
    fn remote() -> TestStore {
        TestStore::new(MemoryStore::default(), Fault::Slow(Duration::from_secs(1)))
    }

    /// Polls `request` until the handler has run `n` times, then drops it.
    async fn drop_after_the_handler<F: std::future::Future + Unpin>(
        mut request: F,
        runs: impl Fn() -> usize,
        n: usize,
    ) {
        while runs() < n {
            assert!(
                tokio::time::timeout(Duration::from_millis(10), &mut request)
                    .await
                    .is_err(),
                "answered before it could be dropped"
            );
        }
        // One more poll, to be past the handler's answer.
        let _ = tokio::time::timeout(Duration::from_millis(10), &mut request).await;
        drop(request);
    }

    /// The client goes away after the handler answered, while the store records the answer
    /// (a round trip to Redis or PostgreSQL): the record must still be made, or the claim
    /// lapses and Twilio's retry runs the handler a second time.
    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_while_its_answer_is_stored_still_stores_it() {
        let handler = Handler::default();
        let app = app(ReplayGuardLayer::new(remote()), &handler);
        let first = Box::pin(app.clone().oneshot(sms(1)));
        drop_after_the_handler(first, || handler.runs(), 1).await;
        let retry = send(&app, sms(1)).await;
        assert_eq!(handler.runs(), 1, "the retry ran the handler again");
        assert_eq!(retry.kind, Some(RejectionKind::ReplayCopy));
        assert_eq!(
            retry.body, "<Response><Message>reply 1</Message></Response>",
            "the retry gets the answer the dropped request was given"
        );
    }

    /// The client goes away while the guard releases the claim of a failed attempt: the
    /// release still happens, so Twilio's retry runs at once instead of waiting out the lease.
    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_while_its_claim_is_released_still_releases_it() {
        let handler = Handler::answering(&[StatusCode::INTERNAL_SERVER_ERROR]);
        let app = app(ReplayGuardLayer::new(remote()), &handler);
        let first = Box::pin(app.clone().oneshot(sms(1)));
        drop_after_the_handler(first, || handler.runs(), 1).await;
        let started = tokio::time::Instant::now();
        let retry = send(&app, sms(1)).await;
        assert_eq!((retry.status, retry.kind), (StatusCode::OK, None));
        assert_eq!(handler.runs(), 2);
        // Released, the retry claims it at its next poll of the store; unreleased, it would
        // wait out the whole lease first.
        assert!(
            started.elapsed() < ReplayGuardLayer::DEFAULT_LEASE,
            "the retry waited for the lease: {:?}",
            started.elapsed()
        );
    }
}

/// A captured voice webhook replayed with a fresh `I-Twilio-Idempotency-Token` on each request
/// (the header is not signed): in the delivery scope each one is a new delivery. The store
/// must not keep an entry, with up to 64 KiB of answer, for every one of them.
mod delivery_bound {
    use super::*;

    /// How many deliveries of one signed request the delivery scope tells apart within its
    /// window, by default.
    const MAX_DELIVERIES: usize = ReplayGuardLayer::DEFAULT_MAX_DELIVERIES as usize;
    /// Replays of one captured voice webhook, each with a token of its own.
    const REPLAYS: usize = 200;
    /// The handler's answer: about 8 KiB of TwiML that no store compresses.
    const PADDING: usize = 8 * 1024;

    fn voice_handler() -> Handler {
        Handler {
            padding: PADDING,
            ..Handler::default()
        }
    }

    /// Sends `REPLAYS` copies of one voice webhook, each with a fresh token: each one runs the
    /// handler (the delivery scope cannot tell them from a menu loop) and gets its answer.
    async fn replay_with_fresh_tokens(app: &App, handler: &Handler) {
        for n in 0..REPLAYS {
            let answer = send(app, voice(Some(&format!("replay-{n}")))).await;
            assert_eq!((answer.status, answer.kind), (StatusCode::OK, None), "{n}");
        }
        assert_eq!(handler.runs(), REPLAYS);
    }

    /// What the store may hold for one signature after any number of fresh-token replays:
    /// `MAX_DELIVERIES` deliveries with their answers (each rounded up by `rounding`, in
    /// quarters: an allocator's size classes), and `per_entry` bytes per entry besides.
    fn bound(per_entry: usize, rounding: usize) -> usize {
        let answer = "<Response><Message>reply 200</Message></Response>".len()
            + PADDING
            + "text/xml; charset=utf-8".len();
        (MAX_DELIVERIES + 1) * per_entry + MAX_DELIVERIES * answer * (4 + rounding) / 4
    }

    #[tokio::test]
    async fn fresh_token_replays_keep_a_bounded_number_of_entries_in_the_memory_store() {
        let store = MemoryStore::default();
        let handler = voice_handler();
        let guard = ReplayGuardLayer::new(store.clone()).scope(Scope::Delivery);
        let app = app(guard, &handler);
        replay_with_fresh_tokens(&app, &handler).await;
        let bound = bound(MemoryStore::ENTRY_BYTES + MemoryStore::ANSWER_BYTES, 0);
        println!(
            "memory store after {REPLAYS} fresh-token replays of one voice webhook: {} entries, \
             {} bytes (bound {bound})",
            store.len(),
            store.used_bytes()
        );
        assert!(store.len() <= MAX_DELIVERIES + 1, "{} entries", store.len());
        assert!(store.used_bytes() <= bound, "{} bytes", store.used_bytes());
    }

    #[cfg(feature = "redis")]
    #[cfg_attr(
        skip_redis,
        ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn fresh_token_replays_keep_a_bounded_number_of_keys_in_redis() {
        let Some(url) = crate::replay::redis::url() else {
            return;
        };
        let prefix = format!("test:{}:", crate::replay::redis::random_hex());
        let store = crate::replay::redis::store_with_prefix(&url, &prefix).await;
        let handler = voice_handler();
        let app = app(
            ReplayGuardLayer::new(store).scope(Scope::Delivery),
            &handler,
        );
        replay_with_fresh_tokens(&app, &handler).await;
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        let mut bytes = 0;
        for key in &keys {
            let used: Option<usize> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .query_async(&mut connection)
                .await
                .unwrap();
            bytes += used.unwrap_or(0);
        }
        // Redis's own overhead per key (its dictionary entry, the key's name, the TTL) is
        // about 200 bytes: 1 KiB is generous; jemalloc rounds an 8 KiB value up to its size
        // class (at most a quarter more).
        let bound = bound(1024, 1);
        println!(
            "Redis after {REPLAYS} fresh-token replays of one voice webhook: {} keys, {bytes} \
             bytes (MEMORY USAGE; bound {bound})",
            keys.len()
        );
        assert!(keys.len() <= MAX_DELIVERIES + 1, "{} keys", keys.len());
        assert!(bytes <= bound, "{bytes} bytes");
    }

    #[cfg(feature = "postgres")]
    #[cfg_attr(
        skip_postgres,
        ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
    )]
    #[tokio::test]
    async fn fresh_token_replays_keep_a_bounded_number_of_rows_in_postgres() {
        use crate::postgres_store::postgres;
        let Some(url) = postgres::url() else { return };
        let table = postgres::fresh_table();
        let store = postgres::store_on(&url, &table).await;
        let pool = store.pool().clone();
        let handler = voice_handler();
        let app = app(
            ReplayGuardLayer::new(store).scope(Scope::Delivery),
            &handler,
        );
        replay_with_fresh_tokens(&app, &handler).await;
        let (rows, bytes): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0)::BIGINT FROM {table} t"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        let (rows, bytes) = (rows as usize, bytes as usize);
        // A row's header, key, token and timestamps: well under 1 KiB.
        let bound = bound(1024, 0);
        println!(
            "PostgreSQL after {REPLAYS} fresh-token replays of one voice webhook: {rows} rows, \
             {bytes} bytes (pg_column_size of the rows; bound {bound})"
        );
        assert!(rows <= MAX_DELIVERIES + 1, "{rows} rows");
        assert!(bytes <= bound, "{bytes} bytes");
    }

    /// Within the bound a delivery is a delivery: Twilio's retry of one gets its answer. Past
    /// it, a new token runs the handler unrecorded (its answer is the handler's, marked
    /// `Unrecorded`), and a retry of it runs the handler again.
    #[tokio::test]
    async fn past_the_bound_a_new_delivery_runs_unrecorded_and_earlier_ones_still_collapse() {
        let handler = Handler::default();
        let guard = ReplayGuardLayer::default()
            .scope(Scope::Delivery)
            .max_deliveries(2);
        let app = app(guard, &handler);
        for token in ["pass-1", "pass-2"] {
            assert_eq!(send(&app, voice(Some(token))).await.kind, None);
        }
        let retry = send(&app, voice(Some("pass-1"))).await;
        assert_eq!(retry.kind, Some(RejectionKind::ReplayCopy));
        assert_eq!(
            retry.body,
            "<Response><Message>reply 1</Message></Response>"
        );
        assert_eq!(handler.runs(), 2);
        for run in [3, 4] {
            let third = app.clone().oneshot(voice(Some("pass-3"))).await.unwrap();
            assert_eq!(ReplayOutcome::of(&third), Some(ReplayOutcome::Unrecorded));
            let third = answer(third).await;
            assert_eq!((third.status, third.kind), (StatusCode::OK, None));
            assert_eq!(
                third.body,
                format!("<Response><Message>reply {run}</Message></Response>")
            );
        }
        assert_eq!(handler.runs(), 4, "a retry past the bound runs again");
        // Without a token the signature alone is the key, bound or not.
        let untokened = send(&app, voice(None)).await;
        assert_first_answer(&send(&app, voice(None)).await, &untokened);
    }

    /// A flood of fresh-token replays past the bound is not a flood of log lines: one `WARN`
    /// a minute per layer, counting the deliveries that ran unrecorded since the last one.
    #[tokio::test(start_paused = true)]
    async fn a_flood_past_the_bound_logs_one_warning_a_minute() {
        let (logs, _guard) = crate::support::capture_json_logs();
        let handler = Handler::default();
        let app = app(ReplayGuardLayer::default().scope(Scope::Delivery), &handler);
        let unrecorded = |logged: &str| -> Vec<String> {
            let warned = logged
                .lines()
                .filter(|line| line.contains(r#""level":"WARN""#));
            warned
                .filter(|line| line.contains("unrecorded"))
                .map(str::to_owned)
                .collect()
        };
        replay_with_fresh_tokens(&app, &handler).await;
        let past = REPLAYS - MAX_DELIVERIES;
        let lines = unrecorded(&logs.text());
        assert_eq!(lines.len(), 1, "{past} unrecorded deliveries: {lines:#?}");
        assert!(lines[0].contains(r#""unrecorded":1,"#), "{}", lines[0]);
        // A minute on, the next one is logged with those the first line did not count.
        tokio::time::advance(Duration::from_secs(60)).await;
        for n in 0..10 {
            let late = app.clone().oneshot(voice(Some(&format!("late-{n}"))));
            let late = late.await.unwrap();
            assert_eq!(ReplayOutcome::of(&late), Some(ReplayOutcome::Unrecorded));
        }
        let lines = unrecorded(&logs.text());
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[1].contains(&format!(r#""unrecorded":{past},"#)),
            "{}",
            lines[1]
        );
    }

    /// A delivery is kept for the delivery window (5 minutes), not the window (24 hours); a
    /// new window tells as many deliveries apart again.
    #[tokio::test(start_paused = true)]
    async fn deliveries_are_kept_for_the_delivery_window_and_counted_per_window() {
        let store = MemoryStore::default();
        let handler = Handler::default();
        let guard = ReplayGuardLayer::new(store.clone())
            .scope(Scope::Delivery)
            .max_deliveries(2);
        let app = app(guard, &handler);
        send(&app, voice(None)).await; // without a token, not a delivery: kept for the window
        for token in ["a", "b"] {
            send(&app, voice(Some(token))).await;
        }
        assert_eq!(
            store.len(),
            1 + 2 + 1,
            "a content entry, two deliveries, their count"
        );
        tokio::time::advance(ReplayGuardLayer::DEFAULT_DELIVERY_WINDOW).await;
        // The retry of a delivery after the window is new again; so is the count.
        for token in ["a", "c"] {
            let later = app.clone().oneshot(voice(Some(token))).await.unwrap();
            assert_eq!(ReplayOutcome::of(&later), Some(ReplayOutcome::First));
        }
        assert_eq!(store.len(), 1 + 2 + 1);
        assert_eq!(
            send(&app, voice(None)).await.kind,
            Some(RejectionKind::ReplayCopy)
        );
    }
}

/// `Scope::key` is the key the guard claims for a webhook: the store of a guard that processed
/// it knows that key as done, in its own scope only.
#[tokio::test]
async fn scope_key_is_the_key_the_guard_claims() {
    use tower_twilio::{VerifiedWebhook, replay::Claim};

    let cases = [
        (Scope::Content, Scope::Delivery, sms(7)),
        (Scope::Delivery, Scope::Content, voice(Some("idem-7"))),
    ];
    for (scope, other, request) in cases {
        let store = MemoryStore::default();
        let seen = Arc::new(Mutex::new(None::<VerifiedWebhook>));
        let keep = Arc::clone(&seen);
        let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token()))
            .public_url(PublicUrl::fixed(PUBLIC).unwrap());
        let service = ServiceBuilder::new()
            .layer(twilio)
            .layer(ReplayGuardLayer::new(store.clone()).scope(scope))
            .service_fn(move |request: Request<VerifiedBody>| {
                *keep.lock().unwrap() = request.extensions().get::<VerifiedWebhook>().cloned();
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
            });
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scope:?}");
        let webhook = seen.lock().unwrap().take().expect("the handler ran");

        let key = scope.key(&webhook).unwrap();
        let claim = store.claim(&key, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(claim, Claim::Done(_)), "{scope:?}: {claim:?}");
        let key = other.key(&webhook).unwrap();
        let claim = store.claim(&key, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(claim, Claim::Claimed(_)), "{other:?}: {claim:?}");
    }
}
