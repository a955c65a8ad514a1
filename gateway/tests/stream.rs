//! The event stream: the outbox relay to a real Kafka-compatible broker
//! (tansu, started by each test on a port of its own) and to the embedded
//! stream. Each row arrives once, in its event's order, with its headers;
//! a killed relay and a stalled broker lose nothing.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use prost::Message as _;
use rdkafka::consumer::StreamConsumer;
use tokio::process::Child;
use usher_actors::StreamMessage;
use usher_adapters::kafka::KafkaConfig;
use usher_proto::events as ev;
use usher_proto::v1::{self as pb, ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient};

const CARD_OK: &str = "4242 4242 4242 4242";

/// A tansu broker of the test's own (memory storage) on a free port.
struct Tansu {
    child: Child,
    port: u16,
}

impl Tansu {
    async fn start() -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bin = std::env::var("USHER_TEST_TANSU").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = tokio::process::Command::new(&bin)
            .args(["broker", "--storage-engine", "memory://tansu/", "--listener-url", &url, "--advertised-listener-url", &url, "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} starts (scripts/test installs tansu and sets USHER_TEST_TANSU): {e}"));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Tansu { child, port };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tansu did not listen on port {port}");
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers(),
            topic_prefix: String::new(),
            partitions: 3,
            replication: 1,
            retention_ms: 86_400_000,
            client_id: "stream-test".into(),
            message_timeout_ms: 10_000,
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }
}

/// Every topic, read from the start by a consumer group of its own.
fn reader(k: &KafkaConfig) -> StreamConsumer {
    let topics: Vec<&str> = usher_adapters::outbox::TOPICS.iter().map(|(t, _)| *t).collect();
    usher_adapters::kafka::consumer(k, &format!("test-{}", uuid::Uuid::new_v4()), true, &topics).unwrap()
}

/// Reads until every id in `want` has arrived and then nothing more for 2 s
/// (so repeats behind the first copies are read too; all are returned), or
/// fails after `within`.
async fn read_until(c: &StreamConsumer, k: &KafkaConfig, want: &HashSet<String>, within: Duration) -> Vec<StreamMessage> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    while !want.iter().all(|id| seen.contains(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} of {} messages arrived within {within:?}", seen.len(), want.len());
        if let Ok(r) = tokio::time::timeout(left.min(Duration::from_secs(1)), c.recv()).await {
            let m = r.expect("the consumer reads");
            let m = usher_adapters::kafka::decode(k, &m).expect("every message has Usher's headers");
            seen.insert(m.message_id.clone());
            got.push(m);
        }
    }
    while let Ok(r) = tokio::time::timeout(Duration::from_secs(2), c.recv()).await {
        got.push(usher_adapters::kafka::decode(k, &r.expect("the consumer reads")).expect("every message has Usher's headers"));
    }
    got
}

/// (message id, topic, event id, event_seq) of every outbox row.
async fn outbox_rows(db: &TestDb) -> Vec<(String, String, String, i64)> {
    let sql = "SELECT message_id, topic, aggregate_id, event_seq FROM outbox ORDER BY seq";
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    sqlx::Executor::execute(&mut conn, "SET search_path TO bc_catalog, bc_inventory").await.unwrap();
    sqlx::query_as::<_, (String, String, String, i64)>(sql).fetch_all(&mut conn).await.unwrap()
}

async fn wait_published(db: &TestDb, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = db.scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL", &[]).await;
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} outbox rows still unpublished after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Decodes a payload by its `message-type` header with the types generated
/// from the published .proto files, and returns its envelope's message id.
fn envelope_id(m: &StreamMessage) -> String {
    let p = m.payload.as_slice();
    let env = match m.message_type.as_str() {
        "usher.events.v1.ReservationCreated" => ev::ReservationCreated::decode(p).unwrap().envelope,
        "usher.events.v1.ReservationReleased" => ev::ReservationReleased::decode(p).unwrap().envelope,
        "usher.events.v1.ReservationExpired" => ev::ReservationExpired::decode(p).unwrap().envelope,
        "usher.events.v1.SeatsSold" => ev::SeatsSold::decode(p).unwrap().envelope,
        "usher.events.v1.SeatsBlockChanged" => ev::SeatsBlockChanged::decode(p).unwrap().envelope,
        "usher.events.v1.EventStatusChanged" => ev::EventStatusChanged::decode(p).unwrap().envelope,
        "usher.events.v1.OrderCreated" => ev::OrderCreated::decode(p).unwrap().envelope,
        "usher.events.v1.PaymentSucceeded" => ev::PaymentSucceeded::decode(p).unwrap().envelope,
        "usher.events.v1.PaymentFailed" => ev::PaymentFailed::decode(p).unwrap().envelope,
        "usher.events.v1.OrderExpired" => ev::OrderExpired::decode(p).unwrap().envelope,
        "usher.events.v1.OrderCancelled" => ev::OrderCancelled::decode(p).unwrap().envelope,
        "usher.events.v1.OrderRefunded" => ev::OrderRefunded::decode(p).unwrap().envelope,
        "usher.events.v1.OrderFulfilled" => ev::OrderFulfilled::decode(p).unwrap().envelope,
        "usher.events.v1.TicketIssued" => ev::TicketIssued::decode(p).unwrap().envelope,
        other => panic!("unknown message type {other}"),
    };
    env.expect("every payload has an envelope").message_id
}

/// One purchase as the organization's owner (at its counter, for
/// `customer`): hold, order, pay, tickets; returns the order id.
async fn purchase(app: &TestApp, event: &str, customer: &str, seats: &[&str]) -> String {
    let owner = app.creds.owner_token.clone();
    purchase_as(app, &owner, event, customer, seats).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbox_row_of_a_purchase_arrives_once_in_its_topic_in_event_order_with_headers() {
    let tansu = Tansu::start().await;
    let db = TestDb::fresh(Backend::Postgres).await;
    let mut cfg = db.config();
    cfg.kafka_brokers = tansu.brokers();
    cfg.kafka_partitions = 3;
    let app = TestApp::spawn_with(db, cfg).await;
    let event = create_event(&app, 1, 2, 10).await;
    purchase(&app, &event, "ann", &["A-1-1", "A-1-2"]).await;
    purchase(&app, &event, "bob", &["A-2-1"]).await;
    let h = app.inventory().await.hold_seats(hold_req(&event, "cy", &["A-2-5"])).await.unwrap().into_inner();
    app.inventory()
        .await
        .release_hold(pb::ReleaseHoldRequest { idempotency_key: key(), hold_id: h.hold_id, ..Default::default() })
        .await
        .unwrap();

    wait_published(&app.db, Duration::from_secs(30)).await;
    let rows = outbox_rows(&app.db).await;
    let want: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(want.len(), rows.len());
    let k = tansu.kafka();
    let got = read_until(&reader(&k), &k, &want, Duration::from_secs(60)).await;

    // Once each.
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in &got {
        *count.entry(m.message_id.as_str()).or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "a message arrived twice: {count:?}");
    assert_eq!(got.len(), rows.len());
    let by_id: HashMap<&str, &(String, String, String, i64)> = rows.iter().map(|r| (r.0.as_str(), r)).collect();
    let mut per_topic_event: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for m in &got {
        let (_, topic, event_id, seq) = by_id[m.message_id.as_str()];
        // In its topic, keyed by its event, with its headers.
        assert_eq!((&m.topic, &m.key, &m.event_seq), (topic, event_id, seq));
        assert_eq!(m.message_type, usher_adapters::outbox::message_type(topic).unwrap());
        assert_eq!(m.schema_version, 1);
        assert!(m.occurred_at.0 > 0);
        // The payload decodes with the published .proto, and its envelope
        // carries the same id as the header.
        assert_eq!(envelope_id(m), m.message_id);
        per_topic_event.entry((m.topic.clone(), m.key.clone())).or_default().push(m.event_seq);
    }
    // Within a topic, one event's messages arrive in its order.
    for ((topic, e), seqs) in &per_topic_event {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{topic} for {e}: {seqs:?}");
    }
    // Across topics, the event's numbers are 1..n with no gap.
    let mut all: Vec<i64> = got.iter().filter(|m| m.key == event).map(|m| m.event_seq).collect();
    all.sort();
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>());
    let topics: HashSet<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    for t in [
        "reservation-created",
        "order-created",
        "payment-succeeded",
        "seats-sold",
        "ticket-issued",
        "order-fulfilled",
        "reservation-released",
    ] {
        assert!(topics.contains(t), "no {t} message in {topics:?}");
    }
    // Readiness says caught up.
    let (status, body) = http(app.http, "GET", "/readyz", &[], None).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// Holds `n` seats one at a time on `addr` (row by row through a grid of
/// 20 seats a row), as fast as they are answered; stops at the first error.
async fn hold_many(addr: std::net::SocketAddr, token: String, event: String, n: usize) -> usize {
    let ch = connect_as(addr, &token).await;
    let mut inv = usher_proto::v1::inventory_service_client::InventoryServiceClient::new(ch);
    for i in 0..n {
        let seat = format!("A-{}-{}", i / 20 + 1, i % 20 + 1);
        if inv.hold_seats(hold_req(&event, &format!("c{i}"), &[&seat])).await.is_err() {
            return i;
        }
    }
    n
}

async fn event_on(addr: std::net::SocketAddr, token: &str, rows: usize) -> String {
    let mut cat = usher_proto::v1::catalog_service_client::CatalogServiceClient::new(connect_as(addr, token).await);
    let v = create_venue(&mut cat, 1, rows, 20).await;
    cat.create_event(event_request(&v.venue_id, 0)).await.unwrap().into_inner().event_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_while_publishing_loses_nothing_and_repeats_only_with_the_same_ids() {
    let tansu = Tansu::start().await;
    let db = TestDb::fresh(Backend::Postgres).await;
    // The relay pauses 3 s between its delivery reports and marking the
    // rows: the kill lands in that window, the one that makes repeats.
    let slow = [
        ("USHER_KAFKA_BROKERS", tansu.brokers()),
        ("USHER_KAFKA_PARTITIONS", "3".to_owned()),
        ("USHER_TEST_RELAY_MARK_DELAY_MS", "3000".to_owned()),
    ];
    let slow: Vec<(&str, &str)> = slow.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut node, addr, token) = start_binary(&db, &slow, Stdio::null()).await;
    let event = event_on(addr, &token, 50).await;
    let k = tansu.kafka();
    let watcher = reader(&k);
    let held = hold_many(addr, token.clone(), event.clone(), 1_000).await;
    assert_eq!(held, 1_000);
    // SIGKILL as soon as part of the load has arrived in Kafka.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < 100 {
        assert!(Instant::now() < deadline, "nothing arrived");
        if let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(1), futures::StreamExt::next(&mut watcher.stream())).await {
            seen += 1;
        }
    }
    node.start_kill().unwrap();
    node.wait().await.unwrap();
    let unpublished = db.scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL", &[]).await;
    assert!(unpublished > 0, "the kill came after every row was marked");
    // Restarted (without the pause): it relays the rest.
    let env = [("USHER_KAFKA_BROKERS", tansu.brokers())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut node, _, _) = start_binary(&db, &env, Stdio::null()).await;
    wait_published(&db, Duration::from_secs(60)).await;
    let rows = outbox_rows(&db).await;
    let want: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let got = read_until(&reader(&k), &k, &want, Duration::from_secs(60)).await;
    let ids: HashSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), want.len(), "every row arrived");
    // A repeat is the same message: same id, same event and number.
    let mut first: HashMap<&str, (&str, i64, &[u8])> = HashMap::new();
    for m in &got {
        let e = first.entry(m.message_id.as_str()).or_insert((m.key.as_str(), m.event_seq, m.payload.as_slice()));
        assert_eq!(*e, (m.key.as_str(), m.event_seq, m.payload.as_slice()));
    }
    let repeats = got.len() - ids.len();
    assert!(repeats > 0, "delivered-but-unmarked rows are sent again");
    // The read model (the restarted node's consumer read every copy) counted
    // each hold once.
    let held = "SELECT CAST(COALESCE(SUM(held), 0) AS BIGINT) FROM report_seats WHERE event_id = $1";
    let deadline = Instant::now() + Duration::from_secs(120);
    while db.scalar(held, &[&event]).await < 1_000 {
        assert!(Instant::now() < deadline, "the read model did not catch up: {}", db.scalar(held, &[&event]).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(db.scalar(held, &[&event]).await, 1_000, "a repeated message was counted twice");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM consumed_messages WHERE consumer = 'sales'", &[]).await, rows.len() as i64);
    eprintln!("killed with {unpublished} of {} rows unpublished; {} messages arrived, {repeats} of them repeats", rows.len(), got.len());
    node.start_kill().unwrap();
    let _ = node.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stalled_for_30_s_under_load_leaves_the_outbox_behind_then_drained() {
    let tansu = Tansu::start().await;
    let db = TestDb::fresh(Backend::Postgres).await;
    let mut cfg = db.config();
    cfg.kafka_brokers = tansu.brokers();
    cfg.kafka_partitions = 3;
    cfg.relay_behind_ms = 2_000;
    let app = TestApp::spawn_with(db, cfg).await;
    let event = create_event(&app, 1, 50, 20).await;
    // The relay has published the event's creation: the topics exist.
    wait_published(&app.db, Duration::from_secs(30)).await;
    tansu.signal("-STOP");
    let stalled = Instant::now();
    let load = tokio::spawn(hold_many(app.addr, app.creds.owner_token.clone(), event.clone(), 600));
    // Behind, and readiness says so.
    let mut saw_behind = false;
    while stalled.elapsed() < Duration::from_secs(30) {
        let (status, body) = http(app.http, "GET", "/readyz", &[], None).await;
        if status == 503 {
            assert!(body.contains("\"behind\":true"), "{body}");
            saw_behind = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(saw_behind, "readiness never reported the outbox behind");
    let held = load.await.unwrap();
    assert_eq!(held, 600, "holds go on while the broker is down");
    tansu.signal("-CONT");
    wait_published(&app.db, Duration::from_secs(90)).await;
    // Caught up, and readiness says so within the backlog's reading period.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http(app.http, "GET", "/readyz", &[], None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready after draining: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = outbox_rows(&app.db).await;
    let want: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let k = tansu.kafka();
    let got = read_until(&reader(&k), &k, &want, Duration::from_secs(60)).await;
    let ids: HashSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "nothing lost");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_embedded_stream_numbers_every_row_in_publishing_order() {
    for b in [Backend::Postgres, Backend::Sqlite] {
        let app = TestApp::spawn(b).await;
        let event = create_event(&app, 1, 2, 10).await;
        purchase(&app, &event, "ann", &["A-1-1"]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while app.db.scalar("SELECT COUNT(*) FROM outbox WHERE stream_offset IS NULL", &[]).await > 0 {
            if Instant::now() > deadline {
                let (_, ready) = http(app.http, "GET", "/readyz", &[], None).await;
                panic!("{b:?}: rows left out of the embedded stream: {ready}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = app.db.scalar("SELECT COUNT(*) FROM outbox", &[]).await;
        // Offsets 1..n, each once, and each event's rows in its order.
        assert_eq!(app.db.scalar("SELECT COUNT(DISTINCT stream_offset) FROM outbox", &[]).await, n);
        assert_eq!(app.db.scalar("SELECT MAX(stream_offset) FROM outbox", &[]).await, n);
        assert_eq!(
            app.db
                .scalar(
                    "SELECT COUNT(*) FROM outbox a JOIN outbox b ON a.aggregate_id = b.aggregate_id \
                     AND a.event_seq < b.event_seq AND a.stream_offset > b.stream_offset",
                    &[],
                )
                .await,
            0,
            "{b:?}: an event's rows out of order in the stream"
        );
        let db = app.stop().await;
        // `usher stream tail` reads it back.
        let out = run(
            env!("CARGO_BIN_EXE_usher"),
            &[
                "stream",
                "tail",
                "--from-start",
                "--json",
                "--limit",
                &n.to_string(),
                "--database-url",
                &db.url,
                "--data-dir",
                db.data_dir.to_str().unwrap(),
            ],
        );
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len() as i64, n, "{b:?}: {out}");
        assert_eq!(lines[0]["offset"], 1);
        assert!(lines.iter().any(|l| l["topic"] == "ticket-issued"));
    }
}

// ---- The sales read model -------------------------------------------------

/// A purchase as the principal behind `token` (customer `customer` when it
/// names one): hold, order, pay; returns the order id once fulfilled.
async fn purchase_as(app: &TestApp, token: &str, event: &str, customer: &str, seats: &[&str]) -> String {
    let ch = app.channel_as(token).await;
    let h = usher_proto::v1::inventory_service_client::InventoryServiceClient::new(ch.clone())
        .hold_seats(hold_req(event, customer, seats))
        .await
        .unwrap()
        .into_inner();
    let o = OrderingServiceClient::new(ch.clone())
        .create_order(order_req(
            customer,
            &format!("{}@example.com", if customer.is_empty() { "guest" } else { customer }),
            vec![h.hold_id],
        ))
        .await
        .unwrap()
        .into_inner();
    PaymentServiceClient::new(ch.clone()).pay_order(pay_req(&o.order_id, CARD_OK, 15_000)).await.unwrap();
    order_reaching(&ch, &o.order_id, Duration::from_secs(30), "fulfilled", |o| o.status == pb::OrderStatus::Fulfilled as i32).await;
    o.order_id
}

async fn event_with(app: &TestApp, hold_seconds: u32) -> String {
    let mut cat = app.catalog().await;
    let v = create_venue(&mut cat, 1, 3, 10).await;
    cat.create_event(event_request(&v.venue_id, hold_seconds)).await.unwrap().into_inner().event_id
}

/// Every kind of sale on three events: three channels buy, tickets are
/// scanned at two gates, a hold is released, an order cancelled, a payment
/// declined, a hold expires, and an event is cancelled after a sale (a
/// refund). Returns the events.
async fn sales_run(app: &TestApp) -> Vec<String> {
    let owner = app.creds.owner_token.clone();
    let a = event_with(app, 0).await;
    // Box office, partner, and a guest buying for themselves.
    let boxed = purchase_as(app, &owner, &a, "ann", &["A-1-1", "A-1-2"]).await;
    purchase_as(app, &app.creds.partner_key, &a, "p-1", &["A-1-3"]).await;
    let guest = usher_proto::v1::identity_service_client::IdentityServiceClient::new(app.channel_as("").await)
        .start_guest_session(pb::StartGuestSessionRequest {})
        .await
        .unwrap()
        .into_inner()
        .access_token;
    purchase_as(app, &guest, &a, "", &["A-2-5"]).await;
    // Admissions at two gates.
    let ch = app.channel().await;
    let tickets = usher_proto::v1::fulfillment_service_client::FulfillmentServiceClient::new(ch.clone())
        .list_tickets(pb::ListTicketsRequest { order_id: boxed })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    let mut gate = usher_proto::v1::check_in_service_client::CheckInServiceClient::new(ch.clone());
    for (t, g) in tickets.iter().zip(["north", "south"]) {
        gate.scan(pb::ScanRequest { idempotency_key: key(), code: t.code.clone(), event_id: a.clone(), gate: g.into() }).await.unwrap();
    }
    // A second scan of a ticket admits nobody and counts nothing.
    gate.scan(pb::ScanRequest { idempotency_key: key(), code: tickets[0].code.clone(), event_id: a.clone(), gate: "south".into() })
        .await
        .unwrap();
    let mut inv = app.inventory().await;
    let h = inv.hold_seats(hold_req(&a, "bob", &["A-2-1"])).await.unwrap().into_inner();
    inv.release_hold(pb::ReleaseHoldRequest { idempotency_key: key(), hold_id: h.hold_id, ..Default::default() }).await.unwrap();
    let mut ord = OrderingServiceClient::new(ch.clone());
    let h = inv.hold_seats(hold_req(&a, "cy", &["A-2-2"])).await.unwrap().into_inner();
    let o = ord.create_order(order_req("cy", "cy@example.com", vec![h.hold_id])).await.unwrap().into_inner();
    ord.cancel_order(pb::CancelOrderRequest { idempotency_key: key(), order_id: o.order_id.clone(), ..Default::default() }).await.unwrap();
    order_reaching(&ch, &o.order_id, Duration::from_secs(30), "cancelled", |o| o.status == pb::OrderStatus::Cancelled as i32).await;
    let h = inv.hold_seats(hold_req(&a, "dee", &["A-2-3"])).await.unwrap().into_inner();
    let o = ord.create_order(order_req("dee", "dee@example.com", vec![h.hold_id])).await.unwrap().into_inner();
    let _ = PaymentServiceClient::new(ch.clone()).pay_order(pay_req(&o.order_id, "4000 0000 0000 0002", 15_000)).await;
    order_reaching(&ch, &o.order_id, Duration::from_secs(30), "payment failed", |o| o.status == pb::OrderStatus::PaymentFailed as i32)
        .await;
    // A sale, then the event is cancelled: the order is refunded.
    let b = event_with(app, 0).await;
    let refunded = purchase_as(app, &owner, &b, "eve", &["A-1-1", "A-3-1"]).await;
    app.catalog().await.cancel_event(pb::EventCommandRequest { idempotency_key: key(), event_id: b.clone() }).await.unwrap();
    order_reaching(&ch, &refunded, Duration::from_secs(30), "refunded", |o| o.status == pb::OrderStatus::Refunded as i32).await;
    // A hold that runs out.
    let c = event_with(app, 1).await;
    app.inventory().await.hold_seats(hold_req(&c, "fay", &["A-1-1", "A-1-2", "A-1-3"])).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.db.scalar("SELECT COUNT(*) FROM holds WHERE event_id = $1 AND state = 'expired'", &[&c]).await == 0 {
        assert!(Instant::now() < deadline, "the hold did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vec![a, b, c]
}

/// The figures the read model must show, counted from the source tables:
/// per channel (held, released, expired, sold, refunded seats), orders by
/// status, money (gross, refunded) and admissions by gate, as sorted lists.
async fn recount(db: &TestDb, event: &str) -> serde_json::Value {
    const CHANNEL: &str = "CASE WHEN customer_id LIKE 'p:%' THEN 'partner' WHEN customer_id LIKE 'o:%' THEN 'box_office' ELSE 'online' END";
    let mut seats = Vec::new();
    for ch in ["box_office", "online", "partner"] {
        let q = |state: &str| {
            format!("SELECT CAST(COALESCE(SUM(seat_count), 0) AS BIGINT) FROM holds WHERE event_id = $1 AND {CHANNEL} = $2 AND ({state})")
        };
        let held = db.scalar(&q("TRUE"), &[event, ch]).await;
        let released = db.scalar(&q("state = 'released'"), &[event, ch]).await;
        let expired = db.scalar(&q("state = 'expired'"), &[event, ch]).await;
        let sold = db.scalar(&q("state = 'confirmed'"), &[event, ch]).await;
        let refunded = db
            .scalar(
                &format!(
                    "SELECT COUNT(*) FROM tickets t JOIN orders o ON o.id = t.order_id WHERE t.event_id = $1 AND t.status = 'refunded' AND {}= $2",
                    CHANNEL.replace("customer_id", "o.customer_id") + " "
                ),
                &[event, ch],
            )
            .await;
        if held + refunded > 0 {
            seats.push(serde_json::json!([ch, held, released, expired, sold, refunded]));
        }
    }
    let mut orders = Vec::new();
    for s in ["cancelled", "expired", "fulfilled", "paid", "payment_failed", "pending_payment", "refunded"] {
        let n = db.scalar("SELECT COUNT(*) FROM orders WHERE event_id = $1 AND status = $2", &[event, s]).await;
        if n > 0 {
            orders.push(serde_json::json!([s, n]));
        }
    }
    let pay = |status: &str| {
        format!(
            "SELECT CAST(COALESCE(SUM(p.amount_minor), 0) AS BIGINT) FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.event_id = $1 AND p.status IN ({status})"
        )
    };
    let gross = db.scalar(&pay("'captured', 'refunded'"), &[event]).await;
    let refunded = db.scalar(&pay("'refunded'"), &[event]).await;
    let mut gates = Vec::new();
    for g in ["north", "south"] {
        let n = db
            .scalar("SELECT COUNT(*) FROM scans s JOIN tickets t ON t.id = s.ticket_id WHERE t.event_id = $1 AND s.gate = $2", &[event, g])
            .await;
        if n > 0 {
            gates.push(serde_json::json!([g, n]));
        }
    }
    let sold_seats = db.scalar("SELECT COUNT(*) FROM tickets WHERE event_id = $1", &[event]).await;
    serde_json::json!({ "seats": seats, "orders": orders, "gross": gross, "refunded": refunded, "gates": gates, "timeline_seats": sold_seats })
}

/// The read model's figures in `recount`'s shape (summed over categories,
/// whose codes must all be the venue's), and the full report.
async fn reported(app: &TestApp, event: &str) -> (serde_json::Value, pb::SalesReport) {
    let r = usher_proto::v1::reporting_service_client::ReportingServiceClient::new(app.channel().await)
        .get_sales_report(pb::GetSalesReportRequest { event_id: event.into() })
        .await
        .unwrap()
        .into_inner();
    let mut by: BTreeMap<String, [i64; 5]> = BTreeMap::new();
    for s in &r.seats {
        assert!(["P1", "P2"].contains(&s.category.as_str()), "category {:?}", s.category);
        let e = by.entry(s.channel.clone()).or_default();
        for (i, v) in [s.held, s.released, s.expired, s.sold, s.refunded].into_iter().enumerate() {
            e[i] += v;
        }
    }
    let seats: Vec<_> = by.into_iter().map(|(ch, v)| serde_json::json!([ch, v[0], v[1], v[2], v[3], v[4]])).collect();
    let orders: Vec<_> = r.orders.iter().map(|o| serde_json::json!([o.status, o.orders])).collect();
    let gross: i64 = r.revenue.iter().map(|x| x.gross_minor).sum();
    let refunded: i64 = r.revenue.iter().map(|x| x.refunded_minor).sum();
    let mut g: BTreeMap<String, i64> = BTreeMap::new();
    for c in &r.checkins {
        *g.entry(c.gate.clone()).or_default() += c.scans;
    }
    let gates: Vec<_> = g.into_iter().map(|(k, v)| serde_json::json!([k, v])).collect();
    let timeline_seats: i64 = r.timeline.iter().map(|m| m.seats).sum();
    (
        serde_json::json!({ "seats": seats, "orders": orders, "gross": gross, "refunded": refunded, "gates": gates, "timeline_seats": timeline_seats }),
        r,
    )
}

/// Waits until the read model shows `want` for `event` (it trails the writes).
async fn report_reaching(app: &TestApp, event: &str, want: &serde_json::Value, within: Duration) -> pb::SalesReport {
    let deadline = Instant::now() + within;
    loop {
        let (got, full) = reported(app, event).await;
        if &got == want {
            return full;
        }
        assert!(Instant::now() < deadline, "event {event}: the read model shows\n{got}\nnot the recount\n{want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The read model equals a recount from the source tables; emptied and
/// rebuilt from the beginning of the stream, it is identical.
async fn read_model_matches_a_recount_and_rebuilds_identically(app: TestApp) {
    let events = sales_run(&app).await;
    let mut before = Vec::new();
    for e in &events {
        let want = recount(&app.db, e).await;
        before.push(report_reaching(&app, e, &want, Duration::from_secs(60)).await);
    }
    // Spot checks of the figures themselves.
    let a = &before[0];
    assert_eq!(a.seats_sold, 4);
    let channels: std::collections::BTreeSet<&str> = a.seats.iter().filter(|s| s.sold > 0).map(|s| s.channel.as_str()).collect();
    assert_eq!(channels, ["box_office", "online", "partner"].into_iter().collect());
    assert_eq!(before[1].seats.iter().map(|s| s.refunded).sum::<i64>(), 2);
    assert_eq!(before[2].seats.iter().map(|s| s.expired).sum::<i64>(), 3);
    assert_eq!(before[2].seats_held_now, 0);
    // Rebuilt from offset zero.
    let generation = app.app_ctx.sales.reset().await.unwrap();
    assert!(generation >= 1);
    for (e, old) in events.iter().zip(&before) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, now) = reported(&app, e).await;
            if &now == old {
                break;
            }
            assert!(Instant::now() < deadline, "rebuilt report of {e} differs:\n{now:?}\nbefore:\n{old:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The JSON door serves the same report; the page is there.
    let (status, body) = http(app.http, "GET", &format!("/api/events/{}/sales", events[0]), &[app.bearer_ref()], None).await;
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["seats_sold"], 4);
    let (status, _) = http(app.http, "GET", &format!("/api/events/{}/sales", events[0]), &[], None).await;
    assert_eq!(status, 401);
    let (status, page) = http(app.http, "GET", &format!("/sales/{}", events[0]), &[], None).await;
    assert_eq!(status, 200);
    assert!(page.contains("Seats sold over time"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_from_kafka_matches_a_recount_and_rebuilds_identically() {
    let tansu = Tansu::start().await;
    let db = TestDb::fresh(Backend::Postgres).await;
    let mut cfg = db.config();
    cfg.kafka_brokers = tansu.brokers();
    cfg.kafka_partitions = 3;
    read_model_matches_a_recount_and_rebuilds_identically(TestApp::spawn_with(db, cfg).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_from_the_embedded_stream_matches_a_recount_and_rebuilds_identically() {
    for b in [Backend::Sqlite, Backend::Postgres] {
        read_model_matches_a_recount_and_rebuilds_identically(TestApp::spawn(b).await).await;
    }
}

// ---- Webhooks ---------------------------------------------------------------

/// One POST the receiver got: its headers, body, and the status it answered.
#[derive(Clone, Debug)]
struct Got {
    headers: http::HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

type Log = std::sync::Arc<std::sync::Mutex<Vec<Got>>>;

/// A test certificate authority and the receiver's certificate for
/// `127.0.0.1` and `localhost`, which it signed.
struct TestCa {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Usher webhook test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    TestCa { ca_pem: ca.pem(), cert_der: leaf.der().to_vec(), key_der: key.serialize_der() }
}

/// A real HTTP server that fails the first `fail_first` attempts of each
/// webhook id with 503, then answers 200; it records everything. With
/// `tls`, it speaks HTTPS (rustls) with the certificate `tls` signed, and a
/// client that does not trust it never gets to send a request.
async fn receiver(fail_first: usize, tls: Option<&TestCa>) -> (String, Log) {
    use axum::routing::post;
    let log: Log = Default::default();
    let l = log.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let l = l.clone();
            async move {
                let mut all = l.lock().unwrap();
                let id = headers.get("webhook-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                let before = all.iter().filter(|g| g.headers.get("webhook-id").is_some_and(|v| v.to_str().unwrap() == id)).count();
                let answered = if before < fail_first { 503 } else { 200 };
                all.push(Got { headers, body: body.to_vec(), answered });
                axum::http::StatusCode::from_u16(answered).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let Some(ca) = tls else {
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        return (format!("http://{addr}/hook"), log);
    };
    let key = rustls::pki_types::PrivateKeyDer::try_from(ca.key_der.clone()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.cert_der.clone().into()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate hangs up here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
            });
        }
    });
    (format!("https://{addr}/hook"), log)
}

/// An endpoint that fails twice gets every message of a purchase once it
/// recovers, each signed so that the receiver verifies it; a tampered body
/// or timestamp fails verification and a replay repeats a webhook id the
/// receiver has seen; the delivery log shows the attempts, a redelivery
/// comes again with the same id, and a rotated secret keeps verifying.
/// With `tls` the endpoint is https, its certificate signed by a CA the
/// app is told to trust (`webhook_ca_file`).
async fn webhooks_reach_a_failing_endpoint_signed(db: TestDb, mut cfg: usher_gateway::config::Config, tls: bool) {
    use usher_proto::v1::webhook_service_client::WebhookServiceClient;
    let ca = tls.then(test_ca);
    let (url, log) = receiver(2, ca.as_ref()).await;
    if let Some(ca) = &ca {
        let file = db.data_dir.join("webhook-ca.pem");
        std::fs::write(&file, &ca.ca_pem).unwrap();
        cfg.webhook_ca_file = Some(file);
    }
    fast_webhooks(&mut cfg);
    let app = TestApp::spawn_with(db, cfg).await;
    let mut wh = WebhookServiceClient::new(app.channel().await);
    let topics = vec!["order-created".to_owned(), "payment-succeeded".to_owned(), "ticket-issued".to_owned()];
    let created = wh
        .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
            idempotency_key: key(),
            org_id: app.creds.org_id.clone(),
            url: url.clone(),
            topics: topics.clone(),
            description: "box office system".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("whsec_"));
    let endpoint = created.endpoint.unwrap().endpoint_id;
    // A partner key may not manage endpoints; other schemes and odd topics are refused.
    let mut partner = WebhookServiceClient::new(app.channel_as(&app.creds.partner_key).await);
    let e = partner.list_webhook_endpoints(pb::ListWebhookEndpointsRequest { org_id: app.creds.org_id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    for (bad_url, bad_topics) in [("ftp://example.com/x", vec![]), (url.as_str(), vec!["nope".to_owned()])] {
        let e = wh
            .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
                idempotency_key: key(),
                org_id: app.creds.org_id.clone(),
                url: bad_url.into(),
                topics: bad_topics,
                description: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }

    let event = create_event(&app, 1, 2, 10).await;
    purchase(&app, &event, "ann", &["A-1-1", "A-1-2"]).await;
    // Every subscribed message of the event, delivered after two failures.
    let want: HashSet<String> = {
        let mut ids = HashSet::new();
        for t in &topics {
            let n = app.db.scalar("SELECT COUNT(*) FROM outbox WHERE topic = $1 AND aggregate_id = $2", &[t, &event]).await;
            assert!(n > 0, "{t}");
        }
        for t in &topics {
            for p in app.db.payloads(t, &event).await {
                let m = StreamMessage {
                    row: 0,
                    message_id: String::new(),
                    topic: t.clone(),
                    key: event.clone(),
                    event_seq: 0,
                    message_type: usher_adapters::outbox::message_type(t).unwrap().into(),
                    schema_version: 1,
                    occurred_at: usher_engine::Millis(0),
                    traceparent: None,
                    payload: p,
                    offset: None,
                    partition: None,
                };
                ids.insert(envelope_id(&m));
            }
        }
        ids
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok: HashSet<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.answered == 200)
            .map(|g| g.headers["webhook-id"].to_str().unwrap().to_owned())
            .collect();
        if ok == want {
            break;
        }
        if Instant::now() > deadline {
            let q = |sql: &'static str| app.db.scalar(sql, &[]);
            panic!(
                "delivered {} of {} ({:?} missing); deliveries {}, pending {}, cursor {}, relay {}, requests {}",
                ok.len(),
                want.len(),
                want.difference(&ok).collect::<Vec<_>>(),
                q("SELECT COUNT(*) FROM webhook_deliveries").await,
                q("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'").await,
                q("SELECT COALESCE(MAX(position), -1) FROM stream_cursors WHERE name = 'webhooks'").await,
                q("SELECT COALESCE(MAX(position), -1) FROM stream_cursors WHERE name = 'relay'").await,
                log.lock().unwrap().len(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = log.lock().unwrap().clone();
    let verifier = standardwebhooks::Webhook::new(&created.secret).unwrap();
    for g in &got {
        verifier.verify(&g.body, &g.headers).unwrap_or_else(|e| panic!("signature does not verify: {e:?}"));
        let j: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert!(topics.contains(&j["type"].as_str().unwrap().to_owned()), "{j}");
        assert_eq!(j["event_id"], event.as_str());
        assert_eq!(j["data"]["envelope"]["messageId"], g.headers["webhook-id"].to_str().unwrap(), "{j}");
    }
    // Each message: two 503s, then one 200, never another after it.
    for id in &want {
        let tries: Vec<u16> = got.iter().filter(|g| g.headers["webhook-id"] == id.as_str()).map(|g| g.answered).collect();
        assert_eq!(tries, [503, 503, 200], "{id}");
    }
    // Tampered body or timestamp: verification fails. A replay is the same
    // webhook id again: a receiver that keeps the ids it saw drops it.
    let g = got.iter().find(|g| g.answered == 200).unwrap();
    let mut body = g.body.clone();
    body[10] ^= 1;
    assert!(verifier.verify(&body, &g.headers).is_err(), "a tampered body verified");
    let mut headers = g.headers.clone();
    let ts: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    headers.insert("webhook-timestamp", (ts - 1).to_string().parse().unwrap());
    assert!(verifier.verify(&g.body, &headers).is_err(), "a changed timestamp verified");

    // The delivery log (the sender records an attempt just after its
    // answer), and a redelivery on request.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log_rows = loop {
        let rows = wh
            .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
                endpoint_id: endpoint.clone(),
                status: "delivered".into(),
                page_size: 100,
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if rows.len() == want.len() {
            break rows;
        }
        assert!(Instant::now() < deadline, "the log shows {} of {} delivered", rows.len(), want.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log_rows.iter().all(|d| d.attempts == 3 && d.last_status == 200 && d.delivered_at.is_some()), "{log_rows:?}");
    let again = &log_rows[0];
    wh.redeliver_webhook(pb::RedeliverWebhookRequest { idempotency_key: key(), delivery_id: again.delivery_id.clone() }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.lock().unwrap().iter().filter(|g| g.headers["webhook-id"] == again.message_id.as_str()).count() < 4 {
        assert!(Instant::now() < deadline, "the redelivery did not come");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A rotated secret: the next message verifies with the new and the old.
    let rotated = wh
        .rotate_webhook_secret(pb::RotateWebhookSecretRequest { idempotency_key: key(), endpoint_id: endpoint.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.secret, created.secret);
    let before = log.lock().unwrap().len();
    purchase(&app, &event, "bob", &["A-2-1"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let fresh = loop {
        let fresh: Vec<Got> = log.lock().unwrap()[before..].iter().filter(|g| g.answered == 200).cloned().collect();
        if !fresh.is_empty() {
            break fresh;
        }
        assert!(Instant::now() < deadline, "nothing after the rotation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for secret in [&rotated.secret, &created.secret] {
        standardwebhooks::Webhook::new(secret).unwrap().verify(&fresh[0].body, &fresh[0].headers).unwrap();
    }
    app.stop().await;
}

fn fast_webhooks(cfg: &mut usher_gateway::config::Config) {
    cfg.webhook_retry_schedule_ms = vec![200, 300, 400, 500];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_from_kafka_reach_a_failing_endpoint_signed() {
    let tansu = Tansu::start().await;
    let db = TestDb::fresh(Backend::Postgres).await;
    let mut cfg = db.config();
    cfg.kafka_brokers = tansu.brokers();
    cfg.kafka_partitions = 3;
    webhooks_reach_a_failing_endpoint_signed(db, cfg, true).await;
}

/// SQLite to an https endpoint, PostgreSQL to an http one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_from_the_embedded_stream_reach_a_failing_endpoint_signed() {
    for (b, tls) in [(Backend::Sqlite, true), (Backend::Postgres, false)] {
        let db = TestDb::fresh(b).await;
        let cfg = db.config();
        webhooks_reach_a_failing_endpoint_signed(db, cfg, tls).await;
    }
}

/// The JSON twin of `WebhookService`, end to end: create (shown the
/// secret once; a retry with the same key returns the endpoint without it;
/// the key with another request is refused), bad input refused with a
/// sentence and nothing stored, list, the delivery log, redelivery, a
/// rotation and a deletion. The endpoint is https with a certificate the
/// app was not told to trust: every attempt fails with the certificate
/// named in the log, and the receiver never gets a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_webhook_api_manages_endpoints_and_an_untrusted_certificate_is_refused() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    fast_webhooks(&mut cfg);
    let app = TestApp::spawn_with(db, cfg).await;
    let ca = test_ca();
    let (url, log) = receiver(0, Some(&ca)).await;
    let org = app.creds.org_id.clone();
    let bearer = format!("Bearer {}", app.creds.owner_token);
    let call = |method: &'static str, path: String, key: &'static str, body: Option<String>| {
        let (addr, bearer) = (app.http, bearer.clone());
        async move {
            let h = [("Content-Type", "application/json"), ("Authorization", bearer.as_str()), ("Idempotency-Key", key)];
            let (status, text) = http(addr, method, &path, &h, body.as_deref()).await;
            (status, serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}")))
        }
    };
    let hooks = format!("/api/orgs/{org}/webhooks");
    let body = serde_json::json!({"url": url, "topics": ["order-created", "seats-sold"], "description": "box office"}).to_string();

    // Bad input: a sentence, 400, nothing stored.
    for (bad, says) in [
        (serde_json::json!({"url": "ftp://example.com/x", "topics": ["seats-sold"]}).to_string(), "scheme"),
        (serde_json::json!({"url": "https://user:pw@example.com/x", "topics": ["seats-sold"]}).to_string(), "password"),
        (serde_json::json!({"url": url, "topics": ["seats-sold", "nope"]}).to_string(), "not one of Usher's topics"),
        (serde_json::json!({"url": url, "topic": ["seats-sold"]}).to_string(), "unknown field"),
    ] {
        let (status, j) = call("POST", hooks.clone(), "bad", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {j}");
        assert!(j["error"]["message"].as_str().unwrap().contains(says), "{bad}: {j}");
    }
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM webhook_endpoints", &[]).await, 0);

    let (status, created) = call("POST", hooks.clone(), "make-1", Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let id = created["endpoint"]["endpoint_id"].as_str().unwrap().to_owned();
    assert_eq!(created["endpoint"]["url"], url.as_str());
    assert_eq!(created["endpoint"]["topics"], serde_json::json!(["order-created", "seats-sold"]));
    // A retry: the same endpoint, the secret not shown again.
    let (status, again) = call("POST", hooks.clone(), "make-1", Some(body.clone())).await;
    assert_eq!(
        (status, &again["endpoint"]["endpoint_id"], &again["secret"]),
        (201, &created["endpoint"]["endpoint_id"], &serde_json::Value::Null)
    );
    let other = serde_json::json!({"url": url, "topics": ["seats-sold"]}).to_string();
    let (status, reused) = call("POST", hooks.clone(), "make-1", Some(other)).await;
    assert_eq!((status, reused["error"]["reason"].as_str()), (409, Some("IDEMPOTENCY_KEY_REUSED")), "{reused}");
    let (status, listed) = call("GET", hooks.clone(), "", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["endpoints"].as_array().unwrap().len(), 1, "{listed}");

    // A purchase: its messages are queued for the endpoint; every attempt
    // fails on the certificate, which the log names.
    let event = create_event(&app, 1, 1, 4).await;
    purchase(&app, &event, "ann", &["A-1-1"]).await;
    let deliveries = format!("/api/webhooks/{id}/deliveries");
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let (status, j) = call("GET", format!("{deliveries}?status=failed"), "", None).await;
        assert_eq!(status, 200, "{j}");
        let list = j["deliveries"].as_array().unwrap().clone();
        if list.len() >= 2 {
            break list;
        }
        assert!(Instant::now() < deadline, "no failed deliveries: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for d in &failed {
        assert_eq!(d["attempts"], 5, "{d}");
        assert_eq!(d["last_status"], 0, "{d}");
        let e = d["last_error"].as_str().unwrap();
        assert!(e.contains("certificate") && e.contains("UnknownIssuer"), "{d}");
        assert_eq!(d["event_id"], event.as_str());
    }
    assert!(log.lock().unwrap().is_empty(), "a request got through an untrusted TLS connection");
    let (status, bad) = call("GET", format!("{deliveries}?status=lost"), "", None).await;
    assert_eq!(status, 400, "{bad}");

    // Redelivery puts one back in the queue, as pending.
    let one = failed[0]["delivery_id"].as_str().unwrap();
    let (status, d) = call("POST", format!("/api/webhook-deliveries/{one}/redeliver"), "again-1", None).await;
    assert_eq!((status, d["status"].as_str()), (200, Some("pending")), "{d}");
    // Rotation: a new secret.
    let (status, rotated) = call("POST", format!("/api/webhooks/{id}/rotate-secret"), "rotate-1", None).await;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_") && rotated["secret"] != secret.as_str(), "{rotated}");
    // Deletion: the endpoint stays listed, with the time it was deleted.
    let (status, gone) = call("DELETE", format!("/api/webhooks/{id}"), "delete-1", None).await;
    assert_eq!(status, 200, "{gone}");
    assert!(gone["deleted_at"].is_string(), "{gone}");
    let (_, listed) = call("GET", hooks, "", None).await;
    assert!(listed["endpoints"][0]["deleted_at"].is_string(), "{listed}");
    let (status, j) = call("POST", format!("/api/webhooks/{id}/rotate-secret"), "rotate-2", None).await;
    assert_eq!((status, j["error"]["reason"].as_str()), (409, Some("WEBHOOK_DELETED")), "{j}");
    app.stop().await;
}
