//! The `usher` binary's library: configuration, the gRPC gateway and wiring.
//! Only this crate knows tonic.

pub mod app;
pub mod catalog;
pub mod client;
pub mod config;
pub mod convert;
pub mod demo;
pub mod error;
pub mod http;
pub mod inventory;
pub mod orders;

pub use app::Application;
pub use config::Config;
