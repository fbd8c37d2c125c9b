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
/// 3. [`complete`](Self::complete): store the answer and mark the key done for `window`,
///    whoever holds it now (the handler succeeded, so that is the truth).
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

    /// Claims `key`, one delivery of a webhook (the
    /// [delivery scope](crate::replay_guard::Scope::Delivery)), as [`claim`](Self::claim)
    /// does, and bounds how many deliveries of that webhook are kept apart. `deliveries`
    /// ([`ReplayKey::deliveries`]) is where they are counted, in the same atomic step:
    ///
    /// - `key` present: answered as by [`claim`](Self::claim) (done or in flight), whatever
    ///   the count;
    /// - `key` absent and fewer than `max` deliveries counted: the count goes up by one (a
    ///   count begins with its first delivery and lasts `period`), and `key` is claimed;
    /// - `key` absent and `max` deliveries counted: [`Claim::TooManyDeliveries`], and nothing
    ///   is stored.
    ///
    /// So whatever a sender does with the unsigned idempotency token, one signed webhook
    /// takes at most `max` entries (and the count's) per `period`. The guard keeps a
    /// delivery's entry for `period` after its answer, so about `2 × max` are alive at once.
    ///
    /// The default claims `key` without counting: **unbounded**. The stores of this crate
    /// count; a store that wraps another should forward it.
    fn claim_delivery(
        &self,
        key: &ReplayKey,
        deliveries: &ReplayKey,
        max: u32,
        period: Duration,
        lease: Duration,
    ) -> Self::ClaimFuture {
        let _ = (deliveries, max, period);
        self.claim(key, lease)
    }

    /// Extends `token`'s claim on `key` to `lease` from now; `Ok(false)` if `token` no longer
    /// holds it.
    fn renew(&self, key: &ReplayKey, token: ClaimToken, lease: Duration) -> Self::RenewFuture;

    /// Stores `answer` and marks `key` done for `window`.
    fn complete(
        &self,
        key: &ReplayKey,
        token: ClaimToken,
        answer: StoredAnswer,
        window: Duration,
    ) -> Self::CompleteFuture;

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
    fn complete_detached(
        &self,
        key: &ReplayKey,
        token: ClaimToken,
        answer: StoredAnswer,
        window: Duration,
    ) {
        let mut complete = pin!(self.complete(key, token, answer, window));
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

/// How long a copy waits before it asks a shared store again whether the first attempt has
/// settled: 25 ms, doubling to 400 ms. Shared stores cannot wake a waiting copy; they are
/// asked again instead.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn poll_backoff(attempt: u32) -> tokio::time::Sleep {
    let backoff = Duration::from_millis(25) * 2u32.saturating_pow(attempt.min(4));
    tokio::time::sleep(backoff)
}

/// [`ReplayStore::release_detached`] and [`ReplayStore::complete_detached`] for a store that
/// talks to a server: each starts the operation on the current tokio runtime. Without one, a
/// released claim stays until its lease runs out, and a completed one lapses after its lease.
#[cfg(any(feature = "redis", feature = "postgres"))]
macro_rules! spawn_detached_operations {
    () => {
        /// Spawns the release on the current tokio runtime; without one, the claim stays until
        /// its lease runs out.
        fn release_detached(
            &self,
            key: &$crate::replay::ReplayKey,
            token: $crate::replay::ClaimToken,
        ) {
            $crate::replay::store::spawn_detached(
                self.release(key, token),
                "could not release a replay claim; it stays until its lease runs out",
            );
        }

        /// Spawns the completion on the current tokio runtime; without one, the claim lapses
        /// after its lease.
        fn complete_detached(
            &self,
            key: &$crate::replay::ReplayKey,
            token: $crate::replay::ClaimToken,
            answer: $crate::replay::StoredAnswer,
            window: ::std::time::Duration,
        ) {
            $crate::replay::store::spawn_detached(
                self.complete(key, token, answer, window),
                "could not record a processed webhook whose request was dropped; a copy \
                 arriving after the claim's lease runs the handler again",
            );
        }
    };
}
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) use spawn_detached_operations;

/// Runs a shared store's operation on the current tokio runtime, warning with `failed` when
/// it fails; see [`spawn_detached_operations`].
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn spawn_detached<F>(operation: F, failed: &'static str)
where
    F: Future<Output = Result<(), ReplayStoreError>> + Send + 'static,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(error) = operation.await {
                tracing::warn!(target: crate::events::TRACING_TARGET, %error, "{failed}");
            }
        });
    }
}

/// A new claim token for a shared store: 128 random bits from the operating system, so that
/// no other instance can hold or guess it.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn random_token() -> Result<ClaimToken, ReplayStoreError> {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes).map_err(|error| {
        ReplayStoreError::with_source(ReplayStoreErrorKind::Unavailable, error.to_string())
    })?;
    Ok(ClaimToken::new(u128::from_le_bytes(bytes)))
}
