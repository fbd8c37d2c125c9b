//! The persistent webhook log: the layer's `.on_webhook(...)` hook feeds a writer task through
//! a channel; the task keeps one `webhook_log` row per webhook up to date through its stages
//! (received → verified | rejected(reason) → processed | failed(status)), and adds the
//! mismatch doctor's diagnosis to the row when it comes (after the response).
//!
//! # Nothing is lost
//!
//! The hook runs synchronously on the request path, so it cannot wait for the database: it
//! puts the entry on an unbounded channel, which never refuses one. The writer retries a failed
//! write (database briefly down) until it succeeds. On shutdown the server first lets in-flight
//! requests finish (each webhook's final stage is on the channel before its response is
//! sent), then [`LogWriter::drain`] writes whatever is still queued before the process exits.
//!
//! # Memory stays bounded
//!
//! An unbounded channel is bounded here by admission control, not by dropping entries:
//!
//! - Before a request reaches the layer, [`admit`] takes [`PERMITS_PER_WEBHOOK`] permits from
//!   a semaphore of [`QUEUED_WEBHOOKS`] × that many; the writer gives them back once it has
//!   written the webhook's final stage. So at most [`QUEUED_WEBHOOKS`] webhooks (at most three
//!   small entries each: received, verified, final) are ever queued or being written. The
//!   mismatch doctor's diagnoses come on top, bounded by its own budget (20 a second). When the
//!   database falls behind, new webhooks wait for admission (and, past the request timeout,
//!   get a 503 that Twilio retries) instead of piling up in memory. A concurrency limit alone
//!   would not do this: a request finishes long before its entries are written.
//! - The server's concurrency limit bounds the requests in flight, and with them the bodies
//!   being buffered (each at most the layer's 64 KiB limit); its request timeout bounds how
//!   long each holds its memory and its permits. See the crate root for the values.
//!
//! # The log itself stays bounded
//!
//! Every stored field is capped ([`cap`]: 64 characters for ids and statuses, 256 for the
//! user agent, 1 KiB for path and query), so that a forged request cannot make a row large;
//! the writer prunes the table to [`Retention::max_rows`] rows and [`Retention::max_age`]
//! (histories by age too) at start, then every [`Retention::prune_every`] new rows and at least
//! once a minute while webhooks arrive. Each row keeps the client IP and the request id
//! ([`tag_request`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use axum::{extract::ConnectInfo, http::HeaderValue};
use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use tokio::{
    sync::{Semaphore, mpsc, oneshot, watch},
    task::JoinHandle,
};
use tower_twilio::{
    doctor::Diagnosis,
    events::log::{WebhookLogEntry, WebhookStage},
};

use crate::{
    db::{Db, LogRow, now_ms, to_ms},
    twilio_presets::random_hex,
};

/// How long and how many rows the log keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many rows are kept.
    pub max_rows: u32,
    /// Rows (and history entries) older than this are deleted.
    pub max_age: Duration,
}

impl Retention {
    /// 100 000 rows (a few tens of MB) and 30 days.
    pub const DEFAULT: Self = Self {
        max_rows: 100_000,
        max_age: Duration::from_secs(30 * 24 * 3600),
    };

    /// How many new rows may be written between two prunings: a tenth of the limit, so the
    /// table never holds more than 110 % of it.
    pub fn prune_every(self) -> u64 {
        u64::from(self.max_rows / 10).max(1)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The longest a pruning may wait while webhooks arrive.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Field caps, in characters.
const ID_CAP: usize = 64;
const USER_AGENT_CAP: usize = 256;
const URL_PART_CAP: usize = 1024;

/// `text` cut to at most `max` characters, with `…` appended when cut.
pub fn cap(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

fn cap_opt(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| cap(t, max))
}

/// What the server knows of a webhook's request that the layer's log entry does not carry.
#[derive(Clone, Debug)]
struct RequestTags {
    client_ip: Option<String>,
    request_id: String,
}

tokio::task_local! {
    static TAGS: RequestTags;
}

/// The request id header.
const REQUEST_ID: &str = "x-request-id";

/// Before the layer: gives each webhook a request id (keeping a sane `X-Request-Id` a proxy
/// sent, else a random one, so that the layer's security events carry it too), answers with
/// it, and makes it and the client IP available to the log hook.
pub async fn tag_request(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= ID_CAP && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| random_hex(16), str::to_owned);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    let tags = RequestTags {
        client_ip,
        request_id: request_id.clone(),
    };
    let mut response = TAGS.scope(tags, next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// How many webhooks may have log entries queued or being written at once.
pub const QUEUED_WEBHOOKS: u32 = 1024;

/// The most entries one webhook produces: received, verified, and a final stage.
pub const PERMITS_PER_WEBHOOK: u32 = 3;

/// How long, once shutdown has begun, the writer keeps retrying a database that fails before
/// it gives up and reports what it could not write (so that a dead database cannot hold the
/// process forever).
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

enum Message {
    Entry(Box<Entry>),
    Flush(oneshot::Sender<()>),
}

struct Entry {
    id: u64,
    is_final: bool,
    /// The mismatch doctor's follow-up: only its diagnosis is written, into the webhook's row.
    diagnosis_only: bool,
    row: LogRow,
}

/// How many finished webhooks keep their row id for a diagnosis that comes after their final
/// stage (the doctor runs after the response, within milliseconds).
const DIAGNOSABLE: usize = 64;

/// The sending side: the hook for the layer, and [`flush`](Self::flush).
#[derive(Clone, Debug)]
pub struct LogSender {
    tx: mpsc::UnboundedSender<Message>,
}

/// The writer task.
#[derive(Debug)]
pub struct LogWriter {
    task: JoinHandle<u64>,
    stop: watch::Sender<bool>,
}

/// Starts the writer; `permits` is the semaphore [`admit`] takes from.
pub fn spawn(db: Db, permits: Arc<Semaphore>, retention: Retention) -> (LogSender, LogWriter) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(db, rx, stop_rx, permits, retention));
    (LogSender { tx }, LogWriter { task, stop })
}

impl LogSender {
    /// The callback for `TwilioSignatureLayer::on_webhook`.
    pub fn hook(&self) -> impl Fn(&WebhookLogEntry) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |entry: &WebhookLogEntry| {
            let entry = Entry::from_layer(entry);
            let id = entry.id;
            if tx.send(Message::Entry(Box::new(entry))).is_err() {
                // Only after shutdown, when no request is in flight any more.
                tracing::error!(
                    webhook = id,
                    "webhook log entry after shutdown: not recorded"
                );
            }
        }
    }

    /// Waits until everything sent before this call is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

impl LogWriter {
    /// Writes everything still queued, then stops. Call once no request is in flight.
    /// Returns how many entries were written in all.
    pub async fn drain(self) -> u64 {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_else(|error| {
            tracing::error!(%error, "the webhook log writer failed");
            0
        })
    }
}

async fn run(
    db: Db,
    mut rx: mpsc::UnboundedReceiver<Message>,
    mut stop: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
    retention: Retention,
) -> u64 {
    let mut writer = Writer {
        db,
        permits,
        rows: HashMap::new(),
        finished: VecDeque::with_capacity(DIAGNOSABLE),
        written: 0,
        stop: stop.clone(),
        deadline: None,
        retention,
        inserted_since_prune: 0,
        last_prune: tokio::time::Instant::now(),
    };
    writer.prune().await;
    loop {
        tokio::select! {
            // Queued entries first: stop is only taken once the queue is empty.
            biased;
            message = rx.recv() => match message {
                Some(message) => {
                    writer.handle(message).await;
                }
                None => return writer.written,
            },
            // A stop, or the `LogWriter` dropped without one.
            _ = stop.changed() => break,
        }
    }
    // Shutting down. Requests are over, so nothing more will be queued; write what is.
    writer.start_deadline();
    let mut lost = 0;
    while let Ok(message) = rx.try_recv() {
        if !writer.handle(message).await {
            lost += 1;
        }
    }
    if lost > 0 {
        tracing::error!(
            lost,
            "the database failed during shutdown: webhook log entries not written"
        );
    }
    writer.written
}

struct Writer {
    db: Db,
    permits: Arc<Semaphore>,
    /// Layer entry id → row id, for webhooks whose final stage has not been written yet.
    /// Bounded like the queue: at most `QUEUED_WEBHOOKS` webhooks are admitted at once.
    rows: HashMap<u64, i64>,
    /// The same for the last [`DIAGNOSABLE`] webhooks finished, for a late diagnosis.
    finished: VecDeque<(u64, i64)>,
    written: u64,
    stop: watch::Receiver<bool>,
    /// Set once shutdown has begun: retries end then.
    deadline: Option<tokio::time::Instant>,
    retention: Retention,
    inserted_since_prune: u64,
    last_prune: tokio::time::Instant,
}

impl Writer {
    /// Applies the retention limits; a failure is logged and tried again later.
    async fn prune(&mut self) {
        let max_age_ms = i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(max_age_ms);
        match self
            .db
            .prune(i64::from(self.retention.max_rows), cutoff)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "webhook log pruned"),
            Err(error) => tracing::warn!(%error, "pruning the webhook log failed"),
        }
        self.inserted_since_prune = 0;
        self.last_prune = tokio::time::Instant::now();
    }

    fn start_deadline(&mut self) {
        self.deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_DEADLINE);
    }

    /// Writes one entry, retrying until it is written, or until the shutdown deadline passes
    /// (returns false).
    async fn handle(&mut self, message: Message) -> bool {
        let entry = match message {
            Message::Entry(entry) => entry,
            Message::Flush(done) => {
                let _ = done.send(());
                return true;
            }
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.write(&entry).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, webhook = entry.id, "writing the webhook log failed; retrying");
                    if *self.stop.borrow() {
                        self.start_deadline();
                    }
                    if self
                        .deadline
                        .is_some_and(|d| tokio::time::Instant::now() + backoff > d)
                    {
                        self.finish(&entry);
                        return false;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.written += 1;
        self.finish(&entry);
        true
    }

    async fn write(&mut self, entry: &Entry) -> Result<(), sqlx::Error> {
        if entry.diagnosis_only {
            let row = self.rows.get(&entry.id).copied().or_else(|| {
                let finished = self.finished.iter().find(|(id, _)| *id == entry.id);
                finished.map(|&(_, row)| row)
            });
            return match (row, &entry.row.diagnosis_url, &entry.row.diagnosis_fix) {
                (Some(row), Some(url), Some(fix)) => {
                    self.db.set_webhook_diagnosis(row, url, fix).await
                }
                // Too late to find its row: the diagnosis is still in the security events.
                _ => Ok(()),
            };
        }
        match self.rows.get(&entry.id) {
            Some(&row) => self.db.update_webhook(row, &entry.row).await,
            None => {
                let row = self.db.insert_webhook(&entry.row).await?;
                self.rows.insert(entry.id, row);
                self.inserted_since_prune += 1;
                if self.inserted_since_prune >= self.retention.prune_every()
                    || self.last_prune.elapsed() >= PRUNE_INTERVAL
                {
                    self.prune().await;
                }
                Ok(())
            }
        }
    }

    /// After the final stage: forget the row and give the webhook's permits back.
    fn finish(&mut self, entry: &Entry) {
        if entry.is_final {
            if let Some(row) = self.rows.remove(&entry.id) {
                if self.finished.len() == DIAGNOSABLE {
                    self.finished.pop_front();
                }
                self.finished.push_back((entry.id, row));
            }
            self.permits.add_permits(PERMITS_PER_WEBHOOK as usize);
        }
    }
}

impl Entry {
    fn from_layer(entry: &WebhookLogEntry) -> Self {
        // Set by `tag_request` around the layer (absent only outside it).
        let tags = TAGS.try_with(Clone::clone).ok();
        let mut row = LogRow {
            received_at_ms: to_ms(entry.received_at),
            method: cap(entry.method.as_str(), ID_CAP),
            path: cap(&entry.path, URL_PART_CAP),
            query: cap_opt(entry.query.as_deref(), URL_PART_CAP),
            user_agent: cap_opt(entry.user_agent.as_deref(), USER_AGENT_CAP),
            outcome: entry.stage.as_str(),
            // The tenant and (unverified, on a rejection) account the layer knows of.
            tenant_id: cap_opt(entry.tenant_id.as_deref(), ID_CAP),
            account_sid: cap_opt(entry.account_sid.as_deref(), ID_CAP),
            client_ip: tags.as_ref().and_then(|t| t.client_ip.clone()),
            request_id: tags.map(|t| t.request_id),
            ..LogRow::default()
        };
        if let Some(diagnosis) = &entry.diagnosis {
            row.diagnosis_url = Some(cap(diagnosis.matched_url(), URL_PART_CAP));
            row.diagnosis_fix = Some(cap(&server_fix(diagnosis), URL_PART_CAP));
        }
        match entry.stage {
            WebhookStage::Rejected(kind) | WebhookStage::PassedInReportOnlyMode(kind) => {
                row.rejection_reason = Some(kind.as_str());
            }
            WebhookStage::Processed(status) | WebhookStage::Failed(Some(status)) => {
                row.status_code = Some(i64::from(status.as_u16()));
            }
            _ => {}
        }
        // From the Verified stage on, the verified parameters say which message this is.
        if let Some(webhook) = &entry.webhook {
            let params = webhook.params();
            let field = |names: &[&str]| {
                let value = names.iter().find_map(|name| params.get(name));
                cap_opt(value.filter(|v| !v.is_empty()), ID_CAP)
            };
            row.tenant_id = cap_opt(webhook.tenant_id(), ID_CAP);
            row.account_sid = cap_opt(webhook.account_sid(), ID_CAP);
            row.credential = Some(cap(webhook.credential(), ID_CAP));
            row.message_sid = field(&["MessageSid", "SmsSid"]);
            row.message_status = field(&["MessageStatus", "SmsStatus"]);
            row.call_sid = field(&["CallSid"]);
            row.call_status = field(&["CallStatus"]);
            row.recording_status = field(&["RecordingStatus"]);
        }
        Self {
            id: entry.id,
            is_final: entry.stage.is_final(),
            diagnosis_only: entry.stage == WebhookStage::Diagnosed,
            row,
        }
    }
}

/// The doctor's fix in this server's terms: the `PUBLIC_URL` to set when a base URL fixes it,
/// else the library's own words.
pub fn server_fix(diagnosis: &Diagnosis) -> String {
    match diagnosis.public_base() {
        Some(base) => format!("set PUBLIC_URL={base}"),
        None => diagnosis.fix().to_owned(),
    }
}

/// Takes [`PERMITS_PER_WEBHOOK`] permits before a webhook reaches the layer; the writer gives
/// them back after the webhook's final stage is written. See the module docs.
pub async fn admit(
    State(permits): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    // The writer gives them back (`Writer::finish`); the layer logs a final stage for every
    // request it sees, even one dropped half-way, so none leak. (The semaphore is never
    // closed, so acquiring cannot fail.)
    if let Ok(permit) = permits.acquire_many(PERMITS_PER_WEBHOOK).await {
        permit.forget();
    }
    next.run(request).await
}
