//! One event's seat map as a deterministic state machine.
//!
//! `apply(cmd, now)` decides a command against the in-memory state and either
//! returns the domain events it caused (state already updated) or a `Reject`
//! (state untouched). Time is an argument; the engine never reads a clock.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Hash maps with a fast, per-process seeded hasher: SipHash showed up as the
/// top cost in the onsale profile, and keys (customer ids, idempotency keys)
/// come from clients, so the seed keeps collision attacks off.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use crate::ids::{CustomerId, EventId, HoldId, IdempotencyKey, InvalidInput, Millis, OrgId, SeatIdx, VenueId};
use crate::layout::{Layout, check_name};
use crate::limits;
use crate::money::Money;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Draft,
    OnSale,
    SalesClosed,
    Cancelled,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "draft",
            EventStatus::OnSale => "on_sale",
            EventStatus::SalesClosed => "sales_closed",
            EventStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<EventStatus> {
        [EventStatus::Draft, EventStatus::OnSale, EventStatus::SalesClosed, EventStatus::Cancelled].into_iter().find(|x| x.as_str() == s)
    }
    fn can_become(self, to: EventStatus) -> bool {
        use EventStatus::*;
        matches!(
            (self, to),
            (Draft, OnSale)
                | (Draft, Cancelled)
                | (OnSale, SalesClosed)
                | (SalesClosed, OnSale)
                | (OnSale, Cancelled)
                | (SalesClosed, Cancelled)
        )
    }
}

/// The catalog facts the inventory needs, checked by `EventConfig::validate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventConfig {
    pub id: EventId,
    /// The organization (tenant) that owns the event and its venue.
    pub org_id: OrgId,
    pub venue_id: VenueId,
    pub name: String,
    pub description: String,
    pub starts_at: Millis,
    pub sales_start: Millis,
    pub sales_end: Millis,
    pub status: EventStatus,
    pub hold_duration_ms: u64,
    pub hold_seats_max: u32,
    /// Price per venue category, index = category index. One currency.
    pub prices: Vec<Money>,
    /// The IANA time zone of the venue (copied when the event is created):
    /// instants are stored and compared as such, and shown to people in it.
    pub time_zone: String,
}

impl EventConfig {
    pub fn validate(&self, layout: &Layout) -> Result<(), InvalidInput> {
        check_name("name", &self.name)?;
        crate::layout::check_text("description", &self.description)?;
        crate::layout::check_time_zone("time_zone", &self.time_zone)?;
        if self.description.len() > limits::DESCRIPTION_BYTES_MAX {
            return Err(InvalidInput::new("description", format!("description is longer than {} bytes", limits::DESCRIPTION_BYTES_MAX)));
        }
        if self.sales_end <= self.sales_start {
            return Err(InvalidInput::new("sales_end", "sales_end must be after sales_start"));
        }
        if !(limits::HOLD_DURATION_MS_MIN..=limits::HOLD_DURATION_MS_MAX).contains(&self.hold_duration_ms) {
            return Err(InvalidInput::new(
                "hold_duration_ms",
                format!("hold_duration_ms must be between {} and {}", limits::HOLD_DURATION_MS_MIN, limits::HOLD_DURATION_MS_MAX),
            ));
        }
        if self.hold_seats_max == 0 || self.hold_seats_max > limits::HOLD_SEATS_MAX {
            return Err(InvalidInput::new("hold_seats_max", format!("hold_seats_max must be between 1 and {}", limits::HOLD_SEATS_MAX)));
        }
        if self.prices.len() != layout.categories.len() {
            return Err(InvalidInput::new(
                "prices",
                format!("one price per venue category is needed: {} categories, {} prices", layout.categories.len(), self.prices.len()),
            ));
        }
        for p in &self.prices {
            p.check_price()?;
        }
        if self.prices.windows(2).any(|w| w[0].currency != w[1].currency) {
            return Err(InvalidInput::new("prices", "all prices of an event must be in one currency"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum SeatState {
    Available = 0,
    Held = 1,
    Sold = 2,
    Blocked = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Active,
    Released,
    Expired,
    Confirmed,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Active => "active",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
            HoldState::Confirmed => "confirmed",
        }
    }
    pub fn parse(s: &str) -> Option<HoldState> {
        [HoldState::Active, HoldState::Released, HoldState::Expired, HoldState::Confirmed].into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    pub customer: CustomerId,
    pub seats: Vec<SeatIdx>,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub state: HoldState,
    /// When it left `Active` (released, expired or confirmed).
    pub ended_at: Option<Millis>,
    /// How many seats best available had to strand as orphans when it chose
    /// this hold's seats (see `Inventory::pick_best` for the definition).
    /// Part of the answer only: set in the `Reply` to `HoldBestAvailable` and
    /// in its idempotent replays, 0 in every other answer, in events and in
    /// storage (holds are stored as rows without it). Absent from stored
    /// JSON when 0, and read as 0 when absent, so older records still load.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub orphan_seats_left: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    HoldSeats {
        hold_id: HoldId,
        customer: CustomerId,
        seats: Vec<SeatIdx>,
    },
    HoldBestAvailable {
        hold_id: HoldId,
        customer: CustomerId,
        quantity: u32,
        section: Option<u16>,
        category: Option<u16>,
    },
    /// `customer`, when given, must own the hold.
    Release {
        hold_id: HoldId,
        customer: Option<CustomerId>,
    },
    Confirm {
        hold_id: HoldId,
    },
    /// Sells every seat of every named hold, or none: an order's holds are
    /// confirmed together when its payment is authorized.
    ConfirmAll {
        hold_ids: Vec<HoldId>,
    },
    Block {
        seats: Vec<SeatIdx>,
    },
    Unblock {
        seats: Vec<SeatIdx>,
    },
    SetStatus {
        to: EventStatus,
    },
    /// Ends every active hold whose expiry is at or before `now`.
    Expire,
}

impl Command {
    /// The command's kind in snake case (`hold_seats`, `confirm_all`, ...):
    /// a closed set, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::HoldSeats { .. } => "hold_seats",
            Command::HoldBestAvailable { .. } => "hold_best_available",
            Command::Release { .. } => "release",
            Command::Confirm { .. } => "confirm",
            Command::ConfirmAll { .. } => "confirm_all",
            Command::Block { .. } => "block",
            Command::Unblock { .. } => "unblock",
            Command::SetStatus { .. } => "set_status",
            Command::Expire => "expire",
        }
    }

    /// A stable digest of what the command asks for, so that reusing an
    /// idempotency key for a different request can be told apart from a retry.
    /// The hold id is chosen per attempt by the caller and is left out.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv::new();
        match self {
            Command::HoldSeats { customer, seats, .. } => {
                h.tag(1);
                h.str(customer.as_str());
                seats.iter().for_each(|s| h.u64(s.0 as u64));
            }
            Command::HoldBestAvailable { customer, quantity, section, category, .. } => {
                h.tag(2);
                h.str(customer.as_str());
                h.u64(*quantity as u64);
                h.u64(section.map_or(u64::MAX, u64::from));
                h.u64(category.map_or(u64::MAX, u64::from));
            }
            Command::Release { hold_id, customer } => {
                h.tag(3);
                h.bytes(hold_id.0.as_bytes());
                h.str(customer.as_ref().map_or("", |c| c.as_str()));
            }
            Command::Confirm { hold_id } => {
                h.tag(4);
                h.bytes(hold_id.0.as_bytes());
            }
            Command::ConfirmAll { hold_ids } => {
                h.tag(9);
                hold_ids.iter().for_each(|id| h.bytes(id.0.as_bytes()));
            }
            Command::Block { seats } => {
                h.tag(5);
                seats.iter().for_each(|s| h.u64(s.0 as u64));
            }
            Command::Unblock { seats } => {
                h.tag(6);
                seats.iter().for_each(|s| h.u64(s.0 as u64));
            }
            Command::SetStatus { to } => {
                h.tag(7);
                h.str(to.as_str());
            }
            Command::Expire => h.tag(8),
        }
        h.0
    }
}

/// What a request fingerprint is of, outside the event's own commands
/// (`Command::fingerprint` tags those itself): each kind hashes with its own
/// tag, so the same bytes of two kinds never read as a retry of each other.
/// The numbers are in stored fingerprints: never change or reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FingerprintTag {
    /// The demo data's own venue and events (made once, at the first start).
    Demo = 0,
    CreateVenue = 1,
    CreateEvent = 2,
    CreateOrder = 20,
    CancelOrder = 21,
    PayOrder = 22,
    /// Identity's commands (sign-ups, members, keys, devices).
    Identity = 30,
    /// Webhook endpoints' commands.
    Webhooks = 40,
}

/// FNV-1a, 64 bits: a stable digest for request fingerprints (not for
/// security: keys are scoped per caller and per event).
pub fn fingerprint_bytes(tag: FingerprintTag, bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.tag(tag as u8);
    h.bytes(bytes);
    h.0
}

struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
    fn tag(&mut self, t: u8) {
        self.bytes(&[t]);
    }
}

/// Why a command was refused. Closed and ordered by precedence: when several
/// apply, the earliest variant is the one reported.
/// Mapped to gRPC and HTTP codes in exactly one place (`gateway/src/error.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reject {
    // -- the request itself is malformed
    SeatListEmpty,
    SeatDuplicated { seat: SeatIdx },
    UnknownSeats { seats: Vec<SeatIdx> },
    QuantityInvalid { quantity: u32 },
    OverHoldLimit { requested: u32, max: u32 },
    // -- the idempotency key was used before for a different request
    IdempotencyKeyReused,
    // -- the named hold
    HoldNotFound { hold_id: HoldId },
    NotHoldOwner { hold_id: HoldId },
    HoldExpired { hold_id: HoldId },
    HoldNotActive { hold_id: HoldId, state: HoldState },
    HoldIdExists { hold_id: HoldId },
    // -- the event's state
    StatusTransition { from: EventStatus, to: EventStatus },
    EventNotOnSale { status: EventStatus },
    OutsideSalesWindow { sales_start: Millis, sales_end: Millis },
    EventCancelled,
    // -- capacity
    CustomerHoldLimit { max: u32 },
    SeatsTaken { seats: Vec<SeatIdx> },
    SeatsNotBlocked { seats: Vec<SeatIdx> },
    NotEnoughSeats { requested: u32, available: u32 },
}

impl Reject {
    /// The variant's name in snake case (`seats_taken`, ...): a closed set,
    /// for logs and metric labels. Unlike the API's reason, it tells
    /// `not_hold_owner` from `hold_not_found` (operators may see the
    /// difference; callers may not).
    pub fn kind(&self) -> &'static str {
        match self {
            Reject::SeatListEmpty => "seat_list_empty",
            Reject::SeatDuplicated { .. } => "seat_duplicated",
            Reject::UnknownSeats { .. } => "unknown_seats",
            Reject::QuantityInvalid { .. } => "quantity_invalid",
            Reject::OverHoldLimit { .. } => "over_hold_limit",
            Reject::IdempotencyKeyReused => "idempotency_key_reused",
            Reject::HoldNotFound { .. } => "hold_not_found",
            Reject::NotHoldOwner { .. } => "not_hold_owner",
            Reject::HoldExpired { .. } => "hold_expired",
            Reject::HoldNotActive { .. } => "hold_not_active",
            Reject::HoldIdExists { .. } => "hold_id_exists",
            Reject::StatusTransition { .. } => "status_transition",
            Reject::EventNotOnSale { .. } => "event_not_on_sale",
            Reject::OutsideSalesWindow { .. } => "outside_sales_window",
            Reject::EventCancelled => "event_cancelled",
            Reject::CustomerHoldLimit { .. } => "customer_hold_limit",
            Reject::SeatsTaken { .. } => "seats_taken",
            Reject::SeatsNotBlocked { .. } => "seats_not_blocked",
            Reject::NotEnoughSeats { .. } => "not_enough_seats",
        }
    }

    /// The refusal as a sentence for people (API error messages, order notes,
    /// emails), with seats by their labels (`A-3-12`). The one wording of
    /// every reason: gateway/src/error.rs adds only the status code and the
    /// machine-readable reason. Never Debug shapes.
    pub fn describe(&self, layout: &Layout) -> String {
        let labels = |seats: &[SeatIdx]| seats.iter().map(|&s| layout.label(s)).collect::<Vec<_>>().join(", ");
        match self {
            Reject::SeatListEmpty => "seat_ids: at least one seat is needed".into(),
            Reject::SeatDuplicated { seat } => format!("seat_ids: seat {} is listed twice", layout.label(*seat)),
            Reject::UnknownSeats { seats } => format!("seat_ids: no such seats: {}", labels(seats)),
            Reject::QuantityInvalid { quantity } => format!("quantity: must be at least 1, got {quantity}"),
            Reject::OverHoldLimit { requested, max } => {
                format!("a hold may have at most {max} seats for this event; {requested} were asked for")
            }
            Reject::IdempotencyKeyReused => "idempotency_key: this key was already used for a different request".into(),
            // Someone else's hold reads exactly like a missing one.
            Reject::HoldNotFound { hold_id } | Reject::NotHoldOwner { hold_id } => format!("hold {hold_id} not found"),
            Reject::HoldExpired { hold_id } => format!("hold {hold_id} has expired"),
            Reject::HoldNotActive { hold_id, state } => format!("hold {hold_id} is {}", state.as_str()),
            Reject::HoldIdExists { hold_id } => format!("hold id {hold_id} is taken; retry"),
            Reject::StatusTransition { from, to } => format!("an event that is {} cannot become {}", from.as_str(), to.as_str()),
            Reject::EventNotOnSale { status } => format!("the event is not on sale (it is {})", status.as_str()),
            Reject::OutsideSalesWindow { .. } => "the event's sales window is not open now".into(),
            Reject::EventCancelled => "the event is cancelled".into(),
            Reject::CustomerHoldLimit { max } => format!("a customer may have at most {max} live holds on one event"),
            Reject::SeatsTaken { seats } => format!("seats already taken: {}", labels(seats)),
            Reject::SeatsNotBlocked { seats } => format!("seats are not blocked: {}", labels(seats)),
            Reject::NotEnoughSeats { requested, available } => {
                format!("not enough seats: {requested} asked for, {available} available")
            }
        }
    }

    /// The request itself is malformed: decided from its shape and the
    /// event's fixed limits alone. Such answers are not remembered under the
    /// idempotency key (nothing executed), so they leave nothing behind.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Reject::SeatListEmpty
                | Reject::SeatDuplicated { .. }
                | Reject::UnknownSeats { .. }
                | Reject::QuantityInvalid { .. }
                | Reject::OverHoldLimit { .. }
        )
    }
}

/// What a successful command answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Hold(Hold),
    Holds(Vec<Hold>),
    Seats { changed: u32 },
    Status { status: EventStatus },
    Expired { holds: u32 },
}

/// A domain event: a durable fact. The store turns these into row changes and
/// outbox messages in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    HoldPlaced { hold: Hold },
    HoldReleased { hold: Hold },
    HoldExpired { hold: Hold },
    SeatsSold { hold: Hold },
    SeatsBlocked { seats: Vec<SeatIdx> },
    SeatsUnblocked { seats: Vec<SeatIdx> },
    StatusChanged { from: EventStatus, to: EventStatus },
}

/// The remembered first answer to an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: IdempotencyKey,
    pub fingerprint: u64,
    pub at: Millis,
    pub result: Result<Reply, Reject>,
}

/// Result of `apply_keyed`: the answer, the events to persist, and the
/// idempotency record to persist (None for a replay or a malformed request).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub result: Result<Reply, Reject>,
    pub events: Vec<Event>,
    pub record: Option<IdempotencyRecord>,
    /// The answer is the one remembered under the key (a retry), not decided now.
    pub replayed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub available: u32,
    pub held: u32,
    pub sold: u32,
    pub blocked: u32,
}

/// The whole mutable state of one event's inventory.
#[derive(Clone, Debug)]
pub struct Inventory {
    config: EventConfig,
    layout: Arc<Layout>,
    seats: Vec<SeatState>,
    row_available: Vec<u32>,
    counts: Counts,
    active: Map<HoldId, Hold>,
    ended: Map<HoldId, Hold>,
    expiries: BTreeSet<(Millis, HoldId)>,
    holds_by_customer: Map<CustomerId, u32>,
    idempotency: Map<IdempotencyKey, IdempotencyRecord>,
    /// Seats covered by live holds and by confirmed holds, kept as counters so
    /// that "every held seat is in exactly one live hold" is an O(1) check
    /// after every change (a seat in two holds makes them disagree with the
    /// seat states).
    seats_in_live_holds: u32,
    seats_in_sold_holds: u32,
    idempotency_order: VecDeque<(Millis, IdempotencyKey)>,
    now: Millis,
}

/// What storage hands back to rebuild an inventory.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub blocked: Vec<SeatIdx>,
    pub holds: Vec<Hold>,
    pub idempotency: Vec<IdempotencyRecord>,
}

impl Inventory {
    pub fn new(config: EventConfig, layout: Arc<Layout>, now: Millis) -> Inventory {
        let n = layout.seat_count();
        let row_available = layout.rows.iter().map(|r| r.len).collect();
        let inv = Inventory {
            config,
            seats: vec![SeatState::Available; n],
            row_available,
            counts: Counts { available: n as u32, ..Counts::default() },
            layout,
            active: Map::default(),
            ended: Map::default(),
            expiries: BTreeSet::new(),
            holds_by_customer: Map::default(),
            idempotency: Map::default(),
            seats_in_live_holds: 0,
            seats_in_sold_holds: 0,
            idempotency_order: VecDeque::new(),
            now,
        };
        inv.assert_invariants();
        inv
    }

    /// Rebuilds from storage and checks every invariant: a broken snapshot is
    /// refused rather than served.
    pub fn restore(config: EventConfig, layout: Arc<Layout>, snap: Snapshot, now: Millis) -> Result<Inventory, String> {
        let mut inv = Inventory::new(config, layout, Millis(i64::MIN));
        for s in snap.blocked {
            if s.0 as usize >= inv.seats.len() || inv.seats[s.0 as usize] != SeatState::Available {
                return Err(format!("blocked seat {s:?} unknown or claimed twice"));
            }
            inv.set_seat(s, SeatState::Blocked);
        }
        for h in snap.holds {
            for &s in &h.seats {
                if s.0 as usize >= inv.seats.len() {
                    return Err(format!("hold {} names unknown seat {s:?}", h.id));
                }
            }
            match h.state {
                HoldState::Active => {
                    if h.seats.iter().any(|s| inv.seats[s.0 as usize] != SeatState::Available) {
                        return Err(format!("hold {} claims a seat that is already claimed", h.id));
                    }
                    for &s in &h.seats {
                        inv.set_seat(s, SeatState::Held);
                    }
                    inv.expiries.insert((h.expires_at, h.id));
                    *inv.holds_by_customer.entry(h.customer.clone()).or_default() += 1;
                    inv.seats_in_live_holds += h.seats.len() as u32;
                    inv.active.insert(h.id, h);
                }
                HoldState::Confirmed => {
                    if h.seats.iter().any(|s| inv.seats[s.0 as usize] != SeatState::Available) {
                        return Err(format!("sold hold {} claims a seat that is already claimed", h.id));
                    }
                    for &s in &h.seats {
                        inv.set_seat(s, SeatState::Sold);
                    }
                    inv.seats_in_sold_holds += h.seats.len() as u32;
                    inv.ended.insert(h.id, h);
                }
                HoldState::Released | HoldState::Expired => {
                    inv.ended.insert(h.id, h);
                }
            }
        }
        let mut records = snap.idempotency;
        records.sort_by_key(|r| r.at);
        for r in records {
            inv.idempotency_order.push_back((r.at, r.key.clone()));
            inv.idempotency.insert(r.key.clone(), r);
        }
        inv.now = now;
        inv.check_invariants()?;
        Ok(inv)
    }

    pub fn config(&self) -> &EventConfig {
        &self.config
    }
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }
    pub fn counts(&self) -> Counts {
        self.counts
    }
    pub fn now(&self) -> Millis {
        self.now
    }
    pub fn seat_state(&self, s: SeatIdx) -> Option<SeatState> {
        self.seats.get(s.0 as usize).copied()
    }
    pub fn seat_states(&self) -> &[SeatState] {
        &self.seats
    }
    pub fn hold(&self, id: HoldId) -> Option<&Hold> {
        self.active.get(&id).or_else(|| self.ended.get(&id))
    }
    pub fn active_holds(&self) -> impl Iterator<Item = &Hold> {
        self.active.values()
    }
    /// The earliest expiry among active holds: when the next `Expire` is due.
    pub fn next_expiry(&self) -> Option<Millis> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Applies a command under an idempotency key: a retry with the same key and
    /// request gets the first answer back and changes nothing; the same key with
    /// another request is refused.
    pub fn apply_keyed(&mut self, key: &IdempotencyKey, cmd: &Command, now: Millis) -> Decision {
        // A record answers for exactly its retention window, whether or not
        // an Expire ran since.
        self.forget_records(now.max(self.now));
        // The request's shape comes first in the `Reject` order, even before a
        // reused key; such requests are never remembered, so this is also
        // what a retry would get.
        if let Err(r) = self.check_shape(cmd) {
            return Decision { result: Err(r), events: Vec::new(), record: None, replayed: false };
        }
        let fingerprint = cmd.fingerprint();
        if let Some(rec) = self.idempotency.get(key) {
            let result = if rec.fingerprint == fingerprint { rec.result.clone() } else { Err(Reject::IdempotencyKeyReused) };
            return Decision { result, events: Vec::new(), record: None, replayed: rec.fingerprint == fingerprint };
        }
        let (result, events) = match self.apply(cmd, now) {
            Ok((reply, events)) => (Ok(reply), events),
            // Malformed requests, and a stranger's request on someone else's
            // hold: nothing executed, and nothing is remembered under the key
            // (an access refusal leaves no trace; a retry is refused again).
            Err(r) if r.is_malformed() || matches!(r, Reject::NotHoldOwner { .. }) => {
                return Decision { result: Err(r), events: Vec::new(), record: None, replayed: false };
            }
            Err(r) => (Err(r), Vec::new()),
        };
        let record = IdempotencyRecord { key: key.clone(), fingerprint, at: self.now, result: result.clone() };
        self.idempotency.insert(key.clone(), record.clone());
        self.idempotency_order.push_back((self.now, key.clone()));
        Decision { result, events, record: Some(record), replayed: false }
    }

    /// Decides one command. On `Err` nothing changed but the clock, which only
    /// moves forward.
    pub fn apply(&mut self, cmd: &Command, now: Millis) -> Result<(Reply, Vec<Event>), Reject> {
        assert!(now >= self.now, "time went backwards: {:?} after {:?}", now, self.now);
        self.now = now;
        let out = match cmd {
            Command::HoldSeats { hold_id, customer, seats } => self.hold_seats(*hold_id, customer, seats),
            Command::HoldBestAvailable { hold_id, customer, quantity, section, category } => {
                self.hold_best(*hold_id, customer, *quantity, *section, *category)
            }
            Command::Release { hold_id, customer } => self.release(*hold_id, customer.as_ref()),
            Command::Confirm { hold_id } => self.confirm(*hold_id),
            Command::ConfirmAll { hold_ids } => self.confirm_all(hold_ids),
            Command::Block { seats } => self.block(seats),
            Command::Unblock { seats } => self.unblock(seats),
            Command::SetStatus { to } => self.set_status(*to),
            Command::Expire => Ok(self.expire()),
        };
        // Every change is checked where it happened, in every build; the full
        // O(seats + holds) recheck runs after every apply in debug builds
        // (tests, simulation) and periodically in release (see the actor).
        if let Ok((_, events)) = &out
            && let Err(e) = self.check_change(events)
        {
            panic!("inventory invariant broken for event {} by {cmd:?}: {e}", self.config.id);
        }
        if cfg!(debug_assertions) {
            self.assert_invariants();
        }
        out
    }

    /// O(size of the change): the touched seats and holds are where the events
    /// say, and the global counters still add up.
    fn check_change(&self, events: &[Event]) -> Result<(), String> {
        let c = self.counts;
        if (c.available + c.held + c.sold + c.blocked) as usize != self.seats.len() {
            return Err(format!("I1 counts {c:?} do not add up to {} seats", self.seats.len()));
        }
        if self.seats_in_live_holds != c.held {
            return Err(format!("I2/I3 {} seats held but live holds cover {}", c.held, self.seats_in_live_holds));
        }
        if self.seats_in_sold_holds != c.sold {
            return Err(format!("I5 {} seats sold but confirmed holds cover {}", c.sold, self.seats_in_sold_holds));
        }
        if self.expiries.len() != self.active.len() {
            return Err("I4 expiry timers do not match live holds".into());
        }
        let seats_are = |seats: &[SeatIdx], want: SeatState| match seats.iter().find(|s| self.seats[s.0 as usize] != want) {
            Some(s) => Err(format!("seat {s:?} is {:?}, expected {want:?}", self.seats[s.0 as usize])),
            None => Ok(()),
        };
        for e in events {
            match e {
                Event::HoldPlaced { hold } => {
                    let live = self.active.get(&hold.id).ok_or_else(|| format!("I3 placed hold {} is not live", hold.id))?;
                    if live.seats != hold.seats || !self.expiries.contains(&(hold.expires_at, hold.id)) {
                        return Err(format!("I3/I4 placed hold {} is recorded differently", hold.id));
                    }
                    seats_are(&hold.seats, SeatState::Held)?;
                }
                Event::HoldReleased { hold } | Event::HoldExpired { hold } => {
                    if self.active.contains_key(&hold.id) || self.ended.get(&hold.id).map(|h| h.state) != Some(hold.state) {
                        return Err(format!("I3 ended hold {} is still live or recorded differently", hold.id));
                    }
                    seats_are(&hold.seats, SeatState::Available)?;
                }
                Event::SeatsSold { hold } => {
                    if self.ended.get(&hold.id).map(|h| h.state) != Some(HoldState::Confirmed) {
                        return Err(format!("I5 sold hold {} is not recorded as confirmed", hold.id));
                    }
                    seats_are(&hold.seats, SeatState::Sold)?;
                }
                Event::SeatsBlocked { seats } => seats_are(seats, SeatState::Blocked)?,
                Event::SeatsUnblocked { seats } => seats_are(seats, SeatState::Available)?,
                Event::StatusChanged { to, .. } if self.config.status != *to => {
                    return Err(format!("status is {:?} after changing to {to:?}", self.config.status));
                }
                Event::StatusChanged { .. } => {}
            }
        }
        Ok(())
    }

    /// The malformed-request checks alone (`Reject::is_malformed`): they read
    /// only the command and the event's fixed limits, never the seat states.
    pub fn check_shape(&self, cmd: &Command) -> Result<(), Reject> {
        match cmd {
            Command::HoldSeats { seats, .. } => {
                self.check_seat_list(seats)?;
                if seats.len() as u32 > self.config.hold_seats_max {
                    return Err(Reject::OverHoldLimit { requested: seats.len() as u32, max: self.config.hold_seats_max });
                }
                Ok(())
            }
            Command::HoldBestAvailable { quantity, .. } => {
                if *quantity == 0 {
                    return Err(Reject::QuantityInvalid { quantity: *quantity });
                }
                if *quantity > self.config.hold_seats_max {
                    return Err(Reject::OverHoldLimit { requested: *quantity, max: self.config.hold_seats_max });
                }
                Ok(())
            }
            Command::Block { seats } | Command::Unblock { seats } => self.check_seat_list(seats),
            Command::ConfirmAll { hold_ids } => check_hold_list(hold_ids),
            Command::Release { .. } | Command::Confirm { .. } | Command::SetStatus { .. } | Command::Expire => Ok(()),
        }
    }

    fn check_seat_list(&self, seats: &[SeatIdx]) -> Result<(), Reject> {
        if seats.is_empty() {
            return Err(Reject::SeatListEmpty);
        }
        // Lists are short (≤ HOLD_SEATS_MAX): a sorted copy beats hashing.
        let mut sorted = seats.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            // Report the first duplicate in the caller's order.
            let dup = seats.iter().enumerate().find(|(i, s)| seats[..*i].contains(s)).map_or(w[0], |(_, s)| *s);
            return Err(Reject::SeatDuplicated { seat: dup });
        }
        let unknown: Vec<SeatIdx> = seats.iter().copied().filter(|s| s.0 as usize >= self.seats.len()).collect();
        if !unknown.is_empty() {
            return Err(Reject::UnknownSeats { seats: unknown });
        }
        Ok(())
    }

    fn check_can_hold(&self, hold_id: HoldId, customer: &CustomerId) -> Result<(), Reject> {
        if self.active.contains_key(&hold_id) || self.ended.contains_key(&hold_id) {
            return Err(Reject::HoldIdExists { hold_id });
        }
        if self.config.status != EventStatus::OnSale {
            return Err(Reject::EventNotOnSale { status: self.config.status });
        }
        if self.now < self.config.sales_start || self.now >= self.config.sales_end {
            return Err(Reject::OutsideSalesWindow { sales_start: self.config.sales_start, sales_end: self.config.sales_end });
        }
        if self.holds_by_customer.get(customer).copied().unwrap_or(0) >= limits::HOLDS_PER_CUSTOMER_MAX {
            return Err(Reject::CustomerHoldLimit { max: limits::HOLDS_PER_CUSTOMER_MAX });
        }
        Ok(())
    }

    fn hold_seats(&mut self, hold_id: HoldId, customer: &CustomerId, seats: &[SeatIdx]) -> Result<(Reply, Vec<Event>), Reject> {
        self.check_seat_list(seats)?;
        if seats.len() as u32 > self.config.hold_seats_max {
            return Err(Reject::OverHoldLimit { requested: seats.len() as u32, max: self.config.hold_seats_max });
        }
        self.check_can_hold(hold_id, customer)?;
        let taken: Vec<SeatIdx> = seats.iter().copied().filter(|s| self.seats[s.0 as usize] != SeatState::Available).collect();
        if !taken.is_empty() {
            return Err(Reject::SeatsTaken { seats: taken });
        }
        Ok(self.place(hold_id, customer, seats.to_vec()))
    }

    fn hold_best(
        &mut self,
        hold_id: HoldId,
        customer: &CustomerId,
        quantity: u32,
        section: Option<u16>,
        category: Option<u16>,
    ) -> Result<(Reply, Vec<Event>), Reject> {
        if quantity == 0 {
            return Err(Reject::QuantityInvalid { quantity });
        }
        if quantity > self.config.hold_seats_max {
            return Err(Reject::OverHoldLimit { requested: quantity, max: self.config.hold_seats_max });
        }
        self.check_can_hold(hold_id, customer)?;
        let (seats, orphans) = self.pick_best(quantity, section, category)?;
        let (mut reply, events) = self.place(hold_id, customer, seats);
        // The answer says how many seats the choice stranded; the stored hold
        // and its event do not carry it (see `Hold::orphan_seats_left`).
        if let Reply::Hold(h) = &mut reply {
            h.orphan_seats_left = orphans;
        }
        Ok((reply, events))
    }

    /// Best available. Every way to seat the party in the matching rows (the
    /// section and category asked for) is ranked and the first one wins,
    /// comparing in this order, like seats.io's best available (with venue
    /// order and the row's centre standing for its focal point):
    ///
    /// 1. `quantity` seats side by side in one row, before any spread;
    /// 2. fewer orphan seats created: 0, then 1, then 2 (a run can only strand
    ///    its two outer neighbours);
    /// 3. the earlier row in venue order (sections are listed best first, then
    ///    rows front to back);
    /// 4. the run nearer the row's centre;
    /// 5. the run further left.
    ///
    /// So a party is never made to strand a seat while any matching row could
    /// seat it side by side without doing so: it is moved to a later row
    /// rather than leave a single seat nobody will buy, and strands one only
    /// when every run everywhere would. With no run of `quantity` free seats in
    /// any matching row, the first free seats in venue order are taken, so the
    /// party is spread over as few rows as possible (orphans are then counted,
    /// not avoided).
    ///
    /// An *orphan* is an available seat whose two neighbours in its row are
    /// each unavailable (held, sold or blocked) or the row's end. The orphans
    /// a choice *creates* are the seats of the rows it touches that are
    /// orphans after it and were not before: a lone free seat that was already
    /// stranded (or a one-seat row) is never counted, and taking such a seat
    /// counts as creating none. For a run this is "orphans after minus
    /// orphans before in its row", floored at 0. The count is returned with
    /// the seats and reported as `Hold::orphan_seats_left`.
    ///
    /// Cost: one pass over each matching row that has `quantity` free seats,
    /// O(1) per candidate run and no allocation; the scan stops at the first
    /// row with an orphan-free run, and reads every matching row only when
    /// none has one (as "no run anywhere" always did).
    fn pick_best(&self, quantity: u32, section: Option<u16>, category: Option<u16>) -> Result<(Vec<SeatIdx>, u32), Reject> {
        let layout = &self.layout;
        let row_ok = |ri: usize| {
            let row = &layout.rows[ri];
            section.is_none_or(|s| row.section == s) && category.is_none_or(|c| layout.sections[row.section as usize].category == c)
        };
        let run = |first: usize| (0..quantity as usize).map(|i| SeatIdx((first + i) as u32)).collect::<Vec<_>>();
        let mut total = 0u32;
        // The best run found so far that strands seats: (orphans, first seat).
        // Rows are read in venue order, so only fewer orphans displace it.
        let mut best: Option<(u32, usize)> = None;
        for (ri, row) in layout.rows.iter().enumerate() {
            if !row_ok(ri) {
                continue;
            }
            let free = self.row_available[ri];
            total += free;
            if free < quantity {
                continue;
            }
            let Some((orphans, first)) = self.best_run_in_row(row.first_seat as usize, row.len as usize, quantity as usize) else {
                continue;
            };
            let first = row.first_seat as usize + first;
            if orphans == 0 {
                debug_assert_eq!(self.orphans_created(&run(first)), 0);
                return Ok((run(first), 0));
            }
            if best.is_none_or(|(o, _)| orphans < o) {
                best = Some((orphans, first));
            }
        }
        if let Some((orphans, first)) = best {
            debug_assert_eq!(self.orphans_created(&run(first)), orphans);
            return Ok((run(first), orphans));
        }
        if total < quantity {
            return Err(Reject::NotEnoughSeats { requested: quantity, available: total });
        }
        let mut picked = Vec::with_capacity(quantity as usize);
        'rows: for (ri, row) in layout.rows.iter().enumerate() {
            if !row_ok(ri) || self.row_available[ri] == 0 {
                continue;
            }
            for off in 0..row.len {
                let s = row.first_seat + off;
                if self.seats[s as usize] == SeatState::Available {
                    picked.push(SeatIdx(s));
                    if picked.len() == quantity as usize {
                        break 'rows;
                    }
                }
            }
        }
        let orphans = self.orphans_created(&picked);
        Ok((picked, orphans))
    }

    /// The best run of `q` free seats in the row of `len` seats from `start`,
    /// as (orphans created, offset of its first seat): fewest orphans, then
    /// nearest the centre, then leftmost. One pass, O(1) per run: taking
    /// `first..=last` can only strand `first - 1` and `last + 1`, and strands
    /// one exactly when it is free and its other neighbour is not (or is the
    /// row's end); it was no orphan before, as the run's seat beside it was free.
    fn best_run_in_row(&self, start: usize, len: usize, q: usize) -> Option<(u32, usize)> {
        let seats = &self.seats[start..start + len];
        let free = |i: usize| seats[i] == SeatState::Available;
        // (orphans, twice the distance from the run's centre to the row's, first offset)
        let mut best: Option<(u32, usize, usize)> = None;
        let mut run = 0usize;
        for last in 0..len {
            if !free(last) {
                run = 0;
                continue;
            }
            run += 1;
            if run < q {
                continue;
            }
            let first = last + 1 - q;
            let left = first >= 1 && free(first - 1) && (first < 2 || !free(first - 2));
            let right = last + 1 < len && free(last + 1) && (last + 2 >= len || !free(last + 2));
            let orphans = u32::from(left) + u32::from(right);
            let dist = (2 * first + q).abs_diff(len);
            if best.is_none_or(|(o, d, _)| (orphans, dist) < (o, d)) {
                best = Some((orphans, dist, first));
                // Centred (dist 0, or 1 when the parities differ) and
                // stranding nothing: no later run can beat it.
                if orphans == 0 && dist <= 1 {
                    break;
                }
            }
        }
        best.map(|(o, _, first)| (o, first))
    }

    /// The orphans created by taking `picked` (ascending, all available): the
    /// seats of the rows it touches that are orphans afterwards and were not
    /// before (see `pick_best`). O(length of the touched rows).
    fn orphans_created(&self, picked: &[SeatIdx]) -> u32 {
        let mut created = 0;
        let mut i = 0;
        while i < picked.len() {
            let row = self.layout.row_of(picked[i]);
            let (start, end) = (row.first_seat as usize, (row.first_seat + row.len) as usize);
            let taken = &picked[i..i + picked[i..].iter().take_while(|s| (s.0 as usize) < end).count()];
            let before = |s: usize| self.seats[s] == SeatState::Available;
            let after = |s: usize| before(s) && taken.binary_search(&SeatIdx(s as u32)).is_err();
            let orphan = |s: usize, free: &dyn Fn(usize) -> bool| free(s) && (s == start || !free(s - 1)) && (s + 1 == end || !free(s + 1));
            created += (start..end).filter(|&s| orphan(s, &after) && !orphan(s, &before)).count() as u32;
            i += taken.len();
        }
        created
    }

    fn place(&mut self, hold_id: HoldId, customer: &CustomerId, seats: Vec<SeatIdx>) -> (Reply, Vec<Event>) {
        for &s in &seats {
            self.set_seat(s, SeatState::Held);
        }
        let hold = Hold {
            id: hold_id,
            customer: customer.clone(),
            seats,
            created_at: self.now,
            expires_at: self.now.plus_ms(self.config.hold_duration_ms),
            state: HoldState::Active,
            ended_at: None,
            orphan_seats_left: 0,
        };
        self.expiries.insert((hold.expires_at, hold_id));
        *self.holds_by_customer.entry(customer.clone()).or_default() += 1;
        self.seats_in_live_holds += hold.seats.len() as u32;
        self.active.insert(hold_id, hold.clone());
        (Reply::Hold(hold.clone()), vec![Event::HoldPlaced { hold }])
    }

    fn ended_reject(&self, hold_id: HoldId) -> Reject {
        match self.ended.get(&hold_id) {
            Some(h) if h.state == HoldState::Expired => Reject::HoldExpired { hold_id },
            Some(h) => Reject::HoldNotActive { hold_id, state: h.state },
            None => Reject::HoldNotFound { hold_id },
        }
    }

    fn release(&mut self, hold_id: HoldId, customer: Option<&CustomerId>) -> Result<(Reply, Vec<Event>), Reject> {
        let Some(hold) = self.active.get(&hold_id) else {
            // Another customer learns nothing about an ended hold's state.
            if let (Some(c), Some(h)) = (customer, self.ended.get(&hold_id))
                && *c != h.customer
            {
                return Err(Reject::NotHoldOwner { hold_id });
            }
            return Err(self.ended_reject(hold_id));
        };
        if customer.is_some_and(|c| *c != hold.customer) {
            return Err(Reject::NotHoldOwner { hold_id });
        }
        let hold = self.end_hold(hold_id, HoldState::Released);
        Ok((Reply::Hold(hold.clone()), vec![Event::HoldReleased { hold }]))
    }

    /// A hold can be sold: live and not past its expiry.
    fn check_confirmable(&self, hold_id: HoldId) -> Result<(), Reject> {
        let Some(hold) = self.active.get(&hold_id) else {
            return Err(self.ended_reject(hold_id));
        };
        // A hold past its expiry is dead even if `Expire` has not run yet.
        if hold.expires_at <= self.now {
            return Err(Reject::HoldExpired { hold_id });
        }
        Ok(())
    }

    fn confirm(&mut self, hold_id: HoldId) -> Result<(Reply, Vec<Event>), Reject> {
        self.check_confirmable(hold_id)?;
        if self.config.status == EventStatus::Cancelled {
            return Err(Reject::EventCancelled);
        }
        let hold = self.end_hold(hold_id, HoldState::Confirmed);
        Ok((Reply::Hold(hold.clone()), vec![Event::SeatsSold { hold }]))
    }

    fn confirm_all(&mut self, hold_ids: &[HoldId]) -> Result<(Reply, Vec<Event>), Reject> {
        check_hold_list(hold_ids)?;
        // Judge every hold before touching any: all or nothing.
        for &hold_id in hold_ids {
            self.check_confirmable(hold_id)?;
        }
        if self.config.status == EventStatus::Cancelled {
            return Err(Reject::EventCancelled);
        }
        let holds: Vec<Hold> = hold_ids.iter().map(|&id| self.end_hold(id, HoldState::Confirmed)).collect();
        let events = holds.iter().map(|h| Event::SeatsSold { hold: h.clone() }).collect();
        Ok((Reply::Holds(holds), events))
    }

    fn end_hold(&mut self, hold_id: HoldId, state: HoldState) -> Hold {
        let mut hold = self.active.remove(&hold_id).expect("caller checked the hold is active");
        self.seats_in_live_holds -= hold.seats.len() as u32;
        if state == HoldState::Confirmed {
            self.seats_in_sold_holds += hold.seats.len() as u32;
        }
        let seat_state = if state == HoldState::Confirmed { SeatState::Sold } else { SeatState::Available };
        for &s in &hold.seats {
            self.set_seat(s, seat_state);
        }
        self.expiries.remove(&(hold.expires_at, hold_id));
        let n = self.holds_by_customer.get_mut(&hold.customer).expect("active hold counted");
        *n -= 1;
        if *n == 0 {
            self.holds_by_customer.remove(&hold.customer);
        }
        hold.state = state;
        hold.ended_at = Some(self.now);
        self.ended.insert(hold_id, hold.clone());
        hold
    }

    fn block(&mut self, seats: &[SeatIdx]) -> Result<(Reply, Vec<Event>), Reject> {
        self.check_seat_list(seats)?;
        if self.config.status == EventStatus::Cancelled {
            return Err(Reject::EventCancelled);
        }
        let taken: Vec<SeatIdx> =
            seats.iter().copied().filter(|s| matches!(self.seats[s.0 as usize], SeatState::Held | SeatState::Sold)).collect();
        if !taken.is_empty() {
            return Err(Reject::SeatsTaken { seats: taken });
        }
        let changed: Vec<SeatIdx> = seats.iter().copied().filter(|s| self.seats[s.0 as usize] == SeatState::Available).collect();
        for &s in &changed {
            self.set_seat(s, SeatState::Blocked);
        }
        let n = changed.len() as u32;
        let events = if changed.is_empty() { vec![] } else { vec![Event::SeatsBlocked { seats: changed }] };
        Ok((Reply::Seats { changed: n }, events))
    }

    fn unblock(&mut self, seats: &[SeatIdx]) -> Result<(Reply, Vec<Event>), Reject> {
        self.check_seat_list(seats)?;
        let not_blocked: Vec<SeatIdx> = seats.iter().copied().filter(|s| self.seats[s.0 as usize] != SeatState::Blocked).collect();
        if !not_blocked.is_empty() {
            return Err(Reject::SeatsNotBlocked { seats: not_blocked });
        }
        for &s in seats {
            self.set_seat(s, SeatState::Available);
        }
        Ok((Reply::Seats { changed: seats.len() as u32 }, vec![Event::SeatsUnblocked { seats: seats.to_vec() }]))
    }

    fn set_status(&mut self, to: EventStatus) -> Result<(Reply, Vec<Event>), Reject> {
        let from = self.config.status;
        if from == to {
            return Ok((Reply::Status { status: to }, vec![]));
        }
        if !from.can_become(to) {
            return Err(Reject::StatusTransition { from, to });
        }
        self.config.status = to;
        let mut events = vec![Event::StatusChanged { from, to }];
        if to == EventStatus::Cancelled {
            // Nobody can buy into a cancelled event: every live hold ends now.
            let mut ids: Vec<HoldId> = self.active.keys().copied().collect();
            ids.sort();
            for id in ids {
                let hold = self.end_hold(id, HoldState::Released);
                events.push(Event::HoldReleased { hold });
            }
        }
        Ok((Reply::Status { status: to }, events))
    }

    fn expire(&mut self) -> (Reply, Vec<Event>) {
        let mut events = Vec::new();
        while let Some(&(at, id)) = self.expiries.first() {
            if at > self.now {
                break;
            }
            let hold = self.end_hold(id, HoldState::Expired);
            events.push(Event::HoldExpired { hold });
        }
        self.forget_records(self.now);
        (Reply::Expired { holds: events.len() as u32 }, events)
    }

    /// Drops idempotency records older than the retention, and the oldest
    /// beyond `IDEMPOTENCY_RECORDS_PER_EVENT_MAX` (leaving room for one more),
    /// so memory stays bounded through a long onsale.
    fn forget_records(&mut self, now: Millis) {
        let horizon = Millis(now.0.saturating_sub(limits::IDEMPOTENCY_RETENTION_MS as i64));
        while let Some((at, _)) = self.idempotency_order.front() {
            if *at >= horizon && self.idempotency_order.len() < limits::IDEMPOTENCY_RECORDS_PER_EVENT_MAX {
                break;
            }
            let (_, key) = self.idempotency_order.pop_front().expect("front exists");
            self.idempotency.remove(&key);
        }
    }

    fn set_seat(&mut self, s: SeatIdx, to: SeatState) {
        let i = s.0 as usize;
        let from = self.seats[i];
        if from == to {
            return;
        }
        let row = self.layout.seats[i].row as usize;
        match from {
            SeatState::Available => {
                self.counts.available -= 1;
                self.row_available[row] -= 1;
            }
            SeatState::Held => self.counts.held -= 1,
            SeatState::Sold => self.counts.sold -= 1,
            SeatState::Blocked => self.counts.blocked -= 1,
        }
        match to {
            SeatState::Available => {
                self.counts.available += 1;
                self.row_available[row] += 1;
            }
            SeatState::Held => self.counts.held += 1,
            SeatState::Sold => self.counts.sold += 1,
            SeatState::Blocked => self.counts.blocked += 1,
        }
        self.seats[i] = to;
    }

    /// The durable part of the state, as storage would hand it back.
    pub fn snapshot(&self) -> Snapshot {
        let mut holds: Vec<Hold> = self.active.values().chain(self.ended.values()).cloned().collect();
        holds.sort_by_key(|h| (h.created_at, h.id));
        Snapshot {
            blocked: (0..self.seats.len() as u32).map(SeatIdx).filter(|s| self.seats[s.0 as usize] == SeatState::Blocked).collect(),
            holds,
            idempotency: self.idempotency_order.iter().filter_map(|(_, k)| self.idempotency.get(k).cloned()).collect(),
        }
    }

    pub fn assert_invariants(&self) {
        if let Err(e) = self.check_invariants() {
            panic!("inventory invariant broken for event {}: {e}", self.config.id);
        }
    }

    /// Recomputes everything derived and compares. O(seats + holds).
    pub fn check_invariants(&self) -> Result<(), String> {
        let n = self.layout.seat_count();
        if self.seats.len() != n {
            return Err(format!("I1 seat vector has {} entries for {n} seats", self.seats.len()));
        }
        let mut c = Counts::default();
        let mut rows = vec![0u32; self.layout.rows.len()];
        for (i, s) in self.seats.iter().enumerate() {
            match s {
                SeatState::Available => {
                    c.available += 1;
                    rows[self.layout.seats[i].row as usize] += 1;
                }
                SeatState::Held => c.held += 1,
                SeatState::Sold => c.sold += 1,
                SeatState::Blocked => c.blocked += 1,
            }
        }
        if c != self.counts || (c.available + c.held + c.sold + c.blocked) as usize != n {
            return Err(format!("I1 counts {:?} disagree with seats {c:?} (capacity {n})", self.counts));
        }
        if rows != self.row_available {
            return Err("I1 per-row availability disagrees with seats".into());
        }
        // I2: no seat in two holds; I3: every held seat in exactly one live hold.
        let mut owner = vec![0u8; n];
        let mut held_in_holds = 0u32;
        let mut per_customer: Map<&CustomerId, u32> = Map::default();
        for (id, h) in &self.active {
            if h.id != *id || h.state != HoldState::Active {
                return Err(format!("I3 active hold {id} is in state {:?}", h.state));
            }
            if !self.expiries.contains(&(h.expires_at, h.id)) {
                return Err(format!("I4 active hold {id} has no expiry timer"));
            }
            *per_customer.entry(&h.customer).or_default() += 1;
            for s in &h.seats {
                let i = s.0 as usize;
                owner[i] += 1;
                if owner[i] > 1 {
                    return Err(format!("I2 seat {s:?} is in two holds"));
                }
                if self.seats[i] != SeatState::Held {
                    return Err(format!("I3 seat {s:?} of live hold {id} is {:?}", self.seats[i]));
                }
                held_in_holds += 1;
            }
        }
        if held_in_holds != c.held || held_in_holds != self.seats_in_live_holds {
            return Err(format!("I3 {} seats held but live holds cover {held_in_holds}", c.held));
        }
        if self.expiries.len() != self.active.len() {
            return Err("I4 expiry timers do not match live holds".into());
        }
        let mut sold_in_holds = 0u32;
        for h in self.ended.values() {
            if h.state == HoldState::Active || self.active.contains_key(&h.id) {
                return Err(format!("I3 ended hold {} is also live", h.id));
            }
            if h.state == HoldState::Confirmed {
                for s in &h.seats {
                    let i = s.0 as usize;
                    owner[i] += 1;
                    if owner[i] > 1 || self.seats[i] != SeatState::Sold {
                        return Err(format!("I2 sold seat {s:?} is claimed twice or not sold"));
                    }
                    sold_in_holds += 1;
                }
            }
        }
        if sold_in_holds != c.sold || sold_in_holds != self.seats_in_sold_holds {
            return Err(format!("I5 {} seats sold but confirmed holds cover {sold_in_holds}", c.sold));
        }
        if per_customer.len() != self.holds_by_customer.len() || per_customer.iter().any(|(k, v)| self.holds_by_customer.get(*k) != Some(v))
        {
            return Err("I6 per-customer hold counts disagree with live holds".into());
        }
        if self.idempotency.len() != self.idempotency_order.len() {
            return Err("I7 idempotency index disagrees with its order".into());
        }
        Ok(())
    }
}

/// A `ConfirmAll` list: not empty, no hold twice, at most one order's worth.
fn check_hold_list(hold_ids: &[HoldId]) -> Result<(), Reject> {
    let mut sorted = hold_ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if hold_ids.is_empty() || sorted.len() != hold_ids.len() || hold_ids.len() > limits::HOLDS_PER_CUSTOMER_MAX as usize {
        return Err(Reject::QuantityInvalid { quantity: hold_ids.len() as u32 });
    }
    Ok(())
}
