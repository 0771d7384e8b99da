use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regent_credentials::{
    CredentialsError, CredentialsFacts, KeyAlgorithm, PrivateKey, Validity, issue, parse, verify_signature,
};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::common::*;

#[test]
fn issued_file_parses_back_to_the_same_facts() {
    let request = request();
    let creds = parse(&ISSUED.file_name, ISSUED.xml.as_bytes()).expect("parse issued");
    assert_eq!(creds.version, "2.0");
    assert_eq!(creds.identity, request.identity);
    assert_eq!(creds.aad_authority, request.aad_authority);
    assert_eq!(creds.aad_tenant_id, request.aad_tenant_id);
    assert_eq!(creds.service_principal_client_id, request.service_principal_client_id);
    assert_eq!(creds.endpoint, request.endpoint);
    assert_eq!(creds.agent_links, request.agent_links);
    assert_eq!(creds.transparency_log_key, request.transparency_log_key);
    assert!(ISSUED.xml.contains("<TransparencyLogKey>regent-vault-"), "the key is its own element, after the portal's");
    assert_eq!(creds.certificate, ISSUED.certificate);
    assert_eq!(creds.certificate.not_before, request.not_before);
    assert_eq!(creds.certificate.not_after, request.not_after);
    assert_eq!(creds.certificate.subject, "CN=contoso-vault");
    assert_eq!(creds.certificate.thumbprint, hex::encode(Sha256::digest(&creds.certificate_der)));
    assert_eq!(creds.certificate.thumbprint.len(), 64);
    assert!(creds.certificate.thumbprint.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(creds.private_key.algorithm(), KeyAlgorithm::EcdsaP256);
}

#[test]
fn issued_certificate_is_self_signed_for_client_authentication() {
    let creds = parse(FILE_NAME, ISSUED.xml.as_bytes()).expect("parse");
    let (rest, cert) = X509Certificate::from_der(&creds.certificate_der).expect("x509");
    assert!(rest.is_empty());
    assert_eq!(cert.subject(), cert.issuer());
    // ecdsa-with-SHA256 over the TBS is the same primitive as our proof of possession.
    assert_eq!(cert.signature_algorithm.algorithm.to_id_string(), "1.2.840.10045.4.3.2");
    verify_signature(&creds.certificate_der, cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .expect("self-signature verifies");
    let eku = cert.extended_key_usage().expect("eku extension").expect("eku present");
    assert!(eku.value.client_auth);
    assert!(!eku.value.server_auth);
    assert_eq!(cert.validity().not_before.timestamp(), request().not_before.timestamp());
    assert_eq!(
        hex::encode(cert.raw_serial().iter().skip_while(|b| **b == 0).copied().collect::<Vec<_>>()),
        creds.certificate.serial
    );
}

#[test]
fn each_issue_makes_a_new_key_and_certificate() {
    let other = issue(&request()).expect("issue");
    assert_ne!(other.certificate.thumbprint, ISSUED.certificate.thumbprint);
    assert_ne!(other.certificate.serial, ISSUED.certificate.serial);
}

#[test]
fn issued_xml_has_the_data_contract_layout() {
    let xml = valid_xml();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<RSBackupVaultAADCreds\r\n"));
    assert!(xml.contains("  xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"\r\n"));
    assert!(xml.contains(
        "  xmlns=\"http://schemas.datacontract.org/2004/07/Microsoft.Azure.Portal.RecoveryServices.Models.Common\">"
    ));
    assert!(xml.ends_with("\r\n</RSBackupVaultAADCreds>"));
    let order = [
        "Version",
        "SubscriptionId",
        "ResourceType",
        "ResourceName",
        "ManagementCert",
        "ResourceId",
        "ResourceGroup",
        "Location",
        "ProviderNamespace",
        "AadAuthority",
        "AadTenantId",
        "ServicePrincipalClientId",
        "IdMgmtRestEndpoint",
        "AgentLinks",
    ];
    let positions: Vec<usize> =
        order.iter().map(|name| xml.find(&format!("\r\n  <{name}>")).expect("element on its own line")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "elements out of order");
    assert_eq!(element_value(&xml, "ResourceId"), "8512345678901234567");
    assert_eq!(
        element_value(&xml, "AgentLinks"),
        "WABUpdateKBLink,http://go.microsoft.com/fwlink/p/?LinkId=229525;WebPortalLink,http://go.microsoft.com/fwlink/?LinkId=817353"
    );
}

#[test]
fn issued_file_name_names_the_vault_and_the_day() {
    assert_eq!(ISSUED.file_name, "contoso-vault_2026-03-01.VaultCredentials");
    let mut odd = request();
    odd.identity.resource_name = "my vault/../x".into();
    assert_eq!(issue(&odd).expect("issue").file_name, "my_vault_.._x_2026-03-01.VaultCredentials");
}

#[test]
fn markup_characters_in_values_round_trip() {
    let mut request = request();
    request.identity.resource_group = "R&D <backup> \"group\"".into();
    request.aad_authority = String::new();
    request.agent_links =
        vec![("Help".into(), "https://example.test/?a=1&b=2,3".into()), ("Empty".into(), String::new())];
    let issued = issue(&request).expect("issue");
    assert!(issued.xml.contains("R&amp;D &lt;backup&gt;"));
    let creds = parse(&issued.file_name, issued.xml.as_bytes()).expect("parse");
    assert_eq!(creds.identity, request.identity);
    assert_eq!(creds.aad_authority, "");
    assert_eq!(creds.agent_links, request.agent_links);
}

#[test]
fn sub_second_validity_is_truncated_to_whole_seconds() {
    let mut request = request();
    request.not_before += chrono::Duration::milliseconds(750);
    let issued = issue(&request).expect("issue");
    assert_eq!(issued.certificate.not_before, at(2026, 3, 1, 11, 50, 0));
}

#[test]
fn issue_refuses_requests_that_would_not_read_back() {
    type Edit = Box<dyn Fn(&mut regent_credentials::IssueRequest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("empty name", Box::new(|r| r.identity.resource_name.clear())),
        ("empty endpoint", Box::new(|r| r.endpoint.clear())),
        ("control char", Box::new(|r| r.identity.location = "west\u{1}europe".into())),
        ("padded", Box::new(|r| r.identity.subscription_id = " abc".into())),
        ("link name with comma", Box::new(|r| r.agent_links = vec![("a,b".into(), "u".into())])),
        ("link url with semicolon", Box::new(|r| r.agent_links = vec![("a".into(), "u;v".into())])),
        ("empty link name", Box::new(|r| r.agent_links = vec![(String::new(), "u".into())])),
        ("empty log key", Box::new(|r| r.transparency_log_key = Some(String::new()))),
        ("log key with a newline", Box::new(|r| r.transparency_log_key = Some("a+b+c\n".into()))),
        ("inverted validity", Box::new(|r| std::mem::swap(&mut r.not_before, &mut r.not_after))),
        ("empty validity", Box::new(|r| r.not_after = r.not_before)),
        ("year 10000", Box::new(|r| r.not_after = at(9999, 12, 31, 0, 0, 0) + chrono::Duration::days(2))),
    ];
    for (what, edit) in cases {
        let mut request = request();
        edit(&mut request);
        let err = issue(&request).expect_err(what);
        assert!(matches!(err, CredentialsError::InvalidRequest(_)), "{what}: {err:?}");
        assert_eq!(err.reason(), "credentials_issue_failed");
    }
}

#[test]
fn validity_is_read_against_the_callers_clock() {
    let facts = &ISSUED.certificate;
    assert_eq!(facts.validity_at(at(2026, 3, 1, 11, 49, 59)), Validity::NotYetValid);
    assert_eq!(facts.validity_at(at(2026, 3, 1, 11, 50, 0)), Validity::Valid);
    assert_eq!(facts.validity_at(at(2026, 3, 3, 12, 0, 0)), Validity::Valid);
    assert_eq!(facts.validity_at(at(2026, 3, 3, 12, 0, 1)), Validity::Expired);
}

#[test]
fn facts_serialize_for_events_without_key_material() {
    let creds = parse(FILE_NAME, ISSUED.xml.as_bytes()).expect("parse");
    let facts = creds.facts();
    let json = serde_json::to_string(&facts).expect("serialize");
    let back: CredentialsFacts = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, facts);
    assert!(json.contains("\"thumbprint\""));
    let der = creds.private_key.pkcs8_der();
    assert!(!json.contains(&hex::encode(der)));
    assert!(!json.contains(&STANDARD.encode(der)));
    assert!(!json.contains(&element_value(&ISSUED.xml, "ManagementCert")));
}

#[test]
fn ecdsa_signatures_verify_against_the_certificate() {
    let creds = parse(FILE_NAME, ISSUED.xml.as_bytes()).expect("parse");
    let message = b"register machine 42 with nonce 0123456789";
    let signature = creds.private_key.sign(message).expect("sign");
    verify_signature(&creds.certificate_der, message, &signature).expect("verifies");

    assert_eq!(
        verify_signature(&creds.certificate_der, b"another message", &signature),
        Err(CredentialsError::BadSignature)
    );
    let mut flipped = signature.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(verify_signature(&creds.certificate_der, message, &flipped), Err(CredentialsError::BadSignature));
    assert_eq!(verify_signature(&creds.certificate_der, message, b"junk"), Err(CredentialsError::BadSignature));
    assert_eq!(verify_signature(&creds.certificate_der, message, &[]), Err(CredentialsError::BadSignature));

    let other = issue(&request()).expect("issue");
    let other = parse(FILE_NAME, other.xml.as_bytes()).expect("parse");
    let foreign = other.private_key.sign(message).expect("sign");
    assert_eq!(verify_signature(&creds.certificate_der, message, &foreign), Err(CredentialsError::BadSignature));
    assert!(matches!(
        verify_signature(b"not a certificate", message, &signature),
        Err(CredentialsError::BadCertificate { .. })
    ));
}

#[test]
fn a_sealed_key_restores_and_still_signs() {
    let creds = parse(FILE_NAME, ISSUED.xml.as_bytes()).expect("parse");
    let restored = PrivateKey::from_pkcs8_der(creds.private_key.pkcs8_der()).expect("restore");
    assert_eq!(restored.algorithm(), KeyAlgorithm::EcdsaP256);
    let signature = restored.sign(b"m").expect("sign");
    verify_signature(&creds.certificate_der, b"m", &signature).expect("verifies");
    assert_eq!(PrivateKey::from_pkcs8_der(b"garbage").err(), Some(CredentialsError::BadPrivateKey));
}

#[test]
fn debug_output_shows_no_key_material() {
    let creds = parse(FILE_NAME, ISSUED.xml.as_bytes()).expect("parse");
    let der = creds.private_key.pkcs8_der();
    let debug = format!("{creds:?} {creds:#?} {:?} {:?}", creds.private_key, *ISSUED);
    assert_eq!(format!("{:?}", creds.private_key), "PrivateKey(<redacted>)");
    let management_cert = element_value(&ISSUED.xml, "ManagementCert");
    for needle in [
        hex::encode(der),
        hex::encode_upper(der),
        STANDARD.encode(der),
        // any stretch of the key, not just the whole of it
        hex::encode(&der[der.len() - 32..]),
        format!("{:?}", &der[der.len() - 8..]),
        management_cert[..64].to_string(),
    ] {
        assert!(!debug.contains(&needle), "Debug output leaks {needle}");
    }
    assert!(debug.contains("contoso-vault"), "Debug still shows the non-secret facts");
}
