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
    events::{
        OnSecurityEvent, Outcome, SecurityEvent,
        log::{Lifecycle, WebhookStage},
    },
    layer::Shared,
    pipeline::{self, Inbound, Prepared, Refusal, Verified},
    public_url::RebuiltUrl,
    rejection::RejectionResponse,
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
        Refused {
            response: Option<Response<Bytes>>,
        },
    }
}

/// What the future holds for the request whatever its state: the services, the settings, the
/// URL it is verified against and its webhook log.
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

impl<S, R, E, T, B, ResBody> ResponseFuture<S, R, E, T, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent,
    T: RejectionResponse,
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
    E: OnSecurityEvent,
    T: RejectionResponse,
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
                    let status = result.as_ref().ok().map(Response::status);
                    request.lifecycle.answered(status);
                    return Poll::Ready(result.map(|response| response.map(ResponseBody::inner)));
                }
                StateProj::Refused { response } => {
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
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
    E: OnSecurityEvent,
    T: RejectionResponse,
{
    /// The body is in: run the checks that need no secret, then ask the resolver.
    fn prepare<B>(&mut self, parts: Parts, body: Bytes) -> State<B, R::Future, S::Future> {
        let inbound = Inbound {
            parts: &parts,
            body: &body,
            url: &self.url,
        };
        match pipeline::prepare(inbound) {
            Ok(prepared) => {
                let view = prepared.resolve_request(parts);
                #[cfg(feature = "metrics")]
                {
                    self.asked_at = Some(std::time::Instant::now());
                }
                State::Resolving {
                    resolution: Some(self.resolver.resolve(view.clone())),
                    asked: Some((view, prepared, body)),
                }
            }
            Err(refusal) => self.fail(parts, body, refusal),
        }
    }

    /// Verified: the inner service gets the request with its [`VerifiedWebhook`] context.
    ///
    /// [`VerifiedWebhook`]: crate::VerifiedWebhook
    fn pass<B>(
        &mut self,
        mut parts: Parts,
        body: Bytes,
        verified: Verified,
    ) -> State<B, R::Future, S::Future> {
        // Nothing is refused from here on: the URL moves into the context.
        let webhook = verified.into_webhook(std::mem::take(&mut self.url.url));
        #[cfg(feature = "metrics")]
        crate::metrics::verified(webhook.tenant_id());
        self.lifecycle.verified(&webhook);
        parts.extensions.insert(webhook);
        self.call(parts, body)
    }

    /// Verification failed: refuse, or in report-only mode report it and pass the request on.
    fn fail<B>(
        &mut self,
        parts: Parts,
        body: Bytes,
        refusal: Refusal,
    ) -> State<B, R::Future, S::Future> {
        if !(self.shared.config.report_only && refusal.passes_in_report_only_mode()) {
            return self.refuse(&parts, refusal);
        }
        self.report(&parts, &refusal, Outcome::PassedInReportOnlyMode);
        self.call(parts, body)
    }

    /// Refuses: one security event, the webhook log's final stage, and the rejection response
    /// with the [`Rejection`](crate::Rejection) in its extensions.
    fn refuse<B>(&mut self, parts: &Parts, refusal: Refusal) -> State<B, R::Future, S::Future> {
        self.report(parts, &refusal, Outcome::Rejected);
        let rejection = refusal.into_rejection();
        let mut response = self.shared.rejection.rejection_response(&rejection);
        response.extensions_mut().insert(rejection);
        State::Refused {
            response: Some(response),
        }
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

    fn report(&mut self, parts: &Parts, refusal: &Refusal, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        crate::metrics::refused(refusal.kind, refusal.tenant_id.as_deref());
        let (tenant_id, account_sid) = (refusal.tenant_id.as_ref(), refusal.account_sid.as_ref());
        let mut event = SecurityEvent::new(
            refusal.kind,
            outcome,
            parts,
            &self.url,
            tenant_id.cloned(),
            account_sid.cloned(),
        );
        event.diagnosis = refusal.diagnosis.clone();
        self.shared.sink.on_security_event(&event);
        let stage = match outcome {
            Outcome::Rejected => WebhookStage::Rejected(refusal.kind),
            Outcome::PassedInReportOnlyMode => WebhookStage::PassedInReportOnlyMode(refusal.kind),
        };
        self.lifecycle.failed_verification(
            stage,
            tenant_id,
            account_sid,
            refusal.diagnosis.as_ref(),
        );
    }

    fn call<B>(&mut self, parts: Parts, body: Bytes) -> State<B, R::Future, S::Future> {
        let request = Request::from_parts(parts, VerifiedBody::new(body));
        State::Inner {
            future: self.inner.call(request),
        }
    }
}
