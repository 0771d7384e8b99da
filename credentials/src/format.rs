//! The file format's fixed names, and the writer that produces it the way the data-contract serializer does.

/// Root element of an AAD vault credentials file.
pub(crate) const ROOT: &str = "RSBackupVaultAADCreds";
/// The data-contract namespace of the root and every child.
pub(crate) const NAMESPACE: &str =
    "http://schemas.datacontract.org/2004/07/Microsoft.Azure.Portal.RecoveryServices.Models.Common";
pub(crate) const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Written in `Version`; the parser accepts any non-empty value.
pub(crate) const VERSION: &str = "2.0";

pub(crate) const VERSION_EL: &str = "Version";
pub(crate) const SUBSCRIPTION_ID: &str = "SubscriptionId";
pub(crate) const RESOURCE_TYPE: &str = "ResourceType";
pub(crate) const RESOURCE_NAME: &str = "ResourceName";
pub(crate) const MANAGEMENT_CERT: &str = "ManagementCert";
pub(crate) const RESOURCE_ID: &str = "ResourceId";
pub(crate) const RESOURCE_GROUP: &str = "ResourceGroup";
pub(crate) const LOCATION: &str = "Location";
pub(crate) const PROVIDER_NAMESPACE: &str = "ProviderNamespace";
pub(crate) const AAD_AUTHORITY: &str = "AadAuthority";
pub(crate) const AAD_TENANT_ID: &str = "AadTenantId";
pub(crate) const SERVICE_PRINCIPAL_CLIENT_ID: &str = "ServicePrincipalClientId";
pub(crate) const ID_MGMT_REST_ENDPOINT: &str = "IdMgmtRestEndpoint";
pub(crate) const AGENT_LINKS: &str = "AgentLinks";
/// regent's own member, after the portal's: the C2SP verifier key that signs the vault's
/// transparency-log checkpoints. A data-contract reader ignores members it does not know, so
/// older agents (and the real one) still read the file.
pub(crate) const TRANSPARENCY_LOG_KEY: &str = "TransparencyLogKey";

/// Children in data-member order; the writer keeps it, the parser does not insist on it.
pub(crate) const ELEMENTS: [&str; 15] = [
    VERSION_EL,
    SUBSCRIPTION_ID,
    RESOURCE_TYPE,
    RESOURCE_NAME,
    MANAGEMENT_CERT,
    RESOURCE_ID,
    RESOURCE_GROUP,
    LOCATION,
    PROVIDER_NAMESPACE,
    AAD_AUTHORITY,
    AAD_TENANT_ID,
    SERVICE_PRINCIPAL_CLIENT_ID,
    ID_MGMT_REST_ENDPOINT,
    AGENT_LINKS,
    TRANSPARENCY_LOG_KEY,
];

/// .NET's XmlWriter on Windows ends lines with CRLF; files from the real portal do too.
const NEWLINE: &str = "\r\n";

/// Writes the document: XML declaration, attributes one per line and two-space indentation, as the
/// public code that writes these files configures its XmlWriter (`Indent`, `NewLineOnAttributes`, UTF-8 without BOM).
/// `values` must be in [`ELEMENTS`] order; the caller has checked they hold only XML-legal characters.
pub(crate) fn write(values: &[(&str, &str); 15]) -> String {
    // Sized up front so the buffer holding the key never reallocates and leaves unwiped copies behind.
    let capacity = values.iter().map(|(name, value)| 2 * name.len() + escaped_len(value) + 16).sum::<usize>() + 512;
    let mut out = String::with_capacity(capacity);
    out.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    out.push_str(NEWLINE);
    out.push('<');
    out.push_str(ROOT);
    for (prefix, uri) in [("xmlns:i", XSI), ("xmlns", NAMESPACE)] {
        out.push_str(NEWLINE);
        out.push_str("  ");
        out.push_str(prefix);
        out.push_str("=\"");
        out.push_str(uri);
        out.push('"');
    }
    out.push('>');
    for (name, value) in values {
        out.push_str(NEWLINE);
        out.push_str("  <");
        out.push_str(name);
        out.push('>');
        escape_into(&mut out, value);
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }
    out.push_str(NEWLINE);
    out.push_str("</");
    out.push_str(ROOT);
    out.push('>');
    out
}

fn escaped_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '&' => 5,
            '<' | '>' => 4,
            c => c.len_utf8(),
        })
        .sum()
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// XML 1.0 forbids most control characters even when escaped; refusing them keeps issue -> parse lossless.
pub(crate) fn is_xml_safe(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_sized_for_the_whole_document() {
        let value = "a&b<c>".repeat(200);
        let values: [(&str, &str); 15] = ELEMENTS.map(|name| (name, value.as_str()));
        let capacity = values.iter().map(|(name, value)| 2 * name.len() + escaped_len(value) + 16).sum::<usize>() + 512;
        let out = write(&values);
        assert!(out.len() <= capacity, "{} > {capacity}", out.len());
        assert!(out.capacity() < 2 * capacity, "no reallocation");
    }
}
