//! Wire types ↔ domain types. Inputs are parsed into newtypes here, at the edge.

use prost_types::Timestamp;
use usher_actors::EventHandle;
use usher_engine::{
    Counts, EventConfig, EventId, EventStatus, Hold, HoldId, HoldState, IdempotencyKey, LabelError, Layout, Millis, Money, SeatIdx,
    SeatState,
};
use usher_proto::v1 as pb;

use crate::error::{ApiError, ErrorCode, Reason};

pub fn ts(t: Millis) -> Timestamp {
    Timestamp { seconds: t.0.div_euclid(1000), nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn millis(field: &str, t: &Timestamp) -> Result<Millis, ApiError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(ApiError::invalid(field, "nanos must be in [0, 1e9)"));
    }
    t.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000)))
        .map(Millis)
        .ok_or_else(|| ApiError::invalid(field, "timestamp out of range"))
}

pub fn key(s: &str) -> Result<IdempotencyKey, ApiError> {
    Ok(IdempotencyKey::parse(s)?)
}

pub fn event_id(s: &str) -> Result<EventId, ApiError> {
    Ok(EventId::parse(s)?)
}

pub fn hold_id(s: &str) -> Result<HoldId, ApiError> {
    Ok(HoldId::parse(s)?)
}

pub fn status_to_pb(s: EventStatus) -> pb::EventStatus {
    match s {
        EventStatus::Draft => pb::EventStatus::Draft,
        EventStatus::OnSale => pb::EventStatus::OnSale,
        EventStatus::SalesClosed => pb::EventStatus::SalesClosed,
        EventStatus::Cancelled => pb::EventStatus::Cancelled,
    }
}

pub fn status_from_pb(v: i32) -> Result<Option<EventStatus>, ApiError> {
    match pb::EventStatus::try_from(v) {
        Ok(pb::EventStatus::Unspecified) => Ok(None),
        Ok(pb::EventStatus::Draft) => Ok(Some(EventStatus::Draft)),
        Ok(pb::EventStatus::OnSale) => Ok(Some(EventStatus::OnSale)),
        Ok(pb::EventStatus::SalesClosed) => Ok(Some(EventStatus::SalesClosed)),
        Ok(pb::EventStatus::Cancelled) => Ok(Some(EventStatus::Cancelled)),
        Err(_) => Err(ApiError::invalid("status", format!("unknown event status {v}"))),
    }
}

pub fn seat_status(s: SeatState) -> pb::SeatStatus {
    match s {
        SeatState::Available => pb::SeatStatus::Available,
        SeatState::Held => pb::SeatStatus::Held,
        SeatState::Sold => pb::SeatStatus::Sold,
        SeatState::Blocked => pb::SeatStatus::Blocked,
    }
}

fn hold_state(s: HoldState) -> pb::HoldState {
    match s {
        HoldState::Active => pb::HoldState::Active,
        HoldState::Released => pb::HoldState::Released,
        HoldState::Expired => pb::HoldState::Expired,
        HoldState::Confirmed => pb::HoldState::Confirmed,
    }
}

pub fn money(m: Money) -> pb::Money {
    pb::Money { amount_minor: m.minor, currency: m.currency.as_str().to_owned() }
}

pub fn counts(c: Counts) -> pb::SeatCounts {
    pb::SeatCounts { available: c.available, held: c.held, sold: c.sold, blocked: c.blocked }
}

/// What an event's message says of its venue: read from a built `Layout`
/// when the event's actor has one, or from the stored venue record when a
/// listing has none (a listing never builds a layout: that is per-seat work).
pub struct VenueView<'a> {
    pub name: &'a str,
    pub categories: &'a [usher_engine::CategorySpec],
    pub seat_count: u32,
}

impl<'a> From<&'a Layout> for VenueView<'a> {
    fn from(l: &'a Layout) -> VenueView<'a> {
        VenueView { name: &l.name, categories: &l.categories, seat_count: l.seat_count() as u32 }
    }
}

impl<'a> From<&'a usher_actors::VenueRecord> for VenueView<'a> {
    fn from(v: &'a usher_actors::VenueRecord) -> VenueView<'a> {
        VenueView { name: &v.spec.name, categories: &v.spec.categories, seat_count: v.seat_count }
    }
}

pub fn event(c: &EventConfig, venue: VenueView<'_>, n: Option<Counts>) -> pb::Event {
    pb::Event {
        event_id: c.id.to_string(),
        venue_id: c.venue_id.to_string(),
        name: c.name.clone(),
        description: c.description.clone(),
        starts_at: Some(ts(c.starts_at)),
        sales_start: Some(ts(c.sales_start)),
        sales_end: Some(ts(c.sales_end)),
        status: status_to_pb(c.status) as i32,
        hold_duration_seconds: (c.hold_duration_ms / 1000) as u32,
        hold_seats_max: c.hold_seats_max,
        currency: c.prices.first().map(|p| p.currency.as_str().to_owned()).unwrap_or_default(),
        prices: venue
            .categories
            .iter()
            .zip(&c.prices)
            .map(|(cat, p)| pb::CategoryPrice { category: cat.code.clone(), amount_minor: p.minor })
            .collect(),
        seat_count: venue.seat_count,
        counts: n.map(counts),
        venue_name: venue.name.to_owned(),
        org_id: c.org_id.to_string(),
        time_zone: c.time_zone.clone(),
    }
}

/// The event's seats as rows: a row's seats are consecutive indexes one
/// unit apart (`Layout::build`), so a row says everything of its seats.
pub fn seat_layout(c: &EventConfig, layout: &Layout) -> pb::SeatLayout {
    let rows = layout
        .rows
        .iter()
        .map(|r| {
            let first = layout.describe(SeatIdx(r.first_seat));
            pb::SeatRow {
                section: first.section.to_owned(),
                row: r.label.clone(),
                category: first.category_code.to_owned(),
                first_seat: r.first_seat,
                seats: r.len,
                first_number: first.number,
                x: first.x,
                y: first.y,
            }
        })
        .collect();
    pb::SeatLayout {
        event_id: c.id.to_string(),
        venue_id: c.venue_id.to_string(),
        venue_name: layout.name.clone(),
        seat_count: layout.seat_count() as u32,
        rows,
    }
}

/// Every seat's `SeatStatus` as a byte, in seat-index order: the compact
/// status vector of `GetSeatStatus`, `WatchSeats { compact }` and the JSON
/// status string (whose characters are these digits).
pub fn status_bytes(seats: &[SeatState]) -> Vec<u8> {
    seats.iter().map(|&s| seat_status(s) as u8).collect()
}

pub fn seat(layout: &Layout, c: &EventConfig, s: SeatIdx, state: SeatState) -> pb::Seat {
    let d = layout.describe(s);
    pb::Seat {
        price: Some(money(c.prices[d.category_index as usize])),
        section: d.section.to_owned(),
        row: d.row.to_owned(),
        number: d.number,
        x: d.x,
        y: d.y,
        category: d.category_code.to_owned(),
        seat_id: d.label,
        status: seat_status(state) as i32,
    }
}

pub fn hold(h: &Hold, c: &EventConfig, layout: &Layout) -> pb::Hold {
    let seats: Vec<pb::HeldSeat> = h
        .seats
        .iter()
        .map(|&s| {
            let d = layout.describe(s);
            pb::HeldSeat {
                price: Some(money(c.prices[d.category_index as usize])),
                section: d.section.to_owned(),
                row: d.row.to_owned(),
                number: d.number,
                category: d.category_code.to_owned(),
                seat_id: d.label,
            }
        })
        .collect();
    let currency = c.prices.first().map(|p| p.currency.as_str().to_owned()).unwrap_or_default();
    // Prices are at most `PRICE_MINOR_MAX` and a hold at most `HOLD_SEATS_MAX`
    // seats, so the sum fits; a price stored before the ceiling existed could
    // not, and then the total reads as the largest amount rather than wrapping
    // (an order of it is refused by `Order::new`).
    let total_minor = c
        .prices
        .first()
        .and_then(|p| Money::checked_sum(p.currency, h.seats.iter().map(|&s| c.prices[layout.category_of(s) as usize])))
        .map_or(i64::MAX, |m| m.minor);
    pb::Hold {
        hold_id: h.id.to_string(),
        event_id: c.id.to_string(),
        customer_id: h.customer.as_str().to_owned(),
        seats,
        total: Some(pb::Money { amount_minor: total_minor, currency }),
        state: hold_state(h.state) as i32,
        created_at: Some(ts(h.created_at)),
        expires_at: Some(ts(h.expires_at)),
        orphan_seats_left: h.orphan_seats_left,
    }
}

/// Resolves seat labels: malformed ones are INVALID_ARGUMENT, unknown ones
/// NOT_FOUND, each naming every offending seat.
pub fn seats(handle: &EventHandle, labels: &[String]) -> Result<Vec<SeatIdx>, ApiError> {
    let mut out = Vec::with_capacity(labels.len());
    let (mut malformed, mut unknown) = (Vec::new(), Vec::new());
    for l in labels {
        match handle.seat_index.resolve(&handle.layout, l) {
            Ok(s) => out.push(s),
            Err(LabelError::Malformed) => malformed.push(usher_engine::quoted(l)),
            Err(LabelError::Unknown) => unknown.push(l.clone()),
        }
    }
    if !malformed.is_empty() {
        return Err(ApiError::invalid(
            "seat_ids",
            format!("seat ids must look like SECTION-ROW-NUMBER (e.g. A-3-12): {}", malformed.join(", ")),
        ));
    }
    if !unknown.is_empty() {
        let mut e = ApiError::new(
            ErrorCode::NotFound,
            Reason::UnknownSeats,
            format!("seat_ids: no such seats in this venue: {}", unknown.join(", ")),
        );
        e.seats = unknown;
        return Err(e);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Shape checks at the edge, shared by the services that take the input.

/// A name printed on tickets (an event's, a venue's, a section's, a
/// category's, a holder's email address) must be drawable by the ticket
/// fonts (`usher_adapters::pdf::Glyphs`): a character none of them has
/// would print as an empty box, so it is refused here, naming it.
pub fn check_printable(field: &str, s: &str) -> Result<(), ApiError> {
    usher_adapters::pdf::Glyphs::embedded().covers(s).map_err(|c| {
        let shown = match usher_engine::char_shown(c) {
            code if code.starts_with("U+") => code,
            shown => format!("{shown} (U+{:04X})", c as u32),
        };
        ApiError::invalid(field, format!("{field} has the character {shown}, which no ticket font can draw; remove or replace it"))
    })
}

/// Shape checks done at the edge, before anything reaches an actor.
pub fn check_seat_list(ids: &[String]) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::invalid("seat_ids", "at least one seat is needed"));
    }
    if ids.len() > usher_engine::limits::SEATS_PER_EVENT_MAX {
        return Err(ApiError::invalid("seat_ids", "too many seats"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = ids.iter().find(|s| !seen.insert(s.as_str())) {
        let mut e = ApiError::invalid("seat_ids", format!("seat {d} is listed twice"));
        e.seats = vec![d.clone()];
        return Err(e);
    }
    Ok(())
}

/// A buyer's email address, checked with the parser the mailer uses
/// (`usher_adapters::mail::parse_address`), so an order whose tickets could
/// never be sent is never created.
pub fn check_email(s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    if s.len() > crate::limits::EMAIL_BYTES_MAX {
        return Err(ApiError::invalid("email", format!("an email address has at most {} bytes", crate::limits::EMAIL_BYTES_MAX)));
    }
    usher_adapters::mail::parse_address(s).map_err(|why| ApiError::invalid("email", why))
}
