-- Second factors: an authenticator app's secret per user (counting only once confirmed
-- with a code), single-use recovery codes (digests), which roles must have a second
-- factor, sign-ins waiting for their second step, and when each session last proved it.
CREATE TABLE totp_secrets (
    user_id        INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret_base32  TEXT NOT NULL,
    confirmed_at   INTEGER,
    last_used_step INTEGER,
    created_at     INTEGER NOT NULL
);

CREATE TABLE recovery_codes (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_sha256  TEXT NOT NULL,
    used_at      INTEGER,
    UNIQUE (user_id, code_sha256)
);

CREATE TABLE two_factor_required (
    role TEXT PRIMARY KEY CHECK (role IN ('viewer', 'operator', 'admin'))
);

-- A password that was right, waiting for the second step ('code') or, for a role that
-- must have a second factor and has none, for its enrolment ('enrol', with the secret
-- being enrolled). Never a session: nothing but the second step accepts it.
CREATE TABLE pending_sign_ins (
    token_sha256  TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose       TEXT NOT NULL CHECK (purpose IN ('code', 'enrol')),
    next          TEXT NOT NULL,
    secret_base32 TEXT,
    created_at    INTEGER NOT NULL,
    remote_addr   TEXT NOT NULL
);

ALTER TABLE sessions ADD COLUMN second_factor_at INTEGER;
