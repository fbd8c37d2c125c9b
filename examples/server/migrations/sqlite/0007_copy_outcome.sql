-- A copy answered by the replay guard with the first answer is logged as `copy` (the library's
-- `WebhookOutcome::Copy`), no longer `duplicate`: one name for it in the library, the server
-- and the docs.

UPDATE webhook_log SET outcome = 'copy' WHERE outcome = 'duplicate';
