//! The order store: orders (the saga's persisted state), payments, tickets,
//! scans and the email queue, for SQLite and PostgreSQL with one macro body
//! like `sql.rs`.

use crate::db_error::db_error;
use sqlx::Row;

use usher_actors::{
    BoxFuture, CommitKind, Created, Epoch, MailState, OrderCreated, OrderFilter, OrderStore, OrderWrite, QueuedMail, ScanRecord,
    StoreError, StoredOrder, TicketRecord, TicketStatus,
};
use usher_engine::{Currency, EventId, MailKind, Millis, Money, Order, OrderId, OrderStatus, PaymentId, SeatIdx, TicketId};

use crate::commit::Commit;
use crate::outbox::{encode_order_created, encode_order_event};
use crate::sql::{PgStore, SqliteStore};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn order_from_json(state: &str, version: i64) -> Result<StoredOrder, StoreError> {
    let order: Order = serde_json::from_str(state).map_err(|e| corrupt(format!("stored order: {e}")))?;
    order.check_invariants().map_err(|e| corrupt(format!("stored order {}: {e}", order.id)))?;
    Ok(StoredOrder { order, version })
}

struct TicketRow {
    id: String,
    order_id: String,
    event_id: String,
    seat_idx: i64,
    seat_label: String,
    price_minor: i64,
    currency: String,
    code: String,
    status: String,
    issued_at: i64,
}

impl TicketRow {
    fn into_record(self) -> Result<TicketRecord, StoreError> {
        Ok(TicketRecord {
            id: TicketId::parse(&self.id).map_err(corrupt)?,
            order_id: OrderId::parse(&self.order_id).map_err(corrupt)?,
            event_id: EventId::parse(&self.event_id).map_err(corrupt)?,
            seat: SeatIdx(u32::try_from(self.seat_idx).map_err(corrupt)?),
            seat_label: self.seat_label,
            price: Money { minor: self.price_minor, currency: Currency::from_stored(&self.currency).map_err(corrupt)? },
            code: self.code,
            status: TicketStatus::parse(&self.status).ok_or_else(|| corrupt(format!("ticket status {:?}", self.status)))?,
            issued_at: Millis(self.issued_at),
        })
    }
}

const TICKET_COLUMNS: &str = "id, order_id, event_id, seat_idx, seat_label, price_minor, currency, code, status, issued_at";

/// Claims due email: moves each row's next attempt past the claim window
/// (`MAIL_CLAIM_MS`), so no other node's postman takes it meanwhile; the
/// postman then records the outcome. PostgreSQL skips rows another node is
/// claiming this instant (`FOR UPDATE SKIP LOCKED`); SQLite is one node's.
const DUE_MAIL_PG: &str = "UPDATE notifications SET next_attempt_at = $2 WHERE (order_id, kind) IN (\
     SELECT order_id, kind FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1 \
     ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
     RETURNING order_id, kind, recipient, attempts";
const DUE_MAIL_SQLITE: &str = "UPDATE notifications SET next_attempt_at = $2 WHERE (order_id, kind) IN (\
     SELECT order_id, kind FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1 \
     ORDER BY next_attempt_at LIMIT $3) \
     RETURNING order_id, kind, recipient, attempts";

macro_rules! order_store {
    ($store:ty, $db:ty, $due_mail:expr) => {
        impl $store {
            fn ticket_from_row(r: &<$db as sqlx::Database>::Row) -> Result<TicketRecord, StoreError> {
                TicketRow {
                    id: r.get(0),
                    order_id: r.get(1),
                    event_id: r.get(2),
                    seat_idx: r.get(3),
                    seat_label: r.get(4),
                    price_minor: r.get(5),
                    currency: r.get(6),
                    code: r.get(7),
                    status: r.get(8),
                    issued_at: r.get(9),
                }
                .into_record()
            }

            async fn write_payments(tx: &mut sqlx::Transaction<'_, $db>, order: &Order) -> Result<(), StoreError> {
                for p in &order.payments {
                    sqlx::query(
                        "INSERT INTO payments (id, order_id, amount_minor, currency, card_last4, status, provider_ref, reason, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (id) DO UPDATE SET status = excluded.status, provider_ref = excluded.provider_ref, \
                         reason = excluded.reason, updated_at = excluded.updated_at",
                    )
                    .bind(p.id.to_string())
                    .bind(order.id.to_string())
                    .bind(p.amount.minor)
                    .bind(p.amount.currency.as_str())
                    .bind(&p.card_last4)
                    .bind(p.status.as_str())
                    .bind(&p.provider_ref)
                    .bind(&p.reason)
                    .bind(p.created_at.0)
                    .bind(p.updated_at.0)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                }
                Ok(())
            }

            async fn do_create_order(
                &self,
                key: &str,
                fingerprint: u64,
                order: &Order,
                labels: &[String],
                epoch: Epoch,
            ) -> Result<OrderCreated, StoreError> {
                let mut c = Commit::begin(self.pool(), &self.meter, CommitKind::OrderCreate).await?;
                c.fence_share(order.event_id, epoch).await?;
                match Self::claim_command(c.tx(), key, fingerprint, &order.id.to_string(), order.created_at).await? {
                    Created::New(_) => {}
                    Created::Replayed(id) => {
                        c.abandon();
                        return Ok(OrderCreated::Replayed(OrderId::parse(&id).map_err(corrupt)?));
                    }
                    Created::KeyReused => {
                        c.abandon();
                        return Ok(OrderCreated::KeyReused);
                    }
                }
                let state = serde_json::to_string(order).map_err(corrupt)?;
                sqlx::query(
                    "INSERT INTO orders (id, event_id, customer_id, status, step, state, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)",
                )
                .bind(order.id.to_string())
                .bind(order.event_id.to_string())
                .bind(order.customer.as_str())
                .bind(order.status.as_str())
                .bind(order.step.as_str())
                .bind(&state)
                .bind(order.created_at.0)
                .bind(order.updated_at.0)
                .execute(&mut **c.tx())
                .await
                .map_err(db_error)?;
                for h in &order.holds {
                    let inserted = sqlx::query("INSERT INTO order_holds (hold_id, order_id) VALUES ($1, $2) ON CONFLICT (hold_id) DO NOTHING")
                        .bind(h.to_string())
                        .bind(order.id.to_string())
                        .execute(&mut **c.tx())
                        .await
                        .map_err(db_error)?
                        .rows_affected();
                    if inserted == 0 {
                        let other: String = sqlx::query("SELECT order_id FROM order_holds WHERE hold_id = $1")
                            .bind(h.to_string())
                            .fetch_one(&mut **c.tx())
                            .await
                            .map_err(db_error)?
                            .get(0);
                        // Rolling back takes back the key and the order.
                        c.abandon();
                        return Ok(OrderCreated::HoldInOrder { hold_id: *h, order_id: OrderId::parse(&other).map_err(corrupt)? });
                    }
                }
                c.append_outbox([encode_order_created(order, labels, order.created_at)], order.created_at);
                c.finish().await?;
                Ok(OrderCreated::New)
            }

            /// Many sagas' transitions in one transaction (group commit).
            /// Each write has its own savepoint, so a version conflict or a
            /// stale epoch fails that write alone; a failed commit fails them all.
            async fn do_save_orders(&self, ws: &[OrderWrite<'_>]) -> Vec<Result<(), StoreError>> {
                let all = |e: StoreError| ws.iter().map(|_| Err(e.clone())).collect();
                let mut c = match Commit::begin(self.pool(), &self.meter, CommitKind::OrderBatch).await {
                    Ok(c) => c,
                    Err(e) => return all(e),
                };
                // Every event's epoch locked once, before any savepoint.
                if let Err(e) = c.lock_epochs(ws.iter().map(|w| w.order.event_id)).await {
                    return all(e);
                }
                let mut out = Vec::with_capacity(ws.len());
                for w in ws {
                    if let Err(e) = sqlx::query("SAVEPOINT order_write").execute(&mut **c.tx()).await {
                        return all(db_error(e));
                    }
                    let r = match c.check_epoch(w.order.event_id, w.epoch) {
                        Ok(()) => Self::write_order(&mut c, w).await,
                        Err(e) => Err(e),
                    };
                    let end = if r.is_ok() { "RELEASE SAVEPOINT order_write" } else { "ROLLBACK TO SAVEPOINT order_write" };
                    if let Err(e) = sqlx::query(end).execute(&mut **c.tx()).await {
                        return all(db_error(e));
                    }
                    out.push(r);
                }
                match c.finish().await {
                    Ok(()) => out,
                    Err(e) => all(e),
                }
            }

            async fn write_order(c: &mut Commit<'_, $db>, w: &OrderWrite<'_>) -> Result<(), StoreError> {
                let order = w.order;
                let tx = c.tx();
                let state = serde_json::to_string(order).map_err(corrupt)?;
                let updated = sqlx::query(
                    "UPDATE orders SET status = $1, step = $2, state = $3, version = version + 1, updated_at = $4 WHERE id = $5 AND version = $6",
                )
                .bind(order.status.as_str())
                .bind(order.step.as_str())
                .bind(&state)
                .bind(order.updated_at.0)
                .bind(order.id.to_string())
                .bind(w.version)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?
                .rows_affected();
                if updated != 1 {
                    return Err(StoreError::Conflict(format!("order {} moved past version {}", order.id, w.version)));
                }
                Self::write_payments(tx, order).await?;
                for t in w.new_tickets {
                    // A retried step names the same ticket ids: nothing new.
                    sqlx::query(
                        "INSERT INTO tickets (id, order_id, event_id, seat_idx, seat_label, price_minor, currency, code, status, issued_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(t.id.to_string())
                    .bind(t.order_id.to_string())
                    .bind(t.event_id.to_string())
                    .bind(t.seat.0 as i64)
                    .bind(&t.seat_label)
                    .bind(t.price.minor)
                    .bind(t.price.currency.as_str())
                    .bind(&t.code)
                    .bind(t.status.as_str())
                    .bind(t.issued_at.0)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                }
                if order.status == OrderStatus::Refunded {
                    sqlx::query("UPDATE tickets SET status = 'refunded' WHERE order_id = $1 AND status = 'valid'")
                        .bind(order.id.to_string())
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                }
                if let Some(kind) = w.transition.mail {
                    sqlx::query(
                        "INSERT INTO notifications (order_id, kind, recipient, status, attempts, next_attempt_at, created_at) \
                         VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT (order_id, kind) DO NOTHING",
                    )
                    .bind(order.id.to_string())
                    .bind(kind.as_str())
                    .bind(&order.email)
                    .bind(w.now.0)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                }
                let trace = w.trace.map(str::to_owned);
                let rows: Vec<_> = w
                    .transition
                    .events
                    .iter()
                    .flat_map(|e| encode_order_event(order, w.seat_labels, w.now, e))
                    .map(|r| crate::outbox::OutboxRow { traceparent: trace.clone(), ..r })
                    .collect();
                c.append_outbox(rows, w.now);
                Ok(())
            }

            async fn do_get_order(&self, id: OrderId) -> Result<Option<StoredOrder>, StoreError> {
                let row = sqlx::query("SELECT state, version FROM orders WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error)?;
                row.map(|r| order_from_json(r.get(0), r.get(1))).transpose()
            }

            async fn do_list_orders(&self, f: OrderFilter) -> Result<Vec<Order>, StoreError> {
                let (column, value) = match (&f.customer, &f.event_id) {
                    (Some(c), _) => ("customer_id", c.as_str().to_owned()),
                    (None, Some(e)) => ("event_id", e.to_string()),
                    (None, None) => return Err(StoreError::NotFound("list orders needs a customer or an event".into())),
                };
                let (before_at, before_id) = f.before.map_or((i64::MAX, String::new()), |(t, id)| (t.0, id.to_string()));
                let sql = format!(
                    "SELECT state, version FROM orders WHERE {column} = $1 AND (created_at < $2 OR (created_at = $2 AND ($3 = '' OR id < $3))) \
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(value)
                    .bind(before_at)
                    .bind(before_id)
                    .bind(i64::from(f.limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                rows.iter().map(|r| order_from_json(r.get(0), r.get(1)).map(|s| s.order)).collect()
            }

            async fn do_live_orders(&self, event: Option<EventId>) -> Result<Vec<StoredOrder>, StoreError> {
                let rows = match event {
                    None => sqlx::query("SELECT state, version FROM orders WHERE step <> 'done' ORDER BY created_at"),
                    Some(e) => sqlx::query("SELECT state, version FROM orders WHERE event_id = $1 AND step <> 'done' ORDER BY created_at")
                        .bind(e.to_string()),
                }
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                rows.iter().map(|r| order_from_json(r.get(0), r.get(1))).collect()
            }

            async fn do_open_orders_of_event(&self, event_id: EventId) -> Result<Vec<OrderId>, StoreError> {
                let rows = sqlx::query("SELECT id FROM orders WHERE event_id = $1 AND status IN ('pending_payment', 'paid', 'fulfilled')")
                    .bind(event_id.to_string())
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                rows.iter().map(|r| OrderId::parse(r.get(0)).map_err(corrupt)).collect()
            }

            async fn do_find_payment(&self, id: PaymentId) -> Result<Option<OrderId>, StoreError> {
                let row = sqlx::query("SELECT order_id FROM payments WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error)?;
                row.map(|r| OrderId::parse(r.get(0)).map_err(corrupt)).transpose()
            }

            async fn do_claim_command(&self, key: &str, fingerprint: u64, resource: &str, now: Millis) -> Result<Created<String>, StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                let out = Self::claim_command(&mut tx, key, fingerprint, resource, now).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(out)
            }

            async fn do_tickets_of_order(&self, order: OrderId) -> Result<Vec<TicketRecord>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE order_id = $1 ORDER BY seat_idx"))
                    .bind(order.to_string())
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                rows.iter().map(Self::ticket_from_row).collect()
            }

            async fn do_get_ticket(&self, id: TicketId) -> Result<Option<TicketRecord>, StoreError> {
                let row = sqlx::query(&format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error)?;
                row.as_ref().map(Self::ticket_from_row).transpose()
            }

            /// The first scan of a ticket inserts its admission and its
            /// ticket-checked-in message in one transaction; a later scan
            /// changes nothing and reads the first back.
            async fn do_record_scan(&self, ticket: TicketId, gate: &str, key: &str, now: Millis) -> Result<Option<ScanRecord>, StoreError> {
                let mut c = Commit::begin(self.pool(), &self.meter, CommitKind::Scan).await?;
                let inserted = sqlx::query(
                    "INSERT INTO scans (ticket_id, gate, idempotency_key, scanned_at) VALUES ($1, $2, $3, $4) ON CONFLICT (ticket_id) DO NOTHING",
                )
                .bind(ticket.to_string())
                .bind(gate)
                .bind(key)
                .bind(now.0)
                .execute(&mut **c.tx())
                .await
                .map_err(db_error)?
                .rows_affected();
                if inserted == 1 {
                    let row = sqlx::query(&format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1"))
                        .bind(ticket.to_string())
                        .fetch_one(&mut **c.tx())
                        .await
                        .map_err(db_error)?;
                    let t = Self::ticket_from_row(&row)?;
                    c.append_outbox([crate::outbox::encode_checked_in(&t, gate, now)], now);
                    c.finish().await?;
                    return Ok(None);
                }
                c.abandon();
                let r = sqlx::query("SELECT gate, idempotency_key, scanned_at FROM scans WHERE ticket_id = $1")
                    .bind(ticket.to_string())
                    .fetch_one(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(Some(ScanRecord { gate: r.get(0), key: r.get(1), at: Millis(r.get(2)) }))
            }

            async fn do_due_mail(&self, now: Millis, limit: u32) -> Result<Vec<QueuedMail>, StoreError> {
                let rows = sqlx::query($due_mail)
                .bind(now.0)
                .bind(now.plus_ms(usher_engine::limits::MAIL_CLAIM_MS).0)
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|r| {
                        let kind: String = r.get(1);
                        let attempts: i64 = r.get(3);
                        Ok(QueuedMail {
                            order_id: OrderId::parse(r.get(0)).map_err(corrupt)?,
                            kind: MailKind::parse(&kind).ok_or_else(|| corrupt(format!("mail kind {kind:?}")))?,
                            recipient: r.get(2),
                            attempts: attempts as u32,
                        })
                    })
                    .collect()
            }

            async fn do_mail_update(&self, order: OrderId, kind: MailKind, sql: &str, a: i64, b: Option<&str>) -> Result<(), StoreError> {
                sqlx::query(sql)
                    .bind(a)
                    .bind(b)
                    .bind(order.to_string())
                    .bind(kind.as_str())
                    .execute(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(())
            }

            async fn do_mail_state(&self, order: OrderId, kind: MailKind) -> Result<Option<MailState>, StoreError> {
                let row = sqlx::query("SELECT status FROM notifications WHERE order_id = $1 AND kind = $2")
                    .bind(order.to_string())
                    .bind(kind.as_str())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(row.map(|r| match r.get::<String, _>(0).as_str() {
                    "sent" => MailState::Sent,
                    "failed" => MailState::Failed,
                    _ => MailState::Pending,
                }))
            }
        }

        impl OrderStore for $store {
            fn create_order<'a>(
                &'a self,
                key: &'a str,
                fingerprint: u64,
                order: &'a Order,
                seat_labels: &'a [String],
                epoch: Epoch,
            ) -> BoxFuture<'a, Result<OrderCreated, StoreError>> {
                Box::pin(self.do_create_order(key, fingerprint, order, seat_labels, epoch))
            }
            fn save_orders<'a>(&'a self, ws: &'a [OrderWrite<'a>]) -> BoxFuture<'a, Vec<Result<(), StoreError>>> {
                Box::pin(self.do_save_orders(ws))
            }
            fn get_order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<StoredOrder>, StoreError>> {
                Box::pin(self.do_get_order(id))
            }
            fn list_orders(&self, filter: OrderFilter) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
                Box::pin(self.do_list_orders(filter))
            }
            fn live_orders(&self, event: Option<EventId>) -> BoxFuture<'_, Result<Vec<StoredOrder>, StoreError>> {
                Box::pin(self.do_live_orders(event))
            }
            fn open_orders_of_event(&self, event_id: EventId) -> BoxFuture<'_, Result<Vec<OrderId>, StoreError>> {
                Box::pin(self.do_open_orders_of_event(event_id))
            }
            fn find_payment(&self, id: PaymentId) -> BoxFuture<'_, Result<Option<OrderId>, StoreError>> {
                Box::pin(self.do_find_payment(id))
            }
            fn claim_command<'a>(
                &'a self,
                key: &'a str,
                fingerprint: u64,
                resource: &'a str,
                now: Millis,
            ) -> BoxFuture<'a, Result<Created<String>, StoreError>> {
                Box::pin(self.do_claim_command(key, fingerprint, resource, now))
            }
            fn lookup_command<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(u64, String)>, StoreError>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT fingerprint, resource_id FROM command_log WHERE key = $1")
                        .bind(key)
                        .fetch_optional(self.pool())
                        .await
                        .map_err(db_error)?;
                    Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get::<String, _>(1))))
                })
            }
            fn tickets_of_order(&self, order: OrderId) -> BoxFuture<'_, Result<Vec<TicketRecord>, StoreError>> {
                Box::pin(self.do_tickets_of_order(order))
            }
            fn get_ticket(&self, id: TicketId) -> BoxFuture<'_, Result<Option<TicketRecord>, StoreError>> {
                Box::pin(self.do_get_ticket(id))
            }
            fn record_scan<'a>(
                &'a self,
                ticket: TicketId,
                gate: &'a str,
                key: &'a str,
                now: Millis,
            ) -> BoxFuture<'a, Result<Option<ScanRecord>, StoreError>> {
                Box::pin(self.do_record_scan(ticket, gate, key, now))
            }
            fn due_mail(&self, now: Millis, limit: u32) -> BoxFuture<'_, Result<Vec<QueuedMail>, StoreError>> {
                Box::pin(self.do_due_mail(now, limit))
            }
            fn mail_sent(&self, order: OrderId, kind: MailKind, now: Millis) -> BoxFuture<'_, Result<(), StoreError>> {
                Box::pin(self.do_mail_update(
                    order,
                    kind,
                    "UPDATE notifications SET status = 'sent', sent_at = $1, last_error = $2, attempts = attempts + 1 WHERE order_id = $3 AND kind = $4",
                    now.0,
                    None,
                ))
            }
            fn mail_retry<'a>(&'a self, order: OrderId, kind: MailKind, next_at: Millis, error: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_mail_update(
                    order,
                    kind,
                    "UPDATE notifications SET next_attempt_at = $1, last_error = $2, attempts = attempts + 1 WHERE order_id = $3 AND kind = $4",
                    next_at.0,
                    Some(error),
                ))
            }
            fn mail_failed<'a>(&'a self, order: OrderId, kind: MailKind, error: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_mail_update(
                    order,
                    kind,
                    "UPDATE notifications SET status = 'failed', attempts = attempts + 1, next_attempt_at = $1, last_error = $2 \
                     WHERE order_id = $3 AND kind = $4",
                    0,
                    Some(error),
                ))
            }
            fn mail_state(&self, order: OrderId, kind: MailKind) -> BoxFuture<'_, Result<Option<MailState>, StoreError>> {
                Box::pin(self.do_mail_state(order, kind))
            }
            fn mail_backlog(&self) -> BoxFuture<'_, Result<usher_actors::Backlog, StoreError>> {
                Box::pin(async move {
                    // The partial index `notifications_due` covers exactly these rows.
                    let r = sqlx::query("SELECT COUNT(*), MIN(created_at) FROM notifications WHERE status = 'pending'")
                        .fetch_one(self.pool())
                        .await
                        .map_err(db_error)?;
                    let rows: i64 = r.get(0);
                    let oldest: Option<i64> = r.get(1);
                    Ok(usher_actors::Backlog { rows: rows as u64, oldest_at: oldest.map(Millis) })
                })
            }
        }
    };
}

order_store!(SqliteStore, sqlx::Sqlite, DUE_MAIL_SQLITE);
order_store!(PgStore, sqlx::Postgres, DUE_MAIL_PG);
