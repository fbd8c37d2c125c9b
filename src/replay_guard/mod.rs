//! The replay guard: a webhook reaches the handler once, and every copy of it gets the answer
//! the handler gave the first time.
//!
//! [`ReplayGuardLayer`] is a middleware of its own, placed **after**
//! [`TwilioSignatureLayer`](crate::TwilioSignatureLayer): it reads the
//! [`VerifiedWebhook`](crate::VerifiedWebhook) that layer leaves in the request, so it can
//! guard one route (axum's `route_layer`) or a whole router. A request without a
//! `VerifiedWebhook` (the guard placed before the signature layer, or on a route without it;
//! or a request that failed verification in report-only mode), or with one that carries no
//! signature to key on (not made by the signature layer), is refused with `500` and a
//! [`ReplayGuardMisplaced`](crate::RejectionKind::ReplayGuardMisplaced) rejection and an
//! `ERROR` event: never passed on.
//!
//! # Why
//!
//! Twilio signs no timestamp, so a captured webhook verifies forever, and Twilio retries a
//! webhook whose answer it did not get. Identical signed content has an identical signature,
//! and the signature is the one thing a sender without the secret cannot change, so the
//! [key](crate::replay::ReplayKey) is the algorithm and the signature: never a parameter the
//! request claims. (A key that included the claimed `AccountSid` could be dodged: a form
//! webhook replayed with its `AccountSid` pair split at another boundary, `Account=SidAC…`,
//! signs the same string, verifies, and names no account.)
//!
//! A copy is either Twilio's own retry or a replay. Both get the first answer: a blank TwiML
//! answer would drop an SMS reply or hang up a call.
//!
//! # What happens to a request
//!
//! | the store says | what happens |
//! | --- | --- |
//! | new | the key is claimed for a short [lease](ReplayGuardLayer::lease) (3 s), renewed every 1.2 s while the handler runs; the handler runs. A 2xx answer is stored (status, `Content-Type`, body up to [64 KiB](ReplayGuardLayer::max_answer_bytes)) for the [window](ReplayGuardLayer::window) (24 h) and handed on. Any other answer, an error, or a request dropped before the handler answered releases the claim, so the next copy runs the handler. Once the handler has answered 2xx it has acted, and the webhook is never released: an answer cut before the guard read it whole (the client went away while it streamed, or its body failed) is recorded as "done" only, as a larger one is, with one `WARN`; a request dropped while its answer is being stored still stores it |
//! | done | the handler does not run; the copy gets the stored answer byte for byte, with a [`ReplayCopy`](crate::RejectionKind::ReplayCopy) rejection in its extensions (not a refusal: a marker). An answer that was larger than the bound, or cut before it was read whole, was stored as "done" only: its copies get an empty answer (`200` with `<Response/>` for a form or `GET` webhook, `204` for a `bodySHA256` one), and the guard said so at `WARN` once, when it stored it |
//! | in flight (another attempt runs, here or on another instance) | the copy [waits](ReplayGuardLayer::wait) (5 s) for it: the first answer when it succeeds; the handler itself when it failed, was dropped, or its instance died (the lease lapses within 3 s, well within the wait even when the instance died just after renewing it). When the wait runs out: `409` ([`ReplayInFlight`](crate::RejectionKind::ReplayInFlight)), see below |
//! | an error | by default the handler runs unguarded, with an `ERROR` event; see the trade-off table |
//!
//! # What it reports
//!
//! Security events go to the layer's sink ([`on_security_event`](ReplayGuardLayer::on_security_event),
//! [`TracingSink`](crate::events::TracingSink) by default), one per request: a copy kept from
//! the handler (`replay_copy`, info), a store failure (`replay_store_failed`, critical),
//! a wait that ran out (`replay_in_flight`, warning), a request without a `VerifiedWebhook`
//! (`replay_guard_misplaced`, critical). Every response the guard hands back carries a
//! [`ReplayOutcome`] in its extensions; the signature layer's
//! [webhook log](crate::events::log) reads it and records a copy as
//! [`Copy`](crate::events::log::WebhookOutcome::Copy), not as processed.
//!
//! # Scopes: which Twilio webhook is which
//!
//! One layer per [`Scope`]; give the voice routes their own.
//!
//! | webhook | scope | why |
//! | --- | --- | --- |
//! | incoming message (SMS, MMS, WhatsApp) | [`Scope::Content`] (the default) | each message has its own `MessageSid`: the same signature is the same message |
//! | message status callbacks | [`Scope::Content`] | each status change has its own parameters |
//! | Event Streams (webhook sink) | [`Scope::Content`] | each event has its own id in the body, covered by `bodySHA256` |
//! | voice: incoming call, `<Gather>` action, `<Redirect>` target, other TwiML requests | [`Scope::Delivery`] | a `<Redirect>` back to the menu, or a `<Gather>` that times out and loops, sends the same signed request again as a new request: only the same `I-Twilio-Idempotency-Token` makes it a copy |
//! | call status callbacks | [`Scope::Content`] | each has its own `CallStatus` and sequence |
//!
//! In the delivery scope the key is the signature and the `I-Twilio-Idempotency-Token`
//! header. Twilio sends that header on its webhook requests; its documentation names it but,
//! as far as we found, does not spell out its guarantees: the guard relies on it being the
//! same on Twilio's retries of one request and new on each new request, as its name says. A
//! request without it is keyed on its signature alone (as in the content scope): a copy then
//! gets the first answer, never a blank one. The header is not signed, so in the delivery
//! scope a replay with a fresh token runs the handler again: handlers on voice routes must
//! tolerate a replay, as they tolerate a menu loop (they mostly render TwiML).
//!
//! What such replays can make the store hold is bounded. A delivery is kept for the
//! [delivery window](ReplayGuardLayer::delivery_window) (5 minutes), not the window: Twilio
//! makes every attempt of one request within its total time (`tt`, at most 15 s), and a fresh
//! token makes a replay new whatever the window. And one signed request has at most
//! [`max_deliveries`](ReplayGuardLayer::max_deliveries) (32) deliveries told apart per
//! delivery window, counted by the store with the claim
//! ([`ReplayStore::claim_delivery`](crate::replay::ReplayStore::claim_delivery)): past that, a
//! delivery with a new token runs the handler **unrecorded** ([`ReplayOutcome::Unrecorded`];
//! a `WARN` at most once a minute per layer, whose field `unrecorded` counts them since the
//! last one, so a flood of replays is not a flood of log lines), its answer the handler's. So
//! one captured voice webhook adds at most 32 entries (and their count) per 5 minutes, each
//! kept 5 minutes, whatever is sent. A menu
//! loop is never cut short: its first 32 passes in 5 minutes are deliveries like any other,
//! and a pass past that still gets the handler's answer; only Twilio's retry of such a pass
//! would run the handler again. (Refusing it instead would end the call: Twilio does not
//! retry a `4xx` or `5xx`.) A store per scope still keeps a flood of replayed voice webhooks
//! (many captured ones) from filling the store the messages rely on.
//!
//! # What Twilio does with the answers
//!
//! Twilio's [connection overrides](https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides)
//! document a retry count (`rc`) of 1 by default, "the number of retry attempts Twilio will
//! make if its connection to your webhook fails", and a retry policy (`rp`) that says which
//! failures are retried; a `4xx` or `5xx` answer is retried only when `rp` names it. The read
//! timeout (`rt`) and the total time for all attempts (`tt`) are 15 000 ms by default. So:
//!
//! - a copy that waited past the [wait bound](ReplayGuardLayer::wait) gets `409`, which Twilio
//!   does not retry by default: final for that request. The first attempt keeps running and
//!   stores its answer; nothing runs twice. Keep the wait under `rt` minus your handler's
//!   usual time, and keep handlers fast (Twilio reads nothing after `rt`).
//! - a copy of a webhook whose answer was cut (Twilio's read timeout ran out between two
//!   packets, or the body failed) gets the empty answer: Twilio takes it as done and stops
//!   retrying; an SMS gets no reply, a call ends. The handler acted once and does not run
//!   again. (Releasing it would run the handler twice; an error status would be final too, and
//!   would send the webhook to the Fallback URL, which may act on it again.)
//! - a store failure: the trade-off below.
//!
//! | on a store failure ([`StoreFailure`]) | what is lost | what may run twice |
//! | --- | --- | --- |
//! | [`RunUnguarded`](StoreFailure::RunUnguarded) (default) | nothing | a copy (Twilio's retry, or a replay) arriving while the store is down |
//! | [`Refuse`](StoreFailure::Refuse) | every webhook arriving while the store is down: Twilio does not retry the `503` unless `rp` names `5xx` (a Fallback URL gets it otherwise) | nothing |
//!
//! Either way every such request is reported once, by a critical event to the sink (with the
//! default [`TracingSink`](crate::events::TracingSink), one `ERROR` line: event type
//! `replay_store_failed`, target `tower_twilio::security`; the store's error is logged at
//! `DEBUG`) and, with the `metrics` feature, counted in `tower_twilio_replay_degraded_total`.
//! So is a processed webhook the store failed to record.
//!
//! # What is guaranteed, and what is not
//!
//! - While the store keeps its data, a webhook whose handler answered 2xx does not reach a
//!   handler again within the window (per scope; the delivery window for a delivery),
//!   whichever instance sharing the store receives the copy; every copy gets the first answer
//!   (or an empty one when it was larger than the bound or cut).
//! - A failed webhook is released, so its copy runs again: handlers must still tolerate a
//!   second run of a webhook whose first run failed half-way.
//! - **Not** guaranteed: a replay after the window, after the store lost its data, or while
//!   the store fails with the default [`StoreFailure::RunUnguarded`]; a second run when the
//!   claim lapses because the store could not be reached to renew it for a whole lease; in
//!   the delivery scope, a replay with a fresh token, and Twilio's retry of a delivery past
//!   the [bound](ReplayGuardLayer::max_deliveries).
//!
//! The guard needs a tokio runtime with its time driver (leases, waits). A response body must
//! be `Unpin` (axum's `Body`, `Full`, and most bodies are) so the part read for the store can
//! be handed on with the rest.
//!
//! # Example
//!
//! The same signed webhook twice: the handler runs once; the copy gets the first answer.
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_twilio::{
//!     Credentials, PublicUrl, Rejection, RejectionKind, Secret, TwilioSignatureLayer,
//!     VerifiedBody, form::Params, replay_guard::ReplayGuardLayer, signature::{Algorithm, sign},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let token = Secret::new("0123456789abcdef0123456789abcdef")?;
//! let twilio = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", token.clone()))
//!     .public_url(PublicUrl::fixed("https://api.example.com")?);
//!
//! let runs = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&runs);
//! let app = ServiceBuilder::new()
//!     .layer(twilio)
//!     .layer(ReplayGuardLayer::default())
//!     .service_fn(move |_: Request<VerifiedBody>| {
//!         let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!         let twiml = format!("<Response><Message>reply {run}</Message></Response>");
//!         async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(twiml)))) }
//!     });
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
//! assert_eq!(first.into_body().collect().await?.to_bytes(), "<Response><Message>reply 1</Message></Response>");
//!
//! let copy = app.oneshot(webhook()?).await?; // a Twilio retry, or a captured request
//! assert_eq!(copy.status(), StatusCode::OK);
//! assert_eq!(copy.extensions().get::<Rejection>().unwrap().kind(), RejectionKind::ReplayCopy);
//! assert_eq!(copy.into_body().collect().await?.to_bytes(), "<Response><Message>reply 1</Message></Response>");
//! assert_eq!(runs.load(Ordering::SeqCst), 1);
//! # Ok(())
//! # }
//! ```
//!
//! With axum, the voice routes in the delivery scope:
//!
//! ```
//! # use axum::{Router, routing::post};
//! # use tower::ServiceBuilder;
//! # use tower_twilio::{Credentials, PublicUrl, TwilioSignatureLayer, replay::MemoryStore,
//! #     replay_guard::{ReplayGuardLayer, Scope}};
//! # async fn incoming_sms() {}
//! # async fn voice() {}
//! # fn app(credentials: Credentials) -> Result<Router, tower_twilio::ConfigError> {
//! let twilio = TwilioSignatureLayer::new(credentials)
//!     .public_url(PublicUrl::fixed("https://api.example.com")?);
//! // A store per scope: replays of a voice webhook with fresh tokens cannot fill the messages'.
//! let messages = Router::new()
//!     .route("/twilio/sms", post(incoming_sms))
//!     .route_layer(ServiceBuilder::new().layer(twilio.clone())
//!         .layer(ReplayGuardLayer::new(MemoryStore::default())));
//! let calls = Router::new()
//!     .route("/twilio/voice", post(voice))
//!     .route_layer(ServiceBuilder::new().layer(twilio)
//!         .layer(ReplayGuardLayer::new(MemoryStore::default()).scope(Scope::Delivery)));
//! # Ok(messages.merge(calls))
//! # }
//! ```

mod body;
mod future;
mod layer;
mod outcome;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::{ReplayGuardLayer, Scope, StoreFailure};
pub use self::outcome::ReplayOutcome;
pub use self::service::ReplayGuard;
