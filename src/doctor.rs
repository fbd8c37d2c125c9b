//! The mismatch doctor: when a signature does not match, find the URL it *does* match.
//!
//! Nearly every "validation fails behind my proxy" report has one cause: the URL the server
//! rebuilds is not the URL Twilio called — `http` for `https`, a tunnel's host rewritten, a port,
//! a path prefix stripped by a proxy or a nested router, a trailing slash. [`diagnose`] takes a
//! request that failed with [`VerifyError::SignatureMismatch`](crate::verify::VerifyError) and
//! tries a bounded set of other URLs built from what the request carries, with the same secrets:
//!
//! 1. the other scheme (`http` ↔ `https`);
//! 2. the host from `Host`, `X-Forwarded-Host`, `Forwarded: host=` or `X-Original-Host` — from
//!    any peer, since this is diagnosis, not trust;
//! 3. the port from `X-Forwarded-Port`, or no port;
//! 4. the path with a prefix from `X-Forwarded-Prefix`, or the original path from
//!    `X-Original-URI`, `X-Envoy-Original-Path` or the router's original URI (axum's
//!    `OriginalUri`, see [`Clues::original_uri`]);
//! 5. the path with and without a trailing slash.
//!
//! Single changes are tried before combinations, and at most [`MAX_HMACS`] signatures are
//! computed in all. If one URL matches, the [`Diagnosis`] names it and says what to configure.
//! A request that no URL explains — a forgery, a wrong token — gets no diagnosis, never a
//! wrong one. The verdict never changes: a diagnosed request is still refused, and the diagnosis
//! belongs in logs and events, never in the HTTP response.
//!
//! The work is bounded by construction, whatever the request holds: at most the last
//! 16 values of each forwarding header are read (with the same readers, and held to the same
//! host, port and prefix rules, as [`PublicUrl`](crate::PublicUrl): a host, port or prefix the
//! doctor tries is one the middleware would take from a trusted proxy), the hosts, paths and
//! ports considered are kept without
//! repeats as they are read so that every combination is a distinct URL, and the URLs are built
//! one at a time, only as many as the [`MAX_HMACS`] budget lets it try. The URL in a diagnosis
//! keeps the names of its query and redacts the values (`?From=[redacted]`), like every URL
//! the middleware reports.
//!
//! Pure: no I/O, no tower types. The middleware never runs it on the request path: with
//! [`diagnose_mismatches_per_second`](crate::TwilioSignatureLayer::diagnose_mismatches_per_second)
//! set, a mismatch is refused at once and handed to a thread of the layer's own, through a
//! bounded queue, at most that many times a second; the diagnosis follows the refusal as a
//! second security event and webhook log entry.
//!
//! ```
//! use http::{HeaderMap, Method};
//! use tower_twilio::{Secret, doctor::{Clues, diagnose}, form::Params, signature::{Algorithm, sign}, verify::WebhookRequest};
//!
//! let token = Secret::new("0123456789abcdef0123456789abcdef").unwrap();
//! let body = b"AccountSid=AC123&Body=Hi";
//! // Twilio called https://…, but the app sits behind a TLS terminator and was configured with
//! // http://….
//! let signature = sign(token.expose_secret(), Algorithm::HmacSha1,
//!     "https://hooks.example.com/twilio/sms", Params::parse(body).iter());
//! let request = WebhookRequest::new(&Method::POST, "http://hooks.example.com/twilio/sms", body)
//!     .content_type(b"application/x-www-form-urlencoded")
//!     .signature(signature.as_bytes());
//! let headers = HeaderMap::new();
//! let clues = Clues::new(&headers, "/twilio/sms");
//!
//! let diagnosis = diagnose(&request, &clues, &[&token]).unwrap();
//! assert_eq!(diagnosis.matched_url(), "https://hooks.example.com/twilio/sms");
//! assert_eq!(diagnosis.public_base(), Some("https://hooks.example.com"));
//!
//! // A forged signature matches no URL: no diagnosis.
//! let forged = request.signature(b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
//! assert!(diagnose(&forged, &clues, &[&token]).is_none());
//! ```

use std::{
    fmt,
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use http::HeaderMap;

use crate::{
    Secret,
    public_url::Scheme,
    url::{
        candidates::{Candidate, Source, Variants},
        headers::{X_FORWARDED_PROTO, last_value},
        parts::split,
        proxy_network::canonical_ip,
        redact::{redact_url, redact_userinfo},
    },
    verify::WebhookRequest,
};

/// The most signatures one diagnosis computes: other URLs tried × secrets.
pub const MAX_HMACS: usize = 16;

/// What a request carries besides what verification reads: where the doctor looks for the URL
/// Twilio really called.
///
/// `Debug` shows header names without their values (`X-Twilio-Signature`, `Authorization`,
/// `Cookie`), and the path and original URI with the values of their query redacted.
#[derive(Clone, Copy)]
pub struct Clues<'a> {
    headers: &'a HeaderMap,
    path_and_query: &'a str,
    original_uri: Option<&'a str>,
    peer: Option<IpAddr>,
}

impl<'a> Clues<'a> {
    /// The request's headers, and its path and query exactly as the application received them
    /// (`/twilio/sms?x=1`).
    pub fn new(headers: &'a HeaderMap, path_and_query: &'a str) -> Self {
        Self {
            headers,
            path_and_query,
            original_uri: None,
            peer: None,
        }
    }

    /// The request target before a router stripped a prefix from it: axum's `OriginalUri`
    /// under `Router::nest`. Only its path and query are read.
    #[must_use]
    pub fn original_uri(mut self, original_uri: &'a str) -> Self {
        self.original_uri = Some(original_uri);
        self
    }

    /// The connecting peer's address, used to word a "trust this proxy" fix.
    #[must_use]
    pub fn peer(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer);
        self
    }
}

impl fmt::Debug for Clues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(|name| name.as_str()).collect();
        f.debug_struct("Clues")
            .field("header_names", &header_names)
            .field("path_and_query", &redact_url(self.path_and_query))
            .field("original_uri", &self.original_uri.map(redact_url))
            .field("peer", &self.peer)
            .finish()
    }
}

/// A URL the signature matches, and what to change so that the middleware rebuilds it. The URL
/// and paths it shows keep the names of their query and redact the values.
///
/// `Display` gives one line for logs: `signature matches https://…; fix: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    matched_url: String,
    public_base: Option<String>,
    fix: String,
}

impl Diagnosis {
    /// The URL the signature was made for, with userinfo and the values of its query redacted
    /// (`https://…/gather?Digits=[redacted]`).
    pub fn matched_url(&self) -> &str {
        &self.matched_url
    }

    /// The fixed public base URL that makes the middleware rebuild
    /// [`matched_url`](Self::matched_url), when one does: what to pass to
    /// [`PublicUrl::fixed`](crate::PublicUrl::fixed). `None` when no base URL can fix it (a
    /// trailing slash added or removed in front of the application).
    pub fn public_base(&self) -> Option<&str> {
        self.public_base.as_deref()
    }

    /// The fix, in one line, in this crate's terms (`PublicUrl::fixed("https://…")`).
    pub fn fix(&self) -> &str {
        &self.fix
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signature matches {}; fix: {}",
            self.matched_url, self.fix
        )
    }
}

/// Tries other URLs for a request whose signature did not match its rebuilt URL.
///
/// `request` is the request as verified (its URL is the one that failed); `secrets` are the
/// secrets it was verified with. Call it only after verification failed with
/// [`SignatureMismatch`](crate::verify::VerifyError::SignatureMismatch): it costs up to
/// [`MAX_HMACS`] signatures. Each other URL is tried exactly as spelled, and a URL whose
/// signature matches while the body does not match its `bodySHA256` explains nothing.
pub fn diagnose(
    request: &WebhookRequest<'_>,
    clues: &Clues<'_>,
    secrets: &[&Secret],
) -> Option<Diagnosis> {
    if secrets.is_empty() {
        return None;
    }
    // A form whose parameters may sort differently in UTF-16 is tried in both orders: two
    // signatures per secret and URL.
    let is_form = request
        .prechecked()
        .is_ok_and(|prechecked| prechecked.is_form());
    let per_secret = if is_form && may_hold_astral_characters(request.body()) {
        2
    } else {
        1
    };
    let secrets = &secrets[..secrets.len().min(MAX_HMACS / per_secret)];
    let variants = Variants::new(
        request.url(),
        clues.headers,
        clues.path_and_query,
        clues.original_uri,
    )?;
    let budget = MAX_HMACS / (secrets.len() * per_secret);
    // Only the URLs tried are built: the budget bounds the work whatever the request holds.
    for candidate in variants.candidates().take(budget) {
        let url = candidate.url();
        let attempt = request.with_exact_url(&url);
        if attempt.verify(secrets.iter().copied()).is_ok() {
            return Some(explain(&variants, &candidate, clues));
        }
    }
    None
}

/// Whether a form body may decode to a character at or above U+10000: raw bytes of a four-byte
/// UTF-8 sequence, or a percent-escape of one (`%F0`–`%F4`). Errs on the side of yes.
fn may_hold_astral_characters(body: &[u8]) -> bool {
    body.iter().any(|&b| b >= 0xF0)
        || body
            .windows(2)
            .any(|w| w[0] == b'%' && (w[1] == b'F' || w[1] == b'f'))
}

/// What the matching candidate says about the configuration.
fn explain(variants: &Variants<'_>, matched: &Candidate<'_>, clues: &Clues<'_>) -> Diagnosis {
    let url = matched.url();
    let without_userinfo = redact_userinfo(&url);
    let (scheme, authority, matched_rest) = split(&without_userinfo)
        .map(|parts| (parts.scheme, parts.authority, parts.rest))
        .unwrap_or_default();
    let pq = clues.path_and_query;
    // The base that, with the path and query the application receives appended, gives the
    // matched URL. It has no query; the URL and paths shown keep only the names of theirs.
    let public_base = matched_rest
        .strip_suffix(pq)
        .map(|prefix| format!("{scheme}://{authority}{prefix}"));
    let matched_url = redact_url(&url).into_owned();
    let (matched_rest, pq) = (redact_url(matched_rest), redact_url(pq));
    let fix = match (&public_base, matched.source) {
        (Some(base), source) => {
            let mut fix = format!("set PublicUrl::fixed(\"{base}\")");
            // Only a peer on a loopback or private network is named as a proxy to trust: from
            // any other address, the "proxy" may be whoever replayed a webhook signed for
            // another URL, and trusting it would let it choose the URL.
            if let (Some(header), Some(peer)) = (
                trusted_header_hint(variants, matched, source, clues),
                clues.peer.filter(|&peer| may_be_a_proxy(peer)),
            ) {
                let bits = if peer.is_ipv4() { 32 } else { 128 };
                fix.push_str(&format!(
                    ", or trust {header} from {peer}/{bits} (ForwardedHeaders::read and trust_proxy)"
                ));
            }
            fix
        }
        (None, Source::TrailingSlash) => format!(
            "Twilio called {matched_rest} but the application received {pq}: a trailing slash \
             is {} on the way; make the URL in the Twilio console match the route, or apply the \
             layer before the path is rewritten",
            if matched_rest.len() > pq.len() {
                "removed"
            } else {
                "added"
            }
        ),
        (None, _) => format!(
            "the application received {pq}, Twilio called {matched_rest}: make the layer see \
             the original request target"
        ),
    };
    Diagnosis {
        matched_url,
        public_base,
        fix,
    }
}

/// Whether `peer` is on a network a reverse proxy of the application's own sits on: loopback,
/// private (RFC 1918), shared (RFC 6598), or IPv6 unique local.
fn may_be_a_proxy(peer: IpAddr) -> bool {
    match canonical_ip(peer) {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
    }
}

/// The forwarding header that, trusted, would have given the matched URL, when the candidate
/// changed exactly one part and a header supplied it.
fn trusted_header_hint(
    variants: &Variants<'_>,
    matched: &Candidate<'_>,
    source: Source,
    clues: &Clues<'_>,
) -> Option<&'static str> {
    match source {
        Source::OtherScheme => {
            // What PublicUrl would read from the header, trusted.
            let proto = Scheme::parse(last_value(clues.headers, &X_FORWARDED_PROTO).ok()??)?;
            (Scheme::parse(matched.scheme) == Some(proto) && matched.rest == variants.rest)
                .then_some("X-Forwarded-Proto")
        }
        Source::Header(name @ ("X-Forwarded-Host" | "X-Forwarded-Prefix")) => Some(name),
        Source::Header("Forwarded") => Some("Forwarded"),
        _ => None,
    }
}

/// At most `per_second` diagnoses a second, shared by every clone of a layer, so that a flood
/// of forged requests cannot turn the doctor into a CPU sink. Lock-free.
#[derive(Debug)]
pub(crate) struct DiagnosisBudget {
    per_second: u32,
    start: Instant,
    /// The current second (high 32 bits) and the diagnoses started in it (low 32 bits).
    window: AtomicU64,
}

impl DiagnosisBudget {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            start: Instant::now(),
            window: AtomicU64::new(0),
        }
    }

    /// Takes one diagnosis from this second's budget; `false` when it is spent.
    pub(crate) fn try_take(&self) -> bool {
        let second = self.start.elapsed().as_secs() & 0xffff_ffff;
        self.try_take_at(second)
    }

    fn try_take_at(&self, second: u64) -> bool {
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window, used) = (current >> 32, current & 0xffff_ffff);
            let next = if window == second {
                if used >= u64::from(self.per_second) {
                    return false;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            if self.per_second == 0 {
                return false;
            }
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method};

    use super::*;
    use crate::{
        form::Params,
        signature::{Algorithm, sign, url_with_body_sha256},
    };

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const BODY: &[u8] = b"AccountSid=AC123&From=%2B14155550100&Body=Hi";
    const FORM: &[u8] = b"application/x-www-form-urlencoded";

    fn token() -> Secret {
        Secret::new(TOKEN).unwrap()
    }

    fn signed_for(url: &str) -> String {
        sign(
            TOKEN.as_bytes(),
            Algorithm::HmacSha1,
            url,
            Params::parse(BODY).iter(),
        )
    }

    /// Every URL the doctor would try for `url`, in order.
    fn candidates(url: &str, clues: &Clues<'_>) -> Vec<String> {
        Variants::new(url, clues.headers, clues.path_and_query, clues.original_uri)
            .map(|variants| variants.candidates().map(|c| c.url()).collect())
            .unwrap_or_default()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// Diagnoses a form POST signed for `signed_url`, received as `rebuilt_url` with the
    /// application seeing `path_and_query` and `headers`.
    fn run(
        signed_url: &str,
        rebuilt_url: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        original: Option<&str>,
    ) -> Option<Diagnosis> {
        let signature = signed_for(signed_url);
        let request = WebhookRequest::new(&Method::POST, rebuilt_url, BODY)
            .content_type(FORM)
            .signature(signature.as_bytes());
        let mut clues = Clues::new(headers, path_and_query).peer(IpAddr::from([10, 1, 2, 3]));
        if let Some(original) = original {
            clues = clues.original_uri(original);
        }
        diagnose(&request, &clues, &[&token()])
    }

    /// [`run`] with no header and no original URI.
    fn run_without_clues(
        signed_url: &str,
        rebuilt_url: &str,
        path_and_query: &str,
    ) -> Option<Diagnosis> {
        run(
            signed_url,
            rebuilt_url,
            path_and_query,
            &HeaderMap::new(),
            None,
        )
    }

    #[test]
    fn each_common_cause_is_named_with_its_fix() {
        // (what went wrong, signed URL, rebuilt URL, path seen, headers, original URI,
        //  expected public base, words the fix must contain)
        type Row = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
        );
        let rows: &[Row] = &[
            (
                "https behind a TLS terminator, configured as http",
                "https://hooks.example.com/twilio/sms",
                "http://hooks.example.com/twilio/sms",
                "/twilio/sms",
                &[("x-forwarded-proto", "https")],
                None,
                Some("https://hooks.example.com"),
                "or trust X-Forwarded-Proto from 10.1.2.3/32",
            ),
            (
                "an ngrok-style tunnel rewrites the host",
                "https://abc123.ngrok-free.app/twilio/sms",
                "http://localhost:3000/twilio/sms",
                "/twilio/sms",
                &[
                    ("x-forwarded-host", "abc123.ngrok-free.app"),
                    ("x-forwarded-proto", "https"),
                ],
                None,
                Some("https://abc123.ngrok-free.app"),
                "PublicUrl::fixed(\"https://abc123.ngrok-free.app\")",
            ),
            (
                "a proxy strips a prefix and says so in X-Forwarded-Prefix",
                "https://api.example.com/app/twilio/sms",
                "https://api.example.com/twilio/sms",
                "/twilio/sms",
                &[("x-forwarded-prefix", "/app")],
                None,
                Some("https://api.example.com/app"),
                "or trust X-Forwarded-Prefix",
            ),
            (
                "axum's nest strips /twilio; OriginalUri keeps it",
                "https://api.example.com/twilio/sms",
                "https://api.example.com/sms",
                "/sms",
                &[],
                Some("/twilio/sms"),
                Some("https://api.example.com/twilio"),
                "PublicUrl::fixed(\"https://api.example.com/twilio\")",
            ),
            (
                "the console URL ends in a slash that the app's path lacks",
                "https://api.example.com/twilio/sms/",
                "https://api.example.com/twilio/sms",
                "/twilio/sms",
                &[],
                None,
                None,
                "trailing",
            ),
            (
                "an explicit port in the console URL",
                "https://api.example.com:8443/twilio/sms",
                "https://api.example.com/twilio/sms",
                "/twilio/sms",
                &[("x-forwarded-port", "8443")],
                None,
                Some("https://api.example.com:8443"),
                "PublicUrl::fixed",
            ),
        ];
        for &(why, signed, rebuilt, pq, pairs, original, base, words) in rows {
            let diagnosis = run(signed, rebuilt, pq, &headers(pairs), original)
                .unwrap_or_else(|| panic!("{why}: no diagnosis"));
            assert_eq!(diagnosis.matched_url(), signed, "{why}");
            assert_eq!(diagnosis.public_base(), base, "{why}");
            assert!(
                diagnosis.fix().contains(words),
                "{why}: {}",
                diagnosis.fix()
            );
        }
    }

    #[test]
    fn the_debug_of_clues_shows_header_names_and_no_value() {
        let headers = headers(&[
            ("x-twilio-signature", "c2lnbmF0dXJlLXZhbHVl"),
            ("authorization", "Bearer tok-4711"),
            ("cookie", "session=cookie-4711"),
            ("host", "internal:3000"),
        ]);
        let clues = Clues::new(&headers, "/sms?From=%2B14155550100&Body=secret-body")
            .original_uri("/twilio/sms?From=%2B14155550100&Body=secret-body")
            .peer("10.0.0.7".parse().unwrap());
        for printed in [format!("{clues:?}"), format!("{clues:#?}")] {
            for hidden in [
                "c2lnbmF0dXJlLXZhbHVl",
                "tok-4711",
                "cookie-4711",
                "internal:3000",
                "14155550100",
                "secret-body",
            ] {
                assert!(!printed.contains(hidden), "{hidden} in {printed}");
            }
            for shown in [
                "x-twilio-signature",
                "authorization",
                "cookie",
                "/sms?From=",
                "/twilio/sms?From=",
                "10.0.0.7",
            ] {
                assert!(printed.contains(shown), "{shown} not in {printed}");
            }
        }
    }

    #[test]
    fn a_forged_signature_gets_no_diagnosis() {
        let headers = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "abc.ngrok-free.app"),
            ("x-forwarded-prefix", "/app"),
        ]);
        let request = WebhookRequest::new(&Method::POST, "http://localhost/twilio/sms", BODY)
            .content_type(FORM)
            .signature(b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let clues = Clues::new(&headers, "/twilio/sms");
        assert_eq!(diagnose(&request, &clues, &[&token()]), None);
    }

    #[test]
    fn a_signature_for_a_url_no_clue_leads_to_gets_no_diagnosis() {
        // Signed for another host entirely, which nothing in the request names.
        let diagnosis = run_without_clues(
            "https://elsewhere.example.net/twilio/sms",
            "https://api.example.com/twilio/sms",
            "/twilio/sms",
        );
        assert_eq!(diagnosis, None);
    }

    #[test]
    fn a_wrong_token_gets_no_diagnosis() {
        let signature = sign(
            b"another-token-entirely-0000000000",
            Algorithm::HmacSha1,
            "https://hooks.example.com/twilio/sms",
            Params::parse(BODY).iter(),
        );
        let request =
            WebhookRequest::new(&Method::POST, "http://hooks.example.com/twilio/sms", BODY)
                .content_type(FORM)
                .signature(signature.as_bytes());
        let headers = HeaderMap::new();
        let clues = Clues::new(&headers, "/twilio/sms");
        assert_eq!(diagnose(&request, &clues, &[&token()]), None);
    }

    #[test]
    fn a_body_that_does_not_match_its_hash_is_not_explained_by_a_url() {
        let json = br#"{"AccountSid":"AC123"}"#;
        let signed = url_with_body_sha256("https://api.example.com/twilio/events", json);
        let signature = sign(
            TOKEN.as_bytes(),
            Algorithm::HmacSha1,
            &signed,
            std::iter::empty::<(&str, &str)>(),
        );
        let received = signed.replacen("https://", "http://", 1);
        let pq = &received["http://api.example.com".len()..];
        let tampered = br#"{"AccountSid":"AC999"}"#;
        let request = WebhookRequest::new(&Method::POST, &received, tampered)
            .content_type(b"application/json")
            .signature(signature.as_bytes());
        let headers = HeaderMap::new();
        let clues = Clues::new(&headers, pq);
        assert_eq!(diagnose(&request, &clues, &[&token()]), None);
        // With the body it was signed with, the scheme is the whole story.
        let request = WebhookRequest::new(&Method::POST, &received, json)
            .content_type(b"application/json")
            .signature(signature.as_bytes());
        let diagnosis = diagnose(&request, &clues, &[&token()]).unwrap();
        // The query's values are redacted (the hash of the body among them).
        assert_eq!(
            diagnosis.matched_url(),
            "https://api.example.com/twilio/events?bodySHA256=[redacted]"
        );
        assert!(signed.starts_with("https://api.example.com/twilio/events?bodySHA256="));
    }

    #[test]
    fn never_more_than_the_hmac_budget() {
        // Many clues, and the signed URL is the last candidate or beyond: with one secret at
        // most MAX_HMACS URLs are tried.
        let headers = headers(&[
            ("host", "b.example"),
            ("x-forwarded-host", "c.example, d.example"),
            ("forwarded", "host=e.example;proto=https"),
            ("x-original-host", "f.example"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-prefix", "/p"),
            ("x-original-uri", "/q/x"),
        ]);
        let clues = Clues::new(&headers, "/x").original_uri("/r/x");
        let all = candidates("http://a.example/x", &clues);
        assert!(all.len() > MAX_HMACS, "the table should exceed the budget");
        let mut urls: Vec<String> = all.clone();
        urls.sort();
        urls.dedup();
        assert_eq!(urls.len(), all.len(), "no URL is tried twice");
        assert!(!urls.contains(&"http://a.example/x".to_owned()));

        // The last candidate is out of budget: no diagnosis even though it would match.
        let last = all.last().unwrap().clone();
        assert!(run(&last, "http://a.example/x", "/x", &headers, Some("/r/x")).is_none());
        // With three secrets, five URLs (15 HMACs) are tried.
        let fifth = all[4].clone();
        let sixth = all[5].clone();
        let other = Secret::new("another-token-entirely-0000000000").unwrap();
        let unrelated = Secret::new("yet-another-token-0000000000000000").unwrap();
        for (url, expected) in [(fifth, true), (sixth, false)] {
            let signature = signed_for(&url);
            let request = WebhookRequest::new(&Method::POST, "http://a.example/x", BODY)
                .content_type(FORM)
                .signature(signature.as_bytes());
            let clues = Clues::new(&headers, "/x").original_uri("/r/x");
            let found = diagnose(&request, &clues, &[&other, &unrelated, &token()]);
            assert_eq!(found.is_some(), expected, "{url}");
        }
    }

    #[test]
    fn astral_characters_halve_the_urls_tried() {
        // A body with an emoji is verified in both sort orders: 8 URLs, not 16, with one secret.
        let body = b"AccountSid=AC123&Body=%F0%9F%91%8B";
        assert!(may_hold_astral_characters(body));
        assert!(!may_hold_astral_characters(BODY));
        let headers = headers(&[(
            "x-forwarded-host",
            "b.example, c.example, d.example, e.example",
        )]);
        let clues = Clues::new(&headers, "/x");
        let all = candidates("http://a.example/x", &clues);
        for (index, expected) in [(7, true), (8, false)] {
            let url = all[index].clone();
            let signature = sign(
                TOKEN.as_bytes(),
                Algorithm::HmacSha1,
                &url,
                Params::parse(body).iter(),
            );
            let request = WebhookRequest::new(&Method::POST, "http://a.example/x", body)
                .content_type(FORM)
                .signature(signature.as_bytes());
            assert_eq!(
                diagnose(&request, &clues, &[&token()]).is_some(),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn only_the_last_forwarded_values_are_read() {
        let hosts: Vec<String> = (0..1000).map(|i| format!("h{i}.example")).collect();
        let headers = headers(&[
            ("x-forwarded-host", &hosts.join(", ")),
            (
                "forwarded",
                &format!("host=f0.example{}", ", for=unknown".repeat(1000)),
            ),
        ]);
        let clues = Clues::new(&headers, "/x");
        let all = candidates("http://a.example/x", &clues);
        let tried = |host: &str| all.iter().any(|url| url.contains(&format!("//{host}/")));
        assert!(tried("h999.example") && tried("h984.example"));
        assert!(!tried("h983.example") && !tried("h0.example"));
        assert!(!tried("f0.example"), "the first of 1001 Forwarded elements");
        // A signature for a host before the last 16 is not explained.
        assert!(
            run(
                "https://h0.example/x",
                "http://a.example/x",
                "/x",
                &headers,
                None
            )
            .is_none()
        );
        assert!(
            run(
                "http://h984.example/x",
                "http://a.example/x",
                "/x",
                &headers,
                None
            )
            .is_some()
        );
    }

    #[test]
    fn the_diagnosis_keeps_query_names_only() {
        let signed = "https://api.example.com/sms/?From=%2B14155550100&Code=493817";
        let received = "https://api.example.com/sms?From=%2B14155550100&Code=493817";
        let pq = "/sms?From=%2B14155550100&Code=493817";
        let diagnosis = run_without_clues(signed, received, pq).unwrap();
        assert_eq!(
            diagnosis.matched_url(),
            "https://api.example.com/sms/?From=[redacted]&Code=[redacted]"
        );
        assert_eq!(
            diagnosis.fix(),
            "Twilio called /sms/?From=[redacted]&Code=[redacted] but the application received \
             /sms?From=[redacted]&Code=[redacted]: a trailing slash is removed on the way; make \
             the URL in the Twilio console match the route, or apply the layer before the path \
             is rewritten"
        );
    }

    #[test]
    fn the_budget_allows_per_second_then_refuses_until_the_next_second() {
        let budget = DiagnosisBudget::new(20);
        assert_eq!((0..100).filter(|_| budget.try_take_at(7)).count(), 20);
        assert!(!budget.try_take_at(7));
        assert_eq!((0..100).filter(|_| budget.try_take_at(8)).count(), 20);
        let none = DiagnosisBudget::new(0);
        assert!(!none.try_take_at(0));
    }

    #[test]
    fn only_a_peer_on_a_private_network_is_named_as_a_proxy_to_trust() {
        // A webhook signed for another host (staging, say), replayed from anywhere with that
        // host in X-Forwarded-Host: the fix must not tell the operator to trust the sender.
        let headers = headers(&[("x-forwarded-host", "staging.example.com")]);
        let signature = signed_for("https://staging.example.com/twilio/sms");
        let request =
            WebhookRequest::new(&Method::POST, "https://api.example.com/twilio/sms", BODY)
                .content_type(FORM)
                .signature(signature.as_bytes());
        let fix_from = |peer: IpAddr| {
            let clues = Clues::new(&headers, "/twilio/sms").peer(peer);
            diagnose(&request, &clues, &[&token()])
                .unwrap()
                .fix()
                .to_owned()
        };
        for peer in [
            IpAddr::from([203, 0, 113, 7]),
            IpAddr::from([100, 128, 0, 1]),
            "2001:db8::1".parse().unwrap(),
            "::ffff:198.51.100.2".parse().unwrap(),
        ] {
            let fix = fix_from(peer);
            assert!(fix.contains("PublicUrl::fixed"), "{peer}: {fix}");
            assert!(!fix.contains("trust"), "{peer}: {fix}");
        }
        for peer in [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([10, 1, 2, 3]),
            IpAddr::from([172, 16, 0, 9]),
            IpAddr::from([192, 168, 1, 2]),
            IpAddr::from([100, 64, 0, 1]),
            "fd00::1".parse().unwrap(),
            "::1".parse().unwrap(),
            "::ffff:10.0.0.1".parse().unwrap(),
        ] {
            let fix = fix_from(peer);
            assert!(
                fix.contains(&format!("trust X-Forwarded-Host from {peer}")),
                "{peer}: {fix}"
            );
        }
    }

    #[test]
    fn the_diagnosis_line_names_url_and_fix() {
        let diagnosis = run_without_clues(
            "https://hooks.example.com/twilio/sms",
            "http://hooks.example.com/twilio/sms",
            "/twilio/sms",
        )
        .unwrap();
        assert_eq!(
            diagnosis.to_string(),
            "signature matches https://hooks.example.com/twilio/sms; fix: set \
             PublicUrl::fixed(\"https://hooks.example.com\")"
        );
    }
}
