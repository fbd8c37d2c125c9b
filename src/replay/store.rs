//! [`ReplayStore`]: where the replay guard keeps what it has seen.

use std::{
    error::Error,
    fmt,
    future::Future,
    pin::pin,
    task::{Context, Waker},
    time::Duration,
};

use super::{ReplayKey, StoredAnswer};
use crate::BoxError;

/// The answer to a [claim](ReplayStore::claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Not seen: the key is now held by this request until it is
    /// [completed](ReplayStore::complete), [released](ReplayStore::release) or the lease runs
    /// out. The token proves the claim is ours when renewing or releasing it.
    Claimed(ClaimToken),
    /// Processed already, within the window: a copy, to be given this answer.
    Done(StoredAnswer),
    /// Claimed by another request that has not finished (here or on another instance).
    InFlight,
    /// Not seen, but not claimed either: the webhook has had as many deliveries as
    /// [`claim_delivery`](ReplayStore::claim_delivery) may tell apart within its period.
    /// Nothing was stored.
    TooManyDeliveries,
}

/// Proves which request holds a claim, so that a late release cannot delete a claim or a
/// done mark that another request made since.
///
/// Unique per claim: a counter for the in-memory store, 128 random bits for a shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(u128);

impl ClaimToken {
    /// A token with this value. Stores shared between processes must make it unpredictable and
    /// unique across them (random); a store in one process may count.
    pub const fn new(value: u128) -> Self {
        Self(value)
    }

    /// The value.
    pub const fn get(self) -> u128 {
        self.0
    }
}

/// One delivery of a webhook to claim, and the bound on its deliveries: what
/// [`ReplayStore::claim_delivery`] is asked. The guard makes one per delivery in the
/// [delivery scope](crate::replay_guard::Scope::Delivery) from its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryClaim {
    /// The delivery's own key: the signature and the idempotency token
    /// ([`ReplayKey::for_delivery`]).
    pub key: ReplayKey,
    /// Where the deliveries of the webhook are counted ([`ReplayKey::deliveries`]).
    pub deliveries: ReplayKey,
    /// How many deliveries are told apart per `period`.
    pub max: u32,
    /// How long a count lasts from its first delivery.
    pub period: Duration,
    /// How long the claim holds without renewal.
    pub lease: Duration,
}

impl DeliveryClaim {
    /// The claim of delivery `key`, counted under `deliveries`: at most `max` deliveries told
    /// apart per `period`, the claim held for `lease` without renewal.
    pub fn new(
        key: ReplayKey,
        deliveries: ReplayKey,
        max: u32,
        period: Duration,
        lease: Duration,
    ) -> Self {
        Self {
            key,
            deliveries,
            max,
            period,
            lease,
        }
    }
}

/// What [`ReplayStore::complete`] records for a processed webhook: its first answer, and how
/// long it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The answer every copy gets.
    pub answer: StoredAnswer,
    /// How long the webhook is known as done: the guard's window (its delivery window for one
    /// delivery).
    pub window: Duration,
}

impl Record {
    /// `answer`, kept for `window`.
    pub fn new(answer: StoredAnswer, window: Duration) -> Self {
        Self { answer, window }
    }
}

/// Keeps which webhooks are in flight and which were processed, with the first answer to
/// each, for the [replay guard](crate::replay_guard).
///
/// Each operation is a single atomic step in the store:
///
/// 1. [`claim`](Self::claim): if the key is absent, store it as claimed by a fresh token for
///    `lease`, and answer [`Claim::Claimed`]; else answer [`Claim::Done`] with the stored
///    answer, or [`Claim::InFlight`]. [`claim_delivery`](Self::claim_delivery) does the same
///    for one delivery of a webhook, and counts it: past a bound, [`Claim::TooManyDeliveries`].
/// 2. [`renew`](Self::renew): extend the claim to `lease` from now, only while `token` holds
///    it; answers whether it still did.
/// 3. [`complete`](Self::complete): store the answer and mark the key done for the window
///    ([`Record`]), whoever holds it now (the handler succeeded, so that is the truth).
/// 4. [`release`](Self::release): delete the key only if it is still claimed by `token`.
/// 5. [`wait`](Self::wait): a future that finishes when the key's claim may have been
///    settled: the in-memory store wakes waiters when it is; a shared store cannot, and
///    sleeps a short, growing backoff (`attempt` counts the waits before). The guard then
///    claims again, and bounds the whole wait itself.
///
/// The futures are associated types, so that a store whose operations are synchronous (like
/// [`MemoryStore`](super::MemoryStore), with [`std::future::Ready`]) costs no allocation. A
/// store that talks to a server may use a boxed future, as
/// [`RedisStore`](super::RedisStore) does: one allocation is nothing next to a round trip.
/// The futures must not borrow the store: they live in the middleware's response future.
///
/// An error is never taken as "not seen": the guard refuses the request or runs it unguarded
/// with an `ERROR` event, as it is configured.
pub trait ReplayStore {
    /// What [`claim`](Self::claim) returns.
    type ClaimFuture: Future<Output = Result<Claim, ReplayStoreError>>;
    /// What [`renew`](Self::renew) returns.
    type RenewFuture: Future<Output = Result<bool, ReplayStoreError>>;
    /// What [`complete`](Self::complete) returns.
    type CompleteFuture: Future<Output = Result<(), ReplayStoreError>>;
    /// What [`release`](Self::release) returns.
    type ReleaseFuture: Future<Output = Result<(), ReplayStoreError>>;
    /// What [`wait`](Self::wait) returns.
    type WaitFuture: Future<Output = ()>;

    /// Claims `key` for `lease` if it is absent; see the [trait docs](Self).
    fn claim(&self, key: &ReplayKey, lease: Duration) -> Self::ClaimFuture;

    /// Claims `delivery.key`, one delivery of a webhook (the
    /// [delivery scope](crate::replay_guard::Scope::Delivery)), as [`claim`](Self::claim)
    /// does, and bounds how many deliveries of that webhook are kept apart. They are counted
    /// under `delivery.deliveries` ([`ReplayKey::deliveries`]), in the same atomic step:
    ///
    /// - `key` present: answered as by [`claim`](Self::claim) (done or in flight), whatever
    ///   the count;
    /// - `key` absent and fewer than `max` deliveries counted: the count goes up by one (a
    ///   count begins with its first delivery and lasts `period`), and `key` is claimed for
    ///   `lease`;
    /// - `key` absent and `max` deliveries counted: [`Claim::TooManyDeliveries`], and nothing
    ///   is stored.
    ///
    /// So whatever a sender does with the unsigned idempotency token, one signed webhook
    /// takes at most `max` entries (and the count's) per `period`. The guard keeps a
    /// delivery's entry for `period` after its answer, so about `2 × max` are alive at once.
    ///
    /// The default claims `key` without counting: **unbounded**. The stores of this crate
    /// count; a store that wraps another should forward it.
    fn claim_delivery(&self, delivery: &DeliveryClaim) -> Self::ClaimFuture {
        self.claim(&delivery.key, delivery.lease)
    }

    /// Extends `token`'s claim on `key` to `lease` from now; `Ok(false)` if `token` no longer
    /// holds it.
    fn renew(&self, key: &ReplayKey, token: ClaimToken, lease: Duration) -> Self::RenewFuture;

    /// Stores `record.answer` and marks `key` done for `record.window`, whoever holds it now.
    fn complete(&self, key: &ReplayKey, token: ClaimToken, record: Record) -> Self::CompleteFuture;

    /// Deletes `key` if `token` still holds it.
    fn release(&self, key: &ReplayKey, token: ClaimToken) -> Self::ReleaseFuture;

    /// Finishes when `key`'s claim may have been settled (or after a backoff); see the
    /// [trait docs](Self).
    fn wait(&self, key: &ReplayKey, attempt: u32) -> Self::WaitFuture;

    /// Releases a claim from synchronous code: the guard calls it when a request is dropped
    /// before its handler answered (the client went away), so that Twilio's retry is not
    /// turned away as in flight.
    ///
    /// The default polls [`release`](Self::release) once, which finishes a store whose futures
    /// are ready at once; otherwise the claim stays until its lease runs out. A store that
    /// talks to a server should start the release in the background instead (the Redis store
    /// spawns it on the current tokio runtime).
    fn release_detached(&self, key: &ReplayKey, token: ClaimToken) {
        let mut release = pin!(self.release(key, token));
        let _ = release
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
    }

    /// Records a processed webhook from synchronous code: the guard calls it when a request
    /// whose handler answered 2xx is dropped before the store recorded it (the client went
    /// away while the answer was read or stored). The handler has acted, so the webhook must
    /// not be left to a lapsing claim that lets a copy run it again.
    ///
    /// The default polls [`complete`](Self::complete) once, which finishes a store whose
    /// futures are ready at once; otherwise the claim lapses after its lease and a copy runs
    /// the handler again. A store that talks to a server should start the completion in the
    /// background instead (the Redis and PostgreSQL stores spawn it on the current tokio
    /// runtime); a store that wraps another should forward it.
    fn complete_detached(&self, key: &ReplayKey, token: ClaimToken, record: Record) {
        let mut complete = pin!(self.complete(key, token, record));
        let _ = complete
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
    }
}

/// A [`ReplayStore`] operation failed. `Display` text is for people and may change; match on
/// [`Self::kind`].
pub struct ReplayStoreError {
    kind: ReplayStoreErrorKind,
    source: Option<BoxError>,
}

/// What kind of failure a [`ReplayStoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayStoreErrorKind {
    /// The store is at its size limit and holds no expired entry to make room: a new webhook
    /// cannot be recorded, so it is never taken as new-and-guarded (the guard runs it
    /// unguarded with an `ERROR` event, or refuses it, as it is configured).
    Full,
    /// The store could not be reached or did not answer in time (a Redis server down, a
    /// network failure, a timeout).
    Unavailable,
    /// The store answered something the guard cannot interpret.
    Protocol,
}

impl ReplayStoreError {
    /// An error of `kind` without a cause.
    pub fn new(kind: ReplayStoreErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(kind: ReplayStoreErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> ReplayStoreErrorKind {
        self.kind
    }
}

impl fmt::Debug for ReplayStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayStoreError")
            .field("kind", &self.kind)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

impl fmt::Display for ReplayStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ReplayStoreErrorKind::Full => "replay store is full",
            ReplayStoreErrorKind::Unavailable => "replay store unavailable",
            ReplayStoreErrorKind::Protocol => "replay store answered unexpectedly",
        };
        match &self.source {
            Some(source) => write!(f, "{what}: {source}"),
            None => f.pad(what),
        }
    }
}

impl Error for ReplayStoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
