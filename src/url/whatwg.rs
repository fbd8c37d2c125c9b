//! The WHATWG serialisation of an `http` or `https` URL: what twilio-node compares against
//! after `new URL(url).toString()`.
//!
//! Written for this crate rather than taken from the `url` crate, whose international domain
//! name support alone brings some twenty crates into every build. It follows the WHATWG URL
//! Standard's basic URL parser (as the `url` crate implements it) for absolute `http` and
//! `https` URLs:
//!
//! - leading and trailing C0 controls and spaces trimmed, tabs and newlines removed anywhere;
//! - scheme and host ASCII-lower-cased, any number of `/` or `\` after `scheme:` accepted;
//! - userinfo, path, query and fragment percent-encoded with the Standard's sets (the query
//!   with the special-scheme set, which also encodes `'`); existing escapes left alone;
//! - the port without leading zeros, and dropped when it is the scheme's default;
//! - `\` as a path separator, `.` and `..` segments (also spelled `%2e`) resolved, an empty
//!   path written `/`;
//! - a host percent-decoded, then an IPv4 address in any of its number forms (`0x7f.1`)
//!   written in dotted decimal, an IPv6 literal with its longest run of zeros compressed.
//!
//! What it does not do, it refuses rather than guesses (see [`Unserializable`]): other
//! schemes, and hosts that need international domain name processing (non-ASCII once
//! percent-decoded, or with a punycode `xn--` label). For those, no WHATWG form is tried.
//! Twilio calls `http` and `https` URLs only. A non-ASCII host is spelled differently in the
//! WHATWG form (punycode), which is then never a candidate anyway (see
//! [`binds_same_request`](super::spellings::binds_same_request)). What is lost is the WHATWG form, and its legacy query
//! re-serialisation, of a URL whose host is already in punycode: no vector has one.
//!
//! One deliberate difference from the `url` crate: it never removes a segment like `c:` or
//! `c|` with `..` (the Standard's rule for `file:` URLs, applied to every scheme). This follows
//! the Standard, as Node does; a received path with `..` has no lenient form anyway.

use std::{fmt::Write as _, net::Ipv4Addr};

use percent_encoding::{
    AsciiSet, CONTROLS, percent_decode_str, percent_encode, utf8_percent_encode,
};

use super::parts::{port_number, scheme_len};

/// The fragment percent-encode set.
const FRAGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

/// The path percent-encode set.
const PATH: &AsciiSet = &FRAGMENT.add(b'#').add(b'?').add(b'{').add(b'}');

/// The userinfo percent-encode set.
const USERINFO: &AsciiSet = &PATH
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|');

/// The special-query percent-encode set (the query set and `'`).
const SPECIAL_QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'\'');

/// Why [`whatwg_form`] gave no serialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unserializable {
    /// Not a URL: the WHATWG parser refuses it too.
    Invalid,
    /// A scheme other than `http` or `https`: out of scope.
    Scheme,
    /// A host with non-ASCII characters once percent-decoded: it would need international
    /// domain name processing. Out of scope.
    NonAsciiHost,
    /// A host with a punycode label (`xn--`, any case): it would need international domain
    /// name validation. Out of scope.
    PunycodeLabel,
}

/// The WHATWG serialisation of `input` (`new URL(input).toString()` in JavaScript,
/// `url::Url::parse(input)` in Rust) when it is an `http` or `https` URL within the scope the
/// docs of `url/whatwg.rs` describe.
///
/// # Errors
///
/// [`Unserializable::Invalid`] when the WHATWG parser refuses `input`, another variant when
/// `input` is out of scope.
pub fn whatwg_form(input: &str) -> Result<String, Unserializable> {
    let trimmed = input.trim_matches(|c: char| c <= ' ');
    let cleaned;
    let input = if trimmed.contains(['\t', '\n', '\r']) {
        cleaned = trimmed.replace(['\t', '\n', '\r'], "");
        cleaned.as_str()
    } else {
        trimmed
    };

    let colon = scheme_len(input).ok_or(Unserializable::Invalid)?;
    let scheme = &input[..colon];
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return Err(Unserializable::Scheme);
    };
    let rest = input[colon + 1..].trim_start_matches(['/', '\\']);
    let authority_len = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (authority, after_authority) = rest.split_at(authority_len);
    let (userinfo, host_and_port) = match authority.rfind('@') {
        Some(at) => (&authority[..at], &authority[at + 1..]),
        None => ("", authority),
    };

    // Escapes can triple a character; most URLs need none, and then this never grows.
    let mut out = String::with_capacity(input.len() + 8);
    out.push_str(if default_port == 80 {
        "http://"
    } else {
        "https://"
    });

    // A colon starts the password; both halves encoded, the colon and `@` kept only when
    // something stands around them.
    let (username, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    out.extend(utf8_percent_encode(username, USERINFO));
    if !password.is_empty() {
        out.push(':');
        out.extend(utf8_percent_encode(password, USERINFO));
    }
    if !username.is_empty() || !password.is_empty() {
        out.push('@');
    }

    // The host ends at the first colon outside an IPv6 literal's brackets.
    let mut in_brackets = false;
    let host_len = host_and_port
        .bytes()
        .position(|b| {
            match b {
                b'[' => in_brackets = true,
                b']' => in_brackets = false,
                b':' if !in_brackets => return true,
                _ => {}
            }
            false
        })
        .unwrap_or(host_and_port.len());
    let (host, port) = host_and_port.split_at(host_len);
    write_host(host, &mut out)?;
    if let Some(digits) = port.strip_prefix(':') {
        match parse_port(digits)? {
            Some(port) if port != default_port => {
                let _ = write!(out, ":{port}");
            }
            _ => {}
        }
    }

    // The path ends at the first `?` or `#`; the query at the first `#`.
    let path_len = after_authority
        .find(['?', '#'])
        .unwrap_or(after_authority.len());
    let (path, query_and_fragment) = after_authority.split_at(path_len);
    write_path(path.strip_prefix(['/', '\\']).unwrap_or(path), &mut out);
    let (query, fragment) = match query_and_fragment.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query_and_fragment, None),
    };
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        out.extend(percent_encode(query.as_bytes(), SPECIAL_QUERY));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.extend(utf8_percent_encode(fragment, FRAGMENT));
    }
    Ok(out)
}

/// The port number, `None` when empty; anything but digits, or a number above 65535, is
/// invalid (leading zeros are allowed: [`port_number`]).
fn parse_port(digits: &str) -> Result<Option<u16>, Unserializable> {
    if digits.is_empty() {
        return Ok(None);
    }
    port_number(digits).map(Some).ok_or(Unserializable::Invalid)
}

/// Bytes a domain may not hold (the Standard's forbidden domain code points, as
/// `idna::AsciiDenyList::URL` lists them, plus controls and space).
fn forbidden_in_domain(b: u8) -> bool {
    b <= b' ' || b == 0x7f || b"%#/:<>?@[\\]^|".contains(&b)
}

/// Appends the serialised host.
fn write_host(host: &str, out: &mut String) -> Result<(), Unserializable> {
    if host.is_empty() {
        return Err(Unserializable::Invalid);
    }
    if let Some(literal) = host.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or(Unserializable::Invalid)?;
        let pieces = parse_ipv6(literal.as_bytes()).ok_or(Unserializable::Invalid)?;
        out.push('[');
        write_ipv6(&pieces, out);
        out.push(']');
        return Ok(());
    }
    let decoded = percent_decode_str(host);
    if decoded.clone().any(|b| !b.is_ascii()) {
        return Err(Unserializable::NonAsciiHost);
    }
    if decoded.clone().any(forbidden_in_domain) {
        return Err(Unserializable::Invalid);
    }
    let start = out.len();
    out.extend(decoded.map(|b| char::from(b.to_ascii_lowercase())));
    let domain = &out[start..];
    if domain.split('.').any(|label| label.starts_with("xn--")) {
        return Err(Unserializable::PunycodeLabel);
    }
    if ends_in_a_number(domain) {
        let address = parse_ipv4(domain).ok_or(Unserializable::Invalid)?;
        out.truncate(start);
        let _ = write!(out, "{address}");
    }
    Ok(())
}

/// Whether the last label (a trailing empty one aside) is a number, which makes the host an
/// IPv4 address or invalid.
fn ends_in_a_number(domain: &str) -> bool {
    let mut labels = domain.rsplit('.');
    let mut last = labels.next().unwrap_or_default();
    if last.is_empty() {
        match labels.next() {
            Some(before) => last = before,
            None => return false,
        }
    }
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) || ipv4_number(last).is_some()
}

/// One part of an IPv4 address: decimal, octal with a leading `0`, hexadecimal with `0x`.
/// `Some(None)` for a valid number above `u32::MAX`.
fn ipv4_number(part: &str) -> Option<Option<u32>> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1
            && let Some(octal) = part.strip_prefix('0')
        {
            (octal, 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return Some(Some(0));
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(u32::from_str_radix(digits, radix).ok())
}

/// The IPv4 parser: one to four numbers, each but the last at most 255, the last filling the
/// remaining bytes.
fn parse_ipv4(domain: &str) -> Option<Ipv4Addr> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let mut numbers = [0u32; 4];
    let mut count = 0;
    for part in domain.split('.') {
        *numbers.get_mut(count)? = ipv4_number(part)??;
        count += 1;
    }
    let (&last, leading) = numbers[..count].split_last()?;
    if leading.iter().any(|&n| n > 255) || u64::from(last) >= 1u64 << (8 * (4 - leading.len())) {
        return None;
    }
    let mut address = last;
    for (i, n) in leading.iter().enumerate() {
        address += n << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(address))
}

/// The IPv6 parser: eight hexadecimal pieces, `::` standing for a run of zeros, an IPv4
/// address in dotted decimal allowed as the last two.
fn parse_ipv6(input: &[u8]) -> Option<[u16; 8]> {
    let mut pieces = [0u16; 8];
    let mut piece = 0;
    let mut compress = None;
    let mut i = 0;
    if input.first() == Some(&b':') {
        if input.get(1) != Some(&b':') {
            return None;
        }
        i = 2;
        piece = 1;
        compress = Some(1);
    }
    while i < input.len() {
        if piece == 8 {
            return None;
        }
        if input[i] == b':' {
            if compress.is_some() {
                return None;
            }
            i += 1;
            piece += 1;
            compress = Some(piece);
            continue;
        }
        let start = i;
        let mut value: u16 = 0;
        while i < input.len() && i - start < 4 {
            let Some(digit) = char::from(input[i]).to_digit(16) else {
                break;
            };
            value = value * 0x10 + digit as u16;
            i += 1;
        }
        match input.get(i) {
            Some(b'.') => {
                if i == start || piece > 6 {
                    return None;
                }
                parse_embedded_ipv4(&input[start..], &mut pieces[piece..piece + 2])?;
                piece += 2;
                break;
            }
            Some(b':') => {
                i += 1;
                if i == input.len() {
                    return None;
                }
            }
            Some(_) => return None,
            None => {}
        }
        pieces[piece] = value;
        piece += 1;
    }
    match compress {
        Some(compress) => {
            // Move the pieces after `::` to the end.
            let moved = piece - compress;
            pieces.copy_within(compress..piece, 8 - moved);
            pieces[compress..8 - moved].fill(0);
        }
        None if piece != 8 => return None,
        None => {}
    }
    Some(pieces)
}

/// Four decimal numbers of at most 255, without leading zeros, separated by dots, into two
/// pieces.
fn parse_embedded_ipv4(input: &[u8], pieces: &mut [u16]) -> Option<()> {
    let mut numbers = input.split(|&b| b == b'.');
    let mut bytes = [0u8; 4];
    for byte in &mut bytes {
        let number = numbers.next()?;
        if number.is_empty()
            || (number.len() > 1 && number[0] == b'0')
            || !number.iter().all(u8::is_ascii_digit)
            || number.len() > 3
        {
            return None;
        }
        *byte = std::str::from_utf8(number).ok()?.parse().ok()?;
    }
    if numbers.next().is_some() {
        return None;
    }
    pieces[0] = u16::from_be_bytes([bytes[0], bytes[1]]);
    pieces[1] = u16::from_be_bytes([bytes[2], bytes[3]]);
    Some(())
}

/// Lower-case hexadecimal pieces, the first longest run of two or more zero pieces written
/// `::`.
fn write_ipv6(pieces: &[u16; 8], out: &mut String) {
    let (mut best_start, mut best_len) = (8, 0);
    let mut i = 0;
    while i < 8 {
        let start = i;
        while i < 8 && pieces[i] == 0 {
            i += 1;
        }
        if i - start > best_len {
            (best_start, best_len) = (start, i - start);
        }
        i += 1;
    }
    if best_len < 2 {
        best_start = 8;
    }
    let mut i = 0;
    while i < 8 {
        if i == best_start {
            out.push_str(if i == 0 { "::" } else { ":" });
            i += best_len;
            continue;
        }
        let _ = write!(out, "{:x}", pieces[i]);
        if i < 7 {
            out.push(':');
        }
        i += 1;
    }
}

/// Appends the path (`path` without its first `/` or `\`): segments split on `/` and `\`,
/// each percent-encoded, `.` and `..` resolved, never empty.
fn write_path(path: &str, out: &mut String) {
    let start = out.len();
    let mut segments = path.split(['/', '\\']).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match dots(segment) {
            2 => {
                // Remove the last segment; the root stays.
                if let Some(slash) = out[start..].rfind('/') {
                    out.truncate(start + slash);
                }
                if last {
                    out.push('/');
                }
            }
            1 => {
                if last {
                    out.push('/');
                }
            }
            _ => {
                out.push('/');
                out.extend(utf8_percent_encode(segment, PATH));
            }
        }
    }
}

/// 1 for a single-dot segment, 2 for a double-dot one (each dot may be spelled `%2e`, any
/// case), else 0.
fn dots(segment: &str) -> u8 {
    let is = |spelling: &str| segment.eq_ignore_ascii_case(spelling);
    if is(".") || is("%2e") {
        1
    } else if is("..") || is(".%2e") || is("%2e.") || is("%2e%2e") {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Rows are input -> WHATWG form, as `new URL(input).toString()` gives it (the integration
    // tests compare the same inputs, and generated ones, with the `url` crate).
    #[test]
    fn serialisation_table() {
        let rows = [
            // scheme and host lower-cased, empty path written `/`
            ("HTTPS://Example.COM", "https://example.com/"),
            ("https://example.com?x=1", "https://example.com/?x=1"),
            // default ports dropped, others without leading zeros, an empty port dropped
            ("https://example.com:443/sms", "https://example.com/sms"),
            ("http://example.com:0080/sms", "http://example.com/sms"),
            ("http://example.com:443/sms", "http://example.com:443/sms"),
            (
                "https://example.com:08443/sms",
                "https://example.com:8443/sms",
            ),
            ("https://example.com:/sms", "https://example.com/sms"),
            // the special query set encodes `'`; existing escapes stay as written
            (
                "https://e.com/v?ToState=Forl\u{ec}'&a=%zz&b=%2f",
                "https://e.com/v?ToState=Forl%C3%AC%27&a=%zz&b=%2f",
            ),
            (
                "https://e.com/v?a b<>\"`{}|",
                "https://e.com/v?a%20b%3C%3E%22`{}|",
            ),
            // the path set: `` ` ``, `{`, `}` encoded, `'` and `|` and `^` not
            (
                "https://e.com/a b`{}'|^\"",
                "https://e.com/a%20b%60%7B%7D'|^%22",
            ),
            ("https://e.com/caf\u{e9}", "https://e.com/caf%C3%A9"),
            // the fragment set
            ("https://e.com/#a b`'\u{0}x", "https://e.com/#a%20b%60'%00x"),
            // `?` after the query starts, `#` after the fragment starts: kept
            ("https://e.com/a?b?c#d#e", "https://e.com/a?b?c#d#e"),
            ("https://e.com/sms?", "https://e.com/sms?"),
            ("https://e.com/sms#", "https://e.com/sms#"),
            // dot segments and backslashes
            ("https://e.com/a/../sms", "https://e.com/sms"),
            ("https://e.com/a/./b/", "https://e.com/a/b/"),
            ("https://e.com/a/%2E%2e/b/%2e", "https://e.com/b/"),
            ("https://e.com/..", "https://e.com/"),
            ("https://e.com/a/..", "https://e.com/"),
            ("https://e.com/...", "https://e.com/..."),
            ("https://e.com/twilio\\sms", "https://e.com/twilio/sms"),
            ("https:\\\\e.com\\a", "https://e.com/a"),
            ("https:e.com", "https://e.com/"),
            ("https:////e.com/a", "https://e.com/a"),
            // userinfo: every `@` but the last, and colons after the first, encoded
            ("https://u:p@e.com/", "https://u:p@e.com/"),
            ("https://u@v:p:q@e.com/", "https://u%40v:p%3Aq@e.com/"),
            ("https://u:@e.com/", "https://u@e.com/"),
            ("https://:p@e.com/", "https://:p@e.com/"),
            ("https://:@e.com/", "https://e.com/"),
            ("https://@e.com/", "https://e.com/"),
            ("https://u s\u{e9}r@e.com/", "https://u%20s%C3%A9r@e.com/"),
            // hosts: percent-decoded, IPv4 number forms, IPv6 compression
            ("https://ex%41mple.com/", "https://example.com/"),
            ("http://0x7F.1/", "http://127.0.0.1/"),
            ("http://0177.0.0.1./", "http://127.0.0.1/"),
            ("http://2130706433/", "http://127.0.0.1/"),
            ("http://[0:0:0:0:0:0:0:1]/", "http://[::1]/"),
            (
                "http://[2001:DB8:0:0:1:0:0:1]:8443/",
                "http://[2001:db8::1:0:0:1]:8443/",
            ),
            ("http://[1:0:0:2:0:0:0:3]/", "http://[1:0:0:2::3]/"),
            ("http://[::ffff:1.2.3.4]/", "http://[::ffff:102:304]/"),
            ("http://[::]/", "http://[::]/"),
            ("http://[1:2:3:4:5:6:7::]/", "http://[1:2:3:4:5:6:7:0]/"),
            ("http://[1:0:2:3:4:5:6:7]/", "http://[1:0:2:3:4:5:6:7]/"),
            // white space: C0 and space trimmed, tabs and newlines dropped anywhere
            (" \u{1}https://e.com/sms \n", "https://e.com/sms"),
            ("ht\ttps://e.\ncom/s\rms?a\t=1", "https://e.com/sms?a=1"),
        ];
        for (input, expected) in rows {
            assert_eq!(whatwg_form(input).as_deref(), Ok(expected), "{input:?}");
            // The reference agrees with the table.
            let reference = url::Url::parse(input).map(String::from);
            assert_eq!(reference.as_deref(), Ok(expected), "url crate, {input:?}");
        }
    }

    #[test]
    fn invalid_urls_have_no_form() {
        for input in [
            "",
            "example.com/sms",
            "/sms",
            "1https://e.com/",
            "ht tp://e.com/",
            "https://",
            "https:///",
            "https://@/",
            "https://u@/",
            "https://:443/",
            "https://e.com:65536/",
            "https://e.com:8a/",
            "https://e.com:-1/",
            "https://e.com: 80/",
            "https://e x.com/",
            "https://e%20x.com/",
            "https://e%2Fx.com/",
            "https://e%zz.com/",
            "https://e<x.com/",
            "https://e^x.com/",
            "https://e|x.com/",
            "https://[::1/",
            "https://[::1]x/",
            "https://[]/",
            "https://[1:2]/",
            "https://[1::2::3]/",
            "https://[12345::]/",
            "https://[::1.2.3]/",
            "https://[::1.2.3.256]/",
            "https://[::01.2.3.4]/",
            "https://[1:2:3:4:5:6:7:1.2.3.4]/",
            "https://1.2.3.256/",
            "https://1.2.3.4.5/",
            "https://example.09/",
            "https://example.0x/",
            "https://4294967296/",
        ] {
            assert_eq!(
                whatwg_form(input),
                Err(Unserializable::Invalid),
                "{input:?}"
            );
        }
    }

    #[test]
    fn out_of_scope_urls_have_no_form() {
        let rows = [
            ("ws://e.com/", Unserializable::Scheme),
            ("ftp://e.com/", Unserializable::Scheme),
            ("file:///etc/passwd", Unserializable::Scheme),
            ("mailto:x@e.com", Unserializable::Scheme),
            ("https://caf\u{e9}.com/", Unserializable::NonAsciiHost),
            ("https://caf%C3%A9.com/", Unserializable::NonAsciiHost),
            ("https://\u{ff21}.com/", Unserializable::NonAsciiHost),
            ("https://xn--caf-dma.com/", Unserializable::PunycodeLabel),
            ("https://a.XN--p1ai/", Unserializable::PunycodeLabel),
        ];
        for (input, expected) in rows {
            assert_eq!(whatwg_form(input), Err(expected), "{input:?}");
        }
    }
}
