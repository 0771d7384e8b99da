//! Issuing credentials files: for the project's own vault service, and for tests.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Datelike, Utc};
use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKeyChain};
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::Generate;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cert::Certificate;
use crate::format::*;
use crate::{CertificateFacts, CredentialsError, VaultIdentity};

/// PBKDF and MAC iterations in the PKCS#12: OpenSSL's default. The password is empty, so more iterations
/// protect nothing; they would only slow every parse.
const PKCS12_ITERATIONS: u32 = 2048;

/// What the vault service knows when a user downloads credentials. The caller decides validity
/// (the service uses now-10min .. now+48h); X.509 keeps whole seconds, so sub-second parts are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRequest {
    pub identity: VaultIdentity,
    pub aad_authority: String,
    pub aad_tenant_id: String,
    pub service_principal_client_id: String,
    /// Written as `IdMgmtRestEndpoint`: where the agent registers.
    pub endpoint: String,
    pub agent_links: Vec<(String, String)>,
    /// Written as `TransparencyLogKey` when set: the C2SP verifier key of the vault's checkpoints.
    pub transparency_log_key: Option<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// A freshly issued file. `xml` holds the private key: hand it to the user, never log or record it.
pub struct IssuedCredentials {
    /// `<vault>_<yyyy-mm-dd>.VaultCredentials`, dated by `not_before` (UTC).
    pub file_name: String,
    pub xml: Zeroizing<String>,
    pub certificate: CertificateFacts,
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("file_name", &self.file_name)
            .field("xml", &"<redacted>")
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// Generates a P-256 key (fast, unlike RSA keygen) and a self-signed client-authentication certificate,
/// packs both into a PKCS#12 with an empty password, and writes the credentials XML.
pub fn issue(request: &IssueRequest) -> Result<IssuedCredentials, CredentialsError> {
    validate(request)?;
    let failed = |what: &str| CredentialsError::IssueFailed(what.to_owned());

    let key = p256::ecdsa::SigningKey::try_generate().map_err(|_| failed("the system random source failed"))?;
    let pkcs8 = key.to_pkcs8_der().map_err(|_| failed("encoding the private key failed"))?;
    let spki = key.verifying_key().to_public_key_der().map_err(|_| failed("encoding the public key failed"))?;
    let key_id = Sha256::digest(spki.as_bytes());

    let certificate_der = self_signed_certificate(request, &key, &key_id)?;
    let certificate = Certificate::parse(&certificate_der)?.facts()?;

    let bundle = pkcs12(&request.identity.resource_name, pkcs8.as_bytes(), &certificate_der, &key_id)?;
    let management_cert = Zeroizing::new(STANDARD.encode(bundle.as_slice()));
    let resource_id = request.identity.resource_id.to_string();
    let agent_links =
        request.agent_links.iter().map(|(name, url)| format!("{name},{url}")).collect::<Vec<_>>().join(";");
    let id = &request.identity;
    let xml = Zeroizing::new(write(&[
        (VERSION_EL, VERSION),
        (SUBSCRIPTION_ID, &id.subscription_id),
        (RESOURCE_TYPE, &id.resource_type),
        (RESOURCE_NAME, &id.resource_name),
        (MANAGEMENT_CERT, &management_cert),
        (RESOURCE_ID, &resource_id),
        (RESOURCE_GROUP, &id.resource_group),
        (LOCATION, &id.location),
        (PROVIDER_NAMESPACE, &id.provider_namespace),
        (AAD_AUTHORITY, &request.aad_authority),
        (AAD_TENANT_ID, &request.aad_tenant_id),
        (SERVICE_PRINCIPAL_CLIENT_ID, &request.service_principal_client_id),
        (ID_MGMT_REST_ENDPOINT, &request.endpoint),
        (AGENT_LINKS, &agent_links),
        (TRANSPARENCY_LOG_KEY, request.transparency_log_key.as_deref().unwrap_or("")),
    ]));
    Ok(IssuedCredentials { file_name: file_name(&id.resource_name, request.not_before), xml, certificate })
}

/// Refuses what the parser would read back differently, so `parse(issue(r))` always agrees with `r`.
fn validate(request: &IssueRequest) -> Result<(), CredentialsError> {
    let invalid = |why: String| Err(CredentialsError::InvalidRequest(why));
    let id = &request.identity;
    let required = [
        (SUBSCRIPTION_ID, &id.subscription_id),
        (RESOURCE_TYPE, &id.resource_type),
        (RESOURCE_NAME, &id.resource_name),
        (RESOURCE_GROUP, &id.resource_group),
        (LOCATION, &id.location),
        (PROVIDER_NAMESPACE, &id.provider_namespace),
        (ID_MGMT_REST_ENDPOINT, &request.endpoint),
    ];
    for (name, value) in required {
        if value.is_empty() {
            return invalid(format!("{name} is empty"));
        }
    }
    let optional = [
        (AAD_AUTHORITY, &request.aad_authority),
        (AAD_TENANT_ID, &request.aad_tenant_id),
        (SERVICE_PRINCIPAL_CLIENT_ID, &request.service_principal_client_id),
    ];
    for (name, value) in required.into_iter().chain(optional) {
        if !is_xml_safe(value) {
            return invalid(format!("{name} contains a control character"));
        }
        if value.trim() != value.as_str() {
            return invalid(format!("{name} has leading or trailing whitespace"));
        }
    }
    if let Some(key) = &request.transparency_log_key
        && (key.is_empty() || !is_xml_safe(key) || key.trim() != key.as_str())
    {
        return invalid(format!(
            "{TRANSPARENCY_LOG_KEY} must be a non-empty key without control characters or surrounding whitespace"
        ));
    }
    for (name, url) in &request.agent_links {
        let clean = |s: &str| is_xml_safe(s) && s.trim() == s && !s.contains(';');
        if name.is_empty() || !clean(name) || name.contains(',') || !clean(url) {
            return invalid(format!(
                "agent link {:?} must have a name without ',' or ';', a url without ';', and no surrounding whitespace",
                name
            ));
        }
    }
    // X.509 times hold years 0000-9999; keep to the range every decoder handles.
    let in_range = |t: DateTime<Utc>| (1950..=9999).contains(&t.year());
    if !in_range(request.not_before) || !in_range(request.not_after) {
        return invalid("validity must lie between the years 1950 and 9999".into());
    }
    if request.not_after.timestamp() <= request.not_before.timestamp() {
        return invalid("not_after must be later than not_before".into());
    }
    Ok(())
}

fn self_signed_certificate(
    request: &IssueRequest,
    key: &p256::ecdsa::SigningKey,
    key_id: &[u8],
) -> Result<Vec<u8>, CredentialsError> {
    let failed = |what: &str| CredentialsError::IssueFailed(what.to_owned());
    let time = |t: DateTime<Utc>| {
        time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|_| failed("validity out of range"))
    };
    let mut params = rcgen::CertificateParams::default();
    params.not_before = time(request.not_before)?;
    params.not_after = time(request.not_after)?;
    // The key is fresh and random, so a digest of it is a unique serial without another random source.
    let mut serial = key_id.get(..16).unwrap_or(key_id).to_vec();
    if let Some(first) = serial.first_mut() {
        *first &= 0x7f;
    }
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, request.identity.resource_name.as_str());
    params.distinguished_name = name;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(key_id.get(..20).unwrap_or(key_id).to_vec());
    let signer = RcgenSigner { key, public: key.verifying_key().to_sec1_point(false).as_bytes().to_vec() };
    let certificate = params.self_signed(&signer).map_err(|e| CredentialsError::IssueFailed(e.to_string()))?;
    Ok(certificate.der().to_vec())
}

/// Lets rcgen build the certificate while the signing stays with p256 (no ring or aws-lc backend).
struct RcgenSigner<'a> {
    key: &'a p256::ecdsa::SigningKey,
    /// Uncompressed SEC1 point, which is what rcgen puts in the SubjectPublicKeyInfo.
    public: Vec<u8>,
}

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signature: p256::ecdsa::DerSignature =
            self.key.try_sign(message).map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(signature.as_bytes().to_vec())
    }
}

fn pkcs12(
    alias: &str,
    pkcs8: &[u8],
    certificate_der: &[u8],
    key_id: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CredentialsError> {
    let failed = |e: p12_keystore::error::Error| CredentialsError::IssueFailed(format!("building the PKCS#12: {e}"));
    let key = p12_keystore::PrivateKey::from_der(pkcs8).map_err(failed)?;
    let certificate = p12_keystore::Certificate::from_der(certificate_der).map_err(failed)?;
    let chain = PrivateKeyChain::new(key_id.get(..20).unwrap_or(key_id), key, [certificate]);
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    let bytes = store
        .writer("")
        .encryption_iterations(PKCS12_ITERATIONS)
        .mac_iterations(PKCS12_ITERATIONS)
        .write()
        .map_err(failed)?;
    Ok(Zeroizing::new(bytes))
}

/// Names the file after the vault, keeping only characters safe in a file name on any system.
fn file_name(resource_name: &str, issued: DateTime<Utc>) -> String {
    let vault: String = resource_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    format!("{vault}_{}{}", issued.format("%Y-%m-%d"), crate::FILE_EXTENSION)
}
