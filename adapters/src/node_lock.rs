//! The single-node guard: proof that this process alone serves a database,
//! taken before any event is granted (`usher_actors::LocalOwnership`).
//!
//! - SQLite: an exclusive advisory lock (`flock`) on `PATH.lock` beside the
//!   database file. The kernel drops it when the process dies, however it
//!   dies, so a crashed node never blocks its restart.
//! - PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) held by a
//!   connection of its own for the life of the process; PostgreSQL drops it
//!   when that connection closes. Several nodes on one database need the
//!   cluster's leases instead, not this lock.

use std::str::FromStr;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use usher_actors::{BoxFuture, SoleServer, StoreError};

use crate::db_error::db_error;

/// The advisory-lock key single-node servers take on PostgreSQL: the bytes
/// of "usher-1n" read as a big-endian integer, so it stands out in `pg_locks`.
pub const PG_NODE_LOCK_KEY: i64 = i64::from_be_bytes(*b"usher-1n");

/// Held while this process serves its database; dropping it lets another
/// process take the database.
pub enum NodeLock {
    File { _file: std::fs::File, path: std::path::PathBuf },
    Postgres { conn: tokio::sync::Mutex<PgConnection> },
}

#[derive(Debug, thiserror::Error)]
pub enum NodeLockError {
    /// Another process serves the database; the sentence says which lock.
    #[error("{0}")]
    Held(String),
    #[error("taking the single-node lock: {0}")]
    Store(#[from] StoreError),
}

/// Takes the single-node lock for the store named by `url` (as
/// `crate::connect` reads it), or says who holds it.
pub async fn lock_node(url: &str) -> Result<NodeLock, NodeLockError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return pg_lock(
            url,
            "SELECT pg_try_advisory_lock($1)",
            "another usher process already serves this PostgreSQL database (as a single node, or the nodes of a cluster); \
             stop it first, or join its cluster with --redis-url",
        )
        .await;
    }
    let db = url.strip_prefix("sqlite://").unwrap_or(url);
    let path = std::path::PathBuf::from(format!("{db}.lock"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(NodeLock::File { _file: file, path }),
        Err(std::fs::TryLockError::WouldBlock) => Err(NodeLockError::Held(format!(
            "another usher process already serves {db} (it holds {}); stop it, or give this one its own data directory",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!("lock {}: {e}", path.display())).into()),
    }
}

/// The lock a cluster node holds on PostgreSQL for its life: the same key in
/// shared mode, so the nodes of a cluster coexist while a single-node server
/// (which takes it exclusively) and they keep each other out; without it the
/// two would take events from each other forever.
pub async fn lock_cluster_node(url: &str) -> Result<NodeLock, NodeLockError> {
    pg_lock(
        url,
        "SELECT pg_try_advisory_lock_shared($1)",
        "a single-node usher process serves this PostgreSQL database; stop it before starting the nodes of a cluster",
    )
    .await
}

async fn pg_lock(url: &str, take: &str, held_by_another: &str) -> Result<NodeLock, NodeLockError> {
    let opts = PgConnectOptions::from_str(url).map_err(db_error)?.application_name("usher node lock");
    let mut conn = PgConnection::connect_with(&opts).await.map_err(db_error)?;
    let (held,): (bool,) = sqlx::query_as(take).bind(PG_NODE_LOCK_KEY).fetch_one(&mut conn).await.map_err(db_error)?;
    if !held {
        return Err(NodeLockError::Held(held_by_another.into()));
    }
    Ok(NodeLock::Postgres { conn: tokio::sync::Mutex::new(conn) })
}

impl SoleServer for NodeLock {
    fn describe(&self) -> String {
        match self {
            NodeLock::File { path, .. } => format!("lock on {}", path.display()),
            NodeLock::Postgres { .. } => format!("PostgreSQL advisory lock {PG_NODE_LOCK_KEY}"),
        }
    }

    /// A file lock lasts as long as the process. The advisory lock lasts as
    /// long as its connection: asked over it, so a lost connection (and lock)
    /// is noticed at the next grant.
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self {
                NodeLock::File { .. } => Ok(()),
                NodeLock::Postgres { conn } => {
                    let mut conn = conn.lock().await;
                    let held: Result<(bool,), _> = sqlx::query_as(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted \
                         AND ((classid::bigint << 32) | objid::bigint) = $1)",
                    )
                    .bind(PG_NODE_LOCK_KEY)
                    .fetch_one(&mut *conn)
                    .await;
                    match held {
                        Ok((true,)) => Ok(()),
                        Ok((false,)) => Err("this node no longer holds its single-node lock on PostgreSQL".into()),
                        Err(e) => Err(format!("this node lost its single-node lock on PostgreSQL (its connection failed: {e})")),
                    }
                }
            }
        })
    }
}
