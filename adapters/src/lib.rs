//! Driven adapters. Only this crate knows SQL.

pub mod outbox;
mod plan;
pub mod sql;

pub use sql::{PgStore, SqliteStore, connect};
