//! The vault on PostgreSQL: several `vault serve` processes on one database, each answering any
//! request from the database alone (nothing cached that another process could change; a
//! certificate is immutable, but even that is read each time: one indexed row).
//!
//! A change is one transaction: load the scope's facts with row locks (the vault row shared, so a
//! download, which updates it, waits for registrations in flight and supersedes at once for every
//! process; a machine's row exclusive, so its PIN checks, log heads and removal run in turn across
//! processes; the vault's outstanding PINs exclusive, so a PIN is used once), decide (pure), write
//! the projections and append the events, commit, answer. Conflicts the locks leave to the
//! database (two processes inserting the same request id, nonce or vault at once: a unique
//! violation; a deadlock) roll the transaction back, and the decision runs again on fresher facts,
//! which then see the other's commit: the same request id sent to two processes makes one machine.
//!
//! The log: the same record bytes and chain as the sled store (`regent_store::encode_record`).
//! An append locks the one row of `log_head` last, just before commit, and holds it until commit:
//! positions are gapless and in commit order, so a reader following the log by position never
//! skips an event that commits later with a lower position (a sequence would allow exactly that).

use std::str::FromStr;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use regent_store::{BatchMeta, Digest32, Head, MAX_RECORD_BYTES, NewEvent};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use uuid::Uuid;

use super::{Decide, Storage, remembers_nonce};
use crate::api::ApiError;
use crate::error::VaultError;
use crate::events::{VaultEvent, stream_of};
use crate::protocol::{AnchorRefusal, MachineInfo, Registered, VaultInfo};
use crate::rules::{
    CertFacts, Facts, MachineFacts, NONCE_MEMORY, PIN_MEMORY, PinCheckFacts, Planned, RegistrationFacts, Scope,
    VaultFacts,
};
use crate::state::{AnchorHistory, HeldAnchor, IssuedCert, PinGuard, PinOutcome, PinRecord, RegistrationKey};

/// Every table of the vault lives in this schema (the connections' `search_path`), so that the
/// database may hold other applications' tables, and sqlx's migration table is the vault's own.
pub(crate) const SCHEMA: &str = "regent_vault";

/// How often a transaction is tried when the database reports a conflict it resolved by rolling
/// one transaction back.
const ATTEMPTS: usize = 8;

/// How long a request waits for a connection before it is answered 503: fail fast when the
/// database is down, rather than queue.
const ACQUIRE_TIMEOUT: StdDuration = StdDuration::from_secs(2);

/// The schema, embedded: applied at start under sqlx's advisory lock, so processes starting
/// together do not race; a database migrated by a newer build (a version this build does not
/// have) is refused.
fn migrator() -> Migrator {
    let migrations = vec![Migration::new(
        1,
        "log and projections".into(),
        MigrationType::Simple,
        include_str!("../../migrations/0001_log_and_projections.sql").into(),
        false,
    )];
    Migrator { migrations: migrations.into(), ignore_missing: false, locking: true, no_tx: false }
}

pub(crate) struct PgStorage {
    pool: PgPool,
    appended: IntCounter,
}

/// Why a transaction did not go through.
pub(crate) enum Failed {
    /// The database rolled it back for a conflict: try again.
    Conflict,
    /// Answer this.
    Answer(ApiError),
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Failed {
        if is_conflict(&error) { Failed::Conflict } else { Failed::Answer(unavailable(&error)) }
    }
}

/// Serialization failures, deadlocks and unique violations: a concurrent transaction won.
fn is_conflict(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01" | "23505")),
        _ => false,
    }
}

/// A database failure as the agent sees it: 503, retry.
pub(crate) fn unavailable(error: &sqlx::Error) -> ApiError {
    ApiError::unavailable(format!("the database: {}", describe(error)))
}

/// One line for a database error, without the URL or any password.
pub(crate) fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::Io(e) => format!("cannot reach it: {e}"),
        sqlx::Error::PoolTimedOut => "no connection to it within 2 seconds".to_string(),
        sqlx::Error::PoolClosed => "the connection pool is closed".to_string(),
        sqlx::Error::Tls(e) => format!("TLS: {e}"),
        sqlx::Error::Configuration(e) => format!("the URL: {e}"),
        other => other.to_string(),
    }
}

fn internal(detail: impl std::fmt::Display) -> Failed {
    Failed::Answer(ApiError::internal(format!("the database holds what this build cannot read: {detail}")))
}

impl PgStorage {
    /// Connects, creates the schema if it is missing (and allowed), applies the migrations, and
    /// binds the database to this admin token. Each failure is one line naming what to do.
    pub(crate) async fn connect(
        url: &str,
        admin_token_sha256: [u8; 32],
        appended: IntCounter,
    ) -> Result<PgStorage, VaultError> {
        let pool = open_pool(url, 32).await?;
        prepare_schema(&pool).await?;
        bind_token(&pool, admin_token_sha256).await?;
        Ok(PgStorage { pool, appended })
    }

    /// Forgets nonces older than the clock-skew window needs, now and then, for as long as the
    /// service runs (any process may: the deletes are idempotent).
    pub(crate) async fn prune_nonces(pool: PgPool) {
        let mut every = tokio::time::interval(StdDuration::from_secs(60));
        loop {
            every.tick().await;
            let cutoff = Utc::now() - NONCE_MEMORY;
            for table in ["nonces", "request_nonces"] {
                let sql = format!("DELETE FROM {table} WHERE seen_at < $1");
                if let Err(e) = sqlx::query(&sql).bind(cutoff).execute(&pool).await {
                    tracing::warn!(error = %describe(&e), "old nonces could not be pruned; retrying in a minute");
                }
            }
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn attempt<A: Send + 'static>(
        &self,
        scope: &Scope,
        now: DateTime<Utc>,
        decide: &Decide<A>,
    ) -> Result<Result<A, ApiError>, Failed> {
        let mut tx = self.pool.begin().await?;
        let facts = load(&mut tx, scope, now, true).await?;
        let decision = match decide(&facts) {
            Ok(decision) => decision,
            Err(refusal) => {
                if remembers_nonce(&refusal) {
                    remember_request_nonce(&mut tx, scope, now, false).await?;
                }
                tx.commit().await?;
                return Ok(Err(refusal));
            }
        };
        if decision.events.is_empty() {
            remember_request_nonce(&mut tx, scope, now, true).await?;
            tx.commit().await?;
            return Ok(decision.outcome);
        }
        let mut events = Vec::with_capacity(decision.events.len());
        for Planned { event, id } in &decision.events {
            project(&mut tx, &scope.vault, event).await?;
            events.push(event.to_new_event(*id).map_err(internal)?);
        }
        let meta = BatchMeta { recorded_at: now, actor: decision.actor.clone(), correlation_id: Uuid::now_v7() };
        append(&mut tx, &stream_of(&scope.vault), decision.new_stream, &meta, &events).await?;
        tx.commit().await?;
        self.appended.inc_by(events.len() as u64);
        Ok(decision.outcome)
    }
}

/// A pool of up to `connections` connections to `url`, in the vault's schema.
pub(crate) async fn open_pool(url: &str, connections: u32) -> Result<PgPool, VaultError> {
    let bad = |detail: String| VaultError::Database { detail };
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| {
            bad(format!("the database URL is malformed ({}); it reads postgres://USER@HOST:PORT/DB", describe(&e)))
        })?
        .options([("search_path", SCHEMA)]);
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| bad(format!("cannot connect to the database: {}", describe(&e))))
}

pub(crate) async fn prepare_schema(pool: &PgPool) -> Result<(), VaultError> {
    let bad = |detail: String| VaultError::Database { detail };
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(SCHEMA)
        .fetch_one(pool)
        .await
        .map_err(|e| bad(format!("cannot read the database: {}", describe(&e))))?;
    if !exists {
        sqlx::query(&format!("CREATE SCHEMA {SCHEMA}")).execute(pool).await.map_err(|e| {
            bad(format!(
                "the database has no schema {SCHEMA} and cannot create it ({}); create it once as its owner \
                 (CREATE SCHEMA {SCHEMA} AUTHORIZATION <this role>) or connect as a role that may",
                describe(&e)
            ))
        })?;
    } else {
        // Tables in the schema but no migration record: another application's, not ours.
        let foreign: Option<String> = sqlx::query_scalar(
            "SELECT string_agg(tablename, ', ' ORDER BY tablename) FROM pg_tables WHERE schemaname = $1 \
             AND NOT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = '_sqlx_migrations')",
        )
        .bind(SCHEMA)
        .fetch_one(pool)
        .await
        .map_err(|e| bad(format!("cannot read the database: {}", describe(&e))))?;
        if let Some(tables) = foreign {
            return Err(bad(format!(
                "the database's schema {SCHEMA} holds tables regent did not create ({tables}); use another database"
            )));
        }
    }
    migrator().run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => bad(format!(
            "the database was migrated by a newer regent (schema version {version}, this build knows 1); run that \
             build or a newer one"
        )),
        sqlx::migrate::MigrateError::VersionMismatch(version) => bad(format!(
            "the database's schema version {version} differs from this build's; it was written by another build"
        )),
        sqlx::migrate::MigrateError::Execute(e) => bad(format!("cannot create the vault's tables: {}", describe(&e))),
        other => bad(format!("cannot migrate the database: {other}")),
    })
}

/// The database serves one admin token: the first process records its digest, every later one must
/// have the same token (the PIN key derives from it: PINs must verify in every process).
pub(crate) async fn bind_token(pool: &PgPool, digest: [u8; 32]) -> Result<(), VaultError> {
    let bad = |detail: String| VaultError::Database { detail };
    sqlx::query("INSERT INTO service (admin_token_sha256) VALUES ($1) ON CONFLICT (only_row) DO NOTHING")
        .bind(&digest[..])
        .execute(pool)
        .await
        .map_err(|e| bad(format!("cannot write the database: {}", describe(&e))))?;
    let held: Vec<u8> = sqlx::query_scalar("SELECT admin_token_sha256 FROM service")
        .fetch_one(pool)
        .await
        .map_err(|e| bad(format!("cannot read the database: {}", describe(&e))))?;
    if held != digest {
        return Err(bad(
            "the database serves another admin token: give every vault process the same admin.token file \
             (--token-file) as the first one"
                .to_string(),
        ));
    }
    Ok(())
}

impl Storage for PgStorage {
    async fn read(&self, scope: &Scope) -> Result<Facts, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        load(&mut conn, scope, Utc::now(), false).await.map_err(|e| match e {
            Failed::Conflict => ApiError::unavailable("the database was busy; retry"),
            Failed::Answer(e) => e,
        })
    }

    async fn transact<A: Send + 'static>(
        &self,
        scope: Scope,
        now: DateTime<Utc>,
        decide: Decide<A>,
    ) -> Result<A, ApiError> {
        for _ in 0..ATTEMPTS {
            match self.attempt(&scope, now, &decide).await {
                Ok(outcome) => return outcome,
                Err(Failed::Conflict) => continue,
                Err(Failed::Answer(e)) => return Err(e),
            }
        }
        Err(ApiError::unavailable("the database kept reporting conflicts with other vault processes; retry"))
    }

    async fn vault_info(&self, vault: &str) -> Result<Option<VaultInfo>, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        let facts = match load_vault(&mut conn, vault, None).await {
            Ok(facts) => facts,
            Err(Failed::Answer(e)) => return Err(e),
            Err(Failed::Conflict) => return Err(ApiError::unavailable("the database was busy; retry")),
        };
        let Some(facts) = facts else {
            return Ok(None);
        };
        let machines: i64 = sqlx::query_scalar("SELECT count(*) FROM machines WHERE vault = $1 AND removed_at IS NULL")
            .bind(vault)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Some(crate::rules::vault_info(&facts, usize::try_from(machines).unwrap_or(usize::MAX))))
    }

    async fn machines(&self, vault: &str) -> Result<Option<Vec<MachineInfo>>, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vaults WHERE name = $1)")
            .bind(vault)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| unavailable(&e))?;
        if !exists {
            return Ok(None);
        }
        let rows = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE vault = $1 AND removed_at IS NULL \
             ORDER BY registered_at, machine_id"
        ))
        .bind(vault)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| unavailable(&e))?;
        let mut machines = Vec::with_capacity(rows.len());
        for row in &rows {
            let facts = machine_row(row).map_err(|e| match e {
                Failed::Answer(e) => e,
                Failed::Conflict => ApiError::unavailable("the database was busy; retry"),
            })?;
            let mut info = facts.info;
            info.log_head = facts.anchor.anchor(&info.machine_id);
            machines.push(info);
        }
        Ok(Some(machines))
    }

    async fn head(&self) -> Result<Head, ApiError> {
        let row = sqlx::query("SELECT position, hash FROM log_head")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unavailable(&e))?;
        head_of(&row).map_err(|_| ApiError::internal("the log's head cannot be read"))
    }

    async fn export(&self) -> Result<super::export::LogExport, ApiError> {
        super::export::from_postgres(&self.pool).await
    }

    async fn ready(&self) -> Result<(), String> {
        let mut conn = self.pool.acquire().await.map_err(|e| format!("the database: {}", describe(&e)))?;
        conn.ping().await.map_err(|e| format!("the database: {}", describe(&e)))?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| format!("the database's schema: {}", describe(&e)))?;
        match applied {
            Some(1) => Ok(()),
            other => Err(format!("the database's schema is at version {other:?}, this build needs 1")),
        }
    }
}

pub(crate) fn head_of(row: &PgRow) -> Result<Head, Failed> {
    let position: i64 = row.try_get("position")?;
    let hash: Vec<u8> = row.try_get("hash")?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| internal("a hash that is not 32 bytes"))?;
    Ok(Head { position: u64::try_from(position).map_err(internal)?, hash: Digest32(hash) })
}

const MACHINE_COLUMNS: &str = "machine_id, machine_name, thumbprint, registered_at, removed_at, wrong_pins, \
    locked_until, anchor_position, anchor_hash, anchored_at, refusals, last_refusal, last_refused_records";

fn machine_row(row: &PgRow) -> Result<MachineFacts, Failed> {
    let machine_id: String = row.try_get("machine_id")?;
    let anchor_position: Option<i64> = row.try_get("anchor_position")?;
    let anchor_hash: Option<String> = row.try_get("anchor_hash")?;
    let anchored_at: Option<DateTime<Utc>> = row.try_get("anchored_at")?;
    let head = match (anchor_position, anchor_hash, anchored_at) {
        (Some(position), Some(hash), Some(anchored_at)) => {
            Some(HeldAnchor { position: u64::try_from(position).map_err(internal)?, hash, anchored_at })
        }
        _ => None,
    };
    let last_refusal: Option<String> = row.try_get("last_refusal")?;
    let last_refusal = match last_refusal {
        Some(text) => Some(serde_json::from_str::<AnchorRefusal>(&text).map_err(internal)?),
        None => None,
    };
    let refusals: i64 = row.try_get("refusals")?;
    let wrong: i32 = row.try_get("wrong_pins")?;
    Ok(MachineFacts {
        info: MachineInfo {
            machine_id,
            machine_name: row.try_get("machine_name")?,
            registered_at: row.try_get("registered_at")?,
            thumbprint: row.try_get("thumbprint")?,
            log_head: None,
        },
        removed_at: row.try_get("removed_at")?,
        guard: PinGuard { wrong_in_row: u32::try_from(wrong).unwrap_or(0), locked_until: row.try_get("locked_until")? },
        anchor: AnchorHistory {
            head,
            refusals: u64::try_from(refusals).unwrap_or(0),
            last_refusal,
            last_refused_records: row.try_get("last_refused_records")?,
        },
    })
}

async fn load_vault(conn: &mut PgConnection, vault: &str, lock: Option<&str>) -> Result<Option<VaultFacts>, Failed> {
    let sql = format!("SELECT identity, created_at, newest FROM vaults WHERE name = $1 {}", lock.unwrap_or(""));
    let Some(row) = sqlx::query(&sql).bind(vault).fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let identity: String = row.try_get("identity")?;
    Ok(Some(VaultFacts {
        identity: serde_json::from_str(&identity).map_err(internal)?,
        created_at: row.try_get("created_at")?,
        newest: row.try_get("newest")?,
    }))
}

/// The facts of a scope; with `lock`, the rows a decision depends on are locked until commit.
async fn load(conn: &mut PgConnection, scope: &Scope, now: DateTime<Utc>, lock: bool) -> Result<Facts, Failed> {
    let vault = scope.vault.as_str();
    // A change to the vault itself (a download, a PIN issued) locks its row; every other change
    // shares it, so a download waits for them and they for it.
    let only_vault = scope.thumbprint.is_none() && scope.machine.is_none() && scope.registration.is_none();
    let vault_lock = match (lock, only_vault) {
        (false, _) => None,
        (true, true) => Some("FOR UPDATE"),
        (true, false) => Some("FOR SHARE"),
    };
    let mut facts = Facts { vault: load_vault(conn, vault, vault_lock).await?, ..Facts::default() };
    if let Some(thumbprint) = &scope.thumbprint {
        let row = sqlx::query("SELECT vault, der, not_before, not_after FROM certificates WHERE thumbprint = $1")
            .bind(thumbprint)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            let der: Vec<u8> = row.try_get("der")?;
            facts.cert = Some(CertFacts {
                vault: row.try_get("vault")?,
                cert: IssuedCert {
                    der: der.into(),
                    not_before: row.try_get("not_before")?,
                    not_after: row.try_get("not_after")?,
                },
            });
        }
    }
    if facts.vault.is_none() {
        return Ok(facts);
    }
    if let Some(machine_id) = &scope.machine {
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE vault = $1 AND machine_id = $2 {}",
            if lock { "FOR UPDATE" } else { "" }
        );
        let row = sqlx::query(&sql).bind(vault).bind(machine_id).fetch_optional(&mut *conn).await?;
        facts.machine = match row {
            Some(row) => Some(machine_row(&row)?),
            None => None,
        };
    }
    if let Some(request_id) = &scope.registration {
        let row = sqlx::query(
            "SELECT r.machine_id, r.thumbprint, r.machine_name, r.registered_at, m.removed_at IS NOT NULL AS removed \
             FROM registrations r LEFT JOIN machines m ON m.vault = r.vault AND m.machine_id = r.machine_id \
             WHERE r.vault = $1 AND r.request_id = $2",
        )
        .bind(vault)
        .bind(request_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            facts.registration = Some(RegistrationFacts {
                key: RegistrationKey {
                    thumbprint: row.try_get("thumbprint")?,
                    machine_name: row.try_get("machine_name")?,
                },
                answer: Registered {
                    machine_id: row.try_get("machine_id")?,
                    vault: vault.to_string(),
                    registered_at: row.try_get("registered_at")?,
                },
                removed: row.try_get::<Option<bool>, _>("removed")?.unwrap_or(false),
            });
        }
    }
    if let Some(request_id) = &scope.pin_check {
        let row = sqlx::query(
            "SELECT machine_id, pin_digest, valid_issued_at FROM pin_checks WHERE vault = $1 AND request_id = $2",
        )
        .bind(vault)
        .bind(request_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            let digest: Vec<u8> = row.try_get("pin_digest")?;
            let valid: Option<DateTime<Utc>> = row.try_get("valid_issued_at")?;
            facts.pin_check = Some(PinCheckFacts {
                machine_id: row.try_get("machine_id")?,
                // A digest this service wrote is 32 bytes; one that is not can never match a retry.
                pin_digest: digest.try_into().unwrap_or([0u8; 32]),
                outcome: valid.map_or(PinOutcome::Wrong, PinOutcome::Valid),
            });
        }
    }
    if let Some(nonce) = &scope.nonce {
        facts.nonce_seen = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM nonces WHERE vault = $1 AND nonce = $2 AND seen_at >= $3) \
             OR EXISTS (SELECT 1 FROM request_nonces WHERE vault = $1 AND nonce = $2 AND seen_at >= $3)",
        )
        .bind(vault)
        .bind(nonce)
        .bind(now - NONCE_MEMORY)
        .fetch_one(&mut *conn)
        .await?;
    }
    if scope.pins {
        let sql = format!(
            "SELECT pin_id, digest, issued_at, expires_at FROM pins WHERE vault = $1 AND expires_at >= $2 \
             ORDER BY pin_id {}",
            if lock { "FOR UPDATE" } else { "" }
        );
        let rows = sqlx::query(&sql).bind(vault).bind(now - PIN_MEMORY).fetch_all(&mut *conn).await?;
        for row in rows {
            let digest: Vec<u8> = row.try_get("digest")?;
            let digest: [u8; 32] = digest.try_into().map_err(|_| internal("a PIN digest that is not 32 bytes"))?;
            facts.pins.push((
                row.try_get("pin_id")?,
                PinRecord { digest, issued_at: row.try_get("issued_at")?, expires_at: row.try_get("expires_at")? },
            ));
        }
    }
    Ok(facts)
}

/// Remembers the nonce of a request that recorded nothing. `strict`: a concurrent request with the
/// same nonce must fail this one (it was answered: a replay racing its original).
async fn remember_request_nonce(
    conn: &mut PgConnection,
    scope: &Scope,
    now: DateTime<Utc>,
    strict: bool,
) -> Result<(), Failed> {
    let Some(nonce) = &scope.nonce else {
        return Ok(());
    };
    let sql = if strict {
        "INSERT INTO request_nonces (vault, nonce, seen_at) VALUES ($1, $2, $3)"
    } else {
        "INSERT INTO request_nonces (vault, nonce, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    };
    sqlx::query(sql).bind(&scope.vault).bind(nonce).bind(now).execute(&mut *conn).await?;
    Ok(())
}

async fn remember_nonce(conn: &mut PgConnection, vault: &str, nonce: &str, at: DateTime<Utc>) -> Result<(), Failed> {
    sqlx::query("INSERT INTO nonces (vault, nonce, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(vault)
        .bind(nonce)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes one event into the projection tables: what [`crate::state::ServiceState::apply`] does in
/// memory, as rows. Used live and by the rebuild, so both give the same tables.
pub(crate) async fn project(conn: &mut PgConnection, vault: &str, event: &VaultEvent) -> Result<(), Failed> {
    use base64::Engine as _;
    match event {
        VaultEvent::VaultCreated(e) => {
            sqlx::query("INSERT INTO vaults (name, identity, created_at) VALUES ($1, $2, $3)")
                .bind(vault)
                .bind(serde_json::to_string(&e.identity).map_err(internal)?)
                .bind(e.created_at)
                .execute(&mut *conn)
                .await?;
        }
        VaultEvent::CredentialsIssued(e) => {
            let der = base64::engine::general_purpose::STANDARD
                .decode(&e.certificate)
                .map_err(|_| internal(format!("the certificate {} is not base64", e.thumbprint)))?;
            sqlx::query(
                "INSERT INTO certificates (thumbprint, vault, der, not_before, not_after) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&e.thumbprint)
            .bind(vault)
            .bind(der)
            .bind(e.not_before)
            .bind(e.not_after)
            .execute(&mut *conn)
            .await?;
            sqlx::query("UPDATE vaults SET newest = $2 WHERE name = $1")
                .bind(vault)
                .bind(&e.thumbprint)
                .execute(&mut *conn)
                .await?;
        }
        VaultEvent::PinIssued(e) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&e.digest, &mut digest)
                .map_err(|_| internal(format!("PIN {} has a malformed digest", e.pin_id)))?;
            sqlx::query("INSERT INTO pins (pin_id, vault, digest, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(e.pin_id)
                .bind(vault)
                .bind(&digest[..])
                .bind(e.issued_at)
                .bind(e.expires_at)
                .execute(&mut *conn)
                .await?;
        }
        VaultEvent::PinUsed(e) => {
            let issued: Option<DateTime<Utc>> =
                sqlx::query_scalar("DELETE FROM pins WHERE pin_id = $1 RETURNING issued_at")
                    .bind(e.pin_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            // A good PIN ends a run of wrong ones.
            sqlx::query("UPDATE machines SET wrong_pins = 0 WHERE vault = $1 AND machine_id = $2")
                .bind(vault)
                .bind(&e.machine_id)
                .execute(&mut *conn)
                .await?;
            if let Some(check) = &e.check {
                let issued_at = e.issued_at.or(issued).unwrap_or(e.used_at);
                record_check(conn, vault, &e.machine_id, check, Some(issued_at)).await?;
                remember_nonce(conn, vault, &check.nonce, e.used_at).await?;
            }
        }
        VaultEvent::PinsRevoked(e) => {
            sqlx::query("DELETE FROM pins WHERE pin_id = ANY($1)").bind(&e.pin_ids).execute(&mut *conn).await?;
        }
        VaultEvent::PinCheckFailed(e) => {
            // The failure that locks starts a new run once the lock ends.
            sqlx::query(
                "UPDATE machines SET \
                 wrong_pins = CASE WHEN $3::timestamptz IS NULL THEN wrong_pins + 1 ELSE 0 END, \
                 locked_until = CASE WHEN $3::timestamptz IS NULL THEN locked_until ELSE GREATEST(locked_until, $3) END \
                 WHERE vault = $1 AND machine_id = $2",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(e.locked_until)
            .execute(&mut *conn)
            .await?;
            record_check(conn, vault, &e.machine_id, &e.check, None).await?;
            remember_nonce(conn, vault, &e.check.nonce, e.failed_at).await?;
        }
        VaultEvent::MachineRegistered(e) => {
            sqlx::query(
                "INSERT INTO machines (vault, machine_id, machine_name, thumbprint, registered_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(&e.machine_name)
            .bind(&e.thumbprint)
            .bind(e.registered_at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO registrations (vault, request_id, machine_id, thumbprint, machine_name, registered_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(vault)
            .bind(&e.request_id)
            .bind(&e.machine_id)
            .bind(&e.thumbprint)
            .bind(&e.machine_name)
            .bind(e.registered_at)
            .execute(&mut *conn)
            .await?;
            remember_nonce(conn, vault, &e.nonce, e.registered_at).await?;
        }
        VaultEvent::MachineRemoved(e) => {
            sqlx::query(
                "UPDATE machines SET removed_at = $3 WHERE vault = $1 AND machine_id = $2 AND removed_at IS NULL",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(e.removed_at)
            .execute(&mut *conn)
            .await?;
            if let Some(unregistration) = &e.unregistration {
                remember_nonce(conn, vault, &unregistration.nonce, e.removed_at).await?;
            }
        }
        VaultEvent::LogHeadAnchored(e) => {
            sqlx::query(
                "UPDATE machines SET anchor_position = $3, anchor_hash = $4, anchored_at = $5 \
                 WHERE vault = $1 AND machine_id = $2",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(i64::try_from(e.position).map_err(internal)?)
            .bind(&e.hash)
            .bind(e.anchored_at)
            .execute(&mut *conn)
            .await?;
            remember_nonce(conn, vault, &e.nonce, e.anchored_at).await?;
        }
        VaultEvent::LogHeadRefused(e) => {
            let refusal = AnchorRefusal {
                error: e.error.clone(),
                position: e.position,
                hash: e.hash.clone(),
                refused_at: e.refused_at,
            };
            sqlx::query(
                "UPDATE machines SET refusals = refusals + 1, last_refusal = $3, last_refused_records = $4 \
                 WHERE vault = $1 AND machine_id = $2",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(serde_json::to_string(&refusal).map_err(internal)?)
            .bind(&e.records_sha256)
            .execute(&mut *conn)
            .await?;
            remember_nonce(conn, vault, &e.nonce, e.refused_at).await?;
        }
    }
    Ok(())
}

async fn record_check(
    conn: &mut PgConnection,
    vault: &str,
    machine_id: &str,
    check: &crate::events::PinCheckRecord,
    valid_issued_at: Option<DateTime<Utc>>,
) -> Result<(), Failed> {
    let mut digest = [0u8; 32];
    // A digest this service wrote is 64 hex digits; one that is not can never match a retry.
    if hex::decode_to_slice(&check.pin_digest, &mut digest).is_err() {
        digest = [0u8; 32];
    }
    sqlx::query(
        "INSERT INTO pin_checks (vault, request_id, machine_id, pin_digest, valid_issued_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (vault, request_id) DO UPDATE SET machine_id = EXCLUDED.machine_id, \
         pin_digest = EXCLUDED.pin_digest, valid_issued_at = EXCLUDED.valid_issued_at",
    )
    .bind(vault)
    .bind(&check.request_id)
    .bind(machine_id)
    .bind(&digest[..])
    .bind(valid_issued_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends events to a stream: the head row locked last (held to commit), each record written as
/// the sled store writes it, chained to the one before.
async fn append(
    conn: &mut PgConnection,
    stream: &str,
    new_stream: bool,
    meta: &BatchMeta,
    events: &[NewEvent],
) -> Result<Head, Failed> {
    let version: i64 = if new_stream {
        sqlx::query_scalar("INSERT INTO streams (stream, version) VALUES ($1, 0) RETURNING version")
            .bind(stream)
            .fetch_one(&mut *conn)
            .await?
    } else {
        sqlx::query_scalar(
            "INSERT INTO streams (stream, version) VALUES ($1, 0) \
             ON CONFLICT (stream) DO UPDATE SET version = streams.version RETURNING version",
        )
        .bind(stream)
        .fetch_one(&mut *conn)
        .await?
    };
    let row = sqlx::query("SELECT position, hash FROM log_head FOR UPDATE").fetch_one(&mut *conn).await?;
    let mut head = head_of(&row)?;
    let mut version = u64::try_from(version).map_err(internal)?;
    for event in events {
        let position = head.position + 1;
        version += 1;
        let (stored, hash) = regent_store::encode_record(position, stream, version, meta, event, &head.hash)
            .map_err(|e| internal(format!("event {} cannot be written: {e}", event.event_id)))?;
        if stored.len() > MAX_RECORD_BYTES {
            return Err(internal(format!("event {} is {} bytes written out", event.event_id, stored.len())));
        }
        sqlx::query("INSERT INTO log (position, event_id, stream, version, record) VALUES ($1, $2, $3, $4, $5)")
            .bind(i64::try_from(position).map_err(internal)?)
            .bind(event.event_id)
            .bind(stream)
            .bind(i64::try_from(version).map_err(internal)?)
            .bind(stored)
            .execute(&mut *conn)
            .await?;
        head = Head { position, hash };
    }
    sqlx::query("UPDATE log_head SET position = $1, hash = $2")
        .bind(i64::try_from(head.position).map_err(internal)?)
        .bind(&head.hash.0[..])
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE streams SET version = $2 WHERE stream = $1")
        .bind(stream)
        .bind(i64::try_from(version).map_err(internal)?)
        .execute(&mut *conn)
        .await?;
    Ok(head)
}
