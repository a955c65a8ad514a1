//! Property tests of the inventory state machine: statements that must hold for
//! every venue shape and every command sequence proptest can come up with.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use usher_engine::{
    Command, CustomerId, EventConfig, EventStatus, Hold, HoldId, IdempotencyKey, IdempotencyRecord, Inventory, Layout, Millis, Reject,
    Reply, SeatIdx, SeatState, Snapshot, grid_venue,
};
use usher_test_support::event_config;
use uuid::Uuid;

const T0: Millis = Millis(1_700_000_000_000);
const HOLD_SEATS_MAX: u32 = 6;
const CUSTOMERS: &[&str] = &["alice", "bob", "carol"];
/// A hold id and a customer that the generated commands never use.
const FRESH_HOLD: u128 = 10_000;
const FRESH_CUSTOMER: &str = "zed";

/// `(sections, rows, seats per row)` of a `grid_venue`.
type Grid = (usize, usize, u32);

fn hid(n: u128) -> HoldId {
    HoldId(Uuid::from_u128(n))
}

fn cust(s: &str) -> CustomerId {
    CustomerId::parse(s).unwrap()
}

fn inventory((sections, rows, per_row): Grid) -> Inventory {
    let layout = Layout::build(&grid_venue("p", sections, rows, per_row)).unwrap();
    let config = EventConfig { name: "Properties".into(), hold_seats_max: HOLD_SEATS_MAX, ..event_config(&layout, T0) };
    config.validate(&layout).unwrap();
    Inventory::new(config, Arc::new(layout), T0)
}

fn seat_count((sections, rows, per_row): Grid) -> u32 {
    sections as u32 * rows as u32 * per_row
}

fn arb_grid() -> impl Strategy<Value = Grid> {
    (1usize..=3, 1usize..=3, 1u32..=6)
}

/// Seat lists for a venue of `n` seats: mostly 1 to 6 distinct known seats,
/// now and then a raw list of 0 to 7 entries that may hold an unknown seat or a
/// duplicate.
fn arb_seats(n: u32) -> impl Strategy<Value = Vec<SeatIdx>> + Clone {
    let distinct = prop::sample::subsequence((0..n).map(SeatIdx).collect::<Vec<_>>(), 1..=n.min(6) as usize);
    let raw = vec(prop_oneof![9 => 0..n, 1 => n..n + 3].prop_map(SeatIdx), 0..=7);
    prop_oneof![8 => distinct, 2 => raw]
}

fn arb_customer() -> impl Strategy<Value = CustomerId> + Clone {
    prop::sample::select(CUSTOMERS).prop_map(cust)
}

fn arb_hold_id() -> impl Strategy<Value = HoldId> + Clone {
    // A small pool, so that releases and confirmations find real holds.
    (1u128..=10).prop_map(hid)
}

fn arb_status() -> impl Strategy<Value = EventStatus> {
    prop_oneof![Just(EventStatus::Draft), Just(EventStatus::OnSale), Just(EventStatus::SalesClosed), Just(EventStatus::Cancelled),]
}

/// Any command against a venue of `n` seats and `sections` sections;
/// `with_status` adds status changes, which can stop sales for good.
fn arb_command(n: u32, sections: u16, with_status: bool) -> BoxedStrategy<Command> {
    let seats = arb_seats(n);
    let base = prop_oneof![
        5 => (arb_hold_id(), arb_customer(), seats.clone()).prop_map(
            |(hold_id, customer, seats)| Command::HoldSeats { hold_id, customer, seats }
        ),
        3 => (
            arb_hold_id(),
            arb_customer(),
            0u32..=8,
            option::of(0..sections + 1),
            option::of(0u16..3),
        )
            .prop_map(|(hold_id, customer, quantity, section, category)| {
                Command::HoldBestAvailable { hold_id, customer, quantity, section, category }
            }),
        3 => (arb_hold_id(), option::of(arb_customer()))
            .prop_map(|(hold_id, customer)| Command::Release { hold_id, customer }),
        3 => arb_hold_id().prop_map(|hold_id| Command::Confirm { hold_id }),
        1 => seats.clone().prop_map(|seats| Command::Block { seats }),
        1 => seats.prop_map(|seats| Command::Unblock { seats }),
        1 => Just(Command::Expire),
    ]
    .boxed();
    if with_status {
        prop_oneof![
            14 => base,
            1 => arb_status().prop_map(|to| Command::SetStatus { to }),
        ]
        .boxed()
    } else {
        base
    }
}

/// Commands, each after a delay of up to 20 s.
fn arb_script(grid: Grid, with_status: bool, len: usize) -> impl Strategy<Value = Vec<(u64, Command)>> {
    let cmd = arb_command(seat_count(grid), grid.0 as u16, with_status);
    vec((0u64..20_000, cmd), 0..=len)
}

fn run(inv: &mut Inventory, script: &[(u64, Command)]) {
    for (delay, cmd) in script {
        let now = inv.now().plus_ms(*delay);
        let _ = inv.apply(cmd, now);
    }
}

/// Everything observable about an inventory's state, for before/after checks.
#[derive(Debug, PartialEq)]
struct Observed {
    seats: Vec<SeatState>,
    counts: usher_engine::Counts,
    next_expiry: Option<Millis>,
    status: EventStatus,
    blocked: Vec<SeatIdx>,
    holds: Vec<Hold>,
    idempotency: Vec<IdempotencyRecord>,
}

fn observe(inv: &Inventory) -> Observed {
    let snap = inv.snapshot();
    Observed {
        seats: inv.seat_states().to_vec(),
        counts: inv.counts(),
        next_expiry: inv.next_expiry(),
        status: inv.config().status,
        blocked: snap.blocked,
        holds: snap.holds,
        idempotency: snap.idempotency,
    }
}

/// The same request under a new per-attempt hold id, as a client retry sends it.
fn with_new_hold_id(cmd: &Command, id: HoldId) -> Command {
    let mut c = cmd.clone();
    match &mut c {
        Command::HoldSeats { hold_id, .. } | Command::HoldBestAvailable { hold_id, .. } => {
            *hold_id = id;
        }
        _ => {}
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn accepted_holds_never_share_a_seat_and_held_count_is_their_total(
        (grid, holds) in arb_grid().prop_flat_map(|g| {
            let n = seat_count(g);
            (Just(g), vec((arb_hold_id(), arb_customer(), arb_seats(n)), 0..40))
        })
    ) {
        let mut inv = inventory(grid);
        let n = seat_count(grid);
        let mut taken = HashSet::new();
        for (hold_id, customer, seats) in holds {
            let cmd = Command::HoldSeats { hold_id, customer, seats: seats.clone() };
            if let Ok((Reply::Hold(h), _)) = inv.apply(&cmd, T0) {
                prop_assert_eq!(&h.seats, &seats);
                for s in &h.seats {
                    prop_assert!(taken.insert(*s), "seat {:?} is in two accepted holds", s);
                }
            }
            prop_assert_eq!(inv.counts().held as usize, taken.len());
            prop_assert_eq!(inv.counts().available as usize, n as usize - taken.len());
            for s in &taken {
                prop_assert_eq!(inv.seat_state(*s), Some(SeatState::Held));
            }
        }
    }

    #[test]
    fn hold_then_release_returns_every_seat_to_where_it_was(
        (grid, script, picks) in arb_grid().prop_flat_map(|g| {
            (Just(g), arb_script(g, false, 30), vec(any::<usize>(), 1..=HOLD_SEATS_MAX as usize))
        })
    ) {
        let mut inv = inventory(grid);
        run(&mut inv, &script);
        let free: Vec<SeatIdx> = (0..seat_count(grid))
            .map(SeatIdx)
            .filter(|s| inv.seat_state(*s) == Some(SeatState::Available))
            .collect();
        prop_assume!(!free.is_empty());
        let mut seats: Vec<SeatIdx> = picks.iter().map(|p| free[p % free.len()]).collect();
        seats.sort();
        seats.dedup();
        let before = observe(&inv);
        let now = inv.now();
        let hold = Command::HoldSeats {
            hold_id: hid(FRESH_HOLD),
            customer: cust(FRESH_CUSTOMER),
            seats: seats.clone(),
        };
        let (reply, _) = inv.apply(&hold, now).unwrap();
        prop_assert!(matches!(reply, Reply::Hold(ref h) if h.seats == seats));
        for s in &seats {
            prop_assert_eq!(inv.seat_state(*s), Some(SeatState::Held));
        }
        let release = Command::Release {
            hold_id: hid(FRESH_HOLD),
            customer: Some(cust(FRESH_CUSTOMER)),
        };
        inv.apply(&release, now).unwrap();
        let after = observe(&inv);
        prop_assert_eq!(&after.seats, &before.seats);
        prop_assert_eq!(after.counts, before.counts);
        prop_assert_eq!(after.next_expiry, before.next_expiry);
    }

    #[test]
    fn a_rejected_command_changes_nothing(
        (grid, script) in arb_grid().prop_flat_map(|g| (Just(g), arb_script(g, true, 60)))
    ) {
        let mut inv = inventory(grid);
        for (delay, cmd) in &script {
            let before = observe(&inv);
            let now = inv.now().plus_ms(*delay);
            let result = inv.apply(cmd, now);
            prop_assert!(inv.check_invariants().is_ok(), "{:?}", inv.check_invariants());
            if let Err(reject) = result {
                prop_assert_eq!(observe(&inv), before, "{:?} was rejected with {:?}", cmd, reject);
            }
        }
    }

    #[test]
    fn best_available_takes_exactly_q_free_seats_or_reports_the_shortage(
        (grid, script, quantity, section, category) in arb_grid().prop_flat_map(|g| (
            Just(g),
            arb_script(g, false, 20),
            prop_oneof![8 => 1..=HOLD_SEATS_MAX, 1 => Just(0), 1 => HOLD_SEATS_MAX + 1..=8],
            option::of(0..g.0 as u16 + 1),
            option::of(0u16..3),
        ))
    ) {
        let mut inv = inventory(grid);
        run(&mut inv, &script);
        let layout = inv.layout().clone();
        let matches = |s: SeatIdx| {
            section.is_none_or(|want| layout.row_of(s).section == want)
                && category.is_none_or(|want| layout.category_of(s) == want)
        };
        let free: Vec<SeatIdx> = (0..seat_count(grid))
            .map(SeatIdx)
            .filter(|s| inv.seat_state(*s) == Some(SeatState::Available) && matches(*s))
            .collect();
        let before = observe(&inv);
        let cmd = Command::HoldBestAvailable {
            hold_id: hid(FRESH_HOLD),
            customer: cust(FRESH_CUSTOMER),
            quantity,
            section,
            category,
        };
        let result = inv.apply(&cmd, inv.now());
        if quantity == 0 {
            prop_assert_eq!(result, Err(Reject::QuantityInvalid { quantity }));
        } else if quantity > HOLD_SEATS_MAX {
            prop_assert_eq!(
                result,
                Err(Reject::OverHoldLimit { requested: quantity, max: HOLD_SEATS_MAX })
            );
        } else if (free.len() as u32) < quantity {
            prop_assert_eq!(
                result,
                Err(Reject::NotEnoughSeats { requested: quantity, available: free.len() as u32 })
            );
        } else {
            let (reply, _) = result.unwrap();
            let Reply::Hold(h) = reply else {
                return Err(TestCaseError::fail(format!("not a hold: {reply:?}")));
            };
            prop_assert_eq!(h.seats.len(), quantity as usize);
            let distinct: HashSet<SeatIdx> = h.seats.iter().copied().collect();
            prop_assert_eq!(distinct.len(), h.seats.len(), "duplicates in {:?}", h.seats);
            for s in &h.seats {
                prop_assert!(free.contains(s), "{:?} was not a free matching seat", s);
                prop_assert_eq!(inv.seat_state(*s), Some(SeatState::Held));
            }
            prop_assert_eq!(inv.counts().held, before.counts.held + quantity);
            return Ok(());
        }
        prop_assert_eq!(observe(&inv), before);
    }

    #[test]
    fn fingerprint_ignores_the_hold_id_but_not_the_request(
        (h1, h2) in (any::<u128>(), any::<u128>()),
        (c1, c2) in (arb_customer(), arb_customer()),
        (a, b) in (arb_seats(50), arb_seats(50)),
        (q1, q2) in (0u32..10, 0u32..10),
        section in option::of(0u16..4),
        category in option::of(0u16..3),
    ) {
        let hold = |id, c: &CustomerId, seats: &Vec<SeatIdx>| Command::HoldSeats {
            hold_id: hid(id),
            customer: c.clone(),
            seats: seats.clone(),
        };
        prop_assert_eq!(hold(h1, &c1, &a).fingerprint(), hold(h2, &c1, &a).fingerprint());
        if a != b {
            prop_assert_ne!(hold(h1, &c1, &a).fingerprint(), hold(h1, &c1, &b).fingerprint());
        }
        if c1 != c2 {
            prop_assert_ne!(hold(h1, &c1, &a).fingerprint(), hold(h1, &c2, &a).fingerprint());
        }
        let best = |id, q| Command::HoldBestAvailable {
            hold_id: hid(id),
            customer: c1.clone(),
            quantity: q,
            section,
            category,
        };
        prop_assert_eq!(best(h1, q1).fingerprint(), best(h2, q1).fingerprint());
        if q1 != q2 {
            prop_assert_ne!(best(h1, q1).fingerprint(), best(h1, q2).fingerprint());
        }
        // For commands on an existing hold the hold id *is* the request.
        if h1 != h2 {
            prop_assert_ne!(
                Command::Confirm { hold_id: hid(h1) }.fingerprint(),
                Command::Confirm { hold_id: hid(h2) }.fingerprint()
            );
            prop_assert_ne!(
                Command::Release { hold_id: hid(h1), customer: None }.fingerprint(),
                Command::Release { hold_id: hid(h2), customer: None }.fingerprint()
            );
        }
        prop_assert_ne!(
            Command::Block { seats: a.clone() }.fingerprint(),
            Command::Unblock { seats: a.clone() }.fingerprint()
        );
        if !a.is_empty() {
            prop_assert_ne!(
                Command::Block { seats: a.clone() }.fingerprint(),
                hold(h1, &c1, &a).fingerprint()
            );
        }
    }

    #[test]
    fn snapshot_then_restore_is_the_same_inventory(
        (grid, script, keyed, more) in arb_grid().prop_flat_map(|g| (
            Just(g),
            arb_script(g, true, 40),
            vec(any::<bool>(), 40),
            arb_script(g, true, 20),
        ))
    ) {
        let mut inv = inventory(grid);
        for (i, (delay, cmd)) in script.iter().enumerate() {
            let now = inv.now().plus_ms(*delay);
            if keyed[i] {
                let key = IdempotencyKey::parse(&format!("k{}", i % 7)).unwrap();
                inv.apply_keyed(&key, cmd, now);
            } else {
                let _ = inv.apply(cmd, now);
            }
        }
        // Through JSON, as storage would hand it back.
        let snap = inv.snapshot();
        let json = serde_json::to_string(&(&snap.blocked, &snap.holds, &snap.idempotency)).unwrap();
        let (blocked, holds, idempotency) = serde_json::from_str(&json).unwrap();
        let snap = Snapshot { blocked, holds, idempotency };
        let mut restored = Inventory::restore(
            inv.config().clone(),
            inv.layout().clone(),
            snap,
            inv.now(),
        ).unwrap();
        prop_assert_eq!(observe(&restored), observe(&inv));
        prop_assert_eq!(restored.now(), inv.now());
        // And it behaves the same from here on.
        for (i, (delay, cmd)) in more.iter().enumerate() {
            let now = inv.now().plus_ms(*delay);
            let key = IdempotencyKey::parse(&format!("k{}", i % 9)).unwrap();
            prop_assert_eq!(restored.apply_keyed(&key, cmd, now), inv.apply_keyed(&key, cmd, now));
            prop_assert_eq!(observe(&restored), observe(&inv));
        }
    }

    #[test]
    fn a_keyed_retry_gets_the_first_answer_and_changes_nothing(
        (grid, script, cmd, other) in arb_grid().prop_flat_map(|g| {
            let n = seat_count(g);
            (
                Just(g),
                arb_script(g, true, 30),
                arb_command(n, g.0 as u16, true),
                arb_command(n, g.0 as u16, true),
            )
        }),
        delay in 0u64..120_000,
    ) {
        let mut inv = inventory(grid);
        run(&mut inv, &script);
        let key = IdempotencyKey::parse("retry-me").unwrap();
        let before = observe(&inv);
        let first = inv.apply_keyed(&key, &cmd, inv.now());
        let malformed = matches!(
            first.result,
            Err(Reject::SeatListEmpty
                | Reject::SeatDuplicated { .. }
                | Reject::UnknownSeats { .. }
                | Reject::QuantityInvalid { .. }
                | Reject::OverHoldLimit { .. }
                | Reject::NotHoldOwner { .. })
        );
        // Exactly the malformed requests and a stranger's go unrecorded: nothing executed.
        prop_assert_eq!(first.record.is_none(), malformed, "{:?}", first.result);
        if malformed {
            prop_assert!(first.events.is_empty());
            prop_assert_eq!(observe(&inv), before);
            return Ok(());
        }
        if first.result.is_err() {
            prop_assert!(first.events.is_empty());
        }
        let after_first = observe(&inv);
        let later = inv.now().plus_ms(delay);
        let retry = inv.apply_keyed(&key, &with_new_hold_id(&cmd, hid(FRESH_HOLD)), later);
        prop_assert_eq!(&retry.result, &first.result);
        prop_assert!(retry.events.is_empty() && retry.record.is_none());
        prop_assert_eq!(&observe(&inv), &after_first);
        if other.fingerprint() != cmd.fingerprint() {
            // The request's shape is judged first, then the key's reuse.
            let want = inv.check_shape(&other).err().unwrap_or(Reject::IdempotencyKeyReused);
            let reused = inv.apply_keyed(&key, &other, later);
            prop_assert_eq!(reused.result, Err(want));
            prop_assert!(reused.events.is_empty() && reused.record.is_none());
            prop_assert_eq!(observe(&inv), after_first);
        }
    }
}
