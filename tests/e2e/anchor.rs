//! The log head kept at the vault, through the real binary against a real vault service: every
//! step while registered sends it, `regent audit anchor` sends it on demand, and `regent audit
//! verify --against-vault` catches what the chain alone cannot (a cut tail, a forked copy).

use serde_json::Value;

use crate::support::{Setup, copy_dir, refused_with, throttling_set};

const THROTTLE: [&str; 11] = throttling_set("mon-fri", "09:00-17:00", "512Kbps", "20Mbps");
const THROTTLE_OTHER: [&str; 11] = throttling_set("sat,sun", "08:00-12:00", "1Mbps", "10Mbps");
const THROTTLE_OFF: [&str; 3] = ["properties", "throttling", "off"];
const PROXY_CLEAR: [&str; 2] = ["proxy", "clear"];
const VERIFY: [&str; 3] = ["audit", "verify", "--against-vault"];

/// A whole data dir, copied while no regent runs: a backup an attacker (or a careless restore) puts back.
/// Runs a step that must be accepted with nothing on stderr (the head was anchored).
fn quietly(setup: &Setup, agent: &str, args: &[&str]) {
    let (code, stderr) = setup.step(agent, args);
    assert_eq!((code, stderr.as_str()), (0, ""), "{args:?}");
}

fn json_of(setup: &Setup, agent: &str, args: &[&str]) -> (i32, Value, String) {
    let out = setup.regent(agent).arg("--json").args(args).output().unwrap();
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), value, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn stdout_of(setup: &Setup, agent: &str, args: &[&str]) -> (i32, String, String) {
    let out = setup.regent(agent).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One line on stderr, starting `regent: CODE: `.
fn one_line_failure(stderr: &str, code: &str) {
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("regent: {code}: ")), "{stderr}");
}

fn registered_agent(setup: &Setup) {
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    setup.prepare("agent", &credentials);
    let (code, answer, stderr) = json_of(setup, "agent", &["register"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(answer["status"]["phase"], "registered");
    // folders, credentials, passphrase, registration started, registered: the fifth record is the
    // head the vault keeps.
    assert_eq!(answer["log_anchor"]["anchored"], true, "{answer}");
    assert_eq!(answer["log_anchor"]["position"], 5);
    assert_eq!(answer["log_anchor"]["vault_position"], 5);
}

#[test]
fn verify_against_the_vault_catches_a_cut_tail_and_a_forked_copy() {
    let mut setup = Setup::new();
    registered_agent(&setup);
    quietly(&setup, "agent", &THROTTLE); // 6
    quietly(&setup, "agent", &PROXY_CLEAR); // 7
    let (code, stdout, stderr) = stdout_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok: 7 records verified") && stdout.contains("vault anchor at 7 matches"), "{stdout}");

    // A copy of the whole data dir at head 7, then one more change anchored at 8.
    copy_dir(&setup.path("agent"), &setup.path("copy"));
    quietly(&setup, "agent", &THROTTLE_OFF); // 8

    // Forked: the old copy restored, and another change made from it. Its head 8 is another record
    // than the vault's 8: the report is refused (the step itself still succeeds).
    copy_dir(&setup.path("copy"), &setup.path("fork"));
    let (code, stderr) = setup.step("fork", &THROTTLE_OTHER);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("warning: vault prod refused log head 8 (log_head_conflict: "), "{stderr}");
    assert!(stderr.contains("regent audit verify --against-vault"), "{stderr}");
    assert_eq!(setup.step("fork", &["audit", "verify"]).0, 0, "the fork's own chain is intact");
    let (code, stdout, stderr) = stdout_of(&setup, "fork", &VERIFY);
    assert_eq!(code, 1, "{stdout}");
    one_line_failure(&stderr, "log_head_mismatch");
    assert!(stderr.contains("record 8 is not the one vault prod anchored"), "{stderr}");
    assert!(stdout.contains("FAILED at record 8: head mismatch"), "{stdout}");
    let (code, report, _) = json_of(&setup, "fork", &VERIFY);
    assert_eq!(code, 1);
    assert_eq!(report["against_vault"]["outcome"], "altered");
    assert_eq!(report["against_vault"]["mismatch"]["from"], 8);
    assert_eq!(report["failure"]["problem"], "head_mismatch");

    // The real log goes on: 9 is anchored (past the refusals).
    quietly(&setup, "agent", &PROXY_CLEAR); // 9

    // Cut tail: the old copy (head 7) put back in place of the log. Its chain, store head and
    // durable head all agree, so plain verify passes; the vault's head 9 shows 8-9 are missing.
    copy_dir(&setup.path("copy"), &setup.path("cut"));
    let (code, stdout, _) = stdout_of(&setup, "cut", &["audit", "verify"]);
    assert_eq!(code, 0, "plain verify cannot see a cut tail: {stdout}");
    let (code, stdout, stderr) = stdout_of(&setup, "cut", &VERIFY);
    assert_eq!(code, 1, "{stdout}");
    one_line_failure(&stderr, "log_tail_cut");
    assert!(stderr.contains("anchored this log at position 9, but it ends at 7: records 8-9 are missing"), "{stderr}");
    let (code, report, _) = json_of(&setup, "cut", &VERIFY);
    assert_eq!(code, 1);
    assert_eq!(report["against_vault"]["outcome"], "tail_cut");
    assert_eq!(
        (report["against_vault"]["missing"]["from"].as_u64(), report["against_vault"]["missing"]["to"].as_u64()),
        (Some(8), Some(9))
    );
    assert_eq!(report["against_vault"]["anchor"]["position"], 9);
    assert_eq!(report["failure"]["problem"], "truncated");
    assert_eq!(report["records"], 7, "the verified part is still reported");
    // The cut copy reporting its own next head is refused as going backwards.
    let (code, stderr) = setup.step("cut", &THROTTLE_OFF);
    assert_eq!(code, 0);
    assert!(stderr.starts_with("warning: vault prod refused log head 8 (log_head_regressed: "), "{stderr}");

    // Cut back and grown past the anchor while the vault could not see it: a later head must name
    // the hash this log holds at the anchored position, and it holds another record there.
    copy_dir(&setup.path("copy"), &setup.path("grown"));
    setup.stop_vault();
    for args in [&THROTTLE_OFF[..], &PROXY_CLEAR, &THROTTLE] {
        let (code, stderr) = setup.step("grown", args);
        assert_eq!(code, 0);
        assert!(stderr.contains("(vault_unreachable: "), "{stderr}");
    }
    setup.start_vault();
    let (code, _, stderr) = stdout_of(&setup, "grown", &["audit", "anchor"]);
    assert_eq!(code, 1);
    one_line_failure(&stderr, "log_head_conflict");
    assert!(stderr.contains("refused log head 10") && stderr.contains("another record at position 9"), "{stderr}");
    let (code, _, stderr) = stdout_of(&setup, "grown", &VERIFY);
    assert_eq!(code, 1);
    one_line_failure(&stderr, "log_head_mismatch");
    assert!(stderr.contains("record 9 is not the one vault prod anchored"), "{stderr}");

    // The real log still matches; the refused reports stay visible, here and in the vault's list.
    let (code, stdout, stderr) = stdout_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("vault anchor at 9 matches"), "{stdout}");
    assert!(stderr.starts_with("warning: vault prod refused 3 log head reports"), "{stderr}");
    let machines = String::from_utf8(setup.admin(&["machines", "--vault", "prod"]).stdout).unwrap();
    assert!(machines.contains("LOG HEAD") && machines.contains("REFUSED 3 reports"), "{machines}");
    let machines: Value =
        serde_json::from_slice(&setup.admin(&["machines", "--vault", "prod", "--json"]).stdout).unwrap();
    assert_eq!(machines[0]["log_head"]["position"], 9);
    assert_eq!(machines[0]["log_head"]["refusals"], 3);
    assert_eq!(machines[0]["log_head"]["last_refusal"]["error"], "log_head_conflict");
    assert_eq!(machines[0]["log_head"]["last_refusal"]["position"], 10);

    // Once the real log reports past them, the refusals are history: counted, no longer a warning.
    quietly(&setup, "agent", &THROTTLE_OFF); // 10
    let (code, stdout, stderr) = stdout_of(&setup, "agent", &VERIFY);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert!(
        stdout.contains("vault anchor at 10 matches")
            && stdout.contains("vault prod refused 3 log head reports for this machine before its current anchor"),
        "{stdout}"
    );
    let machines = String::from_utf8(setup.admin(&["machines", "--vault", "prod"]).stdout).unwrap();
    assert!(machines.contains("REFUSED 3 reports"), "{machines}");
}

/// The vault's own log: the positions it anchored, in order (the service stopped first).
fn anchored_positions(setup: &mut Setup) -> Vec<u64> {
    setup.stop_vault();
    let store = regent_store::EventStore::open(setup.path("vault").join("log"), &Default::default()).unwrap();
    store
        .read_all(0)
        .map(|record| record.unwrap())
        .filter(|record| record.kind == "LogHeadAnchored")
        .map(|record| record.payload_as::<Value>().unwrap()["position"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_log_far_past_its_anchor_catches_up_in_steps() {
    let mut setup = Setup::new();
    registered_agent(&setup); // anchored at 5
    {
        let _down = setup.vault_down_fast();
        for step in 0..260 {
            let args: &[&str] = if step % 2 == 0 { &THROTTLE } else { &THROTTLE_OFF };
            let (code, stderr) = setup.step("agent", args);
            assert_eq!(code, 0, "{stderr}");
            assert!(stderr.contains("was not anchored") && stderr.contains("(vault_unreachable: "), "{stderr}");
        }
    }
    setup.start_vault();
    // 260 records past the anchor: more than one report carries (256). The next step sends
    // them in two signed steps, 6-261 then 262-266, within its one deadline.
    let (code, answer, stderr) = json_of(&setup, "agent", &PROXY_CLEAR); // 266
    assert_eq!((code, stderr.as_str()), (0, ""), "{answer}");
    assert_eq!(answer["log_anchor"]["anchored"], true, "{answer}");
    assert_eq!(answer["log_anchor"]["vault_position"], 266);
    let (code, report, stderr) = json_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["against_vault"]["outcome"], "match");
    assert_eq!(report["against_vault"]["anchor"]["position"], 266);
    assert_eq!(anchored_positions(&mut setup), [5, 261, 266]);
}

#[test]
fn a_log_cut_before_its_registration_is_still_checked_against_the_vault() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    setup.prepare("agent", &credentials); // 1-3: folders, credentials (its key sealed), passphrase
    copy_dir(&setup.path("agent"), &setup.path("early"));
    quietly(&setup, "agent", &["register"]); // 4 (started), 5 (registered)
    quietly(&setup, "agent", &THROTTLE); // 6
    quietly(&setup, "agent", &PROXY_CLEAR); // 7

    // The log put back as it was before the registration; log-anchor.json left in place. The log
    // itself verifies, and shows no registration at all.
    copy_dir(&setup.path("early"), &setup.path("cut"));
    std::fs::copy(setup.path("agent").join("log-anchor.json"), setup.path("cut").join("log-anchor.json")).unwrap();
    assert_eq!(setup.step("cut", &["audit", "verify"]).0, 0);
    let (_, status, _) = json_of(&setup, "cut", &["status"]);
    assert_eq!(status["phase"], "passphrase_created", "{status}");
    assert_eq!(
        (status["log_anchor"]["position"].as_u64(), status["log_anchor"]["past_log_head"].as_bool()),
        (Some(7), Some(true))
    );

    // The anchor note names the machine: its anchor is fetched and the cut is named.
    let (code, stdout, stderr) = stdout_of(&setup, "cut", &VERIFY);
    assert_eq!(code, 1, "{stdout}");
    one_line_failure(&stderr, "log_tail_cut");
    assert!(stderr.contains("anchored this log at position 7, but it ends at 3: records 4-7 are missing"), "{stderr}");
    assert!(stdout.contains("this log no longer shows the registration of machine"), "{stdout}");
    let (code, report, _) = json_of(&setup, "cut", &VERIFY);
    assert_eq!(code, 1);
    assert_eq!(report["against_vault"]["outcome"], "tail_cut");
    assert_eq!(report["against_vault"]["registration"], "from_anchor_note");
    assert_eq!(
        (report["against_vault"]["missing"]["from"].as_u64(), report["against_vault"]["missing"]["to"].as_u64()),
        (Some(4), Some(7))
    );

    // The note keeps how to find the key (its sealed reference), never the key.
    let note: Value =
        serde_json::from_slice(&std::fs::read(setup.path("cut").join("log-anchor.json")).unwrap()).unwrap();
    let key_id = note["anchored"]["registration_key"]["id"].as_str().unwrap().to_string();
    assert_eq!(key_id.len(), 64, "{note}");
    // Without that key, the check says so (not "not registered").
    copy_dir(&setup.path("cut"), &setup.path("keyless"));
    std::fs::remove_file(setup.path("keyless").join("secrets").join(format!("{key_id}.sealed"))).unwrap();
    let (code, _, stderr) = stdout_of(&setup, "keyless", &VERIFY);
    assert_eq!(code, 1);
    one_line_failure(&stderr, "registration_key_not_found");
    assert!(
        stderr.contains("no longer shows the registration of machine") && stderr.contains("position 7"),
        "{stderr}"
    );
    // A note written before it named the key: the same.
    copy_dir(&setup.path("cut"), &setup.path("old-note"));
    let mut old = note.clone();
    old["anchored"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !["endpoint", "thumbprint", "registration_key"].contains(&k.as_str()));
    std::fs::write(setup.path("old-note").join("log-anchor.json"), serde_json::to_vec(&old).unwrap()).unwrap();
    let (code, _, stderr) = stdout_of(&setup, "old-note", &VERIFY);
    assert_eq!(code, 1);
    one_line_failure(&stderr, "registration_key_not_found");

    // The real log still matches.
    let (code, stdout, stderr) = stdout_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("vault anchor at 7 matches"), "{stdout}");
}

#[test]
fn a_vault_that_is_down_leaves_the_step_recorded_and_audit_anchor_catches_up() {
    let mut setup = Setup::new();
    registered_agent(&setup);
    let (_, status, _) = json_of(&setup, "agent", &["status"]);
    assert_eq!(status["log_anchor"]["position"], 5);
    assert_eq!(status["log_anchor"]["behind"], 0);
    let (_, stdout, _) = stdout_of(&setup, "agent", &["status"]);
    assert!(stdout.contains("anchor        5 at vault prod, as last reported from this data dir"), "{stdout}");

    setup.stop_vault();
    // The step is done and recorded; one warning says the head was not anchored and what to do.
    let (code, stderr) = setup.step("agent", &THROTTLE);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("warning: log head 6 was not anchored at vault prod (vault_unreachable: "), "{stderr}");
    assert!(stderr.contains("run `regent audit anchor`"), "{stderr}");
    let (code, answer, _) = json_of(&setup, "agent", &PROXY_CLEAR);
    assert_eq!(code, 0);
    assert_eq!((answer["outcome"].as_str(), answer["position"].as_u64()), (Some("accepted"), Some(7)));
    assert_eq!(answer["log_anchor"]["anchored"], false);
    assert_eq!(answer["log_anchor"]["reason"], "vault_unreachable");
    // A refused step moves the head too, and is reported too.
    let (code, stderr) = setup.step("agent", &["register"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("warning: log head 8 was not anchored") && stderr.contains("regent: already_registered: "));
    let (_, status, _) = json_of(&setup, "agent", &["status"]);
    assert_eq!(status["events"], 8, "every step was recorded");
    assert_eq!(status["log_anchor"]["behind"], 3);
    assert_eq!(status["log_anchor"]["last_failure"]["reason"], "vault_unreachable");
    let (_, stdout, _) = stdout_of(&setup, "agent", &["status"]);
    assert!(stdout.contains("5 at vault prod (3 records not yet anchored"), "{stdout}");

    let (code, _, stderr) = stdout_of(&setup, "agent", &["audit", "anchor"]);
    assert_eq!(code, 1);
    one_line_failure(&stderr, "vault_unreachable");
    assert!(stderr.contains("log head 8 was not anchored at vault prod"), "{stderr}");
    let (code, _, stderr) = stdout_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 1);
    one_line_failure(&stderr, "vault_unreachable");
    assert!(stderr.contains("cannot read the anchored log head from vault prod"), "{stderr}");

    // Back up: verify shows what is not yet anchored, `audit anchor` catches up.
    setup.start_vault();
    let (code, stdout, stderr) = stdout_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("vault anchor at 5 matches") && stdout.contains("records 6-8 are not yet anchored"),
        "{stdout}"
    );
    let (code, stdout, stderr) = stdout_of(&setup, "agent", &["audit", "anchor"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("log head 8:") && stdout.contains("anchored at vault prod"), "{stdout}");
    let (code, report, _) = json_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 0);
    assert_eq!(report["against_vault"]["outcome"], "match");
    assert_eq!(report["against_vault"]["anchor"]["position"], 8);
    assert!(report["against_vault"]["not_yet_anchored"].is_null());
    let (_, status, _) = json_of(&setup, "agent", &["status"]);
    assert_eq!(status["log_anchor"]["behind"], 0);

    // Unregistering tells the vault, which lists the machine no more (its last head is not sent: the
    // vault holds the machine no longer); then there is nothing to check against.
    quietly(&setup, "agent", &["unregister"]);
    let machines: Value =
        serde_json::from_slice(&setup.admin(&["machines", "--vault", "prod", "--json"]).stdout).unwrap();
    assert_eq!(machines.as_array().map(Vec::len), Some(0), "{machines}");
    let (code, _, stderr) = stdout_of(&setup, "agent", &VERIFY);
    assert_eq!(code, 1);
    one_line_failure(&stderr, "not_registered");
    refused_with(setup.step("agent", &["audit", "anchor"]), "not_registered");
}

/// `regent vault checkpoint`: the transparency log's latest checkpoint, printed as served once it
/// verifies, with the key the service names or a key file; the key printed in the format
/// `--vault-key` reads; another key, an unreadable key file and a vault with nothing there refused,
/// each with its code.
#[test]
fn vault_checkpoint_prints_the_signed_tree_head_and_checks_it_with_the_key_given() {
    let setup = Setup::new();
    registered_agent(&setup); // one head logged
    let checkpoint = |extra: &[&str]| {
        let mut cmd = setup.regent("auditor");
        cmd.args(["vault", "checkpoint", "--server", &setup.url()]).args(extra);
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, key, stderr) = checkpoint(&["--public-key"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let key = key.trim().to_string();
    let verifier: regent_vault::protocol::transparency::NoteVerifier = key.parse().unwrap();
    let key_file = setup.path("vault.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();

    // With the key the service names: verified, and stderr says what that does not prove.
    let (code, note, stderr) = checkpoint(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("pass --vault-key KEYFILE"), "{stderr}");
    let signed = verifier.verify(&note).unwrap();
    assert_eq!((signed.size, signed.origin.as_str()), (1, verifier.name()));
    // With the key file: quiet, the same note; as JSON, its fields.
    let (code, again, stderr) = checkpoint(&["--vault-key", key_file.to_str().unwrap()]);
    assert_eq!((code, stderr.as_str(), again.as_str()), (0, "", note.as_str()));
    let (code, json, _) = checkpoint(&["--json", "--vault-key", key_file.to_str().unwrap()]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((code, json["size"].as_u64(), json["key_given"].as_bool()), (0, Some(1), Some(true)));
    assert_eq!(json["root"], hex::encode(signed.root));

    // Another key, a key file that holds no key, one that is not there: one line each, and the
    // code under --json.
    let refused = |extra: &[&str], exit: i32, code: &str| {
        let (got, out, stderr) = checkpoint(extra);
        assert_eq!((got, out.as_str(), stderr.lines().count()), (exit, "", 1), "{stderr}");
        let (got, out, _) = checkpoint(&[&["--json"], extra].concat());
        let error: Value = serde_json::from_str(&out).unwrap();
        assert_eq!((got, error["error"]["code"].as_str()), (exit, Some(code)), "{out}");
    };
    let other = regent_vault::protocol::transparency::NoteSigner::from_seed("regent-vault-other", [9u8; 32]).unwrap();
    std::fs::write(&key_file, other.verifier().to_string()).unwrap();
    refused(&["--vault-key", key_file.to_str().unwrap()], 1, "checkpoint_unverified");
    std::fs::write(&key_file, "not a key\n").unwrap();
    refused(&["--vault-key", key_file.to_str().unwrap()], 2, "vault_key_unreadable");
    refused(&["--vault-key", setup.path("missing.key").to_str().unwrap()], 2, "vault_key_unreadable");
    // The key and a key file together ask for two things.
    let (code, _, _) = checkpoint(&["--public-key", "--vault-key", key_file.to_str().unwrap()]);
    assert_eq!(code, 2);
}

/// The agent checks every answer against the vault's transparency log: the checkpoint signed by the
/// key it took at first contact, its head included, the tree consistent with the one it checked
/// last, and keeps the checkpoint. A tree rewritten at the vault (sled's own API, the vault
/// stopped) is `vault_log_inconsistent`: a warning, the step itself done, the checkpoint kept as it
/// was.
#[test]
fn the_agent_checks_the_vaults_tree_and_warns_when_it_was_rewritten() {
    let mut setup = Setup::new();
    registered_agent(&setup);
    let kept = |setup: &Setup| -> Value {
        let note: Value =
            serde_json::from_slice(&std::fs::read(setup.path("agent").join("log-anchor.json")).unwrap()).unwrap();
        note["vault_log"].clone()
    };
    let first = kept(&setup);
    assert_eq!((first["key_from"].as_str(), first["size"].as_u64()), (Some("credentials"), Some(1)), "{first}");
    // The key came in the credentials file, and the registration recorded it.
    let registered = &kinds(&setup, "agent")[4];
    assert_eq!(registered["kind"], "Registered");
    assert!(
        registered["summary"].as_str().unwrap().contains("its log's key from the credentials file"),
        "{registered}"
    );

    let (code, answer, stderr) = json_of(&setup, "agent", &THROTTLE);
    assert_eq!((code, stderr.as_str()), (0, ""), "{answer}");
    assert_eq!(
        answer["log_anchor"]["vault_log"],
        serde_json::json!({"verified": true, "tree_size": 2, "recorded": null}),
        "{answer}"
    );
    let seen = kept(&setup);
    assert_eq!(seen["size"], 2);

    // The subtree of the vault's first two leaves rewritten in its store: every later root is made
    // from it, so no later tree extends the one of 2 heads the agent checked.
    setup.stop_vault();
    {
        let store = regent_store::EventStore::open(setup.path("vault").join("log"), &Default::default()).unwrap();
        let side = store.side_tree("machine-records").unwrap();
        let key = [&[b'n', 1][..], &0u64.to_be_bytes()].concat();
        assert!(side.get(&key).unwrap().is_some(), "the leaf's subtree is where the vault keeps it");
        side.insert_all(vec![(key, vec![0xEE; 32])]).unwrap();
        store.flush().unwrap();
    }
    setup.start_vault();
    let (code, answer, stderr) = json_of(&setup, "agent", &THROTTLE_OFF);
    assert_eq!(code, 0, "the step itself is done: {stderr}");
    let vault_log = &answer["log_anchor"]["vault_log"];
    assert_eq!(
        (vault_log["verified"].as_bool(), vault_log["reason"].as_str()),
        (Some(false), Some("vault_log_inconsistent"))
    );
    assert!(vault_log["message"].as_str().unwrap().contains("does not extend the tree of 2 heads"), "{vault_log}");
    assert!(stderr.starts_with("warning: vault_log_inconsistent: vault prod anchored log head 7"), "{stderr}");
    assert!(stderr.contains("recorded in this machine's log as record 8"), "{stderr}");
    assert_eq!(kept(&setup), seen, "the checkpoint verified before is kept");

    // The evidence is a record of the agent's own log, with both checkpoints in it.
    let entries = kinds(&setup, "agent");
    assert_eq!(entries.len(), 8);
    assert_eq!(entries[7]["kind"], "VaultLogInconsistent");
    assert!(entries[7]["summary"].as_str().unwrap().contains("did not hold for log head 7"), "{}", entries[7]);
    // Said once for this evidence: the next step (which carries record 8 to the vault) is not
    // recorded again, though the vault's tree still does not hold.
    let (code, answer, stderr) = json_of(&setup, "agent", &THROTTLE);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(answer["log_anchor"]["vault_log"]["verified"], false);
    assert_eq!(answer["log_anchor"]["vault_log"]["recorded"], Value::Null);
    assert_eq!(answer["log_anchor"]["vault_position"], 9, "the evidence went to the vault with the next head");
    assert_eq!(kinds(&setup, "agent").len(), 9);
}

/// The agent's audit trail, one entry a record.
fn kinds(setup: &Setup, agent: &str) -> Vec<Value> {
    let out = setup.regent(agent).args(["--json", "audit"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_file_without_the_vaults_key_takes_it_at_first_contact_and_records_it() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    // As a real portal's file: no TransparencyLogKey element.
    let text = std::fs::read_to_string(&credentials).unwrap();
    let start = text.find("\r\n  <TransparencyLogKey>").expect("the vault names its key");
    let end = text.find("</TransparencyLogKey>").unwrap() + "</TransparencyLogKey>".len();
    std::fs::write(&credentials, format!("{}{}", &text[..start], &text[end..])).unwrap();
    setup.prepare("agent", &credentials);
    let (code, answer, stderr) = json_of(&setup, "agent", &["register"]);
    assert_eq!((code, stderr.as_str()), (0, ""), "{answer}");
    assert_eq!(answer["log_anchor"]["vault_log"]["recorded"], 6, "{answer}");
    let entries = kinds(&setup, "agent");
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[5]["kind"], "VaultKeyTaken");
    let note: Value =
        serde_json::from_slice(&std::fs::read(setup.path("agent").join("log-anchor.json")).unwrap()).unwrap();
    assert_eq!(note["vault_log"]["key_from"], "first_contact");
    // Taken once: the next step checks with it, and records nothing more.
    let (code, answer, _) = json_of(&setup, "agent", &THROTTLE);
    assert_eq!(code, 0);
    assert_eq!(answer["log_anchor"]["vault_log"]["verified"], true);
    assert_eq!(answer["log_anchor"]["vault_position"], 7);
    assert_eq!(kinds(&setup, "agent").len(), 7);
    // A key that is not one is refused when the file is loaded, not at the first proof.
    let bad = setup.path("bad.VaultCredentials");
    let broken = text.replace("<TransparencyLogKey>regent-vault-", "<TransparencyLogKey>x");
    std::fs::write(&bad, broken).unwrap();
    assert_eq!(setup.folders("other").status.code(), Some(0));
    let (code, stderr) = setup.step("other", &["credentials", "load", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("TransparencyLogKey is not a C2SP verifier key"), "{stderr}");
}
