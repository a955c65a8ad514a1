//! The registry: supervisor of every `EventActor` on this node. It spawns an
//! actor on first use of an event, restarts one that failed (the new actor
//! rebuilds from storage), and on start wakes every event that may hold live
//! holds, so expiry timers run without traffic.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{broadcast, mpsc};
use tracing::{error, info, warn};

use usher_engine::{EventId, EventStatus, Millis, limits};

use crate::clock::Clock;
use crate::event::{
    BatchStats, CommandError, EventActor, EventArgs, EventCtx, EventHandle, EventMsg, STOP_FENCED, STOP_IDLE, SeatChange, channel, load,
};
use crate::ports::{BoxFuture, Epoch, EventFilter, Ownership, OwnershipError, Store, StoreError};

#[derive(Clone)]
pub struct RegistryConfig {
    pub store: Arc<dyn Store>,
    /// Grants events to this node; every actor writes with its grant's epoch.
    pub ownership: Arc<dyn Ownership>,
    pub clock: Clock,
    pub mailbox_capacity: usize,
    pub batch_max: usize,
}

impl RegistryConfig {
    pub fn new(store: Arc<dyn Store>, ownership: Arc<dyn Ownership>) -> RegistryConfig {
        RegistryConfig {
            store,
            ownership,
            clock: Clock::system(),
            mailbox_capacity: limits::MAILBOX_CAPACITY_MAX,
            batch_max: limits::BATCH_COMMANDS_MAX,
        }
    }
}

pub enum RegistryMsg {
    Get(EventId, RpcReplyPort<Result<EventHandle, CommandError>>),
    Subscribe(EventId, RpcReplyPort<broadcast::Receiver<Arc<SeatChange>>>),
    /// Spawn actors for events that may have live holds.
    Warm,
    Restart(EventId),
    /// The node is going down: no more spawns or restarts.
    Stopping(RpcReplyPort<()>),
    /// An event actor has been idle long enough to be unloaded.
    Idle(EventId, ractor::ActorId),
    /// The `Ownership` lost this grant (`Ownership::revocations`): its actor
    /// stops deciding at once; look-ups wait until it has stopped, then go
    /// to whoever holds the event now.
    Revoked(EventId, Epoch),
    /// What runs here now (`Registry::loaded`).
    Loaded(RpcReplyPort<Vec<LiveEvent>>),
}

struct Entry {
    handle: EventHandle,
    restarts: Vec<Millis>,
}

pub struct RegistryState {
    cfg: RegistryConfig,
    events: HashMap<EventId, Entry>,
    /// Each running actor's event and the epoch it was granted.
    by_actor: HashMap<ractor::ActorId, (EventId, Epoch)>,
    changes: HashMap<EventId, broadcast::Sender<Arc<SeatChange>>>,
    restarts: HashMap<EventId, Vec<Millis>>,
    /// Events that failed too often: no spawn before this time, whoever asks.
    not_before: HashMap<EventId, Millis>,
    /// Events whose actor is unloading: look-ups wait here until it has
    /// stopped, so that the old and the new owner never overlap.
    unloading: HashMap<EventId, Vec<RpcReplyPort<Result<EventHandle, CommandError>>>>,
    stats: Arc<BatchStats>,
    grants: broadcast::Sender<Grant>,
    stopping: bool,
}

/// What the registry tells the node about the events granted to it (see
/// `Registry::grants`): the order supervisor runs an event's sagas only
/// while this node holds the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This node took the event with this epoch (an actor started).
    Taken(EventId, Epoch),
    /// The event's actor stopped with this epoch, and another node may take
    /// the event (it was fenced, its lease was lost, or in a cluster it was
    /// unloaded idle). A `Lost` older than the last `Taken` is stale.
    Lost(EventId, Epoch),
}

pub struct RegistryActor;

impl RegistryState {
    fn changes_for(&mut self, id: EventId) -> broadcast::Sender<Arc<SeatChange>> {
        self.changes.entry(id).or_insert_with(|| broadcast::channel(1024).0).clone()
    }

    async fn spawn(&mut self, myself: &ActorRef<RegistryMsg>, id: EventId) -> Result<EventHandle, CommandError> {
        if self.stopping {
            return Err(CommandError::ShuttingDown);
        }
        if let Some(e) = self.events.get(&id) {
            return Ok(e.handle.clone());
        }
        let now = self.cfg.clock.now();
        if let Some(t) = self.not_before.get(&id).copied() {
            if now < t {
                return Err(CommandError::Unavailable(format!(
                    "event {id} keeps failing and restarts in {} ms; retry with the same key then",
                    t.0 - now.0
                )));
            }
            self.not_before.remove(&id);
        }
        if self.events.len() >= limits::EVENTS_LOADED_MAX {
            return Err(CommandError::TooManyEvents(limits::EVENTS_LOADED_MAX));
        }
        // Take ownership first, then read: no older owner can write after this.
        let epoch = match self.cfg.ownership.acquire(id).await {
            Ok(epoch) => epoch,
            Err(OwnershipError::Store(StoreError::NotFound(_))) => return Err(CommandError::EventNotFound(id)),
            Err(OwnershipError::Elsewhere { event_id, owner }) => return Err(CommandError::OwnedElsewhere { event_id, owner }),
            Err(OwnershipError::Store(e)) => {
                warn!(event_id = %id, error = %e, "could not take the event");
                return Err(CommandError::Unavailable(e.to_string()));
            }
        };
        let inv = match load(self.cfg.store.as_ref(), id, self.cfg.clock.now()).await {
            Ok(inv) => inv,
            Err(e) => {
                self.give_back(id, epoch);
                return Err(match e {
                    StoreError::NotFound(_) => CommandError::EventNotFound(id),
                    StoreError::Corrupt(_) => {
                        error!(event_id = %id, error = %e, "stored event breaks an invariant; not serving it");
                        crate::event::command_error(&e)
                    }
                    e => {
                        warn!(event_id = %id, error = %e, "event failed to load");
                        CommandError::Unavailable(e.to_string())
                    }
                });
            }
        };
        let layout = inv.layout().clone();
        let org = inv.config().org_id;
        let status = Arc::new(crate::event::SharedStatus::new(inv.config().status));
        let (tx, rx) = mpsc::channel(self.cfg.mailbox_capacity);
        let wake = Arc::new(AtomicBool::new(false));
        let args = EventArgs {
            inv,
            epoch,
            ctx: EventCtx {
                event_id: id,
                store: self.cfg.store.clone(),
                clock: self.cfg.clock.clone(),
                rx,
                wake_pending: wake.clone(),
                changes: self.changes_for(id),
                stats: self.stats.clone(),
                status: status.clone(),
                batch_max: self.cfg.batch_max,
                registry: Arc::new(myself.clone()),
            },
        };
        match Actor::spawn_linked(None, EventActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                let handle = channel(id, epoch, org, status, actor.clone(), layout, tx, wake, Arc::new(myself.clone()));
                self.by_actor.insert(actor.get_id(), (id, epoch));
                let restarts = self.restarts.remove(&id).unwrap_or_default();
                self.events.insert(id, Entry { handle: handle.clone(), restarts });
                metrics::counter!(crate::metrics::names::EVENT_LOADS).increment(1);
                let _ = self.grants.send(Grant::Taken(id, epoch));
                Ok(handle)
            }
            Err(e) => {
                warn!(event_id = %id, error = %e, "event actor failed to start");
                self.give_back(id, epoch);
                Err(CommandError::Unavailable(e.to_string()))
            }
        }
    }

    /// Returns a grant no actor uses (in the background: a release never
    /// holds up the registry, and the `Ownership` ignores a stale one).
    fn give_back(&self, id: EventId, epoch: Epoch) {
        let ownership = self.cfg.ownership.clone();
        tokio::spawn(async move { ownership.release(id, epoch).await });
    }

    /// Drops what is known of a stopped actor. The event's entry goes only if
    /// it is still this actor's (an unloading one was removed already).
    /// The actor's grant is given back to the `Ownership`.
    fn forget(&mut self, cell: &ActorCell) -> Option<(EventId, Epoch, Option<Entry>)> {
        let (id, epoch) = self.by_actor.remove(&cell.get_id())?;
        self.give_back(id, epoch);
        let ours = self.events.get(&id).is_some_and(|e| e.handle.actor.get_id() == cell.get_id());
        Some((id, epoch, if ours { self.events.remove(&id) } else { None }))
    }

    /// An unloaded actor has stopped: serve the look-ups that waited for it.
    async fn after_unload(&mut self, myself: &ActorRef<RegistryMsg>, id: EventId) {
        let Some(waiters) = self.unloading.remove(&id) else { return };
        if waiters.is_empty() {
            return;
        }
        let r = self.spawn(myself, id).await;
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }
}

impl Actor for RegistryActor {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = (RegistryConfig, Arc<BatchStats>, broadcast::Sender<Grant>);

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        (cfg, stats, grants): Self::Arguments,
    ) -> Result<RegistryState, ActorProcessingErr> {
        myself.cast(RegistryMsg::Warm)?;
        if let Some(mut lost) = cfg.ownership.revocations() {
            let me = myself.clone();
            tokio::spawn(async move {
                while let Some((id, epoch)) = lost.recv().await {
                    if me.cast(RegistryMsg::Revoked(id, epoch)).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(RegistryState {
            cfg,
            events: HashMap::new(),
            by_actor: HashMap::new(),
            changes: HashMap::new(),
            restarts: HashMap::new(),
            not_before: HashMap::new(),
            unloading: HashMap::new(),
            stats,
            grants,
            stopping: false,
        })
    }

    async fn handle(&self, myself: ActorRef<RegistryMsg>, msg: RegistryMsg, state: &mut RegistryState) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Get(id, reply) => {
                if let Some(waiting) = state.unloading.get_mut(&id) {
                    waiting.push(reply);
                    return Ok(());
                }
                let r = state.spawn(&myself, id).await;
                let _ = reply.send(r);
            }
            RegistryMsg::Idle(id, actor_id) => {
                let ours = state.events.get(&id).is_some_and(|e| e.handle.actor.get_id() == actor_id);
                if ours
                    && !state.stopping
                    && let Some(entry) = state.events.remove(&id)
                {
                    state.unloading.insert(id, Vec::new());
                    info!(event_id = %id, "unloading idle event");
                    // Never `?`: an error would stop the registry. An actor
                    // that died meanwhile is reported by supervision, which
                    // serves the look-ups waiting for it.
                    if let Err(e) = entry.handle.actor.cast(EventMsg::Unload) {
                        warn!(event_id = %id, error = %e, "the idle event actor had already stopped");
                    }
                }
            }
            RegistryMsg::Revoked(id, epoch) => {
                let ours = state.events.get(&id).is_some_and(|e| e.handle.epoch == epoch);
                if ours && let Some(entry) = state.events.remove(&id) {
                    warn!(event_id = %id, epoch = %epoch, "lost the event's lease; no longer deciding for it");
                    state.unloading.insert(id, Vec::new());
                    // A stop is taken between messages: a batch being
                    // decided finishes (and its commit is fenced if another
                    // node has the event by then).
                    entry.handle.actor.stop(Some(STOP_FENCED.into()));
                }
            }
            RegistryMsg::Subscribe(id, reply) => {
                let _ = reply.send(state.changes_for(id).subscribe());
            }
            RegistryMsg::Loaded(reply) => {
                let loaded = state
                    .events
                    .iter()
                    .map(|(id, e)| LiveEvent { event_id: *id, epoch: e.handle.epoch, queue_depth: e.handle.queue_depth() })
                    .collect();
                let _ = reply.send(loaded);
            }
            RegistryMsg::Warm => {
                for status in [EventStatus::OnSale, EventStatus::SalesClosed] {
                    let filter = EventFilter {
                        status: Some(status),
                        limit: limits::EVENTS_LOADED_MAX as u32,
                        visible: crate::ports::Visibility::All,
                        ..EventFilter::default()
                    };
                    match state.cfg.store.list_events(filter).await {
                        Ok(events) => {
                            // Not those served here or being unloaded, and
                            // in a cluster only those nobody holds (one
                            // look at the lease service for all).
                            let ids: Vec<EventId> = events
                                .iter()
                                .map(|e| e.id)
                                .filter(|id| !state.events.contains_key(id) && !state.unloading.contains_key(id))
                                .collect();
                            for id in state.cfg.ownership.unclaimed(&ids).await {
                                match state.spawn(&myself, id).await {
                                    Ok(_) => {}
                                    // Another node runs it: as it should.
                                    Err(CommandError::OwnedElsewhere { .. }) => {}
                                    Err(CommandError::ShuttingDown) => return Ok(()),
                                    Err(err) => warn!(event_id = %id, error = %err, "could not wake event"),
                                }
                            }
                        }
                        Err(e) => warn!(error = %e, "could not list events to wake"),
                    }
                }
                // In a cluster, again and again: an event whose owner died
                // is taken by the first node that looks.
                if let Some(ms) = state.cfg.ownership.sweep_ms()
                    && !state.stopping
                {
                    myself.send_after(Duration::from_millis(ms), || RegistryMsg::Warm);
                }
            }
            RegistryMsg::Stopping(reply) => {
                state.stopping = true;
                let _ = reply.send(());
            }
            RegistryMsg::Restart(id) => {
                if let Err(e) = state.spawn(&myself, id).await {
                    warn!(event_id = %id, error = %e, "restart failed");
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RegistryMsg>,
        evt: SupervisionEvent,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some((id, _, entry)) = state.forget(&cell) else {
                    return Ok(());
                };
                error!(event_id = %id, error = %err, "event actor failed; restarting from storage");
                metrics::counter!(crate::metrics::names::EVENT_UNLOADS, "reason" => "failed").increment(1);
                if state.unloading.contains_key(&id) {
                    // It failed while unloading: whoever waits gets a fresh one.
                    state.after_unload(&myself, id).await;
                    return Ok(());
                }
                let Some(entry) = entry else {
                    return Ok(());
                };
                if state.stopping {
                    return Ok(());
                }
                let now = state.cfg.clock.now();
                let mut recent: Vec<Millis> =
                    entry.restarts.into_iter().filter(|t| t.0 > now.0 - limits::RESTART_WINDOW_MS as i64).collect();
                recent.push(now);
                let delay = recent.len() as u32 > limits::RESTARTS_PER_WINDOW_MAX;
                state.restarts.insert(id, recent);
                if delay {
                    warn!(event_id = %id, "event actor keeps failing; delaying its restart");
                    state.not_before.insert(id, now.plus_ms(limits::RESTART_DELAY_MS));
                    myself.send_after(Duration::from_millis(limits::RESTART_DELAY_MS), move || RegistryMsg::Restart(id));
                } else {
                    myself.cast(RegistryMsg::Restart(id))?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some((id, epoch, _)) = state.forget(&cell) {
                    info!(event_id = %id, reason = ?reason, "event actor stopped");
                    let why = match reason.as_deref() {
                        Some(STOP_FENCED) => "fenced",
                        Some(STOP_IDLE) => "idle",
                        _ => "shutdown",
                    };
                    metrics::counter!(crate::metrics::names::EVENT_UNLOADS, "reason" => why).increment(1);
                    // In a cluster an idle event goes back too: another
                    // node's sweep may take it, and with it its sagas.
                    let clustered = state.cfg.ownership.sweep_ms().is_some();
                    let lost = match reason.as_deref() {
                        Some(STOP_FENCED) => true,
                        Some(STOP_IDLE) => clustered,
                        _ => false,
                    };
                    if lost {
                        let _ = state.grants.send(Grant::Lost(id, epoch));
                        // Its watchers' feeds end (the channel closes once no
                        // actor holds it), so they watch again wherever the
                        // event runs next, unless an actor here runs it again.
                        if !state.events.contains_key(&id) {
                            state.changes.remove(&id);
                        }
                    }
                    state.after_unload(&myself, id).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// An event actor alive on this node (`Registry::loaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveEvent {
    pub event_id: EventId,
    /// The fencing token it was granted with.
    pub epoch: Epoch,
    /// Requests waiting in its queue now (at most `mailbox_capacity`).
    pub queue_depth: usize,
}

/// The node's handle on its actor system. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    actor: ActorRef<RegistryMsg>,
    stats: Arc<BatchStats>,
    store: Arc<dyn Store>,
    ownership: Arc<dyn Ownership>,
    grants: broadcast::Sender<Grant>,
    facts: Arc<std::sync::Mutex<HashMap<EventId, EventFacts>>>,
}

/// What never changes about an event, known without owning it: read by
/// handlers that only check access or print seat labels, so that in a
/// cluster they need not go to the event's owner.
#[derive(Clone)]
pub struct EventFacts {
    pub org: usher_engine::OrgId,
    pub layout: Arc<usher_engine::Layout>,
}

const CALL_TIMEOUT: Duration = Duration::from_millis(limits::REGISTRY_CALL_MS_MAX);

/// The registry as its event actors and their handles see it.
impl crate::event::Supervisor for ActorRef<RegistryMsg> {
    fn handle(&self, id: EventId) -> BoxFuture<'_, Result<EventHandle, CommandError>> {
        Box::pin(get(self, id))
    }

    fn idle(&self, id: EventId, actor: ractor::ActorId) -> Result<(), ActorProcessingErr> {
        Ok(self.cast(RegistryMsg::Idle(id, actor))?)
    }
}

/// The handle of an event's actor, spawning it when needed.
pub(crate) async fn get(registry: &ActorRef<RegistryMsg>, id: EventId) -> Result<EventHandle, CommandError> {
    match registry.call(|reply| RegistryMsg::Get(id, reply), Some(CALL_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(r)) => r,
        Ok(_) => Err(CommandError::Unavailable("registry did not answer in time".into())),
        Err(_) => Err(CommandError::ShuttingDown),
    }
}

impl Registry {
    pub async fn start(cfg: RegistryConfig) -> Result<(Registry, tokio::task::JoinHandle<()>), StoreError> {
        let stats = Arc::new(BatchStats::default());
        let store = cfg.store.clone();
        let ownership = cfg.ownership.clone();
        let grants = broadcast::channel(limits::GRANT_NOTICES_QUEUED_MAX).0;
        let (actor, join) = Actor::spawn(None, RegistryActor, (cfg, stats.clone(), grants.clone()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("registry failed to start: {e}")))?;
        Ok((Registry { actor, stats, store, ownership, grants, facts: Default::default() }, join))
    }

    /// Every grant this node takes or loses from now on.
    pub fn grants(&self) -> broadcast::Receiver<Grant> {
        self.grants.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The event's organization and layout, from memory or storage; never
    /// takes the event (see `EventFacts`).
    pub async fn facts(&self, id: EventId) -> Result<EventFacts, CommandError> {
        if let Some(f) = self.facts.lock().expect("facts").get(&id) {
            return Ok(f.clone());
        }
        let unavailable = |e: StoreError| CommandError::Unavailable(e.to_string());
        let config = self.store.get_event(id).await.map_err(unavailable)?.ok_or(CommandError::EventNotFound(id))?;
        let venue = self
            .store
            .get_venue(config.venue_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| CommandError::Internal(format!("event {id} names venue {}, which is not stored", config.venue_id)))?;
        let layout = usher_engine::Layout::build(&venue.spec)
            .map_err(|e| CommandError::Internal(format!("venue {} does not build: {}", config.venue_id, e.message)))?;
        let f = EventFacts { org: config.org_id, layout: Arc::new(layout) };
        let mut facts = self.facts.lock().expect("facts");
        // Bounded like the loaded events: a node that looked at more starts over.
        if facts.len() >= limits::EVENTS_LOADED_MAX {
            facts.clear();
        }
        facts.insert(id, f.clone());
        Ok(f)
    }

    /// What grants this node its events.
    pub fn ownership(&self) -> &Arc<dyn Ownership> {
        &self.ownership
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    pub async fn event(&self, id: EventId) -> Result<EventHandle, CommandError> {
        get(&self.actor, id).await
    }

    /// The event actors alive on this node now, with their queue depths.
    /// Errors: UNAVAILABLE when the registry does not answer in time.
    pub async fn loaded(&self) -> Result<Vec<LiveEvent>, CommandError> {
        match self.actor.call(RegistryMsg::Loaded, Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r),
            _ => Err(CommandError::Unavailable("the registry did not answer".into())),
        }
    }

    pub async fn subscribe(&self, id: EventId) -> Result<broadcast::Receiver<Arc<SeatChange>>, CommandError> {
        match self.actor.call(|reply| RegistryMsg::Subscribe(id, reply), Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r),
            _ => Err(CommandError::ShuttingDown),
        }
    }

    /// Stops every actor after the batch it is deciding, then the registry.
    pub async fn shutdown(&self) {
        // First no more spawns or restarts, then drain the children.
        let _ = self.actor.call(RegistryMsg::Stopping, Some(CALL_TIMEOUT)).await;
        let _ = self.actor.stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(30))).await;
        self.actor.stop(Some("shutdown".into()));
        // Every batch is decided: the grants go back now, not at their expiry.
        self.ownership.release_all().await;
    }
}
