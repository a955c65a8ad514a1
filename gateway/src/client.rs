//! A small client in the same binary, so a newcomer can try Usher without a
//! gRPC tool: `usher events`, `usher seats EVENT`, `usher hold EVENT SEAT...`,
//! `usher order HOLD --email ...`, `usher pay ORDER CARD`, `usher tickets ORDER`.

use std::collections::BTreeMap;

use anyhow::Context;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use usher_actors::local_time;
use usher_engine::Millis;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, check_in_service_client::CheckInServiceClient,
    fulfillment_service_client::FulfillmentServiceClient, identity_service_client::IdentityServiceClient,
    inventory_service_client::InventoryServiceClient, ordering_service_client::OrderingServiceClient,
    payment_service_client::PaymentServiceClient,
};

/// Sends `authorization: Bearer <token>` with every call, when there is one.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Bearer> {
        match token.filter(|t| !t.is_empty()) {
            None => Ok(Bearer(None)),
            Some(t) => Ok(Bearer(Some(format!("Bearer {t}").parse().context("the token has characters a header cannot carry")?))),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connection that authenticates every call.
pub type Ch = InterceptedService<Channel, Bearer>;

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let url = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    Channel::from_shared(url.clone())?.connect().await.with_context(|| format!("connecting to {url} (is `usher serve` running?)"))
}

/// Connects with `token`, or else the saved sign-in for `addr` (refreshed
/// when its access token is about to expire), or else anonymously.
pub async fn connect(addr: &str, token: Option<&str>) -> anyhow::Result<Ch> {
    let ch = channel(addr).await?;
    let token = match token.filter(|t| !t.is_empty()) {
        Some(t) => Some(t.to_owned()),
        None => saved_token(&ch, addr).await?,
    };
    Ok(InterceptedService::new(ch, Bearer::new(token.as_deref())?))
}

// ---------------------------------------------------------------------------
// Signing in: the session is kept in the user's config directory, mode 0600.

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    addr: String,
    access_token: String,
    access_expires_at: i64,
    refresh_token: String,
}

/// `$XDG_CONFIG_HOME/usher/session.json`, or `~/.config/usher/session.json`.
fn session_file() -> anyhow::Result<std::path::PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --token instead")?).join(".config"),
    };
    Ok(base.join("usher").join("session.json"))
}

fn save(s: &Saved) -> anyhow::Result<std::path::PathBuf> {
    let path = session_file()?;
    crate::auth::secrets::write_private(&path, &serde_json::to_string(s)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn saved_token(ch: &Channel, addr: &str) -> anyhow::Result<Option<String>> {
    let Ok(path) = session_file() else { return Ok(None) };
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let Ok(saved) = serde_json::from_str::<Saved>(&text) else { return Ok(None) };
    if saved.addr != addr {
        return Ok(None);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    if saved.access_expires_at > now + 30 {
        return Ok(Some(saved.access_token));
    }
    let mut c = IdentityServiceClient::new(ch.clone());
    let s = c
        .refresh(pb::RefreshRequest { refresh_token: saved.refresh_token })
        .await
        .map_err(|e| anyhow::anyhow!("the saved sign-in has ended ({}); run `usher login` again", e.message()))?
        .into_inner();
    save(&saved_of(addr, &s))?;
    Ok(Some(s.access_token))
}

fn saved_of(addr: &str, s: &pb::Session) -> Saved {
    Saved {
        addr: addr.to_owned(),
        access_token: s.access_token.clone(),
        access_expires_at: s.access_expires_at.as_ref().map_or(0, |t| t.seconds),
        refresh_token: s.refresh_token.clone(),
    }
}

fn print_me(m: &pb::MeResponse) {
    println!("{} {}{}", m.kind, if m.email.is_empty() { &m.id } else { &m.email }, if m.admin { " (platform administrator)" } else { "" });
    if !m.customer_id.is_empty() {
        println!("  customer {}", m.customer_id);
    }
    for ms in &m.memberships {
        println!("  {} of {} ({})", ms.role, ms.org_name, ms.org_id);
    }
    if !m.scopes.is_empty() {
        println!("  scopes   {}", m.scopes.join(" "));
    }
}

/// `usher login`: signs in and keeps the session for later commands.
pub async fn login(addr: &str, email: String, password: String) -> anyhow::Result<()> {
    let mut c = IdentityServiceClient::new(channel(addr).await?);
    let s = c.log_in(pb::LogInRequest { email, password }).await.map_err(fail)?.into_inner();
    let path = save(&saved_of(addr, &s))?;
    if let Some(m) = &s.me {
        print_me(m);
    }
    println!("signed in; the session is kept in {}", path.display());
    Ok(())
}

/// `usher logout`: revokes the saved session and forgets it.
pub async fn logout(addr: &str) -> anyhow::Result<()> {
    let path = session_file()?;
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(saved) = serde_json::from_str::<Saved>(&text)
    {
        let mut c = IdentityServiceClient::new(channel(addr).await?);
        c.log_out(pb::LogOutRequest { refresh_token: saved.refresh_token }).await.map_err(fail)?;
        std::fs::remove_file(&path)?;
    }
    println!("signed out");
    Ok(())
}

pub async fn whoami(ch: Ch) -> anyhow::Result<()> {
    let mut c = IdentityServiceClient::new(ch);
    print_me(&c.me(pb::MeRequest {}).await.map_err(fail)?.into_inner());
    Ok(())
}

fn fail(s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::Unauthenticated {
        return anyhow::anyhow!("{}: sign in with `usher login EMAIL`, or pass --token (an API key or an access token)", s.message());
    }
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(|t| format!("{}", t)).unwrap_or_default()
}

pub fn new_key() -> String {
    format!("cli-{}", uuid::Uuid::new_v4())
}

pub async fn events(ch: Ch) -> anyhow::Result<()> {
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
            let when = e.starts_at.as_ref().map(|t| local_time::written(Millis(t.seconds * 1000), &e.time_zone)).unwrap_or_default();
            println!("{:<36}  {:<13}  {:<48}  {:>6}  {} @ {}", e.event_id, status, when, e.seat_count, e.name, e.venue_name);
        }
        if r.next_page_token.is_empty() {
            return Ok(());
        }
        token = r.next_page_token;
    }
}

pub async fn seats(ch: Ch, event_id: String) -> anyhow::Result<()> {
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
        let price = seats.first().and_then(|s| s.price.as_ref()).map(|p| written(p.amount_minor, &p.currency)).unwrap_or_default();
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
        println!("  total    {}", written(t.amount_minor, &t.currency));
    }
    println!("  expires  {}", time(&h.expires_at));
}

pub async fn hold(ch: Ch, event_id: String, seat_ids: Vec<String>, customer_id: String, key: String) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    let h = c.hold_seats(pb::HoldSeatsRequest { idempotency_key: key, event_id, customer_id, seat_ids }).await.map_err(fail)?.into_inner();
    print_hold(&h);
    Ok(())
}

pub async fn best(ch: Ch, r: pb::HoldBestAvailableRequest) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    print_hold(&c.hold_best_available(r).await.map_err(fail)?.into_inner());
    Ok(())
}

pub async fn release(ch: Ch, hold_id: String, key: String) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    let h =
        c.release_hold(pb::ReleaseHoldRequest { idempotency_key: key, hold_id, ..Default::default() }).await.map_err(fail)?.into_inner();
    print_hold(&h);
    Ok(())
}

pub async fn show_hold(ch: Ch, hold_id: String) -> anyhow::Result<()> {
    let mut c = InventoryServiceClient::new(ch);
    print_hold(&c.get_hold(pb::GetHoldRequest { hold_id, event_id: String::new() }).await.map_err(fail)?.into_inner());
    Ok(())
}

// ---------------------------------------------------------------------------
// Buying: order, pay, tickets, scan.

fn money(m: &Option<pb::Money>) -> String {
    m.as_ref().map(|t| written(t.amount_minor, &t.currency)).unwrap_or_default()
}

/// An amount as people read it, in its currency's own decimals (the engine's
/// one rule: `JPY 1,500`, `EUR 50.00`); a code the engine cannot read is
/// printed as the server sent it.
fn written(minor: i64, currency: &str) -> String {
    match usher_engine::Currency::from_stored(currency) {
        Ok(currency) => usher_engine::Money { minor, currency }.to_string(),
        Err(_) => format!("{minor} {currency} (minor units)"),
    }
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

pub async fn order(ch: Ch, hold_ids: Vec<String>, customer_id: String, email: String, key: String) -> anyhow::Result<()> {
    let mut c = OrderingServiceClient::new(ch);
    let o = c.create_order(pb::CreateOrderRequest { idempotency_key: key, customer_id, email, hold_ids }).await.map_err(fail)?.into_inner();
    print_order(&o);
    Ok(())
}

pub async fn show_order(ch: Ch, order_id: String) -> anyhow::Result<()> {
    let mut c = OrderingServiceClient::new(ch);
    print_order(&c.get_order(pb::GetOrderRequest { order_id }).await.map_err(fail)?.into_inner());
    Ok(())
}

pub async fn cancel_order(ch: Ch, order_id: String, customer_id: String, key: String) -> anyhow::Result<()> {
    let mut c = OrderingServiceClient::new(ch);
    let o = c.cancel_order(pb::CancelOrderRequest { idempotency_key: key, order_id, customer_id }).await.map_err(fail)?.into_inner();
    print_order(&o);
    Ok(())
}

/// Pays and, unless the payment settles slowly, waits until the order is
/// fulfilled (tickets issued, email sent) or has ended otherwise.
pub async fn pay(ch: Ch, order_id: String, card_number: String, key: String) -> anyhow::Result<()> {
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

pub async fn tickets(ch: Ch, order_id: String, pdf: Option<std::path::PathBuf>) -> anyhow::Result<()> {
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

pub async fn scan(ch: Ch, event_id: String, code: String, gate: String, key: String) -> anyhow::Result<()> {
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

/// `usher reports sales EVENT`: the read model's figures as tables.
pub async fn sales_report(ch: Ch, event_id: String) -> anyhow::Result<()> {
    let mut c = usher_proto::v1::reporting_service_client::ReportingServiceClient::new(ch);
    let r = c.get_sales_report(pb::GetSalesReportRequest { event_id }).await.map_err(fail)?.into_inner();
    println!("event {}: {} seats sold, {} held right now", r.event_id, r.seats_sold, r.seats_held_now);
    println!("{:<12} {:<11} {:>8} {:>8} {:>8} {:>8} {:>8}", "CATEGORY", "CHANNEL", "HELD", "RELEASED", "EXPIRED", "SOLD", "REFUNDED");
    for s in &r.seats {
        println!("{:<12} {:<11} {:>8} {:>8} {:>8} {:>8} {:>8}", s.category, s.channel, s.held, s.released, s.expired, s.sold, s.refunded);
    }
    for x in &r.revenue {
        println!("revenue {:<11} {} gross {} refunded {} (minor units)", x.channel, x.currency, x.gross_minor, x.refunded_minor);
    }
    for o in &r.orders {
        println!("orders {:<16} {}", o.status, o.orders);
    }
    for g in &r.checkins {
        let hour = g.hour.as_ref().map_or(0, |t| t.seconds * 1000);
        println!("check-ins {} at {} {}", g.gate, usher_adapters::kafka::rfc3339(Millis(hour)), g.scans);
    }
    Ok(())
}
