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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use tokio::sync::broadcast;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use usher_adapters::lease::RedisLeases;
use usher_engine::EventId;
use usher_proto::cluster::{self as cpb, forward_reply, node_service_client::NodeServiceClient};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode, Reason};
use crate::limits::{FORWARD_CONNECT_MS, FORWARD_MS_MAX};

mod mirror;
mod secret;

pub use mirror::Mirror;
pub(crate) use mirror::item;
use mirror::{counts_of, relay, states};
pub use secret::ClusterSecret;

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
            .map_err(|e| ApiError::new(ErrorCode::Internal, Reason::Internal, format!("a node advertises a bad address {addr:?}: {e}")))?
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
        format!("Bearer {}", self.secret.expose()).parse().map_err(|_| moving("the cluster secret is not a header value".into()))
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
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, Reason::EventNotFound, format!("event {event} not found")))?;
        let (name, addr) = self.address_of(owner).await?;
        let mut request = Request::new(cpb::WatchEventRequest { event_id: event.to_string() });
        request.metadata_mut().insert("authorization", self.bearer()?);
        let mut client = NodeServiceClient::new(self.channel(&addr)?).max_decoding_message_size(crate::limits::GRPC_ENCODING_BYTES_MAX);
        let unreachable = |s: Status| moving(format!("the node that owns this event ({name}) did not answer: {}", s.message()));
        let mut stream = client.watch(request).await.map_err(unreachable)?.into_inner();
        let first = stream.message().await.map_err(unreachable)?.ok_or_else(|| moving("the event's owner ended its feed".into()))?;
        let seats = states(&first.snapshot)?;
        if seats.len() != facts.layout.seat_count() {
            return Err(ApiError::new(ErrorCode::Internal, Reason::Internal, "the event's owner sent a snapshot of another size"));
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
        let principal =
            serde_json::to_vec(&c.principal).map_err(|e| ApiError::new(ErrorCode::Internal, Reason::Internal, e.to_string()))?;
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
                .map_err(|e| ApiError::new(ErrorCode::Internal, Reason::Internal, format!("a node answered garbage: {e}"))),
            Some(forward_reply::Result::Error(e)) => Err(from_forwarded(e)),
            None => Err(ApiError::new(ErrorCode::Internal, Reason::Internal, "a node answered nothing")),
        }
    }
}

/// The client is told to retry: the event's owner could not be reached.
fn moving(why: String) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, Reason::OwnerUnreachable, format!("{why}; retry with the same idempotency key"))
}

fn from_forwarded(e: cpb::ForwardError) -> ApiError {
    let mut out =
        ApiError::new(ErrorCode::from_grpc(tonic::Code::from(e.grpc_code)), crate::error::Reason::from_name(&e.reason), e.message);
    out.seats = e.seats;
    out.retry_after_s = (e.retry_after_s > 0).then_some(e.retry_after_s);
    out
}

pub(crate) fn to_forwarded(e: ApiError) -> cpb::ForwardError {
    cpb::ForwardError {
        grpc_code: e.code.grpc_code() as i32,
        reason: e.reason.as_str().to_owned(),
        message: e.message,
        seats: e.seats,
        retry_after_s: e.retry_after_s.unwrap_or(0),
    }
}
