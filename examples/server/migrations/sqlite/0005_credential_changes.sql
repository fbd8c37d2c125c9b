-- A counter that every change to the stored credentials moves, so that a running server
-- notices a tenant added by another process (see `account_index`).

CREATE TABLE credential_changes (version BIGINT NOT NULL);
INSERT INTO credential_changes (version) VALUES (0);
