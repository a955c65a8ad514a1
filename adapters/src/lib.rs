//! Driven adapters. Only this crate knows SQL.

mod db_error;
pub mod identity;
pub mod mail;
pub mod orders;
pub mod outbox;
pub mod payment;
pub mod pdf;
mod plan;
pub mod sql;

pub use sql::{PgStore, SqliteStore, Stores, connect, connect_all};
