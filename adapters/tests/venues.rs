//! Venues are stored as their specification and their layouts are built
//! once and shared, on both backends (a fresh SQLite file and a fresh
//! PostgreSQL database, which must be there).

use std::sync::Arc;

use sqlx::Connection as _;
use usher_actors::{AuditEntry, Created};
use usher_adapters::connect_all;
use usher_engine::{EventConfig, EventId, IdempotencyKey, Layout, Millis, VenueId, grid_venue};
use usher_test_support::{event_config, on_both_backends};

fn audit(config: &EventConfig) -> AuditEntry {
    AuditEntry {
        org: config.org_id,
        at: Millis(10),
        actor: "test".into(),
        address: "127.0.0.1".into(),
        action: "test".into(),
        target: String::new(),
        detail: String::new(),
    }
}

/// Bytes the database holds: SQLite's pages, PostgreSQL's relations.
async fn database_bytes(url: &str) -> i64 {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let q = "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'm') AND n.nspname LIKE 'bc_%'";
        sqlx::query_scalar(q).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        // Pages still in the write-ahead log go to the file first.
        sqlx::query("PRAGMA wal_checkpoint(FULL)").execute(&mut c).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut c).await.unwrap();
        let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&mut c).await.unwrap();
        pages * size
    }
}

/// A 200,000-seat venue costs its specification (a few kilobytes), not a
/// row per seat (it was about 42 MB).
#[tokio::test]
async fn a_large_venue_is_stored_as_its_specification() {
    on_both_backends("venuesize", |url| async move {
        let (store, _, _) = connect_all(&url).await.unwrap();
        let before = database_bytes(&url).await;
        // 10 sections of 100 rows of 200 seats.
        let spec = grid_venue("Stadium", 10, 100, 200);
        let layout = Layout::build(&spec).unwrap();
        assert_eq!(layout.seat_count(), 200_000);
        let config = EventConfig { venue_id: VenueId(uuid::Uuid::new_v4()), ..event_config(&layout, Millis(10)) };
        let key = IdempotencyKey::parse("venue-200k").unwrap();
        let made = store.create_venue(&key, 1, config.venue_id, config.org_id, &spec, &layout, Millis(10), &audit(&config)).await.unwrap();
        assert!(matches!(made, Created::New(_)));
        let grown = database_bytes(&url).await - before;
        assert!(grown < 1024 * 1024, "{url}: a 200,000-seat venue added {grown} bytes");
        let back = store.get_venue(config.venue_id).await.unwrap().unwrap();
        assert_eq!((back.spec, back.seat_count), (spec, 200_000), "the specification is the venue");
    })
    .await;
}

/// Events on one venue share one layout while any of them is loaded.
#[tokio::test]
async fn events_on_one_venue_share_one_layout() {
    on_both_backends("venuelayout", |url| async move {
        let (store, _, _) = connect_all(&url).await.unwrap();
        let spec = grid_venue("Hall", 2, 3, 4);
        let layout = Layout::build(&spec).unwrap();
        let first = EventConfig { venue_id: VenueId(uuid::Uuid::new_v4()), ..event_config(&layout, Millis(10)) };
        let second = EventConfig { id: EventId(uuid::Uuid::new_v4()), ..first.clone() };
        let key = |s: &str| IdempotencyKey::parse(s).unwrap();
        store.create_venue(&key("v"), 1, first.venue_id, first.org_id, &spec, &layout, Millis(10), &audit(&first)).await.unwrap();
        for (k, e) in [("e1", &first), ("e2", &second)] {
            assert!(matches!(store.create_event(&key(k), 1, e, Millis(10), &audit(e)).await.unwrap(), Created::New(_)));
        }
        let a = store.load_event(first.id, Millis(20)).await.unwrap().unwrap();
        let b = store.load_event(second.id, Millis(20)).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.layout, &b.layout), "one layout for both events");
        let again = store.load_event(first.id, Millis(30)).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.layout, &again.layout), "a reload shares it too");
    })
    .await;
}
