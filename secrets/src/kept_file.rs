//! A secret file the operator is told to keep (a generated passphrase), made so that it exists
//! only if the log says so.
//!
//! The file is written under a temporary name beside its place first ([`prepare_kept_file`]); the
//! caller records the step; only then is it moved into place, never replacing anything
//! ([`PendingFile::place`]: `renameat2(RENAME_NOREPLACE)`, or `link` then `unlink` where that is
//! not supported, both through `tempfile`). A refused step discards it. A run killed between the
//! record and the move leaves it under its temporary name; the next run finds the one whose
//! contents are the recorded secret and finishes the move ([`finish_kept_file`]).
//!
//! The caller writes, places and finishes these files only while it holds the log (one regent at
//! a time), so a waiting file that is not the recorded one was left by a run killed before it
//! recorded anything: it is removed, never left holding a secret nobody was told of.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::SecretsError;
use crate::fsutil;

/// The temporary name's ending: `.<file name>.<random>.regent-pending`.
const PENDING_SUFFIX: &str = ".regent-pending";
/// The largest pending file read back (a generated passphrase and its line break are 33 bytes).
const MAX_PENDING_BYTES: u64 = 4096;

/// A secret written beside its place, not yet in it.
#[derive(Debug)]
pub struct PendingFile {
    target: PathBuf,
    temporary: PathBuf,
}

impl PendingFile {
    /// A file prepared earlier (by this process or, when its place is being finished, another),
    /// named by its two paths.
    pub fn waiting(target: &Path, temporary: &Path) -> PendingFile {
        PendingFile { target: target.to_path_buf(), temporary: temporary.to_path_buf() }
    }

    /// Where the file goes.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where it waits.
    pub fn temporary(&self) -> &Path {
        &self.temporary
    }

    /// Moves the file into place without replacing anything (a file created at the target
    /// meanwhile is kept, and this one stays where it waits: [`SecretsError::AlreadyExists`]).
    pub fn place(&self) -> Result<(), SecretsError> {
        place(&self.temporary, &self.target)
    }

    /// Removes the waiting file (the step that would have named it was refused).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Checks that `target` is free and its folder exists, without writing anything.
pub fn check_kept_file(target: &Path) -> Result<(), SecretsError> {
    fsutil::require_dir(fsutil::parent_dir(target))?;
    file_name(target)?;
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(SecretsError::AlreadyExists { path: target.to_path_buf() });
    }
    Ok(())
}

/// Checks that `target` is free and its folder exists, then writes `secret` and a line break to a
/// new temporary file beside it (mode 0600, synced). Waiting files of the same target left by a
/// killed run are removed first (see the module doc).
pub fn prepare_kept_file(target: &Path, secret: &SecretString) -> Result<PendingFile, SecretsError> {
    check_kept_file(target)?;
    let dir = fsutil::parent_dir(target);
    let name = file_name(target)?;
    remove_waiting(dir, &name);
    let written = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(PENDING_SUFFIX)
        .make_in(dir, fsutil::create_new_private_file)
        .and_then(|mut file| {
            file.as_file_mut().write_all(secret.expose_secret().as_bytes())?;
            file.as_file_mut().write_all(b"\n")?;
            file.as_file().sync_all()?;
            Ok(file)
        })
        .map_err(|e| SecretsError::io("write a new file in", dir, e))?;
    let temporary = written.into_temp_path().keep().map_err(|e| SecretsError::io("keep", dir, e.error))?;
    fsutil::sync_dir(dir)?;
    Ok(PendingFile { target: target.to_path_buf(), temporary })
}

/// Whether a file for `target` waits under a temporary name (cheap: no file is read).
pub fn kept_file_pending(target: &Path) -> bool {
    let Ok(name) = file_name(target) else { return false };
    !pending_of(fsutil::parent_dir(target), &name).is_empty()
}

/// Finishes the move of a run killed after it recorded the step: when `target` does not exist and
/// a file for it waits holding exactly `secret`, that file is moved into place. Returns whether
/// it was. Waiting files holding anything else were never recorded, and are removed.
pub fn finish_kept_file(target: &Path, secret: &SecretString) -> Result<bool, SecretsError> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(false);
    }
    let dir = fsutil::parent_dir(target);
    let name = file_name(target)?;
    let mut expected = Zeroizing::new(secret.expose_secret().as_bytes().to_vec());
    expected.push(b'\n');
    let mut placed = false;
    for candidate in pending_of(dir, &name) {
        if !placed && read_small(&candidate).is_some_and(|held| constant_time_eq(&held, &expected)) {
            place(&candidate, target)?;
            placed = true;
        } else {
            let _ = std::fs::remove_file(&candidate);
        }
    }
    Ok(placed)
}

fn place(temporary: &Path, target: &Path) -> Result<(), SecretsError> {
    let waiting = tempfile::TempPath::try_from_path(temporary).map_err(|e| SecretsError::io("find", temporary, e))?;
    waiting.persist_noclobber(target).map_err(|e| {
        let error = e.error;
        // Never delete it: it holds the secret the log names, and the operator may still need it.
        let _ = e.path.keep();
        if error.kind() == io::ErrorKind::AlreadyExists {
            SecretsError::AlreadyExists { path: target.to_path_buf() }
        } else {
            SecretsError::io("move the file into place at", target, error)
        }
    })?;
    fsutil::sync_dir(fsutil::parent_dir(target))
}

fn file_name(target: &Path) -> Result<String, SecretsError> {
    target.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
        SecretsError::io("use", target, io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))
    })
}

/// The waiting files of `name` in `dir`, oldest first.
fn pending_of(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            file_name.starts_with(&prefix)
                && file_name.ends_with(PENDING_SUFFIX)
                && file_name.len() > prefix.len() + PENDING_SUFFIX.len()
        })
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            meta.is_file().then(|| (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), entry.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

fn remove_waiting(dir: &Path, name: &str) {
    for path in pending_of(dir, name) {
        let _ = std::fs::remove_file(&path);
    }
}

fn read_small(path: &Path) -> Option<Zeroizing<Vec<u8>>> {
    let file = fsutil::open_read_nofollow(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PENDING_BYTES + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_PENDING_BYTES).then_some(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_string())
    }

    #[test]
    fn a_prepared_file_is_beside_its_place_until_placed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pass.txt");
        let pending = prepare_kept_file(&target, &secret("s3cret-passphrase")).unwrap();
        assert!(!target.exists());
        assert!(pending.temporary().exists());
        assert!(kept_file_pending(&target));
        pending.place().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "s3cret-passphrase\n");
        assert!(!pending.temporary().exists());
        assert!(!kept_file_pending(&target));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn placing_never_replaces_a_file_created_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pass.txt");
        let pending = prepare_kept_file(&target, &secret("mine")).unwrap();
        std::fs::write(&target, "someone else's").unwrap();
        assert!(matches!(pending.place(), Err(SecretsError::AlreadyExists { .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "someone else's");
        assert!(pending.temporary().exists(), "the secret the log names is kept");
    }

    #[test]
    fn an_existing_target_or_a_missing_folder_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pass.txt");
        std::fs::write(&target, "x").unwrap();
        assert!(matches!(prepare_kept_file(&target, &secret("a")), Err(SecretsError::AlreadyExists { .. })));
        let missing = dir.path().join("nope/pass.txt");
        assert!(matches!(prepare_kept_file(&missing, &secret("a")), Err(SecretsError::DirMissing { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_killed_run_is_finished_with_the_file_holding_the_recorded_secret() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pass.txt");
        // A run killed before it recorded anything, then one killed after.
        let never_recorded = prepare_kept_file(&target, &secret("not the recorded one")).unwrap();
        let recorded = prepare_kept_file(&target, &secret("the recorded one")).unwrap();
        assert!(!never_recorded.temporary().exists(), "a new file for the place removes what a killed run left");
        let other = PendingFile::waiting(&target, &dir.path().join(".pass.txt.leftover.regent-pending"));
        std::fs::write(other.temporary(), "not the recorded one\n").unwrap();
        assert!(finish_kept_file(&target, &secret("the recorded one")).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "the recorded one\n");
        assert!(!recorded.temporary().exists());
        assert!(!other.temporary().exists(), "a file that was never recorded does not stay");
        // Done once: nothing more to do.
        assert!(!finish_kept_file(&target, &secret("the recorded one")).unwrap());
    }

    #[test]
    fn discarding_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pass.txt");
        prepare_kept_file(&target, &secret("x")).unwrap().discard();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
