//! The sqlx store, for SQLite (embedded default) and PostgreSQL. Both speak
//! the same SQL (PostgreSQL reaches its per-context schemas through the
//! search_path), so one macro body serves both drivers with concrete types
//! instead of a thicket of generic bounds.

use crate::db_error::db_error;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, PgPool, QueryBuilder, Row, SqlitePool};

use usher_actors::{
    AuditEntry, Batch, BoxFuture, CommitKind, CommitStats, Created, Epoch, EpochClaim, EventFilter, IdentityStore, LoadedEvent, OrderStore,
    Store, StoreError, VenueRecord, Visibility,
};
use usher_engine::{
    Currency, CustomerId, EventConfig, EventId, EventStatus, Hold, HoldId, HoldState, IdempotencyKey, IdempotencyRecord, Layout, Millis,
    Money, OrgId, OrgUsage, SeatIdx, Snapshot, VenueId, VenueSpec, limits,
};

use crate::commit::{Commit, CommitMeter, ROWS_PER_STATEMENT_MAX};
use crate::plan::plan;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn parse_uuid<T>(s: &str, f: impl Fn(&str) -> Result<T, usher_engine::InvalidInput>) -> Result<T, StoreError> {
    f(s).map_err(|e| corrupt(format!("stored id {s:?}: {e}")))
}

/// Venue layouts built once and shared: a venue never changes, so every
/// event on it (and every reload of one) uses the same `Arc<Layout>` while
/// any holds it. Entries are weak: a layout no loaded event uses is freed,
/// so the cache is bounded by the loaded events' layouts
/// (`EVENTS_LOADED_MAX`), and a dead entry is dropped on the next insert.
#[derive(Default)]
pub(crate) struct LayoutCache {
    layouts: std::sync::Mutex<std::collections::HashMap<VenueId, std::sync::Weak<Layout>>>,
}

impl LayoutCache {
    pub(crate) fn get_or_build(&self, venue: VenueId, spec: &VenueSpec) -> Result<Arc<Layout>, StoreError> {
        let lock = || self.layouts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = lock().get(&venue).and_then(std::sync::Weak::upgrade) {
            return Ok(l);
        }
        // Built outside the lock (a 200,000-seat layout takes milliseconds);
        // two loads racing build twice and the first one stored wins.
        let built = Arc::new(Layout::build(spec).map_err(corrupt)?);
        let mut map = lock();
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(l) = map.get(&venue).and_then(std::sync::Weak::upgrade) {
            return Ok(l);
        }
        map.insert(venue, Arc::downgrade(&built));
        Ok(built)
    }
}

/// Opens the store named by a URL: `sqlite://PATH` (or a bare path) or
/// `postgres://…`. Runs migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
    }
}

/// Every port over one database, one pool: the event store, the order
/// store and the identity store.
pub type Stores = (Arc<dyn Store>, Arc<dyn OrderStore>, Arc<dyn IdentityStore>);

/// Layouts of the events the sales read model met (`reporting`), to name
/// each seat's category. Bounded: past `REPORT_LAYOUTS_MAX` events it
/// starts again empty.
#[derive(Default)]
pub(crate) struct ReportLayouts(pub(crate) std::sync::Mutex<std::collections::HashMap<EventId, Arc<Layout>>>);

/// The most events `ReportLayouts` keeps.
pub(crate) const REPORT_LAYOUTS_MAX: usize = 1_000;

pub struct SqliteStore {
    pool: SqlitePool,
    pub(crate) layouts: LayoutCache,
    pub(crate) meter: CommitMeter,
    pub(crate) report_layouts: ReportLayouts,
}

impl SqliteStore {
    pub async fn open(path: &std::path::Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
        }
        // The database holds orders and emails: readable by the owner only
        // (SQLite gives its -wal and -shm files the database's mode).
        #[cfg(unix)]
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(false);
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            opts.open(path).map_err(|e| StoreError::Unavailable(format!("create {}: {e}", path.display())))?;
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| StoreError::Unavailable(format!("chmod {}: {e}", path.display())))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before we answer. Group commit pays
            // for the fsync once per batch.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.map_err(db_error)?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await.map_err(|e| StoreError::Unavailable(format!("migrate: {e}")))?;
        Ok(SqliteStore { pool, layouts: LayoutCache::default(), meter: CommitMeter::default(), report_layouts: Default::default() })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

pub struct PgStore {
    pool: PgPool,
    pub(crate) layouts: LayoutCache,
    pub(crate) meter: CommitMeter,
    pub(crate) report_layouts: ReportLayouts,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(db_error)?;
        // Migrate on a plain connection: with the contexts' search_path, the
        // bookkeeping table would land in bc_catalog once that schema exists,
        // and the next start would run migration 1 again.
        {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts).await.map_err(db_error)?;
            sqlx::migrate!("../migrations/postgres").run(&mut conn).await.map_err(|e| StoreError::Unavailable(format!("migrate: {e}")))?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // No call may wait forever (a lock held by an operator's
                    // open transaction would hang an event's actor). A node
                    // that stalls inside a transaction (SIGSTOP, a frozen VM)
                    // holds its event's row lock: the server ends that
                    // session after `idle_in_transaction_session_timeout`, so
                    // the event's new owner can fence it and go on.
                    conn.execute(
                        "SET search_path TO bc_catalog, bc_inventory, bc_ordering, bc_fulfillment, bc_notification, bc_identity, bc_reporting, public; \
                         SET statement_timeout = '30s'; SET idle_in_transaction_session_timeout = '5s'",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(db_error)?;
        Ok(PgStore { pool, layouts: LayoutCache::default(), meter: CommitMeter::default(), report_layouts: Default::default() })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The columns of an `events` row, as both drivers decode them.
struct EventRow<'r> {
    id: &'r str,
    venue_id: &'r str,
    name: String,
    description: String,
    times: [i64; 3],
    status: &'r str,
    hold_duration_ms: i64,
    hold_seats_max: i64,
    currency: &'r str,
    prices: &'r str,
    org_id: &'r str,
    time_zone: String,
}

impl EventRow<'_> {
    fn into_config(self) -> Result<EventConfig, StoreError> {
        let currency = Currency::from_stored(self.currency).map_err(corrupt)?;
        let prices: Vec<i64> = serde_json::from_str(self.prices).map_err(corrupt)?;
        Ok(EventConfig {
            id: parse_uuid(self.id, EventId::parse)?,
            org_id: parse_uuid(self.org_id, OrgId::parse)?,
            venue_id: parse_uuid(self.venue_id, VenueId::parse)?,
            name: self.name,
            description: self.description,
            starts_at: Millis(self.times[0]),
            sales_start: Millis(self.times[1]),
            sales_end: Millis(self.times[2]),
            status: EventStatus::parse(self.status).ok_or_else(|| corrupt(format!("status {:?}", self.status)))?,
            hold_duration_ms: self.hold_duration_ms as u64,
            hold_seats_max: self.hold_seats_max as u32,
            prices: prices.into_iter().map(|minor| Money { minor, currency }).collect(),
            time_zone: self.time_zone,
        })
    }
}

const EVENT_COLUMNS: &str = "id, venue_id, name, description, starts_at, sales_start, sales_end, status, hold_duration_ms, hold_seats_max, currency, prices, \
     org_id, time_zone";

macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn event_from_row(r: &<$db as sqlx::Database>::Row) -> Result<EventConfig, StoreError> {
                EventRow {
                    id: r.get(0),
                    venue_id: r.get(1),
                    name: r.get(2),
                    description: r.get(3),
                    times: [r.get(4), r.get(5), r.get(6)],
                    status: r.get(7),
                    hold_duration_ms: r.get(8),
                    hold_seats_max: r.get(9),
                    currency: r.get(10),
                    prices: r.get(11),
                    org_id: r.get(12),
                    time_zone: r.get(13),
                }
                .into_config()
            }

            /// Writes one audit-log row inside the caller's transaction.
            pub(crate) async fn insert_audit(tx: &mut sqlx::Transaction<'_, $db>, a: &AuditEntry) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO audit_log (org_id, at, actor, address, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(a.org.to_string())
                .bind(a.at.0)
                .bind(&a.actor)
                .bind(&a.address)
                .bind(&a.action)
                .bind(&a.target)
                .bind(&a.detail)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            /// Inserts the command-log row of a keyed command (a create, a
            /// pay, a cancel, a scan) naming `resource`, or tells what the
            /// key already stands for: `New` when this call inserted it.
            /// Every keyed write of both stores claims through here.
            pub(crate) async fn claim_command(
                tx: &mut sqlx::Transaction<'_, $db>,
                key: &str,
                fingerprint: u64,
                resource: &str,
                now: Millis,
            ) -> Result<Created<String>, StoreError> {
                let inserted = sqlx::query(
                    "INSERT INTO command_log (key, fingerprint, resource_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(fingerprint as i64)
                .bind(resource)
                .bind(now.0)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?
                .rows_affected();
                if inserted == 1 {
                    return Ok(Created::New(resource.to_owned()));
                }
                let row = sqlx::query("SELECT fingerprint, resource_id FROM command_log WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db_error)?;
                let (fp, id): (i64, String) = (row.get(0), row.get(1));
                Ok(if fp == fingerprint as i64 { Created::Replayed(id) } else { Created::KeyReused })
            }

            #[allow(clippy::too_many_arguments)]
            async fn do_create_venue(
                &self,
                key: &IdempotencyKey,
                fingerprint: u64,
                id: VenueId,
                org: OrgId,
                spec: &VenueSpec,
                layout: &Layout,
                now: Millis,
                audit: &AuditEntry,
            ) -> Result<Created<VenueId>, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                match Self::claim_command(&mut tx, key.as_str(), fingerprint, &id.to_string(), now).await? {
                    Created::New(_) => {}
                    Created::Replayed(id) => return Ok(Created::Replayed(parse_uuid(&id, VenueId::parse)?)),
                    Created::KeyReused => return Ok(Created::KeyReused),
                }
                sqlx::query("INSERT INTO venues (id, org_id, name, spec, seat_count, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(id.to_string())
                    .bind(org.to_string())
                    .bind(&spec.name)
                    .bind(serde_json::to_string(spec).map_err(corrupt)?)
                    .bind(layout.seat_count() as i64)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(Created::New(id))
            }

            async fn do_get_venue(&self, id: VenueId) -> Result<Option<VenueRecord>, StoreError> {
                let row = sqlx::query("SELECT spec, seat_count, org_id FROM venues WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?;
                let Some(row) = row else { return Ok(None) };
                let spec: VenueSpec = serde_json::from_str(row.get::<&str, _>(0)).map_err(corrupt)?;
                let org_id = parse_uuid(row.get::<&str, _>(2), OrgId::parse)?;
                Ok(Some(VenueRecord { id, org_id, spec, seat_count: row.get::<i64, _>(1) as u32 }))
            }

            async fn do_create_event(
                &self,
                key: &IdempotencyKey,
                fingerprint: u64,
                c: &EventConfig,
                now: Millis,
                audit: &AuditEntry,
            ) -> Result<Created<EventId>, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                match Self::claim_command(&mut tx, key.as_str(), fingerprint, &c.id.to_string(), now).await? {
                    Created::New(_) => {}
                    Created::Replayed(id) => return Ok(Created::Replayed(parse_uuid(&id, EventId::parse)?)),
                    Created::KeyReused => return Ok(Created::KeyReused),
                }
                let prices: Vec<i64> = c.prices.iter().map(|p| p.minor).collect();
                let currency = c.prices.first().map(|p| p.currency.as_str().to_owned()).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO events (id, venue_id, name, description, starts_at, sales_start, sales_end, status, hold_duration_ms, \
                     hold_seats_max, currency, prices, owner_epoch, created_at, updated_at, org_id, time_zone) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $13, $14, $15)",
                )
                .bind(c.id.to_string())
                .bind(c.venue_id.to_string())
                .bind(&c.name)
                .bind(&c.description)
                .bind(c.starts_at.0)
                .bind(c.sales_start.0)
                .bind(c.sales_end.0)
                .bind(c.status.as_str())
                .bind(c.hold_duration_ms as i64)
                .bind(c.hold_seats_max as i64)
                .bind(currency)
                .bind(serde_json::to_string(&prices).map_err(corrupt)?)
                .bind(now.0)
                .bind(c.org_id.to_string())
                .bind(&c.time_zone)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(Created::New(c.id))
            }

            async fn do_get_event(&self, id: EventId) -> Result<Option<EventConfig>, StoreError> {
                let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?;
                row.map(|r| Self::event_from_row(&r)).transpose()
            }

            async fn do_list_events(&self, f: EventFilter) -> Result<Vec<EventConfig>, StoreError> {
                let mut q: QueryBuilder<$db> = QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1"));
                if let Some(s) = f.status {
                    q.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(t) = f.starts_after {
                    q.push(" AND starts_at >= ").push_bind(t.0);
                }
                if let Some(t) = f.starts_before {
                    q.push(" AND starts_at < ").push_bind(t.0);
                }
                if let Some((t, id)) = f.after {
                    q.push(" AND (starts_at > ").push_bind(t.0).push(" OR (starts_at = ").push_bind(t.0);
                    q.push(" AND id > ").push_bind(id.to_string()).push("))");
                }
                // Public: on sale or sales closed (drafts and cancelled
                // events are their organization's own).
                let public = "status IN ('on_sale', 'sales_closed')";
                match &f.visible {
                    Visibility::All => {}
                    Visibility::Public => {
                        q.push(format!(" AND {public}"));
                    }
                    Visibility::PublicAnd(orgs) if orgs.is_empty() => {
                        q.push(format!(" AND {public}"));
                    }
                    Visibility::PublicAnd(orgs) => {
                        q.push(format!(" AND ({public} OR org_id IN ("));
                        let mut sep = q.separated(", ");
                        for o in orgs {
                            sep.push_bind(o.to_string());
                        }
                        q.push("))");
                    }
                }
                q.push(" ORDER BY starts_at, id LIMIT ").push_bind(i64::from(f.limit));
                let rows = q.build().fetch_all(&self.pool).await.map_err(db_error)?;
                rows.iter().map(Self::event_from_row).collect()
            }

            async fn do_org_usage(&self, org: OrgId, now: Millis) -> Result<OrgUsage, StoreError> {
                let (venues, seats): (i64, i64) =
                    sqlx::query_as("SELECT count(*), CAST(coalesce(sum(seat_count), 0) AS BIGINT) FROM venues WHERE org_id = $1")
                        .bind(org.to_string())
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_error)?;
                let (events,): (i64,) =
                    sqlx::query_as(
                        "SELECT count(*) FROM events WHERE org_id = $1 AND status <> 'cancelled' AND (starts_at > $2 OR status = 'on_sale')",
                    )
                        .bind(org.to_string())
                        .bind(now.0)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_error)?;
                let count = |n: i64| u32::try_from(n).map_err(corrupt);
                Ok(OrgUsage { venues: count(venues)?, seats: u64::try_from(seats).map_err(corrupt)?, upcoming_events: count(events)? })
            }

            async fn do_find_hold_event(&self, hold: HoldId) -> Result<Option<EventId>, StoreError> {
                let row = sqlx::query("SELECT event_id FROM holds WHERE id = $1")
                    .bind(hold.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?;
                row.map(|r| parse_uuid(r.get::<&str, _>(0), EventId::parse)).transpose()
            }

            async fn do_load(&self, id: EventId, now: Millis) -> Result<Option<LoadedEvent>, StoreError> {
                let Some(config) = self.do_get_event(id).await? else { return Ok(None) };
                let venue = self.do_get_venue(config.venue_id).await?.ok_or_else(|| corrupt(format!("event {id} has no venue")))?;
                let layout = self.layouts.get_or_build(venue.id, &venue.spec)?;
                let mut snapshot = Snapshot::default();
                let eid = id.to_string();
                let rows = sqlx::query("SELECT seat_idx FROM seat_claims WHERE event_id = $1 AND kind = 'blocked' ORDER BY seat_idx")
                    .bind(&eid)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                snapshot.blocked = rows.iter().map(|r| SeatIdx(r.get::<i64, _>(0) as u32)).collect();
                let rows = sqlx::query(
                    "SELECT id, customer_id, seats, state, created_at, expires_at, ended_at FROM holds WHERE event_id = $1 ORDER BY created_at, id",
                )
                .bind(&eid)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                for r in &rows {
                    let seats: Vec<u32> = serde_json::from_str(r.get::<&str, _>(2)).map_err(corrupt)?;
                    let state: &str = r.get(3);
                    snapshot.holds.push(Hold {
                        id: parse_uuid(r.get::<&str, _>(0), HoldId::parse)?,
                        customer: CustomerId::parse(r.get::<&str, _>(1)).map_err(corrupt)?,
                        seats: seats.into_iter().map(SeatIdx).collect(),
                        state: HoldState::parse(state).ok_or_else(|| corrupt(format!("hold state {state:?}")))?,
                        created_at: Millis(r.get(4)),
                        expires_at: Millis(r.get(5)),
                        ended_at: r.get::<Option<i64>, _>(6).map(Millis),
                        orphan_seats_left: 0,
                    });
                }
                let horizon = now.0.saturating_sub(limits::IDEMPOTENCY_RETENTION_MS as i64);
                let rows = sqlx::query(
                    "SELECT key, fingerprint, result, created_at FROM idempotency WHERE scope = $1 AND created_at >= $2 \
                     ORDER BY created_at DESC LIMIT $3",
                )
                .bind(&eid)
                .bind(horizon)
                .bind(limits::IDEMPOTENCY_RECORDS_PER_EVENT_MAX as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                for r in &rows {
                    snapshot.idempotency.push(IdempotencyRecord {
                        key: IdempotencyKey::parse(r.get::<&str, _>(0)).map_err(corrupt)?,
                        fingerprint: r.get::<i64, _>(1) as u64,
                        result: serde_json::from_str(r.get::<&str, _>(2)).map_err(corrupt)?,
                        at: Millis(r.get(3)),
                    });
                }
                // Second look at the same facts: every claim row must be the one
                // the holds imply (seat, kind, hold), none missing, none extra.
                // (The actor's restore of this snapshot rechecks every
                // invariant; it is not done twice here.)
                let mut expected: std::collections::HashMap<i64, (&str, Option<String>)> = std::collections::HashMap::new();
                for s in &snapshot.blocked {
                    expected.insert(i64::from(s.0), ("blocked", None));
                }
                for h in &snapshot.holds {
                    let kind = match h.state {
                        HoldState::Active => "held",
                        HoldState::Confirmed => "sold",
                        HoldState::Released | HoldState::Expired => continue,
                    };
                    for s in &h.seats {
                        expected.insert(i64::from(s.0), (kind, Some(h.id.to_string())));
                    }
                }
                let rows = sqlx::query("SELECT seat_idx, kind, hold_id FROM seat_claims WHERE event_id = $1")
                    .bind(&eid)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                if rows.len() != expected.len() {
                    return Err(corrupt(format!("event {id}: {} seat claim rows, but the holds and blocks imply {}", rows.len(), expected.len())));
                }
                for r in &rows {
                    let (seat, kind, hold): (i64, &str, Option<String>) = (r.get(0), r.get(1), r.get(2));
                    match expected.get(&seat) {
                        Some((k, h)) if *k == kind && *h == hold => {}
                        other => {
                            return Err(corrupt(format!(
                                "event {id}: seat {seat} is claimed as {kind} by {hold:?}, but the holds say {other:?}"
                            )));
                        }
                    }
                }
                Ok(Some(LoadedEvent { config, layout, snapshot }))
            }

            async fn do_commit(&self, batch: Batch<'_>) -> Result<(), StoreError> {
                let mut p = plan(&batch);
                let eid = batch.event_id.to_string();
                let mut c = Commit::begin(&self.pool, &self.meter, CommitKind::SeatBatch).await?;
                // Fencing: a writer with a stale epoch changes nothing. In
                // PostgreSQL this also locks the event row until commit.
                c.fence_own(batch.event_id, batch.epoch, batch.now).await?;
                // Organizer actions are rare: one plain INSERT each.
                for a in batch.audits {
                    Self::insert_audit(c.tx(), a).await?;
                }
                if let Some(s) = p.status {
                    sqlx::query("UPDATE events SET status = $1 WHERE id = $2")
                        .bind(s.as_str())
                        .bind(&eid)
                        .execute(&mut **c.tx())
                        .await
                        .map_err(db_error)?;
                }
                if !p.is_empty() {
                    Self::write_rows(c.tx(), &eid, &p).await?;
                }
                c.append_outbox(std::mem::take(&mut p.outbox), batch.now);
                c.finish().await
            }
        }

        impl Store for $store {
            fn create_venue<'a>(
                &'a self,
                key: &'a IdempotencyKey,
                fingerprint: u64,
                id: VenueId,
                org: OrgId,
                spec: &'a VenueSpec,
                layout: &'a Layout,
                now: Millis,
                audit: &'a AuditEntry,
            ) -> BoxFuture<'a, Result<Created<VenueId>, StoreError>> {
                Box::pin(self.do_create_venue(key, fingerprint, id, org, spec, layout, now, audit))
            }
            fn get_venue(&self, id: VenueId) -> BoxFuture<'_, Result<Option<VenueRecord>, StoreError>> {
                Box::pin(self.do_get_venue(id))
            }
            fn create_event<'a>(
                &'a self,
                key: &'a IdempotencyKey,
                fingerprint: u64,
                config: &'a EventConfig,
                now: Millis,
                audit: &'a AuditEntry,
            ) -> BoxFuture<'a, Result<Created<EventId>, StoreError>> {
                Box::pin(self.do_create_event(key, fingerprint, config, now, audit))
            }
            fn get_event(&self, id: EventId) -> BoxFuture<'_, Result<Option<EventConfig>, StoreError>> {
                Box::pin(self.do_get_event(id))
            }
            fn list_events(&self, filter: EventFilter) -> BoxFuture<'_, Result<Vec<EventConfig>, StoreError>> {
                Box::pin(self.do_list_events(filter))
            }
            fn org_usage(&self, org: OrgId, now: Millis) -> BoxFuture<'_, Result<OrgUsage, StoreError>> {
                Box::pin(self.do_org_usage(org, now))
            }
            fn find_hold_event(&self, hold: HoldId) -> BoxFuture<'_, Result<Option<EventId>, StoreError>> {
                Box::pin(self.do_find_hold_event(hold))
            }
            fn fence_event(&self, id: EventId, claim: EpochClaim) -> BoxFuture<'_, Result<Epoch, StoreError>> {
                Box::pin(Commit::<$db>::fence_event(&self.pool, id, claim))
            }
            fn load_event(&self, id: EventId, now: Millis) -> BoxFuture<'_, Result<Option<LoadedEvent>, StoreError>> {
                Box::pin(self.do_load(id, now))
            }
            fn commit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_commit(batch))
            }
            fn commit_stats(&self) -> Vec<CommitStats> {
                self.meter.stats()
            }
        }
    };
}

impl SqliteStore {
    /// Multi-row VALUES statements: SQLite parses in-process, so the varying
    /// statement text costs little.
    async fn write_rows(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, eid: &str, p: &crate::plan::Plan) -> Result<(), StoreError> {
        type Db = sqlx::Sqlite;
        let eid = eid.to_owned();
        for chunk in p.holds.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut q: QueryBuilder<Db> = QueryBuilder::new(
                "INSERT INTO holds (id, event_id, customer_id, seats, seat_count, state, created_at, expires_at, ended_at) ",
            );
            q.push_values(chunk, |mut b, h| {
                let seats: Vec<u32> = h.seats.iter().map(|s| s.0).collect();
                b.push_bind(h.id.to_string())
                    .push_bind(eid.clone())
                    .push_bind(h.customer.as_str().to_owned())
                    .push_bind(serde_json::to_string(&seats).expect("seats serialize"))
                    .push_bind(h.seats.len() as i64)
                    .push_bind(h.state.as_str())
                    .push_bind(h.created_at.0)
                    .push_bind(h.expires_at.0)
                    .push_bind(h.ended_at.map(|t| t.0));
            });
            q.push(" ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at");
            q.build().execute(&mut **tx).await.map_err(db_error)?;
        }
        for chunk in p.claim_deletes.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut q: QueryBuilder<Db> = QueryBuilder::new("DELETE FROM seat_claims WHERE event_id = ");
            q.push_bind(eid.clone()).push(" AND seat_idx IN (");
            let mut sep = q.separated(", ");
            chunk.iter().for_each(|s| {
                sep.push_bind(*s);
            });
            q.push(")");
            let n = q.build().execute(&mut **tx).await.map_err(db_error)?.rows_affected();
            if n != chunk.len() as u64 {
                return Err(corrupt(format!("event {eid}: {} claim rows to free, {n} found", chunk.len())));
            }
        }
        for chunk in p.claim_inserts.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut q: QueryBuilder<Db> = QueryBuilder::new("INSERT INTO seat_claims (event_id, seat_idx, kind, hold_id) ");
            q.push_values(chunk, |mut b, c| {
                b.push_bind(eid.clone()).push_bind(c.seat_idx).push_bind(c.kind).push_bind(c.hold_id.clone());
            });
            q.build().execute(&mut **tx).await.map_err(db_error)?;
        }
        for chunk in p.idempotency.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut q: QueryBuilder<Db> = QueryBuilder::new("INSERT INTO idempotency (scope, key, fingerprint, result, created_at) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(eid.clone()).push_bind(r.key.clone()).push_bind(r.fingerprint).push_bind(r.result.clone()).push_bind(r.at);
            });
            // A record older than the retention may still be in the
            // table with the same key: the new answer replaces it.
            q.push(" ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, result = excluded.result, created_at = excluded.created_at");
            q.build().execute(&mut **tx).await.map_err(db_error)?;
        }
        Ok(())
    }
}

impl PgStore {
    /// One fixed statement per table, rows passed as arrays (UNNEST): prepared
    /// once per connection, whatever the batch size. Multi-row VALUES with
    /// thousands of parameters made PostgreSQL parse and plan every batch.
    async fn write_rows(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, eid: &str, p: &crate::plan::Plan) -> Result<(), StoreError> {
        if !p.holds.is_empty() {
            let ids: Vec<String> = p.holds.iter().map(|h| h.id.to_string()).collect();
            let customers: Vec<&str> = p.holds.iter().map(|h| h.customer.as_str()).collect();
            let seats: Vec<String> = p
                .holds
                .iter()
                .map(|h| serde_json::to_string(&h.seats.iter().map(|s| s.0).collect::<Vec<u32>>()).expect("seats serialize"))
                .collect();
            let counts: Vec<i64> = p.holds.iter().map(|h| h.seats.len() as i64).collect();
            let states: Vec<&str> = p.holds.iter().map(|h| h.state.as_str()).collect();
            let created: Vec<i64> = p.holds.iter().map(|h| h.created_at.0).collect();
            let expires: Vec<i64> = p.holds.iter().map(|h| h.expires_at.0).collect();
            let ended: Vec<Option<i64>> = p.holds.iter().map(|h| h.ended_at.map(|t| t.0)).collect();
            sqlx::query(
                "INSERT INTO holds (id, event_id, customer_id, seats, seat_count, state, created_at, expires_at, ended_at) \
                 SELECT u.id, $1, u.customer_id, u.seats, u.seat_count, u.state, u.created_at, u.expires_at, u.ended_at \
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[]) \
                   AS u(id, customer_id, seats, seat_count, state, created_at, expires_at, ended_at) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at",
            )
            .bind(eid)
            .bind(&ids)
            .bind(&customers)
            .bind(&seats)
            .bind(&counts)
            .bind(&states)
            .bind(&created)
            .bind(&expires)
            .bind(&ended)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        if !p.claim_deletes.is_empty() {
            let n = sqlx::query("DELETE FROM seat_claims WHERE event_id = $1 AND seat_idx = ANY($2)")
                .bind(eid)
                .bind(&p.claim_deletes)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if n != p.claim_deletes.len() as u64 {
                return Err(corrupt(format!("event {eid}: {} claim rows to free, {n} found", p.claim_deletes.len())));
            }
        }
        if !p.claim_inserts.is_empty() {
            let idx: Vec<i64> = p.claim_inserts.iter().map(|c| c.seat_idx).collect();
            let kinds: Vec<&str> = p.claim_inserts.iter().map(|c| c.kind).collect();
            let holds: Vec<Option<&str>> = p.claim_inserts.iter().map(|c| c.hold_id.as_deref()).collect();
            sqlx::query(
                "INSERT INTO seat_claims (event_id, seat_idx, kind, hold_id) \
                 SELECT $1, u.seat_idx, u.kind, u.hold_id FROM UNNEST($2::bigint[], $3::text[], $4::text[]) AS u(seat_idx, kind, hold_id)",
            )
            .bind(eid)
            .bind(&idx)
            .bind(&kinds)
            .bind(&holds)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        if !p.idempotency.is_empty() {
            let keys: Vec<&str> = p.idempotency.iter().map(|r| r.key.as_str()).collect();
            let fps: Vec<i64> = p.idempotency.iter().map(|r| r.fingerprint).collect();
            let results: Vec<&str> = p.idempotency.iter().map(|r| r.result.as_str()).collect();
            let at: Vec<i64> = p.idempotency.iter().map(|r| r.at).collect();
            sqlx::query(
                "INSERT INTO idempotency (scope, key, fingerprint, result, created_at) \
                 SELECT $1, u.key, u.fingerprint, u.result, u.created_at \
                 FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::bigint[]) AS u(key, fingerprint, result, created_at) \
                 ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, result = excluded.result, created_at = excluded.created_at",
            )
            .bind(eid)
            .bind(&keys)
            .bind(&fps)
            .bind(&results)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }
}

sql_store!(SqliteStore, sqlx::Sqlite);
sql_store!(PgStore, sqlx::Postgres);
