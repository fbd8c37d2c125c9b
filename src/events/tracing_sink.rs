use tracing::Level;

use super::{OnSecurityEvent, SecurityEvent, Severity, TRACING_TARGET};

/// The default sink: one `tracing` event per security event, on the target
/// [`TRACING_TARGET`] (`"tower_twilio::security"`), at `ERROR` for critical events, `WARN` for warnings and `INFO`
/// otherwise (or at one fixed level, see [`TracingSink::level`]).
///
/// Fields: `event_type`, `reason`, `outcome`, `severity`, `provider`, `tenant_id`,
/// `account_sid`, `client_ip`, `url`, `method`, `user_agent`, `request_id`, and, on the mismatch
/// doctor's follow-up event (`mismatch_diagnosed`), `diagnosis_matched_url` and
/// `diagnosis_fix`. None of them holds a secret, a signature, a body or a query value (URLs keep
/// their query's names only), so the log is safe to archive.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink {
    level: Option<Level>,
}

impl TracingSink {
    /// The default: level by severity.
    pub const fn new() -> Self {
        Self { level: None }
    }

    /// Emits every event at `level`.
    #[must_use]
    pub const fn level(mut self, level: Level) -> Self {
        self.level = Some(level);
        self
    }
}

macro_rules! emit {
    ($level:expr, $event:expr) => {{
        let e = $event;
        tracing::event!(
            target: TRACING_TARGET,
            $level,
            event_type = e.event_type(),
            reason = e.reason.as_str(),
            outcome = e.outcome.as_str(),
            severity = e.severity.as_str(),
            provider = e.provider,
            tenant_id = e.tenant_id.as_deref(),
            account_sid = e.account_sid.as_deref(),
            client_ip = e.client_ip.map(tracing::field::display),
            url = %e.url,
            method = %e.method,
            user_agent = e.user_agent.as_deref(),
            request_id = e.request_id.as_deref(),
            diagnosis_matched_url = e.diagnosis.as_ref().map(|d| d.matched_url()),
            diagnosis_fix = e.diagnosis.as_ref().map(|d| d.fix()),
            "twilio webhook {}",
            e.event_type()
        )
    }};
}

impl OnSecurityEvent for TracingSink {
    fn on_security_event(&self, event: &SecurityEvent) {
        let level = self.level.unwrap_or(match event.severity {
            Severity::Critical => Level::ERROR,
            Severity::Warning => Level::WARN,
            Severity::Info => Level::INFO,
        });
        match level {
            Level::ERROR => emit!(Level::ERROR, event),
            Level::WARN => emit!(Level::WARN, event),
            Level::INFO => emit!(Level::INFO, event),
            Level::DEBUG => emit!(Level::DEBUG, event),
            _ => emit!(Level::TRACE, event),
        }
    }
}
