use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::{Resolution, ResolveCredentials, ResolveRequest};

/// Fails a lookup that takes longer than a fixed duration with [`ResolveTimeout`].
///
/// The middleware turns that error, like any resolver error, into a refusal (503,
/// [`ResolverFailed`](crate::RejectionKind::ResolverFailed)), so a hung credential store
/// costs each webhook at most this long instead of holding it until Twilio gives up
/// (Twilio waits 15 seconds). The inner lookup's future is dropped when the time is up.
///
/// Built with [`ResolveCredentialsExt::timeout`](super::ResolveCredentialsExt::timeout) or
/// [`Timeout::new`]. Needs a Tokio runtime with its time driver enabled, as
/// `tokio::time::sleep` does.
///
/// ```
/// use std::time::Duration;
/// use tower_twilio::resolver::{ResolveCredentials, ResolveCredentialsExt, ResolveRequest, ResolveTimeout};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut resolver = (|_: ResolveRequest| async {
///     tokio::time::sleep(Duration::from_secs(60)).await; // a database that hangs
///     Ok(None)
/// })
/// .timeout(Duration::from_secs(2));
///
/// let (parts, ()) = http::Request::post("/sms").body(()).unwrap().into_parts();
/// let error = resolver.resolve(ResolveRequest::new(parts, None, None)).await.unwrap_err();
/// assert!(error.is::<ResolveTimeout>());
/// assert_eq!(error.to_string(), "credential lookup timed out");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Timeout<R> {
    inner: R,
    duration: Duration,
}

impl<R> Timeout<R> {
    /// Fails lookups by `inner` that take longer than `duration`.
    pub const fn new(inner: R, duration: Duration) -> Self {
        Self { inner, duration }
    }

    /// The longest a lookup may take.
    pub const fn duration(&self) -> Duration {
        self.duration
    }

    /// The wrapped resolver.
    pub const fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped resolver, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the resolver.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R> ResolveCredentials for Timeout<R>
where
    R: ResolveCredentials,
{
    type Future = TimeoutFuture<R::Future>;

    /// # Panics
    ///
    /// Panics when called outside a Tokio runtime, or in one without the time driver
    /// enabled (as `tokio::time::sleep` does).
    fn resolve(&mut self, request: ResolveRequest) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.resolve(request),
            sleep: tokio::time::sleep(self.duration),
        }
    }
}

pin_project! {
    /// The future [`Timeout`] returns.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Resolution>,
{
    type Output = Resolution;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The lookup first: an answer that is ready wins over a deadline that is too.
        if let Poll::Ready(answer) = this.inner.poll(cx) {
            return Poll::Ready(answer);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Box::new(ResolveTimeout::new()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("deadline", &self.sleep.deadline())
            .finish_non_exhaustive()
    }
}

/// The error a [`Timeout`] resolver fails with when the lookup took too long.
///
/// Resolver errors reach the middleware as a [`BoxError`](crate::BoxError); find out whether
/// one was a timeout with `error.is::<ResolveTimeout>()`. The `Display` text,
/// `credential lookup timed out`, is not part of the stable API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolveTimeout(());

impl ResolveTimeout {
    pub(super) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for ResolveTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("credential lookup timed out")
    }
}

impl std::error::Error for ResolveTimeout {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, Credentials, Secret, resolver::ResolveCredentialsExt};

    fn request() -> ResolveRequest {
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        ResolveRequest::new(parts, Some("AC1"), None)
    }

    /// A resolver that answers `answer()` after `delay`.
    fn slow(
        delay: Duration,
        answer: fn() -> Resolution,
    ) -> impl ResolveCredentials + Clone + Send + 'static {
        move |_: ResolveRequest| async move {
            tokio::time::sleep(delay).await;
            answer()
        }
    }

    fn found() -> Resolution {
        Ok(Some(
            Credentials::new()
                .tenant("acme")
                .auth_token("primary", Secret::new("t").unwrap()),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn slow_lookup_fails_with_typed_error() {
        let mut resolver = slow(Duration::from_secs(10), found).timeout(Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let error = resolver.resolve(request()).await.unwrap_err();
        assert!(error.is::<ResolveTimeout>(), "{error}");
        assert_eq!(error.to_string(), "credential lookup timed out");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn fast_answers_pass_through() {
        let mut resolver = slow(Duration::from_millis(1999), found).timeout(Duration::from_secs(2));
        let answer = resolver.resolve(request()).await.unwrap().unwrap();
        assert_eq!(answer.tenant_id(), Some("acme"));

        let mut resolver = slow(Duration::ZERO, || Ok(None)).timeout(Duration::from_secs(2));
        assert!(resolver.resolve(request()).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn fast_errors_pass_through_untouched() {
        let failed = || Err(BoxError::from("database is down"));
        let mut resolver = slow(Duration::from_millis(10), failed).timeout(Duration::from_secs(2));
        let error = resolver.resolve(request()).await.unwrap_err();
        assert!(!error.is::<ResolveTimeout>());
        assert_eq!(error.to_string(), "database is down");
    }

    #[tokio::test(start_paused = true)]
    async fn answer_ready_at_the_deadline_wins() {
        let mut resolver = slow(Duration::from_secs(2), found).timeout(Duration::from_secs(2));
        assert!(resolver.resolve(request()).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn debug_shows_no_secrets() {
        let credentials = Credentials::new().auth_token("primary", Secret::new("tok-XYZ").unwrap());
        let mut resolver = credentials.timeout(Duration::from_secs(1));
        let future = resolver.resolve(request());
        let shown = format!("{resolver:?} {future:?}");
        assert!(
            shown.contains("Timeout") && shown.contains("TimeoutFuture"),
            "{shown}"
        );
        assert!(!shown.contains("tok-XYZ"), "{shown}");
    }
}
