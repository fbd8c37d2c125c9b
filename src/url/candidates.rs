//! The other URLs the [mismatch doctor](crate::doctor) tries for a request whose signature did
//! not match its rebuilt URL, built from what the request carries.
//!
//! The headers are read with the readers [`PublicUrl`](super::public::PublicUrl) uses
//! ([`super::headers`]) and every value is held to the rules a rebuilt URL is held to
//! ([`super::parts`]): a host the doctor tries is one `PublicUrl` would accept from a trusted
//! proxy, and so are its ports and prefixes. The work is bounded by construction: at most
//! [`MAX_FORWARDED_VALUES`](super::headers::MAX_FORWARDED_VALUES) values of each forwarding
//! header are read, the hosts, paths and ports are kept without repeats as they are read so
//! that every combination is a distinct URL, and a [`Candidate`] is built into a string only
//! when it is tried.

use std::borrow::Cow;

use http::{HeaderMap, header};

use super::{
    headers::{
        ForwardedElement, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PREFIX,
        forwarded_elements, last_value, list_values, single,
    },
    parts::{
        join, path_and_query, path_prefix, split, strip_port, valid_host, valid_path_and_query,
        valid_port,
    },
};

/// Where a candidate's changed part came from, for the wording of the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `http` for `https` or the other way round.
    OtherScheme,
    /// A header, in its `Title-Case` spelling, or a description (`the request target`).
    Header(&'static str),
    /// A trailing slash added or removed.
    TrailingSlash,
}

/// One URL to try, borrowed from the [`Variants`] it was made of: built into a `String` only
/// when it is tried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'v> {
    pub(crate) scheme: &'v str,
    pub(crate) authority: &'v str,
    /// Path and query, starting with `/`.
    pub(crate) rest: &'v str,
    pub(crate) source: Source,
}

impl<'v> Candidate<'v> {
    fn new(scheme: &'v str, authority: &'v str, rest: &'v str, source: Source) -> Self {
        Self {
            scheme,
            authority,
            rest,
            source,
        }
    }

    /// The URL.
    pub(crate) fn url(&self) -> String {
        join(&[self.scheme, "://", self.authority, self.rest])
    }
}

/// The parts the doctor varies, each list without repeats, so that every combination is a
/// distinct URL: the hosts differ from each other and from the received authority, the paths
/// from each other and from the received path, the port variants from all of those. Each list
/// is short whatever the request holds (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Variants<'a> {
    scheme: &'a str,
    other_scheme: &'static str,
    authority: &'a str,
    /// The received URL's path and query.
    pub(crate) rest: &'a str,
    hosts: Vec<(Cow<'a, str>, &'static str)>,
    paths: Vec<(Cow<'a, str>, Source)>,
    ported: Vec<(String, &'static str)>,
}

impl<'a> Variants<'a> {
    /// The variants of `received_url` that `headers`, the path and query the application
    /// received and the request target before a router rewrote it (`original_uri`) suggest.
    /// `None` when `received_url` is not `scheme://authority/path`.
    pub(crate) fn new(
        received_url: &'a str,
        headers: &'a HeaderMap,
        path_and_query: &'a str,
        original_uri: Option<&'a str>,
    ) -> Option<Self> {
        let received = split(received_url).filter(|parts| parts.rest.starts_with('/'))?;
        let (scheme, authority, rest) = (received.scheme, received.authority, received.rest);
        let other_scheme = if scheme.eq_ignore_ascii_case("https") {
            "http"
        } else {
            "https"
        };

        let mut hosts: Vec<(Cow<'a, str>, &'static str)> = Vec::new();
        let mut add_host = |host: Cow<'a, str>, from: &'static str| {
            if valid_host(&host)
                && !host.eq_ignore_ascii_case(authority)
                && !hosts.iter().any(|(h, _)| h.eq_ignore_ascii_case(&host))
            {
                hosts.push((host, from));
            }
        };
        if let Some(host) = single_text(headers, header::HOST.as_str()) {
            add_host(host.into(), "Host");
        }
        // The last few values of each header, tried in the order they were sent.
        let mut forwarded_hosts: Vec<&str> = list_values(headers, &X_FORWARDED_HOST)
            .filter_map(Result::ok)
            .collect();
        forwarded_hosts.reverse();
        for host in forwarded_hosts {
            add_host(host.into(), "X-Forwarded-Host");
        }
        let (mut elements, _) = forwarded_elements(headers);
        elements.reverse();
        let parsed = elements
            .into_iter()
            .filter_map(|element| ForwardedElement::parse(element.ok()?).ok()?.host);
        for host in parsed {
            add_host(host, "Forwarded");
        }
        if let Some(host) = single_text(headers, "x-original-host") {
            add_host(host.into(), "X-Original-Host");
        }

        // Port variants of every host: the forwarded port, or none; each distinct from every
        // authority above and from the others.
        let forwarded_port = last_value(headers, &X_FORWARDED_PORT)
            .ok()
            .flatten()
            .filter(|port| valid_port(port));
        let mut ported: Vec<(String, &'static str)> = Vec::new();
        let authorities =
            std::iter::once((authority, "")).chain(hosts.iter().map(|(h, from)| (&**h, *from)));
        for (host, from) in authorities {
            let bare = strip_port(host);
            let with_port =
                forwarded_port.map(|port| (join(&[bare, ":", port]), "X-Forwarded-Port"));
            let without = (bare != host).then(|| (bare.to_owned(), from));
            for (variant, from) in without.into_iter().chain(with_port) {
                if variant != authority
                    && !hosts.iter().any(|(h, _)| **h == variant)
                    && !ported.iter().any(|(p, _)| *p == variant)
                {
                    ported.push((variant, from));
                }
            }
        }

        let pq = path_and_query;
        let mut paths: Vec<(Cow<'a, str>, Source)> = Vec::new();
        let mut add_path = |path: Cow<'a, str>, source: Source| {
            if valid_path_and_query(&path) && path != rest && !paths.iter().any(|(p, _)| *p == path)
            {
                paths.push((path, source));
            }
        };
        if let Some(prefix) = last_value(headers, &X_FORWARDED_PREFIX)
            .ok()
            .flatten()
            .and_then(path_prefix)
            .filter(|prefix| !prefix.is_empty())
        {
            add_path(
                join(&[prefix, pq]).into(),
                Source::Header("X-Forwarded-Prefix"),
            );
        }
        for (name, title) in [
            ("x-original-uri", "X-Original-URI"),
            ("x-envoy-original-path", "X-Envoy-Original-Path"),
        ] {
            if let Some(original) = single_text(headers, name) {
                add_path(original.into(), Source::Header(title));
            }
        }
        if let Some(original) = original_uri.and_then(target_path_and_query) {
            add_path(original.into(), Source::Header("OriginalUri"));
        }
        // The received path as the application saw it, when the configured base added a prefix.
        add_path(pq.into(), Source::Header("the request target"));
        add_path(toggle_trailing_slash(rest).into(), Source::TrailingSlash);

        Some(Self {
            scheme,
            other_scheme,
            authority,
            rest,
            hosts,
            paths,
            ported,
        })
    }

    /// The other URLs worth trying, most likely first: distinct by construction, none of them
    /// the URL that failed, and built one at a time by whoever takes them.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = Candidate<'_>> + '_ {
        let (scheme, other) = (self.scheme, self.other_scheme);
        let candidate = Candidate::new;
        // 1. One change: the scheme, the host, the path.
        let one = std::iter::once(candidate(
            other,
            self.authority,
            self.rest,
            Source::OtherScheme,
        ))
        .chain(self.hosts.iter().flat_map(move |(host, from)| {
            [scheme, other].map(|s| candidate(s, host, self.rest, Source::Header(from)))
        }))
        .chain(
            self.paths
                .iter()
                .map(move |(path, source)| candidate(scheme, self.authority, path, *source)),
        );
        // 2. Two changes: the other scheme with each path, each host with each path.
        let two = self.paths.iter().flat_map(move |(path, source)| {
            std::iter::once(candidate(other, self.authority, path, *source)).chain(
                self.hosts.iter().flat_map(move |(host, _)| {
                    [scheme, other].map(|s| candidate(s, host, path, *source))
                }),
            )
        });
        // 3. Ports, which are rarely the cause: kept for last.
        let ports = self.ported.iter().flat_map(move |(authority, from)| {
            let source = Source::Header(if from.is_empty() { "no port" } else { from });
            [scheme, other].map(|s| candidate(s, authority, self.rest, source))
        });
        one.chain(two).chain(ports)
    }
}

/// A header's only value, as text.
fn single_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    single(headers, name).ok()??.to_str().ok()
}

/// The path and query of a request target (`/a?b`), or of an absolute URL.
fn target_path_and_query(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(target);
    }
    split(target)
        .map(|parts| parts.rest)
        .filter(|rest| rest.starts_with('/'))
}

/// The path with a trailing slash added, or removed if it has one; the query is kept.
fn toggle_trailing_slash(rest: &str) -> String {
    let (path, _) = path_and_query(rest);
    let query = &rest[path.len()..];
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => join(&[stripped, query]),
        Some(_) => rest.to_owned(),
        None => join(&[path, "/", query]),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// Every URL the doctor would try for `url`, in order.
    fn candidates(url: &str, headers: &HeaderMap, pq: &str) -> Vec<String> {
        Variants::new(url, headers, pq, None)
            .map(|variants| variants.candidates().map(|c| c.url()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn hostile_header_values_are_not_tried() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-host", "evil.example/path"),
            ("x-original-host", "user@evil.example"),
            ("x-forwarded-prefix", "no-leading-slash"),
            ("x-original-uri", "/has space"),
            ("x-forwarded-port", "99999999"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        for url in candidates("https://a.example/x", &headers, "/x") {
            assert!(!url.contains("evil"), "{url}");
            assert!(!url.contains("no-leading-slash"), "{url}");
            assert!(!url.contains("space"), "{url}");
            assert!(!url.contains("99999999"), "{url}");
        }
    }

    #[test]
    fn trailing_slash_toggles_keep_the_query() {
        assert_eq!(toggle_trailing_slash("/a/b?x=1"), "/a/b/?x=1");
        assert_eq!(toggle_trailing_slash("/a/b/?x=1"), "/a/b?x=1");
        assert_eq!(toggle_trailing_slash("/"), "/");
    }
}
