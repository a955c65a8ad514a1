//! What an operator sees: the admin listener's `/metrics` page passes
//! `promtool check metrics` (Prometheus' own parser and linter), and one
//! purchase moves the series it should by exactly what it should; `/status`
//! and `usher status` show the node's queues; every metric on the page is in
//! the table and in docs/metrics.md.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use usher_proto::v1::{
    inventory_service_client::InventoryServiceClient, ordering_service_client::OrderingServiceClient,
    payment_service_client::PaymentServiceClient,
};

/// The page, as text (`common::http` keeps only a JSON body).
async fn page(app: &TestApp) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.admin).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", app.admin).as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    body.to_owned()
}

/// Every sample on a page in the text format: `name{labels}` → value.
/// (The format's grammar is promtool's to check; this only reads values.)
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {l}"));
            (series.to_owned(), value.parse::<f64>().unwrap_or_else(|e| panic!("{l}: {e}")))
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on the page: its parser and its lint rules
/// (names, units, `_total`, help text).
fn promtool(page: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- page ---\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scrapes until `series` reaches `at_least` (background work: email, relay).
async fn until(app: &TestApp, series: &str, at_least: f64, within: Duration) -> HashMap<String, f64> {
    let t = Instant::now();
    loop {
        let s = samples(&page(app).await);
        if value(&s, series) >= at_least {
            return s;
        }
        assert!(t.elapsed() < within, "{series} is {} after {within:?}, expected at least {at_least}", value(&s, series));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_passes_promtool_and_a_purchase_moves_each_series_by_what_it_did() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let event = create_event(&app, 1, 2, 10).await;
    let ch = app.channel().await;
    let mut inv = InventoryServiceClient::new(ch.clone());
    let mut ord = OrderingServiceClient::new(ch.clone());
    let mut pay = PaymentServiceClient::new(ch);
    // Let the event's creation settle (its outbox rows, its email-free saga-less start).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_page = page(&app).await;
    promtool(&before_page);
    let before = samples(&before_page);

    // One purchase of two seats, one hold refused for a taken seat, one
    // HTTP read, one call nobody may make.
    let h = inv.hold_seats(hold_req(&event, "alice", &["A-1-1", "A-1-2"])).await.unwrap().into_inner();
    let taken = inv.hold_seats(hold_req(&event, "bob", &["A-1-2"])).await.unwrap_err();
    assert_eq!(reason(&taken), "SEATS_TAKEN");
    let o = ord.create_order(order_req("alice", "alice@example.com", vec![h.hold_id.clone()])).await.unwrap().into_inner();
    pay.pay_order(pay_req(&o.order_id, "4242 4242 4242 4242", 15_000)).await.unwrap();
    let (status, _) = http(app.http, "GET", &format!("/api/events/{event}"), &[app.bearer_ref()], None).await;
    assert_eq!(status, 200);
    let mut anon = InventoryServiceClient::new(app.channel_as("").await);
    anon.hold_seats(hold_req(&event, "eve", &["A-2-1"])).await.unwrap_err();
    // Made-up paths on either door name no series of their own.
    let mut raw = tonic::client::Grpc::new(app.channel().await);
    raw.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<usher_proto::v1::HoldSeatsRequest, usher_proto::v1::Hold>::default();
    let bogus = raw.unary(tonic::Request::new(hold_req(&event, "eve", &["A-2-1"])), "/grpc.made.Up/X".parse().unwrap(), codec).await;
    assert_eq!(bogus.unwrap_err().code(), tonic::Code::PermissionDenied, "a method with no door is refused");
    assert_eq!(http(app.http, "GET", "/wp-admin/x.php", &[], None).await.0, 404);

    let after_page = page(&app).await;
    let after = until(&app, "usher_emails_sent_total", value(&before, "usher_emails_sent_total") + 1.0, Duration::from_secs(60)).await;
    promtool(&after_page);
    promtool(&page(&app).await);

    let moved = |series: &str| value(&after, series) - value(&before, series);
    let hold_seats = "/usher.v1.InventoryService/HoldSeats";
    for (series, by) in [
        (r#"usher_commands_total{command="hold_seats",outcome="accepted"}"#.to_owned(), 1.0),
        (r#"usher_commands_total{command="hold_seats",outcome="rejected"}"#.to_owned(), 1.0),
        (r#"usher_commands_rejected_total{command="hold_seats",reason="seats_taken"}"#.to_owned(), 1.0),
        (r#"usher_commands_total{command="confirm_all",outcome="accepted"}"#.to_owned(), 1.0),
        (format!(r#"usher_grpc_requests_total{{method="{hold_seats}",code="OK"}}"#), 1.0),
        (format!(r#"usher_grpc_requests_total{{method="{hold_seats}",code="FAILED_PRECONDITION"}}"#), 1.0),
        (format!(r#"usher_grpc_requests_total{{method="{hold_seats}",code="UNAUTHENTICATED"}}"#), 1.0),
        (r#"usher_grpc_requests_total{method="/usher.v1.OrderingService/CreateOrder",code="OK"}"#.to_owned(), 1.0),
        (r#"usher_grpc_requests_total{method="/usher.v1.PaymentService/PayOrder",code="OK"}"#.to_owned(), 1.0),
        (r#"usher_refusals_total{code="FAILED_PRECONDITION",reason="SEATS_TAKEN"}"#.to_owned(), 1.0),
        (r#"usher_http_requests_total{route="/api/events/{id}",method="GET",status="200"}"#.to_owned(), 1.0),
        (r#"usher_http_requests_total{route="unmatched",method="GET",status="404"}"#.to_owned(), 1.0),
        (r#"usher_payments_total{outcome="authorized"}"#.to_owned(), 1.0),
        (r#"usher_payments_total{outcome="captured"}"#.to_owned(), 1.0),
        (r#"usher_saga_steps_total{step="await_payment",outcome="done"}"#.to_owned(), 1.0),
        (r#"usher_saga_steps_total{step="authorize",outcome="done"}"#.to_owned(), 1.0),
        (r#"usher_saga_steps_total{step="confirm",outcome="done"}"#.to_owned(), 1.0),
        (r#"usher_saga_steps_total{step="capture",outcome="done"}"#.to_owned(), 1.0),
        (r#"usher_saga_steps_total{step="issue",outcome="done"}"#.to_owned(), 1.0),
        (r#"usher_saga_steps_total{step="render",outcome="done"}"#.to_owned(), 1.0),
        (r#"usher_saga_step_duration_seconds_count{step="render"}"#.to_owned(), 1.0),
        ("usher_pdf_render_duration_seconds_count".to_owned(), 1.0),
        ("usher_pdf_queue_wait_seconds_count".to_owned(), 1.0),
        ("usher_emails_queued_total".to_owned(), 1.0),
        ("usher_emails_sent_total".to_owned(), 1.0),
    ] {
        assert_eq!(moved(&series), by, "{series}: {} before, {} after", value(&before, &series), value(&after, &series));
    }
    // The hold, the refusal (its idempotency record) and the confirmation
    // each took a group commit; the anonymous call reached no actor.
    assert!(moved("usher_group_commit_batch_size_commands_count") >= 3.0);
    assert!(moved("usher_group_commit_duration_seconds_count") >= 3.0);
    assert!(moved("usher_group_commit_duration_seconds_sum") > 0.0);
    assert!(value(&after, r#"usher_saga_step_duration_seconds_sum{step="authorize"}"#) > 0.0);
    assert!(moved("usher_outbox_published_total") >= 3.0, "hold, confirm and the order's events left through the outbox");
    // Gauges of the node's state, as the admin listener's refresher last read it.
    let after = until(&app, "usher_events_loaded", 1.0, Duration::from_secs(10)).await;
    assert_eq!(value(&after, "usher_events_loaded"), 1.0);
    assert_eq!(after.get(r#"usher_hot_event_queue_depth_requests{rank="1"}"#), Some(&0.0));
    assert_eq!(after.get(r#"usher_hot_event_queue_depth_requests{rank="10"}"#), Some(&0.0));
    assert_eq!(value(&after, r#"usher_build_info{version="0.1.0"}"#), 1.0);
    assert_eq!(value(&after, "usher_event_queue_capacity_requests"), usher_engine::limits::MAILBOX_CAPACITY_MAX as f64);

    // Nothing on the page is missing from the table, no series is labelled
    // with an id, and a made-up gRPC path counts as "other".
    let last = page(&app).await;
    promtool(&last);
    for line in last.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(usher_actors::metrics::find(name).is_some(), "{name} is on the page but not in usher_actors::metrics::ALL");
    }
    assert!(!last.contains(&event) && !last.contains(&o.order_id) && !last.contains("alice") && !last.contains("made.Up"));
    assert!(!last.contains("wp-admin"));
    assert_eq!(value(&samples(&last), r#"usher_grpc_requests_total{method="other",code="PERMISSION_DENIED"}"#), 1.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_loaded_events_and_background_queues_and_usher_status_prints_them() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let event = create_event(&app, 1, 2, 10).await;
    let mut inv = app.inventory().await;
    inv.hold_seats(hold_req(&event, "alice", &["A-1-1"])).await.unwrap();

    // The listener serves what its refresher read last (every 2 s).
    let t = Instant::now();
    let s: serde_json::Value = loop {
        let (status, body) = http(app.admin, "GET", "/status", &[], None).await;
        if status == 200 {
            let s: serde_json::Value = serde_json::from_str(&body).unwrap();
            if s["events_loaded"] == 1 {
                break s;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["node"], "single");
    assert_eq!(s["events_loaded"], 1);
    assert_eq!(s["hot_events"][0]["event_id"], event.as_str());
    assert_eq!(s["queue_capacity"], usher_engine::limits::MAILBOX_CAPACITY_MAX);
    assert_eq!(s["outbox"]["destination"], "the embedded stream");
    assert!(s["cluster"].is_null());
    for (path, want) in [("/livez", 200), ("/readyz", 200), ("/nope", 404)] {
        assert_eq!(http(app.admin, "GET", path, &[], None).await.0, want, "{path}");
    }

    let admin = app.admin.to_string();
    let out = run(env!("CARGO_BIN_EXE_usher"), &["status", "--admin", &admin]);
    assert!(out.contains("node single"), "{out}");
    assert!(out.contains("events loaded 1"), "{out}");
    assert!(out.contains("email backlog 0"), "{out}");
    assert!(out.contains("outbox backlog"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&run(env!("CARGO_BIN_EXE_usher"), &["status", "--admin", &admin, "--json"])).unwrap();
    assert_eq!(json[0]["hot_events"][0]["event_id"], event.as_str());

    // A node that does not answer is said so, plainly.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher")).args(["status", "--admin", "127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    app.stop().await;
}

#[test]
fn architecture_md_lists_every_metric_with_its_labels() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
    for m in usher_actors::metrics::ALL {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", m.name)))
            .unwrap_or_else(|| panic!("docs/metrics.md has no row for {}", m.name));
        for label in m.labels {
            assert!(row.contains(&format!("`{label}`")), "docs/metrics.md's row for {} does not name its label {label}", m.name);
        }
    }
}
