//! Group commit seen from inside, through the store's sync hook: no append returns Ok before a
//! sync that covers its batch has completed, and a failed sync fails every writer it was to cover
//! and every append after it, until the store is opened again.

mod common;

use common::{event, meta, n_of, on_threads, open};
use regent_store::{EventStore, ExpectedVersion, NewEvent, StoreError, SyncEvent, SyncHook};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// One entry of the shared log, in the order the entries were pushed (under one mutex).
#[derive(Clone, Copy, Debug)]
enum Seen {
    Sync(SyncEvent),
    /// An append returned Ok with its batch's last record at this position.
    Returned {
        last_position: u64,
    },
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn recording_hook(log: &Log, on_event: impl Fn(SyncEvent) -> std::io::Result<()> + Send + Sync + 'static) -> SyncHook {
    let log = log.clone();
    Arc::new(move |e| {
        log.lock().unwrap().push(Seen::Sync(e));
        on_event(e)
    })
}

/// Which sequence number each batch took, by the position of its last record.
fn sequences(log: &[Seen]) -> HashMap<u64, u64> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Sync(SyncEvent::Applied { sequence, last_position }) => Some((*last_position, *sequence)),
            _ => None,
        })
        .collect()
}

#[test]
fn no_append_returns_before_a_completed_sync_covers_its_batch() {
    const THREADS: u64 = 12;
    const EACH: u64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let mut store = open(dir.path());
    // A sync that takes a little longer lets writers pile up behind it, as on a slow disk.
    store.set_sync_hook(Some(recording_hook(&log, |e| {
        if let SyncEvent::Starting { first, .. } = e
            && first % 3 == 0
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })));
    on_threads(THREADS, |thread, barrier| {
        barrier.wait();
        for i in 0..EACH {
            let stream = format!("s{}", thread % 4);
            let done = store.append(&stream, ExpectedVersion::Any, &meta(), &[event(thread * 1000 + i)]).unwrap();
            log.lock().unwrap().push(Seen::Returned { last_position: done.last_position });
        }
    });
    let log = log.lock().unwrap().clone();
    let sequence_of = sequences(&log);
    let appends = THREADS * EACH;
    assert_eq!(sequence_of.len() as u64, appends, "every append took a sequence number");
    assert_eq!(sequence_of.values().copied().collect::<BTreeSet<_>>(), (1..=appends).collect());

    // Walk the log in order, keeping what completed syncs have covered so far.
    let mut covered_through = 0;
    let mut started: Option<(u64, u64)> = None;
    let mut completed = 0;
    let mut returned = 0;
    for seen in &log {
        match *seen {
            Seen::Sync(SyncEvent::Starting { first, last }) => {
                assert!(started.is_none(), "two syncs at once");
                assert_eq!(first, covered_through + 1, "a sync starts where the last one ended");
                assert!(last >= first, "a sync covers at least one batch");
                started = Some((first, last));
            }
            Seen::Sync(SyncEvent::Completed { first, last }) => {
                assert_eq!(started.take(), Some((first, last)), "a sync completes as it started");
                covered_through = last;
                completed += 1;
            }
            Seen::Sync(SyncEvent::Failed { .. }) => panic!("no sync fails here"),
            Seen::Sync(SyncEvent::Applied { .. }) => {}
            Seen::Returned { last_position } => {
                let sequence = sequence_of[&last_position];
                assert!(
                    sequence <= covered_through,
                    "the append at position {last_position} (batch {sequence}) returned when syncs had completed only through batch {covered_through}"
                );
                returned += 1;
            }
        }
    }
    assert!(started.is_none());
    assert_eq!(returned, appends);
    assert_eq!(covered_through, appends, "the last sync covers the last batch");
    assert_eq!(store.sync_count(), completed);
    assert!(completed < appends, "{completed} syncs for {appends} concurrent appends: no group commit");
    // A sync covering several batches released writers that did not sync themselves.
    let shared = log.iter().any(|s| matches!(s, Seen::Sync(SyncEvent::Completed { first, last }) if last > first));
    assert!(shared, "no sync covered more than one batch");
    assert!(store.verify(None).unwrap().is_ok());
}

/// Where a sync failure is injected: before the real sync (it never runs), or after it returned
/// Ok (it ran, then "reported" a failure: the case where a retry would wrongly succeed).
#[derive(Clone, Copy, Debug)]
enum FailAt {
    Starting,
    Completed,
}

#[test]
fn a_sync_that_fails_before_running_fails_every_writer_it_covers_and_every_append_after_it() {
    failed_sync_scenario(FailAt::Starting);
}

#[test]
fn a_sync_that_ran_but_reported_failure_fails_every_writer_it_covers_and_every_append_after_it() {
    failed_sync_scenario(FailAt::Completed);
}

/// A writer's event, with an id of its own: a retry sends the same event.
fn writer_event(n: u64) -> NewEvent {
    NewEvent::with_id(Uuid::from_u128(u128::from(n) + 1), "TestHappened", 1, &serde_json::json!({ "n": n })).unwrap()
}

fn failed_sync_scenario(fail_at: FailAt) {
    const WRITERS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let mut store = open(dir.path());
    // Batch 1, synced before the hook is set.
    store.append("before", ExpectedVersion::Any, &meta(), &[event(999)]).unwrap();
    let before = store.head();
    // Writer 0 appends alone (batch 2); its sync holds, once started, until every writer has
    // applied its batch (3..=WRITERS+1: they queue behind it). The next sync covers all of those
    // and fails.
    let applied = Arc::new((Mutex::new(0u64), Condvar::new()));
    let first_sync_started = Arc::new(Barrier::new(2));
    let syncs_started = Arc::new(Mutex::new(0u32));
    store.set_sync_hook(Some(recording_hook(&log, {
        let (applied, first_sync_started, syncs_started) =
            (applied.clone(), first_sync_started.clone(), syncs_started.clone());
        move |e| {
            let fail = || Err(std::io::Error::other("injected: the disk reported an I/O error"));
            match e {
                SyncEvent::Applied { .. } => {
                    *applied.0.lock().unwrap() += 1;
                    applied.1.notify_all();
                }
                SyncEvent::Starting { .. } => {
                    let n = {
                        let mut n = syncs_started.lock().unwrap();
                        *n += 1;
                        *n
                    };
                    if n == 1 {
                        first_sync_started.wait();
                        let deadline = Instant::now() + Duration::from_secs(20);
                        let mut count = applied.0.lock().unwrap();
                        while *count < WRITERS && Instant::now() < deadline {
                            count = applied.1.wait_timeout(count, Duration::from_millis(50)).unwrap().0;
                        }
                    } else if n == 2 && matches!(fail_at, FailAt::Starting) {
                        return fail();
                    }
                }
                SyncEvent::Completed { .. }
                    if *syncs_started.lock().unwrap() == 2 && matches!(fail_at, FailAt::Completed) =>
                {
                    return fail();
                }
                _ => {}
            }
            Ok(())
        }
    })));
    let store = Arc::new(store);
    let spawn = |n: u64| {
        let store = store.clone();
        std::thread::spawn(move || (n, store.append("w", ExpectedVersion::Any, &meta(), &[writer_event(n)])))
    };
    let mut handles = vec![spawn(0)];
    first_sync_started.wait();
    handles.extend((1..WRITERS).map(spawn));
    let results: BTreeMap<u64, _> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let seen = log.lock().unwrap().clone();

    // Which batch each writer's event was, through its position (the store still reads what it
    // applied).
    let position_of: HashMap<u64, u64> =
        store.read_all(before.position + 1).map(|r| r.unwrap()).map(|r| (n_of(&r), r.position)).collect();
    assert_eq!(position_of.len() as u64, WRITERS, "every writer's batch was applied");
    let sequence_of = sequences(&seen);
    let syncs: Vec<SyncEvent> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Sync(e @ (SyncEvent::Starting { .. } | SyncEvent::Completed { .. } | SyncEvent::Failed { .. })) => {
                Some(*e)
            }
            _ => None,
        })
        .collect();
    let last = WRITERS + 1;
    let expected = match fail_at {
        FailAt::Starting => vec![
            SyncEvent::Starting { first: 2, last: 2 },
            SyncEvent::Completed { first: 2, last: 2 },
            SyncEvent::Starting { first: 3, last },
            SyncEvent::Failed { first: 3, last },
        ],
        FailAt::Completed => vec![
            SyncEvent::Starting { first: 2, last: 2 },
            SyncEvent::Completed { first: 2, last: 2 },
            SyncEvent::Starting { first: 3, last },
            SyncEvent::Completed { first: 3, last },
            SyncEvent::Failed { first: 3, last },
        ],
    };
    for (n, result) in &results {
        let sequence = sequence_of[&position_of[n]];
        match result {
            Ok(_) => assert_eq!(sequence, 2, "writer {n} (batch {sequence}) returned Ok though its sync failed"),
            Err(StoreError::SyncFailed { source, .. }) => {
                assert!((3..=last).contains(&sequence), "writer {n} (batch {sequence}) failed: {source}");
                assert!(source.to_string().contains("injected"), "the sync's own error is reported: {source}");
            }
            Err(other) => panic!("writer {n}: unexpected error {other:?}"),
        }
    }
    assert_eq!(syncs, expected, "the second sync was to cover every writer but the first");
    assert!(results[&0].is_ok(), "{:?}", results[&0]);
    assert_eq!(results.values().filter(|r| r.is_err()).count() as u64, WRITERS - 1);
    assert_eq!(store.sync_count(), 2, "batch 1's sync and batch 2's");

    // The store refuses every later write: a new batch, a retry of a batch whose sync failed, a
    // flush. Nothing more is applied, no sync is tried.
    let head = store.head();
    let refused = store.append("after", ExpectedVersion::Any, &meta(), &[event(500)]);
    assert!(matches!(refused, Err(StoreError::SyncFailed { .. })), "{refused:?}");
    let retry = store.append("w", ExpectedVersion::Any, &meta(), &[writer_event(1)]);
    assert!(matches!(retry, Err(StoreError::SyncFailed { .. })), "{retry:?}");
    assert!(matches!(store.flush(), Err(StoreError::SyncFailed { .. })));
    assert!(matches!(store.writable(), Err(StoreError::SyncFailed { .. })), "what a readiness check asks");
    assert_eq!(store.head(), head);
    assert_eq!(store.sync_count(), 2);
    let starts = |log: &[Seen]| log.iter().filter(|s| matches!(s, Seen::Sync(SyncEvent::Starting { .. }))).count();
    assert_eq!(starts(&log.lock().unwrap()), 2);
    let message = store.append("after", ExpectedVersion::Any, &meta(), &[event(501)]).unwrap_err().to_string();
    assert!(message.contains("opened again"), "{message}");
    drop(store);

    // Opened again, it holds at least what was acknowledged, verifies, and takes appends: a
    // retry of the failed batches (the same events) lands each event exactly once, whether or not
    // it reached the disk after all.
    let store = reopen(dir.path());
    store.writable().unwrap();
    assert!(store.len() > before.position, "an acknowledged append was lost");
    let acknowledged = store.read_all(position_of[&0]).next().map(|r| r.unwrap().hash);
    assert_eq!(acknowledged, Some(results[&0].as_ref().unwrap().head.hash));
    assert!(store.verify(None).unwrap().is_ok());
    for n in 0..WRITERS {
        store.append("w", ExpectedVersion::Any, &meta(), &[writer_event(n)]).unwrap();
    }
    let stored: Vec<u64> = store.read_stream("w", 1).map(|r| n_of(&r.unwrap())).collect();
    assert_eq!(stored.iter().copied().collect::<BTreeSet<_>>(), (0..WRITERS).collect(), "{stored:?}");
    assert_eq!(stored.len() as u64, WRITERS, "each event stored once: {stored:?}");
    store.append("after", ExpectedVersion::Any, &meta(), &[event(502)]).unwrap();
    assert!(store.verify(None).unwrap().is_ok());
}

fn reopen(dir: &std::path::Path) -> EventStore {
    EventStore::open(dir, &regent_store::StoreOptions { lock_wait: Duration::from_secs(10), ..common::options() })
        .unwrap()
}
