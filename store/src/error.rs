//! The store's typed errors. The binary turns them into messages; nothing here panics.

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::chain::ChainFailure;
use crate::damage::Damage;

/// The version a stream must be at for an append to go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// Whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must be at exactly this version (0: no stream yet).
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by another process (waited {waited:?}); wait for it to finish, then try again"
    )]
    Locked { path: PathBuf, waited: Duration },

    #[error("the store path {path} exists but is not a directory; point at a directory")]
    NotADirectory { path: PathBuf },

    #[error("cannot use the store at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A sync to disk failed. Batches applied since the last good sync may or may not be on disk,
    /// and a later sync cannot tell, so the store refuses appends until it is opened again.
    #[error(
        "the store at {path} could not be written to disk ({source}); what was appended since the last good write may be lost; no more appends until the store is opened again"
    )]
    SyncFailed { path: PathBuf, source: std::sync::Arc<std::io::Error> },

    /// Something read from the store is not what the store writes. The message says what is
    /// wrong, never what to do: that depends on the program (the binary names its commands).
    #[error("the store at {path} is damaged: {detail}")]
    Corrupt { path: PathBuf, detail: String },

    /// The store was found damaged at open: it cannot be opened at all, or it refuses appends.
    #[error("the store at {path} is damaged: {damage}")]
    Damaged { path: PathBuf, damage: Damage },

    #[error("stream {stream}: expected {expected}, but the stream is at version {actual}")]
    Conflict { stream: String, expected: ExpectedVersion, actual: u64 },

    #[error(
        "the batch mixes {stored} event ids that are already stored (first: {first_stored}) with {new} new ones; a retry must resend the same batch"
    )]
    PartlyStored { stored: usize, new: usize, first_stored: Uuid },

    #[error("event {event_id} is already stored in stream {stored_in}, not in {requested}")]
    StoredElsewhere { event_id: Uuid, stored_in: String, requested: String },

    #[error("invalid batch: {0}")]
    InvalidBatch(String),

    #[error(
        "import refused: the store already holds data ({records} records, or what an interrupted import left); import into a new, empty store directory"
    )]
    NotEmpty { records: u64 },

    #[error("line {line} of the log file: {detail}")]
    BadLogFile { line: u64, detail: String },

    #[error("import refused: the chain is broken at {0}")]
    ChainBroken(ChainFailure),

    #[error("the store failed: {0}; this is a bug in sled or regent, please report it")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn from_sled(path: &std::path::Path, err: sled::Error) -> StoreError {
        let path = path.to_path_buf();
        match err {
            sled::Error::Io(source) => StoreError::Io { path, source },
            sled::Error::Corruption { at, .. } => {
                let detail = match at {
                    Some(at) => format!("sled cannot read its data file (db) at byte {}", at.lid()),
                    None => "sled cannot read its files".into(),
                };
                StoreError::Corrupt { path, detail }
            }
            // sled's own wording names sled versions and internals; the store's is what a user can act on.
            sled::Error::Unsupported(detail) => {
                tracing::debug!(%detail, "sled refused the store's files");
                StoreError::Corrupt { path, detail: "sled cannot read its files".into() }
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
