//! Identity and access end to end (issue #9): every door of the permission
//! table against callers who must be refused, each with the right code and
//! nothing changed in storage; the strangers' actions that used to work now
//! refused while the rightful callers are served; tokens, refresh rotation,
//! rate limits and the per-customer hold cap.

mod common;

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use tonic::Code;
use usher_engine::{Cap, Millis, Scope, Who};
use usher_gateway::auth::tokens::{Claims, TYP_ACCESS};
use usher_gateway::doors;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, check_in_service_client::CheckInServiceClient,
    fulfillment_service_client::FulfillmentServiceClient, identity_service_client::IdentityServiceClient,
    inventory_service_client::InventoryServiceClient, ordering_service_client::OrderingServiceClient,
    payment_service_client::PaymentServiceClient, reporting_service_client::ReportingServiceClient,
    webhook_service_client::WebhookServiceClient,
};

both_backends!(every_door_refuses_the_wrong_caller_with_the_right_code_and_changes_nothing);
both_backends!(a_strangers_actions_fail_and_the_rightful_callers_are_served);

/// Everything a test needs: an event of the test organization with a hold
/// by ann and an order by bob, a second organization, and callers of every kind.
struct World {
    app: TestApp,
    event: String,
    /// A second event of the organization, and a draft.
    other_event: String,
    draft: String,
    venue: String,
    ann: String,
    bob: String,
    ann_hold: pb::Hold,
    bob_hold: pb::Hold,
    bob_order: pb::Order,
    /// The owner of another organization.
    stranger_org_owner: String,
    stranger_org: String,
    /// A webhook endpoint of the test organization.
    endpoint: String,
    /// Partner keys: one that may only read events, one scoped to `other_event`.
    reader_partner: String,
    other_event_partner: String,
    /// A gate device for `other_event` only.
    other_event_gate: String,
    /// Credentials that must never pass.
    bad: Vec<(&'static str, String)>,
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

async fn register(app: &TestApp, email: &str) -> pb::Session {
    IdentityServiceClient::new(app.channel_as("").await)
        .register(pb::RegisterRequest { email: email.into(), password: "correct horse battery staple".into(), name: email.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn world(b: Backend) -> World {
    let app = TestApp::spawn(b).await;
    let auth = app.app_ctx.auth.clone();
    let store = auth.store.clone();
    let now = app.app_ctx.now();
    let mut cat = app.catalog().await;
    let v = create_venue(&mut cat, 2, 3, 10).await;
    let event = cat.create_event(event_request(&v.venue_id, 0)).await.unwrap().into_inner().event_id;
    let other_event = cat.create_event(event_request(&v.venue_id, 0)).await.unwrap().into_inner().event_id;
    let mut draft_req = event_request(&v.venue_id, 0);
    draft_req.open_sales = false;
    draft_req.name = "Secret Draft".into();
    let draft = cat.create_event(draft_req).await.unwrap().into_inner().event_id;
    let ann = register(&app, "ann@example.com").await.access_token;
    let bob = register(&app, "bob@example.com").await.access_token;
    let ann_hold =
        InventoryServiceClient::new(app.channel_as(&ann).await).hold_seats(hold_req(&event, "", &["A-1-1"])).await.unwrap().into_inner();
    let mut bob_inv = InventoryServiceClient::new(app.channel_as(&bob).await);
    let bob_hold = bob_inv.hold_seats(hold_req(&event, "", &["A-1-2"])).await.unwrap().into_inner();
    let bob_order = OrderingServiceClient::new(app.channel_as(&bob).await)
        .create_order(order_req("", "bob@example.com", vec![bob_hold.hold_id.clone()]))
        .await
        .unwrap()
        .into_inner();
    // Another organization, with its own owner.
    usher_gateway::admin::create_user(store.as_ref(), "rival@example.com", "a long test password", "Rival", false).await.unwrap();
    let stranger_org = usher_gateway::admin::create_org(store.as_ref(), "Rival Org", Some("rival@example.com")).await.unwrap();
    let rival = store.user_by_email("rival@example.com").await.unwrap().unwrap();
    let (stranger_org_owner, _) = auth.access_token(rival.id, false, &store.memberships(rival.id).await.unwrap(), now).unwrap();
    let org = &app.creds.org_id;
    let (_, reader_partner) =
        usher_gateway::admin::create_api_key(store.as_ref(), org, "Reader", &["events:read".into()], &[]).await.unwrap();
    let (_, other_event_partner) =
        usher_gateway::admin::create_api_key(store.as_ref(), org, "Narrow", &[], std::slice::from_ref(&other_event)).await.unwrap();
    let (_, other_event_gate) =
        usher_gateway::admin::create_device(store.as_ref(), org, "east", std::slice::from_ref(&other_event)).await.unwrap();
    let endpoint = WebhookServiceClient::new(app.channel().await)
        .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
            idempotency_key: key(),
            org_id: org.clone(),
            url: "http://127.0.0.1:9/hook".into(),
            topics: vec!["seats-sold".into()],
            description: "the box office".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap()
        .endpoint_id;
    // Credentials that must never pass.
    let owner = store.user_by_email(&app.creds.owner_email).await.unwrap().unwrap();
    let memberships = store.memberships(owner.id).await.unwrap();
    let (expired, _) = auth.access_token(owner.id, false, &memberships, Millis(now.0 - 2 * 3_600_000)).unwrap();
    let claims = |aud: &str| Claims {
        iss: "usher".into(),
        aud: aud.into(),
        sub: owner.id.to_string(),
        exp: now.0 / 1000 + 600,
        iat: now.0 / 1000,
        jti: "j".into(),
        typ: TYP_ACCESS.into(),
        adm: true,
        orgs: vec![(org.clone(), "owner".into())],
    };
    let wrong_audience = auth.keys.sign(&claims("someone-else")).unwrap();
    let real_kid = {
        let header = wrong_audience.split('.').next().unwrap();
        let h: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        h["kid"].as_str().unwrap().to_owned()
    };
    // Signed by another key that claims the real key's id.
    let mut seed_der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    seed_der.extend_from_slice(&[42u8; 32]);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(real_kid.clone());
    let other_key = jsonwebtoken::encode(&header, &claims("usher"), &jsonwebtoken::EncodingKey::from_ed_der(&seed_der)).unwrap();
    let mut unknown_header = header.clone();
    unknown_header.kid = Some("k-not-ours".into());
    let unknown_key = jsonwebtoken::encode(&unknown_header, &claims("usher"), &jsonwebtoken::EncodingKey::from_ed_der(&seed_der)).unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": real_kid})),
        b64(&serde_json::to_value(claims("usher")).unwrap())
    );
    // HMAC with a guessable secret: the algorithm-confusion attack.
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(real_kid);
    let hmac = jsonwebtoken::encode(&hs, &claims("usher"), &jsonwebtoken::EncodingKey::from_secret(b"usher").unwrap()).unwrap();
    let (revoked_id, revoked) = usher_gateway::admin::create_api_key(store.as_ref(), org, "Gone", &[], &[]).await.unwrap();
    let audit = usher_actors::AuditEntry {
        org: usher_engine::OrgId::parse(org).unwrap(),
        at: now,
        actor: "test".into(),
        address: "local".into(),
        action: "api_key.revoke".into(),
        target: revoked_id.to_string(),
        detail: String::new(),
    };
    store.revoke_api_key(usher_engine::OrgId::parse(org).unwrap(), revoked_id, &audit).await.unwrap();
    auth.forget_credentials();
    let bad = vec![
        ("an expired access token", expired),
        ("a token signed by another key", other_key),
        ("a token of an unknown key", unknown_key),
        ("alg: none", alg_none),
        ("alg: HS256", hmac),
        ("a token for another audience", wrong_audience),
        ("a revoked API key", revoked),
        ("a made-up API key", "usk_00000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ("garbage", "not-a-token".into()),
    ];
    World {
        app,
        event,
        other_event,
        draft,
        venue: v.venue_id,
        ann,
        bob,
        ann_hold,
        bob_hold,
        bob_order,
        stranger_org_owner,
        stranger_org: stranger_org.to_string(),
        reader_partner,
        other_event_partner,
        other_event_gate,
        bad,
        endpoint,
    }
}

/// What storage holds, coarsely: row counts of every table a command could
/// change, and the events' statuses. Equal before and after means the
/// refused calls changed nothing.
async fn storage(db: &TestDb) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in [
        "venues",
        "events",
        "command_log",
        "holds",
        "seat_claims",
        "idempotency",
        "outbox",
        "orders",
        "payments",
        "tickets",
        "scans",
        "notifications",
        "organizations",
        "users",
        "memberships",
        "partners",
        "api_keys",
        "gate_devices",
        "audit_log",
        "webhook_endpoints",
        "webhook_deliveries",
    ] {
        out.push((t.to_owned(), db.scalar(&format!("SELECT COUNT(*) FROM {t}"), &[]).await));
    }
    for (what, sql) in [
        ("on-sale events", "SELECT COUNT(*) FROM events WHERE status = 'on_sale'"),
        ("active holds", "SELECT COUNT(*) FROM holds WHERE state = 'active'"),
        ("revoked keys", "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NOT NULL"),
        ("pending orders", "SELECT COUNT(*) FROM orders WHERE status = 'pending_payment'"),
        ("deleted webhook endpoints", "SELECT COUNT(*) FROM webhook_endpoints WHERE deleted_at IS NOT NULL"),
        ("webhook secrets' bytes", "SELECT COALESCE(SUM(LENGTH(secrets)), 0) FROM webhook_endpoints"),
    ] {
        out.push((what.to_owned(), db.scalar(sql, &[]).await));
    }
    out
}

/// The kinds of valid callers the door matrix tries, and whether a door's
/// entry admits them (the table read by the test, independently of the
/// server's code).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Anonymous,
    Customer,
    ReaderPartner,
    Gate,
}

fn admits(who: &[Who], k: Kind) -> bool {
    who.iter().any(|w| match (w, k) {
        (Who::Anyone, _) => true,
        (Who::Signed, Kind::Anonymous) => false,
        (Who::Signed, _) => true,
        (Who::Customer | Who::User, Kind::Customer) => true,
        (Who::Partner(Scope::EventsRead), Kind::ReaderPartner) => true,
        (Who::Gate, Kind::Gate) => true,
        _ => false,
    })
}

/// Every method of every service in the descriptor sets.
fn grpc_methods() -> Vec<String> {
    use prost::Message;
    let mut methods = Vec::new();
    for set in [usher_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
        let fds = prost_types::FileDescriptorSet::decode(set).unwrap();
        for f in &fds.file {
            for s in &f.service {
                for m in &s.method {
                    methods.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
    }
    methods.push("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into());
    methods.push("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".into());
    methods
}

/// Calls `path` with an empty message and returns the status code (OK when
/// the call got through).
async fn raw_call(ch: Ch, path: &str) -> Code {
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let p = http::uri::PathAndQuery::from_str(path).unwrap();
    match tokio::time::timeout(Duration::from_secs(10), g.unary(tonic::Request::new(()), p, codec)).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(s)) => s.code(),
        Err(_) => Code::DeadlineExceeded,
    }
}

async fn every_door_refuses_the_wrong_caller_with_the_right_code_and_changes_nothing(b: Backend) {
    let w = world(b).await;
    let app = &w.app;
    let before = storage(&app.db).await;
    let kinds = [
        (Kind::Anonymous, String::new()),
        (Kind::Customer, w.ann.clone()),
        (Kind::ReaderPartner, w.reader_partner.clone()),
        (Kind::Gate, w.other_event_gate.clone()),
    ];
    let mut checked = 0;
    // gRPC: every method of the descriptor set has an entry, and refuses.
    for m in grpc_methods() {
        let who = doors::grpc_door(&m).unwrap_or_else(|| panic!("{m} has no entry in the permission table"));
        for (what, token) in &w.bad {
            let code = raw_call(app.channel_as(token).await, &m).await;
            assert_eq!(code, Code::Unauthenticated, "{m} with {what}");
            checked += 1;
        }
        for (kind, token) in &kinds {
            if admits(who, *kind) {
                continue;
            }
            let want = if matches!(kind, Kind::Anonymous) { Code::Unauthenticated } else { Code::PermissionDenied };
            assert_eq!(raw_call(app.channel_as(token).await, &m).await, want, "{m} as {kind:?}");
            checked += 1;
        }
    }
    // HTTP: every route of the table (the router refuses to start with a
    // route missing from it), with JSON errors.
    for (door, who) in doors::HTTP {
        let (method, template) = door.split_once(' ').unwrap();
        let path = template
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{org}", &app.creds.org_id)
            .replace("{user}", &uuid::Uuid::new_v4().to_string());
        let body = matches!(method, "POST" | "PUT").then_some("{}");
        for (what, token) in &w.bad {
            let bearer = format!("Bearer {token}");
            let h = [("Content-Type", "application/json"), ("Idempotency-Key", "k"), ("Authorization", bearer.as_str())];
            let (status, text) = http(app.http, method, &path, &h, body).await;
            assert_eq!(status, 401, "{door} with {what}: {text}");
            assert!(text.contains("\"UNAUTHENTICATED\""), "{door}: {text}");
            checked += 1;
        }
        for (kind, token) in &kinds {
            if admits(who, *kind) {
                continue;
            }
            let bearer = format!("Bearer {token}");
            let mut h = vec![("Content-Type", "application/json"), ("Idempotency-Key", "k")];
            if !token.is_empty() {
                h.push(("Authorization", bearer.as_str()));
            }
            let (status, text) = http(app.http, method, &path, &h, body).await;
            let want = if matches!(kind, Kind::Anonymous) { 401 } else { 403 };
            assert_eq!(status, want, "{door} as {kind:?}: {text}");
            checked += 1;
        }
    }
    println!("[{b:?}] {checked} refused door calls checked");

    // Resources of someone else: NOT_FOUND for another tenant or customer,
    // PERMISSION_DENIED where the engine knows the owner.
    let ann_ch = app.channel_as(&w.ann).await;
    let bob_order = w.bob_order.order_id.clone();
    let mut ord = OrderingServiceClient::new(ann_ch.clone());
    let code = |r: Result<tonic::Response<pb::Order>, tonic::Status>| r.map(|_| Code::Ok).unwrap_or_else(|s| s.code());
    assert_eq!(code(ord.get_order(pb::GetOrderRequest { order_id: bob_order.clone() }).await), Code::NotFound, "ann reads bob's order");
    let cancel = pb::CancelOrderRequest { idempotency_key: key(), order_id: bob_order.clone(), customer_id: String::new() };
    assert_eq!(code(ord.cancel_order(cancel).await), Code::NotFound, "ann cancels bob's order");
    let create = order_req("", "ann@example.com", vec![w.bob_hold.hold_id.clone()]);
    assert_eq!(code(ord.create_order(create).await), Code::NotFound, "ann orders bob's hold");
    let by_event = ord.list_orders(pb::ListOrdersRequest { event_id: w.event.clone(), ..Default::default() }).await;
    assert_eq!(by_event.unwrap_err().code(), Code::NotFound, "a customer lists an event's orders");
    let pay = pay_req(&bob_order, "4000 0000 0000 0002", 1);
    assert_eq!(PaymentServiceClient::new(ann_ch.clone()).pay_order(pay).await.unwrap_err().code(), Code::NotFound, "ann pays bob's order");
    let mut ful = FulfillmentServiceClient::new(ann_ch.clone());
    assert_eq!(ful.list_tickets(pb::ListTicketsRequest { order_id: bob_order.clone() }).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(ful.download_tickets(pb::DownloadTicketsRequest { order_id: bob_order.clone() }).await.unwrap_err().code(), Code::NotFound);
    let mut inv = InventoryServiceClient::new(ann_ch.clone());
    let get = pb::GetHoldRequest { hold_id: w.bob_hold.hold_id.clone(), event_id: String::new() };
    assert_eq!(inv.get_hold(get).await.unwrap_err().code(), Code::NotFound, "ann reads bob's hold");
    let release = pb::ReleaseHoldRequest { idempotency_key: key(), hold_id: w.bob_hold.hold_id.clone(), ..Default::default() };
    assert_eq!(inv.release_hold(release).await.unwrap_err().code(), Code::NotFound, "ann releases bob's hold");
    let as_bob = hold_req(&w.event, "someone-else", &["B-1-1"]);
    assert_eq!(inv.hold_seats(as_bob).await.unwrap_err().code(), Code::PermissionDenied, "ann holds for another customer");

    // The owner of another organization.
    let rival = app.channel_as(&w.stranger_org_owner).await;
    let mut cat = CatalogServiceClient::new(rival.clone());
    let ev = |id: &str| pb::EventCommandRequest { idempotency_key: key(), event_id: id.into() };
    assert_eq!(cat.open_sales(ev(&w.draft)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(cat.close_sales(ev(&w.event)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(cat.cancel_event(ev(&w.event)).await.unwrap_err().code(), Code::NotFound);
    let seats = pb::SeatsCommandRequest { idempotency_key: key(), event_id: w.event.clone(), seat_ids: vec!["A-2-1".into()] };
    assert_eq!(cat.block_seats(seats.clone()).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(cat.unblock_seats(seats).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(cat.create_event(event_request(&w.venue, 0)).await.unwrap_err().code(), Code::NotFound, "an event on another's venue");
    assert_eq!(cat.get_venue(pb::GetVenueRequest { venue_id: w.venue.clone() }).await.unwrap_err().code(), Code::NotFound);
    let mut venue =
        pb::CreateVenueRequest { idempotency_key: key(), name: "x".into(), org_id: app.creds.org_id.clone(), ..Default::default() };
    venue.categories.push(pb::PriceCategory { code: "P".into(), name: "P".into() });
    assert_eq!(cat.create_venue(venue).await.unwrap_err().code(), Code::NotFound, "a venue in another's organization");
    assert_eq!(
        cat.get_event(pb::GetEventRequest { event_id: w.draft.clone() }).await.unwrap_err().code(),
        Code::NotFound,
        "another's draft"
    );
    let mut ord = OrderingServiceClient::new(rival.clone());
    assert_eq!(ord.get_order(pb::GetOrderRequest { order_id: bob_order.clone() }).await.unwrap_err().code(), Code::NotFound);
    let by_event = ord.list_orders(pb::ListOrdersRequest { event_id: w.event.clone(), ..Default::default() }).await;
    assert_eq!(by_event.unwrap_err().code(), Code::NotFound);
    let mut id = IdentityServiceClient::new(rival.clone());
    let org = app.creds.org_id.clone();
    assert_eq!(id.list_members(pb::ListMembersRequest { org_id: org.clone() }).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(id.list_api_keys(pb::ListApiKeysRequest { org_id: org.clone() }).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(id.list_device_tokens(pb::ListDeviceTokensRequest { org_id: org.clone() }).await.unwrap_err().code(), Code::NotFound);
    let audit = pb::ListAuditLogRequest { org_id: org.clone(), ..Default::default() };
    assert_eq!(id.list_audit_log(audit).await.unwrap_err().code(), Code::NotFound);
    let k = pb::CreateApiKeyRequest {
        idempotency_key: key(),
        org_id: org.clone(),
        partner_name: "mine now".into(),
        scopes: vec!["holds".into()],
        ..Default::default()
    };
    assert_eq!(id.create_api_key(k).await.unwrap_err().code(), Code::NotFound);
    let m = pb::SetMemberRequest { idempotency_key: key(), org_id: org.clone(), email: "rival@example.com".into(), role: "owner".into() };
    assert_eq!(id.set_member(m).await.unwrap_err().code(), Code::NotFound);
    let scan = |event: &str| pb::ScanRequest { idempotency_key: key(), event_id: event.into(), code: "USH1.x".into(), gate: "g".into() };
    assert_eq!(CheckInServiceClient::new(rival.clone()).scan(scan(&w.event)).await.unwrap_err().code(), Code::NotFound);
    let report = pb::GetSalesReportRequest { event_id: w.event.clone() };
    assert_eq!(ReportingServiceClient::new(rival.clone()).get_sales_report(report).await.unwrap_err().code(), Code::NotFound);
    let mut hooks = WebhookServiceClient::new(rival.clone());
    let list = pb::ListWebhookEndpointsRequest { org_id: org.clone() };
    assert_eq!(hooks.list_webhook_endpoints(list).await.unwrap_err().code(), Code::NotFound, "another's webhooks");
    let create = pb::CreateWebhookEndpointRequest {
        idempotency_key: key(),
        org_id: org.clone(),
        url: "http://rival.example/hook".into(),
        topics: vec!["seats-sold".into()],
        description: String::new(),
    };
    assert_eq!(hooks.create_webhook_endpoint(create).await.unwrap_err().code(), Code::NotFound, "a webhook in another's organization");
    let rotate = pb::RotateWebhookSecretRequest { idempotency_key: key(), endpoint_id: w.endpoint.clone() };
    assert_eq!(hooks.rotate_webhook_secret(rotate).await.unwrap_err().code(), Code::NotFound, "another's webhook secret");
    let delete = pb::DeleteWebhookEndpointRequest { idempotency_key: key(), endpoint_id: w.endpoint.clone() };
    assert_eq!(hooks.delete_webhook_endpoint(delete).await.unwrap_err().code(), Code::NotFound, "another's webhook");
    let log = pb::ListWebhookDeliveriesRequest { endpoint_id: w.endpoint.clone(), ..Default::default() };
    assert_eq!(hooks.list_webhook_deliveries(log).await.unwrap_err().code(), Code::NotFound, "another's delivery log");
    // The same over HTTP.
    let bearer = format!("Bearer {}", w.stranger_org_owner);
    let h = [("Content-Type", "application/json"), ("Idempotency-Key", "rival-1"), ("Authorization", bearer.as_str())];
    let hook_body = r#"{"url": "http://rival.example/hook", "topics": ["seats-sold"]}"#;
    for (method, path, body) in [
        ("GET", format!("/api/orgs/{org}/webhooks"), None),
        ("POST", format!("/api/orgs/{org}/webhooks"), Some(hook_body)),
        ("DELETE", format!("/api/webhooks/{}", w.endpoint), None),
        ("POST", format!("/api/webhooks/{}/rotate-secret", w.endpoint), None),
        ("GET", format!("/api/webhooks/{}/deliveries", w.endpoint), None),
        ("GET", format!("/api/events/{}/sales", w.event), None),
    ] {
        let (status, text) = http(app.http, method, &path, &h, body).await;
        assert_eq!(status, 404, "{method} {path} as another organization's owner: {text}");
        assert!(text.contains("NOT_FOUND"), "{text}");
    }
    // A partner key outside its events, a gate on another event, a manager's
    // capability that a viewer lacks.
    let mut narrow = InventoryServiceClient::new(app.channel_as(&w.other_event_partner).await);
    assert_eq!(narrow.hold_seats(hold_req(&w.event, "p1", &["B-2-2"])).await.unwrap_err().code(), Code::NotFound);
    let best = pb::HoldBestAvailableRequest {
        idempotency_key: key(),
        event_id: w.event.clone(),
        customer_id: "p1".into(),
        quantity: 1,
        ..Default::default()
    };
    assert_eq!(narrow.hold_best_available(best).await.unwrap_err().code(), Code::NotFound);
    let mut gate = CheckInServiceClient::new(app.channel_as(&w.other_event_gate).await);
    assert_eq!(gate.scan(scan(&w.event)).await.unwrap_err().code(), Code::NotFound, "a gate of another event");
    // A stranger learns nothing of a draft, not even whether a seat label exists.
    let mut bob_inv = InventoryServiceClient::new(app.channel_as(&w.bob).await);
    for seats in [&["NOPE-Z-1"][..], &["A-1-1"][..]] {
        let e = bob_inv.hold_seats(hold_req(&w.draft, "", seats)).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "EVENT_NOT_FOUND"), "{seats:?} on a draft");
    }
    let best = pb::HoldBestAvailableRequest {
        idempotency_key: key(),
        event_id: w.draft.clone(),
        quantity: 99,
        section: "ZZ".into(),
        ..Default::default()
    };
    assert_eq!(bob_inv.hold_best_available(best).await.unwrap_err().code(), Code::NotFound);
    // Drafts are not listed to the public.
    let listed =
        CatalogServiceClient::new(app.channel_as("").await).list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner();
    assert!(listed.events.iter().all(|e| e.event_id != w.draft), "a draft is listed to the public");
    assert_eq!(listed.events.len(), 2);
    let owner_list = app.catalog().await.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner();
    assert!(owner_list.events.iter().any(|e| e.event_id == w.draft), "the organization sees its draft");

    assert_eq!(storage(&app.db).await, before, "a refused call changed storage");

    // A second key of the same partner, limited to another event, reaches
    // none of the partner's customers' orders and holds elsewhere.
    let full = app.channel_as(&app.creds.partner_key).await;
    let partner_id = IdentityServiceClient::new(full.clone()).me(pb::MeRequest {}).await.unwrap().into_inner().id;
    let narrow_key = IdentityServiceClient::new(app.channel().await)
        .create_api_key(pb::CreateApiKeyRequest {
            idempotency_key: key(),
            org_id: app.creds.org_id.clone(),
            partner_id,
            scopes: vec!["holds".into(), "orders".into(), "payments".into(), "tickets".into()],
            event_ids: vec![w.other_event.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let h = InventoryServiceClient::new(full.clone()).hold_seats(hold_req(&w.event, "pat", &["B-3-3"])).await.unwrap().into_inner();
    let o = OrderingServiceClient::new(full.clone())
        .create_order(order_req("pat", "pat@example.com", vec![h.hold_id.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.customer_id, "pat", "a partner reads back its own reference");
    let narrow = app.channel_as(&narrow_key).await;
    let mut nord = OrderingServiceClient::new(narrow.clone());
    assert_eq!(nord.get_order(pb::GetOrderRequest { order_id: o.order_id.clone() }).await.unwrap_err().code(), Code::NotFound);
    let cancel = pb::CancelOrderRequest { idempotency_key: key(), order_id: o.order_id.clone(), customer_id: String::new() };
    assert_eq!(nord.cancel_order(cancel).await.unwrap_err().code(), Code::NotFound);
    let listed = nord.list_orders(pb::ListOrdersRequest { customer_id: "pat".into(), ..Default::default() }).await.unwrap().into_inner();
    assert!(listed.orders.is_empty(), "{listed:?}");
    let get = pb::GetHoldRequest { hold_id: h.hold_id.clone(), event_id: String::new() };
    assert_eq!(InventoryServiceClient::new(narrow).get_hold(get).await.unwrap_err().code(), Code::NotFound);
    let mine =
        OrderingServiceClient::new(full).list_orders(pb::ListOrdersRequest { customer_id: "pat".into(), ..Default::default() }).await;
    assert_eq!(mine.unwrap().into_inner().orders.len(), 1, "the unlimited key of the same partner sees it");
    let _ = (&w.ann_hold, &w.other_event, &w.stranger_org, &w.bob, Cap::Scan);
    w.app.stop().await;
}

async fn a_strangers_actions_fail_and_the_rightful_callers_are_served(b: Backend) {
    let w = world(b).await;
    let app = &w.app;
    let bob_order = w.bob_order.order_id.clone();
    // The stranger (ann) fails paying bob's order with the declining card; bob pays it.
    let mut ann_pay = PaymentServiceClient::new(app.channel_as(&w.ann).await);
    let decline = pay_req(&bob_order, "4000 0000 0000 0002", 1);
    assert_eq!(ann_pay.pay_order(decline).await.unwrap_err().code(), Code::NotFound);
    let paid = PaymentServiceClient::new(app.channel_as(&w.bob).await)
        .pay_order(pay_req(&bob_order, "4242424242424242", 15_000))
        .await
        .unwrap()
        .into_inner();
    assert!(paid.settled, "{paid:?}");
    let mut bob_ord = OrderingServiceClient::new(app.channel_as(&w.bob).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = bob_ord.get_order(pb::GetOrderRequest { order_id: bob_order.clone() }).await.unwrap().into_inner();
        if o.status == pb::OrderStatus::Fulfilled as i32 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "bob's order was not fulfilled: {o:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bob reads his tickets; ann (and nobody anonymous) cannot.
    let tickets = FulfillmentServiceClient::new(app.channel_as(&w.bob).await)
        .list_tickets(pb::ListTicketsRequest { order_id: bob_order.clone() })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(tickets.len(), 1);
    let (status, _) =
        http(app.http, "GET", &format!("/api/orders/{bob_order}/tickets"), &[("Authorization", &format!("Bearer {}", w.ann))], None).await;
    assert_eq!(status, 404, "ann reads bob's ticket codes over HTTP");
    let (status, _) = http(app.http, "GET", &format!("/api/orders/{bob_order}/tickets.pdf"), &[], None).await;
    assert_eq!(status, 401, "an anonymous caller downloads the PDF");
    // A stolen code: a stranger cannot scan it, so the real gate admits bob.
    let scan = |gate: &str| pb::ScanRequest {
        idempotency_key: key(),
        event_id: w.event.clone(),
        code: tickets[0].code.clone(),
        gate: gate.into(),
    };
    assert_eq!(CheckInServiceClient::new(app.channel_as("").await).scan(scan("any")).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(CheckInServiceClient::new(app.channel_as(&w.ann).await).scan(scan("any")).await.unwrap_err().code(), Code::PermissionDenied);
    let mut gate = CheckInServiceClient::new(app.channel_as(&app.creds.gate_token).await);
    let v = gate.scan(scan("")).await.unwrap().into_inner();
    assert_eq!(v.verdict, pb::ScanVerdict::Valid as i32, "{v:?}");
    let again = gate.scan(scan("main")).await.unwrap().into_inner();
    assert_eq!(
        (again.verdict, again.first_gate.as_str()),
        (pb::ScanVerdict::AlreadyUsed as i32, "main"),
        "the device's own gate is recorded"
    );
    assert_eq!(gate.scan(scan("west")).await.unwrap_err().code(), Code::InvalidArgument, "a device cannot claim another gate");
    // Listing an event's orders (with the buyers' emails): the organization only.
    let (status, _) = http(app.http, "GET", &format!("/api/orders?event_id={}", w.event), &[], None).await;
    assert_eq!(status, 401);
    let (status, body) =
        http(app.http, "GET", &format!("/api/orders?event_id={}", w.event), &[("Authorization", &format!("Bearer {}", w.ann))], None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(app.http, "GET", &format!("/api/orders?event_id={}", w.event), &[app.bearer_ref()], None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("bob@example.com"));
    // Ann releases her own hold with no customer named; bob cannot release it, nor can anybody anonymous.
    let path = format!("/api/holds/{}", w.ann_hold.hold_id);
    let (status, _) = http(app.http, "DELETE", &path, &[("Idempotency-Key", "x1")], None).await;
    assert_eq!(status, 401);
    let (status, _) =
        http(app.http, "DELETE", &path, &[("Idempotency-Key", "x2"), ("Authorization", &format!("Bearer {}", w.bob))], None).await;
    assert_eq!(status, 404, "bob releases ann's hold");
    let (status, body) =
        http(app.http, "DELETE", &path, &[("Idempotency-Key", "x3"), ("Authorization", &format!("Bearer {}", w.ann))], None).await;
    assert_eq!(status, 200, "{body}");
    // Organizer actions: anonymous and another tenant refused, the owner served, and audited.
    let ev = |id: &str| pb::EventCommandRequest { idempotency_key: key(), event_id: id.into() };
    assert_eq!(
        CatalogServiceClient::new(app.channel_as("").await).cancel_event(ev(&w.other_event)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        CatalogServiceClient::new(app.channel_as(&w.ann).await).cancel_event(ev(&w.other_event)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut cat = app.catalog().await;
    cat.open_sales(ev(&w.draft)).await.unwrap();
    cat.block_seats(pb::SeatsCommandRequest { idempotency_key: key(), event_id: w.other_event.clone(), seat_ids: vec!["A-1-1".into()] })
        .await
        .unwrap();
    cat.cancel_event(ev(&w.other_event)).await.unwrap();
    let log = IdentityServiceClient::new(app.channel().await)
        .list_audit_log(pb::ListAuditLogRequest { org_id: app.creds.org_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .records;
    let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
    for a in ["event.cancel", "seats.block", "event.open_sales", "event.create", "venue.create", "api_key.create", "device.create"] {
        assert!(actions.contains(&a), "{a} is audited: {actions:?}");
    }
    let cancel = log.iter().find(|r| r.action == "event.cancel").unwrap();
    assert_eq!((cancel.target.as_str(), cancel.address.as_str()), (w.other_event.as_str(), "127.0.0.1"));
    assert!(cancel.actor.starts_with("user:"), "{cancel:?}");
    // Hold idempotency keys are the caller's own: bob replaying ann's key gets his own answer, not her hold.
    let k = key();
    let mut r = hold_req(&w.event, "", &["C-1-1"]);
    r.idempotency_key = k.clone();
    let _ = r;
    let mut ann_req = hold_req(&w.event, "", &["B-1-5"]);
    ann_req.idempotency_key = k.clone();
    let ann_h = InventoryServiceClient::new(app.channel_as(&w.ann).await).hold_seats(ann_req).await.unwrap().into_inner();
    let mut bob_req = hold_req(&w.event, "", &["B-1-6"]);
    bob_req.idempotency_key = k;
    let bob_h = InventoryServiceClient::new(app.channel_as(&w.bob).await).hold_seats(bob_req).await.unwrap().into_inner();
    assert_ne!(ann_h.hold_id, bob_h.hold_id, "bob's request with ann's key is his own");
    assert_eq!(bob_h.seats[0].seat_id, "B-1-6");
    w.app.stop().await;
}

/// A stranger who invents customer ids gets nowhere: a customer acts only
/// for itself, each guest session is one customer capped at 8 live holds per
/// event, and minting guest sessions is rate limited per address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventing_customers_does_not_dodge_the_hold_cap_and_rate_limits_answer_429() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    cfg.rates = usher_gateway::auth::rate::RateConfig { guest_sessions_per_address_per_hour: 5, ..unlimited_rates() };
    let app = TestApp::spawn_with(db, cfg).await;
    let event = create_event(&app, 2, 5, 20).await;
    let mut id = IdentityServiceClient::new(app.channel_as("").await);
    let guest = id.start_guest_session(pb::StartGuestSessionRequest {}).await.unwrap().into_inner().access_token;
    let mut inv = InventoryServiceClient::new(app.channel_as(&guest).await);
    // Inventing another customer's id is refused outright.
    assert_eq!(inv.hold_seats(hold_req(&event, "invented-1", &["A-1-1"])).await.unwrap_err().code(), Code::PermissionDenied);
    let mut held = 0;
    let mut refused = None;
    for i in 0..20u32 {
        let seat = format!("A-{}-{}", i / 20 + 1, i % 20 + 1);
        match inv.hold_seats(hold_req(&event, "", &[&seat])).await {
            Ok(_) => held += 1,
            Err(s) => {
                refused = Some(reason(&s));
                break;
            }
        }
    }
    assert_eq!((held, refused.as_deref()), (8, Some("CUSTOMER_HOLD_LIMIT")));
    // More guest sessions: a few, then 429 with a time to wait.
    let mut minted = 1;
    let err = loop {
        match id.start_guest_session(pb::StartGuestSessionRequest {}).await {
            Ok(_) => minted += 1,
            Err(s) => break s,
        }
        assert!(minted < 50, "guest sessions are never limited");
    };
    assert_eq!((err.code(), reason(&err).as_str()), (Code::ResourceExhausted, "RATE_LIMITED"));
    assert!(err.metadata().get("retry-after").is_some());
    assert_eq!(minted, 5);
    let (status, body) = http(app.http, "POST", "/api/auth/guest", &[("Content-Type", "application/json")], Some("{}")).await;
    assert_eq!(status, 429, "{body}");
    // 429 over HTTP carries Retry-After.
    let raw = raw_http(app.http, "POST /api/auth/guest HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").await;
    assert!(raw.to_lowercase().contains("retry-after: "), "{raw}");
    app.stop().await;
}

async fn raw_http(addr: std::net::SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = req.replacen("\r\n", &format!("\r\nHost: {addr}\r\nConnection: close\r\n"), 1);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Per-principal rate limits: a customer past its burst is answered 429 with
/// a retry-after, and another customer is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_past_its_rate_is_told_when_to_retry_and_others_are_served() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cfg = db.config();
    cfg.rates =
        usher_gateway::auth::rate::RateConfig { customer: usher_gateway::auth::rate::Rate { per_s: 1, burst: 10 }, ..unlimited_rates() };
    let app = TestApp::spawn_with(db, cfg).await;
    let event = create_event(&app, 1, 1, 5).await;
    let ann = register(&app, "ann@example.com").await.access_token;
    let bob = register(&app, "bob@example.com").await.access_token;
    let mut cat = CatalogServiceClient::new(app.channel_as(&ann).await);
    let mut ok = 0;
    let err = loop {
        match cat.get_event(pb::GetEventRequest { event_id: event.clone() }).await {
            Ok(_) => ok += 1,
            Err(s) => break s,
        }
        assert!(ok < 100, "never limited");
    };
    assert_eq!(ok, 10);
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.metadata().get("retry-after").unwrap(), "1");
    CatalogServiceClient::new(app.channel_as(&bob).await).get_event(pb::GetEventRequest { event_id: event }).await.unwrap();
    app.stop().await;
}

/// Sessions: refresh tokens rotate; a spent one presented again revokes the
/// whole sign-in; logging out revokes it; a key rotation keeps earlier
/// access tokens valid; the JWKS publishes every live key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_sign_in() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let s1 = register(&app, "ann@example.com").await;
    let mut id = IdentityServiceClient::new(app.channel_as("").await);
    let s2 = id.refresh(pb::RefreshRequest { refresh_token: s1.refresh_token.clone() }).await.unwrap().into_inner();
    assert_ne!(s2.refresh_token, s1.refresh_token);
    let reused = id.refresh(pb::RefreshRequest { refresh_token: s1.refresh_token.clone() }).await.unwrap_err();
    assert_eq!((reused.code(), reason(&reused).as_str()), (Code::Unauthenticated, "REFRESH_TOKEN_REUSED"));
    let after = id.refresh(pb::RefreshRequest { refresh_token: s2.refresh_token.clone() }).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated, "the whole family is revoked");
    // Log out: the refresh token stops working.
    let s3 = id
        .log_in(pb::LogInRequest { email: "ANN@example.com".into(), password: "correct horse battery staple".into() })
        .await
        .unwrap()
        .into_inner();
    id.log_out(pb::LogOutRequest { refresh_token: s3.refresh_token.clone() }).await.unwrap();
    assert_eq!(id.refresh(pb::RefreshRequest { refresh_token: s3.refresh_token }).await.unwrap_err().code(), Code::Unauthenticated);
    // Key rotation by a platform admin: old tokens still verify, new ones use the new key.
    let store = app.app_ctx.auth.store.clone();
    usher_gateway::admin::create_user(store.as_ref(), "root@example.com", "a long test password", "", true).await.unwrap();
    let admin = id
        .log_in(pb::LogInRequest { email: "root@example.com".into(), password: "a long test password".into() })
        .await
        .unwrap()
        .into_inner();
    let (_, jwks_before) = http(app.http, "GET", "/.well-known/jwks.json", &[], None).await;
    let kid = IdentityServiceClient::new(app.channel_as(&admin.access_token).await)
        .rotate_signing_key(pb::RotateSigningKeyRequest { idempotency_key: key() })
        .await
        .unwrap()
        .into_inner()
        .kid;
    let (_, jwks) = http(app.http, "GET", "/.well-known/jwks.json", &[], None).await;
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "old and new keys are published: {jwks} (before: {jwks_before})");
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid.as_str() && k["alg"] == "EdDSA" && k["crv"] == "Ed25519"));
    let me = IdentityServiceClient::new(app.channel_as(&s3.access_token).await).me(pb::MeRequest {}).await.unwrap().into_inner();
    assert_eq!(me.email, "ann@example.com", "a token of the old key still works");
    let fresh = id
        .log_in(pb::LogInRequest { email: "ann@example.com".into(), password: "correct horse battery staple".into() })
        .await
        .unwrap()
        .into_inner();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(fresh.access_token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], kid.as_str(), "new tokens use the new key");
    // A customer may not rotate keys.
    let e = IdentityServiceClient::new(app.channel_as(&fresh.access_token).await)
        .rotate_signing_key(pb::RotateSigningKeyRequest { idempotency_key: key() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    app.stop().await;
}

/// Passwords are stored as argon2id hashes only, never printed in the
/// server's logs (at debug level), and log-in attempts are throttled per
/// account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_never_stored_or_logged_in_clear_and_log_ins_are_throttled() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.args([
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--no-demo-data",
        "--database-url",
        &db.url,
    ])
    .arg("--data-dir")
    .arg(&db.data_dir)
    .env("USHER_LOG", "debug")
    .stderr(std::fs::File::create(db.data_dir.join("server.log")).unwrap());
    let (mut child, rest) = spawn_until_line(cmd, "usher: grpc listening on http://", Duration::from_secs(30)).await;
    let addr: std::net::SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let password = "Tr0ub4dor-and-more-words";
    let mut id = IdentityServiceClient::new(connect(addr).await);
    id.register(pb::RegisterRequest { email: "pat@example.com".into(), password: password.into(), name: "Pat".into() }).await.unwrap();
    let short = id.register(pb::RegisterRequest { email: "short@example.com".into(), password: "short".into(), name: String::new() }).await;
    assert_eq!(short.unwrap_err().code(), Code::InvalidArgument);
    let taken = id.register(pb::RegisterRequest { email: "PAT@example.com".into(), password: password.into(), name: String::new() }).await;
    assert_eq!(taken.unwrap_err().code(), Code::AlreadyExists);
    id.log_in(pb::LogInRequest { email: "pat@example.com".into(), password: password.into() }).await.unwrap();
    // Wrong passwords: refused, then throttled for the account (5 a minute by default).
    let mut codes = Vec::new();
    for _ in 0..6 {
        let e = id.log_in(pb::LogInRequest { email: "pat@example.com".into(), password: "wrong password!".into() }).await.unwrap_err();
        codes.push(e.code());
    }
    assert_eq!(codes[..4], [Code::Unauthenticated; 4]);
    assert_eq!(codes[4..], [Code::ResourceExhausted; 2], "{codes:?}");
    let throttled = id.log_in(pb::LogInRequest { email: "pat@example.com".into(), password: password.into() }).await.unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted, "even the right password waits out the throttle");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let log = std::fs::read_to_string(db.data_dir.join("server.log")).unwrap();
    assert!(log.contains("user registered"), "the debug log was captured");
    assert!(!log.contains(password) && !log.contains("wrong password!"), "a password reached the log");
    let hash = {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        let h: String =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'pat@example.com'").fetch_one(&pool).await.unwrap();
        h
    };
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!hash.contains(password));
    let dump = std::fs::read(db.data_dir.join("usher.db")).unwrap();
    assert!(!dump.windows(password.len()).any(|w| w == password.as_bytes()), "the password is in the database file");
}

/// An HTTP/1.1 request sent from a chosen loopback address (another
/// "client"): (status, body).
async fn http_from(src: &str, addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Wrong passwords from one address throttle that address's attempts on
/// the account, not the account's owner signing in from elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_wrong_passwords_do_not_lock_the_owner_out() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    register(&app, "ann@example.com").await;
    let json = [("Content-Type", "application/json")];
    let wrong = r#"{"email":"ann@example.com","password":"not her password"}"#;
    let mut last = 0;
    for _ in 0..6 {
        last = http_from("127.0.0.3", app.http, "POST", "/api/auth/login", &json, wrong).await.0;
    }
    assert_eq!(last, 429, "the stranger's address is throttled on this account");
    let right = r#"{"email":"ann@example.com","password":"correct horse battery staple"}"#;
    let (status, body) = http_from("127.0.0.4", app.http, "POST", "/api/auth/login", &json, right).await;
    assert_eq!(status, 200, "the owner signs in from elsewhere: {body}");
    app.stop().await;
}

/// A request carrying any of the storefront's cookies, the refresh cookie
/// included, is refused when it comes from another origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_from_another_origin_are_refused_even_on_the_refresh_route() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let s = register(&app, "ann@example.com").await;
    let cookie = format!("usher_refresh={}", s.refresh_token);
    let evil = [("Cookie", cookie.as_str()), ("Origin", "http://evil.example")];
    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        let (status, body) = http(app.http, "POST", path, &evil, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("CROSS_ORIGIN"), "{body}");
    }
    // The same from the page itself works.
    let origin = format!("http://{}", app.http);
    let (status, body) =
        http(app.http, "POST", "/api/auth/refresh", &[("Cookie", cookie.as_str()), ("Origin", origin.as_str())], None).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// A signing key retired longer ago than any token it signed can live no
/// longer verifies anything, even a token signed with it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_retired_past_every_token_lifetime_verifies_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let guest = IdentityServiceClient::new(app.channel_as("").await)
        .start_guest_session(pb::StartGuestSessionRequest {})
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let me = |t: String| {
        let app = &app;
        async move { IdentityServiceClient::new(app.channel_as(&t).await).me(pb::MeRequest {}).await.map(|_| ()).map_err(|s| s.code()) }
    };
    assert_eq!(me(guest.clone()).await, Ok(()));
    app.app_ctx.auth.keys.rotate(app.app_ctx.now()).await.unwrap();
    assert_eq!(me(guest.clone()).await, Ok(()), "a rotation logs nobody out");
    // 31 days later (guest tokens live 30): the old key is past its use.
    let month = (31 * 24 * 3_600_000i64).to_string();
    app.db.exec("UPDATE signing_keys SET retired_at = retired_at - CAST($1 AS INTEGER) WHERE retired_at IS NOT NULL", &[&month]).await;
    // A token naming an unknown key makes the node reload its keys (at most every 5 s).
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let unknown = format!("{}.e30.x", b64(&serde_json::json!({"alg": "EdDSA", "kid": "k-unknown"})));
    assert_eq!(me(unknown).await, Err(Code::Unauthenticated));
    assert_eq!(me(guest).await, Err(Code::Unauthenticated), "the retired key no longer verifies");
    let (_, jwks) = http(app.http, "GET", "/.well-known/jwks.json", &[], None).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&jwks).unwrap()["keys"].as_array().unwrap().len(), 1, "{jwks}");
    app.stop().await;
}
