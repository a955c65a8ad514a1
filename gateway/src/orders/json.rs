//! Orders, payment, tickets and check-in over HTTP, as JSON, through the
//! same `Orders` methods as gRPC; and the emailed link that opens one order
//! without signing in.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use usher_proto::v1 as pb;

use super::Orders;
use crate::error::ApiError;
use crate::json::{Call, Routes, body_or_default, enum_name, exponent, idempotency_key, minor, parse, pdf, query, ts};

/// The service's JSON routes, over its state.
pub(crate) fn routes(service: Orders) -> Router {
    Routes::new()
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
        .add("POST", "/api/scans", post(scan))
        .with_state(Arc::new(service))
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

async fn create_order(Call(h, c): Call<Orders>, headers: HeaderMap, body: Bytes) -> Result<(StatusCode, Json<OrderJson>), ApiError> {
    let b: OrderBody = parse(&headers, &body)?;
    let r = pb::CreateOrderRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        customer_id: b.customer_id,
        email: b.email,
        hold_ids: b.hold_ids,
    };
    Ok((StatusCode::CREATED, Json(h.create_order(&c, r).await?.into())))
}

async fn get_order(Call(h, c): Call<Orders>, Path(id): Path<String>) -> Result<Json<OrderJson>, ApiError> {
    Ok(Json(h.get_order(&c, pb::GetOrderRequest { order_id: id }).await?.into()))
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

async fn list_orders(Call(h, c): Call<Orders>, q: Result<Query<OrdersQuery>, QueryRejection>) -> Result<Json<OrdersJson>, ApiError> {
    let q = query(q)?;
    let r = h
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

async fn cancel_order(
    Call(h, c): Call<Orders>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OrderJson>, ApiError> {
    let b: CancelBody = body_or_default(&headers, &body)?;
    let r =
        pb::CancelOrderRequest { idempotency_key: idempotency_key(&headers, &b.idempotency_key), order_id: id, customer_id: b.customer_id };
    Ok(Json(h.cancel_order(&c, r).await?.into()))
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

async fn pay_order(Call(h, c): Call<Orders>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Json<PayJson>, ApiError> {
    let b: PayBody = parse(&headers, &body)?;
    let r = pb::PayOrderRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        order_id: id,
        card_number: b.card_number,
        wait_ms: b.wait_ms,
    };
    let p = h.pay_order(&c, r).await?;
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

async fn list_tickets(Call(h, c): Call<Orders>, Path(id): Path<String>) -> Result<Json<TicketsJson>, ApiError> {
    let r = h.list_tickets(&c, pb::ListTicketsRequest { order_id: id }).await?;
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

async fn download_tickets(Call(h, c): Call<Orders>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (filename, bytes) = h.pdf(&c, pb::DownloadTicketsRequest { order_id: id }).await?;
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
    State(h): State<Arc<Orders>>,
    Path(id): Path<String>,
    q: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Json<LinkedOrderJson>, ApiError> {
    let q = query(q)?;
    let (_, order, tickets) = h.by_link(&id, &q.secret).await?;
    Ok(Json(LinkedOrderJson { order: order.into(), tickets: tickets.into_iter().map(ticket_json).collect() }))
}

async fn pdf_by_link(
    State(h): State<Arc<Orders>>,
    Path(id): Path<String>,
    q: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let (o, _, _) = h.by_link(&id, &q.secret).await?;
    let (filename, bytes) = h.pdf_of(&o).await?;
    Ok(pdf(filename, bytes))
}

#[derive(Serialize)]
struct KeyJson {
    algorithm: String,
    public_key: String,
    code_prefix: String,
}

async fn ticket_key(State(h): State<Arc<Orders>>) -> Json<KeyJson> {
    let k = h.public_key();
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

async fn scan(Call(h, c): Call<Orders>, headers: HeaderMap, body: Bytes) -> Result<Json<ScanJson>, ApiError> {
    let b: ScanBody = parse(&headers, &body)?;
    let r = pb::ScanRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        code: b.code,
        event_id: b.event_id,
        gate: b.gate,
    };
    let s = h.scan(&c, r).await?;
    Ok(Json(ScanJson {
        verdict: enum_name(s.verdict, pb::ScanVerdict::as_str_name, "SCAN_VERDICT_"),
        first_scanned_at: ts(&s.first_scanned_at),
        message: s.message,
        ticket_id: s.ticket_id,
        seat_id: s.seat_id,
        first_gate: s.first_gate,
    }))
}
