//! The purchase funnel (hold → order → pay → tickets → PDF → email) through
//! the real server, and the PDF renderer alone, in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use usher_actors::{OrderDoc, TicketDoc, TicketRenderer};
use usher_proto::v1::{
    self as pb, inventory_service_client::InventoryServiceClient, ordering_service_client::OrderingServiceClient,
    payment_service_client::PaymentServiceClient,
};

use usher_gateway::client::Ch;

use crate::{Args, Latency, Server, create_event, latency};

#[derive(Serialize, Clone, Debug, Default)]
pub struct Funnel {
    pub orders: usize,
    pub in_flight: usize,
    pub seats_per_order: u32,
    pub fulfilled: usize,
    pub failed: usize,
    /// First hold to last fulfilled order.
    pub wall_s: f64,
    /// Fulfilled orders per second; each is one PDF rendered and one email sent.
    pub orders_per_s: f64,
    pub tickets_per_s: f64,
    pub hold: Latency,
    pub create_order: Latency,
    /// PayOrder until the payment settled (authorized, seats sold, captured).
    pub pay: Latency,
    /// Payment settled until fulfilled (tickets, PDF, email delivered).
    pub fulfil: Latency,
    pub end_to_end: Latency,
    /// Messages in the maildir afterwards (must equal `fulfilled`).
    pub emails: usize,
    pub pdfs: usize,
    /// Orders created and left unpaid afterwards, each with its saga waiting
    /// for the payment, and the server's resident memory per such order.
    pub unpaid_orders: usize,
    pub bytes_per_unpaid_order: f64,
}

pub async fn funnel(args: &Args, server: &Server) -> anyhow::Result<Funnel> {
    // Buyers act through the partner key; the owner made the event.
    let chans = server.buyers(args.connections.min(16)).await?;
    // 20 sections × 20 rows × 20: room for every order without conflicts.
    let event = create_event(server, 20, 20, 20).await?;
    let n = args.funnel_orders;
    let seats = 2u32;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.funnel_in_flight {
        let (ch, next, event) = (chans[w % chans.len()].clone(), next.clone(), event.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                out.push(buy(&ch, &event, i, seats, start).await);
            }
        }));
    }
    let mut f = Funnel { orders: n, in_flight: args.funnel_in_flight, seats_per_order: seats, ..Default::default() };
    let (mut hold, mut order, mut pay, mut fulfil, mut total) = (vec![], vec![], vec![], vec![], vec![]);
    let mut last = Duration::ZERO;
    for t in tasks {
        for r in t.await? {
            match r {
                Ok(s) => {
                    f.fulfilled += 1;
                    hold.push(s[0]);
                    order.push(s[1]);
                    pay.push(s[2]);
                    fulfil.push(s[3]);
                    total.push(s[0] + s[1] + s[2] + s[3]);
                    last = last.max(Duration::from_micros(s[4]));
                }
                Err(e) => {
                    if f.failed < 3 {
                        eprintln!("funnel: an order failed: {e:#}");
                    }
                    f.failed += 1;
                }
            }
        }
    }
    f.wall_s = last.as_secs_f64();
    f.orders_per_s = f.fulfilled as f64 / f.wall_s.max(1e-9);
    f.tickets_per_s = f.orders_per_s * f64::from(seats);
    f.hold = latency(hold);
    f.create_order = latency(order);
    f.pay = latency(pay);
    f.fulfil = latency(fulfil);
    f.end_to_end = latency(total);
    // Memory of live sagas: orders that wait for their payment.
    let pid = server.pid().ok_or_else(|| anyhow::anyhow!("server pid"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = crate::rss_kib(pid)?;
    let unpaid = args.funnel_unpaid;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.funnel_in_flight {
        let (ch, next, event) = (chans[w % chans.len()].clone(), next.clone(), event.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= unpaid {
                    return Ok::<(), anyhow::Error>(());
                }
                unpaid_order(&ch, &event, i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = crate::rss_kib(pid)?;
    f.unpaid_orders = unpaid;
    f.bytes_per_unpaid_order = (after.saturating_sub(before) * 1024) as f64 / unpaid.max(1) as f64;
    if let Some(dir) = &server.data_dir {
        let count = |p: std::path::PathBuf| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
        f.emails = count(dir.join("mail").join("new"));
        f.pdfs = count(dir.join("tickets"));
    }
    Ok(f)
}

/// The best `quantity` seats of `event`, held for `customer`.
async fn hold_best(inv: &mut InventoryServiceClient<Ch>, event: &str, customer: &str, quantity: u32) -> anyhow::Result<pb::Hold> {
    let req = pb::HoldBestAvailableRequest {
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        event_id: event.into(),
        customer_id: customer.into(),
        quantity,
        ..Default::default()
    };
    Ok(inv.hold_best_available(req).await?.into_inner())
}

/// An order of `hold` for `customer`, the tickets sent to `customer@example.com`.
async fn order_of(ord: &mut OrderingServiceClient<Ch>, customer: &str, hold: pb::Hold) -> anyhow::Result<pb::Order> {
    let req = pb::CreateOrderRequest {
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        customer_id: customer.into(),
        email: format!("{customer}@example.com"),
        hold_ids: vec![hold.hold_id],
    };
    Ok(ord.create_order(req).await?.into_inner())
}

/// A hold of one seat and its order, left unpaid.
async fn unpaid_order(ch: &Ch, event: &str, i: usize) -> anyhow::Result<()> {
    let customer = format!("browser-{i}");
    let h = hold_best(&mut InventoryServiceClient::new(ch.clone()), event, &customer, 1).await?;
    order_of(&mut OrderingServiceClient::new(ch.clone()), &customer, h).await?;
    Ok(())
}

/// One buyer: the microseconds of each stage, and when it finished
/// (since the run began).
async fn buy(ch: &Ch, event: &str, i: usize, seats: u32, start: Instant) -> anyhow::Result<[u64; 5]> {
    let customer = format!("buyer-{i}");
    let mut inv = InventoryServiceClient::new(ch.clone());
    let mut ord = OrderingServiceClient::new(ch.clone());
    let mut pay = PaymentServiceClient::new(ch.clone());
    let t = Instant::now();
    let h = hold_best(&mut inv, event, &customer, seats).await?;
    let t_hold = t.elapsed();
    let t = Instant::now();
    let o = order_of(&mut ord, &customer, h).await?;
    let t_order = t.elapsed();
    let t = Instant::now();
    pay_order(&mut pay, &o.order_id).await?;
    let t_pay = t.elapsed();
    let t_fulfil = fulfilled(&mut ord, &o.order_id, Duration::from_secs(120)).await?;
    let us = |d: Duration| d.as_micros() as u64;
    Ok([us(t_hold), us(t_order), us(t_pay), us(t_fulfil), us(start.elapsed())])
}

/// Pays `order_id` with the simulator's accepted card and waits (up to
/// 60 s) until the payment settled.
async fn pay_order(pay: &mut PaymentServiceClient<Ch>, order_id: &str) -> anyhow::Result<()> {
    let p = pay
        .pay_order(pb::PayOrderRequest {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            order_id: order_id.into(),
            card_number: "4242424242424242".into(),
            wait_ms: 60_000,
        })
        .await?
        .into_inner();
    anyhow::ensure!(p.settled, "payment did not settle within 60 s");
    Ok(())
}

/// Polls the paid `order_id` until it is fulfilled (tickets, PDF, email),
/// at most `limit`: how long that took.
async fn fulfilled(ord: &mut OrderingServiceClient<Ch>, order_id: &str, limit: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let o = ord.get_order(pb::GetOrderRequest { order_id: order_id.into() }).await?.into_inner();
        if o.status == pb::OrderStatus::Fulfilled as i32 {
            return Ok(t.elapsed());
        }
        anyhow::ensure!(
            o.status == pb::OrderStatus::Paid as i32,
            "order {order_id} ended {:?}: {}",
            pb::OrderStatus::try_from(o.status),
            o.note
        );
        anyhow::ensure!(t.elapsed() < limit, "order {order_id} not fulfilled within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct PdfRender {
    /// Tickets (pages) per PDF in each measured set.
    pub tickets_per_pdf: Vec<(usize, PdfSet)>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct PdfSet {
    pub pdfs: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub bytes_median: usize,
    /// PDFs per second on one thread, and with `workers` threads at once.
    pub per_s_one_thread: f64,
    pub workers: usize,
    pub per_s_workers: f64,
}

fn doc(tickets: usize, n: usize) -> OrderDoc {
    OrderDoc {
        order_number: format!("U-BENC-{n:04}"),
        event_name: "Bench Night: The Onsale".into(),
        venue_name: "Bench Stadium".into(),
        starts_at: "2026-12-24 20:00 UTC".into(),
        holder: format!("buyer-{n} <buyer-{n}@example.com>"),
        tickets: (0..tickets)
            .map(|i| {
                let code_key = usher_engine::SigningKey::from_bytes(&[7u8; 32]);
                let ticket = usher_engine::TicketId(uuid::Uuid::from_u128((n * 100 + i) as u128));
                let event = usher_engine::EventId(uuid::Uuid::from_u128(1));
                TicketDoc {
                    ticket_id: ticket.to_string(),
                    section: "S1".into(),
                    row: "12".into(),
                    number: i as u32 + 1,
                    category: "Front".into(),
                    price: "EUR 120.00".into(),
                    code: usher_engine::sign_ticket(&code_key, event, ticket, usher_engine::SeatIdx(i as u32)),
                }
            })
            .collect(),
    }
}

/// Renders PDFs in this process with the server's renderer: first one at a
/// time (latency), then on `workers` threads at once (throughput).
pub fn pdf_render(args: &Args) -> anyhow::Result<PdfRender> {
    let r: Arc<dyn TicketRenderer> = Arc::new(usher_adapters::pdf::TypstRenderer::new());
    // Warm up: fonts parsed, template compiled once.
    r.render(&doc(1, 0))?;
    let mut out = PdfRender::default();
    for tickets in [1usize, 6] {
        let n = args.pdf_count;
        let mut ms = Vec::with_capacity(n);
        let mut bytes = Vec::with_capacity(n);
        let t = Instant::now();
        for i in 0..n {
            let t1 = Instant::now();
            let pdf = r.render(&doc(tickets, i))?;
            ms.push(t1.elapsed().as_micros() as u64);
            bytes.push(pdf.len());
        }
        let one = n as f64 / t.elapsed().as_secs_f64();
        let workers = args.pdf_workers.max(1);
        let t = Instant::now();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let hs: Vec<_> = (0..workers)
                .map(|w| {
                    let r = r.clone();
                    s.spawn(move || -> anyhow::Result<()> {
                        for i in (w..n).step_by(workers) {
                            r.render(&doc(tickets, i))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in hs {
                h.join().map_err(|_| anyhow::anyhow!("render thread panicked"))??;
            }
            Ok(())
        })?;
        let many = n as f64 / t.elapsed().as_secs_f64();
        bytes.sort_unstable();
        let l = latency(ms);
        out.tickets_per_pdf.push((
            tickets,
            PdfSet {
                pdfs: n,
                median_ms: l.p50_ms,
                p95_ms: l.p95_ms,
                bytes_median: bytes[bytes.len() / 2],
                per_s_one_thread: one,
                workers,
                per_s_workers: many,
            },
        ));
    }
    Ok(out)
}

/// Resident memory of the bench process across many renders (the
/// `pdf-memory` scenario): `renders` PDFs through the server's render queue
/// (`RenderQueue`, `workers` slots), 100 at a time, most of `small_tickets`
/// tickets and one in every 100 of `large_tickets`. With `blocking_pool`,
/// each render runs on tokio's blocking pool instead (as before the queue
/// had a thread per slot), `workers` at once.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PdfMemory {
    pub renders: usize,
    pub workers: usize,
    pub blocking_pool: bool,
    pub small_tickets: usize,
    pub large_tickets: usize,
    /// VmRSS before the first render (fonts parsed, one PDF warmed up).
    pub warm_rss_mib: f64,
    /// VmRSS after each 100 renders: (renders so far, MiB).
    pub rss_mib: Vec<(usize, f64)>,
    pub seconds: f64,
}

pub async fn pdf_memory(args: &Args) -> anyhow::Result<PdfMemory> {
    const BLOCK: usize = 100;
    let r: Arc<dyn TicketRenderer> = Arc::new(usher_adapters::pdf::TypstRenderer::new());
    r.render(&doc(1, 0))?;
    let workers = args.pdf_workers.max(1);
    let (small, large) = (6, args.pdf_large_tickets);
    let queue = usher_actors::RenderQueue::new(workers);
    let pool = Arc::new(tokio::sync::Semaphore::new(workers));
    let mut out = PdfMemory {
        renders: args.pdf_memory_renders,
        workers,
        blocking_pool: args.pdf_memory_blocking_pool,
        small_tickets: small,
        large_tickets: large,
        warm_rss_mib: crate::rss_kib(std::process::id())? as f64 / 1024.0,
        ..PdfMemory::default()
    };
    let t = Instant::now();
    for first in (0..args.pdf_memory_renders).step_by(BLOCK) {
        let n = BLOCK.min(args.pdf_memory_renders - first);
        let renders = (0..n).map(|i| {
            let d = doc(if i == BLOCK / 2 { large } else { small }, first + i);
            let (r, queue, pool, blocking_pool) = (r.clone(), queue.clone(), pool.clone(), args.pdf_memory_blocking_pool);
            tokio::spawn(async move {
                if blocking_pool {
                    let _slot = pool.acquire_owned().await?;
                    Ok(tokio::task::spawn_blocking(move || r.render(&d)).await??)
                } else {
                    Ok::<_, anyhow::Error>(queue.render(r, d).await?)
                }
            })
        });
        for render in renders.collect::<Vec<_>>() {
            render.await??;
        }
        let rss = crate::rss_kib(std::process::id())? as f64 / 1024.0;
        eprintln!("pdf-memory {} renders: {rss:.1} MiB resident", first + n);
        out.rss_mib.push((first + n, rss));
    }
    out.seconds = t.elapsed().as_secs_f64();
    Ok(out)
}

/// Large orders beside a small one, through the real server (issue 10:
/// twelve orders of 800 seats once took the server to 7.7 GiB resident,
/// kept afterwards, and a 1-seat order behind them waited 25.8 s for its
/// tickets).
#[derive(Serialize, Clone, Debug, Default)]
pub struct BigOrders {
    pub large_orders: usize,
    pub large_seats: u32,
    /// The server's resident memory before, at its peak (sampled every
    /// 100 ms), and 5 s after the last order was fulfilled.
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_mib: f64,
    /// From the small order's payment settling to its tickets, sent while
    /// the large ones render.
    pub small_fulfil_ms: f64,
    /// First large payment to the last large order fulfilled.
    pub large_wall_s: f64,
}

/// `BigOrders`: `large` orders of 800 seats (eight holds of 100) paid at
/// once, then, while they render, one order of one seat.
pub async fn big_orders(server: &Server, large: usize) -> anyhow::Result<BigOrders> {
    let chans = server.buyers(4).await?;
    let c = pb::catalog_service_client::CatalogServiceClient::new(server.owner().await?);
    // 40 sections × 20 rows × 20: room for every order.
    let v = crate::make_venue(&c, crate::venue(&server.org_id, 40, 20, 20)).await?;
    let req = pb::CreateEventRequest {
        sales_start: Some(crate::ts(-60)),
        sales_end: Some(crate::ts(86_400 * 29)),
        hold_seats_max: usher_engine::limits::HOLD_SEATS_MAX,
        ..crate::on_sale(v.venue_id, "Big orders", 86_400 * 30, [12_000, 6_000])
    };
    let event = crate::make_event(&c, req).await?.event_id;
    let pid = server.pid().ok_or_else(|| anyhow::anyhow!("server pid"))?;
    let mut out =
        BigOrders { large_orders: large, large_seats: 800, rss_before_mib: crate::rss_kib(pid)? as f64 / 1024.0, ..Default::default() };
    // Orders of `holds` × `per_hold` seats, created but not yet paid.
    let order = |ch: Ch, customer: String, holds: u32, per_hold: u32, event: String| async move {
        let mut inv = InventoryServiceClient::new(ch.clone());
        let mut ids = Vec::new();
        for _ in 0..holds {
            ids.push(hold_best(&mut inv, &event, &customer, per_hold).await?.hold_id);
        }
        let req = pb::CreateOrderRequest {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            customer_id: customer.clone(),
            email: format!("{customer}@example.com"),
            hold_ids: ids,
        };
        Ok::<_, anyhow::Error>(OrderingServiceClient::new(ch).create_order(req).await?.into_inner())
    };
    let mut larges = Vec::new();
    for i in 0..large {
        larges.push(order(chans[i % chans.len()].clone(), format!("large-{i}"), 8, 100, event.clone()).await?);
    }
    let small = order(chans[0].clone(), "small".into(), 1, 1, event.clone()).await?;
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(kib) = crate::rss_kib(pid) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Pays and waits for the tickets: the time from settled to fulfilled.
    let pay_and_wait = |ch: Ch, o: pb::Order| async move {
        pay_order(&mut PaymentServiceClient::new(ch.clone()), &o.order_id).await?;
        fulfilled(&mut OrderingServiceClient::new(ch), &o.order_id, Duration::from_secs(600)).await
    };
    let start = Instant::now();
    let large_tasks: Vec<_> =
        larges.into_iter().enumerate().map(|(i, o)| tokio::spawn(pay_and_wait(chans[i % chans.len()].clone(), o))).collect();
    // The large ones are rendering by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.small_fulfil_ms = pay_and_wait(chans[0].clone(), small).await?.as_secs_f64() * 1000.0;
    for t in large_tasks {
        t.await??;
    }
    out.large_wall_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await?;
    out.rss_peak_mib = peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    out.rss_after_mib = crate::rss_kib(pid)? as f64 / 1024.0;
    Ok(out)
}
