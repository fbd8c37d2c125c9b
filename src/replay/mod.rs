//! The replay guard: a captured or retried webhook reaches the handler once, on one server or
//! many.
//!
//! Twilio signs no timestamp, so a captured webhook verifies forever, and Twilio retries a
//! webhook whose answer it did not get. Identical signed content has an identical signature,
//! and the signature is the one thing a sender without the secret cannot change, so the
//! signature (with the account and algorithm: a [`ReplayKey`]) is a replay key that cannot be
//! dodged, unlike the unsigned `I-Twilio-Idempotency-Token` header.
//!
//! [`ReplayGuard`] says what to do with it (see its docs for the whole table); a
//! [`ReplayStore`] keeps the keys:
//!
//! | store | where | when |
//! | --- | --- | --- |
//! | [`MemoryStore`] (the default) | this process, bounded by bytes | one instance |
//! | [`RedisStore`] (feature `redis`) | a Redis or Valkey server | several instances behind a load balancer |
//!
//! # What is guaranteed, and what is not
//!
//! - While the store keeps its data, a webhook whose handler answered 2xx is not passed to a
//!   handler again within the window, whichever instance sharing the store receives the copy.
//! - Two copies arriving at once: one runs, the other gets `409` and Twilio retries it later.
//! - A failed webhook (non-2xx answer, error, dropped request) is released, so Twilio's retry
//!   runs the handler again: handlers must still tolerate a second run of a webhook whose first
//!   run failed half-way.
//! - **Not** guaranteed: a replay after the window, a replay after the store lost its data (a
//!   restart of the process for the memory store; a Redis restart without persistence, a
//!   failover or an eviction), or a second run when a handler outlives its
//!   [lease](ReplayGuard::lease). With [`fail_open`](ReplayGuard::fail_open), nothing is
//!   guaranteed while the store fails (each such request is reported at `ERROR`).
//!
//! # Example
//!
//! The same signed webhook twice: the handler runs once; the copy gets an empty TwiML answer
//! with a typed [`ReplaySuppressed`](crate::RejectionKind::ReplaySuppressed) reason.
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_twilio::{
//!     Credentials, PublicUrl, Rejection, RejectionKind, Secret, TwilioSignatureLayer,
//!     VerifiedBody, form::Params, replay::ReplayGuard, signature::{Algorithm, sign},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let token = Secret::new("0123456789abcdef0123456789abcdef")?;
//! let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token.clone()))
//!     .public_url(PublicUrl::fixed("https://api.example.com")?)
//!     .replay_guard(ReplayGuard::default());
//!
//! let runs = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&runs);
//! let app = ServiceBuilder::new().layer(twilio).service_fn(move |_: Request<VerifiedBody>| {
//!     counter.fetch_add(1, Ordering::SeqCst);
//!     async { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("<Response><Message>hi</Message></Response>")))) }
//! });
//!
//! let body = "AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100&Body=Hi&MessageSid=SM1";
//! let signature = sign(token.expose_secret(), Algorithm::HmacSha1,
//!     "https://api.example.com/twilio/sms", Params::parse(body.as_bytes()).iter());
//! let webhook = || {
//!     Request::post("/twilio/sms")
//!         .header("content-type", "application/x-www-form-urlencoded")
//!         .header("x-twilio-signature", &signature)
//!         .body(Full::new(Bytes::from(body)))
//! };
//!
//! let first = app.clone().oneshot(webhook()?).await?;
//! assert_eq!(first.status(), StatusCode::OK);
//! assert!(first.extensions().get::<Rejection>().is_none());
//!
//! let copy = app.oneshot(webhook()?).await?; // a Twilio retry, or a captured request
//! assert_eq!(copy.status(), StatusCode::OK); // so that Twilio stops retrying
//! assert_eq!(copy.extensions().get::<Rejection>().unwrap().kind(), RejectionKind::ReplaySuppressed);
//! assert_eq!(runs.load(Ordering::SeqCst), 1);
//! # Ok(())
//! # }
//! ```
//!
//! A store on its own:
//!
//! ```
//! use std::time::Duration;
//! use tower_twilio::{replay::{Claim, MemoryStore, ReplayKey, ReplayStore}, signature::Algorithm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_twilio::replay::ReplayStoreError> {
//! let store = MemoryStore::default();
//! let key = ReplayKey::new("AC123", Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
//! let Claim::Claimed(token) = store.claim(&key, Duration::from_secs(60)).await? else {
//!     unreachable!("a new key");
//! };
//! store.complete(&key, token, Duration::from_secs(3600)).await?;
//! assert_eq!(store.claim(&key, Duration::from_secs(60)).await?, Claim::Done);
//! # Ok(())
//! # }
//! ```

mod guard;
mod key;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
mod store;

pub use self::guard::ReplayGuard;
pub(crate) use self::guard::{Admit, answer_is_done, replay_key};
pub use self::key::ReplayKey;
pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_store::{RedisFuture, RedisStore};
pub use self::store::{Claim, ClaimToken, ReplayStore, ReplayStoreError, ReplayStoreErrorKind};
