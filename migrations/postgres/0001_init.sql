-- Each bounded context keeps its own schema. Runtime queries use unqualified
-- names through the connection's search_path.
CREATE SCHEMA IF NOT EXISTS bc_catalog;
CREATE SCHEMA IF NOT EXISTS bc_inventory;

CREATE TABLE bc_catalog.venues (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,          -- the VenueSpec as JSON; the layout is rebuilt from it
    seat_count  BIGINT NOT NULL CHECK (seat_count > 0),
    created_at  BIGINT NOT NULL          -- unix ms
);

-- One row per seat, for people and SQL checks; the actors rebuild seats from `spec`.
CREATE TABLE bc_catalog.venue_seats (
    venue_id    TEXT NOT NULL REFERENCES bc_catalog.venues (id),
    seat_idx    BIGINT NOT NULL,
    label       TEXT NOT NULL,
    section     TEXT NOT NULL,
    row_label   TEXT NOT NULL,
    number      BIGINT NOT NULL,
    category    TEXT NOT NULL,
    x           DOUBLE PRECISION NOT NULL,
    y           DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (venue_id, seat_idx),
    UNIQUE (venue_id, label)
);

CREATE TABLE bc_catalog.events (
    id               TEXT PRIMARY KEY,
    venue_id         TEXT NOT NULL REFERENCES bc_catalog.venues (id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    starts_at        BIGINT NOT NULL,
    sales_start      BIGINT NOT NULL,
    sales_end        BIGINT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('draft', 'on_sale', 'sales_closed', 'cancelled')),
    hold_duration_ms BIGINT NOT NULL,
    hold_seats_max   BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    prices           TEXT NOT NULL,      -- JSON array of minor units, one per venue category
    owner_epoch      BIGINT NOT NULL DEFAULT 0, -- fencing token: every inventory write checks it
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX events_by_start ON bc_catalog.events (starts_at, id);

CREATE TABLE bc_catalog.command_log (
    key          TEXT PRIMARY KEY,
    fingerprint  BIGINT NOT NULL,
    resource_id  TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE bc_inventory.holds (
    id           TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL REFERENCES bc_catalog.events (id),
    customer_id  TEXT NOT NULL,
    seats        TEXT NOT NULL,          -- JSON array of seat indexes
    seat_count   BIGINT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('active', 'released', 'expired', 'confirmed')),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ended_at     BIGINT
);
CREATE INDEX holds_by_event ON bc_inventory.holds (event_id);

-- Who has each seat right now. The primary key makes the database itself
-- refuse a seat claimed twice; an available seat has no row.
CREATE TABLE bc_inventory.seat_claims (
    event_id  TEXT NOT NULL REFERENCES bc_catalog.events (id),
    seat_idx  BIGINT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('held', 'sold', 'blocked')),
    hold_id   TEXT REFERENCES bc_inventory.holds (id),
    PRIMARY KEY (event_id, seat_idx),
    CHECK ((kind = 'blocked') = (hold_id IS NULL))
);

CREATE TABLE bc_inventory.idempotency (
    scope        TEXT NOT NULL,          -- the event id
    key          TEXT NOT NULL,
    fingerprint  BIGINT NOT NULL,
    result       TEXT NOT NULL,          -- the first answer, as JSON
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE bc_inventory.outbox (
    seq          BIGSERIAL PRIMARY KEY,
    message_id   TEXT NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,          -- the event id: the Kafka key, so one event's messages stay ordered
    payload      BYTEA NOT NULL,         -- protobuf, usher.events.v1
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON bc_inventory.outbox (seq) WHERE published_at IS NULL;
