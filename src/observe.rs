//! What the signature layer reports about a request: its [security event](crate::events),
//! its [webhook log](crate::events::log) entries, its [metrics](crate::metrics) and the
//! [mismatch doctor](crate::doctor)'s follow-up. None of it decides an answer.
//!
//! One [`Observer`] per request, a field of the response future, which calls it at the points
//! where it learns something and hands it what the decisions left behind: the refusal (the
//! response's [`Rejection`]), the [`VerifiedWebhook`], the resolver's answer, and the inner
//! service's response with the [`ReplayOutcome`] the replay guard put in it.
//!
//! | the future calls | security event | webhook log | metric |
//! | --- | --- | --- | --- |
//! | [`received`](Observer::received) | | `Received` | |
//! | [`asking`](Observer::asking), [`resolved`](Observer::resolved) | | | credential lookup |
//! | [`verified`](Observer::verified) | | `Verified` | verified |
//! | [`refused`](Observer::refused) | `Rejected` | `Rejected` | refused |
//! | [`passed_unverified`](Observer::passed_unverified) | `PassedInReportOnlyMode` | `PassedInReportOnlyMode` | refused |
//! | [`answered`](Observer::answered) | | `Processed`, `Failed` or `Copy` | |
//! | (the future is dropped first) | | `Failed(None)` | |
//!
//! A signature mismatch that [`refused`](Observer::refused) or
//! [`passed_unverified`](Observer::passed_unverified) hands to the doctor comes back, from the
//! doctor's thread, as a second event ([`Outcome::Diagnosed`]), a `Diagnosed` log entry and a
//! diagnosis metric.
//!
//! # Why hooks, not a layer of their own
//!
//! A layer around the signature layer, reading the extensions, would see the request before it
//! is verified and the response after the handler has run, so the reports would change:
//! `Verified` would be logged after the handler (never, for a request dropped while the handler
//! runs), and a report-only event after the forged request was handled. The event's rebuilt
//! URL, client address, tenant and account would have to travel in the response's extensions,
//! allocating on every refusal; the doctor takes the refused request itself, moved, not copied,
//! which only the signature layer holds; and every application would have to add that layer,
//! in the right place. Called from the future, the hooks report at the moment each fact is
//! known, box nothing and allocate nothing the reports did not already. Without the `metrics`
//! feature the metric calls are empty functions (`metrics_off.rs`): no `cfg` here or in the
//! future.

use std::{net::IpAddr, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, request::Parts};

use crate::{
    config::{Config, Shared},
    diagnoses::Case,
    events::{
        OnSecurityEvent, Outcome, SecurityEvent,
        log::{Lifecycle, WebhookOutcome},
    },
    metrics::{self, LookupTimer},
    pipeline::{Consult, Refusal},
    rejection::Rejection,
    replay_guard::ReplayOutcome,
    resolver::Resolution,
    url::rebuilt::RebuiltUrl,
    verified_webhook::VerifiedWebhook,
};

/// One request's reports: its webhook log and its credential-lookup timer. The sink, the log
/// and the doctor are the layer's ([`Shared`]), passed to the hooks that need them.
pub(crate) struct Observer {
    lifecycle: Lifecycle,
    lookup: LookupTimer,
}

impl Observer {
    /// The request `parts` belong to arrived from `client_ip`: [`WebhookOutcome::Received`].
    pub(crate) fn received(config: &Config, parts: &Parts, client_ip: Option<IpAddr>) -> Self {
        Self {
            lifecycle: Lifecycle::received(config.webhook_log.as_ref(), parts, client_ip),
            lookup: LookupTimer::new(),
        }
    }

    /// The resolver is asked now.
    pub(crate) fn asking(&mut self) {
        self.lookup.start();
    }

    /// The resolver answered.
    pub(crate) fn resolved(&mut self, answer: &Resolution) {
        self.lookup.stop(answer);
    }

    /// Verified: `webhook` is what the inner service is about to get.
    pub(crate) fn verified(&mut self, webhook: &VerifiedWebhook) {
        metrics::verified(webhook.tenant_id_arc());
        self.lifecycle.verified(webhook);
    }

    /// Refused: reports `refusal`, hands a signature mismatch to the doctor (moving the
    /// request to it), and returns the [`Rejection`] for the response. `url` is the one
    /// verification used (or the raw target when none could be rebuilt); the doctor takes it.
    pub(crate) fn refused<E, T>(
        &mut self,
        shared: &Shared<E, T>,
        parts: Parts,
        body: Bytes,
        url: &mut RebuiltUrl,
        mut refusal: Refusal,
    ) -> Rejection
    where
        E: OnSecurityEvent + Send + Sync + 'static,
    {
        // Taken from this second's budget before the report, as for a request passed on.
        let consult = take_for_doctor(&shared.config, &mut refusal);
        let event = self.report(shared, &parts, url, &refusal, false);
        if let Some(consult) = consult {
            let url = std::mem::take(&mut url.url);
            self.refer(shared, consult, (parts, body, url), event);
        }
        refusal.into_rejection()
    }

    /// Failed verification, but report-only mode passes the request on: reports `refusal`,
    /// and hands a copy of a signature mismatch to the doctor (the inner service gets the
    /// request itself).
    pub(crate) fn passed_unverified<E, T>(
        &mut self,
        shared: &Shared<E, T>,
        parts: &Parts,
        body: &Bytes,
        url: &mut RebuiltUrl,
        mut refusal: Refusal,
    ) where
        E: OnSecurityEvent + Send + Sync + 'static,
    {
        // Taken from this second's budget here, before anything is copied for it.
        let consult = take_for_doctor(&shared.config, &mut refusal);
        let event = self.report(shared, parts, url, &refusal, true);
        if let Some(consult) = consult {
            let (mut copy, ()) = Request::new(()).into_parts();
            copy.method = parts.method.clone();
            copy.uri = parts.uri.clone();
            copy.headers = parts.headers.clone();
            copy.extensions = parts.extensions.clone();
            let url = std::mem::take(&mut url.url);
            self.refer(shared, consult, (copy, body.clone(), url), event);
        }
    }

    /// The inner service answered (or failed): [`WebhookOutcome::Processed`] or
    /// [`WebhookOutcome::Failed`] by its status, or [`WebhookOutcome::Copy`] when the replay
    /// guard behind answered a copy with the first answer.
    pub(crate) fn answered<B, Error>(&mut self, result: &Result<Response<B>, Error>) {
        match result {
            Ok(response) if ReplayOutcome::of(response) == Some(ReplayOutcome::Copy) => {
                self.lifecycle.copy();
            }
            result => self
                .lifecycle
                .answered(result.as_ref().ok().map(Response::status)),
        }
    }

    /// A failed verification's security event (which it returns, for the doctor's follow-up),
    /// its metric and its webhook log outcome: refused, or `passed_on` in report-only mode.
    fn report<E, T>(
        &mut self,
        shared: &Shared<E, T>,
        parts: &Parts,
        url: &RebuiltUrl,
        refusal: &Refusal,
        passed_on: bool,
    ) -> SecurityEvent
    where
        E: OnSecurityEvent,
    {
        let kind = refusal.kind;
        let (outcome, logged) = if passed_on {
            let logged = WebhookOutcome::PassedInReportOnlyMode(kind);
            (Outcome::PassedInReportOnlyMode, logged)
        } else {
            (Outcome::Rejected, WebhookOutcome::Rejected(kind))
        };
        metrics::refused(kind, refusal.tenant_id.as_ref());
        let (tenant_id, account_sid) = (refusal.tenant_id.as_ref(), refusal.account_sid.as_ref());
        let event = SecurityEvent::new(
            kind,
            outcome,
            parts,
            url,
            tenant_id.cloned(),
            account_sid.cloned(),
        );
        shared.sink.on_security_event(&event);
        self.lifecycle
            .failed_verification(logged, tenant_id, account_sid);
        event
    }

    /// Hands a request to the doctor's thread, with what it takes to report the diagnosis: the
    /// same for a known account as for an unknown one (whose dummy key explains nothing), so
    /// that the request path does not tell them apart.
    fn refer<E, T>(
        &self,
        shared: &Shared<E, T>,
        consult: Consult,
        (parts, body, url): (Parts, Bytes, String),
        event: SecurityEvent,
    ) where
        E: OnSecurityEvent + Send + Sync + 'static,
    {
        let config = &shared.config;
        let Some(doctor) = &config.diagnoses else {
            return;
        };
        let case = Case {
            parts,
            body,
            url,
            credentials: consult.credentials,
            shared_key_id: consult.shared_key_id,
            max_params: config.max_params,
            original_uri: config.original_uri.clone(),
            peer_addr: Arc::clone(&config.peer_addr),
        };
        let sink = Arc::clone(&shared.sink);
        let log = self.lifecycle.follow_up();
        doctor.submit(Box::new(move || {
            let Some(diagnosis) = case.diagnose() else {
                return;
            };
            let diagnosis = Arc::new(diagnosis);
            sink.on_security_event(&event.diagnosed(Arc::clone(&diagnosis)));
            if let Some(log) = log {
                log.diagnosed(diagnosis);
            }
        }));
    }
}

/// What the doctor needs for `refusal`, when it is one the doctor looks at (a signature
/// mismatch with the doctor on) and this second's budget has a diagnosis left, which this
/// takes.
fn take_for_doctor(config: &Config, refusal: &mut Refusal) -> Option<Consult> {
    let doctor = config.diagnoses.as_ref()?;
    refusal.consult.take().filter(|_| doctor.try_take())
}
