//! What the workspace's tests and benchmarks share, in one place (like
//! rust-analyzer's `test-utils`): the seeded generator, the event-config and
//! venue builders, fresh PostgreSQL databases and an OTLP trace receiver
//! (`otlp`). A dev-dependency only: nothing here is in the `usher` binary or
//! in a crate's public API.

pub mod otlp;

use sqlx::Connection;
use usher_engine::{Currency, EventConfig, EventId, EventStatus, Layout, Millis, Money, OrgId, VenueId};
use uuid::Uuid;

/// A rectangular venue: `sections` sections (A, B, …) of `rows` rows of
/// `seats_per_row` seats, alternately in the price categories P1 and P2, in
/// UTC. (Defined in the engine behind its `test-support` feature, which only
/// this crate turns on, so the engine's own unit tests can use it too.)
pub use usher_engine::grid_venue;

/// splitmix64: tiny, seedable, the same on every platform, so a seed
/// replays a failure anywhere.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits. (Named like the copies it replaced; `Rng` is
    /// not an iterator.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform enough in `0..n` (`0` for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// An index into a slice of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
    /// In `[0, 1)`, from the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An on-sale event of `layout` that `now` falls in the sales window of:
/// ids 1 (event), 2 (venue), 3 (organization); sales from 0 to `now` + 1 day,
/// starting a day later; holds of up to 6 seats for 60 s; every category at
/// EUR 50.00; UTC. Change what a test needs with struct update syntax:
/// `EventConfig { status: EventStatus::Draft, ..event_config(&layout, now) }`.
pub fn event_config(layout: &Layout, now: Millis) -> EventConfig {
    let eur = Currency::parse("EUR").expect("EUR is ISO 4217");
    EventConfig {
        id: EventId(Uuid::from_u128(1)),
        org_id: OrgId(Uuid::from_u128(3)),
        venue_id: VenueId(Uuid::from_u128(2)),
        name: "Test event".into(),
        description: String::new(),
        starts_at: now.plus_ms(2 * 86_400_000),
        sales_start: Millis(0),
        sales_end: now.plus_ms(86_400_000),
        status: EventStatus::OnSale,
        hold_duration_ms: 60_000,
        hold_seats_max: 6,
        prices: layout.categories.iter().map(|_| Money { minor: 5_000, currency: eur }).collect(),
        time_zone: "UTC".into(),
    }
}

/// Writes a venue (one section, one row of `seats` seats) and an
/// `event_config` event on it through `store`, with fresh ids, as a store
/// test needs before it writes holds or orders: the event's config and
/// layout.
pub async fn stored_event(store: &dyn usher_actors::Store, seats: u32) -> (EventConfig, Layout) {
    use usher_actors::{AuditEntry, Created};
    let spec = grid_venue("Test hall", 1, 1, seats);
    let layout = Layout::build(&spec).expect("a grid venue builds");
    let now = Millis(10);
    let config = EventConfig { id: EventId(Uuid::new_v4()), venue_id: VenueId(Uuid::new_v4()), ..event_config(&layout, now) };
    let audit = |action: &str| AuditEntry {
        org: config.org_id,
        at: now,
        actor: "test".into(),
        address: "127.0.0.1".into(),
        action: action.into(),
        target: String::new(),
        detail: String::new(),
    };
    let key = |k: Uuid| usher_engine::IdempotencyKey::parse(&k.to_string()).expect("a uuid is a key");
    let (venue_key, event_key) = (key(config.venue_id.0), key(config.id.0));
    let (venue_audit, event_audit) = (audit("venue.create"), audit("event.create"));
    let venue = store.create_venue(&venue_key, 1, config.venue_id, config.org_id, &spec, &layout, now, &venue_audit).await;
    assert!(matches!(venue.expect("create_venue"), Created::New(_)));
    let event = store.create_event(&event_key, 1, &config, now, &event_audit).await;
    assert!(matches!(event.expect("create_event"), Created::New(_)));
    (config, layout)
}

/// The PostgreSQL server the tests use: `USHER_TEST_PG_URL` (scripts/test
/// sets it), else `postgres://postgres@127.0.0.1:5432`; no database part.
pub fn pg_admin_url() -> String {
    std::env::var("USHER_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()).trim_end_matches('/').to_owned()
}

/// A new, empty PostgreSQL database for one test: its name
/// (`usher_t_<prefix>_<random>`, at most 63 bytes) and URL. Panics with the
/// address when the server does not answer: a test never skips because a
/// service is missing.
pub async fn fresh_pg_database(prefix: &str) -> (String, String) {
    let name = format!("usher_t_{prefix}_{}", &Uuid::new_v4().simple().to_string()[..16]);
    assert!(name.len() <= 63 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
    let mut admin = admin().await;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("CREATE DATABASE");
    let url = format!("{}/{name}", pg_admin_url());
    (name, url)
}

/// Runs `spec` with the URL of a fresh SQLite file, then of a fresh
/// PostgreSQL database (dropped afterwards): a store spec on both backends.
pub async fn on_both_backends<F, Fut>(prefix: &str, spec: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = std::env::temp_dir().join(format!("usher-t-{prefix}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    spec(format!("sqlite://{}", dir.join("usher.db").display())).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (name, url) = fresh_pg_database(prefix).await;
    spec(url).await;
    drop_pg_database(&name).await;
}

/// Drops a database `fresh_pg_database` made (connections are cut).
pub async fn drop_pg_database(name: &str) {
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin().await).await;
}

async fn admin() -> sqlx::PgConnection {
    let url = format!("{}/postgres", pg_admin_url());
    sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required for these tests and was not reachable at {url}: {e} (scripts/test starts it)"))
}
