//! The generated form bodies of the growth benchmarks: `growth/params/N` and
//! `growth/body_bytes/N` in `benches/verify.rs`, and the probe's `growth-params` and
//! `growth-body_bytes` modes in `benches/instructions.rs`, which `benches/growth/run.sh` fits a
//! line through.

use tower_twilio::{
    Secret,
    form::Params,
    signature::{Algorithm, sign},
};

/// The URL every growth body is signed for.
pub(crate) const URL: &str = "https://example.com/twilio/sms";

/// The parameter counts of `growth/params/N`.
pub(crate) const PARAMS: [usize; 7] = [8, 16, 32, 64, 128, 256, 512];

/// The `Body` lengths of `growth/body_bytes/N`.
pub(crate) const BODY_BYTES: [usize; 5] = [256, 1024, 4096, 16384, 65536];

/// A form body with `count` parameters whose names arrive out of order.
pub(crate) fn body_with_params(count: usize) -> String {
    (0..count)
        // 37 is odd, so for a power-of-two count this visits every index once, scrambled.
        .map(|i| (i * 37) % count)
        .map(|i| format!("Param{i:04}=value+{i}%21"))
        .collect::<Vec<_>>()
        .join("&")
}

/// An SMS-like body whose `Body` value is `bytes` long (before decoding).
pub(crate) fn body_with_text(bytes: usize) -> String {
    let text: String = "Hello+world%21+".chars().cycle().take(bytes).collect();
    format!("AccountSid=ACe268443e43d93dab7ebef303bbe9642f&From=%2B14155550199&Body={text}")
}

/// The X-Twilio-Signature of `body` posted to [`URL`].
pub(crate) fn signature(secret: &Secret, body: &str) -> String {
    sign(
        secret.expose_secret(),
        Algorithm::HmacSha1,
        URL,
        Params::parse(body.as_bytes()).iter(),
    )
}
