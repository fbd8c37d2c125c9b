//! Security events: what the middleware reports when it refuses a request (or, in report-only
//! mode, would have), and the sinks that receive them.
//!
//! A [`SecurityEvent`] never holds the secret, the received signature or the body; URLs are
//! shown without `user:password@`.
//!
//! Sinks implement [`OnSecurityEvent`]. Provided: [`TracingSink`] (the default), `()` (drop
//! everything), any `Fn(&SecurityEvent)`, and a pair `(A, B)` that sends each event to both.
//! A sink runs inline on the request path: keep it fast, and hand slow work (a database, an
//! HTTP call) to a channel or task of your own.

pub mod log;
#[cfg(feature = "sentry")]
mod sentry;
mod tracing_sink;

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use http::Method;

#[cfg(feature = "sentry")]
#[cfg_attr(docsrs, doc(cfg(feature = "sentry")))]
pub use self::sentry::SentrySink;
pub use self::tracing_sink::TracingSink;
use crate::rejection::RejectionKind;

/// One refused (or, in report-only mode, let-through) request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SecurityEvent {
    /// Why verification failed.
    pub reason: RejectionKind,
    /// Whether the request was refused, or passed on because report-only mode is on.
    pub outcome: Outcome,
    /// How serious this is.
    pub severity: Severity,
    /// Always `"twilio"`.
    pub provider: &'static str,
    /// The tenant the resolver named, if it got that far.
    pub tenant_id: Option<Arc<str>>,
    /// The request's unverified `AccountSid` parameter, if the body was read.
    pub account_sid: Option<String>,
    /// The real client: from the trusted forwarding chain, else the connecting peer.
    pub client_ip: Option<IpAddr>,
    /// The rebuilt public URL (without userinfo), or the raw request target when the URL could
    /// not be rebuilt.
    pub url: String,
    /// The request method.
    pub method: Method,
    /// The `User-Agent` header (Twilio sends `TwilioProxy/1.1`).
    pub user_agent: Option<String>,
    /// The `X-Request-Id` header, as set by tower-http's request-id middleware or a proxy.
    pub request_id: Option<String>,
    /// When the event happened.
    pub timestamp: SystemTime,
}

impl SecurityEvent {
    /// The event type name: the reason's name (`"signature_mismatch"`), or
    /// `"accepted_in_report_only_mode"`.
    pub fn event_type(&self) -> &'static str {
        match self.outcome {
            Outcome::Rejected => self.reason.as_str(),
            Outcome::PassedInReportOnlyMode => "accepted_in_report_only_mode",
        }
    }
}

/// What happened to the request an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Refused with the rejection response.
    Rejected,
    /// Failed verification but passed to the inner service because report-only mode is on.
    PassedInReportOnlyMode,
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// Noise that needs no action (an unreadable body, an oversize upload).
    Info,
    /// Probably not Twilio: scanners, missing or malformed headers.
    Warning,
    /// A forged or tampered request, an unknown account, a failed lookup, or verification off.
    Critical,
}

impl Severity {
    pub(crate) fn of(reason: RejectionKind, outcome: Outcome) -> Self {
        use RejectionKind::*;
        if outcome == Outcome::PassedInReportOnlyMode {
            return Self::Critical;
        }
        match reason {
            SignatureMismatch
            | BodyHashMismatch
            | UnknownAccount
            | UnknownSharedKey
            | ResolverFailed
            | ConflictingAccountSid
            | AccountMismatch => Self::Critical,
            BodyTooLarge | BodyReadFailed => Self::Info,
            _ => Self::Warning,
        }
    }

    /// `"info"`, `"warning"` or `"critical"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Receives security events.
pub trait OnSecurityEvent {
    /// Called once per refused (or report-only) request, on the request path.
    fn on_security_event(&self, event: &SecurityEvent);
}

impl OnSecurityEvent for () {
    fn on_security_event(&self, _event: &SecurityEvent) {}
}

/// `None` drops every event: a sink that is configured at run time.
impl<S> OnSecurityEvent for Option<S>
where
    S: OnSecurityEvent,
{
    fn on_security_event(&self, event: &SecurityEvent) {
        if let Some(sink) = self {
            sink.on_security_event(event);
        }
    }
}

impl<F> OnSecurityEvent for F
where
    F: Fn(&SecurityEvent),
{
    fn on_security_event(&self, event: &SecurityEvent) {
        self(event);
    }
}

impl<A, B> OnSecurityEvent for (A, B)
where
    A: OnSecurityEvent,
    B: OnSecurityEvent,
{
    fn on_security_event(&self, event: &SecurityEvent) {
        self.0.on_security_event(event);
        self.1.on_security_event(event);
    }
}
