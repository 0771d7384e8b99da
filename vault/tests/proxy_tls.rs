//! Through a real tinyproxy with BasicAuth, over plain HTTP and HTTPS (CONNECT), and HTTPS with a
//! CA of the test's own (rcgen) passed as `ca_file`.
//!
//! tinyproxy must be installed (`apt-get install -y tinyproxy`; CI does it in .ci/run). Without it
//! these tests fail and say so: they are never skipped.

mod common;

use std::path::PathBuf;

use common::*;
use regent_engine::Reason;
use regent_engine::model::PinAnswer;
use regent_engine::ports::{PinCheck, VaultClient};
use regent_vault::{AdminClient, AdminError, BackgroundServer, ServeConfig, VaultError};
use secrecy::SecretString;
use tempfile::TempDir;

const USER: &str = "agent";
const PASSWORD: &str = "s3cret-proxy-pass";

#[test]
fn plain_http_through_tinyproxy_needs_the_right_password() {
    let proxy = Tinyproxy::start(USER, PASSWORD);
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("proxied");
    let client = quick_client(None);

    let answer = client.register(&register_request(
        &credentials,
        None,
        "srv",
        "via-proxy",
        Some(proxy.config(Some((USER, PASSWORD)))),
    ));
    let machine = machine_id(&answer);
    let log = proxy.log_text();
    assert!(
        log.contains(&format!("POST {}/v1/vaults/proxied/registrations", vault.url())),
        "the proxy's log shows the registration went through it:\n{log}"
    );
    assert!(!log.contains(PASSWORD), "the proxy's log does not show the password");

    // The PIN check goes through the proxy too.
    let pin = vault.admin.issue_pin("proxied").unwrap().pin;
    let answer = client.check_pin(&PinCheck {
        endpoint: vault.url(),
        vault: "proxied".into(),
        machine_id: machine,
        thumbprint: credentials.certificate.thumbprint.clone(),
        private_key: zeroize::Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        pin: SecretString::from(pin),
        proxy: Some(proxy.config(Some((USER, PASSWORD)))),
        request_id: "pin-via-proxy".into(),
    });
    assert!(matches!(answer, PinAnswer::Valid { .. }), "{answer:?}");

    for (what, config) in [
        ("wrong password", proxy.config(Some((USER, "wrong")))),
        ("wrong user", proxy.config(Some(("someone", PASSWORD)))),
        ("no credentials", proxy.config(None)),
    ] {
        let (reason, detail) =
            refusal(&client.register(&register_request(&credentials, None, "srv", what, Some(config))));
        assert_eq!(reason, Reason::ProxyAuthFailed, "{what}: {detail}");
        assert!(!detail.contains(PASSWORD) && !detail.contains("wrong\""), "{what}: no password in {detail}");
    }
    assert_eq!(vault.admin.machines("proxied").unwrap().len(), 1);
}

#[test]
fn a_proxy_that_is_down_is_vault_unreachable() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("noproxy");
    let mut config = Tinyproxy::start(USER, PASSWORD).config(Some((USER, PASSWORD)));
    config.port = free_port();
    let (reason, detail) =
        refusal(&quick_client(None).register(&register_request(&credentials, None, "srv", "r", Some(config))));
    assert_eq!(reason, Reason::VaultUnreachable, "{detail}");
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM files.
struct TestPki {
    dir: TempDir,
}

impl TestPki {
    fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "regent test CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).unwrap();
        TestPki { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// A vault service over HTTPS.
fn tls_vault(pki: &TestPki) -> (BackgroundServer, TempDir, AdminClient) {
    let dir = tempfile::tempdir().unwrap();
    let server =
        BackgroundServer::start(ServeConfig::new(dir.path(), loopback()).with_tls(pki.cert(), pki.key())).unwrap();
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let admin = AdminClient::from_token_file(server.url(), server.admin_token_path(), Some(&pki.ca())).unwrap();
    (server, dir, admin)
}

#[test]
fn https_with_a_ca_file_directly_and_through_tinyproxy() {
    let pki = TestPki::new();
    let (server, _dir, admin) = tls_vault(&pki);
    admin.create_vault("secure").unwrap();
    let file = admin.download_credentials("secure", None).unwrap();
    let credentials = regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap();
    assert_eq!(credentials.endpoint, server.url(), "credentials name the HTTPS address");
    let client = quick_client(Some(&pki.ca()));

    machine_id(&client.register(&register_request(&credentials, None, "direct", "direct", None)));

    let proxy = Tinyproxy::start(USER, PASSWORD);
    machine_id(&client.register(&register_request(
        &credentials,
        None,
        "tunnel",
        "tunnel",
        Some(proxy.config(Some((USER, PASSWORD)))),
    )));
    let log = proxy.log_text();
    assert!(
        log.contains(&format!("CONNECT {}", server.local_addr())),
        "the proxy's log shows the tunnel to the vault:\n{log}"
    );

    for (what, config) in
        [("wrong password", proxy.config(Some((USER, "wrong")))), ("no credentials", proxy.config(None))]
    {
        let (reason, detail) =
            refusal(&client.register(&register_request(&credentials, None, "tunnel", what, Some(config))));
        assert_eq!(reason, Reason::ProxyAuthFailed, "{what}: {detail}");
    }
    assert_eq!(admin.machines("secure").unwrap().len(), 2);
}

#[test]
fn https_with_a_self_signed_certificate_as_the_ca_file_through_tinyproxy() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("self.pem"), dir.path().join("self.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = BackgroundServer::start(ServeConfig::new(data.path(), loopback()).with_tls(&cert, &key)).unwrap();
    let admin = AdminClient::from_token_file(server.url(), server.admin_token_path(), Some(&cert)).unwrap();
    admin.create_vault("selfsigned").unwrap();
    let file = admin.download_credentials("selfsigned", None).unwrap();
    let credentials = regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap();

    let proxy = Tinyproxy::start(USER, PASSWORD);
    let client = quick_client(Some(&cert));
    let via = Some(proxy.config(Some((USER, PASSWORD))));
    machine_id(&client.register(&register_request(&credentials, None, "m", "r", via)));
    assert!(proxy.log_text().contains(&format!("CONNECT {}", server.local_addr())));
}

#[test]
fn https_without_the_ca_is_refused_with_a_hint() {
    let pki = TestPki::new();
    let (_server, _dir, admin) = tls_vault(&pki);
    admin.create_vault("untrusted").unwrap();
    let file = admin.download_credentials("untrusted", None).unwrap();
    let credentials = regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap();

    let (reason, detail) = refusal(&quick_client(None).register(&register_request(&credentials, None, "m", "r", None)));
    assert_eq!(reason, Reason::VaultUnreachable, "{detail}");
    assert!(detail.contains("--ca-file"), "{detail}");

    let blind = AdminClient::from_token_file(_server.url(), _server.admin_token_path(), None).unwrap();
    assert!(matches!(blind.machines("untrusted"), Err(AdminError::Unreachable { .. })));

    let missing =
        AdminClient::from_token_file(_server.url(), _server.admin_token_path(), Some(&pki.dir.path().join("none.pem")));
    assert!(matches!(missing, Err(AdminError::Setup(_))));
}

#[test]
fn bad_tls_files_stop_the_start() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let swapped = ServeConfig::new(dir.path(), loopback()).with_tls(pki.key(), pki.cert());
    assert!(matches!(BackgroundServer::start(swapped), Err(VaultError::Tls { .. })));
    let missing = ServeConfig::new(dir.path(), loopback()).with_tls(pki.dir.path().join("nope.pem"), pki.key());
    let error = BackgroundServer::start(missing).unwrap_err();
    assert!(matches!(error, VaultError::Tls { .. }), "{error}");
}
