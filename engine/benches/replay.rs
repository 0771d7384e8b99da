//! Replaying and verifying an exported log of 1,000,000 events, as `regent replay FILE --check`
//! and `regent audit verify --file FILE` do (issue 6; target at least 500,000 events/s, and under
//! 100 MiB peak, which is measured on the binary: see BENCHMARKS.md).
//!
//! `cargo bench -p regent-engine --bench replay` (REGENT_BENCH_EVENTS to change the size;
//! REGENT_BENCH_EXPORT=FILE keeps the export, for timing the binary on it).
//!
//! Baselines in the same run: parsing every line into a `serde_json::Value` (what any JSON Lines
//! reader pays) and SHA-256 over the whole file (what hashing every byte costs at the least).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regent_engine::events::decode_step;
use regent_engine::replay::replay;
use regent_store::{EventStore, StoreOptions};
use sha2::{Digest, Sha256};
use support::{build_log, log_size};

fn open(path: &Path) -> BufReader<std::fs::File> {
    BufReader::with_capacity(1 << 16, std::fs::File::open(path).expect("open export"))
}

fn bench(c: &mut Criterion) {
    let events = log_size();
    let dir = tempfile::tempdir().expect("tempdir");
    let export =
        std::env::var_os("REGENT_BENCH_EXPORT").map_or_else(|| dir.path().join("log.jsonl"), std::path::PathBuf::from);
    {
        let store = EventStore::open(dir.path().join("store"), &StoreOptions::default()).expect("open");
        let started = Instant::now();
        build_log(&store, events);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&export).expect("create export"));
        store.export(&mut out, "regent-bench").expect("export");
        std::io::Write::flush(&mut out).expect("flush");
        eprintln!("built and exported {events} events in {:.1?}", started.elapsed());
    }
    let bytes = std::fs::metadata(&export).map(|m| m.len()).unwrap_or(0);
    eprintln!("the export is {} MiB ({} bytes a record)", bytes >> 20, bytes / events.max(1));

    let mut group = c.benchmark_group("replay");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(events));
    group.bench_function("baseline: serde_json::Value per line", |b| {
        b.iter(|| {
            let mut count = 0u64;
            for line in open(&export).lines() {
                let line = line.expect("line");
                let value: serde_json::Value = serde_json::from_str(&line).expect("json");
                count += u64::from(value.is_object());
            }
            count
        })
    });
    group.bench_function("baseline: sha256 of the file", |b| {
        b.iter(|| {
            let mut file = open(&export);
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            hasher.finalize()
        })
    });
    group.bench_function("verify (audit verify --file)", |b| {
        b.iter(|| {
            let (_, report) = regent_store::verify_export(open(&export), None).expect("verify");
            assert!(report.failure.is_none());
            report.verified_head
        })
    });
    group.bench_function("part: read_export with verify, no fold", |b| {
        b.iter(|| {
            let (_, records) = regent_store::read_export(open(&export), true).expect("read");
            records.map(|r| r.expect("record").position).max()
        })
    });
    group.bench_function("part: replay without check (verify, fold)", |b| {
        b.iter(|| {
            let (_, records) = regent_store::read_export_decoded(open(&export), true, decode_step).expect("read");
            replay(records, false, None).expect("replay").head
        })
    });
    group.bench_function("replay --check (verify, fold, re-decide)", |b| {
        b.iter(|| {
            let (_, records) = regent_store::read_export_decoded(open(&export), true, decode_step).expect("read");
            let replayed = replay(records, true, None).expect("replay");
            assert!(replayed.divergence.is_none());
            replayed.head
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
