//! The private files and folders every key-holding file of regent is made as (the binary's
//! credentials downloads and data dir, the vault service's data dir use them too).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use regent_secrets::{SecretsError, create_new_private_file, create_private_dir, write_new_private_file};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_private_file_is_new_0600_and_never_over_a_file_or_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    create_new_private_file(&path).unwrap().write_all(b"first").unwrap();
    assert_eq!(mode(&path), 0o600);
    let again = create_new_private_file(&path).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"first", "the existing file is untouched");

    // A link planted where the file goes, even one to nowhere, is not followed.
    let elsewhere = dir.path().join("elsewhere");
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    assert!(create_new_private_file(&link).is_err());
    assert!(!elsewhere.exists(), "nothing was created through the link");
}

#[test]
fn a_private_file_is_written_whole_and_synced_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.VaultCredentials");
    write_new_private_file(&path, &[b"<xml>", b"</xml>"]).unwrap();
    assert_eq!((std::fs::read(&path).unwrap(), mode(&path)), (b"<xml></xml>".to_vec(), 0o600));
    let err = write_new_private_file(&path, &[b"other"]).unwrap_err();
    assert!(matches!(err, SecretsError::AlreadyExists { .. }), "{err:?}");
    let missing = dir.path().join("no-such-dir/x");
    assert!(matches!(write_new_private_file(&missing, &[b"x"]).unwrap_err(), SecretsError::DirMissing { .. }));
}

#[test]
fn a_private_dir_is_made_with_its_parents_for_the_owner_only_and_an_existing_one_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/data");
    create_private_dir(&nested).unwrap();
    for made in [dir.path().join("a"), dir.path().join("a/b"), nested.clone()] {
        assert_eq!(mode(&made) & 0o077, 0, "{} is open to others", made.display());
    }
    std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o750)).unwrap();
    create_private_dir(&nested).unwrap();
    assert_eq!(mode(&nested), 0o750, "an existing folder is left as it is");
}
