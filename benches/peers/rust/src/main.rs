//! Checks each crate's verdicts on the benchmark payloads and prints one JSON object per crate
//! and payload (`impl` the benchmark id, `name` with the version): `verdict` is `valid` (it accepts the genuine request and rejects it with one
//! character of the body changed and with a wrong signature), `not supported: WHY (what it
//! answers all the same)`, or
//! `wrong: WHAT` (and then benches/peers/run.sh does not time it).

use rust_peers::{PAYLOADS, Payload, Peer, SmsTwilio, TwilioAgnostic, TwilioRs, WebhookVerify};

fn verdict<P: Peer>(peer: &P, payload: &'static Payload) -> String {
    if let Some(why) = peer.unsupported(payload) {
        // What it answers all the same, for the record.
        let answer = if peer.verify(peer.prepare(&payload.genuine())) {
            "accepts"
        } else {
            "rejects"
        };
        return format!("not supported: {why} ({answer} the genuine request)");
    }
    let mut wrong = Vec::new();
    if !peer.verify(peer.prepare(&payload.genuine())) {
        wrong.push("rejects the genuine request");
    }
    if peer.verify(peer.prepare(&payload.changed_body())) {
        wrong.push("accepts a changed body");
    }
    if peer.verify(peer.prepare(&payload.wrong_signature())) {
        wrong.push("accepts a wrong signature");
    }
    if wrong.is_empty() {
        "valid".to_owned()
    } else {
        format!("wrong: {}", wrong.join(", "))
    }
}

fn report<P: Peer>(peer: &P) {
    for payload in &PAYLOADS {
        // Names and verdicts are plain ASCII without quotes: no escaping needed.
        println!(
            "{{\"impl\": \"{}\", \"name\": \"{}\", \"payload\": \"{}\", \"verdict\": \"{}\"}}",
            peer.id(),
            peer.name(),
            payload.name,
            verdict(peer, payload)
        );
    }
}

fn main() {
    report(&TwilioRs::new());
    report(&TwilioAgnostic::new());
    report(&SmsTwilio::new());
    report(&WebhookVerify::new());
}
