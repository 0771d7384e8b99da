//! Records of the log applied to PostgreSQL's projection tables with the live path's own
//! [`project`], for `regent vault rebuild-projections` (the database's own log) and
//! `regent vault migrate` (a sled log copied in): so a rebuilt or moved database holds the tables
//! the live path would have written.
//!
//! One thing the live path does beside `project` is forgetting nonces: every process deletes, once
//! a minute, the nonces older than [`NONCE_MEMORY`]. A replay does the same in log time (before an
//! event recorded a minute or more after the last such delete), and once more at the end as of
//! now, so the nonces left are those the live tables would hold.

use chrono::{DateTime, Duration, Utc};
use regent_store::Record;
use sqlx::postgres::PgConnection;

use super::postgres::{Failed, project};
use crate::events::VaultEvent;
use crate::rules::NONCE_MEMORY;

/// How often the live path forgets old nonces (`PgStorage::prune_nonces`).
const PRUNE_EVERY: Duration = Duration::seconds(60);

/// Why a record could not be applied.
pub(crate) enum ReplayError {
    /// The record is not an event of this build (its position, and what is wrong).
    Event { position: u64, detail: String },
    /// The database refused or failed.
    Database(Failed),
}

impl From<Failed> for ReplayError {
    fn from(failed: Failed) -> ReplayError {
        ReplayError::Database(failed)
    }
}

impl From<sqlx::Error> for ReplayError {
    fn from(error: sqlx::Error) -> ReplayError {
        ReplayError::Database(Failed::from(error))
    }
}

/// Applies records in log order, remembering when nonces were last forgotten.
pub(crate) struct Replay {
    pruned_at: Option<DateTime<Utc>>,
}

impl Replay {
    pub(crate) fn new() -> Replay {
        Replay { pruned_at: None }
    }

    /// Writes the projections of the event `record` holds, as the live path wrote them when it
    /// appended it.
    pub(crate) async fn apply(&mut self, conn: &mut PgConnection, record: &Record) -> Result<(), ReplayError> {
        let bad = |detail: String| ReplayError::Event { position: record.position, detail };
        let vault = record
            .stream
            .strip_prefix("vault/")
            .ok_or_else(|| bad(format!("stream {:?} is not a vault's", record.stream)))?;
        let event = VaultEvent::from_record(record).map_err(bad)?;
        let at = record.recorded_at;
        if self.pruned_at.is_none_or(|pruned| at - pruned >= PRUNE_EVERY) {
            forget_nonces_before(conn, at - NONCE_MEMORY).await?;
            self.pruned_at = Some(at);
        }
        project(conn, vault, &event).await?;
        Ok(())
    }

    /// The last forgetting, as the live path would do it `now`.
    pub(crate) async fn finish(self, conn: &mut PgConnection, now: DateTime<Utc>) -> Result<(), ReplayError> {
        forget_nonces_before(conn, now - NONCE_MEMORY).await
    }
}

/// What the live path's pruning deletes from the projection (`request_nonces` is not one).
async fn forget_nonces_before(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<(), ReplayError> {
    sqlx::query("DELETE FROM nonces WHERE seen_at < $1").bind(cutoff).execute(&mut *conn).await?;
    Ok(())
}

/// How many vaults and live machines the tables hold: what a rebuild or a move reports.
pub(crate) async fn counts(conn: &mut PgConnection) -> Result<(u64, u64), sqlx::Error> {
    let vaults: i64 = sqlx::query_scalar("SELECT count(*) FROM vaults").fetch_one(&mut *conn).await?;
    let machines: i64 =
        sqlx::query_scalar("SELECT count(*) FROM machines WHERE removed_at IS NULL").fetch_one(&mut *conn).await?;
    Ok((u64::try_from(vaults).unwrap_or(0), u64::try_from(machines).unwrap_or(0)))
}
