//! [`ResponseFuture`]: claims the webhook, then runs the inner service and stores its answer,
//! gives a copy the stored answer, or waits for the first attempt.

use std::{
    future::Future,
    mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::{
    ReplayOutcome, StoreFailure,
    body::{AnswerCollector, Collected},
    layer::Settings,
};
use crate::{
    BoxError, Rejection, RejectionKind, ResponseBody, VerifiedWebhook,
    events::{Outcome, SecurityEvent, TRACING_TARGET},
    replay::{
        Claim, ClaimToken, DeliveryClaim, Record, ReplayKey, ReplayStore, ReplayStoreError,
        StoredAnswer,
    },
    verify::Covered,
};

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

pin_project! {
    /// The response future of [`ReplayGuard`](super::ReplayGuard): a small state machine
    /// (claim, wait, run, read the answer, store it) with nothing boxed.
    pub struct ResponseFuture<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
        St: ReplayStore,
    {
        #[pin]
        state: State<
            St::ClaimFuture,
            St::WaitFuture,
            S::Future,
            ResBody,
            St::CompleteFuture,
            St::ReleaseFuture,
            S::Error,
        >,
        // Until the claim: how long a copy may still wait for the first attempt, set when it
        // first waits. Once claimed: when the claim is renewed next, set when the handler
        // first makes the request wait. (One timer for both keeps the future small.)
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        renewal: Option<St::RenewFuture>,
        request: InFlight<S, St, ReqBody>,
    }

    impl<S, St, ReqBody, ResBody> PinnedDrop for ResponseFuture<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
        St: ReplayStore,
    {
        fn drop(this: Pin<&mut Self>) {
            // Dropped while holding the claim (the client went away): settle it as the state
            // says, so that a copy neither waits out the lease nor runs an acted-on webhook.
            let request = this.project().request;
            request.settle_on_drop();
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<CF, WF, SF, RB, KF, XF, E> {
        Claiming {
            #[pin]
            claim: CF,
        },
        // Another attempt holds the claim: wait for it to settle, then claim again.
        Waiting {
            #[pin]
            wait: WF,
        },
        Running {
            #[pin]
            future: SF,
        },
        // The handler answered 2xx: its body is read (up to the bound) for the store.
        Reading {
            body: Option<RB>,
            collector: AnswerCollector,
            parts: Option<Parts>,
        },
        Completing {
            #[pin]
            complete: KF,
            response: Option<Response<ResponseBody<RB>>>,
        },
        Releasing {
            #[pin]
            release: XF,
            result: Option<Result<Response<ResponseBody<RB>>, E>>,
        },
        Finished {
            result: Option<Result<Response<ResponseBody<RB>>, E>>,
        },
    }
}

/// What the future holds whatever its state.
struct InFlight<S, St, ReqBody> {
    inner: S,
    settings: Arc<Settings<St>>,
    /// The request until the inner service is called, then what an event about it needs.
    held: Held<ReqBody>,
    key: ReplayKey,
    /// Where the deliveries of this webhook are counted, when `key` is one delivery of it
    /// (the delivery scope, with a token).
    deliveries: Option<ReplayKey>,
    /// What the handler's answer is marked with: set when the handler is called.
    outcome: ReplayOutcome,
    /// What the signature covered, for the empty answer to a copy whose answer was not kept.
    covered: Covered,
    /// Held from the claim until the store has completed or released it.
    claim: Option<ClaimToken>,
    /// What a drop does with the claim, if it is still held.
    on_drop: OnDrop,
    /// How many times this copy has waited.
    waits: u32,
}

/// The request, or once the inner service has it, what an event about it needs (never both:
/// one field keeps the future smaller).
enum Held<ReqBody> {
    Request(Request<ReqBody>),
    /// Set by `call` for a claimed request, whose answer the store can still fail to record.
    About(About),
    Neither,
}

/// What a request dropped while it holds the claim does with it.
enum OnDrop {
    /// The handler has not answered (or failed): release the claim, so a copy runs it.
    Release,
    /// The handler answered 2xx with this status and its body was being read: it has acted,
    /// so the webhook is recorded as done without its answer, as a larger-than-the-bound
    /// answer is.
    CutAnswer(StatusCode),
    /// The answer was read whole and was being stored: store it all the same.
    Complete(StoredAnswer),
}

/// What [`report`] reads of a request, kept when the request goes to the inner service: the
/// store can still fail to record its answer after that.
struct About {
    method: http::Method,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    webhook: Option<VerifiedWebhook>,
}

impl About {
    fn of<B>(request: &Request<B>) -> Self {
        let headers = request.headers();
        Self {
            method: request.method().clone(),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            request_id: headers.get(crate::events::REQUEST_ID_HEADER).cloned(),
            webhook: request.extensions().get::<VerifiedWebhook>().cloned(),
        }
    }
}

type StateOf<S, St, ReqBody, ResBody> = State<
    <St as ReplayStore>::ClaimFuture,
    <St as ReplayStore>::WaitFuture,
    <S as Service<Request<ReqBody>>>::Future,
    ResBody,
    <St as ReplayStore>::CompleteFuture,
    <St as ReplayStore>::ReleaseFuture,
    <S as Service<Request<ReqBody>>>::Error,
>;

impl<S, St, ReqBody, ResBody> ResponseFuture<S, St, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: ReplayStore,
{
    pub(crate) fn new(request: Request<ReqBody>, inner: S, settings: Arc<Settings<St>>) -> Self {
        let verified = request
            .extensions()
            .get::<VerifiedWebhook>()
            .and_then(|webhook| Some((settings.scope.keys(webhook)?, webhook.covered())));
        let ((key, deliveries), covered, state) = match verified {
            Some(((key, deliveries), covered)) => {
                let claim = claim(&settings, &key, deliveries.as_ref());
                ((key, deliveries), covered, State::Claiming { claim })
            }
            None => {
                // The event is the one ERROR report; this only adds the remedy for debugging.
                tracing::debug!(
                    target: TRACING_TARGET,
                    "the replay guard got a request without a VerifiedWebhook or its \
                     signature: place ReplayGuardLayer after TwilioSignatureLayer (refused \
                     with 500)"
                );
                let kind = RejectionKind::ReplayGuardMisplaced;
                report(&settings, &request, kind, Outcome::Rejected);
                let response = refusal(kind, None, ReplayOutcome::Misplaced);
                let key = ReplayKey::new(crate::signature::Algorithm::HmacSha1, b"");
                ((key, None), Covered::UrlOnly, finished(response))
            }
        };
        Self {
            state,
            timer: None,
            renewal: None,
            request: InFlight {
                inner,
                settings,
                held: Held::Request(request),
                key,
                deliveries,
                outcome: ReplayOutcome::First,
                covered,
                claim: None,
                on_drop: OnDrop::Release,
                waits: 0,
            },
        }
    }
}

impl<S, St, ReqBody, ResBody> Future for ResponseFuture<S, St, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: ReplayStore,
    ResBody: Body + Unpin,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let request = this.request;
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Claiming { claim } => {
                    let answer = ready!(claim.poll(cx));
                    match answer {
                        Ok(Claim::InFlight) if this.timer.is_none() => {
                            let wait = request.settings.wait;
                            this.timer.set(Some(tokio::time::sleep(wait)));
                        }
                        Ok(Claim::InFlight) => {}
                        // No more waiting: from here on the timer renews the claim.
                        _ => this.timer.set(None),
                    }
                    request.claimed(answer)
                }
                StateProj::Waiting { wait } => {
                    let deadline = this.timer.as_mut().as_pin_mut();
                    if deadline.is_some_and(|deadline| deadline.poll(cx).is_ready()) {
                        request.wait_ran_out()
                    } else {
                        ready!(wait.poll(cx));
                        request.waits += 1;
                        State::Claiming {
                            claim: claim(
                                &request.settings,
                                &request.key,
                                request.deliveries.as_ref(),
                            ),
                        }
                    }
                }
                StateProj::Running { future } => match future.poll(cx) {
                    Poll::Ready(result) => request.answered(result, cx),
                    Poll::Pending => {
                        request.poll_renewal(this.timer.as_mut(), this.renewal.as_mut(), cx);
                        return Poll::Pending;
                    }
                },
                StateProj::Reading {
                    body,
                    collector,
                    parts,
                } => {
                    let limit = request.settings.max_answer_bytes;
                    let reading = body.as_mut().expect(POLLED_AFTER_COMPLETION);
                    match collector.poll_collect(Pin::new(reading), limit, cx) {
                        Poll::Ready(collected) => {
                            let parts = parts.take().expect(POLLED_AFTER_COMPLETION);
                            let body = body.take().expect(POLLED_AFTER_COMPLETION);
                            request.read(parts, body, collected)
                        }
                        Poll::Pending => {
                            request.poll_renewal(this.timer.as_mut(), this.renewal.as_mut(), cx);
                            return Poll::Pending;
                        }
                    }
                }
                StateProj::Completing { complete, response } => {
                    let completed = ready!(complete.poll(cx));
                    request.claim = None;
                    if let Err(error) = completed {
                        request.report(
                            RejectionKind::ReplayStoreFailed,
                            Outcome::PassedWithoutReplayCheck,
                        );
                        // The event is the one ERROR report; the store's error adds its cause.
                        tracing::debug!(
                            target: TRACING_TARGET,
                            %error,
                            "a processed webhook could not be recorded in the replay store: \
                             a copy arriving after the claim's lease runs the handler again"
                        );
                        crate::metrics::replay_degraded("complete_failed");
                    }
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Releasing { release, result } => {
                    let released = ready!(release.poll(cx));
                    request.claim = None;
                    if let Err(error) = released {
                        tracing::warn!(
                            target: TRACING_TARGET,
                            %error,
                            "a replay claim could not be released: copies wait for it until \
                             its lease runs out"
                        );
                    }
                    return Poll::Ready(result.take().expect(POLLED_AFTER_COMPLETION));
                }
                StateProj::Finished { result } => {
                    return Poll::Ready(result.take().expect(POLLED_AFTER_COMPLETION));
                }
            };
            this.state.set(next);
        }
    }
}

impl<S, St, ReqBody, ResBody> InFlight<S, St, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: ReplayStore,
{
    /// The store answered a claim.
    fn claimed(
        &mut self,
        answer: Result<Claim, ReplayStoreError>,
    ) -> StateOf<S, St, ReqBody, ResBody> {
        match answer {
            Ok(Claim::Claimed(token)) => {
                self.claim = Some(token);
                self.call(ReplayOutcome::First)
            }
            Ok(Claim::TooManyDeliveries) => {
                // A flood of replays must not become a flood of lines.
                if let Some(unrecorded) = self.settings.unrecorded_log.count() {
                    tracing::warn!(
                        target: TRACING_TARGET,
                        max_deliveries = self.settings.max_deliveries,
                        unrecorded,
                        "signed voice requests had more deliveries with new idempotency tokens \
                         than the replay guard tells apart in its delivery window (a long menu \
                         loop, or replays with made-up tokens): those past the bound run \
                         unrecorded (`unrecorded` counts them since the last such line; at most \
                         one a minute)"
                    );
                }
                self.call(ReplayOutcome::Unrecorded)
            }
            Ok(Claim::Done(answer)) => {
                crate::metrics::replay_copy();
                self.report(RejectionKind::ReplayCopy, Outcome::Copy);
                finished(self.copy(&answer))
            }
            Ok(Claim::InFlight) => State::Waiting {
                wait: self.settings.store.wait(&self.key, self.waits),
            },
            Err(error) => self.store_failed(error),
        }
    }

    /// The answer to a copy: the stored one, or an empty one when only "done" was kept.
    fn copy(&self, answer: &StoredAnswer) -> Response<ResponseBody<ResBody>> {
        let mut response = match answer.body() {
            Some(body) => {
                let mut response = Response::new(ResponseBody::full(body.clone()));
                *response.status_mut() = answer.status();
                if let Some(content_type) = answer.content_type() {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, content_type.clone());
                }
                response
            }
            None => empty_answer(self.covered).map(ResponseBody::full),
        };
        let rejection = Rejection::new(RejectionKind::ReplayCopy);
        response.extensions_mut().insert(rejection);
        response.extensions_mut().insert(ReplayOutcome::Copy);
        response
    }

    /// Reports a security event about this request to the layer's sink, before or after the
    /// inner service took it.
    fn report(&self, kind: RejectionKind, outcome: Outcome) {
        if let Held::Request(request) = &self.held {
            report(&self.settings, request, kind, outcome);
        } else if let Held::About(about) = &self.held {
            let mut headers = HeaderMap::new();
            let named = [
                (header::USER_AGENT, &about.user_agent),
                (crate::events::REQUEST_ID_HEADER, &about.request_id),
            ];
            for (name, value) in named {
                if let Some(value) = value {
                    headers.insert(name, value.clone());
                }
            }
            let head = (&about.method, &headers);
            let event = event_about(kind, outcome, head, about.webhook.as_ref(), "");
            self.settings.sink.on_security_event(&event);
        }
    }

    fn store_failed(&mut self, error: ReplayStoreError) -> StateOf<S, St, ReqBody, ResBody> {
        crate::metrics::replay_degraded("store_failed");
        match self.settings.on_store_failure {
            // The event is the one ERROR report; the store's error adds its cause.
            StoreFailure::RunUnguarded => {
                tracing::debug!(
                    target: TRACING_TARGET,
                    %error,
                    "the replay store failed: the webhook runs without a replay check"
                );
                let kind = RejectionKind::ReplayStoreFailed;
                self.report(kind, Outcome::PassedWithoutReplayCheck);
                self.call(ReplayOutcome::RanUnguarded)
            }
            StoreFailure::Refuse => {
                tracing::debug!(
                    target: TRACING_TARGET,
                    %error,
                    "the replay store failed: the webhook is refused with 503"
                );
                let kind = RejectionKind::ReplayStoreFailed;
                self.report(kind, Outcome::Rejected);
                let outcome = ReplayOutcome::StoreRefused;
                finished(refusal(kind, Some(Box::new(error)), outcome))
            }
        }
    }

    /// The copy waited as long as it may and the first attempt still runs.
    fn wait_ran_out(&mut self) -> StateOf<S, St, ReqBody, ResBody> {
        tracing::warn!(
            target: TRACING_TARGET,
            wait_ms = self.settings.wait.as_millis() as u64,
            "a copy waited for the first attempt until its bound and got 409; the first \
             attempt keeps running and its answer is stored for later copies"
        );
        crate::metrics::replay_degraded("wait_ran_out");
        let kind = RejectionKind::ReplayInFlight;
        self.report(kind, Outcome::Rejected);
        finished(refusal(kind, None, ReplayOutcome::WaitRanOut))
    }

    /// Calls the inner service; its answer will be marked `outcome`.
    fn call(&mut self, outcome: ReplayOutcome) -> StateOf<S, St, ReqBody, ResBody> {
        self.outcome = outcome;
        let Held::Request(request) = mem::replace(&mut self.held, Held::Neither) else {
            panic!("{POLLED_AFTER_COMPLETION}");
        };
        if self.claim.is_some() {
            // Only a claimed request is recorded afterwards, and can fail to be.
            self.held = Held::About(About::of(&request));
        }
        State::Running {
            future: self.inner.call(request),
        }
    }

    /// The inner service answered: read a 2xx answer for the store, or let the claim go.
    fn answered(
        &mut self,
        result: Result<Response<ResBody>, S::Error>,
        cx: &mut Context<'_>,
    ) -> StateOf<S, St, ReqBody, ResBody>
    where
        ResBody: Body + Unpin,
        ResBody::Error: Into<BoxError>,
    {
        let outcome = self.outcome;
        let result = result.map(|mut response| {
            response.extensions_mut().insert(outcome);
            response
        });
        let Some(token) = self.claim else {
            // Unguarded (the store failed) or unrecorded: nothing to record.
            return State::Finished {
                result: Some(result.map(|r| r.map(ResponseBody::inner))),
            };
        };
        match result {
            Ok(response) if response.status().is_success() => {
                // The handler has acted: from here on the webhook is never released.
                self.on_drop = OnDrop::CutAnswer(response.status());
                let (parts, mut body) = response.into_parts();
                let mut collector = AnswerCollector::default();
                // A body that is there already (a TwiML document) is read at once, without
                // a state of its own to move the response through.
                let limit = self.settings.max_answer_bytes;
                match collector.poll_collect(Pin::new(&mut body), limit, cx) {
                    Poll::Ready(collected) => self.read(parts, body, collected),
                    Poll::Pending => State::Reading {
                        body: Some(body),
                        collector,
                        parts: Some(parts),
                    },
                }
            }
            result => self.release(token, result.map(|r| r.map(ResponseBody::inner))),
        }
    }

    /// Releases the claim (held until the store has released it), then hands on `result`.
    fn release(
        &mut self,
        token: ClaimToken,
        result: Result<Response<ResponseBody<ResBody>>, S::Error>,
    ) -> StateOf<S, St, ReqBody, ResBody> {
        State::Releasing {
            release: self.settings.store.release(&self.key, token),
            result: Some(result),
        }
    }

    /// The 2xx answer's body was read: store it (or "done" only) and hand it on.
    fn read(
        &mut self,
        parts: Parts,
        body: ResBody,
        collected: Collected,
    ) -> StateOf<S, St, ReqBody, ResBody> {
        let token = self.claim.expect("only a claimed request is read");
        let status = parts.status;
        let (answer, response_body) = match collected {
            Collected::Whole(bytes) => {
                let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
                let answer = StoredAnswer::new(status, content_type, bytes.clone());
                (answer, ResponseBody::full(bytes))
            }
            Collected::Partial(prefix, held @ Some(Err(_))) => {
                // The body failed half-way, but the handler answered 2xx: it has acted. The
                // client gets what was read, then the error; the webhook is done.
                cut_answer_read();
                let answer = StoredAnswer::done_only(status);
                (answer, ResponseBody::rest(prefix, held, body))
            }
            Collected::Partial(prefix, held) => {
                tracing::warn!(
                    target: TRACING_TARGET,
                    max_answer_bytes = self.settings.max_answer_bytes,
                    "an answer larger than the replay guard's bound (or with trailers) is not \
                     stored: its copies get an empty answer"
                );
                let answer = StoredAnswer::done_only(status);
                (answer, ResponseBody::rest(prefix, held, body))
            }
        };
        // A store that answers later (Redis, PostgreSQL) may see the request dropped before:
        // the answer is stored all the same.
        self.on_drop = OnDrop::Complete(answer.clone());
        let record = self.record(answer);
        State::Completing {
            complete: self.settings.store.complete(&self.key, token, record),
            response: Some(Response::from_parts(parts, response_body)),
        }
    }

    /// While the handler runs: renew the claim every two fifths of the lease.
    fn poll_renewal(
        &mut self,
        mut renew_at: Pin<&mut Option<Sleep>>,
        mut renewal: Pin<&mut Option<St::RenewFuture>>,
        cx: &mut Context<'_>,
    ) {
        let Some(token) = self.claim else { return };
        let every = self.settings.renew_every();
        loop {
            if let Some(pending) = renewal.as_mut().as_pin_mut() {
                let Poll::Ready(renewed) = pending.poll(cx) else {
                    return;
                };
                renewal.set(None);
                match renewed {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        target: TRACING_TARGET,
                        "a replay claim lapsed while its handler ran: a copy may run too"
                    ),
                    Err(error) => tracing::warn!(
                        target: TRACING_TARGET,
                        %error,
                        "a replay claim could not be renewed; retrying at the next interval"
                    ),
                }
            }
            match renew_at.as_mut().as_pin_mut() {
                None => renew_at.set(Some(tokio::time::sleep(every))),
                Some(mut sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return;
                    }
                    sleep.reset(Instant::now() + every);
                    let settings = &self.settings;
                    let renew = settings.store.renew(&self.key, token, settings.lease);
                    renewal.set(Some(renew));
                }
            }
        }
    }
}

impl<S, St: ReplayStore, ReqBody> InFlight<S, St, ReqBody> {
    /// The request is dropped: settles a claim it still holds as [`OnDrop`] says.
    fn settle_on_drop(&mut self) {
        let Some(token) = self.claim.take() else {
            return;
        };
        let answer = match std::mem::replace(&mut self.on_drop, OnDrop::Release) {
            OnDrop::Release => {
                self.settings.store.release_detached(&self.key, token);
                return;
            }
            OnDrop::CutAnswer(status) => {
                cut_answer_read();
                StoredAnswer::done_only(status)
            }
            OnDrop::Complete(answer) => answer,
        };
        let record = self.record(answer);
        self.settings
            .store
            .complete_detached(&self.key, token, record);
    }

    /// What the store records for this request's `answer`: kept for the delivery window for
    /// one delivery, else the window.
    fn record(&self, answer: StoredAnswer) -> Record {
        let settings = &self.settings;
        let window = match self.deliveries {
            Some(_) => settings.delivery_period(),
            None => settings.window,
        };
        Record { answer, window }
    }
}

/// Reports, once per request, a 2xx answer the guard could not read whole: the handler has
/// acted, so the webhook is recorded as done without its answer, as a larger-than-the-bound
/// answer is, and its copies get the empty answer.
fn cut_answer_read() {
    tracing::warn!(
        target: TRACING_TARGET,
        "a 2xx answer was cut before the replay guard read it whole (the client went away, or \
         the body failed): the webhook is recorded as done without its answer, so the handler \
         does not run again and its copies get an empty answer"
    );
}

/// Claims `key`, counting it under `deliveries` when it is one delivery of a webhook.
fn claim<St: ReplayStore>(
    settings: &Settings<St>,
    key: &ReplayKey,
    deliveries: Option<&ReplayKey>,
) -> St::ClaimFuture {
    let (store, lease) = (&settings.store, settings.lease);
    let Some(&deliveries) = deliveries else {
        return store.claim(key, lease);
    };
    store.claim_delivery(&DeliveryClaim {
        key: *key,
        deliveries,
        max: settings.max_deliveries,
        period: settings.delivery_period(),
        lease,
    })
}

fn finished<CF, WF, SF, B, KF, XF, E>(
    response: Response<ResponseBody<B>>,
) -> State<CF, WF, SF, B, KF, XF, E> {
    State::Finished {
        result: Some(Ok(response)),
    }
}

/// The default rejection response for `kind`, with the typed reason and the guard's
/// `outcome` in its extensions.
fn refusal<B>(
    kind: RejectionKind,
    source: Option<BoxError>,
    outcome: ReplayOutcome,
) -> Response<ResponseBody<B>> {
    let rejection = match source {
        Some(source) => Rejection::with_source(kind, source),
        None => Rejection::new(kind),
    };
    let mut response = crate::rejection::default_response(&rejection);
    response.extensions_mut().insert(rejection);
    response.extensions_mut().insert(outcome);
    response.map(ResponseBody::full)
}

/// Reports one security event about `request` to the layer's sink: its verified URL, client,
/// tenant and account when the signature layer left them, else its target as received.
fn report<B, St>(
    settings: &Settings<St>,
    request: &Request<B>,
    kind: RejectionKind,
    outcome: Outcome,
) {
    let head = (request.method(), request.headers());
    let webhook = request.extensions().get::<VerifiedWebhook>();
    let target = match webhook {
        Some(_) => String::new(),
        None => request.uri().to_string(),
    };
    let event = event_about(kind, outcome, head, webhook, &target);
    settings.sink.on_security_event(&event);
}

/// The event about a request: its verified URL, client, tenant and account when the signature
/// layer left them, else `target`, the request target as received.
fn event_about(
    kind: RejectionKind,
    outcome: Outcome,
    head: (&http::Method, &HeaderMap),
    webhook: Option<&VerifiedWebhook>,
    target: &str,
) -> SecurityEvent {
    match webhook {
        Some(webhook) => {
            let about = (
                webhook.tenant_id_arc().cloned(),
                webhook.account_sid_arc().cloned(),
            );
            let (url, client_ip) = (webhook.url(), webhook.client_ip());
            SecurityEvent::about(kind, outcome, head, url, client_ip, about)
        }
        None => SecurityEvent::about(kind, outcome, head, target, None, (None, None)),
    }
}

/// The answer to a copy whose first answer was larger than the bound (only "done" was
/// stored): `200` with an empty TwiML document for a form or `GET` webhook (a message or call
/// webhook expects TwiML; an empty `<Response/>` does nothing), `204` for a `bodySHA256` one.
fn empty_answer(covered: Covered) -> Response<Bytes> {
    if covered == Covered::BodySha256 {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return response;
    }
    let mut response = Response::new(Bytes::from_static(
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
    ));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

impl<S, St, ReqBody, ResBody> std::fmt::Debug for ResponseFuture<S, St, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
    St: ReplayStore,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("key", &self.request.key)
            .field("claimed", &self.request.claim.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::{replay::MemoryStore, replay_guard::ReplayGuardLayer};

    /// A verified webhook as the signature layer leaves it, but without the signature.
    fn webhook_without_signature() -> VerifiedWebhook {
        VerifiedWebhook::for_tests("https://example.com/sms", Covered::UrlOnly, None, None)
    }

    #[tokio::test]
    async fn a_webhook_without_a_signature_is_never_keyed_on_empty_bytes() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&events);
        let guard = ReplayGuardLayer::new(MemoryStore::default()).on_security_event(
            move |event: &SecurityEvent| record.lock().unwrap().push(event.reason),
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&calls);
        let service = ServiceBuilder::new()
            .layer(guard)
            .service_fn(move |_: Request<()>| {
                count.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
            });
        // Two different requests: neither may pass for a copy of the other.
        for _ in 0..2 {
            let mut request = Request::new(());
            request.extensions_mut().insert(webhook_without_signature());
            let response = service.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let rejection = response.extensions().get::<Rejection>().unwrap();
            assert_eq!(rejection.kind(), RejectionKind::ReplayGuardMisplaced);
            assert_eq!(
                response.extensions().get::<ReplayOutcome>(),
                Some(&ReplayOutcome::Misplaced)
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(
            *events.lock().unwrap(),
            [RejectionKind::ReplayGuardMisplaced; 2]
        );
    }

    #[test]
    fn the_empty_answer_stops_twilio_retrying_without_doing_anything() {
        for covered in [Covered::FormParams, Covered::UrlOnly] {
            let twiml = empty_answer(covered);
            assert_eq!(twiml.status(), StatusCode::OK);
            assert_eq!(
                twiml.headers()[header::CONTENT_TYPE],
                "text/xml; charset=utf-8"
            );
            assert!(twiml.body().ends_with(b"<Response/>"));
        }
        let json = empty_answer(Covered::BodySha256);
        assert_eq!(json.status(), StatusCode::NO_CONTENT);
        assert!(json.body().is_empty());
    }
}
