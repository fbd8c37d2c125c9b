//! The persistent webhook log: the layer's `.on_webhook(...)` hook feeds a writer task through
//! two queues; the task keeps one `webhook_log` row per webhook up to date through its outcomes
//! (verified → processed | failed(status) | copy, or at once rejected(reason)), and adds
//! the mismatch doctor's diagnosis to the row when it comes (after the response).
//!
//! # Verified webhooks are never lost, and never wait for forged ones
//!
//! The hook runs synchronously on the request path, so it cannot wait for the database. It
//! sorts each webhook by what verification said:
//!
//! - **A verified webhook** goes on the *webhook queue*, which never refuses an entry: its row
//!   is inserted at the `Verified` outcome and updated at its final outcome. The writer retries a
//!   failed write (database briefly down) until it succeeds; on shutdown the server first lets
//!   in-flight requests finish (each webhook's final outcome is queued before its response is
//!   sent), then [`LogWriter::drain`] writes whatever is still queued before the process exits.
//! - **A refused request** (forged, unknown account, malformed; or dropped before it was
//!   verified) is one row written at its final outcome, through the *refused queue*: bounded
//!   ([`REFUSED_QUEUE`] entries), it drops what does not fit, counts it in the
//!   [`REFUSED_DROPPED`] metric and says so in a warning (the first drop at once, then at most
//!   one line a minute with the count). A flood of forged requests faster than the database
//!   costs log rows, never the capacity genuine webhooks need. The writer takes from the
//!   webhook queue first.
//!
//! Nothing is written at the `Received` outcome: whether a request is a webhook or a forgery is
//! only known once it has been verified.
//!
//! A verified webhook's row also records the key the replay guard claims for it
//! ([`Scope::key`]; the hook knows the scope its routes are guarded in), so that a copy
//! (`copy`) can be pointed at the webhook whose stored answer it got. The key is hashed once
//! per webhook, for its `Verified` entry, which inserts the row.
//!
//! # Memory stays bounded
//!
//! The webhook queue is bounded by admission control, not by dropping entries:
//!
//! - Before a request reaches the layer, [`admit`] takes a permit from a semaphore of
//!   [`QUEUED_WEBHOOKS`]. A request the layer refuses gives it back as soon as it is answered
//!   (its entry goes to the refused queue, bounded on its own); a verified webhook's permit
//!   follows its entries through the webhook queue, and is given back once they are written.
//!   So at most [`QUEUED_WEBHOOKS`] verified webhooks (two small entries each: verified,
//!   final) are ever queued or being written, and requests in flight (bounded by the server's
//!   concurrency limit) hold the only other permits. The mismatch doctor's diagnoses come on
//!   top, through the refused queue and
//!   bounded by the doctor's own budget (20 a second). When the database falls behind, new webhooks wait for admission (and, past
//!   the request timeout, get a 503, final unless the URL's `rp` names `5xx` or a Fallback URL is set) instead of piling up in memory. A
//!   concurrency limit alone would not do this: a request finishes long before its entries are
//!   written.
//! - The server's concurrency limit bounds the requests in flight, and with them the bodies
//!   being buffered (each at most the layer's 64 KiB limit); its request timeout bounds how
//!   long each holds its memory and its permit. See the crate root for the values.
//!
//! # The log itself stays bounded
//!
//! Every stored field is capped ([`cap`]: 64 characters for ids and statuses, 256 for the
//! user agent, 1 KiB for path and query), so that a forged request cannot make a row large;
//! the writer prunes the table to [`Retention::max_rows`] rows and [`Retention::max_age`]
//! (histories by age too) at start, then every [`Retention::prune_every`] new rows and at least
//! once a minute while webhooks arrive. Each row keeps the client IP and the request id: the
//! `X-Request-Id` a proxy sent, when it is short and printable ([`drop_odd_request_id`]), else
//! one tower-http's `SetRequestIdLayer` makes ([`RandomRequestId`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch},
    task::JoinHandle,
};
use tower_http::request_id::{MakeRequestId, RequestId};
use tower_twilio::{
    doctor::Diagnosis,
    events::log::{WebhookLogEntry, WebhookOutcome},
    replay_guard::{ReplayOutcome, Scope},
};

use crate::{
    db::{Db, MAX_LOG_BATCH, Outcome, Timestamp, WebhookRow},
    error::DbFailure,
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

/// The request id header.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids for webhooks that come without one (tower-http's `SetRequestIdLayer` asks):
/// 32 random hex digits.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&random_hex(16))
            .ok()
            .map(RequestId::new)
    }
}

/// Before `SetRequestIdLayer`: removes an `X-Request-Id` that is empty, longer than 64 bytes
/// or not printable ASCII, so that a random one replaces it (in the log, the security events
/// and the answer). A sane one a proxy sent is kept.
pub async fn drop_odd_request_id(mut request: Request) -> Request {
    let odd = request.headers().get(X_REQUEST_ID).is_some_and(|id| {
        let id = id.as_bytes();
        id.is_empty() || id.len() > ID_CAP || !id.iter().all(u8::is_ascii_graphic)
    });
    if odd {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}

/// The counter of refused requests whose log entry was dropped because the queue of refused
/// entries was full.
pub const REFUSED_DROPPED: &str = "webhook_log_refused_dropped_total";

/// How many verified webhooks may have log entries queued or being written at once.
pub const QUEUED_WEBHOOKS: u32 = 1024;

/// How many refused requests' entries may wait to be written; more are dropped and counted
/// ([`REFUSED_DROPPED`]). Each is a few KiB at most (see [`cap`]).
pub const REFUSED_QUEUE: usize = 1024;

/// How often, at most, dropped refused entries are reported in the log.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// How long, once shutdown has begun, the writer keeps retrying a database that fails before
/// it gives up and reports what it could not write (so that a dead database cannot hold the
/// process forever).
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

enum Message {
    Entry(Box<Entry>),
    Flush(oneshot::Sender<()>),
    /// A verified webhook's place in the webhook queue ([`admit`]), behind its entries: given
    /// back once they are written (or given up on).
    Release(OwnedSemaphorePermit),
}

impl Message {
    /// Where it goes in arrival order: a flush after every entry already queued, a place at
    /// once (its webhook's entries are written: they were ahead of it).
    fn order(&self) -> u64 {
        match self {
            Self::Entry(entry) => entry.id,
            Self::Flush(_) => u64::MAX,
            Self::Release(_) => 0,
        }
    }
}

struct Entry {
    id: u64,
    is_final: bool,
    /// The mismatch doctor's follow-up: only its diagnosis is written, into the webhook's row.
    diagnosis_only: bool,
    row: WebhookRow,
}

/// How many finished webhooks and refused requests keep their row id for a diagnosis that
/// comes after their final outcome (the doctor runs after the response, within milliseconds; a
/// flood of refusals can pass a whole refused queue in that time).
const DIAGNOSABLE: usize = REFUSED_QUEUE;

/// The sending side: the hook for the layer, the places in the webhook queue ([`admit`]), and
/// [`flush`](Self::flush).
#[derive(Clone, Debug)]
pub struct LogSender {
    tx: mpsc::UnboundedSender<Message>,
    permits: Arc<Semaphore>,
    refused: mpsc::Sender<Box<Entry>>,
    drops: Arc<Mutex<DropReport>>,
}

/// Refused entries dropped since the last warning, and when that was.
#[derive(Debug, Default)]
struct DropReport {
    unreported: u64,
    last: Option<tokio::time::Instant>,
}

impl DropReport {
    /// Counts one drop; warns on the first, then at most once per [`DROP_REPORT_INTERVAL`].
    fn dropped(&mut self) {
        metrics::counter!(REFUSED_DROPPED).increment(1);
        self.unreported += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= DROP_REPORT_INTERVAL)
        {
            tracing::warn!(
                dropped = self.unreported,
                "the webhook log cannot keep up with refused requests: their entries are \
                 dropped (verified webhooks are still logged)"
            );
            self.unreported = 0;
            self.last = Some(now);
        }
    }
}

/// The writer task.
#[derive(Debug)]
pub struct LogWriter {
    task: JoinHandle<u64>,
    stop: watch::Sender<bool>,
}

/// Starts the writer. [`admit`] takes from a semaphore of [`QUEUED_WEBHOOKS`] permits.
pub fn spawn(db: Db, retention: Retention) -> (LogSender, LogWriter) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (refused, refused_rx) = mpsc::channel(REFUSED_QUEUE);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(db, rx, refused_rx, stop_rx, retention));
    let sender = LogSender {
        tx,
        permits: Arc::new(Semaphore::new(QUEUED_WEBHOOKS as usize)),
        refused,
        drops: Arc::default(),
    };
    (sender, LogWriter { task, stop })
}

impl LogSender {
    /// The callback for `TwilioSignatureLayer::on_webhook`: sorts each entry onto the webhook
    /// or the refused queue (see the module docs).
    pub fn hook(&self, scope: Scope) -> impl Fn(&WebhookLogEntry) + Send + Sync + 'static {
        let sender = self.clone();
        move |entry: &WebhookLogEntry| sender.send(entry, scope)
    }

    /// Queues `entry` of a webhook whose route is guarded in `scope`.
    fn send(&self, entry: &WebhookLogEntry, scope: Scope) {
        if entry.outcome == WebhookOutcome::Received {
            // Nothing is known of it yet: written with its next outcome.
            return;
        }
        let row = Box::new(Entry::from_layer(entry, scope));
        // From its `Verified` outcome on, an entry carries the verified context: a verified
        // webhook's entries go on the webhook queue. A refusal, a request dropped before it was
        // verified and the doctor's diagnosis of a refusal go on the refused queue, or are
        // dropped when it is full. (In report-only mode, which this server never turns on, a
        // request passed on unverified would be logged as refused, once per outcome.)
        if entry.webhook.is_none() {
            return match self.refused.try_send(row) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => lock(&self.drops).dropped(),
                Err(mpsc::error::TrySendError::Closed(row)) => after_shutdown(row.id),
            };
        }
        if let Err(mpsc::error::SendError(Message::Entry(row))) = self.tx.send(Message::Entry(row))
        {
            after_shutdown(row.id);
        }
    }

    /// Waits until everything sent before this call is written (refused entries too).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Only after shutdown, when no request is in flight any more.
fn after_shutdown(id: u64) {
    tracing::error!(
        webhook = id,
        "webhook log entry after shutdown: not recorded"
    );
}

/// The lock's value even if a panic poisoned it: every value it guards is valid at any time.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
    refused: mpsc::Receiver<Box<Entry>>,
    mut stop: watch::Receiver<bool>,
    retention: Retention,
) -> u64 {
    let mut writer = Writer {
        db,
        refused,
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
    // One entry taken from each queue and not yet written: entries are written in the order
    // their requests arrived (the layer's ids), whichever queue they came through, so that the
    // log reads in order; a refused entry can delay a verified one's by at most the refused
    // queue's length, never its answer.
    let mut webhook: Option<Message> = None;
    let mut refused: Option<Box<Entry>> = None;
    loop {
        if webhook.is_none() {
            match rx.try_recv() {
                Ok(message) => webhook = Some(message),
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        if refused.is_none() {
            refused = writer.refused.try_recv().ok();
        }
        match (webhook.take(), refused.take()) {
            (None, None) => tokio::select! {
                biased;
                message = rx.recv() => match message {
                    Some(message) => webhook = Some(message),
                    None => break,
                },
                Some(entry) = writer.refused.recv() => refused = Some(entry),
                // A stop, or the `LogWriter` dropped without one; taken only once both queues
                // are empty.
                _ = stop.changed() => break,
            },
            (Some(message), Some(entry)) if entry.id < message.order() => {
                let batch = writer.refused_batch(entry, message.order(), &mut refused);
                writer.write(Work::Refused(batch)).await;
                webhook = Some(message);
            }
            (Some(message), entry) => {
                refused = entry;
                writer.handle(message).await;
            }
            (None, Some(entry)) => {
                let batch = writer.refused_batch(entry, u64::MAX, &mut refused);
                writer.write(Work::Refused(batch)).await;
            }
        }
    }
    // Shutting down. Requests are over, so nothing more will be queued; write what is.
    writer.start_deadline();
    let mut lost = 0;
    while let Ok(message) = rx.try_recv() {
        lost += writer.handle(message).await;
    }
    lost += writer.write_all_refused().await;
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
    refused: mpsc::Receiver<Box<Entry>>,
    /// Layer entry id → row id, for verified webhooks whose final outcome has not been written
    /// yet. Bounded like the queue: at most `QUEUED_WEBHOOKS` webhooks are admitted at once.
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
        let cutoff = Timestamp::now().millis().saturating_sub(max_age_ms);
        match self
            .db
            .prune(i64::from(self.retention.max_rows), cutoff)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "webhook log pruned"),
            Err(error) => {
                let failure = DbFailure::from(&error);
                tracing::warn!(%failure, "pruning the webhook log failed");
            }
        }
        self.inserted_since_prune = 0;
        self.last_prune = tokio::time::Instant::now();
    }

    fn start_deadline(&mut self) {
        self.deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_DEADLINE);
    }

    /// Writes one entry, or answers a flush once the refused entries queued before it are
    /// written too. Returns how many entries could not be written (see [`write`](Self::write)).
    async fn handle(&mut self, message: Message) -> u64 {
        match message {
            Message::Entry(entry) => self.write(Work::Webhook(entry)).await,
            Message::Flush(done) => {
                let lost = self.write_all_refused().await;
                let _ = done.send(());
                lost
            }
            Message::Release(permit) => {
                drop(permit);
                0
            }
        }
    }

    /// `first` and the refused entries after it in the queue that arrived before `before`, up
    /// to a batch; the first later one goes back to `next`. When the refused queue is half
    /// full, arrival order gives way: the batch takes whatever is queued, so that a flood is
    /// written as fast as the database allows.
    fn refused_batch(
        &mut self,
        first: Box<Entry>,
        before: u64,
        next: &mut Option<Box<Entry>>,
    ) -> Vec<Entry> {
        let mut batch = Vec::with_capacity(MAX_LOG_BATCH);
        batch.push(*first);
        while batch.len() < MAX_LOG_BATCH {
            match self.refused.try_recv() {
                Ok(entry) if entry.id < before || self.refused.len() >= REFUSED_QUEUE / 2 => {
                    batch.push(*entry);
                }
                Ok(entry) => {
                    *next = Some(entry);
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Writes every refused entry queued now, in batches; returns how many were lost.
    async fn write_all_refused(&mut self) -> u64 {
        let mut lost = 0;
        let mut next = None;
        while let Some(first) = next.take().or_else(|| self.refused.try_recv().ok()) {
            let batch = self.refused_batch(first, u64::MAX, &mut next);
            lost += self.write(Work::Refused(batch)).await;
        }
        lost
    }

    /// Writes `work`, retrying until it is written, or until the shutdown deadline passes;
    /// returns how many entries were lost (0 or all).
    async fn write(&mut self, work: Work) -> u64 {
        let mut backoff = Duration::from_millis(50);
        let entries = work.len();
        loop {
            match self.try_write(&work).await {
                Ok(()) => break,
                Err(error) => {
                    let failure = DbFailure::from(&error);
                    tracing::warn!(%failure, entries, "writing the webhook log failed; retrying");
                    if *self.stop.borrow() {
                        self.start_deadline();
                    }
                    if self
                        .deadline
                        .is_some_and(|d| tokio::time::Instant::now() + backoff > d)
                    {
                        self.finish(&work);
                        return entries;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.written += entries;
        self.finish(&work);
        0
    }

    async fn try_write(&mut self, work: &Work) -> Result<(), sqlx::Error> {
        let inserted = match work {
            Work::Webhook(entry) => match self.rows.get(&entry.id) {
                Some(&row) => return self.db.update_webhook(row, &entry.row).await,
                None => {
                    let row = self.db.insert_webhook(&entry.row).await?;
                    self.rows.insert(entry.id, row);
                    1
                }
            },
            Work::Refused(batch) => {
                let (diagnoses, refusals): (Vec<&Entry>, Vec<&Entry>) =
                    batch.iter().partition(|entry| entry.diagnosis_only);
                let rows: Vec<&WebhookRow> = refusals.iter().map(|entry| &entry.row).collect();
                let ids = self.db.insert_refused(&rows).await?;
                for (entry, row) in refusals.iter().zip(ids) {
                    self.remember(entry.id, row);
                }
                for entry in diagnoses {
                    self.add_diagnosis(entry).await;
                }
                rows.len() as u64
            }
        };
        self.inserted_since_prune += inserted;
        if self.inserted_since_prune >= self.retention.prune_every()
            || self.last_prune.elapsed() >= PRUNE_INTERVAL
        {
            self.prune().await;
        }
        Ok(())
    }

    /// After a webhook's final outcome: forget its row, but for a late diagnosis.
    fn finish(&mut self, work: &Work) {
        if let Work::Webhook(entry) = work
            && entry.is_final
            && let Some(row) = self.rows.remove(&entry.id)
        {
            self.remember(entry.id, row);
        }
    }

    /// Keeps the row id of a finished webhook or a refused request for a diagnosis that comes
    /// after it, for the last [`DIAGNOSABLE`] of them.
    fn remember(&mut self, id: u64, row: i64) {
        if self.finished.len() == DIAGNOSABLE {
            self.finished.pop_front();
        }
        self.finished.push_back((id, row));
    }

    /// Adds the mismatch doctor's diagnosis to its webhook's row. Best effort: a diagnosis
    /// whose row is no longer known, or whose write fails, is still in the security events.
    async fn add_diagnosis(&mut self, entry: &Entry) {
        let row = self.rows.get(&entry.id).copied().or_else(|| {
            let finished = self.finished.iter().rev().find(|(id, _)| *id == entry.id);
            finished.map(|&(_, row)| row)
        });
        let diagnosis = &entry.row.diagnosis;
        if let (Some(row), Some(url), Some(fix)) =
            (row, &diagnosis.diagnosis_url, &diagnosis.diagnosis_fix)
            && let Err(error) = self.db.set_webhook_diagnosis(row, url, fix).await
        {
            let failure = DbFailure::from(&error);
            tracing::warn!(%failure, "adding a diagnosis to the webhook log failed");
        }
    }
}

/// What the writer writes at once.
enum Work {
    /// One outcome of a verified webhook: its row inserted, or updated.
    Webhook(Box<Entry>),
    /// Refused requests' rows, each written once, together (at most [`MAX_LOG_BATCH`]).
    Refused(Vec<Entry>),
}

impl Work {
    fn len(&self) -> u64 {
        match self {
            Self::Webhook(_) => 1,
            Self::Refused(batch) => batch.len() as u64,
        }
    }
}

impl Entry {
    /// `scope`: the replay guard's, on the webhook's route.
    fn from_layer(entry: &WebhookLogEntry, scope: Scope) -> Self {
        // A diagnosis has no outcome of its own: only its columns are written, into the
        // webhook's row.
        let outcome = Outcome::of(entry.outcome).unwrap_or(Outcome::Rejected);
        let mut row = WebhookRow::new(
            Timestamp::from(entry.received_at),
            cap(entry.method.as_str(), ID_CAP),
            cap(&entry.path, URL_PART_CAP),
            outcome,
        );
        row.query = cap_opt(entry.query.as_deref(), URL_PART_CAP);
        row.user_agent = cap_opt(entry.user_agent.as_deref(), USER_AGENT_CAP);
        // The tenant and (unverified, on a rejection) account the layer knows of.
        row.tenant_id = cap_opt(entry.tenant_id.as_deref(), ID_CAP);
        row.account_sid = cap_opt(entry.account_sid.as_deref(), ID_CAP);
        row.client_ip = entry.client_ip.map(|ip| ip.to_string());
        row.request_id = cap_opt(entry.request_id.as_deref(), ID_CAP);
        if let Some(diagnosis) = &entry.diagnosis {
            row.diagnosis.diagnosis_url = Some(cap(diagnosis.matched_url(), URL_PART_CAP));
            row.diagnosis.diagnosis_fix = Some(cap(&server_fix(diagnosis), URL_PART_CAP));
        }
        match entry.outcome {
            WebhookOutcome::Rejected(kind) | WebhookOutcome::PassedInReportOnlyMode(kind) => {
                row.rejection_reason = Some(kind.as_str().to_owned());
            }
            WebhookOutcome::Processed(status) | WebhookOutcome::Failed(Some(status)) => {
                row.status_code = Some(i64::from(status.as_u16()));
            }
            _ => {}
        }
        // From the Verified outcome on, the verified parameters say which message this is.
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
            // Hashed once per webhook: its row is inserted at `Verified` with the key, and a
            // later outcome's update keeps what it does not set.
            if entry.outcome == WebhookOutcome::Verified {
                row.replay_key = scope.key(webhook).map(|key| key.to_hex());
            }
        }
        Self {
            id: entry.id,
            is_final: entry.outcome.is_final(),
            diagnosis_only: entry.outcome == WebhookOutcome::Diagnosed,
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

/// Takes a place in the webhook queue before a request reaches the layer, and gives it back:
/// at once when the layer refused the request (its entry is on the refused queue), else behind
/// the webhook's entries in the webhook queue, once they are written. See the module docs.
pub async fn admit(State(log): State<LogSender>, request: Request, next: Next) -> Response {
    // The semaphore is never closed, so acquiring cannot fail.
    let Ok(permit) = Arc::clone(&log.permits).acquire_owned().await else {
        return next.run(request).await;
    };
    let mut place = Place {
        permit: Some(permit),
        log: &log,
    };
    let response = next.run(request).await;
    // Only a verified webhook reaches the replay guard, which marks every answer it gives.
    if ReplayOutcome::of(&response).is_none() {
        drop(place.permit.take());
    }
    response
}

/// A request's place in the webhook queue: sent behind its entries when dropped (also when the
/// request is, before it was answered), unless given back before.
struct Place<'a> {
    permit: Option<OwnedSemaphorePermit>,
    log: &'a LogSender,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            // After shutdown, the permit is simply dropped.
            let _ = self.log.tx.send(Message::Release(permit));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::{Request, Response};
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};
    use tower_twilio::{Credentials, PublicUrl, Secret, TwilioSignatureLayer};

    use super::*;
    use crate::twilio_presets::{Body, Preset, Signer, sign_request};

    #[tokio::test]
    async fn the_replay_key_is_hashed_once_per_webhook_for_the_row_its_verified_entry_inserts() {
        const TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
        let entries = Arc::new(Mutex::new(Vec::<WebhookLogEntry>::new()));
        let layer = TwilioSignatureLayer::new(
            Credentials::new().auth_token("primary", Secret::new(TOKEN).unwrap()),
        )
        .public_url(PublicUrl::fixed("https://api.example.com").unwrap())
        .on_webhook({
            let entries = Arc::clone(&entries);
            move |entry: &WebhookLogEntry| lock(&entries).push(entry.clone())
        });
        let signed = sign_request(
            "https://api.example.com/twilio/status",
            Body::Form(
                Preset::Status("delivered".to_owned()).params("AC11111111111111111111111111111111"),
            ),
            Signer::AuthToken(TOKEN.as_bytes()),
        );
        let mut request = Request::post(signed.path_and_query());
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        let response = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::<bytes::Bytes>::default()))
            })
            .oneshot(
                request
                    .body(Full::new(bytes::Bytes::from(signed.body.clone())))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);

        let entries = lock(&entries);
        let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["received", "verified", "processed"]);
        let webhook = entries[1].webhook.as_ref().unwrap();
        let key = Scope::Content.key(webhook).unwrap().to_hex();
        let rows: Vec<Option<String>> = entries
            .iter()
            .map(|entry| Entry::from_layer(entry, Scope::Content).row.replay_key)
            .collect();
        assert_eq!(rows, [None, Some(key), None]);
    }
}
