//! Test support for actor-level tests: an in-memory `Store` with fault
//! injection and a commit gate, and a harness that starts a `Registry` on it;
//! an in-memory `OrderStore` (`orders.rs`) and scripted fakes of the saga's
//! other ports (`fakes.rs`).
//!
//! Everything here runs on the tokio runtime of the test (no blocking
//! threads), so `#[tokio::test(start_paused = true)]` stays deterministic.
//! The std `Mutex` is never held across an `.await`.

#![allow(dead_code)] // not every test file uses every helper

pub mod fakes;
pub mod orders;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use usher_actors::{
    AuditEntry, Batch, BoxFuture, Clock, Created, Epoch, EpochClaim, EventFilter, EventHandle, LoadedEvent, LocalOwnership, Registry,
    RegistryConfig, SoleServer, Store, StoreError, VenueRecord, Visibility,
};
use usher_engine::{
    Command, CustomerId, Event, EventConfig, EventId, EventStatus, Hold, HoldId, IdempotencyKey, IdempotencyRecord, Layout, Millis, OrgId,
    OrgUsage, Reply, SeatIdx, Snapshot, VenueId, VenueSpec, grid_venue, limits,
};

/// The wall-clock start of paused-time tests.
pub const T0: Millis = Millis(1_700_000_000_000);
/// Hold duration of the test event.
pub const HOLD_MS: u64 = 60_000;
/// Far in the future, so that `Clock::system()` is inside the sales window too.
pub const SALES_END: Millis = Millis(4_000_000_000_000);
/// The organization that owns the test venue and event.
pub const ORG: OrgId = OrgId(Uuid::from_u128(3));

/// The tests' single-node guard: one test process, one in-memory store.
pub struct OneProcess;

impl SoleServer for OneProcess {
    fn describe(&self) -> String {
        "one test process".into()
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

// ---------------------------------------------------------------- MemStore

/// The durable state of one event.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub config: EventConfig,
    pub epoch: i64,
    /// Every hold in its latest (final) state.
    pub holds: BTreeMap<HoldId, Hold>,
    pub blocked: BTreeSet<SeatIdx>,
    pub idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// Every domain event committed, in commit order (an outbox stand-in).
    pub log: Vec<Event>,
}

#[derive(Default)]
struct Inner {
    venues: HashMap<VenueId, VenueRecord>,
    events: HashMap<EventId, EventRow>,
    /// Catalog idempotency: key → (fingerprint, resource id).
    command_log: HashMap<IdempotencyKey, (u64, Uuid)>,
    /// Every audit entry written, in write order.
    audits: Vec<AuditEntry>,
}

/// An in-memory `Store` with test knobs.
pub struct MemStore {
    inner: Mutex<Inner>,
    /// `true` = commits pass; `false` = commits wait here until opened.
    gate: watch::Sender<bool>,
    /// Commits that succeeded.
    commits: AtomicU64,
    /// Calls to `commit`, whatever their outcome.
    commit_attempts: AtomicU64,
    /// Commits currently waiting at the closed gate.
    waiting: AtomicU64,
    fail_commits: AtomicU32,
    fail_loads: AtomicU32,
    loads: AtomicU64,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore {
            inner: Mutex::default(),
            gate: watch::Sender::new(true),
            commits: AtomicU64::new(0),
            commit_attempts: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            fail_commits: AtomicU32::new(0),
            fail_loads: AtomicU32::new(0),
            loads: AtomicU64::new(0),
        }
    }
}

/// Takes one unit off a fault counter, if any is left.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1)).is_ok()
}

impl MemStore {
    pub fn new() -> Arc<MemStore> {
        Arc::new(MemStore::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the real failure behind a
        // poisoned lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // -- knobs

    /// The next `n` commits fail with `StoreError::Unavailable`.
    pub fn fail_next_commits(&self, n: u32) {
        self.fail_commits.store(n, Ordering::Release);
    }
    /// The next `n` loads fail with `StoreError::Unavailable`.
    pub fn fail_next_loads(&self, n: u32) {
        self.fail_loads.store(n, Ordering::Release);
    }
    /// Commits wait until `open_gate`.
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
    /// Another owner takes the event: bumps its epoch, returns the new one.
    pub fn bump_epoch(&self, id: EventId) -> i64 {
        let mut g = self.lock();
        let row = g.events.get_mut(&id).expect("event exists");
        row.epoch += 1;
        row.epoch
    }

    // -- observations

    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }
    pub fn commit_attempts(&self) -> u64 {
        self.commit_attempts.load(Ordering::Acquire)
    }
    pub fn commits_waiting(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Acquire)
    }
    pub fn epoch(&self, id: EventId) -> i64 {
        self.lock().events[&id].epoch
    }
    pub fn event_row(&self, id: EventId) -> EventRow {
        self.lock().events[&id].clone()
    }
    pub fn hold(&self, event: EventId, hold: HoldId) -> Option<Hold> {
        self.lock().events[&event].holds.get(&hold).cloned()
    }
    pub fn record(&self, event: EventId, key: &IdempotencyKey) -> Option<IdempotencyRecord> {
        self.lock().events[&event].idempotency.get(key).cloned()
    }
    /// Every audit entry written (catalog creates and committed batches), in order.
    pub fn audits(&self) -> Vec<AuditEntry> {
        self.lock().audits.clone()
    }

    // -- direct setup, bypassing the catalog's idempotency

    pub fn insert_venue(&self, id: VenueId, spec: VenueSpec) -> Layout {
        let layout = Layout::build(&spec).expect("valid venue");
        self.lock().venues.insert(id, VenueRecord { id, org_id: ORG, seat_count: layout.seat_count() as u32, spec });
        layout
    }

    pub fn insert_event(&self, config: EventConfig) {
        self.lock().events.insert(config.id, EventRow::new(config));
    }

    fn claim_key(&self, g: &mut Inner, key: &IdempotencyKey, fp: u64, id: Uuid) -> Created<Uuid> {
        match g.command_log.get(key) {
            Some(&(f, prev)) if f == fp => Created::Replayed(prev),
            Some(_) => Created::KeyReused,
            None => {
                g.command_log.insert(key.clone(), (fp, id));
                Created::New(id)
            }
        }
    }

    fn apply(row: &mut EventRow, batch: &Batch<'_>) {
        for d in batch.decisions {
            for e in &d.events {
                match e {
                    Event::HoldPlaced { hold } | Event::HoldReleased { hold } | Event::HoldExpired { hold } | Event::SeatsSold { hold } => {
                        row.holds.insert(hold.id, hold.clone());
                    }
                    Event::SeatsBlocked { seats } => row.blocked.extend(seats.iter().copied()),
                    Event::SeatsUnblocked { seats } => {
                        for s in seats {
                            row.blocked.remove(s);
                        }
                    }
                    Event::StatusChanged { to, .. } => row.config.status = *to,
                }
                row.log.push(e.clone());
            }
            if let Some(r) = &d.record {
                row.idempotency.insert(r.key.clone(), r.clone());
            }
        }
    }
}

impl EventRow {
    fn new(config: EventConfig) -> EventRow {
        EventRow { config, epoch: 0, holds: BTreeMap::new(), blocked: BTreeSet::new(), idempotency: HashMap::new(), log: Vec::new() }
    }
}

impl Store for MemStore {
    fn create_venue<'a>(
        &'a self,
        key: &'a IdempotencyKey,
        fingerprint: u64,
        id: VenueId,
        org: OrgId,
        spec: &'a VenueSpec,
        layout: &'a Layout,
        _now: Millis,
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<Created<VenueId>, StoreError>> {
        Box::pin(async move {
            let mut g = self.lock();
            Ok(match self.claim_key(&mut g, key, fingerprint, id.0) {
                Created::New(_) => {
                    g.venues.insert(id, VenueRecord { id, org_id: org, spec: spec.clone(), seat_count: layout.seat_count() as u32 });
                    g.audits.push(audit.clone());
                    Created::New(id)
                }
                Created::Replayed(u) => Created::Replayed(VenueId(u)),
                Created::KeyReused => Created::KeyReused,
            })
        })
    }

    fn get_venue(&self, id: VenueId) -> BoxFuture<'_, Result<Option<VenueRecord>, StoreError>> {
        Box::pin(async move { Ok(self.lock().venues.get(&id).cloned()) })
    }

    fn create_event<'a>(
        &'a self,
        key: &'a IdempotencyKey,
        fingerprint: u64,
        config: &'a EventConfig,
        _now: Millis,
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<Created<EventId>, StoreError>> {
        Box::pin(async move {
            let mut g = self.lock();
            if !g.venues.contains_key(&config.venue_id) {
                return Err(StoreError::NotFound(format!("venue {}", config.venue_id)));
            }
            Ok(match self.claim_key(&mut g, key, fingerprint, config.id.0) {
                Created::New(_) => {
                    g.events.insert(config.id, EventRow::new(config.clone()));
                    g.audits.push(audit.clone());
                    Created::New(config.id)
                }
                Created::Replayed(u) => Created::Replayed(EventId(u)),
                Created::KeyReused => Created::KeyReused,
            })
        })
    }

    fn get_event(&self, id: EventId) -> BoxFuture<'_, Result<Option<EventConfig>, StoreError>> {
        Box::pin(async move { Ok(self.lock().events.get(&id).map(|r| r.config.clone())) })
    }

    fn list_events(&self, filter: EventFilter) -> BoxFuture<'_, Result<Vec<EventConfig>, StoreError>> {
        Box::pin(async move {
            let g = self.lock();
            let mut out: Vec<EventConfig> = g
                .events
                .values()
                .map(|r| &r.config)
                .filter(|c| filter.status.is_none_or(|s| c.status == s))
                .filter(|c| filter.starts_after.is_none_or(|t| c.starts_at >= t))
                .filter(|c| filter.starts_before.is_none_or(|t| c.starts_at < t))
                .filter(|c| filter.after.is_none_or(|a| (c.starts_at, c.id) > a))
                .filter(|c| {
                    let public = matches!(c.status, EventStatus::OnSale | EventStatus::SalesClosed);
                    match &filter.visible {
                        Visibility::All => true,
                        Visibility::Public => public,
                        Visibility::PublicAnd(orgs) => public || orgs.contains(&c.org_id),
                    }
                })
                .cloned()
                .collect();
            out.sort_by_key(|c| (c.starts_at, c.id));
            out.truncate(filter.limit as usize);
            Ok(out)
        })
    }

    fn org_usage(&self, org: OrgId, now: Millis) -> BoxFuture<'_, Result<OrgUsage, StoreError>> {
        Box::pin(async move {
            let g = self.lock();
            let mine = g.venues.values().filter(|v| v.org_id == org);
            let (venues, seats) = mine.fold((0, 0), |(n, s), v| (n + 1, s + u64::from(v.seat_count)));
            let upcoming = g.events.values().filter(|e| {
                e.config.org_id == org
                    && e.config.status != EventStatus::Cancelled
                    && (e.config.starts_at > now || e.config.status == EventStatus::OnSale)
            });
            Ok(OrgUsage { venues, seats, upcoming_events: upcoming.count() as u32 })
        })
    }

    fn find_hold_event(&self, hold: HoldId) -> BoxFuture<'_, Result<Option<EventId>, StoreError>> {
        Box::pin(async move { Ok(self.lock().events.iter().find(|(_, r)| r.holds.contains_key(&hold)).map(|(id, _)| *id)) })
    }

    fn fence_event(&self, id: EventId, claim: EpochClaim) -> BoxFuture<'_, Result<Epoch, StoreError>> {
        Box::pin(async move {
            let mut g = self.lock();
            let row = g.events.get_mut(&id).ok_or_else(|| StoreError::NotFound(format!("event {id}")))?;
            row.epoch = match claim {
                EpochClaim::Next => row.epoch + 1,
                EpochClaim::Exactly(e) if e.0 > row.epoch => e.0,
                EpochClaim::Exactly(e) => return Err(StoreError::Fenced { event_id: id, epoch: e }),
            };
            Ok(Epoch(row.epoch))
        })
    }

    fn load_event(&self, id: EventId, now: Millis) -> BoxFuture<'_, Result<Option<LoadedEvent>, StoreError>> {
        Box::pin(async move {
            self.loads.fetch_add(1, Ordering::AcqRel);
            if take_one(&self.fail_loads) {
                return Err(StoreError::Unavailable("injected load failure".into()));
            }
            let g = self.lock();
            let Some(row) = g.events.get(&id) else {
                return Ok(None);
            };
            let venue = g.venues.get(&row.config.venue_id).ok_or_else(|| StoreError::Corrupt(format!("event {id} has no venue")))?;
            let layout = Layout::build(&venue.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let horizon = Millis(now.0.saturating_sub(limits::IDEMPOTENCY_RETENTION_MS as i64));
            let mut holds: Vec<Hold> = row.holds.values().cloned().collect();
            holds.sort_by_key(|h| (h.created_at, h.id));
            Ok(Some(LoadedEvent {
                config: row.config.clone(),
                layout: Arc::new(layout),
                snapshot: Snapshot {
                    blocked: row.blocked.iter().copied().collect(),
                    holds,
                    idempotency: row.idempotency.values().filter(|r| r.at >= horizon).cloned().collect(),
                },
            }))
        })
    }

    fn commit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.commit_attempts.fetch_add(1, Ordering::AcqRel);
            let mut open = self.gate.subscribe();
            if !*open.borrow_and_update() {
                self.waiting.fetch_add(1, Ordering::AcqRel);
                let _ = open.wait_for(|o| *o).await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            if take_one(&self.fail_commits) {
                return Err(StoreError::Unavailable("injected commit failure".into()));
            }
            let mut g = self.lock();
            let row = g.events.get_mut(&batch.event_id).ok_or_else(|| StoreError::NotFound(format!("event {}", batch.event_id)))?;
            // Fencing first: a stale owner writes nothing.
            if row.epoch != batch.epoch.0 {
                return Err(StoreError::Fenced { event_id: batch.event_id, epoch: batch.epoch });
            }
            Self::apply(row, &batch);
            g.audits.extend(batch.audits.iter().cloned());
            self.commits.fetch_add(1, Ordering::AcqRel);
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- harness

pub struct Setup {
    pub clock: Clock,
    pub mailbox_capacity: usize,
    pub batch_max: usize,
    /// Seats: `sections` × `rows` × `per_row`.
    pub sections: usize,
    pub rows: usize,
    pub per_row: u32,
}

impl Setup {
    /// Defaults with the wall clock.
    pub fn system() -> Setup {
        Setup::with_clock(Clock::system())
    }

    /// Defaults with a clock at `T0`; for paused tokio time this clock moves
    /// only when tokio time does. Call inside the runtime.
    pub fn at_t0() -> Setup {
        Setup::with_clock(Clock::starting_at(T0))
    }

    fn with_clock(clock: Clock) -> Setup {
        Setup {
            clock,
            mailbox_capacity: limits::MAILBOX_CAPACITY_MAX,
            batch_max: limits::BATCH_COMMANDS_MAX,
            sections: 2,
            rows: 10,
            per_row: 10,
        }
    }
}

pub struct Harness {
    pub store: Arc<MemStore>,
    pub registry: Registry,
    pub clock: Clock,
    pub event_id: EventId,
    pub layout: Arc<Layout>,
}

pub fn event_config(id: EventId, venue_id: VenueId, layout: &Layout) -> EventConfig {
    EventConfig {
        id,
        org_id: ORG,
        venue_id,
        name: "Actor test".into(),
        starts_at: SALES_END,
        sales_end: SALES_END,
        hold_duration_ms: HOLD_MS,
        ..usher_test_support::event_config(layout, Millis(0))
    }
}

impl Harness {
    /// A venue and an on-sale event written straight into a fresh `MemStore`,
    /// and a registry serving them.
    pub async fn start(setup: Setup) -> Harness {
        let store = MemStore::new();
        let venue_id = VenueId(Uuid::new_v4());
        let event_id = EventId(Uuid::new_v4());
        let layout = store.insert_venue(venue_id, grid_venue("Test hall", setup.sections, setup.rows, setup.per_row));
        store.insert_event(event_config(event_id, venue_id, &layout));
        let (registry, _join) = Registry::start(RegistryConfig {
            store: store.clone(),
            ownership: Arc::new(LocalOwnership::new(store.clone(), Box::new(OneProcess))),
            clock: setup.clock.clone(),
            mailbox_capacity: setup.mailbox_capacity,
            batch_max: setup.batch_max,
        })
        .await
        .expect("registry starts");
        Harness { store, registry, clock: setup.clock, event_id, layout: Arc::new(layout) }
    }

    pub async fn event(&self) -> EventHandle {
        within(self.registry.event(self.event_id)).await.expect("event handle")
    }

    /// Asks the registry until it hands out an actor other than `old`.
    pub async fn next_actor(&self, old: ractor::ActorId) -> EventHandle {
        within(async {
            loop {
                if let Ok(h) = self.registry.event(self.event_id).await
                    && h.actor.get_id() != old
                {
                    return h;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

// ---------------------------------------------------------------- helpers

/// Bounds every wait, so a broken behaviour fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(5);

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out waiting")
}

/// Polls `cond` (every millisecond of tokio time) until it holds.
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(WAIT, what, cond).await
}

/// `eventually`, waiting up to `limit`.
pub async fn eventually_within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let r = tokio::time::timeout(limit, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting until {what}");
}

pub fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

pub fn customer(s: &str) -> CustomerId {
    CustomerId::parse(s).unwrap()
}

pub fn new_hold_id() -> HoldId {
    HoldId(Uuid::new_v4())
}

pub fn seats(v: &[u32]) -> Vec<SeatIdx> {
    v.iter().map(|&i| SeatIdx(i)).collect()
}

pub fn hold_seats(hold_id: HoldId, who: &str, s: &[u32]) -> Command {
    Command::HoldSeats { hold_id, customer: customer(who), seats: seats(s) }
}

/// The hold of a successful hold command; panics with the reason otherwise.
pub fn expect_hold(result: Result<Reply, usher_engine::Reject>) -> Hold {
    match result {
        Ok(Reply::Hold(h)) => h,
        other => panic!("expected a hold, got {other:?}"),
    }
}
