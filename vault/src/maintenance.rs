//! The vault's log leaving sled and the tables made from it again, for `regent vault migrate` and
//! `regent vault rebuild-projections`. Both are blocking calls for the command line, each on a
//! runtime of its own.
//!
//! - [`rebuild_projections`]: in one transaction, with every projection table locked (so requests
//!   wait, and nothing reads a table half rebuilt) and the log's head row locked (appends wait),
//!   empties the projections and applies every event of the log in order with the live path's own
//!   `project`, walking the chain as it reads; a chain that does not verify to the head rolls it
//!   all back.
//! - [`migrate_to_postgres`]: copies a sled vault's records verbatim into a PostgreSQL database in
//!   batches, one transaction each (records, projections, stream versions, head), so a move
//!   stopped anywhere resumes where it stopped. The database's log must be a prefix of the sled
//!   one, byte for byte; any other log there is refused before anything is written. The database
//!   is bound to the directory's `admin.token`: the PIN key derives from the token, so PINs issued
//!   before the move still verify once the PostgreSQL services are given the same token file.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use regent_store::{ChainWalker, EventStore, Head, StoreError, StoreOptions};
use serde::Serialize;
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgPool};

use crate::error::{MoveError, VaultError};
use crate::storage::postgres::{self, Failed, SCHEMA, describe, head_of};
use crate::storage::replay::{self, Replay, ReplayError};
use crate::storage::sled;

/// Records read from the database per query while walking its log.
const READ_BATCH: i64 = 1000;
/// How often a rebuild is tried when the database resolves a deadlock against it.
const REBUILD_ATTEMPTS: usize = 3;

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RebuildSummary {
    /// Records applied (the whole log).
    pub records: u64,
    /// Vaults in the rebuilt tables.
    pub vaults: u64,
    /// Machines registered and not removed.
    pub machines: u64,
    /// The head of the log the tables now follow.
    pub head: Head,
}

/// What a move did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MigrationSummary {
    /// Records of the database's log now (the whole sled log once the move is complete).
    pub records: u64,
    /// Records this run copied.
    pub copied: u64,
    /// Records the database held already when this run started (an interrupted move's).
    pub resumed_from: u64,
    pub vaults: u64,
    pub machines: u64,
    /// Records of the machines' logs this run copied (once the whole log is in).
    pub kept: u64,
    pub head: Head,
    /// Whether the database now holds the whole sled log.
    pub complete: bool,
}

/// How a move copies.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// Records per transaction.
    pub batch: usize,
    /// Stop after this many batches, as if the move had been killed there (tests only).
    #[doc(hidden)]
    pub stop_after_batches: Option<usize>,
}

impl Default for MigrateOptions {
    fn default() -> MigrateOptions {
        MigrateOptions { batch: 1000, stop_after_batches: None }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, MoveError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MoveError::Database { detail: format!("cannot start a runtime: {e}") })
}

fn database(error: VaultError) -> MoveError {
    MoveError::Database { detail: error.to_string() }
}

fn sql(what: &str) -> impl Fn(sqlx::Error) -> MoveError + '_ {
    move |e| MoveError::Database { detail: format!("cannot {what} the database: {}", describe(&e)) }
}

fn replay_failure(error: ReplayError, after: &str) -> MoveError {
    match error {
        ReplayError::Event { position, detail } => MoveError::BadEvent {
            position,
            detail: format!("record {position} of the log holds an event this build cannot read ({detail}); {after}"),
        },
        ReplayError::Database(Failed::Answer(e)) => MoveError::Database { detail: format!("{}; {after}", e.message) },
        ReplayError::Database(Failed::Conflict) => MoveError::Concurrent {
            detail: format!(
                "the database refused a record's rows as a conflict (another transaction's, or a row the log makes \
                 twice); {after}"
            ),
        },
    }
}

/// Rebuilds the projection tables of the vault's database from its log (see the module).
pub fn rebuild_projections(database_url: &str) -> Result<RebuildSummary, MoveError> {
    rebuild_projections_at(database_url, Utc::now())
}

/// [`rebuild_projections`], forgetting nonces as the live path would at `now`.
#[doc(hidden)]
pub fn rebuild_projections_at(database_url: &str, now: DateTime<Utc>) -> Result<RebuildSummary, MoveError> {
    runtime()?.block_on(async {
        let pool = postgres::open_pool(database_url, 1).await.map_err(database)?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(SCHEMA)
            .fetch_one(&pool)
            .await
            .map_err(sql("read"))?;
        if !exists {
            return Err(MoveError::Database {
                detail: format!(
                    "the database holds no vault (it has no schema {SCHEMA}); nothing was changed: name the database \
                     `regent vault serve --database-url` uses"
                ),
            });
        }
        // Migrated to this build's schema (nothing is created: the schema is there).
        let (pool, _) = postgres::PgStorage::prepare(database_url).await.map_err(database)?.into_pool(1).await;
        let mut last = None;
        for _ in 0..REBUILD_ATTEMPTS {
            match rebuild_once(&pool, now).await {
                Err(MoveError::Concurrent { detail }) => last = Some(detail),
                other => return other,
            }
        }
        Err(MoveError::Concurrent {
            detail: last.unwrap_or_else(|| "the database kept reporting conflicts; nothing was changed".into()),
        })
    })
}

async fn rebuild_once(pool: &PgPool, now: DateTime<Utc>) -> Result<RebuildSummary, MoveError> {
    const NOTHING: &str = "nothing was changed";
    let mut tx = pool.begin().await.map_err(sql("reach"))?;
    let conflict_or = |what: &'static str| {
        move |e: sqlx::Error| match Failed::from(e) {
            Failed::Conflict => MoveError::Concurrent {
                detail: format!("the database resolved a deadlock against the rebuild; {NOTHING}: run it again"),
            },
            Failed::Answer(e) => MoveError::Database { detail: format!("cannot {what}: {}; {NOTHING}", e.message) },
        }
    };
    // Every table a request reads first (vaults) is locked first: requests wait behind the rebuild
    // rather than read tables half made; then the head, which every append locks last.
    sqlx::query(
        "LOCK TABLE vaults, certificates, pins, machines, registrations, pin_checks, nonces, tree_leaves, tree_nodes \
         IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut *tx)
    .await
    .map_err(conflict_or("lock the projection tables"))?;
    let row = sqlx::query("SELECT position, hash FROM log_head FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_or("lock the log's head"))?;
    let head = head_of(&row)
        .map_err(|_| MoveError::Database { detail: format!("the log's head cannot be read; {NOTHING}") })?;
    sqlx::query(
        "TRUNCATE vaults, certificates, pins, machines, registrations, pin_checks, nonces, tree_leaves, tree_nodes",
    )
    .execute(&mut *tx)
    .await
    .map_err(conflict_or("empty the projection tables"))?;
    sqlx::query("UPDATE log_head SET tree_size = 0")
        .execute(&mut *tx)
        .await
        .map_err(conflict_or("empty the transparency log"))?;

    let mut walker = ChainWalker::new().with_anchor(head);
    let mut replay = Replay::new();
    let mut after: i64 = 0;
    loop {
        let rows = sqlx::query("SELECT position, record FROM log WHERE position > $1 ORDER BY position LIMIT $2")
            .bind(after)
            .bind(READ_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(conflict_or("read the log"))?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let position: i64 = row.try_get("position").map_err(conflict_or("read the log"))?;
            let stored: Vec<u8> = row.try_get("record").map_err(conflict_or("read the log"))?;
            let at = u64::try_from(position).unwrap_or(0);
            if let Err(failure) = walker.push(Some(at), &stored) {
                return Err(broken_database_chain(failure, NOTHING));
            }
            if at > head.position {
                let failure = regent_store::ChainFailure {
                    position: at,
                    problem: regent_store::Problem::PastHead { head: head.position, last: at },
                };
                return Err(broken_database_chain(failure, NOTHING));
            }
            let record = regent_store::decode_record(&stored).map_err(|e| MoveError::BadEvent {
                position: at,
                detail: format!("record {at} of the log cannot be read ({e}); {NOTHING}"),
            })?;
            replay.apply(&mut tx, &record).await.map_err(|e| replay_failure(e, NOTHING))?;
            after = position;
        }
    }
    let report = walker.finish(None);
    if let Some(failure) = report.failure {
        return Err(broken_database_chain(failure, NOTHING));
    }
    replay.finish(&mut tx, now).await.map_err(|e| replay_failure(e, NOTHING))?;
    let (vaults, machines) = replay::counts(&mut tx).await.map_err(conflict_or("count the vaults"))?;
    tx.commit().await.map_err(conflict_or("commit the rebuild"))?;
    Ok(RebuildSummary { records: report.records, vaults, machines, head })
}

fn broken_database_chain(failure: regent_store::ChainFailure, after: &str) -> MoveError {
    MoveError::ChainBroken {
        detail: format!(
            "the database's log does not verify at {failure}; {after}: the tables cannot be rebuilt from a log that \
             was altered (export it with `regent vault export` and keep the copy as evidence)"
        ),
        failure,
    }
}

/// Moves the sled vault in `data_dir` (its `log/` and `admin.token`) into the PostgreSQL database
/// at `database_url`, or resumes a move stopped before (see the module).
pub fn migrate_to_postgres(
    data_dir: &Path,
    database_url: &str,
    options: &MigrateOptions,
) -> Result<MigrationSummary, MoveError> {
    let not_vault = |detail: &str| MoveError::NotAVaultDir { path: data_dir.to_path_buf(), detail: detail.to_string() };
    if !data_dir.is_dir() {
        return Err(not_vault("it does not exist; name it with --data-dir, as `regent vault serve` was given it"));
    }
    let admin = crate::token::load_existing(data_dir)
        .map_err(|e| not_vault(&e.to_string()))?
        .ok_or_else(|| not_vault("it holds no admin.token"))?;
    let log_dir = data_dir.join(crate::storage::sled::LOG_DIR);
    if !log_dir.is_dir() {
        return Err(not_vault("it holds no log/ (a service on PostgreSQL keeps only admin.token there)"));
    }
    let options_store = StoreOptions { lock_wait: std::time::Duration::from_secs(2), cache_bytes: 64 * 1024 * 1024 };
    let store = EventStore::open(&log_dir, &options_store).map_err(|source| MoveError::Store {
        detail: match &source {
            StoreError::Locked { .. } => format!(
                "the vault's log in {} is held by another process, a `regent vault serve` on it most likely; stop \
                 it, then run the move again (nothing was written)",
                log_dir.display()
            ),
            other => format!("the vault's log cannot be opened: {other}; nothing was written"),
        },
        source,
    })?;
    if let Some(damage) = store.damage() {
        let detail = format!(
            "the vault's log in {} was found damaged ({damage}); nothing was written: restore it before moving it",
            log_dir.display()
        );
        let source = StoreError::Damaged { path: log_dir.clone(), damage: damage.clone() };
        return Err(MoveError::Store { detail, source });
    }
    let report = store.verify(None).map_err(|source| MoveError::Store {
        detail: format!("the vault's log cannot be read: {source}; nothing was written"),
        source,
    })?;
    if let Some(failure) = report.failure {
        return Err(MoveError::ChainBroken {
            detail: format!(
                "the vault's log in {} does not verify at {failure}; nothing was written: a log that was altered is not \
                 moved",
                log_dir.display()
            ),
            failure,
        });
    }
    let sled_head = store.head();
    runtime()?.block_on(async {
        let (pool, place) = postgres::PgStorage::prepare(database_url).await.map_err(database)?.into_pool(1).await;
        let db_head = {
            let row = sqlx::query("SELECT position, hash FROM log_head").fetch_one(&pool).await.map_err(sql("read"))?;
            head_of(&row)
                .map_err(|_| MoveError::Database { detail: "the database's log head cannot be read".into() })?
        };
        let mut conn = pool.acquire().await.map_err(sql("reach"))?;
        check_prefix(&mut conn, &store, db_head, sled_head, &log_dir).await?;
        drop(conn);
        let token_path = data_dir.join(crate::token::ADMIN_TOKEN_FILE);
        postgres::bind_token_in(&pool, admin.digest(), &place, &token_path).await.map_err(database)?;
        copy(&pool, &store, db_head, sled_head, options).await
    })
}

/// The database's log is a prefix of the sled log, byte for byte, or the move is refused.
async fn check_prefix(
    conn: &mut PgConnection,
    store: &EventStore,
    db_head: Head,
    sled_head: Head,
    log_dir: &Path,
) -> Result<(), MoveError> {
    let other = |why: String| MoveError::OtherLog {
        detail: format!(
            "the database holds another log: {why}; nothing was written: move the vault into an empty database, or \
             name the one an interrupted move of this vault used"
        ),
    };
    let sled_dir = log_dir.display();
    if db_head.position > sled_head.position {
        return Err(other(format!(
            "its log has {} records, the vault's log in {sled_dir} {} (a service on the database wrote since, or it \
             is another vault's)",
            db_head.position, sled_head.position
        )));
    }
    if db_head.position == 0 {
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM log) OR EXISTS (SELECT 1 FROM vaults) OR EXISTS (SELECT 1 FROM machines)",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("read"))?;
        if held {
            return Err(other("it holds records or vaults without a head".into()));
        }
        return Ok(());
    }
    let mut sled = store.raw_records(1);
    let mut after: i64 = 0;
    let mut last = None;
    loop {
        let rows = sqlx::query("SELECT position, record FROM log WHERE position > $1 ORDER BY position LIMIT $2")
            .bind(after)
            .bind(READ_BATCH)
            .fetch_all(&mut *conn)
            .await
            .map_err(sql("read"))?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let position: i64 = row.try_get("position").map_err(sql("read"))?;
            let stored: Vec<u8> = row.try_get("record").map_err(sql("read"))?;
            let at = u64::try_from(position).unwrap_or(0);
            if at > db_head.position {
                return Err(other(format!("its log goes on past its head, to record {at}")));
            }
            let ours = match sled.next() {
                Some(Ok((sled_at, bytes))) if sled_at == at => bytes,
                Some(Err(e)) => {
                    return Err(MoveError::Store {
                        detail: format!("the vault's log cannot be read: {e}; nothing was written"),
                        source: e,
                    });
                }
                _ => return Err(other(format!("its record {at} is not in the vault's log in {sled_dir}"))),
            };
            if ours[..] != stored[..] {
                return Err(other(format!("its record {at} differs from the one at {at} in {sled_dir}")));
            }
            last = Some(stored);
            after = position;
        }
    }
    let last_hash = last.and_then(|stored| regent_store::decode_record(&stored).ok()).map(|record| record.hash);
    if u64::try_from(after).unwrap_or(0) != db_head.position || last_hash != Some(db_head.hash) {
        return Err(other(format!("its log ends at record {after}, but its head names {db_head}")));
    }
    Ok(())
}

/// Copies the records after `from` up to `to` in batches, one transaction each.
async fn copy(
    pool: &PgPool,
    store: &EventStore,
    from: Head,
    to: Head,
    options: &MigrateOptions,
) -> Result<MigrationSummary, MoveError> {
    let stopped = |head: Head| {
        format!("records up to {} are in the database and the move resumes from there when run again", head.position)
    };
    let mut records = store.raw_records(from.position + 1);
    let mut head = from;
    let mut replay = Replay::new();
    let mut batches = 0;
    let batch = options.batch.max(1);
    let mut complete = from.position == to.position;
    while !complete {
        if options.stop_after_batches.is_some_and(|stop| batches >= stop) {
            break;
        }
        let mut tx = pool.begin().await.map_err(sql("reach"))?;
        let row = sqlx::query("SELECT position, hash FROM log_head FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .map_err(sql("lock the log's head in"))?;
        if head_of(&row).ok() != Some(head) {
            return Err(MoveError::Concurrent {
                detail: format!(
                    "something else wrote to the database's log during the move (a `regent vault serve` on it?); {}; \
                     stop it first",
                    stopped(head)
                ),
            });
        }
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        let mut taken = 0;
        while taken < batch {
            let Some(item) = records.next() else { break };
            let (position, stored) = item.map_err(|source| MoveError::Store {
                detail: format!("the vault's log cannot be read: {source}; {}", stopped(head)),
                source,
            })?;
            if position > to.position {
                break;
            }
            let record = regent_store::decode_record(&stored).map_err(|e| MoveError::BadEvent {
                position,
                detail: format!("record {position} of the vault's log cannot be read ({e}); {}", stopped(head)),
            })?;
            let int = |n: u64| {
                i64::try_from(n).map_err(|_| MoveError::BadEvent {
                    position,
                    detail: format!("record {position} names a number PostgreSQL cannot hold; {}", stopped(head)),
                })
            };
            sqlx::query("INSERT INTO log (position, event_id, stream, version, record) VALUES ($1, $2, $3, $4, $5)")
                .bind(int(position)?)
                .bind(record.event_id)
                .bind(&record.stream)
                .bind(int(record.version)?)
                .bind(&stored[..])
                .execute(&mut *tx)
                .await
                .map_err(|e| MoveError::Database {
                    detail: format!("cannot write record {position}: {}; {}", describe(&e), stopped(head)),
                })?;
            replay.apply(&mut tx, &record).await.map_err(|e| replay_failure(e, &stopped(head)))?;
            versions.insert(record.stream.clone(), record.version);
            head = Head { position, hash: record.hash };
            taken += 1;
        }
        for (stream, version) in &versions {
            sqlx::query(
                "INSERT INTO streams (stream, version) VALUES ($1, $2) \
                 ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version",
            )
            .bind(stream)
            .bind(i64::try_from(*version).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(sql("write"))?;
        }
        sqlx::query("UPDATE log_head SET position = $1, hash = $2")
            .bind(i64::try_from(head.position).unwrap_or(i64::MAX))
            .bind(&head.hash.0[..])
            .execute(&mut *tx)
            .await
            .map_err(sql("write"))?;
        tx.commit().await.map_err(sql("commit a batch to"))?;
        batches += 1;
        complete = head.position == to.position || taken == 0;
    }
    let mut conn = pool.acquire().await.map_err(sql("reach"))?;
    replay.finish(&mut conn, Utc::now()).await.map_err(|e| replay_failure(e, &stopped(head)))?;
    let (vaults, machines) = replay::counts(&mut conn).await.map_err(sql("read"))?;
    drop(conn);
    let kept = if head == to { copy_machine_records(pool, store).await? } else { 0 };
    Ok(MigrationSummary {
        records: head.position,
        copied: head.position - from.position,
        resumed_from: from.position,
        vaults,
        machines,
        kept,
        head,
        complete: head == to,
    })
}

/// Copies the records the vault keeps of each machine's log, once the log is in the database:
/// every machine's, up to the last one the log says is kept, walked as a chain on the way (a kept
/// copy that does not verify up to that head is refused, not moved). A run again after an
/// interruption copies only what is missing (the rows it wrote are the same bytes).
async fn copy_machine_records(pool: &PgPool, store: &EventStore) -> Result<u64, MoveError> {
    let mirror = store.side_tree(sled::MIRROR_TREE).map_err(|source| MoveError::Store {
        detail: format!("the machines' records cannot be opened: {source}; the log itself is in the database"),
        source,
    })?;
    let machines: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT vault, machine_id, mirrored_position, mirrored_hash FROM machines \
         WHERE mirrored_position IS NOT NULL ORDER BY vault, machine_id",
    )
    .fetch_all(pool)
    .await
    .map_err(sql("read"))?;
    let mut copied = 0;
    for (vault, machine_id, last, hash) in machines {
        let last = u64::try_from(last).unwrap_or(0);
        let broken = |why: String| MoveError::BadEvent {
            position: last,
            detail: format!(
                "the records kept of machine {machine_id} (vault {vault}) {why}; the vault's log is in the database, its \
                 machines' records are not all: restore the data directory and run the move again"
            ),
        };
        let range = sled::mirror_key(&vault, &machine_id, 1)..=sled::mirror_key(&vault, &machine_id, last);
        let mut walker = ChainWalker::new();
        let mut fleet = crate::fleet::FleetState::default();
        let mut rows = mirror.range(range);
        loop {
            let mut positions = Vec::new();
            let mut records = Vec::new();
            let mut times = Vec::new();
            for item in rows.by_ref().take(READ_BATCH as usize) {
                let (_, record) = item.map_err(|source| MoveError::Store {
                    detail: format!("the machines' records cannot be read: {source}"),
                    source,
                })?;
                walker.push(None, &record).map_err(|failure| broken(format!("do not verify ({failure})")))?;
                let at = regent_store::decode_record(&record).map_err(|e| broken(format!("cannot be read ({e})")))?;
                times.push(at.recorded_at);
                positions.push(i64::try_from(walker.head().position).unwrap_or(i64::MAX));
                records.push(record);
            }
            if positions.is_empty() {
                break;
            }
            fleet = fleet.fold(records.iter().map(Vec::as_slice)).map_err(&broken)?;
            let written = sqlx::query(
                "INSERT INTO machine_records (vault, machine_id, position, record, recorded_at) \
                 SELECT $1, $2, * FROM UNNEST($3::BIGINT[], $4::BYTEA[], $5::TIMESTAMPTZ[]) ON CONFLICT DO NOTHING",
            )
            .bind(&vault)
            .bind(&machine_id)
            .bind(&positions)
            .bind(&records)
            .bind(&times)
            .execute(pool)
            .await
            .map_err(sql("write"))?;
            copied += written.rows_affected();
        }
        if walker.head().position != last || walker.head().hash.to_hex() != hash {
            return Err(broken(format!("end at record {}, not at the kept head {last}", walker.head().position)));
        }
        let state = serde_json::to_string(&fleet).map_err(|e| broken(e.to_string()))?;
        sqlx::query(
            "INSERT INTO fleet_states (vault, machine_id, position, state) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (vault, machine_id) DO UPDATE SET position = EXCLUDED.position, state = EXCLUDED.state",
        )
        .bind(&vault)
        .bind(&machine_id)
        .bind(i64::try_from(fleet.position).unwrap_or(i64::MAX))
        .bind(state)
        .execute(pool)
        .await
        .map_err(sql("write"))?;
    }
    Ok(copied)
}
