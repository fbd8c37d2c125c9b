//! The replay guard's stores: the memory store's byte bound, and the Redis store against a
//! real `redis-server` (`TWILIO_TEST_REDIS_URL`, which `.ci/run` sets; outside CI these tests
//! skip with a line on standard error, under `CI` they fail without it).

use std::time::Duration;

use tower_twilio::{
    replay::{Claim, MemoryStore, ReplayKey, ReplayStore, ReplayStoreErrorKind},
    signature::Algorithm,
};

const LEASE: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(24 * 3600);

fn key(n: u64) -> ReplayKey {
    ReplayKey::new(
        "AC11111111111111111111111111111111",
        Algorithm::HmacSha1,
        format!("{n:027}=").as_bytes(),
    )
}

/// Records `count` distinct verified webhooks (claim, then complete) in `store`.
fn record(store: &MemoryStore, range: std::ops::Range<u64>) {
    for n in range {
        let Ok(Claim::Claimed(token)) = store.claim(&key(n), LEASE).into_inner() else {
            panic!("webhook {n} was not new");
        };
        store.complete(&key(n), token, WINDOW).into_inner().unwrap();
    }
}

// Every byte the store allocates is counted (allocation-counter is this binary's allocator):
// filled to its limit, growth slack included, it stays under the bytes it was given, and the
// next new webhook is refused rather than let in by forgetting an old one.
#[test]
fn memory_store_stays_within_its_byte_limit_under_100_000_webhooks() {
    const WEBHOOKS: u64 = 100_000;
    let max_bytes = MemoryStore::FIXED_BYTES + WEBHOOKS as usize * MemoryStore::ENTRY_BYTES;
    let store = MemoryStore::new(max_bytes);
    assert_eq!(store.capacity(), WEBHOOKS as usize);
    let info = allocation_counter::measure(|| record(&store, 0..WEBHOOKS));
    println!(
        "memory store: {WEBHOOKS} webhooks, peak {} bytes of heap ({} per webhook), limit {max_bytes}",
        info.bytes_max,
        info.bytes_max / WEBHOOKS
    );
    assert!(
        info.bytes_max <= max_bytes as u64,
        "peak {} > limit {max_bytes}",
        info.bytes_max
    );
    let refused = store.claim(&key(WEBHOOKS), LEASE).into_inner().unwrap_err();
    assert_eq!(refused.kind(), ReplayStoreErrorKind::Full);
    assert_eq!(
        store.claim(&key(0), LEASE).into_inner().unwrap(),
        Claim::Done
    );
    // The worst cases: a store that fills just past one of the hash table's growth steps
    // (7/8 of a power of two), where the table is at its emptiest and both the old and the new
    // one are allocated for a moment; and tiny stores, where the fixed part dominates.
    for entries in [
        1, 2, 8, 15, 29, 57, 113, 225, 449, 897, 1793, 3585, 7169, 14337,
    ] {
        let max_bytes = MemoryStore::FIXED_BYTES + entries * MemoryStore::ENTRY_BYTES;
        let store = MemoryStore::new(max_bytes);
        assert_eq!(store.capacity(), entries);
        let info = allocation_counter::measure(|| record(&store, 0..entries as u64));
        println!(
            "{entries} entries: {} bytes ({} per entry)",
            info.bytes_max,
            info.bytes_max / entries as u64
        );
        assert!(
            info.bytes_max <= max_bytes as u64,
            "{entries} entries: {}",
            info.bytes_max
        );
    }
}

#[cfg(feature = "redis")]
pub(crate) mod redis {
    //! A Redis server for the tests: the shared one, or a private one a test may stop.

    use std::{
        io::Write as _,
        process::{Child, Command, Stdio},
        sync::Once,
        time::Duration,
    };

    use tower_twilio::replay::RedisStore;

    /// The URL of the shared test server, or `None` (and a line on standard error, once) when
    /// it is not configured outside CI. Under `CI` a missing server is a failure.
    pub(crate) fn url() -> Option<String> {
        match std::env::var("TWILIO_TEST_REDIS_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("CI is set but TWILIO_TEST_REDIS_URL is not: .ci/run starts Redis")
            }
            Err(_) => {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| {
                    let _ = writeln!(
                        std::io::stderr(),
                        "replay tests: skipping Redis (TWILIO_TEST_REDIS_URL is not set; \
                         scripts/test_redis.sh start DIR prints one)"
                    );
                });
                None
            }
        }
    }

    /// A store on the shared server with a prefix of its own, so tests do not meet.
    pub(crate) async fn store(url: &str) -> RedisStore {
        store_with_prefix(url, &format!("test:{}:", random_hex())).await
    }

    /// A store (its own connection) on the shared server, keys under `prefix`.
    pub(crate) async fn store_with_prefix(url: &str, prefix: &str) -> RedisStore {
        RedisStore::connect(url).await.unwrap().prefix(prefix)
    }

    /// Random enough to keep test runs apart (std's hasher keys are random per instance).
    pub(crate) fn random_hex() -> String {
        use std::hash::BuildHasher as _;
        let random = std::collections::hash_map::RandomState::new().hash_one(0u8);
        format!("{random:016x}")
    }

    /// A `redis-server` of this test's own, on a free loopback port, killed on drop.
    pub(crate) struct PrivateRedis {
        child: Option<Child>,
        pub(crate) url: String,
    }

    impl PrivateRedis {
        /// Starts one, or `None` outside CI when `redis-server` is not installed.
        pub(crate) async fn start() -> Option<Self> {
            url()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                ])
                // Nothing is written: no snapshots, no append-only file.
                .args(["--appendonly", "no", "--dir"])
                .arg(std::env::temp_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test_redis.sh installs it)");
            let url = format!("redis://127.0.0.1:{port}/");
            let server = Self {
                child: Some(child),
                url,
            };
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Some(server);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the private redis-server did not start listening");
        }

        /// Kills the server and waits for it to be gone.
        pub(crate) fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use std::time::Duration;

    use tower_twilio::replay::{Claim, ReplayStore, ReplayStoreErrorKind};

    use super::{LEASE, WINDOW, key, redis};

    #[tokio::test]
    async fn a_key_is_claimed_once_done_after_complete_and_free_after_release() {
        let Some(url) = redis::url() else { return };
        let store = redis::store(&url).await;
        let Claim::Claimed(first) = store.claim(&key(1), LEASE).await.unwrap() else {
            panic!("a new key")
        };
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::InFlight);
        store.release(&key(1), first).await.unwrap();
        let Claim::Claimed(second) = store.claim(&key(1), LEASE).await.unwrap() else {
            panic!("released, so new again")
        };
        // A late release with a stale token deletes nothing.
        store.release(&key(1), first).await.unwrap();
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::InFlight);
        store.complete(&key(1), second, WINDOW).await.unwrap();
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::Done);
        // Releasing after completion does not undo it.
        store.release(&key(1), second).await.unwrap();
        assert_eq!(store.claim(&key(1), LEASE).await.unwrap(), Claim::Done);
    }

    #[tokio::test]
    async fn concurrent_claims_from_four_connections_have_exactly_one_winner() {
        let Some(url) = redis::url() else { return };
        // Four connection managers (as four instances would have) on one key space.
        let prefix = format!("test:{}:", redis::random_hex());
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(redis::store_with_prefix(&url, &prefix).await);
        }
        let claims = futures_join(
            stores
                .iter()
                .cycle()
                .take(50)
                .map(|s| s.claim(&key(7), LEASE)),
        )
        .await;
        let won = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::Claimed(_))))
            .count();
        let in_flight = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::InFlight)))
            .count();
        assert_eq!((won, in_flight), (1, 49), "{claims:?}");
    }

    async fn futures_join<F: std::future::Future + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_done_key_is_new_again_after_its_window() {
        let Some(url) = redis::url() else { return };
        let store = redis::store(&url).await;
        let Claim::Claimed(token) = store.claim(&key(2), LEASE).await.unwrap() else {
            panic!("a new key")
        };
        store
            .complete(&key(2), token, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(store.claim(&key(2), LEASE).await.unwrap(), Claim::Done);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            store.claim(&key(2), LEASE).await,
            Ok(Claim::Claimed(_))
        ));
    }

    #[tokio::test]
    async fn a_stopped_server_is_an_unavailable_error_never_a_new_key() {
        let Some(mut server) = redis::PrivateRedis::start().await else {
            return;
        };
        let store = tower_twilio::replay::RedisStore::connect(&server.url)
            .await
            .unwrap();
        let Claim::Claimed(_) = store.claim(&key(3), LEASE).await.unwrap() else {
            panic!("a new key")
        };
        server.stop();
        for n in [3, 4] {
            let error = store.claim(&key(n), LEASE).await.unwrap_err();
            assert_eq!(error.kind(), ReplayStoreErrorKind::Unavailable, "{error}");
        }
    }
}
