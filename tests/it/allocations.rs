//! Heap allocations per verification, counted on this thread (`allocation-counter` is this
//! binary's global allocator). Counts, not timings: they do not depend on the machine.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_twilio::{
    Credentials, PublicUrl, Secret, TwilioSignatureLayer, VerifiedBody, signature::Algorithm,
    verify::VerifyError,
};

// The benchmark's payloads and requests, so that these counts are about what it times.
#[allow(dead_code)]
#[path = "../../benches/payloads/mod.rs"]
mod payloads;

use payloads::{PAYLOADS, PUBLIC_BASE, Payload, TOKEN};

use crate::support::twilio_signature;

fn verify(payload: &Payload, signature: &str, secret: &Secret) -> Result<(), VerifyError> {
    payload.request(signature).verify([secret]).map(drop)
}

/// Allocations of one call, after a warm-up call (the first use of a secret computes its
/// HMAC key schedule, which is kept inline and allocates nothing, but keep that out anyway).
fn allocations(run: impl Fn()) -> u64 {
    run();
    allocation_counter::measure(run).count_total
}

// A valid form webhook costs three allocations whatever its size: the decoded text and the
// pair index of `Params` (each sized exactly, never grown) and the signed string. Sorting
// happens in a stack buffer for up to 64 parameters. A JSON webhook (`bodySHA256`) costs
// none. A bound that grows with the number of parameters would fail the MMS row (41).
#[test]
fn valid_webhooks_allocate_at_most_three_times() {
    let secret = Secret::new(TOKEN).unwrap();
    for payload in &PAYLOADS {
        let count = allocations(|| verify(payload, payload.signature, &secret).unwrap());
        println!(
            "allocations per valid verification, {}: {count}",
            payload.name
        );
        let bound = if payload.content_type.starts_with("application/json") {
            0
        } else {
            3
        };
        assert!(count <= bound, "{}: {count} > {bound}", payload.name);
    }
}

// A forged signature makes the verifier try every spelling of the URL: the three allocations of
// a valid request, one `String` for the other port form, then what the WHATWG form and the
// query re-serialisation the official libraries compare against allocate (4 to 6 for these
// URLs; a lenient form that differs adds one `String`). None of it depends on the body.
#[test]
fn forged_webhooks_allocate_a_bounded_number_of_times() {
    let secret = Secret::new(TOKEN).unwrap();
    for payload in &PAYLOADS {
        let mut forged = payload.signature.to_owned();
        let first = if forged.starts_with('A') { "B" } else { "A" };
        forged.replace_range(..1, first);
        let count = allocations(|| {
            assert_eq!(
                verify(payload, &forged, &secret),
                Err(VerifyError::SignatureMismatch)
            );
        });
        println!(
            "allocations per forged verification, {}: {count}",
            payload.name
        );
        assert!(count <= 10, "{}: {count}", payload.name);
    }
}

/// What one request costs through the layer beyond its verification, in allocations, for the
/// payloads of the HTTP benchmark.
///
/// Beyond what `verify` allocates, the layer adds: the rebuilt URL (which then moves into the
/// verified context), the resolver's view of the request, the `AccountSid` (when the request
/// has one; shared by the view, the context, events and the webhook log), the verified context
/// (one `Arc` around the parameters `verify` parsed), and the request extensions the context
/// goes into (a map, its table and the entry: three here, one where the server has already put
/// extensions on the request). Nothing grows with the body or the number of parameters: the
/// credential list is shared, the applicable secrets are iterated, not collected.
#[test]
fn the_layer_adds_a_fixed_handful_of_allocations_to_verification() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let secret = Secret::new(TOKEN).unwrap();
    let layer = TwilioSignatureLayer::new(Credentials::new().auth_token("primary", secret.clone()))
        .public_url(PublicUrl::fixed(PUBLIC_BASE).unwrap());
    let ok = || async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) };
    let with_layer = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_: Request<VerifiedBody>| ok()));
    let without_layer = service_fn(move |_: Request<Full<Bytes>>| ok());
    for payload in &PAYLOADS {
        let with = allocations(|| {
            let response = runtime
                .block_on(with_layer.clone().oneshot(payload.http_request()))
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{}", payload.name);
        });
        let without = allocations(|| {
            runtime
                .block_on(without_layer.oneshot(payload.http_request()))
                .unwrap();
        });
        let verification = allocations(|| verify(payload, payload.signature, &secret).unwrap());
        let added = with - without - verification;
        println!(
            "allocations added by the layer, {}: {added} (request {without}, verify {verification})",
            payload.name
        );
        assert!(added <= 7, "{}: {added}", payload.name);
    }
}

/// Peak heap bytes held while parsing `body` as a form.
fn parse_peak(body: &[u8]) -> u64 {
    allocation_counter::measure(|| {
        std::hint::black_box(tower_twilio::form::Params::parse(body));
    })
    .bytes_max
}

// Parsing allocates the decoded text (the body's length) and a pair index of 16 bytes per
// non-empty piece, sized exactly. Issue 14's attack was a 64 KiB body of `&`s, whose index was
// sized by the `&` count: 2.16 MB, 33 times the body. The bound for Twilio's own bodies (and for
// `&` runs) is twice the body; one-byte pairs, the worst case, cost 9 times.
#[test]
fn parsing_a_form_holds_at_most_about_twice_the_body() {
    const SIZE: usize = 64 * 1024;
    let ampersands = vec![b'&'; SIZE];
    let peak = parse_peak(&ampersands);
    println!("peak bytes parsing 64 KiB of '&': {peak}");
    assert!(peak <= 2 * SIZE as u64, "{peak}");

    for payload in PAYLOADS.iter().filter(|p| !p.content_type.contains("json")) {
        let peak = parse_peak(payload.body);
        let ratio = peak as f64 / payload.body.len() as f64;
        println!(
            "peak bytes parsing {} ({} bytes): {peak} ({ratio:.2}x)",
            payload.name,
            payload.body.len()
        );
        assert!(
            peak <= 2 * payload.body.len() as u64,
            "{}: {peak}",
            payload.name
        );
    }

    // A realistic webhook grown to 64 KiB: many long-ish pairs.
    let mut big = String::new();
    let mut i = 0;
    while big.len() < SIZE - 64 {
        big.push_str(&format!(
            "MediaUrl{i}=https%3A%2F%2Fapi.twilio.com%2Fmedia%2FME{i:030}&"
        ));
        i += 1;
    }
    let peak = parse_peak(big.as_bytes());
    println!(
        "peak bytes parsing {} bytes of media URLs: {peak}",
        big.len()
    );
    assert!(peak <= 2 * big.len() as u64, "{peak}");

    // The worst case, documented on `Params::parse`: one-byte pairs.
    let tiny: Vec<u8> = b"a&".iter().copied().cycle().take(SIZE).collect();
    let peak = parse_peak(&tiny);
    println!("peak bytes parsing 64 KiB of 'a&': {peak}");
    assert!(peak <= 9 * SIZE as u64 + 1024, "{peak}");
}

/// A layer in front of a handler that answers 200, on a runtime of its own: measures what a
/// request through it costs. One per test, so that its state (a cache, Sentry's flood
/// control) carries from request to request as in a server.
struct Layered {
    send: Box<dyn Fn(Request<Full<Bytes>>) -> StatusCode>,
}

impl Layered {
    fn new<R, E>(layer: TwilioSignatureLayer<R, E>) -> Self
    where
        R: tower_twilio::ResolveCredentials + Clone + Send + 'static,
        E: tower_twilio::events::OnSecurityEvent + Clone + Send + Sync + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ok = || async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) };
        let service = ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |_: Request<VerifiedBody>| ok()));
        let send = move |request| {
            let response = runtime.block_on(service.clone().oneshot(request)).unwrap();
            response.status()
        };
        Self {
            send: Box::new(send),
        }
    }

    /// Peak heap bytes, above what was held before, while the layer answers `request`, and
    /// its status.
    fn peak(&self, request: Request<Full<Bytes>>) -> (u64, StatusCode) {
        let mut status = None;
        let peak = allocation_counter::measure(|| status = Some((self.send)(request))).bytes_max;
        (peak, status.unwrap())
    }

    /// Allocations of refusing `request()` (403), after refusing it once uncounted; building
    /// the request is not counted.
    fn refusal_allocations(&self, request: impl Fn() -> Request<Full<Bytes>>) -> u64 {
        assert_eq!((self.send)(request()), StatusCode::FORBIDDEN);
        let request = request();
        allocation_counter::measure(|| assert_eq!((self.send)(request), StatusCode::FORBIDDEN))
            .count_total
    }
}

/// An account the resolvers of the equal-work tests know, and one they do not.
const KNOWN: &str = "AC0123ffffffffffffffffffffffffffff";
const UNKNOWN: &str = "ACeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

/// A resolver that knows [`KNOWN`], with `credentials`.
fn knowing(credentials: Credentials) -> tower_twilio::resolver::AccountMap {
    tower_twilio::resolver::AccountMap::new().insert_account(KNOWN, credentials)
}

/// The layer of most allocation tests: `TOKEN` as the one auth token, the fixed public URL.
fn single_account_layer() -> TwilioSignatureLayer<Credentials> {
    TwilioSignatureLayer::new(Credentials::new().auth_token("primary", Secret::new(TOKEN).unwrap()))
        .public_url(PublicUrl::fixed(PUBLIC_BASE).unwrap())
}

/// A form request for `/twilio/sms` with this body and a signature made by `token`.
fn form_request(body: Vec<u8>, token: &str) -> Request<Full<Bytes>> {
    let url = format!("{PUBLIC_BASE}/twilio/sms");
    let signature = twilio_signature(token, Algorithm::HmacSha1, &url, &body);
    Request::post("/twilio/sms")
        .header("host", "example.com")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

// The worst body shape for the parser is one-byte pairs (`a&a&…`): 16 bytes of pair index, and
// 16 more of sort key, for every 2 bytes of body. Through the layer, a 64 KiB body of them (the
// default limit) held 1.18 MB, 18 times its size, whether or not it was signed. The number of
// parameters is bounded (1000 by default, like Django's and Express's form parsers), and a
// body over it is refused before anything is decoded: the request holds next to nothing
// beyond its body.
#[test]
fn a_body_over_the_parameter_limit_is_refused_holding_next_to_nothing() {
    const SIZE: usize = 64 * 1024;
    let tiny: Vec<u8> = b"a&".iter().copied().cycle().take(SIZE - 1).collect();
    let layered = Layered::new(single_account_layer());
    for (token, what) in [(TOKEN, "signed"), ("not-the-token-at-all", "forged")] {
        let (peak, status) = layered.peak(form_request(tiny.clone(), token));
        println!("peak bytes through the layer, 64 KiB of 'a&', {what}: {peak} ({status})");
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{what}");
        // Not the decoded text (64 KiB), nor any of its index: only the refusal's own bits.
        assert!(peak <= 4096, "{what}: {peak}");
    }

    // Within the bound, a webhook of many short pairs passes and stays within it too.
    let thousand: Vec<u8> = (0..1000)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes();
    let size = thousand.len() as u64;
    let (peak, status) = layered.peak(form_request(thousand, TOKEN));
    println!("peak bytes through the layer, 1000 pairs ({size} bytes), signed: {peak} ({status})");
    assert_eq!(status, StatusCode::OK);
    assert!(peak <= 2 * size + 48 * 1024, "{peak}");
}

/// A forged request to `/twilio/sms?{query}`, with the webhook log on: the peak heap bytes
/// the layer holds while refusing it.
fn forged_query_peak(query: &str) -> u64 {
    let layer =
        single_account_layer().on_webhook(|entry: &tower_twilio::events::log::WebhookLogEntry| {
            std::hint::black_box(entry);
        });
    let mut request = form_request(b"Body=hi".to_vec(), "not-the-token-at-all");
    *request.uri_mut() = format!("/twilio/sms?{query}").parse().unwrap();
    let (peak, status) = Layered::new(layer).peak(request);
    assert_eq!(status, StatusCode::FORBIDDEN);
    peak
}

// The security event and the webhook log entry keep the first 2 KB of the URL and the query,
// with the query's values redacted; they redacted all of it first. A query of one-byte pieces
// (`a&a&…`) redacts to five times its length (`[redacted]&…`): a forged 60 KB query made the
// layer hold 1.41 MB, where one piece of the same length held 240 KB. What is kept of the query
// is bounded, and so is what is built of it.
#[test]
fn a_query_of_tiny_pieces_costs_what_one_long_piece_does() {
    const SIZE: usize = 60_000;
    let pieces = "a&".repeat(SIZE / 2);
    let one = "x".repeat(SIZE);
    let (pieces, one) = (forged_query_peak(&pieces), forged_query_peak(&one));
    println!("peak bytes of a forged 60 KB query: 'a&' pieces {pieces}, one piece {one}");
    assert!(pieces <= one + 16 * 1024, "{pieces} against {one}");
}

/// Allocations of refusing a forged form `POST` to `/twilio/sms?{query}`.
fn forged_query_allocations(query: &str) -> u64 {
    Layered::new(single_account_layer()).refusal_allocations(|| {
        let mut request = form_request(b"Body=hi".to_vec(), "not-the-token-at-all");
        *request.uri_mut() = format!("/twilio/sms?{query}").parse().unwrap();
        request
    })
}

// A `POST`'s query is searched for an `AccountSid` (a query naming another account than the
// body is refused). With a `%` or a `+` anywhere in it, every name and value was decoded, one
// allocation each that needed it, to compare the names: 10 000 pairs of `a=%20` (60 KB, which
// the parameter limit, a `GET`'s, does not count) cost 10 000 allocations more than 10 000
// pairs of `a=b`. Only a value of `AccountSid` is decoded now.
#[test]
fn a_post_query_costs_no_allocation_per_pair() {
    let plain = forged_query_allocations(&["a=bcd"; 10_000].join("&"));
    let escaped = forged_query_allocations(&["a=%20"; 10_000].join("&"));
    let names = forged_query_allocations(&["%61=+"; 10_000].join("&"));
    println!(
        "allocations of a forged POST with 10 000 query pairs: plain {plain}, escaped values {escaped}, escaped names {names}"
    );
    assert!(escaped <= plain + 2, "{escaped} against {plain}");
    assert!(names <= plain + 2, "{names} against {plain}");
    // Every pair an `AccountSid`, its name or its value escaped: repeats of one account are
    // compared as they decode, and only the first is decoded, so 1000 of them cost what 500 do (both past the
    // 8 KiB of URL that gets lenient spellings).
    let sid = "AC0123ffffffffffffffffffffffffffff";
    let repeats =
        |count: usize, pair: String| forged_query_allocations(&vec![pair; count].join("&"));
    for pair in [
        format!("AccountSid={sid}"),
        format!("%41ccountSid={sid}"),
        format!("AccountSid=%41C{}", &sid[2..]),
    ] {
        let (few, many) = (repeats(500, pair.clone()), repeats(1000, pair.clone()));
        println!(
            "allocations of a forged POST with {pair} in its query 500 times {few}, 1000 times {many}"
        );
        assert_eq!(many, few, "{pair}");
    }
}

/// Allocations of refusing a forged form `POST` with this body.
fn forged_body_allocations(body: &str) -> u64 {
    Layered::new(single_account_layer())
        .refusal_allocations(|| form_request(body.as_bytes().to_vec(), "not-the-token-at-all"))
}

// A form body whose values decode to bytes that are not UTF-8 (`%FF`) was parsed again by the
// reference decoder, which builds each name and value that needs decoding on its own: a forged
// body of 1000 parameters (the limit) of `%FF`s made 5 000 allocations, where one of valid
// escapes made a handful. The bytes are replaced in the text already decoded.
#[test]
fn a_body_of_bytes_that_are_not_utf8_costs_no_allocation_per_parameter() {
    let body = |value: &str| {
        (0..1000)
            .map(|i| format!("k{i}={}", value.repeat(9)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let valid = forged_body_allocations(&body("%C3%A9"));
    let invalid = forged_body_allocations(&body("%FF%FF"));
    println!(
        "allocations of a forged body of 1000 parameters: valid escapes {valid}, not UTF-8 {invalid}"
    );
    assert!(invalid <= valid + 2, "{invalid} against {valid}");
}

/// Allocations of refusing a forged JSON `POST` (signed, falsely, through `bodySHA256`) with
/// this body.
fn forged_json_allocations(body: &str) -> u64 {
    let path = tower_twilio::signature::url_with_body_sha256("/twilio/events", body.as_bytes());
    let url = format!("{PUBLIC_BASE}{path}");
    let signature = twilio_signature("not-the-token-at-all", Algorithm::HmacSha1, &url, "");
    Layered::new(single_account_layer()).refusal_allocations(|| {
        Request::post(path.as_str())
            .header("host", "example.com")
            .header("content-type", "application/json")
            .header("x-twilio-signature", signature.as_str())
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    })
}

// A JSON body's top-level `AccountSid`s are read before any lookup. Every member name was
// built as a `String` to be compared (serde gives a `Cow<str>` owned, always), and every
// escaped `AccountSid` value too: a forged body of 2000 members made 2 017 allocations, of 1000
// escaped `AccountSid`s 2 020, where a body of two made 19 (of one escaped `AccountSid`, 22).
// Now neither grows with the number of members.
#[test]
fn a_json_body_costs_no_allocation_per_member() {
    const PLAIN: &str = r#""Other":1,"AccountSid":"AC0123ffffffffffffffffffffffffffff""#;
    const ESCAPED: &str = r#""\u0041ccountSid":"\u0041C0123ffffffffffffffffffffffffffff""#;
    let body = |member: &str, count: usize| format!("{{{}}}", vec![member; count].join(","));
    let (one, many) = (
        forged_json_allocations(&body(PLAIN, 1)),
        forged_json_allocations(&body(PLAIN, 1000)),
    );
    let (one_escaped, many_escaped) = (
        forged_json_allocations(&body(ESCAPED, 1)),
        forged_json_allocations(&body(ESCAPED, 1000)),
    );
    println!(
        "allocations of a forged JSON body: 2 members {one}, 2000 members {many}; 1 escaped \
         AccountSid {one_escaped}, 1000 {many_escaped}"
    );
    assert!(many <= one + 2, "{many} against {one}");
    assert!(
        many_escaped <= one_escaped + 2,
        "{many_escaped} against {one_escaped}"
    );
}

// Equal work reaches the allocator too: a forged request for a known account and the same
// request for an unknown one make the same allocations (the doctor's list of secrets was
// collected for a known account's mismatch even with the doctor off: one allocation, which
// dudect measured as a known account answering up to 55 ns later).
#[test]
fn a_known_and_an_unknown_account_allocate_alike_when_forged() {
    // No tenant (a tenant has a test of its own, below): a known tenant's metric label once
    // hid an allocation only an unknown account made (empty credentials), in the default
    // build.
    let resolver = knowing(Credentials::new().auth_token("primary", Secret::new(TOKEN).unwrap()));
    let forged = |account: &str| {
        let body = format!("AccountSid={account}&Body=hi&From=%2B14155550100");
        let mut request = form_request(body.into_bytes(), "not-the-token-at-all");
        request.headers_mut().insert(
            "x-forwarded-host",
            http::HeaderValue::from_static("a.example, b.example, c.example"),
        );
        request
    };
    // With the mismatch doctor on too (issue 19): it ran on the request path, for a known
    // account only, so a known account's forgery cost its whole diagnosis more. Now the doctor
    // adds one allocation to either (the job handed to its thread).
    let mut counts = Vec::new();
    for doctor in [false, true] {
        let layer = TwilioSignatureLayer::new(resolver.clone())
            .public_url(PublicUrl::fixed(PUBLIC_BASE).unwrap())
            .diagnose_mismatches_per_second(if doctor { 1_000_000 } else { 0 });
        let layered = Layered::new(layer);
        let (known, unknown) = (
            layered.refusal_allocations(|| forged(KNOWN)),
            layered.refusal_allocations(|| forged(UNKNOWN)),
        );
        println!(
            "allocations of a forged request, doctor {}: known account {known}, unknown \
             account {unknown}",
            if doctor { "on" } else { "off" }
        );
        assert_eq!(known, unknown, "doctor on: {doctor}");
        counts.push(known);
    }
    assert!(
        counts[1] <= counts[0] + 1,
        "doctor off {}, on {}",
        counts[0],
        counts[1]
    );
}

/// The same for an account the resolver names a tenant for, which is how a multi-tenant
/// application answers: with the `metrics` feature, the refusal of a known tenant's forged
/// request copied the tenant id into a metric label (one allocation an unknown account, which
/// has no tenant, did not make).
#[test]
fn a_known_tenant_and_an_unknown_account_allocate_alike_when_forged() {
    let resolver = knowing(
        Credentials::new()
            .tenant("acme-corporation")
            .auth_token("primary", Secret::new(TOKEN).unwrap()),
    );
    let layer =
        TwilioSignatureLayer::new(resolver).public_url(PublicUrl::fixed(PUBLIC_BASE).unwrap());
    let layered = Layered::new(layer);
    let count = |account: &str| {
        let body = format!("AccountSid={account}&Body=hi&From=%2B14155550100");
        layered
            .refusal_allocations(|| form_request(body.clone().into_bytes(), "not-the-token-at-all"))
    };
    let (known, unknown) = (count(KNOWN), count(UNKNOWN));
    println!("allocations of a forged request: known tenant {known}, unknown account {unknown}");
    assert_eq!(known, unknown);
}

/// The same for SharedKey ids: a forged request naming a SharedKey nobody holds made six
/// allocations more than one naming a known key (44 against 38: the key nobody holds was built
/// for each request), which told the ids that exist from the ones that do not.
#[test]
fn a_known_and_an_unknown_shared_key_allocate_alike_when_forged() {
    const ACCOUNT: &str = "AC0123ffffffffffffffffffffffffffff";
    let resolver = tower_twilio::resolver::AccountMap::new().insert_account(
        ACCOUNT,
        Credentials::new().shared_key("webhooks_sharedkey_known", Secret::new(TOKEN).unwrap()),
    );
    let layered = Layered::new(
        TwilioSignatureLayer::new(resolver).public_url(PublicUrl::fixed(PUBLIC_BASE).unwrap()),
    );
    let forged = |key_id: &str| {
        let body = format!("AccountSid={ACCOUNT}&Body=hi");
        let url = format!("{PUBLIC_BASE}/twilio/sms");
        let signature = twilio_signature("not-the-key", Algorithm::HmacSha256, &url, &body);
        Request::post("/twilio/sms")
            .header("host", "example.com")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .header(
                "x-twilio-webhooks-signature-settings",
                format!("key={key_id},algorithm=HMAC_SHA256"),
            )
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let count = |key_id: &str| layered.refusal_allocations(|| forged(key_id));
    let known = count("webhooks_sharedkey_known");
    let unknown = count("webhooks_sharedkey_other");
    println!("allocations of a forged SharedKey request: known key {known}, unknown key {unknown}");
    assert_eq!(known, unknown);
}

/// The same with Sentry reporting: flood control kept a window per event type and tenant, so
/// once a flood of made-up accounts had used up the `unknown_account` window, a forged request
/// for a made-up account was dropped (35 allocations) while one for a real account still built
/// a Sentry event (55), and took measurably longer. Forgeries now share one window, and an event
/// carries a `tenant_id` tag whether or not a tenant is known.
#[cfg(feature = "sentry")]
#[test]
fn sentry_reporting_does_not_tell_a_known_account_from_an_unknown_one() {
    let resolver = knowing(
        Credentials::new()
            .tenant("acme")
            .auth_token("primary", Secret::new(TOKEN).unwrap()),
    );
    let layered = Layered::new(
        TwilioSignatureLayer::new(resolver)
            .public_url(PublicUrl::fixed(PUBLIC_BASE).unwrap())
            .on_security_event(tower_twilio::events::SentrySink::new()),
    );
    // Each count is two requests (one uncounted first).
    let count = |account: &str| {
        let body = format!("AccountSid={account}&Body=hi");
        layered
            .refusal_allocations(|| form_request(body.clone().into_bytes(), "not-the-token-at-all"))
    };
    // While the window has room (ten a minute), both become Sentry events.
    let (unknown, known) = (count(UNKNOWN), count(KNOWN));
    println!("allocations of a forged request, captured: known {known}, unknown {unknown}");
    assert_eq!(known, unknown, "captured");
    // Once a flood of made-up accounts has used it up, both are counted and dropped.
    for _ in 0..4 {
        count(UNKNOWN);
    }
    let (unknown, known) = (count(UNKNOWN), count(KNOWN));
    println!("allocations of a forged request, after a flood: known {known}, unknown {unknown}");
    assert_eq!(known, unknown, "after a flood");
}

/// Allocations of rebuilding the public URL of a request from a trusted proxy whose
/// forwarding headers hold `count` values each.
fn reconstruct_allocations(count: usize) -> u64 {
    let forwarded = (0..count)
        .map(|i| format!("for=192.0.2.{};host=h{i}.example;proto=https", i % 250))
        .collect::<Vec<_>>()
        .join(", ");
    let x_forwarded_for = (0..count)
        .map(|i| format!("192.0.2.{}", i % 250))
        .collect::<Vec<_>>()
        .join(", ");
    let hosts = (0..count)
        .map(|i| format!("h{i}.example"))
        .collect::<Vec<_>>()
        .join(", ");
    let (parts, ()) = Request::post("/twilio/sms")
        .header("host", "internal")
        .header("forwarded", forwarded)
        .header("x-forwarded-for", x_forwarded_for)
        .header("x-forwarded-host", hosts)
        .header("x-forwarded-proto", "http, https")
        .body(())
        .unwrap()
        .into_parts();
    let public = PublicUrl::trust_forwarded(crate::support::every_field_from_10_8());
    let peer = Some([10, 0, 0, 1].into());
    allocations(|| {
        let url = tower_twilio::__private::reconstruct(&public, &parts, peer).unwrap();
        assert_eq!(
            url.url,
            format!("https://h{}.example/twilio/sms", count - 1)
        );
    })
}

// Issue 19: every forwarding header is read from its end, a fixed few values at most, so a
// request with thousands of them costs what one with a few does. RFC 7239 elements were all
// parsed (two `String`s each) and `X-Forwarded-For` collected into a vector.
#[test]
fn thousands_of_forwarded_values_cost_what_a_few_do() {
    let (few, many) = (reconstruct_allocations(3), reconstruct_allocations(8_000));
    println!("allocations rebuilding the URL: 3 values {few}, 8000 values {many}");
    assert_eq!(many, few);
}
