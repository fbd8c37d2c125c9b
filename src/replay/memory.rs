//! [`MemoryStore`]: the replay guard's store for one process, bounded by bytes.

use std::{
    collections::{
        BTreeMap, HashMap,
        hash_map::{self, RandomState},
    },
    fmt,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pin_project_lite::pin_project;
use tokio::{
    sync::{Notify, futures::OwnedNotified},
    time::{Instant, Sleep},
};

use super::{
    Claim, ClaimToken, ReplayKey, ReplayStore, ReplayStoreError, ReplayStoreErrorKind, StoredAnswer,
};

/// The in-memory [`ReplayStore`]: one process, bounded by bytes. The default store.
///
/// # When it is full
///
/// It never forgets an entry before its time. Expired entries are dropped first (in order of
/// expiry, as they are met); when the store is at its limit and nothing has expired, a claim
/// for a **new** webhook fails with [`ReplayStoreErrorKind::Full`]. Duplicates of webhooks it
/// holds are still recognised, and webhooks in flight still complete. The guard treats it as
/// a store failure: by default the new webhook runs unguarded with an `ERROR` event (see
/// [`StoreFailure`](crate::replay_guard::StoreFailure)). Evicting the oldest entry instead would turn a
/// full store into one that silently accepts duplicates of what it evicted, which is exactly
/// what the guard is for.
///
/// Size it for the webhooks one window brings: each entry costs at most
/// [`ENTRY_BYTES`](Self::ENTRY_BYTES) bytes of heap (hash table, expiry index and their
/// growth slack, measured), and a stored answer [`ANSWER_BYTES`](Self::ANSWER_BYTES) more
/// than its body and content type. The default 64 MiB holds 174 759 webhooks without answers,
/// or about 74 000 with a 300-byte TwiML answer each: about one a second for the 24-hour
/// window. An answer that does not fit any more is kept as "done" only (its copies get an
/// empty answer, and the store reports it at `WARN`); a new webhook that does not fit is
/// refused with [`ReplayStoreErrorKind::Full`].
///
/// The deliveries of one webhook ([`claim_delivery`](ReplayStore::claim_delivery)) are
/// counted in an entry of their own (one more [`ENTRY_BYTES`](Self::ENTRY_BYTES)), which
/// expires with its period, as the Redis and PostgreSQL stores count them.
///
/// A copy that [waits](ReplayStore::wait) for a claim here is woken the moment the claim is
/// completed, released or lapses.
///
/// Time comes from [`tokio::time::Instant`], so tests can move it with `tokio::time::pause`.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::StatusCode;
/// use tower_twilio::{
///     replay::{Claim, MemoryStore, ReplayKey, ReplayStore, StoredAnswer},
///     signature::Algorithm,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_twilio::replay::ReplayStoreError> {
/// let store = MemoryStore::new(1024 * 1024);
/// let key = ReplayKey::new(Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// let Claim::Claimed(token) = store.claim(&key, Duration::from_secs(60)).await? else {
///     unreachable!("a new key");
/// };
/// assert_eq!(store.claim(&key, Duration::from_secs(60)).await?, Claim::InFlight);
/// let answer = StoredAnswer::new(StatusCode::OK, None, Bytes::from_static(b"<Response/>"));
/// store.complete(&key, token, answer.clone(), Duration::from_secs(24 * 3600)).await?;
/// assert_eq!(store.claim(&key, Duration::from_secs(60)).await?, Claim::Done(answer));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    table: Arc<Mutex<Table>>,
}

impl MemoryStore {
    /// The heap one entry may cost, in bytes, with the hash table and the expiry index at
    /// their worst growth slack. Checked by a test that fills a store to its limit and counts
    /// every byte it allocates.
    pub const ENTRY_BYTES: usize = 384;

    /// The heap a stored answer costs beyond its body and content type (the box that holds it
    /// and the reference counts its copies share), in bytes.
    pub const ANSWER_BYTES: usize = 192;

    /// The heap the store needs whatever its size (the first nodes of its tables), in bytes.
    pub const FIXED_BYTES: usize = 1024;

    /// The default limit: 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

    /// A store that keeps at most `max_bytes` of heap: at most
    /// `(max_bytes - FIXED_BYTES) / ENTRY_BYTES` entries (at least one), fewer as stored
    /// answers take their share.
    pub fn new(max_bytes: usize) -> Self {
        let budget = max_bytes
            .saturating_sub(Self::FIXED_BYTES)
            .max(Self::ENTRY_BYTES);
        Self {
            table: Arc::new(Mutex::new(Table {
                entries: HashMap::with_hasher(RandomState::new()),
                expiries: BTreeMap::new(),
                next: 0,
                budget,
                used: 0,
            })),
        }
    }

    /// The bytes its entries and stored answers count for now, out of its limit (less
    /// [`FIXED_BYTES`](Self::FIXED_BYTES)).
    pub fn used_bytes(&self) -> usize {
        self.lock().used
    }

    /// How many entries (claimed or done, expired ones not yet dropped included) it holds.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries it will hold when they store no answer.
    pub fn capacity(&self) -> usize {
        self.lock().budget / Self::ENTRY_BYTES
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update leaves the table consistent before anything that could panic, so a
        // poisoned lock holds a usable table.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    /// A store of [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES).
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_BYTES)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.lock();
        f.debug_struct("MemoryStore")
            .field("len", &table.entries.len())
            .field("used_bytes", &table.used)
            .field("capacity", &(table.budget / Self::ENTRY_BYTES))
            .finish()
    }
}

/// Kept small: the hash table's buckets are most of the store's memory.
struct Entry {
    expires: Instant,
    /// Its key in `expiries`, and while claimed, the claim token.
    seq: u64,
    state: State,
}

enum State {
    /// Held by the request whose token is `seq`; the copies waiting for it, once one waits.
    Claimed(Option<Arc<Notify>>),
    /// Processed: the answer's status, and the answer when it was kept.
    Done(StatusCode, Option<Box<StoredAnswer>>),
    /// How many deliveries of one webhook were claimed since this count began (under a
    /// [`ReplayKey::deliveries`] key).
    Deliveries(u32),
}

impl State {
    /// What a claim of a key in this state answers.
    fn claim(&self) -> Claim {
        match self {
            Self::Done(_, Some(answer)) => Claim::Done(StoredAnswer::clone(answer)),
            Self::Done(status, None) => Claim::Done(StoredAnswer::done_only(*status)),
            // A count is never under a key that is claimed (domains apart): in flight, never
            // new.
            Self::Claimed(_) | Self::Deliveries(_) => Claim::InFlight,
        }
    }

    /// The bytes the entry's answer counts for.
    fn answer_bytes(&self) -> usize {
        match self {
            Self::Done(_, Some(answer)) => answer_bytes(answer),
            _ => 0,
        }
    }

    /// Wakes the copies waiting for this claim, if any.
    fn settle(&self) {
        if let Self::Claimed(Some(waiters)) = self {
            waiters.notify_waiters();
        }
    }
}

/// The done state for `answer`: with the answer when it fits in `room` bytes, else "done"
/// only (reported at `WARN`).
fn done(answer: &StoredAnswer, room: usize) -> State {
    let status = answer.status();
    if answer.body().is_none() {
        return State::Done(status, None);
    }
    if answer_bytes(answer) <= room {
        return State::Done(status, Some(Box::new(owned(answer))));
    }
    tracing::warn!(
        target: crate::events::TRACING_TARGET,
        "the replay store is too full to keep an answer: its copies get an empty answer"
    );
    State::Done(status, None)
}

fn answer_bytes(answer: &StoredAnswer) -> usize {
    MemoryStore::ANSWER_BYTES + answer.len()
}

/// The answer with its bytes in allocations of their own and of their exact size, so that
/// what is counted is what is held (a body sliced out of a larger buffer would keep all of it).
fn owned(answer: &StoredAnswer) -> StoredAnswer {
    let content_type = answer
        .content_type()
        .and_then(|value| HeaderValue::from_bytes(value.as_bytes()).ok());
    match answer.body() {
        Some(body) => {
            StoredAnswer::new(answer.status(), content_type, Bytes::copy_from_slice(body))
        }
        None => StoredAnswer::done_only(answer.status()),
    }
}

struct Table {
    /// Hashed with std's `RandomState` (SipHash with keys random per store), not by the key's
    /// bytes: a key is a SHA-256 anyone can compute, and in the delivery scope a sender who
    /// captured one webhook chooses its idempotency token freely, so keys whose bytes pick one
    /// bucket can be ground offline. With a secret hash they cannot be aimed.
    entries: HashMap<ReplayKey, Entry, RandomState>,
    /// Every entry once, by expiry: the front is the next to go.
    expiries: BTreeMap<(Instant, u64), ReplayKey>,
    /// Hands out claim tokens and expiry sequence numbers.
    next: u64,
    /// The bytes entries and answers may count for.
    budget: usize,
    /// The bytes they count for now.
    used: usize,
}

impl Table {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Drops every entry that has expired by `now`: each is met once, so this costs nothing
    /// on average. A lapsed claim wakes its waiters.
    fn purge(&mut self, now: Instant) {
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(entry) = self.entries.remove(&key) {
                self.used -= MemoryStore::ENTRY_BYTES + entry.state.answer_bytes();
                entry.state.settle();
            }
        }
    }

    /// Inserts `key`'s entry (absent before); returns its sequence number.
    fn insert(&mut self, key: ReplayKey, state: State, expires: Instant) -> u64 {
        let seq = self.next();
        self.used += MemoryStore::ENTRY_BYTES + state.answer_bytes();
        self.entries.insert(
            key,
            Entry {
                expires,
                seq,
                state,
            },
        );
        self.expiries.insert((expires, seq), key);
        seq
    }

    fn claim(&mut self, key: ReplayKey, lease: Duration) -> Result<Claim, ReplayStoreError> {
        let now = Instant::now();
        self.purge(now);
        // One hash of the key whether it is found or inserted.
        let vacant = match self.entries.entry(key) {
            hash_map::Entry::Occupied(entry) => return Ok(entry.get().state.claim()),
            hash_map::Entry::Vacant(vacant) => vacant,
        };
        if self.used + MemoryStore::ENTRY_BYTES > self.budget {
            return Err(ReplayStoreError::new(ReplayStoreErrorKind::Full));
        }
        self.next += 1;
        let (seq, expires) = (self.next, now + lease);
        self.used += MemoryStore::ENTRY_BYTES;
        vacant.insert(Entry {
            expires,
            seq,
            state: State::Claimed(None),
        });
        self.expiries.insert((expires, seq), key);
        Ok(Claim::Claimed(ClaimToken::new(u128::from(seq))))
    }

    /// [`claim`](Self::claim), counting a new delivery under `deliveries`; see
    /// [`ReplayStore::claim_delivery`].
    fn claim_delivery(
        &mut self,
        key: ReplayKey,
        deliveries: ReplayKey,
        max: u32,
        period: Duration,
        lease: Duration,
    ) -> Result<Claim, ReplayStoreError> {
        let now = Instant::now();
        self.purge(now);
        if let Some(entry) = self.entries.get(&key) {
            return Ok(entry.state.claim());
        }
        let counted = match self.entries.get(&deliveries).map(|entry| &entry.state) {
            Some(State::Deliveries(count)) => Some(*count),
            // Not a count (a SHA-256 collision across domains): never taken as room.
            Some(_) => return Ok(Claim::InFlight),
            None => None,
        };
        if counted.is_some_and(|count| count >= max) {
            return Ok(Claim::TooManyDeliveries);
        }
        let entries = if counted.is_some() { 1 } else { 2 };
        if self.used + entries * MemoryStore::ENTRY_BYTES > self.budget {
            return Err(ReplayStoreError::new(ReplayStoreErrorKind::Full));
        }
        match self.entries.get_mut(&deliveries) {
            Some(Entry {
                state: State::Deliveries(count),
                ..
            }) => *count += 1,
            _ => {
                self.insert(deliveries, State::Deliveries(1), now + period);
            }
        }
        let seq = self.insert(key, State::Claimed(None), now + lease);
        Ok(Claim::Claimed(ClaimToken::new(u128::from(seq))))
    }

    fn renew(&mut self, key: ReplayKey, token: ClaimToken, lease: Duration) -> bool {
        let now = Instant::now();
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        // A lapsed claim is not revived: a copy may have been told it is free.
        let ours = matches!(entry.state, State::Claimed(_)) && u128::from(entry.seq) == token.get();
        if !ours || entry.expires <= now {
            return false;
        }
        let expires = now + lease;
        self.expiries.remove(&(entry.expires, entry.seq));
        entry.expires = expires;
        self.expiries.insert((expires, entry.seq), key);
        true
    }

    fn complete(
        &mut self,
        key: ReplayKey,
        answer: &StoredAnswer,
        window: Duration,
    ) -> Result<(), ReplayStoreError> {
        let expires = Instant::now() + window;
        let Self {
            entries,
            expiries,
            budget,
            used,
            ..
        } = self;
        // One hash of the key when it is still claimed, as it mostly is.
        if let Some(entry) = entries.get_mut(&key) {
            let room = *budget - *used + entry.state.answer_bytes();
            let state = done(answer, room);
            *used = *used - entry.state.answer_bytes() + state.answer_bytes();
            expiries.remove(&(entry.expires, entry.seq));
            entry.expires = expires;
            let old = std::mem::replace(&mut entry.state, state);
            expiries.insert((expires, entry.seq), key);
            old.settle();
            return Ok(());
        }
        // The claim ran out and was dropped: record the webhook all the same if there is room,
        // since it was processed.
        let room = *budget - *used;
        if MemoryStore::ENTRY_BYTES > room {
            return Err(ReplayStoreError::new(ReplayStoreErrorKind::Full));
        }
        let state = done(answer, room - MemoryStore::ENTRY_BYTES);
        self.insert(key, state, expires);
        Ok(())
    }

    fn release(&mut self, key: ReplayKey, token: ClaimToken) {
        if let Some(entry) = self.entries.get(&key)
            && matches!(entry.state, State::Claimed(_))
            && u128::from(entry.seq) == token.get()
        {
            let expiry = (entry.expires, entry.seq);
            if let Some(entry) = self.entries.remove(&key) {
                self.used -= MemoryStore::ENTRY_BYTES;
                entry.state.settle();
            }
            self.expiries.remove(&expiry);
        }
    }

    /// What a copy waits on: the claim's waiters, until the claim lapses.
    fn wait(&mut self, key: ReplayKey) -> Option<(OwnedNotified, Instant)> {
        let entry = self.entries.get_mut(&key)?;
        let State::Claimed(waiters) = &mut entry.state else {
            return None;
        };
        let waiters = waiters.get_or_insert_with(|| Arc::new(Notify::new()));
        // Registered now, under the lock: a settle from here on wakes it.
        Some((Arc::clone(waiters).notified_owned(), entry.expires))
    }
}

pin_project! {
    /// What [`MemoryStore::wait`](ReplayStore::wait) returns: finishes when the claim is
    /// completed, released or lapses (or at once if it is not claimed any more).
    pub struct MemoryWait {
        #[pin]
        notified: Option<OwnedNotified>,
        #[pin]
        lapse: Option<Sleep>,
    }
}

impl fmt::Debug for MemoryWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryWait")
            .field("waiting", &self.notified.is_some())
            .finish()
    }
}

impl Future for MemoryWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Some(notified) = this.notified.as_pin_mut() else {
            return Poll::Ready(());
        };
        if notified.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        match this.lapse.as_pin_mut() {
            Some(lapse) => lapse.poll(cx),
            None => Poll::Pending,
        }
    }
}

impl ReplayStore for MemoryStore {
    type ClaimFuture = Ready<Result<Claim, ReplayStoreError>>;
    type RenewFuture = Ready<Result<bool, ReplayStoreError>>;
    type CompleteFuture = Ready<Result<(), ReplayStoreError>>;
    type ReleaseFuture = Ready<Result<(), ReplayStoreError>>;
    type WaitFuture = MemoryWait;

    fn claim(&self, key: &ReplayKey, lease: Duration) -> Self::ClaimFuture {
        ready(self.lock().claim(*key, lease))
    }

    fn claim_delivery(
        &self,
        key: &ReplayKey,
        deliveries: &ReplayKey,
        max: u32,
        period: Duration,
        lease: Duration,
    ) -> Self::ClaimFuture {
        ready(
            self.lock()
                .claim_delivery(*key, *deliveries, max, period, lease),
        )
    }

    fn renew(&self, key: &ReplayKey, token: ClaimToken, lease: Duration) -> Self::RenewFuture {
        ready(Ok(self.lock().renew(*key, token, lease)))
    }

    fn complete(
        &self,
        key: &ReplayKey,
        _token: ClaimToken,
        answer: StoredAnswer,
        window: Duration,
    ) -> Self::CompleteFuture {
        ready(self.lock().complete(*key, &answer, window))
    }

    fn release(&self, key: &ReplayKey, token: ClaimToken) -> Self::ReleaseFuture {
        self.lock().release(*key, token);
        ready(Ok(()))
    }

    fn wait(&self, key: &ReplayKey, _attempt: u32) -> Self::WaitFuture {
        let waiting = self.lock().wait(*key);
        let (notified, lapse) = match waiting {
            Some((notified, expires)) => (Some(notified), Some(tokio::time::sleep_until(expires))),
            None => (None, None),
        };
        MemoryWait { notified, lapse }
    }

    fn release_detached(&self, key: &ReplayKey, token: ClaimToken) {
        self.lock().release(*key, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Algorithm;

    const LEASE: Duration = Duration::from_secs(60);
    const WINDOW: Duration = Duration::from_secs(24 * 3600);

    fn key(n: u32) -> ReplayKey {
        ReplayKey::new(Algorithm::HmacSha1, &n.to_be_bytes())
    }

    fn claim(store: &MemoryStore, key: &ReplayKey) -> Result<Claim, ReplayStoreError> {
        store.lock().claim(*key, LEASE)
    }

    fn claimed(store: &MemoryStore, key: &ReplayKey) -> ClaimToken {
        match claim(store, key) {
            Ok(Claim::Claimed(token)) => token,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    fn done() -> StoredAnswer {
        StoredAnswer::done_only(StatusCode::OK)
    }

    fn twiml(body: &'static [u8]) -> StoredAnswer {
        StoredAnswer::new(
            StatusCode::OK,
            Some(HeaderValue::from_static("text/xml")),
            Bytes::from_static(body),
        )
    }

    fn complete(store: &MemoryStore, key: ReplayKey, answer: &StoredAnswer, window: Duration) {
        store.lock().complete(key, answer, window).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_goes_claimed_then_done_with_its_answer_then_expires() {
        let store = MemoryStore::default();
        let token = claimed(&store, &key(1));
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::InFlight);
        let answer = twiml(b"<Response><Message>hi</Message></Response>");
        complete(&store, key(1), &answer, WINDOW);
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::Done(answer.clone()));
        // A release with the old token does not undo the done mark.
        store.lock().release(key(1), token);
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::Done(answer));
        tokio::time::advance(WINDOW).await;
        assert!(matches!(claim(&store, &key(1)), Ok(Claim::Claimed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn release_frees_only_its_own_claim() {
        let store = MemoryStore::default();
        let first = claimed(&store, &key(1));
        // The lease runs out; another request claims the key; the first one's late release
        // must not delete the second one's claim.
        tokio::time::advance(LEASE).await;
        let second = claimed(&store, &key(1));
        assert_ne!(first, second);
        store.lock().release(key(1), first);
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::InFlight);
        store.lock().release(key(1), second);
        assert!(matches!(claim(&store, &key(1)), Ok(Claim::Claimed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_claim_outlives_its_first_lease_and_a_stale_token_renews_nothing() {
        let store = MemoryStore::default();
        let token = claimed(&store, &key(1));
        for _ in 0..5 {
            tokio::time::advance(LEASE / 2).await;
            assert!(store.lock().renew(key(1), token, LEASE));
        }
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::InFlight);
        assert!(
            !store
                .lock()
                .renew(key(1), ClaimToken::new(token.get() + 1), LEASE)
        );
        tokio::time::advance(LEASE).await;
        assert!(!store.lock().renew(key(1), token, LEASE), "lapsed");
        assert!(matches!(claim(&store, &key(1)), Ok(Claim::Claimed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_refuses_new_keys_but_still_knows_the_old_ones() {
        let store = MemoryStore::new(MemoryStore::FIXED_BYTES + 3 * MemoryStore::ENTRY_BYTES);
        assert_eq!(store.capacity(), 3);
        for n in 0..3 {
            claimed(&store, &key(n));
            complete(&store, key(n), &done(), WINDOW);
        }
        let error = claim(&store, &key(3)).unwrap_err();
        assert_eq!(error.kind(), ReplayStoreErrorKind::Full);
        // Nothing was evicted to make room: every duplicate is still recognised.
        for n in 0..3 {
            assert_eq!(claim(&store, &key(n)).unwrap(), Claim::Done(done()));
        }
        // Once an entry expires there is room again, and only the expired one is forgotten.
        tokio::time::advance(WINDOW).await;
        claimed(&store, &key(3));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stored_answers_count_toward_the_bound_and_one_that_does_not_fit_is_done_only() {
        let body = &[b'x'; 1000];
        let answer = StoredAnswer::new(StatusCode::OK, None, Bytes::from_static(body));
        let one = MemoryStore::ENTRY_BYTES + MemoryStore::ANSWER_BYTES + 1000;
        let store = MemoryStore::new(MemoryStore::FIXED_BYTES + 2 * one);
        for n in 0..2 {
            claimed(&store, &key(n));
            complete(&store, key(n), &answer, WINDOW);
            assert_eq!(claim(&store, &key(n)).unwrap(), Claim::Done(answer.clone()));
        }
        assert_eq!(store.used_bytes(), 2 * one);
        // Room for the entry of a third (the answers took it) is gone.
        assert_eq!(
            claim(&store, &key(2)).unwrap_err().kind(),
            ReplayStoreErrorKind::Full
        );
        // In a store with room for three entries but two answers, the third is done only.
        let store = MemoryStore::new(MemoryStore::FIXED_BYTES + 2 * one + MemoryStore::ENTRY_BYTES);
        for n in 0..3 {
            claimed(&store, &key(n));
            complete(&store, key(n), &answer, WINDOW);
        }
        assert_eq!(claim(&store, &key(2)).unwrap(), Claim::Done(done()));
        assert!(store.used_bytes() <= 2 * one + MemoryStore::ENTRY_BYTES);
        // Expiry gives the bytes back.
        tokio::time::advance(WINDOW).await;
        claimed(&store, &key(9));
        assert_eq!(store.used_bytes(), MemoryStore::ENTRY_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_go_first_in_order_of_expiry() {
        let store = MemoryStore::new(MemoryStore::FIXED_BYTES + 2 * MemoryStore::ENTRY_BYTES);
        claimed(&store, &key(1));
        complete(&store, key(1), &done(), Duration::from_secs(10));
        claimed(&store, &key(2));
        complete(&store, key(2), &done(), Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(15)).await;
        claimed(&store, &key(3));
        assert_eq!(claim(&store, &key(2)).unwrap(), Claim::Done(done()));
        assert_eq!(claim(&store, &key(3)).unwrap(), Claim::InFlight);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_completed_key_whose_claim_lapsed_is_recorded_again() {
        let store = MemoryStore::default();
        complete(&store, key(9), &done(), WINDOW);
        assert_eq!(claim(&store, &key(9)).unwrap(), Claim::Done(done()));
    }

    #[test]
    fn release_detached_finishes_at_once() {
        let store = MemoryStore::default();
        let token = claimed(&store, &key(1));
        store.release_detached(&key(1), token);
        assert!(store.is_empty());
        assert_eq!(store.used_bytes(), 0);
    }

    /// An attacker who captured one voice webhook chooses its unsigned
    /// `I-Twilio-Idempotency-Token` freely, and the key the guard derives from it is public
    /// (SHA-256 over the signature and the token). Ground offline, tokens whose keys share the
    /// hash the table would use put every entry in one bucket's probe sequence: each claim of
    /// such a key, and each claim that meets it, then compares against all of them under the
    /// store's lock. The table's hash must not be predictable from the key alone.
    #[tokio::test]
    async fn tokens_ground_against_the_key_do_not_share_a_bucket() {
        use bytes::Bytes;
        use http::{Request, Response};
        use tower::{ServiceBuilder, ServiceExt};

        use crate::{
            VerifiedWebhook,
            form::Params,
            replay_guard::{ReplayGuardLayer, Scope},
            verified_webhook::{Facts, SignatureBytes},
            verify::{Covered, UrlForm},
        };

        const SIGNATURE: &[u8] = b"RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        const GROUND: usize = 32;
        // The low bits that pick a bucket in a table of up to 1024 buckets: what an attacker
        // aims at, 1 in 1024 tokens offline.
        const BUCKET_BITS: u64 = 0x3ff;
        let predicted = |key: &ReplayKey| {
            let (first, _) = key.as_bytes().split_first_chunk::<8>().unwrap();
            u64::from_le_bytes(*first)
        };
        let ground: Vec<String> = (0u64..)
            .map(|n| format!("grind-{n}"))
            .filter(|token| {
                let key = ReplayKey::for_delivery(Algorithm::HmacSha1, SIGNATURE, token.as_bytes());
                predicted(&key) & BUCKET_BITS == 0
            })
            .take(GROUND)
            .collect();

        let store = MemoryStore::default();
        let guard = ReplayGuardLayer::new(store.clone()).scope(Scope::Delivery);
        let service = ServiceBuilder::new()
            .layer(guard)
            .service_fn(|_: Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"<Response/>"),
                )))
            });
        for token in &ground {
            let mut request = Request::new(());
            request.extensions_mut().insert(VerifiedWebhook::new(Facts {
                account_sid: None,
                tenant_id: None,
                credential: "primary".into(),
                algorithm: Algorithm::HmacSha1,
                url_form: UrlForm::AsReceived,
                covered: Covered::FormParams,
                params: Params::default(),
                idempotency_token: Some(HeaderValue::from_str(token).unwrap()),
                signature: SignatureBytes::new(SIGNATURE),
                url: "https://example.com/twilio/voice".to_owned(),
                client_ip: None,
            }));
            let response = service.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }

        let table = store.lock();
        let hasher = table.entries.hasher();
        let buckets: std::collections::HashSet<u64> = ground
            .iter()
            .map(|token| {
                let key = ReplayKey::for_delivery(Algorithm::HmacSha1, SIGNATURE, token.as_bytes());
                assert!(
                    table.entries.contains_key(&key),
                    "every ground token was stored"
                );
                std::hash::BuildHasher::hash_one(hasher, key) & BUCKET_BITS
            })
            .collect();
        assert!(
            buckets.len() > GROUND / 2,
            "{GROUND} ground keys fell in {} of 1024 buckets",
            buckets.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_the_claim_settles_or_lapses_and_not_before() {
        let store = MemoryStore::default();
        // Not claimed: nothing to wait for.
        store.wait(&key(1), 0).await;
        let token = claimed(&store, &key(1));
        let mut wait = Box::pin(store.wait(&key(1), 0));
        let noop = &mut Context::from_waker(std::task::Waker::noop());
        assert!(wait.as_mut().poll(noop).is_pending());
        complete(&store, key(1), &done(), WINDOW);
        assert!(
            wait.as_mut().poll(noop).is_ready(),
            "woken by the completion"
        );

        claimed(&store, &key(2));
        let mut wait = Box::pin(store.wait(&key(2), 0));
        assert!(wait.as_mut().poll(noop).is_pending());
        store.lock().release(key(1), token); // not its claim
        assert!(wait.as_mut().poll(noop).is_pending());
        tokio::time::timeout(LEASE * 2, wait)
            .await
            .expect("woken when the lease lapses");
    }
}
