//! [`MemoryStore`]: the replay guard's store for one process, bounded by bytes.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    future::{Ready, ready},
    hash::{BuildHasherDefault, Hasher},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use super::{Claim, ClaimToken, ReplayKey, ReplayStore, ReplayStoreError, ReplayStoreErrorKind};

/// The in-memory [`ReplayStore`]: one process, bounded by bytes. The default store.
///
/// # When it is full
///
/// It never forgets an entry before its time. Expired entries are dropped first (in order of
/// expiry, as they are met); when the store is at its limit and nothing has expired, a claim
/// for a **new** webhook fails with [`ReplayStoreErrorKind::Full`]. Duplicates of webhooks it
/// holds are still recognised, and webhooks in flight still complete. With the guard's
/// default fail-closed mode the new webhook gets a 503 and Twilio retries it later; with
/// fail-open it passes with an `ERROR` event. Evicting the oldest entry instead would turn a
/// full store into one that silently accepts duplicates of what it evicted, which is exactly
/// what the guard is for.
///
/// Size it for the webhooks one window brings: each entry costs at most
/// [`ENTRY_BYTES`](Self::ENTRY_BYTES) bytes of heap (hash table, expiry index and their
/// growth slack, measured), so the default 64 MiB holds 190 647 webhooks: 2.2 a second
/// for the 24-hour window.
///
/// Time comes from [`tokio::time::Instant`], so tests can move it with `tokio::time::pause`.
///
/// ```
/// use std::time::Duration;
/// use tower_twilio::{replay::{Claim, MemoryStore, ReplayKey, ReplayStore}, signature::Algorithm};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_twilio::replay::ReplayStoreError> {
/// let store = MemoryStore::new(1024 * 1024);
/// let key = ReplayKey::new("AC123", Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// let Claim::Claimed(token) = store.claim(&key, Duration::from_secs(60)).await? else {
///     unreachable!("a new key");
/// };
/// assert_eq!(store.claim(&key, Duration::from_secs(60)).await?, Claim::InFlight);
/// store.complete(&key, token, Duration::from_secs(24 * 3600)).await?;
/// assert_eq!(store.claim(&key, Duration::from_secs(60)).await?, Claim::Done);
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
    pub const ENTRY_BYTES: usize = 352;

    /// The heap the store needs whatever its size (the first nodes of its tables), in bytes.
    pub const FIXED_BYTES: usize = 1024;

    /// The default limit: 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

    /// A store that keeps at most `max_bytes` of heap: at most
    /// `(max_bytes - FIXED_BYTES) / ENTRY_BYTES` entries, and at least one.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            table: Arc::new(Mutex::new(Table {
                entries: HashMap::default(),
                expiries: BTreeMap::new(),
                next: 0,
                max_entries: (max_bytes.saturating_sub(Self::FIXED_BYTES) / Self::ENTRY_BYTES)
                    .max(1),
            })),
        }
    }

    /// How many entries (claimed or done, expired ones not yet dropped included) it holds.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries it will hold.
    pub fn capacity(&self) -> usize {
        self.lock().max_entries
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
            .field("capacity", &table.max_entries)
            .finish()
    }
}

/// Kept small: the hash table's buckets are most of the store's memory.
struct Entry {
    expires: Instant,
    /// Its key in `expiries`, and while claimed, the claim token.
    seq: u64,
    done: bool,
}

/// The keys are SHA-256 outputs of verified signatures: uniform, and not chosen by a sender
/// without the secret. [`ReplayKey`] hashes as its first eight bytes, which are a hash
/// already; SipHash over them would only add time.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `ReplayKey`; fold anything else in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

struct Table {
    entries: HashMap<ReplayKey, Entry, BuildHasherDefault<KeyHasher>>,
    /// Every entry once, by expiry: the front is the next to go.
    expiries: BTreeMap<(Instant, u64), ReplayKey>,
    /// Hands out claim tokens and expiry sequence numbers.
    next: u64,
    max_entries: usize,
}

impl Table {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Drops every entry that has expired by `now`: each is met once, so this costs nothing
    /// on average.
    fn purge(&mut self, now: Instant) {
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    /// Inserts or replaces `key`'s entry; returns its sequence number.
    fn insert(&mut self, key: ReplayKey, done: bool, expires: Instant) -> u64 {
        let seq = self.next();
        let entry = Entry { expires, seq, done };
        if let Some(old) = self.entries.insert(key, entry) {
            self.expiries.remove(&(old.expires, old.seq));
        }
        self.expiries.insert((expires, seq), key);
        seq
    }

    fn claim(&mut self, key: ReplayKey, lease: Duration) -> Result<Claim, ReplayStoreError> {
        let now = Instant::now();
        self.purge(now);
        if let Some(entry) = self.entries.get(&key) {
            return Ok(if entry.done {
                Claim::Done
            } else {
                Claim::InFlight
            });
        }
        if self.entries.len() >= self.max_entries {
            return Err(ReplayStoreError::new(ReplayStoreErrorKind::Full));
        }
        let seq = self.insert(key, false, now + lease);
        Ok(Claim::Claimed(ClaimToken::new(u128::from(seq))))
    }

    fn complete(&mut self, key: ReplayKey, window: Duration) -> Result<(), ReplayStoreError> {
        let expires = Instant::now() + window;
        if let Some(entry) = self.entries.get_mut(&key) {
            self.expiries.remove(&(entry.expires, entry.seq));
            entry.expires = expires;
            entry.done = true;
            self.expiries.insert((expires, entry.seq), key);
            return Ok(());
        }
        // The claim ran out and was dropped: record the webhook all the same if there is room,
        // since it was processed.
        if self.entries.len() >= self.max_entries {
            return Err(ReplayStoreError::new(ReplayStoreErrorKind::Full));
        }
        self.insert(key, true, expires);
        Ok(())
    }

    fn release(&mut self, key: ReplayKey, token: ClaimToken) {
        if let Some(entry) = self.entries.get(&key)
            && !entry.done
            && u128::from(entry.seq) == token.get()
        {
            let expiry = (entry.expires, entry.seq);
            self.entries.remove(&key);
            self.expiries.remove(&expiry);
        }
    }
}

impl ReplayStore for MemoryStore {
    type ClaimFuture = Ready<Result<Claim, ReplayStoreError>>;
    type CompleteFuture = Ready<Result<(), ReplayStoreError>>;
    type ReleaseFuture = Ready<Result<(), ReplayStoreError>>;

    fn claim(&self, key: &ReplayKey, lease: Duration) -> Self::ClaimFuture {
        ready(self.lock().claim(*key, lease))
    }

    fn complete(
        &self,
        key: &ReplayKey,
        _token: ClaimToken,
        window: Duration,
    ) -> Self::CompleteFuture {
        ready(self.lock().complete(*key, window))
    }

    fn release(&self, key: &ReplayKey, token: ClaimToken) -> Self::ReleaseFuture {
        self.lock().release(*key, token);
        ready(Ok(()))
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
        ReplayKey::new("AC1", Algorithm::HmacSha1, &n.to_be_bytes())
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

    #[tokio::test(start_paused = true)]
    async fn a_key_goes_claimed_then_done_then_expires() {
        let store = MemoryStore::default();
        let token = claimed(&store, &key(1));
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::InFlight);
        store.lock().complete(key(1), WINDOW).unwrap();
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::Done);
        // A release with the old token does not undo the done mark.
        store.lock().release(key(1), token);
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::Done);
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
    async fn a_full_store_refuses_new_keys_but_still_knows_the_old_ones() {
        let store = MemoryStore::new(MemoryStore::FIXED_BYTES + 3 * MemoryStore::ENTRY_BYTES);
        assert_eq!(store.capacity(), 3);
        for n in 0..3 {
            claimed(&store, &key(n));
            store.lock().complete(key(n), WINDOW).unwrap();
        }
        let error = claim(&store, &key(3)).unwrap_err();
        assert_eq!(error.kind(), ReplayStoreErrorKind::Full);
        // Nothing was evicted to make room: every duplicate is still recognised.
        for n in 0..3 {
            assert_eq!(claim(&store, &key(n)).unwrap(), Claim::Done);
        }
        // Once an entry expires there is room again, and only the expired one is forgotten.
        tokio::time::advance(WINDOW).await;
        claimed(&store, &key(3));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_go_first_in_order_of_expiry() {
        let store = MemoryStore::new(MemoryStore::FIXED_BYTES + 2 * MemoryStore::ENTRY_BYTES);
        claimed(&store, &key(1));
        store
            .lock()
            .complete(key(1), Duration::from_secs(10))
            .unwrap();
        claimed(&store, &key(2));
        store
            .lock()
            .complete(key(2), Duration::from_secs(20))
            .unwrap();
        tokio::time::advance(Duration::from_secs(15)).await;
        claimed(&store, &key(3));
        assert_eq!(claim(&store, &key(2)).unwrap(), Claim::Done);
        assert_eq!(claim(&store, &key(3)).unwrap(), Claim::InFlight);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_completed_key_whose_claim_lapsed_is_recorded_again() {
        let store = MemoryStore::default();
        store.lock().complete(key(9), WINDOW).unwrap();
        assert_eq!(claim(&store, &key(9)).unwrap(), Claim::Done);
    }

    #[test]
    fn release_detached_finishes_at_once() {
        let store = MemoryStore::default();
        let token = claimed(&store, &key(1));
        store.release_detached(&key(1), token);
        assert!(store.is_empty());
    }
}
