//! An in-memory `OrderStore` with the semantics of the SQL one
//! (`adapters/src/orders.rs`), fault injection, and a log of every write a
//! saga asked for, so that a test can assert the path the saga took.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, MutexGuard};

use usher_actors::{
    BoxFuture, Created, Epoch, MailState, OrderCreated, OrderFilter, OrderStore, OrderWrite, QueuedMail, ScanRecord, StoreError,
    StoredOrder, TicketRecord, TicketStatus,
};
use usher_engine::{
    EventId, HoldId, MailKind, Millis, Order, OrderEvent, OrderId, OrderInput, OrderStatus, PaymentId, Step, TicketId, Transition,
};

use super::{MemStore, take_one};

/// One write asked of the store: what the order was to become, and the answer.
#[derive(Debug, Clone)]
pub struct WriteLog {
    pub order_id: OrderId,
    /// The version the writer read.
    pub version: i64,
    pub step: Step,
    pub status: OrderStatus,
    pub events: Vec<OrderEvent>,
    pub mail: Option<MailKind>,
    pub new_tickets: usize,
    pub outcome: Result<(), StoreError>,
}

/// One row of the email queue (`notifications`).
#[derive(Debug, Clone)]
pub struct MailRow {
    pub recipient: String,
    pub state: MailState,
    pub attempts: u32,
    pub next_attempt_at: Millis,
    pub last_error: Option<String>,
    pub created_at: Millis,
}

#[derive(Default)]
struct Inner {
    orders: HashMap<OrderId, StoredOrder>,
    order_holds: HashMap<HoldId, OrderId>,
    /// `command_log`: key → (fingerprint, resource).
    commands: HashMap<String, (u64, String)>,
    payments: HashMap<PaymentId, OrderId>,
    tickets: BTreeMap<TicketId, TicketRecord>,
    scans: HashMap<TicketId, ScanRecord>,
    mail: HashMap<(OrderId, MailKind), MailRow>,
    /// The outbox: every order event committed, in commit order.
    outbox: Vec<(OrderId, OrderEvent)>,
    log: Vec<WriteLog>,
    /// The next writes that move an order to the step fail (a failed commit).
    step_faults: HashMap<Step, u32>,
}

impl Inner {
    fn write(&mut self, w: &OrderWrite<'_>) -> Result<(), StoreError> {
        let order = w.order;
        // The SQL update matches no row for a moved (or missing) order.
        let row = self.orders.get_mut(&order.id).filter(|r| r.version == w.version);
        let Some(row) = row else {
            return Err(StoreError::Conflict(format!("order {} moved past version {}", order.id, w.version)));
        };
        *row = StoredOrder { order: order.clone(), version: w.version + 1 };
        for p in &order.payments {
            self.payments.insert(p.id, order.id);
        }
        for t in w.new_tickets {
            // A retried step names the same ticket ids: nothing new.
            self.tickets.entry(t.id).or_insert_with(|| t.clone());
        }
        if order.status == OrderStatus::Refunded {
            for t in self.tickets.values_mut().filter(|t| t.order_id == order.id && t.status == TicketStatus::Valid) {
                t.status = TicketStatus::Refunded;
            }
        }
        self.outbox.extend(w.transition.events.iter().map(|e| (order.id, e.clone())));
        if let Some(kind) = w.transition.mail {
            self.mail.entry((order.id, kind)).or_insert_with(|| MailRow {
                recipient: order.email.clone(),
                state: MailState::Pending,
                attempts: 0,
                next_attempt_at: w.now,
                last_error: None,
                created_at: w.now,
            });
        }
        Ok(())
    }

    fn log(&mut self, w: &OrderWrite<'_>, outcome: Result<(), StoreError>) -> Result<(), StoreError> {
        self.log.push(WriteLog {
            order_id: w.order.id,
            version: w.version,
            step: w.order.step,
            status: w.order.status,
            events: w.transition.events.clone(),
            mail: w.transition.mail,
            new_tickets: w.new_tickets.len(),
            outcome: outcome.clone(),
        });
        outcome
    }

    fn mail_row(&mut self, order: OrderId, kind: MailKind) -> Option<&mut MailRow> {
        self.mail.get_mut(&(order, kind))
    }
}

/// An in-memory `OrderStore` with test knobs.
pub struct MemOrderStore {
    inner: Mutex<Inner>,
    /// The event store of the same "database": order writes are fenced by
    /// its events' epochs, as the SQL store reads `events.owner_epoch`.
    events: std::sync::Arc<MemStore>,
    fail_saves: AtomicU32,
    fail_listings: AtomicU32,
}

impl MemOrderStore {
    pub fn over(events: std::sync::Arc<MemStore>) -> std::sync::Arc<MemOrderStore> {
        std::sync::Arc::new(MemOrderStore {
            inner: Mutex::default(),
            events,
            fail_saves: AtomicU32::default(),
            fail_listings: AtomicU32::default(),
        })
    }

    /// `StoreError::Fenced` unless `epoch` is the event's current one.
    fn check_epoch(&self, event_id: EventId, epoch: Epoch) -> Result<(), StoreError> {
        if self.events.epoch(event_id) == epoch.0 { Ok(()) } else { Err(StoreError::Fenced { event_id, epoch }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listing(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        if take_one(&self.fail_listings) {
            return Err(StoreError::Unavailable("injected listing failure".into()));
        }
        Ok(self.lock())
    }

    // -- knobs

    /// The next `n` calls of `save_orders` fail every write with `Unavailable`.
    pub fn fail_next_saves(&self, n: u32) {
        self.fail_saves.store(n, std::sync::atomic::Ordering::Release);
    }
    /// The next `n` listings (`live_orders`, `open_orders_of_event`,
    /// `list_orders`) fail with `Unavailable`.
    pub fn fail_next_listings(&self, n: u32) {
        self.fail_listings.store(n, std::sync::atomic::Ordering::Release);
    }
    /// The next `n` calls of `save_orders` with a write that moves an order
    /// to `step` fail every write with `Unavailable`.
    pub fn fail_saves_moving_to(&self, step: Step, n: u32) {
        self.lock().step_faults.insert(step, n);
    }
    /// Another writer applies `input` to the stored order (version + 1),
    /// as a second saga for the same order would.
    pub fn write_elsewhere(&self, id: OrderId, input: OrderInput, now: Millis) -> Transition {
        let mut g = self.lock();
        let stored = g.orders[&id].clone();
        let mut order = stored.order;
        let t = order.apply(input, now).expect("the other writer's input applies");
        let epoch = Epoch(self.events.epoch(order.event_id));
        let w = OrderWrite {
            order: &order,
            epoch,
            version: stored.version,
            transition: &t,
            new_tickets: &[],
            seat_labels: &[],
            now,
            trace: None,
        };
        let r = g.write(&w);
        g.log(&w, r).expect("the other writer's write succeeds");
        t
    }

    // -- observations

    pub fn order(&self, id: OrderId) -> Option<StoredOrder> {
        self.lock().orders.get(&id).cloned()
    }
    /// Every write asked for `id` (the create first), with its answer.
    pub fn writes(&self, id: OrderId) -> Vec<WriteLog> {
        self.lock().log.iter().filter(|w| w.order_id == id).cloned().collect()
    }
    /// The steps the stored order went through, from its creation.
    pub fn steps(&self, id: OrderId) -> Vec<Step> {
        self.writes(id).into_iter().filter(|w| w.outcome.is_ok()).map(|w| w.step).collect()
    }
    /// The order's events in the outbox, in commit order.
    pub fn outbox(&self, id: OrderId) -> Vec<OrderEvent> {
        self.lock().outbox.iter().filter(|(o, _)| *o == id).map(|(_, e)| e.clone()).collect()
    }
    pub fn tickets(&self, id: OrderId) -> Vec<TicketRecord> {
        let mut v: Vec<TicketRecord> = self.lock().tickets.values().filter(|t| t.order_id == id).cloned().collect();
        v.sort_by_key(|t| t.seat);
        v
    }
    /// The order's queued email, by kind.
    pub fn mail(&self, id: OrderId) -> Vec<(MailKind, MailRow)> {
        let mut v: Vec<(MailKind, MailRow)> =
            self.lock().mail.iter().filter(|((o, _), _)| *o == id).map(|((_, k), r)| (*k, r.clone())).collect();
        v.sort_by_key(|(k, r)| (r.created_at, k.as_str()));
        v
    }
}

impl OrderStore for MemOrderStore {
    fn create_order<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        order: &'a Order,
        _seat_labels: &'a [String],
        epoch: Epoch,
    ) -> BoxFuture<'a, Result<OrderCreated, StoreError>> {
        Box::pin(async move {
            // Fencing goes first: a fenced create changes nothing.
            self.check_epoch(order.event_id, epoch)?;
            let mut g = self.lock();
            match g.commands.get(key) {
                Some((fp, id)) if *fp == fingerprint => {
                    return Ok(OrderCreated::Replayed(OrderId::parse(id).map_err(|e| StoreError::Corrupt(e.message))?));
                }
                Some(_) => return Ok(OrderCreated::KeyReused),
                None => {}
            }
            // A hold in another order rolls back the key and the order.
            if let Some(h) = order.holds.iter().find(|h| g.order_holds.contains_key(h)) {
                return Ok(OrderCreated::HoldInOrder { hold_id: *h, order_id: g.order_holds[h] });
            }
            if g.orders.contains_key(&order.id) {
                return Err(StoreError::Conflict(format!("order {} exists", order.id)));
            }
            g.commands.insert(key.to_owned(), (fingerprint, order.id.to_string()));
            g.order_holds.extend(order.holds.iter().map(|h| (*h, order.id)));
            g.orders.insert(order.id, StoredOrder { order: order.clone(), version: 1 });
            let w = OrderWrite {
                order,
                epoch,
                version: 0,
                transition: &Transition::default(),
                new_tickets: &[],
                seat_labels: &[],
                now: order.created_at,
                trace: None,
            };
            g.log(&w, Ok(()))?;
            Ok(OrderCreated::New)
        })
    }

    fn save_orders<'a>(&'a self, ws: &'a [OrderWrite<'a>]) -> BoxFuture<'a, Vec<Result<(), StoreError>>> {
        Box::pin(async move {
            let mut g = self.lock();
            let step_fault = ws.iter().any(|w| match g.step_faults.get_mut(&w.order.step) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            });
            if take_one(&self.fail_saves) || step_fault {
                // A failed commit fails every write of the batch.
                let e = StoreError::Unavailable("injected save failure".into());
                return ws.iter().map(|w| g.log(w, Err(e.clone()))).collect();
            }
            // Each write in its own savepoint: a conflict fails that write alone.
            ws.iter()
                .map(|w| {
                    // Fencing first: a fenced write changes nothing.
                    let r = self.check_epoch(w.order.event_id, w.epoch).and_then(|()| g.write(w));
                    g.log(w, r)
                })
                .collect()
        })
    }

    fn get_order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<StoredOrder>, StoreError>> {
        Box::pin(async move { Ok(self.order(id)) })
    }

    fn list_orders(&self, f: OrderFilter) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(async move {
            if f.customer.is_none() && f.event_id.is_none() {
                return Err(StoreError::NotFound("list orders needs a customer or an event".into()));
            }
            let g = self.listing()?;
            let mut v: Vec<Order> = g
                .orders
                .values()
                .map(|s| &s.order)
                .filter(|o| match &f.customer {
                    Some(c) => &o.customer == c,
                    None => Some(o.event_id) == f.event_id,
                })
                .filter(|o| f.before.is_none_or(|b| (o.created_at, o.id) < b))
                .cloned()
                .collect();
            v.sort_by_key(|o| std::cmp::Reverse((o.created_at, o.id)));
            v.truncate(f.limit as usize);
            Ok(v)
        })
    }

    fn live_orders(&self, event: Option<EventId>) -> BoxFuture<'_, Result<Vec<StoredOrder>, StoreError>> {
        Box::pin(async move {
            let mut v: Vec<StoredOrder> = self
                .listing()?
                .orders
                .values()
                .filter(|s| s.order.step != Step::Done && event.is_none_or(|e| s.order.event_id == e))
                .cloned()
                .collect();
            v.sort_by_key(|s| (s.order.created_at, s.order.id));
            Ok(v)
        })
    }

    fn open_orders_of_event(&self, event_id: EventId) -> BoxFuture<'_, Result<Vec<OrderId>, StoreError>> {
        Box::pin(async move {
            let open = [OrderStatus::PendingPayment, OrderStatus::Paid, OrderStatus::Fulfilled];
            let g = self.listing()?;
            Ok(g.orders.values().map(|s| &s.order).filter(|o| o.event_id == event_id && open.contains(&o.status)).map(|o| o.id).collect())
        })
    }

    fn find_payment(&self, id: PaymentId) -> BoxFuture<'_, Result<Option<OrderId>, StoreError>> {
        Box::pin(async move { Ok(self.lock().payments.get(&id).copied()) })
    }

    fn claim_command<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        resource: &'a str,
        _now: Millis,
    ) -> BoxFuture<'a, Result<Created<String>, StoreError>> {
        Box::pin(async move {
            let mut g = self.lock();
            Ok(match g.commands.get(key) {
                Some((fp, id)) if *fp == fingerprint => Created::Replayed(id.clone()),
                Some(_) => Created::KeyReused,
                None => {
                    g.commands.insert(key.to_owned(), (fingerprint, resource.to_owned()));
                    Created::New(resource.to_owned())
                }
            })
        })
    }

    fn lookup_command<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(u64, String)>, StoreError>> {
        Box::pin(async move { Ok(self.lock().commands.get(key).cloned()) })
    }

    fn tickets_of_order(&self, order: OrderId) -> BoxFuture<'_, Result<Vec<TicketRecord>, StoreError>> {
        Box::pin(async move { Ok(self.tickets(order)) })
    }

    fn get_ticket(&self, id: TicketId) -> BoxFuture<'_, Result<Option<TicketRecord>, StoreError>> {
        Box::pin(async move { Ok(self.lock().tickets.get(&id).cloned()) })
    }

    fn record_scan<'a>(
        &'a self,
        ticket: TicketId,
        gate: &'a str,
        key: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, Result<Option<ScanRecord>, StoreError>> {
        Box::pin(async move {
            let mut g = self.lock();
            if let Some(first) = g.scans.get(&ticket) {
                return Ok(Some(first.clone()));
            }
            g.scans.insert(ticket, ScanRecord { gate: gate.to_owned(), key: key.to_owned(), at: now });
            Ok(None)
        })
    }

    fn due_mail(&self, now: Millis, limit: u32) -> BoxFuture<'_, Result<Vec<QueuedMail>, StoreError>> {
        Box::pin(async move {
            let g = self.lock();
            let mut due: Vec<(Millis, QueuedMail)> = g
                .mail
                .iter()
                .filter(|(_, r)| r.state == MailState::Pending && r.next_attempt_at <= now)
                .map(|(&(order_id, kind), r)| {
                    (r.next_attempt_at, QueuedMail { order_id, kind, recipient: r.recipient.clone(), attempts: r.attempts })
                })
                .collect();
            due.sort_by_key(|(at, m)| (*at, m.order_id, m.kind.as_str()));
            Ok(due.into_iter().take(limit as usize).map(|(_, m)| m).collect())
        })
    }

    fn mail_sent(&self, order: OrderId, kind: MailKind, _now: Millis) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(r) = self.lock().mail_row(order, kind) {
                r.state = MailState::Sent;
                r.last_error = None;
                r.attempts += 1;
            }
            Ok(())
        })
    }

    fn mail_retry<'a>(&'a self, order: OrderId, kind: MailKind, next_at: Millis, error: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(r) = self.lock().mail_row(order, kind) {
                r.next_attempt_at = next_at;
                r.last_error = Some(error.to_owned());
                r.attempts += 1;
            }
            Ok(())
        })
    }

    fn mail_failed<'a>(&'a self, order: OrderId, kind: MailKind, error: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(r) = self.lock().mail_row(order, kind) {
                r.state = MailState::Failed;
                r.next_attempt_at = Millis(0);
                r.last_error = Some(error.to_owned());
                r.attempts += 1;
            }
            Ok(())
        })
    }

    fn mail_state(&self, order: OrderId, kind: MailKind) -> BoxFuture<'_, Result<Option<MailState>, StoreError>> {
        Box::pin(async move { Ok(self.lock().mail_row(order, kind).map(|r| r.state)) })
    }
    fn mail_backlog(&self) -> BoxFuture<'_, Result<usher_actors::Backlog, StoreError>> {
        Box::pin(async move {
            let inner = self.lock();
            let pending = inner.mail.values().filter(|r| r.state == MailState::Pending);
            let (rows, oldest_at) =
                pending.fold((0, None), |(n, o): (u64, Option<Millis>), r| (n + 1, Some(o.map_or(r.created_at, |o| o.min(r.created_at)))));
            Ok(usher_actors::Backlog { rows, oldest_at })
        })
    }
}
