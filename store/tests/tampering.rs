//! Each way of altering a stored log is caught, and the first bad record is named.
//! The tests alter the sled files directly, as someone with disk access would.

mod common;

use common::{events, meta, open};
use regent_store::layout::{self, HEAD_KEY};
use regent_store::{Damage, ExpectedVersion, Head, Problem, VerifyReport, verify_export};
use std::path::Path;

/// A store of 10 records in two streams; returns its head.
fn build(dir: &Path) -> Head {
    let store = open(dir);
    for i in 0..5 {
        let stream = if i % 2 == 0 { "a" } else { "b" };
        store.append(stream, ExpectedVersion::Any, &meta(), &events(i * 2..i * 2 + 2)).unwrap();
    }
    store.head()
}

/// Opens the store's sled directly and lets the test change it.
fn tamper(dir: &Path, change: impl FnOnce(&sled::Tree)) {
    let db = common::open_raw_sled(dir);
    let tree = db.open_tree(layout::LOG_TREE).unwrap();
    change(&tree);
    db.flush().unwrap();
}

fn verify(dir: &Path, anchor: Option<Head>) -> VerifyReport {
    open(dir).verify(anchor).unwrap()
}

fn stored(tree: &sled::Tree, position: u64) -> Vec<u8> {
    tree.get(layout::record_key(position)).unwrap().unwrap().to_vec()
}

#[test]
fn an_untouched_log_verifies_to_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    let report = verify(dir.path(), Some(head));
    assert_eq!(report.failure, None);
    assert_eq!((report.records, report.verified_head), (10, head));
}

#[test]
fn a_changed_byte_in_a_payload_is_a_hash_mismatch_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        let text = String::from_utf8(stored(tree, 4)).unwrap();
        let changed = text.replace("a test event", "a test evenT");
        assert_ne!(text, changed);
        tree.insert(layout::record_key(4), changed.as_bytes()).unwrap();
    });
    let failure = verify(dir.path(), None).failure.unwrap();
    assert_eq!(failure.position, 4);
    assert!(matches!(failure.problem, Problem::HashMismatch { .. }), "{failure}");
}

#[test]
fn every_single_byte_flip_in_an_exported_record_is_caught_at_that_record() {
    // Every offset, of the stored line as an export holds it (the same chain walk over the same
    // bytes as the store's verify, without reopening sled per flip).
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let mut export = Vec::new();
    open(dir.path()).export(&mut export, "test").unwrap();
    let text = String::from_utf8(export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The header, then records 1.. : record 6 is line 6.
    let (before, target) = (lines[..6].join("\n"), lines[6].as_bytes().to_vec());
    let after = lines[7..].join("\n");
    let mut checked = 0;
    for offset in 0..target.len() {
        for flip in [0x01u8, 0x80] {
            let mut changed = target.clone();
            changed[offset] ^= flip;
            let mut file = format!("{before}\n").into_bytes();
            file.extend_from_slice(&changed);
            file.extend_from_slice(format!("\n{after}\n").as_bytes());
            let failure = match verify_export(std::io::Cursor::new(file), None) {
                Ok((_, report)) => report.failure.map(|f| f.position),
                // A flip that breaks the line so badly it is not read at all (not UTF-8, say).
                Err(e) => e.to_string().contains("line 7").then_some(6),
            };
            assert_eq!(failure, Some(6), "a flip of {flip:#04x} at byte {offset} went unnoticed or was misplaced");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * target.len());
}

#[test]
fn a_spread_of_byte_flips_in_a_stored_record_is_caught_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let original = {
        let store = open(dir.path());
        store.raw_records(6).next().unwrap().unwrap().1.to_vec()
    };
    // Walk a spread of offsets (every byte would be slow with reopen per flip).
    for offset in (0..original.len()).step_by(7) {
        let mut changed = original.clone();
        changed[offset] ^= 0x01;
        tamper(dir.path(), |tree| {
            tree.insert(layout::record_key(6), changed).unwrap();
        });
        let failure = verify(dir.path(), None).failure;
        assert_eq!(failure.map(|f| f.position), Some(6), "flip at byte {offset} went unnoticed");
    }
}

#[test]
fn a_deleted_record_is_a_gap_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        tree.remove(layout::record_key(5)).unwrap();
    });
    let failure = verify(dir.path(), None).failure.unwrap();
    assert_eq!(failure.position, 5);
    assert_eq!(failure.problem, Problem::Gap { expected: 5, found: 6 });
}

#[test]
fn two_swapped_records_are_located() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        let (three, four) = (stored(tree, 3), stored(tree, 4));
        tree.insert(layout::record_key(3), four).unwrap();
        tree.insert(layout::record_key(4), three).unwrap();
    });
    let failure = verify(dir.path(), None).failure.unwrap();
    assert_eq!(failure.position, 3);
    assert_eq!(failure.problem, Problem::PositionMismatch { stored_at: 3, claims: 4 });
}

#[test]
fn a_recomputed_hash_still_breaks_the_link_to_the_next_record() {
    // Someone edits record 2 and fixes its own hash: record 3 no longer points at it.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        let text = String::from_utf8(stored(tree, 2)).unwrap();
        let body_start = text.find("\"record\":").unwrap() + 9;
        let body = text[body_start..text.len() - 1].replace("a test event", "an evil event");
        let prev = regent_store::Digest32::from_hex(&text[text.find("prev_hash").unwrap() + 12..][..64]).unwrap();
        let hash = regent_store::Digest32::chain(&prev, body.as_bytes());
        let forged = format!("{{\"hash\":\"{hash}\",\"record\":{body}}}");
        tree.insert(layout::record_key(2), forged.as_bytes()).unwrap();
    });
    let failure = verify(dir.path(), None).failure.unwrap();
    assert_eq!(failure.position, 3);
    assert!(matches!(failure.problem, Problem::BrokenLink { .. }), "{failure}");
}

/// Cuts records 8..=10 and rewrites the stored head to 7, as someone hiding the cut would.
fn cut_tail_and_rewrite_head(dir: &Path) {
    tamper(dir, |tree| {
        let seven = regent_store::record::decode(&stored(tree, 7)).unwrap();
        for position in 8..=10 {
            tree.remove(layout::record_key(position)).unwrap();
        }
        tree.insert(HEAD_KEY, &layout::encode_head(&Head { position: 7, hash: seven.hash })[..]).unwrap();
    });
}

#[test]
fn a_cut_tail_with_a_rewritten_head_is_caught_by_the_durable_head() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    cut_tail_and_rewrite_head(dir.path());
    let store = open(dir.path());
    let damage = store.damage();
    assert!(
        matches!(damage, Some(Damage::RecordsLost { ends_at: 7, written }) if written.position == 10),
        "{damage:?}"
    );
    let failure = store.verify(None).unwrap().failure.unwrap();
    assert_eq!((failure.position, failure.problem), (8, Problem::Truncated { last: 7, expected_head: 10 }));
}

#[test]
fn a_cut_tail_hidden_everywhere_in_the_store_is_caught_only_against_a_head_kept_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let old_head = build(dir.path());
    cut_tail_and_rewrite_head(dir.path());
    std::fs::remove_file(dir.path().join("regent-durable-head")).unwrap();
    assert_eq!(verify(dir.path(), None).failure, None, "a chain alone cannot show a cut tail");
    let report = verify(dir.path(), Some(old_head));
    let failure = report.failure.unwrap();
    assert_eq!(failure.position, 8);
    assert_eq!(failure.problem, Problem::Truncated { last: 7, expected_head: 10 });
    assert_eq!(report.verified_head.position, 7);
}

#[test]
fn a_cut_tail_without_rewriting_the_head_is_located_and_the_store_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        tree.remove(layout::record_key(10)).unwrap();
    });
    let store = open(dir.path());
    assert_eq!(store.damage(), Some(&Damage::HeadDisagrees { head: 10, last_record: 9 }));
    assert!(matches!(store.writable(), Err(regent_store::StoreError::Damaged { .. })));
    let failure = store.verify(None).unwrap().failure.unwrap();
    assert_eq!(failure.problem, Problem::Truncated { last: 9, expected_head: 10 });
    let err = store.append("a", ExpectedVersion::Any, &meta(), &events(20..21)).unwrap_err();
    assert!(matches!(err, regent_store::StoreError::Damaged { .. }), "{err:?}");
    assert_eq!(store.read_all(0).count(), 9);
}

#[test]
fn records_past_a_rewritten_head_are_located() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        let eight = regent_store::record::decode(&stored(tree, 8)).unwrap();
        tree.insert(HEAD_KEY, &layout::encode_head(&Head { position: 8, hash: eight.hash })[..]).unwrap();
    });
    let store = open(dir.path());
    assert_eq!(store.damage(), Some(&Damage::HeadDisagrees { head: 8, last_record: 10 }));
    let failure = store.verify(None).unwrap().failure.unwrap();
    assert_eq!((failure.position, failure.problem), (9, Problem::PastHead { head: 8, last: 10 }));
}

#[test]
fn an_anchor_with_another_hash_is_a_head_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    let wrong = Head { position: 6, hash: head.hash };
    let failure = verify(dir.path(), Some(wrong)).failure.unwrap();
    assert_eq!(failure.position, 6);
    assert!(matches!(failure.problem, Problem::HeadMismatch { .. }));
}

#[test]
fn tampering_with_an_export_is_caught_in_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    let mut export = Vec::new();
    open(dir.path()).export(&mut export, "regent test").unwrap();
    let text = String::from_utf8(export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = |lines: &[String], anchor| verify_export(std::io::Cursor::new(lines.join("\n")), anchor).unwrap().1;

    let intact: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(check(&intact, Some(head)).failure, None);

    let mut changed = intact.clone();
    changed[3] = changed[3].replace("\"n\":", "\"n\": ");
    assert_eq!(check(&changed, None).failure.map(|f| f.position), Some(3));

    let mut deleted = intact.clone();
    deleted.remove(5);
    let failure = check(&deleted, None).failure.unwrap();
    assert_eq!((failure.position, failure.problem.clone()), (5, Problem::Gap { expected: 5, found: 6 }));

    let mut swapped = intact.clone();
    swapped.swap(2, 3);
    assert_eq!(check(&swapped, None).failure.map(|f| f.position), Some(2));

    // The header names the head, so a copy cut short is caught even without an anchor.
    let cut = intact[..8].to_vec();
    let failure = check(&cut, None).failure.unwrap();
    assert_eq!(failure.problem, Problem::Truncated { last: 7, expected_head: 10 });
}

/// Every file of a store directory, with its bytes, to show that nothing was written to it.
fn files_of(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_store_whose_data_file_was_removed_is_damage_and_nothing_is_created_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    for name in ["db", "conf"] {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let before = files_of(dir.path());
    let err = open_err(dir.path());
    assert!(
        matches!(&err, regent_store::StoreError::Damaged { damage: Damage::FilesMissing { written: Some(w) }, .. } if *w == head),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the store at {} is damaged: sled's data file (db) is gone; it held records 1..10",
            dir.path().display()
        )
    );
    assert_eq!(files_of(dir.path()), before, "sled did not create an empty store in its place");
    assert!(!dir.path().join("db").exists());
}

#[test]
fn an_empty_directory_is_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!((store.len(), store.damage()), (0, None));
}

fn open_err(dir: &Path) -> regent_store::StoreError {
    match regent_store::EventStore::open(dir, &common::options()) {
        Ok(store) => panic!("opened, damage {:?}", store.damage()),
        Err(err) => err,
    }
}

/// Flips a byte in the middle of every copy of record `position`'s bytes in sled's data file (sled
/// writes a page again as it grows, and which copy it reads depends on what it wrote when).
fn flip_in_data_file(dir: &Path, position: u64) {
    let path = dir.join("db");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = format!("\"position\":{position},");
    let copies: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle.as_bytes()).map(|(at, _)| at).collect();
    assert!(!copies.is_empty(), "the record is in the file");
    for at in copies {
        bytes[at + 40] ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_the_data_file_is_unreadable_damage_and_a_copy_says_what_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    // Opened again, sled writes a snapshot of the log's extent; against it, sled sees that its
    // data file no longer reads to the end and refuses to open (without one, it would keep the
    // readable prefix: the durable head's check above).
    drop(open(dir.path()));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("snap."))
    );
    flip_in_data_file(dir.path(), 10);
    let err = open_err(dir.path());
    let regent_store::StoreError::Damaged { damage, .. } = &err else { panic!("{err:?}") };
    assert!(matches!(damage, Damage::Unreadable { written: Some(w), .. } if w.position == 10), "{damage:?}");
    for debug_text in ["Some(", "None", "Inline(", "sled version"] {
        assert!(!err.to_string().contains(debug_text), "{err}");
    }

    let before = files_of(dir.path());
    let scratch = tempfile::tempdir().unwrap();
    let report = regent_store::salvage(dir.path(), scratch.path()).unwrap();
    assert_eq!(files_of(dir.path()), before, "reading what is left writes nothing to the store");
    let failure = report.failure.clone().expect("the copy stops short of the head written to disk");
    // Records 9 and 10 were one batch, one write to sled's log: the flip in 10 loses both.
    let good = report.verified_head.position;
    assert_eq!(good, 8, "{report:?}");
    assert_eq!((failure.position, failure.problem), (good + 1, Problem::Truncated { last: good, expected_head: 10 }));
    // What the copy read is the store's own prefix: the same records, verified.
    assert_eq!(report.records, good);
}

#[test]
fn a_page_sled_cannot_read_ends_a_walk_as_a_bad_record_does() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..50 {
            store.append("a", ExpectedVersion::Any, &meta(), &events(i * 10..i * 10 + 10)).unwrap();
        }
    }
    // Opened again, sled's snapshot points at every page: it reads a page only when asked for it.
    drop(open(dir.path()));
    flip_in_data_file(dir.path(), 250);
    let store = open(dir.path());
    assert_eq!(store.damage(), None, "open reads the head and the last record, not the middle");
    let report = store.verify(None).unwrap();
    let failure = report.failure.clone().expect("the walk stops where sled cannot read");
    assert!(matches!(&failure.problem, Problem::Unreadable { detail } if detail.contains("byte")), "{failure}");
    assert_eq!(failure.position, report.verified_head.position + 1);
    assert!(failure.position <= 250, "{failure}");
    for debug_text in ["Some(", "None", "Inline("] {
        assert!(!failure.to_string().contains(debug_text), "{failure}");
    }
}
