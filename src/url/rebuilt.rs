//! What rebuilding a request's public URL gives: [`RebuiltUrl`], or why it could not be rebuilt
//! ([`UrlError`]). Crate-internal; reachable from outside only through
//! [`__private`](crate::__private), for the fuzz targets and property tests.

use std::{borrow::Cow, fmt, net::IpAddr};

use super::redact::redact_userinfo;

/// A rebuilt public URL and the client address that came with it: what rebuilding the URL
/// with a [`PublicUrl`](crate::PublicUrl) gives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuiltUrl {
    /// The URL to verify against.
    pub url: String,
    /// The real client's address: from the trusted forwarding chain, else the peer's.
    pub client_ip: Option<IpAddr>,
    /// Whether `url` may hold userinfo (`user:password@`): only a fixed base URL gives it (a
    /// request's host never does), or a request target taken as it came.
    pub(crate) userinfo: bool,
}

impl RebuiltUrl {
    /// `url` as it is, which may hold userinfo.
    pub(crate) fn new(url: String, client_ip: Option<IpAddr>) -> Self {
        let userinfo = url.contains('@');
        Self {
            url,
            client_ip,
            userinfo,
        }
    }

    /// Takes the URL out without its userinfo (see [`redact_userinfo`]), leaving it empty: for
    /// the verified context, once nothing more is refused. A URL without userinfo is moved.
    pub(crate) fn take_without_userinfo(&mut self) -> String {
        let url = std::mem::take(&mut self.url);
        if !self.userinfo {
            return url;
        }
        match redact_userinfo(&url) {
            Cow::Borrowed(_) => url,
            Cow::Owned(redacted) => redacted,
        }
    }
}

/// Why a request's public URL could not be rebuilt. A refused request says why with
/// [`RejectionKind::UnresolvableUrl`](crate::RejectionKind::UnresolvableUrl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// The request target has no path (`*` or authority-form).
    NoPath,
    /// No authority in the target and no `Host` header.
    MissingHost,
    /// More than one `Host` header.
    DuplicateHost,
    /// The request's authority (its `Host`, or the target's) cannot stand in a URL.
    InvalidHost,
    /// A trusted forwarding header is malformed or holds a value that cannot stand in a URL.
    InvalidForwarded,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::NoPath => "request target has no path",
            Self::MissingHost => "request has no Host header",
            Self::DuplicateHost => "request has more than one Host header",
            Self::InvalidHost => "request host cannot be part of a URL",
            Self::InvalidForwarded => "trusted forwarding header is malformed",
        })
    }
}

impl std::error::Error for UrlError {}
