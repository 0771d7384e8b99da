//! Large and hostile exported logs: `regent replay` and `regent audit verify --file` stream them,
//! so their peak memory does not grow with the file.
//!
//! Peak memory is the child's own maximum resident set (`VmHWM`, sampled; see `run_measured`). The 2 GiB valid log is too
//! slow for a debug build in CI; it runs with `--ignored` on a release build (BENCHMARKS.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// Runs `regent ARGS`; its exit code, stderr and peak RSS in bytes.
///
/// The peak is the child's own `VmHWM` (from `/proc/PID/status`, read every few milliseconds
/// until it exits): that counter belongs to the address space exec gave the child. wait4's
/// `ru_maxrss` is not used: Linux carries the spawning process's high-water mark into it across
/// exec, so a test binary grown large by other tests running beside it would be measured instead.
/// A memory that grew with the file would grow for as long as the child reads, so sampling sees it.
fn run_measured(args: &[&std::ffi::OsStr]) -> (i32, String, u64) {
    // A child quicker than the first sample is run again (it reads nothing it has not read before).
    for _ in 0..20 {
        let (code, stderr, peak) = run_sampled(args);
        if peak > 0 {
            return (code, stderr, peak);
        }
    }
    panic!("the child's memory could not be read in 20 runs");
}

fn run_sampled(args: &[&std::ffi::OsStr]) -> (i32, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regent"))
        .env_remove("REGENT_DATA_DIR")
        .env("NO_COLOR", "1")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file).ok().and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        }) {
            peak = peak.max(kib * 1024);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap(), peak)
}

/// A valid export of at least `bytes`: the change-properties fixture (recorded from a real run),
/// then its last event (a proxy cleared, accepted in any phase) again and again, re-chained.
fn grow_fixture(out: &Path, bytes: u64) -> u64 {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../replay-fixtures/change-properties.jsonl");
    let text = std::fs::read_to_string(fixture).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let mut header: Value = serde_json::from_str(lines.remove(0)).unwrap();
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let mut template = last["record"].clone();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    // The header goes first but names the head, which is known only at the end: write a
    // placeholder of the same length and patch it.
    let placeholder = format!("{:<200}", serde_json::to_string(&header).unwrap());
    writeln!(file, "{placeholder}").unwrap();
    let mut written = placeholder.len() as u64 + 1;
    for line in &lines {
        writeln!(file, "{line}").unwrap();
        written += line.len() as u64 + 1;
    }
    let mut position = template["position"].as_u64().unwrap();
    let mut prev = last["hash"].as_str().unwrap().to_string();
    while written < bytes {
        position += 1;
        template["position"] = position.into();
        template["version"] = position.into();
        template["event_id"] = uuid::Uuid::now_v7().to_string().into();
        template["prev_hash"] = prev.clone().into();
        let body = serde_json::to_string(&template).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(hex::decode(&prev).unwrap());
        hasher.update(body.as_bytes());
        prev = hex::encode(hasher.finalize());
        let line = format!("{{\"hash\":\"{prev}\",\"record\":{body}}}");
        writeln!(file, "{line}").unwrap();
        written += line.len() as u64 + 1;
    }
    file.flush().unwrap();
    drop(file);
    header["head"] = serde_json::json!({ "position": position, "hash": prev });
    let patched = format!("{:<200}", serde_json::to_string(&header).unwrap());
    assert_eq!(patched.len(), placeholder.len(), "the head must keep the header's length");
    let mut file = std::fs::OpenOptions::new().write(true).open(out).unwrap();
    file.write_all(patched.as_bytes()).unwrap();
    position
}

fn replay_and_verify(log: &Path) -> [(i32, String, u64); 2] {
    [
        run_measured(&["replay".as_ref(), "--check".as_ref(), log.as_os_str()]),
        run_measured(&["audit".as_ref(), "verify".as_ref(), "--file".as_ref(), log.as_os_str()]),
    ]
}

#[test]
fn a_larger_log_streams_without_more_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small.jsonl"), dir.path().join("large.jsonl"));
    grow_fixture(&small, MIB);
    let records = grow_fixture(&large, 64 * MIB);
    assert!(records > 50_000, "{records}");
    let small_runs = replay_and_verify(&small);
    let large_runs = replay_and_verify(&large);
    for ((code_s, err_s, rss_s), (code_l, err_l, rss_l)) in small_runs.iter().zip(&large_runs) {
        assert_eq!((*code_s, *code_l), (0, 0), "{err_s}{err_l}");
        // 64 times the log, not 64 times the memory: the reader holds a few batches at a time.
        assert!(*rss_l < rss_s + 16 * MIB, "1 MiB log: {} MiB peak; 64 MiB log: {} MiB peak", rss_s / MIB, rss_l / MIB);
        assert!(*rss_l < 100 * MIB, "{} MiB", rss_l / MIB);
    }
}

#[test]
fn a_two_gib_line_is_refused_at_its_start_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("huge-line.jsonl");
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../replay-fixtures/registered.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
    let mut file = std::fs::File::create(&log).unwrap();
    writeln!(file, "{header}").unwrap();
    write!(file, "{{\"hash\":\"").unwrap();
    // A sparse 2 GiB line with no newline: cheap on disk, as long as the reader reads it.
    file.set_len(2 << 30).unwrap();
    drop(file);
    for (code, stderr, rss) in replay_and_verify(&log) {
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("longer than"), "{stderr}");
        assert!(rss < 100 * MIB, "{} MiB", rss / MIB);
    }
}

/// `cargo test --release -p regent-cli --test e2e -- --ignored two_gib --nocapture`
#[test]
#[ignore = "writes a 2 GiB log; run on a release build (BENCHMARKS.md)"]
#[allow(clippy::disallowed_macros)] // it prints the measurement for whoever runs it (see cli/clippy.toml)
fn a_two_gib_valid_log_replays_and_verifies_in_bounded_memory() {
    let dir = std::env::var_os("REGENT_LARGE_LOG_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(dir).unwrap();
    let log = dir.path().join("2gib.jsonl");
    let records = grow_fixture(&log, 2 << 30);
    for (what, (code, stderr, rss)) in ["replay --check", "audit verify --file"].iter().zip(replay_and_verify(&log)) {
        assert_eq!(code, 0, "{stderr}");
        eprintln!("{what}: {records} records, 2 GiB, peak RSS {} MiB", rss / MIB);
        assert!(rss < 100 * MIB, "{what}: {} MiB", rss / MIB);
    }
}
