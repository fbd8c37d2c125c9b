//! The URL strings a signature may have been computed over.
//!
//! Pure: no I/O, no tower types.
//!
//! Twilio signs the URL it requested, but "signature generation on the back end is
//! inconsistent" about ports, so every official library tries more than one spelling. This
//! module produces, in order:
//!
//! 1. **Exact**: the URL as received, and the same URL with its explicit port removed or, when it
//!    has none, with the scheme's default port added (`:443` for `https`, `:80` otherwise). Port
//!    handling works on the authority only: `user:pass@` and `[IPv6]` literals stay intact.
//! 2. **Lenient**, tried only when no exact form matched: what the official libraries compare
//!    against after re-serialising the URL —
//!    - twilio-python's `urlparse().geturl()`: lower-case scheme, an empty trailing `?` or `#`
//!      dropped (± port);
//!    - twilio-node 6.3.1's WHATWG form (`new URL(url).toString()`: lower-case scheme and host,
//!      dot segments resolved, non-ASCII and `'` in the query percent-encoded, default port
//!      dropped) ± port, and that form with its query re-serialised through Node's legacy
//!      `querystring` module (`%27` becomes `'`, `+` becomes `%20`). The WHATWG form is this
//!      crate's own serialiser, for `http` and `https` URLs whose host needs no international
//!      domain name processing; other URLs get no WHATWG form (see `whatwg.rs`).
//!
//! A lenient form is tried only when it cannot change what the application acts on (see
//! [`binds_same_request`]): it must name the same host (ASCII case aside), the same path
//! segments and the same query pairs as the received URL, once percent-escapes are decoded. So
//! a signature made for `/twilio/sms` never verifies at `/twilio/x/../sms`,
//! `/twilio/recordings/%2e%2e/sms` or `/twilio\sms` (the WHATWG form resolves those to
//! `/twilio/sms`, but the router does not), and never for a query with pairs that Node's
//! `querystring` dropped after its 1000th key.
//!
//! Within those limits, accepting the lenient forms keeps the verdict equal to "either
//! official library accepts" (see the vector suite, which lists the vectors this rule
//! deliberately rejects). They never weaken the secret: each candidate still needs an HMAC
//! made with it.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use super::{
    parts::{join, path_and_query, split},
    whatwg::whatwg_form,
};

/// The URL with its explicit port removed; unchanged when it has none.
///
/// ```
/// use tower_twilio::__private::remove_port;
///
/// assert_eq!(remove_port("https://example.com:8443/sms"), "https://example.com/sms");
/// assert_eq!(remove_port("https://[2001:db8::1]:8443/sms"), "https://[2001:db8::1]/sms");
/// assert_eq!(remove_port("https://user:pass@example.com:8443/sms"), "https://user:pass@example.com/sms");
/// ```
pub fn remove_port(url: &str) -> Cow<'_, str> {
    match split(url) {
        Some(parts) if !parts.port.is_empty() => Cow::Owned(join(&[
            parts.scheme,
            "://",
            parts.userinfo,
            parts.host,
            parts.rest,
        ])),
        _ => Cow::Borrowed(url),
    }
}

/// The URL with the scheme's default port added (`:443` for `https`, `:80` for anything
/// else); unchanged when it already has a port.
///
/// ```
/// use tower_twilio::__private::add_default_port;
///
/// assert_eq!(add_default_port("https://example.com/sms"), "https://example.com:443/sms");
/// assert_eq!(add_default_port("http://[::1]/sms"), "http://[::1]:80/sms");
/// assert_eq!(add_default_port("https://example.com:8443/sms"), "https://example.com:8443/sms");
/// ```
pub fn add_default_port(url: &str) -> Cow<'_, str> {
    match split(url) {
        Some(parts) if parts.port.is_empty() => {
            let port = if parts.scheme.eq_ignore_ascii_case("https") {
                ":443"
            } else {
                ":80"
            };
            Cow::Owned(join(&[
                parts.scheme,
                "://",
                parts.userinfo,
                parts.host,
                port,
                parts.rest,
            ]))
        }
        _ => Cow::Borrowed(url),
    }
}

/// The other port spelling of `url`: without its port if it has one, with the default port if
/// it has none. `None` when `url` has no `scheme://` prefix.
pub(crate) fn other_port_form(url: &str) -> Option<String> {
    let parts = split(url)?;
    Some(if parts.port.is_empty() {
        add_default_port(url).into_owned()
    } else {
        remove_port(url).into_owned()
    })
}

/// Lenient candidates are not computed for URLs longer than this: a cap on the work a forged
/// request can cause. Twilio webhook URLs are far shorter.
const LENIENT_MAX_URL_LEN: usize = 8 * 1024;

/// The lenient candidates (see the module docs), without any of the exact ones and without
/// repeats, in the order they should be tried. `exact_other` is [`other_port_form`]`(url)`,
/// which the caller has already computed.
pub(crate) fn lenient_candidates(url: &str, exact_other: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if url.len() > LENIENT_MAX_URL_LEN {
        return out;
    }
    let mut push = |form: Option<String>| {
        if let Some(form) = form
            && form != url
            && exact_other != Some(form.as_str())
            && !out.contains(&form)
            && binds_same_request(url, &form)
        {
            out.push(form);
        }
    };
    if let Some(python) = python_geturl(url) {
        let other = other_port_form(&python);
        push(Some(python));
        push(other);
    }
    if let Ok(whatwg) = whatwg_form(url) {
        // The query re-serialisation and the port change touch disjoint parts of the URL,
        // so they commute: the port form of the re-serialised query is computed directly.
        if whatwg == url {
            // Its port forms are the exact ones; only the legacy re-serialisations are new.
            let legacy = legacy_querystring(url);
            let legacy_other = legacy.as_deref().and_then(other_port_form);
            push(legacy);
            push(legacy_other);
        } else {
            let other = other_port_form(&whatwg);
            let legacy = legacy_querystring(&whatwg);
            let legacy_other = legacy.as_deref().and_then(other_port_form);
            push(Some(whatwg));
            push(other);
            push(legacy);
            push(legacy_other);
        }
    }
    out
}

/// Whether the lenient form `candidate` of the received `url` describes the same request to
/// the application: the same host (ASCII case aside), the same path segments and the same
/// query pairs, compared after decoding percent-escapes. Ports are not compared (they are the
/// one spelling difference every official library allows).
///
/// Refused, so that a lenient form can never move a signature to another route or drop what
/// it covered:
///
/// - a received path with a dot segment (`.`, `..`, `%2e`, `.%2E`, …) or a backslash: the
///   WHATWG form resolves them, a router does not;
/// - a different number of path segments, or a segment that decodes differently;
/// - query pairs that differ in number, or whose values for some name differ in order or
///   content once decoded (the legacy `querystring` form regroups repeated names, which no
///   form parser can tell apart; it also stops after 1000 pairs, which this refuses).
///
/// ```
/// use tower_twilio::__private::binds_same_request;
///
/// assert!(binds_same_request("https://Example.COM/sms?x='", "https://example.com/sms?x=%27"));
/// assert!(!binds_same_request("https://example.com/x/../sms", "https://example.com/sms"));
/// assert!(!binds_same_request("https://example.com/%2e%2E/sms", "https://example.com/sms"));
/// assert!(!binds_same_request("https://example.com/a\\sms", "https://example.com/a/sms"));
/// assert!(!binds_same_request("https://example.com/v?a=1&b=2", "https://example.com/v?a=1"));
/// ```
pub fn binds_same_request(url: &str, candidate: &str) -> bool {
    let (Some(received), Some(other)) = (split(url), split(candidate)) else {
        return false;
    };
    if !received.host.eq_ignore_ascii_case(other.host) {
        return false;
    }
    let (path, query) = path_and_query(received.rest);
    let (other_path, other_query) = path_and_query(other.rest);
    if path.contains('\\') || path.split('/').any(is_dot_segment) {
        return false;
    }
    let mut segments = path.split('/');
    let mut other_segments = other_path.split('/');
    loop {
        match (segments.next(), other_segments.next()) {
            (None, None) => break,
            (Some(a), Some(b))
                if percent_encoding::percent_decode_str(a)
                    .eq(percent_encoding::percent_decode_str(b)) => {}
            _ => return false,
        }
    }
    same_query_pairs(query, other_query)
}

/// `.` or `..`, spelled with any mix of `.` and `%2e`/`%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut dots = 0;
    let mut rest = segment.as_bytes();
    while !rest.is_empty() {
        match rest {
            [b'.', tail @ ..] => rest = tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => rest = tail,
            _ => return false,
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Whether two query strings hold the same decoded pairs, with each name's values in the same
/// order (pairs of different names may be interleaved differently).
fn same_query_pairs(query: &str, other: &str) -> bool {
    fn pairs(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
        let mut pairs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
        // Stable: each name's values keep their order.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
    }
    query == other || pairs(query) == pairs(other)
}

/// twilio-python's re-serialisation (`urlparse(url).geturl()`) for an absolute URL: the scheme
/// lower-cased, an empty fragment's `#` and an empty query's `?` dropped. `None` when that
/// changes nothing.
fn python_geturl(url: &str) -> Option<String> {
    let parts = split(url)?;
    let mut changed = parts.scheme.bytes().any(|b| b.is_ascii_uppercase());
    let mut rest = parts.rest;
    let mut fragment = "";
    if let Some(hash) = rest.find('#') {
        fragment = &rest[hash..];
        rest = &rest[..hash];
        if fragment == "#" {
            fragment = "";
            changed = true;
        }
    }
    if let Some(query) = rest.strip_suffix('?')
        && !query.contains('?')
    {
        rest = query;
        changed = true;
    }
    // Unchanged, the parts put back together are `url` itself: skip building it.
    if !changed {
        return None;
    }
    let scheme = parts.scheme.to_ascii_lowercase();
    let normalised = join(&[&scheme, "://", parts.authority, rest, fragment]);
    (normalised != url).then_some(normalised)
}

/// The characters Node's `querystring.escape` leaves alone: `A–Z a–z 0–9 - _ . ! ~ * ' ( )`.
const QUERYSTRING_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Node's `querystring.parse` stops after this many pairs by default.
const QUERYSTRING_MAX_KEYS: usize = 1000;

/// `url` with everything after its first `?` passed through Node's legacy
/// `querystring.stringify(querystring.parse(…))`, as twilio-node 6.3.1's last fallback does.
/// `None` when there is no query or it comes out unchanged.
///
/// Written by hand because no crate reproduces that module's output: it decodes `+` and `%XX`
/// like a form, groups repeated names at their first position, orders array-index-like names
/// (`"0"`, `"7"`, `"42"`) numerically ahead of the rest (JavaScript object key order), and
/// re-encodes with its own unreserved set and `%20` for spaces.
fn legacy_querystring(url: &str) -> Option<String> {
    let query_start = url.find('?')?;
    let query = &url[query_start + 1..];
    if query.is_empty() {
        return None;
    }
    let mut groups: Vec<(Cow<'_, str>, Vec<Cow<'_, str>>)> = Vec::new();
    let mut index: std::collections::HashMap<Cow<'_, str>, usize> =
        std::collections::HashMap::new();
    let mut pairs = form_urlencoded::parse(query.as_bytes());
    for (name, value) in pairs.by_ref().take(QUERYSTRING_MAX_KEYS) {
        match index.get(&name) {
            Some(&i) => groups[i].1.push(value),
            None => {
                index.insert(name.clone(), groups.len());
                groups.push((name, vec![value]));
            }
        }
    }
    // Node stops here and drops the rest: a form that loses signed-for pairs is no candidate.
    if pairs.next().is_some() {
        return None;
    }
    // Stable sort: index-like names first, numerically; the others keep insertion order.
    groups.sort_by_key(|(name, _)| array_index(name).map_or((1, 0), |index| (0, index)));

    let mut out = String::with_capacity(url.len() + 16);
    out.push_str(&url[..=query_start]);
    let mut first = true;
    for (name, values) in &groups {
        for value in values {
            if !first {
                out.push('&');
            }
            first = false;
            out.extend(percent_encoding::utf8_percent_encode(
                name,
                QUERYSTRING_UNRESERVED,
            ));
            out.push('=');
            out.extend(percent_encoding::utf8_percent_encode(
                value,
                QUERYSTRING_UNRESERVED,
            ));
        }
    }
    (out != url).then_some(out)
}

/// The numeric value of a JavaScript array-index property name (`"0"` or no leading zero, below
/// 2³² − 1), which objects enumerate before every other key.
fn array_index(name: &str) -> Option<u64> {
    if name.is_empty() || (name.len() > 1 && name.starts_with('0')) {
        return None;
    }
    if !name.bytes().all(|b| b.is_ascii_digit()) || name.len() > 10 {
        return None;
    }
    let value: u64 = name.parse().ok()?;
    (value < u64::from(u32::MAX)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Port handling is authority-aware (TWILIO_SPEC.md §3): rows are url -> other port form.
    #[test]
    fn other_port_form_table() {
        let rows = [
            (
                "https://example.com/sms",
                Some("https://example.com:443/sms"),
            ),
            ("http://example.com/sms", Some("http://example.com:80/sms")),
            (
                "HTTPS://example.com/sms",
                Some("HTTPS://example.com:443/sms"),
            ),
            (
                "https://example.com:443/sms",
                Some("https://example.com/sms"),
            ),
            (
                "https://example.com:8443/sms?a=b:c",
                Some("https://example.com/sms?a=b:c"),
            ),
            // no path at all
            ("https://example.com", Some("https://example.com:443")),
            (
                "https://example.com?x=1",
                Some("https://example.com:443?x=1"),
            ),
            // userinfo stays, including its colon
            (
                "https://user:pass@example.com:8443/sms",
                Some("https://user:pass@example.com/sms"),
            ),
            (
                "https://user:pass@example.com/sms",
                Some("https://user:pass@example.com:443/sms"),
            ),
            // IPv6 literals keep their brackets and inner colons
            (
                "https://[2001:db8::1]:8443/sms",
                Some("https://[2001:db8::1]/sms"),
            ),
            (
                "https://[2001:db8::1]/sms",
                Some("https://[2001:db8::1]:443/sms"),
            ),
            // an empty port counts as a port
            ("https://example.com:/sms", Some("https://example.com/sms")),
            // an @ or : in the path or query is not part of the authority
            (
                "https://example.com/a@b:c",
                Some("https://example.com:443/a@b:c"),
            ),
            // no scheme://, no port forms
            ("example.com/sms", None),
            ("mailto:x@example.com", None),
            ("1http://example.com/", None),
        ];
        for (url, expected) in rows {
            assert_eq!(other_port_form(url).as_deref(), expected, "{url}");
        }
    }

    // Rows are url -> re-serialised form, `None` when it changes nothing. The legacy rows were
    // checked against Node 20: `querystring.stringify(querystring.parse(q))`.
    #[test]
    fn reserialisation_tables() {
        let python: &[(&str, Option<&str>)] = &[
            ("https://example.com/sms?", Some("https://example.com/sms")),
            ("https://example.com/sms#", Some("https://example.com/sms")),
            ("https://example.com/sms?#", Some("https://example.com/sms")),
            ("HTTPS://example.com/sms", Some("https://example.com/sms")),
            ("https://example.com/sms?a=1", None),
            ("https://example.com/sms?a=1#f", None),
            ("https://Example.com/sms", None),
        ];
        let legacy: &[(&str, Option<&str>)] = &[
            (
                "https://e.com/v?ToState=Forli%27",
                Some("https://e.com/v?ToState=Forli'"),
            ),
            ("https://e.com/v?a=b+c", Some("https://e.com/v?a=b%20c")),
            ("https://e.com/v?a=b%20c", None),
            (
                "https://e.com/v?a=1&a=2&b",
                Some("https://e.com/v?a=1&a=2&b="),
            ),
            (
                "https://e.com/v?a=1&b=2&a=3",
                Some("https://e.com/v?a=1&a=3&b=2"),
            ),
            (
                "https://e.com/v?10=x&2=y&a=z",
                Some("https://e.com/v?2=y&10=x&a=z"),
            ),
            (
                "https://e.com/v?a=%ZZ&b=%E9",
                Some("https://e.com/v?a=%25ZZ&b=%EF%BF%BD"),
            ),
            ("https://e.com/v?a&&b", Some("https://e.com/v?a=&b=")),
            ("https://e.com/v?x=%F0%9F%98%80", None),
            ("https://e.com/v?", None),
            ("https://e.com/v", None),
        ];
        let forms: [(&str, fn(&str) -> Option<String>, _); 2] = [
            ("python", python_geturl, python),
            ("legacy querystring", legacy_querystring, legacy),
        ];
        for (name, form, rows) in forms {
            for &(url, expected) in rows {
                assert_eq!(form(url).as_deref(), expected, "{name}: {url}");
            }
        }
    }

    // Path binding: rows are (received, lenient form), grouped by why the form may, or may
    // not, stand for the received URL. Only host case, ports and re-encodings that decode to
    // the same bytes may differ.
    #[test]
    fn binds_same_request_table() {
        type Group = (&'static str, bool, &'static [(&'static str, &'static str)]);
        let groups: &[Group] = &[
            (
                "host case, escapes and ports",
                true,
                &[
                    ("https://Example.COM/sms", "https://example.com/sms"),
                    ("https://e.com/sms?x='", "https://e.com/sms?x=%27"),
                    ("https://e.com/sms?a=b+c", "https://e.com/sms?a=b%20c"),
                    ("https://e.com/caf\u{e9}", "https://e.com/caf%C3%A9"),
                    ("https://e.com:443/sms", "https://e.com/sms"),
                    ("https://e.com/sms?", "https://e.com/sms"),
                ],
            ),
            (
                "repeated names regrouped: every name keeps its values in order",
                true,
                &[("https://e.com/v?a=1&b=2&a=3", "https://e.com/v?a=1&a=3&b=2")],
            ),
            (
                "a name's values reordered",
                false,
                &[("https://e.com/v?a=1&b=2&a=3", "https://e.com/v?a=3&a=1&b=2")],
            ),
            (
                "dot segments, raw or escaped, any case, anywhere",
                false,
                &[
                    ("https://e.com/x/../sms", "https://e.com/sms"),
                    ("https://e.com/./sms", "https://e.com/sms"),
                    ("https://e.com/r/%2e%2e/sms", "https://e.com/sms"),
                    ("https://e.com/r/%2E%2e/sms", "https://e.com/sms"),
                    ("https://e.com/r/.%2E/sms", "https://e.com/sms"),
                    ("https://e.com/r/%2e/sms", "https://e.com/r/sms"),
                    ("https://e.com/sms/..", "https://e.com/"),
                ],
            ),
            (
                "a dot segment, even when the form happens to keep it",
                false,
                &[("https://e.com/a/../b", "https://e.com/a/../b?")],
            ),
            (
                "backslashes are not separators",
                false,
                &[
                    ("https://e.com/twilio\\sms", "https://e.com/twilio/sms"),
                    ("https://e.com/a\\b", "https://e.com/a%5Cb"),
                ],
            ),
            (
                "segments that decode differently, or a different number of them",
                false,
                &[
                    ("https://e.com/a%2Fb", "https://e.com/a/b"),
                    ("https://e.com/sms", "https://e.com/sms/"),
                    ("https://e.com/sms", "https://e.com/SMS"),
                ],
            ),
            (
                "another host",
                false,
                &[("https://e.com/sms", "https://f.com/sms")],
            ),
            (
                "query pairs dropped, added or changed",
                false,
                &[
                    ("https://e.com/v?a=1&b=2", "https://e.com/v?a=1"),
                    ("https://e.com/v?a=1", "https://e.com/v?a=1&b=2"),
                    ("https://e.com/v?a=1", "https://e.com/v?a=2"),
                ],
            ),
            ("not a URL", false, &[("e.com/sms", "https://e.com/sms")]),
        ];
        for &(why, expected, rows) in groups {
            for &(url, candidate) in rows {
                assert_eq!(
                    binds_same_request(url, candidate),
                    expected,
                    "{why}: {url} -> {candidate}"
                );
            }
        }
    }

    #[test]
    fn dot_segments_in_every_spelling() {
        for dots in [".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "%2e%2E"] {
            assert!(is_dot_segment(dots), "{dots}");
        }
        for other in [
            "",
            "...",
            "%2e%2e%2e",
            "a.",
            ".a",
            "%2",
            "%2f",
            "%252e",
            "%2e%",
        ] {
            assert!(!is_dot_segment(other), "{other}");
        }
    }

    #[test]
    fn a_query_past_a_thousand_pairs_has_no_legacy_form() {
        let mut url = String::from("https://e.com/v?x=%27");
        for i in 1..1000 {
            url.push_str(&format!("&p{i}=v"));
        }
        assert!(legacy_querystring(&url).is_some());
        url.push_str("&Tenant=evil");
        assert_eq!(legacy_querystring(&url), None);
        // Nor does any lenient form drop the 1001st pair.
        for candidate in lenient_candidates(&url, other_port_form(&url).as_deref()) {
            assert!(candidate.ends_with("&Tenant=evil"), "{candidate}");
        }
    }

    #[test]
    fn lenient_candidates_never_resolve_dots_or_backslashes() {
        for url in [
            "https://Example.COM/a/../sms?x='",
            "https://example.com/twilio/recordings/%2e%2e/sms",
            "https://example.com/twilio\\sms",
            "https://example.com/twilio/x\\..\\sms",
        ] {
            assert_eq!(
                lenient_candidates(url, other_port_form(url).as_deref()),
                Vec::<String>::new(),
                "{url}"
            );
        }
    }

    #[test]
    fn array_index_table() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("42"), Some(42));
        assert_eq!(array_index("4294967294"), Some(4_294_967_294));
        for no in ["", "01", "-1", "1.5", "4294967295", "99999999999", "a1"] {
            assert_eq!(array_index(no), None, "{no}");
        }
    }

    #[test]
    fn lenient_candidates_exclude_the_exact_ones() {
        let url = "https://Example.COM/sms?x='";
        let lenient = lenient_candidates(url, other_port_form(url).as_deref());
        assert!(
            lenient.contains(&"https://example.com/sms?x=%27".to_owned()),
            "{lenient:?}"
        );
        assert!(
            lenient.contains(&"https://example.com:443/sms?x=%27".to_owned()),
            "{lenient:?}"
        );
        assert!(
            lenient.contains(&"https://example.com/sms?x='".to_owned()),
            "{lenient:?}"
        );
        assert!(!lenient.iter().any(|c| c == url));
        let mut deduped = lenient.clone();
        deduped.dedup();
        assert_eq!(deduped, lenient);
        // A URL already in normal form has nothing lenient to add.
        assert!(
            lenient_candidates(
                "https://example.com/sms",
                Some("https://example.com:443/sms")
            )
            .is_empty()
        );
    }
}
