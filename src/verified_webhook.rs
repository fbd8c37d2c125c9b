//! [`VerifiedWebhook`]: what the inner service learns about a verified request.

use std::sync::Arc;

use crate::{
    form::Params,
    signature::Algorithm,
    verify::{Covered, UrlForm},
};

/// Inserted into the request extensions of every request that passed verification.
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
#[derive(Debug, Clone)]
pub struct VerifiedWebhook {
    pub(crate) account_sid: Option<Arc<str>>,
    pub(crate) tenant_id: Option<Arc<str>>,
    pub(crate) credential: Arc<str>,
    pub(crate) algorithm: Algorithm,
    pub(crate) url_form: UrlForm,
    pub(crate) covered: Covered,
    pub(crate) params: Arc<Params>,
    pub(crate) idempotency_token: Option<String>,
    pub(crate) url: Arc<str>,
}

impl VerifiedWebhook {
    /// The `AccountSid` parameter (form body, `GET` query or JSON body), if present. Verified:
    /// it is covered by the signature.
    pub fn account_sid(&self) -> Option<&str> {
        self.account_sid.as_deref()
    }

    /// The tenant the resolver named, if any.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }

    /// The label of the secret that matched (`"primary"`, `"secondary"`,
    /// `"shared_key:<id>"`, …): never the secret.
    pub fn credential(&self) -> &str {
        &self.credential
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Which spelling of the URL matched.
    pub fn url_form(&self) -> UrlForm {
        self.url_form
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
        self.covered
    }

    /// The decoded parameters: the form body's, or the query's for a `GET`. Empty for a JSON
    /// body (read the body for those).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The `I-Twilio-Idempotency-Token` header, for de-duplicating Twilio's retries. Not
    /// covered by the signature.
    pub fn idempotency_token(&self) -> Option<&str> {
        self.idempotency_token.as_deref()
    }

    /// The public URL the signature was checked against (as rebuilt, before port variants).
    pub fn url(&self) -> &str {
        &self.url
    }
}
