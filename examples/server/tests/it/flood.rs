//! A flood of forged requests never delays genuine webhooks: refused requests are logged
//! through a queue of their own that drops (and counts) when full, so they never take the
//! capacity verified webhooks need, even while the database is stalled.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use sqlx::{Connection, Executor};
use tower_twilio_example_server::{db::Location, twilio_presets::Preset};

use crate::support::{ACCOUNT, Server, TOKEN, TestDb, bounded};

/// Forged requests in the flood: more than the log queue of verified webhooks holds
/// (`QUEUED_WEBHOOKS`), so that they would exhaust it if they took from it.
const FORGED: usize = 2_500;
/// Forged requests in flight at once.
const FLOODERS: usize = 32;
/// Genuine SMSs sent while the flood runs.
const GENUINE: usize = 10;

/// The sample `name` in Prometheus text, or 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_webhooks_are_answered_and_logged_during_a_forged_flood() {
    let db = TestDb::sqlite();
    let mut config = db.config_with_account();
    // A genuine webhook that had to wait for the log would get a 503 after this long.
    config.request_timeout = Duration::from_secs(2);
    let server = Server::start(config).await;
    let Location::Sqlite(path) = &db.location else {
        unreachable!()
    };
    let url = format!("sqlite:{}", path.display());
    let dropped_before = sample(
        &server.get("/metrics").await.1,
        tower_twilio_example_server::webhook_log::REFUSED_DROPPED,
    );

    // The database stalls: another connection holds SQLite's write lock, so the log writer
    // cannot write anything until it lets go.
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    blocker.execute("BEGIN IMMEDIATE").await.unwrap();

    // The flood: forged SMSs for the configured account (a wrong token), many at once.
    let answered = Arc::new(AtomicUsize::new(0));
    let forged = server.webhook(&Preset::Sms, ACCOUNT, "not-the-auth-token", &[]);
    let mut flooders = Vec::new();
    for _ in 0..FLOODERS {
        let client = server.client.clone();
        let answered = Arc::clone(&answered);
        let forged = forged.clone();
        let addr = server.addr;
        flooders.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while answered.fetch_add(1, Ordering::Relaxed) < FORGED {
                let mut request =
                    Request::post(format!("http://{addr}{}", forged.path_and_query()));
                for (name, value) in &forged.headers {
                    request = request.header(name, value);
                }
                let request = request
                    .body(Full::new(Bytes::from(forged.body.clone())))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                statuses.push(response.status());
                response.into_body().collect().await.unwrap();
            }
            statuses
        }));
    }
    // Genuine SMSs, once the flood has sent more forged requests than the log queue of
    // verified webhooks could hold: each answered 200, at once.
    bounded("the flood's first part", async {
        while answered.load(Ordering::Relaxed) < 1_200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let sids: Vec<String> = (0..GENUINE).map(|n| format!("SM{n:0>32}")).collect();
    for sid in &sids {
        let sms = server.webhook(&Preset::Sms, ACCOUNT, TOKEN, &[("MessageSid", sid)]);
        let (code, body, _) = server.send(&sms).await;
        assert_eq!(
            code,
            StatusCode::OK,
            "genuine SMS {sid} during the flood: {body}"
        );
    }
    for flooder in flooders {
        let statuses = bounded("the flood", flooder).await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::FORBIDDEN),
            "every forged request is refused at once: {statuses:?}"
        );
    }
    // The database recovers: everything genuine is logged.
    blocker.execute("ROLLBACK").await.unwrap();
    blocker.close().await.unwrap();
    bounded("log flush", server.log.flush()).await;
    let store = sqlx::SqlitePool::connect(&url).await.unwrap();
    let logged: Vec<(String, String)> = sqlx::query_as(
        "SELECT message_sid, outcome FROM webhook_log WHERE message_sid IS NOT NULL AND path = '/twilio/sms'",
    )
    .fetch_all(&store)
    .await
    .unwrap();
    store.close().await;
    for sid in &sids {
        assert!(
            logged.contains(&(sid.clone(), "processed".to_owned())),
            "{sid} is logged as processed: {logged:?}"
        );
    }
    // The refused entries that did not fit were dropped and counted.
    let dropped = sample(
        &server.get("/metrics").await.1,
        tower_twilio_example_server::webhook_log::REFUSED_DROPPED,
    );
    assert!(
        dropped > dropped_before,
        "dropped refused entries are counted ({dropped_before} → {dropped})"
    );
    server.stop().await;
}
