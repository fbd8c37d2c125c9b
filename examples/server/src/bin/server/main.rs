//! The example server's command: starts the server, or manages tenants.
//!
//! ```text
//! cargo run -p tower-twilio-example-server
//! ```
//!
//! With no configuration it starts in demo mode: it creates `twilio-webhooks.db` (SQLite) and a
//! demo tenant whose random auth token goes to `.twilio-demo-token` (mode 0600), and prints the
//! webhook URLs for the Twilio console and a command that sends it a correctly signed SMS.
//! `cargo run -p tower-twilio-example-server -- --help` lists the options; each also reads an
//! environment variable (`PORT`, `BIND_ADDRESS`, `DATABASE_URL`, `PUBLIC_URL`,
//! `TRUSTED_PROXIES`, `TRUSTED_FORWARDED_FIELDS`, `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`,
//! `ADMIN_TOKEN`, `SENTRY_DSN`, `LOG_FORMAT`, `LOG_MAX_ROWS`, `LOG_MAX_AGE_DAYS`).
//! Tenants are managed with `cargo run -p tower-twilio-example-server -- tenant …`.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /twilio/sms` | incoming SMS/MMS/WhatsApp → TwiML `<Message>` echo with the tenant's name; a body `slow N` answers after N s (at most 8) |
//! | `POST /twilio/voice` | incoming call → the voice menu: TwiML `<Gather>` (action `/twilio/voice/menu?step=choice`), then `<Redirect>` to `/twilio/voice/menu?step=main` |
//! | `POST /twilio/voice/menu?step=main\|choice` | the menu again, or what a digit does (`Digits` 1: say, 2: hang up) |
//! | `POST /twilio/status` | message status callback → recorded per `MessageSid` |
//! | `GET /healthz` | 200 when the database answers |
//! | `POST /twilio/status` | call status and recording status callbacks → recorded per `CallSid` |
//! | `GET /` | the inspector page (admin token) |
//! | `GET /api/webhooks?limit=N` | the webhook log, newest first (admin token) |
//! | `GET /api/messages/{MessageSid}` | each tenant's status history of a message (admin token) |
//! | `GET /api/calls/{CallSid}` | each tenant's status and recording history of a call (admin token) |
#![allow(clippy::print_stdout)]
// The option docs in `cli` are clap's `--help` text, written for a terminal.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

mod banner;
mod cli;
mod tenant;

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode};

use clap::Parser;
use tower_twilio::BoxError;
use tower_twilio_example_server::db::Location;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat, ServeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the Tokio runtime: {error}")),
    };
    let location = match Location::parse(&cli.database_url) {
        Ok(location) => location,
        Err(error) => return fail(&error.to_string()),
    };
    let result = match cli.command {
        Some(Command::Tenant(command)) => runtime.block_on(tenant::run(&location, command)),
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
    let config = cli::server_config(location, args)?;
    // Kept until the end: dropping it flushes the events still queued.
    let _sentry = init_sentry(args.sentry_dsn.as_deref())?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.bind, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        let (router, handles) = tower_twilio_example_server::build(config, local).await?;
        banner::print_startup(&handles.startup, local);
        tower_twilio_example_server::serve(listener, router, handles, shutdown_signal()).await
    })
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
    // No signature, settings header, credential, cookie or query in anything sent.
    options.before_send = Some(std::sync::Arc::new(
        tower_twilio_example_server::scrub::before_send,
    ));
    let guard = sentry::init(options);
    tracing::info!("Sentry: critical security events are captured");
    Ok(Some(guard))
}

#[cfg(not(feature = "sentry"))]
fn init_sentry(dsn: Option<&str>) -> Result<Option<()>, BoxError> {
    match dsn {
        None => Ok(None),
        Some(_) => Err("SENTRY_DSN is set, but this build has no Sentry support: run with `cargo run --features sentry -p tower-twilio-example-server`".into()),
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
