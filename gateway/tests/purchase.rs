//! From a hold to a ticket in the inbox, end to end through gRPC against the
//! real app (SQLite and PostgreSQL), a real SMTP server (aiosmtpd), and real
//! PDF and QR tools (pdftotext, pdftoppm, zbarimg); and every failure path.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use tokio::process::{Child, Command};
use tonic::Code;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, check_in_service_client::CheckInServiceClient,
    fulfillment_service_client::FulfillmentServiceClient, inventory_service_client::InventoryServiceClient,
    ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient,
};

const CARD_OK: &str = "4242 4242 4242 4242";
const CARD_DECLINED: &str = "4000 0000 0000 0002";
const CARD_NO_FUNDS: &str = "4000 0000 0000 9995";
const CARD_SILENT_DECLINED: &str = "4000 0000 0000 0119";
const CARD_SILENT_AUTHORIZED: &str = "4000 0000 0000 0259";
const CARD_SLOW: &str = "4000 0000 0000 3220";

both_backends!(
    a_purchase_ends_in_the_inbox_with_tickets_that_scan_once,
    a_declined_payment_releases_the_seats_and_fails_the_order,
    a_payment_that_succeeds_after_its_hold_expired_is_refunded_and_never_sold,
    a_provider_that_never_answers_is_resolved_by_its_status,
    cancelling_an_event_refunds_every_paid_order,
    money_is_written_in_each_currencys_own_units,
    prices_and_totals_beyond_their_ceilings_are_refused_and_nothing_is_stored,
    tickets_and_emails_show_the_venues_local_time_across_a_daylight_saving_change,
);

// --- helpers -------------------------------------------------------------

/// A real SMTP server (aiosmtpd) writing each message into a directory.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    async fn start(port: u16, dir: &Path) -> SmtpSink {
        std::fs::create_dir_all(dir).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smtp-sink.py");
        let mut cmd = Command::new(python());
        cmd.args([script, "--port", &port.to_string(), "--dir", dir.to_str().unwrap()]).stderr(Stdio::inherit());
        // No line within 20 s: is aiosmtpd installed? (scripts/test installs it)
        let (child, rest) = spawn_until_line(cmd, "listening 127.0.0.1:", Duration::from_secs(20)).await;
        SmtpSink { child, port: rest.trim().parse().unwrap(), dir: dir.to_owned() }
    }

    fn messages(&self) -> Vec<PathBuf> {
        eml_files(&self.dir)
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The Python that has aiosmtpd; scripts/test exports it.
fn python() -> String {
    std::env::var("USHER_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Clients {
    inv: InventoryServiceClient<Ch>,
    ord: OrderingServiceClient<Ch>,
    pay: PaymentServiceClient<Ch>,
    ful: FulfillmentServiceClient<Ch>,
    gate: CheckInServiceClient<Ch>,
    cat: CatalogServiceClient<Ch>,
}

/// Every client as the test organization's owner, who sells at the counter
/// for customers named by reference and scans at any gate.
async fn clients(app: &TestApp) -> Clients {
    let ch = app.channel().await;
    Clients {
        inv: InventoryServiceClient::new(ch.clone()),
        ord: OrderingServiceClient::new(ch.clone()),
        pay: PaymentServiceClient::new(ch.clone()),
        ful: FulfillmentServiceClient::new(ch.clone()),
        gate: CheckInServiceClient::new(ch.clone()),
        cat: CatalogServiceClient::new(ch),
    }
}

async fn event_with_hold_seconds(c: &mut Clients, hold_seconds: u32) -> String {
    let v = create_venue(&mut c.cat, 2, 3, 10).await;
    c.cat.create_event(event_request(&v.venue_id, hold_seconds)).await.unwrap().into_inner().event_id
}

/// The app on `b`, every client as its owner, and an event on sale whose
/// holds last `hold_seconds` (0: the default).
async fn shop(b: Backend, hold_seconds: u32) -> (TestApp, Clients, String) {
    let app = TestApp::spawn(b).await;
    let mut c = clients(&app).await;
    let event = event_with_hold_seconds(&mut c, hold_seconds).await;
    (app, c, event)
}

async fn hold(c: &mut Clients, event: &str, customer: &str, seats: &[&str]) -> pb::Hold {
    c.inv.hold_seats(hold_req(event, customer, seats)).await.unwrap().into_inner()
}

async fn order(c: &mut Clients, customer: &str, holds: &[&pb::Hold]) -> pb::Order {
    let r = order_req(customer, &format!("{customer}@example.com"), holds.iter().map(|h| h.hold_id.clone()).collect());
    c.ord.create_order(r).await.unwrap().into_inner()
}

/// Pays with `card`, waiting up to `wait_ms` for the provider.
async fn try_pay(c: &mut Clients, order_id: &str, card: &str, wait_ms: u32) -> Result<pb::PayOrderResponse, tonic::Status> {
    c.pay.pay_order(pay_req(order_id, card, wait_ms)).await.map(tonic::Response::into_inner)
}

async fn pay(c: &mut Clients, order_id: &str, card: &str) -> pb::PayOrderResponse {
    try_pay(c, order_id, card, 15_000).await.unwrap()
}

/// `customer` holds `seats`, orders and pays them with a good card: the
/// order once fulfilled (within 60 s).
async fn bought(c: &mut Clients, event: &str, customer: &str, seats: &[&str]) -> pb::Order {
    let h = hold(c, event, customer, seats).await;
    let o = order(c, customer, &[&h]).await;
    pay(c, &o.order_id, CARD_OK).await;
    wait_for(c, &o.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(60)).await
}

async fn tickets(c: &mut Clients, order_id: &str) -> Vec<pb::Ticket> {
    c.ful.list_tickets(pb::ListTicketsRequest { order_id: order_id.into() }).await.unwrap().into_inner().tickets
}

fn status(o: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(o.status).unwrap()
}

/// Polls until the order reaches `want` and its saga is done.
async fn wait_for(c: &mut Clients, order_id: &str, want: pb::OrderStatus, within: Duration) -> pb::Order {
    let t = Instant::now();
    loop {
        let o = c.ord.get_order(pb::GetOrderRequest { order_id: order_id.into() }).await.unwrap().into_inner();
        if status(&o) == want && o.step == "done" {
            return o;
        }
        assert!(t.elapsed() < within, "order {order_id} is {:?} at step {} after {within:?}, expected {want:?}", status(&o), o.step);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn public_key(c: &mut Clients) -> usher_engine::VerifyingKey {
    let k = c.ful.get_public_key(pb::GetPublicKeyRequest {}).await.unwrap().into_inner();
    assert_eq!(k.algorithm, "Ed25519");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(k.public_key).unwrap();
    usher_engine::VerifyingKey::from_bytes(&bytes.try_into().unwrap()).unwrap()
}

async fn scan(c: &mut Clients, event: &str, code: &str, gate: &str) -> pb::ScanResult {
    c.gate
        .scan(pb::ScanRequest { idempotency_key: key(), code: code.into(), event_id: event.into(), gate: gate.into() })
        .await
        .unwrap()
        .into_inner()
}

fn verdict(r: &pb::ScanResult) -> pb::ScanVerdict {
    pb::ScanVerdict::try_from(r.verdict).unwrap()
}

/// The PDF attached to an email file, via Python's email parser.
fn pdf_attachment(eml: &Path, out: &Path) {
    let script = "import email,sys\nm=email.message_from_binary_file(open(sys.argv[1],'rb'))\nparts=[p for p in m.walk() if p.get_content_type()=='application/pdf']\nassert len(parts)==1, len(parts)\nopen(sys.argv[2],'wb').write(parts[0].get_payload(decode=True))\n";
    run(&python(), &["-c", script, eml.to_str().unwrap(), out.to_str().unwrap()]);
}

/// The ticket codes in a PDF's QR codes, decoded from its rendered pages.
fn qr_codes(pdf: &Path) -> Vec<String> {
    let prefix = pdf.with_extension("page");
    run("pdftoppm", &["-r", "150", "-png", pdf.to_str().unwrap(), prefix.to_str().unwrap()]);
    let dir = pdf.parent().unwrap();
    let stem = prefix.file_name().unwrap().to_str().unwrap().to_owned();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&stem) && p.extension().is_some_and(|x| x == "png"))
        .collect();
    pages.sort();
    let mut codes = Vec::new();
    for p in pages {
        let out = run("zbarimg", &["--raw", "-q", p.to_str().unwrap()]);
        codes.extend(out.lines().map(str::to_owned));
    }
    codes
}

// --- scenarios -----------------------------------------------------------

async fn a_purchase_ends_in_the_inbox_with_tickets_that_scan_once(b: Backend) {
    let db = TestDb::fresh(b).await;
    let sink = SmtpSink::start(0, &db.data_dir.join("smtp")).await;
    let mut cfg = db.config();
    cfg.smtp_url = format!("smtp://127.0.0.1:{}", sink.port);
    let app = TestApp::spawn_with(db, cfg).await;
    let mut c = clients(&app).await;
    let event = event_with_hold_seconds(&mut c, 0).await;
    let h1 = hold(&mut c, &event, "alice", &["A-1-1", "A-1-2"]).await;
    let h2 = hold(&mut c, &event, "alice", &["B-2-5"]).await;
    let req = order_req("alice", "alice@example.com", vec![h1.hold_id.clone(), h2.hold_id.clone()]);
    let o = c.ord.create_order(req.clone()).await.unwrap().into_inner();
    // Prices come from the event: A is P1 (90.00), B is P2 (50.00).
    assert_eq!(o.total.as_ref().unwrap().amount_minor, 9_000 * 2 + 5_000);
    assert_eq!(status(&o), pb::OrderStatus::PendingPayment);
    // A retry gets the same order; a hold can't go into a second order.
    assert_eq!(c.ord.create_order(req.clone()).await.unwrap().into_inner().order_id, o.order_id);
    let again = pb::CreateOrderRequest { idempotency_key: key(), ..req.clone() };
    let e = c.ord.create_order(again).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "HOLD_IN_ORDER"), "{e:?}");

    let paid = pay(&mut c, &o.order_id, CARD_OK).await;
    assert!(paid.settled);
    assert_eq!(pb::PaymentStatus::try_from(paid.payment.unwrap().status).unwrap(), pb::PaymentStatus::Captured);
    let done = wait_for(&mut c, &o.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(60)).await;
    assert_eq!(done.ticket_ids.len(), 3);

    // Exactly one email, with the PDF attached.
    let t = Instant::now();
    while sink.messages().is_empty() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "one email per order: {msgs:?}");
    let eml = std::fs::read_to_string(&msgs[0]).unwrap();
    assert!(eml.contains("alice@example.com"));
    let pdf = app.db.data_dir.join("attached.pdf");
    pdf_attachment(&msgs[0], &pdf);
    let text = run("pdftotext", &[pdf.to_str().unwrap(), "-"]);
    assert!(text.contains("Test Night"), "the PDF names the event: {text}");
    assert!(text.contains(&done.order_number), "the PDF carries the order number");
    for l in &done.lines {
        assert!(text.contains(&l.section) && text.contains(&l.row), "the PDF names seat {}: {text}", l.seat_id);
    }
    // The same PDF can be downloaded through gRPC.
    let mut stream = c.ful.download_tickets(pb::DownloadTicketsRequest { order_id: o.order_id.clone() }).await.unwrap().into_inner();
    let mut downloaded = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        downloaded.extend(chunk.data);
    }
    assert_eq!(downloaded, std::fs::read(&pdf).unwrap());

    // Every QR code is a ticket code that verifies offline, then scans once.
    let key_pub = public_key(&mut c).await;
    let mut codes = qr_codes(&pdf);
    codes.sort();
    let tickets = tickets(&mut c, &o.order_id).await;
    let mut issued: Vec<String> = tickets.iter().map(|t| t.code.clone()).collect();
    issued.sort();
    assert_eq!(codes, issued, "one QR code per ticket, carrying its code");
    for code in &codes {
        let claims = usher_engine::verify_ticket(&key_pub, code).expect("verifies against the published key");
        assert_eq!(claims.event_id.to_string(), event);
        let first = scan(&mut c, &event, code, "north-1").await;
        assert_eq!(verdict(&first), pb::ScanVerdict::Valid, "{first:?}");
        let second = scan(&mut c, &event, code, "south-2").await;
        assert_eq!(verdict(&second), pb::ScanVerdict::AlreadyUsed, "{second:?}");
        assert_eq!(second.first_gate, "north-1");
        assert!(second.first_scanned_at.is_some());
    }

    // Seats are sold; the outbox tells the story with every seat and hold.
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM seat_claims WHERE event_id = $1 AND kind = 'sold'", &[&event]).await, 3);
    for (topic, n) in [("order-created", 1), ("payment-succeeded", 1), ("ticket-issued", 3), ("order-fulfilled", 1)] {
        assert_eq!(app.db.payloads(topic, &event).await.len(), n, "{topic}");
    }
    let created: usher_proto::events::OrderCreated =
        prost::Message::decode(&app.db.payloads("order-created", &event).await[0][..]).unwrap();
    let r = created.order.unwrap();
    assert_eq!(r.hold_ids.len(), 2);
    assert_eq!(r.seats.len(), 3);
    // Orders are listed for the customer and for the event.
    let mine = c.ord.list_orders(pb::ListOrdersRequest { customer_id: "alice".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(mine.orders.len(), 1);
    let of_event = c.ord.list_orders(pb::ListOrdersRequest { event_id: event.clone(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(of_event.orders.len(), 1);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(sink.messages().len(), 1, "still exactly one email");
    app.stop().await;
    sink.kill().await;
}

async fn a_declined_payment_releases_the_seats_and_fails_the_order(b: Backend) {
    let (app, mut c, event) = shop(b, 0).await;
    for (i, (card, why)) in [(CARD_DECLINED, "card_declined"), (CARD_NO_FUNDS, "insufficient_funds")].into_iter().enumerate() {
        let customer = format!("bob{i}");
        let h = hold(&mut c, &event, &customer, &["A-2-1", "A-2-2"]).await;
        let o = order(&mut c, &customer, &[&h]).await;
        let r = pay(&mut c, &o.order_id, card).await;
        assert!(r.settled);
        let p = r.payment.unwrap();
        assert_eq!((pb::PaymentStatus::try_from(p.status).unwrap(), p.decline_reason.as_str()), (pb::PaymentStatus::Declined, why));
        let o = wait_for(&mut c, &o.order_id, pb::OrderStatus::PaymentFailed, Duration::from_secs(20)).await;
        assert!(o.ticket_ids.is_empty());
        // The seats are available again at once.
        assert_eq!(app.db.claims(&event).await.len(), 0);
        // A second payment of a failed order is refused and changes nothing.
        let e = try_pay(&mut c, &o.order_id, CARD_OK, 0).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "ORDER_CLOSED"));
        assert_eq!(app.db.payloads("payment-failed", &event).await.len(), i + 1);
    }
    // One "payment failed" email per order, in the maildir.
    let mails = maildir_at_least(&app.db, 2).await;
    assert_eq!(mails.len(), 2);
    assert!(mails.iter().all(|m| m.contains("Payment failed")), "{mails:?}");
    app.stop().await;
}

async fn a_payment_that_succeeds_after_its_hold_expired_is_refunded_and_never_sold(b: Backend) {
    // Holds live 1 s; the slow card answers after 2.5 s.
    let (app, mut c, event) = shop(b, 1).await;
    let h = hold(&mut c, &event, "carol", &["A-3-3"]).await;
    let o = order(&mut c, "carol", &[&h]).await;
    let r = try_pay(&mut c, &o.order_id, CARD_SLOW, 100).await.unwrap();
    assert!(!r.settled, "the slow card has not answered yet");
    let done = wait_for(&mut c, &o.order_id, pb::OrderStatus::Refunded, Duration::from_secs(30)).await;
    assert_eq!(pb::PaymentStatus::try_from(done.payments[0].status).unwrap(), pb::PaymentStatus::Refunded);
    assert!(done.ticket_ids.is_empty());
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM seat_claims WHERE event_id = $1 AND kind = 'sold'", &[&event]).await, 0);
    assert_eq!(app.db.payloads("order-refunded", &event).await.len(), 1);
    // The seat is free for the next customer.
    hold(&mut c, &event, "dave", &["A-3-3"]).await;
    app.stop().await;
}

async fn a_provider_that_never_answers_is_resolved_by_its_status(b: Backend) {
    // The test config waits 1 s for the provider before asking for the status.
    let (app, mut c, event) = shop(b, 0).await;
    let h = hold(&mut c, &event, "erin", &["B-1-1"]).await;
    let o = order(&mut c, "erin", &[&h]).await;
    pay(&mut c, &o.order_id, CARD_SILENT_DECLINED).await;
    let failed = wait_for(&mut c, &o.order_id, pb::OrderStatus::PaymentFailed, Duration::from_secs(30)).await;
    assert_eq!(failed.payments[0].decline_reason, "issuer_timeout");
    assert_eq!(app.db.claims(&event).await.len(), 0, "seats released");

    let h = hold(&mut c, &event, "frank", &["B-1-1"]).await;
    let o = order(&mut c, "frank", &[&h]).await;
    pay(&mut c, &o.order_id, CARD_SILENT_AUTHORIZED).await;
    let done = wait_for(&mut c, &o.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(60)).await;
    assert_eq!(done.ticket_ids.len(), 1);
    app.stop().await;
}

async fn cancelling_an_event_refunds_every_paid_order(b: Backend) {
    let (app, mut c, event) = shop(b, 0).await;
    let mut paid = Vec::new();
    for (i, seat) in ["A-1-1", "A-1-2"].iter().enumerate() {
        paid.push(bought(&mut c, &event, &format!("gina{i}"), &[seat]).await);
    }
    let h = hold(&mut c, &event, "hank", &["A-1-3"]).await;
    let pending = order(&mut c, "hank", &[&h]).await;
    let tickets = tickets(&mut c, &paid[0].order_id).await;
    c.cat.cancel_event(pb::EventCommandRequest { idempotency_key: key(), event_id: event.clone() }).await.unwrap();
    for o in &paid {
        let r = wait_for(&mut c, &o.order_id, pb::OrderStatus::Refunded, Duration::from_secs(30)).await;
        assert_eq!(pb::PaymentStatus::try_from(r.payments[0].status).unwrap(), pb::PaymentStatus::Refunded);
    }
    wait_for(&mut c, &pending.order_id, pb::OrderStatus::Cancelled, Duration::from_secs(30)).await;
    assert_eq!(app.db.payloads("order-refunded", &event).await.len(), 2);
    let r = scan(&mut c, &event, &tickets[0].code, "g1").await;
    assert_eq!(verdict(&r), pb::ScanVerdict::Refunded, "{r:?}");
    app.stop().await;
}

// --- single-backend scenarios ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gates_scanning_one_ticket_at_once_admit_it_exactly_once() {
    let (app, mut c, event) = shop(Backend::Sqlite, 0).await;
    let o = bought(&mut c, &event, "ivy", &["A-1-1", "A-1-2", "A-1-3"]).await;
    let tickets = tickets(&mut c, &o.order_id).await;
    for t in &tickets {
        let mut tasks = Vec::new();
        for g in 0..8 {
            let mut gate = CheckInServiceClient::new(app.channel().await);
            let req = pb::ScanRequest { idempotency_key: key(), code: t.code.clone(), event_id: event.clone(), gate: format!("gate-{g}") };
            tasks.push(tokio::spawn(async move { gate.scan(req).await.unwrap().into_inner() }));
        }
        let mut valid = 0;
        for task in tasks {
            match verdict(&task.await.unwrap()) {
                pb::ScanVerdict::Valid => valid += 1,
                pb::ScanVerdict::AlreadyUsed => {}
                v => panic!("unexpected verdict {v:?}"),
            }
        }
        assert_eq!(valid, 1, "exactly one gate admits ticket {}", t.ticket_id);
    }
    // A gate retrying its own scan (same key) gets its first answer.
    let req = pb::ScanRequest { idempotency_key: key(), code: tickets[0].code.clone(), event_id: event.clone(), gate: "x".into() };
    let other = CheckInServiceClient::new(app.channel().await).scan(req).await.unwrap().into_inner();
    assert_eq!(verdict(&other), pb::ScanVerdict::AlreadyUsed);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_truncated_and_foreign_codes_are_refused() {
    let (app, mut c, event) = shop(Backend::Sqlite, 0).await;
    let other_event = event_with_hold_seconds(&mut c, 0).await;
    let o = bought(&mut c, &event, "jo", &["A-1-1"]).await;
    let t = &tickets(&mut c, &o.order_id).await[0];
    let forger = usher_engine::SigningKey::from_bytes(&[9u8; 32]);
    let claims = usher_engine::verify_ticket(&public_key(&mut c).await, &t.code).unwrap();
    let forged = usher_engine::sign_ticket(&forger, claims.event_id, claims.ticket_id, claims.seat);
    let mut altered = t.code.clone().into_bytes();
    altered[60] = if altered[60] == b'A' { b'B' } else { b'A' };
    let cases = [
        (forged, pb::ScanVerdict::InvalidSignature),
        (String::from_utf8(altered).unwrap(), pb::ScanVerdict::InvalidSignature),
        (t.code[..t.code.len() - 10].to_owned(), pb::ScanVerdict::Malformed),
        ("https://example.com/not-a-ticket".to_owned(), pb::ScanVerdict::Malformed),
    ];
    for (code, want) in cases {
        assert_eq!(verdict(&scan(&mut c, &event, &code, "g").await), want, "{code}");
    }
    assert_eq!(verdict(&scan(&mut c, &other_event, &t.code, "g").await), pb::ScanVerdict::WrongEvent);
    // None of these admitted the ticket: the real scan is still the first.
    assert_eq!(verdict(&scan(&mut c, &event, &t.code, "g").await), pb::ScanVerdict::Valid);
    // A missing gate is bad input, not a verdict.
    let e = c
        .gate
        .scan(pb::ScanRequest { idempotency_key: key(), code: t.code.clone(), event_id: event.clone(), gate: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_expires_when_its_hold_runs_out_before_payment() {
    let (app, mut c, event) = shop(Backend::Sqlite, 1).await;
    let h = hold(&mut c, &event, "kim", &["A-1-1"]).await;
    let o = order(&mut c, "kim", &[&h]).await;
    let expired = wait_for(&mut c, &o.order_id, pb::OrderStatus::Expired, Duration::from_secs(20)).await;
    assert!(expired.payments.is_empty());
    let e = try_pay(&mut c, &o.order_id, CARD_OK, 0).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "ORDER_CLOSED"));
    assert_eq!(app.db.payloads("order-expired", &event).await.len(), 1);
    assert!(maildir_at_least(&app.db, 1).await[0].contains("expired"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_expires_on_time_after_a_restart() {
    // Unpaid orders wait without an actor; a restart must find them again.
    let (app, mut c, event) = shop(Backend::Sqlite, 5).await;
    let h = hold(&mut c, &event, "lou", &["A-2-2"]).await;
    let kept = hold(&mut c, &event, "max", &["A-2-3"]).await;
    let o = order(&mut c, "lou", &[&h]).await;
    let paid = order(&mut c, "max", &[&kept]).await;
    let app = TestApp::spawn_on(app.stop().await).await;
    let mut c = clients(&app).await;
    // One of the two is paid after the restart, the other expires on time.
    assert!(pay(&mut c, &paid.order_id, CARD_OK).await.settled);
    wait_for(&mut c, &paid.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(20)).await;
    wait_for(&mut c, &o.order_id, pb::OrderStatus::Expired, Duration::from_secs(20)).await;
    assert_eq!(app.db.payloads("order-expired", &event).await.len(), 1);
    let mails = maildir_at_least(&app.db, 2).await;
    assert_eq!(mails.len(), 2, "one confirmation, one expiry notice");
    assert!(mails.iter().any(|m| m.contains("expired")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_order_and_payment_input_gets_clear_errors_and_changes_nothing() {
    let (app, mut c, event) = shop(Backend::Sqlite, 0).await;
    let h = hold(&mut c, &event, "lee", &["A-1-1"]).await;
    let base = order_req("lee", "lee@example.com", vec![h.hold_id.clone()]);
    let cases = [
        (pb::CreateOrderRequest { email: "not-an-email".into(), ..base.clone() }, Code::InvalidArgument),
        (pb::CreateOrderRequest { hold_ids: vec![], ..base.clone() }, Code::InvalidArgument),
        (pb::CreateOrderRequest { hold_ids: vec![h.hold_id.clone(), h.hold_id.clone()], ..base.clone() }, Code::InvalidArgument),
        (pb::CreateOrderRequest { hold_ids: vec!["nope".into()], ..base.clone() }, Code::InvalidArgument),
        (pb::CreateOrderRequest { customer_id: "mallory".into(), ..base.clone() }, Code::NotFound),
        (pb::CreateOrderRequest { idempotency_key: String::new(), ..base.clone() }, Code::InvalidArgument),
    ];
    for (req, code) in cases {
        let e = c.ord.create_order(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(!e.message().is_empty());
    }
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM orders", &[]).await, 0, "nothing was written");
    let o = c.ord.create_order(base.clone()).await.unwrap().into_inner();
    // The same key for a different request.
    let e = c.ord.create_order(pb::CreateOrderRequest { email: "x@example.com".into(), ..base.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = try_pay(&mut c, &o.order_id, "4242 4242 4242 4241", 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("card_number"), "{e:?}");
    let e = c.ord.get_order(pb::GetOrderRequest { order_id: uuid::Uuid::new_v4().to_string() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A pay retried with its key is one payment, not two.
    let req = pay_req(&o.order_id, CARD_OK, 15_000);
    let first = c.pay.pay_order(req.clone()).await.unwrap().into_inner();
    let second = c.pay.pay_order(req).await.unwrap().into_inner();
    assert_eq!(first.payment.as_ref().unwrap().payment_id, second.payment.as_ref().unwrap().payment_id);
    let done = wait_for(&mut c, &o.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(60)).await;
    assert_eq!(done.payments.len(), 1);
    // Paid orders are refunded, not cancelled.
    let e = c
        .ord
        .cancel_order(pb::CancelOrderRequest { idempotency_key: key(), order_id: o.order_id.clone(), customer_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "ORDER_PAID"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_gives_its_seats_back() {
    let (app, mut c, event) = shop(Backend::Sqlite, 0).await;
    let h = hold(&mut c, &event, "max", &["A-1-1"]).await;
    let o = order(&mut c, "max", &[&h]).await;
    // Someone else (a guest of the storefront) is told the order does not exist.
    let guest = usher_proto::v1::identity_service_client::IdentityServiceClient::new(app.channel_as("").await)
        .start_guest_session(pb::StartGuestSessionRequest {})
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let e = OrderingServiceClient::new(app.channel_as(&guest).await)
        .cancel_order(pb::CancelOrderRequest { idempotency_key: key(), order_id: o.order_id.clone(), customer_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    c.ord
        .cancel_order(pb::CancelOrderRequest { idempotency_key: key(), order_id: o.order_id.clone(), customer_id: "max".into() })
        .await
        .unwrap();
    wait_for(&mut c, &o.order_id, pb::OrderStatus::Cancelled, Duration::from_secs(20)).await;
    assert_eq!(app.db.claims(&event).await.len(), 0);
    hold(&mut c, &event, "ned", &["A-1-1"]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_queued_while_smtp_is_down_arrives_once_it_is_back() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let port = free_port();
    let mut cfg = db.config();
    cfg.smtp_url = format!("smtp://127.0.0.1:{port}");
    let smtp_dir = db.data_dir.join("smtp");
    let app = TestApp::spawn_with(db, cfg).await;
    let mut c = clients(&app).await;
    let event = event_with_hold_seconds(&mut c, 0).await;
    let h = hold(&mut c, &event, "olga", &["A-1-1"]).await;
    let o = order(&mut c, "olga", &[&h]).await;
    pay(&mut c, &o.order_id, CARD_OK).await;
    // Tickets are issued, but the email cannot leave: the order waits, paid.
    let t = Instant::now();
    loop {
        let attempts = app.db.scalar("SELECT COALESCE(MAX(attempts), 0) FROM notifications WHERE kind = 'confirmation'", &[]).await;
        if attempts >= 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the postman keeps trying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = c.ord.get_order(pb::GetOrderRequest { order_id: o.order_id.clone() }).await.unwrap().into_inner();
    assert_eq!((status(&waiting), waiting.step.as_str()), (pb::OrderStatus::Paid, "notify"));
    assert_eq!(waiting.ticket_ids.len(), 1);
    let sink = SmtpSink::start(port, &smtp_dir).await;
    wait_for(&mut c, &o.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sink.messages().len(), 1, "delivered once the server is back, and only once");
    app.stop().await;
    sink.kill().await;
}

/// What a purchase leaves on disk is readable by the server's owner only,
/// and the payment ledger keeps no card number (issue 11, item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_a_purchase_leaves_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (app, mut c, event) = shop(Backend::Sqlite, 0).await;
    let h = hold(&mut c, &event, "una", &["A-1-1"]).await;
    let o = order(&mut c, "una", &[&h]).await;
    pay(&mut c, &o.order_id, "4242 4242 4242 4242").await;
    wait_for(&mut c, &o.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(30)).await;
    let dir = app.db.data_dir.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(dir.join("mail").join("new")).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no email");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the data directory");
    let mut files = vec![
        dir.join("usher.db"),
        dir.join("ticket-signing.key"),
        dir.join("payment-sim.jsonl"),
        dir.join("tickets").join(format!("{}.pdf", o.order_id)),
    ];
    files.extend(std::fs::read_dir(dir.join("mail").join("new")).unwrap().map(|e| e.unwrap().path()));
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let ledger = std::fs::read_to_string(dir.join("payment-sim.jsonl")).unwrap();
    assert!(!ledger.contains("4242424242424242") && ledger.contains("424242******4242"), "{ledger}");
    app.stop().await;
}

/// Addresses that no mail could ever reach are refused at the door, with
/// INVALID_ARGUMENT over gRPC and 400 over HTTP, and nothing is stored
/// (issue 11, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_email_could_never_be_delivered_is_refused_and_nothing_is_stored() {
    let (app, mut c, event) = shop(Backend::Sqlite, 0).await;
    let h = hold(&mut c, &event, "vic", &["A-1-1"]).await;
    let bad = ["a,b@x.co", "a<b@x.co", "a;b@x.co", "a(comment)@x.co", "a@[x.co]", "a@-x.co", "a..b@x.co"];
    for email in bad {
        let e = c.ord.create_order(order_req("vic", email, vec![h.hold_id.clone()])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{email}: {e:?}");
        assert!(e.message().starts_with("email:"), "{}", e.message());
        let body = serde_json::json!({"customer_id": "vic", "email": email, "hold_ids": [h.hold_id]}).to_string();
        let (status, text) =
            http(app.http, "POST", "/api/orders", &[("Content-Type", "application/json"), app.bearer_ref()], Some(&body)).await;
        assert_eq!(status, 400, "{email}: {text}");
    }
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM orders", &[]).await, 0, "nothing stored");
    // A deliverable address goes through.
    order(&mut c, "vic", &[&h]).await;
    app.stop().await;
}

/// An event in `currency` priced P1 = `p1`, P2 = `p2` minor units.
async fn event_in(c: &mut Clients, currency: &str, p1: i64, p2: i64) -> Result<String, tonic::Status> {
    let v = create_venue(&mut c.cat, 2, 3, 10).await;
    let mut r = event_request(&v.venue_id, 0);
    r.currency = currency.into();
    r.prices =
        vec![pb::CategoryPrice { category: "P1".into(), amount_minor: p1 }, pb::CategoryPrice { category: "P2".into(), amount_minor: p2 }];
    c.cat.create_event(r).await.map(|e| e.into_inner().event_id)
}

/// Amounts are written in the currency's own decimals (ISO 4217 exponent)
/// on the ticket PDF, in the email and in the JSON the storefront reads: the
/// yen has none, the Bahraini dinar three (issue 11, item 1).
async fn money_is_written_in_each_currencys_own_units(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut c = clients(&app).await;
    for (currency, p1, one, two, exponent) in [("JPY", 1_500, "JPY 1,500", "JPY 3,000", 0), ("BHD", 12_345, "BHD 12.345", "BHD 24.690", 3)]
    {
        let event = event_in(&mut c, currency, p1, 800).await.unwrap();
        let customer = format!("yen-{currency}");
        let h = hold(&mut c, &event, &customer, &["A-1-1", "A-1-2"]).await;
        assert_eq!(h.total.as_ref().unwrap().amount_minor, 2 * p1);
        let o = order(&mut c, &customer, &[&h]).await;
        pay(&mut c, &o.order_id, CARD_OK).await;
        wait_for(&mut c, &o.order_id, pb::OrderStatus::Fulfilled, Duration::from_secs(60)).await;
        let pdf = app.db.data_dir.join("tickets").join(format!("{}.pdf", o.order_id));
        let text = run("pdftotext", &[pdf.to_str().unwrap(), "-"]);
        assert_eq!(text.matches(one).count(), 2, "each ticket shows its price as {one}: {text}");
        let mail = mail_for(&app.db, &o.order_number).await;
        assert!(mail.contains(two), "the email gives the total as {two}: {mail}");
        let (status, json) = http(app.http, "GET", &format!("/api/events/{event}"), &[app.bearer_ref()], None).await;
        assert_eq!(status, 200, "{json}");
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["currency_exponent"], exponent, "{json}");
        let (_, order_json) = http(app.http, "GET", &format!("/api/orders/{}", o.order_id), &[app.bearer_ref()], None).await;
        let order_json: serde_json::Value = serde_json::from_str(&order_json).unwrap();
        assert_eq!((order_json["total_minor"].as_i64(), order_json["currency_exponent"].as_i64()), (Some(2 * p1), Some(exponent)));
    }
    app.stop().await;
}

/// Codes outside ISO 4217 and prices above the ceiling are refused when the
/// event is created; an order whose total would pass the order ceiling (or
/// wrap around, as two seats at 2^62 once did) is refused when it is created.
/// Nothing is stored by a refusal (issue 11, item 1).
async fn prices_and_totals_beyond_their_ceilings_are_refused_and_nothing_is_stored(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut c = clients(&app).await;
    let events_before = app.db.scalar("SELECT COUNT(*) FROM events", &[]).await;
    for (currency, p1, says) in [
        ("ABC", 100, "currency: ABC is not a currency code of ISO 4217"),
        ("XAU", 100, "currency: XAU (Gold (one troy ounce)) is not a currency tickets can be sold in"),
        ("EUR", 1 << 62, "prices: a price may be at most 100000000000 minor units (EUR 1,000,000,000.00)"),
        ("EUR", -1, "prices: a price may not be negative, got EUR -0.01"),
    ] {
        let e = event_in(&mut c, currency, p1, 100).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(says), "{currency} {p1}: {}", e.message());
    }
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM events", &[]).await, events_before, "no event stored");

    // Eleven seats at the price ceiling cost more than one order may.
    let event = event_in(&mut c, "EUR", usher_engine::limits::PRICE_MINOR_MAX, 100).await.unwrap();
    let six = hold(&mut c, &event, "rich", &["A-1-1", "A-1-2", "A-1-3", "A-1-4", "A-1-5", "A-1-6"]).await;
    let five = hold(&mut c, &event, "rich", &["A-2-1", "A-2-2", "A-2-3", "A-2-4", "A-2-5"]).await;
    let e = c.ord.create_order(order_req("rich", "rich@example.com", vec![six.hold_id.clone(), five.hold_id.clone()])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(e.message(), "hold_ids: the order would cost more than one order may, EUR 10,000,000,000.00");
    let body = serde_json::json!({"customer_id": "rich", "email": "rich@example.com", "hold_ids": [six.hold_id, five.hold_id]}).to_string();
    let headers = [("Content-Type", "application/json"), ("Idempotency-Key", "too-rich"), app.bearer_ref()];
    let (status, text) = http(app.http, "POST", "/api/orders", &headers, Some(&body)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("would cost more than one order may"), "{text}");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM orders", &[]).await, 0, "nothing stored");
    // Six are within it.
    order(&mut c, "rich", &[&six]).await;
    app.stop().await;
}

/// Events are shown in their venue's IANA time zone: two events an hour
/// apart across the end of summer time in Berlin both start at 02:30 local
/// time, one CEST and one CET, on the ticket, in the email and in the JSON
/// (issue 11, item 3). Zones the database does not know are refused.
async fn tickets_and_emails_show_the_venues_local_time_across_a_daylight_saving_change(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut c = clients(&app).await;
    let mut r = pb::CreateVenueRequest { time_zone: "Mars/Olympus_Mons".into(), ..venue_request(1, 2, 10) };
    let e = c.cat.create_venue(r.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("time_zone: \"Mars/Olympus_Mons\" is not a time zone of the IANA database"), "{}", e.message());
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM venues", &[]).await, 0);
    r.time_zone = "europe/berlin".into();
    r.idempotency_key = key();
    let venue = c.cat.create_venue(r).await.unwrap().into_inner();
    assert_eq!(venue.time_zone, "Europe/Berlin", "stored in its canonical spelling");
    // Summer time ends at 01:00 UTC on Sunday 31 October 2027.
    for (starts_utc, local) in
        [(1_824_942_600, "Sun 31 Oct 2027, 02:30 CEST (Europe/Berlin)"), (1_824_946_200, "Sun 31 Oct 2027, 02:30 CET (Europe/Berlin)")]
    {
        let mut er = event_request(&venue.venue_id, 0);
        er.starts_at = Some(prost_types::Timestamp { seconds: starts_utc, nanos: 0 });
        let event = c.cat.create_event(er).await.unwrap().into_inner();
        assert_eq!(event.time_zone, "Europe/Berlin");
        let o = bought(&mut c, &event.event_id, &format!("dst-{starts_utc}"), &["A-1-1"]).await;
        let pdf = app.db.data_dir.join("tickets").join(format!("{}.pdf", o.order_id));
        let text = run("pdftotext", &["-raw", pdf.to_str().unwrap(), "-"]);
        assert!(text.contains(local), "the ticket shows {local}: {text}");
        let mail = mail_for(&app.db, &o.order_number).await;
        assert!(mail.contains(local), "the email shows {local}: {mail}");
        let (_, json) = http(app.http, "GET", &format!("/api/events/{}", event.event_id), &[app.bearer_ref()], None).await;
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!((json["time_zone"].as_str(), json["starts_at_local"].as_str()), (Some("Europe/Berlin"), Some(local)), "{json}");
    }
    app.stop().await;
}
