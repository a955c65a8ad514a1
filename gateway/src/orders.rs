//! `OrderingService`, `PaymentService`, `FulfillmentService` and
//! `CheckInService`. Inner methods return `ApiError`; the tonic impls wrap them.

use crate::limits::{GATE_BYTES_MAX, ORDER_HOLDS_MAX, ORDERS_PAGE_MAX, PAY_WAIT_MS_DEFAULT, PAY_WAIT_MS_MAX, PDF_CHUNK_BYTES};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tonic::{Request, Response, Status};
use usher_actors::{Created, OrderCreated, OrderFilter, StoredOrder, TicketRecord, TicketStatus};
use usher_engine::{
    Cap, CodeError, CustomerId, EventId, EventStatus, FingerprintTag, HoldId, Layout, Order, OrderId, OrderInput, OrderLine, OrderStatus,
    PaymentId, PaymentStatus, Principal, Step, TICKET_CODE_PREFIX, TicketId, fingerprint_bytes, verify_ticket,
};
use usher_proto::v1::{
    self as pb, check_in_service_server::CheckInService, fulfillment_service_server::FulfillmentService,
    ordering_service_server::OrderingService, payment_service_server::PaymentService,
};

use crate::auth::Caller;
use crate::convert::{self, check_email};
use crate::ctx::Ctx;
use crate::doors::{self, caller};
use crate::error::{ApiError, ErrorCode, Reason};
use crate::node_service::{Handlers, serve_here};

pub(crate) mod json;

#[derive(Clone)]
pub struct Orders {
    pub ctx: Ctx,
}

fn order_id(s: &str) -> Result<OrderId, ApiError> {
    Ok(OrderId::parse(s)?)
}

/// A new order's request, checked: its email address (printable on a
/// ticket), its holds (1 to `ORDER_HOLDS_MAX`, none twice) and its
/// fingerprint (customer, email and the holds in any order).
fn order_request(r: &pb::CreateOrderRequest) -> Result<(String, Vec<HoldId>, u64), ApiError> {
    let email = check_email(&r.email)?;
    // The ticket prints "customer <email>" as its holder.
    convert::check_printable("email", &email)?;
    if r.hold_ids.is_empty() || r.hold_ids.len() > ORDER_HOLDS_MAX {
        return Err(ApiError::invalid("hold_ids", format!("an order takes 1 to {ORDER_HOLDS_MAX} holds")));
    }
    let holds: Vec<HoldId> = r.hold_ids.iter().map(|h| convert::hold_id(h)).collect::<Result<_, _>>()?;
    if holds.iter().collect::<HashSet<_>>().len() != holds.len() {
        return Err(ApiError::invalid("hold_ids", "a hold is listed twice"));
    }
    let mut fp_bytes = format!("{}\n{}\n", r.customer_id, email).into_bytes();
    let mut sorted = holds.clone();
    sorted.sort();
    sorted.iter().for_each(|h| fp_bytes.extend_from_slice(h.0.as_bytes()));
    Ok((email, holds, fingerprint_bytes(FingerprintTag::CreateOrder, &fp_bytes)))
}

/// What a new order's holds gave: its event, the event's layout and the
/// epoch its owner holds here, when it must be paid by, whose it is, and
/// its lines.
struct Gathered {
    event_id: EventId,
    layout: std::sync::Arc<usher_engine::Layout>,
    epoch: usher_actors::Epoch,
    pay_by: usher_engine::Millis,
    customer: CustomerId,
    lines: Vec<OrderLine>,
}

pub fn order_status_pb(s: OrderStatus) -> pb::OrderStatus {
    match s {
        OrderStatus::PendingPayment => pb::OrderStatus::PendingPayment,
        OrderStatus::Paid => pb::OrderStatus::Paid,
        OrderStatus::Fulfilled => pb::OrderStatus::Fulfilled,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Expired => pb::OrderStatus::Expired,
        OrderStatus::PaymentFailed => pb::OrderStatus::PaymentFailed,
        OrderStatus::Refunded => pb::OrderStatus::Refunded,
    }
}

fn payment_pb(order: &Order, p: &usher_engine::Payment) -> pb::Payment {
    pb::Payment {
        payment_id: p.id.to_string(),
        order_id: order.id.to_string(),
        amount: Some(convert::money(p.amount)),
        card_last4: p.card_last4.clone(),
        status: match p.status {
            PaymentStatus::Pending => pb::PaymentStatus::Pending,
            PaymentStatus::Authorized => pb::PaymentStatus::Authorized,
            PaymentStatus::Captured => pb::PaymentStatus::Captured,
            PaymentStatus::Declined => pb::PaymentStatus::Declined,
            PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        } as i32,
        decline_reason: p.reason.clone().unwrap_or_default(),
        created_at: Some(convert::ts(p.created_at)),
        updated_at: Some(convert::ts(p.updated_at)),
    }
}

pub fn order_pb(o: &Order, layout: &Layout) -> pb::Order {
    pb::Order {
        order_id: o.id.to_string(),
        order_number: usher_actors::saga::order_number(o.id),
        event_id: o.event_id.to_string(),
        customer_id: o.customer.as_str().to_owned(),
        email: o.email.clone(),
        hold_ids: o.holds.iter().map(|h| h.to_string()).collect(),
        lines: o
            .lines
            .iter()
            .map(|l| {
                let d = layout.describe(l.seat);
                pb::OrderLine {
                    section: d.section.to_owned(),
                    row: d.row.to_owned(),
                    number: d.number,
                    category: d.category_code.to_owned(),
                    seat_id: d.label,
                    price: Some(convert::money(l.price)),
                    hold_id: l.hold_id.to_string(),
                }
            })
            .collect(),
        total: Some(convert::money(o.total)),
        status: order_status_pb(o.status) as i32,
        step: o.step.as_str().to_owned(),
        pay_by: Some(convert::ts(o.pay_by)),
        payments: o.payments.iter().map(|p| payment_pb(o, p)).collect(),
        ticket_ids: o.tickets.iter().map(|t| t.to_string()).collect(),
        note: o.note.clone().unwrap_or_default(),
        created_at: Some(convert::ts(o.created_at)),
        updated_at: Some(convert::ts(o.updated_at)),
    }
}

/// An order as this caller reads it: a partner sees its own reference for
/// the customer, not the namespaced id.
fn order_for(c: &Caller, o: &Order, layout: &Layout) -> pb::Order {
    let mut pb = order_pb(o, layout);
    pb.customer_id = c.principal.customer_ref_of(&o.customer).to_owned();
    pb
}

fn ticket_pb(t: &TicketRecord) -> pb::Ticket {
    pb::Ticket {
        ticket_id: t.id.to_string(),
        order_id: t.order_id.to_string(),
        event_id: t.event_id.to_string(),
        seat_id: t.seat_label.clone(),
        price: Some(convert::money(t.price)),
        code: t.code.clone(),
        status: match t.status {
            TicketStatus::Valid => pb::TicketStatus::Valid,
            TicketStatus::Refunded => pb::TicketStatus::Refunded,
        } as i32,
        issued_at: Some(convert::ts(t.issued_at)),
    }
}

/// The payment has an answer: taken (and the order paid), declined or given back.
fn settled(o: &Order, payment: PaymentId) -> bool {
    match o.payments.iter().find(|p| p.id == payment) {
        None => false,
        Some(p) => match p.status {
            PaymentStatus::Captured => o.status != OrderStatus::PendingPayment,
            PaymentStatus::Declined | PaymentStatus::Refunded => o.step != Step::Release || o.status != OrderStatus::PendingPayment,
            PaymentStatus::Pending | PaymentStatus::Authorized => false,
        },
    }
}

impl Orders {
    /// The calls this service serves for other nodes (`node_service`).
    pub fn serve_forwarded(&self, h: &mut Handlers) {
        serve_here!(h, self, &doors::ORDERING_CREATE_ORDER, |s, c, r: pb::CreateOrderRequest| s.create_order_here(&c, r));
        serve_here!(h, self, &doors::ORDERING_CANCEL_ORDER, |s, c, r: pb::CancelOrderRequest| s.cancel_order_here(&c, r));
        serve_here!(h, self, &doors::PAYMENT_PAY_ORDER, |s, c, r: pb::PayOrderRequest| s.pay_order_here(&c, r));
    }

    /// The event's layout, for seat labels: known on every node.
    async fn layout(&self, event: EventId) -> Result<Arc<Layout>, ApiError> {
        Ok(self.ctx.registry.facts(event).await?.layout)
    }

    async fn load(&self, id: OrderId) -> Result<StoredOrder, ApiError> {
        self.ctx
            .orders
            .get_order(id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, Reason::OrderNotFound, format!("order {id} not found")))
    }

    async fn reply(&self, c: &Caller, o: &Order) -> Result<pb::Order, ApiError> {
        Ok(order_for(c, o, &*self.layout(o.event_id).await?))
    }

    /// An order the caller may use `cap` on: its customer's own (or its
    /// partner's customer's), or any order of an organization whose role
    /// allows `cap`. Anyone else is told it does not exist.
    async fn order_as(&self, c: &Caller, id: OrderId, cap: Cap) -> Result<StoredOrder, ApiError> {
        let stored = self.load(id).await?;
        if !c.principal.acts_for(&stored.order.customer, stored.order.event_id) {
            let org = self.ctx.registry.facts(stored.order.event_id).await?.org;
            c.may(org, cap, Reason::OrderNotFound, format_args!("order {id}"))?;
        }
        Ok(stored)
    }

    pub(crate) async fn create_order(&self, c: &Caller, r: pb::CreateOrderRequest) -> Result<pb::Order, ApiError> {
        self.ctx.routed(c, &doors::ORDERING_CREATE_ORDER, r, |r| self.create_order_here(c, r)).await
    }

    pub(crate) async fn create_order_here(&self, c: &Caller, r: pb::CreateOrderRequest) -> Result<pb::Order, ApiError> {
        let key = c.key(&r.idempotency_key)?;
        let (email, holds, fingerprint) = order_request(&r)?;
        let scoped_key = format!("order:{}", key.as_str());
        // A retry gets the first answer, even once its holds have moved on.
        if let Some((fp, id)) = self.ctx.orders.lookup_command(&scoped_key).await? {
            if fp != fingerprint {
                return Err(key_reused());
            }
            return self.reply(c, &self.load(order_id(&id)?).await?.order).await;
        }
        let now = self.ctx.now();
        let Gathered { event_id, layout, epoch, pay_by, customer, lines } = self.gather_holds(c, &r.customer_id, &holds, now).await?;
        let order =
            Order::new(OrderId(uuid::Uuid::new_v4()), event_id, customer, email, holds, lines, pay_by, now).map_err(ApiError::from)?;
        order.check_invariants().map_err(|e| ApiError::new(ErrorCode::Internal, Reason::Internal, e))?;
        let labels: Vec<String> = order.lines.iter().map(|l| layout.label(l.seat)).collect();
        // Written as the event's owner: a stale epoch (the actor restarted
        // meanwhile) is refused, and the client retries with the same key.
        match self.ctx.orders.create_order(&scoped_key, fingerprint, &order, &labels, epoch).await? {
            OrderCreated::New => {
                tracing::info!(order_id = %order.id, event_id = %order.event_id, seats = order.lines.len(), "order created");
                self.ctx.sagas.started(StoredOrder { order: order.clone(), version: 1 });
                Ok(order_for(c, &order, &layout))
            }
            OrderCreated::Replayed(id) => self.reply(c, &self.load(id).await?.order).await,
            OrderCreated::KeyReused => Err(key_reused()),
            OrderCreated::HoldInOrder { hold_id, order_id } => Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                Reason::HoldInOrder,
                format!("hold {hold_id} already belongs to order {order_id}"),
            )),
        }
    }

    /// Reads every hold of a new order from its event's actor: each live,
    /// the caller's customer's (`customer_ref` for a partner or the box
    /// office), all of one event, within the event's seats per order.
    async fn gather_holds(
        &self,
        c: &Caller,
        customer_ref: &str,
        holds: &[HoldId],
        now: usher_engine::Millis,
    ) -> Result<Gathered, ApiError> {
        let mut customer: Option<CustomerId> = None;
        let mut event: Option<EventId> = None;
        let mut lines: Vec<OrderLine> = Vec::new();
        let mut pay_by = None;
        // The event's layout and the epoch its owner holds here.
        let mut owner = None;
        for &h in holds {
            let eid = self
                .ctx
                .store()
                .find_hold_event(h)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, Reason::HoldNotFound, format!("hold {h} not found")))?;
            if event.is_some_and(|e| e != eid) {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    Reason::HoldsOfSeveralEvents,
                    "hold_ids: an order's holds must all be of one event",
                ));
            }
            event = Some(eid);
            let handle = self.ctx.registry.event(eid).await?;
            let customer = match &customer {
                Some(cu) => cu.clone(),
                None => customer
                    .insert(
                        c.principal
                            .customer(handle.org, eid, customer_ref)
                            .map_err(|d| ApiError::denied(d, Reason::HoldNotFound, format_args!("hold {h}")))?,
                    )
                    .clone(),
            };
            let (hold, config) = handle
                .hold(h)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, Reason::HoldNotFound, format!("hold {h} not found")))?;
            let (hold_lines, expires_at) = usher_engine::order_lines(&hold, &config, &handle.layout, &customer, now)
                .map_err(|r| ApiError::from_reject(&r, &handle.layout))?;
            pay_by = Some(pay_by.map_or(expires_at, |p: usher_engine::Millis| p.min(expires_at)));
            lines.extend(hold_lines);
            usher_engine::check_order_seats(lines.len(), &config).map_err(ApiError::from)?;
            owner = Some((handle.layout.clone(), handle.epoch));
        }
        match (event, owner, pay_by, customer) {
            (Some(event_id), Some((layout, epoch)), Some(pay_by), Some(customer)) => {
                Ok(Gathered { event_id, layout, epoch, pay_by, customer, lines })
            }
            _ => Err(ApiError::invalid("hold_ids", "no seats")),
        }
    }

    pub(crate) async fn get_order(&self, c: &Caller, r: pb::GetOrderRequest) -> Result<pb::Order, ApiError> {
        let o = self.order_as(c, order_id(&r.order_id)?, Cap::ViewOrders).await?;
        self.reply(c, &o.order).await
    }

    pub(crate) async fn list_orders(&self, c: &Caller, r: pb::ListOrdersRequest) -> Result<pb::ListOrdersResponse, ApiError> {
        let mut f = OrderFilter { limit: r.page_size.clamp(1, ORDERS_PAGE_MAX), ..Default::default() };
        if r.page_size == 0 {
            f.limit = 50;
        }
        if r.event_id.is_empty() {
            // By customer: the caller's own orders, or a partner's customer's.
            let customer = c.principal.listed_customer(&r.customer_id).map_err(|d| ApiError::denied(d, Reason::NotFound, "customer"))?;
            f.customer = Some(customer);
        } else if r.customer_id.is_empty() {
            // By event: the organization's view.
            let e = convert::event_id(&r.event_id)?;
            let org = self.ctx.registry.facts(e).await?.org;
            c.may(org, Cap::ViewOrders, Reason::EventNotFound, format_args!("event {e}"))?;
            f.event_id = Some(e);
        } else {
            return Err(ApiError::invalid("customer_id", "give customer_id or event_id, not both"));
        }
        if !r.page_token.is_empty() {
            let bad = || ApiError::invalid("page_token", "not a token from a previous response");
            let (t, id) = r.page_token.split_once('_').ok_or_else(bad)?;
            f.before = Some((usher_engine::Millis(t.parse().map_err(|_| bad())?), OrderId::parse(id).map_err(|_| bad())?));
        }
        let limit = f.limit as usize;
        let orders = self.ctx.orders.list_orders(f).await?;
        let mut out = Vec::with_capacity(orders.len());
        let mut layouts: std::collections::HashMap<EventId, Arc<Layout>> = Default::default();
        // A partner key limited to some events lists its customers' orders
        // there only (the page token still follows every row read).
        for o in orders.iter().filter(|o| c.principal.may_sell_at(o.event_id)) {
            let l = match layouts.get(&o.event_id) {
                Some(l) => l.clone(),
                None => {
                    let l = self.layout(o.event_id).await?;
                    layouts.insert(o.event_id, l.clone());
                    l
                }
            };
            out.push(order_for(c, o, &l));
        }
        let next_page_token = match orders.last() {
            Some(o) if orders.len() == limit => format!("{}_{}", o.created_at.0, o.id),
            _ => String::new(),
        };
        Ok(pb::ListOrdersResponse { orders: out, next_page_token })
    }

    pub(crate) async fn cancel_order(&self, c: &Caller, r: pb::CancelOrderRequest) -> Result<pb::Order, ApiError> {
        self.ctx.routed(c, &doors::ORDERING_CANCEL_ORDER, r, |r| self.cancel_order_here(c, r)).await
    }

    pub(crate) async fn cancel_order_here(&self, c: &Caller, r: pb::CancelOrderRequest) -> Result<pb::Order, ApiError> {
        let key = c.key(&r.idempotency_key)?;
        let id = order_id(&r.order_id)?;
        let stored = self.order_as(c, id, Cap::ChangeOrders).await?;
        let fp = fingerprint_bytes(FingerprintTag::CancelOrder, r.customer_id.as_bytes());
        match self.ctx.orders.claim_command(&format!("cancel:{id}:{}", key.as_str()), fp, &id.to_string(), self.ctx.now()).await? {
            Created::KeyReused => return Err(key_reused()),
            // A retry: the order as it is now (the first answer's effect stands).
            Created::Replayed(_) => {
                if matches!(stored.order.status, OrderStatus::Cancelled)
                    || stored.order.cancel_requested
                    || stored.order.step == Step::Release
                {
                    return self.reply(c, &stored.order).await;
                }
            }
            Created::New(_) => {}
        }
        let o = self.ctx.sagas.input(id, OrderInput::Cancel).await?;
        self.reply(c, &o).await
    }

    pub(crate) async fn pay_order(&self, c: &Caller, r: pb::PayOrderRequest) -> Result<pb::PayOrderResponse, ApiError> {
        self.ctx.routed(c, &doors::PAYMENT_PAY_ORDER, r, |r| self.pay_order_here(c, r)).await
    }

    pub(crate) async fn pay_order_here(&self, c: &Caller, r: pb::PayOrderRequest) -> Result<pb::PayOrderResponse, ApiError> {
        let key = c.key(&r.idempotency_key)?;
        let id = order_id(&r.order_id)?;
        let card = usher_adapters::payment::parse_card_number(&r.card_number)
            .ok_or_else(|| ApiError::invalid("card_number", "not a valid card number (12 to 19 digits, Luhn checked)"))?;
        let wait = Duration::from_millis(match u64::from(r.wait_ms) {
            0 => PAY_WAIT_MS_DEFAULT,
            w => w.min(PAY_WAIT_MS_MAX),
        });
        let stored = self.order_as(c, id, Cap::Sell).await?;
        let fp = fingerprint_bytes(FingerprintTag::PayOrder, card.as_bytes());
        let fresh = PaymentId(uuid::Uuid::new_v4());
        let payment =
            match self.ctx.orders.claim_command(&format!("pay:{id}:{}", key.as_str()), fp, &fresh.to_string(), self.ctx.now()).await? {
                Created::KeyReused => return Err(key_reused()),
                Created::New(p) | Created::Replayed(p) => PaymentId::parse(&p)?,
            };
        let last4 = card[card.len() - 4..].to_owned();
        let mut order = stored.order;
        if !order.payments.iter().any(|p| p.id == payment) {
            // First time this key reaches the saga (or a retry of a refused
            // pay, which is refused the same way).
            self.ctx.sagas.deps.cards.put(payment.to_string(), card);
            let input = OrderInput::Pay { payment_id: payment, card_last4: last4, timeout_ms: self.ctx.sagas.deps.cfg.payment_timeout_ms };
            order = match self.ctx.sagas.input(id, input).await {
                Ok(o) => o,
                Err(e) => {
                    self.ctx.sagas.deps.cards.forget(&payment.to_string());
                    return Err(e.into());
                }
            };
        }
        // Wait for the answer, up to `wait`.
        if !settled(&order, payment)
            && let Some(mut rx) = self.ctx.sagas.watch(id).await
        {
            let _ = tokio::time::timeout(wait, rx.wait_for(|o| settled(o, payment))).await;
            order = rx.borrow().clone();
        }
        if !settled(&order, payment) {
            // The saga may have finished and stopped: read what is stored.
            order = self.load(id).await?.order;
        }
        let p = order.payments.iter().find(|p| p.id == payment).map(|p| payment_pb(&order, p));
        Ok(pb::PayOrderResponse { settled: settled(&order, payment), payment: p, order: Some(self.reply(c, &order).await?) })
    }

    pub(crate) async fn get_payment(&self, c: &Caller, r: pb::GetPaymentRequest) -> Result<pb::Payment, ApiError> {
        let pid = PaymentId::parse(&r.payment_id)?;
        let not_found = || ApiError::new(ErrorCode::NotFound, Reason::PaymentNotFound, format!("payment {pid} not found"));
        let oid = self.ctx.orders.find_payment(pid).await?.ok_or_else(not_found)?;
        let o =
            self.order_as(c, oid, Cap::ViewOrders).await.map_err(|e| if e.code == ErrorCode::NotFound { not_found() } else { e })?.order;
        o.payments.iter().find(|p| p.id == pid).map(|p| payment_pb(&o, p)).ok_or_else(not_found)
    }

    pub(crate) async fn list_tickets(&self, c: &Caller, r: pb::ListTicketsRequest) -> Result<pb::ListTicketsResponse, ApiError> {
        let id = order_id(&r.order_id)?;
        self.order_as(c, id, Cap::ViewOrders).await?;
        let tickets = self.ctx.orders.tickets_of_order(id).await?;
        Ok(pb::ListTicketsResponse { tickets: tickets.iter().map(ticket_pb).collect() })
    }

    pub(crate) async fn pdf(&self, c: &Caller, r: pb::DownloadTicketsRequest) -> Result<(String, Vec<u8>), ApiError> {
        let id = order_id(&r.order_id)?;
        let o = self.order_as(c, id, Cap::ViewOrders).await?.order;
        self.pdf_of(&o).await
    }

    /// The order an emailed link names, if its secret is right (anyone else
    /// is told it does not exist): (the order as its customer reads it,
    /// its tickets).
    pub(crate) async fn by_link(&self, id: &str, secret: &str) -> Result<(Order, pb::Order, Vec<pb::Ticket>), ApiError> {
        let id = order_id(id)?;
        if !self.ctx.links.verify(id, secret) {
            return Err(ApiError::new(ErrorCode::NotFound, Reason::OrderNotFound, format!("order {id} not found")));
        }
        let o = self.load(id).await?.order;
        let tickets = self.ctx.orders.tickets_of_order(id).await?;
        Ok((o.clone(), order_pb(&o, &*self.layout(o.event_id).await?), tickets.iter().map(ticket_pb).collect()))
    }

    pub(crate) async fn pdf_of(&self, o: &Order) -> Result<(String, Vec<u8>), ApiError> {
        let id = o.id;
        let path = self.ctx.sagas.deps.pdf_path(id);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok((format!("tickets-{}.pdf", usher_actors::saga::order_number(id)), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                Reason::TicketsNotReady,
                format!("the tickets of order {id} are not rendered yet (order is {}, step {})", o.status.as_str(), o.step.as_str()),
            )),
            Err(e) => Err(ApiError::new(ErrorCode::Unavailable, Reason::Unavailable, format!("reading the PDF: {e}"))),
        }
    }

    pub(crate) fn public_key(&self) -> pb::PublicKey {
        let vk = self.ctx.sagas.deps.signing_key.verifying_key();
        pb::PublicKey {
            algorithm: "Ed25519".into(),
            public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vk.as_bytes()),
            code_prefix: TICKET_CODE_PREFIX.into(),
        }
    }

    pub(crate) async fn scan(&self, c: &Caller, r: pb::ScanRequest) -> Result<pb::ScanResult, ApiError> {
        use pb::ScanVerdict as V;
        let key = c.key(&r.idempotency_key)?;
        let event_id = convert::event_id(&r.event_id)?;
        let org = self.ctx.registry.facts(event_id).await?.org;
        let event_not_found = || ApiError::new(ErrorCode::NotFound, Reason::EventNotFound, format!("event {event_id} not found"));
        let gate = match &c.principal {
            // A gate device scans at its own gate, for its own events.
            Principal::Gate(g) => {
                if g.org != org || !(g.events.is_empty() || g.events.contains(&event_id)) {
                    return Err(event_not_found());
                }
                if !r.gate.is_empty() && r.gate != g.gate {
                    return Err(ApiError::invalid("gate", format!("this device scans at gate {}", g.gate)));
                }
                g.gate.clone()
            }
            _ => {
                c.may(org, Cap::Scan, Reason::EventNotFound, format_args!("event {event_id}"))?;
                usher_engine::token("gate", &r.gate, GATE_BYTES_MAX)?
            }
        };
        let verdict = |v: V, message: String| pb::ScanResult { verdict: v as i32, message, ..Default::default() };
        let vk = self.ctx.sagas.deps.signing_key.verifying_key();
        let claims = match verify_ticket(&vk, &r.code) {
            Ok(c) => c,
            Err(e @ CodeError::BadSignature) => return Ok(verdict(V::InvalidSignature, e.to_string())),
            Err(e) => return Ok(verdict(V::Malformed, e.to_string())),
        };
        let ticket_id: TicketId = claims.ticket_id;
        if claims.event_id != event_id {
            return Ok(pb::ScanResult {
                ticket_id: ticket_id.to_string(),
                ..verdict(V::WrongEvent, format!("this ticket is for event {}, not {event_id}", claims.event_id))
            });
        }
        let Some(t) = self.ctx.orders.get_ticket(ticket_id).await? else {
            return Ok(verdict(V::UnknownTicket, format!("ticket {ticket_id} was never issued")));
        };
        let with_ticket = |mut s: pb::ScanResult| {
            s.ticket_id = t.id.to_string();
            s.seat_id = t.seat_label.clone();
            s
        };
        if t.status == TicketStatus::Refunded {
            return Ok(with_ticket(verdict(V::Refunded, "this ticket was refunded".into())));
        }
        let config = self.ctx.store().get_event(event_id).await?;
        if config.is_some_and(|c| c.status == EventStatus::Cancelled) {
            return Ok(with_ticket(verdict(V::EventCancelled, "the event is cancelled".into())));
        }
        let now = self.ctx.now();
        match self.ctx.orders.record_scan(t.id, &gate, key.as_str(), now).await? {
            None => Ok(with_ticket(verdict(V::Valid, "welcome".into()))),
            // The same gate retrying its own scan gets its first answer.
            Some(first) if first.key == key.as_str() && first.gate == gate => Ok(with_ticket(verdict(V::Valid, "welcome".into()))),
            Some(first) => Ok(with_ticket(pb::ScanResult {
                first_scanned_at: Some(convert::ts(first.at)),
                first_gate: first.gate.clone(),
                ..verdict(V::AlreadyUsed, format!("already admitted at gate {}", first.gate))
            })),
        }
    }
}

fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::AlreadyExists,
        Reason::IdempotencyKeyReused,
        "idempotency_key: this key was already used for a different request",
    )
}

#[tonic::async_trait]
impl OrderingService for Orders {
    async fn create_order(&self, req: Request<pb::CreateOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::create_order(self, &c, req.into_inner()).await?))
    }
    async fn get_order(&self, req: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::get_order(self, &c, req.into_inner()).await?))
    }
    async fn list_orders(&self, req: Request<pb::ListOrdersRequest>) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::list_orders(self, &c, req.into_inner()).await?))
    }
    async fn cancel_order(&self, req: Request<pb::CancelOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::cancel_order(self, &c, req.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl PaymentService for Orders {
    async fn pay_order(&self, req: Request<pb::PayOrderRequest>) -> Result<Response<pb::PayOrderResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::pay_order(self, &c, req.into_inner()).await?))
    }
    async fn get_payment(&self, req: Request<pb::GetPaymentRequest>) -> Result<Response<pb::Payment>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::get_payment(self, &c, req.into_inner()).await?))
    }
}

type PdfStream = tonic::codegen::BoxStream<pb::PdfChunk>;

#[tonic::async_trait]
impl FulfillmentService for Orders {
    async fn list_tickets(&self, req: Request<pb::ListTicketsRequest>) -> Result<Response<pb::ListTicketsResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::list_tickets(self, &c, req.into_inner()).await?))
    }
    async fn download_tickets(&self, req: Request<pb::DownloadTicketsRequest>) -> Result<Response<PdfStream>, Status> {
        let c = caller(&req)?;
        let (filename, bytes) = self.pdf(&c, req.into_inner()).await?;
        let chunks: Vec<Result<pb::PdfChunk, Status>> =
            bytes.chunks(PDF_CHUNK_BYTES).map(|c| Ok(pb::PdfChunk { data: c.to_vec(), filename: filename.clone() })).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn get_public_key(&self, _req: Request<pb::GetPublicKeyRequest>) -> Result<Response<pb::PublicKey>, Status> {
        Ok(Response::new(self.public_key()))
    }
}

#[tonic::async_trait]
impl CheckInService for Orders {
    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResult>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Orders::scan(self, &c, req.into_inner()).await?))
    }
}
