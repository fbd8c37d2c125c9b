//! Whole-request verification: [`WebhookRequest`] in, [`Verified`] or [`VerifyError`] out.
//!
//! Pure: no I/O, no tower types. This is what the middleware calls once it holds the body, and
//! what tests, fuzzers and benchmarks drive directly.
//!
//! ```
//! use http::Method;
//! use tower_twilio::{signature, verify::{VerifyError, WebhookRequest}, Secret};
//!
//! let token = Secret::new("12345").unwrap();
//! let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
//! let body = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234\
//!              &From=%2B14158675309&To=%2B18005551212";
//! let form = "application/x-www-form-urlencoded";
//!
//! let request = WebhookRequest::new(&Method::POST, url, body)
//!     .content_type(form.as_bytes())
//!     .signature(b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
//! assert!(request.verify([&token]).is_ok());
//!
//! let forged = request.signature(b"GvWf1cFY/Q7PnoempGyD5oXAezc=");
//! assert_eq!(forged.verify([&token]).unwrap_err(), VerifyError::SignatureMismatch);
//! ```
//!
//! # What is signed, by request shape
//!
//! | request | string to sign | also checked |
//! | --- | --- | --- |
//! | a method other than `GET` or `POST` | — | rejected: [`VerifyError::MethodNotAllowed`] |
//! | `bodySHA256` in the query, any method, content type or body (even empty) | the URL | lower-case hex SHA-256 of the raw body equals `bodySHA256` |
//! | `POST`, `application/x-www-form-urlencoded` body | the URL ‖ sorted, de-duplicated decoded parameters | at most [`max_params`](WebhookRequest::max_params) parameters (1000), else [`VerifyError::TooManyParameters`] |
//! | empty body, no `bodySHA256` | the URL | |
//! | anything else (a body on a `GET`, a non-form body without `bodySHA256`) | — | rejected: [`VerifyError::UnsupportedContentType`] |
//!
//! The `bodySHA256` row comes first on purpose and is stricter than twilio-python and
//! twilio-node, which read a form `POST` as a form even when its URL carries `bodySHA256`: a
//! captured JSON webhook replayed as a form with an empty body, `&&&`, or parameters of the
//! attacker's choosing would then verify with a body the signature never covered.
//!
//! Each shape is tried against every candidate URL (see [URL spellings](#url-spellings)) and
//! every candidate secret, in constant time per comparison.
//!
//! # URL spellings
//!
//! Twilio signs the URL it requested, but its signing is inconsistent about ports, so every
//! official library tries more than one spelling. In order:
//!
//! 1. **Exact** ([`UrlForm::AsReceived`], [`UrlForm::OtherPort`]): the URL as received, and
//!    the same URL with its explicit port removed or, when it has none, the scheme's default
//!    port added. Only the authority changes: `user:pass@` and `[IPv6]` literals stay intact.
//! 2. **Lenient** ([`UrlForm::Normalized`]), only when no exact form matched and unless
//!    [`WebhookRequest::exact_urls_only`] is set: the URL as twilio-python
//!    (`urlparse().geturl()`) and twilio-node (WHATWG `URL`, its query through Node's
//!    `querystring`) re-serialise it before comparing, and only when that spelling names the
//!    same host (ASCII case aside), path segments and query pairs as the received URL once
//!    decoded: dot segments (raw or `%2e`) and `\` are never resolved and no query pair is
//!    dropped, so a signature never moves to another route.
//!
//! Within that rule the lenient forms keep the verdict equal to "either official library
//! accepts"; each still needs an HMAC made with the secret.

use std::{borrow::Cow, fmt};

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

use crate::{
    Secret,
    form::{self, DEFAULT_MAX_PARAMS, Params, SortOrder},
    signature::{
        Algorithm, BODY_SHA256_PARAM, IDEMPOTENCY_TOKEN_HEADER, ReceivedSignature,
        SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, SettingsError, SignatureSettings,
        body_sha256_matches,
    },
    url::{redact::redact_userinfo, spellings},
};

/// The Twilio header names as [`HeaderName`]s, made once: a lookup by `&str` parses and
/// validates the name on every call.
pub(crate) const SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);
pub(crate) const SIGNATURE_SETTINGS: HeaderName =
    HeaderName::from_static(SIGNATURE_SETTINGS_HEADER);
pub(crate) const IDEMPOTENCY_TOKEN: HeaderName = HeaderName::from_static(IDEMPOTENCY_TOKEN_HEADER);

/// One header's presence on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Header<'a> {
    #[default]
    Absent,
    One(&'a [u8]),
    Repeated,
}

impl<'a> Header<'a> {
    fn value(self) -> Option<&'a [u8]> {
        match self {
            Self::One(value) => Some(value),
            Self::Absent | Self::Repeated => None,
        }
    }

    fn from_map(headers: &'a HeaderMap, name: &HeaderName) -> Self {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Self::Absent,
            (Some(value), None) => Self::One(value.as_bytes()),
            (Some(_), Some(_)) => Self::Repeated,
        }
    }

    /// One more value of this header.
    fn add(&mut self, value: &'a HeaderValue) {
        *self = match self {
            Self::Absent => Self::One(value.as_bytes()),
            Self::One(_) | Self::Repeated => Self::Repeated,
        };
    }
}

/// Up to this many header values, [`TwilioHeaders::read`] finds its headers (and
/// [`TwilioHeaders::has_signature`] the signature's name) in one pass over the map; past it,
/// by one lookup each. A lookup hashes the name (about 200 instructions for
/// a Twilio header), a pass costs a few instructions a value: the pass is cheaper for the
/// headers a webhook carries, the lookups bound the cost of a request with thousands.
const SCAN_AT_MOST: usize = 32;

/// The headers verification reads, and the idempotency token the verified context keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TwilioHeaders<'a> {
    content_type: Header<'a>,
    signature: Header<'a>,
    settings: Header<'a>,
    /// The first `I-Twilio-Idempotency-Token`, as [`HeaderMap::get`] finds it.
    pub(crate) idempotency_token: Option<&'a HeaderValue>,
}

impl<'a> TwilioHeaders<'a> {
    /// Finds them in `headers`: in one pass over a map of at most [`SCAN_AT_MOST`] values,
    /// else by name. Both give the same answer.
    pub(crate) fn read(headers: &'a HeaderMap) -> Self {
        if headers.len() > SCAN_AT_MOST {
            return Self::look_up(headers);
        }
        let mut found = Self::default();
        for (name, value) in headers {
            if name == header::CONTENT_TYPE {
                found.content_type.add(value);
            } else if name == SIGNATURE {
                found.signature.add(value);
            } else if name == SIGNATURE_SETTINGS {
                found.settings.add(value);
            } else if name == IDEMPOTENCY_TOKEN && found.idempotency_token.is_none() {
                found.idempotency_token = Some(value);
            }
        }
        found
    }

    fn look_up(headers: &'a HeaderMap) -> Self {
        Self {
            content_type: Header::from_map(headers, &header::CONTENT_TYPE),
            signature: Header::from_map(headers, &SIGNATURE),
            settings: Header::from_map(headers, &SIGNATURE_SETTINGS),
            idempotency_token: headers.get(IDEMPOTENCY_TOKEN),
        }
    }

    /// Whether `headers` hold an `X-Twilio-Signature` (once or more): for the check before the
    /// body is read, which needs no value. One pass over the names (not their values) of a map
    /// of at most [`SCAN_AT_MOST`] values, else a lookup.
    pub(crate) fn has_signature(headers: &HeaderMap) -> bool {
        if headers.len() > SCAN_AT_MOST {
            return headers.contains_key(SIGNATURE);
        }
        headers.keys().any(|name| name == SIGNATURE)
    }

    /// The `Content-Type` value, when there is exactly one.
    pub(crate) fn content_type(&self) -> Option<&'a [u8]> {
        self.content_type.value()
    }

    /// The `X-Twilio-Signature` value, when there is exactly one.
    pub(crate) fn signature(&self) -> Option<&'a [u8]> {
        self.signature.value()
    }
}

/// The parts of a webhook request that verification reads.
///
/// Build it from an `http` request's parts with [`WebhookRequest::from_parts`], or field by
/// field with [`WebhookRequest::new`] and the setters. It only borrows.
///
/// Its `Debug` output names the method, URL and body length, and whether each header is
/// present, but never shows the received signature or the body.
#[derive(Clone, Copy)]
pub struct WebhookRequest<'a> {
    method: &'a Method,
    url: &'a str,
    body: &'a [u8],
    content_type: Header<'a>,
    signature: Header<'a>,
    settings: Header<'a>,
    lenient_urls: bool,
    max_params: usize,
}

impl<'a> WebhookRequest<'a> {
    /// A request with no headers yet.
    ///
    /// `url` is the full public URL Twilio requested, exactly as requested (see
    /// [URL spellings](crate::verify#url-spellings)); `body` is the raw body.
    pub fn new(method: &'a Method, url: &'a str, body: &'a [u8]) -> Self {
        Self {
            method,
            url,
            body,
            content_type: Header::Absent,
            signature: Header::Absent,
            settings: Header::Absent,
            lenient_urls: true,
            max_params: DEFAULT_MAX_PARAMS,
        }
    }

    /// A request whose `Content-Type`, `X-Twilio-Signature` and
    /// `X-Twilio-Webhooks-Signature-Settings` come from `headers`. A header that appears more
    /// than once is remembered as repeated, which verification rejects.
    pub fn from_parts(
        method: &'a Method,
        url: &'a str,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Self {
        Self::from_headers(method, url, TwilioHeaders::read(headers), body)
    }

    /// [`from_parts`](Self::from_parts) with the headers already read.
    pub(crate) fn from_headers(
        method: &'a Method,
        url: &'a str,
        headers: TwilioHeaders<'a>,
        body: &'a [u8],
    ) -> Self {
        Self {
            content_type: headers.content_type,
            signature: headers.signature,
            settings: headers.settings,
            ..Self::new(method, url, body)
        }
    }

    /// Sets the `Content-Type` value.
    #[must_use]
    pub fn content_type(mut self, value: &'a [u8]) -> Self {
        self.content_type = Header::One(value);
        self
    }

    /// Sets the `X-Twilio-Signature` value, byte for byte.
    #[must_use]
    pub fn signature(mut self, value: &'a [u8]) -> Self {
        self.signature = Header::One(value);
        self
    }

    /// Sets the `X-Twilio-Webhooks-Signature-Settings` value.
    #[must_use]
    pub fn signature_settings(mut self, value: &'a [u8]) -> Self {
        self.settings = Header::One(value);
        self
    }

    /// Accepts only the exact URL forms: as received, and with the port removed or the default
    /// port added. The re-serialised forms the official libraries also accept (see
    /// [URL spellings](crate::verify#url-spellings)) are not tried, so a query is never
    /// re-encoded and a host's case never folded (a path is never re-resolved either way).
    /// Requests Twilio sends verify either way;
    /// only the SDKs' leniency towards URLs a proxy re-wrote is given up. Off by default.
    #[must_use]
    pub fn exact_urls_only(mut self, enabled: bool) -> Self {
        self.lenient_urls = !enabled;
        self
    }

    /// The most parameters a form body may hold ([`DEFAULT_MAX_PARAMS`], 1000, unless set):
    /// one with more is refused with [`VerifyError::TooManyParameters`] before it is decoded.
    /// (A `GET`'s query is signed as part of the URL and not decoded here.)
    #[must_use]
    pub fn max_params(mut self, limit: usize) -> Self {
        self.max_params = limit;
        self
    }

    /// The raw body.
    pub(crate) fn body(&self) -> &'a [u8] {
        self.body
    }

    /// This request at another URL, matched exactly as spelled (for the mismatch doctor).
    pub(crate) fn with_exact_url<'u>(&self, url: &'u str) -> WebhookRequest<'u>
    where
        'a: 'u,
    {
        WebhookRequest {
            url,
            lenient_urls: false,
            ..*self
        }
    }

    /// The URL this request is verified against.
    pub fn url(&self) -> &'a str {
        self.url
    }

    /// The parsed settings header: `Ok(None)` when the request has none, which means an
    /// auth-token signature with HMAC-SHA1.
    ///
    /// # Errors
    ///
    /// [`VerifyError::MalformedSettings`] when the header is repeated or not UTF-8, and
    /// [`VerifyError::UnsupportedAlgorithm`] when it names an unknown algorithm.
    pub(crate) fn signature_settings_header(
        &self,
    ) -> Result<Option<SignatureSettings<'a>>, VerifyError> {
        match self.settings {
            Header::Absent => Ok(None),
            Header::Repeated => Err(VerifyError::MalformedSettings),
            Header::One(value) => SignatureSettings::parse(value)
                .map(Some)
                .map_err(|e| match e {
                    SettingsError::UnsupportedAlgorithm => VerifyError::UnsupportedAlgorithm,
                    _ => VerifyError::MalformedSettings,
                }),
        }
    }

    /// Verifies the request against each of `secrets` in turn.
    ///
    /// Pass every secret that may have signed this request: during an auth-token rotation the
    /// old and the new token; for a request that carries a settings header, only the secret of
    /// the SharedKey it names. The error says why the request was refused; the first failing
    /// check wins, in the order of [`VerifyError`]'s variants.
    ///
    /// # Errors
    ///
    /// See [`VerifyError`]. An empty `secrets` gives [`VerifyError::SignatureMismatch`].
    pub fn verify<'s, I>(&self, secrets: I) -> Result<Verified, VerifyError>
    where
        I: IntoIterator<Item = &'s Secret>,
        I::IntoIter: Clone,
    {
        self.verify_prechecked(self.prechecked()?, None, secrets)
    }

    /// Runs every check that needs no secret: the signature header is present once and well
    /// formed for the algorithm, the settings header is usable, the body is one the signature
    /// can cover, and a form body holds no more than [`max_params`](Self::max_params)
    /// parameters (counted, not decoded). [`verify`](Self::verify) runs these too; the middleware calls this
    /// first so that a request that cannot pass never costs a credential lookup.
    ///
    /// # Errors
    ///
    /// The same as [`verify`](Self::verify), except
    /// [`SignatureMismatch`](VerifyError::SignatureMismatch) and
    /// [`BodyHashMismatch`](VerifyError::BodyHashMismatch).
    pub(crate) fn check_without_secrets(&self) -> Result<(), VerifyError> {
        self.prechecked().map(|_| ())
    }

    /// The checks that need no secret, and what they establish: the middleware runs them
    /// before the credential lookup and verifies with their result after it, so that headers
    /// are read and the signature decoded once.
    pub(crate) fn prechecked(&self) -> Result<Prechecked, VerifyError> {
        check_method(self.method)?;
        let header = match self.signature {
            Header::Absent => return Err(VerifyError::MissingSignature),
            Header::Repeated => return Err(VerifyError::DuplicateSignature),
            Header::One(value) => value,
        };
        let algorithm = self
            .signature_settings_header()?
            .map_or(Algorithm::HmacSha1, |settings| settings.algorithm());
        let received =
            ReceivedSignature::parse(header, algorithm).ok_or(VerifyError::MalformedSignature)?;
        Ok(Prechecked {
            algorithm,
            received,
            payload: self.payload()?,
        })
    }

    /// [`verify`](Self::verify) with the result of [`prechecked`](Self::prechecked) on this
    /// request (or one with the same headers), and the form parameters if they are already
    /// parsed from its body: the middleware reads the headers and parses the body once.
    pub(crate) fn verify_prechecked<'s, I>(
        &self,
        prechecked: Prechecked,
        parsed: Option<&Params>,
        secrets: I,
    ) -> Result<Verified, VerifyError>
    where
        I: IntoIterator<Item = &'s Secret>,
        I::IntoIter: Clone,
    {
        let Prechecked {
            algorithm,
            received,
            payload,
        } = prechecked;

        let parsed_here;
        let mut form_params = None;
        let mut canonical = Vec::new();
        if let Payload::Form { pairs } = payload {
            let params = match parsed {
                Some(params) => params,
                None => {
                    parsed_here = Params::parse_counted(self.body, pairs);
                    &parsed_here
                }
            };
            form::canonicalize(params, SortOrder::CodePoint, &mut canonical);
            form_params = Some(params);
        }
        // The UTF-16 ordered string, if it differs: worked out only once the code-point one
        // has failed, which a request Twilio signed never does.
        let mut utf16: Option<Option<Vec<u8>>> = None;
        let secrets = secrets.into_iter();
        let check = |candidate: &str, params: &[u8]| {
            secrets.clone().position(|secret| {
                let mac = secret.mac(algorithm, candidate.as_bytes(), params);
                received.matches(&mac)
            })
        };
        let mut try_params = |candidate: &str| -> Option<(usize, SortOrder)> {
            if let Some(index) = check(candidate, &canonical) {
                return Some((index, SortOrder::CodePoint));
            }
            let other = utf16.get_or_insert_with(|| {
                let params = form_params.filter(|p| form::may_sort_differently_in_utf16(p))?;
                let mut other = Vec::new();
                form::canonicalize(params, SortOrder::Utf16, &mut other);
                (other != canonical).then_some(other)
            });
            check(candidate, other.as_deref()?).map(|index| (index, SortOrder::Utf16))
        };

        let mut found = try_params(self.url).map(|m| (m, UrlForm::AsReceived));
        if found.is_none() {
            let other = spellings::other_port_form(self.url);
            found = other
                .as_deref()
                .and_then(&mut try_params)
                .map(|m| (m, UrlForm::OtherPort));
            if found.is_none() && self.lenient_urls {
                found = spellings::lenient_candidates(self.url, other.as_deref())
                    .iter()
                    .find_map(|candidate| try_params(candidate))
                    .map(|m| (m, UrlForm::Normalized));
            }
        }
        let Some(((secret_index, _order), url_form)) = found else {
            return Err(VerifyError::SignatureMismatch);
        };

        if let Payload::BodyHash(expected) = payload
            && !expected.is_some_and(|expected| body_sha256_matches(self.body, &expected))
        {
            return Err(VerifyError::BodyHashMismatch);
        }
        Ok(Verified {
            algorithm,
            secret_index,
            url_form,
            covered: match payload {
                Payload::UrlOnly => Covered::UrlOnly,
                Payload::Form { .. } => Covered::FormParams,
                Payload::BodyHash(_) => Covered::BodySha256,
            },
        })
    }

    /// Decides what, besides the URL, is covered by the signature.
    ///
    /// A `bodySHA256` in the URL binds the body whatever the method and content type: a
    /// captured JSON webhook replayed as a `GET` or as a form `POST` (empty, `&&&`, or any
    /// parameters) must fail the hash check, not be read as a request whose parameters are
    /// signed or absent.
    fn payload(&self) -> Result<Payload, VerifyError> {
        let content_type = match self.content_type {
            Header::Absent => None,
            Header::One(value) => Some(value),
            Header::Repeated => return Err(VerifyError::UnsupportedContentType),
        };
        // A signed bodySHA256 binds the body, even an empty one: a captured JSON request
        // replayed without its body must fail the hash check.
        if let Some(expected) = body_sha256_param(self.url) {
            return Ok(Payload::BodyHash(expected.as_bytes().try_into().ok()));
        }
        if *self.method == Method::POST && content_type.is_some_and(form::is_form_urlencoded) {
            // Counted, not decoded: a body over the limit costs no allocation.
            let pairs = form::count_pairs(self.body);
            if pairs > self.max_params {
                return Err(VerifyError::TooManyParameters);
            }
            return Ok(Payload::Form { pairs });
        }
        if self.body.is_empty() {
            return Ok(Payload::UrlOnly);
        }
        // A body on a GET, or a non-form body without bodySHA256, would reach the handler
        // unsigned.
        Err(VerifyError::UnsupportedContentType)
    }
}

/// Refuses every method but `GET` and `POST`, the only ones Twilio sends. The method is not
/// signed, so a captured `POST` would otherwise verify as a `PUT`, `PATCH` or `DELETE` (and a
/// `GET` as a `HEAD`) and reach a handler it was never meant for.
///
/// ```
/// use http::Method;
/// use tower_twilio::{__private::check_method, verify::VerifyError};
///
/// assert_eq!(check_method(&Method::POST), Ok(()));
/// assert_eq!(check_method(&Method::DELETE), Err(VerifyError::MethodNotAllowed));
/// ```
///
/// # Errors
///
/// [`VerifyError::MethodNotAllowed`] for any other method.
pub(crate) fn check_method(method: &Method) -> Result<(), VerifyError> {
    if *method == Method::GET || *method == Method::POST {
        Ok(())
    } else {
        Err(VerifyError::MethodNotAllowed)
    }
}

impl fmt::Debug for WebhookRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn presence(header: Header<'_>) -> &'static str {
            match header {
                Header::Absent => "absent",
                Header::One(_) => "present",
                Header::Repeated => "repeated",
            }
        }
        f.debug_struct("WebhookRequest")
            .field("method", self.method)
            .field("url", &redact_userinfo(self.url))
            .field("body_len", &self.body.len())
            .field(
                "content_type",
                &self.content_type.value().map(String::from_utf8_lossy),
            )
            .field("signature", &presence(self.signature))
            .field("settings", &presence(self.settings))
            .field("lenient_urls", &self.lenient_urls)
            .field("max_params", &self.max_params)
            .finish()
    }
}

/// What [`WebhookRequest::prechecked`] establishes without a secret.
pub(crate) struct Prechecked {
    algorithm: Algorithm,
    received: ReceivedSignature,
    payload: Payload,
}

impl Prechecked {
    /// Whether the signature covers the body's form parameters: a form-encoded `POST` whose
    /// URL carries no `bodySHA256`.
    pub(crate) fn is_form(&self) -> bool {
        self.form_pairs().is_some()
    }

    /// For a form body, its number of pairs, counted within the limit.
    pub(crate) fn form_pairs(&self) -> Option<usize> {
        match self.payload {
            Payload::Form { pairs } => Some(pairs),
            _ => None,
        }
    }
}

impl fmt::Debug for Prechecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the received signature.
        f.debug_struct("Prechecked")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// What the signature covers besides the URL.
#[derive(Clone, Copy)]
enum Payload {
    UrlOnly,
    /// A form body of this many pairs (at most [`WebhookRequest::max_params`]).
    Form {
        pairs: usize,
    },
    /// The decoded `bodySHA256` value from the query, if it is 64 bytes long: no other value
    /// can equal a hex SHA-256.
    BodyHash(Option<[u8; 64]>),
}

/// The first `bodySHA256` value in `url`'s query, decoded (borrowed when nothing needs
/// decoding, as in every URL Twilio sends).
fn body_sha256_param(url: &str) -> Option<Cow<'_, str>> {
    // `memchr` rather than `str::find`, which costs more than a short URL's search.
    let query = &url[memchr::memchr(b'?', url.as_bytes())? + 1..];
    let query = query.split('#').next().unwrap_or_default();
    // What `form_urlencoded` would find, without decoding what needs no decoding: a name is
    // compared as it decodes (a query of escaped names costs no allocation), and a value
    // without `%` or `+` is its own decoded form (and the URL is UTF-8 already).
    let plain = |text: &str| !text.bytes().any(|b| b == b'%' || b == b'+');
    query.split('&').find_map(|piece| {
        let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
        if !crate::form::decodes_to(raw_name, BODY_SHA256_PARAM) {
            return None;
        }
        if plain(raw_value) {
            return Some(Cow::Borrowed(raw_value));
        }
        form_urlencoded::parse(piece.as_bytes())
            .next()
            .map(|(_, value)| value)
    })
}

/// Which spelling of the URL the signature matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlForm {
    /// The URL exactly as received.
    AsReceived,
    /// The URL with its port removed, or the default port added.
    OtherPort,
    /// A form one of the official libraries produces by re-serialising the URL (see
    /// [URL spellings](crate::verify#url-spellings)).
    Normalized,
}

/// What a verified signature covered besides the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Covered {
    /// Nothing else: a `GET` (its query is part of the URL) or a request with an empty body
    /// and no `bodySHA256`.
    UrlOnly,
    /// The decoded form parameters of an `application/x-www-form-urlencoded` body.
    FormParams,
    /// The raw body (JSON, say), through the SHA-256 in the signed URL's `bodySHA256`.
    BodySha256,
}

/// A successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The algorithm the signature was made with.
    pub algorithm: Algorithm,
    /// The position, among the secrets passed to [`WebhookRequest::verify`], of the one that
    /// made the signature.
    pub secret_index: usize,
    /// Which spelling of the URL matched.
    pub url_form: UrlForm,
    /// What the signature covered besides the URL.
    pub covered: Covered,
}

/// Why a request failed verification.
///
/// Verification stops at the first failing check, in the order the variants are listed.
/// `Display` text is for people and may change; match on the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyError {
    /// The method is neither `GET` nor `POST`. Twilio sends no other, and the signature does
    /// not cover the method, so a captured `POST` replayed as `PUT` or `DELETE` would
    /// otherwise verify.
    MethodNotAllowed,
    /// No `X-Twilio-Signature` header.
    MissingSignature,
    /// More than one `X-Twilio-Signature` header.
    DuplicateSignature,
    /// The settings header is repeated or not UTF-8.
    MalformedSettings,
    /// The settings header names an algorithm other than `HMAC_SHA1` or `HMAC_SHA256`.
    UnsupportedAlgorithm,
    /// The signature header is not what Twilio sends: padded standard base64 of a 20-byte
    /// (SHA-1) or 32-byte (SHA-256) MAC, with nothing around it.
    MalformedSignature,
    /// The body is neither form-encoded nor covered by a `bodySHA256` query parameter (or the
    /// `Content-Type` is repeated), so the signature cannot cover it.
    UnsupportedContentType,
    /// The form body holds more parameters than the limit
    /// ([`WebhookRequest::max_params`], 1000 by default); it is not decoded.
    TooManyParameters,
    /// No candidate secret signed any candidate URL with these parameters.
    SignatureMismatch,
    /// The signature is good but the body's SHA-256 differs from the signed `bodySHA256`.
    BodyHashMismatch,
}

impl VerifyError {
    /// Every kind, for tests that go through them all.
    #[cfg(test)]
    pub(crate) const ALL: [Self; 10] = [
        Self::MethodNotAllowed,
        Self::MissingSignature,
        Self::DuplicateSignature,
        Self::MalformedSettings,
        Self::UnsupportedAlgorithm,
        Self::MalformedSignature,
        Self::UnsupportedContentType,
        Self::TooManyParameters,
        Self::SignatureMismatch,
        Self::BodyHashMismatch,
    ];

    /// A short, stable, snake_case name for logs and metrics (`"signature_mismatch"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "method_not_allowed",
            Self::MissingSignature => "missing_signature",
            Self::DuplicateSignature => "duplicate_signature",
            Self::MalformedSettings => "malformed_settings",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::MalformedSignature => "malformed_signature",
            Self::UnsupportedContentType => "unsupported_content_type",
            Self::TooManyParameters => "too_many_parameters",
            Self::SignatureMismatch => "signature_mismatch",
            Self::BodyHashMismatch => "body_hash_mismatch",
        }
    }

    /// What went wrong, for people: the `Display` text, also used by
    /// [`RejectionKind`](crate::RejectionKind) for the same reasons.
    pub(crate) const fn description(self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "method other than GET or POST",
            Self::MissingSignature => "missing X-Twilio-Signature header",
            Self::DuplicateSignature => "more than one X-Twilio-Signature header",
            Self::MalformedSettings => "malformed X-Twilio-Webhooks-Signature-Settings header",
            Self::UnsupportedAlgorithm => "unsupported signature algorithm",
            Self::MalformedSignature => "malformed X-Twilio-Signature header",
            Self::UnsupportedContentType => "request body cannot be covered by the signature",
            Self::TooManyParameters => "too many form parameters",
            Self::SignatureMismatch => "signature does not match",
            Self::BodyHashMismatch => "body does not match the signed bodySHA256",
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.description())
    }
}

impl std::error::Error for VerifyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{sign, url_with_body_sha256};

    const URL: &str = "https://example.com/twilio/sms?tenant=7";
    const BODY: &[u8] = b"From=%2B14155550100&Body=Hi+there&AccountSid=AC123";
    const FORM: &[u8] = b"application/x-www-form-urlencoded";

    fn token() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    /// The signature of a request whose body is not signed as parameters: the URL alone.
    fn signed_url_only(url: &str) -> String {
        signed(&token(), Algorithm::HmacSha1, url, b"")
    }

    fn signed(secret: &Secret, algorithm: Algorithm, url: &str, body: &[u8]) -> String {
        let params = Params::parse(body);
        sign(secret.expose_secret(), algorithm, url, params.iter())
    }

    fn form_request<'a>(url: &'a str, body: &'a [u8], sig: &'a str) -> WebhookRequest<'a> {
        WebhookRequest::new(&Method::POST, url, body)
            .content_type(FORM)
            .signature(sig.as_bytes())
    }

    #[test]
    fn a_form_with_more_parameters_than_the_limit_is_refused() {
        let token = token();
        let signature = signed(&token, Algorithm::HmacSha1, URL, BODY);
        let request = WebhookRequest::new(&Method::POST, URL, BODY)
            .content_type(FORM)
            .signature(signature.as_bytes());
        // BODY has three parameters.
        assert!(request.max_params(3).verify([&token]).is_ok());
        assert!(
            request.verify([&token]).is_ok(),
            "the default limit is 1000"
        );
        assert_eq!(
            request.max_params(2).verify([&token]),
            Err(VerifyError::TooManyParameters)
        );
        // The checks that need no body come first. A GET's query is signed as part of the URL
        // and not decoded here (the middleware bounds it when it decodes it for the handler).
        let unsigned = WebhookRequest::new(&Method::POST, URL, BODY).content_type(FORM);
        assert_eq!(
            unsigned.max_params(2).verify([&token]),
            Err(VerifyError::MissingSignature)
        );
        let empty = signed(&token, Algorithm::HmacSha1, URL, b"");
        let get = WebhookRequest::new(&Method::GET, URL, b"").signature(empty.as_bytes());
        assert!(get.max_params(0).verify([&token]).is_ok());
    }

    #[test]
    fn form_round_trip() {
        let sig = signed(&token(), Algorithm::HmacSha1, URL, BODY);
        let verified = form_request(URL, BODY, &sig).verify([&token()]).unwrap();
        assert_eq!(verified.algorithm, Algorithm::HmacSha1);
        assert_eq!(verified.secret_index, 0);
        assert_eq!(verified.url_form, UrlForm::AsReceived);
    }

    #[test]
    fn any_single_change_is_rejected() {
        let sig = signed(&token(), Algorithm::HmacSha1, URL, BODY);
        let other_token = Secret::new("0123456789abcdef0123456789abcdeF").unwrap();
        let cases: [(&str, &str, &[u8], &str, &Secret); 5] = [
            (
                "body value",
                URL,
                b"From=%2B14155550101&Body=Hi+there&AccountSid=AC123",
                &sig,
                &token(),
            ),
            (
                "extra param",
                URL,
                b"From=%2B14155550100&Body=Hi+there&AccountSid=AC123&X=1",
                &sig,
                &token(),
            ),
            (
                "query",
                "https://example.com/twilio/sms?tenant=8",
                BODY,
                &sig,
                &token(),
            ),
            (
                "path",
                "https://example.com/twilio/sms/?tenant=7",
                BODY,
                &sig,
                &token(),
            ),
            ("token", URL, BODY, &sig, &other_token),
        ];
        for (what, url, body, sig, secret) in cases {
            assert_eq!(
                form_request(url, body, sig).verify([secret]),
                Err(VerifyError::SignatureMismatch),
                "{what}"
            );
        }
        // Flip one bit of the MAC: still well-formed base64, wrong value.
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            form_request(URL, BODY, &flipped).verify([&token()]),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn reading_the_headers_in_one_pass_finds_what_looking_them_up_finds() {
        // Every count (absent, once, twice) of each header read, among few other headers (one
        // pass) and among more than `SCAN_AT_MOST` (one lookup each), in both orders.
        let names = [
            header::CONTENT_TYPE,
            SIGNATURE,
            SIGNATURE_SETTINGS,
            IDEMPOTENCY_TOKEN,
        ];
        for counts in 0..3_u32.pow(4) {
            for fillers in [0, 3, SCAN_AT_MOST + 1] {
                for fillers_first in [false, true] {
                    let mut headers = HeaderMap::new();
                    let add_fillers = |headers: &mut HeaderMap| {
                        for i in 0..fillers {
                            let name = HeaderName::try_from(format!("x-filler-{i}")).unwrap();
                            headers.append(name, HeaderValue::from_static("f"));
                        }
                    };
                    if fillers_first {
                        add_fillers(&mut headers);
                    }
                    for (i, name) in names.iter().enumerate() {
                        for n in 0..counts / 3_u32.pow(i as u32) % 3 {
                            let value = HeaderValue::try_from(format!("{name}-{n}")).unwrap();
                            headers.append(name.clone(), value);
                        }
                    }
                    if !fillers_first {
                        add_fillers(&mut headers);
                    }
                    let read = TwilioHeaders::read(&headers);
                    assert_eq!(read, TwilioHeaders::look_up(&headers), "{headers:?}");
                    assert_eq!(
                        TwilioHeaders::has_signature(&headers),
                        headers.contains_key(SIGNATURE)
                    );
                    assert_eq!(
                        read.signature != Header::Absent,
                        headers.contains_key(SIGNATURE)
                    );
                    assert_eq!(
                        read.idempotency_token,
                        headers.get(IDEMPOTENCY_TOKEN),
                        "the first token, as `get` finds it"
                    );
                }
            }
        }
    }

    #[test]
    fn signing_no_ops_are_accepted() {
        // Only decoded values are signed: the encoding, the order and exact repeats are not.
        let sig = signed(&token(), Algorithm::HmacSha1, URL, BODY);
        for body in [
            &b"AccountSid=AC123&Body=Hi%20there&From=%2b14155550100"[..],
            b"From=%2B14155550100&Body=Hi+there&AccountSid=AC123&AccountSid=AC123",
            b"From=%2B14155550100&&Body=Hi+there&AccountSid=AC123&",
        ] {
            assert!(
                form_request(URL, body, &sig).verify([&token()]).is_ok(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn header_problems_have_their_own_reasons() {
        let sig = signed(&token(), Algorithm::HmacSha1, URL, BODY);
        let bare = WebhookRequest::new(&Method::POST, URL, BODY).content_type(FORM);
        assert_eq!(bare.verify([&token()]), Err(VerifyError::MissingSignature));

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, FORM.try_into().unwrap());
        headers.append(SIGNATURE_HEADER, sig.parse().unwrap());
        headers.append(SIGNATURE_HEADER, sig.parse().unwrap());
        let twice = WebhookRequest::from_parts(&Method::POST, URL, &headers, BODY);
        assert_eq!(
            twice.verify([&token()]),
            Err(VerifyError::DuplicateSignature)
        );

        for malformed in [
            "",
            " x",
            "not base64 at all",
            &sig[..27],
            &format!("{sig} "),
        ] {
            assert_eq!(
                form_request(URL, BODY, malformed).verify([&token()]),
                Err(VerifyError::MalformedSignature),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn settings_header_selects_the_algorithm() {
        let shared = Secret::new("shared-key-secret").unwrap();
        let sig = signed(&shared, Algorithm::HmacSha256, URL, BODY);
        let request = form_request(URL, BODY, &sig)
            .signature_settings(b"key=webhooks_sharedkey_1,algorithm=HMAC_SHA256");
        assert_eq!(
            request.verify([&shared]).unwrap().algorithm,
            Algorithm::HmacSha256
        );
        assert_eq!(
            request
                .signature_settings_header()
                .unwrap()
                .unwrap()
                .key_id(),
            Some("webhooks_sharedkey_1")
        );
        // The same signature without the header is read as SHA-1, and is malformed as such.
        assert_eq!(
            form_request(URL, BODY, &sig).verify([&shared]),
            Err(VerifyError::MalformedSignature)
        );
        let unknown = request.signature_settings(b"key=k,algorithm=HMAC_SHA512");
        assert_eq!(
            unknown.verify([&shared]),
            Err(VerifyError::UnsupportedAlgorithm)
        );
        let not_utf8 = request.signature_settings(b"key=\xff");
        assert_eq!(
            not_utf8.verify([&shared]),
            Err(VerifyError::MalformedSettings)
        );
    }

    #[test]
    fn rotation_reports_which_secret_matched() {
        let old = Secret::new("old-token").unwrap();
        let new = Secret::new("new-token").unwrap();
        let sig = signed(&new, Algorithm::HmacSha1, URL, BODY);
        let verified = form_request(URL, BODY, &sig).verify([&old, &new]).unwrap();
        assert_eq!(verified.secret_index, 1);
        let none: [&Secret; 0] = [];
        assert_eq!(
            form_request(URL, BODY, &sig).verify(none),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn ports_are_tried_both_ways() {
        let sig = signed(
            &token(),
            Algorithm::HmacSha1,
            "https://example.com:443/sms",
            BODY,
        );
        let verified = form_request("https://example.com/sms", BODY, &sig)
            .verify([&token()])
            .unwrap();
        assert_eq!(verified.url_form, UrlForm::OtherPort);
        let sig = signed(
            &token(),
            Algorithm::HmacSha1,
            "https://example.com/sms",
            BODY,
        );
        let verified = form_request("https://example.com:8443/sms", BODY, &sig)
            .verify([&token()])
            .unwrap();
        assert_eq!(verified.url_form, UrlForm::OtherPort);
    }

    #[test]
    fn json_body_is_checked_against_bodysha256() {
        let body = br#"{"MessageSid":"SM123","MessageStatus":"delivered"}"#;
        let url = url_with_body_sha256("https://example.com/hook", body);
        let sig = signed_url_only(&url);
        let request = WebhookRequest::new(&Method::POST, &url, body)
            .content_type(b"application/json")
            .signature(sig.as_bytes());
        assert!(request.verify([&token()]).is_ok());

        let tampered = WebhookRequest {
            body: br#"{"MessageSid":"SM124","MessageStatus":"delivered"}"#,
            ..request
        };
        assert_eq!(
            tampered.verify([&token()]),
            Err(VerifyError::BodyHashMismatch)
        );

        // Upper-case hex is not what Twilio sends.
        let upper = url.to_ascii_uppercase().replace(
            "HTTPS://EXAMPLE.COM/HOOK?BODYSHA256",
            "https://example.com/hook?bodySHA256",
        );
        let sig = signed_url_only(&upper);
        let request = WebhookRequest {
            url: &upper,
            signature: Header::One(sig.as_bytes()),
            ..request
        };
        assert_eq!(
            request.verify([&token()]),
            Err(VerifyError::BodyHashMismatch)
        );
    }

    #[test]
    fn json_replayed_without_its_body_fails_the_hash_check() {
        let body = br#"{"MessageSid":"SM123"}"#;
        let url = url_with_body_sha256("https://example.com/hook", body);
        let sig = signed_url_only(&url);
        let emptied = WebhookRequest::new(&Method::POST, &url, b"")
            .content_type(b"application/json")
            .signature(sig.as_bytes());
        assert_eq!(
            emptied.verify([&token()]),
            Err(VerifyError::BodyHashMismatch)
        );
    }

    #[test]
    fn exact_urls_only_refuses_re_serialised_forms() {
        let sig = signed(
            &token(),
            Algorithm::HmacSha1,
            "https://example.com/sms",
            BODY,
        );
        let mixed_case = form_request("https://Example.COM/sms", BODY, &sig);
        assert_eq!(
            mixed_case.verify([&token()]).unwrap().url_form,
            UrlForm::Normalized
        );
        assert_eq!(
            mixed_case.exact_urls_only(true).verify([&token()]),
            Err(VerifyError::SignatureMismatch)
        );
        // A form that changes the route is refused in both modes.
        let dotted = form_request("https://example.com/x/../sms", BODY, &sig);
        assert_eq!(
            dotted.verify([&token()]),
            Err(VerifyError::SignatureMismatch)
        );
        let port = form_request("https://example.com:443/sms", BODY, &sig).exact_urls_only(true);
        assert_eq!(
            port.verify([&token()]).unwrap().url_form,
            UrlForm::OtherPort
        );
    }

    #[test]
    fn debug_redacts_userinfo() {
        let request = form_request("https://user:hunter2@example.com/sms", BODY, "x");
        let shown = format!("{request:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("[redacted]@example.com"),
            "{shown}"
        );
    }

    #[test]
    fn bodies_the_signature_cannot_cover_are_refused() {
        let url = "https://example.com/hook";
        let sig = signed_url_only(url);
        let json = WebhookRequest::new(&Method::POST, url, b"{}")
            .content_type(b"application/json")
            .signature(sig.as_bytes());
        assert_eq!(
            json.verify([&token()]),
            Err(VerifyError::UnsupportedContentType)
        );
        let get_with_body =
            WebhookRequest::new(&Method::GET, url, b"x=1").signature(sig.as_bytes());
        assert_eq!(
            get_with_body.verify([&token()]),
            Err(VerifyError::UnsupportedContentType)
        );
        // An empty body signs as the bare URL whatever its content type.
        let empty = WebhookRequest::new(&Method::POST, url, b"")
            .content_type(b"application/json")
            .signature(sig.as_bytes());
        assert!(empty.verify([&token()]).is_ok());
        let get = WebhookRequest::new(&Method::GET, url, b"").signature(sig.as_bytes());
        assert!(get.verify([&token()]).is_ok());
    }

    #[test]
    fn body_sha256_binds_the_body_whatever_the_method_and_content_type() {
        let body = br#"{"MessageStatus":"delivered"}"#;
        let url = url_with_body_sha256("https://example.com/hook", body);
        let sig = signed_url_only(&url);
        let replays: [(Method, Option<&[u8]>, &[u8]); 5] = [
            (Method::GET, None, b""),
            (Method::POST, Some(FORM), b""),
            (Method::POST, Some(FORM), b"&&&"),
            (Method::POST, Some(FORM), b"MessageStatus=failed"),
            (Method::POST, Some(b"text/plain"), b"x"),
        ];
        for (method, content_type, replayed) in replays {
            let mut request =
                WebhookRequest::new(&method, &url, replayed).signature(sig.as_bytes());
            if let Some(content_type) = content_type {
                request = request.content_type(content_type);
            }
            assert_eq!(
                request.verify([&token()]),
                Err(VerifyError::BodyHashMismatch),
                "{method} {replayed:?}"
            );
        }
        let genuine = WebhookRequest::new(&Method::POST, &url, body)
            .content_type(FORM)
            .signature(sig.as_bytes());
        assert!(
            genuine.verify([&token()]).is_ok(),
            "the hash decides, not the type"
        );
    }

    #[test]
    fn only_get_and_post_are_verified() {
        let sig = signed(&token(), Algorithm::HmacSha1, URL, BODY);
        for method in [
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
            Method::from_bytes(b"PROPFIND").unwrap(),
        ] {
            let request = WebhookRequest::new(&method, URL, BODY)
                .content_type(FORM)
                .signature(sig.as_bytes());
            assert_eq!(
                request.verify([&token()]),
                Err(VerifyError::MethodNotAllowed),
                "{method}"
            );
            assert_eq!(
                request.check_without_secrets(),
                Err(VerifyError::MethodNotAllowed)
            );
        }
        assert!(form_request(URL, BODY, &sig).verify([&token()]).is_ok());
    }

    #[test]
    fn get_signs_the_raw_query_only() {
        let url = "https://example.com/voice?To=%2B1415&From=a+b&CallSid=CA1";
        let sig = signed_url_only(url);
        let get = WebhookRequest::new(&Method::GET, url, b"").signature(sig.as_bytes());
        assert!(get.verify([&token()]).is_ok());
        // The query is not sorted or re-encoded on the exact path.
        let reordered = "https://example.com/voice?CallSid=CA1&To=%2B1415&From=a+b";
        let get = WebhookRequest::new(&Method::GET, reordered, b"").signature(sig.as_bytes());
        assert_eq!(get.verify([&token()]), Err(VerifyError::SignatureMismatch));
    }

    #[test]
    fn body_sha256_param_reads_the_first_decoded_match() {
        let rows = [
            ("https://e.com/h?bodySHA256=ab", Some("ab")),
            (
                "https://e.com/h?a=1&bodySHA256=ab&bodySHA256=cd",
                Some("ab"),
            ),
            ("https://e.com/h?body%53HA256=ab", Some("ab")),
            ("https://e.com/h?bodySHA256=a%62#bodySHA256=x", Some("ab")),
            ("https://e.com/h?bodySHA2567=ab&x", None),
            ("https://e.com/h?&&bodySHA256", Some("")),
            ("https://e.com/h?bodySHA256=a+b%2B", Some("a b+")),
            ("https://e.com/h?x=%3D&bodySHA256==", Some("=")),
            (
                "https://e.com/h?body+SHA256=x&bodySHA256%=y&%62ody%53HA256=%FF",
                Some("\u{fffd}"),
            ),
            (
                "https://e.com/h?%62odySHA256%3=x&bodySHA256%2B=y&bodySHA25%36",
                Some(""),
            ),
            ("https://e.com/h", None),
        ];
        for (url, expected) in rows {
            let reference = url.find('?').and_then(|q| {
                let query = url[q + 1..].split('#').next().unwrap_or_default();
                form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == BODY_SHA256_PARAM)
                    .map(|(_, value)| value.into_owned())
            });
            assert_eq!(body_sha256_param(url).as_deref(), expected, "{url}");
            assert_eq!(reference.as_deref(), expected, "{url}");
        }
    }

    #[test]
    fn error_names_are_stable() {
        assert_eq!(
            VerifyError::SignatureMismatch.as_str(),
            "signature_mismatch"
        );
        assert_eq!(
            VerifyError::MissingSignature.to_string(),
            "missing X-Twilio-Signature header"
        );
    }
}
