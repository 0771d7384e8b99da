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

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use regent_store::{BatchMeta, Digest32, Head, MAX_RECORD_BYTES, NewEvent};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Decide, FleetEntry, Storage, remembers_nonce};
use crate::api::ApiError;
use crate::audit::{AuditScan, KeptRecord};
use crate::error::{DatabaseProblem, VaultError};
use crate::events::{VaultEvent, stream_of};
use crate::fleet::{Cursor, FleetState};
use crate::protocol::{AnchorRefusal, MachineInfo, Registered, VaultInfo};
use crate::rules::{
    CertFacts, Decision, Facts, MachineFacts, Mirror, NONCE_MEMORY, PIN_MEMORY, PinCheckFacts, Planned,
    RegistrationFacts, Scope, VaultFacts,
};
use crate::state::{
    AnchorHistory, HeldAnchor, IssuedCert, MirroredHead, PinGuard, PinOutcome, PinRecord, RegistrationKey,
};
use crate::transparency::Fetched;
use regent_protocol::transparency::Leaf;

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
    let migration = |version, name: &'static str, sql: &'static str| {
        Migration::new(version, name.into(), MigrationType::Simple, sql.into(), false)
    };
    let migrations = vec![
        migration(1, "log and projections", include_str!("../../migrations/0001_log_and_projections.sql")),
        migration(2, "machine logs", include_str!("../../migrations/0002_machine_logs.sql")),
        migration(3, "transparency log", include_str!("../../migrations/0003_transparency_log.sql")),
    ];
    Migrator { migrations: migrations.into(), ignore_missing: false, locking: true, no_tx: false }
}

/// The schema version this build writes: its last migration's.
pub(crate) const SCHEMA_VERSION: i64 = 3;

pub(crate) struct PgStorage {
    pool: PgPool,
    appended: IntCounter,
    /// Changes go to the committers, which decide them in batches, one transaction (one commit,
    /// one WAL flush) per batch; `None` when group commit is off (each change its own transaction).
    jobs: Option<mpsc::UnboundedSender<Job>>,
}

/// How many batches may be in the database at once: while one waits for its commit (holding the
/// log's head), the next decides and writes its projections.
const COMMITTERS: usize = 2;

/// The most changes decided in one transaction.
const MAX_BATCH: usize = 256;

type Answer = Box<dyn Any + Send>;

/// One change for a committer: its decision with the answer's type erased.
struct Job {
    scope: Scope,
    now: DateTime<Utc>,
    decide: Decide<Answer>,
    reply: oneshot::Sender<Result<Answer, ApiError>>,
}

/// Why a transaction did not go through.
pub(crate) enum Failed {
    /// The database rolled it back for a conflict: try again.
    Conflict,
    /// Answer this.
    Answer(ApiError),
}

impl From<Failed> for ApiError {
    /// Outside a transaction to retry, a conflict is only a busy database.
    fn from(failed: Failed) -> ApiError {
        match failed {
            Failed::Answer(e) => e,
            Failed::Conflict => ApiError::unavailable("the database was busy; retry"),
        }
    }
}

/// Whether the database holds `vault`: a read of its pages answers `None` without it.
async fn vault_exists(conn: &mut PgConnection, vault: &str) -> Result<bool, ApiError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vaults WHERE name = $1)")
        .bind(vault)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| unavailable(&e))
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
    let text = match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::Io(e) => format!("cannot reach it: {e}"),
        sqlx::Error::PoolTimedOut => "no connection to it within 2 seconds".to_string(),
        sqlx::Error::PoolClosed => "the connection pool is closed".to_string(),
        sqlx::Error::Tls(e) => format!("TLS: {e}"),
        sqlx::Error::Configuration(e) => format!("its settings: {e}"),
        other => other.to_string(),
    };
    one_line(&text)
}

/// Runs of whitespace (a server's message may hold line breaks) as one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

fn internal(detail: impl std::fmt::Display) -> Failed {
    Failed::Answer(ApiError::internal(format!("the database holds what this build cannot read: {detail}")))
}

/// A database the vault's schema is ready in (created if it was missing, migrated), on the one
/// connection start-up used, not yet bound to an admin token.
pub(crate) struct Prepared {
    conn: PgConnection,
    options: PgConnectOptions,
    place: String,
}

impl PgStorage {
    /// Reads the URL, connects, creates the schema if it is missing (and allowed) and migrates it.
    /// One connection of its own, not the pool's: the pool retries a refused connection until its
    /// timeout and then says only that it timed out. Each failure is one line naming what to do.
    pub(crate) async fn prepare(url: &str) -> Result<Prepared, VaultError> {
        let options = connect_options(url)?;
        let place = place(&options);
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(connect_failure(&place, &e)),
            Err(_) => {
                return Err(VaultError::Database {
                    problem: DatabaseProblem::Unreachable,
                    detail: format!(
                        "cannot connect to the database at {place}: no answer within {} seconds; check the host and \
                         port in the URL, and that this machine may reach them",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                });
            }
        };
        prepare_schema(&mut conn, options.get_username(), &place).await?;
        Ok(Prepared { conn, options, place })
    }

    /// Forgets nonces older than the clock-skew window needs, now and then, for as long as the
    /// service runs (any process may: the deletes are idempotent).
    pub(crate) async fn prune_nonces(pool: PgPool, period: StdDuration) {
        let mut every = tokio::time::interval(period);
        while !pool.is_closed() {
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

    /// Keeps the pool's gauges current (`GET /metrics`), every second while the service runs.
    pub(crate) async fn report_pool(pool: PgPool, gauges: prometheus::IntGaugeVec) {
        let mut every = tokio::time::interval(StdDuration::from_secs(1));
        while !pool.is_closed() {
            every.tick().await;
            let (size, idle) = (i64::from(pool.size()), i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
            gauges.with_label_values(&["in_use"]).set(size - idle);
            gauges.with_label_values(&["idle"]).set(idle);
            gauges.with_label_values(&["max"]).set(i64::from(pool.options().get_max_connections()));
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A change in a transaction of its own, tried again while the database reports conflicts.
async fn alone<A: Send + 'static>(
    pool: &PgPool,
    appended: &IntCounter,
    scope: &Scope,
    now: DateTime<Utc>,
    decide: &Decide<A>,
) -> Result<A, ApiError> {
    for _ in 0..ATTEMPTS {
        match attempt(pool, appended, scope, now, decide).await {
            Ok(outcome) => return outcome,
            Err(Failed::Conflict) => continue,
            Err(Failed::Answer(e)) => return Err(e),
        }
    }
    Err(ApiError::unavailable("the database kept reporting conflicts with other vault processes; retry"))
}

async fn attempt<A: Send + 'static>(
    pool: &PgPool,
    appended: &IntCounter,
    scope: &Scope,
    now: DateTime<Utc>,
    decide: &Decide<A>,
) -> Result<Result<A, ApiError>, Failed> {
    let mut tx = pool.begin().await?;
    let staged = decide_in(&mut tx, scope, now, decide).await?;
    let (outcome, written) = match staged {
        Decided::Nothing(outcome) => (outcome, 0),
        Decided::Events { vault, new_stream, meta, events, outcome } => {
            append(&mut tx, &stream_of(&vault), new_stream, &meta, &events).await?;
            (outcome, events.len())
        }
    };
    tx.commit().await?;
    appended.inc_by(written as u64);
    Ok(outcome)
}

/// What a decision wrote in its transaction so far.
enum Decided<A> {
    /// Nothing to append (a refusal, an answer given again): its nonce is remembered.
    Nothing(Result<A, ApiError>),
    /// Projections written; these events are to be appended.
    Events { vault: String, new_stream: bool, meta: BatchMeta, events: Vec<NewEvent>, outcome: Result<A, ApiError> },
}

/// Loads the facts, decides, remembers the nonce or writes the projections: everything of a
/// change but its append.
async fn decide_in<A>(
    conn: &mut PgConnection,
    scope: &Scope,
    now: DateTime<Utc>,
    decide: &Decide<A>,
) -> Result<Decided<A>, Failed> {
    let facts = load(conn, scope, now, true).await?;
    let decision = match decide(&facts) {
        Ok(decision) => decision,
        Err(refusal) => {
            if remembers_nonce(&refusal) {
                remember_request_nonce(conn, scope, now, false).await?;
            }
            return Ok(Decided::Nothing(Err(refusal)));
        }
    };
    if decision.events.is_empty() {
        remember_request_nonce(conn, scope, now, true).await?;
        return Ok(Decided::Nothing(decision.outcome));
    }
    if let Some(mirror) = &decision.mirror {
        keep_records(conn, mirror).await?;
    }
    // Projected last: a logged head takes the log's head row, which is then held until commit.
    let mut events = Vec::with_capacity(decision.events.len());
    for Planned { event, id } in &decision.events {
        project(conn, &scope.vault, event).await?;
        events.push(event.to_new_event(*id).map_err(internal)?);
    }
    let meta = BatchMeta { recorded_at: now, actor: decision.actor.clone(), correlation_id: Uuid::now_v7() };
    Ok(Decided::Events {
        vault: scope.vault.clone(),
        new_stream: decision.new_stream,
        meta,
        events,
        outcome: decision.outcome,
    })
}

/// Keeps a machine's records, as the decision walked them, in the same transaction as its event,
/// and moves its fleet state on over them.
async fn keep_records(conn: &mut PgConnection, mirror: &Mirror) -> Result<(), Failed> {
    let decoded = super::decode_kept(mirror).map_err(internal)?;
    insert_records(conn, mirror, &decoded).await?;
    advance_fleet(conn, mirror, &decoded).await
}

/// Moves a machine's fleet state on over `mirror`'s records (its row is locked with the machine's:
/// the same transaction holds both). A state short of the records before them (none yet: a machine
/// anchored before fleet states were kept) is first folded up to there from the kept records.
async fn advance_fleet(
    conn: &mut PgConnection,
    mirror: &Mirror,
    decoded: &[regent_store::Record],
) -> Result<(), Failed> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT state FROM fleet_states WHERE vault = $1 AND machine_id = $2 FOR UPDATE")
            .bind(&mirror.vault)
            .bind(&mirror.machine_id)
            .fetch_optional(&mut *conn)
            .await?;
    let mut state = match stored {
        Some(json) => serde_json::from_str::<FleetState>(&json).map_err(internal)?,
        None => FleetState::default(),
    };
    if state.position + 1 > mirror.first {
        state = FleetState::default();
    }
    if state.position + 1 < mirror.first {
        let before: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT record FROM machine_records WHERE vault = $1 AND machine_id = $2 AND position > $3 \
             AND position < $4 ORDER BY position",
        )
        .bind(&mirror.vault)
        .bind(&mirror.machine_id)
        .bind(i64::try_from(state.position).map_err(internal)?)
        .bind(i64::try_from(mirror.first).map_err(internal)?)
        .fetch_all(&mut *conn)
        .await?;
        state = state.fold(before.iter().map(Vec::as_slice)).map_err(internal)?;
    }
    let state = state.fold_records(decoded).map_err(internal)?;
    sqlx::query(
        "INSERT INTO fleet_states (vault, machine_id, position, state) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (vault, machine_id) DO UPDATE SET position = EXCLUDED.position, state = EXCLUDED.state",
    )
    .bind(&mirror.vault)
    .bind(&mirror.machine_id)
    .bind(i64::try_from(state.position).map_err(internal)?)
    .bind(serde_json::to_string(&state).map_err(internal)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_records(
    conn: &mut PgConnection,
    mirror: &Mirror,
    decoded: &[regent_store::Record],
) -> Result<(), Failed> {
    let first = i64::try_from(mirror.first).map_err(internal)?;
    let positions: Vec<i64> = (first..).take(mirror.records.len()).collect();
    let records: Vec<&[u8]> = mirror.records.iter().map(|r| r.as_bytes()).collect();
    let times: Vec<DateTime<Utc>> = decoded.iter().map(|record| record.recorded_at).collect();
    sqlx::query(
        "INSERT INTO machine_records (vault, machine_id, position, record, recorded_at) \
         SELECT $1, $2, * FROM UNNEST($3::BIGINT[], $4::BYTEA[], $5::TIMESTAMPTZ[])",
    )
    .bind(&mirror.vault)
    .bind(&mirror.machine_id)
    .bind(&positions)
    .bind(&records)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A committer: takes whatever changes queued, decides them one after another in one transaction
/// (each sees the ones before it), appends all their events, commits once, answers them all. A
/// batch the database rolls back (a conflict with another process, a deadlock) is undone whole and
/// its changes run again each in a transaction of its own.
async fn commit_batches(
    pool: PgPool,
    appended: IntCounter,
    receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let (scopes, rest): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| ((j.scope, j.now), (j.decide, j.reply))).unzip();
        match batch(&pool, &scopes, &rest).await {
            Ok(results) => {
                let mut written = 0;
                for ((_, reply), result) in rest.into_iter().zip(results) {
                    written += result.1;
                    let _ = reply.send(result.0);
                }
                appended.inc_by(written as u64);
            }
            Err(Failed::Conflict) => {
                for ((scope, now), (decide, reply)) in scopes.iter().zip(rest) {
                    let _ = reply.send(alone(&pool, &appended, scope, *now, &decide).await);
                }
            }
            Err(Failed::Answer(e)) => {
                for (_, reply) in rest {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type BatchJob = (Decide<Answer>, oneshot::Sender<Result<Answer, ApiError>>);

/// One batch's transaction; the answers (and how many events each wrote), in order, once committed.
async fn batch(
    pool: &PgPool,
    scopes: &[(Scope, DateTime<Utc>)],
    jobs: &[BatchJob],
) -> Result<Vec<(Result<Answer, ApiError>, usize)>, Failed> {
    let mut tx = pool.begin().await?;
    let mut decided = Vec::with_capacity(jobs.len());
    for ((scope, now), (decide, _)) in scopes.iter().zip(jobs) {
        decided.push(decide_in(&mut tx, scope, *now, decide).await?);
    }
    // One append per stream, in the streams' order (so two batches lock them alike), each stream's
    // events in the order they were decided.
    let mut streams: Vec<&str> = decided
        .iter()
        .filter_map(|d| match d {
            Decided::Events { vault, .. } => Some(vault.as_str()),
            Decided::Nothing(_) => None,
        })
        .collect();
    streams.sort_unstable();
    streams.dedup();
    for vault in streams {
        let mut events = Vec::new();
        let mut new_stream = false;
        for d in &decided {
            if let Decided::Events { vault: v, new_stream: n, meta, events: e, .. } = d
                && v == vault
            {
                new_stream |= *n;
                events.push((meta, e.as_slice()));
            }
        }
        append_grouped(&mut tx, &stream_of(vault), new_stream, &events).await?;
    }
    tx.commit().await?;
    Ok(decided
        .into_iter()
        .map(|d| match d {
            Decided::Nothing(outcome) => (outcome, 0),
            Decided::Events { events, outcome, .. } => (outcome, events.len()),
        })
        .collect())
}

/// How long the first connection at start may take: a host that drops packets fails the start in
/// this time rather than hang it.
const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// The query parameters sqlx reads from a URL. It ignores any other with a warning that prints its
/// value, and a misspelt `sslmode` would silently mean the default: another is refused.
const URL_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A database URL's settings, read before anything is touched. An error names what is wrong and
/// never echoes the URL, which may hold the password.
fn connect_options(url: &str) -> Result<PgConnectOptions, VaultError> {
    use sqlx::ConnectOptions as _;
    let bad = |what: &str| VaultError::Database {
        problem: DatabaseProblem::Url,
        detail: format!("the database URL {what}; write it as postgres://USER@HOST:PORT/DATABASE"),
    };
    let scheme = |scheme: &str| url.get(..scheme.len()).is_some_and(|start| start.eq_ignore_ascii_case(scheme));
    if !scheme("postgres://") && !scheme("postgresql://") {
        return Err(bad("does not start with postgres:// (the vault runs on PostgreSQL only)"));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(&format!("cannot be read ({e})")))?;
    // The key is not named: a URL pasted wrong could have the password there.
    if parsed.query_pairs().any(|(key, _)| !URL_PARAMETERS.contains(&key.as_ref()) && !key.starts_with("options[")) {
        return Err(bad(
            "has a query parameter the vault does not know (it knows sslmode, sslrootcert, sslcert, sslkey, host, \
             hostaddr, port, dbname, user, application_name, options)",
        ));
    }
    let options = PgConnectOptions::from_url(&parsed).map_err(|e| match e {
        sqlx::Error::Configuration(e) => bad(&format!("cannot be used ({})", one_line(&e.to_string()))),
        other => bad(&format!("cannot be used ({})", describe(&other))),
    })?;
    Ok(options.options([("search_path", SCHEMA)]))
}

/// Where the settings point, for messages: the host and port (or the socket) and the database.
fn place(options: &PgConnectOptions) -> String {
    let server = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    match options.get_database() {
        Some(database) => format!("{server}/{database}"),
        None => server,
    }
}

fn connect_failure(place: &str, error: &sqlx::Error) -> VaultError {
    let code = sqlstate(error);
    let (problem, detail) = match error {
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => (
            DatabaseProblem::Unreachable,
            format!(
                "cannot connect to the database at {place}: nothing listens there (connection refused); start \
                 PostgreSQL, or correct the host and port in the URL"
            ),
        ),
        sqlx::Error::Io(e) => (
            DatabaseProblem::Unreachable,
            format!(
                "cannot connect to the database at {place}: {}; check the host and port in the URL, and the network",
                one_line(&e.to_string())
            ),
        ),
        sqlx::Error::Tls(e) => (
            DatabaseProblem::Unreachable,
            format!(
                "cannot connect to the database at {place}: TLS failed ({}); check the URL's sslmode and sslrootcert",
                one_line(&e.to_string())
            ),
        ),
        // 28000, 28P01: the login itself; 42501: no CONNECT on the database.
        sqlx::Error::Database(_) if code.as_deref().is_some_and(|c| c.starts_with("28") || c == "42501") => (
            DatabaseProblem::LoginRefused,
            format!(
                "the database at {place} refused the login: {}; check the user and the password (in \
                 REGENT_VAULT_DATABASE_URL, PGPASSWORD or ~/.pgpass) and the server's pg_hba.conf",
                describe(error)
            ),
        ),
        sqlx::Error::Database(_) if code.as_deref() == Some("3D000") => (
            DatabaseProblem::Unavailable,
            format!(
                "the database at {place} does not exist ({}); create it, or correct its name in the URL",
                describe(error)
            ),
        ),
        _ => (DatabaseProblem::Unavailable, format!("cannot connect to the database at {place}: {}", describe(error))),
    };
    VaultError::Database { problem, detail }
}

async fn schema_exists(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(SCHEMA)
        .fetch_one(conn)
        .await
}

async fn prepare_schema(conn: &mut PgConnection, user: &str, place: &str) -> Result<(), VaultError> {
    let database = |problem: DatabaseProblem, detail: String| VaultError::Database { problem, detail };
    let unreadable = |e: sqlx::Error| {
        database(DatabaseProblem::Unavailable, format!("cannot read the database at {place}: {}", describe(&e)))
    };
    if !schema_exists(conn).await.map_err(unreadable)? {
        if let Err(e) = sqlx::query(&format!("CREATE SCHEMA {SCHEMA}")).execute(&mut *conn).await {
            // Another process starting at the same moment created it: so much the better.
            let raced = matches!(sqlstate(&e).as_deref(), Some("42P06" | "23505"))
                && schema_exists(conn).await.unwrap_or(false);
            if !raced {
                return Err(if sqlstate(&e).as_deref() == Some("42501") {
                    database(
                        DatabaseProblem::PermissionDenied,
                        format!(
                            "the role {user} may not create the schema {SCHEMA} in the database at {place}; as the \
                             database's owner, run once: CREATE SCHEMA {SCHEMA} AUTHORIZATION \"{user}\""
                        ),
                    )
                } else {
                    database(
                        DatabaseProblem::Unavailable,
                        format!("cannot create the schema {SCHEMA} in the database at {place}: {}", describe(&e)),
                    )
                });
            }
        }
    } else {
        // Tables in the schema but no migration record: another application's, not ours.
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename")
                .bind(SCHEMA)
                .fetch_all(&mut *conn)
                .await
                .map_err(unreadable)?;
        if !tables.is_empty() && !tables.iter().any(|table| table == "_sqlx_migrations") {
            let mut named = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if tables.len() > 5 {
                named.push_str(&format!(" and {} more", tables.len() - 5));
            }
            return Err(database(
                DatabaseProblem::ForeignSchema,
                format!(
                    "the schema {SCHEMA} of the database at {place} holds tables regent did not create ({}); give \
                     the vault a database of its own, or move those tables out of {SCHEMA}",
                    one_line(&named)
                ),
            ));
        }
    }
    let denied = |e: &sqlx::Error| {
        (sqlstate(e).as_deref() == Some("42501")).then(|| {
            database(
                DatabaseProblem::PermissionDenied,
                format!(
                    "the role {user} may not create the vault's tables in the schema {SCHEMA} of the database at \
                     {place}; as the schema's owner, run once: GRANT USAGE, CREATE ON SCHEMA {SCHEMA} TO \"{user}\""
                ),
            )
        })
    };
    use sqlx::migrate::MigrateError;
    match migrator().run(&mut *conn).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(version)) => Err(if first_migration_is_ours(conn).await {
            database(
                DatabaseProblem::NewerSchema,
                format!(
                    "the database at {place} was migrated by a newer regent (its schema {SCHEMA} is at version \
                     {version}, this build knows up to {SCHEMA_VERSION}): run that build or a newer one, or give this one a \
                     database of its own"
                ),
            )
        } else {
            database(
                DatabaseProblem::ForeignSchema,
                format!(
                    "the schema {SCHEMA} of the database at {place} holds migrations regent did not write (version \
                     {version}); give the vault a database of its own"
                ),
            )
        }),
        Err(MigrateError::VersionMismatch(version)) => Err(database(
            DatabaseProblem::ForeignSchema,
            format!(
                "the schema {SCHEMA} of the database at {place} is at a version {version} another build wrote (it \
                 differs from this build's); run the build that wrote it, or give this one a database of its own"
            ),
        )),
        Err(MigrateError::Dirty(version)) => Err(database(
            DatabaseProblem::Unavailable,
            format!(
                "the schema {SCHEMA} of the database at {place} was left half-migrated to version {version}; restore \
                 the database from a backup and start again"
            ),
        )),
        Err(MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _)) => Err(denied(&e).unwrap_or_else(|| {
            database(
                DatabaseProblem::Unavailable,
                format!("cannot create the vault's tables in the database at {place}: {}", describe(&e)),
            )
        })),
        Err(other) => Err(database(
            DatabaseProblem::Unavailable,
            format!("cannot migrate the database at {place}: {}", one_line(&other.to_string())),
        )),
    }
}

/// Whether the schema's version 1 is this build's: then a version it does not know is a newer
/// build's, not another application's.
async fn first_migration_is_ours(conn: &mut PgConnection) -> bool {
    let applied: Result<Option<Vec<u8>>, _> =
        sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 1 AND success")
            .fetch_optional(conn)
            .await;
    let ours = migrator();
    matches!((applied, ours.migrations.first()), (Ok(Some(held)), Some(first)) if held == *first.checksum)
}

impl Prepared {
    /// Binds the database to this admin token ([`bind_token`]) and opens the pool the requests use.
    pub(crate) async fn bind(
        mut self,
        admin_token_sha256: [u8; 32],
        token_path: &Path,
        checkpoint_verifier: &str,
        appended: IntCounter,
        group_commit: bool,
    ) -> Result<PgStorage, VaultError> {
        bind_token(&mut self.conn, admin_token_sha256, &self.place, token_path).await?;
        bind_checkpoint_key(&mut self.conn, checkpoint_verifier, &self.place, token_path).await?;
        // The pool opens its own connections as requests come.
        let _ = self.conn.close().await;
        let pool =
            PgPoolOptions::new().max_connections(32).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(self.options);
        let jobs = group_commit.then(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
            for _ in 0..COMMITTERS {
                tokio::spawn(commit_batches(pool.clone(), appended.clone(), receiver.clone()));
            }
            sender
        });
        Ok(PgStorage { pool, appended, jobs })
    }
}

impl Prepared {
    /// The schema prepared, a pool for a maintenance command rather than a service (no committers;
    /// no token bound), and the database's name for messages.
    pub(crate) async fn into_pool(self, connections: u32) -> (PgPool, String) {
        let _ = self.conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(self.options);
        (pool, self.place)
    }
}

/// A pool on `url` for a maintenance command, without preparing the schema (a command that must
/// find a vault there looks first).
pub(crate) async fn open_pool(url: &str, connections: u32) -> Result<PgPool, VaultError> {
    let options = connect_options(url)?;
    let place = place(&options);
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| connect_failure(&place, &e))
}

/// [`bind_token`] on a connection of `pool`.
pub(crate) async fn bind_token_in(
    pool: &PgPool,
    digest: [u8; 32],
    place: &str,
    token_path: &Path,
) -> Result<(), VaultError> {
    let mut conn = pool.acquire().await.map_err(|e| connect_failure(place, &e))?;
    bind_token(&mut conn, digest, place, token_path).await
}

/// A read or write at start that failed, in the words of a start-up refusal.
fn unusable_at(place: &str, what: &str, e: &sqlx::Error) -> VaultError {
    VaultError::Database {
        problem: DatabaseProblem::Unavailable,
        detail: format!("cannot {what} the database at {place}: {}", describe(e)),
    }
}

/// The database serves one admin token: the first process records its digest, every later one must
/// have the same token (the PIN key derives from it: PINs must verify in every process).
async fn bind_token(
    conn: &mut PgConnection,
    digest: [u8; 32],
    place: &str,
    token_path: &Path,
) -> Result<(), VaultError> {
    let failed = |what: &str, e: sqlx::Error| unusable_at(place, what, &e);
    sqlx::query("INSERT INTO service (admin_token_sha256) VALUES ($1) ON CONFLICT (only_row) DO NOTHING")
        .bind(&digest[..])
        .execute(&mut *conn)
        .await
        .map_err(|e| failed("write", e))?;
    let held: Vec<u8> = sqlx::query_scalar("SELECT admin_token_sha256 FROM service")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| failed("read", e))?;
    if held != digest {
        return Err(VaultError::Database {
            problem: DatabaseProblem::OtherToken,
            detail: format!(
                "the database at {place} serves another admin token than {}: give every vault process a copy of \
                 the admin.token of the first one (in its --data-dir), then start this one again",
                token_path.display()
            ),
        });
    }
    Ok(())
}

/// The database's transparency log is signed with one key: the first process records its verifier,
/// every later one must hold the same key (agents trust that key and no other).
async fn bind_checkpoint_key(
    conn: &mut PgConnection,
    verifier: &str,
    place: &str,
    token_path: &Path,
) -> Result<(), VaultError> {
    let failed = |what: &str, e: sqlx::Error| unusable_at(place, what, &e);
    sqlx::query("UPDATE service SET checkpoint_verifier = $1 WHERE checkpoint_verifier IS NULL")
        .bind(verifier)
        .execute(&mut *conn)
        .await
        .map_err(|e| failed("write", e))?;
    let held: Option<String> = sqlx::query_scalar("SELECT checkpoint_verifier FROM service")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| failed("read", e))?;
    if held.as_deref() != Some(verifier) {
        let dir = token_path.parent().unwrap_or(token_path);
        return Err(VaultError::Database {
            problem: DatabaseProblem::OtherCheckpointKey,
            detail: format!(
                "the database at {place} is signed with another checkpoint key than the one in {}: give every vault \
                 process a copy of the {} of the first one (in its --data-dir), then start this one again",
                dir.display(),
                crate::transparency::CHECKPOINT_KEY_FILE
            ),
        });
    }
    Ok(())
}

impl Storage for PgStorage {
    async fn read(&self, scope: &Scope) -> Result<Facts, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        load(&mut conn, scope, Utc::now(), false).await.map_err(ApiError::from)
    }

    async fn transact<A: Send + 'static>(
        &self,
        scope: Scope,
        now: DateTime<Utc>,
        decide: Decide<A>,
    ) -> Result<A, ApiError> {
        let Some(jobs) = &self.jobs else {
            return alone(&self.pool, &self.appended, &scope, now, &decide).await;
        };
        let (reply, answer) = oneshot::channel();
        let erased: Decide<Answer> = Box::new(move |facts| {
            decide(facts).map(|d| Decision {
                events: d.events,
                actor: d.actor,
                new_stream: d.new_stream,
                mirror: d.mirror,
                outcome: d.outcome.map(|a| Box::new(a) as Answer),
            })
        });
        jobs.send(Job { scope, now, decide: erased, reply })
            .map_err(|_| ApiError::unavailable("the service is stopping"))?;
        let answer = answer.await.map_err(|_| ApiError::unavailable("the change was abandoned"))??;
        answer
            .downcast::<A>()
            .map(|a| *a)
            .map_err(|_| ApiError::internal("a change was answered with another's answer"))
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
        if !vault_exists(&mut conn, vault).await? {
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
            let facts = machine_row(row).map_err(ApiError::from)?;
            let mut info = facts.info;
            info.log_head = facts.anchor.anchor(&info.machine_id);
            machines.push(info);
        }
        Ok(Some(machines))
    }

    async fn kept_records(&self, vault: &str, scan: &AuditScan) -> Result<Option<Vec<KeptRecord>>, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        if !vault_exists(&mut conn, vault).await? {
            return Ok(None);
        }
        let after = scan.after.as_ref();
        // The time index, from the cursor (or the range's start) on; the machine filter on the way.
        let rows: Vec<(String, i64, DateTime<Utc>, Vec<u8>)> = sqlx::query_as(
            "SELECT machine_id, position, recorded_at, record FROM machine_records WHERE vault = $1 \
             AND ($2::text IS NULL OR machine_id = $2) AND ($3::timestamptz IS NULL OR recorded_at >= $3) \
             AND ($4::timestamptz IS NULL OR recorded_at < $4) \
             AND ($5::timestamptz IS NULL OR (recorded_at, machine_id, position) > ($5, $6, $7)) \
             ORDER BY recorded_at, machine_id, position LIMIT $8",
        )
        .bind(vault)
        .bind(scan.machine.as_deref())
        .bind(scan.since)
        .bind(scan.until)
        .bind(after.map(|c| c.at))
        .bind(after.map(|c| c.machine_id.clone()).unwrap_or_default())
        .bind(after.map_or(0, |c| i64::try_from(c.position).unwrap_or(i64::MAX)))
        .bind(i64::try_from(scan.limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| unavailable(&e))?;
        rows.into_iter()
            .map(|(machine_id, position, at, line)| {
                let position = u64::try_from(position).map_err(|_| ApiError::internal("a kept record's position"))?;
                Ok(KeptRecord { machine_id, position, at, line })
            })
            .collect::<Result<Vec<_>, ApiError>>()
            .map(Some)
    }

    async fn fleet(
        &self,
        vault: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<Vec<FleetEntry>>, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        if !vault_exists(&mut conn, vault).await? {
            return Ok(None);
        }
        let columns = MACHINE_COLUMNS.split(", ").map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ");
        // One page through the listing index; each machine's fleet state by its key.
        let rows = sqlx::query(&format!(
            "SELECT {columns}, f.position AS fleet_position, f.state AS fleet_state FROM machines m \
             LEFT JOIN fleet_states f ON f.vault = m.vault AND f.machine_id = m.machine_id \
             WHERE m.vault = $1 AND m.removed_at IS NULL AND ($2::timestamptz IS NULL OR \
             (m.registered_at, m.machine_id) > ($2, $3)) ORDER BY m.registered_at, m.machine_id LIMIT $4"
        ))
        .bind(vault)
        .bind(after.as_ref().map(|c| c.registered_at))
        .bind(after.as_ref().map(|c| c.machine_id.clone()).unwrap_or_default())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| unavailable(&e))?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let facts = machine_row(row).map_err(ApiError::from)?;
            let state: Option<String> = row.try_get("fleet_state").map_err(|e| ApiError::from(Failed::from(e)))?;
            let fleet = match state {
                Some(json) => Some(
                    serde_json::from_str::<FleetState>(&json)
                        .map_err(|e| ApiError::internal(format!("a fleet state cannot be read: {e}")))?,
                ),
                None => None,
            };
            entries.push(FleetEntry { info: facts.info, anchor: facts.anchor, fleet });
        }
        Ok(Some(entries))
    }

    async fn tree_size(&self) -> Result<u64, ApiError> {
        let size: i64 = sqlx::query_scalar("SELECT tree_size FROM log_head")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unavailable(&e))?;
        u64::try_from(size).map_err(|_| ApiError::internal("the transparency log's size is negative"))
    }

    async fn subtrees(&self, keys: Vec<(u8, u64)>) -> Result<Fetched, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        read_subtrees(&mut conn, &keys).await.map_err(ApiError::from)
    }

    async fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, ApiError> {
        let index = i64::try_from(index).map_err(|_| ApiError::internal("a leaf index out of range"))?;
        sqlx::query_scalar("SELECT leaf FROM tree_leaves WHERE leaf_index = $1")
            .bind(index)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable(&e))
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

    async fn machine_log(&self, vault: &str, machine_id: &str) -> Result<Option<super::export::LogExport>, ApiError> {
        super::export::machine_from_postgres(&self.pool, vault, machine_id).await
    }

    async fn ready(&self) -> Result<(), String> {
        let mut conn = self.pool.acquire().await.map_err(|e| format!("the database: {}", describe(&e)))?;
        conn.ping().await.map_err(|e| format!("the database: {}", describe(&e)))?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| format!("the database's schema: {}", describe(&e)))?;
        match applied {
            Some(SCHEMA_VERSION) => Ok(()),
            other => Err(format!("the database's schema is at version {other:?}, this build needs {SCHEMA_VERSION}")),
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
    locked_until, anchor_position, anchor_hash, anchored_at, leaf_index, refusals, last_refusal, last_refused_records, \
    mirrored_position, mirrored_hash";

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
    let mirrored_position: Option<i64> = row.try_get("mirrored_position")?;
    let mirrored_hash: Option<String> = row.try_get("mirrored_hash")?;
    let mirrored = match (mirrored_position, mirrored_hash) {
        (Some(position), Some(hash)) => {
            Some(MirroredHead { position: u64::try_from(position).map_err(internal)?, hash })
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
            mirrored,
            leaf: row.try_get::<Option<i64>, _>("leaf_index")?.and_then(|index| u64::try_from(index).ok()),
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
    // One statement for everything but the PINs: each part a lateral subquery (locking its own
    // rows), absent parts bound to NULL (which match no row). Round trips, not the lookups, are
    // what a change costs here.
    let machine_lock = if lock { "FOR UPDATE" } else { "" };
    let sql = format!(
        "SELECT v.*, c.*, m.*, r.*, k.*, \
         (EXISTS (SELECT 1 FROM nonces WHERE vault = $1 AND nonce = $6 AND seen_at >= $7) \
          OR EXISTS (SELECT 1 FROM request_nonces WHERE vault = $1 AND nonce = $6 AND seen_at >= $7)) AS nonce_seen \
         FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL (SELECT identity AS v_identity, created_at AS v_created_at, newest AS v_newest \
           FROM vaults WHERE name = $1 {vault_lock}) v ON true \
         LEFT JOIN LATERAL (SELECT vault AS c_vault, der AS c_der, not_before AS c_not_before, \
           not_after AS c_not_after FROM certificates WHERE thumbprint = $2) c ON true \
         LEFT JOIN LATERAL (SELECT {MACHINE_COLUMNS} FROM machines WHERE vault = $1 AND machine_id = $3 \
           {machine_lock}) m ON true \
         LEFT JOIN LATERAL (SELECT r.machine_id AS r_machine_id, r.thumbprint AS r_thumbprint, \
           r.machine_name AS r_machine_name, r.registered_at AS r_registered_at, \
           EXISTS (SELECT 1 FROM machines x WHERE x.vault = r.vault AND x.machine_id = r.machine_id \
             AND x.removed_at IS NOT NULL) AS r_removed \
           FROM registrations r WHERE r.vault = $1 AND r.request_id = $4) r ON true \
         LEFT JOIN LATERAL (SELECT machine_id AS k_machine_id, pin_digest AS k_pin_digest, \
           valid_issued_at AS k_valid_issued_at FROM pin_checks WHERE vault = $1 AND request_id = $5) k ON true",
        vault_lock = vault_lock.unwrap_or(""),
    );
    let row = sqlx::query(&sql)
        .bind(vault)
        .bind(scope.thumbprint.as_deref())
        .bind(scope.machine.as_deref())
        .bind(scope.registration.as_deref())
        .bind(scope.pin_check.as_deref())
        .bind(scope.nonce.as_deref())
        .bind(now - NONCE_MEMORY)
        .fetch_one(&mut *conn)
        .await?;
    let mut facts = Facts::default();
    let identity: Option<String> = row.try_get("v_identity")?;
    if let Some(identity) = identity {
        facts.vault = Some(VaultFacts {
            identity: serde_json::from_str(&identity).map_err(internal)?,
            created_at: row.try_get("v_created_at")?,
            newest: row.try_get("v_newest")?,
        });
    }
    let cert_vault: Option<String> = row.try_get("c_vault")?;
    if let Some(cert_vault) = cert_vault {
        let der: Vec<u8> = row.try_get("c_der")?;
        facts.cert = Some(CertFacts {
            vault: cert_vault,
            cert: IssuedCert {
                der: der.into(),
                not_before: row.try_get("c_not_before")?,
                not_after: row.try_get("c_not_after")?,
            },
        });
    }
    if facts.vault.is_none() {
        return Ok(facts);
    }
    let machine_id: Option<String> = row.try_get("machine_id")?;
    if machine_id.is_some() {
        facts.machine = Some(machine_row(&row)?);
    }
    let registered: Option<String> = row.try_get("r_machine_id")?;
    if let Some(registered) = registered {
        facts.registration = Some(RegistrationFacts {
            key: RegistrationKey {
                thumbprint: row.try_get("r_thumbprint")?,
                machine_name: row.try_get("r_machine_name")?,
            },
            answer: Registered {
                machine_id: registered,
                vault: vault.to_string(),
                registered_at: row.try_get("r_registered_at")?,
            },
            removed: row.try_get::<Option<bool>, _>("r_removed")?.unwrap_or(false),
        });
    }
    let checked: Option<String> = row.try_get("k_machine_id")?;
    if let Some(checked) = checked {
        let digest: Vec<u8> = row.try_get("k_pin_digest")?;
        let valid: Option<DateTime<Utc>> = row.try_get("k_valid_issued_at")?;
        facts.pin_check = Some(PinCheckFacts {
            machine_id: checked,
            // A digest this service wrote is 32 bytes; one that is not can never match a retry.
            pin_digest: digest.try_into().unwrap_or([0u8; 32]),
            outcome: valid.map_or(PinOutcome::Wrong, PinOutcome::Valid),
        });
    }
    facts.nonce_seen = scope.nonce.is_some() && row.try_get::<Option<bool>, _>("nonce_seen")?.unwrap_or(false);
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
/// Logs a head in the transparency log, and returns its index: the tree's size, taken with the
/// log's head row (held until commit, as every append does), so leaves are in the order of their
/// events in the log. The leaf and the subtrees it completes go in one statement: the head row is
/// held meanwhile, so every round trip here is one every other append waits for.
async fn log_leaf(conn: &mut PgConnection, leaf: &Leaf) -> Result<i64, Failed> {
    let size: i64 = sqlx::query_scalar("UPDATE log_head SET tree_size = tree_size + 1 RETURNING tree_size - 1")
        .fetch_one(&mut *conn)
        .await?;
    let size = u64::try_from(size).map_err(internal)?;
    let keys = crate::transparency::frontier(size);
    let frontier = read_subtrees(conn, &keys).await?;
    if let Some(&(level, index)) = keys.iter().find(|k| !frontier.0.contains_key(k)) {
        return Err(internal(regent_protocol::transparency::MissingSubtree { level, index }));
    }
    let subtrees = crate::transparency::appended(frontier, size, std::slice::from_ref(leaf)).map_err(internal)?;
    let index = i64::try_from(size).map_err(internal)?;
    let (mut levels, mut indexes, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
    for (level, index, hash) in subtrees {
        levels.push(i16::from(level));
        indexes.push(i64::try_from(index).map_err(internal)?);
        hashes.push(hash.to_vec());
    }
    sqlx::query(
        "WITH leaf AS (INSERT INTO tree_leaves (leaf_index, vault, machine_id, leaf) VALUES ($1, $2, $3, $4)) \
         INSERT INTO tree_nodes (level, node_index, hash) SELECT * FROM UNNEST($5::smallint[], $6::bigint[], $7::bytea[])",
    )
    .bind(index)
    .bind(&leaf.vault)
    .bind(&leaf.machine_id)
    .bind(leaf.encode().map_err(internal)?)
    .bind(&levels)
    .bind(&indexes)
    .bind(&hashes)
    .execute(&mut *conn)
    .await?;
    Ok(index)
}

/// Those of `keys` the tree holds.
async fn read_subtrees(conn: &mut PgConnection, keys: &[(u8, u64)]) -> Result<Fetched, Failed> {
    let levels: Vec<i16> = keys.iter().map(|(level, _)| i16::from(*level)).collect();
    let indexes: Vec<i64> =
        keys.iter().map(|(_, index)| i64::try_from(*index).map_err(internal)).collect::<Result<_, _>>()?;
    let rows = sqlx::query(
        "SELECT level, node_index, hash FROM tree_nodes WHERE (level, node_index) IN \
         (SELECT * FROM UNNEST($1::smallint[], $2::bigint[]))",
    )
    .bind(&levels)
    .bind(&indexes)
    .fetch_all(&mut *conn)
    .await?;
    let mut fetched = Fetched::default();
    for row in rows {
        let (level, index, hash): (i16, i64, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // A malformed one is left out: the proof then names it.
        if let (Ok(level), Ok(index), Ok(hash)) =
            (u8::try_from(level), u64::try_from(index), <[u8; 32]>::try_from(hash))
        {
            fetched.0.insert((level, index), hash);
        }
    }
    Ok(fetched)
}

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
            // One statement for the three rows (a registration is the frequent change).
            sqlx::query(
                "WITH machine AS (INSERT INTO machines (vault, machine_id, machine_name, thumbprint, registered_at) \
                   VALUES ($1, $2, $3, $4, $5)), \
                 registration AS (INSERT INTO registrations \
                   (vault, request_id, machine_id, thumbprint, machine_name, registered_at) \
                   VALUES ($1, $6, $2, $4, $3, $5)) \
                 INSERT INTO nonces (vault, nonce, seen_at) VALUES ($1, $7, $5) ON CONFLICT DO NOTHING",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(&e.machine_name)
            .bind(&e.thumbprint)
            .bind(e.registered_at)
            .bind(&e.request_id)
            .bind(&e.nonce)
            .execute(&mut *conn)
            .await?;
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
            let leaf_index = match crate::transparency::leaf_of(vault, event).map_err(internal)? {
                Some(leaf) => Some(log_leaf(conn, &leaf).await?),
                None => None,
            };
            // The same head logged again (a machine anchored before the tree): first accepted then.
            sqlx::query(
                "UPDATE machines SET anchor_position = $3, anchor_hash = $4, \
                 anchored_at = CASE WHEN anchor_position = $3 AND anchor_hash = $4 THEN anchored_at ELSE $5 END, \
                 mirrored_position = CASE WHEN $6 THEN $3 ELSE mirrored_position END, \
                 mirrored_hash = CASE WHEN $6 THEN $4 ELSE mirrored_hash END, \
                 leaf_index = COALESCE($7, leaf_index) \
                 WHERE vault = $1 AND machine_id = $2",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(i64::try_from(e.position).map_err(internal)?)
            .bind(&e.hash)
            .bind(e.anchored_at)
            .bind(e.mirrored_from.is_some())
            .bind(leaf_index)
            .execute(&mut *conn)
            .await?;
            remember_nonce(conn, vault, &e.nonce, e.anchored_at).await?;
        }
        VaultEvent::LogRecordsMirrored(e) => {
            sqlx::query(
                "UPDATE machines SET mirrored_position = $3, mirrored_hash = $4 WHERE vault = $1 AND machine_id = $2",
            )
            .bind(vault)
            .bind(&e.machine_id)
            .bind(i64::try_from(e.position).map_err(internal)?)
            .bind(&e.hash)
            .execute(&mut *conn)
            .await?;
            remember_nonce(conn, vault, &e.nonce, e.mirrored_at).await?;
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
    append_grouped(conn, stream, new_stream, &[(meta, events)]).await
}

/// [`append`] of several changes' events to one stream, each change with its own metadata, in one
/// statement.
async fn append_grouped(
    conn: &mut PgConnection,
    stream: &str,
    new_stream: bool,
    groups: &[(&BatchMeta, &[NewEvent])],
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
    let (mut positions, mut ids, mut versions, mut records) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (meta, events) in groups {
        for event in events.iter() {
            let position = head.position + 1;
            version += 1;
            let (stored, hash) = regent_store::encode_record(position, stream, version, meta, event, &head.hash)
                .map_err(|e| internal(format!("event {} cannot be written: {e}", event.event_id)))?;
            if stored.len() > MAX_RECORD_BYTES {
                return Err(internal(format!("event {} is {} bytes written out", event.event_id, stored.len())));
            }
            positions.push(i64::try_from(position).map_err(internal)?);
            ids.push(event.event_id);
            versions.push(i64::try_from(version).map_err(internal)?);
            records.push(stored);
            head = Head { position, hash };
        }
    }
    sqlx::query(
        "INSERT INTO log (position, event_id, stream, version, record) \
         SELECT p, e, $3, v, r FROM UNNEST($1::bigint[], $2::uuid[], $4::bigint[], $5::bytea[]) AS t(p, e, v, r)",
    )
    .bind(&positions)
    .bind(&ids)
    .bind(stream)
    .bind(&versions)
    .bind(&records)
    .execute(&mut *conn)
    .await?;
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
