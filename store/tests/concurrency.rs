//! Threads racing to append at the same expected version: one wins each version.

mod common;

use common::{event, meta, on_threads, open};
use regent_store::{ExpectedVersion, StoreError};

#[test]
fn racing_appenders_each_version_has_exactly_one_winner_and_nothing_is_lost() {
    const THREADS: u64 = 8;
    const VERSIONS: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let results = on_threads(THREADS, |thread, barrier| {
        let mut wins = Vec::new();
        let mut conflicts = 0;
        for version in 0..VERSIONS {
            barrier.wait();
            let mine = event(thread * 1000 + version);
            match store.append("race", ExpectedVersion::Exact(version), &meta(), &[mine]) {
                Ok(done) => wins.push((done.stream_version, thread * 1000 + version)),
                Err(StoreError::Conflict { actual, .. }) => {
                    assert_eq!(actual, version + 1, "a loser sees the winner's version");
                    conflicts += 1;
                }
                Err(other) => panic!("unexpected error: {other:?}"),
            }
            barrier.wait();
        }
        (wins, conflicts)
    });
    let mut wins = Vec::new();
    let mut conflicts = 0;
    for (w, c) in results {
        wins.extend(w);
        conflicts += c;
    }
    wins.sort();
    assert_eq!(wins.len() as u64, VERSIONS, "exactly one winner per version");
    assert_eq!(conflicts, (THREADS - 1) * VERSIONS);
    assert_eq!(wins.iter().map(|(v, _)| *v).collect::<Vec<_>>(), (1..=VERSIONS).collect::<Vec<_>>());
    let stored: Vec<u64> = store.read_stream("race", 1).map(|r| common::n_of(&r.unwrap())).collect();
    assert_eq!(stored, wins.iter().map(|(_, n)| *n).collect::<Vec<_>>(), "the winners are what is stored");
    assert!(store.verify(None).unwrap().is_ok());
}

#[test]
fn concurrent_appends_to_any_version_all_land_with_gapless_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    on_threads(6, |thread, _| {
        for i in 0..50 {
            let stream = format!("s{}", thread % 3);
            store.append(&stream, ExpectedVersion::Any, &meta(), &[event(thread * 100 + i)]).unwrap();
        }
    });
    let positions: Vec<u64> = store.read_all(1).map(|r| r.unwrap().position).collect();
    assert_eq!(positions, (1..=300).collect::<Vec<_>>());
    for stream in ["s0", "s1", "s2"] {
        let versions: Vec<u64> = store.read_stream(stream, 1).map(|r| r.unwrap().version).collect();
        assert_eq!(versions, (1..=100).collect::<Vec<_>>());
    }
    assert!(store.verify(None).unwrap().is_ok());
}

#[test]
fn concurrent_appenders_share_syncs_and_a_lone_append_syncs_once() {
    // Durability on return is group_commit.rs's (every Ok after a completed sync covering it) and
    // child_processes.rs's (SIGKILL); this counts the syncs only.
    const THREADS: u64 = 8;
    const EACH: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    on_threads(THREADS, |thread, barrier| {
        barrier.wait();
        for i in 0..EACH {
            store.append(&format!("s{thread}"), ExpectedVersion::Any, &meta(), &[event(thread * 1000 + i)]).unwrap();
        }
    });
    let appends = THREADS * EACH;
    assert_eq!(store.len(), appends);
    let syncs = store.sync_count();
    assert!(syncs >= 1 && syncs < appends, "{syncs} syncs for {appends} concurrent appends: no group commit");
    // Alone, every append syncs once.
    let before = store.sync_count();
    store.append("alone", ExpectedVersion::Any, &meta(), &[event(1)]).unwrap();
    assert_eq!(store.sync_count(), before + 1);
}
