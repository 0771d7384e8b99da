//! Every recorded log in `replay-fixtures/` (recorded by `replay-fixtures/record.sh` from real runs)
//! replays through the binary to the outcome written beside it, and `--check` finds exactly the
//! divergences the fixtures say. Together they cover every reason code of docs/cli.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../replay-fixtures")
}

fn regent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env("NO_COLOR", "1");
    cmd
}

/// (fixture name, its log, its expected outcome), every log having an expectation and the reverse.
fn fixtures() -> Vec<(String, PathBuf, Value)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".jsonl")) else {
            continue;
        };
        let expected_path = path.with_file_name(format!("{name}.expected.json"));
        let expected =
            std::fs::read(&expected_path).unwrap_or_else(|e| panic!("{name}: no expectation beside it: {e}"));
        found.push((name.to_string(), path, serde_json::from_slice(&expected).unwrap()));
    }
    let expectations = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().to_string_lossy().ends_with(".expected.json"));
    assert_eq!(expectations.count(), found.len(), "an expectation without its log");
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[test]
fn every_fixture_replays_to_its_expected_outcome_and_check_agrees() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 20, "only {} fixtures", fixtures.len());
    for (name, log, expected) in &fixtures {
        let out = regent().args(["replay", "--check", "--json"]).arg(log).output().unwrap();
        let diverges = expected["check"]["diverged"].as_bool().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(if diverges { 1 } else { 0 }), "{name}: {stderr}");
        let got: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}"));
        let status = &got["status"];
        assert_eq!(status["phase"], expected["phase"], "{name}");
        assert_eq!(status["last_failure"]["reason"], expected["last_failure"], "{name}");
        assert_eq!(status["events"], expected["events"], "{name}");
        assert_eq!(got["check"]["diverged"], expected["check"]["diverged"], "{name}");
        if diverges {
            assert_eq!(got["check"]["position"], expected["check"]["position"], "{name}");
            assert_eq!(got["check"]["now_decides"]["reason"], expected["check"]["now_decides"], "{name}");
        } else {
            assert!(got["check"]["position"].is_null(), "{name}");
        }
        if let Some(size) = expected.get("backup_size_bytes") {
            assert_eq!(&got["properties"]["folders"]["backup_size_bytes"], size, "{name}");
        }
        if let Some(schema) = expected.get("oldest_schema") {
            assert_eq!(Some(oldest_schema(log)), schema.as_u64(), "{name}: the old schema must really be in the file");
        }
        // Steps of schema 4 on name the build that recorded them (record.sh runs a checkout);
        // older ones name none, and the timeline says so.
        for (schema, build) in builds(log) {
            if schema >= 4 {
                let commit =
                    build["commit"].as_str().unwrap_or_else(|| panic!("{name}: a schema {schema} step names no build"));
                assert_eq!(commit.trim_end_matches("-dirty").len(), 12, "{name}: {build}");
            } else {
                assert!(build.is_null(), "{name}: a schema {schema} step names a build: {build}");
            }
        }
        // The head replay reached is the one the export's header names, and the file verifies alone.
        let header: Value =
            serde_json::from_str(std::fs::read_to_string(log).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(status["head"], header["head"], "{name}");
        let verify = regent().args(["audit", "verify", "--file"]).arg(log).output().unwrap();
        assert_eq!(verify.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&verify.stderr));

        // The human timeline shows the failure the fixture ends on.
        let human = regent().args(["replay", "--check"]).arg(log).output().unwrap();
        assert_eq!(human.status.code(), out.status.code(), "{name}");
        let text = String::from_utf8_lossy(&human.stdout);
        if let Some(reason) = expected["last_failure"].as_str() {
            assert!(text.contains(reason), "{name}: the timeline does not show {reason}:\n{text}");
        }
        assert_eq!(text.contains("DIVERGED at record"), diverges, "{name}:\n{text}");
        // Steps from before schema 4 name no build: the timeline says so.
        if expected.get("oldest_schema").and_then(serde_json::Value::as_u64).is_some_and(|schema| schema < 4) {
            assert!(text.contains(" unknown "), "{name}: the timeline shows no unknown build:\n{text}");
        }
    }
}

#[test]
fn the_fixtures_cover_every_reason_code_a_registration_and_a_divergence() {
    let fixtures = fixtures();
    let ends_on: BTreeSet<&str> = fixtures.iter().filter_map(|(_, _, e)| e["last_failure"].as_str()).collect();
    for reason in regent_engine::Reason::ALL {
        assert!(ends_on.contains(reason.code()), "no fixture ends on {}; add a scenario to record.sh", reason.code());
    }
    let registered_clean =
        fixtures.iter().filter(|(_, _, e)| e["phase"] == "registered" && e["last_failure"].is_null()).count();
    assert!(registered_clean >= 2, "successful registrations: {registered_clean}");
    assert!(fixtures.iter().any(|(_, _, e)| e["check"]["diverged"] == true), "no divergence fixture");
    assert!(fixtures.iter().any(|(_, _, e)| e.get("oldest_schema").is_some()), "no old-schema fixture");
    assert!(fixtures.iter().any(|(name, _, _)| name == "change-properties"), "no Change Properties session");
}

/// Each record's schema and the build its payload names (null when none).
fn builds(log: &Path) -> Vec<(u64, Value)> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let stored: Value = serde_json::from_str(line).unwrap();
            let record = &stored["record"];
            (record["schema"].as_u64().unwrap(), record["payload"]["build"].clone())
        })
        .collect()
}

/// The lowest schema version of any record in an export.
fn oldest_schema(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let stored: Value = serde_json::from_str(line).unwrap();
            stored["record"]["schema"].as_u64().unwrap()
        })
        .min()
        .unwrap()
}

#[test]
fn no_fixture_holds_a_secret_that_record_sh_typed() {
    let script = std::fs::read_to_string(fixtures_dir().join("record.sh")).unwrap();
    let secrets =
        ["proxy-pass-for-fixtures", "a good long passphrase for fixtures", "the new passphrase after a change"];
    for secret in secrets {
        assert!(script.contains(secret), "record.sh no longer types '{secret}'; update this list");
        for (name, log, _) in fixtures() {
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(!text.contains(secret), "{name} holds a secret");
        }
    }
}

#[test]
fn a_fixture_cut_short_is_refused_as_incomplete_not_replayed_as_if_whole() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures_dir().join("change-properties.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let out = regent().args(["replay", "--check", "--json"]).arg(&cut).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("incomplete") && stderr.lines().count() == 1, "{stderr}");
}
