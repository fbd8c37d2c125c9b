//! The persistent webhook log: the layer's `.on_webhook(...)` hook feeds a writer task through
//! a channel; the task keeps one `webhook_log` row per webhook up to date through its stages
//! (received → verified | rejected(reason) → processed | failed(status)).
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
//!   small entries each: received, verified, final) are ever queued or being written. When the
//!   database falls behind, new webhooks wait for admission (and, past the request timeout,
//!   get a 503 that Twilio retries) instead of piling up in memory. A concurrency limit alone
//!   would not do this: a request finishes long before its entries are written.
//! - The server's concurrency limit bounds the requests in flight, and with them the bodies
//!   being buffered (each at most the layer's 64 KiB limit); its request timeout bounds how
//!   long each holds its memory and its permits. See `app.rs` for the values.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use tokio::{
    sync::{Semaphore, mpsc, oneshot, watch},
    task::JoinHandle,
};
use tower_twilio::events::log::{WebhookLogEntry, WebhookStage};

use crate::db::{Db, LogRow, to_ms};

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
    row: LogRow,
}

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
pub fn spawn(db: Db, permits: Arc<Semaphore>) -> (LogSender, LogWriter) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(db, rx, stop_rx, permits));
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
) -> u64 {
    let mut writer = Writer {
        db,
        permits,
        rows: HashMap::new(),
        written: 0,
        stop: stop.clone(),
        deadline: None,
    };
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
    written: u64,
    stop: watch::Receiver<bool>,
    /// Set once shutdown has begun: retries end then.
    deadline: Option<tokio::time::Instant>,
}

impl Writer {
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
        match self.rows.get(&entry.id) {
            Some(&row) => self.db.update_webhook(row, &entry.row).await,
            None => {
                let row = self.db.insert_webhook(&entry.row).await?;
                self.rows.insert(entry.id, row);
                Ok(())
            }
        }
    }

    /// After the final stage: forget the row and give the webhook's permits back.
    fn finish(&mut self, entry: &Entry) {
        if entry.is_final {
            self.rows.remove(&entry.id);
            self.permits.add_permits(PERMITS_PER_WEBHOOK as usize);
        }
    }
}

impl Entry {
    fn from_layer(entry: &WebhookLogEntry) -> Self {
        let mut row = LogRow {
            received_at_ms: to_ms(entry.received_at),
            method: entry.method.to_string(),
            path: entry.path.clone(),
            query: entry.query.clone(),
            user_agent: entry.user_agent.clone(),
            outcome: entry.stage.as_str(),
            // The tenant and (unverified, on a rejection) account the layer knows of.
            tenant_id: entry.tenant_id.as_deref().map(str::to_owned),
            account_sid: entry.account_sid.as_deref().map(str::to_owned),
            ..LogRow::default()
        };
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
            row.tenant_id = webhook.tenant_id().map(str::to_owned);
            row.account_sid = webhook.account_sid().map(str::to_owned);
            row.credential = Some(webhook.credential().to_owned());
            row.message_sid = params
                .get("MessageSid")
                .or_else(|| params.get("SmsSid"))
                .map(str::to_owned);
            row.message_status = params
                .get("MessageStatus")
                .or_else(|| params.get("SmsStatus"))
                .map(str::to_owned);
        }
        Self {
            id: entry.id,
            is_final: entry.stage.is_final(),
            row,
        }
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
