-- One text for SQLite and PostgreSQL: TEXT, BIGINT and nothing dialect-specific.
-- Times are microseconds since the Unix epoch; JSON documents are TEXT.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    -- JSON array of role names.
    roles         TEXT NOT NULL,
    active        BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Access and refresh tokens, by the SHA-256 of the token (the token itself is never stored).
-- A login starts a family; refreshing issues a new pair in the same family; logout revokes it.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked    BIGINT NOT NULL
);
CREATE INDEX tokens_family ON tokens (family);

CREATE TABLE workflows (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    -- Starts at 1; every update adds one (updates name the version they change).
    version    BIGINT NOT NULL,
    -- The workflow in walkoff's canonical JSON.
    document   TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE executions (
    id               TEXT PRIMARY KEY,
    workflow_id      TEXT NOT NULL,
    workflow_version BIGINT NOT NULL,
    workflow_name    TEXT NOT NULL,
    -- The workflow as it ran (canonical JSON), overrides applied.
    workflow         TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_by       TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    error            TEXT,
    -- The sequence number of the last event recorded.
    last_seq         BIGINT NOT NULL
);
CREATE INDEX executions_created ON executions (created_at, id);
CREATE INDEX executions_workflow ON executions (workflow_id, created_at);

-- Every event of every execution, once per (execution, sequence).
CREATE TABLE events (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    -- The event as the engine wrote it (JSON).
    body         TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
