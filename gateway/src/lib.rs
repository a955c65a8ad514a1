//! The `usher` binary's library: configuration, the gRPC and HTTP doors,
//! the node service between nodes, and the wiring. Of the binary's crates,
//! only this one serves gRPC and HTTP.

pub mod admin;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod config;
pub mod conns;
pub mod convert;
pub mod ctx;
pub mod demo;
pub mod doors;
pub mod error;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod inventory;
pub mod json;
pub mod limits;
pub mod node_service;
pub mod observe;
pub mod orders;
pub mod reporting;
pub mod streams;
pub mod telemetry;
pub mod webhooks;

pub use app::Application;
pub use config::Config;
