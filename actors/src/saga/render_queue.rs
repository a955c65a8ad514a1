//! The render slots, handed out fewest pages first.
//!
//! A slot is one PDF typeset at a time on the blocking pool (there are
//! `render_workers` of them). When every slot is busy, waiting renders queue,
//! and a freed slot goes to the waiting render of the fewest pages (the
//! earliest among equals). A render that has a slot keeps it to the end: a
//! large order is never preempted, and a small one never waits behind a
//! queued large one. So a 1-page order waits at most for the first of the
//! running renders to finish, one render slot, however many large orders
//! are queued; a running render is at most `limits::ORDER_SEATS_MAX` pages.
//!
//! The price: a large order waits while smaller ones keep arriving faster
//! than the slots render them. An onsale wave delays large orders' tickets
//! until it passes; they are never refused.
//!
//! A waiter that gives up (its saga stopped) drops its receiver; the slot
//! sent to it, if any, is dropped with the receiver and frees itself.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The render slots of a node. Cheap to clone; clones share the slots.
#[derive(Clone)]
pub struct RenderQueue {
    shared: Arc<Mutex<Slots>>,
}

struct Slots {
    free: usize,
    /// Arrivals so far: ties among equal page counts go to the earliest.
    arrivals: u64,
    waiting: BinaryHeap<Reverse<Waiter>>,
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
}

impl RenderQueue {
    /// `slots` renders at once (at least one).
    pub fn new(slots: usize) -> RenderQueue {
        let slots = Slots { free: slots.max(1), arrivals: 0, waiting: BinaryHeap::new() };
        RenderQueue { shared: Arc::new(Mutex::new(slots)) }
    }

    /// Waits for a slot to render `pages` pages.
    pub async fn slot(&self, pages: usize) -> RenderSlot {
        let receiver = {
            let mut slots = self.lock();
            if slots.free > 0 {
                slots.free -= 1;
                return RenderSlot { queue: Some(self.clone()) };
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

    /// A slot came back: to the waiter of the fewest pages still waiting,
    /// else to the free ones.
    fn hand_on(&self) {
        let mut slots = self.lock();
        while let Some(Reverse(waiter)) = slots.waiting.pop() {
            match waiter.slot.send(RenderSlot { queue: Some(self.clone()) }) {
                Ok(()) => return,
                // That waiter gave up; the slot must not hand itself on
                // again (the lock is held), so it is disarmed.
                Err(mut unsent) => unsent.queue = None,
            }
        }
        slots.free += 1;
    }
}

impl Drop for RenderSlot {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.hand_on();
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
