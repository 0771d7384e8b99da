//! Exported logs: JSON Lines, a header line and then each record's stored bytes verbatim, one a line.
//! An export verifies on its own, without the store that wrote it, and imports back byte for byte.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::chain::{ChainWalker, HashedRecord, VerifyReport};
use crate::error::{Result, StoreError};
use crate::layout::{self, HEAD_KEY};
use crate::read_ahead::{BATCH_BYTES, BATCH_ITEMS, read_ahead};
use crate::record::{Head, MAX_RECORD_BYTES, PlacementFields, Utf8};
use crate::store::EventStore;

/// The `format` a header names.
pub const FORMAT_NAME: &str = "regent-log";
/// The newest export format this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    pub format_version: u32,
    /// The build that wrote the export, e.g. `regent 0.1.0`.
    pub writer: String,
    /// The head at export time: the file must reach it, so a cut-off copy is caught.
    pub head: Head,
}

/// Records written to the store per atomic batch during an import.
const IMPORT_BATCH: usize = 1024;

impl EventStore {
    /// Writes the log up to the current head as JSON Lines and returns that head.
    pub fn export(&self, out: &mut impl Write, writer: &str) -> Result<Head> {
        let head = self.head();
        let header =
            ExportHeader { format: FORMAT_NAME.into(), format_version: FORMAT_VERSION, writer: writer.into(), head };
        let io = |e| StoreError::Io { path: "export output".into(), source: e };
        serde_json::to_writer(&mut *out, &header).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
        for item in self.raw_records(1) {
            let (position, bytes) = item?;
            if position > head.position {
                break;
            }
            out.write_all(&bytes).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)?;
        Ok(head)
    }

    /// Loads an export into this store, which must be empty. The chain is verified as it is read; a
    /// broken chain, a malformed line or a file that stops short of its header's head leaves the
    /// store empty again.
    pub fn import(&self, input: impl BufRead) -> Result<Head> {
        let mut head_guard = self.writer_for_import()?;
        match self.import_lines(input) {
            Ok(head) => {
                *head_guard = head;
                drop(head_guard);
                self.note_durable(head);
                Ok(head)
            }
            Err(err) => {
                self.log.clear().map_err(|e| StoreError::from_sled(self.path(), e))?;
                self.flush()?;
                Err(err)
            }
        }
    }

    fn import_lines(&self, input: impl BufRead) -> Result<Head> {
        let sled_err = |e| StoreError::from_sled(self.path(), e);
        let mut lines = LogLines::new(input);
        let header = lines.header()?;
        let mut walker = ChainWalker::new();
        let mut streams: HashMap<String, u64> = HashMap::new();
        let mut batch = sled::Batch::default();
        let mut batch_ids = HashSet::new();
        while let Some((line_no, bytes)) = lines.next_line()? {
            let bad = |detail: String| StoreError::BadLogFile { line: line_no, detail };
            let hash = walker.push(None, bytes).map_err(StoreError::ChainBroken)?;
            let (_, _, placed): (_, _, PlacementFields) =
                crate::record::split_and_parse(bytes).map_err(|e| bad(format!("not a record: {e}")))?;
            let version = streams.entry(placed.stream.to_string()).or_insert(0);
            if placed.version != *version + 1 {
                return Err(bad(format!(
                    "stream {} jumps from version {} to {}",
                    placed.stream, version, placed.version
                )));
            }
            *version = placed.version;
            let event_key = layout::event_key(&placed.event_id);
            if !batch_ids.insert(placed.event_id) || self.log.contains_key(event_key).map_err(sled_err)? {
                return Err(bad(format!("event id {} appears twice", placed.event_id)));
            }
            batch.insert(&layout::record_key(placed.position), bytes);
            batch.insert(layout::stream_key(&placed.stream, placed.version), &layout::encode_u64(placed.position));
            batch.insert(&event_key, &layout::encode_u64(placed.position));
            debug_assert_eq!(walker.head().hash, hash);
            if batch_ids.len() >= IMPORT_BATCH {
                self.log.apply_batch(std::mem::take(&mut batch)).map_err(sled_err)?;
                batch_ids.clear();
            }
        }
        let report = walker.finish(None);
        if report.verified_head != header.head {
            return Err(StoreError::BadLogFile {
                line: lines.line_no,
                detail: format!(
                    "the file ends at {} but its header names head {}: the copy is incomplete",
                    report.verified_head, header.head
                ),
            });
        }
        for (stream, version) in &streams {
            batch.insert(layout::stream_version_key(stream), &layout::encode_u64(*version));
        }
        batch.insert(HEAD_KEY, &layout::encode_head(&report.verified_head)[..]);
        self.log.apply_batch(batch).map_err(sled_err)?;
        self.flush()?;
        Ok(report.verified_head)
    }

    fn writer_for_import(&self) -> Result<std::sync::MutexGuard<'_, Head>> {
        let guard = self.lock_writer();
        // Any key at all, not only a head: an import cut short by a crash leaves records behind
        // without one, and importing over them would mix two logs.
        let holds_data = self.log.first().map_err(|e| StoreError::from_sled(self.path(), e))?.is_some();
        if guard.position > 0 || holds_data {
            return Err(StoreError::NotEmpty { records: guard.position });
        }
        Ok(guard)
    }
}

/// Verifies an exported log without any store: the chain, the header's head and, if given, an
/// anchor kept elsewhere. A malformed line is reported as the failure at its position.
pub fn verify_export<R: BufRead + Send + 'static>(
    input: R,
    anchor: Option<Head>,
) -> Result<(ExportHeader, VerifyReport)> {
    let mut lines = LogLines::new(input);
    let header = lines.header()?;
    let mut walker = ChainWalker::new().with_anchor(header.head);
    if let Some(anchor) = anchor {
        walker = walker.with_anchor(anchor);
    }
    let hashed = read_ahead(line_batches(lines), |batch: LineBatch| {
        batch.work(|_, bytes| HashedRecord::of_checked(bytes, Utf8::Checked))
    });
    for item in hashed {
        let hashed = match item {
            Ok(ReadLine::Line { worked, .. }) => worked,
            Ok(ReadLine::End { .. }) => break,
            Err(StoreError::BadLogFile { detail, .. }) => {
                let failure = crate::chain::ChainFailure {
                    position: walker.head().position + 1,
                    problem: crate::chain::Problem::Malformed { detail },
                };
                return Ok((header, walker.finish(Some(failure))));
            }
            Err(other) => return Err(other),
        };
        if let Err(failure) = walker.push_hashed(None, hashed) {
            return Ok((header, walker.finish(Some(failure))));
        }
    }
    Ok((header, walker.finish(None)))
}

/// Reads an exported log as records, without any store, streaming. With `verify`, the chain is
/// checked as it is read and a broken link ends the stream with `ChainBroken`; a file that stops
/// short of its header's head is reported once the end is reached.
pub fn read_export<R: BufRead + Send + 'static>(
    input: R,
    verify: bool,
) -> Result<(ExportHeader, impl Iterator<Item = Result<crate::Record>>)> {
    let (header, records) = read_export_decoded(input, verify, |_| ())?;
    Ok((header, records.map(|item| item.map(|(record, ())| record))))
}

/// [`read_export`], with `decode` applied to each record too (e.g. reading its payload).
///
/// Reading runs on a thread of its own, and parsing, hashing and `decode` on worker threads, a few
/// batches ahead of the caller; the chain's links are checked in order as the caller takes the
/// records. Dropping the iterator stops the threads. Memory stays bounded by the batches in flight.
pub fn read_export_decoded<R, T, F>(
    input: R,
    verify: bool,
    decode: F,
) -> Result<(ExportHeader, impl Iterator<Item = Result<(crate::Record, T)>>)>
where
    R: BufRead + Send + 'static,
    T: Send + 'static,
    F: Fn(&crate::Record) -> T + Send + Sync + 'static,
{
    let mut lines = LogLines::new(input);
    let header = lines.header()?;
    let expected_head = header.head;
    let work = move |batch: LineBatch| {
        batch.work(|_, bytes| match crate::record::decode_parts(bytes, Utf8::Checked) {
            Ok((body, record)) => {
                let hashed =
                    verify.then(|| Ok(HashedRecord::from_parts(record.hash, body, record.position, record.prev_hash)));
                let decoded = decode(&record);
                (hashed, Ok((record, decoded)))
            }
            // Only a line that does not read as a record is parsed again, for the chain's own reading
            // of what is wrong with it.
            Err(e) => (verify.then(|| HashedRecord::of_checked(bytes, Utf8::Checked)), Err(e.to_string())),
        })
    };
    let mut walker = ChainWalker::new();
    let mut items = read_ahead(line_batches(lines), work);
    let mut done = false;
    let records = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let result = match items.next()? {
            Ok(ReadLine::Line { line, worked: (hashed, record) }) => {
                match hashed.map(|hashed| walker.push_hashed(None, hashed)) {
                    Some(Err(failure)) => Err(StoreError::ChainBroken(failure)),
                    _ => record.map_err(|e| StoreError::BadLogFile { line, detail: format!("not a record: {e}") }),
                }
            }
            Ok(ReadLine::End { line }) => {
                done = true;
                if verify && walker.head() != expected_head {
                    return Some(Err(StoreError::BadLogFile {
                        line,
                        detail: format!(
                            "the file ends at {} but its header names head {}: the copy is incomplete",
                            walker.head(),
                            expected_head
                        ),
                    }));
                }
                return None;
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            done = true;
        }
        Some(result)
    });
    Ok((header, records))
}

/// Writes the export `input` to `output` with `edit` applied to each of its records in turn. From
/// the first record `edit` changes (it returns true) on, each record is written anew as the store
/// writes one, naming the hash of the record before it; the records before are copied verbatim;
/// the header names the new head. So the result verifies like any export. The input's chain is
/// checked as it is read.
///
/// This is for test fixtures that stand for what another build wrote (`replay-fixtures/`): a
/// store's own records are never rewritten. The records are held in memory until the header,
/// which comes first, can be written.
pub fn rechain_export<R: BufRead, W: Write>(
    input: R,
    output: &mut W,
    mut edit: impl FnMut(&mut crate::Record) -> bool,
) -> Result<Head> {
    let mut lines = LogLines::new(input);
    let mut header = lines.header()?;
    let mut walker = ChainWalker::new();
    let mut rewritten = Vec::new();
    let mut head = Head::EMPTY;
    let mut rewriting = false;
    while let Some((line, bytes)) = lines.next_line()? {
        walker.push(None, bytes).map_err(StoreError::ChainBroken)?;
        let bad = |detail: String| StoreError::BadLogFile { line, detail };
        let (_, mut record) =
            crate::record::decode_parts(bytes, Utf8::Checked).map_err(|e| bad(format!("not a record: {e}")))?;
        rewriting |= edit(&mut record);
        let hash = if rewriting {
            let (stored, hash) = crate::record::encode_again(&record, &head.hash)
                .map_err(|e| bad(format!("the record cannot be written: {e}")))?;
            rewritten.extend_from_slice(&stored);
            hash
        } else {
            rewritten.extend_from_slice(bytes);
            record.hash
        };
        rewritten.push(b'\n');
        head = Head { position: record.position, hash };
    }
    let read = walker.finish(None).verified_head;
    if read != header.head {
        return Err(StoreError::BadLogFile {
            line: lines.line_no,
            detail: format!(
                "the file ends at {read} but its header names head {}: the copy is incomplete",
                header.head
            ),
        });
    }
    header.head = head;
    let io = |e| StoreError::Io { path: "export output".into(), source: e };
    serde_json::to_writer(&mut *output, &header).map_err(|e| io(e.into()))?;
    output.write_all(b"\n").and_then(|()| output.write_all(&rewritten)).and_then(|()| output.flush()).map_err(io)?;
    Ok(head)
}

/// Lines of an export packed into one buffer, so that a batch is two allocations however many lines
/// it holds.
struct LineBatch {
    text: Vec<u8>,
    /// Each line's number and where it is in `text`.
    lines: Vec<(u64, std::ops::Range<usize>)>,
    /// How reading ended after these lines, if it did.
    ending: Option<Result<u64>>,
}

/// A line worked on, or the end of the file (with the number the next line would have had).
enum ReadLine<W> {
    Line { line: u64, worked: W },
    End { line: u64 },
}

impl LineBatch {
    fn work<W>(self, mut each: impl FnMut(u64, &[u8]) -> W) -> Vec<Result<ReadLine<W>>> {
        let mut worked: Vec<Result<ReadLine<W>>> = self
            .lines
            .iter()
            .map(|(line, range)| Ok(ReadLine::Line { line: *line, worked: each(*line, &self.text[range.clone()]) }))
            .collect();
        match self.ending {
            Some(Ok(line)) => worked.push(Ok(ReadLine::End { line })),
            Some(Err(e)) => worked.push(Err(e)),
            None => {}
        }
        worked
    }
}

/// The lines after the header, in batches, read on the producer thread.
fn line_batches<R: BufRead>(mut lines: LogLines<R>) -> impl Iterator<Item = LineBatch> {
    let mut ended = false;
    std::iter::from_fn(move || {
        if ended {
            return None;
        }
        let mut batch = LineBatch {
            text: Vec::with_capacity(BATCH_BYTES + MAX_RECORD_BYTES),
            lines: Vec::with_capacity(BATCH_ITEMS),
            ending: None,
        };
        while batch.ending.is_none() && batch.lines.len() < BATCH_ITEMS && batch.text.len() < BATCH_BYTES {
            match lines.next_line() {
                Ok(Some((line, bytes))) => {
                    let start = batch.text.len();
                    batch.text.extend_from_slice(bytes);
                    batch.lines.push((line, start..batch.text.len()));
                }
                Ok(None) => batch.ending = Some(Ok(lines.line_no)),
                Err(e) => batch.ending = Some(Err(e)),
            }
        }
        ended = batch.ending.is_some();
        Some(batch)
    })
}

/// Reads an export line by line with a bound on each line, so a huge or hostile file cannot make
/// the reader hold more than one record in memory.
struct LogLines<R> {
    input: R,
    line_no: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> LogLines<R> {
    fn new(input: R) -> Self {
        LogLines { input, line_no: 0, buf: Vec::new() }
    }

    fn header(&mut self) -> Result<ExportHeader> {
        let Some((line, bytes)) = self.next_line()? else {
            return Err(StoreError::BadLogFile {
                line: 1,
                detail: "the file is empty; it is not a regent log export".into(),
            });
        };
        let not_ours = || StoreError::BadLogFile {
            line,
            detail: format!("this is not a regent log export (the first line must be a `{FORMAT_NAME}` header)"),
        };
        let header: ExportHeader = serde_json::from_slice(bytes).map_err(|_| not_ours())?;
        if header.format != FORMAT_NAME {
            return Err(not_ours());
        }
        if header.format_version > FORMAT_VERSION {
            return Err(StoreError::BadLogFile {
                line,
                detail: format!(
                    "the export is format version {}, written by {}; this build reads up to version {FORMAT_VERSION}: upgrade regent",
                    header.format_version, header.writer
                ),
            });
        }
        Ok(header)
    }

    /// The next non-empty line without its newline, or None at the end.
    fn next_line(&mut self) -> Result<Option<(u64, &[u8])>> {
        loop {
            self.buf.clear();
            self.line_no += 1;
            let line = self.line_no;
            let read = std::io::Read::take(&mut self.input, MAX_RECORD_BYTES as u64 + 2)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| StoreError::Io { path: "log file".into(), source: e })?;
            if read == 0 {
                return Ok(None);
            }
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            } else if self.buf.len() > MAX_RECORD_BYTES {
                return Err(StoreError::BadLogFile {
                    line,
                    detail: format!("the line is longer than {MAX_RECORD_BYTES} bytes; no record is that long"),
                });
            }
            if self.buf.len() > MAX_RECORD_BYTES {
                return Err(StoreError::BadLogFile {
                    line,
                    detail: format!("the line is longer than {MAX_RECORD_BYTES} bytes; no record is that long"),
                });
            }
            if std::str::from_utf8(&self.buf).is_err() {
                return Err(StoreError::BadLogFile { line, detail: "the line is not valid UTF-8".into() });
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some((line, &self.buf)));
        }
    }
}
