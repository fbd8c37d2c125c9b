//! The middleware's decisions, as plain synchronous functions: the response future only drives
//! them (read the body, ask the resolver, call the inner service) and acts on their answers.
//!
//! ```text
//! check_head(parts, body size, config)    before the body:   the URL, or a Refusal
//! prepare(inbound, config)                the body is in:    Prepared (what to ask the resolver), or a Refusal
//! complete(inbound, prepared, resolution) the resolver answered: the VerifiedWebhook's Facts, or a Refusal
//! ```
//!
//! Each step runs the checks that need no more than what it is given, cheapest first, so that
//! a request that cannot pass never costs a body read or a credential lookup. A new rule goes
//! into the step that first has what it needs (a method or header rule into [`check_head`] or
//! [`prepare`], a rule about the credentials into [`complete`]) as one more function returning
//! `Result<_, Refusal>`.

use std::sync::Arc;

use http::{HeaderValue, Method, request::Parts};
use http_body::SizeHint;

use crate::{
    BoxError, account,
    body::CollectError,
    config::Config,
    form::{self, Params},
    rejection::{Rejection, RejectionKind},
    resolver::{Credentials, Resolution, ResolveRequest},
    url::rebuilt::RebuiltUrl,
    verified_webhook::{Facts, SignatureBytes},
    verify::{Prechecked, TwilioHeaders, VerifyError, WebhookRequest, check_method},
};

/// Why a request is refused, with what was known of it by then (for the event and the webhook
/// log). Becomes the [`Rejection`] in the response's extensions.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) kind: RejectionKind,
    source: Option<BoxError>,
    /// The tenant the resolver named, once it has answered.
    pub(crate) tenant_id: Option<Arc<str>>,
    /// The request's (unverified) `AccountSid`, once the body has been read.
    pub(crate) account_sid: Option<Arc<str>>,
    /// For a signature mismatch with the mismatch doctor on, what it needs besides the request.
    pub(crate) consult: Option<Consult>,
}

/// What the mismatch doctor needs to diagnose a refused request besides the request itself:
/// the credentials it was verified with. For an unknown account that is the key nobody holds,
/// so that the request path does the same work whether the account exists or not.
#[derive(Debug)]
pub(crate) struct Consult {
    pub(crate) credentials: Credentials,
    pub(crate) shared_key_id: Option<Arc<str>>,
}

impl Refusal {
    pub(crate) fn new(kind: RejectionKind) -> Self {
        Self {
            kind,
            source: None,
            tenant_id: None,
            account_sid: None,
            consult: None,
        }
    }

    fn with_source(kind: RejectionKind, source: BoxError) -> Self {
        Self {
            source: Some(source),
            ..Self::new(kind)
        }
    }

    fn about(mut self, credentials: Option<&Credentials>, account_sid: Option<&Arc<str>>) -> Self {
        self.tenant_id = credentials.and_then(|c| c.tenant_arc().cloned());
        self.account_sid = account_sid.cloned();
        self
    }

    /// Whether report-only mode passes the request on despite this refusal. Not when the body
    /// is over a limit (its size or its number of parameters: limits on resources hold in
    /// every mode) or unreadable (there is nothing sound to pass on), or the public URL could
    /// not be rebuilt.
    pub(crate) fn passes_in_report_only_mode(&self) -> bool {
        !matches!(
            self.kind,
            RejectionKind::BodyTooLarge
                | RejectionKind::TooManyParameters
                | RejectionKind::BodyReadFailed
                | RejectionKind::UnresolvableUrl
        )
    }

    /// Whether the request goes on to the inner service despite this refusal: report-only
    /// mode is on and passes it (see [`passes_in_report_only_mode`](Self::passes_in_report_only_mode)).
    pub(crate) fn passes_on(&self, config: &Config) -> bool {
        config.report_only && self.passes_in_report_only_mode()
    }

    pub(crate) fn into_rejection(self) -> Rejection {
        match self.source {
            Some(source) => Rejection::with_source(self.kind, source),
            None => Rejection::new(self.kind),
        }
    }
}

impl From<CollectError> for Refusal {
    fn from(error: CollectError) -> Self {
        match error {
            CollectError::TooLarge => Self::new(RejectionKind::BodyTooLarge),
            CollectError::Failed(source) => {
                Self::with_source(RejectionKind::BodyReadFailed, source)
            }
        }
    }
}

/// What [`check_head`] found.
#[derive(Debug)]
pub(crate) struct HeadCheck {
    /// The public URL and the real client, or, when the URL cannot be rebuilt, the raw request
    /// target and the peer (for the event).
    pub(crate) url: RebuiltUrl,
    /// Whether to read the body.
    pub(crate) verdict: Result<(), Refusal>,
}

/// The checks that need no body: the public URL can be rebuilt, the method is `GET` or `POST`
/// (see [`check_method`]), the signature header is there
/// (unless report-only mode passes unsigned requests on, which needs their body), and the
/// declared size is within the limit (hyper reports `Content-Length` as the exact size hint).
pub(crate) fn check_head(parts: &Parts, body_size: &SizeHint, config: &Config) -> HeadCheck {
    let peer = (config.peer_addr)(&parts.extensions);
    let Ok(url) = config.public_url.reconstruct(parts, peer) else {
        return HeadCheck {
            url: RebuiltUrl::new(parts.uri.to_string(), peer),
            verdict: Err(Refusal::new(RejectionKind::UnresolvableUrl)),
        };
    };
    let verdict = if let Err(error) = check_method(&parts.method)
        && !config.report_only
    {
        Err(Refusal::new(error.into()))
    } else if !config.report_only && !TwilioHeaders::has_signature(&parts.headers) {
        Err(Refusal::new(RejectionKind::MissingSignature))
    } else if body_size.lower() > config.max_body_size as u64 {
        Err(Refusal::new(RejectionKind::BodyTooLarge))
    } else {
        Ok(())
    };
    HeadCheck { url, verdict }
}

/// A request whose body has been read: what [`prepare`] and [`complete`] look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inbound<'a> {
    pub(crate) parts: &'a Parts,
    pub(crate) body: &'a [u8],
    pub(crate) url: &'a RebuiltUrl,
}

impl<'a> Inbound<'a> {
    /// The request for the pure verifier, with `headers` read from it.
    fn webhook_request(self, headers: TwilioHeaders<'a>) -> WebhookRequest<'a> {
        WebhookRequest::from_headers(&self.parts.method, &self.url.url, headers, self.body)
    }
}

/// What [`prepare`] found, carried to [`complete`] while the resolver works.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// What the headers say: the algorithm, the decoded signature, what it covers.
    prechecked: Prechecked,
    /// The decoded form body, or a `GET`'s query: parsed once, for the resolver, the
    /// signature and the handler.
    params: Option<Params>,
    account_sid: Option<Arc<str>>,
    shared_key_id: Option<Arc<str>>,
    /// What the verified context keeps of the headers, read with the others: the signature
    /// (the replay guard's key) and the idempotency token.
    signature: Option<SignatureBytes>,
    idempotency_token: Option<HeaderValue>,
}

impl Prepared {
    /// The resolver's view of the request. `parts` go with it and come back with
    /// [`ResolveRequest::into_parts`] once it has answered.
    pub(crate) fn resolve_request(&self, parts: Parts) -> ResolveRequest {
        ResolveRequest::from_request(parts, self.account_sid.clone(), self.shared_key_id.clone())
    }
}

/// The checks that need the body but no secret, before the (possibly remote) credential
/// lookup, and what the lookup needs: the SharedKey id, the parameters, the `AccountSid`.
pub(crate) fn prepare(inbound: Inbound<'_>, config: &Config) -> Result<Prepared, Refusal> {
    prepare_request(inbound, config).map_err(|refusal| {
        // Report-only mode passes a request with a missing or malformed signature on, but
        // not past the parameter limit: limits on resources hold in every mode.
        if refusal.passes_on(config) && over_param_limit(inbound, config.max_params) {
            Refusal::new(RejectionKind::TooManyParameters)
        } else {
            refusal
        }
    })
}

/// Whether the form body of a `POST` (whatever its signature says it covers) or a `GET`'s
/// query holds more than `max` parameters.
fn over_param_limit(inbound: Inbound<'_>, max: usize) -> bool {
    let parts = inbound.parts;
    let input = if parts.method == Method::GET {
        parts.uri.query().unwrap_or_default().as_bytes()
    } else if parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|content_type| form::is_form_urlencoded(content_type.as_bytes()))
    {
        inbound.body
    } else {
        return false;
    };
    form::count_pairs(input) > max
}

fn prepare_request(inbound: Inbound<'_>, config: &Config) -> Result<Prepared, Refusal> {
    let headers = TwilioHeaders::read(&inbound.parts.headers);
    let request = inbound
        .webhook_request(headers)
        .max_params(config.max_params);
    let shared_key_id = shared_key_id(&request)?;
    let prechecked = request
        .prechecked()
        .map_err(|error| Refusal::new(error.into()))?;
    let is_form = prechecked.is_form();
    let params = params(inbound, prechecked.form_pairs(), config.max_params)?;
    let form = params.as_ref().filter(|_| is_form);
    let account_sid = account_sid(inbound, form, headers.content_type())?;
    Ok(Prepared {
        prechecked,
        params,
        account_sid,
        shared_key_id,
        signature: headers.signature().and_then(SignatureBytes::new),
        idempotency_token: headers.idempotency_token.cloned(),
    })
}

/// The SharedKey id a request is signed with: `None` for an auth-token request. A SharedKey
/// request must say which key, or no secret can be chosen for it, and the id must be one
/// [`is_shared_key_id`](crate::account::is_shared_key_id) accepts: Twilio documents no format,
/// so an id of unbounded length or arbitrary bytes is refused before it reaches a resolver,
/// a cache key or a database query.
fn shared_key_id(request: &WebhookRequest<'_>) -> Result<Option<Arc<str>>, Refusal> {
    match request.signature_settings_header() {
        Ok(None) => Ok(None),
        Ok(Some(settings)) => match settings.key_id() {
            Some(id) if account::is_shared_key_id(id) => Ok(Some(Arc::from(id))),
            Some(_) => Err(Refusal::new(RejectionKind::InvalidSharedKeyId)),
            None => Err(Refusal::new(RejectionKind::MalformedSettings)),
        },
        Err(error) => Err(Refusal::new(error.into())),
    }
}

/// The parameters a handler reads: the form body's (`form_pairs` of them, counted within the
/// limit by the prechecks), or a `GET`'s query, refused when it holds more than `max` before
/// anything is decoded.
fn params(
    inbound: Inbound<'_>,
    form_pairs: Option<usize>,
    max: usize,
) -> Result<Option<Params>, Refusal> {
    if let Some(pairs) = form_pairs {
        Ok(Some(Params::parse_counted(inbound.body, pairs)))
    } else if inbound.parts.method == Method::GET {
        let query = inbound.parts.uri.query().unwrap_or_default();
        match Params::parse_at_most(query.as_bytes(), max) {
            Some(params) => Ok(Some(params)),
            None => Err(Refusal::new(RejectionKind::TooManyParameters)),
        }
    } else {
        Ok(None)
    }
}

/// The one `AccountSid` a request names, from its form body, its query and the top level of a
/// JSON body (see [`account::named_account_sid`]): refused when malformed or when two differ,
/// before any lookup. One allocation when it names one (the `Arc` the resolver's view, the
/// verified context, events and the webhook log share), none otherwise.
fn account_sid(
    inbound: Inbound<'_>,
    form: Option<&Params>,
    content_type: Option<&[u8]>,
) -> Result<Option<Arc<str>>, Refusal> {
    // A form body is not JSON: its content type was read as form-encoded.
    let json = (form.is_none() && content_type.is_some_and(form::is_json)).then_some(inbound.body);
    account::named_account_sid(form, inbound.parts.uri.query(), json)
        .map(|sid| sid.as_deref().map(Arc::from))
        .map_err(|error| Refusal::new(error.into()))
}

/// Verifies the request with the credentials the resolver returned: a SharedKey request only
/// with that SharedKey, any other only with auth tokens; then binds the account (see
/// [`account::bind_account`]). A verified request's [`Facts`] lack the URL and the client
/// address, which the response future hands over (moved, not copied) to
/// [`VerifiedWebhook::new`](crate::VerifiedWebhook). An unknown account or SharedKey costs the same HMAC work as a
/// known one with a wrong signature (see [`dummy_credentials`]).
pub(crate) fn complete(
    inbound: Inbound<'_>,
    prepared: Prepared,
    resolution: Resolution,
    config: &Config,
) -> Result<Facts, Refusal> {
    let Prepared {
        prechecked,
        params,
        account_sid,
        shared_key_id,
        signature,
        idempotency_token,
    } = prepared;
    let unknown = if shared_key_id.is_some() {
        RejectionKind::UnknownSharedKey
    } else {
        RejectionKind::UnknownAccount
    };
    let resolved = match resolution {
        Ok(resolved) => resolved,
        Err(error) => {
            let refusal = Refusal::with_source(RejectionKind::ResolverFailed, error);
            return Err(refusal.about(None, account_sid.as_ref()));
        }
    };
    let refuse =
        |kind: RejectionKind| Refusal::new(kind).about(resolved.as_ref(), account_sid.as_ref());
    let key_id = shared_key_id.as_deref();
    // Equal work: an unknown account or SharedKey goes through the same verification as a
    // known one, with a key nobody holds, and is refused whatever that gives. Nothing is
    // built for it that a known one does not build (not even empty credentials).
    // The dummy answers to its own SharedKey id, not the request's: it is built once.
    let (verifying, known, applies_to) = match &resolved {
        Some(credentials) if credentials.iter().any(|c| c.applies_to(key_id)) => {
            (credentials, true, shared_key_id.as_ref())
        }
        _ => {
            let (dummy, dummy_key_id) = dummy_credentials(key_id.is_some());
            (dummy, false, dummy_key_id)
        }
    };
    let applies_to_id = applies_to.map(|id| &**id);
    // No allocation: the filter is run again to name the one that matched.
    let applicable = || {
        verifying
            .iter()
            .filter(move |c| c.applies_to(applies_to_id))
    };
    // The headers were read by `prepare`: only the URL and the body are needed now.
    let request = WebhookRequest::new(&inbound.parts.method, &inbound.url.url, inbound.body)
        .exact_urls_only(config.exact_urls_only);
    let form = params.as_ref().filter(|_| prechecked.is_form());
    let verdict = request.verify_prechecked(prechecked, form, applicable().map(|c| c.secret()));
    // A mismatch goes to the doctor, when it is on, with the credentials it was verified with
    // and the SharedKey id they answer to: for an unknown account too (its dummy key explains
    // nothing), so that the request path and the doctor do the same work either way. Cloning
    // credentials copies pointers.
    let mismatch = matches!(verdict, Err(VerifyError::SignatureMismatch));
    let consult = || {
        (mismatch && config.diagnoses.is_some()).then(|| Consult {
            credentials: verifying.clone(),
            shared_key_id: applies_to.cloned(),
        })
    };
    if !known {
        std::hint::black_box(verdict.is_ok());
        let mut refusal = refuse(unknown);
        refusal.consult = consult();
        return Err(refusal);
    }
    let verified = verdict.map_err(|error| {
        let mut refusal = refuse(error.into());
        refusal.consult = consult();
        refusal
    })?;
    let credential = applicable()
        .nth(verified.secret_index)
        .map(|c| Arc::clone(c.label_arc()))
        .ok_or_else(|| refuse(RejectionKind::SignatureMismatch))?;
    account::bind_account(
        verifying.account_sid(),
        account_sid.as_deref(),
        key_id.is_some(),
    )
    .map_err(|error| refuse(error.into()))?;
    // What `bind_account` answered: the owner when the resolver named one, else the named.
    let account_sid = verifying.account_arc().cloned().or(account_sid);
    let facts = Facts {
        account_sid,
        tenant_id: verifying.tenant_arc().cloned(),
        credential,
        algorithm: verified.algorithm,
        url_form: verified.url_form,
        covered: verified.covered,
        params: params.unwrap_or_default(),
        idempotency_token,
        signature,
    };
    Ok(facts)
}

/// What an unknown account or SharedKey is verified with, so that it costs the same HMAC work
/// as a known one with a wrong signature and the response time does not tell which exist: one
/// secret nobody holds ([`crate::secret::dummy`]), of the kind the request asks for (a
/// SharedKey for a request that names one), and the SharedKey id it answers to. Built once per
/// process: a request for an unknown account allocates nothing a known one does not.
fn dummy_credentials(shared_key: bool) -> (&'static Credentials, Option<&'static Arc<str>>) {
    use std::sync::OnceLock;
    const KEY_ID: &str = "equal-work";
    static AUTH_TOKEN: OnceLock<Credentials> = OnceLock::new();
    static SHARED_KEY: OnceLock<(Credentials, Arc<str>)> = OnceLock::new();
    let dummy = crate::secret::dummy;
    if shared_key {
        let (credentials, key_id) = SHARED_KEY.get_or_init(|| {
            let credentials = Credentials::new().shared_key(KEY_ID, dummy().clone());
            (credentials, Arc::from(KEY_ID))
        });
        (credentials, Some(key_id))
    } else {
        let credentials =
            AUTH_TOKEN.get_or_init(|| Credentials::new().auth_token(KEY_ID, dummy().clone()));
        (credentials, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        PublicUrl, Secret, VerifiedWebhook,
        signature::{Algorithm, IDEMPOTENCY_TOKEN_HEADER, sign, url_with_body_sha256},
        verify::{Covered, UrlForm},
    };

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const PUBLIC: &str = "https://api.example.com";
    const FORM: &str = "application/x-www-form-urlencoded";
    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const SMS: &str = "AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100&Body=Hi";

    fn token() -> Secret {
        Secret::new(TOKEN).unwrap()
    }

    fn config() -> Config {
        Config {
            public_url: PublicUrl::fixed(PUBLIC).unwrap(),
            ..Config::default()
        }
    }

    fn credentials() -> Credentials {
        Credentials::new()
            .tenant("acme")
            .auth_token("primary", token())
    }

    /// A request to `target` with `headers`, and its URL as the layer rebuilds it.
    fn request(method: Method, target: &str, headers: &[(&str, &str)]) -> (Parts, RebuiltUrl) {
        let mut builder = http::Request::builder().method(method).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let parts = builder.body(()).unwrap().into_parts().0;
        let url = config().public_url.reconstruct(&parts, None).unwrap();
        (parts, url)
    }

    /// The token's `algorithm` signature of the form `body` sent to `PUBLIC` + `path`.
    fn signature(algorithm: Algorithm, path: &str, body: &str) -> String {
        sign(
            TOKEN.as_bytes(),
            algorithm,
            &format!("{PUBLIC}{path}"),
            Params::parse(body.as_bytes()).iter(),
        )
    }

    /// A form POST of `body` to `path`, signed with the token.
    fn signed_form(path: &str, body: &str) -> (Parts, RebuiltUrl) {
        let signature = signature(Algorithm::HmacSha1, path, body);
        request(
            Method::POST,
            path,
            &[("content-type", FORM), ("x-twilio-signature", &signature)],
        )
    }

    fn inbound<'a>(parts: &'a Parts, body: &'a str, url: &'a RebuiltUrl) -> Inbound<'a> {
        Inbound {
            parts,
            body: body.as_bytes(),
            url,
        }
    }

    fn refusal_kind<T: std::fmt::Debug>(result: Result<T, Refusal>) -> RejectionKind {
        result.expect_err("refused").kind
    }

    /// `prepare` and `complete` of `body` with `parts` at `url`, and the context the inner
    /// service would get.
    fn verify(
        parts: &Parts,
        body: &str,
        url: &RebuiltUrl,
        resolution: Resolution,
        config: &Config,
    ) -> Result<VerifiedWebhook, Refusal> {
        let prepared = prepared(parts, body, url);
        complete(inbound(parts, body, url), prepared, resolution, config)
            .map(|facts| VerifiedWebhook::new(facts, url.url.clone(), None))
    }

    #[test]
    fn check_head_rebuilds_the_url_and_reads_a_signed_body_within_the_limit() {
        let (parts, _) = signed_form("/twilio/sms?x=1", SMS);
        let head = check_head(&parts, &SizeHint::with_exact(SMS.len() as u64), &config());
        assert_eq!(head.url.url, "https://api.example.com/twilio/sms?x=1");
        assert!(head.verdict.is_ok());
    }

    #[test]
    fn check_head_refuses_without_the_body_what_cannot_pass() {
        let config = config();
        let (unsigned, _) = request(Method::POST, "/twilio/sms", &[("content-type", FORM)]);
        let head = check_head(&unsigned, &SizeHint::default(), &config);
        assert_eq!(refusal_kind(head.verdict), RejectionKind::MissingSignature);
        // The event still names the URL that was called.
        assert_eq!(head.url.url, "https://api.example.com/twilio/sms");

        let (signed, _) = signed_form("/twilio/sms", SMS);
        let limit = config.max_body_size as u64;
        let at_limit = check_head(&signed, &SizeHint::with_exact(limit), &config);
        assert!(at_limit.verdict.is_ok());
        let over = check_head(&signed, &SizeHint::with_exact(limit + 1), &config);
        assert_eq!(refusal_kind(over.verdict), RejectionKind::BodyTooLarge);
    }

    #[test]
    fn check_head_reports_the_raw_target_when_the_url_cannot_be_rebuilt() {
        let mut config = config();
        config.public_url = PublicUrl::request_host(crate::public_url::Scheme::Https);
        let no_host = http::Request::post("/twilio/sms?x=1")
            .header("x-twilio-signature", "sig")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let head = check_head(&no_host, &SizeHint::default(), &config);
        let refusal = head.verdict.expect_err("no Host header");
        assert_eq!(refusal.kind, RejectionKind::UnresolvableUrl);
        assert!(!refusal.passes_in_report_only_mode());
        assert_eq!(head.url.url, "/twilio/sms?x=1");
    }

    #[test]
    fn report_only_mode_reads_the_body_of_an_unsigned_request() {
        let mut config = config();
        config.report_only = true;
        let (unsigned, _) = request(Method::POST, "/twilio/sms", &[("content-type", FORM)]);
        assert!(
            check_head(&unsigned, &SizeHint::default(), &config)
                .verdict
                .is_ok()
        );
        // ...but never a body over the limit.
        let over = SizeHint::with_exact(config.max_body_size as u64 + 1);
        let refusal = check_head(&unsigned, &over, &config)
            .verdict
            .expect_err("too large");
        assert_eq!(refusal.kind, RejectionKind::BodyTooLarge);
        assert!(!refusal.passes_in_report_only_mode());
    }

    #[test]
    fn body_errors_become_refusals_that_report_only_mode_does_not_pass() {
        let too_large = Refusal::from(CollectError::TooLarge);
        assert_eq!(too_large.kind, RejectionKind::BodyTooLarge);
        assert!(!too_large.passes_in_report_only_mode());
        let failed = Refusal::from(CollectError::Failed("reset".into()));
        assert_eq!(failed.kind, RejectionKind::BodyReadFailed);
        assert!(!failed.passes_in_report_only_mode());
        let rejection = failed.into_rejection();
        assert_eq!(
            rejection.to_string(),
            "request body could not be read: reset"
        );
        assert!(Refusal::new(RejectionKind::SignatureMismatch).passes_in_report_only_mode());
    }

    #[test]
    fn prepare_finds_what_the_resolver_needs() {
        let (parts, url) = signed_form("/twilio/sms", SMS);
        let prepared = prepare(inbound(&parts, SMS, &url), &Config::default()).unwrap();
        assert_eq!(prepared.account_sid.as_deref(), Some(SID));
        assert_eq!(prepared.shared_key_id, None);
        assert_eq!(prepared.params.as_ref().unwrap().get("Body"), Some("Hi"));
        let view = prepared.resolve_request(parts);
        assert_eq!(view.account_sid(), Some(SID));
        assert_eq!(view.into_parts().uri, "/twilio/sms");
    }

    #[test]
    fn prepare_reads_the_account_sid_from_form_query_or_json() {
        let (form, form_url) = signed_form("/sms", SMS);
        let (get, get_url) = request(
            Method::GET,
            "/voice?AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&CallSid=CA1",
            &[("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc=")],
        );
        let json_path = url_with_body_sha256(
            "/events",
            br#"{"AccountSid":"ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#,
        );
        let (json, json_url) = request(
            Method::POST,
            &json_path,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
            ],
        );
        let sid = |parts: &Parts, body: &str, url: &RebuiltUrl| {
            prepare(inbound(parts, body, url), &Config::default())
                .unwrap()
                .account_sid
        };
        assert_eq!(sid(&form, SMS, &form_url).as_deref(), Some(SID));
        assert_eq!(
            sid(&get, "", &get_url).as_deref(),
            Some("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
        assert_eq!(
            sid(
                &json,
                r#"{"AccountSid":"ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#,
                &json_url
            )
            .as_deref(),
            Some("ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
        );
        // A GET's query parameters are the handler's parameters too.
        let get_params = prepare(inbound(&get, "", &get_url), &Config::default())
            .unwrap()
            .params;
        assert_eq!(get_params.unwrap().get("CallSid"), Some("CA1"));
        // A JSON body has none.
        let json_body = r#"{"AccountSid":"ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#;
        assert!(
            prepare(inbound(&json, json_body, &json_url), &Config::default())
                .unwrap()
                .params
                .is_none()
        );
    }

    #[test]
    fn prepare_finds_an_account_sid_whose_json_member_name_is_escaped() {
        // An escaped member name is still `AccountSid` to a JSON parser (and to the handler's).
        let body = r#"{"\u0041ccountSid":"AC0123456789abcdef0123456789abcdef"}"#;
        let path = url_with_body_sha256("/events", body.as_bytes());
        let (parts, url) = request(
            Method::POST,
            &path,
            &[
                ("content-type", "application/json"),
                ("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
            ],
        );
        let prepared = prepare(inbound(&parts, body, &url), &Config::default()).unwrap();
        assert_eq!(prepared.account_sid.as_deref(), Some(SID));
    }

    #[test]
    fn prepare_refuses_before_any_lookup_what_no_secret_can_pass() {
        let signature = "GvWf1cFY/Q7PnoempGyD5oXAezc=";
        let cases: &[(&[(&str, &str)], &str, RejectionKind)] = &[
            (
                &[("content-type", FORM)],
                SMS,
                RejectionKind::MissingSignature,
            ),
            (
                &[("content-type", FORM), ("x-twilio-signature", "short")],
                SMS,
                RejectionKind::MalformedSignature,
            ),
            (
                &[
                    ("content-type", "text/plain"),
                    ("x-twilio-signature", signature),
                ],
                "hello",
                RejectionKind::UnsupportedContentType,
            ),
            (
                &[
                    ("content-type", FORM),
                    ("x-twilio-signature", signature),
                    (
                        "x-twilio-webhooks-signature-settings",
                        "algorithm=HMAC_SHA1",
                    ),
                ],
                SMS,
                RejectionKind::MalformedSettings,
            ),
            (
                &[
                    ("content-type", FORM),
                    ("x-twilio-signature", signature),
                    (
                        "x-twilio-webhooks-signature-settings",
                        "key=k1,algorithm=HMAC_MD5",
                    ),
                ],
                SMS,
                RejectionKind::UnsupportedAlgorithm,
            ),
        ];
        for (headers, body, expected) in cases {
            let (parts, url) = request(Method::POST, "/sms", headers);
            let refusal =
                prepare(inbound(&parts, body, &url), &Config::default()).expect_err("refused");
            assert_eq!(refusal.kind, *expected, "{headers:?}");
            assert!(refusal.passes_in_report_only_mode());
        }
    }

    #[test]
    fn prepare_refuses_more_parameters_than_the_limit() {
        let limit = Config {
            max_params: 3,
            ..Config::default()
        };
        // Empty pieces are not parameters; a query's parameters count only on a GET.
        for (method, path, body, refused) in [
            (Method::POST, "/sms", "a=1&b=2&c=3", false),
            (Method::POST, "/sms", "a=1&&b=2&&c=3&&", false),
            (Method::POST, "/sms", "a=1&b=2&c=3&d", true),
            (Method::POST, "/sms?a&b&c&d", "a=1", false),
            (Method::GET, "/sms?a=1&b=2&c=3", "", false),
            (Method::GET, "/sms?a=1&b=2&c=3&d=4", "", true),
        ] {
            let headers: &[(&str, &str)] = if body.is_empty() {
                &[("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc=")]
            } else {
                &[
                    ("content-type", FORM),
                    ("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
                ]
            };
            let (parts, url) = request(method.clone(), path, headers);
            let prepared = prepare(inbound(&parts, body, &url), &limit);
            if refused {
                let refusal = prepared.expect_err("refused");
                assert_eq!(
                    refusal.kind,
                    RejectionKind::TooManyParameters,
                    "{path} {body}"
                );
                assert!(!refusal.passes_in_report_only_mode());
            } else {
                assert!(prepared.is_ok(), "{method} {path} {body}");
            }
        }
        assert_eq!(RejectionKind::TooManyParameters.status(), 413);
    }

    #[test]
    fn check_head_refuses_every_method_but_get_and_post_before_the_body() {
        for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::HEAD] {
            let (parts, _) = request(method.clone(), "/sms", &[("x-twilio-signature", "x")]);
            let head = check_head(&parts, &SizeHint::default(), &config());
            assert_eq!(
                refusal_kind(head.verdict),
                RejectionKind::MethodNotAllowed,
                "{method}"
            );
        }
        for method in [Method::GET, Method::POST] {
            let (parts, _) = request(method.clone(), "/sms", &[("x-twilio-signature", "x")]);
            assert!(
                check_head(&parts, &SizeHint::default(), &config())
                    .verdict
                    .is_ok()
            );
        }
    }

    #[test]
    fn prepare_refuses_malformed_or_conflicting_accounts_and_key_ids() {
        let rows = [
            (
                "AccountSid=AC0123&Body=Hi".to_owned(),
                None,
                RejectionKind::InvalidAccountSid,
            ),
            (
                format!("AccountSid={SID}&AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                None,
                RejectionKind::ConflictingAccountSid,
            ),
            (
                SMS.to_owned(),
                Some("key=k 1,algorithm=HMAC_SHA1"),
                RejectionKind::InvalidSharedKeyId,
            ),
        ];
        for (body, settings, expected) in rows {
            let mut headers = vec![
                ("content-type", FORM),
                ("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
            ];
            if let Some(settings) = settings {
                headers.push(("x-twilio-webhooks-signature-settings", settings));
            }
            let (parts, url) = request(Method::POST, "/sms", &headers);
            assert_eq!(
                refusal_kind(prepare(inbound(&parts, &body, &url), &Config::default())),
                expected,
                "{body}"
            );
        }
        // Query against form body.
        let (parts, url) = signed_form("/sms?AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", SMS);
        assert_eq!(
            refusal_kind(prepare(inbound(&parts, SMS, &url), &Config::default())),
            RejectionKind::ConflictingAccountSid
        );
    }

    #[test]
    fn complete_binds_the_account_to_the_credentials() {
        let (parts, url) = signed_form("/sms", SMS);
        let run =
            |credentials: Credentials| verify(&parts, SMS, &url, Ok(Some(credentials)), &config());
        let owned = run(credentials().account(SID)).unwrap();
        assert_eq!(owned.account_sid(), Some(SID));
        let other = credentials().account("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(refusal_kind(run(other)), RejectionKind::AccountMismatch);
        // Credentials that name no account report the account the signed body names.
        assert_eq!(run(credentials()).unwrap().account_sid(), Some(SID));
    }

    #[test]
    fn prepare_takes_the_shared_key_id_from_the_settings_header() {
        let (parts, url) = request(
            Method::POST,
            "/sms",
            &[
                ("content-type", FORM),
                ("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
                (
                    "x-twilio-webhooks-signature-settings",
                    "key=k1,algorithm=HMAC_SHA1",
                ),
            ],
        );
        let prepared = prepare(inbound(&parts, SMS, &url), &Config::default()).unwrap();
        assert_eq!(prepared.shared_key_id.as_deref(), Some("k1"));
    }

    fn prepared(parts: &Parts, body: &str, url: &RebuiltUrl) -> Prepared {
        prepare(inbound(parts, body, url), &Config::default()).unwrap()
    }

    #[test]
    fn complete_builds_the_verified_webhook_from_what_is_there() {
        let (mut parts, url) = signed_form("/twilio/sms", SMS);
        parts
            .headers
            .insert(IDEMPOTENCY_TOKEN_HEADER, "idem-1".parse().unwrap());
        let webhook = verify(&parts, SMS, &url, Ok(Some(credentials())), &config()).unwrap();
        assert_eq!(webhook.account_sid(), Some(SID));
        assert_eq!(webhook.tenant_id(), Some("acme"));
        assert_eq!(webhook.credential(), "primary");
        assert_eq!(webhook.algorithm(), Algorithm::HmacSha1);
        assert_eq!(webhook.url_form(), UrlForm::AsReceived);
        assert_eq!(webhook.covered(), Covered::FormParams);
        assert_eq!(webhook.params().get("From"), Some("+14155550100"));
        assert_eq!(webhook.idempotency_token(), Some("idem-1"));
        assert_eq!(webhook.url(), "https://api.example.com/twilio/sms");
    }

    #[test]
    fn complete_names_the_rotated_token_that_matched() {
        let (parts, url) = signed_form("/sms", SMS);
        let rotated = Credentials::new()
            .auth_token("new", Secret::new("another-token").unwrap())
            .auth_token("old", token());
        let webhook = verify(&parts, SMS, &url, Ok(Some(rotated)), &config()).unwrap();
        assert_eq!(webhook.credential(), "old");
        assert_eq!(webhook.tenant_id(), None);
    }

    #[test]
    fn complete_refuses_unknown_accounts_failed_lookups_and_forgeries() {
        let (parts, url) = signed_form("/sms", SMS);
        let forged = SMS.replace("Hi", "Hj");
        let run = |body: &str, resolution: Resolution| {
            verify(&parts, body, &url, resolution, &config()).expect_err("refused")
        };
        let unknown = run(SMS, Ok(None));
        assert_eq!(unknown.kind, RejectionKind::UnknownAccount);
        assert_eq!(unknown.account_sid.as_deref(), Some(SID));
        assert_eq!(unknown.tenant_id, None);

        let failed = run(SMS, Err("database down".into()));
        assert_eq!(failed.kind, RejectionKind::ResolverFailed);
        assert_eq!(failed.account_sid.as_deref(), Some(SID));
        assert_eq!(
            failed.into_rejection().to_string(),
            "credential lookup failed: database down"
        );

        let mismatch = run(&forged, Ok(Some(credentials())));
        assert_eq!(mismatch.kind, RejectionKind::SignatureMismatch);
        assert_eq!(mismatch.tenant_id.as_deref(), Some("acme"));
        assert_eq!(mismatch.account_sid.as_deref(), Some(SID));

        // Credentials without an auth token cannot verify an auth-token request.
        let shared_only = Credentials::new().shared_key("k1", token());
        assert_eq!(
            run(SMS, Ok(Some(shared_only))).kind,
            RejectionKind::UnknownAccount
        );
    }

    #[test]
    fn the_doctor_gets_as_many_secrets_for_an_unknown_shared_key_as_for_a_known_one() {
        // With the doctor on, a mismatch hands it the credentials verified with and the key id
        // they answer to: an unknown id's dummy answers to its own, not the request's (the
        // doctor found no secret for it, and did no HMAC work at all).
        let settings = "key=k1,algorithm=HMAC_SHA256";
        let (parts, url) = request(
            Method::POST,
            "/sms",
            &[
                ("content-type", FORM),
                (
                    "x-twilio-signature",
                    &signature(Algorithm::HmacSha256, "/elsewhere", SMS),
                ),
                ("x-twilio-webhooks-signature-settings", settings),
            ],
        );
        let config = Config {
            diagnoses: Some(Arc::new(crate::diagnoses::Doctor::new(1))),
            ..config()
        };
        let secrets = |resolution: Resolution| {
            let refusal = verify(&parts, SMS, &url, resolution, &config).expect_err("forged");
            let consult = refusal.consult.expect("handed to the doctor");
            let key_id = consult.shared_key_id.as_deref();
            consult
                .credentials
                .iter()
                .filter(|c| c.applies_to(key_id))
                .count()
        };
        let known = Credentials::new().account(SID).shared_key("k1", token());
        assert_eq!(secrets(Ok(Some(known))), 1);
        assert_eq!(secrets(Ok(None)), 1);
    }

    #[test]
    fn complete_verifies_a_shared_key_request_only_with_that_key() {
        let settings = "key=k1,algorithm=HMAC_SHA256";
        let signature = signature(Algorithm::HmacSha256, "/sms", SMS);
        let (parts, url) = request(
            Method::POST,
            "/sms",
            &[
                ("content-type", FORM),
                ("x-twilio-signature", &signature),
                ("x-twilio-webhooks-signature-settings", settings),
            ],
        );
        let run =
            |credentials: Credentials| verify(&parts, SMS, &url, Ok(Some(credentials)), &config());
        // The same secret as an auth token does not count.
        let token_only = Credentials::new().auth_token("primary", token());
        assert_eq!(
            refusal_kind(run(token_only)),
            RejectionKind::UnknownSharedKey
        );
        let other_key = Credentials::new().shared_key("k2", token());
        assert_eq!(
            refusal_kind(run(other_key)),
            RejectionKind::UnknownSharedKey
        );
        // A SharedKey whose account the resolver does not name verifies nothing.
        assert_eq!(
            refusal_kind(run(Credentials::new().shared_key("k1", token()))),
            RejectionKind::AccountMismatch
        );
        let other_account = Credentials::new()
            .account("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
            .shared_key("k1", token());
        assert_eq!(
            refusal_kind(run(other_account)),
            RejectionKind::AccountMismatch
        );
        let webhook = run(Credentials::new().account(SID).shared_key("k1", token())).unwrap();
        assert_eq!(webhook.account_sid(), Some(SID));
        assert_eq!(webhook.credential(), "shared_key:k1");
        assert_eq!(webhook.algorithm(), Algorithm::HmacSha256);
    }

    #[test]
    fn complete_checks_a_json_body_through_body_sha256() {
        let body = r#"{"AccountSid":"AC0123456789abcdef0123456789abcdef","Body":"Hi"}"#;
        let path = url_with_body_sha256("/events", body.as_bytes());
        let signature = sign(
            TOKEN.as_bytes(),
            Algorithm::HmacSha1,
            &format!("{PUBLIC}{path}"),
            std::iter::empty::<(&str, &str)>(),
        );
        let (parts, url) = request(
            Method::POST,
            &path,
            &[
                ("content-type", "application/json"),
                ("x-twilio-signature", &signature),
            ],
        );
        let run = |body: &str| verify(&parts, body, &url, Ok(Some(credentials())), &config());
        let webhook = run(body).unwrap();
        assert_eq!(webhook.covered(), Covered::BodySha256);
        assert_eq!(webhook.account_sid(), Some(SID));
        assert!(webhook.params().is_empty());
        let tampered = body.replace("Hi", "Hj");
        assert_eq!(
            refusal_kind(run(&tampered)),
            RejectionKind::BodyHashMismatch
        );
    }

    #[test]
    fn exact_urls_only_is_applied() {
        // Signed for the URL with its query re-serialised as twilio-node does (`%20` for `+`).
        let body = SMS;
        let signature = signature(Algorithm::HmacSha1, "/sms?q=a%20b", body);
        let (parts, url) = request(
            Method::POST,
            "/sms?q=a+b",
            &[("content-type", FORM), ("x-twilio-signature", &signature)],
        );
        let run = |config: &Config| verify(&parts, body, &url, Ok(Some(credentials())), config);
        let lenient = run(&config()).unwrap();
        assert_eq!(lenient.url_form(), UrlForm::Normalized);
        let mut exact = config();
        exact.exact_urls_only = true;
        assert_eq!(refusal_kind(run(&exact)), RejectionKind::SignatureMismatch);
    }
}
