//! The gateway's limits table, units last in the names (the engine's
//! `usher_engine::limits` holds the domain's and the actors'). ARCHITECTURE.md
//! repeats it. Each says why it has its value.

// ---- requests

/// Holds one order may combine: the most a customer can have live on an
/// event (`HOLDS_PER_CUSTOMER_MAX`), so one order can take them all.
pub const ORDER_HOLDS_MAX: usize = usher_engine::limits::HOLDS_PER_CUSTOMER_MAX as usize;
/// An email address: RFC 5321's path limit (254 bytes for the address).
pub const EMAIL_BYTES_MAX: usize = 254;
/// A gate's name: short enough for a scanner's screen and the audit log.
pub const GATE_BYTES_MAX: usize = 64;
/// How long `PayOrder` waits for the payment to settle by default, and at
/// most: long enough for a provider's answer, short enough to hold no
/// connection for minutes (the status can be read later).
pub const PAY_WAIT_MS_DEFAULT: u64 = 10_000;
pub const PAY_WAIT_MS_MAX: u64 = 60_000;
/// Orders per `ListOrders` page: a screenful for people, bounded work per call.
pub const ORDERS_PAGE_MAX: u32 = 200;
/// Events per `ListEvents` page.
pub const EVENTS_PAGE_MAX: u32 = 500;
/// Bytes per `DownloadTickets` message: well under gRPC's 4 MiB default.
pub const PDF_CHUNK_BYTES: usize = 64 * 1024;
/// A person's, organization's or partner's name.
pub const NAME_BYTES_MAX: usize = 200;
/// Audit entries per page.
pub const AUDIT_PAGE_MAX: u32 = 500;

// ---- live seat feeds (WatchSeats, server-sent events)

/// Seat feeds one client may hold open by default (`seat_streams_per_client_max`):
/// a few tabs of a few events each. A
/// client is a signed-in principal, or an address for anonymous callers and
/// guests (who can mint identities); an office behind one address shares it.
pub const SEAT_STREAMS_PER_CLIENT_MAX: usize = 32;
/// Seat feeds one node holds open by default (`seat_streams_per_node_max`):
/// twice the target of 10,000 open
/// storefront pages, each a few KiB while it waits.
pub const SEAT_STREAMS_PER_NODE_MAX: usize = 20_000;
/// Feed items waiting for a slow watcher before the feed waits too (it then
/// falls behind the event's broadcast and is sent a fresh snapshot).
pub const SEAT_FEED_QUEUED_MAX: usize = 16;
/// How long a feed waits for its watcher to take an item before it drops
/// the watcher, by default (`seat_feed_stall_ms`): a live page takes each at
/// once; one that has stopped reading only holds memory.
pub const SEAT_FEED_STALL_MS_DEFAULT: u64 = 30_000;
/// How long an event's feed gathers committed batches into one frame before
/// it sends them: each watcher gets at most two writes a second however fast
/// the onsale commits, and a change shows within half a second. Each write
/// to each watcher costs the node: with 10,000 watchers of an onsale, frames
/// of 200 ms held 61 % of the onsale's holds/s, of 500 ms (bench/README.md).
pub const SEAT_FEED_FRAME_MS: u64 = 500;
/// Frames waiting for a watcher in the event's hub before the watcher
/// counts as behind (it then takes a fresh snapshot): 32 s of frames
/// (64 × `SEAT_FEED_FRAME_MS`).
pub const SEAT_FEED_FRAMES_QUEUED_MAX: usize = 64;
/// Seconds between keep-alive comments on an idle server-sent-event feed,
/// so proxies and the HTTP idle timeout do not cut it.
pub const SEAT_FEED_KEEPALIVE_S: u64 = 15;
/// Bytes a page may send on its live feed's connection after the request
/// before the feed is closed: an `EventSource` sends nothing, so more is a
/// client abusing an open socket (what it sends is read and dropped).
pub const PAGE_WATCHER_SENT_BYTES_MAX: usize = 4_096;
/// Send buffer of a page's live feed socket (`SO_SNDBUF`; Linux doubles
/// it for its own bookkeeping). Fixed, because Linux otherwise grows a
/// socket's buffer towards `tcp_wmem`'s 4 MiB for a page that reads
/// nothing; a snapshot larger than this goes out over several writes.
pub const PAGE_FEED_SEND_BUFFER_BYTES: usize = 64 * 1024;
/// Pages a hub writes to before it lets other tasks run: about a
/// millisecond of writes (see `streams::each_page`).
pub const PAGE_WRITES_PER_YIELD: usize = 128;
/// How soon a hub writes again to pages whose sockets were full.
pub const PAGE_FEED_RETRY_MS: u64 = 50;

// ---- credentials

/// Shortest and longest password accepted at registration (NIST SP 800-63B
/// asks for at least 8 and for long passphrases to be allowed).
pub const PASSWORD_CHARS_MIN: usize = 12;
pub const PASSWORD_CHARS_MAX: usize = 128;
/// Password hashes computed at once. Each argon2id run takes 19 MiB and
/// tens of milliseconds of a core, so a sign-in flood from many addresses
/// queues here rather than on the blocking pool (512 threads × 19 MiB).
pub const PASSWORD_HASHES_AT_ONCE_MAX: usize = 4;
/// How long a sign-in waits for a hashing slot before it is told to retry.
pub const PASSWORD_HASH_WAIT_MS_MAX: u64 = 2_000;
/// How long a checked API key or device token is trusted before it is read
/// from the store again: a revocation on this node takes effect at once, on
/// another within this time.
pub const CREDENTIAL_CACHE_MS: i64 = 10_000;
/// Cached credentials per node; past this the cache starts over.
pub const CREDENTIAL_CACHE_ENTRIES_MAX: usize = 10_000;
/// `last_used_at` is written at most this often per key (a minute is what
/// an owner reading "last used" needs; every request would be a write).
pub const LAST_USED_WRITE_MS_MIN: i64 = 60_000;
/// Clock skew tolerated when checking a token's `exp`, in seconds.
pub const TOKEN_LEEWAY_S: u64 = 30;
/// An unknown `kid` reloads the signing keys from the store (another node
/// rotated), at most this often, so garbage tokens cannot hammer the store.
pub const KEY_RELOAD_MS_MIN: i64 = 5_000;
/// Bytes of the HMAC kept in an emailed order link (128 bits).
pub const ORDER_LINK_SECRET_BYTES: usize = 16;
/// Callers tracked per rate limiter before idle ones are dropped early.
pub const RATE_KEYS_MAX: usize = 100_000;

// ---- connections (both doors; the `_DEFAULT`s are settings in `Config`)

/// Open HTTP connections per node. A browser opens up to six; the readers
/// target is 10,000 open storefront streams on one node. Past the cap a new
/// connection is closed at once. The process's file-descriptor limit must
/// exceed this plus `GRPC_CONNECTIONS_MAX_DEFAULT` plus the store's.
pub const HTTP_CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Open gRPC connections per node: partners, box offices and gates send
/// many calls over a few connections each.
pub const GRPC_CONNECTIONS_MAX_DEFAULT: usize = 1_000;
/// Time for a request's head, from when the connection starts waiting for
/// it. hyper starts the same timer when a keep-alive connection falls idle,
/// so this is also the HTTP idle timeout. A browser sends its head in one
/// packet; 10 s is ample on a slow mobile link.
pub const HTTP_HEADER_READ_MS_DEFAULT: u64 = 10_000;
/// Time for a request's whole body, from its head: the largest body axum
/// takes (2 MiB) at 70 KiB/s. A body sent at 1 byte/s is cut off here.
pub const HTTP_BODY_MS_DEFAULT: u64 = 30_000;
/// A gRPC connection with no call in flight for this long gets GOAWAY
/// (clients reconnect on their next call); a client that never finishes its
/// HTTP/2 handshake is idle too.
pub const GRPC_IDLE_MS_DEFAULT: u64 = 60_000;
/// After an idle GOAWAY, how long a connection may take to close before it
/// is dropped (a client stuck in its handshake never answers).
pub const GRPC_CLOSE_GRACE_MS: u64 = 5_000;
/// How long a connection may take to finish its calls once the node stops,
/// before it is cut: enough for a call that is being answered, so a clean
/// stop loses nothing; bounded, because a client that never reads its
/// answer would otherwise hold the stop for ever. A `PayOrder` waiting for
/// its payment is cut sooner than its wait; the payment goes on and its
/// retry (same key) reads the outcome.
pub const CONN_DRAIN_MS_MAX: u64 = 20_000;
/// An HTTP/2 PING every 20 s with 10 s to answer: a client that vanished
/// without closing goes within half a minute.
pub const GRPC_KEEPALIVE_INTERVAL_MS: u64 = 20_000;
pub const GRPC_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
/// Silence before TCP keepalive probes start, on both doors: finds peers
/// gone without a FIN where no HTTP/2 PING runs (the HTTP door).
pub const TCP_KEEPALIVE_MS: u64 = 60_000;
/// Calls at once on one gRPC connection: RFC 9113 asks for no fewer than 100.
pub const GRPC_STREAMS_PER_CONNECTION_MAX: u32 = 100;
/// Largest gRPC message received: gRPC's default of 4 MiB (a venue at
/// `SECTIONS_PER_VENUE_MAX` is a few hundred KiB).
pub const GRPC_DECODING_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest gRPC message sent: above the 10 MB `GetSeatMap` of a 200,000-seat
/// event, kept for clients of that call (`GetSeatLayout` and `GetSeatStatus`
/// carry the same in 230 KB).
pub const GRPC_ENCODING_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Wait after a failed accept (out of file descriptors), doubling from the
/// first to the last: the waiting connection keeps the listener readable,
/// so retrying at once would spin a core.
pub const ACCEPT_BACKOFF_MS_MIN: u64 = 10;
pub const ACCEPT_BACKOFF_MS_MAX: u64 = 1_000;

// ---- cluster

/// How long an event's lease lasts without renewal by default: the longest
/// an event goes unserved after its owner dies (takeover time is about this
/// plus one client retry). Shorter makes failover faster but lets a pause of
/// the owner (a stop-the-world stall, a slow Redis) cost it its events;
/// see docs/cluster.md "The lease's TTL" for the measurement behind it.
pub const LEASE_TTL_MS_DEFAULT: u64 = 3_000;
/// How often leases are renewed by default: three renewals per TTL, so two
/// can fail before a lease is at risk.
pub const LEASE_RENEW_MS_DEFAULT: u64 = 1_000;
/// A forwarded request's deadline when the caller gave none (gRPC's
/// `grpc-timeout`): long enough for a `PayOrder` that waits for its payment
/// (`PAY_WAIT_MS_MAX`) plus the owner's own work.
pub const FORWARD_MS_MAX: u64 = PAY_WAIT_MS_MAX + 5_000;
/// Time to open a connection to another node: loopback or one datacenter;
/// a node that does not answer this fast is taken for dead by the caller,
/// who retries (UNAVAILABLE) while the lease expires.
pub const FORWARD_CONNECT_MS: u64 = 1_000;
/// Partitions of each topic Usher creates by default: each event's messages
/// stay in one of them, so this caps a consumer group's parallelism.
pub const KAFKA_PARTITIONS_DEFAULT: u32 = 6;
/// How long librdkafka tries to deliver one message before reporting it
/// failed (`message.timeout.ms`); the relay sends it again later.
pub const KAFKA_MESSAGE_TIMEOUT_MS: u64 = 10_000;
/// The gRPC health service name that reports the outbox relay: SERVING
/// while the oldest unpublished row is younger than `relay_behind_ms`.
pub const RELAY_HEALTH_SERVICE: &str = "usher.relay";
