//! Files whose PKCS#12 was written by OpenSSL (see tests/fixtures/make-openssl-fixture.sh), not by this crate.

use chrono::{DateTime, Utc};
use regent_credentials::{CredentialsError, KeyAlgorithm, VaultIdentity, parse, verify_signature};

use crate::common::*;

struct Expected {
    thumbprint: String,
    subject: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    serial: String,
}

fn expected() -> Expected {
    let text = String::from_utf8(fixture("openssl-rsa2048.expected.txt")).unwrap();
    let get = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
            .unwrap_or_else(|| panic!("{key} missing from expected.txt"))
            .to_string()
    };
    let time = |key: &str| DateTime::parse_from_rfc3339(&get(key)).expect("RFC 3339").with_timezone(&Utc);
    Expected {
        thumbprint: get("thumbprint"),
        subject: get("subject"),
        not_before: time("not_before"),
        not_after: time("not_after"),
        serial: get("serial"),
    }
}

fn check(fixture_name: &str) {
    let creds = parse(fixture_name, &fixture(fixture_name)).unwrap_or_else(|e| panic!("{fixture_name}: {e}"));
    let expected = expected();
    assert_eq!(creds.certificate.thumbprint, expected.thumbprint);
    assert_eq!(creds.certificate.subject, expected.subject);
    assert_eq!(creds.certificate.subject, "CN=regent interop fixture");
    assert_eq!(creds.certificate.not_before, expected.not_before);
    assert_eq!(creds.certificate.not_after, expected.not_after);
    assert_eq!(creds.certificate.serial, expected.serial);
    assert!(creds.certificate.not_after - creds.certificate.not_before > chrono::Duration::days(365 * 99));
    assert_eq!(
        creds.identity,
        VaultIdentity {
            resource_name: "interop-vault".into(),
            subscription_id: "00000000-1111-2222-3333-444444444444".into(),
            resource_group: "interop-rg".into(),
            location: "westeurope".into(),
            resource_id: 4_611_686_018_427_387_904,
            resource_type: "Vaults".into(),
            provider_namespace: "Microsoft.RecoveryServices".into(),
        }
    );
    assert_eq!(creds.endpoint, "https://vault.example.test/");
    assert_eq!(creds.agent_links.len(), 2);
    assert_eq!(creds.agent_links[1], ("WebPortalLink".into(), "http://go.microsoft.com/fwlink/?LinkId=817353".into()));

    assert_eq!(creds.private_key.algorithm(), KeyAlgorithm::Rsa);
    let message = b"proof of possession";
    let signature = creds.private_key.sign(message).expect("RSA sign");
    assert_eq!(signature.len(), 256, "RSA 2048 signature");
    assert_eq!(creds.private_key.sign(message).unwrap(), signature, "PKCS#1 v1.5 is deterministic");
    verify_signature(&creds.certificate_der, message, &signature).expect("RSA verify");
    assert_eq!(verify_signature(&creds.certificate_der, b"other", &signature), Err(CredentialsError::BadSignature));
}

#[test]
fn openssl_default_pkcs12() {
    check("openssl-rsa2048.VaultCredentials");
}

#[test]
fn openssl_legacy_pkcs12() {
    check("openssl-rsa2048-legacy.VaultCredentials");
}

#[test]
fn openssl_unencrypted_pkcs12() {
    check("openssl-rsa2048-plain.VaultCredentials");
}

/// The other encoding of "no password" (RFC 7292 B.2), which .NET writes for a null password.
#[test]
fn null_password_pkcs12_with_legacy_3des() {
    check("openssl-rsa2048-nullpass-3des.VaultCredentials");
}

#[test]
fn null_password_pkcs12_with_aes() {
    check("openssl-rsa2048-nullpass-aes.VaultCredentials");
}

/// Guards the fixtures themselves: the null-password bundles really use the other encoding, which a reader
/// that knows only the terminated empty BMPString (p12-keystore) refuses at the MAC.
#[test]
fn null_password_fixtures_are_not_readable_as_the_common_empty_password() {
    for name in ["openssl-rsa2048-nullpass-3des.VaultCredentials", "openssl-rsa2048-nullpass-aes.VaultCredentials"] {
        let bundle = bundle_of(&String::from_utf8(fixture(name)).unwrap());
        let err = p12_keystore::Pkcs12Archive::from_pkcs12(&bundle, "").expect_err(name);
        assert!(matches!(err, p12_keystore::error::Error::MacError(_)), "{name}: {err}");
    }
    let bundle = bundle_of(&String::from_utf8(fixture("openssl-rsa2048.VaultCredentials")).unwrap());
    p12_keystore::Pkcs12Archive::from_pkcs12(&bundle, "").expect("the common encoding");
}
