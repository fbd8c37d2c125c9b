use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sentry_core::protocol::{Event, Level, Value};

use super::{OnSecurityEvent, Outcome, SecurityEvent, Severity};
use crate::rejection::RejectionKind;

/// Captures security events in Sentry, with flood control.
///
/// Events at or above a severity (default: critical) become Sentry events on the current hub,
/// so under `sentry-tower`'s per-request hub they join the request's scope. Each carries the
/// tags `provider`, `event_type`, `severity` and `tenant_id` (`none` when no tenant is known, as
/// the metrics' label: an event for a made-up account costs what one for a tenant's does), and
/// the rest of the
/// context (URL, method, client IP, user agent, request id, account SID, and the mismatch
/// doctor's `diagnosis_matched_url` and `diagnosis_fix` on its follow-up event) as extra data.
/// Never a secret, a signature, a body or a webhook parameter's value: URLs keep their query's
/// names only.
///
/// The doctor's follow-up is reported from its own thread, after the response: it is captured
/// on that thread's hub (a clone of the main hub), not in the request's scope under
/// `sentry-tower`; its `request_id` ties it to the refusal's event.
///
/// # Flood control
///
/// A burst of forged requests must not become thousands of Sentry events. At most
/// `max_events` events are captured per event type and tenant in each `period` (default: 10
/// per minute); the rest are counted, and the next event captured in the same window carries
/// the count in the extra field `suppressed_since_last`. The counters are bounded in number:
/// idle ones are dropped.
///
/// One exception: the refusals that tell a forger's guesses apart (an unknown account or
/// SharedKey id, against a signature or body hash that does not match, or another account's
/// SharedKey, for one that exists) share one window, whatever their tenant. With a window each,
/// once a flood of made-up accounts had used up the unknown-account window, a forged request
/// for a made-up account was dropped while one for a real account still became a Sentry event,
/// which took measurably longer: whether an event is captured must not tell which accounts
/// exist. The price: a flood of forgeries against one tenant uses up the window for every
/// tenant's forgeries (their count rides on the next event captured), where it used to leave
/// the other tenants' windows alone. The first events of a flood, and every other kind of
/// event, are still captured per tenant.
///
/// ```
/// use std::time::Duration;
/// use tower_twilio::{Credentials, TwilioSignatureLayer, events::{SentrySink, Severity, TracingSink}};
///
/// let sentry = SentrySink::new().rate_limit(5, Duration::from_secs(60));
/// let layer = TwilioSignatureLayer::new(Credentials::new())
///     .on_security_event((TracingSink::new(), sentry));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct SentrySink {
    min_severity: Severity,
    flood: Arc<FloodControl>,
}

impl SentrySink {
    /// Critical events only, at most 10 per event type and tenant per minute (the refusals of
    /// forged requests share one window: see [flood control](Self#flood-control)).
    pub fn new() -> Self {
        Self {
            min_severity: Severity::Critical,
            flood: Arc::new(FloodControl::new(10, Duration::from_secs(60))),
        }
    }

    /// Captures events at or above `severity`.
    #[must_use]
    pub fn min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = severity;
        self
    }

    /// Captures at most `max_events` per event type and tenant in each `period` (the refusals
    /// of forged requests share one window: see [flood control](Self#flood-control)).
    #[must_use]
    pub fn rate_limit(mut self, max_events: u32, period: Duration) -> Self {
        self.flood = Arc::new(FloodControl::new(max_events, period));
        self
    }
}

impl Default for SentrySink {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SentrySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentrySink")
            .field("min_severity", &self.min_severity)
            .field("max_events", &self.flood.max_events)
            .field("period", &self.flood.period)
            .finish()
    }
}

impl OnSecurityEvent for SentrySink {
    fn on_security_event(&self, event: &SecurityEvent) {
        if event.severity < self.min_severity {
            return;
        }
        let (window, tenant) = flood_window(event);
        let Some(suppressed) = self.flood.try_take(window, tenant) else {
            return;
        };
        let mut tags = BTreeMap::new();
        tags.insert("provider".to_owned(), event.provider.to_owned());
        tags.insert("event_type".to_owned(), event.event_type().to_owned());
        tags.insert("severity".to_owned(), event.severity.as_str().to_owned());
        let tenant = event.tenant_id.as_deref().unwrap_or("none");
        tags.insert("tenant_id".to_owned(), tenant.to_owned());
        let mut extra = BTreeMap::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                extra.insert(name.to_owned(), Value::String(value));
            }
        };
        put("reason", Some(event.reason.as_str().to_owned()));
        put("url", Some(event.url.clone()));
        put("method", Some(event.method.to_string()));
        put("client_ip", event.client_ip.map(|ip| ip.to_string()));
        put("user_agent", event.user_agent.clone());
        put("request_id", event.request_id.clone());
        put(
            "diagnosis_matched_url",
            event.diagnosis.as_ref().map(|d| d.matched_url().to_owned()),
        );
        put(
            "diagnosis_fix",
            event.diagnosis.as_ref().map(|d| d.fix().to_owned()),
        );
        put(
            "account_sid",
            event.account_sid.as_deref().map(str::to_owned),
        );
        extra.insert("suppressed_since_last".to_owned(), Value::from(suppressed));
        let sentry_event = Event {
            level: match event.severity {
                Severity::Critical => Level::Error,
                Severity::Warning => Level::Warning,
                Severity::Info => Level::Info,
            },
            logger: Some(super::TRACING_TARGET.to_owned()),
            // Sized exactly: `format!` grew the text of a longer event type once more, an
            // allocation that told a signature mismatch from an unknown account.
            message: Some(["Twilio webhook ", event.event_type()].concat()),
            tags,
            extra,
            ..Event::default()
        };
        sentry_core::capture_event(sentry_event);
    }
}

/// The flood-control window `event` counts against: its type and tenant, except for the
/// refusals a forger's guess at an account decides (see [flood control](SentrySink#flood-control)),
/// which share one window named [`FORGED`].
fn flood_window(event: &SecurityEvent) -> (&'static str, Option<&Arc<str>>) {
    use RejectionKind::{
        AccountMismatch, BodyHashMismatch, SignatureMismatch, UnknownAccount, UnknownSharedKey,
    };
    let refused = matches!(
        event.outcome,
        Outcome::Rejected | Outcome::PassedInReportOnlyMode
    );
    match event.reason {
        SignatureMismatch | BodyHashMismatch | UnknownAccount | UnknownSharedKey
        | AccountMismatch
            if refused =>
        {
            (FORGED, None)
        }
        _ => (event.event_type(), event.tenant_id.as_ref()),
    }
}

/// The window the refusals of forged requests share.
const FORGED: &str = "forged";

/// Fixed-window rate limit per (event type, tenant), counting what it drops.
struct FloodControl {
    max_events: u32,
    period: Duration,
    windows: Mutex<HashMap<(&'static str, Option<Arc<str>>), Window>>,
}

struct Window {
    started: Instant,
    captured: u32,
    suppressed: u64,
}

/// Counters kept before idle ones are swept.
const MAX_WINDOWS: usize = 4096;

impl FloodControl {
    fn new(max_events: u32, period: Duration) -> Self {
        Self {
            max_events,
            period,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed since the last captured event)` when this event may be captured.
    fn try_take(&self, event_type: &'static str, tenant: Option<&Arc<str>>) -> Option<u64> {
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-update; the counters are
        // still usable.
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_WINDOWS {
            windows.retain(|_, w| now.duration_since(w.started) < self.period);
        }
        let window = windows
            .entry((event_type, tenant.cloned()))
            .or_insert(Window {
                started: now,
                captured: 0,
                suppressed: 0,
            });
        if now.duration_since(window.started) >= self.period {
            window.started = now;
            window.captured = 0;
        }
        if window.captured < self.max_events {
            window.captured += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_a_guessed_account_decides_share_one_window_whatever_the_tenant() {
        use http::{HeaderMap, Method};
        let event = |reason: RejectionKind, outcome: Outcome, tenant: Option<&str>| {
            let request = (&Method::POST, &HeaderMap::new());
            let about = (tenant.map(Arc::from), None);
            SecurityEvent::about(reason, outcome, request, "https://a.example/", None, about)
        };
        let unknown = event(RejectionKind::UnknownAccount, Outcome::Rejected, None);
        let forged = event(
            RejectionKind::SignatureMismatch,
            Outcome::Rejected,
            Some("acme"),
        );
        let passed = event(
            RejectionKind::UnknownSharedKey,
            Outcome::PassedInReportOnlyMode,
            None,
        );
        assert_eq!(flood_window(&unknown), (FORGED, None));
        assert_eq!(flood_window(&forged), (FORGED, None));
        assert_eq!(flood_window(&passed), (FORGED, None));
        // Any other event keeps its type's window, per tenant.
        let large = event(RejectionKind::BodyTooLarge, Outcome::Rejected, Some("acme"));
        let (window, tenant) = flood_window(&large);
        assert_eq!(
            (window, tenant.map(|t| &**t)),
            ("body_too_large", Some("acme"))
        );
    }

    #[test]
    fn flood_control_caps_each_window_and_counts_the_rest() {
        let flood = FloodControl::new(3, Duration::from_millis(50));
        let taken: Vec<_> = (0..10)
            .map(|_| flood.try_take("signature_mismatch", None))
            .collect();
        assert_eq!(taken.iter().filter(|a| a.is_some()).count(), 3);
        // Another type or tenant has its own window.
        assert_eq!(flood.try_take("unknown_account", None), Some(0));
        assert_eq!(
            flood.try_take("signature_mismatch", Some(&Arc::from("t1"))),
            Some(0)
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            flood.try_take("signature_mismatch", None),
            Some(7),
            "reports what it dropped"
        );
        assert_eq!(flood.try_take("signature_mismatch", None), Some(0));
    }
}
