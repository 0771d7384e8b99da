//! Each way of altering a stored log is caught, and the first bad record is named.
//! The tests alter the sled files directly, as someone with disk access would.

mod common;

use common::{events, meta, open};
use regent_store::layout::{self, HEAD_KEY};
use regent_store::{ExpectedVersion, Head, Problem, VerifyReport, verify_export};
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
fn every_single_byte_flip_in_a_record_is_caught_at_that_record() {
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
    assert!(store.damage().unwrap().contains("records were lost"), "{:?}", store.damage());
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
    assert!(store.damage().unwrap().contains("position 10"), "{:?}", store.damage());
    let failure = store.verify(None).unwrap().failure.unwrap();
    assert_eq!(failure.problem, Problem::Truncated { last: 9, expected_head: 10 });
    let err = store.append("a", ExpectedVersion::Any, &meta(), &events(20..21)).unwrap_err();
    assert!(matches!(err, regent_store::StoreError::Corrupt { .. }), "{err:?}");
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
    assert!(store.damage().is_some());
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
