//! The PostgreSQL replay store against a real server (`TWILIO_TEST_POSTGRES_URL`, which
//! `.ci/run` sets from `scripts/test_postgres.sh`). Each test keeps its keys in a table of its
//! own, so runs and tests never meet. Outside CI, without the URL, these tests are reported as
//! ignored with the reason (`build.rs` sets `skip_postgres`); under `CI` they run and fail
//! without it. The store contract and the two-instance tests are in `replay_guard`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tower_twilio::{
    replay::{
        Claim, PostgresStore, Record, ReplayKey, ReplayStore, ReplayStoreErrorKind, StoredAnswer,
    },
    signature::Algorithm,
};

const LEASE: Duration = Duration::from_secs(60);

/// The shared test server, and a table of each test's own on it.
pub(crate) mod postgres {
    use std::{io::Write as _, sync::Once};

    use tower_twilio::replay::PostgresStore;

    /// The URL of the shared test server, or `None` (and a line on standard error, once) when
    /// it is not configured outside CI: only a test run with `--include-ignored` gets here
    /// without one. Under `CI` a missing server is a failure.
    pub(crate) fn url() -> Option<String> {
        match std::env::var("TWILIO_TEST_POSTGRES_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("CI is set but TWILIO_TEST_POSTGRES_URL is not: .ci/run starts PostgreSQL")
            }
            Err(_) => {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| {
                    let _ = writeln!(
                        std::io::stderr(),
                        "replay tests: skipping PostgreSQL (TWILIO_TEST_POSTGRES_URL is not set; \
                         scripts/test_postgres.sh start DIR prints one)"
                    );
                });
                None
            }
        }
    }

    /// A table name no other test or run uses (std's hasher keys are random per instance).
    pub(crate) fn fresh_table() -> String {
        use std::hash::BuildHasher as _;
        let random = std::collections::hash_map::RandomState::new().hash_one(0u8);
        format!("replay_test_{random:016x}")
    }

    /// A store on a fresh table of its own, created.
    pub(crate) async fn store(url: &str) -> PostgresStore {
        store_on(url, &fresh_table()).await
    }

    /// A store (a pool of its own, as another instance would have) on `table`, created.
    pub(crate) async fn store_on(url: &str, table: &str) -> PostgresStore {
        let store = PostgresStore::connect(url)
            .await
            .unwrap()
            .table(table)
            .unwrap();
        store.ensure_schema().await.unwrap();
        store
    }

    /// `N` instances on the shared server: `N` pools on one table of their own.
    pub(crate) async fn instances<const N: usize>(url: &str) -> [PostgresStore; N] {
        let table = fresh_table();
        let mut stores = Vec::new();
        for _ in 0..N {
            stores.push(store_on(url, &table).await);
        }
        stores.try_into().unwrap()
    }
}

fn key(n: u64) -> ReplayKey {
    ReplayKey::new(Algorithm::HmacSha1, format!("{n:027}=").as_bytes())
}

/// [`answer`], kept for `window`.
fn kept(window: Duration) -> Record {
    let answer = answer();
    Record::new(answer, window)
}

fn answer() -> StoredAnswer {
    StoredAnswer::new(
        StatusCode::OK,
        Some(HeaderValue::from_static("text/xml")),
        Bytes::from_static(b"<Response><Message>hi</Message></Response>"),
    )
}

#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
#[tokio::test]
async fn concurrent_claims_from_four_pools_have_exactly_one_winner() {
    let Some(url) = postgres::url() else { return };
    let stores: [_; 4] = postgres::instances(&url).await;
    // On an absent key, and on one whose claim has lapsed (its row is taken over).
    let lapsed = Duration::from_millis(100);
    stores[0].claim(&key(8), lapsed).await.unwrap();
    tokio::time::sleep(lapsed * 3).await;
    for n in [7, 8] {
        let claims: Vec<_> = stores
            .iter()
            .cycle()
            .take(50)
            .map(|store| tokio::spawn(store.claim(&key(n), LEASE)))
            .collect();
        let mut won = 0;
        for claim in claims {
            match claim.await.unwrap() {
                Ok(Claim::Claimed(_)) => won += 1,
                Ok(Claim::InFlight) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1, "key {n}");
    }
}

#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
#[tokio::test]
async fn a_done_key_is_new_again_after_its_window_and_a_lapsed_claim_is_not_revived() {
    let Some(url) = postgres::url() else { return };
    let store = postgres::store(&url).await;
    let Claim::Claimed(token) = store.claim(&key(1), LEASE).await.unwrap() else {
        panic!("a new key")
    };
    store
        .complete(&key(1), token, kept(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(
        store.claim(&key(1), LEASE).await.unwrap(),
        Claim::Done(answer())
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(
        store.claim(&key(1), LEASE).await,
        Ok(Claim::Claimed(_))
    ));
    // A claim whose lease ran out is not extended by a late renewal, and is anyone's.
    let Claim::Claimed(late) = store
        .claim(&key(2), Duration::from_millis(200))
        .await
        .unwrap()
    else {
        panic!("a new key")
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!store.renew(&key(2), late, LEASE).await.unwrap());
    assert!(matches!(
        store.claim(&key(2), LEASE).await,
        Ok(Claim::Claimed(_))
    ));
}

#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
#[tokio::test]
async fn expired_rows_are_swept_in_bounded_batches_and_by_claims_in_the_background() {
    let Some(url) = postgres::url() else { return };
    let store = postgres::store(&url).await;
    let short = Duration::from_millis(200);
    // Done rows and abandoned claims, all expired; one live row that stays.
    for n in 0..10 {
        let Claim::Claimed(token) = store.claim(&key(n), LEASE).await.unwrap() else {
            panic!("a new key")
        };
        store.complete(&key(n), token, kept(short)).await.unwrap();
    }
    for n in 10..20 {
        store.claim(&key(n), short).await.unwrap();
    }
    let Claim::Claimed(live) = store.claim(&key(99), LEASE).await.unwrap() else {
        panic!("a new key")
    };
    tokio::time::sleep(short * 3).await;
    assert_eq!(store.sweep().await.unwrap(), 20);
    assert_eq!(store.sweep().await.unwrap(), 0);
    assert!(
        store.renew(&key(99), live, LEASE).await.unwrap(),
        "a live claim stays"
    );

    // One sweep deletes at most SWEEP_LIMIT rows. (Rows written by `complete`, which does not
    // count toward the background sweeps, so that only ours runs.)
    let over = u64::from(PostgresStore::SWEEP_LIMIT) + 5;
    let store = postgres::store(&url).await;
    for n in 0..over {
        store.complete(&key(n), live, kept(short)).await.unwrap();
    }
    tokio::time::sleep(short * 3).await;
    assert_eq!(
        store.sweep().await.unwrap(),
        u64::from(PostgresStore::SWEEP_LIMIT)
    );
    assert_eq!(store.sweep().await.unwrap(), 5);

    // Claims sweep on their own: the SWEEP_EVERY-th claim starts a sweep in the background.
    let store = postgres::store(&url).await;
    for n in 0..30 {
        store.complete(&key(n), live, kept(short)).await.unwrap();
    }
    tokio::time::sleep(short * 3).await;
    // New keys with a long lease: not expired, not swept.
    for n in 100..100 + u64::from(PostgresStore::SWEEP_EVERY) {
        assert!(matches!(
            store.claim(&key(n), LEASE).await,
            Ok(Claim::Claimed(_))
        ));
    }
    // Generous: the background sweep is one DELETE.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        store.sweep().await.unwrap(),
        0,
        "the background sweep took them"
    );
}

#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
#[tokio::test]
async fn a_missing_table_or_server_is_an_error_never_a_new_key() {
    let Some(url) = postgres::url() else { return };
    // The table was never created (no ensure_schema).
    let store = PostgresStore::connect(&url)
        .await
        .unwrap()
        .table(&postgres::fresh_table())
        .unwrap();
    let error = store.claim(&key(1), LEASE).await.unwrap_err();
    assert_eq!(error.kind(), ReplayStoreErrorKind::Unavailable, "{error}");
    // Nothing listens on port 1.
    let error = PostgresStore::connect("postgres://app:hunter2@127.0.0.1:1/app")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ReplayStoreErrorKind::Unavailable);
    assert!(
        !format!("{error} {error:?}").contains("hunter2"),
        "{error:?}"
    );
    let shown = format!("{store:?}");
    let password = url::Url::parse(&url)
        .unwrap()
        .password()
        .unwrap_or("")
        .to_owned();
    assert!(password.is_empty() || !shown.contains(&password), "{shown}");
}

#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
#[tokio::test]
async fn instances_starting_together_all_create_the_table_without_a_collision() {
    let Some(url) = postgres::url() else { return };
    // Without the schema lock, about one round in ten collides (`pg_type_typname_nsp_index`).
    for _ in 0..10 {
        let table = postgres::fresh_table();
        let starts: Vec<_> = (0..6)
            .map(|_| {
                let (url, table) = (url.clone(), table.clone());
                tokio::spawn(async move {
                    let store = PostgresStore::connect(&url)
                        .await
                        .unwrap()
                        .table(&table)
                        .unwrap();
                    store.ensure_schema().await.map(|()| store)
                })
            })
            .collect();
        let mut stores = Vec::new();
        for start in starts {
            stores.push(start.await.unwrap().expect("ensure_schema"));
        }
        assert!(matches!(
            stores[5].claim(&key(1), LEASE).await,
            Ok(Claim::Claimed(_))
        ));
        assert_eq!(
            stores[0].claim(&key(1), LEASE).await.unwrap(),
            Claim::InFlight
        );
    }
}
