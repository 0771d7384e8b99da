//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use regent_store::{Actor, BatchMeta, EventStore, NewEvent, StoreOptions};
use std::path::Path;
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
