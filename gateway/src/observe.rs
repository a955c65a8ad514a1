//! What an operator sees of a live node, on its admin listener
//! (`--admin-addr`): `/metrics` (Prometheus text format 0.0.4), `/livez`,
//! `/readyz` and `/status` (this node's loaded events, queues and lags as
//! JSON, read by `usher status`). Also the request metrics of both doors: a
//! tower layer around the gRPC services and an axum middleware.
//!
//! The metrics themselves are named in `usher_actors::metrics`; they are
//! recorded through the `metrics` facade into one process-wide Prometheus
//! recorder (one node per process: tests that start two in one process
//! share its counters, and only read deltas).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use usher_actors::metrics::{ALL, Kind, names};

use crate::ctx::Ctx;

/// Duration buckets, in seconds: 0.5 ms to 60 s, about ×2.5 apart (a
/// group commit is ~1–20 ms, a render ~50–500 ms, a payment step seconds).
const SECONDS_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Group-commit sizes, in commands: powers of two up to the batch cap.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// How often histograms' samples are folded into their buckets. Between
/// folds, samples wait in a lock-free queue (8 bytes each).
const UPKEEP_MS: u64 = 5_000;
/// Ranks of `usher_hot_event_queue_depth_requests`; the events themselves
/// are named only by `/status`.
pub const HOT_EVENTS_MAX: usize = 10;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use with every
/// metric's help text. Errors: another recorder was installed first (not
/// done anywhere in Usher).
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = RECORDER.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(names::GROUP_COMMIT_BATCH_SIZE.into()), BATCH_BUCKETS)?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    let handle = RECORDER.get_or_init(|| handle).clone();
    for m in ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!(names::EVENT_QUEUE_CAPACITY).set(usher_engine::limits::MAILBOX_CAPACITY_MAX as f64);
    let h = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(UPKEEP_MS));
                h.run_upkeep();
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the metrics upkeep thread: {e}"))?;
    Ok(handle)
}

/// One node as `/status` shows it (and `usher status` prints it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `--node-name` in a cluster, else `single`.
    pub node: String,
    pub version: String,
    pub events_loaded: usize,
    /// Requests waiting in all event queues.
    pub queue_depth: usize,
    /// What one event's queue holds before it refuses (OVERLOADED).
    pub queue_capacity: usize,
    /// The deepest queues, deepest first, at most `HOT_EVENTS_MAX`.
    pub hot_events: Vec<HotEvent>,
    /// Sagas running here, and orders parked waiting for their payment.
    pub sagas_active: usize,
    pub orders_parked: usize,
    /// Renders waiting for a render slot.
    pub pdf_queue: usize,
    /// Email not yet sent, deployment-wide; age of the oldest in ms.
    pub email_backlog: u64,
    pub email_oldest_ms: u64,
    pub outbox: OutboxStatus,
    /// In a cluster: the nodes alive, as Redis lists them.
    pub cluster: Option<ClusterStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HotEvent {
    pub event_id: String,
    pub queue_depth: usize,
    /// The fencing token this node holds the event with.
    pub epoch: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutboxStatus {
    pub relaying: bool,
    pub destination: String,
    pub backlog_rows: u64,
    pub lag_ms: u64,
    pub behind: bool,
    pub published_total: u64,
    pub failed_total: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub leases_held: usize,
    pub forwarded_out: u64,
    pub forwarded_in: u64,
    pub nodes: Vec<PeerStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub grpc_addr: String,
    pub admin_addr: String,
    pub events: usize,
    pub heartbeat_age_ms: i64,
}

/// How often the admin listener reads the node's live figures (what
/// `/metrics` and `/status` serve in between).
pub const STATUS_REFRESH_MS: u64 = 2_000;
/// The longest one source (registry, sagas, database, Redis) may take per
/// refresh; a source that fails or takes longer keeps its last figures.
pub const STATUS_SOURCE_MS_MAX: u64 = 1_000;

/// Reads this node's live figures, each source under a time limit, on top
/// of `prev` (what a failed source keeps), and sets the gauges they feed.
pub async fn status(ctx: &Ctx, prev: Option<&NodeStatus>) -> NodeStatus {
    use std::sync::atomic::Ordering::Relaxed;
    async fn within<T>(f: impl Future<Output = Option<T>>) -> Option<T> {
        tokio::time::timeout(Duration::from_millis(STATUS_SOURCE_MS_MAX), f).await.ok().flatten()
    }
    let mut s = prev.cloned().unwrap_or_else(|| NodeStatus {
        node: ctx.cluster.as_ref().map_or_else(|| "single".to_owned(), |c| c.name().to_owned()),
        version: env!("CARGO_PKG_VERSION").into(),
        events_loaded: 0,
        queue_depth: 0,
        queue_capacity: usher_engine::limits::MAILBOX_CAPACITY_MAX,
        hot_events: Vec::new(),
        sagas_active: 0,
        orders_parked: 0,
        pdf_queue: 0,
        email_backlog: 0,
        email_oldest_ms: 0,
        outbox: OutboxStatus::default(),
        cluster: None,
    });
    let now = ctx.now();
    if let Some(mut loaded) = within(async { ctx.registry.loaded().await.ok() }).await {
        loaded.sort_by(|a, b| b.queue_depth.cmp(&a.queue_depth).then(a.event_id.cmp(&b.event_id)));
        s.events_loaded = loaded.len();
        s.queue_depth = loaded.iter().map(|e| e.queue_depth).sum();
        s.hot_events = loaded
            .iter()
            .take(HOT_EVENTS_MAX)
            .map(|e| HotEvent { event_id: e.event_id.to_string(), queue_depth: e.queue_depth, epoch: e.epoch.0 })
            .collect();
    }
    if let Some((active, parked)) = within(ctx.sagas.count()).await {
        (s.sagas_active, s.orders_parked) = (active, parked);
    }
    if let Some(mail) = within(async { ctx.orders.mail_backlog().await.ok() }).await {
        s.email_backlog = mail.rows;
        s.email_oldest_ms = mail.oldest_at.map_or(0, |t| (now.0 - t.0).max(0) as u64);
    }
    s.pdf_queue = ctx.sagas.deps.render_slots.waiting();
    let relay = ctx.relay.status();
    s.outbox = OutboxStatus {
        relaying: relay.relaying,
        destination: relay.destination.clone(),
        backlog_rows: relay.backlog.rows,
        lag_ms: relay.lag_ms,
        behind: relay.behind,
        published_total: relay.published_total,
        failed_total: relay.failed_total,
        last_error: relay.last_error.clone(),
    };
    if let Some(c) = &ctx.cluster {
        let nodes: Option<Vec<PeerStatus>> = within(async {
            match c.leases.nodes().await {
                Ok(nodes) => Some(
                    nodes
                        .into_iter()
                        .map(|n| PeerStatus {
                            name: n.name,
                            grpc_addr: n.grpc_addr,
                            admin_addr: n.admin_addr,
                            events: n.events.len(),
                            heartbeat_age_ms: now.0 - n.heartbeat_ms,
                        })
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's nodes for the admin listener");
                    None
                }
            }
        })
        .await;
        let kept = s.cluster.take().map(|c| c.nodes).unwrap_or_default();
        s.cluster = Some(ClusterStatus {
            leases_held: c.leases.held_count(),
            forwarded_out: c.forwarded_out.load(Relaxed),
            forwarded_in: c.forwarded_in.load(Relaxed),
            nodes: nodes.unwrap_or(kept),
        });
    }
    set_gauges(&s);
    s
}

fn set_gauges(s: &NodeStatus) {
    use metrics::gauge;
    gauge!(names::EVENTS_LOADED).set(s.events_loaded as f64);
    gauge!(names::EVENT_QUEUE_DEPTH).set(s.queue_depth as f64);
    // Every rank each time: a rank no event fills any more reads 0.
    for (i, rank) in RANKS.iter().enumerate() {
        let depth = s.hot_events.get(i).map_or(0, |e| e.queue_depth);
        gauge!(names::HOT_EVENT_QUEUE_DEPTH, "rank" => *rank).set(depth as f64);
    }
    gauge!(names::SAGAS_ACTIVE).set(s.sagas_active as f64);
    gauge!(names::PDF_QUEUE_DEPTH).set(s.pdf_queue as f64);
    gauge!(names::EMAIL_BACKLOG).set(s.email_backlog as f64);
    gauge!(names::OUTBOX_BACKLOG).set(s.outbox.backlog_rows as f64);
    gauge!(names::OUTBOX_LAG).set(s.outbox.lag_ms as f64 / 1000.0);
    gauge!(names::OUTBOX_RELAYING).set(if s.outbox.relaying { 1.0 } else { 0.0 });
    match &s.cluster {
        None => {
            gauge!(names::NODES).set(1.0);
            gauge!(names::LEASES_HELD).set(0.0);
        }
        Some(c) => {
            gauge!(names::NODES).set(c.nodes.len() as f64);
            gauge!(names::LEASES_HELD).set(c.leases_held as f64);
        }
    }
}

const RANKS: [&str; HOT_EVENTS_MAX] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

/// What the admin listener's handlers read: the figures the refresher
/// last read, the page's recorder, and whether the node is stopping. No
/// handler holds the node's context, so an open admin connection never
/// keeps the node from shutting down.
#[derive(Clone)]
pub struct Admin {
    latest: Arc<std::sync::RwLock<Option<NodeStatus>>>,
    handle: PrometheusHandle,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Admin {
    /// Starts the refresher (every `STATUS_REFRESH_MS`, the first at once);
    /// abort its task to let go of `ctx`.
    pub fn start(ctx: Ctx, handle: PrometheusHandle) -> (Admin, tokio::task::JoinHandle<()>) {
        let admin = Admin { latest: Arc::default(), handle, stopping: ctx.stopping.clone() };
        let latest = admin.latest.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(STATUS_REFRESH_MS));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let prev = latest.read().unwrap_or_else(|p| p.into_inner()).clone();
                let s = status(&ctx, prev.as_ref()).await;
                *latest.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
            }
        });
        (admin, task)
    }

    fn latest(&self) -> Option<NodeStatus> {
        self.latest.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The admin listener's routes. Nothing here needs credentials: bind it
/// where only operators and Prometheus reach (loopback by default).
pub fn admin_router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_page))
        .with_state(admin)
}

async fn metrics_page(State(a): State<Admin>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], a.handle.render()).into_response()
}

async fn status_page(State(a): State<Admin>) -> Response {
    match a.latest() {
        Some(s) => Json(s).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "starting: no figures read yet" }))).into_response(),
    }
}

/// Ready while the node is not shutting down and its outbox keeps up.
async fn readyz(State(a): State<Admin>) -> Response {
    let stopping = *a.stopping.borrow();
    let behind = a.latest().is_some_and(|s| s.outbox.behind);
    let ready = !stopping && !behind;
    let body = serde_json::json!({ "ready": ready, "stopping": stopping, "outbox_behind": behind });
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body)).into_response()
}

// -- request metrics, HTTP

/// Counts and times every HTTP request by its route template.
pub async fn http_metrics(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = http_method(req.method());
    let span = crate::telemetry::server_span("http", &format!("{method} {route}"), req.headers());
    let res = tracing::Instrument::instrument(next.run(req), span).await;
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => route.clone(), "method" => method).record(started.elapsed().as_secs_f64());
    metrics::counter!(names::HTTP_REQUESTS, "route" => route, "method" => method, "status" => res.status().as_str().to_owned())
        .increment(1);
    res
}

/// The method as a label from a closed set.
fn http_method(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

// -- request metrics, gRPC

/// Counts and times every gRPC call, outside the access check so refused
/// calls count too. The status code is read from the answer's headers
/// (an error answered at once) or its trailers (everything else), so the
/// time runs to the end of the answer's body.
#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        let path = req.uri().path();
        // Only methods that exist name a series: a scanner's made-up paths
        // would otherwise grow the label set without bound.
        let method = crate::doors::grpc_method(path).map_or("other", |m| m.path);
        let span = crate::telemetry::server_span("grpc", method, req.headers());
        Box::pin(async move {
            let res = tracing::Instrument::instrument(inner.call(req), span).await?;
            let (parts, body) = res.into_parts();
            let early = parts.headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
            let body = Metered { inner: body, method: Some(method), started, code: early };
            Ok(http::Response::from_parts(parts, tonic::body::Body::new(body)))
        })
    }
}

/// An answer's body that records its call when it ends (or is dropped).
struct Metered {
    inner: tonic::body::Body,
    method: Option<&'static str>,
    started: Instant,
    code: Option<i32>,
}

impl Metered {
    fn record(&mut self) {
        if let Some(method) = self.method.take() {
            // No status at all: the client went away before the end.
            let code = self.code.map_or("CANCELLED", grpc_code_name);
            metrics::histogram!(names::GRPC_REQUEST_DURATION, "method" => method).record(self.started.elapsed().as_secs_f64());
            metrics::counter!(names::GRPC_REQUESTS, "method" => method, "code" => code).increment(1);
        }
    }
}

impl http_body::Body for Metered {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) =
                    frame.trailers_ref().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
                {
                    self.code = Some(code);
                }
            }
            Poll::Ready(None) => self.record(),
            Poll::Ready(Some(Err(_))) => {
                self.code = self.code.or(Some(tonic::Code::Internal as i32));
                self.record();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.record();
    }
}

/// gRPC's name of a status code, from the one table (`error::grpc_code_name`).
fn grpc_code_name(code: i32) -> &'static str {
    crate::error::grpc_code_name(tonic::Code::from_i32(code))
}

// -- `usher status`

/// Reads `/status` from the admin listener at `addr` (`host:port`).
/// Errors: the node does not answer within 5 s, or answers something else.
pub async fn fetch_status(addr: &str) -> anyhow::Result<NodeStatus> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{addr}/status").parse().map_err(|e| anyhow::anyhow!("{addr}: not host:port ({e})"))?;
    let res = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within 5 s"))?
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
    if !res.status().is_success() {
        anyhow::bail!("{addr}: answered {}", res.status());
    }
    let body = res.into_body().collect().await.map_err(|e| anyhow::anyhow!("{addr}: {e}"))?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{addr}: not a node's status ({e})"))
}

/// `usher status`: every node at `addrs`, and in a cluster every node they
/// see, as a table or as JSON.
pub async fn print_status(addrs: &[String], json: bool) -> anyhow::Result<()> {
    let mut todo: Vec<String> = addrs.to_vec();
    let mut seen = std::collections::HashSet::new();
    let mut nodes = Vec::new();
    let mut failed = Vec::new();
    while let Some(addr) = todo.pop() {
        if !seen.insert(addr.clone()) {
            continue;
        }
        // A node that does not answer is reported; the others are shown.
        let s = match fetch_status(&addr).await {
            Ok(s) => s,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        if let Some(c) = &s.cluster {
            todo.extend(c.nodes.iter().filter(|n| !n.admin_addr.is_empty()).map(|n| n.admin_addr.clone()));
        }
        nodes.push((addr, s));
    }
    // Two addresses of one node (as given, and as it advertises itself).
    nodes.sort_by(|a, b| a.1.node.cmp(&b.1.node).then(a.0.cmp(&b.0)));
    nodes.dedup_by(|a, b| a.1.node == b.1.node && a.1.node != "single");
    if json {
        let all: Vec<&NodeStatus> = nodes.iter().map(|(_, s)| s).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return done(&failed);
    }
    for (addr, s) in &nodes {
        println!("node {} (admin {addr}, version {})", s.node, s.version);
        println!("  events loaded {}   queued requests {} (each queue holds {})", s.events_loaded, s.queue_depth, s.queue_capacity);
        for e in s.hot_events.iter().filter(|e| e.queue_depth > 0) {
            println!("    event {}  queue {}  epoch {}", e.event_id, e.queue_depth, e.epoch);
        }
        println!("  sagas running {}   orders parked awaiting payment {}", s.sagas_active, s.orders_parked);
        println!("  pdf renders waiting {}", s.pdf_queue);
        println!("  email backlog {} (oldest {} ms)", s.email_backlog, s.email_oldest_ms);
        let o = &s.outbox;
        println!(
            "  outbox backlog {} rows, lag {} ms{}; this node {} to {} (published {}, failed {})",
            o.backlog_rows,
            o.lag_ms,
            if o.behind { " (BEHIND)" } else { "" },
            if o.relaying { "relays" } else { "does not relay" },
            o.destination,
            o.published_total,
            o.failed_total
        );
        if let Some(e) = &o.last_error {
            println!("  outbox last error: {e}");
        }
        if let Some(c) = &s.cluster {
            println!(
                "  leases held {}   forwarded out {} in {}   nodes seen {}",
                c.leases_held,
                c.forwarded_out,
                c.forwarded_in,
                c.nodes.len()
            );
        }
    }
    done(&failed)
}

/// Fails, naming them, when some nodes did not answer.
fn done(failed: &[String]) -> anyhow::Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    anyhow::bail!("{} node(s) did not answer: {}", failed.len(), failed.join("; "))
}
