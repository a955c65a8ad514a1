//! Ports: what the actors need from the outside world. Adapters implement
//! them and translate their driver errors into `StoreError`, so no driver
//! type leaks inward.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use usher_engine::{
    CustomerId, Decision, EventConfig, EventId, EventStatus, HoldId, IdempotencyKey, Layout, MailKind, Millis, Money, Order, OrderId,
    OrgId, OrgUsage, PaymentId, SeatIdx, Snapshot, TicketId, Transition, VenueId, VenueSpec,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One organizer action, written with the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub org: OrgId,
    pub at: Millis,
    /// `Principal::actor()`: `user:<uuid>`, `partner:<uuid>/key:<uuid>`, …
    pub actor: String,
    /// The caller's address as the server saw it.
    pub address: String,
    /// E.g. `event.cancel`, `api_key.create`.
    pub action: String,
    /// What it acted on, e.g. the event id.
    pub target: String,
    /// A few words more, for people; never a secret.
    pub detail: String,
}

/// The fencing token of an event's owner: minted by the database that holds
/// the seats (`events.owner_epoch + 1` when an owner takes the event), and
/// checked by every write for the event. A writer with an older one changes
/// nothing (Temporal's shard `range_id` is the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub i64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Which epoch a new owner asks `Store::fence_event` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochClaim {
    /// The stored epoch plus one (the database mints it: one node).
    Next,
    /// This one, minted by a lease service; refused unless it is newer than
    /// the stored epoch.
    Exactly(Epoch),
}

// ---------------------------------------------------------------------------
// Ownership: which node serves an event. Every write for an event (a seat
// batch, an order's transition) carries the epoch its owner was granted.

#[derive(Debug, Clone, thiserror::Error)]
pub enum OwnershipError {
    /// Another node holds the event's lease: this node must not serve it.
    #[error("event {event_id} is served by another node ({owner})")]
    Elsewhere { event_id: EventId, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Grants events to this node. The registry asks before it spawns an event's
/// actor and gives the event back when the actor stops; the epoch it gets is
/// the fencing token every write for the event then carries. One node uses
/// `crate::LocalOwnership`; a cluster plugs its leases in here.
pub trait Ownership: Send + Sync + 'static {
    /// Grants `event` to this node with a new epoch, or says who has it.
    fn acquire(&self, event: EventId) -> BoxFuture<'_, Result<Epoch, OwnershipError>>;
    /// Gives `event` up (its actor stopped). A no-op if the lease was lost
    /// or granted again since (to a newer epoch).
    fn release(&self, event: EventId, epoch: Epoch) -> BoxFuture<'_, ()>;
    /// What grants events here, for the start banner and logs.
    fn describe(&self) -> String;
    /// Grants this node lost without giving them back (a lease that expired
    /// or was taken while this node stalled, or a lease service restarted
    /// empty): the registry stops each one's actor at once, so the node
    /// stops deciding for the event and forwards instead. Taken once, by the
    /// registry; `None` where grants are never lost (one node).
    fn revocations(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<(EventId, Epoch)>> {
        None
    }
    /// How often (ms) the registry looks for events that should run
    /// somewhere and run nowhere (their owner died) and takes them, so their
    /// hold expiries and order sagas go on without traffic. `None`: only at
    /// start (one node, which owns every event).
    fn sweep_ms(&self) -> Option<u64> {
        None
    }
    /// Of `events`, those no node holds now (a sweep takes only these; an
    /// error, or a lease service that is down, answers none: no sweep).
    fn unclaimed<'a>(&'a self, events: &'a [EventId]) -> BoxFuture<'a, Vec<EventId>> {
        Box::pin(async move { events.to_vec() })
    }
    /// Gives every grant back at once (a drain: SIGTERM), so that other
    /// nodes take the events now instead of after the lease expires. Called
    /// after every actor has stopped.
    fn release_all(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another owner took the event: our fencing token is stale.
    #[error("fenced: event {event_id} is owned by a newer epoch than {epoch}")]
    Fenced { event_id: EventId, epoch: Epoch },
    #[error("not found: {0}")]
    NotFound(String),
    /// Someone else wrote the row since we read it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data that breaks an invariant; a person must look.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The database could not be reached or failed; retrying may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Everything needed to rebuild one event's inventory.
pub struct LoadedEvent {
    pub config: EventConfig,
    pub layout: Arc<Layout>,
    pub snapshot: Snapshot,
}

/// One group commit: every decision of a batch, written in one transaction.
pub struct Batch<'a> {
    pub event_id: EventId,
    pub epoch: Epoch,
    pub now: Millis,
    pub layout: &'a Layout,
    pub decisions: &'a [Decision],
    /// Organizer actions decided in this batch (open, close, cancel, block,
    /// unblock), written to the audit log in the same transaction.
    pub audits: &'a [AuditEntry],
    /// The W3C `traceparent` of the request behind each decision, aligned
    /// with `decisions` (shorter, or `None`: untraced): written with the
    /// decision's outbox rows, so consumers can join the trace.
    pub traces: &'a [Option<String>],
}

/// The outcome of a keyed create: made now, made before under the same key
/// (the retry gets the first answer), or the key was used for something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    New(T),
    Replayed(T),
    KeyReused,
}

#[derive(Debug, Clone)]
pub struct VenueRecord {
    pub id: VenueId,
    /// The organization that owns the venue.
    pub org_id: OrgId,
    pub spec: VenueSpec,
    pub seat_count: u32,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub status: Option<EventStatus>,
    pub starts_after: Option<Millis>,
    pub starts_before: Option<Millis>,
    /// Keyset pagination: events strictly after (starts_at, id).
    pub after: Option<(Millis, EventId)>,
    pub limit: u32,
    pub visible: Visibility,
}

/// Which events a listing may show. Public events are those on sale or
/// with sales closed; drafts and cancelled events are their organization's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Visibility {
    /// Every event (a platform admin).
    All,
    /// Public events, and every event of these organizations.
    #[default]
    Public,
    PublicAnd(Vec<OrgId>),
}

pub trait Store: Send + Sync + 'static {
    // -- catalog
    /// Creates a venue of `org`, with `audit` in the same transaction
    /// (nothing is audited for a replay).
    #[allow(clippy::too_many_arguments)]
    fn create_venue<'a>(
        &'a self,
        key: &'a IdempotencyKey,
        fingerprint: u64,
        id: VenueId,
        org: OrgId,
        spec: &'a VenueSpec,
        layout: &'a Layout,
        now: Millis,
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<Created<VenueId>, StoreError>>;
    fn get_venue(&self, id: VenueId) -> BoxFuture<'_, Result<Option<VenueRecord>, StoreError>>;
    /// Creates an event of `config.org_id`, with `audit` in the same transaction.
    fn create_event<'a>(
        &'a self,
        key: &'a IdempotencyKey,
        fingerprint: u64,
        config: &'a EventConfig,
        now: Millis,
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<Created<EventId>, StoreError>>;
    fn get_event(&self, id: EventId) -> BoxFuture<'_, Result<Option<EventConfig>, StoreError>>;
    fn list_events(&self, filter: EventFilter) -> BoxFuture<'_, Result<Vec<EventConfig>, StoreError>>;
    /// What `org` holds now, for its quotas: venues, their seats, and events
    /// not cancelled that start after `now` or are on sale.
    fn org_usage(&self, org: OrgId, now: Millis) -> BoxFuture<'_, Result<OrgUsage, StoreError>>;
    /// Which event a hold belongs to, for calls that name only the hold.
    fn find_hold_event(&self, hold: HoldId) -> BoxFuture<'_, Result<Option<EventId>, StoreError>>;

    // -- inventory
    /// Moves an event's fencing epoch forward for a new owner and returns it:
    /// `EpochClaim::Next` mints the stored epoch plus one, `EpochClaim::Exactly`
    /// sets one minted elsewhere (a lease service) if it is newer than the
    /// stored one, and answers `StoreError::Fenced` if it is not. Any writer
    /// still holding an older epoch is refused from then on. Only an
    /// `Ownership` calls this, after it has granted the event.
    fn fence_event(&self, id: EventId, claim: EpochClaim) -> BoxFuture<'_, Result<Epoch, StoreError>>;
    fn load_event(&self, id: EventId, now: Millis) -> BoxFuture<'_, Result<Option<LoadedEvent>, StoreError>>;
    fn commit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The commit path's counters, one per kind; a store that measures
    /// nothing answers none.
    fn commit_stats(&self) -> Vec<CommitStats> {
        Vec::new()
    }
}

/// The kinds of commit that go through a store's one commit path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitKind {
    /// An event actor's group commit of seat decisions.
    SeatBatch = 0,
    /// A new order with its order-created message.
    OrderCreate = 1,
    /// The order writer's group commit of saga transitions.
    OrderBatch = 2,
    /// A ticket's first admission at a gate, with its ticket-checked-in message.
    Scan = 3,
}

impl CommitKind {
    pub const ALL: [CommitKind; 4] = [CommitKind::SeatBatch, CommitKind::OrderCreate, CommitKind::OrderBatch, CommitKind::Scan];

    pub fn as_str(self) -> &'static str {
        match self {
            CommitKind::SeatBatch => "seat_batch",
            CommitKind::OrderCreate => "order_create",
            CommitKind::OrderBatch => "order_batch",
            CommitKind::Scan => "scan",
        }
    }
}

/// What the commit path measured for one kind since start. Times are
/// microseconds from `BEGIN` to the end of `COMMIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStats {
    pub kind: CommitKind,
    /// Committed transactions.
    pub commits: u64,
    /// Writes refused by the epoch fence (a whole seat batch, or one order's
    /// write within a batch).
    pub fenced: u64,
    /// Transactions that ended in an error and were rolled back.
    pub failed: u64,
    /// Outbox rows committed.
    pub outbox_rows: u64,
    pub micros_total: u64,
    pub micros_max: u64,
}

impl std::fmt::Display for CommitStats {
    /// `seat_batch commits=… fenced=… failed=… outbox_rows=… mean_us=… max_us=…`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commits={} fenced={} failed={} outbox_rows={} mean_us={} max_us={}",
            self.kind.as_str(),
            self.commits,
            self.fenced,
            self.failed,
            self.outbox_rows,
            self.micros_total.checked_div(self.commits).unwrap_or(0),
            self.micros_max
        )
    }
}

// ---------------------------------------------------------------------------
// Payment: the provider behind a port. The simulated adapter lives in
// `usher-adapters`; a real one would translate a PSP's API the same way.

/// What the saga asks the provider to authorize. `key` is the provider-side
/// idempotency key: asking twice with one key answers the first outcome.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub key: String,
    pub reference: String,
    pub amount: Money,
    /// The card number as the customer typed it (digits only after parsing).
    pub card_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PaymentOutcome {
    Authorized { provider_ref: String },
    Declined { reason: String },
}

/// What the provider knows of an attempt, asked when it did not answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProviderStatus {
    /// Never heard of that key: the request did not reach it.
    Unknown,
    /// Still deciding.
    Pending,
    Authorized {
        provider_ref: String,
    },
    Captured {
        provider_ref: String,
    },
    Declined {
        reason: String,
    },
    Refunded {
        provider_ref: String,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Could not reach the provider, or it failed; retrying may work.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request itself (unknown reference, ...).
    #[error("payment provider refused: {0}")]
    Refused(String),
}

pub trait PaymentProvider: Send + Sync + 'static {
    /// May never answer (a provider that hangs): callers put a timeout on it.
    fn authorize(&self, req: AuthorizeRequest) -> BoxFuture<'_, Result<PaymentOutcome, ProviderError>>;
    fn capture<'a>(&'a self, key: &'a str, provider_ref: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Voids an authorization or refunds a capture; refunding twice is a no-op.
    fn refund<'a>(&'a self, key: &'a str, provider_ref: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// The provider's view of an attempt, by the key it was authorized with.
    fn status<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ProviderStatus, ProviderError>>;
}

// ---------------------------------------------------------------------------
// Fulfillment: rendering an order's tickets to one PDF.

/// One page of the PDF. Every field is already formatted for people.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TicketDoc {
    pub ticket_id: String,
    pub section: String,
    pub row: String,
    pub number: u32,
    pub category: String,
    /// E.g. "EUR 50.00".
    pub price: String,
    /// The signed ticket code; the QR code carries exactly this text.
    pub code: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderDoc {
    pub order_number: String,
    pub event_name: String,
    pub venue_name: String,
    /// E.g. "2026-12-01 20:00 UTC".
    pub starts_at: String,
    pub holder: String,
    pub tickets: Vec<TicketDoc>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("rendering failed: {0}")]
pub struct RenderError(pub String);

/// Blocking and CPU-bound: callers run it on a bounded worker pool, never on
/// an actor's task.
pub trait TicketRenderer: Send + Sync + 'static {
    fn render(&self, doc: &OrderDoc) -> Result<Vec<u8>, RenderError>;
}

// ---------------------------------------------------------------------------
// Notification: sending one email.

#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Email {
    /// Stable per (order, kind), so a receiver can tell a resend apart.
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// The W3C `traceparent` of the span that sends it, written as the
    /// message's `Traceparent` header (the purchase's trace reaches the
    /// inbox); `None` when untraced.
    pub trace: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MailError {
    /// The server is down or answered 4xx: retry later.
    #[error("mail delivery failed, will retry: {0}")]
    Transient(String),
    /// The message can never be delivered as it is (5xx, bad address).
    #[error("mail delivery failed for good: {0}")]
    Permanent(String),
}

pub trait Mailer: Send + Sync + 'static {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>>;
    /// Where mail goes, for logs and the start banner.
    fn describe(&self) -> String;
}

// ---------------------------------------------------------------------------
// Orders, tickets, scans and the email queue: the saga's storage.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Valid,
    Refunded,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Valid => "valid",
            TicketStatus::Refunded => "refunded",
        }
    }
    pub fn parse(s: &str) -> Option<TicketStatus> {
        [TicketStatus::Valid, TicketStatus::Refunded].into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRecord {
    pub id: TicketId,
    pub order_id: OrderId,
    pub event_id: EventId,
    pub seat: SeatIdx,
    pub seat_label: String,
    pub price: Money,
    pub code: String,
    pub status: TicketStatus,
    pub issued_at: Millis,
}

/// An order as stored, with its optimistic-concurrency version.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    pub order: Order,
    pub version: i64,
}

/// One saga transition, written in one transaction: the order, its new
/// tickets, its outbox messages and its queued email.
pub struct OrderWrite<'a> {
    pub order: &'a Order,
    /// The epoch of the order's event's owner, as the saga last saw it: a
    /// write with another one is refused with `StoreError::Fenced`, alone.
    pub epoch: Epoch,
    /// The version read; the write fails with `StoreError::Conflict` if the
    /// stored one moved (two writers for one order).
    pub version: i64,
    pub transition: &'a Transition,
    pub new_tickets: &'a [TicketRecord],
    /// Seat labels for the outbox payloads, in the order's line order.
    pub seat_labels: &'a [String],
    pub now: Millis,
    /// The order's trace (`traceparent`), written with its outbox rows.
    pub trace: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCreated {
    New,
    /// The key made this order before: the retry gets it.
    Replayed(OrderId),
    KeyReused,
    /// A hold already belongs to another order.
    HoldInOrder {
        hold_id: HoldId,
        order_id: OrderId,
    },
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub customer: Option<CustomerId>,
    pub event_id: Option<EventId>,
    /// Keyset pagination, newest first: orders strictly before (created_at, id).
    pub before: Option<(Millis, OrderId)>,
    pub limit: u32,
}

/// The first admission of a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRecord {
    pub gate: String,
    pub key: String,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    pub order_id: OrderId,
    pub kind: MailKind,
    pub recipient: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailState {
    Pending,
    Sent,
    Failed,
}

pub trait OrderStore: Send + Sync + 'static {
    /// Creates an order (status pending payment) with its order-created
    /// outbox message, unless the key or a hold was used before. `epoch` is
    /// the order's event owner's (`StoreError::Fenced` if it is stale).
    fn create_order<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        order: &'a Order,
        seat_labels: &'a [String],
        epoch: Epoch,
    ) -> BoxFuture<'a, Result<OrderCreated, StoreError>>;
    /// Writes many orders' transitions in one transaction (group commit):
    /// one result per write, in order. A version conflict fails its own
    /// write only; a failed commit fails every write.
    fn save_orders<'a>(&'a self, ws: &'a [OrderWrite<'a>]) -> BoxFuture<'a, Vec<Result<(), StoreError>>>;
    fn get_order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<StoredOrder>, StoreError>>;
    fn list_orders(&self, filter: OrderFilter) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;
    /// Orders whose saga has work left (step is not done), to resume at
    /// start (`None`: every event's) or when this node takes `Some(event)`.
    fn live_orders(&self, event: Option<EventId>) -> BoxFuture<'_, Result<Vec<StoredOrder>, StoreError>>;
    /// Orders of an event that are paid, fulfilled or still pending payment.
    fn open_orders_of_event(&self, event_id: EventId) -> BoxFuture<'_, Result<Vec<OrderId>, StoreError>>;
    fn find_payment(&self, id: PaymentId) -> BoxFuture<'_, Result<Option<OrderId>, StoreError>>;
    /// A keyed command on an existing resource (pay, cancel, scan): inserts
    /// the key or tells what it stood for.
    fn claim_command<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        resource: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, Result<Created<String>, StoreError>>;

    /// What a command key stands for, if it was used: (fingerprint, resource).
    fn lookup_command<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(u64, String)>, StoreError>>;

    fn tickets_of_order(&self, order: OrderId) -> BoxFuture<'_, Result<Vec<TicketRecord>, StoreError>>;
    fn get_ticket(&self, id: TicketId) -> BoxFuture<'_, Result<Option<TicketRecord>, StoreError>>;
    /// Records the first scan of a ticket, or returns the one already there.
    /// Exactly one concurrent caller gets `Ok(None)` (it was first).
    fn record_scan<'a>(
        &'a self,
        ticket: TicketId,
        gate: &'a str,
        key: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, Result<Option<ScanRecord>, StoreError>>;

    /// Claims up to `limit` emails due at `now` for this node's postman: no
    /// other node gets them for `limits::MAIL_CLAIM_MS`, by when this one
    /// has recorded the outcome (`mail_sent`, `mail_retry`, `mail_failed`).
    fn due_mail(&self, now: Millis, limit: u32) -> BoxFuture<'_, Result<Vec<QueuedMail>, StoreError>>;
    fn mail_sent(&self, order: OrderId, kind: MailKind, now: Millis) -> BoxFuture<'_, Result<(), StoreError>>;
    fn mail_retry<'a>(&'a self, order: OrderId, kind: MailKind, next_at: Millis, error: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    fn mail_failed<'a>(&'a self, order: OrderId, kind: MailKind, error: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    fn mail_state(&self, order: OrderId, kind: MailKind) -> BoxFuture<'_, Result<Option<MailState>, StoreError>>;
    /// Emails not yet sent or given up on, deployment-wide, and when the
    /// oldest of them was queued (for metrics and `usher status`).
    fn mail_backlog(&self) -> BoxFuture<'_, Result<Backlog, StoreError>>;
}

/// One outbox row on its way out, as the relay reads it and as a consumer
/// receives it (from Kafka or from the embedded stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMessage {
    /// The outbox row's number (global, assigned at insert): what the relay
    /// marks published. Not an order between events; 0 when read from Kafka.
    pub row: i64,
    /// A UUID: the consumers' deduplication key (`message-id` header).
    pub message_id: String,
    /// The topic, one of `usher_adapters::outbox::TOPICS`.
    pub topic: String,
    /// The event id: the Kafka key.
    pub key: String,
    /// The message's place in its event's story: 1, 2, 3 ... with no gaps
    /// (`event-seq` header); a consumer that sees n+2 after n missed one.
    pub event_seq: i64,
    /// The payload's full protobuf name, e.g. `usher.events.v1.SeatsSold`.
    pub message_type: String,
    /// The payload schema's version within its package (`schema-version`).
    pub schema_version: u32,
    /// When the change committed (ms since the Unix epoch).
    pub occurred_at: Millis,
    /// The W3C `traceparent` of the request that caused it, when known.
    pub traceparent: Option<String>,
    /// Protobuf bytes of `message_type`.
    pub payload: Vec<u8>,
    /// The position in the embedded stream (`stream_offset`), once the
    /// embedded relay gave it one; read from Kafka: its offset in its
    /// partition.
    pub offset: Option<i64>,
    /// Read from Kafka: its partition of `topic`; `None` otherwise.
    pub partition: Option<i32>,
}

/// The outbox as a whole: what any node may ask of it.
pub trait StreamStore: Send + Sync {
    /// Tries to become the one relay of this database. `Some` holds the
    /// right until dropped (PostgreSQL: a session advisory lock on a
    /// connection of its own, which every relay statement runs on, so a
    /// relay whose session died can write nothing more); `None`: another
    /// node relays.
    fn relay_session(&self) -> BoxFuture<'_, Result<Option<Box<dyn RelaySession>>, StoreError>>;
    /// Rows not yet published and the time the oldest of them committed.
    fn backlog(&self) -> BoxFuture<'_, Result<Backlog, StoreError>>;
    /// The embedded stream from `offset` on (inclusive), at most `limit`
    /// messages, in offset order.
    fn read_local(&self, offset: i64, limit: usize) -> BoxFuture<'_, Result<Vec<StreamMessage>, StoreError>>;
    /// The offset the embedded stream's next message will have (1 when
    /// nothing was ever appended).
    fn stream_end(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
}

/// How far the outbox is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Unpublished rows.
    pub rows: u64,
    /// When the oldest unpublished row committed; `None` when there is none.
    pub oldest_at: Option<Millis>,
}

/// The relay's right to publish, and the statements only the relay runs.
pub trait RelaySession: Send {
    /// Up to `limit` unpublished rows, in insert order (within one event:
    /// `event_seq` order).
    fn unpublished(&mut self, limit: usize) -> BoxFuture<'_, Result<Vec<StreamMessage>, StoreError>>;
    /// Marks rows delivered to the broker.
    fn mark_published<'a>(&'a mut self, rows: &'a [i64], now: Millis) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The embedded stream: gives `rows` the next stream offsets, in the
    /// order given, and marks them published, in one transaction.
    fn append_local<'a>(&'a mut self, rows: &'a [i64], now: Millis) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Deletes up to `limit` rows published before `before` that every
    /// embedded consumer has read; returns how many went.
    fn prune(&mut self, before: Millis, limit: usize) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// Where the relay publishes: a Kafka broker, or the embedded stream.
pub trait Publisher: Send + Sync {
    /// Publishes `msgs` in the order given and waits for each one's
    /// delivery report: `true` for each the destination acknowledged.
    fn publish<'a>(&'a self, msgs: &'a [StreamMessage]) -> BoxFuture<'a, Vec<bool>>;
    /// `true` for the embedded stream: the relay appends rows with its
    /// session's `append_local` instead of calling `publish`.
    fn is_local(&self) -> bool {
        false
    }
    /// For logs and `usher status`: `kafka 127.0.0.1:9092` or `embedded`.
    fn describe(&self) -> String;
}

/// A consumer's next offset in one Kafka topic (without the configured
/// prefix) and partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// A consumer of the stream that keeps its state in the database, with
/// exactly-once effect: each message id is recorded in the same transaction
/// as the change it makes, and an id already recorded changes nothing.
pub trait Projection: Send + Sync {
    /// The consumer's name: its rows in `consumed_messages`, its cursor in
    /// the embedded stream, its Kafka group `usher-NAME-gGENERATION`.
    fn name(&self) -> &'static str;
    /// Applies `msgs` in the order given, in one transaction; returns how
    /// many were new. In the same transaction the consumer's position moves
    /// past them: its cursor in the embedded stream, or for messages read
    /// from Kafka its next offset in each topic partition.
    fn apply<'a>(&'a self, msgs: &'a [StreamMessage], now: Millis) -> BoxFuture<'a, Result<usize, StoreError>>;
    /// The next Kafka offset to read in each topic partition the consumer
    /// has read from.
    fn kafka_offsets(&self) -> BoxFuture<'_, Result<Vec<KafkaPosition>, StoreError>>;
    /// The next embedded-stream offset to read (1 at first).
    fn cursor(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// The current generation (0 at first).
    fn generation(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// Empties the projection (its tables, recorded ids and cursor) and moves
    /// its generation on, in one transaction: consumers start again from the
    /// beginning of the stream. Returns the new generation.
    fn reset(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
}

/// Seats of one category sold through one channel, cumulative counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatFigures {
    /// The category's code in the venue's spec.
    pub category: String,
    /// `online`, `partner` or `box_office` (`engine::SalesChannel`).
    pub channel: String,
    /// Seats ever held, released by the customer, expired, sold, refunded.
    pub held: i64,
    pub released: i64,
    pub expired: i64,
    pub sold: i64,
    pub refunded: i64,
}

/// Money taken through one channel in one currency (minor units).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevenueFigures {
    pub channel: String,
    /// ISO 4217 code.
    pub currency: String,
    pub gross_minor: i64,
    pub refunded_minor: i64,
}

/// Seats paid and their money in one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesMinute {
    /// The minute's start.
    pub at: Millis,
    pub currency: String,
    pub seats: i64,
    pub revenue_minor: i64,
}

/// Admissions at one gate in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckInFigures {
    pub gate: String,
    /// The hour's start.
    pub hour: Millis,
    pub scans: i64,
}

/// An event's sales, as the read model has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesReport {
    /// By category, then channel.
    pub seats: Vec<SeatFigures>,
    /// Orders by their latest status (`engine::OrderStatus::as_str`).
    pub orders: Vec<(String, i64)>,
    /// By channel, then currency.
    pub revenue: Vec<RevenueFigures>,
    /// Oldest first; at most `SALES_MINUTES_MAX` minutes (the latest).
    pub timeline: Vec<SalesMinute>,
    /// By hour, then gate.
    pub checkins: Vec<CheckInFigures>,
}

/// Reads of the sales read model.
pub trait Reports: Send + Sync {
    fn sales_report(&self, event: EventId) -> BoxFuture<'_, Result<SalesReport, StoreError>>;
}

/// An organization's webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpointRecord {
    pub id: uuid::Uuid,
    pub org: OrgId,
    /// `http://…` (see `gateway::webhooks` for what is accepted).
    pub url: String,
    /// Topics sent; empty: every topic.
    pub topics: Vec<String>,
    pub description: String,
    pub created_at: Millis,
    pub deleted_at: Option<Millis>,
}

/// One message on its way to one endpoint, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDeliveryRecord {
    pub id: uuid::Uuid,
    pub endpoint: uuid::Uuid,
    /// The stream message's id, sent as `webhook-id` on every attempt.
    pub message_id: String,
    pub topic: String,
    pub event_id: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Millis,
    /// The last attempt's HTTP status; 0 when there was no answer.
    pub last_status: u32,
    pub last_error: String,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
}

/// Webhook endpoints and their delivery log.
pub trait Webhooks: Send + Sync {
    /// Stores a new endpoint with its first signing secret.
    fn create_endpoint<'a>(&'a self, e: &'a WebhookEndpointRecord, secret: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The organization's endpoints, deleted ones included (newest first).
    fn list_endpoints(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<WebhookEndpointRecord>, StoreError>>;
    fn get_endpoint(&self, id: uuid::Uuid) -> BoxFuture<'_, Result<Option<WebhookEndpointRecord>, StoreError>>;
    /// Makes `secret` the endpoint's signing secret; the ones before stay
    /// valid until `old_until` (and are signed with until then).
    fn rotate_secret<'a>(&'a self, id: uuid::Uuid, secret: &'a str, old_until: Millis) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Marks the endpoint deleted (nothing more is queued or sent for it).
    fn delete_endpoint(&self, id: uuid::Uuid, now: Millis) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The endpoint's deliveries, newest first, at most `limit`, optionally
    /// of one status.
    fn list_deliveries<'a>(
        &'a self,
        endpoint: uuid::Uuid,
        status: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<WebhookDeliveryRecord>, StoreError>>;
    fn get_delivery(&self, id: uuid::Uuid) -> BoxFuture<'_, Result<Option<WebhookDeliveryRecord>, StoreError>>;
    /// Queues the delivery again for `now` (pending, its attempts kept).
    fn redeliver(&self, id: uuid::Uuid, now: Millis) -> BoxFuture<'_, Result<(), StoreError>>;
}
