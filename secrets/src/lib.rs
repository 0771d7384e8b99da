//! Secrets for regent: the machine key, sealed values beside the log, the passphrase verifier,
//! passphrase generation, and files written for the operator: private files and folders
//! ([`create_new_private_file`], [`write_new_private_file`], [`create_private_dir`]) are made here
//! for the whole program, so every file that holds a key is made one way.
//!
//! Rules kept here: no secret in plaintext on disk except where the operator asked for it
//! ([`write_new_secret_file`]), in error messages or in `Debug` output; the log never holds a
//! secret, not even sealed, only a [`SecretRef`] (an HMAC under the machine key) or a
//! [`PassphraseVerifier`]. A lost machine key is a typed error ([`SecretsError::KeyMissing`],
//! [`SecretsError::Tampered`]), never a crash.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod area;
mod error;
mod fsutil;
mod kept_file;
mod key;
mod passphrase;
mod random;

pub use area::{MAX_SECRET_LEN, SEALED_FORMAT_VERSION, SEALED_MAGIC, SecretKind, SecretRef, SecretsArea};
pub use error::SecretsError;
pub use fsutil::{create_new_private_file, create_private_dir, write_new_private_file};
pub use kept_file::{PendingFile, check_kept_file, finish_kept_file, kept_file_pending, prepare_kept_file};
pub use key::{KEY_LEN, MachineKey};
pub use passphrase::{
    ARGON2_M_KIB, ARGON2_OUTPUT_LEN, ARGON2_P, ARGON2_T, GENERATED_LEN, PassphraseFacts, PassphraseRules,
    PassphraseVerifier, generate_passphrase, write_new_secret_file,
};
pub use random::OsRandom;
/// Re-exported so callers name the same secret types this crate takes.
pub use secrecy::{ExposeSecret, SecretString};
pub use zeroize::Zeroizing;
