use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKeyChain};
use regent_credentials::{CredentialsError, MAX_FILE_SIZE, parse};

use crate::common::*;

fn refuse(xml: &str) -> CredentialsError {
    refuse_bytes(FILE_NAME, xml.as_bytes())
}

fn refuse_bytes(name: &str, bytes: &[u8]) -> CredentialsError {
    let err = parse(name, bytes).expect_err("must be refused");
    assert_eq!(err.reason(), "credentials_invalid", "{err:?}");
    let message = err.to_string();
    assert!(!message.is_empty() && !message.contains('\n'), "one line: {message:?}");
    err
}

const REQUIRED: [&str; 10] = [
    "Version",
    "SubscriptionId",
    "ResourceType",
    "ResourceName",
    "ManagementCert",
    "ResourceId",
    "ResourceGroup",
    "Location",
    "ProviderNamespace",
    "IdMgmtRestEndpoint",
];

#[test]
fn wrong_extension() {
    let xml = valid_xml();
    for name in ["vault.xml", "vault.VaultCredentials.txt", "VaultCredentials", "", "vault.VaultCredential"] {
        assert_eq!(refuse_bytes(name, xml.as_bytes()), CredentialsError::WrongExtension, "{name:?}");
    }
    for name in [
        "vault.vaultcredentials",
        "C:\\Users\\me\\Downloads\\VAULT_Mon Mar 02 2026.VAULTCREDENTIALS",
        "ü.VaultCredentials",
    ] {
        parse(name, xml.as_bytes()).unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
}

#[test]
fn oversize() {
    let mut padded = valid_xml().into_bytes();
    padded.resize(MAX_FILE_SIZE, b' ');
    parse(FILE_NAME, &padded).expect("exactly the limit is accepted");
    padded.push(b' ');
    assert_eq!(
        refuse_bytes(FILE_NAME, &padded),
        CredentialsError::TooLarge { size: MAX_FILE_SIZE + 1, max: MAX_FILE_SIZE }
    );
}

#[test]
fn not_utf8() {
    let mut bytes = valid_xml().into_bytes();
    bytes.insert(200, 0xff);
    assert_eq!(refuse_bytes(FILE_NAME, &bytes), CredentialsError::NotUtf8);
    let utf16: Vec<u8> = valid_xml().encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert!(matches!(refuse_bytes(FILE_NAME, &utf16), CredentialsError::NotUtf8 | CredentialsError::NotXml { .. }));
}

#[test]
fn byte_order_mark_is_accepted() {
    let with_bom = format!("\u{feff}{}", valid_xml());
    parse(FILE_NAME, with_bom.as_bytes()).expect("BOM");
}

#[test]
fn not_xml() {
    let xml = valid_xml();
    for text in
        ["", "hello", "{\"ResourceName\": \"x\"}", &xml[..xml.len() / 2], &xml.replace("</Location>", "</Locat>")]
    {
        assert!(matches!(refuse(text), CredentialsError::NotXml { .. }), "{:?}", &text[..text.len().min(40)]);
    }
}

#[test]
fn document_type_declarations_are_refused() {
    let xml = valid_xml().replacen(
        "<RSBackupVaultAADCreds",
        "<!DOCTYPE RSBackupVaultAADCreds [<!ENTITY a \"aaaaaaaaaa\">]>\r\n<RSBackupVaultAADCreds",
        1,
    );
    assert!(matches!(refuse(&xml), CredentialsError::NotXml { .. }));
}

#[test]
fn wrong_root() {
    let xml = valid_xml().replace("RSBackupVaultAADCreds", "RSBackupVaultCreds");
    assert_eq!(refuse(&xml), CredentialsError::WrongRoot { found: "RSBackupVaultCreds".into() });
}

#[test]
fn wrong_namespace() {
    let xml = valid_xml().replace(
        "Microsoft.Azure.Portal.RecoveryServices.Models.Common",
        "Microsoft.Azure.Commands.AzureBackup.Models",
    );
    assert_eq!(
        refuse(&xml),
        CredentialsError::WrongNamespace {
            found: "http://schemas.datacontract.org/2004/07/Microsoft.Azure.Commands.AzureBackup.Models".into()
        }
    );
    let no_namespace = valid_xml().replace(
        "\r\n  xmlns=\"http://schemas.datacontract.org/2004/07/Microsoft.Azure.Portal.RecoveryServices.Models.Common\"",
        "",
    );
    assert_eq!(refuse(&no_namespace), CredentialsError::WrongNamespace { found: String::new() });
}

#[test]
fn children_outside_the_namespace_do_not_count() {
    let xml = valid_xml()
        .replace("<Location>westeurope</Location>", "<x:Location xmlns:x=\"urn:other\">westeurope</x:Location>");
    assert_eq!(refuse(&xml), CredentialsError::MissingElement("Location"));
}

#[test]
fn missing_required_elements() {
    for name in REQUIRED {
        assert_eq!(refuse(&without_element(&valid_xml(), name)), CredentialsError::MissingElement(name), "{name}");
    }
}

#[test]
fn empty_required_elements() {
    for name in REQUIRED {
        for empty in ["", "   ", "\r\n"] {
            assert_eq!(
                refuse(&with_element(&valid_xml(), name, empty)),
                CredentialsError::EmptyElement(name),
                "{name}"
            );
        }
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let xml = valid_xml();
        let start = xml.find(&open).unwrap();
        let end = xml.find(&close).unwrap() + close.len();
        let nil = format!("{}<{name} i:nil=\"true\" />{}", &xml[..start], &xml[end..]);
        assert_eq!(refuse(&nil), CredentialsError::EmptyElement(name), "{name} nil");
    }
}

#[test]
fn optional_elements_may_be_missing_or_empty() {
    let mut xml = valid_xml();
    for name in ["AadAuthority", "AadTenantId", "ServicePrincipalClientId", "AgentLinks", "TransparencyLogKey"] {
        xml = without_element(&xml, name);
    }
    let creds = parse(FILE_NAME, xml.as_bytes()).expect("optional elements");
    assert_eq!(creds.aad_authority, "");
    assert!(creds.agent_links.is_empty());
    // A file from a real portal names no log key: the agent takes it at first contact.
    assert_eq!(creds.transparency_log_key, None);
}

#[test]
fn unknown_elements_and_other_order_are_tolerated() {
    let xml = valid_xml().replace("  <Version>2.0</Version>\r\n", "");
    let xml = xml.replace("</AgentLinks>", "</AgentLinks>\r\n  <Version>2.0</Version>\r\n  <Extra>x</Extra>");
    parse(FILE_NAME, xml.as_bytes()).expect("reordered");
}

#[test]
fn duplicate_elements() {
    let xml = valid_xml()
        .replace("<Location>westeurope</Location>", "<Location>westeurope</Location><Location>eastus</Location>");
    assert_eq!(refuse(&xml), CredentialsError::DuplicateElement("Location"));
}

#[test]
fn resource_id_not_an_integer() {
    for value in ["abc", "1.5", "0x10", "99999999999999999999", "12 34"] {
        assert_eq!(
            refuse(&with_element(&valid_xml(), "ResourceId", value)),
            CredentialsError::BadResourceId,
            "{value}"
        );
    }
    let creds = parse(FILE_NAME, with_element(&valid_xml(), "ResourceId", " -42 ").as_bytes()).expect("negative");
    assert_eq!(creds.identity.resource_id, -42);
}

#[test]
fn bad_base64() {
    for value in ["not base64!", "QUJD$", "QQ=Q", "Q"] {
        assert_eq!(
            refuse(&with_element(&valid_xml(), "ManagementCert", value)),
            CredentialsError::BadBase64,
            "{value}"
        );
    }
}

#[test]
fn base64_with_line_breaks_is_accepted() {
    let xml = valid_xml();
    let value = element_value(&xml, "ManagementCert");
    let wrapped: Vec<String> = value.as_bytes().chunks(76).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    parse(FILE_NAME, with_element(&xml, "ManagementCert", &wrapped.join("\r\n")).as_bytes()).expect("wrapped base64");
}

#[test]
fn pkcs12_garbage() {
    let xml = valid_xml();
    let mut truncated = bundle_of(&xml);
    truncated.truncate(truncated.len() / 2);
    let mut flipped = bundle_of(&xml);
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55; // inside the MAC-protected content
    for bundle in [b"this is not DER".to_vec(), vec![0x30, 0x03, 0x02, 0x01, 0x03], truncated, flipped] {
        assert!(matches!(refuse(&with_bundle(&xml, &bundle)), CredentialsError::BadPkcs12 { .. }));
    }
}

#[test]
fn pkcs12_demanding_excessive_key_derivation() {
    use der::{Decode, Encode};
    let xml = valid_xml();
    let mut pfx = pkcs12::Pfx::from_der(&bundle_of(&xml)).unwrap();
    pfx.mac_data.as_mut().expect("issued bundles carry a MAC").iterations = 2_000_000;
    let started = std::time::Instant::now();
    let err = refuse(&with_bundle(&xml, &pfx.to_der().unwrap()));
    assert!(matches!(&err, CredentialsError::BadPkcs12 { detail } if detail.contains("iterations")), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused before doing the work");
}

fn parsed_issued() -> regent_credentials::VaultCredentials {
    parse(FILE_NAME, ISSUED.xml.as_bytes()).expect("parse")
}

fn write_pkcs12(entries: Vec<(&str, KeyStoreEntry)>, password: &str) -> Vec<u8> {
    let mut store = KeyStore::new();
    for (alias, entry) in entries {
        store.add_entry(alias, entry);
    }
    store.writer(password).write().expect("write pkcs12")
}

#[test]
fn pkcs12_with_another_password() {
    let creds = parsed_issued();
    let key = p12_keystore::PrivateKey::from_der(creds.private_key.pkcs8_der()).unwrap();
    let cert = p12_keystore::Certificate::from_der(&creds.certificate_der).unwrap();
    let bundle =
        write_pkcs12(vec![("k", KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new("id", key, [cert])))], "secret");
    assert!(matches!(refuse(&with_bundle(&valid_xml(), &bundle)), CredentialsError::BadPkcs12 { .. }));
}

#[test]
fn pkcs12_without_a_certificate() {
    let creds = parsed_issued();
    let key = p12_keystore::PrivateKey::from_der(creds.private_key.pkcs8_der()).unwrap();
    let chain = PrivateKeyChain::new("id", key, Vec::<p12_keystore::Certificate>::new());
    let bundle = write_pkcs12(vec![("k", KeyStoreEntry::PrivateKeyChain(chain))], "");
    assert_eq!(refuse(&with_bundle(&valid_xml(), &bundle)), CredentialsError::NoCertificate);
}

#[test]
fn pkcs12_without_a_private_key() {
    let creds = parsed_issued();
    let cert = p12_keystore::Certificate::from_der(&creds.certificate_der).unwrap();
    let bundle = write_pkcs12(vec![("c", KeyStoreEntry::Certificate(cert))], "");
    assert_eq!(refuse(&with_bundle(&valid_xml(), &bundle)), CredentialsError::NoPrivateKey);
}

#[test]
fn pkcs12_whose_key_does_not_match_its_certificate() {
    let creds = parsed_issued();
    let other = parse(FILE_NAME, regent_credentials::issue(&request()).unwrap().xml.as_bytes()).unwrap();
    let key = p12_keystore::PrivateKey::from_der(other.private_key.pkcs8_der()).unwrap();
    let cert = p12_keystore::Certificate::from_der(&creds.certificate_der).unwrap();
    let bundle = write_pkcs12(vec![("k", KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new("id", key, [cert])))], "");
    assert_eq!(refuse(&with_bundle(&valid_xml(), &bundle)), CredentialsError::KeyMismatch);
}

#[test]
fn pkcs12_whose_certificate_does_not_parse() {
    // The OpenSSL "plain" fixture holds the certificate unencrypted and without a MAC, so its bytes can be
    // corrupted in place while the PKCS#12 around them stays intact.
    let xml = String::from_utf8(fixture("openssl-rsa2048-plain.VaultCredentials")).unwrap();
    let creds = parse(FILE_NAME, xml.as_bytes()).expect("plain fixture parses");
    let mut bundle = bundle_of(&xml);
    let at =
        bundle.windows(creds.certificate_der.len()).position(|w| w == creds.certificate_der).expect("cert in clear");
    // Certificate = SEQ { TBS = SEQ { [0] version ... } }: the version's tag sits at offset 8.
    assert_eq!(bundle[at + 8], 0xa0);
    bundle[at + 8] = 0x04;
    assert!(matches!(refuse(&with_bundle(&xml, &bundle)), CredentialsError::BadCertificate { .. }));
}

#[test]
fn messages_name_what_is_wrong() {
    assert_eq!(
        CredentialsError::MissingElement("ResourceId").to_string(),
        "the required element <ResourceId> is missing"
    );
    assert_eq!(CredentialsError::WrongExtension.to_string(), "the file name must end in .VaultCredentials");
    let err = refuse(&with_element(&valid_xml(), "ManagementCert", "QUJD"));
    assert!(err.to_string().starts_with("<ManagementCert> is not a PKCS#12 bundle"), "{err}");
}

#[test]
fn the_first_missing_element_in_document_order_is_named() {
    let mut xml = valid_xml();
    for name in ["IdMgmtRestEndpoint", "ResourceId", "SubscriptionId"] {
        xml = without_element(&xml, name);
    }
    assert_eq!(refuse(&xml), CredentialsError::MissingElement("SubscriptionId"));
}
