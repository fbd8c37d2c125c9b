//! The replay guard's keys and stores: what identifies a webhook ([`ReplayKey`]), its first
//! answer ([`StoredAnswer`]), and where they are kept ([`ReplayStore`]). The guard itself is
//! [`ReplayGuardLayer`](crate::replay_guard::ReplayGuardLayer) in
//! [`replay_guard`](crate::replay_guard).
//!
//! | store | where | when |
//! | --- | --- | --- |
//! | [`MemoryStore`] (the default) | this process, bounded by bytes (answers included) | one instance |
//! | [`RedisStore`] (feature `redis`) | a Redis or Valkey server | several instances behind a load balancer |
//! | [`PostgresStore`] (feature `postgres`) | a table in a PostgreSQL database | several instances that share a database and have no Redis |
//!
//! A store on its own:
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::StatusCode;
//! use tower_twilio::{
//!     replay::{Claim, Record, MemoryStore, ReplayKey, ReplayStore, StoredAnswer},
//!     signature::Algorithm,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_twilio::replay::ReplayStoreError> {
//! let store = MemoryStore::default();
//! let key = ReplayKey::new(Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
//! let Claim::Claimed(token) = store.claim(&key, Duration::from_secs(5)).await? else {
//!     unreachable!("a new key");
//! };
//! let answer = StoredAnswer::new(StatusCode::OK, None, Bytes::from_static(b"<Response/>"));
//! let window = Duration::from_secs(3600);
//! store.complete(&key, token, Record::new(answer.clone(), window)).await?;
//! assert_eq!(store.claim(&key, Duration::from_secs(5)).await?, Claim::Done(answer));
//! # Ok(())
//! # }
//! ```

mod answer;
mod key;
mod memory;
#[cfg(feature = "postgres")]
mod postgres_store;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod server;
mod store;

pub use self::answer::StoredAnswer;
pub use self::key::ReplayKey;
pub use self::memory::{MemoryStore, MemoryWait};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::postgres_store::PostgresStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_store::RedisStore;
pub use self::store::{
    Claim, ClaimToken, DeliveryClaim, Record, ReplayStore, ReplayStoreError, ReplayStoreErrorKind,
};
