-- VMs created by virtdeck (their units), and named sizes.
CREATE TABLE flavors (
    name   TEXT PRIMARY KEY,
    units  INTEGER NOT NULL CHECK (units > 0)
);
INSERT INTO flavors (name, units) VALUES ('small', 1), ('medium', 2), ('large', 4);

-- A row exists from admission on: state 'creating' holds the units while the volume,
-- the definition and the first start are made; 'ready' once all of that succeeded.
CREATE TABLE vms (
    name            TEXT PRIMARY KEY,
    uuid            TEXT NOT NULL,
    units           INTEGER NOT NULL CHECK (units > 0),
    state           TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
    created_volume  TEXT,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
