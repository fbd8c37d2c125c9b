//! The command line: the server's options (each also an environment variable) and the `tenant`
//! subcommands, and the checks that turn them into a [`Config`] before anything starts.

use std::{
    io::Read,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use tower_twilio::{
    BoxError, PublicUrl,
    public_url::{ForwardedField, ForwardedHeaders, ProxyNetwork},
    signature::Algorithm,
};
use tower_twilio_example_server::{
    Config, PublicUrlConfig, db::Location, replay::ReplayGuardConfig, webhook_log::Retention,
};

/// Example server for Twilio webhooks verified by tower-twilio.
#[derive(Parser)]
#[command(name = "server", version)]
pub(crate) struct Cli {
    /// SQLite file (created with its schema on first run) or postgres:// URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "twilio-webhooks.db",
        hide_env_values = true,
        global = true
    )]
    pub(crate) database_url: String,

    /// Log format on standard error (`RUST_LOG` sets the filter; default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub(crate) log_format: LogFormat,

    #[command(flatten)]
    pub(crate) serve: ServeArgs,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub(crate) port: u16,

    /// Address to listen on.
    #[arg(long = "bind", env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub(crate) bind: IpAddr,

    /// The base URL Twilio calls (scheme, host, optional port and path prefix), exactly as in
    /// the Twilio console, e.g. https://abc123.ngrok.app. Default: http://<bind>:<port>.
    #[arg(long, env = "PUBLIC_URL", conflicts_with = "trust_proxy")]
    pub(crate) public_url: Option<String>,

    /// Trust `Forwarded`/`X-Forwarded-*` from these proxy networks (comma-separated CIDRs or
    /// addresses) to rebuild the public URL, instead of a fixed PUBLIC_URL.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub(crate) trust_proxy: Vec<String>,

    /// The forwarded fields those proxies set on every request (comma-separated):
    /// forwarded-proto, forwarded-host, forwarded-for, x-forwarded-proto, x-forwarded-host,
    /// x-forwarded-port, x-forwarded-prefix, x-forwarded-for. Any other field is ignored, even
    /// from a trusted proxy. See the proxy table in docs/TWILIO_WEBHOOK_SETUP.md.
    #[arg(
        long,
        env = "TRUSTED_FORWARDED_FIELDS",
        value_delimiter = ',',
        default_value = "x-forwarded-proto",
        requires = "trust_proxy"
    )]
    pub(crate) trust_forwarded_field: Vec<String>,

    /// Account SID to register at start, with TWILIO_AUTH_TOKEN.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub(crate) account_sid: Option<String>,

    /// Auth token of TWILIO_ACCOUNT_SID (prefer the environment variable: command lines are
    /// visible to other users).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,

    /// Sentry DSN: capture critical security events (needs the crate feature `sentry`).
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    pub(crate) sentry_dsn: Option<String>,

    /// The admin token the inspector and /api/* require (at least 16 letters, digits or
    /// `-._~`; never printed). Default: a random one, written to .twilio-admin-token (mode
    /// 0600) beside the SQLite file.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,

    /// The webhook log keeps the newest this many rows.
    #[arg(long, env = "LOG_MAX_ROWS", default_value_t = Retention::DEFAULT.max_rows, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) log_max_rows: u32,

    /// The webhook log (and the message and call histories) keep this many days.
    #[arg(long, env = "LOG_MAX_AGE_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub(crate) log_max_age_days: u32,

    /// Requests handled at once.
    #[arg(long, default_value_t = tower_twilio_example_server::DEFAULT_CONCURRENCY_LIMIT, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) concurrency_limit: u32,

    /// Seconds a request may take before it is answered with 503.
    #[arg(long, default_value_t = tower_twilio_example_server::DEFAULT_REQUEST_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) request_timeout_secs: u64,

    /// On a signature mismatch, look for the URL the signature was made for and log it with
    /// the PUBLIC_URL to set (the verdict stays 403). Default: on in demo mode, off otherwise.
    #[arg(long, env = "DIAGNOSE_MISMATCHES")]
    pub(crate) diagnose_mismatches: Option<bool>,

    /// Seconds a tenant's secrets stay cached (a rotation takes effect within this time).
    #[arg(long, default_value_t = tower_twilio_example_server::DEFAULT_CREDENTIAL_CACHE_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) credential_cache_ttl_secs: u64,

    /// Where the replay guard keeps the webhooks it has processed, so that a Twilio retry or a
    /// replayed request does not run a handler twice: `memory` (this process), or a redis:// or
    /// postgres:// URL shared by every server process behind one load balancer.
    #[arg(
        long,
        env = "REPLAY_GUARD",
        default_value = "memory",
        hide_env_values = true
    )]
    pub(crate) replay_guard: String,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Manage tenants and their secrets (never printed).
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Subcommand)]
pub(crate) enum TenantCommand {
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
    /// End a rotation: forget the secondary (old) token, once Twilio signs with the new one.
    RetireSecondary {
        /// Tenant id.
        #[arg(long)]
        id: String,
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
pub(crate) struct TokenArgs {
    /// File holding the auth token (`-` for standard input).
    #[arg(long)]
    pub(crate) auth_token_file: Option<PathBuf>,
    /// The auth token (prefer --auth-token-file or the environment variable).
    #[arg(
        long,
        env = "TWILIO_AUTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "auth_token_file"
    )]
    pub(crate) auth_token: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum AlgorithmArg {
    #[value(name = "HMAC_SHA1")]
    HmacSha1,
    #[value(name = "HMAC_SHA256")]
    HmacSha256,
}

impl AlgorithmArg {
    pub(crate) const fn algorithm(self) -> Algorithm {
        match self {
            Self::HmacSha1 => Algorithm::HmacSha1,
            Self::HmacSha256 => Algorithm::HmacSha256,
        }
    }
}

/// Checks the options and turns them into a [`Config`]: every mistake is reported here, before
/// anything starts.
pub(crate) fn server_config(location: Location, args: &ServeArgs) -> Result<Config, BoxError> {
    let mut config = Config::new(location);
    config.public_url = match (&args.public_url, args.trust_proxy.is_empty()) {
        (Some(url), _) => {
            PublicUrl::fixed(url).map_err(|e| format!("PUBLIC_URL: {e}"))?;
            PublicUrlConfig::Fixed(url.clone())
        }
        (None, false) => {
            let mut headers = ForwardedHeaders::new();
            for cidr in &args.trust_proxy {
                let network = cidr
                    .parse::<ProxyNetwork>()
                    .map_err(|e| format!("TRUSTED_PROXIES: {e}"))?;
                headers = headers.trust_proxy(network);
            }
            let fields = args
                .trust_forwarded_field
                .iter()
                .map(|name| name.parse::<ForwardedField>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("TRUSTED_FORWARDED_FIELDS: {e}"))?;
            PublicUrlConfig::TrustForwarded {
                proxies: args
                    .trust_proxy
                    .iter()
                    .map(|c| c.trim().to_owned())
                    .collect(),
                fields,
            }
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
    if let Some(token) = &args.admin_token {
        tower_twilio_example_server::admin::check_token(token)?;
    }
    config.admin_token.clone_from(&args.admin_token);
    config.retention = Retention {
        max_rows: args.log_max_rows,
        max_age: Duration::from_secs(u64::from(args.log_max_age_days) * 86_400),
    };
    config.concurrency_limit = args.concurrency_limit as usize;
    config.request_timeout = Duration::from_secs(args.request_timeout_secs);
    config.credential_cache_ttl = Duration::from_secs(args.credential_cache_ttl_secs);
    config.diagnose_mismatches = args.diagnose_mismatches;
    config.replay_guard = ReplayGuardConfig::parse(&args.replay_guard)?;
    Ok(config)
}

impl TokenArgs {
    pub(crate) fn read(&self) -> Result<String, BoxError> {
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

pub(crate) fn read_secret(path: &Path, what: &str) -> Result<String, BoxError> {
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

pub(crate) fn check_token(token: &str) -> Result<(), BoxError> {
    if token.trim().is_empty() {
        return Err("the auth token is empty".into());
    }
    Ok(())
}

/// The rule the layer applies to every request ([`tower_twilio::account::is_account_sid`]): a
/// tenant stored under any other spelling is one no request could reach.
pub(crate) fn check_account_sid(sid: &str) -> Result<(), BoxError> {
    if tower_twilio::account::is_account_sid(sid) {
        Ok(())
    } else {
        Err(format!("{sid:?} is not an AccountSid: expected AC followed by 32 hex digits").into())
    }
}

pub(crate) fn check_tenant_id(id: &str) -> Result<(), BoxError> {
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

#[cfg(test)]
mod tests {
    use super::check_account_sid;

    #[test]
    fn an_account_sid_is_checked_as_the_layer_checks_it() {
        assert!(check_account_sid("AC0123456789abcdef0123456789ABCDEF").is_ok());
        // Letters past `f` passed the server's old rule; the layer refuses every request
        // naming such an account, so the tenant could never be reached.
        for bad in [
            "ACghijklmnopqrstuvwxyz0123456789ab",
            "AC0123",
            "SK0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_account_sid(bad).is_err(), "{bad}");
        }
    }
}
