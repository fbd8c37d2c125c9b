//! The webhook log: every webhook's lifecycle, for an application to persist.

use std::{
    fmt,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use http::{Method, StatusCode, header, request::Parts};

use super::{MAX_EVENT_URL, bounded_cow, bounded_text};
use crate::{
    doctor::Diagnosis,
    rejection::RejectionKind,
    url::redact::{redact_query, redact_query_within},
    verified_webhook::VerifiedWebhook,
};

/// Receives every webhook's lifecycle: [`Received`](WebhookOutcome::Received), then
/// [`Verified`](WebhookOutcome::Verified) or not, then exactly one final outcome —
/// [`Rejected`](WebhookOutcome::Rejected), [`Processed`](WebhookOutcome::Processed),
/// [`Failed`](WebhookOutcome::Failed) or [`Copy`](WebhookOutcome::Copy). With the
/// mismatch doctor on, a signature mismatch it explains gets one more entry,
/// [`Diagnosed`](WebhookOutcome::Diagnosed), from the doctor's thread (usually after the final
/// outcome).
///
/// Set it with [`TwilioSignatureLayer::on_webhook`](crate::TwilioSignatureLayer::on_webhook).
/// Implemented for closures `Fn(&WebhookLogEntry)`. It runs inline on the request path: to
/// write to a database, send the entry to a channel and write from a task of your own (a
/// bounded channel with `try_send` keeps a slow database from slowing requests; count what it
/// drops).
pub trait OnWebhook {
    /// Called at each outcome of each webhook.
    fn on_webhook(&self, entry: &WebhookLogEntry);
}

impl<F> OnWebhook for F
where
    F: Fn(&WebhookLogEntry),
{
    fn on_webhook(&self, entry: &WebhookLogEntry) {
        self(entry);
    }
}

/// What has happened to a webhook so far, one entry of its lifecycle. A security event names
/// the outcome it reports with [`Outcome`](super::Outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookOutcome {
    /// The request arrived.
    Received,
    /// The signature checked out; the inner service is about to run (unless the
    /// [replay guard](crate::replay_guard) finds it a copy or in flight).
    Verified,
    /// Refused. Final.
    Rejected(RejectionKind),
    /// Failed verification but passed on in report-only mode; a final outcome follows.
    PassedInReportOnlyMode(RejectionKind),
    /// The inner service answered with a success (1xx–3xx) status. Final.
    Processed(StatusCode),
    /// The inner service answered with a 4xx/5xx status, returned an error (`None`), or the
    /// request was dropped before it answered (`None`). Final.
    Failed(Option<StatusCode>),
    /// Verified, but a copy of a webhook already processed: the
    /// [replay guard](crate::replay_guard) behind the signature layer answered it with the
    /// first answer, without calling the handler (the response carried
    /// [`ReplayOutcome::Copy`](crate::replay_guard::ReplayOutcome::Copy)). Final.
    Copy,
    /// Not an outcome of the webhook's processing: the [mismatch doctor](crate::doctor)'s
    /// diagnosis of a signature mismatch, in [`WebhookLogEntry::diagnosis`], reported from the
    /// doctor's thread once it has run (usually after the final outcome; in report-only mode
    /// possibly before). Same `id` as the webhook's other entries; add the diagnosis to its
    /// record without changing its outcome.
    Diagnosed,
}

impl WebhookOutcome {
    /// Whether no outcome follows this one.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Rejected(_) | Self::Processed(_) | Self::Failed(_) | Self::Copy
        )
    }

    /// `"received"`, `"verified"`, `"rejected"`, `"passed_in_report_only_mode"`,
    /// `"processed"`, `"failed"`, `"copy"` or `"diagnosed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Verified => "verified",
            Self::Rejected(_) => "rejected",
            Self::PassedInReportOnlyMode(_) => "passed_in_report_only_mode",
            Self::Processed(_) => "processed",
            Self::Failed(_) => "failed",
            Self::Copy => "copy",
            Self::Diagnosed => "diagnosed",
        }
    }
}

/// One outcome of one webhook, with what is known of it so far.
///
/// Its `Debug` output shows the query with its values redacted, whatever the outcome: from
/// `Verified` on the field holds the query as received, with the webhook's parameter values.
#[derive(Clone)]
#[non_exhaustive]
pub struct WebhookLogEntry {
    /// Unique within the process, the same for every entry of one webhook.
    pub id: u64,
    /// What has happened to the webhook.
    pub outcome: WebhookOutcome,
    /// The request method.
    pub method: Method,
    /// The request path (without the query), as received: still percent-encoded; at most
    /// 2048 bytes of it, ending in `…` when cut (the verified URL is whole in
    /// [`webhook`](Self::webhook)).
    pub path: String,
    /// The query, if any: with its values redacted (`From=[redacted]&Body=[redacted]`) and at
    /// most 2048 bytes of it, ending in `…` when cut, until the `Verified` outcome, which
    /// carries it whole, as received (signed, so Twilio's). An unverified request's parameters
    /// are whatever the sender put there, and a genuine one refused (a misconfigured URL) holds
    /// personal data: neither is logged.
    pub query: Option<String>,
    /// The `User-Agent` header (Twilio sends `TwilioProxy/1.1`): at most 256 bytes of it,
    /// ending in `…` when cut. Unverified: headers are not signed.
    pub user_agent: Option<String>,
    /// When the request arrived.
    pub received_at: SystemTime,
    /// The real client: from the trusted forwarding chain, else the connecting peer (as in
    /// [`SecurityEvent::client_ip`](super::SecurityEvent::client_ip)).
    pub client_ip: Option<IpAddr>,
    /// The `X-Request-Id` header, as set by tower-http's request-id middleware or a proxy
    /// (as in [`SecurityEvent::request_id`](super::SecurityEvent::request_id)).
    pub request_id: Option<String>,
    /// The tenant the resolver named, once it has answered (also on rejections after the
    /// lookup).
    pub tenant_id: Option<Arc<str>>,
    /// The request's `AccountSid`, once the body has been read. Unverified on a rejection:
    /// it is whatever the sender put there.
    pub account_sid: Option<Arc<str>>,
    /// The verified context, from the `Verified` outcome on.
    pub webhook: Option<VerifiedWebhook>,
    /// On the [`Diagnosed`](WebhookOutcome::Diagnosed) entry: the URL the signature matches and
    /// what to configure (see [`crate::doctor`]).
    pub diagnosis: Option<Arc<Diagnosis>>,
}

impl fmt::Debug for WebhookLogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookLogEntry")
            .field("id", &self.id)
            .field("outcome", &self.outcome)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query.as_deref().map(redact_query))
            .field("user_agent", &self.user_agent)
            .field("received_at", &self.received_at)
            .field("client_ip", &self.client_ip)
            .field("request_id", &self.request_id)
            .field("tenant_id", &self.tenant_id)
            .field("account_sid", &self.account_sid)
            .field("webhook", &self.webhook)
            .field("diagnosis", &self.diagnosis)
            .finish()
    }
}

/// Hands out webhook ids.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The webhook log of one request: reports its outcomes to the layer's [`OnWebhook`], if it has
/// one, and its end even if the request is dropped before it completes (the client went away),
/// so that nothing goes unrecorded. Every method does nothing without a log.
pub(crate) struct Lifecycle {
    /// Boxed: a pointer in every response future, the entry only where a log is set.
    tracked: Option<Box<Tracked>>,
}

struct Tracked {
    log: Arc<dyn OnWebhook + Send + Sync>,
    entry: WebhookLogEntry,
    finished: bool,
}

impl Lifecycle {
    /// Reports [`WebhookOutcome::Received`] for the request `parts` belong to, from `client_ip`.
    pub(crate) fn received(
        log: Option<&Arc<dyn OnWebhook + Send + Sync>>,
        parts: &Parts,
        client_ip: Option<IpAddr>,
    ) -> Self {
        let tracked = log.map(|log| {
            let entry = WebhookLogEntry {
                id: next_id(),
                outcome: WebhookOutcome::Received,
                method: parts.method.clone(),
                path: bounded_text(parts.uri.path(), MAX_EVENT_URL),
                query: parts
                    .uri
                    .query()
                    .map(|q| bounded_cow(redact_query_within(q, MAX_EVENT_URL), MAX_EVENT_URL)),
                user_agent: super::header_text(&parts.headers, &header::USER_AGENT),
                received_at: SystemTime::now(),
                client_ip,
                request_id: super::header_text(&parts.headers, &super::REQUEST_ID_HEADER),
                tenant_id: None,
                account_sid: None,
                webhook: None,
                diagnosis: None,
            };
            log.on_webhook(&entry);
            Box::new(Tracked {
                log: Arc::clone(log),
                entry,
                finished: false,
            })
        });
        Self { tracked }
    }

    /// Reports that verification passed, with what the inner service will see.
    pub(crate) fn verified(&mut self, webhook: &VerifiedWebhook) {
        if let Some(tracked) = &mut self.tracked {
            tracked.entry.tenant_id = webhook.tenant_id_arc().cloned();
            tracked.entry.account_sid = webhook.account_sid_arc().cloned();
            tracked.entry.webhook = Some(webhook.clone());
            // Verified: the query as received (the verified URL's, which is the request's).
            if let Some(query) = &mut tracked.entry.query
                && let Some((_, received)) = webhook.url().split_once('?')
            {
                received.clone_into(query);
            }
        }
        self.record(WebhookOutcome::Verified);
    }

    /// Reports a refusal ([`WebhookOutcome::Rejected`]) or, in report-only mode, a failure passed
    /// on ([`WebhookOutcome::PassedInReportOnlyMode`]), with what was known of the request.
    pub(crate) fn failed_verification(
        &mut self,
        outcome: WebhookOutcome,
        tenant_id: Option<&Arc<str>>,
        account_sid: Option<&Arc<str>>,
    ) {
        if let Some(tracked) = &mut self.tracked {
            tracked.entry.tenant_id = tenant_id.cloned();
            tracked.entry.account_sid = account_sid.cloned();
        }
        self.record(outcome);
    }

    /// What the mismatch doctor needs to add its diagnosis to this webhook's log later, from
    /// its thread: `None` without a log.
    pub(crate) fn follow_up(&self) -> Option<FollowUp> {
        let tracked = self.tracked.as_ref()?;
        Some(FollowUp {
            log: Arc::clone(&tracked.log),
            entry: tracked.entry.clone(),
        })
    }

    /// Reports that the replay guard answered a copy without calling the inner service.
    pub(crate) fn copy(&mut self) {
        self.record(WebhookOutcome::Copy);
    }

    /// Reports the inner service's answer: its status, or `None` for an error.
    pub(crate) fn answered(&mut self, status: Option<StatusCode>) {
        self.record(match status {
            Some(status) if !status.is_client_error() && !status.is_server_error() => {
                WebhookOutcome::Processed(status)
            }
            _ => WebhookOutcome::Failed(status),
        });
    }

    fn record(&mut self, outcome: WebhookOutcome) {
        let Some(tracked) = &mut self.tracked else {
            return;
        };
        if tracked.finished {
            return;
        }
        tracked.entry.outcome = outcome;
        tracked.finished = outcome.is_final();
        tracked.log.on_webhook(&tracked.entry);
    }
}

/// A webhook's log entry as it stood when it was refused, for the doctor's
/// [`Diagnosed`](WebhookOutcome::Diagnosed) entry.
pub(crate) struct FollowUp {
    log: Arc<dyn OnWebhook + Send + Sync>,
    entry: WebhookLogEntry,
}

impl FollowUp {
    /// Reports [`WebhookOutcome::Diagnosed`] with `diagnosis`.
    pub(crate) fn diagnosed(mut self, diagnosis: Arc<Diagnosis>) {
        self.entry.outcome = WebhookOutcome::Diagnosed;
        self.entry.diagnosis = Some(diagnosis);
        self.log.on_webhook(&self.entry);
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.record(WebhookOutcome::Failed(None));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A webhook log that keeps every entry it is given.
    fn recorder() -> (
        Arc<dyn OnWebhook + Send + Sync>,
        Arc<Mutex<Vec<WebhookLogEntry>>>,
    ) {
        let entries = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&entries);
        let log = move |entry: &WebhookLogEntry| sink.lock().unwrap().push(entry.clone());
        (Arc::new(log), entries)
    }

    fn parts() -> Parts {
        let request = http::Request::post("/twilio/sms?tenant=7")
            .header("user-agent", "TwilioProxy/1.1")
            .header("x-request-id", "req-7")
            .body(())
            .unwrap();
        request.into_parts().0
    }

    fn outcomes(entries: &Mutex<Vec<WebhookLogEntry>>) -> Vec<WebhookOutcome> {
        entries.lock().unwrap().iter().map(|e| e.outcome).collect()
    }

    #[test]
    fn debug_output_redacts_the_query_values_even_once_verified() {
        let (log, entries) = recorder();
        let mut lifecycle = Lifecycle::received(Some(&log), &parts(), None);
        if let Some(tracked) = &mut lifecycle.tracked {
            // What `verified` leaves there: the query as received.
            tracked.entry.query = Some("From=%2B14155550100&Body=secret+words".to_owned());
        }
        lifecycle.answered(Some(StatusCode::OK));
        drop(lifecycle);
        let entries = entries.lock().unwrap();
        let last = entries.last().unwrap();
        assert_eq!(
            last.query.as_deref(),
            Some("From=%2B14155550100&Body=secret+words")
        );
        let debug = format!("{last:?}");
        assert!(!debug.contains("14155550100"), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("From=[redacted]&Body=[redacted]"), "{debug}");
    }

    #[test]
    fn a_refusal_is_final_and_carries_what_was_known() {
        let (log, entries) = recorder();
        let client = Some(IpAddr::from([198, 51, 100, 7]));
        let mut lifecycle = Lifecycle::received(Some(&log), &parts(), client);
        let kind = RejectionKind::SignatureMismatch;
        lifecycle.failed_verification(
            WebhookOutcome::Rejected(kind),
            Some(&"acme".into()),
            Some(&"AC0123".into()),
        );
        lifecycle.answered(Some(StatusCode::OK));
        drop(lifecycle);
        assert_eq!(
            outcomes(&entries),
            [WebhookOutcome::Received, WebhookOutcome::Rejected(kind)]
        );
        let entries = entries.lock().unwrap();
        let (first, last) = (&entries[0], &entries[1]);
        assert_eq!(first.id, last.id);
        assert_eq!(first.path, "/twilio/sms");
        // Unverified: the query's values are not logged.
        assert_eq!(first.query.as_deref(), Some("tenant=[redacted]"));
        assert_eq!(first.user_agent.as_deref(), Some("TwilioProxy/1.1"));
        assert_eq!(first.request_id.as_deref(), Some("req-7"));
        assert_eq!(last.client_ip, client);
        assert_eq!(first.account_sid, None);
        assert_eq!(last.tenant_id.as_deref(), Some("acme"));
        assert_eq!(last.account_sid.as_deref(), Some("AC0123"));
    }

    #[test]
    fn report_only_is_followed_by_the_answer() {
        let (log, entries) = recorder();
        let mut lifecycle = Lifecycle::received(Some(&log), &parts(), None);
        let kind = RejectionKind::MissingSignature;
        lifecycle.failed_verification(WebhookOutcome::PassedInReportOnlyMode(kind), None, None);
        lifecycle.answered(Some(StatusCode::SERVICE_UNAVAILABLE));
        drop(lifecycle);
        assert_eq!(
            outcomes(&entries),
            [
                WebhookOutcome::Received,
                WebhookOutcome::PassedInReportOnlyMode(kind),
                WebhookOutcome::Failed(Some(StatusCode::SERVICE_UNAVAILABLE)),
            ]
        );
    }

    #[test]
    fn answers_are_processed_or_failed_by_status() {
        for (status, outcome) in [
            (
                Some(StatusCode::OK),
                WebhookOutcome::Processed(StatusCode::OK),
            ),
            (
                Some(StatusCode::FOUND),
                WebhookOutcome::Processed(StatusCode::FOUND),
            ),
            (
                Some(StatusCode::NOT_FOUND),
                WebhookOutcome::Failed(Some(StatusCode::NOT_FOUND)),
            ),
            (None, WebhookOutcome::Failed(None)),
        ] {
            let (log, entries) = recorder();
            let mut lifecycle = Lifecycle::received(Some(&log), &parts(), None);
            lifecycle.answered(status);
            assert_eq!(outcomes(&entries), [WebhookOutcome::Received, outcome]);
        }
    }

    #[test]
    fn a_request_dropped_midway_is_recorded_as_failed() {
        let (log, entries) = recorder();
        drop(Lifecycle::received(Some(&log), &parts(), None));
        assert_eq!(
            outcomes(&entries),
            [WebhookOutcome::Received, WebhookOutcome::Failed(None)]
        );
    }

    #[test]
    fn without_a_log_nothing_happens() {
        let mut lifecycle = Lifecycle::received(None, &parts(), None);
        lifecycle.answered(Some(StatusCode::OK));
        assert!(lifecycle.tracked.is_none());
    }
}
