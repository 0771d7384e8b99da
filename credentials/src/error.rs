//! One error type for the crate, so the engine maps a single enum to reason codes.

/// Why a credentials file was refused, or why signing or issuing failed.
///
/// Display is one line saying what is wrong; it never contains key material (details from the
/// PKCS#12 and X.509 decoders are structural: positions, lengths, algorithm names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The real agent refuses other extensions, so we do too.
    #[error("the file name must end in .VaultCredentials")]
    WrongExtension,
    #[error("the file is {size} bytes; a vault credentials file is at most {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    #[error("the file is not well-formed XML: {detail}")]
    NotXml { detail: String },
    #[error("the root element is <{found}>; a vault credentials file has <RSBackupVaultAADCreds>")]
    WrongRoot { found: String },
    #[error("the root element is in namespace \"{found}\", not the vault credentials namespace")]
    WrongNamespace { found: String },
    #[error("the required element <{0}> is missing")]
    MissingElement(&'static str),
    #[error("the required element <{0}> is empty")]
    EmptyElement(&'static str),
    #[error("the element <{0}> appears more than once")]
    DuplicateElement(&'static str),
    #[error("<ResourceId> is not a 64-bit integer")]
    BadResourceId,
    #[error("<ManagementCert> is not valid base64")]
    BadBase64,
    #[error("<ManagementCert> is not a PKCS#12 bundle readable with an empty password: {detail}")]
    BadPkcs12 { detail: String },
    #[error("the PKCS#12 bundle in <ManagementCert> holds no certificate")]
    NoCertificate,
    #[error("the PKCS#12 bundle in <ManagementCert> holds no private key")]
    NoPrivateKey,
    #[error("the certificate in <ManagementCert> does not parse: {detail}")]
    BadCertificate { detail: String },
    #[error("the private key in <ManagementCert> does not parse")]
    BadPrivateKey,
    #[error("unsupported key algorithm {algorithm}; RSA and ECDSA P-256 are supported")]
    UnsupportedKey { algorithm: String },
    #[error("no certificate in <ManagementCert> matches its private key")]
    KeyMismatch,
    #[error("signing failed")]
    SigningFailed,
    #[error("the signature does not verify against the certificate")]
    BadSignature,
    #[error("invalid issue request: {0}")]
    InvalidRequest(String),
    #[error("issuing credentials failed: {0}")]
    IssueFailed(String),
}

impl CredentialsError {
    /// Stable reason code recorded in rejection events; the wording of Display may change, this may not.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongExtension
            | Self::TooLarge { .. }
            | Self::NotUtf8
            | Self::NotXml { .. }
            | Self::WrongRoot { .. }
            | Self::WrongNamespace { .. }
            | Self::MissingElement(_)
            | Self::EmptyElement(_)
            | Self::DuplicateElement(_)
            | Self::BadResourceId
            | Self::BadBase64
            | Self::BadPkcs12 { .. }
            | Self::NoCertificate
            | Self::NoPrivateKey
            | Self::BadCertificate { .. }
            | Self::BadPrivateKey
            | Self::UnsupportedKey { .. }
            | Self::KeyMismatch => "credentials_invalid",
            Self::SigningFailed => "credentials_signing_failed",
            Self::BadSignature => "credentials_signature_invalid",
            Self::InvalidRequest(_) | Self::IssueFailed(_) => "credentials_issue_failed",
        }
    }
}
