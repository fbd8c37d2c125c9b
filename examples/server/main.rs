//! An example server to point real Twilio numbers at: verified SMS, voice and status-callback
//! webhooks, a persistent webhook log, and a JSON API to look at both.
//!
//! Run with
//!
//! ```text
//! cargo run --example server
//! ```
//!
//! With no configuration it starts in demo mode: it creates `twilio-webhooks.db` (SQLite) and a
//! demo tenant whose random auth token goes to `.twilio-demo-token` (mode 0600), and prints the
//! webhook URLs for the Twilio console and a command that sends it a correctly signed SMS.
//! `cargo run --example server -- --help` lists the options; each also reads an environment
//! variable (`PORT`, `BIND_ADDRESS`, `DATABASE_URL`, `PUBLIC_URL`, `TRUSTED_PROXIES`,
//! `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`, `SENTRY_DSN`, `LOG_FORMAT`). Tenants are managed
//! with `cargo run --example server -- tenant …`.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /twilio/sms` | incoming SMS/MMS/WhatsApp → TwiML `<Message>` echo with the tenant's name |
//! | `POST /twilio/voice` | incoming call → TwiML `<Say>` |
//! | `POST /twilio/status` | message status callback → recorded per `MessageSid` |
//! | `GET /healthz` | 200 when the database answers |
//! | `GET /api/webhooks?limit=N` | the webhook log, newest first |
//! | `GET /api/messages/{MessageSid}` | a message's status history |
//!
//! Only `/twilio/*` is verified; `/api/*` is not authenticated: keep the server on a private
//! address or behind a proxy that protects it.
#![allow(clippy::print_stdout)]

mod app;

use std::{
    io::{IsTerminal, Read},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use tower_twilio::{BoxError, PublicUrl, public_url::ForwardedHeaders, signature::Algorithm};
use tracing_subscriber::EnvFilter;

use app::{
    Config, PublicUrlConfig, Startup,
    db::{Db, Location, NewTenant},
};

/// Example server for Twilio webhooks verified by tower-twilio.
#[derive(Parser)]
#[command(name = "server", version)]
struct Cli {
    /// SQLite file (created with its schema on first run) or postgres:// URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "twilio-webhooks.db",
        hide_env_values = true,
        global = true
    )]
    database_url: String,

    /// Log format on standard error (`RUST_LOG` sets the filter; default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,

    #[command(flatten)]
    serve: ServeArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Args)]
struct ServeArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,

    /// Address to listen on.
    #[arg(long = "bind", env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,

    /// The base URL Twilio calls (scheme, host, optional port and path prefix), exactly as in
    /// the Twilio console, e.g. https://abc123.ngrok.app. Default: http://<bind>:<port>.
    #[arg(long, env = "PUBLIC_URL", conflicts_with = "trust_proxy")]
    public_url: Option<String>,

    /// Trust `Forwarded`/`X-Forwarded-*` from these proxy networks (comma-separated CIDRs or
    /// addresses) to rebuild the public URL, instead of a fixed PUBLIC_URL.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    trust_proxy: Vec<String>,

    /// Account SID to register at start, with TWILIO_AUTH_TOKEN.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    account_sid: Option<String>,

    /// Auth token of TWILIO_ACCOUNT_SID (prefer the environment variable: command lines are
    /// visible to other users).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,

    /// Sentry DSN: capture critical security events (needs the crate feature `sentry`).
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    sentry_dsn: Option<String>,

    /// Requests handled at once.
    #[arg(long, default_value_t = app::DEFAULT_CONCURRENCY_LIMIT, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency_limit: u32,

    /// Seconds a request may take before it is answered with 503.
    #[arg(long, default_value_t = app::DEFAULT_REQUEST_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    request_timeout_secs: u64,

    /// Seconds a tenant's secrets stay cached (a rotation takes effect within this time).
    #[arg(long, default_value_t = app::DEFAULT_CREDENTIAL_CACHE_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    credential_cache_ttl_secs: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Manage tenants and their secrets (never printed).
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Add a tenant with its account's auth token.
    Add {
        /// Tenant id (letters, digits, `-`, `_`).
        #[arg(long)]
        id: String,
        /// Display name, used in replies.
        #[arg(long)]
        name: String,
        /// The tenant's Twilio AccountSid (AC…).
        #[arg(long)]
        account_sid: String,
        #[command(flatten)]
        token: TokenArgs,
        /// Store the token in the legacy `tenants` table instead of `tenant_settings`.
        #[arg(long)]
        legacy: bool,
    },
    /// List tenants, where their credentials come from, and their SharedKey ids.
    List,
    /// Make a new auth token the primary one; the old primary stays valid as the secondary.
    Rotate {
        /// Tenant id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Add (or replace) a SharedKey secret for a tenant.
    AddSharedKey {
        /// Tenant id.
        #[arg(long)]
        id: String,
        /// The SharedKey id, as in the `key=` of Twilio's settings header.
        #[arg(long)]
        key_id: String,
        /// The algorithm the Webhook Setting uses.
        #[arg(long, value_enum, default_value_t = AlgorithmArg::HmacSha256)]
        algorithm: AlgorithmArg,
        /// File holding the SharedKey secret (`-` for standard input).
        #[arg(long, env = "TWILIO_SHARED_KEY_SECRET_FILE")]
        secret_file: PathBuf,
    },
}

/// Where an auth token comes from: a file (or standard input), or the environment.
#[derive(Args)]
struct TokenArgs {
    /// File holding the auth token (`-` for standard input).
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// The auth token (prefer --auth-token-file or the environment variable).
    #[arg(
        long,
        env = "TWILIO_AUTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "auth_token_file"
    )]
    auth_token: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    #[value(name = "HMAC_SHA1")]
    HmacSha1,
    #[value(name = "HMAC_SHA256")]
    HmacSha256,
}

impl AlgorithmArg {
    const fn algorithm(self) -> Algorithm {
        match self {
            Self::HmacSha1 => Algorithm::HmacSha1,
            Self::HmacSha256 => Algorithm::HmacSha256,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the Tokio runtime: {error}")),
    };
    let location = match Location::parse(&cli.database_url) {
        Ok(location) => location,
        Err(message) => return fail(&message),
    };
    let result = match cli.command {
        Some(Command::Tenant(command)) => runtime.block_on(tenant(&location, command)),
        None => run_server(&runtime, location, &cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run_server(
    runtime: &tokio::runtime::Runtime,
    location: Location,
    args: &ServeArgs,
) -> Result<(), BoxError> {
    let config = server_config(location, args)?;
    // Kept until the end: dropping it flushes the events still queued.
    let _sentry = init_sentry(args.sentry_dsn.as_deref())?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.bind, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        let mut config = config;
        // Reachable from other hosts: the inspector and `/api/*` need a token, printed below
        // (it guards only this server's own pages, not any Twilio secret).
        if !local.ip().is_loopback() {
            config.access_token = Some(app::twilio_presets::random_hex(16));
        }
        let access_token = config.access_token.clone();
        let (router, handles) = app::build(config, local).await?;
        print_startup(&handles.startup, local, access_token.as_deref());
        app::serve(listener, router, handles, shutdown_signal()).await
    })
}

/// Checks the options and turns them into a [`Config`]: every mistake is reported here, before
/// anything starts.
fn server_config(location: Location, args: &ServeArgs) -> Result<Config, BoxError> {
    let mut config = Config::new(location);
    config.public_url = match (&args.public_url, args.trust_proxy.is_empty()) {
        (Some(url), _) => {
            PublicUrl::fixed(url).map_err(|e| format!("PUBLIC_URL: {e}"))?;
            PublicUrlConfig::Fixed(url.clone())
        }
        (None, false) => {
            let mut headers = ForwardedHeaders::both();
            for cidr in &args.trust_proxy {
                headers = headers
                    .trust_proxy(cidr.trim())
                    .map_err(|e| format!("TRUSTED_PROXIES: {e}"))?;
            }
            PublicUrlConfig::TrustForwarded(
                args.trust_proxy
                    .iter()
                    .map(|c| c.trim().to_owned())
                    .collect(),
            )
        }
        (None, true) => PublicUrlConfig::Local,
    };
    config.account = match (&args.account_sid, &args.auth_token) {
        (Some(sid), Some(token)) => {
            check_account_sid(sid)?;
            check_token(token)?;
            Some((sid.clone(), token.trim().to_owned()))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err("TWILIO_ACCOUNT_SID is set but TWILIO_AUTH_TOKEN is not: set both, or neither for demo mode".into());
        }
        (None, Some(_)) => {
            return Err("TWILIO_AUTH_TOKEN is set but TWILIO_ACCOUNT_SID is not: the AccountSid of each webhook chooses the token, so set both".into());
        }
    };
    config.sentry = args.sentry_dsn.is_some();
    config.concurrency_limit = args.concurrency_limit as usize;
    config.request_timeout = Duration::from_secs(args.request_timeout_secs);
    config.credential_cache_ttl = Duration::from_secs(args.credential_cache_ttl_secs);
    Ok(config)
}

#[cfg(feature = "sentry")]
fn init_sentry(dsn: Option<&str>) -> Result<Option<sentry::ClientInitGuard>, BoxError> {
    let Some(dsn) = dsn else { return Ok(None) };
    let dsn: sentry::types::Dsn = dsn
        .parse()
        .map_err(|e| format!("SENTRY_DSN is not a valid DSN: {e}"))?;
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = sentry::release_name!();
    // Security events carry client IPs; nothing else personal is sent.
    options.send_default_pii = false;
    let guard = sentry::init(options);
    tracing::info!("Sentry: critical security events are captured");
    Ok(Some(guard))
}

#[cfg(not(feature = "sentry"))]
fn init_sentry(dsn: Option<&str>) -> Result<Option<()>, BoxError> {
    match dsn {
        None => Ok(None),
        Some(_) => Err("SENTRY_DSN is set, but this build has no Sentry support: run with `cargo run --features sentry --example server`".into()),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!(
        "shutting down: finishing in-flight requests, then writing the rest of the webhook log"
    );
}

fn print_startup(startup: &Startup, local: SocketAddr, access_token: Option<&str>) {
    println!("tower-twilio example server listening on http://{local}");
    println!("database: {}", startup.database);
    let base = match (&startup.public_base, &startup.public_url) {
        (Some(base), PublicUrlConfig::Local) => {
            println!(
                "public URL: {base} (PUBLIC_URL is not set: fine for local testing; behind a tunnel \
                 or proxy, set PUBLIC_URL to the https URL Twilio calls)"
            );
            base.clone()
        }
        (Some(base), _) => {
            println!("public URL: {base} (PUBLIC_URL)");
            base.clone()
        }
        (None, PublicUrlConfig::TrustForwarded(cidrs)) => {
            println!(
                "public URL: rebuilt from Forwarded/X-Forwarded-* sent by {}",
                cidrs.join(", ")
            );
            "https://<your public host>".to_owned()
        }
        (None, _) => "https://<your public host>".to_owned(),
    };
    match access_token {
        Some(token) => println!(
            "inspector: http://{}/?token={token}  (reachable from other hosts, so the inspector and /api/* need this token)",
            connect_addr(local)
        ),
        None => println!(
            "inspector: http://{}/  (the live webhook log, with test buttons)",
            connect_addr(local)
        ),
    }
    if let Some(tenant) = &startup.env_tenant {
        println!("tenant {tenant:?}: TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (as primary token)");
    }
    println!("tenants: {}", startup.tenants);
    println!();
    println!("In the Twilio console (Phone Numbers > Manage > Active numbers > your number):");
    println!("  A message comes in:   POST {base}/twilio/sms");
    println!("  A call comes in:      POST {base}/twilio/voice");
    println!(
        "  Status callback URL:  {base}/twilio/status   (StatusCallback when sending a message)"
    );
    if let Some(demo) = &startup.demo {
        let token_file = shell_path(&demo.token_file);
        println!();
        if demo.created {
            println!(
                "Demo mode: no TWILIO_AUTH_TOKEN and no tenants, so a demo tenant was created."
            );
        } else {
            println!("Demo tenant (from an earlier start):");
        }
        println!(
            "  AccountSid {}; its auth token is in {} (mode 0600; never printed)",
            demo.account_sid,
            demo.token_file.display()
        );
        println!();
        println!("Send a correctly signed test SMS to this server:");
        println!(
            "  cargo run --example send_webhook -- --token-file {token_file} --account-sid {} --url {base}/twilio/sms sms",
            demo.account_sid
        );
        println!("The same with a wrong token is refused (403) and logged as rejected:");
        println!(
            "  cargo run --example send_webhook -- --token not-the-token --account-sid {} --url {base}/twilio/sms sms",
            demo.account_sid
        );
    }
    println!();
    println!(
        "Then look at the webhook log:  curl -s http://{}/api/webhooks",
        connect_addr(local)
    );
    println!("Stop with Ctrl-C (in-flight requests finish and the log is written first).");
}

/// Where a local client connects (the loopback address for a wildcard bind).
fn connect_addr(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// A path as a shell word.
fn shell_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

// ---- tenant subcommands ----------------------------------------------------------------------

async fn tenant(location: &Location, command: TenantCommand) -> Result<(), BoxError> {
    let db = Db::open(location).await?;
    let result = run_tenant_command(&db, command).await;
    db.close().await;
    result
}

async fn run_tenant_command(db: &Db, command: TenantCommand) -> Result<(), BoxError> {
    match command {
        TenantCommand::Add {
            id,
            name,
            account_sid,
            token,
            legacy,
        } => {
            check_tenant_id(&id)?;
            check_account_sid(&account_sid)?;
            if name.trim().is_empty() {
                return Err("--name must not be empty".into());
            }
            let token = token.read()?;
            db.add_tenant(&NewTenant {
                id: &id,
                name: name.trim(),
                account_sid: &account_sid,
                auth_token: &token,
                legacy,
            })
            .await?;
            let table = if legacy {
                "tenants (legacy)"
            } else {
                "tenant_settings"
            };
            println!("added tenant {id:?} for {account_sid} (auth token in {table})");
        }
        TenantCommand::List => {
            let tenants = db.list_tenants().await?;
            if tenants.is_empty() {
                println!("no tenants (the server starts in demo mode)");
            }
            println!(
                "{:<16} {:<24} {:<34} {:<17} {:<19} shared keys",
                "id", "name", "account SID", "source", "tokens"
            );
            for t in tenants {
                let mut tokens = vec![if t.source == "tenant_settings" {
                    "primary"
                } else {
                    "legacy"
                }];
                if t.has_secondary {
                    tokens.push("secondary");
                }
                if t.source == "tenant_settings" && t.has_legacy_token {
                    tokens.push("(+legacy)");
                }
                println!(
                    "{:<16} {:<24} {:<34} {:<17} {:<19} {}",
                    t.id,
                    t.name,
                    t.account_sid.as_deref().unwrap_or("-"),
                    t.source,
                    tokens.join(", "),
                    if t.shared_keys.is_empty() {
                        "-".to_owned()
                    } else {
                        t.shared_keys.join(", ")
                    }
                );
            }
        }
        TenantCommand::Rotate { id, token } => {
            let token = token.read()?;
            db.rotate(&id, &token).await?;
            println!(
                "tenant {id:?}: the new token is primary, the old one secondary. Running servers \
                 pick it up within their credential cache TTL (default 30 s); then promote the \
                 token in the Twilio console."
            );
        }
        TenantCommand::AddSharedKey {
            id,
            key_id,
            algorithm,
            secret_file,
        } => {
            if key_id.is_empty() || key_id.contains([',', '=', ' ']) {
                return Err("--key-id must be non-empty, without `,`, `=` or spaces".into());
            }
            let secret = read_secret(&secret_file, "SharedKey secret")?;
            let algorithm = algorithm.algorithm();
            db.add_shared_key(&id, &key_id, &secret, algorithm.as_str())
                .await?;
            println!("tenant {id:?}: SharedKey {key_id:?} ({algorithm}) stored");
        }
    }
    Ok(())
}

impl TokenArgs {
    fn read(&self) -> Result<String, BoxError> {
        let token = match (&self.auth_token_file, &self.auth_token) {
            (Some(path), _) => read_secret(path, "auth token")?,
            (None, Some(token)) => token.trim().to_owned(),
            (None, None) => {
                return Err("give the auth token with --auth-token-file PATH (or `-` for standard input) or TWILIO_AUTH_TOKEN".into());
            }
        };
        check_token(&token)?;
        Ok(token)
    }
}

fn read_secret(path: &Path, what: &str) -> Result<String, BoxError> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the {what} from standard input: {e}"))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the {what} from {}: {e}", path.display()))?;
    }
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        return Err(format!("the {what} is empty").into());
    }
    Ok(secret)
}

fn check_token(token: &str) -> Result<(), BoxError> {
    if token.trim().is_empty() {
        return Err("the auth token is empty".into());
    }
    Ok(())
}

fn check_account_sid(sid: &str) -> Result<(), BoxError> {
    let ok = sid.len() == 34
        && sid.starts_with("AC")
        && sid[2..].bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(
            format!("{sid:?} is not an AccountSid: expected AC followed by 32 letters or digits")
                .into(),
        )
    }
}

fn check_tenant_id(id: &str) -> Result<(), BoxError> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!("{id:?} is not a tenant id: use letters, digits, `-` and `_`").into())
    }
}
