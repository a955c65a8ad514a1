//! The sales report over HTTP: the JSON report and the organizer's sales
//! page that reads it.

use std::sync::Arc;

use axum::extract::Path;
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};

use super::Reporting;
use crate::error::ApiError;
use crate::json::{Call, Routes};

/// The service's JSON routes, over its state.
pub(crate) fn routes(service: Reporting) -> Router {
    Routes::new()
        .add("GET", "/api/events/{id}/sales", get(sales_report))
        .add("GET", "/sales/{id}", get(sales_page))
        .with_state(Arc::new(service))
}

const SALES_PAGE: &str = include_str!("../sales.html");

/// The organizer's sales page for one event (its script reads the JSON
/// report with the browser's session).
async fn sales_page() -> Html<&'static str> {
    Html(SALES_PAGE)
}

async fn sales_report(Call(h, c): Call<Reporting>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let (e, r) = h.sales_report(&c, &id).await?;
    Ok(Json(crate::reporting::to_json(e, &r)))
}
