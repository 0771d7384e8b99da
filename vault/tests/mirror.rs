//! The vault keeps every record of each machine's log (its mirror), on both storages: from a
//! machine's first report on (no head taken on trust), across as many reports as a long log takes,
//! never a record that does not chain, and exported so that `regent audit verify --file` checks it.
//! A machine anchored before the vault kept records catches up the same way.

mod common;

use chrono::Utc;
use common::*;
use regent_credentials::VaultCredentials;
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, Head, NewEvent, StoreOptions};
use regent_vault::{BackgroundServer, ServeConfig};

fn register(credentials: &VaultCredentials, request_id: &str) -> String {
    machine_id(&regent_engine::ports::VaultClient::register(
        &quick_client(None),
        &register_request(credentials, None, "srv", request_id, None),
    ))
}

fn every_record_is_kept_from_position_one_across_as_many_reports_as_it_takes() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("kept");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = head_signer(&vault.url(), "kept", &machine, &credentials);
    let log = AgentLog::new();

    // 600 records at once: steps of at most 256, each resuming where the last stopped.
    let head = log.grow(600, "k");
    let anchor = client.report_log_head(&me, &log.store, head, None, None).unwrap();
    assert_eq!((anchor.position, anchor.mirrored), (600, Some(600)));
    assert_eq!(kept_records(&vault.admin, "kept", &machine), (head, log.lines(1, 600)));
    // Records of about 20 KiB: steps bounded by bytes.
    let head = log.grow_padded(60, "k", 20 * 1024);
    client.report_log_head(&me, &log.store, head, None, None).unwrap();
    assert_eq!(kept_records(&vault.admin, "kept", &machine), (head, log.lines(1, 660)));
    // The same head again keeps nothing twice.
    client.report_log_head(&me, &log.store, head, None, None).unwrap();
    assert_eq!(kept_records(&vault.admin, "kept", &machine).1.len(), 660);

    // What is kept survives a restart (and is read back from the storage, not from memory).
    let vault = vault.restart();
    assert_eq!(kept_records(&vault.admin, "kept", &machine), (head, log.lines(1, 660)));
    // A machine the vault does not hold, and a vault it does not hold: named.
    let not_found = |vault_name: &str, machine_id: &str| match vault.admin.export_machine_log(vault_name, machine_id) {
        Err(regent_vault::AdminError::NotFound { code, .. }) => code.code().to_string(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("exported"),
    };
    assert_eq!(not_found("kept", "00000000-0000-0000-0000-000000000000"), "machine_not_found");
    assert_eq!(not_found("nowhere", &machine), "vault_not_found");
}
both!(every_record_is_kept_from_position_one_across_as_many_reports_as_it_takes);

fn records_that_do_not_chain_are_refused_and_never_kept() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("chain");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = head_signer(&vault.url(), "chain", &machine, &credentials);

    // A first report whose record 2 was edited: refused as evidence, nothing kept.
    let damaged = AgentLog::new();
    let head = damaged.grow(3, "d");
    let mut lines = damaged.lines(1, 3);
    lines[1] = lines[1].replace("\"n\":1", "\"n\":7");
    let report = |lines: Vec<String>, head: Head, nonce: &str| {
        let timestamp = Utc::now().timestamp();
        let hash = head.hash.to_hex();
        let thumbprint = credentials.certificate.thumbprint.clone();
        let message = regent_vault::protocol::log_head_message(
            "chain",
            &machine,
            &thumbprint,
            head.position,
            &hash,
            &lines,
            timestamp,
            nonce,
        );
        let body = regent_vault::protocol::HeadReport {
            thumbprint,
            position: head.position,
            hash,
            records: lines,
            timestamp,
            nonce: nonce.to_string(),
            signature: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                credentials.private_key.sign(&message).unwrap(),
            ),
            tree_size: None,
        };
        let path = format!("/v1/vaults/chain/machines/{machine}/log-head");
        raw(vault.addr(), "POST", &path, &[("Content-Type", "application/json")], &serde_json::to_vec(&body).unwrap())
    };
    let answer = report(lines, head, "nonce-edited-0123456789");
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_proof_invalid"), "{}", answer.body);
    assert!(answer.body.contains("record 2: hash mismatch"), "{}", answer.body);
    assert!(kept_records(&vault.admin, "chain", &machine).1.is_empty());

    // The honest log is kept; a copy grown apart from record 4 on is refused past it, and nothing
    // of it is kept.
    let log = AgentLog::new();
    log.grow(3, "h");
    let fork = log.copy();
    let head5 = log.grow(2, "h");
    client.report_log_head(&me, &log.store, head5, None, None).unwrap();
    let forked = fork.grow(4, "f");
    let refused = client.report_log_head(&me, &fork.store, forked, None, None).unwrap_err();
    assert_eq!(refused.code(), "log_head_conflict", "{refused}");
    assert_eq!(kept_records(&vault.admin, "chain", &machine), (head5, log.lines(1, 5)));
    let answer = report(fork.lines(6, 7), forked, "nonce-forked-0123456789");
    assert_eq!(answer.error_code(), "log_head_conflict", "{}", answer.body);
    assert_eq!(kept_records(&vault.admin, "chain", &machine), (head5, log.lines(1, 5)));
}
both!(records_that_do_not_chain_are_refused_and_never_kept);

/// Appends to a stopped sled vault's own log the event a build from before the vault kept records
/// wrote for an accepted head: a LogHeadAnchored without `mirrored_from`.
fn anchor_as_an_older_vault_did(dir: &std::path::Path, vault: &str, machine_id: &str, head: Head) {
    let store = EventStore::open(dir.join("log"), &StoreOptions::default()).unwrap();
    let now = Utc::now();
    let event = NewEvent::new(
        "LogHeadAnchored",
        1,
        &serde_json::json!({
            "machine_id": machine_id, "position": head.position, "hash": head.hash.to_hex(),
            "nonce": format!("older-{}", uuid::Uuid::now_v7()), "anchored_at": now, "peer": "127.0.0.1",
        }),
    )
    .unwrap();
    let meta = BatchMeta {
        recorded_at: now,
        actor: Actor { user: format!("machine:{machine_id}"), host: "127.0.0.1".into() },
        correlation_id: uuid::Uuid::now_v7(),
    };
    store.append(&format!("vault/{vault}"), ExpectedVersion::Any, &meta, &[event]).unwrap();
}

#[test]
fn a_machine_anchored_before_the_vault_kept_records_catches_up_from_position_one() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("older");
    let honest = register(&credentials, "req-1");
    let rewritten = register(&credentials, "req-2");
    let log = AgentLog::new();
    let anchored = log.grow(500, "o");
    let other = AgentLog::new();
    let other_head = other.grow(500, "x");
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    anchor_as_an_older_vault_did(dir.path(), "older", &honest, anchored);
    // The second machine's anchor names another history than its log holds.
    anchor_as_an_older_vault_did(dir.path(), "older", &rewritten, other_head);

    let server = BackgroundServer::start(ServeConfig::new(dir.path(), loopback())).unwrap();
    let client = quick_client(None);
    let me = head_signer(server.url(), "older", &honest, &credentials);
    let before = client.fetch_log_head(&me).unwrap().unwrap();
    assert_eq!((before.position, before.mirrored), (500, Some(0)), "anchored, nothing kept");

    // Its log went on to 600: steps 1-256 and 257-512 (past the anchor, through it), then 513-600.
    let head = log.grow(100, "o");
    let after = client.report_log_head(&me, &log.store, head, None, None).unwrap();
    assert_eq!((after.position, after.mirrored), (600, Some(600)));
    let admin = regent_vault::AdminClient::from_token_file(server.url(), server.admin_token_path(), None).unwrap();
    assert_eq!(kept_records(&admin, "older", &honest), (head, log.lines(1, 600)));

    // The other machine's log is not the one its anchor named: refused where the walk reaches the
    // anchored position, and nothing past the last step that chained and agreed is kept.
    let them = head_signer(server.url(), "older", &rewritten, &credentials);
    let refused = client.report_log_head(&them, &log.store, head, None, None).unwrap_err();
    assert_eq!(refused.code(), "log_head_conflict", "{refused}");
    assert!(refused.is_tamper_evidence());
    let now = client.fetch_log_head(&them).unwrap().unwrap();
    assert_eq!((now.position, now.hash, now.mirrored), (500, other_head.hash.to_hex(), Some(256)));
    assert_eq!(kept_records(&admin, "older", &rewritten).1, log.lines(1, 256));
    server.shutdown().unwrap();
}
