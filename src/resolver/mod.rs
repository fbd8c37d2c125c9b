//! Where the secrets come from: the [`ResolveCredentials`] trait, [`Credentials`], and
//! ready-made resolvers and combinators.
//!
//! The middleware asks its resolver once per request, after the body has been read, with a
//! [`ResolveRequest`]: the `AccountSid` parameter (from a form body, a `GET` query or a JSON
//! body), the SharedKey id from the settings header, and the request's method, URI, headers and
//! extensions. The resolver answers with one of three outcomes:
//!
//! | answer | meaning | the middleware |
//! | --- | --- | --- |
//! | `Ok(Some(credentials))` | these secrets may have signed the request | verifies against them |
//! | `Ok(None)` | unknown account or SharedKey | 403, [`UnknownAccount`](crate::RejectionKind::UnknownAccount) or [`UnknownSharedKey`](crate::RejectionKind::UnknownSharedKey) |
//! | `Err(e)` | the lookup itself failed (database down, timeout) | 503, [`ResolverFailed`](crate::RejectionKind::ResolverFailed); never accepts |
//!
//! # SharedKeys and auth tokens never mix
//!
//! A request that carries `X-Twilio-Webhooks-Signature-Settings: key=<id>,…` is verified only
//! with the [`Credentials::shared_key`] whose id is `<id>`; a request without it only with
//! [`Credentials::auth_token`]s. The middleware enforces this whatever the resolver returns, so
//! a resolver cannot make a SharedKey route silently fall back to the auth token.
//!
//! # Closures
//!
//! Any `FnMut(ResolveRequest) -> impl Future<Output = Resolution>` is a resolver, so both
//! `|req| async move { … }` and `async move |req| { … }` work:
//!
//! ```
//! use tower_twilio::{Credentials, Secret, resolver::{ResolveCredentials, ResolveRequest, Resolution}};
//!
//! fn assert_resolver<R: ResolveCredentials>(_: R) {}
//!
//! let token = Secret::new("0123456789abcdef0123456789abcdef").unwrap();
//! assert_resolver(move |req: ResolveRequest| {
//!     let token = token.clone();
//!     async move {
//!         Ok(match req.account_sid() {
//!             Some("AC0123") => Some(Credentials::new().auth_token("primary", token)),
//!             _ => None,
//!         })
//!     }
//! });
//! ```
//!
//! # Ready-made resolvers and combinators
//!
//! | type | what it does |
//! | --- | --- |
//! | [`Credentials`] | one fixed set of secrets for every request (a single account): answered at once, see [`ResolveCredentials::fixed_credentials`] |
//! | [`AccountMap`] | an in-memory map by `AccountSid` and by SharedKey id |
//! | [`Fallback`] (`.or(legacy)`) | asks a preferred resolver, then a legacy one for accounts the first does not know; an error is returned, never passed to the legacy one |
//! | [`Timeout`] (`.timeout(d)`) | fails a lookup that takes longer than `d` with [`ResolveTimeout`] |
//! | [`Cache`] (`.cached()`, feature `cache`) | keeps hits and misses for their own TTLs (errors are not kept); one lookup per account at a time |
//!
//! The methods in parentheses come from [`ResolveCredentialsExt`]. A database-backed setup that
//! has moved its tokens from a `tenants` table to a `tenant_settings` table reads the new
//! table first, falls back to the old one, bounds each lookup and caches the answers; here
//! two `HashMap`s stand in for the tables:
//!
//! ```
//! use std::{collections::HashMap, sync::Arc, time::Duration};
//! use tower_twilio::{Credentials, Secret, resolver::{ResolveCredentials, ResolveCredentialsExt, ResolveRequest}};
//!
//! # #[cfg(not(feature = "cache"))] fn main() {}
//! # #[cfg(feature = "cache")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_twilio::BoxError> {
//! let tenant = |name: &str, token: &str| Ok::<_, tower_twilio::ConfigError>(
//!     Credentials::new().tenant(name).auth_token("primary", Secret::new(token)?));
//! let tenant_settings = Arc::new(HashMap::from([("AC_new", tenant("acme", "new-token")?)]));
//! let tenants = Arc::new(HashMap::from([
//!     ("AC_new", tenant("acme", "stale-token")?),
//!     ("AC_old", tenant("globex", "old-token")?),
//! ]));
//!
//! // A table lookup, e.g. `SELECT … FROM tenant_settings WHERE account_sid = $1`.
//! let query = |table: Arc<HashMap<&'static str, Credentials>>| move |req: ResolveRequest| {
//!     let table = Arc::clone(&table);
//!     async move { Ok(req.account_sid().and_then(|sid| table.get(sid).cloned())) }
//! };
//! let mut resolver = query(tenant_settings)
//!     .or(query(tenants))
//!     .timeout(Duration::from_secs(2))
//!     .cached()
//!     .ttl(Duration::from_secs(60));
//!
//! let request = |sid: &str| {
//!     let (parts, ()) = http::Request::post("/twilio/sms").body(()).unwrap().into_parts();
//!     ResolveRequest::new(parts, Some(sid), None)
//! };
//! let found = resolver.resolve(request("AC_new")).await?.expect("in tenant_settings");
//! assert_eq!(found.iter().next().unwrap().secret(), &Secret::new("new-token")?);
//! let found = resolver.resolve(request("AC_old")).await?.expect("in the legacy table");
//! assert_eq!(found.tenant_id(), Some("globex"));
//! assert!(resolver.resolve(request("AC_unknown")).await?.is_none());
//! # Ok(())
//! # }
//! ```

use std::{fmt, future::Future, sync::Arc};

use http::{Extensions, HeaderMap, Method, Uri, request::Parts};

use crate::{BoxError, Secret};

#[cfg(feature = "cache")]
mod cache;
mod ext;
mod fallback;
mod map;
mod timeout;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cache::{Cache, CacheFuture};
pub use ext::ResolveCredentialsExt;
pub use fallback::{Fallback, FallbackFuture};
pub use map::AccountMap;
pub use timeout::{ResolveTimeout, Timeout, TimeoutFuture};

/// What a resolver answers: see the [module docs](self).
pub type Resolution = Result<Option<Credentials>, BoxError>;

/// Finds the secrets that may have signed a request.
///
/// Modelled on tower-http's `AsyncAuthorizeRequest`: the future is an associated type so the
/// middleware's response future stays nameable and unboxed. Implemented for closures; see the
/// [module docs](self).
pub trait ResolveCredentials {
    /// The future [`resolve`](Self::resolve) returns.
    type Future: Future<Output = Resolution> + Send + 'static;

    /// Looks up the credentials for `request`.
    fn resolve(&mut self, request: ResolveRequest) -> Self::Future;

    /// The credentials this resolver answers every request with, when its answer never
    /// depends on the request: the middleware then verifies with them at once, without
    /// building a view of the request or awaiting a future. `None` (the default) asks
    /// [`resolve`](Self::resolve) for each request; [`Credentials`] (a single account) answers
    /// with itself.
    ///
    /// A resolver that returns `Some` must answer [`resolve`](Self::resolve) with
    /// `Ok(Some(..))` of the same credentials.
    fn fixed_credentials(&self) -> Option<&Credentials> {
        None
    }
}

impl<F, Fut> ResolveCredentials for F
where
    F: FnMut(ResolveRequest) -> Fut,
    Fut: Future<Output = Resolution> + Send + 'static,
{
    type Future = Fut;

    fn resolve(&mut self, request: ResolveRequest) -> Self::Future {
        self(request)
    }
}

/// A fixed set of credentials is a resolver that always answers with it: the setup for a
/// single Twilio account.
///
/// ```
/// use tower_twilio::{Credentials, Secret};
///
/// let credentials = Credentials::new()
///     .auth_token("primary", Secret::new("0123456789abcdef0123456789abcdef").unwrap());
/// // `credentials` can be passed to `TwilioSignatureLayer::new` as it is.
/// # let _ = credentials;
/// ```
impl ResolveCredentials for Credentials {
    type Future = std::future::Ready<Resolution>;

    fn resolve(&mut self, _request: ResolveRequest) -> Self::Future {
        std::future::ready(Ok(Some(self.clone())))
    }

    fn fixed_credentials(&self) -> Option<&Credentials> {
        Some(self)
    }
}

/// What a resolver sees of a request. Cheap to clone.
///
/// The middleware has already read the body; the parameters it found are here so that a
/// resolver never parses the body again.
#[derive(Clone)]
pub struct ResolveRequest {
    inner: Arc<RequestInfo>,
}

struct RequestInfo {
    parts: Parts,
    account_sid: Option<Arc<str>>,
    shared_key_id: Option<Arc<str>>,
}

impl ResolveRequest {
    /// A view of a request with these parts, the `AccountSid` it names and the SharedKey id
    /// of its settings header, as the middleware builds it: for testing resolvers.
    ///
    /// ```
    /// use tower_twilio::resolver::ResolveRequest;
    ///
    /// let (parts, ()) = http::Request::post("/twilio/sms").body(()).unwrap().into_parts();
    /// let request = ResolveRequest::new(parts, Some("AC0123456789abcdef0123456789abcdef"), None);
    /// assert_eq!(request.account_sid(), Some("AC0123456789abcdef0123456789abcdef"));
    /// assert_eq!(request.shared_key_id(), None);
    /// ```
    pub fn new(parts: Parts, account_sid: Option<&str>, shared_key_id: Option<&str>) -> Self {
        Self::from_request(
            parts,
            account_sid.map(Arc::from),
            shared_key_id.map(Arc::from),
        )
    }

    /// The `AccountSid` the request names: in its form body, its query, or the top level of a
    /// JSON body; `None` when it names none (an Event Streams array, say: look at the path or
    /// host then). The middleware has already checked that it is `AC` + 32 hex digits and that
    /// every place names the same one. Unverified: use it to choose secrets, never to
    /// authorise; the answer's [`Credentials::account`] binds it once the signature checks.
    pub fn account_sid(&self) -> Option<&str> {
        self.inner.account_sid.as_deref()
    }

    /// The SharedKey id named by `X-Twilio-Webhooks-Signature-Settings` (`key=`), when the
    /// request carries that header. Such a request is verified only with that SharedKey.
    pub fn shared_key_id(&self) -> Option<&str> {
        self.inner.shared_key_id.as_deref()
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.inner.parts.method
    }

    /// The request target as received.
    pub fn uri(&self) -> &Uri {
        &self.inner.parts.uri
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.inner.parts.headers
    }

    /// The request extensions, e.g. a tenant id an earlier middleware inserted.
    pub fn extensions(&self) -> &Extensions {
        &self.inner.parts.extensions
    }

    pub(crate) fn from_request(
        parts: Parts,
        account_sid: Option<Arc<str>>,
        shared_key_id: Option<Arc<str>>,
    ) -> Self {
        Self {
            inner: Arc::new(RequestInfo {
                parts,
                account_sid,
                shared_key_id,
            }),
        }
    }

    /// Takes the parts back once the resolver is done; clones them if the resolver kept a
    /// copy of this view.
    pub(crate) fn into_parts(self) -> Parts {
        match Arc::try_unwrap(self.inner) {
            Ok(info) => info.parts,
            Err(shared) => clone_parts(&shared.parts),
        }
    }
}

fn clone_parts(parts: &Parts) -> Parts {
    let (mut clone, ()) = http::Request::new(()).into_parts();
    clone.method = parts.method.clone();
    clone.uri = parts.uri.clone();
    clone.version = parts.version;
    clone.headers = parts.headers.clone();
    clone.extensions = parts.extensions.clone();
    clone
}

impl fmt::Debug for ResolveRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveRequest")
            .field("account_sid", &self.account_sid())
            .field("shared_key_id", &self.shared_key_id())
            .field("method", self.method())
            .field("uri", self.uri())
            .finish_non_exhaustive()
    }
}

/// The secrets that may have signed one request, each with a label, and the tenant they belong
/// to.
///
/// Labels say which secret matched (in the verified request context and in events) without
/// revealing it: `"primary"` and `"secondary"` for an auth-token rotation, `"shared_key:<id>"`
/// for a SharedKey.
///
/// ```
/// use tower_twilio::{Credentials, Secret};
///
/// let credentials = Credentials::new()
///     .tenant("acme")
///     .auth_token("primary", Secret::new("new-token").unwrap())
///     .auth_token("secondary", Secret::new("old-token").unwrap())
///     .shared_key("webhooks_sharedkey_1", Secret::new("shared-secret").unwrap());
/// let labels: Vec<&str> = credentials.iter().map(|c| c.label()).collect();
/// assert_eq!(labels, ["primary", "secondary", "shared_key:webhooks_sharedkey_1"]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    tenant: Option<Arc<str>>,
    account: Option<Arc<str>>,
    /// Shared, so that handing the same credentials to every request (a static resolver, a
    /// cache hit) copies a pointer, not the list.
    secrets: Arc<Vec<Credential>>,
}

impl Credentials {
    /// No tenant and no secrets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the tenant these credentials belong to; it appears in the verified request
    /// context and in events.
    #[must_use]
    pub fn tenant(mut self, tenant_id: impl Into<Arc<str>>) -> Self {
        self.tenant = Some(tenant_id.into());
        self
    }

    /// Adds an auth token under `label` (e.g. `"primary"`). Add several during a rotation;
    /// they are tried in the order added.
    #[must_use]
    pub fn auth_token(mut self, label: impl Into<Arc<str>>, secret: Secret) -> Self {
        Arc::make_mut(&mut self.secrets).push(Credential {
            label: label.into(),
            kind: CredentialKind::AuthToken,
            secret,
        });
        self
    }

    /// Adds the secret of the SharedKey with id `key_id`, labelled `shared_key:<key_id>`.
    ///
    /// A SharedKey belongs to an account: it verifies a request only when these credentials
    /// name it ([`account`](Self::account); [`AccountMap`] does that for its entries), and
    /// only if the request names that account or none.
    #[must_use]
    pub fn shared_key(mut self, key_id: impl Into<Arc<str>>, secret: Secret) -> Self {
        let key_id = key_id.into();
        Arc::make_mut(&mut self.secrets).push(Credential {
            label: format!("shared_key:{key_id}").into(),
            kind: CredentialKind::SharedKey { key_id },
            secret,
        });
        self
    }

    /// Names the Twilio account (`AC…`) these credentials belong to.
    ///
    /// A request that names another `AccountSid` is then refused
    /// ([`AccountMismatch`](crate::RejectionKind::AccountMismatch)) even if one of these
    /// secrets signed it, and a verified request reports this account. A [`shared_key`]
    /// verifies only when the account is named: the settings header names the key, not the
    /// account, so without it a tenant's SharedKey could vouch for a body that names any
    /// account.
    ///
    /// [`shared_key`]: Self::shared_key
    #[must_use]
    pub fn account(mut self, account_sid: impl Into<Arc<str>>) -> Self {
        self.account = Some(account_sid.into());
        self
    }

    /// The account these credentials belong to, if named.
    pub fn account_sid(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The tenant, if named.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The secrets, in the order they are tried.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Credential> + Clone {
        self.secrets.iter()
    }

    /// Whether there are no secrets.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The ids of the SharedKeys among these secrets.
    pub(crate) fn shared_key_ids(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().filter_map(|c| match &c.kind {
            CredentialKind::SharedKey { key_id } => Some(&**key_id),
            CredentialKind::AuthToken => None,
        })
    }

    /// Roughly the heap memory these credentials hold, for the resolver cache's weigher:
    /// names, labels, secrets and the HMAC key states each secret may cache.
    #[cfg(feature = "cache")]
    pub(crate) fn approximate_size(&self) -> usize {
        const PER_SECRET: usize = 512;
        let names = self.tenant.as_deref().map_or(0, str::len)
            + self.account.as_deref().map_or(0, str::len);
        let secrets: usize = self
            .secrets
            .iter()
            .map(|c| {
                let key_id = match &c.kind {
                    CredentialKind::SharedKey { key_id } => key_id.len(),
                    CredentialKind::AuthToken => 0,
                };
                PER_SECRET + c.label.len() + key_id + c.secret.expose_secret().len()
            })
            .sum();
        std::mem::size_of::<Self>() + names + secrets
    }

    pub(crate) fn account_arc(&self) -> Option<&Arc<str>> {
        self.account.as_ref()
    }

    pub(crate) fn tenant_arc(&self) -> Option<&Arc<str>> {
        self.tenant.as_ref()
    }
}

/// One labelled secret.
#[derive(Clone, Debug)]
pub struct Credential {
    label: Arc<str>,
    kind: CredentialKind,
    secret: Secret,
}

impl Credential {
    /// The label, e.g. `"primary"` or `"shared_key:<id>"`. Safe to log.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether this is an auth token or a SharedKey.
    pub fn kind(&self) -> &CredentialKind {
        &self.kind
    }

    /// The secret itself.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    pub(crate) fn label_arc(&self) -> &Arc<str> {
        &self.label
    }

    /// Whether this credential may verify a request with (`Some`) or without (`None`) a
    /// SharedKey id in its settings header.
    pub(crate) fn applies_to(&self, shared_key_id: Option<&str>) -> bool {
        match (&self.kind, shared_key_id) {
            (CredentialKind::AuthToken, None) => true,
            (CredentialKind::SharedKey { key_id }, Some(wanted)) => **key_id == *wanted,
            _ => false,
        }
    }
}

/// What kind of secret a [`Credential`] holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialKind {
    /// An account's (or subaccount's) auth token.
    AuthToken,
    /// A SharedKey secret.
    SharedKey {
        /// The SharedKey id, as in the settings header's `key=`.
        key_id: Arc<str>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s).unwrap()
    }

    #[test]
    fn credentials_apply_only_to_their_kind_of_request() {
        let credentials = Credentials::new()
            .auth_token("primary", secret("t"))
            .shared_key("k1", secret("s"));
        let for_request = |key: Option<&str>| -> Vec<&str> {
            credentials
                .iter()
                .filter(|c| c.applies_to(key))
                .map(Credential::label)
                .collect()
        };
        assert_eq!(for_request(None), ["primary"]);
        assert_eq!(for_request(Some("k1")), ["shared_key:k1"]);
        assert!(for_request(Some("k2")).is_empty());
    }

    #[test]
    fn debug_hides_secrets() {
        let credentials = Credentials::new()
            .tenant("acme")
            .auth_token("primary", secret("tok-XYZ"));
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("acme") && shown.contains("primary"),
            "{shown}"
        );
        assert!(!shown.contains("tok-XYZ"), "{shown}");
    }

    #[test]
    fn request_view_gives_back_its_parts() {
        let (parts, ()) = http::Request::post("/sms").body(()).unwrap().into_parts();
        let view = ResolveRequest::new(parts, Some("AC1"), Some("k"));
        assert_eq!(view.account_sid(), Some("AC1"));
        assert_eq!(view.shared_key_id(), Some("k"));
        let kept = view.clone();
        assert_eq!(view.into_parts().uri, "/sms");
        assert_eq!(kept.method(), Method::POST);
    }
}
