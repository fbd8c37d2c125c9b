//! Every `AccountSid` and SharedKey id the database holds, in memory, so that a request for
//! one it has never stored is answered "unknown account" with a hash lookup instead of a
//! database round trip ([`credentials::resolver`](crate::credentials::resolver) asks it first).
//!
//! A flood of forged requests, each naming a different well-formed, made-up `AccountSid`,
//! costs no query and leaves nothing behind (not even a negative cache entry).
//!
//! # Kept current
//!
//! Loaded at start. The database's `credential_changes` counter moves with every change to
//! the stored credentials (`tenant add`, `tenant rotate`, `tenant add-shared-key`, `TWILIO_ACCOUNT_SID`
//! at start), whichever process makes it; the server reads that one number every
//! [`REFRESH_INTERVAL`] and reloads the ids when it has moved. So a tenant added while the
//! server runs is found within that interval, and the cost is one small query a second
//! whatever the traffic. A lookup that fails keeps the last ids (and is reported once).
//! Rows changed by hand in SQL without moving the counter are picked up at the next change or
//! restart.

use std::{
    collections::HashSet,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use tokio::task::JoinHandle;
use tower_twilio::resolver::ResolveRequest;

use crate::{
    db::{CredentialIds, Db},
    error::DbFailure,
};

/// How often the server checks whether the stored credentials changed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The ids of every stored account and SharedKey. Cheap to clone; clones share the ids.
#[derive(Clone, Debug, Default)]
pub struct AccountIndex {
    known: Arc<RwLock<Known>>,
}

#[derive(Debug, Default)]
struct Known {
    /// The `credential_changes` counter these ids were read at; `None` before the first read.
    version: Option<i64>,
    account_sids: HashSet<Box<str>>,
    shared_key_ids: HashSet<Box<str>>,
}

impl Known {
    fn new(version: i64, ids: CredentialIds) -> Self {
        Self {
            version: Some(version),
            account_sids: ids.account_sids.into_iter().map(Into::into).collect(),
            shared_key_ids: ids.shared_key_ids.into_iter().map(Into::into).collect(),
        }
    }
}

impl AccountIndex {
    /// Reads every stored id.
    pub async fn load(db: &Db) -> Result<Self, sqlx::Error> {
        let index = Self::default();
        index.refresh(db).await?;
        Ok(index)
    }

    /// Whether the database may hold credentials for `request`: its SharedKey id when it
    /// names one (as the resolver looks it up), else its `AccountSid`. `false` means it
    /// certainly does not.
    pub fn knows(&self, request: &ResolveRequest) -> bool {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        match (request.shared_key_id(), request.account_sid()) {
            (Some(key_id), _) => known.shared_key_ids.contains(key_id),
            (None, Some(account_sid)) => known.account_sids.contains(account_sid),
            (None, None) => false,
        }
    }

    /// Reloads the ids if the `credential_changes` counter moved since they were read; returns
    /// whether it did.
    pub async fn refresh(&self, db: &Db) -> Result<bool, sqlx::Error> {
        // The counter first: a change made while the ids are read moves it again, and the
        // next refresh reads them again.
        let version = db.credential_changes().await?;
        let current = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version;
        if current == Some(version) {
            return Ok(false);
        }
        let known = Known::new(version, db.credential_ids().await?);
        *self.known.write().unwrap_or_else(PoisonError::into_inner) = known;
        Ok(true)
    }

    /// Refreshes every [`REFRESH_INTERVAL`] until the database is closed.
    pub fn spawn_refresh(&self, db: Db) -> JoinHandle<()> {
        let index = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(REFRESH_INTERVAL).await;
                if db.is_closed() {
                    return;
                }
                match index.refresh(&db).await {
                    Ok(_) => failing = false,
                    Err(error) => {
                        if !failing {
                            tracing::warn!(
                                failure = %DbFailure::from(&error),
                                "reading the stored account ids failed; the last ones are kept"
                            );
                        }
                        failing = true;
                    }
                }
            }
        })
    }
}
