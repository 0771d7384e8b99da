//! A PostgreSQL vault whose database an attacker changes directly with SQL, the service running:
//! an anchored head in the `machines` projection, a leaf's bytes in `tree_leaves`, a kept record
//! of a machine's log in `machine_records` (changed, or deleted), a subtree hash in `tree_nodes`.
//! Each time the real `regent` binary is run as the agent, the admin and the auditor would run it,
//! and what catches the change is checked: `regent audit verify --against-vault`, the reports
//! after steps and `regent audit anchor`, `regent vault proof`, `regent vault export --machine`,
//! and the auditor's offline `regent audit verify --file EXPORT --proof BUNDLE --vault-key KEY`.
//!
//! The service is `regent vault serve --database-url` (the password in `PGPASSWORD`, as an operator
//! gives it) on a database of its own in the test binary's one cluster (`regent_testkit::postgres`,
//! as `vault_database.rs` uses it), started and stopped as `serve.rs` does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use regent_testkit::postgres::{self, Database};
use regent_vault::protocol::transparency::Leaf;
use serde_json::Value;
use sha2::Digest as _;

use crate::serve::{VARIABLES, started, stop};
use crate::support::throttling_set;

const THROTTLE: [&str; 11] = throttling_set("mon-fri", "09:00-17:00", "512Kbps", "20Mbps");
const THROTTLE_OTHER: [&str; 11] = throttling_set("sat", "08:00-09:00", "1Mbps", "2Mbps");
const THROTTLE_OFF: [&str; 3] = ["properties", "throttling", "off"];
const AGAINST_VAULT: [&str; 3] = ["audit", "verify", "--against-vault"];

/// What a run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Exit 0 with nothing on stderr.
    fn quiet(&self, what: &str) {
        assert_eq!((self.code, self.stderr.as_str()), (0, ""), "{what}: {}", self.stdout);
    }

    /// Exit `exit`, and stderr exactly one line, `regent: CODE: ...`.
    fn failed(&self, exit: i32, code: &str) {
        assert_eq!(self.code, exit, "stdout {}\nstderr {}", self.stdout, self.stderr);
        assert_eq!(self.stderr.lines().count(), 1, "one line: {}", self.stderr);
        assert!(self.stderr.starts_with(&format!("regent: {code}: ")), "{}", self.stderr);
    }

    /// The JSON document on stdout.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// A vault service on PostgreSQL with vault `prod`, and beside it the data dirs of the agents,
/// of the admin and of the auditor, and the files they pass each other.
struct Bench {
    dir: tempfile::TempDir,
    database: Database<'static>,
    vault: Option<Child>,
    url: String,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let cluster = postgres::shared();
        let database = cluster.database();
        let owner = database.owner();
        let database_url = format!("postgres://{}@127.0.0.1:{}/{}", owner.name(), cluster.port(), database.name());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
        for var in VARIABLES {
            cmd.env_remove(var);
        }
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("REGENT_DATA_DIR").env_remove("RUST_LOG").env("NO_COLOR", "1");
        cmd.env("PGPASSFILE", dir.path().join("no-pgpass")).env("PGPASSWORD", owner.password());
        cmd.arg("--data-dir").arg(dir.path().join("vault"));
        cmd.args(["--json", "vault", "serve", "--listen", "127.0.0.1:0", "--database-url", &database_url]);
        // Its log in a file: nobody reads a pipe while the test runs.
        let log = File::create(dir.path().join("vault.log")).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let (child, url) = started(cmd);
        let bench = Bench { dir, database, vault: Some(child), url };
        bench.admin(&["create", "prod"]).quiet("vault create");
        bench
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `regent --data-dir <dir>/<who> ARGS`, with none of the caller's environment.
    fn run_stdin(&self, who: &str, args: &[&str], stdin: &str) -> Run {
        let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_regent"))
            .env_remove("REGENT_DATA_DIR")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .arg("--data-dir")
            .arg(self.path(who))
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, who: &str, args: &[&str]) -> Run {
        self.run_stdin(who, args, "")
    }

    /// A step under `--json`, which must be accepted with nothing on stderr: its document.
    fn json_step(&self, agent: &str, args: &[&str]) -> Value {
        let r = self.run(agent, &[&["--json"], args].concat());
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{}", r.stdout);
        r.json()
    }

    /// `regent vault ARGS --server URL --token-file TOKEN`, as the admin (global flags first).
    fn admin(&self, args: &[&str]) -> Run {
        let token = self.path("vault").join("admin.token");
        let (flags, args): (Vec<&str>, Vec<&str>) = args.iter().partition(|arg| **arg == "--json");
        let all = [&flags[..], &["vault"], &args, &["--server", &self.url, "--token-file", token.to_str().unwrap()]];
        self.run("admin", &all.concat())
    }

    /// SQL in the vault's schema, as the cluster's superuser: the attacker.
    fn sql(&self, sql: &str) -> String {
        postgres::shared().psql(self.database.name(), &format!("SET search_path TO regent_vault; {sql}"))
    }

    /// folders, credentials (downloaded from the vault), passphrase and register: head 5.
    fn register(&self, agent: &str) -> String {
        let credentials = self.path(&format!("{agent}.VaultCredentials"));
        self.admin(&["credentials", "--vault", "prod", "--output", text(&credentials)]).quiet("download");
        let (install, scratch) = (self.path(&format!("{agent}-install")), self.path(&format!("{agent}-scratch")));
        let folders = ["folders", "--install-dir", text(&install), "--scratch-dir", text(&scratch)];
        let r = self.run(agent, &[&folders[..], &["--backup-size", "1GiB"]].concat());
        assert_eq!(r.code, 0, "{}", r.stderr);
        let r = self.run(agent, &["credentials", "load", text(&credentials)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let r = self.run_stdin(agent, &["passphrase", "set", "--passphrase-stdin"], "a good long passphrase\n");
        assert_eq!(r.code, 0, "{}", r.stderr);
        self.run(agent, &["register"]).quiet("register");
        let properties = self.run(agent, &["--json", "properties"]).json();
        properties["vault"]["machine_id"].as_str().unwrap().to_string()
    }

    /// The vault's key, as an auditor takes it: `regent vault checkpoint --public-key`.
    fn key_file(&self) -> PathBuf {
        let r = self.run("auditor", &["vault", "checkpoint", "--server", &self.url, "--public-key"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let path = self.path("vault.key");
        std::fs::write(&path, r.stdout).unwrap();
        path
    }

    /// The agent's own export.
    fn export(&self, agent: &str, name: &str) -> PathBuf {
        let path = self.path(name);
        let r = self.run(agent, &["audit", "export", "-o", text(&path)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        path
    }

    /// `regent vault proof --vault prod --machine ID -o NAME [EXTRA]`.
    fn vault_proof(&self, machine: &str, name: &str, extra: &[&str]) -> Run {
        let path = self.path(name);
        self.admin(&[&["proof", "--vault", "prod", "--machine", machine, "-o", text(&path)], extra].concat())
    }

    fn vault_bundle(&self, machine: &str, name: &str) -> PathBuf {
        let r = self.vault_proof(machine, name, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        self.path(name)
    }

    /// `regent vault export --vault prod --machine ID -o NAME [EXTRA]`: the machine's log as the
    /// vault keeps it.
    fn vault_export(&self, machine: &str, name: &str, extra: &[&str]) -> Run {
        let path = self.path(name);
        self.admin(&[&["export", "--vault", "prod", "--machine", machine, "-o", text(&path)], extra].concat())
    }

    /// `regent audit verify --file EXPORT --proof B... --vault-key KEY [EXTRA]` by the auditor, who
    /// has no data dir of their own.
    fn offline(&self, export: &Path, bundles: &[&Path], key: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["audit", "verify", "--file", text(export)];
        for bundle in bundles {
            args.extend(["--proof", text(bundle)]);
        }
        args.extend(["--vault-key", text(key)]);
        args.extend(extra);
        self.run("auditor", &args)
    }

    /// The stored line the vault keeps of record `position` of `machine`'s log.
    fn kept(&self, machine: &str, position: u64) -> Vec<u8> {
        let hex = self.sql(&format!(
            "SELECT encode(record, 'hex') FROM machine_records WHERE machine_id = '{machine}' AND position = {position}"
        ));
        hex::decode(hex.trim()).unwrap()
    }

    fn set_kept(&self, machine: &str, position: u64, line: &[u8]) {
        self.sql(&format!(
            "UPDATE machine_records SET record = decode('{}', 'hex') WHERE machine_id = '{machine}' AND position = {position}",
            hex::encode(line)
        ));
    }

    /// The machine's audit trail, one entry a record.
    fn audit(&self, agent: &str) -> Vec<Value> {
        let r = self.run(agent, &["--json", "audit"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// The machine as `regent vault machines --json` lists it.
    fn listed(&self, machine: &str) -> Value {
        let machines = self.admin(&["--json", "machines", "--vault", "prod"]).json();
        machines.as_array().unwrap().iter().find(|m| m["machine_id"] == machine).unwrap().clone()
    }

    /// Stops the service with SIGTERM (it exits 0), and checks that nothing in it panicked.
    fn finish(mut self) {
        stop(self.vault.take().unwrap());
        let log = std::fs::read_to_string(self.path("vault.log")).unwrap();
        assert!(!log.contains("panicked"), "{log}");
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // A test that failed before `finish`: the service must not outlive it.
        if let Some(mut child) = self.vault.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A stored line `{"hash":H,"record":R}` with `from` replaced by `to` in R, and H made again
/// (SHA-256 of the previous record's hash and R's bytes), so that the line verifies: what an
/// attacker who knows the format writes. Returns the line and its hash.
fn rechained(line: &[u8], from: &str, to: &str) -> (Vec<u8>, String) {
    let line = std::str::from_utf8(line).unwrap();
    let start = r#"{"hash":""#.len() + 64 + r#"","record":"#.len();
    assert!(line.starts_with(r#"{"hash":""#) && &line[start - 10..start] == r#","record":"#, "{line}");
    let record = line[start..line.len() - 1].replacen(from, to, 1);
    assert!(record.contains(to), "{from:?} is in the record: {line}");
    let previous: Value = serde_json::from_str(&record).unwrap();
    let previous = hex::decode(previous["prev_hash"].as_str().unwrap()).unwrap();
    let hash = hex::encode(sha2::Sha256::new().chain_update(&previous).chain_update(record.as_bytes()).finalize());
    (format!(r#"{{"hash":"{hash}","record":{record}}}"#).into_bytes(), hash)
}

/// The anchored head's hash changed in the `machines` projection: the vault's signed read of the
/// anchor no longer matches its own transparency log. `--against-vault` refuses to trust it, an
/// explicit report of the same head finds the vault's own record edited (the anchored head is not
/// the record it keeps there), and the auditor's offline check still passes: the tree, not the
/// projection, is the record.
#[test]
fn an_anchor_changed_in_the_database_is_not_the_machines_latest_leaf() {
    let bench = Bench::new();
    let machine = bench.register("agent"); // 5
    bench.run("agent", &THROTTLE).quiet("step 6");
    let key = bench.key_file();
    let forged = "ab".repeat(32);
    bench.sql(&format!("UPDATE machines SET anchor_hash = '{forged}' WHERE machine_id = '{machine}'"));
    // The admin's list shows what the database now says.
    assert_eq!(bench.listed(&machine)["log_head"]["hash"], forged.as_str());

    // The agent does not take the anchor on the vault's word: it is not the machine's latest leaf.
    let r = bench.run("agent", &AGAINST_VAULT);
    r.failed(1, "vault_log_inconsistent");
    assert!(r.stderr.contains(&format!("vault prod answered for machine {machine}")), "{}", r.stderr);
    assert!(r.stderr.contains("its anchor is head 6") && r.stderr.contains("not checked against it"), "{}", r.stderr);
    let r = bench.run("agent", &["--json", "audit", "verify", "--against-vault"]);
    r.failed(1, "vault_log_inconsistent");
    let error = &r.json()["error"];
    assert_eq!((error["code"].as_str(), error["exit"].as_i64()), (Some("vault_log_inconsistent"), Some(1)), "{error}");

    // The tree was not touched: the auditor's bundle proves head 6, and the agent's export holds it.
    // The tree is the record; the anchor column is only a projection of it.
    let bundle = bench.vault_bundle(&machine, "vault.bundle");
    let export = bench.export("agent", "agent.jsonl");
    let r = bench.offline(&export, &[&bundle], &key, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&format!("the vault logged head 6 as machine {machine}'s latest")), "{}", r.stdout);

    // Reporting the same head again: the vault finds its anchored head is not the record it keeps
    // at 6, and says its own record was edited rather than blame this log; nothing is recorded
    // over the changed row.
    let r = bench.run("agent", &["audit", "anchor"]);
    r.failed(1, "vault_error");
    assert!(
        r.stderr.contains("its anchored head 6 is abababababababab") && r.stderr.contains("its database was edited"),
        "{}",
        r.stderr
    );
    let listed = bench.listed(&machine);
    assert_eq!(listed["log_head"]["refusals"].as_u64(), Some(0), "{listed}");
    bench.finish();
}

/// The same change, then a step whose report would walk on from the records the vault keeps (not
/// changed) and overwrite the changed row: the vault finds its anchored head is not the record it
/// keeps at that position, refuses to go on, and the agent warns; the changed row stays, as
/// evidence, until whoever runs the vault looks.
#[test]
fn a_step_after_the_anchor_was_changed_in_the_database_warns() {
    let bench = Bench::new();
    let machine = bench.register("agent"); // 5
    bench.run("agent", &THROTTLE).quiet("step 6");
    let forged = "ab".repeat(32);
    bench.sql(&format!("UPDATE machines SET anchor_hash = '{forged}' WHERE machine_id = '{machine}'"));
    let r = bench.run("agent", &THROTTLE_OFF); // 7
    assert_eq!(r.code, 0, "the step itself is done: {}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("warning: log head 7 was not anchored at vault prod"), "{}", r.stderr);
    assert!(r.stderr.contains("its database was edited"), "{}", r.stderr);
    let held = bench.sql(&format!("SELECT anchor_hash FROM machines WHERE machine_id = '{machine}'"));
    assert_eq!(held, forged, "the changed row is not overwritten");
    bench.finish();
}

/// One leaf's bytes changed in `tree_leaves` (the head hash it names): the vault can no longer
/// prove that machine's latest head. `regent vault proof` writes no bundle (`vault_log_inconsistent`),
/// `--against-vault` and the machine's next report say `vault_log_inconsistent`; another machine's
/// proofs still hold, and so does every proof once the machine's next head is logged (the subtree
/// hashes, not the leaf rows, make the tree).
#[test]
fn a_leaf_changed_in_the_database_is_proved_by_nobody() {
    let bench = Bench::new();
    let machine = bench.register("agent"); // 5, leaf 0
    let other = bench.register("other"); // 5, leaf 1
    bench.run("agent", &THROTTLE).quiet("step 6"); // leaf 2
    let key = bench.key_file();
    let index = bench.sql(&format!("SELECT leaf_index FROM machines WHERE machine_id = '{machine}'"));
    assert_eq!(index, "2");
    let stored = bench.sql(&format!("SELECT encode(leaf, 'hex') FROM tree_leaves WHERE leaf_index = {index}"));
    let mut leaf = Leaf::decode(&hex::decode(stored).unwrap()).unwrap();
    assert_eq!((leaf.machine_id.as_str(), leaf.position), (machine.as_str(), 6));
    leaf.head = [0xab; 32];
    let forged = hex::encode(leaf.encode().unwrap());
    bench.sql(&format!("UPDATE tree_leaves SET leaf = decode('{forged}', 'hex') WHERE leaf_index = {index}"));

    // The auditor's bundle: checked before it is written, with the key the service names or the
    // auditor's own; it does not hold, and no file is left.
    let r = bench.vault_proof(&machine, "agent.bundle", &[]);
    r.failed(1, "vault_log_inconsistent");
    assert!(r.stderr.contains("no bundle was written"), "{}", r.stderr);
    assert!(r.stderr.contains("head 6 is not in the tree of 3 heads the vault's checkpoint signs"), "{}", r.stderr);
    let r = bench.vault_proof(&machine, "agent.bundle", &["--json", "--vault-key", text(&key)]);
    r.failed(1, "vault_log_inconsistent");
    assert_eq!(r.json()["error"]["code"], "vault_log_inconsistent");
    assert!(!bench.path("agent.bundle").exists(), "no bundle written");
    // The other machine's leaf is untouched: its bundle holds, offline too.
    let theirs = bench.vault_bundle(&other, "other.bundle");
    let r = bench.offline(&bench.export("other", "other.jsonl"), &[&theirs], &key, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // The agent: its anchor is not proved, and reporting the same head again proves nothing.
    let r = bench.run("agent", &AGAINST_VAULT);
    r.failed(1, "vault_log_inconsistent");
    assert!(r.stderr.contains("head 6 is not in the tree of 3 heads"), "{}", r.stderr);
    let r = bench.run("agent", &["audit", "anchor"]);
    assert_eq!(r.code, 0, "the head is anchored; the vault's proof of it is what fails: {}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.starts_with("warning: vault_log_inconsistent: vault prod anchored log head 6"), "{}", r.stderr);
    assert!(
        r.stderr.contains("head 6 is not in the tree of 3 heads") && r.stderr.contains("as record 7"),
        "{}",
        r.stderr
    );
    let audit = bench.audit("agent");
    assert_eq!((audit.len(), audit[6]["kind"].as_str()), (7, Some("VaultLogInconsistent")), "{audit:?}");

    // The next step logs a new leaf for the machine (naming leaf 2 as its previous): proved, and
    // the subtrees were never changed, so the tree seen before extends to it.
    let answer = bench.json_step("agent", &THROTTLE_OFF); // 8
    assert_eq!(answer["log_anchor"]["vault_log"]["verified"], true, "{answer}");
    assert_eq!(answer["log_anchor"]["vault_position"], 8, "{answer}");
    let bundle = bench.vault_bundle(&machine, "agent.bundle");
    let r = bench.offline(&bench.export("agent", "agent.jsonl"), &[&bundle], &key, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&format!("the vault logged head 8 as machine {machine}'s latest")), "{}", r.stdout);
    bench.finish();
}

/// A kept record of a machine's log changed in `machine_records`. Its bytes alone: `regent vault
/// export --machine` writes nothing (the chain breaks at that record), and the machine's next
/// report is walked from the last record kept, which is intact. Rewritten as someone who knows the
/// format would (the record's hash made again, and the vault's last kept head with it): the export
/// verifies on its own, but the auditor's check against the vault's bundle finds another record at
/// the head the tree logged, and at the machine's next report the vault finds its anchored head is
/// not the record it now keeps there.
#[test]
fn a_record_changed_in_the_vaults_copy_of_a_log_is_caught_by_the_chain_or_the_tree() {
    let bench = Bench::new();
    let naive = bench.register("naive"); // 5
    let careful = bench.register("careful"); // 5
    for agent in ["naive", "careful"] {
        bench.run(agent, &THROTTLE).quiet("step 6");
        bench.run(agent, &THROTTLE_OFF).quiet("step 7");
    }
    let key = bench.key_file();

    // Record 6's bytes changed, nothing else: 512 Kbps becomes 513 Kbps.
    let line = bench.kept(&naive, 6);
    let changed = String::from_utf8(line.clone()).unwrap().replacen("\"work_bps\":512000", "\"work_bps\":513000", 1);
    assert_ne!(changed.as_bytes(), line.as_slice());
    bench.set_kept(&naive, 6, changed.as_bytes());
    let r = bench.vault_export(&naive, "naive.jsonl", &[]);
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!(
            "regent: machine {naive}'s log as vault prod keeps it, as the vault service sent it, does not verify at record 6: hash mismatch"
        )),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was written"), "{}", r.stderr);
    let r = bench.vault_export(&naive, "naive.jsonl", &["--json"]);
    assert_eq!((r.code, r.json()["error"]["code"].as_str()), (1, Some("chain_broken")), "{}", r.stdout);
    assert!(!bench.path("naive.jsonl").exists());
    // The next report is walked from record 7, the last one kept: accepted, and the damage stays.
    let answer = bench.json_step("naive", &THROTTLE_OTHER); // 8
    assert_eq!(
        (answer["log_anchor"]["vault_position"].as_u64(), answer["log_anchor"]["vault_log"]["verified"].as_bool()),
        (Some(8), Some(true)),
        "{answer}"
    );
    let r = bench.vault_export(&naive, "naive.jsonl", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("does not verify at record 6") && r.stderr.contains("head 8:"), "{}", r.stderr);

    // The last record kept rewritten whole, with the head the vault keeps it up to.
    let bundle = bench.vault_bundle(&careful, "careful.bundle"); // head 7, as the tree logged it
    let (rewritten, hash) =
        rechained(&bench.kept(&careful, 7), "\"actor\":{\"user\":\"", "\"actor\":{\"user\":\"mallory-");
    bench.set_kept(&careful, 7, &rewritten);
    bench.sql(&format!("UPDATE machines SET mirrored_hash = '{hash}' WHERE machine_id = '{careful}'"));
    let r = bench.vault_export(&careful, "careful.jsonl", &[]);
    assert_eq!(r.code, 0, "the copy verifies on its own: {}", r.stderr);
    assert!(r.stdout.contains(&format!("(head 7:{hash}; it verifies)")), "{}", r.stdout);
    let export = bench.path("careful.jsonl");
    let r = bench.run("auditor", &["audit", "verify", "--file", text(&export)]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    // Against the tree: another record at the head it logged.
    let r = bench.offline(&export, &[&bundle], &key, &[]);
    r.failed(1, "log_head_mismatch");
    assert!(
        r.stderr.contains(&format!("record 7 is not the head the vault logged for machine {careful}")),
        "{}",
        r.stderr
    );
    // The agent's own log still matches the tree.
    let r = bench.offline(&bench.export("careful", "own.jsonl"), &[&bundle], &key, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Its next report: the vault's anchored head 7 is not the record it now keeps at 7, so it
    // says its own record was edited (the step itself is done, the agent warned).
    let r = bench.run("careful", &THROTTLE); // 8
    assert_eq!((r.code, r.stderr.lines().count()), (0, 1), "{}", r.stderr);
    assert!(r.stderr.starts_with("warning: log head 8 was not anchored at vault prod"), "{}", r.stderr);
    assert!(r.stderr.contains("its anchored head 7") && r.stderr.contains("its database was edited"), "{}", r.stderr);
    bench.finish();
}

/// A kept record deleted from `machine_records`, with the vault's last kept head moved back to the
/// record before it, so that the copy is a shorter log that verifies on its own: the auditor's
/// check against the vault's bundle finds it cut before the head the tree logged. The machine's
/// next report is walked from the last record kept, through the anchored head, and puts the
/// record back.
#[test]
fn a_record_deleted_from_the_vaults_copy_of_a_log_is_a_cut_tail_against_the_tree() {
    let bench = Bench::new();
    let machine = bench.register("agent"); // 5
    bench.run("agent", &THROTTLE).quiet("step 6");
    bench.run("agent", &THROTTLE_OFF).quiet("step 7");
    let key = bench.key_file();
    let bundle = bench.vault_bundle(&machine, "vault.bundle"); // head 7

    let seventh = bench.kept(&machine, 7);
    let sixth = bench.kept(&machine, 6);
    let hash = std::str::from_utf8(&sixth[r#"{"hash":""#.len()..][..64]).unwrap().to_string();
    bench.sql(&format!(
        "DELETE FROM machine_records WHERE machine_id = '{machine}' AND position = 7; \
         UPDATE machines SET mirrored_position = 6, mirrored_hash = '{hash}' WHERE machine_id = '{machine}'"
    ));
    let r = bench.vault_export(&machine, "cut.jsonl", &[]);
    assert_eq!(r.code, 0, "the copy verifies on its own: {}", r.stderr);
    assert!(r.stdout.starts_with("exported 6 records of machine"), "{}", r.stdout);
    let r = bench.offline(&bench.path("cut.jsonl"), &[&bundle], &key, &[]);
    r.failed(1, "log_tail_cut");
    assert!(
        r.stderr.contains(&format!(
            "the vault logged head 7 as machine {machine}'s latest, but this log ends at 6: record 7 missing"
        )),
        "{}",
        r.stderr
    );
    let r = bench.offline(&bench.path("cut.jsonl"), &[&bundle], &key, &["--json"]);
    assert_eq!(r.code, 1);
    let report = r.json();
    assert_eq!(
        (report["proof"]["outcome"].as_str(), report["proof"]["position"].as_u64()),
        (Some("tail_cut"), Some(7)),
        "{report}"
    );

    // The next report: the vault walks the records from 7, the one after the last it keeps, checks
    // them through its anchor at 7, and keeps them again.
    let answer = bench.json_step("agent", &THROTTLE_OTHER); // 8
    assert_eq!(answer["log_anchor"]["vault_position"], 8, "{answer}");
    assert_eq!(bench.kept(&machine, 7), seventh, "the agent's record 7, byte for byte");
    let r = bench.vault_export(&machine, "whole.jsonl", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("exported 8 records of machine"), "{}", r.stdout);
    let fresh = bench.vault_bundle(&machine, "fresh.bundle");
    let r = bench.offline(&bench.path("whole.jsonl"), &[&fresh], &key, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    bench.finish();
}

/// A record deleted from the middle of the vault's copy, nothing else changed: the copy no longer
/// reaches the head the vault says it keeps: the vault refuses the export before it starts (a
/// gap found while streaming could only break the answer off), naming the record missing.
#[test]
fn a_record_deleted_from_the_middle_of_the_vaults_copy_is_named_by_the_export() {
    let bench = Bench::new();
    let machine = bench.register("agent"); // 5
    bench.run("agent", &THROTTLE).quiet("step 6");
    bench.sql(&format!("DELETE FROM machine_records WHERE machine_id = '{machine}' AND position = 3"));
    let r = bench.vault_export(&machine, "machine.jsonl", &[]);
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{}", r.stderr);
    assert!(r.stderr.contains("is damaged: record 3 is missing"), "{}", r.stderr);
    assert!(!r.stderr.contains("run the export again"), "{}", r.stderr);
    assert!(!bench.path("machine.jsonl").exists());
    bench.finish();
}

/// A subtree's hash changed in `tree_nodes`: every later root is made from it, so the vault's tree
/// no longer extends the one the agent checked: its next report warns `vault_log_inconsistent`
/// (the step done, the evidence recorded once), and a bundle made before the change and one made
/// after do not meet (the consistency proof asked of the vault with `--endpoint`).
#[test]
fn a_subtree_changed_in_the_database_splits_the_views_before_and_after() {
    let bench = Bench::new();
    let machine = bench.register("agent"); // 5, leaf 0
    bench.run("agent", &THROTTLE).quiet("step 6"); // leaf 1
    bench.run("agent", &THROTTLE_OFF).quiet("step 7"); // leaf 2: the agent checked the tree of 3
    let key = bench.key_file();
    let before = bench.vault_bundle(&machine, "before.bundle");

    // The largest subtree from the first leaf: the root of every tree from here on is made from it.
    let level = bench.sql("SELECT max(level) FROM tree_nodes WHERE node_index = 0");
    assert_eq!(level, "1", "leaves 0 and 1 make the subtree of level 1");
    bench.sql(&format!(
        "UPDATE tree_nodes SET hash = decode('{}', 'hex') WHERE level = 1 AND node_index = 0",
        "ee".repeat(32)
    ));

    let r = bench.run("agent", &THROTTLE); // 8, leaf 3
    assert_eq!((r.code, r.stderr.lines().count()), (0, 1), "the step itself is done: {}", r.stderr);
    assert!(r.stderr.starts_with("warning: vault_log_inconsistent: vault prod anchored log head 8"), "{}", r.stderr);
    assert!(
        r.stderr.contains("does not extend the tree of 3 heads") && r.stderr.contains("as record 9"),
        "{}",
        r.stderr
    );
    let audit = bench.audit("agent");
    assert_eq!((audit.len(), audit[8]["kind"].as_str()), (9, Some("VaultLogInconsistent")), "{audit:?}");

    // The vault's tree after the change holds together on its own: a bundle of it is written.
    let after = bench.vault_bundle(&machine, "after.bundle");
    let export = bench.export("agent", "agent.jsonl");
    let r = bench.offline(&export, &[&before, &after], &key, &[]);
    r.failed(2, "proof_needed");
    let r = bench.offline(&export, &[&before, &after], &key, &["--endpoint", &bench.url]);
    r.failed(1, "vault_log_inconsistent");
    assert!(r.stderr.contains("before.bundle and ") && r.stderr.contains("after.bundle do not meet"), "{}", r.stderr);
    // A bundle that carries the vault's consistency proof from the earlier size: the same, offline.
    let r = bench.vault_proof(&machine, "from3.bundle", &["--from", "3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = bench.offline(&export, &[&before, &bench.path("from3.bundle")], &key, &[]);
    r.failed(1, "vault_log_inconsistent");
    assert!(r.stderr.contains("from3.bundle do not meet"), "{}", r.stderr);

    // Said once: the next step warns again, records nothing more; --against-vault refuses too.
    let r = bench.run("agent", &THROTTLE_OFF); // 10
    assert_eq!((r.code, r.stderr.lines().count()), (0, 1), "{}", r.stderr);
    assert!(
        r.stderr.starts_with("warning: vault_log_inconsistent: ") && r.stderr.contains("the tree of 3 heads"),
        "{}",
        r.stderr
    );
    assert_eq!(bench.audit("agent").len(), 10);
    let r = bench.run("agent", &AGAINST_VAULT);
    r.failed(1, "vault_log_inconsistent");
    assert!(r.stderr.contains("does not extend the tree of 3 heads"), "{}", r.stderr);
    bench.finish();
}
