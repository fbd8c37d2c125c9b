//! An example server to point real Twilio numbers at: verified SMS, voice and status-callback
//! webhooks, a persistent webhook log, and a JSON API to look at both.
//!
//! This crate is the server as a library: [`build`] makes the router and everything behind it,
//! [`serve`] runs it until a shutdown signal, then drains the webhook log. The `server` binary
//! (`src/bin/server/`) parses the command line and calls these; the integration tests start the
//! same server in-process. The crate also has the signing tool (`send_webhook`) and the load
//! test (`loadtest`), which share [`twilio_presets`] with the server and its tests.
//!
//! ```text
//! cargo run -p tower-twilio-example-server                      # the server, in demo mode
//! cargo run -p tower-twilio-example-server --bin send_webhook   # the signing tool
//! ```
//!
//! ```text
//! request ─► Trace ─► Timeout (10 s) ─► concurrency limit (64)
//!              ├─ /twilio/{sms,status,…} ─► run to end ─► request id ─► admit (log back-pressure) ─► TwilioSignatureLayer ─► ReplayGuardLayer (content) ─► handler
//!              ├─ /twilio/voice{,/menu} ─► … the same … ─► ReplayGuardLayer (delivery) ─► handler
//!              ├─ /healthz ─► handler
//!              ├─ admin surface: /inspector/send-*, /api/{webhooks,messages/{sid},calls/{sid}}, /metrics ─► Host + token ─► handler
//!              └─ the inspector page's shell: /, /inspector.{js,css} ─► Host ─► handler
//! ```
//!
//! The admin surface always needs the admin token as a bearer header, and answers only to
//! known names ([`admin`]); the inspector page's shell holds no data and asks for the token.

pub mod account_index;
pub mod admin;
pub mod credentials;
pub mod db;
pub mod demo;
pub mod error;
pub mod inspector;
pub mod prometheus;
pub mod replay;
pub mod routes;
pub mod run_to_end;
#[cfg(feature = "sentry")]
pub mod scrub;
pub mod secret_file;
pub mod twilio_delivery;
pub mod twilio_presets;
pub mod webhook_log;

use std::{
    future::Future,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
    http::StatusCode,
    middleware::{from_fn_with_state, map_request},
    routing::{any, get, post},
};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::{
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tower_twilio::{
    BoxError, PublicUrl, TwilioSignatureLayer,
    events::{OnSecurityEvent, TracingSink},
    public_url::{ForwardedField, ForwardedHeaders},
    replay_guard::Scope,
    resolver::{CacheFuture, ResolveCredentials},
};

use self::{
    account_index::AccountIndex,
    admin::AdminGuard,
    db::{Db, Location},
    demo::Demo,
    inspector::Inspector,
    replay::ReplayGuardConfig,
    routes::AppState,
    run_to_end::RunToEnd,
    webhook_log::{LogSender, LogWriter, RandomRequestId, Retention},
};

/// Requests handled at once; more wait for a slot. Twilio sends a few webhooks per message,
/// so 64 covers a busy number; each holds at most one 64 KiB body.
pub const DEFAULT_CONCURRENCY_LIMIT: u32 = 64;

/// How long a request may take before it gets a 503. Twilio gives up after 15 s; answering
/// first lets its Fallback URL (or a retry, when the URL's `rp` names `5xx`) take over, and bounds how long a request holds its
/// memory and its log permits.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a tenant's secrets stay cached.
pub const DEFAULT_CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(30);

/// Where the URL that signatures are checked against comes from.
#[derive(Clone, Debug)]
pub enum PublicUrlConfig {
    /// `PUBLIC_URL`: the base URL entered in the Twilio console (recommended).
    Fixed(String),
    /// Trusted proxies: the forwarded fields named, from these networks only.
    TrustForwarded {
        /// The proxy networks (CIDRs or addresses).
        proxies: Vec<String>,
        /// The fields those proxies set (`x-forwarded-proto` unless told more).
        fields: Vec<ForwardedField>,
    },
    /// Nothing configured: `http://<bind address>:<port>`, for local testing.
    Local,
}

/// Everything [`build`] needs. `Debug` shows no secret.
pub struct Config {
    /// Where the data lives.
    pub database: Location,
    /// Where the URL that signatures are checked against comes from.
    pub public_url: PublicUrlConfig,
    /// `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN`, upserted as a tenant at start.
    pub account: Option<(String, String)>,
    /// Where demo mode writes the demo tenant's token.
    pub demo_token_file: std::path::PathBuf,
    /// The admin token (`ADMIN_TOKEN`); when `None`, a random one is written to
    /// [`admin_token_file`](Self::admin_token_file).
    pub admin_token: Option<String>,
    /// Where a random admin token goes.
    pub admin_token_file: std::path::PathBuf,
    /// How long and how many rows the webhook log keeps.
    pub retention: Retention,
    /// Capture security events in Sentry (a client must have been initialised).
    pub sentry: bool,
    /// Requests handled at once.
    pub concurrency_limit: usize,
    /// How long a request may take before it is answered with 503.
    pub request_timeout: Duration,
    /// How long a tenant's secrets stay cached.
    pub credential_cache_ttl: Duration,
    /// Run the mismatch doctor (`DIAGNOSE_MISMATCHES`); `None`: only in demo mode.
    pub diagnose_mismatches: Option<bool>,
    /// Where the replay guard keeps the webhooks it has seen (`REPLAY_GUARD`).
    pub replay_guard: ReplayGuardConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database)
            .field("public_url", &self.public_url)
            .field("account", &self.account.as_ref().map(|(sid, _)| sid))
            .field("demo_token_file", &self.demo_token_file)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "[set]"))
            .field("admin_token_file", &self.admin_token_file)
            .field("retention", &self.retention)
            .field("sentry", &self.sentry)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("request_timeout", &self.request_timeout)
            .field("credential_cache_ttl", &self.credential_cache_ttl)
            .field("diagnose_mismatches", &self.diagnose_mismatches)
            .field("replay_guard", &self.replay_guard)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults, with this database.
    pub fn new(database: Location) -> Self {
        Self {
            demo_token_file: database.demo_token_file(),
            admin_token: None,
            admin_token_file: database.admin_token_file(),
            retention: Retention::DEFAULT,
            database,
            public_url: PublicUrlConfig::Local,
            account: None,
            sentry: false,
            concurrency_limit: DEFAULT_CONCURRENCY_LIMIT as usize,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            credential_cache_ttl: DEFAULT_CREDENTIAL_CACHE_TTL,
            diagnose_mismatches: None,
            replay_guard: ReplayGuardConfig::Memory,
        }
    }
}

/// What the start-up message shows.
#[derive(Clone, Debug)]
pub struct Startup {
    /// Where the data lives (no password).
    pub database: String,
    /// The base URL Twilio should call; `None` when it comes from forwarding headers.
    pub public_base: Option<String>,
    /// How [`public_base`](Self::public_base) was chosen.
    pub public_url: PublicUrlConfig,
    /// The tenant `TWILIO_ACCOUNT_SID` was upserted as.
    pub env_tenant: Option<String>,
    /// The demo tenant, when there is one and no account was configured.
    pub demo: Option<Demo>,
    /// How many tenants there are.
    pub tenants: i64,
    /// Where the random admin token was written; `None` when it came from `ADMIN_TOKEN`.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Where the replay guard keeps what it has seen.
    pub replay_guard: ReplayGuardConfig,
}

/// What the caller keeps next to the router: the start-up facts, the database, and the log
/// writer that [`serve`] drains at the end.
#[derive(Debug)]
pub struct Handles {
    /// What the start-up message shows.
    pub startup: Startup,
    /// The database.
    pub db: Db,
    /// Lets tests wait until the log has caught up ([`LogSender::flush`]).
    pub log: LogSender,
    writer: LogWriter,
    index_refresh: tokio::task::JoinHandle<()>,
    run_to_end: RunToEnd,
}

/// Opens the database (creating it), sets up tenants (the configured account, or demo mode),
/// starts the log writer and builds the router. `local_addr` is the address the listener is
/// bound to, for the local public URL.
pub async fn build(config: Config, local_addr: SocketAddr) -> Result<(Router, Handles), BoxError> {
    // 1. The data: the database, its tenants, the webhook log's writer.
    let db = Db::open(&config.database).await?;
    // Installed before the first request, so that no count is lost.
    prometheus::handle();
    let (env_tenant, demo) = set_up_tenants(&db, &config).await?;
    let (public_url, public_base) = public_url(&config.public_url, local_addr)?;
    let (log, writer) = webhook_log::spawn(db.clone(), config.retention);
    // After the tenants are set up: every stored account, kept current while the server runs.
    let index = AccountIndex::load(&db).await?;
    let index_refresh = index.spawn_refresh(db.clone());

    // 2. The webhooks: verified by the signature layer, logged, guarded against replays.
    let twilio = TwilioSignatureLayer::new(credentials::resolver(
        &db,
        &index,
        config.credential_cache_ttl,
    ))
    .public_url(public_url)
    // axum puts the peer address in `ConnectInfo` (`into_make_service_with_connect_info`).
    .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()))
    // The mismatch doctor, when on: at most 20 diagnoses a second.
    .diagnose_mismatches_per_second(if config.diagnose_mismatches.unwrap_or(demo.is_some()) {
        20
    } else {
        0
    })
    .on_security_event(security_sinks(config.sentry));
    let run_to_end = RunToEnd::new(config.concurrency_limit, config.request_timeout);
    let state = AppState {
        db: db.clone(),
        log: log.clone(),
        max_slow: AppState::max_slow_for(config.request_timeout),
    };
    let webhooks = webhook_routes(&config, twilio, &log, &run_to_end).await?;

    // 3. The admin surface: the inspector page and the API, behind the admin token.
    let (admin_token, admin_token_file) = admin_token(&config)?;
    let inspector = Inspector::new(
        db.clone(),
        local_addr,
        public_base.clone(),
        inspector::test_tenant(demo.is_some(), env_tenant.as_deref()),
    );
    let guard = AdminGuard::new(&admin_token, local_addr, public_base.as_deref());
    let admin = admin_routes(state.clone(), &inspector, guard);

    // 4. One router, and what every route gets.
    let router = webhooks
        .route("/healthz", get(routes::health))
        .with_state(state)
        .merge(admin);
    let router = server_layers(router, &config);

    let startup = Startup {
        database: config.database.to_string(),
        public_base,
        public_url: config.public_url.clone(),
        env_tenant,
        demo,
        tenants: db.tenant_count().await?,
        admin_token_file,
        replay_guard: config.replay_guard.clone(),
    };
    let handles = Handles {
        startup,
        db,
        log,
        writer,
        index_refresh,
        run_to_end,
    };
    Ok((router, handles))
}

/// The tenant `TWILIO_ACCOUNT_SID` is upserted as, if configured; else the demo tenant, made
/// in an empty database.
async fn set_up_tenants(
    db: &Db,
    config: &Config,
) -> Result<(Option<String>, Option<Demo>), BoxError> {
    if let Some((account_sid, token)) = &config.account {
        return Ok((Some(db.upsert_account(account_sid, token).await?), None));
    }
    let demo = if db.tenant_count().await? == 0 {
        Some(demo::create(db, &config.demo_token_file).await?)
    } else {
        demo::existing(db, &config.demo_token_file).await?
    };
    Ok((None, demo))
}

/// Where the URL that signatures are checked against comes from, and the base URL Twilio
/// should call when it is fixed.
fn public_url(
    config: &PublicUrlConfig,
    local_addr: SocketAddr,
) -> Result<(PublicUrl, Option<String>), BoxError> {
    Ok(match config {
        PublicUrlConfig::Fixed(base) => (
            PublicUrl::fixed(base)?,
            Some(base.trim_end_matches('/').to_owned()),
        ),
        PublicUrlConfig::TrustForwarded { proxies, fields } => {
            let mut headers = ForwardedHeaders::new();
            for cidr in proxies {
                headers = headers.trust_proxy(cidr.parse()?);
            }
            for field in fields {
                headers = headers.read(*field);
            }
            (PublicUrl::trust_forwarded(headers), None)
        }
        PublicUrlConfig::Local => {
            let base = format!("http://{}", reachable(local_addr));
            (PublicUrl::fixed(&base)?, Some(base))
        }
    })
}

/// `addr`, with a wildcard address (`0.0.0.0`, `::`) replaced by loopback: where this machine
/// reaches the listener.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// The webhook routes, each verified (and logged) and guarded against replays; each runs to
/// its end even when Twilio hangs up first (see [`run_to_end`]).
///
/// A webhook already processed (a Twilio retry, or a captured request played again) is
/// answered with the first answer without running its handler again; the log shows it as
/// `copy`. Two scopes: the voice routes are guarded per delivery (same signature and
/// same `I-Twilio-Idempotency-Token`), so a menu's `<Redirect>` loop runs each pass; the others
/// per content (same signature). Each has a store of its own, so that replays of a voice
/// webhook with fresh tokens cannot fill the memory store the messages rely on.
async fn webhook_routes<R, E>(
    config: &Config,
    twilio: TwilioSignatureLayer<R, E>,
    log: &LogSender,
    run: &RunToEnd,
) -> Result<Router<AppState>, BoxError>
where
    R: ResolveCredentials<Future = CacheFuture> + Clone + Send + Sync + 'static,
    E: OnSecurityEvent + Clone + Send + Sync + 'static,
{
    let sinks = security_sinks(config.sentry);
    let content_guard = config
        .replay_guard
        .guard(Scope::Content, sinks.clone())
        .await?;
    let delivery_guard = config.replay_guard.guard(Scope::Delivery, sinks).await?;
    // The log notes the key the replay guard of the route's scope claims.
    let verified = |scope: Scope| {
        ServiceBuilder::new()
            .layer(from_fn_with_state(run.clone(), run_to_end::run_to_end))
            // A request id for each webhook (a sane one a proxy sent is kept), in the log, the
            // security events and the answer.
            .layer(map_request(webhook_log::drop_odd_request_id))
            .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(from_fn_with_state(log.clone(), webhook_log::admit))
            .layer(twilio.clone().on_webhook(log.hook(scope)))
    };
    let voice = Router::new()
        .route("/twilio/voice", post(routes::voice))
        .route(routes::VOICE_MENU_PATH, post(routes::voice_menu))
        .route_layer(verified(Scope::Delivery).layer(delivery_guard));
    Ok(Router::new()
        .route("/twilio/sms", post(routes::sms))
        .route("/twilio/status", post(routes::status))
        // Any other path under /twilio/ is verified (and logged) too, then gets 404: a forged
        // request to a made-up webhook path shows up in the log as rejected.
        .route("/twilio/{*rest}", any(routes::unknown_webhook))
        .route_layer(verified(Scope::Content).layer(content_guard))
        .merge(voice))
}

/// The admin token: `ADMIN_TOKEN`, or a random one written to its file (returned too).
fn admin_token(config: &Config) -> Result<(String, Option<PathBuf>), BoxError> {
    if let Some(token) = &config.admin_token {
        admin::check_token(token)?;
        return Ok((token.clone(), None));
    }
    let token = twilio_presets::random_hex(32);
    secret_file::write(&config.admin_token_file, &token, "admin token")?;
    Ok((token, Some(config.admin_token_file.clone())))
}

/// The admin surface: the inspector page and the JSON API it reads, behind the admin token and
/// the Host check (see [`admin`]); the page's shell, which holds no data and asks for the
/// token itself, behind the Host check only.
fn admin_routes(state: AppState, inspector: &Inspector, guard: AdminGuard) -> Router {
    let shell = Inspector::shell().route_layer(from_fn_with_state(guard.clone(), admin::host_only));
    Router::new()
        .route("/api/webhooks", get(routes::webhooks))
        .route("/api/messages/{sid}", get(routes::message))
        .route("/api/calls/{sid}", get(routes::call))
        .route("/metrics", get(prometheus::render))
        .with_state(state)
        .merge(inspector.actions())
        .route_layer(from_fn_with_state(guard, admin::guard))
        .merge(shell)
}

/// What every route gets: the trace span, the request timeout and the concurrency limit (and
/// a Sentry hub per request, when Sentry is on).
fn server_layers(router: Router, config: &Config) -> Router {
    let router = router
        // One limit shared by every route (`ConcurrencyLimitLayer` would make one per route).
        // The timeout (the next, outer layer) counts the wait for a slot too; while it waits a
        // request holds only its connection and headers: no body is read, nothing is logged.
        .layer(GlobalConcurrencyLimitLayer::new(config.concurrency_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        // The span names the path only: a query may hold anything.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::debug_span!("request", method = %request.method(), path = request.uri().path())
        }));
    #[cfg(feature = "sentry")]
    if config.sentry {
        // A hub per request, so that events captured while handling it share its scope.
        return router
            .layer(sentry_tower::SentryHttpLayer::new())
            .layer(sentry_tower::NewSentryLayer::<Request>::new_from_top());
    }
    router
}

/// Serves `router` on `listener` until `shutdown` completes; then lets in-flight requests
/// finish, writes the rest of the webhook log, and closes the database.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    handles: Handles,
    shutdown: F,
) -> Result<(), BoxError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // Every connection is closed; a webhook whose client left first may still be running on
    // its own (`RunToEnd`): wait for it (bounded by the request timeout), so that its last
    // outcome is on the log's queue too.
    handles.run_to_end.wait_for_all().await;
    let written = handles.writer.drain().await;
    tracing::info!(log_entries_written = written, "webhook log drained");
    handles.index_refresh.abort();
    handles.db.close().await;
    served.map_err(|e| format!("the server failed: {e}").into())
}

/// The security-event sinks: the `tracing` log, and Sentry when configured (the library's
/// pair and `Option` sinks).
#[cfg(feature = "sentry")]
fn security_sinks(sentry: bool) -> impl OnSecurityEvent + Clone + Send + Sync + 'static {
    (
        TracingSink::new(),
        sentry.then(tower_twilio::events::SentrySink::new),
    )
}

/// The security-event sinks: the `tracing` log (Sentry needs the `sentry` feature).
#[cfg(not(feature = "sentry"))]
fn security_sinks(_sentry: bool) -> impl OnSecurityEvent + Clone + Send + Sync + 'static {
    TracingSink::new()
}
