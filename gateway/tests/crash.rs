//! The real `usher` binary is killed with SIGKILL in the middle of a load and
//! restarted on the same data: every acknowledged hold is still there and the
//! invariants hold (the restart refuses to serve a broken snapshot). And
//! killed between an order's payment and its fulfillment: the restarted saga
//! finishes it with one set of tickets and one email.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::process::Child;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient,
    ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient,
};

both_backends!(acknowledged_holds_survive_sigkill_mid_load);
both_backends!(a_paid_order_killed_before_fulfillment_ends_fulfilled_once);

/// Starts `usher serve` on the test database, its errors on the test's stderr.
async fn start_server(db: &TestDb) -> (Child, std::net::SocketAddr, String) {
    start_binary(db, &[], Stdio::inherit()).await
}

async fn start_server_with(db: &TestDb, env: &[(&str, &str)]) -> (Child, std::net::SocketAddr, String) {
    start_binary(db, env, Stdio::inherit()).await
}

async fn acknowledged_holds_survive_sigkill_mid_load(b: Backend) {
    let db = TestDb::fresh(b).await;
    let (mut server, addr, token) = start_server(&db).await;
    let ch = connect_as(addr, &token).await;
    let mut cat = CatalogServiceClient::new(ch.clone());
    let venue = create_venue(&mut cat, 10, 10, 20).await; // 2,000 seats
    let event = cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner().event_id;

    const WORKERS: usize = 40;
    let acked: Arc<Mutex<Vec<pb::Hold>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (acked, failed, event) = (acked.clone(), failed.clone(), event.clone());
        let mut c = InventoryServiceClient::new(connect_as(addr, &token).await);
        tasks.push(tokio::spawn(async move {
            // Each worker owns section-row pairs, so holds only fail through the crash.
            for i in 0..50usize {
                let n = w * 50 + i; // 0..2000 distinct seats
                let seat = format!("{}-{}-{}", (b'A' + (n / 200) as u8) as char, (n % 200) / 20 + 1, n % 20 + 1);
                let req = hold_req(&event, &format!("w{w}-{i}"), &[seat.as_str()]);
                match c.hold_seats(req).await {
                    Ok(h) => acked.lock().unwrap().push(h.into_inner()),
                    Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    // Kill once a good part of the load is acknowledged, while it still runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 400 {
        assert!(Instant::now() < deadline, "load did not progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.start_kill().unwrap(); // SIGKILL
    let status = server.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    println!("[{b:?}] killed with {} holds acknowledged; {failed} workers saw the crash", acked.len());
    assert!(acked.len() < 2000, "the kill came mid-load");

    let (mut server, addr, token) = start_server(&db).await;
    let ch = connect_as(addr, &token).await;
    let mut inv = InventoryServiceClient::new(ch.clone());
    for h in &acked {
        let got = inv.get_hold(pb::GetHoldRequest { hold_id: h.hold_id.clone(), event_id: event.clone() }).await.unwrap().into_inner();
        assert_eq!(got.state, pb::HoldState::Active as i32, "acknowledged hold {} is live", h.hold_id);
        assert_eq!(got.seats, h.seats);
    }
    // Storage agrees with the restarted actor, and at least every acknowledged
    // hold (a few more may have committed without their answer arriving).
    let mut cat = CatalogServiceClient::new(ch);
    let counts = cat.get_event(pb::GetEventRequest { event_id: event.clone() }).await.unwrap().into_inner().counts.unwrap();
    let claims = db.claims(&event).await;
    assert_eq!(counts.held as usize, claims.len());
    assert!(claims.len() >= acked.len());
    assert_eq!(counts.available + counts.held, 2000);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM holds WHERE event_id = $1 AND state = 'active'", &[&event]).await, claims.len() as i64);
    // It serves new commands.
    let fresh = inv.hold_seats(hold_req(&event, "after", &["J-10-20"])).await;
    assert!(fresh.is_ok() || fresh.unwrap_err().code() == tonic::Code::FailedPrecondition);
    // And stops cleanly on SIGTERM.
    let pid = server.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

async fn a_paid_order_killed_before_fulfillment_ends_fulfilled_once(b: Backend) {
    let db = TestDb::fresh(b).await;
    // The first run waits 60 s after capturing the payment before issuing
    // tickets: the kill lands exactly between payment and fulfillment.
    let (mut server, addr, token) = start_server_with(&db, &[("USHER_TEST_ISSUE_DELAY_MS", "60000")]).await;
    let ch = connect_as(addr, &token).await;
    let mut cat = CatalogServiceClient::new(ch.clone());
    let venue = create_venue(&mut cat, 1, 2, 10).await;
    let event = cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner().event_id;
    let seats = ["A-1-1", "A-1-2", "A-2-5"];
    let mut inv = InventoryServiceClient::new(ch.clone());
    let h1 = inv.hold_seats(hold_req(&event, "carol", &seats[..2])).await.unwrap().into_inner();
    let h2 = inv.hold_seats(hold_req(&event, "carol", &seats[2..])).await.unwrap().into_inner();
    let order = OrderingServiceClient::new(ch.clone())
        .create_order(order_req("carol", "carol@example.com", vec![h1.hold_id, h2.hold_id]))
        .await
        .unwrap()
        .into_inner();
    PaymentServiceClient::new(ch.clone()).pay_order(pay_req(&order.order_id, "4242 4242 4242 4242", 10_000)).await.unwrap();
    order_reaching(&ch, &order.order_id, Duration::from_secs(30), "paid/issue", |o| {
        o.status == pb::OrderStatus::Paid as i32 && o.step == "issue"
    })
    .await;
    server.start_kill().unwrap(); // SIGKILL, paid and not yet fulfilled
    server.wait().await.unwrap();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tickets", &[]).await, 0, "killed before any ticket");

    let (mut server, addr, token) = start_server(&db).await;
    let ch = connect_as(addr, &token).await;
    let o = order_reaching(&ch, &order.order_id, Duration::from_secs(60), "done after the restart", |o| o.step == "done").await;
    assert_eq!(o.status, pb::OrderStatus::Fulfilled as i32, "{o:?}");
    assert_eq!(ticket_seats(&ch, &order.order_id).await, seats, "exactly one ticket per seat");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tickets", &[]).await, 3);
    assert_eq!(db.payloads("ticket-issued", &event).await.len(), 3, "one ticket-issued message per ticket");
    assert_eq!(db.payloads("payment-succeeded", &event).await.len(), 1);
    assert_eq!(db.payloads("order-fulfilled", &event).await.len(), 1);
    let mail: Vec<_> = std::fs::read_dir(db.data_dir.join("mail").join("new")).unwrap().collect();
    assert_eq!(mail.len(), 1, "exactly one email");
    assert!(db.data_dir.join("tickets").join(format!("{}.pdf", order.order_id)).exists(), "the PDF is kept");
    // Still one of each after another restart.
    let pid = server.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(30), server.wait()).await.unwrap().unwrap().success());
    let (_server, _, _) = start_server(&db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::read_dir(db.data_dir.join("mail").join("new")).unwrap().count(), 1);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tickets", &[]).await, 3);
}

/// `USHER_LOG_FORMAT=json`: every line on stderr, from the start to the
/// exit after SIGTERM, is one JSON object with the time, level, target and
/// message; a format that does not exist stops the start with a sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let log = db.data_dir.join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let (mut server, addr, token) = start_binary(&db, &[("USHER_LOG_FORMAT", "json"), ("USHER_LOG", "info")], file.into()).await;
    let ch = connect_as(addr, &token).await;
    let venue = create_venue(&mut CatalogServiceClient::new(ch.clone()), 1, 1, 4).await;
    CatalogServiceClient::new(ch).create_event(event_request(&venue.venue_id, 0)).await.unwrap();
    let pid = server.id().unwrap();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "too few log lines: {text}");
    for l in &lines {
        let j: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(j["timestamp"].as_str().is_some_and(|t| t.contains('T')), "{l}");
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&j["level"].as_str().unwrap_or("")), "{l}");
        assert!(j["target"].as_str().is_some_and(|t| t.starts_with("usher")), "{l}");
        assert!(j["fields"]["message"].is_string(), "{l}");
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args([
            "serve",
            "--no-demo-data",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&db.data_dir)
        .env("USHER_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("USHER_LOG_FORMAT=\"xml\": give text or json"), "{err}");
}
