//! [`ReplayGuard`]: the replay guard's settings, given to
//! [`TwilioSignatureLayer::replay_guard`](crate::TwilioSignatureLayer::replay_guard).
//! Superseded by [`ReplayGuardLayer`](crate::replay_guard::ReplayGuardLayer), which gives
//! every copy the first answer.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::{Claim, ClaimToken, MemoryStore, ReplayKey, ReplayStore, ReplayStoreError};
use crate::{
    BoxError, RejectionKind, VerifiedWebhook,
    verify::{self, Covered},
};

type DuplicateResponseFn = Arc<dyn Fn(&VerifiedWebhook) -> Response<Bytes> + Send + Sync>;

/// Turns a replayed or retried webhook away before it reaches the handler a second time.
///
/// **Superseded by [`ReplayGuardLayer`](crate::replay_guard::ReplayGuardLayer)**, which
/// gives every copy the first answer instead of an empty one, makes a concurrent copy wait
/// instead of answering 409, renews short leases, and has a delivery scope for voice.
///
/// Enable it with one call,
/// [`TwilioSignatureLayer::replay_guard`](crate::TwilioSignatureLayer::replay_guard). After a
/// request is verified, its [`ReplayKey`](super::ReplayKey) is
/// [claimed](ReplayStore::claim) in the store:
///
/// | the store says | what happens |
/// | --- | --- |
/// | not seen | the handler runs. A 2xx answer marks the key done for the [window](Self::window) (24 hours by default); any other answer, an error, or a request dropped before the answer releases the claim, so Twilio's retry goes through |
/// | done | the handler is **not** called; the [duplicate response](Self::duplicate_response) is sent (by default `200` with an empty TwiML `<Response/>` for a form or `GET` webhook, `204` for a `bodySHA256` one, so Twilio stops retrying); one [`replay_suppressed`](crate::RejectionKind::ReplaySuppressed) event (info) and the webhook log's final stage [`Duplicate`](crate::events::log::WebhookStage::Duplicate) |
/// | in flight (another copy is being handled, here or on another instance) | a rejection of kind [`ReplayInFlight`](crate::RejectionKind::ReplayInFlight), `409` with the default [rejection response](crate::TwilioSignatureLayer::rejection_response), which Twilio does not retry by default (the reason it is superseded) |
/// | an error | fail closed (the default): a rejection of kind [`ReplayStoreFailed`](crate::RejectionKind::ReplayStoreFailed), `503`. Or, with [`fail_open`](Self::fail_open), the handler runs unguarded and a critical event (`ERROR`) says so |
///
/// Only verified requests are claimed: a forged one is refused (or, in report-only mode,
/// passed on unguarded) before the store is asked, so nothing is stored for it.
///
/// A claim lasts at most the [lease](Self::lease) (60 seconds by default; Twilio gives up on
/// a webhook after 15): a process that dies while handling a webhook holds it no longer than
/// that. The same bounds the two moments a dropped request cannot settle its claim in a
/// shared store: while the claim itself is on its way (the claim may have landed; copies get
/// `409` until the lease runs out), and after a 2xx while the done mark is on its way (if it
/// does not land, the claim lapses with the lease and a later copy runs again).
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
    /// `<Response/>` for a form or `GET` webhook, `204` for a `bodySHA256` one). Answer with a 2xx, or Twilio will
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

    /// The answer to a duplicate of `webhook`.
    pub(crate) fn duplicate(&self, webhook: &VerifiedWebhook) -> Response<Bytes> {
        match &self.duplicate_response {
            Some(response) => response(webhook),
            None => default_duplicate_response(webhook.covered()),
        }
    }

    /// What to do with a verified request, given the store's answer to its claim.
    pub(crate) fn admit(&self, claim: Result<Claim, ReplayStoreError>) -> Admit {
        match claim {
            Ok(Claim::Claimed(token)) => Admit::Run(token),
            Ok(Claim::Done(_)) => Admit::Duplicate,
            Ok(Claim::InFlight) => Admit::Refuse(RejectionKind::ReplayInFlight, None),
            Err(error) if self.fail_open => Admit::RunUnguarded(error),
            Err(error) => Admit::Refuse(RejectionKind::ReplayStoreFailed, Some(error.into())),
        }
    }
}

/// The guard's decision on a verified request: see [`ReplayGuard::admit`].
#[derive(Debug)]
pub(crate) enum Admit {
    /// New: call the inner service, holding the claim.
    Run(ClaimToken),
    /// Processed already: answer the duplicate response.
    Duplicate,
    /// In flight elsewhere, or the store failed and the guard fails closed.
    Refuse(RejectionKind, Option<BoxError>),
    /// The store failed and the guard fails open: call the inner service without a claim.
    RunUnguarded(ReplayStoreError),
}

/// Whether the inner service's answer marks the webhook done (a 2xx); anything else, or an
/// error (`None`), releases the claim so that Twilio's retry runs it again.
pub(crate) fn answer_is_done(status: Option<StatusCode>) -> bool {
    status.is_some_and(|status| status.is_success())
}

/// The replay key of a verified request: its algorithm and the signature header it carried,
/// nothing the request claims.
pub(crate) fn replay_key(webhook: &VerifiedWebhook, headers: &HeaderMap) -> ReplayKey {
    let signature = headers
        .get(&verify::SIGNATURE)
        .map_or(&[][..], HeaderValue::as_bytes);
    ReplayKey::new(webhook.algorithm(), signature)
}

/// `200` with an empty TwiML document for a form or `GET` webhook (a message or call webhook
/// expects TwiML; an empty `<Response/>` does nothing), `204` for a `bodySHA256` one.
pub(crate) fn default_duplicate_response(covered: Covered) -> Response<Bytes> {
    if covered != Covered::BodySha256 {
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
    use crate::replay::ReplayStoreErrorKind;

    #[test]
    fn the_default_duplicate_answer_stops_twilio_retrying_without_doing_anything() {
        for covered in [Covered::FormParams, Covered::UrlOnly] {
            let twiml = default_duplicate_response(covered);
            assert_eq!(twiml.status(), StatusCode::OK);
            assert_eq!(
                twiml.headers()[header::CONTENT_TYPE],
                "text/xml; charset=utf-8"
            );
            assert!(twiml.body().ends_with(b"<Response/>"));
        }
        let json = default_duplicate_response(Covered::BodySha256);
        assert_eq!(json.status(), StatusCode::NO_CONTENT);
        assert!(json.body().is_empty());
    }

    #[test]
    fn each_claim_answer_has_one_decision() {
        let closed = ReplayGuard::default();
        let open = ReplayGuard::default().fail_open(true);
        let token = ClaimToken::new(7);
        let failure = || Err(ReplayStoreError::new(ReplayStoreErrorKind::Unavailable));
        for guard in [&closed, &open] {
            assert!(matches!(guard.admit(Ok(Claim::Claimed(token))), Admit::Run(t) if t == token));
            assert!(matches!(
                guard.admit(Ok(Claim::Done(super::super::StoredAnswer::done_only(
                    StatusCode::OK
                )))),
                Admit::Duplicate
            ));
            assert!(matches!(
                guard.admit(Ok(Claim::InFlight)),
                Admit::Refuse(RejectionKind::ReplayInFlight, None)
            ));
        }
        assert!(matches!(
            closed.admit(failure()),
            Admit::Refuse(RejectionKind::ReplayStoreFailed, Some(_))
        ));
        assert!(matches!(open.admit(failure()), Admit::RunUnguarded(_)));
    }

    #[test]
    fn only_a_2xx_answer_marks_a_webhook_done() {
        for (status, done) in [
            (Some(StatusCode::OK), true),
            (Some(StatusCode::NO_CONTENT), true),
            (Some(StatusCode::FOUND), false),
            (Some(StatusCode::BAD_REQUEST), false),
            (Some(StatusCode::INTERNAL_SERVER_ERROR), false),
            (None, false),
        ] {
            assert_eq!(answer_is_done(status), done, "{status:?}");
        }
    }
}
