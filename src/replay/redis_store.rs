//! [`RedisStore`]: the replay guard's store shared by several instances through Redis.

use std::{
    fmt,
    sync::{Arc, LazyLock},
    time::Duration,
};

use redis::{
    AsyncCommands, Client, ExistenceCheck, Script, SetExpiry, SetOptions, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{
    Claim, ClaimToken, DeliveryClaim, Record, ReplayKey, ReplayStoreError, ReplayStoreErrorKind,
    StoredAnswer, server::Answer,
};

/// The first byte of a key that is done; the [`StoredAnswer`] follows.
const DONE: u8 = b'd';

/// Extends `KEYS[1]`'s expiry to `ARGV[2]` milliseconds only if it still holds `ARGV[1]`
/// (our claim), atomically.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
         return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

/// Claims `KEYS[1]`, one delivery of a webhook, counting it under `KEYS[2]`, atomically:
/// answers `KEYS[1]`'s value if it exists; else `0` when `KEYS[2]` counts `ARGV[3]`
/// deliveries already; else counts one more (a new count expires in `ARGV[4]` ms), sets
/// `KEYS[1]` to `ARGV[1]` for `ARGV[2]` ms and answers `1`.
static CLAIM_DELIVERY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local current = redis.call('GET', KEYS[1]) \
         if current then return current end \
         if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[3]) then return 0 end \
         if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end \
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
         return 1",
    )
});

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]` (our claim), atomically.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    )
});

/// The [`ReplayStore`](super::ReplayStore) on a Redis (or Valkey) server, shared by every
/// instance that points at it, so a webhook reaches one handler once however many servers sit
/// behind the load balancer. Needs the cargo feature `redis`.
///
/// Each key is `PREFIX` ‖ the [`ReplayKey`] in hex (`tower-twilio:replay:` by default), and
/// holds `c:` ‖ a random 128-bit claim token while claimed, or `d` ‖ the
/// [stored answer](StoredAnswer::to_bytes) once done. Every operation is one atomic command:
///
/// - claim: `SET key c:TOKEN NX PX lease`. Only when the key exists already, a `GET` tells a
///   copy (`d…`, with the answer) from one in flight; the key vanishing in between is
///   answered as in flight (the guard waits and claims again), never as new.
/// - claim of a delivery (the delivery scope): a Lua script that answers the key's value if it
///   exists, else counts the delivery under the webhook's
///   [deliveries key](ReplayKey::deliveries) (an `INCR`, the count expiring one period after
///   it began) and claims the key only while the count is under the bound: one round trip.
/// - renew: a Lua script that sets the expiry to the lease again only while the key holds our
///   token.
/// - complete: `SET key d… PX window`.
/// - release: a Lua script that deletes the key only while it holds our token, so a late
///   release never deletes another request's claim or a done mark.
/// - wait: Redis cannot tell a waiting copy when a claim settles, so a copy sleeps 25 ms,
///   doubling up to 400 ms, between claims.
///
/// It talks through a [`ConnectionManager`], which reconnects on its own after the server
/// comes back. [`connect`](Self::connect) bounds every command by one second and the
/// reconnection by two quick retries, so a dead server turns into errors (and, with the
/// default fail-closed guard, 503s) quickly rather than into hanging webhooks. Pass your own
/// manager to [`new`](Self::new) for other limits, TLS or a Sentinel setup.
///
/// Where the Redis server loses its data (restart without persistence, failover to a replica
/// that had not received the last writes, eviction under `maxmemory` with an `allkeys-*`
/// policy), it forgets what it held, and a replay within the window is accepted again. Run it
/// with `maxmemory-policy noeviction` (or `volatile-ttl`; every key here has a TTL) and
/// persistence if that matters.
///
/// ```no_run
/// use tower_twilio::{Credentials, replay::RedisStore, replay_guard::ReplayGuardLayer};
///
/// # async fn layer(credentials: Credentials) -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// let replay_guard = ReplayGuardLayer::new(store);
/// # let _ = replay_guard;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
}

impl RedisStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "tower-twilio:replay:";

    /// Connects to the server at `url` (`redis://[user:password@]host:port/db`, or `rediss://`
    /// with a TLS feature of the `redis` crate enabled), with one second for each command and
    /// each connection attempt and two retries when reconnecting.
    ///
    /// # Errors
    ///
    /// [`ReplayStoreErrorKind::Unavailable`] if the URL is malformed or the first connection
    /// fails. The error never shows the password.
    pub async fn connect(url: &str) -> Result<Self, ReplayStoreError> {
        let client = Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(Self::new(connection))
    }

    /// A store on a connection manager you built.
    pub fn new(connection: ConnectionManager) -> Self {
        Self {
            connection,
            prefix: Arc::from(Self::DEFAULT_PREFIX),
        }
    }

    /// Uses `prefix` in front of every key instead of [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX):
    /// to keep several applications apart on one server.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    fn key(&self, key: &ReplayKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }
}

fn claim_value(token: ClaimToken) -> String {
    format!("c:{:032x}", token.get())
}

/// What a claim answers for a key that holds `current`: a copy (`d…`, with the answer), or one
/// in flight.
fn existing(current: &[u8]) -> Result<Claim, ReplayStoreError> {
    match current {
        [DONE, answer @ ..] => StoredAnswer::from_bytes(answer)
            .map(Claim::Done)
            .ok_or_else(|| {
                ReplayStoreError::with_source(
                    ReplayStoreErrorKind::Protocol,
                    "a done key holds no answer the guard wrote",
                )
            }),
        // Claimed by someone else.
        _ => Ok(Claim::InFlight),
    }
}

fn unavailable(error: redis::RedisError) -> ReplayStoreError {
    ReplayStoreError::with_source(ReplayStoreErrorKind::Unavailable, error)
}

fn millis(duration: Duration) -> u64 {
    // Redis refuses PX 0; a sub-millisecond duration is one millisecond.
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl super::server::Server for RedisStore {
    async fn claim(mut self, key: ReplayKey, token: ClaimToken, lease: Duration) -> Answer<Claim> {
        let key = self.key(&key);
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(lease)));
        let set: Value = self
            .connection
            .set_options(&key, claim_value(token), options)
            .await
            .map_err(unavailable)?;
        match set {
            Value::Okay => return Ok(Claim::Claimed(token)),
            Value::Nil => {}
            other => {
                let what = format!("SET NX answered {other:?}");
                return Err(ReplayStoreError::with_source(
                    ReplayStoreErrorKind::Protocol,
                    what,
                ));
            }
        }
        let current: Option<Vec<u8>> = self.connection.get(&key).await.map_err(unavailable)?;
        match current {
            Some(current) => existing(&current),
            // Gone between the two commands: claim again.
            None => Ok(Claim::InFlight),
        }
    }

    async fn claim_delivery(mut self, delivery: DeliveryClaim, token: ClaimToken) -> Answer<Claim> {
        let claimed: Value = CLAIM_DELIVERY
            .key(self.key(&delivery.key))
            .key(self.key(&delivery.deliveries))
            .arg(claim_value(token))
            .arg(millis(delivery.lease))
            .arg(delivery.max)
            .arg(millis(delivery.period))
            .invoke_async(&mut self.connection)
            .await
            .map_err(unavailable)?;
        match claimed {
            Value::Int(1) => Ok(Claim::Claimed(token)),
            Value::Int(0) => Ok(Claim::TooManyDeliveries),
            Value::BulkString(current) => existing(&current),
            other => Err(ReplayStoreError::with_source(
                ReplayStoreErrorKind::Protocol,
                format!("the delivery claim answered {other:?}"),
            )),
        }
    }

    async fn renew(mut self, key: ReplayKey, token: ClaimToken, lease: Duration) -> Answer<bool> {
        let renewed: i64 = RENEW
            .key(self.key(&key))
            .arg(claim_value(token))
            .arg(millis(lease))
            .invoke_async(&mut self.connection)
            .await
            .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    /// Whoever holds the claim: the token is not checked.
    async fn complete(mut self, key: ReplayKey, _: ClaimToken, record: Record) -> Answer<()> {
        let mut value = vec![DONE];
        value.extend_from_slice(&record.answer.to_bytes());
        let key = self.key(&key);
        let () = self
            .connection
            .pset_ex(&key, value, millis(record.window))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release(mut self, key: ReplayKey, token: ClaimToken) -> Answer<()> {
        let _deleted: i64 = RELEASE
            .key(self.key(&key))
            .arg(claim_value(token))
            .invoke_async(&mut self.connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

super::server::replay_store_on_server!(RedisStore);

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connection: its client knows the URL, password included.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
