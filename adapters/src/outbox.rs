//! Domain events → outbox rows: topic, key and protobuf payload.

use prost::Message;
use prost_types::Timestamp;
use usher_engine::{Event, EventId, Hold, Layout, Millis, Order, OrderEvent, SeatIdx};
use usher_proto::events as pb;

/// One domain event on its way to the stream. Its place in its event's
/// story (`event_seq`) is given when its transaction commits
/// ([`Commit::finish`](crate::commit)), not here.
pub struct OutboxRow {
    /// A UUID (hyphenated): the consumers' deduplication key, the
    /// `message-id` header and the payload envelope's `message_id`.
    pub message_id: String,
    /// One of [`TOPICS`].
    pub topic: &'static str,
    /// The event id: the Kafka message key, so one event's messages share a
    /// partition and keep their order.
    pub aggregate_id: String,
    /// Protobuf, the message type [`message_type`] names.
    pub payload: Vec<u8>,
    /// The W3C `traceparent` of the request that caused it (the
    /// `traceparent` Kafka header), when traced.
    pub traceparent: Option<String>,
}

/// The version of the payloads' schema (`usher.events.v1`) within its
/// package: raised when a message changes in a way old readers should know
/// of (fields added stay compatible and keep it). Sent as the
/// `schema-version` header.
pub const SCHEMA_VERSION: u32 = 1;

/// Every topic and the protobuf message (in `usher.events.v1`) its
/// payloads are, in the order a purchase meets them.
pub const TOPICS: &[(&str, &str)] = &[
    ("event-status-changed", "usher.events.v1.EventStatusChanged"),
    ("seats-blocked", "usher.events.v1.SeatsBlockChanged"),
    ("seats-unblocked", "usher.events.v1.SeatsBlockChanged"),
    ("reservation-created", "usher.events.v1.ReservationCreated"),
    ("reservation-released", "usher.events.v1.ReservationReleased"),
    ("reservation-expired", "usher.events.v1.ReservationExpired"),
    ("order-created", "usher.events.v1.OrderCreated"),
    ("payment-succeeded", "usher.events.v1.PaymentSucceeded"),
    ("payment-failed", "usher.events.v1.PaymentFailed"),
    ("seats-sold", "usher.events.v1.SeatsSold"),
    ("ticket-issued", "usher.events.v1.TicketIssued"),
    ("order-fulfilled", "usher.events.v1.OrderFulfilled"),
    ("order-expired", "usher.events.v1.OrderExpired"),
    ("order-cancelled", "usher.events.v1.OrderCancelled"),
    ("order-refunded", "usher.events.v1.OrderRefunded"),
    ("ticket-checked-in", "usher.events.v1.TicketCheckedIn"),
];

/// The full protobuf name of a topic's payloads (the `message-type`
/// header), or `None` for a topic Usher does not write.
pub fn message_type(topic: &str) -> Option<&'static str> {
    TOPICS.iter().find(|(t, _)| *t == topic).map(|(_, m)| *m)
}

pub fn timestamp(t: Millis) -> Timestamp {
    Timestamp { seconds: t.0.div_euclid(1000), nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32 }
}

fn seat_refs(layout: &Layout, seats: &[SeatIdx]) -> Vec<pb::SeatRef> {
    seats.iter().map(|&s| pb::SeatRef { seat_index: s.0, seat_id: layout.label(s) }).collect()
}

/// The topic each domain event goes to.
pub fn topic(event: &Event) -> &'static str {
    match event {
        Event::HoldPlaced { .. } => "reservation-created",
        Event::HoldReleased { .. } => "reservation-released",
        Event::HoldExpired { .. } => "reservation-expired",
        Event::SeatsSold { .. } => "seats-sold",
        Event::SeatsBlocked { .. } => "seats-blocked",
        Event::SeatsUnblocked { .. } => "seats-unblocked",
        Event::StatusChanged { .. } => "event-status-changed",
    }
}

pub fn encode(event_id: EventId, layout: &Layout, now: Millis, event: &Event) -> OutboxRow {
    let message_id = uuid::Uuid::new_v4().hyphenated().to_string();
    let envelope = Some(pb::Envelope { message_id: message_id.clone(), occurred_at: Some(timestamp(now)), event_id: event_id.to_string() });
    let hold_fields = |h: &Hold| (h.id.to_string(), h.customer.as_str().to_owned(), seat_refs(layout, &h.seats));
    let payload = match event {
        Event::HoldPlaced { hold } => {
            let (hold_id, customer_id, seats) = hold_fields(hold);
            pb::ReservationCreated { envelope, hold_id, customer_id, seats, expires_at: Some(timestamp(hold.expires_at)) }.encode_to_vec()
        }
        Event::HoldReleased { hold } => {
            let (hold_id, customer_id, seats) = hold_fields(hold);
            pb::ReservationReleased { envelope, hold_id, customer_id, seats }.encode_to_vec()
        }
        Event::HoldExpired { hold } => {
            let (hold_id, customer_id, seats) = hold_fields(hold);
            pb::ReservationExpired { envelope, hold_id, customer_id, seats, expired_at: Some(timestamp(now)) }.encode_to_vec()
        }
        Event::SeatsSold { hold } => {
            let (hold_id, customer_id, seats) = hold_fields(hold);
            pb::SeatsSold { envelope, hold_id, customer_id, seats }.encode_to_vec()
        }
        Event::SeatsBlocked { seats } => pb::SeatsBlockChanged { envelope, seats: seat_refs(layout, seats), blocked: true }.encode_to_vec(),
        Event::SeatsUnblocked { seats } => {
            pb::SeatsBlockChanged { envelope, seats: seat_refs(layout, seats), blocked: false }.encode_to_vec()
        }
        Event::StatusChanged { from, to } => {
            pb::EventStatusChanged { envelope, from: from.as_str().into(), to: to.as_str().into() }.encode_to_vec()
        }
    };
    OutboxRow { message_id, topic: topic(event), aggregate_id: event_id.to_string(), payload, traceparent: None }
}

fn order_ref(order: &Order, labels: &[String]) -> pb::OrderRef {
    pb::OrderRef {
        order_id: order.id.to_string(),
        customer_id: order.customer.as_str().to_owned(),
        hold_ids: order.holds.iter().map(|h| h.to_string()).collect(),
        seats: order_seats(order, labels),
        total_minor: order.total.minor,
        currency: order.total.currency.as_str().to_owned(),
    }
}

fn order_seats(order: &Order, labels: &[String]) -> Vec<pb::OrderSeat> {
    order
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| pb::OrderSeat {
            seat_index: l.seat.0,
            seat_id: labels.get(i).cloned().unwrap_or_default(),
            hold_id: l.hold_id.to_string(),
            price_minor: l.price.minor,
        })
        .collect()
}

/// An order's outbox rows are keyed by its event, like the event's own
/// messages, so a consumer sees one event's story in order.
fn order_row(order: &Order, topic: &'static str, now: Millis, make: impl FnOnce(Option<pb::Envelope>) -> Vec<u8>) -> OutboxRow {
    let message_id = uuid::Uuid::new_v4().hyphenated().to_string();
    let envelope =
        Some(pb::Envelope { message_id: message_id.clone(), occurred_at: Some(timestamp(now)), event_id: order.event_id.to_string() });
    OutboxRow { message_id, topic, aggregate_id: order.event_id.to_string(), payload: make(envelope), traceparent: None }
}

pub fn encode_order_created(order: &Order, labels: &[String], now: Millis) -> OutboxRow {
    order_row(order, "order-created", now, |envelope| {
        pb::OrderCreated { envelope, order: Some(order_ref(order, labels)), pay_by: Some(timestamp(order.pay_by)) }.encode_to_vec()
    })
}

/// The rows of one order event (a ticket-issued message per ticket).
pub fn encode_order_event(order: &Order, labels: &[String], now: Millis, event: &OrderEvent) -> Vec<OutboxRow> {
    let r = || Some(order_ref(order, labels));
    match event {
        OrderEvent::PaymentSucceeded { payment_id } => vec![order_row(order, "payment-succeeded", now, |envelope| {
            pb::PaymentSucceeded { envelope, order: r(), payment_id: payment_id.to_string() }.encode_to_vec()
        })],
        OrderEvent::PaymentFailed { payment_id, reason } => vec![order_row(order, "payment-failed", now, |envelope| {
            pb::PaymentFailed { envelope, order: r(), payment_id: payment_id.to_string(), reason: reason.clone() }.encode_to_vec()
        })],
        OrderEvent::OrderExpired => {
            vec![order_row(order, "order-expired", now, |envelope| pb::OrderExpired { envelope, order: r() }.encode_to_vec())]
        }
        OrderEvent::OrderCancelled => {
            vec![order_row(order, "order-cancelled", now, |envelope| pb::OrderCancelled { envelope, order: r() }.encode_to_vec())]
        }
        OrderEvent::OrderFulfilled => {
            vec![order_row(order, "order-fulfilled", now, |envelope| pb::OrderFulfilled { envelope, order: r() }.encode_to_vec())]
        }
        OrderEvent::OrderRefunded { payment_id } => vec![order_row(order, "order-refunded", now, |envelope| {
            pb::OrderRefunded {
                envelope,
                order: r(),
                payment_id: payment_id.map(|p| p.to_string()).unwrap_or_default(),
                reason: order.note.clone().unwrap_or_default(),
            }
            .encode_to_vec()
        })],
        OrderEvent::TicketsIssued { tickets } => {
            let seats = order_seats(order, labels);
            tickets
                .iter()
                .zip(seats)
                .map(|(t, seat)| {
                    order_row(order, "ticket-issued", now, |envelope| {
                        pb::TicketIssued { envelope, order_id: order.id.to_string(), ticket_id: t.to_string(), seat: Some(seat) }
                            .encode_to_vec()
                    })
                })
                .collect()
        }
    }
}

/// A payload decoded by its message type and shown in protobuf's field
/// names (Rust `Debug` form), for `usher stream tail`; `Err` when the type is
/// unknown or the bytes are not that message.
pub fn describe_payload(message_type: &str, payload: &[u8]) -> Result<String, String> {
    fn show<M: Message + Default + std::fmt::Debug>(b: &[u8]) -> Result<String, String> {
        M::decode(b).map(|m| format!("{m:?}")).map_err(|e| e.to_string())
    }
    match message_type.strip_prefix("usher.events.v1.").unwrap_or("") {
        "ReservationCreated" => show::<pb::ReservationCreated>(payload),
        "ReservationReleased" => show::<pb::ReservationReleased>(payload),
        "ReservationExpired" => show::<pb::ReservationExpired>(payload),
        "SeatsSold" => show::<pb::SeatsSold>(payload),
        "SeatsBlockChanged" => show::<pb::SeatsBlockChanged>(payload),
        "EventStatusChanged" => show::<pb::EventStatusChanged>(payload),
        "OrderCreated" => show::<pb::OrderCreated>(payload),
        "PaymentSucceeded" => show::<pb::PaymentSucceeded>(payload),
        "PaymentFailed" => show::<pb::PaymentFailed>(payload),
        "OrderExpired" => show::<pb::OrderExpired>(payload),
        "OrderCancelled" => show::<pb::OrderCancelled>(payload),
        "OrderRefunded" => show::<pb::OrderRefunded>(payload),
        "OrderFulfilled" => show::<pb::OrderFulfilled>(payload),
        "TicketIssued" => show::<pb::TicketIssued>(payload),
        "TicketCheckedIn" => show::<pb::TicketCheckedIn>(payload),
        _ => Err(format!("unknown message type {message_type:?}")),
    }
}

/// A ticket's first admission at `gate`.
pub fn encode_checked_in(ticket: &usher_actors::TicketRecord, gate: &str, now: Millis) -> OutboxRow {
    let message_id = uuid::Uuid::new_v4().hyphenated().to_string();
    let envelope =
        Some(pb::Envelope { message_id: message_id.clone(), occurred_at: Some(timestamp(now)), event_id: ticket.event_id.to_string() });
    let seat = pb::OrderSeat {
        seat_index: ticket.seat.0,
        seat_id: ticket.seat_label.clone(),
        hold_id: String::new(),
        price_minor: ticket.price.minor,
    };
    let payload = pb::TicketCheckedIn {
        envelope,
        order_id: ticket.order_id.to_string(),
        ticket_id: ticket.id.to_string(),
        seat: Some(seat),
        gate: gate.to_owned(),
        checked_in_at: Some(timestamp(now)),
    }
    .encode_to_vec();
    OutboxRow { message_id, topic: "ticket-checked-in", aggregate_id: ticket.event_id.to_string(), payload, traceparent: None }
}
