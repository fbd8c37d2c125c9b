//! Runs one benchmark body N times, for instruction counts under callgrind (the VM this crate
//! is measured on has no hardware counters). `benches/instructions.sh` and the gate,
//! `scripts/instruction_gate.sh`, drive it.
//!
//! ```text
//! cargo build --release --bench instructions
//! valgrind --tool=callgrind --toggle-collect=instructions::measured \
//!     target/release/deps/instructions-HASH with a_sms 1000
//! ```
//!
//! MODE is `with` (one request through the layer, as `layer/with` in `verify.rs`), `without`
//! (the same service without the layer), `verify` (`verify/valid`), `floor` (the hash a
//! verification cannot avoid: HMAC-SHA1 over the signed string with a fresh key, as
//! `parts/hmac_sha1`, plus the body's SHA-256 for the JSON payload) or `hash` (the hashing
//! `verify` does: the same from the pre-keyed state a `Secret` caches, as
//! `parts/hmac_sha1_prekeyed`); `verify` − `hash` is the work verification adds to hashing.
//! The body runs [`WARM_UP`] times first, so that one-time work (the runtime's first poll, the
//! allocator's first pages) is done, then N times inside [`measured`], the one function the
//! gate counts (`--toggle-collect`): the process's start and exit are left out.
//!
//! MODE `growth-params` and `growth-body_bytes` take a size instead of a payload name: `verify`
//! on the generated form body of `benches/growth` with that many parameters or `Body` bytes
//! (the criterion groups `growth/params/N` and `growth/body_bytes/N`), for
//! `benches/growth/run.sh`.
//!
//! MODE `server-with` and `server-without` serve the app of `examples/bench_server.rs` (with
//! and without the layer) with hyper's HTTP/1 server on one in-memory keep-alive connection
//! (`tokio::io::duplex`: no socket, no timer, no other thread, so the order of events never
//! changes), to a hyper client on the same thread. After the warm-up requests, every poll of
//! the server's connection goes through [`server_poll`], the function the gate counts: HTTP
//! parsing and writing, routing, the layer and the handler, without the client and the
//! runtime's scheduling. MODE `server-minimal` serves the same app behind the least any
//! verifying layer does (see [`minimal_layer`]), for what the layer's own work adds beyond it. The one
//! clock-driven work left is hyper rendering its `Date` header again when a second has passed;
//! the gate subtracts it.
#![allow(missing_docs)]

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::{Router, http::header, routing::post};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_twilio::{
    Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody, verify::WebhookRequest,
};

#[allow(dead_code)] // the list of sizes: the probe takes any size it is given
mod growth;
#[allow(dead_code)] // the payload helpers this probe does not need
mod payloads;

use payloads::{PAYLOADS, PUBLIC_BASE, Payload, TOKEN};

/// Runs of the body before the counted ones.
const WARM_UP: usize = 10;

/// Runs `body` `count` times: the only function the gate counts.
#[inline(never)]
fn measured(count: usize, body: &dyn Fn()) {
    for _ in 0..count {
        body();
    }
}

/// The server's connection, polled through [`server_poll`] once `counting` is set, and
/// directly before (the warm-up).
struct Counted {
    connection: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>,
    counting: Arc<AtomicBool>,
}

impl Future for Counted {
    type Output = hyper::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.counting.load(Ordering::Relaxed) {
            server_poll(self.connection.as_mut(), cx)
        } else {
            self.connection.as_mut().poll(cx)
        }
    }
}

/// One poll of the server's connection: the only function the gate counts in the server
/// modes.
#[inline(never)]
fn server_poll(
    connection: Pin<&mut (dyn Future<Output = hyper::Result<()>> + Send)>,
    cx: &mut Context<'_>,
) -> Poll<hyper::Result<()>> {
    connection.poll(cx)
}

/// The app of `examples/bench_server.rs`: read the body, answer TwiML.
fn app() -> Router {
    async fn webhook(body: Bytes) -> ([(header::HeaderName, &'static str); 1], &'static str) {
        black_box(body);
        ([(header::CONTENT_TYPE, "text/xml")], "<Response/>")
    }
    Router::new()
        .route("/twilio/sms", post(webhook))
        .route("/twilio/status", post(webhook))
        .route("/twilio/mms", post(webhook))
        .route("/twilio/json", post(webhook))
}

/// `count` keep-alive requests from a hyper client to `app` served by hyper over an in-memory
/// connection, after [`WARM_UP`] uncounted ones. The router is served as `axum::serve` serves
/// it (`Router::into_make_service`): `with_state` turns its handlers into routes, with their
/// layers, once; a router served without it does that again for every request.
fn serve(runtime: &tokio::runtime::Runtime, app: Router, payload: &'static Payload, count: usize) {
    let app = app.with_state(());
    runtime.block_on(async move {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let counting = Arc::new(AtomicBool::new(false));
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), TowerToHyperService::new(app));
        let server = tokio::spawn(Counted {
            connection: Box::pin(connection),
            counting: Arc::clone(&counting),
        });
        let (mut sender, client) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
            .await
            .expect("handshake");
        let client = tokio::spawn(client);
        for n in 0..WARM_UP + count {
            if n == WARM_UP {
                counting.store(true, Ordering::Relaxed);
            }
            let response = sender
                .send_request(payload.http_request())
                .await
                .expect("a response");
            assert_eq!(response.status(), StatusCode::OK);
            black_box(response.into_body().collect().await.expect("a body"));
        }
        counting.store(false, Ordering::Relaxed);
        drop(sender);
        client
            .await
            .expect("client task")
            .expect("client connection");
        server
            .await
            .expect("server task")
            .expect("server connection");
    });
}

/// The least any verifying layer does in this server, to show what the layer's own work is:
/// it reads the body whole, hands the handler the bytes in another body type and puts one
/// shared context into the request's extensions, and hands the response back as it is. It parses,
/// looks up and verifies nothing. MODE `server-minimal` serves the app with it.
mod minimal_layer {
    use std::{
        future::Future,
        pin::Pin,
        sync::Arc,
        task::{Context, Poll, ready},
    };

    use bytes::Bytes;
    use http::{Request, Response, request::Parts};
    use http_body_util::{BodyExt, Full, combinators::Collect};
    use pin_project_lite::pin_project;
    use tower::{Layer, Service};

    /// What the handler gets in the extensions: a shared context, as the layer's.
    #[derive(Clone)]
    pub(crate) struct MinimalContext(#[allow(dead_code)] Arc<u64>);

    #[derive(Clone, Copy)]
    pub(crate) struct MinimalLayer;

    impl<S> Layer<S> for MinimalLayer {
        type Service = Minimal<S>;
        fn layer(&self, inner: S) -> Minimal<S> {
            Minimal(inner)
        }
    }

    #[derive(Clone)]
    pub(crate) struct Minimal<S>(S);

    impl<S, B, ResBody> Service<Request<B>> for Minimal<S>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
        B: http_body::Body,
    {
        type Response = Response<ResBody>;
        type Error = S::Error;
        type Future = MinimalFuture<S, B>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, request: Request<B>) -> Self::Future {
            let clone = self.0.clone();
            let inner = std::mem::replace(&mut self.0, clone);
            let (parts, body) = request.into_parts();
            MinimalFuture {
                state: State::Collecting {
                    body: body.collect(),
                    parts: Some(parts),
                    inner: Some(inner),
                },
            }
        }
    }

    pin_project! {
        pub struct MinimalFuture<S: Service<Request<Full<Bytes>>>, B: http_body::Body> {
            #[pin]
            state: State<S, B>,
        }
    }

    pin_project! {
        #[project = StateProj]
        enum State<S: Service<Request<Full<Bytes>>>, B: http_body::Body> {
            Collecting { #[pin] body: Collect<B>, parts: Option<Parts>, inner: Option<S> },
            Inner { #[pin] future: S::Future },
        }
    }

    impl<S, B, ResBody> Future for MinimalFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
        B: http_body::Body,
    {
        type Output = Result<Response<ResBody>, S::Error>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut this = self.project();
            loop {
                match this.state.as_mut().project() {
                    StateProj::Collecting { body, parts, inner } => {
                        let Ok(collected) = ready!(body.poll(cx)) else {
                            panic!("the probe's bodies do not fail");
                        };
                        let mut parts = parts.take().expect("polled once");
                        parts.extensions.insert(MinimalContext(Arc::new(7)));
                        let request = Request::from_parts(parts, Full::new(collected.to_bytes()));
                        let future = inner.take().expect("polled once").call(request);
                        this.state.set(State::Inner { future });
                    }
                    StateProj::Inner { future } => {
                        let response = ready!(future.poll(cx))?;
                        return Poll::Ready(Ok(response));
                    }
                }
            }
        }
    }
}

/// `verify` on a generated body of `benches/growth` (`kind` `params` or `body_bytes`, as the
/// criterion groups `growth/KIND/SIZE`), `count` times after the warm-up.
fn growth_mode(kind: &str, size: &str, count: usize) {
    let size: usize = size
        .parse()
        .expect("a size: a parameter count or a number of bytes");
    let body = match kind {
        "params" => growth::body_with_params(size),
        "body_bytes" => growth::body_with_text(size),
        other => panic!("unknown growth mode {other:?}: growth-params or growth-body_bytes"),
    };
    let secret = Secret::new(TOKEN).expect("non-empty token");
    let signature = growth::signature(&secret, &body);
    let request = WebhookRequest::new(&Method::POST, growth::URL, body.as_bytes())
        .content_type(b"application/x-www-form-urlencoded")
        .signature(signature.as_bytes());
    let verify = || {
        black_box(black_box(request).verify([&secret])).expect("a valid signature");
    };
    for _ in 0..WARM_UP {
        verify();
    }
    measured(count, &verify);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, name, count] = args.as_slice() else {
        // `cargo bench` runs every bench target: nothing to do without arguments.
        return;
    };
    if let Some(kind) = mode.strip_prefix("growth-") {
        let count: usize = count.parse().expect("an iteration count");
        return growth_mode(kind, name, count);
    }
    let payload = PAYLOADS
        .iter()
        .find(|p| p.name == name)
        .expect("a payload name: a_sms, b_status, c_mms or d_json");
    let count: usize = count.parse().expect("an iteration count");
    let secret = Secret::new(TOKEN).expect("non-empty token");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let twilio = || {
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", secret.clone()))
            .public_url(PublicUrl::fixed(PUBLIC_BASE).expect("valid base URL"))
    };
    let ok = || async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) };
    let with_layer = ServiceBuilder::new()
        .layer(twilio())
        .service(service_fn(move |_: Request<VerifiedBody>| ok()));
    let without_layer = service_fn(move |_: Request<Full<Bytes>>| ok());
    let with = || {
        let response = runtime.block_on(with_layer.clone().oneshot(payload.http_request()));
        assert_eq!(response.expect("infallible").status(), StatusCode::OK);
    };
    let without = || {
        let response = runtime.block_on(without_layer.oneshot(payload.http_request()));
        assert_eq!(response.expect("infallible").status(), StatusCode::OK);
    };
    let verify = || {
        let verified = payload.request(payload.signature).verify([&secret]);
        black_box(verified).expect("a valid signature");
    };
    let signed = payload.signed_string();
    let keyed = <Hmac<Sha1> as KeyInit>::new_from_slice(TOKEN.as_bytes()).expect("any key length");
    let floor = || {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(black_box(TOKEN.as_bytes()))
            .expect("any key length");
        mac.update(black_box(&signed));
        black_box(mac.finalize().into_bytes());
        if !payload.is_form() {
            black_box(Sha256::digest(black_box(payload.body)));
        }
    };
    let hash = || {
        let mut mac = black_box(&keyed).clone();
        mac.update(black_box(&signed));
        black_box(mac.finalize().into_bytes());
        if !payload.is_form() {
            black_box(Sha256::digest(black_box(payload.body)));
        }
    };
    let body: &dyn Fn() = match mode.as_str() {
        "server-with" => return serve(&runtime, app().route_layer(twilio()), payload, count),
        "server-without" => return serve(&runtime, app(), payload, count),
        "server-minimal" => {
            return serve(
                &runtime,
                app().route_layer(minimal_layer::MinimalLayer),
                payload,
                count,
            );
        }
        "with" => &with,
        "without" => &without,
        "verify" => &verify,
        "floor" => &floor,
        "hash" => &hash,
        other => {
            panic!(
                "unknown mode {other:?}: with, without, verify, floor, hash, server-with, server-without or server-minimal"
            )
        }
    };
    for _ in 0..WARM_UP {
        body();
    }
    measured(count, body);
}
