-- The embedded default: one SQLite file. Same tables as PostgreSQL, without
-- the per-context schemas.

CREATE TABLE venues (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,          -- the VenueSpec as JSON; the layout is rebuilt from it
    seat_count  INTEGER NOT NULL CHECK (seat_count > 0),
    created_at  INTEGER NOT NULL          -- unix ms
);

-- One row per seat, for people and SQL checks; the actors rebuild seats from `spec`.
CREATE TABLE venue_seats (
    venue_id    TEXT NOT NULL REFERENCES venues (id),
    seat_idx    INTEGER NOT NULL,
    label       TEXT NOT NULL,
    section     TEXT NOT NULL,
    row_label   TEXT NOT NULL,
    number      INTEGER NOT NULL,
    category    TEXT NOT NULL,
    x           REAL NOT NULL,
    y           REAL NOT NULL,
    PRIMARY KEY (venue_id, seat_idx),
    UNIQUE (venue_id, label)
);

CREATE TABLE events (
    id               TEXT PRIMARY KEY,
    venue_id         TEXT NOT NULL REFERENCES venues (id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    starts_at        INTEGER NOT NULL,
    sales_start      INTEGER NOT NULL,
    sales_end        INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('draft', 'on_sale', 'sales_closed', 'cancelled')),
    hold_duration_ms INTEGER NOT NULL,
    hold_seats_max   INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    prices           TEXT NOT NULL,      -- JSON array of minor units, one per venue category
    owner_epoch      INTEGER NOT NULL DEFAULT 0, -- fencing token: every inventory write checks it
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX events_by_start ON events (starts_at, id);

CREATE TABLE command_log (
    key          TEXT PRIMARY KEY,
    fingerprint  INTEGER NOT NULL,
    resource_id  TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE holds (
    id           TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL REFERENCES events (id),
    customer_id  TEXT NOT NULL,
    seats        TEXT NOT NULL,          -- JSON array of seat indexes
    seat_count   INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('active', 'released', 'expired', 'confirmed')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER
);
CREATE INDEX holds_by_event ON holds (event_id);

-- Who has each seat right now. The primary key makes the database itself
-- refuse a seat claimed twice; an available seat has no row.
CREATE TABLE seat_claims (
    event_id  TEXT NOT NULL REFERENCES events (id),
    seat_idx  INTEGER NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('held', 'sold', 'blocked')),
    hold_id   TEXT REFERENCES holds (id),
    PRIMARY KEY (event_id, seat_idx),
    CHECK ((kind = 'blocked') = (hold_id IS NULL))
);

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,          -- the event id
    key          TEXT NOT NULL,
    fingerprint  INTEGER NOT NULL,
    result       TEXT NOT NULL,          -- the first answer, as JSON
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,          -- the event id: the Kafka key, so one event's messages stay ordered
    payload      BLOB NOT NULL,         -- protobuf, usher.events.v1
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
