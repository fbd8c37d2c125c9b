-- The histories without `I-Twilio-Idempotency-Token` and its uniqueness: the replay guard
-- answers a retried delivery before the handler, so nothing here de-duplicates any more (and
-- an unsigned header no longer decides what is recorded). Each table is rebuilt, as SQLite
-- cannot drop a constraint; rows keep their order.

CREATE TABLE message_history_v4 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    message_sid TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    account_sid TEXT,
    received_at_ms BIGINT NOT NULL
);
INSERT INTO message_history_v4
    (tenant_id, message_sid, status, error_code, account_sid, received_at_ms)
SELECT tenant_id, message_sid, status, error_code, account_sid, received_at_ms
FROM message_history ORDER BY id;
DROP TABLE message_history;
ALTER TABLE message_history_v4 RENAME TO message_history;
CREATE INDEX message_history_by_sid ON message_history (message_sid, tenant_id, id);

CREATE TABLE call_history_v4 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    recording_sid TEXT,
    duration TEXT,
    error_code TEXT,
    account_sid TEXT,
    received_at_ms BIGINT NOT NULL
);
INSERT INTO call_history_v4
    (tenant_id, call_sid, kind, status, recording_sid, duration, error_code, account_sid,
     received_at_ms)
SELECT tenant_id, call_sid, kind, status, recording_sid, duration, error_code, account_sid,
       received_at_ms
FROM call_history ORDER BY id;
DROP TABLE call_history;
ALTER TABLE call_history_v4 RENAME TO call_history;
CREATE INDEX call_history_by_sid ON call_history (call_sid, tenant_id, id);
