//! Small file helpers: exclusive creation with mode 0600, private folders, fsync of files and
//! directories. The private file and folder helpers are public: the binary and the vault service
//! make their key-holding files with them too.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::SecretsError;

/// The mode of every file this crate writes: read and write for the owner only.
pub(crate) const FILE_MODE: u32 = 0o600;
/// The mode of the secrets area directory.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Creates `path` as a new file only its owner may read and write: mode 0600 whatever the umask,
/// and never over anything already there, a symlink included (`O_CREAT|O_EXCL|O_NOFOLLOW`; an
/// existing path is `AlreadyExists`). For a file that goes into place under its final name once
/// whole, create it under a temporary name with this and move it (e.g. `tempfile::Builder::make_in`
/// and `persist_noclobber`).
pub fn create_new_private_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The umask can only remove bits; set exactly 0600 so a strange umask cannot leave the owner
    // without read access.
    if let Err(e) = file.set_permissions(Permissions::from_mode(FILE_MODE)) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Writes `pieces`, one after another, to a new file at `path` made by [`create_new_private_file`],
/// and syncs it and its folder, which must exist ([`SecretsError::DirMissing`]). A file that could not be written whole is removed; an existing one is
/// never touched ([`SecretsError::AlreadyExists`]).
pub fn write_new_private_file(path: &Path, pieces: &[&[u8]]) -> Result<(), SecretsError> {
    let parent = parent_dir(path);
    require_dir(parent)?;
    let mut file = match create_new_private_file(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SecretsError::AlreadyExists { path: path.to_path_buf() });
        }
        Err(e) => return Err(SecretsError::io("create", path, e)),
    };
    if let Err(e) = write_all_synced(&mut file, pieces) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(SecretsError::io("write", path, e));
    }
    sync_dir(parent)
}

/// Creates `dir` and its missing parents for files only their owner may use: mode 0700 (less what
/// the umask takes away). Folders that exist already are left as they are.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Opens `path` for reading without following a final symlink, and without blocking should it be
/// a FIFO.
pub(crate) fn open_read_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK).open(path)
}

/// Writes all the pieces and fsyncs the file.
pub(crate) fn write_all_synced(file: &mut File, pieces: &[&[u8]]) -> io::Result<()> {
    for piece in pieces {
        file.write_all(piece)?;
    }
    file.sync_all()
}

/// Fsyncs a directory so that a create, link or rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SecretsError> {
    let d = File::open(dir).map_err(|e| SecretsError::io("open the folder", dir, e))?;
    d.sync_all().map_err(|e| SecretsError::io("sync the folder", dir, e))
}

/// The directory a path's file lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fails with `DirMissing` unless `dir` is an existing directory.
pub(crate) fn require_dir(dir: &Path) -> Result<(), SecretsError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SecretsError::DirMissing { path: dir.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SecretsError::DirMissing { path: dir.to_path_buf() }),
        Err(e) => Err(SecretsError::io("look at the folder", dir, e)),
    }
}

/// A short random suffix for temporary file names.
pub(crate) fn temp_suffix() -> Result<String, SecretsError> {
    let mut bytes = [0u8; 8];
    crate::OsRandom.fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}
