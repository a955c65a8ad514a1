//! The outbox relay: publishes committed outbox rows to the stream (Kafka,
//! or the embedded stream when no broker is configured) and marks each row
//! published only after its delivery report.
//!
//! One relay per database: every node runs this task, and the one whose
//! [`StreamStore::relay_session`] holds the database's relay lock publishes;
//! the others stand by and take over when that session ends. Ordering:
//! - rows are read in insert order, and within one event that is
//!   `event_seq` order with no gaps (the commit path numbers them under the
//!   event row's lock, see `adapters::commit`), so a late-committing row is
//!   never skipped: the relay reads "not yet published", not "after the
//!   last id";
//! - a batch goes to the producer in that order, keyed by event, so each
//!   event's messages share a partition in order (idempotent producer:
//!   retries neither duplicate nor reorder);
//! - when one of an event's messages is not acknowledged, that event's later
//!   messages of the batch are not marked either: the next round sends them
//!   again after it, with the same message ids (consumers deduplicate).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use usher_engine::Millis;
use usher_engine::limits::{
    OUTBOX_RETENTION_MS_DEFAULT, RELAY_BACKLOG_EVERY_MS, RELAY_BATCH_ROWS_MAX, RELAY_BEHIND_MS_DEFAULT, RELAY_POLL_MS,
    RELAY_PRUNE_EVERY_MS, RELAY_PRUNE_ROWS_MAX, STORE_RETRY_BACKOFF_MS_MAX, STORE_RETRY_BACKOFF_MS_MIN,
};

use crate::Clock;
use crate::ports::{Backlog, Publisher, RelaySession, StreamMessage, StreamStore};

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Published rows older than this are deleted (ms).
    pub retention_ms: u64,
    /// The node reports not ready when the oldest unpublished row is older (ms).
    pub behind_ms: u64,
    /// The wait between looks at an empty outbox (ms).
    pub poll_ms: u64,
    /// Rows per round.
    pub batch_rows: usize,
    /// Fault injection for crash tests only: a pause between the delivery
    /// reports and marking the rows published (ms).
    pub test_mark_delay_ms: u64,
    /// `false` for benchmarks only: nothing is published (the outbox
    /// grows), to weigh the relay's cost.
    pub enabled: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            retention_ms: OUTBOX_RETENTION_MS_DEFAULT,
            behind_ms: RELAY_BEHIND_MS_DEFAULT,
            poll_ms: RELAY_POLL_MS,
            batch_rows: RELAY_BATCH_ROWS_MAX,
            test_mark_delay_ms: 0,
            enabled: true,
        }
    }
}

/// What the relay reports (for `/readyz`, gRPC health and `usher status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// This node holds the relay lock and publishes.
    pub relaying: bool,
    /// Where rows go: `kafka …` or `embedded`.
    pub destination: String,
    /// Unpublished rows and the oldest one's commit time, read every second.
    pub backlog: Backlog,
    /// Age of the oldest unpublished row at the last reading (ms); 0 when
    /// none.
    pub lag_ms: u64,
    /// The lag is over `RelayConfig::behind_ms`.
    pub behind: bool,
    /// Messages this node published and had acknowledged.
    pub published_total: u64,
    /// Messages this node sent that were not acknowledged (sent again later).
    pub failed_total: u64,
    /// The last failure, if the last round failed.
    pub last_error: Option<String>,
}

/// The running relay. Dropping it stops its tasks.
pub struct Relay {
    status: watch::Receiver<RelayStatus>,
    published: Arc<Notify>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    pub fn start(store: Arc<dyn StreamStore>, publisher: Arc<dyn Publisher>, clock: Clock, cfg: RelayConfig) -> Relay {
        let (status_tx, status) = watch::channel(RelayStatus { destination: publisher.describe(), ..RelayStatus::default() });
        let status_tx = Arc::new(status_tx);
        let (stop, stopping) = watch::channel(false);
        let published = Arc::new(Notify::new());
        let mut tasks = Vec::with_capacity(2);
        if cfg.enabled {
            tasks.push(tokio::spawn(relay_loop(
                store.clone(),
                publisher,
                clock.clone(),
                cfg.clone(),
                status_tx.clone(),
                published.clone(),
                stopping.clone(),
            )));
        } else {
            warn!("the outbox relay is off (USHER_RELAY=off): nothing is published");
        }
        tasks.push(tokio::spawn(backlog_loop(store, clock, cfg, status_tx, stopping)));
        Relay { status, published, stop, tasks }
    }

    /// The latest status.
    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// Status changes, for health reporting.
    pub fn subscribe(&self) -> watch::Receiver<RelayStatus> {
        self.status.clone()
    }

    /// Notified after every round that published something: the embedded
    /// stream's consumers wait on it instead of polling hard.
    pub fn published(&self) -> Arc<Notify> {
        self.published.clone()
    }

    /// Ends the current round (its rows are marked or left for the next
    /// relay), then stops.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Sleeps `ms`, or less when stopping; `true` when stopping.
async fn pause(stopping: &mut watch::Receiver<bool>, ms: u64) -> bool {
    if *stopping.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => *stopping.borrow(),
        _ = stopping.changed() => true,
    }
}

async fn relay_loop(
    store: Arc<dyn StreamStore>,
    publisher: Arc<dyn Publisher>,
    clock: Clock,
    cfg: RelayConfig,
    status: Arc<watch::Sender<RelayStatus>>,
    published: Arc<Notify>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut backoff = STORE_RETRY_BACKOFF_MS_MIN;
    loop {
        let session = match store.relay_session().await {
            Ok(Some(s)) => s,
            Ok(None) => {
                status.send_modify(|s| s.relaying = false);
                if pause(&mut stopping, 1_000).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                warn!(error = %e, "cannot take the relay lock");
                if pause(&mut stopping, 1_000).await {
                    return;
                }
                continue;
            }
        };
        info!(to = %publisher.describe(), "this node relays the outbox");
        status.send_modify(|s| s.relaying = true);
        let ended = relay_as_leader(session, publisher.as_ref(), &clock, &cfg, &status, &published, &mut stopping, &mut backoff).await;
        status.send_modify(|s| s.relaying = false);
        if ended {
            return;
        }
        // The session failed (database gone, lock lost): try again later.
        if pause(&mut stopping, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(STORE_RETRY_BACKOFF_MS_MAX);
    }
}

/// Publishes while this node holds the relay session. Returns `true` when
/// asked to stop, `false` when the session failed.
#[allow(clippy::too_many_arguments)]
async fn relay_as_leader(
    mut session: Box<dyn RelaySession>,
    publisher: &dyn Publisher,
    clock: &Clock,
    cfg: &RelayConfig,
    status: &watch::Sender<RelayStatus>,
    published: &Notify,
    stopping: &mut watch::Receiver<bool>,
    backoff: &mut u64,
) -> bool {
    let mut next_prune = clock.now();
    loop {
        if *stopping.borrow() {
            return true;
        }
        let now = clock.now();
        if now >= next_prune {
            next_prune = Millis(now.0 + RELAY_PRUNE_EVERY_MS as i64);
            match session.prune(Millis(now.0 - cfg.retention_ms as i64), RELAY_PRUNE_ROWS_MAX).await {
                Ok(0) => {}
                Ok(n) => info!(rows = n, "pruned published outbox rows"),
                Err(e) => {
                    warn!(error = %e, "relay session failed");
                    return false;
                }
            }
        }
        let rows = match session.unpublished(cfg.batch_rows.clamp(1, RELAY_BATCH_ROWS_MAX)).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "relay session failed");
                return false;
            }
        };
        if rows.is_empty() {
            if pause(stopping, cfg.poll_ms).await {
                return true;
            }
            continue;
        }
        let done = if publisher.is_local() {
            // The embedded stream is the outbox itself: rows take their
            // offsets in this order, in one transaction.
            let ids: Vec<i64> = rows.iter().map(|m| m.row).collect();
            if let Err(e) = session.append_local(&ids, clock.now()).await {
                warn!(error = %e, "relay session failed");
                return false;
            }
            ids
        } else {
            let acked = publisher.publish(&rows).await;
            let done = delivered_in_order(&rows, &acked);
            if cfg.test_mark_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(cfg.test_mark_delay_ms)).await;
            }
            if !done.is_empty()
                && let Err(e) = session.mark_published(&done, clock.now()).await
            {
                // Delivered but not marked: the next relay sends them
                // again with the same ids.
                warn!(error = %e, rows = done.len(), "relay session failed after delivery");
                return false;
            }
            done
        };
        let failed = rows.len() - done.len();
        if !done.is_empty() {
            published.notify_waiters();
        }
        status.send_modify(|s| {
            s.published_total += done.len() as u64;
            s.failed_total += failed as u64;
            metrics::counter!(crate::metrics::names::OUTBOX_PUBLISHED).increment(done.len() as u64);
            metrics::counter!(crate::metrics::names::OUTBOX_PUBLISH_FAILURES).increment(failed as u64);
            s.last_error =
                (failed > 0).then(|| format!("{failed} of {} messages not acknowledged by {}", rows.len(), publisher.describe()));
        });
        if failed > 0 {
            warn!(failed, sent = rows.len(), to = %publisher.describe(), "messages not acknowledged; sending again after a pause");
            if pause(stopping, *backoff).await {
                return true;
            }
            *backoff = (*backoff * 2).min(STORE_RETRY_BACKOFF_MS_MAX);
        } else {
            *backoff = STORE_RETRY_BACKOFF_MS_MIN;
            if rows.len() < cfg.batch_rows && pause(stopping, cfg.poll_ms).await {
                return true;
            }
        }
    }
}

/// The rows that may be marked published: every acknowledged one, except
/// those after an unacknowledged message of the same event (they go again,
/// after it, next round).
pub fn delivered_in_order(rows: &[StreamMessage], acked: &[bool]) -> Vec<i64> {
    let mut broken: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, m) in rows.iter().enumerate() {
        let ok = acked.get(i).copied().unwrap_or(false);
        if ok && !broken.contains(m.key.as_str()) {
            out.push(m.row);
        } else {
            broken.insert(m.key.as_str());
        }
    }
    out
}

async fn backlog_loop(
    store: Arc<dyn StreamStore>,
    clock: Clock,
    cfg: RelayConfig,
    status: Arc<watch::Sender<RelayStatus>>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        match store.backlog().await {
            Ok(b) => {
                let now = clock.now();
                let lag_ms = b.oldest_at.map_or(0, |t| u64::try_from(now.0 - t.0).unwrap_or(0));
                let behind = lag_ms > cfg.behind_ms;
                status.send_if_modified(|s| {
                    let changed = s.backlog != b || s.lag_ms != lag_ms || s.behind != behind;
                    if s.behind != behind {
                        if behind {
                            warn!(lag_ms, rows = b.rows, "the outbox is behind");
                        } else {
                            info!(rows = b.rows, "the outbox caught up");
                        }
                    }
                    s.backlog = b;
                    s.lag_ms = lag_ms;
                    s.behind = behind;
                    changed
                });
            }
            Err(e) => warn!(error = %e, "cannot read the outbox backlog"),
        }
        if pause(&mut stopping, RELAY_BACKLOG_EVERY_MS).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(row: i64, key: &str) -> StreamMessage {
        StreamMessage {
            row,
            message_id: format!("m{row}"),
            topic: "t".into(),
            key: key.into(),
            event_seq: row,
            message_type: "x".into(),
            schema_version: 1,
            occurred_at: Millis(0),
            traceparent: None,
            payload: vec![],
            offset: None,
            partition: None,
        }
    }

    #[test]
    fn an_unacknowledged_message_holds_back_its_events_later_ones_only() {
        let rows = [msg(1, "a"), msg(2, "b"), msg(3, "a"), msg(4, "b"), msg(5, "a")];
        let acked = [true, false, true, true, true];
        assert_eq!(delivered_in_order(&rows, &acked), vec![1, 3, 5]);
        assert_eq!(delivered_in_order(&rows, &[true; 5]), vec![1, 2, 3, 4, 5]);
        assert_eq!(delivered_in_order(&rows, &[]), Vec::<i64>::new());
    }
}
