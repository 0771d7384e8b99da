//! Rebuilding status and properties from a log of 1,000,000 events: from scratch, and from a
//! checkpoint 1,000 events back. Targets (issue 3): at least 500,000 events/s from scratch; under
//! 10 ms from the checkpoint.
//!
//! `cargo bench -p regent-engine --bench projections` (REGENT_BENCH_EVENTS to change the size;
//! REGENT_BENCH_LOG_DIR=DIR to keep the log as a data dir, for timing `regent status` on it).

mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use regent_engine::State;
use regent_engine::projections::{self, STATE_CHECKPOINT};
use regent_store::{EventStore, StoreOptions};
use support::{build_log, log_size};

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
