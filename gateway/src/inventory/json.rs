//! Holds over HTTP: hold seats or the best available, read and release a
//! hold, as JSON, through the same `Inventory` methods as gRPC.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use usher_proto::v1 as pb;

use super::Inventory;
use crate::error::ApiError;
use crate::json::{Call, Routes, enum_name, exponent, idempotency_key, minor, parse, query, ts};

/// The service's JSON routes, over its state.
pub(crate) fn routes(service: Inventory) -> Router {
    Routes::new()
        .add("POST", "/api/events/{id}/holds", post(create_hold))
        .add("GET", "/api/holds/{id}", get(get_hold))
        .add("DELETE", "/api/holds/{id}", delete(release_hold))
        .with_state(Arc::new(service))
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

async fn create_hold(
    Call(h, c): Call<Inventory>,
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
        h.hold_best(
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
        h.hold_seats(&c, pb::HoldSeatsRequest { idempotency_key: key, event_id: id, customer_id: b.customer_id, seat_ids: b.seat_ids })
            .await?
    };
    Ok((StatusCode::CREATED, Json(hold.into())))
}

async fn get_hold(Call(h, c): Call<Inventory>, Path(id): Path<String>) -> Result<Json<HoldJson>, ApiError> {
    Ok(Json(h.get(&c, pb::GetHoldRequest { hold_id: id, event_id: String::new() }).await?.into()))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ReleaseQuery {
    customer_id: String,
}

async fn release_hold(
    Call(h, c): Call<Inventory>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<ReleaseQuery>, QueryRejection>,
) -> Result<Json<HoldJson>, ApiError> {
    let q = query(q)?;
    let key = idempotency_key(&headers, "");
    let r = pb::ReleaseHoldRequest { idempotency_key: key, hold_id: id, event_id: String::new(), customer_id: q.customer_id };
    Ok(Json(h.release(&c, r).await?.into()))
}
