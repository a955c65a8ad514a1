-- A venue is stored as its specification (bc_catalog.venues.spec: sections,
-- rows, numbering, categories) and nothing else: every seat's label,
-- section, row, number, category and position is derived from it
-- (engine::Layout), so the table of one row per seat held nothing that is
-- not already in the spec. It was written and never read, and cost about
-- 200 bytes a seat (42 MB for a 200,000-seat venue). Nothing to move:
-- dropping it loses no information.
DROP TABLE bc_catalog.venue_seats;
