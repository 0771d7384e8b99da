//! Rebuilding status and properties from a log of 1,000,000 events: from scratch, and from a
//! checkpoint 1,000 events back. Targets (issue 3): at least 500,000 events/s from scratch; under
//! 10 ms from the checkpoint.
//!
//! `cargo bench -p regent-engine --bench projections` (REGENT_BENCH_EVENTS to change the size;
//! REGENT_BENCH_LOG_DIR=DIR to keep the log as a data dir, for timing `regent status` on it).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use regent_engine::events::{self, STREAM};
use regent_engine::model::*;
use regent_engine::projections::{self, STATE_CHECKPOINT};
use regent_engine::{State, decide};
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, StoreOptions};

fn log_size() -> u64 {
    std::env::var("REGENT_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// A realistic mix: the wizard once, then Change Properties over and over (proxy, throttling,
/// scratch moves, and refusals), as a long-lived agent's log looks.
fn step(i: u64, now: DateTime<Utc>) -> (Command, Observations) {
    let at = Observations { now, ..Observations::default() };
    let folder = |free| FolderFacts {
        resolved: Some("/var/cache/regent".into()),
        existed: true,
        is_dir: true,
        writable: true,
        filesystem: "ext4".into(),
        free_bytes: free,
        ..FolderFacts::default()
    };
    match i {
        0 => (
            Command::ChooseFolders {
                install_dir: "/opt/regent".into(),
                scratch_dir: "/var/cache/regent".into(),
                backup_size_bytes: 750 << 30,
            },
            Observations { install: Some(folder(1 << 40)), scratch: Some(folder(1 << 40)), ..at },
        ),
        _ => match i % 4 {
            0 => (
                Command::SetProxy {
                    host: "proxy.corp.example".into(),
                    port: 3128,
                    username: Some("svc-backup".into()),
                    password_given: true,
                },
                Observations { proxy_password: Some(SealedRef { id: "9f".repeat(32) }), ..at },
            ),
            1 => (
                Command::SetThrottling {
                    work_days: Weekday::parse_set("mon-fri").unwrap_or_default(),
                    work_start: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
                    work_end: chrono::NaiveTime::from_hms_opt(17, 0, 0).unwrap_or_default(),
                    work_bps: 512_000 * (1 + i % 7),
                    non_work_bps: 20_000_000,
                },
                at,
            ),
            2 => (
                Command::MoveScratch { scratch_dir: format!("/srv/scratch{}", i % 3).into() },
                Observations { scratch: Some(folder(if i % 8 == 2 { 1 << 20 } else { 1 << 40 })), ..at },
            ),
            _ => (Command::ClearProxy, at),
        },
    }
}

fn build_log(store: &EventStore, events: u64) {
    let meta = BatchMeta {
        recorded_at: Utc::now(),
        actor: Actor { user: "operator".into(), host: "backup-srv-01".into() },
        correlation_id: uuid::Uuid::now_v7(),
    };
    let mut state = State::default();
    let mut i = 0;
    while i < events {
        let mut batch = Vec::with_capacity(1000);
        let version = state.version;
        for _ in 0..1000.min(events - i) {
            let (command, observed) = step(i, meta.recorded_at);
            let outcome = decide(&state, &command, &observed);
            let record = StepRecord { command, observed, outcome };
            state = state.evolve(&record);
            batch.push(events::encode(&record).expect("encode"));
            i += 1;
        }
        store.append(STREAM, ExpectedVersion::Exact(version), &meta, &batch).expect("append");
    }
}

fn bench(c: &mut Criterion) {
    let events = log_size();
    // REGENT_BENCH_LOG_DIR=DIR keeps the log as a regent data dir (DIR/store), to time the CLI on it.
    let kept = std::env::var_os("REGENT_BENCH_LOG_DIR").map(std::path::PathBuf::from);
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = kept.as_ref().map_or_else(|| dir.path().to_path_buf(), |kept| kept.join("store"));
    let store = EventStore::open(&store_dir, &StoreOptions::default()).expect("open");
    let started = Instant::now();
    build_log(&store, events);
    eprintln!("built a log of {events} events in {:.1?}", started.elapsed());
    let sample = store.read_all(events / 2).next().and_then(Result::ok).map(|r| r.payload.get().len());
    eprintln!("a typical payload is {sample:?} bytes");

    let mut group = c.benchmark_group("projections");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(criterion::Throughput::Elements(events));
    // Baseline: the store's own read of every record (envelope decoded, payload left raw), so the
    // cost of decoding steps and folding them shows as the difference.
    group.bench_function("baseline: read every record, no fold", |b| {
        b.iter(|| store.read_all(1).map(|r| r.map(|r| r.payload.get().len()).unwrap_or(0)).sum::<usize>())
    });
    group.bench_function("rebuild status+properties from scratch", |b| {
        b.iter(|| {
            let (state, head) = projections::fold(store.read_all(1)).expect("fold");
            (projections::status(&state, head), projections::properties(&state))
        })
    });
    group.finish();

    // A checkpoint 1,000 events back from the head.
    let (state_at, head_at) = projections::fold(store.read_all(1).take((events - 1000) as usize)).expect("fold");
    projections::save_checkpoint(&store, &state_at, head_at);
    let mut group = c.benchmark_group("projections");
    group.sample_size(50);
    group.throughput(criterion::Throughput::Elements(1000));
    group.bench_function("status+properties from a checkpoint 1000 back", |b| {
        b.iter(|| {
            // current_state would save a fresh checkpoint after 256 events; keep measuring the same path.
            let checkpoint = store.load_checkpoint(STATE_CHECKPOINT).expect("load").expect("checkpoint");
            let state: State = serde_json::from_slice(&checkpoint.state).expect("state");
            let (state, head) =
                projections::fold_from(state, checkpoint.head, store.read_all(checkpoint.head.position + 1))
                    .expect("fold");
            (projections::status(&state, head), projections::properties(&state))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
