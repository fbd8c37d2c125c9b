//! [`ResponseFuture`]: drives one request through the [`pipeline`](crate::pipeline): collect
//! the body, ask the resolver, then call the inner service or answer with the rejection.

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
        OnSecurityEvent, Outcome, SecurityEvent,
        log::{Lifecycle, WebhookStage},
    },
    layer::Shared,
    pipeline::{self, Consult, Inbound, Prepared, Refusal, Verified},
    public_url::RebuiltUrl,
    rejection::{Rejection, RejectionResponse},
    replay_guard::ReplayOutcome,
    resolver::ResolveRequest,
};

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

pin_project! {
    /// The response future of [`TwilioSignature`](crate::TwilioSignature): a state machine
    /// that reads the body, resolves credentials, verifies, and then runs the inner service or
    /// answers with the rejection response. Nothing is boxed.
    pub struct ResponseFuture<S, R, E, T, B>
    where
        S: Service<Request<VerifiedBody>>,
        R: ResolveCredentials,
    {
        #[pin]
        state: State<B, R::Future, S::Future>,
        request: InFlight<S, R, E, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B, RF, SF> {
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
        Inner {
            #[pin]
            future: SF,
        },
        // The middleware answers itself: the response is built when it is sent, by the
        // layer's [`RejectionResponse`], which knows the inner service's body type.
        Refused {
            rejection: Option<Rejection>,
        },
    }
}

/// What the future holds for the request whatever its state: the services, the settings, the
/// URL it is verified against, and its webhook log.
struct InFlight<S, R, E, T> {
    inner: S,
    resolver: R,
    shared: Arc<Shared<E, T>>,
    url: RebuiltUrl,
    lifecycle: Lifecycle,
    /// When the resolver was asked, for the credential-lookup histogram.
    #[cfg(feature = "metrics")]
    asked_at: Option<std::time::Instant>,
}

type StateOf<S, R, B> =
    State<B, <R as ResolveCredentials>::Future, <S as Service<Request<VerifiedBody>>>::Future>;

impl<S, R, E, T, B, ResBody> ResponseFuture<S, R, E, T, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent + Send + Sync + 'static,
    T: RejectionResponse<ResBody>,
    B: Body,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        request: Request<B>,
        inner: S,
        resolver: R,
        shared: Arc<Shared<E, T>>,
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

impl<S, R, E, T, B, ResBody> Future for ResponseFuture<S, R, E, T, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent + Send + Sync + 'static,
    T: RejectionResponse<ResBody>,
    B: Body,
    B::Error: Into<BoxError>,
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
                StateProj::Inner { future } => {
                    let result = ready!(future.poll(cx));
                    match &result {
                        // The replay guard behind answered a copy with the first answer.
                        Ok(response)
                            if ReplayOutcome::of(response) == Some(ReplayOutcome::Copy) =>
                        {
                            request.lifecycle.duplicate();
                        }
                        result => request
                            .lifecycle
                            .answered(result.as_ref().ok().map(Response::status)),
                    }
                    return Poll::Ready(result.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Refused { rejection } => {
                    let rejection = rejection.take().expect(POLLED_AFTER_COMPLETION);
                    let mut response = request.shared.rejection.rejection_response(&rejection);
                    response.extensions_mut().insert(rejection);
                    return Poll::Ready(Ok(response));
                }
            };
            this.state.set(next);
        }
    }
}

impl<S, R, E, T> InFlight<S, R, E, T>
where
    S: Service<Request<VerifiedBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent + Send + Sync + 'static,
{
    /// The body is in: run the checks that need no secret, then ask the resolver.
    fn prepare<B>(&mut self, parts: Parts, body: Bytes) -> StateOf<S, R, B> {
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

    /// Verified: the inner service gets the request with its [`VerifiedWebhook`] context.
    fn pass<B>(&mut self, mut parts: Parts, body: Bytes, verified: Verified) -> StateOf<S, R, B> {
        // Nothing is refused from here on: the URL moves into the context.
        let url = std::mem::take(&mut self.url.url);
        let webhook = verified.into_webhook(url, self.url.client_ip);
        #[cfg(feature = "metrics")]
        crate::metrics::verified(webhook.tenant_id());
        self.lifecycle.verified(&webhook);
        parts.extensions.insert(webhook);
        self.call(parts, body)
    }

    /// Verification failed: refuse, or in report-only mode report it and pass the request on.
    /// Either way a signature mismatch then goes to the mismatch doctor, when it is on.
    fn fail<B>(&mut self, parts: Parts, body: Bytes, mut refusal: Refusal) -> StateOf<S, R, B> {
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
    fn refuse<B>(&mut self, parts: &Parts, refusal: Refusal) -> StateOf<S, R, B> {
        self.refuse_reporting(parts, refusal).0
    }

    /// [`refuse`](Self::refuse), and the event it reported.
    fn refuse_reporting<B>(
        &mut self,
        parts: &Parts,
        refusal: Refusal,
    ) -> (StateOf<S, R, B>, SecurityEvent) {
        let event = self.report(parts, &refusal, Outcome::Rejected);
        let state = State::Refused {
            rejection: Some(refusal.into_rejection()),
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
            // The replay guard's outcomes are reported by its own layer; a diagnosis is not
            // reported here.
            Outcome::Suppressed | Outcome::PassedWithoutReplayCheck | Outcome::Diagnosed => {}
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
            // Not the signature layer's (the replay guard's, the doctor's).
            Outcome::Suppressed | Outcome::PassedWithoutReplayCheck | Outcome::Diagnosed => {
                return event;
            }
        };
        self.lifecycle
            .failed_verification(stage, tenant_id, account_sid);
        event
    }

    fn call<B>(&mut self, parts: Parts, body: Bytes) -> StateOf<S, R, B> {
        let request = Request::from_parts(parts, VerifiedBody::new(body));
        State::Inner {
            future: self.inner.call(request),
        }
    }
}
