//! [`ResponseFuture`]: drives one request through the [`pipeline`](crate::pipeline): collect
//! the body, ask the resolver, claim the webhook in the [replay guard](crate::replay)'s store
//! if there is one, then call the inner service (and record its answer in the store) or answer
//! with the rejection.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response, request::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{
    BoxError, ResolveCredentials,
    body::{Collector, ResponseBody, VerifiedBody},
    diagnoses::Case,
    events::{
        OnSecurityEvent, Outcome, SecurityEvent, TRACING_TARGET,
        log::{Lifecycle, WebhookStage},
    },
    layer::Shared,
    pipeline::{self, Consult, Inbound, Prepared, Refusal, Verified},
    public_url::RebuiltUrl,
    rejection::{Rejection, RejectionKind, RejectionResponse},
    replay::{self, Admit, ClaimToken, MemoryStore, ReplayGuard, ReplayKey, ReplayStore},
    resolver::ResolveRequest,
    verified_webhook::VerifiedWebhook,
};

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

pin_project! {
    /// The response future of [`TwilioSignature`](crate::TwilioSignature): a state machine
    /// that reads the body, resolves credentials, verifies, claims the webhook in the replay
    /// store (with a [`ReplayGuard`]), and then runs the inner service or answers with the
    /// rejection response. Nothing is boxed.
    pub struct ResponseFuture<S, R, E, T, B, St = MemoryStore>
    where
        S: Service<Request<VerifiedBody>>,
        R: ResolveCredentials,
        St: ReplayStore,
    {
        #[pin]
        state: State<
            B,
            R::Future,
            S::Future,
            St::ClaimFuture,
            St::CompleteFuture,
            St::ReleaseFuture,
            Result<S::Response, S::Error>,
        >,
        request: InFlight<S, R, E, T, St>,
    }

    impl<S, R, E, T, B, St> PinnedDrop for ResponseFuture<S, R, E, T, B, St>
    where
        S: Service<Request<VerifiedBody>>,
        R: ResolveCredentials,
        St: ReplayStore,
    {
        fn drop(this: Pin<&mut Self>) {
            // Dropped while holding a replay claim (the client went away before the inner
            // service answered): let Twilio's retry through.
            this.project().request.release_claim_on_drop();
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B, RF, SF, CF, KF, XF, O> {
        Collecting {
            #[pin]
            body: B,
            collector: Collector,
            parts: Option<Parts>,
        },
        Resolving {
            // Dropped as soon as it answers, so that it lets go of the resolver's view of the
            // request and the parts come back without a copy.
            #[pin]
            resolution: Option<RF>,
            asked: Option<(ResolveRequest, Prepared, Bytes)>,
        },
        // Verified (the `VerifiedWebhook` is in the parts' extensions); the replay store is
        // asked whether this webhook is new.
        Claiming {
            #[pin]
            claim: CF,
            held: Option<(Parts, Bytes, ReplayKey)>,
        },
        Inner {
            #[pin]
            future: SF,
        },
        // The inner service answered 2xx: the store records the webhook as done.
        Completing {
            #[pin]
            complete: KF,
            result: Option<O>,
        },
        // The inner service failed: the store lets the claim go, so that a retry runs.
        Releasing {
            #[pin]
            release: XF,
            result: Option<O>,
        },
        // The middleware answers itself.
        Refused {
            answer: Option<Answer>,
        },
    }
}

/// What the middleware answers without the inner service.
enum Answer {
    /// A refusal: its response is built when it is sent, by the layer's
    /// [`RejectionResponse`], which knows the inner service's body type.
    Rejected(Rejection),
    /// The replay guard's answer to a duplicate, with its [`Rejection`] in the extensions.
    Duplicate(Response<Bytes>),
}

/// What the future holds for the request whatever its state: the services, the settings, the
/// URL it is verified against, its webhook log, and the replay claim it holds.
struct InFlight<S, R, E, T, St> {
    inner: S,
    resolver: R,
    shared: Arc<Shared<E, T, St>>,
    url: RebuiltUrl,
    lifecycle: Lifecycle,
    /// Held from the claim until the store has recorded or released it.
    claim: Option<(ReplayKey, ClaimToken)>,
    /// When the resolver was asked, for the credential-lookup histogram.
    #[cfg(feature = "metrics")]
    asked_at: Option<std::time::Instant>,
}

type StateOf<S, R, St, B> = State<
    B,
    <R as ResolveCredentials>::Future,
    <S as Service<Request<VerifiedBody>>>::Future,
    <St as ReplayStore>::ClaimFuture,
    <St as ReplayStore>::CompleteFuture,
    <St as ReplayStore>::ReleaseFuture,
    Result<
        <S as Service<Request<VerifiedBody>>>::Response,
        <S as Service<Request<VerifiedBody>>>::Error,
    >,
>;

impl<S, R, E, T, B, St, ResBody> ResponseFuture<S, R, E, T, B, St>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent + Send + Sync + 'static,
    T: RejectionResponse<ResBody>,
    B: Body,
    B::Error: Into<BoxError>,
    St: ReplayStore,
{
    pub(crate) fn new(
        request: Request<B>,
        inner: S,
        resolver: R,
        shared: Arc<Shared<E, T, St>>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        let config = &shared.config;
        let lifecycle = Lifecycle::received(config.webhook_log.as_ref(), &parts);
        let admission = pipeline::admit(&parts, &body.size_hint(), config);
        let mut request = InFlight {
            inner,
            resolver,
            url: admission.url,
            lifecycle,
            shared,
            claim: None,
            #[cfg(feature = "metrics")]
            asked_at: None,
        };
        let state = match admission.verdict {
            Ok(()) => State::Collecting {
                body,
                collector: Collector::default(),
                parts: Some(parts),
            },
            Err(refusal) => request.refuse(&parts, refusal),
        };
        Self { state, request }
    }
}

impl<S, R, E, T, B, St, ResBody> Future for ResponseFuture<S, R, E, T, B, St>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent + Send + Sync + 'static,
    T: RejectionResponse<ResBody>,
    B: Body,
    B::Error: Into<BoxError>,
    St: ReplayStore,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let request = this.request;
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Collecting {
                    body,
                    collector,
                    parts,
                } => {
                    let limit = request.shared.config.max_body_size;
                    let collected = ready!(collector.poll_collect(body, limit, cx));
                    let parts = parts.take().expect(POLLED_AFTER_COMPLETION);
                    match collected {
                        Ok(body) => request.prepare(parts, body),
                        Err(error) => request.refuse(&parts, error.into()),
                    }
                }
                StateProj::Resolving {
                    mut resolution,
                    asked,
                } => {
                    let future = resolution.as_mut().as_pin_mut();
                    let answer = ready!(future.expect(POLLED_AFTER_COMPLETION).poll(cx));
                    resolution.set(None);
                    #[cfg(feature = "metrics")]
                    request.lookup_answered(&answer);
                    let (view, prepared, body) = asked.take().expect(POLLED_AFTER_COMPLETION);
                    let parts = view.into_parts();
                    let inbound = Inbound {
                        parts: &parts,
                        body: &body,
                        url: &request.url,
                    };
                    match pipeline::complete(inbound, prepared, answer, &request.shared.config) {
                        Ok(verified) => request.pass(parts, body, verified),
                        Err(refusal) => request.fail(parts, body, refusal),
                    }
                }
                StateProj::Claiming { claim, held } => {
                    let answer = ready!(claim.poll(cx));
                    let (parts, body, key) = held.take().expect(POLLED_AFTER_COMPLETION);
                    request.admit(parts, body, key, answer)
                }
                StateProj::Inner { future } => {
                    let result = ready!(future.poll(cx));
                    let status = result.as_ref().ok().map(Response::status);
                    // A copy the ReplayGuardLayer inside answered with the stored answer is a
                    // duplicate, not a second processing.
                    let suppressed = result.as_ref().is_ok_and(|response| {
                        response
                            .extensions()
                            .get::<Rejection>()
                            .is_some_and(|r| r.kind() == RejectionKind::ReplaySuppressed)
                    });
                    if suppressed {
                        request.lifecycle.duplicate();
                    } else {
                        request.lifecycle.answered(status);
                    }
                    match request.settle(status) {
                        Settle::Nothing => {
                            return Poll::Ready(result.map(|r| r.map(ResponseBody::inner)));
                        }
                        Settle::Complete(complete) => State::Completing {
                            complete,
                            result: Some(result),
                        },
                        Settle::Release(release) => State::Releasing {
                            release,
                            result: Some(result),
                        },
                    }
                }
                StateProj::Completing { complete, result } => {
                    if let Err(error) = ready!(complete.poll(cx)) {
                        tracing::error!(
                            target: TRACING_TARGET,
                            event_type = RejectionKind::ReplayStoreFailed.as_str(),
                            %error,
                            "a processed webhook could not be recorded in the replay store: \
                             a copy arriving after the claim's lease would run again"
                        );
                    }
                    let result = result.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(result.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Releasing { release, result } => {
                    if let Err(error) = ready!(release.poll(cx)) {
                        tracing::warn!(
                            target: TRACING_TARGET,
                            %error,
                            "a replay claim could not be released: Twilio's retries get 409 \
                             until its lease runs out"
                        );
                    }
                    request.claim = None;
                    let result = result.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(result.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Refused { answer } => {
                    let response = match answer.take().expect(POLLED_AFTER_COMPLETION) {
                        Answer::Rejected(rejection) => {
                            let rejection_response = &request.shared.rejection;
                            let mut response = rejection_response.rejection_response(&rejection);
                            response.extensions_mut().insert(rejection);
                            response
                        }
                        Answer::Duplicate(response) => response.map(ResponseBody::rejection),
                    };
                    return Poll::Ready(Ok(response));
                }
            };
            this.state.set(next);
        }
    }
}

/// What the store is told once the inner service answered.
enum Settle<KF, XF> {
    /// No claim is held (no guard, or it failed open).
    Nothing,
    Complete(KF),
    Release(XF),
}

impl<S, R, E, T, St> InFlight<S, R, E, T, St>
where
    S: Service<Request<VerifiedBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent + Send + Sync + 'static,
    St: ReplayStore,
{
    /// The body is in: run the checks that need no secret, then ask the resolver.
    fn prepare<B>(&mut self, parts: Parts, body: Bytes) -> StateOf<S, R, St, B> {
        let inbound = Inbound {
            parts: &parts,
            body: &body,
            url: &self.url,
        };
        match pipeline::prepare(inbound, &self.shared.config) {
            Ok(prepared) => {
                #[cfg(feature = "metrics")]
                {
                    self.asked_at = Some(std::time::Instant::now());
                }
                let view = prepared.resolve_request(parts);
                State::Resolving {
                    resolution: Some(self.resolver.resolve(view.clone())),
                    asked: Some((view, prepared, body)),
                }
            }
            Err(refusal) => self.fail(parts, body, refusal),
        }
    }

    /// Verified: the inner service gets the request with its [`VerifiedWebhook`] context, or
    /// first the replay store is asked whether the webhook is new.
    fn pass<B>(
        &mut self,
        mut parts: Parts,
        body: Bytes,
        verified: Verified,
    ) -> StateOf<S, R, St, B> {
        // Without a replay guard nothing is refused from here on, and the URL moves into the
        // context; with one, a refusal's event needs it.
        let url = if self.shared.replay.is_some() {
            self.url.url.clone()
        } else {
            std::mem::take(&mut self.url.url)
        };
        let webhook = verified.into_webhook(url);
        #[cfg(feature = "metrics")]
        crate::metrics::verified(webhook.tenant_id());
        self.lifecycle.verified(&webhook);
        let claim = self.shared.replay.as_ref().map(|guard| {
            let key = replay::replay_key(&webhook, &parts.headers);
            (guard.store.claim(&key, guard.lease), key)
        });
        parts.extensions.insert(webhook);
        match claim {
            None => self.call(parts, body),
            Some((claim, key)) => State::Claiming {
                claim,
                held: Some((parts, body, key)),
            },
        }
    }

    /// The replay store answered the claim of a verified request.
    fn admit<B>(
        &mut self,
        parts: Parts,
        body: Bytes,
        key: ReplayKey,
        answer: Result<replay::Claim, replay::ReplayStoreError>,
    ) -> StateOf<S, R, St, B> {
        let guard = self.guard();
        let webhook = parts
            .extensions
            .get::<VerifiedWebhook>()
            .expect("a claimed request is verified");
        match guard.admit(answer) {
            Admit::Run(token) => {
                self.claim = Some((key, token));
                self.call(parts, body)
            }
            Admit::Duplicate => {
                let mut response = guard.duplicate(webhook);
                let kind = RejectionKind::ReplaySuppressed;
                response.extensions_mut().insert(Rejection::new(kind));
                let refusal = Refusal::of_verified(kind, None, webhook);
                self.report(&parts, &refusal, Outcome::Suppressed);
                State::Refused {
                    answer: Some(Answer::Duplicate(response)),
                }
            }
            Admit::Refuse(kind, source) => {
                let refusal = Refusal::of_verified(kind, source, webhook);
                self.refuse(&parts, refusal)
            }
            Admit::RunUnguarded(error) => {
                let kind = RejectionKind::ReplayStoreFailed;
                let refusal = Refusal::of_verified(kind, Some(error.into()), webhook);
                self.report(&parts, &refusal, Outcome::PassedWithoutReplayCheck);
                self.call(parts, body)
            }
        }
    }

    /// The inner service answered (`None`: with an error): record the webhook as done, or let
    /// the claim go.
    fn settle(
        &mut self,
        status: Option<http::StatusCode>,
    ) -> Settle<St::CompleteFuture, St::ReleaseFuture> {
        let Some((key, token)) = self.claim else {
            return Settle::Nothing;
        };
        let guard = self.guard();
        if replay::answer_is_done(status) {
            let done = replay::StoredAnswer::done_only(status.unwrap_or_default());
            let complete = guard.store.complete(&key, token, done, guard.window);
            // Not released if dropped from here on: the handler succeeded.
            self.claim = None;
            Settle::Complete(complete)
        } else {
            Settle::Release(guard.store.release(&key, token))
        }
    }

    fn guard(&self) -> &ReplayGuard<St> {
        self.shared
            .replay
            .as_ref()
            .expect("a replay claim is made only with a guard")
    }

    /// Verification failed: refuse, or in report-only mode report it and pass the request on.
    /// Either way a signature mismatch then goes to the mismatch doctor, when it is on.
    fn fail<B>(&mut self, parts: Parts, body: Bytes, mut refusal: Refusal) -> StateOf<S, R, St, B> {
        // Taken from this second's budget here, before anything is copied for it.
        let consult = refusal.consult.take().filter(|_| self.doctor_takes_one());
        if !(self.shared.config.report_only && refusal.passes_in_report_only_mode()) {
            let (state, event) = self.refuse_reporting(&parts, refusal);
            self.consult(consult, parts, body, event);
            return state;
        }
        let event = self.report(&parts, &refusal, Outcome::PassedInReportOnlyMode);
        if consult.is_some() {
            // The inner service gets the request: the doctor gets a copy.
            let (mut copy, ()) = Request::new(()).into_parts();
            copy.method = parts.method.clone();
            copy.uri = parts.uri.clone();
            copy.headers = parts.headers.clone();
            copy.extensions = parts.extensions.clone();
            self.consult(consult, copy, body.clone(), event);
        }
        self.call(parts, body)
    }

    /// Refuses: one security event, the webhook log's final stage, and then the rejection
    /// response with the [`Rejection`](crate::Rejection) in its extensions.
    fn refuse<B>(&mut self, parts: &Parts, refusal: Refusal) -> StateOf<S, R, St, B> {
        self.refuse_reporting(parts, refusal).0
    }

    /// [`refuse`](Self::refuse), and the event it reported.
    fn refuse_reporting<B>(
        &mut self,
        parts: &Parts,
        refusal: Refusal,
    ) -> (StateOf<S, R, St, B>, SecurityEvent) {
        let event = self.report(parts, &refusal, Outcome::Rejected);
        let state = State::Refused {
            answer: Some(Answer::Rejected(refusal.into_rejection())),
        };
        (state, event)
    }

    /// Whether the mismatch doctor is on and this second's budget has a diagnosis left (which
    /// this takes).
    fn doctor_takes_one(&self) -> bool {
        let doctor = self.shared.config.diagnoses.as_ref();
        doctor.is_some_and(|doctor| doctor.try_take())
    }

    /// Hands a refused request to the mismatch doctor (when `consult` says so): moved, not
    /// copied, with what it takes to report the diagnosis, to run on the doctor's thread. The
    /// same for a known account as for an unknown one (whose dummy key explains nothing), so
    /// that the request path does not tell them apart.
    fn consult(
        &mut self,
        consult: Option<Consult>,
        parts: Parts,
        body: Bytes,
        event: SecurityEvent,
    ) {
        let (Some(consult), Some(doctor)) = (consult, &self.shared.config.diagnoses) else {
            return;
        };
        let config = &self.shared.config;
        let case = Case {
            parts,
            body,
            url: std::mem::take(&mut self.url.url),
            credentials: consult.credentials,
            shared_key_id: consult.shared_key_id,
            max_params: config.max_params,
            original_uri: config.original_uri.clone(),
            peer_addr: Arc::clone(&config.peer_addr),
        };
        let sink = Arc::clone(&self.shared.sink);
        let log = self.lifecycle.follow_up();
        doctor.submit(Box::new(move || {
            let Some(diagnosis) = case.diagnose() else {
                return;
            };
            let diagnosis = Arc::new(diagnosis);
            sink.on_security_event(&event.diagnosed(Arc::clone(&diagnosis)));
            if let Some(log) = log {
                log.diagnosed(diagnosis);
            }
        }));
    }

    /// Records how long the resolver took, and how it answered.
    #[cfg(feature = "metrics")]
    fn lookup_answered(&self, answer: &crate::resolver::Resolution) {
        use crate::metrics::{Lookup, credential_lookup};
        let Some(asked_at) = self.asked_at else {
            return;
        };
        let outcome = match answer {
            Ok(Some(_)) => Lookup::Found,
            Ok(None) => Lookup::Unknown,
            Err(_) => Lookup::Failed,
        };
        credential_lookup(outcome, asked_at.elapsed());
    }

    /// Reports a refusal (or a request passed on despite one): the security event, which it
    /// returns, and the webhook log's stage.
    fn report(&mut self, parts: &Parts, refusal: &Refusal, outcome: Outcome) -> SecurityEvent {
        #[cfg(feature = "metrics")]
        match outcome {
            Outcome::Rejected | Outcome::PassedInReportOnlyMode => {
                crate::metrics::refused(refusal.kind, refusal.tenant_id.as_deref());
            }
            Outcome::Suppressed => crate::metrics::replay_suppressed(),
            // Verified and run: counted as verified; the ERROR event says the store failed.
            // A diagnosis is not reported here.
            Outcome::PassedWithoutReplayCheck | Outcome::Diagnosed => {}
        }
        let (tenant_id, account_sid) = (refusal.tenant_id.as_ref(), refusal.account_sid.as_ref());
        let event = SecurityEvent::new(
            refusal.kind,
            outcome,
            parts,
            &self.url,
            tenant_id.cloned(),
            account_sid.cloned(),
        );
        self.shared.sink.on_security_event(&event);
        let stage = match outcome {
            Outcome::Rejected => WebhookStage::Rejected(refusal.kind),
            Outcome::PassedInReportOnlyMode => WebhookStage::PassedInReportOnlyMode(refusal.kind),
            Outcome::Suppressed => {
                self.lifecycle.duplicate();
                return event;
            }
            // Verified already; the inner service's answer is the next stage.
            Outcome::PassedWithoutReplayCheck | Outcome::Diagnosed => return event,
        };
        self.lifecycle
            .failed_verification(stage, tenant_id, account_sid);
        event
    }

    fn call<B>(&mut self, parts: Parts, body: Bytes) -> StateOf<S, R, St, B> {
        let request = Request::from_parts(parts, VerifiedBody::new(body));
        State::Inner {
            future: self.inner.call(request),
        }
    }
}

impl<S, R, E, T, St> InFlight<S, R, E, T, St>
where
    St: ReplayStore,
{
    fn release_claim_on_drop(&mut self) {
        if let (Some((key, token)), Some(guard)) = (self.claim.take(), &self.shared.replay) {
            guard.store.release_detached(&key, token);
        }
    }
}
