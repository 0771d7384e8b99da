//! regent's registration engine: commands, events, the rules that decide, the state they evolve,
//! and the projections rebuilt from the log. Built on `regent-store`; does no I/O of its own.
//!
//! Not built yet: this crate is the subject of the engine issue. It exists so the workspace has
//! its final shape from the start.

pub use regent_store as store;
