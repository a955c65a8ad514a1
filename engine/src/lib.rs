//! Usher's pure domain. No IO, no async, no clock: every function that needs
//! the time takes it as an argument, so the same inputs give the same outputs.

pub mod ids;
pub mod inventory;
pub mod layout;
pub mod limits;

pub use ids::*;
pub use inventory::*;
pub use layout::*;

#[cfg(test)]
mod tests;
