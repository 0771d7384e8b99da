//! The real world behind the engine's ports: the system clock, the disks, files, the OS random
//! source. The engine records whatever these return.

mod folders;

pub use folders::{DiskFolders, free_bytes};

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};
use regent_engine::model::UnreadableKind;
use regent_engine::ports::{Clock, FileReader, Randomness};

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

pub struct LocalFiles;

impl FileReader for LocalFiles {
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, (UnreadableKind, String)> {
        let fail = |e: std::io::Error| (regent_engine::service::unreadable_kind(&e), e.to_string());
        let metadata = std::fs::metadata(path).map_err(fail)?;
        if metadata.is_dir() {
            return Err((UnreadableKind::IsDirectory, format!("{} is a directory", path.display())));
        }
        if metadata.len() > limit {
            return Err((UnreadableKind::TooLarge, format!("{} bytes; the limit is {limit}", metadata.len())));
        }
        let file = std::fs::File::open(path).map_err(fail)?;
        let mut bytes = Vec::new();
        // Bounded even if the file grows between the size check and the read.
        file.take(limit + 1).read_to_end(&mut bytes).map_err(fail)?;
        if bytes.len() as u64 > limit {
            return Err((UnreadableKind::TooLarge, format!("more than {limit} bytes")));
        }
        Ok(bytes)
    }
}

/// `user@host` of whoever runs this command, for the audit trail. The user comes from the
/// password database for the effective uid, not from `$USER`, which the caller controls.
pub fn actor() -> regent_store::Actor {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    regent_store::Actor { user: user_name(uid).unwrap_or_else(|| format!("uid{uid}")), host: host_name() }
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

pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Writes a generated passphrase to a new file (mode 0600, never overwriting).
pub struct NewSecretFiles;

impl regent_engine::ports::PassphraseFile for NewSecretFiles {
    fn save_new(&self, path: &Path, passphrase: &secrecy::SecretString) -> Result<std::path::PathBuf, String> {
        regent_secrets::write_new_secret_file(path, passphrase).map_err(|e| e.to_string())?;
        Ok(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}
