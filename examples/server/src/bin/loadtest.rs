//! Load, flood and slow-client test for the example server, on loopback only.
//!
//! Run it through `scripts/load_test.sh`, which builds and starts the server, runs this, and
//! checks the webhook log and the server's peak memory. By hand:
//!
//! ```text
//! cargo run --release -p tower-twilio-example-server --bin loadtest -- --addr 127.0.0.1:3000 --token-file .token --account-sid AC…
//! ```
//!
//! Three phases, each bounded in count and time:
//!
//! 1. **Mixed load**: `--requests` webhooks, `--concurrency` at a time, in turn valid (200),
//!    forged with another token (403), oversize — `Content-Length` over the server's 64 KiB
//!    limit, no body sent (413) — and malformed (a signature that is not base64, 403). Each
//!    carries `?load=<n>` so the script can find it in the webhook log.
//! 2. **Flood**: `--flood` connections at once, each announcing a 10 MB upload
//!    (`?flood=<n>`); every one must get 413 without the server reading the body.
//! 3. **Slow bodies**: `--slow` clients announce a small body and send one byte a second
//!    (`?slow=<n>`); meanwhile valid webhooks keep being sent. The slow ones must be cut off by
//!    the server's request timeout (503, or the connection closed), and the others answered as
//!    usual.
//! 4. **Forged flood**: `--forged` forged SMSs, `--concurrency` at a time, in turn naming a
//!    different made-up `AccountSid` each (`?forged=<n>`, 403 unknown account: the server
//!    knows its accounts in memory) and the tenant's account with a wrong token (403); every one
//!    must be refused. Meanwhile genuine SMSs (`?during_forged=<n>`), one after another, must
//!    all be answered 200; the slowest is reported.
//!
//! The last line is a summary; the exit status is non-zero when any check fails.
#![allow(clippy::print_stdout)]
// The option docs are clap's `--help` text, written for a terminal.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};
use tower_twilio_example_server::twilio_presets::{Body, Preset, Signer, sign_request};

/// Load, flood and slow-client test for the example server (loopback only).
#[derive(Parser, Debug)]
struct Args {
    /// The server's address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// A file holding the tenant's auth token.
    #[arg(long)]
    token_file: std::path::PathBuf,
    /// The tenant's AccountSid.
    #[arg(long)]
    account_sid: String,
    /// Webhooks in the mixed phase.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// How many at a time in the mixed phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Concurrent 10 MB announcements in the flood phase.
    #[arg(long, default_value_t = 1000)]
    flood: u64,
    /// Slow-body clients.
    #[arg(long, default_value_t = 16)]
    slow: u64,
    /// Forged SMSs in the forged-flood phase (half of them naming made-up accounts).
    #[arg(long, default_value_t = 20_000)]
    forged: u64,
    /// The server's request timeout, in seconds (what should cut slow clients off).
    #[arg(long, default_value_t = 10)]
    request_timeout_secs: u64,
}

/// How long any one exchange may take before it counts as a failure.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    wrong: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("error: --addr must be a loopback address; this tool only loads local servers");
        return std::process::ExitCode::from(2);
    }
    let token = match std::fs::read_to_string(&args.token_file) {
        Ok(token) => token.trim().to_owned(),
        Err(error) => {
            eprintln!("error: reading {}: {error}", args.token_file.display());
            return std::process::ExitCode::from(2);
        }
    };
    let args = Arc::new(args);
    let token: Arc<str> = token.into();

    let mixed = mixed(&args, &token).await;
    let flood = flood(&args).await;
    let slow = slow(&args, &token).await;
    let forged = forged(&args, &token).await;

    let ok = mixed.passed() && flood.passed() && slow.passed() && forged.passed();
    let verdict = if ok { "PASS" } else { "FAIL" };
    println!("loadtest: {mixed}; {flood}; {slow}; {forged}; {verdict}");
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

struct Mixed {
    sent: u64,
    wrong: u64,
    server_errors: u64,
    transport_errors: u64,
    elapsed: Duration,
}

impl Mixed {
    const fn passed(&self) -> bool {
        self.wrong == 0 && self.server_errors == 0 && self.transport_errors == 0
    }
}

impl fmt::Display for Mixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        write!(
            f,
            "mixed {} requests in {seconds:.1} s ({:.0}/s): {} wrong verdicts, {} 5xx, {} \
             transport errors",
            self.sent,
            self.sent as f64 / seconds,
            self.wrong,
            self.server_errors,
            self.transport_errors
        )
    }
}

/// One valid, forged, oversize or malformed webhook, by `n % 4`; returns the expected status.
fn kind(n: u64) -> (&'static str, StatusCode) {
    match n % 4 {
        0 => ("valid", StatusCode::OK),
        1 => ("forged", StatusCode::FORBIDDEN),
        2 => ("oversize", StatusCode::PAYLOAD_TOO_LARGE),
        _ => ("malformed", StatusCode::FORBIDDEN),
    }
}

async fn mixed(args: &Arc<Args>, token: &Arc<str>) -> Mixed {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http::<Full<Bytes>>();
    let counts = Arc::new(Counts::default());
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.requests as usize);
    for n in 0..args.requests {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("open");
        let (client, counts, args, token) = (
            client.clone(),
            Arc::clone(&counts),
            Arc::clone(args),
            Arc::clone(token),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let (name, expected) = kind(n);
            let path = format!("/twilio/sms?load={n}");
            let result = tokio::time::timeout(EXCHANGE_LIMIT, async {
                match name {
                    "oversize" => announce(args.addr, &path, 100_000).await,
                    _ => {
                        let secret: &str = if name == "forged" {
                            "not-the-token"
                        } else {
                            &token
                        };
                        let request = webhook(&args, &path, secret, name == "malformed");
                        let response = client.request(request).await?;
                        let status = response.status();
                        response.into_body().collect().await?;
                        Ok(status)
                    }
                }
            })
            .await;
            counts.sent.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(Ok(status)) => {
                    if status.is_server_error() {
                        counts.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if status != expected {
                        counts.wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{name} #{n}: expected {expected}, got {status}");
                    }
                }
                Ok(Err(error)) => {
                    counts.transport_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{name} #{n}: {error}");
                }
                Err(_) => {
                    counts.transport_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{name} #{n}: no answer within {EXCHANGE_LIMIT:?}");
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Mixed {
        sent: counts.sent.load(Ordering::Relaxed),
        wrong: counts.wrong.load(Ordering::Relaxed),
        server_errors: counts.server_errors.load(Ordering::Relaxed),
        transport_errors: counts.transport_errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// A signed incoming-SMS webhook for `path`, through the signing tool's code.
fn webhook(args: &Args, path: &str, secret: &str, malformed: bool) -> Request<Full<Bytes>> {
    webhook_for(args, &args.account_sid, path, secret, malformed)
}

/// Sends one genuine SMS to `path`: how long its answer took, and whether it was a 200.
async fn genuine_sms(
    client: &Client<HttpConnector, Full<Bytes>>,
    args: &Args,
    path: &str,
    token: &str,
) -> (Duration, bool) {
    let request = webhook(args, path, token, false);
    let begun = Instant::now();
    let answer = tokio::time::timeout(EXCHANGE_LIMIT, client.request(request)).await;
    let took = begun.elapsed();
    match answer {
        Ok(Ok(response)) if response.status() == StatusCode::OK => {
            let _ = response.into_body().collect().await;
            (took, true)
        }
        _ => (took, false),
    }
}

/// Counts in `count` the answer to request `n` of a kind (`what`) when it has the `expected`
/// status; reports any other answer, or none, on standard error.
fn tally(
    (what, n): (&str, u64),
    answer: Result<Result<StatusCode, tower_twilio::BoxError>, tokio::time::error::Elapsed>,
    expected: StatusCode,
    count: &AtomicU64,
) {
    match answer {
        Ok(Ok(status)) if status == expected => {
            count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(status)) => eprintln!("{what} #{n}: got {status}"),
        Ok(Err(error)) => eprintln!("{what} #{n}: {error}"),
        Err(_) => eprintln!("{what} #{n}: no answer within {EXCHANGE_LIMIT:?}"),
    }
}

/// [`webhook`] naming `account_sid`.
fn webhook_for(
    args: &Args,
    account_sid: &str,
    path: &str,
    secret: &str,
    malformed: bool,
) -> Request<Full<Bytes>> {
    let signed = sign_request(
        &format!("http://{}{path}", args.addr),
        Body::Form(Preset::Sms.params(account_sid)),
        Signer::AuthToken(secret.as_bytes()),
    );
    let mut request = Request::post(format!("http://{}{path}", args.addr));
    for (name, value) in &signed.headers {
        if malformed && name.eq_ignore_ascii_case("x-twilio-signature") {
            request = request.header(name.as_str(), "not base64!");
        } else {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    request
        .body(Full::new(Bytes::from(signed.body)))
        .expect("a valid request")
}

/// Sends only the headers of a POST announcing `length` bytes; returns the status answered.
async fn announce(
    addr: SocketAddr,
    path: &str,
    length: u64,
) -> Result<StatusCode, tower_twilio::BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    read_status(&mut stream).await
}

/// Reads a response's status line.
async fn read_status(stream: &mut TcpStream) -> Result<StatusCode, tower_twilio::BoxError> {
    let mut buffer = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buffer.windows(2).any(|w| w == b"\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err("connection closed before a status line".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let line = String::from_utf8_lossy(&buffer);
    let code = line
        .split_whitespace()
        .nth(1)
        .ok_or("no status code")?
        .parse::<u16>()?;
    Ok(StatusCode::from_u16(code)?)
}

struct Flood {
    sent: u64,
    got_413: u64,
    elapsed: Duration,
}

impl Flood {
    const fn passed(&self) -> bool {
        self.got_413 == self.sent
    }
}

impl fmt::Display for Flood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (got, sent, seconds) = (self.got_413, self.sent, self.elapsed.as_secs_f64());
        write!(f, "flood {got}/{sent} got 413 in {seconds:.1} s")
    }
}

async fn flood(args: &Arc<Args>) -> Flood {
    let started = Instant::now();
    let got = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for n in 0..args.flood {
        let (args, got) = (Arc::clone(args), Arc::clone(&got));
        tasks.push(tokio::spawn(async move {
            let path = format!("/twilio/sms?flood={n}");
            let answer =
                tokio::time::timeout(EXCHANGE_LIMIT, announce(args.addr, &path, 10_000_000)).await;
            tally(("flood", n), answer, StatusCode::PAYLOAD_TOO_LARGE, &got);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Flood {
        sent: args.flood,
        got_413: got.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

struct Slow {
    sent: u64,
    cut_off: u64,
    first_cut: Duration,
    last_cut: Duration,
    others: u64,
    others_failed: u64,
    slowest_other: Duration,
}

impl Slow {
    const fn passed(&self) -> bool {
        self.cut_off == self.sent && self.others_failed == 0
    }
}

impl fmt::Display for Slow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slow {}/{} cut off (after {:.1}-{:.1} s), {} other webhooks meanwhile, {} failed, \
             slowest {} ms",
            self.cut_off,
            self.sent,
            self.first_cut.as_secs_f64(),
            self.last_cut.as_secs_f64(),
            self.others,
            self.others_failed,
            self.slowest_other.as_millis()
        )
    }
}

async fn slow(args: &Arc<Args>, token: &Arc<str>) -> Slow {
    let started = Instant::now();
    let limit = Duration::from_secs(args.request_timeout_secs) + Duration::from_secs(10);
    let mut slow_tasks = Vec::new();
    for n in 0..args.slow {
        let args = Arc::clone(args);
        slow_tasks.push(tokio::spawn(async move {
            let path = format!("/twilio/sms?slow={n}");
            let begun = Instant::now();
            let cut = tokio::time::timeout(limit, trickle(args.addr, &path)).await;
            match cut {
                // A 503 from the timeout, or the connection closed on us: cut off.
                Ok(Ok(status)) if status == StatusCode::SERVICE_UNAVAILABLE => {
                    Some(begun.elapsed())
                }
                Ok(Err(_)) => Some(begun.elapsed()),
                Ok(Ok(status)) => {
                    eprintln!("slow #{n}: got {status}");
                    None
                }
                Err(_) => {
                    eprintln!("slow #{n}: still open after {limit:?}");
                    None
                }
            }
        }));
    }
    // Meanwhile, ordinary webhooks, one after another, until the slow ones are over.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (mut others, mut others_failed, mut slowest) = (0, 0, Duration::ZERO);
    while started.elapsed() < Duration::from_secs(args.request_timeout_secs + 2) {
        let path = format!("/twilio/sms?during_slow={others}");
        let (took, answered) = genuine_sms(&client, args, &path, token).await;
        slowest = slowest.max(took);
        others += 1;
        others_failed += u64::from(!answered);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cuts = Vec::new();
    for task in slow_tasks {
        if let Ok(Some(cut)) = task.await {
            cuts.push(cut);
        }
    }
    Slow {
        sent: args.slow,
        cut_off: cuts.len() as u64,
        first_cut: cuts.iter().min().copied().unwrap_or_default(),
        last_cut: cuts.iter().max().copied().unwrap_or_default(),
        others,
        others_failed,
        slowest_other: slowest,
    }
}

/// Announces a 1 000-byte body and sends one byte a second; returns the status the server
/// answers with, or an error when it closes the connection.
async fn trickle(addr: SocketAddr, path: &str) -> Result<StatusCode, tower_twilio::BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nContent-Length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = async move {
        for _ in 0..1000 {
            writer.write_all(b"a").await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok::<_, std::io::Error>(())
    };
    let reading = async move {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let read = reader.read(&mut chunk).await?;
            if read == 0 {
                return Err::<StatusCode, tower_twilio::BoxError>("closed".into());
            }
            buffer.extend_from_slice(&chunk[..read]);
            if buffer.windows(2).any(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&buffer);
                let code: u16 = line.split_whitespace().nth(1).ok_or("no status")?.parse()?;
                return Ok(StatusCode::from_u16(code)?);
            }
        }
    };
    tokio::select! {
        status = reading => status,
        written = writing => match written {
            Ok(()) => Err("the whole slow body was accepted".into()),
            Err(error) => Err(error.into()),
        },
    }
}

struct Forged {
    sent: u64,
    refused: u64,
    elapsed: Duration,
    genuine: u64,
    genuine_failed: u64,
    genuine_median: Duration,
    genuine_slowest: Duration,
}

impl Forged {
    const fn passed(&self) -> bool {
        self.refused == self.sent && self.genuine_failed == 0
    }
}

impl fmt::Display for Forged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        write!(
            f,
            "forged {}/{} refused in {seconds:.1} s ({:.0}/s), {} genuine meanwhile, {} failed, \
             median {:.1} ms, slowest {:.1} ms",
            self.refused,
            self.sent,
            self.sent as f64 / seconds,
            self.genuine,
            self.genuine_failed,
            self.genuine_median.as_secs_f64() * 1000.0,
            self.genuine_slowest.as_secs_f64() * 1000.0
        )
    }
}

/// The forged SMS number `n`: a made-up account (even `n`) or the tenant's with a wrong token.
fn forged_request(args: &Args, n: u64) -> Request<Full<Bytes>> {
    let path = format!("/twilio/sms?forged={n}");
    if n.is_multiple_of(2) {
        let made_up = format!("AC{:032x}", 0x00f0_0ded_0000_0000_u128 + u128::from(n));
        webhook_for(args, &made_up, &path, "made-up-token", false)
    } else {
        webhook(args, &path, "not-the-token", false)
    }
}

async fn forged(args: &Arc<Args>, token: &Arc<str>) -> Forged {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http::<Full<Bytes>>();
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..args.concurrency {
        let (client, args, next, refused) = (
            client.clone(),
            Arc::clone(args),
            Arc::clone(&next),
            Arc::clone(&refused),
        );
        flooders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.forged {
                    return;
                }
                let answer = tokio::time::timeout(EXCHANGE_LIMIT, async {
                    let response = client.request(forged_request(&args, n)).await?;
                    let status = response.status();
                    response.into_body().collect().await?;
                    Ok::<_, tower_twilio::BoxError>(status)
                })
                .await;
                tally(("forged", n), answer, StatusCode::FORBIDDEN, &refused);
            }
        }));
    }
    // Meanwhile, genuine SMSs, one after another, until the flood is over.
    let genuine_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (mut latencies, mut genuine_failed) = (Vec::new(), 0);
    while next.load(Ordering::Relaxed) < args.forged {
        let path = format!("/twilio/sms?during_forged={}", latencies.len());
        let (took, answered) = genuine_sms(&genuine_client, args, &path, token).await;
        latencies.push(took);
        genuine_failed += u64::from(!answered);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for flooder in flooders {
        let _ = flooder.await;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Forged {
        sent: args.forged,
        refused: refused.load(Ordering::Relaxed),
        elapsed,
        genuine: latencies.len() as u64,
        genuine_failed,
        genuine_median: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        genuine_slowest: latencies.last().copied().unwrap_or_default(),
    }
}
