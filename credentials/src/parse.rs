//! Reading a credentials file from bytes. Every refusal is a typed error; nothing here may panic on input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use zeroize::Zeroizing;

use crate::cert::Certificate;
use crate::format::*;
use crate::key::PrivateKey;
use crate::{CredentialsError, VaultCredentials, VaultIdentity};

/// The extension the real agent insists on (compared case-insensitively).
pub const FILE_EXTENSION: &str = ".VaultCredentials";
/// Real files are a few KiB; the cap keeps hostile input from costing memory and time.
pub const MAX_FILE_SIZE: usize = 1024 * 1024;
/// Generous for 14 elements, small enough to bound the tree roxmltree builds.
const MAX_XML_NODES: u32 = 10_000;
/// Error messages quote at most this much of the file.
const MAX_QUOTE: usize = 100;

/// Parses a vault credentials file. `file_name` is the name the user gave (a path is fine); only its
/// extension is checked. Validity is reported, not enforced: the caller has the clock.
pub fn parse(file_name: &str, bytes: &[u8]) -> Result<VaultCredentials, CredentialsError> {
    if !has_extension(file_name) {
        return Err(CredentialsError::WrongExtension);
    }
    if bytes.len() > MAX_FILE_SIZE {
        return Err(CredentialsError::TooLarge { size: bytes.len(), max: MAX_FILE_SIZE });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CredentialsError::NotUtf8)?;
    // .NET writers may prepend a BOM.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let options = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: MAX_XML_NODES, ..Default::default() };
    let document = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| CredentialsError::NotXml { detail: quote(&e.to_string()) })?;
    let root = document.root_element();
    if root.tag_name().name() != ROOT {
        return Err(CredentialsError::WrongRoot { found: quote(root.tag_name().name()) });
    }
    if root.tag_name().namespace() != Some(NAMESPACE) {
        return Err(CredentialsError::WrongNamespace { found: quote(root.tag_name().namespace().unwrap_or("")) });
    }
    let fields = Fields::read(root)?;

    // Checked in document order, so the first missing element is the one reported.
    let version = fields.required(VERSION_EL)?;
    let subscription_id = fields.required(SUBSCRIPTION_ID)?;
    let resource_type = fields.required(RESOURCE_TYPE)?;
    let resource_name = fields.required(RESOURCE_NAME)?;
    let management_cert = fields.required(MANAGEMENT_CERT)?;
    let resource_id = fields.required(RESOURCE_ID)?;
    let resource_group = fields.required(RESOURCE_GROUP)?;
    let location = fields.required(LOCATION)?;
    let provider_namespace = fields.required(PROVIDER_NAMESPACE)?;
    let endpoint = fields.required(ID_MGMT_REST_ENDPOINT)?;

    let resource_id = resource_id.parse::<i64>().map_err(|_| CredentialsError::BadResourceId)?;
    let bundle = decode_base64(management_cert)?;
    let (certificate_der, private_key) = read_pkcs12(&bundle)?;
    let certificate = Certificate::parse(&certificate_der)?.facts()?;

    Ok(VaultCredentials {
        version: version.to_owned(),
        identity: VaultIdentity {
            resource_name: resource_name.to_owned(),
            subscription_id: subscription_id.to_owned(),
            resource_group: resource_group.to_owned(),
            location: location.to_owned(),
            resource_id,
            resource_type: resource_type.to_owned(),
            provider_namespace: provider_namespace.to_owned(),
        },
        aad_authority: fields.optional(AAD_AUTHORITY).to_owned(),
        aad_tenant_id: fields.optional(AAD_TENANT_ID).to_owned(),
        service_principal_client_id: fields.optional(SERVICE_PRINCIPAL_CLIENT_ID).to_owned(),
        endpoint: endpoint.to_owned(),
        agent_links: parse_agent_links(fields.optional(AGENT_LINKS)),
        transparency_log_key: Some(fields.optional(TRANSPARENCY_LOG_KEY)).filter(|k| !k.is_empty()).map(str::to_owned),
        certificate,
        certificate_der,
        private_key,
    })
}

fn has_extension(file_name: &str) -> bool {
    let name = file_name.as_bytes();
    name.len()
        .checked_sub(FILE_EXTENSION.len())
        .and_then(|start| name.get(start..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case(FILE_EXTENSION.as_bytes()))
}

/// The known children's text, by position in [`ELEMENTS`]; `None` when the element is absent.
struct Fields([Option<String>; 15]);

impl Fields {
    fn read(root: roxmltree::Node<'_, '_>) -> Result<Self, CredentialsError> {
        let mut values: [Option<String>; 15] = Default::default();
        for child in root.children().filter(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE)) {
            let Some(index) = ELEMENTS.iter().position(|name| *name == child.tag_name().name()) else {
                continue; // unknown members are ignored, as a data-contract reader would
            };
            let Some(slot) = values.get_mut(index) else { continue };
            if slot.is_some() {
                return Err(CredentialsError::DuplicateElement(ELEMENTS.get(index).copied().unwrap_or("?")));
            }
            *slot = Some(element_text(child));
        }
        Ok(Self(values))
    }

    fn get(&self, name: &str) -> Option<&str> {
        let index = ELEMENTS.iter().position(|n| *n == name)?;
        self.0.get(index)?.as_deref()
    }

    fn required(&self, name: &'static str) -> Result<&str, CredentialsError> {
        match self.get(name) {
            None => Err(CredentialsError::MissingElement(name)),
            Some("") => Err(CredentialsError::EmptyElement(name)),
            Some(value) => Ok(value),
        }
    }

    /// AAD fields and agent links: the engine does not use them, so their absence is no reason to refuse.
    fn optional(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// Trimmed text of an element; `i:nil="true"` (how the serializer writes a null string) reads as empty.
fn element_text(node: roxmltree::Node<'_, '_>) -> String {
    if node.attribute((XSI, "nil")).is_some_and(|v| v.trim() == "true") {
        return String::new();
    }
    let text: String = node.children().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
    text.trim().to_owned()
}

fn decode_base64(text: &str) -> Result<Zeroizing<Vec<u8>>, CredentialsError> {
    // Tolerate line breaks from editors or older writers.
    let compact: Zeroizing<Vec<u8>> = Zeroizing::new(text.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
    STANDARD_PAD_INDIFFERENT.decode(compact.as_slice()).map(Zeroizing::new).map_err(|_| CredentialsError::BadBase64)
}

/// Opens the PKCS#12 with the empty password (in either encoding) and returns the certificate that
/// belongs to the first private key.
fn read_pkcs12(bundle: &[u8]) -> Result<(Vec<u8>, PrivateKey), CredentialsError> {
    let contents = crate::pkcs12::open(bundle)?;
    if contents.certificates.is_empty() {
        return Err(CredentialsError::NoCertificate);
    }
    let key = contents.keys.first().ok_or(CredentialsError::NoPrivateKey)?;
    let private_key = PrivateKey::from_pkcs8_der(key)?;
    let mut first_error = None;
    for der in contents.certificates {
        let public = match Certificate::parse(&der).and_then(|c| c.public_key()) {
            Ok(public) => public,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        if private_key.matches(&public)? {
            return Ok((der, private_key));
        }
    }
    Err(first_error.unwrap_or(CredentialsError::KeyMismatch))
}

/// `Name,url;Name,url`. An entry without a comma is kept with an empty url rather than refusing the file.
fn parse_agent_links(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once(',') {
            Some((name, url)) => (name.trim().to_owned(), url.trim().to_owned()),
            None => (entry.to_owned(), String::new()),
        })
        .collect()
}

/// Keeps error messages to one short line.
fn quote(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}...", one_line.get(..cut).unwrap_or_default()),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_is_compared_on_bytes_without_slicing_inside_characters() {
        assert!(has_extension("a.VaultCredentials"));
        assert!(has_extension(".vaultcredentials"));
        assert!(has_extension("ééé.VAULTCREDENTIALS"));
        assert!(!has_extension("éVaultCredentials")); // 17 bytes, the last 17 start inside 'é'
        assert!(!has_extension("é"));
        assert!(!has_extension("a.VaultCredentials "));
    }

    #[test]
    fn agent_links_are_name_url_pairs() {
        assert_eq!(
            parse_agent_links(" A,http://a/?x=1,2 ; ;B,http://b;C;"),
            vec![
                ("A".to_owned(), "http://a/?x=1,2".to_owned()),
                ("B".to_owned(), "http://b".to_owned()),
                ("C".to_owned(), String::new())
            ]
        );
        assert!(parse_agent_links("").is_empty());
    }

    #[test]
    fn quotes_are_one_short_line() {
        assert_eq!(quote("a\nb"), "a b");
        let long = "é".repeat(500);
        assert_eq!(quote(&long).chars().count(), MAX_QUOTE + 3);
    }
}
