//! Ports: what the actors need from the outside world. Adapters implement
//! them and translate their driver errors into `StoreError`, so no driver
//! type leaks inward.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use usher_engine::{Decision, EventConfig, EventId, EventStatus, HoldId, IdempotencyKey, Layout, Millis, Snapshot, VenueId, VenueSpec};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another owner took the event: our fencing token is stale.
    #[error("fenced: event {event_id} is owned by a newer epoch than {epoch}")]
    Fenced { event_id: EventId, epoch: i64 },
    #[error("not found: {0}")]
    NotFound(String),
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
    pub epoch: i64,
    pub now: Millis,
    pub layout: &'a Layout,
    pub decisions: &'a [Decision],
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
}

pub trait Store: Send + Sync + 'static {
    // -- catalog
    fn create_venue<'a>(
        &'a self,
        key: &'a IdempotencyKey,
        fingerprint: u64,
        id: VenueId,
        spec: &'a VenueSpec,
        layout: &'a Layout,
        now: Millis,
    ) -> BoxFuture<'a, Result<Created<VenueId>, StoreError>>;
    fn get_venue(&self, id: VenueId) -> BoxFuture<'_, Result<Option<VenueRecord>, StoreError>>;
    fn create_event<'a>(
        &'a self,
        key: &'a IdempotencyKey,
        fingerprint: u64,
        config: &'a EventConfig,
        now: Millis,
    ) -> BoxFuture<'a, Result<Created<EventId>, StoreError>>;
    fn get_event(&self, id: EventId) -> BoxFuture<'_, Result<Option<EventConfig>, StoreError>>;
    fn list_events(&self, filter: EventFilter) -> BoxFuture<'_, Result<Vec<EventConfig>, StoreError>>;
    /// Which event a hold belongs to, for calls that name only the hold.
    fn find_hold_event(&self, hold: HoldId) -> BoxFuture<'_, Result<Option<EventId>, StoreError>>;

    // -- inventory
    /// Takes ownership of an event: bumps and returns its fencing epoch. Any
    /// writer still holding an older epoch is refused from now on.
    fn acquire_event(&self, id: EventId) -> BoxFuture<'_, Result<i64, StoreError>>;
    fn load_event(&self, id: EventId, now: Millis) -> BoxFuture<'_, Result<Option<LoadedEvent>, StoreError>>;
    fn commit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), StoreError>>;
}
