//! The readers scenario: the stadium onsale with a crowd watching it. `N`
//! open storefront pages each hold the event's live seat feed (server-sent
//! events, `GET /api/events/{id}/seats/live`), and `M` readers fetch the
//! compact seat status (`GET …/seats/status`) every `reader_interval_ms`,
//! as a page whose feed broke would. Measured: the server's resident memory
//! per open feed, the bytes each feed and each reader receives per minute,
//! and (in `main`) the onsale's holds/s and p99 with and without the crowd
//! in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::rss_kib;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// What the crowd cost, measured around one onsale.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Crowd {
    pub streams: usize,
    pub readers: usize,
    /// The server's resident memory before the feeds opened and once every
    /// feed had its snapshot, and the difference per feed.
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_per_stream_kib: f64,
    /// Bytes received during the onsale, per feed and per reader, per minute.
    pub stream_bytes_per_min: f64,
    pub reader_bytes_per_min: f64,
    /// Readers' fetches answered 200 during the onsale.
    pub reader_fetches: u64,
}

/// The crowd while it watches.
pub struct Watching {
    crowd: Crowd,
    stop: Arc<AtomicBool>,
    stream_bytes: Arc<AtomicU64>,
    reader_bytes: Arc<AtomicU64>,
    fetches: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    since: Instant,
}

fn request(path: &str, key: &str, close: bool) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: usher\r\nAuthorization: Bearer {key}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "Accept: text/event-stream\r\n" }
    )
}

/// Opens `streams` live feeds of `event` and waits until each has its
/// snapshot, measuring the server's memory around it; then starts `readers`.
pub async fn watch(
    http: &str,
    key: &str,
    event: &str,
    pid: u32,
    streams: usize,
    readers: usize,
    every: Duration,
) -> anyhow::Result<Watching> {
    let stop = Arc::new(AtomicBool::new(false));
    let (stream_bytes, reader_bytes, fetches) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ready = Arc::new(AtomicUsize::new(0));
    let rss_before_kib = rss_kib(pid)?;
    let mut tasks = Vec::with_capacity(streams + readers);
    let live = request(&format!("/api/events/{event}/seats/live"), key, false);
    for _ in 0..streams {
        let mut s = TcpStream::connect(http).await.context("opening a feed (is the file-descriptor limit high enough?)")?;
        s.write_all(live.as_bytes()).await?;
        let (stop, bytes, ready) = (stop.clone(), stream_bytes.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut seen = false;
            let mut head = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if seen {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(15).any(|w| w == b"event: snapshot") {
                        seen = true;
                        head = Vec::new();
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let waited = tokio::time::timeout(Duration::from_secs(300), async {
        while ready.load(Ordering::Relaxed) < streams {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if waited.is_err() {
        bail!("only {} of {streams} feeds got their snapshot", ready.load(Ordering::Relaxed));
    }
    // Let the allocator settle before reading the memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open_kib = rss_kib(pid)?;
    let status = request(&format!("/api/events/{event}/seats/status"), key, true);
    for r in 0..readers {
        let (stop, bytes, fetches, http, status) = (stop.clone(), reader_bytes.clone(), fetches.clone(), http.to_owned(), status.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the readers over the interval, as pages opened at different times are.
            tokio::time::sleep(every.mul_f64(r as f64 / readers.max(1) as f64)).await;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect(&http).await
                    && s.write_all(status.as_bytes()).await.is_ok()
                {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_ok() {
                        bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
                        if got.starts_with(b"HTTP/1.1 200") {
                            fetches.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    // What the snapshots cost is memory, not traffic during the onsale.
    stream_bytes.store(0, Ordering::Relaxed);
    let crowd = Crowd {
        streams,
        readers,
        rss_before_kib,
        rss_open_kib,
        rss_per_stream_kib: rss_open_kib.saturating_sub(rss_before_kib) as f64 / streams.max(1) as f64,
        ..Crowd::default()
    };
    Ok(Watching { crowd, stop, stream_bytes, reader_bytes, fetches, tasks, since: Instant::now() })
}

impl Watching {
    /// Stops the crowd; what it received per feed and per reader per minute.
    pub async fn finish(self) -> Crowd {
        let minutes = self.since.elapsed().as_secs_f64() / 60.0;
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let per = |total: u64, n: usize| if n == 0 || minutes == 0.0 { 0.0 } else { total as f64 / n as f64 / minutes };
        Crowd {
            stream_bytes_per_min: per(self.stream_bytes.load(Ordering::Relaxed), self.crowd.streams),
            reader_bytes_per_min: per(self.reader_bytes.load(Ordering::Relaxed), self.crowd.readers),
            reader_fetches: self.fetches.load(Ordering::Relaxed),
            ..self.crowd
        }
    }
}
