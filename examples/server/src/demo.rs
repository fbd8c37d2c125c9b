//! Demo mode: with no `TWILIO_AUTH_TOKEN` and no tenant in the database, the server creates a
//! demo tenant with a random token, so that `cargo run -p tower-twilio-example-server` works on
//! a fresh machine. The token is never printed or logged: it goes to a file only its owner can read.

use std::path::{Path, PathBuf};

use tower_twilio::BoxError;

use crate::{
    db::{AccountToken, Db, NewTenant},
    secret_file,
    twilio_presets::random_hex,
};

/// The demo tenant's id.
pub const TENANT_ID: &str = "demo";
const TENANT_NAME: &str = "Demo tenant";

/// The demo tenant, for the start-up message.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The demo tenant's `AccountSid` (random, not a real account).
    pub account_sid: String,
    /// The file that holds its auth token (mode 0600).
    pub token_file: PathBuf,
    /// Whether it was created by this start (else it was there already).
    pub created: bool,
}

/// Creates the demo tenant and its token file.
pub async fn create(db: &Db, token_file: &Path) -> Result<Demo, BoxError> {
    let account_sid = format!("AC{}", random_hex(16));
    let token = random_hex(16); // 32 hex digits, like a real auth token
    db.add_tenant(&NewTenant {
        id: TENANT_ID,
        name: TENANT_NAME,
        account_sid: &account_sid,
        auth_token: &token,
        legacy: false,
    })
    .await?;
    write_token_file(token_file, &token)?;
    Ok(Demo {
        account_sid,
        token_file: token_file.to_owned(),
        created: true,
    })
}

/// The demo tenant of an earlier start, if there is one; its token file is written again if
/// it went missing.
pub async fn existing(db: &Db, token_file: &Path) -> Result<Option<Demo>, BoxError> {
    let Some(AccountToken {
        account_sid: Some(account_sid),
        auth_token,
    }) = db.tenant_token(TENANT_ID).await?
    else {
        return Ok(None);
    };
    // Written again if it went missing, or is not a plain file (a symlink is replaced).
    let plain = std::fs::symlink_metadata(token_file).is_ok_and(|m| m.file_type().is_file());
    if !plain {
        write_token_file(token_file, &auth_token)?;
    }
    Ok(Some(Demo {
        account_sid,
        token_file: token_file.to_owned(),
        created: false,
    }))
}

/// Writes `token` to `path` (mode 0600), never through a symlink (see [`secret_file`]).
pub fn write_token_file(path: &Path, token: &str) -> Result<(), BoxError> {
    secret_file::write(path, token, "demo token")
}
