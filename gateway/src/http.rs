//! The HTTP side: the storefront page and a JSON API over the same services
//! as gRPC. Errors go through the same `ApiError` and become a 4xx/5xx with a
//! JSON body `{"error": {"code", "reason", "message", "seats"}}`.

use axum::body::Bytes;
use axum::extract::rejection::{ExtensionRejection, QueryRejection};
use axum::extract::{Extension, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use usher_proto::v1 as pb;

use crate::app::Ctx;
use crate::auth::Caller;
use crate::catalog::Catalog;
use crate::error::{ApiError, ErrorCode};
use crate::identity::Identity;
use crate::inventory::Inventory;
use crate::orders::Orders;

#[derive(Clone)]
pub(crate) struct Http {
    catalog: std::sync::Arc<Catalog>,
    inventory: std::sync::Arc<Inventory>,
    orders: std::sync::Arc<Orders>,
    pub(crate) identity: std::sync::Arc<Identity>,
    reporting: std::sync::Arc<crate::reporting::Reporting>,
    pub(crate) webhooks: std::sync::Arc<crate::webhooks::Webhooks>,
}

/// Routes are added through this, which refuses (panics at start, which
/// the tests see) a route with no entry in the permission table: no door
/// is ever served without one.
pub(crate) struct Routes(pub(crate) Router<Http>);

impl Routes {
    pub(crate) fn add(self, method: &str, path: &str, handler: axum::routing::MethodRouter<Http>) -> Routes {
        assert!(crate::doors::http_door(method, path).is_some(), "HTTP route {method} {path} has no entry in doors::HTTP");
        Routes(self.0.route(path, handler))
    }
}

pub fn router(ctx: Ctx) -> Router {
    let auth = crate::doors::HttpAuthState {
        auth: ctx.auth.clone(),
        clock: ctx.clock.clone(),
        node: ctx.cluster.as_ref().map(|c| std::sync::Arc::from(c.name())),
    };
    let state = Http {
        catalog: std::sync::Arc::new(Catalog { ctx: ctx.clone() }),
        inventory: std::sync::Arc::new(Inventory { ctx: ctx.clone() }),
        orders: std::sync::Arc::new(Orders { ctx: ctx.clone() }),
        reporting: std::sync::Arc::new(crate::reporting::Reporting { ctx: ctx.clone() }),
        webhooks: std::sync::Arc::new(crate::webhooks::Webhooks { ctx: ctx.clone() }),
        identity: std::sync::Arc::new(Identity { ctx }),
    };
    let r = Routes(Router::new())
        .add("GET", "/", get(storefront))
        .add("GET", "/healthz", get(|| async { "ok" }))
        .add("GET", "/readyz", get(readyz))
        .add("GET", "/api/events/{id}/sales", get(sales_report))
        .add("GET", "/sales/{id}", get(sales_page))
        .add("GET", "/.well-known/jwks.json", get(jwks))
        .add("GET", "/api/events", get(list_events))
        .add("GET", "/api/events/{id}", get(get_event))
        .add("GET", "/api/events/{id}/seats", get(seat_map))
        .add("GET", "/api/events/{id}/seats/live", get(live_seats))
        .add("GET", "/api/events/{id}/seats/status", get(seat_status))
        .add("GET", "/api/events/{id}/layout", get(seat_layout))
        .add("POST", "/api/events/{id}/holds", post(create_hold))
        .add("GET", "/api/holds/{id}", get(get_hold))
        .add("DELETE", "/api/holds/{id}", axum::routing::delete(release_hold))
        .add("GET", "/api/orders", get(list_orders))
        .add("POST", "/api/orders", post(create_order))
        .add("GET", "/api/orders/{id}", get(get_order))
        .add("POST", "/api/orders/{id}/cancel", post(cancel_order))
        .add("POST", "/api/orders/{id}/pay", post(pay_order))
        .add("GET", "/api/orders/{id}/tickets", get(list_tickets))
        .add("GET", "/api/orders/{id}/tickets.pdf", get(download_tickets))
        .add("GET", "/api/ticket-key", get(ticket_key))
        .add("GET", "/api/order-links/{id}", get(order_by_link))
        .add("GET", "/api/order-links/{id}/tickets.pdf", get(pdf_by_link))
        .add("POST", "/api/scans", post(scan));
    let Routes(r) = crate::webhooks::routes(crate::http_identity::routes(r));
    r.route_layer(axum::middleware::from_fn_with_state(auth, crate::doors::http_auth))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "NOT_FOUND", "no such route") })
        .layer(axum::middleware::from_fn(crate::observe::http_metrics))
        .with_state(state)
}

/// What nearly every handler starts from: the services, and who is calling
/// (`doors::http_auth` puts the caller in the request's extensions).
pub(crate) struct Call(pub(crate) Http, pub(crate) Caller);

impl FromRequestParts<Http> for Call {
    type Rejection = ExtensionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &Http) -> Result<Call, ExtensionRejection> {
        let Extension(c) = Extension::<Caller>::from_request_parts(parts, state).await?;
        Ok(Call(state.clone(), c))
    }
}

async fn jwks(State(h): State<Http>) -> Json<serde_json::Value> {
    Json(h.identity.ctx.auth.keys.jwks(h.identity.ctx.now()))
}

const STOREFRONT: &str = include_str!("storefront.html");

async fn storefront() -> Html<&'static str> {
    Html(STOREFRONT)
}

const SALES_PAGE: &str = include_str!("sales.html");

/// The organizer's sales page for one event (its script reads the JSON
/// report with the browser's session).
async fn sales_page() -> Html<&'static str> {
    Html(SALES_PAGE)
}

async fn sales_report(Call(h, c): Call, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let (e, r) = h.reporting.sales_report(&c, &id).await?;
    Ok(Json(crate::reporting::to_json(e, &r)))
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorJson,
}

#[derive(Serialize)]
pub(crate) struct ErrorJson {
    code: &'static str,
    reason: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    seats: Vec<String>,
}

/// The name of a code in a JSON error body (gRPC's names).
fn code_name(code: ErrorCode) -> &'static str {
    code.name()
}

impl From<ApiError> for ErrorJson {
    fn from(e: ApiError) -> ErrorJson {
        ErrorJson { code: code_name(e.code), reason: e.reason, message: e.message, seats: e.seats }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.count();
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_s;
        let mut r = (status, Json(ErrorBody { error: self.into() })).into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer realm=\"usher\""));
        }
        r
    }
}

pub(crate) fn ts(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().map(|t| t.to_string())
}

/// An instant as people in `zone` read it (the one rule,
/// `usher_actors::local_time::written`).
fn local(t: &Option<prost_types::Timestamp>, zone: &str) -> Option<String> {
    let t = t.as_ref()?;
    let ms = t.seconds.checked_mul(1000)?.checked_add(i64::from(t.nanos) / 1_000_000)?;
    Some(usher_actors::local_time::written(usher_engine::Millis(ms), zone))
}

/// A proto enum value as the JSON writes it: its name without the type's
/// prefix, lower-cased (`ORDER_STATUS_PAID` is `paid`); empty for a value
/// this build does not know.
fn enum_name<E: TryFrom<i32>>(v: i32, name: fn(&E) -> &'static str, prefix: &str) -> String {
    E::try_from(v).map(|e| name(&e).trim_start_matches(prefix).to_lowercase()).unwrap_or_default()
}

/// The amount of an optional price, in minor units (0 when absent).
fn minor(price: Option<pb::Money>) -> i64 {
    price.map(|p| p.amount_minor).unwrap_or_default()
}

/// The query string as `T`, or INVALID_ARGUMENT with axum's account of what is wrong.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::invalid("query", e.body_text()))
}

/// A PDF download named `filename`.
fn pdf(filename: String, bytes: Vec<u8>) -> Response {
    let disposition = format!("attachment; filename=\"{filename}\"");
    ([(header::CONTENT_TYPE, "application/pdf".to_owned()), (header::CONTENT_DISPOSITION, disposition)], bytes).into_response()
}

use crate::streams::{CountsJson, SnapshotJson, status_chars};

#[derive(Serialize)]
struct PriceJson {
    category: String,
    amount_minor: i64,
}

/// The ISO 4217 minor-unit exponent of a currency code the server sent
/// (JPY 0, EUR 2, BHD 3), so a page writes amounts in the currency's units.
fn exponent(code: &str) -> u8 {
    usher_engine::Currency::from_stored(code).map_or(2, |c| c.exponent())
}

#[derive(Serialize)]
struct EventJson {
    event_id: String,
    name: String,
    description: String,
    venue_name: String,
    /// Instants, RFC 3339 in UTC.
    starts_at: Option<String>,
    sales_start: Option<String>,
    sales_end: Option<String>,
    /// The venue's IANA time zone, and the start and end of sales as people
    /// there read them (`Sun 31 Oct 2027, 20:00 CET (Europe/Berlin)`).
    time_zone: String,
    starts_at_local: Option<String>,
    sales_end_local: Option<String>,
    status: String,
    seat_count: u32,
    hold_seats_max: u32,
    hold_duration_seconds: u32,
    currency: String,
    /// Decimals of the currency (ISO 4217 minor unit): amounts are
    /// `*_minor / 10^currency_exponent` in the currency's major unit.
    currency_exponent: u8,
    prices: Vec<PriceJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counts: Option<CountsJson>,
}

impl From<pb::Event> for EventJson {
    fn from(e: pb::Event) -> Self {
        EventJson {
            starts_at_local: local(&e.starts_at, &e.time_zone),
            sales_end_local: local(&e.sales_end, &e.time_zone),
            starts_at: ts(&e.starts_at),
            sales_start: ts(&e.sales_start),
            sales_end: ts(&e.sales_end),
            status: enum_name(e.status, pb::EventStatus::as_str_name, "EVENT_STATUS_"),
            event_id: e.event_id,
            name: e.name,
            description: e.description,
            venue_name: e.venue_name,
            seat_count: e.seat_count,
            hold_seats_max: e.hold_seats_max,
            hold_duration_seconds: e.hold_duration_seconds,
            currency_exponent: exponent(&e.currency),
            time_zone: e.time_zone,
            currency: e.currency,
            prices: e.prices.into_iter().map(|p| PriceJson { category: p.category, amount_minor: p.amount_minor }).collect(),
            counts: e.counts.map(CountsJson::from),
        }
    }
}

#[derive(Serialize)]
struct SeatJson {
    seat_id: String,
    section: String,
    row: String,
    number: u32,
    x: f32,
    y: f32,
    category: String,
    price_minor: i64,
    status: String,
}

#[derive(Serialize)]
struct SeatMapJson {
    event_id: String,
    counts: Option<CountsJson>,
    seats: Vec<SeatJson>,
}

#[derive(Serialize)]
struct HeldSeatJson {
    seat_id: String,
    section: String,
    row: String,
    number: u32,
    price_minor: i64,
}

#[derive(Serialize)]
struct HoldJson {
    hold_id: String,
    event_id: String,
    customer_id: String,
    state: String,
    seats: Vec<HeldSeatJson>,
    total_minor: i64,
    currency: String,
    currency_exponent: u8,
    created_at: Option<String>,
    expires_at: Option<String>,
    /// Seats best available had to leave alone in their row (see the proto's
    /// `Hold.orphan_seats_left`); 0 for any other answer.
    orphan_seats_left: u32,
}

impl From<pb::Hold> for HoldJson {
    fn from(h: pb::Hold) -> Self {
        let total = h.total.clone().unwrap_or_default();
        HoldJson {
            state: enum_name(h.state, pb::HoldState::as_str_name, "HOLD_STATE_"),
            created_at: ts(&h.created_at),
            expires_at: ts(&h.expires_at),
            hold_id: h.hold_id,
            event_id: h.event_id,
            customer_id: h.customer_id,
            seats: h
                .seats
                .into_iter()
                .map(|s| HeldSeatJson { seat_id: s.seat_id, section: s.section, row: s.row, number: s.number, price_minor: minor(s.price) })
                .collect(),
            total_minor: total.amount_minor,
            currency_exponent: exponent(&total.currency),
            currency: total.currency,
            orphan_seats_left: h.orphan_seats_left,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct EventsJson {
    events: Vec<EventJson>,
    next_page_token: String,
}

async fn list_events(Call(h, c): Call, q: Result<Query<ListQuery>, QueryRejection>) -> Result<Json<EventsJson>, ApiError> {
    let q = query(q)?;
    let status = match q.status.as_deref() {
        None | Some("") => pb::EventStatus::Unspecified,
        Some(s) => pb::EventStatus::from_str_name(&format!("EVENT_STATUS_{}", s.to_uppercase()))
            .ok_or_else(|| ApiError::invalid("status", format!("unknown status {}", usher_engine::quoted(s))))?,
    };
    let r = h
        .catalog
        .list(
            &c,
            pb::ListEventsRequest {
                page_size: q.page_size.unwrap_or(0),
                page_token: q.page_token.unwrap_or_default(),
                status: status as i32,
                ..Default::default()
            },
        )
        .await?;
    Ok(Json(EventsJson { events: r.events.into_iter().map(EventJson::from).collect(), next_page_token: r.next_page_token }))
}

async fn get_event(Call(h, c): Call, Path(id): Path<String>) -> Result<Json<EventJson>, ApiError> {
    Ok(Json(h.catalog.event(&c, &id).await?.into()))
}

async fn seat_map(Call(h, c): Call, Path(id): Path<String>) -> Result<Json<SeatMapJson>, ApiError> {
    let m = h.catalog.seat_map(&c, &id).await?;
    Ok(Json(SeatMapJson {
        event_id: m.event_id,
        counts: m.counts.map(CountsJson::from),
        seats: m
            .seats
            .into_iter()
            .map(|s| SeatJson {
                status: enum_name(s.status, pb::SeatStatus::as_str_name, "SEAT_STATUS_"),
                price_minor: minor(s.price),
                seat_id: s.seat_id,
                section: s.section,
                row: s.row,
                number: s.number,
                x: s.x,
                y: s.y,
                category: s.category,
            })
            .collect(),
    }))
}

/// `GET /api/events/{id}/seats/status`: counts and a status digit a seat
/// (`SnapshotJson`).
/// Readiness: 200 while the outbox keeps up, 503 while its oldest
/// unpublished row is older than `relay_behind_ms`; the body says how far
/// behind either way.
async fn readyz(State(h): State<Http>) -> Response {
    let s = h.catalog.ctx.relay.status();
    let body = serde_json::json!({
        "ready": !s.behind,
        "relay": {
            "relaying": s.relaying,
            "destination": s.destination,
            "backlog_rows": s.backlog.rows,
            "lag_ms": s.lag_ms,
            "behind": s.behind,
            "published_total": s.published_total,
            "failed_total": s.failed_total,
            "last_error": s.last_error,
        }
    });
    let code = if s.behind { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}

async fn seat_status(Call(h, c): Call, Path(id): Path<String>) -> Result<Json<SnapshotJson>, ApiError> {
    let v = h.catalog.seat_status(&c, &id).await?;
    Ok(Json(SnapshotJson { counts: v.counts.unwrap_or_default().into(), status: status_chars(&v.status) }))
}

#[derive(Serialize)]
struct SeatRowJson {
    section: String,
    row: String,
    category: String,
    first_seat: u32,
    seats: u32,
    first_number: u32,
    x: f32,
    y: f32,
}

/// The event's seats as rows (`GetSeatLayout`): a venue never changes, so
/// the answer is tagged with the venue (`ETag`) and a client that has it
/// (`If-None-Match`) gets 304 and no body.
async fn seat_layout(Call(h, c): Call, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let l = h.catalog.seat_layout(&c, &id).await?;
    let tag = format!("\"venue-{}\"", l.venue_id);
    let cache = [(header::ETAG, tag.clone()), (header::CACHE_CONTROL, "public, max-age=86400".to_owned())];
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == tag)) {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let body = serde_json::json!({
        "event_id": l.event_id,
        "venue_id": l.venue_id,
        "venue_name": l.venue_name,
        "seat_count": l.seat_count,
        "rows": l.rows.into_iter().map(|r| SeatRowJson {
            section: r.section, row: r.row, category: r.category, first_seat: r.first_seat, seats: r.seats,
            first_number: r.first_number, x: r.x, y: r.y,
        }).collect::<Vec<_>>(),
    });
    Ok((cache, Json(body)).into_response())
}

/// The event's seats, live, as server-sent events
/// (<https://html.spec.whatwg.org/multipage/server-sent-events.html>):
/// `snapshot` (`SnapshotJson`) first and whenever the watcher fell behind,
/// `changes` (`{"counts", "seats": [gap, status, …]}`, see `streams`) for every frame
/// of committed batches (`SEAT_FEED_FRAME_MS`), a comment when idle, and
/// `error` (the JSON error body) before the server ends the feed. The same
/// feed as `WatchSeats`, under the same caps (429 past them). The feed is
/// HTTP/1.1 only (chunked); once its head is out, the event's hub writes its
/// socket directly (`streams::PageWatcher`).
async fn live_seats(
    Call(h, c): Call,
    version: http::Version,
    cut: Option<Extension<crate::conns::ConnCut>>,
    takeover: Option<Extension<crate::conns::SocketTakeover>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (Some(Extension(cut)), Some(Extension(takeover))) = (cut, takeover) else {
        return Err(ApiError::new(ErrorCode::Internal, "INTERNAL", "this connection cannot carry a live feed"));
    };
    if version != http::Version::HTTP_11 {
        return Err(ApiError::invalid("version", "a live feed needs HTTP/1.1"));
    }
    let taken = takeover.request();
    h.catalog.page_feed(&c, &id, taken, cut).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache"), (header::TRANSFER_ENCODING, "chunked")],
        axum::body::Body::new(crate::conns::TakeoverBody::new(takeover)),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    /// Only for a partner or a box office: its reference for the customer.
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    seat_ids: Vec<String>,
    /// Best available instead of seat_ids.
    #[serde(default)]
    quantity: u32,
    #[serde(default)]
    section: String,
    #[serde(default)]
    idempotency_key: String,
}

/// The key from the `Idempotency-Key` header or the body.
pub(crate) fn idempotency_key(headers: &HeaderMap, body: &str) -> String {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_else(|| body.to_owned())
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::invalid("body", "send JSON with Content-Type: application/json"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("not the expected JSON: {e}")))
}

/// As `parse`, but an empty body is `T::default()`.
pub(crate) fn body_or_default<T: for<'de> Deserialize<'de> + Default>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() { Ok(T::default()) } else { parse(headers, body) }
}

async fn create_hold(
    Call(h, c): Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HoldJson>), ApiError> {
    let b: HoldBody = parse(&headers, &body)?;
    let key = idempotency_key(&headers, &b.idempotency_key);
    let hold = if b.quantity > 0 {
        if !b.seat_ids.is_empty() {
            return Err(ApiError::invalid("seat_ids", "give seat_ids or quantity, not both"));
        }
        h.inventory
            .hold_best(
                &c,
                pb::HoldBestAvailableRequest {
                    idempotency_key: key,
                    event_id: id,
                    customer_id: b.customer_id,
                    quantity: b.quantity,
                    section: b.section,
                    category: String::new(),
                },
            )
            .await?
    } else {
        h.inventory
            .hold_seats(&c, pb::HoldSeatsRequest { idempotency_key: key, event_id: id, customer_id: b.customer_id, seat_ids: b.seat_ids })
            .await?
    };
    Ok((StatusCode::CREATED, Json(hold.into())))
}

async fn get_hold(Call(h, c): Call, Path(id): Path<String>) -> Result<Json<HoldJson>, ApiError> {
    Ok(Json(h.inventory.get(&c, pb::GetHoldRequest { hold_id: id, event_id: String::new() }).await?.into()))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ReleaseQuery {
    customer_id: String,
}

async fn release_hold(
    Call(h, c): Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<ReleaseQuery>, QueryRejection>,
) -> Result<Json<HoldJson>, ApiError> {
    let q = query(q)?;
    let key = idempotency_key(&headers, "");
    let r = pb::ReleaseHoldRequest { idempotency_key: key, hold_id: id, event_id: String::new(), customer_id: q.customer_id };
    Ok(Json(h.inventory.release(&c, r).await?.into()))
}

// ---------------------------------------------------------------------------
// Orders, payment, tickets, check-in.

#[derive(Serialize)]
struct OrderLineJson {
    seat_id: String,
    section: String,
    row: String,
    number: u32,
    category: String,
    price_minor: i64,
    hold_id: String,
}

#[derive(Serialize)]
struct PaymentJson {
    payment_id: String,
    amount_minor: i64,
    currency: String,
    currency_exponent: u8,
    card_last4: String,
    status: String,
    decline_reason: String,
    created_at: Option<String>,
}

impl From<pb::Payment> for PaymentJson {
    fn from(p: pb::Payment) -> Self {
        let amount = p.amount.unwrap_or_default();
        PaymentJson {
            status: enum_name(p.status, pb::PaymentStatus::as_str_name, "PAYMENT_STATUS_"),
            created_at: ts(&p.created_at),
            payment_id: p.payment_id,
            amount_minor: amount.amount_minor,
            currency_exponent: exponent(&amount.currency),
            currency: amount.currency,
            card_last4: p.card_last4,
            decline_reason: p.decline_reason,
        }
    }
}

#[derive(Serialize)]
struct OrderJson {
    order_id: String,
    order_number: String,
    event_id: String,
    customer_id: String,
    email: String,
    status: String,
    step: String,
    hold_ids: Vec<String>,
    lines: Vec<OrderLineJson>,
    total_minor: i64,
    currency: String,
    currency_exponent: u8,
    pay_by: Option<String>,
    payments: Vec<PaymentJson>,
    ticket_ids: Vec<String>,
    note: String,
    created_at: Option<String>,
    updated_at: Option<String>,
}

impl From<pb::Order> for OrderJson {
    fn from(o: pb::Order) -> Self {
        let total = o.total.clone().unwrap_or_default();
        OrderJson {
            status: enum_name(o.status, pb::OrderStatus::as_str_name, "ORDER_STATUS_"),
            pay_by: ts(&o.pay_by),
            created_at: ts(&o.created_at),
            updated_at: ts(&o.updated_at),
            order_id: o.order_id,
            order_number: o.order_number,
            event_id: o.event_id,
            customer_id: o.customer_id,
            email: o.email,
            step: o.step,
            hold_ids: o.hold_ids,
            lines: o
                .lines
                .into_iter()
                .map(|l| OrderLineJson {
                    price_minor: minor(l.price),
                    seat_id: l.seat_id,
                    section: l.section,
                    row: l.row,
                    number: l.number,
                    category: l.category,
                    hold_id: l.hold_id,
                })
                .collect(),
            total_minor: total.amount_minor,
            currency_exponent: exponent(&total.currency),
            currency: total.currency,
            payments: o.payments.into_iter().map(PaymentJson::from).collect(),
            ticket_ids: o.ticket_ids,
            note: o.note,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    #[serde(default)]
    customer_id: String,
    email: String,
    hold_ids: Vec<String>,
    #[serde(default)]
    idempotency_key: String,
}

async fn create_order(Call(h, c): Call, headers: HeaderMap, body: Bytes) -> Result<(StatusCode, Json<OrderJson>), ApiError> {
    let b: OrderBody = parse(&headers, &body)?;
    let r = pb::CreateOrderRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        customer_id: b.customer_id,
        email: b.email,
        hold_ids: b.hold_ids,
    };
    Ok((StatusCode::CREATED, Json(h.orders.create_order(&c, r).await?.into())))
}

async fn get_order(Call(h, c): Call, Path(id): Path<String>) -> Result<Json<OrderJson>, ApiError> {
    Ok(Json(h.orders.get_order(&c, pb::GetOrderRequest { order_id: id }).await?.into()))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct OrdersQuery {
    customer_id: String,
    event_id: String,
    page_size: u32,
    page_token: String,
}

#[derive(Serialize)]
struct OrdersJson {
    orders: Vec<OrderJson>,
    next_page_token: String,
}

async fn list_orders(Call(h, c): Call, q: Result<Query<OrdersQuery>, QueryRejection>) -> Result<Json<OrdersJson>, ApiError> {
    let q = query(q)?;
    let r = h
        .orders
        .list_orders(
            &c,
            pb::ListOrdersRequest { customer_id: q.customer_id, event_id: q.event_id, page_size: q.page_size, page_token: q.page_token },
        )
        .await?;
    Ok(Json(OrdersJson { orders: r.orders.into_iter().map(OrderJson::from).collect(), next_page_token: r.next_page_token }))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct CancelBody {
    customer_id: String,
    idempotency_key: String,
}

async fn cancel_order(Call(h, c): Call, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Json<OrderJson>, ApiError> {
    let b: CancelBody = body_or_default(&headers, &body)?;
    let r =
        pb::CancelOrderRequest { idempotency_key: idempotency_key(&headers, &b.idempotency_key), order_id: id, customer_id: b.customer_id };
    Ok(Json(h.orders.cancel_order(&c, r).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    card_number: String,
    #[serde(default)]
    wait_ms: u32,
    #[serde(default)]
    idempotency_key: String,
}

#[derive(Serialize)]
struct PayJson {
    order: Option<OrderJson>,
    payment: Option<PaymentJson>,
    settled: bool,
}

async fn pay_order(Call(h, c): Call, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Json<PayJson>, ApiError> {
    let b: PayBody = parse(&headers, &body)?;
    let r = pb::PayOrderRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        order_id: id,
        card_number: b.card_number,
        wait_ms: b.wait_ms,
    };
    let p = h.orders.pay_order(&c, r).await?;
    Ok(Json(PayJson { order: p.order.map(OrderJson::from), payment: p.payment.map(PaymentJson::from), settled: p.settled }))
}

#[derive(Serialize)]
struct TicketJson {
    ticket_id: String,
    order_id: String,
    event_id: String,
    seat_id: String,
    price_minor: i64,
    code: String,
    status: String,
    issued_at: Option<String>,
}

#[derive(Serialize)]
struct TicketsJson {
    tickets: Vec<TicketJson>,
}

async fn list_tickets(Call(h, c): Call, Path(id): Path<String>) -> Result<Json<TicketsJson>, ApiError> {
    let r = h.orders.list_tickets(&c, pb::ListTicketsRequest { order_id: id }).await?;
    Ok(Json(TicketsJson { tickets: r.tickets.into_iter().map(ticket_json).collect() }))
}

fn ticket_json(t: pb::Ticket) -> TicketJson {
    TicketJson {
        status: enum_name(t.status, pb::TicketStatus::as_str_name, "TICKET_STATUS_"),
        issued_at: ts(&t.issued_at),
        price_minor: minor(t.price),
        ticket_id: t.ticket_id,
        order_id: t.order_id,
        event_id: t.event_id,
        seat_id: t.seat_id,
        code: t.code,
    }
}

async fn download_tickets(Call(h, c): Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (filename, bytes) = h.orders.pdf(&c, pb::DownloadTicketsRequest { order_id: id }).await?;
    Ok(pdf(filename, bytes))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LinkQuery {
    secret: String,
}

#[derive(Serialize)]
struct LinkedOrderJson {
    order: OrderJson,
    tickets: Vec<TicketJson>,
}

/// An order opened from its emailed link (no sign-in; the secret is the credential).
async fn order_by_link(
    State(h): State<Http>,
    Path(id): Path<String>,
    q: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Json<LinkedOrderJson>, ApiError> {
    let q = query(q)?;
    let (_, order, tickets) = h.orders.by_link(&id, &q.secret).await?;
    Ok(Json(LinkedOrderJson { order: order.into(), tickets: tickets.into_iter().map(ticket_json).collect() }))
}

async fn pdf_by_link(
    State(h): State<Http>,
    Path(id): Path<String>,
    q: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let (o, _, _) = h.orders.by_link(&id, &q.secret).await?;
    let (filename, bytes) = h.orders.pdf_of(&o).await?;
    Ok(pdf(filename, bytes))
}

#[derive(Serialize)]
struct KeyJson {
    algorithm: String,
    public_key: String,
    code_prefix: String,
}

async fn ticket_key(State(h): State<Http>) -> Json<KeyJson> {
    let k = h.orders.public_key();
    Json(KeyJson { algorithm: k.algorithm, public_key: k.public_key, code_prefix: k.code_prefix })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    event_id: String,
    code: String,
    /// A gate device's own gate by default.
    #[serde(default)]
    gate: String,
    #[serde(default)]
    idempotency_key: String,
}

#[derive(Serialize)]
struct ScanJson {
    verdict: String,
    message: String,
    ticket_id: String,
    seat_id: String,
    first_scanned_at: Option<String>,
    first_gate: String,
}

async fn scan(Call(h, c): Call, headers: HeaderMap, body: Bytes) -> Result<Json<ScanJson>, ApiError> {
    let b: ScanBody = parse(&headers, &body)?;
    let r = pb::ScanRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        code: b.code,
        event_id: b.event_id,
        gate: b.gate,
    };
    let s = h.orders.scan(&c, r).await?;
    Ok(Json(ScanJson {
        verdict: enum_name(s.verdict, pb::ScanVerdict::as_str_name, "SCAN_VERDICT_"),
        first_scanned_at: ts(&s.first_scanned_at),
        message: s.message,
        ticket_id: s.ticket_id,
        seat_id: s.seat_id,
        first_gate: s.first_gate,
    }))
}
