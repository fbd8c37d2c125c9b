use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{Resolution, ResolveCredentials, ResolveRequest};

/// Asks a preferred resolver first and a legacy one only for accounts the preferred one does
/// not know.
///
/// | preferred answers | `Fallback` answers |
/// | --- | --- |
/// | `Ok(Some(credentials))` | the same; the legacy resolver is not asked |
/// | `Ok(None)` | whatever the legacy resolver answers |
/// | `Err(e)` | the same error; the legacy resolver is **not** asked |
///
/// A failed lookup is never papered over by the legacy source: if the preferred store is
/// down, the request is refused rather than verified against secrets that may be stale.
///
/// Built with [`ResolveCredentialsExt::or`](super::ResolveCredentialsExt::or) or
/// [`Fallback::new`]. The legacy resolver must be `Clone`: each lookup that reaches it runs on
/// its own clone, so that the lookup's future owns everything it needs. See the
/// [module docs](super) for an example.
#[derive(Clone, Debug)]
pub struct Fallback<A, B> {
    preferred: A,
    legacy: B,
}

impl<A, B> Fallback<A, B> {
    /// Asks `preferred` first, then `legacy` for accounts `preferred` does not know.
    pub fn new(preferred: A, legacy: B) -> Self {
        Self { preferred, legacy }
    }

    /// The preferred resolver.
    pub fn preferred(&self) -> &A {
        &self.preferred
    }

    /// The legacy resolver.
    pub fn legacy(&self) -> &B {
        &self.legacy
    }

    /// Both resolvers, preferred first.
    pub fn into_inner(self) -> (A, B) {
        (self.preferred, self.legacy)
    }
}

impl<A, B> ResolveCredentials for Fallback<A, B>
where
    A: ResolveCredentials,
    B: ResolveCredentials + Clone + Send + 'static,
{
    type Future = FallbackFuture<A::Future, B>;

    fn resolve(&mut self, request: ResolveRequest) -> Self::Future {
        let legacy = self.legacy.clone();
        let future = self.preferred.resolve(request.clone());
        FallbackFuture {
            state: State::Preferred {
                future,
                legacy: Some((legacy, request)),
            },
        }
    }
}

pin_project! {
    /// The future [`Fallback`] returns: `F` is the preferred resolver's future, `B` the
    /// legacy resolver.
    pub struct FallbackFuture<F, B>
    where
        B: ResolveCredentials,
    {
        #[pin]
        state: State<F, B, B::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<PF, B, LF> {
        Preferred {
            #[pin]
            future: PF,
            // Taken when the legacy resolver is asked.
            legacy: Option<(B, ResolveRequest)>,
        },
        Legacy {
            #[pin]
            future: LF,
        },
        // Entered on completion, so the legacy resolver and the request view are dropped as
        // soon as the answer is known.
        Done,
    }
}

impl<F, B> Future for FallbackFuture<F, B>
where
    F: Future<Output = Resolution>,
    B: ResolveCredentials,
{
    type Output = Resolution;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Preferred { future, legacy } => match ready!(future.poll(cx)) {
                    Ok(None) => {
                        let (mut legacy, request) =
                            legacy.take().expect("future polled after completion");
                        let future = legacy.resolve(request);
                        this.state.set(State::Legacy { future });
                    }
                    answer => {
                        this.state.set(State::Done);
                        return Poll::Ready(answer);
                    }
                },
                StateProj::Legacy { future } => {
                    let answer = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(answer);
                }
                StateProj::Done => panic!("future polled after completion"),
            }
        }
    }
}

impl<F, B> fmt::Debug for FallbackFuture<F, B>
where
    B: ResolveCredentials,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Preferred { .. } => "Preferred",
            State::Legacy { .. } => "Legacy",
            State::Done => "Done",
        };
        f.debug_struct("FallbackFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::{BoxError, Credentials, Secret, resolver::ResolveCredentialsExt};

    fn request() -> ResolveRequest {
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        ResolveRequest::new(parts, Some("AC1"), None)
    }

    /// A resolver that counts its calls and gives `answer()`.
    fn counted(
        calls: &Arc<AtomicUsize>,
        answer: fn() -> Resolution,
    ) -> impl ResolveCredentials + Clone + Send + 'static {
        let calls = Arc::clone(calls);
        move |_: ResolveRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                answer()
            }
        }
    }

    fn found(tenant: &'static str) -> Resolution {
        Ok(Some(
            Credentials::new()
                .tenant(tenant)
                .auth_token("primary", Secret::new("t").unwrap()),
        ))
    }

    fn preferred_hit() -> Resolution {
        found("preferred")
    }

    fn legacy_hit() -> Resolution {
        found("legacy")
    }

    fn unknown() -> Resolution {
        Ok(None)
    }

    fn failed() -> Resolution {
        Err(BoxError::from("database is down"))
    }

    fn tenant(answer: &Resolution) -> Option<&str> {
        answer
            .as_ref()
            .unwrap()
            .as_ref()
            .and_then(Credentials::tenant_id)
    }

    #[tokio::test]
    async fn preferred_hit_never_asks_legacy() {
        let (a, b) = (Arc::default(), Arc::default());
        let mut resolver = counted(&a, preferred_hit).or(counted(&b, legacy_hit));
        let answer = resolver.resolve(request()).await;
        assert_eq!(tenant(&answer), Some("preferred"));
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 0));
    }

    #[tokio::test]
    async fn preferred_unknown_asks_legacy() {
        let (a, b) = (Arc::default(), Arc::default());
        let mut resolver = counted(&a, unknown).or(counted(&b, legacy_hit));
        let answer = resolver.resolve(request()).await;
        assert_eq!(tenant(&answer), Some("legacy"));
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
    }

    #[tokio::test]
    async fn unknown_to_both_is_unknown() {
        let (a, b) = (Arc::default(), Arc::default());
        let mut resolver = counted(&a, unknown).or(counted(&b, unknown));
        assert!(resolver.resolve(request()).await.unwrap().is_none());
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
    }

    #[tokio::test]
    async fn preferred_error_is_returned_and_legacy_never_asked() {
        let (a, b) = (Arc::default(), Arc::default());
        let mut resolver = counted(&a, failed).or(counted(&b, legacy_hit));
        let error = resolver.resolve(request()).await.unwrap_err();
        assert_eq!(error.to_string(), "database is down");
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 0));
    }

    #[tokio::test]
    async fn legacy_error_is_returned() {
        let (a, b) = (Arc::default(), Arc::default());
        let mut resolver = counted(&a, unknown).or(counted(&b, failed));
        assert!(resolver.resolve(request()).await.is_err());
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
    }

    #[tokio::test]
    async fn chains_of_three_ask_in_order() {
        let calls: [Arc<AtomicUsize>; 3] = Default::default();
        let mut resolver = counted(&calls[0], unknown)
            .or(counted(&calls[1], unknown))
            .or(counted(&calls[2], legacy_hit));
        let answer = resolver.resolve(request()).await;
        assert_eq!(tenant(&answer), Some("legacy"));
        assert!(calls.iter().all(|c| c.load(Ordering::SeqCst) == 1));
    }

    #[tokio::test]
    async fn request_view_is_released_when_done() {
        let b = Arc::default();
        let mut resolver = counted(&Arc::default(), preferred_hit).or(counted(&b, legacy_hit));
        let request = request();
        let mut future = std::pin::pin!(resolver.resolve(request.clone()));
        let answer = std::future::poll_fn(|cx| future.as_mut().poll(cx)).await;
        assert!(answer.is_ok());
        // The future still exists, but holds no copy of the request view any more.
        assert_eq!(Arc::strong_count(&request.inner), 1);
        assert!(format!("{future:?}").contains("Done"));
    }
}
