//! The files the server creates, as another local user sees them: none that holds a token
//! (the database keeps tenants' auth tokens in `tenant_settings`, the token files theirs) may
//! be read by anyone but the owner, whatever the umask.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use tower_twilio_example_server::twilio_presets::{Body, Preset, Signer, sign_request};

use crate::support::Process;

/// Every file in `dir` but the two the test itself made for the server's output, with its
/// permission bits.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut files: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            (entry.file_name().to_string_lossy().into_owned(), mode)
        })
        .filter(|(name, _)| name != "stdout" && name != "stderr")
        .collect();
    files.sort();
    files
}

fn assert_owner_only(files: &[(String, u32)]) {
    for (name, mode) in files {
        assert_eq!(
            mode & 0o077,
            0,
            "{name} is mode {mode:o}: another local user can open it"
        );
    }
}

/// Sends the demo tenant a signed SMS, so that the database is written (and its WAL and
/// shared-memory files exist).
async fn send_signed_sms(server: &Process) {
    let stdout = server.stdout();
    let account = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("AccountSid "))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no demo AccountSid in {stdout}"));
    let token = std::fs::read_to_string(server.dir.path().join(".twilio-demo-token")).unwrap();
    let signed = sign_request(
        &format!("http://{}/twilio/sms", server.addr),
        Body::Form(Preset::Sms.params(account)),
        Signer::AuthToken(token.trim().as_bytes()),
    );
    let headers: Vec<(&str, &str)> = signed
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let body = String::from_utf8(signed.body.clone()).unwrap();
    let answer = server.call("POST", "/twilio/sms", &headers, &body).await;
    assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn no_file_the_demo_server_creates_is_readable_by_others() {
    // Started under umask 022 (`Process` sets it), where SQLite would create 0644 files.
    let server = Process::start(&[], &[]).await;
    send_signed_sms(&server).await;
    let running = modes(server.dir.path());
    let names: Vec<&str> = running.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "webhooks.db",
        "webhooks.db-wal",
        "webhooks.db-shm",
        ".twilio-demo-token",
        ".twilio-admin-token",
    ] {
        assert!(names.contains(&expected), "no {expected} in {running:?}");
    }
    assert_owner_only(&running);
    let (_, dir) = server.stop().await;
    assert_owner_only(&modes(dir.path()));
}

#[tokio::test]
async fn a_database_left_readable_by_an_earlier_version_is_made_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["webhooks.db", "webhooks.db-wal"] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = Process::start_in(dir, &[], &[]).await;
    send_signed_sms(&server).await;
    assert_owner_only(&modes(server.dir.path()));
    let (output, dir) = server.stop().await;
    assert_owner_only(&modes(dir.path()));
    assert!(
        output.contains("was readable by other users"),
        "the change is logged: {output}"
    );
}
