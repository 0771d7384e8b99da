//! Tests that need a second process: a store held by another process, and appends killed with
//! SIGKILL at random moments. The child is this test binary itself, re-run with an env var.

mod common;

use common::{meta, options};
use regent_store::{EventStore, ExpectedVersion, NewEvent, StoreError, StoreOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "REGENT_STORE_TEST_CHILD";
const DIR: &str = "REGENT_STORE_TEST_DIR";

/// The child's side: not a test of its own; does nothing unless started by a parent below.
#[test]
fn child_process_entry() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let options = StoreOptions { lock_wait: Duration::from_secs(10), ..StoreOptions::default() };
    let store = EventStore::open(&dir, &options).unwrap();
    let mut out = std::io::stdout().lock();
    match role.as_str() {
        "hold" => {
            writeln!(out, "@open").unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "append" => loop {
            // The payload names the event id, so the parent can check that each acknowledged
            // event is the one stored at its position.
            let id = uuid::Uuid::now_v7();
            let event =
                NewEvent::with_id(id, "Appended", 1, &serde_json::json!({ "id": id, "pad": "x".repeat(200) })).unwrap();
            let done = store.append("crash", ExpectedVersion::Any, &meta(), &[event]).unwrap();
            writeln!(out, "@ack {} {}", done.last_position, id).unwrap();
            out.flush().unwrap();
        },
        other => panic!("unknown child role {other}"),
    }
}

fn spawn(role: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_entry", "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_store_held_by_another_process_waits_then_fails_locked_and_opens_once_released() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = spawn("hold", dir.path());
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(lines.any(|line| line.unwrap().contains("@open")), "the holder never opened the store");
    let started = Instant::now();
    let mut waited_notice = false;
    let err = EventStore::open_with_notice(dir.path(), &options(), |_| waited_notice = true).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(waited_notice && started.elapsed() >= options().lock_wait);
    // Once the other process is gone, a waiting open goes through.
    let long_wait = StoreOptions { lock_wait: Duration::from_secs(20), ..StoreOptions::default() };
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        holder.kill().unwrap();
        holder.wait().unwrap();
    });
    let store = EventStore::open(dir.path(), &long_wait).unwrap();
    killer.join().unwrap();
    assert!(store.verify(None).unwrap().is_ok());
}

/// A tiny deterministic generator so a failing round can be reproduced from its seed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_acknowledged_append_survives_sigkill() {
    let rounds: u64 = std::env::var("REGENT_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(60);
    let seed = std::env::var("REGENT_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe);
    let mut rng = XorShift(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    for round in 0..rounds {
        let mut child = spawn("append", dir.path());
        let stdout = child.stdout.take().unwrap();
        // Read acknowledgements on a thread so the kill lands at a random moment, not between lines.
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>());
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 150));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let Some((_, ack)) = line.split_once("@ack ") else { continue };
            let (position, id) = ack.split_once(' ').unwrap();
            acknowledged.push((position.parse().unwrap(), id.to_string()));
        }
        let store = EventStore::open(dir.path(), &options()).unwrap();
        assert_eq!(store.damage(), None, "round {round} (seed {seed})");
        let report = store.verify(None).unwrap();
        assert!(report.is_ok(), "round {round} (seed {seed}): {:?}", report.failure);
        let records: std::collections::HashMap<u64, String> = store
            .read_all(1)
            .map(|r| {
                let r = r.unwrap();
                (r.position, r.payload_as::<serde_json::Value>().unwrap()["id"].as_str().unwrap().to_string())
            })
            .collect();
        for (position, id) in &acknowledged {
            assert_eq!(records.get(position), Some(id), "round {round} (seed {seed}): acknowledged append lost");
        }
    }
    assert!(acknowledged.len() as u64 > rounds, "the children must have appended: {}", acknowledged.len());
}
