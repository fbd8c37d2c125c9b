//! Instruction counts of the replay guard through the whole layer: a measurement tool for
//! callgrind, whose counts do not depend on the machine's load (see docs/BENCHMARKS.md).
//!
//! Run with
//!
//! ```text
//! cargo build --release --example replay_cost
//! valgrind --tool=callgrind --toggle-collect='*replay_cost*send_all*' \
//!     target/release/examples/replay_cost layer 20000
//! ```
//!
//! `plain N` sends N distinct signed SMS webhooks through `TwilioSignatureLayer`; `layer N` the
//! same with `ReplayGuardLayer::default()` after the signature layer (every webhook new: key,
//! claim, handler, reading and storing its answer, complete). The requests are built and signed
//! before counting starts; only `send_all` is counted.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_twilio::{
    Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody,
    form::Params,
    replay_guard::ReplayGuardLayer,
    signature::{Algorithm, sign},
};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const PUBLIC: &str = "https://api.example.com";

fn webhooks(count: u32) -> Vec<Request<Full<Bytes>>> {
    let secret = Secret::new(TOKEN).expect("a token");
    (0..count)
        .map(|n| {
            let body = format!(
                "AccountSid=AC0123ffffffffffffffffffffffffffff&From=%2B14155550100&To=%2B14155550199&Body=Hello&MessageSid=SM{n:032}"
            );
            let signature = sign(
                secret.expose_secret(),
                Algorithm::HmacSha1,
                &format!("{PUBLIC}/twilio/sms"),
                Params::parse(body.as_bytes()).iter(),
            );
            Request::post("/twilio/sms")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", signature)
                .body(Full::new(Bytes::from(body)))
                .expect("a request")
        })
        .collect()
}

/// Drives every request to its answer: the only function callgrind counts.
#[inline(never)]
fn send_all<S, B>(
    runtime: &tokio::runtime::Runtime,
    service: S,
    requests: Vec<Request<Full<Bytes>>>,
) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
{
    runtime.block_on(async move {
        let mut ok = 0;
        for request in requests {
            let response = service.clone().oneshot(request).await.expect("infallible");
            ok += usize::from(response.status() == StatusCode::OK);
        }
        ok
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "layer".to_owned());
    let count: u32 = args.next().map_or(20_000, |n| n.parse().expect("a count"));
    let requests = webhooks(count);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let handler = |_: Request<VerifiedBody>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"<Response/>"))))
    };
    let layer = TwilioSignatureLayer::new(
        Credentials::new().auth_token("primary", Secret::new(TOKEN).expect("a token")),
    )
    .public_url(PublicUrl::fixed(PUBLIC).expect("a base URL"))
    .on_security_event(());
    let ok = match variant.as_str() {
        "plain" => send_all(
            &runtime,
            ServiceBuilder::new().layer(layer).service_fn(handler),
            requests,
        ),
        "layer" => send_all(
            &runtime,
            ServiceBuilder::new()
                .layer(layer)
                .layer(ReplayGuardLayer::default())
                .service_fn(handler),
            requests,
        ),
        other => panic!("plain or layer, not {other}"),
    };
    assert_eq!(ok, count as usize, "every webhook is new and verified");
    println!("{variant}: {ok} webhooks answered 200");
}
