//! Several nodes (`--nodes N`, PostgreSQL only): the servers form a cluster
//! on one database and the bench's Redis, the buyers' connections are spread
//! over the nodes, and every answer's `usher-node` says which node decided,
//! so the share of requests a node forwarded to the event's owner is
//! measured from the client's side. The many-events scenario spreads the
//! buyers over many events, which the nodes then own between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;
use tonic::Code;
use usher_proto::v1::{self as pb, catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient};
use usher_test_support::Rng;

use crate::{Args, Latency, Server, latency, make_event, make_venue, on_sale, ts, venue};

/// The secret the bench's nodes share (they listen on loopback only).
pub const SECRET: &str = "usher-bench cluster secret, loopback only";

/// The name of the `i`-th node (0-based), as `--node-name` gives it.
pub fn node_name(i: usize) -> String {
    format!("bench-{}", i + 1)
}

/// Counts answers that another node decided (a forwarded request).
#[derive(Default)]
pub struct Forwarded {
    pub answered: AtomicU64,
    pub forwarded: AtomicU64,
}

impl Forwarded {
    /// One answer from the node behind connection `conn` (connections are
    /// spread over `nodes` nodes in turn), decided by `by`.
    pub fn count(&self, nodes: usize, conn: usize, by: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>) {
        if nodes <= 1 {
            return;
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        let asked = node_name(conn % nodes);
        if by.and_then(|v| v.to_str().ok()).is_some_and(|n| n != asked) {
            self.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forwarded answers over all answers; none with one node.
    pub fn share(&self) -> Option<f64> {
        let a = self.answered.load(Ordering::Relaxed);
        (a > 0).then(|| self.forwarded.load(Ordering::Relaxed) as f64 / a as f64)
    }
}

#[derive(Serialize, Debug)]
pub(crate) struct ManyEvents {
    pub nodes: usize,
    pub events: usize,
    pub seats_per_event: usize,
    pub requests: u64,
    pub holds: u64,
    pub conflicts: u64,
    pub other_errors: u64,
    pub holds_per_s: f64,
    pub latency: Latency,
    /// Share of answers decided by a node other than the one asked.
    pub forwarded_share: Option<f64>,
    pub wall_s: f64,
}

/// `args.events` events of `args.event_seats` seats each in one venue, and
/// `args.many_requests` single- or two-seat holds on random events and
/// seats, `args.concurrency` at once.
pub(crate) async fn many_events(args: &Args, server: &Server) -> anyhow::Result<ManyEvents> {
    let owner = CatalogServiceClient::new(server.owner().await?);
    // One section of rows of 50 (2,000 seats: 40 rows), not the stadium's
    // 50 × 50 sections, so an event has the seats asked for.
    let per_row = 50u32;
    let (sections, rows) = (1, args.event_seats.div_ceil(per_row as usize).clamp(1, 1_000));
    let seats_per_event = sections * rows * per_row as usize;
    let v = make_venue(&owner, venue(&server.org_id, sections, rows, per_row)).await?;
    let mut events = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let req = pb::CreateEventRequest {
            sales_start: Some(ts(-60)),
            sales_end: Some(ts(86_400 * 29)),
            ..on_sale(v.venue_id.clone(), &format!("Event {i}"), 86_400 * 30, [12_000, 6_000])
        };
        events.push(make_event(&owner, req).await?.event_id);
    }
    crate::analyze(args, server).await?;
    let events = Arc::new(events);
    let chans = server.buyers(args.connections).await?;
    let nodes = server.nodes();
    let forwarded = Arc::new(Forwarded::default());
    let next = Arc::new(AtomicUsize::new(0));
    let (holds, conflicts, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let conn = w % chans.len();
        let mut c = InventoryServiceClient::new(chans[conn].clone());
        let (events, forwarded, next) = (events.clone(), forwarded.clone(), next.clone());
        let (holds, conflicts, other) = (holds.clone(), conflicts.clone(), other.clone());
        let (total, seed) = (args.many_requests, args.seed);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return lat;
                }
                let mut rng = Rng(seed ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let event = rng.pick(&events).clone();
                let q = 1 + rng.below(2) as u32;
                let (s, r) = (rng.index(sections), rng.index(rows));
                let first = rng.below(u64::from(per_row - q + 1)) as u32 + 1;
                let seats = (0..q).map(|i| format!("S{s}-{}-{}", r + 1, first + i)).collect();
                let req = pb::HoldSeatsRequest {
                    idempotency_key: uuid::Uuid::new_v4().to_string(),
                    event_id: event,
                    customer_id: format!("m{n}"),
                    seat_ids: seats,
                };
                let t = Instant::now();
                let r = c.hold_seats(req).await;
                lat.push(t.elapsed().as_micros() as u64);
                match r {
                    Ok(h) => {
                        forwarded.count(nodes, conn, h.metadata().get("usher-node"));
                        holds.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) if s.code() == Code::FailedPrecondition => {
                        forwarded.count(nodes, conn, s.metadata().get("usher-node"));
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await?);
    }
    let wall = start.elapsed();
    let h = holds.load(Ordering::Relaxed);
    Ok(ManyEvents {
        nodes,
        events: args.events,
        seats_per_event,
        requests: all.len() as u64,
        holds: h,
        conflicts: conflicts.load(Ordering::Relaxed),
        other_errors: other.load(Ordering::Relaxed),
        holds_per_s: h as f64 / wall.as_secs_f64(),
        latency: latency(all),
        forwarded_share: forwarded.share(),
        wall_s: wall.as_secs_f64(),
    })
}
