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

/// The build the customer's log says recorded it: not this one.
fn customer_build() -> BuildId {
    BuildId { version: "0.0.9".into(), commit: "0123456789ab".into(), date: "2026-01-02".into() }
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
        build: Some(customer_build()),
    };
    let passphrase = StepRecord {
        command: Command::SetPassphrase { save_to: None },
        observed: Observations {
            now: meta.recorded_at,
            passphrase: Some(PassphraseObserved { length: 10, printable_ascii: true, ..PassphraseObserved::default() }),
            ..Default::default()
        },
        outcome,
        build: Some(customer_build()),
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

/// `regent --version`: `regent VERSION (COMMIT DATE)`, its three parts.
fn this_build() -> (String, String, String) {
    let out = regent().arg("--version").output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let rest = line.trim_end().strip_prefix("regent ").unwrap_or_else(|| panic!("{line}"));
    let (version, rest) = rest.split_once(" (").unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = rest.strip_suffix(')').and_then(|r| r.split_once(' ')).unwrap_or_else(|| panic!("{line}"));
    (version.to_string(), commit.to_string(), date.to_string())
}

#[test]
fn a_log_another_build_recorded_checks_clean_and_the_audit_says_which_build_wrote_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Outcome::Refused(Refusal {
        step: regent_engine::Step::Passphrase,
        reason: regent_engine::Reason::StepOutOfOrder,
        message: "load the vault credentials first".into(),
        next: vec![],
    });
    let log = export_with_passphrase_outcome(dir.path(), refused);
    let (version, commit, date) = this_build();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(commit == "unknown" || commit.trim_end_matches("-dirty").len() == 12, "{commit}");
    assert!(date == "unknown" || chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").is_ok(), "{date}");
    assert_ne!(commit, customer_build().commit);
    // Another build recorded every step: that alone is no divergence.
    let out = regent().args(["replay", "--check"]).arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let timeline = String::from_utf8_lossy(&out.stdout);
    assert!(timeline.contains("no divergence"), "{timeline}");
    assert_eq!(timeline.matches("0.0.9 0123456789ab").count(), 2, "{timeline}");

    // Imported, with a step of this build after it: the audit names both builds.
    let data = dir.path().join("data");
    let agent = |args: &[&str]| regent().arg("--data-dir").arg(&data).args(args).output().unwrap();
    let out = regent().arg("--data-dir").arg(&data).arg("import").arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(agent(&["proxy", "clear"]).status.code(), Some(0));
    let audit = agent(&["audit", "--json"]);
    let builds: Vec<serde_json::Value> = String::from_utf8(audit.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["build"].clone())
        .collect();
    let theirs = serde_json::json!({ "version": "0.0.9", "commit": "0123456789ab", "date": "2026-01-02" });
    let ours = serde_json::json!({ "version": version, "commit": commit, "date": date });
    assert_eq!(builds, vec![theirs.clone(), theirs, ours]);
    let human = String::from_utf8(agent(&["audit"]).stdout).unwrap();
    let lines: Vec<&str> = human.lines().collect();
    assert!(lines[0].contains(" BUILD "), "{human}");
    assert!(lines[3].contains(&format!("{version} {commit}")), "{human}");
    // The export names this build as its writer, as --version does.
    let export = agent(&["audit", "export"]);
    let header: serde_json::Value =
        serde_json::from_str(String::from_utf8(export.stdout).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(header["writer"], format!("regent {version} ({commit} {date})"));
}

#[test]
fn replay_json_holds_the_timeline_and_an_until_past_the_end_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Outcome::Refused(Refusal {
        step: regent_engine::Step::Passphrase,
        reason: regent_engine::Reason::StepOutOfOrder,
        message: "load the vault credentials first".into(),
        next: vec![],
    });
    let log = export_with_passphrase_outcome(dir.path(), refused);
    let out = regent().args(["replay", "--json"]).arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), 1, "one document, one line");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let timeline = answer["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2);
    assert_eq!((timeline[0]["position"].as_u64(), timeline[0]["kind"].as_str()), (Some(1), Some("FoldersChosen")));
    assert_eq!(
        (timeline[1]["outcome"].as_str(), timeline[1]["reason"].as_str()),
        (Some("refused"), Some("step_out_of_order"))
    );
    assert_eq!(timeline[1]["build"]["commit"], "0123456789ab");
    assert!(answer["until"].is_null() && answer["status"]["events"] == 2);

    let out = regent().args(["replay", "--json", "--until", "1"]).arg(&log).output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["timeline"].as_array().map(Vec::len), Some(1));
    assert_eq!(answer["until"], serde_json::json!({ "position": 1, "past_end": false, "last_position": 1 }));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = regent().args(["replay", "--json", "--until", "9"]).arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["until"], serde_json::json!({ "position": 9, "past_end": true, "last_position": 2 }));
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(warning.contains("--until 9 is past the end of the log, whose last record is 2"), "{warning}");
    // Without --json the same warning, and the timeline as before.
    let out = regent().args(["replay", "--until", "9"]).arg(&log).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("past the end"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("folders chosen"));
}
