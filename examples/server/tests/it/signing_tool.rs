//! The signing tool as a user runs it.

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::{Command, Output},
    sync::mpsc,
    time::Duration,
};

use base64::Engine as _;
use hmac::{KeyInit, Mac};

/// A one-shot HTTP server on loopback that answers 204 to the first request.
fn answer_once() -> std::net::SocketAddr {
    answer_once_with("204 No Content").0
}

/// A one-shot HTTP server on loopback that answers the first request with `status` (e.g.
/// `"403 Forbidden"`) and hands over the request head it read.
fn answer_once_with(status: &'static str) -> (std::net::SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            let _ = sender.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (addr, received)
}

/// Runs `send_webhook` with `args` against the SMS path of `addr`.
fn send_sms(addr: std::net::SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_send_webhook"))
        .args(args)
        .args(["--url", &format!("http://{addr}/twilio/sms"), "sms"])
        .output()
        .unwrap()
}

fn explain_line<'a>(stdout: &'a str, label: &str) -> &'a str {
    let prefix = format!("explain: {label}");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
        .trim()
}

#[test]
fn explain_prints_the_url_the_sorted_string_to_sign_and_the_signature() {
    const TOKEN: &str = "explain-test-token-0123456789abcd";
    let addr = answer_once();
    let output = Command::new(env!("CARGO_BIN_EXE_send_webhook"))
        .args([
            "--explain",
            "--token",
            TOKEN,
            "--account-sid",
            "AC00000000000000000000000000000001",
            "--url",
            &format!("http://{addr}/twilio/sms?tenant=7"),
            "sms",
            "Body=Zed",
            "From=+14155550100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");

    let url = explain_line(&stdout, "URL");
    assert_eq!(url, format!("http://{addr}/twilio/sms?tenant=7"));
    let string_to_sign = explain_line(&stdout, "string to sign");
    // The URL first, then the parameters sorted by name, name and value run together.
    assert!(string_to_sign.starts_with(url), "{string_to_sign}");
    let params = &string_to_sign[url.len()..];
    assert!(
        params.starts_with("AccountSidAC00000000000000000000000000000001"),
        "{params}"
    );
    let body_at = params.find("BodyZed").expect("the overridden Body");
    let from_at = params
        .find("From+14155550100")
        .expect("the overridden From");
    assert!(body_at < from_at, "sorted by name: {params}");
    assert!(explain_line(&stdout, "algorithm").starts_with("HMAC_SHA1 with the auth token"));

    // The printed signature is the HMAC-SHA1 of the printed string, computed here on its own.
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(TOKEN.as_bytes()).unwrap();
    mac.update(string_to_sign.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(explain_line(&stdout, "signature"), expected);
    assert!(!stdout.contains(TOKEN), "the token is never printed");
}

/// The exit code, and what the tool printed, for an assertion message.
fn outcome(output: &Output) -> (Option<i32>, String) {
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn unsigned_sends_no_signature_and_expects_a_403() {
    // Against a server that refuses it, as a verifying server must: success.
    let (addr, received) = answer_once_with("403 Forbidden");
    let output = send_sms(addr, &["--unsigned"]);
    let (code, printed) = outcome(&output);
    assert_eq!(code, Some(0), "{printed}");
    let head = received.recv_timeout(Duration::from_secs(30)).unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /twilio/sms "), "{head}");
    assert!(!head.contains("x-twilio-signature"), "{head}");
    assert!(
        head.contains("content-type: application/x-www-form-urlencoded"),
        "{head}"
    );

    // Against a server that accepts it (one that does not verify): failure, saying why.
    let (addr, _received) = answer_once_with("200 OK");
    let output = send_sms(addr, &["--unsigned"]);
    let (code, printed) = outcome(&output);
    assert_eq!(code, Some(1), "{printed}");
    assert!(
        printed.contains("unexpected status 200 OK (expected 403"),
        "{printed}"
    );
}

#[test]
fn a_signed_request_answered_with_a_403_exits_with_1_unless_expected() {
    const TOKEN: &[&str] = &["--token", "expect-test-token-0123456789abcd"];
    let (addr, received) = answer_once_with("403 Forbidden");
    let output = send_sms(addr, TOKEN);
    let (code, printed) = outcome(&output);
    assert_eq!(code, Some(1), "{printed}");
    assert!(
        printed.contains("unexpected status 403 Forbidden (expected 2xx"),
        "{printed}"
    );
    let head = received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        head.to_ascii_lowercase().contains("x-twilio-signature: "),
        "{head}"
    );

    // A negative test names the status it wants.
    let (addr, _) = answer_once_with("403 Forbidden");
    let output = send_sms(addr, &[TOKEN, &["--expect", "403"]].concat());
    let (code, printed) = outcome(&output);
    assert_eq!(code, Some(0), "{printed}");

    // `--expect 403` against a 200 fails; `--expect any` takes whatever comes.
    let (addr, _) = answer_once_with("200 OK");
    let output = send_sms(addr, &[TOKEN, &["--expect", "403"]].concat());
    assert_eq!(outcome(&output).0, Some(1), "{}", outcome(&output).1);
    let (addr, _) = answer_once_with("500 Internal Server Error");
    let output = send_sms(addr, &[TOKEN, &["--expect", "any"]].concat());
    assert_eq!(outcome(&output).0, Some(0), "{}", outcome(&output).1);

    // A malformed --expect is a usage error (2), before anything is sent.
    let output = send_sms(addr, &[TOKEN, &["--expect", "4xx"]].concat());
    assert_eq!(outcome(&output).0, Some(2), "{}", outcome(&output).1);
}

#[test]
fn unsigned_needs_no_secret_and_takes_none() {
    let (addr, _) = answer_once_with("403 Forbidden");
    let output = Command::new(env!("CARGO_BIN_EXE_send_webhook"))
        .env_remove("TWILIO_AUTH_TOKEN")
        .args(["--unsigned", "--url", &format!("http://{addr}/twilio/sms")])
        .output()
        .unwrap();
    assert_eq!(outcome(&output).0, Some(0), "{}", outcome(&output).1);
    // An exported token (as the quick start has) is left unused rather than refused.
    let (addr, received) = answer_once_with("403 Forbidden");
    let output = Command::new(env!("CARGO_BIN_EXE_send_webhook"))
        .env("TWILIO_AUTH_TOKEN", "exported-token-0123456789abcdef")
        .args(["--unsigned", "--url", &format!("http://{addr}/twilio/sms")])
        .output()
        .unwrap();
    assert_eq!(outcome(&output).0, Some(0), "{}", outcome(&output).1);
    let head = received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("x-twilio-signature"),
        "{head}"
    );
    // A token file, though, is a contradiction.
    let output = send_sms(addr, &["--unsigned", "--token-file", "x"]);
    let (code, printed) = outcome(&output);
    assert_eq!(code, Some(2), "{printed}");
    assert!(printed.contains("cannot be used with"), "{printed}");
}

/// The start-up message of the server in demo mode, followed word for word: the two printed
/// `send_webhook` commands pass (the signed SMS answered, the wrong token refused as the
/// command expects), and the printed webhook-log command shows one processed and one rejected.
#[tokio::test]
async fn the_commands_the_demo_server_prints_pass() {
    let server = crate::support::Process::start(&[], &[]).await;
    let stdout = server.stdout();
    let prefix = "cargo run -p tower-twilio-example-server --bin send_webhook -- ";
    let commands: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix(prefix))
        .collect();
    assert_eq!(commands.len(), 2, "{stdout}");
    for command in &commands {
        let args: Vec<&str> = command.split_whitespace().collect();
        let output = Command::new(env!("CARGO_BIN_EXE_send_webhook"))
            .args(&args)
            .current_dir(server.dir.path())
            .env_remove("TWILIO_AUTH_TOKEN")
            .env_remove("TWILIO_ACCOUNT_SID")
            .output()
            .unwrap();
        let (code, printed) = outcome(&output);
        assert_eq!(code, Some(0), "send_webhook {command}: {printed}");
    }

    // `curl -s -H "Authorization: Bearer $(cat FILE)" http://ADDR/api/webhooks`
    let curl = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("curl "))
        .unwrap_or_else(|| panic!("no curl command in {stdout}"));
    let token_file = curl
        .split("$(cat ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no token file in {curl}"));
    let url = curl.rsplit(' ').next().unwrap();
    let path = url
        .strip_prefix(&format!("http://{}", server.addr))
        .unwrap_or_else(|| panic!("{url} is not this server's"));
    let token = std::fs::read_to_string(server.dir.path().join(token_file)).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    // The log is written behind the response: wait for both entries (bounded).
    let deadline = std::time::Instant::now() + crate::support::LIMIT;
    loop {
        let answer = server
            .call("GET", path, &[("authorization", &bearer)], "")
            .await;
        assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.body);
        let log: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        let outcomes: Vec<String> = log
            .as_array()
            .or_else(|| log["webhooks"].as_array())
            .unwrap_or_else(|| panic!("{log}"))
            .iter()
            .map(|entry| entry["outcome"].as_str().unwrap().to_owned())
            .collect();
        if outcomes.iter().any(|o| o == "processed") && outcomes.iter().any(|o| o == "rejected") {
            assert_eq!(outcomes.len(), 2, "{outcomes:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log shows {outcomes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
