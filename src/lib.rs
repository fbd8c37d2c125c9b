//! Accept Twilio webhooks only when Twilio really sent them: a Tower middleware for axum, hyper
//! and tonic that verifies `X-Twilio-Signature`.
//!
//! Twilio signs every webhook with an HMAC of the URL it called and the request's parameters.
//! [`TwilioSignatureLayer`] reads the body (under a size limit), rebuilds the public URL,
//! asks a [`resolver`] for the account's secrets, and recomputes the signature exactly
//! as Twilio's official libraries do: it accepts every request twilio-python or twilio-node
//! accepts and nothing else, but for the 2 its binding rules refuse on purpose (checked against
//! the 850 vectors those libraries produced), compares in constant time, and answers anything
//! else with a 403 and a [security event](events).
//!
//! # Example
//!
//! One signed request passes and reaches the handler with its body untouched; the same request
//! with one byte changed gets a 403 with a typed [`Rejection`].
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_twilio::{
//!     Credentials, PublicUrl, Rejection, RejectionKind, Secret, TwilioSignatureLayer,
//!     VerifiedBody, VerifiedWebhook, form::Params, signature::{Algorithm, sign},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let token = Secret::new("0123456789abcdef0123456789abcdef")?;
//! let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token.clone()))
//!     .public_url(PublicUrl::fixed("https://api.example.com")?);
//!
//! let app = ServiceBuilder::new().layer(twilio).service_fn(|req: Request<VerifiedBody>| async move {
//!     let webhook = req.extensions().get::<VerifiedWebhook>().expect("only verified requests get here");
//!     let reply = format!("hello {}", webhook.params().get("From").unwrap_or_default());
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(reply))))
//! });
//!
//! // What Twilio sends: a form POST signed over the public URL and the parameters.
//! let body = "AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100&Body=Hi";
//! let signature = sign(token.expose_secret(), Algorithm::HmacSha1,
//!     "https://api.example.com/twilio/sms", Params::parse(body.as_bytes()).iter());
//! let request = |body: &'static str| {
//!     Request::post("/twilio/sms")
//!         .header("content-type", "application/x-www-form-urlencoded")
//!         .header("x-twilio-signature", &signature)
//!         .body(Full::new(Bytes::from(body)))
//! };
//!
//! let response = app.clone().oneshot(request(body)?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let forged = app.oneshot(request("AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100&Body=Hj")?).await?;
//! assert_eq!(forged.status(), StatusCode::FORBIDDEN);
//! let rejection = forged.extensions().get::<Rejection>().unwrap();
//! assert_eq!(rejection.kind(), RejectionKind::SignatureMismatch);
//! # Ok(())
//! # }
//! ```
//!
//! With axum, apply it to the webhook routes only:
//!
//! ```
//! # use axum::{Router, routing::post};
//! # use tower_twilio::{Credentials, PublicUrl, TwilioSignatureLayer};
//! # async fn incoming_sms() {}
//! # async fn status_callback() {}
//! # fn app(credentials: Credentials) -> Result<Router, tower_twilio::ConfigError> {
//! let twilio = TwilioSignatureLayer::new(credentials)
//!     .public_url(PublicUrl::fixed("https://api.example.com")?);
//! let app: Router = Router::new()
//!     .route("/twilio/sms", post(incoming_sms))
//!     .route("/twilio/status", post(status_callback))
//!     .route_layer(twilio);
//! # Ok(app)
//! # }
//! ```
//!
//! # What the middleware does, in order
//!
//! 1. Rebuilds the public URL ([`PublicUrl`]); refuses a method other than `GET` or `POST`
//!    (405), a request without the signature header, or one with a `Content-Length` over the
//!    limit, without reading the body.
//! 2. Reads the body, refusing it (413) the moment it passes the limit.
//! 3. Refuses, before any lookup, an `AccountSid` that is malformed or named twice with
//!    different values, and a malformed SharedKey id; then asks the resolver for the secrets of
//!    the request's account or SharedKey ([`resolver`]): an unknown account is a 403 (after the
//!    same HMAC work as a known one), a failed lookup a 503.
//! 4. Verifies ([`verify`]): a SharedKey request only with that SharedKey and only for its own
//!    account, any other only with auth tokens (several during a rotation). On a signature
//!    mismatch the optional
//!    [mismatch doctor](TwilioSignatureLayer::diagnose_mismatches_per_second) looks for the
//!    URL the signature was made for, for the event and the log only.
//! 5. Calls the inner service with the same bytes ([`VerifiedBody`]) and a [`VerifiedWebhook`]
//!    in the request extensions, or answers the [`RejectionResponse`] with the [`Rejection`] in
//!    its extensions and sends one [`SecurityEvent`](events::SecurityEvent). Replays and
//!    retries are kept from the handler by [`ReplayGuardLayer`](replay_guard::ReplayGuardLayer),
//!    a layer of its own placed after this one.
//!
//! The inner service never sees an unverified request (unless you turn on
//! [report-only mode](TwilioSignatureLayer::report_only)), and the middleware adds no error
//! type: every rejection is a response.
//!
//! # Modules
//!
//! | module | what |
//! | --- | --- |
//! | [`resolver`] | where the secrets come from: static, map, closure, fallback, cache (feature `cache`), timeout |
//! | [`public_url`] | rebuilding the URL Twilio called, behind proxies |
//! | [`events`] | security events and their sinks |
//! | [`replay_guard`] | [`ReplayGuardLayer`](replay_guard::ReplayGuardLayer): a replayed or retried webhook reaches the handler once, and every copy gets the first answer |
//! | [`replay`] | the replay guard's keys and stores (memory, Redis, PostgreSQL) |
//! | [`signature`] | algorithms, the settings header, [`signature::sign`], `bodySHA256` |
//! | [`form`] | content-type detection and form decoding into [`form::Params`] |
//! | [`verify`] | the pure whole-request verifier with a typed [`verify::VerifyError`], and the URL spellings it accepts |
//! | [`account`] | the account rules the layer adds to the signature: one well-formed `AccountSid`, a SharedKey only for its own account |
//! | [`doctor`] | the mismatch doctor: the URL a mismatched signature was made for |
//! | [`setup`] | the setup guide: axum, hyper, tonic, proxies, rotation, troubleshooting |
//!
//! `signature`, `form`, `verify`, `account` and `doctor` are pure: no I/O, no tower types.
//! Code that verifies without the layer uses `verify` for the signature and `account` for the
//! account.
//!
//! # Feature flags
//!
//! | name | what | default |
//! | --- | --- | --- |
//! | `cache` | [`resolver::Cache`] (`.cached()`): resolver answers kept for their TTLs, one lookup per account at a time | no |
//! | `sentry` | [`events::SentrySink`]: critical events captured in Sentry, with flood control | no |
//! | `metrics` | counters and a histogram through the `metrics` facade (see `tower_twilio::metrics`) | no |
//! | `redis` | [`replay::RedisStore`]: a replay guard shared by several instances through Redis | no |
//! | `postgres` | [`replay::PostgresStore`]: a replay guard shared by several instances through a PostgreSQL table, on `sqlx` | no |
//!
//! # Security notes
//!
//! - Secrets ([`Secret`]) are wiped on drop and never appear in `Debug` output, events, errors
//!   or panics; neither do received signatures, bodies or URL passwords. The security log is
//!   safe to archive.
//! - The signature header is compared byte for byte (no trimming, no case folding), in
//!   constant time.
//! - A body the signature cannot cover (neither form-encoded nor hashed through `bodySHA256`)
//!   is refused, never passed on unverified.
//! - An unknown algorithm in the settings header is refused, never replaced by a default; a
//!   SharedKey request is never verified with an auth token.
//! - Forwarding headers are ignored unless you enable them for named proxy networks.
//! - Twilio signs no timestamp: a captured request verifies again. Add the
//!   [replay guard](replay_guard), which keys on the signature itself, never on what the
//!   request claims (the unsigned `I-Twilio-Idempotency-Token` header refines the key only in
//!   the delivery scope for voice); its docs say what it does and does not guarantee.
#![cfg_attr(docsrs, feature(doc_cfg))]

// What the fuzz targets, property tests and benchmarks drive directly: not part of the API,
// hidden from the docs, no semver promise.
#[doc(hidden)]
pub mod __private;
pub mod account;
mod body;
mod config;
mod diagnoses;
pub mod doctor;
mod error;
pub mod events;
pub mod form;
mod future;
mod layer;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
// Without the feature: the same crate-private calls, doing nothing. The feature's one switch.
#[cfg(not(feature = "metrics"))]
#[path = "metrics_off.rs"]
mod metrics;
mod observe;
mod pipeline;
mod rejection;
pub mod replay;
pub mod replay_guard;
pub mod resolver;
mod secret;
mod service;
pub mod setup;
pub mod signature;
mod url;
mod verified_webhook;
pub mod verify;

pub use url::public as public_url;

pub use body::{ResponseBody, VerifiedBody};
pub use config::{DEFAULT_MAX_BODY_SIZE, PeerAddr};
pub use error::ConfigError;
pub use future::ResponseFuture;
pub use layer::TwilioSignatureLayer;
pub use public_url::PublicUrl;
pub use rejection::{DefaultRejectionResponse, Rejection, RejectionKind, RejectionResponse};
pub use resolver::{Credentials, ResolveCredentials};
pub use secret::Secret;
pub use service::TwilioSignature;
pub use verified_webhook::VerifiedWebhook;

/// A type-erased error, as tower uses for errors that cross middleware boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// Compile and run the README's Rust blocks as doc tests, so the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
