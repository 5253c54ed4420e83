-- Host accounts signing in through PAM get a row of their own (their sessions, second
-- factors and tokens hang off it); it holds no password, and its role is refreshed from
-- the host's groups at each sign-in.
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'pam'));
