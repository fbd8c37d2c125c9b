-- The first schema. Each table is created only when missing: a database of the earliest
-- versions of this server (before they counted their schema changes) has some of them.

CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    account_sid TEXT UNIQUE,
    auth_token TEXT
);

CREATE TABLE IF NOT EXISTS tenant_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    account_sid TEXT NOT NULL UNIQUE,
    primary_auth_token TEXT NOT NULL,
    secondary_auth_token TEXT
);

CREATE TABLE IF NOT EXISTS shared_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    secret TEXT NOT NULL,
    algorithm TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT,
    user_agent TEXT,
    outcome TEXT NOT NULL,
    rejection_reason TEXT,
    tenant_id TEXT,
    account_sid TEXT,
    message_sid TEXT,
    message_status TEXT,
    credential TEXT,
    status_code BIGINT
);

CREATE TABLE IF NOT EXISTS message_status (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_sid TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    tenant_id TEXT,
    account_sid TEXT,
    idempotency_token TEXT UNIQUE,
    received_at_ms BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS message_status_by_sid ON message_status (message_sid, id);
