//! Group commit for saga writes.

use std::sync::Arc;

use usher_engine::{Millis, Order, Transition, limits};

use crate::ports::{Epoch, OrderStore, OrderWrite, StoreError, TicketRecord};

// ---------------------------------------------------------------------------
// Group commit for saga writes: every saga's transition goes through one
// writer task that drains what is queued into one transaction, as the event
// actors do. A saga is answered only once its write is durable.

/// One saga transition to write, owned so that it can wait in the queue.
pub struct PendingWrite {
    pub order: Order,
    /// The order's event owner's epoch (see `OrderWrite::epoch`).
    pub epoch: Epoch,
    pub version: i64,
    pub transition: Transition,
    pub new_tickets: Vec<TicketRecord>,
    pub seat_labels: Vec<String>,
    pub now: Millis,
    /// The order's trace (see `OrderWrite::trace`).
    pub trace: Option<String>,
}

type WriteRequest = (PendingWrite, tokio::sync::oneshot::Sender<Result<(), StoreError>>);

/// The handle sagas write through. Cheap to clone.
#[derive(Clone)]
pub struct OrderWriter {
    tx: tokio::sync::mpsc::Sender<WriteRequest>,
    stats: Arc<WriterStats>,
}

/// Counters of the saga writer, for the bench and the log.
#[derive(Default)]
pub struct WriterStats {
    pub batches: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    pub largest: std::sync::atomic::AtomicU64,
}

impl OrderWriter {
    /// Starts the writer task on `orders`; it ends when every handle is dropped.
    pub fn start(orders: Arc<dyn OrderStore>) -> OrderWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteRequest>(limits::ORDER_WRITES_QUEUED_MAX);
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        tokio::spawn(async move {
            let mut batch: Vec<WriteRequest> = Vec::with_capacity(limits::ORDER_WRITES_PER_BATCH_MAX);
            while rx.recv_many(&mut batch, limits::ORDER_WRITES_PER_BATCH_MAX).await > 0 {
                let results = {
                    let ws: Vec<OrderWrite<'_>> = batch
                        .iter()
                        .map(|(w, _)| OrderWrite {
                            order: &w.order,
                            epoch: w.epoch,
                            version: w.version,
                            transition: &w.transition,
                            new_tickets: &w.new_tickets,
                            seat_labels: &w.seat_labels,
                            now: w.now,
                            trace: w.trace.as_deref(),
                        })
                        .collect();
                    orders.save_orders(&ws).await
                };
                use std::sync::atomic::Ordering::Relaxed;
                st.batches.fetch_add(1, Relaxed);
                st.writes.fetch_add(batch.len() as u64, Relaxed);
                st.largest.fetch_max(batch.len() as u64, Relaxed);
                let mut results = results.into_iter();
                for (_, reply) in batch.drain(..) {
                    let r = results.next().unwrap_or_else(|| Err(StoreError::Corrupt("the store answered fewer writes than asked".into())));
                    let _ = reply.send(r);
                }
            }
        });
        OrderWriter { tx, stats }
    }

    /// Writes one transition; returns once it is durable (or failed).
    pub async fn write(&self, w: PendingWrite) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send((w, reply)).await.map_err(|_| StoreError::Unavailable("the order writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the order writer has stopped".into()))?
    }

    /// `batches=… writes=… largest=…`
    pub fn summary(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        format!(
            "batches={} writes={} largest={}",
            self.stats.batches.load(Relaxed),
            self.stats.writes.load(Relaxed),
            self.stats.largest.load(Relaxed)
        )
    }
}
