//! The IO of each saga step: commands to the order's event actor, ticket
//! issuing and PDF rendering, each with a key derived from the order so
//! that redoing it after a crash has the effect of doing it once.

use super::*;

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

pub(super) async fn issue(deps: &SagaDeps, order: &Order) -> Result<Vec<TicketRecord>, SagaError> {
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
pub(super) async fn render(deps: &SagaDeps, order: &Order) -> Result<(), SagaError> {
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
