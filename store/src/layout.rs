//! Where things live inside sled. One tree, `log`, holds the records and their indexes so that one
//! atomic `apply_batch` writes a record together with its index entries and the new head.
//!
//! | key | value |
//! | --- | --- |
//! | `r` + position (u64 BE) | the stored record bytes |
//! | `s` + stream + 0xFF + version (u64 BE) | position (u64 BE) |
//! | `v` + stream | the stream's last version (u64 BE) |
//! | `e` + event id (16 bytes) | position (u64 BE) |
//! | `h` | the head: position (u64 BE) + hash (32 bytes) |
//!
//! 0xFF never occurs in UTF-8, so a stream's prefix cannot run into another stream's keys.
//! Checkpoints live in their own tree, `checkpoints`: name -> position + hash + state. Data kept
//! beside the log lives in trees named `side/<name>` (`EventStore::side_tree`).

use crate::record::{Digest32, Head};

pub const LOG_TREE: &str = "log";
pub const CHECKPOINT_TREE: &str = "checkpoints";
pub const HEAD_KEY: &[u8] = b"h";

/// A side tree's name inside sled: prefixed, so that none can be the log's or the checkpoints'.
pub fn side_tree_name(name: &str) -> String {
    format!("side/{name}")
}

pub fn record_key(position: u64) -> [u8; 9] {
    let mut key = [b'r'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

pub fn position_of_record_key(key: &[u8]) -> Option<u64> {
    match key {
        [b'r', rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

pub fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(b's');
    key.extend_from_slice(stream.as_bytes());
    key.push(0xFF);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub fn stream_version_key(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 1);
    key.push(b'v');
    key.extend_from_slice(stream.as_bytes());
    key
}

pub fn event_key(event_id: &uuid::Uuid) -> [u8; 17] {
    let mut key = [b'e'; 17];
    key[1..].copy_from_slice(event_id.as_bytes());
    key
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub fn encode_head(head: &Head) -> [u8; 40] {
    let mut bytes = [0u8; 40];
    bytes[..8].copy_from_slice(&head.position.to_be_bytes());
    bytes[8..].copy_from_slice(&head.hash.0);
    bytes
}

pub fn decode_head(bytes: &[u8]) -> Option<Head> {
    if bytes.len() < 40 {
        return None;
    }
    let position = decode_u64(&bytes[..8])?;
    let hash = Digest32(bytes[8..40].try_into().ok()?);
    Some(Head { position, hash })
}
