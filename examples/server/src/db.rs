//! Storage: an SQLite file (the default) or PostgreSQL, through sqlx's `Any` driver so that one
//! set of queries serves both. Only the schema differs (auto-increment keys): it is made by
//! the migrations in `migrations/sqlite` and `migrations/postgres`, which [`Db::open`] applies
//! (`sqlx::migrate!`), so that a database of an earlier version is upgraded at start.
//!
//! Tables:
//!
//! | table | what |
//! | --- | --- |
//! | `tenants` | every tenant (id, name); *legacy* credentials: `account_sid`, `auth_token` |
//! | `tenant_settings` | *preferred* credentials: `account_sid`, `primary_auth_token`, `secondary_auth_token` |
//! | `shared_keys` | SharedKey secrets by key id, with the algorithm the Webhook Setting uses |
//! | `webhook_log` | one row per webhook, updated through its outcomes; pruned by rows and age |
//! | `message_history` | every message status callback, per tenant and `MessageSid`, in the order received |
//! | `call_history` | every call and recording status callback, per tenant and `CallSid` |
//! | `credential_changes` | one counter, moved by every change to the three tables above |
//! | `_sqlx_migrations` | the migrations applied (sqlx's own table) |
//!
//! Secrets are stored as they are, as a demo server may. A production service keeps them
//! encrypted or in a secret manager and gives the resolver a way to read them. The SQLite file
//! and its journal, WAL and shared-memory files are the owner's only (mode 0600), see
//! [`secret_file::prepare_sqlite`](crate::secret_file::prepare_sqlite).

use std::{
    borrow::Cow,
    fmt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{
    AnyConnection, AnyPool, Arguments, Executor,
    any::{AnyArguments, AnyPoolOptions},
    error::BoxDynError,
    migrate::{Migrate, MigrateError, Migration, Migrator},
};
use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};
use tower_twilio::{BoxError, events::log::WebhookOutcome};

/// Where the data lives, from `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file, created with its schema if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Location {
    /// Reads `DATABASE_URL`: a `postgres://` or `postgresql://` URL, a `sqlite:` URL, or a plain
    /// file path (SQLite).
    pub fn parse(value: &str) -> Result<Self, BoxError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(
                "DATABASE_URL is empty: give an SQLite file path or a postgres:// URL".into(),
            );
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            url::Url::parse(value)
                .map_err(|e| format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(value.to_owned()));
        }
        if let Some(path) = value.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path.contains(":memory:") {
                return Err(
                    "DATABASE_URL must name an SQLite file, not an in-memory database".into(),
                );
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(format!(
                "DATABASE_URL: unsupported scheme {scheme:?}; use a postgres:// URL or an SQLite file path"
            )
            .into());
        }
        Ok(Self::Sqlite(PathBuf::from(value)))
    }

    /// Where the demo token file goes: beside the SQLite file, else in the current directory.
    pub fn demo_token_file(&self) -> PathBuf {
        self.beside(".twilio-demo-token")
    }

    /// Where a random admin token goes: beside the SQLite file, else in the current directory.
    pub fn admin_token_file(&self) -> PathBuf {
        self.beside(".twilio-admin-token")
    }

    fn beside(&self, name: &str) -> PathBuf {
        match self {
            Self::Sqlite(path) => match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
                _ => PathBuf::from(name),
            },
            Self::Postgres(_) => PathBuf::from(name),
        }
    }

    fn connect_url(&self) -> String {
        match self {
            // `sqlite:` without `//`, so that the path is not read as a (lower-cased) host.
            Self::Sqlite(path) => format!(
                "sqlite:{}?mode=rwc",
                percent_encoding::utf8_percent_encode(&path.to_string_lossy(), PATH_ESCAPES)
            ),
            Self::Postgres(url) => url.clone(),
        }
    }
}

/// What SQLite's URL parser would misread in a path.
const PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'#');

/// Shows the location without a password.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite file {}", path.display()),
            Self::Postgres(url) => match url::Url::parse(url) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    write!(f, "PostgreSQL {url}")
                }
                Err(_) => f.write_str("PostgreSQL"),
            },
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool and the backend behind it. Cheap to clone; clones share the pool and
/// the count of credential lookups.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    credential_queries: Arc<AtomicU64>,
}

/// The schema's changes, in order, for each backend: `migrations/sqlite` and
/// `migrations/postgres` differ only in the auto-increment key.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    /// Connects, creating the SQLite file and the schema when missing.
    pub async fn open(location: &Location) -> Result<Self, BoxError> {
        sqlx::any::install_default_drivers();
        // The tokens are in the file in plain text: it is the owner's only, from the start.
        if let Location::Sqlite(path) = location {
            crate::secret_file::prepare_sqlite(path)?;
        }
        let backend = match location {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        };
        let pool = AnyPoolOptions::new()
            // SQLite has one writer at a time anyway; a few connections let reads go on.
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        // Durable at each transaction end in WAL mode, without an fsync per write.
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&location.connect_url())
            .await
            .map_err(|e| format!("cannot open the database ({location}): {e}"))?;
        let db = Self {
            pool,
            backend,
            credential_queries: Arc::default(),
        };
        db.migrate()
            .await
            .map_err(|e| format!("cannot create or upgrade the schema in {location}: {e}"))?;
        // Now that the WAL and shared-memory files exist: they took the database's mode.
        if let Location::Sqlite(path) = location {
            crate::secret_file::check_sqlite(path)?;
        }
        Ok(db)
    }

    /// Brings the schema up to date: applies the migrations this database has not had yet.
    async fn migrate(&self) -> Result<(), MigrateError> {
        if self.backend == Backend::Sqlite {
            // Readers (the API) do not block the log writer, and vice versa. Persistent.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&self.pool)
                .await?;
        }
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let mut conn = self.pool.acquire().await?;
        // One server at a time (PostgreSQL's advisory lock; SQLite locks the file itself).
        conn.lock().await?;
        let migrated = async {
            self.adopt_schema_version(&mut conn, migrator).await?;
            migrator.run(&mut *conn).await
        }
        .await;
        conn.unlock().await?;
        migrated
    }

    /// A database made before the schema moved to `migrations/` counts the changes it has had
    /// in a table `schema_version`; they are the first migrations, in the same order. Those
    /// are recorded as applied (with their checksums, not run again), and the old table goes.
    async fn adopt_schema_version(
        &self,
        conn: &mut AnyConnection,
        migrator: &Migrator,
    ) -> Result<(), MigrateError> {
        let exists = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'schema_version'"
            }
        };
        let exists: i64 = sqlx::query_scalar(exists).fetch_one(&mut *conn).await?;
        if exists == 0 {
            return Ok(());
        }
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *conn)
            .await?;
        conn.ensure_migrations_table().await?;
        let applied: Vec<i64> = conn
            .list_applied_migrations()
            .await?
            .iter()
            .map(|applied| applied.version)
            .collect();
        for migration in migrator.iter() {
            if migration.version <= version.unwrap_or(0) && !applied.contains(&migration.version) {
                let recorded = Migration {
                    sql: Cow::Borrowed(""),
                    ..migration.clone()
                };
                conn.apply(&recorded).await?;
            }
        }
        conn.execute("DROP TABLE schema_version").await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(drop)
    }

    // ---- credentials -------------------------------------------------------------------

    /// How many credential lookups ([`preferred_tokens`](Self::preferred_tokens),
    /// [`legacy_token`](Self::legacy_token), [`shared_key`](Self::shared_key)) this handle and
    /// its clones have sent to the database.
    pub fn credential_queries(&self) -> u64 {
        self.credential_queries.load(Ordering::Relaxed)
    }

    fn count_credential_query(&self) {
        self.credential_queries.fetch_add(1, Ordering::Relaxed);
    }

    /// The preferred source: `tenant_settings` by `AccountSid`.
    pub async fn preferred_tokens(
        &self,
        account_sid: &str,
    ) -> Result<Option<TenantTokens>, sqlx::Error> {
        self.count_credential_query();
        sqlx::query_as(
            "SELECT tenant_id, primary_auth_token AS primary_token,
                    secondary_auth_token AS secondary_token
             FROM tenant_settings WHERE account_sid = $1",
        )
        .bind(account_sid)
        .fetch_optional(&self.pool)
        .await
    }

    /// The legacy source: the token on the `tenants` row.
    pub async fn legacy_token(
        &self,
        account_sid: &str,
    ) -> Result<Option<TenantTokens>, sqlx::Error> {
        self.count_credential_query();
        sqlx::query_as(
            "SELECT id AS tenant_id, auth_token AS primary_token FROM tenants
             WHERE account_sid = $1 AND auth_token IS NOT NULL",
        )
        .bind(account_sid)
        .fetch_optional(&self.pool)
        .await
    }

    /// A SharedKey's tenant, the tenant's account, and the secret, by key id. A SharedKey
    /// belongs to an account: the tenant's `AccountSid` (preferred source first), without
    /// which the layer lets the key verify nothing.
    pub async fn shared_key(&self, key_id: &str) -> Result<Option<SharedKeySecret>, sqlx::Error> {
        self.count_credential_query();
        sqlx::query_as(
            "SELECT k.tenant_id, k.secret, COALESCE(s.account_sid, t.account_sid) AS account_sid
             FROM shared_keys k
             JOIN tenants t ON t.id = k.tenant_id
             LEFT JOIN tenant_settings s ON s.tenant_id = k.tenant_id
             WHERE k.key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// The `credential_changes` counter: it moves whenever a tenant or SharedKey is added or
    /// a token rotated, by this process or another.
    pub async fn credential_changes(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT MAX(version) FROM credential_changes")
            .fetch_one(&self.pool)
            .await
            .map(|version: Option<i64>| version.unwrap_or(0))
    }

    /// Every `AccountSid` (from either source) and every SharedKey id stored.
    pub async fn credential_ids(&self) -> Result<CredentialIds, sqlx::Error> {
        let account_sids = sqlx::query_scalar(
            "SELECT account_sid FROM tenants WHERE account_sid IS NOT NULL
             UNION SELECT account_sid FROM tenant_settings",
        )
        .fetch_all(&self.pool)
        .await?;
        let shared_key_ids = sqlx::query_scalar("SELECT key_id FROM shared_keys")
            .fetch_all(&self.pool)
            .await?;
        Ok(CredentialIds {
            account_sids,
            shared_key_ids,
        })
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    // ---- tenants -----------------------------------------------------------------------

    /// How many tenants there are.
    pub async fn tenant_count(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM tenants")
            .fetch_one(&self.pool)
            .await
    }

    /// A tenant's display name.
    pub async fn tenant_name(&self, tenant_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Adds a tenant: with its token in `tenant_settings` (preferred), or with `legacy`, on the
    /// `tenants` row only, the way older tenants were stored.
    pub async fn add_tenant(&self, tenant: &NewTenant<'_>) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        let (sid, token) = if tenant.legacy {
            (Some(tenant.account_sid), Some(tenant.auth_token))
        } else {
            (None, None)
        };
        sqlx::query(
            "INSERT INTO tenants (id, name, account_sid, auth_token) VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant.id)
        .bind(tenant.name)
        .bind(sid)
        .bind(token)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, "a tenant with this id or AccountSid exists"))?;
        if !tenant.legacy {
            sqlx::query(
                "INSERT INTO tenant_settings (tenant_id, account_sid, primary_auth_token)
                 VALUES ($1, $2, $3)",
            )
            .bind(tenant.id)
            .bind(tenant.account_sid)
            .bind(tenant.auth_token)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_violation(e, "a tenant with this AccountSid exists"))?;
        }
        credentials_changed(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes `new_token` the tenant's primary token and keeps the old primary as secondary, so
    /// that webhooks signed with either verify until Twilio has switched. A legacy tenant moves
    /// to `tenant_settings` on its first rotation.
    pub async fn rotate(&self, tenant_id: &str, new_token: &str) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tenant_settings
             SET secondary_auth_token = primary_auth_token, primary_auth_token = $2
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .bind(new_token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            let legacy: Option<AccountToken> = sqlx::query_as(
                "SELECT account_sid, auth_token FROM tenants
                 WHERE id = $1 AND account_sid IS NOT NULL AND auth_token IS NOT NULL",
            )
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(AccountToken {
                account_sid: Some(account_sid),
                auth_token: old_token,
            }) = legacy
            else {
                return Err(format!("no tenant {tenant_id:?} with an auth token").into());
            };
            sqlx::query(
                "INSERT INTO tenant_settings
                 (tenant_id, account_sid, primary_auth_token, secondary_auth_token)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(tenant_id)
            .bind(account_sid)
            .bind(new_token)
            .bind(old_token)
            .execute(&mut *tx)
            .await?;
        }
        credentials_changed(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a rotation: forgets the tenant's secondary (old) token, so that only the primary
    /// verifies. Errors when there is no such tenant or no secondary token.
    pub async fn retire_secondary(&self, tenant_id: &str) -> Result<(), BoxError> {
        let retired = sqlx::query(
            "UPDATE tenant_settings SET secondary_auth_token = NULL
             WHERE tenant_id = $1 AND secondary_auth_token IS NOT NULL",
        )
        .bind(tenant_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if retired == 1 {
            return Ok(());
        }
        if self.tenant_name(tenant_id).await?.is_none() {
            return Err(format!("no tenant {tenant_id:?}").into());
        }
        Err(format!("tenant {tenant_id:?} has no secondary token: no rotation to finish").into())
    }

    /// Adds (or replaces) a SharedKey secret for a tenant.
    pub async fn add_shared_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        secret: &str,
        algorithm: &str,
    ) -> Result<(), BoxError> {
        if self.tenant_name(tenant_id).await?.is_none() {
            return Err(format!("no tenant {tenant_id:?}").into());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO shared_keys (key_id, tenant_id, secret, algorithm) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key_id) DO UPDATE
             SET tenant_id = excluded.tenant_id, secret = excluded.secret, algorithm = excluded.algorithm",
        )
        .bind(key_id)
        .bind(tenant_id)
        .bind(secret)
        .bind(algorithm)
        .execute(&mut *tx)
        .await?;
        credentials_changed(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes `auth_token` the primary token of `account_sid`: updates the tenant that has it,
    /// or creates the tenant `default` for it. Returns the tenant id.
    pub async fn upsert_account(
        &self,
        account_sid: &str,
        auth_token: &str,
    ) -> Result<String, BoxError> {
        if let Some(tokens) = self.preferred_tokens(account_sid).await? {
            sqlx::query("UPDATE tenant_settings SET primary_auth_token = $2 WHERE tenant_id = $1")
                .bind(&tokens.tenant_id)
                .bind(auth_token)
                .execute(&self.pool)
                .await?;
            return Ok(tokens.tenant_id);
        }
        if let Some(tokens) = self.legacy_token(account_sid).await? {
            // Move it to the preferred table, as a rotation does.
            self.rotate(&tokens.tenant_id, auth_token).await?;
            return Ok(tokens.tenant_id);
        }
        let id = if self.tenant_name("default").await?.is_none() {
            "default".to_owned()
        } else {
            account_sid.to_ascii_lowercase()
        };
        self.add_tenant(&NewTenant {
            id: &id,
            name: "Default tenant (TWILIO_ACCOUNT_SID)",
            account_sid,
            auth_token,
            legacy: false,
        })
        .await?;
        Ok(id)
    }

    /// A tenant's preferred (or, failing that, legacy) token, for the demo tenant's token file.
    pub async fn tenant_token(&self, tenant_id: &str) -> Result<Option<AccountToken>, sqlx::Error> {
        sqlx::query_as(
            "SELECT s.account_sid, s.primary_auth_token AS auth_token
             FROM tenant_settings s WHERE s.tenant_id = $1
             UNION ALL
             SELECT t.account_sid, t.auth_token FROM tenants t
             WHERE t.id = $1 AND t.auth_token IS NOT NULL",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Every tenant with where its credentials come from, and no secret.
    pub async fn list_tenants(&self) -> Result<Vec<TenantSummary>, sqlx::Error> {
        let rows: Vec<TenantListRow> = sqlx::query_as(
            "SELECT t.id, t.name,
                    s.account_sid AS preferred_account_sid,
                    t.account_sid AS legacy_account_sid,
                    CASE WHEN s.tenant_id IS NOT NULL THEN 1 ELSE 0 END AS preferred,
                    CASE WHEN s.secondary_auth_token IS NOT NULL THEN 1 ELSE 0 END AS has_secondary,
                    CASE WHEN t.auth_token IS NOT NULL THEN 1 ELSE 0 END AS has_legacy_token
             FROM tenants t LEFT JOIN tenant_settings s ON s.tenant_id = t.id
             ORDER BY t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let keys: Vec<SharedKeyRow> =
            sqlx::query_as("SELECT tenant_id, key_id, algorithm FROM shared_keys ORDER BY key_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|row| TenantSummary {
                shared_keys: keys
                    .iter()
                    .filter(|k| k.tenant_id == row.id)
                    .map(|k| format!("{} ({})", k.key_id, k.algorithm))
                    .collect(),
                id: row.id,
                name: row.name,
                account_sid: row.preferred_account_sid.or(row.legacy_account_sid),
                source: if row.preferred == 1 {
                    CredentialSource::TenantSettings
                } else {
                    CredentialSource::Legacy
                },
                has_secondary: row.has_secondary == 1,
                has_legacy_token: row.has_legacy_token == 1,
            })
            .collect())
    }

    // ---- webhook log -------------------------------------------------------------------

    /// Inserts a webhook's first outcome written; returns its row id.
    pub async fn insert_webhook(&self, row: &WebhookRow) -> Result<i64, sqlx::Error> {
        let mut arguments = AnyArguments::default();
        log_arguments(&mut arguments, row, Timestamp::now()).map_err(sqlx::Error::Encode)?;
        sqlx::query_scalar_with(&insert_log_sql(1), arguments)
            .fetch_one(&self.pool)
            .await
    }

    /// Inserts refused requests' rows (each their only outcome) in one statement: a flood's
    /// rows cost one round trip and one commit per batch, not per row. At most
    /// [`MAX_LOG_BATCH`] rows. Returns their ids in the order of `rows`.
    pub async fn insert_refused(&self, rows: &[&WebhookRow]) -> Result<Vec<i64>, sqlx::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows = &rows[..rows.len().min(MAX_LOG_BATCH)];
        let now = Timestamp::now();
        let mut arguments = AnyArguments::default();
        for row in rows {
            log_arguments(&mut arguments, row, now).map_err(sqlx::Error::Encode)?;
        }
        // One statement numbers its rows in the order of its VALUES (SQLite's rowids and a
        // PostgreSQL identity both increase row by row), but RETURNING may list them in any
        // order: sorted, they are the rows' ids in order.
        let mut ids: Vec<i64> = sqlx::query_scalar_with(&insert_log_sql(rows.len()), arguments)
            .fetch_all(&self.pool)
            .await?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Records a later outcome of the webhook in row `id`; what the outcome does not know is kept.
    pub async fn update_webhook(&self, id: i64, row: &WebhookRow) -> Result<(), sqlx::Error> {
        let mut arguments = AnyArguments::default();
        log_arguments(&mut arguments, row, Timestamp::now())
            .and_then(|()| arguments.add(id))
            .map_err(sqlx::Error::Encode)?;
        sqlx::query_with(&update_log_sql(), arguments)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Adds the mismatch doctor's diagnosis to a webhook's row, leaving its outcome alone.
    pub async fn set_webhook_diagnosis(
        &self,
        id: i64,
        url: &str,
        fix: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE webhook_log SET updated_at_ms = $2, diagnosis_url = $3, diagnosis_fix = $4
             WHERE id = $1",
        )
        .bind(id)
        .bind(Timestamp::now().millis())
        .bind(url)
        .bind(fix)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// The newest `limit` webhooks, newest first.
    pub async fn recent_webhooks(&self, limit: i64) -> Result<Vec<WebhookRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, received_at_ms, method, path, outcome, rejection_reason, tenant_id,
                    account_sid, message_sid, message_status, credential, status_code,
                    query, user_agent, client_ip, request_id, call_sid, call_status,
                    recording_status, diagnosis_url, diagnosis_fix, replay_key
             FROM webhook_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// The `processed` rows with one of these replay keys, oldest first: the webhooks whose
    /// stored answers copies got. At most 500 keys are looked up.
    pub async fn processed_with_keys(
        &self,
        keys: &[&str],
    ) -> Result<Vec<ProcessedKey>, sqlx::Error> {
        let keys = &keys[..keys.len().min(500)];
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (2..=keys.len() + 1).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT id, replay_key, received_at_ms, updated_at_ms FROM webhook_log
             WHERE outcome = $1 AND replay_key IN ({}) ORDER BY id",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as(&sql).bind(Outcome::Processed.as_str());
        for key in keys {
            query = query.bind(*key);
        }
        query.fetch_all(&self.pool).await
    }

    /// Deletes the log's oldest rows beyond the newest `max_rows`, and every row (and every
    /// message and call history entry) received before `cutoff_ms`. Returns the log rows
    /// deleted.
    pub async fn prune(&self, max_rows: i64, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
        let mut deleted = sqlx::query("DELETE FROM webhook_log WHERE received_at_ms < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        // The id of the oldest row to keep; everything older goes.
        let keep_from: Option<i64> =
            sqlx::query_scalar("SELECT id FROM webhook_log ORDER BY id DESC LIMIT 1 OFFSET $1")
                .bind(max_rows.max(1) - 1)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(keep_from) = keep_from {
            deleted += sqlx::query("DELETE FROM webhook_log WHERE id < $1")
                .bind(keep_from)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        for table in ["message_history", "call_history"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE received_at_ms < $1"))
                .bind(cutoff_ms)
                .execute(&self.pool)
                .await?;
        }
        Ok(deleted)
    }

    // ---- message and call histories -----------------------------------------------------

    /// Records one message status callback in its tenant's history of the message. A delivery
    /// Twilio retries never gets here: the replay guard answers it without running the
    /// handler.
    pub async fn record_status(&self, row: &MessageStatusRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO message_history (tenant_id, message_sid, status, error_code, account_sid,
                 received_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.tenant_id)
        .bind(&row.message_sid)
        .bind(&row.status)
        .bind(&row.error_code)
        .bind(&row.account_sid)
        .bind(row.received_at.millis())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Every tenant's history of a message: by tenant, each oldest first.
    pub async fn message_history(
        &self,
        message_sid: &str,
    ) -> Result<Vec<MessageStatusRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT tenant_id, message_sid, status, error_code, account_sid, received_at_ms
             FROM message_history WHERE message_sid = $1 ORDER BY tenant_id, id",
        )
        .bind(message_sid)
        .fetch_all(&self.pool)
        .await
    }

    /// Records one call or recording status callback in its tenant's history of the call (a
    /// retry never gets here, see [`record_status`](Self::record_status)).
    pub async fn record_call_event(&self, row: &CallEventRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO call_history (tenant_id, call_sid, account_sid, kind, status,
                 recording_sid, duration, error_code, received_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.tenant_id)
        .bind(&row.call_sid)
        .bind(&row.account_sid)
        .bind(row.kind.as_str())
        .bind(&row.status)
        .bind(&row.recording_sid)
        .bind(&row.duration)
        .bind(&row.error_code)
        .bind(row.received_at.millis())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Every tenant's history of a call, recordings included: by tenant, each oldest first.
    pub async fn call_history(&self, call_sid: &str) -> Result<Vec<CallEventRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT tenant_id, call_sid, kind, status, recording_sid, duration, error_code,
                    account_sid, received_at_ms
             FROM call_history WHERE call_sid = $1 ORDER BY tenant_id, id",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await
    }
}

/// Tells a duplicate apart from other failures.
fn unique_violation(error: sqlx::Error, message: &str) -> BoxError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => message.into(),
        _ => error.into(),
    }
}

/// A tenant's auth tokens, from either source. `Debug` shows no token.
#[derive(sqlx::FromRow)]
pub struct TenantTokens {
    /// The tenant they belong to.
    pub tenant_id: String,
    /// The token Twilio signs with (after a rotation, the new one).
    pub primary_token: String,
    /// During a rotation, the old token, still accepted.
    #[sqlx(default)]
    pub secondary_token: Option<String>,
}

impl fmt::Debug for TenantTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTokens")
            .field("tenant_id", &self.tenant_id)
            .field(
                "secondary_token",
                &self.secondary_token.as_ref().map(|_| "[set]"),
            )
            .finish_non_exhaustive()
    }
}

/// Every stored `AccountSid` and SharedKey id (no secret).
#[derive(Clone, Debug, Default)]
pub struct CredentialIds {
    /// From `tenant_settings` and `tenants`.
    pub account_sids: Vec<String>,
    /// From `shared_keys`.
    pub shared_key_ids: Vec<String>,
}

/// A SharedKey's tenant and secret.
#[derive(sqlx::FromRow)]
pub struct SharedKeySecret {
    /// The tenant the key belongs to.
    pub tenant_id: String,
    /// The secret.
    pub secret: String,
    /// The tenant's `AccountSid`: the account the key verifies requests for.
    pub account_sid: Option<String>,
}

impl fmt::Debug for SharedKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeySecret")
            .field("tenant_id", &self.tenant_id)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

/// A tenant's primary (or legacy) token with its `AccountSid`.
#[derive(sqlx::FromRow)]
pub struct AccountToken {
    /// The tenant's `AccountSid`, when it has one.
    pub account_sid: Option<String>,
    /// The auth token.
    pub auth_token: String,
}

impl fmt::Debug for AccountToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountToken")
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

/// What `tenant add` stores. `Debug` shows no token.
pub struct NewTenant<'a> {
    /// Tenant id (letters, digits, `-`, `_`).
    pub id: &'a str,
    /// Display name, used in replies.
    pub name: &'a str,
    /// The tenant's Twilio `AccountSid`.
    pub account_sid: &'a str,
    /// Its auth token.
    pub auth_token: &'a str,
    /// Store the token on the `tenants` row (the legacy source) instead of `tenant_settings`.
    pub legacy: bool,
}

impl fmt::Debug for NewTenant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewTenant")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("account_sid", &self.account_sid)
            .field("legacy", &self.legacy)
            .finish_non_exhaustive()
    }
}

/// Where a tenant's credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// The `tenant_settings` table: primary and secondary token (the preferred source).
    TenantSettings,
    /// The token on the `tenants` row, the way older tenants were stored.
    Legacy,
}

impl CredentialSource {
    /// The table, as `tenant list` shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TenantSettings => "tenant_settings",
            Self::Legacy => "tenants (legacy)",
        }
    }
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A row of the tenant list query.
#[derive(sqlx::FromRow)]
struct TenantListRow {
    id: String,
    name: String,
    preferred_account_sid: Option<String>,
    legacy_account_sid: Option<String>,
    preferred: i64,
    has_secondary: i64,
    has_legacy_token: i64,
}

/// A SharedKey without its secret.
#[derive(sqlx::FromRow)]
struct SharedKeyRow {
    tenant_id: String,
    key_id: String,
    algorithm: String,
}

/// What `tenant list` shows: never a secret.
#[derive(Debug)]
pub struct TenantSummary {
    /// Tenant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Its `AccountSid` (from `tenant_settings`, else from the legacy row).
    pub account_sid: Option<String>,
    /// Where its auth token comes from.
    pub source: CredentialSource,
    /// Whether a secondary token (an unfinished rotation) is stored.
    pub has_secondary: bool,
    /// Whether the legacy row still holds a token too.
    pub has_legacy_token: bool,
    /// Its SharedKeys, as `key_id (ALGORITHM)`.
    pub shared_keys: Vec<String>,
}

/// A webhook's outcome, as its `webhook_log` row keeps it (the `outcome` column): the library's
/// [`WebhookOutcome`] without what a outcome carries, which has columns of its own (the rejection
/// reason, the status code). A row is first written at `verified` (then updated to its final
/// outcome), or at once at its final outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Verified; the handler is running.
    Verified,
    /// Refused by the layer.
    Rejected,
    /// Failed verification, passed on in report-only mode.
    PassedInReportOnlyMode,
    /// The handler answered with a success.
    Processed,
    /// The handler answered with an error, or the request ended before it answered.
    Failed,
    /// A copy of a webhook already processed, answered by the replay guard.
    Copy,
}

impl Outcome {
    /// Every outcome with its name, the library's ([`WebhookOutcome::as_str`]), in the enum's
    /// order: the one place the names are spelled. The column, the API's JSON and parsing a
    /// stored row all read it.
    const NAMES: [(Self, &'static str); 6] = [
        (Self::Verified, "verified"),
        (Self::Rejected, "rejected"),
        (Self::PassedInReportOnlyMode, "passed_in_report_only_mode"),
        (Self::Processed, "processed"),
        (Self::Failed, "failed"),
        (Self::Copy, "copy"),
    ];

    /// The outcome of a log entry; `None` for the outcomes that are not written
    /// ([`Received`](WebhookOutcome::Received), [`Diagnosed`](WebhookOutcome::Diagnosed)).
    pub fn of(outcome: WebhookOutcome) -> Option<Self> {
        Some(match outcome {
            WebhookOutcome::Verified => Self::Verified,
            WebhookOutcome::Rejected(_) => Self::Rejected,
            WebhookOutcome::PassedInReportOnlyMode(_) => Self::PassedInReportOnlyMode,
            WebhookOutcome::Processed(_) => Self::Processed,
            WebhookOutcome::Failed(_) => Self::Failed,
            WebhookOutcome::Copy => Self::Copy,
            _ => return None,
        })
    }

    /// As stored and shown.
    pub const fn as_str(self) -> &'static str {
        Self::NAMES[self as usize].1
    }
}

impl TryFrom<String> for Outcome {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, String> {
        // The value is not repeated: an error can reach the log.
        named(&Self::NAMES, &stored).ok_or_else(|| "not a webhook outcome".to_owned())
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The value named `stored` in a table of names (`Outcome::NAMES`, `CallEventKind::NAMES`).
fn named<T: Copy>(names: &[(T, &str)], stored: &str) -> Option<T> {
    names
        .iter()
        .find(|(_, name)| *name == stored)
        .map(|&(value, _)| value)
}

/// One row of `webhook_log`: one webhook, at the last outcome written. The log writer writes it
/// through the webhook's outcomes; `GET /api/webhooks` reads it back and shows it as it is.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct WebhookRow {
    /// Row id: grows with every webhook (not written: the database hands it out).
    pub id: i64,
    /// When the request arrived.
    #[sqlx(rename = "received_at_ms", try_from = "i64")]
    #[serde(rename = "received_at")]
    pub received_at: Timestamp,
    /// The HTTP method.
    pub method: String,
    /// The path, still percent-encoded.
    pub path: String,
    /// The query, if any: its values redacted unless the webhook was verified.
    pub query: Option<String>,
    /// The `User-Agent` header (unverified).
    pub user_agent: Option<String>,
    /// The outcome.
    #[sqlx(try_from = "String")]
    pub outcome: Outcome,
    /// Why it was rejected.
    pub rejection_reason: Option<String>,
    /// The tenant the layer resolved.
    pub tenant_id: Option<String>,
    /// The `AccountSid` (unverified on a rejection).
    pub account_sid: Option<String>,
    /// The verified `MessageSid` (or `SmsSid`).
    pub message_sid: Option<String>,
    /// The verified `MessageStatus` (or `SmsStatus`).
    pub message_status: Option<String>,
    /// Which secret verified it: `primary`, `secondary` or `shared_key:<id>`.
    pub credential: Option<String>,
    /// The handler's status code (`processed`, `failed`).
    pub status_code: Option<i64>,
    /// The peer address (the proxy's, behind one).
    pub client_ip: Option<String>,
    /// `X-Request-Id`, as received or as this server made it.
    pub request_id: Option<String>,
    /// The verified `CallSid`.
    pub call_sid: Option<String>,
    /// The verified `CallStatus`.
    pub call_status: Option<String>,
    /// The verified `RecordingStatus`.
    pub recording_status: Option<String>,
    /// For a signature mismatch the mismatch doctor explained (`DIAGNOSE_MISMATCHES`): the URL
    /// the signature matches and what to set; shown as `null` otherwise.
    #[sqlx(flatten)]
    pub diagnosis: DiagnosisColumns,
    /// The replay guard's key (hex), for a verified webhook: the same for a processed webhook
    /// and its copies. Not shown: the API points a copy at its webhook instead.
    #[serde(skip)]
    pub replay_key: Option<String>,
}

impl WebhookRow {
    /// A row at `outcome` for a `method` request to `path` received at `received_at`, with
    /// nothing else known yet.
    pub const fn new(
        received_at: Timestamp,
        method: String,
        path: String,
        outcome: Outcome,
    ) -> Self {
        Self {
            id: 0,
            received_at,
            method,
            path,
            query: None,
            user_agent: None,
            outcome,
            rejection_reason: None,
            tenant_id: None,
            account_sid: None,
            message_sid: None,
            message_status: None,
            credential: None,
            status_code: None,
            client_ip: None,
            request_id: None,
            call_sid: None,
            call_status: None,
            recording_status: None,
            diagnosis: DiagnosisColumns {
                diagnosis_url: None,
                diagnosis_fix: None,
            },
            replay_key: None,
        }
    }
}

/// A processed webhook with a replay key (a projection of its [`WebhookRow`]): what a copy of
/// it points at.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct ProcessedKey {
    /// Its row id.
    pub id: i64,
    /// Its replay key.
    #[serde(skip)]
    pub replay_key: String,
    /// When it arrived.
    #[sqlx(rename = "received_at_ms", try_from = "i64")]
    pub received_at: Timestamp,
    /// When its answer, the one the replay guard stored and gave its copies, was logged (its
    /// final outcome).
    #[sqlx(rename = "updated_at_ms", try_from = "i64")]
    pub answered_at: Timestamp,
}

/// The mismatch doctor's finding in a [`WebhookRow`]; shown as `{"matched_url", "fix"}`, or
/// `null` without one.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct DiagnosisColumns {
    /// The URL the signature matches.
    pub diagnosis_url: Option<String>,
    /// What to set so that it verifies.
    pub diagnosis_fix: Option<String>,
}

impl serde::Serialize for DiagnosisColumns {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Diagnosis<'a> {
            matched_url: &'a str,
            fix: &'a str,
        }
        let diagnosis = self
            .diagnosis_url
            .as_deref()
            .zip(self.diagnosis_fix.as_deref())
            .map(|(matched_url, fix)| Diagnosis { matched_url, fix });
        diagnosis.serialize(serializer)
    }
}

/// One row of `message_history`: one message status callback, in the history of the tenant
/// whose secret verified it. The API shows the status, error code and time of each.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct MessageStatusRow {
    /// The tenant whose record it is.
    #[serde(skip)]
    pub tenant_id: String,
    /// The `MessageSid` it is about.
    #[serde(skip)]
    pub message_sid: String,
    /// The `MessageStatus`, as sent.
    pub status: String,
    /// The `ErrorCode`, when not empty.
    pub error_code: Option<String>,
    /// The verified `AccountSid`.
    #[serde(skip)]
    pub account_sid: Option<String>,
    /// When it was received.
    #[sqlx(rename = "received_at_ms", try_from = "i64")]
    #[serde(rename = "received_at")]
    pub received_at: Timestamp,
}

/// What a call callback reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEventKind {
    /// A call status callback (`CallStatus`).
    Call,
    /// A recording status callback (`RecordingStatus`).
    Recording,
}

impl CallEventKind {
    /// Each kind with its stored name, in the enum's order: the one place they are spelled.
    const NAMES: [(Self, &'static str); 2] = [(Self::Call, "call"), (Self::Recording, "recording")];

    /// As stored: `call` or `recording`.
    pub const fn as_str(self) -> &'static str {
        Self::NAMES[self as usize].1
    }
}

impl TryFrom<String> for CallEventKind {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, String> {
        named(&Self::NAMES, &stored).ok_or_else(|| "not a call event kind".to_owned())
    }
}

/// One row of `call_history`: one call or recording status callback, in the history of the
/// tenant whose secret verified it. The API shows the status, durations, error code and time
/// of each (and a recording's SID).
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct CallEventRow {
    /// The tenant whose record it is.
    #[serde(skip)]
    pub tenant_id: String,
    /// The `CallSid`.
    #[serde(skip)]
    pub call_sid: String,
    /// The verified `AccountSid`.
    #[serde(skip)]
    pub account_sid: Option<String>,
    /// Call or recording.
    #[sqlx(try_from = "String")]
    #[serde(skip)]
    pub kind: CallEventKind,
    /// The `CallStatus` or `RecordingStatus`, as sent.
    pub status: String,
    /// The `RecordingSid` of a recording callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_sid: Option<String>,
    /// `CallDuration` or `RecordingDuration` in seconds, when not empty.
    pub duration: Option<String>,
    /// The `ErrorCode`, when not empty.
    pub error_code: Option<String>,
    /// When it was received.
    #[sqlx(rename = "received_at_ms", try_from = "i64")]
    #[serde(rename = "received_at")]
    pub received_at: Timestamp,
}

/// A moment as the database keeps it: milliseconds since the Unix epoch. Shown and serialized
/// in RFC 3339, in UTC, to the millisecond: `2026-11-28T12:00:00.123Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(i64);

/// `2026-11-28T12:00:00.123Z`.
const RFC3339_MILLIS: &[FormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// The moment `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    /// `time` to the millisecond (the epoch for a time before it).
    fn from(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

impl From<i64> for Timestamp {
    fn from(ms: i64) -> Self {
        Self(ms)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 (the epoch for a moment past the year 9999).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        let time =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        f.pad(&time.format(RFC3339_MILLIS).map_err(|_| fmt::Error)?)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The most rows [`Db::insert_refused`] writes at once (22 parameters each, well under
/// SQLite's and PostgreSQL's limits).
pub const MAX_LOG_BATCH: usize = 64;

/// The columns a `webhook_log` row is written with, in [`log_arguments`]'s order.
const LOG_COLUMNS: [&str; 22] = [
    "received_at_ms",
    "updated_at_ms",
    "method",
    "path",
    "outcome",
    "rejection_reason",
    "tenant_id",
    "account_sid",
    "message_sid",
    "message_status",
    "credential",
    "status_code",
    "query",
    "user_agent",
    "client_ip",
    "request_id",
    "call_sid",
    "call_status",
    "recording_status",
    "diagnosis_url",
    "diagnosis_fix",
    "replay_key",
];

/// Adds `row`'s [`LOG_COLUMNS`] to `arguments`, with `updated_at_ms` = `now`.
fn log_arguments<'q>(
    arguments: &mut AnyArguments<'q>,
    row: &'q WebhookRow,
    now: Timestamp,
) -> Result<(), BoxDynError> {
    arguments.add(row.received_at.millis())?;
    arguments.add(now.millis())?;
    arguments.add(&row.method)?;
    arguments.add(&row.path)?;
    arguments.add(row.outcome.as_str())?;
    arguments.add(&row.rejection_reason)?;
    arguments.add(&row.tenant_id)?;
    arguments.add(&row.account_sid)?;
    arguments.add(&row.message_sid)?;
    arguments.add(&row.message_status)?;
    arguments.add(&row.credential)?;
    arguments.add(row.status_code)?;
    arguments.add(&row.query)?;
    arguments.add(&row.user_agent)?;
    arguments.add(&row.client_ip)?;
    arguments.add(&row.request_id)?;
    arguments.add(&row.call_sid)?;
    arguments.add(&row.call_status)?;
    arguments.add(&row.recording_status)?;
    arguments.add(&row.diagnosis.diagnosis_url)?;
    arguments.add(&row.diagnosis.diagnosis_fix)?;
    arguments.add(&row.replay_key)
}

/// `INSERT` of `rows` rows of [`LOG_COLUMNS`]: `VALUES ($1, …, $22), ($23, …)`, returning
/// their ids.
fn insert_log_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let row: Vec<String> = (1..=LOG_COLUMNS.len())
                .map(|column| format!("${}", row * LOG_COLUMNS.len() + column))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO webhook_log ({}) VALUES {} RETURNING id",
        LOG_COLUMNS.join(", "),
        values.join(", ")
    )
}

/// `UPDATE` of the row whose id is the last parameter with [`LOG_COLUMNS`]: what the new
/// outcome does not know (`NULL`) is kept.
fn update_log_sql() -> String {
    let columns: Vec<String> = LOG_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{column} = COALESCE(${}, {column})", i + 1))
        .collect();
    format!(
        "UPDATE webhook_log SET {} WHERE id = ${}",
        columns.join(", "),
        LOG_COLUMNS.len() + 1
    )
}

/// Moves the `credential_changes` counter, in the transaction that changes credentials.
async fn credentials_changed(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE credential_changes SET version = version + 1")
        .execute(&mut **tx)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use tower_twilio::RejectionKind;

    use super::*;

    #[test]
    fn a_stage_is_stored_under_the_librarys_name_and_read_back() {
        let stored = [
            WebhookOutcome::Verified,
            WebhookOutcome::Rejected(RejectionKind::SignatureMismatch),
            WebhookOutcome::PassedInReportOnlyMode(RejectionKind::MissingSignature),
            WebhookOutcome::Processed(StatusCode::OK),
            WebhookOutcome::Failed(None),
            WebhookOutcome::Copy,
        ];
        for outcome in stored {
            let ours = Outcome::of(outcome).unwrap();
            assert_eq!(ours.as_str(), outcome.as_str());
            assert_eq!(Outcome::try_from(outcome.as_str().to_owned()), Ok(ours));
        }
        for unwritten in [WebhookOutcome::Received, WebhookOutcome::Diagnosed] {
            assert_eq!(Outcome::of(unwritten), None, "{unwritten:?}");
        }
        assert!(Outcome::try_from("received".to_owned()).is_err());
        assert_eq!(
            serde_json::to_string(&Outcome::PassedInReportOnlyMode).unwrap(),
            r#""passed_in_report_only_mode""#
        );
    }

    #[test]
    fn each_stored_name_is_spelled_once_in_its_variants_place() {
        for (place, (outcome, name)) in Outcome::NAMES.into_iter().enumerate() {
            assert_eq!(outcome as usize, place, "{outcome:?}");
            assert_eq!(outcome.as_str(), name);
            assert_eq!(Outcome::try_from(name.to_owned()), Ok(outcome));
        }
        for (place, (kind, name)) in CallEventKind::NAMES.into_iter().enumerate() {
            assert_eq!(kind as usize, place, "{kind:?}");
            assert_eq!(kind.as_str(), name);
            assert_eq!(CallEventKind::try_from(name.to_owned()), Ok(kind));
        }
        assert!(CallEventKind::try_from("Call".to_owned()).is_err());
    }

    #[test]
    fn timestamps_show_in_rfc_3339_to_the_millisecond() {
        for (ms, shown) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_796_000_000_123, "2026-11-30T00:53:20.123Z"),
            (951_782_400_999, "2000-02-29T00:00:00.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (i64::MAX, "1970-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(Timestamp::from_millis(ms).to_string(), shown, "{ms}");
        }
        assert_eq!(
            serde_json::to_string(&Timestamp::from_millis(1_796_000_000_123)).unwrap(),
            r#""2026-11-30T00:53:20.123Z""#
        );
    }
}
