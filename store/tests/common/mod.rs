//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use regent_store::{Actor, BatchMeta, EventStore, NewEvent, StoreOptions};
use std::path::Path;
use std::sync::Barrier;
use std::time::Duration;
use uuid::Uuid;

pub fn meta() -> BatchMeta {
    BatchMeta {
        recorded_at: DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap(),
        actor: Actor { user: "operator".into(), host: "srv-01".into() },
        correlation_id: Uuid::now_v7(),
    }
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::new("TestHappened", 1, &serde_json::json!({ "n": n, "note": "a test event" })).unwrap()
}

pub fn events(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range.map(event).collect()
}

pub fn options() -> StoreOptions {
    StoreOptions { lock_wait: Duration::from_millis(300), ..StoreOptions::default() }
}

pub fn open(dir: &Path) -> EventStore {
    EventStore::open(dir, &options()).unwrap()
}

/// The payload's `n`, to check which event a record is.
pub fn n_of(record: &regent_store::Record) -> u64 {
    record.payload_as::<serde_json::Value>().unwrap()["n"].as_u64().unwrap()
}

/// Opens the store's sled directly (to alter it, as someone with disk access would). sled's
/// background threads can hold the file lock for a moment after a store is dropped, so wait for it
/// as the store itself does.
pub fn open_raw_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                assert!(std::time::Instant::now() < deadline, "the store stayed locked: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open the store's sled: {e}"),
        }
    }
}

/// Runs `work` on `threads` threads at once, each given its number and a barrier they all wait on
/// (to start together, or to go in rounds), and returns what each returned, in thread order. A
/// panic on any thread fails the test.
pub fn on_threads<T: Send>(threads: u64, work: impl Fn(u64, &Barrier) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(usize::try_from(threads).unwrap());
    let (work, barrier) = (&work, &barrier);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|thread| scope.spawn(move || work(thread, barrier))).collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    })
}
