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

use regent_store::{EventStore, Head, MAX_RECORD_BYTES};
use sqlx::postgres::PgPool;
use tokio::sync::mpsc;

use super::postgres::{Failed, describe, head_of, unavailable};
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
    let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut chunker = Chunker::new();
        for item in store.raw_records(1) {
            let (position, bytes) = match item {
                Ok(item) => item,
                Err(e) => {
                    let _ = sender.blocking_send(Err(format!("the vault's log cannot be read: {e}")));
                    return;
                }
            };
            if position > head.position {
                break;
            }
            // A send fails only when the answer was dropped (the client went away): stop reading.
            if let Some(full) = chunker.push(&bytes)
                && sender.blocking_send(Ok(full)).is_err()
            {
                return;
            }
        }
        if let Some(rest) = chunker.rest() {
            let _ = sender.blocking_send(Ok(rest));
        }
    });
    LogExport { head, chunks }
}

/// PostgreSQL: the head and the records up to it in one read-only REPEATABLE READ transaction,
/// held by a task for as long as the answer streams.
pub(crate) async fn from_postgres(pool: &PgPool) -> Result<LogExport, ApiError> {
    let mut tx = pool.begin().await.map_err(|e| unavailable(&e))?;
    // Before any query: the snapshot is taken at the first one.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(&e))?;
    let row =
        sqlx::query("SELECT position, hash FROM log_head").fetch_one(&mut *tx).await.map_err(|e| unavailable(&e))?;
    let head = head_of(&row).map_err(|e| match e {
        Failed::Answer(e) => e,
        Failed::Conflict => ApiError::unavailable("the database was busy; retry"),
    })?;
    let last = i64::try_from(head.position).map_err(|_| ApiError::internal("the log's head is past any position"))?;
    let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
    tokio::spawn(async move {
        use futures_util::TryStreamExt as _;
        let mut chunker = Chunker::new();
        {
            let mut rows =
                sqlx::query_scalar::<_, Vec<u8>>("SELECT record FROM log WHERE position <= $1 ORDER BY position")
                    .bind(last)
                    .fetch(&mut *tx);
            loop {
                match rows.try_next().await {
                    Ok(Some(record)) => {
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
        if let Some(rest) = chunker.rest() {
            let _ = sender.send(Ok(rest)).await;
        }
        // Read only: ending it either way changes nothing.
        let _ = tx.rollback().await;
    });
    Ok(LogExport { head, chunks })
}
