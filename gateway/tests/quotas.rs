//! Per-organization quotas on what creates data: a create that would take
//! an organization past its venues, seats or upcoming events is refused with
//! RESOURCE_EXHAUSTED (`QUOTA_EXCEEDED`) and a sentence, and changes
//! nothing; a retry of a create already made still gets its first answer;
//! freeing room (cancelling an event) lets the next one in.

mod common;

use common::*;
use tonic::Code;
use usher_engine::Quotas;
use usher_proto::v1 as pb;

async fn quota_app(quotas: Quotas) -> TestApp {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    cfg.quotas = quotas;
    TestApp::spawn_with(db, cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venues_past_the_quota_are_refused_with_a_sentence_and_a_retry_still_replays() {
    let app = quota_app(Quotas { venues_per_org: 2, seats_per_org: 1_000, upcoming_events_per_org: 10 }).await;
    let mut cat = app.catalog().await;
    let first = venue_request(1, 2, 5);
    let v1 = cat.create_venue(first.clone()).await.unwrap().into_inner();
    create_venue(&mut cat, 1, 2, 5).await;
    let e = cat.create_venue(venue_request(1, 2, 5)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::ResourceExhausted, "QUOTA_EXCEEDED"), "{e:?}");
    assert_eq!(
        e.message(),
        "this organization already has 2 of its 2 venues; remove an unused venue or ask the operator for a larger quota"
    );
    // The retry of a create made before the quota was reached is answered as the first time.
    assert_eq!(cat.create_venue(first).await.unwrap().into_inner().venue_id, v1.venue_id);
    let org = usher_engine::OrgId::parse(&app.creds.org_id).unwrap();
    let usage = app.app_ctx.store().org_usage(org, app.app_ctx.now()).await.unwrap();
    assert_eq!((usage.venues, usage.seats), (2, 20), "the refused venue left nothing behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_past_the_quota_are_refused() {
    let app = quota_app(Quotas { venues_per_org: 10, seats_per_org: 25, upcoming_events_per_org: 10 }).await;
    let mut cat = app.catalog().await;
    create_venue(&mut cat, 1, 2, 10).await;
    let e = cat.create_venue(venue_request(1, 1, 6)).await.unwrap_err();
    assert_eq!(reason(&e), "QUOTA_EXCEEDED");
    assert!(
        e.message().starts_with("this organization has 20 of its 25 seats across its venues, and this would add 6;"),
        "{}",
        e.message()
    );
    create_venue(&mut cat, 1, 1, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upcoming_events_past_the_quota_are_refused_until_one_is_cancelled() {
    let app = quota_app(Quotas { venues_per_org: 10, seats_per_org: 1_000, upcoming_events_per_org: 2 }).await;
    let mut cat = app.catalog().await;
    let venue = create_venue(&mut cat, 1, 2, 5).await;
    let first = cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner();
    cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap();
    let e = cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::ResourceExhausted, "QUOTA_EXCEEDED"));
    assert!(e.message().starts_with("this organization already has 2 of its 2 upcoming events; cancel one"), "{}", e.message());
    cat.cancel_event(pb::EventCommandRequest { event_id: first.event_id, idempotency_key: key() }).await.unwrap();
    cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap();
}
