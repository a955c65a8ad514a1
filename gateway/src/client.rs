//! A small client in the same binary, so a newcomer can try Usher without a
//! gRPC tool: `usher events`, `usher seats EVENT`, `usher hold EVENT SEAT...`,
//! `usher order HOLD --email ...`, `usher pay ORDER CARD`, `usher tickets ORDER`.

use std::collections::BTreeMap;

use anyhow::Context;
use tonic::transport::Channel;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, check_in_service_client::CheckInServiceClient,
    fulfillment_service_client::FulfillmentServiceClient, inventory_service_client::InventoryServiceClient,
    ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient,
};

pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let url = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    Channel::from_shared(url.clone())?.connect().await.with_context(|| format!("connecting to {url} (is `usher serve` running?)"))
}

fn fail(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(|t| format!("{}", t)).unwrap_or_default()
}

pub fn new_key() -> String {
    format!("cli-{}", uuid::Uuid::new_v4())
}

pub async fn events(ch: Channel) -> anyhow::Result<()> {
    let mut c = CatalogServiceClient::new(ch);
    let mut token = String::new();
    println!("{:<36}  {:<13}  {:<25}  {:>6}  NAME", "EVENT", "STATUS", "STARTS", "SEATS");
    loop {
        let r = c
            .list_events(pb::ListEventsRequest { page_size: 100, page_token: token, ..Default::default() })
            .await
            .map_err(fail)?
            .into_inner();
        for e in &r.events {
            let status = pb::EventStatus::try_from(e.status)
                .map(|s| s.as_str_name().trim_start_matches("EVENT_STATUS_").to_lowercase())
                .unwrap_or_default();
            println!("{:<36}  {:<13}  {:<25}  {:>6}  {} @ {}", e.event_id, status, time(&e.starts_at), e.seat_count, e.name, e.venue_name);
        }
        if r.next_page_token.is_empty() {
            return Ok(());
        }
        token = r.next_page_token;
    }
}

pub async fn seats(ch: Channel, event_id: String) -> anyhow::Result<()> {
    let mut c = CatalogServiceClient::new(ch);
    let m = c.get_seat_map(pb::GetSeatMapRequest { event_id }).await.map_err(fail)?.into_inner();
    // section -> row -> seats, in venue order.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut rows: BTreeMap<(usize, String), Vec<&pb::Seat>> = BTreeMap::new();
    for s in &m.seats {
        let k = (s.section.clone(), s.row.clone());
        let i = order.iter().position(|x| *x == k).unwrap_or_else(|| {
            order.push(k.clone());
            order.len() - 1
        });
        rows.entry((i, String::new())).or_default().push(s);
    }
    println!("legend: . available  h held  s sold  x blocked");
    for ((i, _), seats) in rows {
        let line: String = seats
            .iter()
            .map(|s| match pb::SeatStatus::try_from(s.status) {
                Ok(pb::SeatStatus::Available) => '.',
                Ok(pb::SeatStatus::Held) => 'h',
                Ok(pb::SeatStatus::Sold) => 's',
                _ => 'x',
            })
            .collect();
        let first = seats.first().map(|s| s.number).unwrap_or(1);
        let price = seats
            .first()
            .and_then(|s| s.price.as_ref())
            .map(|p| format!("{}.{:02} {}", p.amount_minor / 100, p.amount_minor % 100, p.currency))
            .unwrap_or_default();
        println!("{:>4}-{:<3} from {:>3}  {line}  {price}", order[i].0, order[i].1, first);
    }
    if let Some(n) = m.counts {
        println!("available {}  held {}  sold {}  blocked {}", n.available, n.held, n.sold, n.blocked);
    }
    Ok(())
}

pub fn print_hold(h: &pb::Hold) {
    let state =
        pb::HoldState::try_from(h.state).map(|s| s.as_str_name().trim_start_matches("HOLD_STATE_").to_lowercase()).unwrap_or_default();
    println!("hold {}  ({state})", h.hold_id);
    println!("  event    {}", h.event_id);
    println!("  customer {}", h.customer_id);
    println!("  seats    {}", h.seats.iter().map(|s| s.seat_id.as_str()).collect::<Vec<_>>().join(" "));
    if let Some(t) = &h.total {
        println!("  total    {}.{:02} {}", t.amount_minor / 100, t.amount_minor % 100, t.currency);
    }
    println!("  expires  {}", time(&h.expires_at));
}

pub async fn hold(ch: Channel, event_id: String, seat_ids: Vec<String>, customer_id: String, key: String) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    let h = c.hold_seats(pb::HoldSeatsRequest { idempotency_key: key, event_id, customer_id, seat_ids }).await.map_err(fail)?.into_inner();
    print_hold(&h);
    Ok(())
}

pub async fn best(ch: Channel, r: pb::HoldBestAvailableRequest) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    print_hold(&c.hold_best_available(r).await.map_err(fail)?.into_inner());
    Ok(())
}

pub async fn release(ch: Channel, hold_id: String, key: String) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    let h =
        c.release_hold(pb::ReleaseHoldRequest { idempotency_key: key, hold_id, ..Default::default() }).await.map_err(fail)?.into_inner();
    print_hold(&h);
    Ok(())
}

pub async fn show_hold(ch: Channel, hold_id: String) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    print_hold(&c.get_hold(pb::GetHoldRequest { hold_id, event_id: String::new() }).await.map_err(fail)?.into_inner());
    Ok(())
}

// ---------------------------------------------------------------------------
// Buying: order, pay, tickets, scan.

fn money(m: &Option<pb::Money>) -> String {
    m.as_ref().map(|t| format!("{}.{:02} {}", t.amount_minor / 100, t.amount_minor % 100, t.currency)).unwrap_or_default()
}

fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

pub fn print_order(o: &pb::Order) {
    let status = pb::OrderStatus::try_from(o.status).map(|s| enum_name(s.as_str_name(), "ORDER_STATUS_")).unwrap_or_default();
    println!("order {}  {}  ({status}, step {})", o.order_id, o.order_number, o.step);
    println!("  event    {}", o.event_id);
    println!("  customer {} <{}>", o.customer_id, o.email);
    println!("  seats    {}", o.lines.iter().map(|l| l.seat_id.as_str()).collect::<Vec<_>>().join(" "));
    println!("  total    {}", money(&o.total));
    if status == "pending_payment" {
        println!("  pay by   {}", time(&o.pay_by));
    }
    for p in &o.payments {
        let ps = pb::PaymentStatus::try_from(p.status).map(|s| enum_name(s.as_str_name(), "PAYMENT_STATUS_")).unwrap_or_default();
        let why = if p.decline_reason.is_empty() { String::new() } else { format!(" ({})", p.decline_reason) };
        println!("  payment  {} card …{} {}{why}", p.payment_id, p.card_last4, ps);
    }
    if !o.ticket_ids.is_empty() {
        println!("  tickets  {}", o.ticket_ids.len());
    }
    if !o.note.is_empty() {
        println!("  note     {}", o.note);
    }
}

pub async fn order(ch: Channel, hold_ids: Vec<String>, customer_id: String, email: String, key: String) -> anyhow::Result<()> {
    let mut c = OrderingServiceClient::new(ch);
    let o = c.create_order(pb::CreateOrderRequest { idempotency_key: key, customer_id, email, hold_ids }).await.map_err(fail)?.into_inner();
    print_order(&o);
    Ok(())
}

pub async fn show_order(ch: Channel, order_id: String) -> anyhow::Result<()> {
    let mut c = OrderingServiceClient::new(ch);
    print_order(&c.get_order(pb::GetOrderRequest { order_id }).await.map_err(fail)?.into_inner());
    Ok(())
}

pub async fn cancel_order(ch: Channel, order_id: String, customer_id: String, key: String) -> anyhow::Result<()> {
    let mut c = OrderingServiceClient::new(ch);
    let o = c.cancel_order(pb::CancelOrderRequest { idempotency_key: key, order_id, customer_id }).await.map_err(fail)?.into_inner();
    print_order(&o);
    Ok(())
}

/// Pays and, unless the payment settles slowly, waits until the order is
/// fulfilled (tickets issued, email sent) or has ended otherwise.
pub async fn pay(ch: Channel, order_id: String, card_number: String, key: String) -> anyhow::Result<()> {
    let mut p = PaymentServiceClient::new(ch.clone());
    let r = p
        .pay_order(pb::PayOrderRequest { idempotency_key: key, order_id: order_id.clone(), card_number, wait_ms: 30_000 })
        .await
        .map_err(fail)?
        .into_inner();
    let mut o = r.order.unwrap_or_default();
    let mut c = OrderingServiceClient::new(ch);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while o.status == pb::OrderStatus::Paid as i32 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        o = c.get_order(pb::GetOrderRequest { order_id: order_id.clone() }).await.map_err(fail)?.into_inner();
    }
    print_order(&o);
    Ok(())
}

pub async fn tickets(ch: Channel, order_id: String, pdf: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let mut f = FulfillmentServiceClient::new(ch);
    let r = f.list_tickets(pb::ListTicketsRequest { order_id: order_id.clone() }).await.map_err(fail)?.into_inner();
    for t in &r.tickets {
        let st = pb::TicketStatus::try_from(t.status).map(|s| enum_name(s.as_str_name(), "TICKET_STATUS_")).unwrap_or_default();
        println!("{}  {:<10} {:<8} {:>12}  {}", t.ticket_id, t.seat_id, st, money(&t.price), t.code);
    }
    if let Some(path) = pdf {
        let mut stream = f.download_tickets(pb::DownloadTicketsRequest { order_id }).await.map_err(fail)?.into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(fail)? {
            bytes.extend_from_slice(&chunk.data);
        }
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}

pub async fn scan(ch: Channel, event_id: String, code: String, gate: String, key: String) -> anyhow::Result<()> {
    let mut c = CheckInServiceClient::new(ch);
    let r = c.scan(pb::ScanRequest { idempotency_key: key, code, event_id, gate }).await.map_err(fail)?.into_inner();
    let v = pb::ScanVerdict::try_from(r.verdict).map(|s| enum_name(s.as_str_name(), "SCAN_VERDICT_")).unwrap_or_default();
    println!("{v}: {}", r.message);
    if !r.seat_id.is_empty() {
        println!("  seat     {}", r.seat_id);
    }
    if !r.first_gate.is_empty() {
        println!("  first    {} at gate {}", time(&r.first_scanned_at), r.first_gate);
    }
    Ok(())
}
