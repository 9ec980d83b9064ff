-- Roles, role-based users, and per-object permissions on workflows (and, later, globals).

CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    -- JSON object: resource name -> array of operations.
    resources   TEXT NOT NULL,
    -- 1 for the six default roles, which cannot be changed or deleted.
    builtin     BIGINT NOT NULL
);

-- Users name their roles by id from now on; the only role before was "admin".
UPDATE users SET roles = '["00000000-0000-6164-6d69-6e5f726f6c65"]' WHERE roles = '["admin"]';

-- Who may do what to one workflow or global, by role, when its access level is role-based.
CREATE TABLE object_permissions (
    object_id   TEXT NOT NULL,
    role_id     TEXT NOT NULL,
    can_read    BIGINT NOT NULL,
    can_update  BIGINT NOT NULL,
    can_delete  BIGINT NOT NULL,
    can_execute BIGINT NOT NULL,
    PRIMARY KEY (object_id, role_id)
);
CREATE INDEX object_permissions_role ON object_permissions (role_id);

-- 0 only the creator, 1 everyone (as their roles allow), 2 role-based (object_permissions).
ALTER TABLE workflows ADD COLUMN access_level BIGINT NOT NULL DEFAULT 1;
-- The id of the user who created it (created_by keeps the name it had then).
ALTER TABLE workflows ADD COLUMN creator_id TEXT;

ALTER TABLE executions ADD COLUMN started_by_id TEXT;
