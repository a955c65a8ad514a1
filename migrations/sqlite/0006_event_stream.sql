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
ALTER TABLE events ADD COLUMN outbox_seq INTEGER NOT NULL DEFAULT 0;

-- SQLite cannot make a column NOT NULL afterwards: the writers always set
-- event_seq and message_type (adapters/src/commit.rs).
ALTER TABLE outbox ADD COLUMN event_seq INTEGER;
ALTER TABLE outbox ADD COLUMN message_type TEXT;
ALTER TABLE outbox ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN stream_offset INTEGER;

UPDATE outbox SET event_seq = (SELECT COUNT(*) FROM outbox o2 WHERE o2.aggregate_id = outbox.aggregate_id AND o2.seq <= outbox.seq);

UPDATE outbox SET message_type = 'usher.events.v1.' || CASE topic
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

UPDATE events SET outbox_seq = COALESCE((SELECT MAX(event_seq) FROM outbox WHERE aggregate_id = events.id), 0);

CREATE UNIQUE INDEX outbox_event_seq ON outbox (aggregate_id, event_seq);
CREATE UNIQUE INDEX outbox_stream_offset ON outbox (stream_offset) WHERE stream_offset IS NOT NULL;
-- Pruning finds published rows by age.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Positions in the stream: the embedded relay's next offset ('relay') and
-- each local consumer's next offset to read (by consumer name).
CREATE TABLE stream_cursors (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
