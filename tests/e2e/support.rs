//! Helpers shared by the end-to-end tests.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};

/// Writes a credentials file for `vault`, issued as the vault service issues them, valid from
/// `from` for `hours`.
pub fn write_credentials(path: &Path, vault: &str, from: DateTime<Utc>, hours: i64) {
    let issued = regent_credentials::issue(&regent_credentials::IssueRequest {
        identity: regent_credentials::VaultIdentity {
            resource_name: vault.into(),
            subscription_id: "00000000-0000-0000-0000-000000000042".into(),
            resource_group: "rg-backup".into(),
            location: "westeurope".into(),
            resource_id: 4242,
            resource_type: "Vaults".into(),
            provider_namespace: "Microsoft.RecoveryServices".into(),
        },
        aad_authority: String::new(),
        aad_tenant_id: String::new(),
        service_principal_client_id: String::new(),
        endpoint: "http://127.0.0.1:9".into(),
        agent_links: vec![],
        not_before: from,
        not_after: from + Duration::hours(hours),
    })
    .unwrap();
    std::fs::write(path, issued.xml.as_bytes()).unwrap();
}
