//! The parts of a URL: the one splitter, and the rules a host, a port and a path must meet to
//! stand in a URL this crate builds or tries.
//!
//! Each function reads its input once, from the start or from a known end, and allocates
//! nothing but [`join`]'s result: the work is linear in what it is given, and what it is given
//! is bounded by the caller (a header value, a URL the request carries).

/// An absolute URL cut into its parts, nothing normalised:
/// `scheme://` [`userinfo`](Self::userinfo) [`host`](Self::host) [`port`](Self::port)
/// [`rest`](Self::rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split<'a> {
    /// The scheme, without `://`.
    pub(crate) scheme: &'a str,
    /// Userinfo, host and port: everything between `://` and the rest.
    pub(crate) authority: &'a str,
    /// `user:pass@`, or empty.
    pub(crate) userinfo: &'a str,
    /// The host, brackets of an IPv6 literal included.
    pub(crate) host: &'a str,
    /// `:port` (possibly just `:`), or empty.
    pub(crate) port: &'a str,
    /// Everything after the authority: empty, or a path, query or fragment (starting with `/`,
    /// `?` or `#`).
    pub(crate) rest: &'a str,
}

/// Cuts an absolute URL into its [parts](Split); `None` unless it starts with a scheme
/// ([`scheme_len`]) and `://`.
///
/// The authority ends at the first `/`, `?` or `#`; the userinfo at the authority's last `@`;
/// the host where [`strip_port`] ends it.
pub(crate) fn split(url: &str) -> Option<Split<'_>> {
    let colon = scheme_len(url)?;
    if !url[colon..].starts_with("://") {
        return None;
    }
    let start = colon + 3;
    let len = url[start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - start);
    let authority = &url[start..start + len];
    let host_start = userinfo_len(authority);
    let port_start = port_start(authority);
    Some(Split {
        scheme: &url[..colon],
        authority,
        userinfo: &authority[..host_start],
        host: &authority[host_start..port_start],
        port: &authority[port_start..],
        rest: &url[start + len..],
    })
}

/// The length of the scheme before the `:` that ends it, when it is one:
/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3986).
pub(crate) fn scheme_len(input: &str) -> Option<usize> {
    let bytes = input.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let colon = bytes.iter().position(|&b| b == b':')?;
    bytes[..colon]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .then_some(colon)
}

/// The length of an authority's `user:pass@`: up to its last `@`.
fn userinfo_len(authority: &str) -> usize {
    authority.rfind('@').map_or(0, |at| at + 1)
}

/// Where an authority's port starts (its colon), or its length when it has none: after the
/// userinfo, a colon starts the port only after the closing bracket of an IPv6 literal.
fn port_start(authority: &str) -> usize {
    let host_start = userinfo_len(authority);
    let search_from = authority[host_start..]
        .rfind(']')
        .map_or(host_start, |bracket| host_start + bracket + 1);
    authority[search_from..]
        .find(':')
        .map_or(authority.len(), |colon| search_from + colon)
}

/// The authority without its port: `user:pass@[2001:db8::1]:8443` gives
/// `user:pass@[2001:db8::1]`, `example.com` stays as it is.
pub(crate) fn strip_port(authority: &str) -> &str {
    &authority[..port_start(authority)]
}

/// The longest host, port aside, that this crate puts in a URL: a DNS name is at most 253
/// bytes.
pub(crate) const MAX_HOST_LEN: usize = 255;

/// Whether a host with an optional port, as `Host`, `X-Forwarded-Host` and `Forwarded: host=`
/// carry it, can stand in a URL's authority as received: a host of 1 to [`MAX_HOST_LEN`]
/// bytes of visible ASCII without a delimiter (`/ ? # @ \ ,`: no path, query, fragment,
/// userinfo or second value), then nothing, an empty port (`host:`, as RFC 3986 allows) or
/// `:` and a [port](valid_port).
pub(crate) fn valid_host(value: &str) -> bool {
    let (host, port) = value.split_at(port_start(value));
    (1..=MAX_HOST_LEN).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\' | b','))
        && match port.strip_prefix(':') {
            None | Some("") => true,
            Some(digits) => valid_port(digits),
        }
}

/// Whether `digits` is a port as a forwarding header or an authority gives it: 1 to 5 ASCII
/// digits, at most 65535.
pub(crate) fn valid_port(digits: &str) -> bool {
    digits.len() <= 5 && port_number(digits).is_some()
}

/// The number `digits` spell, leading zeros allowed: `None` when they are empty, not all ASCII
/// digits, or above 65535. Stops at the first byte that fails.
pub(crate) fn port_number(digits: &str) -> Option<u16> {
    if digits.is_empty() {
        return None;
    }
    let mut port: u16 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        port = port.checked_mul(10)?.checked_add(u16::from(b - b'0'))?;
    }
    Some(port)
}

/// A path prefix that a proxy stripped (`X-Forwarded-Prefix`), without its trailing slashes:
/// empty, or `/` then visible ASCII without `?` or `#`, and not `//` (which a URL would read
/// as an authority). `None` when `value` is none of those.
pub(crate) fn path_prefix(value: &str) -> Option<&str> {
    let prefix = value.trim_end_matches('/');
    let valid = prefix.is_empty()
        || (valid_path_and_query(prefix) && !prefix.starts_with("//") && !prefix.contains('?'));
    valid.then_some(prefix)
}

/// Whether a path and query can end a URL: `/`, then visible ASCII without `#`.
pub(crate) fn valid_path_and_query(value: &str) -> bool {
    value.starts_with('/') && value.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// What follows an authority ([`Split::rest`]) cut into the path and the query (without its
/// `?`); a fragment is dropped.
pub(crate) fn path_and_query(rest: &str) -> (&str, &str) {
    let rest = rest.split('#').next().unwrap_or_default();
    match rest.split_once('?') {
        Some((path, query)) => (path, query),
        None => (rest, ""),
    }
}

/// The parts, one after the other, in one allocation.
pub(crate) fn join(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        // url -> (scheme, userinfo, host, port, rest)
        let rows = [
            (
                "https://example.com/sms?a=b:c",
                Some(("https", "", "example.com", "", "/sms?a=b:c")),
            ),
            (
                "HTTP://user:pass@Example.com:8443?x#f",
                Some(("HTTP", "user:pass@", "Example.com", ":8443", "?x#f")),
            ),
            (
                "https://[2001:db8::1]:/a@b:c",
                Some(("https", "", "[2001:db8::1]", ":", "/a@b:c")),
            ),
            (
                "https://u:p@[::1]",
                Some(("https", "u:p@", "[::1]", "", "")),
            ),
            ("example.com/sms", None),
            ("mailto:x@example.com", None),
            ("1http://example.com/", None),
            ("ab:c://example.com/", None),
            ("://example.com/", None),
        ];
        for (url, expected) in rows {
            let split = split(url);
            assert_eq!(
                split.map(|s| (s.scheme, s.userinfo, s.host, s.port, s.rest)),
                expected,
                "{url}"
            );
            if let Some(split) = split {
                assert_eq!(
                    join(&[split.scheme, "://", split.authority, split.rest]),
                    url
                );
                assert_eq!(
                    split.authority,
                    join(&[split.userinfo, split.host, split.port])
                );
            }
        }
    }

    #[test]
    fn strip_port_keeps_userinfo_and_ipv6_literals() {
        for (authority, stripped) in [
            ("example.com:8443", "example.com"),
            ("example.com", "example.com"),
            ("example.com:", "example.com"),
            ("[2001:db8::1]:8443", "[2001:db8::1]"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("user:pass@example.com:8443", "user:pass@example.com"),
            ("user:pass@example.com", "user:pass@example.com"),
        ] {
            assert_eq!(strip_port(authority), stripped, "{authority}");
        }
    }

    #[test]
    fn the_host_rule() {
        let longest = "a".repeat(MAX_HOST_LEN);
        for valid in [
            "example.com",
            "Example.COM:8443",
            "example.com:",
            "[2001:db8::1]:443",
            "127.0.0.1:65535",
            longest.as_str(),
        ] {
            assert!(valid_host(valid), "{valid}");
        }
        let too_long = format!("{longest}a:443");
        for invalid in [
            "",
            ":443",
            "a/b",
            "a b",
            "a?b",
            "a#b",
            "user@host",
            "a\\b",
            "a,b",
            "host:80a",
            "host:65536",
            "host:000080",
            "a:b:c",
            "[::1",
            "h\u{e9}",
            too_long.as_str(),
        ] {
            assert!(!valid_host(invalid), "{invalid:?}");
        }
    }

    #[test]
    fn the_port_rule() {
        for (digits, number) in [
            ("0", Some(0)),
            ("443", Some(443)),
            ("08443", Some(8443)),
            ("65535", Some(65535)),
            ("65536", None),
            ("99999", None),
            ("", None),
            ("80a", None),
            ("+80", None),
        ] {
            assert_eq!(port_number(digits), number, "{digits:?}");
            assert_eq!(valid_port(digits), number.is_some(), "{digits:?}");
        }
        // Leading zeros: any number of them for the WHATWG parser, five digits for a header.
        assert_eq!(port_number("0000000443"), Some(443));
        assert!(!valid_port("000443"));
    }

    #[test]
    fn path_rules() {
        assert_eq!(path_prefix("/app/"), Some("/app"));
        assert_eq!(path_prefix("/a/b-c_d.e~%20"), Some("/a/b-c_d.e~%20"));
        assert_eq!(path_prefix("/"), Some(""));
        assert_eq!(path_prefix(""), Some(""));
        for invalid in ["app", "//evil.example", "/a?b", "/a#b", "/a b", "/a\tb"] {
            assert_eq!(path_prefix(invalid), None, "{invalid:?}");
        }
        assert!(valid_path_and_query("/a?b=c"));
        assert!(!valid_path_and_query("a?b=c"));
        assert!(!valid_path_and_query("/a#f"));
        assert!(!valid_path_and_query("/has space"));
        assert_eq!(path_and_query("/a?b=c#f"), ("/a", "b=c"));
        assert_eq!(path_and_query("#f"), ("", ""));
    }
}
