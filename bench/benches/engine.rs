//! Engine micro-benchmarks on a 100,000-seat map: ns per operation.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use usher_engine::{Command, Currency, CustomerId, EventConfig, HoldId, Inventory, Layout, Millis, Money, SeatIdx, grid_venue};

const T0: Millis = Millis(1_700_000_000_000);

fn stadium() -> Inventory {
    // 40 sections × 50 rows × 50 seats = 100,000 seats.
    let layout = Layout::build(&grid_venue("bench", 40, 50, 50)).expect("valid");
    let eur = Currency::parse("EUR").expect("valid");
    let config = EventConfig {
        name: "bench".into(),
        starts_at: T0.plus_ms(86_400_000),
        hold_duration_ms: 600_000,
        prices: vec![Money { minor: 1, currency: eur }; 2],
        ..usher_test_support::event_config(&layout, T0)
    };
    Inventory::new(config, Arc::new(layout), T0)
}

/// Times `iters` runs of `op`, in batches of at most 100,000 on a fresh
/// map each: `prepare` gives a batch's inputs untimed, `op` is timed on
/// each of them.
fn timed_batches<T>(iters: u64, mut prepare: impl FnMut(&mut Inventory, u32) -> Vec<T>, op: impl Fn(&mut Inventory, &T)) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(100_000) as u32;
        let mut inv = stadium();
        let inputs = prepare(&mut inv, batch);
        let t = Instant::now();
        for input in &inputs {
            op(&mut inv, input);
        }
        total += t.elapsed();
        left -= u64::from(batch);
    }
    total
}

fn benches(c: &mut Criterion) {
    let mut n: u128 = 0;
    let mut next_id = move || {
        n += 1;
        HoldId(uuid::Uuid::from_u128(n))
    };
    // One customer per hold (a customer may have only 8 live holds), made
    // before timing.
    let customers: Vec<CustomerId> = (0..100_000).map(|i| CustomerId::parse(&format!("c{i}")).expect("valid")).collect();
    let start = |customers: &[CustomerId], ids: &mut dyn FnMut() -> HoldId, inv: &mut Inventory, from: u32, count: u32| -> Vec<HoldId> {
        (from..from + count)
            .map(|s| {
                let id = ids();
                let cmd = Command::HoldSeats { hold_id: id, customer: customers[s as usize].clone(), seats: vec![SeatIdx(s)] };
                inv.apply(&cmd, T0).expect("free");
                id
            })
            .collect()
    };

    // Hold one seat on a 100k-seat map; the map is refilled untimed.
    c.bench_function("hold 1 seat, 100k-seat map", |b| {
        b.iter_custom(|iters| {
            timed_batches(
                iters,
                |_, batch| {
                    (0..batch)
                        .map(|s| Command::HoldSeats {
                            hold_id: next_id(),
                            customer: customers[s as usize].clone(),
                            seats: vec![SeatIdx(s)],
                        })
                        .collect()
                },
                |inv, cmd| {
                    black_box(inv.apply(cmd, T0).expect("free"));
                },
            )
        })
    });

    // Release one hold of one seat; the holds are placed untimed.
    c.bench_function("release a 1-seat hold, 100k-seat map", |b| {
        b.iter_custom(|iters| {
            timed_batches(
                iters,
                |inv, batch| start(&customers, &mut next_id, inv, 0, batch),
                |inv, id| {
                    black_box(inv.apply(&Command::Release { hold_id: *id, customer: None }, T0).expect("live"));
                },
            )
        })
    });

    // Best available 4 on a half-full map: the first 50,000 seats are held,
    // so the search skips full rows. Each timed hold is released untimed.
    let mut inv = stadium();
    start(&customers, &mut next_id, &mut inv, 0, 50_000);
    let best = CustomerId::parse("best").expect("valid");
    c.bench_function("best available 4, 100k-seat map half full", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = next_id();
                let cmd = Command::HoldBestAvailable { hold_id: id, customer: best.clone(), quantity: 4, section: None, category: None };
                let t = Instant::now();
                black_box(inv.apply(&cmd, T0).expect("room"));
                total += t.elapsed();
                inv.apply(&Command::Release { hold_id: id, customer: None }, T0).expect("live");
            }
            total
        })
    });
}

criterion_group!(engine, benches);
criterion_main!(engine);
