//! The catalog over HTTP: events, their seat maps, layouts and live seats,
//! as JSON, through the same `Catalog` methods as gRPC.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use usher_proto::v1 as pb;

use super::Catalog;
use crate::error::{ApiError, ErrorCode, Reason};
use crate::json::{Call, Routes, enum_name, exponent, local, minor, query, ts};

/// The service's JSON routes, over its state.
pub(crate) fn routes(service: Catalog) -> Router {
    Routes::new()
        .add("GET", "/api/events", get(list_events))
        .add("GET", "/api/events/{id}", get(get_event))
        .add("GET", "/api/events/{id}/seats", get(seat_map))
        .add("GET", "/api/events/{id}/seats/live", get(live_seats))
        .add("GET", "/api/events/{id}/seats/status", get(seat_status))
        .add("GET", "/api/events/{id}/layout", get(seat_layout))
        .with_state(Arc::new(service))
}

use crate::streams::{CountsJson, SnapshotJson, status_chars};

#[derive(Serialize)]
struct PriceJson {
    category: String,
    amount_minor: i64,
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

async fn list_events(Call(h, c): Call<Catalog>, q: Result<Query<ListQuery>, QueryRejection>) -> Result<Json<EventsJson>, ApiError> {
    let q = query(q)?;
    let status = match q.status.as_deref() {
        None | Some("") => pb::EventStatus::Unspecified,
        Some(s) => pb::EventStatus::from_str_name(&format!("EVENT_STATUS_{}", s.to_uppercase()))
            .ok_or_else(|| ApiError::invalid("status", format!("unknown status {}", usher_engine::quoted(s))))?,
    };
    let r = h
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

async fn get_event(Call(h, c): Call<Catalog>, Path(id): Path<String>) -> Result<Json<EventJson>, ApiError> {
    Ok(Json(h.event(&c, &id).await?.into()))
}

async fn seat_map(Call(h, c): Call<Catalog>, Path(id): Path<String>) -> Result<Json<SeatMapJson>, ApiError> {
    let m = h.seat_map(&c, &id).await?;
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
async fn seat_status(Call(h, c): Call<Catalog>, Path(id): Path<String>) -> Result<Json<SnapshotJson>, ApiError> {
    let v = h.seat_status(&c, &id).await?;
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
async fn seat_layout(Call(h, c): Call<Catalog>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let l = h.seat_layout(&c, &id).await?;
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
    Call(h, c): Call<Catalog>,
    version: http::Version,
    cut: Option<Extension<crate::conns::ConnCut>>,
    takeover: Option<Extension<crate::conns::SocketTakeover>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (Some(Extension(cut)), Some(Extension(takeover))) = (cut, takeover) else {
        return Err(ApiError::new(ErrorCode::Internal, Reason::Internal, "this connection cannot carry a live feed"));
    };
    if version != http::Version::HTTP_11 {
        return Err(ApiError::invalid("version", "a live feed needs HTTP/1.1"));
    }
    let taken = takeover.request();
    h.page_feed(&c, &id, taken, cut).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache"), (header::TRANSFER_ENCODING, "chunked")],
        axum::body::Body::new(crate::conns::TakeoverBody::new(takeover)),
    )
        .into_response())
}
