//! `regent replay`: an exported log rebuilt elsewhere, checked against this build's rules.

use assert_cmd::Command as Cli;
use chrono::Utc;
use regent_engine::events::{self, STREAM};
use regent_engine::model::*;
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, StoreOptions};

fn regent() -> Cli {
    let mut cmd = Cli::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env("NO_COLOR", "1");
    cmd
}

/// A log recorded by some build: folders accepted, then a passphrase step whose recorded outcome
/// is `outcome` for a 10-character passphrase.
fn export_with_passphrase_outcome(dir: &std::path::Path, outcome: Outcome) -> std::path::PathBuf {
    let store = EventStore::open(dir.join("store"), &StoreOptions::default()).unwrap();
    let meta = BatchMeta {
        recorded_at: Utc::now(),
        actor: Actor { user: "customer".into(), host: "srv-9".into() },
        correlation_id: uuid::Uuid::now_v7(),
    };
    let facts = FolderFacts {
        is_dir: true,
        writable: true,
        filesystem: "ext4".into(),
        free_bytes: 1 << 40,
        ..Default::default()
    };
    let folders = StepRecord {
        command: Command::ChooseFolders {
            install_dir: "/opt/r".into(),
            scratch_dir: "/var/r".into(),
            backup_size_bytes: 1 << 30,
        },
        observed: Observations {
            now: meta.recorded_at,
            install: Some(facts.clone()),
            scratch: Some(facts),
            ..Default::default()
        },
        outcome: Outcome::Accepted(Change::FoldersChosen(Folders {
            install_dir: "/opt/r".into(),
            scratch_dir: "/var/r".into(),
            backup_size_bytes: 1 << 30,
            scratch_free_bytes: 1 << 40,
            scratch_filesystem: "ext4".into(),
        })),
    };
    let passphrase = StepRecord {
        command: Command::SetPassphrase { save_to: None },
        observed: Observations {
            now: meta.recorded_at,
            passphrase: Some(PassphraseObserved { length: 10, printable_ascii: true, ..PassphraseObserved::default() }),
            ..Default::default()
        },
        outcome,
    };
    let batch = [
        events::encode(&folders, uuid::Uuid::now_v7()).unwrap(),
        events::encode(&passphrase, uuid::Uuid::now_v7()).unwrap(),
    ];
    store.append(STREAM, ExpectedVersion::NoStream, &meta, &batch).unwrap();
    let path = dir.join("customer.jsonl");
    let mut out = std::fs::File::create(&path).unwrap();
    store.export(&mut out, "regent 0.0.9").unwrap();
    path
}

#[test]
fn a_log_replays_to_its_state_and_check_finds_no_divergence() {
    let dir = tempfile::tempdir().unwrap();
    // Recorded by a build that worded the refusal differently: the same decision all the same.
    let refused = Outcome::Refused(Refusal {
        step: regent_engine::Step::Passphrase,
        reason: regent_engine::Reason::StepOutOfOrder,
        message: "load the vault credentials first".into(),
        next: vec![],
    });
    let log = export_with_passphrase_outcome(dir.path(), refused);
    let out = regent().args(["replay", "--check", "--json"]).arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"]["phase"], "folders_chosen");
    assert_eq!(answer["status"]["last_failure"]["reason"], "step_out_of_order");
    assert_eq!(answer["properties"]["folders"]["install_dir"], "/opt/r");
    assert_eq!(answer["check"]["diverged"], false);
    // --until stops early; without --check, check is null.
    let out = regent().args(["replay", "--json", "--until", "1"]).arg(&log).output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((answer["status"]["events"].as_u64(), answer["check"].is_null()), (Some(1), true));
    assert!(answer["status"]["last_failure"].is_null());
}

#[test]
fn check_names_the_first_step_this_build_decides_differently() {
    let dir = tempfile::tempdir().unwrap();
    // An old build accepted a 10-character passphrase; this one wants credentials first anyway.
    let accepted = Outcome::Accepted(Change::PassphraseCreated(Encryption {
        origin: PassphraseOrigin::Provided,
        verifier: None,
        verifier_sealed: Some(SealedRef { id: "vf".into() }),
        sealed: None,
        set_at: Utc::now(),
        warnings: vec![],
    }));
    let log = export_with_passphrase_outcome(dir.path(), accepted);
    let out = regent().args(["replay", "--check"]).arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DIVERGED at record 2"), "{stdout}");
    // Like every non-zero exit, one line on stderr says why.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("regent: replay_diverged: ") && stderr.contains("record 2"), "{stderr}");
    let out = regent().args(["replay", "--check", "--json"]).arg(&log).output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((answer["check"]["diverged"].as_bool(), answer["check"]["position"].as_u64()), (Some(true), Some(2)));
}

#[test]
fn a_tampered_log_is_refused_unless_asked_and_bad_files_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Outcome::Refused(Refusal {
        step: regent_engine::Step::Passphrase,
        reason: regent_engine::Reason::StepOutOfOrder,
        message: "x".into(),
        next: vec![],
    });
    let log = export_with_passphrase_outcome(dir.path(), refused);
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, std::fs::read_to_string(&log).unwrap().replace("/opt/r", "/opt/X")).unwrap();
    let out = regent().arg("replay").arg(&tampered).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("record 1") && err.contains("--no-verify"), "{err}");
    assert_eq!(regent().args(["replay", "--no-verify"]).arg(&tampered).output().unwrap().status.code(), Some(0));
    for (content, says) in [
        (&b""[..], "empty"),
        (&b"a,b,c\n1,2,3\n"[..], "not a regent log export"),
        (&b"{\"format\":\"regent-log\",\"format_version\":7,\"writer\":\"regent 9\",\"head\":{\"position\":0,\"hash\":\"0000000000000000000000000000000000000000000000000000000000000000\"}}\n"[..], "upgrade regent"),
    ] {
        let file = dir.path().join("bad.jsonl");
        std::fs::write(&file, content).unwrap();
        let out = regent().arg("replay").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.lines().count() == 1, "{err}");
    }
}
