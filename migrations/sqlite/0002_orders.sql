-- Ordering, payment, fulfillment and notification (issue 3). Same tables as
-- PostgreSQL's bc_ordering, bc_fulfillment and bc_notification schemas.

-- One row per order. `state` is the whole saga state (engine::Order as JSON);
-- the other columns are copies for queries. `version` guards against two
-- writers of one order.
CREATE TABLE orders (
    id           TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'fulfilled', 'cancelled', 'expired', 'payment_failed', 'refunded')),
    step         TEXT NOT NULL,
    state        TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, id DESC);
CREATE INDEX orders_by_event ON orders (event_id, created_at DESC, id DESC);
CREATE INDEX orders_live ON orders (step) WHERE step <> 'done';

-- A hold goes into one order, ever: a hold of a failed or cancelled order is
-- released, and a released hold never comes back.
CREATE TABLE order_holds (
    hold_id   TEXT PRIMARY KEY,
    order_id  TEXT NOT NULL REFERENCES orders (id)
);

-- One row per payment attempt (a copy of the order's payments, for queries).
CREATE TABLE payments (
    id            TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL REFERENCES orders (id),
    amount_minor  INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    card_last4    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'authorized', 'captured', 'declined', 'refunded')),
    provider_ref  TEXT,
    reason        TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id);

CREATE TABLE tickets (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL REFERENCES orders (id),
    event_id     TEXT NOT NULL,
    seat_idx     INTEGER NOT NULL,
    seat_label   TEXT NOT NULL,
    price_minor  INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    code         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('valid', 'refunded')),
    issued_at    INTEGER NOT NULL
);
CREATE INDEX tickets_by_order ON tickets (order_id);
-- The database itself refuses two valid tickets for one seat.
CREATE UNIQUE INDEX tickets_one_valid_per_seat ON tickets (event_id, seat_idx) WHERE status = 'valid';

-- The first admission of each ticket: the primary key makes exactly one of
-- two simultaneous scans the first.
CREATE TABLE scans (
    ticket_id        TEXT PRIMARY KEY REFERENCES tickets (id),
    gate             TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    scanned_at       INTEGER NOT NULL
);

-- The email queue: one message per order and kind, ever.
CREATE TABLE notifications (
    order_id         TEXT NOT NULL REFERENCES orders (id),
    kind             TEXT NOT NULL CHECK (kind IN ('confirmation', 'expired', 'payment_failed', 'refunded', 'cancelled')),
    recipient        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
