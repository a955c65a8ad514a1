-- Events carry the IANA time zone of their venue (copied from the venue's
-- spec when the event is created); instants stay unix ms, the zone is only
-- how they are shown to people. Events from before read as UTC.
ALTER TABLE bc_catalog.events ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
