-- Ordering, payment, fulfillment and notification. Each context in its own
-- schema; runtime queries reach them through the search_path.
CREATE SCHEMA IF NOT EXISTS bc_ordering;
CREATE SCHEMA IF NOT EXISTS bc_fulfillment;
CREATE SCHEMA IF NOT EXISTS bc_notification;

-- One row per order. `state` is the whole saga state (engine::Order as JSON);
-- the other columns are copies for queries. `version` guards against two
-- writers of one order.
CREATE TABLE bc_ordering.orders (
    id           TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'fulfilled', 'cancelled', 'expired', 'payment_failed', 'refunded')),
    step         TEXT NOT NULL,
    state        TEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX orders_by_customer ON bc_ordering.orders (customer_id, created_at DESC, id DESC);
CREATE INDEX orders_by_event ON bc_ordering.orders (event_id, created_at DESC, id DESC);
CREATE INDEX orders_live ON bc_ordering.orders (step) WHERE step <> 'done';

-- A hold goes into one order, ever: a hold of a failed or cancelled order is
-- released, and a released hold never comes back.
CREATE TABLE bc_ordering.order_holds (
    hold_id   TEXT PRIMARY KEY,
    order_id  TEXT NOT NULL REFERENCES bc_ordering.orders (id)
);

-- One row per payment attempt (a copy of the order's payments, for queries).
CREATE TABLE bc_ordering.payments (
    id            TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL REFERENCES bc_ordering.orders (id),
    amount_minor  BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    card_last4    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'authorized', 'captured', 'declined', 'refunded')),
    provider_ref  TEXT,
    reason        TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX payments_by_order ON bc_ordering.payments (order_id);

CREATE TABLE bc_fulfillment.tickets (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL REFERENCES bc_ordering.orders (id),
    event_id     TEXT NOT NULL,
    seat_idx     BIGINT NOT NULL,
    seat_label   TEXT NOT NULL,
    price_minor  BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    code         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('valid', 'refunded')),
    issued_at    BIGINT NOT NULL
);
CREATE INDEX tickets_by_order ON bc_fulfillment.tickets (order_id);
-- The database itself refuses two valid tickets for one seat.
CREATE UNIQUE INDEX tickets_one_valid_per_seat ON bc_fulfillment.tickets (event_id, seat_idx) WHERE status = 'valid';

-- The first admission of each ticket: the primary key makes exactly one of
-- two simultaneous scans the first.
CREATE TABLE bc_fulfillment.scans (
    ticket_id        TEXT PRIMARY KEY REFERENCES bc_fulfillment.tickets (id),
    gate             TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    scanned_at       BIGINT NOT NULL
);

-- The email queue: one message per order and kind, ever.
CREATE TABLE bc_notification.notifications (
    order_id         TEXT NOT NULL REFERENCES bc_ordering.orders (id),
    kind             TEXT NOT NULL CHECK (kind IN ('confirmation', 'expired', 'payment_failed', 'refunded', 'cancelled')),
    recipient        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    sent_at          BIGINT,
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX notifications_due ON bc_notification.notifications (next_attempt_at) WHERE status = 'pending';
