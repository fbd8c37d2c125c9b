//! The webhook log: every webhook's lifecycle, for an application to persist.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use http::{Method, StatusCode};

use crate::{rejection::RejectionKind, verified_webhook::VerifiedWebhook};

/// Receives every webhook's lifecycle: [`Received`](WebhookStage::Received), then
/// [`Verified`](WebhookStage::Verified) or not, then exactly one final stage —
/// [`Rejected`](WebhookStage::Rejected), [`Processed`](WebhookStage::Processed) or
/// [`Failed`](WebhookStage::Failed).
///
/// Set it with [`TwilioSignatureLayer::on_webhook`](crate::TwilioSignatureLayer::on_webhook).
/// Implemented for closures `Fn(&WebhookLogEntry)`. It runs inline on the request path: to
/// write to a database, send the entry to a channel and write from a task of your own (a
/// bounded channel with `try_send` keeps a slow database from slowing requests; count what it
/// drops).
pub trait OnWebhook {
    /// Called at each stage of each webhook.
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

/// A stage of one webhook's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookStage {
    /// The request arrived.
    Received,
    /// The signature checked out; the inner service is about to run.
    Verified,
    /// Refused. Final.
    Rejected(RejectionKind),
    /// Failed verification but passed on in report-only mode; a final stage follows.
    PassedInReportOnlyMode(RejectionKind),
    /// The inner service answered with a success (1xx–3xx) status. Final.
    Processed(StatusCode),
    /// The inner service answered with a 4xx/5xx status, returned an error (`None`), or the
    /// request was dropped before it answered (`None`). Final.
    Failed(Option<StatusCode>),
}

impl WebhookStage {
    /// Whether no stage follows this one.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Rejected(_) | Self::Processed(_) | Self::Failed(_)
        )
    }

    /// `"received"`, `"verified"`, `"rejected"`, `"passed_in_report_only_mode"`,
    /// `"processed"` or `"failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Verified => "verified",
            Self::Rejected(_) => "rejected",
            Self::PassedInReportOnlyMode(_) => "passed_in_report_only_mode",
            Self::Processed(_) => "processed",
            Self::Failed(_) => "failed",
        }
    }
}

/// One stage of one webhook, with what is known of it so far.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookLogEntry {
    /// Unique within the process, the same for every stage of one webhook.
    pub id: u64,
    /// The stage.
    pub stage: WebhookStage,
    /// The request method.
    pub method: Method,
    /// The request path (without the query), as received: still percent-encoded.
    pub path: String,
    /// The raw query, if any. Unverified until the `Verified` stage.
    pub query: Option<String>,
    /// The `User-Agent` header (Twilio sends `TwilioProxy/1.1`). Unverified: headers are not
    /// signed.
    pub user_agent: Option<String>,
    /// When the request arrived.
    pub received_at: SystemTime,
    /// The tenant the resolver named, once it has answered (also on rejections after the
    /// lookup).
    pub tenant_id: Option<Arc<str>>,
    /// The request's `AccountSid`, once the body has been read. Unverified on a rejection:
    /// it is whatever the sender put there.
    pub account_sid: Option<String>,
    /// The verified context, from the `Verified` stage on.
    pub webhook: Option<VerifiedWebhook>,
}

/// Hands out webhook ids.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
