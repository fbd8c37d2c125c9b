//! The inspector page (`GET /`) in headless Chromium, driven through ChromeDriver with
//! fantoccini: without the admin token the page shows nothing but a form (and a wrong token is
//! refused), under a foreign name (DNS rebinding) it is refused even with the token; opened
//! with the token in the URL fragment it keeps it in the tab, sets no cookie, and another
//! local service the browser visits receives nothing of it; a test SMS sent with the page's
//! button shows up verified, a retried SMS shows up as a copy answered with the first answer,
//! message and call timelines show, and a forged request whose path, query, `User-Agent` and
//! `AccountSid` carry `<script>` shows up rejected, with those values as text.
//!
//! `.ci/run` installs Debian's `chromium` and `chromium-driver`. Elsewhere, without them, the
//! test is reported as ignored with the reason (`build.rs` sets `skip_browser`); when `CI` is
//! set it runs and fails without them, so CI cannot skip it.

use std::{
    net::TcpListener as StdListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use tower_twilio_example_server::twilio_presets::{Body, Preset, Signer, sign_request};

use crate::support::{ADMIN_TOKEN, Server, TestDb, bounded};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// ChromeDriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.exists().then_some(path)
}

/// Starts ChromeDriver, or explains why not (and fails under CI).
fn driver() -> Option<Driver> {
    let (Some(chromedriver), Some(_)) = (
        binary("CHROMEDRIVER", CHROMEDRIVER),
        binary("CHROME_BIN", CHROMIUM),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: install chromium and chromium-driver"
        );
        eprintln!(
            "inspector browser test: skipped (no {CHROMIUM} or {CHROMEDRIVER}; \
             apt-get install chromium chromium-driver)"
        );
        return None;
    };
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    Some(Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    })
}

async fn connect(driver: &Driver) -> Browser {
    let chromium = binary("CHROME_BIN", CHROMIUM).unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                // A foreign name for this machine, as a rebinding attacker's page would use.
                "--host-resolver-rules=MAP rebound.test 127.0.0.1",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(browser) => return browser,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot start a browser session: {error}"),
        }
    }
}

/// Another service on this machine: answers one request on a loopback port of its own and
/// hands over the request's head as it arrived.
async fn other_local_service() -> (u16, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let body = "another service";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });
    (port, task)
}

/// The page's rows as (outcome, path, tenant, account, user agent, detail, message, client).
async fn rows(browser: &Browser) -> Vec<[String; 8]> {
    let script = "return [...document.querySelectorAll('#webhooks tr[data-outcome]')].map(tr => [
        tr.dataset.outcome,
        tr.querySelector('.path').textContent,
        tr.querySelector('.tenant').textContent,
        tr.querySelector('.account').textContent,
        tr.querySelector('.ua').textContent,
        tr.querySelector('.detail').textContent,
        tr.querySelector('.message').textContent,
        tr.querySelector('.client').textContent,
    ]);";
    let value = browser.execute(script, vec![]).await.unwrap();
    serde_json::from_value(value).unwrap()
}

/// Polls the page until `found` holds for some row.
async fn wait_for_row(
    browser: &Browser,
    what: &str,
    found: impl Fn(&[String; 8]) -> bool,
) -> [String; 8] {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(row) = rows(browser).await.into_iter().find(|row| found(row)) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not on the page: {:?}",
            rows(browser).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser,
    ignore = "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver, or set CHROME_BIN and CHROMEDRIVER"
)]
async fn the_inspector_shows_webhooks_live_and_keeps_request_data_as_text() {
    let Some(driver) = driver() else { return };
    let db = TestDb::sqlite();
    let server = Server::start(db.config()).await;
    assert!(server.startup.demo.is_some(), "demo mode");

    // The page (a shell without data: no token needed) carries a strict
    // Content-Security-Policy.
    let page = Request::get(format!("{}/", server.base()))
        .body(Full::default())
        .unwrap();
    let response = bounded("page", server.client.request(page)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    let browser = connect(&driver).await;
    let body_text = || async {
        let value = browser
            .execute("return document.body.innerText", vec![])
            .await
            .unwrap();
        value.as_str().unwrap_or_default().to_owned()
    };

    // Without the token: the form, and nothing from the log.
    browser.goto(&format!("{}/", server.base())).await.unwrap();
    assert!(
        body_text().await.contains("enter the admin token"),
        "{}",
        body_text().await
    );
    let app_hidden = browser
        .execute("return document.getElementById('app').hidden", vec![])
        .await
        .unwrap();
    assert_eq!(app_hidden, json!(true));
    // A wrong token is refused by the API, and the form says so.
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("not-the-admin-token")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !body_text().await.contains("The admin token was refused.") {
        assert!(Instant::now() < deadline, "{}", body_text().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Under a foreign name, even with the token: 421.
    let port = server.addr.port();
    browser
        .goto(&format!("http://rebound.test:{port}/#token={ADMIN_TOKEN}"))
        .await
        .unwrap();
    assert!(
        body_text().await.starts_with("misdirected request"),
        "{}",
        body_text().await
    );

    // With the token in the URL fragment (never sent to a server): taken by the page, which
    // removes it from the address bar and keeps it in the tab; no cookie at all.
    browser
        .goto(&format!("{}/#token={ADMIN_TOKEN}", server.base()))
        .await
        .unwrap();
    let url = browser.current_url().await.unwrap();
    assert_eq!(
        url.as_str(),
        format!("{}/", server.base()),
        "the token left the address bar"
    );
    assert!(browser.get_all_cookies().await.unwrap().is_empty());

    // Another service on this machine, on another port, gets nothing of the admin credential
    // from this browser.
    let (other_port, other) = other_local_service().await;
    browser
        .goto(&format!("http://127.0.0.1:{other_port}/"))
        .await
        .unwrap();
    let head = bounded("the other service's request", other).await.unwrap();
    assert!(head.starts_with("GET / "), "{head}");
    assert!(
        !head.contains(ADMIN_TOKEN) && !head.to_ascii_lowercase().contains("twilio_admin"),
        "another local service received the admin credential:\n{head}"
    );
    // Back on the page, the tab still has the token.
    browser.back().await.unwrap();

    // A newcomer presses the button and sees a verified webhook.
    browser
        .find(Locator::Id("send-test"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let verified = wait_for_row(&browser, "the test SMS", |row| row[0] == "processed").await;
    assert_eq!(verified[1], "/twilio/sms");
    assert_eq!(verified[2], "demo");
    assert!(
        verified[5].contains("handler 200") && verified[5].contains("primary"),
        "{verified:?}"
    );

    // Status callbacks for a message show as its timeline.
    let token_file = &server.startup.demo.as_ref().unwrap().token_file;
    let token = std::fs::read_to_string(token_file).unwrap();
    let account = server.startup.demo.as_ref().unwrap().account_sid.clone();
    for status in ["sent", "delivered", "read"] {
        let callback = server.webhook(
            &crate::support::status(status),
            &account,
            token.trim(),
            &[("MessageSid", "SM0000inspector0000")],
        );
        assert_eq!(server.send(&callback).await.0, StatusCode::NO_CONTENT);
    }
    let timeline = wait_for_row(&browser, "the status timeline", |row| {
        row[6].contains("sent") && row[6].contains("read")
    })
    .await;
    assert!(
        timeline[6].starts_with("SM0000inspector0000") && timeline[6].contains("delivered"),
        "{timeline:?}"
    );
    // The client cell: the IP, then (on its own line) the 32-digit request id.
    let (ip, request_id) = timeline[7].split_at(9);
    assert_eq!(ip, "127.0.0.1", "client IP shown: {timeline:?}");
    assert!(
        request_id.len() == 32 && request_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "request id shown: {timeline:?}"
    );
    let order: Vec<String> = serde_json::from_value(
        browser
            .execute(
                "return [...document.querySelector('#webhooks .message-timeline').children].map(s => s.textContent)",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(order, ["sent", "delivered", "read"]);

    // Call status and recording callbacks show as the call's timeline.
    for (name, value) in [
        ("CallStatus", "ringing"),
        ("CallStatus", "in-progress"),
        ("CallStatus", "completed"),
        ("RecordingStatus", "completed"),
    ] {
        let callback = crate::support::form_webhook(
            &server,
            "/twilio/status",
            token.trim(),
            &[
                ("AccountSid", &account),
                ("CallSid", "CA0000inspector0000"),
                (name, value),
            ],
        );
        assert_eq!(server.send(&callback).await.0, StatusCode::NO_CONTENT);
    }
    let call = wait_for_row(&browser, "the call timeline", |row| {
        row[6].starts_with("CA0000inspector0000") && row[6].contains("recording completed")
    })
    .await;
    let order: Vec<String> = serde_json::from_value(
        browser
            .execute(
                "return [...document.querySelector('#webhooks .call-timeline').children].map(s => s.textContent)",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(order, ["ringing", "in-progress", "completed"], "{call:?}");

    // Twilio's retry of an SMS (the same signed request again): the replay guard answers it
    // with the first answer it stored, and the page says so, naming the row of that answer.
    let sms = server.webhook(&Preset::Sms, &account, token.trim(), &[("Body", "again")]);
    let (status, first, _) = server.send(&sms).await;
    assert_eq!(status, StatusCode::OK);
    let (status, retry, _) = server.send(&sms).await;
    assert_eq!((status, &retry), (StatusCode::OK, &first));
    let copy = wait_for_row(&browser, "the copy", |row| row[0] == "copy").await;
    let [first_id, first_outcome, first_message]: [String; 3] = serde_json::from_value(
        browser
            .execute(
                "const copy = document.querySelector('#webhooks tr[data-outcome=copy]');
                 const first = document.querySelector(`#webhooks tr[data-id=\"${copy.dataset.copyOf}\"]`);
                 return [copy.dataset.copyOf, first.dataset.outcome, first.querySelector('.message').textContent];",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first_outcome, "processed");
    assert_eq!(first_message, copy[6], "the same message");
    let detail = &copy[5];
    let prefix = format!("copy: answered with the first answer (#{first_id}, stored ");
    assert!(
        detail.starts_with(&prefix) && detail.ends_with(") · primary"),
        "{copy:?}"
    );
    // Nothing of the message itself.
    assert!(
        !copy
            .iter()
            .any(|cell| cell.contains("again") || cell.contains("4155550100")),
        "{copy:?}"
    );

    // The forged button gives a rejection.
    browser
        .find(Locator::Id("send-forged"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_row(&browser, "the forged SMS", |row| {
        row[0] == "rejected" && row[5] == "signature_mismatch"
    })
    .await;

    // A webhook signed for the https URL a tunnel would have: rejected, and (demo mode turns the
    // mismatch doctor on) explained on a row of its own under it.
    let tunnelled = sign_request(
        "https://hooks.example.com/twilio/status",
        Body::Form(crate::support::status("delivered").params(&account)),
        Signer::AuthToken(token.trim().as_bytes()),
    );
    let mut request = Request::post(format!("{}/twilio/status", server.base()))
        .header("host", "hooks.example.com");
    for (name, value) in &tunnelled.headers {
        request = request.header(name, value);
    }
    let response = bounded(
        "tunnelled request",
        server
            .client
            .request(request.body(Full::from(tunnelled.body.clone())).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let deadline = Instant::now() + Duration::from_secs(20);
    let diagnosis = loop {
        let text = browser
            .execute(
                "const d = document.querySelector('#webhooks tr.diagnosis'); return d && [d.previousElementSibling.dataset.outcome, d.textContent];",
                vec![],
            )
            .await
            .unwrap();
        if let Some([outcome, text]) = serde_json::from_value::<Option<[String; 2]>>(text).unwrap()
        {
            break (outcome, text);
        }
        assert!(Instant::now() < deadline, "no diagnosis row");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(diagnosis.0, "rejected");
    assert_eq!(
        diagnosis.1,
        "The signature matches https://hooks.example.com/twilio/status — fix: set PUBLIC_URL=https://hooks.example.com"
    );

    // A forged request carrying script everywhere a request can.
    let body = "AccountSid=%3Cscript%3Ealert(4)%3C%2Fscript%3E&Body=hi";
    let forged = Request::post(format!(
        "{}/twilio/%3Cscript%3Ealert(1)%3C/script%3E?%3Cscript%3Ealert(2)%3C/script%3E=x",
        server.base()
    ))
    .header("content-type", "application/x-www-form-urlencoded")
    .header("user-agent", "<script>alert(3)</script>")
    .header("x-twilio-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    .body(Full::from(body))
    .unwrap();
    let response = bounded("forged request", server.client.request(forged))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let row = wait_for_row(&browser, "the scripted forgery", |row| {
        row[4].contains("alert(3)")
    })
    .await;
    assert_eq!(row[0], "rejected");
    assert_eq!(
        row[1],
        // The query's names are kept, its values redacted (the request is not verified).
        "/twilio/<script>alert(1)</script>?<script>alert(2)</script>=[redacted]"
    );
    // A malformed AccountSid is refused before any lookup and never recorded.
    assert_eq!(row[3], "");
    assert_eq!(row[5], "invalid_account_sid");
    assert_eq!(row[4], "<script>alert(3)</script>");
    // Shown as text: the only script element is the page's own, and no dialog opened.
    let scripts = browser
        .execute("return document.querySelectorAll('script').length", vec![])
        .await
        .unwrap();
    assert_eq!(scripts, json!(1));
    assert!(browser.get_alert_text().await.is_err(), "an alert opened");

    // The README's picture, refreshed on request.
    let png = browser.screenshot().await.unwrap();
    let path = if std::env::var_os("UPDATE_DOCS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/inspector.png")
    } else {
        db.dir.path().join("inspector.png")
    };
    std::fs::write(&path, png).unwrap();
    browser.close().await.unwrap();
    server.stop().await;
}
