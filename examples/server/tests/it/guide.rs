//! The setup guide's examples of the server's JSON API (`docs/TWILIO_WEBHOOK_SETUP.md`, each
//! after an `<!-- api-example:NAME -->` marker) have the fields the API really answers with: the
//! same keys at every level, and for `/api/webhooks` the same outcome, reason, status and the
//! other values a webhook of the same kind gets.

use http::StatusCode;
use serde_json::Value;
use tower_twilio_example_server::twilio_presets::Preset;

use crate::support::{ACCOUNT, BodyParam, Server, TOKEN, TestDb, on_both_databases, status};

/// The guide, read from the repository.
fn guide() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/TWILIO_WEBHOOK_SETUP.md");
    std::fs::read_to_string(path).unwrap()
}

/// The JSON block after `<!-- api-example:{name} -->`.
fn example(guide: &str, name: &str) -> Value {
    let marker = format!("<!-- api-example:{name} -->\n```json\n");
    let from = guide
        .find(&marker)
        .unwrap_or_else(|| panic!("the guide has the marker {marker:?}"))
        + marker.len();
    let to = guide[from..].find("\n```").unwrap() + from;
    serde_json::from_str(&guide[from..to])
        .unwrap_or_else(|e| panic!("the {name} example is JSON: {e}"))
}

/// The keys of `value` at every level (an array by its first element); any other value is
/// `null`.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), shape(v))).collect(),
        Value::Array(items) => items.first().map(shape).into_iter().collect(),
        _ => Value::Null,
    }
}

on_both_databases! {
    /// `/api/webhooks` (a rejected and a processed SMS, and a copy's `copy_of`),
    /// `/api/messages/{sid}` and `/api/calls/{sid}` answer what the guide shows.
    the_guides_api_examples_are_what_the_api_answers;
}

async fn the_guides_api_examples_are_what_the_api_answers(db: TestDb) {
    let guide = guide();
    let server = Server::start(db.config_with_account()).await;

    // The webhook log: a processed SMS, then a forged one, newest first.
    let sms = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[]);
    assert_eq!(server.send(&sms).await.0, StatusCode::OK);
    let forged = server.webhook(&Preset::Sms, ACCOUNT, "not-the-auth-token", &[]);
    assert_eq!(server.send(&forged).await.0, StatusCode::FORBIDDEN);
    let log = server.webhooks(2).await;
    let documented = example(&guide, "webhooks");
    let documented = documented.as_array().unwrap();
    assert_eq!(documented.len(), log.len());
    for (documented, real) in documented.iter().zip(&log) {
        assert_eq!(shape(documented), shape(real), "{documented}\n{real}");
        for field in [
            "method",
            "path",
            "query",
            "user_agent",
            "outcome",
            "rejection_reason",
            "message_status",
            "credential",
            "status_code",
            "client_ip",
            "call_sid",
            "call_status",
            "recording_status",
            "diagnosis",
            "copy_of",
        ] {
            assert_eq!(documented[field], real[field], "{field}: {real}");
        }
    }

    // A copy points at its first webhook.
    assert_eq!(server.send(&sms).await.0, StatusCode::OK);
    let copy = &server.webhooks(1).await[0];
    assert_eq!(copy["outcome"], "copy");
    let at = guide.find(r#""outcome": "copy""#).unwrap();
    let copy_of = guide[at..].find(r#""copy_of": "#).unwrap() + at + r#""copy_of": "#.len();
    let documented: Value = serde_json::Deserializer::from_str(&guide[copy_of..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(shape(&documented), shape(&copy["copy_of"]), "{copy}");

    // A message's records: two status callbacks.
    let sent = server.webhook(&status("sent"), ACCOUNT, TOKEN, &[]);
    let sid = sent.body_param("MessageSid").unwrap();
    let delivered = server.webhook(
        &status("delivered"),
        ACCOUNT,
        TOKEN,
        &[("MessageSid", &sid), ("SmsSid", &sid)],
    );
    for callback in [&sent, &delivered] {
        assert_eq!(server.send(callback).await.0, StatusCode::NO_CONTENT);
    }
    let (code, message) = server.message(&sid).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        shape(&example(&guide, "message")),
        shape(&message),
        "{message}"
    );

    // A call's records: its status callbacks and a recording.
    let ringing = server.webhook(
        &Preset::CallStatus("ringing".to_owned()),
        ACCOUNT,
        TOKEN,
        &[],
    );
    let call_sid = ringing.body_param("CallSid").unwrap();
    let same_call = [("CallSid", call_sid.as_str())];
    let completed = server.webhook(
        &Preset::CallStatus("completed".to_owned()),
        ACCOUNT,
        TOKEN,
        &same_call,
    );
    let recording = server.webhook(
        &Preset::Recording("completed".to_owned()),
        ACCOUNT,
        TOKEN,
        &same_call,
    );
    for callback in [&ringing, &completed, &recording] {
        assert_eq!(server.send(callback).await.0, StatusCode::NO_CONTENT);
    }
    let (code, body) = server.get(&format!("/api/calls/{call_sid}")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let call: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shape(&example(&guide, "call")), shape(&call), "{call}");

    server.stop().await;
    db.drop_database().await;
}
