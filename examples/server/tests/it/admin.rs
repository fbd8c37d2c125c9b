//! The admin surface (the inspector's actions, `/api/*`, `/metrics`) is locked: it needs the
//! admin token as a bearer header on loopback too (no cookie, no token in a URL), and answers
//! only to the names it is reached by, like the inspector page's shell. The webhook routes are
//! not part of it. Each test runs the `server` binary as a user would.

use http::StatusCode;

use crate::support::Process;

/// A value that cannot be mistaken for anything else in the server's output.
const ADMIN: &str = "admin-0b7c1e9d2f4a6b8c0d2e4f6a8b0c2d4e";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn the_admin_surface_needs_the_token_on_loopback_too() {
    // Debug logging, so that anything that logs a request line would show a token in the URL.
    let server = Process::start(&[], &[("ADMIN_TOKEN", ADMIN), ("RUST_LOG", "debug")]).await;
    let auth = bearer(ADMIN);
    for path in [
        "/api/webhooks",
        "/api/messages/SM123",
        "/api/calls/CA123",
        "/metrics",
    ] {
        let answer = server.call("GET", path, &[], "").await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{path} without a token: {}",
            answer.body
        );
        let wrong = server
            .call(
                "GET",
                path,
                &[("authorization", "Bearer not-the-token")],
                "",
            )
            .await;
        assert_eq!(
            wrong.status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
    }
    let answer = server
        .call("GET", "/api/webhooks", &[("authorization", &auth)], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "[]");
    // A token in the URL is for the page only, never for the API (URLs end up in logs).
    let in_url = server
        .call("GET", &format!("/api/webhooks?token={ADMIN}"), &[], "")
        .await;
    assert_eq!(in_url.status, StatusCode::UNAUTHORIZED);
    // The actions need it too.
    for action in ["/inspector/send-test", "/inspector/send-forged"] {
        let answer = server.call("POST", action, &[], "").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{action}");
    }
    // No cookie carries it: a browser would send a cookie to every service on the host.
    let first = server
        .call("GET", &format!("/?token={ADMIN}"), &[], "")
        .await;
    assert!(first.headers.get("set-cookie").is_none());
    for cookie in [format!("twilio_admin={ADMIN}"), format!("token={ADMIN}")] {
        let answer = server
            .call("GET", "/api/webhooks", &[("cookie", &cookie)], "")
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{cookie}");
    }
    // The page's shell (the same for everyone, no data) needs no token: it asks for it.
    for path in ["/", "/inspector.js", "/inspector.css"] {
        let answer = server.call("GET", path, &[], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(answer.headers.get("set-cookie").is_none());
    }

    // The webhook routes do not ask for it: an unsigned webhook is the layer's 403.
    let webhook = server
        .call(
            "POST",
            "/twilio/sms",
            &[("content-type", "application/x-www-form-urlencoded")],
            "Body=hi",
        )
        .await;
    assert_eq!(webhook.status, StatusCode::FORBIDDEN);
    let health = server.call("GET", "/healthz", &[], "").await;
    assert_eq!(health.status, StatusCode::OK);

    let (output, dir) = server.stop().await;
    assert!(
        !output.contains(ADMIN),
        "the admin token was printed or logged:\n{output}"
    );
    assert!(
        !dir.path().join(".twilio-admin-token").exists(),
        "ADMIN_TOKEN is set: no token file"
    );
}

#[tokio::test]
async fn a_foreign_host_gets_421_from_the_admin_surface_only() {
    let server = Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN),
            ("PUBLIC_URL", "https://abc123.ngrok-free.app"),
        ],
    )
    .await;
    let auth = bearer(ADMIN);
    let port = server.addr.port();
    // Through the tunnel, a stranger without the token gets nothing.
    let stranger = server
        .call(
            "GET",
            "/api/webhooks",
            &[("host", "abc123.ngrok-free.app")],
            "",
        )
        .await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);
    let action = server
        .call(
            "POST",
            "/inspector/send-test",
            &[("host", "abc123.ngrok-free.app")],
            "",
        )
        .await;
    assert_eq!(action.status, StatusCode::UNAUTHORIZED);
    // The names the server is reached by, with the token.
    for host in [
        "abc123.ngrok-free.app".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let answer = server
            .call(
                "GET",
                "/api/webhooks",
                &[("host", &host), ("authorization", &auth)],
                "",
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "Host: {host}");
    }
    // Any other name (DNS rebinding, a mistyped proxy) gets 421, token or not.
    for host in [
        "evil.example",
        "abc123.ngrok-free.app.evil.example",
        "127.0.0.2.nip.io",
    ] {
        for path in ["/", "/api/webhooks", "/inspector.js"] {
            let answer = server
                .call("GET", path, &[("host", host), ("authorization", &auth)], "")
                .await;
            assert_eq!(
                answer.status,
                StatusCode::MISDIRECTED_REQUEST,
                "{path} for Host: {host}"
            );
        }
    }
    // The webhook routes do not look at the Host: verified against PUBLIC_URL as before.
    let webhook = server
        .call(
            "POST",
            "/twilio/sms",
            &[
                ("host", "evil.example"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "Body=hi",
        )
        .await;
    assert_eq!(webhook.status, StatusCode::FORBIDDEN);
    let health = server
        .call("GET", "/healthz", &[("host", "evil.example")], "")
        .await;
    assert_eq!(health.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn without_admin_token_a_random_one_goes_to_a_private_file() {
    let server = Process::start(&[], &[]).await;
    let file = server.dir.path().join(".twilio-admin-token");
    let token = std::fs::read_to_string(&file).expect("the admin token file");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 64, "256 random bits in hex: {token:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let without = server.call("GET", "/api/webhooks", &[], "").await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    let with = server
        .call(
            "GET",
            "/api/webhooks",
            &[("authorization", &bearer(&token))],
            "",
        )
        .await;
    assert_eq!(with.status, StatusCode::OK);
    let stdout = server.stdout();
    assert!(
        stdout.contains(".twilio-admin-token"),
        "the banner says where the token is: {stdout}"
    );
    let (output, _dir) = server.stop().await;
    assert!(
        !output.contains(&token),
        "the admin token was printed:\n{output}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn token_files_are_created_without_following_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let victim = tempfile::tempdir().unwrap();
    for name in [".twilio-demo-token", ".twilio-admin-token"] {
        let target = victim.path().join(name);
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(name)).unwrap();
    }
    let server = Process::start_in(dir, &[], &[]).await;
    for name in [".twilio-demo-token", ".twilio-admin-token"] {
        assert_eq!(
            std::fs::read_to_string(victim.path().join(name)).unwrap(),
            "precious\n",
            "{name}: the symlink's target was written"
        );
        let path = server.dir.path().join(name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "{name} is a regular file now");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert!(std::fs::read_to_string(&path).unwrap().trim().len() >= 32);
    }
    server.stop().await;
}
