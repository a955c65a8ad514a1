//! The render slots, handed out fewest pages first.
//!
//! A slot is one PDF typeset at a time on a thread of the slot's own (there
//! are `render_workers` of them). When every slot is busy, waiting renders queue,
//! and a freed slot goes to the waiting render of the fewest pages (the
//! earliest among equals). A render that has a slot keeps it to the end: a
//! large order is never preempted, and a small one never waits behind a
//! queued large one. So a 1-page order waits at most for the first of the
//! running renders to finish, one render slot, however many large orders
//! are queued; a running render is at most `limits::ORDER_SEATS_MAX` pages.
//!
//! With two slots or more, the first is an express slot, for renders of at
//! most `RENDER_EXPRESS_PAGES_MAX` pages: large orders share the others, so
//! a small order never waits for a large render at all (twelve orders of
//! 800 seats once held a 1-seat order's tickets 22 s; bench/README.md,
//! big-orders).
//!
//! The price: a large order waits while smaller ones keep arriving faster
//! than the slots render them. An onsale wave delays large orders' tickets
//! until it passes; they are never refused.
//!
//! A waiter that gives up (its saga stopped) drops its receiver; the slot
//! sent to it, if any, is dropped with the receiver and frees itself.
//!
//! Each slot renders on its own long-lived thread. Typst's memory for an
//! 800-page order peaks near 800 MiB, and the allocator keeps what a thread
//! freed in that thread's arena for reuse rather than returning it: when
//! renders ran on whichever thread of the blocking pool was free, every
//! thread that once rendered a large order kept its peak (twelve such
//! orders left 7.7 GiB resident). With a thread per slot at most
//! `render_workers` arenas ever grow, so resident memory stays flat at
//! about `render_workers` times the largest render's peak.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use crate::metrics::names;
use crate::ports::{OrderDoc, RenderError, TicketRenderer};

type Job = Box<dyn FnOnce() + Send>;

/// Pages a render may have to use the express slot: with two slots or more,
/// the first takes only renders of at most this many pages, so small orders
/// never wait for a large one (an 800-page render takes tens of seconds).
/// An onsale's orders are a few tickets each; box-office group orders are
/// the large ones.
pub const RENDER_EXPRESS_PAGES_MAX: usize = 10;

/// The render slots of a node. Cheap to clone; clones share the slots.
#[derive(Clone)]
pub struct RenderQueue {
    shared: Arc<Mutex<Slots>>,
}

struct Slots {
    /// The threads of the slots free now, by index into `threads`.
    free: Vec<usize>,
    /// One thread per slot; it ends when the queue is dropped.
    threads: Vec<mpsc::Sender<Job>>,
    /// Arrivals so far: ties among equal page counts go to the earliest.
    arrivals: u64,
    waiting: BinaryHeap<Reverse<Waiter>>,
    /// The express slot's thread, if there are two slots or more.
    express: Option<usize>,
}

impl Slots {
    fn may_use(&self, thread: usize, pages: usize) -> bool {
        pages <= RENDER_EXPRESS_PAGES_MAX || self.express != Some(thread)
    }
}

struct Waiter {
    pages: usize,
    arrival: u64,
    slot: oneshot::Sender<RenderSlot>,
}

impl Waiter {
    fn key(&self) -> (usize, u64) {
        (self.pages, self.arrival)
    }
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// One slot, held while a PDF renders; dropping it hands it on.
pub struct RenderSlot {
    queue: Option<RenderQueue>,
    thread: usize,
}

impl RenderQueue {
    /// `slots` renders at once (at least one), each slot with its thread.
    pub fn new(slots: usize) -> RenderQueue {
        let threads = (0..slots.max(1))
            .map(|i| {
                let (jobs, next) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("usher-render-{i}"))
                    .spawn(move || next.into_iter().for_each(|job| job()))
                    .expect("a render thread starts");
                jobs
            })
            .collect::<Vec<_>>();
        let express = (threads.len() >= 2).then_some(0);
        let slots = Slots { free: (0..threads.len()).rev().collect(), threads, arrivals: 0, waiting: BinaryHeap::new(), express };
        RenderQueue { shared: Arc::new(Mutex::new(slots)) }
    }

    /// Renders `doc` in a slot handed out fewest pages first (one page per
    /// ticket), on the slot's thread. The caller's task waits on the
    /// blocking pool, so tokio counts the render as work in flight.
    pub async fn render(&self, renderer: Arc<dyn TicketRenderer>, doc: OrderDoc) -> Result<Vec<u8>, RenderError> {
        // Traced (inside a saga step of a traced order): the wait and the
        // render are a span of it.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(
                "pdf_render",
                tickets = doc.tickets.len(),
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty
            );
            crate::trace::stamp(&span);
            span
        };
        tracing::Instrument::instrument(self.render_in_span(renderer, doc), span).await
    }

    async fn render_in_span(&self, renderer: Arc<dyn TicketRenderer>, doc: OrderDoc) -> Result<Vec<u8>, RenderError> {
        let waited = std::time::Instant::now();
        let slot = self.slot(doc.tickets.len()).await;
        metrics::histogram!(names::PDF_QUEUE_WAIT).record(waited.elapsed().as_secs_f64());
        let order = doc.order_number.clone();
        tokio::task::spawn_blocking(move || {
            slot.run(move || {
                let started = std::time::Instant::now();
                let pdf = renderer.render(&doc);
                metrics::histogram!(names::PDF_RENDER_DURATION).record(started.elapsed().as_secs_f64());
                pdf
            })
        })
        .await
        .map_err(|e| RenderError(format!("order {order}: render worker: {e}")))?
        .unwrap_or_else(|| Err(RenderError(format!("order {order}: the renderer panicked"))))
    }

    /// Waits for a slot to render `pages` pages.
    pub async fn slot(&self, pages: usize) -> RenderSlot {
        let receiver = {
            let mut slots = self.lock();
            // A small render takes the express slot when it is free, which
            // leaves the others to large ones.
            let express = slots.express.and_then(|e| slots.free.iter().position(|&t| t == e)).filter(|_| pages <= RENDER_EXPRESS_PAGES_MAX);
            let free = express.or_else(|| slots.free.iter().rposition(|&t| slots.may_use(t, pages)));
            if let Some(at) = free {
                let thread = slots.free.swap_remove(at);
                return RenderSlot { queue: Some(self.clone()), thread };
            }
            let (slot, receiver) = oneshot::channel();
            slots.arrivals += 1;
            let arrival = slots.arrivals;
            slots.waiting.push(Reverse(Waiter { pages, arrival, slot }));
            receiver
        };
        // The sender is dropped only after a send: the queue outlives every waiter.
        receiver.await.expect("a queued render is always handed a slot")
    }

    /// Renders waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Slot `thread` came back: to the waiter of the fewest pages still
    /// waiting (if it may use the slot: the express slot takes no large
    /// render), else to the free ones.
    fn hand_on(&self, thread: usize) {
        let mut slots = self.lock();
        while let Some(Reverse(first)) = slots.waiting.peek() {
            if !slots.may_use(thread, first.pages) {
                break;
            }
            let Some(Reverse(waiter)) = slots.waiting.pop() else { break };
            match waiter.slot.send(RenderSlot { queue: Some(self.clone()), thread }) {
                Ok(()) => return,
                // That waiter gave up; the slot must not hand itself on
                // again (the lock is held), so it is disarmed.
                Err(mut unsent) => unsent.queue = None,
            }
        }
        slots.free.push(thread);
    }
}

impl RenderSlot {
    /// Runs `job` on this slot's thread and waits for it (call it on the
    /// blocking pool). `None` if the job panicked.
    pub fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let queue = self.queue.as_ref().expect("a held slot is armed");
        let (done, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(job)));
        });
        let sent = queue.lock().threads[self.thread].send(job);
        sent.ok()?;
        result.recv().ok()?.ok()
    }
}

impl Drop for RenderSlot {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.hand_on(self.thread);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `slot(pages)` once so it queues, and returns it still waiting.
    fn queue_up(queue: &RenderQueue, pages: usize) -> tokio::task::JoinHandle<RenderSlot> {
        let queue = queue.clone();
        tokio::spawn(async move { queue.slot(pages).await })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_waiter_of_fewest_pages_then_the_earliest() {
        let queue = RenderQueue::new(1);
        let running = queue.slot(800).await;
        let large = queue_up(&queue, 800);
        settle().await;
        let medium_first = queue_up(&queue, 6);
        settle().await;
        let medium_second = queue_up(&queue, 6);
        settle().await;
        let small = queue_up(&queue, 1);
        settle().await;
        assert_eq!(queue.waiting(), 4);

        drop(running);
        let small = small.await.unwrap();
        assert_eq!(queue.waiting(), 3, "only the 1-page render got the slot");
        drop(small);
        let medium = medium_first.await.unwrap();
        assert!(!medium_second.is_finished() && !large.is_finished());
        drop(medium);
        drop(medium_second.await.unwrap());
        drop(large.await.unwrap());
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn with_two_slots_large_renders_never_take_the_express_one() {
        let queue = RenderQueue::new(2);
        let large = queue.slot(800).await;
        // The other slot is the express one: a second large render waits.
        let second_large = queue_up(&queue, 800);
        settle().await;
        assert_eq!(queue.waiting(), 1);
        // A small render is served at once, beside the large one.
        let small = queue.slot(RENDER_EXPRESS_PAGES_MAX).await;
        assert_eq!(small.thread, 0, "the express slot");
        // Another small one waits for the express slot, not behind the large
        // queued before it.
        let next_small = queue_up(&queue, 1);
        settle().await;
        drop(small);
        let next_small = next_small.await.unwrap();
        assert!(!second_large.is_finished());
        // The express slot coming back with only a large render waiting stays free.
        drop(next_small);
        settle().await;
        assert!(!second_large.is_finished());
        drop(large);
        let second = second_large.await.unwrap();
        assert_ne!(second.thread, 0);
        drop(second);
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn each_slot_runs_on_its_own_thread_and_survives_a_panic() {
        let queue = RenderQueue::new(2);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (a, b) = runtime.block_on(async { (queue.slot(1).await, queue.slot(1).await) });
        let name = || std::thread::current().name().map(str::to_owned);
        let (on_a, on_b) = (a.run(name).flatten(), b.run(name).flatten());
        assert_ne!(on_a, on_b);
        assert!(on_a.as_deref().is_some_and(|n| n.starts_with("usher-render-")));
        assert_eq!(a.run(|| panic!("a renderer bug")), None::<()>);
        assert_eq!(a.run(name).flatten(), on_a, "the thread lives on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gave_up_passes_its_slot_on() {
        let queue = RenderQueue::new(1);
        let running = queue.slot(3).await;
        let gives_up = queue_up(&queue, 1);
        let next = queue_up(&queue, 2);
        settle().await;
        gives_up.abort();
        settle().await;
        drop(running);
        let slot = next.await.unwrap();
        drop(slot);
        // Every slot came back: one free again.
        let again = queue.slot(5).await;
        assert_eq!(queue.waiting(), 0);
        drop(again);
    }
}
