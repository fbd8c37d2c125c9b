//! Why a request was refused ([`Rejection`], [`RejectionKind`]) and the response it gets
//! ([`RejectionResponse`]).

use std::{error::Error, fmt, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::{ResponseBody, verify::VerifyError};

/// Why the middleware refused a request.
///
/// Put into the extensions of every rejection response, including those a custom
/// [`RejectionResponse`] builds, so outer layers and tests can read it:
///
/// ```
/// # fn check(response: http::Response<()>) {
/// use tower_twilio::{Rejection, RejectionKind};
///
/// if let Some(rejection) = response.extensions().get::<Rejection>() {
///     assert_eq!(rejection.kind(), RejectionKind::SignatureMismatch);
/// }
/// # }
/// ```
///
/// An opaque struct around a [`RejectionKind`], so that context can be added later without a
/// breaking change. `Display` text is for people and may change; match on [`Self::kind`].
#[derive(Clone)]
pub struct Rejection {
    kind: RejectionKind,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind) -> Self {
        Self { kind, source: None }
    }

    pub(crate) fn with_source(kind: RejectionKind, source: crate::BoxError) -> Self {
        Self {
            kind,
            source: Some(Arc::from(source)),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The status code of the default response for this rejection.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.kind)
            .field("source", &self.source.as_ref().map(|e| e.to_string()))
            .finish()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.kind.description()),
            None => f.pad(self.kind.description()),
        }
    }
}

impl Error for Rejection {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// The reason behind a [`Rejection`], with the status code the default response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No `X-Twilio-Signature` header. 403.
    MissingSignature,
    /// More than one `X-Twilio-Signature` header. 403.
    DuplicateSignature,
    /// The signature header is not what Twilio sends (see [`VerifyError::MalformedSignature`]). 403.
    MalformedSignature,
    /// The settings header is repeated, not UTF-8, or names no SharedKey id. 403.
    MalformedSettings,
    /// The settings header names an algorithm other than `HMAC_SHA1`/`HMAC_SHA256`. 403.
    UnsupportedAlgorithm,
    /// The body is neither form-encoded nor covered by `bodySHA256`. 403.
    UnsupportedContentType,
    /// No secret signed this request. 403.
    SignatureMismatch,
    /// The signature is good but the body does not match the signed `bodySHA256`. 403.
    BodyHashMismatch,
    /// The resolver knows no credentials for this request's account. 403.
    UnknownAccount,
    /// The resolver knows no secret for the SharedKey id the settings header names. 403.
    UnknownSharedKey,
    /// The public URL could not be rebuilt (no path, no or several `Host` headers, a host that
    /// cannot stand in a URL, a malformed trusted forwarding header). 403.
    UnresolvableUrl,
    /// The body is larger than the configured limit. 413.
    BodyTooLarge,
    /// The form body (or a `GET`'s query) holds more parameters than the configured limit
    /// ([`TwilioSignatureLayer::max_params`](crate::TwilioSignatureLayer::max_params), 1000 by
    /// default). Refused before it is decoded or any resolver is asked. 413.
    TooManyParameters,
    /// Reading the body failed. 400.
    BodyReadFailed,
    /// The resolver failed (e.g. its database is down). 503: the request may be genuine, and it
    /// was neither accepted nor confused with a forgery.
    ResolverFailed,
    /// The method is neither `GET` nor `POST`, the only ones Twilio uses: the signature does
    /// not cover the method, so no other method can be shown to be Twilio's. 405.
    MethodNotAllowed,
    /// `AccountSid` appears more than once with different values, or the query and the body
    /// name different ones: the account the request belongs to is not one value. 403.
    ConflictingAccountSid,
    /// The request names an account other than the one the credentials that verify it belong
    /// to, or is SharedKey-signed with credentials that name no account. 403.
    AccountMismatch,
    /// `AccountSid` is not `AC` followed by 32 hexadecimal digits. Refused before the resolver
    /// is asked. 403.
    InvalidAccountSid,
    /// The SharedKey id in the settings header is empty, longer than 128 bytes, or holds a
    /// character outside `A-Z a-z 0-9 _ - . :`. Refused before the resolver is asked. 403.
    InvalidSharedKeyId,
    /// A verified copy of a webhook already processed, answered by the
    /// [replay guard](crate::replay_guard) with the first answer, without calling the inner
    /// service. Not a refusal: a marker in the copy's extensions; Twilio gets the first
    /// answer, so it stops retrying.
    ReplayCopy,
    /// A verified copy of a webhook that another request is handling right now (here or on
    /// another instance sharing the replay store), and that could not wait for it. 409: final
    /// for Twilio unless the URL's retry policy (`#rp=`) names `4xx`.
    ReplayInFlight,
    /// The replay store failed (unreachable, or full), and the guard is set to refuse then.
    /// 503: the request is genuine, but Twilio does not retry a 5xx unless the webhook URL's
    /// retry policy (`#rp=`) says so; see the [replay guard](crate::replay_guard) docs.
    ReplayStoreFailed,
    /// The [`ReplayGuardLayer`](crate::replay_guard::ReplayGuardLayer) got a request without
    /// a [`VerifiedWebhook`](crate::VerifiedWebhook), or with one that has no signature to key
    /// on: it is placed before `TwilioSignatureLayer`, or on a route without it. A
    /// misconfiguration, never passed on.
    /// 500.
    ReplayGuardMisplaced,
}

impl RejectionKind {
    /// The status code of the default response.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BodyTooLarge | Self::TooManyParameters => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyReadFailed => StatusCode::BAD_REQUEST,
            Self::ResolverFailed | Self::ReplayStoreFailed => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ReplayCopy => StatusCode::OK,
            Self::ReplayInFlight => StatusCode::CONFLICT,
            Self::ReplayGuardMisplaced => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// A short, stable, snake_case name for logs and metrics (`"signature_mismatch"`).
    pub const fn as_str(self) -> &'static str {
        match self.words() {
            Words::Verify(error) => error.as_str(),
            Words::Own { name, .. } => name,
        }
    }

    fn description(self) -> &'static str {
        match self.words() {
            Words::Verify(error) => error.description(),
            Words::Own { description, .. } => description,
        }
    }

    /// Where this kind's name and description come from: the [`VerifyError`] it stands for
    /// when verification itself refused (so the two never drift apart), else its own.
    const fn words(self) -> Words {
        match self {
            Self::MissingSignature => Words::Verify(VerifyError::MissingSignature),
            Self::DuplicateSignature => Words::Verify(VerifyError::DuplicateSignature),
            Self::MalformedSignature => Words::Verify(VerifyError::MalformedSignature),
            Self::MalformedSettings => Words::Verify(VerifyError::MalformedSettings),
            Self::UnsupportedAlgorithm => Words::Verify(VerifyError::UnsupportedAlgorithm),
            Self::UnsupportedContentType => Words::Verify(VerifyError::UnsupportedContentType),
            Self::SignatureMismatch => Words::Verify(VerifyError::SignatureMismatch),
            Self::BodyHashMismatch => Words::Verify(VerifyError::BodyHashMismatch),
            Self::UnknownAccount => own("unknown_account", "no credentials for this account"),
            Self::UnknownSharedKey => own("unknown_shared_key", "no secret for this SharedKey id"),
            Self::UnresolvableUrl => own("unresolvable_url", "public URL could not be rebuilt"),
            Self::BodyTooLarge => own("body_too_large", "request body too large"),
            Self::BodyReadFailed => own("body_read_failed", "request body could not be read"),
            Self::ResolverFailed => own("resolver_failed", "credential lookup failed"),
            Self::MethodNotAllowed => Words::Verify(VerifyError::MethodNotAllowed),
            Self::TooManyParameters => Words::Verify(VerifyError::TooManyParameters),
            Self::ConflictingAccountSid => own(
                "conflicting_account_sid",
                "request names more than one AccountSid",
            ),
            Self::AccountMismatch => own(
                "account_mismatch",
                "request names an account the credentials do not belong to",
            ),
            Self::InvalidAccountSid => own("invalid_account_sid", "malformed AccountSid"),
            Self::InvalidSharedKeyId => own("invalid_shared_key_id", "malformed SharedKey id"),
            Self::ReplayCopy => own("replay_copy", "copy of a webhook already processed"),
            Self::ReplayInFlight => own(
                "replay_in_flight",
                "a copy of this webhook is being handled",
            ),
            Self::ReplayStoreFailed => own("replay_store_failed", "replay store failed"),
            Self::ReplayGuardMisplaced => own(
                "replay_guard_misplaced",
                "replay guard got a request the signature layer did not verify",
            ),
        }
    }
}

/// See [`RejectionKind::words`].
enum Words {
    Verify(VerifyError),
    Own {
        name: &'static str,
        description: &'static str,
    },
}

const fn own(name: &'static str, description: &'static str) -> Words {
    Words::Own { name, description }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<VerifyError> for RejectionKind {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::MissingSignature => Self::MissingSignature,
            VerifyError::DuplicateSignature => Self::DuplicateSignature,
            VerifyError::MalformedSettings => Self::MalformedSettings,
            VerifyError::UnsupportedAlgorithm => Self::UnsupportedAlgorithm,
            VerifyError::MalformedSignature => Self::MalformedSignature,
            VerifyError::UnsupportedContentType => Self::UnsupportedContentType,
            VerifyError::BodyHashMismatch => Self::BodyHashMismatch,
            VerifyError::MethodNotAllowed => Self::MethodNotAllowed,
            VerifyError::TooManyParameters => Self::TooManyParameters,
            // Kept explicit so a new VerifyError variant is a compile error here, not a
            // silent mismatch.
            VerifyError::SignatureMismatch => Self::SignatureMismatch,
        }
    }
}

impl From<crate::account::AccountError> for RejectionKind {
    fn from(error: crate::account::AccountError) -> Self {
        use crate::account::AccountError;
        match error {
            AccountError::Invalid => Self::InvalidAccountSid,
            AccountError::Conflicting => Self::ConflictingAccountSid,
            AccountError::Mismatch => Self::AccountMismatch,
        }
    }
}

/// Builds the response for a rejected request, in front of an inner service whose responses
/// have bodies of type `B`.
///
/// Implemented for closures `Fn(&Rejection) -> Response<X>` where `X: Into<B>`: an axum
/// handler's `IntoResponse` output, or any body the inner service's body converts from (a
/// `String` or `Bytes` for `http_body_util::Full<Bytes>`). The body is handed on as it is,
/// without boxing. Whatever the response, the middleware adds the [`Rejection`] to its
/// extensions.
///
/// With axum:
///
/// ```
/// use axum::{Router, http::StatusCode, response::{IntoResponse, Response}, routing::post};
/// use tower_twilio::{Credentials, Rejection, RejectionKind, TwilioSignatureLayer};
///
/// let twilio = TwilioSignatureLayer::new(Credentials::new())
///     .rejection_response(|rejection: &Rejection| -> Response {
///         match rejection.kind() {
///             RejectionKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
///             _ => (StatusCode::FORBIDDEN, "not signed by Twilio").into_response(),
///         }
///     });
/// let app: Router = Router::new()
///     .route("/twilio/sms", post(|| async { "<Response/>" }))
///     .route_layer(twilio);
/// # let _ = app;
/// ```
///
/// A type of your own implements it for the bodies it can build; `ResponseBody::from` wraps
/// one:
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_twilio::{Rejection, RejectionResponse, ResponseBody};
///
/// #[derive(Clone)]
/// struct Teapot;
///
/// impl<B: From<&'static str>> RejectionResponse<B> for Teapot {
///     fn rejection_response(&self, _: &Rejection) -> Response<ResponseBody<B>> {
///         let mut response = Response::new(ResponseBody::from(B::from("no")));
///         *response.status_mut() = StatusCode::IM_A_TEAPOT;
///         response
///     }
/// }
/// ```
pub trait RejectionResponse<B> {
    /// The response for `rejection`.
    fn rejection_response(&self, rejection: &Rejection) -> Response<ResponseBody<B>>;
}

impl<F, B, X> RejectionResponse<B> for F
where
    F: Fn(&Rejection) -> Response<X>,
    X: Into<B>,
{
    fn rejection_response(&self, rejection: &Rejection) -> Response<ResponseBody<B>> {
        self(rejection).map(|body| ResponseBody::inner(body.into()))
    }
}

/// The default rejection response: the kind's status code and its reason phrase as a short
/// `text/plain` body (`Forbidden`), whatever the inner service's body type. It does not say
/// which check failed; the typed reason is in the response extensions and in the security
/// event.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejectionResponse;

impl<B> RejectionResponse<B> for DefaultRejectionResponse {
    fn rejection_response(&self, rejection: &Rejection) -> Response<ResponseBody<B>> {
        default_response(rejection).map(ResponseBody::full)
    }
}

/// [`DefaultRejectionResponse`]'s answer, with its body as bytes (for the layers with bodies
/// of their own).
pub(crate) fn default_response(rejection: &Rejection) -> Response<Bytes> {
    let status = rejection.status();
    let mut response = Response::new(Bytes::from_static(
        status.canonical_reason().unwrap_or("Rejected").as_bytes(),
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            RejectionKind::SignatureMismatch.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            RejectionKind::BodyTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            RejectionKind::ResolverFailed.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            RejectionKind::BodyReadFailed.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn kinds_from_verification_use_its_names_and_descriptions() {
        for error in VerifyError::ALL {
            let kind = RejectionKind::from(error);
            assert_eq!(kind.as_str(), error.as_str());
            assert_eq!(Rejection::new(kind).to_string(), error.to_string());
        }
        assert_eq!(RejectionKind::UnknownAccount.as_str(), "unknown_account");
        assert_eq!(
            Rejection::new(RejectionKind::ResolverFailed).to_string(),
            "credential lookup failed"
        );
    }

    #[tokio::test]
    async fn default_response_is_short_and_generic() {
        use http_body_util::BodyExt;

        let response: Response<ResponseBody<String>> = DefaultRejectionResponse
            .rejection_response(&Rejection::new(RejectionKind::SignatureMismatch));
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Forbidden");
    }

    #[tokio::test]
    async fn a_closure_answers_with_any_body_that_converts_into_the_inner_one() {
        use http_body_util::{BodyExt, Full};

        let rejection = Rejection::new(RejectionKind::UnknownAccount);
        let text = |rejection: &Rejection| Response::new(format!("refused: {rejection}"));
        let response: Response<ResponseBody<Full<Bytes>>> = text.rejection_response(&rejection);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "refused: no credentials for this account");
    }
}
