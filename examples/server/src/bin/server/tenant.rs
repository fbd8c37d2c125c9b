//! The `tenant` subcommands: add, list, rotate, SharedKeys. Secrets come from a file, standard
//! input or the environment, and are never printed.

use tower_twilio::BoxError;
use tower_twilio_example_server::db::{CredentialSource, Db, Location, NewTenant};

use crate::cli::{TenantCommand, check_account_sid, check_tenant_id, read_secret};

pub(crate) async fn run(location: &Location, command: TenantCommand) -> Result<(), BoxError> {
    let db = Db::open(location).await?;
    let result = run_tenant_command(&db, command).await;
    db.close().await;
    result
}

async fn run_tenant_command(db: &Db, command: TenantCommand) -> Result<(), BoxError> {
    match command {
        TenantCommand::Add {
            id,
            name,
            account_sid,
            token,
            legacy,
        } => {
            check_tenant_id(&id)?;
            check_account_sid(&account_sid)?;
            if name.trim().is_empty() {
                return Err("--name must not be empty".into());
            }
            let token = token.read()?;
            db.add_tenant(&NewTenant {
                id: &id,
                name: name.trim(),
                account_sid: &account_sid,
                auth_token: &token,
                legacy,
            })
            .await?;
            let table = if legacy {
                "tenants (legacy)"
            } else {
                "tenant_settings"
            };
            println!("added tenant {id:?} for {account_sid} (auth token in {table})");
        }
        TenantCommand::List => {
            let tenants = db.list_tenants().await?;
            if tenants.is_empty() {
                println!("no tenants (the server starts in demo mode)");
            }
            println!(
                "{:<16} {:<24} {:<34} {:<17} {:<19} shared keys",
                "id", "name", "account SID", "source", "tokens"
            );
            for t in tenants {
                let mut tokens = vec![match t.source {
                    CredentialSource::TenantSettings => "primary",
                    CredentialSource::Legacy => "legacy",
                }];
                if t.has_secondary {
                    tokens.push("secondary");
                }
                if t.source == CredentialSource::TenantSettings && t.has_legacy_token {
                    tokens.push("(+legacy)");
                }
                println!(
                    "{:<16} {:<24} {:<34} {:<17} {:<19} {}",
                    t.id,
                    t.name,
                    t.account_sid.as_deref().unwrap_or("-"),
                    t.source,
                    tokens.join(", "),
                    if t.shared_keys.is_empty() {
                        "-".to_owned()
                    } else {
                        t.shared_keys.join(", ")
                    }
                );
            }
        }
        TenantCommand::Rotate { id, token } => {
            let token = token.read()?;
            db.rotate(&id, &token).await?;
            println!(
                "tenant {id:?}: the new token is primary, the old one secondary. Running servers \
                 pick it up within their credential cache TTL (default 30 s); then promote the \
                 token in the Twilio console."
            );
        }
        TenantCommand::AddSharedKey {
            id,
            key_id,
            algorithm,
            secret_file,
        } => {
            if key_id.is_empty() || key_id.contains([',', '=', ' ']) {
                return Err("--key-id must be non-empty, without `,`, `=` or spaces".into());
            }
            let secret = read_secret(&secret_file, "SharedKey secret")?;
            let algorithm = algorithm.algorithm();
            db.add_shared_key(&id, &key_id, &secret, algorithm.as_str())
                .await?;
            println!("tenant {id:?}: SharedKey {key_id:?} ({algorithm}) stored");
        }
    }
    Ok(())
}
