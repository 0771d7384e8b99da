//! The vault's transparency log, on both storages: every accepted head is a leaf (vault, machine,
//! position, head, the machine's previous leaf, accepted at), each report's answer proves it under
//! a checkpoint signed by the vault's key, a later checkpoint is proved consistent with an earlier
//! one, the tree survives a restart unchanged, and a subtree altered in the storage is caught by
//! the proofs.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use regent_credentials::VaultCredentials;
use regent_store::Head;
use regent_vault::protocol::LoggedHead;
use regent_vault::protocol::transparency::{self as tlog, Checkpoint, Hash, Leaf, NoteVerifier};
use regent_vault::{AdminClient, ErrorCode};

fn register(credentials: &VaultCredentials, request_id: &str) -> String {
    machine_id(&regent_engine::ports::VaultClient::register(
        &quick_client(None),
        &register_request(credentials, None, "srv", request_id, None),
    ))
}

fn hashes(hex: &[String]) -> Vec<Hash> {
    hex.iter().map(|h| <[u8; 32]>::try_from(hex::decode(h).unwrap()).unwrap()).collect()
}

/// The key the vault publishes, as `regent vault checkpoint --public-key` prints it.
fn published_key(vault: &Vault) -> NoteVerifier {
    let health = AdminClient::without_token(&vault.url(), None).unwrap().service_health().unwrap();
    health.checkpoint_key.expect("a vault with a transparency log publishes its key").parse().unwrap()
}

/// Checks `logged` as an agent would: the checkpoint signed by `key`, the leaf the machine's head,
/// included under the checkpoint. Returns the checkpoint and the leaf.
fn verified(key: &NoteVerifier, logged: &LoggedHead, vault: &str, machine: &str, head: Head) -> (Checkpoint, Leaf) {
    let checkpoint = key.verify(&logged.checkpoint).expect("signed by the vault's key");
    let bytes = STANDARD.decode(&logged.leaf).unwrap();
    let leaf = Leaf::decode(&bytes).unwrap();
    assert_eq!((leaf.vault.as_str(), leaf.machine_id.as_str()), (vault, machine));
    assert_eq!((leaf.position, leaf.head), (head.position, head.hash.0));
    tlog::verify_inclusion(
        &tlog::leaf_hash(&bytes),
        logged.index,
        checkpoint.size,
        &hashes(&logged.inclusion),
        &checkpoint.root,
    )
    .expect("the leaf is in the tree the checkpoint signs");
    (checkpoint, leaf)
}

fn every_accepted_head_is_a_leaf_proved_under_a_signed_checkpoint() {
    let vault = Vault::start();
    let key = published_key(&vault);
    let credentials = vault.vault_with_credentials("tlog");
    let (a, b) = (register(&credentials, "req-a"), register(&credentials, "req-b"));
    let client = quick_client(None);
    let signers =
        [head_signer(&vault.url(), "tlog", &a, &credentials), head_signer(&vault.url(), "tlog", &b, &credentials)];
    let logs = [AgentLog::new(), AgentLog::new()];

    // a, b, a, a: four heads, four leaves in the order accepted; a's chain of previous leaves.
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    for (n, (who, records)) in [(0usize, 3usize), (1, 2), (0, 2), (0, 1)].into_iter().enumerate() {
        let head = logs[who].grow(records, "t");
        let anchor = client.report_log_head(&signers[who], &logs[who].store, head, None, None).unwrap();
        let logged = anchor.log.expect("the answer proves the head");
        let machine = [&a, &b][who];
        let (checkpoint, leaf) = verified(&key, &logged, "tlog", machine, head);
        assert_eq!((logged.index, checkpoint.size), (n as u64, n as u64 + 1));
        let previous = [None, None, Some(0), Some(2)][n];
        assert_eq!(leaf.previous, previous, "leaf {n} names the machine's previous leaf");
        assert_eq!(checkpoint.origin, key.name(), "the origin is the key's name");
        checkpoints.push(checkpoint);
    }
    // The same head again: no new leaf, the same proof.
    let again = client.report_log_head(&signers[1], &logs[1].store, logs[1].head(), None, None).unwrap();
    assert_eq!(again.log.as_ref().map(|l| l.index), Some(1));
    assert_eq!(key.verify(&again.log.unwrap().checkpoint).unwrap().size, 4);

    // The admin's proof of a machine: its latest leaf, and each earlier checkpoint consistent with it.
    let latest = checkpoints.last().unwrap().clone();
    for earlier in &checkpoints {
        let proof = vault.admin.machine_proof("tlog", &a, Some(earlier.size)).unwrap();
        let (now, _) = verified(&key, &proof, "tlog", &a, logs[0].head());
        assert_eq!((proof.index, now.root), (3, latest.root));
        let consistency = proof.consistency.expect("asked for");
        assert_eq!(consistency.from, earlier.size);
        tlog::verify_consistency(earlier.size, now.size, &earlier.root, &now.root, &hashes(&consistency.proof))
            .expect("an earlier checkpoint is a prefix of the latest");
    }
    // A checkpoint proved against another root than it had is refused: the check can fail.
    let proof = vault.admin.machine_proof("tlog", &a, Some(2)).unwrap().consistency.unwrap();
    assert!(
        tlog::verify_consistency(2, 4, &checkpoints[0].root, &latest.root, &hashes(&proof.proof)).is_err(),
        "size 1's root is not size 2's"
    );

    // Anyone reads the latest checkpoint; it is the one the answers carried.
    let published = AdminClient::without_token(&vault.url(), None).unwrap().checkpoint().unwrap();
    assert_eq!(key.verify(&published).unwrap(), latest);

    // The tree is the storage's, not the process's: the same checkpoint, byte for byte, after a restart.
    let vault = vault.restart();
    let after = AdminClient::without_token(&vault.url(), None).unwrap().checkpoint().unwrap();
    assert_eq!(after, published);
    assert_eq!(published_key(&vault).to_string(), key.to_string(), "the key is kept");
    // And a report after the restart extends the same tree.
    let client = quick_client(None);
    let signer = head_signer(&vault.url(), "tlog", &b, &credentials);
    let head = logs[1].grow(1, "r");
    let logged = client.report_log_head(&signer, &logs[1].store, head, None, None).unwrap().log.unwrap();
    let (checkpoint, leaf) = verified(&key, &logged, "tlog", &b, head);
    assert_eq!((logged.index, checkpoint.size, leaf.previous), (4, 5, Some(1)));
}
both!(every_accepted_head_is_a_leaf_proved_under_a_signed_checkpoint);

fn a_machine_never_logged_is_named_and_proofs_are_the_admins() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("quiet");
    let machine = register(&credentials, "req-1");
    match vault.admin.machine_proof("quiet", &machine, None) {
        Err(regent_vault::AdminError::NotFound { code, .. }) => assert_eq!(code.code(), "log_head_not_found"),
        other => panic!("{other:?}"),
    }
    let nobody = AdminClient::without_token(&vault.url(), None).unwrap();
    assert!(matches!(nobody.machine_proof("quiet", &machine, None), Err(regent_vault::AdminError::Unauthorized)));
    // An empty tree still has a signed checkpoint: size 0, the empty root.
    let empty = published_key(&vault).verify(&nobody.checkpoint().unwrap()).unwrap();
    assert_eq!((empty.size, empty.root), (0, tlog::empty_root()));
}
both!(a_machine_never_logged_is_named_and_proofs_are_the_admins);

/// An auditor holding checkpoints taken over time asks the public route for the proof between each
/// pair of sizes and checks it against the two roots it holds; the agent's client gets the same
/// proof; what cannot be proved is refused with one line saying what to ask instead, and nothing is
/// written.
fn checkpoints_taken_over_time_are_proved_consistent_for_anyone() {
    let vault = Vault::start();
    let key = published_key(&vault);
    let auditor = AdminClient::without_token(&vault.url(), None).unwrap();
    let credentials = vault.vault_with_credentials("audit");
    let machines = [register(&credentials, "req-a"), register(&credentials, "req-b"), register(&credentials, "req-c")];
    let signers = machines.each_ref().map(|m| head_signer(&vault.url(), "audit", m, &credentials));
    let logs = [AgentLog::new(), AgentLog::new(), AgentLog::new()];
    let client = quick_client(None);

    // Eleven heads from three machines; a checkpoint read after some of them (complete subtrees
    // and ragged edges both), as an auditor polling now and then holds them.
    let mut held: Vec<Checkpoint> = Vec::new();
    for n in 0..11usize {
        let who = [0, 1, 0, 2, 2, 1, 0, 0, 1, 2, 0][n];
        let head = logs[who].grow(1 + n % 2, "t");
        client.report_log_head(&signers[who], &logs[who].store, head, None, None).unwrap();
        if [1, 2, 3, 4, 5, 7, 8, 11].contains(&(n + 1)) {
            held.push(key.verify(&auditor.checkpoint().unwrap()).unwrap());
        }
    }
    let sizes: Vec<u64> = held.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [1, 2, 3, 4, 5, 7, 8, 11]);

    let written = vault.log_position();
    for (i, old) in held.iter().enumerate() {
        for new in &held[i..] {
            let proof = auditor.consistency(old.size, new.size).unwrap();
            tlog::verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
                .unwrap_or_else(|e| panic!("{} to {}: {e}", old.size, new.size));
            if old.size == new.size {
                assert!(proof.is_empty(), "equal sizes need no hash");
            }
            assert_eq!(client.consistency(&signers[0], old.size, new.size).unwrap(), proof, "the agent's client");
        }
    }
    // The check can fail: a proof does not hold against another tree's root.
    let proof = auditor.consistency(3, 11).unwrap();
    assert!(tlog::verify_consistency(3, 11, &held[1].root, &held[7].root, &proof).is_err(), "size 2's root");
    assert!(tlog::verify_consistency(3, 11, &held[2].root, &held[6].root, &proof).is_err(), "size 8's root");

    // The wire: both sizes stated, lowercase hex, JSON; anyone, no token.
    let answer = raw(vault.addr(), "GET", "/v1/checkpoint/consistency?from=3&to=11", &[], b"");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", answer.head);
    let expected: Vec<String> = proof.iter().map(hex::encode).collect();
    assert_eq!(answer.json(), serde_json::json!({"from": 3, "to": 11, "proof": expected}));

    // Refusals: 400 bad_request, one line naming what to fix; never a 500.
    let size = held[7].size;
    let past = format!("from=1&to={}", size + 1);
    let max = format!("from=1&to={}", u64::MAX);
    for (query, says) in [
        ("", "from is missing"),
        ("to=3", "from is missing"),
        ("from=1", "to is missing"),
        ("from=&to=3", "from must be a tree size"),
        ("from=abc&to=3", "from must be a tree size"),
        ("from=%2B1&to=3", "from must be a tree size"),
        ("from=-1&to=3", "from must be a tree size"),
        ("from=1&to=3.0", "to must be a tree size"),
        ("from=1&to=99999999999999999999", "to must be a tree size"),
        ("from=5&to=3", "swap them"),
        (past.as_str(), "past the transparency log's size (11)"),
        (max.as_str(), "past the transparency log's size (11)"),
        ("from=0&to=3", "RFC 9162"),
        ("from=0&to=0", "RFC 9162"),
        ("from=1&to=2&x=1", "the query is malformed"),
        ("from=1&from=2&to=3", "the query is malformed"),
    ] {
        let answer = raw(vault.addr(), "GET", &format!("/v1/checkpoint/consistency?{query}"), &[], b"");
        assert_eq!((answer.status, answer.error_code().as_str()), (400, "bad_request"), "?{query}: {}", answer.body);
        let message = answer.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(says) && !message.contains('\n'), "?{query}: {message}");
    }
    match auditor.consistency(5, 3) {
        Err(regent_vault::AdminError::Refused { status: 400, code: ErrorCode::BadRequest, message }) => {
            assert!(message.contains("swap them"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match client.consistency(&signers[1], 0, 3) {
        Err(regent_vault::AnchorError::Refused { code: ErrorCode::BadRequest, message }) => {
            assert!(message.contains("RFC 9162"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(vault.log_position(), written, "proofs and refusals write nothing");

    // The proofs are the storage's: the same after a restart.
    let vault = vault.restart();
    let auditor = AdminClient::without_token(&vault.url(), None).unwrap();
    assert_eq!(auditor.consistency(3, 11).unwrap(), proof);
}
both!(checkpoints_taken_over_time_are_proved_consistent_for_anyone);

/// A subtree changed in the database (no hook in the vault): the next checkpoint's root is not
/// consistent with what an agent verified before.
#[test]
fn a_subtree_altered_in_the_database_breaks_consistency_with_what_was_verified() {
    let vault = Vault::on_postgres();
    let key = published_key(&vault);
    let credentials = vault.vault_with_credentials("tamper");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let signer = head_signer(&vault.url(), "tamper", &machine, &credentials);
    let log = AgentLog::new();
    let head = log.grow(2, "t");
    let first = client.report_log_head(&signer, &log.store, head, None, None).unwrap().log.unwrap();
    let (seen, _) = verified(&key, &first, "tamper", &machine, head);

    vault.sql("UPDATE regent_vault.tree_nodes SET hash = sha256(hash) WHERE level = 0 AND node_index = 0");
    let head = log.grow(1, "t");
    let second = client.report_log_head(&signer, &log.store, head, None, None).unwrap().log.unwrap();
    let now = key.verify(&second.checkpoint).unwrap();
    let proof = vault.admin.machine_proof("tamper", &machine, Some(seen.size)).unwrap().consistency.unwrap();
    let caught = tlog::verify_consistency(seen.size, now.size, &seen.root, &now.root, &hashes(&proof.proof));
    assert!(caught.is_err(), "a rewritten tree is not consistent with the checkpoint seen before it");
}
