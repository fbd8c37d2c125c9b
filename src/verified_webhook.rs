//! [`VerifiedWebhook`]: what the inner service learns about a verified request.

use std::{fmt, net::IpAddr, sync::Arc};

use http::HeaderValue;

use crate::{
    form::Params,
    signature::Algorithm,
    verify::{Covered, UrlForm},
};

/// Inserted into the request extensions of every request that passed verification.
///
/// # What the signature covered, field by field
///
/// | field | covered by the signature? |
/// | --- | --- |
/// | [`url`](Self::url) | yes: the path and query byte for byte, or a spelling that decodes to the same path segments, query pairs and host ([`url_form`](Self::url_form) says which) |
/// | [`params`](Self::params) | yes: the form body's decoded pairs, or a `GET`'s query (part of the signed URL) |
/// | the body (read it yourself) | yes: through the form parameters, or through `bodySHA256` for any other body ([`covered`](Self::covered) says which); a body neither covers is refused |
/// | the method | only `GET` and `POST` get here; the method itself is not signed |
/// | [`account_sid`](Self::account_sid) | yes when the request names it (the one value it names everywhere); when only the resolver named it (Event Streams), it is the account whose secret verified |
/// | [`tenant_id`](Self::tenant_id), [`credential`](Self::credential), [`algorithm`](Self::algorithm) | what the resolver answered and which of its secrets verified: facts about the verification, not request data |
/// | [`idempotency_token`](Self::idempotency_token) and every other header | **no**: headers are never signed |
///
/// ```
/// use axum::Extension;
/// use tower_twilio::VerifiedWebhook;
///
/// async fn incoming_sms(Extension(webhook): Extension<VerifiedWebhook>) -> String {
///     let body = webhook.params().get("Body").unwrap_or_default();
///     format!("{} said {body}", webhook.params().get("From").unwrap_or("someone"))
/// }
/// ```
///
/// Cloning is cheap (one reference count), so the axum `Extension` extractor costs nothing.
#[derive(Clone)]
pub struct VerifiedWebhook {
    inner: Arc<Context>,
}

/// What a [`VerifiedWebhook`] holds: the verification's [`Facts`], the URL and the client.
struct Context {
    facts: Facts,
    /// Without userinfo.
    url: String,
    /// The real client, as the signature layer found it: for the replay guard's events.
    client_ip: Option<IpAddr>,
}

/// What verification established, built once per request from what the middleware already
/// has: nothing is parsed or split a second time. The URL and the client address, which the
/// response future holds until then, join them in [`VerifiedWebhook::new`].
pub(crate) struct Facts {
    pub(crate) account_sid: Option<Arc<str>>,
    pub(crate) tenant_id: Option<Arc<str>>,
    pub(crate) credential: Arc<str>,
    pub(crate) algorithm: Algorithm,
    pub(crate) url_form: UrlForm,
    pub(crate) covered: Covered,
    pub(crate) params: Params,
    pub(crate) idempotency_token: Option<HeaderValue>,
    /// The `X-Twilio-Signature` header that verified: the replay guard's key. Never shown.
    pub(crate) signature: Option<SignatureBytes>,
}

/// A verified signature header, held inline so that keeping it costs no allocation: the
/// canonical base64 of an HMAC-SHA1 or HMAC-SHA256 is 28 or 44 bytes.
#[derive(Clone, Copy)]
pub(crate) struct SignatureBytes {
    bytes: [u8; 64],
    len: u8,
}

impl SignatureBytes {
    /// `None` when `value` is longer than 64 bytes (no verified signature is).
    pub(crate) fn new(value: &[u8]) -> Option<Self> {
        let len = u8::try_from(value.len()).ok().filter(|&len| len <= 64)?;
        let mut bytes = [0; 64];
        bytes[..value.len()].copy_from_slice(value);
        Some(Self { bytes, len })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignatureBytes(<redacted>)")
    }
}

impl VerifiedWebhook {
    /// The context for the inner service: `facts`, with `url` (the one verification used,
    /// without its userinfo: see [`RebuiltUrl::take_without_userinfo`]) and the real client's
    /// address.
    ///
    /// [`RebuiltUrl::take_without_userinfo`]: crate::url::rebuilt::RebuiltUrl::take_without_userinfo
    pub(crate) fn new(facts: Facts, url: String, client_ip: Option<IpAddr>) -> Self {
        Self {
            inner: Arc::new(Context {
                facts,
                url,
                client_ip,
            }),
        }
    }

    pub(crate) fn account_sid_arc(&self) -> Option<&Arc<str>> {
        self.inner.facts.account_sid.as_ref()
    }

    pub(crate) fn tenant_id_arc(&self) -> Option<&Arc<str>> {
        self.inner.facts.tenant_id.as_ref()
    }

    pub(crate) fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.inner.client_ip
    }

    /// The account this request belongs to: the account the verifying credentials belong to
    /// when the resolver named it ([`Credentials::account`](crate::Credentials::account)),
    /// else the `AccountSid` the request names (form body, query, or top level of a JSON body).
    ///
    /// Bound: a request naming two different `AccountSid`s, a malformed one, or an account
    /// other than the credentials' is refused before it gets here, and a SharedKey verifies
    /// only for credentials that name their account. `None` when neither the request nor the
    /// resolver names one.
    pub fn account_sid(&self) -> Option<&str> {
        self.inner.facts.account_sid.as_deref()
    }

    /// The tenant the resolver named, if any: not request data, but the answer for the
    /// account, SharedKey id, path or host the resolver looked at.
    pub fn tenant_id(&self) -> Option<&str> {
        self.inner.facts.tenant_id.as_deref()
    }

    /// The label of the secret that matched (`"primary"`, `"secondary"`,
    /// `"shared_key:<id>"`, …): never the secret.
    pub fn credential(&self) -> &str {
        &self.inner.facts.credential
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.facts.algorithm
    }

    /// Which spelling of the URL matched.
    pub fn url_form(&self) -> UrlForm {
        self.inner.facts.url_form
    }

    /// What the signature covered besides the URL: the form parameters, the body through
    /// `bodySHA256` (a JSON body, say), or nothing (the URL alone: a `GET`, or an empty body).
    ///
    /// ```
    /// use tower_twilio::{VerifiedWebhook, verify::Covered};
    ///
    /// fn fields(webhook: &VerifiedWebhook, body: &[u8]) -> Option<serde_json::Value> {
    ///     match webhook.covered() {
    ///         Covered::BodySha256 => serde_json::from_slice(body).ok(),
    ///         _ => None, // read webhook.params()
    ///     }
    /// }
    /// ```
    pub fn covered(&self) -> Covered {
        self.inner.facts.covered
    }

    /// The decoded parameters: the form body's, or the query's for a `GET`. Empty for a JSON
    /// body (read the body for those). Covered by the signature, pair for pair.
    pub fn params(&self) -> &Params {
        &self.inner.facts.params
    }

    /// The `I-Twilio-Idempotency-Token` header, for de-duplicating Twilio's retries. Not
    /// covered by the signature.
    pub fn idempotency_token(&self) -> Option<&str> {
        self.inner
            .facts
            .idempotency_token
            .as_ref()
            .and_then(|value| value.to_str().ok())
    }

    /// The signature header that verified, for the replay key: crate-private, never in `Debug`.
    pub(crate) fn signature(&self) -> Option<&[u8]> {
        self.inner
            .facts
            .signature
            .as_ref()
            .map(SignatureBytes::as_bytes)
    }

    /// The idempotency token's raw bytes, for the replay key of the delivery scope.
    pub(crate) fn idempotency_token_bytes(&self) -> Option<&[u8]> {
        self.inner
            .facts
            .idempotency_token
            .as_ref()
            .map(HeaderValue::as_bytes)
    }

    /// The public URL the signature was checked against (as rebuilt, before port variants),
    /// with any userinfo redacted. Its path and query are the request target's, byte for byte.
    /// `Debug` shows it with the query's values redacted.
    pub fn url(&self) -> &str {
        &self.inner.url
    }
}

/// A verified webhook as the signature layer leaves one, built by hand for the unit tests of
/// what reads it (the replay guard, the stores).
#[cfg(test)]
impl VerifiedWebhook {
    pub(crate) fn for_tests(
        url: &str,
        covered: Covered,
        signature: Option<&[u8]>,
        idempotency_token: Option<HeaderValue>,
    ) -> Self {
        let facts = Facts {
            account_sid: None,
            tenant_id: None,
            credential: "primary".into(),
            algorithm: Algorithm::HmacSha1,
            url_form: UrlForm::AsReceived,
            covered,
            params: Params::default(),
            idempotency_token,
            signature: signature
                .map(|signature| SignatureBytes::new(signature).expect("at most 64 bytes")),
        };
        Self::new(facts, url.to_owned(), None)
    }
}

impl fmt::Debug for VerifiedWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedWebhook")
            .field("account_sid", &self.account_sid())
            .field("tenant_id", &self.tenant_id())
            .field("credential", &self.credential())
            .field("algorithm", &self.algorithm())
            .field("url_form", &self.url_form())
            .field("covered", &self.covered())
            .field("params", self.params())
            .field("idempotency_token", &self.idempotency_token())
            // A `GET` webhook's query holds every parameter value: names only.
            .field("url", &crate::url::redact::redact_url(self.url()))
            .finish()
    }
}
