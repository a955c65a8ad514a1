-- Identity (issue 9): organizations (tenants), users and their memberships,
-- refresh tokens, partner API keys, gate devices, the keys that sign access
-- tokens, and the audit log, in their own schema. Secrets are never stored
-- in clear: passwords as argon2id PHC strings, tokens and keys as SHA-256
-- digests (hex).
CREATE SCHEMA IF NOT EXISTS bc_identity;

CREATE TABLE bc_identity.organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Every venue and event belongs to one organization. Rows written before
-- this migration go to the "Default organization", which a platform admin
-- then gives members. The default only fills the existing rows; new rows
-- must name their organization. (No foreign key across contexts, like
-- orders.event_id.)
INSERT INTO bc_identity.organizations (id, name, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 'Default organization', (extract(epoch FROM now()) * 1000)::bigint);

ALTER TABLE bc_catalog.venues ADD COLUMN org_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001';
ALTER TABLE bc_catalog.venues ALTER COLUMN org_id DROP DEFAULT;
ALTER TABLE bc_catalog.events ADD COLUMN org_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001';
ALTER TABLE bc_catalog.events ALTER COLUMN org_id DROP DEFAULT;
CREATE INDEX events_by_org ON bc_catalog.events (org_id);

-- `email` is stored lower-cased: the unique constraint is case-insensitive.
CREATE TABLE bc_identity.users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    name           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,          -- argon2id, PHC string format
    admin          BOOLEAN NOT NULL,       -- platform administrator
    created_at     BIGINT NOT NULL
);

CREATE TABLE bc_identity.memberships (
    org_id    TEXT NOT NULL REFERENCES bc_identity.organizations (id),
    user_id   TEXT NOT NULL REFERENCES bc_identity.users (id),
    role      TEXT NOT NULL CHECK (role IN ('owner', 'manager', 'box_office', 'viewer')),
    added_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_by_user ON bc_identity.memberships (user_id);

-- One row per refresh token. A refresh spends its token (spent_at) and
-- issues the next one of the same family; a spent token presented again
-- revokes the whole family (revoked_at).
CREATE TABLE bc_identity.refresh_tokens (
    hash        TEXT PRIMARY KEY,          -- SHA-256 of the token, hex
    family      TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES bc_identity.users (id),
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    spent_at    BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_by_family ON bc_identity.refresh_tokens (family);

-- A partner box office of one organization; its API keys act in its name.
CREATE TABLE bc_identity.partners (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES bc_identity.organizations (id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE bc_identity.api_keys (
    id            TEXT PRIMARY KEY,
    partner_id    TEXT NOT NULL REFERENCES bc_identity.partners (id),
    org_id        TEXT NOT NULL REFERENCES bc_identity.organizations (id),
    prefix        TEXT NOT NULL UNIQUE,    -- shown in lists and logs; how a key is found
    hash          TEXT NOT NULL,           -- SHA-256 of the whole key, hex
    scopes        TEXT NOT NULL,           -- comma-separated scope names
    events        TEXT NOT NULL,           -- comma-separated event ids; empty = every event of the organization
    expires_at    BIGINT,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_by_org ON bc_identity.api_keys (org_id, created_at);

CREATE TABLE bc_identity.gate_devices (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES bc_identity.organizations (id),
    gate          TEXT NOT NULL,
    prefix        TEXT NOT NULL UNIQUE,
    hash          TEXT NOT NULL,
    events        TEXT NOT NULL,           -- comma-separated event ids; empty = every event of the organization
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX gate_devices_by_org ON bc_identity.gate_devices (org_id, created_at);

-- Ed25519 keys that sign access tokens; the newest unretired one signs.
CREATE TABLE bc_identity.signing_keys (
    kid         TEXT PRIMARY KEY,
    seed        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

-- Organizer actions, written in the transaction of the change they record.
CREATE TABLE bc_identity.audit_log (
    seq      BIGSERIAL PRIMARY KEY,
    org_id   TEXT NOT NULL,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    address  TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_log_by_org ON bc_identity.audit_log (org_id, seq);
