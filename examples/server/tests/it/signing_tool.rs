//! The signing tool as a user runs it.

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::Command,
};

use base64::Engine as _;
use hmac::{KeyInit, Mac};

/// A one-shot HTTP server on loopback that answers 204 to the first request.
fn answer_once() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
        }
    });
    addr
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
