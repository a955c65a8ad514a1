//! The cluster from the gateway's side: requests for an event another node
//! owns are forwarded to it, once.
//!
//! Any node takes any request. A handler that finds the event owned
//! elsewhere (`OWNED_ELSEWHERE`, with the lease holder) has changed nothing
//! yet; `Ctx::routed` then sends the same request to the owner's
//! `usher.cluster.v1.NodeService/Forward` with the cluster's secret, the
//! principal this node authenticated and the caller's deadline. The owner
//! runs the same handler without routing (one hop: a request never bounces)
//! and its answer, success or refusal, goes back to the client unchanged but
//! for the `usher-node` header naming the node that decided. A client sees
//! UNAVAILABLE only while an event changes hands (the owner died and its
//! lease has not expired, or it stopped answering); the idempotency key in
//! the request makes the retry safe.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use tokio::sync::broadcast;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use usher_adapters::lease::RedisLeases;
use usher_engine::{EventId, Principal};
use usher_proto::cluster::{self as cpb, forward_reply, node_service_client::NodeServiceClient, node_service_server::NodeService};
use usher_proto::v1 as pb;

use crate::app::Ctx;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::limits::{FORWARD_CONNECT_MS, FORWARD_MS_MAX};

tokio::task_local! {
    /// The node that decided the request this task serves: set by the doors
    /// to this node's name, replaced by the owner's when a request was
    /// forwarded, and sent back as `usher-node`.
    pub static DECIDED_BY: RefCell<String>;
}

/// The name of the node that decided, for the `usher-node` header.
pub fn decided_by() -> Option<String> {
    DECIDED_BY.try_with(|d| d.borrow().clone()).ok().filter(|n| !n.is_empty())
}

fn set_decided_by(node: &str) {
    let _ = DECIDED_BY.try_with(|d| *d.borrow_mut() = node.to_owned());
}

/// The shared secret of a cluster; never printed.
#[derive(Clone)]
pub struct ClusterSecret(String);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(***)")
    }
}

impl ClusterSecret {
    pub fn new(s: String) -> ClusterSecret {
        ClusterSecret(s)
    }

    /// Whether `bearer` is the secret, compared in constant time (its
    /// length is not a secret: every node is told it).
    pub fn admits(&self, bearer: Option<&str>) -> bool {
        use subtle_eq::ct_eq;
        bearer.is_some_and(|b| ct_eq(b.as_bytes(), self.0.as_bytes()))
    }
}

mod subtle_eq {
    /// Equal bytes, in time independent of where they differ.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        use hmac::Mac;
        // HMAC's verify compares in constant time; the key is irrelevant.
        let tag = |x: &[u8]| {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"usher cluster secret").expect("any key length");
            m.update(x);
            m
        };
        let want = tag(b).finalize().into_bytes();
        tag(a).verify_slice(&want).is_ok()
    }
}

/// This node's place in the cluster.
pub struct Cluster {
    pub leases: Arc<RedisLeases>,
    /// The shared lock on the database, held for the node's life
    /// (`usher_adapters::lock_cluster_node`).
    _db_lock: Option<usher_adapters::NodeLock>,
    secret: ClusterSecret,
    /// One connection per peer, made on first use.
    channels: std::sync::Mutex<HashMap<String, Channel>>,
    /// Each lease holder's gRPC address: a holder's id names one process,
    /// whose address never changes.
    addrs: std::sync::Mutex<HashMap<String, (String, String)>>,
    /// Requests this node forwarded, and forwarded requests it served.
    pub forwarded_out: AtomicU64,
    pub forwarded_in: AtomicU64,
    /// The events this node mirrors for its watchers (`Mirror`).
    mirrors: std::sync::Mutex<HashMap<EventId, std::sync::Weak<Mirror>>>,
}

/// What `usher cluster status` and the bench read of a node's forwarding.
impl Cluster {
    pub fn new(leases: Arc<RedisLeases>, secret: ClusterSecret, db_lock: Option<usher_adapters::NodeLock>) -> Cluster {
        Cluster {
            leases,
            _db_lock: db_lock,
            secret,
            channels: std::sync::Mutex::new(HashMap::new()),
            addrs: std::sync::Mutex::new(HashMap::new()),
            mirrors: std::sync::Mutex::new(HashMap::new()),
            forwarded_out: AtomicU64::new(0),
            forwarded_in: AtomicU64::new(0),
        }
    }

    /// This node's name (`--node-name`).
    pub fn name(&self) -> &str {
        &self.leases.config().node_name
    }

    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    fn channel(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut channels = self.channels.lock().expect("channels");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ApiError::new(ErrorCode::Internal, "INTERNAL", format!("a node advertises a bad address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(FORWARD_CONNECT_MS))
            .tcp_nodelay(true);
        let c = ep.connect_lazy();
        // Bounded: peers are few; a cluster that churned through many
        // addresses starts over.
        if channels.len() >= 256 {
            channels.clear();
        }
        channels.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// The name and gRPC address of `owner` (a lease holder's id).
    async fn address_of(&self, owner: &str) -> Result<(String, String), ApiError> {
        if let Some(a) = self.addrs.lock().expect("addrs").get(owner).cloned() {
            return Ok(a);
        }
        let r = self
            .leases
            .node_record(owner)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| moving(format!("the node that owns this event ({owner}) is gone and its lease has not expired yet")))?;
        let mut addrs = self.addrs.lock().expect("addrs");
        if addrs.len() >= 1_024 {
            addrs.clear();
        }
        addrs.insert(owner.to_owned(), (r.name.clone(), r.grpc_addr.clone()));
        Ok((r.name, r.grpc_addr))
    }

    fn bearer(&self) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, ApiError> {
        format!("Bearer {}", self.secret.0).parse().map_err(|_| moving("the cluster secret is not a header value".into()))
    }

    /// The mirror of `event`, owned by `owner`, for this node's watchers:
    /// the one running, or a new one fed by the owner's `Watch`.
    pub async fn mirror(&self, registry: &usher_actors::Registry, event: EventId, owner: &str) -> Result<Arc<Mirror>, ApiError> {
        if let Some(m) = self.mirrors.lock().expect("mirrors").get(&event).and_then(std::sync::Weak::upgrade) {
            return Ok(m);
        }
        let facts = registry.facts(event).await?;
        let config = registry
            .store()
            .get_event(event)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "EVENT_NOT_FOUND", format!("event {event} not found")))?;
        let (name, addr) = self.address_of(owner).await?;
        let mut request = Request::new(cpb::WatchEventRequest { event_id: event.to_string() });
        request.metadata_mut().insert("authorization", self.bearer()?);
        let mut client = NodeServiceClient::new(self.channel(&addr)?).max_decoding_message_size(crate::limits::GRPC_ENCODING_BYTES_MAX);
        let unreachable = |s: Status| moving(format!("the node that owns this event ({name}) did not answer: {}", s.message()));
        let mut stream = client.watch(request).await.map_err(unreachable)?.into_inner();
        let first = stream.message().await.map_err(unreachable)?.ok_or_else(|| moving("the event's owner ended its feed".into()))?;
        let seats = states(&first.snapshot)?;
        if seats.len() != facts.layout.seat_count() {
            return Err(ApiError::new(ErrorCode::Internal, "INTERNAL", "the event's owner sent a snapshot of another size"));
        }
        let (changes, _) = broadcast::channel(1024);
        let m = Arc::new(Mirror {
            event_id: event,
            layout: facts.layout,
            config,
            seats: std::sync::Mutex::new((seats, counts_of(&first))),
            changes: std::sync::Mutex::new(Some(changes)),
        });
        let mut mirrors = self.mirrors.lock().expect("mirrors");
        if let Some(running) = mirrors.get(&event).and_then(std::sync::Weak::upgrade) {
            return Ok(running);
        }
        mirrors.retain(|_, w| w.strong_count() > 0);
        mirrors.insert(event, Arc::downgrade(&m));
        tokio::spawn(relay(Arc::downgrade(&m), stream));
        Ok(m)
    }

    /// Sends `req` for `method` to `owner` (a lease holder's id) as `c`, and
    /// returns the owner's answer.
    pub async fn forward<Req: Message, Rep: Message + Default>(
        &self,
        owner: &str,
        c: &Caller,
        method: &'static str,
        req: &Req,
    ) -> Result<Rep, ApiError> {
        let (name, addr) = self.address_of(owner).await?;
        let principal = serde_json::to_vec(&c.principal).map_err(|e| ApiError::new(ErrorCode::Internal, "INTERNAL", e.to_string()))?;
        let mut request = Request::new(cpb::ForwardRequest {
            method: method.to_owned(),
            principal,
            address: c.address.clone(),
            body: req.encode_to_vec(),
            from_node: self.name().to_owned(),
        });
        request.metadata_mut().insert("authorization", self.bearer()?);
        // The owner's spans join the caller's trace.
        if let Some(tp) = usher_actors::trace::current().and_then(|tp| tp.parse().ok()) {
            request.metadata_mut().insert("traceparent", tp);
        }
        // What is left of the caller's deadline, at most `FORWARD_MS_MAX`.
        let most = Duration::from_millis(FORWARD_MS_MAX);
        request.set_timeout(c.deadline.map_or(most, |d| d.saturating_duration_since(std::time::Instant::now()).min(most)));
        self.forwarded_out.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(usher_actors::metrics::names::FORWARDED, "direction" => "out").increment(1);
        let mut client = NodeServiceClient::new(self.channel(&addr)?)
            .max_decoding_message_size(crate::limits::GRPC_ENCODING_BYTES_MAX)
            .max_encoding_message_size(crate::limits::GRPC_DECODING_BYTES_MAX);
        let reply = client
            .forward(request)
            .await
            .map_err(|s| moving(format!("the node that owns this event ({name}) did not answer: {}", s.message())))?
            .into_inner();
        set_decided_by(&reply.node);
        match reply.result {
            Some(forward_reply::Result::Body(b)) => Rep::decode(b.as_slice())
                .map_err(|e| ApiError::new(ErrorCode::Internal, "INTERNAL", format!("a node answered garbage: {e}"))),
            Some(forward_reply::Result::Error(e)) => Err(from_forwarded(e)),
            None => Err(ApiError::new(ErrorCode::Internal, "INTERNAL", "a node answered nothing")),
        }
    }
}

/// The client is told to retry: the event's owner could not be reached.
fn moving(why: String) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "OWNER_UNREACHABLE", format!("{why}; retry with the same idempotency key"))
}

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
    seats: std::sync::Mutex<(Vec<usher_engine::SeatState>, usher_engine::Counts)>,
    /// Taken away when the owner's feed ends.
    changes: std::sync::Mutex<Option<broadcast::Sender<Arc<usher_actors::SeatChange>>>>,
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
        _ => return Err(ApiError::new(ErrorCode::Internal, "INTERNAL", format!("a node sent seat state {b}"))),
    })
}

fn states(bytes: &[u8]) -> Result<Vec<usher_engine::SeatState>, ApiError> {
    bytes.iter().map(|&b| state_of(b)).collect()
}

fn counts_of(i: &cpb::WatchEventItem) -> usher_engine::Counts {
    usher_engine::Counts { available: i.available, held: i.held, sold: i.sold, blocked: i.blocked }
}

fn item(counts: usher_engine::Counts) -> cpb::WatchEventItem {
    cpb::WatchEventItem { available: counts.available, held: counts.held, sold: counts.sold, blocked: counts.blocked, ..Default::default() }
}

/// Applies the owner's feed to `mirror` until it ends or nobody watches.
async fn relay(mirror: std::sync::Weak<Mirror>, mut stream: tonic::Streaming<cpb::WatchEventItem>) {
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

fn from_forwarded(e: cpb::ForwardError) -> ApiError {
    let mut out = ApiError::new(ErrorCode::from_grpc(tonic::Code::from(e.grpc_code)), crate::error::known_reason(&e.reason), e.message);
    out.seats = e.seats;
    out.retry_after_s = (e.retry_after_s > 0).then_some(e.retry_after_s);
    out
}

fn to_forwarded(e: ApiError) -> cpb::ForwardError {
    cpb::ForwardError {
        grpc_code: e.code.grpc_code() as i32,
        reason: e.reason.to_owned(),
        message: e.message,
        seats: e.seats,
        retry_after_s: e.retry_after_s.unwrap_or(0),
    }
}

impl Ctx {
    /// Runs `local` here; if the event turns out to be another node's, sends
    /// `r` to that node instead (once: a forwarded request is run with
    /// `local` directly, never routed again). One node: `local`, as is.
    pub(crate) async fn routed<Req, Rep, Fut>(
        &self,
        c: &Caller,
        method: &'static str,
        r: Req,
        local: impl FnOnce(Req) -> Fut,
    ) -> Result<Rep, ApiError>
    where
        Req: Message + Clone,
        Rep: Message + Default,
        Fut: Future<Output = Result<Rep, ApiError>>,
    {
        let Some(cluster) = &self.cluster else { return local(r).await };
        if c.forwarded {
            return local(r).await;
        }
        let copy = r.clone();
        match local(r).await {
            Err(ApiError { owner: Some(owner), .. }) => cluster.forward(&owner, c, method, &copy).await,
            other => other,
        }
    }
}

/// The methods a node serves for another: each public method whose handler
/// may find its event owned elsewhere, run here without routing.
pub struct Node {
    pub ctx: Ctx,
    pub catalog: crate::catalog::Catalog,
    pub inventory: crate::inventory::Inventory,
    pub orders: crate::orders::Orders,
}

/// `body` decoded as `$req`, handed to `$call`, its answer encoded.
macro_rules! serve {
    ($body:expr, $req:ty, |$r:ident| $call:expr) => {{
        match <$req>::decode($body) {
            Ok($r) => $call.await.map(|rep| rep.encode_to_vec()),
            Err(e) => Err(ApiError::invalid("body", format!("not a {}: {e}", stringify!($req)))),
        }
    }};
}

impl Node {
    async fn dispatch(&self, c: &Caller, method: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        use usher_engine::EventStatus::{Cancelled, OnSale, SalesClosed};
        let (cat, inv, ord) = (&self.catalog, &self.inventory, &self.orders);
        match method {
            "/usher.v1.InventoryService/HoldSeats" => serve!(body, pb::HoldSeatsRequest, |r| inv.hold_seats_here(c, r)),
            "/usher.v1.InventoryService/HoldBestAvailable" => serve!(body, pb::HoldBestAvailableRequest, |r| inv.hold_best_here(c, r)),
            "/usher.v1.InventoryService/GetHold" => serve!(body, pb::GetHoldRequest, |r| inv.get_here(c, r)),
            "/usher.v1.InventoryService/ReleaseHold" => serve!(body, pb::ReleaseHoldRequest, |r| inv.release_here(c, r)),
            "/usher.v1.CatalogService/GetEvent" => serve!(body, pb::GetEventRequest, |r| cat.event_here(c, &r.event_id)),
            "/usher.v1.CatalogService/GetSeatMap" => serve!(body, pb::GetSeatMapRequest, |r| cat.seat_map_here(c, &r.event_id)),
            "/usher.v1.CatalogService/GetSeatLayout" => serve!(body, pb::GetSeatLayoutRequest, |r| cat.seat_layout_here(c, &r.event_id)),
            "/usher.v1.CatalogService/GetSeatStatus" => serve!(body, pb::GetSeatStatusRequest, |r| cat.seat_status_here(c, &r.event_id)),
            "/usher.v1.CatalogService/OpenSales" => serve!(body, pb::EventCommandRequest, |r| cat.status_command_here(c, r, OnSale)),
            "/usher.v1.CatalogService/CloseSales" => {
                serve!(body, pb::EventCommandRequest, |r| cat.status_command_here(c, r, SalesClosed))
            }
            "/usher.v1.CatalogService/CancelEvent" => serve!(body, pb::EventCommandRequest, |r| cat.status_command_here(c, r, Cancelled)),
            "/usher.v1.CatalogService/BlockSeats" => serve!(body, pb::SeatsCommandRequest, |r| cat.seats_command_here(c, r, true)),
            "/usher.v1.CatalogService/UnblockSeats" => serve!(body, pb::SeatsCommandRequest, |r| cat.seats_command_here(c, r, false)),
            "/usher.v1.OrderingService/CreateOrder" => serve!(body, pb::CreateOrderRequest, |r| ord.create_order_here(c, r)),
            "/usher.v1.OrderingService/CancelOrder" => serve!(body, pb::CancelOrderRequest, |r| ord.cancel_order_here(c, r)),
            "/usher.v1.PaymentService/PayOrder" => serve!(body, pb::PayOrderRequest, |r| ord.pay_order_here(c, r)),
            other => Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "NOT_FORWARDABLE",
                format!("{other} is not a method a node serves for another"),
            )),
        }
    }
}

type WatchEventStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<cpb::WatchEventItem, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for Node {
    /// Served here only: an event this node does not own is UNAVAILABLE
    /// (the watching node asks the owner it knows of again).
    async fn watch(&self, req: Request<cpb::WatchEventRequest>) -> Result<Response<WatchEventStream>, Status> {
        let api = |e: ApiError| Status::from(e);
        let id = crate::convert::event_id(&req.get_ref().event_id).map_err(api)?;
        let handle = self.ctx.registry.event(id).await.map_err(|e| api(e.into()))?;
        // Subscribed before the snapshot, so no change falls between.
        let mut changes = self.ctx.registry.subscribe(id).await.map_err(|e| api(e.into()))?;
        let first = handle.seat_map().await.map_err(|e| api(e.into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(crate::limits::SEAT_FEED_QUEUED_MAX);
        let mut stopping = self.ctx.stopping.clone();
        tokio::spawn(async move {
            let snapshot = |m: &usher_actors::SeatMapView| cpb::WatchEventItem {
                snapshot: m.seats.iter().map(|&s| s as u8).collect(),
                ..item(m.counts)
            };
            if tx.send(Ok(snapshot(&first))).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    r = changes.recv() => r,
                    () = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                let out = match next {
                    Ok(c) => cpb::WatchEventItem {
                        changed_seats: c.seats.iter().map(|(s, _)| s.0).collect(),
                        changed_states: c.seats.iter().map(|&(_, st)| st as u8).collect(),
                        ..item(c.counts)
                    },
                    // Missed changes: the whole map again.
                    Err(broadcast::error::RecvError::Lagged(_)) => match handle.seat_map().await {
                        Ok(m) => snapshot(&m),
                        Err(_) => return,
                    },
                    // The event stopped here: the feed ends.
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn forward(&self, req: Request<cpb::ForwardRequest>) -> Result<Response<cpb::ForwardReply>, Status> {
        let deadline = crate::doors::grpc_deadline(req.metadata()).map(|d| std::time::Instant::now() + d);
        let r = req.into_inner();
        let principal: Principal = serde_json::from_slice(&r.principal)
            .map_err(|e| Status::invalid_argument(format!("principal: not one this node reads: {e}")))?;
        let c = Caller { principal, address: r.address, forwarded: true, deadline };
        let Some(cluster) = &self.ctx.cluster else {
            return Err(Status::failed_precondition("this node is not in a cluster"));
        };
        cluster.forwarded_in.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(usher_actors::metrics::names::FORWARDED, "direction" => "in").increment(1);
        tracing::debug!(method = %r.method, from = %r.from_node, "serving a forwarded request");
        let result = match self.dispatch(&c, &r.method, &r.body).await {
            Ok(body) => forward_reply::Result::Body(body),
            Err(e) => forward_reply::Result::Error(to_forwarded(e)),
        };
        Ok(Response::new(cpb::ForwardReply { result: Some(result), node: cluster.name().to_owned() }))
    }
}
