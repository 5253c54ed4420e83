-- One-time links to create the first admin, made by `virtdeck setup-link` for a running
-- service. Only the SHA-256 of the token is kept; a link works until it expires or the
-- first admin exists (then every link is deleted).
CREATE TABLE setup_links (
    digest TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
