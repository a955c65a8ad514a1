//! Stream consumers on the embedded stream: each [`Projection`] reads the
//! outbox by `stream_offset` from its cursor, woken by the relay after each
//! round it published (or every `CONSUMER_POLL_MS`). Its cursor moves in
//! the same transaction as its effect, so a crash replays nothing twice; the
//! recorded message ids make a repeat harmless all the same. A slow
//! consumer slows nothing else: the relay and every writer never wait for
//! it (pruning keeps the rows it has not read).
//!
//! The Kafka path runs the same projections from Kafka, reading its topics'
//! partitions by assignment (`adapters::kafka::run_projection`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use usher_engine::limits::{CONSUMER_BATCH_MAX, STORE_RETRY_BACKOFF_MS_MAX, STORE_RETRY_BACKOFF_MS_MIN};

use crate::Clock;
use crate::ports::{Projection, StreamStore};

/// The wait between looks at the embedded stream when the relay does not
/// wake the consumer (ms).
pub const CONSUMER_POLL_MS: u64 = 500;

/// Runs `projection` on the embedded stream until `stopping` turns true.
pub fn run_embedded(
    stream: Arc<dyn StreamStore>,
    projection: Arc<dyn Projection>,
    clock: Clock,
    published: Arc<Notify>,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = STORE_RETRY_BACKOFF_MS_MIN;
        loop {
            if *stopping.borrow() {
                return;
            }
            let step = async {
                let from = projection.cursor().await?;
                let msgs = stream.read_local(from, CONSUMER_BATCH_MAX).await?;
                if msgs.is_empty() {
                    return Ok(false);
                }
                projection.apply(&msgs, clock.now()).await?;
                Ok::<_, crate::ports::StoreError>(msgs.len() == CONSUMER_BATCH_MAX)
            };
            let wait = match step.await {
                // A full batch: more are waiting.
                Ok(true) => {
                    backoff = STORE_RETRY_BACKOFF_MS_MIN;
                    continue;
                }
                Ok(false) => {
                    backoff = STORE_RETRY_BACKOFF_MS_MIN;
                    CONSUMER_POLL_MS
                }
                Err(e) => {
                    warn!(consumer = projection.name(), error = %e, "stream consumer failed; trying again");
                    backoff = (backoff * 2).min(STORE_RETRY_BACKOFF_MS_MAX);
                    backoff
                }
            };
            tokio::select! {
                _ = published.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = stopping.changed() => return,
            }
        }
    })
}
