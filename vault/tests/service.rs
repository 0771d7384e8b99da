//! The service in-process on 127.0.0.1 (port 0), the clients against it end to end.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use common::*;
use regent_engine::Reason;
use regent_engine::model::{PinAnswer, VaultAnswer};
use regent_engine::ports::{PinCheck, VaultClient};
use regent_store::{EventStore, StoreOptions};
use regent_vault::protocol::{HeadReport, RegisterBody, log_head_message};
use regent_vault::{AdminClient, AdminError, BackgroundServer, ServeConfig, VaultError};
use secrecy::SecretString;

both!(a_machine_registers_and_a_retry_gets_the_first_answer);
fn a_machine_registers_and_a_retry_gets_the_first_answer() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("alpha");
    assert_eq!(credentials.endpoint, vault.url(), "IdMgmtRestEndpoint names the service");
    let client = quick_client(None);

    let first = client.register(&register_request(&credentials, None, "srv-1", "req-1", None));
    let VaultAnswer::Registered { machine_id, vault: name, registered_at } = &first else {
        panic!("not registered: {first:?}")
    };
    assert_eq!(name, "alpha");
    assert!((Utc::now() - *registered_at).num_seconds().abs() < 60);

    // The same request id again: the same answer, and still one machine.
    let again = client.register(&register_request(&credentials, None, "srv-1", "req-1", None));
    assert_eq!(again, first);
    let machines = vault.admin.machines("alpha").unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(&machines[0].machine_id, machine_id);
    assert_eq!(machines[0].machine_name, "srv-1");
    assert_eq!(machines[0].thumbprint, credentials.certificate.thumbprint);

    // A new registration is a new machine.
    let other = machine_id_of(&client.register(&register_request(&credentials, None, "srv-2", "req-2", None)));
    assert_ne!(&other, machine_id);
    assert_eq!(vault.admin.machines("alpha").unwrap().len(), 2);

    let removed = vault.admin.remove_machine("alpha", &other).unwrap();
    assert_eq!(removed.machine_name, "srv-2");
    assert_eq!(vault.admin.machines("alpha").unwrap().len(), 1);
    assert!(matches!(vault.admin.remove_machine("alpha", &other), Err(AdminError::NotFound { .. })));
}

fn machine_id_of(answer: &VaultAnswer) -> String {
    machine_id(answer)
}

both!(concurrent_retries_of_one_request_make_one_machine);
fn concurrent_retries_of_one_request_make_one_machine() {
    let vault = Vault::start();
    let credentials = Arc::new(vault.vault_with_credentials("beta"));
    let client = Arc::new(quick_client(None));
    let ids = Arc::new(Mutex::new(HashSet::new()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (credentials, client, ids) = (credentials.clone(), client.clone(), ids.clone());
            std::thread::spawn(move || {
                let answer = client.register(&register_request(&credentials, None, "srv", "same-request", None));
                ids.lock().unwrap().insert(machine_id(&answer));
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(ids.lock().unwrap().len(), 1);
    assert_eq!(vault.admin.machines("beta").unwrap().len(), 1);
}

both!(the_service_refuses_stale_foreign_expired_and_forged_credentials);
fn the_service_refuses_stale_foreign_expired_and_forged_credentials() {
    let vault = Vault::start();
    let client = quick_client(None);
    let old = vault.vault_with_credentials("gamma");
    let newest = vault.download("gamma", None);
    let other_vault = vault.vault_with_credentials("delta");

    // An older download than the newest.
    let (reason, detail) = refusal(&client.register(&register_request(&old, None, "m", "r1", None)));
    assert_eq!(reason, Reason::CredentialsSuperseded, "{detail}");
    machine_id(&client.register(&register_request(&newest, None, "m", "r2", None)));

    // Another vault's certificate, presented to gamma.
    let mut foreign = register_request(&other_vault, None, "m", "r3", None);
    foreign.vault = identity(&newest);
    assert_eq!(refusal(&client.register(&foreign)).0, Reason::CredentialsWrongVault);

    // The right certificate under a vault of the same name but another resource id.
    let mut recreated = register_request(&newest, None, "m", "r4", None);
    recreated.vault.resource_id += 1;
    assert_eq!(refusal(&client.register(&recreated)).0, Reason::CredentialsWrongVault);

    // A certificate this service never issued, though it names the vault.
    let forged = regent_credentials::issue(&regent_credentials::IssueRequest {
        identity: newest.identity.clone(),
        aad_authority: String::new(),
        aad_tenant_id: String::new(),
        service_principal_client_id: String::new(),
        endpoint: vault.url(),
        agent_links: vec![],
        transparency_log_key: None,
        not_before: Utc::now() - chrono::Duration::minutes(10),
        not_after: Utc::now() + chrono::Duration::hours(1),
    })
    .unwrap();
    let forged = regent_credentials::parse(&forged.file_name, forged.xml.as_bytes()).unwrap();
    let (reason, detail) = refusal(&client.register(&register_request(&forged, None, "m", "r5", None)));
    assert_eq!(reason, Reason::CredentialsInvalid);
    assert!(detail.contains("never issued"), "{detail}");

    // The newest thumbprint, signed with another key: no proof of possession.
    let mut wrong_key = register_request(&newest, None, "m", "r6", None);
    wrong_key.private_key = zeroize::Zeroizing::new(other_vault.private_key.pkcs8_der().to_vec());
    let (reason, detail) = refusal(&client.register(&wrong_key));
    assert_eq!(reason, Reason::CredentialsInvalid);
    assert!(detail.contains("signature"), "{detail}");

    // A vault that does not exist.
    let mut unknown = register_request(&newest, None, "m", "r7", None);
    unknown.vault.name = "nowhere".into();
    assert_eq!(refusal(&client.register(&unknown)).0, Reason::CredentialsInvalid);

    assert_eq!(vault.admin.machines("gamma").unwrap().len(), 1, "only the good registration made a machine");
}

both!(credentials_expire_at_the_services_clock);
fn credentials_expire_at_the_services_clock() {
    let vault = Vault::start();
    vault.admin.create_vault("short").unwrap();
    let credentials = vault.download("short", Some(Duration::from_secs(1)));
    let now = Utc::now();
    let back = (now - credentials.certificate.not_before).num_seconds();
    assert!((595..=605).contains(&back), "NotBefore is 10 minutes back, got {back}s");
    // X.509 keeps whole seconds: wait past NotAfter.
    std::thread::sleep(Duration::from_millis(2100));
    let (reason, detail) = refusal(&quick_client(None).register(&register_request(&credentials, None, "m", "r", None)));
    assert_eq!(reason, Reason::CredentialsExpired, "{detail}");
}

both!(downloads_are_valid_48_hours_by_default_for_client_authentication);
fn downloads_are_valid_48_hours_by_default_for_client_authentication() {
    let vault = Vault::start();
    vault.admin.create_vault("epsilon").unwrap();
    let file = vault.admin.download_credentials("epsilon", None).unwrap();
    assert!(file.file_name.ends_with(".VaultCredentials"));
    assert!(!format!("{file:?}").contains(&file.xml), "Debug must not print the file");
    let parsed = regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap();
    let span = parsed.certificate.not_after - parsed.certificate.not_before;
    assert_eq!(span.num_seconds(), 48 * 3600 + 600);
    assert_eq!(parsed.certificate.thumbprint, file.thumbprint);
    assert_eq!(parsed.identity.resource_name, "epsilon");
    assert_eq!(vault.admin.vault("epsilon").unwrap().newest_thumbprint.as_deref(), Some(file.thumbprint.as_str()));
    let (_, x509) = x509_parser::parse_x509_certificate(&parsed.certificate_der).unwrap();
    let eku = x509.extended_key_usage().unwrap().expect("an EKU extension");
    assert!(eku.value.client_auth);
    assert_eq!(x509.subject(), x509.issuer(), "self-signed");
}

/// Signs a registration body by hand, for what the real client never sends.
fn signed_body(
    credentials: &regent_credentials::VaultCredentials,
    timestamp: i64,
    nonce: &str,
    request_id: &str,
) -> RegisterBody {
    signed_registration(credentials, "hand-made", timestamp, nonce, request_id)
}

fn post_json(vault: &Vault, path: &str, body: &impl serde::Serialize) -> RawAnswer {
    raw(vault.addr(), "POST", path, &[("Content-Type", "application/json")], &serde_json::to_vec(body).unwrap())
}

both!(replayed_nonces_skewed_clocks_and_truncated_signatures_are_refused);
fn replayed_nonces_skewed_clocks_and_truncated_signatures_are_refused() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("zeta");
    let path = "/v1/vaults/zeta/registrations";
    let now = Utc::now().timestamp();

    let body = signed_body(&credentials, now, "nonce-0123456789abcdef", "hand-1");
    let first = post_json(&vault, path, &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let replay = post_json(&vault, path, &body);
    assert_eq!((replay.status, replay.error_code().as_str()), (403, "nonce_replayed"), "{}", replay.body);

    let late = signed_body(&credentials, now - 600, "nonce-late-0123456789", "hand-2");
    let answer = post_json(&vault, path, &late);
    assert_eq!((answer.status, answer.error_code().as_str()), (403, "clock_skew"), "{}", answer.body);
    let early = signed_body(&credentials, now + 600, "nonce-early-0123456789", "hand-3");
    assert_eq!(post_json(&vault, path, &early).error_code(), "clock_skew");

    let mut truncated = signed_body(&credentials, now, "nonce-trunc-0123456789", "hand-4");
    let signature = STANDARD.decode(&truncated.signature).unwrap();
    truncated.signature = STANDARD.encode(&signature[..signature.len() / 2]);
    let answer = post_json(&vault, path, &truncated);
    assert_eq!((answer.status, answer.error_code().as_str()), (403, "credentials_invalid"), "{}", answer.body);
    assert_eq!(answer.json()["reason"], "credentials_invalid");

    // Changing a signed field breaks the signature.
    let mut renamed = signed_body(&credentials, now, "nonce-renamed-012345678", "hand-5");
    renamed.machine_name = "someone-else".into();
    assert_eq!(post_json(&vault, path, &renamed).error_code(), "credentials_invalid");

    assert_eq!(vault.admin.machines("zeta").unwrap().len(), 1);
}

fn log_length(dir: &std::path::Path) -> u64 {
    let store = EventStore::open(dir.join("log"), &StoreOptions::default()).unwrap();
    store.len()
}

#[test]
fn bad_input_is_a_clear_4xx_and_stores_nothing() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("eta");
    let token = vault.token();
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    let before = log_length(dir.path());
    let server = BackgroundServer::start(ServeConfig::new(dir.path(), loopback())).unwrap();
    let addr = server.local_addr();
    let bearer = format!("Bearer {token}");
    let json = ("Content-Type", "application/json");
    let auth = ("Authorization", bearer.as_str());
    let registration = "/v1/vaults/eta/registrations";
    let good =
        serde_json::to_vec(&signed_body(&credentials, Utc::now().timestamp(), "nonce-bad-input-000001", "x")).unwrap();

    let cases: Vec<(&str, RawAnswer, u16, &str)> = vec![
        ("malformed JSON", raw(addr, "POST", registration, &[json], b"{\"request_id\": "), 400, "bad_request"),
        ("wrong shape", raw(addr, "POST", registration, &[json], b"{\"request_id\": 5}"), 400, "bad_request"),
        ("unknown field", raw(addr, "POST", "/v1/vaults", &[json, auth], b"{\"name\":\"x\",\"extra\":1}"), 400, "bad_request"),
        (
            "oversized body",
            raw(addr, "POST", registration, &[json], &vec![b' '; regent_vault::protocol::MAX_BODY_BYTES + 10]),
            413,
            "payload_too_large",
        ),
        ("wrong content type", raw(addr, "POST", registration, &[("Content-Type", "text/plain")], &good), 415, "unsupported_media_type"),
        ("no content type", raw(addr, "POST", "/v1/vaults", &[auth], b"{\"name\":\"new\"}"), 415, "unsupported_media_type"),
        ("missing token", raw(addr, "POST", "/v1/vaults", &[json], b"{\"name\":\"new\"}"), 401, "unauthorized"),
        (
            "wrong token",
            raw(addr, "POST", "/v1/vaults", &[json, ("Authorization", "Bearer not-the-token")], b"{\"name\":\"new\"}"),
            401,
            "unauthorized",
        ),
        ("wrong token, download", raw(addr, "POST", "/v1/vaults/eta/credentials", &[json, ("Authorization", "Basic eA==")], b"{}"), 401, "unauthorized"),
        ("missing token, pin", raw(addr, "POST", "/v1/vaults/eta/pins", &[], b""), 401, "unauthorized"),
        ("missing token, removal", raw(addr, "DELETE", "/v1/vaults/eta/machines/x", &[], b""), 401, "unauthorized"),
        ("unknown vault, admin", raw(addr, "POST", "/v1/vaults/nowhere/pins", &[auth], b""), 404, "vault_not_found"),
        ("unknown vault, agent", raw(addr, "POST", "/v1/vaults/nowhere/registrations", &[json], &good), 404, "vault_not_found"),
        ("invalid vault name", raw(addr, "POST", "/v1/vaults", &[json, auth], b"{\"name\":\"../etc\"}"), 400, "invalid_vault_name"),
        ("bad validity", raw(addr, "POST", "/v1/vaults/eta/credentials", &[json, auth], b"{\"validity_seconds\":0}"), 400, "bad_request"),
        ("unknown path", raw(addr, "GET", "/v2/anything", &[], b""), 404, "not_found"),
        ("wrong method", raw(addr, "GET", registration, &[], b""), 405, "method_not_allowed"),
        ("not base64", raw(addr, "POST", registration, &[json], br#"{"request_id":"x","machine_name":"m","resource_id":1,"thumbprint":"0000000000000000000000000000000000000000000000000000000000000000","timestamp":0,"nonce":"nonce-0123456789abcdef","signature":"***"}"#), 400, "bad_request"),
    ];
    for (what, answer, status, code) in &cases {
        assert_eq!(answer.status, *status, "{what}: {}", answer.body);
        assert!(answer.is_from_service(), "{what}: the answer carries the service header");
        assert_eq!(&answer.error_code(), code, "{what}: {}", answer.body);
        assert!(!answer.json()["message"].as_str().unwrap_or_default().is_empty(), "{what}: a message");
    }
    let unauthorized = &cases.iter().find(|c| c.0 == "missing token").unwrap().1;
    assert!(unauthorized.head.to_ascii_lowercase().contains("www-authenticate: bearer"));

    // A truncated signature over the wire: refused, nothing stored either.
    let mut truncated: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let signature = truncated["signature"].as_str().unwrap().to_string();
    truncated["signature"] = signature[..signature.len() / 2].trim_end_matches('=').into();
    let answer = raw(addr, "POST", registration, &[json], &serde_json::to_vec(&truncated).unwrap());
    assert!((400..500).contains(&answer.status), "{}", answer.body);

    server.shutdown().unwrap();
    assert_eq!(log_length(dir.path()), before, "no refused request wrote to the log");
}

both!(a_security_pin_is_eight_digits_and_good_once);
fn a_security_pin_is_eight_digits_and_good_once() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("theta");
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&credentials, None, "srv", "r", None)));
    let check = |pin: &str, machine: &str| {
        client.check_pin(&PinCheck {
            endpoint: vault.url(),
            vault: "theta".into(),
            machine_id: machine.into(),
            thumbprint: credentials.certificate.thumbprint.clone(),
            private_key: zeroize::Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
            pin: SecretString::from(pin.to_string()),
            proxy: None,
            request_id: uuid::Uuid::now_v7().to_string(),
        })
    };

    let issued = vault.admin.issue_pin("theta").unwrap();
    assert_eq!(issued.pin.len(), 8);
    assert!(issued.pin.chars().all(|c| c.is_ascii_digit()));
    assert_eq!((issued.expires_at - issued.issued_at).num_seconds(), 300);
    assert!(!format!("{issued:?}").contains(&issued.pin));

    // Not a machine of this vault: refused, and the PIN stays good.
    assert!(matches!(check(&issued.pin, "someone"), PinAnswer::Refused { reason: Reason::SecurityPinInvalid, .. }));
    assert_eq!(check(&issued.pin, &machine), PinAnswer::Valid { issued_at: issued.issued_at });
    // Used once.
    assert!(matches!(check(&issued.pin, &machine), PinAnswer::Refused { reason: Reason::SecurityPinInvalid, .. }));
    assert!(matches!(check("12ab", &machine), PinAnswer::Refused { reason: Reason::SecurityPinInvalid, .. }));

    // A wrong PIN is refused; it revokes nothing: the next PIN issued is still good.
    let second = vault.admin.issue_pin("theta").unwrap();
    let wrong = if second.pin == "00000000" { "00000001" } else { "00000000" };
    let PinAnswer::Refused { reason, detail } = check(wrong, &machine) else { panic!("a wrong PIN was accepted") };
    assert_eq!(reason, Reason::SecurityPinInvalid);
    assert!(!detail.contains(&second.pin), "a refusal never repeats the PIN");
    assert_eq!(check(&second.pin, &machine), PinAnswer::Valid { issued_at: second.issued_at });
}
both!(the_admin_api_needs_the_token_and_names_its_errors);
fn the_admin_api_needs_the_token_and_names_its_errors() {
    let vault = Vault::start();
    let token_path = vault.server.admin_token_path().to_path_buf();
    assert_eq!(std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(vault.server.info().admin_token_created);

    let wrong = AdminClient::new(&vault.url(), SecretString::from("wrong".to_string()), None).unwrap();
    assert!(matches!(wrong.create_vault("nope"), Err(AdminError::Unauthorized)));
    assert!(matches!(wrong.machines("nope"), Err(AdminError::Unauthorized)));
    wrong.health().unwrap();

    vault.admin.create_vault("iota").unwrap();
    let duplicate = vault.admin.create_vault("iota").unwrap_err();
    assert!(matches!(duplicate, AdminError::Conflict { .. }), "{duplicate}");
    assert!(matches!(vault.admin.create_vault("no spaces"), Err(AdminError::Refused { status: 400, .. })));
    for error in [
        vault.admin.download_credentials("nope", None).map(|_| ()).unwrap_err(),
        vault.admin.issue_pin("nope").map(|_| ()).unwrap_err(),
        vault.admin.machines("nope").map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(error, AdminError::NotFound { .. }), "{error}");
        assert!(!error.to_string().contains('\n'));
    }
    assert!(matches!(vault.admin.download_credentials("iota", Some(Duration::ZERO)), Err(AdminError::InvalidInput(_))));

    let nobody = AdminClient::new("http://127.0.0.1:1", SecretString::from("x".to_string()), None).unwrap();
    assert!(matches!(nobody.health(), Err(AdminError::Unreachable { .. })));
    assert!(matches!(
        AdminClient::new("ftp://example", SecretString::from("x".to_string()), None),
        Err(AdminError::BadUrl { .. })
    ));
}

#[test]
fn state_survives_a_restart_and_the_token_is_kept() {
    let vault = Vault::start();
    let old = vault.vault_with_credentials("kappa");
    let newest = vault.download("kappa", None);
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&newest, None, "srv", "r1", None)));
    let token = vault.token();
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();

    let server = BackgroundServer::start(ServeConfig::new(dir.path(), loopback())).unwrap();
    assert!(!server.info().admin_token_created);
    let admin = AdminClient::new(server.url(), SecretString::from(token), None).unwrap();
    let machines = admin.machines("kappa").unwrap();
    assert_eq!(machines.iter().map(|m| m.machine_id.as_str()).collect::<Vec<_>>(), vec![machine.as_str()]);
    // The new port: the credentials' endpoint is stale, so register at the new address.
    let url = server.url().to_string();
    let answer = client.register(&register_request(&newest, Some(&url), "srv", "r1", None));
    assert_eq!(machine_id(&answer), machine, "a retry after a restart gets the first answer");
    assert_eq!(
        refusal(&client.register(&register_request(&old, Some(&url), "srv", "r2", None))).0,
        Reason::CredentialsSuperseded
    );
    assert_eq!(admin.machines("kappa").unwrap().len(), 1);
    server.shutdown().unwrap();
}

#[test]
fn a_second_service_on_the_same_directory_is_refused() {
    let vault = Vault::start();
    let started = std::time::Instant::now();
    let error = BackgroundServer::start(ServeConfig::new(vault.dir.path(), loopback())).unwrap_err();
    assert!(matches!(error, VaultError::Store(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

both!(secrets_never_reach_the_log);
/// The whole flow (a vault, a download, a registration, a PIN checked wrong and right, a head
/// reported), then everything the storage holds is searched for each secret in every form it could
/// take there: the admin token, both PINs (and a plain SHA-256 of each, which 10^8 guesses undo),
/// the credentials' private key and PKCS#12, and every signature sent.
fn secrets_never_reach_the_log() {
    use sha2::Digest as _;
    let vault = Vault::start();
    let token = vault.token();
    vault.admin.create_vault("lambda").unwrap();
    let file = vault.admin.download_credentials("lambda", None).unwrap();
    let credentials = regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap();
    let mut signatures = Vec::new();

    // Every request signed here, not by the client: its signatures are known.
    let registration = signed_body(&credentials, Utc::now().timestamp(), "nonce-secrets-register-01", "secrets-1");
    signatures.push(registration.signature.clone());
    let registered = post_json(&vault, "/v1/vaults/lambda/registrations", &registration);
    assert_eq!(registered.status, 200, "{}", registered.body);
    let machine = registered.json()["machine_id"].as_str().unwrap().to_string();

    let pin = vault.admin.issue_pin("lambda").unwrap().pin;
    // Another 8 digits: each digit moved on by one.
    let wrong: String = pin.chars().map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10)).collect();
    let checks = "/v1/vaults/lambda/pin-checks";
    let check = signed_pin_check(&credentials, &credentials, &machine, &wrong, "check-wrong", "nonce-secrets-check-01");
    signatures.push(check.signature.clone());
    assert_eq!(post_json(&vault, checks, &check).error_code(), "security_pin_invalid");
    let check = signed_pin_check(&credentials, &credentials, &machine, &pin, "check-right", "nonce-secrets-check-02");
    signatures.push(check.signature.clone());
    let valid = post_json(&vault, checks, &check);
    assert_eq!(valid.status, 200, "{}", valid.body);

    // A head of 7 records, kept at the vault with them.
    let thumbprint = credentials.certificate.thumbprint.clone();
    let log = AgentLog::new();
    let head = log.grow(7, "secrets");
    let (timestamp, nonce, hash) = (Utc::now().timestamp(), "nonce-secrets-head-01", head.hash.to_hex());
    let records = log.lines(1, 7);
    let message = log_head_message("lambda", &machine, &thumbprint, 7, &hash, &records, timestamp, nonce);
    let report = HeadReport {
        thumbprint: thumbprint.clone(),
        position: 7,
        hash: hash.clone(),
        records,
        timestamp,
        nonce: nonce.into(),
        signature: STANDARD.encode(credentials.private_key.sign(&message).unwrap()),
        tree_size: None,
    };
    signatures.push(report.signature.clone());
    let anchored = post_json(&vault, &format!("/v1/vaults/lambda/machines/{machine}/log-head"), &report);
    assert_eq!(anchored.status, 200, "{}", anchored.body);

    let (vault, stored, tables) = vault.stored();
    let text = String::from_utf8_lossy(&stored).into_owned();
    // What the storage must hold, so that the search below searches the right thing.
    for kind in ["CredentialsIssued", "MachineRegistered", "PinIssued", "PinCheckFailed", "PinUsed", "LogHeadAnchored"]
    {
        assert!(text.contains(kind), "{kind} is stored");
    }
    assert!(text.contains(&machine) && text.contains(&thumbprint) && text.contains(&hash));
    if vault.database.is_some() {
        for table in ["log", "service", "vaults", "certificates", "machines", "registrations", "pin_checks", "nonces"] {
            assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
        }
        // A BYTEA is searched as hex: the token's SHA-256 (which the database keeps) is found so.
        let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        assert!(text.contains(&format!("\\\\x{digest}")), "the service row holds the token's SHA-256");
    }

    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    // A secret as bytes, and as text in the encodings a column or a record could hold it in.
    fn add(secrets: &mut Vec<(String, Vec<u8>)>, name: &str, secret: &[u8]) {
        secrets.push((name.to_string(), secret.to_vec()));
        secrets.push((format!("{name} in hex"), hex::encode(secret).into_bytes()));
        secrets.push((format!("{name} in base64"), STANDARD.encode(secret).into_bytes()));
        secrets.push((format!("{name} in base64url"), URL_SAFE_NO_PAD.encode(secret).into_bytes()));
    }
    add(&mut secrets, "the admin token", token.as_bytes());
    add(&mut secrets, "the admin token's bytes", &URL_SAFE_NO_PAD.decode(&token).unwrap());
    for (name, pin) in [("the PIN", &pin), ("the wrong PIN", &wrong)] {
        add(&mut secrets, &format!("{name}'s SHA-256"), &sha2::Sha256::digest(pin.as_bytes()));
        // Not the digits alone: 8 of them in a row occur by chance (the digits themselves below).
        secrets.push((format!("{name} in hex"), hex::encode(pin).into_bytes()));
        secrets.push((format!("{name} in base64"), STANDARD.encode(pin).into_bytes()));
    }
    let der = credentials.private_key.pkcs8_der().to_vec();
    add(&mut secrets, "the private key (PKCS#8)", &der);
    let pem = STANDARD.encode(&der);
    for (n, line) in pem.as_bytes().chunks(64).enumerate().filter(|(_, line)| line.len() >= 16) {
        secrets.push((format!("PEM line {}", n + 1), line.to_vec()));
    }
    // ECPrivateKey (RFC 5915) in the PKCS#8: version 1 (02 01 01), then the scalar (04 20 ...).
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("a P-256 key's scalar");
    add(&mut secrets, "the private scalar", &der[at + 5..at + 37]);
    let start = file.xml.find("<ManagementCert>").unwrap() + "<ManagementCert>".len();
    let bundle: String =
        file.xml[start..].split("</ManagementCert>").next().unwrap().chars().filter(|c| !c.is_whitespace()).collect();
    assert!(bundle.len() > 256, "the PKCS#12 is in the file");
    let middle = bundle.len() / 2;
    secrets.push(("the PKCS#12 text".into(), bundle.as_bytes()[middle..middle + 64].to_vec()));
    let bundle = STANDARD.decode(&bundle).unwrap();
    let middle = bundle.len() / 2;
    add(&mut secrets, "the PKCS#12 bytes", &bundle[middle..middle + 32]);
    for (n, signature) in signatures.iter().enumerate() {
        secrets.push((format!("signature {n}"), signature.as_bytes().to_vec()));
        add(&mut secrets, &format!("signature {n}'s bytes"), &STANDARD.decode(signature).unwrap());
    }
    for (name, form) in &secrets {
        assert!(!stored.windows(form.len()).any(|w| w == form.as_slice()), "{name} is stored");
    }
    // The PINs as digits: only a run of exactly these 8 digits counts, not 8 inside a longer run.
    let runs: Vec<&str> = text.split(|c: char| !c.is_ascii_digit()).filter(|run| !run.is_empty()).collect();
    assert!(runs.len() > 10, "the stored text has numbers to search");
    for pin in [&pin, &wrong] {
        assert!(!runs.contains(&pin.as_str()), "a PIN is stored as its digits");
    }
    drop(vault);
}

#[test]
fn connection_failures_are_vault_unreachable() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("mu");
    let client = quick_client(None);

    let closed = format!("http://127.0.0.1:{}", free_port());
    let (reason, detail) = refusal(&client.register(&register_request(&credentials, Some(&closed), "m", "r", None)));
    assert_eq!(reason, Reason::VaultUnreachable, "{detail}");
    assert!(detail.contains("after 3 attempts"), "connect failures are retried: {detail}");

    let (reason, detail) =
        refusal(&client.register(&register_request(&credentials, Some("http://vault.invalid:1"), "m", "r", None)));
    assert_eq!(reason, Reason::VaultUnreachable, "{detail}");

    let (reason, _) = refusal(&client.register(&register_request(&credentials, Some("not a url"), "m", "r", None)));
    assert_eq!(reason, Reason::VaultUnreachable);

    // Accepts, never answers: the per-call timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let slow = regent_vault::HttpVaultClient::new(regent_vault::ClientOptions {
        request_timeout: Duration::from_millis(500),
        ..regent_vault::ClientOptions::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let (reason, detail) = refusal(&slow.register(&register_request(&credentials, Some(&silent_url), "m", "r", None)));
    assert_eq!(reason, Reason::VaultUnreachable, "{detail}");
    assert!(started.elapsed() < Duration::from_secs(5), "a timeout is not retried");
}

/// A fake service answering 503 (with the service header) and recording what it was sent.
fn failing_service(status: &'static str) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = vec![0u8; 65536];
            let mut filled = 0;
            // Read until the body is complete (Content-Length).
            while let Ok(n) = stream.read(&mut buffer[filled..]) {
                if n == 0 {
                    break;
                }
                filled += n;
                let text = String::from_utf8_lossy(&buffer[..filled]).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        if let Ok(value) = serde_json::from_str(body) {
                            record.lock().unwrap().push(value);
                        }
                        break;
                    }
                }
            }
            let body = r#"{"error":"store_unavailable","reason":"vault_error","message":"down for a moment"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nx-regent-vault: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn a_5xx_is_retried_with_the_same_request_id_and_becomes_vault_error() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("nu");
    let (url, seen) = failing_service("503 Service Unavailable");
    let (reason, detail) =
        refusal(&quick_client(None).register(&register_request(&credentials, Some(&url), "m", "the-request", None)));
    assert_eq!(reason, Reason::VaultError, "{detail}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "three attempts");
    assert!(seen.iter().all(|body| body["request_id"] == "the-request"));
    let nonces: HashSet<_> = seen.iter().map(|body| body["nonce"].to_string()).collect();
    assert_eq!(nonces.len(), 3, "each attempt is signed afresh");
}

both!(a_4xx_refusal_is_not_retried);
fn a_4xx_refusal_is_not_retried() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("xi");
    let (url, seen) = failing_service("403 Forbidden");
    let (reason, _) =
        refusal(&quick_client(None).register(&register_request(&credentials, Some(&url), "m", "r", None)));
    assert_eq!(reason, Reason::VaultError);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

both!(a_request_id_is_bound_to_its_certificate_and_machine_name_across_restarts);
fn a_request_id_is_bound_to_its_certificate_and_machine_name_across_restarts() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("bound");
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&credentials, None, "srv-1", "golden", None)));

    // A data dir cloned into a second server: the same request id, another machine name.
    let (reason, detail) = refusal(&client.register(&register_request(&credentials, None, "srv-2", "golden", None)));
    assert_eq!(reason, Reason::RequestIdConflict, "{detail}");
    // The same request id with a later download (the newest now): still not the first registration.
    let newer = vault.download("bound", None);
    let (reason, detail) = refusal(&client.register(&register_request(&newer, None, "srv-1", "golden", None)));
    assert_eq!(reason, Reason::RequestIdConflict, "{detail}");

    let vault = vault.restart();
    let url = vault.url();
    let (reason, _) = refusal(&client.register(&register_request(&credentials, Some(&url), "srv-2", "golden", None)));
    assert_eq!(reason, Reason::RequestIdConflict);
    // The first registration's own retry still gets its answer.
    let again = client.register(&register_request(&credentials, Some(&url), "srv-1", "golden", None));
    assert_eq!(machine_id(&again), machine);
    assert_eq!(vault.admin.machines("bound").unwrap().len(), 1, "no second machine");

    // Raw, the refusal is a 409 with its reason.
    let mut body = signed_body(&newer, Utc::now().timestamp(), "nonce-bound-raw-000001", "golden");
    body.machine_name = "hand-made".into();
    let answer = post_json(&vault, "/v1/vaults/bound/registrations", &body);
    assert_eq!((answer.status, answer.error_code().as_str()), (409, "request_id_conflict"), "{}", answer.body);
    assert_eq!(answer.json()["reason"], "request_id_conflict");
}

both!(a_removed_machines_request_id_is_never_answered_or_registered_again);
fn a_removed_machines_request_id_is_never_answered_or_registered_again() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("removal");
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&credentials, None, "srv", "req-1", None)));
    vault.admin.remove_machine("removal", &machine).unwrap();

    let (reason, detail) = refusal(&client.register(&register_request(&credentials, None, "srv", "req-1", None)));
    assert_eq!(reason, Reason::MachineRemoved, "{detail}");
    let vault = vault.restart();
    let url = vault.url();
    let (reason, _) = refusal(&client.register(&register_request(&credentials, Some(&url), "srv", "req-1", None)));
    assert_eq!(reason, Reason::MachineRemoved, "still refused after a restart");
    let answer = post_json(
        &vault,
        "/v1/vaults/removal/registrations",
        &signed_body(&credentials, Utc::now().timestamp(), "nonce-removed-raw-0001", "req-1"),
    );
    // The hand-made body names another machine: a conflict comes before the removal.
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(vault.admin.machines("removal").unwrap().is_empty(), "never registered again");
    // A new request id is a new machine.
    let fresh = machine_id(&client.register(&register_request(&credentials, Some(&url), "srv", "req-2", None)));
    assert_ne!(fresh, machine);
}

both!(machine_names_that_would_spoof_a_listing_are_refused);
fn machine_names_that_would_spoof_a_listing_are_refused() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("names");
    let client = quick_client(None);
    for (n, name) in ["srv\u{202e}1-bd", "srv\u{200b}-1", "\u{feff}srv", "srv\u{2066}x"].into_iter().enumerate() {
        let (reason, detail) =
            refusal(&client.register(&register_request(&credentials, None, name, &format!("r-{n}"), None)));
        assert_eq!(reason, Reason::VaultError, "{name:?}: {detail}");
        assert!(detail.contains("machine_name"), "{name:?}: {detail}");
    }
    // Other scripts are names like any other.
    machine_id(&client.register(&register_request(&credentials, None, "сервер-1 ß", "r-ok", None)));
    assert_eq!(vault.admin.machines("names").unwrap().len(), 1);
}
