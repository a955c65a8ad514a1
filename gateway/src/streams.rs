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
use usher_engine::{Counts, EventConfig, EventId, Layout, Principal, SeatIdx, SeatState};
use usher_proto::v1 as pb;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode, Reason};
use crate::limits::{
    PAGE_FEED_RETRY_MS, PAGE_FEED_SEND_BUFFER_BYTES, PAGE_WATCHER_SENT_BYTES_MAX, PAGE_WRITES_PER_YIELD, SEAT_FEED_FRAME_MS,
    SEAT_FEED_FRAMES_QUEUED_MAX, SEAT_FEED_KEEPALIVE_S, SEAT_FEED_QUEUED_MAX,
};

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
    /// The frame as a server-sent event (`event: changes`) in one chunk,
    /// ready to write on a page's socket.
    pub sse: axum::body::Bytes,
    /// The frame as `WatchSeats` sends it; none when no such feed watched
    /// as it was encoded (a feed that subscribed since takes a snapshot).
    pub pb: Option<pb::SeatChanges>,
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
    /// `grpc`: some `WatchSeats` feed watches, so the frame is encoded for
    /// it too (a label per change; skipped when only pages watch).
    fn encode(handle: &Source, seats: Vec<(SeatIdx, SeatState)>, counts: Counts, grpc: bool) -> Frame {
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
        let sse = sse_chunk(&sse_event("changes", &ChangesJson { counts: counts.into(), seats: gaps }));
        let pb = grpc.then(|| pb::SeatChanges {
            event_id: handle.event_id().to_string(),
            changes: seats
                .iter()
                .map(|&(s, st)| pb::SeatStatusChange { seat_id: handle.layout().label(s), status: crate::convert::seat_status(st) as i32 })
                .collect(),
            counts: Some(crate::convert::counts(counts)),
            snapshot: false,
            status: Vec::new(),
        });
        Frame { sse, pb, resync: false }
    }

    fn resync() -> Frame {
        Frame { sse: axum::body::Bytes::new(), pb: None, resync: true }
    }
}

/// Every seat's status as one character, in seat-index order, the digit of
/// its gRPC `SeatStatus` (`1` available, `2` held, `3` sold, `4` blocked), so
/// that a 200,000-seat event's statuses are 200 KB, with the counts:
/// `GET …/seats/status`, and the first event of a live feed (again after the
/// watcher fell behind).
#[derive(serde::Serialize)]
pub struct SnapshotJson {
    pub counts: CountsJson,
    pub status: String,
}

/// The status vector as its digits.
pub fn status_chars(status: &[u8]) -> String {
    status.iter().map(|&b| char::from(b'0' + b)).collect()
}

/// `bytes` as one chunk of HTTP/1.1 chunked transfer coding (RFC 9112
/// §7.1): size in hex, CRLF, the bytes, CRLF. A page's feed is written on
/// its socket as such chunks (`PageWatcher`).
pub fn sse_chunk(bytes: &[u8]) -> axum::body::Bytes {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out.into()
}

/// The last chunk (RFC 9112 §7.1): the feed ends cleanly.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A page's live feed (`GET /api/events/{id}/seats/live`) once its answer's
/// head is out: the socket, taken from hyper, which the event's hub writes
/// directly and never waits on (`conns::SocketTakeover`). Its slot and its
/// place under the connection cap are held by a small task that waits for
/// the page to close the connection; dropping the watcher ends that task
/// and closes the socket.
pub struct PageWatcher {
    socket: Arc<tokio::net::TcpStream>,
    /// Chunks its socket has not taken yet, the first perhaps in part:
    /// shared with every other watcher of the frame, so a slow page costs a
    /// reference a chunk. At most `SEAT_FEED_QUEUED_MAX`; past that the
    /// page is behind.
    unsent: std::collections::VecDeque<axum::body::Bytes>,
    /// Since when its socket has taken nothing of what waits; the watcher
    /// is dropped once that lasts `seat_feed_stall_ms`.
    stuck_since: Option<std::time::Instant>,
    /// It missed frames: once what waits is sent, it takes a snapshot.
    behind: bool,
    /// Set by its task when the page closed the connection.
    left: Arc<std::sync::atomic::AtomicBool>,
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl PageWatcher {
    /// A watcher on `taken`'s socket, holding `slot` while it lives.
    pub fn new(taken: crate::conns::TakenSocket, slot: StreamSlot) -> PageWatcher {
        let (socket, place) = taken.into_parts();
        // A fixed send buffer: the kernel would otherwise grow it towards
        // 4 MiB for a page that reads nothing.
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(PAGE_FEED_SEND_BUFFER_BYTES);
        let socket = Arc::new(socket);
        let left = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (alive, mut dropped) = tokio::sync::oneshot::channel::<()>();
        let (sock, gone) = (socket.clone(), left.clone());
        tokio::spawn(async move {
            let _held = (slot, place);
            let mut buf = [0u8; 256];
            let mut sent = 0;
            loop {
                tokio::select! {
                    _ = &mut dropped => return,
                    ready = sock.readable() => {
                        if ready.is_err() {
                            break;
                        }
                        match sock.try_read(&mut buf) {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Ok(n) if n > 0 && sent + n <= PAGE_WATCHER_SENT_BYTES_MAX => sent += n,
                            // Closed, failed, or sending what a feed's client never sends.
                            _ => break,
                        }
                    }
                }
            }
            gone.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        PageWatcher { socket, unsent: Default::default(), stuck_since: None, behind: false, left, _alive: alive }
    }

    /// Writes what waits, as far as the socket takes it now; `Err` when the
    /// connection failed.
    fn flush(&mut self, now: std::time::Instant) -> Result<(), ()> {
        let mut progressed = false;
        while let Some(front) = self.unsent.front_mut() {
            match self.socket.try_write(front) {
                Ok(n) if n == front.len() => {
                    self.unsent.pop_front();
                    progressed = true;
                }
                Ok(n) => {
                    *front = front.slice(n..);
                    progressed |= n > 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Stuck counts from the last write that took anything:
                    // a slow page that keeps reading is not stalled.
                    if progressed || self.stuck_since.is_none() {
                        self.stuck_since = Some(now);
                    }
                    return Ok(());
                }
                Err(_) => return Err(()),
            }
        }
        self.stuck_since = None;
        Ok(())
    }

    /// Whether it keeps its place: it did not leave, its connection did not
    /// fail, and its socket has not been full for `stall`.
    fn keeps(&mut self, now: std::time::Instant, stall: std::time::Duration) -> bool {
        !self.left.load(std::sync::atomic::Ordering::Relaxed)
            && self.flush(now).is_ok()
            && self.stuck_since.is_none_or(|t| now.duration_since(t) < stall)
    }

    /// Offers the watcher a frame's chunk: queued behind what waits, unless
    /// `SEAT_FEED_QUEUED_MAX` chunks already wait (then it is behind and
    /// skips frames until it takes a snapshot). False when it is to be
    /// dropped (`keeps`).
    fn offer(&mut self, chunk: &axum::body::Bytes, now: std::time::Instant, stall: std::time::Duration) -> bool {
        if !self.behind {
            if self.unsent.len() < SEAT_FEED_QUEUED_MAX {
                self.unsent.push_back(chunk.clone());
            } else {
                self.behind = true;
            }
        }
        self.keeps(now, stall)
    }

    /// Whether it is behind with nothing left to send: it takes a snapshot now.
    fn wants_snapshot(&mut self, now: std::time::Instant) -> bool {
        self.behind && self.flush(now).is_ok() && self.unsent.is_empty()
    }

    /// Sends it a snapshot (a page joining, or one that was behind).
    fn snapshot(&mut self, chunk: &axum::body::Bytes, now: std::time::Instant, stall: std::time::Duration) -> bool {
        self.behind = false;
        self.unsent.push_back(chunk.clone());
        self.keeps(now, stall)
    }

    fn stuck(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Best effort: what waits, `bytes`, then the last chunk, as far as the
    /// socket takes them now.
    fn end(mut self, bytes: &[u8]) {
        let mut last = bytes.to_vec();
        last.extend_from_slice(LAST_CHUNK);
        self.unsent.push_back(last.into());
        let _ = self.flush(std::time::Instant::now());
    }
}

/// An event's hub as the node's map knows it.
struct HubEntry {
    frames: broadcast::Sender<Arc<Frame>>,
    pages: mpsc::UnboundedSender<PageWatcher>,
}

/// The node's event hubs: one task per watched event turns its committed
/// batches into frames, writes each to every page watching (on its socket)
/// and hands it to every `WatchSeats` feed. A hub ends once no watcher is
/// left.
pub struct Hubs {
    hubs: Mutex<HashMap<EventId, HubEntry>>,
    stopping: watch::Receiver<bool>,
    stall: std::time::Duration,
}

impl Hubs {
    pub fn new(stopping: watch::Receiver<bool>, stall: std::time::Duration) -> Hubs {
        Hubs { hubs: Mutex::default(), stopping, stall }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, HubEntry>> {
        self.hubs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hub of `handle`'s event, started if none runs.
    async fn entry<T>(
        self: &Arc<Self>,
        registry: &Registry,
        handle: &Source,
        mut with: impl FnMut(&HubEntry) -> Option<T>,
    ) -> Result<T, ApiError> {
        let id = handle.event_id();
        loop {
            if let Some(t) = self.lock().get(&id).and_then(&mut with) {
                return Ok(t);
            }
            let changes = handle.changes(registry).await?;
            let mut hubs = self.lock();
            if let Some(e) = hubs.get(&id) {
                if let Some(t) = with(e) {
                    return Ok(t);
                }
                continue;
            }
            let (frames, _) = broadcast::channel(SEAT_FEED_FRAMES_QUEUED_MAX);
            let (pages, joins) = mpsc::unbounded_channel();
            let entry = HubEntry { frames: frames.clone(), pages };
            let t = with(&entry);
            hubs.insert(id, entry);
            tokio::spawn(hub(self.clone(), handle.clone(), changes, frames, joins));
            if let Some(t) = t {
                return Ok(t);
            }
        }
    }

    /// The frames of `handle`'s event for a `WatchSeats` feed.
    pub async fn subscribe(self: &Arc<Self>, registry: &Registry, handle: &Source) -> Result<broadcast::Receiver<Arc<Frame>>, ApiError> {
        self.entry(registry, handle, |e| Some(e.frames.subscribe())).await
    }

    /// Hands `page` to `handle`'s hub, which sends it a snapshot, then every
    /// frame. (Sent under the map's lock, so a hub never ends with a page
    /// waiting for it.)
    pub async fn attach(self: &Arc<Self>, registry: &Registry, handle: &Source, page: PageWatcher) -> Result<(), ApiError> {
        let mut page = Some(page);
        self.entry(registry, handle, |e| match e.pages.send(page.take()?) {
            Ok(()) => Some(()),
            Err(back) => {
                page = Some(back.0);
                None
            }
        })
        .await
    }

    /// Ends `id`'s hub if nobody watches it (decided under the lock that
    /// subscribing takes, so no watcher is left with a dead hub); `force`:
    /// whoever watches.
    fn done(
        &self,
        id: EventId,
        frames: &broadcast::Sender<Arc<Frame>>,
        pages: usize,
        joins: &mpsc::UnboundedReceiver<PageWatcher>,
        force: bool,
    ) -> bool {
        let mut hubs = self.lock();
        if force || (frames.receiver_count() == 0 && pages == 0 && joins.is_empty()) {
            if hubs.get(&id).is_some_and(|e| e.frames.same_channel(frames)) {
                hubs.remove(&id);
            }
            return true;
        }
        false
    }
}

/// Keeps the pages for which `keep` (which writes to them) is true,
/// yielding to the runtime every `PAGE_WRITES_PER_YIELD` pages: a frame for
/// 10,000 pages is 10,000 writes, and a task that makes them all at once
/// holds its worker thread for tens of milliseconds, and with it the task
/// the runtime woke last on that worker, which no other worker may take
/// (tokio's LIFO slot): often the event's actor, whose batches then wait.
async fn each_page(pages: &mut Vec<PageWatcher>, mut keep: impl FnMut(&mut PageWatcher) -> bool) {
    let mut i = 0;
    let mut written = 0;
    while i < pages.len() {
        if keep(&mut pages[i]) {
            i += 1;
        } else {
            // Order does not matter among pages.
            pages.swap_remove(i);
        }
        written += 1;
        if written % PAGE_WRITES_PER_YIELD == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// What woke a hub.
enum Wake {
    Change(Result<Arc<SeatChange>, RecvError>),
    Page(PageWatcher),
    Idle,
    Retry,
    Stop,
}

/// One event's hub: gathers what its batches change over a frame, then
/// writes the frame, until nobody watches. Pages that join, and pages that
/// fell behind once their socket has room, get a snapshot after the frame:
/// one read of the map and one encoding for all of them.
async fn hub(
    hubs: Arc<Hubs>,
    handle: Source,
    mut changes: broadcast::Receiver<Arc<SeatChange>>,
    tx: broadcast::Sender<Arc<Frame>>,
    mut joins: mpsc::UnboundedReceiver<PageWatcher>,
) {
    let id = handle.event_id();
    let frame = std::time::Duration::from_millis(SEAT_FEED_FRAME_MS);
    let keepalive_every = std::time::Duration::from_secs(SEAT_FEED_KEEPALIVE_S);
    let keepalive = sse_chunk(b":\n\n");
    let retry_every = std::time::Duration::from_millis(PAGE_FEED_RETRY_MS);
    let stall = hubs.stall;
    let mut stopping = hubs.stopping.clone();
    // Deadlines, not sleeps restarted on every wake: pages joining or
    // retries must not put off the keep-alive (which also finds pages that
    // left), nor joins the retries.
    let mut next_keepalive = tokio::time::Instant::now() + keepalive_every;
    let mut retry = tokio::time::interval(retry_every);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pages: Vec<PageWatcher> = Vec::new();
    let mut joining: Vec<PageWatcher> = Vec::new();
    // Ends the hub whoever watches: each page gets `e` and the last chunk.
    let finish = |pages: Vec<PageWatcher>, joining: Vec<PageWatcher>, mut joins: mpsc::UnboundedReceiver<PageWatcher>, e: ApiError| {
        hubs.done(id, &tx, 0, &joins, true);
        let bytes = sse_chunk(&sse_event("error", &crate::error::ErrorJson::from(e)));
        let mut waiting = Vec::new();
        while let Ok(p) = joins.try_recv() {
            waiting.push(p);
        }
        for p in pages.into_iter().chain(joining).chain(waiting) {
            p.end(&bytes);
        }
    };
    loop {
        let wake = tokio::select! {
            r = changes.recv() => Wake::Change(r),
            Some(p) = joins.recv() => Wake::Page(p),
            _ = stopping.wait_for(|s| *s) => Wake::Stop,
            () = tokio::time::sleep_until(next_keepalive) => Wake::Idle,
            // Pages whose sockets were full try again soon, not at the next frame.
            _ = retry.tick(), if pages.iter().any(PageWatcher::stuck) => Wake::Retry,
        };
        let now = std::time::Instant::now();
        match wake {
            Wake::Stop => {
                let e = ApiError::new(ErrorCode::Unavailable, Reason::ShuttingDown, "the server is shutting down; watch again elsewhere");
                return finish(pages, joining, joins, e);
            }
            Wake::Idle => {
                next_keepalive = tokio::time::Instant::now() + keepalive_every;
                each_page(&mut pages, |p| p.offer(&keepalive, now, stall)).await
            }
            Wake::Retry => each_page(&mut pages, |p| p.keeps(now, stall)).await,
            Wake::Page(p) => {
                joining.push(p);
                while let Ok(p) = joins.try_recv() {
                    joining.push(p);
                }
            }
            Wake::Change(first) => {
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
                    // The event stopped here (unloaded, or owned elsewhere):
                    // its watchers watch again, wherever it runs next.
                    let e = ApiError::new(ErrorCode::Unavailable, Reason::FeedEnded, "the event's live feed ended here; watch again");
                    return finish(pages, joining, joins, e);
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
                let out = Arc::new(match (resync, counts) {
                    (false, Some(counts)) => Frame::encode(&handle, seats.into_iter().collect(), counts, tx.receiver_count() > 0),
                    _ => Frame::resync(),
                });
                let now = std::time::Instant::now();
                if out.resync {
                    pages.iter_mut().for_each(|p| p.behind = true);
                } else {
                    each_page(&mut pages, |p| p.offer(&out.sse, now, stall)).await;
                    next_keepalive = tokio::time::Instant::now() + keepalive_every;
                }
                let _ = tx.send(out);
            }
        }
        // Snapshots for those joining and those behind with room again.
        let now = std::time::Instant::now();
        if !joining.is_empty() || pages.iter_mut().any(|p| p.wants_snapshot(now)) {
            match handle.seat_map().await {
                Ok(m) => {
                    let bytes = sse_chunk(&sse_event(
                        "snapshot",
                        &SnapshotJson { counts: m.counts.into(), status: status_chars(&crate::convert::status_bytes(&m.seats)) },
                    ));
                    let now = std::time::Instant::now();
                    each_page(&mut pages, |p| !p.wants_snapshot(now) || p.snapshot(&bytes, now, stall)).await;
                    each_page(&mut joining, |p| p.snapshot(&bytes, now, stall)).await;
                    pages.append(&mut joining);
                }
                Err(e) => return finish(pages, joining, joins, e),
            }
        }
        if hubs.done(id, &tx, pages.len(), &joins, false) {
            return;
        }
    }
}

/// Where a feed's seats come from: the event's actor on this node, or (in a
/// cluster) the mirror of an event another node owns, kept current by that
/// node (`crate::cluster::Mirror`). Feeds and hubs read either the same way.
#[derive(Clone)]
pub enum Source {
    Local(EventHandle),
    Remote(Arc<crate::cluster::Mirror>),
}

impl Source {
    pub fn event_id(&self) -> EventId {
        match self {
            Source::Local(h) => h.event_id,
            Source::Remote(m) => m.event_id,
        }
    }

    pub fn layout(&self) -> &Arc<Layout> {
        match self {
            Source::Local(h) => &h.layout,
            Source::Remote(m) => &m.layout,
        }
    }

    /// Every seat now (the mirror: as last heard from the owner).
    pub async fn seat_map(&self) -> Result<SeatMapView, ApiError> {
        match self {
            Source::Local(h) => Ok(h.seat_map().await?),
            Source::Remote(m) => Ok(m.seat_map()),
        }
    }

    /// The event's settings, for who may see it.
    pub async fn config(&self) -> Result<EventConfig, ApiError> {
        match self {
            Source::Local(h) => Ok(h.summary().await?.0),
            Source::Remote(m) => Ok(m.config.clone()),
        }
    }

    /// The event's committed changes from now on.
    async fn changes(&self, registry: &Registry) -> Result<broadcast::Receiver<Arc<SeatChange>>, ApiError> {
        match self {
            Source::Local(h) => Ok(registry.subscribe(h.event_id).await?),
            Source::Remote(m) => m
                .subscribe()
                .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, Reason::FeedEnded, "the event's live feed ended here; watch again")),
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

    /// How long a feed waits for its watcher (`seat_feed_stall_ms`).
    pub fn stall(&self) -> std::time::Duration {
        self.stall
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
            let mut e = ApiError::new(ErrorCode::ResourceExhausted, Reason::TooManyStreams, format!("{what}; close one and retry"));
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
    handle: Source,
    mut frames: broadcast::Receiver<Arc<Frame>>,
    mut stopping: watch::Receiver<bool>,
    slot: StreamSlot,
    cut: Option<crate::conns::ConnCut>,
) -> Result<FeedStream, ApiError> {
    let first = handle.seat_map().await?;
    let (tx, rx) = mpsc::channel(SEAT_FEED_QUEUED_MAX);
    let stall = slot.slots.stall;
    let handle_id = handle.event_id();
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
                let e = ApiError::new(ErrorCode::Unavailable, Reason::ShuttingDown, "the server is shutting down; watch again elsewhere");
                give(Err(e)).await;
                return;
            };
            let item = match next {
                Err(_) => FeedItem::KeepAlive,
                Ok(Ok(f)) if !f.resync && f.pb.is_some() => FeedItem::Frame(f),
                // Changes were missed (by this watcher, or by the hub): the whole map again.
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => match handle.seat_map().await {
                    Ok(m) => FeedItem::Snapshot(Box::new(m)),
                    Err(e) => {
                        give(Err(e)).await;
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
        Caller::new(principal, address.into())
    }

    #[test]
    fn slots_are_capped_per_client_and_per_node_and_come_back() {
        let slots = Arc::new(StreamSlots::new(3, 2, std::time::Duration::from_secs(1)));
        let a = caller(Principal::Anonymous, "10.0.0.1");
        let b = caller(Principal::Anonymous, "10.0.0.2");
        let (a1, _a2) = (slots.take(&a).unwrap(), slots.take(&a).unwrap());
        let e = slots.take(&a).err().unwrap();
        assert_eq!((e.code, e.reason), (ErrorCode::ResourceExhausted, crate::error::Reason::TooManyStreams));
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
