//! The handlers: the three webhooks (reached only through the layer), health, and the JSON API
//! over the webhook log and the message status history.

use std::{num::NonZeroU64, time::Duration};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tower_twilio::VerifiedWebhook;

use crate::{
    db::{
        CallEventKind, CallEventRow, Db, MessageStatusRow, Outcome, ProcessedKey, Timestamp,
        WebhookRow,
    },
    error::{AppError, DbFailure},
    webhook_log::LogSender,
};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The webhook log, to wait for it to catch up before reading it.
    pub log: LogSender,
    /// The longest an SMS `slow N` may delay its reply (see [`sms`]).
    pub max_slow: Duration,
}

/// The longest an SMS `slow N` delays its reply, whatever the request timeout: long enough to
/// pass a short read timeout (`#rt=…`), short of Twilio's default 15 s.
pub const MAX_SLOW: Duration = Duration::from_secs(8);

impl AppState {
    /// The bound on `slow N` for a server whose requests time out after `request_timeout`:
    /// [`MAX_SLOW`], and at least 2 s under the timeout, so that a slow reply is still a reply.
    pub fn max_slow_for(request_timeout: Duration) -> Duration {
        request_timeout
            .saturating_sub(Duration::from_secs(2))
            .min(MAX_SLOW)
    }
}

/// `GET /api/webhooks` returns this many entries unless told otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// … and never more than this many.
pub const MAX_LIMIT: i64 = 500;

/// How long the API waits for the log writer to catch up before reading.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

// ---- webhooks ----------------------------------------------------------------------------

/// `POST /twilio/sms`: an incoming SMS, MMS or WhatsApp message. Answers with TwiML that echoes
/// it back, signed with the tenant's name.
///
/// A message whose body is `slow N` (N whole seconds) delays the reply N seconds, to try by
/// hand what Twilio does with a slow answer (its read timeout, `#rt=…`, and its retry). N is
/// clamped to [`AppState::max_slow`]: at most [`MAX_SLOW`] (8 s), and 2 s under the server's
/// request timeout, so the reply still comes before the server answers `503`.
pub async fn sms(
    State(state): State<AppState>,
    Extension(webhook): Extension<VerifiedWebhook>,
    headers: HeaderMap,
    body: Bytes,
) -> Twiml {
    let fields = Fields::of(&webhook, &headers, &body);
    let tenant = tenant_name(&state.db, &webhook).await;
    let text = fields.get("Body").unwrap_or_default();
    let media = fields
        .get("NumMedia")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|&n| n > 0)
        .map(|n| format!(" (+{n} media)"))
        .unwrap_or_default();
    tracing::info!(
        tenant = %tenant,
        message_sid = fields.get("MessageSid").unwrap_or_default(),
        "incoming message"
    );
    let delay = slow_request(text, state.max_slow);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let note = delay
        .map(|d| format!(" (answered after {} s)", d.as_secs()))
        .unwrap_or_default();
    Twiml(format!(
        "<Message>{}</Message>",
        xml_text(&reply_text(&tenant, text, &media, &note))
    ))
}

/// The most characters of a reply: Twilio refuses to send a message body over 1 600
/// characters (and the reply would be lost), so the echoed text is cut to fit.
pub const MAX_REPLY_CHARS: usize = 1_600;

/// The SMS reply: the tenant, the received text (cut with `…` so that the whole reply stays
/// within [`MAX_REPLY_CHARS`]), then the media and delay notes.
fn reply_text(tenant: &str, text: &str, media: &str, note: &str) -> String {
    let head = format!("{tenant} received your message: ");
    let room = MAX_REPLY_CHARS
        .saturating_sub(head.chars().count() + media.chars().count() + note.chars().count());
    let text = if text.chars().count() <= room {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(room.saturating_sub(1)).collect();
        cut.push('…');
        cut
    };
    format!("{head}{text}{media}{note}")
}

/// The delay a message body `slow N` asks for, clamped to `max`; `None` for any other body.
pub fn slow_request(body: &str, max: Duration) -> Option<Duration> {
    let mut words = body.split_whitespace();
    let (Some(word), Some(n), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    if !word.eq_ignore_ascii_case("slow") {
        return None;
    }
    // Digits only (no sign), and a count too large for u64 is clamped like any other.
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = n.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(max))
}

/// Where the voice menu lives; its `step` query parameter says which part of it is asked for.
pub const VOICE_MENU_PATH: &str = "/twilio/voice/menu";

/// `POST /twilio/voice`: an incoming call. Answers with the voice menu (see [`voice_menu`]).
pub async fn voice(
    State(state): State<AppState>,
    Extension(webhook): Extension<VerifiedWebhook>,
) -> Twiml {
    let tenant = tenant_name(&state.db, &webhook).await;
    Twiml(menu(&tenant))
}

/// `POST /twilio/voice/menu?step=…`: the voice menu, a TwiML document per step.
///
/// - `step=main` (or no step): a `<Gather>` of one digit whose action is
///   `/twilio/voice/menu?step=choice`, then, when the caller presses nothing, a `<Redirect>`
///   back to `step=main`: the same signed request again, as a new request with a new
///   `I-Twilio-Idempotency-Token`. These routes are guarded in the delivery scope, so each
///   pass of the loop gets the menu.
/// - `step=choice`, with the verified `Digits`: `1` says how the call was verified and goes
///   back to the menu, `2` says goodbye and hangs up, anything else says so and goes back.
///
/// The step is in the query, which the signature covers. Any other step gets the main menu:
/// Twilio ends a call on a 4xx or 5xx answer (and does not retry it), so a menu never answers
/// one. An empty `Digits` (the caller pressed only `#`) is no choice.
pub async fn voice_menu(
    State(state): State<AppState>,
    Extension(webhook): Extension<VerifiedWebhook>,
    query: Result<Query<MenuQuery>, QueryRejection>,
) -> Twiml {
    // Any other step, or a query that does not read as one, is the main menu (see above).
    let step = query.map_or(MenuStep::Main, |Query(query)| query.step);
    let back = format!(r#"<Redirect method="POST">{VOICE_MENU_PATH}?step=main</Redirect>"#);
    match step {
        MenuStep::Choice => match webhook.params().get("Digits").filter(|d| !d.is_empty()) {
            Some("1") => Twiml(format!(
                "<Say>This call's requests are signed by Twilio and verified by tower twilio. \
                 Each pass of this menu is a new request; a retry of one gets the same answer.</Say>{back}"
            )),
            Some("2") => Twiml("<Say>Goodbye.</Say><Hangup/>".to_owned()),
            Some(other) => Twiml(format!(
                "<Say>{} is not an option.</Say>{back}",
                xml_text(other)
            )),
            None => Twiml(format!("<Say>No choice was made.</Say>{back}")),
        },
        MenuStep::Main => {
            let tenant = tenant_name(&state.db, &webhook).await;
            Twiml(menu(&tenant))
        }
    }
}

/// The query of the voice menu's URL.
#[derive(Debug, Deserialize)]
pub struct MenuQuery {
    #[serde(default)]
    step: MenuStep,
}

/// A part of the voice menu: `step=main` or `step=choice`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MenuStep {
    /// The menu itself.
    #[default]
    Main,
    /// What the digit the caller pressed does.
    Choice,
}

/// The main menu: one digit, then back to the menu when nothing was pressed.
fn menu(tenant: &str) -> String {
    format!(
        r#"<Gather input="dtmf" numDigits="1" timeout="5" method="POST" action="{VOICE_MENU_PATH}?step=choice"><Say>{}</Say></Gather><Redirect method="POST">{VOICE_MENU_PATH}?step=main</Redirect>"#,
        xml_text(&format!(
            "Hello from {tenant}. Press 1 to hear how this call is verified. Press 2 to hang up."
        ))
    )
}

/// `POST /twilio/status`: a status callback. A message status (`MessageStatus`, with its
/// `ErrorCode`) is recorded per `MessageSid`; a call status (`CallStatus`, with
/// `CallDuration`) or a recording status (`RecordingStatus`, with `RecordingSid` and
/// `RecordingDuration`) per `CallSid`. Each goes into the history of the tenant whose secret
/// verified it, in the order received, any value as it is. A delivery Twilio retries is
/// recorded once: the replay guard answers the retry without running this again. Anything
/// else is a 400.
///
/// A callback whose record cannot be written is answered `503` (the database unreachable) or
/// `500`, and is lost unless Twilio sends it again: Twilio reads nothing of the answer but its
/// status, and retries an error status only when the callback URL's retry policy names it
/// (`…/twilio/status#rp=5xx`; the replay guard keeps no error answer, so such a retry is
/// recorded). So it is loud: one `ERROR` line with the request id (its webhook log row, marked
/// `failed`, has the SID and status) and the counter [`STATUS_NOT_RECORDED`].
pub async fn status(
    State(state): State<AppState>,
    Extension(webhook): Extension<VerifiedWebhook>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    let fields = Fields::of(&webhook, &headers, &body);
    // The record a callback goes into is its tenant's: the layer always names one here (the
    // resolver does); the verified AccountSid stands in if a resolver did not.
    let tenant = webhook
        .tenant_id()
        .or(webhook.account_sid())
        .ok_or_else(|| AppError::BadRequest("a status callback needs an AccountSid".into()))?;
    let non_empty = |name: &str| {
        fields
            .get(name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let message_sid = fields.get("MessageSid").or_else(|| fields.get("SmsSid"));
    let message_status = fields
        .get("MessageStatus")
        .or_else(|| fields.get("SmsStatus"));
    let call_sid = fields.get("CallSid");
    let received_at = Timestamp::now();
    let account_sid = webhook.account_sid().map(str::to_owned);
    match (message_sid, message_status, call_sid) {
        (Some(message_sid), Some(status), _) => {
            let row = MessageStatusRow {
                tenant_id: tenant.to_owned(),
                message_sid: message_sid.to_owned(),
                status: status.to_owned(),
                error_code: non_empty("ErrorCode"),
                account_sid,
                received_at,
            };
            if let Err(error) = state.db.record_status(&row).await {
                return Err(not_recorded("message", tenant, &headers, &error));
            }
            tracing::info!(message_sid, status, tenant, "message status");
        }
        (_, _, Some(call_sid)) => {
            let (kind, status, recording_sid, duration) =
                match (fields.get("RecordingStatus"), fields.get("CallStatus")) {
                    (Some(status), _) => (
                        CallEventKind::Recording,
                        status,
                        non_empty("RecordingSid"),
                        non_empty("RecordingDuration"),
                    ),
                    (None, Some(status)) => {
                        (CallEventKind::Call, status, None, non_empty("CallDuration"))
                    }
                    (None, None) => return Err(incomplete()),
                };
            let row = CallEventRow {
                tenant_id: tenant.to_owned(),
                call_sid: call_sid.to_owned(),
                kind,
                status: status.to_owned(),
                recording_sid,
                duration,
                error_code: non_empty("ErrorCode"),
                account_sid,
                received_at,
            };
            let kind = kind.as_str();
            if let Err(error) = state.db.record_call_event(&row).await {
                return Err(not_recorded(kind, tenant, &headers, &error));
            }
            tracing::info!(call_sid, status, kind, tenant, "call status");
        }
        _ => return Err(incomplete()),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The counter of status callbacks answered with an error because their record could not be
/// written, by `kind` (`message`, `call`, `recording`): each is lost unless Twilio retries it
/// (see [`status`]).
pub const STATUS_NOT_RECORDED: &str = "status_callbacks_not_recorded_total";

/// A status callback of `kind` whose record could not be written: counted, logged at `ERROR`
/// with the request id (not the callback's values: its webhook log row has the SID and
/// status), and answered as the failure says.
fn not_recorded(
    kind: &'static str,
    tenant: &str,
    headers: &HeaderMap,
    error: &sqlx::Error,
) -> AppError {
    let failure = DbFailure::from(error);
    metrics::counter!(STATUS_NOT_RECORDED, "kind" => kind).increment(1);
    let request_id = headers.get("x-request-id").and_then(|id| id.to_str().ok());
    tracing::error!(
        kind,
        tenant,
        request_id,
        %failure,
        "a status callback could not be recorded: it is lost unless Twilio retries it \
         (only when the callback URL's retry policy names 5xx, as in #rp=5xx)"
    );
    AppError::Database(failure)
}

fn incomplete() -> AppError {
    AppError::BadRequest(
        "a status callback needs MessageSid and MessageStatus, or CallSid and CallStatus or \
         RecordingStatus"
            .into(),
    )
}

async fn tenant_name(db: &Db, webhook: &VerifiedWebhook) -> String {
    let Some(id) = webhook.tenant_id() else {
        return "This server".to_owned();
    };
    match db.tenant_name(id).await {
        Ok(Some(name)) => name,
        Ok(None) => id.to_owned(),
        Err(error) => {
            let failure = DbFailure::from(&error);
            tracing::warn!(%failure, tenant = id, "reading the tenant name failed");
            id.to_owned()
        }
    }
}

/// The webhook's fields: the verified form (or `GET` query) parameters, or, for a JSON body
/// (verified through `bodySHA256`), the top-level members of the JSON object.
struct Fields<'a> {
    webhook: &'a VerifiedWebhook,
    json: Option<serde_json::Map<String, serde_json::Value>>,
}

impl<'a> Fields<'a> {
    fn of(webhook: &'a VerifiedWebhook, headers: &HeaderMap, body: &[u8]) -> Self {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| tower_twilio::form::is_json(v.as_bytes()));
        let json = (webhook.params().is_empty() && is_json)
            .then(|| serde_json::from_slice(body).ok())
            .flatten();
        Self { webhook, json }
    }

    fn get(&self, name: &str) -> Option<&str> {
        match &self.json {
            Some(object) => match object.get(name)? {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            },
            None => self.webhook.params().get(name),
        }
    }
}

/// A TwiML answer: these verbs inside `<Response>`.
#[derive(Debug)]
pub struct Twiml(String);

impl IntoResponse for Twiml {
    fn into_response(self) -> Response {
        let verbs = self.0;
        (
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response>{verbs}</Response>"#),
        )
            .into_response()
    }
}

/// `text` as the content of an XML element: escaped (quick-xml's `escape`), without the
/// characters XML 1.0 does not allow (control characters but tab, newline and carriage
/// return; U+FFFE and U+FFFF): a message may carry them, and a TwiML document with one is not
/// XML, so Twilio would play its error message or drop the reply.
pub fn xml_text(text: &str) -> String {
    let allowed: String = text.chars().filter(|&c| is_xml_char(c)).collect();
    quick_xml::escape::escape(allowed.as_str()).into_owned()
}

/// XML 1.0's `Char` production (surrogates are no `char`).
const fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{FFFD}' | '\u{10000}'..)
}

// ---- health and API ------------------------------------------------------------------------

/// A verified webhook for a path this server does not serve.
pub async fn unknown_webhook() -> AppError {
    AppError::NotFound("no such webhook".into())
}

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
pub async fn health(State(state): State<AppState>) -> Result<&'static str, AppError> {
    state.db.ping().await?;
    Ok("ok\n")
}

/// One webhook-log entry in the API: its row, and for a `copy` (the handler did
/// not run) the webhook whose stored first answer it was given, when that is in this log;
/// `copy_of` is `null` otherwise (answered on an instance with another log, or pruned).
#[derive(Debug, Serialize)]
pub struct WebhookJson {
    #[serde(flatten)]
    row: WebhookRow,
    copy_of: Option<ProcessedKey>,
}

/// Points each copy in `rows` at the processed webhook with its replay key that came last
/// before it: the one whose stored answer it got (one in the normal case).
fn link_copies(rows: Vec<WebhookRow>, processed: &[ProcessedKey]) -> Vec<WebhookJson> {
    rows.into_iter()
        .map(|row| {
            let copy_of = (row.outcome == Outcome::Copy)
                .then_some(row.replay_key.as_deref())
                .flatten()
                .and_then(|key| {
                    processed
                        .iter()
                        .rfind(|p| p.replay_key == key && p.id < row.id)
                })
                .cloned();
            WebhookJson { row, copy_of }
        })
        .collect()
}

/// The query of `GET /api/webhooks`.
#[derive(Debug, Deserialize)]
pub struct WebhooksQuery {
    /// How many entries: from 1, clamped to [`MAX_LIMIT`]; [`DEFAULT_LIMIT`] when absent.
    limit: Option<NonZeroU64>,
}

/// `GET /api/webhooks?limit=N`: the newest N webhooks (default 50, at most 500), newest first,
/// each its row of the log (and, for a copy, what it is a copy of).
pub async fn webhooks(
    State(state): State<AppState>,
    query: Result<Query<WebhooksQuery>, QueryRejection>,
) -> Result<Json<Vec<WebhookJson>>, AppError> {
    let Query(WebhooksQuery { limit }) = query.map_err(|rejection| {
        AppError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT} (larger values are clamped): {}",
            rejection.body_text()
        ))
    })?;
    let limit = limit.map_or(DEFAULT_LIMIT, |n| {
        i64::try_from(n.get()).map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT))
    });
    // Show everything received before this request: let the writer catch up (bounded).
    let _ = tokio::time::timeout(FLUSH_WAIT, state.log.flush()).await;
    let rows = state.db.recent_webhooks(limit).await?;
    // The webhooks whose stored answers the copies among them got.
    let mut keys: Vec<&str> = rows
        .iter()
        .filter(|row| row.outcome == Outcome::Copy)
        .filter_map(|row| row.replay_key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let processed = state.db.processed_with_keys(&keys).await?;
    Ok(Json(link_copies(rows, &processed)))
}

/// A message's records: one per tenant that sent a callback for it.
#[derive(Debug, Serialize)]
pub struct MessageJson {
    message_sid: String,
    records: Vec<MessageRecordJson>,
}

#[derive(Debug, Serialize)]
struct MessageRecordJson {
    tenant_id: String,
    account_sid: Option<String>,
    /// The latest status.
    status: String,
    /// Every status callback, oldest first.
    history: Vec<MessageStatusRow>,
}

/// `GET /api/messages/{MessageSid}`: each tenant's status history of the message (a tenant's
/// callbacks only ever go into its own record); 404 when none was recorded.
pub async fn message(
    State(state): State<AppState>,
    Path(sid): Path<String>,
) -> Result<Json<MessageJson>, AppError> {
    let rows = state.db.message_history(&sid).await?;
    let records = by_tenant(
        "message",
        &sid,
        &rows,
        |row| &row.tenant_id,
        |history| {
            let last = history.last()?;
            Some(MessageRecordJson {
                tenant_id: last.tenant_id.clone(),
                account_sid: last.account_sid.clone(),
                status: last.status.clone(),
                history: history.to_vec(),
            })
        },
    )?;
    Ok(Json(MessageJson {
        message_sid: sid,
        records,
    }))
}

/// A call's records: one per tenant that sent a callback for it.
#[derive(Debug, Serialize)]
pub struct CallJson {
    call_sid: String,
    records: Vec<CallRecordJson>,
}

#[derive(Debug, Serialize)]
struct CallRecordJson {
    tenant_id: String,
    account_sid: Option<String>,
    /// The latest call status (empty when only recordings were reported).
    status: String,
    /// Every call status callback, oldest first.
    history: Vec<CallEventRow>,
    /// Every recording status callback, oldest first.
    recordings: Vec<CallEventRow>,
}

/// `GET /api/calls/{CallSid}`: each tenant's status and recording history of the call; 404
/// when none was recorded.
pub async fn call(
    State(state): State<AppState>,
    Path(sid): Path<String>,
) -> Result<Json<CallJson>, AppError> {
    let rows = state.db.call_history(&sid).await?;
    let records = by_tenant(
        "call",
        &sid,
        &rows,
        |row| &row.tenant_id,
        |events| {
            let tenant_id = events.first()?.tenant_id.clone();
            let account_sid = events.iter().rev().find_map(|e| e.account_sid.clone());
            let (recordings, history): (Vec<_>, Vec<_>) = events
                .iter()
                .cloned()
                .partition(|event| event.kind == CallEventKind::Recording);
            Some(CallRecordJson {
                tenant_id,
                account_sid,
                status: history.last().map(|e| e.status.clone()).unwrap_or_default(),
                history,
                recordings,
            })
        },
    )?;
    Ok(Json(CallJson {
        call_sid: sid,
        records,
    }))
}

/// One record per tenant from a message's or call's `rows`, which come by tenant: one per run
/// of a tenant's rows. 404 when there are none.
fn by_tenant<Row, Record>(
    what: &str,
    sid: &str,
    rows: &[Row],
    tenant: impl Fn(&Row) -> &String,
    record: impl FnMut(&[Row]) -> Option<Record>,
) -> Result<Vec<Record>, AppError> {
    if rows.is_empty() {
        return Err(AppError::NotFound(format!(
            "no status callback recorded for {what} {sid:?}"
        )));
    }
    Ok(rows
        .chunk_by(|a, b| tenant(a) == tenant(b))
        .filter_map(record)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_never_exceeds_what_twilio_sends() {
        let long = "é".repeat(1_600);
        let reply = reply_text("Demo", &long, " (+1 media)", " (answered after 3 s)");
        assert_eq!(reply.chars().count(), MAX_REPLY_CHARS);
        assert!(
            reply.starts_with("Demo received your message: éé"),
            "{reply}"
        );
        assert!(
            reply.ends_with("é… (+1 media) (answered after 3 s)"),
            "{reply}"
        );
        assert_eq!(
            reply_text("Demo", "Hi", "", ""),
            "Demo received your message: Hi"
        );
    }

    #[test]
    fn echoed_text_is_escaped_and_keeps_to_xml_1_0() {
        assert_eq!(
            xml_text(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &apos;Jerry&apos;&lt;/b&gt;"
        );
        assert_eq!(
            xml_text("a\u{0}b\u{1b}c\td\ne\rf\u{FFFE}\u{FFFF}g"),
            "abc\td\ne&#13;fg",
            "a carriage return is kept as a reference: XML parsers turn a raw one into a newline"
        );
        // Everything else passes as it is: C1 controls, private use, astral characters.
        let kept = "\u{7f}\u{85}\u{E000}\u{FFFD}\u{1F44B}é";
        assert_eq!(xml_text(kept), kept);
    }

    #[test]
    fn slow_n_asks_for_n_seconds_clamped_and_nothing_else_does() {
        let max = Duration::from_secs(8);
        assert_eq!(slow_request("slow 3", max), Some(Duration::from_secs(3)));
        assert_eq!(slow_request("  SLOW\t0 ", max), Some(Duration::ZERO));
        assert_eq!(slow_request("slow 60", max), Some(max));
        assert_eq!(slow_request("slow 99999999999999999999999", max), Some(max));
        for other in [
            "slow",
            "slow -1",
            "slow 1.5",
            "slow 3 please",
            "so slow 3",
            "hello",
            "",
        ] {
            assert_eq!(slow_request(other, max), None, "{other:?}");
        }
        assert_eq!(
            AppState::max_slow_for(Duration::from_secs(10)),
            Duration::from_secs(8)
        );
        assert_eq!(
            AppState::max_slow_for(Duration::from_secs(5)),
            Duration::from_secs(3)
        );
        assert_eq!(
            AppState::max_slow_for(Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
