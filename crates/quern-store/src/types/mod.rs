//! The parameter and answer types of [`Store`](crate::Store)'s operations,
//! one module per domain.
//!
//! Invariant: these are plain values that both backends take and answer
//! alike; nothing here reads or writes storage.

pub(crate) mod audit;
pub(crate) mod events;
pub(crate) mod leases;
pub(crate) mod schedules;
pub(crate) mod tasks;
pub(crate) mod tokens;
pub(crate) mod workers;
pub(crate) mod workflows;
