//! [`MemoryStore`]: the replay guard's store for one process, bounded by bytes.

use std::{
    collections::hash_map::RandomState,
    fmt,
    future::{Future, Ready, ready},
    hash::BuildHasher,
    mem,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hashbrown::HashTable;
use http::{HeaderValue, StatusCode};
use pin_project_lite::pin_project;
use tokio::{
    sync::{Notify, futures::OwnedNotified},
    time::{Instant, Sleep},
};

use super::{
    Claim, ClaimToken, DeliveryClaim, Record, ReplayKey, ReplayStore, ReplayStoreError,
    ReplayStoreErrorKind, StoredAnswer,
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
/// [`ENTRY_BYTES`](Self::ENTRY_BYTES) bytes of heap (its record, the index and their growth
/// slack, measured), and a stored answer [`ANSWER_BYTES`](Self::ANSWER_BYTES) more than its
/// body and content type. The default 64 MiB holds 174 759 webhooks without answers, or about
/// 74 000 with a 300-byte TwiML answer each: about one a second for the 24-hour window. An
/// answer that does not fit any more is kept as "done" only (its copies get an empty answer,
/// and the store reports it at `WARN`); a new webhook that does not fit is refused with
/// [`ReplayStoreErrorKind::Full`].
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
///     replay::{Claim, Record, MemoryStore, ReplayKey, ReplayStore, StoredAnswer},
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
/// let window = Duration::from_secs(24 * 3600);
/// store.complete(&key, token, Record::new(answer.clone(), window)).await?;
/// assert_eq!(store.claim(&key, Duration::from_secs(60)).await?, Claim::Done(answer));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    table: Arc<Mutex<Table>>,
}

impl MemoryStore {
    /// The heap one entry may cost, in bytes, with its record, the index and the lists of
    /// expiries at their worst growth slack. Checked by a test that fills a store to its limit
    /// and counts every byte it allocates.
    pub const ENTRY_BYTES: usize = 384;

    /// The heap a stored answer costs beyond its body and content type (its one allocation and
    /// the reference count its copies share), in bytes.
    pub const ANSWER_BYTES: usize = 192;

    /// The heap the store needs whatever its size (the first pieces of its tables), in bytes.
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
                hasher: RandomState::new(),
                index: HashTable::new(),
                slots: Slots {
                    chunks: Vec::new(),
                    free: NONE,
                    high: 0,
                },
                lists: Vec::new(),
                epoch: Instant::now(),
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
        self.lock().index.len()
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
            .field("len", &table.index.len())
            .field("used_bytes", &table.used)
            .field("capacity", &(table.budget / Self::ENTRY_BYTES))
            .finish()
    }
}

/// No slot: the end of a list.
const NONE: u32 = u32::MAX;

/// Slots per chunk of [`Slots`]: a chunk is never moved once full, and at most one is not.
const CHUNK: usize = 4096;

/// The most lists of expiries a store keeps (one per duration it is given; more durations
/// share them, in order all the same).
const MAX_LISTS: usize = 32;

/// The stored answer's first bytes: 0 without a content type, else its length plus one.
const PREFIX: usize = 4;

/// One entry: a webhook claimed or done, or a count of deliveries (or a free slot).
///
/// The entries live in [`Slots`], not in the hash table: the table holds a small [`Link`] to
/// each, so that it stays small enough for the CPU's caches however many entries there are, and
/// a new entry is written to a slot that was just freed or is next in line.
struct Slot {
    key: ReplayKey,
    /// Nanoseconds after the store's epoch.
    expires: u64,
    /// Unique per entry: its claim token (with the slot's number).
    seq: u64,
    /// The 32 bits of its key's hash that the index holds.
    hash: u32,
    /// Its neighbours in its list of expiries; `next` also chains the free slots.
    prev: u32,
    next: u32,
    /// Which list of expiries it is in.
    list: u8,
    state: State,
}

enum State {
    /// Not an entry: on the free chain.
    Free,
    /// Held by the request whose token is `seq`; the copies waiting for it, once one waits.
    Claimed(Option<Arc<Notify>>),
    /// Processed: the answer's status, and the answer when it was kept, in one allocation:
    /// [`PREFIX`], the content type, the body.
    Done(StatusCode, Option<Bytes>),
    /// How many deliveries of one webhook were claimed since this count began (under a
    /// [`ReplayKey::deliveries`] key).
    Deliveries(u32),
}

impl State {
    /// What a claim of a key in this state answers.
    fn claim(&self) -> Claim {
        match self {
            Self::Done(status, Some(answer)) => Claim::Done(unpack(*status, answer)),
            Self::Done(status, None) => Claim::Done(StoredAnswer::done_only(*status)),
            // A count is never under a key that is claimed (domains apart): in flight, never
            // new. A free slot is never found under a key.
            Self::Claimed(_) | Self::Deliveries(_) | Self::Free => Claim::InFlight,
        }
    }

    /// The bytes the entry's answer counts for.
    fn answer_bytes(&self) -> usize {
        match self {
            Self::Done(_, Some(answer)) => MemoryStore::ANSWER_BYTES + answer.len() - PREFIX,
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
    let Some(body) = answer.body() else {
        return State::Done(status, None);
    };
    if MemoryStore::ANSWER_BYTES + answer.len() <= room {
        return State::Done(status, Some(pack(answer.content_type(), body)));
    }
    tracing::warn!(
        target: crate::events::TRACING_TARGET,
        "the replay store is too full to keep an answer: its copies get an empty answer"
    );
    State::Done(status, None)
}

/// The content type and the body copied into one allocation of their exact size, so that what
/// is counted is what is held (a body sliced out of a larger buffer would keep all of it).
fn pack(content_type: Option<&HeaderValue>, body: &[u8]) -> Bytes {
    // No header is 4 GiB long (one that were would be left out).
    let content_type = content_type
        .map(HeaderValue::as_bytes)
        .filter(|value| value.len() < u32::MAX as usize);
    let tag = content_type.map_or(0, |value| value.len() as u32 + 1);
    let content_type = content_type.unwrap_or_default();
    let mut packed = Vec::with_capacity(PREFIX + content_type.len() + body.len());
    packed.extend_from_slice(&tag.to_le_bytes());
    packed.extend_from_slice(content_type);
    packed.extend_from_slice(body);
    Bytes::from(packed)
}

/// The answer [`pack`] kept: its content type and body share the allocation (no copy).
fn unpack(status: StatusCode, packed: &Bytes) -> StoredAnswer {
    let (tag, _) = packed.split_first_chunk::<PREFIX>().expect("packed");
    let (content_type, body) = match (u32::from_le_bytes(*tag) as usize).checked_sub(1) {
        Some(length) => {
            let value = packed.slice(PREFIX..PREFIX + length);
            let value = HeaderValue::from_maybe_shared(value).ok();
            (value, PREFIX + length)
        }
        None => (None, PREFIX),
    };
    StoredAnswer::new(status, content_type, packed.slice(body..))
}

/// Where the index finds an entry: its slot, and 32 bits of its key's hash, from which the
/// table's own hash is rebuilt when it grows (without reading the slot).
#[derive(Clone, Copy)]
struct Link {
    slot: u32,
    hash: u32,
}

/// The 64-bit hash the index is given for 32 bits of a key's hash: hashbrown takes the
/// bucket from its low bits and a tag from its top seven.
fn wide(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// A duration in nanoseconds, at most `u64::MAX` (584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Every entry in chunks of [`CHUNK`] slots that never move (the first one grows by doubling
/// until it is full, the others are made whole), with the free slots chained: a slot freed by an expiry is the next one
/// taken, while it is still in the CPU's caches.
struct Slots {
    chunks: Vec<Vec<Slot>>,
    /// The first free slot, or [`NONE`].
    free: u32,
    /// How many slots were ever taken (the free ones included).
    high: u32,
}

impl Slots {
    fn get(&self, slot: u32) -> &Slot {
        let slot = slot as usize;
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn get_mut(&mut self, slot: u32) -> &mut Slot {
        let slot = slot as usize;
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// The slot, if there is one by that number (a token from elsewhere may name any).
    fn find(&self, slot: u32) -> Option<&Slot> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)
    }

    /// Puts `entry` in a slot: `None` when four billion are taken.
    fn take(&mut self, entry: Slot) -> Option<u32> {
        if self.free != NONE {
            let slot = self.free;
            let taken = self.get_mut(slot);
            let free = taken.next;
            *taken = entry;
            self.free = free;
            return Some(slot);
        }
        if self.high == NONE {
            return None;
        }
        let slot = self.high as usize;
        if slot.is_multiple_of(CHUNK) {
            // The first chunk grows (a small store stays small); later ones are made whole,
            // so that no chunk is ever copied again.
            let capacity = if slot == 0 { 0 } else { CHUNK };
            self.chunks.push(Vec::with_capacity(capacity));
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room");
        if chunk.len() == chunk.capacity() {
            let capacity = chunk.capacity();
            chunk.reserve_exact(capacity.max(4).min(CHUNK - capacity));
        }
        chunk.push(entry);
        self.high += 1;
        Some(slot as u32)
    }

    /// Frees `slot`; its state, to be dropped (and its waiters woken) by the caller.
    fn free(&mut self, slot: u32) -> State {
        let free = self.free;
        let freed = self.get_mut(slot);
        freed.next = free;
        let state = mem::replace(&mut freed.state, State::Free);
        self.free = slot;
        state
    }
}

/// Entries in order of expiry, linked through their slots. Each list is for one duration, so
/// an entry (now plus that duration) goes at its end; an entry of another duration walks back
/// to its place.
#[derive(Clone, Copy)]
struct List {
    /// The duration its entries were given, in nanoseconds.
    every: u64,
    head: u32,
    tail: u32,
    /// When the head expires (so that a purge reads no slot until one has expired).
    head_expires: u64,
}

impl List {
    const EMPTY: Self = Self {
        every: 0,
        head: NONE,
        tail: NONE,
        head_expires: 0,
    };

    /// Links `slot` (already given its expiry) in its place, list number `number`.
    fn link(&mut self, number: u8, slot: u32, slots: &mut Slots) {
        let expires = slots.get(slot).expires;
        let mut after = self.tail;
        while after != NONE && slots.get(after).expires > expires {
            after = slots.get(after).prev;
        }
        let before = match after {
            NONE => self.head,
            after => slots.get(after).next,
        };
        let linked = slots.get_mut(slot);
        (linked.list, linked.prev, linked.next) = (number, after, before);
        match after {
            NONE => (self.head, self.head_expires) = (slot, expires),
            after => slots.get_mut(after).next = slot,
        }
        match before {
            NONE => self.tail = slot,
            before => slots.get_mut(before).prev = slot,
        }
    }

    fn unlink(&mut self, slot: u32, slots: &mut Slots) {
        let Slot { prev, next, .. } = *slots.get(slot);
        match prev {
            NONE => {
                self.head = next;
                if next != NONE {
                    self.head_expires = slots.get(next).expires;
                }
            }
            prev => slots.get_mut(prev).next = next,
        }
        match next {
            NONE => self.tail = prev,
            next => slots.get_mut(next).prev = prev,
        }
    }
}

struct Table {
    /// The index's hash: std's `RandomState` (SipHash with keys random per store), not the
    /// key's bytes: a key is a SHA-256 anyone can compute, and in the delivery scope a sender
    /// who captured one webhook chooses its idempotency token freely, so keys whose bytes pick
    /// one bucket can be ground offline. With a secret hash they cannot be aimed.
    hasher: RandomState,
    /// Every entry's [`Link`], by its key's hash: its length is how many entries there are.
    index: HashTable<Link>,
    slots: Slots,
    /// Every entry once, by expiry, one list per duration: each head is the next to go there.
    lists: Vec<List>,
    /// What expiries count from.
    epoch: Instant,
    /// Hands out claim tokens.
    next: u64,
    /// The bytes entries and answers may count for.
    budget: usize,
    /// The bytes they count for now.
    used: usize,
}

impl Table {
    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    /// 32 bits of `key`'s keyed hash.
    fn hash(&self, key: &ReplayKey) -> u32 {
        let hash = self.hasher.hash_one(key);
        (hash ^ (hash >> 32)) as u32
    }

    /// The slot of `key`'s entry.
    fn find(&self, key: &ReplayKey, hash: u32) -> Option<u32> {
        let slots = &self.slots;
        let link = self.index.find(wide(hash), |link| {
            link.hash == hash && slots.get(link.slot).key == *key
        })?;
        Some(link.slot)
    }

    /// The slot `token` names, when it holds `key` (whoever holds that now): a completion
    /// finds its entry without the hash.
    fn named(&self, key: &ReplayKey, token: ClaimToken) -> Option<u32> {
        let slot = token.get() as u32;
        let named = self.slots.find(slot)?;
        (!matches!(named.state, State::Free) && named.key == *key).then_some(slot)
    }

    /// The slot of `key`'s claim while `token` holds it.
    fn held(&self, key: &ReplayKey, token: ClaimToken) -> Option<u32> {
        let slot = self.named(key, token)?;
        let held = self.slots.get(slot);
        let ours = matches!(held.state, State::Claimed(_)) && Some(held.seq) == seq(token);
        ours.then_some(slot)
    }

    /// The list for entries that last `every` nanoseconds.
    fn list(&mut self, every: u64) -> u8 {
        let lists = &mut self.lists;
        let number = match lists.iter().position(|list| list.every == every) {
            Some(number) => number,
            None => match lists.iter().position(|list| list.head == NONE) {
                Some(number) => {
                    lists[number].every = every;
                    number
                }
                None if lists.len() < MAX_LISTS => {
                    lists.push(List {
                        every,
                        ..List::EMPTY
                    });
                    lists.len() - 1
                }
                // Every list is in use for another duration: the nearest shorter one, where
                // the entry goes closest to the end (in its place all the same).
                None => lists
                    .iter()
                    .enumerate()
                    .filter(|(_, list)| list.every <= every)
                    .max_by_key(|(_, list)| list.every)
                    .map_or(0, |(number, _)| number),
            },
        };
        number as u8
    }

    /// Gives `slot` the expiry `now + every` and links it in its place.
    fn expire(&mut self, slot: u32, now: u64, every: Duration) {
        let every = nanos(every);
        self.slots.get_mut(slot).expires = now.saturating_add(every);
        let number = self.list(every);
        self.lists[usize::from(number)].link(number, slot, &mut self.slots);
    }

    /// Gives the entry in `slot` a new expiry.
    fn renew_expiry(&mut self, slot: u32, now: u64, every: Duration) {
        let number = self.slots.get(slot).list;
        self.lists[usize::from(number)].unlink(slot, &mut self.slots);
        self.expire(slot, now, every);
    }

    /// Inserts `key`'s entry (absent before), expiring `every` from `now`; returns its slot.
    fn insert(
        &mut self,
        key: ReplayKey,
        hash: u32,
        state: State,
        now: u64,
        every: Duration,
    ) -> Result<u32, ReplayStoreError> {
        let bytes = MemoryStore::ENTRY_BYTES + state.answer_bytes();
        self.next += 1;
        let slot = self
            .slots
            .take(Slot {
                key,
                expires: 0,
                seq: self.next,
                hash,
                prev: NONE,
                next: NONE,
                list: 0,
                state,
            })
            .ok_or_else(|| ReplayStoreError::new(ReplayStoreErrorKind::Full))?;
        self.expire(slot, now, every);
        let link = Link { slot, hash };
        self.index
            .insert_unique(wide(hash), link, |link| wide(link.hash));
        self.used += bytes;
        Ok(slot)
    }

    /// Removes the entry in `slot` and wakes its waiters.
    fn remove(&mut self, slot: u32) {
        let (number, hash) = {
            let removed = self.slots.get(slot);
            (removed.list, removed.hash)
        };
        self.lists[usize::from(number)].unlink(slot, &mut self.slots);
        if let Ok(link) = self.index.find_entry(wide(hash), |link| link.slot == slot) {
            link.remove();
        }
        let state = self.slots.free(slot);
        self.used -= MemoryStore::ENTRY_BYTES + state.answer_bytes();
        state.settle();
    }

    /// Drops every entry that has expired by `now`: each is met once, so this costs nothing
    /// on average. A lapsed claim wakes its waiters.
    fn purge(&mut self, now: u64) {
        for number in 0..self.lists.len() {
            loop {
                let list = self.lists[number];
                if list.head == NONE || list.head_expires > now {
                    break;
                }
                self.remove(list.head);
            }
        }
    }

    fn token(&self, slot: u32) -> ClaimToken {
        let seq = self.slots.get(slot).seq;
        ClaimToken::new((u128::from(seq) << 32) | u128::from(slot))
    }

    fn claim(&mut self, key: ReplayKey, lease: Duration) -> Result<Claim, ReplayStoreError> {
        let now = self.now();
        self.purge(now);
        let hash = self.hash(&key);
        if let Some(slot) = self.find(&key, hash) {
            return Ok(self.slots.get(slot).state.claim());
        }
        if self.used + MemoryStore::ENTRY_BYTES > self.budget {
            return Err(ReplayStoreError::new(ReplayStoreErrorKind::Full));
        }
        let slot = self.insert(key, hash, State::Claimed(None), now, lease)?;
        Ok(Claim::Claimed(self.token(slot)))
    }

    /// [`claim`](Self::claim), counting a new delivery; see [`ReplayStore::claim_delivery`].
    fn claim_delivery(&mut self, delivery: &DeliveryClaim) -> Result<Claim, ReplayStoreError> {
        let DeliveryClaim {
            key,
            deliveries,
            max,
            period,
            lease,
        } = *delivery;
        let now = self.now();
        self.purge(now);
        let hash = self.hash(&key);
        if let Some(slot) = self.find(&key, hash) {
            return Ok(self.slots.get(slot).state.claim());
        }
        let count_hash = self.hash(&deliveries);
        let count = self.find(&deliveries, count_hash);
        let counted = match count.map(|slot| &self.slots.get(slot).state) {
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
        match count {
            Some(slot) => {
                if let State::Deliveries(count) = &mut self.slots.get_mut(slot).state {
                    *count += 1;
                }
            }
            None => {
                self.insert(deliveries, count_hash, State::Deliveries(1), now, period)?;
            }
        }
        let slot = self.insert(key, hash, State::Claimed(None), now, lease)?;
        Ok(Claim::Claimed(self.token(slot)))
    }

    fn renew(&mut self, key: ReplayKey, token: ClaimToken, lease: Duration) -> bool {
        let now = self.now();
        let Some(slot) = self.held(&key, token) else {
            return false;
        };
        // A lapsed claim is not revived: a copy may have been told it is free.
        if self.slots.get(slot).expires <= now {
            return false;
        }
        self.renew_expiry(slot, now, lease);
        true
    }

    fn complete(
        &mut self,
        key: ReplayKey,
        token: ClaimToken,
        record: &Record,
    ) -> Result<(), ReplayStoreError> {
        let (answer, window) = (&record.answer, record.window);
        let now = self.now();
        // The token's slot when it still holds the key, as it mostly does: no hash.
        let (found, hash) = match self.named(&key, token) {
            Some(slot) => (Some(slot), 0),
            None => {
                let hash = self.hash(&key);
                (self.find(&key, hash), hash)
            }
        };
        if let Some(slot) = found {
            let held = self.slots.get(slot).state.answer_bytes();
            let state = done(answer, self.budget - self.used + held);
            self.used = self.used - held + state.answer_bytes();
            let old = mem::replace(&mut self.slots.get_mut(slot).state, state);
            self.renew_expiry(slot, now, window);
            old.settle();
            return Ok(());
        }
        // The claim ran out and was dropped: record the webhook all the same if there is room,
        // since it was processed.
        let room = self.budget - self.used;
        if MemoryStore::ENTRY_BYTES > room {
            return Err(ReplayStoreError::new(ReplayStoreErrorKind::Full));
        }
        let state = done(answer, room - MemoryStore::ENTRY_BYTES);
        self.insert(key, hash, state, now, window)?;
        Ok(())
    }

    fn release(&mut self, key: ReplayKey, token: ClaimToken) {
        if let Some(slot) = self.held(&key, token) {
            self.remove(slot);
        }
    }

    /// What a copy waits on: the claim's waiters, until the claim lapses (when that is a time
    /// a clock can hold).
    fn wait(&mut self, key: ReplayKey) -> Option<(OwnedNotified, Option<Instant>)> {
        let hash = self.hash(&key);
        let slot = self.find(&key, hash)?;
        let epoch = self.epoch;
        let entry = self.slots.get_mut(slot);
        let State::Claimed(waiters) = &mut entry.state else {
            return None;
        };
        let waiters = waiters.get_or_insert_with(|| Arc::new(Notify::new()));
        let lapse = epoch.checked_add(Duration::from_nanos(entry.expires));
        // Registered now, under the lock: a settle from here on wakes it.
        Some((Arc::clone(waiters).notified_owned(), lapse))
    }
}

/// The claim number a token of this store carries (above its slot's 32 bits).
fn seq(token: ClaimToken) -> Option<u64> {
    u64::try_from(token.get() >> 32).ok()
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

    fn claim_delivery(&self, delivery: &DeliveryClaim) -> Self::ClaimFuture {
        ready(self.lock().claim_delivery(delivery))
    }

    fn renew(&self, key: &ReplayKey, token: ClaimToken, lease: Duration) -> Self::RenewFuture {
        ready(Ok(self.lock().renew(*key, token, lease)))
    }

    fn complete(&self, key: &ReplayKey, token: ClaimToken, record: Record) -> Self::CompleteFuture {
        ready(self.lock().complete(*key, token, &record))
    }

    fn release(&self, key: &ReplayKey, token: ClaimToken) -> Self::ReleaseFuture {
        self.lock().release(*key, token);
        ready(Ok(()))
    }

    fn wait(&self, key: &ReplayKey, _attempt: u32) -> Self::WaitFuture {
        let waiting = self.lock().wait(*key);
        let (notified, lapse) = match waiting {
            Some((notified, lapse)) => (Some(notified), lapse.map(tokio::time::sleep_until)),
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

    /// A token that names no slot: the completion finds its entry by key.
    const NO_TOKEN: ClaimToken = ClaimToken::new(u128::MAX);

    fn complete(
        store: &MemoryStore,
        key: ReplayKey,
        token: ClaimToken,
        answer: &StoredAnswer,
        window: Duration,
    ) {
        let answer = answer.clone();
        let record = Record::new(answer, window);
        store.lock().complete(key, token, &record).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_goes_claimed_then_done_with_its_answer_then_expires() {
        let store = MemoryStore::default();
        let token = claimed(&store, &key(1));
        assert_eq!(claim(&store, &key(1)).unwrap(), Claim::InFlight);
        let answer = twiml(b"<Response><Message>hi</Message></Response>");
        complete(&store, key(1), token, &answer, WINDOW);
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
            let token = claimed(&store, &key(n));
            complete(&store, key(n), token, &done(), WINDOW);
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
            let token = claimed(&store, &key(n));
            complete(&store, key(n), token, &answer, WINDOW);
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
            let token = claimed(&store, &key(n));
            complete(&store, key(n), token, &answer, WINDOW);
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
        let token = claimed(&store, &key(1));
        complete(&store, key(1), token, &done(), Duration::from_secs(10));
        let token = claimed(&store, &key(2));
        complete(&store, key(2), token, &done(), Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(15)).await;
        claimed(&store, &key(3));
        assert_eq!(claim(&store, &key(2)).unwrap(), Claim::Done(done()));
        assert_eq!(claim(&store, &key(3)).unwrap(), Claim::InFlight);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_completed_key_whose_claim_lapsed_is_recorded_again() {
        let store = MemoryStore::default();
        complete(&store, key(9), NO_TOKEN, &done(), WINDOW);
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
            replay_guard::{ReplayGuardLayer, Scope},
            verify::Covered,
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
            request.extensions_mut().insert(VerifiedWebhook::for_tests(
                "https://example.com/twilio/voice",
                Covered::FormParams,
                Some(SIGNATURE),
                Some(HeaderValue::from_str(token).unwrap()),
            ));
            let response = service.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }

        let table = store.lock();
        let buckets: std::collections::HashSet<u64> = ground
            .iter()
            .map(|token| {
                let key = ReplayKey::for_delivery(Algorithm::HmacSha1, SIGNATURE, token.as_bytes());
                let hash = table.hash(&key);
                assert!(
                    table.find(&key, hash).is_some(),
                    "every ground token was stored"
                );
                // The index's bucket: the low bits of the hash it is given.
                wide(hash) & BUCKET_BITS
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
        complete(&store, key(1), token, &done(), WINDOW);
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
