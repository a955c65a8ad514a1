//! An order and its saga as a deterministic state machine.
//!
//! `Order::apply(input, now)` moves the order: it either returns what
//! happened (domain events for the outbox, an email to queue) with the order
//! already changed, or an `OrderReject` with the order untouched. The saga
//! actor does the IO its `step` asks for (call the payment provider, confirm
//! holds at the event actor, render the PDF, ...), feeds the result back as
//! an input and persists the order after every transition. A crash between
//! two transitions resumes at the persisted step; every step's IO is keyed
//! so that doing it twice has the effect of doing it once.
//!
//! ```text
//!  AwaitPayment ──Pay──▶ Authorize ──Authorized──▶ Confirm ──Confirmed──▶ Capture ──Captured──▶ Issue ─▶ Render ─▶ Notify ─▶ Done
//!     │  hold deadline        │ timeout ▶ QueryStatus        │ holds gone (expired, released, event cancelled)        (fulfilled)
//!     ▼                       │ Declined                     ▼
//!   Done (expired)            ▼                            Refund ──Refunded──▶ Done (refunded)
//!     Cancel ─▶ Release ◀─────┘ ──Released──▶ Done (payment failed / cancelled)
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::ids::{CustomerId, EventId, HoldId, InvalidInput, Millis, OrderId, PaymentId, SeatIdx, TicketId};
use crate::limits;
use crate::money::Money;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Fulfilled,
    Cancelled,
    Expired,
    PaymentFailed,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::PendingPayment,
        OrderStatus::Paid,
        OrderStatus::Fulfilled,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::PaymentFailed,
        OrderStatus::Refunded,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::PaymentFailed => "payment_failed",
            OrderStatus::Refunded => "refunded",
        }
    }
    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Where the saga stands: what it must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Waiting for the customer to pay, until the first hold expires.
    AwaitPayment,
    /// An authorization was sent to the provider; waiting for its answer
    /// until `deadline`.
    Authorize,
    /// The provider did not answer in time: ask it for the attempt's status.
    QueryStatus,
    /// Authorized: sell the held seats through the event actor.
    Confirm,
    /// Seats sold: take the money.
    Capture,
    /// Paid: write one ticket per seat.
    Issue,
    /// Render the order's PDF.
    Render,
    /// Queue the confirmation email and wait for its delivery.
    Notify,
    /// Compensation: give the held seats back.
    Release,
    /// Compensation: void the authorization or refund the capture.
    Refund,
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::AwaitPayment => "await_payment",
            Step::Authorize => "authorize",
            Step::QueryStatus => "query_status",
            Step::Confirm => "confirm",
            Step::Capture => "capture",
            Step::Issue => "issue",
            Step::Render => "render",
            Step::Notify => "notify",
            Step::Release => "release",
            Step::Refund => "refund",
            Step::Done => "done",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Sent to the provider, no answer yet.
    Pending,
    Authorized,
    Captured,
    Declined,
    /// Voided before capture or refunded after.
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

/// One payment attempt. Its id is also the provider-side idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub amount: Money,
    pub card_last4: String,
    pub status: PaymentStatus,
    pub provider_ref: Option<String>,
    pub reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub hold_id: HoldId,
    pub seat: SeatIdx,
    pub price: Money,
}

/// Why a closed-down order ended the way it did, kept for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub event_id: EventId,
    pub customer: CustomerId,
    /// Where the tickets and notices go.
    pub email: String,
    pub holds: Vec<HoldId>,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub step: Step,
    /// The earliest expiry of the order's holds: pay before it.
    pub pay_by: Millis,
    /// When the current step gives up waiting (the provider's answer).
    pub deadline: Option<Millis>,
    pub payments: Vec<Payment>,
    /// Tickets issued for this order, in seat order.
    pub tickets: Vec<TicketId>,
    /// Asked to cancel while a payment was in flight; honoured once it settles.
    pub cancel_requested: bool,
    /// Status to take when the running compensation ends.
    pub ends_as: Option<OrderStatus>,
    pub note: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderInput {
    // -- from the customer
    Pay {
        payment_id: PaymentId,
        card_last4: String,
        timeout_ms: u64,
    },
    Cancel,
    // -- from timers
    PayDeadlinePassed,
    ProviderTimedOut,
    // -- from the provider
    Authorized {
        provider_ref: String,
    },
    Declined {
        reason: String,
    },
    /// The status query says the provider never received the attempt.
    ProviderNeverSaw {
        timeout_ms: u64,
    },
    Captured,
    Refunded,
    // -- from the event actor
    Confirmed,
    HoldsGone {
        reason: String,
    },
    Released,
    EventCancelled,
    // -- from fulfillment and notification
    TicketsIssued {
        tickets: Vec<TicketId>,
    },
    Rendered,
    Delivered,
}

/// Refusals of customer inputs, closed and ordered by precedence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderReject {
    /// Pay or cancel on an order that has ended (or is past paying).
    OrderClosed { status: OrderStatus },
    /// The hold ran out before a payment was asked for.
    PayDeadlinePassed { pay_by: Millis },
    /// A payment is already in flight or done.
    PaymentInProgress,
    /// Paid orders are refunded, not cancelled.
    AlreadyPaid,
}

impl fmt::Display for OrderReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderReject::OrderClosed { status } => write!(f, "the order is {}", status.as_str()),
            OrderReject::PayDeadlinePassed { pay_by } => write!(f, "the order's holds expired at {} ms", pay_by.0),
            OrderReject::PaymentInProgress => f.write_str("a payment for this order is already in progress"),
            OrderReject::AlreadyPaid => f.write_str("the order is paid; it can be refunded, not cancelled"),
        }
    }
}

/// Facts for the outbox, one per transition that matters outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    PaymentSucceeded { payment_id: PaymentId },
    PaymentFailed { payment_id: PaymentId, reason: String },
    OrderExpired,
    OrderCancelled,
    TicketsIssued { tickets: Vec<TicketId> },
    OrderRefunded { payment_id: Option<PaymentId> },
    OrderFulfilled,
}

/// Emails the order sends, at most one of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    Confirmation,
    Expired,
    PaymentFailed,
    Refunded,
    Cancelled,
}

impl MailKind {
    pub const ALL: [MailKind; 5] =
        [MailKind::Confirmation, MailKind::Expired, MailKind::PaymentFailed, MailKind::Refunded, MailKind::Cancelled];
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Confirmation => "confirmation",
            MailKind::Expired => "expired",
            MailKind::PaymentFailed => "payment_failed",
            MailKind::Refunded => "refunded",
            MailKind::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<MailKind> {
        MailKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What one transition produced, for the store to write with the order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    pub events: Vec<OrderEvent>,
    pub mail: Option<MailKind>,
}

impl Transition {
    fn with(events: Vec<OrderEvent>, mail: Option<MailKind>) -> Self {
        Transition { events, mail }
    }
}

/// The lines of an order made of `hold`, one per seat at the event's price,
/// and the hold's expiry (an order must be paid before its earliest hold
/// ends). The rules an order's hold must meet, decided here rather than at
/// the edge: it is `customer`'s (another's reads as not found:
/// `Reject::NotHoldOwner`), live now (`HoldExpired`, `HoldNotActive`) and of
/// an event that is not cancelled (`EventCancelled`). A seat the event has
/// no price for is not for sale (`UnknownSeats`).
pub fn order_lines(
    hold: &crate::inventory::Hold,
    config: &crate::inventory::EventConfig,
    layout: &crate::layout::Layout,
    customer: &CustomerId,
    now: Millis,
) -> Result<(Vec<OrderLine>, Millis), crate::inventory::Reject> {
    use crate::inventory::{HoldState, Reject};
    if &hold.customer != customer {
        return Err(Reject::NotHoldOwner { hold_id: hold.id });
    }
    match hold.state {
        HoldState::Active if hold.expires_at <= now => return Err(Reject::HoldExpired { hold_id: hold.id }),
        HoldState::Active => {}
        state => return Err(Reject::HoldNotActive { hold_id: hold.id, state }),
    }
    if config.status == crate::inventory::EventStatus::Cancelled {
        return Err(Reject::EventCancelled);
    }
    let lines = hold
        .seats
        .iter()
        .map(|&seat| match config.prices.get(layout.category_of(seat) as usize) {
            Some(&price) => Ok(OrderLine { hold_id: hold.id, seat, price }),
            None => Err(Reject::UnknownSeats { seats: vec![seat] }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((lines, hold.expires_at))
}

/// The most seats (and so ticket pages) one order of an event may have:
/// every seat its customer may hold there at once, `HOLDS_PER_CUSTOMER_MAX`
/// holds of the event's `hold_seats_max`, and never more than
/// `limits::ORDER_SEATS_MAX`.
pub fn order_seats_max(config: &crate::inventory::EventConfig) -> usize {
    (config.hold_seats_max as usize).saturating_mul(limits::HOLDS_PER_CUSTOMER_MAX as usize).min(limits::ORDER_SEATS_MAX)
}

/// Refuses an order of `seats` seats of an event with `config` when it is
/// larger than [`order_seats_max`] (field `hold_ids`). Checked where an
/// order's holds are gathered, before anything is written.
pub fn check_order_seats(seats: usize, config: &crate::inventory::EventConfig) -> Result<(), InvalidInput> {
    seats_within(seats, order_seats_max(config))
}

fn seats_within(seats: usize, max: usize) -> Result<(), InvalidInput> {
    if seats > max {
        return Err(InvalidInput::new(
            "hold_ids",
            format!("an order may have at most {max} seats of this event; these holds have {seats}"),
        ));
    }
    Ok(())
}

/// Why a payment was declined, as the sentence an order's note and its
/// email give people. `reason` is the provider's decline code (the codes of
/// the card networks as payment providers name them: `card_declined`,
/// `insufficient_funds`, …), which stays on the payment for machines; a
/// reason Usher wrote itself is already a sentence and is kept; an unknown
/// code is named, never dropped.
pub fn decline_sentence(reason: &str) -> String {
    match reason {
        "card_declined" | "generic_decline" | "do_not_honor" => "the card was declined".into(),
        "insufficient_funds" => "the card has insufficient funds".into(),
        "issuer_timeout" | "issuer_not_available" => "the card's bank did not answer in time".into(),
        "expired_card" => "the card has expired".into(),
        "incorrect_cvc" => "the card's security code is wrong".into(),
        "incorrect_number" | "invalid_number" => "the card number is wrong".into(),
        "lost_card" | "stolen_card" | "pickup_card" => "the card cannot be used".into(),
        "processing_error" => "the payment provider could not process the card".into(),
        r if r.contains(' ') => r.to_owned(),
        "" => "the payment was declined".into(),
        r => format!("the payment was declined (code {r})"),
    }
}

impl Order {
    /// A new order, pending payment until `pay_by` (its holds' earliest
    /// expiry). The total is the sum of the lines, in their one currency.
    ///
    /// Errors (field `hold_ids`): no lines; more than
    /// `limits::ORDER_SEATS_MAX` lines; lines in several currencies; a
    /// total above `limits::ORDER_TOTAL_MINOR_MAX` (or one that would not fit
    /// an `i64` at all, from prices stored before their ceiling existed).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: OrderId,
        event_id: EventId,
        customer: CustomerId,
        email: String,
        holds: Vec<HoldId>,
        lines: Vec<OrderLine>,
        pay_by: Millis,
        now: Millis,
    ) -> Result<Order, InvalidInput> {
        let Some(first) = lines.first() else {
            return Err(InvalidInput::new("hold_ids", "the holds have no seats"));
        };
        seats_within(lines.len(), limits::ORDER_SEATS_MAX)?;
        let currency = first.price.currency;
        if lines.iter().any(|l| l.price.currency != currency) {
            return Err(InvalidInput::new("hold_ids", "the seats are priced in several currencies"));
        }
        let too_large = || {
            InvalidInput::new(
                "hold_ids",
                format!("the order would cost more than one order may, {}", Money { minor: limits::ORDER_TOTAL_MINOR_MAX, currency }),
            )
        };
        let total = Money::checked_sum(currency, lines.iter().map(|l| l.price)).ok_or_else(too_large)?;
        if total.minor > limits::ORDER_TOTAL_MINOR_MAX {
            return Err(too_large());
        }
        Ok(Order {
            id,
            event_id,
            customer,
            email,
            holds,
            lines,
            total,
            status: OrderStatus::PendingPayment,
            step: Step::AwaitPayment,
            pay_by,
            deadline: None,
            payments: vec![],
            tickets: vec![],
            cancel_requested: false,
            ends_as: None,
            note: None,
            created_at: now,
            updated_at: now,
        })
    }

    pub fn seats(&self) -> Vec<SeatIdx> {
        self.lines.iter().map(|l| l.seat).collect()
    }

    pub fn current_payment(&self) -> Option<&Payment> {
        self.payments.last()
    }

    fn payment_mut(&mut self) -> &mut Payment {
        self.payments.last_mut().expect("a step past AwaitPayment has a payment")
    }

    /// The saga has work left (it is not parked at `Done`).
    pub fn is_live(&self) -> bool {
        self.step != Step::Done
    }

    /// Moves the order. Inputs that do not fit the step are stale (a late
    /// timer, a replayed answer) and change nothing: `Ok` with no events.
    pub fn apply(&mut self, input: OrderInput, now: Millis) -> Result<Transition, OrderReject> {
        let before = self.clone();
        let out = self.transition(input, now);
        match &out {
            Ok(_) => {
                if *self != before {
                    self.updated_at = now.max(self.updated_at);
                }
            }
            Err(_) => assert_eq!(*self, before, "a rejected input changed order {}", self.id),
        }
        if let Err(e) = self.check_invariants() {
            panic!("order invariant broken for order {}: {e}", self.id);
        }
        out
    }

    fn transition(&mut self, input: OrderInput, now: Millis) -> Result<Transition, OrderReject> {
        use OrderInput as I;
        match input {
            I::Pay { .. } | I::Cancel => self.on_customer(input, now),
            I::PayDeadlinePassed | I::ProviderTimedOut | I::ProviderNeverSaw { .. } => Ok(self.on_timer(input, now)),
            I::Authorized { .. } | I::Declined { .. } | I::Captured | I::Refunded => Ok(self.on_provider(input, now)),
            I::Confirmed | I::HoldsGone { .. } | I::Released | I::EventCancelled => Ok(self.on_event_actor(input, now)),
            I::TicketsIssued { .. } | I::Rendered | I::Delivered => Ok(self.on_fulfillment(input, now)),
        }
    }

    /// The customer: pay, or cancel.
    fn on_customer(&mut self, input: OrderInput, now: Millis) -> Result<Transition, OrderReject> {
        use OrderInput as I;
        Ok(match (self.step, input) {
            // A payment the order already has: a retry of the same request
            // (its answer was lost, perhaps while the event changed owner,
            // and the order as stored had not caught up): changes nothing.
            (_, I::Pay { payment_id, .. }) if self.payments.iter().any(|p| p.id == payment_id) => Transition::default(),
            (Step::AwaitPayment, I::Pay { payment_id, card_last4, timeout_ms }) => {
                if now >= self.pay_by {
                    return Err(OrderReject::PayDeadlinePassed { pay_by: self.pay_by });
                }
                self.payments.push(Payment {
                    id: payment_id,
                    amount: self.total,
                    card_last4,
                    status: PaymentStatus::Pending,
                    provider_ref: None,
                    reason: None,
                    created_at: now,
                    updated_at: now,
                });
                self.step = Step::Authorize;
                self.deadline = Some(now.plus_ms(timeout_ms));
                Transition::default()
            }
            (_, I::Pay { .. }) => return Err(self.closed_or(OrderReject::PaymentInProgress)),
            (Step::AwaitPayment, I::Cancel) => {
                self.step = Step::Release;
                self.ends_as = Some(OrderStatus::Cancelled);
                Transition::default()
            }
            (Step::Authorize | Step::QueryStatus, I::Cancel) => {
                self.cancel_requested = true;
                Transition::default()
            }
            (_, I::Cancel) => {
                if self.status == OrderStatus::PendingPayment {
                    // Already on its way out (releasing, refunding).
                    Transition::default()
                } else if matches!(self.status, OrderStatus::Paid | OrderStatus::Fulfilled) {
                    return Err(OrderReject::AlreadyPaid);
                } else {
                    return Err(OrderReject::OrderClosed { status: self.status });
                }
            }
            // Not the customer's: `transition` sends those elsewhere.
            _ => Transition::default(),
        })
    }

    /// Timers: the payment deadline, the provider's.
    fn on_timer(&mut self, input: OrderInput, now: Millis) -> Transition {
        use OrderInput as I;
        match (self.step, input) {
            (Step::AwaitPayment, I::PayDeadlinePassed) if now >= self.pay_by => {
                // The event actor expires the holds itself: nothing to release.
                self.finish(OrderStatus::Expired, now);
                Transition::with(vec![OrderEvent::OrderExpired], Some(MailKind::Expired))
            }
            (Step::Authorize, I::ProviderTimedOut) if self.deadline.is_some_and(|d| now >= d) => {
                self.step = Step::QueryStatus;
                self.deadline = None;
                Transition::default()
            }
            (Step::QueryStatus, I::ProviderNeverSaw { timeout_ms }) => {
                // The request was lost on the way: send it again, same key.
                self.step = Step::Authorize;
                self.deadline = Some(now.plus_ms(timeout_ms));
                Transition::default()
            }
            // Anything else is stale: a timer that fired after its step was
            // left, an answer already applied. Nothing changes.
            _ => Transition::default(),
        }
    }

    /// The payment provider's answers.
    fn on_provider(&mut self, input: OrderInput, now: Millis) -> Transition {
        use OrderInput as I;
        match (self.step, input) {
            (Step::Authorize | Step::QueryStatus, I::Authorized { provider_ref }) => {
                let p = self.payment_mut();
                p.status = PaymentStatus::Authorized;
                p.provider_ref = Some(provider_ref);
                p.updated_at = now;
                self.deadline = None;
                if self.cancel_requested {
                    self.step = Step::Refund;
                    self.ends_as = Some(OrderStatus::Cancelled);
                } else {
                    self.step = Step::Confirm;
                }
                Transition::default()
            }
            (Step::Authorize | Step::QueryStatus, I::Declined { reason }) => {
                let p = self.payment_mut();
                p.status = PaymentStatus::Declined;
                p.reason = Some(reason.clone());
                p.updated_at = now;
                let payment_id = p.id;
                self.deadline = None;
                self.step = Step::Release;
                self.ends_as = Some(if self.cancel_requested { OrderStatus::Cancelled } else { OrderStatus::PaymentFailed });
                self.note = Some(decline_sentence(&reason));
                Transition::with(vec![OrderEvent::PaymentFailed { payment_id, reason }], None)
            }
            (Step::Capture, I::Captured) => {
                let p = self.payment_mut();
                p.status = PaymentStatus::Captured;
                p.updated_at = now;
                let payment_id = p.id;
                self.status = OrderStatus::Paid;
                self.step = Step::Issue;
                Transition::with(vec![OrderEvent::PaymentSucceeded { payment_id }], None)
            }
            (Step::Refund, I::Refunded) => {
                let p = self.payment_mut();
                p.status = PaymentStatus::Refunded;
                p.updated_at = now;
                let payment_id = p.id;
                if self.ends_as == Some(OrderStatus::Cancelled) && self.status == OrderStatus::PendingPayment {
                    // Cancelled while the authorization was in flight: the
                    // authorization is voided, and the seats are still held.
                    self.step = Step::Release;
                    return Transition::default();
                }
                let ends_as = self.ends_as.take().unwrap_or(OrderStatus::Refunded);
                self.finish(ends_as, now);
                let (event, mail) = match ends_as {
                    OrderStatus::Cancelled => (OrderEvent::OrderCancelled, MailKind::Cancelled),
                    _ => (OrderEvent::OrderRefunded { payment_id: Some(payment_id) }, MailKind::Refunded),
                };
                Transition::with(vec![event], Some(mail))
            }
            // Anything else is stale: a timer that fired after its step was
            // left, an answer already applied. Nothing changes.
            _ => Transition::default(),
        }
    }

    /// The event actor's answers, and the event's cancellation.
    fn on_event_actor(&mut self, input: OrderInput, now: Millis) -> Transition {
        use OrderInput as I;
        match (self.step, input) {
            (Step::Confirm, I::Confirmed) => {
                self.step = Step::Capture;
                Transition::default()
            }
            (Step::Confirm, I::HoldsGone { reason }) => {
                // Authorized but the seats are gone (the hold expired while
                // the provider was deciding): never sell, give the money back.
                self.note = Some(reason);
                self.step = Step::Refund;
                self.ends_as = Some(OrderStatus::Refunded);
                Transition::default()
            }
            (Step::Release, I::Released) => {
                let ends_as = self.ends_as.take().unwrap_or(OrderStatus::Cancelled);
                self.finish(ends_as, now);
                match ends_as {
                    OrderStatus::PaymentFailed => Transition::with(vec![], Some(MailKind::PaymentFailed)),
                    _ => Transition::with(vec![OrderEvent::OrderCancelled], Some(MailKind::Cancelled)),
                }
            }
            (Step::AwaitPayment, I::EventCancelled) => {
                self.finish(OrderStatus::Cancelled, now);
                Transition::with(vec![OrderEvent::OrderCancelled], Some(MailKind::Cancelled))
            }
            (Step::Authorize | Step::QueryStatus, I::EventCancelled) => {
                self.cancel_requested = true;
                Transition::default()
            }
            (Step::Confirm | Step::Capture | Step::Issue | Step::Render | Step::Notify | Step::Done, I::EventCancelled)
                if matches!(self.status, OrderStatus::PendingPayment | OrderStatus::Paid | OrderStatus::Fulfilled)
                    && self.current_payment().is_some_and(|p| matches!(p.status, PaymentStatus::Authorized | PaymentStatus::Captured)) =>
            {
                self.step = Step::Refund;
                self.ends_as = Some(OrderStatus::Refunded);
                self.note = Some("the event was cancelled".into());
                Transition::default()
            }
            // Anything else is stale: a timer that fired after its step was
            // left, an answer already applied. Nothing changes.
            _ => Transition::default(),
        }
    }

    /// Fulfillment: tickets issued, rendered, emailed.
    fn on_fulfillment(&mut self, input: OrderInput, now: Millis) -> Transition {
        use OrderInput as I;
        match (self.step, input) {
            (Step::Issue, I::TicketsIssued { tickets }) => {
                assert_eq!(tickets.len(), self.lines.len(), "one ticket per seat");
                self.tickets = tickets.clone();
                self.step = Step::Render;
                Transition::with(vec![OrderEvent::TicketsIssued { tickets }], None)
            }
            (Step::Render, I::Rendered) => {
                self.step = Step::Notify;
                Transition::with(vec![], Some(MailKind::Confirmation))
            }
            (Step::Notify, I::Delivered) => {
                self.finish(OrderStatus::Fulfilled, now);
                Transition::with(vec![OrderEvent::OrderFulfilled], None)
            }
            // Anything else is stale: a timer that fired after its step was
            // left, an answer already applied. Nothing changes.
            _ => Transition::default(),
        }
    }

    fn closed_or(&self, otherwise: OrderReject) -> OrderReject {
        if self.status == OrderStatus::PendingPayment { otherwise } else { OrderReject::OrderClosed { status: self.status } }
    }

    fn finish(&mut self, status: OrderStatus, now: Millis) {
        self.status = status;
        self.step = Step::Done;
        self.deadline = None;
        self.updated_at = now.max(self.updated_at);
    }

    /// What must hold after every transition (and on load).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.lines.is_empty() || self.holds.is_empty() {
            return Err("O1 an order has seats and holds".into());
        }
        let sum = Money::checked_sum(self.total.currency, self.lines.iter().map(|l| l.price));
        if sum != Some(self.total) {
            return Err(format!("O2 total {} is not the sum of the lines {sum:?}", self.total));
        }
        let captured = self.payments.iter().any(|p| p.status == PaymentStatus::Captured);
        if matches!(self.status, OrderStatus::Paid | OrderStatus::Fulfilled) && !captured {
            return Err(format!("O3 order is {} without a captured payment", self.status.as_str()));
        }
        if self.status == OrderStatus::Fulfilled && self.tickets.len() != self.lines.len() {
            return Err("O4 a fulfilled order has one ticket per seat".into());
        }
        if self.step == Step::Done && self.payments.iter().any(|p| p.status == PaymentStatus::Authorized) {
            return Err("O5 a finished order keeps no authorization open".into());
        }
        if self.step == Step::Done && self.status == OrderStatus::PendingPayment {
            return Err("O6 a finished order is not pending payment".into());
        }
        if matches!(self.status, OrderStatus::Refunded | OrderStatus::Cancelled | OrderStatus::PaymentFailed)
            && self.step == Step::Done
            && self.payments.iter().any(|p| p.status == PaymentStatus::Captured)
        {
            return Err(format!("O7 order is {} but money is still captured", self.status.as_str()));
        }
        if self.payments.iter().filter(|p| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized)).count() > 1 {
            return Err("O8 at most one payment in flight".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use uuid::Uuid;

    const T0: Millis = Millis(1_000_000);

    fn order() -> Order {
        let eur = Currency::parse("EUR").unwrap();
        let hold = HoldId(Uuid::from_u128(5));
        let lines = vec![
            OrderLine { hold_id: hold, seat: SeatIdx(1), price: Money { minor: 5000, currency: eur } },
            OrderLine { hold_id: hold, seat: SeatIdx(2), price: Money { minor: 3000, currency: eur } },
        ];
        let (id, event) = (OrderId(Uuid::from_u128(1)), EventId(Uuid::from_u128(2)));
        let alice = CustomerId::parse("alice").unwrap();
        let o = Order::new(id, event, alice, "alice@example.com".into(), vec![hold], lines, Millis(T0.0 + 60_000), T0).unwrap();
        assert_eq!(o.total, Money { minor: 8000, currency: eur });
        o
    }

    #[test]
    fn decline_codes_become_sentences() {
        assert_eq!(decline_sentence("card_declined"), "the card was declined");
        assert_eq!(decline_sentence("insufficient_funds"), "the card has insufficient funds");
        assert_eq!(decline_sentence("issuer_timeout"), "the card's bank did not answer in time");
        assert_eq!(decline_sentence("weird_code"), "the payment was declined (code weird_code)");
        assert_eq!(decline_sentence("refunded by the provider"), "refunded by the provider");
        let mut o = order();
        o.apply(pay(), T0).unwrap();
        o.apply(OrderInput::Declined { reason: "insufficient_funds".into() }, T0).unwrap();
        assert_eq!(o.note.as_deref(), Some("the card has insufficient funds"));
        assert_eq!(o.payments[0].reason.as_deref(), Some("insufficient_funds"), "the code stays for machines");
    }

    #[test]
    fn totals_are_checked_never_wrapped() {
        let (id, event, alice) = (OrderId(Uuid::from_u128(1)), EventId(Uuid::from_u128(2)), CustomerId::parse("a").unwrap());
        let hold = HoldId(Uuid::from_u128(5));
        let make = |prices: &[(i64, &str)]| {
            let lines = prices
                .iter()
                .enumerate()
                .map(|(i, &(minor, c))| OrderLine {
                    hold_id: hold,
                    seat: SeatIdx(i as u32),
                    price: Money { minor, currency: Currency::parse(c).unwrap() },
                })
                .collect();
            Order::new(id, event, alice.clone(), "a@example.com".into(), vec![hold], lines, T0, T0)
        };
        // Two seats at 2^62 (a price stored before the ceiling) would wrap to
        // i64::MIN: refused, not charged.
        let e = make(&[(1 << 62, "EUR"), (1 << 62, "EUR")]).unwrap_err();
        assert_eq!(e.field, "hold_ids");
        assert_eq!(e.message, "the order would cost more than one order may, EUR 10,000,000,000.00");
        // Within i64 but above the order ceiling: refused the same way.
        let at_ceiling = crate::limits::PRICE_MINOR_MAX;
        assert!(make(&[(at_ceiling, "JPY"); 10]).is_ok());
        assert_eq!(
            make(&[(at_ceiling, "JPY"); 11]).unwrap_err().message,
            "the order would cost more than one order may, JPY 1,000,000,000,000"
        );
        assert!(make(&[(1, "EUR"), (1, "JPY")]).unwrap_err().message.contains("several currencies"));
        assert!(make(&[]).is_err());
    }

    #[test]
    fn an_order_is_at_most_every_seat_its_customer_may_hold() {
        let (id, event, alice) = (OrderId(Uuid::from_u128(1)), EventId(Uuid::from_u128(2)), CustomerId::parse("a").unwrap());
        let hold = HoldId(Uuid::from_u128(5));
        let eur = Currency::parse("EUR").unwrap();
        let make = |seats: usize| {
            let lines =
                (0..seats as u32).map(|i| OrderLine { hold_id: hold, seat: SeatIdx(i), price: Money { minor: 100, currency: eur } });
            Order::new(id, event, alice.clone(), "a@example.com".into(), vec![hold], lines.collect(), T0, T0)
        };
        assert_eq!(limits::ORDER_SEATS_MAX, 800);
        assert_eq!(make(limits::ORDER_SEATS_MAX).unwrap().lines.len(), 800);
        let e = make(limits::ORDER_SEATS_MAX + 1).unwrap_err();
        assert_eq!((e.field, e.message.as_str()), ("hold_ids", "an order may have at most 800 seats of this event; these holds have 801"));

        // An event's own hold limit bounds its orders further: 8 holds of 6.
        let layout = crate::Layout::build(&crate::grid_venue("v", 1, 1, 1)).unwrap();
        let mut config = crate::inventory::EventConfig { hold_seats_max: 6, ..crate::tests::config(&layout) };
        assert_eq!(order_seats_max(&config), 48);
        assert_eq!(check_order_seats(48, &config), Ok(()));
        assert_eq!(
            check_order_seats(49, &config).unwrap_err().message,
            "an order may have at most 48 seats of this event; these holds have 49"
        );
        config.hold_seats_max = limits::HOLD_SEATS_MAX;
        assert_eq!(order_seats_max(&config), limits::ORDER_SEATS_MAX);
    }

    fn pay() -> OrderInput {
        OrderInput::Pay { payment_id: PaymentId(Uuid::from_u128(7)), card_last4: "4242".into(), timeout_ms: 10_000 }
    }

    #[test]
    fn happy_path_ends_fulfilled_with_one_email() {
        let mut o = order();
        o.apply(pay(), T0).unwrap();
        assert_eq!(o.step, Step::Authorize);
        // Its retry changes nothing.
        assert_eq!(o.apply(pay(), T0).unwrap(), Transition::default());
        assert_eq!((o.payments.len(), o.step), (1, Step::Authorize));
        o.apply(OrderInput::Authorized { provider_ref: "p1".into() }, T0).unwrap();
        o.apply(OrderInput::Confirmed, T0).unwrap();
        let t = o.apply(OrderInput::Captured, T0).unwrap();
        assert_eq!(o.status, OrderStatus::Paid);
        assert!(matches!(t.events[..], [OrderEvent::PaymentSucceeded { .. }]));
        let tickets = vec![TicketId(Uuid::from_u128(11)), TicketId(Uuid::from_u128(12))];
        o.apply(OrderInput::TicketsIssued { tickets }, T0).unwrap();
        assert_eq!(o.apply(OrderInput::Rendered, T0).unwrap().mail, Some(MailKind::Confirmation));
        // A replayed answer is stale and changes nothing.
        assert_eq!(o.apply(OrderInput::Captured, T0).unwrap(), Transition::default());
        o.apply(OrderInput::Delivered, T0).unwrap();
        assert_eq!((o.status, o.step), (OrderStatus::Fulfilled, Step::Done));
    }

    #[test]
    fn a_decline_releases_the_seats_and_fails_the_order() {
        let mut o = order();
        o.apply(pay(), T0).unwrap();
        let t = o.apply(OrderInput::Declined { reason: "card_declined".into() }, T0).unwrap();
        assert!(matches!(t.events[..], [OrderEvent::PaymentFailed { .. }]));
        assert_eq!(o.step, Step::Release);
        let t = o.apply(OrderInput::Released, T0).unwrap();
        assert_eq!((o.status, t.mail), (OrderStatus::PaymentFailed, Some(MailKind::PaymentFailed)));
        let another = OrderInput::Pay { payment_id: PaymentId(Uuid::from_u128(8)), card_last4: "4242".into(), timeout_ms: 10_000 };
        assert_eq!(o.apply(another, T0).unwrap_err(), OrderReject::OrderClosed { status: OrderStatus::PaymentFailed });
        // The same payment again is its retry: the order as it is.
        assert_eq!(o.apply(pay(), T0).unwrap(), Transition::default());
    }

    #[test]
    fn authorized_after_the_hold_expired_is_refunded_never_sold() {
        let mut o = order();
        o.apply(pay(), T0).unwrap();
        o.apply(OrderInput::Authorized { provider_ref: "p1".into() }, T0).unwrap();
        o.apply(OrderInput::HoldsGone { reason: "hold expired".into() }, T0).unwrap();
        assert_eq!(o.step, Step::Refund);
        let t = o.apply(OrderInput::Refunded, T0).unwrap();
        assert_eq!((o.status, t.mail), (OrderStatus::Refunded, Some(MailKind::Refunded)));
        assert_eq!(o.payments[0].status, PaymentStatus::Refunded);
    }

    #[test]
    fn an_unanswered_provider_is_asked_for_the_status() {
        let mut o = order();
        o.apply(pay(), T0).unwrap();
        // Too early: stale.
        o.apply(OrderInput::ProviderTimedOut, T0).unwrap();
        assert_eq!(o.step, Step::Authorize);
        o.apply(OrderInput::ProviderTimedOut, Millis(T0.0 + 10_000)).unwrap();
        assert_eq!(o.step, Step::QueryStatus);
        o.apply(OrderInput::Declined { reason: "no answer from the issuer".into() }, Millis(T0.0 + 10_001)).unwrap();
        assert_eq!(o.step, Step::Release);
    }

    #[test]
    fn pay_after_the_deadline_and_expiry() {
        let mut o = order();
        assert_eq!(o.apply(pay(), o.pay_by).unwrap_err(), OrderReject::PayDeadlinePassed { pay_by: o.pay_by });
        o.apply(OrderInput::PayDeadlinePassed, Millis(T0.0 + 1)).unwrap();
        assert_eq!(o.step, Step::AwaitPayment, "a timer that fires early changes nothing");
        let t = o.apply(OrderInput::PayDeadlinePassed, o.pay_by).unwrap();
        assert_eq!((o.status, t.mail), (OrderStatus::Expired, Some(MailKind::Expired)));
    }

    #[test]
    fn cancel_during_payment_waits_and_then_refunds() {
        let mut o = order();
        o.apply(pay(), T0).unwrap();
        o.apply(OrderInput::Cancel, T0).unwrap();
        o.apply(OrderInput::Authorized { provider_ref: "p".into() }, T0).unwrap();
        assert_eq!(o.step, Step::Refund);
        o.apply(OrderInput::Refunded, T0).unwrap();
        assert_eq!(o.step, Step::Release, "the voided order still gives its held seats back");
        assert_eq!(o.payments[0].status, PaymentStatus::Refunded);
        let t = o.apply(OrderInput::Released, T0).unwrap();
        assert_eq!((o.status, t.mail), (OrderStatus::Cancelled, Some(MailKind::Cancelled)));
        assert!(matches!(t.events[..], [OrderEvent::OrderCancelled]));
    }

    #[test]
    fn event_cancellation_refunds_a_fulfilled_order() {
        let mut o = order();
        for i in [
            pay(),
            OrderInput::Authorized { provider_ref: "p".into() },
            OrderInput::Confirmed,
            OrderInput::Captured,
            OrderInput::TicketsIssued { tickets: vec![TicketId(Uuid::from_u128(1)), TicketId(Uuid::from_u128(2))] },
            OrderInput::Rendered,
            OrderInput::Delivered,
        ] {
            o.apply(i, T0).unwrap();
        }
        assert_eq!(o.apply(OrderInput::Cancel, T0).unwrap_err(), OrderReject::AlreadyPaid);
        o.apply(OrderInput::EventCancelled, T0).unwrap();
        assert_eq!(o.step, Step::Refund);
        let t = o.apply(OrderInput::Refunded, T0).unwrap();
        assert_eq!((o.status, t.mail), (OrderStatus::Refunded, Some(MailKind::Refunded)));
        // A second cancellation finds nothing to refund.
        assert_eq!(o.apply(OrderInput::EventCancelled, T0).unwrap(), Transition::default());
    }
}
