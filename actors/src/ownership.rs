//! Single-node ownership: this process is the only one that serves its
//! database, so it may have every event. What makes that true is a guard the
//! binary takes at start (an exclusive lock on the SQLite file, or a
//! PostgreSQL advisory lock held for the life of the process): a second
//! `usher serve` on the same data refuses to start instead of taking events
//! from the first. The epoch still moves forward on every grant, so an actor
//! that restarts fences out its predecessor's late writes.

use std::sync::Arc;

use usher_engine::EventId;

use crate::ports::{BoxFuture, Epoch, EpochClaim, Ownership, OwnershipError, Store};

/// Proof that this process alone serves the database; dropping it gives the
/// database up. Adapters make one (`usher_adapters::NodeLock`).
pub trait SoleServer: Send + Sync + 'static {
    /// What is held, e.g. `lock on /var/lib/usher/usher.db`.
    fn describe(&self) -> String;
    /// Whether it is still held: a lock that lives on a database connection
    /// is gone when the connection is (a restart, a failover), and then
    /// another process may have taken the database. A sentence if not.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Grants every event to this node: the store mints the next epoch.
pub struct LocalOwnership {
    store: Arc<dyn Store>,
    guard: Box<dyn SoleServer>,
}

impl LocalOwnership {
    /// `guard` must stay held while events are served; it is kept here.
    pub fn new(store: Arc<dyn Store>, guard: Box<dyn SoleServer>) -> LocalOwnership {
        LocalOwnership { store, guard }
    }
}

impl Ownership for LocalOwnership {
    /// Grants nothing once the guard is lost: another process may serve
    /// the database now, and taking its events would fence it out.
    fn acquire(&self, event: EventId) -> BoxFuture<'_, Result<Epoch, OwnershipError>> {
        Box::pin(async move {
            self.guard.check().await.map_err(|why| OwnershipError::Elsewhere { event_id: event, owner: why })?;
            Ok(self.store.fence_event(event, EpochClaim::Next).await?)
        })
    }

    /// Nothing to give back: the next grant moves the epoch past this one.
    fn release(&self, _event: EventId, _epoch: Epoch) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn describe(&self) -> String {
        format!("single node ({})", self.guard.describe())
    }
}
