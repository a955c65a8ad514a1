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
    for d in batch.decisions {
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
            p.outbox.push(outbox::encode(batch.event_id, batch.layout, batch.now, e));
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
