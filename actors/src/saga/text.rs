//! Text for people about an order: its number and the facts printed on
//! its tickets (local time, money in its own units).

use std::collections::HashMap;

use usher_engine::{EventConfig, Order, OrderId, SeatIdx};

use super::{SagaDeps, SagaError};
use crate::ports::{OrderDoc, TicketDoc, TicketRecord};

/// The facts printed on an order's tickets.
pub async fn order_doc(deps: &SagaDeps, order: &Order) -> Result<OrderDoc, SagaError> {
    let config: EventConfig = deps.store.get_event(order.event_id).await?.ok_or(SagaError::NotFound(order.id))?;
    let venue = deps.store.get_venue(config.venue_id).await?;
    let handle = deps.registry.event(order.event_id).await.map_err(|e| SagaError::Unavailable(e.to_string()))?;
    let layout = handle.layout.clone();
    let tickets = deps.orders.tickets_of_order(order.id).await?;
    let by_seat: HashMap<SeatIdx, &TicketRecord> = tickets.iter().map(|t| (t.seat, t)).collect();
    let mut docs = Vec::new();
    for l in &order.lines {
        let t =
            by_seat.get(&l.seat).ok_or_else(|| SagaError::Internal(format!("order {} has no ticket for seat {:?}", order.id, l.seat)))?;
        let d = layout.describe(l.seat);
        docs.push(TicketDoc {
            ticket_id: t.id.to_string(),
            section: d.section.to_owned(),
            row: d.row.to_owned(),
            number: d.number,
            // People read the category's name on their ticket; clients get its code.
            category: d.category_name.to_owned(),
            price: l.price.to_string(),
            code: t.code.clone(),
        });
    }
    Ok(OrderDoc {
        order_number: order_number(order.id),
        event_name: config.name,
        venue_name: venue.map(|v| v.spec.name).unwrap_or_default(),
        starts_at: crate::local_time::written(config.starts_at, &config.time_zone),
        holder: format!("{} <{}>", order.customer.as_str(), order.email),
        tickets: docs,
    })
}

/// Short and readable: the first 8 hex digits of the order id, grouped.
pub fn order_number(id: OrderId) -> String {
    let h = id.0.simple().to_string().to_uppercase();
    format!("U-{}-{}", &h[..4], &h[4..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let id = OrderId(uuid::Uuid::from_u128(0xabcdef12_0000_0000_0000_000000000000));
        assert_eq!(order_number(id), "U-ABCD-EF12");
    }
}
