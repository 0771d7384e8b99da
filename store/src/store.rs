//! The event store: append with an expected version, streaming reads, verify, checkpoints.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use crate::chain::{ChainFailure, ChainWalker, HashedRecord, Problem, VerifyReport};
use crate::damage::{self, DURABLE_HEAD_FILE, Damage};
use crate::error::{ExpectedVersion, Result, StoreError};
use crate::layout::{self, HEAD_KEY};
use crate::read_ahead::{batched, read_ahead};
use crate::record::{self, BatchMeta, Digest32, Head, MAX_RECORD_BYTES, NewEvent, RawEnvelope, Record};
use crate::side::SideTree;

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long to wait for another process that holds the store before failing with `Locked`.
    pub lock_wait: Duration,
    /// sled's page cache. Its own default is 1 GiB, far too much for a command-line agent.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { lock_wait: Duration::from_secs(5), cache_bytes: 16 * 1024 * 1024 }
    }
}

/// One batch of [`EventStore::append_batches`]: events for one stream, at an expected version.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub stream: &'a str,
    pub expected: ExpectedVersion,
    pub meta: &'a BatchMeta,
    pub events: &'a [NewEvent],
}

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub first_position: u64,
    pub last_position: u64,
    /// The stream's version after the batch (the last event's version).
    pub stream_version: u64,
    /// True when every event id was already stored: nothing was written.
    pub already_stored: bool,
    pub head: Head,
}

/// A projection's saved place: the head it had folded up to, and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub head: Head,
    pub state: Vec<u8>,
}

/// What the store tells a [`SyncHook`]: group commit seen from inside, for tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// An append's batch was applied and took sequence number `sequence`; its last record is at
    /// `last_position`. Called under the writer lock, after the number is taken. The hook's result
    /// is ignored.
    Applied { sequence: u64, last_position: u64 },
    /// A sync of the batches numbered `first..=last` is about to start (sled's flush, then the
    /// fdatasync). An error fails the sync without running it.
    Starting { first: u64, last: u64 },
    /// That sync returned Ok; no writer it covers has been told yet. An error makes the sync count
    /// as failed after it ran, as an fsync that wrote and then reported EIO.
    Completed { first: u64, last: u64 },
    /// That sync failed; the store refuses appends from now on. The hook's result is ignored.
    Failed { first: u64, last: u64 },
}

/// A hook the store calls around each sync (see [`SyncEvent`]), to observe group commit and to
/// inject sync failures in tests. It is a setter on the store rather than a cargo feature so that
/// tests run the very code that ships, not a variant compiled for them; unset, it costs one `None`
/// check per append and per sync, nothing beside an fdatasync.
#[doc(hidden)]
pub type SyncHook = Arc<dyn Fn(SyncEvent) -> std::io::Result<()> + Send + Sync>;

/// Group commit's progress: the batches synced so far, and the failure that ended syncing.
struct Flushed {
    /// Every batch numbered up to this one is on disk.
    through: u64,
    /// Set by a failed sync, never cleared: after a failed fsync the kernel may have dropped the
    /// dirty pages and marked them clean, so a later sync that succeeds proves nothing about them
    /// (PostgreSQL's "fsyncgate"). The store refuses appends until it is opened again.
    failed: Option<Arc<std::io::Error>>,
}

/// The longest stream id accepted.
pub const MAX_STREAM_ID_BYTES: usize = 256;

/// An append-only, hash-chained event log on sled. Share it between threads by reference or `Arc`.
pub struct EventStore {
    path: PathBuf,
    db: sled::Db,
    pub(crate) log: sled::Tree,
    checkpoints: sled::Tree,
    /// Appends take this lock to extend the chain; the flush to disk happens after it is released, so
    /// concurrent appenders share one fsync.
    writer: Mutex<Head>,
    /// Set when the head and the records disagree at open: reads and verify still work (so the
    /// damage can be located), appends are refused.
    damage: Option<Damage>,
    /// The last head known durable, also kept in a side file (see `durable_head_file`).
    durable: Mutex<DurableHeadFile>,
    /// Group commit: each applied batch takes the next sequence number; a flush covers every batch
    /// applied before it started, so a writer whose batch is covered returns without syncing.
    applied: AtomicU64,
    flushed: Mutex<Flushed>,
    /// Set together with `Flushed::failed`, read without the flush lock so that a refused append
    /// does not wait for a sync in progress.
    sync_failed: AtomicBool,
    syncs: AtomicU64,
    sync_hook: Option<SyncHook>,
    /// sled's data file, fdatasync'ed after sled's own flush: sled syncs with `sync_file_range`
    /// on Linux, which survives a killed process but neither the file's size nor the disk's
    /// write cache, so not a power cut.
    data_file: std::fs::File,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Removes the snapshots sled was killed while writing (`snap.<lsn>.generating`); true if there
/// were any. sled 0.34 writes a snapshot under that name and renames it into place once it is
/// whole, but when it looks for the newest snapshot it counts those files too
/// (`RunningConfig::get_snapshot_files` skips only `.in___motion`), so a process killed while
/// writing one leaves a store sled refuses to open ("empty/corrupt snapshot file found"), though
/// every record is intact in its data file. Such a file is never a snapshot: removing it loses
/// nothing. It is only done after sled refused the store, which sled does while holding its lock.
fn remove_unfinished_snapshots(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else { return false };
    let mut removed = false;
    for entry in entries.filter_map(std::result::Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(path = %entry.path().display(), "removed a snapshot sled did not finish writing");
            removed = true;
        }
    }
    removed
}

impl EventStore {
    pub fn open(path: impl AsRef<Path>, options: &StoreOptions) -> Result<EventStore> {
        Self::open_with_notice(path, options, |_| {})
    }

    /// Opens the store, calling `on_wait` once if another process holds it and we start waiting.
    pub fn open_with_notice(
        path: impl AsRef<Path>,
        options: &StoreOptions,
        mut on_wait: impl FnMut(Duration),
    ) -> Result<EventStore> {
        let path = path.as_ref();
        if path.exists() && !path.is_dir() {
            return Err(StoreError::NotADirectory { path: path.to_path_buf() });
        }
        if let Some(damage) = damage::data_file_missing(path) {
            return Err(StoreError::Damaged { path: path.to_path_buf(), damage });
        }
        // sled cannot open it: what regent last knew was on disk says what was lost.
        let unreadable = |at_byte| StoreError::Damaged {
            path: path.to_path_buf(),
            damage: Damage::Unreadable { at_byte, written: damage::read_durable_head(path) },
        };
        let started = Instant::now();
        let mut told = false;
        let mut cleared_unfinished_snapshot = false;
        let db = loop {
            // Appends flush themselves; without the periodic flusher thread, which would keep the
            // database (and its file lock) alive for a moment after the store is dropped, dropping
            // the store releases the lock at once.
            let config = sled::Config::new()
                .path(path)
                .cache_capacity(options.cache_bytes)
                .mode(sled::Mode::HighThroughput)
                .flush_every_ms(None);
            // sled panics on some damaged files instead of returning an error; a damaged store must
            // be a typed error, never a crash.
            match catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => break db,
                Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
                    let waited = started.elapsed();
                    if waited >= options.lock_wait {
                        return Err(StoreError::Locked { path: path.to_path_buf(), waited });
                    }
                    if !told {
                        on_wait(options.lock_wait);
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(50).min(options.lock_wait - waited));
                }
                Ok(Err(sled::Error::Corruption { .. }))
                    if !cleared_unfinished_snapshot && remove_unfinished_snapshots(path) =>
                {
                    // Tried once more without it: sled takes the snapshot it killed mid-write for
                    // the newest one.
                    cleared_unfinished_snapshot = true;
                }
                Ok(Err(sled::Error::Corruption { at, .. })) => return Err(unreadable(at.map(|at| at.lid()))),
                Ok(Err(sled::Error::Unsupported(detail))) => {
                    tracing::debug!(%detail, "sled refused the store's files");
                    return Err(unreadable(None));
                }
                Ok(Err(e)) => return Err(StoreError::from_sled(path, e)),
                Err(panic) => {
                    tracing::debug!(panic = %panic_text(&panic), "sled failed reading the store's files");
                    return Err(unreadable(None));
                }
            }
        };
        // sled reads pages its snapshot points at only when they are asked for: damage it finds
        // in what open reads is the same damage as at its own open.
        let sled_err = |e: sled::Error| match e {
            sled::Error::Corruption { at, .. } => unreadable(at.map(|at| at.lid())),
            other => StoreError::from_sled(path, other),
        };
        let open_tree = |name: &str| db.open_tree(name).map_err(sled_err);
        let log = open_tree(layout::LOG_TREE)?;
        let checkpoints = open_tree(layout::CHECKPOINT_TREE)?;
        let (head, mut damage) = read_head(path, &log, &sled_err)?;
        let durable = DurableHeadFile::open(path)?;
        if damage.is_none() {
            damage = durable.check(head, |position| hash_at(path, &log, position, &sled_err));
        }
        if let Some(damage) = &damage {
            // The caller has it typed (`damage()`) and decides how to say it; every refused append says it too.
            tracing::info!(path = %path.display(), %damage, "the store is damaged; appends are refused");
        }
        let data_file =
            std::fs::File::open(path.join("db")).map_err(|source| StoreError::Io { path: path.join("db"), source })?;
        Ok(EventStore {
            path: path.to_path_buf(),
            db,
            log,
            checkpoints,
            writer: Mutex::new(head),
            damage,
            durable: Mutex::new(durable),
            applied: AtomicU64::new(0),
            flushed: Mutex::new(Flushed { through: 0, failed: None }),
            sync_failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            sync_hook: None,
            data_file,
        })
    }

    /// Sets the hook called around each sync (tests only; see [`SyncHook`]). Taking `&mut self`,
    /// it is set before the store is shared, so no sync runs meanwhile.
    #[doc(hidden)]
    pub fn set_sync_hook(&mut self, hook: Option<SyncHook>) {
        self.sync_hook = hook;
    }

    /// What is wrong with the store, if it was found damaged at open.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last record's position and hash.
    pub fn head(&self) -> Head {
        *self.lock_writer()
    }

    /// How many records the log holds (positions are gapless from 1).
    pub fn len(&self) -> u64 {
        self.head().position
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The version of a stream's last event; 0 when the stream does not exist.
    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        let value = self.log.get(layout::stream_version_key(stream)).map_err(|e| self.sled_err(e))?;
        match value {
            None => Ok(0),
            Some(bytes) => layout::decode_u64(&bytes).ok_or_else(|| self.corrupt("a stream version is not 8 bytes")),
        }
    }

    /// Appends a batch to one stream, atomically, if the stream is at `expected`. Returns after the
    /// batch is on disk. Sending a batch whose event ids are all stored already writes nothing and
    /// reports where they are, so a retried command never writes twice. When a sync fails, the
    /// writers it was to cover get `SyncFailed`, and so does every append after it until the store
    /// is opened again: such a batch may or may not be on disk then, and resending it is safe.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        meta: &BatchMeta,
        events: &[NewEvent],
    ) -> Result<Appended> {
        validate_batch(stream, events)?;
        self.writable()?;
        let mut head = self.lock_writer();
        if let Some(done) = self.already_stored(stream, events, *head)? {
            // Stored is not yet durable: the first try may still be syncing.
            drop(head);
            self.flush_through(self.applied.load(Ordering::SeqCst))?;
            return Ok(done);
        }
        let actual = self.stream_version(stream)?;
        let matches = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        };
        if !matches {
            return Err(StoreError::Conflict { stream: stream.to_string(), expected, actual });
        }
        let mut batch = sled::Batch::default();
        let mut new_head = *head;
        let mut version = actual;
        for event in events {
            let position = new_head.position + 1;
            version += 1;
            let (stored, hash) = record::encode(position, stream, version, meta, event, &new_head.hash)
                .map_err(|e| StoreError::InvalidBatch(format!("event {} cannot be written: {e}", event.event_id)))?;
            if stored.len() > MAX_RECORD_BYTES {
                return Err(StoreError::InvalidBatch(format!(
                    "event {} is {} bytes written out; the limit is {MAX_RECORD_BYTES}",
                    event.event_id,
                    stored.len()
                )));
            }
            batch.insert(&layout::record_key(position), stored);
            batch.insert(layout::stream_key(stream, version), &layout::encode_u64(position));
            batch.insert(&layout::event_key(&event.event_id), &layout::encode_u64(position));
            new_head = Head { position, hash };
        }
        batch.insert(layout::stream_version_key(stream), &layout::encode_u64(version));
        batch.insert(HEAD_KEY, &layout::encode_head(&new_head)[..]);
        self.log.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        let sequence = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(hook) = &self.sync_hook {
            let _ = hook(SyncEvent::Applied { sequence, last_position: new_head.position });
        }
        let first_position = head.position + 1;
        *head = new_head;
        drop(head);
        self.flush_through(sequence)?;
        self.note_durable(new_head);
        Ok(Appended {
            first_position,
            last_position: new_head.position,
            stream_version: version,
            already_stored: false,
            head: new_head,
        })
    }

    /// Appends several batches, to one stream or several, as one atomic write and one sync: all of
    /// them or none, in order, each at its expected version (counting the batches before it). For a
    /// writer that gathers the changes of many requests into one round (the vault's group commit).
    /// Unlike [`EventStore::append`], an event id that is stored already is an error here, not a
    /// retry: such a writer decides from a state that already holds what is stored.
    pub fn append_batches(&self, batches: &[Batch<'_>]) -> Result<Vec<Appended>> {
        for batch in batches {
            validate_batch(batch.stream, batch.events)?;
        }
        if let Some(damage) = &self.damage {
            return Err(StoreError::Damaged { path: self.path.clone(), damage: damage.clone() });
        }
        self.refuse_after_failed_sync()?;
        let mut head = self.lock_writer();
        let mut write = sled::Batch::default();
        let mut new_head = *head;
        let mut versions: HashMap<&str, u64> = HashMap::new();
        let mut ids = HashSet::new();
        let mut appended = Vec::with_capacity(batches.len());
        for batch in batches {
            let actual = match versions.get(batch.stream) {
                Some(version) => *version,
                None => self.stream_version(batch.stream)?,
            };
            let matches = match batch.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual == 0,
                ExpectedVersion::Exact(v) => actual == v,
            };
            if !matches {
                return Err(StoreError::Conflict {
                    stream: batch.stream.to_string(),
                    expected: batch.expected,
                    actual,
                });
            }
            let first_position = new_head.position + 1;
            let mut version = actual;
            for event in batch.events {
                let stored_already = self.log.get(layout::event_key(&event.event_id)).map_err(|e| self.sled_err(e))?;
                if stored_already.is_some() || !ids.insert(event.event_id) {
                    return Err(StoreError::InvalidBatch(format!("event id {} is written twice", event.event_id)));
                }
                let position = new_head.position + 1;
                version += 1;
                let (stored, hash) = record::encode(position, batch.stream, version, batch.meta, event, &new_head.hash)
                    .map_err(|e| {
                        StoreError::InvalidBatch(format!("event {} cannot be written: {e}", event.event_id))
                    })?;
                if stored.len() > MAX_RECORD_BYTES {
                    return Err(StoreError::InvalidBatch(format!(
                        "event {} is {} bytes written out; the limit is {MAX_RECORD_BYTES}",
                        event.event_id,
                        stored.len()
                    )));
                }
                write.insert(&layout::record_key(position), stored);
                write.insert(layout::stream_key(batch.stream, version), &layout::encode_u64(position));
                write.insert(&layout::event_key(&event.event_id), &layout::encode_u64(position));
                new_head = Head { position, hash };
            }
            write.insert(layout::stream_version_key(batch.stream), &layout::encode_u64(version));
            versions.insert(batch.stream, version);
            appended.push(Appended {
                first_position,
                last_position: new_head.position,
                stream_version: version,
                already_stored: false,
                head: new_head,
            });
        }
        if appended.is_empty() {
            return Ok(appended);
        }
        write.insert(HEAD_KEY, &layout::encode_head(&new_head)[..]);
        self.log.apply_batch(write).map_err(|e| self.sled_err(e))?;
        let sequence = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(hook) = &self.sync_hook {
            let _ = hook(SyncEvent::Applied { sequence, last_position: new_head.position });
        }
        *head = new_head;
        drop(head);
        self.flush_through(sequence)?;
        self.note_durable(new_head);
        Ok(appended)
    }

    /// A tree of the store's own database, named `name`, for data kept beside the log and not in
    /// it (the vault keeps its machines' records there). What is written to it before an append is
    /// durable once that append returns: sled's flush, and the sync after it, cover the whole
    /// database. Neither verify nor the durable head covers it: what is kept there must verify on
    /// its own.
    pub fn side_tree(&self, name: &str) -> Result<SideTree> {
        let tree = self.db.open_tree(layout::side_tree_name(name)).map_err(|e| self.sled_err(e))?;
        Ok(SideTree { tree, path: self.path.clone() })
    }

    /// Makes everything written so far durable (it always syncs: writes that did not go through
    /// `append`, like an import's batches, have no sequence number to be covered by).
    pub fn flush(&self) -> Result<()> {
        let sequence = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        self.flush_through(sequence)
    }

    /// How many times the store has synced to disk since it was opened. Concurrent appenders share
    /// syncs, so under load this grows slower than the number of appends.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Makes batch `sequence` durable, with every batch applied before this flush began. Writers
    /// queue on the flush lock; the one that flushes covers those behind it (group commit). When a
    /// sync fails, it and every later flush fail: the writers it covered, those queued behind it,
    /// and every append until the store is opened again (see `Flushed::failed`).
    fn flush_through(&self, sequence: u64) -> Result<()> {
        let mut flushed = self.flushed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if flushed.through >= sequence {
            return Ok(());
        }
        if let Some(failure) = &flushed.failed {
            return Err(self.sync_failed(failure));
        }
        // Every batch numbered up to `target` was applied before it was numbered.
        let target = self.applied.load(Ordering::SeqCst);
        let (first, last) = (flushed.through + 1, target);
        match self.sync(first, last) {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                flushed.through = target;
                Ok(())
            }
            Err(source) => {
                tracing::error!(path = %self.path.display(), error = %source, "a sync to disk failed; the store refuses appends until it is opened again");
                let failure = Arc::new(source);
                flushed.failed = Some(failure.clone());
                self.sync_failed.store(true, Ordering::SeqCst);
                if let Some(hook) = &self.sync_hook {
                    let _ = hook(SyncEvent::Failed { first, last });
                }
                Err(self.sync_failed(&failure))
            }
        }
    }

    /// One sync: sled's flush, then an fdatasync of its data file, with the hook around them.
    fn sync(&self, first: u64, last: u64) -> std::io::Result<()> {
        if let Some(hook) = &self.sync_hook {
            hook(SyncEvent::Starting { first, last })?;
        }
        self.db.flush().map_err(|e| match e {
            sled::Error::Io(source) => source,
            other => std::io::Error::other(other.to_string()),
        })?;
        self.data_file.sync_data()?;
        if let Some(hook) = &self.sync_hook {
            hook(SyncEvent::Completed { first, last })?;
        }
        Ok(())
    }

    /// Whether an append would be refused whatever it held: the store was found damaged at open
    /// (`Damaged`), or a sync failed since (`SyncFailed`, until the store is opened again). What a
    /// service's readiness check asks; it writes nothing and never waits for a sync in progress.
    pub fn writable(&self) -> Result<()> {
        if let Some(damage) = &self.damage {
            return Err(StoreError::Damaged { path: self.path.clone(), damage: damage.clone() });
        }
        self.refuse_after_failed_sync()
    }

    /// Refuses to write once a sync has failed (see `Flushed::failed`).
    fn refuse_after_failed_sync(&self) -> Result<()> {
        if !self.sync_failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let flushed = self.flushed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &flushed.failed {
            Some(failure) => Err(self.sync_failed(failure)),
            None => Ok(()),
        }
    }

    fn sync_failed(&self, failure: &Arc<std::io::Error>) -> StoreError {
        StoreError::SyncFailed { path: self.path.clone(), source: failure.clone() }
    }

    /// Records that everything up to `head` is on disk, so that a store that later opens shorter is
    /// known to have lost records. Called only after a successful flush.
    pub(crate) fn note_durable(&self, head: Head) {
        let mut file = self.durable.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = file.advance(head) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not record the durable head");
        }
    }

    /// Every record from `from_position` on, oldest first, read and decoded ahead of the caller on
    /// other threads (see read_ahead.rs).
    pub fn read_all(&self, from_position: u64) -> impl Iterator<Item = Result<Record>> + 'static {
        let path = self.path.clone();
        let weigh = |(_, bytes): &(u64, sled::IVec)| bytes.len();
        read_ahead(batched(self.raw_records(from_position), weigh), move |batch| {
            let decode = |(position, bytes): (u64, sled::IVec)| {
                record::decode(&bytes).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    detail: format!("record {position} cannot be read: {e}"),
                })
            };
            batch.into_iter().map(|item| item.and_then(decode)).collect()
        })
    }

    /// One stream's records from `from_version` on, oldest first, read lazily.
    pub fn read_stream(&self, stream: &str, from_version: u64) -> impl Iterator<Item = Result<Record>> + 'static {
        let log = self.log.clone();
        let path = self.path.clone();
        let range = layout::stream_key(stream, from_version)..=layout::stream_key(stream, u64::MAX);
        self.log.range(range).map(move |item| {
            let corrupt = |detail: String| StoreError::Corrupt { path: path.clone(), detail };
            let (_, position) = item.map_err(|e| StoreError::from_sled(&path, e))?;
            let position =
                layout::decode_u64(&position).ok_or_else(|| corrupt("a stream index entry is not 8 bytes".into()))?;
            let bytes = log
                .get(layout::record_key(position))
                .map_err(|e| StoreError::from_sled(&path, e))?
                .ok_or_else(|| corrupt(format!("the stream index names record {position}, which is missing")))?;
            record::decode(&bytes).map_err(|e| corrupt(format!("record {position} cannot be read: {e}")))
        })
    }

    /// The stored bytes of every record from `from_position` on, with the position they are stored at.
    pub fn raw_records(&self, from_position: u64) -> impl Iterator<Item = Result<(u64, sled::IVec)>> + 'static {
        let path = self.path.clone();
        let range = layout::record_key(from_position)..=layout::record_key(u64::MAX);
        self.log.range(range).map(move |item| {
            let (key, value) = item.map_err(|e| StoreError::from_sled(&path, e))?;
            let position = layout::position_of_record_key(&key).ok_or_else(|| StoreError::Corrupt {
                path: path.clone(),
                detail: "a record key is malformed".into(),
            })?;
            Ok((position, value))
        })
    }

    /// Walks the whole chain over the stored bytes. The store's own head and the head last known
    /// durable are always checked (records missing at the end are caught); `anchor` adds a head kept elsewhere, which catches a tail cut
    /// off together with the stored head.
    pub fn verify(&self, anchor: Option<Head>) -> Result<VerifyReport> {
        let mut walker = ChainWalker::new().with_anchor(self.head());
        let durable = self.durable.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).written;
        for anchor in durable.into_iter().chain(anchor) {
            walker = walker.with_anchor(anchor);
        }
        // sled's iteration on one thread, parsing and hashing on the others, the links checked here.
        let weigh = |(_, bytes): &(u64, sled::IVec)| bytes.len();
        let hashed = read_ahead(batched(self.raw_records(0), weigh), |batch| {
            let hash = |(position, bytes): (u64, sled::IVec)| (position, HashedRecord::of(&bytes));
            batch.into_iter().map(|item| item.map(hash)).collect()
        });
        for item in hashed {
            let (position, record) = match item {
                Ok(item) => item,
                // What sled cannot read ends the walk as a bad record does: the records before it
                // verified, and that is what a person restoring the store needs to know.
                Err(StoreError::Corrupt { detail, .. }) => {
                    let failure =
                        ChainFailure { position: walker.head().position + 1, problem: Problem::Unreadable { detail } };
                    return Ok(walker.finish(Some(failure)));
                }
                Err(e) => return Err(e),
            };
            if let Err(failure) = walker.push_hashed(Some(position), record) {
                return Ok(walker.finish(Some(failure)));
            }
        }
        let head = self.head();
        let walked = walker.head();
        let past_head = (walked.position > head.position).then(|| ChainFailure {
            position: head.position + 1,
            problem: Problem::PastHead { head: head.position, last: walked.position },
        });
        Ok(walker.finish(past_head))
    }

    /// Saves a projection's checkpoint. It is a cache: losing it only costs a rebuild.
    pub fn save_checkpoint(&self, name: &str, head: Head, state: &[u8]) -> Result<()> {
        let mut value = Vec::with_capacity(40 + state.len());
        value.extend_from_slice(&layout::encode_head(&head));
        value.extend_from_slice(state);
        self.checkpoints.insert(name.as_bytes(), value).map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Loads a checkpoint if it still matches the log: the record at its position must have the hash
    /// it was taken at. Otherwise (another log was imported, the log is shorter) it is ignored.
    pub fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let Some(value) = self.checkpoints.get(name.as_bytes()).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        let Some(head) = layout::decode_head(&value) else {
            return Ok(None);
        };
        if head != Head::EMPTY && self.hash_at(head.position)? != Some(head.hash) {
            return Ok(None);
        }
        Ok(Some(Checkpoint { head, state: value[40..].to_vec() }))
    }

    pub fn delete_checkpoint(&self, name: &str) -> Result<()> {
        self.checkpoints.remove(name.as_bytes()).map(|_| ()).map_err(|e| self.sled_err(e))
    }

    /// The hash field stored with the record at `position`, if there is one: read, not recomputed,
    /// so only for matching a cache (a checkpoint) to the log, never as proof of what the log holds.
    fn hash_at(&self, position: u64) -> Result<Option<Digest32>> {
        hash_at(&self.path, &self.log, position, &|e| StoreError::from_sled(&self.path, e))
    }

    /// If every event id of the batch is stored already, where; if some are, a conflict.
    fn already_stored(&self, stream: &str, events: &[NewEvent], head: Head) -> Result<Option<Appended>> {
        let mut found = Vec::new();
        for event in events {
            if let Some(position) = self.log.get(layout::event_key(&event.event_id)).map_err(|e| self.sled_err(e))? {
                let position =
                    layout::decode_u64(&position).ok_or_else(|| self.corrupt("an event index entry is not 8 bytes"))?;
                found.push((event.event_id, position));
            }
        }
        let Some(&(first_id, first_position)) = found.first() else {
            return Ok(None);
        };
        if found.len() < events.len() {
            return Err(StoreError::PartlyStored {
                stored: found.len(),
                new: events.len() - found.len(),
                first_stored: first_id,
            });
        }
        let last_position = found.iter().map(|(_, p)| *p).max().unwrap_or(first_position);
        let last = self
            .read_all(last_position)
            .next()
            .transpose()?
            .ok_or_else(|| self.corrupt("the event index names a missing record"))?;
        if last.stream != stream {
            return Err(StoreError::StoredElsewhere {
                event_id: last.event_id,
                stored_in: last.stream,
                requested: stream.to_string(),
            });
        }
        let first_position = found.iter().map(|(_, p)| *p).min().unwrap_or(first_position);
        Ok(Some(Appended { first_position, last_position, stream_version: last.version, already_stored: true, head }))
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Head> {
        // A panic while holding the lock cannot leave a half-written batch (apply_batch is atomic),
        // so the head inside is still right.
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sled_err(&self, err: sled::Error) -> StoreError {
        StoreError::from_sled(&self.path, err)
    }

    fn corrupt(&self, detail: &str) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), detail: detail.to_string() }
    }
}

/// Reads the head and checks it against the last record key, so a store whose head and records
/// disagree is reported at open rather than extended. Returns the head and what is wrong, if anything.
fn read_head(
    path: &Path,
    log: &sled::Tree,
    sled_err: &dyn Fn(sled::Error) -> StoreError,
) -> Result<(Head, Option<Damage>)> {
    let corrupt = |detail: String| StoreError::Corrupt { path: path.to_path_buf(), detail };
    let stored = log.get(HEAD_KEY).map_err(sled_err)?;
    let last_key =
        log.range(layout::record_key(0)..=layout::record_key(u64::MAX)).next_back().transpose().map_err(sled_err)?;
    let last_position = last_key.as_ref().and_then(|(k, _)| layout::position_of_record_key(k)).unwrap_or(0);
    let head = match stored {
        None => Head::EMPTY,
        Some(bytes) => layout::decode_head(&bytes).ok_or_else(|| corrupt("the head entry is malformed".into()))?,
    };
    let damage = (head.position != last_position)
        .then_some(Damage::HeadDisagrees { head: head.position, last_record: last_position });
    Ok((head, damage))
}

fn hash_at(
    path: &Path,
    log: &sled::Tree,
    position: u64,
    sled_err: &dyn Fn(sled::Error) -> StoreError,
) -> Result<Option<Digest32>> {
    let Some(bytes) = log.get(layout::record_key(position)).map_err(sled_err)? else {
        return Ok(None);
    };
    let envelope: RawEnvelope = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("record {position} cannot be read: {e}"),
    })?;
    Ok(Some(envelope.hash))
}

/// The last head known to be on disk, kept in a small file beside sled's. sled recovers a damaged
/// log by keeping its longest readable prefix, silently; this file is how a store that lost
/// acknowledged records finds out. It is written with a plain write after sled's flush, never
/// fsynced itself: it can lag the log after a power cut, but never run ahead of it.
struct DurableHeadFile {
    file: std::fs::File,
    written: Option<Head>,
}

impl DurableHeadFile {
    fn open(dir: &Path) -> Result<DurableHeadFile> {
        let path = dir.join(DURABLE_HEAD_FILE);
        let io = |source| StoreError::Io { path: path.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let mut text = String::new();
        // An unreadable or garbled file only loses this check; it never stops the store.
        let written = std::io::Read::read_to_string(&mut file, &mut text)
            .ok()
            .and_then(|_| text.lines().next()?.trim().parse::<Head>().ok());
        Ok(DurableHeadFile { file, written })
    }

    /// What is wrong if the log does not reach, or does not contain, the head last known durable.
    fn check(&self, head: Head, hash_at: impl Fn(u64) -> Result<Option<Digest32>>) -> Option<Damage> {
        let durable = self.written?;
        if durable.position > head.position {
            return Some(Damage::RecordsLost { ends_at: head.position, written: durable });
        }
        match hash_at(durable.position) {
            Ok(Some(hash)) if hash == durable.hash => None,
            Ok(None) if durable.position == 0 => None,
            Err(StoreError::Damaged { damage, .. }) => Some(damage),
            _ => Some(Damage::Replaced { position: durable.position }),
        }
    }

    fn advance(&mut self, head: Head) -> std::io::Result<()> {
        if self.written.is_some_and(|written| written.position >= head.position) {
            return Ok(());
        }
        use std::os::unix::fs::FileExt;
        // Fixed length, written in place: a torn write leaves a line that does not parse, not a wrong head.
        let line = format!("{head}\n");
        self.file.write_all_at(line.as_bytes(), 0)?;
        self.written = Some(head);
        Ok(())
    }
}

fn validate_batch(stream: &str, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(StoreError::InvalidBatch("a batch needs at least one event".into()));
    }
    if stream.is_empty() || stream.len() > MAX_STREAM_ID_BYTES || stream.chars().any(char::is_control) {
        return Err(StoreError::InvalidBatch(format!(
            "a stream id is 1 to {MAX_STREAM_ID_BYTES} bytes without control characters"
        )));
    }
    let mut ids = HashSet::with_capacity(events.len());
    for event in events {
        if !ids.insert(event.event_id) {
            return Err(StoreError::InvalidBatch(format!("event id {} appears twice in the batch", event.event_id)));
        }
        if event.kind.is_empty() {
            return Err(StoreError::InvalidBatch(format!("event {} has no kind", event.event_id)));
        }
    }
    Ok(())
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "sled could not open it".into())
}

/// A fresh correlation id for one command run.
pub fn new_correlation_id() -> Uuid {
    Uuid::now_v7()
}
