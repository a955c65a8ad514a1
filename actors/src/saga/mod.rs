//! Order sagas: one `OrderSaga` actor per live order (this file), supervised
//! by `OrderSupervisor` (`supervisor.rs`); the IO of each step (`steps.rs`),
//! the group-commit writer of saga transitions (`writer.rs`), card numbers in
//! flight (`vault.rs`) and the text people read about an order (`text.rs`).
//! The `Postman` that delivers the email queue is `crate::postman`.
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

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use usher_engine::{Millis, Order, OrderId, OrderInput, OrderReject, SigningKey, Step};

use crate::clock::Clock;
use crate::metrics::names;
use crate::ports::{Epoch, OrderStore, PaymentProvider, Store, StoreError, StoredOrder, TicketRecord, TicketRenderer};
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
    /// Render slots, fewest pages first (`render_queue.rs`).
    pub render_slots: RenderQueue,
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
    /// The trace each queued email belongs to, for the postman.
    pub mail_traces: Arc<MailTraces>,
}

/// The `traceparent` of orders whose email waits, from the saga that
/// queued it to the postman that sends it (on this node; in memory).
/// Bounded: past `MAIL_TRACES_MAX` entries it starts over, and those
/// emails go untraced.
#[derive(Default)]
pub struct MailTraces(std::sync::Mutex<HashMap<OrderId, String>>);

/// Entries `MailTraces` keeps at most.
pub const MAIL_TRACES_MAX: usize = 10_000;

impl MailTraces {
    pub fn put(&self, order: OrderId, traceparent: String) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAIL_TRACES_MAX {
            m.clear();
        }
        m.insert(order, traceparent);
    }

    pub fn take(&self, order: OrderId) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&order)
    }
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
    /// The order's event is served by another node, which runs its saga.
    #[error("event {event_id} is served by another node ({owner})")]
    OwnedElsewhere { event_id: usher_engine::EventId, owner: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for SagaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) | StoreError::NotFound(m) => SagaError::Unavailable(m),
            StoreError::Conflict(m) => SagaError::Unavailable(format!("{m}; retry")),
            // The event was granted again (its actor restarted, or another
            // node took it): the next try writes with the new owner's epoch.
            e @ StoreError::Fenced { .. } => SagaError::Unavailable(format!("{e}; retry")),
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
    /// A customer's or organizer's input: answered once it is durable; with
    /// the caller's `traceparent` when traced.
    Client(OrderInput, RpcReplyPort<Result<Order, SagaError>>, Option<String>),
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
    /// The event's owner as last seen: its layout names the seats, its
    /// epoch fences the writes. Asked of the registry once, and again after
    /// a write was fenced (the event was granted again since).
    owner: Option<(Arc<usher_engine::Layout>, Epoch)>,
    /// When the order entered its current step (for the step's duration).
    step_since: std::time::Instant,
    /// The `traceparent` of the last traced client input (the payment):
    /// every later step is a span of that trace. In memory only: a saga
    /// resumed after a restart starts untraced.
    trace: Option<String>,
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
            owner: None,
            step_since: std::time::Instant::now(),
            trace: None,
        };
        s.drive(&myself);
        Ok(s)
    }

    async fn handle(&self, myself: ActorRef<SagaMsg>, msg: SagaMsg, s: &mut SagaState) -> Result<(), ActorProcessingErr> {
        match msg {
            SagaMsg::Client(input, reply, trace) => {
                if trace.is_some() {
                    s.trace = trace;
                }
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
            SagaMsg::Failed { generation } if generation == s.generation => {
                metrics::counter!(names::SAGA_STEPS, "step" => s.order.step.as_str(), "outcome" => "retried").increment(1);
                s.retry_later(&myself)
            }
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
        let payment = payment_outcome(&input);
        let t = self.order.apply(input, now).map_err(SagaError::Rejected)?;
        if self.order == before {
            return Ok(());
        }
        // The write goes out as the event's owner on this node: its epoch
        // fences the write (a saga whose event moved to another owner, or
        // was taken again after a restart, changes nothing), its layout
        // names the seats for the outbox.
        let (layout, epoch) = match self.owner.clone() {
            Some(owner) => owner,
            None => match self.deps.registry.event(self.order.event_id).await {
                Ok(h) => self.owner.insert((h.layout.clone(), h.epoch)).clone(),
                Err(e) => {
                    self.order = before;
                    return Err(SagaError::Unavailable(e.to_string()));
                }
            },
        };
        let labels = self.order.lines.iter().map(|l| layout.label(l.seat)).collect();
        let w = PendingWrite {
            order: self.order.clone(),
            epoch,
            version: self.version,
            transition: t.clone(),
            new_tickets: tickets,
            seat_labels: labels,
            now,
            trace: self.trace.clone(),
        };
        if let Err(e) = self.deps.writer.write(w).await {
            self.order = before;
            if matches!(e, StoreError::Fenced { .. }) {
                // Granted again since: the retry asks who owns it now.
                self.owner = None;
                metrics::counter!(names::FENCED_WRITES, "writer" => "saga").increment(1);
            }
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
            metrics::counter!(names::EMAILS_QUEUED).increment(1);
            // The order's trace (the actor's own task may run in some
            // unrelated span).
            if let Some(tp) = self.trace.clone() {
                self.deps.mail_traces.put(self.order.id, tp);
            }
            self.deps.mail_queued.notify_one();
        }
        if let Some(p) = payment {
            metrics::counter!(names::PAYMENTS, "outcome" => p).increment(1);
        }
        if self.order.step != before.step {
            let step = before.step.as_str();
            metrics::histogram!(names::SAGA_STEP_DURATION, "step" => step).record(self.step_since.elapsed().as_secs_f64());
            metrics::counter!(names::SAGA_STEPS, "step" => step, "outcome" => "done").increment(1);
            self.step_since = std::time::Instant::now();
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
        let order = self.order.clone();
        let deps = self.deps.clone();
        let me = myself.clone();
        match order.step {
            Step::AwaitPayment => self.after(myself, order.pay_by, OrderInput::PayDeadlinePassed),
            Step::Authorize => {
                if let Some(deadline) = order.deadline {
                    self.after(myself, deadline, OrderInput::ProviderTimedOut);
                }
                // Restarted after the Pay call: the card number is gone with
                // the old process. The deadline timer above moves on to the
                // status query, which finds the attempt by key.
                if let Some(card_number) = card_of(&deps, &order) {
                    self.run_step(myself, async move { Ok(steps::authorize(&deps, &order, card_number).await.into()) });
                }
            }
            Step::QueryStatus => self.run_step(myself, async move { Ok(steps::query_status(&deps, &order).await.into()) }),
            Step::Confirm => self.run_step(myself, async move { steps::confirm(&deps, &order).await.map(Into::into) }),
            Step::Capture => self.run_step(myself, async move { steps::capture_or_refund(&deps, &order, true).await.map(Into::into) }),
            Step::Refund => self.run_step(myself, async move { steps::capture_or_refund(&deps, &order, false).await.map(Into::into) }),
            Step::Issue => self.run_step(myself, async move { steps::issue_step(&deps, &order).await }),
            Step::Render => self.run_step(myself, async move { steps::render_step(&deps, &order).await.map(Into::into) }),
            Step::Notify => {
                // The postman tells us when it delivers; this covers a
                // delivery that happened before a restart.
                self.spawn(async move {
                    steps::await_mail(&deps, &order).await;
                    let _ = me.cast(SagaMsg::MailDelivered);
                });
            }
            Step::Release => self.run_step(myself, async move { steps::release(&deps, &order).await.map(Into::into) }),
            Step::Done => {}
        }
    }

    /// Feeds `input` to the order at the instant `at` (a deadline).
    fn after(&mut self, myself: &ActorRef<SagaMsg>, at: Millis, input: OrderInput) {
        let (when, generation, me) = (self.deps.clock.instant_at(at), self.generation, myself.clone());
        self.spawn(async move {
            tokio::time::sleep_until(when).await;
            let _ = me.cast(SagaMsg::StepDone { generation, input, tickets: Vec::new() });
        });
    }

    /// Runs a step's IO (`steps.rs`) and tells the saga how it went: its
    /// input to the order, or a failure to retry (`Err`: already logged).
    fn run_step(&mut self, myself: &ActorRef<SagaMsg>, io: impl std::future::Future<Output = Result<steps::Done, ()>> + Send + 'static) {
        let (generation, me) = (self.generation, myself.clone());
        self.spawn(async move {
            let msg = match io.await {
                Ok(steps::Done { input, tickets }) => SagaMsg::StepDone { generation, input, tickets },
                Err(()) => SagaMsg::Failed { generation },
            };
            let _ = me.cast(msg);
        });
    }

    /// Runs a step's IO as a task; traced, inside a span of the order's
    /// trace named after the step.
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let span = crate::trace::joined(self.trace.as_deref(), || {
            tracing::info_span!(
                parent: None,
                "saga_step",
                otel.name = self.order.step.as_str(),
                order_id = %self.order.id,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            )
        });
        self.tasks.push(tokio::spawn(tracing::Instrument::instrument(f, span)));
    }
}

/// The payment provider's answer an input records, for `usher_payments_total`.
fn payment_outcome(input: &OrderInput) -> Option<&'static str> {
    Some(match input {
        OrderInput::Authorized { .. } => "authorized",
        OrderInput::Declined { .. } => "declined",
        OrderInput::ProviderTimedOut => "timed_out",
        OrderInput::Captured => "captured",
        OrderInput::Refunded => "refunded",
        _ => return None,
    })
}

mod render_queue;
mod steps;
mod supervisor;
mod text;
mod vault;
mod writer;

pub use render_queue::{RenderQueue, RenderSlot};
use steps::card_of;
pub use steps::write_atomically;
pub use supervisor::{OrderSupervisor, Sagas, SupervisorMsg, SupervisorState};
pub use text::{order_doc, order_number};
pub use vault::CardVault;
pub use writer::{OrderWriter, PendingWrite, WriterStats};
