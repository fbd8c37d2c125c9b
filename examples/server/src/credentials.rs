//! The credential resolver: an account the server has never stored is unknown at once; else
//! `tenant_settings` first, the legacy `tenants` table second, each lookup bounded in time, the
//! answers cached.
//!
//! ```text
//! AccountIndex::knows                an AccountSid or SharedKey id never stored: "unknown
//!                                    account" without a query or a cache entry (see
//!                                    `account_index`)
//! preferred (tenant_settings, shared_keys)
//!     .or(legacy (tenants))          asked only when the preferred source does not know the
//!                                    account; a failed lookup is an error (503), never a
//!                                    reason to try the legacy table
//!     .timeout(2 s)                  a hung database costs a webhook 2 s, not Twilio's 15
//!     .cached().ttl(…)               hits for `ttl`, misses for 5 s, errors never
//! ```

use std::time::Duration;

use tower_twilio::{
    BoxError, Credentials, Secret,
    resolver::{
        CacheFuture, Resolution, ResolveCredentials, ResolveCredentialsExt, ResolveRequest,
    },
};

use crate::{
    account_index::AccountIndex,
    db::{Db, TenantTokens},
    error::DbFailure,
};

/// The longest one credential lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an unknown account stays unknown in the cache.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The resolver for the layer. `index` holds the ids of the stored accounts: any other is
/// unknown without a lookup. `ttl` is how long a tenant's secrets are cached: after a `tenant
/// rotate` in another process, the new token verifies once the old entry expires (the old one
/// keeps verifying, as the secondary token, in the meantime).
pub fn resolver(
    db: &Db,
    index: &AccountIndex,
    ttl: Duration,
) -> impl ResolveCredentials<Future = CacheFuture> + Clone + Send + Sync + 'static {
    let preferred = lookup(db.clone(), preferred);
    let legacy = lookup(db.clone(), legacy);
    let mut cached = preferred
        .or(legacy)
        .timeout(LOOKUP_TIMEOUT)
        .cached()
        .ttl(ttl)
        .negative_ttl(NEGATIVE_TTL.min(ttl));
    let index = index.clone();
    move |request: ResolveRequest| -> CacheFuture {
        if index.knows(&request) {
            cached.resolve(request)
        } else {
            Box::pin(std::future::ready(Ok(None)))
        }
    }
}

/// A resolver that runs `find` on `db` with the request's `AccountSid` and SharedKey id.
fn lookup<F, Fut>(db: Db, find: F) -> impl Fn(ResolveRequest) -> Fut + Clone + Send + Sync
where
    F: Fn(Db, Option<String>, Option<String>) -> Fut + Clone + Send + Sync,
{
    move |request: ResolveRequest| {
        find(
            db.clone(),
            request.account_sid().map(str::to_owned),
            request.shared_key_id().map(str::to_owned),
        )
    }
}

/// The preferred source: a SharedKey by its id (SharedKeys live in the new schema only), else
/// the `tenant_settings` row of the `AccountSid`.
async fn preferred(db: Db, account_sid: Option<String>, key_id: Option<String>) -> Resolution {
    if let Some(key_id) = key_id {
        let Some(key) = db.shared_key(&key_id).await.map_err(DbFailure::from)? else {
            return Ok(None);
        };
        let mut credentials = Credentials::new()
            .tenant(key.tenant_id)
            .shared_key(key_id, secret_of(key.secret, "SharedKey secret")?);
        // The key verifies requests for its tenant's account only.
        if let Some(account_sid) = key.account_sid {
            credentials = credentials.account(account_sid);
        }
        return Ok(Some(credentials));
    }
    let Some(account_sid) = account_sid else {
        return Ok(None);
    };
    credentials(db.preferred_tokens(&account_sid).await, &account_sid)
}

/// The legacy source: the token on the `tenants` row of the `AccountSid` (never a SharedKey).
async fn legacy(db: Db, account_sid: Option<String>, key_id: Option<String>) -> Resolution {
    let (Some(account_sid), None) = (account_sid, key_id) else {
        return Ok(None);
    };
    credentials(db.legacy_token(&account_sid).await, &account_sid)
}

/// What a token lookup for `account_sid` found: the primary token, and the secondary one during
/// a rotation, labelled so that the log shows which one matched; they belong to `account_sid`,
/// the account they were found under.
fn credentials(found: Result<Option<TenantTokens>, sqlx::Error>, account_sid: &str) -> Resolution {
    let Some(tokens) = found.map_err(DbFailure::from)? else {
        return Ok(None);
    };
    let mut credentials = Credentials::new()
        .tenant(tokens.tenant_id)
        .account(account_sid)
        .auth_token("primary", secret_of(tokens.primary_token, "auth token")?);
    if let Some(secondary) = tokens.secondary_token.filter(|s| !s.is_empty()) {
        credentials = credentials.auth_token("secondary", secret_of(secondary, "auth token")?);
    }
    Ok(Some(credentials))
}

fn secret_of(value: String, what: &str) -> Result<Secret, BoxError> {
    Secret::new(value).map_err(|_| format!("the stored {what} is empty").into())
}
