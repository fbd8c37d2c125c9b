//! Voice: call status callbacks recorded per `CallSid`, recording status callbacks accepted and
//! recorded beside the call, both in the webhook log.

use http::StatusCode;
use serde_json::Value;
use tower_twilio_example_server::twilio_presets::CALL_STATUSES;

use crate::support::{ACCOUNT, Server, TOKEN, TestDb, form_webhook, on_both_databases};

on_both_databases! {
    /// Every `CallStatus` value is recorded in order; a recording callback is recorded beside
    /// the call; both show in the webhook log.
    call_and_recording_callbacks_are_recorded;
}

async fn call_and_recording_callbacks_are_recorded(db: TestDb) {
    let server = Server::start(db.config_with_account()).await;
    let call = "CA6666666666666666666666666666call";
    for &value in CALL_STATUSES {
        let callback = form_webhook(
            &server,
            "/twilio/status",
            TOKEN,
            &[
                ("AccountSid", ACCOUNT),
                ("ApiVersion", "2010-04-01"),
                ("CallSid", call),
                ("CallStatus", value),
                ("Direction", "inbound"),
                ("From", "+14155550100"),
                ("To", "+14155550199"),
                ("CallDuration", if value == "completed" { "42" } else { "" }),
            ],
        );
        let (code, body, _) = server.send(&callback).await;
        assert_eq!(code, StatusCode::NO_CONTENT, "{value}: {body}");
    }
    let recording = form_webhook(
        &server,
        "/twilio/status",
        TOKEN,
        &[
            ("AccountSid", ACCOUNT),
            ("CallSid", call),
            ("RecordingSid", "RE6666666666666666666666666666reco"),
            (
                "RecordingUrl",
                "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE",
            ),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "41"),
            ("RecordingChannels", "1"),
            ("RecordingSource", "DialVerb"),
        ],
    );
    let (code, body, _) = server.send(&recording).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");

    let (code, body) = server.get(&format!("/api/calls/{call}")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["call_sid"], call);
    let record = &answer["records"][0];
    assert_eq!(record["tenant_id"], "default");
    assert_eq!(record["account_sid"], ACCOUNT);
    assert_eq!(record["status"], "failed");
    let history: Vec<&str> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, CALL_STATUSES);
    assert_eq!(record["history"][4]["duration"], "42");
    let recordings = record["recordings"].as_array().unwrap();
    assert_eq!(recordings.len(), 1);
    assert_eq!(
        recordings[0]["recording_sid"],
        "RE6666666666666666666666666666reco"
    );
    assert_eq!(recordings[0]["status"], "completed");
    assert_eq!(recordings[0]["duration"], "41");

    let log = server.webhooks(20).await;
    assert_eq!(log[0]["call_sid"], call);
    assert_eq!(log[0]["recording_status"], "completed");
    assert_eq!(log[0]["outcome"], "processed");
    assert_eq!(log[1]["call_status"], "failed");
    assert!(log.iter().all(|e| e["outcome"] == "processed"), "{log:#?}");

    // A callback with neither a message, a call nor a recording status is the handler's 400.
    let neither = form_webhook(
        &server,
        "/twilio/status",
        TOKEN,
        &[("AccountSid", ACCOUNT), ("CallSid", call)],
    );
    assert_eq!(server.send(&neither).await.0, StatusCode::BAD_REQUEST);
    let (code, _) = server.get("/api/calls/CA_not_a_call").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    server.stop().await;
    db.drop_database().await;
}

/// The signing tool's `call-status` and `recording` presets, sent to the server binary, are
/// accepted and recorded as the call's timeline.
#[tokio::test]
async fn the_signing_tool_sends_call_and_recording_callbacks() {
    let server = crate::support::Process::start(
        &[],
        &[
            ("ADMIN_TOKEN", "admin-token-0123456789"),
            ("TWILIO_ACCOUNT_SID", ACCOUNT),
            ("TWILIO_AUTH_TOKEN", TOKEN),
        ],
    )
    .await;
    let token_file = server.dir.path().join("auth.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let call = "CA8888888888888888888888888888tool";
    let send = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_send_webhook"))
            .arg("--token-file")
            .arg(&token_file)
            .args([
                "--account-sid",
                ACCOUNT,
                "--base-url",
                &format!("http://{}", server.addr),
            ])
            .args(["--expect", "204"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "send_webhook {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let call_sid = format!("CallSid={call}");
    send(&["call-status", "--status", "ringing", &call_sid]);
    send(&["call-status", &call_sid]);
    send(&["recording", &call_sid]);
    let answer = server
        .call(
            "GET",
            &format!("/api/calls/{call}"),
            &[("authorization", "Bearer admin-token-0123456789")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer: Value = serde_json::from_str(&answer.body).unwrap();
    let record = &answer["records"][0];
    assert_eq!(record["history"][0]["status"], "ringing");
    assert_eq!(record["history"][1]["status"], "completed");
    assert_eq!(record["history"][1]["duration"], "42");
    assert_eq!(record["recordings"][0]["status"], "completed");
    assert!(
        record["recordings"][0]["recording_sid"]
            .as_str()
            .unwrap()
            .starts_with("RE")
    );
    server.stop().await;
}
