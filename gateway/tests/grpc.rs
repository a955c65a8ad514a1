//! The gRPC API end to end, against SQLite and against PostgreSQL: the real
//! app on port 0 with a fresh database per test.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use usher_proto::v1::{self as pb, inventory_service_client::InventoryServiceClient};

both_backends!(
    a_thousand_clients_race_for_one_seat_and_exactly_one_wins,
    overlapping_multi_seat_holds_never_share_a_seat,
    bad_input_gets_a_clear_status_and_changes_nothing,
    a_retry_with_the_same_key_gets_the_first_answer,
    holds_can_be_read_released_and_best_available_picks_neighbours,
    organizers_block_seats_and_change_sales_status,
    events_are_listed_in_pages_and_filtered,
    a_venue_reads_back_as_it_was_created,
    storage_that_breaks_an_invariant_is_refused_not_served,
    a_hold_expires_by_itself_and_frees_its_seats,
    seat_changes_are_streamed_to_watchers,
    every_change_writes_its_domain_events_to_the_outbox,
);

async fn a_thousand_clients_race_for_one_seat_and_exactly_one_wins(b: Backend) {
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 2, 5, 10).await;
    const CLIENTS: usize = 1000;
    // Many HTTP/2 connections, as real clients would have.
    let mut channels = Vec::new();
    for _ in 0..20 {
        channels.push(app.channel().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut c = InventoryServiceClient::new(channels[i % channels.len()].clone());
        let req = hold_req(&event, &format!("buyer-{i}"), &["A-3-5"]);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            let r = c.hold_seats(req).await;
            (r, t.elapsed())
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut wins = Vec::new();
    let mut taken = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (r, lat) = t.await.unwrap();
        latencies.push(lat);
        match r {
            Ok(h) => wins.push(h.into_inner()),
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                assert_eq!(reason(&s), "SEATS_TAKEN");
                assert!(s.message().contains("A-3-5"), "the message names the seat: {}", s.message());
                taken += 1;
            }
        }
    }
    let all = start.elapsed();
    latencies.sort();
    println!(
        "[{b:?}] {CLIENTS} clients on one seat resolved in {all:?}; p50 {:?} p99 {:?} max {:?}; batches: {}",
        latencies[CLIENTS / 2],
        latencies[CLIENTS * 99 / 100],
        latencies[CLIENTS - 1],
        app.app_ctx.registry.stats().summary()
    );
    assert_eq!(wins.len(), 1, "exactly one winner");
    assert_eq!(taken, CLIENTS - 1);
    let winner = &wins[0];
    assert_eq!(winner.seats.iter().map(|s| s.seat_id.as_str()).collect::<Vec<_>>(), ["A-3-5"]);
    // Storage holds exactly one hold for the seat, and one claim.
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM holds WHERE event_id = $1", &[&event]).await, 1);
    let claims = app.db.claims(&event).await;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].1.as_deref(), Some(winner.hold_id.as_str()));
    app.stop().await;
}

async fn overlapping_multi_seat_holds_never_share_a_seat(b: Backend) {
    let app = TestApp::spawn(b).await;
    // 1 section × 3 rows × 10 seats: 30 seats for 300 clients wanting 2-4 each.
    let event = create_event(&app, 1, 3, 10).await;
    let mut rng = Rng(0x5eed_0001);
    let mut tasks = Vec::new();
    let ch = app.channel().await;
    for i in 0..300 {
        let n = 2 + rng.below(3) as usize;
        let mut seats = HashSet::new();
        while seats.len() < n {
            seats.insert(format!("A-{}-{}", 1 + rng.below(3), 1 + rng.below(10)));
        }
        let seats: Vec<String> = seats.into_iter().collect();
        let mut c = InventoryServiceClient::new(ch.clone());
        let req =
            pb::HoldSeatsRequest { idempotency_key: key(), event_id: event.clone(), customer_id: format!("c{i}"), seat_ids: seats.clone() };
        tasks.push(tokio::spawn(async move { (seats, c.hold_seats(req).await) }));
    }
    let mut acked: Vec<pb::Hold> = Vec::new();
    for t in tasks {
        let (asked, r) = t.await.unwrap();
        match r {
            Ok(h) => {
                let h = h.into_inner();
                let got: HashSet<&str> = h.seats.iter().map(|s| s.seat_id.as_str()).collect();
                assert_eq!(got, asked.iter().map(|s| s.as_str()).collect(), "all or nothing: exactly the seats asked for");
                acked.push(h);
            }
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    assert!(!acked.is_empty());
    let mut seen = HashSet::new();
    for h in &acked {
        for s in &h.seats {
            assert!(seen.insert(s.seat_id.clone()), "seat {} in two holds", s.seat_id);
        }
    }
    // Every acknowledged hold is in storage; every rejected one left nothing.
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM holds WHERE event_id = $1", &[&event]).await, acked.len() as i64);
    for h in &acked {
        assert_eq!(app.db.scalar("SELECT COUNT(*) FROM holds WHERE id = $1 AND state = 'active'", &[&h.hold_id]).await, 1);
        assert_eq!(app.db.scalar("SELECT COUNT(*) FROM seat_claims WHERE hold_id = $1", &[&h.hold_id]).await, h.seats.len() as i64);
    }
    assert_eq!(app.db.claims(&event).await.len(), seen.len());
    println!("[{b:?}] 300 overlapping clients: {} holds acknowledged, {} seats held", acked.len(), seen.len());
    app.stop().await;
}

async fn bad_input_gets_a_clear_status_and_changes_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 1, 2, 10).await;
    let mut inv = app.inventory().await;
    let expect = |r: Result<tonic::Response<pb::Hold>, tonic::Status>, code: Code, needle: &str| {
        let s = r.expect_err("must be refused");
        assert_eq!(s.code(), code, "{s:?}");
        assert!(s.message().contains(needle), "message {:?} should mention {needle:?}", s.message());
    };
    let unknown_event = uuid::Uuid::new_v4().to_string();
    expect(inv.hold_seats(hold_req(&unknown_event, "c", &["A-1-1"])).await, Code::NotFound, &unknown_event);
    expect(inv.hold_seats(hold_req("not-a-uuid", "c", &["A-1-1"])).await, Code::InvalidArgument, "event_id");
    expect(inv.hold_seats(hold_req(&event, "c", &["A-1-99"])).await, Code::NotFound, "A-1-99");
    expect(inv.hold_seats(hold_req(&event, "c", &["Z-1-1", "A-1-1"])).await, Code::NotFound, "Z-1-1");
    expect(inv.hold_seats(hold_req(&event, "c", &["A_1_1"])).await, Code::InvalidArgument, "A_1_1");
    expect(inv.hold_seats(hold_req(&event, "c", &[])).await, Code::InvalidArgument, "seat_ids");
    expect(inv.hold_seats(hold_req(&event, "c", &["A-1-1", "A-1-1"])).await, Code::InvalidArgument, "A-1-1");
    expect(
        inv.hold_seats(hold_req(&event, "c", &["A-1-1", "A-1-2", "A-1-3", "A-1-4", "A-1-5", "A-1-6", "A-1-7"])).await,
        Code::ResourceExhausted,
        "at most 6",
    );
    expect(inv.hold_seats(hold_req(&event, "bad customer!", &["A-1-1"])).await, Code::InvalidArgument, "customer_id");
    let mut no_key = hold_req(&event, "c", &["A-1-1"]);
    no_key.idempotency_key.clear();
    expect(inv.hold_seats(no_key).await, Code::InvalidArgument, "idempotency_key");
    let best = pb::HoldBestAvailableRequest {
        idempotency_key: key(),
        event_id: event.clone(),
        customer_id: "c".into(),
        quantity: 0,
        ..Default::default()
    };
    expect(inv.hold_best_available(best).await, Code::InvalidArgument, "quantity");
    let best = pb::HoldBestAvailableRequest {
        idempotency_key: key(),
        event_id: event.clone(),
        customer_id: "c".into(),
        quantity: 2,
        section: "NOPE".into(),
        ..Default::default()
    };
    expect(inv.hold_best_available(best).await, Code::InvalidArgument, "NOPE");
    expect(inv.get_hold(pb::GetHoldRequest { hold_id: "x".into(), event_id: String::new() }).await, Code::InvalidArgument, "hold_id");
    let missing = uuid::Uuid::new_v4().to_string();
    expect(inv.get_hold(pb::GetHoldRequest { hold_id: missing.clone(), event_id: String::new() }).await, Code::NotFound, &missing);
    // A closed event refuses holds.
    let mut cat = app.catalog().await;
    cat.close_sales(pb::EventCommandRequest { idempotency_key: key(), event_id: event.clone() }).await.unwrap();
    expect(inv.hold_seats(hold_req(&event, "c", &["A-1-1"])).await, Code::FailedPrecondition, "not on sale");
    // Bad catalog input.
    let e = cat.create_event(event_request("not-a-venue", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let v = create_venue(&mut cat, 1, 1, 1).await;
    let mut r = event_request(&v.venue_id, 0);
    r.prices.pop();
    let e = cat.create_event(r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("P2"), "{}", e.message());
    let e = cat.create_venue(pb::CreateVenueRequest { idempotency_key: key(), name: "x".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Nothing changed.
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM holds", &[]).await, 0);
    assert_eq!(app.db.claims(&event).await.len(), 0);
    // Malformed requests are not remembered under their keys; the two
    // executed commands are (close sales, and the hold refused because sales
    // were closed: its retry must get the same answer).
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM idempotency WHERE scope = $1", &[&event]).await, 2);
    app.stop().await;
}

async fn a_retry_with_the_same_key_gets_the_first_answer(b: Backend) {
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 1, 1, 10).await;
    let mut inv = app.inventory().await;
    let req = hold_req(&event, "alice", &["A-1-1", "A-1-2"]);
    let first = inv.hold_seats(req.clone()).await.unwrap().into_inner();
    let again = inv.hold_seats(req.clone()).await.unwrap().into_inner();
    assert_eq!(first, again);
    let mut other = req.clone();
    other.seat_ids = vec!["A-1-3".into()];
    let e = inv.hold_seats(other).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(reason(&e), "IDEMPOTENCY_KEY_REUSED");
    // A rejection is an answer too: its retry gets the same rejection even
    // after the seat is free again.
    let lost = hold_req(&event, "bob", &["A-1-1"]);
    assert_eq!(inv.hold_seats(lost.clone()).await.unwrap_err().code(), Code::FailedPrecondition);
    inv.release_hold(pb::ReleaseHoldRequest { idempotency_key: key(), hold_id: first.hold_id.clone(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(inv.hold_seats(lost).await.unwrap_err().code(), Code::FailedPrecondition);
    // Catalog creates too.
    let mut cat = app.catalog().await;
    let v = create_venue(&mut cat, 1, 1, 3).await;
    let r = event_request(&v.venue_id, 0);
    let e1 = cat.create_event(r.clone()).await.unwrap().into_inner();
    let e2 = cat.create_event(r.clone()).await.unwrap().into_inner();
    assert_eq!(e1.event_id, e2.event_id);
    let mut r2 = r.clone();
    r2.name = "Another".into();
    assert_eq!(cat.create_event(r2).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM events", &[]).await, 2);
    // The answer survives a restart.
    let db = app.stop().await;
    let app = TestApp::spawn_on(db).await;
    let mut inv = app.inventory().await;
    assert_eq!(inv.hold_seats(req).await.unwrap().into_inner(), first);
    app.stop().await;
}

async fn holds_can_be_read_released_and_best_available_picks_neighbours(b: Backend) {
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 2, 3, 10).await;
    let mut inv = app.inventory().await;
    let h = inv
        .hold_best_available(pb::HoldBestAvailableRequest {
            idempotency_key: key(),
            event_id: event.clone(),
            customer_id: "carol".into(),
            quantity: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = h.seats.iter().map(|s| s.seat_id.as_str()).collect();
    assert_eq!(ids, ["A-1-4", "A-1-5", "A-1-6", "A-1-7"], "side by side, centre of the best row");
    assert_eq!(h.orphan_seats_left, 0, "the centre of an empty row of ten strands nobody");
    assert_eq!(h.total.as_ref().unwrap().amount_minor, 4 * 9_000);
    assert_eq!(h.state, pb::HoldState::Active as i32);
    let got = inv.get_hold(pb::GetHoldRequest { hold_id: h.hold_id.clone(), event_id: String::new() }).await.unwrap().into_inner();
    assert_eq!(got, h);
    let e = inv
        .release_hold(pb::ReleaseHoldRequest {
            idempotency_key: key(),
            hold_id: h.hold_id.clone(),
            customer_id: "mallory".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // Someone else's hold reads exactly like a missing one.
    assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "HOLD_NOT_FOUND"));
    let r = inv
        .release_hold(pb::ReleaseHoldRequest {
            idempotency_key: key(),
            hold_id: h.hold_id.clone(),
            customer_id: "carol".into(),
            event_id: event.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::HoldState::Released as i32);
    let e = inv
        .release_hold(pb::ReleaseHoldRequest { idempotency_key: key(), hold_id: h.hold_id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(app.db.claims(&event).await.is_empty());
    // Section filter.
    let h = inv
        .hold_best_available(pb::HoldBestAvailableRequest {
            idempotency_key: key(),
            event_id: event.clone(),
            customer_id: "dave".into(),
            quantity: 2,
            section: "B".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(h.seats.iter().all(|s| s.section == "B"));
    app.stop().await;
}

async fn organizers_block_seats_and_change_sales_status(b: Backend) {
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 1, 1, 5).await;
    let mut cat = app.catalog().await;
    let mut inv = app.inventory().await;
    inv.hold_seats(hold_req(&event, "a", &["A-1-1"])).await.unwrap();
    let blk = |seats: &[&str]| pb::SeatsCommandRequest {
        idempotency_key: key(),
        event_id: event.clone(),
        seat_ids: seats.iter().map(|s| s.to_string()).collect(),
    };
    let e = cat.block_seats(blk(&["A-1-1", "A-1-2"])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("A-1-1"));
    assert_eq!(cat.block_seats(blk(&["A-1-2", "A-1-3"])).await.unwrap().into_inner().changed, 2);
    assert_eq!(inv.hold_seats(hold_req(&event, "b", &["A-1-2"])).await.unwrap_err().code(), Code::FailedPrecondition);
    let m = cat.get_seat_map(pb::GetSeatMapRequest { event_id: event.clone() }).await.unwrap().into_inner();
    let status = |id: &str| m.seats.iter().find(|s| s.seat_id == id).unwrap().status;
    assert_eq!(status("A-1-1"), pb::SeatStatus::Held as i32);
    assert_eq!(status("A-1-2"), pb::SeatStatus::Blocked as i32);
    assert_eq!(status("A-1-5"), pb::SeatStatus::Available as i32);
    assert_eq!(m.counts.unwrap(), pb::SeatCounts { available: 2, held: 1, sold: 0, blocked: 2 });
    assert_eq!(cat.unblock_seats(blk(&["A-1-5"])).await.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(cat.unblock_seats(blk(&["A-1-2"])).await.unwrap().into_inner().changed, 1);
    let cmd = || pb::EventCommandRequest { idempotency_key: key(), event_id: event.clone() };
    assert_eq!(cat.close_sales(cmd()).await.unwrap().into_inner().status, pb::EventStatus::SalesClosed as i32);
    assert_eq!(cat.open_sales(cmd()).await.unwrap().into_inner().status, pb::EventStatus::OnSale as i32);
    let cancelled = cat.cancel_event(cmd()).await.unwrap().into_inner();
    assert_eq!(cancelled.status, pb::EventStatus::Cancelled as i32);
    assert_eq!(cancelled.counts.unwrap().held, 0, "cancelling releases live holds");
    assert_eq!(cat.open_sales(cmd()).await.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM events WHERE id = $1 AND status = 'cancelled'", &[&event]).await, 1);
    // Survives a restart.
    let db = app.stop().await;
    let app = TestApp::spawn_on(db).await;
    let mut cat = app.catalog().await;
    let ev = cat.get_event(pb::GetEventRequest { event_id: event.clone() }).await.unwrap().into_inner();
    assert_eq!(ev.status, pb::EventStatus::Cancelled as i32);
    assert_eq!(ev.counts.unwrap(), pb::SeatCounts { available: 4, held: 0, sold: 0, blocked: 1 });
    app.stop().await;
}

async fn events_are_listed_in_pages_and_filtered(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut cat = app.catalog().await;
    let v = create_venue(&mut cat, 1, 1, 2).await;
    for i in 0..7 {
        let mut r = event_request(&v.venue_id, 0);
        r.name = format!("Show {i}");
        r.starts_at = Some(now_ts(86_400 * (10 + i)));
        r.open_sales = i % 2 == 0;
        cat.create_event(r).await.unwrap();
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page =
            cat.list_events(pb::ListEventsRequest { page_size: 3, page_token: token, ..Default::default() }).await.unwrap().into_inner();
        assert!(page.events.len() <= 3);
        names.extend(page.events.iter().map(|e| e.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, (0..7).map(|i| format!("Show {i}")).collect::<Vec<_>>(), "ordered by start, no gaps or repeats");
    let drafts =
        cat.list_events(pb::ListEventsRequest { status: pb::EventStatus::Draft as i32, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(drafts.events.len(), 3);
    let window = cat
        .list_events(pb::ListEventsRequest {
            starts_after: Some(now_ts(86_400 * 12 - 60)),
            starts_before: Some(now_ts(86_400 * 14 - 60)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(window.events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["Show 2", "Show 3"]);
    assert_eq!(
        cat.list_events(pb::ListEventsRequest { page_token: "garbage".into(), ..Default::default() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        cat.list_events(pb::ListEventsRequest { page_size: 10_000, ..Default::default() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    app.stop().await;
}

async fn storage_that_breaks_an_invariant_is_refused_not_served(b: Backend) {
    let app = TestApp::spawn(b).await;
    let broken = create_event(&app, 1, 1, 5).await;
    let healthy = create_event(&app, 1, 1, 5).await;
    let mut inv = app.inventory().await;
    inv.hold_seats(hold_req(&broken, "ann", &["A-1-1", "A-1-2"])).await.unwrap();
    let db = app.stop().await;
    // Someone deletes the claim rows behind Usher's back.
    db.exec("DELETE FROM seat_claims WHERE event_id = $1", &[&broken]).await;
    let app = TestApp::spawn_on(db).await;
    let mut cat = app.catalog().await;
    let e = cat.get_event(pb::GetEventRequest { event_id: broken.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(!e.message().contains("claim"), "no internals leak to the caller: {}", e.message());
    let mut inv = app.inventory().await;
    let e = inv.hold_seats(hold_req(&broken, "bob", &["A-1-1"])).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(app.db.claims(&broken).await.is_empty(), "nothing was written on top of broken data");
    // Other events are served as usual.
    inv.hold_seats(hold_req(&healthy, "bob", &["A-1-1"])).await.unwrap();
    app.stop().await;
}

async fn a_venue_reads_back_as_it_was_created(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut cat = app.catalog().await;
    let v = create_venue(&mut cat, 3, 4, 7).await;
    assert_eq!(v.seat_count, 84);
    let got = cat.get_venue(pb::GetVenueRequest { venue_id: v.venue_id.clone() }).await.unwrap().into_inner();
    assert_eq!(got, v);
    assert_eq!(got.sections.len(), 3);
    assert_eq!(got.sections[1].rows[3].seats, 7);
    let e = cat.get_venue(pb::GetVenueRequest { venue_id: uuid::Uuid::new_v4().to_string() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = cat.get_venue(pb::GetVenueRequest { venue_id: "x".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

async fn a_hold_expires_by_itself_and_frees_its_seats(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut cat = app.catalog().await;
    let v = create_venue(&mut cat, 1, 1, 5).await;
    let event = cat.create_event(event_request(&v.venue_id, 1)).await.unwrap().into_inner().event_id;
    let mut inv = app.inventory().await;
    let h = inv.hold_seats(hold_req(&event, "erin", &["A-1-1", "A-1-2"])).await.unwrap().into_inner();
    // No call at all until storage shows the expiry: only the actor's own
    // timer can have done it (any call would also run a due Expire).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if app.db.scalar("SELECT COUNT(*) FROM holds WHERE id = $1 AND state = 'expired'", &[&h.hold_id]).await == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the hold never expired by itself");
    }
    assert!(app.db.claims(&event).await.is_empty());
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM outbox WHERE topic = 'reservation-expired' AND aggregate_id = $1", &[&event]).await, 1);
    let got = inv.get_hold(pb::GetHoldRequest { hold_id: h.hold_id.clone(), event_id: event.clone() }).await.unwrap().into_inner();
    assert_eq!(got.state, pb::HoldState::Expired as i32);
    inv.hold_seats(hold_req(&event, "frank", &["A-1-1"])).await.unwrap();
    app.stop().await;
}

async fn seat_changes_are_streamed_to_watchers(b: Backend) {
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 1, 1, 4).await;
    let mut cat = app.catalog().await;
    let mut stream = cat.watch_seats(pb::WatchSeatsRequest { event_id: event.clone(), compact: false }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.snapshot);
    assert_eq!(first.changes.len(), 4);
    let mut inv = app.inventory().await;
    inv.hold_seats(hold_req(&event, "gina", &["A-1-2", "A-1-3"])).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("a change arrives").unwrap().unwrap();
    assert!(!next.snapshot);
    let mut got: Vec<(String, i32)> = next.changes.iter().map(|c| (c.seat_id.clone(), c.status)).collect();
    got.sort();
    assert_eq!(got, [("A-1-2".to_string(), pb::SeatStatus::Held as i32), ("A-1-3".to_string(), pb::SeatStatus::Held as i32)]);
    assert_eq!(next.counts.unwrap().held, 2);
    let Err(e) = cat.watch_seats(pb::WatchSeatsRequest { event_id: uuid::Uuid::new_v4().to_string(), compact: false }).await else {
        panic!("an unknown event must be refused")
    };
    assert_eq!(e.code(), Code::NotFound);
    app.stop().await;
}

async fn every_change_writes_its_domain_events_to_the_outbox(b: Backend) {
    use prost::Message;
    use usher_proto::events as ev;
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 1, 1, 5).await;
    let mut inv = app.inventory().await;
    let mut cat = app.catalog().await;
    let h = inv.hold_seats(hold_req(&event, "hal", &["A-1-1", "A-1-2"])).await.unwrap().into_inner();
    inv.release_hold(pb::ReleaseHoldRequest { idempotency_key: key(), hold_id: h.hold_id.clone(), ..Default::default() }).await.unwrap();
    let blk = pb::SeatsCommandRequest { idempotency_key: key(), event_id: event.clone(), seat_ids: vec!["A-1-5".into()] };
    cat.block_seats(blk).await.unwrap();
    cat.close_sales(pb::EventCommandRequest { idempotency_key: key(), event_id: event.clone() }).await.unwrap();

    let created = app.db.payloads("reservation-created", &event).await;
    assert_eq!(created.len(), 1);
    let c = ev::ReservationCreated::decode(created[0].as_slice()).unwrap();
    // The stream carries the whole customer id: the box office's counter customer "hal", in its organization's namespace.
    let org = uuid::Uuid::parse_str(&app.creds.org_id).unwrap().simple().to_string();
    assert_eq!((c.hold_id.as_str(), c.customer_id.as_str()), (h.hold_id.as_str(), format!("o:{org}:hal").as_str()));
    let seats: Vec<&str> = c.seats.iter().map(|s| s.seat_id.as_str()).collect();
    assert_eq!(seats, ["A-1-1", "A-1-2"], "every seat, not only the first");
    let env = c.envelope.unwrap();
    assert_eq!(env.event_id, event);
    assert!(!env.message_id.is_empty() && env.occurred_at.is_some());
    assert_eq!(c.expires_at, h.expires_at);

    let released = app.db.payloads("reservation-released", &event).await;
    let r = ev::ReservationReleased::decode(released[0].as_slice()).unwrap();
    assert_eq!((r.hold_id, r.seats.len()), (h.hold_id.clone(), 2));
    let blocked = app.db.payloads("seats-blocked", &event).await;
    let bl = ev::SeatsBlockChanged::decode(blocked[0].as_slice()).unwrap();
    assert!(bl.blocked);
    assert_eq!(bl.seats[0].seat_id, "A-1-5");
    let status = app.db.payloads("event-status-changed", &event).await;
    let st = ev::EventStatusChanged::decode(status[0].as_slice()).unwrap();
    assert_eq!((st.from.as_str(), st.to.as_str()), ("on_sale", "sales_closed"));
    // Message ids are unique across the outbox: consumers deduplicate on them.
    assert_eq!(
        app.db.scalar("SELECT COUNT(DISTINCT message_id) FROM outbox", &[]).await,
        app.db.scalar("SELECT COUNT(*) FROM outbox", &[]).await
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_and_health_are_served() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ch = app.channel().await;
    let mut h = HealthClient::new(ch.clone());
    let r = h.check(HealthCheckRequest { service: "usher.v1.InventoryService".into() }).await.unwrap().into_inner();
    assert_eq!(r.status, 1, "SERVING");
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse,
        };
        let mut c = ServerReflectionClient::new(ch.clone());
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut s = c.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(l)) = s.message().await.unwrap().unwrap().message_response else {
            panic!("v1 list")
        };
        let names: HashSet<String> = l.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains("usher.v1.CatalogService") && names.contains("usher.v1.InventoryService"), "{names:?}");
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse,
        };
        let mut c = ServerReflectionClient::new(ch);
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut s = c.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(l)) = s.message().await.unwrap().unwrap().message_response else {
            panic!("v1alpha list")
        };
        assert!(l.service.iter().any(|s| s.name == "usher.v1.InventoryService"));
    }
    app.stop().await;
}
