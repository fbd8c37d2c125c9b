//! Crate internals that the fuzz targets, property tests and benchmarks drive directly, in one
//! place: not part of the API, hidden from the docs, no semver promise. Nothing an application
//! needs is here; everything here is reached by the middleware through its public API.

use std::net::IpAddr;

use http::{Method, request::Parts};

pub use crate::url::{
    rebuilt::{RebuiltUrl, UrlError},
    spellings::{add_default_port, binds_same_request, remove_port},
    whatwg::{Unserializable, whatwg_form},
};
use crate::{
    PublicUrl,
    form::Params,
    signature::SignatureSettings,
    verify::{self, VerifyError, WebhookRequest},
};

/// Rebuilds the public URL of a request as the middleware does (`peer` is the connecting
/// client's address).
///
/// # Errors
///
/// [`UrlError`] when the request has no usable path or authority, or a trusted forwarding
/// header holds something that cannot be part of a URL.
pub fn reconstruct(
    public_url: &PublicUrl,
    parts: &Parts,
    peer: Option<IpAddr>,
) -> Result<RebuiltUrl, UrlError> {
    public_url.reconstruct(parts, peer)
}

/// The method rule: `GET` and `POST` pass, every other method is
/// [`VerifyError::MethodNotAllowed`].
///
/// # Errors
///
/// [`VerifyError::MethodNotAllowed`] for any method but `GET` and `POST`.
pub fn check_method(method: &Method) -> Result<(), VerifyError> {
    verify::check_method(method)
}

/// Every check [`WebhookRequest::verify`] runs that needs no secret.
///
/// # Errors
///
/// The same as [`WebhookRequest::verify`], except `SignatureMismatch` and `BodyHashMismatch`.
pub fn check_without_secrets(request: &WebhookRequest<'_>) -> Result<(), VerifyError> {
    request.check_without_secrets()
}

/// The request's settings header as verification reads it: `Ok(None)` when it has none.
///
/// # Errors
///
/// `MalformedSettings` when the header is repeated or not UTF-8, `UnsupportedAlgorithm` when
/// it names an unknown algorithm.
pub fn signature_settings_header<'a>(
    request: &WebhookRequest<'a>,
) -> Result<Option<SignatureSettings<'a>>, VerifyError> {
    request.signature_settings_header()
}

/// Appends to `out` what Twilio signs after the URL for `params` (sorted by code point).
pub fn write_canonical(params: &Params, out: &mut Vec<u8>) {
    params.write_canonical(out);
}
