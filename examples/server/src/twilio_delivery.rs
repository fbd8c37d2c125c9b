//! Twilio's delivery of one webhook, simulated: timeouts, retries and the Fallback URL as
//! Twilio's documentation describes them, so that a server can be tried against what Twilio
//! really does with its answers (the server's tests, and `send_webhook --deliver`).
//!
//! # What Twilio documents
//!
//! Twilio's [connection overrides](https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides)
//! are "passed on a per webhook URL basis in the form of fragments": `#ct=…&rt=…` after the
//! webhook URL, "key and value are separated by `=`, pairs are separated by `&`". As the page
//! reads (check its current version):
//!
//! | override | valid | default | the page says |
//! | --- | --- | --- | --- |
//! | `ct` connect timeout | 100–10000 ms | 5000 | "The timeout in milliseconds Twilio will wait to establish its TCP connection to your web server." |
//! | `rt` read timeout | 100–15000 ms | 15000 | "The amount of time in milliseconds after sending your webhook an HTTP request that Twilio will wait for the initial HTTP response packet. Also applies to the amount of time Twilio will wait between individual packets within your HTTP response." |
//! | `tt` total time | 100–15000 ms | 15000 | "The total time allowed for all timeouts including retries. If not set, the maximum limit is enforced." |
//! | `rc` retry count | 0–5 | 1 | "The number of retry attempts Twilio will make if its connection to your webhook fails. To make sure you capture the behaviors you need, make sure to set the Retry Policy (`rp`) value below accordingly." |
//! | `rp` retry policy | `4xx`, `5xx`, `ct`, `rt`, `all`, comma-separated | `ct,rt` | which failures are retried: a connection failure or timeout (`ct`), a read timeout (`rt`), an answer with a `4xx` or `5xx` status only when named |
//!
//! The page also lists `e` (the egress edge) and `sni`; they change nothing here and are
//! accepted and ignored. An unknown key or a value out of range is an error (Twilio's handling
//! of those is not documented; a test should not rely on it).
//!
//! Simulated as follows:
//!
//! - Each attempt opens a new TCP connection (within `ct`), sends the request, waits for the
//!   answer's head (within `rt`), then reads the body (each read within `rt`, as the page
//!   says; the body is capped at [`MAX_BODY`]). Every wait is also cut by what is left of
//!   `tt`, counted from the first attempt to this URL.
//! - A failed attempt is retried, up to `rc` times, when `rp` names its failure, with the
//!   **same** request: the same signature and the same `I-Twilio-Idempotency-Token` (a retry
//!   is the same delivery; a `<Redirect>` back to the same URL would be a new request with a
//!   new token: see [`Delivery::new`], one per request).
//! - When the primary URL's last attempt failed (no answer, or a status outside 2xx) and a
//!   Fallback URL is set, the fallback gets the webhook, signed for its own URL, with its own
//!   overrides (from its own fragment).
//!
//! # The fragment and the signature
//!
//! A fragment is never sent over HTTP (RFC 9110: it is not part of a request target), so a
//! server can only ever check the signature against the URL without it; this crate's layer
//! does. The simulator therefore signs the URL **without** its fragment. We found no Twilio
//! page that says which it signs; if Twilio signed the fragment too, no server-side
//! validator could verify a URL with connection overrides (see `TWILIO_SPEC.md` §4.5), and a
//! real number shows at once which it is (try `#rc=1` on a webhook URL and look at the
//! webhook log).

use std::{fmt, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};
use tower_twilio::BoxError;

use crate::twilio_presets::{Body, SignedRequest, Signer, sign_request};

/// The most of an answer's body the simulator reads (Twilio reads TwiML up to 64 KiB; a
/// larger body is an error here, as it is there).
pub const MAX_BODY: usize = 64 * 1024;

/// Which failures Twilio retries (`rp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `ct`: the connection failed or was not made within `ct`.
    pub connect: bool,
    /// `rt`: no answer (or no next part of it) within `rt`.
    pub read: bool,
    /// `4xx`: an answer with a 4xx status.
    pub client_errors: bool,
    /// `5xx`: an answer with a 5xx status.
    pub server_errors: bool,
}

impl RetryPolicy {
    /// `ct,rt`: timeouts and connection failures only. Twilio's default.
    pub const DEFAULT: Self = Self {
        connect: true,
        read: true,
        client_errors: false,
        server_errors: false,
    };

    /// Parses `rp`'s value: `4xx`, `5xx`, `ct`, `rt` or `all`, comma-separated.
    ///
    /// # Errors
    ///
    /// An empty or unknown item.
    pub fn parse(value: &str) -> Result<Self, BoxError> {
        let mut policy = Self {
            connect: false,
            read: false,
            client_errors: false,
            server_errors: false,
        };
        for item in value.split(',') {
            match item.trim() {
                "ct" => policy.connect = true,
                "rt" => policy.read = true,
                "4xx" => policy.client_errors = true,
                "5xx" => policy.server_errors = true,
                "all" => {
                    policy = Self {
                        connect: true,
                        read: true,
                        client_errors: true,
                        server_errors: true,
                    }
                }
                other => {
                    return Err(format!("rp: {other:?} is not one of 4xx, 5xx, ct, rt, all").into());
                }
            }
        }
        Ok(policy)
    }

    /// Whether Twilio tries again after `outcome`.
    pub fn retries(self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::ConnectFailed(_) | Outcome::ConnectTimedOut => self.connect,
            Outcome::ReadTimedOut | Outcome::ReadFailed(_) => self.read,
            Outcome::Answered(answer) if answer.status.is_client_error() => self.client_errors,
            Outcome::Answered(answer) if answer.status.is_server_error() => self.server_errors,
            Outcome::Answered(_) | Outcome::OutOfTime => false,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A webhook URL's connection overrides (`#ct=…&rt=…&tt=…&rc=…&rp=…`), or Twilio's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overrides {
    /// `ct`: how long the TCP connection may take (default 5000 ms).
    pub connect_timeout: Duration,
    /// `rt`: how long the answer's head, and each later part, may take (default 15000 ms).
    pub read_timeout: Duration,
    /// `tt`: the time for all attempts to this URL (default 15000 ms).
    pub total_time: Duration,
    /// `rc`: how many times a failed attempt is tried again (default 1).
    pub retry_count: u32,
    /// `rp`: which failures are tried again (default `ct,rt`).
    pub retry_policy: RetryPolicy,
}

impl Overrides {
    /// Twilio's defaults: `ct=5000&rt=15000&tt=15000&rc=1&rp=ct,rt`.
    pub const DEFAULT: Self = Self {
        connect_timeout: Duration::from_millis(5000),
        read_timeout: Duration::from_millis(15_000),
        total_time: Duration::from_millis(15_000),
        retry_count: 1,
        retry_policy: RetryPolicy::DEFAULT,
    };

    /// Parses a fragment (without its `#`), read as a form (`key=value&…`, as the page
    /// describes it); an empty one is the defaults.
    ///
    /// # Errors
    ///
    /// An unknown key, a value that is not a number or is out of the documented range.
    pub fn parse(fragment: &str) -> Result<Self, BoxError> {
        let mut overrides = Self::DEFAULT;
        for (key, value) in form_urlencoded::parse(fragment.as_bytes()) {
            let number = |max: u64| value.parse::<u64>().ok().filter(|n| *n <= max);
            let millis = |min: u64, max: u64| match number(max).filter(|ms| *ms >= min) {
                Some(ms) => Ok(Duration::from_millis(ms)),
                None => Err(format!(
                    "connection override {key}: {value:?} is not a number of milliseconds from {min} to {max}"
                )),
            };
            match &*key {
                "ct" => overrides.connect_timeout = millis(100, 10_000)?,
                "rt" => overrides.read_timeout = millis(100, 15_000)?,
                "tt" => overrides.total_time = millis(100, 15_000)?,
                "rc" => {
                    overrides.retry_count = number(5)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            format!("connection override rc: {value:?} is not a count from 0 to 5")
                        })?;
                }
                "rp" => overrides.retry_policy = RetryPolicy::parse(&value)?,
                // The egress edge and SNI: nothing to simulate.
                "e" | "sni" => {}
                other => return Err(format!("unknown connection override {other:?}").into()),
            }
        }
        Ok(overrides)
    }
}

impl Default for Overrides {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `url` split at its fragment: the URL Twilio requests (and, as far as a server can tell,
/// signs), and the fragment without its `#`, if any.
pub fn split_fragment(url: &str) -> (&str, Option<&str>) {
    match url.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (url, None),
    }
}

/// One webhook URL, as Twilio would request it.
#[derive(Clone, Debug)]
pub struct Target {
    /// The request, signed for the URL without its fragment.
    pub request: SignedRequest,
    /// The overrides from the URL's fragment.
    pub overrides: Overrides,
    /// Where to connect (`host:port`): the URL's own host, unless told otherwise. With more
    /// than one address, attempt N goes to the Nth (round robin), as through a load balancer.
    pub connect: Vec<String>,
}

impl Target {
    /// Signs `body` for `url` (its fragment parsed as overrides and left out of what is signed
    /// and requested).
    ///
    /// # Errors
    ///
    /// A bad fragment; a URL that is not plain `http` with a host (give [`connect`](Self::connect)
    /// for a tunnel's `https` URL).
    pub fn new(url: &str, body: Body, signer: Signer<'_>) -> Result<Self, BoxError> {
        let (url, fragment) = split_fragment(url);
        let overrides = Overrides::parse(fragment.unwrap_or_default())?;
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let connect = match (
            parsed.scheme(),
            parsed.host_str(),
            parsed.port_or_known_default(),
        ) {
            (_, Some(host), Some(port)) => {
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            }
            _ => return Err(format!("{url:?} has no host").into()),
        };
        Ok(Self {
            request: sign_request(url, body, signer),
            overrides,
            connect: vec![connect],
        })
    }

    /// Connects to `address` (`host:port`) instead of the URL's host, as through a tunnel or a
    /// proxy; the `Host` header still names the URL's host.
    #[must_use]
    pub fn connect(mut self, address: impl Into<String>) -> Self {
        self.connect = vec![address.into()];
        self
    }

    /// Spreads the attempts over `addresses` (`host:port` each), one after the other, as a
    /// load balancer in front of several instances would: a retry reaches another instance.
    /// The `Host` header still names the URL's host.
    ///
    /// # Panics
    ///
    /// When `addresses` is empty.
    #[must_use]
    pub fn balance(mut self, addresses: impl IntoIterator<Item = String>) -> Self {
        self.connect = addresses.into_iter().collect();
        assert!(!self.connect.is_empty(), "balance over no address");
        self
    }
}

/// What Twilio read from one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer, read whole.
    Answered(Answer),
    /// The connection was refused or broke before the request was sent.
    ConnectFailed(String),
    /// No connection within `ct`.
    ConnectTimedOut,
    /// No answer (or no next part of it) within `rt`.
    ReadTimedOut,
    /// The connection broke, or the answer was malformed or too large, after the request was
    /// sent.
    ReadFailed(String),
    /// `tt` ran out before this attempt could start.
    OutOfTime,
}

impl Outcome {
    /// The answer, if one was read.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Self::Answered(answer) => Some(answer),
            _ => None,
        }
    }

    /// An answer with a 2xx status.
    pub fn succeeded(&self) -> bool {
        self.answer().is_some_and(|a| a.status.is_success())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Answered(answer) => write!(f, "answered {}", answer.status),
            Self::ConnectFailed(error) => write!(f, "connection failed: {error}"),
            Self::ConnectTimedOut => f.write_str("connect timeout (ct)"),
            Self::ReadTimedOut => f.write_str("read timeout (rt)"),
            Self::ReadFailed(error) => write!(f, "reading the answer failed: {error}"),
            Self::OutOfTime => f.write_str("total time (tt) ran out"),
        }
    }
}

/// An answer as Twilio read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// `true` for an attempt to the Fallback URL.
    pub fallback: bool,
    /// The `I-Twilio-Idempotency-Token` it carried.
    pub idempotency_token: Option<String>,
    /// What came of it.
    pub outcome: Outcome,
    /// How long it took.
    pub took: Duration,
}

/// One webhook's delivery: the primary URL and, optionally, the Fallback URL.
#[derive(Clone, Debug)]
pub struct Delivery {
    primary: Target,
    fallback: Option<Target>,
}

/// What a [`Delivery`] came to: every attempt, in order.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// Every attempt, primary first, then the fallback's.
    pub attempts: Vec<Attempt>,
}

impl Delivered {
    /// The answer Twilio acted on: the last attempt's, when it succeeded (2xx).
    pub fn answer(&self) -> Option<&Answer> {
        self.attempts
            .last()
            .filter(|attempt| attempt.outcome.succeeded())
            .and_then(|attempt| attempt.outcome.answer())
    }
}

impl fmt::Display for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, attempt) in self.attempts.iter().enumerate() {
            writeln!(
                f,
                "attempt {}{}: {} after {} ms",
                n + 1,
                if attempt.fallback { " (fallback)" } else { "" },
                attempt.outcome,
                attempt.took.as_millis()
            )?;
        }
        Ok(())
    }
}

impl Delivery {
    /// A delivery of `primary`'s request. One `Delivery` is one request of Twilio's: its
    /// retries carry the same idempotency token; a new request (a `<Redirect>` to the same
    /// URL) is a new `Delivery`.
    pub const fn new(primary: Target) -> Self {
        Self {
            primary,
            fallback: None,
        }
    }

    /// The Fallback URL's request, tried when the primary's last attempt failed.
    #[must_use]
    pub fn fallback(mut self, fallback: Target) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// The primary URL's request.
    pub const fn primary(&self) -> &Target {
        &self.primary
    }

    /// Delivers the webhook: the primary URL with its retries, then the fallback if the
    /// primary failed. Never errs: every failure is an attempt's [`Outcome`].
    pub async fn deliver(&self) -> Delivered {
        let mut attempts = Vec::new();
        try_target(&self.primary, false, &mut attempts).await;
        if let Some(fallback) = &self.fallback
            && !attempts.last().is_some_and(|a| a.outcome.succeeded())
        {
            try_target(fallback, true, &mut attempts).await;
        }
        Delivered { attempts }
    }
}

/// The attempts to one URL: the first, then a retry after each failure `rp` names, up to `rc`,
/// within `tt`.
async fn try_target(target: &Target, fallback: bool, attempts: &mut Vec<Attempt>) {
    let overrides = target.overrides;
    let deadline = Instant::now() + overrides.total_time;
    for n in 0..=overrides.retry_count as usize {
        let started = Instant::now();
        let address = target.connect.get(n % target.connect.len().max(1));
        let outcome = match address {
            _ if started >= deadline => Outcome::OutOfTime,
            None => Outcome::ConnectFailed("no address to connect to".to_owned()),
            Some(address) => attempt(target, address, deadline).await,
        };
        let retry = overrides.retry_policy.retries(&outcome);
        attempts.push(Attempt {
            fallback,
            idempotency_token: target
                .request
                .header(tower_twilio::signature::IDEMPOTENCY_TOKEN_HEADER)
                .map(str::to_owned),
            outcome,
            took: started.elapsed(),
        });
        if !retry {
            break;
        }
    }
}

/// One attempt: connect within `ct`, the answer's head within `rt`, each part of the body
/// within `rt`; every wait cut at `deadline` (`tt`).
async fn attempt(target: &Target, address: &str, deadline: Instant) -> Outcome {
    let overrides = target.overrides;
    let within = |limit: Duration| (Instant::now() + limit).min(deadline);

    let stream = match tokio::time::timeout_at(
        within(overrides.connect_timeout),
        TcpStream::connect(address),
    )
    .await
    {
        Err(_) => return Outcome::ConnectTimedOut,
        Ok(Err(error)) => return Outcome::ConnectFailed(error.to_string()),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let request = match build_request(&target.request) {
        Ok(request) => request,
        Err(error) => return Outcome::ConnectFailed(error.to_string()),
    };

    // HTTP/1.1 over this connection, driven by a task of its own that ends with the attempt:
    // a timed-out attempt closes its connection, as Twilio's does.
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(error) => return Outcome::ConnectFailed(error.to_string()),
        };
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));

    let response =
        match tokio::time::timeout_at(within(overrides.read_timeout), sender.send_request(request))
            .await
        {
            Err(_) => return Outcome::ReadTimedOut,
            Ok(Err(error)) => return Outcome::ReadFailed(error.to_string()),
            Ok(Ok(response)) => response,
        };
    let (parts, mut body) = response.into_parts();
    let mut read = BytesMut::new();
    loop {
        let frame =
            match tokio::time::timeout_at(within(overrides.read_timeout), body.frame()).await {
                Err(_) => return Outcome::ReadTimedOut,
                Ok(None) => break,
                Ok(Some(Err(error))) => return Outcome::ReadFailed(error.to_string()),
                Ok(Some(Ok(frame))) => frame,
            };
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > MAX_BODY {
                return Outcome::ReadFailed(format!("the answer is larger than {MAX_BODY} bytes"));
            }
            read.extend_from_slice(&data);
        }
    }
    Outcome::Answered(Answer {
        status: parts.status,
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: read.freeze(),
    })
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The request as sent: the URL's path and query, `Host` naming the URL's host, the signed
/// headers and body.
fn build_request(signed: &SignedRequest) -> Result<Request<Full<Bytes>>, BoxError> {
    let url = url::Url::parse(&signed.url)?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err("the URL has no host".into()),
    };
    let mut request = Request::builder()
        .method(signed.method)
        .uri(signed.path_and_query())
        .header(header::HOST, host);
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    Ok(request.body(Full::new(Bytes::from(signed.body.clone())))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_holds_the_overrides_and_is_not_part_of_the_url() {
        assert_eq!(
            split_fragment("https://x.example/twilio/voice?step=main#rt=2000&rc=1"),
            (
                "https://x.example/twilio/voice?step=main",
                Some("rt=2000&rc=1")
            )
        );
        assert_eq!(Overrides::parse("").unwrap(), Overrides::DEFAULT);
        let o = Overrides::parse("ct=100&rt=2000&tt=9000&rc=3&rp=rt,5xx&e=ashburn&sni=y").unwrap();
        assert_eq!(o.connect_timeout, Duration::from_millis(100));
        assert_eq!(o.read_timeout, Duration::from_millis(2000));
        assert_eq!(o.total_time, Duration::from_millis(9000));
        assert_eq!(o.retry_count, 3);
        assert_eq!(
            o.retry_policy,
            RetryPolicy {
                connect: false,
                read: true,
                client_errors: false,
                server_errors: true
            }
        );
        for bad in [
            "ct=99", "rt=15001", "rc=6", "rp=6xx", "rp=", "xx=1", "rt", "tt=abc",
        ] {
            assert!(Overrides::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn by_default_only_timeouts_and_connection_failures_are_retried() {
        let policy = RetryPolicy::DEFAULT;
        let answered = |status: u16| {
            Outcome::Answered(Answer {
                status: StatusCode::from_u16(status).unwrap(),
                content_type: None,
                body: Bytes::new(),
            })
        };
        assert!(policy.retries(&Outcome::ReadTimedOut));
        assert!(policy.retries(&Outcome::ConnectTimedOut));
        assert!(policy.retries(&Outcome::ConnectFailed("refused".into())));
        for status in [200, 409, 503] {
            assert!(!policy.retries(&answered(status)), "{status}");
        }
        let all = RetryPolicy::parse("all").unwrap();
        assert!(all.retries(&answered(409)) && all.retries(&answered(503)));
        assert!(!all.retries(&answered(200)));
    }
}
