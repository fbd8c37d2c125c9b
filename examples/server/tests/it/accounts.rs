//! Unknown accounts cost a hash lookup: the server answers "no such account" for an
//! `AccountSid` or SharedKey id it has never stored without asking the database, and a tenant
//! added while it runs (by the `tenant add` command, another process) is found without a
//! restart.

use std::time::{Duration, Instant};

use http::StatusCode;
use tower_twilio::signature::Algorithm;
use tower_twilio_example_server::{
    db::NewTenant,
    twilio_presets::{Body, Preset, Signer, sign_request},
};

use crate::support::{ACCOUNT, LIMIT, Server, TOKEN, TestDb, on_both_databases};

/// Distinct made-up accounts in the flood.
const MADE_UP: u128 = 300;

on_both_databases! {
    /// A flood of distinct, well-formed, made-up AccountSids and SharedKey ids is refused as
    /// unknown without a single credential query; a tenant added by another process is then
    /// found.
    made_up_accounts_never_reach_the_database;
}

async fn made_up_accounts_never_reach_the_database(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let genuine = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[]);
    assert_eq!(server.send(&genuine).await.0, StatusCode::OK);
    let before = server.db.credential_queries();

    for n in 0..MADE_UP {
        let account = format!("AC{:032x}", 0xdead_beef_0000 + n);
        let forged = server.webhook(&Preset::Sms, &account, "made-up-token", &[]);
        assert_eq!(server.send(&forged).await.0, StatusCode::FORBIDDEN);
    }
    for n in 0..MADE_UP / 10 {
        let key_id = format!("made_up_key_{n}");
        let forged = sign_request(
            &format!("{}/twilio/status", server.base()),
            Body::Form(crate::support::status("delivered").params(ACCOUNT)),
            Signer::SharedKey {
                secret: b"made-up-secret",
                key_id: &key_id,
                algorithm: Algorithm::HmacSha256,
            },
        );
        assert_eq!(server.send(&forged).await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        server.db.credential_queries() - before,
        0,
        "credential queries for made-up accounts"
    );
    // Each logged as refused for its unknown account.
    let log = server.webhooks((MADE_UP + MADE_UP / 10) as usize).await;
    let count = |reason: &str| {
        log.iter()
            .filter(|e| e["rejection_reason"] == reason)
            .count()
    };
    assert_eq!(count("unknown_account"), MADE_UP as usize);
    assert_eq!(count("unknown_shared_key"), (MADE_UP / 10) as usize);

    // `tenant add` in another process, while the server runs.
    const NEWCO: &str = "AC0000000000000000000000000000cafe";
    let other = db.open().await;
    other
        .add_tenant(&NewTenant {
            id: "newco",
            name: "Newco",
            account_sid: NEWCO,
            auth_token: "newco-token",
            legacy: false,
        })
        .await
        .unwrap();
    other.close().await;
    let sms = server.webhook(&Preset::Sms, NEWCO, "newco-token", &[]);
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, body, _) = server.send(&sms).await;
        if code == StatusCode::OK {
            assert!(body.contains("Newco received"), "{body}");
            break;
        }
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert!(Instant::now() < deadline, "the new tenant was never found");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    db.drop_database().await;
}
