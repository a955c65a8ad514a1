//! Engine micro-benchmarks on a 100,000-seat map: ns per operation.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use usher_engine::{
    Command, Currency, CustomerId, EventConfig, EventId, EventStatus, HoldId, Inventory, Layout, Millis, Money, SeatIdx, VenueId,
    grid_venue,
};

const T0: Millis = Millis(1_700_000_000_000);

fn stadium() -> Inventory {
    // 40 sections × 50 rows × 50 seats = 100,000 seats.
    let layout = Layout::build(&grid_venue("bench", 40, 50, 50)).expect("valid");
    let eur = Currency::parse("EUR").expect("valid");
    let config = EventConfig {
        id: EventId(uuid::Uuid::from_u128(1)),
        venue_id: VenueId(uuid::Uuid::from_u128(2)),
        name: "bench".into(),
        description: String::new(),
        starts_at: T0.plus_ms(86_400_000),
        sales_start: Millis(0),
        sales_end: T0.plus_ms(86_400_000),
        status: EventStatus::OnSale,
        hold_duration_ms: 600_000,
        hold_seats_max: 6,
        prices: vec![Money { minor: 1, currency: eur }; 2],
    };
    Inventory::new(config, Arc::new(layout), T0)
}

fn benches(c: &mut Criterion) {
    let customer = CustomerId::parse("bench").expect("valid");
    let mut n: u128 = 0;
    let mut next_id = move || {
        n += 1;
        HoldId(uuid::Uuid::from_u128(n))
    };

    // Hold then release one seat, spread over the map (release keeps the
    // state from filling up; measured separately below).
    let mut inv = stadium();
    let mut seat = 0u32;
    c.bench_function("hold 1 seat (then release), 100k-seat map", |b| {
        b.iter(|| {
            let id = next_id();
            seat = (seat + 7919) % 100_000;
            let cmd = Command::HoldSeats { hold_id: id, customer: customer.clone(), seats: vec![SeatIdx(seat)] };
            black_box(inv.apply(&cmd, T0).expect("free"));
            inv.apply(&Command::Release { hold_id: id, customer: None }, T0).expect("live");
        })
    });

    // One customer per hold (a customer may have only 8 live holds), made
    // before timing.
    let customers: Vec<CustomerId> = (0..100_000).map(|i| CustomerId::parse(&format!("c{i}")).expect("valid")).collect();
    let mut inv = stadium();
    c.bench_function("hold 1 seat, 100k-seat map (filling up)", |b| {
        let mut s = 0u32;
        b.iter(|| {
            if s == 100_000 {
                inv = stadium();
                s = 0;
            }
            let cmd = Command::HoldSeats { hold_id: next_id(), customer: customers[s as usize].clone(), seats: vec![SeatIdx(s)] };
            s += 1;
            black_box(inv.apply(&cmd, T0))
        })
    });

    let mut inv = stadium();
    c.bench_function("best available 4, 100k-seat map half full (then release)", |b| {
        // Fill the first half so the search has to skip full rows.
        for s in (0..50_000u32).step_by(5) {
            let cmd = Command::HoldSeats {
                hold_id: next_id(),
                customer: customers[s as usize].clone(),
                seats: (s..s + 5).map(SeatIdx).collect(),
            };
            inv.apply(&cmd, T0).expect("free");
        }
        b.iter(|| {
            let id = next_id();
            let cmd = Command::HoldBestAvailable { hold_id: id, customer: customer.clone(), quantity: 4, section: None, category: None };
            black_box(inv.apply(&cmd, T0).expect("room"));
            inv.apply(&Command::Release { hold_id: id, customer: None }, T0).expect("live");
        })
    });
}

criterion_group!(engine, benches);
criterion_main!(engine);
