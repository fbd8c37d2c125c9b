//! [`ReplayGuardLayer`]: the replay guard's settings, and the layer that applies them.

use std::{
    fmt, mem,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use tower_layer::Layer;

use super::ReplayGuard;
use crate::{
    VerifiedWebhook,
    events::{OnSecurityEvent, TracingSink},
    replay::{MemoryStore, ReplayKey},
};

/// Which requests are copies of one another. See the [module docs](super) for which Twilio
/// webhook takes which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Scope {
    /// The same signature is the same webhook: messages, status callbacks, Event Streams.
    /// The default.
    #[default]
    Content,
    /// The same signature **and** the same `I-Twilio-Idempotency-Token` are the same
    /// delivery: voice TwiML requests, where a `<Redirect>` or a `<Gather>` loop sends the
    /// same signed request again as a new request. Twilio's retries of one request collapse;
    /// a loop runs the handler each time. A request without the token is keyed on its
    /// signature alone, as in the content scope.
    ///
    /// The token is not signed, so a captured request replayed with a fresh token is a new
    /// delivery too. A delivery is kept for the
    /// [delivery window](ReplayGuardLayer::delivery_window) (5 minutes: Twilio's retries of
    /// one request all come within 15 s), and one signed request has at most
    /// [`max_deliveries`](ReplayGuardLayer::max_deliveries) (32) of them told apart per
    /// window: past that, a delivery runs the handler without being recorded, so one signature
    /// adds at most 32 entries per window, whatever a sender does.
    Delivery,
}

impl Scope {
    /// The key the guard claims for `webhook` in this scope: a hash of the algorithm and the
    /// signature that verified it, and in the delivery scope of its
    /// `I-Twilio-Idempotency-Token` when it has one. A copy's key is the key of the webhook
    /// whose stored answer it got, so an application's log can point from one to the other.
    /// `None` for a webhook without a signature (a verified one always has one).
    pub fn key(self, webhook: &VerifiedWebhook) -> Option<ReplayKey> {
        self.keys(webhook).map(|(key, _)| key)
    }

    /// The [key](Self::key) the guard claims for `webhook`, and when that is one delivery of it
    /// (the delivery scope, with a token), the key its deliveries are counted under
    /// ([`ReplayKey::deliveries`]). `None` without a signature: a key of empty bytes would make
    /// every such request a copy of the first.
    pub(crate) fn keys(self, webhook: &VerifiedWebhook) -> Option<(ReplayKey, Option<ReplayKey>)> {
        let signature = webhook
            .signature()
            .filter(|signature| !signature.is_empty())?;
        let algorithm = webhook.algorithm();
        Some(match (self, webhook.idempotency_token_bytes()) {
            (Self::Delivery, Some(token)) => {
                let deliveries = ReplayKey::deliveries(algorithm, signature);
                let key = ReplayKey::for_delivery(algorithm, signature, token);
                (key, Some(deliveries))
            }
            _ => (ReplayKey::new(algorithm, signature), None),
        })
    }
}

/// What the guard does with a request when the store fails (unreachable, timed out, full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreFailure {
    /// Run the handler without a claim and report an `ERROR` event (and the metric). Loses
    /// nothing: a webhook is processed even while the store is down; a copy arriving in that
    /// time may run again. The default.
    #[default]
    RunUnguarded,
    /// Answer `503` ([`ReplayStoreFailed`](crate::RejectionKind::ReplayStoreFailed)) and report
    /// an `ERROR` event. Nothing runs twice, but Twilio does not retry a 5xx unless the URL's
    /// retry policy names it (`#rp=5xx`), so without that (or a Fallback URL) the webhook is
    /// lost.
    Refuse,
}

/// The settings a [`ReplayGuardLayer`] gives every [`ReplayGuard`] it makes.
pub(crate) struct Settings<St> {
    pub(crate) store: St,
    pub(crate) scope: Scope,
    pub(crate) window: Duration,
    pub(crate) delivery_window: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) lease: Duration,
    pub(crate) wait: Duration,
    pub(crate) max_answer_bytes: usize,
    pub(crate) on_store_failure: StoreFailure,
    pub(crate) sink: Arc<dyn OnSecurityEvent + Send + Sync>,
    /// Bounds the `WARN` lines about deliveries past [`max_deliveries`](Self::max_deliveries),
    /// which a flood of replays would repeat; shared by every guard the layer makes.
    pub(crate) unrecorded_log: Arc<LogLimit>,
}

impl<St> Settings<St> {
    /// How often a claim is renewed while its handler runs: two fifths of the lease (at least
    /// 400 ms, as the lease is at least 1 second), so two
    /// renewals can fail before the claim lapses.
    pub(crate) fn renew_every(&self) -> Duration {
        self.lease.saturating_mul(2) / 5
    }

    /// The delivery window as the guard keeps it: never longer than the window. Both how long
    /// a delivery's answer is kept and the period its deliveries are counted over.
    pub(crate) fn delivery_period(&self) -> Duration {
        self.delivery_window.min(self.window)
    }
}

/// Lets a log line that a flood of requests would repeat through at most once per
/// [`PERIOD`](Self::PERIOD), and counts the occurrences each line stands for.
#[derive(Debug, Default)]
pub(crate) struct LogLimit(Mutex<Logged>);

#[derive(Debug, Default)]
struct Logged {
    /// When the last line was let through.
    last: Option<Instant>,
    /// The occurrences since.
    since: u64,
}

impl LogLimit {
    /// At most one line a minute.
    pub(crate) const PERIOD: Duration = Duration::from_secs(60);

    /// Counts one occurrence: `Some(how many there were since the last line, this one
    /// included)` when a line is due, `None` when it is not.
    pub(crate) fn count(&self) -> Option<u64> {
        let now = Instant::now();
        let mut logged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        logged.since += 1;
        if logged
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < Self::PERIOD)
        {
            return None;
        }
        logged.last = Some(now);
        Some(mem::take(&mut logged.since))
    }
}

/// Keeps a webhook from reaching the handler twice and gives every copy the first answer.
/// Place it after [`TwilioSignatureLayer`](crate::TwilioSignatureLayer): it reads the
/// [`VerifiedWebhook`](crate::VerifiedWebhook) that layer leaves in the request.
///
/// See the [module docs](super) for what it does and an example.
pub struct ReplayGuardLayer<St = MemoryStore> {
    settings: Settings<St>,
}

impl ReplayGuardLayer {
    /// The default window: 24 hours.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
    /// The default lease: 3 seconds, renewed every 1.2 while the handler runs. Shorter than the
    /// [default wait](Self::DEFAULT_WAIT) by 2 seconds, so that a copy arriving just as an
    /// instance dies (just after it renewed its claim) outwaits the dead claim and runs the
    /// handler itself.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);
    /// How long a delivery (the delivery scope) is kept, by default: 5 minutes. Twilio makes
    /// every attempt of one request within its total time (`tt`, at most 15 s).
    pub const DEFAULT_DELIVERY_WINDOW: Duration = Duration::from_secs(5 * 60);
    /// How many deliveries of one signed request are told apart per delivery window, by
    /// default: 32, a menu loop's pass every 9 s for 5 minutes.
    pub const DEFAULT_MAX_DELIVERIES: u32 = 32;
    /// The default wait of a copy for the first attempt: 5 seconds.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
    /// The default bound on a stored answer's body: 64 KiB.
    pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024;
    /// The shortest window: 1 minute. Twilio retries within seconds, and a shorter window
    /// forgets a webhook before its copies arrive.
    pub(crate) const MIN_WINDOW: Duration = Duration::from_secs(60);
    /// The shortest lease: 1 second, renewed every 400 ms. A shorter one lapses before a store
    /// round trip returns and floods the store with renewals.
    pub(crate) const MIN_LEASE: Duration = Duration::from_secs(1);
    /// The shortest wait of a copy: 100 ms, time for a store round trip.
    pub(crate) const MIN_WAIT: Duration = Duration::from_millis(100);
    /// The longest window: 30 days (a longer one is lowered to it, so that an expiry never
    /// overflows a clock).
    pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);
    /// The longest lease: 1 hour. A lease is renewed while its handler runs; a long one only
    /// holds a dead instance's claims longer.
    pub(crate) const MAX_LEASE: Duration = Duration::from_secs(60 * 60);
    /// The longest wait of a copy: 1 minute, four times what Twilio waits for an answer.
    pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);
}

impl Default for ReplayGuardLayer {
    /// A guard on a [`MemoryStore`] of the default size.
    fn default() -> Self {
        Self::new(MemoryStore::default())
    }
}

impl<St> ReplayGuardLayer<St> {
    /// A guard on `store` with the defaults: content scope, a 24-hour window, a 3-second lease
    /// renewed every 1.2, a 5-second wait for copies, answers kept up to 64 KiB, and a store
    /// failure runs the handler unguarded.
    pub fn new(store: St) -> Self {
        Self {
            settings: Settings {
                store,
                scope: Scope::Content,
                window: ReplayGuardLayer::DEFAULT_WINDOW,
                delivery_window: ReplayGuardLayer::DEFAULT_DELIVERY_WINDOW,
                max_deliveries: ReplayGuardLayer::DEFAULT_MAX_DELIVERIES,
                lease: ReplayGuardLayer::DEFAULT_LEASE,
                wait: ReplayGuardLayer::DEFAULT_WAIT,
                max_answer_bytes: ReplayGuardLayer::DEFAULT_MAX_ANSWER_BYTES,
                on_store_failure: StoreFailure::RunUnguarded,
                sink: Arc::new(TracingSink::new()),
                unrecorded_log: Arc::default(),
            },
        }
    }

    /// Which requests are copies of one another ([`Scope::Content`] by default). Use one layer
    /// per scope: `Scope::Delivery` on the voice routes.
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.settings.scope = scope;
        self
    }

    /// How long a processed webhook and its answer are remembered. A captured request replayed
    /// after the window runs again, so keep it long. At least
    /// 1 minute and at most
    /// 30 days: others are brought within.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.settings.window =
            window.clamp(ReplayGuardLayer::MIN_WINDOW, ReplayGuardLayer::MAX_WINDOW);
        self
    }

    /// How long a delivery is kept in the [delivery scope](Scope::Delivery) (5 minutes by
    /// default; never longer than the [window](Self::window)), and the period over which at
    /// most [`max_deliveries`](Self::max_deliveries) of one signed request are told apart.
    /// Twilio's retries of one request all come within its total time (`tt`, at most 15 s),
    /// and a replay with a fresh token is a new delivery whatever the window, so a short one
    /// loses nothing. Brought within 1 minute and 30 days.
    #[must_use]
    pub fn delivery_window(mut self, window: Duration) -> Self {
        self.settings.delivery_window =
            window.clamp(ReplayGuardLayer::MIN_WINDOW, ReplayGuardLayer::MAX_WINDOW);
        self
    }

    /// How many deliveries of one signed request the [delivery scope](Scope::Delivery) tells
    /// apart per [delivery window](Self::delivery_window) (32 by default, at least 1). Past
    /// that, a delivery with a new token (a menu loop's 33rd pass in 5 minutes, or a replay
    /// with a made-up token) runs the handler without being recorded: its answer is the
    /// handler's, but a retry of it runs the handler again. So one signature adds at most this
    /// many entries to the store per delivery window, whatever a sender puts in the unsigned
    /// token.
    #[must_use]
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.settings.max_deliveries = max.max(1);
        self
    }

    /// How long a claim holds without renewal. It is renewed every two fifths of it while the
    /// handler runs, so a slow handler keeps it, and the claim of an instance that died
    /// lapses within this time (then a copy runs the handler). Keep it shorter than the
    /// [wait](Self::wait), by a second or more: a copy that arrives just as an instance dies
    /// (Twilio retries at once when the connection closes) finds a claim renewed a moment
    /// before, and gets `409` if its wait runs out before that claim lapses. At least
    /// 1 second and at most
    /// 1 hour: others are brought within.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease.clamp(ReplayGuardLayer::MIN_LEASE, ReplayGuardLayer::MAX_LEASE);
        self
    }

    /// How long a copy waits for a first attempt that is still running before it is answered
    /// `409`. Keep it under the read timeout of the webhook URL (15 s by default, `#rt=` on
    /// the URL): Twilio reads nothing after that; and above the [lease](Self::lease), by a
    /// second or more, so that a copy outwaits the claim of an instance that died. At least
    /// 100 ms and at most
    /// 1 minute: others are brought within.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.settings.wait = wait.clamp(ReplayGuardLayer::MIN_WAIT, ReplayGuardLayer::MAX_WAIT);
        self
    }

    /// The largest answer body kept for copies (64 KiB by default). A larger answer reaches
    /// Twilio whole, but only "done" is stored: its copies get an empty answer.
    #[must_use]
    pub fn max_answer_bytes(mut self, max: usize) -> Self {
        self.settings.max_answer_bytes = max;
        self
    }

    /// What happens to a request when the store fails ([`StoreFailure::RunUnguarded`] by
    /// default); see the module docs' trade-off table.
    #[must_use]
    pub fn on_store_failure(mut self, mode: StoreFailure) -> Self {
        self.settings.on_store_failure = mode;
        self
    }

    /// Sends the guard's security events to `sink` instead of [`TracingSink`] (the same
    /// [`OnSecurityEvent`] sinks as
    /// [`TwilioSignatureLayer::on_security_event`](crate::TwilioSignatureLayer::on_security_event);
    /// give both layers the same one). One event per copy kept from the handler
    /// ([`ReplayCopy`](crate::RejectionKind::ReplayCopy), info), per degraded
    /// request (the store failed, before the handler or when recording its answer:
    /// [`ReplayStoreFailed`](crate::RejectionKind::ReplayStoreFailed), critical, with outcome
    /// [`PassedWithoutReplayCheck`](crate::events::Outcome::PassedWithoutReplayCheck) or
    /// [`Rejected`](crate::events::Outcome::Rejected); the wait ran out:
    /// [`ReplayInFlight`](crate::RejectionKind::ReplayInFlight), warning) and per request
    /// without a verified webhook ([`ReplayGuardMisplaced`](crate::RejectionKind::ReplayGuardMisplaced),
    /// critical).
    ///
    /// ```
    /// use tower_twilio::{events::SecurityEvent, replay_guard::ReplayGuardLayer};
    ///
    /// let guard = ReplayGuardLayer::default().on_security_event(|event: &SecurityEvent| {
    ///     println!("{} {}", event.event_type(), event.url);
    /// });
    /// # let _ = guard;
    /// ```
    #[must_use]
    pub fn on_security_event<E>(mut self, sink: E) -> Self
    where
        E: OnSecurityEvent + Send + Sync + 'static,
    {
        self.settings.sink = Arc::new(sink);
        self
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.settings.store
    }
}

impl<S, St: Clone> Layer<S> for ReplayGuardLayer<St> {
    type Service = ReplayGuard<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplayGuard::new(inner, Arc::new(self.settings.clone()))
    }
}

impl<St: Clone> Clone for Settings<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            scope: self.scope,
            window: self.window,
            delivery_window: self.delivery_window,
            max_deliveries: self.max_deliveries,
            lease: self.lease,
            wait: self.wait,
            max_answer_bytes: self.max_answer_bytes,
            on_store_failure: self.on_store_failure,
            sink: Arc::clone(&self.sink),
            unrecorded_log: Arc::clone(&self.unrecorded_log),
        }
    }
}

impl<St: Clone> Clone for ReplayGuardLayer<St> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for Settings<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuardLayer")
            .field("store", &self.store)
            .field("scope", &self.scope)
            .field("window", &self.window)
            .field("delivery_window", &self.delivery_window)
            .field("max_deliveries", &self.max_deliveries)
            .field("lease", &self.lease)
            .field("wait", &self.wait)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .field("on_store_failure", &self.on_store_failure)
            .finish_non_exhaustive()
    }
}

impl<St: fmt::Debug> fmt::Debug for ReplayGuardLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_below_their_minimum_are_raised_to_it() {
        let guard = ReplayGuardLayer::default()
            .lease(Duration::ZERO)
            .wait(Duration::ZERO)
            .window(Duration::ZERO);
        assert_eq!(guard.settings.lease, Duration::from_secs(1));
        assert_eq!(guard.settings.renew_every(), Duration::from_millis(400));
        assert_eq!(guard.settings.wait, Duration::from_millis(100));
        assert_eq!(guard.settings.window, Duration::from_secs(60));
        assert_eq!(
            (
                ReplayGuardLayer::MIN_LEASE,
                ReplayGuardLayer::MIN_WAIT,
                ReplayGuardLayer::MIN_WINDOW
            ),
            (
                guard.settings.lease,
                guard.settings.wait,
                guard.settings.window
            )
        );
    }

    #[test]
    fn settings_at_or_above_their_minimum_are_kept() {
        let guard = ReplayGuardLayer::default()
            .lease(Duration::from_secs(30))
            .wait(Duration::from_millis(100))
            .window(Duration::from_secs(60));
        assert_eq!(guard.settings.lease, Duration::from_secs(30));
        assert_eq!(guard.settings.renew_every(), Duration::from_secs(12));
        assert_eq!(guard.settings.wait, Duration::from_millis(100));
        assert_eq!(guard.settings.window, Duration::from_secs(60));
        // The renewal interval of the longest lease does not overflow.
        let longest = ReplayGuardLayer::default().lease(Duration::MAX);
        assert!(longest.settings.renew_every() >= Duration::from_secs(1));
    }
}
