//! Times each crate's check on the payloads whose verdict `src/main.rs` finds right (checked
//! again here), as `rust_peers/ID/PAYLOAD`, with the settings of tower-twilio's own
//! `benches/verify.rs`. Each iteration is `Peer::verify` on a request `Peer::prepare` built
//! outside the timed part (`iter_batched`): the time is what the application runs, not what
//! the framework does.

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use rust_peers::{PAYLOADS, Peer, SmsTwilio, TwilioAgnostic, TwilioRs, WebhookVerify};

fn time<P: Peer>(c: &mut Criterion, peer: &P) {
    let mut group = c.benchmark_group("rust_peers");
    for payload in &PAYLOADS {
        if peer.unsupported(payload).is_some()
            || !peer.verify(peer.prepare(&payload.genuine()))
            || peer.verify(peer.prepare(&payload.changed_body()))
            || peer.verify(peer.prepare(&payload.wrong_signature()))
        {
            continue; // reported by src/main.rs, not timed
        }
        let input = payload.genuine();
        group.bench_function(BenchmarkId::new(peer.id(), payload.name), |b| {
            b.iter_batched(
                || peer.prepare(&input),
                |prepared| assert!(black_box(peer.verify(prepared))),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn peers(c: &mut Criterion) {
    time(c, &TwilioRs::new());
    time(c, &TwilioAgnostic::new());
    time(c, &SmsTwilio::new());
    time(c, &WebhookVerify::new());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = peers
}
criterion_main!(benches);
