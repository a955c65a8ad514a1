-- Webhooks (issue 13): an organization's endpoints, and the delivery of each
-- stream message to each endpoint that subscribed to its topic.
CREATE TABLE webhook_endpoints (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL,
    url          TEXT NOT NULL,
    topics       TEXT NOT NULL,          -- JSON array of topics; [] = every topic
    description  TEXT NOT NULL,
    -- JSON array of {"secret", "expires_at"} (ms; null: no end), newest
    -- first. HMAC needs the secret itself, so it is kept, not a digest.
    secrets      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    deleted_at   INTEGER
);
CREATE INDEX webhook_endpoints_by_org ON webhook_endpoints (org_id);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL,
    message_id       TEXT NOT NULL,      -- the webhook-id header
    topic            TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    body             BLOB NOT NULL,     -- the JSON body, fixed when queued: every attempt signs the same bytes
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    claimed_until    INTEGER NOT NULL,    -- a sender's claim: others leave it alone until then
    last_status      INTEGER NOT NULL,   -- HTTP status of the last attempt, 0: no answer
    last_error       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, created_at);

-- Every attempt, for the delivery log.
CREATE TABLE webhook_attempts (
    delivery_id  TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status       INTEGER NOT NULL,       -- HTTP status, 0: no answer
    error        TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
