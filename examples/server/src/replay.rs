//! The replay guard's store, chosen at start: `REPLAY_GUARD=memory` (the default), or
//! `REPLAY_GUARD=redis://…` or `postgres://…` for several server processes behind one load
//! balancer.

use std::fmt;

use tower::util::Either;
use tower_twilio::{
    BoxError,
    events::OnSecurityEvent,
    replay::{MemoryStore, PostgresStore, RedisStore, ReplayStoreError},
    replay_guard::{ReplayGuardLayer, Scope},
};

/// Where the replay guard keeps what it has seen. `Debug` and `Display` hide a password.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ReplayGuardConfig {
    /// In this process (`memory`): enough for one server.
    #[default]
    Memory,
    /// A Redis server (`redis://…` or `rediss://…`), shared by every server process.
    Redis(String),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), shared by every server
    /// process; the store creates its table there at start.
    Postgres(String),
}

impl ReplayGuardConfig {
    /// Parses `memory`, a `redis://` / `rediss://` URL or a `postgres://` / `postgresql://` URL.
    ///
    /// # Errors
    ///
    /// Anything else, with what is accepted (the value is not repeated: it may hold a password).
    pub fn parse(value: &str) -> Result<Self, BoxError> {
        if value == "memory" {
            Ok(Self::Memory)
        } else if value.starts_with("redis://") || value.starts_with("rediss://") {
            Ok(Self::Redis(value.to_owned()))
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Ok(Self::Postgres(value.to_owned()))
        } else {
            Err("REPLAY_GUARD must be `memory`, a redis:// URL or a postgres:// URL".into())
        }
    }
}

impl fmt::Display for ReplayGuardConfig {
    /// `memory`, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.pad("memory"),
            Self::Redis(url) | Self::Postgres(url) => match url::Url::parse(url) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("redacted"));
                    }
                    f.pad(url.as_str())
                }
                Err(_) => f.pad("(unparsable URL)"),
            },
        }
    }
}

impl fmt::Debug for ReplayGuardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayGuardConfig({self})")
    }
}

/// The replay guard on the configured store: a tower [`Either`] of the guards on each kind of
/// store, so that the router has one type whichever is configured.
pub type AnyReplayGuardLayer = Either<
    ReplayGuardLayer<MemoryStore>,
    Either<ReplayGuardLayer<RedisStore>, ReplayGuardLayer<PostgresStore>>,
>;

impl ReplayGuardConfig {
    /// The replay guard in `scope`, reporting to `sink`, on a store of its own of the
    /// configured kind: connected to Redis, or to PostgreSQL with the store's table created if
    /// it does not exist.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached at start, or the table cannot be created.
    pub async fn guard<E>(&self, scope: Scope, sink: E) -> Result<AnyReplayGuardLayer, BoxError>
    where
        E: OnSecurityEvent + Send + Sync + 'static,
    {
        let failed = |error: ReplayStoreError| format!("REPLAY_GUARD ({self}): {error}");
        Ok(match self {
            Self::Memory => Either::Left(configured(MemoryStore::default(), scope, sink)),
            Self::Redis(url) => {
                let store = RedisStore::connect(url).await.map_err(failed)?;
                Either::Right(Either::Left(configured(store, scope, sink)))
            }
            Self::Postgres(url) => {
                let store = PostgresStore::connect(url).await.map_err(failed)?;
                store.ensure_schema().await.map_err(failed)?;
                Either::Right(Either::Right(configured(store, scope, sink)))
            }
        })
    }
}

/// The guard on `store` in `scope`, reporting to `sink`.
fn configured<St, E>(store: St, scope: Scope, sink: E) -> ReplayGuardLayer<St>
where
    E: OnSecurityEvent + Send + Sync + 'static,
{
    ReplayGuardLayer::new(store)
        .scope(scope)
        .on_security_event(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_memory_or_a_url_and_never_shows_a_password() {
        assert_eq!(
            ReplayGuardConfig::parse("memory").unwrap(),
            ReplayGuardConfig::Memory
        );
        let redis = ReplayGuardConfig::parse("redis://:s3cret@10.0.0.5:6379/2").unwrap();
        assert_eq!(redis.to_string(), "redis://:redacted@10.0.0.5:6379/2");
        assert!(!format!("{redis} {redis:?}").contains("s3cret"));
        let postgres = ReplayGuardConfig::parse("postgres://app:s3cret@10.0.0.6/app").unwrap();
        assert_eq!(
            postgres,
            ReplayGuardConfig::Postgres("postgres://app:s3cret@10.0.0.6/app".to_owned())
        );
        assert_eq!(postgres.to_string(), "postgres://app:redacted@10.0.0.6/app");
        assert!(!format!("{postgres} {postgres:?}").contains("s3cret"));
        assert!(matches!(
            ReplayGuardConfig::parse("postgresql://10.0.0.6/app"),
            Ok(ReplayGuardConfig::Postgres(_))
        ));
        for bad in ["", "Memory", "mysql://x", "s3cret"] {
            let error = ReplayGuardConfig::parse(bad).unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
