//! [`TestStore`]: one replay store for the tests that need a store other than a working one,
//! wrapping a real store and changing only what [`Fault`] names.

use std::{
    future::{Future, ready},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tower_twilio::replay::{
    Claim, ClaimToken, DeliveryClaim, MemoryStore, Record, ReplayKey, ReplayStore,
    ReplayStoreError, ReplayStoreErrorKind,
};

/// A store a test can put behind a boxed service shared between tasks: it and its futures are
/// `Send` and `'static` (as every store of the crate is).
pub(crate) trait SendStore:
    ReplayStore<
        ClaimFuture: Send,
        RenewFuture: Send,
        CompleteFuture: Send,
        ReleaseFuture: Send,
        WaitFuture: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<St> SendStore for St
where
    St: ReplayStore + Clone + Send + Sync + 'static,
    St::ClaimFuture: Send,
    St::RenewFuture: Send,
    St::CompleteFuture: Send,
    St::ReleaseFuture: Send,
    St::WaitFuture: Send,
{
}

/// What a [`TestStore`] changes in the store it wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Nothing: every operation is the inner store's.
    None,
    /// Every operation fails as [`Unavailable`](ReplayStoreErrorKind::Unavailable): a store
    /// that is down.
    Down,
    /// `complete` fails: claims work, a processed webhook is never recorded.
    CompleteFails,
    /// `complete` and `release` reach the inner store this long after they are called, as a
    /// shared store's round trip does: the operation happens when its future finishes, never
    /// if the future is dropped.
    Slow(Duration),
}

/// An operation of the store, as a [`Fault`] tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Claim,
    Renew,
    Complete,
    Release,
}

impl Fault {
    fn fails(self, operation: Operation) -> bool {
        match self {
            Self::Down => true,
            Self::CompleteFails => operation == Operation::Complete,
            Self::None | Self::Slow(_) => false,
        }
    }

    fn delay(self, operation: Operation) -> Option<Duration> {
        match (self, operation) {
            (Self::Slow(round_trip), Operation::Complete | Operation::Release) => Some(round_trip),
            _ => None,
        }
    }
}

/// A boxed store operation: the one future type whatever the inner store's.
pub(crate) type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type Answer<T> = Boxed<Result<T, ReplayStoreError>>;

/// A [`ReplayStore`] that forwards every operation to `inner`, but for its [`Fault`], and
/// counts the claims it answered [`Claim::InFlight`]: a test sees that a copy reached the
/// store and was told to wait. The detached operations are spawned on the runtime, as the
/// Redis and PostgreSQL stores spawn theirs.
#[derive(Debug, Clone)]
pub(crate) struct TestStore<St = MemoryStore> {
    inner: St,
    fault: Fault,
    in_flight: Arc<AtomicUsize>,
}

impl TestStore {
    /// A store that is down.
    pub(crate) fn down() -> Self {
        Self::new(MemoryStore::default(), Fault::Down)
    }
}

impl<St> TestStore<St> {
    pub(crate) fn new(inner: St, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            in_flight: Arc::default(),
        }
    }

    /// How many claims it answered [`Claim::InFlight`].
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

impl<St: SendStore> TestStore<St> {
    /// `operation` on the inner store, as the fault has it: failed, later, or now.
    fn forward<T, F>(
        &self,
        kind: Operation,
        operation: impl FnOnce(&St) -> F + Send + 'static,
    ) -> Answer<T>
    where
        F: Future<Output = Result<T, ReplayStoreError>> + Send + 'static,
        T: Send + 'static,
    {
        if self.fault.fails(kind) {
            let unavailable = ReplayStoreError::new(ReplayStoreErrorKind::Unavailable);
            return Box::pin(ready(Err(unavailable)));
        }
        let Some(round_trip) = self.fault.delay(kind) else {
            return Box::pin(operation(&self.inner));
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::time::sleep(round_trip).await;
            operation(&inner).await
        })
    }

    /// Counts `claim` when it answers [`Claim::InFlight`].
    fn counted(&self, claim: Answer<Claim>) -> Answer<Claim> {
        let in_flight = Arc::clone(&self.in_flight);
        Box::pin(async move {
            let claim = claim.await;
            if let Ok(Claim::InFlight) = claim {
                in_flight.fetch_add(1, Ordering::SeqCst);
            }
            claim
        })
    }
}

impl<St: SendStore> ReplayStore for TestStore<St> {
    type ClaimFuture = Answer<Claim>;
    type RenewFuture = Answer<bool>;
    type CompleteFuture = Answer<()>;
    type ReleaseFuture = Answer<()>;
    type WaitFuture = Boxed<()>;

    fn claim(&self, key: &ReplayKey, lease: Duration) -> Self::ClaimFuture {
        let key = *key;
        self.counted(self.forward(Operation::Claim, move |store| store.claim(&key, lease)))
    }

    fn claim_delivery(&self, delivery: &DeliveryClaim) -> Self::ClaimFuture {
        let delivery = *delivery;
        let claim = move |store: &St| store.claim_delivery(&delivery);
        self.counted(self.forward(Operation::Claim, claim))
    }

    fn renew(&self, key: &ReplayKey, token: ClaimToken, lease: Duration) -> Self::RenewFuture {
        let key = *key;
        self.forward(Operation::Renew, move |store| {
            store.renew(&key, token, lease)
        })
    }

    fn complete(&self, key: &ReplayKey, token: ClaimToken, record: Record) -> Self::CompleteFuture {
        let key = *key;
        self.forward(Operation::Complete, move |store| {
            store.complete(&key, token, record)
        })
    }

    fn release(&self, key: &ReplayKey, token: ClaimToken) -> Self::ReleaseFuture {
        let key = *key;
        self.forward(Operation::Release, move |store| store.release(&key, token))
    }

    fn wait(&self, key: &ReplayKey, attempt: u32) -> Self::WaitFuture {
        Box::pin(self.inner.wait(key, attempt))
    }

    fn release_detached(&self, key: &ReplayKey, token: ClaimToken) {
        tokio::spawn(self.release(key, token));
    }

    fn complete_detached(&self, key: &ReplayKey, token: ClaimToken, record: Record) {
        tokio::spawn(self.complete(key, token, record));
    }
}
