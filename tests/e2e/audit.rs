//! `regent audit verify` and `regent audit export` against a store and its exports.

use assert_cmd::Command;
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, NewEvent, StoreOptions};
use std::path::Path;

fn regent(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env("NO_COLOR", "1").arg("--data-dir").arg(data_dir);
    cmd
}

/// A data dir whose store holds `n` events.
fn data_dir_with_events(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("store"), &StoreOptions::default()).unwrap();
    let meta = BatchMeta {
        recorded_at: chrono::Utc::now(),
        actor: Actor { user: "ops".into(), host: "srv".into() },
        correlation_id: uuid::Uuid::now_v7(),
    };
    for i in 0..n {
        let event = NewEvent::new("TestHappened", 1, &serde_json::json!({ "i": i })).unwrap();
        store.append("test", ExpectedVersion::Any, &meta, &[event]).unwrap();
    }
    dir
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn verify_reports_the_head_of_an_intact_store() {
    let dir = data_dir_with_events(5);
    let output = regent(dir.path()).args(["audit", "verify", "--json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(report["records"], 5);
    assert_eq!(report["verified_head"]["position"], 5);
    assert!(report["failure"].is_null());
}

#[test]
fn an_export_verifies_alone_and_a_tampered_one_fails_naming_the_record() {
    let dir = data_dir_with_events(6);
    let export = dir.path().join("log.jsonl");
    regent(dir.path()).args(["audit", "export", "--output"]).arg(&export).assert().success();
    regent(dir.path()).args(["audit", "verify", "--file"]).arg(&export).assert().success();

    // Exporting over an existing file is refused rather than overwriting it.
    let again = regent(dir.path()).args(["audit", "export", "--output"]).arg(&export).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let text = std::fs::read_to_string(&export).unwrap();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("{\"i\":3}", "{\"i\":33}", 1)).unwrap();
    let output = regent(dir.path()).args(["audit", "verify", "--file"]).arg(&tampered).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = stdout_of(&output);
    assert!(stdout.contains("record 4") && stdout.contains("hash mismatch"), "{stdout}");
}

#[test]
fn verify_against_an_old_head_catches_a_cut_tail_of_an_export() {
    let dir = data_dir_with_events(4);
    let export = dir.path().join("log.jsonl");
    regent(dir.path()).args(["audit", "export", "-o"]).arg(&export).assert().success();
    let head = EventStore::open(dir.path().join("store"), &StoreOptions::default()).unwrap().head();
    let mut lines: Vec<String> = std::fs::read_to_string(&export).unwrap().lines().map(String::from).collect();
    lines.truncate(3);
    // Rewrite the header's head too, as someone hiding the cut would.
    let cut_head = regent_store::record::decode(lines[2].as_bytes()).unwrap();
    let header = format!(
        "{{\"format\":\"regent-log\",\"format_version\":1,\"writer\":\"x\",\"head\":{{\"position\":2,\"hash\":\"{}\"}}}}",
        cut_head.hash
    );
    lines[0] = header;
    std::fs::write(&export, lines.join("\n")).unwrap();
    regent(dir.path()).args(["audit", "verify", "--file"]).arg(&export).assert().success();
    let output = regent(dir.path())
        .args(["audit", "verify", "--file"])
        .arg(&export)
        .arg("--head")
        .arg(head.to_string())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout_of(&output).contains("truncated"), "{}", stdout_of(&output));
}

#[test]
fn a_store_held_by_another_process_waits_then_exits_3_with_one_clear_line() {
    let dir = data_dir_with_events(1);
    let _held = EventStore::open(dir.path().join("store"), &StoreOptions::default()).unwrap();
    let output = regent(dir.path()).args(["audit", "verify"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("waiting"), "it says it is waiting: {stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("regent: ") && last.contains("in use by another process"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn bad_input_gets_one_line_and_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["audit", "verify", "--file", "/no/such/file"], 1, "cannot read"),
        (vec!["audit", "verify", "--head", "7"], 2, "POSITION:HASH"),
        (vec!["audit", "frobnicate"], 2, "unrecognized"),
    ];
    for (args, code, says) in cases {
        let output = regent(dir.path()).args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").unwrap();
    let output = regent(dir.path()).args(["audit", "verify", "--file"]).arg(&empty).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty"));
    let data_file = dir.path().join("a-file");
    std::fs::write(&data_file, b"x").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_regent"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&data_file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
}
