//! PIN checks end to end, in-process: signed by the machine with the key it registered with,
//! idempotent by request id, and counted per machine in the vault's log (a lock-out survives a
//! restart; nobody's guesses revoke a PIN).

mod common;

use common::*;
use regent_engine::Reason;
use regent_engine::model::PinAnswer;
use regent_engine::ports::VaultClient;
use regent_vault::protocol::{MAX_PIN_FAILURES, PIN_LOCKOUT_SECS};

const PATH: &str = "/v1/vaults/pins/pin-checks";

fn post_json(vault: &Vault, path: &str, body: &impl serde::Serialize) -> RawAnswer {
    raw(vault.addr(), "POST", path, &[("Content-Type", "application/json")], &serde_json::to_vec(body).unwrap())
}

/// A PIN other than `pin`.
fn not(pin: &str) -> &'static str {
    if pin == "00000000" { "11111111" } else { "00000000" }
}

/// A vault `pins` with two machines registered (`machine` with `credentials`, `other` with a later
/// download) and a PIN issued.
struct Pins {
    vault: Vault,
    credentials: regent_credentials::VaultCredentials,
    client: regent_vault::HttpVaultClient,
    machine: String,
    other_download: regent_credentials::VaultCredentials,
    other: String,
    pin: regent_vault::IssuedPin,
}

impl Pins {
    fn new() -> Pins {
        let vault = Vault::start();
        let credentials = vault.vault_with_credentials("pins");
        let client = quick_client(None);
        let machine = machine_id(&client.register(&register_request(&credentials, None, "srv", "reg", None)));
        let other_download = vault.download("pins", None);
        let other = machine_id(&client.register(&register_request(&other_download, None, "other", "reg-o", None)));
        let pin = vault.admin.issue_pin("pins").unwrap();
        Pins { vault, credentials, client, machine, other_download, other, pin }
    }
}

fn refused(answer: PinAnswer) -> (Reason, String) {
    match answer {
        PinAnswer::Refused { reason, detail } => (reason, detail),
        PinAnswer::Valid { issued_at } => panic!("expected a refusal, the PIN was valid (issued at {issued_at})"),
    }
}

both!(wrong_pins_lock_only_that_machine_for_a_while_revoke_nothing_and_survive_a_restart);
fn wrong_pins_lock_only_that_machine_for_a_while_revoke_nothing_and_survive_a_restart() {
    let vault = Vault::start();
    let first = vault.vault_with_credentials("pins");
    let client = quick_client(None);
    let a = machine_id(&client.register(&register_request(&first, None, "srv-a", "reg-a", None)));
    let second = vault.download("pins", None);
    let b = machine_id(&client.register(&register_request(&second, None, "srv-b", "reg-b", None)));
    let pin = vault.admin.issue_pin("pins").unwrap();
    let url = vault.url();
    let before = vault.log_position();

    for n in 1..MAX_PIN_FAILURES {
        let (reason, detail) = refused(client.check_pin(&pin_check(&url, &first, &a, not(&pin.pin), &format!("w{n}"))));
        assert_eq!(reason, Reason::SecurityPinInvalid, "{detail}");
        assert!(detail.contains("wrong"), "{detail}");
    }
    let (reason, detail) = refused(client.check_pin(&pin_check(&url, &first, &a, not(&pin.pin), "w-last")));
    assert_eq!(reason, Reason::SecurityPinInvalid, "{detail}");
    assert!(detail.contains("locked until"), "the lock-out says when it ends: {detail}");
    // Locked: even the right PIN is refused, and not used up.
    let (_, detail) = refused(client.check_pin(&pin_check(&url, &first, &a, &pin.pin, "right-while-locked")));
    assert!(detail.contains("locked until"), "{detail}");
    assert_eq!(
        vault.log_position(),
        before + u64::from(MAX_PIN_FAILURES),
        "each wrong PIN is one record, the locked check none"
    );

    // Across a restart the lock holds (it is a fold of the log), and the PIN is still good for
    // another machine: no guess revoked it.
    let (vault, kinds) = vault.kinds_after(before);
    assert_eq!(kinds, vec!["PinCheckFailed"; MAX_PIN_FAILURES as usize]);
    let url = vault.url();
    let raw_answer =
        post_json(&vault, PATH, &signed_pin_check(&first, &first, &a, &pin.pin, "raw-locked", "nonce-raw-locked-0001"));
    assert_eq!(
        (raw_answer.status, raw_answer.error_code().as_str()),
        (429, "pin_checks_locked"),
        "{}",
        raw_answer.body
    );
    assert_eq!(raw_answer.json()["reason"], "security_pin_invalid");
    let retry_after: i64 = raw_answer
        .head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().parse().unwrap()))
        .expect("a Retry-After header");
    assert!((1..=PIN_LOCKOUT_SECS).contains(&retry_after) && retry_after > PIN_LOCKOUT_SECS - 120, "{retry_after}");
    assert_eq!(
        client.check_pin(&pin_check(&url, &second, &b, &pin.pin, "b-1")),
        PinAnswer::Valid { issued_at: pin.issued_at }
    );
}

both!(only_the_machines_own_signature_counts_and_a_refused_check_writes_nothing);
fn only_the_machines_own_signature_counts_and_a_refused_check_writes_nothing() {
    let Pins { vault, credentials, client, machine, other_download, other, pin } = Pins::new();
    let before = vault.log_position();

    // Ten guesses each: signed with a key that is not the machine's, by another machine (with its
    // own thumbprint), and with no machine at all. None counts, none is recorded.
    for n in 0..10 {
        let wrong = not(&pin.pin);
        let forged = signed_pin_check(
            &credentials,
            &other_download,
            &machine,
            wrong,
            &format!("f{n}"),
            &format!("nonce-forged-{n:08}"),
        );
        let answer = post_json(&vault, PATH, &forged);
        assert_eq!((answer.status, answer.error_code().as_str()), (403, "credentials_invalid"), "{}", answer.body);
        assert_eq!(answer.json()["reason"], "credentials_invalid", "a wrong key is not a wrong PIN");
        let mut foreign = signed_pin_check(
            &other_download,
            &other_download,
            &other,
            wrong,
            &format!("o{n}"),
            &format!("nonce-other-{n:09}"),
        );
        foreign.machine_id = machine.clone();
        let answer = post_json(&vault, PATH, &foreign);
        assert_eq!((answer.status, answer.error_code().as_str()), (403, "credentials_invalid"), "{}", answer.body);
        let unknown = signed_pin_check(
            &credentials,
            &credentials,
            "no-such-machine",
            wrong,
            &format!("u{n}"),
            &format!("nonce-unknown-{n:07}"),
        );
        let answer = post_json(&vault, PATH, &unknown);
        assert_eq!((answer.status, answer.error_code().as_str()), (404, "machine_not_found"), "{}", answer.body);
        assert_eq!(answer.json()["reason"], "security_pin_invalid");
    }
    // The old, unsigned body is refused as malformed.
    let unsigned = serde_json::json!({ "machine_id": machine, "pin": pin.pin });
    let answer = post_json(&vault, PATH, &unsigned);
    assert_eq!((answer.status, answer.error_code().as_str()), (400, "bad_request"), "{}", answer.body);
    assert_eq!(vault.log_position(), before, "no refused check wrote to the log");
    assert_eq!(
        client.check_pin(&pin_check(&vault.url(), &credentials, &machine, &pin.pin, "good")),
        PinAnswer::Valid { issued_at: pin.issued_at }
    );
}

both!(a_retry_gets_the_first_answer_and_a_reused_request_id_is_refused);
fn a_retry_gets_the_first_answer_and_a_reused_request_id_is_refused() {
    let Pins { vault, credentials, client, machine, other_download, other, pin } = Pins::new();
    let url = vault.url();

    let valid = PinAnswer::Valid { issued_at: pin.issued_at };
    assert_eq!(client.check_pin(&pin_check(&url, &credentials, &machine, &pin.pin, "check-1")), valid);
    // Its own retry is not "already used"; a new check with the same PIN is.
    assert_eq!(client.check_pin(&pin_check(&url, &credentials, &machine, &pin.pin, "check-1")), valid);
    let (reason, detail) = refused(client.check_pin(&pin_check(&url, &credentials, &machine, &pin.pin, "check-2")));
    assert_eq!(reason, Reason::SecurityPinInvalid, "{detail}");
    // The same request id with another PIN, or from another machine: not a retry.
    let (reason, detail) =
        refused(client.check_pin(&pin_check(&url, &credentials, &machine, not(&pin.pin), "check-1")));
    assert_eq!(reason, Reason::RequestIdConflict, "{detail}");
    let (reason, detail) = refused(client.check_pin(&pin_check(&url, &other_download, &other, &pin.pin, "check-1")));
    assert_eq!(reason, Reason::RequestIdConflict, "{detail}");

    // A wrong PIN retried under its request id is one wrong PIN, however often it is retried.
    let before = vault.log_position();
    for _ in 0..(2 * MAX_PIN_FAILURES) {
        let (reason, detail) =
            refused(client.check_pin(&pin_check(&url, &credentials, &machine, not(&pin.pin), "wrong-1")));
        assert_eq!(reason, Reason::SecurityPinInvalid, "{detail}");
        assert!(!detail.contains("locked"), "{detail}");
    }
    assert_eq!(vault.log_position(), before + 1);

    // After a restart, the retry still gets the first answer (the check is in the log).
    let vault = vault.restart();
    assert_eq!(client.check_pin(&pin_check(&vault.url(), &credentials, &machine, &pin.pin, "check-1")), valid);
}

both!(a_replayed_check_is_refused_and_a_removed_machine_is_told_so);
fn a_replayed_check_is_refused_and_a_removed_machine_is_told_so() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("pins");
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&credentials, None, "srv", "reg", None)));
    let pin = vault.admin.issue_pin("pins").unwrap();

    let body =
        signed_pin_check(&credentials, &credentials, &machine, not(&pin.pin), "replayed", "nonce-replayed-000001");
    assert_eq!(post_json(&vault, PATH, &body).error_code(), "security_pin_invalid");
    let before = vault.log_position();
    let again = post_json(&vault, PATH, &body);
    assert_eq!((again.status, again.error_code().as_str()), (403, "nonce_replayed"), "{}", again.body);
    // Still refused after a restart: the nonce is in the recorded wrong PIN.
    let vault = vault.restart();
    let again = post_json(&vault, PATH, &body);
    assert_eq!((again.status, again.error_code().as_str()), (403, "nonce_replayed"), "{}", again.body);
    assert_eq!(vault.log_position(), before);

    // A tampered PIN breaks the signature: a captured signature does not carry another PIN.
    let mut tampered =
        signed_pin_check(&credentials, &credentials, &machine, not(&pin.pin), "tampered", "nonce-tampered-000001");
    tampered.pin = pin.pin.clone();
    assert_eq!(post_json(&vault, PATH, &tampered).error_code(), "credentials_invalid");

    vault.admin.remove_machine("pins", &machine).unwrap();
    let (reason, detail) =
        refused(client.check_pin(&pin_check(&vault.url(), &credentials, &machine, &pin.pin, "after")));
    assert_eq!(reason, Reason::MachineRemoved, "{detail}");
}
