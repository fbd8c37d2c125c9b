//! Runs one benchmark body N times, for instruction counts under callgrind (the VM this crate
//! is measured on has no hardware counters). `benches/instructions.sh` drives it.
//!
//! ```text
//! cargo bench --bench instructions --no-run
//! valgrind --tool=callgrind target/release/deps/instructions-HASH with a_sms 1000
//! ```
//!
//! MODE is `with` (one request through the layer, as `layer/with` in `verify.rs`), `without`
//! (the same service without the layer), `verify` (`verify/valid`), `floor` (the hash a
//! verification cannot avoid: HMAC-SHA1 over the signed string with a fresh key, as
//! `parts/hmac_sha1`, plus the body's SHA-256 for the JSON payload) or `hash` (the hashing
//! `verify` does: the same from the pre-keyed state a `Secret` caches, as
//! `parts/hmac_sha1_prekeyed`); `verify` − `hash` is the work verification adds to hashing.
#![allow(missing_docs)]

use std::{convert::Infallible, hint::black_box};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_twilio::{Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody};

#[allow(dead_code)] // the payload helpers this probe does not need
mod payloads;

use payloads::{PAYLOADS, PUBLIC_BASE, TOKEN};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, name, count] = args.as_slice() else {
        // `cargo bench` runs every bench target: nothing to do without arguments.
        return;
    };
    let payload = PAYLOADS
        .iter()
        .find(|p| p.name == name)
        .expect("a payload name: a_sms, b_status, c_mms or d_json");
    let count: usize = count.parse().expect("an iteration count");
    let secret = Secret::new(TOKEN).expect("non-empty token");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let twilio =
        TwilioSignatureLayer::new(Credentials::new().auth_token("primary", secret.clone()))
            .public_url(PublicUrl::fixed(PUBLIC_BASE).expect("valid base URL"));
    let ok = || async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) };
    let with_layer = ServiceBuilder::new()
        .layer(twilio)
        .service(service_fn(move |_: Request<VerifiedBody>| ok()));
    let without_layer = service_fn(move |_: Request<Full<Bytes>>| ok());
    let signed = payload.signed_string();
    let keyed = <Hmac<Sha1> as KeyInit>::new_from_slice(TOKEN.as_bytes()).expect("any key length");
    for _ in 0..count {
        match mode.as_str() {
            "with" => {
                let response = runtime.block_on(with_layer.clone().oneshot(payload.http_request()));
                assert_eq!(response.expect("infallible").status(), StatusCode::OK);
            }
            "without" => {
                let response = runtime.block_on(without_layer.oneshot(payload.http_request()));
                assert_eq!(response.expect("infallible").status(), StatusCode::OK);
            }
            "verify" => {
                let verified = payload.request(payload.signature).verify([&secret]);
                black_box(verified).expect("a valid signature");
            }
            "floor" => {
                let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(black_box(TOKEN.as_bytes()))
                    .expect("any key length");
                mac.update(black_box(&signed));
                black_box(mac.finalize().into_bytes());
                if !payload.is_form() {
                    black_box(Sha256::digest(black_box(payload.body)));
                }
            }
            "hash" => {
                let mut mac = black_box(&keyed).clone();
                mac.update(black_box(&signed));
                black_box(mac.finalize().into_bytes());
                if !payload.is_form() {
                    black_box(Sha256::digest(black_box(payload.body)));
                }
            }
            other => panic!("unknown mode {other:?}: with, without, verify, floor or hash"),
        }
    }
}
