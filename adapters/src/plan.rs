//! Turns one batch of decisions into the row changes of one transaction,
//! independent of the SQL dialect.

use std::collections::HashMap;

use usher_actors::Batch;
use usher_engine::{Event, EventStatus, Hold, HoldId, SeatIdx};

use crate::outbox::{self, OutboxRow};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Claim {
    Held(HoldId),
    Sold(HoldId),
    Blocked,
}

pub struct ClaimRow {
    pub seat_idx: i64,
    pub kind: &'static str,
    pub hold_id: Option<String>,
}

pub struct IdemRow {
    pub key: String,
    pub fingerprint: i64,
    pub result: String,
    pub at: i64,
}

#[derive(Default)]
pub struct Plan {
    pub status: Option<EventStatus>,
    /// Final state of every hold the batch touched, in first-touch order.
    pub holds: Vec<Hold>,
    /// Seats whose claim row must go (they were claimed before the batch and
    /// end free or claimed differently).
    pub claim_deletes: Vec<i64>,
    /// Seats claimed at the end of the batch that were not claimed that way
    /// before. Plain INSERTs: the primary key refuses a seat claimed twice.
    pub claim_inserts: Vec<ClaimRow>,
    pub idempotency: Vec<IdemRow>,
    pub outbox: Vec<OutboxRow>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.holds.is_empty()
            && self.claim_deletes.is_empty()
            && self.claim_inserts.is_empty()
            && self.idempotency.is_empty()
    }
}

pub fn plan(batch: &Batch<'_>) -> Plan {
    let mut p = Plan::default();
    let mut hold_pos: HashMap<HoldId, usize> = HashMap::new();
    // seat -> (claim before the batch, claim after), in first-touch order.
    let mut seats: Vec<SeatIdx> = Vec::new();
    let mut net: HashMap<SeatIdx, (Option<Claim>, Option<Claim>)> = HashMap::new();
    let mut touch = |s: SeatIdx, before: Option<Claim>, after: Option<Claim>| {
        net.entry(s).and_modify(|e| e.1 = after).or_insert_with(|| {
            seats.push(s);
            (before, after)
        });
    };
    let mut upsert_hold = |h: &Hold, p: &mut Plan| match hold_pos.get(&h.id) {
        Some(&i) => p.holds[i] = h.clone(),
        None => {
            hold_pos.insert(h.id, p.holds.len());
            p.holds.push(h.clone());
        }
    };
    for (i, d) in batch.decisions.iter().enumerate() {
        let trace = batch.traces.get(i).cloned().flatten();
        if let Some(r) = &d.record {
            p.idempotency.push(IdemRow {
                key: r.key.as_str().to_owned(),
                fingerprint: r.fingerprint as i64,
                result: serde_json::to_string(&r.result).expect("results serialize"),
                at: r.at.0,
            });
        }
        for e in &d.events {
            match e {
                Event::HoldPlaced { hold } => {
                    upsert_hold(hold, &mut p);
                    hold.seats.iter().for_each(|&s| touch(s, None, Some(Claim::Held(hold.id))));
                }
                Event::HoldReleased { hold } | Event::HoldExpired { hold } => {
                    upsert_hold(hold, &mut p);
                    hold.seats.iter().for_each(|&s| touch(s, Some(Claim::Held(hold.id)), None));
                }
                Event::SeatsSold { hold } => {
                    upsert_hold(hold, &mut p);
                    hold.seats.iter().for_each(|&s| touch(s, Some(Claim::Held(hold.id)), Some(Claim::Sold(hold.id))));
                }
                Event::SeatsBlocked { seats } => seats.iter().for_each(|&s| touch(s, None, Some(Claim::Blocked))),
                Event::SeatsUnblocked { seats } => seats.iter().for_each(|&s| touch(s, Some(Claim::Blocked), None)),
                Event::StatusChanged { to, .. } => p.status = Some(*to),
            }
            p.outbox.push(outbox::OutboxRow { traceparent: trace.clone(), ..outbox::encode(batch.event_id, batch.layout, batch.now, e) });
        }
    }
    for s in seats {
        let (before, after) = net[&s];
        if before == after {
            continue;
        }
        if before.is_some() {
            p.claim_deletes.push(s.0 as i64);
        }
        if let Some(c) = after {
            let (kind, hold_id) = match c {
                Claim::Held(h) => ("held", Some(h.to_string())),
                Claim::Sold(h) => ("sold", Some(h.to_string())),
                Claim::Blocked => ("blocked", None),
            };
            p.claim_inserts.push(ClaimRow { seat_idx: s.0 as i64, kind, hold_id });
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use usher_actors::Batch;
    use usher_engine::{
        Command, Currency, CustomerId, Decision, EventConfig, EventStatus, HoldId, IdempotencyKey, Inventory, Layout, Millis, Money,
        SeatIdx, grid_venue,
    };

    use super::plan;

    const T0: Millis = Millis(1_700_000_000_000);

    fn inventory() -> Inventory {
        let layout = Layout::build(&grid_venue("v", 1, 1, 6)).unwrap();
        let eur = Currency::parse("EUR").unwrap();
        let config = EventConfig {
            name: "e".into(),
            starts_at: T0.plus_ms(10_000_000),
            sales_end: T0.plus_ms(10_000_000),
            prices: vec![Money { minor: 1, currency: eur }; 2],
            ..usher_test_support::event_config(&layout, T0)
        };
        Inventory::new(config, Arc::new(layout), T0)
    }

    fn hid(n: u128) -> HoldId {
        HoldId(uuid::Uuid::from_u128(n))
    }

    fn hold(n: u128, who: &str, seats: &[u32]) -> Command {
        Command::HoldSeats {
            hold_id: hid(n),
            customer: CustomerId::parse(who).unwrap(),
            seats: seats.iter().map(|&s| SeatIdx(s)).collect(),
        }
    }

    /// Decides `cmds` as one batch, each under a fresh key.
    fn decide(inv: &mut Inventory, cmds: &[Command]) -> Vec<Decision> {
        cmds.iter().map(|c| inv.apply_keyed(&IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap(), c, T0)).collect()
    }

    fn claims(p: &super::Plan) -> Vec<(i64, &str, Option<String>)> {
        p.claim_inserts.iter().map(|c| (c.seat_idx, c.kind, c.hold_id.clone())).collect()
    }

    /// The plan of one batch of `inv`'s decisions (epoch 1, at T0).
    fn plan_of(inv: &Inventory, decisions: &[Decision]) -> super::Plan {
        plan(&Batch {
            event_id: inv.config().id,
            epoch: usher_actors::Epoch(1),
            now: T0,
            layout: inv.layout(),
            decisions,
            audits: &[],
            traces: &[],
        })
    }

    #[test]
    fn a_seat_released_and_held_again_in_one_batch_moves_to_the_new_hold() {
        let mut inv = inventory();
        let first = decide(&mut inv, &[hold(1, "a", &[0, 1])]);
        let p = plan_of(&inv, &first);
        assert_eq!(claims(&p), [(0, "held", Some(hid(1).to_string())), (1, "held", Some(hid(1).to_string()))]);
        assert!(p.claim_deletes.is_empty());

        let second = decide(&mut inv, &[Command::Release { hold_id: hid(1), customer: None }, hold(2, "b", &[1, 2])]);
        let p = plan_of(&inv, &second);
        // Seat 0 freed; seat 1 deleted and reinserted for hold 2; seat 2 new.
        assert_eq!(p.claim_deletes, [0, 1]);
        assert_eq!(claims(&p), [(1, "held", Some(hid(2).to_string())), (2, "held", Some(hid(2).to_string()))]);
        // Each hold once, in its final state; one outbox row per event.
        assert_eq!(p.holds.iter().map(|h| (h.id, h.state.as_str())).collect::<Vec<_>>(), [(hid(1), "released"), (hid(2), "active")]);
        assert_eq!(p.outbox.iter().map(|o| o.topic).collect::<Vec<_>>(), ["reservation-released", "reservation-created"]);
        assert_eq!(p.idempotency.len(), 2);
    }

    #[test]
    fn a_hold_placed_and_sold_in_one_batch_is_inserted_as_sold() {
        let mut inv = inventory();
        let d = decide(&mut inv, &[hold(1, "a", &[3]), Command::Confirm { hold_id: hid(1) }]);
        let p = plan_of(&inv, &d);
        assert!(p.claim_deletes.is_empty(), "never stored as held, so nothing to delete");
        assert_eq!(claims(&p), [(3, "sold", Some(hid(1).to_string()))]);
        assert_eq!(p.holds.len(), 1);
        assert_eq!(p.holds[0].state.as_str(), "confirmed");
    }

    #[test]
    fn an_unblocked_seat_held_in_the_same_batch_changes_kind() {
        let mut inv = inventory();
        let blocked = decide(&mut inv, &[Command::Block { seats: vec![SeatIdx(4)] }]);
        let p = plan_of(&inv, &blocked);
        assert_eq!(claims(&p), [(4, "blocked", None)]);
        let d = decide(&mut inv, &[Command::Unblock { seats: vec![SeatIdx(4)] }, hold(7, "c", &[4])]);
        let p = plan_of(&inv, &d);
        assert_eq!(p.claim_deletes, [4]);
        assert_eq!(claims(&p), [(4, "held", Some(hid(7).to_string()))]);
    }

    #[test]
    fn cancelling_frees_every_live_hold_and_records_the_status() {
        let mut inv = inventory();
        let _ = decide(&mut inv, &[hold(1, "a", &[0]), hold(2, "b", &[5])]);
        let d = decide(&mut inv, &[Command::SetStatus { to: EventStatus::Cancelled }]);
        let p = plan_of(&inv, &d);
        assert_eq!(p.status, Some(EventStatus::Cancelled));
        assert_eq!(p.claim_deletes, [0, 5]);
        assert!(p.claim_inserts.is_empty());
        assert!(p.holds.iter().all(|h| h.state.as_str() == "released"));
    }

    #[test]
    fn a_replay_writes_nothing() {
        let mut inv = inventory();
        let key = IdempotencyKey::parse("same").unwrap();
        let _ = inv.apply_keyed(&key, &hold(1, "a", &[0]), T0);
        let again = [inv.apply_keyed(&key, &hold(9, "a", &[0]), T0)];
        let p = plan_of(&inv, &again);
        assert!(p.is_empty() && p.outbox.is_empty());
    }
}
