//! regent's event log: append-only, hash-chained, on sled.
//!
//! - Every record has a gapless global position, a stream and a version in it, and a hash over the
//!   previous hash and its own stored bytes ([`record`]).
//! - Appends are atomic per batch, take an expected version, are idempotent by event id, and return
//!   only once flushed to disk ([`EventStore::append`]).
//! - Reads stream ([`EventStore::read_all`], [`EventStore::read_stream`]); verification walks stored
//!   bytes and names the first bad record ([`EventStore::verify`], [`verify_export`]).
//! - Projections keep checkpoints, which are only a cache ([`EventStore::save_checkpoint`]).
//!
//! This crate knows nothing of registration.

pub mod chain;
mod damage;
mod error;
mod export;
#[doc(hidden)]
pub mod layout;
mod read_ahead;
pub mod record;
mod side;
mod store;
pub mod utc_time;

pub use chain::{ChainFailure, ChainWalker, HashedRecord, Problem, VerifyReport};
pub use damage::{Damage, record_range, salvage};
pub use error::{ExpectedVersion, Result, StoreError};
pub use export::{
    ExportHeader, FORMAT_NAME, FORMAT_VERSION, read_export, read_export_decoded, rechain_export, verify_export,
};
pub use record::{
    Actor, BatchMeta, Digest32, Head, MAX_RECORD_BYTES, NewEvent, Record, decode as decode_record,
    encode as encode_record, host_name,
};
pub use side::SideTree;
pub use store::{Appended, Batch, Checkpoint, EventStore, MAX_STREAM_ID_BYTES, StoreOptions, new_correlation_id};
#[doc(hidden)]
pub use store::{SyncEvent, SyncHook};
