//! Walking a hash chain over stored bytes and naming the first record that is wrong.
//!
//! The same walker checks a live store and an exported file, so an export verifies on its own.

use std::fmt;

use serde::Serialize;

use crate::record::{ChainFields, Digest32, Head, Utf8, split_and_parse_checked};

/// What is wrong with a record, or with the chain's end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The bytes are not a record (not JSON, or fields missing).
    Malformed { detail: String },
    /// The store cannot read the record at all (sled cannot read the page that holds it).
    Unreadable { detail: String },
    /// The record's bytes do not hash to the hash stored with them: the record was altered.
    HashMismatch { stored: Digest32, computed: Digest32 },
    /// The record does not point at the record before it.
    BrokenLink { expected_prev: Digest32, found_prev: Digest32 },
    /// Records are missing: the next position was expected, a later one was found.
    Gap { expected: u64, found: u64 },
    /// The record claims a position other than the one it is stored at (records moved or swapped).
    PositionMismatch { stored_at: u64, claims: u64 },
    /// The chain ends before the head it was checked against: its tail was cut off.
    Truncated { last: u64, expected_head: u64 },
    /// Records follow the position the store's head names: the head was rewritten.
    PastHead { head: u64, last: u64 },
    /// The record at the head's position is not the one the head names.
    HeadMismatch { expected: Digest32, found: Digest32 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed { detail } => write!(f, "not a valid record: {detail}"),
            Problem::Unreadable { detail } => write!(f, "cannot be read: {detail}"),
            Problem::HashMismatch { stored, computed } => write!(
                f,
                "hash mismatch: the record was altered (stored {}…, its bytes hash to {}…)",
                &stored.to_hex()[..12],
                &computed.to_hex()[..12]
            ),
            Problem::BrokenLink { expected_prev, found_prev } => write!(
                f,
                "broken link: it should follow {}… but names {}… as its predecessor",
                &expected_prev.to_hex()[..12],
                &found_prev.to_hex()[..12]
            ),
            Problem::Gap { expected, found } => {
                write!(f, "gap: record {expected} is missing (the next one found is {found})")
            }
            Problem::PositionMismatch { stored_at, claims } => {
                write!(f, "record stored at position {stored_at} claims position {claims} (records moved or swapped)")
            }
            Problem::Truncated { last, expected_head } => write!(
                f,
                "truncated: the log ends at position {last} but the head to check against is at {expected_head}"
            ),
            Problem::PastHead { head, last } => {
                write!(f, "the store's head names position {head} but records go on to {last}: the head was rewritten")
            }
            Problem::HeadMismatch { expected, found } => write!(
                f,
                "head mismatch: the head names hash {}… but the record there hashes to {}…",
                &expected.to_hex()[..12],
                &found.to_hex()[..12]
            ),
        }
    }
}

/// The first bad record and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainFailure {
    pub position: u64,
    #[serde(flatten)]
    pub problem: Problem,
}

impl fmt::Display for ChainFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}", self.position, self.problem)
    }
}

/// The outcome of walking a chain: how far it verified, and the first failure if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records that verified.
    pub records: u64,
    /// The last record that verified (its position and hash).
    pub verified_head: Head,
    pub failure: Option<ChainFailure>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// What the chain needs of one record: the hash stored with it, the hash its bytes give, and the
/// position and previous hash it names. Finding these is the costly part of verifying (a parse and
/// a SHA-256) and does not depend on the records before, so it can run on any thread; the links are
/// then checked in order by [`ChainWalker::push_hashed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashedRecord {
    pub stored_hash: Digest32,
    pub computed: Digest32,
    pub position: u64,
    pub prev_hash: Digest32,
}

impl HashedRecord {
    /// Parses and hashes a stored record; the error says why it is not a record.
    pub fn of(stored: &[u8]) -> Result<HashedRecord, String> {
        Self::of_checked(stored, Utf8::Unknown)
    }

    pub(crate) fn of_checked(stored: &[u8], utf8: Utf8) -> Result<HashedRecord, String> {
        let (stored_hash, body, fields): (_, _, ChainFields) =
            split_and_parse_checked(stored, utf8).map_err(|e| e.to_string())?;
        Ok(HashedRecord::from_parts(stored_hash, body, fields.position, fields.prev_hash))
    }

    /// From a record already parsed: its stored hash, the exact bytes of its `record` object, and
    /// the position and previous hash it holds.
    pub(crate) fn from_parts(stored_hash: Digest32, body: &[u8], position: u64, prev_hash: Digest32) -> HashedRecord {
        HashedRecord { stored_hash, computed: Digest32::chain(&prev_hash, body), position, prev_hash }
    }
}

/// Checks records one at a time, in order. Holds only the last good head, so any length streams.
#[derive(Debug)]
pub struct ChainWalker {
    head: Head,
    records: u64,
    anchors: Vec<Head>,
}

impl ChainWalker {
    pub fn new() -> ChainWalker {
        ChainWalker::resume(Head::EMPTY)
    }

    /// Walks on from `head`, a record already known good (the head a vault anchored): the next record
    /// must be at `head.position + 1` and name `head.hash` as its predecessor. Only the records
    /// pushed count in the report.
    pub fn resume(head: Head) -> ChainWalker {
        ChainWalker { head, records: 0, anchors: Vec::new() }
    }

    /// Also require that the chain reaches `anchor` and that the record at its position has its hash.
    pub fn with_anchor(mut self, anchor: Head) -> ChainWalker {
        self.anchors.push(anchor);
        self
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// Checks the next record. `stored_at` is the position it is stored under, when the source has
    /// one (a store key); an exported line has none. On success returns the record's hash.
    pub fn push(&mut self, stored_at: Option<u64>, stored: &[u8]) -> Result<Digest32, ChainFailure> {
        self.push_hashed(stored_at, HashedRecord::of(stored))
    }

    /// Checks the next record from what [`HashedRecord::of`] found in it (or why it found nothing),
    /// for readers that parse and hash records on other threads and walk the results in order.
    pub fn push_hashed(
        &mut self,
        stored_at: Option<u64>,
        record: Result<HashedRecord, String>,
    ) -> Result<Digest32, ChainFailure> {
        let expected = self.head.position + 1;
        let fail = |position: u64, problem: Problem| ChainFailure { position, problem };
        let at = stored_at.unwrap_or(expected);
        if at != expected {
            return Err(fail(expected, Problem::Gap { expected, found: at }));
        }
        let HashedRecord { stored_hash, computed, position, prev_hash } =
            record.map_err(|detail| fail(at, Problem::Malformed { detail }))?;
        if computed != stored_hash {
            return Err(fail(at, Problem::HashMismatch { stored: stored_hash, computed }));
        }
        if position != at {
            // A file has no keys: a record that claims a later position means records are missing.
            let problem = match (stored_at, position > at) {
                (None, true) => Problem::Gap { expected, found: position },
                _ => Problem::PositionMismatch { stored_at: at, claims: position },
            };
            return Err(fail(at, problem));
        }
        if prev_hash != self.head.hash {
            return Err(fail(at, Problem::BrokenLink { expected_prev: self.head.hash, found_prev: prev_hash }));
        }
        for anchor in &self.anchors {
            if anchor.position == at && anchor.hash != computed {
                return Err(fail(at, Problem::HeadMismatch { expected: anchor.hash, found: computed }));
            }
        }
        self.head = Head { position: at, hash: computed };
        self.records += 1;
        Ok(computed)
    }

    /// Ends the walk: checks that every anchor was reached and builds the report.
    pub fn finish(self, failure: Option<ChainFailure>) -> VerifyReport {
        let failure = failure.or_else(|| {
            self.anchors.iter().find(|anchor| anchor.position > self.head.position).map(|anchor| ChainFailure {
                position: self.head.position + 1,
                problem: Problem::Truncated { last: self.head.position, expected_head: anchor.position },
            })
        });
        VerifyReport { records: self.records, verified_head: self.head, failure }
    }
}

impl Default for ChainWalker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Digest32;

    /// A stored line at `position` after `prev`, with a payload, as the store writes it.
    fn line(position: u64, prev: Digest32, payload: &str) -> (Vec<u8>, Digest32) {
        let body = format!(r#"{{"position":{position},"prev_hash":"{prev}","payload":"{payload}"}}"#);
        let hash = Digest32::chain(&prev, body.as_bytes());
        (format!(r#"{{"hash":"{hash}","record":{body}}}"#).into_bytes(), hash)
    }

    #[test]
    fn a_resumed_walk_links_to_the_head_it_starts_from() {
        let (first, h1) = line(1, Digest32::GENESIS, "a");
        let (second, h2) = line(2, h1, "b");
        let (third, h3) = line(3, h2, "c");
        let mut full = ChainWalker::new();
        for (at, stored) in [&first, &second, &third].into_iter().enumerate() {
            full.push(None, stored).unwrap();
            assert_eq!(full.head().position, at as u64 + 1);
        }
        assert_eq!(full.head(), Head { position: 3, hash: h3 });

        // From the head at 1, records 2 and 3 verify on their own and end at the same head.
        let mut resumed = ChainWalker::resume(Head { position: 1, hash: h1 });
        assert_eq!(resumed.push(None, &second).unwrap(), h2);
        assert_eq!(resumed.push(None, &third).unwrap(), h3);
        let report = resumed.finish(None);
        assert_eq!((report.records, report.verified_head, report.failure), (2, Head { position: 3, hash: h3 }, None));

        // Another head at 1: record 2 does not link to it.
        let other = Digest32([9; 32]);
        let failure = ChainWalker::resume(Head { position: 1, hash: other }).push(None, &second).unwrap_err();
        assert_eq!(
            failure,
            ChainFailure { position: 2, problem: Problem::BrokenLink { expected_prev: other, found_prev: h1 } }
        );
        // A record other than the next one: a gap after the head, or one at or before it.
        let failure = ChainWalker::resume(Head { position: 1, hash: h1 }).push(None, &third).unwrap_err();
        assert_eq!(failure.problem, Problem::Gap { expected: 2, found: 3 });
        let failure = ChainWalker::resume(Head { position: 2, hash: h2 }).push(None, &second).unwrap_err();
        assert_eq!(failure.problem, Problem::PositionMismatch { stored_at: 3, claims: 2 });
        // A record whose bytes were changed after its hash was taken.
        let altered = String::from_utf8(second.clone()).unwrap().replace("\"b\"", "\"x\"");
        let failure = ChainWalker::resume(Head { position: 1, hash: h1 }).push(None, altered.as_bytes()).unwrap_err();
        assert!(matches!(failure.problem, Problem::HashMismatch { stored, .. } if stored == h2), "{failure}");
    }
}
