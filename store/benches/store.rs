//! regent-store against the baselines a user would pick instead: raw sled and SQLite (rusqlite, bundled).
//!
//! ```text
//! cargo bench -p regent-store --bench store                 # everything (about 5 minutes on 2 cores)
//! cargo bench -p regent-store --bench store -- append_one   # a criterion filter (a regex on the ids)
//! ```
//!
//! Groups:
//! - `append_one`: one event per batch, durable on return: store / raw sled (with and without an
//!   fdatasync after sled's flush) / SQLite (a plain table, and one with the store's unique indexes).
//! - `append_100`: 100 events per batch, durable on return: the same contenders.
//! - `read_all`: the whole log of `REGENT_BENCH_LOG_EVENTS` (default 1,000,000) events, every payload
//!   deserialized into a typed struct: store `read_all` / SQLite (two table layouts).
//! - `verify`: `EventStore::verify(None)` over the same log.
//!
//! After the criterion groups, when the log was built, each reader and `verify` run once more in a
//! child process of their own (this binary, with `REGENT_BENCH_CHILD` set) which reports its peak
//! memory: `VmHWM` from `/proc/self/status`, and the maximum RSS `/usr/bin/time -v` saw, if present.
//!
//! Environment: `REGENT_BENCH_LOG_EVENTS` (size of the read/verify log), `REGENT_BENCH_KEEP=1` (keep
//! the log's directory and print it, to profile a child by hand), `TMPDIR` (where the data lives).
//! Under `cargo test --benches` (criterion's test mode) the log has 10,000 events.

use std::cell::OnceCell;
use std::fmt::Display;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, SamplingMode, Throughput};
use regent_store::{
    Actor, BatchMeta, Digest32, EventStore, ExpectedVersion, NewEvent, StoreOptions, new_correlation_id,
};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use uuid::Uuid;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const CHILD_ENV: &str = "REGENT_BENCH_CHILD";
const CHILD_PATH_ENV: &str = "REGENT_BENCH_CHILD_PATH";
const LOG_EVENTS_ENV: &str = "REGENT_BENCH_LOG_EVENTS";
const KEEP_ENV: &str = "REGENT_BENCH_KEEP";

/// Streams the appends rotate over: a few dozen wizards running, like a busy host.
const STREAMS: usize = 64;
/// Events per append while building the read/verify log.
const BUILD_BATCH: usize = 1000;

// ---------------------------------------------------------------------------------------------
// The event: a wizard step that copied files, about 370 bytes of JSON (about 850 stored).

#[derive(Debug, Serialize, Deserialize)]
struct FilesCopied {
    wizard: String,
    step: u32,
    source: String,
    target: String,
    files: u64,
    bytes: u64,
    largest_file: String,
    largest_bytes: u64,
    checksum: String,
    preserve_permissions: bool,
    note: String,
}

fn payload(n: u64) -> FilesCopied {
    let customer = 4000 + n % 997;
    let digest = |salt: u128| u128::from(n).wrapping_add(salt).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    FilesCopied {
        wizard: "registration".into(),
        step: (n % 7) as u32 + 1,
        source: format!("/srv/import/customer-{customer}/scans"),
        target: format!("/var/lib/regent/vault/customer-{customer}/scans"),
        files: 10 + n % 5000,
        bytes: 1_048_576 + n * 7919 % 1_000_000_000,
        largest_file: format!("invoice-{:06}-signed.pdf", n % 1_000_000),
        largest_bytes: 524_288 + n % 65_536,
        checksum: format!("{:032x}{:032x}", digest(1), digest(2)),
        preserve_permissions: n.is_multiple_of(2),
        note: "copied after operator confirmation".into(),
    }
}

fn new_event(n: u64) -> NewEvent {
    NewEvent::new("FilesCopied", 1, &payload(n)).expect("the payload serializes")
}

fn meta() -> BatchMeta {
    BatchMeta {
        recorded_at: Utc::now(),
        actor: Actor { user: "operator".into(), host: "srv-01.example.org".into() },
        correlation_id: new_correlation_id(),
    }
}

fn stream_names() -> Vec<String> {
    (0..STREAMS).map(|i| format!("registration-{i:04}")).collect()
}

/// Gives up the whole run: a bench that failed has nothing to report.
fn fail(what: &str, err: impl Display) -> ! {
    eprintln!("benchmark failed: {what}: {err}");
    std::process::exit(1)
}

fn store_options() -> StoreOptions {
    StoreOptions::default()
}

/// sled configured as the store configures it (same cache, mode and no background flusher), so
/// the difference is the store's own work.
fn raw_sled(path: &Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .cache_capacity(store_options().cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .expect("raw sled opens")
}

/// SQLite set up for a durable log: WAL, synchronous=FULL, one table keyed by position.
/// `indexed` adds the unique indexes the store keeps too (stream + version, event id), which a user
/// would need for the same guarantees (expected versions, idempotent retries).
fn sqlite(path: &Path, indexed: bool) -> Connection {
    let conn = Connection::open(path).expect("sqlite opens");
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).expect("journal_mode=WAL");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("synchronous=FULL");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (
             position INTEGER PRIMARY KEY,
             stream TEXT NOT NULL,
             version INTEGER NOT NULL,
             event_id BLOB NOT NULL,
             payload BLOB NOT NULL
         )",
    )
    .expect("the events table is created");
    if indexed {
        conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON events (stream, version);
             CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id);",
        )
        .expect("the indexes are created");
    }
    conn
}

const SQLITE_INSERT: &str =
    "INSERT INTO events (position, stream, version, event_id, payload) VALUES (?1, ?2, ?3, ?4, ?5)";

/// The bytes the store writes for realistic records, to write the very same bytes to the baselines.
fn sample_stored_records() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EventStore::open(dir.path(), &store_options()).expect("store opens");
    let events: Vec<NewEvent> = (0..256).map(new_event).collect();
    store.append("registration-0000", ExpectedVersion::Any, &meta(), &events).expect("sample append");
    let samples: Vec<Vec<u8>> = store.raw_records(1).map(|item| item.expect("sample read").1.to_vec()).collect();
    let average = |lengths: &mut dyn Iterator<Item = usize>| lengths.sum::<usize>() / events.len();
    eprintln!(
        "events: payload {} bytes of JSON, stored record {} bytes (averages)",
        average(&mut events.iter().map(|e| e.payload().get().len())),
        average(&mut samples.iter().map(Vec::len))
    );
    samples
}

/// One row of a baseline: what a user of sled or SQLite would write for one event.
struct Row {
    position: u64,
    stream: usize,
    version: u64,
    event_id: Uuid,
}

/// Hands out positions and stream versions to a baseline, as the store does for itself.
struct Rows {
    next: u64,
    versions: Vec<u64>,
}

impl Rows {
    fn new() -> Rows {
        Rows { next: 1, versions: vec![0; STREAMS] }
    }

    fn take(&mut self, stream: usize, count: u64) -> Vec<Row> {
        (0..count)
            .map(|_| {
                self.versions[stream] += 1;
                let row = Row { position: self.next, stream, version: self.versions[stream], event_id: Uuid::now_v7() };
                self.next += 1;
                row
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Appends.

struct AppendSetup {
    streams: Vec<String>,
    samples: Vec<Vec<u8>>,
}

fn bench_appends(c: &mut Criterion, setup: &OnceCell<AppendSetup>, group_name: &str, batch: u64) {
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(batch));
    group.sample_size(30).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    let setup = || setup.get_or_init(|| AppendSetup { streams: stream_names(), samples: sample_stored_records() });

    group.bench_function("store", |b| {
        let AppendSetup { streams, .. } = setup();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EventStore::open(dir.path(), &store_options()).expect("store opens");
        let mut n = 0u64;
        b.iter_custom(|iters| {
            let batches: Vec<Vec<NewEvent>> = (0..iters)
                .map(|_| {
                    (0..batch)
                        .map(|_| {
                            n += 1;
                            new_event(n)
                        })
                        .collect()
                })
                .collect();
            let meta = meta();
            let started = Instant::now();
            for (i, events) in batches.iter().enumerate() {
                let stream = &streams[i % STREAMS];
                if let Err(e) = store.append(stream, ExpectedVersion::Any, &meta, events) {
                    fail("store append", e);
                }
            }
            started.elapsed()
        });
    });

    // `sled`: insert + `Db::flush`, which on Linux is `sync_file_range` (survives a killed process,
    // not a power cut). `sled_fdatasync`: the same, then `fdatasync` of sled's data file, as the
    // store does after its flush and as SQLite (synchronous=FULL) does: the like-for-like baseline.
    for (name, sync_data) in [("sled", false), ("sled_fdatasync", true)] {
        group.bench_function(name, |b| {
            let AppendSetup { samples, .. } = setup();
            let dir = tempfile::tempdir().expect("tempdir");
            let db = raw_sled(dir.path());
            let tree = db.open_tree("log").expect("tree opens");
            let data_file = std::fs::File::open(dir.path().join("db")).expect("sled's data file");
            let mut rows = Rows::new();
            b.iter_custom(|iters| {
                let batches: Vec<Vec<Row>> = (0..iters).map(|i| rows.take(i as usize % STREAMS, batch)).collect();
                let started = Instant::now();
                for rows in &batches {
                    let written = if batch == 1 {
                        let row = &rows[0];
                        let value = samples[row.position as usize % samples.len()].as_slice();
                        tree.insert(row.position.to_be_bytes(), value).map(|_| ())
                    } else {
                        let mut writes = sled::Batch::default();
                        for row in rows {
                            let value = samples[row.position as usize % samples.len()].as_slice();
                            writes.insert(&row.position.to_be_bytes(), value);
                        }
                        tree.apply_batch(writes)
                    };
                    if let Err(e) = written.and_then(|()| db.flush()) {
                        fail("sled insert + flush", e);
                    }
                    if sync_data && let Err(e) = data_file.sync_data() {
                        fail("fdatasync of sled's data file", e);
                    }
                }
                started.elapsed()
            });
        });
    }

    for (name, indexed) in [("sqlite", false), ("sqlite_indexed", true)] {
        group.bench_function(name, |b| {
            let AppendSetup { streams, samples } = setup();
            let dir = tempfile::tempdir().expect("tempdir");
            let mut conn = sqlite(&dir.path().join("events.db"), indexed);
            let mut rows = Rows::new();
            b.iter_custom(|iters| {
                let batches: Vec<Vec<Row>> = (0..iters).map(|i| rows.take(i as usize % STREAMS, batch)).collect();
                let started = Instant::now();
                for rows in &batches {
                    if let Err(e) = sqlite_append(&mut conn, streams, samples, rows) {
                        fail("sqlite transaction", e);
                    }
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

/// One transaction: the rows, then a commit, which with WAL and synchronous=FULL fsyncs the WAL.
fn sqlite_append(conn: &mut Connection, streams: &[String], samples: &[Vec<u8>], rows: &[Row]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(SQLITE_INSERT)?;
        for row in rows {
            let value = samples[row.position as usize % samples.len()].as_slice();
            insert.execute(params![
                row.position as i64,
                streams[row.stream],
                row.version as i64,
                row.event_id.as_bytes(),
                value
            ])?;
        }
    }
    tx.commit()
}

// ---------------------------------------------------------------------------------------------
// The big log, for reading and verifying.

struct LogFixture {
    dir: TempDir,
    events: u64,
    store: Option<EventStore>,
    /// The natural SQLite table: the payload column holds the event's payload JSON.
    sqlite_payload: Connection,
    /// The table of `append_one`: the payload column holds the store's whole stored record.
    sqlite_record: Connection,
}

impl LogFixture {
    fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn sqlite_payload_path(&self) -> PathBuf {
        self.dir.path().join("payload.db")
    }

    fn sqlite_record_path(&self) -> PathBuf {
        self.dir.path().join("record.db")
    }

    fn store(&self) -> &EventStore {
        self.store.as_ref().expect("the store is open until the memory probes")
    }

    fn build(events: u64) -> LogFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let store_path = dir.path().join("store");
        let store = EventStore::open(&store_path, &store_options()).expect("store opens");
        let streams = stream_names();
        let meta = meta();
        let mut n = 0u64;
        let mut batch_no = 0usize;
        while n < events {
            let size = (events - n).min(BUILD_BATCH as u64);
            let batch: Vec<NewEvent> = (0..size)
                .map(|_| {
                    n += 1;
                    new_event(n)
                })
                .collect();
            store.append(&streams[batch_no % STREAMS], ExpectedVersion::Any, &meta, &batch).expect("build append");
            batch_no += 1;
        }
        eprintln!("built a store of {events} events in {:.1?}", started.elapsed());

        let started = Instant::now();
        let mut sqlite_payload = sqlite(&dir.path().join("payload.db"), false);
        let mut sqlite_record = sqlite(&dir.path().join("record.db"), false);
        let mut records = store.raw_records(1).peekable();
        while records.peek().is_some() {
            let tx_payload = sqlite_payload.transaction().expect("transaction");
            let tx_record = sqlite_record.transaction().expect("transaction");
            {
                let mut insert_payload = tx_payload.prepare_cached(SQLITE_INSERT).expect("prepare");
                let mut insert_record = tx_record.prepare_cached(SQLITE_INSERT).expect("prepare");
                for (position, bytes) in records.by_ref().take(10_000).map(|item| item.expect("build read")) {
                    let record = regent_store::record::decode(&bytes).expect("build decode");
                    let (stream, version, id) = (&record.stream, record.version as i64, record.event_id.as_bytes());
                    let payload = record.payload.get().as_bytes();
                    insert_payload.execute(params![position as i64, stream, version, id, payload]).expect("insert");
                    insert_record.execute(params![position as i64, stream, version, id, &bytes[..]]).expect("insert");
                }
            }
            tx_payload.commit().expect("commit");
            tx_record.commit().expect("commit");
        }
        for conn in [&sqlite_payload, &sqlite_record] {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
        }
        eprintln!("built the SQLite copies in {:.1?}", started.elapsed());
        LogFixture { dir, events, store: Some(store), sqlite_payload, sqlite_record }
    }
}

/// The store's whole log, every payload deserialized. Returns how many events were read.
fn read_store(store: &EventStore) -> BenchResult<u64> {
    let mut count = 0;
    for record in store.read_all(0) {
        let record = record?;
        let payload: FilesCopied = record.payload_as()?;
        black_box((record.position, &record.stream, record.version, record.event_id, &payload));
        count += 1;
    }
    Ok(count)
}

/// The natural SQLite table: columns, and the payload's JSON deserialized into the same struct.
fn read_sqlite_payload(conn: &Connection) -> BenchResult<u64> {
    let mut select =
        conn.prepare_cached("SELECT position, stream, version, event_id, payload FROM events ORDER BY position")?;
    let mut rows = select.query([])?;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        let position: i64 = row.get(0)?;
        let stream: String = row.get(1)?;
        let version: i64 = row.get(2)?;
        let event_id = Uuid::from_slice(row.get_ref(3)?.as_blob()?)?;
        let payload: FilesCopied = serde_json::from_slice(row.get_ref(4)?.as_bytes()?)?;
        black_box((position, &stream, version, event_id, &payload));
        count += 1;
    }
    Ok(count)
}

/// The store's stored record, as someone reading it from a SQLite column would deserialize it.
#[derive(Deserialize)]
#[allow(dead_code)]
struct StoredRecord {
    hash: Digest32,
    record: StoredFields,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct StoredFields {
    position: u64,
    stream: String,
    version: u64,
    event_id: Uuid,
    kind: String,
    schema: u32,
    recorded_at: DateTime<Utc>,
    actor: Actor,
    correlation_id: Uuid,
    prev_hash: Digest32,
    payload: FilesCopied,
}

/// SQLite with the store's whole record in the payload column: the same JSON work as the store.
fn read_sqlite_record(conn: &Connection) -> BenchResult<u64> {
    let mut select =
        conn.prepare_cached("SELECT position, stream, version, event_id, payload FROM events ORDER BY position")?;
    let mut rows = select.query([])?;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        let position: i64 = row.get(0)?;
        let record: StoredRecord = serde_json::from_slice(row.get_ref(4)?.as_bytes()?)?;
        black_box((position, &record));
        count += 1;
    }
    Ok(count)
}

fn verify_store(store: &EventStore, expected: u64) -> BenchResult<u64> {
    let report = store.verify(None)?;
    if let Some(failure) = report.failure {
        return Err(format!("verify failed: {failure}").into());
    }
    if report.records != expected {
        return Err(format!("verify walked {} records, expected {expected}", report.records).into());
    }
    Ok(report.records)
}

/// Runs a whole-log pass `iters` times and checks each pass saw every event.
fn timed_passes(iters: u64, expected: u64, what: &str, mut pass: impl FnMut() -> BenchResult<u64>) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        match pass() {
            Ok(count) if count == expected => {}
            Ok(count) => fail(what, format!("saw {count} events, expected {expected}")),
            Err(e) => fail(what, e),
        }
    }
    started.elapsed()
}

fn bench_log(c: &mut Criterion, fixture: &OnceCell<LogFixture>, events: u64) {
    let log = || fixture.get_or_init(|| LogFixture::build(events));

    let mut group = c.benchmark_group("read_all");
    group.throughput(Throughput::Elements(events));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.bench_function("store", |b| {
        let log = log();
        b.iter_custom(|iters| timed_passes(iters, log.events, "store read_all", || read_store(log.store())));
    });
    group.bench_function("sqlite_payload_column", |b| {
        let log = log();
        b.iter_custom(|iters| {
            timed_passes(iters, log.events, "sqlite read", || read_sqlite_payload(&log.sqlite_payload))
        });
    });
    group.bench_function("sqlite_record_column", |b| {
        let log = log();
        b.iter_custom(|iters| {
            timed_passes(iters, log.events, "sqlite read", || read_sqlite_record(&log.sqlite_record))
        });
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(events));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.bench_function("store", |b| {
        let log = log();
        b.iter_custom(|iters| {
            timed_passes(iters, log.events, "store verify", || verify_store(log.store(), log.events))
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Peak memory, each reader alone in a process.

/// `VmHWM` (peak resident set) and `VmRSS` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The child's side: one pass, then a line of `key=value` for the parent.
fn child(mode: &str) -> BenchResult<()> {
    let path = PathBuf::from(std::env::var(CHILD_PATH_ENV)?);
    // Timed from after the open: the pass alone, as in the criterion groups.
    let (count, secs) = match mode {
        "store-read" | "store-verify" => {
            let store = EventStore::open(&path, &store_options())?;
            let (opened_hwm, _) = memory_kib();
            eprintln!("opened the store (peak so far {opened_hwm} KiB)");
            let expected = store.len();
            let started = Instant::now();
            let count = if mode == "store-read" { read_store(&store)? } else { verify_store(&store, expected)? };
            (count, started.elapsed().as_secs_f64())
        }
        "sqlite-read" => {
            let conn = sqlite(&path, false);
            let started = Instant::now();
            (read_sqlite_payload(&conn)?, started.elapsed().as_secs_f64())
        }
        other => return Err(format!("unknown child mode {other}").into()),
    };
    let (hwm, rss) = memory_kib();
    println!("events={count} secs={secs:.3} vmhwm_kib={hwm} vmrss_kib={rss}");
    Ok(())
}

/// Runs one child, under `/usr/bin/time -v` when there is one, and prints what it reports.
fn probe(mode: &str, path: &Path) -> BenchResult<()> {
    let exe = std::env::current_exe()?;
    let time = Path::new("/usr/bin/time");
    let mut command = if time.exists() {
        let mut command = Command::new(time);
        command.arg("-v").arg(&exe);
        command
    } else {
        Command::new(&exe)
    };
    let output = command.env(CHILD_ENV, mode).env(CHILD_PATH_ENV, path).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("child {mode} failed: {stderr}").into());
    }
    let opened = stderr
        .lines()
        .find_map(|line| line.strip_prefix("opened the store (peak so far "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|kib| format!(" vmhwm_after_open_kib={kib}"))
        .unwrap_or_default();
    let max_rss = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .map(|kib| format!(" time_max_rss_kib={}", kib.trim()))
        .unwrap_or_default();
    let value = |key: &str| -> f64 {
        stdout.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.parse().ok()).unwrap_or(f64::NAN)
    };
    let rate = value("events=") / value("secs=");
    let peak_mib = value("vmhwm_kib=") / 1024.0;
    println!("memory/{mode}: {}{opened} events_per_s={rate:.0} peak_mib={peak_mib:.1}{max_rss}", stdout.trim());
    Ok(())
}

/// Bytes a file or a directory's files take.
fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map(|dir| dir.flatten().map(|entry| disk_bytes(&entry.path())).sum()).unwrap_or(0)
}

fn memory_probes(mut log: LogFixture) {
    // The child opens the store: sled holds a file lock while the store is open here.
    drop(log.store.take());
    let probes = [
        ("store-read", log.store_path()),
        ("store-verify", log.store_path()),
        ("sqlite-read", log.sqlite_payload_path()),
    ];
    for (mode, path) in probes {
        if let Err(e) = probe(mode, &path) {
            fail("memory probe", e);
        }
    }
    let size = |path: &Path| disk_bytes(path) as f64 / (1024.0 * 1024.0);
    println!(
        "disk: store {:.0} MiB, sqlite_payload_column {:.0} MiB, sqlite_record_column {:.0} MiB",
        size(&log.store_path()),
        size(&log.sqlite_payload_path()),
        size(&log.sqlite_record_path())
    );
    if std::env::var_os(KEEP_ENV).is_some() {
        let LogFixture { dir, .. } = log;
        println!("kept the log at {}", dir.keep().display());
    }
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        if let Err(e) = child(&mode) {
            fail(&mode, e);
        }
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    // Criterion's own rule: benchmarks with `--bench`, a single quick pass (test mode) without it.
    let benchmarking = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let default_events = if benchmarking { 1_000_000 } else { 10_000 };
    let events = std::env::var(LOG_EVENTS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(default_events);

    let mut c = Criterion::default().configure_from_args();
    let append_setup = OnceCell::new();
    bench_appends(&mut c, &append_setup, "append_one", 1);
    bench_appends(&mut c, &append_setup, "append_100", 100);
    let fixture = OnceCell::new();
    bench_log(&mut c, &fixture, events);
    c.final_summary();
    if let Some(log) = fixture.into_inner() {
        memory_probes(log);
    }
}
