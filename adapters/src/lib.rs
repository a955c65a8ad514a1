//! Driven adapters: SQL (only this crate knows it), Redis leases, Kafka,
//! the webhook sender (an HTTP client), PDFs, mail and the payment provider.

mod commit;
mod connect;
mod consume;
mod db_error;
pub mod identity;
pub mod kafka;
pub mod lease;
pub mod mail;
mod node_lock;
pub mod orders;
pub mod outbox;
pub mod payment;
pub mod pdf;
mod plan;
pub mod reporting;
pub mod sql;
pub mod stream;
pub mod webhooks;

pub use connect::{Everything, connect_all, connect_everything, connect_with_stream};
pub use node_lock::{NodeLock, NodeLockError, PG_NODE_LOCK_KEY, lock_cluster_node, lock_node};
pub use sql::{PgStore, SqliteStore, Stores, connect};
