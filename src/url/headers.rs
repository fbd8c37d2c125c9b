//! The one reader for each kind of header the URL is rebuilt or diagnosed from, shared by
//! [`PublicUrl`](super::public::PublicUrl) and the [mismatch doctor](crate::doctor).
//!
//! - a header that may appear once (`Host`, `X-Original-Host`, `X-Original-URI`): [`single`],
//!   which looks at two values at most;
//! - a comma-separated list (`X-Forwarded-Proto`, `-Host`, `-Port`, `-Prefix`, `-For`):
//!   [`list_values`] and [`last_value`];
//! - RFC 7239 `Forwarded`: [`forwarded_elements`], then [`ForwardedElement::parse`] for the
//!   elements the caller needs;
//! - an address in `Forwarded: for=` or `X-Forwarded-For`: [`parse_node`].
//!
//! Lists are read from their end, where the nearest proxy writes, and at most
//! [`MAX_FORWARDED_VALUES`] values of each header are used: a list value is split off the end
//! of its line without reading the rest of it, and lines before the ones needed are not read.
//! A `Forwarded` line is scanned once, whole, for its element boundaries (a comma inside a
//! quoted string does not count), so its cost grows with the length of the lines read, never
//! with anything more.

use std::{borrow::Cow, net::IpAddr};

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{proxy_network::canonical_ip, rebuilt::UrlError};

/// The `X-Forwarded-*` list headers, named once: a lookup by `&str` parses and checks the
/// name on every call.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(crate) const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The most values of one forwarding header that are read, from its end.
pub(crate) const MAX_FORWARDED_VALUES: usize = 16;

/// A header that may appear once appeared more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repeated;

/// The value of a header that may appear once: `Ok(None)` when it is absent. Looks at two
/// values at most.
pub(crate) fn single<K: header::AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Result<Option<&HeaderValue>, Repeated> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Repeated);
    }
    Ok(first)
}

/// The comma-separated values of a list header, trimmed, from the last line's last value
/// backwards, at most [`MAX_FORWARDED_VALUES`]; a value that is not visible ASCII (tabs aside)
/// is an error. Nothing before them is looked at.
pub(crate) fn list_values<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = Result<&'h str, UrlError>> + 'h {
    list_values_and_one_more(headers, name).take(MAX_FORWARDED_VALUES)
}

/// [`list_values`], and one value more when there is one: for a caller that must know
/// whether the values it read were all there are.
pub(crate) fn list_values_and_one_more<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = Result<&'h str, UrlError>> + 'h {
    headers
        .get_all(name)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .take(MAX_FORWARDED_VALUES + 1)
        .map(|value| {
            std::str::from_utf8(value)
                .ok()
                .filter(|text| {
                    text.bytes()
                        .all(|b| b == b'\t' || (b' '..0x7f).contains(&b))
                })
                .map(str::trim)
                .ok_or(UrlError::InvalidForwarded)
        })
}

/// The last value of a list header, set or appended by the nearest proxy (see
/// [`list_values`]).
pub(crate) fn last_value<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, UrlError> {
    list_values(headers, name).next().transpose()
}

/// The elements of the RFC 7239 `Forwarded` headers, from the last (the nearest proxy's)
/// backwards, at most [`MAX_FORWARDED_VALUES`], unparsed (a line that is not visible ASCII is
/// an error); and whether there are more. Each line read is scanned once for its element
/// boundaries (commas inside quoted strings do not count), without allocating: the caller
/// parses only the elements it needs ([`ForwardedElement::parse`]).
pub(crate) fn forwarded_elements(headers: &HeaderMap) -> (Vec<Result<&str, UrlError>>, bool) {
    const MAX: usize = MAX_FORWARDED_VALUES;
    let mut out = Vec::with_capacity(MAX);
    for line in headers.get_all(header::FORWARDED).iter().rev() {
        if out.len() == MAX {
            return (out, true);
        }
        let Ok(line) = line.to_str() else {
            out.push(Err(UrlError::InvalidForwarded));
            continue;
        };
        // The last `MAX` elements of the line, in a ring.
        let mut ring = [""; MAX];
        let mut count = 0;
        for element in split_unquoted(line, ',') {
            ring[count % MAX] = element;
            count += 1;
        }
        let wanted = MAX - out.len();
        for back in 0..count.min(wanted) {
            out.push(Ok(ring[(count - 1 - back) % MAX]));
        }
        if count > wanted {
            return (out, true);
        }
    }
    (out, false)
}

/// One element of an RFC 7239 `Forwarded` header: the parameters this crate reads, borrowed
/// from the header unless a quoted string had escapes to remove.
#[derive(Debug, Default)]
pub(crate) struct ForwardedElement<'h> {
    /// `for=`, when it is an address.
    pub(crate) for_ip: Option<IpAddr>,
    /// `proto=`, unquoted.
    pub(crate) proto: Option<Cow<'h, str>>,
    /// `host=`, unquoted.
    pub(crate) host: Option<Cow<'h, str>>,
}

impl<'h> ForwardedElement<'h> {
    /// Parses one element (`for=…;proto=…;host=…`); a pair without `=` or a quoted string left
    /// open is an error, an unknown parameter is skipped. Nothing is allocated unless a quoted
    /// value holds an escape.
    pub(crate) fn parse(element: &'h str) -> Result<Self, UrlError> {
        let mut out = Self::default();
        for pair in split_unquoted(element, ';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=').ok_or(UrlError::InvalidForwarded)?;
            let value = unquote(value.trim()).ok_or(UrlError::InvalidForwarded)?;
            let name = name.trim();
            if name.eq_ignore_ascii_case("for") {
                out.for_ip = parse_node(&value);
            } else if name.eq_ignore_ascii_case("proto") {
                out.proto = Some(value);
            } else if name.eq_ignore_ascii_case("host") {
                out.host = Some(value);
            }
        }
        Ok(out)
    }
}

/// Splits on `separator` outside double-quoted strings.
fn split_unquoted(value: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut in_quotes = false;
    let mut escaped = false;
    value.split(move |c: char| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == separator && !in_quotes => return true,
            _ => {}
        }
        false
    })
}

/// A token as it is, or a quoted string without its quotes and escapes (copied only when it
/// has escapes); `None` for a quoted string left open.
fn unquote(value: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(Cow::Borrowed(value));
    };
    let inner = inner.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(Cow::Owned(out))
}

/// An RFC 7239 node or an `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5`, `[::1]`, `[::1]:5`,
/// `::1`. Obfuscated identifiers and `unknown` give `None`.
pub(crate) fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Some(rest) = node.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end].parse::<IpAddr>().ok().map(canonical_ip);
    }
    let (host, _port) = node.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_single_header_is_absent_present_or_repeated() {
        let map = headers(&[
            ("host", "a"),
            ("x-original-host", "b"),
            ("x-original-host", "c"),
        ]);
        assert_eq!(
            single(&map, header::HOST),
            Ok(Some(&HeaderValue::from_static("a")))
        );
        assert_eq!(single(&map, "x-original-uri"), Ok(None));
        assert_eq!(single(&map, "x-original-host"), Err(Repeated));
    }

    #[test]
    fn lists_are_read_from_the_end_and_no_further_than_the_bound() {
        let many: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
        let map = headers(&[
            ("x-forwarded-host", "first"),
            ("x-forwarded-host", &many.join(" ,\t")),
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-port", "8443, "),
        ]);
        let read: Vec<&str> = list_values(&map, &X_FORWARDED_HOST)
            .map(Result::unwrap)
            .collect();
        let expected: Vec<String> = (984..1000).rev().map(|i| format!("v{i}")).collect();
        assert_eq!(read, expected);
        assert_eq!(last_value(&map, &X_FORWARDED_PROTO), Ok(Some("https")));
        // The last value is the nearest proxy's, empty or not.
        assert_eq!(last_value(&map, &X_FORWARDED_PORT), Ok(Some("")));
        assert_eq!(last_value(&map, &X_FORWARDED_PREFIX), Ok(None));
    }

    #[test]
    fn an_element_is_read_in_any_case_and_copied_only_to_remove_escapes() {
        let element =
            ForwardedElement::parse(r#"For="[2001:db8::1]:4711";PROTO=https;Host="a\.example""#)
                .unwrap();
        assert_eq!(element.for_ip, "2001:db8::1".parse().ok());
        assert!(matches!(element.proto, Some(Cow::Borrowed("https"))));
        assert!(matches!(element.host.as_deref(), Some("a.example")));
        assert!(
            matches!(element.host, Some(Cow::Owned(_))),
            "an escape was removed"
        );
        let quoted = ForwardedElement::parse(r#"host="api.example.com:443""#).unwrap();
        assert!(matches!(
            quoted.host,
            Some(Cow::Borrowed("api.example.com:443"))
        ));
        assert!(ForwardedElement::parse(r#"host="open"#).is_err());
        assert!(ForwardedElement::parse("host").is_err());
    }

    #[test]
    fn forwarded_elements_respect_quotes_and_the_bound() {
        let map = headers(&[
            ("forwarded", "for=1.1.1.1"),
            (
                "forwarded",
                "for=\"[2001:db8::7]:443\";host=\"a,b\", for=10.0.0.9",
            ),
        ]);
        let (elements, more) = forwarded_elements(&map);
        let elements: Vec<&str> = elements.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            elements,
            [
                " for=10.0.0.9",
                "for=\"[2001:db8::7]:443\";host=\"a,b\"",
                "for=1.1.1.1"
            ]
        );
        assert!(!more);
        let element = ForwardedElement::parse(elements[1]).unwrap();
        assert_eq!(element.for_ip, "2001:db8::7".parse().ok());
        assert_eq!(element.host.as_deref(), Some("a,b"));
        assert!(ForwardedElement::parse("host=\"open").is_err());
        assert!(ForwardedElement::parse("garbage").is_err());

        let long = headers(&[("forwarded", &"for=unknown, ".repeat(1000))]);
        let (elements, more) = forwarded_elements(&long);
        assert_eq!(elements.len(), MAX_FORWARDED_VALUES);
        assert!(more);
    }

    #[test]
    fn nodes_are_addresses_or_nothing() {
        let v4 = IpAddr::from([198, 51, 100, 7]);
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(parse_node("198.51.100.7"), Some(v4));
        assert_eq!(parse_node("198.51.100.7:4711"), Some(v4));
        assert_eq!(parse_node("[2001:db8::7]:443"), Some(v6));
        assert_eq!(parse_node("2001:db8::7"), Some(v6));
        assert_eq!(
            parse_node("::ffff:10.0.0.1"),
            Some(IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("_hidden"), None);
    }
}
