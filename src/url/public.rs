//! [`PublicUrl`]: how the middleware rebuilds the URL Twilio requested.
//!
//! Twilio signs the URL it called. Behind a TLS terminator, a load balancer or a tunnel, the
//! application sees another scheme, host, port or path prefix, so the URL has to be rebuilt.
//! The scheme, host, port and prefix come from one of three places:
//!
//! 1. [`PublicUrl::fixed`] — a base URL from configuration (**recommended**): exactly what you
//!    entered in the Twilio console, minus the path.
//! 2. [`PublicUrl::request_host`] — the request's own authority (absolute-form target or
//!    HTTP/2 `:authority`), else its single `Host` header, with a scheme you name. Only right
//!    when nothing rewrites the host between Twilio and the application.
//! 3. [`PublicUrl::trust_forwarded`] — RFC 7239 `Forwarded` and/or `X-Forwarded-Proto`,
//!    `-Host`, `-Port`, `-Prefix`, read **only** when the connecting peer's address is inside the
//!    configured proxy networks; from any other peer those headers are ignored and the request's
//!    own authority is used.
//!
//! The path and query always come from the raw request target, byte for byte: never decoded,
//! re-encoded, re-ordered or taken from a router-rewritten path.
//!
//! Pure: no I/O, no tower types.
//!
//! # Deployment caveat
//!
//! Forwarding headers are set by whoever sends the request. Trusting them from an address that
//! is not your proxy lets anyone choose the URL that gets verified, which is why they are off
//! by default and tied to proxy networks. Frameworks that rewrite the request path (axum's
//! `nest`, a proxy that strips a prefix) change what the middleware sees: put the stripped part
//! in the fixed base URL (`https://api.example.com/app`) or `X-Forwarded-Prefix`.

use std::{fmt, net::IpAddr, sync::Arc};

use http::{HeaderMap, Uri, header, request::Parts};

pub use super::proxy_network::ProxyNetwork;
use super::{
    headers::{
        ForwardedElement, MAX_FORWARDED_VALUES, Repeated, X_FORWARDED_FOR, X_FORWARDED_HOST,
        X_FORWARDED_PORT, X_FORWARDED_PREFIX, X_FORWARDED_PROTO, forwarded_elements, last_value,
        list_values_and_one_more, parse_node, single,
    },
    parts::{join, path_prefix, strip_port, valid_host, valid_port},
    rebuilt::{RebuiltUrl, UrlError},
    whatwg::{Unserializable, whatwg_form},
};
use crate::error::ConfigError;

/// Where the scheme, host, port and path prefix of the verified URL come from. See the
/// [module docs](self).
#[derive(Clone)]
pub struct PublicUrl {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Fixed {
        base: Arc<str>,
        /// Whether `base` may hold userinfo (it has an `@`).
        userinfo: bool,
    },
    RequestHost {
        scheme: Scheme,
    },
    Forwarded(Arc<ForwardedHeaders>),
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The scheme `value` names, ASCII case aside: the one reading of `X-Forwarded-Proto` and
    /// `Forwarded: proto=`.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        [Self::Https, Self::Http]
            .into_iter()
            .find(|scheme| scheme.as_str().eq_ignore_ascii_case(value))
    }
}

impl PublicUrl {
    /// A fixed public base URL: scheme, host, optional port, optional path prefix, exactly as
    /// configured in Twilio (case and all). The request's path and query are appended to it.
    ///
    /// ```
    /// use tower_twilio::PublicUrl;
    ///
    /// let public = PublicUrl::fixed("https://api.example.com").unwrap();
    /// let behind_prefix = PublicUrl::fixed("https://example.com:8443/app/").unwrap();
    /// assert!(PublicUrl::fixed("api.example.com").is_err());
    /// assert!(PublicUrl::fixed("https://api.example.com/?x=1").is_err());
    /// # let _ = (public, behind_prefix);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPublicUrl`] unless `base` is an absolute `http` or `https` URL
    /// with a host and without query or fragment. An international host is given in its
    /// punycode form (`https://xn--caf-dma.example`): a non-ASCII one is refused.
    pub fn fixed(base: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &'static str| ConfigError::InvalidPublicUrl {
            url: base.to_owned(),
            reason,
        };
        // The WHATWG parser's verdict, without international domain names: a punycode label
        // is taken as written (DNS is the judge of it), a non-ASCII host is refused.
        match whatwg_form(base) {
            Ok(_) | Err(Unserializable::PunycodeLabel) => {}
            Err(Unserializable::Scheme) => {
                return Err(invalid("the scheme must be http or https"));
            }
            Err(Unserializable::NonAsciiHost) => {
                return Err(invalid(
                    "the host is not ASCII: use the punycode form (xn--...) Twilio calls",
                ));
            }
            Err(Unserializable::Invalid) => return Err(invalid("not an absolute URL")),
        }
        if base.contains(['?', '#']) {
            return Err(invalid("the base URL must not have a query or fragment"));
        }
        if base.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "the URL contains white space or control characters",
            ));
        }
        Ok(Self {
            source: Source::Fixed {
                base: base.trim_end_matches('/').into(),
                userinfo: base.contains('@'),
            },
        })
    }

    /// The request's own authority (absolute-form target or HTTP/2 `:authority`, else its one
    /// `Host` header) with the given scheme. No forwarding header is read.
    ///
    /// A request without a `Host`, with two, or with one that cannot stand in a URL as it is
    /// (a path, userinfo or second value in it, a host over 255 bytes, a port that is not a
    /// number up to 65535) is refused with
    /// [`RejectionKind::UnresolvableUrl`](crate::RejectionKind::UnresolvableUrl).
    pub fn request_host(scheme: Scheme) -> Self {
        Self {
            source: Source::RequestHost { scheme },
        }
    }

    /// Forwarding headers, trusted only from the proxies `headers` names. See
    /// [`ForwardedHeaders`].
    pub fn trust_forwarded(headers: ForwardedHeaders) -> Self {
        Self {
            source: Source::Forwarded(Arc::new(headers)),
        }
    }

    /// Rebuilds the public URL of a request. `peer` is the address of the connecting client,
    /// when the server provides it.
    ///
    /// # Errors
    ///
    /// [`UrlError`] when the request has no usable path or authority, or a trusted forwarding
    /// header holds something that cannot be part of a URL.
    pub(crate) fn reconstruct(
        &self,
        parts: &Parts,
        peer: Option<IpAddr>,
    ) -> Result<RebuiltUrl, UrlError> {
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .filter(|pq| pq.starts_with('/'))
            .ok_or(UrlError::NoPath)?;
        match &self.source {
            Source::Fixed { base, userinfo } => Ok(RebuiltUrl {
                url: join(&[base, path]),
                client_ip: peer,
                userinfo: *userinfo,
            }),
            Source::RequestHost { scheme } => {
                let host = request_authority(&parts.uri, &parts.headers)?;
                Ok(RebuiltUrl {
                    url: join(&[scheme.as_str(), "://", host, path]),
                    client_ip: peer,
                    userinfo: false,
                })
            }
            Source::Forwarded(config) => config.reconstruct(parts, path, peer),
        }
    }
}

impl fmt::Debug for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Fixed { base, .. } => f.debug_tuple("Fixed").field(base).finish(),
            Source::RequestHost { scheme } => f.debug_tuple("RequestHost").field(scheme).finish(),
            Source::Forwarded(config) => f.debug_tuple("TrustForwarded").field(config).finish(),
        }
    }
}

/// The request's authority: from the target if absolute, else from its single `Host`; either
/// held to the one host rule ([`valid_host`]).
fn request_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<&'a str, UrlError> {
    let authority = match uri.authority() {
        Some(authority) => authority.as_str(),
        None => match single(headers, header::HOST) {
            Ok(Some(host)) => host.to_str().map_err(|_| UrlError::InvalidHost)?,
            Ok(None) => return Err(UrlError::MissingHost),
            Err(Repeated) => return Err(UrlError::DuplicateHost),
        },
    };
    if valid_host(authority) {
        Ok(authority)
    } else {
        Err(UrlError::InvalidHost)
    }
}

/// Which forwarded fields to read, and from which proxies.
///
/// A proxy overwrites some forwarding headers and passes others through as the client sent
/// them: nginx and AWS ALB, for example, set `X-Forwarded-For` and `X-Forwarded-Proto` but
/// leave a client's own `Forwarded` header untouched. Trusting the proxy is therefore not
/// enough; name each field your proxy sets with [`read`](Self::read). Every other field is
/// ignored, even from a trusted proxy. The table in `docs/TWILIO_WEBHOOK_SETUP.md` says what
/// nginx, AWS ALB, Cloud Run, Heroku, Caddy, Cloudflare Tunnel and ngrok set.
///
/// ```
/// use tower_twilio::{PublicUrl, public_url::{ForwardedField, ForwardedHeaders}};
///
/// // nginx with `proxy_set_header X-Forwarded-Proto $scheme;` and
/// // `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`
/// let public = PublicUrl::trust_forwarded(
///     ForwardedHeaders::new()
///         .trust_proxy("10.0.0.0/8".parse()?)
///         .trust_proxy("127.0.0.1/32".parse()?)
///         .read(ForwardedField::XForwardedProto)
///         .read(ForwardedField::XForwardedFor),
/// );
/// # let _ = public;
/// # Ok::<(), tower_twilio::ConfigError>(())
/// ```
///
/// With a trusted peer, the fields named are taken as follows:
///
/// - `Forwarded` (RFC 7239): walking the elements from the last (added by the nearest proxy)
///   towards the first, the first element whose `for=` is not itself a trusted proxy describes
///   the request as the client made it: its `proto=` ([`ForwardedField::ForwardedProto`]),
///   `host=` ([`ForwardedField::ForwardedHost`]) and `for=` (the client address,
///   [`ForwardedField::ForwardedFor`]).
/// - `X-Forwarded-Proto`, `-Host`, `-Port`, `-Prefix`: the last value (set or appended by the
///   nearest proxy). `X-Forwarded-For`: the last address that is not a trusted proxy; when
///   every address is a trusted proxy's, the farthest (the header's first).
/// - At most 16 values of each header are read, from its end. Past 16 trusted hops the client
///   cannot be told: a `Forwarded` chain refuses the request
///   ([`RejectionKind::UnresolvableUrl`](crate::RejectionKind::UnresolvableUrl)), since its
///   element also names the scheme and host; an `X-Forwarded-For` chain names no client, and
///   the peer's address stands.
/// - Where both name a scheme, host or client, `Forwarded` wins.
/// - A value read that cannot stand in the URL refuses the request
///   ([`RejectionKind::UnresolvableUrl`](crate::RejectionKind::UnresolvableUrl)): a scheme
///   other than `http` or `https`, a host that [`PublicUrl::request_host`] would refuse in
///   `Host`, a port other than 1 to 5 digits up to 65535, a prefix that does not start with
///   one `/` or holds `?`, `#`, white space or control characters.
/// - Anything missing or not named falls back to the request's own authority and
///   [`Self::default_scheme`].
#[derive(Clone, Debug)]
pub struct ForwardedHeaders {
    proxies: Vec<ProxyNetwork>,
    fields: Vec<ForwardedField>,
    default_scheme: Scheme,
}

/// One forwarded field, named with the header that carries it. See [`ForwardedHeaders`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardedField {
    /// `Forwarded: proto=`: the scheme the client used.
    ForwardedProto,
    /// `Forwarded: host=`: the host the client asked for.
    ForwardedHost,
    /// `Forwarded: for=`: the client's address (for events only).
    ForwardedFor,
    /// `X-Forwarded-Proto`: the scheme the client used.
    XForwardedProto,
    /// `X-Forwarded-Host`: the host the client asked for.
    XForwardedHost,
    /// `X-Forwarded-Port`: the port the client connected to.
    XForwardedPort,
    /// `X-Forwarded-Prefix`: a path prefix the proxy stripped.
    XForwardedPrefix,
    /// `X-Forwarded-For`: the client's address (for events only).
    XForwardedFor,
}

impl ForwardedField {
    /// Every field, in the order [`ForwardedHeaders`]' docs list them.
    pub const ALL: [Self; 8] = [
        Self::ForwardedProto,
        Self::ForwardedHost,
        Self::ForwardedFor,
        Self::XForwardedProto,
        Self::XForwardedHost,
        Self::XForwardedPort,
        Self::XForwardedPrefix,
        Self::XForwardedFor,
    ];

    /// The field's name in configuration: `forwarded-proto`, …, `x-forwarded-for`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ForwardedProto => "forwarded-proto",
            Self::ForwardedHost => "forwarded-host",
            Self::ForwardedFor => "forwarded-for",
            Self::XForwardedProto => "x-forwarded-proto",
            Self::XForwardedHost => "x-forwarded-host",
            Self::XForwardedPort => "x-forwarded-port",
            Self::XForwardedPrefix => "x-forwarded-prefix",
            Self::XForwardedFor => "x-forwarded-for",
        }
    }
}

impl fmt::Display for ForwardedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Parses a field's configuration name ([`ForwardedField::as_str`]), ignoring ASCII case and
/// surrounding white space.
///
/// ```
/// use tower_twilio::public_url::ForwardedField;
///
/// assert_eq!("X-Forwarded-Proto".parse(), Ok(ForwardedField::XForwardedProto));
/// assert!("x-real-ip".parse::<ForwardedField>().is_err());
/// ```
impl std::str::FromStr for ForwardedField {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let trimmed = name.trim();
        Self::ALL
            .into_iter()
            .find(|field| field.as_str().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| ConfigError::UnknownForwardedField {
                name: name.to_owned(),
            })
    }
}

impl Default for ForwardedHeaders {
    fn default() -> Self {
        Self::new()
    }
}

impl ForwardedHeaders {
    /// No proxies and no fields yet: until both are named, the request's own authority and
    /// the default scheme (`https`) are used.
    pub fn new() -> Self {
        Self {
            proxies: Vec::new(),
            fields: Vec::new(),
            default_scheme: Scheme::Https,
        }
    }

    /// Reads `field` from trusted proxies. Name only the fields your proxy sets (overwrites or
    /// appends to) on every request: a field it passes through is the client's to choose.
    #[must_use]
    pub fn read(mut self, field: ForwardedField) -> Self {
        if !self.fields.contains(&field) {
            self.fields.push(field);
        }
        self
    }

    fn reads(&self, field: ForwardedField) -> bool {
        self.fields.contains(&field)
    }

    /// Trusts the proxies in `network`: `"10.0.0.0/8".parse()?` (also `"::1/128"` or a bare
    /// address), or `ProxyNetwork::from(ip)`; see [`ProxyNetwork`].
    #[must_use]
    pub fn trust_proxy(mut self, network: ProxyNetwork) -> Self {
        self.proxies.push(network);
        self
    }

    /// The scheme when no trusted header names one (default `https`).
    #[must_use]
    pub fn default_scheme(mut self, scheme: Scheme) -> Self {
        self.default_scheme = scheme;
        self
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|network| network.contains(ip))
    }

    fn reconstruct(
        &self,
        parts: &Parts,
        path: &str,
        peer: Option<IpAddr>,
    ) -> Result<RebuiltUrl, UrlError> {
        let headers = &parts.headers;
        let trusted = !self.proxies.is_empty() && peer.is_some_and(|ip| self.is_trusted(ip));
        if !trusted {
            let host = request_authority(&parts.uri, headers)?;
            return Ok(RebuiltUrl {
                url: join(&[self.default_scheme.as_str(), "://", host, path]),
                client_ip: peer,
                userinfo: false,
            });
        }

        use ForwardedField as F;
        let mut proto: Option<Scheme> = None;
        let mut host: Option<String> = None;
        let mut client_ip = peer;
        let element = if self.reads(F::ForwardedProto)
            || self.reads(F::ForwardedHost)
            || self.reads(F::ForwardedFor)
        {
            self.chosen_forwarded_element(headers)?
        } else {
            None
        };
        if let Some(element) = element {
            if let Some(value) = element.proto.filter(|_| self.reads(F::ForwardedProto)) {
                proto = Some(Scheme::parse(&value).ok_or(UrlError::InvalidForwarded)?);
            }
            if let Some(value) = element.host.filter(|_| self.reads(F::ForwardedHost)) {
                if !valid_host(&value) {
                    return Err(UrlError::InvalidForwarded);
                }
                host = Some(value.into_owned());
            }
            if self.reads(F::ForwardedFor) && element.for_ip.is_some() {
                client_ip = element.for_ip;
            }
        }
        let mut port = None;
        let mut prefix = "";
        if proto.is_none()
            && self.reads(F::XForwardedProto)
            && let Some(value) = last_value(headers, &X_FORWARDED_PROTO)?
        {
            proto = Some(Scheme::parse(value).ok_or(UrlError::InvalidForwarded)?);
        }
        if host.is_none()
            && self.reads(F::XForwardedHost)
            && let Some(value) = last_value(headers, &X_FORWARDED_HOST)?
        {
            if !valid_host(value) {
                return Err(UrlError::InvalidForwarded);
            }
            host = Some(value.to_owned());
        }
        if self.reads(F::XForwardedPort)
            && let Some(value) = last_value(headers, &X_FORWARDED_PORT)?
        {
            if !valid_port(value) {
                return Err(UrlError::InvalidForwarded);
            }
            port = Some(value);
        }
        if self.reads(F::XForwardedPrefix)
            && let Some(value) = last_value(headers, &X_FORWARDED_PREFIX)?
        {
            prefix = path_prefix(value).ok_or(UrlError::InvalidForwarded)?;
        }
        if client_ip == peer && self.reads(F::XForwardedFor) {
            client_ip = self.x_forwarded_for(headers).or(peer);
        }

        let scheme = proto.unwrap_or(self.default_scheme);
        let host = match host {
            Some(host) => host,
            None => request_authority(&parts.uri, headers)?.to_owned(),
        };
        let host = match port {
            // X-Forwarded-Port replaces any port in the host.
            Some(port) => join(&[strip_port(&host), ":", port]),
            None => host,
        };
        Ok(RebuiltUrl {
            url: join(&[scheme.as_str(), "://", &host, prefix, path]),
            client_ip,
            userinfo: false,
        })
    }

    fn chosen_forwarded_element<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<ForwardedElement<'h>>, UrlError> {
        // From the nearest proxy outwards: skip elements added for connections from trusted
        // proxies; the first other one was written by the proxy the client reached.
        let (elements, more) = forwarded_elements(headers);
        let mut chosen = None;
        for element in elements {
            let element = ForwardedElement::parse(element?)?;
            let from_proxy = element.for_ip.is_some_and(|ip| self.is_trusted(ip));
            chosen = Some(element);
            if !from_proxy {
                return Ok(chosen);
            }
        }
        // More trusted hops than are read: which element is the client's cannot be told.
        if more {
            return Err(UrlError::InvalidForwarded);
        }
        Ok(chosen)
    }

    /// The client in `X-Forwarded-For`, as [`chosen_forwarded_element`] finds it in
    /// `Forwarded`: the first address from the end that is not a trusted proxy's, or the last
    /// one read when all are. Past [`MAX_FORWARDED_VALUES`] trusted hops which one is the
    /// client cannot be told: none is read from the header, and the peer stands, as for a
    /// malformed value. The request is not refused, as it is for `Forwarded`, whose element
    /// also carries the scheme and host the URL is built from.
    ///
    /// [`chosen_forwarded_element`]: Self::chosen_forwarded_element
    fn x_forwarded_for(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut chosen = None;
        for (read, value) in list_values_and_one_more(headers, &X_FORWARDED_FOR).enumerate() {
            if read == MAX_FORWARDED_VALUES {
                return None;
            }
            let ip = parse_node(value.ok()?)?;
            chosen = Some(ip);
            if !self.is_trusted(ip) {
                break;
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc7239() -> ForwardedHeaders {
        ForwardedHeaders::new()
            .read(ForwardedField::ForwardedProto)
            .read(ForwardedField::ForwardedHost)
            .read(ForwardedField::ForwardedFor)
    }

    fn x_forwarded() -> ForwardedHeaders {
        ForwardedHeaders::new()
            .read(ForwardedField::XForwardedProto)
            .read(ForwardedField::XForwardedHost)
            .read(ForwardedField::XForwardedPort)
            .read(ForwardedField::XForwardedPrefix)
            .read(ForwardedField::XForwardedFor)
    }

    fn both() -> ForwardedHeaders {
        let mut headers = x_forwarded();
        for field in [
            ForwardedField::ForwardedProto,
            ForwardedField::ForwardedHost,
            ForwardedField::ForwardedFor,
        ] {
            headers = headers.read(field);
        }
        headers
    }

    fn parts(target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::post(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    const PROXY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5)));
    const STRANGER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)));

    fn net(cidr: &str) -> ProxyNetwork {
        cidr.parse().unwrap()
    }

    fn forwarded(config: ForwardedHeaders) -> PublicUrl {
        PublicUrl::trust_forwarded(config.trust_proxy(net("10.0.0.0/8")))
    }

    fn url(
        public: &PublicUrl,
        target: &str,
        headers: &[(&str, &str)],
        peer: Option<IpAddr>,
    ) -> Result<String, UrlError> {
        public
            .reconstruct(&parts(target, headers), peer)
            .map(|r| r.url)
    }

    #[test]
    fn fixed_base_keeps_its_spelling_and_takes_the_raw_target() {
        let public = PublicUrl::fixed("https://Api.Example.com:8443/app/").unwrap();
        assert_eq!(
            url(
                &public,
                "/sms?b=2&a=%27x'+y",
                &[("host", "internal:3000")],
                None
            )
            .unwrap(),
            "https://Api.Example.com:8443/app/sms?b=2&a=%27x'+y"
        );
        // Forwarding headers mean nothing to a fixed base.
        assert_eq!(
            url(
                &public,
                "/sms",
                &[("x-forwarded-host", "evil.example")],
                PROXY
            )
            .unwrap(),
            "https://Api.Example.com:8443/app/sms"
        );
    }

    #[test]
    fn fixed_base_rejects_bad_configuration() {
        for bad in [
            "",
            "api.example.com",
            "ftp://example.com",
            "https://",
            "https://example.com/?a",
            "https://example.com/#f",
            "https://exa mple.com",
        ] {
            assert!(
                matches!(
                    PublicUrl::fixed(bad),
                    Err(ConfigError::InvalidPublicUrl { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(PublicUrl::fixed("https://user:pass@example.com").is_ok());
    }

    #[test]
    fn fixed_base_hosts_are_ascii() {
        for international in ["https://caf\u{e9}.example", "https://caf%C3%A9.example/app"] {
            let error = PublicUrl::fixed(international).unwrap_err();
            assert!(
                error.to_string().contains("use the punycode form"),
                "{international}: {error}"
            );
        }
        for ascii in [
            "https://xn--caf-dma.example",
            "HTTPS://Api.Example.COM:8443/app/",
            "http://[::1]:8080",
            "http://127.0.0.1",
        ] {
            assert!(PublicUrl::fixed(ascii).is_ok(), "{ascii}");
        }
    }

    #[test]
    fn request_host_table() {
        let public = PublicUrl::request_host(Scheme::Https);
        assert_eq!(
            url(&public, "/sms", &[("host", "example.com")], None).unwrap(),
            "https://example.com/sms"
        );
        // An absolute-form target's authority wins over Host.
        assert_eq!(
            url(
                &public,
                "http://Example.com:81/sms?x",
                &[("host", "other")],
                None
            )
            .unwrap(),
            "https://Example.com:81/sms?x"
        );
        assert_eq!(url(&public, "/sms", &[], None), Err(UrlError::MissingHost));
        assert_eq!(
            url(&public, "/sms", &[("host", "a"), ("host", "b")], None),
            Err(UrlError::DuplicateHost)
        );
        for bad in [
            "a/b",
            "a b",
            "user@host",
            "a?b",
            "",
            ":443",
            "host:80a",
            "host:65536",
            "a,b",
        ] {
            assert_eq!(
                url(&public, "/sms", &[("host", bad)], None),
                Err(UrlError::InvalidHost),
                "{bad:?}"
            );
        }
        // The target's authority is held to the same rule as Host.
        for bad in [
            "http://user@example.com/sms",
            "http://example.com:65536/sms",
        ] {
            assert_eq!(
                url(&public, bad, &[("host", "example.com")], None),
                Err(UrlError::InvalidHost),
                "{bad:?}"
            );
        }
        // Forwarding headers are never read.
        assert_eq!(
            url(
                &public,
                "/sms",
                &[("host", "example.com"), ("x-forwarded-host", "evil")],
                PROXY
            )
            .unwrap(),
            "https://example.com/sms"
        );
    }

    #[test]
    fn forwarded_headers_only_count_from_trusted_peers() {
        let public = forwarded(both());
        let spoof = [
            ("host", "internal:3000"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "proto=http;host=evil.example"),
        ];
        assert_eq!(
            url(&public, "/sms", &spoof, STRANGER).unwrap(),
            "https://internal:3000/sms"
        );
        assert_eq!(
            url(&public, "/sms", &spoof, None).unwrap(),
            "https://internal:3000/sms"
        );
        assert_eq!(
            url(&public, "/sms", &spoof, PROXY).unwrap(),
            "http://evil.example/sms"
        );
        // No proxies configured means nobody is trusted.
        let nobody = PublicUrl::trust_forwarded(both());
        assert_eq!(
            url(&nobody, "/sms", &spoof, PROXY).unwrap(),
            "https://internal:3000/sms"
        );
    }

    #[test]
    fn x_forwarded_table() {
        let public = forwarded(x_forwarded().default_scheme(Scheme::Http));
        let rows: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("host", "internal"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "api.example.com"),
                ],
                "https://api.example.com/sms",
            ),
            (
                &[("host", "internal"), ("x-forwarded-proto", "HTTPS")],
                "https://internal/sms",
            ),
            (
                &[
                    ("host", "internal:3000"),
                    ("x-forwarded-port", "8443"),
                    ("x-forwarded-host", "a.example:1"),
                ],
                "http://a.example:8443/sms",
            ),
            (
                &[("host", "internal"), ("x-forwarded-prefix", "/app/")],
                "http://internal/app/sms",
            ),
            // the last value is the nearest proxy's
            (
                &[("host", "internal"), ("x-forwarded-proto", "http, https")],
                "https://internal/sms",
            ),
            (
                &[
                    ("host", "internal"),
                    ("x-forwarded-host", "spoofed"),
                    ("x-forwarded-host", "real"),
                ],
                "http://real/sms",
            ),
            // RFC 7239 headers are not read in this mode
            (
                &[("host", "internal"), ("forwarded", "host=evil")],
                "http://internal/sms",
            ),
        ];
        for (headers, expected) in rows {
            assert_eq!(
                url(&public, "/sms", headers, PROXY).unwrap(),
                *expected,
                "{headers:?}"
            );
        }
        for bad in [
            ("x-forwarded-proto", "ftp"),
            ("x-forwarded-host", "a/b"),
            ("x-forwarded-host", "a@b"),
            ("x-forwarded-port", "80a"),
            ("x-forwarded-port", "65536"),
            ("x-forwarded-port", ""),
            ("x-forwarded-prefix", "//evil.example"),
            ("x-forwarded-host", "evil.example:80a"),
            ("x-forwarded-prefix", "app"),
            ("x-forwarded-prefix", "/a?b"),
        ] {
            assert_eq!(
                url(&public, "/sms", &[("host", "internal"), bad], PROXY),
                Err(UrlError::InvalidForwarded),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rfc7239_picks_the_element_the_client_reached() {
        let public = forwarded(rfc7239());
        let resolve = |value: &str| {
            public.reconstruct(
                &parts("/sms", &[("host", "internal"), ("forwarded", value)]),
                PROXY,
            )
        };
        let r = resolve("for=198.51.100.7;proto=https;host=api.example.com").unwrap();
        assert_eq!(r.url, "https://api.example.com/sms");
        assert_eq!(r.client_ip, "198.51.100.7".parse().ok());
        // The client forged the first element; the trusted proxy appended the real one.
        let r = resolve("for=1.1.1.1;host=evil, for=198.51.100.7;proto=https;host=api.example.com")
            .unwrap();
        assert_eq!(r.url, "https://api.example.com/sms");
        assert_eq!(r.client_ip, "198.51.100.7".parse().ok());
        // An inner proxy's element is skipped.
        let r = resolve(
            "for=\"[2001:db8::7]:443\";proto=https;host=api.example.com, for=10.0.0.9;host=inner",
        )
        .unwrap();
        assert_eq!(r.url, "https://api.example.com/sms");
        assert_eq!(r.client_ip, "2001:db8::7".parse().ok());
        // Quoted values with separators inside.
        let r = resolve("for=198.51.100.7;host=\"api.example.com:8443\"").unwrap();
        assert_eq!(r.url, "https://api.example.com:8443/sms");
        assert_eq!(
            resolve("for=1.2.3.4;proto=gopher").unwrap_err(),
            UrlError::InvalidForwarded
        );
        assert_eq!(
            resolve("for=1.2.3.4;host=\"a/b\"").unwrap_err(),
            UrlError::InvalidForwarded
        );
        assert_eq!(resolve("garbage").unwrap_err(), UrlError::InvalidForwarded);
        assert_eq!(
            resolve("host=\"unterminated").unwrap_err(),
            UrlError::InvalidForwarded
        );
    }

    #[test]
    fn client_ip_comes_from_the_trusted_chain() {
        let public = forwarded(x_forwarded());
        let r = public
            .reconstruct(
                &parts(
                    "/sms",
                    &[
                        ("host", "h"),
                        ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3"),
                    ],
                ),
                PROXY,
            )
            .unwrap();
        assert_eq!(r.client_ip, "198.51.100.7".parse().ok());
        let r = public
            .reconstruct(
                &parts("/sms", &[("host", "h"), ("x-forwarded-for", "6.6.6.6")]),
                STRANGER,
            )
            .unwrap();
        assert_eq!(r.client_ip, STRANGER);
    }

    #[test]
    fn past_the_bound_of_trusted_hops_no_client_is_named_and_forwarded_is_refused() {
        // Sixteen trusted hops are read; with a seventeenth the client is further out.
        let hops = |n: usize| {
            (0..n)
                .map(|i| format!("10.0.0.{}", i + 1))
                .collect::<Vec<_>>()
        };
        let client_ip = |chain: &str| {
            forwarded(x_forwarded())
                .reconstruct(
                    &parts("/sms", &[("host", "h"), ("x-forwarded-for", chain)]),
                    PROXY,
                )
                .map(|r| r.client_ip)
        };
        let within = format!("198.51.100.7, {}", hops(15).join(", "));
        assert_eq!(client_ip(&within), Ok("198.51.100.7".parse().ok()));
        let all_trusted = hops(16).join(", ");
        assert_eq!(client_ip(&all_trusted), Ok("10.0.0.1".parse().ok()));
        for past in [
            format!("198.51.100.7, {all_trusted}"),
            hops(17).join(", "),
            hops(1000).join(", "),
        ] {
            assert_eq!(
                client_ip(&past),
                Ok(PROXY),
                "the request passes, the peer stands"
            );
        }

        let forwarded_for = |n: usize| {
            let elements: Vec<_> = hops(n).iter().map(|ip| format!("for={ip}")).collect();
            forwarded(rfc7239()).reconstruct(
                &parts(
                    "/sms",
                    &[("host", "h"), ("forwarded", &elements.join(", "))],
                ),
                PROXY,
            )
        };
        assert!(forwarded_for(16).is_ok());
        assert_eq!(forwarded_for(17), Err(UrlError::InvalidForwarded));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let config = both().trust_proxy(net("10.0.0.0/8"));
        assert!(config.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!config.is_trusted("::ffff:11.1.2.3".parse().unwrap()));
    }

    #[test]
    fn targets_without_a_path_are_refused() {
        let public = PublicUrl::fixed("https://example.com").unwrap();
        let mut p = parts("/x", &[]);
        p.uri = Uri::from_static("example.com:443");
        assert_eq!(public.reconstruct(&p, None), Err(UrlError::NoPath));
    }

    #[test]
    fn only_the_fields_named_are_read_even_from_a_trusted_proxy() {
        let trusted = Some("10.0.0.1".parse().unwrap());
        let headers = [
            ("host", "internal:3000"),
            ("forwarded", "for=203.0.113.66;host=evil.example;proto=http"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "other.example"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-for", "198.51.100.7"),
        ];
        let rebuilt = |config: ForwardedHeaders| {
            forwarded(config.trust_proxy(net("10.0.0.0/8")))
                .reconstruct(&parts("/sms", &headers), trusted)
                .unwrap()
        };
        // nginx: proto and for, from X-Forwarded-*; the client's Forwarded is ignored.
        let nginx = rebuilt(
            ForwardedHeaders::new()
                .read(ForwardedField::XForwardedProto)
                .read(ForwardedField::XForwardedFor),
        );
        assert_eq!(nginx.url, "https://internal:3000/sms");
        assert_eq!(nginx.client_ip, "198.51.100.7".parse().ok());
        // Nothing named: a trusted proxy changes nothing.
        let none = rebuilt(ForwardedHeaders::new());
        assert_eq!(none.url, "https://internal:3000/sms");
        assert_eq!(none.client_ip, trusted);
        // Each field on its own.
        let rows = [
            (ForwardedField::ForwardedProto, "http://internal:3000/sms"),
            (ForwardedField::ForwardedHost, "https://evil.example/sms"),
            (ForwardedField::XForwardedHost, "https://other.example/sms"),
            (ForwardedField::XForwardedPort, "https://internal:8443/sms"),
            (
                ForwardedField::XForwardedPrefix,
                "https://internal:3000/evil/sms",
            ),
        ];
        for (field, url) in rows {
            assert_eq!(
                rebuilt(ForwardedHeaders::new().read(field)).url,
                url,
                "{field:?}"
            );
        }
        let client = rebuilt(ForwardedHeaders::new().read(ForwardedField::ForwardedFor));
        assert_eq!(client.client_ip, "203.0.113.66".parse().ok());
    }
}
