//! Webhooks over HTTP: the JSON twin of `WebhookService`.
//!
//! The same calls over HTTP, through the same methods as gRPC, so the rules
//! (who may, idempotency, limits) are one code path:
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `GET /api/orgs/{org}/webhooks` | | `{"endpoints": [endpoint]}` |
//! | `POST /api/orgs/{org}/webhooks` | `{"url", "topics", "description", "idempotency_key"}` | 201 `{"endpoint", "secret"}` |
//! | `DELETE /api/webhooks/{id}` | | `endpoint` (with `deleted_at`) |
//! | `POST /api/webhooks/{id}/rotate-secret` | | `{"endpoint", "secret"}` |
//! | `GET /api/webhooks/{id}/deliveries` | `?status=pending\|delivered\|failed&page_size=N` | `{"deliveries": [delivery]}` |
//! | `POST /api/webhook-deliveries/{id}/redeliver` | | `delivery` |
//!
//! The idempotency key comes from the `Idempotency-Key` header, or the
//! body's `idempotency_key` where there is a body. Times are RFC 3339.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use usher_proto::v1 as pb;

use super::Webhooks;
use crate::error::ApiError;
use crate::json::{Call, Routes, idempotency_key, parse, query, ts};

/// The service's JSON routes, over its state.
pub(crate) fn routes(service: Webhooks) -> Router {
    Routes::new()
        .add("GET", "/api/orgs/{org}/webhooks", get(http_list))
        .add("POST", "/api/orgs/{org}/webhooks", post(http_create))
        .add("DELETE", "/api/webhooks/{id}", delete(http_delete))
        .add("POST", "/api/webhooks/{id}/rotate-secret", post(http_rotate))
        .add("GET", "/api/webhooks/{id}/deliveries", get(http_deliveries))
        .add("POST", "/api/webhook-deliveries/{id}/redeliver", post(http_redeliver))
        .with_state(Arc::new(service))
}

fn endpoint_json(e: &pb::WebhookEndpoint) -> Value {
    json!({
        "endpoint_id": e.endpoint_id, "org_id": e.org_id, "url": e.url, "topics": e.topics, "description": e.description,
        "created_at": ts(&e.created_at), "deleted_at": ts(&e.deleted_at),
    })
}

fn created_json(c: &pb::CreatedWebhookEndpoint) -> Value {
    // An empty secret is a replay: the secret was shown once, in the first answer.
    json!({"endpoint": c.endpoint.as_ref().map(endpoint_json), "secret": (!c.secret.is_empty()).then_some(&c.secret)})
}

fn delivery_json(d: &pb::WebhookDelivery) -> Value {
    json!({
        "delivery_id": d.delivery_id, "endpoint_id": d.endpoint_id, "message_id": d.message_id, "topic": d.topic,
        "event_id": d.event_id, "status": d.status, "attempts": d.attempts, "next_attempt_at": ts(&d.next_attempt_at),
        "last_status": d.last_status, "last_error": d.last_error, "created_at": ts(&d.created_at),
        "delivered_at": ts(&d.delivered_at),
    })
}

async fn http_list(Call(h, c): Call<Webhooks>, Path(org): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = h.list(&c, pb::ListWebhookEndpointsRequest { org_id: org }).await?;
    Ok(Json(json!({"endpoints": r.endpoints.iter().map(endpoint_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct EndpointBody {
    url: String,
    topics: Vec<String>,
    description: String,
    idempotency_key: String,
}

async fn http_create(
    Call(h, c): Call<Webhooks>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: EndpointBody = parse(&headers, &body)?;
    let r = pb::CreateWebhookEndpointRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        org_id: org,
        url: b.url,
        topics: b.topics,
        description: b.description,
    };
    Ok((StatusCode::CREATED, Json(created_json(&h.create(&c, r).await?))))
}

async fn http_delete(Call(h, c): Call<Webhooks>, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let r = pb::DeleteWebhookEndpointRequest { idempotency_key: idempotency_key(&headers, ""), endpoint_id: id };
    Ok(Json(endpoint_json(&h.delete(&c, r).await?)))
}

async fn http_rotate(Call(h, c): Call<Webhooks>, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let r = pb::RotateWebhookSecretRequest { idempotency_key: idempotency_key(&headers, ""), endpoint_id: id };
    Ok(Json(created_json(&h.rotate(&c, r).await?)))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DeliveriesQuery {
    status: String,
    page_size: u32,
}

async fn http_deliveries(
    Call(h, c): Call<Webhooks>,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let r = pb::ListWebhookDeliveriesRequest { endpoint_id: id, status: q.status, page_size: q.page_size };
    let r = h.deliveries(&c, r).await?;
    Ok(Json(json!({"deliveries": r.deliveries.iter().map(delivery_json).collect::<Vec<_>>()})))
}

async fn http_redeliver(Call(h, c): Call<Webhooks>, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let r = pb::RedeliverWebhookRequest { idempotency_key: idempotency_key(&headers, ""), delivery_id: id };
    Ok(Json(delivery_json(&h.redeliver(&c, r).await?)))
}
