//! The engine's only ways to reach the world. The binary wires real implementations; tests wire
//! their own. Whatever these return is recorded in the step's event, so replay needs none of them.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use regent_store::{EventStore, StoreError};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::anchoring::HeadSigner;
use crate::model::{
    FolderFacts, PinAnswer, ProbeAnswer, RemovalAnswer, SealedRef, SecretKind, UnreadableKind, VaultAnswer,
    VaultIdentity,
};

pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
}

/// Opens the agent's log. The engine holds it only while it reads and appends, never while it
/// waits on the network, so other regent commands are not kept waiting behind a slow vault.
pub trait LogAccess {
    fn open(&self) -> Result<EventStore, StoreError>;
}

pub trait FolderProbe {
    /// Looks at a folder, changing nothing. A missing folder is described by its nearest existing
    /// parent (`creatable`, its filesystem and free space).
    fn probe(&self, path: &Path) -> FolderFacts;
    /// Creates a folder and its missing parents (once the step that chose it is accepted).
    fn create(&self, path: &Path) -> Result<(), String>;
}

pub trait FileReader {
    /// Reads a whole regular file of at most `limit` bytes. Anything else (a FIFO, a device, a
    /// directory) is refused without blocking.
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, (UnreadableKind, String)>;
}

pub trait Randomness {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String>;
}

/// Keeps sealed values beside the log; the log records only the reference.
pub trait SecretKeeper {
    fn seal(&self, kind: SecretKind, secret: &[u8]) -> Result<SealedRef, String>;
    fn open(&self, kind: SecretKind, sealed: &SealedRef) -> Result<Zeroizing<Vec<u8>>, String>;
    /// Removes a sealed value (superseded: it must not stay decryptable). Gone already is fine.
    fn remove(&self, sealed: &SealedRef) -> Result<(), String>;
}

/// A generated passphrase's file, which the operator is told to keep: it must exist only if the
/// log says so. Written beside its place first, moved into place (never replacing anything) once
/// the step is recorded, discarded if the step is refused.
pub trait PassphraseFile {
    /// Checks that `path` is free and its folder exists, writing nothing; returns it resolved.
    fn check(&self, path: &Path) -> Result<PathBuf, String>;
    /// Checks that `path` is free and its folder exists, and writes the passphrase beside it.
    /// Called only while the log is held (see `regent_secrets::prepare_kept_file`).
    fn prepare(&self, path: &Path, passphrase: &SecretString) -> Result<PreparedFile, String>;
    /// Moves it into place; returns the path, resolved.
    fn place(&self, file: &PreparedFile) -> Result<PathBuf, String>;
    fn discard(&self, file: &PreparedFile);
    /// Whether a file for `path` waits beside it (a run was killed before moving it).
    fn pending(&self, path: &Path) -> bool;
    /// Moves the waiting file holding `passphrase` into place, if `path` is still free.
    fn finish(&self, path: &Path, passphrase: &SecretString) -> Result<bool, String>;
}

/// A file written beside its place, not yet in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedFile {
    pub target: PathBuf,
    pub temporary: PathBuf,
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

/// Everything telling a vault of an unregistration needs: the machine speaking for itself, and
/// the request id every retry of this call shares.
pub struct UnregisterRequest {
    pub signer: HeadSigner,
    pub request_id: String,
}

pub trait VaultClient {
    fn register(&self, request: &RegisterRequest) -> VaultAnswer;
    fn check_pin(&self, check: &PinCheck) -> PinAnswer;
    /// Whether the vault answers `signer` through `signer.proxy` (the proxy being tried): a cheap
    /// signed read of the machine's anchored head, changing nothing there.
    fn probe(&self, signer: &HeadSigner) -> ProbeAnswer;
    /// Tells the vault the machine unregistered. A client that cannot reach a vault says so.
    fn unregister(&self, request: &UnregisterRequest) -> RemovalAnswer {
        RemovalAnswer::Refused {
            reason: crate::Reason::VaultUnreachable,
            detail: format!("vault {} was not asked: this command does not reach it", request.signer.vault),
        }
    }
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
    /// The build running the command, recorded beside each step it writes. Given as data by the
    /// binary (which knows its version and commit): the engine has no build of its own to ask.
    pub build: crate::model::BuildId,
}
