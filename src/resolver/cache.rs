use std::{
    error::Error,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache as Store};

use super::{Credentials, Resolution, ResolveCredentials, ResolveRequest, ResolveTimeout};
use crate::BoxError;

const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// What one entry costs besides its key and answer: moka's bookkeeping (its entry, its places
/// in the access and expiry orders, its share of the table), the `Arc`s and the `Option`,
/// rounded up. One more negative entry for a 34-byte `AccountSid` holds 331 bytes on the heap
/// (the test `an_entry_weighs_at_least_the_memory_it_holds`): 256 left it weighing 290.
const ENTRY_OVERHEAD: usize = 320;
const DEFAULT_TTL: Duration = Duration::from_secs(60);
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// The future [`Cache`] returns.
pub type CacheFuture = Pin<Box<dyn Future<Output = Resolution> + Send + 'static>>;

/// Remembers what a resolver answered, per account, for a while.
///
/// - **Key.** The SharedKey id when the request names one, otherwise the `AccountSid`; the two
///   never share an entry. A request that carries neither goes to the inner resolver every
///   time.
/// - **Hits** (`Ok(Some(_))`) are kept for [`ttl`](Self::ttl), **misses** (`Ok(None)`, an
///   unknown account) for the usually shorter [`negative_ttl`](Self::negative_ttl), so a
///   burst of forged requests for made-up accounts does not reach the database each time.
/// - **Errors are never kept**: the next request asks again. An error comes back with the
///   same message and [`source`](std::error::Error::source) as the inner resolver's, but as a
///   different type, except [`ResolveTimeout`], which stays one (`error.is::<ResolveTimeout>()`).
/// - **At most [`max_bytes`](Self::max_bytes)** of answers are kept, counted by weight: each
///   entry weighs its key, its credentials (secrets, labels, tenant and account names, the
///   cached HMAC states) and a fixed overhead, so a few long keys cannot hold more memory than
///   many short ones. The least useful entries are evicted first. (The middleware refuses an
///   `AccountSid` that is not `AC` + 32 hex digits and a SharedKey id over 128 bytes before it
///   asks any resolver, so through the layer a key is never long.)
/// - **One lookup per key at a time.** When many requests for one account arrive together,
///   the first one runs the lookup and the others wait for its answer. If the first one is
///   dropped (its client went away), one of the waiting requests takes over. When the lookup
///   fails, every waiting request gets the error.
///
/// Clones share the cached answers, so a cache wrapped in a layer that is cloned per
/// connection is still one cache. Each lookup runs on a clone of the inner resolver, which
/// must therefore be `Clone` (as tower services are).
///
/// # Rotation and revocation
///
/// After an auth token is rotated or an account removed, the cache keeps answering with the
/// old credentials for up to [`ttl`](Self::ttl), and keeps an account created after a miss
/// unknown for up to [`negative_ttl`](Self::negative_ttl). Keep both short, or call
/// [`invalidate_account`](Self::invalidate_account) (or
/// [`invalidate_all`](Self::invalidate_all)) when credentials change. During a rotation,
/// return both the old and the new token from the inner resolver: the cache then never
/// holds a set that misses the one Twilio signs with.
///
/// # What the key leaves out
///
/// Only the SharedKey id or the `AccountSid` chooses the entry. An inner resolver whose
/// answer also depends on the path, the host or an extension (a tenant id set by an earlier
/// layer) must not be cached with this type: the first answer would be given to every
/// request for that account.
///
/// ```
/// use std::time::Duration;
/// use tower_twilio::resolver::{AccountMap, Cache};
///
/// let resolver = Cache::new(AccountMap::new())
///     .max_bytes(64 * 1024 * 1024)
///     .ttl(Duration::from_secs(30))
///     .negative_ttl(Duration::from_secs(5));
/// # let _ = resolver;
/// ```
#[derive(Clone)]
pub struct Cache<R> {
    inner: R,
    store: Store<Key, Option<Credentials>>,
    max_bytes: u64,
    ttl: Duration,
    negative_ttl: Duration,
}

/// Which entry a request's answer lives under.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    AccountSid(Box<str>),
    SharedKey(Box<str>),
}

impl Key {
    fn of(request: &ResolveRequest) -> Option<Self> {
        match (request.shared_key_id(), request.account_sid()) {
            (Some(key_id), _) => Some(Self::SharedKey(key_id.into())),
            (None, Some(account_sid)) => Some(Self::AccountSid(account_sid.into())),
            (None, None) => None,
        }
    }
}

/// Keeps hits for `hit` and misses for `miss`.
struct Ttl {
    hit: Duration,
    miss: Duration,
}

impl Ttl {
    fn of(&self, answer: &Option<Credentials>) -> Duration {
        if answer.is_some() {
            self.hit
        } else {
            self.miss
        }
    }
}

impl Expiry<Key, Option<Credentials>> for Ttl {
    fn expire_after_create(
        &self,
        _key: &Key,
        answer: &Option<Credentials>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.of(answer))
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        answer: &Option<Credentials>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(answer))
    }
}

impl<R> Cache<R> {
    /// Caches the answers of `inner`, with the defaults: at most 10 000 entries, hits kept
    /// for 60 seconds, misses for 10 seconds.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            store: build(DEFAULT_MAX_BYTES, DEFAULT_TTL, DEFAULT_NEGATIVE_TTL),
            max_bytes: DEFAULT_MAX_BYTES,
            ttl: DEFAULT_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        }
    }

    /// Keeps at most about `max_bytes` of answers (hits and misses together), counted by
    /// weight (see the type's docs). Default: 16 MiB, some 30 000 single-token accounts.
    ///
    /// Like the other settings, this starts an empty cache that the clones made before it
    /// do not share.
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self.rebuild()
    }

    /// Keeps credentials found for an account (`Ok(Some(_))`) for `ttl`. Default: 60 seconds.
    /// `Duration::ZERO` keeps none (concurrent requests still share one lookup).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.rebuild()
    }

    /// Keeps "unknown account" answers (`Ok(None)`) for `negative_ttl`. Default: 10 seconds.
    /// `Duration::ZERO` keeps none (concurrent requests still share one lookup).
    #[must_use]
    pub fn negative_ttl(mut self, negative_ttl: Duration) -> Self {
        self.negative_ttl = negative_ttl;
        self.rebuild()
    }

    fn rebuild(mut self) -> Self {
        self.store = build(self.max_bytes, self.ttl, self.negative_ttl);
        self
    }

    /// Forgets the answer for `account_sid`, e.g. after its auth token changed. A lookup
    /// already under way may still store the answer it gets.
    pub async fn invalidate_account(&self, account_sid: &str) {
        self.store
            .invalidate(&Key::AccountSid(account_sid.into()))
            .await;
    }

    /// Forgets the answer for the SharedKey `key_id`. A lookup already under way may still
    /// store the answer it gets.
    pub async fn invalidate_shared_key(&self, key_id: &str) {
        self.store.invalidate(&Key::SharedKey(key_id.into())).await;
    }

    /// Forgets every answer.
    pub fn invalidate_all(&self) {
        self.store.invalidate_all();
    }

    /// The wrapped resolver.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped resolver, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the resolver, dropping this handle on the cached answers.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// What an entry weighs, in bytes, roughly: its key, its answer and [`ENTRY_OVERHEAD`].
fn weight(key: &Key, answer: &Option<Credentials>) -> u32 {
    let key = match key {
        Key::AccountSid(sid) => sid.len(),
        Key::SharedKey(id) => id.len(),
    };
    let answer = answer.as_ref().map_or(0, Credentials::approximate_size);
    u32::try_from(ENTRY_OVERHEAD + key + answer).unwrap_or(u32::MAX)
}

fn build(max_bytes: u64, ttl: Duration, negative_ttl: Duration) -> Store<Key, Option<Credentials>> {
    Store::builder()
        .max_capacity(max_bytes)
        .weigher(weight)
        .expire_after(Ttl {
            hit: ttl,
            miss: negative_ttl,
        })
        .build()
}

impl<R> ResolveCredentials for Cache<R>
where
    R: ResolveCredentials + Clone + Send + 'static,
{
    type Future = CacheFuture;

    fn resolve(&mut self, request: ResolveRequest) -> Self::Future {
        let Some(key) = Key::of(&request) else {
            return Box::pin(self.inner.resolve(request));
        };
        let store = self.store.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            // The inner lookup starts only if this request ends up running it.
            let lookup = async move { inner.resolve(request).await };
            store.try_get_with(key, lookup).await.map_err(unshare)
        })
    }
}

/// Turns the error a failed lookup handed to every request that waited for it back into a
/// `BoxError`. moka shares it behind an `Arc` (and may hold on to a copy for a while), so the
/// original cannot be taken back: a [`ResolveTimeout`] is recreated, any other error is
/// wrapped in a type with the same message and source.
fn unshare(error: Arc<BoxError>) -> BoxError {
    if error.is::<ResolveTimeout>() {
        return Box::new(ResolveTimeout::new());
    }
    Box::new(SharedError(error))
}

struct SharedError(Arc<BoxError>);

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.0, f)
    }
}

impl Error for SharedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl<R: fmt::Debug> fmt::Debug for Cache<R> {
    /// Shows the settings, never the cached credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("max_bytes", &self.max_bytes)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{Secret, resolver::ResolveCredentialsExt};

    /// The error a failing backend returns.
    #[derive(Debug)]
    struct Down;

    impl fmt::Display for Down {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("database is down")
        }
    }

    impl Error for Down {}

    fn request() -> ResolveRequest {
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        ResolveRequest::new(parts, None, None)
    }

    fn for_account(account_sid: &str) -> ResolveRequest {
        for_account_and_key(account_sid, None)
    }

    fn for_account_and_key(account_sid: &str, key_id: Option<&str>) -> ResolveRequest {
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        ResolveRequest::new(parts, Some(account_sid), key_id)
    }

    fn for_key(key_id: &str) -> ResolveRequest {
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        ResolveRequest::new(parts, None, Some(key_id))
    }

    /// A backend that knows accounts whose SID starts with `AC` (and every SharedKey id),
    /// answers after `delay`, and counts its lookups.
    #[derive(Clone)]
    struct Backend {
        calls: Arc<AtomicUsize>,
        delay: Duration,
    }

    impl Backend {
        fn new() -> Self {
            Self::slow(Duration::ZERO)
        }

        fn slow(delay: Duration) -> Self {
            Self {
                calls: Arc::default(),
                delay,
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl ResolveCredentials for Backend {
        type Future = CacheFuture;

        fn resolve(&mut self, request: ResolveRequest) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                let known = request.shared_key_id().is_some()
                    || request
                        .account_sid()
                        .is_some_and(|sid| sid.starts_with("AC"));
                Ok(known.then(|| {
                    Credentials::new()
                        .tenant(request.account_sid().unwrap_or("keyed"))
                        .auth_token("primary", Secret::new("tok-XYZ").unwrap())
                }))
            })
        }
    }

    /// Fails its first `failures` lookups, then answers like [`Backend`].
    fn flaky(
        backend: &Backend,
        failures: usize,
    ) -> impl ResolveCredentials + Clone + Send + 'static {
        let backend = backend.clone();
        move |request: ResolveRequest| {
            let mut backend = backend.clone();
            async move {
                let answer = backend.resolve(request).await;
                if backend.calls() <= failures {
                    return Err(BoxError::from(Down));
                }
                answer
            }
        }
    }

    #[tokio::test]
    async fn hits_are_answered_from_the_cache() {
        let backend = Backend::new();
        let mut cache = Cache::new(backend.clone());
        for _ in 0..3 {
            let answer = cache.resolve(for_account("AC1")).await.unwrap().unwrap();
            assert_eq!(answer.tenant_id(), Some("AC1"));
        }
        assert_eq!(backend.calls(), 1);

        cache.resolve(for_account("AC2")).await.unwrap().unwrap();
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test]
    async fn misses_are_cached_too() {
        let backend = Backend::new();
        let mut cache = backend.clone().cached();
        for _ in 0..3 {
            assert!(cache.resolve(for_account("XX1")).await.unwrap().is_none());
        }
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test]
    async fn misses_expire_before_hits() {
        let backend = Backend::new();
        let mut cache = Cache::new(backend.clone())
            .ttl(Duration::from_secs(60))
            .negative_ttl(Duration::from_millis(100));
        cache.resolve(for_account("AC1")).await.unwrap();
        cache.resolve(for_account("XX1")).await.unwrap();
        assert_eq!(backend.calls(), 2);

        tokio::time::sleep(Duration::from_millis(150)).await;
        cache.resolve(for_account("AC1")).await.unwrap();
        assert_eq!(backend.calls(), 2, "the hit is still cached");
        cache.resolve(for_account("XX1")).await.unwrap();
        assert_eq!(backend.calls(), 3, "the miss has expired");
    }

    #[tokio::test]
    async fn hits_expire_after_ttl() {
        let backend = Backend::new();
        let mut cache = Cache::new(backend.clone()).ttl(Duration::from_millis(100));
        cache.resolve(for_account("AC1")).await.unwrap();
        cache.resolve(for_account("AC1")).await.unwrap();
        assert_eq!(backend.calls(), 1);

        tokio::time::sleep(Duration::from_millis(150)).await;
        cache.resolve(for_account("AC1")).await.unwrap();
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test]
    async fn zero_ttl_keeps_nothing() {
        let backend = Backend::new();
        let mut cache = Cache::new(backend.clone())
            .ttl(Duration::ZERO)
            .negative_ttl(Duration::ZERO);
        for sid in ["AC1", "AC1", "XX1", "XX1"] {
            cache.resolve(for_account(sid)).await.unwrap();
        }
        assert_eq!(backend.calls(), 4);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let backend = Backend::new();
        let mut cache = Cache::new(flaky(&backend, 1));
        let error = cache.resolve(for_account("AC1")).await.unwrap_err();
        assert_eq!(error.to_string(), "database is down");

        let answer = cache.resolve(for_account("AC1")).await.unwrap();
        assert!(answer.is_some());
        cache.resolve(for_account("AC1")).await.unwrap();
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_inside_the_cache_stay_typed() {
        let backend = Backend::slow(Duration::from_secs(10));
        let mut cache = backend.clone().timeout(Duration::from_secs(1)).cached();
        let error = cache.resolve(for_account("AC1")).await.unwrap_err();
        assert!(error.is::<ResolveTimeout>(), "{error}");
        cache.resolve(for_account("AC1")).await.unwrap_err();
        assert_eq!(backend.calls(), 2, "timeouts are not cached");
    }

    #[tokio::test]
    async fn requests_without_a_key_are_not_cached() {
        let backend = Backend::new();
        let mut cache = Cache::new(backend.clone());
        cache.resolve(request()).await.unwrap();
        cache.resolve(request()).await.unwrap();
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test]
    async fn shared_key_ids_and_account_sids_do_not_share_entries() {
        let backend = Backend::new();
        let mut cache = Cache::new(backend.clone());
        let miss = cache.resolve(for_account("K1")).await.unwrap();
        let hit = cache
            .resolve(for_account_and_key("K1", Some("K1")))
            .await
            .unwrap();
        assert!(miss.is_none() && hit.is_some());
        assert_eq!(backend.calls(), 2);

        // A SharedKey request is cached by its key id, whatever its AccountSid.
        cache
            .resolve(for_account_and_key("AC9", Some("K1")))
            .await
            .unwrap();
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_for_one_account_share_one_lookup() {
        let backend = Backend::slow(Duration::from_millis(50));
        let cache = Cache::new(backend.clone());
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let mut cache = cache.clone();
                tokio::spawn(async move { cache.resolve(for_account("AC1")).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().unwrap().is_some());
        }
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_failure() {
        let backend = Backend::slow(Duration::from_millis(50));
        let cache = Cache::new(flaky(&backend, 1));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let mut cache = cache.clone();
                tokio::spawn(async move { cache.resolve(for_account("AC1")).await })
            })
            .collect();
        for task in tasks {
            let error = task.await.unwrap().unwrap_err();
            assert_eq!(error.to_string(), "database is down");
        }
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test]
    async fn invalidation_forgets_answers() {
        let backend = Backend::new();
        let mut cache = Cache::new(backend.clone());
        cache.resolve(for_account("AC1")).await.unwrap();
        cache.resolve(for_key("K1")).await.unwrap();
        assert_eq!(backend.calls(), 2);

        cache.invalidate_account("AC1").await;
        cache.resolve(for_account("AC1")).await.unwrap();
        cache.resolve(for_key("K1")).await.unwrap();
        assert_eq!(backend.calls(), 3);

        cache.invalidate_shared_key("K1").await;
        cache.resolve(for_key("K1")).await.unwrap();
        assert_eq!(backend.calls(), 4);

        cache.invalidate_all();
        cache.resolve(for_account("AC1")).await.unwrap();
        assert_eq!(backend.calls(), 5);
    }

    #[tokio::test]
    async fn memory_is_bounded_by_weight_not_by_entry_count() {
        // The attack of issue 14: forged requests with 60 KB AccountSids, each leaving a
        // negative entry. Counting entries, 1000 of them held 60 MB.
        let limit = 1024 * 1024;
        let mut cache = Cache::new(Backend::new()).max_bytes(limit);
        for i in 0..200 {
            let sid = format!("{i:06}{}", "A".repeat(60_000));
            cache.resolve(for_account(&sid)).await.unwrap();
        }
        cache.store.run_pending_tasks().await;
        assert!(
            cache.store.weighted_size() <= limit,
            "{}",
            cache.store.weighted_size()
        );
        assert!(
            cache.store.entry_count() <= 17,
            "{}",
            cache.store.entry_count()
        );
        // Short keys: many more entries fit in the same budget.
        let mut cache = Cache::new(Backend::new()).max_bytes(limit);
        for i in 0..2000 {
            cache
                .resolve(for_account(&format!("AC{i:032x}")))
                .await
                .unwrap();
        }
        cache.store.run_pending_tasks().await;
        assert!(
            cache.store.entry_count() > 1000,
            "{}",
            cache.store.entry_count()
        );
    }

    #[test]
    fn an_entry_weighs_at_least_the_memory_it_holds() {
        // A flood of made-up accounts leaves one negative entry each: what one more entry
        // holds on the heap must not exceed what it weighs, or `max_bytes` would understate
        // the memory. Measured as the difference between two floods, so that what the cache
        // sets up once is left out.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let unknown = |_: ResolveRequest| std::future::ready(Ok(None));
        let held = |entries: u32| {
            let mut cache = Cache::new(unknown).max_bytes(64 * 1024 * 1024);
            let held = allocation_counter::measure(|| {
                runtime.block_on(async {
                    for i in 0..entries {
                        let sid = format!("AC{i:032x}");
                        cache.resolve(for_account(&sid)).await.unwrap();
                    }
                    cache.store.run_pending_tasks().await;
                });
            })
            .bytes_current;
            assert_eq!(cache.store.entry_count(), u64::from(entries));
            u64::try_from(held).unwrap()
        };
        let (few, many) = (held(2048), held(4096));
        let per_entry = (many - few) / 2048;
        let weighed = weight(&Key::AccountSid(format!("AC{:032x}", 0).into()), &None);
        assert!(
            per_entry <= u64::from(weighed),
            "an entry holds {per_entry} bytes and weighs {weighed}"
        );
    }

    #[test]
    fn weight_counts_the_key_and_the_secrets() {
        let short = weight(&Key::AccountSid("AC1".into()), &None);
        let long = weight(&Key::AccountSid("A".repeat(60_000).into()), &None);
        assert_eq!(long - short, 60_000 - 3);
        let secret = Secret::new(vec![b'x'; 10_000]).unwrap();
        let with = Some(Credentials::new().auth_token("primary", secret));
        assert!(weight(&Key::AccountSid("AC1".into()), &with) > short + 10_000);
    }

    #[tokio::test]
    async fn debug_shows_settings_and_no_secrets() {
        let credentials = Credentials::new().auth_token("primary", Secret::new("tok-XYZ").unwrap());
        let mut cache = Cache::new(credentials).ttl(Duration::from_secs(5));
        cache.resolve(for_account("AC1")).await.unwrap();
        let shown = format!("{cache:?} {cache:#?}");
        assert!(shown.contains("ttl: 5s"), "{shown}");
        assert!(!shown.contains("tok-XYZ"), "{shown}");
    }
}
