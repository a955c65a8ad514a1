//! Unit tests of the inventory state machine, named as specs.

use super::*;
use std::sync::Arc;
use uuid::Uuid;

pub(crate) const T0: Millis = Millis(1_700_000_000_000);

pub(crate) fn config(layout: &Layout) -> EventConfig {
    EventConfig {
        time_zone: "UTC".into(),
        id: EventId(Uuid::from_u128(1)),
        org_id: crate::OrgId(Uuid::from_u128(3)),
        venue_id: VenueId(Uuid::from_u128(2)),
        name: "Test".into(),
        description: String::new(),
        starts_at: T0.plus_ms(86_400_000),
        sales_start: Millis(0),
        sales_end: T0.plus_ms(86_400_000),
        status: EventStatus::OnSale,
        hold_duration_ms: 60_000,
        hold_seats_max: 6,
        prices: layout.categories.iter().map(|_| Money { minor: 5000, currency: Currency::parse("EUR").unwrap() }).collect(),
    }
}

fn inv(sections: usize, rows: usize, per_row: u32) -> Inventory {
    let layout = Layout::build(&grid_venue("v", sections, rows, per_row)).unwrap();
    let c = config(&layout);
    Inventory::new(c, Arc::new(layout), T0)
}

fn hid(n: u128) -> HoldId {
    HoldId(Uuid::from_u128(n))
}
fn cust(s: &str) -> CustomerId {
    CustomerId::parse(s).unwrap()
}
fn seats(v: &[u32]) -> Vec<SeatIdx> {
    v.iter().map(|&i| SeatIdx(i)).collect()
}
fn hold(i: &mut Inventory, id: u128, who: &str, s: &[u32]) -> Result<(Reply, Vec<Event>), Reject> {
    i.apply(&Command::HoldSeats { hold_id: hid(id), customer: cust(who), seats: seats(s) }, i.now())
}

#[test]
fn hold_takes_all_seats_or_none() {
    let mut i = inv(1, 2, 5);
    hold(&mut i, 1, "a", &[1, 2]).unwrap();
    let err = hold(&mut i, 2, "b", &[0, 2, 3]).unwrap_err();
    assert_eq!(err, Reject::SeatsTaken { seats: seats(&[2]) });
    assert_eq!(i.seat_state(SeatIdx(0)), Some(SeatState::Available));
    assert_eq!(i.seat_state(SeatIdx(3)), Some(SeatState::Available));
    assert_eq!(i.counts(), Counts { available: 8, held: 2, sold: 0, blocked: 0 });
}

#[test]
fn hold_is_rejected_when_seat_is_sold() {
    let mut i = inv(1, 1, 4);
    hold(&mut i, 1, "a", &[0]).unwrap();
    i.apply(&Command::Confirm { hold_id: hid(1) }, T0).unwrap();
    assert_eq!(hold(&mut i, 2, "b", &[0]).unwrap_err(), Reject::SeatsTaken { seats: seats(&[0]) });
    assert_eq!(i.counts().sold, 1);
}

#[test]
fn malformed_seat_lists_are_rejected_in_precedence_order() {
    let mut i = inv(1, 1, 10);
    assert_eq!(hold(&mut i, 1, "a", &[]).unwrap_err(), Reject::SeatListEmpty);
    assert_eq!(hold(&mut i, 1, "a", &[1, 1]).unwrap_err(), Reject::SeatDuplicated { seat: SeatIdx(1) });
    assert_eq!(hold(&mut i, 1, "a", &[1, 99]).unwrap_err(), Reject::UnknownSeats { seats: seats(&[99]) });
    assert_eq!(hold(&mut i, 1, "a", &[0, 1, 2, 3, 4, 5, 6]).unwrap_err(), Reject::OverHoldLimit { requested: 7, max: 6 });
    assert_eq!(i.counts().available, 10);
}

#[test]
fn hold_is_rejected_when_event_is_not_on_sale_or_outside_window() {
    let mut i = inv(1, 1, 10);
    i.apply(&Command::SetStatus { to: EventStatus::SalesClosed }, T0).unwrap();
    assert_eq!(hold(&mut i, 1, "a", &[0]).unwrap_err(), Reject::EventNotOnSale { status: EventStatus::SalesClosed });
    i.apply(&Command::SetStatus { to: EventStatus::OnSale }, T0).unwrap();
    let end = i.config().sales_end;
    i.apply(&Command::Expire, end).unwrap();
    assert!(matches!(hold(&mut i, 1, "a", &[0]).unwrap_err(), Reject::OutsideSalesWindow { .. }));
}

#[test]
fn expire_frees_seats_exactly_at_expiry() {
    let mut i = inv(1, 1, 4);
    let (Reply::Hold(h), _) = hold(&mut i, 1, "a", &[0, 1]).unwrap() else { panic!() };
    assert_eq!(h.expires_at, T0.plus_ms(60_000));
    let (r, ev) = i.apply(&Command::Expire, Millis(h.expires_at.0 - 1)).unwrap();
    assert_eq!((r, ev.len()), (Reply::Expired { holds: 0 }, 0));
    let (r, ev) = i.apply(&Command::Expire, h.expires_at).unwrap();
    assert_eq!(r, Reply::Expired { holds: 1 });
    assert!(matches!(&ev[0], Event::HoldExpired { hold } if hold.seats == seats(&[0, 1]) && hold.state == HoldState::Expired));
    assert_eq!(i.counts().available, 4);
    assert_eq!(i.apply(&Command::Confirm { hold_id: hid(1) }, h.expires_at).unwrap_err(), Reject::HoldExpired { hold_id: hid(1) });
}

#[test]
fn confirm_after_expiry_time_is_refused_even_before_expire_runs() {
    let mut i = inv(1, 1, 4);
    hold(&mut i, 1, "a", &[0]).unwrap();
    let late = T0.plus_ms(60_000);
    assert_eq!(i.apply(&Command::Confirm { hold_id: hid(1) }, late).unwrap_err(), Reject::HoldExpired { hold_id: hid(1) });
    assert_eq!(i.counts().held, 1, "the seats wait for Expire to be freed");
}

#[test]
fn release_checks_owner_and_state() {
    let mut i = inv(1, 1, 4);
    hold(&mut i, 1, "a", &[0]).unwrap();
    let rel = |who: &str| Command::Release { hold_id: hid(1), customer: Some(cust(who)) };
    assert_eq!(i.apply(&rel("b"), T0).unwrap_err(), Reject::NotHoldOwner { hold_id: hid(1) });
    i.apply(&rel("a"), T0).unwrap();
    assert_eq!(i.apply(&rel("a"), T0).unwrap_err(), Reject::HoldNotActive { hold_id: hid(1), state: HoldState::Released });
    assert_eq!(i.apply(&Command::Release { hold_id: hid(9), customer: None }, T0).unwrap_err(), Reject::HoldNotFound { hold_id: hid(9) });
}

#[test]
fn best_available_prefers_side_by_side_in_the_best_row_centre() {
    let mut i = inv(2, 3, 10);
    let c = Command::HoldBestAvailable { hold_id: hid(1), customer: cust("a"), quantity: 4, section: None, category: None };
    let (Reply::Hold(h), _) = i.apply(&c, T0).unwrap() else { panic!() };
    // Row A-1 holds seats 0..10; the centred run of 4 starts at offset 3.
    assert_eq!(h.seats, seats(&[3, 4, 5, 6]));
    // Break row 1 so that no 4-run is left: the next row is used.
    hold(&mut i, 2, "b", &[1, 8]).unwrap();
    let c = Command::HoldBestAvailable { hold_id: hid(3), customer: cust("a"), quantity: 4, section: None, category: None };
    let (Reply::Hold(h), _) = i.apply(&c, T0).unwrap() else { panic!() };
    assert_eq!(h.seats, seats(&[13, 14, 15, 16]));
}

#[test]
fn best_available_honours_section_and_reports_shortage() {
    let mut i = inv(2, 1, 3);
    let c = |id, q, s| Command::HoldBestAvailable { hold_id: hid(id), customer: cust("a"), quantity: q, section: s, category: None };
    let (Reply::Hold(h), _) = i.apply(&c(1, 2, Some(1)), T0).unwrap() else { panic!() };
    assert!(h.seats.iter().all(|s| s.0 >= 3));
    assert_eq!(i.apply(&c(2, 2, Some(1)), T0).unwrap_err(), Reject::NotEnoughSeats { requested: 2, available: 1 });
    assert_eq!(i.apply(&c(2, 0, None), T0).unwrap_err(), Reject::QuantityInvalid { quantity: 0 });
}

#[test]
fn best_available_spreads_when_no_row_has_a_run() {
    let mut i = inv(1, 2, 3);
    hold(&mut i, 1, "a", &[1, 4]).unwrap();
    let c = Command::HoldBestAvailable { hold_id: hid(2), customer: cust("b"), quantity: 3, section: None, category: None };
    let (Reply::Hold(h), _) = i.apply(&c, T0).unwrap() else { panic!() };
    assert_eq!(h.seats, seats(&[0, 2, 3]));
}

fn best(i: &mut Inventory, id: u128, q: u32) -> Hold {
    let c = Command::HoldBestAvailable { hold_id: hid(id), customer: cust("best"), quantity: q, section: None, category: None };
    let (Reply::Hold(h), _) = i.apply(&c, T0).unwrap() else { panic!("best available of {q} did not answer a hold") };
    h
}

#[test]
fn best_available_never_splits_an_empty_four_seat_row_down_the_middle() {
    // Seats 2 and 3 (the centre) would strand seats 1 and 4 alone.
    let mut i = inv(1, 1, 4);
    let h = best(&mut i, 1, 2);
    assert_eq!(h.seats, seats(&[0, 1]), "seats 1-2 (3-4 is as good; the leftmost wins the tie)");
    assert_eq!(h.orphan_seats_left, 0);
    let h = best(&mut i, 2, 2);
    assert_eq!((h.seats, h.orphan_seats_left), (seats(&[2, 3]), 0), "the row fills up with nobody alone");
}

#[test]
fn best_available_does_not_strand_the_seat_beside_a_taken_one() {
    // Ten seats, seat 3 taken: 5-6 is the centre but strands seat 4; 4-5 and
    // 6-7 strand nothing and are equally near the centre; the leftmost wins.
    let mut i = inv(1, 1, 10);
    hold(&mut i, 1, "a", &[2]).unwrap();
    let h = best(&mut i, 2, 2);
    assert_eq!(h.seats, seats(&[3, 4]), "seats 4-5");
    assert_eq!(h.orphan_seats_left, 0);
}

#[test]
fn best_available_takes_a_later_row_rather_than_strand_a_seat() {
    // Row 1 has three free seats (2-4): any pair strands one. Row 2 is empty.
    let mut i = inv(1, 2, 4);
    hold(&mut i, 1, "a", &[0]).unwrap();
    let h = best(&mut i, 2, 2);
    assert_eq!((h.seats, h.orphan_seats_left), (seats(&[4, 5]), 0));
    // A party of three still fits row 1 exactly.
    let h = best(&mut i, 3, 3);
    assert_eq!((h.seats, h.orphan_seats_left), (seats(&[1, 2, 3]), 0));
}

#[test]
fn best_available_says_when_leaving_an_orphan_was_unavoidable() {
    // One row of three: every pair strands the third seat.
    let mut i = inv(1, 1, 3);
    let k = IdempotencyKey::parse("k").unwrap();
    let c = Command::HoldBestAvailable { hold_id: hid(1), customer: cust("a"), quantity: 2, section: None, category: None };
    let d = i.apply_keyed(&k, &c, T0);
    let Ok(Reply::Hold(h)) = &d.result else { panic!("{:?}", d.result) };
    assert_eq!((&h.seats, h.orphan_seats_left), (&seats(&[0, 1]), 1));
    // The answer says so, and so does its replay; the stored hold and its
    // event do not carry it (storage has no place for it).
    assert!(matches!(&d.events[..], [Event::HoldPlaced { hold }] if hold.orphan_seats_left == 0 && hold.seats == h.seats));
    assert_eq!(i.hold(hid(1)).map(|h| h.orphan_seats_left), Some(0));
    assert_eq!(i.apply_keyed(&k, &c, T0).result, d.result);
    // The remembered answer keeps it through JSON, and a record written
    // before the field existed still reads (as 0).
    let json = serde_json::to_string(&d.result).unwrap();
    assert!(json.contains("\"orphan_seats_left\":1"), "{json}");
    assert_eq!(serde_json::from_str::<Result<Reply, Reject>>(&json).unwrap(), d.result);
    let old = json.replace(",\"orphan_seats_left\":1", "");
    let Ok(Reply::Hold(h)) = serde_json::from_str::<Result<Reply, Reject>>(&old).unwrap() else { panic!("{old}") };
    assert_eq!(h.orphan_seats_left, 0);
    // A hold without orphans serializes exactly as before.
    let (Reply::Hold(h), _) = hold(&mut i, 2, "b", &[2]).unwrap() else { panic!() };
    assert!(!serde_json::to_string(&h).unwrap().contains("orphan"));
}

#[test]
fn best_available_counts_the_orphans_its_spread_leaves() {
    // Both rows of five have seat 3 taken, so no three are free side by
    // side: the first free seats are taken, 1, 2 and 4 of row 1, stranding
    // seat 5 (between taken seat 4 and the row's end).
    let mut i = inv(1, 2, 5);
    hold(&mut i, 1, "a", &[2, 7]).unwrap();
    let h = best(&mut i, 2, 3);
    assert_eq!((h.seats, h.orphan_seats_left), (seats(&[0, 1, 3]), 1));
}

/// The orphans a choice creates, from the definition: in each row, the
/// available seats whose neighbours are both unavailable or the row's end
/// once `picked` is taken, less those that were already so.
fn orphans_created(layout: &Layout, states: &[SeatState], picked: &[SeatIdx]) -> u32 {
    let mut created = 0;
    for row in &layout.rows {
        let r = row.first_seat..row.first_seat + row.len;
        if !picked.iter().any(|s| r.contains(&s.0)) {
            continue;
        }
        let orphans = |free: &dyn Fn(u32) -> bool| -> std::collections::BTreeSet<u32> {
            r.clone().filter(|&s| free(s) && (s == r.start || !free(s - 1)) && (s + 1 == r.end || !free(s + 1))).collect()
        };
        let before = orphans(&|s| states[s as usize] == SeatState::Available);
        let after = orphans(&|s| states[s as usize] == SeatState::Available && !picked.contains(&SeatIdx(s)));
        created += after.difference(&before).count() as u32;
    }
    created
}

/// Sections of rows; each seat 0-2 free, 3 held, 4 sold, 5 blocked.
fn arb_map() -> impl proptest::strategy::Strategy<Value = Vec<Vec<Vec<u8>>>> {
    use proptest::prelude::*;
    let row = proptest::collection::vec(prop_oneof![3 => Just(0u8), 1 => 3u8..6], 1..=9);
    proptest::collection::vec(proptest::collection::vec(row, 1..=3), 1..=3)
}

fn map_inventory(map: &[Vec<Vec<u8>>]) -> Inventory {
    use crate::layout::{CategorySpec, RowSpec, SectionSpec, VenueSpec};
    let spec = VenueSpec {
        time_zone: "UTC".into(),
        name: "m".into(),
        categories: vec![CategorySpec { code: "P1".into(), name: "Premium".into() }],
        sections: map
            .iter()
            .enumerate()
            .map(|(s, rows)| SectionSpec {
                code: format!("S{s}"),
                name: format!("Section {s}"),
                category: "P1".into(),
                x: 0.0,
                y: 0.0,
                rows: rows
                    .iter()
                    .enumerate()
                    .map(|(r, seats)| RowSpec { label: (r + 1).to_string(), seats: seats.len() as u32, first_number: 1 })
                    .collect(),
            })
            .collect(),
    };
    let layout = Layout::build(&spec).unwrap();
    let mut i = Inventory::new(config(&layout), Arc::new(layout), T0);
    for (n, state) in map.iter().flatten().flatten().enumerate() {
        let s = seats(&[n as u32]);
        let id = 1_000 + n as u128;
        match state {
            3 | 4 => {
                i.apply(&Command::HoldSeats { hold_id: hid(id), customer: cust(&format!("c{n}")), seats: s }, T0).unwrap();
                if *state == 4 {
                    i.apply(&Command::Confirm { hold_id: hid(id) }, T0).unwrap();
                }
            }
            5 => {
                i.apply(&Command::Block { seats: s }, T0).unwrap();
            }
            _ => {}
        }
    }
    i
}

proptest::proptest! {
    /// On random maps, best available creates no more orphans than the
    /// fewest any choice of equal quality would. Side by side in one row is
    /// the quality tier (orphans are compared before rows, see `pick_best`),
    /// so its choice is weighed against every run of `quantity` free seats in
    /// every matching row; among those stranding as few, it takes the
    /// earliest row. Its seats are free, matching, side by side in one row,
    /// and it reports exactly the orphans it created.
    #[test]
    fn best_available_creates_no_more_orphans_than_any_equal_choice(
        map in arb_map(),
        quantity in 1u32..=4,
        section in proptest::option::of(0u16..3),
    ) {
        use proptest::prelude::*;
        let mut i = map_inventory(&map);
        let layout = i.layout().clone();
        let before = i.seat_states().to_vec();
        let rows: Vec<usize> = (0..layout.rows.len()).filter(|&r| section.is_none_or(|s| layout.rows[r].section == s)).collect();
        let free = |s: u32| before[s as usize] == SeatState::Available;
        let row_seats = |r: usize| layout.rows[r].first_seat..layout.rows[r].first_seat + layout.rows[r].len;
        let total = rows.iter().flat_map(|&r| row_seats(r)).filter(|&s| free(s)).count() as u32;
        // Every run of `quantity` free seats in a matching row: (orphans created, row order, first seat).
        let runs: Vec<(u32, usize, u32)> = rows
            .iter()
            .enumerate()
            .flat_map(|(order, &r)| {
                let row = &layout.rows[r];
                (row.first_seat..(row.first_seat + row.len + 1).saturating_sub(quantity)).map(move |first| (order, first))
            })
            .filter(|&(_, first)| (first..first + quantity).all(free))
            .map(|(order, first)| (orphans_created(&layout, &before, &seats(&(first..first + quantity).collect::<Vec<_>>())), order, first))
            .collect();
        let c = Command::HoldBestAvailable { hold_id: hid(1), customer: cust("best"), quantity, section, category: None };
        let result = i.apply(&c, T0);
        if total < quantity {
            prop_assert_eq!(result.unwrap_err(), Reject::NotEnoughSeats { requested: quantity, available: total });
            return Ok(());
        }
        let (Reply::Hold(h), _) = result.unwrap() else { panic!("not a hold") };
        prop_assert_eq!(h.seats.len(), quantity as usize);
        for s in &h.seats {
            prop_assert!(free(s.0), "{:?} was not available", s);
            prop_assert!(rows.contains(&(layout.seats[s.0 as usize].row as usize)), "{:?} is outside the section asked for", s);
        }
        let created = orphans_created(&layout, &before, &h.seats);
        prop_assert_eq!(h.orphan_seats_left, created, "the answer must report the orphans it created");
        let Some(&(fewest, ..)) = runs.iter().min() else {
            // No run anywhere: the spread is the fallback.
            return Ok(());
        };
        let first = h.seats[0].0;
        prop_assert!(
            h.seats.iter().enumerate().all(|(k, s)| s.0 == first + k as u32),
            "{:?} are not side by side although a run exists", h.seats
        );
        prop_assert!(
            h.seats.iter().all(|s| layout.seats[s.0 as usize].row == layout.seats[first as usize].row),
            "{:?} are not in one row", h.seats
        );
        prop_assert!(created <= fewest, "created {} orphans where a run creating {} exists: {:?}", created, fewest, runs);
        let earliest = runs.iter().filter(|r| r.0 == fewest).map(|r| r.1).min().unwrap();
        let order = rows.iter().position(|&r| r == layout.seats[first as usize].row as usize).unwrap();
        prop_assert_eq!(order, earliest, "among runs stranding {} seats the earliest row wins", fewest);
    }
}

#[test]
fn block_refuses_held_seats_and_unblock_refuses_free_ones() {
    let mut i = inv(1, 1, 5);
    hold(&mut i, 1, "a", &[0]).unwrap();
    assert_eq!(i.apply(&Command::Block { seats: seats(&[0, 1]) }, T0).unwrap_err(), Reject::SeatsTaken { seats: seats(&[0]) });
    i.apply(&Command::Block { seats: seats(&[1, 2]) }, T0).unwrap();
    assert_eq!(hold(&mut i, 2, "b", &[2]).unwrap_err(), Reject::SeatsTaken { seats: seats(&[2]) });
    assert_eq!(i.apply(&Command::Unblock { seats: seats(&[2, 3]) }, T0).unwrap_err(), Reject::SeatsNotBlocked { seats: seats(&[3]) });
    i.apply(&Command::Unblock { seats: seats(&[1, 2]) }, T0).unwrap();
    assert_eq!(i.counts(), Counts { available: 4, held: 1, sold: 0, blocked: 0 });
}

#[test]
fn per_customer_hold_limit() {
    let mut i = inv(1, 1, 20);
    for n in 0..limits::HOLDS_PER_CUSTOMER_MAX {
        hold(&mut i, n as u128 + 1, "a", &[n]).unwrap();
    }
    assert_eq!(hold(&mut i, 100, "a", &[19]).unwrap_err(), Reject::CustomerHoldLimit { max: limits::HOLDS_PER_CUSTOMER_MAX });
    hold(&mut i, 101, "b", &[19]).unwrap();
}

#[test]
fn cancelling_releases_live_holds_and_keeps_sales() {
    let mut i = inv(1, 1, 5);
    hold(&mut i, 1, "a", &[0]).unwrap();
    hold(&mut i, 2, "b", &[1]).unwrap();
    i.apply(&Command::Confirm { hold_id: hid(2) }, T0).unwrap();
    let (_, ev) = i.apply(&Command::SetStatus { to: EventStatus::Cancelled }, T0).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(i.counts(), Counts { available: 4, held: 0, sold: 1, blocked: 0 });
    assert_eq!(
        i.apply(&Command::SetStatus { to: EventStatus::OnSale }, T0).unwrap_err(),
        Reject::StatusTransition { from: EventStatus::Cancelled, to: EventStatus::OnSale }
    );
}

#[test]
fn idempotent_retry_returns_first_answer_and_reuse_is_refused() {
    let mut i = inv(1, 1, 5);
    let k = IdempotencyKey::parse("k1").unwrap();
    let c1 = Command::HoldSeats { hold_id: hid(1), customer: cust("a"), seats: seats(&[0]) };
    let first = i.apply_keyed(&k, &c1, T0);
    assert!(first.result.is_ok() && first.record.is_some() && first.events.len() == 1);
    // A retry picks a new hold id; it must still get the first answer.
    let retry = Command::HoldSeats { hold_id: hid(2), customer: cust("a"), seats: seats(&[0]) };
    let again = i.apply_keyed(&k, &retry, T0);
    assert_eq!(again.result, first.result);
    assert!(again.events.is_empty() && again.record.is_none());
    let other = Command::HoldSeats { hold_id: hid(3), customer: cust("a"), seats: seats(&[1]) };
    assert_eq!(i.apply_keyed(&k, &other, T0).result, Err(Reject::IdempotencyKeyReused));
    assert_eq!(i.counts().held, 1);
    // Rejections are remembered too.
    let k2 = IdempotencyKey::parse("k2").unwrap();
    let taken = Command::HoldSeats { hold_id: hid(4), customer: cust("b"), seats: seats(&[0]) };
    let r = i.apply_keyed(&k2, &taken, T0);
    assert!(matches!(r.result, Err(Reject::SeatsTaken { .. })) && r.record.is_some());
}

#[test]
fn an_expired_record_no_longer_answers_even_before_expire_runs() {
    let mut i = inv(1, 1, 5);
    let k = IdempotencyKey::parse("k").unwrap();
    let c = Command::Block { seats: seats(&[0]) };
    i.apply_keyed(&k, &c, T0);
    let later = T0.plus_ms(limits::IDEMPOTENCY_RETENTION_MS + 1);
    // Same key, another request: accepted as new, because the old answer expired.
    let d = i.apply_keyed(&k, &Command::Block { seats: seats(&[1]) }, later);
    assert!(d.result.is_ok() && d.record.is_some(), "{d:?}");
    assert_eq!(i.snapshot().idempotency.len(), 1);
}

#[test]
fn idempotency_records_are_capped_per_event() {
    let mut i = inv(1, 1, 1);
    let n = limits::IDEMPOTENCY_RECORDS_PER_EVENT_MAX + 10;
    for k in 0..n {
        let c = if k % 2 == 0 { Command::Block { seats: seats(&[0]) } } else { Command::Unblock { seats: seats(&[0]) } };
        let _ = i.apply_keyed(&IdempotencyKey::parse(&format!("k{k}")).unwrap(), &c, T0);
    }
    let kept = i.snapshot().idempotency;
    assert_eq!(kept.len(), limits::IDEMPOTENCY_RECORDS_PER_EVENT_MAX);
    assert_eq!(kept[0].key.as_str(), "k10", "the oldest went first");
}

#[test]
fn idempotency_records_are_forgotten_after_retention() {
    let mut i = inv(1, 1, 5);
    let k = IdempotencyKey::parse("k").unwrap();
    i.apply_keyed(&k, &Command::Block { seats: seats(&[0]) }, T0);
    i.apply(&Command::Expire, T0.plus_ms(limits::IDEMPOTENCY_RETENTION_MS + 1)).unwrap();
    assert!(i.snapshot().idempotency.is_empty());
}

#[test]
fn snapshot_restores_to_the_same_state() {
    let mut i = inv(2, 2, 4);
    hold(&mut i, 1, "a", &[0, 1]).unwrap();
    hold(&mut i, 2, "b", &[5]).unwrap();
    i.apply(&Command::Confirm { hold_id: hid(2) }, T0).unwrap();
    i.apply(&Command::Block { seats: seats(&[9]) }, T0).unwrap();
    let r = Inventory::restore(i.config().clone(), i.layout().clone(), i.snapshot(), T0).unwrap();
    assert_eq!(r.counts(), i.counts());
    assert_eq!(r.seat_states(), i.seat_states());
    assert_eq!(r.next_expiry(), i.next_expiry());
}

#[test]
fn restore_refuses_a_seat_in_two_holds() {
    let i = inv(1, 1, 4);
    let h = |id, s: u32| Hold {
        id: hid(id),
        customer: cust("a"),
        seats: seats(&[s]),
        created_at: T0,
        expires_at: T0.plus_ms(1000),
        state: HoldState::Active,
        ended_at: None,
        orphan_seats_left: 0,
    };
    let snap = Snapshot { blocked: vec![], holds: vec![h(1, 0), h(2, 0)], idempotency: vec![] };
    assert!(Inventory::restore(i.config().clone(), i.layout().clone(), snap, T0).is_err());
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_never_goes_backwards() {
    let mut i = inv(1, 1, 1);
    i.apply(&Command::Expire, Millis(T0.0 - 1)).unwrap();
}

#[test]
fn event_config_validation_names_fields() {
    let layout = Layout::build(&grid_venue("v", 1, 1, 1)).unwrap();
    let mut c = config(&layout);
    c.hold_seats_max = 0;
    assert_eq!(c.validate(&layout).unwrap_err().field, "hold_seats_max");
    let mut c = config(&layout);
    c.sales_end = c.sales_start;
    assert_eq!(c.validate(&layout).unwrap_err().field, "sales_end");
    let mut c = config(&layout);
    c.prices.pop();
    assert_eq!(c.validate(&layout).unwrap_err().field, "prices");
}

#[test]
fn malformed_requests_are_not_remembered_under_their_key() {
    let mut i = inv(1, 1, 5);
    let k = IdempotencyKey::parse("k").unwrap();
    let d = i.apply_keyed(&k, &Command::HoldSeats { hold_id: hid(1), customer: cust("a"), seats: vec![] }, T0);
    assert_eq!(d.result, Err(Reject::SeatListEmpty));
    assert!(d.record.is_none());
    // The key is still free for a well-formed request.
    let d = i.apply_keyed(&k, &Command::HoldSeats { hold_id: hid(1), customer: cust("a"), seats: seats(&[0]) }, T0);
    assert!(d.result.is_ok());
}

#[test]
fn a_malformed_request_is_reported_as_such_even_under_a_reused_key() {
    let mut i = inv(1, 1, 5);
    let k = IdempotencyKey::parse("k").unwrap();
    i.apply_keyed(&k, &Command::Block { seats: seats(&[0]) }, T0);
    let d = i.apply_keyed(&k, &Command::HoldSeats { hold_id: hid(1), customer: cust("a"), seats: vec![] }, T0);
    assert_eq!(d.result, Err(Reject::SeatListEmpty), "shape comes before the key's reuse");
    let d = i.apply_keyed(&k, &Command::Unblock { seats: seats(&[1]) }, T0);
    assert_eq!(d.result, Err(Reject::IdempotencyKeyReused));
}

#[test]
fn names_with_control_characters_are_refused() {
    use crate::layout::{check_name, check_text};
    assert!(check_name("name", "Opening\u{0}Night").is_err(), "a NUL");
    assert!(check_name("name", "Bell\u{7}").is_err());
    assert!(check_name("name", "夜 — Nuit").is_ok());
    assert!(check_text("description", "two\nlines\tand a tab").is_ok());
    let e = check_name("name", "a\u{1b}[31m").unwrap_err();
    assert_eq!(e.field, "name");
    assert!(e.message.contains("U+001B"), "{}", e.message);
}

#[test]
fn an_order_is_made_only_of_the_customers_live_holds_at_the_events_prices() {
    let mut i = inv(1, 1, 6);
    hold(&mut i, 1, "a", &[0, 1]).unwrap();
    hold(&mut i, 2, "a", &[2]).unwrap();
    i.apply(&Command::Release { hold_id: hid(2), customer: Some(cust("a")) }, T0).unwrap();
    let h1 = i.hold(hid(1)).unwrap().clone();
    let (lines, pay_by) = crate::order_lines(&h1, i.config(), i.layout(), &cust("a"), T0).unwrap();
    assert_eq!(lines.iter().map(|l| (l.seat, l.price.minor)).collect::<Vec<_>>(), [(SeatIdx(0), 5000), (SeatIdx(1), 5000)]);
    assert_eq!(pay_by, h1.expires_at);
    // Another customer's hold reads as not found; an expired or released one is not live.
    assert_eq!(crate::order_lines(&h1, i.config(), i.layout(), &cust("b"), T0), Err(Reject::NotHoldOwner { hold_id: hid(1) }));
    assert_eq!(crate::order_lines(&h1, i.config(), i.layout(), &cust("a"), h1.expires_at), Err(Reject::HoldExpired { hold_id: hid(1) }));
    let h2 = i.hold(hid(2)).unwrap().clone();
    assert_eq!(
        crate::order_lines(&h2, i.config(), i.layout(), &cust("a"), T0),
        Err(Reject::HoldNotActive { hold_id: hid(2), state: HoldState::Released })
    );
    let mut cancelled = i.config().clone();
    cancelled.status = EventStatus::Cancelled;
    assert_eq!(crate::order_lines(&h1, &cancelled, i.layout(), &cust("a"), T0), Err(Reject::EventCancelled));
}
