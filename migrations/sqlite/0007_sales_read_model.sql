-- The sales read model (issue 13): a projection of the event stream, kept
-- by the `sales` consumer. Every table can be emptied and rebuilt from the
-- stream (`usher reports rebuild`); nothing else writes them.

-- Seats by event, category (code) and sales channel (online, partner,
-- box_office: from the customer id's namespace), cumulative counts.
CREATE TABLE report_seats (
    event_id  TEXT NOT NULL,
    category  TEXT NOT NULL,
    channel   TEXT NOT NULL,
    held      INTEGER NOT NULL DEFAULT 0,
    released  INTEGER NOT NULL DEFAULT 0,
    expired   INTEGER NOT NULL DEFAULT 0,
    sold      INTEGER NOT NULL DEFAULT 0,
    refunded  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, category, channel)
);

-- Each order's latest status: status_seq is the event_seq of the message
-- that set it, so a message arriving late (another topic) never moves an
-- order back.
CREATE TABLE report_orders (
    order_id    TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    status      TEXT NOT NULL,
    status_seq  INTEGER NOT NULL
);
CREATE INDEX report_orders_by_event ON report_orders (event_id, status);

-- Money by event, channel and currency (ISO 4217 code), in minor units.
CREATE TABLE report_revenue (
    event_id        TEXT NOT NULL,
    channel         TEXT NOT NULL,
    currency        TEXT NOT NULL,
    gross_minor     INTEGER NOT NULL DEFAULT 0,
    refunded_minor  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, channel, currency)
);

-- Sales over time: seats paid and their money per minute (ms since the
-- epoch / 60,000) of the payment.
CREATE TABLE report_sales_minutes (
    event_id       TEXT NOT NULL,
    minute         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    seats          INTEGER NOT NULL DEFAULT 0,
    revenue_minor  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute, currency)
);

-- Admissions by gate and hour (ms since the epoch / 3,600,000) of the scan.
CREATE TABLE report_checkins (
    event_id  TEXT NOT NULL,
    gate      TEXT NOT NULL,
    hour      INTEGER NOT NULL,
    scans     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, gate, hour)
);

-- Messages a consumer has applied, recorded in the same transaction as the
-- effect: a message delivered again changes nothing.
CREATE TABLE consumed_messages (
    consumer     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    consumed_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
);

-- Each consumer's generation: a rebuild empties its tables, recorded ids,
-- cursor and offsets and moves the generation on; running consumers notice
-- and start again from the beginning of the stream.
CREATE TABLE consumers (
    name        TEXT PRIMARY KEY,
    generation  INTEGER NOT NULL
);

-- Where each consumer is in each Kafka topic partition: the next offset to
-- read, moved in the same transaction as the effect of what it read.
CREATE TABLE consumer_offsets (
    consumer     TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    next_offset  INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);
