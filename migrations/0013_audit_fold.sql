-- Repeated refusals of unauthenticated requests (unknown kickstart tokens, sign-ins of a
-- locked account, bad setup tokens) from one address fold into one row per minute:
-- `count` says how many there were, `last_at` when the last one came.
ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN last_at INTEGER;
UPDATE audit_log SET last_at = at;
-- Finding the row to fold into: same address, action and result, newest first.
CREATE INDEX audit_log_fold ON audit_log(remote_addr, action, result, at);
