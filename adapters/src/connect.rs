//! Every port one database serves, opened from its URL: the stores, the
//! stream, the sales read model and the webhooks (`connect_everything`).

use std::sync::Arc;

use usher_actors::StoreError;

use crate::sql::{PgStore, SqliteStore, Stores};

/// Every port one database serves.
pub struct Everything {
    pub stores: Stores,
    pub stream: Arc<dyn usher_actors::StreamStore>,
    /// The sales read model, as its consumer writes it and as reports read it.
    pub sales: Arc<dyn usher_actors::Projection>,
    pub reports: Arc<dyn usher_actors::Reports>,
    /// Webhook endpoints and their log; the queue's consumer; the sender's side.
    pub webhooks: Arc<dyn usher_actors::Webhooks>,
    pub webhook_queue: Arc<dyn usher_actors::Projection>,
    pub webhook_sender: Arc<dyn crate::webhooks::SenderStore>,
}

/// Opens the database named by a URL (`postgres://…`, else a SQLite file
/// path, `sqlite://` optional) as every port it serves. Runs migrations.
pub async fn connect_everything(url: &str) -> Result<Everything, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(everything(Arc::new(PgStore::connect(url).await?)))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(everything(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?)))
    }
}

/// One store as every port (both dialects implement them all).
fn everything<S>(s: Arc<S>) -> Everything
where
    S: usher_actors::Store
        + usher_actors::OrderStore
        + usher_actors::IdentityStore
        + usher_actors::StreamStore
        + usher_actors::Projection
        + usher_actors::Reports
        + usher_actors::Webhooks
        + crate::webhooks::SenderStore
        + 'static,
    crate::webhooks::WebhookQueue<S>: usher_actors::Projection,
{
    Everything {
        stores: (s.clone(), s.clone(), s.clone()),
        stream: s.clone(),
        sales: s.clone(),
        reports: s.clone(),
        webhooks: s.clone(),
        webhook_queue: Arc::new(crate::webhooks::WebhookQueue(s.clone())),
        webhook_sender: s,
    }
}

/// Opens the store named by a URL (as [`crate::connect`]) and returns it as every
/// port it implements. Runs migrations.
pub async fn connect_all(url: &str) -> Result<Stores, StoreError> {
    Ok(connect_with_stream(url).await?.0)
}

/// [`connect_all`] and the same database's outbox as a stream.
pub async fn connect_with_stream(url: &str) -> Result<(Stores, Arc<dyn usher_actors::StreamStore>), StoreError> {
    let e = connect_everything(url).await?;
    Ok((e.stores, e.stream))
}
