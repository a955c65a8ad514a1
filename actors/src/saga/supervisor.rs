//! The supervisor of a node's order sagas and the handle on them.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use usher_engine::{Millis, Order, OrderId, OrderInput, Step, limits};

use super::{OrderSaga, STOP_CONFLICT, SagaArgs, SagaDeps, SagaError, SagaMsg};
use crate::event::CommandError;
use crate::ports::{StoreError, StoredOrder};
use crate::registry::Grant;

// ---------------------------------------------------------------------------
// The supervisor: spawns one saga per live order, routes inputs to it,
// restarts a failed one from storage.

pub enum SupervisorMsg {
    /// A new order was written: start its saga.
    Start(StoredOrder),
    /// An input for an order, spawning its saga when none runs (a finished
    /// order still takes an event cancellation: it may need a refund).
    Input {
        order_id: OrderId,
        input: OrderInput,
        reply: Option<RpcReplyPort<Result<Order, SagaError>>>,
        /// The caller's `traceparent`: the saga's next steps join its trace.
        trace: Option<String>,
    },
    /// The latest state of a live order, as it changes.
    Watch(OrderId, RpcReplyPort<Option<watch::Receiver<Order>>>),
    MailDelivered(OrderId),
    /// Every open order of the event gets `EventCancelled`.
    EventCancelled(usher_engine::EventId),
    Respawn(OrderId),
    /// The earliest payment deadline (`at`) of the parked orders has come.
    Wake {
        at: Millis,
    },
    /// How many sagas run here, and how many orders wait parked.
    Count(RpcReplyPort<(usize, usize)>),
    /// The registry took or lost an event (`Registry::grants`).
    Grant(Grant),
    /// Grant notices were missed: ask again about every lost event.
    RecheckLost,
}

/// The reason a saga stops with when its event's grant went to another
/// owner: not restarted here (the owner resumes it from storage).
const STOP_EVENT_LOST: &str = "event lost";

pub struct OrderSupervisor;

pub struct SupervisorState {
    deps: SagaDeps,
    live: HashMap<OrderId, ActorRef<SagaMsg>>,
    by_cell: HashMap<ractor::ActorId, OrderId>,
    /// Recent restarts per order, to slow down one that keeps failing.
    restarts: HashMap<OrderId, Vec<Millis>>,
    /// Orders waiting for their payment, parked without an actor (a saga
    /// weighs ~10 KiB; a parked order a map entry): spawned on their first
    /// input or when their payment deadline comes. Keyed by deadline.
    parked: std::collections::BTreeSet<(Millis, OrderId)>,
    parked_at: HashMap<OrderId, Millis>,
    /// The deadline a Wake is scheduled for.
    wake_at: Option<Millis>,
    /// The event of every live or parked order.
    event_of: HashMap<OrderId, usher_engine::EventId>,
    /// Events whose grant went to another owner since this node last held
    /// them: their sagas resume here only when the grant comes back.
    lost: std::collections::HashSet<usher_engine::EventId>,
    /// The epoch of each event's last grant here: a `Lost` of an older
    /// epoch (its notice overtaken by the next grant's) is stale.
    taken: HashMap<usher_engine::EventId, crate::ports::Epoch>,
}

impl SupervisorState {
    /// Starts an order's saga, under its event's grant: the event must be
    /// this node's (the registry takes it if nobody has it), so an order runs
    /// where its event's seats are decided and its writes carry that epoch.
    async fn spawn(&mut self, myself: &ActorRef<SupervisorMsg>, stored: StoredOrder) -> Result<ActorRef<SagaMsg>, SagaError> {
        let id = stored.order.id;
        if let Some(a) = self.live.get(&id) {
            return Ok(a.clone());
        }
        let event_id = stored.order.event_id;
        match self.deps.registry.event(event_id).await {
            Ok(_) => {}
            Err(CommandError::OwnedElsewhere { owner, .. }) => return Err(SagaError::OwnedElsewhere { event_id, owner }),
            Err(CommandError::EventNotFound(_)) => {
                return Err(SagaError::Internal(format!("order {id} names event {event_id}, which is not stored")));
            }
            Err(e) => return Err(SagaError::Unavailable(e.to_string())),
        }
        let (a, _) = Actor::spawn_linked(None, OrderSaga, SagaArgs { stored, deps: self.deps.clone() }, myself.get_cell())
            .await
            .map_err(|e| SagaError::Internal(format!("saga failed to start: {e}")))?;
        self.by_cell.insert(a.get_id(), id);
        self.live.insert(id, a.clone());
        self.event_of.insert(id, event_id);
        Ok(a)
    }

    async fn saga_for(&mut self, myself: &ActorRef<SupervisorMsg>, id: OrderId) -> Result<ActorRef<SagaMsg>, SagaError> {
        if let Some(a) = self.live.get(&id) {
            return Ok(a.clone());
        }
        let stored = self.deps.orders.get_order(id).await?.ok_or(SagaError::NotFound(id))?;
        // Unparked only once it runs: one that cannot start now stays
        // parked, so its payment deadline still comes.
        let saga = self.spawn(myself, stored).await?;
        self.unpark(id);
        Ok(saga)
    }

    /// An order waiting for its payment is parked; any other gets its saga.
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, stored: StoredOrder) -> Result<(), SagaError> {
        let o = &stored.order;
        if o.step == Step::AwaitPayment && !self.live.contains_key(&o.id) {
            self.parked.insert((o.pay_by, o.id));
            self.parked_at.insert(o.id, o.pay_by);
            self.event_of.insert(o.id, o.event_id);
            self.schedule_wake(myself);
            return Ok(());
        }
        self.spawn(myself, stored).await.map(|_| ())
    }

    fn unpark(&mut self, id: OrderId) {
        if let Some(at) = self.parked_at.remove(&id) {
            self.parked.remove(&(at, id));
        }
    }

    /// Resumes or parks a stored order at start or when its event's grant
    /// comes back; an order that cannot start now is retried later (or left
    /// to the node that owns its event).
    async fn resume(&mut self, myself: &ActorRef<SupervisorMsg>, stored: StoredOrder) {
        let (id, event_id) = (stored.order.id, stored.order.event_id);
        match self.start(myself, stored).await {
            Ok(()) => {}
            Err(SagaError::OwnedElsewhere { .. }) => {
                // Resumed here if the grant comes to this node.
                self.lost.insert(event_id);
                info!(order_id = %id, event_id = %event_id, "order left to its event's owner");
            }
            Err(e) => {
                warn!(order_id = %id, error = %e, "could not resume an order saga; retrying");
                myself.send_after(Duration::from_millis(self.deps.cfg.retry_ms_max), move || SupervisorMsg::Respawn(id));
            }
        }
    }

    /// Another owner has the event: its sagas stop here and its parked
    /// orders are dropped; that owner resumes them from storage.
    fn event_lost(&mut self, event_id: usher_engine::EventId) {
        self.lost.insert(event_id);
        let orders: Vec<OrderId> = self.event_of.iter().filter(|(_, e)| **e == event_id).map(|(o, _)| *o).collect();
        for id in &orders {
            self.unpark(*id);
            self.event_of.remove(id);
            // Out of `live` at once: a saga started again for the order
            // (the grant came back before this one has stopped) must not
            // be handed the one that is stopping.
            if let Some(a) = self.live.remove(id) {
                a.stop(Some(STOP_EVENT_LOST.into()));
            }
        }
        if !orders.is_empty() {
            warn!(event_id = %event_id, orders = orders.len(), "event taken by another owner; its order sagas stop here");
        }
    }

    /// Makes sure a Wake comes at the earliest parked deadline.
    fn schedule_wake(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let Some(&(at, _)) = self.parked.first() else { return };
        if self.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        self.wake_at = Some(at);
        let delay = at.0.saturating_sub(self.deps.clock.now().0).max(0) as u64;
        myself.send_after(Duration::from_millis(delay), move || SupervisorMsg::Wake { at });
    }
}

impl Actor for OrderSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SagaDeps;

    async fn pre_start(&self, myself: ActorRef<SupervisorMsg>, deps: SagaDeps) -> Result<SupervisorState, ActorProcessingErr> {
        let mut s = SupervisorState {
            deps,
            live: HashMap::new(),
            by_cell: HashMap::new(),
            restarts: HashMap::new(),
            parked: Default::default(),
            parked_at: HashMap::new(),
            wake_at: None,
            event_of: HashMap::new(),
            lost: Default::default(),
            taken: HashMap::new(),
        };
        // Grants first, so that none taken while resuming is missed.
        let mut grants = s.deps.registry.grants();
        let me = myself.clone();
        tokio::spawn(async move {
            loop {
                match grants.recv().await {
                    Ok(g) => {
                        if me.cast(SupervisorMsg::Grant(g)).is_err() {
                            break;
                        }
                    }
                    // A missed Lost costs a refused (fenced) write and a retry;
                    // a missed Taken would leave a lost event's sagas stopped:
                    // look at every lost event again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "order supervisor missed grant notices; checking its lost events again");
                        if me.cast(SupervisorMsg::RecheckLost).is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        // Resume every saga that has work left, where its last write left it.
        let live = s.deps.orders.live_orders(None).await.map_err(|e| format!("loading live orders: {e}"))?;
        if !live.is_empty() {
            info!(orders = live.len(), "resuming order sagas");
        }
        for stored in live {
            s.resume(&myself, stored).await;
        }
        Ok(s)
    }

    async fn handle(&self, myself: ActorRef<SupervisorMsg>, msg: SupervisorMsg, s: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(stored) => {
                if let Err(e) = s.start(&myself, stored).await {
                    error!(error = %e, "could not start an order saga");
                }
            }
            SupervisorMsg::Wake { at } => {
                if s.wake_at == Some(at) {
                    s.wake_at = None;
                }
                // Due orders get their saga, which expires them at once.
                let now = s.deps.clock.now();
                while let Some(&(due, id)) = s.parked.first() {
                    if due > now {
                        break;
                    }
                    if let Err(e) = s.saga_for(&myself, id).await {
                        error!(order_id = %id, error = %e, "could not start an expiring order's saga; retrying");
                        s.wake_at = None;
                        myself.send_after(Duration::from_millis(s.deps.cfg.retry_ms_max), move || SupervisorMsg::Wake { at: due });
                        return Ok(());
                    }
                }
                s.schedule_wake(&myself);
            }
            SupervisorMsg::Input { order_id, input, reply, trace } => match s.saga_for(&myself, order_id).await {
                Ok(a) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    // Forward without waiting: the saga answers the caller.
                    let port: RpcReplyPort<Result<Order, SagaError>> = tx.into();
                    if a.cast(SagaMsg::Client(input, port, trace)).is_err() {
                        if let Some(r) = reply {
                            let _ = r.send(Err(SagaError::Unavailable(format!("order {order_id} is restarting; retry"))));
                        }
                    } else if let Some(r) = reply {
                        tokio::spawn(async move {
                            let out =
                                rx.await.unwrap_or_else(|_| Err(SagaError::Unavailable(format!("order {order_id} is restarting; retry"))));
                            let _ = r.send(out);
                        });
                    }
                }
                Err(e) => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                }
            },
            SupervisorMsg::Count(reply) => {
                let _ = reply.send((s.live.len(), s.parked.len()));
            }
            SupervisorMsg::Watch(id, reply) => {
                let rx = match s.live.get(&id) {
                    Some(a) => ractor::call!(a, SagaMsg::Watch).ok(),
                    None => None,
                };
                let _ = reply.send(rx);
            }
            SupervisorMsg::MailDelivered(id) => {
                if let Some(a) = s.live.get(&id) {
                    let _ = a.cast(SagaMsg::MailDelivered);
                }
            }
            SupervisorMsg::EventCancelled(event_id) => {
                // A storage error must not end the supervisor (an error
                // returned here would): ask again later.
                let ids = match s.deps.orders.open_orders_of_event(event_id).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        error!(event_id = %event_id, error = %e, "could not list a cancelled event's orders; retrying");
                        myself.send_after(Duration::from_millis(s.deps.cfg.retry_ms_max), move || SupervisorMsg::EventCancelled(event_id));
                        return Ok(());
                    }
                };
                info!(event_id = %event_id, orders = ids.len(), "event cancelled: cancelling and refunding its orders");
                for id in ids {
                    myself.cast(SupervisorMsg::Input {
                        order_id: id,
                        input: OrderInput::EventCancelled,
                        reply: None,
                        trace: crate::trace::current(),
                    })?;
                }
            }
            SupervisorMsg::Grant(Grant::Lost(event_id, epoch)) => {
                if s.taken.get(&event_id).is_some_and(|t| *t > epoch) {
                    return Ok(());
                }
                s.taken.remove(&event_id);
                s.event_lost(event_id);
            }
            // Every time, not only for an event this node knew it lost: in a
            // cluster the orders may have been made on the node that owned
            // the event before (and died); a saga already running is kept.
            SupervisorMsg::Grant(Grant::Taken(event_id, epoch)) => {
                s.lost.remove(&event_id);
                let newest = s.taken.get(&event_id).map_or(epoch, |t| (*t).max(epoch));
                s.taken.insert(event_id, newest);
                match s.deps.orders.live_orders(Some(event_id)).await {
                    Ok(mine) => {
                        if !mine.is_empty() {
                            info!(event_id = %event_id, orders = mine.len(), "event taken: resuming its order sagas");
                        }
                        for stored in mine {
                            s.resume(&myself, stored).await;
                        }
                    }
                    Err(e) => {
                        // Never `?` here: an error would stop the supervisor, which nothing restarts.
                        warn!(event_id = %event_id, error = %e, "could not list the orders of an event taken; retrying");
                        s.lost.insert(event_id);
                        let retry = Duration::from_millis(s.deps.cfg.retry_ms_max);
                        myself.send_after(retry, move || SupervisorMsg::Grant(Grant::Taken(event_id, epoch)));
                    }
                }
            }
            SupervisorMsg::Respawn(id) => match s.saga_for(&myself, id).await {
                Ok(_) => {}
                // Its event is another node's: resumed here if the grant comes back.
                Err(SagaError::OwnedElsewhere { event_id, .. }) => {
                    s.lost.insert(event_id);
                }
                Err(e) => {
                    error!(order_id = %id, error = %e, "could not restart an order saga; retrying");
                    myself.send_after(Duration::from_millis(s.deps.cfg.retry_ms_max), move || SupervisorMsg::Respawn(id));
                }
            },
            SupervisorMsg::RecheckLost => {
                // Whichever lost event this node holds again is taken back.
                let lost: Vec<usher_engine::EventId> = s.lost.iter().copied().collect();
                for event_id in lost {
                    if let Ok(h) = s.deps.registry.event(event_id).await {
                        let _ = myself.cast(SupervisorMsg::Grant(Grant::Taken(event_id, h.epoch)));
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        s: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.filter(|r| r == STOP_CONFLICT)),
            _ => return Ok(()),
        };
        let Some(id) = s.by_cell.remove(&cell.get_id()) else { return Ok(()) };
        // Only if it is this actor's entry: after a lost grant came back, a
        // new saga for the order may already run under the same id.
        if s.live.get(&id).is_some_and(|a| a.get_id() == cell.get_id()) {
            s.live.remove(&id);
            if failure.is_none() && !s.parked_at.contains_key(&id) {
                s.event_of.remove(&id);
            }
        } else {
            return Ok(());
        }
        if let Some(why) = failure {
            // Restart from storage; after repeated failures, wait first.
            let now = s.deps.clock.now();
            let recent = s.restarts.entry(id).or_default();
            recent.retain(|t| t.0 > now.0 - limits::RESTART_WINDOW_MS as i64);
            recent.push(now);
            let delay =
                if recent.len() > limits::RESTARTS_PER_WINDOW_MAX as usize { s.deps.cfg.retry_ms_max } else { s.deps.cfg.retry_ms_min };
            error!(order_id = %id, error = %why, "order saga failed; restarting it from storage");
            myself.send_after(Duration::from_millis(delay), move || SupervisorMsg::Respawn(id));
        }
        Ok(())
    }
}

/// The node's handle on its order sagas. Cheap to clone.
#[derive(Clone)]
pub struct Sagas {
    actor: ActorRef<SupervisorMsg>,
    pub deps: SagaDeps,
}

impl Sagas {
    pub async fn start(deps: SagaDeps) -> Result<(Sagas, JoinHandle<()>), StoreError> {
        let (actor, join) = Actor::spawn(None, OrderSupervisor, deps.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("order supervisor failed to start: {e}")))?;
        Ok((Sagas { actor, deps }, join))
    }

    pub fn started(&self, stored: StoredOrder) {
        let _ = self.actor.cast(SupervisorMsg::Start(stored));
    }

    pub async fn input(&self, order_id: OrderId, input: OrderInput) -> Result<Order, SagaError> {
        match self
            .actor
            .call(
                |reply| SupervisorMsg::Input { order_id, input, reply: Some(reply), trace: crate::trace::current() },
                Some(Duration::from_secs(30)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(_) => Err(SagaError::Unavailable("the order did not answer in time".into())),
            Err(_) => Err(SagaError::Unavailable("node is shutting down".into())),
        }
    }

    pub async fn watch(&self, order_id: OrderId) -> Option<watch::Receiver<Order>> {
        match self.actor.call(|reply| SupervisorMsg::Watch(order_id, reply), Some(Duration::from_secs(10))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => None,
        }
    }

    /// Sagas running on this node now, and orders parked while they wait
    /// for their payment (`None` when the supervisor does not answer).
    pub async fn count(&self) -> Option<(usize, usize)> {
        match self.actor.call(SupervisorMsg::Count, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => Some(r),
            _ => None,
        }
    }

    pub fn mail_delivered(&self, order_id: OrderId) {
        let _ = self.actor.cast(SupervisorMsg::MailDelivered(order_id));
    }

    pub fn event_cancelled(&self, event_id: usher_engine::EventId) {
        let _ = self.actor.cast(SupervisorMsg::EventCancelled(event_id));
    }

    pub async fn shutdown(&self) {
        let _ = self.actor.stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
        self.actor.stop(Some("shutdown".into()));
    }
}
