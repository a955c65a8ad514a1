//! The IO of each saga step: the payment provider's calls, commands to the
//! order's event actor, ticket issuing, PDF rendering and waiting for the
//! email, each with a key derived from the order so that redoing it after a
//! crash has the effect of doing it once. Each step answers the order's next
//! input, or `Err(())` (logged here) for the saga to retry the step.

use std::time::Duration;

use tracing::{error, warn};
use usher_engine::{Command, IdempotencyKey, MailKind, Order, OrderInput, Reply, TicketId, limits, sign_ticket, ticket_id_for};

use super::{SagaDeps, SagaError, order_doc};
use crate::event::CommandError;
use crate::ports::{AuthorizeRequest, MailState, PaymentOutcome, ProviderError, ProviderStatus, TicketRecord, TicketStatus};

/// What a step's IO came to: the order's next input, and the tickets it
/// issued (only `Issue` has any).
pub(super) struct Done {
    pub input: OrderInput,
    pub tickets: Vec<TicketRecord>,
}

impl From<OrderInput> for Done {
    fn from(input: OrderInput) -> Done {
        Done { input, tickets: Vec::new() }
    }
}

/// `Authorize`: asks the provider to authorize the current payment with the
/// card number the Pay call left in the vault. An unavailable provider
/// moves on to asking for the attempt's status.
pub(super) async fn authorize(deps: &SagaDeps, order: &Order, card_number: String) -> OrderInput {
    let p = order.current_payment().expect("authorize has a payment");
    let req = AuthorizeRequest { key: p.id.to_string(), reference: order.id.to_string(), amount: p.amount, card_number };
    match deps.provider.authorize(req).await {
        Ok(PaymentOutcome::Authorized { provider_ref }) => OrderInput::Authorized { provider_ref },
        Ok(PaymentOutcome::Declined { reason }) => OrderInput::Declined { reason },
        Err(ProviderError::Refused(m)) => OrderInput::Declined { reason: format!("the payment provider refused the payment: {m}") },
        Err(ProviderError::Unavailable(m)) => {
            warn!(order_id = %order.id, error = %m, "payment provider unavailable; asking for the status");
            OrderInput::ProviderTimedOut
        }
    }
}

/// `QueryStatus`: asks the provider what became of the attempt (by its
/// key) until it knows, backing off between questions.
pub(super) async fn query_status(deps: &SagaDeps, order: &Order) -> OrderInput {
    let p = order.current_payment().expect("query has a payment");
    let key = p.id.to_string();
    let mut wait = deps.cfg.retry_ms_min;
    loop {
        let known = match deps.provider.status(&key).await {
            Ok(ProviderStatus::Unknown) if deps.cards.get(&key).is_none() => {
                Some(OrderInput::Declined { reason: "the payment was interrupted before it reached the provider; pay again".into() })
            }
            Ok(ProviderStatus::Unknown) => Some(OrderInput::ProviderNeverSaw { timeout_ms: deps.cfg.payment_timeout_ms }),
            Ok(ProviderStatus::Authorized { provider_ref } | ProviderStatus::Captured { provider_ref }) => {
                Some(OrderInput::Authorized { provider_ref })
            }
            Ok(ProviderStatus::Declined { reason }) => Some(OrderInput::Declined { reason }),
            Ok(ProviderStatus::Refunded { .. }) => Some(OrderInput::Declined { reason: "refunded by the provider".into() }),
            Ok(ProviderStatus::Pending) | Err(_) => None,
        };
        if let Some(input) = known {
            return input;
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
        wait = (wait * 2).min(deps.cfg.retry_ms_max);
    }
}

/// `Confirm`: sells the order's held seats in its event.
pub(super) async fn confirm(deps: &SagaDeps, order: &Order) -> Result<OrderInput, ()> {
    let key = step_key(order, "confirm");
    let cmd = Command::ConfirmAll { hold_ids: order.holds.clone() };
    match event_command(deps, order, key, cmd).await {
        Ok(Ok(_)) => Ok(OrderInput::Confirmed),
        Ok(Err(why)) => Ok(OrderInput::HoldsGone { reason: format!("the seats were no longer held when the payment went through: {why}") }),
        Err(e) => {
            warn!(order_id = %order.id, error = %e, "could not confirm the holds; retrying");
            Err(())
        }
    }
}

/// `Capture` or `Refund` of the current payment at the provider.
pub(super) async fn capture_or_refund(deps: &SagaDeps, order: &Order, capture: bool) -> Result<OrderInput, ()> {
    let p = order.current_payment().expect("capture/refund has a payment");
    let key = p.id.to_string();
    let Some(r) = p.provider_ref.clone() else {
        // Refunding a payment that never got a reference: nothing was taken.
        return Ok(OrderInput::Refunded);
    };
    let res = if capture { deps.provider.capture(&key, &r).await } else { deps.provider.refund(&key, &r).await };
    match res {
        Ok(()) => Ok(if capture { OrderInput::Captured } else { OrderInput::Refunded }),
        Err(e) => {
            warn!(order_id = %order.id, error = %e, capture, "payment provider call failed; retrying");
            Err(())
        }
    }
}

/// `Issue`: the order's tickets, signed (after the test delay, if set).
pub(super) async fn issue_step(deps: &SagaDeps, order: &Order) -> Result<Done, ()> {
    if deps.cfg.issue_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(deps.cfg.issue_delay_ms)).await;
    }
    match issue(deps, order).await {
        Ok(tickets) => Ok(Done { input: OrderInput::TicketsIssued { tickets: tickets.iter().map(|t| t.id).collect() }, tickets }),
        Err(e) => {
            warn!(order_id = %order.id, error = %e, "could not issue tickets; retrying");
            Err(())
        }
    }
}

/// `Render`: the order's PDF.
pub(super) async fn render_step(deps: &SagaDeps, order: &Order) -> Result<OrderInput, ()> {
    match render(deps, order).await {
        Ok(()) => Ok(OrderInput::Rendered),
        Err(e) => {
            error!(order_id = %order.id, error = %e, "could not render the tickets; retrying");
            Err(())
        }
    }
}

/// `Notify`: returns once the confirmation email was sent or gave up (the
/// postman also tells the saga; this covers a delivery before a restart).
pub(super) async fn await_mail(deps: &SagaDeps, order: &Order) {
    loop {
        match deps.orders.mail_state(order.id, MailKind::Confirmation).await {
            Ok(Some(MailState::Sent | MailState::Failed)) => return,
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(limits::MAIL_STATE_POLL_MS)).await,
        }
    }
}

/// `Release`: gives the order's holds back (a hold that already ended,
/// expired or released, is released enough).
pub(super) async fn release(deps: &SagaDeps, order: &Order) -> Result<OrderInput, ()> {
    for h in &order.holds {
        let key = step_key(order, &format!("release-{h}"));
        let cmd = Command::Release { hold_id: *h, customer: None };
        if let Err(e) = event_command(deps, order, key, cmd).await {
            warn!(order_id = %order.id, error = %e, "could not release a hold; retrying");
            return Err(());
        }
    }
    Ok(OrderInput::Released)
}

/// The card number of the current payment attempt: kept in memory only
/// while the saga runs (never stored). After a restart the provider's
/// idempotency key finds the attempt without it.
pub(super) fn card_of(deps: &SagaDeps, order: &Order) -> Option<String> {
    order.current_payment().and_then(|p| deps.cards.get(&p.id.to_string()))
}

pub(super) fn step_key(order: &Order, step: &str) -> IdempotencyKey {
    IdempotencyKey::parse(&format!("order:{}:{step}", order.id.0.simple())).expect("derived keys are well formed")
}

/// Sends a command to the order's event. `Ok(Err(sentence))` is a domain
/// refusal (the hold is gone), in the engine's words for people
/// (`Reject::describe`); `Err` is infrastructure (retry).
pub(super) async fn event_command(
    deps: &SagaDeps,
    order: &Order,
    key: IdempotencyKey,
    cmd: Command,
) -> Result<Result<Reply, String>, CommandError> {
    let handle = match deps.registry.event(order.event_id).await {
        Ok(h) => h,
        Err(CommandError::EventNotFound(_)) => return Ok(Err("the event no longer exists".into())),
        Err(e) => return Err(e),
    };
    let out = handle.command(key, cmd).await?;
    Ok(out.result.map_err(|r| r.describe(&handle.layout)))
}

async fn issue(deps: &SagaDeps, order: &Order) -> Result<Vec<TicketRecord>, SagaError> {
    let handle = deps.registry.event(order.event_id).await.map_err(|e| SagaError::Unavailable(e.to_string()))?;
    let now = deps.clock.now();
    Ok(order
        .lines
        .iter()
        .map(|l| {
            let id: TicketId = ticket_id_for(order.id, l.seat);
            TicketRecord {
                id,
                order_id: order.id,
                event_id: order.event_id,
                seat: l.seat,
                seat_label: handle.layout.label(l.seat),
                price: l.price,
                code: sign_ticket(&deps.signing_key, order.event_id, id, l.seat),
                status: TicketStatus::Valid,
                issued_at: now,
            }
        })
        .collect())
}

/// Renders the order's PDF in a render slot (fewest pages first, on the
/// slot's thread; `render_queue.rs`) and writes it atomically.
async fn render(deps: &SagaDeps, order: &Order) -> Result<(), SagaError> {
    let doc = order_doc(deps, order).await?;
    let bytes = deps.render_slots.render(deps.renderer.clone(), doc).await.map_err(|e| SagaError::Internal(e.to_string()))?;
    let path = deps.pdf_path(order.id);
    write_atomically(&path, &bytes).await.map_err(|e| SagaError::Unavailable(format!("write {}: {e}", path.display())))
}

pub async fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let (tmp2, bytes) = (tmp.clone(), bytes.to_vec());
    // Written and synced on the blocking pool: the file is whole before it
    // gets its name.
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        // Tickets are people's entry codes: readable by the owner only.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp2)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })
    .await
    .map_err(std::io::Error::other)??;
    tokio::fs::rename(&tmp, path).await
}
