//! The replay guard's store, chosen at start: `REPLAY_GUARD=memory` (the default), or
//! `REPLAY_GUARD=redis://…` or `postgres://…` for several server processes behind one load
//! balancer.

use std::{fmt, time::Duration};

use tower_twilio::{
    BoxError,
    replay::{
        Claim, ClaimToken, MemoryStore, PostgresStore, RedisFuture, RedisStore, ReplayKey,
        ReplayStore, StoredAnswer,
    },
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

/// The store the server's guard uses: one type for both kinds, so that the router has one
/// type. Its futures are boxed: a webhook costs a database write anyway.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// [`ReplayGuardConfig::Memory`].
    Memory(MemoryStore),
    /// [`ReplayGuardConfig::Redis`].
    Redis(RedisStore),
    /// [`ReplayGuardConfig::Postgres`].
    Postgres(PostgresStore),
}

impl AnyStore {
    /// Opens the configured store (connects to Redis, or to PostgreSQL and creates the
    /// store's table if it does not exist).
    ///
    /// # Errors
    ///
    /// When the server cannot be reached at start, or the table cannot be created.
    pub async fn open(config: &ReplayGuardConfig) -> Result<Self, BoxError> {
        Ok(match config {
            ReplayGuardConfig::Memory => Self::Memory(MemoryStore::default()),
            ReplayGuardConfig::Redis(url) => Self::Redis(
                RedisStore::connect(url)
                    .await
                    .map_err(|error| format!("REPLAY_GUARD ({config}): {error}"))?,
            ),
            ReplayGuardConfig::Postgres(url) => {
                let store = PostgresStore::connect(url)
                    .await
                    .map_err(|error| format!("REPLAY_GUARD ({config}): {error}"))?;
                store
                    .ensure_schema()
                    .await
                    .map_err(|error| format!("REPLAY_GUARD ({config}): {error}"))?;
                Self::Postgres(store)
            }
        })
    }
}

impl ReplayStore for AnyStore {
    type ClaimFuture = RedisFuture<Claim>;
    type RenewFuture = RedisFuture<bool>;
    type CompleteFuture = RedisFuture<()>;
    type ReleaseFuture = RedisFuture<()>;
    type WaitFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

    fn claim(&self, key: &ReplayKey, lease: Duration) -> Self::ClaimFuture {
        match self {
            Self::Memory(store) => Box::pin(store.claim(key, lease)),
            Self::Redis(store) => store.claim(key, lease),
            Self::Postgres(store) => store.claim(key, lease),
        }
    }

    fn renew(&self, key: &ReplayKey, token: ClaimToken, lease: Duration) -> Self::RenewFuture {
        match self {
            Self::Memory(store) => Box::pin(store.renew(key, token, lease)),
            Self::Redis(store) => store.renew(key, token, lease),
            Self::Postgres(store) => store.renew(key, token, lease),
        }
    }

    fn complete(
        &self,
        key: &ReplayKey,
        token: ClaimToken,
        answer: StoredAnswer,
        window: Duration,
    ) -> Self::CompleteFuture {
        match self {
            Self::Memory(store) => Box::pin(store.complete(key, token, answer, window)),
            Self::Redis(store) => store.complete(key, token, answer, window),
            Self::Postgres(store) => store.complete(key, token, answer, window),
        }
    }

    fn wait(&self, key: &ReplayKey, attempt: u32) -> Self::WaitFuture {
        match self {
            Self::Memory(store) => Box::pin(store.wait(key, attempt)),
            Self::Redis(store) => Box::pin(store.wait(key, attempt)),
            Self::Postgres(store) => Box::pin(store.wait(key, attempt)),
        }
    }

    fn release(&self, key: &ReplayKey, token: ClaimToken) -> Self::ReleaseFuture {
        match self {
            Self::Memory(store) => Box::pin(store.release(key, token)),
            Self::Redis(store) => store.release(key, token),
            Self::Postgres(store) => store.release(key, token),
        }
    }

    fn release_detached(&self, key: &ReplayKey, token: ClaimToken) {
        match self {
            Self::Memory(store) => store.release_detached(key, token),
            Self::Redis(store) => store.release_detached(key, token),
            Self::Postgres(store) => store.release_detached(key, token),
        }
    }
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
