//! `Forwarded` / `X-Forwarded-*` parsing: rebuilding the public URL with arbitrary header bytes,
//! request targets and peers.
//!
//! Input: `flags 0xFF peer 0xFF target 0xFF header 0xFF header …`, where `flags` picks which
//! headers are read (byte 0) and the default scheme (byte 1), `peer` is an IP address as text
//! (or anything else for none), and each header is `name:value`.
#![no_main]

mod common;

use std::net::IpAddr;

use common::Fields;
use http::{HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower_twilio::{
    __private::reconstruct,
    PublicUrl,
    public_url::{ForwardedField, ForwardedHeaders, Scheme},
};

fuzz_target!(|data: &[u8]| {
    let fields = Fields::new(data);
    let flags = fields.bytes(0);
    let peer: Option<IpAddr> = std::str::from_utf8(fields.bytes(1))
        .ok()
        .and_then(|p| p.parse().ok());
    let Ok(mut builder) = std::str::from_utf8(fields.bytes(2)).map(Request::post) else {
        return;
    };
    for header in fields.rest(3) {
        let Some(colon) = header.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&header[..colon]),
            HeaderValue::from_bytes(&header[colon + 1..]),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();

    // The first flag byte picks which forwarded fields are read, one bit each.
    let mask = flags.first().copied().unwrap_or(0);
    let headers = ForwardedField::ALL
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .fold(ForwardedHeaders::new(), |headers, (_, field)| headers.read(field));
    let scheme = if flags.get(1).copied().unwrap_or(0) % 2 == 0 {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let config = headers
        .default_scheme(scheme)
        .trust_proxy("10.0.0.0/8".parse().unwrap())
        .trust_proxy("::1".parse().unwrap())
        .trust_proxy("192.0.2.0/24".parse().unwrap());
    let forwarded = reconstruct(&PublicUrl::trust_forwarded(config), &parts, peer);
    let own = reconstruct(&PublicUrl::request_host(scheme), &parts, peer);

    let trusted = peer.is_some_and(|ip| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        ["10.0.0.0/8", "::1/128", "192.0.2.0/24"]
            .iter()
            .any(|net| contains(net, ip))
    });
    if !trusted {
        // Spoofing: from anyone but a trusted proxy the headers change nothing.
        assert_eq!(forwarded, own, "untrusted peer {peer:?}");
    }
    if let Ok(resolved) = &forwarded {
        let path = parts.uri.path_and_query().unwrap().as_str();
        assert!(resolved.url.ends_with(path), "{resolved:?}");
        assert!(
            resolved.url.starts_with("https://") || resolved.url.starts_with("http://"),
            "{resolved:?}"
        );
        assert!(
            !resolved
                .url
                .bytes()
                .any(|b| b.is_ascii_control() && b != b'\t'),
            "{resolved:?}"
        );
        if !trusted {
            assert_eq!(resolved.client_ip, peer);
        }
    }
    // The fixed base ignores every header.
    let fixed = reconstruct(
        &PublicUrl::fixed("https://api.example.com/app").unwrap(),
        &parts,
        peer,
    );
    if let Ok(fixed) = fixed {
        assert!(fixed.url.starts_with("https://api.example.com/app/"));
    }
});

/// A tiny CIDR check, independent of the crate's.
fn contains(net: &str, ip: IpAddr) -> bool {
    let (base, bits) = net.split_once('/').unwrap();
    let bits: u32 = bits.parse().unwrap();
    match (base.parse::<IpAddr>().unwrap(), ip) {
        (IpAddr::V4(base), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(base) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(base), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(base) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}
