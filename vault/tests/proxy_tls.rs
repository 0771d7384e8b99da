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
    assert_eq!(reason, Reason::VaultTlsFailed, "{detail}");
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

/// Credentials naming a vault this test's clients never reach (the TLS handshake fails first).
fn unreachable_credentials(endpoint: &str) -> regent_credentials::VaultCredentials {
    let issued = regent_credentials::issue(&regent_credentials::IssueRequest {
        identity: regent_credentials::VaultIdentity {
            resource_name: "tls".into(),
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg".into(),
            location: "local".into(),
            resource_id: 7,
            resource_type: "Vaults".into(),
            provider_namespace: "Microsoft.RecoveryServices".into(),
        },
        aad_authority: String::new(),
        aad_tenant_id: String::new(),
        service_principal_client_id: String::new(),
        endpoint: endpoint.into(),
        agent_links: vec![],
        transparency_log_key: None,
        not_before: chrono::Utc::now() - chrono::Duration::minutes(10),
        not_after: chrono::Utc::now() + chrono::Duration::hours(1),
    })
    .unwrap();
    regent_credentials::parse(&issued.file_name, issued.xml.as_bytes()).unwrap()
}

/// A CA of the test's own and server certificates gone wrong in each way a user meets.
struct BadPki {
    dir: TempDir,
}

impl BadPki {
    fn new() -> BadPki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "regent test CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let leaf = |name: &str, names: &[&str], edit: &dyn Fn(&mut rcgen::CertificateParams)| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params =
                rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
            edit(&mut params);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf("good", &["127.0.0.1"], &|_| {});
        leaf("expired", &["127.0.0.1"], &|p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        leaf("future", &["127.0.0.1"], &|p| {
            p.not_before = rcgen::date_time_ymd(2090, 1, 1);
            p.not_after = rcgen::date_time_ymd(2091, 1, 1);
        });
        leaf("other-host", &["vault.example.org"], &|_| {});
        BadPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A vault serving `name`.pem / `name`.key (the CA's own for "ca").
    fn serve(&self, name: &str) -> (BackgroundServer, TempDir) {
        let data = tempfile::tempdir().unwrap();
        let config = ServeConfig::new(data.path(), loopback())
            .with_tls(self.path(&format!("{name}.pem")), self.path(&format!("{name}.key")));
        (BackgroundServer::start(config).unwrap(), data)
    }
}

/// Both clients' one line for a TLS failure: what is wrong with the certificate, and `--ca-file`.
fn tls_failure_lines(url: &str, ca_file: Option<&std::path::Path>) -> (String, String) {
    let credentials = unreachable_credentials(url);
    let (reason, agent) =
        refusal(&quick_client(ca_file).register(&register_request(&credentials, None, "m", "r", None)));
    assert_eq!(reason, Reason::VaultTlsFailed, "{agent}");
    let admin = AdminClient::new(url, SecretString::from("token".to_string()), ca_file).unwrap();
    let admin = match admin.health() {
        Err(error @ AdminError::Unreachable { .. }) => error.to_string(),
        other => panic!("expected an unreachable vault, got {other:?}"),
    };
    (agent, admin)
}

#[test]
fn tls_failures_say_what_is_wrong_with_the_certificate_and_how_to_trust_a_ca() {
    let pki = BadPki::new();
    let ca = pki.path("ca.pem");
    let cases: [(&str, &str, Option<&std::path::Path>, &str); 5] = [
        ("a CA certificate as the server's", "ca", Some(&ca), "is a CA certificate used as the server's own"),
        ("an authority not trusted", "good", None, "was issued by an authority this machine does not trust"),
        ("expired", "expired", Some(&ca), "expired at 2021-01-01T00:00:00Z"),
        ("not yet valid", "future", Some(&ca), "is not valid before 2090-01-01T00:00:00Z"),
        ("another host name", "other-host", Some(&ca), "is for vault.example.org and not for 127.0.0.1"),
    ];
    for (what, served, ca_file, says) in cases {
        let (server, _data) = pki.serve(served);
        let (agent, admin) = tls_failure_lines(server.url(), ca_file);
        for line in [&agent, &admin] {
            assert!(line.contains(says), "{what}: {line}");
            assert!(line.contains("to trust a private CA, pass its certificate"), "{what}: {line}");
            assert!(line.contains("--ca-file"), "{what}: {line}");
            assert!(!line.contains('\n'), "{what}: one line: {line}");
            assert!(!line.contains("OtherError") && !line.contains("InvalidCertificate"), "{what}: {line}");
        }
        server.shutdown().unwrap();
    }
    // The good certificate with its CA: nothing fails (so the cases above fail for their reason).
    let (server, _data) = pki.serve("good");
    AdminClient::new(server.url(), SecretString::from("token".to_string()), Some(&ca)).unwrap().health().unwrap();

    // https:// to a service that speaks plain HTTP.
    let vault = Vault::start();
    let url = vault.url().replace("http://", "https://");
    let (agent, admin) = tls_failure_lines(&url, Some(&ca));
    for line in [&agent, &admin] {
        assert!(line.contains("the endpoint does not speak TLS"), "{line}");
    }
}
