//! [`ReplayGuard`]: the replay guard's settings, given to
//! [`TwilioSignatureLayer::replay_guard`](crate::TwilioSignatureLayer::replay_guard).

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::{MemoryStore, ReplayStore};
use crate::VerifiedWebhook;

type DuplicateResponseFn = Arc<dyn Fn(&VerifiedWebhook) -> Response<Bytes> + Send + Sync>;

/// Turns a replayed or retried webhook away before it reaches the handler a second time.
///
/// Enable it with one call,
/// [`TwilioSignatureLayer::replay_guard`](crate::TwilioSignatureLayer::replay_guard). After a
/// request is verified, its [`ReplayKey`](super::ReplayKey) is
/// [claimed](ReplayStore::claim) in the store:
///
/// | the store says | what happens |
/// | --- | --- |
/// | not seen | the handler runs. A 2xx answer marks the key done for the [window](Self::window) (24 hours by default); any other answer, an error, or a request dropped before the answer releases the claim, so Twilio's retry goes through |
/// | done | the handler is **not** called; the [duplicate response](Self::duplicate_response) is sent (by default `200` with an empty TwiML `<Response/>` for a form webhook, `204` otherwise, so Twilio stops retrying); one [`replay_suppressed`](crate::RejectionKind::ReplaySuppressed) event (info) and the webhook log's final stage [`Duplicate`](crate::events::log::WebhookStage::Duplicate) |
/// | in flight (another copy is being handled, here or on another instance) | a rejection of kind [`ReplayInFlight`](crate::RejectionKind::ReplayInFlight), `409` by default: Twilio retries later |
/// | an error | fail closed (the default): a rejection of kind [`ReplayStoreFailed`](crate::RejectionKind::ReplayStoreFailed), `503`. Or, with [`fail_open`](Self::fail_open), the handler runs unguarded and a critical event (`ERROR`) says so |
///
/// A claim lasts at most the [lease](Self::lease) (60 seconds by default; Twilio gives up on
/// a webhook after 15): a process that dies while handling a webhook holds it no longer than
/// that.
///
/// ```
/// use std::time::Duration;
/// use tower_twilio::{Credentials, TwilioSignatureLayer, replay::{MemoryStore, ReplayGuard}};
///
/// let twilio = TwilioSignatureLayer::new(Credentials::new())
///     .replay_guard(ReplayGuard::new(MemoryStore::new(16 * 1024 * 1024)).window(Duration::from_secs(3600)));
/// # let _ = twilio;
/// ```
pub struct ReplayGuard<St = MemoryStore> {
    pub(crate) store: St,
    pub(crate) window: Duration,
    pub(crate) lease: Duration,
    pub(crate) fail_open: bool,
    duplicate_response: Option<DuplicateResponseFn>,
}

impl ReplayGuard {
    /// The default window: 24 hours.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

    /// The default lease: 60 seconds.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
}

impl Default for ReplayGuard {
    /// A guard on a [`MemoryStore`] of the default size.
    fn default() -> Self {
        Self::new(MemoryStore::default())
    }
}

impl<St> ReplayGuard<St> {
    /// A guard on `store`, with the defaults: a 24-hour window, a 60-second lease, fail closed,
    /// the default duplicate response.
    pub fn new(store: St) -> Self
    where
        St: ReplayStore,
    {
        Self {
            store,
            window: ReplayGuard::DEFAULT_WINDOW,
            lease: ReplayGuard::DEFAULT_LEASE,
            fail_open: false,
            duplicate_response: None,
        }
    }

    /// How long a processed webhook is remembered: a copy within this time is a duplicate,
    /// after it the webhook is accepted again. Twilio retries within minutes; a captured
    /// request replayed later than the window passes, so keep it long.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How long a claim holds while the handler runs. Make it longer than your slowest
    /// handler: a claim that runs out lets a copy through while the first is still running.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// With `true`, a store failure lets the request through to the handler (unguarded) with a
    /// critical event, instead of refusing it with `503`. Off by default: a failing store then
    /// costs availability (Twilio retries), never a webhook handled twice.
    #[must_use]
    pub fn fail_open(mut self, enabled: bool) -> Self {
        self.fail_open = enabled;
        self
    }

    /// Builds the answer to a duplicate instead of the default (`200` with an empty TwiML
    /// `<Response/>` for a form webhook, `204` otherwise). Answer with a 2xx, or Twilio will
    /// retry. The middleware adds a [`Rejection`](crate::Rejection) of kind
    /// [`ReplaySuppressed`](crate::RejectionKind::ReplaySuppressed) to its extensions.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Response, StatusCode};
    /// use tower_twilio::replay::ReplayGuard;
    ///
    /// let guard = ReplayGuard::default().duplicate_response(|_webhook: &_| {
    ///     let mut response = Response::new(Bytes::from_static(b"already handled"));
    ///     *response.status_mut() = StatusCode::OK;
    ///     response
    /// });
    /// # let _ = guard;
    /// ```
    #[must_use]
    pub fn duplicate_response<F>(mut self, response: F) -> Self
    where
        F: Fn(&VerifiedWebhook) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.duplicate_response = Some(Arc::new(response));
        self
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The answer to a duplicate of `webhook` (form-encoded or not).
    pub(crate) fn duplicate(&self, webhook: &VerifiedWebhook, is_form: bool) -> Response<Bytes> {
        match &self.duplicate_response {
            Some(response) => response(webhook),
            None => default_duplicate_response(is_form),
        }
    }
}

/// `200` with an empty TwiML document for a form webhook (a message or call webhook expects
/// TwiML; an empty `<Response/>` does nothing), `204` otherwise.
pub(crate) fn default_duplicate_response(is_form: bool) -> Response<Bytes> {
    if is_form {
        let mut response = Response::new(Bytes::from_static(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
        ));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        response
    } else {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }
}

impl<St: Clone> Clone for ReplayGuard<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            window: self.window,
            lease: self.lease,
            fail_open: self.fail_open,
            duplicate_response: self.duplicate_response.clone(),
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for ReplayGuard<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("store", &self.store)
            .field("window", &self.window)
            .field("lease", &self.lease)
            .field("fail_open", &self.fail_open)
            .field(
                "duplicate_response",
                &self.duplicate_response.as_ref().map(|_| "<fn>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_duplicate_answer_stops_twilio_retrying_without_doing_anything() {
        let form = default_duplicate_response(true);
        assert_eq!(form.status(), StatusCode::OK);
        assert_eq!(
            form.headers()[header::CONTENT_TYPE],
            "text/xml; charset=utf-8"
        );
        assert!(form.body().ends_with(b"<Response/>"));
        let other = default_duplicate_response(false);
        assert_eq!(other.status(), StatusCode::NO_CONTENT);
        assert!(other.body().is_empty());
    }
}
