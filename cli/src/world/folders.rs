//! Looking at a folder: create it if asked, resolve it, check it is a writable directory, and
//! find its filesystem's type and free space.

use std::path::{Path, PathBuf};

use regent_engine::model::FolderFacts;
use regent_engine::ports::FolderProbe;

/// Filesystem types that are network shares. The real agent refuses a scratch folder on them.
const NETWORK_FILESYSTEMS: &[&str] =
    &["nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "afs", "ncpfs", "9p", "fuse.sshfs", "ceph", "glusterfs"];

pub struct DiskFolders;

impl FolderProbe for DiskFolders {
    fn create(&self, path: &Path) -> Result<(), String> {
        create_folder(path)
    }

    fn probe(&self, path: &Path) -> FolderFacts {
        let mut facts = FolderFacts { existed: path.exists(), ..FolderFacts::default() };
        if !path.is_absolute() {
            facts.problem = Some("not an absolute path".into());
            return facts;
        }
        if !facts.existed {
            return probe_missing(path, facts);
        }
        match std::fs::metadata(path) {
            Ok(metadata) => facts.is_dir = metadata.is_dir(),
            Err(e) => {
                facts.problem = Some(e.to_string());
                return facts;
            }
        }
        facts.resolved = std::fs::canonicalize(path).ok();
        if facts.is_dir {
            facts.writable = tempfile::tempfile_in(path).is_ok();
        }
        let at = facts.resolved.clone().unwrap_or_else(|| path.to_path_buf());
        facts.filesystem = filesystem_of(&at).unwrap_or_else(|| "unknown".into());
        facts.network = NETWORK_FILESYSTEMS.contains(&facts.filesystem.as_str());
        match free_bytes(&at) {
            Ok(free) => facts.free_bytes = free,
            Err(e) => facts.problem = Some(format!("cannot read its free space: {e}")),
        }
        facts
    }
}

/// A folder that does not exist yet, seen from its nearest existing parent: whether it can be
/// created there, and the filesystem and free space it would have.
fn probe_missing(path: &Path, mut facts: FolderFacts) -> FolderFacts {
    let Some(parent) = path.ancestors().skip(1).find(|p| p.exists()) else {
        facts.problem = Some("none of its parent folders exists".into());
        return facts;
    };
    let Ok(metadata) = std::fs::metadata(parent) else {
        facts.problem = Some(format!("its parent {} cannot be looked at", parent.display()));
        return facts;
    };
    if !metadata.is_dir() {
        facts.problem = Some(format!("{} is not a folder", parent.display()));
        return facts;
    }
    let resolved_parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    facts.resolved = path.strip_prefix(parent).ok().map(|rest| resolved_parent.join(rest));
    facts.creatable = writable_dir(parent);
    facts.filesystem = filesystem_of(&resolved_parent).unwrap_or_else(|| "unknown".into());
    facts.network = NETWORK_FILESYSTEMS.contains(&facts.filesystem.as_str());
    match free_bytes(&resolved_parent) {
        Ok(free) => facts.free_bytes = free,
        Err(e) => facts.problem = Some(format!("cannot read the free space of {}: {e}", parent.display())),
    }
    facts
}

/// Whether this user may create entries in `dir` (access(2) with W_OK|X_OK: the kernel's answer
/// for this process's credentials, without writing anything).
fn writable_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: c_path is a valid NUL-terminated string; access only reads it.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Creates `path` and its missing parents; if a later one fails, removes the ones it made, so a
/// failure leaves nothing behind.
pub fn create_folder(path: &Path) -> Result<(), String> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for (made, dir) in missing.iter().rev().enumerate() {
        if let Err(e) = std::fs::create_dir(dir) {
            if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() {
                continue;
            }
            for undo in missing.iter().rev().take(made).rev() {
                let _ = std::fs::remove_dir(undo);
            }
            return Err(e.to_string());
        }
    }
    Ok(())
}

/// Bytes available to an unprivileged user on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid C string; statvfs fills `stat` when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The filesystem type of the mount holding `path`, from /proc/self/mountinfo.
fn filesystem_of(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    filesystem_in_mountinfo(&mountinfo, path)
}

/// The longest mount point that holds `path` decides. Fields: `id parent major:minor root
/// mountpoint options [optional...] - fstype source superoptions`.
fn filesystem_in_mountinfo(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let mut fields = line.split(' ');
        let mount_point = fields.nth(4).map(unescape)?;
        let fstype = line.split(" - ").nth(1).and_then(|rest| rest.split(' ').next())?;
        let mount_point = PathBuf::from(mount_point);
        if path.starts_with(&mount_point) {
            let depth = mount_point.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, fstype.to_string()));
            }
        }
    }
    best.map(|(_, fstype)| fstype)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&digits, 8) {
                Ok(byte) => out.push(byte as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/backup rw,relatime shared:2 - nfs4 nas:/export rw,vers=4.2
31 22 0:41 / /mnt/win\\040share rw - cifs //srv/share rw
32 30 0:42 / /mnt/backup/local rw - tmpfs tmpfs rw
";

    #[test]
    fn the_deepest_mount_holding_the_path_names_the_filesystem() {
        let fs = |p: &str| filesystem_in_mountinfo(MOUNTINFO, Path::new(p));
        assert_eq!(fs("/var/cache").as_deref(), Some("ext4"));
        assert_eq!(fs("/mnt/backup/scratch").as_deref(), Some("nfs4"));
        assert_eq!(fs("/mnt/backup/local/x").as_deref(), Some("tmpfs"));
        assert_eq!(fs("/mnt/win share/cache").as_deref(), Some("cifs"));
        assert_eq!(fs("/mnt/backupx").as_deref(), Some("ext4"), "a prefix of the name is not a parent");
    }

    #[test]
    fn a_probe_of_a_missing_folder_creates_nothing_and_reports_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        let facts = DiskFolders.probe(&target);
        assert!(facts.creatable && !facts.existed && !facts.created && facts.problem.is_none(), "{facts:?}");
        assert!(!dir.path().join("a").exists(), "a look creates nothing");
        assert!(facts.free_bytes > 0);
        assert!(!facts.network);
        assert_ne!(facts.filesystem, "unknown");
        assert_eq!(facts.resolved, Some(std::fs::canonicalize(dir.path()).unwrap().join("a/b")));
        create_folder(&target).unwrap();
        let facts = DiskFolders.probe(&target);
        assert!(facts.existed && facts.is_dir && facts.writable, "{facts:?}");
    }

    #[test]
    fn a_probe_of_a_file_or_an_uncreatable_path_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let facts = DiskFolders.probe(&file);
        assert!(!facts.is_dir);
        let facts = DiskFolders.probe(&file.join("sub"));
        assert!(facts.problem.unwrap().contains("is not a folder"));
        assert!(create_folder(&file.join("sub/deeper")).is_err());
    }

    #[test]
    fn a_failed_creation_removes_what_it_made() {
        let dir = tempfile::tempdir().unwrap();
        // The last component cannot be made: a name longer than any filesystem allows.
        let target = dir.path().join("a/b").join("x".repeat(300));
        assert!(create_folder(&target).is_err());
        assert!(!dir.path().join("a").exists(), "the parents it made are gone");
    }
}
