//! An event's live seats on a node that does not own it: a mirror fed by
//! the owner's `NodeService/Watch`, read by this node's watchers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use usher_engine::EventId;
use usher_proto::cluster as cpb;

use crate::error::{ApiError, ErrorCode, Reason};

/// An event's live seats on a node that does not own it, kept current by
/// the owner's `NodeService/Watch`: the hub of the event's watchers here
/// reads its snapshots from it and its changes from `subscribe`. It lives
/// while a hub holds it; when the owner's feed ends (the event moved) its
/// change channel closes and the hub tells its watchers to watch again.
pub struct Mirror {
    pub event_id: EventId,
    pub layout: Arc<usher_engine::Layout>,
    /// As stored when the mirror started (for who may see the event).
    pub config: usher_engine::EventConfig,
    pub(super) seats: std::sync::Mutex<(Vec<usher_engine::SeatState>, usher_engine::Counts)>,
    /// Taken away when the owner's feed ends.
    pub(super) changes: std::sync::Mutex<Option<broadcast::Sender<Arc<usher_actors::SeatChange>>>>,
}

impl Mirror {
    /// Every seat as last heard from the owner.
    pub fn seat_map(&self) -> usher_actors::SeatMapView {
        let (seats, counts) = self.seats.lock().expect("mirror").clone();
        usher_actors::SeatMapView { config: self.config.clone(), layout: self.layout.clone(), seats, counts }
    }

    /// The changes from now on; `None` once the owner's feed has ended.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<usher_actors::SeatChange>>> {
        self.changes.lock().expect("mirror").as_ref().map(broadcast::Sender::subscribe)
    }
}

fn state_of(b: u8) -> Result<usher_engine::SeatState, ApiError> {
    use usher_engine::SeatState::*;
    Ok(match b {
        0 => Available,
        1 => Held,
        2 => Sold,
        3 => Blocked,
        _ => return Err(ApiError::new(ErrorCode::Internal, Reason::Internal, format!("a node sent seat state {b}"))),
    })
}

pub(super) fn states(bytes: &[u8]) -> Result<Vec<usher_engine::SeatState>, ApiError> {
    bytes.iter().map(|&b| state_of(b)).collect()
}

pub(super) fn counts_of(i: &cpb::WatchEventItem) -> usher_engine::Counts {
    usher_engine::Counts { available: i.available, held: i.held, sold: i.sold, blocked: i.blocked }
}

pub(crate) fn item(counts: usher_engine::Counts) -> cpb::WatchEventItem {
    cpb::WatchEventItem { available: counts.available, held: counts.held, sold: counts.sold, blocked: counts.blocked, ..Default::default() }
}

/// Applies the owner's feed to `mirror` until it ends or nobody watches.
pub(super) async fn relay(mirror: std::sync::Weak<Mirror>, mut stream: tonic::Streaming<cpb::WatchEventItem>) {
    let mut idle = tokio::time::interval(Duration::from_secs(5));
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            _ = idle.tick() => {
                // Nobody holds the mirror (its hub ended): stop watching.
                if mirror.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        let Some(m) = mirror.upgrade() else { return };
        let item = match next {
            Ok(Some(i)) => i,
            Ok(None) | Err(_) => {
                tracing::info!(event_id = %m.event_id, "the owner's seat feed ended; this node's watchers of the event watch again");
                m.changes.lock().expect("mirror").take();
                return;
            }
        };
        let counts = counts_of(&item);
        let changed: Vec<(usher_engine::SeatIdx, usher_engine::SeatState)> = {
            let mut seats = m.seats.lock().expect("mirror");
            let mut changed = Vec::new();
            if !item.snapshot.is_empty() {
                // A fresh snapshot (the owner missed changes): what differs.
                for (i, &b) in item.snapshot.iter().enumerate() {
                    if let (Ok(st), Some(old)) = (state_of(b), seats.0.get_mut(i))
                        && *old != st
                    {
                        *old = st;
                        changed.push((usher_engine::SeatIdx(i as u32), st));
                    }
                }
            } else {
                for (&s, &b) in item.changed_seats.iter().zip(item.changed_states.iter()) {
                    if let (Ok(st), Some(old)) = (state_of(b), seats.0.get_mut(s as usize)) {
                        *old = st;
                        changed.push((usher_engine::SeatIdx(s), st));
                    }
                }
            }
            seats.1 = counts;
            changed
        };
        if let Some(tx) = m.changes.lock().expect("mirror").as_ref() {
            let _ = tx.send(Arc::new(usher_actors::SeatChange { event_id: m.event_id, seats: changed, counts }));
        }
    }
}
