//! The postman: delivers the email queue (`notifications`), one message per
//! order and kind. A failed delivery is retried with a doubling back-off
//! while the server is down; a message the server refuses for good is marked
//! failed and logged at ERROR. A delivered confirmation tells the order's saga.
//!
//! Delivery is at least once: a crash after the server took a message and
//! before it is marked sent sends it again at the next start. The Message-ID
//! is the same on every attempt, so a receiver can drop the copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use usher_engine::limits::MAIL_BATCH_MAX;
use usher_engine::{MailKind, Order, OrderId};

use crate::ports::{Attachment, Email, MailError, Mailer, QueuedMail};
use crate::saga::{Sagas, order_number};

#[derive(Clone)]
pub struct PostmanConfig {
    pub from: String,
    /// Builds the link that opens an order without signing in (the
    /// storefront's URL with the order's secret); every email carries it.
    pub order_link: Option<Arc<dyn Fn(OrderId) -> String + Send + Sync>>,
    /// How often the queue is looked at when nothing wakes the postman.
    pub poll_ms: u64,
    pub retry_ms_min: u64,
    pub retry_ms_max: u64,
}

impl Default for PostmanConfig {
    fn default() -> Self {
        PostmanConfig {
            from: "Usher Tickets <tickets@usher.local>".into(),
            order_link: None,
            poll_ms: 1_000,
            retry_ms_min: 1_000,
            retry_ms_max: 60_000,
        }
    }
}

pub enum PostmanMsg {
    Tick,
}

pub struct Postman;

pub struct PostmanArgs {
    pub mailer: Arc<dyn Mailer>,
    pub sagas: Sagas,
    pub cfg: PostmanConfig,
}

pub struct PostmanState {
    args: PostmanArgs,
    /// A Tick is queued: the pacer does not add another.
    tick_queued: Arc<AtomicBool>,
    pacer: JoinHandle<()>,
}

impl Actor for Postman {
    type Msg = PostmanMsg;
    type State = PostmanState;
    type Arguments = PostmanArgs;

    async fn pre_start(&self, myself: ActorRef<PostmanMsg>, args: PostmanArgs) -> Result<PostmanState, ActorProcessingErr> {
        info!(to = %args.mailer.describe(), "postman delivering email");
        // The pacer wakes the postman when a saga queues a message, and
        // every poll interval for retries that have come due.
        let tick_queued = Arc::new(AtomicBool::new(false));
        let pacer = {
            let (me, queued, wake) = (myself.clone(), tick_queued.clone(), args.sagas.deps.mail_queued.clone());
            let poll = Duration::from_millis(args.cfg.poll_ms);
            tokio::spawn(async move {
                loop {
                    if !queued.swap(true, Ordering::AcqRel) && me.cast(PostmanMsg::Tick).is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
            })
        };
        Ok(PostmanState { args, tick_queued, pacer })
    }

    async fn handle(&self, myself: ActorRef<PostmanMsg>, _msg: PostmanMsg, st: &mut PostmanState) -> Result<(), ActorProcessingErr> {
        st.tick_queued.store(false, Ordering::Release);
        let s = &st.args;
        let deps = &s.sagas.deps;
        // One claim per message, just before it is sent: a claim lasts
        // `MAIL_CLAIM_MS`, longer than one delivery attempt but not than a
        // batch of them to a slow server, after which another node's postman
        // could take (and send) the rest of the batch too.
        let mut sent = 0;
        while sent < MAIL_BATCH_MAX {
            match deps.orders.due_mail(deps.clock.now(), 1).await {
                Ok(due) if due.is_empty() => return Ok(()),
                Ok(due) => {
                    for m in due {
                        deliver(s, m).await;
                    }
                    sent += 1;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the email queue");
                    return Ok(());
                }
            }
        }
        if !st.tick_queued.swap(true, Ordering::AcqRel) {
            // More may be due: look again at once (after other messages).
            myself.cast(PostmanMsg::Tick)?;
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<PostmanMsg>, st: &mut PostmanState) -> Result<(), ActorProcessingErr> {
        st.pacer.abort();
        Ok(())
    }
}

async fn deliver(s: &PostmanArgs, m: QueuedMail) {
    // The order's trace, when its saga ran here traced: the send is a span
    // of it, and the email names that span in its Traceparent header.
    let parent = s.sagas.deps.mail_traces.take(m.order_id);
    let span = crate::trace::joined(parent.as_deref(), || {
        tracing::info_span!(
            parent: None,
            "email",
            order_id = %m.order_id,
            kind = m.kind.as_str(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    });
    tracing::Instrument::instrument(deliver_in_span(s, m), span).await
}

async fn deliver_in_span(s: &PostmanArgs, m: QueuedMail) {
    let deps = &s.sagas.deps;
    let email = match compose(s, &m).await {
        Ok(e) => e,
        Err(e) => {
            warn!(order_id = %m.order_id, kind = m.kind.as_str(), error = %e, "cannot compose email; retrying later");
            let next = deps.clock.now().plus_ms(s.cfg.retry_ms_max);
            let _ = deps.orders.mail_retry(m.order_id, m.kind, next, &e).await;
            return;
        }
    };
    let email = Email { trace: crate::trace::current(), ..email };
    let now = deps.clock.now();
    match s.mailer.send(&email).await {
        Ok(()) => {
            if let Err(e) = deps.orders.mail_sent(m.order_id, m.kind, now).await {
                // Sent but not recorded: it will go again (same Message-ID).
                error!(order_id = %m.order_id, kind = m.kind.as_str(), error = %e, "email sent but not recorded");
                return;
            }
            info!(order_id = %m.order_id, kind = m.kind.as_str(), to = %m.recipient, "email delivered");
            metrics::counter!(crate::metrics::names::EMAILS_SENT).increment(1);
            if m.kind == MailKind::Confirmation {
                s.sagas.mail_delivered(m.order_id);
            }
        }
        Err(MailError::Transient(e)) => {
            let wait = backoff(s.cfg.retry_ms_min, s.cfg.retry_ms_max, m.attempts);
            warn!(order_id = %m.order_id, kind = m.kind.as_str(), error = %e, retry_in_ms = wait, "email delivery failed; will retry");
            metrics::counter!(crate::metrics::names::EMAIL_RETRIES).increment(1);
            let _ = deps.orders.mail_retry(m.order_id, m.kind, now.plus_ms(wait), &e).await;
        }
        Err(MailError::Permanent(e)) => {
            error!(order_id = %m.order_id, kind = m.kind.as_str(), error = %e, "email refused for good");
            metrics::counter!(crate::metrics::names::EMAILS_FAILED).increment(1);
            let _ = deps.orders.mail_failed(m.order_id, m.kind, &e).await;
            if m.kind == MailKind::Confirmation {
                s.sagas.mail_delivered(m.order_id);
            }
        }
    }
}

pub fn backoff(min_ms: u64, max_ms: u64, attempts: u32) -> u64 {
    min_ms.saturating_mul(1u64 << attempts.min(20)).min(max_ms)
}

async fn compose(s: &PostmanArgs, m: &QueuedMail) -> Result<Email, String> {
    let deps = &s.sagas.deps;
    let order: Order = deps.orders.get_order(m.order_id).await.map_err(|e| e.to_string())?.ok_or("order not found")?.order;
    let event = deps.store.get_event(order.event_id).await.map_err(|e| e.to_string())?.ok_or("event not found")?;
    let number = order_number(order.id);
    let when = crate::local_time::written(event.starts_at, &event.time_zone);
    let total = order.total.to_string();
    let seats = order.lines.len();
    let (subject, text, attachments) = match m.kind {
        MailKind::Confirmation => {
            let path = deps.pdf_path(order.id);
            let bytes = tokio::fs::read(&path).await.map_err(|e| format!("read {}: {e}", path.display()))?;
            (
                format!("Your tickets for {} — order {number}", event.name),
                format!(
                    "Hello,\n\nthank you for your order {number}: {seats} ticket(s) for {} on {when}, {total} paid.\n\
                     Your tickets are attached as a PDF, one page per seat. Show the QR code at the gate.\n\nUsher\n",
                    event.name
                ),
                vec![Attachment { filename: format!("tickets-{number}.pdf"), content_type: "application/pdf".into(), bytes }],
            )
        }
        MailKind::Expired => (
            format!("Your order {number} expired"),
            format!(
                "Hello,\n\nyour order {number} for {} was not paid before its seats were released. Nothing was charged.\n\nUsher\n",
                event.name
            ),
            vec![],
        ),
        MailKind::PaymentFailed => (
            format!("Payment failed for order {number}"),
            format!(
                "Hello,\n\nthe payment for your order {number} for {} did not go through ({}). Nothing was charged and the seats were released.\n\nUsher\n",
                event.name,
                order.note.clone().unwrap_or_default()
            ),
            vec![],
        ),
        MailKind::Refunded => (
            format!("Refund for order {number}"),
            format!(
                "Hello,\n\nyour order {number} for {} was refunded: {total} ({}). Its tickets are no longer valid.\n\nUsher\n",
                event.name,
                order.note.clone().unwrap_or_default()
            ),
            vec![],
        ),
        MailKind::Cancelled => (
            format!("Order {number} cancelled"),
            format!("Hello,\n\nyour order {number} for {} was cancelled. Nothing was charged.\n\nUsher\n", event.name),
            vec![],
        ),
    };
    let text = match &s.cfg.order_link {
        // The link opens the order (and its tickets) without signing in.
        Some(link) => format!("{text}\nYour order, any time: {}\n", link(order.id)),
        None => text,
    };
    Ok(Email {
        message_id: format!("<{}.{}@usher.local>", order.id.0.simple(), m.kind.as_str()),
        from: s.cfg.from.clone(),
        to: m.recipient.clone(),
        subject,
        text,
        attachments,
        trace: None,
    })
}

/// Starts the postman (linked to nothing: it has no state to lose).
pub async fn start(args: PostmanArgs) -> Result<ActorRef<PostmanMsg>, String> {
    Actor::spawn(None, Postman, args).await.map(|(a, _)| a).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(super::backoff(1000, 60_000, 0), 1000);
        assert_eq!(super::backoff(1000, 60_000, 3), 8000);
        assert_eq!(super::backoff(1000, 60_000, 30), 60_000);
    }
}
