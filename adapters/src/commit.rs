//! The one commit path for every write that belongs to an event: a seat
//! batch (`Store::commit`), an order's creation and the order writer's group
//! commits. Each opens a [`Commit`], fences on the event's epoch, writes its
//! own rows, appends its outbox rows (one [`OutboxRow`] shape, one bulk
//! statement per dialect) and finishes; the [`CommitMeter`] counts every
//! outcome and its time, in the one place the metrics exposition reads.
//!
//! Two fences, because two kinds of writer meet at an event's row:
//! - the owner's seat batch *updates* the row (`updated_at`) where
//!   `owner_epoch` is its own, which also locks the row until commit;
//! - an order write *reads* `owner_epoch` under `FOR KEY SHARE` on
//!   PostgreSQL, a lock that does not wait for the owner's seat batches
//!   (they take `FOR NO KEY UPDATE`) but does hold off a new owner, whose
//!   [`fence_event`](usher_actors::Store::fence_event) takes `FOR UPDATE`.
//!   SQLite has one writer at a time: there the order write takes the write
//!   lock first (see `fences!`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use usher_actors::{CommitKind, CommitStats, Epoch, EpochClaim, StoreError};
use usher_engine::{EventId, Millis};

use crate::db_error::db_error;
use crate::outbox::{OutboxRow, SCHEMA_VERSION, message_type};

/// The outbox's columns, in the order every writer binds them (a macro so
/// that `concat!` builds each statement at compile time).
macro_rules! outbox_columns {
    () => {
        "message_id, topic, aggregate_id, payload, created_at, event_seq, message_type, schema_version, traceparent"
    };
}

/// Rows per multi-row INSERT on SQLite: well under its bind-parameter limit
/// (32,766 since 3.32) for the widest table (9 columns).
pub(crate) const ROWS_PER_STATEMENT_MAX: usize = 500;

#[derive(Default)]
struct KindMeter {
    commits: AtomicU64,
    fenced: AtomicU64,
    failed: AtomicU64,
    outbox_rows: AtomicU64,
    micros_total: AtomicU64,
    micros_max: AtomicU64,
}

/// Counters of the commit path, per kind of commit. Lock-free: every commit
/// adds to them once, when it ends.
#[derive(Default)]
pub struct CommitMeter {
    kinds: [KindMeter; CommitKind::ALL.len()],
}

impl CommitMeter {
    fn of(&self, kind: CommitKind) -> &KindMeter {
        &self.kinds[kind as usize]
    }

    /// Every kind's counters (zero for a kind that has not run), for the
    /// log at shutdown and the metrics.
    pub fn stats(&self) -> Vec<CommitStats> {
        CommitKind::ALL
            .iter()
            .map(|&kind| {
                let m = self.of(kind);
                CommitStats {
                    kind,
                    commits: m.commits.load(Relaxed),
                    fenced: m.fenced.load(Relaxed),
                    failed: m.failed.load(Relaxed),
                    outbox_rows: m.outbox_rows.load(Relaxed),
                    micros_total: m.micros_total.load(Relaxed),
                    micros_max: m.micros_max.load(Relaxed),
                }
            })
            .collect()
    }
}

/// How a commit ended, as the meter counts it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Fenced,
    /// Dropped without committing: an error on the way.
    Failed,
    /// Rolled back on purpose: nothing to write (a replayed key).
    Abandoned,
}

/// One transaction on the commit path. Dropping it without [`finish`]
/// rolls the transaction back and counts a failure (or a fence, or nothing
/// after [`abandon`](Commit::abandon)).
///
/// [`finish`]: Commit::finish
pub(crate) struct Commit<'m, DB: sqlx::Database> {
    /// Always `Some` until `finish` takes it.
    tx: Option<sqlx::Transaction<'static, DB>>,
    meter: &'m CommitMeter,
    kind: CommitKind,
    started: Instant,
    /// Rows appended so far, with the time each happened; written with
    /// their sequences by `finish`.
    outbox: Vec<(OutboxRow, Millis)>,
    outcome: Outcome,
    /// Epochs read by `fence_share` in this transaction, per event.
    seen: HashMap<EventId, Epoch>,
}

impl<'m, DB: sqlx::Database> Commit<'m, DB> {
    pub async fn begin(pool: &sqlx::Pool<DB>, meter: &'m CommitMeter, kind: CommitKind) -> Result<Commit<'m, DB>, StoreError> {
        let started = Instant::now();
        let tx = match pool.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                meter.of(kind).failed.fetch_add(1, Relaxed);
                return Err(db_error(e));
            }
        };
        Ok(Commit { tx: Some(tx), meter, kind, started, outbox: Vec::new(), outcome: Outcome::Failed, seen: HashMap::new() })
    }

    /// The open transaction, for the caller's own rows.
    pub fn tx(&mut self) -> &mut sqlx::Transaction<'static, DB> {
        self.tx.as_mut().expect("a commit's transaction is there until finish")
    }

    /// Adds domain events to this commit's outbox rows. They are written
    /// by `finish`, after every other row, each event's rows numbered from
    /// its counter: the last statements before COMMIT, so the event row's
    /// lock that numbering takes is held for as short as can be, and a
    /// write rolled back to its savepoint before this never took numbers.
    pub fn append_outbox(&mut self, rows: impl IntoIterator<Item = OutboxRow>, now: Millis) {
        self.outbox.extend(rows.into_iter().map(|r| (r, now)));
    }

    /// Commits and counts it.
    async fn commit_tx(&mut self) -> Result<(), StoreError> {
        let tx = self.tx.take().expect("a commit's transaction is there until finish");
        tx.commit().await.map_err(db_error)?;
        self.outcome = Outcome::Committed;
        Ok(())
    }

    /// Rolls back on purpose (the request was answered without writing):
    /// counted neither as a commit nor as a failure.
    pub fn abandon(mut self) {
        self.outcome = Outcome::Abandoned;
    }

    fn fenced(&self, event_id: EventId, epoch: Epoch) -> StoreError {
        self.meter.of(self.kind).fenced.fetch_add(1, Relaxed);
        StoreError::Fenced { event_id, epoch }
    }
}

impl<DB: sqlx::Database> Drop for Commit<'_, DB> {
    fn drop(&mut self) {
        let m = self.meter.of(self.kind);
        match self.outcome {
            Outcome::Committed => {
                let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                m.commits.fetch_add(1, Relaxed);
                m.outbox_rows.fetch_add(self.outbox.len() as u64, Relaxed);
                m.micros_total.fetch_add(us, Relaxed);
                m.micros_max.fetch_max(us, Relaxed);
            }
            // Counted where the fence refused; nothing went wrong.
            Outcome::Fenced | Outcome::Abandoned => {}
            Outcome::Failed => {
                m.failed.fetch_add(1, Relaxed);
            }
        }
    }
}

/// What both dialects share. Each reads the event's epoch with a lock of
/// its own kind, as the transaction's first statement:
/// - `$share`: an order write's read. PostgreSQL: `FOR KEY SHARE`, which
///   the owner's seat batches (`FOR NO KEY UPDATE`) never wait for, but a
///   new owner's `FOR UPDATE` does. SQLite: a write that changes nothing,
///   so the transaction takes the database's write lock at once and waits
///   (busy timeout) for it; a read first would have to upgrade to a write
///   later, and SQLite refuses that upgrade at once with SQLITE_BUSY when
///   another connection wrote meanwhile.
/// - `$exclusive`: a new owner's read (`fence_event`), `FOR UPDATE` on
///   PostgreSQL, the same write-lock-first form on SQLite.
macro_rules! fences {
    ($db:ty, $share:literal, $exclusive:literal) => {
        impl<'m> Commit<'m, $db> {
            /// Numbers and writes the outbox rows, then commits and counts it.
            ///
            /// Each event's rows take the next numbers of `events.outbox_seq`
            /// (`UPDATE ... RETURNING`, events in sorted order so that two
            /// commits never wait on each other in a cycle). That update
            /// locks the event's row until COMMIT, so commits of one event
            /// that write rows are serialized here and become visible in
            /// the order of their numbers: a reader never sees number n+1
            /// before n (the trap of a sequence taken before commit).
            pub async fn finish(mut self) -> Result<(), StoreError> {
                if !self.outbox.is_empty() {
                    let mut rows = std::mem::take(&mut self.outbox);
                    // Stable: one event's rows keep the order they were appended in.
                    rows.sort_by(|a, b| a.0.aggregate_id.cmp(&b.0.aggregate_id));
                    // Each row's number, in the rows' (sorted) order.
                    let mut numbered: Vec<i64> = Vec::with_capacity(rows.len());
                    let mut rest = rows.as_slice();
                    while let Some((first_row, _)) = rest.first() {
                        let event = first_row.aggregate_id.clone();
                        let n = rest.iter().take_while(|r| r.0.aggregate_id == event).count();
                        let last: Option<(i64,)> =
                            sqlx::query_as("UPDATE events SET outbox_seq = outbox_seq + $1 WHERE id = $2 RETURNING outbox_seq")
                                .bind(n as i64)
                                .bind(&event)
                                .fetch_optional(&mut **self.tx())
                                .await
                                .map_err(db_error)?;
                        let last = last.ok_or_else(|| StoreError::NotFound(format!("event {event}")))?.0;
                        numbered.extend(last - n as i64 + 1..=last);
                        rest = &rest[n..];
                    }
                    let rows: Vec<(OutboxRow, i64, Millis)> =
                        rows.into_iter().zip(numbered).map(|((row, at), seq)| (row, seq, at)).collect();
                    self.write_outbox(&rows).await?;
                    self.outbox = rows.into_iter().map(|(row, _, at)| (row, at)).collect();
                }
                self.commit_tx().await
            }

            /// The owner's fence for a seat batch: touches the event's row
            /// where the epoch is `epoch`, or refuses the whole commit.
            pub async fn fence_own(&mut self, event_id: EventId, epoch: Epoch, now: Millis) -> Result<(), StoreError> {
                let n = sqlx::query("UPDATE events SET updated_at = $1 WHERE id = $2 AND owner_epoch = $3")
                    .bind(now.0)
                    .bind(event_id.to_string())
                    .bind(epoch.0)
                    .execute(&mut **self.tx())
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                if n == 0 {
                    self.outcome = Outcome::Fenced;
                    return Err(self.fenced(event_id, epoch));
                }
                Ok(())
            }

            /// Reads and locks the epochs of `events` for this transaction's
            /// order writes, in sorted order, outside any savepoint (rolling
            /// a savepoint back would release its locks). An event that is
            /// not stored is left out: `check_epoch` refuses its writes.
            pub async fn lock_epochs(&mut self, events: impl IntoIterator<Item = EventId>) -> Result<(), StoreError> {
                let mut ids: Vec<EventId> = events.into_iter().filter(|e| !self.seen.contains_key(e)).collect();
                ids.sort();
                ids.dedup();
                for id in ids {
                    let row: Option<(i64,)> =
                        sqlx::query_as($share).bind(id.to_string()).fetch_optional(&mut **self.tx()).await.map_err(db_error)?;
                    if let Some((e,)) = row {
                        self.seen.insert(id, Epoch(e));
                    }
                }
                Ok(())
            }

            /// An order write's fence, after `lock_epochs`: refuses this
            /// write alone when the event's epoch is not `epoch`.
            pub fn check_epoch(&self, event_id: EventId, epoch: Epoch) -> Result<(), StoreError> {
                match self.seen.get(&event_id) {
                    Some(&current) if current == epoch => Ok(()),
                    Some(_) => Err(self.fenced(event_id, epoch)),
                    None => Err(StoreError::NotFound(format!("event {event_id}"))),
                }
            }

            /// The fence of a transaction that writes for one event only
            /// (an order's creation): locks, checks, and on a stale epoch
            /// refuses the whole commit.
            pub async fn fence_share(&mut self, event_id: EventId, epoch: Epoch) -> Result<(), StoreError> {
                self.lock_epochs([event_id]).await?;
                self.check_epoch(event_id, epoch).inspect_err(|e| {
                    if matches!(e, StoreError::Fenced { .. }) {
                        self.outcome = Outcome::Fenced;
                    }
                })
            }

            /// `Store::fence_event`: moves the event's epoch forward for a
            /// new owner, waiting for order writes that read the old one.
            pub async fn fence_event(pool: &sqlx::Pool<$db>, id: EventId, claim: EpochClaim) -> Result<Epoch, StoreError> {
                let mut tx = pool.begin().await.map_err(db_error)?;
                let eid = id.to_string();
                let row: Option<(i64,)> = sqlx::query_as($exclusive).bind(&eid).fetch_optional(&mut *tx).await.map_err(db_error)?;
                let current = Epoch(row.ok_or_else(|| StoreError::NotFound(format!("event {id}")))?.0);
                let next = match claim {
                    EpochClaim::Next => Epoch(current.0 + 1),
                    EpochClaim::Exactly(e) if e > current => e,
                    EpochClaim::Exactly(e) => return Err(StoreError::Fenced { event_id: id, epoch: e }),
                };
                sqlx::query("UPDATE events SET owner_epoch = $1 WHERE id = $2")
                    .bind(next.0)
                    .bind(&eid)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(next)
            }
        }
    };
}

fences!(
    sqlx::Sqlite,
    "UPDATE events SET owner_epoch = owner_epoch WHERE id = $1 RETURNING owner_epoch",
    "UPDATE events SET owner_epoch = owner_epoch WHERE id = $1 RETURNING owner_epoch"
);
fences!(
    sqlx::Postgres,
    "SELECT owner_epoch FROM events WHERE id = $1 FOR KEY SHARE",
    "SELECT owner_epoch FROM events WHERE id = $1 FOR UPDATE"
);

impl Commit<'_, sqlx::Sqlite> {
    /// Multi-row VALUES: SQLite parses in-process, so the varying statement
    /// text costs little.
    async fn write_outbox(&mut self, rows: &[(OutboxRow, i64, Millis)]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut q: sqlx::QueryBuilder<sqlx::Sqlite> = sqlx::QueryBuilder::new(concat!("INSERT INTO outbox (", outbox_columns!(), ") "));
            q.push_values(chunk, |mut b, (o, seq, at)| {
                b.push_bind(o.message_id.clone())
                    .push_bind(o.topic)
                    .push_bind(o.aggregate_id.clone())
                    .push_bind(o.payload.clone())
                    .push_bind(at.0)
                    .push_bind(*seq)
                    .push_bind(message_type(o.topic).unwrap_or("unknown"))
                    .push_bind(i64::from(SCHEMA_VERSION))
                    .push_bind(o.traceparent.clone());
            });
            q.build().execute(&mut **self.tx()).await.map_err(db_error)?;
        }
        Ok(())
    }
}

impl Commit<'_, sqlx::Postgres> {
    /// One fixed statement, rows passed as arrays (UNNEST): prepared once
    /// per connection, whatever the number of rows.
    async fn write_outbox(&mut self, rows: &[(OutboxRow, i64, Millis)]) -> Result<(), StoreError> {
        let ids: Vec<&str> = rows.iter().map(|(o, ..)| o.message_id.as_str()).collect();
        let topics: Vec<&str> = rows.iter().map(|(o, ..)| o.topic).collect();
        let aggregates: Vec<&str> = rows.iter().map(|(o, ..)| o.aggregate_id.as_str()).collect();
        let payloads: Vec<&[u8]> = rows.iter().map(|(o, ..)| o.payload.as_slice()).collect();
        let at: Vec<i64> = rows.iter().map(|(_, _, t)| t.0).collect();
        let seqs: Vec<i64> = rows.iter().map(|(_, s, _)| *s).collect();
        let types: Vec<&str> = rows.iter().map(|(o, ..)| message_type(o.topic).unwrap_or("unknown")).collect();
        let traces: Vec<Option<&str>> = rows.iter().map(|(o, ..)| o.traceparent.as_deref()).collect();
        sqlx::query(concat!(
            "INSERT INTO outbox (",
            outbox_columns!(),
            ") SELECT u.message_id, u.topic, u.aggregate_id, u.payload, u.created_at, u.event_seq, u.message_type, $1, u.traceparent \
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bytea[], $6::bigint[], $7::bigint[], $8::text[], $9::text[]) \
             AS u(message_id, topic, aggregate_id, payload, created_at, event_seq, message_type, traceparent)"
        ))
        .bind(i64::from(SCHEMA_VERSION))
        .bind(&ids)
        .bind(&topics)
        .bind(&aggregates)
        .bind(&payloads)
        .bind(&at)
        .bind(&seqs)
        .bind(&types)
        .bind(&traces)
        .execute(&mut **self.tx())
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
