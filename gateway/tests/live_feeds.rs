//! Live seat feeds: the storefront's server-sent events carry the same
//! snapshot-then-changes as `WatchSeats`, in a compact snapshot; feeds past
//! the per-client cap are refused (429 / RESOURCE_EXHAUSTED) while the open
//! ones keep working, and a closed feed gives its slot back.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use usher_proto::v1::catalog_service_client::CatalogServiceClient;
use usher_proto::v1::inventory_service_client::InventoryServiceClient;

/// An open server-sent-event feed, read as raw HTTP/1.1.
struct Feed {
    stream: TcpStream,
    buf: String,
}

impl Feed {
    /// Opens the event's live feed; returns the status line's code and the feed.
    async fn open(app: &TestApp, event: &str) -> (u16, Feed) {
        let mut stream = TcpStream::connect(app.http).await.unwrap();
        let req = format!("GET /api/events/{event}/seats/live HTTP/1.1\r\nHost: usher\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut feed = Feed { stream, buf: String::new() };
        feed.fill_until("\r\n\r\n").await;
        let code = feed.buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, feed)
    }

    async fn fill_until(&mut self, what: &str) {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut chunk = [0u8; 4096];
            while !self.buf.contains(what) {
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the feed ended early: {}", self.buf);
                self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what:?} on the feed: {}", self.buf));
    }

    /// The data of the next event named `name` (chunked framing aside: the
    /// JSON is on one `data:` line).
    async fn next(&mut self, name: &str) -> serde_json::Value {
        let tag = format!("event: {name}\ndata: ");
        self.fill_until(&tag).await;
        let at = self.buf.find(&tag).unwrap() + tag.len();
        self.fill_until_from(at, "\n").await;
        let end = at + self.buf[at..].find('\n').unwrap();
        let data = serde_json::from_str(&self.buf[at..end]).unwrap();
        self.buf.drain(..end);
        data
    }

    async fn fill_until_from(&mut self, from: usize, what: &str) {
        while !self.buf[from..].contains(what) {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the feed ended early");
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
}

/// A 200,000-seat event (10 sections of 100 rows of 200 seats): its
/// snapshot is far larger than a socket's or an HTTP/2 window's buffer.
async fn stadium_event(app: &TestApp) -> String {
    let mut cat = app.catalog().await;
    let venue = create_venue(&mut cat, 10, 100, 200).await;
    cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner().event_id
}

/// Requests `event`'s live feed over a socket with a 4 KiB receive buffer,
/// and reads nothing.
async fn open_with_small_buffer(app: &TestApp, event: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.http).await.unwrap();
    let req = format!("GET /api/events/{event}/seats/live HTTP/1.1\r\nHost: usher\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_sends_a_compact_snapshot_then_each_change() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let event = create_event(&app, 1, 2, 5).await;
    let (code, mut feed) = Feed::open(&app, &event).await;
    assert_eq!(code, 200);
    assert!(feed.buf.to_lowercase().contains("content-type: text/event-stream"), "{}", feed.buf);
    let snap = feed.next("snapshot").await;
    assert_eq!(snap["status"], "1".repeat(10), "one character a seat, all available");
    assert_eq!(snap["counts"]["available"], 10);
    let mut inv = InventoryServiceClient::new(app.channel().await);
    inv.hold_seats(hold_req(&event, "ann", &["A-1-2", "A-1-3"])).await.unwrap();
    let changes = feed.next("changes").await;
    // A-1-2 and A-1-3 are seats 1 and 2: gaps 1 and 1, status 2 (held).
    assert_eq!(changes["seats"], serde_json::json!([1, 2, 1, 2]));
    assert_eq!((changes["counts"]["available"].as_u64(), changes["counts"]["held"].as_u64()), (Some(8), Some(2)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_past_the_per_client_cap_are_refused_and_a_closed_one_gives_its_slot_back() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    cfg.seat_streams_per_client_max = 2;
    let app = TestApp::spawn_with(db, cfg).await;
    let event = create_event(&app, 1, 1, 4).await;
    let (a, mut first) = Feed::open(&app, &event).await;
    let (b, _second) = Feed::open(&app, &event).await;
    assert_eq!((a, b), (200, 200));
    first.next("snapshot").await;
    let (refused, mut third) = Feed::open(&app, &event).await;
    assert_eq!(refused, 429, "{}", third.buf);
    third.fill_until("TOO_MANY_STREAMS").await;
    assert!(third.buf.contains("this client already watches 2 seat maps"), "{}", third.buf);
    // gRPC watchers from the same address share the cap.
    let mut cat = CatalogServiceClient::new(app.channel_as("").await);
    let e = cat.watch_seats(usher_proto::v1::WatchSeatsRequest { event_id: event.clone(), compact: false }).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::ResourceExhausted, "TOO_MANY_STREAMS"));
    // The open feeds keep working, and closing one frees its slot.
    let mut inv = InventoryServiceClient::new(app.channel().await);
    inv.hold_seats(hold_req(&event, "bob", &["A-1-1"])).await.unwrap();
    first.next("changes").await;
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        let (code, feed) = Feed::open(&app, &event).await;
        if code == 200 {
            reopened = Some(feed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = reopened.expect("a closed feed's slot comes back").next("snapshot").await;
    assert_eq!(snap["status"], "2111");
    app.stop().await;
}

/// The seat map in two parts: the layout (rows; tagged per venue, 304 when
/// the client has it) and a status character a seat. A 200,000-seat event's
/// layout and statuses fit a default gRPC client's 4 MiB message limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200k_seat_map_comes_as_a_small_layout_and_a_byte_a_seat() {
    use usher_proto::v1 as pb;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cat = app.catalog().await;
    // 10 sections of 100 rows of 200 seats.
    let venue = create_venue(&mut cat, 10, 100, 200).await;
    let event = cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner().event_id;
    // A default client: 4 MiB per message.
    let mut anyone = CatalogServiceClient::new(app.channel_as("").await);
    let layout = anyone.get_seat_layout(pb::GetSeatLayoutRequest { event_id: event.clone() }).await.unwrap().into_inner();
    assert_eq!((layout.seat_count, layout.rows.len()), (200_000, 1_000));
    let last = layout.rows.last().unwrap();
    assert_eq!((last.section.as_str(), last.row.as_str(), last.first_seat, last.seats, last.first_number), ("J", "100", 199_800, 200, 1));
    let status = anyone.get_seat_status(pb::GetSeatStatusRequest { event_id: event.clone() }).await.unwrap().into_inner();
    assert_eq!(status.status.len(), 200_000);
    assert!(status.status.iter().all(|&b| b == pb::SeatStatus::Available as u8));
    let mut inv = InventoryServiceClient::new(app.channel().await);
    inv.hold_seats(hold_req(&event, "ann", &["J-100-200"])).await.unwrap();
    let status = anyone.get_seat_status(pb::GetSeatStatusRequest { event_id: event.clone() }).await.unwrap().into_inner();
    assert_eq!(status.status[199_999], pb::SeatStatus::Held as u8, "the last seat is the last byte");
    // A compact watch's snapshot is the same byte a seat.
    let mut watch = anyone.watch_seats(pb::WatchSeatsRequest { event_id: event.clone(), compact: true }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(first.snapshot && first.changes.is_empty());
    assert_eq!(first.status, status.status);
    drop(watch);
    eprintln!(
        "200,000 seats over gRPC: layout {} bytes, status {} bytes",
        prost::Message::encoded_len(&layout),
        prost::Message::encoded_len(&status)
    );

    // The same over HTTP: the layout is tagged by venue and revalidates to 304.
    let (code, layout_body) = http(app.http, "GET", &format!("/api/events/{event}/layout"), &[], None).await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&layout_body).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 1_000);
    let tag = format!("\"venue-{}\"", venue.venue_id);
    let (code, body) = http(app.http, "GET", &format!("/api/events/{event}/layout"), &[("If-None-Match", &tag)], None).await;
    assert_eq!((code, body.as_str()), (304, ""));
    let (code, status_body) = http(app.http, "GET", &format!("/api/events/{event}/seats/status"), &[], None).await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&status_body).unwrap();
    let s = json["status"].as_str().unwrap();
    assert_eq!((s.len(), &s[199_999..]), (200_000, "2"));
    eprintln!("200,000 seats over HTTP: layout {} bytes of JSON, status {} bytes of JSON", layout_body.len(), status_body.len());
    app.stop().await;
}

/// A watcher that never reads holds no memory for long: once its feed's
/// queue is full and it has taken nothing for `seat_feed_stall_ms`, the feed
/// is dropped and its slot (and queue) freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_is_dropped() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    cfg.seat_feed_stall_ms = 300;
    let app = TestApp::spawn_with(db, cfg).await;
    // A snapshot far larger than the HTTP/2 window, so the server cannot
    // push it all into the socket while the client reads nothing.
    let event = stadium_event(&app).await;
    let mut watcher = CatalogServiceClient::new(app.channel_as("").await);
    let _never_read = watcher.watch_seats(usher_proto::v1::WatchSeatsRequest { event_id: event.clone(), compact: false }).await.unwrap();
    assert_eq!(app.app_ctx.streams.open(), 1);
    // More frames than the feed queues: a hold per frame.
    let mut inv = InventoryServiceClient::new(app.channel().await);
    let frame = Duration::from_millis(usher_gateway::limits::SEAT_FEED_FRAME_MS + 20);
    for i in 0..(usher_gateway::limits::SEAT_FEED_QUEUED_MAX as u32 + 8) {
        let seat = format!("A-{}-{}", i / 200 + 1, i % 200 + 1);
        inv.hold_seats(hold_req(&event, &format!("c{i}"), &[&seat])).await.unwrap();
        tokio::time::sleep(frame).await;
    }
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        while app.app_ctx.streams.open() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(dropped.is_ok(), "the stalled feed still holds its slot");
    // Its connection was cut: reading now ends in an error, not the changes.
    let mut stream = _never_read.into_inner();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(read.is_err() || matches!(read, Ok(None)), "{read:?}");
    app.stop().await;
}

/// The seat map's new doors answer a stranger as the old one does: a draft
/// event is not found (404 / NOT_FOUND) on every one of them, an unknown
/// event likewise, and a malformed id is a 400 with a JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_finds_no_draft_event_behind_the_new_seat_map_doors() {
    use usher_proto::v1 as pb;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cat = app.catalog().await;
    let venue = create_venue(&mut cat, 1, 1, 4).await;
    let draft =
        cat.create_event(pb::CreateEventRequest { open_sales: false, ..event_request(&venue.venue_id, 0) }).await.unwrap().into_inner();
    let unknown = uuid::Uuid::new_v4().to_string();
    for event in [&draft.event_id, &unknown] {
        for path in ["layout", "seats/status", "seats/live"] {
            let (code, body) = http(app.http, "GET", &format!("/api/events/{event}/{path}"), &[], None).await;
            assert_eq!(code, 404, "{path}: {body}");
            assert!(body.contains("\"reason\":\"EVENT_NOT_FOUND\""), "{path}: {body}");
        }
        let mut stranger = CatalogServiceClient::new(app.channel_as("").await);
        let e = stranger.get_seat_layout(pb::GetSeatLayoutRequest { event_id: event.clone() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = stranger.get_seat_status(pb::GetSeatStatusRequest { event_id: event.clone() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    let (code, body) = http(app.http, "GET", "/api/events/not-an-id/seats/status", &[], None).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"code\":\"INVALID_ARGUMENT\""), "{body}");
    // The owner sees the draft's layout.
    let mine = cat.get_seat_layout(pb::GetSeatLayoutRequest { event_id: draft.event_id.clone() }).await.unwrap().into_inner();
    assert_eq!(mine.seat_count, 4);
    app.stop().await;
}

/// Reads one chunk of HTTP/1.1 chunked coding (RFC 9112 §7.1), strictly:
/// its size line, exactly that many bytes, then CRLF. `None` at the last chunk.
async fn read_chunk(r: &mut tokio::io::BufReader<TcpStream>) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let size = usize::from_str_radix(line.trim_end_matches("\r\n"), 16).unwrap_or_else(|_| panic!("not a chunk size line: {line:?}"));
    let mut data = vec![0u8; size + 2];
    r.read_exact(&mut data).await.unwrap();
    assert_eq!(&data[size..], b"\r\n", "a chunk ends with CRLF");
    if size == 0 {
        return None;
    }
    data.truncate(size);
    Some(String::from_utf8(data).unwrap())
}

/// A page's feed, once its head is out, is written by the event's hub on
/// the socket it took from hyper: the chunks are whole and well framed, one
/// server-sent event each, and when the server stops the page is told so
/// (`error`, SHUTTING_DOWN) and the feed ends with the last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_feed_is_well_framed_chunks_and_ends_cleanly_when_the_server_stops() {
    use tokio::io::AsyncBufReadExt;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let event = create_event(&app, 2, 10, 20).await;
    let mut stream = TcpStream::connect(app.http).await.unwrap();
    let req = format!("GET /api/events/{event}/seats/live HTTP/1.1\r\nHost: usher\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut r = tokio::io::BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(r.read_line(&mut head).await.unwrap() > 0, "{head}");
    }
    let lower = head.to_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{head}");
    assert!(lower.contains("transfer-encoding: chunked") && lower.contains("content-type: text/event-stream"), "{head}");
    let snapshot = read_chunk(&mut r).await.unwrap();
    assert!(snapshot.starts_with("event: snapshot\ndata: ") && snapshot.ends_with("\n\n"), "{snapshot:?}");
    let mut inv = InventoryServiceClient::new(app.channel().await);
    for (i, seat) in ["A-1-1", "A-1-5", "B-10-20"].iter().enumerate() {
        inv.hold_seats(hold_req(&event, &format!("c{i}"), &[seat])).await.unwrap();
        let changes = read_chunk(&mut r).await.unwrap();
        assert!(changes.starts_with("event: changes\ndata: ") && changes.ends_with("\n\n"), "{changes:?}");
        let json: serde_json::Value = serde_json::from_str(changes.trim_start_matches("event: changes\ndata: ").trim_end()).unwrap();
        assert_eq!(json["counts"]["held"], i + 1);
    }
    assert_eq!(app.app_ctx.streams.open(), 1);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(chunk) = read_chunk(&mut r).await {
            seen.push(chunk);
        }
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        (seen, rest)
    });
    tokio::time::timeout(Duration::from_secs(30), app.stop()).await.expect("the server stops with a feed open");
    let (seen, rest) = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    let last = seen.last().expect("an error event before the end");
    assert!(last.starts_with("event: error\ndata: ") && last.contains("SHUTTING_DOWN"), "{seen:?}");
    assert!(rest.is_empty(), "nothing after the last chunk: {rest:?}");
}

/// A page that never reads its feed holds nothing for long: its socket
/// fills, the hub skips it, and after `seat_feed_stall_ms` of a full socket
/// the feed is closed and its slot given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_never_reads_is_dropped() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    cfg.seat_feed_stall_ms = 300;
    let app = TestApp::spawn_with(db, cfg).await;
    // A 200,000-character snapshot against a 4 KiB receive buffer.
    let event = stadium_event(&app).await;
    let mut stream = open_with_small_buffer(&app, &event).await;
    let opened = tokio::time::timeout(Duration::from_secs(10), async {
        while app.app_ctx.streams.open() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(opened.is_ok(), "the feed opens");
    let mut inv = InventoryServiceClient::new(app.channel().await);
    let frame = Duration::from_millis(usher_gateway::limits::SEAT_FEED_FRAME_MS + 20);
    let dropped = tokio::time::timeout(Duration::from_secs(20), async {
        let mut i = 0;
        while app.app_ctx.streams.open() > 0 {
            let seat = format!("A-{}-{}", i / 200 + 1, i % 200 + 1);
            inv.hold_seats(hold_req(&event, &format!("c{i}"), &[&seat])).await.unwrap();
            tokio::time::sleep(frame).await;
            i += 1;
        }
    })
    .await;
    assert!(dropped.is_ok(), "the stalled page still holds its slot");
    // Its socket was closed: reading ends (after what the kernel held).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled page's connection is closed");
    app.stop().await;
}

/// A page that reads slowly still gets a snapshot larger than its socket's
/// buffer on an event where nothing happens: the hub writes the rest as the
/// socket takes it, without waiting for a frame or a keep-alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_reaches_a_slow_page_on_a_quiet_event() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let event = stadium_event(&app).await;
    let mut feed = Feed { stream: open_with_small_buffer(&app, &event).await, buf: String::new() };
    // Its socket fills while the page reads nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let snap = feed.next("snapshot").await;
    assert_eq!(snap["status"].as_str().unwrap().len(), 200_000);
    assert!(started.elapsed() < Duration::from_secs(usher_gateway::limits::SEAT_FEED_KEEPALIVE_S), "{:?}", started.elapsed());
    app.stop().await;
}
