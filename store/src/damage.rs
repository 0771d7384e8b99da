//! What is wrong with a store found damaged when it is opened, and reading what is left of one
//! sled cannot open, without writing to it.

use std::fmt;
use std::path::Path;

use crate::chain::VerifyReport;
use crate::error::{Result, StoreError};
use crate::record::Head;
use crate::store::{EventStore, StoreOptions};

/// The file beside sled's that keeps the head last known on disk (see `DurableHeadFile`).
pub(crate) const DURABLE_HEAD_FILE: &str = "regent-durable-head";
/// sled's data file: the records live in it.
const SLED_DATA_FILE: &str = "db";

/// Why a store cannot be trusted. A store that opens damaged still reads (and verifies, to locate
/// the damage) and refuses appends; one that does not open is `StoreError::Damaged`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// sled cannot read its own files: it reported corruption (at a byte of its data file, when it
    /// says where) or failed while reading them.
    Unreadable { at_byte: Option<u64>, written: Option<Head> },
    /// sled's data file is gone from a directory that held a store (its other files, or regent's
    /// durable head, are still there).
    FilesMissing { written: Option<Head> },
    /// The log opens shorter than the head last written to disk: sled kept a readable prefix.
    RecordsLost { ends_at: u64, written: Head },
    /// The record at the position last written to disk is another one.
    Replaced { position: u64 },
    /// The stored head and the last record disagree.
    HeadDisagrees { head: u64, last_record: u64 },
}

impl Damage {
    /// The head last known on disk, when regent's side file names one: how far the log went.
    pub fn written(&self) -> Option<Head> {
        match self {
            Damage::Unreadable { written, .. } | Damage::FilesMissing { written } => *written,
            Damage::RecordsLost { written, .. } => Some(*written),
            Damage::Replaced { .. } | Damage::HeadDisagrees { .. } => None,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = |f: &mut fmt::Formatter<'_>, written: &Option<Head>| match written {
            Some(head) if head.position > 0 => write!(f, "; it held {}", record_range(1, head.position)),
            _ => Ok(()),
        };
        match self {
            Damage::Unreadable { at_byte, written } => {
                f.write_str("sled cannot read its files")?;
                if let Some(at) = at_byte {
                    write!(f, " (its data file, db, is damaged at byte {at})")?;
                }
                held(f, written)
            }
            Damage::FilesMissing { written } => {
                f.write_str("sled's data file (db) is gone")?;
                held(f, written)
            }
            Damage::RecordsLost { ends_at, written } => write!(
                f,
                "it ends at record {ends_at} but records up to {} were written to disk: {} lost",
                written.position,
                are(ends_at + 1, written.position)
            ),
            Damage::Replaced { position } => {
                write!(f, "record {position} is not the one written to disk there: the store was altered or replaced")
            }
            Damage::HeadDisagrees { head, last_record } if head > last_record => write!(
                f,
                "its head names record {head} but the records stop at {last_record}: {} missing",
                are(last_record + 1, *head)
            ),
            Damage::HeadDisagrees { head, last_record } => {
                write!(f, "its head names record {head} but records go on to {last_record}: the head was rewritten")
            }
        }
    }
}

/// `records 3..7`, or `record 3` for one.
pub fn record_range(first: u64, last: u64) -> String {
    if first == last { format!("record {first}") } else { format!("records {first}..{last}") }
}

/// `records 3..7 are`, or `record 3 is`.
fn are(first: u64, last: u64) -> String {
    format!("{} {}", record_range(first, last), if first == last { "is" } else { "are" })
}

/// The head regent last recorded as on disk, read without creating or changing anything.
pub(crate) fn read_durable_head(dir: &Path) -> Option<Head> {
    let text = std::fs::read_to_string(dir.join(DURABLE_HEAD_FILE)).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// A directory that held a store but lost sled's data file. Opening it, sled would create an empty
/// one and the store would open empty, as a new one: the records would be gone without a word.
/// Only sled's and regent's own files count, so an empty directory (a caller's new store) is not
/// damage here.
pub(crate) fn data_file_missing(dir: &Path) -> Option<Damage> {
    if !dir.is_dir() || dir.join(SLED_DATA_FILE).exists() {
        return None;
    }
    let ours = |name: &str| matches!(name, "conf" | "blobs" | DURABLE_HEAD_FILE) || name.starts_with("snap.");
    let held_a_store = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .any(|entry| entry.file_name().to_str().is_some_and(ours));
    held_a_store.then(|| Damage::FilesMissing { written: read_durable_head(dir) })
}

/// What still reads of a store sled cannot open, found without writing to it.
///
/// sled's files are copied into `scratch` (an empty directory), all but its snapshot, and opened
/// there: without a snapshot sled rebuilds the tree from its data file and keeps what reads, as its
/// recovery does. The copy is then verified against the head last written to disk (the side file
/// is copied too), so the report says which records still read and verify and where the log
/// stops short. The copy is needed because sled will not open the store with its snapshot (that is
/// the damage it found), and removing the snapshot from the store itself would let sled rewrite it.
pub fn salvage(dir: &Path, scratch: &Path) -> Result<VerifyReport> {
    let io = |path: &Path, source| StoreError::Io { path: path.to_path_buf(), source };
    for name in ["conf", SLED_DATA_FILE, DURABLE_HEAD_FILE] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::copy(&from, scratch.join(name)).map_err(|e| io(&from, e))?;
        }
    }
    let blobs = dir.join("blobs");
    if blobs.is_dir() {
        std::fs::create_dir(scratch.join("blobs")).map_err(|e| io(&scratch.join("blobs"), e))?;
        for entry in std::fs::read_dir(&blobs).map_err(|e| io(&blobs, e))? {
            let entry = entry.map_err(|e| io(&blobs, e))?;
            std::fs::copy(entry.path(), scratch.join("blobs").join(entry.file_name()))
                .map_err(|e| io(&entry.path(), e))?;
        }
    }
    EventStore::open(scratch, &StoreOptions::default())?.verify(None)
}
