//! The node service: what a node serves for the others of its cluster.
//! `Forward` runs a call another node took for an event this node owns
//! (once: it is never routed again); `Watch` feeds another node's mirror of
//! an event's seats (`cluster::Mirror`).
//!
//! Which methods may be forwarded is the method table's fact
//! (`doors::Route::ToOwner`); each service registers its handlers for them
//! in a [`Handlers`] table, and a node of a cluster refuses to start with a
//! forwarded method that has none (fail closed, as `json::Routes::add` does;
//! a single node serves no node service).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};
use usher_engine::Principal;
use usher_proto::cluster::{self as cpb, forward_reply, node_service_server::NodeService};

use crate::auth::Caller;
use crate::cluster;
use crate::ctx::Ctx;
use crate::doors::{self, Method};
use crate::error::{ApiError, ErrorCode, Reason};

type Answer = Pin<Box<dyn Future<Output = Result<Vec<u8>, ApiError>> + Send>>;
type Handler = Box<dyn Fn(Caller, &[u8]) -> Answer + Send + Sync>;

/// The handlers of the methods a node serves for another, by path.
#[derive(Default)]
pub struct Handlers(HashMap<&'static str, Handler>);

impl Handlers {
    /// Serves `method` for other nodes with `handler`, which runs the call
    /// here (its `_here` form: never routed again). Panics at start for a
    /// method the table does not forward, or one registered twice.
    pub fn serve<Req, Rep, F, Fut>(&mut self, method: &'static Method, handler: F)
    where
        Req: Message + Default + 'static,
        Rep: Message + 'static,
        F: Fn(Caller, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, ApiError>> + Send + 'static,
    {
        assert!(method.to_owner(), "{} is not forwarded in doors::GRPC, so no node serves it for another", method.path);
        let h: Handler = Box::new(move |c, body| match Req::decode(body) {
            Ok(r) => {
                let answer = handler(c, r);
                Box::pin(async move { answer.await.map(|rep| rep.encode_to_vec()) })
            }
            Err(e) => {
                let e = ApiError::invalid("body", format!("not a {}: {e}", std::any::type_name::<Req>()));
                Box::pin(std::future::ready(Err(e)))
            }
        });
        assert!(self.0.insert(method.path, h).is_none(), "{} is served twice", method.path);
    }

    /// Panics unless every forwarded method of the table has a handler.
    pub fn check_complete(&self) {
        for m in doors::GRPC.iter().filter(|m| m.to_owner()) {
            assert!(self.0.contains_key(m.path), "{} is forwarded to the event's owner but no service serves it", m.path);
        }
    }

    async fn dispatch(&self, c: Caller, method: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        match self.0.get(method) {
            Some(h) => h(c, body).await,
            None => Err(ApiError::new(
                ErrorCode::InvalidArgument,
                Reason::NotForwardable,
                format!("{method} is not a method a node serves for another"),
            )),
        }
    }
}

/// The node service of one node.
pub struct Node {
    ctx: Ctx,
    handlers: Arc<Handlers>,
}

impl Node {
    /// The node service over these handlers (checked complete).
    pub fn new(ctx: Ctx, handlers: Handlers) -> Node {
        handlers.check_complete();
        Node { ctx, handlers: Arc::new(handlers) }
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
                ..cluster::item(m.counts)
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
                        ..cluster::item(c.counts)
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
        let deadline = crate::conns::grpc_deadline(req.metadata().as_ref()).map(|d| std::time::Instant::now() + d);
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
        let result = match self.handlers.dispatch(c, &r.method, &r.body).await {
            Ok(body) => forward_reply::Result::Body(body),
            Err(e) => forward_reply::Result::Error(cluster::to_forwarded(e)),
        };
        Ok(Response::new(cpb::ForwardReply { result: Some(result), node: cluster.name().to_owned() }))
    }
}

/// Registers a service's handler for a forwarded method: `$svc` is cloned
/// into the handler, which runs `$call` with the service as `$s`, the
/// caller as `$c` and the decoded request as `$r`.
macro_rules! serve_here {
    ($handlers:expr, $svc:expr, $method:expr, |$s:ident, $c:ident, $r:ident: $req:ty| $call:expr) => {{
        let svc = $svc.clone();
        $handlers.serve($method, move |$c: $crate::auth::Caller, $r: $req| {
            let $s = svc.clone();
            async move { $call.await }
        });
    }};
}
pub(crate) use serve_here;
