//! Every limit in one table, units last in the name. ARCHITECTURE.md repeats it.

/// Seats one event's map may hold (a large stadium is ~100k).
pub const SEATS_PER_EVENT_MAX: usize = 200_000;
/// Sections in one venue.
pub const SECTIONS_PER_VENUE_MAX: usize = 1_000;
/// Rows in one section.
pub const ROWS_PER_SECTION_MAX: usize = 1_000;
/// Seats in one row.
pub const SEATS_PER_ROW_MAX: usize = 1_000;
/// Price categories per venue.
pub const CATEGORIES_PER_VENUE_MAX: usize = 64;
/// Upper bound for an event's own per-hold seat limit.
pub const HOLD_SEATS_MAX: u32 = 100;
/// Default per-hold seat limit of a new event.
pub const HOLD_SEATS_DEFAULT: u32 = 6;
/// Default hold duration of a new event: 30 minutes.
pub const HOLD_DURATION_MS_DEFAULT: u64 = 30 * 60 * 1000;
/// Shortest hold an event may configure.
pub const HOLD_DURATION_MS_MIN: u64 = 1_000;
/// Longest hold an event may configure: one day.
pub const HOLD_DURATION_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Live holds one customer may have on one event at once.
pub const HOLDS_PER_CUSTOMER_MAX: u32 = 8;
/// How long an idempotency record answers retries.
pub const IDEMPOTENCY_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// Length of a customer id.
pub const CUSTOMER_ID_BYTES_MAX: usize = 128;
/// Length of the reference a partner or a box office gives its customer
/// (the customer id is then `p:<partner>:<ref>`, within `CUSTOMER_ID_BYTES_MAX`).
pub const CUSTOMER_REF_BYTES_MAX: usize = 64;
/// Length of an idempotency key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Seats in one order, and so pages in its ticket PDF (one page per ticket):
/// every seat a customer may hold on one event at once
/// (`HOLDS_PER_CUSTOMER_MAX` x `HOLD_SEATS_MAX`). An order of one event is
/// further bounded by that event's own hold limit ([`order_seats_max`]), so
/// no order is larger than the holds it could gather; the render of the
/// largest takes a few seconds and about 9 MB of PDF.
///
/// [`order_seats_max`]: crate::order_seats_max
pub const ORDER_SEATS_MAX: usize = (HOLDS_PER_CUSTOMER_MAX * HOLD_SEATS_MAX) as usize;
/// Highest price of one seat, in minor units of the event's currency
/// (EUR 1,000,000,000.00; JPY 100,000,000,000). Far above any ticket, and low
/// enough that an order of every seat a customer may hold
/// (`HOLDS_PER_CUSTOMER_MAX` x `HOLD_SEATS_MAX` = 800) stays far inside `i64`.
pub const PRICE_MINOR_MAX: i64 = 100_000_000_000;
/// Highest total of one order, in minor units: ten times the price ceiling.
/// Below 2^53, so a JSON client reading the total as a double (JavaScript)
/// reads it exactly; an order above it is refused, never wrapped.
pub const ORDER_TOTAL_MINOR_MAX: i64 = 1_000_000_000_000;
/// Length of an IANA time zone name (the longest in tzdb 2025 is 32 bytes,
/// `America/Argentina/ComodRivadavia`).
pub const TIME_ZONE_BYTES_MAX: usize = 64;
/// Length of names (venue, event, section).
pub const NAME_BYTES_MAX: usize = 200;
/// Length of an event description.
pub const DESCRIPTION_BYTES_MAX: usize = 4_000;
/// Highest seat number (labels carry at most 9 digits).
pub const SEAT_NUMBER_MAX: u64 = 999_999_999;
/// Length of a section code, row label.
pub const LABEL_BYTES_MAX: usize = 16;
/// Commands one event's queue may hold before callers are refused at once.
pub const MAILBOX_CAPACITY_MAX: usize = 4_096;
/// Commands decided and committed in one transaction (group commit).
pub const BATCH_COMMANDS_MAX: usize = 512;
/// Events that may be loaded (have a live actor) at once on one node.
pub const EVENTS_LOADED_MAX: usize = 10_000;
/// Upcoming (not cancelled, not started) events one organization may have,
/// by default: a twentieth of `EVENTS_LOADED_MAX`, so one tenant cannot fill
/// a node's actors; a year of two shows a night leaves room to spare.
pub const UPCOMING_EVENTS_PER_ORG_MAX: u32 = 500;
/// Venues one organization may have, by default (a touring promoter's
/// venues; each costs a row and its specification).
pub const VENUES_PER_ORG_MAX: u32 = 200;
/// Seats across one organization's venues, by default: ten venues of
/// `SEATS_PER_EVENT_MAX`. A seat costs memory only while an event on its
/// venue is loaded, but a venue's layout is built for every such load.
pub const SEATS_PER_ORG_MAX: u64 = 2_000_000;
/// Saga writes waiting for the order writer at most (the queue is bounded:
/// a saga waits for room rather than growing memory).
pub const ORDER_WRITES_QUEUED_MAX: usize = 4_096;
/// Saga writes per transaction at most (one savepoint each).
pub const ORDER_WRITES_PER_BATCH_MAX: usize = 256;
/// Emails the postman sends per turn (each claimed just before it is
/// sent), then it lets its other messages in and looks again at once.
pub const MAIL_BATCH_MAX: u32 = 32;
/// How long a postman's claim on a due email lasts: longer than one
/// delivery attempt (an SMTP conversation with its timeouts), so no other
/// node's postman sends it meanwhile; a node that dies mid-delivery leaves
/// its claimed email to the others after this.
pub const MAIL_CLAIM_MS: u64 = 120_000;
/// How often a saga waiting for its confirmation email looks at the mail
/// queue (the postman also tells it; this covers a lost message).
pub const MAIL_STATE_POLL_MS: u64 = 5_000;
/// Grant notices (an event taken by or lost to this node) waiting for the
/// order supervisor. Grants change at spawns and fences, far below this;
/// a supervisor that lags past it only logs, since every saga write is
/// fenced anyway.
pub const GRANT_NOTICES_QUEUED_MAX: usize = 1_024;
/// How long a call to the registry actor may take (a first load of a large
/// event happens inside it) before the caller is told to retry.
pub const REGISTRY_CALL_MS_MAX: u64 = 30_000;
/// Actor restarts within `RESTART_WINDOW_MS` before restarts are delayed.
pub const RESTARTS_PER_WINDOW_MAX: u32 = 5;
pub const RESTART_WINDOW_MS: u64 = 60_000;
pub const RESTART_DELAY_MS: u64 = 5_000;
/// First wait before an event actor retries storage after a failed write.
pub const STORE_RETRY_BACKOFF_MS_MIN: u64 = 50;
/// Longest wait between such retries (the backoff doubles up to this).
pub const STORE_RETRY_BACKOFF_MS_MAX: u64 = 5_000;
/// Batches between full invariant rechecks in release builds (every change is
/// still checked locally, and debug builds recheck everything every time).
pub const INVARIANTS_FULL_CHECK_EVERY_BATCHES: u32 = 1_024;
/// Idempotency records one event keeps in memory (~300 B each, so ~75 MiB at
/// most); past this the oldest are forgotten before their retention ends.
pub const IDEMPOTENCY_RECORDS_PER_EVENT_MAX: usize = 250_000;
/// An event with no live holds and no request for this long is unloaded from
/// its node (its actor stops; the next use loads it again).
pub const EVENT_IDLE_UNLOAD_MS: u64 = 10 * 60 * 1000;
/// Outbox rows the relay reads and publishes per round.
pub const RELAY_BATCH_ROWS_MAX: usize = 1_000;
/// Published outbox rows one prune deletes (the rest wait for the next).
pub const RELAY_PRUNE_ROWS_MAX: usize = 10_000;
/// How long published outbox rows stay, by default (7 days).
pub const OUTBOX_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// The relay's wait between looks at an empty outbox.
pub const RELAY_POLL_MS: u64 = 20;
/// How often the relay prunes and every node reads the backlog.
pub const RELAY_PRUNE_EVERY_MS: u64 = 60_000;
pub const RELAY_BACKLOG_EVERY_MS: u64 = 1_000;
/// A node whose oldest unpublished row is older than this reports not
/// ready (`/readyz`, gRPC health `usher.relay`), by default.
pub const RELAY_BEHIND_MS_DEFAULT: u64 = 10_000;
/// Messages a stream consumer applies per transaction.
pub const CONSUMER_BATCH_MAX: usize = 500;
/// Minutes of sales a report returns (the latest; 30 days).
pub const SALES_MINUTES_MAX: usize = 43_200;
