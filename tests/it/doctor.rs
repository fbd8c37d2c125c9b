//! The mismatch doctor through the real layer: each common misconfiguration gets the right
//! diagnosis in the security event and the webhook log, a forgery gets none, the verdict and
//! the response never change, and a flood cannot buy more than the per-second budget.

use std::{
    convert::Infallible,
    net::SocketAddr,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::OriginalUri, routing::post};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_twilio::{
    Credentials, PeerAddr, PublicUrl, Rejection, RejectionKind, TwilioSignatureLayer, VerifiedBody,
    events::{
        Outcome, SecurityEvent,
        log::{OnWebhook, WebhookLogEntry, WebhookOutcome},
    },
    public_url::{ForwardedField, ForwardedHeaders, Scheme},
    signature::Algorithm,
};

use crate::support::{RecordingSink, SMS_BODY, TOKEN, body_string, token, twilio_signature};

/// The doctor's budget in these tests, as the guide suggests.
const PER_SECOND: u32 = 20;

async fn ok(_: Request<VerifiedBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"<Response/>"))))
}

fn credentials() -> Credentials {
    Credentials::new()
        .tenant("acme")
        .auth_token("primary", token())
}

/// A form POST to `target`, signed by Twilio for `signed_url`, with extra headers.
fn webhook(target: &str, signed_url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::post(target)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            twilio_signature(TOKEN, Algorithm::HmacSha1, signed_url, SMS_BODY),
        );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(Bytes::from_static(SMS_BODY.as_bytes())))
        .unwrap()
}

/// The doctor's follow-up events, once there are `count` of them: the doctor runs on its own
/// thread after the response.
fn diagnosed(sink: &RecordingSink, count: usize) -> Vec<SecurityEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let diagnosed: Vec<SecurityEvent> = sink
            .events()
            .into_iter()
            .filter(|e| e.outcome == Outcome::Diagnosed)
            .collect();
        if diagnosed.len() >= count {
            return diagnosed;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} diagnoses",
            diagnosed.len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[derive(Clone, Default)]
struct RecordingLog(Arc<Mutex<Vec<WebhookLogEntry>>>);

impl OnWebhook for RecordingLog {
    fn on_webhook(&self, entry: &WebhookLogEntry) {
        self.0.lock().unwrap().push(entry.clone());
    }
}

/// One misconfiguration: how the app is set up, what Twilio signed, what arrives.
struct Case {
    cause: &'static str,
    public_url: PublicUrl,
    signed_url: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// The connecting peer (the proxy), when there is one.
    peer: Option<[u8; 4]>,
    expected_fix: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            cause: "TLS terminated in front of the app, public URL configured as `http`",
            public_url: PublicUrl::fixed("http://hooks.example.com").unwrap(),
            signed_url: "https://hooks.example.com/twilio/sms",
            target: "/twilio/sms",
            headers: &[
                ("host", "hooks.example.com"),
                ("x-forwarded-proto", "https"),
            ],
            peer: Some([10, 0, 0, 5]),
            expected_fix: "set PublicUrl::fixed(\"https://hooks.example.com\"), or trust \
                           X-Forwarded-Proto from 10.0.0.5/32",
        },
        Case {
            cause: "a tunnel (ngrok) rewrites the host and the app uses the request's own",
            public_url: PublicUrl::request_host(Scheme::Http),
            signed_url: "https://abc123.ngrok-free.app/twilio/sms",
            target: "/twilio/sms",
            headers: &[
                ("host", "localhost:3000"),
                ("x-forwarded-host", "abc123.ngrok-free.app"),
                ("x-forwarded-proto", "https"),
            ],
            peer: None,
            expected_fix: "set PublicUrl::fixed(\"https://abc123.ngrok-free.app\")",
        },
        Case {
            cause: "a trusted proxy strips a path prefix and sends `X-Forwarded-Prefix`, a field the app does not read",
            public_url: PublicUrl::trust_forwarded(
                ForwardedHeaders::new()
                    .read(ForwardedField::XForwardedProto)
                    .trust_proxy("10.0.0.0/8".parse().unwrap()),
            ),
            signed_url: "https://api.example.com/app/twilio/sms",
            target: "/twilio/sms",
            headers: &[
                ("host", "api.example.com"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-prefix", "/app"),
            ],
            peer: Some([10, 0, 0, 7]),
            expected_fix: "set PublicUrl::fixed(\"https://api.example.com/app\"), or trust \
                           X-Forwarded-Prefix from 10.0.0.7/32",
        },
        Case {
            cause: "the console URL ends in `/`, something in front of the app removes it",
            public_url: PublicUrl::fixed("https://api.example.com").unwrap(),
            signed_url: "https://api.example.com/twilio/sms/",
            target: "/twilio/sms",
            headers: &[],
            peer: None,
            expected_fix: "a trailing slash is removed on the way",
        },
    ]
}

/// Runs one case through the layer and returns the diagnosis's fix, asserting the verdict,
/// the response and the webhook log on the way.
async fn run(case: &Case) -> Option<String> {
    let sink = RecordingSink::default();
    let log = RecordingLog::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(case.public_url.clone())
        .diagnose_mismatches_per_second(PER_SECOND)
        .on_webhook(log.clone())
        .on_security_event(sink.clone());
    let mut request = webhook(case.target, case.signed_url, case.headers);
    if let Some(peer) = case.peer {
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::from((peer, 40_000))));
    }
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(ok)
        .oneshot(request)
        .await
        .unwrap();
    // The verdict and the response are those of any mismatch.
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{}", case.cause);
    let rejection = response.extensions().get::<Rejection>().unwrap();
    assert_eq!(rejection.kind(), RejectionKind::SignatureMismatch);
    let body = body_string(response).await;
    assert!(!body.contains("example") && !body.contains("fix"), "{body}");

    // The refusal's event and log entry come first, as for any mismatch, without a diagnosis;
    // the diagnosis follows from the doctor's thread, in a second event and log entry.
    let events = sink.events();
    assert_eq!(events[0].outcome, Outcome::Rejected, "{}", case.cause);
    assert!(events[0].diagnosis.is_none());
    let logged = log.0.lock().unwrap().clone();
    assert_eq!(
        logged[1].outcome,
        WebhookOutcome::Rejected(RejectionKind::SignatureMismatch)
    );
    assert!(logged[1].diagnosis.is_none());
    let diagnosis = diagnosed(&sink, 1)[0].diagnosis.clone()?;
    assert_eq!(diagnosis.matched_url(), case.signed_url, "{}", case.cause);
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.0.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "no diagnosed log entry");
        std::thread::sleep(Duration::from_millis(2));
    }
    let logged = log.0.lock().unwrap().clone();
    assert_eq!(logged.len(), 3);
    let last = &logged[2];
    assert_eq!(last.outcome, WebhookOutcome::Diagnosed);
    assert_eq!(last.id, logged[1].id);
    assert_eq!(last.diagnosis.as_deref(), Some(&*diagnosis));
    Some(diagnosis.fix().to_owned())
}

#[tokio::test]
async fn each_common_misconfiguration_gets_the_right_diagnosis() {
    for case in cases() {
        let fix = run(&case)
            .await
            .unwrap_or_else(|| panic!("{}: no diagnosis", case.cause));
        assert!(fix.contains(case.expected_fix), "{}: {fix}", case.cause);
    }
}

#[tokio::test]
async fn an_axum_nest_is_diagnosed_through_original_uri() {
    // The app nests its Twilio routes under /twilio; axum strips the prefix, so the layer inside
    // the nest sees /sms and the public URL it rebuilds lacks /twilio.
    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("https://api.example.com").unwrap())
        .diagnose_mismatches_per_second(PER_SECOND)
        .original_uri_with(|ext| ext.get::<OriginalUri>().map(|original| original.0.clone()))
        .on_security_event(sink.clone());
    let twilio = Router::new()
        .route("/sms", post(|| async { "<Response/>" }))
        .route_layer(layer);
    let app = Router::new().nest("/twilio", twilio);
    let response = app
        .oneshot(webhook(
            "/twilio/sms",
            "https://api.example.com/twilio/sms",
            &[("host", "api.example.com")],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let events = diagnosed(&sink, 1);
    let diagnosis = events[0].diagnosis.as_ref().expect("a diagnosis");
    assert_eq!(
        diagnosis.matched_url(),
        "https://api.example.com/twilio/sms"
    );
    assert_eq!(
        diagnosis.public_base(),
        Some("https://api.example.com/twilio")
    );
}

#[tokio::test]
async fn a_forged_signature_gets_no_diagnosis() {
    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .diagnose_mismatches_per_second(PER_SECOND)
        .on_security_event(sink.clone());
    let service = ServiceBuilder::new().layer(layer).service_fn(ok);
    let mut forged = webhook(
        "/twilio/sms",
        "https://hooks.example.com/twilio/sms",
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-request-id", "forged"),
        ],
    );
    forged.headers_mut().insert(
        "x-twilio-signature",
        "bm90IGEgcmVhbCBzaWduYXR1cmU=".parse().unwrap(),
    );
    let response = service.clone().oneshot(forged).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The doctor takes requests in order: once a genuine mismatch sent next is diagnosed, the
    // forgery has been through it.
    let genuine = webhook(
        "/twilio/sms",
        "https://hooks.example.com/twilio/sms",
        &[("x-request-id", "genuine")],
    );
    let response = service.oneshot(genuine).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let diagnosed = diagnosed(&sink, 1);
    assert_eq!(diagnosed.len(), 1);
    assert_eq!(diagnosed[0].request_id.as_deref(), Some("genuine"));
    assert!(sink.events()[0].diagnosis.is_none());
}

/// A raised parameter limit holds for the doctor too: a form of 1500 parameters, allowed by
/// `max_params(2000)`, is diagnosed like any other.
#[tokio::test]
async fn a_raised_parameter_limit_holds_for_the_doctor() {
    let body: String = (0..1500).map(|i| format!("p{i}=1&")).collect();
    let signed_url = "https://hooks.example.com/twilio/sms";
    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .max_params(NonZeroUsize::new(2000).unwrap())
        .diagnose_mismatches_per_second(PER_SECOND)
        .on_security_event(sink.clone());
    let request = Request::post("/twilio/sms")
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            twilio_signature(TOKEN, Algorithm::HmacSha1, signed_url, &body),
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(ok)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let events = diagnosed(&sink, 1);
    assert_eq!(events[0].reason, RejectionKind::SignatureMismatch);
    let diagnosis = events[0].diagnosis.clone().expect("diagnosed");
    assert_eq!(diagnosis.matched_url(), signed_url);
}

#[tokio::test]
async fn without_the_builder_call_there_is_no_diagnosis() {
    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .on_security_event(sink.clone());
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(ok)
        .oneshot(webhook(
            "/twilio/sms",
            "https://hooks.example.com/twilio/sms",
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(sink.events()[0].diagnosis.is_none());
}

/// Waits past the current second, sends a genuine mismatch through `service` and waits for
/// its diagnosis: the doctor takes requests in order, so every earlier one has been through it.
async fn drain<S>(service: S, sink: &RecordingSink)
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = Response<tower_twilio::ResponseBody<Full<Bytes>>>,
        >,
    S::Error: std::fmt::Debug,
{
    std::thread::sleep(Duration::from_millis(1100));
    let marker = webhook(
        "/twilio/sms",
        "https://hooks.example.com/twilio/sms",
        &[("x-request-id", "marker")],
    );
    let response = service.oneshot(marker).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sink
        .events()
        .iter()
        .any(|e| e.outcome == Outcome::Diagnosed && e.request_id.as_deref() == Some("marker"))
    {
        assert!(Instant::now() < deadline, "the marker was not diagnosed");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// 10 000 requests that would each be diagnosed: at most the per-second budget is (and no
/// more than the doctor's queue holds wait for it).
#[tokio::test(flavor = "current_thread")]
async fn a_flood_buys_at_most_the_per_second_budget() {
    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .diagnose_mismatches_per_second(PER_SECOND)
        .on_security_event(sink.clone());
    let service = ServiceBuilder::new().layer(layer).service_fn(ok);
    let request = webhook("/twilio/sms", "https://hooks.example.com/twilio/sms", &[]);
    let (parts, body) = request.into_parts();
    let started = Instant::now();
    for _ in 0..10_000 {
        let mut copy = Request::new(body.clone());
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.headers_mut() = parts.headers.clone();
        let response = service.clone().oneshot(copy).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    drain(service, &sink).await;
    let seconds = started.elapsed().as_secs() + 1;
    let events = sink.events();
    let refused = events.iter().filter(|e| e.outcome == Outcome::Rejected);
    assert_eq!(refused.count(), 10_001);
    let diagnosed = events.iter().filter(|e| e.diagnosis.is_some()).count() as u64;
    assert!(diagnosed >= 2);
    assert!(
        diagnosed <= u64::from(PER_SECOND) * seconds,
        "{diagnosed} diagnoses in {seconds} s"
    );
}

/// Forgeries that no URL explains are counted against the same budget: the doctor's CPU cost
/// under a flood is bounded whatever the requests are (its runs counted where it looks for
/// the original URI, once a run).
#[tokio::test(flavor = "current_thread")]
async fn forged_floods_run_at_most_the_per_second_budget_of_diagnoses() {
    use std::sync::atomic::{AtomicU64, Ordering};

    let runs = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let sink = RecordingSink::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .diagnose_mismatches_per_second(PER_SECOND)
        .original_uri_with(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            None
        })
        .on_security_event(sink.clone());
    let service = ServiceBuilder::new().layer(layer).service_fn(ok);
    let started = Instant::now();
    for i in 0..10_000u32 {
        let mut request = webhook(
            "/twilio/sms",
            "https://api.example.com/twilio/sms",
            &[
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-prefix", "/p"),
            ],
        );
        let forged = format!("{i:0>27}=");
        request
            .headers_mut()
            .insert("x-twilio-signature", forged.parse().unwrap());
        service.clone().oneshot(request).await.unwrap();
    }
    drain(service, &sink).await;
    let seconds = started.elapsed().as_secs() + 1;
    let runs = runs.load(Ordering::Relaxed);
    assert!(runs >= 2, "the doctor ran");
    assert!(
        runs <= u64::from(PER_SECOND) * seconds,
        "{runs} diagnoses in {seconds} s"
    );
}

/// The guide's troubleshooting table is this test's output (run with `UPDATE_DOCS=1` to
/// rewrite it after a deliberate change).
#[tokio::test]
async fn the_guide_shows_the_diagnoses_the_layer_prints() {
    let mut table = String::from(
        "| cause | the signature matches | `diagnosis_fix` in the event |\n| --- | --- | --- |\n",
    );
    for case in cases() {
        let fix = run(&case).await.expect("a diagnosis");
        table.push_str(&format!(
            "| {} | `{}` | `{}` |\n",
            case.cause,
            case.signed_url,
            fix.replace('|', "\\|")
        ));
    }
    let docs_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/TWILIO_WEBHOOK_SETUP.md");
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    let (start, end) = (
        "<!-- troubleshooting-table:start -->\n",
        "<!-- troubleshooting-table:end -->",
    );
    let from = docs
        .find(start)
        .expect("the guide has the troubleshooting markers")
        + start.len();
    let to = docs[from..].find(end).expect("end marker") + from;
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(
            &docs_path,
            format!("{}{table}{}", &docs[..from], &docs[to..]),
        )
        .unwrap();
    } else {
        assert_eq!(
            &docs[from..to],
            table,
            "the guide's troubleshooting table is stale: run with UPDATE_DOCS=1"
        );
    }
}

// ---- forged requests cost nothing (issue 19) ---------------------------------------------------

/// `count` comma-separated made-up hosts, as a forged `X-Forwarded-Host` carries them.
fn many_hosts(count: usize) -> String {
    (0..count)
        .map(|i| format!("h{i}.example"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A request for a known account, signed with another token (a forgery), carrying `hosts` in
/// `X-Forwarded-Host`.
fn forged_with_hosts(hosts: &http::HeaderValue) -> Request<Full<Bytes>> {
    let target = "/twilio/sms";
    let forged = twilio_signature(
        "not-the-token-at-all",
        Algorithm::HmacSha1,
        &format!("https://hooks.example.com{target}"),
        SMS_BODY,
    );
    Request::post(target)
        .header("host", "hooks.example.com")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", forged)
        .header("x-forwarded-host", hosts.clone())
        .body(Full::new(Bytes::from_static(SMS_BODY.as_bytes())))
        .unwrap()
}

/// Issue 19: a forged request with 8 000 forwarded hosts took 48 s to refuse in a debug build
/// (4.4 s in release), all of it the doctor's work on the request path. Now the request path
/// does the same work whatever the header holds: the allocations made on the thread that
/// answers are those of a request with three hosts, and the memory held stays small.
#[test]
fn thousands_of_forwarded_hosts_cost_the_request_path_nothing_more() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .diagnose_mismatches_per_second(1_000_000)
        .on_security_event(());
    let service = ServiceBuilder::new().layer(layer).service_fn(ok);
    let measure = |hosts: &str| {
        // Built once: the header's own bytes are not the layer's doing.
        let hosts = http::HeaderValue::from_str(hosts).unwrap();
        let run = || {
            let started = Instant::now();
            let response = runtime
                .block_on(service.clone().oneshot(forged_with_hosts(&hosts)))
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            started.elapsed()
        };
        run();
        let mut elapsed = None;
        let info = allocation_counter::measure(|| elapsed = Some(run()));
        (info.count_total, info.bytes_max, elapsed.unwrap())
    };
    let (few, few_peak, _) = measure(&many_hosts(3));
    let (many, many_peak, took) = measure(&many_hosts(8_000));
    println!(
        "request path with 3 hosts: {few} allocations, peak {few_peak} B; with 8000: {many} \
         allocations, peak {many_peak} B, {took:?}"
    );
    assert_eq!(many, few, "allocations with 8000 hosts against 3");
    // The header itself is 90 KB; nothing on the request path is sized by its values.
    assert!(
        many_peak <= few_peak + 4096,
        "{many_peak} against {few_peak}"
    );
    // Issue 19's target is 10 ms in release; ten times that, in a debug build on a loaded
    // machine, is still two orders of magnitude under what it was.
    assert!(took.as_millis() < 1_000, "{took:?}");
}

/// Issue 19: with 2 000 hosts and a 60 KB query the doctor held 1.3 GB (every candidate URL
/// built and kept before its 16-HMAC budget applied). Its work is bounded by construction now:
/// a few forwarded values are read, and only the URLs it tries are built.
#[test]
fn the_doctor_holds_little_whatever_the_headers_say() {
    use http::{HeaderMap, HeaderValue, Method};
    use tower_twilio::{
        doctor::{Clues, diagnose},
        verify::WebhookRequest,
    };

    let query: String = format!("?q={}", "x".repeat(60 * 1024));
    let target = format!("/twilio/sms{query}");
    let url = format!("http://hooks.example.com{target}");
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-host",
        HeaderValue::from_str(&many_hosts(2_000)).unwrap(),
    );
    headers.insert("x-forwarded-prefix", HeaderValue::from_static("/app"));
    let signature = twilio_signature(
        TOKEN,
        Algorithm::HmacSha1,
        "https://elsewhere.example/x",
        SMS_BODY,
    );
    let request = WebhookRequest::new(&Method::POST, &url, SMS_BODY.as_bytes())
        .content_type(b"application/x-www-form-urlencoded")
        .signature(signature.as_bytes());
    let clues = Clues::new(&headers, &target);
    let secret = token();
    let started = Instant::now();
    let info = allocation_counter::measure(|| {
        assert!(diagnose(&request, &clues, &[&secret]).is_none());
    });
    let took = started.elapsed();
    println!(
        "doctor with 2000 hosts and a 60 KB query: peak {} B, {} allocations, {took:?}",
        info.bytes_max, info.count_total
    );
    assert!(info.bytes_max < 16 * 1024 * 1024, "{}", info.bytes_max);
    // Each URL tried is about 60 KB, and at most MAX_HMACS are: a few MB of copying at most.
    assert!(info.bytes_total < 64 * 1024 * 1024, "{}", info.bytes_total);
}

/// The refusal is answered before the diagnosis runs: the webhook log hook holds the
/// diagnosis back until the response is in, which deadlocked (here: timed out) while the
/// doctor ran on the request path.
#[test]
fn the_refusal_does_not_wait_for_the_diagnosis() {
    use std::{sync::mpsc, time::Duration};

    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let waited_out = Arc::new(Mutex::new(false));
    let diagnosed = Arc::new(Mutex::new(None));
    let log = {
        let (waited_out, diagnosed) = (Arc::clone(&waited_out), Arc::clone(&diagnosed));
        move |entry: &WebhookLogEntry| {
            if let Some(diagnosis) = &entry.diagnosis {
                let answer = released
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(5));
                *waited_out.lock().unwrap() = answer.is_err();
                *diagnosed.lock().unwrap() = Some(diagnosis.matched_url().to_owned());
            }
        }
    };
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .diagnose_mismatches_per_second(PER_SECOND)
        .on_webhook(log)
        .on_security_event(());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = runtime
        .block_on(
            ServiceBuilder::new()
                .layer(layer)
                .service_fn(ok)
                .oneshot(webhook(
                    "/twilio/sms",
                    "https://hooks.example.com/twilio/sms",
                    &[],
                )),
        )
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let _ = release.send(());
    // The diagnosis follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    while diagnosed.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !*waited_out.lock().unwrap(),
        "the response waited for the diagnosis"
    );
    assert_eq!(
        diagnosed.lock().unwrap().as_deref(),
        Some("https://hooks.example.com/twilio/sms")
    );
}

/// In report-only mode the request goes on to the inner service, and the doctor diagnoses a
/// copy of it.
#[tokio::test]
async fn report_only_mode_passes_the_request_on_and_still_diagnoses_it() {
    let sink = RecordingSink::default();
    let log = RecordingLog::default();
    let layer = TwilioSignatureLayer::new(credentials())
        .public_url(PublicUrl::fixed("http://hooks.example.com").unwrap())
        .report_only(true)
        .diagnose_mismatches_per_second(PER_SECOND)
        .on_webhook(log.clone())
        .on_security_event(sink.clone());
    let response = ServiceBuilder::new()
        .layer(layer)
        .service_fn(ok)
        .oneshot(webhook(
            "/twilio/sms",
            "https://hooks.example.com/twilio/sms",
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let events = diagnosed(&sink, 1);
    assert_eq!(
        events[0].diagnosis.as_ref().unwrap().matched_url(),
        "https://hooks.example.com/twilio/sms"
    );
    assert_eq!(sink.events()[0].outcome, Outcome::PassedInReportOnlyMode);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.outcome == WebhookOutcome::Diagnosed)
    {
        assert!(Instant::now() < deadline, "no diagnosed log entry");
        std::thread::sleep(Duration::from_millis(2));
    }
}
