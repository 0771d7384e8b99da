//! The log both benchmarks run on: a long-lived agent's history, built through decide and the store.

use chrono::{DateTime, Utc};
use regent_engine::events::{self, STREAM};
use regent_engine::model::*;
use regent_engine::{State, decide};
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion};

/// REGENT_BENCH_EVENTS changes the size (1,000,000 by default).
pub fn log_size() -> u64 {
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

pub fn build_log(store: &EventStore, events: u64) {
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
            let record = StepRecord { command, observed, outcome, build: None };
            state = state.evolve(&record);
            batch.push(events::encode(&record, uuid::Uuid::now_v7()).expect("encode"));
            i += 1;
        }
        store.append(STREAM, ExpectedVersion::Exact(version), &meta, &batch).expect("append");
    }
}
