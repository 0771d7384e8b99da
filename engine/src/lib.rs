//! regent's registration engine.
//!
//! - [`model`]: what is recorded: command, observations, outcome ([`model::StepRecord`]).
//! - [`decide()`]: the rules, pure. [`state::State::evolve`]: folding outcomes into state.
//! - [`ports`]: the engine's only ways to reach the world (clock, folders, files, randomness,
//!   sealed secrets, the vault). What they return is recorded, so replay needs no world.
//! - [`service::Registrar`]: runs a command against the store: precheck, observe, decide, append.
//! - [`projections`]: status, Change Properties and the audit trail, rebuilt from the log.
//! - [`events`]: decoding recorded steps, upcasting old schema versions.
//! - [`reason`]: the steps, and the reason codes a refusal records ([`Reason`], defined with the
//!   vault's protocol in `regent-protocol` and re-exported here).

pub mod anchoring;
pub mod decide;
pub mod events;
pub mod model;
pub mod ports;
pub mod projections;
pub mod reason;
pub mod replay;

pub mod service;
pub mod state;
pub mod units;
pub mod vault_log;

pub use decide::{decide, precheck};
pub use reason::{Reason, Step};
pub use regent_store as store;
pub use state::{Phase, State};
