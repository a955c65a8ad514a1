//! `EventActor`: owns one event's inventory in memory and serializes every
//! command for it.
//!
//! Data plane: callers put requests on a bounded channel (full → refused at
//! once) and wake the actor. The actor drains up to `BATCH_COMMANDS_MAX`
//! requests, decides them in memory, writes all decisions in one transaction,
//! and only then replies (group commit). Queries are answered after the
//! commit, so nobody ever sees a decision that is not durable.
//!
//! Control plane: ractor messages (`Wake`, `Tick`, fault injection), and
//! supervision by the registry, which restarts a failed actor; the new one
//! rebuilds its state from storage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, warn};

use usher_engine::{
    Command, Counts, Decision, EventConfig, EventId, EventStatus, Hold, HoldId, IdempotencyKey, Inventory, Layout, Millis, OrgId, Reject,
    Reply, SeatIdx, SeatIndex, SeatState, limits,
};

use crate::clock::Clock;
use crate::identity::AuditEntry;
use crate::metrics::names;
use crate::ports::{Batch, BoxFuture, Epoch, Store, StoreError};

/// Infrastructure failures, as opposed to domain rejections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("event {0} not found")]
    EventNotFound(EventId),
    #[error("event {0} is overloaded: its queue is full")]
    Overloaded(EventId),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data breaks an invariant: a person must look; retrying won't help.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node serves as many events as `EVENTS_LOADED_MAX` allows.
    #[error("this node already serves {0} events")]
    TooManyEvents(usize),
    /// Another node holds the event's grant (`Ownership`).
    #[error("event {event_id} is served by another node ({owner})")]
    OwnedElsewhere { event_id: EventId, owner: String },
}

/// The reason an event actor stops with when its epoch was fenced: the
/// registry tells the node the event is lost (an idle unload or a shutdown
/// gives the event back without losing it).
pub const STOP_FENCED: &str = "fenced";
/// The reason an idle event actor stops with.
pub const STOP_IDLE: &str = "idle";

/// The answer to a command: the domain result plus the event's state after it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<Reply, Reject>,
    pub counts: Counts,
    pub config: EventConfig,
    pub layout: Arc<Layout>,
}

/// Seat status changes, published after they are durable.
#[derive(Debug, Clone)]
pub struct SeatChange {
    pub event_id: EventId,
    pub seats: Vec<(SeatIdx, SeatState)>,
    pub counts: Counts,
}

pub enum Query {
    Summary(oneshot::Sender<(EventConfig, Counts)>),
    SeatMap(oneshot::Sender<SeatMapView>),
    Hold(HoldId, oneshot::Sender<Option<(Hold, EventConfig)>>),
}

pub struct SeatMapView {
    pub config: EventConfig,
    pub layout: Arc<Layout>,
    pub seats: Vec<SeatState>,
    pub counts: Counts,
}

pub enum Request {
    Command {
        key: IdempotencyKey,
        cmd: Command,
        reply: oneshot::Sender<Result<Outcome, CommandError>>,
        /// An organizer's action: written to the audit log in the batch's
        /// transaction if the command is decided now (not a replay) and succeeds.
        audit: Option<Box<AuditEntry>>,
        /// The sender's span, when traced: the batch that decides the
        /// command links to it.
        trace: Option<Box<opentelemetry::trace::SpanContext>>,
    },
    Query(Query),
}

pub enum EventMsg {
    /// Requests are waiting on the channel.
    Wake,
    /// A hold may have expired.
    Tick,
    /// Fault injection for tests: panic inside the handler.
    Panic,
    /// From the registry, after this actor reported itself idle: decide what
    /// is already queued, then stop.
    Unload,
}

/// Counters of group commits, shared with the registry for reporting.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    pub largest: AtomicU64,
    /// Batches of size 1, 2–4, 5–16, 17–64, 65–256, 257+.
    pub by_size: [AtomicU64; 6],
    /// Time spent in `Store::commit`, summed and the longest, in µs.
    pub commit_us_total: AtomicU64,
    pub commit_us_max: AtomicU64,
}

impl BatchStats {
    fn record_commit(&self, took: std::time::Duration) {
        let us = took.as_micros() as u64;
        self.commit_us_total.fetch_add(us, Ordering::Relaxed);
        self.commit_us_max.fetch_max(us, Ordering::Relaxed);
    }

    fn record(&self, n: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.commands.fetch_add(n as u64, Ordering::Relaxed);
        self.largest.fetch_max(n as u64, Ordering::Relaxed);
        let b = match n {
            0..=1 => 0,
            2..=4 => 1,
            5..=16 => 2,
            17..=64 => 3,
            65..=256 => 4,
            _ => 5,
        };
        self.by_size[b].fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> String {
        let b: Vec<u64> = self.by_size.iter().map(|x| x.load(Ordering::Relaxed)).collect();
        let batches = self.batches.load(Ordering::Relaxed).max(1);
        format!(
            "batches={} commands={} largest={} sizes[1,2-4,5-16,17-64,65-256,257+]={:?} commit_ms_mean={:.2} commit_ms_max={:.2}",
            self.batches.load(Ordering::Relaxed),
            self.commands.load(Ordering::Relaxed),
            self.largest.load(Ordering::Relaxed),
            b,
            self.commit_us_total.load(Ordering::Relaxed) as f64 / batches as f64 / 1000.0,
            self.commit_us_max.load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }
}

/// The event's sales status as last decided, shared with its handles so the
/// edge can hide a draft from strangers without asking the actor.
#[derive(Debug)]
pub struct SharedStatus(std::sync::atomic::AtomicU8);

const STATUSES: [EventStatus; 4] = [EventStatus::Draft, EventStatus::OnSale, EventStatus::SalesClosed, EventStatus::Cancelled];

impl SharedStatus {
    pub fn new(s: EventStatus) -> SharedStatus {
        let me = SharedStatus(std::sync::atomic::AtomicU8::new(0));
        me.set(s);
        me
    }
    pub fn set(&self, s: EventStatus) {
        let i = STATUSES.iter().position(|x| *x == s).unwrap_or(0) as u8;
        self.0.store(i, Ordering::Release);
    }
    pub fn get(&self) -> EventStatus {
        STATUSES[usize::from(self.0.load(Ordering::Acquire)).min(STATUSES.len() - 1)]
    }
}

/// How callers reach one event actor. Cheap to clone.
#[derive(Clone)]
pub struct EventHandle {
    pub event_id: EventId,
    /// The epoch this node was granted the event with: every write for the
    /// event (its seat batches, its orders' transitions) carries it.
    pub epoch: Epoch,
    pub actor: ActorRef<EventMsg>,
    /// The venue layout never changes for an event: the edge resolves seat
    /// labels with it without asking the actor.
    pub layout: Arc<Layout>,
    /// The organization that owns the event; it never changes either, so
    /// the edge checks access without asking the actor.
    pub org: OrgId,
    /// The sales status as of the last batch.
    pub status: Arc<SharedStatus>,
    pub seat_index: Arc<SeatIndex>,
    tx: mpsc::Sender<Request>,
    wake_pending: Arc<AtomicBool>,
    registry: Arc<dyn Supervisor>,
}

impl EventHandle {
    /// Requests waiting in this event's queue now.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues a request. If this handle's actor was unloaded meanwhile, the
    /// request comes back from the closed channel and goes to the actor the
    /// registry serves now (the registry starts it only once the old one has
    /// stopped, so the two never overlap).
    async fn push(&self, req: Request) -> Result<(), CommandError> {
        let req = match self.try_push(req) {
            Ok(()) => return Ok(()),
            Err(PushError::Refused(e)) => return Err(e),
            Err(PushError::Closed(req)) => req,
        };
        let fresh = self.registry.handle(self.event_id).await?;
        match fresh.try_push(req) {
            Ok(()) => Ok(()),
            Err(PushError::Refused(e)) => Err(e),
            Err(PushError::Closed(_)) => Err(CommandError::Unavailable(format!("event {} is restarting; retry", self.event_id))),
        }
    }

    fn try_push(&self, req: Request) -> Result<(), PushError> {
        match self.tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(PushError::Refused(CommandError::Overloaded(self.event_id)));
            }
            Err(mpsc::error::TrySendError::Closed(req)) => return Err(PushError::Closed(req)),
        }
        // One Wake in flight is enough: the actor clears the flag before it
        // drains, so a request pushed after the drain sends a new Wake.
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.actor.cast(EventMsg::Wake);
        }
        Ok(())
    }

    pub async fn command(&self, key: IdempotencyKey, cmd: Command) -> Result<Outcome, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.push(Request::Command { key, cmd, reply, audit: None, trace: crate::trace::current_context().map(Box::new) }).await?;
        rx.await
            .map_err(|_| CommandError::Unavailable(format!("event {} failed while deciding; retry with the same key", self.event_id)))?
    }

    /// A command of an organizer, recorded in the audit log with the change.
    pub async fn command_audited(&self, key: IdempotencyKey, cmd: Command, audit: AuditEntry) -> Result<Outcome, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.push(Request::Command { key, cmd, reply, audit: Some(Box::new(audit)), trace: crate::trace::current_context().map(Box::new) })
            .await?;
        rx.await
            .map_err(|_| CommandError::Unavailable(format!("event {} failed while deciding; retry with the same key", self.event_id)))?
    }

    async fn query<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Result<T, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.push(Request::Query(make(tx))).await?;
        rx.await.map_err(|_| CommandError::Unavailable(format!("event {} failed while answering", self.event_id)))
    }

    pub async fn summary(&self) -> Result<(EventConfig, Counts), CommandError> {
        self.query(Query::Summary).await
    }
    pub async fn seat_map(&self) -> Result<SeatMapView, CommandError> {
        self.query(Query::SeatMap).await
    }
    pub async fn hold(&self, id: HoldId) -> Result<Option<(Hold, EventConfig)>, CommandError> {
        self.query(|tx| Query::Hold(id, tx)).await
    }
}

enum PushError {
    Refused(CommandError),
    Closed(Request),
}

pub struct EventActor;

pub struct EventArgs {
    /// Loaded by the registry after it took ownership with `epoch`.
    pub inv: Inventory,
    pub epoch: Epoch,
    pub ctx: EventCtx,
}

/// What an event actor keeps from its arguments for its whole life.
pub struct EventCtx {
    pub event_id: EventId,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub rx: mpsc::Receiver<Request>,
    pub wake_pending: Arc<AtomicBool>,
    pub changes: broadcast::Sender<Arc<SeatChange>>,
    pub stats: Arc<BatchStats>,
    pub status: Arc<SharedStatus>,
    pub batch_max: usize,
    pub registry: Arc<dyn Supervisor>,
}

pub struct EventState {
    args: EventCtx,
    inv: Inventory,
    epoch: Epoch,
    /// The in-memory state may be ahead of storage (a commit failed): rebuild
    /// before deciding anything else.
    dirty: bool,
    /// Wait before touching storage again after a failed write; 0 when the
    /// last write worked. Doubles per failure, so a sick store is not hammered.
    backoff_ms: u64,
    /// The last time a request arrived: idle events are unloaded.
    last_activity: Millis,
    /// Idle was reported to the registry; an `Unload` will follow.
    idle_reported: bool,
    /// Until then, commands are refused at once instead of touching storage.
    retry_at: Option<Millis>,
    batches_since_full_check: u32,
    timer: Option<(Millis, tokio::task::JoinHandle<()>)>,
}

/// What an event actor and its handles need from the registry that
/// supervises them. The registry implements it, so this module names no
/// registry type (the registry depends on the event actor, not back).
pub trait Supervisor: Send + Sync {
    /// The event's handle as the registry serves it now (a new actor after
    /// an unload or a restart). Errors: unavailable, shutting down.
    fn handle(&self, id: EventId) -> BoxFuture<'_, Result<EventHandle, CommandError>>;

    /// This actor has been idle long enough to be unloaded. An error means
    /// the registry is gone (the node is stopping).
    fn idle(&self, id: EventId, actor: ractor::ActorId) -> Result<(), ActorProcessingErr>;
}

/// Builds the channel and handle for a new actor.
#[allow(clippy::too_many_arguments)]
pub fn channel(
    event_id: EventId,
    epoch: Epoch,
    org: OrgId,
    status: Arc<SharedStatus>,
    actor: ActorRef<EventMsg>,
    layout: Arc<Layout>,
    tx: mpsc::Sender<Request>,
    wake_pending: Arc<AtomicBool>,
    registry: Arc<dyn Supervisor>,
) -> EventHandle {
    let seat_index = Arc::new(SeatIndex::new(&layout));
    EventHandle { event_id, epoch, actor, layout, org, status, seat_index, tx, wake_pending, registry }
}

pub(crate) async fn load(store: &dyn Store, id: EventId, now: Millis) -> Result<Inventory, StoreError> {
    let loaded = store.load_event(id, now).await?.ok_or_else(|| StoreError::NotFound(format!("event {id}")))?;
    let now = now.max(loaded.snapshot.holds.iter().map(|h| h.ended_at.unwrap_or(h.created_at)).max().unwrap_or(now));
    Inventory::restore(loaded.config, loaded.layout, loaded.snapshot, now).map_err(StoreError::Corrupt)
}

impl Actor for EventActor {
    type Msg = EventMsg;
    type State = EventState;
    type Arguments = EventArgs;

    async fn pre_start(&self, myself: ActorRef<EventMsg>, args: EventArgs) -> Result<EventState, ActorProcessingErr> {
        let EventArgs { inv, epoch, ctx } = args;
        let last_activity = ctx.clock.now();
        let mut state = EventState {
            args: ctx,
            inv,
            epoch,
            dirty: false,
            backoff_ms: 0,
            last_activity,
            idle_reported: false,
            retry_at: None,
            batches_since_full_check: 0,
            timer: None,
        };
        state.schedule_expiry(&myself);
        // Requests may already wait on this actor's channel: look.
        let _ = myself.cast(EventMsg::Wake);
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<EventMsg>, msg: EventMsg, state: &mut EventState) -> Result<(), ActorProcessingErr> {
        match msg {
            EventMsg::Wake => {
                state.args.wake_pending.store(false, Ordering::Release);
                let mut reqs = Vec::new();
                while reqs.len() < state.args.batch_max {
                    match state.args.rx.try_recv() {
                        Ok(r) => reqs.push(r),
                        Err(_) => break,
                    }
                }
                if !reqs.is_empty() {
                    let full = reqs.len() == state.args.batch_max;
                    state.process(reqs, &myself).await?;
                    if full && !state.args.wake_pending.swap(true, Ordering::AcqRel) {
                        myself.cast(EventMsg::Wake)?;
                    }
                }
            }
            EventMsg::Tick => {
                state.timer = None;
                state.process(Vec::new(), &myself).await?;
                if !state.idle_reported && state.is_idle() {
                    state.idle_reported = true;
                    state.args.registry.idle(state.args.event_id, myself.get_id())?;
                }
            }
            EventMsg::Unload => {
                // The registry hands out no handle to this actor any more;
                // late requests either made it into the channel (decided now)
                // or come back to their sender, who resends them.
                state.args.rx.close();
                loop {
                    let mut reqs = Vec::new();
                    while reqs.len() < state.args.batch_max {
                        match state.args.rx.try_recv() {
                            Ok(r) => reqs.push(r),
                            Err(_) => break,
                        }
                    }
                    if reqs.is_empty() {
                        break;
                    }
                    state.process(reqs, &myself).await?;
                }
                myself.stop(Some(STOP_IDLE.into()));
            }
            EventMsg::Panic => panic!("fault injection: event actor {} told to panic", state.args.event_id),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<EventMsg>, state: &mut EventState) -> Result<(), ActorProcessingErr> {
        if let Some((_, t)) = state.timer.take() {
            t.abort();
        }
        Ok(())
    }
}

impl EventState {
    fn now(&self) -> Millis {
        // Never let a wall-clock step backwards reach the engine.
        self.args.clock.now().max(self.inv.now())
    }

    /// Nothing live to expire, nothing unsaved, nobody asked for a while.
    fn is_idle(&self) -> bool {
        !self.dirty
            && self.inv.active_holds().next().is_none()
            && self.args.rx.is_empty()
            && self.now() >= self.last_activity.plus_ms(limits::EVENT_IDLE_UNLOAD_MS)
    }

    /// Arms the one timer: at the earliest hold expiry, but never sooner than
    /// the retry backoff; while memory is ahead of storage, at the backoff
    /// alone (to rebuild, then expire what is due).
    fn schedule_expiry(&mut self, myself: &ActorRef<EventMsg>) {
        let retry_at = self.retry_at;
        let due = if self.dirty {
            retry_at
        } else {
            let expiry = match (self.inv.next_expiry(), retry_at) {
                (Some(e), Some(r)) => Some(e.max(r)),
                (e, _) => e,
            };
            // With no live hold, the timer's next job is the idle check.
            let idle =
                (self.inv.next_expiry().is_none() && !self.idle_reported).then(|| self.last_activity.plus_ms(limits::EVENT_IDLE_UNLOAD_MS));
            match (expiry, idle) {
                (Some(e), Some(i)) => Some(e.min(i)),
                (e, i) => e.or(i),
            }
        };
        let Some(at) = due else {
            if let Some((_, t)) = self.timer.take() {
                t.abort();
            }
            return;
        };
        if self.timer.as_ref().is_some_and(|(t, _)| *t == at) {
            return;
        }
        if let Some((_, t)) = self.timer.take() {
            t.abort();
        }
        let deadline = self.args.clock.instant_at(at);
        let me = myself.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let _ = me.cast(EventMsg::Tick);
        });
        self.timer = Some((at, task));
    }

    fn back_off(&mut self) {
        self.backoff_ms = (self.backoff_ms * 2).clamp(limits::STORE_RETRY_BACKOFF_MS_MIN, limits::STORE_RETRY_BACKOFF_MS_MAX);
        self.retry_at = Some(self.now().plus_ms(self.backoff_ms));
    }

    async fn rebuild(&mut self) -> Result<(), StoreError> {
        let now = self.now();
        self.inv = load(self.args.store.as_ref(), self.args.event_id, now).await?;
        self.args.status.set(self.inv.config().status);
        self.dirty = false;
        Ok(())
    }

    /// One group commit: decide everything in memory, write once, then
    /// reply and publish the changed seats.
    async fn process(&mut self, reqs: Vec<Request>, myself: &ActorRef<EventMsg>) -> Result<(), ActorProcessingErr> {
        if !reqs.is_empty() {
            self.last_activity = self.now();
        }
        let Drained { commands, audits, queries, traces, parents } = Drained::from(reqs);
        let Some((commands, queries)) = self.refuse_while_backing_off(commands, queries) else { return Ok(()) };
        if self.dirty
            && let Err(e) = self.rebuild().await
        {
            self.refuse_unrebuilt(e, commands, myself);
            return Ok(());
        }
        let now = self.now();
        let (mut decisions, first_command) = self.decide(&commands, now);
        let needs_write = decisions.iter().any(|d| !d.events.is_empty() || d.record.is_some());
        if needs_write {
            // Audited commands decided now (a replay was audited the first time) that succeeded.
            let audits: Vec<AuditEntry> = audits
                .into_iter()
                .filter(|(i, _)| decisions.get(first_command + i).is_some_and(|d| d.record.is_some() && d.result.is_ok()))
                .map(|(_, a)| AuditEntry { at: now, ..*a })
                .collect();
            // Aligned with `decisions`: the expiry (if any) comes first, untraced.
            let decision_traces: Vec<Option<String>> =
                if parents.is_empty() { Vec::new() } else { std::iter::repeat_n(None, first_command).chain(parents).collect() };
            let batch = Batch {
                event_id: self.args.event_id,
                epoch: self.epoch,
                now,
                layout: self.inv.layout(),
                decisions: &decisions,
                audits: &audits,
                traces: &decision_traces,
            };
            if let Err(e) = self.commit(batch, &traces, commands.len()).await {
                self.commit_failed(e, commands, queries, myself).await;
                return Ok(());
            }
            self.backoff_ms = 0;
            self.retry_at = None;
        }
        count_decided(&decisions[first_command..], &commands);
        if let Some(Decision { result: Ok(Reply::Expired { holds }), .. }) = decisions.first() {
            metrics::counter!(names::HOLDS_EXPIRED).increment(u64::from(*holds));
        }
        self.check_invariants_now_and_then();
        self.publish(&mut decisions, first_command, commands);
        for q in queries {
            self.answer(q);
        }
        self.schedule_expiry(myself);
        Ok(())
    }

    /// Storage failed moments ago: the batch is refused at once rather
    /// than hammer it; the timer retries when the backoff ends. Returns the
    /// batch back when there is no backoff.
    fn refuse_while_backing_off(&mut self, commands: Vec<Queued>, queries: Vec<Query>) -> Option<(Vec<Queued>, Vec<Query>)> {
        let Some(at) = self.retry_at.filter(|&at| self.now() < at) else { return Some((commands, queries)) };
        let wait = at.0 - self.now().0;
        count_unavailable(&commands);
        for (_, _, reply) in commands {
            let _ = reply.send(Err(CommandError::Unavailable(format!(
                "storage for event {} is failing; retry with the same key in {wait} ms or later",
                self.args.event_id
            ))));
        }
        if !self.dirty {
            queries.into_iter().for_each(|q| self.answer(q));
        }
        None
    }

    /// Memory could not be rebuilt from storage after a failed commit: the
    /// batch is refused, and queries are dropped (their callers get
    /// UNAVAILABLE): memory is ahead of storage and must not be shown.
    fn refuse_unrebuilt(&mut self, e: StoreError, commands: Vec<Queued>, myself: &ActorRef<EventMsg>) {
        warn!(event_id = %self.args.event_id, error = %e, "rebuild after a failed commit failed");
        count_unavailable(&commands);
        for (_, _, reply) in commands {
            let _ = reply.send(Err(command_error(&e)));
        }
        self.back_off();
        self.schedule_expiry(myself);
    }

    /// Decides the batch in memory: expired holds first (if any are due),
    /// then every command in order. Returns the decisions and the index of
    /// the first command's.
    fn decide(&mut self, commands: &[Queued], now: Millis) -> (Vec<Decision>, usize) {
        let mut decisions: Vec<Decision> = Vec::with_capacity(commands.len() + 1);
        if self.inv.next_expiry().is_some_and(|t| t <= now) {
            let (_, events) = self.inv.apply(&Command::Expire, now).expect("expire never rejects");
            decisions.push(Decision { result: Ok(Reply::Expired { holds: events.len() as u32 }), events, record: None, replayed: false });
        }
        let first_command = decisions.len();
        for (key, cmd, _) in commands {
            decisions.push(self.inv.apply_keyed(key, cmd, now));
        }
        (decisions, first_command)
    }

    /// Writes the batch in one transaction, timed, inside a `group_commit`
    /// span linked to every traced request it decides (it has many
    /// parents, so none).
    async fn commit(&self, batch: Batch<'_>, traces: &[opentelemetry::trace::SpanContext], commands: usize) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let span = if traces.is_empty() {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(parent: None, "group_commit", event_id = %self.args.event_id, commands);
            crate::trace::link_all(&span, traces.iter());
            span
        };
        let committed = tracing::Instrument::instrument(self.args.store.commit(batch), span).await;
        let took = started.elapsed();
        self.args.stats.record_commit(took);
        committed?;
        if commands > 0 {
            self.args.stats.record(commands);
        }
        metrics::histogram!(names::GROUP_COMMIT_DURATION).record(took.as_secs_f64());
        metrics::histogram!(names::GROUP_COMMIT_BATCH_SIZE).record(commands as f64);
        Ok(())
    }

    /// Nothing of the batch is durable: nobody is told yes, and the state
    /// goes back to what storage holds. Fenced: another owner has the event,
    /// and this actor stops.
    async fn commit_failed(&mut self, e: StoreError, commands: Vec<Queued>, queries: Vec<Query>, myself: &ActorRef<EventMsg>) {
        self.dirty = true;
        let fenced = matches!(e, StoreError::Fenced { .. });
        metrics::counter!(names::GROUP_COMMIT_FAILURES, "reason" => if fenced { "fenced" } else { "error" }).increment(1);
        if fenced {
            metrics::counter!(names::FENCED_WRITES, "writer" => "event").increment(1);
        }
        count_unavailable(&commands);
        error!(event_id = %self.args.event_id, error = %e, commands = commands.len(), "group commit failed");
        for (_, _, reply) in commands {
            let _ = reply.send(Err(command_error(&e)));
        }
        if fenced {
            myself.stop(Some(STOP_FENCED.into()));
            return;
        }
        match self.rebuild().await {
            // Memory equals storage again: queries can be answered.
            Ok(()) => queries.into_iter().for_each(|q| self.answer(q)),
            Err(e) => warn!(event_id = %self.args.event_id, error = %e, "rebuild failed; will retry after a backoff"),
        }
        self.back_off();
        self.schedule_expiry(myself);
    }

    /// Every apply checks its own change; the full recheck (O(seats +
    /// holds)) runs after every apply in debug builds and every
    /// INVARIANTS_FULL_CHECK_EVERY_BATCHES batches here.
    fn check_invariants_now_and_then(&mut self) {
        self.batches_since_full_check += 1;
        if !cfg!(debug_assertions) && self.batches_since_full_check >= limits::INVARIANTS_FULL_CHECK_EVERY_BATCHES {
            self.batches_since_full_check = 0;
            self.inv.assert_invariants();
        }
    }

    /// After the commit: each command's reply, then the seats the batch
    /// changed to the event's watchers.
    fn publish(&mut self, decisions: &mut Vec<Decision>, first_command: usize, commands: Vec<Queued>) {
        let counts = self.inv.counts();
        let config = self.inv.config().clone();
        self.args.status.set(config.status);
        let mut changed: Vec<(SeatIdx, SeatState)> = Vec::new();
        for d in decisions.iter() {
            for e in &d.events {
                changed.extend(seats_of(e).iter().map(|&s| (s, SeatState::Available)));
            }
        }
        for (d, (_, _, reply)) in decisions.drain(first_command..).zip(commands) {
            let _ = reply.send(Ok(Outcome { result: d.result, counts, config: config.clone(), layout: self.inv.layout().clone() }));
        }
        if !changed.is_empty() {
            changed.sort_by_key(|(s, _)| *s);
            changed.dedup_by_key(|(s, _)| *s);
            for c in &mut changed {
                c.1 = self.inv.seat_state(c.0).expect("seat in range");
            }
            let _ = self.args.changes.send(Arc::new(SeatChange { event_id: self.args.event_id, seats: changed, counts }));
        }
    }

    fn answer(&self, q: Query) {
        match q {
            Query::Summary(tx) => {
                let _ = tx.send((self.inv.config().clone(), self.inv.counts()));
            }
            Query::SeatMap(tx) => {
                let _ = tx.send(SeatMapView {
                    config: self.inv.config().clone(),
                    layout: self.inv.layout().clone(),
                    seats: self.inv.seat_states().to_vec(),
                    counts: self.inv.counts(),
                });
            }
            Query::Hold(id, tx) => {
                let _ = tx.send(self.inv.hold(id).cloned().map(|h| (h, self.inv.config().clone())));
            }
        }
    }
}

/// A command waiting in a batch: its key, the command, where its answer goes.
type Queued = (IdempotencyKey, Command, oneshot::Sender<Result<Outcome, CommandError>>);

/// A batch's requests, sorted by kind.
struct Drained {
    commands: Vec<Queued>,
    /// Audit entries, by the index of their command.
    audits: Vec<(usize, Box<AuditEntry>)>,
    queries: Vec<Query>,
    /// The traced senders' spans.
    traces: Vec<opentelemetry::trace::SpanContext>,
    /// Each command's traceparent, in command order (for its outbox rows);
    /// empty when no command is traced.
    parents: Vec<Option<String>>,
}

impl From<Vec<Request>> for Drained {
    fn from(reqs: Vec<Request>) -> Drained {
        let mut d = Drained { commands: Vec::new(), audits: Vec::new(), queries: Vec::new(), traces: Vec::new(), parents: Vec::new() };
        for r in reqs {
            match r {
                Request::Command { key, cmd, reply, audit, trace } => {
                    if let Some(t) = trace {
                        d.parents.resize(d.commands.len(), None);
                        d.parents.push(Some(crate::trace::format(&t)));
                        d.traces.push(*t);
                    }
                    if let Some(a) = audit {
                        d.audits.push((d.commands.len(), a));
                    }
                    d.commands.push((key, cmd, reply))
                }
                Request::Query(q) => d.queries.push(q),
            }
        }
        d
    }
}

/// Counts commands refused before the engine saw them (storage failing).
fn count_unavailable<K, R>(commands: &[(K, Command, R)]) {
    for (_, cmd, _) in commands {
        metrics::counter!(names::COMMANDS, "command" => cmd.kind(), "outcome" => "unavailable").increment(1);
    }
}

/// Counts decided commands by outcome: accepted (decided now), replayed
/// (a retry answered from the idempotency record, whatever it said),
/// rejected (decided now, by reason).
fn count_decided<K, R>(decisions: &[Decision], commands: &[(K, Command, R)]) {
    for (d, (_, cmd, _)) in decisions.iter().zip(commands) {
        let outcome = match &d.result {
            _ if d.replayed => "replayed",
            Ok(_) => "accepted",
            Err(r) => {
                metrics::counter!(names::COMMANDS_REJECTED, "command" => cmd.kind(), "reason" => r.kind()).increment(1);
                "rejected"
            }
        };
        metrics::counter!(names::COMMANDS, "command" => cmd.kind(), "outcome" => outcome).increment(1);
    }
}

/// What a caller is told when storage failed: retry later, or (corrupt data)
/// an internal error a person must look at.
pub(crate) fn command_error(e: &StoreError) -> CommandError {
    match e {
        StoreError::Corrupt(m) => CommandError::Internal(m.clone()),
        other => CommandError::Unavailable(other.to_string()),
    }
}

fn seats_of(e: &usher_engine::Event) -> &[SeatIdx] {
    use usher_engine::Event::*;
    match e {
        HoldPlaced { hold } | HoldReleased { hold } | HoldExpired { hold } | SeatsSold { hold } => &hold.seats,
        SeatsBlocked { seats } | SeatsUnblocked { seats } => seats,
        StatusChanged { .. } => &[],
    }
}

/// The capacity of an event's request channel.
pub const fn mailbox_capacity() -> usize {
    limits::MAILBOX_CAPACITY_MAX
}
