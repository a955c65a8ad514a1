//! `ReportingService` and its JSON twin: an event's sales from the read
//! model, for the event's organization (members who may view orders).

use tonic::{Request, Response, Status};
use usher_actors::SalesReport;
use usher_engine::{Cap, EventId};
use usher_proto::v1::{self as pb, reporting_service_server::ReportingService};

use crate::auth::Caller;
use crate::convert;
use crate::ctx::Ctx;
use crate::doors::caller;
use crate::error::{ApiError, Reason};

pub(crate) mod json;

#[derive(Clone)]
pub struct Reporting {
    pub ctx: Ctx,
}

impl Reporting {
    /// The event's report, after checking the caller may view its orders
    /// (NOT_FOUND for an event of another organization, as everywhere).
    pub(crate) async fn sales_report(&self, c: &Caller, event_id: &str) -> Result<(EventId, SalesReport), ApiError> {
        let e = convert::event_id(event_id)?;
        let org = self.ctx.registry.facts(e).await?.org;
        c.may(org, Cap::ViewOrders, Reason::EventNotFound, format_args!("event {e}"))?;
        Ok((e, self.ctx.reports.sales_report(e).await?))
    }
}

/// Seats sold, and seats held right now (held, less those released,
/// expired or sold since), over every category and channel.
pub fn totals(r: &SalesReport) -> (i64, i64) {
    let sold: i64 = r.seats.iter().map(|s| s.sold).sum();
    let now: i64 = r.seats.iter().map(|s| s.held - s.released - s.expired - s.sold).sum();
    (sold, now.max(0))
}

pub fn to_pb(event: EventId, r: SalesReport) -> pb::SalesReport {
    let (seats_sold, seats_held_now) = totals(&r);
    pb::SalesReport {
        event_id: event.to_string(),
        seats: r
            .seats
            .into_iter()
            .map(|s| pb::SeatFigures {
                category: s.category,
                channel: s.channel,
                held: s.held,
                released: s.released,
                expired: s.expired,
                sold: s.sold,
                refunded: s.refunded,
            })
            .collect(),
        orders: r.orders.into_iter().map(|(status, orders)| pb::OrderStatusCount { status, orders }).collect(),
        revenue: r
            .revenue
            .into_iter()
            .map(|x| pb::RevenueFigures {
                channel: x.channel,
                currency: x.currency,
                gross_minor: x.gross_minor,
                refunded_minor: x.refunded_minor,
            })
            .collect(),
        timeline: r
            .timeline
            .into_iter()
            .map(|m| pb::SalesMinute { at: Some(convert::ts(m.at)), currency: m.currency, seats: m.seats, revenue_minor: m.revenue_minor })
            .collect(),
        checkins: r
            .checkins
            .into_iter()
            .map(|x| pb::CheckInFigures { gate: x.gate, hour: Some(convert::ts(x.hour)), scans: x.scans })
            .collect(),
        seats_sold,
        seats_held_now,
    }
}

/// The same report as JSON: times as RFC 3339, money in minor units with
/// its currency.
pub fn to_json(event: EventId, r: &SalesReport) -> serde_json::Value {
    let (sold, held_now) = totals(r);
    let at = |t: usher_engine::Millis| usher_adapters::kafka::rfc3339(t);
    serde_json::json!({
        "event_id": event.to_string(),
        "seats_sold": sold,
        "seats_held_now": held_now,
        "seats": r.seats.iter().map(|s| serde_json::json!({
            "category": s.category, "channel": s.channel, "held": s.held, "released": s.released,
            "expired": s.expired, "sold": s.sold, "refunded": s.refunded,
        })).collect::<Vec<_>>(),
        "orders": r.orders.iter().map(|(status, n)| serde_json::json!({ "status": status, "orders": n })).collect::<Vec<_>>(),
        "revenue": r.revenue.iter().map(|x| serde_json::json!({
            "channel": x.channel, "currency": x.currency, "gross_minor": x.gross_minor, "refunded_minor": x.refunded_minor,
        })).collect::<Vec<_>>(),
        "timeline": r.timeline.iter().map(|m| serde_json::json!({
            "at": at(m.at), "currency": m.currency, "seats": m.seats, "revenue_minor": m.revenue_minor,
        })).collect::<Vec<_>>(),
        "checkins": r.checkins.iter().map(|x| serde_json::json!({ "gate": x.gate, "hour": at(x.hour), "scans": x.scans })).collect::<Vec<_>>(),
    })
}

#[tonic::async_trait]
impl ReportingService for Reporting {
    async fn get_sales_report(&self, req: Request<pb::GetSalesReportRequest>) -> Result<Response<pb::SalesReport>, Status> {
        let c = caller(&req)?;
        let (e, r) = self.sales_report(&c, &req.get_ref().event_id).await?;
        Ok(Response::new(to_pb(e, r)))
    }
}
