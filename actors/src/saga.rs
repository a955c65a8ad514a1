//! Order sagas: one `OrderSaga` actor per live order, supervised by
//! `OrderSupervisor`, and the `Postman` that delivers the email queue.
//!
//! The saga owns its order in memory. Every input (a customer's pay or
//! cancel, a provider's answer, an event actor's reply, a timer) goes through
//! `engine::Order::apply`, and the new state is written (with its outbox
//! messages, tickets and queued email) before anything else happens: a crash
//! resumes at the last written step. The IO a step needs runs in a spawned
//! task that answers with a message, so the actor never blocks and can
//! always take a cancel; every step's IO carries a key derived from the
//! order, so redoing it after a crash has the effect of doing it once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use usher_engine::{
    Command, EventConfig, IdempotencyKey, Layout, MailKind, Millis, Order, OrderId, OrderInput, OrderReject, Reply, SeatIdx, SigningKey,
    Step, TicketId, Transition, limits, sign_ticket, ticket_id_for,
};

use crate::clock::Clock;
use crate::event::CommandError;
use crate::ports::{
    AuthorizeRequest, MailState, OrderDoc, OrderStore, OrderWrite, PaymentOutcome, PaymentProvider, ProviderError, ProviderStatus, Store,
    StoreError, StoredOrder, TicketDoc, TicketRecord, TicketRenderer, TicketStatus,
};
use crate::registry::Registry;

#[derive(Clone, Debug)]
pub struct SagaConfig {
    /// How long a saga waits for the provider's answer before asking for the
    /// attempt's status instead.
    pub payment_timeout_ms: u64,
    /// First wait before redoing a step whose IO failed (doubles up to the max).
    pub retry_ms_min: u64,
    pub retry_ms_max: u64,
    /// PDFs rendered at once (the bounded worker pool).
    pub render_workers: usize,
    /// Fault injection for crash tests: wait this long after the payment is
    /// captured (and written) before issuing tickets. 0 in production.
    pub issue_delay_ms: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig { payment_timeout_ms: 30_000, retry_ms_min: 200, retry_ms_max: 10_000, render_workers: 2, issue_delay_ms: 0 }
    }
}

/// What every saga needs. Cheap to clone.
#[derive(Clone)]
pub struct SagaDeps {
    pub orders: Arc<dyn OrderStore>,
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub provider: Arc<dyn PaymentProvider>,
    pub renderer: Arc<dyn TicketRenderer>,
    pub render_slots: Arc<Semaphore>,
    pub signing_key: Arc<SigningKey>,
    pub pdf_dir: PathBuf,
    pub clock: Clock,
    pub cfg: SagaConfig,
    /// Card numbers between a Pay call and its authorization; never stored.
    pub cards: Arc<CardVault>,
    /// Wakes the postman when a transition queued an email.
    pub mail_queued: Arc<tokio::sync::Notify>,
    /// Group commit for every saga's writes.
    pub writer: OrderWriter,
}

impl SagaDeps {
    pub fn pdf_path(&self, order: OrderId) -> PathBuf {
        self.pdf_dir.join(format!("{order}.pdf"))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SagaError {
    #[error("{0}")]
    Rejected(OrderReject),
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for SagaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) | StoreError::NotFound(m) => SagaError::Unavailable(m),
            StoreError::Conflict(m) => SagaError::Unavailable(format!("{m}; retry")),
            other => SagaError::Internal(other.to_string()),
        }
    }
}

/// The reason a saga stops with when its write lost a version race: its
/// supervisor reloads it from storage (any other stop is final).
const STOP_CONFLICT: &str = "conflict";

/// The generation of a saga's current step: each step's IO answers with the
/// generation it was started for, and an answer for an older one (a step
/// the saga has since left) is dropped. Not the fencing `Epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepGen(pub u64);

pub enum SagaMsg {
    /// A customer's or organizer's input: answered once it is durable.
    Client(OrderInput, RpcReplyPort<Result<Order, SagaError>>),
    /// The result of the IO of step generation `generation`.
    StepDone {
        generation: StepGen,
        input: OrderInput,
        tickets: Vec<TicketRecord>,
    },
    /// Generation `generation`'s IO failed: redo it after a backoff.
    Failed {
        generation: StepGen,
    },
    /// Redo generation `generation`'s IO (the backoff has passed).
    Retry {
        generation: StepGen,
    },
    MailDelivered,
    Watch(RpcReplyPort<watch::Receiver<Order>>),
}

pub struct OrderSaga;

pub struct SagaArgs {
    pub stored: StoredOrder,
    pub deps: SagaDeps,
}

pub struct SagaState {
    order: Order,
    version: i64,
    deps: SagaDeps,
    /// Bumped whenever the step changes: answers of an older step's IO are dropped.
    generation: StepGen,
    tasks: Vec<JoinHandle<()>>,
    backoff_ms: u64,
    watch: watch::Sender<Order>,
    layout: Option<Arc<Layout>>,
}

impl Drop for SagaState {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Actor for OrderSaga {
    type Msg = SagaMsg;
    type State = SagaState;
    type Arguments = SagaArgs;

    async fn pre_start(&self, myself: ActorRef<SagaMsg>, args: SagaArgs) -> Result<SagaState, ActorProcessingErr> {
        let (watch, _) = watch::channel(args.stored.order.clone());
        let mut s = SagaState {
            order: args.stored.order,
            version: args.stored.version,
            deps: args.deps,
            generation: StepGen(0),
            tasks: Vec::new(),
            backoff_ms: 0,
            watch,
            layout: None,
        };
        s.drive(&myself);
        Ok(s)
    }

    async fn handle(&self, myself: ActorRef<SagaMsg>, msg: SagaMsg, s: &mut SagaState) -> Result<(), ActorProcessingErr> {
        match msg {
            SagaMsg::Client(input, reply) => {
                let out = s.feed(&myself, input, Vec::new()).await.map(|_| s.order.clone());
                if let Err(SagaError::Internal(m)) = &out {
                    error!(order_id = %s.order.id, error = %m, "order saga failed");
                }
                let _ = reply.send(out);
            }
            SagaMsg::StepDone { generation, input, tickets } if generation == s.generation => {
                if let Err(e) = s.feed(&myself, input, tickets).await {
                    warn!(order_id = %s.order.id, step = s.order.step.as_str(), error = %e, "saga could not record a step; redoing it");
                    s.retry_later(&myself);
                }
            }
            SagaMsg::Failed { generation } if generation == s.generation => s.retry_later(&myself),
            SagaMsg::Retry { generation } if generation == s.generation => s.drive(&myself),
            SagaMsg::StepDone { .. } | SagaMsg::Failed { .. } | SagaMsg::Retry { .. } => {}
            SagaMsg::MailDelivered => {
                if s.order.step == Step::Notify
                    && let Err(e) = s.feed(&myself, OrderInput::Delivered, Vec::new()).await
                {
                    warn!(order_id = %s.order.id, error = %e, "saga could not record the delivery; asking again");
                    s.retry_later(&myself);
                }
            }
            SagaMsg::Watch(reply) => {
                let _ = reply.send(s.watch.subscribe());
            }
        }
        if s.order.step == Step::Done {
            info!(order_id = %s.order.id, status = s.order.status.as_str(), "order saga finished");
            myself.stop(Some("done".into()));
        }
        Ok(())
    }
}

impl SagaState {
    /// Applies an input and writes the result; on a failed write the order in
    /// memory goes back to what is stored.
    async fn feed(&mut self, myself: &ActorRef<SagaMsg>, input: OrderInput, tickets: Vec<TicketRecord>) -> Result<(), SagaError> {
        let now = self.deps.clock.now().max(self.order.updated_at);
        let before = self.order.clone();
        let t = self.order.apply(input, now).map_err(SagaError::Rejected)?;
        if self.order == before {
            return Ok(());
        }
        let labels = match self.labels().await {
            Ok(l) => l,
            Err(e) => {
                self.order = before;
                return Err(e);
            }
        };
        let w = PendingWrite {
            order: self.order.clone(),
            version: self.version,
            transition: t.clone(),
            new_tickets: tickets,
            seat_labels: labels,
            now,
        };
        if let Err(e) = self.deps.writer.write(w).await {
            self.order = before;
            if let StoreError::Conflict(m) = &e {
                // Another writer has this order: ours is stale. Stop; the
                // supervisor reloads it from storage.
                error!(order_id = %self.order.id, error = %m, "order written by someone else; saga stops");
                myself.stop(Some(STOP_CONFLICT.into()));
            }
            return Err(e.into());
        }
        self.version += 1;
        self.backoff_ms = 0;
        if t.mail.is_some() {
            self.deps.mail_queued.notify_one();
        }
        let paying = |st: Step| matches!(st, Step::Authorize | Step::QueryStatus);
        if paying(before.step)
            && !paying(self.order.step)
            && let Some(p) = self.order.current_payment()
        {
            self.deps.cards.forget(&p.id.to_string());
        }
        let _ = self.watch.send(self.order.clone());
        if self.order.step != before.step || self.order.deadline != before.deadline {
            self.drive(myself);
        }
        Ok(())
    }

    async fn layout(&mut self) -> Result<Arc<Layout>, SagaError> {
        if let Some(l) = &self.layout {
            return Ok(l.clone());
        }
        let h = self.deps.registry.event(self.order.event_id).await.map_err(|e| SagaError::Unavailable(e.to_string()))?;
        self.layout = Some(h.layout.clone());
        Ok(h.layout)
    }

    async fn labels(&mut self) -> Result<Vec<String>, SagaError> {
        let layout = self.layout().await?;
        Ok(self.order.lines.iter().map(|l| layout.label(l.seat)).collect())
    }

    fn retry_later(&mut self, myself: &ActorRef<SagaMsg>) {
        let c = &self.deps.cfg;
        self.backoff_ms = if self.backoff_ms == 0 { c.retry_ms_min } else { (self.backoff_ms * 2).min(c.retry_ms_max) };
        let generation = self.generation;
        myself.send_after(Duration::from_millis(self.backoff_ms), move || SagaMsg::Retry { generation });
    }

    /// Starts the IO of the current step (after cancelling the last step's).
    fn drive(&mut self, myself: &ActorRef<SagaMsg>) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.generation = StepGen(self.generation.0 + 1);
        let generation = self.generation;
        let order = self.order.clone();
        let deps = self.deps.clone();
        let me = myself.clone();
        let done = move |input: OrderInput| SagaMsg::StepDone { generation, input, tickets: Vec::new() };
        let at = |t: Millis| deps.clock.instant_at(t);
        match order.step {
            Step::AwaitPayment => {
                let when = at(order.pay_by);
                self.spawn(async move {
                    tokio::time::sleep_until(when).await;
                    let _ = me.cast(done(OrderInput::PayDeadlinePassed));
                });
            }
            Step::Authorize => {
                if let Some(deadline) = order.deadline {
                    let when = at(deadline);
                    let me = me.clone();
                    self.spawn(async move {
                        tokio::time::sleep_until(when).await;
                        let _ = me.cast(done(OrderInput::ProviderTimedOut));
                    });
                }
                let Some(card_number) = card_of(&deps, &order) else {
                    // Restarted after the Pay call: the card number is gone
                    // with the old process. The deadline timer above moves
                    // on to the status query, which finds the attempt by key.
                    return;
                };
                self.spawn(async move {
                    let p = order.current_payment().expect("authorize has a payment");
                    let req = AuthorizeRequest { key: p.id.to_string(), reference: order.id.to_string(), amount: p.amount, card_number };
                    let msg = match deps.provider.authorize(req).await {
                        Ok(PaymentOutcome::Authorized { provider_ref }) => done(OrderInput::Authorized { provider_ref }),
                        Ok(PaymentOutcome::Declined { reason }) => done(OrderInput::Declined { reason }),
                        Err(ProviderError::Refused(m)) => {
                            done(OrderInput::Declined { reason: format!("the payment provider refused the payment: {m}") })
                        }
                        Err(ProviderError::Unavailable(m)) => {
                            warn!(order_id = %order.id, error = %m, "payment provider unavailable; asking for the status");
                            done(OrderInput::ProviderTimedOut)
                        }
                    };
                    let _ = me.cast(msg);
                });
            }
            Step::QueryStatus => {
                self.spawn(async move {
                    let p = order.current_payment().expect("query has a payment");
                    let key = p.id.to_string();
                    let mut wait = deps.cfg.retry_ms_min;
                    loop {
                        let msg = match deps.provider.status(&key).await {
                            Ok(ProviderStatus::Unknown) if deps.cards.get(&key).is_none() => Some(OrderInput::Declined {
                                reason: "the payment was interrupted before it reached the provider; pay again".into(),
                            }),
                            Ok(ProviderStatus::Unknown) => Some(OrderInput::ProviderNeverSaw { timeout_ms: deps.cfg.payment_timeout_ms }),
                            Ok(ProviderStatus::Authorized { provider_ref } | ProviderStatus::Captured { provider_ref }) => {
                                Some(OrderInput::Authorized { provider_ref })
                            }
                            Ok(ProviderStatus::Declined { reason }) => Some(OrderInput::Declined { reason }),
                            Ok(ProviderStatus::Refunded { .. }) => Some(OrderInput::Declined { reason: "refunded by the provider".into() }),
                            Ok(ProviderStatus::Pending) | Err(_) => None,
                        };
                        if let Some(input) = msg {
                            let _ = me.cast(done(input));
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        wait = (wait * 2).min(deps.cfg.retry_ms_max);
                    }
                });
            }
            Step::Confirm => {
                self.spawn(async move {
                    let key = step_key(&order, "confirm");
                    let cmd = Command::ConfirmAll { hold_ids: order.holds.clone() };
                    match event_command(&deps, &order, key, cmd).await {
                        Ok(Ok(_)) => {
                            let _ = me.cast(done(OrderInput::Confirmed));
                        }
                        Ok(Err(why)) => {
                            let reason = format!("the seats were no longer held when the payment went through: {why}");
                            let _ = me.cast(done(OrderInput::HoldsGone { reason }));
                        }
                        Err(e) => {
                            warn!(order_id = %order.id, error = %e, "could not confirm the holds; retrying");
                            let _ = me.cast(SagaMsg::Failed { generation });
                        }
                    }
                });
            }
            Step::Capture | Step::Refund => {
                let capture = order.step == Step::Capture;
                self.spawn(async move {
                    let p = order.current_payment().expect("capture/refund has a payment");
                    let key = p.id.to_string();
                    let Some(r) = p.provider_ref.clone() else {
                        // Refunding a payment that never got a reference: nothing was taken.
                        let _ = me.cast(done(OrderInput::Refunded));
                        return;
                    };
                    let res = if capture { deps.provider.capture(&key, &r).await } else { deps.provider.refund(&key, &r).await };
                    match res {
                        Ok(()) => {
                            let _ = me.cast(done(if capture { OrderInput::Captured } else { OrderInput::Refunded }));
                        }
                        Err(e) => {
                            warn!(order_id = %order.id, error = %e, capture, "payment provider call failed; retrying");
                            let _ = me.cast(SagaMsg::Failed { generation });
                        }
                    }
                });
            }
            Step::Issue => {
                self.spawn(async move {
                    if deps.cfg.issue_delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(deps.cfg.issue_delay_ms)).await;
                    }
                    match issue(&deps, &order).await {
                        Ok(tickets) => {
                            let ids = tickets.iter().map(|t| t.id).collect();
                            let _ = me.cast(SagaMsg::StepDone { generation, input: OrderInput::TicketsIssued { tickets: ids }, tickets });
                        }
                        Err(e) => {
                            warn!(order_id = %order.id, error = %e, "could not issue tickets; retrying");
                            let _ = me.cast(SagaMsg::Failed { generation });
                        }
                    }
                });
            }
            Step::Render => {
                self.spawn(async move {
                    match render(&deps, &order).await {
                        Ok(()) => {
                            let _ = me.cast(done(OrderInput::Rendered));
                        }
                        Err(e) => {
                            error!(order_id = %order.id, error = %e, "could not render the tickets; retrying");
                            let _ = me.cast(SagaMsg::Failed { generation });
                        }
                    }
                });
            }
            Step::Notify => {
                // The postman tells us when it delivers; this covers a
                // delivery that happened before a restart.
                self.spawn(async move {
                    loop {
                        match deps.orders.mail_state(order.id, MailKind::Confirmation).await {
                            Ok(Some(MailState::Sent | MailState::Failed)) => {
                                let _ = me.cast(SagaMsg::MailDelivered);
                                return;
                            }
                            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(limits::MAIL_STATE_POLL_MS)).await,
                        }
                    }
                });
            }
            Step::Release => {
                self.spawn(async move {
                    for h in &order.holds {
                        let key = step_key(&order, &format!("release-{h}"));
                        let cmd = Command::Release { hold_id: *h, customer: None };
                        // A hold that already ended (expired, released) is released enough.
                        if let Err(e) = event_command(&deps, &order, key, cmd).await {
                            warn!(order_id = %order.id, error = %e, "could not release a hold; retrying");
                            let _ = me.cast(SagaMsg::Failed { generation });
                            return;
                        }
                    }
                    let _ = me.cast(done(OrderInput::Released));
                });
            }
            Step::Done => {}
        }
    }

    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(f));
    }
}

/// The card number of the current payment attempt: kept in memory only
/// while the saga runs (never stored). After a restart the provider's
/// idempotency key finds the attempt without it.
fn card_of(deps: &SagaDeps, order: &Order) -> Option<String> {
    order.current_payment().and_then(|p| deps.cards.get(&p.id.to_string()))
}

fn step_key(order: &Order, step: &str) -> IdempotencyKey {
    IdempotencyKey::parse(&format!("order:{}:{step}", order.id.0.simple())).expect("derived keys are well formed")
}

/// Sends a command to the order's event. `Ok(Err(sentence))` is a domain
/// refusal (the hold is gone), in the engine's words for people
/// (`Reject::describe`); `Err` is infrastructure (retry).
async fn event_command(deps: &SagaDeps, order: &Order, key: IdempotencyKey, cmd: Command) -> Result<Result<Reply, String>, CommandError> {
    let handle = match deps.registry.event(order.event_id).await {
        Ok(h) => h,
        Err(CommandError::EventNotFound(_)) => return Ok(Err("the event no longer exists".into())),
        Err(e) => return Err(e),
    };
    let out = handle.command(key, cmd).await?;
    Ok(out.result.map_err(|r| r.describe(&handle.layout)))
}

async fn issue(deps: &SagaDeps, order: &Order) -> Result<Vec<TicketRecord>, SagaError> {
    let handle = deps.registry.event(order.event_id).await.map_err(|e| SagaError::Unavailable(e.to_string()))?;
    let now = deps.clock.now();
    Ok(order
        .lines
        .iter()
        .map(|l| {
            let id: TicketId = ticket_id_for(order.id, l.seat);
            TicketRecord {
                id,
                order_id: order.id,
                event_id: order.event_id,
                seat: l.seat,
                seat_label: handle.layout.label(l.seat),
                price: l.price,
                code: sign_ticket(&deps.signing_key, order.event_id, id, l.seat),
                status: TicketStatus::Valid,
                issued_at: now,
            }
        })
        .collect())
}

/// Renders the order's PDF on the worker pool and writes it atomically.
async fn render(deps: &SagaDeps, order: &Order) -> Result<(), SagaError> {
    let doc = order_doc(deps, order).await?;
    let _slot = deps.render_slots.clone().acquire_owned().await.map_err(|_| SagaError::Unavailable("shutting down".into()))?;
    let renderer = deps.renderer.clone();
    let bytes = tokio::task::spawn_blocking(move || renderer.render(&doc))
        .await
        .map_err(|e| SagaError::Internal(format!("render worker: {e}")))?
        .map_err(|e| SagaError::Internal(e.to_string()))?;
    let path = deps.pdf_path(order.id);
    write_atomically(&path, &bytes).await.map_err(|e| SagaError::Unavailable(format!("write {}: {e}", path.display())))
}

pub async fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let (tmp2, bytes) = (tmp.clone(), bytes.to_vec());
    // Written and synced on the blocking pool: the file is whole before it
    // gets its name.
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        // Tickets are people's entry codes: readable by the owner only.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp2)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })
    .await
    .map_err(std::io::Error::other)??;
    tokio::fs::rename(&tmp, path).await
}

/// The facts printed on an order's tickets.
pub async fn order_doc(deps: &SagaDeps, order: &Order) -> Result<OrderDoc, SagaError> {
    let config: EventConfig = deps.store.get_event(order.event_id).await?.ok_or(SagaError::NotFound(order.id))?;
    let venue = deps.store.get_venue(config.venue_id).await?;
    let handle = deps.registry.event(order.event_id).await.map_err(|e| SagaError::Unavailable(e.to_string()))?;
    let layout = handle.layout.clone();
    let tickets = deps.orders.tickets_of_order(order.id).await?;
    let by_seat: HashMap<SeatIdx, &TicketRecord> = tickets.iter().map(|t| (t.seat, t)).collect();
    let mut docs = Vec::new();
    for l in &order.lines {
        let t =
            by_seat.get(&l.seat).ok_or_else(|| SagaError::Internal(format!("order {} has no ticket for seat {:?}", order.id, l.seat)))?;
        let d = layout.describe(l.seat);
        docs.push(TicketDoc {
            ticket_id: t.id.to_string(),
            section: d.section.to_owned(),
            row: d.row.to_owned(),
            number: d.number,
            // People read the category's name on their ticket; clients get its code.
            category: d.category_name.to_owned(),
            price: l.price.to_string(),
            code: t.code.clone(),
        });
    }
    Ok(OrderDoc {
        order_number: order_number(order.id),
        event_name: config.name,
        venue_name: venue.map(|v| v.spec.name).unwrap_or_default(),
        starts_at: crate::local_time::written(config.starts_at, &config.time_zone),
        holder: format!("{} <{}>", order.customer.as_str(), order.email),
        tickets: docs,
    })
}

/// Short and readable: the first 8 hex digits of the order id, grouped.
pub fn order_number(id: OrderId) -> String {
    let h = id.0.simple().to_string().to_uppercase();
    format!("U-{}-{}", &h[..4], &h[4..8])
}

/// Card numbers in flight, by payment id. Never written anywhere: the saga
/// needs a number only to send the authorization right after the Pay call
/// that carried it; after a restart the status query finds the attempt by
/// its key.
#[derive(Default)]
pub struct CardVault {
    inner: std::sync::Mutex<HashMap<String, String>>,
}

impl CardVault {
    pub fn put(&self, payment_key: String, card: String) {
        self.inner.lock().expect("card vault").insert(payment_key, card);
    }
    pub fn get(&self, payment_key: &str) -> Option<String> {
        self.inner.lock().expect("card vault").get(payment_key).cloned()
    }
    pub fn forget(&self, payment_key: &str) {
        self.inner.lock().expect("card vault").remove(payment_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let id = OrderId(uuid::Uuid::from_u128(0xabcdef12_0000_0000_0000_000000000000));
        assert_eq!(order_number(id), "U-ABCD-EF12");
    }
}

// ---------------------------------------------------------------------------
// Group commit for saga writes: every saga's transition goes through one
// writer task that drains what is queued into one transaction, as the event
// actors do. A saga is answered only once its write is durable.

/// One saga transition to write, owned so that it can wait in the queue.
pub struct PendingWrite {
    pub order: Order,
    pub version: i64,
    pub transition: Transition,
    pub new_tickets: Vec<TicketRecord>,
    pub seat_labels: Vec<String>,
    pub now: Millis,
}

type WriteRequest = (PendingWrite, tokio::sync::oneshot::Sender<Result<(), StoreError>>);

/// The handle sagas write through. Cheap to clone.
#[derive(Clone)]
pub struct OrderWriter {
    tx: tokio::sync::mpsc::Sender<WriteRequest>,
    stats: Arc<WriterStats>,
}

/// Counters of the saga writer, for the bench and the log.
#[derive(Default)]
pub struct WriterStats {
    pub batches: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    pub largest: std::sync::atomic::AtomicU64,
}

impl OrderWriter {
    /// Starts the writer task on `orders`; it ends when every handle is dropped.
    pub fn start(orders: Arc<dyn OrderStore>) -> OrderWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteRequest>(limits::ORDER_WRITES_QUEUED_MAX);
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        tokio::spawn(async move {
            let mut batch: Vec<WriteRequest> = Vec::with_capacity(limits::ORDER_WRITES_PER_BATCH_MAX);
            while rx.recv_many(&mut batch, limits::ORDER_WRITES_PER_BATCH_MAX).await > 0 {
                let results = {
                    let ws: Vec<OrderWrite<'_>> = batch
                        .iter()
                        .map(|(w, _)| OrderWrite {
                            order: &w.order,
                            version: w.version,
                            transition: &w.transition,
                            new_tickets: &w.new_tickets,
                            seat_labels: &w.seat_labels,
                            now: w.now,
                        })
                        .collect();
                    orders.save_orders(&ws).await
                };
                use std::sync::atomic::Ordering::Relaxed;
                st.batches.fetch_add(1, Relaxed);
                st.writes.fetch_add(batch.len() as u64, Relaxed);
                st.largest.fetch_max(batch.len() as u64, Relaxed);
                let mut results = results.into_iter();
                for (_, reply) in batch.drain(..) {
                    let r = results.next().unwrap_or_else(|| Err(StoreError::Corrupt("the store answered fewer writes than asked".into())));
                    let _ = reply.send(r);
                }
            }
        });
        OrderWriter { tx, stats }
    }

    /// Writes one transition; returns once it is durable (or failed).
    pub async fn write(&self, w: PendingWrite) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send((w, reply)).await.map_err(|_| StoreError::Unavailable("the order writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the order writer has stopped".into()))?
    }

    /// `batches=… writes=… largest=…`
    pub fn summary(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        format!(
            "batches={} writes={} largest={}",
            self.stats.batches.load(Relaxed),
            self.stats.writes.load(Relaxed),
            self.stats.largest.load(Relaxed)
        )
    }
}

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
}

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
}

impl SupervisorState {
    async fn spawn(&mut self, myself: &ActorRef<SupervisorMsg>, stored: StoredOrder) -> Result<ActorRef<SagaMsg>, SagaError> {
        let id = stored.order.id;
        if let Some(a) = self.live.get(&id) {
            return Ok(a.clone());
        }
        let (a, _) = Actor::spawn_linked(None, OrderSaga, SagaArgs { stored, deps: self.deps.clone() }, myself.get_cell())
            .await
            .map_err(|e| SagaError::Internal(format!("saga failed to start: {e}")))?;
        self.by_cell.insert(a.get_id(), id);
        self.live.insert(id, a.clone());
        Ok(a)
    }

    async fn saga_for(&mut self, myself: &ActorRef<SupervisorMsg>, id: OrderId) -> Result<ActorRef<SagaMsg>, SagaError> {
        if let Some(a) = self.live.get(&id) {
            return Ok(a.clone());
        }
        let stored = self.deps.orders.get_order(id).await?.ok_or(SagaError::NotFound(id))?;
        self.unpark(id);
        self.spawn(myself, stored).await
    }

    /// An order waiting for its payment is parked; any other gets its saga.
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, stored: StoredOrder) -> Result<(), SagaError> {
        let o = &stored.order;
        if o.step == Step::AwaitPayment && !self.live.contains_key(&o.id) {
            self.parked.insert((o.pay_by, o.id));
            self.parked_at.insert(o.id, o.pay_by);
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
        };
        // Resume every saga that has work left, where its last write left it.
        let live = s.deps.orders.live_orders().await.map_err(|e| format!("loading live orders: {e}"))?;
        if !live.is_empty() {
            info!(orders = live.len(), "resuming order sagas");
        }
        for stored in live {
            s.start(&myself, stored).await.map_err(|e| e.to_string())?;
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
            SupervisorMsg::Input { order_id, input, reply } => match s.saga_for(&myself, order_id).await {
                Ok(a) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    // Forward without waiting: the saga answers the caller.
                    let port: RpcReplyPort<Result<Order, SagaError>> = tx.into();
                    if a.cast(SagaMsg::Client(input, port)).is_err() {
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
                let ids = s.deps.orders.open_orders_of_event(event_id).await?;
                info!(event_id = %event_id, orders = ids.len(), "event cancelled: cancelling and refunding its orders");
                for id in ids {
                    myself.cast(SupervisorMsg::Input { order_id: id, input: OrderInput::EventCancelled, reply: None })?;
                }
            }
            SupervisorMsg::Respawn(id) => {
                if let Err(e) = s.saga_for(&myself, id).await {
                    error!(order_id = %id, error = %e, "could not restart an order saga; retrying");
                    myself.send_after(Duration::from_millis(s.deps.cfg.retry_ms_max), move || SupervisorMsg::Respawn(id));
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
        s.live.remove(&id);
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
        match self.actor.call(|reply| SupervisorMsg::Input { order_id, input, reply: Some(reply) }, Some(Duration::from_secs(30))).await {
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
