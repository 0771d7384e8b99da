//! Appends, expected versions, idempotent retries, reads and checkpoints.

mod common;

use common::{event, events, meta, n_of, open};
use regent_store::{ExpectedVersion, Head, NewEvent, StoreError};

#[test]
fn positions_are_gapless_across_streams_and_versions_count_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.head(), Head::EMPTY);
    let a = store.append("a", ExpectedVersion::NoStream, &meta(), &events(0..3)).unwrap();
    let b = store.append("b", ExpectedVersion::NoStream, &meta(), &events(3..5)).unwrap();
    let a2 = store.append("a", ExpectedVersion::Exact(3), &meta(), &events(5..6)).unwrap();
    assert_eq!((a.first_position, a.last_position, a.stream_version), (1, 3, 3));
    assert_eq!((b.first_position, b.last_position, b.stream_version), (4, 5, 2));
    assert_eq!((a2.first_position, a2.last_position, a2.stream_version), (6, 6, 4));
    let all: Vec<_> = store.read_all(1).map(Result::unwrap).collect();
    assert_eq!(all.iter().map(|r| r.position).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(all.iter().map(n_of).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    let stream_a: Vec<_> = store.read_stream("a", 1).map(Result::unwrap).collect();
    assert_eq!(stream_a.iter().map(|r| (r.version, n_of(r))).collect::<Vec<_>>(), vec![(1, 0), (2, 1), (3, 2), (4, 5)]);
    let from_3: Vec<_> = store.read_stream("a", 3).map(|r| r.unwrap().version).collect();
    assert_eq!(from_3, vec![3, 4]);
    assert_eq!(store.read_all(5).count(), 2);
    assert_eq!(store.stream_version("a").unwrap(), 4);
    assert_eq!(store.stream_version("nope").unwrap(), 0);
    // Each record links to the one before.
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(store.head(), Head { position: 6, hash: all[5].hash });
}

#[test]
fn a_stream_that_shares_a_prefix_with_another_reads_only_its_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("ab", ExpectedVersion::Any, &meta(), &events(0..2)).unwrap();
    store.append("a", ExpectedVersion::Any, &meta(), &events(2..3)).unwrap();
    store.append("abc", ExpectedVersion::Any, &meta(), &events(3..4)).unwrap();
    let a: Vec<_> = store.read_stream("a", 0).map(|r| n_of(&r.unwrap())).collect();
    assert_eq!(a, vec![2]);
}

#[test]
fn a_wrong_expected_version_is_a_conflict_naming_both_versions_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("s", ExpectedVersion::NoStream, &meta(), &events(0..2)).unwrap();
    let head = store.head();
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(1), ExpectedVersion::Exact(3)] {
        let err = store.append("s", expected, &meta(), &events(10..11)).unwrap_err();
        match &err {
            StoreError::Conflict { stream, expected: e, actual } => {
                assert_eq!((stream.as_str(), *e, *actual), ("s", expected, 2));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("version 2"), "{text}");
    }
    assert_eq!(store.head(), head);
    assert_eq!(store.append("s", ExpectedVersion::Exact(2), &meta(), &events(10..11)).unwrap().stream_version, 3);
    assert_eq!(store.append("t", ExpectedVersion::Exact(0), &meta(), &events(11..12)).unwrap().stream_version, 1);
}

#[test]
fn resending_a_stored_batch_writes_nothing_and_reports_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch = events(0..3);
    let first = store.append("s", ExpectedVersion::NoStream, &meta(), &batch).unwrap();
    store.append("other", ExpectedVersion::Any, &meta(), &events(3..4)).unwrap();
    let head = store.head();
    // The retry's expected version is stale, yet it succeeds: it is the same command.
    let again = store.append("s", ExpectedVersion::NoStream, &meta(), &batch).unwrap();
    assert!(again.already_stored);
    assert_eq!((again.first_position, again.last_position, again.stream_version), (1, 3, 3));
    assert_eq!(again.head, head);
    assert!(!first.already_stored);
    assert_eq!(store.head(), head);
    assert_eq!(store.read_all(0).count(), 4);
}

#[test]
fn a_batch_mixing_stored_and_new_ids_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch = events(0..2);
    store.append("s", ExpectedVersion::Any, &meta(), &batch).unwrap();
    let mixed = vec![batch[1].clone(), event(9)];
    let err = store.append("s", ExpectedVersion::Any, &meta(), &mixed).unwrap_err();
    assert!(matches!(err, StoreError::PartlyStored { stored: 1, new: 1, .. }), "{err:?}");
    assert_eq!(store.len(), 2);
    let err = store.append("elsewhere", ExpectedVersion::Any, &meta(), &batch).unwrap_err();
    assert!(matches!(err, StoreError::StoredElsewhere { .. }), "{err:?}");
}

#[test]
fn invalid_batches_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let e = event(1);
    let cases: Vec<(&str, Vec<NewEvent>)> = vec![
        ("s", vec![]),
        ("", vec![event(1)]),
        ("bad\nstream", vec![event(1)]),
        ("s", vec![e.clone(), e]),
        ("s", vec![NewEvent::new("", 1, &1).unwrap()]),
        ("s", vec![NewEvent::new("Big", 1, &"x".repeat(1024 * 1024)).unwrap()]),
    ];
    let long = "x".repeat(300);
    for (stream, batch) in cases.into_iter().chain([(long.as_str(), vec![event(2)])]) {
        let err = store.append(stream, ExpectedVersion::Any, &meta(), &batch).unwrap_err();
        assert!(matches!(err, StoreError::InvalidBatch(_)), "{err:?}");
    }
    assert!(store.is_empty());
}

#[test]
fn the_log_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let store = open(dir.path());
        store.append("s", ExpectedVersion::Any, &meta(), &events(0..5)).unwrap();
        store.head()
    };
    let store = open(dir.path());
    assert_eq!(store.head(), head);
    assert_eq!(store.stream_version("s").unwrap(), 5);
    assert!(store.verify(None).unwrap().is_ok());
    let next = store.append("s", ExpectedVersion::Exact(5), &meta(), &events(5..6)).unwrap();
    assert_eq!(next.first_position, 6);
}

#[test]
fn a_checkpoint_is_returned_while_it_matches_the_log_and_ignored_once_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.load_checkpoint("status").unwrap(), None);
    store.append("s", ExpectedVersion::Any, &meta(), &events(0..3)).unwrap();
    let head = store.head();
    store.save_checkpoint("status", head, b"state at 3").unwrap();
    store.append("s", ExpectedVersion::Any, &meta(), &events(3..4)).unwrap();
    let checkpoint = store.load_checkpoint("status").unwrap().unwrap();
    assert_eq!((checkpoint.head, checkpoint.state.as_slice()), (head, &b"state at 3"[..]));
    // A checkpoint naming a hash the log does not have (another log, imported) is not used.
    let forged = Head { position: 2, hash: head.hash };
    store.save_checkpoint("status", forged, b"stale").unwrap();
    assert_eq!(store.load_checkpoint("status").unwrap(), None);
    store.save_checkpoint("status", head, b"x").unwrap();
    store.delete_checkpoint("status").unwrap();
    assert_eq!(store.load_checkpoint("status").unwrap(), None);
}
