//! Export and import: byte for byte, verified, refusing anything broken.

mod common;

use common::{events, meta, open};
use regent_store::{ExpectedVersion, FORMAT_VERSION, StoreError, verify_export};

fn sample_export() -> (Vec<u8>, regent_store::Head) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("a", ExpectedVersion::Any, &meta(), &events(0..4)).unwrap();
    store.append("b", ExpectedVersion::Any, &meta(), &events(4..6)).unwrap();
    let mut out = Vec::new();
    let head = store.export(&mut out, "regent test").unwrap();
    (out, head)
}

#[test]
fn an_export_is_the_stored_bytes_and_imports_back_byte_for_byte() {
    let (export, head) = sample_export();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.import(export.as_slice()).unwrap(), head);
    assert_eq!(store.head(), head);
    let mut again = Vec::new();
    store.export(&mut again, "regent test").unwrap();
    assert_eq!(again, export);
    // The imported store is a working store: indexes rebuilt, appends continue the chain.
    assert_eq!(store.stream_version("a").unwrap(), 4);
    assert_eq!(store.read_stream("b", 1).count(), 2);
    store.append("a", ExpectedVersion::Exact(4), &meta(), &events(6..7)).unwrap();
    assert!(store.verify(None).unwrap().is_ok());
    let (header, report) = verify_export(std::io::Cursor::new(export.clone()), Some(head)).unwrap();
    assert_eq!((header.format_version, report.records, report.failure), (FORMAT_VERSION, 6, None));
}

#[test]
fn import_refuses_a_broken_chain_and_leaves_the_store_empty() {
    let (export, _) = sample_export();
    let text = String::from_utf8(export).unwrap();
    let broken = text.replacen("a test event", "a test evenT", 3);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.import(broken.as_bytes()).unwrap_err();
    match err {
        StoreError::ChainBroken(failure) => assert_eq!(failure.position, 1),
        other => panic!("expected a broken chain, got {other:?}"),
    }
    assert!(store.is_empty());
    assert_eq!(store.read_all(0).count(), 0);
    // And the store can still take the good file afterwards.
    store.import(text.as_bytes()).unwrap();
    assert_eq!(store.len(), 6);
}

#[test]
fn import_refuses_a_store_that_is_not_empty() {
    let (export, _) = sample_export();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("x", ExpectedVersion::Any, &meta(), &events(0..1)).unwrap();
    assert!(matches!(store.import(export.as_slice()), Err(StoreError::NotEmpty { records: 1 })));
    assert_eq!(store.len(), 1);
}

fn import_error(input: &[u8]) -> StoreError {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.import(input).unwrap_err();
    assert!(store.is_empty(), "a refused import must leave nothing behind");
    err
}

fn bad_line(err: StoreError) -> (u64, String) {
    match err {
        StoreError::BadLogFile { line, detail } => (line, detail),
        other => panic!("expected a bad log file error, got {other:?}"),
    }
}

#[test]
fn malformed_imports_are_typed_errors_naming_the_line() {
    let (export, _) = sample_export();
    let text = String::from_utf8(export.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let (line, detail) = bad_line(import_error(b""));
    assert_eq!(line, 1);
    assert!(detail.contains("empty"), "{detail}");

    let (_, detail) = bad_line(import_error(b"position,stream\n1,a\n"));
    assert!(detail.contains("not a regent log export"), "{detail}");

    let newer = text.replacen("\"format_version\":1", "\"format_version\":99", 1);
    let (_, detail) = bad_line(import_error(newer.as_bytes()));
    assert!(detail.contains("upgrade regent"), "{detail}");

    let mut malformed = lines.clone();
    malformed[3] = "{not json";
    assert!(matches!(import_error(malformed.join("\n").as_bytes()), StoreError::ChainBroken(f) if f.position == 3));

    let mut invalid_utf8 = format!("{}\n{}\n", lines[0], lines[1]).into_bytes();
    invalid_utf8.extend_from_slice(b"{\"hash\":\"\xff\xfe\"}\n");
    let (line, detail) = bad_line(import_error(&invalid_utf8));
    assert_eq!(line, 3);
    assert!(detail.contains("UTF-8"), "{detail}");

    let mut too_long = format!("{}\n{}\n", lines[0], lines[1]).into_bytes();
    too_long.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
    too_long.push(b'\n');
    let (line, detail) = bad_line(import_error(&too_long));
    assert_eq!(line, 3);
    assert!(detail.contains("longer than"), "{detail}");

    // Cut short: the header names a head the file never reaches.
    let cut = lines[..4].join("\n");
    let (_, detail) = bad_line(import_error(cut.as_bytes()));
    assert!(detail.contains("incomplete"), "{detail}");
}

#[test]
fn verify_export_reports_a_malformed_line_as_the_failure_at_its_position() {
    let (export, _) = sample_export();
    let mut bytes = export.clone();
    let at = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(2).unwrap().0 + 1;
    bytes[at] = 0xff;
    let (_, report) = verify_export(std::io::Cursor::new(bytes.clone()), None).unwrap();
    let failure = report.failure.unwrap();
    assert_eq!(failure.position, 3);
    assert_eq!(report.verified_head.position, 2);
}

#[test]
fn import_refuses_what_an_interrupted_import_left_behind() {
    let (export, _) = sample_export();
    let dir = tempfile::tempdir().unwrap();
    // An import cut short: a record written, no head.
    {
        let db = common::open_raw_sled(dir.path());
        let tree = db.open_tree(regent_store::layout::LOG_TREE).unwrap();
        let first = String::from_utf8(export.clone()).unwrap().lines().nth(1).unwrap().to_string();
        tree.insert(regent_store::layout::record_key(1), first.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert!(store.damage().is_some(), "records without a head are damage");
    let err = store.import(export.as_slice()).unwrap_err();
    assert!(matches!(err, StoreError::NotEmpty { .. }), "{err:?}");
    assert!(err.to_string().contains("interrupted import"), "{err}");
    assert_eq!(store.read_all(0).count(), 1, "nothing was cleared or mixed");
}

#[test]
fn a_rechained_export_changes_only_from_the_edited_record_on_and_verifies() {
    let (export, head) = sample_export();
    let lines =
        |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap().lines().map(str::to_string).collect::<Vec<_>>();

    // No edit: the same bytes.
    let mut same = Vec::new();
    assert_eq!(regent_store::rechain_export(export.as_slice(), &mut same, |_| false).unwrap(), head);
    assert_eq!(same, export);

    // Record 3's payload edited: records 1 and 2 are copied, 3 to 6 written again, all verify.
    let mut edited = Vec::new();
    let new_head = regent_store::rechain_export(export.as_slice(), &mut edited, |record| {
        let hit = record.position == 3;
        if hit {
            record.payload = serde_json::value::to_raw_value(&serde_json::json!({ "n": 300 })).unwrap();
        }
        hit
    })
    .unwrap();
    assert_eq!(new_head.position, head.position);
    assert_ne!(new_head.hash, head.hash);
    let (before, after) = (lines(&export), lines(&edited));
    assert_eq!(after.len(), before.len());
    assert_eq!(after[1..3], before[1..3], "the records before the edit are copied as they are");
    assert!(after[3..].iter().zip(&before[3..]).all(|(a, b)| a != b), "every later record names a new hash");
    let (header, report) = verify_export(std::io::Cursor::new(edited.clone()), None).unwrap();
    assert_eq!((header.head, report.verified_head, report.failure), (new_head, new_head, None));
    let (_, records) = regent_store::read_export(std::io::Cursor::new(edited), true).unwrap();
    let ns: Vec<u64> = records.map(|r| common::n_of(&r.unwrap())).collect();
    assert_eq!(ns, [0, 1, 300, 3, 4, 5]);
}

#[test]
fn a_rechained_export_refuses_a_broken_input_chain() {
    let (export, _) = sample_export();
    let text = String::from_utf8(export).unwrap();
    let forged = text.replacen("\"n\":2,", "\"n\":22,", 1);
    let err = regent_store::rechain_export(forged.as_bytes(), &mut Vec::new(), |_| false).unwrap_err();
    assert!(matches!(err, StoreError::ChainBroken(_)), "{err:?}");
}
