//! Domain events → outbox rows: topic, key and protobuf payload.

use prost::Message;
use prost_types::Timestamp;
use usher_engine::{Event, EventId, Hold, Layout, Millis, SeatIdx};
use usher_proto::events as pb;

pub struct OutboxRow {
    pub message_id: String,
    pub topic: &'static str,
    pub aggregate_id: String,
    pub payload: Vec<u8>,
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
    OutboxRow { message_id, topic: topic(event), aggregate_id: event_id.to_string(), payload }
}
