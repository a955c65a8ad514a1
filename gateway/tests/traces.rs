//! One purchase is one trace: the real binary exports its spans over
//! OTLP/gRPC to a receiver in the test (the collector's own service
//! definition), and the spans of a hold, an order and its payment, sent
//! with the same W3C `traceparent`, come back under that trace id with their
//! parents intact: the requests, the group commit that decided the hold
//! (linked to the request), the saga's steps, the render and the email,
//! whose `Traceparent` header names its span.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use usher_proto::v1::{
    catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient,
    ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient,
};

/// An OTLP trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(r.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (r, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A request carrying `traceparent`.
fn traced<T>(msg: T, traceparent: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_trace_from_the_first_request_to_the_email() {
    let (receiver, endpoint) = Receiver::start().await;
    let db = TestDb::fresh(Backend::Sqlite).await;
    let env = [("USHER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let (mut server, addr, token) = start_binary(&db, &env, std::process::Stdio::inherit()).await;
    let ch = connect_as(addr, &token).await;
    let mut cat = CatalogServiceClient::new(ch.clone());
    let v = create_venue(&mut cat, 1, 2, 10).await;
    let event = cat.create_event(event_request(&v.venue_id, 0)).await.unwrap().into_inner().event_id;

    // The buyer's browser (or a box office) starts the trace and sends it
    // with every call of the purchase.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let client_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let tp = format!("00-{trace_id}-{client_span}-01");
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
        let spans = receiver.spans();
        let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
        let has = |name: &str| ours.iter().any(|s| s.name == name);
        if wanted.iter().chain(&steps).chain(&["pdf_render", "email"]).all(|n| has(n)) && spans.iter().any(|s| s.name == "group_commit") {
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
    let traced = db.scalar("SELECT COUNT(*) FROM outbox WHERE traceparent LIKE $1", &[&format!("00-{trace_id}-%")]).await;
    assert!(traced >= 4, "the hold's, the order's and the sale's rows: {traced}");

    // Calls without a traceparent start traces of their own.
    let created = spans.iter().find(|s| s.name == "/usher.v1.CatalogService/CreateEvent").expect("the event's creation is traced");
    assert_ne!(hex(&created.trace_id), trace_id);
    assert!(created.parent_span_id.is_empty());
    assert!(server.kill().await.is_ok());
}
