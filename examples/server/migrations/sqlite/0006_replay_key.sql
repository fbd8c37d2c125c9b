-- The replay guard's key of each processed webhook and copy (a hash of its signature, never
-- the signature), so that a copy in the log points at the webhook whose stored answer it got.

ALTER TABLE webhook_log ADD COLUMN replay_key TEXT;
CREATE INDEX webhook_log_by_replay_key ON webhook_log (replay_key);
