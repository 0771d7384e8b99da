//! The admin token: random, kept in `DIR/admin.token` (mode 0600), compared in constant time.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{AdminError, VaultError};

/// The token file's name inside the service's data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A token is at most this long; anything longer in a file is not one of ours.
const MAX_TOKEN_LEN: usize = 512;

/// What the service keeps of its token: only digests, so the token itself is not held in memory
/// after start.
pub(crate) struct AdminKey {
    /// SHA-256 of the token. Comparing digests in constant time leaks neither content nor length.
    digest: [u8; 32],
    /// Key for the PIN digests, derived from the token: PIN digests in the log cannot be brute-forced
    /// from the log alone (8 digits are only 10^8 guesses).
    pin_key: Zeroizing<[u8; 32]>,
}

impl AdminKey {
    fn from_token(token: &str) -> AdminKey {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut pin_key = Zeroizing::new([0u8; 32]);
        // HMAC accepts any key length, so this cannot fail; a failure would leave a zero key, which
        // still works, only without the extra protection.
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()) {
            mac.update(b"regent-vault pin digest key v1");
            pin_key.copy_from_slice(&mac.finalize().into_bytes());
        }
        AdminKey { digest, pin_key }
    }

    /// SHA-256 of the token: what a shared database records, to refuse a process given another token.
    pub(crate) fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether `presented` is the admin token, in time independent of where they differ.
    pub(crate) fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.digest))
    }

    pub(crate) fn pin_key(&self) -> &[u8; 32] {
        &self.pin_key
    }
}

/// Loads the token of `dir`, creating it on first start. Returns the key and whether it was created.
pub(crate) fn load_or_create(dir: &Path) -> Result<(AdminKey, PathBuf, bool), VaultError> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    match read_existing(&path)? {
        Some(token) => Ok((AdminKey::from_token(&token), path, false)),
        None => {
            let token =
                new_token().map_err(|source| VaultError::TokenFile { action: "create", path: path.clone(), source })?;
            match write_new(dir, &path, &token) {
                Ok(()) => Ok((AdminKey::from_token(&token), path, true)),
                // Another process started on the same directory at the same moment: its token wins.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_existing(&path)? {
                    Some(token) => Ok((AdminKey::from_token(&token), path, false)),
                    None => Err(VaultError::BadTokenFile { path }),
                },
                Err(source) => Err(VaultError::TokenFile { action: "write", path, source }),
            }
        }
    }
}

/// Loads the token of `dir` if it has one, creating nothing: a move binds the database to it.
pub(crate) fn load_existing(dir: &Path) -> Result<Option<AdminKey>, VaultError> {
    Ok(read_existing(&dir.join(ADMIN_TOKEN_FILE))?.map(|token| AdminKey::from_token(&token)))
}

fn read_existing(path: &Path) -> Result<Option<Zeroizing<String>>, VaultError> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(VaultError::TokenFile { action: "open", path: path.to_path_buf(), source }),
    };
    warn_if_shared(&file, path);
    let mut text = Zeroizing::new(String::new());
    Read::by_ref(&mut file)
        .take(MAX_TOKEN_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|source| VaultError::TokenFile { action: "read", path: path.to_path_buf(), source })?;
    let token = Zeroizing::new(text.trim().to_string());
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(VaultError::BadTokenFile { path: path.to_path_buf() });
    }
    Ok(Some(token))
}

/// Warns when a file holding a secret is readable by others than its owner.
pub(crate) fn warn_if_shared(file: &fs::File, path: &Path) {
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "a secret file is readable by others; chmod 600 it");
    }
}

/// 32 bytes from the OS random source, base64url: 43 characters, safe in a header and a shell.
fn new_token() -> io::Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|e| io::Error::other(format!("the OS random source failed: {e}")))?;
    Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_slice())))
}

/// Writes a secret (the token, the checkpoint key) to a private temporary file, syncs it, then
/// links it into place, which never replaces an existing file: a crash leaves either no file or a
/// complete one.
pub(crate) fn write_new(dir: &Path, path: &Path, token: &str) -> io::Result<()> {
    // Unique to this call, not only to this process: two services starting in one process on one
    // directory (tests, `BackgroundServer`) would otherwise remove and overwrite each other's file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map_or_else(|| ADMIN_TOKEN_FILE.into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        // Made as every key-holding file is: exactly 0600, never over or through a link.
        let mut file = regent_secrets::create_new_private_file(&tmp)?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    written?;
    fs::File::open(dir)?.sync_all()
}

/// Reads an admin token from a file (the CLI's `--token-file`): the first line, trimmed.
pub fn read_token_file(path: &Path) -> Result<SecretString, AdminError> {
    let fail = |detail: String| AdminError::TokenFile { path: path.to_path_buf(), detail };
    let mut file = fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut text = Zeroizing::new(String::new());
    Read::by_ref(&mut file)
        .take(MAX_TOKEN_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(fail("it holds no token".into()));
    }
    Ok(SecretString::from(token.to_string()))
}

/// The header value for a token; the caller must not log it.
pub(crate) fn bearer(token: &SecretString) -> Zeroizing<String> {
    Zeroizing::new(format!("Bearer {}", token.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_once_private_and_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (key, path, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let token = read_token_file(&path).unwrap();
        assert!(key.accepts(token.expose_secret()));
        assert!(!key.accepts("nope"));
        assert!(!key.accepts(""));
        let (again, _, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert!(again.accepts(token.expose_secret()));
        assert_eq!(again.pin_key(), key.pin_key());
    }

    #[test]
    fn two_starts_at_once_in_one_process_agree_on_the_token_in_the_file() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(2);
            let keys: Vec<AdminKey> = std::thread::scope(|scope| {
                let starts: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            load_or_create(dir.path()).unwrap().0
                        })
                    })
                    .collect();
                starts.into_iter().map(|start| start.join().unwrap()).collect()
            });
            let token = read_token_file(&dir.path().join(ADMIN_TOKEN_FILE)).unwrap();
            assert!(keys.iter().all(|key| key.accepts(token.expose_secret())), "both hold the token in the file");
        }
    }

    #[test]
    fn a_garbled_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(ADMIN_TOKEN_FILE), "\n  \n").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(VaultError::BadTokenFile { .. })));
    }
}
