//! Connections at both doors: one accept loop with a cap on open
//! connections and a back-off when accepting fails, then each connection
//! served by hyper with the timeouts of `limits.rs` (operators set the
//! `_DEFAULT`s in `Config`). Nothing here knows about requests' meaning.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::limits::{
    ACCEPT_BACKOFF_MS_MAX, ACCEPT_BACKOFF_MS_MIN, CONN_DRAIN_MS_MAX, GRPC_CLOSE_GRACE_MS, GRPC_KEEPALIVE_INTERVAL_MS,
    GRPC_KEEPALIVE_TIMEOUT_MS, GRPC_STREAMS_PER_CONNECTION_MAX, TCP_KEEPALIVE_MS,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The caps and timeouts an operator sets.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub http_connections_max: usize,
    /// Also the HTTP idle timeout (see `HTTP_HEADER_READ_MS_DEFAULT`).
    pub http_header_read: Duration,
    pub http_body: Duration,
    pub grpc_connections_max: usize,
    pub grpc_idle: Duration,
}

/// A handle on the connection a request came on, in the request's
/// extensions: `cut` drops the connection at once, with whatever it still
/// had to send. For a watcher that stopped reading: what waits for it is
/// held by the connection (HTTP/2 and socket buffers), not by the handler,
/// so only dropping the connection frees it.
#[derive(Clone, Default)]
pub struct ConnCut(Arc<tokio::sync::Notify>);

impl ConnCut {
    pub fn cut(&self) {
        self.0.notify_one();
    }
}

/// Serves the storefront and JSON API until `stopping` turns true, then
/// lets every open connection finish its request.
pub async fn serve_http(listener: TcpListener, router: axum::Router, limits: ConnLimits, stopping: watch::Receiver<bool>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.http_header_read);
    let body_time = limits.http_body;
    accept_loop(listener, limits.http_connections_max, "http", stopping.clone(), |stream, peer, permit| {
        let router = router.clone();
        let cut = ConnCut::default();
        let handle = cut.clone();
        let takeover = SocketTakeover::default();
        let take = takeover.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(axum::extract::ConnectInfo(peer));
            parts.extensions.insert(handle.clone());
            parts.extensions.insert(take.clone());
            let body = axum::body::Body::new(Deadline { inner: body, at: Box::pin(tokio::time::sleep(body_time)) });
            router.clone().oneshot(http::Request::from_parts(parts, body))
        });
        let conn = builder.serve_connection(TokioIo::new(HttpIo { io: Some((stream, permit)), takeover }), svc);
        tokio::spawn(run_conn(conn, None, stopping.clone(), std::future::pending(), None, cut));
    })
    .await;
}

/// A request's way to take its connection's socket from hyper once its
/// response head is sent, in the request's extensions (HTTP side only).
/// For a live feed: hyper keeps, per connection, read and write buffers of
/// 8 KiB and a task that each frame wakes; a taken socket is written by its
/// event's hub directly (`streams`), for well under a KiB of the node's
/// memory and no wake-up per frame.
///
/// The answer's body must be `TakeoverBody`: its first poll (after hyper
/// has put the head in its write buffer) arms the takeover, and once hyper
/// has flushed that buffer the socket, with its place under the connection
/// cap, goes to the receiver from `request`, and the hyper connection is
/// dropped. Bytes the client sent after the request are lost with hyper's
/// read buffer (a feed's client sends none).
#[derive(Clone, Default)]
pub struct SocketTakeover(Arc<Takeover>);

#[derive(Default)]
struct Takeover {
    armed: std::sync::atomic::AtomicBool,
    to: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<TakenSocket>>>,
}

/// A socket taken from hyper, holding its connection's place under
/// `http_connections_max` until dropped.
pub struct TakenSocket {
    pub socket: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// A taken socket's place under the connection cap.
pub struct ConnPlace {
    _permit: OwnedSemaphorePermit,
}

impl TakenSocket {
    pub fn into_parts(self) -> (TcpStream, ConnPlace) {
        (self.socket, ConnPlace { _permit: self._permit })
    }
}

impl SocketTakeover {
    /// Asks for the socket; it comes once the answer's head is out.
    pub fn request(&self) -> tokio::sync::oneshot::Receiver<TakenSocket> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.0.to.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }
}

/// The body of an answer whose socket is taken (see `SocketTakeover`):
/// never yields a frame, so hyper writes the head and nothing else.
pub struct TakeoverBody(SocketTakeover);

impl TakeoverBody {
    pub fn new(takeover: SocketTakeover) -> TakeoverBody {
        TakeoverBody(takeover)
    }
}

impl Body for TakeoverBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Hyper polls the body after putting the head in its buffer and
        // flushes that buffer next; the flush hands the socket over.
        self.0.0.armed.store(true, std::sync::atomic::Ordering::Release);
        Poll::Pending
    }
}

/// An HTTP connection's socket as hyper sees it, until a request takes it.
struct HttpIo {
    io: Option<(TcpStream, OwnedSemaphorePermit)>,
    takeover: SocketTakeover,
}

impl HttpIo {
    fn gone() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the socket was taken by a live feed")
    }
}

impl tokio::io::AsyncRead for HttpIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Some((io, _)) => Pin::new(io).poll_read(cx, buf),
            // Taken: the connection is being dropped (`ConnCut`).
            None => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for HttpIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Some((io, _)) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(HttpIo::gone())),
        }
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Some((io, _)) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(HttpIo::gone())),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some((io, _)) = &mut self.io else { return Poll::Ready(Err(HttpIo::gone())) };
        std::task::ready!(Pin::new(io).poll_flush(cx))?;
        // Hyper's buffer is empty when it flushes the socket: the head is out.
        if self.takeover.0.armed.load(std::sync::atomic::Ordering::Acquire) {
            let to = self.takeover.0.to.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let (Some(to), Some((socket, permit))) = (to, self.io.take()) {
                // A receiver that gave up drops the socket, closing it.
                let _ = to.send(TakenSocket { socket, _permit: permit });
            }
        }
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Some((io, _)) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Serves gRPC (HTTP/2 only) until `stopping` turns true, then lets every
/// open call finish. A connection with no call in flight for `grpc_idle`
/// gets GOAWAY.
pub async fn serve_grpc<S>(listener: TcpListener, grpc: S, limits: ConnLimits, stopping: watch::Receiver<bool>)
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(ms(GRPC_KEEPALIVE_INTERVAL_MS)))
        .keep_alive_timeout(ms(GRPC_KEEPALIVE_TIMEOUT_MS))
        .max_concurrent_streams(GRPC_STREAMS_PER_CONNECTION_MAX);
    let idle = limits.grpc_idle;
    accept_loop(listener, limits.grpc_connections_max, "grpc", stopping.clone(), |stream, peer, permit| {
        let info = tonic::transport::server::TcpConnectInfo { local_addr: stream.local_addr().ok(), remote_addr: Some(peer) };
        let (busy, calls) = watch::channel(0usize);
        let busy = Arc::new(busy);
        let grpc = grpc.clone();
        let cut = ConnCut::default();
        let handle = cut.clone();
        let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            req.extensions_mut().insert(handle.clone());
            let call = InFlight::enter(&busy);
            let deadline = grpc_deadline(req.headers());
            let answer = grpc.clone().oneshot(req.map(tonic::body::Body::new));
            // The call is in flight until its answer's last frame is sent.
            async move {
                let answer = match deadline {
                    None => answer.await,
                    Some(d) => match tokio::time::timeout(d, answer).await {
                        Ok(a) => a,
                        Err(_) => Ok(tonic::Status::deadline_exceeded("the call's deadline passed before it was answered").into_http()),
                    },
                };
                answer.map(|res| res.map(|inner| tonic::body::Body::new(Held { inner, _call: call })))
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(run_conn(conn, Some(permit), stopping.clone(), idle_for(calls, idle), Some(ms(GRPC_CLOSE_GRACE_MS)), cut));
    })
    .await;
}

/// A call's deadline from its `grpc-timeout` header, as gRPC over HTTP/2
/// defines it (PROTOCOL-HTTP2.md: at most 8 ASCII digits, then a unit, `H`
/// `M` `S` `m` `u` or `n`); none when absent or malformed. The server stops
/// waiting for the answer when it passes (DEADLINE_EXCEEDED), as tonic's own
/// server does, so an abandoned call does not go on holding its stream.
pub fn grpc_deadline(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3_600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Drives one connection, holding its place under the cap (gRPC: `permit`;
/// HTTP: its socket holds it, to keep it when a feed takes it). When the node
/// stops, or `idle` resolves, it is closed gracefully: calls in flight
/// finish; after an idle close it gets at most `grace` to do so.
async fn run_conn<C: GracefulConnection>(
    conn: C,
    _permit: Option<OwnedSemaphorePermit>,
    mut stopping: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
    grace: Option<Duration>,
    cut: ConnCut,
) {
    let mut conn = std::pin::pin!(conn);
    let stop = tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|s| *s) => true,
        () = idle => false,
        // Dropped at once, unsent data and all.
        () = cut.0.notified() => return,
    };
    conn.as_mut().graceful_shutdown();
    // Bounded either way: a client that never reads its answer would
    // otherwise hold the connection, and the node's shutdown, for ever.
    let grace = match grace {
        Some(grace) if !stop => grace,
        _ => ms(CONN_DRAIN_MS_MAX),
    };
    tokio::select! {
        _ = tokio::time::timeout(grace, conn) => {}
        () = cut.0.notified() => {}
    }
}

/// Accepts until `stopping` turns true and hands each connection to `serve`
/// with a permit held for its life; past `cap` open connections a new one
/// is closed at once, while the open ones carry on. When accepting fails
/// (out of file descriptors) it waits, doubling from
/// `ACCEPT_BACKOFF_MS_MIN` to `_MAX`, rather than retrying at once. On stop
/// it returns once every connection has closed.
async fn accept_loop(
    listener: TcpListener,
    cap: usize,
    door: &'static str,
    mut stopping: watch::Receiver<bool>,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let slots = Arc::new(Semaphore::new(cap));
    let keepalive = socket2::TcpKeepalive::new().with_time(ms(TCP_KEEPALIVE_MS));
    let mut backoff = ms(ACCEPT_BACKOFF_MS_MIN);
    loop {
        let accepted = tokio::select! {
            _ = stopping.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ms(ACCEPT_BACKOFF_MS_MIN);
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!(door, %peer, cap, "connection closed: at the connection cap");
                    metrics::counter!(usher_actors::metrics::names::CONNECTIONS_REFUSED, "door" => door).increment(1);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                serve(stream, peer, permit);
            }
            // The peer gave up before we took its connection: nothing to wait for.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) => {}
            Err(e) => {
                if backoff == ms(ACCEPT_BACKOFF_MS_MIN) {
                    warn!(door, error = %e, "accepting a connection failed; retrying with back-off");
                }
                tokio::select! {
                    _ = stopping.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ms(ACCEPT_BACKOFF_MS_MAX));
            }
        }
    }
    drop(listener);
    // Every connection holds a permit until it closes.
    let _ = slots.acquire_many(u32::try_from(cap).unwrap_or(u32::MAX)).await;
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One call in flight on a gRPC connection (counted in its watch).
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn enter(calls: &Arc<watch::Sender<usize>>) -> InFlight {
        calls.send_modify(|n| *n += 1);
        InFlight(calls.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Resolves once no call has been in flight for `idle`.
async fn idle_for(mut calls: watch::Receiver<usize>, idle: Duration) {
    loop {
        if calls.wait_for(|n| *n == 0).await.is_err() {
            return;
        }
        if tokio::time::timeout(idle, calls.wait_for(|n| *n > 0)).await.is_err() {
            return;
        }
    }
}

/// A response body that keeps its call counted while it is sent.
struct Held<B> {
    inner: B,
    _call: InFlight,
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once its deadline passes before its end: a
/// client that sends slowly is cut off.
struct Deadline<B> {
    inner: B,
    at: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.at.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("the request body took too long".into()))),
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_as_the_protocol_writes_them() {
        let deadline = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_deadline(&h)
        };
        assert_eq!(deadline("2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(deadline("3M"), Some(Duration::from_secs(180)));
        assert_eq!(deadline("10S"), Some(Duration::from_secs(10)));
        assert_eq!(deadline("250m"), Some(Duration::from_millis(250)));
        assert_eq!(deadline("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(deadline("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "10s", "1.5S", "-1S", "10"] {
            assert_eq!(deadline(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_deadline(&http::HeaderMap::new()), None);
    }
}
