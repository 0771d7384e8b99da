//! The one error type of this crate. Every message is one line, says what to do next, and never
//! contains a secret: only paths, sealed ids (HMACs under the machine key) and counts appear in it.

use std::io;
use std::path::PathBuf;

/// Why a secrets operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// There is no machine key, so sealed values cannot be opened.
    #[error(
        "the machine key {path} is missing, so sealed secrets cannot be opened; restore machine.key from a backup, or enter the proxy password, credentials and passphrase again"
    )]
    KeyMissing { path: PathBuf },

    /// The machine key file does not hold exactly 32 bytes.
    #[error(
        "the machine key {path} holds {len} bytes, not 32; restore the original machine.key from a backup (a new key cannot open secrets sealed under the old one)"
    )]
    KeyWrongLength { path: PathBuf, len: u64 },

    /// The machine key file may be read or written by users other than its owner.
    #[error("the machine key {path} is open to other users (mode {mode:04o}); run `chmod 600 {path}` and try again")]
    KeyPermissions { path: PathBuf, mode: u32 },

    /// The machine key is not a regular file (a symlink, a directory, ...).
    #[error("the machine key {path} is not a regular file; replace it with the original machine.key file (not a link)")]
    KeyNotAFile { path: PathBuf },

    /// The sealed file for a reference is gone.
    #[error(
        "the sealed secret {id} is missing ({path}); restore it from a backup of the data directory, or enter the secret again"
    )]
    NotFound { id: String, path: PathBuf },

    /// Authentication failed: the value was sealed under another machine key, or the file was altered.
    #[error(
        "the sealed secret {path} cannot be opened: it was sealed under a different machine key or the file was altered; restore machine.key and this file from the same backup, or enter the secret again"
    )]
    Tampered { id: String, path: PathBuf },

    /// The sealed file was written by a newer format than this build knows.
    #[error(
        "the sealed secret {path} uses format version {version}, which this build of regent cannot read; upgrade regent"
    )]
    UnsupportedFormat { path: PathBuf, version: u8 },

    /// A reference that is not a sealed id (64 lowercase hex digits), e.g. from an edited log.
    #[error(
        "{shown:?} is not a sealed secret reference (64 lowercase hex digits); the log entry is damaged, enter the secret again"
    )]
    BadRef { shown: String },

    /// The secret is larger than anything this crate is meant to seal.
    #[error("the secret is {len} bytes, more than the {max} bytes regent seals; use a smaller value")]
    TooLarge { len: usize, max: usize },

    /// A folder that must already exist does not.
    #[error("the folder {path} does not exist; create it first, or choose a file in an existing folder")]
    DirMissing { path: PathBuf },

    /// The file to write already exists; it is never overwritten.
    #[error("{path} already exists and regent never overwrites it; choose a new file name, or move the old file away")]
    AlreadyExists { path: PathBuf },

    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}; check the path and that this user may use it")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The operating system's random number generator failed.
    #[error(
        "the operating system's random number generator failed ({source}); retry, and check the system if it persists"
    )]
    Random {
        #[source]
        source: getrandom::Error,
    },

    /// A stored passphrase verifier is not an Argon2id PHC string with at least the required cost.
    #[error("the passphrase verifier is not usable ({detail}); set the passphrase again")]
    BadVerifier { detail: String },

    /// A cryptographic primitive refused its input (should not happen with this crate's parameters).
    #[error("internal error in {what}; this is a bug in regent, please report it")]
    Crypto { what: &'static str },
}

impl SecretsError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SecretsError::Io { op, path: path.into(), source }
    }
}
