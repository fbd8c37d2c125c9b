//! [`PostgresStore`]: the replay guard's store shared by several instances through one
//! PostgreSQL table.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::ConfigError;
use sqlx::{
    PgPool, Row,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{
    Claim, ClaimToken, DeliveryClaim, Record, ReplayKey, ReplayStoreError, ReplayStoreErrorKind,
    StoredAnswer, server::Answer,
};

/// The statements, written for one table name (checked by [`table_name`]: it is written into
/// them as it is).
struct Queries {
    table: Box<str>,
    /// Takes the schema lock, then creates the table and its index on `expires_at` if they do
    /// not exist, in one transaction. One row per key;
    /// `expires_at` is the end of the lease while the key is claimed (`done` false) and the
    /// end of the window once it is done.
    schema: String,
    /// Claims `$1` with token `$2` for `$3` seconds if it is absent or expired (one atomic
    /// `INSERT … ON CONFLICT DO UPDATE … WHERE`); otherwise answers the live row as the
    /// statement found it. No row at all (the key was claimed by another statement after this
    /// one began) is answered as in flight: the guard waits and claims again.
    claim: String,
    /// Claims `$1` with token `$2` for `$3` seconds as `claim` does, counting the delivery in
    /// row `$4` (`deliveries`; a count lasts `$6` seconds from its first) only while it is
    /// under `$5`; answers `crowded` when it is not. One statement.
    claim_delivery: String,
    /// Extends `$1`'s lease to `$3` seconds from now while token `$2` holds a live claim on
    /// it: a lapsed claim is not revived (a copy may have been told it is free).
    renew: String,
    /// Marks `$1` done with answer `$3` for `$4` seconds, whoever holds it now.
    complete: String,
    /// Deletes `$1` only while token `$2` still claims it.
    release: String,
    /// Deletes at most `$1` expired rows, oldest first, skipping rows another statement holds.
    sweep: String,
}

impl Queries {
    fn new(table: &str) -> Self {
        // The index is created in the table's schema; its name is the table's own.
        let index = table.rsplit('.').next().unwrap_or(table);
        Self {
            table: table.into(),
            schema: format!(
                "SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS {table} (
    key BYTEA PRIMARY KEY,
    token BYTEA NOT NULL,
    done BOOLEAN NOT NULL,
    answer BYTEA,
    expires_at TIMESTAMPTZ NOT NULL,
    deliveries INTEGER
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS deliveries INTEGER;
CREATE INDEX IF NOT EXISTS {index}_expires_at ON {table} (expires_at);"
            ),
            claim: format!(
                "WITH claimed AS (
    INSERT INTO {table} AS r (key, token, done, answer, expires_at)
    VALUES ($1, $2, FALSE, NULL, now() + make_interval(secs => $3))
    ON CONFLICT (key) DO UPDATE
        SET token = EXCLUDED.token, done = FALSE, answer = NULL, expires_at = EXCLUDED.expires_at
        WHERE r.expires_at <= now()
    RETURNING TRUE AS claimed, FALSE AS done, NULL::BYTEA AS answer
)
SELECT claimed, done, answer FROM claimed
UNION ALL
SELECT FALSE, r.done, r.answer FROM {table} r
WHERE r.key = $1 AND r.expires_at > now() AND NOT EXISTS (SELECT 1 FROM claimed)"
            ),
            claim_delivery: format!(
                "WITH live AS (
    SELECT r.done, r.answer FROM {table} r WHERE r.key = $1 AND r.expires_at > now()
), counted AS (
    INSERT INTO {table} AS c (key, token, done, answer, expires_at, deliveries)
    SELECT $4, ''::BYTEA, TRUE, NULL, now() + make_interval(secs => $6), 1
    WHERE NOT EXISTS (SELECT 1 FROM live)
    ON CONFLICT (key) DO UPDATE
        SET deliveries = CASE WHEN c.expires_at <= now() THEN 1 ELSE c.deliveries + 1 END,
            expires_at = CASE WHEN c.expires_at <= now() THEN EXCLUDED.expires_at
                              ELSE c.expires_at END
        WHERE c.expires_at <= now() OR c.deliveries < $5
    RETURNING 1
), claimed AS (
    INSERT INTO {table} AS r (key, token, done, answer, expires_at)
    SELECT $1, $2, FALSE, NULL, now() + make_interval(secs => $3)
    WHERE EXISTS (SELECT 1 FROM counted)
    ON CONFLICT (key) DO UPDATE
        SET token = EXCLUDED.token, done = FALSE, answer = NULL, expires_at = EXCLUDED.expires_at
        WHERE r.expires_at <= now()
    RETURNING 1
)
SELECT TRUE AS claimed, FALSE AS done, NULL::BYTEA AS answer, FALSE AS crowded FROM claimed
UNION ALL
SELECT FALSE, l.done, l.answer, FALSE FROM live l
UNION ALL
SELECT FALSE, FALSE, NULL, TRUE
WHERE NOT EXISTS (SELECT 1 FROM live) AND NOT EXISTS (SELECT 1 FROM counted)"
            ),
            renew: format!(
                "UPDATE {table} SET expires_at = now() + make_interval(secs => $3)
WHERE key = $1 AND token = $2 AND NOT done AND expires_at > now()"
            ),
            complete: format!(
                "INSERT INTO {table} (key, token, done, answer, expires_at)
VALUES ($1, $2, TRUE, $3, now() + make_interval(secs => $4))
ON CONFLICT (key) DO UPDATE
    SET token = EXCLUDED.token, done = TRUE, answer = EXCLUDED.answer,
        expires_at = EXCLUDED.expires_at"
            ),
            release: format!("DELETE FROM {table} WHERE key = $1 AND token = $2 AND NOT done"),
            sweep: format!(
                "DELETE FROM {table} WHERE key IN (
    SELECT key FROM {table} WHERE expires_at <= now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
) AND expires_at <= now()"
            ),
        }
    }
}

/// Whether `name` is `table` or `schema.table`, each part lowercase ASCII letters, digits and
/// `_`, not starting with a digit, at most 48 bytes (so that the index name, `_expires_at`
/// longer, fits PostgreSQL's 63).
fn table_name(name: &str) -> bool {
    let part = |part: &str| {
        part.len() <= 48
            && part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

/// Serialises [`PostgresStore::ensure_schema`] across instances starting together
/// (`CREATE … IF NOT EXISTS` alone can collide): an arbitrary constant, "tt-replay".
const SCHEMA_LOCK: i64 = 0x7474_2d72_6570_6c61;

/// The [`ReplayStore`](super::ReplayStore) in a PostgreSQL table, shared by every instance
/// that points at the database, so that a fleet that has a database needs no Redis. Needs the
/// cargo feature `postgres`.
///
/// # The table
///
/// `tower_twilio_replay` (in the connection's `search_path`), or the name given to
/// [`table`](Self::table), created by [`ensure_schema`](Self::ensure_schema), which
/// you call once at start (it is idempotent): nothing is created behind your back. One row per
/// key: the [`ReplayKey`] (`key BYTEA PRIMARY KEY`), the claim's random 128-bit `token`,
/// `done`, the [stored answer](StoredAnswer::to_bytes) once done, and `expires_at`: the end of
/// the lease while claimed, the end of the window once done. A row under a
/// [deliveries key](ReplayKey::deliveries) counts the deliveries of one webhook in
/// `deliveries` (`NULL` in the others) until its `expires_at`.
///
/// # Each operation is one atomic statement
///
/// - claim: `INSERT … ON CONFLICT (key) DO UPDATE … WHERE` the existing row has expired, `RETURNING`
///   whether it claimed; when it did not, the same statement reads the live row (a copy with
///   its answer, or in flight). A row that the statement cannot see (claimed by another
///   statement after this one began) is answered as in flight (the guard waits and claims
///   again), never as new.
/// - claim of a delivery (the delivery scope): the same, with one more upsert in the statement
///   that counts the delivery in the webhook's deliveries row, and claims only while the
///   count is under the bound (else it answers that there are too many).
/// - renew: an `UPDATE` that extends the lease only while our token holds a live claim (a
///   lapsed claim is not revived: a copy may have been told it is free).
/// - complete: an upsert that marks the key done with its answer for the window, whoever
///   holds the claim now (the handler succeeded: that is the truth), as the other stores do.
/// - release: a `DELETE` only while our token still claims the key, so a late release never
///   deletes another request's claim or a done mark.
/// - wait: PostgreSQL does not tell a waiting copy when a claim settles, so a copy sleeps
///   25 ms, doubling up to 400 ms, between claims.
///
/// # Time
///
/// Leases and windows are measured by the **database's clock** (`now()`), never the
/// instances': every instance agrees on when a claim lapses however far their clocks drift.
/// (`tokio::time::pause` does not move it.)
///
/// # Expired rows
///
/// A claim of an expired key takes its row over. Other expired rows are swept in the
/// background: every [`SWEEP_EVERY`](Self::SWEEP_EVERY) claims, one `DELETE` of at most
/// [`SWEEP_LIMIT`](Self::SWEEP_LIMIT) expired rows (oldest first, one sweep at a time per
/// store), off the request path. Call [`sweep`](Self::sweep) yourself (on a timer) if you
/// prefer.
///
/// # Failures
///
/// [`connect`](Self::connect) bounds the wait for a connection by three seconds and each
/// statement by one, so a database that is down turns into
/// [`Unavailable`](ReplayStoreErrorKind::Unavailable) errors quickly rather than into hanging
/// webhooks; pass your own pool to [`new`](Self::new) for other limits or TLS. A row that does
/// not hold what this store wrote is a [`Protocol`](ReplayStoreErrorKind::Protocol) error.
///
/// The statements are written for PostgreSQL's default isolation, `READ COMMITTED`. Under
/// `SERIALIZABLE` (as a database default) concurrent claims of one key may fail with
/// serialization errors, which are store failures.
///
/// ```no_run
/// use tower_twilio::{replay::PostgresStore, replay_guard::ReplayGuardLayer};
///
/// # async fn layer() -> Result<(), tower_twilio::replay::ReplayStoreError> {
/// let store = PostgresStore::connect("postgres://app:secret@127.0.0.1/app").await?;
/// store.ensure_schema().await?;
/// let replay_guard = ReplayGuardLayer::new(store);
/// # let _ = replay_guard;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    queries: Arc<Queries>,
    sweeper: Arc<Sweeper>,
}

/// Counts claims and keeps one sweep at a time.
#[derive(Default)]
struct Sweeper {
    claims: AtomicU32,
    running: AtomicBool,
}

impl PostgresStore {
    /// The default table name.
    pub const DEFAULT_TABLE: &'static str = "tower_twilio_replay";

    /// How many claims trigger one background [sweep](Self::sweep).
    pub const SWEEP_EVERY: u32 = 64;

    /// The most expired rows one [sweep](Self::sweep) deletes.
    pub const SWEEP_LIMIT: u32 = 1000;

    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// with a pool of at most 16 connections, three seconds to get a connection (opening one,
    /// authentication included, under a burst of webhooks) and one second for each statement
    /// (`statement_timeout`). Does not create the table: call
    /// [`ensure_schema`](Self::ensure_schema).
    ///
    /// # Errors
    ///
    /// [`ReplayStoreErrorKind::Unavailable`] if the URL is malformed or the first connection
    /// fails. The error never shows the password.
    pub async fn connect(url: &str) -> Result<Self, ReplayStoreError> {
        let options: PgConnectOptions = url.parse().map_err(store_error)?;
        let options = options.options([("statement_timeout", "1000")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(store_error)?;
        Ok(Self::new(pool))
    }

    /// A store on a pool you built.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queries: Arc::new(Queries::new(Self::DEFAULT_TABLE)),
            sweeper: Arc::default(),
        }
    }

    /// Keeps the keys in table `name` (`table` or `schema.table`; the schema must exist)
    /// instead of [`DEFAULT_TABLE`](Self::DEFAULT_TABLE): to keep several applications apart
    /// in one database.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTableName`] unless each part is lowercase ASCII letters, digits
    /// and `_`, not starting with a digit, at most 48 bytes: the name is written into the SQL
    /// statements as it is, so nothing that would need quoting is accepted.
    pub fn table(mut self, name: &str) -> Result<Self, ConfigError> {
        if !table_name(name) {
            return Err(ConfigError::InvalidTableName {
                name: name.to_owned(),
            });
        }
        self.queries = Arc::new(Queries::new(name));
        Ok(self)
    }

    /// Creates the table and its index on `expires_at` if they do not exist (and adds the
    /// `deliveries` column to a table made before it had one); safe to call from every
    /// instance at start, at the same time (they take turns on an advisory lock).
    ///
    /// With the default table name:
    ///
    /// ```sql
    /// CREATE TABLE IF NOT EXISTS tower_twilio_replay (
    ///     key BYTEA PRIMARY KEY,
    ///     token BYTEA NOT NULL,
    ///     done BOOLEAN NOT NULL,
    ///     answer BYTEA,
    ///     expires_at TIMESTAMPTZ NOT NULL,
    ///     deliveries INTEGER
    /// );
    /// ALTER TABLE tower_twilio_replay ADD COLUMN IF NOT EXISTS deliveries INTEGER;
    /// CREATE INDEX IF NOT EXISTS tower_twilio_replay_expires_at ON tower_twilio_replay (expires_at);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReplayStoreErrorKind::Unavailable`] if the database cannot be reached or refuses
    /// (the user may not create tables: create it as above with a user that may).
    pub async fn ensure_schema(&self) -> Result<(), ReplayStoreError> {
        // One simple-query message: one implicit transaction, which holds the advisory lock
        // until the table and index exist. (Not `pool.begin()`: its future is not `Send`.)
        sqlx::raw_sql(&self.queries.schema)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Deletes at most [`SWEEP_LIMIT`](Self::SWEEP_LIMIT) expired rows; answers how many. The
    /// store runs it on its own every [`SWEEP_EVERY`](Self::SWEEP_EVERY) claims.
    ///
    /// # Errors
    ///
    /// [`ReplayStoreErrorKind::Unavailable`] if the database cannot be reached.
    pub async fn sweep(&self) -> Result<u64, ReplayStoreError> {
        sweep(&self.pool, &self.queries).await
    }

    /// The pool it talks through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Counts a claim, and every [`SWEEP_EVERY`](Self::SWEEP_EVERY) claims starts a sweep on
    /// the current tokio runtime unless one is running.
    fn count_claim(&self) {
        let claims = self.sweeper.claims.fetch_add(1, Ordering::Relaxed);
        if claims % Self::SWEEP_EVERY != Self::SWEEP_EVERY - 1 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeper.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, queries, sweeper) = (
            self.pool.clone(),
            Arc::clone(&self.queries),
            Arc::clone(&self.sweeper),
        );
        runtime.spawn(async move {
            if let Err(error) = sweep(&pool, &queries).await {
                tracing::warn!(
                    target: crate::events::TRACING_TARGET,
                    %error,
                    "could not sweep expired replay keys; the next sweep tries again"
                );
            }
            sweeper.running.store(false, Ordering::Release);
        });
    }
}

async fn sweep(pool: &PgPool, queries: &Queries) -> Result<u64, ReplayStoreError> {
    let deleted = sqlx::query(&queries.sweep)
        .bind(i64::from(PostgresStore::SWEEP_LIMIT))
        .execute(pool)
        .await
        .map_err(store_error)?;
    Ok(deleted.rows_affected())
}

/// Every error the database or the driver raises means the store could not do its work
/// (`Unavailable`), except a row that does not decode as this store wrote it (`Protocol`).
fn store_error(error: sqlx::Error) -> ReplayStoreError {
    let kind = match &error {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => ReplayStoreErrorKind::Protocol,
        _ => ReplayStoreErrorKind::Unavailable,
    };
    ReplayStoreError::with_source(kind, error)
}

fn protocol(what: &'static str) -> ReplayStoreError {
    ReplayStoreError::with_source(ReplayStoreErrorKind::Protocol, what)
}

/// What a claim statement's row (`claimed`, `done`, `answer`) answers.
fn claim_from_row(row: &sqlx::postgres::PgRow, token: ClaimToken) -> Answer<Claim> {
    let claimed: bool = row.try_get(0).map_err(store_error)?;
    let done: bool = row.try_get(1).map_err(store_error)?;
    let answer: Option<Vec<u8>> = row.try_get(2).map_err(store_error)?;
    match (claimed, done, answer) {
        (true, _, _) => Ok(Claim::Claimed(token)),
        (false, false, _) => Ok(Claim::InFlight),
        (false, true, Some(answer)) => StoredAnswer::from_bytes(&answer)
            .map(Claim::Done)
            .ok_or_else(|| protocol("a done row holds no answer the guard wrote")),
        (false, true, None) => Err(protocol("a done row holds no answer")),
    }
}

fn token_bytes(token: ClaimToken) -> Vec<u8> {
    token.get().to_le_bytes().to_vec()
}

/// A duration as the seconds `make_interval` takes; at most about 95 years, which PostgreSQL's
/// timestamps hold whatever the date.
fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64().min(3.0e9)
}

impl super::server::Server for PostgresStore {
    async fn claim(self, key: ReplayKey, token: ClaimToken, lease: Duration) -> Answer<Claim> {
        self.count_claim();
        let row = sqlx::query(&self.queries.claim)
            .bind(key.as_bytes().as_slice())
            .bind(token_bytes(token))
            .bind(seconds(lease))
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        // No row: claimed by another statement after this one began.
        row.map_or(Ok(Claim::InFlight), |row| claim_from_row(&row, token))
    }

    async fn claim_delivery(self, delivery: DeliveryClaim, token: ClaimToken) -> Answer<Claim> {
        self.count_claim();
        let row = sqlx::query(&self.queries.claim_delivery)
            .bind(delivery.key.as_bytes().as_slice())
            .bind(token_bytes(token))
            .bind(seconds(delivery.lease))
            .bind(delivery.deliveries.as_bytes().as_slice())
            .bind(i32::try_from(delivery.max).unwrap_or(i32::MAX))
            .bind(seconds(delivery.period))
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(Claim::InFlight);
        };
        let crowded: bool = row.try_get(3).map_err(store_error)?;
        if crowded {
            return Ok(Claim::TooManyDeliveries);
        }
        claim_from_row(&row, token)
    }

    async fn renew(self, key: ReplayKey, token: ClaimToken, lease: Duration) -> Answer<bool> {
        let renewed = sqlx::query(&self.queries.renew)
            .bind(key.as_bytes().as_slice())
            .bind(token_bytes(token))
            .bind(seconds(lease))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn complete(self, key: ReplayKey, token: ClaimToken, record: Record) -> Answer<()> {
        let statement = sqlx::query(&self.queries.complete)
            .bind(key.as_bytes().as_slice())
            .bind(token_bytes(token))
            .bind(record.answer.to_bytes())
            .bind(seconds(record.window));
        statement.execute(&self.pool).await.map_err(store_error)?;
        Ok(())
    }

    async fn release(self, key: ReplayKey, token: ClaimToken) -> Answer<()> {
        let statement = sqlx::query(&self.queries.release)
            .bind(key.as_bytes().as_slice())
            .bind(token_bytes(token));
        statement.execute(&self.pool).await.map_err(store_error)?;
        Ok(())
    }
}

super::server::replay_store_on_server!(PostgresStore);

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the pool: its connect options hold the password.
        f.debug_struct("PostgresStore")
            .field("table", &self.queries.table)
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_name_that_would_need_quoting_is_refused() {
        for name in [
            "tower_twilio_replay",
            "replay.webhooks",
            "_t1",
            &"t".repeat(48),
        ] {
            assert!(table_name(name), "{name}");
        }
        for name in [
            "",
            "Replay",
            "1replay",
            "replay; DROP TABLE users",
            "a.b.c",
            "a.",
            ".a",
            "\"replay\"",
            "r\u{e9}play",
            &"t".repeat(49),
        ] {
            assert!(!table_name(name), "{name}");
        }
    }

    #[test]
    fn statements_name_the_table_and_the_index_fits() {
        let queries = Queries::new("replay.webhooks");
        assert!(
            queries
                .schema
                .contains("IF NOT EXISTS webhooks_expires_at ON replay.webhooks")
        );
        for statement in [
            &queries.claim,
            &queries.claim_delivery,
            &queries.renew,
            &queries.complete,
            &queries.release,
            &queries.sweep,
        ] {
            assert!(statement.contains("replay.webhooks"), "{statement}");
        }
    }
}
