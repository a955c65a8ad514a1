//! The `usher` binary's library: configuration, the gRPC gateway and wiring.
//! Only this crate knows tonic.

pub mod admin;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod config;
pub mod conns;
pub mod convert;
pub mod demo;
pub mod doors;
pub mod error;
pub mod http;
pub mod http_identity;
pub mod identity;
pub mod inventory;
pub mod limits;
pub mod observe;
pub mod orders;
pub mod reporting;
pub mod streams;
pub mod telemetry;
pub mod webhooks;

pub use app::Application;
pub use config::Config;
