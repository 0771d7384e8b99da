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

/// An agent whose log holds five proxy steps accepted (ports 1 to 5), then one refused.
fn agent_with_six_steps() -> crate::support::Agent {
    let agent = crate::support::Agent::new();
    for port in ["1", "2", "3", "4", "5", "70000"] {
        agent.run(&["proxy", "set", "--host", "proxy.example", "--port", port]);
    }
    agent
}

fn positions(output: &std::process::Output) -> Vec<u64> {
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    stdout_of(output)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["position"].as_u64().unwrap())
        .collect()
}

#[test]
fn tail_gives_the_newest_entries_oldest_first_and_limit_still_the_oldest() {
    let agent = agent_with_six_steps();
    assert_eq!(positions(&agent.run(&["audit", "--json", "--tail", "2"])), vec![5, 6]);
    assert_eq!(positions(&agent.run(&["audit", "--json", "--limit", "2"])), vec![1, 2]);
    assert_eq!(positions(&agent.run(&["audit", "--json", "--tail", "1", "--kind", "accepted"])), vec![5]);
    assert_eq!(positions(&agent.run(&["audit", "--json", "--tail", "50"])), vec![1, 2, 3, 4, 5, 6]);
    // The table reads down in time: the heading, then the two newest, the older first.
    let table = agent.run(&["audit", "--tail", "2"]);
    let text = stdout_of(&table);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].contains("WHEN (UTC)"), "{text}");
    assert!(rows[1].trim_start().starts_with("5 ") && rows[2].trim_start().starts_with("6 "), "{text}");
    let both = agent.run(&["audit", "--tail", "1", "--limit", "1"]);
    assert_eq!(both.status.code(), Some(2), "{}", String::from_utf8_lossy(&both.stderr));
}

#[test]
fn an_unknown_kind_is_a_usage_error_that_lists_the_kinds() {
    let agent = agent_with_six_steps();
    let output = agent.run(&["audit", "--kind", "proxies"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for named in ["'proxies' is not a kind", "folders", "scratch_folder", "passphrase_change", "refused", "StepRefused"]
    {
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
    let output = agent.run(&["--json", "audit", "--kind", "proxies"]);
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((answer["error"]["code"].as_str(), answer["error"]["exit"].as_u64()), (Some("usage"), Some(2)));
    // A step as the table spells it, and with a dash for the underscore, are kinds.
    assert_eq!(positions(&agent.run(&["audit", "--json", "--kind", "scratch-folder"])), Vec::<u64>::new());
    assert_eq!(positions(&agent.run(&["audit", "--json", "--kind", "Proxy", "--tail", "1"])), vec![6]);
}

#[test]
fn since_and_until_take_the_time_the_table_prints_rfc_3339_and_a_date() {
    let agent = agent_with_six_steps();
    let first: serde_json::Value =
        serde_json::from_str(stdout_of(&agent.run(&["audit", "--json", "--limit", "1"])).lines().next().unwrap())
            .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(first["at"].as_str().unwrap()).unwrap().to_utc();
    // The time exactly as the table shows it: the second it names is in, at either end.
    let shown = at.format("%Y-%m-%d %H:%M:%S").to_string();
    let table = stdout_of(&agent.run(&["audit", "--limit", "1"]));
    assert!(table.contains(&shown), "{shown} in {table}");
    let in_that_second = positions(&agent.run(&["audit", "--json", "--since", &shown, "--until", &shown]));
    assert_eq!(in_that_second.first(), Some(&1), "{in_that_second:?}");
    let with_utc = format!("{shown} UTC");
    assert_eq!(positions(&agent.run(&["audit", "--json", "--until", &with_utc])).first(), Some(&1));
    let before = (at - chrono::Duration::seconds(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(positions(&agent.run(&["audit", "--json", "--until", &before])), Vec::<u64>::new());
    let day = at.format("%Y-%m-%d").to_string();
    assert_eq!(positions(&agent.run(&["audit", "--json", "--since", &day, "--until", &day])).len(), 6);
    let next_day = (at + chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    assert_eq!(positions(&agent.run(&["audit", "--json", "--since", &next_day])), Vec::<u64>::new());
    let bad = agent.run(&["audit", "--until", "2026-13-01"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("as the audit table prints it"));
}
