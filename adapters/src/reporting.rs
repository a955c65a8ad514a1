//! The sales read model: a [`Projection`] of the event stream into the
//! `report_*` tables (schema `bc_reporting` on PostgreSQL), and the
//! [`Reports`] that read them. Each message is applied at most once in
//! effect: its id goes into `consumed_messages` in the same transaction as
//! its change, and an id already there is skipped.
//!
//! What each message does:
//! - reservation-created / -released / -expired, seats-sold: the seats'
//!   counts by category (from the venue's layout) and channel (from the
//!   customer id's namespace, `engine::SalesChannel`);
//! - order-created, payment-succeeded / -failed, order-fulfilled /
//!   -expired / -cancelled / -refunded: the order's latest status, kept only
//!   when the message's `event_seq` is newer than the one that set the
//!   current status (messages of different topics may arrive in any order);
//! - payment-succeeded: gross revenue by channel and currency, and the
//!   minute's seats and money; order-refunded (of a paid order): refunded
//!   money and seats;
//! - ticket-checked-in: admissions by gate and hour.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use usher_actors::{
    BoxFuture, CheckInFigures, Projection, Reports, RevenueFigures, SalesMinute, SalesReport, SeatFigures, Store, StoreError, StreamMessage,
};
use usher_engine::limits::SALES_MINUTES_MAX;
use usher_engine::{EventId, Layout, Millis, SalesChannel, SeatIdx};
use usher_proto::events as pb;

use crate::db_error::db_error;
use crate::sql::{PgStore, SqliteStore};

/// The sales consumer's name.
pub const SALES: &str = "sales";

/// One change to the read model, decoded from a message.
enum Change {
    Seats { event: String, channel: SalesChannel, seats: Vec<u32>, column: &'static str },
    Status { order: String, event: String, channel: SalesChannel, status: &'static str },
    Paid { event: String, channel: SalesChannel, currency: String, total: i64, seats: i64, at: Millis },
    Refunded { event: String, channel: SalesChannel, currency: String, total: i64, seats: Vec<u32> },
    CheckIn { event: String, gate: String, at: Millis },
}

fn order_ref(o: Option<pb::OrderRef>) -> Result<pb::OrderRef, String> {
    o.ok_or_else(|| "no order in the message".to_owned())
}

/// The changes a message makes (none for messages the model does not count).
fn changes(m: &StreamMessage) -> Result<Vec<Change>, String> {
    let p = m.payload.as_slice();
    let e = |x: prost::DecodeError| format!("{} does not decode: {x}", m.message_type);
    let event = m.key.clone();
    let seats_of = |s: &[pb::SeatRef]| s.iter().map(|s| s.seat_index).collect::<Vec<_>>();
    let hold = |customer: &str, seats: &[pb::SeatRef], column: &'static str| Change::Seats {
        event: event.clone(),
        channel: SalesChannel::of(customer),
        seats: seats_of(seats),
        column,
    };
    let status = |o: &pb::OrderRef, status: &'static str| Change::Status {
        order: o.order_id.clone(),
        event: event.clone(),
        channel: SalesChannel::of(&o.customer_id),
        status,
    };
    Ok(match m.message_type.as_str() {
        "usher.events.v1.ReservationCreated" => {
            let x = pb::ReservationCreated::decode(p).map_err(e)?;
            vec![hold(&x.customer_id, &x.seats, "held")]
        }
        "usher.events.v1.ReservationReleased" => {
            let x = pb::ReservationReleased::decode(p).map_err(e)?;
            vec![hold(&x.customer_id, &x.seats, "released")]
        }
        "usher.events.v1.ReservationExpired" => {
            let x = pb::ReservationExpired::decode(p).map_err(e)?;
            vec![hold(&x.customer_id, &x.seats, "expired")]
        }
        "usher.events.v1.SeatsSold" => {
            let x = pb::SeatsSold::decode(p).map_err(e)?;
            vec![hold(&x.customer_id, &x.seats, "sold")]
        }
        "usher.events.v1.OrderCreated" => vec![status(&order_ref(pb::OrderCreated::decode(p).map_err(e)?.order)?, "pending_payment")],
        "usher.events.v1.PaymentFailed" => vec![status(&order_ref(pb::PaymentFailed::decode(p).map_err(e)?.order)?, "payment_failed")],
        "usher.events.v1.OrderExpired" => vec![status(&order_ref(pb::OrderExpired::decode(p).map_err(e)?.order)?, "expired")],
        "usher.events.v1.OrderCancelled" => vec![status(&order_ref(pb::OrderCancelled::decode(p).map_err(e)?.order)?, "cancelled")],
        "usher.events.v1.OrderFulfilled" => vec![status(&order_ref(pb::OrderFulfilled::decode(p).map_err(e)?.order)?, "fulfilled")],
        "usher.events.v1.PaymentSucceeded" => {
            let o = order_ref(pb::PaymentSucceeded::decode(p).map_err(e)?.order)?;
            vec![
                status(&o, "paid"),
                Change::Paid {
                    event: event.clone(),
                    channel: SalesChannel::of(&o.customer_id),
                    currency: o.currency.clone(),
                    total: o.total_minor,
                    seats: o.seats.len() as i64,
                    at: m.occurred_at,
                },
            ]
        }
        "usher.events.v1.OrderRefunded" => {
            let x = pb::OrderRefunded::decode(p).map_err(e)?;
            let o = order_ref(x.order)?;
            let mut out = vec![status(&o, "refunded")];
            // A refund without a payment id gave back an authorization
            // never captured: no money came in, none goes out.
            if !x.payment_id.is_empty() {
                out.push(Change::Refunded {
                    event: event.clone(),
                    channel: SalesChannel::of(&o.customer_id),
                    currency: o.currency.clone(),
                    total: o.total_minor,
                    seats: o.seats.iter().map(|s| s.seat_index).collect(),
                });
            }
            out
        }
        "usher.events.v1.TicketCheckedIn" => {
            let x = pb::TicketCheckedIn::decode(p).map_err(e)?;
            let at = x.checked_in_at.map_or(m.occurred_at, |t| Millis(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000));
            vec![Change::CheckIn { event, gate: x.gate, at }]
        }
        _ => vec![],
    })
}

/// Seat indexes counted by category code.
fn by_category(layout: Option<&Layout>, seats: &[u32]) -> Vec<(String, i64)> {
    let mut n: HashMap<String, i64> = HashMap::new();
    for &s in seats {
        let code = match layout {
            Some(l) if (s as usize) < l.seat_count() => l.categories[l.category_of(SeatIdx(s)) as usize].code.clone(),
            _ => "unknown".to_owned(),
        };
        *n.entry(code).or_default() += 1;
    }
    let mut v: Vec<_> = n.into_iter().collect();
    v.sort();
    v
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

macro_rules! reporting {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn layout_of(&self, event: &str) -> Option<Arc<Layout>> {
                let id = EventId::parse(event).ok()?;
                if let Some(l) = self.report_layouts.0.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
                    return Some(l.clone());
                }
                let config = self.get_event(id).await.ok()??;
                let venue = self.get_venue(config.venue_id).await.ok()??;
                let layout = self.layouts.get_or_build(venue.id, &venue.spec).ok()?;
                let mut cache = self.report_layouts.0.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= crate::sql::REPORT_LAYOUTS_MAX {
                    cache.clear();
                }
                cache.insert(id, layout.clone());
                Some(layout)
            }

            async fn apply_change(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                layouts: &HashMap<String, Option<Arc<Layout>>>,
                c: &Change,
                seq: i64,
            ) -> Result<(), StoreError> {
                match c {
                    Change::Seats { event, channel, seats, column } => {
                        let layout = layouts.get(event).cloned().flatten();
                        for (category, n) in by_category(layout.as_deref(), seats) {
                            let sql = format!(
                                "INSERT INTO report_seats (event_id, category, channel, {column}) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (event_id, category, channel) DO UPDATE SET {column} = report_seats.{column} + excluded.{column}"
                            );
                            sqlx::query(&sql).bind(event).bind(&category).bind(channel.as_str()).bind(n).execute(&mut **tx).await.map_err(db_error)?;
                        }
                    }
                    Change::Status { order, event, channel, status } => {
                        sqlx::query(
                            "INSERT INTO report_orders (order_id, event_id, channel, status, status_seq) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, status_seq = excluded.status_seq \
                             WHERE report_orders.status_seq < excluded.status_seq",
                        )
                        .bind(order)
                        .bind(event)
                        .bind(channel.as_str())
                        .bind(*status)
                        .bind(seq)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    }
                    Change::Paid { event, channel, currency, total, seats, at } => {
                        sqlx::query(
                            "INSERT INTO report_revenue (event_id, channel, currency, gross_minor) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (event_id, channel, currency) DO UPDATE SET gross_minor = report_revenue.gross_minor + excluded.gross_minor",
                        )
                        .bind(event)
                        .bind(channel.as_str())
                        .bind(currency)
                        .bind(*total)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                        sqlx::query(
                            "INSERT INTO report_sales_minutes (event_id, minute, currency, seats, revenue_minor) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (event_id, minute, currency) DO UPDATE SET seats = report_sales_minutes.seats + excluded.seats, \
                             revenue_minor = report_sales_minutes.revenue_minor + excluded.revenue_minor",
                        )
                        .bind(event)
                        .bind(at.0.div_euclid(MINUTE_MS))
                        .bind(currency)
                        .bind(*seats)
                        .bind(*total)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    }
                    Change::Refunded { event, channel, currency, total, seats } => {
                        sqlx::query(
                            "INSERT INTO report_revenue (event_id, channel, currency, refunded_minor) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (event_id, channel, currency) DO UPDATE SET refunded_minor = report_revenue.refunded_minor + excluded.refunded_minor",
                        )
                        .bind(event)
                        .bind(channel.as_str())
                        .bind(currency)
                        .bind(*total)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                        let seats = Change::Seats { event: event.clone(), channel: *channel, seats: seats.clone(), column: "refunded" };
                        Box::pin(self.apply_change(tx, layouts, &seats, seq)).await?;
                    }
                    Change::CheckIn { event, gate, at } => {
                        sqlx::query(
                            "INSERT INTO report_checkins (event_id, gate, hour, scans) VALUES ($1, $2, $3, 1) \
                             ON CONFLICT (event_id, gate, hour) DO UPDATE SET scans = report_checkins.scans + 1",
                        )
                        .bind(event)
                        .bind(gate)
                        .bind(at.0.div_euclid(HOUR_MS))
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    }
                }
                Ok(())
            }

            async fn do_apply(&self, msgs: &[StreamMessage], now: Millis) -> Result<usize, StoreError> {
                // The events' layouts first, outside the transaction: on
                // SQLite the transaction holds the write lock, and reading
                // them inside would take a second pooled connection while
                // other writers wait on that lock with theirs.
                let mut layouts: HashMap<String, Option<Arc<Layout>>> = HashMap::new();
                for m in msgs {
                    if !layouts.contains_key(&m.key) {
                        layouts.insert(m.key.clone(), self.layout_of(&m.key).await);
                    }
                }
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                let mut new = 0;
                for m in msgs {
                    if !Self::first_time(&mut tx, SALES, &m.message_id, now).await? {
                        continue;
                    }
                    new += 1;
                    match changes(m) {
                        Ok(cs) => {
                            for c in &cs {
                                self.apply_change(&mut tx, &layouts, c, m.event_seq).await?;
                            }
                        }
                        // Recorded and skipped: a message that cannot be read
                        // now never can, and must not stop the stream.
                        Err(why) => tracing::error!(message_id = %m.message_id, topic = %m.topic, error = %why, "sales read model skips a message"),
                    }
                }
                Self::advance(&mut tx, SALES, msgs).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(new)
            }

            async fn do_reset(&self) -> Result<i64, StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                sqlx::query("INSERT INTO consumers (name, generation) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET generation = consumers.generation + 1")
                    .bind(SALES)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                for t in ["report_seats", "report_orders", "report_revenue", "report_sales_minutes", "report_checkins"] {
                    sqlx::query(&format!("DELETE FROM {t}")).execute(&mut *tx).await.map_err(db_error)?;
                }
                sqlx::query("DELETE FROM consumed_messages WHERE consumer = $1").bind(SALES).execute(&mut *tx).await.map_err(db_error)?;
                sqlx::query("DELETE FROM stream_cursors WHERE name = $1").bind(SALES).execute(&mut *tx).await.map_err(db_error)?;
                sqlx::query("DELETE FROM consumer_offsets WHERE consumer = $1").bind(SALES).execute(&mut *tx).await.map_err(db_error)?;
                let (g,): (i64,) =
                    sqlx::query_as("SELECT generation FROM consumers WHERE name = $1").bind(SALES).fetch_one(&mut *tx).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(g)
            }

            async fn do_sales_report(&self, event: EventId) -> Result<SalesReport, StoreError> {
                let id = event.to_string();
                let pool = self.pool();
                let seats = sqlx::query_as::<_, (String, String, i64, i64, i64, i64, i64)>(
                    "SELECT category, channel, held, released, expired, sold, refunded FROM report_seats WHERE event_id = $1 ORDER BY category, channel",
                )
                .bind(&id)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|(category, channel, held, released, expired, sold, refunded)| SeatFigures {
                    category,
                    channel,
                    held,
                    released,
                    expired,
                    sold,
                    refunded,
                })
                .collect();
                let orders = sqlx::query_as::<_, (String, i64)>(
                    "SELECT status, COUNT(*) FROM report_orders WHERE event_id = $1 GROUP BY status ORDER BY status",
                )
                .bind(&id)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
                let revenue = sqlx::query_as::<_, (String, String, i64, i64)>(
                    "SELECT channel, currency, gross_minor, refunded_minor FROM report_revenue WHERE event_id = $1 ORDER BY channel, currency",
                )
                .bind(&id)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|(channel, currency, gross_minor, refunded_minor)| RevenueFigures { channel, currency, gross_minor, refunded_minor })
                .collect();
                let mut timeline: Vec<SalesMinute> = sqlx::query_as::<_, (i64, String, i64, i64)>(
                    "SELECT minute, currency, seats, revenue_minor FROM report_sales_minutes WHERE event_id = $1 ORDER BY minute DESC, currency LIMIT $2",
                )
                .bind(&id)
                .bind(SALES_MINUTES_MAX as i64)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|(minute, currency, seats, revenue_minor)| SalesMinute { at: Millis(minute * MINUTE_MS), currency, seats, revenue_minor })
                .collect();
                timeline.reverse();
                let checkins = sqlx::query_as::<_, (String, i64, i64)>(
                    "SELECT gate, hour, scans FROM report_checkins WHERE event_id = $1 ORDER BY hour, gate",
                )
                .bind(&id)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|(gate, hour, scans)| CheckInFigures { gate, hour: Millis(hour * HOUR_MS), scans })
                .collect();
                Ok(SalesReport { seats, orders, revenue, timeline, checkins })
            }
        }

        impl Projection for $store {
            fn name(&self) -> &'static str {
                SALES
            }
            fn apply<'a>(&'a self, msgs: &'a [StreamMessage], now: Millis) -> BoxFuture<'a, Result<usize, StoreError>> {
                Box::pin(self.do_apply(msgs, now))
            }
            fn kafka_offsets(&self) -> BoxFuture<'_, Result<Vec<usher_actors::KafkaPosition>, StoreError>> {
                Box::pin(self.kafka_positions(SALES))
            }
            fn cursor(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
                Box::pin(async move { Ok(self.cursor_of(SALES).await?.unwrap_or(1)) })
            }
            fn generation(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
                Box::pin(async move {
                    let row: Option<(i64,)> = sqlx::query_as("SELECT generation FROM consumers WHERE name = $1")
                        .bind(SALES)
                        .fetch_optional(self.pool())
                        .await
                        .map_err(db_error)?;
                    Ok(row.map_or(0, |r| r.0))
                })
            }
            fn reset(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
                Box::pin(self.do_reset())
            }
        }

        impl Reports for $store {
            fn sales_report(&self, event: EventId) -> BoxFuture<'_, Result<SalesReport, StoreError>> {
                Box::pin(self.do_sales_report(event))
            }
        }
    };
}

reporting!(SqliteStore, sqlx::Sqlite);
reporting!(PgStore, sqlx::Postgres);
