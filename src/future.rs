//! [`ResponseFuture`]: drives one request through the [`pipeline`](crate::pipeline): collect
//! the body, ask the resolver, then call the inner service or answer with the rejection. What
//! it learns on the way goes to the request's [`Observer`](crate::observe::Observer).

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
    config::Shared,
    events::OnSecurityEvent,
    observe::Observer,
    pipeline::{self, Inbound, Prepared, Refusal},
    rejection::{Rejection, RejectionResponse},
    resolver::{Resolution, ResolveRequest},
    url::rebuilt::RebuiltUrl,
    verified_webhook::{Facts, VerifiedWebhook},
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
    /// Collect → resolve → inner. A refusal is answered from the state that finds it, at once:
    /// the response is built by the layer's [`RejectionResponse`], which knows the inner
    /// service's body type.
    #[project = StateProj]
    enum State<B, RF, SF> {
        Collecting {
            #[pin]
            body: B,
            collector: Collector,
            parts: Option<Parts>,
            // A request refused before its body is read (method, signature header,
            // `Content-Length`): answered at the first poll, and the body is never read.
            refused: Option<Rejection>,
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
    }
}

/// What the future holds for the request whatever its state: the services, the settings, the
/// URL it is verified against, and its observer.
struct InFlight<S, R, E, T> {
    inner: S,
    resolver: R,
    shared: Arc<Shared<E, T>>,
    url: RebuiltUrl,
    observer: Observer,
}

type StateOf<S, R, B> =
    State<B, <R as ResolveCredentials>::Future, <S as Service<Request<VerifiedBody>>>::Future>;

/// The next state, or the rejection to answer with.
type Step<S, R, B> = Result<StateOf<S, R, B>, Rejection>;

// Only what starting needs: the bounds of polling are on the `Future` impl.
impl<S, R, E, T, B> ResponseFuture<S, R, E, T, B>
where
    S: Service<Request<VerifiedBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent + Send + Sync + 'static,
    B: Body,
{
    pub(crate) fn new(
        request: Request<B>,
        inner: S,
        resolver: R,
        shared: Arc<Shared<E, T>>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        let head = pipeline::check_head(&parts, &body.size_hint(), &shared.config);
        let observer = Observer::received(&shared.config, &parts, head.url.client_ip);
        let mut request = InFlight {
            inner,
            resolver,
            url: head.url,
            observer,
            shared,
        };
        let (parts, refused) = match head.verdict {
            Ok(()) => (Some(parts), None),
            Err(refusal) => (None, Some(request.refuse(parts, Bytes::new(), refusal))),
        };
        let state = State::Collecting {
            body,
            collector: Collector::default(),
            parts,
            refused,
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
            let step = match this.state.as_mut().project() {
                StateProj::Collecting {
                    body,
                    collector,
                    parts,
                    refused,
                } => {
                    if let Some(rejection) = refused.take() {
                        return Poll::Ready(Ok(request.answer(rejection)));
                    }
                    let limit = request.shared.config.max_body_size;
                    let collected = ready!(collector.poll_collect(body, limit, cx));
                    let parts = parts.take().expect(POLLED_AFTER_COMPLETION);
                    match collected {
                        Ok(body) => request.prepare(parts, body),
                        Err(error) => Err(request.refuse(parts, Bytes::new(), error.into())),
                    }
                }
                StateProj::Resolving {
                    mut resolution,
                    asked,
                } => {
                    let future = resolution.as_mut().as_pin_mut();
                    let answer = ready!(future.expect(POLLED_AFTER_COMPLETION).poll(cx));
                    resolution.set(None);
                    let (view, prepared, body) = asked.take().expect(POLLED_AFTER_COMPLETION);
                    request.complete(view.into_parts(), body, prepared, answer)
                }
                StateProj::Inner { future } => {
                    let result = ready!(future.poll(cx));
                    request.observer.answered(&result);
                    return Poll::Ready(result.map(|r| r.map(ResponseBody::inner)));
                }
            };
            match step {
                Ok(next) => this.state.set(next),
                Err(rejection) => return Poll::Ready(Ok(request.answer(rejection))),
            }
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
    fn prepare<B>(&mut self, parts: Parts, body: Bytes) -> Step<S, R, B> {
        let inbound = Inbound {
            parts: &parts,
            body: &body,
            url: &self.url,
        };
        match pipeline::prepare(inbound, &self.shared.config) {
            Ok(prepared) => {
                self.observer.asking();
                // A resolver whose answer never depends on the request answers now: no view
                // of the request is built and nothing is awaited.
                if let Some(credentials) = self.resolver.fixed_credentials() {
                    let answer = Ok(Some(credentials.clone()));
                    return self.complete(parts, body, prepared, answer);
                }
                let view = prepared.resolve_request(parts);
                Ok(State::Resolving {
                    resolution: Some(self.resolver.resolve(view.clone())),
                    asked: Some((view, prepared, body)),
                })
            }
            Err(refusal) => self.fail(parts, body, refusal),
        }
    }

    /// The resolver answered: verify with its answer, then pass the request on or refuse it.
    fn complete<B>(
        &mut self,
        parts: Parts,
        body: Bytes,
        prepared: Prepared,
        answer: Resolution,
    ) -> Step<S, R, B> {
        self.observer.resolved(&answer);
        let inbound = Inbound {
            parts: &parts,
            body: &body,
            url: &self.url,
        };
        match pipeline::complete(inbound, prepared, answer, &self.shared.config) {
            Ok(verified) => Ok(self.pass(parts, body, verified)),
            Err(refusal) => self.fail(parts, body, refusal),
        }
    }

    /// Verified: the inner service gets the request with its [`VerifiedWebhook`] context.
    ///
    /// [`VerifiedWebhook`]: crate::VerifiedWebhook
    fn pass<B>(&mut self, mut parts: Parts, body: Bytes, facts: Facts) -> StateOf<S, R, B> {
        // Nothing is refused from here on: the URL moves into the context.
        let url = self.url.take_without_userinfo();
        let webhook = VerifiedWebhook::new(facts, url, self.url.client_ip);
        self.observer.verified(&webhook);
        parts.extensions.insert(webhook);
        self.call(parts, body)
    }

    /// Verification failed: refuse, or in report-only mode pass the request on.
    fn fail<B>(&mut self, parts: Parts, body: Bytes, refusal: Refusal) -> Step<S, R, B> {
        if !refusal.passes_on(&self.shared.config) {
            return Err(self.refuse(parts, body, refusal));
        }
        self.observer
            .passed_unverified(&self.shared, &parts, &body, &mut self.url, refusal);
        Ok(self.call(parts, body))
    }

    /// Refuses: the observer reports it, and the [`Rejection`] goes into the response.
    fn refuse(&mut self, parts: Parts, body: Bytes, refusal: Refusal) -> Rejection {
        self.observer
            .refused(&self.shared, parts, body, &mut self.url, refusal)
    }

    fn call<B>(&mut self, parts: Parts, body: Bytes) -> StateOf<S, R, B> {
        let request = Request::from_parts(parts, VerifiedBody::new(body));
        State::Inner {
            future: self.inner.call(request),
        }
    }
}

impl<S, R, E, T> InFlight<S, R, E, T> {
    /// The rejection response, with the [`Rejection`] in its extensions.
    fn answer<ResBody>(&self, rejection: Rejection) -> Response<ResponseBody<ResBody>>
    where
        T: RejectionResponse<ResBody>,
    {
        let mut response = self.shared.rejection.rejection_response(&rejection);
        response.extensions_mut().insert(rejection);
        response
    }
}
