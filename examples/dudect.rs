//! A dudect-style timing check of the signature comparison: does checking a forged signature
//! take longer when its first byte is right?
//!
//! Run with `cargo run --release --example dudect [measurements]` (default 200 000 per test;
//! a few seconds). It is a measurement tool, not a test: timing on a shared machine is noisy,
//! so read the verdict, don't assert on it.
//!
//! Method (Reparaz, Balasch, Verbauwhede, "Dude, is my code constant time?", 2017): two input
//! classes, interleaved at random, each measurement timing a small batch of calls; Welch's
//! t-test between the classes, on all measurements and on the ones below several percentiles
//! (cropping the slow tail that interrupts cause). |t| above 4.5 is evidence of a timing
//! difference; dudect calls |t| above 10 a definite leak.
//!
//! The classes: a forged signature whose first MAC byte equals the expected one (only the last
//! byte is wrong) against one whose first byte differs (everything else equal). An early-exit
//! comparison is slower on the first class. Three subjects are measured:
//!
//! 1. `subtle::ConstantTimeEq` on the 20-byte MACs: the comparison the verifier makes for every
//!    candidate (`ReceivedSignature::matches`);
//! 2. the whole `WebhookRequest::verify` of a form request carrying each forged signature;
//! 3. a deliberately leaky early-exit loop, as a control that the method can see a leak of a
//!    few nanoseconds on this machine;
//! 4. the whole layer (`TwilioSignatureLayer` around an `AccountMap`), with another pair of
//!    classes: a forged request for a known account against the same request for an unknown
//!    one (a well-formed `AccountSid` the map does not hold). Both are refused; the equal-work
//!    rule makes the unknown account cost the same HMAC work (a dummy key), so the response
//!    time must not tell which accounts exist.
#![allow(clippy::print_stdout)]

use std::{hint::black_box, time::Instant};

use base64::Engine as _;
use http::Method;
use subtle::ConstantTimeEq;
use tower_twilio::{
    Secret,
    form::Params,
    signature::{Algorithm, sign},
    verify::WebhookRequest,
};

const URL: &str = "https://api.example.com/twilio/sms";
const BODY: &[u8] = b"AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100&Body=Hello";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const FIRST_BYTE: (&str, &str) = ("first byte right", "first byte wrong");

/// A small, seedable generator (xorshift64*), so that runs are repeatable and need no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Welch's t statistic between two samples.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    fn mean_var(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    (ma - mb) / (va / a.len() as f64 + vb / b.len() as f64).sqrt()
}

/// Times `run(class)` in batches, classes interleaved at random; returns the largest |t| over
/// the uncropped and cropped sets, and the mean nanoseconds per call of each class.
fn measure(
    name: &str,
    (label_a, label_b): (&str, &str),
    measurements: usize,
    batch: usize,
    mut run: impl FnMut(bool) -> bool,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut samples: Vec<(bool, f64)> = Vec::with_capacity(measurements);
    // Warm up caches and the branch predictor.
    for i in 0..batch * 100 {
        black_box(run(i % 2 == 0));
    }
    for _ in 0..measurements {
        let class = rng.next() & 1 == 1;
        let start = Instant::now();
        for _ in 0..batch {
            black_box(run(black_box(class)));
        }
        let elapsed = start.elapsed().as_nanos() as f64 / batch as f64;
        samples.push((class, elapsed));
    }

    let mut sorted: Vec<f64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_by(f64::total_cmp);
    let mut worst = (0.0f64, "all");
    for (label, percentile) in [
        ("all", 1.0),
        ("p99", 0.99),
        ("p90", 0.90),
        ("p75", 0.75),
        ("p50", 0.50),
    ] {
        let cut = sorted[((sorted.len() - 1) as f64 * percentile) as usize];
        let kept = samples.iter().filter(|s| s.1 <= cut);
        let a: Vec<f64> = kept.clone().filter(|s| s.0).map(|s| s.1).collect();
        let b: Vec<f64> = kept.filter(|s| !s.0).map(|s| s.1).collect();
        if a.len() < 2 || b.len() < 2 {
            continue;
        }
        let t = welch_t(&a, &b);
        if t.abs() > worst.0.abs() {
            worst = (t, label);
        }
    }
    let mean = |class: bool| {
        let x: Vec<f64> = samples
            .iter()
            .filter(|s| s.0 == class)
            .map(|s| s.1)
            .collect();
        x.iter().sum::<f64>() / x.len() as f64
    };
    let verdict = match worst.0.abs() {
        t if t < 4.5 => "no evidence of a timing difference",
        t if t < 10.0 => "possible timing difference: rerun with more measurements",
        _ => "TIMING DIFFERENCE",
    };
    println!(
        "dudect: {name}: {measurements} measurements x {batch} calls, max |t| = {:.2} ({}), \
         {label_a} {:.1} ns, {label_b} {:.1} ns: {verdict}",
        worst.0.abs(),
        worst.1,
        mean(true),
        mean(false),
    );
}

fn main() {
    let measurements: usize = std::env::args()
        .nth(1)
        .map_or(200_000, |n| n.parse().expect("measurements: a number"));

    let params = Params::parse(BODY);
    let good = sign(TOKEN.as_bytes(), Algorithm::HmacSha1, URL, params.iter());
    let engine = base64::engine::general_purpose::STANDARD;
    let mac = engine.decode(&good).unwrap();
    // First byte right, last byte wrong; and the same with the first byte wrong too.
    let mut first_right = mac.clone();
    first_right[19] ^= 0x01;
    let mut first_wrong = first_right.clone();
    first_wrong[0] ^= 0x80;
    let (right_sig, wrong_sig) = (engine.encode(&first_right), engine.encode(&first_wrong));

    measure(
        "subtle::ConstantTimeEq on 20-byte MACs",
        FIRST_BYTE,
        measurements * 5,
        64,
        |class| {
            let received = if class { &first_right } else { &first_wrong };
            bool::from(black_box(received.as_slice()).ct_eq(black_box(mac.as_slice())))
        },
    );

    let secret = Secret::new(TOKEN).unwrap();
    measure(
        "WebhookRequest::verify, forged signatures",
        FIRST_BYTE,
        measurements / 4,
        8,
        |class| {
            let sig = if class { &right_sig } else { &wrong_sig };
            WebhookRequest::new(&Method::POST, URL, BODY)
                .content_type(b"application/x-www-form-urlencoded")
                .signature(black_box(sig.as_bytes()))
                .verify([&secret])
                .is_ok()
        },
    );

    layer_known_vs_unknown(measurements / 10);

    measure(
        "control: early-exit comparison (expected to leak)",
        FIRST_BYTE,
        measurements * 5,
        64,
        |class| {
            let received = if class { &first_right } else { &first_wrong };
            leaky_eq(black_box(received), black_box(&mac))
        },
    );
}

/// Subject 4: a forged form webhook through the whole layer, for a known account (class
/// `true`) or an unknown one (`false`), on a current-thread runtime.
fn layer_known_vs_unknown(measurements: usize) {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{Service, ServiceBuilder, ServiceExt};
    use tower_twilio::{
        Credentials, PublicUrl, TwilioSignatureLayer, VerifiedBody, resolver::AccountMap,
    };

    const KNOWN: &str = "AC0123456789abcdef0123456789abcdef";
    const UNKNOWN: &str = "ACfedcba9876543210fedcba9876543210";
    let resolver = AccountMap::new().insert_account(
        KNOWN,
        Credentials::new().auth_token("primary", Secret::new(TOKEN).unwrap()),
    );
    let layer = TwilioSignatureLayer::new(resolver)
        .public_url(PublicUrl::fixed("https://api.example.com").unwrap())
        .on_security_event(());
    let mut service =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: http::Request<VerifiedBody>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
            });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The same forged signature and body shape for both; only the AccountSid differs.
    let body = |sid: &str| Bytes::from(format!("AccountSid={sid}&From=%2B14155550100&Body=Hello"));
    let (known, unknown) = (body(KNOWN), body(UNKNOWN));
    let forged = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    measure(
        "TwilioSignatureLayer, forged request",
        ("known account", "unknown account"),
        measurements,
        4,
        |class| {
            let body = if class {
                known.clone()
            } else {
                unknown.clone()
            };
            let request = http::Request::post("/twilio/sms")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", forged)
                .body(Full::new(body))
                .unwrap();
            let response = runtime.block_on(async {
                let ready = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut service)
                    .await
                    .unwrap();
                ready.call(request).await.unwrap()
            });
            response.status().is_success()
        },
    );
}

/// What not to do: returns at the first differing byte.
fn leaky_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for i in 0..a.len() {
        if black_box(a[i]) != black_box(b[i]) {
            return false;
        }
    }
    true
}
