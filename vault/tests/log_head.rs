//! The log-head endpoint end to end, in-process: a registered machine anchors the head of its log
//! with the key it registered with, reads it back, and the vault refuses everything else.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use common::*;
use regent_credentials::VaultCredentials;
use regent_store::{EventStore, StoreOptions};
use regent_vault::protocol::{LogHeadBody, log_head_message};
use regent_vault::{AdminClient, BackgroundServer, LogHeadError, MachineSigner, ServeConfig};
use secrecy::SecretString;
use zeroize::Zeroizing;

fn hash(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// The agent's log in these tests: the record at position p hashes to `hash(p)`.
fn honest(position: u64) -> Option<String> {
    Some(hash(position as u8))
}

/// Registers a machine with `credentials` and returns its id.
fn register(credentials: &VaultCredentials, request_id: &str) -> String {
    machine_id(&regent_engine::ports::VaultClient::register(
        &quick_client(None),
        &register_request(credentials, None, "srv", request_id, None),
    ))
}

/// Speaks for `machine_id` with the key of `credentials` (the registration's, or another to forge).
fn signer(vault: &Vault, name: &str, machine_id: &str, credentials: &VaultCredentials) -> MachineSigner {
    MachineSigner {
        endpoint: vault.url(),
        vault: name.to_string(),
        machine_id: machine_id.to_string(),
        thumbprint: credentials.certificate.thumbprint.clone(),
        private_key: Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        proxy: None,
    }
}

fn refused_code(result: Result<impl std::fmt::Debug, LogHeadError>) -> String {
    match result {
        Err(e) => e.code().to_string(),
        Ok(answer) => panic!("expected a refusal, got {answer:?}"),
    }
}

/// The kinds of the vault's own log, in order.
fn log_kinds(dir: &std::path::Path) -> Vec<String> {
    let store = EventStore::open(dir.join("log"), &StoreOptions::default()).unwrap();
    store.read_all(0).map(|r| r.unwrap().kind).collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| k.as_str() == kind).count()
}

#[test]
fn a_signed_head_is_anchored_read_back_and_listed() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("alpha");
    let machine = register(&credentials, "req-1");
    let other = register(&credentials, "req-2");
    let client = quick_client(None);
    let me = signer(&vault, "alpha", &machine, &credentials);

    assert_eq!(client.fetch_log_head(&me).unwrap(), None, "nothing anchored yet");
    let first = client.report_log_head(&me, 3, &hash(3), &honest).unwrap();
    assert_eq!(
        (first.machine_id.as_str(), first.position, first.hash.as_str()),
        (machine.as_str(), 3, hash(3).as_str())
    );
    assert!((Utc::now() - first.anchored_at).num_seconds().abs() < 60);
    assert_eq!(first.refusals, 0);
    assert_eq!(client.fetch_log_head(&me).unwrap(), Some(first.clone()));

    // The same head again (a retry, or `regent audit anchor` with nothing new): the first answer,
    // nothing written (counted in the log below).
    assert_eq!(client.report_log_head(&me, 3, &hash(3), &honest).unwrap(), first);

    let later = client.report_log_head(&me, 5, &hash(5), &honest).unwrap();
    assert_eq!((later.position, later.hash.as_str()), (5, hash(5).as_str()));
    // The other machine's head is its own.
    assert_eq!(client.fetch_log_head(&signer(&vault, "alpha", &other, &credentials)).unwrap(), None);

    let machines = vault.admin.machines("alpha").unwrap();
    let listed = machines.iter().find(|m| m.machine_id == machine).unwrap();
    assert_eq!(listed.log_head.as_ref().map(|h| h.position), Some(5));
    assert!(machines.iter().find(|m| m.machine_id == other).unwrap().log_head.is_none());

    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let kinds = log_kinds(dir.path());
    assert_eq!(count(&kinds, "LogHeadAnchored"), 2, "3, the same 3 again, then 5");
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

    // Signed with another key under the registration's thumbprint: the signature does not verify.
    let mut forged = signer(&vault, "beta", &machine, &credentials);
    forged.private_key = Zeroizing::new(newer.private_key.pkcs8_der().to_vec());
    assert_eq!(refused_code(client.report_log_head(&forged, 2, &hash(2), &honest)), "credentials_invalid");
    assert_eq!(refused_code(client.fetch_log_head(&forged)), "credentials_invalid");
    // A valid certificate of the same vault, but not the one the machine registered with.
    let other_cert = signer(&vault, "beta", &machine, &newer);
    assert_eq!(refused_code(client.report_log_head(&other_cert, 2, &hash(2), &honest)), "credentials_invalid");
    // Another vault's certificate.
    let other_vault = signer(&vault, "beta", &machine, &foreign);
    assert_eq!(refused_code(client.report_log_head(&other_vault, 2, &hash(2), &honest)), "credentials_wrong_vault");
    // A machine the vault does not know, and a vault that does not exist.
    let unknown = signer(&vault, "beta", "00000000-0000-0000-0000-000000000000", &credentials);
    assert_eq!(refused_code(client.report_log_head(&unknown, 2, &hash(2), &honest)), "machine_not_found");
    let nowhere = signer(&vault, "nowhere", &machine, &credentials);
    assert_eq!(refused_code(client.report_log_head(&nowhere, 2, &hash(2), &honest)), "vault_not_found");
    assert!(client.fetch_log_head(&signer(&vault, "beta", &machine, &credentials)).unwrap().is_none());

    // A replayed request: the first is anchored, the same bytes again are refused.
    let path = format!("/v1/vaults/beta/machines/{machine}/log-head");
    let body = signed_body(&credentials, "beta", &machine, 4, &hash(4), "nonce-replay-0123456789");
    let post = |body: &LogHeadBody| {
        raw(vault.addr(), "POST", &path, &[("Content-Type", "application/json")], &serde_json::to_vec(body).unwrap())
    };
    let first = post(&body);
    assert_eq!(first.status, 200, "{}", first.body);
    let again = post(&body);
    assert_eq!((again.status, again.error_code().as_str()), (403, "nonce_replayed"), "{}", again.body);
    // A changed field breaks the signature; malformed fields are a 400; a read needs its headers.
    let mut tampered = signed_body(&credentials, "beta", &machine, 9, &hash(9), "nonce-tamper-0123456789");
    tampered.position = 10;
    assert_eq!(post(&tampered).error_code(), "credentials_invalid");
    let mut zero = signed_body(&credentials, "beta", &machine, 0, &hash(0), "nonce-zero-0123456789ab");
    zero.position = 0;
    assert_eq!(post(&zero).status, 400);
    let upper = signed_body(&credentials, "beta", &machine, 11, &hash(0xab).to_uppercase(), "nonce-upper-0123456789");
    assert_eq!(post(&upper).status, 400);
    let stale = LogHeadBody {
        timestamp: Utc::now().timestamp() - 3600,
        ..signed_body(&credentials, "beta", &machine, 12, &hash(12), "nonce-stale-0123456789")
    };
    assert_eq!(post(&stale).error_code(), "clock_skew");
    let unsigned = raw(vault.addr(), "GET", &path, &[], b"");
    assert_eq!((unsigned.status, unsigned.error_code().as_str()), (400, "bad_request"), "{}", unsigned.body);

    let anchored = client.fetch_log_head(&signer(&vault, "beta", &machine, &credentials)).unwrap().unwrap();
    assert_eq!((anchored.position, anchored.refusals), (4, 0), "only the one good report counts");
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let kinds = log_kinds(dir.path());
    assert_eq!((count(&kinds, "LogHeadAnchored"), count(&kinds, "LogHeadRefused")), (1, 0));
}

fn signed_body(
    credentials: &VaultCredentials,
    vault: &str,
    machine_id: &str,
    position: u64,
    hash: &str,
    nonce: &str,
) -> LogHeadBody {
    let timestamp = Utc::now().timestamp();
    let thumbprint = credentials.certificate.thumbprint.clone();
    let message = log_head_message(vault, machine_id, &thumbprint, position, hash, None, timestamp, nonce);
    LogHeadBody {
        thumbprint,
        position,
        hash: hash.to_string(),
        extends: None,
        timestamp,
        nonce: nonce.to_string(),
        signature: STANDARD.encode(credentials.private_key.sign(&message).unwrap()),
    }
}

#[test]
fn a_head_that_goes_back_or_forks_is_refused_recorded_and_changes_nothing() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("delta");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = signer(&vault, "delta", &machine, &credentials);
    let anchored = client.report_log_head(&me, 5, &hash(5), &honest).unwrap();

    let regressed = client.report_log_head(&me, 4, &hash(4), &honest).unwrap_err();
    assert_eq!(regressed.code(), "log_head_regressed");
    assert!(regressed.is_tamper_evidence());
    assert!(regressed.to_string().contains("records 5-5 are missing"), "{regressed}");
    let conflict = client.report_log_head(&me, 5, &hash(0xee), &honest).unwrap_err();
    assert_eq!(conflict.code(), "log_head_conflict");
    assert!(conflict.is_tamper_evidence());

    let now = client.fetch_log_head(&me).unwrap().unwrap();
    assert_eq!((now.position, now.hash.as_str(), now.anchored_at), (5, hash(5).as_str(), anchored.anchored_at));
    assert_eq!(now.refusals, 2, "the refusals are kept as evidence");
    let last = now.last_refusal.unwrap();
    assert_eq!((last.error.as_str(), last.position, last.hash.as_str()), ("log_head_conflict", 5, hash(0xee).as_str()));

    // A log cut back and grown past the anchor again: its head is later, but it holds another
    // record at the anchored position. Refused, and recorded once (a retry adds nothing).
    let forked = |position: u64| Some(hash(0xf0 + position as u8));
    let grown = client.report_log_head(&me, 7, &hash(0xf7), &forked).unwrap_err();
    assert_eq!(grown.code(), "log_head_conflict", "{grown}");
    assert!(grown.to_string().contains("another record at position 5"), "{grown}");
    assert_eq!(client.report_log_head(&me, 7, &hash(0xf7), &forked).unwrap_err().code(), "log_head_conflict");
    assert_eq!(client.fetch_log_head(&me).unwrap().unwrap().refusals, 3);
    // Past the anchor without naming it: asked to name it, nothing recorded. The anchored head
    // itself again: the first answer.
    let path = format!("/v1/vaults/delta/machines/{machine}/log-head");
    let same = signed_body(&credentials, "delta", &machine, 5, &hash(5), "nonce-same-0123456789ab");
    let answer =
        raw(vault.addr(), "POST", &path, &[("Content-Type", "application/json")], &serde_json::to_vec(&same).unwrap());
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["anchored_at"], serde_json::to_value(anchored.anchored_at).unwrap());
    let bare = signed_body(&credentials, "delta", &machine, 8, &hash(8), "nonce-bare-0123456789ab");
    let answer =
        raw(vault.addr(), "POST", &path, &[("Content-Type", "application/json")], &serde_json::to_vec(&bare).unwrap());
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "log_head_base_required"), "{}", answer.body);

    // A head past the anchor that extends it is accepted: the refusals do not lock the machine out.
    assert_eq!(client.report_log_head(&me, 6, &hash(6), &honest).unwrap().position, 6);
    assert_eq!(client.fetch_log_head(&me).unwrap().unwrap().refusals, 3);
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let kinds = log_kinds(dir.path());
    assert_eq!((count(&kinds, "LogHeadAnchored"), count(&kinds, "LogHeadRefused")), (2, 3));
}

#[test]
fn anchors_and_refusals_survive_a_restart() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("epsilon");
    let machine = register(&credentials, "req-1");
    let client = quick_client(None);
    let me = signer(&vault, "epsilon", &machine, &credentials);
    let anchored = client.report_log_head(&me, 7, &hash(7), &honest).unwrap();
    assert_eq!(client.report_log_head(&me, 6, &hash(6), &honest).unwrap_err().code(), "log_head_regressed");
    let token = vault.token();
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();

    let server = BackgroundServer::start(ServeConfig::new(dir.path(), loopback())).unwrap();
    let me = MachineSigner { endpoint: server.url().to_string(), ..me };
    let now = client.fetch_log_head(&me).unwrap().unwrap();
    assert_eq!((now.position, now.hash.as_str(), now.anchored_at), (7, hash(7).as_str(), anchored.anchored_at));
    assert_eq!(now.refusals, 1);
    assert_eq!(client.report_log_head(&me, 7, &hash(8), &honest).unwrap_err().code(), "log_head_conflict");
    assert_eq!(client.report_log_head(&me, 8, &hash(8), &honest).unwrap().position, 8);
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
    let error = quick_client(None).report_log_head(&me, 1, &hash(1), &honest).unwrap_err();
    assert_eq!(error.code(), "vault_unreachable", "{error}");
    assert!(!error.is_tamper_evidence());
}
