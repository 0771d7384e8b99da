//! The machine key: 32 random bytes in `<data-dir>/machine.key`, mode 0600.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretBox};

use crate::fsutil;
use crate::{OsRandom, SecretsError};

/// Length of the machine key in bytes (an AES-256 key).
pub const KEY_LEN: usize = 32;

/// The key every sealed value on this machine is sealed under. Held on the heap and wiped on
/// drop; `Debug` prints nothing of it, and it is deliberately not `Clone`.
pub struct MachineKey {
    bytes: SecretBox<[u8; KEY_LEN]>,
}

impl fmt::Debug for MachineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MachineKey([REDACTED])")
    }
}

impl MachineKey {
    /// The key file's name inside the data directory.
    pub const FILE_NAME: &'static str = "machine.key";

    /// Where the key of `data_dir` lives.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(Self::FILE_NAME)
    }

    /// Loads the key of `data_dir`; never creates one. A missing key is
    /// [`SecretsError::KeyMissing`], which callers report (sealed values are then unreadable).
    pub fn load(data_dir: &Path) -> Result<MachineKey, SecretsError> {
        read_key(&Self::path_in(data_dir))
    }

    /// Loads the key of `data_dir`, creating it first if there is none: 32 bytes from the OS
    /// CSPRNG, written to a new file (O_CREAT|O_EXCL, mode 0600), fsynced, then linked into place
    /// without overwriting anything, and the directory fsynced. If another process creates the key
    /// at the same moment, both end up with the one that won. `data_dir` must exist.
    pub fn load_or_create(data_dir: &Path) -> Result<MachineKey, SecretsError> {
        let path = Self::path_in(data_dir);
        match read_key(&path) {
            Err(SecretsError::KeyMissing { .. }) => {}
            other => return other,
        }
        match create_key(data_dir, &path)? {
            Some(key) => Ok(key),
            // Someone else created it between our look and our link: use theirs.
            None => read_key(&path),
        }
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        self.bytes.expose_secret()
    }
}

fn read_key(path: &Path) -> Result<MachineKey, SecretsError> {
    let mut file = match fsutil::open_read_nofollow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SecretsError::KeyMissing { path: path.to_path_buf() });
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SecretsError::KeyNotAFile { path: path.to_path_buf() });
        }
        Err(e) => return Err(SecretsError::io("open the machine key", path, e)),
    };
    let meta = file.metadata().map_err(|e| SecretsError::io("look at the machine key", path, e))?;
    if !meta.file_type().is_file() {
        return Err(SecretsError::KeyNotAFile { path: path.to_path_buf() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::KeyPermissions { path: path.to_path_buf(), mode });
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(SecretsError::KeyWrongLength { path: path.to_path_buf(), len: meta.len() });
    }
    let mut read = Ok(());
    let bytes = SecretBox::<[u8; KEY_LEN]>::init_with_mut(|k| read = file.read_exact(k));
    read.map_err(|e| SecretsError::io("read the machine key", path, e))?;
    let mut extra = [0u8; 1];
    match file.read(&mut extra) {
        Ok(0) => Ok(MachineKey { bytes }),
        Ok(_) => {
            Err(SecretsError::KeyWrongLength { path: path.to_path_buf(), len: meta.len().max(KEY_LEN as u64 + 1) })
        }
        Err(e) => Err(SecretsError::io("read the machine key", path, e)),
    }
}

/// Creates the key; `None` when a key appeared at `path` meanwhile.
fn create_key(data_dir: &Path, path: &Path) -> Result<Option<MachineKey>, SecretsError> {
    fsutil::require_dir(data_dir)?;
    let mut rng = Ok(());
    let key = MachineKey { bytes: SecretBox::<[u8; KEY_LEN]>::init_with_mut(|k| rng = OsRandom.fill(k)) };
    rng?;

    let tmp = data_dir.join(format!(".{}.{}.tmp", MachineKey::FILE_NAME, fsutil::temp_suffix()?));
    let written = fsutil::create_new_private_file(&tmp)
        .and_then(|mut file| fsutil::write_all_synced(&mut file, &[key.expose()]))
        .map_err(|e| SecretsError::io("write the new machine key", &tmp, e))
        // A link never replaces an existing file, so a key that is already there wins.
        .and_then(|()| match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(SecretsError::io("put the new machine key in place at", path, e)),
        });
    // The temporary name goes whatever happened; the key lives on under `path` if linked.
    let _ = std::fs::remove_file(&tmp);
    if !written? {
        return Ok(None);
    }
    fsutil::sync_dir(data_dir)?;
    Ok(Some(key))
}
