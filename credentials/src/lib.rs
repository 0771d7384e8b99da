//! Vault credentials files: the XML the user downloads from a vault and hands to the agent.
//!
//! Pure code, no file or network I/O, so the engine can record what it parsed and replay without the world:
//! - [`parse`] reads a file (from the real portal or from this project's vault service) into
//!   [`VaultCredentials`], refusing anything malformed with a typed [`CredentialsError`];
//! - [`PrivateKey::sign`] and [`verify_signature`] prove possession of the certificate's key at registration;
//! - [`issue`] makes a new file, for the project's own vault service and for tests.
//!
//! What may be recorded ([`CredentialsFacts`], [`VaultIdentity`], [`CertificateFacts`]) is kept apart from
//! the key ([`PrivateKey`]), which has no Serialize and prints as `<redacted>`.

mod cert;
mod error;
mod format;
mod issue;
mod key;
mod model;
mod parse;
mod pkcs12;

pub use error::CredentialsError;
pub use issue::{IssueRequest, IssuedCredentials, issue};
pub use key::{KeyAlgorithm, PrivateKey, verify_signature};
pub use model::{CertificateFacts, CredentialsFacts, Validity, VaultCredentials, VaultIdentity};
pub use parse::{FILE_EXTENSION, MAX_FILE_SIZE, parse};
