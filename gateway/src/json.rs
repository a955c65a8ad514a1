//! What every service's JSON routes share: the route list that refuses a
//! route without a permission entry, the caller extractor, reading bodies,
//! queries and idempotency keys, and writing times, enums, amounts and PDFs
//! the same way everywhere.
//!
//! Each service owns its routes (`catalog::json`, `inventory::json`, …) and
//! its state; `http::router` merges them and puts the doors on all of them.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{ExtensionRejection, QueryRejection};
use axum::extract::{Extension, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use usher_proto::v1 as pb;

use crate::auth::Caller;
use crate::error::ApiError;

/// A service's routes, added through `add`, which refuses (panics at start,
/// which the tests see) a route with no entry in the permission table: no
/// door is ever served without one.
pub(crate) struct Routes<S>(Router<S>);

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub(crate) fn new() -> Routes<S> {
        Routes(Router::new())
    }

    pub(crate) fn add(self, method: &str, path: &str, handler: axum::routing::MethodRouter<S>) -> Routes<S> {
        assert!(crate::doors::http_door(method, path).is_some(), "HTTP route {method} {path} has no entry in doors::HTTP");
        Routes(self.0.route(path, handler))
    }

    /// The routes over their state, ready to merge.
    pub(crate) fn with_state(self, state: S) -> Router {
        self.0.with_state(state)
    }
}

/// What nearly every handler starts from: its service, and who is calling
/// (`doors::http_auth` puts the caller in the request's extensions).
pub(crate) struct Call<S>(pub(crate) Arc<S>, pub(crate) Caller);

impl<S: Send + Sync + 'static> FromRequestParts<Arc<S>> for Call<S> {
    type Rejection = ExtensionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<S>) -> Result<Call<S>, ExtensionRejection> {
        let Extension(c) = Extension::<Caller>::from_request_parts(parts, state).await?;
        Ok(Call(state.clone(), c))
    }
}

/// An instant, RFC 3339 in UTC.
pub(crate) fn ts(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().map(|t| t.to_string())
}

/// An instant as people in `zone` read it (the one rule,
/// `usher_actors::local_time::written`).
pub(crate) fn local(t: &Option<prost_types::Timestamp>, zone: &str) -> Option<String> {
    let t = t.as_ref()?;
    let ms = t.seconds.checked_mul(1000)?.checked_add(i64::from(t.nanos) / 1_000_000)?;
    Some(usher_actors::local_time::written(usher_engine::Millis(ms), zone))
}

/// A proto enum value as the JSON writes it: its name without the type's
/// prefix, lower-cased (`ORDER_STATUS_PAID` is `paid`); empty for a value
/// this build does not know.
pub(crate) fn enum_name<E: TryFrom<i32>>(v: i32, name: fn(&E) -> &'static str, prefix: &str) -> String {
    E::try_from(v).map(|e| name(&e).trim_start_matches(prefix).to_lowercase()).unwrap_or_default()
}

/// The amount of an optional price, in minor units (0 when absent).
pub(crate) fn minor(price: Option<pb::Money>) -> i64 {
    price.map(|p| p.amount_minor).unwrap_or_default()
}

/// The ISO 4217 minor-unit exponent of a currency code the server sent
/// (JPY 0, EUR 2, BHD 3), so a page writes amounts in the currency's units.
pub(crate) fn exponent(code: &str) -> u8 {
    usher_engine::Currency::from_stored(code).map_or(2, |c| c.exponent())
}

/// The query string as `T`, or INVALID_ARGUMENT with axum's account of what is wrong.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::invalid("query", e.body_text()))
}

/// A PDF download named `filename`.
pub(crate) fn pdf(filename: String, bytes: Vec<u8>) -> Response {
    let disposition = format!("attachment; filename=\"{filename}\"");
    ([(header::CONTENT_TYPE, "application/pdf".to_owned()), (header::CONTENT_DISPOSITION, disposition)], bytes).into_response()
}

/// The key from the `Idempotency-Key` header or the body.
pub(crate) fn idempotency_key(headers: &HeaderMap, body: &str) -> String {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_else(|| body.to_owned())
}

/// The body as `T`: JSON, with `Content-Type: application/json`.
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
