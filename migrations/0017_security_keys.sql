-- Security keys (WebAuthn) as second factors: the key as webauthn-rs keeps it (public
-- key, credential ID, counter) and the host name it was registered at.
CREATE TABLE security_keys (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    credential_id TEXT NOT NULL UNIQUE,
    rp_id         TEXT NOT NULL,
    key_json      TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX security_keys_user ON security_keys(user_id);
