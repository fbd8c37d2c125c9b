//! The layer inside real servers: axum, hyper 1 with hyper-util, tonic, and a tower-http stack.
//!
//! Every server listens on `127.0.0.1:0` and lives as long as its test's runtime; every network
//! call is bounded by [`bounded`].

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Extension, Router,
    extract::{ConnectInfo, State},
    routing::{get, post},
};
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_twilio::{
    PeerAddr, Rejection, RejectionKind, VerifiedBody, VerifiedWebhook, events::Outcome,
    signature::Algorithm,
};

use crate::support::*;

/// The longest any single network step of these tests may take.
const LIMIT: Duration = Duration::from_secs(5);

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs `future`, failing the test if it takes longer than [`LIMIT`].
async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("timed out")
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Points a request built by the support helpers (origin-form target) at `addr`. The `Host`
/// header they set is kept: with a fixed public URL it plays no part in verification.
fn to(addr: SocketAddr, mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let path = request.uri().path_and_query().unwrap().as_str();
    *request.uri_mut() = format!("http://{addr}{path}").parse::<Uri>().unwrap();
    request
}

/// `signed_post` with the body changed after signing.
fn forged_post(path: &str) -> Request<Full<Bytes>> {
    let (parts, _) = signed_post(path, SMS_BODY).into_parts();
    let forged = SMS_BODY.replace("Hello", "Jello");
    Request::from_parts(parts, Full::new(Bytes::from(forged)))
}

/// Sends `request` to `addr` and returns the status and body text.
async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let response = bounded(client().request(to(addr, request)))
        .await
        .expect("request sent");
    let status = response.status();
    (status, bounded(body_string(response)).await)
}

/// Asserts that `sink` saw exactly one rejection, for `kind`, from a client on localhost.
fn assert_one_rejection(sink: &RecordingSink, kind: RejectionKind) {
    let events = sink.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason, kind);
    assert_eq!(events[0].outcome, Outcome::Rejected);
    assert_eq!(events[0].client_ip, Some(LOCALHOST), "peer address found");
    assert_eq!(events[0].url, format!("{PUBLIC}/twilio/sms"));
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

// ---------------------------------------------------------------------------------------------
// axum 0.8

/// The handler of the protected route: answers with what it was given, so the test can check
/// that the body bytes and the verified context both arrived.
async fn axum_sms(
    State(calls): State<Arc<AtomicUsize>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(webhook): Extension<VerifiedWebhook>,
    body: String,
) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    format!(
        "{}|{}|{}|{body}",
        webhook.account_sid().unwrap_or("-"),
        webhook.params().get("Body").unwrap_or("-"),
        peer.ip(),
    )
}

async fn serve_axum(app: Router) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

#[tokio::test]
async fn axum_route_layer_verifies_only_the_webhook_route() {
    let sink = RecordingSink::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let twilio = layer(&sink)
        .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
    let app = Router::new()
        .route("/twilio/sms", post(axum_sms))
        .route_layer(twilio)
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::clone(&calls));
    let addr = serve_axum(app).await;

    // Signed: the handler gets the exact bytes and the verified context.
    let (status, body) = send(addr, signed_post("/twilio/sms", SMS_BODY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        format!("AC0123ffffffffffffffffffffffffffff|Hello \u{1F44B} world|127.0.0.1|{SMS_BODY}")
    );
    assert!(sink.events().is_empty());

    // Tampered: refused before the handler.
    let (status, body) = send(addr, forged_post("/twilio/sms")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "Forbidden");
    assert_one_rejection(&sink, RejectionKind::SignatureMismatch);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The unprotected route is untouched.
    let health = Request::get("/healthz").body(Full::default()).unwrap();
    let (status, body) = send(addr, health).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(sink.events().len(), 1, "no event for /healthz");
}

#[tokio::test]
async fn axum_answers_413_to_an_announced_10mb_body_without_reading_it() {
    let sink = RecordingSink::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let twilio = layer(&sink)
        .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()));
    let app = Router::new()
        .route("/twilio/sms", post(axum_sms))
        .route_layer(twilio)
        .with_state(Arc::clone(&calls));
    let addr = serve_axum(app).await;

    // Only the head is sent. Were the server waiting for the body, the read below would time
    // out instead of seeing a response.
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        &format!("{PUBLIC}/twilio/sms"),
        SMS_BODY,
    );
    let head = format!(
        "POST /twilio/sms HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: {signature}\r\n\
         Content-Length: {}\r\n\
         \r\n",
        10 * 1024 * 1024
    );
    let mut stream = bounded(TcpStream::connect(addr)).await.unwrap();
    bounded(stream.write_all(head.as_bytes())).await.unwrap();
    let response_head = bounded(read_head(&mut stream)).await;
    assert!(
        response_head.starts_with("HTTP/1.1 413 "),
        "{response_head}"
    );
    assert_one_rejection(&sink, RejectionKind::BodyTooLarge);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A custom rejection is whatever axum's `IntoResponse` makes, with no conversion to the
/// layer's body type; the typed reason still rides in its extensions.
#[tokio::test]
async fn axum_rejection_response_is_any_into_response() {
    use axum::response::IntoResponse;

    let sink = RecordingSink::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let twilio = layer(&sink).rejection_response(|rejection: &Rejection| {
        let twiml = format!("<Response><Say>{}</Say></Response>", rejection.kind());
        let content_type = [(http::header::CONTENT_TYPE, "text/xml")];
        (StatusCode::UNAUTHORIZED, content_type, twiml).into_response()
    });
    let app = Router::new()
        .route("/twilio/sms", post(axum_sms))
        .route_layer(twilio)
        .with_state(Arc::clone(&calls));

    let response = app
        .clone()
        .oneshot(forged_post("/twilio/sms"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["content-type"], "text/xml");
    let rejection = response.extensions().get::<Rejection>().cloned();
    assert_eq!(
        rejection.map(|r| r.kind()),
        Some(RejectionKind::SignatureMismatch)
    );
    assert_eq!(
        body_string(response).await,
        "<Response><Say>signature_mismatch</Say></Response>"
    );
    assert_eq!(sink.events().len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // A signed request still reaches the handler, untouched by the custom rejection.
    let mut signed = signed_post("/twilio/sms", SMS_BODY);
    signed
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((LOCALHOST, 4000))));
    let response = app.oneshot(signed).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Reads a raw HTTP/1.1 response up to the end of its head.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before a response head");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---------------------------------------------------------------------------------------------
// hyper 1 + hyper-util

#[tokio::test]
async fn hyper_server_with_peer_addr_per_connection() {
    let sink = RecordingSink::default();
    let service = ServiceBuilder::new().layer(layer(&sink)).service_fn(
        |request: Request<VerifiedBody>| async move {
            let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
            let webhook = request.extensions().get::<VerifiedWebhook>().cloned();
            let body = request.into_body().collect().await?.to_bytes();
            let text = format!(
                "{}|{}|{}",
                webhook
                    .as_ref()
                    .and_then(|w| w.account_sid())
                    .unwrap_or("-"),
                peer.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                String::from_utf8_lossy(&body),
            );
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        },
    );

    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let (stream, remote) = listener.accept().await.unwrap();
            let service = ServiceBuilder::new()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(PeerAddr(remote));
                    request
                })
                .service(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });

    let (status, body) = send(addr, signed_post("/twilio/sms", SMS_BODY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        format!("AC0123ffffffffffffffffffffffffffff|127.0.0.1|{SMS_BODY}")
    );
    assert!(sink.events().is_empty());

    let (status, body) = send(addr, forged_post("/twilio/sms")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "Forbidden")
    );
    assert_one_rejection(&sink, RejectionKind::SignatureMismatch);
}

// ---------------------------------------------------------------------------------------------
// tonic 0.14

#[tokio::test]
async fn tonic_serves_grpc_health_and_the_webhook_on_one_port() {
    use tonic::{
        service::Routes,
        transport::{
            Channel, Server,
            server::{TcpConnectInfo, TcpIncoming},
        },
    };
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let sink = RecordingSink::default();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let twilio = layer(&sink).peer_addr_with(|ext| {
        ext.get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|addr| addr.ip())
    });
    let webhook = Router::new()
        .route(
            "/twilio/sms",
            post(
                |Extension(webhook): Extension<VerifiedWebhook>,
                 axum::Form(form): axum::Form<HashMap<String, String>>| async move {
                    format!(
                        "{}|{}",
                        webhook.account_sid().unwrap_or("-"),
                        form.get("Body").map_or("-", String::as_str)
                    )
                },
            ),
        )
        .route_layer(twilio);
    let app = Routes::new(health).into_axum_router().merge(webhook);

    let (listener, addr) = listen().await;
    tokio::spawn(
        Server::builder()
            .accept_http1(true)
            .add_routes(Routes::from(app))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    // gRPC over HTTP/2: the layer is not in its path.
    let channel = bounded(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("gRPC connection");
    let mut health = HealthClient::new(channel);
    let check = bounded(health.check(HealthCheckRequest {
        service: String::new(),
    }))
    .await
    .expect("health check")
    .into_inner();
    assert_eq!(check.status(), ServingStatus::Serving);
    let unknown = bounded(health.check(HealthCheckRequest {
        service: "no.such.Service".to_owned(),
    }))
    .await
    .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(sink.events().is_empty(), "gRPC never reaches the layer");

    // The webhook over HTTP/1.1 on the same port, as Twilio sends it.
    let (status, body) = send(addr, signed_post("/twilio/sms", SMS_BODY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "AC0123ffffffffffffffffffffffffffff|Hello \u{1F44B} world"
    );
    assert!(sink.events().is_empty());

    let (status, _) = send(addr, forged_post("/twilio/sms")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_one_rejection(&sink, RejectionKind::SignatureMismatch);
}

// ---------------------------------------------------------------------------------------------
// tower-http composition

#[tokio::test]
async fn rejection_survives_trace_timeout_and_catch_panic() {
    use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer, trace::TraceLayer};

    let sink = RecordingSink::default();
    let service = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(5),
        ))
        .layer(CatchPanicLayer::new())
        .layer(layer(&sink))
        .service_fn(|request: Request<VerifiedBody>| async move {
            assert!(request.extensions().get::<VerifiedWebhook>().is_some());
            let body = request.into_body().collect().await?.to_bytes();
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        });

    let response = bounded(
        service
            .clone()
            .oneshot(signed_post("/twilio/sms", SMS_BODY)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.extensions().get::<Rejection>().is_none());
    assert_eq!(body_string(response).await, SMS_BODY);
    assert!(sink.events().is_empty());

    let response = bounded(service.oneshot(forged_post("/twilio/sms")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let rejection = response
        .extensions()
        .get::<Rejection>()
        .expect("rejection survives the outer layers");
    assert_eq!(rejection.kind(), RejectionKind::SignatureMismatch);
    assert_eq!(body_string(response).await, "Forbidden");
    let events = sink.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason, RejectionKind::SignatureMismatch);
}
