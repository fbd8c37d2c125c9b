//! Twilio's delivery, simulated (`twilio_delivery`), against the real server over TCP: read
//! timeouts and retries with the same idempotency token, a voice menu's `<Redirect>` loop, and
//! a replay with a fresh token. Each scenario checks that every webhook was processed once (the
//! webhook log: one `processed` per webhook, every copy `copy`) and that every answer the
//! simulated Twilio read was the handler's.

use tower_twilio::replay_guard::ReplayGuardLayer;
use tower_twilio_example_server::{
    routes::VOICE_MENU_PATH,
    twilio_delivery::{Delivered, Delivery, Outcome, Target},
    twilio_presets::{Body, Preset, Signer},
};

use std::time::Duration;

use crate::support::{ACCOUNT, ADMIN_TOKEN, Process, Server, StoreProxy, TOKEN, TestDb, bounded};

/// A webhook for `path_and_fragment` on `server` (the fragment holds the overrides), with the
/// preset's parameters and `overrides`.
fn target(
    server: &Server,
    path_and_fragment: &str,
    preset: &Preset,
    overrides: &[(&str, &str)],
) -> Target {
    target_at(&server.base(), path_and_fragment, preset, overrides)
}

/// The same for the server whose public base URL is `base`.
fn target_at(
    base: &str,
    path_and_fragment: &str,
    preset: &Preset,
    overrides: &[(&str, &str)],
) -> Target {
    let mut params = preset.params(ACCOUNT);
    for (name, value) in overrides {
        params.retain(|(k, _)| k != name);
        params.push(((*name).to_owned(), (*value).to_owned()));
    }
    Target::new(
        &format!("{base}{path_and_fragment}"),
        Body::Form(params),
        Signer::AuthToken(TOKEN.as_bytes()),
    )
    .unwrap()
}

async fn deliver(delivery: &Delivery) -> Delivered {
    bounded("a delivery", delivery.deliver()).await
}

/// The webhook log's outcomes, oldest first.
async fn outcomes(server: &Server) -> Vec<String> {
    let mut log = server.webhooks(100).await;
    log.reverse();
    log.iter()
        .map(|entry| entry["outcome"].as_str().unwrap().to_owned())
        .collect()
}

/// The webhook log's entries (the inspector's API), oldest first.
async fn entries(server: &Server) -> Vec<serde_json::Value> {
    let mut log = server.webhooks(100).await;
    log.reverse();
    log
}

/// Checks that the log's entry `copy` is a copy that points at `first`, the processed webhook
/// whose stored answer it got (what the inspector page shows), and returns when that answer
/// was logged.
fn assert_copy_of(copy: &serde_json::Value, first: &serde_json::Value) -> String {
    assert_eq!(
        (copy["outcome"].as_str(), first["outcome"].as_str()),
        (Some("copy"), Some("processed"))
    );
    let copy_of = &copy["copy_of"];
    assert_eq!(copy_of["id"], first["id"], "{copy}");
    assert_eq!(copy_of["received_at"], first["received_at"], "{copy}");
    let answered_at = copy_of["answered_at"].as_str().unwrap().to_owned();
    // RFC 3339 in one format: ordered as text.
    assert!(
        answered_at.as_str() >= first["received_at"].as_str().unwrap(),
        "{copy}"
    );
    assert!(first["copy_of"].is_null(), "{first}");
    answered_at
}

/// The one answer of a delivery, checked to be a TwiML document the handler wrote.
fn handler_answer(delivered: &Delivered) -> String {
    let answer = delivered
        .answer()
        .unwrap_or_else(|| panic!("Twilio read no answer:\n{delivered}"));
    assert_eq!(
        answer.content_type.as_deref(),
        Some("text/xml; charset=utf-8"),
        "{delivered}"
    );
    let text = answer.text();
    assert!(
        text.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#)
            && text != r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#,
        "not the handler's answer: {text}"
    );
    text
}

/// A slow reply past the read timeout (`rt=5000`, `rc=1`, the default policy): Twilio gives up
/// on the first attempt and retries with the same token while the handler still runs. The
/// retry waits for the first attempt and gets its answer (not 409); the handler ran once.
/// The reply comes 1 s into the retry, whose read timeout leaves 4 s to spare.
#[tokio::test]
async fn a_retry_during_a_slow_first_attempt_gets_the_first_answer() {
    let db = TestDb::sqlite();
    let server = Server::start(db.config_with_account()).await;
    let sms = target(
        &server,
        "/twilio/sms#rt=5000&rc=1",
        &Preset::Sms,
        &[("Body", "slow 6")],
    );
    let delivered = deliver(&Delivery::new(sms)).await;

    assert_eq!(delivered.attempts.len(), 2, "{delivered}");
    assert_eq!(
        delivered.attempts[0].outcome,
        Outcome::ReadTimedOut,
        "{delivered}"
    );
    assert_eq!(
        delivered.attempts[0].idempotency_token, delivered.attempts[1].idempotency_token,
        "a retry carries the same token"
    );
    let answer = handler_answer(&delivered);
    assert!(
        answer.contains("received your message: slow 6 (answered after 6 s)</Message>"),
        "{answer}"
    );
    assert_eq!(outcomes(&server).await, ["processed", "copy"]);
    // The inspector's API points the copy at the first attempt, whose answer was stored
    // after the copy arrived (the copy waited for it).
    let log = entries(&server).await;
    let stored = assert_copy_of(&log[1], &log[0]);
    assert!(
        stored.as_str() > log[1]["received_at"].as_str().unwrap(),
        "{log:?}"
    );
    server.stop().await;
}

/// Twilio's retry of an SMS (the same request with the same token, as after an answer that
/// was lost on the way) gets the same `<Message>`; a replay of the same signed request with a
/// fresh token is not processed again either.
#[tokio::test]
async fn a_retried_or_replayed_sms_gets_the_same_message_and_is_processed_once() {
    let db = TestDb::sqlite();
    let server = Server::start(db.config_with_account()).await;
    let sms = target(&server, "/twilio/sms", &Preset::Sms, &[("Body", "hello")]);
    let first = deliver(&Delivery::new(sms.clone())).await;
    assert_eq!(first.attempts.len(), 1, "{first}");
    let first = handler_answer(&first);
    assert!(
        first.contains("received your message: hello</Message>"),
        "{first}"
    );

    // Twilio's retry: the same request, the same token.
    let retry = deliver(&Delivery::new(sms.clone())).await;
    assert_eq!(handler_answer(&retry), first);

    // A replay: the same signed request with a token of its own.
    let mut replay = sms;
    for (name, value) in &mut replay.request.headers {
        if name.eq_ignore_ascii_case(tower_twilio::signature::IDEMPOTENCY_TOKEN_HEADER) {
            *value = "replayed-with-a-fresh-token".to_owned();
        }
    }
    let replayed = deliver(&Delivery::new(replay)).await;
    assert_eq!(handler_answer(&replayed), first);

    assert_eq!(outcomes(&server).await, ["processed", "copy", "copy"]);
    let log = entries(&server).await;
    assert_copy_of(&log[1], &log[0]);
    assert_copy_of(&log[2], &log[0]);
    server.stop().await;
}

/// The voice menu: the call's first request, then the `<Redirect>` back to the menu when the
/// caller pressed nothing, three times: the same signed request each time, each a new request
/// with a new token. Every pass gets the menu, and each is processed (a loop is not a copy).
/// A retry of one pass (same token) is a copy: the same menu, not processed again.
#[tokio::test]
async fn a_menu_loop_gets_the_menu_every_pass() {
    let db = TestDb::sqlite();
    let server = Server::start(db.config_with_account()).await;
    let call = Preset::Voice.params(ACCOUNT);
    let call_sid = call
        .iter()
        .find(|(k, _)| k == "CallSid")
        .map(|(_, v)| v.clone())
        .unwrap();

    let incoming = deliver(&Delivery::new(target(
        &server,
        "/twilio/voice",
        &Preset::Voice,
        &[("CallSid", &call_sid)],
    )))
    .await;
    let menu = handler_answer(&incoming);
    let redirect = format!(r#"<Redirect method="POST">{VOICE_MENU_PATH}?step=main</Redirect>"#);
    assert!(
        menu.contains(&format!(r#"action="{VOICE_MENU_PATH}?step=choice""#))
            && menu.contains("<Gather")
            && menu.ends_with(&format!("{redirect}</Response>")),
        "{menu}"
    );

    let mut passes = Vec::new();
    for _ in 0..3 {
        // Twilio signs the same URL and parameters again: a new request (new token).
        let pass = target(
            &server,
            &format!("{VOICE_MENU_PATH}?step=main"),
            &Preset::Voice,
            &[("CallSid", &call_sid)],
        );
        let delivered = deliver(&Delivery::new(pass.clone())).await;
        assert_eq!(handler_answer(&delivered), menu, "every pass gets the menu");
        passes.push(pass);
    }
    // Twilio's retry of the last pass: its token again.
    let retry = deliver(&Delivery::new(passes.pop().unwrap())).await;
    assert_eq!(handler_answer(&retry), menu);

    // A digit does something.
    let choice = deliver(&Delivery::new(target(
        &server,
        &format!("{VOICE_MENU_PATH}?step=choice"),
        &Preset::Voice,
        &[("CallSid", &call_sid), ("Digits", "1")],
    )))
    .await;
    let choice = handler_answer(&choice);
    assert!(
        choice.contains("<Say>") && choice.ends_with(&format!("{redirect}</Response>")),
        "{choice}"
    );

    // A caller who presses only `#` (an empty `Digits`) and a step the menu does not know
    // never get a 4xx, which would end the call: no choice, and the menu.
    let empty = deliver(&Delivery::new(target(
        &server,
        &format!("{VOICE_MENU_PATH}?step=choice"),
        &Preset::Voice,
        &[("CallSid", &call_sid), ("Digits", "")],
    )))
    .await;
    let empty = handler_answer(&empty);
    assert!(
        empty.contains("No choice was made") && empty.ends_with(&format!("{redirect}</Response>")),
        "{empty}"
    );
    let unknown = deliver(&Delivery::new(target(
        &server,
        &format!("{VOICE_MENU_PATH}?step=elsewhere"),
        &Preset::Voice,
        &[("CallSid", &call_sid)],
    )))
    .await;
    assert_eq!(
        handler_answer(&unknown),
        menu,
        "an unknown step gets the menu"
    );

    assert_eq!(
        outcomes(&server).await,
        [
            "processed",
            "processed",
            "processed",
            "processed",
            "copy",
            "processed",
            "processed",
            "processed"
        ]
    );
    // The retry points at the pass it retried (the same delivery token), not at the earlier
    // passes of the same signed request.
    let log = entries(&server).await;
    assert_copy_of(&log[4], &log[3]);
    server.stop().await;
}

/// The Fallback URL: the primary's `503` is not retried by default (`rp` names no `5xx`), and
/// the fallback gets the webhook and answers it.
#[tokio::test]
async fn the_fallback_url_gets_the_webhook_when_the_primary_fails() {
    let db = TestDb::sqlite();
    let server = Server::start(db.config_with_account()).await;
    // A path the server verifies and answers 404: the primary fails with a 4xx.
    let primary = target(&server, "/twilio/nowhere#rc=2", &Preset::Sms, &[]);
    let fallback = target(
        &server,
        "/twilio/sms",
        &Preset::Sms,
        &[("Body", "fell back")],
    );
    let delivered = deliver(&Delivery::new(primary).fallback(fallback)).await;
    assert_eq!(
        delivered.attempts.len(),
        2,
        "a 404 is not retried: {delivered}"
    );
    assert!(!delivered.attempts[0].fallback && delivered.attempts[1].fallback);
    assert_eq!(
        delivered.attempts[0]
            .outcome
            .answer()
            .map(|a| a.status.as_u16()),
        Some(404)
    );
    assert!(handler_answer(&delivered).contains("fell back"));
    assert_eq!(outcomes(&server).await, ["failed", "processed"]);
    server.stop().await;
}

/// Nothing listening: a connection failure is retried (`ct` is in the default policy), `rc`
/// times, then the delivery fails with no answer.
#[tokio::test]
async fn a_refused_connection_is_retried_rc_times() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let target = Target::new(
        &format!("http://{addr}/twilio/sms#rc=3&ct=1000"),
        Body::Form(Preset::Sms.params(ACCOUNT)),
        Signer::AuthToken(TOKEN.as_bytes()),
    )
    .unwrap();
    let delivered = deliver(&Delivery::new(target)).await;
    assert_eq!(delivered.attempts.len(), 4, "{delivered}");
    assert!(
        delivered
            .attempts
            .iter()
            .all(|a| matches!(a.outcome, Outcome::ConnectFailed(_))),
        "{delivered}"
    );
    assert!(delivered.answer().is_none());
}

/// `send_webhook --deliver`: the same delivery from the command line, against the real server.
/// The slow first attempt times out, the retry gets the reply, the tool exits with 0.
#[tokio::test]
async fn send_webhook_deliver_shows_every_attempt_and_the_answer() {
    let db = TestDb::sqlite();
    let server = Server::start(db.config_with_account()).await;
    let output = bounded(
        "send_webhook --deliver",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_send_webhook"))
            .args([
                "--deliver",
                "--token",
                TOKEN,
                "--account-sid",
                ACCOUNT,
                "--url",
            ])
            .arg(format!("{}/twilio/sms#rt=4000&rc=1", server.base()))
            .args(["sms", "Body=slow 5"])
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("attempt 1: read timeout (rt)")
            && stdout.contains("attempt 2: answered 200 OK")
            && stdout.contains("received your message: slow 5 (answered after 5 s)</Message>"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("#rt="),
        "the fragment is not requested: {stdout}"
    );
    assert_eq!(outcomes(&server).await, ["processed", "copy"]);
    server.stop().await;
}

/// Two instances behind a load balancer, sharing one Redis: the slow first attempt runs on one,
/// Twilio's retry reaches the other, which waits for the first (through Redis) and gives its
/// answer. Processed once, on the first instance.
#[tokio::test]
#[cfg_attr(
    skip_redis,
    ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
)]
async fn a_retry_on_another_instance_gets_the_first_answer_through_redis() {
    let Some(redis) = crate::support::redis_url() else {
        return;
    };
    const PUBLIC: &str = "http://webhooks.example.test";
    let db = TestDb::sqlite();
    let config = || {
        let mut config = db.config_with_account();
        config.public_url = tower_twilio_example_server::PublicUrlConfig::Fixed(PUBLIC.to_owned());
        config.replay_guard =
            tower_twilio_example_server::replay::ReplayGuardConfig::parse(&redis).unwrap();
        config
    };
    let (first, second) = (Server::start(config()).await, Server::start(config()).await);
    // The preset's MessageSid is fresh: runs of this test share the Redis server.
    let mut params = Preset::Sms.params(ACCOUNT);
    params.retain(|(k, _)| k != "Body");
    params.push(("Body".to_owned(), "slow 6".to_owned()));
    let sms = Target::new(
        &format!("{PUBLIC}/twilio/sms#rt=5000&rc=1"),
        Body::Form(params),
        Signer::AuthToken(TOKEN.as_bytes()),
    )
    .unwrap()
    .balance([first.addr.to_string(), second.addr.to_string()]);
    let delivered = deliver(&Delivery::new(sms)).await;

    assert_eq!(delivered.attempts.len(), 2, "{delivered}");
    assert_eq!(delivered.attempts[0].outcome, Outcome::ReadTimedOut);
    let answer = handler_answer(&delivered);
    assert!(
        answer.contains("received your message: slow 6 (answered after 6 s)</Message>"),
        "{answer}"
    );
    first.webhooks(1).await;
    assert_eq!(outcomes(&second).await, ["processed", "copy"]);
    // One log for both: the copy answered by the second points at the first's webhook.
    let log = entries(&second).await;
    assert_copy_of(&log[1], &log[0]);
    first.stop().await;
    second.stop().await;
}

/// Twilio gave up (`rc=0`) while the handler ran; the server is stopped right after. The
/// handling runs to its end and the shutdown waits for it: the log says `processed`.
#[tokio::test]
async fn a_handling_whose_client_left_is_finished_and_logged_before_shutdown() {
    let db = TestDb::sqlite();
    let server = Server::start(db.config_with_account()).await;
    let sms = target(
        &server,
        "/twilio/sms#rt=1000&rc=0",
        &Preset::Sms,
        &[("Body", "slow 3")],
    );
    let delivered = deliver(&Delivery::new(sms)).await;
    assert_eq!(delivered.attempts.len(), 1, "{delivered}");
    assert_eq!(delivered.attempts[0].outcome, Outcome::ReadTimedOut);
    server.stop().await;

    let log = db.open().await.recent_webhooks(10).await.unwrap();
    let outcomes: Vec<&str> = log.iter().map(|row| row.outcome.as_str()).collect();
    assert_eq!(outcomes, ["processed"]);
}

// ---- a fleet of server processes -------------------------------------------------------------

/// The public URL of the fleet below: one name in front of every instance, as behind a load
/// balancer (the simulator connects to each instance's own address).
const FLEET_URL: &str = "http://webhooks.example.test";

/// A server process of a fleet: the `server` binary as deployed, with the account, the public
/// URL, the admin token, the replay guard's store and the database (shared by the fleet).
async fn fleet_instance(replay_guard: &str, database_url: &str) -> Process {
    Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("PUBLIC_URL", FLEET_URL),
            ("REPLAY_GUARD", replay_guard),
            ("DATABASE_URL", database_url),
        ],
    )
    .await
}

/// The outcomes the webhook log (the fleet's database, read through `server`) holds for the
/// message `sid`, oldest first.
async fn outcomes_of(server: &Process, sid: &str) -> Vec<String> {
    let log = server
        .get_json("/api/webhooks?limit=100", ADMIN_TOKEN)
        .await;
    let mut outcomes: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["message_sid"] == sid)
        .map(|entry| entry["outcome"].as_str().unwrap().to_owned())
        .collect();
    outcomes.reverse();
    outcomes
}

/// When the first instance dies: just after the guard renewed its claim (every two fifths of
/// the lease), so that the dead claim has a whole lease ahead of it while Twilio's retry comes
/// at once: the worst moment for the retry, which must outwait it.
const KILLED_AFTER: Duration =
    Duration::from_millis(ReplayGuardLayer::DEFAULT_LEASE.as_millis() as u64 * 2 / 5 + 50);

/// Two instances sharing the replay store `replay_guard` and the database `database_url`; an
/// SMS whose handler takes 4 s (`slow 4`) reaches the first, which is killed while the handler
/// runs: `SIGKILL`, as a crash or an OOM kill, so nothing of it runs any more (it neither
/// answers, renews its claim nor releases it; stopping it in-process would drop the handling
/// and release the claim, which a crash does not). Twilio sees its connection close and retries
/// (`rt` is in its default policy) with the same token; the load balancer sends the retry to
/// the second instance, which finds the dead instance's claim, waits for its lease to lapse,
/// runs the handler itself and answers within Twilio's 15 s (`tt`: the simulator gives up
/// after it). The webhook is processed once, by the survivor, and Twilio reads the handler's
/// reply.
async fn an_instance_killed_mid_handler(replay_guard: &str, database_url: &str) {
    let mut first = fleet_instance(replay_guard, database_url).await;
    let second = fleet_instance(replay_guard, database_url).await;
    let mut params = Preset::Sms.params(ACCOUNT);
    params.retain(|(k, _)| k != "Body");
    params.push(("Body".to_owned(), "slow 4".to_owned()));
    let sid = params
        .iter()
        .find(|(k, _)| k == "MessageSid")
        .map(|(_, v)| v.clone())
        .unwrap();
    let sms = Target::new(
        &format!("{FLEET_URL}/twilio/sms"),
        Body::Form(params),
        Signer::AuthToken(TOKEN.as_bytes()),
    )
    .unwrap()
    .balance([first.addr.to_string(), second.addr.to_string()]);
    let delivery = tokio::spawn(async move { Delivery::new(sms).deliver().await });

    // The handler runs on the first instance (it logs the message as it starts), holding the
    // claim; then the instance dies.
    first.wait_for_log_line(&["incoming message", &sid]).await;
    tokio::time::sleep(KILLED_AFTER).await;
    let killed = first.kill();
    let delivered = bounded("the delivery", delivery).await.unwrap();

    assert_eq!(delivered.attempts.len(), 2, "{delivered}");
    assert!(
        matches!(delivered.attempts[0].outcome, Outcome::ReadFailed(_)),
        "the killed instance's connection closed: {delivered}"
    );
    assert_eq!(
        delivered.attempts[0].idempotency_token, delivered.attempts[1].idempotency_token,
        "a retry carries the same token"
    );
    let answer = handler_answer(&delivered);
    assert!(
        answer.contains("received your message: slow 4 (answered after 4 s)</Message>"),
        "{answer}"
    );
    // Processed once, by the survivor; the dead instance's row stays at `verified` (its
    // handler never answered), if its log writer got that far.
    let outcomes = outcomes_of(&second, &sid).await;
    let processed = outcomes.iter().filter(|o| *o == "processed").count();
    assert_eq!(processed, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o == "processed" || o == "verified"),
        "{outcomes:?}\n{killed}"
    );
    second.stop().await;
}

#[tokio::test]
#[cfg_attr(
    skip_redis,
    ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
)]
async fn an_instance_killed_mid_handler_leaves_the_retry_to_the_other_through_redis() {
    let Some(redis) = crate::support::redis_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("webhooks.db");
    an_instance_killed_mid_handler(&redis, database.to_str().unwrap()).await;
}

#[tokio::test]
#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
async fn an_instance_killed_mid_handler_leaves_the_retry_to_the_other_through_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (admin_url, name) = db.postgres.clone().unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&name);
    an_instance_killed_mid_handler(url.as_str(), url.as_str()).await;
    db.drop_database().await;
}

/// The replay store goes down under a running server process (`REPLAY_GUARD` through a proxy
/// that the test cuts: to the server, the store's port refuses connections and its open
/// connections close, as when the store stops). With the default `StoreFailure::RunUnguarded`
/// nothing Twilio delivers is lost: an SMS, Twilio's retry of it and a call are each answered
/// by the handler (Twilio's default policy would not retry a 503), and each degraded request
/// is reported once, at `ERROR` (`replay_store_failed`, without the message's text or
/// numbers) and in `tower_twilio_replay_degraded_total`. The price, as documented: the retry
/// that arrived while the store was down ran the handler again.
async fn the_store_down(store_url: &str, mut proxy: StoreProxy) {
    let server = Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("REPLAY_GUARD", store_url),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let base = format!("http://{}", server.addr);

    // While the store is up, Twilio's retry is a copy.
    let up = target_at(&base, "/twilio/sms", &Preset::Sms, &[("Body", "store up")]);
    let first = handler_answer(&deliver(&Delivery::new(up.clone())).await);
    assert_eq!(handler_answer(&deliver(&Delivery::new(up)).await), first);

    proxy.stop().await;
    let sms = target_at(
        &base,
        "/twilio/sms",
        &Preset::Sms,
        &[("Body", "while the store is down")],
    );
    let answers = [
        deliver(&Delivery::new(sms.clone())).await,
        // Twilio's retry of it (an answer lost on the way).
        deliver(&Delivery::new(sms)).await,
        deliver(&Delivery::new(target_at(
            &base,
            "/twilio/voice",
            &Preset::Voice,
            &[],
        )))
        .await,
    ];
    for delivered in &answers[..2] {
        assert_eq!(delivered.attempts.len(), 1, "{delivered}");
        let answer = handler_answer(delivered);
        assert!(
            answer.contains("received your message: while the store is down</Message>"),
            "{answer}"
        );
    }
    assert_eq!(answers[2].attempts.len(), 1, "{}", answers[2]);
    assert!(handler_answer(&answers[2]).contains("<Gather"));

    let log = server.get_json("/api/webhooks?limit=10", ADMIN_TOKEN).await;
    let mut outcomes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["outcome"].as_str().unwrap())
        .collect();
    outcomes.reverse();
    assert_eq!(
        outcomes,
        ["processed", "copy", "processed", "processed", "processed"]
    );
    let metrics = server
        .call(
            "GET",
            "/metrics",
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            "",
        )
        .await
        .body;
    assert!(
        metrics
            .lines()
            .any(|line| line == "tower_twilio_replay_degraded_total{reason=\"store_failed\"} 3"),
        "{metrics}"
    );
    let (output, _) = server.stop().await;
    let reports: Vec<serde_json::Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["event_type"] == "replay_store_failed")
        .collect();
    assert_eq!(
        reports.len(),
        3,
        "one report per degraded request:\n{output}"
    );
    for report in &reports {
        assert_eq!(report["level"], "ERROR", "{report}");
        let text = report.to_string();
        assert!(
            !text.contains("while the store is down") && !text.contains("4155550100"),
            "no parameter value: {text}"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    skip_redis,
    ignore = "needs Redis: set TWILIO_TEST_REDIS_URL (scripts/test_redis.sh start DIR prints one)"
)]
async fn with_redis_down_every_webhook_is_answered_by_the_handler_and_reported() {
    let Some(redis) = crate::support::redis_url() else {
        return;
    };
    let redis = url::Url::parse(&redis).unwrap();
    let upstream = format!(
        "{}:{}",
        redis.host_str().unwrap(),
        redis.port().unwrap_or(6379)
    );
    let proxy = StoreProxy::start(upstream).await;
    let mut through = redis.clone();
    through.set_port(Some(proxy.addr.port())).unwrap();
    through.set_host(Some("127.0.0.1")).unwrap();
    the_store_down(through.as_str(), proxy).await;
}

#[tokio::test]
#[cfg_attr(
    skip_postgres,
    ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
)]
async fn with_postgres_down_every_webhook_is_answered_by_the_handler_and_reported() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (admin_url, name) = db.postgres.clone().unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&name);
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = StoreProxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    the_store_down(url.as_str(), proxy).await;
    db.drop_database().await;
}
