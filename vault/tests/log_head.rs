//! The log-head endpoint end to end, in-process: a registered machine anchors the head of its log
//! with the key it registered with, reads it back, and the vault refuses everything else. The
//! agent's logs here are real stores in temp dirs: a report carries the records the vault does not
//! keep yet (from position 1 at first), and the vault walks them and keeps them.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use common::*;
use regent_credentials::VaultCredentials;
use regent_store::{Digest32, EventStore, Head, StoreOptions};
use regent_vault::protocol::{HeadReport, MAX_PROOF_BYTES, MAX_PROOF_RECORDS, log_head_message};
use regent_vault::{AdminClient, AnchorError, BackgroundServer, HeadSigner, ServeConfig};
use secrecy::SecretString;
use zeroize::Zeroizing;

fn hash(byte: u8) -> Digest32 {
    Digest32([byte; 32])
}

/// Registers a machine with `credentials` and returns its id.
fn register(credentials: &VaultCredentials, request_id: &str) -> String {
    machine_id(&regent_engine::ports::VaultClient::register(
        &quick_client(None),
        &register_request(credentials, None, "srv", request_id, None),
    ))
}

/// Speaks for `machine_id` with the key of `credentials` (the registration's, or another to forge).
fn signer(vault: &Vault, name: &str, machine_id: &str, credentials: &VaultCredentials) -> HeadSigner {
    head_signer(&vault.url(), name, machine_id, credentials)
}

fn refused_code(result: Result<impl std::fmt::Debug, AnchorError>) -> String {
    match result {
        Err(e) => e.code().to_string(),
        Ok(answer) => panic!("expected a refusal, got {answer:?}"),
    }
}

/// The vault's own log, in order.
fn vault_log(dir: &std::path::Path) -> Vec<regent_store::Record> {
    let store = EventStore::open(dir.join("log"), &StoreOptions::default()).unwrap();
    store.read_all(0).map(|r| r.unwrap()).collect()
}

/// The kinds of the vault's own log, in order.
fn log_kinds(dir: &std::path::Path) -> Vec<String> {
    vault_log(dir).into_iter().map(|r| r.kind).collect()
}

/// The positions the vault anchored, in order.
fn anchored_positions(dir: &std::path::Path) -> Vec<u64> {
    vault_log(dir)
        .iter()
        .filter(|r| r.kind == "LogHeadAnchored")
        .map(|r| r.payload_as::<serde_json::Value>().unwrap()["position"].as_u64().unwrap())
        .collect()
}

fn kept(vault: &Vault, name: &str, machine_id: &str) -> (Head, Vec<String>) {
    kept_records(&vault.admin, name, machine_id)
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| k.as_str() == kind).count()
}

/// A report as the agent builds it, signed with `credentials`, carrying `records`.
fn signed_report(
    credentials: &VaultCredentials,
    vault: &str,
    machine_id: &str,
    head: (u64, &str),
    records: Vec<String>,
    nonce: &str,
) -> HeadReport {
    let timestamp = Utc::now().timestamp();
    let thumbprint = credentials.certificate.thumbprint.clone();
    let (position, hash) = head;
    let message = log_head_message(vault, machine_id, &thumbprint, position, hash, &records, timestamp, nonce);
    HeadReport {
        thumbprint,
        position,
        hash: hash.to_string(),
        records,
        timestamp,
        nonce: nonce.to_string(),
        signature: STANDARD.encode(credentials.private_key.sign(&message).unwrap()),
        tree_size: None,
    }
}

fn signed_body(
    credentials: &VaultCredentials,
    vault: &str,
    machine_id: &str,
    position: u64,
    hash: &str,
    nonce: &str,
) -> HeadReport {
    signed_report(credentials, vault, machine_id, (position, hash), Vec::new(), nonce)
}

fn post(vault: &Vault, machine_id: &str, name: &str, body: &HeadReport) -> RawAnswer {
    let path = format!("/v1/vaults/{name}/machines/{machine_id}/log-head");
    raw(vault.addr(), "POST", &path, &[("Content-Type", "application/json")], &serde_json::to_vec(body).unwrap())
}

#[test]
fn a_signed_head_is_anchored_read_back_and_listed() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("alpha");
    let machine = register(&credentials, "req-1");
    let other = register(&credentials, "req-2");
    let client = quick_client(None);
    let me = signer(&vault, "alpha", &machine, &credentials);
    let log = AgentLog::new();

    assert_eq!(client.fetch_log_head(&me).unwrap(), None, "nothing anchored yet");
    assert_eq!(kept(&vault, "alpha", &machine).1, Vec::<String>::new(), "nothing kept yet");
    // No head is taken on trust: the first report carries the records from position 1.
    let head = log.grow(3, "a");
    let first = client.report_log_head(&me, &log.store, head, None, None).unwrap();
    assert_eq!(
        (first.machine_id.as_str(), first.position, first.hash.as_str(), first.mirrored),
        (machine.as_str(), 3, head.hash.to_hex().as_str(), Some(3))
    );
    assert_eq!(kept(&vault, "alpha", &machine), (head, log.lines(1, 3)), "the records, byte for byte");
    assert!((Utc::now() - first.anchored_at).num_seconds().abs() < 60);
    assert_eq!(first.refusals, 0);
    assert_eq!(client.fetch_log_head(&me).unwrap(), Some(first.clone()));

    // The same head again (a retry, or `regent audit anchor` with nothing new): the first answer,
    // nothing written (counted in the log below).
    assert_eq!(client.report_log_head(&me, &log.store, head, None, None).unwrap(), first);

    // Past it: records 4 and 5 go with the head, and the vault walks them from 3.
    let head = log.grow(2, "a");
    let later = client.report_log_head(&me, &log.store, head, None, None).unwrap();
    assert_eq!((later.position, later.hash.as_str()), (5, head.hash.to_hex().as_str()));
    assert_eq!(kept(&vault, "alpha", &machine), (head, log.lines(1, 5)));
    // The other machine's head is its own.
    assert_eq!(client.fetch_log_head(&signer(&vault, "alpha", &other, &credentials)).unwrap(), None);

    let machines = vault.admin.machines("alpha").unwrap();
    let listed = machines.iter().find(|m| m.machine_id == machine).unwrap();
    assert_eq!(listed.log_head.as_ref().map(|h| h.position), Some(5));
    assert!(machines.iter().find(|m| m.machine_id == other).unwrap().log_head.is_none());

    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    assert_eq!(anchored_positions(dir.path()), [3, 5], "3, the same 3 again, then 5");
}

#[test]
fn forged_foreign_unknown_and_replayed_reports_are_refused_and_store_nothing() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("beta");
    let machine = register(&credentials, "req-1");
    // A later download of the same vault, and another vault's credentials.
    let newer = vault.download("beta", None);
    let foreign = vault.vault_with_credentials("gamma");
    let client = quick_client(None);
    let log = AgentLog::new();
    let head = log.grow(2, "b");

    // Signed with another key under the registration's thumbprint: the signature does not verify.
    let mut forged = signer(&vault, "beta", &machine, &credentials);
    forged.private_key = Zeroizing::new(newer.private_key.pkcs8_der().to_vec());
    assert_eq!(refused_code(client.report_log_head(&forged, &log.store, head, None, None)), "credentials_invalid");
    assert_eq!(refused_code(client.fetch_log_head(&forged)), "credentials_invalid");
    // A valid certificate of the same vault, but not the one the machine registered with.
    let other_cert = signer(&vault, "beta", &machine, &newer);
    assert_eq!(refused_code(client.report_log_head(&other_cert, &log.store, head, None, None)), "credentials_invalid");
    // Another vault's certificate.
    let other_vault = signer(&vault, "beta", &machine, &foreign);
    assert_eq!(
        refused_code(client.report_log_head(&other_vault, &log.store, head, None, None)),
        "credentials_wrong_vault"
    );
    // A machine the vault does not know, and a vault that does not exist.
    let unknown = signer(&vault, "beta", "00000000-0000-0000-0000-000000000000", &credentials);
    assert_eq!(refused_code(client.report_log_head(&unknown, &log.store, head, None, None)), "machine_not_found");
    let nowhere = signer(&vault, "nowhere", &machine, &credentials);
    assert_eq!(refused_code(client.report_log_head(&nowhere, &log.store, head, None, None)), "vault_not_found");
    assert!(client.fetch_log_head(&signer(&vault, "beta", &machine, &credentials)).unwrap().is_none());

    // A replayed request: the first is anchored, the same bytes again are refused.
    let h = |byte: u8| hash(byte).to_hex();
    let body = signed_report(
        &credentials,
        "beta",
        &machine,
        (2, &head.hash.to_hex()),
        log.lines(1, 2),
        "nonce-replay-0123456789",
    );
    let first = post(&vault, &machine, "beta", &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let again = post(&vault, &machine, "beta", &body);
    assert_eq!((again.status, again.error_code().as_str()), (403, "nonce_replayed"), "{}", again.body);
    // A changed field breaks the signature (the records too); malformed fields are a 400; a read
    // needs its headers.
    let mut tampered = signed_body(&credentials, "beta", &machine, 9, &h(9), "nonce-tamper-0123456789");
    tampered.position = 10;
    assert_eq!(post(&vault, &machine, "beta", &tampered).error_code(), "credentials_invalid");
    let mut padded = signed_body(&credentials, "beta", &machine, 5, &h(5), "nonce-padded-0123456789");
    padded.records = log.lines(1, 1);
    assert_eq!(post(&vault, &machine, "beta", &padded).error_code(), "credentials_invalid");
    let mut zero = signed_body(&credentials, "beta", &machine, 0, &h(0), "nonce-zero-0123456789ab");
    zero.position = 0;
    assert_eq!(post(&vault, &machine, "beta", &zero).status, 400);
    let upper = signed_body(&credentials, "beta", &machine, 11, &h(0xab).to_uppercase(), "nonce-upper-0123456789");
    assert_eq!(post(&vault, &machine, "beta", &upper).status, 400);
    let stale = HeadReport {
        timestamp: Utc::now().timestamp() - 3600,
        ..signed_body(&credentials, "beta", &machine, 12, &h(12), "nonce-stale-0123456789")
    };
    assert_eq!(post(&vault, &machine, "beta", &stale).error_code(), "clock_skew");
    let path = format!("/v1/vaults/beta/machines/{machine}/log-head");
    let unsigned = raw(vault.addr(), "GET", &path, &[], b"");
    assert_eq!((unsigned.status, unsigned.error_code().as_str()), (400, "bad_request"), "{}", unsigned.body);

    let anchored = client.fetch_log_head(&signer(&vault, "beta", &machine, &credentials)).unwrap().unwrap();
    assert_eq!((anchored.position, anchored.refusals), (2, 0), "only the one good report counts");
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let kinds = log_kinds(dir.path());
    assert_eq!((count(&kinds, "LogHeadAnchored"), count(&kinds, "LogHeadRefused")), (1, 0));
}

#[test]
fn a_head_that_goes_back_or_forks_is_refused_recorded_and_changes_nothing() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("delta");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = signer(&vault, "delta", &machine, &credentials);
    let log = AgentLog::new();
    log.grow(3, "d");
    // A copy at 3, which will grow apart.
    let fork = log.copy();
    let head5 = log.grow(2, "d");
    let anchored = client.report_log_head(&me, &log.store, head5, None, None).unwrap();

    let regressed = client.report_log_head(&me, &log.store, log.head_at(4), None, None).unwrap_err();
    assert_eq!(regressed.code(), "log_head_regressed");
    assert!(regressed.is_tamper_evidence());
    assert!(regressed.to_string().contains("record 5 is missing"), "{regressed}");
    let other5 = Head { position: 5, hash: hash(0xee) };
    let conflict = client.report_log_head(&me, &log.store, other5, None, None).unwrap_err();
    assert_eq!(conflict.code(), "log_head_conflict");
    assert!(conflict.is_tamper_evidence());

    let now = client.fetch_log_head(&me).unwrap().unwrap();
    assert_eq!((now.position, now.hash, now.anchored_at), (5, head5.hash.to_hex(), anchored.anchored_at));
    assert_eq!(now.refusals, 2, "the refusals are kept as evidence");
    let last = now.last_refusal.unwrap();
    assert_eq!((last.error.code(), last.position, last.hash), ("log_head_conflict", 5, hash(0xee).to_hex()));

    // A log cut back and grown past the anchor again: its head is later, but its record 6 follows
    // another record 5 than the anchored one. Refused, and recorded once (a retry adds nothing).
    let forked = fork.grow(4, "fork");
    assert_eq!(forked.position, 7);
    let grown = client.report_log_head(&me, &fork.store, forked, None, None).unwrap_err();
    assert_eq!(grown.code(), "log_head_conflict", "{grown}");
    assert!(grown.to_string().contains("another record at position 5"), "{grown}");
    assert_eq!(client.report_log_head(&me, &fork.store, forked, None, None).unwrap_err().code(), "log_head_conflict");
    assert_eq!(client.fetch_log_head(&me).unwrap().unwrap().refusals, 3);
    // Past the anchor without its records: asked for them, nothing recorded. The anchored head
    // itself again: the first answer.
    let same = signed_body(&credentials, "delta", &machine, 5, &head5.hash.to_hex(), "nonce-same-0123456789ab");
    let answer = post(&vault, &machine, "delta", &same);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["anchored_at"], serde_json::to_value(anchored.anchored_at).unwrap());
    let bare = signed_body(&credentials, "delta", &machine, 8, &hash(8).to_hex(), "nonce-bare-0123456789ab");
    let answer = post(&vault, &machine, "delta", &bare);
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_base_required"), "{}", answer.body);

    // A head past the anchor whose records lead from it is accepted: the refusals do not lock the
    // machine out.
    let head6 = log.grow(1, "d");
    assert_eq!(client.report_log_head(&me, &log.store, head6, None, None).unwrap().position, 6);
    assert_eq!(client.fetch_log_head(&me).unwrap().unwrap().refusals, 3);
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let kinds = log_kinds(dir.path());
    assert_eq!((count(&kinds, "LogHeadAnchored"), count(&kinds, "LogHeadRefused")), (2, 3));
}

/// The attack the old protocol allowed: a log cut back before the anchor and grown past it again,
/// whose report simply claimed the anchored hash. Now the vault walks the records itself, so every
/// way of dressing up the grown records is refused, and recorded.
#[test]
fn records_rewritten_after_the_anchor_cannot_pass_for_extending_it() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("eta");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = signer(&vault, "eta", &machine, &credentials);
    let log = AgentLog::new();
    log.grow(3, "honest");
    let fork = log.copy();
    let anchored = log.grow(2, "honest"); // 5, anchored below
    client.report_log_head(&me, &log.store, anchored, None, None).unwrap();
    let grown = fork.grow(4, "cut-and-grown"); // 4..7 of another history
    let h5 = anchored.hash.to_hex();
    let report = |head: (u64, &str), records: Vec<String>, nonce: &str| {
        post(&vault, &machine, "eta", &signed_report(&credentials, "eta", &machine, head, records, nonce))
    };
    let grown_hash = grown.hash.to_hex();

    // Record 6 edited to name the anchored hash as its predecessor: its bytes no longer hash to
    // the hash stored with them (the vault computes it).
    let mut relinked = fork.lines(6, 7);
    relinked[0] = relinked[0].replace(&fork.head_at(5).hash.to_hex(), &h5);
    assert_ne!(relinked[0], fork.lines(6, 6)[0]);
    let answer = report((7, &grown_hash), relinked.clone(), "nonce-relink-0123456789");
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_proof_invalid"), "{}", answer.body);
    assert!(answer.body.contains("record 6: hash mismatch"), "{}", answer.body);

    // ... and its stored hash recomputed too: record 6 now follows 5, but record 7 does not follow it.
    let body_start = relinked[0].find(",\"record\":").unwrap() + ",\"record\":".len();
    let record6 = &relinked[0][body_start..relinked[0].len() - 1];
    let rehashed = Digest32::chain(&anchored.hash, record6.as_bytes()).to_hex();
    relinked[0] = relinked[0].replace(&stored_hash(&relinked[0]).to_hex(), &rehashed);
    let answer = report((7, &grown_hash), relinked, "nonce-rehash-0123456789");
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_proof_invalid"), "{}", answer.body);
    assert!(answer.body.contains("record 7: broken link"), "{}", answer.body);

    // The honest log's records with another head claimed at their end.
    let head7 = log.grow(2, "honest");
    let answer = report((7, &grown_hash), log.lines(6, 7), "nonce-claim-01234567890");
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_proof_invalid"), "{}", answer.body);
    // Records that stop before the head claimed, or go past it.
    let answer = report((7, &head7.hash.to_hex()), log.lines(6, 6), "nonce-short-01234567890");
    assert_eq!(answer.error_code(), "log_head_proof_invalid", "{}", answer.body);
    let answer = report((6, &log.head_at(6).hash.to_hex()), log.lines(6, 7), "nonce-long-012345678901");
    assert_eq!(answer.error_code(), "log_head_proof_invalid", "{}", answer.body);
    // The grown log's own records, as they are: they follow another record 5.
    let answer = report((7, &grown_hash), fork.lines(6, 7), "nonce-fork-012345678901");
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_conflict"), "{}", answer.body);

    // Records that start elsewhere than right after the anchor (an older anchor): asked again, not
    // recorded. Records that are not records, or hold a line break, or come with a first report:
    // malformed, not recorded.
    let answer = report((7, &head7.hash.to_hex()), log.lines(7, 7), "nonce-late-012345678901");
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_base_required"), "{}", answer.body);
    let answer = report((7, &head7.hash.to_hex()), vec!["not a record".into(), "{}".into()], "nonce-junk-0123456789ab");
    assert_eq!((answer.status, answer.error_code().as_str()), (400, "log_head_proof_malformed"), "{}", answer.body);
    let mut broken_line = log.lines(6, 7);
    broken_line[0].insert(1, '\n');
    let answer = report((7, &head7.hash.to_hex()), broken_line, "nonce-break-01234567890");
    assert_eq!((answer.status, answer.error_code().as_str()), (400, "log_head_proof_malformed"), "{}", answer.body);
    // A first report without records, or with records that do not start at 1: asked for them, not
    // recorded; from 1, kept.
    let newcomer = register(&credentials, "req-2");
    let h2 = log.head_at(2).hash.to_hex();
    let bare = signed_report(&credentials, "eta", &newcomer, (2, &h2), Vec::new(), "nonce-first-01234567890");
    let answer = post(&vault, &newcomer, "eta", &bare);
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_base_required"), "{}", answer.body);
    assert!(answer.body.contains("from position 1"), "{}", answer.body);
    let late = signed_report(&credentials, "eta", &newcomer, (2, &h2), log.lines(2, 2), "nonce-first-late-0123456");
    let answer = post(&vault, &newcomer, "eta", &late);
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_base_required"), "{}", answer.body);
    let whole = signed_report(&credentials, "eta", &newcomer, (2, &h2), log.lines(1, 2), "nonce-first-whole-012345");
    let answer = post(&vault, &newcomer, "eta", &whole);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(kept(&vault, "eta", &newcomer).1, log.lines(1, 2));

    // The honest records still anchor.
    assert_eq!(client.report_log_head(&me, &log.store, head7, None, None).unwrap().position, 7);
    let now = client.fetch_log_head(&me).unwrap().unwrap();
    assert_eq!(now.refusals, 6, "relinked, rehashed, claimed, short, long, forked");
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let refused: Vec<serde_json::Value> =
        vault_log(dir.path()).iter().filter(|r| r.kind == "LogHeadRefused").map(|r| r.payload_as().unwrap()).collect();
    assert_eq!(refused.len(), 6);
    // What was sent is kept as its count and digest (the vault keeps no records), with where it failed.
    assert_eq!((refused[0]["records"].as_u64(), refused[0]["anchored_position"].as_u64()), (Some(2), Some(5)));
    assert_eq!(refused[0]["records_sha256"].as_str().map(str::len), Some(64));
    assert!(refused[0]["detail"].as_str().unwrap().contains("hash mismatch"), "{}", refused[0]);
}

#[test]
fn a_head_far_ahead_is_reported_in_steps_within_the_bounds() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("theta");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = signer(&vault, "theta", &machine, &credentials);
    let log = AgentLog::new();
    client.report_log_head(&me, &log.store, log.grow(1, "t"), None, None).unwrap();

    // 600 small records past the anchor: steps of 256 records.
    let head = log.grow(600, "t");
    assert_eq!(client.report_log_head(&me, &log.store, head, None, None).unwrap().position, 601);
    // 100 records of about 20 KiB: steps bounded by bytes (1 MiB).
    let padded = log.grow_padded(100, "t", 20 * 1024);
    assert_eq!(client.report_log_head(&me, &log.store, padded, None, None).unwrap().position, 701);

    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let positions = anchored_positions(dir.path());
    assert_eq!(positions[..4], [1, 257, 513, 601]);
    // At most 51 records of 20 KiB fit in 1 MiB: at least two steps for the 100.
    assert!(positions.len() >= 6 && positions.last() == Some(&701), "{positions:?}");
    let step_sizes: Vec<u64> = positions[3..].windows(2).map(|w| w[1] - w[0]).collect();
    assert!(step_sizes.iter().all(|&n| (1..=(MAX_PROOF_BYTES / (20 * 1024)) as u64).contains(&n)), "{step_sizes:?}");
}

#[test]
fn a_report_over_the_bounds_is_refused_unread() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("iota");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = signer(&vault, "iota", &machine, &credentials);
    let log = AgentLog::new();
    client.report_log_head(&me, &log.store, log.grow(1, "i"), None, None).unwrap();
    let head = log.grow(MAX_PROOF_RECORDS + 1, "i");
    let hash = head.hash.to_hex();
    let report = |records: Vec<String>, nonce: &str| {
        post(
            &vault,
            &machine,
            "iota",
            &signed_report(&credentials, "iota", &machine, (head.position, &hash), records, nonce),
        )
    };

    // One record too many, even though they chain.
    let answer = report(log.lines(2, head.position), "nonce-many-012345678901");
    assert_eq!((answer.status, answer.error_code().as_str()), (400, "log_head_proof_too_large"), "{}", answer.body);
    // Over the bytes: refused before anything is walked.
    let big = vec!["x".repeat(64 * 1024); MAX_PROOF_BYTES / (64 * 1024) + 1];
    let answer = report(big, "nonce-bytes-01234567890");
    assert_eq!((answer.status, answer.error_code().as_str()), (400, "log_head_proof_too_large"), "{}", answer.body);
    // A body larger than a report can be: not even read.
    let huge = vec!["\"".repeat(64 * 1024); 2 * MAX_PROOF_BYTES / (64 * 1024) + 2];
    let answer = report(huge, "nonce-huge-012345678901");
    assert_eq!((answer.status, answer.error_code().as_str()), (413, "payload_too_large"), "{}", answer.status);
    // Other endpoints keep their small limit.
    let answer = raw(
        vault.addr(),
        "POST",
        "/v1/vaults/iota/pin-checks",
        &[("Content-Type", "application/json")],
        &vec![b' '; 128 * 1024],
    );
    assert_eq!(answer.status, 413);

    // The agent's own client never sends more: it reports 257 records in two steps.
    assert_eq!(client.report_log_head(&me, &log.store, head, None, None).unwrap().position, head.position);
    assert_eq!(client.fetch_log_head(&me).unwrap().unwrap().refusals, 0);
}

#[test]
fn anchors_and_refusals_survive_a_restart() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("epsilon");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = signer(&vault, "epsilon", &machine, &credentials);
    let log = AgentLog::new();
    let head7 = log.grow(7, "e");
    let anchored = client.report_log_head(&me, &log.store, head7, None, None).unwrap();
    let head6 = Head { position: 6, hash: hash(6) };
    assert_eq!(client.report_log_head(&me, &log.store, head6, None, None).unwrap_err().code(), "log_head_regressed");
    let token = vault.token();
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();

    let server = BackgroundServer::start(ServeConfig::new(dir.path(), loopback())).unwrap();
    let me = HeadSigner { endpoint: server.url().to_string(), ..me };
    let now = client.fetch_log_head(&me).unwrap().unwrap();
    assert_eq!((now.position, now.hash, now.anchored_at), (7, head7.hash.to_hex(), anchored.anchored_at));
    assert_eq!(now.refusals, 1);
    let other7 = Head { position: 7, hash: hash(8) };
    assert_eq!(client.report_log_head(&me, &log.store, other7, None, None).unwrap_err().code(), "log_head_conflict");
    let head8 = log.grow(1, "e");
    assert_eq!(client.report_log_head(&me, &log.store, head8, None, None).unwrap().position, 8);
    let admin = AdminClient::new(server.url(), SecretString::from(token), None).unwrap();
    let listed = admin.machines("epsilon").unwrap();
    assert_eq!(listed[0].log_head.as_ref().map(|h| (h.position, h.refusals)), Some((8, 2)));
    server.shutdown().unwrap();
}

#[test]
fn a_vault_that_is_down_is_unreachable() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("zeta");
    let machine = register(&credentials, "req-1");
    let mut me = signer(&vault, "zeta", &machine, &credentials);
    me.endpoint = format!("http://127.0.0.1:{}", free_port());
    let log = AgentLog::new();
    let error = quick_client(None).report_log_head(&me, &log.store, log.grow(1, "z"), None, None).unwrap_err();
    assert_eq!(error.code(), "vault_unreachable", "{error}");
    assert!(!error.is_tamper_evidence());
}

/// A vault that accepts connections and never answers: a report with a deadline gives up at it,
/// well before its client's own timeouts (5 s a request here).
#[test]
fn a_report_gives_up_at_its_deadline() {
    // Never accepted: the kernel completes the connection, nobody reads the request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let credentials = {
        let vault = Vault::start();
        vault.vault_with_credentials("kappa")
    };
    let me = HeadSigner {
        endpoint: format!("http://{addr}"),
        vault: "kappa".into(),
        machine_id: "m-1".into(),
        thumbprint: credentials.certificate.thumbprint.clone(),
        private_key: Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        proxy: None,
    };
    let log = AgentLog::new();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(500);
    let error =
        quick_client(None).report_log_head(&me, &log.store, log.grow(1, "k"), Some(deadline), None).unwrap_err();
    assert_eq!(error.code(), "vault_unreachable", "{error}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}: {error}", started.elapsed());
    drop(silent);
}
