//! [`TwilioSignature`]: the `tower::Service`.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    BoxError, ResolveCredentials,
    body::{ResponseBody, VerifiedBody},
    config::Shared,
    events::{OnSecurityEvent, TracingSink},
    future::ResponseFuture,
    rejection::{DefaultRejectionResponse, RejectionResponse},
};

/// The middleware service built by [`TwilioSignatureLayer`](crate::TwilioSignatureLayer).
///
/// It refuses a request without reading its body when the signature header is missing or the
/// `Content-Length` is over the limit; otherwise it reads the body (up to the limit), asks the
/// resolver for credentials, verifies, and only then calls the inner service with the same
/// bytes. See the [crate docs](crate) for an example.
pub struct TwilioSignature<S, R, E = TracingSink, T = DefaultRejectionResponse> {
    inner: S,
    resolver: R,
    shared: Arc<Shared<E, T>>,
}

impl<S, R, E, T> TwilioSignature<S, R, E, T> {
    pub(crate) fn new(inner: S, resolver: R, shared: Arc<Shared<E, T>>) -> Self {
        Self {
            inner,
            resolver,
            shared,
        }
    }

    inner_accessors!();
}

impl<S: Clone, R: Clone, E, T> Clone for TwilioSignature<S, R, E, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            resolver: self.resolver.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, R, E, T> fmt::Debug for TwilioSignature<S, R, E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSignature")
            .field("inner", &self.inner)
            .field("public_url", &self.shared.config.public_url)
            .field("max_body_size", &self.shared.config.max_body_size)
            .field("max_params", &self.shared.config.max_params)
            .field("report_only", &self.shared.config.report_only)
            .finish_non_exhaustive()
    }
}

impl<S, R, E, T, ReqBody, ResBody> Service<Request<ReqBody>> for TwilioSignature<S, R, E, T>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>> + Clone,
    R: ResolveCredentials + Clone,
    E: OnSecurityEvent + Send + Sync + 'static,
    T: RejectionResponse<ResBody>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, R, E, T, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let inner = take_ready(&mut self.inner);
        ResponseFuture::new(
            request,
            inner,
            self.resolver.clone(),
            Arc::clone(&self.shared),
        )
    }
}

/// The inner service that was driven to readiness, leaving a clone in its place: the response
/// future calls it later, so it must be the ready one. See
/// <https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services>.
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// `get_ref`, `get_mut` and `into_inner` for a middleware service whose field `inner: S` is the
/// service it wraps.
macro_rules! inner_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
pub(crate) use inner_accessors;
