//! Live seat feeds (`WatchSeats` over gRPC, server-sent events over HTTP):
//! one place that opens them, bounds them and ends them.
//!
//! A feed is a snapshot of the event's seats, then every committed change.
//! It holds no backlog: changes wait in a bounded channel, and a watcher
//! that falls behind the event's broadcast is sent a fresh snapshot instead
//! of what it missed, so a slow reader costs one snapshot, never a queue.
//! A watcher that takes nothing for `seat_feed_stall_ms` while items wait
//! (it stopped reading, or cannot keep up even with snapshots) is dropped:
//! its connection is cut (`ConnCut`), which frees what waited for it in the
//! connection's buffers, its queue and its slot. Until then the slot stays
//! taken, so a client's unread feeds count against its cap.
//! Each feed holds a slot: at most `SEAT_STREAMS_PER_CLIENT_MAX` per client
//! (a signed-in principal, or an address for anonymous callers and guests,
//! who can mint identities) and `SEAT_STREAMS_PER_NODE_MAX` per node; past
//! either a new feed is refused with RESOURCE_EXHAUSTED / 429.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use usher_actors::{EventHandle, Registry, SeatChange, SeatMapView};
use usher_engine::{Counts, EventId, Principal, SeatIdx, SeatState};
use usher_proto::v1 as pb;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::limits::{SEAT_FEED_FRAME_MS, SEAT_FEED_FRAMES_QUEUED_MAX, SEAT_FEED_KEEPALIVE_S, SEAT_FEED_QUEUED_MAX};

/// One item of a seat feed.
pub enum FeedItem {
    /// Every seat's state: the first item, and again after the watcher lagged.
    Snapshot(Box<SeatMapView>),
    /// What the event's committed batches changed over one frame.
    Frame(Arc<Frame>),
    /// Nothing happened for `SEAT_FEED_KEEPALIVE_S`: a server-sent-event
    /// feed writes a comment so that proxies keep the connection.
    KeepAlive,
}

/// What an event's committed batches changed over one frame
/// (`SEAT_FEED_FRAME_MS`), each seat at its last state, encoded once for
/// every watcher of the event: N watchers cost one encoding per frame and
/// one write each, instead of an encoding each per batch.
pub struct Frame {
    pub seats: Vec<(SeatIdx, SeatState)>,
    pub counts: Counts,
    /// The frame as a server-sent event (`event: changes`), ready to write.
    pub sse: axum::body::Bytes,
    /// The frame as `WatchSeats` sends it.
    pub pb: pb::SeatChanges,
    /// The hub missed batches (it fell behind the event's broadcast): every
    /// watcher takes a fresh snapshot instead.
    pub resync: bool,
}

/// Counts as the JSON API writes them.
#[derive(serde::Serialize)]
pub struct CountsJson {
    pub available: u32,
    pub held: u32,
    pub sold: u32,
    pub blocked: u32,
}

impl From<pb::SeatCounts> for CountsJson {
    fn from(c: pb::SeatCounts) -> CountsJson {
        CountsJson { available: c.available, held: c.held, sold: c.sold, blocked: c.blocked }
    }
}

impl From<Counts> for CountsJson {
    fn from(c: Counts) -> CountsJson {
        crate::convert::counts(c).into()
    }
}

/// A frame's server-sent event: `{"counts", "seats": [gap, status, gap,
/// status, …]}`, the changed seats in index order, each as the gap from the
/// previous one's index (the first from 0) and its status digit (as the
/// snapshot's: 1 available, 2 held, 3 sold, 4 blocked). During an onsale a
/// frame changes runs of neighbouring seats, so a change costs about four
/// bytes (a label and a status name cost forty), and every watcher gets
/// every change: the bytes are the feed's cost.
#[derive(serde::Serialize)]
struct ChangesJson {
    counts: CountsJson,
    seats: Vec<u32>,
}

/// A server-sent event with a JSON payload, ready to write.
pub fn sse_event(name: &str, data: &impl serde::Serialize) -> axum::body::Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    axum::body::Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

impl Frame {
    fn encode(handle: &EventHandle, seats: Vec<(SeatIdx, SeatState)>, counts: Counts) -> Frame {
        // `seats` is in index order (gathered in a BTreeMap).
        let mut prev = 0;
        let gaps = seats
            .iter()
            .flat_map(|&(s, st)| {
                let gap = s.0 - prev;
                prev = s.0;
                [gap, crate::convert::seat_status(st) as u32]
            })
            .collect();
        let sse = sse_event("changes", &ChangesJson { counts: counts.into(), seats: gaps });
        let pb = pb::SeatChanges {
            event_id: handle.event_id.to_string(),
            changes: seats
                .iter()
                .map(|&(s, st)| pb::SeatStatusChange { seat_id: handle.layout.label(s), status: crate::convert::seat_status(st) as i32 })
                .collect(),
            counts: Some(crate::convert::counts(counts)),
            snapshot: false,
            status: Vec::new(),
        };
        Frame { seats, counts, sse, pb, resync: false }
    }
}

/// The node's event hubs: one task per watched event turns its committed
/// batches into frames and hands each to every watcher. A hub ends once no
/// watcher is left.
#[derive(Default)]
pub struct Hubs {
    hubs: Mutex<HashMap<EventId, broadcast::Sender<Arc<Frame>>>>,
}

impl Hubs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, broadcast::Sender<Arc<Frame>>>> {
        self.hubs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The frames of `handle`'s event, starting its hub if none runs.
    pub async fn subscribe(
        self: &Arc<Self>,
        registry: &Registry,
        handle: &EventHandle,
    ) -> Result<broadcast::Receiver<Arc<Frame>>, ApiError> {
        if let Some(tx) = self.lock().get(&handle.event_id) {
            return Ok(tx.subscribe());
        }
        let changes = registry.subscribe(handle.event_id).await?;
        let mut hubs = self.lock();
        if let Some(tx) = hubs.get(&handle.event_id) {
            return Ok(tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(SEAT_FEED_FRAMES_QUEUED_MAX);
        hubs.insert(handle.event_id, tx.clone());
        tokio::spawn(hub(self.clone(), handle.clone(), changes, tx));
        Ok(rx)
    }

    /// Ends `id`'s hub if nobody watches it (decided under the lock that
    /// subscribing takes, so no watcher is left with a dead hub).
    fn done(&self, id: EventId, tx: &broadcast::Sender<Arc<Frame>>) -> bool {
        let mut hubs = self.lock();
        if tx.receiver_count() == 0 {
            hubs.remove(&id);
            return true;
        }
        false
    }
}

/// One event's hub: gathers what its batches change over a frame, then
/// sends the frame, until nobody watches.
async fn hub(hubs: Arc<Hubs>, handle: EventHandle, mut changes: broadcast::Receiver<Arc<SeatChange>>, tx: broadcast::Sender<Arc<Frame>>) {
    let id = handle.event_id;
    let frame = std::time::Duration::from_millis(SEAT_FEED_FRAME_MS);
    loop {
        let first = match tokio::time::timeout(std::time::Duration::from_secs(SEAT_FEED_KEEPALIVE_S), changes.recv()).await {
            Err(_) => {
                if hubs.done(id, &tx) {
                    return;
                }
                continue;
            }
            Ok(r) => r,
        };
        let mut seats = std::collections::BTreeMap::new();
        let mut counts = None;
        let mut resync = false;
        let mut take = |r: Result<Arc<SeatChange>, RecvError>| match r {
            Ok(c) => {
                seats.extend(c.seats.iter().copied());
                counts = Some(c.counts);
                true
            }
            Err(RecvError::Lagged(_)) => {
                resync = true;
                true
            }
            Err(RecvError::Closed) => false,
        };
        if !take(first) {
            hubs.done(id, &tx);
            return;
        }
        // The rest of the frame's batches.
        tokio::time::sleep(frame).await;
        loop {
            match changes.try_recv() {
                Ok(c) => {
                    take(Ok(c));
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    take(Err(RecvError::Lagged(n)));
                }
                Err(_) => break,
            }
        }
        let out = match (resync, counts) {
            (false, Some(counts)) => Frame::encode(&handle, seats.into_iter().collect(), counts),
            _ => Frame {
                seats: Vec::new(),
                counts: Counts::default(),
                sse: axum::body::Bytes::new(),
                pb: pb::SeatChanges::default(),
                resync: true,
            },
        };
        if tx.send(Arc::new(out)).is_err() && hubs.done(id, &tx) {
            return;
        }
    }
}

/// The node's feed slots. Cheap to share (`Arc`).
pub struct StreamSlots {
    node: Arc<Semaphore>,
    per_node: usize,
    per_client: Mutex<HashMap<String, usize>>,
    per_client_max: usize,
    /// How long a feed waits for its watcher to take an item.
    stall: std::time::Duration,
}

/// A feed's place under both caps, given back when the feed ends.
pub struct StreamSlot {
    _node: OwnedSemaphorePermit,
    client: String,
    slots: Arc<StreamSlots>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut map = self.slots.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

impl StreamSlots {
    pub fn new(per_node: usize, per_client: usize, stall: std::time::Duration) -> StreamSlots {
        StreamSlots { node: Arc::new(Semaphore::new(per_node)), per_node, per_client: Mutex::default(), per_client_max: per_client, stall }
    }

    /// Feeds open now, node-wide.
    pub fn open(&self) -> usize {
        self.per_node - self.node.available_permits()
    }

    /// A slot for `caller`, or RESOURCE_EXHAUSTED / 429 with a sentence.
    pub fn take(self: &Arc<Self>, caller: &Caller) -> Result<StreamSlot, ApiError> {
        let client = match &caller.principal {
            Principal::Anonymous | Principal::Guest(_) => format!("a:{}", caller.network()),
            p => p.key_scope().unwrap_or_else(|| format!("a:{}", caller.network())),
        };
        let full = |what: &str| {
            let mut e = ApiError::new(ErrorCode::ResourceExhausted, "TOO_MANY_STREAMS", format!("{what}; close one and retry"));
            e.retry_after_s = Some(5);
            e
        };
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&client).is_some_and(|&n| n >= self.per_client_max) {
            return Err(full(&format!("this client already watches {} seat maps, the most one may", self.per_client_max)));
        }
        let node = self.node.clone().try_acquire_owned().map_err(|_| full("this server watches as many seat maps as it can"))?;
        *map.entry(client.clone()).or_insert(0) += 1;
        Ok(StreamSlot { _node: node, client, slots: self.clone() })
    }
}

/// A feed as its watcher reads it; holds the feed's slot until dropped.
pub struct FeedStream {
    rx: mpsc::Receiver<Result<FeedItem, ApiError>>,
    _slot: StreamSlot,
}

impl futures::Stream for FeedStream {
    type Item = Result<FeedItem, ApiError>;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Opens a feed of `handle`'s seats: a snapshot, then every frame, until
/// the watcher goes away or `stopping` turns true (then one `Err` saying
/// so). Subscribes before taking the snapshot, so no change falls between.
/// `cut` is the watcher's connection, cut if it stalls.
pub async fn seat_feed(
    handle: EventHandle,
    mut frames: broadcast::Receiver<Arc<Frame>>,
    mut stopping: watch::Receiver<bool>,
    slot: StreamSlot,
    cut: Option<crate::conns::ConnCut>,
) -> Result<FeedStream, ApiError> {
    let first = handle.seat_map().await?;
    let (tx, rx) = mpsc::channel(SEAT_FEED_QUEUED_MAX);
    let stall = slot.slots.stall;
    let handle_id = handle.event_id;
    tokio::spawn(async move {
        // False once the watcher is gone, or took nothing for `stall`.
        let cut = &cut;
        let give = |item: Result<FeedItem, ApiError>| {
            let tx = &tx;
            async move {
                match tokio::time::timeout(stall, tx.send(item)).await {
                    Ok(sent) => sent.is_ok(),
                    Err(_) => {
                        tracing::info!(event_id = %handle_id, "a seat feed's watcher stopped reading; cutting its connection");
                        if let Some(cut) = cut {
                            cut.cut();
                        }
                        false
                    }
                }
            }
        };
        if !give(Ok(FeedItem::Snapshot(Box::new(first)))).await {
            return;
        }
        let keepalive = std::time::Duration::from_secs(SEAT_FEED_KEEPALIVE_S);
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(keepalive, frames.recv()) => Some(r),
                _ = stopping.wait_for(|s| *s) => None,
                // The watcher went away: stop at once rather than at the next frame.
                () = tx.closed() => return,
            };
            let Some(next) = next else {
                let e = ApiError::new(ErrorCode::Unavailable, "SHUTTING_DOWN", "the server is shutting down; watch again elsewhere");
                give(Err(e)).await;
                return;
            };
            let item = match next {
                Err(_) => FeedItem::KeepAlive,
                Ok(Ok(f)) if !f.resync => FeedItem::Frame(f),
                // Changes were missed (by this watcher, or by the hub): the whole map again.
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => match handle.seat_map().await {
                    Ok(m) => FeedItem::Snapshot(Box::new(m)),
                    Err(e) => {
                        give(Err(e.into())).await;
                        return;
                    }
                },
                Ok(Err(RecvError::Closed)) => return,
            };
            if !give(Ok(item)).await {
                return;
            }
        }
    });
    Ok(FeedStream { rx, _slot: slot })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(principal: Principal, address: &str) -> Caller {
        Caller { principal, address: address.into() }
    }

    #[test]
    fn slots_are_capped_per_client_and_per_node_and_come_back() {
        let slots = Arc::new(StreamSlots::new(3, 2, std::time::Duration::from_secs(1)));
        let a = caller(Principal::Anonymous, "10.0.0.1");
        let b = caller(Principal::Anonymous, "10.0.0.2");
        let (a1, _a2) = (slots.take(&a).unwrap(), slots.take(&a).unwrap());
        let e = slots.take(&a).err().unwrap();
        assert_eq!((e.code, e.reason), (ErrorCode::ResourceExhausted, "TOO_MANY_STREAMS"));
        assert!(e.message.starts_with("this client already watches 2 seat maps"), "{}", e.message);
        let _b1 = slots.take(&b).unwrap();
        let e = slots.take(&b).err().unwrap();
        assert!(e.message.starts_with("this server watches as many seat maps as it can"), "{}", e.message);
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _b2 = slots.take(&b).unwrap();
    }

    #[test]
    fn an_ipv6_network_is_one_client() {
        let slots = Arc::new(StreamSlots::new(10, 1, std::time::Duration::from_secs(1)));
        let _one = slots.take(&caller(Principal::Anonymous, "2001:db8:1:2::10")).unwrap();
        assert!(slots.take(&caller(Principal::Anonymous, "2001:db8:1:2:ffff::99")).is_err(), "the same /64");
        let _other = slots.take(&caller(Principal::Anonymous, "2001:db8:1:3::10")).unwrap();
        let _v4 = slots.take(&caller(Principal::Anonymous, "192.0.2.7")).unwrap();
        assert!(slots.take(&caller(Principal::Anonymous, "::ffff:192.0.2.7")).is_err(), "a mapped IPv4 is that IPv4");
    }
}
