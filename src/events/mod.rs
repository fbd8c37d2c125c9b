//! Security events: what the middleware reports when it refuses a request (or, in report-only
//! mode, would have), and the sinks that receive them.
//!
//! A [`SecurityEvent`] never holds the secret, the received signature or the body; URLs are
//! shown without `user:password@` and with the values of their query redacted
//! (`?From=[redacted]&Body=[redacted]`): webhook parameters (phone numbers, message bodies,
//! one-time codes) reach no sink.
//!
//! Sinks implement [`OnSecurityEvent`]. Provided: [`TracingSink`] (the default), `()` (drop
//! everything), any `Fn(&SecurityEvent)`, and a pair `(A, B)` that sends each event to both.
//! A sink runs inline on the request path: keep it fast, and hand slow work (a database, an
//! HTTP call) to a channel or task of your own. The one exception is the
//! [mismatch doctor](crate::doctor)'s follow-up ([`Outcome::Diagnosed`]), reported from the
//! doctor's own thread after the response: which is why a sink is `Send + Sync + 'static`.

pub mod log;
#[cfg(feature = "sentry")]
mod sentry;
mod tracing_sink;

use std::{borrow::Cow, net::IpAddr, sync::Arc, time::SystemTime};

use http::{HeaderMap, HeaderName, Method, header, request::Parts};

#[cfg(feature = "sentry")]
#[cfg_attr(docsrs, doc(cfg(feature = "sentry")))]
pub use self::sentry::SentrySink;
pub use self::tracing_sink::TracingSink;
use crate::{
    doctor::Diagnosis, rejection::RejectionKind, url::rebuilt::RebuiltUrl,
    url::redact::redact_url_within,
};

/// The `tracing` target of every security event and of the report-only warning, and the
/// Sentry logger name: `"tower_twilio::security"`. Filter on it to route the security log
/// (`RUST_LOG=tower_twilio::security=info`).
pub const TRACING_TARGET: &str = "tower_twilio::security";

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
    pub account_sid: Option<Arc<str>>,
    /// The real client: from the trusted forwarding chain, else the connecting peer.
    pub client_ip: Option<IpAddr>,
    /// The rebuilt public URL, or the raw request target when the URL could not be rebuilt:
    /// without userinfo, and with the values of its query redacted (its names kept); at most
    /// 2048 bytes of it, ending in `…` when cut.
    pub url: String,
    /// The request method.
    pub method: Method,
    /// The `User-Agent` header (Twilio sends `TwilioProxy/1.1`): at most 256 bytes of it,
    /// ending in `…` when cut.
    pub user_agent: Option<String>,
    /// The `X-Request-Id` header, as set by tower-http's request-id middleware or a proxy: at
    /// most 256 bytes of it, ending in `…` when cut.
    pub request_id: Option<String>,
    /// When the event happened.
    pub timestamp: SystemTime,
    /// On an [`Outcome::Diagnosed`] event, the [mismatch doctor](crate::doctor)'s finding: the
    /// URL the signature matches and what to configure. `None` on every other event.
    pub diagnosis: Option<Arc<Diagnosis>>,
}

/// The request id header tower-http's `SetRequestIdLayer` and most proxies set.
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

impl SecurityEvent {
    /// The event about one request, stamped now. `url` is shown without its userinfo and
    /// with its query's values redacted.
    pub(crate) fn new(
        reason: RejectionKind,
        outcome: Outcome,
        parts: &Parts,
        url: &RebuiltUrl,
        tenant_id: Option<Arc<str>>,
        account_sid: Option<Arc<str>>,
    ) -> Self {
        let request = (&parts.method, &parts.headers);
        let about = (tenant_id, account_sid);
        Self::about(reason, outcome, request, &url.url, url.client_ip, about)
    }

    /// The event about a request known by its method and headers, at `url`, from
    /// `client_ip`, of (`tenant_id`, `account_sid`), stamped now. `url` is shown without its
    /// userinfo and with its query's values redacted.
    pub(crate) fn about(
        reason: RejectionKind,
        outcome: Outcome,
        (method, headers): (&Method, &HeaderMap),
        url: &str,
        client_ip: Option<IpAddr>,
        (tenant_id, account_sid): (Option<Arc<str>>, Option<Arc<str>>),
    ) -> Self {
        Self {
            reason,
            outcome,
            severity: Severity::of(reason, outcome),
            provider: "twilio",
            tenant_id,
            account_sid,
            client_ip,
            url: bounded_cow(redact_url_within(url, MAX_EVENT_URL), MAX_EVENT_URL),
            method: method.clone(),
            user_agent: header_text(headers, &header::USER_AGENT),
            request_id: header_text(headers, &REQUEST_ID_HEADER),
            timestamp: SystemTime::now(),
            diagnosis: None,
        }
    }

    /// The event type name: the reason's name (`"signature_mismatch"`, `"replay_copy"`,
    /// `"replay_store_failed"`), `"passed_in_report_only_mode"`, or `"mismatch_diagnosed"`.
    pub fn event_type(&self) -> &'static str {
        match self.outcome {
            Outcome::Rejected | Outcome::Copy | Outcome::PassedWithoutReplayCheck => {
                self.reason.as_str()
            }
            Outcome::PassedInReportOnlyMode => Outcome::PassedInReportOnlyMode.as_str(),
            Outcome::Diagnosed => "mismatch_diagnosed",
        }
    }

    /// The follow-up of this event: the mismatch doctor's diagnosis of the same request,
    /// stamped now.
    pub(crate) fn diagnosed(mut self, diagnosis: Arc<Diagnosis>) -> Self {
        self.outcome = Outcome::Diagnosed;
        self.severity = Severity::of(self.reason, Outcome::Diagnosed);
        self.diagnosis = Some(diagnosis);
        self.timestamp = SystemTime::now();
        self
    }
}

/// A header's value as text (invalid UTF-8 replaced), for events and the webhook log.
pub(crate) fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let value = headers.get(name)?.as_bytes();
    // Decoded from no more bytes than are kept; a byte that is not UTF-8 becomes three
    // (U+FFFD), so the text is cut again after decoding.
    let kept = &value[..value.len().min(MAX_HEADER_TEXT)];
    let mut text = bounded(String::from_utf8_lossy(kept).into_owned(), MAX_HEADER_TEXT);
    if kept.len() < value.len() && !text.ends_with(CUT) {
        text.push(CUT);
    }
    Some(text)
}

/// The first `max` bytes of `text` (see [`bounded`]), copied.
pub(crate) fn bounded_text(text: &str, max: usize) -> String {
    let end = cut_point(text, max);
    let mut out = text[..end].to_owned();
    if end < text.len() {
        out.push(CUT);
    }
    out
}

/// `text` cut to `max` bytes (see [`bounded`]), copying no more of it than is kept.
pub(crate) fn bounded_cow(text: Cow<'_, str>, max: usize) -> String {
    match text {
        Cow::Borrowed(text) => bounded_text(text, max),
        Cow::Owned(text) => bounded(text, max),
    }
}

/// The most bytes of a header's value an event or a webhook log entry keeps: a `User-Agent`
/// or a request id is short, and a request that sends 60 KB of one must not have it copied
/// into every event, log line and Sentry report. A longer value is cut and ends in [`CUT`].
pub(crate) const MAX_HEADER_TEXT: usize = 256;

/// The most bytes of its URL an event keeps (the query's values are redacted first); a
/// longer one is cut and ends in [`CUT`]. Twilio's URLs are far shorter.
pub(crate) const MAX_EVENT_URL: usize = 2048;

/// What ends a text an event or a log entry had to cut.
pub(crate) const CUT: char = '…';

/// `text`, cut to at most `max` bytes (at a character boundary) and marked with [`CUT`] when it
/// was longer.
pub(crate) fn bounded(mut text: String, max: usize) -> String {
    let end = cut_point(&text, max);
    if end < text.len() {
        text.truncate(end);
        text.push(CUT);
    }
    text
}

/// Where `text` is cut to keep at most `max` bytes: its length, or the last character boundary
/// at or before `max`.
fn cut_point(text: &str, max: usize) -> usize {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// What happened to the request an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Refused with the rejection response.
    Rejected,
    /// Failed verification but passed to the inner service because report-only mode is on.
    PassedInReportOnlyMode,
    /// Verified, but a copy of a webhook already processed: answered by the
    /// [replay guard](crate::replay_guard) with the first answer, without calling the inner
    /// service.
    Copy,
    /// Verified, but the replay store failed: passed to the inner service without the replay
    /// check ([`StoreFailure::RunUnguarded`](crate::replay_guard::StoreFailure::RunUnguarded),
    /// the default), or processed but not recorded (whatever the mode), so a later copy runs
    /// again.
    PassedWithoutReplayCheck,
    /// Not a second verdict: the [mismatch doctor](crate::doctor)'s diagnosis of a request
    /// already refused (or passed in report-only mode) for a signature mismatch, in
    /// [`SecurityEvent::diagnosis`]. It follows that request's event, from the doctor's
    /// thread, with the same URL, request id, tenant and account; its `reason` is the refusal's.
    Diagnosed,
}

impl Outcome {
    /// `"rejected"`, `"passed_in_report_only_mode"`, `"copy"`,
    /// `"passed_without_replay_check"` or `"diagnosed"`: where the webhook log has the same
    /// outcome, the same words as [`WebhookOutcome::as_str`](log::WebhookOutcome::as_str).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::PassedInReportOnlyMode => "passed_in_report_only_mode",
            Self::Copy => "copy",
            Self::PassedWithoutReplayCheck => "passed_without_replay_check",
            Self::Diagnosed => "diagnosed",
        }
    }
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// Noise that needs no action (an unreadable body, an oversize upload, a copy or a
    /// retry the replay guard caught).
    Info,
    /// Probably not Twilio: scanners, missing or malformed headers.
    Warning,
    /// A forged or tampered request, an unknown account, a failed lookup or replay store, or
    /// verification off.
    Critical,
}

impl Severity {
    pub(crate) fn of(reason: RejectionKind, outcome: Outcome) -> Self {
        use RejectionKind::*;
        if matches!(
            outcome,
            Outcome::PassedInReportOnlyMode | Outcome::PassedWithoutReplayCheck
        ) {
            return Self::Critical;
        }
        match reason {
            SignatureMismatch
            | BodyHashMismatch
            | UnknownAccount
            | UnknownSharedKey
            | ResolverFailed
            | ConflictingAccountSid
            | AccountMismatch
            | ReplayStoreFailed
            | ReplayGuardMisplaced => Self::Critical,
            BodyTooLarge | TooManyParameters | BodyReadFailed | ReplayCopy => Self::Info,
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
    /// Called once per refused (or report-only) request, on the request path; and, for a
    /// signature mismatch the mismatch doctor explains, once more from the doctor's thread
    /// ([`Outcome::Diagnosed`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &[u8])]) -> Parts {
        let mut request = http::Request::post("/twilio/sms");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn an_event_names_the_request_without_secrets() {
        let parts = parts(&[
            ("user-agent", b"TwilioProxy/1.1"),
            ("x-request-id", b"req-\xff"),
            ("x-twilio-signature", b"c2lnbmF0dXJl"),
        ]);
        let url = RebuiltUrl::new(
            "https://user:hunter2@api.example.com/twilio/sms".to_owned(),
            Some([198, 51, 100, 7].into()),
        );
        let event = SecurityEvent::new(
            RejectionKind::SignatureMismatch,
            Outcome::Rejected,
            &parts,
            &url,
            Some("acme".into()),
            Some("AC0123".into()),
        );
        assert_eq!(event.url, "https://[redacted]@api.example.com/twilio/sms");
        assert_eq!(event.client_ip, Some([198, 51, 100, 7].into()));
        assert_eq!(event.method, Method::POST);
        assert_eq!(event.user_agent.as_deref(), Some("TwilioProxy/1.1"));
        assert_eq!(event.request_id.as_deref(), Some("req-\u{fffd}"));
        assert_eq!(event.tenant_id.as_deref(), Some("acme"));
        assert_eq!(event.account_sid.as_deref(), Some("AC0123"));
        assert_eq!(event.severity, Severity::Critical);
        assert_eq!(event.event_type(), "signature_mismatch");
        let shown = format!("{event:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("c2lnbmF0dXJl"),
            "{shown}"
        );
    }

    #[test]
    fn an_event_keeps_a_bounded_part_of_long_headers_and_urls() {
        let agent = "a".repeat(10_000);
        let id = "é".repeat(5_000);
        let parts = parts(&[
            ("user-agent", agent.as_bytes()),
            ("x-request-id", id.as_bytes()),
        ]);
        let query: Vec<_> = (0..6_000).map(|i| format!("n{i}=v")).collect();
        let url = format!("https://api.example.com/twilio/sms?{}", query.join("&"));
        let event = SecurityEvent::new(
            RejectionKind::SignatureMismatch,
            Outcome::Rejected,
            &parts,
            &RebuiltUrl::new(url, None),
            None,
            None,
        );
        let user_agent = event.user_agent.unwrap();
        assert_eq!(user_agent, format!("{}…", "a".repeat(MAX_HEADER_TEXT)));
        // Cut inside a two-byte character: the half is replaced, and the text is still marked.
        let request_id = event.request_id.unwrap();
        assert!(request_id.len() <= MAX_HEADER_TEXT + 2 * CUT.len_utf8() + 1);
        assert!(request_id.starts_with("éé") && request_id.ends_with(CUT));
        assert!(
            event.url.len() <= MAX_EVENT_URL + CUT.len_utf8(),
            "{}",
            event.url.len()
        );
        assert!(
            event
                .url
                .starts_with("https://api.example.com/twilio/sms?n0=[redacted]&n1=")
        );
        assert!(event.url.ends_with(CUT));
        // Short values are kept whole, unmarked.
        let short = parts_with_agent("TwilioProxy/1.1");
        assert_eq!(
            header_text(&short.headers, &header::USER_AGENT).unwrap(),
            "TwilioProxy/1.1"
        );
    }

    #[test]
    fn a_url_redacted_within_the_bound_is_cut_as_the_whole_redaction_would_be() {
        use crate::url::redact::{redact_query, redact_query_within, redact_url};
        let urls = [
            "https://a.example/sms".to_owned(),
            "https://u:p@a.example/sms?From=%2B1&Body=Hi&Empty=&&flag#frag".to_owned(),
            format!("https://a.example/sms?{}", "a&".repeat(300)),
            format!("https://a.example/sms?{}#f", "é=ü&".repeat(200)),
            format!("https://a.example/{}?x=1", "p".repeat(90)),
            format!("https://a.example/sms?{}", "n=&".repeat(100)),
        ];
        for url in &urls {
            for max in [0, 1, 20, 21, 22, 33, 64, 100, 101, 255, 4096] {
                let whole = bounded(redact_url(url).into_owned(), max);
                let within = bounded_cow(redact_url_within(url, max), max);
                assert_eq!(within, whole, "{url} within {max}");
                let query = url.split_once('?').map_or("", |(_, query)| query);
                let whole = bounded(redact_query(query).into_owned(), max);
                let within = bounded_cow(redact_query_within(query, max), max);
                assert_eq!(within, whole, "{query} within {max}");
            }
        }
    }

    fn parts_with_agent(agent: &str) -> Parts {
        parts(&[("user-agent", agent.as_bytes())])
    }

    #[test]
    fn report_only_events_are_critical_and_say_so() {
        let event = SecurityEvent::new(
            RejectionKind::MissingSignature,
            Outcome::PassedInReportOnlyMode,
            &parts(&[]),
            &RebuiltUrl::new("https://api.example.com/sms".to_owned(), None),
            None,
            None,
        );
        assert_eq!(event.severity, Severity::Critical);
        assert_eq!(event.event_type(), "passed_in_report_only_mode");
        assert_eq!(event.outcome.as_str(), event.event_type());
        assert_eq!(event.user_agent, None);
    }

    #[test]
    fn severities() {
        use RejectionKind::*;
        let of = |kind| Severity::of(kind, Outcome::Rejected);
        assert_eq!(of(SignatureMismatch), Severity::Critical);
        assert_eq!(of(UnknownAccount), Severity::Critical);
        assert_eq!(of(ResolverFailed), Severity::Critical);
        assert_eq!(of(MissingSignature), Severity::Warning);
        assert_eq!(of(BodyTooLarge), Severity::Info);
    }
}
