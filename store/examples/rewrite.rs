//! Rewrites one recorded export into what another build would have written, and re-chains it, for
//! `replay-fixtures/record.sh`: the two fixtures no build in this repository can write directly.
//!
//! ```text
//! cargo run -p regent-store --example rewrite -- MODE IN OUT [ARG]
//! ```
//!
//! - `schema-1 IN OUT SIZE`: the folders event as schema 1 wrote it (the backup size as typed,
//!   `"backup_size": "1GiB"`, instead of `"backup_size_bytes"`, and no `build`), which the
//!   current build upcasts on read.
//! - `short-12 IN OUT`: a passphrase step recorded by a build whose minimum was 12 characters: the
//!   recorded passphrase length becomes 12 and the recorded outcome stays accepted, so that
//!   `regent replay --check` must find the divergence there.
//!
//! Only the first record the mode applies to is changed. Every record from it on is written again
//! by the store's own writer with the hash of the one before it, and the header gets the new head
//! ([`regent_store::rechain_export`]), so the result verifies like any export.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;

use indexmap::IndexMap;
use regent_store::Record;
use serde_json::value::RawValue;

const USAGE: &str = "usage: rewrite schema-1 IN OUT SIZE | rewrite short-12 IN OUT";

/// A JSON object with its keys in the order they were written, each value as its bytes: an edit
/// changes what it names and nothing else.
type Object = IndexMap<String, Box<RawValue>>;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rewrite: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let (mode, source, target, arg) = match args.as_slice() {
        [mode, source, target] => (mode.as_str(), source, target, None),
        [mode, source, target, arg] => (mode.as_str(), source, target, Some(arg.as_str())),
        _ => return Err(USAGE.into()),
    };
    let mode = match (mode, arg) {
        ("schema-1", Some(size)) => Mode::Schema1 { typed_size: size.to_string() },
        ("short-12", None) => Mode::Short12,
        _ => return Err(USAGE.into()),
    };
    let input = File::open(source).map_err(|e| format!("cannot read {source}: {e}"))?;
    let mut output = BufWriter::new(File::create(target).map_err(|e| format!("cannot write {target}: {e}"))?);
    let mut rewritten = 0;
    let mut failed = None;
    regent_store::rechain_export(BufReader::new(input), &mut output, |record| {
        if rewritten > 0 || failed.is_some() {
            return false;
        }
        match mode.apply(record) {
            Ok(changed) => {
                rewritten += usize::from(changed);
                changed
            }
            Err(e) => {
                failed = Some(format!("record {}: {e}", record.position));
                false
            }
        }
    })
    .map_err(|e| format!("{source}: {e}"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    if rewritten != 1 {
        return Err(format!("{}: no record to rewrite in {source}", mode.name()));
    }
    Ok(())
}

enum Mode {
    Schema1 { typed_size: String },
    Short12,
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Schema1 { .. } => "schema-1",
            Mode::Short12 => "short-12",
        }
    }

    /// Changes `record` if the mode applies to it; whether it did.
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        match self {
            Mode::Schema1 { typed_size } => to_schema_1(record, typed_size),
            Mode::Short12 => passphrase_length_12(record),
        }
    }
}

/// The folders step with the backup size as typed, in the command and in the accepted change.
fn to_schema_1(record: &mut Record, typed_size: &str) -> Result<bool, String> {
    let mut payload: Object = parse(record.payload.get())?;
    let mut command: Object = parse(field(&payload, "command")?.get())?;
    if text(&command, "command").as_deref() != Some("choose_folders") {
        return Ok(false);
    }
    let mut outcome: Object = parse(field(&payload, "outcome")?.get())?;
    for part in [&mut command, &mut outcome] {
        if part.shift_remove("backup_size_bytes").is_some() {
            part.insert("backup_size".into(), raw(typed_size)?);
        }
    }
    payload.insert("command".into(), raw(&command)?);
    payload.insert("outcome".into(), raw(&outcome)?);
    // Schema 1 named no build (schema 4 began to).
    payload.shift_remove("build");
    record.payload = raw(&payload)?;
    record.schema = 1;
    Ok(true)
}

/// An accepted passphrase step whose passphrase was recorded as 12 characters long.
fn passphrase_length_12(record: &mut Record) -> Result<bool, String> {
    let mut payload: Object = parse(record.payload.get())?;
    let command: Object = parse(field(&payload, "command")?.get())?;
    let outcome: Object = parse(field(&payload, "outcome")?.get())?;
    if text(&command, "command").as_deref() != Some("set_passphrase")
        || text(&outcome, "outcome").as_deref() != Some("accepted")
    {
        return Ok(false);
    }
    let mut observed: Object = parse(field(&payload, "observed")?.get())?;
    let mut passphrase: Object = parse(field(&observed, "passphrase")?.get())?;
    passphrase.insert("length".into(), raw(&12)?);
    observed.insert("passphrase".into(), raw(&passphrase)?);
    payload.insert("observed".into(), raw(&observed)?);
    record.payload = raw(&payload)?;
    Ok(true)
}

fn parse(json: &str) -> Result<Object, String> {
    serde_json::from_str(json).map_err(|e| format!("not a JSON object: {e}"))
}

fn field<'a>(object: &'a Object, name: &str) -> Result<&'a RawValue, String> {
    object.get(name).map(|value| &**value).ok_or_else(|| format!("no `{name}` in the payload"))
}

/// The string `name` holds, if it is one.
fn text(object: &Object, name: &str) -> Option<String> {
    serde_json::from_str(object.get(name)?.get()).ok()
}

fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, String> {
    serde_json::value::to_raw_value(value).map_err(|e| e.to_string())
}
