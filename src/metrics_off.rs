//! Without the `metrics` feature: the calls [`metrics`](https://docs.rs/metrics) gets with
//! it, doing nothing, so that the code that records stays free of `cfg` (the feature's only
//! switch is where `lib.rs` picks this file or `metrics.rs`).

use std::sync::Arc;

use crate::{RejectionKind, resolver::Resolution};

/// Empty: nothing is timed.
#[derive(Debug)]
pub(crate) struct LookupTimer;

impl LookupTimer {
    pub(crate) const fn new() -> Self {
        Self
    }

    pub(crate) fn start(&mut self) {}

    pub(crate) fn stop(&mut self, _answer: &Resolution) {}
}

pub(crate) fn verified(_tenant: Option<&Arc<str>>) {}

pub(crate) fn refused(_reason: RejectionKind, _tenant: Option<&Arc<str>>) {}

pub(crate) fn diagnosis(_matched: bool) {}

pub(crate) fn diagnosis_dropped() {}

pub(crate) fn replay_copy() {}

pub(crate) fn replay_degraded(_reason: &'static str) {}
