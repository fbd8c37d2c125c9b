//! Property tests: sign → verify round trips over generated URLs, parameter sets, secrets and
//! both algorithms; any single change is refused unless it is one of the signing no-ops named
//! below; the parsers never panic on arbitrary bytes.
//!
//! The case counts are kept small (see `config`) so the whole file runs in a few seconds; the
//! fuzz targets in `fuzz/` cover the same ground for much longer.
//!
//! # The signing no-ops
//!
//! Twilio signs the URL and the *decoded* form parameters, sorted and de-duplicated, each as
//! `name ‖ value` with no separator. So these changes do not change the signature, and a
//! request changed this way still verifies (each has its own test below):
//!
//! - **body re-encoding**: `+` or `%20` for a space, `%2b` or `%2B`, escaping characters that
//!   need none, empty pieces (`&&`);
//! - **pair order** and **identical repeats** (`a=1&a=1`);
//! - **empty pairs**: a piece `=` decodes to an empty name and value, which adds nothing;
//! - **boundary shifts**: `ab=c` and `a=bc` give the same `abc` (an ambiguity of Twilio's
//!   scheme, found by the oracle below rather than by chance);
//! - **UTF-16 order**: twilio-node sorts by UTF-16 code unit, so a reordering that only that
//!   order produces is accepted too;
//! - **ports, by design**: a port the signed URL did not have (the SDKs try the URL without
//!   its port), and the scheme's default port added or removed;
//! - **the SDKs' URL re-serialisations** (lenient mode only): upper-case scheme or host, an
//!   empty `?`, dot segments;
//! - **HMAC key padding**: a secret shorter than the hash block (64 bytes) and the same secret
//!   with zero bytes appended are the same HMAC key.

use std::{collections::BTreeSet, net::IpAddr};

use http::{HeaderName, HeaderValue, Method, Request};
use proptest::{prelude::*, test_runner::Config};
use tower_twilio::{
    __private::{add_default_port, reconstruct, remove_port},
    PublicUrl, Secret,
    form::Params,
    public_url::Scheme,
    signature::{Algorithm, SignatureSettings},
    verify::{UrlForm, VerifyError, WebhookRequest},
};

use crate::support::{every_field_from_10_8, twilio_signature};

const FORM: &[u8] = b"application/x-www-form-urlencoded";

/// 48 cases per property, or `PROPTEST_CASES` for a longer run
/// (`PROPTEST_CASES=5000 cargo test --test it properties`).
fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(48),
        // A failure is printed with its minimal input; nothing is written next to the tests.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

/// A URL as Twilio would call it, kept in parts so tests can change one of them.
#[derive(Debug, Clone)]
struct Url {
    https: bool,
    host: String,
    port: Option<u16>,
    path: Vec<String>,
    query: Vec<(String, String)>,
}

impl Url {
    fn default_port(&self) -> u16 {
        if self.https { 443 } else { 80 }
    }

    fn render(&self) -> String {
        let mut out = String::from(if self.https { "https://" } else { "http://" });
        out.push_str(&self.host);
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        for segment in &self.path {
            out.push('/');
            out.push_str(segment);
        }
        if self.path.is_empty() {
            out.push('/');
        }
        if !self.query.is_empty() {
            out.push('?');
            let pairs: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&pairs.join("&"));
        }
        out
    }
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,6}){1,2}",
        (1u8..=254, any::<u8>(), any::<u8>(), 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        Just("[2001:db8::1]".to_owned()),
    ]
}

fn url() -> impl Strategy<Value = Url> {
    (
        any::<bool>(),
        host(),
        prop::option::of(prop_oneof![Just(443u16), Just(80), 1024u16..=65535]),
        prop::collection::vec("[A-Za-z0-9_~-]{1,8}", 0..4),
        // Distinct, non-numeric query names: twilio-node's querystring re-serialisation
        // groups repeated names and moves numeric ones first (see `url_no_ops_by_design`).
        prop::collection::btree_map("[A-Za-z][A-Za-z0-9]{0,5}", "[A-Za-z0-9]{0,6}", 0..4),
    )
        .prop_map(|(https, host, port, path, query)| Url {
            https,
            host,
            port,
            path,
            query: query.into_iter().collect(),
        })
}

/// Parameter names: a few common ones (so keys repeat), empty, or any Unicode text.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Body".to_owned()),
        Just("From".to_owned()),
        Just("MediaUrl0".to_owned()),
        Just(String::new()),
        "\\PC{1,6}",
    ]
}

/// Parameter values: empty, ASCII, or any Unicode text (astral characters included).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ +%&=a-zA-Z0-9]{1,8}",
        "\\PC{1,8}",
        Just("\u{1F600}\u{FF21}".to_owned()),
    ]
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((name(), value()), 0..8)
}

fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,40}"
}

#[derive(Debug, Clone, Copy)]
enum Alg {
    /// HMAC-SHA1 with no settings header: an auth-token signature.
    Sha1,
    /// HMAC-SHA256 with a settings header naming it.
    Sha256,
}

impl Alg {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Sha1 => Algorithm::HmacSha1,
            Self::Sha256 => Algorithm::HmacSha256,
        }
    }

    fn settings(self) -> Option<&'static [u8]> {
        match self {
            Self::Sha1 => None,
            Self::Sha256 => Some(b"key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"),
        }
    }
}

fn alg() -> impl Strategy<Value = Alg> {
    prop_oneof![Just(Alg::Sha1), Just(Alg::Sha256)]
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The form body of `pairs`. The tests sign this body with the suite's one signer
/// (`support::twilio_signature`), which decodes it again; `signed_requests_verify` checks that
/// it decodes to exactly `pairs`, so what is signed is the generated pairs themselves.
fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Verifies a form POST.
fn verify(
    secret: &str,
    alg: Alg,
    url: &str,
    body: &[u8],
    sig: &str,
) -> Result<tower_twilio::verify::Verified, VerifyError> {
    let secret = Secret::new(secret).unwrap();
    let mut request = WebhookRequest::new(&Method::POST, url, body)
        .content_type(FORM)
        .signature(sig.as_bytes());
    if let Some(settings) = alg.settings() {
        request = request.signature_settings(settings);
    }
    request.verify([&secret])
}

/// The reference canonical string, written independently of the crate: distinct pairs,
/// sorted by name then value, by code point or by UTF-16 code unit.
fn canonical(pairs: &[(String, String)], utf16: bool) -> String {
    let distinct: BTreeSet<&(String, String)> = pairs.iter().collect();
    let mut sorted: Vec<&(String, String)> = distinct.into_iter().collect();
    if utf16 {
        sorted.sort_by(|a, b| {
            (
                a.0.encode_utf16().collect::<Vec<_>>(),
                a.1.encode_utf16().collect::<Vec<_>>(),
            )
                .cmp(&(
                    b.0.encode_utf16().collect::<Vec<_>>(),
                    b.1.encode_utf16().collect::<Vec<_>>(),
                ))
        });
    }
    sorted.iter().map(|(n, v)| format!("{n}{v}")).collect()
}

/// Whether a body with `changed` pairs signs like one with `original`: the same canonical
/// string in code-point order, or in the UTF-16 order twilio-node uses.
fn signs_the_same(original: &[(String, String)], changed: &[(String, String)]) -> bool {
    let signed = canonical(original, false);
    canonical(changed, false) == signed || canonical(changed, true) == signed
}

// ---------------------------------------------------------------------------------------------
// Round trips

proptest! {
    #![proptest_config(config())]

    #[test]
    fn signed_requests_verify(url in url(), pairs in params(), secret in secret(), alg in alg()) {
        let url = url.render();
        let body = encode(&pairs);
        let sig = twilio_signature(&secret, alg.algorithm(), &url, &body);
        let verified = verify(&secret, alg, &url, body.as_bytes(), &sig)
            .map_err(|e| TestCaseError::fail(format!("{e:?} for {url} {body:?}")))?;
        prop_assert_eq!(verified.algorithm, alg.algorithm());
        prop_assert_eq!(verified.url_form, UrlForm::AsReceived);
        // Decoding the body gives back exactly the pairs that were signed.
        let decoded: Vec<(String, String)> = Params::parse(body.as_bytes())
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        prop_assert_eq!(decoded, pairs);
    }

    #[test]
    fn get_requests_sign_the_url_only(url in url(), secret in secret()) {
        let url = url.render();
        let sig = twilio_signature(&secret, Algorithm::HmacSha1, &url, "");
        let secret = Secret::new(secret).unwrap();
        let request = WebhookRequest::new(&Method::GET, &url, b"").signature(sig.as_bytes());
        prop_assert!(request.verify([&secret]).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Single changes

/// One change to a URL's parts.
#[derive(Debug, Clone)]
enum UrlChange {
    ToggleScheme,
    /// Replace the host's first letter or digit with another (not a case variant).
    Host,
    /// Set the port (`None` removes it).
    Port(Option<u16>),
    /// Append a character to the last path segment (or add a segment).
    AppendToPath(char),
    /// Change a character of a path segment to another letter or digit (not a case variant).
    PathChar(usize),
    AddQuery(String, String),
    DropQuery(usize),
    QueryValue(usize),
    /// Swap two query pairs.
    SwapQuery,
}

fn url_change() -> impl Strategy<Value = UrlChange> {
    prop_oneof![
        Just(UrlChange::ToggleScheme),
        Just(UrlChange::Host),
        prop::option::of(prop_oneof![Just(443u16), Just(80), 1024u16..=65535])
            .prop_map(UrlChange::Port),
        prop::char::range('a', 'z').prop_map(UrlChange::AppendToPath),
        any::<usize>().prop_map(UrlChange::PathChar),
        ("[A-Za-z][A-Za-z0-9]{0,5}", "[A-Za-z0-9]{0,4}")
            .prop_map(|(k, v)| UrlChange::AddQuery(k, v)),
        any::<usize>().prop_map(UrlChange::DropQuery),
        any::<usize>().prop_map(UrlChange::QueryValue),
        Just(UrlChange::SwapQuery),
    ]
}

/// A different ASCII letter or digit, and not `c` in another case.
fn other_char(c: char) -> char {
    if c.eq_ignore_ascii_case(&'q') {
        'z'
    } else {
        'q'
    }
}

fn change_first_alnum(text: &mut String) -> bool {
    let Some((i, c)) = text.char_indices().find(|(_, c)| c.is_ascii_alphanumeric()) else {
        return false;
    };
    text.replace_range(i..i + 1, &other_char(c).to_string());
    true
}

/// Applies `change`; `None` when it does not apply to this URL or changes nothing.
fn apply(url: &Url, change: &UrlChange) -> Option<Url> {
    let mut out = url.clone();
    match change {
        UrlChange::ToggleScheme => out.https = !out.https,
        UrlChange::Host => {
            if !change_first_alnum(&mut out.host) {
                return None;
            }
        }
        UrlChange::Port(port) => out.port = *port,
        UrlChange::AppendToPath(c) => match out.path.last_mut() {
            Some(last) => last.push(*c),
            None => out.path.push(c.to_string()),
        },
        UrlChange::PathChar(i) => {
            let n = out.path.len();
            if n == 0 || !change_first_alnum(&mut out.path[i % n]) {
                return None;
            }
        }
        UrlChange::AddQuery(k, v) => out.query.push((k.clone(), v.clone())),
        UrlChange::DropQuery(i) => {
            if out.query.is_empty() {
                return None;
            }
            let n = out.query.len();
            out.query.remove(i % n);
        }
        UrlChange::QueryValue(i) => {
            if out.query.is_empty() {
                return None;
            }
            let n = out.query.len();
            out.query[i % n].1.push('x');
        }
        UrlChange::SwapQuery => {
            if out.query.len() < 2 || out.query[0] == out.query[1] {
                return None;
            }
            out.query.swap(0, 1);
        }
    }
    (out.render() != url.render()).then_some(out)
}

/// The port no-ops, accepted by design: the received URL without its port, or with the
/// default port added, is the signed URL.
fn is_port_no_op(signed: &Url, received: &Url) -> bool {
    let (signed, received) = (signed.render(), received.render());
    remove_port(&received) == signed
        || (remove_port(&received) == received && add_default_port(&received) == signed)
}

/// One change to a body's decoded parameters.
#[derive(Debug, Clone)]
enum BodyChange {
    Add(String, String),
    Remove(usize),
    AppendToValue(usize, char),
    AppendToName(usize, char),
    /// Move the first character of a value to the end of its name: a boundary shift.
    ShiftBoundary(usize),
}

fn body_change() -> impl Strategy<Value = BodyChange> {
    prop_oneof![
        (name(), value()).prop_map(|(n, v)| BodyChange::Add(n, v)),
        any::<usize>().prop_map(BodyChange::Remove),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| BodyChange::AppendToValue(i, c)),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| BodyChange::AppendToName(i, c)),
        any::<usize>().prop_map(BodyChange::ShiftBoundary),
    ]
}

fn apply_body(pairs: &[(String, String)], change: &BodyChange) -> Option<Vec<(String, String)>> {
    let mut out = pairs.to_vec();
    let n = out.len();
    match change {
        BodyChange::Add(k, v) => out.push((k.clone(), v.clone())),
        BodyChange::Remove(i) if n > 0 => {
            out.remove(i % n);
        }
        BodyChange::AppendToValue(i, c) if n > 0 => out[i % n].1.push(*c),
        BodyChange::AppendToName(i, c) if n > 0 => out[i % n].0.push(*c),
        BodyChange::ShiftBoundary(i) if n > 0 => {
            let (name, value) = &mut out[i % n];
            let first = value.chars().next()?;
            value.remove(0);
            name.push(first);
        }
        _ => return None,
    }
    Some(out)
}

/// Changes a signature header in one place.
#[derive(Debug, Clone)]
enum SigChange {
    /// Replace the character at this position with another base64 character.
    Replace(usize, u8),
    Truncate,
    Append(u8),
    Lowercase,
}

fn sig_change() -> impl Strategy<Value = SigChange> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| SigChange::Replace(i, b)),
        Just(SigChange::Truncate),
        any::<u8>().prop_map(SigChange::Append),
        Just(SigChange::Lowercase),
    ]
}

fn apply_sig(sig: &str, change: &SigChange) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = sig.as_bytes().to_vec();
    match change {
        SigChange::Replace(i, b) => {
            // Only the MAC characters, not the `=` padding.
            let len = sig.trim_end_matches('=').len();
            let i = i % len;
            let mut c = ALPHABET[usize::from(*b) % 64];
            if c == bytes[i] {
                c = if c == b'A' { b'B' } else { b'A' };
            }
            bytes[i] = c;
        }
        SigChange::Truncate => {
            bytes.pop();
        }
        SigChange::Append(b) => bytes.push(*b),
        SigChange::Lowercase => bytes.make_ascii_lowercase(),
    }
    let out = String::from_utf8_lossy(&bytes).into_owned();
    (out != sig).then_some(out)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_url_change_is_refused_unless_a_port_no_op(
        url in url(),
        change in url_change(),
        pairs in params(),
        secret in secret(),
        alg in alg(),
    ) {
        let Some(changed) = apply(&url, &change) else {
            return Ok(());
        };
        let signed = url.render();
        let received = changed.render();
        let body = encode(&pairs);
        let sig = twilio_signature(&secret, alg.algorithm(), &signed, &body);
        let verdict = verify(&secret, alg, &received, body.as_bytes(), &sig);
        if is_port_no_op(&url, &changed) {
            prop_assert_eq!(verdict.map(|v| v.url_form), Ok(UrlForm::OtherPort), "{} signed, {} received", signed, received);
        } else {
            prop_assert_eq!(verdict, Err(VerifyError::SignatureMismatch), "{} signed, {} received", signed, received);
        }
    }

    #[test]
    fn any_body_change_is_refused_unless_it_signs_the_same(
        url in url(),
        pairs in params(),
        change in body_change(),
        secret in secret(),
        alg in alg(),
    ) {
        let Some(changed) = apply_body(&pairs, &change) else {
            return Ok(());
        };
        let url = url.render();
        let sig = twilio_signature(&secret, alg.algorithm(), &url, encode(&pairs));
        let body = encode(&changed);
        let verdict = verify(&secret, alg, &url, body.as_bytes(), &sig);
        if signs_the_same(&pairs, &changed) {
            // A named no-op: a repeat, an empty pair, a boundary shift, UTF-16 order.
            prop_assert!(verdict.is_ok(), "{:?} -> {:?}", pairs, changed);
        } else {
            prop_assert_eq!(verdict, Err(VerifyError::SignatureMismatch), "{:?} -> {:?}", pairs, changed);
        }
    }

    #[test]
    fn any_signature_change_is_refused(
        url in url(),
        pairs in params(),
        change in sig_change(),
        secret in secret(),
        alg in alg(),
    ) {
        let url = url.render();
        let sig = twilio_signature(&secret, alg.algorithm(), &url, encode(&pairs));
        let Some(changed) = apply_sig(&sig, &change) else {
            return Ok(());
        };
        let body = encode(&pairs);
        let verdict = verify(&secret, alg, &url, body.as_bytes(), &changed);
        prop_assert!(
            matches!(verdict, Err(VerifyError::SignatureMismatch | VerifyError::MalformedSignature)),
            "{:?} for {:?}", verdict, change
        );
    }

    #[test]
    fn any_secret_change_is_refused(
        url in url(),
        pairs in params(),
        secret in secret(),
        position in any::<usize>(),
        append in prop::option::of(prop::char::range('!', '~')),
        alg in alg(),
    ) {
        let url = url.render();
        let sig = twilio_signature(&secret, alg.algorithm(), &url, encode(&pairs));
        let changed = match append {
            Some(c) => format!("{secret}{c}"),
            None => {
                let mut changed = secret;
                let i = position % changed.len();
                let c = changed.as_bytes()[i] as char;
                changed.replace_range(i..=i, &other_char(c).to_string());
                changed
            }
        };
        let body = encode(&pairs);
        prop_assert_eq!(
            verify(&changed, alg, &url, body.as_bytes(), &sig),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn the_algorithm_cannot_be_swapped(url in url(), pairs in params(), secret in secret()) {
        // A SHA-256 signature without its settings header, or under a settings header naming
        // SHA-1, is malformed for SHA-1; and the other way round.
        let url = url.render();
        let body = encode(&pairs);
        let sha256 = twilio_signature(&secret, Algorithm::HmacSha256, &url, &body);
        prop_assert_eq!(
            verify(&secret, Alg::Sha1, &url, body.as_bytes(), &sha256),
            Err(VerifyError::MalformedSignature)
        );
        let sha1 = twilio_signature(&secret, Algorithm::HmacSha1, &url, &body);
        prop_assert_eq!(
            verify(&secret, Alg::Sha256, &url, body.as_bytes(), &sha1),
            Err(VerifyError::MalformedSignature)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The named no-ops, each accepted

proptest! {
    #![proptest_config(config())]

    #[test]
    fn body_re_encoding_is_a_no_op(pairs in params(), secret in secret(), alg in alg(), url in url()) {
        let url = url.render();
        let sig = twilio_signature(&secret, alg.algorithm(), &url, encode(&pairs));
        let plus = encode(&pairs);
        // %20 for spaces, lower-case hex, every byte of the names escaped, and empty pieces.
        let percent20 = plus.replace('+', "%20");
        let lower_hex: String = {
            let mut out = String::new();
            let mut chars = plus.chars().peekable();
            while let Some(c) = chars.next() {
                out.push(c);
                if c == '%' {
                    for _ in 0..2 {
                        if let Some(h) = chars.next() {
                            out.push(h.to_ascii_lowercase());
                        }
                    }
                }
            }
            out
        };
        let escaped_all: String = pairs
            .iter()
            .map(|(n, v)| {
                let esc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
                format!("{}={}", esc(n), esc(v))
            })
            .collect::<Vec<_>>()
            .join("&");
        let with_empty_pieces = format!("&&{plus}&");
        for body in [plus, percent20, lower_hex, escaped_all, with_empty_pieces] {
            prop_assert!(verify(&secret, alg, &url, body.as_bytes(), &sig).is_ok(), "{:?}", body);
        }
    }

    #[test]
    fn order_repeats_and_empty_pairs_are_no_ops(
        pairs in params(),
        secret in secret(),
        alg in alg(),
        url in url(),
    ) {
        let url = url.render();
        let sig = twilio_signature(&secret, alg.algorithm(), &url, encode(&pairs));
        let mut reversed = pairs.clone();
        reversed.reverse();
        let mut repeated = pairs.clone();
        repeated.extend(pairs.iter().cloned());
        let mut empty_pair = pairs.clone();
        empty_pair.push((String::new(), String::new()));
        for changed in [reversed, repeated, empty_pair] {
            let body = encode(&changed);
            prop_assert!(verify(&secret, alg, &url, body.as_bytes(), &sig).is_ok(), "{:?}", body);
        }
    }

    #[test]
    fn url_no_ops_by_design(url in url(), secret in secret(), alg in alg(), port in 1024u16..=65535) {
        let signed = url.render();
        let pairs = vec![("Body".to_owned(), "hi".to_owned())];
        let body = encode(&pairs);
        let sig = twilio_signature(&secret, alg.algorithm(), &signed, &body);
        let accepted = |received: &str, exact: bool| {
            let secret = Secret::new(secret.as_str()).unwrap();
            let mut request = WebhookRequest::new(&Method::POST, received, body.as_bytes())
                .content_type(FORM)
                .signature(sig.as_bytes());
            if let Some(settings) = alg.settings() {
                request = request.signature_settings(settings);
            }
            if exact {
                request = request.exact_urls_only(true);
            }
            request.verify([&secret]).is_ok()
        };
        // Ports: any port added to a URL signed without one; the default port toggled.
        if url.port.is_none() {
            let with_port = Url { port: Some(port), ..url.clone() };
            prop_assert!(accepted(&with_port.render(), true));
            let with_default = Url { port: Some(url.default_port()), ..url.clone() };
            prop_assert!(accepted(&with_default.render(), true));
        } else if url.port == Some(url.default_port()) {
            let without = Url { port: None, ..url.clone() };
            prop_assert!(accepted(&without.render(), true));
        }
        // The SDKs' re-serialisations: lenient mode only.
        let upper_scheme = signed.replacen("http", "HTTP", 1);
        let empty_query = if url.query.is_empty() { format!("{signed}?") } else { signed.clone() };
        let upper_host = signed.replacen(&url.host, &url.host.to_ascii_uppercase(), 1);
        for received in [upper_scheme, empty_query, upper_host] {
            if received != signed {
                prop_assert!(accepted(&received, false), "{}", received);
                prop_assert!(!accepted(&received, true), "{}", received);
            }
        }
        // A spelling that changes the route is refused in both modes (path binding).
        for dots in ["x/../", "./", "x/%2e%2E/", "x\\..\\"] {
            let path_start = signed[8..].find('/').map_or(signed.len(), |i| i + 8);
            let received = format!("{}/{dots}{}", &signed[..path_start], &signed[path_start + 1..]);
            prop_assert!(!accepted(&received, false), "{}", received);
            prop_assert!(!accepted(&received, true), "{}", received);
        }
    }
}

#[test]
fn a_secret_padded_with_zero_bytes_is_the_same_hmac_key() {
    // HMAC pads keys shorter than the block (64 bytes) with zeros, so these are one key.
    // Twilio's auth tokens are 32 printable characters, so this never matters in practice.
    let sig = twilio_signature("token", Algorithm::HmacSha1, "https://example.com/sms", "");
    assert!(verify("token\0", Alg::Sha1, "https://example.com/sms", b"", &sig).is_ok());
    assert!(verify("token\0\0", Alg::Sha1, "https://example.com/sms", b"", &sig).is_ok());
    assert_eq!(
        verify("token0", Alg::Sha1, "https://example.com/sms", b"", &sig),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn a_boundary_shift_is_a_no_op() {
    // `name ‖ value` with no separator: `ab=c` and `a=bc` both sign as `abc`.
    let sig = twilio_signature(
        "token",
        Algorithm::HmacSha1,
        "https://example.com/sms",
        "ab=c",
    );
    assert!(verify("token", Alg::Sha1, "https://example.com/sms", b"a=bc", &sig).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Parsers never panic

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

proptest! {
    #![proptest_config(Config { cases: config().cases * 5, ..config() })]

    #[test]
    fn form_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let params = Params::parse(&bytes);
        prop_assert_eq!(params.iter().count(), params.len());
        let _ = format!("{params:?}");
    }

    #[test]
    fn settings_parser_never_panics(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "[ ,=a-zA-Z0-9_\u{17f}]{0,40}".prop_map(String::into_bytes),
        ]
    ) {
        if let Ok(settings) = SignatureSettings::parse(&bytes) {
            let _ = (settings.key_id(), settings.algorithm());
        }
    }

    #[test]
    fn url_helpers_never_panic(
        url in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| lossy(&b)),
            "[a-zA-Z]{0,5}://[\\[\\]@:a-z0-9.]{0,20}[/?#]{0,2}[\\PC]{0,10}",
        ]
    ) {
        let removed = remove_port(&url);
        let added = add_default_port(&url);
        prop_assert_eq!(remove_port(&removed), removed.clone());
        prop_assert_eq!(add_default_port(&added), added.clone());
        // Whole verification computes the lenient candidates for it.
        let secret = Secret::new("token").unwrap();
        let request = WebhookRequest::new(&Method::POST, &url, b"a=1")
            .content_type(FORM)
            .signature(b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        prop_assert_eq!(request.verify([&secret]), Err(VerifyError::SignatureMismatch));
    }

    #[test]
    fn public_url_reconstruction_never_panics(
        target in prop_oneof![
            "/[\\PC]{0,12}",
            "https?://[a-z.:@\\[\\]0-9]{0,12}/[a-z?=&]{0,8}",
            "[a-z.]{1,8}:[0-9]{1,5}",
        ],
        headers in prop::collection::vec(
            (
                prop_oneof![
                    Just("host"),
                    Just("forwarded"),
                    Just("x-forwarded-proto"),
                    Just("x-forwarded-host"),
                    Just("x-forwarded-port"),
                    Just("x-forwarded-prefix"),
                    Just("x-forwarded-for"),
                ],
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..24),
                    "[\"\\\\;,=/:\\[\\]a-z0-9. ]{0,24}".prop_map(String::into_bytes),
                ],
            ),
            0..6,
        ),
        peer in prop_oneof![
            Just(None),
            Just(Some("10.0.0.5")),
            Just(Some("203.0.113.9")),
            Just(Some("::ffff:10.0.0.7")),
        ],
    ) {
        let mut builder = Request::post(target.as_str());
        for (name, value) in &headers {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                builder = builder.header(HeaderName::from_static(name), value);
            }
        }
        let Ok(request) = builder.body(()) else {
            return Ok(());
        };
        let (parts, ()) = request.into_parts();
        let peer: Option<IpAddr> = peer.map(|p| p.parse().unwrap());
        let trusting = PublicUrl::trust_forwarded(every_field_from_10_8());
        let forwarded = reconstruct(&trusting, &parts, peer);
        let own = reconstruct(&PublicUrl::request_host(Scheme::Https), &parts, peer);
        if peer != Some("10.0.0.5".parse().unwrap()) && peer != Some("::ffff:10.0.0.7".parse().unwrap()) {
            // From anyone but the proxy, forwarding headers change nothing.
            prop_assert_eq!(forwarded, own);
        }
    }
}
