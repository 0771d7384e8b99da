//! The engine over a real store: projections from checkpoints equal full rebuilds, replay needs
//! no world, and old schema versions are read through the upcaster.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use proptest::prelude::*;
use regent_engine::events::{self, STREAM};
use regent_engine::model::*;
use regent_engine::projections::{self, AuditFilter, STATE_CHECKPOINT};
use regent_engine::replay::{replay, with_steps};
use regent_engine::{State, decide};
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, NewEvent, StoreOptions};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

fn meta(now: DateTime<Utc>) -> BatchMeta {
    BatchMeta {
        recorded_at: now,
        actor: Actor { user: "ops".into(), host: "srv".into() },
        correlation_id: Uuid::now_v7(),
    }
}

fn facts(free: u64) -> FolderFacts {
    FolderFacts {
        existed: true,
        is_dir: true,
        writable: true,
        filesystem: "ext4".into(),
        free_bytes: free,
        ..FolderFacts::default()
    }
}

/// A command with observations, chosen by a number, covering accepted and refused steps of every kind.
fn step(choice: u8, n: i64) -> (Command, Observations) {
    let now = t0() + Duration::minutes(n);
    let at = Observations { now, ..Observations::default() };
    match choice % 9 {
        0 => (
            Command::ChooseFolders {
                install_dir: "/opt/r".into(),
                scratch_dir: "/var/r".into(),
                backup_size_bytes: 1000,
            },
            Observations { install: Some(facts(10)), scratch: Some(facts(if n % 3 == 0 { 10 } else { 100 })), ..at },
        ),
        1 => (
            Command::SetProxy {
                host: "proxy".into(),
                port: (n % 70_000) as u32,
                username: None,
                password_given: false,
            },
            at,
        ),
        2 => (Command::ClearProxy, at),
        3 => (
            Command::LoadCredentials { file: "/c.VaultCredentials".into() },
            Observations {
                credentials: Some(CredentialsObserved::Parsed {
                    facts: CredentialFacts {
                        file_name: "c.VaultCredentials".into(),
                        vault: VaultIdentity {
                            name: "v".into(),
                            subscription_id: "s".into(),
                            resource_group: "g".into(),
                            location: "l".into(),
                            resource_id: 1,
                        },
                        endpoint: "http://127.0.0.1:1".into(),
                        thumbprint: "00".repeat(32),
                        not_before: t0(),
                        not_after: t0() + Duration::days(2),
                        subject: "CN=x".into(),
                        vault_key: None,
                    },
                    private_key: SealedRef { id: "k".into() },
                }),
                ..at
            },
        ),
        4 => (
            Command::SetPassphrase { save_to: None },
            Observations {
                passphrase: Some(PassphraseObserved {
                    length: (n % 30) as usize,
                    printable_ascii: true,
                    verifier_sealed: Some(SealedRef { id: "vf".into() }),
                    ..PassphraseObserved::default()
                }),
                ..at
            },
        ),
        5 => (
            Command::Register { endpoint_override: None },
            Observations {
                vault: Some(if n % 2 == 0 {
                    VaultAnswer::Registered { machine_id: format!("m{n}"), vault: "v".into(), registered_at: now }
                } else {
                    VaultAnswer::Refused { reason: regent_engine::Reason::VaultUnreachable, detail: "refused".into() }
                }),
                ..at
            },
        ),
        6 => (Command::Unregister, at),
        7 => (
            Command::SetThrottling {
                work_days: vec![Weekday::Mon],
                work_start: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
                work_end: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
                work_bps: 400_000 + (n as u64 % 3) * 300_000,
                non_work_bps: 1_000_000,
            },
            at,
        ),
        _ => (Command::ThrottlingOff, at),
    }
}

/// Records a sequence of steps as the service would (decide, then append), checkpointing at the
/// given positions. Returns the state folded along the way.
fn record(store: &EventStore, choices: &[u8], checkpoints: &[usize]) -> State {
    let mut state = State::default();
    for (i, choice) in choices.iter().enumerate() {
        let (command, observed) = step(*choice, i as i64);
        let outcome = decide(&state, &command, &observed);
        let record = StepRecord { command, observed, outcome, build: Some(older_build()) };
        let event = events::encode(&record, Uuid::now_v7()).unwrap();
        let done =
            store.append(STREAM, ExpectedVersion::Exact(state.version), &meta(record.observed.now), &[event]).unwrap();
        state = state.evolve(&record);
        if checkpoints.contains(&i) {
            projections::save_checkpoint(store, &state, done.head);
        }
    }
    state
}

/// A build other than the one running the tests: what `record` says wrote its steps.
fn older_build() -> BuildId {
    BuildId { version: "0.0.9".into(), commit: "0123456789ab".into(), date: "2026-01-02".into() }
}

fn open(dir: &std::path::Path) -> EventStore {
    EventStore::open(dir, &StoreOptions::default()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn a_checkpointed_rebuild_equals_a_full_rebuild(
        choices in proptest::collection::vec(any::<u8>(), 0..60),
        checkpoints in proptest::collection::vec(0usize..60, 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let live = record(&store, &choices, &checkpoints);
        let (full, full_head) = projections::fold(store.read_all(1)).unwrap();
        prop_assert_eq!(&full, &live);
        let (from_checkpoint, head) = projections::current_state(&store).unwrap();
        prop_assert_eq!(&from_checkpoint, &full);
        prop_assert_eq!(head, full_head);
        prop_assert_eq!(projections::status(&from_checkpoint, head), projections::status(&full, full_head));
        prop_assert_eq!(projections::properties(&from_checkpoint), projections::properties(&full));
        // Deleting the checkpoint changes nothing but speed.
        store.delete_checkpoint(STATE_CHECKPOINT).unwrap();
        prop_assert_eq!(projections::current_state(&store).unwrap().0, full.clone());
        // Replay needs no world and re-decides every step the same way.
        let replayed = replay(with_steps(store.read_all(1)), true, None).unwrap();
        prop_assert_eq!(replayed.divergence, None);
        prop_assert_eq!(replayed.state, full);
    }
}

#[test]
fn replay_check_finds_a_step_the_current_rules_decide_differently() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    record(&store, &[0, 0, 3], &[]); // folders refused (too little space), accepted; credentials
    // A log written by a build that accepted a 10-character passphrase.
    let (command, observed) = step(4, 10);
    let forged = StepRecord {
        command,
        observed,
        outcome: Outcome::Accepted(Change::PassphraseCreated(Encryption {
            origin: PassphraseOrigin::Provided,
            verifier: None,
            verifier_sealed: Some(SealedRef { id: "vf".into() }),
            sealed: None,
            set_at: t0(),
            warnings: vec![],
        })),
        build: Some(older_build()),
    };
    store
        .append(STREAM, ExpectedVersion::Exact(3), &meta(t0()), &[events::encode(&forged, Uuid::now_v7()).unwrap()])
        .unwrap();
    let replayed = replay(with_steps(store.read_all(1)), true, None).unwrap();
    let divergence = replayed.divergence.expect("the divergence is found");
    assert_eq!(divergence.position, 4);
    assert!(
        matches!(divergence.now_decides, Outcome::Refused(ref r) if r.reason == regent_engine::Reason::PassphraseTooShort)
    );
    assert_eq!(replayed.state.phase().name(), "passphrase_created", "the log's own outcome is what is folded");
    let until = replay(with_steps(store.read_all(1)), true, Some(3)).unwrap();
    assert_eq!((until.head.position, until.divergence), (3, None));
}

#[test]
fn a_schema_1_event_is_read_through_the_upcaster() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Exactly what schema 1 wrote: the backup size as the operator typed it.
    let v1 = serde_json::json!({
        "command": {"command": "choose_folders", "install_dir": "/opt/r", "scratch_dir": "/var/r", "backup_size": "750GiB"},
        "observed": {"now": "2026-11-01T10:00:00Z",
            "install": {"resolved": null, "existed": true, "created": false, "is_dir": true, "writable": true,
                        "filesystem": "ext4", "network": false, "free_bytes": 0, "problem": null},
            "scratch": {"resolved": null, "existed": true, "created": false, "is_dir": true, "writable": true,
                        "filesystem": "ext4", "network": false, "free_bytes": 50000000000u64, "problem": null}},
        "outcome": {"outcome": "accepted", "change": "folders_chosen", "install_dir": "/opt/r", "scratch_dir": "/var/r",
                    "backup_size": "750GiB", "scratch_free_bytes": 50000000000u64, "scratch_filesystem": "ext4"}
    });
    let event = NewEvent::new("FoldersChosen", 1, &v1).unwrap();
    store.append(STREAM, ExpectedVersion::NoStream, &meta(t0()), &[event]).unwrap();
    let record = store.read_all(1).next().unwrap().unwrap();
    assert_eq!(record.schema, 1);
    let step = events::decode(&record).unwrap();
    assert!(matches!(step.command, Command::ChooseFolders { backup_size_bytes, .. } if backup_size_bytes == 750 << 30));
    let (state, _) = projections::current_state(&store).unwrap();
    assert_eq!(state.folders.unwrap().backup_size_bytes, 750 << 30);
    // And today's rules still decide that step the same way.
    assert_eq!(replay(with_steps(store.read_all(1)), true, None).unwrap().divergence, None);
}

#[test]
fn replay_check_compares_decisions_not_builds_and_the_audit_names_the_build_of_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // A step as schema 3 recorded it (no build), then steps of two other builds.
    let (command, observed) = step(0, 0);
    let outcome = decide(&State::default(), &command, &observed);
    let v3 = serde_json::json!({ "command": command, "observed": observed, "outcome": outcome });
    let event = NewEvent::new(outcome.kind(), 3, &v3).unwrap();
    store.append(STREAM, ExpectedVersion::NoStream, &meta(t0()), &[event]).unwrap();
    let (mut state, _) = projections::current_state(&store).unwrap();
    let newer = BuildId { version: "7.0.0".into(), commit: "fedcba987654-dirty".into(), date: "2031-05-06".into() };
    for (n, build) in [(1, older_build()), (2, newer.clone())] {
        let (command, observed) = step(0, n);
        let outcome = decide(&state, &command, &observed);
        let record = StepRecord { command, observed, outcome, build: Some(build) };
        let event = events::encode(&record, Uuid::now_v7()).unwrap();
        store.append(STREAM, ExpectedVersion::Exact(state.version), &meta(t0()), &[event]).unwrap();
        state = state.evolve(&record);
    }
    // The builds differ from this one and from each other: that is no divergence.
    let replayed = replay(with_steps(store.read_all(1)), true, None).unwrap();
    assert_eq!(replayed.divergence, None);
    assert_eq!(replayed.state, state);
    let builds: Vec<_> = projections::audit(store.read_all(1), &AuditFilter::default())
        .map(|e| e.unwrap())
        .map(|e| (e.build.clone(), e.build_text()))
        .collect();
    assert_eq!(
        builds,
        vec![
            (None, "unknown".to_string()),
            (Some(older_build()), "0.0.9 0123456789ab".to_string()),
            (Some(newer), "7.0.0 fedcba987654-dirty".to_string()),
        ]
    );
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let event = NewEvent::new("FoldersChosen", 99, &serde_json::json!({})).unwrap();
    store.append(STREAM, ExpectedVersion::NoStream, &meta(t0()), &[event]).unwrap();
    let err = projections::current_state(&store).unwrap_err();
    assert!(err.to_string().contains("upgrade regent"), "{err}");
}

#[test]
fn the_audit_trail_lists_each_step_with_who_what_and_why_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // folders refused (n=0: 10 free < 50 needed), folders accepted, bad proxy port 0? (n=2), clear proxy
    record(&store, &[0, 0, 1, 2, 7, 7], &[]);
    let all: Vec<_> = projections::audit(store.read_all(1), &AuditFilter::default()).map(Result::unwrap).collect();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].outcome, "refused");
    assert_eq!(all[0].reason, Some(regent_engine::Reason::InsufficientScratchSpace));
    assert_eq!(all[0].actor, "ops@srv");
    assert_eq!(all[0].build, Some(older_build()));
    assert_eq!(all[0].build_text(), "0.0.9 0123456789ab");
    assert!(all[1].summary.starts_with("folders chosen"), "{}", all[1].summary);
    assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    let refused: Vec<_> =
        projections::audit(store.read_all(1), &AuditFilter { kind: Some("refused".into()), ..Default::default() })
            .map(Result::unwrap)
            .collect();
    assert!(refused.iter().all(|e| e.outcome == "refused") && !refused.is_empty());
    let proxy: Vec<_> =
        projections::audit(store.read_all(1), &AuditFilter { kind: Some("proxy".into()), ..Default::default() })
            .map(Result::unwrap)
            .collect();
    assert_eq!(proxy.iter().map(|e| e.position).collect::<Vec<_>>(), vec![3, 4]);
    let since = t0() + Duration::minutes(4);
    let late: Vec<_> = projections::audit(
        store.read_all(1),
        &AuditFilter { since: Some(since), limit: Some(1), ..Default::default() },
    )
    .map(Result::unwrap)
    .collect();
    assert_eq!(late.iter().map(|e| e.position).collect::<Vec<_>>(), vec![5]);
}

#[test]
fn the_audit_tail_gives_the_newest_entries_oldest_first_and_before_bounds_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    record(&store, &[0, 0, 1, 2, 7, 7], &[]);
    let positions = |filter: AuditFilter| -> Vec<u64> {
        projections::audit(store.read_all(1), &filter).map(|e| e.unwrap().position).collect()
    };
    assert_eq!(positions(AuditFilter { tail: Some(2), ..Default::default() }), vec![5, 6]);
    assert_eq!(positions(AuditFilter { tail: Some(10), ..Default::default() }), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(positions(AuditFilter { tail: Some(0), ..Default::default() }), Vec::<u64>::new());
    assert_eq!(positions(AuditFilter { limit: Some(2), ..Default::default() }), vec![1, 2]);
    let all: Vec<_> = projections::audit(store.read_all(1), &AuditFilter::default()).map(Result::unwrap).collect();
    let before = all[3].at;
    assert_eq!(positions(AuditFilter { before: Some(before), tail: Some(2), ..Default::default() }), vec![2, 3]);
    let filter = AuditFilter { kind: Some("PROXY".into()), tail: Some(1), ..Default::default() };
    assert_eq!(positions(filter), vec![4]);
}

#[test]
fn every_kind_the_fixtures_record_is_a_known_audit_kind_and_a_misspelt_one_is_not() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../replay-fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines().skip(1) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let kind = value["record"]["kind"].as_str().unwrap();
            assert!(AuditFilter::is_known_kind(kind), "{kind} in {}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 0);
    for step in regent_engine::Step::ALL {
        assert!(AuditFilter::is_known_kind(step.name()));
    }
    for known in ["refused", "Accepted", "stepRefused", "scratch-folder", "passphrase_change"] {
        assert!(AuditFilter::is_known_kind(known), "{known}");
    }
    for unknown in ["", "proxies", "StepAccepted", "scratch-dir", "Refused "] {
        assert!(!AuditFilter::is_known_kind(unknown), "{unknown}");
    }
}
