-- What the mismatch doctor found for a rejected webhook: the URL its signature matches, and
-- the fix.

ALTER TABLE webhook_log ADD COLUMN diagnosis_url TEXT;
ALTER TABLE webhook_log ADD COLUMN diagnosis_fix TEXT;
