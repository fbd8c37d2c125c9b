//! Sends a webhook exactly as Twilio would, signed for a public URL: the tool to try a server
//! without a phone (it replaces the Twilio CLI's webhook plugin for local testing).
//!
//! Run with
//!
//! ```text
//! cargo run -p tower-twilio-example-server --bin send_webhook -- --token-file .twilio-demo-token --account-sid AC… sms
//! ```
//!
//! Presets (realistic parameters, fresh SIDs; `Key=Value` arguments override them):
//!
//! ```text
//! send_webhook … sms                                   incoming SMS       → /twilio/sms
//! send_webhook … status --status delivered MessageSid=SM…  status callback → /twilio/status
//! send_webhook … voice                                 incoming call      → /twilio/voice
//! send_webhook … call-status --status ringing CallSid=CA…  call status callback → /twilio/status
//! send_webhook … recording --status completed CallSid=CA…  recording callback  → /twilio/status
//! send_webhook … sms Body='Hi there' NumMedia=0        overrides
//! send_webhook … --get voice                           GET, parameters in the query
//! send_webhook … --json '{"AccountSid":"AC…"}' status  JSON body, signed through bodySHA256
//! send_webhook … --shared-key-id KEY --algorithm HMAC_SHA256 sms   SharedKey signature
//! send_webhook … --unsigned sms                        no signature: expects 403
//! send_webhook … --token wrong --expect 403 sms        a wrong token: expects 403
//! ```
//!
//! The secret comes from `--token-file` (recommended), `--token`, or `TWILIO_AUTH_TOKEN`; with
//! `--shared-key-id` it is the SharedKey's secret. It is never printed. `--unsigned` sends the
//! same request without `X-Twilio-Signature` (and needs no secret), as a forger without the
//! token would.
//!
//! `--url` is the public URL that is signed (default `http://127.0.0.1:3000` + the preset's
//! path); `--connect HOST:PORT` sends it to another address, as a proxy or tunnel would (the
//! tool speaks plain HTTP, so an `https` URL needs `--connect`). It prints the response's
//! status, headers and body, and exits with 1 when the status is not the expected one:
//! `--expect CODE` (e.g. `--expect 403` for a request signed with a wrong token), `--expect
//! 2xx` or `--expect any`; by default a signed request expects 2xx and an unsigned one 403.
//! Any other failure (no answer, a bad argument) exits with 2.
//!
//! `--deliver` delivers the webhook as Twilio does (`twilio_delivery`): the connection
//! overrides in the URL's fragment (`--url 'http://…/twilio/sms#rt=2000&rc=1'`: connect and
//! read timeouts, total time, retry count and policy), every retry with the same
//! `I-Twilio-Idempotency-Token`, and `--fallback-url` when the primary fails. It prints each
//! attempt and the answer Twilio would act on; `--expect` applies to that answer (no answer
//! exits with 1). With `Body='slow 4'` and `#rt=3000` the server's answer comes after the read
//! timeout: the retry shows what a server gives Twilio's retry.
//!
//! ```text
//! send_webhook … --deliver --url 'http://127.0.0.1:3000/twilio/sms#rt=3000&rc=1' sms Body='slow 4'
//! ```
// The option docs are clap's `--help` text, written for a terminal.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

use std::{fmt::Write as _, io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower_twilio::{
    BoxError,
    signature::{Algorithm, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER},
};

use tower_twilio_example_server::twilio_delivery::{Delivery, Target};
use tower_twilio_example_server::twilio_presets::{
    Body, CALL_STATUSES, EXAMPLE_ACCOUNT_SID, MESSAGE_STATUSES, Preset, RECORDING_STATUSES,
    SignedRequest, Signer, apply_overrides, parse_override, sign_request,
};

/// Sends a Twilio webhook, signed as Twilio signs it.
#[derive(Parser)]
#[command(name = "send_webhook", version, after_help = after_help())]
struct Cli {
    /// What to send.
    #[arg(value_enum, default_value_t = PresetArg::Sms)]
    preset: PresetArg,

    /// `Key=Value` pairs that replace (or add to) the preset's parameters.
    #[arg(value_parser = parse_override)]
    overrides: Vec<(String, String)>,

    /// The MessageStatus of a `status` callback (default `delivered`), the CallStatus of a
    /// `call-status` callback or the RecordingStatus of a `recording` callback (default
    /// `completed`). Any value is sent as given.
    #[arg(long)]
    status: Option<String>,

    /// The AccountSid in the parameters.
    #[arg(long, env = "TWILIO_ACCOUNT_SID", default_value = EXAMPLE_ACCOUNT_SID)]
    account_sid: String,

    /// The public URL that is signed, e.g. https://abc123.ngrok.app/twilio/sms.
    /// Default: --base-url followed by the preset's path.
    #[arg(long)]
    url: Option<String>,

    /// The base URL used when --url is not given.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    base_url: String,

    /// Connect to this address (HOST:PORT) instead of the URL's host; the `Host` header still
    /// names the URL's host, as it would through a proxy.
    #[arg(long)]
    connect: Option<String>,

    /// Send a GET with the parameters in the query (signed over the URL only).
    #[arg(long, conflicts_with = "json")]
    get: bool,

    /// Send this JSON body (or `@FILE`) instead of form parameters: `bodySHA256` is appended to
    /// the URL and the URL is signed. The preset then only chooses the path.
    #[arg(long, value_name = "BODY")]
    json: Option<String>,

    /// Sign with this SharedKey (adds X-Twilio-Webhooks-Signature-Settings); the secret is the
    /// SharedKey's.
    #[arg(long, value_name = "ID")]
    shared_key_id: Option<String>,

    /// The SharedKey's algorithm.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::HmacSha1, requires = "shared_key_id")]
    algorithm: AlgorithmArg,

    /// File holding the auth token (or SharedKey secret).
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,

    /// The auth token (or SharedKey secret). Prefer --token-file: command lines are visible to
    /// other users.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Extra request header, `Name: value` (repeatable), e.g. `X-Forwarded-Proto: https`.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// Send no X-Twilio-Signature (and no settings header): what a forger without the secret
    /// sends. No secret is needed (TWILIO_AUTH_TOKEN, if set, is not used).
    #[arg(long, conflicts_with_all = ["token_file", "shared_key_id", "explain"])]
    unsigned: bool,

    /// The status that counts as success: a code (e.g. 403 for a request signed with a wrong
    /// token), `2xx` or `any`. Any other status exits with 1. Default: 2xx for a signed
    /// request, 403 for an --unsigned one.
    #[arg(long, value_name = "CODE|2xx|any", value_parser = parse_expect)]
    expect: Option<Expect>,

    /// Deliver as Twilio does: the connection overrides in the URL's fragment (`#ct=…&rt=…
    /// &tt=…&rc=…&rp=…`), retries with the same idempotency token, then --fallback-url. Prints
    /// every attempt; --expect applies to the answer Twilio would act on.
    #[arg(long, conflicts_with_all = ["explain", "verbose"])]
    deliver: bool,

    /// With --deliver: the Fallback URL (with its own overrides in its fragment), tried when
    /// the primary URL's last attempt fails. Signed for its own URL.
    #[arg(long, requires = "deliver", value_name = "URL")]
    fallback_url: Option<String>,

    /// Also print the request that was sent (the signature included).
    #[arg(long, short)]
    verbose: bool,

    /// Print how the signature was made — the URL, the string to sign (the URL, then the
    /// parameters sorted by name, each as name and value with no separator), the algorithm and
    /// the signature — to compare by hand with what a server rebuilds.
    #[arg(long)]
    explain: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PresetArg {
    /// An incoming SMS.
    Sms,
    /// A message status callback (see --status).
    Status,
    /// An incoming call.
    Voice,
    /// A call status callback (see --status).
    CallStatus,
    /// A recording status callback (see --status).
    Recording,
}

/// What `--expect` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Exactly this status.
    Status(StatusCode),
    /// Any 2xx status.
    Success,
    /// Whatever comes back.
    Any,
}

impl Expect {
    fn accepts(self, status: StatusCode) -> bool {
        match self {
            Self::Status(expected) => status == expected,
            Self::Success => status.is_success(),
            Self::Any => true,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status) => write!(f, "{}", status.as_u16()),
            Self::Success => f.write_str("2xx"),
            Self::Any => f.write_str("any"),
        }
    }
}

fn parse_expect(value: &str) -> Result<Expect, String> {
    match value {
        "2xx" => Ok(Expect::Success),
        "any" => Ok(Expect::Any),
        code => code
            .parse::<u16>()
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .map(Expect::Status)
            .ok_or_else(|| format!("{code:?} is not a status code (100-999), 2xx or any")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    #[value(name = "HMAC_SHA1")]
    HmacSha1,
    #[value(name = "HMAC_SHA256")]
    HmacSha256,
}

fn after_help() -> String {
    format!(
        "MessageStatus values Twilio sends: {}.\n\
         CallStatus values: {}.\n\
         RecordingStatus values: {}.\n\
         Any other value is sent as given.",
        MESSAGE_STATUSES.join(", "),
        CALL_STATUSES.join(", "),
        RECORDING_STATUSES.join(", ")
    )
}

/// `--status`, or the preset's default.
fn status_or(cli: &Cli, default: &str) -> String {
    cli.status.clone().unwrap_or_else(|| default.to_owned())
}

/// The longest the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    // Unsigned, the request is made as if signed with no secret and the signature is dropped.
    let secret = if cli.unsigned {
        String::new()
    } else {
        read_secret(&cli)?
    };
    let preset = match cli.preset {
        PresetArg::Sms => Preset::Sms,
        PresetArg::Status => Preset::Status(status_or(&cli, "delivered")),
        PresetArg::Voice => Preset::Voice,
        PresetArg::CallStatus => Preset::CallStatus(status_or(&cli, "completed")),
        PresetArg::Recording => Preset::Recording(status_or(&cli, "completed")),
    };
    let url = cli
        .url
        .clone()
        .unwrap_or_else(|| format!("{}{}", cli.base_url.trim_end_matches('/'), preset.path()));
    let body = match &cli.json {
        Some(json) => {
            if !cli.overrides.is_empty() {
                return Err(
                    "--json sends BODY as it is: put the parameters in it, not Key=Value".into(),
                );
            }
            let bytes = match json.strip_prefix('@') {
                Some(path) => {
                    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?
                }
                None => json.clone().into_bytes(),
            };
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("--json is not JSON: {e}"))?;
            Body::Raw {
                content_type: "application/json".to_owned(),
                bytes,
            }
        }
        None => {
            let mut params = preset.params(&cli.account_sid);
            apply_overrides(&mut params, &cli.overrides);
            if cli.get {
                Body::Query(params)
            } else {
                Body::Form(params)
            }
        }
    };
    let signer = match &cli.shared_key_id {
        Some(key_id) => Signer::SharedKey {
            secret: secret.as_bytes(),
            key_id,
            algorithm: match cli.algorithm {
                AlgorithmArg::HmacSha1 => Algorithm::HmacSha1,
                AlgorithmArg::HmacSha256 => Algorithm::HmacSha256,
            },
        },
        None => Signer::AuthToken(secret.as_bytes()),
    };
    if cli.deliver {
        return deliver(&cli, &url, body, signer).await;
    }
    let mut signed = sign_request(&url, body, signer);
    if cli.unsigned {
        signed.headers.retain(|(name, _)| {
            !name.eq_ignore_ascii_case(SIGNATURE_HEADER)
                && !name.eq_ignore_ascii_case(SIGNATURE_SETTINGS_HEADER)
        });
    }

    // The request line goes to --connect (or the URL's own host); Host names the public host.
    let public: Uri = signed
        .url
        .parse()
        .map_err(|e| format!("--url {url:?} is not a URL: {e}"))?;
    let host = public
        .authority()
        .ok_or("--url needs a host")?
        .as_str()
        .to_owned();
    let connect = match (&cli.connect, public.scheme_str()) {
        (Some(connect), _) => connect.clone(),
        (None, Some("http")) => host.clone(),
        (None, _) => {
            return Err(format!(
                "{url} is not plain http: this tool does not speak TLS; add --connect HOST:PORT \
                 with the address of the server (or of a plain-HTTP proxy in front of it)"
            )
            .into());
        }
    };
    let target: Uri = format!("http://{connect}{}", signed.path_and_query())
        .parse()
        .map_err(|e| format!("--connect {connect:?}: {e}"))?;
    let mut request = Request::builder().method(signed.method).uri(&target);
    request = request.header(header::HOST, &host);
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    for extra in &cli.headers {
        let (name, value) = extra
            .split_once(':')
            .ok_or_else(|| format!("--header {extra:?}: expected `Name: value`"))?;
        request = request.header(name.trim(), value.trim());
    }
    let request = request.body(Full::new(Bytes::from(signed.body.clone())))?;

    // Printed with `write!` into one buffer, so that a closed pipe (`| head`) is not a panic.
    let mut out = String::new();
    let _ = writeln!(out, "> {} {url}", signed.method);
    if cli.connect.is_some() {
        let _ = writeln!(out, "> (connecting to {connect})");
    }
    if cli.explain {
        explain(&mut out, &signed);
    }
    if cli.verbose {
        for (name, value) in request.headers() {
            let _ = writeln!(out, "> {name}: {}", value.to_str().unwrap_or("<binary>"));
        }
        if !signed.body.is_empty() {
            let _ = writeln!(out, ">\n> {}", String::from_utf8_lossy(&signed.body));
        }
    }
    emit(&mut out);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = tokio::time::timeout(TIMEOUT, async {
        let response = client.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, BoxError>((parts, body))
    })
    .await
    .map_err(|_| format!("no answer from {connect} within {} s", TIMEOUT.as_secs()))?
    .map_err(|e| format!("request to {connect} failed: {e}"))?;
    let (parts, body) = response;

    let _ = writeln!(out, "< {:?} {}", parts.version, parts.status);
    for (name, value) in &parts.headers {
        let _ = writeln!(out, "< {name}: {}", value.to_str().unwrap_or("<binary>"));
    }
    let _ = writeln!(out, "<\n{}", String::from_utf8_lossy(&body));
    emit(&mut out);

    let status = parts.status;
    let expect = cli.expect.unwrap_or(if cli.unsigned {
        Expect::Status(StatusCode::FORBIDDEN)
    } else {
        Expect::Success
    });
    if expect.accepts(status) {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: unexpected status {status} (expected {expect}{}; see --expect)",
            if cli.expect.is_none() {
                if cli.unsigned {
                    ", the default for an unsigned request"
                } else {
                    ", the default for a signed request"
                }
            } else {
                ""
            }
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `--deliver`: the webhook delivered as Twilio delivers it.
async fn deliver(
    cli: &Cli,
    url: &str,
    body: Body,
    signer: Signer<'_>,
) -> Result<ExitCode, BoxError> {
    let target = |url: &str, body: Body| -> Result<Target, BoxError> {
        let mut target = Target::new(url, body, signer)?;
        if let Some(connect) = &cli.connect {
            target = target.connect(connect.clone());
        } else if !url.starts_with("http://") {
            return Err(format!(
                "{url} is not plain http: this tool does not speak TLS; add --connect HOST:PORT"
            )
            .into());
        }
        let headers = &mut target.request.headers;
        if cli.unsigned {
            headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case(SIGNATURE_HEADER)
                    && !name.eq_ignore_ascii_case(SIGNATURE_SETTINGS_HEADER)
            });
        }
        for extra in &cli.headers {
            let (name, value) = extra
                .split_once(':')
                .ok_or_else(|| format!("--header {extra:?}: expected `Name: value`"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(target)
    };
    let primary = target(url, body.clone())?;
    let mut delivery = Delivery::new(primary);
    if let Some(fallback) = &cli.fallback_url {
        delivery = delivery.fallback(target(fallback, body)?);
    }

    let mut out = String::new();
    let overrides = delivery.primary().overrides;
    let _ = writeln!(
        out,
        "> {} {} (ct={} ms, rt={} ms, tt={} ms, rc={}, {:?})",
        delivery.primary().request.method,
        delivery.primary().request.url,
        overrides.connect_timeout.as_millis(),
        overrides.read_timeout.as_millis(),
        overrides.total_time.as_millis(),
        overrides.retry_count,
        overrides.retry_policy
    );
    emit(&mut out);
    let delivered = delivery.deliver().await;
    let _ = write!(out, "{delivered}");
    let status = match delivered.answer().or_else(|| {
        delivered
            .attempts
            .last()
            .and_then(|attempt| attempt.outcome.answer())
    }) {
        Some(answer) => {
            let _ = writeln!(
                out,
                "< {} ({})\n{}",
                answer.status,
                answer.content_type.as_deref().unwrap_or("no content type"),
                answer.text()
            );
            Some(answer.status)
        }
        None => {
            let _ = writeln!(
                out,
                "< no answer: Twilio gives up (or its Fallback URL failed)"
            );
            None
        }
    };
    emit(&mut out);
    let expect = cli.expect.unwrap_or(if cli.unsigned {
        Expect::Status(StatusCode::FORBIDDEN)
    } else {
        Expect::Success
    });
    match status {
        Some(status) if expect.accepts(status) => Ok(ExitCode::SUCCESS),
        Some(status) => {
            eprintln!("error: unexpected status {status} (expected {expect}; see --expect)");
            Ok(ExitCode::FAILURE)
        }
        None => {
            eprintln!("error: no answer was read");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What was signed, and how, for `--explain`.
fn explain(out: &mut String, signed: &SignedRequest) {
    let key = match signed.header(SIGNATURE_SETTINGS_HEADER) {
        Some(settings) => format!("SharedKey ({settings})"),
        None => "auth token".to_owned(),
    };
    let body_hash = if signed.url.contains("bodySHA256=") {
        "the body is covered by the bodySHA256 query parameter: the SHA-256 (hex) of the exact body bytes"
    } else if signed.method == "GET" {
        "a GET: the URL with its query is all that is signed"
    } else {
        "form body: the decoded parameters, sorted by name (then value), follow the URL"
    };
    let _ = writeln!(out, "explain: URL            {}", signed.url);
    let _ = writeln!(out, "explain: string to sign {}", signed.string_to_sign);
    let _ = writeln!(out, "explain:                ({body_hash})");
    let _ = writeln!(
        out,
        "explain: algorithm      {} with the {key}",
        signed.algorithm.as_str()
    );
    let _ = writeln!(
        out,
        "explain: signature      {}",
        signed.header(SIGNATURE_HEADER).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "explain: a server verifies only if it rebuilds exactly this URL (scheme, host, port, \
         path, trailing slash, query) and holds the same secret"
    );
}

/// Writes and clears `out`; a closed standard output is ignored.
fn emit(out: &mut String) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    out.clear();
}

/// The secret from --token-file, --token or TWILIO_AUTH_TOKEN; never printed.
fn read_secret(cli: &Cli) -> Result<String, BoxError> {
    let secret = match (&cli.token_file, &cli.token) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?,
        (None, Some(token)) => token.clone(),
        (None, None) => {
            return Err("no secret: give --token-file PATH, --token, or TWILIO_AUTH_TOKEN".into());
        }
    };
    let secret = secret.trim().to_owned();
    if secret.is_empty() {
        return Err("the token is empty".into());
    }
    Ok(secret)
}
