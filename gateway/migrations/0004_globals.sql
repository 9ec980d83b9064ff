-- Global variables: values sealed with the master key (never stored in clear), with
-- per-object permissions like workflows'.
CREATE TABLE globals (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL,
    -- The sealed value (JSON: {"$walkoff_sealed": "v1:<id>:<base64>"}).
    sealed       TEXT NOT NULL,
    access_level BIGINT NOT NULL,
    creator_id   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
