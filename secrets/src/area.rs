//! The secrets area: sealed values beside the log, one file per value, named by its id.
//!
//! File format (`<id>.sealed`, mode 0600):
//!
//! | bytes | content                                    |
//! |-------|--------------------------------------------|
//! | 8     | magic `RGNTSEAL`                           |
//! | 1     | format version (1)                         |
//! | 12    | random nonce                               |
//! | n+16  | AES-256-GCM ciphertext and tag             |
//!
//! The associated data is `version || kind name || id`, so a sealed value cannot be passed off as
//! another kind or under another id. The id is `hex(HMAC-SHA256(machine key, kind name || 0x00 ||
//! secret))`: the same secret gives the same id under the same key, and without the key the id
//! reveals nothing, not even to a brute force of a weak password.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::fsutil;
use crate::{MachineKey, OsRandom, SecretsError};

type HmacSha256 = Hmac<Sha256>;

/// The magic bytes a sealed file starts with.
pub const SEALED_MAGIC: &[u8; 8] = b"RGNTSEAL";
/// The sealed file format this build writes (and the only one it reads).
pub const SEALED_FORMAT_VERSION: u8 = 1;
/// The largest secret [`SecretsArea::seal`] accepts.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = SEALED_MAGIC.len() + 1 + NONCE_LEN;
const ID_HEX_LEN: usize = 64;
const SEALED_EXT: &str = "sealed";

/// What a sealed value is. Its name is part of the id and of the associated data, so it must
/// never change once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    ProxyPassword,
    CredentialsPrivateKey,
    Passphrase,
    /// The passphrase's Argon2id verifier: sealed, since an export is handed to others and a
    /// verifier lets a weak passphrase be guessed offline.
    PassphraseVerifier,
}

impl SecretKind {
    /// Every kind.
    pub const ALL: [SecretKind; 4] = [
        SecretKind::ProxyPassword,
        SecretKind::CredentialsPrivateKey,
        SecretKind::Passphrase,
        SecretKind::PassphraseVerifier,
    ];

    /// The stable name (the same as its serde name).
    pub const fn name(self) -> &'static str {
        match self {
            SecretKind::ProxyPassword => "proxy_password",
            SecretKind::CredentialsPrivateKey => "credentials_private_key",
            SecretKind::Passphrase => "passphrase",
            SecretKind::PassphraseVerifier => "passphrase_verifier",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an event records for a sealed value: only its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretRef {
    /// Lowercase hex HMAC-SHA256 under the machine key (64 characters).
    pub id: String,
}

/// The sealed values of one data directory, at `<data-dir>/secrets/`.
pub struct SecretsArea {
    dir: PathBuf,
    key: MachineKey,
}

impl fmt::Debug for SecretsArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsArea").field("dir", &self.dir).field("key", &self.key).finish()
    }
}

impl SecretsArea {
    /// The area's directory name inside the data directory.
    pub const DIR_NAME: &'static str = "secrets";

    /// Opens the secrets area of `data_dir` (which must exist), creating `secrets/` (mode 0700)
    /// if it is missing.
    ///
    /// Named `open_dir` rather than `open` because [`SecretsArea::open`] opens a sealed value.
    pub fn open_dir(data_dir: &Path, key: MachineKey) -> Result<SecretsArea, SecretsError> {
        fsutil::require_dir(data_dir)?;
        let dir = data_dir.join(Self::DIR_NAME);
        match std::fs::DirBuilder::new().mode(fsutil::DIR_MODE).create(&dir) {
            Ok(()) => fsutil::sync_dir(data_dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SecretsError::io("create the secrets folder", &dir, e)),
        }
        fsutil::require_dir(&dir)?;
        Ok(SecretsArea { dir, key })
    }

    /// The area's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the sealed file of `r` lives (whether or not it exists). Fails with
    /// [`SecretsError::BadRef`] for anything but a well-formed id, so a crafted id cannot name a
    /// file outside the area.
    pub fn sealed_path(&self, r: &SecretRef) -> Result<PathBuf, SecretsError> {
        check_id(&r.id)?;
        Ok(self.dir.join(format!("{}.{SEALED_EXT}", r.id)))
    }

    /// Seals `secret` as a `kind` and writes it atomically (temporary file, fsync, rename, fsync
    /// of the directory). Sealing the same secret again gives the same reference and rewrites the
    /// file under a fresh nonce.
    pub fn seal(&self, kind: SecretKind, secret: &[u8]) -> Result<SecretRef, SecretsError> {
        if secret.len() > MAX_SECRET_LEN {
            return Err(SecretsError::TooLarge { len: secret.len(), max: MAX_SECRET_LEN });
        }
        let id = hex::encode(self.mac(kind, secret)?.finalize().into_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        OsRandom.fill(&mut nonce)?;

        // Capacity for the tag up front, so the plaintext copy is never reallocated (and left
        // behind unwiped).
        let mut sealed = Zeroizing::new(Vec::with_capacity(secret.len() + TAG_LEN));
        sealed.extend_from_slice(secret);
        self.cipher()?
            .encrypt_in_place(&Nonce::from(nonce), &aad(kind, &id), &mut *sealed)
            .map_err(|_| SecretsError::Crypto { what: "AES-256-GCM sealing" })?;

        let r = SecretRef { id };
        let path = self.sealed_path(&r)?;
        let tmp = self.dir.join(format!(".{}.{}.tmp", r.id, fsutil::temp_suffix()?));
        let written = fsutil::create_new_private_file(&tmp)
            .and_then(|mut file| {
                fsutil::write_all_synced(&mut file, &[SEALED_MAGIC, &[SEALED_FORMAT_VERSION], &nonce, &sealed])
            })
            .map_err(|e| SecretsError::io("write the sealed secret", &tmp, e))
            .and_then(|()| {
                std::fs::rename(&tmp, &path)
                    .map_err(|e| SecretsError::io("put the sealed secret in place at", &path, e))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        fsutil::sync_dir(&self.dir)?;
        Ok(r)
    }

    /// Opens the value sealed as a `kind` under `r`. A missing file is
    /// [`SecretsError::NotFound`]; a file that does not authenticate under this machine key (another
    /// key, altered bytes, another kind) is [`SecretsError::Tampered`].
    pub fn open(&self, kind: SecretKind, r: &SecretRef) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let path = self.sealed_path(r)?;
        let tampered = || SecretsError::Tampered { id: r.id.clone(), path: path.clone() };
        let bytes = read_sealed(&path).map_err(|e| match e {
            ReadError::NotFound => SecretsError::NotFound { id: r.id.clone(), path: path.clone() },
            ReadError::Invalid => tampered(),
            ReadError::Io(e) => SecretsError::io("read the sealed secret", &path, e),
        })?;

        let (magic, rest) = bytes.split_first_chunk::<8>().ok_or_else(tampered)?;
        if magic != SEALED_MAGIC {
            return Err(tampered());
        }
        let (&version, rest) = rest.split_first().ok_or_else(tampered)?;
        if version != SEALED_FORMAT_VERSION {
            return Err(SecretsError::UnsupportedFormat { path, version });
        }
        let (nonce, ciphertext) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(tampered)?;
        if ciphertext.len() < TAG_LEN {
            return Err(tampered());
        }

        let mut plain = Zeroizing::new(ciphertext.to_vec());
        self.cipher()?
            .decrypt_in_place(&Nonce::from(*nonce), &aad(kind, &r.id), &mut *plain)
            .map_err(|_| tampered())?;

        // The id is the HMAC of what was sealed: check it, so a file can only ever hold the value
        // its name promises (the tag already binds the id; this also catches a sealing bug).
        let expected = hex::decode(&r.id).map_err(|_| tampered())?;
        self.mac(kind, &plain)?.verify_slice(&expected).map_err(|_| tampered())?;
        Ok(plain)
    }

    /// Removes the sealed file of `r`, e.g. once a newer value has replaced it and no event that
    /// is still needed refers to it (the engine knows which; this crate does not). Removing what
    /// is already gone is not an error.
    pub fn remove(&self, r: &SecretRef) -> Result<(), SecretsError> {
        let path = self.sealed_path(r)?;
        match std::fs::remove_file(&path) {
            Ok(()) => fsutil::sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SecretsError::io("remove the sealed secret", &path, e)),
        }
    }

    /// How many sealed values the area holds.
    pub fn count(&self) -> Result<usize, SecretsError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| SecretsError::io("list", &self.dir, e))?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(&format!(".{SEALED_EXT}")))
            .count())
    }

    fn mac(&self, kind: SecretKind, secret: &[u8]) -> Result<HmacSha256, SecretsError> {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.key.expose())
            .map_err(|_| SecretsError::Crypto { what: "HMAC-SHA256 keying" })?;
        mac.update(kind.name().as_bytes());
        mac.update(&[0]);
        mac.update(secret);
        Ok(mac)
    }

    fn cipher(&self) -> Result<Aes256Gcm, SecretsError> {
        Aes256Gcm::new_from_slice(self.key.expose()).map_err(|_| SecretsError::Crypto { what: "AES-256-GCM keying" })
    }
}

/// `version || kind name || id`: unambiguous, as the version and the id have fixed lengths.
fn aad(kind: SecretKind, id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + kind.name().len() + id.len());
    aad.push(SEALED_FORMAT_VERSION);
    aad.extend_from_slice(kind.name().as_bytes());
    aad.extend_from_slice(id.as_bytes());
    aad
}

fn check_id(id: &str) -> Result<(), SecretsError> {
    let well_formed = id.len() == ID_HEX_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if well_formed {
        return Ok(());
    }
    // Shown escaped and cut short: it came from outside and is only there to help find the entry.
    let mut shown: String = id.chars().take(16).collect();
    if id.chars().nth(16).is_some() {
        shown.push('…');
    }
    Err(SecretsError::BadRef { shown })
}

enum ReadError {
    NotFound,
    Invalid,
    Io(io::Error),
}

fn read_sealed(path: &Path) -> Result<Vec<u8>, ReadError> {
    const MAX_FILE_LEN: u64 = (HEADER_LEN + MAX_SECRET_LEN + TAG_LEN) as u64;
    let file = match fsutil::open_read_nofollow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::NotFound),
        // Not ours: we only ever write regular files there.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(ReadError::Invalid),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::Invalid);
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(ReadError::Invalid);
    }
    Ok(bytes)
}
