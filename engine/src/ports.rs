//! The engine's only ways to reach the world. The binary wires real implementations; tests wire
//! their own. Whatever these return is recorded in the step's event, so replay needs none of them.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::model::{FolderFacts, PinAnswer, SealedRef, SecretKind, UnreadableKind, VaultAnswer, VaultIdentity};

pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
}

pub trait FolderProbe {
    /// Looks at a folder, creating it first when `create` is set and it is missing.
    fn probe(&self, path: &Path, create: bool) -> FolderFacts;
}

pub trait FileReader {
    /// Reads a whole file of at most `limit` bytes.
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, (UnreadableKind, String)>;
}

pub trait Randomness {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String>;
}

/// Keeps sealed values beside the log; the log records only the reference.
pub trait SecretKeeper {
    fn seal(&self, kind: SecretKind, secret: &[u8]) -> Result<SealedRef, String>;
    fn open(&self, kind: SecretKind, sealed: &SealedRef) -> Result<Zeroizing<Vec<u8>>, String>;
}

/// Writes a generated passphrase to a new file for the operator (mode 0600, never overwriting).
pub trait PassphraseFile {
    /// Returns the path written, resolved.
    fn save_new(&self, path: &Path, passphrase: &SecretString) -> Result<PathBuf, String>;
}

/// The proxy as the vault client must use it, password opened.
pub struct ProxyConfig {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, SecretString)>,
}

/// Everything a registration call needs.
pub struct RegisterRequest {
    pub endpoint: String,
    pub vault: VaultIdentity,
    pub thumbprint: String,
    pub machine_name: String,
    /// The credentials' private key (PKCS#8 DER), to prove possession by signing.
    pub private_key: Zeroizing<Vec<u8>>,
    pub proxy: Option<ProxyConfig>,
    /// The same for every retry of this registration, so the vault answers a retry with the first answer.
    pub request_id: String,
}

/// Everything a security PIN check needs. The check is signed with the key the machine registered
/// with, like every other call that changes the vault's state.
pub struct PinCheck {
    pub endpoint: String,
    pub vault: String,
    pub machine_id: String,
    /// The certificate the machine registered with (lowercase hex SHA-256).
    pub thumbprint: String,
    /// That certificate's private key (PKCS#8 DER), to sign the check.
    pub private_key: Zeroizing<Vec<u8>>,
    pub pin: SecretString,
    pub proxy: Option<ProxyConfig>,
    /// The same for every retry of this check, so a retry after a lost answer gets the first answer
    /// instead of finding the PIN used up.
    pub request_id: String,
}

pub trait VaultClient {
    fn register(&self, request: &RegisterRequest) -> VaultAnswer;
    fn check_pin(&self, check: &PinCheck) -> PinAnswer;
}

/// All the ports, borrowed for one command run.
pub struct World<'a> {
    pub clock: &'a dyn Clock,
    pub folders: &'a dyn FolderProbe,
    pub files: &'a dyn FileReader,
    pub random: &'a dyn Randomness,
    pub secrets: &'a dyn SecretKeeper,
    pub passphrase_files: &'a dyn PassphraseFile,
    pub vault: &'a dyn VaultClient,
    /// This machine's name, as the vault lists it.
    pub machine_name: String,
}

/// The real keeper: sealed files in the secrets area beside the log, under the machine key.
impl SecretKeeper for regent_secrets::SecretsArea {
    fn seal(&self, kind: SecretKind, secret: &[u8]) -> Result<SealedRef, String> {
        let sealed = regent_secrets::SecretsArea::seal(self, area_kind(kind), secret).map_err(|e| e.to_string())?;
        Ok(SealedRef { id: sealed.id })
    }

    fn open(&self, kind: SecretKind, sealed: &SealedRef) -> Result<Zeroizing<Vec<u8>>, String> {
        let reference = regent_secrets::SecretRef { id: sealed.id.clone() };
        regent_secrets::SecretsArea::open(self, area_kind(kind), &reference).map_err(|e| e.to_string())
    }
}

fn area_kind(kind: SecretKind) -> regent_secrets::SecretKind {
    match kind {
        SecretKind::ProxyPassword => regent_secrets::SecretKind::ProxyPassword,
        SecretKind::CredentialsPrivateKey => regent_secrets::SecretKind::CredentialsPrivateKey,
        SecretKind::Passphrase => regent_secrets::SecretKind::Passphrase,
    }
}
