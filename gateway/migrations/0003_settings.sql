-- Settings an administrator changes through the API: one JSON document per name.
CREATE TABLE settings (
    name     TEXT PRIMARY KEY,
    document TEXT NOT NULL
);
