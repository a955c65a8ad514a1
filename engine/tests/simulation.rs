//! A seeded, deterministic simulation of one event's inventory, in the spirit of
//! TigerBeetle's VOPR.
//!
//! Each run builds a small random venue and event, then drives the engine with a
//! few thousand random steps: holds (well formed and malformed), best available,
//! releases, confirmations, blocks, status changes, expiry, clock jumps, retries
//! under idempotency keys and crash/restart through `snapshot` + `restore`.
//! After every step the engine's invariants must hold and its state must agree
//! with an independent reference model kept in this file.
//!
//! Every failure names its seed. Replay one run with
//!
//! ```text
//! USHER_SIM_SEED=0x… [USHER_SIM_STEPS=…] cargo test -p usher-engine --test simulation
//! ```
//!
//! For a longer soak, `USHER_SIM_SEEDS=n` runs the first `n` seeds of the
//! default sequence (40 by default).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use usher_engine::limits::{HOLDS_PER_CUSTOMER_MAX, IDEMPOTENCY_RETENTION_MS};
use usher_engine::{
    Command, Counts, Currency, CustomerId, Decision, Event, EventConfig, EventId, EventStatus, Hold, HoldId, HoldState, IdempotencyKey,
    IdempotencyRecord, Inventory, Layout, Millis, Money, Reject, Reply, SeatIdx, SeatState, VenueId, grid_venue,
};
use usher_test_support::{Rng, event_config};
use uuid::Uuid;

const T0: Millis = Millis(1_700_000_000_000);
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const DEFAULT_SEED_COUNT: u64 = 40;
const DEFAULT_STEPS: usize = 3_000;
const TRACE_LEN: usize = 40;
const CUSTOMERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

type Outcome = Result<(Reply, Vec<Event>), Reject>;

// ---------------------------------------------------------------------------
// The tests

#[test]
fn random_interleavings_keep_every_invariant() {
    let steps = env_number("USHER_SIM_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    if let Some(seed) = env_number("USHER_SIM_SEED") {
        run_seed(seed, steps);
        return;
    }
    let seeds = env_number("USHER_SIM_SEEDS").unwrap_or(DEFAULT_SEED_COUNT);
    let mut seen = Stats::default();
    for seed in default_seeds().take(seeds as usize) {
        seen.merge(&run_seed(seed, steps).stats);
    }
    eprintln!("outcomes over {seeds} seeds: {:#?}", seen.0);
    if seeds < DEFAULT_SEED_COUNT || steps < DEFAULT_STEPS {
        return;
    }
    // A simulation that never reaches a branch proves nothing about it.
    let missing: Vec<&str> = EXPECTED_OUTCOMES.iter().copied().filter(|o| !seen.0.contains_key(o)).collect();
    assert!(missing.is_empty(), "the default seeds never reached {missing:?}; outcomes seen: {:?}", seen.0);
}

#[test]
fn the_same_seed_replays_the_same_history() {
    for seed in default_seeds().take(3) {
        let a = run_seed(seed, 800);
        let b = run_seed(seed, 800);
        assert_eq!(a.digest, b.digest, "seed={seed:#x}: two runs of the same seed answered differently");
    }
}

/// Everything the default seeds must reach at least once.
const EXPECTED_OUTCOMES: &[&str] = &[
    "ok HoldSeats",
    "ok HoldBestAvailable",
    "ok HoldBestAvailable stranding a seat",
    "ok Release",
    "ok Confirm",
    "ok ConfirmAll",
    "ok Block",
    "ok Unblock",
    "ok SetStatus",
    "ok Expire ended holds",
    "replayed",
    "malformed, not remembered",
    "restarted",
    "SeatListEmpty",
    "SeatDuplicated",
    "UnknownSeats",
    "QuantityInvalid",
    "OverHoldLimit",
    "IdempotencyKeyReused",
    "HoldNotFound",
    "NotHoldOwner",
    "HoldExpired",
    "HoldNotActive",
    "HoldIdExists",
    "StatusTransition",
    "EventNotOnSale",
    "OutsideSalesWindow",
    "EventCancelled",
    "CustomerHoldLimit",
    "SeatsTaken",
    "SeatsNotBlocked",
    "NotEnoughSeats",
];

fn default_seeds() -> impl Iterator<Item = u64> {
    (1u64..).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED)
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

struct RunResult {
    stats: Stats,
    digest: u64,
}

/// Runs one seed; on any panic, panics again naming the seed, the step and the
/// last steps taken, so that the failure can be replayed.
fn run_seed(seed: u64, steps: usize) -> RunResult {
    let mut trace = VecDeque::with_capacity(TRACE_LEN);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed);
        sim.run(steps, &mut trace);
        RunResult { stats: sim.stats, digest: sim.digest }
    }));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            let last: Vec<String> = trace.into_iter().collect();
            panic!(
                "simulation failed: seed={seed:#x} steps={steps}\n{msg}\n\
                 last steps (most recent last):\n  {}\n\
                 replay: USHER_SIM_SEED={seed:#x} USHER_SIM_STEPS={steps} \
                 cargo test -p usher-engine --test simulation",
                last.join("\n  ")
            );
        }
    }
}

// The PRNG is usher_test_support::Rng (splitmix64, the same everywhere).

/// FNV-1a, for the history digest.
struct Fnv(u64);

impl Fnv {
    fn add(&mut self, s: &str) {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

// ---------------------------------------------------------------------------
// Venue geometry, derived from the grid parameters rather than from the engine.

#[derive(Clone, Copy, Debug)]
struct Grid {
    sections: u32,
    rows: u32,
    per_row: u32,
}

impl Grid {
    fn seats(self) -> u32 {
        self.sections * self.rows * self.per_row
    }
    fn row_count(self) -> u32 {
        self.sections * self.rows
    }
    fn row_seats(self, row: u32) -> Range<u32> {
        row * self.per_row..(row + 1) * self.per_row
    }
    fn row_of(self, seat: u32) -> u32 {
        seat / self.per_row
    }
    fn section_of_row(self, row: u32) -> u32 {
        row / self.rows
    }
    /// `grid_venue` alternates categories P1 (index 0) and P2 (index 1).
    fn category_of_section(section: u32) -> u32 {
        section % 2
    }
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Free,
    Held(HoldId),
    Sold(HoldId),
    Blocked,
}

impl Owner {
    fn state(self) -> SeatState {
        match self {
            Owner::Free => SeatState::Available,
            Owner::Held(_) => SeatState::Held,
            Owner::Sold(_) => SeatState::Sold,
            Owner::Blocked => SeatState::Blocked,
        }
    }
}

struct KeyRecord {
    /// The request with the per-attempt hold id blanked out.
    request: Command,
    result: Result<Reply, Reject>,
    at: Millis,
}

struct Model {
    grid: Grid,
    hold_ms: u64,
    hold_max: u32,
    sales_start: Millis,
    sales_end: Millis,
    status: EventStatus,
    now: Millis,
    seats: Vec<Owner>,
    /// Every hold ever placed, in its current state.
    holds: HashMap<HoldId, Hold>,
    active: BTreeSet<HoldId>,
    keys: HashMap<String, KeyRecord>,
}

fn request_of(cmd: &Command) -> Command {
    let mut c = cmd.clone();
    match &mut c {
        Command::HoldSeats { hold_id, .. } | Command::HoldBestAvailable { hold_id, .. } => {
            *hold_id = HoldId(Uuid::nil());
        }
        _ => {}
    }
    c
}

/// Rejects decided from the request's shape and the event's fixed limits alone.
fn is_malformed(r: &Reject) -> bool {
    matches!(
        r,
        Reject::SeatListEmpty
            | Reject::SeatDuplicated { .. }
            | Reject::UnknownSeats { .. }
            | Reject::QuantityInvalid { .. }
            | Reject::OverHoldLimit { .. }
    )
}

fn can_become(from: EventStatus, to: EventStatus) -> bool {
    use EventStatus::*;
    match from {
        Draft => matches!(to, OnSale | Cancelled),
        OnSale => matches!(to, SalesClosed | Cancelled),
        SalesClosed => matches!(to, OnSale | Cancelled),
        Cancelled => false,
    }
}

impl Model {
    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for o in &self.seats {
            match o {
                Owner::Free => c.available += 1,
                Owner::Held(_) => c.held += 1,
                Owner::Sold(_) => c.sold += 1,
                Owner::Blocked => c.blocked += 1,
            }
        }
        c
    }

    fn next_expiry(&self) -> Option<Millis> {
        self.active.iter().map(|id| self.holds[id].expires_at).min()
    }

    fn check_list(&self, seats: &[SeatIdx]) -> Result<(), Reject> {
        if seats.is_empty() {
            return Err(Reject::SeatListEmpty);
        }
        let mut seen = HashSet::new();
        if let Some(&seat) = seats.iter().find(|s| !seen.insert(**s)) {
            return Err(Reject::SeatDuplicated { seat });
        }
        let unknown: Vec<SeatIdx> = seats.iter().copied().filter(|s| s.0 >= self.grid.seats()).collect();
        if !unknown.is_empty() {
            return Err(Reject::UnknownSeats { seats: unknown });
        }
        Ok(())
    }

    fn check_can_hold(&self, hold_id: HoldId, customer: &CustomerId) -> Result<(), Reject> {
        if self.holds.contains_key(&hold_id) {
            return Err(Reject::HoldIdExists { hold_id });
        }
        if self.status != EventStatus::OnSale {
            return Err(Reject::EventNotOnSale { status: self.status });
        }
        if self.now < self.sales_start || self.now >= self.sales_end {
            return Err(Reject::OutsideSalesWindow { sales_start: self.sales_start, sales_end: self.sales_end });
        }
        let live = self.active.iter().filter(|id| self.holds[id].customer == *customer).count() as u32;
        if live >= HOLDS_PER_CUSTOMER_MAX {
            return Err(Reject::CustomerHoldLimit { max: HOLDS_PER_CUSTOMER_MAX });
        }
        Ok(())
    }

    /// The hold if it is live, or the reason it cannot be used.
    fn live_hold(&self, hold_id: HoldId) -> Result<&Hold, Reject> {
        match self.holds.get(&hold_id) {
            None => Err(Reject::HoldNotFound { hold_id }),
            Some(h) => match h.state {
                HoldState::Active => Ok(h),
                HoldState::Expired => Err(Reject::HoldExpired { hold_id }),
                state => Err(Reject::HoldNotActive { hold_id, state }),
            },
        }
    }

    fn place(&mut self, id: HoldId, customer: &CustomerId, seats: Vec<SeatIdx>) -> (Reply, Vec<Event>) {
        for s in &seats {
            let o = &mut self.seats[s.0 as usize];
            assert_eq!(*o, Owner::Free, "model: placing hold {id} on a claimed seat {s:?}");
            *o = Owner::Held(id);
        }
        let hold = Hold {
            id,
            customer: customer.clone(),
            seats,
            created_at: self.now,
            expires_at: Millis(self.now.0 + self.hold_ms as i64),
            state: HoldState::Active,
            ended_at: None,
            orphan_seats_left: 0,
        };
        self.holds.insert(id, hold.clone());
        self.active.insert(id);
        (Reply::Hold(hold.clone()), vec![Event::HoldPlaced { hold }])
    }

    fn end(&mut self, id: HoldId, state: HoldState) -> Hold {
        assert!(self.active.remove(&id), "model: ending hold {id} twice");
        let now = self.now;
        let hold = self.holds.get_mut(&id).expect("model: live hold is known");
        for s in &hold.seats {
            let o = &mut self.seats[s.0 as usize];
            assert_eq!(*o, Owner::Held(id), "model: seat {s:?} of hold {id}");
            *o = if state == HoldState::Confirmed { Owner::Sold(id) } else { Owner::Free };
        }
        hold.state = state;
        hold.ended_at = Some(now);
        hold.clone()
    }

    fn rows_matching(&self, section: Option<u16>, category: Option<u16>) -> Vec<u32> {
        (0..self.grid.row_count())
            .filter(|&r| {
                let s = self.grid.section_of_row(r);
                section.is_none_or(|want| u32::from(want) == s)
                    && category.is_none_or(|want| u32::from(want) == Grid::category_of_section(s))
            })
            .collect()
    }

    /// The orphans created by taking `picked`: in each row it touches, the
    /// free seats with no free neighbour (a row's end counts as taken) after
    /// the choice, less those that were already so before.
    fn orphans_created(&self, picked: &[SeatIdx]) -> u32 {
        let rows: BTreeSet<u32> = picked.iter().map(|s| self.grid.row_of(s.0)).collect();
        let mut created = 0;
        for row in rows {
            let seats = self.grid.row_seats(row);
            let orphans = |free: &dyn Fn(u32) -> bool| -> BTreeSet<u32> {
                seats.clone().filter(|&s| free(s) && (s == seats.start || !free(s - 1)) && (s + 1 == seats.end || !free(s + 1))).collect()
            };
            let before = orphans(&|s| self.seats[s as usize] == Owner::Free);
            let after = orphans(&|s| self.seats[s as usize] == Owner::Free && !picked.contains(&SeatIdx(s)));
            created += after.difference(&before).count() as u32;
        }
        created
    }

    /// Checks the engine's best-available choice against the rule and returns
    /// the orphans it must report: `q` free seats of matching rows; of every
    /// run of `q` side by side in a matching row, the one that strands the
    /// fewest seats, then in the earliest row, then nearest the row's centre,
    /// then leftmost; with no run anywhere, the first free seats in venue order.
    fn check_best_pick(&self, rows: &[u32], q: u32, picked: &[SeatIdx]) -> u32 {
        assert_eq!(picked.len(), q as usize, "best available of {q} picked {picked:?}");
        let mut seen = HashSet::new();
        for s in picked {
            assert!(seen.insert(*s), "best available picked {s:?} twice: {picked:?}");
            assert!(s.0 < self.grid.seats(), "best available picked unknown {s:?}");
            assert_eq!(self.seats[s.0 as usize], Owner::Free, "best available picked a seat that was not available: {s:?} in {picked:?}");
            assert!(rows.contains(&self.grid.row_of(s.0)), "best available picked {s:?} outside the section/category filter");
        }
        let free = |s: u32| self.seats[s as usize] == Owner::Free;
        let len = self.grid.per_row;
        let dist = |first: u32| (2 * i64::from(first) + i64::from(q) - i64::from(len)).abs();
        // (orphans created, venue order of the row, distance to centre, offset), first seat
        let mut best: Option<((u32, usize, i64, u32), u32)> = None;
        for (order, &row) in rows.iter().enumerate() {
            let seats = self.grid.row_seats(row);
            if len < q {
                continue;
            }
            for first in 0..=len - q {
                let run: Vec<SeatIdx> = (seats.start + first..seats.start + first + q).map(SeatIdx).collect();
                if !run.iter().all(|s| free(s.0)) {
                    continue;
                }
                let key = (self.orphans_created(&run), order, dist(first), first);
                if best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, seats.start + first));
                }
            }
        }
        if let Some(((orphans, ..), start)) = best {
            let expected: Vec<SeatIdx> = (start..start + q).map(SeatIdx).collect();
            assert_eq!(
                picked,
                expected.as_slice(),
                "best available of {q} should take the run stranding fewest seats ({orphans}), then in the earliest row, \
                 nearest the centre, leftmost"
            );
            return orphans;
        }
        let expected: Vec<SeatIdx> =
            rows.iter().flat_map(|&r| self.grid.row_seats(r)).filter(|&s| free(s)).take(q as usize).map(SeatIdx).collect();
        assert_eq!(picked, expected.as_slice(), "with no run of {q} anywhere, best available must take the first free seats");
        self.orphans_created(picked)
    }

    /// Decides `cmd` at `now`, updates the model and returns what the engine
    /// must have answered. `engine` is only consulted for which seats best
    /// available chose, and that choice is checked against the rule first.
    /// The malformed-request checks of `step`, alone.
    fn shape(&self, cmd: &Command) -> Result<(), Reject> {
        match cmd {
            Command::HoldSeats { seats, .. } => {
                self.check_list(seats)?;
                if seats.len() as u32 > self.hold_max {
                    return Err(Reject::OverHoldLimit { requested: seats.len() as u32, max: self.hold_max });
                }
                Ok(())
            }
            Command::HoldBestAvailable { quantity, .. } => {
                if *quantity == 0 {
                    return Err(Reject::QuantityInvalid { quantity: *quantity });
                }
                if *quantity > self.hold_max {
                    return Err(Reject::OverHoldLimit { requested: *quantity, max: self.hold_max });
                }
                Ok(())
            }
            Command::Block { seats } | Command::Unblock { seats } => self.check_list(seats),
            Command::ConfirmAll { hold_ids } => {
                let distinct: std::collections::BTreeSet<_> = hold_ids.iter().collect();
                if hold_ids.is_empty() || distinct.len() != hold_ids.len() || hold_ids.len() > 8 {
                    return Err(Reject::QuantityInvalid { quantity: hold_ids.len() as u32 });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step(&mut self, cmd: &Command, now: Millis, engine: &Outcome) -> Outcome {
        self.now = now;
        match cmd {
            Command::HoldSeats { hold_id, customer, seats } => {
                self.check_list(seats)?;
                if seats.len() as u32 > self.hold_max {
                    return Err(Reject::OverHoldLimit { requested: seats.len() as u32, max: self.hold_max });
                }
                self.check_can_hold(*hold_id, customer)?;
                let taken: Vec<SeatIdx> = seats.iter().copied().filter(|s| self.seats[s.0 as usize] != Owner::Free).collect();
                if !taken.is_empty() {
                    return Err(Reject::SeatsTaken { seats: taken });
                }
                Ok(self.place(*hold_id, customer, seats.clone()))
            }
            Command::HoldBestAvailable { hold_id, customer, quantity, section, category } => {
                let q = *quantity;
                if q == 0 {
                    return Err(Reject::QuantityInvalid { quantity: q });
                }
                if q > self.hold_max {
                    return Err(Reject::OverHoldLimit { requested: q, max: self.hold_max });
                }
                self.check_can_hold(*hold_id, customer)?;
                let rows = self.rows_matching(*section, *category);
                let total =
                    rows.iter().flat_map(|&r| self.grid.row_seats(r)).filter(|&s| self.seats[s as usize] == Owner::Free).count() as u32;
                if total < q {
                    return Err(Reject::NotEnoughSeats { requested: q, available: total });
                }
                let picked = match engine {
                    Ok((Reply::Hold(h), _)) => h.seats.clone(),
                    other => panic!(
                        "best available of {q} must succeed with {total} matching seats free, \
                         engine answered {other:?}"
                    ),
                };
                let orphans = self.check_best_pick(&rows, q, &picked);
                let (mut reply, events) = self.place(*hold_id, customer, picked);
                if let Reply::Hold(h) = &mut reply {
                    h.orphan_seats_left = orphans;
                }
                Ok((reply, events))
            }
            Command::Release { hold_id, customer } => {
                // A non-owner is told so even about an ended hold.
                if let (Some(c), Some(h)) = (customer, self.holds.get(hold_id))
                    && *c != h.customer
                {
                    return Err(Reject::NotHoldOwner { hold_id: *hold_id });
                }
                let owner = self.live_hold(*hold_id)?.customer.clone();
                if customer.as_ref().is_some_and(|c| *c != owner) {
                    return Err(Reject::NotHoldOwner { hold_id: *hold_id });
                }
                let hold = self.end(*hold_id, HoldState::Released);
                Ok((Reply::Hold(hold.clone()), vec![Event::HoldReleased { hold }]))
            }
            Command::Confirm { hold_id } => {
                let expires_at = self.live_hold(*hold_id)?.expires_at;
                if expires_at <= self.now {
                    return Err(Reject::HoldExpired { hold_id: *hold_id });
                }
                if self.status == EventStatus::Cancelled {
                    return Err(Reject::EventCancelled);
                }
                let hold = self.end(*hold_id, HoldState::Confirmed);
                Ok((Reply::Hold(hold.clone()), vec![Event::SeatsSold { hold }]))
            }
            Command::ConfirmAll { hold_ids } => {
                self.shape(cmd)?;
                for id in hold_ids {
                    if self.live_hold(*id)?.expires_at <= self.now {
                        return Err(Reject::HoldExpired { hold_id: *id });
                    }
                }
                if self.status == EventStatus::Cancelled {
                    return Err(Reject::EventCancelled);
                }
                let holds: Vec<Hold> = hold_ids.iter().map(|id| self.end(*id, HoldState::Confirmed)).collect();
                let events = holds.iter().map(|h| Event::SeatsSold { hold: h.clone() }).collect();
                Ok((Reply::Holds(holds), events))
            }
            Command::Block { seats } => {
                self.check_list(seats)?;
                if self.status == EventStatus::Cancelled {
                    return Err(Reject::EventCancelled);
                }
                let taken: Vec<SeatIdx> =
                    seats.iter().copied().filter(|s| matches!(self.seats[s.0 as usize], Owner::Held(_) | Owner::Sold(_))).collect();
                if !taken.is_empty() {
                    return Err(Reject::SeatsTaken { seats: taken });
                }
                let changed: Vec<SeatIdx> = seats.iter().copied().filter(|s| self.seats[s.0 as usize] == Owner::Free).collect();
                for s in &changed {
                    self.seats[s.0 as usize] = Owner::Blocked;
                }
                let reply = Reply::Seats { changed: changed.len() as u32 };
                let events = if changed.is_empty() { vec![] } else { vec![Event::SeatsBlocked { seats: changed }] };
                Ok((reply, events))
            }
            Command::Unblock { seats } => {
                self.check_list(seats)?;
                let not_blocked: Vec<SeatIdx> = seats.iter().copied().filter(|s| self.seats[s.0 as usize] != Owner::Blocked).collect();
                if !not_blocked.is_empty() {
                    return Err(Reject::SeatsNotBlocked { seats: not_blocked });
                }
                for s in seats {
                    self.seats[s.0 as usize] = Owner::Free;
                }
                Ok((Reply::Seats { changed: seats.len() as u32 }, vec![Event::SeatsUnblocked { seats: seats.clone() }]))
            }
            Command::SetStatus { to } => {
                let (from, to) = (self.status, *to);
                if from == to {
                    return Ok((Reply::Status { status: to }, vec![]));
                }
                if !can_become(from, to) {
                    return Err(Reject::StatusTransition { from, to });
                }
                self.status = to;
                let mut events = vec![Event::StatusChanged { from, to }];
                if to == EventStatus::Cancelled {
                    let live: Vec<HoldId> = self.active.iter().copied().collect();
                    for id in live {
                        let hold = self.end(id, HoldState::Released);
                        events.push(Event::HoldReleased { hold });
                    }
                }
                Ok((Reply::Status { status: to }, events))
            }
            Command::Expire => {
                let mut due: Vec<(Millis, HoldId)> =
                    self.active.iter().map(|id| (self.holds[id].expires_at, *id)).filter(|(at, _)| *at <= self.now).collect();
                due.sort();
                let events: Vec<Event> =
                    due.into_iter().map(|(_, id)| Event::HoldExpired { hold: self.end(id, HoldState::Expired) }).collect();
                let horizon = self.now.0.saturating_sub(IDEMPOTENCY_RETENTION_MS as i64);
                self.keys.retain(|_, r| r.at.0 >= horizon);
                Ok((Reply::Expired { holds: events.len() as u32 }, events))
            }
        }
    }

    /// `step` under an idempotency key.
    fn step_keyed(&mut self, key: &str, cmd: &Command, now: Millis, engine: &Decision) -> Decision {
        // A record answers for exactly the retention window.
        let horizon = now.max(self.now).0.saturating_sub(IDEMPOTENCY_RETENTION_MS as i64);
        self.keys.retain(|_, r| r.at.0 >= horizon);
        // A malformed request is answered as such before its key is looked up.
        if let Err(r) = self.shape(cmd) {
            return Decision { result: Err(r), events: vec![], record: None, replayed: false };
        }
        if let Some(rec) = self.keys.get(key) {
            let same = rec.request == request_of(cmd);
            let result = if same { rec.result.clone() } else { Err(Reject::IdempotencyKeyReused) };
            return Decision { result, events: vec![], record: None, replayed: same };
        }
        let engine_outcome = engine.result.clone().map(|reply| (reply, engine.events.clone()));
        let (result, events) = match self.step(cmd, now, &engine_outcome) {
            Ok((reply, events)) => (Ok(reply), events),
            // Nothing executed, so nothing is remembered under the key; nor
            // is a refusal to someone who does not own the hold.
            Err(r) if is_malformed(&r) || matches!(r, Reject::NotHoldOwner { .. }) => {
                return Decision { result: Err(r), events: vec![], record: None, replayed: false };
            }
            Err(r) => (Err(r), vec![]),
        };
        self.keys.insert(key.to_owned(), KeyRecord { request: request_of(cmd), result: result.clone(), at: now });
        Decision {
            result: result.clone(),
            events,
            record: Some(IdempotencyRecord {
                key: IdempotencyKey::parse(key).expect("valid key"),
                fingerprint: cmd.fingerprint(),
                at: now,
                result,
            }),
            replayed: false,
        }
    }
}

// ---------------------------------------------------------------------------
// Outcome statistics

#[derive(Default)]
struct Stats(BTreeMap<&'static str, u64>);

impl Stats {
    fn add(&mut self, label: &'static str) {
        *self.0.entry(label).or_default() += 1;
    }
    fn merge(&mut self, other: &Stats) {
        for (k, v) in &other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }
}

fn reject_name(r: &Reject) -> &'static str {
    match r {
        Reject::SeatListEmpty => "SeatListEmpty",
        Reject::SeatDuplicated { .. } => "SeatDuplicated",
        Reject::UnknownSeats { .. } => "UnknownSeats",
        Reject::QuantityInvalid { .. } => "QuantityInvalid",
        Reject::OverHoldLimit { .. } => "OverHoldLimit",
        Reject::IdempotencyKeyReused => "IdempotencyKeyReused",
        Reject::HoldNotFound { .. } => "HoldNotFound",
        Reject::NotHoldOwner { .. } => "NotHoldOwner",
        Reject::HoldExpired { .. } => "HoldExpired",
        Reject::HoldNotActive { .. } => "HoldNotActive",
        Reject::HoldIdExists { .. } => "HoldIdExists",
        Reject::StatusTransition { .. } => "StatusTransition",
        Reject::EventNotOnSale { .. } => "EventNotOnSale",
        Reject::OutsideSalesWindow { .. } => "OutsideSalesWindow",
        Reject::EventCancelled => "EventCancelled",
        Reject::CustomerHoldLimit { .. } => "CustomerHoldLimit",
        Reject::SeatsTaken { .. } => "SeatsTaken",
        Reject::SeatsNotBlocked { .. } => "SeatsNotBlocked",
        Reject::NotEnoughSeats { .. } => "NotEnoughSeats",
    }
}

fn outcome_name(cmd: &Command, result: Result<&Reply, &Reject>) -> &'static str {
    match result {
        Err(r) => reject_name(r),
        Ok(Reply::Expired { holds }) if *holds > 0 => "ok Expire ended holds",
        Ok(Reply::Hold(h)) if h.orphan_seats_left > 0 => "ok HoldBestAvailable stranding a seat",
        Ok(_) => match cmd {
            Command::HoldSeats { .. } => "ok HoldSeats",
            Command::HoldBestAvailable { .. } => "ok HoldBestAvailable",
            Command::Release { .. } => "ok Release",
            Command::Confirm { .. } => "ok Confirm",
            Command::ConfirmAll { .. } => "ok ConfirmAll",
            Command::Block { .. } => "ok Block",
            Command::Unblock { .. } => "ok Unblock",
            Command::SetStatus { .. } => "ok SetStatus",
            Command::Expire => "ok Expire",
        },
    }
}

// ---------------------------------------------------------------------------
// The simulator

#[derive(Debug)]
enum Op {
    Apply(Command),
    /// A first use of a key, a retry of its request, or a reuse for another.
    Keyed {
        key: String,
        cmd: Command,
        kind: KeyUse,
    },
    Advance(u64),
    Restart,
}

#[derive(Debug, Clone, Copy)]
enum KeyUse {
    Fresh,
    Retry,
    Reuse,
}

struct Sim {
    rng: Rng,
    grid: Grid,
    inv: Inventory,
    model: Model,
    clock: Millis,
    customers: Vec<CustomerId>,
    next_hold: u128,
    /// Every hold id the simulation has sent, accepted or not.
    hold_ids: Vec<HoldId>,
    /// Every hold the engine accepted, in order.
    placed: Vec<HoldId>,
    /// Every idempotency key used and the command first sent with it.
    keys: Vec<(String, Command)>,
    stats: Stats,
    digest: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let grid = Grid { sections: rng.range(2, 4) as u32, rows: rng.range(2, 6) as u32, per_row: rng.range(3, 12) as u32 };
        let layout =
            Layout::build(&grid_venue("Sim", grid.sections as usize, grid.rows as usize, grid.per_row)).expect("grid venue is valid");
        assert_eq!(layout.seat_count() as u32, grid.seats());
        let sales_start = if rng.chance(30) { T0.plus_ms(rng.range(1, 3_000)) } else { T0 };
        let sales_end =
            if rng.chance(20) { T0.plus_ms(rng.range(DAY_MS, 3 * DAY_MS)) } else { T0.plus_ms(rng.range(20 * DAY_MS, 40 * DAY_MS)) };
        let config = EventConfig {
            id: EventId(Uuid::from_u128(u128::from(seed) + 1)),
            venue_id: VenueId(Uuid::from_u128(7)),
            name: "Simulated".into(),
            starts_at: sales_end.plus_ms(HOUR_MS),
            sales_start,
            sales_end,
            status: if rng.chance(85) { EventStatus::OnSale } else { EventStatus::Draft },
            hold_duration_ms: rng.range(1_000, 10_000),
            hold_seats_max: rng.range(1, 8) as u32,
            prices: layout
                .categories
                .iter()
                .map(|_| Money { minor: 4_200, currency: Currency::parse("EUR").expect("valid currency") })
                .collect(),
            ..event_config(&layout, T0)
        };
        config.validate(&layout).expect("simulated config is valid");
        let model = Model {
            grid,
            hold_ms: config.hold_duration_ms,
            hold_max: config.hold_seats_max,
            sales_start,
            sales_end,
            status: config.status,
            now: T0,
            seats: vec![Owner::Free; grid.seats() as usize],
            holds: HashMap::new(),
            active: BTreeSet::new(),
            keys: HashMap::new(),
        };
        Sim {
            inv: Inventory::new(config, Arc::new(layout), T0),
            rng,
            grid,
            model,
            clock: T0,
            customers: CUSTOMERS.iter().map(|c| CustomerId::parse(c).expect("valid customer")).collect(),
            next_hold: 0,
            hold_ids: Vec::new(),
            placed: Vec::new(),
            keys: Vec::new(),
            stats: Stats::default(),
            digest: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn run(&mut self, steps: usize, trace: &mut VecDeque<String>) {
        self.check(true);
        for step in 0..steps {
            if self.rng.chance(30) {
                self.clock = self.clock.plus_ms(self.rng.below(300));
            }
            let op = self.next_op();
            if trace.len() == TRACE_LEN {
                trace.pop_front();
            }
            trace.push_back(format!("#{step} t=T0+{}ms {op:?}", self.clock.0 - T0.0));
            self.perform(op);
            self.check(step % 256 == 255);
        }
        self.check(true);
    }

    fn next_op(&mut self) -> Op {
        match self.rng.below(100) {
            0..=71 => Op::Apply(self.gen_command()),
            72..=83 => Op::Advance(self.gen_advance()),
            84..=88 => {
                let key = format!("k{}", self.keys.len());
                let cmd = self.gen_command();
                self.keys.push((key.clone(), cmd.clone()));
                Op::Keyed { key, cmd, kind: KeyUse::Fresh }
            }
            89..=93 if !self.keys.is_empty() => {
                let (key, first) = self.rng.pick(&self.keys).clone();
                // A retry picks a new hold id, as a client does per attempt.
                let cmd = match first {
                    Command::HoldSeats { customer, seats, .. } => Command::HoldSeats { hold_id: self.new_hold_id(), customer, seats },
                    Command::HoldBestAvailable { customer, quantity, section, category, .. } => {
                        Command::HoldBestAvailable { hold_id: self.new_hold_id(), customer, quantity, section, category }
                    }
                    other => other,
                };
                Op::Keyed { key, cmd, kind: KeyUse::Retry }
            }
            94..=96 if !self.keys.is_empty() => {
                let key = self.rng.pick(&self.keys).0.clone();
                Op::Keyed { key, cmd: self.gen_command(), kind: KeyUse::Reuse }
            }
            97..=99 => Op::Restart,
            _ => Op::Apply(self.gen_command()),
        }
    }

    fn new_hold_id(&mut self) -> HoldId {
        self.next_hold += 1;
        let id = HoldId(Uuid::from_u128(self.next_hold));
        self.hold_ids.push(id);
        id
    }

    fn hold_id_for_new_hold(&mut self) -> HoldId {
        if self.rng.chance(4) && !self.placed.is_empty() { *self.rng.pick(&self.placed) } else { self.new_hold_id() }
    }

    fn existing_hold_id(&mut self) -> HoldId {
        let r = self.rng.below(100);
        if r < 60 && !self.model.active.is_empty() {
            let live: Vec<HoldId> = self.model.active.iter().copied().collect();
            *self.rng.pick(&live)
        } else if r < 80 && !self.placed.is_empty() {
            *self.rng.pick(&self.placed)
        } else if r < 88 && !self.hold_ids.is_empty() {
            // Possibly never placed: rejected when first sent.
            *self.rng.pick(&self.hold_ids)
        } else {
            HoldId(Uuid::from_u128(u128::MAX - u128::from(self.rng.below(1_000))))
        }
    }

    /// Skewed towards the first customer so that the per-customer hold limit
    /// is reached now and then.
    fn customer(&mut self) -> CustomerId {
        if self.rng.chance(50) { self.customers[0].clone() } else { self.rng.pick(&self.customers).clone() }
    }

    /// `k` distinct seats, mostly ones the model says are in state `want`.
    fn some_seats(&mut self, want: SeatState, k: usize) -> Vec<SeatIdx> {
        let n = self.grid.seats();
        let candidates: Vec<u32> = (0..n).filter(|&s| self.model.seats[s as usize].state() == want).collect();
        let mut out: Vec<SeatIdx> = Vec::with_capacity(k);
        let mut tries = 0;
        while out.len() < k && tries < 4 * k + 8 {
            tries += 1;
            let s = if self.rng.chance(80) && !candidates.is_empty() {
                *self.rng.pick(&candidates)
            } else {
                self.rng.below(u64::from(n)) as u32
            };
            if !out.contains(&SeatIdx(s)) {
                out.push(SeatIdx(s));
            }
        }
        out
    }

    fn seat_list(&mut self, want: SeatState, max: usize) -> Vec<SeatIdx> {
        let n = self.grid.seats();
        match self.rng.below(100) {
            0..=3 => vec![],
            4..=9 => {
                let k = self.rng.range(1, 3) as usize;
                let mut v = self.some_seats(want, k);
                let dup = *self.rng.pick(&v);
                let at = self.rng.index(v.len() + 1);
                v.insert(at, dup);
                v
            }
            10..=15 => {
                let k = self.rng.range(0, 2) as usize;
                let mut v = self.some_seats(want, k);
                let unknown = SeatIdx(n + self.rng.below(4) as u32);
                let at = self.rng.index(v.len() + 1);
                v.insert(at, unknown);
                if self.rng.chance(30) {
                    v.push(SeatIdx(u32::MAX));
                }
                v
            }
            16..=21 => {
                let k = max + self.rng.range(1, 3) as usize;
                self.some_seats(want, k)
            }
            _ => {
                let k = self.rng.range(1, max.clamp(1, 4) as u64) as usize;
                self.some_seats(want, k)
            }
        }
    }

    fn gen_status(&mut self) -> EventStatus {
        match self.rng.below(100) {
            // Cancelling ends the run's interesting life, so it is rare.
            0 if self.rng.chance(30) => EventStatus::Cancelled,
            0..=60 => EventStatus::OnSale,
            61..=80 => EventStatus::SalesClosed,
            _ => EventStatus::Draft,
        }
    }

    fn gen_command(&mut self) -> Command {
        let hold_max = self.model.hold_max as usize;
        match self.rng.below(100) {
            0..=29 => Command::HoldSeats {
                hold_id: self.hold_id_for_new_hold(),
                customer: self.customer(),
                seats: self.seat_list(SeatState::Available, hold_max),
            },
            30..=47 => Command::HoldBestAvailable {
                hold_id: self.hold_id_for_new_hold(),
                customer: self.customer(),
                quantity: if self.rng.chance(80) {
                    self.rng.range(1, u64::from(self.model.hold_max)) as u32
                } else {
                    self.rng.below(9) as u32
                },
                section: if self.rng.chance(25) { Some(self.rng.below(u64::from(self.grid.sections) + 1) as u16) } else { None },
                category: if self.rng.chance(20) { Some(self.rng.below(3) as u16) } else { None },
            },
            48..=61 => {
                let hold_id = self.existing_hold_id();
                let customer = match self.rng.below(10) {
                    0..=2 => None,
                    3..=7 => match self.model.holds.get(&hold_id) {
                        Some(h) => Some(h.customer.clone()),
                        None => Some(self.customer()),
                    },
                    _ => Some(self.customer()),
                };
                Command::Release { hold_id, customer }
            }
            62..=70 => Command::Confirm { hold_id: self.existing_hold_id() },
            71..=75 => {
                let n = 1 + self.rng.below(3) as usize;
                Command::ConfirmAll { hold_ids: (0..n).map(|_| self.existing_hold_id()).collect() }
            }
            76..=82 => Command::Block { seats: self.seat_list(SeatState::Available, 4) },
            83..=89 => Command::Unblock { seats: self.seat_list(SeatState::Blocked, 4) },
            90..=92 => Command::SetStatus { to: self.gen_status() },
            _ => Command::Expire,
        }
    }

    fn gen_advance(&mut self) -> u64 {
        let hold_ms = self.model.hold_ms;
        if self.rng.below(1_000) < 4 {
            // Land just before or exactly on an edge of the sales window. Rare:
            // past the end nothing can be held any more.
            let edge = if self.rng.chance(50) { self.model.sales_start } else { self.model.sales_end };
            let target = edge.0 - self.rng.below(2) as i64;
            if target >= self.clock.0 {
                return (target - self.clock.0) as u64;
            }
        }
        match self.rng.below(100) {
            0..=49 => self.rng.below(1_000),
            50..=69 => match self.model.next_expiry() {
                // Land just before, exactly on, or just after the next expiry.
                Some(t) => {
                    let target = t.0 - 1 + self.rng.below(3) as i64;
                    (target - self.clock.0).max(0) as u64
                }
                None => self.rng.below(1_000),
            },
            70..=89 => self.rng.range(hold_ms / 2, hold_ms * 3),
            90..=98 => self.rng.range(1, 6) * HOUR_MS,
            // Past the idempotency retention.
            _ => IDEMPOTENCY_RETENTION_MS + self.rng.below(HOUR_MS),
        }
    }

    fn perform(&mut self, op: Op) {
        let before = self.inv.seat_states().to_vec();
        match op {
            Op::Apply(cmd) => {
                let got = self.inv.apply(&cmd, self.clock);
                let want = self.model.step(&cmd, self.clock, &got);
                assert_eq!(got, want, "engine and model disagree on {cmd:?}");
                self.note(&cmd, got.as_ref().map(|(r, _)| r));
                self.track_placed(got.as_ref().map(|(r, _)| r));
                self.check_outcome(&cmd, got.as_ref().map(|(r, _)| r), &before);
            }
            Op::Keyed { key, cmd, kind } => {
                let k = IdempotencyKey::parse(&key).expect("valid key");
                let now_before = self.inv.now();
                // A replay only while the first answer is within the retention.
                let horizon = self.clock.max(self.model.now).0.saturating_sub(IDEMPOTENCY_RETENTION_MS as i64);
                let replay = self.model.keys.get(&key).is_some_and(|r| r.at.0 >= horizon);
                let got = self.inv.apply_keyed(&k, &cmd, self.clock);
                let want = self.model.step_keyed(&key, &cmd, self.clock, &got);
                assert_eq!(got, want, "engine and model disagree on {kind:?} key {key} {cmd:?}");
                if replay {
                    // A replay or a refused reuse: nothing happened at all.
                    assert!(got.record.is_none(), "a replay was recorded again");
                    assert!(got.events.is_empty(), "a replay emitted events");
                    assert_eq!(self.inv.seat_states(), &before[..], "a replay changed seats");
                    assert_eq!(self.inv.now(), now_before, "a replay moved the clock");
                    self.stats.add(match got.result {
                        Err(Reject::IdempotencyKeyReused) => "IdempotencyKeyReused",
                        _ => "replayed",
                    });
                    if matches!(kind, KeyUse::Retry) {
                        assert_ne!(got.result, Err(Reject::IdempotencyKeyReused), "a retry of the same request was refused as a reuse");
                    }
                } else {
                    if got.record.is_some() {
                        // A first use, or a key whose record had been
                        // forgotten: from now on a retry means this request.
                        if let Some(entry) = self.keys.iter_mut().find(|(k, _)| *k == key) {
                            entry.1 = cmd.clone();
                        }
                    } else {
                        self.stats.add("malformed, not remembered");
                    }
                    self.note(&cmd, got.result.as_ref());
                    self.track_placed(got.result.as_ref());
                    self.check_outcome(&cmd, got.result.as_ref(), &before);
                }
                self.fold(&format!("{:?}", got.result));
            }
            Op::Advance(ms) => {
                self.clock = self.clock.plus_ms(ms);
            }
            Op::Restart => self.restart(),
        }
    }

    fn track_placed(&mut self, result: Result<&Reply, &Reject>) {
        if let Ok(Reply::Hold(h)) = result
            && h.state == HoldState::Active
        {
            self.placed.push(h.id);
        }
    }

    fn note(&mut self, cmd: &Command, result: Result<&Reply, &Reject>) {
        self.stats.add(outcome_name(cmd, result));
        self.fold(&format!("{result:?}"));
    }

    fn fold(&mut self, s: &str) {
        let mut h = Fnv(self.digest);
        h.add(s);
        self.digest = h.0;
    }

    /// Spec-level checks that hold whatever the model says.
    fn check_outcome(&self, cmd: &Command, result: Result<&Reply, &Reject>, before: &[SeatState]) {
        match result {
            Err(r) => assert_eq!(self.inv.seat_states(), before, "rejected {cmd:?} ({r:?}) changed seats"),
            Ok(Reply::Hold(h)) if h.state == HoldState::Active => {
                for s in &h.seats {
                    assert_eq!(before[s.0 as usize], SeatState::Available, "accepted hold {h:?} took seat {s:?} that was not available");
                }
            }
            Ok(_) => {}
        }
    }

    fn restart(&mut self) {
        let restored = Inventory::restore(self.inv.config().clone(), self.inv.layout().clone(), self.inv.snapshot(), self.clock)
            .unwrap_or_else(|e| panic!("restore refused the engine's own snapshot: {e}"));
        assert_eq!(restored.counts(), self.inv.counts(), "restore changed counts");
        assert_eq!(restored.seat_states(), self.inv.seat_states(), "restore changed seats");
        assert_eq!(restored.next_expiry(), self.inv.next_expiry(), "restore changed next expiry");
        assert_eq!(restored.config(), self.inv.config(), "restore changed config");
        let (old, new) = (self.inv.snapshot(), restored.snapshot());
        assert_eq!(old.blocked, new.blocked, "restore changed blocked seats");
        assert_eq!(old.holds, new.holds, "restore changed holds");
        assert_eq!(old.idempotency, new.idempotency, "restore changed idempotency records");
        self.inv = restored;
        self.model.now = self.clock;
        self.stats.add("restarted");
        self.check(true);
    }

    /// Compares engine and model after a step; `full` also compares every hold
    /// ever placed and every idempotency record.
    fn check(&self, full: bool) {
        self.inv.check_invariants().unwrap_or_else(|e| panic!("engine invariant broken: {e}"));
        assert_eq!(self.inv.now(), self.model.now, "engine clock");
        let states = self.inv.seat_states();
        assert_eq!(states.len(), self.model.seats.len(), "seat count");
        for (i, (got, owner)) in states.iter().zip(&self.model.seats).enumerate() {
            assert_eq!(*got, owner.state(), "seat {i} is {got:?} in the engine, model says {owner:?}");
        }
        assert_eq!(self.inv.counts(), self.model.counts(), "counts");
        assert_eq!(self.inv.next_expiry(), self.model.next_expiry(), "next expiry");
        // Live holds: the same set, the same content, and no seat in two.
        let mut claimed = vec![None::<HoldId>; states.len()];
        let mut live = 0;
        for h in self.inv.active_holds() {
            live += 1;
            assert!(self.model.active.contains(&h.id), "engine has live hold {h:?} the model does not");
            assert_eq!(Some(h), self.model.holds.get(&h.id), "live hold {}", h.id);
            for s in &h.seats {
                let c = &mut claimed[s.0 as usize];
                assert!(c.is_none(), "seat {s:?} is in holds {c:?} and {}", h.id);
                *c = Some(h.id);
            }
        }
        assert_eq!(live, self.model.active.len(), "number of live holds");
        if full {
            for (id, h) in &self.model.holds {
                assert_eq!(self.inv.hold(*id), Some(h), "hold {id}");
            }
            let records = self.inv.snapshot().idempotency;
            assert_eq!(records.len(), self.model.keys.len(), "idempotency records kept");
            for r in &records {
                let m =
                    self.model.keys.get(r.key.as_str()).unwrap_or_else(|| panic!("engine kept record {} the model forgot", r.key.as_str()));
                assert_eq!((&r.result, r.at), (&m.result, m.at), "record {}", r.key.as_str());
            }
        }
    }
}
