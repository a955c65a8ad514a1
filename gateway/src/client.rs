//! A small client in the same binary, so a newcomer can try Usher without a
//! gRPC tool: `usher events`, `usher seats EVENT`, `usher hold EVENT SEAT...`.

use std::collections::BTreeMap;

use anyhow::Context;
use tonic::transport::Channel;
use usher_proto::v1::{self as pb, catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient};

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
