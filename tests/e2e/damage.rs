//! A store whose disk went bad, through the real binary: sled's data file with flipped bytes, cut
//! short, or gone. Every command says what is damaged and what still reads in one line, without
//! sled's internals, naming commands that exist; moving the store aside as told and importing an
//! export taken before the damage gives the same store back.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::Agent;

impl Agent {
    fn store_dir(&self) -> PathBuf {
        self.data_dir().join("store")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
        output
    }

    /// Folders, a proxy with a password, credentials and a passphrase: a log that refers to
    /// sealed values kept beside it.
    fn steps(&self) {
        let folders = self.folders();
        assert_eq!(code(&folders), 0, "{}", stderr(&folders));
        let proxy = self
            .cmd()
            .args(["proxy", "set", "--host", "proxy.example", "--port", "3128", "--username", "ops"])
            .arg("--password-stdin")
            .write_stdin("proxy secret\n")
            .output()
            .unwrap();
        assert_eq!(code(&proxy), 0, "{}", stderr(&proxy));
        let credentials = self.path("vault.VaultCredentials");
        crate::support::write_credentials(&credentials, "vault-one", chrono::Utc::now(), 48);
        self.ok(&["credentials", "load", credentials.to_str().unwrap()]);
        let passphrase = self
            .cmd()
            .args(["passphrase", "set", "--passphrase-stdin"])
            .write_stdin("a good long passphrase\n")
            .output()
            .unwrap();
        assert_eq!(code(&passphrase), 0, "{}", stderr(&passphrase));
    }

    fn status(&self) -> (i32, Value) {
        let output = self.run(&["--json", "status"]);
        let value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", String::from_utf8_lossy(&output.stdout)));
        (code(&output), value)
    }

    /// An export of the store as it is now.
    fn export(&self) -> PathBuf {
        let file = self.path("before.jsonl");
        self.ok(&["audit", "export", "--output", file.to_str().unwrap()]);
        file
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What `status --json` says of the log itself.
fn log_facts(status: &Value) -> Value {
    serde_json::json!({
        "phase": status["phase"], "next_step": status["next_step"], "events": status["events"],
        "head": status["head"], "last_failure": status["last_failure"],
    })
}

/// The one line a failing command ends with: alone on stderr, starting `regent: `, without sled's
/// internals (Debug text of its types, its raw log lines).
fn the_one_line(output: &Output, args: &[&str]) -> String {
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line on stderr, got: {text}");
    let line = lines[0];
    assert!(line.starts_with("regent: "), "{args:?}: {line}");
    for internal in ["Some(", "None", "Inline(", "Blob(", "ERROR", "sled::", "backtrace"] {
        assert!(!line.contains(internal), "{args:?}: `{internal}` in: {line}");
    }
    line.to_string()
}

/// The commands a message names in backquotes, each checked to exist: `mv` moves something that
/// is there to a name that is free, and each `regent ...` is a subcommand the binary knows.
fn named_commands(agent: &Agent, line: &str) -> Vec<String> {
    let commands: Vec<String> = line.split('`').skip(1).step_by(2).map(str::to_string).collect();
    assert!(commands.iter().any(|c| c.starts_with("mv ")), "an mv to move the store aside: {line}");
    assert!(commands.iter().any(|c| c.starts_with("regent import ")), "regent import: {line}");
    for command in &commands {
        let words: Vec<&str> = command.split(' ').collect();
        match words[0] {
            "mv" => {
                assert_eq!(words.len(), 3, "{command}");
                assert!(Path::new(words[1]).exists(), "{command}: nothing to move");
                assert!(!Path::new(words[2]).exists(), "{command}: the target is taken");
            }
            "regent" => {
                let help = agent.cmd().arg(words[1]).arg("--help").output().unwrap();
                assert_eq!(code(&help), 0, "`regent {}` does not exist: {}", words[1], stderr(&help));
            }
            other => panic!("an unexpected command `{other}` in: {line}"),
        }
    }
    commands
}

/// Every reader and a step on the damaged store: exit 3 and the one line, which names what still
/// reads when `reads` is given; `status --json` prints its document first, with `store_damage`.
/// Returns the `mv` the line names.
fn every_command_says_damaged(agent: &Agent, reads: Option<&str>) -> String {
    let export_to = agent.path("after.jsonl");
    let readers: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["properties"],
        vec!["audit"],
        vec!["audit", "verify"],
        vec!["audit", "export", "--output", export_to.to_str().unwrap()],
        vec!["--json", "properties"],
        vec!["proxy", "clear"],
    ];
    let mut lines = Vec::new();
    for args in &readers {
        let output = agent.run(args);
        assert_eq!(code(&output), 3, "{args:?}: {}", stderr(&output));
        let line = the_one_line(&output, args);
        assert!(line.contains(&format!("the store at {} is damaged: ", agent.store_dir().display())), "{line}");
        if let Some(reads) = reads {
            assert!(line.contains(reads), "{args:?}: `{reads}` in {line}");
        }
        lines.push(line);
    }
    assert!(!export_to.exists(), "no export of a damaged store");

    let output = agent.run(&["--json", "status"]);
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let line = the_one_line(&output, &["--json", "status"]);
    let document: Value = serde_json::from_slice(&output.stdout).expect("status --json prints its document");
    assert_eq!(document["store_damage"].as_str(), Some(line.trim_start_matches("regent: ")), "{document}");
    assert!(document["phase"].as_str() != Some("new"), "a damaged store is not shown as a new one: {document}");

    let commands = named_commands(agent, &lines[0]);
    commands.into_iter().find(|c| c.starts_with("mv ")).unwrap()
}

/// Runs the `mv` a message named, then imports the export: the store comes back as it was.
fn restore(agent: &Agent, mv: &str, export: &Path, before: &Value) {
    let moved = std::process::Command::new("sh").arg("-c").arg(mv).output().unwrap();
    assert_eq!(code(&moved), 0, "{mv}: {}", stderr(&moved));
    let key_before = std::fs::read(agent.data_dir().join("machine.key")).unwrap();

    let output = agent.run(&["--json", "import", export.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let imported: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(imported["head"], before["head"], "{imported}");
    assert_eq!(imported["imported"]["records"], before["events"], "{imported}");
    assert_eq!(imported["sealed_secrets"], before["sealed_secrets"], "{imported}");

    let (status_code, after) = agent.status();
    assert_eq!(status_code, 0, "{after}");
    assert_eq!(log_facts(&after), log_facts(before));
    assert_eq!(after["store_damage"], Value::Null);
    assert_eq!(after["sealed_secrets"], before["sealed_secrets"], "the machine key and sealed values still fit");
    assert_eq!(std::fs::read(agent.data_dir().join("machine.key")).unwrap(), key_before, "the key is untouched");
    let verify = agent.run(&["--json", "audit", "verify"]);
    assert_eq!(code(&verify), 0, "{}", stderr(&verify));
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["verified_head"], before["head"]);
    // The store works again: a step appends after the imported records.
    agent.ok(&["proxy", "clear"]);
    assert_eq!(agent.status().1["events"], before["events"].as_u64().unwrap() + 1);
}

/// A store with a log, an export of it, and its status (with a snapshot written by sled, as after
/// any few commands: sled then refuses a data file that no longer reads to the end).
fn agent_with_export() -> (Agent, PathBuf, Value) {
    let agent = Agent::new();
    agent.steps();
    let export = agent.export();
    let (status_code, before) = agent.status();
    assert_eq!(status_code, 0, "{before}");
    assert!(before["sealed_secrets"].as_str().unwrap().starts_with("ok ("), "{before}");
    (agent, export, before)
}

fn data_file(agent: &Agent) -> (PathBuf, Vec<u8>) {
    let path = agent.store_dir().join("db");
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Where record `position`'s bytes are in sled's data file: each copy (sled writes a page again,
/// whole, as it grows), the first written by the record's own append.
fn copies_of_record(bytes: &[u8], position: u64) -> Vec<usize> {
    let needle = format!("\"position\":{position},");
    let copies: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle.as_bytes()).map(|(at, _)| at).collect();
    assert!(!copies.is_empty(), "record {position} is in sled's data file");
    copies
}

/// Flips two bytes inside every copy of record `position` in sled's data file: whichever sled
/// reads is damaged.
fn flip_record(agent_store: &Path, position: u64) {
    let path = agent_store.join("db");
    let mut bytes = std::fs::read(&path).unwrap();
    for at in copies_of_record(&bytes, position) {
        bytes[at + 40] ^= 0xff;
        bytes[at + 41] ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn flipped_bytes_in_sleds_data_file_are_reported_with_what_still_reads_and_an_import_restores_it() {
    let (agent, export, before) = agent_with_export();
    let last = before["events"].as_u64().unwrap();
    flip_record(&agent.store_dir(), last);

    // Each step was one write: the last record alone is lost, every one before it verifies.
    let reads = format!("records 1..{} still read and verify, record {last} is lost", last - 1);
    let mv = every_command_says_damaged(&agent, Some(&reads));
    let verify = agent.run(&["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(stdout.contains(&format!("verified up to head {}:", last - 1)), "{stdout}");
    // sled's own account is there for whoever asks for it.
    let verbose = agent.run(&["-vv", "status"]);
    assert_eq!(code(&verbose), 3);
    assert!(stderr(&verbose).contains("sled::"), "{}", stderr(&verbose));

    restore(&agent, &mv, &export, &before);
    assert!(agent.data_dir().join("store.damaged").join("db").exists(), "the damaged store is kept aside");
}

#[test]
fn a_data_file_cut_short_is_reported_and_an_import_restores_it() {
    let (agent, export, before) = agent_with_export();
    let (path, bytes) = data_file(&agent);
    let last = before["events"].as_u64().unwrap();
    // Cut where the third record was first written: sled's log holds records 1 and 2 before it.
    let at = copies_of_record(&bytes, 3)[0];
    std::fs::write(&path, &bytes[..at]).unwrap();

    let reads = format!("records 1..2 still read and verify, records 3..{last} are lost");
    let mv = every_command_says_damaged(&agent, Some(&reads));
    restore(&agent, &mv, &export, &before);
}

#[test]
fn an_emptied_store_directory_is_damage_not_a_new_store() {
    let (agent, export, before) = agent_with_export();
    for entry in std::fs::read_dir(agent.store_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { std::fs::remove_dir_all(&path).unwrap() } else { std::fs::remove_file(&path).unwrap() }
    }

    let mv = every_command_says_damaged(&agent, Some("sled's data file (db) is gone; none of its records can be read"));
    assert_eq!(std::fs::read_dir(agent.store_dir()).unwrap().count(), 0, "nothing was created in it");
    restore(&agent, &mv, &export, &before);
}

#[test]
fn sleds_files_removed_beside_the_durable_head_are_damage_naming_what_was_lost() {
    let (agent, export, before) = agent_with_export();
    let last = before["events"].as_u64().unwrap();
    for entry in std::fs::read_dir(agent.store_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "regent-durable-head" {
            continue;
        }
        if path.is_dir() { std::fs::remove_dir_all(&path).unwrap() } else { std::fs::remove_file(&path).unwrap() }
    }

    let reads = format!("sled's data file (db) is gone; it held records 1..{last}; none of its records can be read");
    let mv = every_command_says_damaged(&agent, Some(&reads));
    assert!(!agent.store_dir().join("db").exists(), "no empty store was made in its place");
    restore(&agent, &mv, &export, &before);
}

#[test]
fn import_refuses_a_store_that_is_not_empty_or_damaged_naming_the_mv_to_run() {
    let (agent, export, before) = agent_with_export();
    let output = agent.run(&["import", export.to_str().unwrap()]);
    assert_eq!(code(&output), 3);
    let line = the_one_line(&output, &["import"]);
    assert!(line.contains(&format!("already holds {} records", before["events"])), "{line}");
    let json = agent.run(&["--json", "import", export.to_str().unwrap()]);
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (answer["error"]["code"].as_str(), answer["error"]["exit"].as_u64()),
        (Some("store_not_empty"), Some(3))
    );
    let commands = named_commands(&agent, &line);
    assert!(commands[0].ends_with("store.before-import"), "{line}");
    assert_eq!(log_facts(&agent.status().1), log_facts(&before), "nothing was imported");

    // Damaged: the same, with what is damaged.
    std::fs::remove_file(agent.store_dir().join("db")).unwrap();
    let output = agent.run(&["import", export.to_str().unwrap()]);
    assert_eq!(code(&output), 3);
    let line = the_one_line(&output, &["import"]);
    assert!(line.contains("is damaged: sled's data file (db) is gone"), "{line}");
    let commands = named_commands(&agent, &line);
    let absolute_export = std::path::absolute(&export).unwrap();
    assert!(commands.contains(&format!("regent import {}", absolute_export.display())), "{line}");
}

#[test]
fn import_refuses_files_that_are_not_whole_exports_and_leaves_the_store_empty() {
    let (source, export, _) = agent_with_export();
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let write = |name: &str, content: String| {
        let path = source.path(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let cases = [
        (write("notes.txt", "hello\n".into()), "not a regent log export"),
        (write("empty.jsonl", String::new()), "empty"),
        (write("tampered.jsonl", text.replacen("proxy.example", "proxy.evil.example", 1)), "the chain of"),
        (write("cut.jsonl", lines[..lines.len() - 1].join("\n")), "the copy is incomplete"),
        (source.path("no-such-file.jsonl"), "cannot read"),
    ];
    let target = Agent::new();
    for (file, says) in &cases {
        let output = target.run(&["import", file.to_str().unwrap()]);
        assert_eq!(code(&output), 1, "{file:?}: {}", stderr(&output));
        let line = the_one_line(&output, &["import"]);
        assert!(line.contains(says), "{file:?}: `{says}` in {line}");
        if target.store_dir().exists() {
            let (status_code, status) = target.status();
            assert_eq!(
                (status_code, &status["events"]),
                (0, &Value::from(0)),
                "{file:?}: a refused import leaves nothing"
            );
        }
    }
    // The store the refused imports left is empty and takes the whole export.
    let output = target.run(&["import", export.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(target.status().1["head"], source.status().1["head"]);

    // The file's header is read before anything is made: a file that is no export leaves no data dir.
    let fresh = Agent::new();
    let output = fresh.run(&["import", cases[0].0.to_str().unwrap()]);
    assert_eq!(code(&output), 1);
    assert!(!fresh.data_dir().exists(), "nothing is created for a file that is refused at its first line");
}

#[test]
fn an_export_imported_on_another_machine_says_its_sealed_values_cannot_be_read_there() {
    let (source, export, before) = agent_with_export();

    // A machine that has no data dir yet: import makes one, and no key or secrets in it.
    let fresh = Agent::new();
    let output = fresh.run(&["import", export.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("UNREADABLE"), "import says so at once");
    let (status_code, status) = fresh.status();
    assert_eq!(status_code, 0, "{status}");
    assert_eq!(log_facts(&status), log_facts(&before));
    let sealed = status["sealed_secrets"].as_str().unwrap();
    assert!(sealed.starts_with("UNREADABLE: ") && sealed.contains("proxy password"), "{sealed}");
    assert!(!fresh.data_dir().join("machine.key").exists(), "no machine key is made");
    assert!(!fresh.data_dir().join("secrets").exists(), "no secrets area is made");

    // A machine with a key and sealed values of its own: they stay as they are.
    let other = Agent::new();
    other.steps();
    let key = std::fs::read(other.data_dir().join("machine.key")).unwrap();
    let secrets_before = crate::support::files_under(&other.data_dir().join("secrets"));
    std::fs::rename(other.store_dir(), other.data_dir().join("store.mine")).unwrap();
    other.ok(&["import", export.to_str().unwrap()]);
    let (status_code, status) = other.status();
    assert_eq!(status_code, 0, "{status}");
    assert_eq!(log_facts(&status), log_facts(&before));
    let sealed = status["sealed_secrets"].as_str().unwrap();
    assert!(sealed.starts_with("UNREADABLE: "), "another machine key opens none of them: {sealed}");
    assert_eq!(std::fs::read(other.data_dir().join("machine.key")).unwrap(), key);
    assert_eq!(crate::support::files_under(&other.data_dir().join("secrets")), secrets_before);
    drop(source);
}

#[test]
fn a_page_sled_cannot_read_in_the_middle_of_a_long_log_is_located_by_verify() {
    let agent = Agent::new();
    {
        let store = regent_store::EventStore::open(agent.store_dir(), &Default::default()).unwrap();
        let meta = regent_store::BatchMeta {
            recorded_at: chrono::Utc::now(),
            actor: regent_store::Actor { user: "ops".into(), host: "srv".into() },
            correlation_id: uuid::Uuid::now_v7(),
        };
        for i in 0..50 {
            let batch: Vec<_> = (0..10)
                .map(|j| {
                    regent_store::NewEvent::new("TestHappened", 1, &serde_json::json!({ "i": i * 10 + j })).unwrap()
                })
                .collect();
            store.append("test", regent_store::ExpectedVersion::Any, &meta, &batch).unwrap();
        }
    }
    let export = agent.export();
    // sled's snapshot points at every page now; it reads the damaged one only when asked for it.
    flip_record(&agent.store_dir(), 250);

    let output = agent.run(&["audit", "verify"]);
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let line = the_one_line(&output, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed_at: u64 = stdout
        .strip_prefix("FAILED at record ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!((2..=250).contains(&failed_at), "{stdout}");
    assert!(stdout.contains("cannot be read"), "{stdout}");
    let reads = format!("records 1..{} still read and verify, then record {failed_at}: cannot be read", failed_at - 1);
    assert!(line.contains(&reads), "{line}");
    let mv = named_commands(&agent, &line).into_iter().find(|c| c.starts_with("mv ")).unwrap();

    // Readers that meet it say so in the same terms, and name the walk that locates it.
    let output = agent.run(&["audit", "export", "--output", agent.path("after.jsonl").to_str().unwrap()]);
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let line = the_one_line(&output, &["audit", "export"]);
    assert!(line.contains("is damaged: sled cannot read its data file (db) at byte "), "{line}");
    assert!(line.contains("`regent audit verify`"), "{line}");
    assert!(!agent.path("after.jsonl").exists(), "no export cut short where the file was asked for");
    named_commands(&agent, &line);

    let moved = std::process::Command::new("sh").arg("-c").arg(&mv).output().unwrap();
    assert_eq!(code(&moved), 0, "{mv}: {}", stderr(&moved));
    agent.ok(&["import", export.to_str().unwrap()]);
    let verify = agent.run(&["--json", "audit", "verify"]);
    assert_eq!(code(&verify), 0, "{}", stderr(&verify));
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["records"], 500);
}

#[test]
fn a_store_that_opens_shorter_than_what_was_written_shows_its_status_and_the_damage_then_exits_3() {
    let (agent, export, before) = agent_with_export();
    let last = before["events"].as_u64().unwrap();
    // An older, shorter store under the head last written to disk: sled kept a readable prefix.
    let durable = std::fs::read(agent.store_dir().join("regent-durable-head")).unwrap();
    std::fs::remove_dir_all(agent.store_dir()).unwrap();
    let folders = agent.folders();
    assert_eq!(code(&folders), 0, "{}", stderr(&folders));
    std::fs::write(agent.store_dir().join("regent-durable-head"), durable).unwrap();

    let reads = format!(
        "it ends at record 1 but records up to {last} were written to disk: records 2..{last} are lost; record 1 still reads and verifies;"
    );
    let mv = every_command_says_damaged(&agent, Some(&reads));
    let status = agent.run(&["status"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("phase         folders_chosen"), "what it holds is shown: {stdout}");
    assert!(stdout.contains("store         DAMAGED: it ends at record 1"), "{stdout}");
    let (_, document) = agent.status();
    assert_eq!((document["phase"].as_str(), document["events"].as_u64()), (Some("folders_chosen"), Some(1)));
    let verify = agent.run(&["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(
        stdout.contains(&format!(
            "FAILED at record 2: truncated: the log ends at position 1 but the head to check against is at {last}"
        )),
        "{stdout}"
    );

    restore(&agent, &mv, &export, &before);
}
