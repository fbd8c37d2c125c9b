//! The admin surface: the inspector page, its assets and actions, `/api/*` and `/metrics`.
//! Locked the way Jupyter's server locks its own (a token always, a known `Host` always),
//! because the webhook routes must be reachable from the internet, and so, through a tunnel or
//! proxy, is everything else on the port.
//!
//! - **A token, always**, on loopback too: behind ngrok every request comes from 127.0.0.1.
//!   It comes from `ADMIN_TOKEN` (never printed or logged), or is random and written to
//!   `.twilio-admin-token` (mode 0600, see [`secret_file`](crate::secret_file)). Every request
//!   to `/api/*`, `/metrics` and the inspector's actions carries it as `Authorization: Bearer
//!   <token>`, and nothing else is accepted: no cookie (cookies ignore ports, so a browser
//!   would send one to every other service on `localhost` too), no token in a URL (URLs end
//!   up in logs).
//! - **The inspector page holds the token in the browser tab**: its shell (`/`, its script and
//!   style, nothing from the database) needs no token; the page takes the token from the URL
//!   fragment (`/#token=<token>`, the URL the banner shows; a fragment is never sent to a
//!   server) or from a form, removes it from the address bar, keeps it in `sessionStorage` —
//!   scoped to this origin, port included, and to the tab — and sends it as a bearer header
//!   on its own requests. Other sites' pages and other local services never receive it.
//! - **A known `Host`**: a loopback name (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`),
//!   the address the server is bound to, or `PUBLIC_URL`'s host. Anything else gets `421
//!   Misdirected Request`, token or not: a page on another site that rebinds its own name to
//!   this server's address (DNS rebinding) is refused before anything is read.
//!
//! The webhook routes (`/twilio/*`) and `/healthz` are not part of it: they answer any `Host`
//! and need no token (the signature is their authentication).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header, uri::Authority},
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;
use tower_twilio::BoxError;

/// The shortest `ADMIN_TOKEN` accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Checks an `ADMIN_TOKEN`: long enough, and only characters that travel unchanged in a
/// header and a URL fragment.
pub fn check_token(token: &str) -> Result<(), BoxError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("ADMIN_TOKEN must be at least {MIN_TOKEN_LEN} characters long").into());
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err("ADMIN_TOKEN may contain only letters, digits and `-._~`".into());
    }
    Ok(())
}

/// The admin surface's lock: the token and the names it answers to.
#[derive(Clone)]
pub struct AdminGuard {
    token: Arc<str>,
    bound: IpAddr,
    public_host: Option<Arc<str>>,
}

impl std::fmt::Debug for AdminGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGuard")
            .field("bound", &self.bound)
            .field("public_host", &self.public_host)
            .finish_non_exhaustive()
    }
}

impl AdminGuard {
    /// The guard for a server bound to `bound`, whose public base URL (if fixed) is
    /// `public_base`.
    pub fn new(token: &str, bound: SocketAddr, public_base: Option<&str>) -> Self {
        let public_host = public_base
            .and_then(|base| url::Url::parse(base).ok())
            .and_then(|url| url.host_str().map(normalize));
        Self {
            token: Arc::from(token),
            bound: bound.ip(),
            public_host: public_host.map(Arc::from),
        }
    }

    /// Whether a request with this `Host` (port ignored) is meant for this server.
    pub fn allows_host(&self, host: &str) -> bool {
        // `host[:port]`, as `http` reads an authority (whatever follows a `:` is the port);
        // one with userinfo names nothing.
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        let name = normalize(authority.host());
        if name.is_empty() {
            return false;
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if self.public_host.as_deref() == Some(name.as_str()) {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => ip.is_loopback() || (!self.bound.is_unspecified() && ip == self.bound),
            Err(_) => false,
        }
    }

    fn matches(&self, candidate: &str) -> bool {
        bool::from(candidate.as_bytes().ct_eq(self.token.as_bytes()))
    }

    /// Whether the request carries the token in `Authorization: Bearer`.
    fn authorized(&self, request: &Request) -> bool {
        request
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|token| self.matches(token.trim()))
    }

    /// Whether the request's `Host` is one of this server's names.
    fn meant_for_us(&self, request: &Request) -> bool {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        host.is_some_and(|host| self.allows_host(host))
    }
}

/// `example.com.` and `EXAMPLE.com` are `example.com`.
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The middleware in front of the admin surface; see the module docs.
pub async fn guard(State(guard): State<AdminGuard>, request: Request, next: Next) -> Response {
    if !guard.meant_for_us(&request) {
        return misdirected();
    }
    if guard.authorized(&request) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"tower-twilio example server\"",
        )],
        "the admin token is missing or wrong: open the inspector at /#token=<token> (the token \
         is ADMIN_TOKEN, or the contents of .twilio-admin-token), or send Authorization: Bearer \
         <token>\n",
    )
        .into_response()
}

/// The middleware in front of the inspector page's shell (which holds no data and asks for
/// the token itself): the `Host` check only.
pub async fn host_only(State(guard): State<AdminGuard>, request: Request, next: Next) -> Response {
    if !guard.meant_for_us(&request) {
        return misdirected();
    }
    next.run(request).await
}

/// `421 Misdirected Request`, for a `Host` that is none of this server's names.
fn misdirected() -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected request: the admin pages answer only to localhost, the bound address and \
         PUBLIC_URL's host\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let guard = AdminGuard::new(
            "0123456789abcdef",
            "10.0.0.5:3000".parse().unwrap(),
            Some("https://Hooks.Example.com/base"),
        );
        for host in [
            "localhost",
            "LOCALHOST:3000",
            "app.localhost",
            "127.0.0.1",
            "127.8.9.10:80",
            "[::1]:3000",
            "[::1]",
            "10.0.0.5:3000",
            "hooks.example.com",
            "hooks.example.com.:443",
        ] {
            assert!(guard.allows_host(host), "{host}");
        }
        for host in [
            "",
            ":3000",
            "evil.example",
            "hooks.example.com.evil.example",
            "localhost.evil.example",
            "10.0.0.6",
            "127.0.0.1.nip.io",
            "[::2]",
            "0.0.0.0",
            "evil@localhost",
            "localhost.evil.example:80",
        ] {
            assert!(!guard.allows_host(host), "{host}");
        }
        let wildcard = AdminGuard::new("0123456789abcdef", "0.0.0.0:3000".parse().unwrap(), None);
        assert!(!wildcard.allows_host("0.0.0.0:3000"));
        assert!(wildcard.allows_host("127.0.0.1:3000"));
    }

    #[test]
    fn tokens() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("short").is_err());
        assert!(check_token("0123456789abcdef;x=1").is_err());
        assert!(check_token("0123456789 abcdef").is_err());
    }
}
