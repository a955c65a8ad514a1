-- The inventory's hot-path tables keep no foreign keys. Every group commit
-- checked one per inserted row, and PostgreSQL caches those checks' plans per
-- connection: with statistics taken while the tables were empty (an ANALYZE
-- right after seeding a venue, as operators should run with autovacuum off),
-- the cached plan was a sequential scan, and committing a batch of ~60 holds
-- went from 2 ms to 30 ms (the onsale bench fell from 4,500 to 800 holds/s).
-- Integrity holds without them: the seat_claims primary key refuses a seat
-- claimed twice, one fenced writer per event decides every row, and every
-- load cross-checks the claims against the holds before serving.
ALTER TABLE bc_inventory.holds DROP CONSTRAINT IF EXISTS holds_event_id_fkey;
ALTER TABLE bc_inventory.seat_claims DROP CONSTRAINT IF EXISTS seat_claims_event_id_fkey;
ALTER TABLE bc_inventory.seat_claims DROP CONSTRAINT IF EXISTS seat_claims_hold_id_fkey;
