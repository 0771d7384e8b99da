//! The machine key and the secrets area.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{assert_nowhere_under, mode_of};
use regent_secrets::{
    KEY_LEN, MachineKey, SEALED_FORMAT_VERSION, SEALED_MAGIC, SecretKind, SecretRef, SecretsArea, SecretsError,
};

const PASSWORD: &[u8] = b"Tr0ub4dor&3-proxy-password-do-not-leak";

fn area(dir: &Path) -> SecretsArea {
    SecretsArea::open_dir(dir, MachineKey::load_or_create(dir).unwrap()).unwrap()
}

/// The messages users see and the debug output developers see hold no secret; messages are one line.
fn assert_clean(err: &SecretsError, secret: &[u8]) {
    let shown = format!("{err} {err:?}");
    for enc in common::encodings(secret) {
        assert!(!common::contains(shown.as_bytes(), &enc), "{shown}");
    }
    assert!(!err.to_string().contains('\n'), "{err}");
}

fn write_key(dir: &Path, bytes: &[u8], mode: u32) -> PathBuf {
    let path = MachineKey::path_in(dir);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn seal_then_open_round_trips_for_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    for kind in SecretKind::ALL {
        let r = area.seal(kind, PASSWORD).unwrap();
        assert_eq!(r.id.len(), 64);
        assert!(r.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(&area.open(kind, &r).unwrap()[..], PASSWORD);
    }
    let r = area.seal(SecretKind::CredentialsPrivateKey, &[]).unwrap();
    assert!(area.open(SecretKind::CredentialsPrivateKey, &r).unwrap().is_empty());
    let binary: Vec<u8> = (0..=255).collect();
    let r = area.seal(SecretKind::CredentialsPrivateKey, &binary).unwrap();
    assert_eq!(&area.open(SecretKind::CredentialsPrivateKey, &r).unwrap()[..], &binary[..]);
}

#[test]
fn a_reopened_area_with_the_loaded_key_opens_what_was_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let r = area(dir.path()).seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let again = SecretsArea::open_dir(dir.path(), MachineKey::load(dir.path()).unwrap()).unwrap();
    assert_eq!(&again.open(SecretKind::ProxyPassword, &r).unwrap()[..], PASSWORD);
}

#[test]
fn the_id_binds_the_kind_and_a_ref_serializes_as_just_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let a = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let b = area.seal(SecretKind::Passphrase, PASSWORD).unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(serde_json::to_string(&a).unwrap(), format!("{{\"id\":\"{}\"}}", a.id));
    assert_eq!(serde_json::from_str::<SecretRef>(&serde_json::to_string(&a).unwrap()).unwrap(), a);
    assert!(matches!(area.open(SecretKind::Passphrase, &a), Err(SecretsError::Tampered { .. })));
}

#[test]
fn kind_names_are_stable_and_match_serde() {
    let names: Vec<_> = SecretKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, ["proxy_password", "credentials_private_key", "passphrase", "passphrase_verifier"]);
    for kind in SecretKind::ALL {
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
        assert_eq!(kind.to_string(), kind.name());
    }
}

#[test]
fn the_same_secret_sealed_twice_has_the_same_id_and_fresh_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let first = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let first_bytes = std::fs::read(area.sealed_path(&first).unwrap()).unwrap();
    let second = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let second_bytes = std::fs::read(area.sealed_path(&second).unwrap()).unwrap();
    assert_eq!(first, second);
    assert_eq!(first_bytes.len(), second_bytes.len());
    let header = SEALED_MAGIC.len() + 1;
    assert_ne!(first_bytes[header..header + 12], second_bytes[header..header + 12], "nonce reused");
    assert_ne!(first_bytes[header + 12..], second_bytes[header + 12..], "ciphertext repeated");
    assert_eq!(&area.open(SecretKind::ProxyPassword, &second).unwrap()[..], PASSWORD);
    // One file per id, no temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(area.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [std::ffi::OsString::from(format!("{}.sealed", first.id))]);
}

#[test]
fn the_sealed_file_has_the_documented_layout_and_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let r = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let path = area.sealed_path(&r).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], SEALED_MAGIC);
    assert_eq!(bytes[8], SEALED_FORMAT_VERSION);
    assert_eq!(bytes.len(), 8 + 1 + 12 + PASSWORD.len() + 16);
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(area.dir()), 0o700);
}

#[test]
fn every_flipped_byte_is_refused_as_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let r = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let path = area.sealed_path(&r).unwrap();
    let original = std::fs::read(&path).unwrap();
    for i in 0..original.len() {
        let mut altered = original.clone();
        altered[i] ^= 0x01;
        std::fs::write(&path, &altered).unwrap();
        let err = area.open(SecretKind::ProxyPassword, &r).unwrap_err();
        if i == SEALED_MAGIC.len() {
            assert!(matches!(err, SecretsError::UnsupportedFormat { version: 0, .. }), "byte {i}: {err:?}");
        } else {
            assert!(matches!(err, SecretsError::Tampered { .. }), "byte {i}: {err:?}");
        }
        assert_clean(&err, PASSWORD);
    }
    // Truncated anywhere, or grown.
    for len in 0..original.len() {
        std::fs::write(&path, &original[..len]).unwrap();
        let err = area.open(SecretKind::ProxyPassword, &r).unwrap_err();
        assert!(matches!(err, SecretsError::Tampered { .. }), "length {len}: {err:?}");
    }
    let mut longer = original.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert!(matches!(area.open(SecretKind::ProxyPassword, &r), Err(SecretsError::Tampered { .. })));
    std::fs::write(&path, &original).unwrap();
    assert_eq!(&area.open(SecretKind::ProxyPassword, &r).unwrap()[..], PASSWORD);
}

#[test]
fn a_file_moved_to_another_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let a = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let b = area.seal(SecretKind::ProxyPassword, b"another password").unwrap();
    std::fs::copy(area.sealed_path(&a).unwrap(), area.sealed_path(&b).unwrap()).unwrap();
    assert!(matches!(area.open(SecretKind::ProxyPassword, &b), Err(SecretsError::Tampered { .. })));
}

#[test]
fn another_machine_key_cannot_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = area(dir.path()).seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    // The machine key is lost and a new one is made: the value is there but unreadable.
    std::fs::remove_file(MachineKey::path_in(dir.path())).unwrap();
    let other = area(dir.path());
    let err = other.open(SecretKind::ProxyPassword, &r).unwrap_err();
    assert!(matches!(err, SecretsError::Tampered { .. }), "{err:?}");
    assert_clean(&err, PASSWORD);
    assert!(err.to_string().contains("machine key"), "{err}");
    // And its ids differ: the id is keyed.
    assert_ne!(other.seal(SecretKind::ProxyPassword, PASSWORD).unwrap(), r);
}

#[test]
fn a_missing_sealed_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let r = area.seal(SecretKind::CredentialsPrivateKey, PASSWORD).unwrap();
    std::fs::remove_file(area.sealed_path(&r).unwrap()).unwrap();
    let err = area.open(SecretKind::CredentialsPrivateKey, &r).unwrap_err();
    assert!(matches!(&err, SecretsError::NotFound { id, .. } if *id == r.id), "{err:?}");
    assert_clean(&err, PASSWORD);
}

#[test]
fn malformed_refs_are_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let good = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    for id in ["", "../machine", "../../etc/passwd", &good.id.to_uppercase(), &good.id[..63], &format!("{}0", good.id)]
    {
        let r = SecretRef { id: id.to_string() };
        let err = area.open(SecretKind::ProxyPassword, &r).unwrap_err();
        assert!(matches!(err, SecretsError::BadRef { .. }), "{id}: {err:?}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn a_symlink_in_place_of_a_sealed_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let r = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    let path = area.sealed_path(&r).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::rename(&path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    assert!(matches!(area.open(SecretKind::ProxyPassword, &r), Err(SecretsError::Tampered { .. })));
}

#[test]
fn no_file_under_the_data_dir_holds_the_secret_in_any_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let secrets: [&[u8]; 3] = [PASSWORD, b"hunter2-but-longer", b"-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0B"];
    for (kind, secret) in SecretKind::ALL.into_iter().zip(secrets) {
        let r = area.seal(kind, secret).unwrap();
        area.seal(kind, secret).unwrap();
        assert_eq!(&area.open(kind, &r).unwrap()[..], secret);
    }
    for secret in secrets {
        assert_nowhere_under(dir.path(), secret);
    }
}

#[test]
#[should_panic(expected = "holds the secret")]
fn the_leak_check_finds_a_base64_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut planted = b"{\"x\":\"".to_vec();
    planted.extend_from_slice(common::base64_std(&[b"zz".as_slice(), PASSWORD].concat()).as_bytes());
    std::fs::write(dir.path().join("export.json"), planted).unwrap();
    assert_nowhere_under(dir.path(), PASSWORD);
}

#[test]
fn a_missing_key_is_key_missing_and_load_never_creates_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = MachineKey::load(dir.path()).unwrap_err();
    assert!(matches!(&err, SecretsError::KeyMissing { path } if *path == MachineKey::path_in(dir.path())), "{err:?}");
    assert!(!MachineKey::path_in(dir.path()).exists());
    assert!(err.to_string().contains("machine.key"));
    // A missing data directory is a missing key too, for `load`.
    assert!(matches!(MachineKey::load(&dir.path().join("nope")), Err(SecretsError::KeyMissing { .. })));
}

#[test]
fn load_or_create_makes_a_0600_key_of_32_bytes_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = MachineKey::load_or_create(dir.path()).unwrap();
    let path = MachineKey::path_in(dir.path());
    assert_eq!(mode_of(&path), 0o600);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), KEY_LEN);
    assert_ne!(bytes, [0u8; KEY_LEN]);
    // Only the key file: no temporary left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // Again: loaded, not replaced.
    let sealed = SecretsArea::open_dir(dir.path(), key).unwrap().seal(SecretKind::Passphrase, PASSWORD).unwrap();
    let again = MachineKey::load_or_create(dir.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let area = SecretsArea::open_dir(dir.path(), again).unwrap();
    assert_eq!(&area.open(SecretKind::Passphrase, &sealed).unwrap()[..], PASSWORD);
}

#[test]
fn concurrent_creators_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let refs: Vec<SecretRef> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let key = MachineKey::load_or_create(&path).unwrap();
                    SecretsArea::open_dir(&path, key).unwrap().seal(SecretKind::ProxyPassword, PASSWORD).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(refs.windows(2).all(|w| w[0] == w[1]), "{refs:?}");
}

#[test]
fn a_key_open_to_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
        write_key(dir.path(), &[7u8; KEY_LEN], mode);
        for err in [MachineKey::load(dir.path()).unwrap_err(), MachineKey::load_or_create(dir.path()).unwrap_err()] {
            assert!(matches!(err, SecretsError::KeyPermissions { mode: m, .. } if m == mode), "{err:?}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
            assert_clean(&err, &[7u8; KEY_LEN]);
        }
    }
    // Not replaced by load_or_create.
    assert_eq!(std::fs::read(MachineKey::path_in(dir.path())).unwrap(), [7u8; KEY_LEN]);
    write_key(dir.path(), &[7u8; KEY_LEN], 0o400);
    MachineKey::load(dir.path()).unwrap();
}

#[test]
fn a_key_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0, 1, 31, 33, 64] {
        write_key(dir.path(), &vec![7u8; len], 0o600);
        let err = MachineKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, SecretsError::KeyWrongLength { len: l, .. } if l == len as u64), "{err:?}");
        assert!(err.to_string().contains("restore"), "{err}");
        assert_eq!(std::fs::read(MachineKey::path_in(dir.path())).unwrap().len(), len, "never replaced");
    }
}

#[test]
fn a_key_that_is_a_symlink_or_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.key");
    std::fs::write(&real, [7u8; KEY_LEN]).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, MachineKey::path_in(dir.path())).unwrap();
    assert!(matches!(MachineKey::load(dir.path()), Err(SecretsError::KeyNotAFile { .. })));

    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(MachineKey::path_in(other.path())).unwrap();
    assert!(matches!(MachineKey::load_or_create(other.path()), Err(SecretsError::KeyNotAFile { .. })));
}

#[test]
fn a_missing_data_dir_is_reported_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(MachineKey::load_or_create(&missing), Err(SecretsError::DirMissing { .. })));
    let key = MachineKey::load_or_create(dir.path()).unwrap();
    assert!(matches!(SecretsArea::open_dir(&missing, key), Err(SecretsError::DirMissing { .. })));
    assert!(!missing.exists());
}

#[test]
fn too_large_a_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let big = vec![1u8; regent_secrets::MAX_SECRET_LEN + 1];
    assert!(matches!(area.seal(SecretKind::CredentialsPrivateKey, &big), Err(SecretsError::TooLarge { .. })));
    let max = vec![1u8; regent_secrets::MAX_SECRET_LEN];
    let r = area.seal(SecretKind::CredentialsPrivateKey, &max).unwrap();
    assert_eq!(area.open(SecretKind::CredentialsPrivateKey, &r).unwrap().len(), max.len());
}

#[test]
fn debug_output_shows_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = MachineKey::load_or_create(dir.path()).unwrap();
    let bytes = std::fs::read(MachineKey::path_in(dir.path())).unwrap();
    let key_shown = format!("{key:?}");
    let shown = format!("{key_shown} {:?}", SecretsArea::open_dir(dir.path(), key).unwrap());
    assert!(shown.contains("REDACTED"), "{shown}");
    for enc in common::encodings(&bytes) {
        assert!(!common::contains(shown.as_bytes(), &enc), "{shown}");
    }
    // Nor any byte list that could be the key.
    assert!(!shown.contains(&format!("{}, {}", bytes[0], bytes[1])), "{shown}");
}

#[test]
fn remove_deletes_the_sealed_file_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let area = area(dir.path());
    let r = area.seal(SecretKind::ProxyPassword, PASSWORD).unwrap();
    area.remove(&r).unwrap();
    assert!(!area.sealed_path(&r).unwrap().exists());
    assert!(matches!(area.open(SecretKind::ProxyPassword, &r), Err(SecretsError::NotFound { .. })));
    area.remove(&r).unwrap();
    assert!(matches!(area.remove(&SecretRef { id: "../machine.key".into() }), Err(SecretsError::BadRef { .. })));
    assert!(MachineKey::path_in(dir.path()).exists());
}
