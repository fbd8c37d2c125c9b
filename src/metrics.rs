//! Counters and a histogram through the [`metrics`](https://docs.rs/metrics) facade (cargo
//! feature `metrics`).
//!
//! With the feature on, the middleware records the names below through whatever recorder the
//! application installed (`metrics-exporter-prometheus`, StatsD, …); without a recorder the
//! calls do nothing. Names follow Prometheus conventions. Without the feature nothing is
//! recorded.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | [`VERIFIED`] `tower_twilio_webhooks_verified_total` | counter | `tenant` |
//! | [`REFUSED`] `tower_twilio_webhooks_refused_total` | counter | `reason` ([`RejectionKind::as_str`]), `tenant` |
//! | [`CREDENTIAL_LOOKUP`] `tower_twilio_credential_lookup_seconds` | histogram | `outcome` (`found`, `unknown`, `failed`) |
//! | [`REPLAY_COPIES`] `tower_twilio_replay_copies_total` | counter | |
//! | [`DIAGNOSES`] `tower_twilio_mismatch_diagnoses_total` | counter | `result` (`matched`, `unexplained`, `dropped`: the doctor's queue was full) |
//! | [`REPLAY_DEGRADED`] `tower_twilio_replay_degraded_total` | counter | `reason` (`store_failed`, `complete_failed`, `wait_ran_out`) |
//!
//! The `tenant` label is the tenant id the resolver reported, `none` when there is none, and
//! `other` once [`MAX_TENANT_LABELS`] distinct tenants have been seen: label values come only
//! from the resolver's own answers (never from what a request claims) and are bounded, so a
//! flood of forged requests cannot grow the number of series.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! // Installs a recorder; every layer in the process then reports through it.
//! // metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! use tower_twilio::metrics::{REFUSED, VERIFIED};
//! assert_eq!(VERIFIED, "tower_twilio_webhooks_verified_total");
//! assert_eq!(REFUSED, "tower_twilio_webhooks_refused_total");
//! # }
//! ```

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use crate::{RejectionKind, resolver::Resolution};

/// Counter: webhooks that verified (label `tenant`).
pub const VERIFIED: &str = "tower_twilio_webhooks_verified_total";
/// Counter: webhooks refused (labels `reason`, `tenant`).
pub const REFUSED: &str = "tower_twilio_webhooks_refused_total";
/// Histogram: seconds the credential resolver took (label `outcome`).
pub const CREDENTIAL_LOOKUP: &str = "tower_twilio_credential_lookup_seconds";
/// Counter: verified copies that the replay guard kept from the handler.
pub const REPLAY_COPIES: &str = "tower_twilio_replay_copies_total";
/// Counter: requests the replay guard could not guard as configured (label `reason`:
/// `store_failed`, `complete_failed`, `wait_ran_out`).
pub const REPLAY_DEGRADED: &str = "tower_twilio_replay_degraded_total";
/// Counter: mismatch diagnoses (label `result`: `matched`, `unexplained`, or `dropped` when
/// the doctor's queue was full).
pub const DIAGNOSES: &str = "tower_twilio_mismatch_diagnoses_total";

/// The most distinct `tenant` label values; later tenants are counted as `other`.
pub const MAX_TENANT_LABELS: usize = 100;

/// Distinct `tenant` label values, at most `max`.
struct TenantLabels {
    max: usize,
    seen: OnceLock<Mutex<HashSet<Box<str>>>>,
}

impl TenantLabels {
    const fn new(max: usize) -> Self {
        Self {
            max,
            seen: OnceLock::new(),
        }
    }

    /// The label for a tenant id: the id while fewer than `max` ids have been seen, `other`
    /// after, `none` without a tenant. The id's label shares its `Arc`: a refused request
    /// for a known tenant's account allocates nothing that one for an unknown account (which
    /// has no tenant) does not, so that the allocator does not tell them apart.
    fn label(&self, tenant: Option<&Arc<str>>) -> metrics::SharedString {
        let Some(tenant) = tenant else {
            return metrics::SharedString::const_str("none");
        };
        let mut seen = self
            .seen
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&**tenant) || (seen.len() < self.max && seen.insert((**tenant).into())) {
            metrics::SharedString::from_shared(Arc::clone(tenant))
        } else {
            metrics::SharedString::const_str("other")
        }
    }
}

static TENANTS: TenantLabels = TenantLabels::new(MAX_TENANT_LABELS);

fn tenant_label(tenant: Option<&Arc<str>>) -> metrics::SharedString {
    TENANTS.label(tenant)
}

/// Where the layer's metrics come from, for recorders that filter on it.
const METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// A key known at compile time: recording through it allocates nothing.
const fn key(name: &'static str, labels: &'static [metrics::Label]) -> metrics::Key {
    metrics::Key::from_static_parts(name, labels)
}

const fn label(key: &'static str, value: &'static str) -> metrics::Label {
    metrics::Label::from_static_parts(key, value)
}

static NO_TENANT: [metrics::Label; 1] = [label("tenant", "none")];
static FOUND: [metrics::Label; 1] = [label("outcome", "found")];
static UNKNOWN: [metrics::Label; 1] = [label("outcome", "unknown")];
static FAILED: [metrics::Label; 1] = [label("outcome", "failed")];
static VERIFIED_NO_TENANT: metrics::Key = key(VERIFIED, &NO_TENANT);
static LOOKUP_FOUND: metrics::Key = key(CREDENTIAL_LOOKUP, &FOUND);
static LOOKUP_UNKNOWN: metrics::Key = key(CREDENTIAL_LOOKUP, &UNKNOWN);
static LOOKUP_FAILED: metrics::Key = key(CREDENTIAL_LOOKUP, &FAILED);

pub(crate) fn verified(tenant: Option<&Arc<str>>) {
    match tenant {
        // The common single-account case costs no allocation.
        None => metrics::with_recorder(|recorder| {
            recorder
                .register_counter(&VERIFIED_NO_TENANT, &METADATA)
                .increment(1);
        }),
        Some(_) => {
            metrics::counter!(VERIFIED, "tenant" => tenant_label(tenant)).increment(1);
        }
    }
}

pub(crate) fn refused(reason: RejectionKind, tenant: Option<&Arc<str>>) {
    metrics::counter!(REFUSED, "reason" => reason.as_str(), "tenant" => tenant_label(tenant))
        .increment(1);
}

/// Times one credential lookup, for [`CREDENTIAL_LOOKUP`]: started when the resolver is asked,
/// recorded when it answers. Without the `metrics` feature it is empty and does nothing.
#[derive(Debug)]
pub(crate) struct LookupTimer {
    asked_at: Option<Instant>,
}

impl LookupTimer {
    pub(crate) const fn new() -> Self {
        Self { asked_at: None }
    }

    /// The resolver is asked now.
    pub(crate) fn start(&mut self) {
        self.asked_at = Some(Instant::now());
    }

    /// The resolver answered: records how long it took, and how it answered.
    pub(crate) fn stop(&mut self, answer: &Resolution) {
        let Some(asked_at) = self.asked_at.take() else {
            return;
        };
        let outcome = match answer {
            Ok(Some(_)) => Lookup::Found,
            Ok(None) => Lookup::Unknown,
            Err(_) => Lookup::Failed,
        };
        credential_lookup(outcome, asked_at.elapsed());
    }
}

/// How a credential lookup ended, for [`CREDENTIAL_LOOKUP`]'s `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Found,
    Unknown,
    Failed,
}

fn credential_lookup(outcome: Lookup, took: Duration) {
    let key = match outcome {
        Lookup::Found => &LOOKUP_FOUND,
        Lookup::Unknown => &LOOKUP_UNKNOWN,
        Lookup::Failed => &LOOKUP_FAILED,
    };
    metrics::with_recorder(|recorder| {
        recorder
            .register_histogram(key, &METADATA)
            .record(took.as_secs_f64());
    });
}

pub(crate) fn replay_copy() {
    metrics::counter!(REPLAY_COPIES).increment(1);
}

pub(crate) fn replay_degraded(reason: &'static str) {
    metrics::counter!(REPLAY_DEGRADED, "reason" => reason).increment(1);
}

pub(crate) fn diagnosis(matched: bool) {
    let result = if matched { "matched" } else { "unexplained" };
    metrics::counter!(DIAGNOSES, "result" => result).increment(1);
}

pub(crate) fn diagnosis_dropped() {
    metrics::counter!(DIAGNOSES, "result" => "dropped").increment(1);
}

#[cfg(test)]
mod tests {
    use metrics_util::{
        CompositeKey, MetricKind,
        debugging::{DebugValue, DebuggingRecorder},
    };

    use super::*;

    fn counters(
        snapshot: Vec<(
            CompositeKey,
            Option<metrics::Unit>,
            Option<metrics::SharedString>,
            DebugValue,
        )>,
    ) -> Vec<(String, Vec<(String, String)>, u64)> {
        let mut out: Vec<_> = snapshot
            .into_iter()
            .filter(|(key, ..)| key.kind() == MetricKind::Counter)
            .map(|(key, _, _, value)| {
                let (_, key) = key.into_parts();
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                let DebugValue::Counter(n) = value else {
                    return (String::new(), labels, 0);
                };
                (key.name().to_owned(), labels, n)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn outcomes_are_counted_by_reason_and_tenant() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let acme = Arc::from("acme");
            verified(Some(&acme));
            verified(Some(&acme));
            verified(None);
            refused(RejectionKind::SignatureMismatch, Some(&acme));
            diagnosis(true);
            credential_lookup(Lookup::Found, Duration::from_millis(3));
        });
        let counters = counters(snapshotter.snapshot().into_vec());
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert!(counters.contains(&(VERIFIED.to_owned(), vec![pair("tenant", "acme")], 2)));
        assert!(counters.contains(&(VERIFIED.to_owned(), vec![pair("tenant", "none")], 1)));
        assert!(counters.contains(&(
            REFUSED.to_owned(),
            vec![pair("reason", "signature_mismatch"), pair("tenant", "acme")],
            1
        )));
        assert!(counters.contains(&(DIAGNOSES.to_owned(), vec![pair("result", "matched")], 1)));
    }

    #[test]
    fn tenant_labels_are_bounded() {
        let tenants = TenantLabels::new(3);
        let labels: Vec<String> = ["a", "b", "a", "c", "d", "e", "b"]
            .into_iter()
            .map(|t| tenants.label(Some(&Arc::from(t))).to_string())
            .collect();
        assert_eq!(labels, ["a", "b", "a", "c", "other", "other", "b"]);
        assert_eq!(tenants.label(None).to_string(), "none");
    }
}
