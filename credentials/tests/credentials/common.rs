use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeZone, Utc};
use regent_credentials::{IssueRequest, IssuedCredentials, VaultIdentity, issue};

pub const FILE_NAME: &str = "vault.VaultCredentials";

pub fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("valid test date")
}

pub fn request() -> IssueRequest {
    IssueRequest {
        identity: VaultIdentity {
            resource_name: "contoso-vault".into(),
            subscription_id: "0d7e5f8c-1a2b-4c3d-8e9f-0a1b2c3d4e5f".into(),
            resource_group: "backup-rg".into(),
            location: "westeurope".into(),
            resource_id: 8_512_345_678_901_234_567,
            resource_type: "Vaults".into(),
            provider_namespace: "Microsoft.RecoveryServices".into(),
        },
        aad_authority: "https://login.windows.net".into(),
        aad_tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        service_principal_client_id: "8f9c2a1e-3b4d-4e5f-a6b7-c8d9e0f1a2b3".into(),
        endpoint: "https://127.0.0.1:8443/".into(),
        agent_links: vec![
            ("WABUpdateKBLink".into(), "http://go.microsoft.com/fwlink/p/?LinkId=229525".into()),
            ("WebPortalLink".into(), "http://go.microsoft.com/fwlink/?LinkId=817353".into()),
        ],
        transparency_log_key: Some("regent-vault-0123456789abcdef+1a2b3c4d+AQID".into()),
        not_before: at(2026, 3, 1, 11, 50, 0),
        not_after: at(2026, 3, 3, 12, 0, 0),
    }
}

/// Issued once per test run: every refusal test edits this valid document.
pub static ISSUED: LazyLock<IssuedCredentials> = LazyLock::new(|| issue(&request()).expect("issue"));

pub fn valid_xml() -> String {
    ISSUED.xml.to_string()
}

fn element_span(xml: &str, name: &str) -> (usize, usize, usize, usize) {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{name}> in the document"));
    let content = start + open.len();
    let end = content + xml[content..].find(&close).expect("close tag");
    (start, content, end, end + close.len())
}

pub fn element_value(xml: &str, name: &str) -> String {
    let (_, content, end, _) = element_span(xml, name);
    xml[content..end].to_string()
}

pub fn with_element(xml: &str, name: &str, value: &str) -> String {
    let (_, content, end, _) = element_span(xml, name);
    format!("{}{}{}", &xml[..content], value, &xml[end..])
}

/// Removes the element with the line break and indentation before it.
pub fn without_element(xml: &str, name: &str) -> String {
    let (start, _, _, after) = element_span(xml, name);
    let line_start = xml[..start].rfind("\r\n").expect("indented document");
    format!("{}{}", &xml[..line_start], &xml[after..])
}

pub fn with_bundle(xml: &str, pkcs12: &[u8]) -> String {
    with_element(xml, "ManagementCert", &STANDARD.encode(pkcs12))
}

pub fn bundle_of(xml: &str) -> Vec<u8> {
    STANDARD.decode(element_value(xml, "ManagementCert")).expect("base64")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
