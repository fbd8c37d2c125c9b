-- Histories keyed by tenant and SID (a tenant's callbacks never touch another tenant's
-- record), call and recording callbacks, client IP and request id in the log, and an index
-- for pruning the log by age.

ALTER TABLE webhook_log ADD COLUMN client_ip TEXT;
ALTER TABLE webhook_log ADD COLUMN request_id TEXT;
ALTER TABLE webhook_log ADD COLUMN call_sid TEXT;
ALTER TABLE webhook_log ADD COLUMN call_status TEXT;
ALTER TABLE webhook_log ADD COLUMN recording_status TEXT;
CREATE INDEX webhook_log_by_time ON webhook_log (received_at_ms);

CREATE TABLE message_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    message_sid TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    account_sid TEXT,
    idempotency_token TEXT,
    received_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, idempotency_token)
);
CREATE INDEX message_history_by_sid ON message_history (message_sid, tenant_id, id);
INSERT INTO message_history
    (tenant_id, message_sid, status, error_code, account_sid, idempotency_token, received_at_ms)
SELECT COALESCE(tenant_id, ''), message_sid, status, error_code, account_sid,
       idempotency_token, received_at_ms
FROM message_status ORDER BY id;
DROP TABLE message_status;

CREATE TABLE call_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    recording_sid TEXT,
    duration TEXT,
    error_code TEXT,
    account_sid TEXT,
    idempotency_token TEXT,
    received_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, idempotency_token)
);
CREATE INDEX call_history_by_sid ON call_history (call_sid, tenant_id, id);
