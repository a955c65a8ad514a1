//! The HTTP side: the storefront page and a JSON API over the same services
//! as gRPC. Each service owns its routes (`catalog::json`, `inventory::json`,
//! `orders::json`, `reporting::json`, `identity::json`, `webhooks::json`);
//! this file merges them with the node's own (the page, health, readiness,
//! the token keys) and puts the doors on every one: the permission table's
//! middleware (`doors::http_auth`) and the metrics layer. Errors go through
//! the same `ApiError` and become a 4xx/5xx with a JSON body
//! `{"error": {"code", "reason", "message", "seats"}}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode, Reason};
use crate::json::Routes;

/// Every route of the HTTP listener, with its doors.
pub fn router(ctx: Ctx) -> Router {
    let auth = crate::doors::HttpAuthState {
        auth: ctx.auth.clone(),
        clock: ctx.clock.clone(),
        node: ctx.cluster.as_ref().map(|c| Arc::from(c.name())),
    };
    Routes::new()
        .add("GET", "/", get(storefront))
        .add("GET", "/healthz", get(|| async { "ok" }))
        .add("GET", "/readyz", get(readyz))
        .add("GET", "/.well-known/jwks.json", get(jwks))
        .with_state(Arc::new(ctx.clone()))
        .merge(crate::catalog::json::routes(crate::catalog::Catalog { ctx: ctx.clone() }))
        .merge(crate::inventory::json::routes(crate::inventory::Inventory { ctx: ctx.clone() }))
        .merge(crate::orders::json::routes(crate::orders::Orders { ctx: ctx.clone() }))
        .merge(crate::reporting::json::routes(crate::reporting::Reporting { ctx: ctx.clone() }))
        .merge(crate::webhooks::json::routes(crate::webhooks::Webhooks { ctx: ctx.clone() }))
        .merge(crate::identity::json::routes(crate::identity::Identity { ctx }))
        .route_layer(axum::middleware::from_fn_with_state(auth, crate::doors::http_auth))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, Reason::NotFound, "no such route") })
        .layer(axum::middleware::from_fn(crate::observe::http_metrics))
}

/// The keys that verify access tokens (RFC 7517).
async fn jwks(State(ctx): State<Arc<Ctx>>) -> Json<serde_json::Value> {
    Json(ctx.auth.keys.jwks(ctx.now()))
}

const STOREFRONT: &str = include_str!("storefront.html");

async fn storefront() -> Html<&'static str> {
    Html(STOREFRONT)
}

/// Readiness: 200 while the outbox keeps up, 503 while its oldest
/// unpublished row is older than `relay_behind_ms`; the body says how far
/// behind either way.
async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    let s = ctx.relay.status();
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
