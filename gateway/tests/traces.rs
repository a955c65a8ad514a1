//! One purchase is one trace: the real binary exports its spans over
//! OTLP/gRPC to a receiver in the test (the collector's own service
//! definition), and the spans of a hold, an order and its payment, sent
//! with the same W3C `traceparent`, come back under that trace id with their
//! parents intact: the requests, the group commit that decided the hold
//! (linked to the request), the saga's steps, the render and the email,
//! whose `Traceparent` header names its span.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::otlp::{Receiver, Span, hex, new_trace, traced};
use common::*;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient,
    ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient,
    webhook_service_client::WebhookServiceClient,
};

/// A webhook receiver on loopback answering 200 to every POST; the
/// `traceparent` header of each, in arrival order.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then the body its Content-Length announces.
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            let tp = head.lines().find_map(|l| l.strip_prefix("traceparent: ").map(str::to_owned)).unwrap_or_default();
                            seen.lock().unwrap().push(tp);
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_trace_from_the_first_request_to_the_email() {
    let (receiver, endpoint) = Receiver::start(true).await.unwrap();
    let db = TestDb::fresh(Backend::Sqlite).await;
    let env = [
        ("USHER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("USHER_LOG_FORMAT", "json"),
        ("USHER_LOG", "info"),
    ];
    let log = db.data_dir.join("usher.log");
    let (mut server, addr, token) = start_binary(&db, &env, std::fs::File::create(&log).unwrap().into()).await;
    let ch = connect_as(addr, &token).await;
    let mut cat = CatalogServiceClient::new(ch.clone());
    let v = create_venue(&mut cat, 1, 2, 10).await;
    let event = cat.create_event(event_request(&v.venue_id, 0)).await.unwrap().into_inner().event_id;
    // The organization's box office system takes every sale as a webhook.
    let (hook_url, hooks) = webhook_receiver().await;
    WebhookServiceClient::new(connect_as(addr, &token).await)
        .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
            idempotency_key: key(),
            org_id: v.org_id.clone(),
            url: hook_url,
            topics: vec!["seats-sold".into()],
            description: "box office".into(),
        })
        .await
        .unwrap();

    // The buyer's browser (or a box office) starts the trace and sends it
    // with every call of the purchase.
    let (trace_id, client_span, tp) = new_trace();
    let client_span = client_span.as_str();
    let mut inv = InventoryServiceClient::new(ch.clone());
    let mut ord = OrderingServiceClient::new(ch.clone());
    let mut pay = PaymentServiceClient::new(ch);
    let h = inv.hold_seats(traced(hold_req(&event, "alice", &["A-1-1", "A-1-2"]), &tp)).await.unwrap().into_inner();
    let o = ord.create_order(traced(order_req("alice", "alice@example.com", vec![h.hold_id]), &tp)).await.unwrap().into_inner();
    pay.pay_order(traced(pay_req(&o.order_id, "4242 4242 4242 4242", 15_000), &tp)).await.unwrap();

    // The email arrives with the trace in its header.
    let mail = maildir_at_least(&db, 1).await.remove(0);
    let header = mail
        .lines()
        .find_map(|l| l.strip_prefix("Traceparent: "))
        .unwrap_or_else(|| panic!("the email has no Traceparent header:\n{}", &mail[..mail.len().min(2000)]))
        .trim()
        .to_owned();
    assert!(header.starts_with(&format!("00-{trace_id}-")), "{header}");
    let email_span_id = header.split('-').nth(2).unwrap().to_owned();

    // Every span of the purchase reaches the receiver.
    let wanted = ["/usher.v1.InventoryService/HoldSeats", "/usher.v1.OrderingService/CreateOrder", "/usher.v1.PaymentService/PayOrder"];
    let steps = ["authorize", "confirm", "capture", "issue", "render"];
    let t = Instant::now();
    let spans = loop {
        let spans: Vec<Span> = receiver.spans().into_iter().map(|(_, s)| s).collect();
        let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
        let has = |name: &str| ours.iter().any(|s| s.name == name);
        if wanted.iter().chain(&steps).chain(&["pdf_render", "email", "webhook"]).all(|n| has(n))
            && spans.iter().any(|s| s.name == "group_commit")
        {
            break spans;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "spans of the purchase after 30 s: {:?}",
            ours.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let by_name = |name: &str| -> &Span { ours.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name}")) };
    let ids: HashMap<String, &Span> = ours.iter().map(|s| (hex(&s.span_id), *s)).collect();

    // The three calls are children of the client's span.
    for name in wanted {
        assert_eq!(hex(&by_name(name).parent_span_id), client_span, "{name}'s parent");
    }
    // The hold was decided in a group commit: its span (the batch has many
    // requests, so no parent) links to the hold's request span.
    let hold_span = by_name(wanted[0]);
    let commit = spans
        .iter()
        .filter(|s| s.name == "group_commit")
        .find(|s| s.links.iter().any(|l| l.trace_id == hold_span.trace_id && l.span_id == hold_span.span_id))
        .expect("a group_commit span linked to the hold's request span");
    assert!(commit.parent_span_id.is_empty());
    // The saga's steps after the payment are children of the payment call,
    // the render is inside the render step, the email a child of the
    // payment call too; the confirmation's group commit links to the
    // confirm step.
    let pay_span = hex(&by_name(wanted[2]).span_id);
    for step in steps {
        assert_eq!(hex(&by_name(step).parent_span_id), pay_span, "step {step}'s parent");
    }
    assert_eq!(hex(&by_name("pdf_render").parent_span_id), hex(&by_name("render").span_id));
    let email = by_name("email");
    assert_eq!(hex(&email.parent_span_id), pay_span);
    assert_eq!(hex(&email.span_id), email_span_id, "the email's header names the email's span");
    let confirm = by_name("confirm");
    assert!(
        spans.iter().any(|s| s.name == "group_commit" && s.links.iter().any(|l| l.span_id == confirm.span_id)),
        "the confirmation's group commit links to the confirm step"
    );
    // Parent links are intact: every parent is a span of the trace, or the client's.
    for s in &ours {
        let parent = hex(&s.parent_span_id);
        assert!(parent == client_span || ids.contains_key(&parent), "{}'s parent {parent} is not in the trace", s.name);
    }

    // The outbox rows (and so the Kafka headers) carry the trace: the hold's
    // row names the hold's request span, the sale's row the confirm step.
    let tp_of = |s: &Span| format!("00-{trace_id}-{}-01", hex(&s.span_id));
    let rows = |topic: &str, tp: String| {
        let db = &db;
        let topic = topic.to_owned();
        async move { db.scalar("SELECT COUNT(*) FROM outbox WHERE topic = $1 AND traceparent = $2", &[&topic, &tp]).await }
    };
    assert_eq!(rows("reservation-created", tp_of(hold_span)).await, 1);
    assert_eq!(rows("seats-sold", tp_of(confirm)).await, 1);
    // The sale's webhook: its attempt is a span of the trace, a child of the
    // span that wrote the outbox row (the confirm step), and the receiver
    // is told that span as its parent.
    let hook = by_name("webhook");
    assert_eq!(hook.parent_span_id, confirm.span_id);
    let sent = hooks.lock().unwrap().clone();
    assert_eq!(sent, vec![tp_of(hook)], "one POST, naming the webhook span");
    let traced = db.scalar("SELECT COUNT(*) FROM outbox WHERE traceparent LIKE $1", &[&format!("00-{trace_id}-%")]).await;
    assert!(traced >= 4, "the hold's, the order's and the sale's rows: {traced}");

    // Log lines inside the purchase's spans name its trace and their span.
    let logs = std::fs::read_to_string(&log).unwrap();
    let delivered = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "email delivered")
        .unwrap_or_else(|| panic!("no \"email delivered\" line in:\n{logs}"));
    assert_eq!(delivered["span"]["trace_id"], trace_id.as_str(), "{delivered}");
    assert_eq!(delivered["span"]["span_id"], email_span_id.as_str(), "{delivered}");

    // ractor's own per-actor spans are not exported.
    assert!(!spans.iter().any(|s| s.name == "Actor"), "an actor's lifetime span was exported");

    // Calls without a traceparent start traces of their own.
    let created = spans.iter().find(|s| s.name == "/usher.v1.CatalogService/CreateEvent").expect("the event's creation is traced");
    assert_ne!(hex(&created.trace_id), trace_id);
    assert!(created.parent_span_id.is_empty());
    assert!(server.kill().await.is_ok());
}
