//! Property tests: the store agrees with a simple in-memory model, and exports round-trip.

mod common;

use common::{meta, open};
use proptest::prelude::*;
use regent_store::{ExpectedVersion, NewEvent, StoreError};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` new events to `stream` with an expected version picked by `expect`.
    Append {
        stream: u8,
        count: u8,
        expect: Expect,
    },
    /// Resend the batch of an earlier successful append.
    Retry {
        which: usize,
    },
    ReadStream {
        stream: u8,
        from: u64,
    },
    ReadAll {
        from: u64,
    },
}

#[derive(Debug, Clone)]
enum Expect {
    Any,
    NoStream,
    Current,
    Off(i8),
}

fn op() -> impl Strategy<Value = Op> {
    let expect =
        prop_oneof![Just(Expect::Any), Just(Expect::NoStream), Just(Expect::Current), (-2i8..3).prop_map(Expect::Off),];
    prop_oneof![
        4 => (0u8..4, 1u8..5, expect).prop_map(|(stream, count, expect)| Op::Append { stream, count, expect }),
        1 => any::<usize>().prop_map(|which| Op::Retry { which }),
        1 => (0u8..4, 0u64..12).prop_map(|(stream, from)| Op::ReadStream { stream, from }),
        1 => (0u64..40).prop_map(|from| Op::ReadAll { from }),
    ]
}

/// The model: the whole log as (stream, version, event id) in position order.
#[derive(Default)]
struct Model {
    log: Vec<(String, u64, Uuid)>,
}

impl Model {
    fn version(&self, stream: &str) -> u64 {
        self.log.iter().filter(|(s, _, _)| s == stream).count() as u64
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut model = Model::default();
        let mut sent: Vec<(String, Vec<NewEvent>, u64, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Append { stream, count, expect } => {
                    let stream = format!("stream-{stream}");
                    let current = model.version(&stream);
                    let expected = match expect {
                        Expect::Any => ExpectedVersion::Any,
                        Expect::NoStream => ExpectedVersion::NoStream,
                        Expect::Current => ExpectedVersion::Exact(current),
                        Expect::Off(d) => ExpectedVersion::Exact(current.saturating_add_signed(d as i64)),
                    };
                    let should_pass = match expected {
                        ExpectedVersion::Any => true,
                        ExpectedVersion::NoStream => current == 0,
                        ExpectedVersion::Exact(v) => v == current,
                    };
                    let batch: Vec<NewEvent> =
                        (0..count).map(|i| NewEvent::new("E", 1, &serde_json::json!({"i": i})).unwrap()).collect();
                    match store.append(&stream, expected, &meta(), &batch) {
                        Ok(done) => {
                            prop_assert!(should_pass);
                            let first = model.log.len() as u64 + 1;
                            for (i, event) in batch.iter().enumerate() {
                                model.log.push((stream.clone(), current + 1 + i as u64, event.event_id));
                            }
                            prop_assert_eq!(done.first_position, first);
                            prop_assert_eq!(done.last_position, model.log.len() as u64);
                            prop_assert_eq!(done.stream_version, current + count as u64);
                            sent.push((stream, batch, done.first_position, done.last_position));
                        }
                        Err(StoreError::Conflict { actual, .. }) => {
                            prop_assert!(!should_pass);
                            prop_assert_eq!(actual, current);
                        }
                        Err(other) => prop_assert!(false, "unexpected error {:?}", other),
                    }
                }
                Op::Retry { which } => {
                    if sent.is_empty() { continue; }
                    let (stream, batch, first, last) = &sent[which % sent.len()];
                    let done = store.append(stream, ExpectedVersion::NoStream, &meta(), batch).unwrap();
                    prop_assert!(done.already_stored);
                    prop_assert_eq!((done.first_position, done.last_position), (*first, *last));
                }
                Op::ReadStream { stream, from } => {
                    let stream = format!("stream-{stream}");
                    let got: Vec<(u64, Uuid)> =
                        store.read_stream(&stream, from).map(|r| r.map(|r| (r.version, r.event_id)).unwrap()).collect();
                    let want: Vec<(u64, Uuid)> = model.log.iter()
                        .filter(|(s, v, _)| *s == stream && *v >= from)
                        .map(|(_, v, id)| (*v, *id)).collect();
                    prop_assert_eq!(got, want);
                }
                Op::ReadAll { from } => {
                    let got: Vec<(u64, String, Uuid)> =
                        store.read_all(from).map(|r| r.map(|r| (r.position, r.stream, r.event_id)).unwrap()).collect();
                    let want: Vec<(u64, String, Uuid)> = model.log.iter().enumerate()
                        .map(|(i, (s, _, id))| (i as u64 + 1, s.clone(), *id))
                        .filter(|(p, _, _)| *p >= from).collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
        prop_assert_eq!(store.len(), model.log.len() as u64);
        let versions: HashMap<&str, u64> =
            model.log.iter().map(|(s, v, _)| (s.as_str(), *v)).collect();
        for (stream, version) in versions {
            prop_assert_eq!(store.stream_version(stream).unwrap(), version);
        }
        prop_assert!(store.verify(None).unwrap().is_ok());
    }

    #[test]
    fn export_then_import_round_trips_byte_for_byte(
        batches in proptest::collection::vec((0u8..3, 1usize..6, "[ -~]{0,40}"), 0..12)
    ) {
        let source_dir = tempfile::tempdir().unwrap();
        let source = open(source_dir.path());
        for (stream, count, text) in &batches {
            let events: Vec<NewEvent> = (0..*count)
                .map(|i| NewEvent::new("E", 2, &serde_json::json!({"text": text, "i": i})).unwrap())
                .collect();
            source.append(&format!("s{stream}"), ExpectedVersion::Any, &meta(), &events).unwrap();
        }
        let mut export = Vec::new();
        let head = source.export(&mut export, "regent proptest").unwrap();
        let target_dir = tempfile::tempdir().unwrap();
        let target = open(target_dir.path());
        prop_assert_eq!(target.import(export.as_slice()).unwrap(), head);
        let mut again = Vec::new();
        target.export(&mut again, "regent proptest").unwrap();
        prop_assert_eq!(&again, &export);
        let original: Vec<Vec<u8>> = source.raw_records(0).map(|r| r.unwrap().1.to_vec()).collect();
        let imported: Vec<Vec<u8>> = target.raw_records(0).map(|r| r.unwrap().1.to_vec()).collect();
        prop_assert_eq!(original, imported);
    }
}
