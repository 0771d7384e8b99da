//! Bad places and damaged files give typed errors; nothing panics and nothing is silently lost.

mod common;

use common::{events, meta, open, options};
use regent_store::{Damage, EventStore, ExpectedVersion, Problem, StoreError};
use std::path::Path;

#[test]
fn a_store_path_that_is_a_file_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store");
    std::fs::write(&file, b"not a store").unwrap();
    let err = EventStore::open(&file, &options()).unwrap_err();
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn a_store_under_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = EventStore::open(file.join("store"), &options()).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
}

#[test]
fn an_unwritable_directory_is_an_io_error() {
    // Root ignores permission bits (CI runs as root), so use a place no one can create files in.
    let dir = tempfile::tempdir().unwrap();
    let target = if unsafe { libc::geteuid() } == 0 {
        Path::new("/proc/regent-store-test").to_path_buf()
    } else {
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
        locked.join("store")
    };
    let err = EventStore::open(&target, &options()).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot use the store"), "{err}");
}

#[test]
fn a_second_open_in_the_same_process_waits_then_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let mut told = 0;
    let started = std::time::Instant::now();
    let err = EventStore::open_with_notice(dir.path(), &options(), |_| told += 1).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(started.elapsed() >= options().lock_wait, "it must wait before giving up");
    assert_eq!(told, 1, "the caller is told once that we are waiting");
    assert!(err.to_string().contains("in use by another process"), "{err}");
}

/// Builds a store of 500 records and closes it.
fn build(dir: &Path) {
    let store = open(dir);
    for i in 0..50 {
        store.append("s", ExpectedVersion::Any, &meta(), &events(i * 10..i * 10 + 10)).unwrap();
    }
}

fn damage_db_file(dir: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.join("db");
    let mut bytes = std::fs::read(&path).unwrap();
    change(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

/// sled recovers a damaged file to its longest readable prefix without a word; the store must say
/// that records it had acknowledged are gone, and verify must locate the loss.
fn assert_loss_reported(dir: &Path) {
    let store = match EventStore::open(dir, &options()) {
        Err(err) => {
            let unreadable = matches!(&err, StoreError::Damaged { damage: Damage::Unreadable { written, .. }, .. }
                if written.is_some_and(|w| w.position == 500));
            assert!(unreadable, "{err:?}");
            return;
        }
        Ok(store) => store,
    };
    let damage = store.damage().expect("a store that lost records must know it");
    assert!(matches!(damage, Damage::RecordsLost { written, .. } if written.position == 500), "{damage}");
    let failure = store.verify(None).unwrap().failure.expect("verify must report the loss");
    assert!(matches!(failure.problem, Problem::Truncated { expected_head: 500, .. }), "{failure}");
    let err = store.append("s", ExpectedVersion::Any, &meta(), &events(900..901)).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
}

#[test]
fn garbage_through_the_data_file_is_reported_not_silently_emptied() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    damage_db_file(dir.path(), |bytes| {
        for i in (0..bytes.len()).step_by(97) {
            bytes[i] ^= 0x5a;
        }
    });
    assert_loss_reported(dir.path());
}

#[test]
fn a_truncated_data_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    damage_db_file(dir.path(), |bytes| bytes.truncate(bytes.len() / 2));
    assert_loss_reported(dir.path());
}

#[test]
fn zeroed_pages_in_the_data_file_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    damage_db_file(dir.path(), |bytes| {
        let n = bytes.len();
        bytes[n / 4..n / 2].fill(0);
    });
    assert_loss_reported(dir.path());
}

#[test]
fn a_garbled_config_file_is_a_typed_damage_error() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    std::fs::write(dir.path().join("conf"), b"\xff\x00garbage").unwrap();
    let err = EventStore::open(dir.path(), &options()).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { damage: Damage::Unreadable { .. }, .. }), "{err:?}");
    assert!(!err.to_string().contains("sled version"), "sled's own wording stays out: {err}");
}

#[test]
fn a_garbled_durable_head_file_only_loses_that_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    std::fs::write(dir.path().join("regent-durable-head"), b"\xffnonsense").unwrap();
    let store = open(dir.path());
    assert_eq!((store.len(), store.damage()), (500, None));
    assert!(store.verify(None).unwrap().is_ok());
}

#[test]
fn a_snapshot_sled_was_killed_while_writing_does_not_make_the_store_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append("s", ExpectedVersion::NoStream, &meta(), &events(0..5)).unwrap();
    }
    // What a process killed while sled wrote its snapshot leaves: the unfinished file, empty,
    // named after a later position than the last whole snapshot.
    let unfinished = dir.path().join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"").unwrap();
    let store = open(dir.path());
    assert_eq!(store.damage(), None);
    let report = store.verify(None).unwrap();
    assert_eq!((report.records, report.failure), (5, None));
    assert!(!unfinished.exists(), "the unfinished snapshot was removed");
    store.append("s", ExpectedVersion::Exact(5), &meta(), &events(5..6)).unwrap();
}
