//! Usher's pure domain. No IO, no async, no clock: every function that needs
//! the time takes it as an argument, so the same inputs give the same outputs.

pub mod identity;
pub mod ids;
pub mod inventory;
pub mod layout;
pub mod limits;
pub mod money;
pub mod order;
pub mod quota;
pub mod ticket;

pub use identity::*;
pub use ids::*;
pub use inventory::*;
pub use layout::*;
pub use money::*;
pub use order::*;
pub use quota::{OrgUsage, Quota, QuotaExceeded, Quotas};
pub use ticket::*;

#[cfg(test)]
mod tests;
