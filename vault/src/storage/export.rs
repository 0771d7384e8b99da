//! The service's own log as an export (`GET /v1/log`): the head, taken first, and then every
//! record up to it, each as its stored bytes and a line break, streamed in chunks through a small
//! channel, so that a log of any length is answered without being held in memory (nor twice).
//!
//! Each storage reads one consistent snapshot: sled's records up to the head it read (its
//! records are never rewritten, and later ones are left out); PostgreSQL's head and records in one
//! REPEATABLE READ transaction, so a commit during the export is either wholly in it or not at all.
//! A read that fails half way ends the stream with an error, which cuts the answer off: a client
//! gets a broken transfer, never a shorter log that looks whole (and the header's head would give
//! such a log away anyway).

use std::sync::Arc;

use regent_store::{Digest32, EventStore, Head, MAX_RECORD_BYTES, SideTree};
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::mpsc;

use super::postgres::{describe, head_of, unavailable};
use super::sled;
use crate::api::ApiError;

/// About this many bytes of records go in one chunk of the answer.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks read ahead of the connection: memory stays at a few of them, however slow the client.
const CHUNKS_AHEAD: usize = 4;

/// One export: the head it reaches, and the records' lines up to it, in order.
pub(crate) struct LogExport {
    pub head: Head,
    /// Chunks of whole lines. An `Err` is the last item: the log could not be read on.
    pub chunks: mpsc::Receiver<Result<Vec<u8>, String>>,
}

/// Collects lines into chunks and hands each full one on; false once nobody listens any more.
struct Chunker {
    chunk: Vec<u8>,
}

impl Chunker {
    fn new() -> Chunker {
        Chunker { chunk: Vec::with_capacity(CHUNK_BYTES + MAX_RECORD_BYTES + 1) }
    }

    /// Adds a line; returns a full chunk to send, if there is one.
    fn push(&mut self, record: &[u8]) -> Option<Vec<u8>> {
        self.chunk.extend_from_slice(record);
        self.chunk.push(b'\n');
        (self.chunk.len() >= CHUNK_BYTES).then(|| std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_BYTES)))
    }

    fn rest(self) -> Option<Vec<u8>> {
        (!self.chunk.is_empty()).then_some(self.chunk)
    }
}

/// sled: the head now, then the stored records up to it, read on a blocking thread.
pub(crate) fn from_sled(store: Arc<EventStore>) -> LogExport {
    let head = store.head();
    let records = store.raw_records(1).map(|item| {
        item.map(|(position, bytes)| (position, bytes.to_vec()))
            .map_err(|e| format!("the vault's log cannot be read: {e}"))
    });
    stream_blocking(head, records)
}

/// sled: one machine's kept records up to `head` (the last one the vault's log says it keeps).
pub(crate) fn machine_from_sled(mirror: SideTree, vault: &str, machine_id: &str, head: Head) -> LogExport {
    let (first, last) = (sled::mirror_key(vault, machine_id, 1), sled::mirror_key(vault, machine_id, head.position));
    let prefix = sled::mirror_prefix(vault, machine_id).len();
    let records = mirror.range(first..=last).map(move |item| {
        let (key, value) = item.map_err(|e| format!("the machine's records cannot be read: {e}"))?;
        let position = key
            .get(prefix..)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| "a kept record's key is malformed".to_string())?;
        Ok((position, value))
    });
    stream_blocking(head, records)
}

/// Streams the records up to `head` as lines, read on a blocking thread. Every position from 1 to
/// the head must be there: a missing one ends the stream with an error, never a shorter log.
fn stream_blocking(
    head: Head,
    records: impl Iterator<Item = Result<(u64, Vec<u8>), String>> + Send + 'static,
) -> LogExport {
    let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut chunker = Chunker::new();
        let mut expected = 1;
        for item in records {
            let (position, bytes) = match item {
                Ok((position, _)) if position > head.position => break,
                Ok((position, _)) if position != expected => {
                    let _ = sender.blocking_send(Err(format!("record {expected} is missing")));
                    return;
                }
                Ok(item) => item,
                Err(e) => {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            };
            expected = position + 1;
            // A send fails only when the answer was dropped (the client went away): stop reading.
            if let Some(full) = chunker.push(&bytes)
                && sender.blocking_send(Ok(full)).is_err()
            {
                return;
            }
        }
        if expected <= head.position {
            let _ = sender.blocking_send(Err(format!("the records end before position {}", head.position)));
            return;
        }
        if let Some(rest) = chunker.rest() {
            let _ = sender.blocking_send(Ok(rest));
        }
    });
    LogExport { head, chunks }
}

/// A machine's kept records run from 1 to the head they are kept up to, every one there: checked
/// before the answer starts (a gap found while streaming could only break it off, naming nothing),
/// naming the first missing record. Counting reads the index only; the gap is looked for only
/// when the count is short.
async fn kept_whole(tx: &mut PgConnection, vault: &str, machine_id: &str, last: i64) -> Result<(), ApiError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM machine_records WHERE vault = $1 AND machine_id = $2 AND position <= $3",
    )
    .bind(vault)
    .bind(machine_id)
    .bind(last)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| unavailable(&e))?;
    if count == last {
        return Ok(());
    }
    let missing: Option<i64> = sqlx::query_scalar(
        "SELECT rank FROM (SELECT position, row_number() OVER (ORDER BY position) AS rank FROM machine_records \
         WHERE vault = $1 AND machine_id = $2 AND position <= $3) AS kept WHERE position <> rank ORDER BY rank LIMIT 1",
    )
    .bind(vault)
    .bind(machine_id)
    .bind(last)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| unavailable(&e))?;
    let missing = missing.unwrap_or(count + 1);
    tracing::error!(vault, machine_id, missing, count, last, "a machine's kept records are missing one");
    Err(ApiError::internal(format!(
        "the vault's copy of machine {machine_id}'s log is damaged: record {missing} is missing (it holds {count} of \
         the {last} records up to the head it keeps); it was altered in the database, or lost: tell whoever runs the vault"
    )))
}

/// Which log an export from PostgreSQL reads.
enum Source {
    /// The service's own.
    Service,
    /// A machine's kept records.
    Machine { vault: String, machine_id: String },
}

/// PostgreSQL: the head and the records up to it in one read-only REPEATABLE READ transaction,
/// held by a task for as long as the answer streams.
pub(crate) async fn from_postgres(pool: &PgPool) -> Result<LogExport, ApiError> {
    from_postgres_source(pool, Source::Service).await?.ok_or_else(|| ApiError::internal("the log has no head row"))
}

/// PostgreSQL: one machine's kept records, as [`from_postgres`] reads the service's log; `None`
/// when the vault holds no such machine.
pub(crate) async fn machine_from_postgres(
    pool: &PgPool,
    vault: &str,
    machine_id: &str,
) -> Result<Option<LogExport>, ApiError> {
    from_postgres_source(pool, Source::Machine { vault: vault.to_string(), machine_id: machine_id.to_string() }).await
}

async fn from_postgres_source(pool: &PgPool, source: Source) -> Result<Option<LogExport>, ApiError> {
    let mut tx = pool.begin().await.map_err(|e| unavailable(&e))?;
    // Before any query: the snapshot is taken at the first one.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(&e))?;
    let head = match &source {
        Source::Service => {
            let row = sqlx::query("SELECT position, hash FROM log_head")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| unavailable(&e))?;
            head_of(&row).map_err(ApiError::from)?
        }
        Source::Machine { vault, machine_id } => {
            let row: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT mirrored_position, mirrored_hash FROM machines WHERE vault = $1 AND machine_id = $2",
            )
            .bind(vault)
            .bind(machine_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| unavailable(&e))?;
            match row {
                None => return Ok(None),
                Some((Some(position), Some(hash))) => Head {
                    position: u64::try_from(position).map_err(|_| ApiError::internal("a kept head is malformed"))?,
                    hash: Digest32::from_hex(&hash).ok_or_else(|| ApiError::internal("a kept head is malformed"))?,
                },
                Some(_) => Head { position: 0, hash: Digest32::GENESIS },
            }
        }
    };
    let last = i64::try_from(head.position).map_err(|_| ApiError::internal("the log's head is past any position"))?;
    if let Source::Machine { vault, machine_id } = &source {
        kept_whole(&mut tx, vault, machine_id, last).await?;
    }
    let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
    tokio::spawn(async move {
        use futures_util::TryStreamExt as _;
        let mut chunker = Chunker::new();
        let mut count = 0;
        {
            let mut rows = match &source {
                Source::Service => {
                    sqlx::query_scalar::<_, Vec<u8>>("SELECT record FROM log WHERE position <= $1 ORDER BY position")
                        .bind(last)
                        .fetch(&mut *tx)
                }
                Source::Machine { vault, machine_id } => sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT record FROM machine_records WHERE vault = $1 AND machine_id = $2 AND position <= $3 \
                     ORDER BY position",
                )
                .bind(vault)
                .bind(machine_id)
                .bind(last)
                .fetch(&mut *tx),
            };
            loop {
                match rows.try_next().await {
                    Ok(Some(record)) => {
                        count += 1;
                        if let Some(full) = chunker.push(&record)
                            && sender.send(Ok(full)).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = sender.send(Err(format!("the database: {}", describe(&e)))).await;
                        return;
                    }
                }
            }
        }
        if count != last {
            let _ = sender.send(Err(format!("{count} records where the head is at {last}"))).await;
            return;
        }
        if let Some(rest) = chunker.rest() {
            let _ = sender.send(Ok(rest)).await;
        }
        // Read only: ending it either way changes nothing.
        let _ = tx.rollback().await;
    });
    Ok(Some(LogExport { head, chunks }))
}
