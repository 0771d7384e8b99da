//! Where the vault keeps its log and its state: one trait ([`Storage`]), two implementations.
//!
//! - [`sled::SledStorage`]: the embedded default, one process. The log is a `regent-store` under the
//!   data directory; the state is its fold in memory; one committer writes every change, in rounds
//!   (group commit: one atomic append and one sync per round).
//! - [`postgres::PgStorage`]: several processes on one PostgreSQL database. The log is a table with
//!   the same record bytes and chain; the state is projection tables written in the same
//!   transaction as the events; every process answers every request from the database.
//!
//! A change is [`Storage::transact`]: the storage loads the [`Scope`]'s facts (locked, in
//! PostgreSQL), runs the pure decision of [`crate::rules`] on them, records its events and
//! projections atomically and durably, and only then answers. A decision that wrote nothing (a
//! refusal, or the same answer again) still remembers the request's nonce, so a replay is refused.

pub(crate) mod export;
pub(crate) mod postgres;
pub(crate) mod replay;
pub(crate) mod sled;

use chrono::{DateTime, Utc};
use regent_store::Head;

use crate::api::ApiError;
use crate::audit::{AuditScan, KeptRecord};
use crate::fleet::{Cursor, FleetState};
use crate::protocol::{MachineInfo, VaultInfo};
use crate::rules::{Decision, Facts, Scope};
use crate::state::AnchorHistory;
use crate::transparency::Fetched;

/// A decision over facts, run by the storage (perhaps again, on fresher facts, when its
/// transaction must be retried).
pub(crate) type Decide<A> = Box<dyn Fn(&Facts) -> Result<Decision<A>, ApiError> + Send + Sync>;

pub(crate) trait Storage: Send + Sync + 'static {
    /// The facts of a scope as they are now, locking nothing: what a request is authenticated
    /// against before its turn (a certificate, a machine's key).
    async fn read(&self, scope: &Scope) -> Result<Facts, ApiError>;

    /// Decides on the scope's facts and records the decision; answers once it is durable.
    async fn transact<A: Send + 'static>(
        &self,
        scope: Scope,
        now: DateTime<Utc>,
        decide: Decide<A>,
    ) -> Result<A, ApiError>;

    async fn vault_info(&self, vault: &str) -> Result<Option<VaultInfo>, ApiError>;

    /// A vault's current machines, oldest registration first; `None` without the vault.
    async fn machines(&self, vault: &str) -> Result<Option<Vec<MachineInfo>>, ApiError>;

    /// A page of a vault's current machines, in registration order after `after`, each with what
    /// the vault holds of its log and its fleet state; `None` without the vault.
    async fn fleet(
        &self,
        vault: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<Vec<FleetEntry>>, ApiError>;

    /// Kept records of the vault's machines (live or removed) in audit order (the time the agent
    /// recorded each, then machine, then position), as `scan` bounds them; `None` without the vault.
    async fn kept_records(&self, vault: &str, scan: &AuditScan) -> Result<Option<Vec<KeptRecord>>, ApiError>;

    /// The head of the service's own log.
    async fn head(&self) -> Result<Head, ApiError>;

    /// How many heads the service's transparency log holds (committed: every subtree below it is
    /// stored).
    async fn tree_size(&self) -> Result<u64, ApiError>;

    /// Those of `keys` (complete subtrees of the transparency log, below its size) the storage holds.
    async fn subtrees(&self, keys: Vec<(u8, u64)>) -> Result<Fetched, ApiError>;

    /// A leaf of the transparency log: its bytes.
    async fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, ApiError>;

    /// The whole log up to its head, as one consistent snapshot, streamed.
    async fn export(&self) -> Result<export::LogExport, ApiError>;

    /// A machine's kept records (live or removed) up to the last one the vault's log says it keeps,
    /// streamed; `None` when the vault holds no such machine.
    async fn machine_log(&self, vault: &str, machine_id: &str) -> Result<Option<export::LogExport>, ApiError>;

    /// Whether requests can be served: the log open, the database reachable with its schema.
    async fn ready(&self) -> Result<(), String>;
}

/// A machine of a fleet page: as registered, what the vault holds of its log, and its fleet state
/// (none before a record is kept).
pub(crate) struct FleetEntry {
    pub info: MachineInfo,
    pub anchor: AnchorHistory,
    pub fleet: Option<FleetState>,
}

/// The storage a service runs on, chosen at start.
pub(crate) enum Backend {
    Sled(sled::SledStorage),
    Postgres(postgres::PgStorage),
}

impl Storage for Backend {
    async fn read(&self, scope: &Scope) -> Result<Facts, ApiError> {
        match self {
            Backend::Sled(s) => s.read(scope).await,
            Backend::Postgres(s) => s.read(scope).await,
        }
    }

    async fn transact<A: Send + 'static>(
        &self,
        scope: Scope,
        now: DateTime<Utc>,
        decide: Decide<A>,
    ) -> Result<A, ApiError> {
        match self {
            Backend::Sled(s) => s.transact(scope, now, decide).await,
            Backend::Postgres(s) => s.transact(scope, now, decide).await,
        }
    }

    async fn vault_info(&self, vault: &str) -> Result<Option<VaultInfo>, ApiError> {
        match self {
            Backend::Sled(s) => s.vault_info(vault).await,
            Backend::Postgres(s) => s.vault_info(vault).await,
        }
    }

    async fn machines(&self, vault: &str) -> Result<Option<Vec<MachineInfo>>, ApiError> {
        match self {
            Backend::Sled(s) => s.machines(vault).await,
            Backend::Postgres(s) => s.machines(vault).await,
        }
    }

    async fn fleet(
        &self,
        vault: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<Vec<FleetEntry>>, ApiError> {
        match self {
            Backend::Sled(s) => s.fleet(vault, after, limit).await,
            Backend::Postgres(s) => s.fleet(vault, after, limit).await,
        }
    }

    async fn kept_records(&self, vault: &str, scan: &AuditScan) -> Result<Option<Vec<KeptRecord>>, ApiError> {
        match self {
            Backend::Sled(s) => s.kept_records(vault, scan).await,
            Backend::Postgres(s) => s.kept_records(vault, scan).await,
        }
    }

    async fn head(&self) -> Result<Head, ApiError> {
        match self {
            Backend::Sled(s) => s.head().await,
            Backend::Postgres(s) => s.head().await,
        }
    }

    async fn tree_size(&self) -> Result<u64, ApiError> {
        match self {
            Backend::Sled(s) => s.tree_size().await,
            Backend::Postgres(s) => s.tree_size().await,
        }
    }

    async fn subtrees(&self, keys: Vec<(u8, u64)>) -> Result<Fetched, ApiError> {
        match self {
            Backend::Sled(s) => s.subtrees(keys).await,
            Backend::Postgres(s) => s.subtrees(keys).await,
        }
    }

    async fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, ApiError> {
        match self {
            Backend::Sled(s) => s.leaf(index).await,
            Backend::Postgres(s) => s.leaf(index).await,
        }
    }

    async fn export(&self) -> Result<export::LogExport, ApiError> {
        match self {
            Backend::Sled(s) => s.export().await,
            Backend::Postgres(s) => s.export().await,
        }
    }

    async fn machine_log(&self, vault: &str, machine_id: &str) -> Result<Option<export::LogExport>, ApiError> {
        match self {
            Backend::Sled(s) => s.machine_log(vault, machine_id).await,
            Backend::Postgres(s) => s.machine_log(vault, machine_id).await,
        }
    }

    async fn ready(&self) -> Result<(), String> {
        match self {
            Backend::Sled(s) => s.ready().await,
            Backend::Postgres(s) => s.ready().await,
        }
    }
}

impl Backend {
    /// Closes what the storage holds open beyond the service's handles: the database's pool (and
    /// with it the committers and the background tasks).
    pub(crate) async fn close(&self) {
        if let Backend::Postgres(s) = self {
            s.pool().close().await;
        }
    }
}

/// A mirror's records read once, for their times (the fleet audit's order) and the fleet state.
pub(crate) fn decode_kept(mirror: &crate::rules::Mirror) -> Result<Vec<regent_store::Record>, String> {
    mirror
        .records
        .iter()
        .map(|line| {
            regent_store::decode_record(line.as_bytes()).map_err(|e| format!("a kept record cannot be read: {e}"))
        })
        .collect()
}

/// Whether a refusal leaves the request's nonce to be remembered: every refusal but a replay (whose
/// nonce is remembered already).
pub(crate) fn remembers_nonce(refusal: &ApiError) -> bool {
    refusal.code != crate::protocol::ErrorCode::NonceReplayed
}
