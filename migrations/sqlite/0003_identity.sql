-- Identity (issue 9): organizations (tenants), users and their memberships,
-- refresh tokens, partner API keys, gate devices, the keys that sign access
-- tokens, and the audit log. Same tables as PostgreSQL's bc_identity schema.
-- Secrets are never stored in clear: passwords as argon2id PHC strings,
-- tokens and keys as SHA-256 digests (hex).

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Every venue and event belongs to one organization. Rows written before
-- this migration go to the "Default organization", which a platform admin
-- then gives members. (SQLite adds a NOT NULL column only with a default;
-- the code always writes org_id.)
INSERT INTO organizations (id, name, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 'Default organization', CAST(strftime('%s', 'now') AS INTEGER) * 1000);

ALTER TABLE venues ADD COLUMN org_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001';
ALTER TABLE events ADD COLUMN org_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001';
CREATE INDEX events_by_org ON events (org_id);

-- `email` is stored lower-cased: the unique constraint is case-insensitive.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    name           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,          -- argon2id, PHC string format
    admin          INTEGER NOT NULL CHECK (admin IN (0, 1)), -- platform administrator
    created_at     INTEGER NOT NULL
);

CREATE TABLE memberships (
    org_id    TEXT NOT NULL REFERENCES organizations (id),
    user_id   TEXT NOT NULL REFERENCES users (id),
    role      TEXT NOT NULL CHECK (role IN ('owner', 'manager', 'box_office', 'viewer')),
    added_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

-- One row per refresh token. A refresh spends its token (spent_at) and
-- issues the next one of the same family; a spent token presented again
-- revokes the whole family (revoked_at).
CREATE TABLE refresh_tokens (
    hash        TEXT PRIMARY KEY,          -- SHA-256 of the token, hex
    family      TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    spent_at    INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);

-- A partner box office of one organization; its API keys act in its name.
CREATE TABLE partners (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    partner_id    TEXT NOT NULL REFERENCES partners (id),
    org_id        TEXT NOT NULL REFERENCES organizations (id),
    prefix        TEXT NOT NULL UNIQUE,    -- shown in lists and logs; how a key is found
    hash          TEXT NOT NULL,           -- SHA-256 of the whole key, hex
    scopes        TEXT NOT NULL,           -- comma-separated scope names
    events        TEXT NOT NULL,           -- comma-separated event ids; empty = every event of the organization
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at);

CREATE TABLE gate_devices (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (id),
    gate          TEXT NOT NULL,
    prefix        TEXT NOT NULL UNIQUE,
    hash          TEXT NOT NULL,
    events        TEXT NOT NULL,           -- comma-separated event ids; empty = every event of the organization
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX gate_devices_by_org ON gate_devices (org_id, created_at);

-- Ed25519 keys that sign access tokens; the newest unretired one signs.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    seed        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

-- Organizer actions, written in the transaction of the change they record.
CREATE TABLE audit_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    address  TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_log_by_org ON audit_log (org_id, seq);
