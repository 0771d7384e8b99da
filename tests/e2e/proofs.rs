//! Proof bundles end to end: `regent audit proof`, `regent vault proof`, and `regent audit verify
//! --proof` (offline with --file and --vault-key), against a real vault service; and the two-views
//! attack, made by editing the vault's stored tree with the service stopped.

use std::path::{Path, PathBuf};

use regent_vault::protocol::transparency::{self as tlog, NoteSigner};
use serde_json::Value;

use crate::support::{Setup, copy_dir};

const THROTTLE: [&str; 11] = [
    "properties",
    "throttling",
    "set",
    "--work-days",
    "mon-fri",
    "--work-hours",
    "09:00-17:00",
    "--work-bandwidth",
    "512Kbps",
    "--non-work-bandwidth",
    "20Mbps",
];
const THROTTLE_OFF: [&str; 3] = ["properties", "throttling", "off"];

fn register(setup: &Setup, agent: &str) -> String {
    let credentials = setup.download("prod", &format!("{agent}.VaultCredentials"));
    setup.prepare(agent, &credentials);
    let (code, stderr) = setup.step(agent, &["register"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    setup.json(agent, &["properties"])["vault"]["machine_id"].as_str().unwrap().to_string()
}

fn ok(setup: &Setup, agent: &str, args: &[&str]) {
    let (code, stderr) = setup.step(agent, args);
    assert_eq!((code, stderr.as_str()), (0, ""), "{args:?}");
}

/// `regent ARGS` for `agent`: exit code, stdout, stderr.
fn run(setup: &Setup, agent: &str, args: &[&str]) -> (i32, String, String) {
    let out = setup.regent(agent).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key_file(setup: &Setup) -> PathBuf {
    let (code, stdout, stderr) =
        run(setup, "admin", &["vault", "checkpoint", "--server", &setup.url(), "--public-key"]);
    assert_eq!(code, 0, "{stderr}");
    let path = setup.path("vault.key");
    std::fs::write(&path, stdout).unwrap();
    path
}

fn export(setup: &Setup, agent: &str, name: &str) -> PathBuf {
    let path = setup.path(name);
    let (code, _, stderr) = run(setup, agent, &["audit", "export", "-o", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    path
}

fn vault_bundle(setup: &Setup, machine: &str, name: &str, from: Option<u64>) -> PathBuf {
    let path = setup.path(name);
    let mut args = vec!["proof", "--vault", "prod", "--machine", machine, "-o", path.to_str().unwrap()];
    let from = from.map(|f| f.to_string());
    if let Some(from) = &from {
        args.extend(["--from", from.as_str()]);
    }
    let out = setup.admin(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

/// `regent audit verify --file EXPORT --proof B... --vault-key KEY` run by someone with no data
/// dir of their own (the auditor): exit code and the one failure line.
fn offline(setup: &Setup, export: &Path, bundles: &[&Path], key: &Path) -> (i32, String, String) {
    let mut args = vec!["audit".to_string(), "verify".into(), "--file".into(), export.display().to_string()];
    for bundle in bundles {
        args.extend(["--proof".to_string(), bundle.display().to_string()]);
    }
    args.extend(["--vault-key".to_string(), key.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(setup, "auditor", &args)
}

fn failure_code(stderr: &str) -> &str {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_start_matches("regent: ").split(':').next().unwrap()
}

#[test]
fn an_export_is_checked_offline_against_the_machines_latest_logged_head() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let machine = register(&setup, "agent"); // 5
    ok(&setup, "agent", &THROTTLE); // 6
    copy_dir(&setup.path("agent"), &setup.path("copy")); // a copy at head 6
    ok(&setup, "agent", &THROTTLE_OFF); // 7
    let key = key_file(&setup);
    let full = export(&setup, "agent", "full.jsonl");

    // The auditor's way: the bundle from the vault; the export from the machine.
    let from_vault = vault_bundle(&setup, &machine, "vault.bundle", None);
    let (code, stdout, stderr) = offline(&setup, &full, &[&from_vault], &key);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok: 7 records verified"), "{stdout}");
    assert!(stdout.contains(&format!("the vault logged head 7 as machine {machine}'s latest")), "{stdout}");
    // The agent's way, checked by the agent with the key its log trusts, and by the auditor.
    let agent_bundle = setup.path("agent.bundle");
    let (code, stdout, stderr) = run(&setup, "agent", &["audit", "proof", "-o", agent_bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("proof bundle written to") && stdout.contains("head 7 of machine"), "{stdout}");
    let (code, _, stderr) = run(&setup, "agent", &["audit", "verify", "--proof", agent_bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = offline(&setup, &full, &[&from_vault, &agent_bundle], &key);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("the checkpoints are views of one tree"), "{stdout}");
    let (code, _, stderr) = run(&setup, "agent", &["audit", "proof", "-o", agent_bundle.to_str().unwrap()]);
    assert_eq!(code, 1, "a bundle is never written over: {stderr}");
    assert!(stderr.contains("already exists; choose another file"), "{stderr}");

    // A cut tail: the copy at head 6 is a prefix, and its head was logged too, but not last.
    let cut = export(&setup, "copy", "cut.jsonl");
    let (code, _, stderr) = offline(&setup, &cut, &[&from_vault], &key);
    assert_eq!((code, failure_code(&stderr)), (1, "log_tail_cut"), "{stderr}");
    assert!(stderr.contains("this log ends at 6"), "{stderr}");
    // A rewritten log: the copy takes another step 7 of its own (the vault refuses its report).
    let other_throttling = ["--work-days", "sat", "--work-hours", "08:00-09:00", "--work-bandwidth", "1Mbps"];
    let other_throttling = [&THROTTLE[..3], &other_throttling, &["--non-work-bandwidth", "2Mbps"]].concat();
    let (code, _) = setup.step("copy", &other_throttling);
    assert_eq!(code, 0);
    let forked = export(&setup, "copy", "forked.jsonl");
    let (code, _, stderr) = offline(&setup, &forked, &[&from_vault], &key);
    assert_eq!((code, failure_code(&stderr)), (1, "log_head_mismatch"), "{stderr}");
    // A stale bundle: the log went on past the head it proves.
    ok(&setup, "agent", &THROTTLE); // 8
    let longer = export(&setup, "agent", "longer.jsonl");
    let (code, _, stderr) = offline(&setup, &longer, &[&from_vault], &key);
    assert_eq!((code, failure_code(&stderr)), (1, "proof_stale"), "{stderr}");
    assert!(stderr.contains("proves head 7") && stderr.contains("goes on to 8"), "{stderr}");

    // A forged bundle: its leaf names another head; one signed by another key; one of another machine.
    let mut bundle: Value = serde_json::from_slice(&std::fs::read(&from_vault).unwrap()).unwrap();
    let leaf = base64_decode(bundle["proof"]["leaf"].as_str().unwrap());
    let mut forged_leaf = tlog::Leaf::decode(&leaf).unwrap();
    forged_leaf.position = 8;
    bundle["proof"]["leaf"] = Value::String(base64_encode(&forged_leaf.encode().unwrap()));
    let forged = setup.path("forged.bundle");
    std::fs::write(&forged, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let (code, _, stderr) = offline(&setup, &longer, &[&forged], &key);
    assert_eq!((code, failure_code(&stderr)), (1, "proof_forged"), "{stderr}");
    let other_key = setup.path("other.key");
    let signer = NoteSigner::from_seed("regent-vault-0000000000000000", [9; 32]).unwrap();
    std::fs::write(&other_key, format!("{}\n", signer.verifier())).unwrap();
    let (code, _, stderr) = offline(&setup, &full, &[&from_vault], &other_key);
    assert_eq!((code, failure_code(&stderr)), (1, "proof_other_key"), "{stderr}");
    let other = register(&setup, "other");
    let theirs = vault_bundle(&setup, &other, "other.bundle", None);
    let (code, _, stderr) = offline(&setup, &cut, &[&theirs], &key);
    assert_eq!((code, failure_code(&stderr)), (1, "proof_other_machine"), "{stderr}");
    // Bundles of different sizes need a consistency proof: carried (--from), or asked of the vault.
    let (code, _, stderr) = offline(&setup, &full, &[&from_vault, &theirs], &key);
    assert_eq!((code, failure_code(&stderr)), (2, "proof_needed"), "{stderr}");
    let size = |path: &Path| -> u64 {
        let bundle: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        bundle["proof"]["checkpoint"].as_str().unwrap().lines().nth(1).unwrap().parse().unwrap()
    };
    let carried = vault_bundle(&setup, &other, "carried.bundle", Some(size(&from_vault)));
    let (code, stdout, stderr) = offline(&setup, &full, &[&from_vault, &carried], &key);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("views of one tree"), "{stdout}");
    // No log to check: none given, and no data dir.
    let (code, _, stderr) = run(
        &setup,
        "auditor",
        &["audit", "verify", "--proof", from_vault.to_str().unwrap(), "--vault-key", key.to_str().unwrap()],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("there is no data directory") && stderr.lines().count() == 1, "{stderr}");
    // Not a bundle at all.
    let (code, _, stderr) = offline(&setup, &full, &[&full], &key);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not a proof bundle") && stderr.lines().count() == 1, "{stderr}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The vault's stored subtree (level, index), from its side tree.
fn subtree_key(level: u8, index: u64) -> Vec<u8> {
    [&[b'n', level][..], &index.to_be_bytes()].concat()
}

#[test]
fn a_vault_that_shows_two_agents_two_trees_is_caught_when_their_views_meet() {
    let mut setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    register(&setup, "a"); // leaf 0
    register(&setup, "b"); // leaf 1
    ok(&setup, "a", &THROTTLE); // leaf 2: a has checked the tree of 3
    ok(&setup, "b", &THROTTLE); // leaf 3: b's latest head; b has checked the tree of 4
    let b_bundle = setup.path("b.bundle");
    let (code, _, stderr) = run(&setup, "b", &["audit", "proof", "-o", b_bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    // The vault's tree edited with the service stopped: b's latest leaf replaced, and the
    // subtrees above it made again, so the vault serves a tree without b's head from now on.
    setup.stop_vault();
    {
        let store = regent_store::EventStore::open(setup.path("vault").join("log"), &Default::default()).unwrap();
        let side = store.side_tree("machine-records").unwrap();
        let get = |level: u8, index: u64| -> [u8; 32] {
            side.get(&subtree_key(level, index)).unwrap().unwrap().try_into().unwrap()
        };
        let other_leaf = tlog::leaf_hash(b"not b's head");
        let level1 = tlog::node_hash(&get(0, 2), &other_leaf);
        let level2 = tlog::node_hash(&get(1, 0), &level1);
        side.insert_all(vec![
            (subtree_key(0, 3), other_leaf.to_vec()),
            (subtree_key(1, 1), level1.to_vec()),
            (subtree_key(2, 0), level2.to_vec()),
        ])
        .unwrap();
        store.flush().unwrap();
    }
    setup.start_vault();

    // a alone cannot tell: its tree of 3 is a prefix of what it is shown now.
    ok(&setup, "a", &THROTTLE_OFF); // leaf 4, in the edited tree
    let a_bundle = setup.path("a.bundle");
    let (code, _, stderr) = run(&setup, "a", &["audit", "proof", "-o", a_bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    // The views meet: the two bundles together, offline with a consistency proof from the vault.
    let key = key_file(&setup);
    let a_export = export(&setup, "a", "a.jsonl");
    let mut args: Vec<String> = ["audit", "verify", "--file"].map(String::from).to_vec();
    args.push(a_export.display().to_string());
    for bundle in [&a_bundle, &b_bundle] {
        args.extend(["--proof".into(), bundle.display().to_string()]);
    }
    args.extend(["--vault-key".into(), key.display().to_string(), "--endpoint".into(), setup.url()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = run(&setup, "auditor", &args);
    assert_eq!((code, failure_code(&stderr)), (1, "vault_log_inconsistent"), "{stderr}");
    assert!(stderr.contains("do not meet"), "{stderr}");

    // Either agent, shown the other's bundle, catches it against the checkpoint it checked last.
    let (code, _, stderr) = run(&setup, "a", &["audit", "verify", "--proof", b_bundle.to_str().unwrap()]);
    assert_eq!((code, failure_code(&stderr)), (1, "vault_log_inconsistent"), "{stderr}");
    let (code, _, stderr) = run(&setup, "b", &["audit", "verify", "--proof", a_bundle.to_str().unwrap()]);
    assert_eq!((code, failure_code(&stderr)), (1, "vault_log_inconsistent"), "{stderr}");
    // And b's next report finds the vault's tree no longer extends the one it checked.
    let (code, stderr) = setup.step("b", &THROTTLE_OFF);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("vault_log_inconsistent") && stderr.contains("does not extend the tree of 4 heads"),
        "{stderr}"
    );
    // --against-vault says so too, instead of trusting the vault's anchor.
    let (code, _, stderr) = run(&setup, "b", &["audit", "verify", "--against-vault"]);
    assert_eq!((code, failure_code(&stderr)), (1, "vault_log_inconsistent"), "{stderr}");
}

#[test]
fn a_record_changed_in_a_sled_vaults_copy_is_caught_by_the_export_and_the_bundle() {
    let mut setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let machine = register(&setup, "agent"); // 5
    ok(&setup, "agent", &THROTTLE); // 6
    ok(&setup, "agent", &THROTTLE_OFF); // 7
    let key = key_file(&setup);
    let bundle = vault_bundle(&setup, &machine, "vault.bundle", None);

    // Record 6 of the vault's copy changed through sled's own API, the service stopped: its stored
    // line with one byte of its payload changed (its hash no longer its own).
    setup.stop_vault();
    {
        let store = regent_store::EventStore::open(setup.path("vault").join("log"), &Default::default()).unwrap();
        let side = store.side_tree("machine-records").unwrap();
        let record = [&[b'r'][..], b"prod", &[0xFF], machine.as_bytes(), &[0xFF], &6u64.to_be_bytes()].concat();
        let line = String::from_utf8(side.get(&record).unwrap().expect("the vault keeps record 6")).unwrap();
        assert!(line.contains("\"work_bps\":512000"), "{line}");
        let edited = line.replacen("mon", "sun", 1);
        assert_ne!(edited, line);
        side.insert_all(vec![(record, edited.into_bytes())]).unwrap();
        store.flush().unwrap();
    }
    setup.start_vault();

    // The export from the vault does not verify: nothing is written, and the record is named.
    let copy = setup.path("copy.jsonl");
    let out = setup.admin(&["export", "--vault", "prod", "--machine", &machine, "-o", copy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not verify at record 6") && stderr.lines().count() == 1, "{stderr}");
    assert!(!copy.exists());
    // The machine's own export still is the head the vault logged: the tree was not touched.
    let own = export(&setup, "agent", "own.jsonl");
    let (code, _, stderr) = offline(&setup, &own, &[&bundle], &key);
    assert_eq!(code, 0, "{stderr}");
}
