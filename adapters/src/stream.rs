//! The outbox as a stream: the relay's session (read unpublished rows, mark
//! them, append them to the embedded stream, prune) and the embedded
//! stream's reads, for SQLite and PostgreSQL.

use sqlx::{Connection, Executor, Row};
use usher_actors::{Backlog, BoxFuture, RelaySession, StoreError, StreamMessage, StreamStore};
use usher_engine::Millis;

use crate::db_error::db_error;
use crate::sql::{PgStore, SqliteStore};

/// The advisory-lock key of the one relay per PostgreSQL database (the
/// bytes of "usher-rl").
pub const PG_RELAY_LOCK_KEY: i64 = i64::from_be_bytes(*b"usher-rl");

/// The cursor row holding the embedded stream's next offset.
const RELAY_CURSOR: &str = "relay";

const COLUMNS: &str = "seq, message_id, topic, aggregate_id, event_seq, message_type, CAST(schema_version AS BIGINT) AS schema_version, created_at, traceparent, payload, stream_offset";

fn message<R: Row>(r: &R) -> Result<StreamMessage, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    i64: for<'q> sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    String: for<'q> sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'q> sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StreamMessage {
        row: r.try_get("seq")?,
        message_id: r.try_get("message_id")?,
        topic: r.try_get("topic")?,
        key: r.try_get("aggregate_id")?,
        event_seq: r.try_get("event_seq")?,
        message_type: r.try_get("message_type")?,
        schema_version: u32::try_from(r.try_get::<i64, _>("schema_version")?).unwrap_or(0),
        occurred_at: Millis(r.try_get("created_at")?),
        traceparent: r.try_get::<Option<String>, _>("traceparent")?,
        payload: r.try_get("payload")?,
        offset: r.try_get::<Option<i64>, _>("stream_offset")?,
        partition: None,
    })
}

/// The prune statement both dialects share: published before `$1`, read by
/// every embedded consumer (`stream_cursors` other than the relay's), at
/// most `$2` rows.
const PRUNE: &str = "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 \
     AND (stream_offset IS NULL OR stream_offset < COALESCE((SELECT MIN(position) FROM stream_cursors WHERE name <> 'relay'), 9223372036854775807)) \
     ORDER BY seq LIMIT $2)";

const BACKLOG: &str = "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_at IS NULL";

fn backlog_of(count: i64, oldest: Option<i64>) -> Backlog {
    Backlog { rows: u64::try_from(count).unwrap_or(0), oldest_at: oldest.map(Millis) }
}

// ---- SQLite: one process per database (the node lock), so the relay's
// session is the pool itself.

struct SqliteRelay {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    async fn take_relay(&self) -> Result<Option<Box<dyn RelaySession>>, StoreError> {
        Ok(Some(Box::new(SqliteRelay { pool: self.pool().clone() }) as Box<dyn RelaySession>))
    }
}

/// The reads both databases share, and each one's way to take the relay.
macro_rules! stream_store {
    ($store:ty) => {
        impl StreamStore for $store {
            fn relay_session(&self) -> BoxFuture<'_, Result<Option<Box<dyn RelaySession>>, StoreError>> {
                Box::pin(self.take_relay())
            }
            fn backlog(&self) -> BoxFuture<'_, Result<Backlog, StoreError>> {
                Box::pin(async move {
                    let (n, oldest): (i64, Option<i64>) = sqlx::query_as(BACKLOG).fetch_one(self.pool()).await.map_err(db_error)?;
                    Ok(backlog_of(n, oldest))
                })
            }
            fn read_local(&self, offset: i64, limit: usize) -> BoxFuture<'_, Result<Vec<StreamMessage>, StoreError>> {
                Box::pin(async move {
                    let sql = format!("SELECT {COLUMNS} FROM outbox WHERE stream_offset >= $1 ORDER BY stream_offset LIMIT $2");
                    let rows = sqlx::query(&sql).bind(offset).bind(limit as i64).fetch_all(self.pool()).await.map_err(db_error)?;
                    rows.iter().map(message).collect::<Result<_, _>>().map_err(db_error)
                })
            }
            fn stream_end(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
                Box::pin(async move {
                    let row: Option<(i64,)> = sqlx::query_as("SELECT position FROM stream_cursors WHERE name = $1")
                        .bind(RELAY_CURSOR)
                        .fetch_optional(self.pool())
                        .await
                        .map_err(db_error)?;
                    Ok(row.map_or(1, |r| r.0))
                })
            }
        }
    };
}

stream_store!(SqliteStore);
stream_store!(PgStore);

impl RelaySession for SqliteRelay {
    fn unpublished(&mut self, limit: usize) -> BoxFuture<'_, Result<Vec<StreamMessage>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1");
            let rows = sqlx::query(&sql).bind(limit as i64).fetch_all(&self.pool).await.map_err(db_error)?;
            rows.iter().map(message).collect::<Result<_, _>>().map_err(db_error)
        })
    }
    fn mark_published<'a>(&'a mut self, rows: &'a [i64], now: Millis) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for chunk in rows.chunks(crate::commit::ROWS_PER_STATEMENT_MAX) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE outbox SET published_at = ");
                q.push_bind(now.0).push(" WHERE published_at IS NULL AND seq IN (");
                let mut s = q.separated(", ");
                for r in chunk {
                    s.push_bind(*r);
                }
                q.push(")");
                q.build().execute(&self.pool).await.map_err(db_error)?;
            }
            Ok(())
        })
    }
    fn append_local<'a>(&'a mut self, rows: &'a [i64], now: Millis) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(db_error)?;
            // A write first: the transaction takes SQLite's write lock now.
            tx.execute(sqlx::query("INSERT INTO stream_cursors (name, position) VALUES ('relay', 1) ON CONFLICT (name) DO NOTHING"))
                .await
                .map_err(db_error)?;
            let (mut next,): (i64,) = sqlx::query_as("SELECT position FROM stream_cursors WHERE name = $1")
                .bind(RELAY_CURSOR)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            for r in rows {
                let n = sqlx::query("UPDATE outbox SET published_at = $1, stream_offset = $2 WHERE seq = $3 AND published_at IS NULL")
                    .bind(now.0)
                    .bind(next)
                    .bind(*r)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                next += n as i64;
            }
            sqlx::query("UPDATE stream_cursors SET position = $1 WHERE name = $2")
                .bind(next)
                .bind(RELAY_CURSOR)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }
    fn prune(&mut self, before: Millis, limit: usize) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query(PRUNE).bind(before.0).bind(limit as i64).execute(&self.pool).await.map_err(db_error)?.rows_affected())
        })
    }
}

// ---- PostgreSQL: the relay's session is a connection of its own holding
// the relay advisory lock; every relay statement runs on it.

struct PgRelay {
    conn: sqlx::PgConnection,
}

impl PgStore {
    async fn take_relay(&self) -> Result<Option<Box<dyn RelaySession>>, StoreError> {
        let opts = self.pool().connect_options();
        let mut conn = sqlx::PgConnection::connect_with(&opts).await.map_err(db_error)?;
        conn.execute("SET search_path TO bc_catalog, bc_inventory, bc_reporting, public; SET statement_timeout = '30s'")
            .await
            .map_err(db_error)?;
        let (got,): (bool,) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1)").bind(PG_RELAY_LOCK_KEY).fetch_one(&mut conn).await.map_err(db_error)?;
        if !got {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgRelay { conn }) as Box<dyn RelaySession>))
    }
}

impl RelaySession for PgRelay {
    fn unpublished(&mut self, limit: usize) -> BoxFuture<'_, Result<Vec<StreamMessage>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1");
            let rows = sqlx::query(&sql).bind(limit as i64).fetch_all(&mut self.conn).await.map_err(db_error)?;
            rows.iter().map(message).collect::<Result<_, _>>().map_err(db_error)
        })
    }
    fn mark_published<'a>(&'a mut self, rows: &'a [i64], now: Millis) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("UPDATE outbox SET published_at = $1 WHERE seq = ANY($2) AND published_at IS NULL")
                .bind(now.0)
                .bind(rows)
                .execute(&mut self.conn)
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }
    fn append_local<'a>(&'a mut self, rows: &'a [i64], now: Millis) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.conn.begin().await.map_err(db_error)?;
            sqlx::query("INSERT INTO stream_cursors (name, position) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING")
                .bind(RELAY_CURSOR)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let (next,): (i64,) = sqlx::query_as("SELECT position FROM stream_cursors WHERE name = $1 FOR UPDATE")
                .bind(RELAY_CURSOR)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            // Offsets in the order given; rows published meanwhile (none,
            // with one relay) are left as they are.
            let (end,): (i64,) = sqlx::query_as(
                "WITH todo AS (SELECT u.seq, u.ord FROM UNNEST($2::bigint[]) WITH ORDINALITY AS u(seq, ord) \
                   JOIN outbox o ON o.seq = u.seq WHERE o.published_at IS NULL), \
                 numbered AS (SELECT seq, $3 + row_number() OVER (ORDER BY ord) - 1 AS off FROM todo), \
                 done AS (UPDATE outbox o SET published_at = $1, stream_offset = n.off FROM numbered n WHERE o.seq = n.seq RETURNING 1) \
                 SELECT $3 + (SELECT COUNT(*) FROM done)",
            )
            .bind(now.0)
            .bind(rows)
            .bind(next)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query("UPDATE stream_cursors SET position = $1 WHERE name = $2")
                .bind(end)
                .bind(RELAY_CURSOR)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }
    fn prune(&mut self, before: Millis, limit: usize) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query(PRUNE).bind(before.0).bind(limit as i64).execute(&mut self.conn).await.map_err(db_error)?.rows_affected())
        })
    }
}

/// The embedded stream as a [`Publisher`](usher_actors::Publisher): the
/// relay "publishes" by giving rows their stream offsets, in its session.
/// The relay calls [`RelaySession::append_local`] for it; `publish` is
/// never called.
pub struct EmbeddedStream;

impl usher_actors::Publisher for EmbeddedStream {
    fn publish<'a>(&'a self, msgs: &'a [StreamMessage]) -> BoxFuture<'a, Vec<bool>> {
        Box::pin(async move { vec![true; msgs.len()] })
    }
    fn is_local(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        "the embedded stream".into()
    }
}
