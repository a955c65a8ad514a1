//! Names in any script print on tickets with their own glyphs, end to end
//! through the real app; a name with a character no ticket font can draw is
//! refused where it enters (gRPC and HTTP), naming the character, and
//! nothing is stored.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient,
    ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient,
};

both_backends!(a_ticket_prints_cjk_names_with_cjk_glyphs_and_wraps_a_long_holder);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_no_ticket_font_can_draw_are_refused_at_the_edge_and_nothing_is_stored() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cat = app.catalog().await;
    let refused = |e: tonic::Status, field: &str, code: &str| {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let m = e.message();
        assert!(m.starts_with(&format!("{field} has the character ")) && m.contains(code), "{m}");
        assert!(m.contains("no ticket font can draw"), "{m}");
    };

    // A private-use character, an unassigned one, an emoji (no colour emoji font is embedded).
    let mut v = venue_request(1, 1, 4);
    v.name = "Hall \u{E000}".into();
    refused(cat.create_venue(v).await.unwrap_err(), "venue.name", "U+E000");
    let mut v = venue_request(1, 1, 4);
    v.sections[0].name = "Stalls \u{1F389}".into();
    refused(cat.create_venue(v).await.unwrap_err(), "venue.sections.name", "U+1F389");
    let mut v = venue_request(1, 1, 4);
    v.categories[0].name = "Premium \u{0378}".into();
    refused(cat.create_venue(v).await.unwrap_err(), "venue.categories.name", "U+0378");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM venues", &[]).await, 0);

    let venue = create_venue(&mut cat, 1, 1, 4).await;
    let mut e = event_request(&venue.venue_id, 0);
    e.name = "夜 \u{F8FF}".into();
    refused(cat.create_event(e).await.unwrap_err(), "name", "U+F8FF");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM events", &[]).await, 0);

    // The email address is printed as the holder: over HTTP it is a 400.
    let event = cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner().event_id;
    let hold = app.inventory().await.hold_seats(hold_req(&event, "ann", &["A-1-1"])).await.unwrap().into_inner();
    let body = serde_json::json!({ "idempotency_key": key(), "customer_id": "ann", "email": "ann\u{1F389}@example.com", "hold_ids": [hold.hold_id] });
    let (status, answer) =
        http(app.http, "POST", "/api/orders", &[("Content-Type", "application/json"), app.bearer_ref()], Some(&body.to_string())).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("email has the character") && answer.contains("U+1F389"), "{answer}");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM orders", &[]).await, 0);
    app.stop().await;
}

/// An event, venue and category named in Chinese, Japanese and Korean
/// (and a section, which the ticket shows by its code), bought by a holder
/// with a 254-byte address: the ticket PDF the buyer gets embeds the CJK
/// face, gives every name back, and the holder wraps (it is read back
/// whole, across lines).
async fn a_ticket_prints_cjk_names_with_cjk_glyphs_and_wraps_a_long_holder(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ch = app.channel().await;
    let mut cat = CatalogServiceClient::new(ch.clone());
    let mut v = venue_request(1, 1, 4);
    v.name = "東京ドーム".into();
    v.sections[0].name = "서울 구역".into();
    v.categories[0].name = "일등석".into();
    let venue = cat.create_venue(v).await.unwrap().into_inner();
    let mut e = event_request(&venue.venue_id, 0);
    e.name = "夜".into();
    let event = cat.create_event(e).await.unwrap().into_inner().event_id;

    let customer = "r".repeat(64);
    let email = format!("{}@{}.{}.{}.jp", "a".repeat(64), "b".repeat(63), "c".repeat(63), "d".repeat(58));
    assert_eq!(email.len(), 254);
    let hold = InventoryServiceClient::new(ch.clone()).hold_seats(hold_req(&event, &customer, &["A-1-1"])).await.unwrap().into_inner();
    let mut ord = OrderingServiceClient::new(ch.clone());
    let order = ord.create_order(order_req(&customer, &email, vec![hold.hold_id])).await.unwrap().into_inner();
    PaymentServiceClient::new(ch).pay_order(pay_req(&order.order_id, "4242 4242 4242 4242", 15_000)).await.unwrap();
    let started = Instant::now();
    loop {
        let o = ord.get_order(pb::GetOrderRequest { order_id: order.order_id.clone() }).await.unwrap().into_inner();
        if o.status == pb::OrderStatus::Fulfilled as i32 && o.step == "done" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "order {} is not fulfilled: {o:?}", order.order_id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pdf = app.db.data_dir.join("tickets").join(format!("{}.pdf", order.order_id));
    let pdf = pdf.to_str().unwrap();
    let fonts = run("pdffonts", &[pdf]);
    assert!(fonts.contains("NotoSansCJKsc-Regular"), "the ticket embeds the CJK face:\n{fonts}");
    let text = run("pdftotext", &[pdf, "-"]);
    for name in ["夜", "東京ドーム", "일등석"] {
        assert!(text.contains(name), "the ticket gives back {name:?}:\n{text}");
    }
    let flat: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(flat.contains(&format!("{customer}<{email}>")), "the holder is printed whole:\n{text}");
    assert!(!text.lines().any(|l| l.contains(&email)), "a 254-byte address does not fit on one line, so it wraps:\n{text}");
    app.stop().await;
}
