//! The real world behind the engine's ports: the system clock, the disks, files, the OS random
//! source, the sealed files beside the log. The engine records whatever these return.

mod folders;

pub use folders::{DiskFolders, free_bytes};

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use regent_engine::model::{SealedRef, SecretKind, UnreadableKind};
use regent_engine::ports::{Clock, FileReader, PreparedFile, Randomness, SecretKeeper};
use regent_secrets::{SecretRef, SecretsArea, Zeroizing};

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

pub struct OsRandom;

impl Randomness for OsRandom {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String> {
        getrandom::fill(bytes).map_err(|e| e.to_string())
    }
}

/// The real keeper: sealed files in the secrets area beside the log, under the machine key.
pub struct SealedFiles<'a>(pub &'a SecretsArea);

impl SecretKeeper for SealedFiles<'_> {
    fn seal(&self, kind: SecretKind, secret: &[u8]) -> Result<SealedRef, String> {
        let sealed = self.0.seal(area_kind(kind), secret).map_err(|e| e.to_string())?;
        Ok(SealedRef { id: sealed.id })
    }

    fn open(&self, kind: SecretKind, sealed: &SealedRef) -> Result<Zeroizing<Vec<u8>>, String> {
        self.0.open(area_kind(kind), &SecretRef { id: sealed.id.clone() }).map_err(|e| e.to_string())
    }

    fn remove(&self, sealed: &SealedRef) -> Result<(), String> {
        self.0.remove(&SecretRef { id: sealed.id.clone() }).map_err(|e| e.to_string())
    }
}

fn area_kind(kind: SecretKind) -> regent_secrets::SecretKind {
    match kind {
        SecretKind::ProxyPassword => regent_secrets::SecretKind::ProxyPassword,
        SecretKind::CredentialsPrivateKey => regent_secrets::SecretKind::CredentialsPrivateKey,
        SecretKind::Passphrase => regent_secrets::SecretKind::Passphrase,
        SecretKind::PassphraseVerifier => regent_secrets::SecretKind::PassphraseVerifier,
    }
}

pub struct LocalFiles;

impl FileReader for LocalFiles {
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, (UnreadableKind, String)> {
        let fail = |e: std::io::Error| (regent_engine::service::unreadable_kind(&e), e.to_string());
        let file = open_regular(path).map_err(|e| match e {
            Opened::Io(e) => fail(e),
            Opened::Directory => (UnreadableKind::IsDirectory, format!("{} is a directory", path.display())),
            Opened::Special(what) => {
                (UnreadableKind::Other, format!("{} is {what}, not a regular file", path.display()))
            }
        })?;
        let metadata = file.metadata().map_err(fail)?;
        if metadata.len() > limit {
            return Err((UnreadableKind::TooLarge, format!("{} bytes; the limit is {limit}", metadata.len())));
        }
        let mut bytes = Vec::new();
        // Bounded even if the file grows between the size check and the read.
        file.take(limit + 1).read_to_end(&mut bytes).map_err(fail)?;
        if bytes.len() as u64 > limit {
            return Err((UnreadableKind::TooLarge, format!("more than {limit} bytes")));
        }
        Ok(bytes)
    }
}

/// Why a file to read is not one.
pub enum Opened {
    Io(std::io::Error),
    Directory,
    /// A FIFO, a socket, a device: reading one can block forever (while the store is held).
    Special(&'static str),
}

/// Opens a regular file for reading. A FIFO or a device is opened without blocking
/// (`O_NONBLOCK`: opening a FIFO with no writer would wait for one) and refused, so nothing
/// waits on it.
pub fn open_regular(path: &Path) -> Result<std::fs::File, Opened> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path).map_err(
            |e| if e.kind() == std::io::ErrorKind::IsADirectory { Opened::Directory } else { Opened::Io(e) },
        )?;
    let kind = file.metadata().map_err(Opened::Io)?.file_type();
    if kind.is_dir() {
        return Err(Opened::Directory);
    }
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "a special file"
        };
        return Err(Opened::Special(what));
    }
    // Reads of a regular file never block; clear the flag anyway so no read can return EAGAIN.
    // SAFETY: fcntl on a descriptor this File owns; F_SETFL takes an int.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// `user@host` of whoever runs this command, for the audit trail. The user comes from the
/// password database for the effective uid, not from `$USER`, which the caller controls.
pub fn actor() -> regent_store::Actor {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    regent_store::Actor { user: user_name(uid).unwrap_or_else(|| format!("uid{uid}")), host: regent_store::host_name() }
}

fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the sizes given; on success `result` points at `pwd`,
    // whose strings live in `buf`, which outlives their use below.
    let rc = unsafe { libc::getpwuid_r(uid, pwd.as_mut_ptr(), buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr((*result).pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The path with its folder resolved, so that the place recorded is where the file really is.
fn resolved(path: &Path) -> PathBuf {
    match (path.parent().and_then(|p| std::fs::canonicalize(p).ok()), path.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// A generated passphrase's file (mode 0600): beside its place until the step is recorded, then
/// moved into place without replacing anything (see `regent_secrets::prepare_kept_file`).
pub struct KeptPassphraseFiles;

impl regent_engine::ports::PassphraseFile for KeptPassphraseFiles {
    fn check(&self, path: &Path) -> Result<PathBuf, String> {
        let target = resolved(path);
        regent_secrets::check_kept_file(&target).map_err(|e| e.to_string())?;
        Ok(target)
    }

    fn prepare(&self, path: &Path, passphrase: &secrecy::SecretString) -> Result<PreparedFile, String> {
        let target = resolved(path);
        let pending = regent_secrets::prepare_kept_file(&target, passphrase).map_err(|e| e.to_string())?;
        Ok(PreparedFile { target, temporary: pending.temporary().to_path_buf() })
    }

    fn place(&self, file: &PreparedFile) -> Result<PathBuf, String> {
        regent_secrets::PendingFile::waiting(&file.target, &file.temporary).place().map_err(|e| e.to_string())?;
        Ok(file.target.clone())
    }

    fn discard(&self, file: &PreparedFile) {
        regent_secrets::PendingFile::waiting(&file.target, &file.temporary).discard();
    }

    fn pending(&self, path: &Path) -> bool {
        !path.exists() && regent_secrets::kept_file_pending(path)
    }

    fn finish(&self, path: &Path, passphrase: &secrecy::SecretString) -> Result<bool, String> {
        regent_secrets::finish_kept_file(path, passphrase).map_err(|e| e.to_string())
    }
}
