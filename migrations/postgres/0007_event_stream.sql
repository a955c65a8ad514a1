-- The event stream (issue 13). Each outbox row gets:
-- - event_seq: its place in its event's story, 1, 2, 3 ... with no gaps.
--   The writer takes it from events.outbox_seq (UPDATE ... RETURNING) as its
--   transaction's last statement, so the row lock makes one event's rows
--   commit in event_seq order, and a rolled-back write gives its numbers back.
--   A consumer that sees 7 after 5 knows it missed 6.
-- - message_type: the protobuf message's full name (the Kafka header).
-- - schema_version: the payload's version within usher.events.v1.
-- - traceparent: the W3C trace context of the request that caused it, if any.
-- - stream_offset: the position the embedded relay gave it in the local
--   stream (no Kafka): assigned by the one relay in publishing order.
ALTER TABLE bc_catalog.events ADD COLUMN outbox_seq BIGINT NOT NULL DEFAULT 0;

ALTER TABLE bc_inventory.outbox
    ADD COLUMN event_seq BIGINT,
    ADD COLUMN message_type TEXT,
    ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN traceparent TEXT,
    ADD COLUMN stream_offset BIGINT;

UPDATE bc_inventory.outbox o SET event_seq = n.rn
FROM (SELECT seq, row_number() OVER (PARTITION BY aggregate_id ORDER BY seq) AS rn FROM bc_inventory.outbox) n
WHERE o.seq = n.seq;

UPDATE bc_inventory.outbox SET message_type = 'usher.events.v1.' || CASE topic
    WHEN 'reservation-created' THEN 'ReservationCreated'
    WHEN 'reservation-released' THEN 'ReservationReleased'
    WHEN 'reservation-expired' THEN 'ReservationExpired'
    WHEN 'seats-sold' THEN 'SeatsSold'
    WHEN 'seats-blocked' THEN 'SeatsBlockChanged'
    WHEN 'seats-unblocked' THEN 'SeatsBlockChanged'
    WHEN 'event-status-changed' THEN 'EventStatusChanged'
    WHEN 'order-created' THEN 'OrderCreated'
    WHEN 'payment-succeeded' THEN 'PaymentSucceeded'
    WHEN 'payment-failed' THEN 'PaymentFailed'
    WHEN 'order-expired' THEN 'OrderExpired'
    WHEN 'order-cancelled' THEN 'OrderCancelled'
    WHEN 'order-refunded' THEN 'OrderRefunded'
    WHEN 'order-fulfilled' THEN 'OrderFulfilled'
    WHEN 'ticket-issued' THEN 'TicketIssued'
    ELSE 'Unknown' END;

UPDATE bc_catalog.events e SET outbox_seq = m.last
FROM (SELECT aggregate_id, max(event_seq) AS last FROM bc_inventory.outbox GROUP BY aggregate_id) m
WHERE e.id = m.aggregate_id;

ALTER TABLE bc_inventory.outbox ALTER COLUMN event_seq SET NOT NULL, ALTER COLUMN message_type SET NOT NULL;
CREATE UNIQUE INDEX outbox_event_seq ON bc_inventory.outbox (aggregate_id, event_seq);
CREATE UNIQUE INDEX outbox_stream_offset ON bc_inventory.outbox (stream_offset) WHERE stream_offset IS NOT NULL;
-- Pruning finds published rows by age.
CREATE INDEX outbox_published ON bc_inventory.outbox (published_at) WHERE published_at IS NOT NULL;

-- Positions in the stream: the embedded relay's next offset ('relay') and
-- each local consumer's next offset to read (by consumer name).
CREATE TABLE bc_inventory.stream_cursors (
    name     TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
