//! What a credentials file says, split into the parts the engine may record and the secret part it must not.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::PrivateKey;

/// Which vault the file belongs to: shown in status, properties and audit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VaultIdentity {
    pub resource_name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub resource_id: i64,
    pub resource_type: String,
    pub provider_namespace: String,
}

/// The certificate as read from the file; the thumbprint says which download this is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CertificateFacts {
    /// Lowercase hex SHA-256 of the DER certificate.
    pub thumbprint: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// The subject distinguished name, e.g. `CN=myvault`.
    pub subject: String,
    /// Lowercase hex of the serial number, without leading zero bytes.
    pub serial: String,
}

/// Where `now` falls in a certificate's validity; the caller supplies the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    NotYetValid,
    Valid,
    Expired,
}

impl CertificateFacts {
    /// Both bounds are inclusive, as in RFC 5280.
    pub fn validity_at(&self, now: DateTime<Utc>) -> Validity {
        if now < self.not_before {
            Validity::NotYetValid
        } else if now > self.not_after {
            Validity::Expired
        } else {
            Validity::Valid
        }
    }
}

/// Everything in a credentials file except the key material: safe to record in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsFacts {
    pub version: String,
    pub identity: VaultIdentity,
    pub aad_authority: String,
    pub aad_tenant_id: String,
    pub service_principal_client_id: String,
    /// `IdMgmtRestEndpoint`: the vault service's base URL for registration.
    pub endpoint: String,
    pub agent_links: Vec<(String, String)>,
    /// `TransparencyLogKey`: the vault's checkpoint key, when the file names one.
    pub transparency_log_key: Option<String>,
    pub certificate: CertificateFacts,
}

/// A parsed credentials file. Debug omits the key and the certificate bytes.
#[derive(Clone)]
pub struct VaultCredentials {
    /// `Version`, "2.0" in current files.
    pub version: String,
    pub identity: VaultIdentity,
    /// The three AAD fields and the agent links are optional (empty when absent or nil): the engine does
    /// not use them, so a file is not refused over them.
    pub aad_authority: String,
    pub aad_tenant_id: String,
    pub service_principal_client_id: String,
    /// `IdMgmtRestEndpoint`: the vault service's base URL for registration.
    pub endpoint: String,
    /// `AgentLinks` as (name, url) pairs, in file order; an entry without a comma has an empty url.
    pub agent_links: Vec<(String, String)>,
    /// `TransparencyLogKey` (regent's own, optional): the C2SP verifier key that signs the vault's
    /// checkpoints. Checked by whoever trusts it, not here.
    pub transparency_log_key: Option<String>,
    pub certificate: CertificateFacts,
    pub certificate_der: Vec<u8>,
    pub private_key: PrivateKey,
}

impl VaultCredentials {
    /// The recordable part, for the event that says this file was loaded.
    pub fn facts(&self) -> CredentialsFacts {
        CredentialsFacts {
            version: self.version.clone(),
            identity: self.identity.clone(),
            aad_authority: self.aad_authority.clone(),
            aad_tenant_id: self.aad_tenant_id.clone(),
            service_principal_client_id: self.service_principal_client_id.clone(),
            endpoint: self.endpoint.clone(),
            agent_links: self.agent_links.clone(),
            transparency_log_key: self.transparency_log_key.clone(),
            certificate: self.certificate.clone(),
        }
    }
}

impl fmt::Debug for VaultCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultCredentials")
            .field("version", &self.version)
            .field("identity", &self.identity)
            .field("aad_authority", &self.aad_authority)
            .field("aad_tenant_id", &self.aad_tenant_id)
            .field("service_principal_client_id", &self.service_principal_client_id)
            .field("endpoint", &self.endpoint)
            .field("agent_links", &self.agent_links)
            .field("certificate", &self.certificate)
            .field("certificate_der", &format_args!("<{} bytes>", self.certificate_der.len()))
            .field("private_key", &self.private_key)
            .finish()
    }
}
