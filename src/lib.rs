//! Verify Twilio webhook signatures (`X-Twilio-Signature`) in Tower services: axum, hyper and
//! tonic.
//!
//! Twilio signs every webhook with an HMAC of the URL it called and the request's parameters.
//! This crate recomputes that signature exactly as Twilio's official libraries do, accepting
//! every request either twilio-python or twilio-node accepts and nothing else (checked against
//! 850 vectors those libraries produced), compares in constant time, and says *why* a request
//! was refused.
//!
//! # Verifying one request
//!
//! [`verify::WebhookRequest`] is the pure verifier: it takes the public URL Twilio requested,
//! the method, the headers and the raw body, and the secrets that may have signed it.
//!
//! ```
//! use http::{HeaderMap, Method};
//! use tower_twilio::{Secret, signature, verify::{VerifyError, WebhookRequest}};
//!
//! let token = Secret::new("0123456789abcdef0123456789abcdef")?;
//! let url = "https://example.com/twilio/sms";
//! let body = b"AccountSid=AC123&From=%2B14155550100&Body=Hello";
//!
//! // What Twilio would send (tests and the signing tool use this too).
//! let params = tower_twilio::form::Params::parse(body);
//! let sig = signature::sign(token.expose_secret(), signature::Algorithm::HmacSha1, url, params.iter());
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("content-type", "application/x-www-form-urlencoded".parse()?);
//! headers.insert("x-twilio-signature", sig.parse()?);
//! let request = WebhookRequest::from_parts(&Method::POST, url, &headers, body);
//! assert!(request.verify([&token]).is_ok());
//!
//! // One changed byte of the body and the request is refused.
//! let forged = WebhookRequest::from_parts(&Method::POST, url, &headers, b"AccountSid=AC123&From=%2B14155550100&Body=Hellp");
//! assert_eq!(forged.verify([&token]), Err(VerifyError::SignatureMismatch));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//!
//! | module | what |
//! | --- | --- |
//! | [`signature`] | algorithms, the settings header, [`signature::sign`], `bodySHA256` |
//! | [`form`] | content-type detection and form decoding into [`form::Params`] |
//! | [`url`] | the spellings of a URL a signature may have been made over (ports, normal forms) |
//! | [`verify`] | whole-request verification with a typed [`verify::VerifyError`] |
//!
//! All four are pure: no I/O, no tower types. They are what the vector suite, fuzzers and
//! benchmarks drive directly.
//!
//! # Security notes
//!
//! - Secrets ([`Secret`]) are wiped on drop and never appear in `Debug` output, errors or
//!   panics; neither do received signatures or bodies.
//! - The signature header is compared byte for byte (no trimming, no case folding), in
//!   constant time.
//! - A body the signature cannot cover (neither form-encoded nor hashed through `bodySHA256`)
//!   is refused, never passed on unverified.
//! - An unknown algorithm in the settings header is refused, never replaced by a default.
//! - Twilio signs no timestamp: a captured request can be replayed. De-duplicate on the
//!   `I-Twilio-Idempotency-Token` header or on `MessageSid` + status.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod context;
mod error;
pub mod events;
pub mod form;
mod future;
mod layer;
pub mod public_url;
mod rejection;
pub mod resolver;
mod secret;
mod service;
pub mod signature;
pub mod url;
pub mod verify;

pub use body::{ResponseBody, VerifiedBody};
pub use context::VerifiedWebhook;
pub use error::ConfigError;
pub use future::ResponseFuture;
pub use layer::{DEFAULT_MAX_BODY_SIZE, PeerAddr, TwilioSignatureLayer};
pub use public_url::PublicUrl;
pub use rejection::{DefaultRejectionResponse, Rejection, RejectionKind, RejectionResponse};
pub use resolver::{Credentials, ResolveCredentials};
pub use secret::{EmptySecret, Secret};
pub use service::TwilioSignature;

/// A type-erased error, as tower uses for errors that cross middleware boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// Compile and run the README's Rust blocks as doc tests, so the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
