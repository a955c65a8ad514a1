//! Time and size limits on every connection: slow-header, slow-body and
//! idle clients are cut off after the configured time; past the connection
//! cap new connections are closed while open ones keep working; out of file
//! descriptors the server does not spin, and answers again once sockets
//! close. Timeouts are configured small; no test asserts a speed, only that
//! a cut-off comes no earlier than configured (and before a generous cap).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usher_gateway::config::Config;
use usher_proto::v1 as pb;

/// Far longer than any configured time below: a test that waits this long
/// has found a connection that is never cut off.
const CAP: Duration = Duration::from_secs(15);
const SHORT_MS: u64 = 500;

async fn app_with(set: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    set(&mut cfg);
    TestApp::spawn_with(db, cfg).await
}

/// Reads until the server closes the connection (or resets it); the bytes.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(CAP, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open for {CAP:?}");
    got
}

/// Sends one keep-alive `GET /healthz` and reads its answer.
async fn healthz(s: &mut TcpStream) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: usher\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(CAP, s.read(&mut buf)).await.expect("an answer").unwrap();
        assert!(n > 0, "closed before answering: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = app_with(|c| c.http_header_read_ms = SHORT_MS).await;
    let mut s = TcpStream::connect(app.http).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: usher\r\n").await.unwrap();
    let got = until_closed(&mut s).await;
    assert!(started.elapsed() >= Duration::from_millis(SHORT_MS), "cut off before the configured time");
    assert!(!got.starts_with(b"HTTP/1.1 200"), "a request without its end was served");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = app_with(|c| c.http_header_read_ms = SHORT_MS).await;
    let mut s = TcpStream::connect(app.http).await.unwrap();
    healthz(&mut s).await;
    let idle_from = Instant::now();
    assert!(until_closed(&mut s).await.is_empty());
    assert!(idle_from.elapsed() >= Duration::from_millis(SHORT_MS));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_is_cut_off() {
    let app = app_with(|c| c.http_body_ms = SHORT_MS).await;
    let s = TcpStream::connect(app.http).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    const BODY_BYTES: usize = 100;
    let head =
        format!("POST /api/auth/login HTTP/1.1\r\nHost: usher\r\nContent-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n\r\n");
    wr.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let dribble = tokio::spawn({
        let sent = sent.clone();
        async move {
            // 100 bytes at 10 a second: 10 s, far past the deadline.
            for _ in 0..BODY_BYTES {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if wr.write_all(b" ").await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(CAP, rd.read_to_end(&mut answer)).await.expect("the slow body is cut off");
    let at = sent.load(Ordering::SeqCst);
    assert!(at < BODY_BYTES, "the whole slow body was taken");
    assert!(started.elapsed() >= Duration::from_millis(SHORT_MS), "cut off before the configured time");
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.starts_with("HTTP/1.1 2"), "{text}");
    dribble.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_while_open_ones_keep_working() {
    let app = app_with(|c| {
        c.http_connections_max = 2;
        c.grpc_connections_max = 1;
    })
    .await;
    // HTTP: two open connections, served.
    let mut a = TcpStream::connect(app.http).await.unwrap();
    let mut b = TcpStream::connect(app.http).await.unwrap();
    healthz(&mut a).await;
    healthz(&mut b).await;
    // The third is closed without an answer.
    let mut c = TcpStream::connect(app.http).await.unwrap();
    let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: usher\r\n\r\n").await;
    assert!(until_closed(&mut c).await.is_empty(), "served past the cap");
    // The open ones carry on.
    healthz(&mut a).await;
    healthz(&mut b).await;
    // A closed one makes room.
    drop(a);
    let mut served = false;
    for _ in 0..50 {
        let mut d = TcpStream::connect(app.http).await.unwrap();
        if d.write_all(b"GET /healthz HTTP/1.1\r\nHost: usher\r\nConnection: close\r\n\r\n").await.is_ok()
            && until_closed(&mut d).await.starts_with(b"HTTP/1.1 200")
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no room after a connection closed");

    // gRPC: one open channel; a second connection is closed at once.
    let mut catalog = app.catalog().await;
    catalog.list_events(pb::ListEventsRequest::default()).await.unwrap();
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    assert!(until_closed(&mut extra).await.is_empty(), "a gRPC connection past the cap was served");
    catalog.list_events(pb::ListEventsRequest::default()).await.expect("the open gRPC connection keeps working");
    app.stop().await;
}

/// HTTP/2 frames' types in `bytes` (each: 3 bytes length, 1 type, 1 flags, 4 stream).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_without_calls_is_closed() {
    const GOAWAY: u8 = 7;
    let app = app_with(|c| c.grpc_idle_ms = SHORT_MS).await;
    // An HTTP/2 client that says hello and then nothing.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let started = Instant::now();
    let got = until_closed(&mut s).await;
    assert!(started.elapsed() >= Duration::from_millis(SHORT_MS));
    assert!(frame_types(&got).contains(&GOAWAY), "closed without GOAWAY: {:?}", frame_types(&got));
    // One that never even says hello.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    until_closed(&mut silent).await;
    app.stop().await;
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_waits_and_recovers() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.arg("serve")
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--no-demo-data"])
        .args(["--database-url", &db.url])
        .arg("--data-dir")
        .arg(&db.data_dir)
        .env("USHER_LOG", "error")
        // Held connections stay open through the measurement.
        .env("USHER_HTTP_HEADER_READ_MS", "60000")
        .env("USHER_GRPC_IDLE_MS", "60000")
        .stderr(std::process::Stdio::null());
    let (mut child, rest) = spawn_until_line(cmd, "usher: storefront on http://", Duration::from_secs(30)).await;
    let http: SocketAddr = rest.split('/').next().unwrap().parse().unwrap();
    let pid = child.id().unwrap();
    let grpc = grpc_addr_of(pid, http);

    // A few descriptors above what it holds now.
    let limit = open_fds(pid) + 4;
    let out = std::process::Command::new("prlimit").arg(format!("--pid={pid}")).arg(format!("--nofile={limit}:{limit}")).output().unwrap();
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
    let mut held = Vec::new();
    for addr in [http, grpc] {
        for _ in 0..20 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    // Accepting now fails: the server is at its limit with connections waiting.
    let deadline = Instant::now() + CAP;
    while open_fds(pid) < limit {
        assert!(Instant::now() < deadline, "the server never reached its descriptor limit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ticks_per_s = 100; // USER_HZ on Linux
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let used = cpu_ticks(pid) - before;
    let share = used as f64 / (ticks_per_s as f64 * window.as_secs_f64());
    assert!(share < 0.3, "the idle server used {:.0}% of a core while out of descriptors", share * 100.0);

    // Sockets closed: it answers again on both doors.
    drop(held);
    let answered = tokio::time::timeout(CAP, async {
        loop {
            if let Ok(Ok((200, _))) = tokio::time::timeout(Duration::from_secs(2), http_get(http)).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(answered.is_ok(), "HTTP did not answer again");
    let channel = tokio::time::timeout(CAP, connect(grpc)).await.expect("gRPC connects again");
    let answer = pb::catalog_service_client::CatalogServiceClient::new(channel).list_events(pb::ListEventsRequest::default()).await;
    if let Err(status) = &answer {
        assert_ne!(status.code(), tonic::Code::Unavailable, "gRPC did not answer again: {status:?}");
    }
    child.kill().await.unwrap();
}

/// `GET /healthz` on a fresh connection, or the I/O error.
async fn http_get(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: usher\r\nConnection: close\r\n\r\n").await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

/// The binary prints its gRPC address before the HTTP one, which
/// `spawn_until_line` has passed; find the other listening socket it owns.
fn grpc_addr_of(pid: u32, http: SocketAddr) -> SocketAddr {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // state 0A is LISTEN; local address is hex IP:port.
        if f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
            let port = u16::from_str_radix(f[1].split(':').nth(1).unwrap(), 16).unwrap();
            if port != http.port() {
                return SocketAddr::new(http.ip(), port);
            }
        }
    }
    panic!("no gRPC listener found for process {pid}");
}
