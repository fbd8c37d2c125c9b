//! [`ReplayGuard`]: the service the [`ReplayGuardLayer`](super::ReplayGuardLayer) makes.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{ResponseFuture, layer::Settings};
use crate::{BoxError, ResponseBody, replay::ReplayStore};

/// Claims each verified webhook in the store before the inner service sees it, and answers
/// its copies with the first answer. Made by [`ReplayGuardLayer`](super::ReplayGuardLayer).
///
/// See the [module docs](super) for an example.
pub struct ReplayGuard<S, St> {
    inner: S,
    settings: Arc<Settings<St>>,
}

impl<S, St> ReplayGuard<S, St> {
    pub(crate) fn new(inner: S, settings: Arc<Settings<St>>) -> Self {
        Self { inner, settings }
    }

    crate::service::inner_accessors!();
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for ReplayGuard<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: ReplayStore,
    ResBody: Body + Unpin,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, St, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let inner = crate::service::take_ready(&mut self.inner);
        ResponseFuture::new(request, inner, Arc::clone(&self.settings))
    }
}

impl<S: Clone, St> Clone for ReplayGuard<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug> fmt::Debug for ReplayGuard<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish()
    }
}
