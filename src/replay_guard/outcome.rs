//! [`ReplayOutcome`]: what the replay guard did with a request, left in the response's
//! extensions.

use http::Response;

/// What the [`ReplayGuardLayer`](super::ReplayGuardLayer) did with a request: inserted into
/// the extensions of every response it hands back. The signature layer's
/// [webhook log](crate::events::log) reads it, so that a copy is logged as
/// [`Copy`](crate::events::log::WebhookOutcome::Copy), not as processed.
///
/// ```
/// # use http::Response;
/// use tower_twilio::replay_guard::ReplayOutcome;
///
/// # let response = Response::new(());
/// if ReplayOutcome::of(&response) == Some(ReplayOutcome::Copy) {
///     // the handler did not run: this is the first attempt's answer
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayOutcome {
    /// The webhook was new (or its earlier attempt failed): the handler ran, holding the claim.
    First,
    /// A copy of a processed webhook: the handler did not run; the answer is the stored first
    /// answer (or an empty one when it was larger than the bound, or cut before it was read
    /// whole).
    Copy,
    /// The store failed and the guard ran the handler without a claim
    /// ([`StoreFailure::RunUnguarded`](super::StoreFailure::RunUnguarded)).
    RanUnguarded,
    /// The store failed and the guard refused with `503`
    /// ([`StoreFailure::Refuse`](super::StoreFailure::Refuse)).
    StoreRefused,
    /// A copy waited for the first attempt until the bound and was answered `409`.
    WaitRanOut,
    /// The request had no [`VerifiedWebhook`](crate::VerifiedWebhook): refused with `500`.
    Misplaced,
    /// A delivery past the [delivery scope](super::Scope::Delivery)'s bound for its signed
    /// request ([`max_deliveries`](super::ReplayGuardLayer::max_deliveries)): the handler ran
    /// without a claim, and its answer was not recorded.
    Unrecorded,
}

impl ReplayOutcome {
    /// The outcome the guard left in `response`, if a guard handled it.
    pub fn of<B>(response: &Response<B>) -> Option<Self> {
        response.extensions().get::<Self>().copied()
    }

    /// `"first"`, `"copy"`, `"ran_unguarded"`, `"store_refused"`, `"wait_ran_out"`,
    /// `"misplaced"` or `"unrecorded"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Copy => "copy",
            Self::RanUnguarded => "ran_unguarded",
            Self::StoreRefused => "store_refused",
            Self::WaitRanOut => "wait_ran_out",
            Self::Misplaced => "misplaced",
            Self::Unrecorded => "unrecorded",
        }
    }
}
