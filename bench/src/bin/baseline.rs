//! The usual design, as a fair baseline: per request, take a Redis lock per
//! seat (`SET NX PX`, released with an atomic compare-and-delete script), then
//! update the seat rows in PostgreSQL with a conditional UPDATE on a version
//! column in one transaction, then release the locks. Pooled connections,
//! prepared (cached) statements, one Redis round trip to lock and one to
//! unlock. Serves the same gRPC calls the bench uses.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use clap::Parser;
use redis::aio::ConnectionManager;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tonic::{Request, Response, Status};
use usher_engine::{Layout, SeatIdx, SeatIndex};
use usher_proto::v1::{
    self as pb,
    catalog_service_server::{CatalogService, CatalogServiceServer},
    inventory_service_server::{InventoryService, InventoryServiceServer},
};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc_addr: std::net::SocketAddr,
}

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS baseline;
CREATE TABLE IF NOT EXISTS baseline.venues (id TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS baseline.events (id TEXT PRIMARY KEY, venue_id TEXT NOT NULL, hold_seats_max BIGINT NOT NULL, prices TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS baseline.seats (
    event_id TEXT NOT NULL, seat_idx BIGINT NOT NULL, status TEXT NOT NULL DEFAULT 'available',
    hold_id TEXT, version BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (event_id, seat_idx));
CREATE INDEX IF NOT EXISTS seats_available ON baseline.seats (event_id, seat_idx) WHERE status = 'available';
CREATE TABLE IF NOT EXISTS baseline.holds (id TEXT PRIMARY KEY, event_id TEXT NOT NULL, customer_id TEXT NOT NULL,
    seats BIGINT[] NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS baseline.idempotency (key TEXT PRIMARY KEY, hold_id TEXT NOT NULL);
"#;

/// Deletes each key only if it still holds our token.
const UNLOCK: &str = r#"
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then n = n + redis.call('DEL', k) end
end
return n
"#;

const LOCK_TTL_MS: u64 = 5_000;

struct EventInfo {
    layout: Arc<Layout>,
    index: Arc<SeatIndex>,
    hold_seats_max: u32,
    prices: Vec<i64>,
}

#[derive(Clone)]
struct Baseline {
    pg: PgPool,
    redis: ConnectionManager,
    unlock: Arc<redis::Script>,
    venues: Arc<RwLock<HashMap<String, Arc<Layout>>>>,
    events: Arc<RwLock<HashMap<String, Arc<EventInfo>>>>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Baseline {
    fn event(&self, id: &str) -> Result<Arc<EventInfo>, Status> {
        self.events.read().expect("lock").get(id).cloned().ok_or_else(|| Status::not_found(format!("event {id} not found")))
    }

    /// Lock every seat in Redis (one pipelined round trip); on any miss,
    /// release what was taken.
    async fn lock(&self, event: &str, seats: &[SeatIdx], token: &str) -> Result<Option<Vec<String>>, Status> {
        let keys: Vec<String> = seats.iter().map(|s| format!("lock:{event}:{}", s.0)).collect();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("SET").arg(k).arg(token).arg("NX").arg("PX").arg(LOCK_TTL_MS);
        }
        let mut conn = self.redis.clone();
        let got: Vec<Option<String>> = pipe.query_async(&mut conn).await.map_err(internal)?;
        if got.iter().all(Option::is_some) {
            return Ok(Some(keys));
        }
        let taken: Vec<String> = keys.iter().zip(&got).filter(|(_, g)| g.is_some()).map(|(k, _)| k.clone()).collect();
        self.unlock(&taken, token).await?;
        Ok(None)
    }

    async fn unlock(&self, keys: &[String], token: &str) -> Result<(), Status> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.clone();
        let mut inv = self.unlock.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        inv.arg(token);
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(internal)?;
        Ok(())
    }

    /// Conditional update on the version column, the hold row and the
    /// idempotency row, in one transaction. None when a seat was not free.
    async fn write_hold(&self, event: &str, customer: &str, key: &str, seats: &[SeatIdx]) -> Result<Option<String>, Status> {
        let idx: Vec<i64> = seats.iter().map(|s| i64::from(s.0)).collect();
        let mut tx = self.pg.begin().await.map_err(internal)?;
        let rows = sqlx::query("SELECT seat_idx, status, version FROM baseline.seats WHERE event_id = $1 AND seat_idx = ANY($2)")
            .bind(event)
            .bind(&idx)
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?;
        if rows.len() != idx.len() || rows.iter().any(|r| r.get::<&str, _>(1) != "available") {
            return Ok(None);
        }
        let (ids, versions): (Vec<i64>, Vec<i64>) = rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(2))).unzip();
        let hold_id = uuid::Uuid::new_v4().to_string();
        let n = sqlx::query(
            "UPDATE baseline.seats s SET status = 'held', hold_id = $1, version = s.version + 1 \
             FROM UNNEST($3::bigint[], $4::bigint[]) AS u(idx, ver) \
             WHERE s.event_id = $2 AND s.seat_idx = u.idx AND s.version = u.ver AND s.status = 'available'",
        )
        .bind(&hold_id)
        .bind(event)
        .bind(&ids)
        .bind(&versions)
        .execute(&mut *tx)
        .await
        .map_err(internal)?
        .rows_affected();
        if n != idx.len() as u64 {
            return Ok(None);
        }
        sqlx::query("INSERT INTO baseline.holds (id, event_id, customer_id, seats) VALUES ($1, $2, $3, $4)")
            .bind(&hold_id)
            .bind(event)
            .bind(customer)
            .bind(&idx)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        sqlx::query("INSERT INTO baseline.idempotency (key, hold_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(&hold_id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(Some(hold_id))
    }

    async fn hold(&self, event: &str, customer: &str, key: &str, seats: &[SeatIdx]) -> Result<Option<String>, Status> {
        let token = uuid::Uuid::new_v4().to_string();
        let Some(keys) = self.lock(event, seats, &token).await? else { return Ok(None) };
        let r = self.write_hold(event, customer, key, seats).await;
        self.unlock(&keys, &token).await?;
        r
    }

    fn reply(&self, info: &EventInfo, event: &str, customer: &str, hold_id: String, seats: &[SeatIdx]) -> pb::Hold {
        pb::Hold {
            hold_id,
            event_id: event.into(),
            customer_id: customer.into(),
            seats: seats
                .iter()
                .map(|&s| pb::HeldSeat {
                    seat_id: info.layout.label(s),
                    price: Some(pb::Money { amount_minor: info.prices[info.layout.category_of(s) as usize], currency: "EUR".into() }),
                    ..Default::default()
                })
                .collect(),
            state: pb::HoldState::Active as i32,
            ..Default::default()
        }
    }
}

fn taken(seats: &[String]) -> Status {
    let mut s = Status::failed_precondition(format!("seats already taken: {}", seats.join(", ")));
    s.metadata_mut().insert("usher-reason", "SEATS_TAKEN".parse().expect("ascii"));
    s
}

#[tonic::async_trait]
impl CatalogService for Baseline {
    async fn create_venue(&self, req: Request<pb::CreateVenueRequest>) -> Result<Response<pb::Venue>, Status> {
        let r = req.into_inner();
        // The same reading of the request as Usher's.
        let spec = usher_gateway::catalog::spec_from(&r);
        let layout = Layout::build(&spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO baseline.venues (id, spec) VALUES ($1, $2)")
            .bind(&id)
            .bind(serde_json::to_string(&spec).map_err(internal)?)
            .execute(&self.pg)
            .await
            .map_err(internal)?;
        let seat_count = layout.seat_count() as u32;
        self.venues.write().expect("lock").insert(id.clone(), Arc::new(layout));
        Ok(Response::new(pb::Venue { venue_id: id, name: r.name, seat_count, ..Default::default() }))
    }

    async fn create_event(&self, req: Request<pb::CreateEventRequest>) -> Result<Response<pb::Event>, Status> {
        let r = req.into_inner();
        let layout = self.venues.read().expect("lock").get(&r.venue_id).cloned().ok_or_else(|| Status::not_found("venue"))?;
        let prices: Vec<i64> =
            layout.categories.iter().map(|c| r.prices.iter().find(|p| p.category == c.code).map(|p| p.amount_minor).unwrap_or(0)).collect();
        let id = uuid::Uuid::new_v4().to_string();
        let max = if r.hold_seats_max == 0 { 6 } else { r.hold_seats_max };
        let mut tx = self.pg.begin().await.map_err(internal)?;
        sqlx::query("INSERT INTO baseline.events (id, venue_id, hold_seats_max, prices) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(&r.venue_id)
            .bind(i64::from(max))
            .bind(serde_json::to_string(&prices).map_err(internal)?)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        sqlx::query("INSERT INTO baseline.seats (event_id, seat_idx) SELECT $1, g FROM generate_series(0, $2::bigint - 1) g")
            .bind(&id)
            .bind(layout.seat_count() as i64)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        sqlx::query("ANALYZE baseline.seats").execute(&self.pg).await.map_err(internal)?;
        let index = Arc::new(SeatIndex::new(&layout));
        let seat_count = layout.seat_count() as u32;
        self.events.write().expect("lock").insert(id.clone(), Arc::new(EventInfo { layout, index, hold_seats_max: max, prices }));
        Ok(Response::new(pb::Event {
            event_id: id,
            venue_id: r.venue_id,
            status: pb::EventStatus::OnSale as i32,
            seat_count,
            ..Default::default()
        }))
    }

    async fn get_event(&self, req: Request<pb::GetEventRequest>) -> Result<Response<pb::Event>, Status> {
        let id = req.into_inner().event_id;
        let info = self.event(&id)?;
        let rows = sqlx::query("SELECT status, COUNT(*) FROM baseline.seats WHERE event_id = $1 GROUP BY status")
            .bind(&id)
            .fetch_all(&self.pg)
            .await
            .map_err(internal)?;
        let mut counts = pb::SeatCounts::default();
        for r in rows {
            let n = r.get::<i64, _>(1) as u32;
            match r.get::<&str, _>(0) {
                "available" => counts.available = n,
                "held" => counts.held = n,
                _ => counts.sold += n,
            }
        }
        Ok(Response::new(pb::Event {
            event_id: id,
            seat_count: info.layout.seat_count() as u32,
            counts: Some(counts),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl InventoryService for Baseline {
    async fn hold_seats(&self, req: Request<pb::HoldSeatsRequest>) -> Result<Response<pb::Hold>, Status> {
        let r = req.into_inner();
        let info = self.event(&r.event_id)?;
        if r.seat_ids.is_empty() || r.seat_ids.len() as u32 > info.hold_seats_max {
            return Err(Status::invalid_argument("seat_ids: 1 to hold_seats_max seats"));
        }
        let seats: Vec<SeatIdx> = r
            .seat_ids
            .iter()
            .map(|l| info.index.resolve(&info.layout, l).map_err(|_| Status::not_found(format!("no seat {l}"))))
            .collect::<Result<_, _>>()?;
        match self.hold(&r.event_id, &r.customer_id, &r.idempotency_key, &seats).await? {
            Some(hold_id) => Ok(Response::new(self.reply(&info, &r.event_id, &r.customer_id, hold_id, &seats))),
            None => Err(taken(&r.seat_ids)),
        }
    }

    async fn hold_best_available(&self, req: Request<pb::HoldBestAvailableRequest>) -> Result<Response<pb::Hold>, Status> {
        let r = req.into_inner();
        let info = self.event(&r.event_id)?;
        let q = r.quantity as usize;
        if q == 0 || r.quantity > info.hold_seats_max {
            return Err(Status::invalid_argument("quantity"));
        }
        // The usual way: pick free seats in venue order, skipping rows other
        // transactions hold (SKIP LOCKED), then the same per-seat Redis locks
        // and versioned update as HoldSeats.
        for _attempt in 0..3 {
            let mut tx = self.pg.begin().await.map_err(internal)?;
            let rows = sqlx::query(
                "SELECT seat_idx FROM baseline.seats WHERE event_id = $1 AND status = 'available' \
                 ORDER BY seat_idx LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(&r.event_id)
            .bind(q as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?;
            let pick: Vec<SeatIdx> = rows.iter().map(|r| SeatIdx(r.get::<i64, _>(0) as u32)).collect();
            if pick.len() < q {
                let mut s = Status::failed_precondition(format!("not enough seats: {q} asked for, {} available", pick.len()));
                s.metadata_mut().insert("usher-reason", "NOT_ENOUGH_SEATS".parse().expect("ascii"));
                return Err(s);
            }
            let token = uuid::Uuid::new_v4().to_string();
            let Some(keys) = self.lock(&r.event_id, &pick, &token).await? else { continue };
            let hold_id = uuid::Uuid::new_v4().to_string();
            let idx: Vec<i64> = pick.iter().map(|s| i64::from(s.0)).collect();
            let n = sqlx::query(
                "UPDATE baseline.seats SET status = 'held', hold_id = $1, version = version + 1 \
                 WHERE event_id = $2 AND seat_idx = ANY($3) AND status = 'available'",
            )
            .bind(&hold_id)
            .bind(&r.event_id)
            .bind(&idx)
            .execute(&mut *tx)
            .await
            .map_err(internal)?
            .rows_affected();
            let ok = n == idx.len() as u64;
            if ok {
                sqlx::query("INSERT INTO baseline.holds (id, event_id, customer_id, seats) VALUES ($1, $2, $3, $4)")
                    .bind(&hold_id)
                    .bind(&r.event_id)
                    .bind(&r.customer_id)
                    .bind(&idx)
                    .execute(&mut *tx)
                    .await
                    .map_err(internal)?;
                sqlx::query("INSERT INTO baseline.idempotency (key, hold_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&r.idempotency_key)
                    .bind(&hold_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(internal)?;
                tx.commit().await.map_err(internal)?;
            } else {
                tx.rollback().await.map_err(internal)?;
            }
            self.unlock(&keys, &token).await?;
            if ok {
                return Ok(Response::new(self.reply(&info, &r.event_id, &r.customer_id, hold_id, &pick)));
            }
        }
        Err(taken(&[]))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let pg = PgPoolOptions::new().max_connections(16).connect(&a.database_url).await?;
    sqlx::raw_sql(SCHEMA).execute(&pg).await?;
    let redis = ConnectionManager::new(redis::Client::open(a.redis_url.as_str())?).await?;
    let svc = Baseline { pg, redis, unlock: Arc::new(redis::Script::new(UNLOCK)), venues: Arc::default(), events: Arc::default() };
    let listener = tokio::net::TcpListener::bind(a.grpc_addr).await?;
    println!("usher: grpc listening on http://{} (baseline: redis lock per seat + postgres)", listener.local_addr()?);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    };
    tonic::transport::Server::builder()
        .add_service(CatalogServiceServer::new(svc.clone()))
        .add_service(InventoryServiceServer::new(svc))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
