//! Saying that the store is damaged so that a person can act: what is damaged, what of it still
//! reads, and the commands that restore it (move it aside, then `regent import` an export).

use std::path::{Path, PathBuf};

use regent_store::{Damage, EventStore, Problem, StoreError, VerifyReport, record_range};

use crate::failure::Failure;

/// sled's data file is copied to find what still reads of a store sled cannot open; past this
/// size only `regent audit verify` makes the copy, so that every command on a large damaged
/// store does not copy it again.
pub const SALVAGE_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// What a walk of a damaged store (or of a copy of it) found, for the message.
pub enum Reads<'a> {
    Walked(&'a VerifyReport),
    /// There is nothing to walk: sled's data file is gone.
    Nothing,
    /// No walk was made, or it failed: why.
    Unknown(String),
}

/// `<data-dir>/store` exists and holds nothing. regent never makes that directory itself (sled
/// does, writing its files into it at once), so its files were removed; opened, it would be a new,
/// empty store, and the records would be gone without a word.
pub fn refuse_emptied(store_dir: &Path) -> Result<(), StoreError> {
    let empty = std::fs::read_dir(store_dir).is_ok_and(|mut entries| entries.next().is_none());
    if empty {
        return Err(StoreError::Damaged {
            path: store_dir.to_path_buf(),
            damage: Damage::FilesMissing { written: None },
        });
    }
    Ok(())
}

/// The one line for a store found damaged: what is wrong, what still reads, what to do.
pub fn failure(store_dir: &Path, damage: &Damage, reads: Reads<'_>, export: Option<&Path>) -> Failure {
    Failure::store(format!(
        "the store at {} is damaged: {damage}; {}; {}",
        store_dir.display(),
        reads_text(reads, Some(damage)),
        next_step(store_dir, export)
    ))
}

/// A store that opened damaged: walks it to say what still reads.
pub fn of_store(store: &EventStore, damage: &Damage, export: Option<&Path>) -> Failure {
    match store.verify(None) {
        Ok(report) => failure(store.path(), damage, Reads::Walked(&report), export),
        Err(e) => failure(store.path(), damage, Reads::Unknown(format!("walking it failed ({e})")), export),
    }
}

/// A store that opened clean, whose walk met a record sled cannot read: damaged as well.
pub fn unreadable_record(store_dir: &Path, report: &VerifyReport) -> Option<Failure> {
    let failure = report.failure.as_ref()?;
    matches!(failure.problem, Problem::Unreadable { .. }).then(|| {
        Failure::store(format!(
            "the store at {} is damaged: sled cannot read part of its data file; {}; {}",
            store_dir.display(),
            reads_text(Reads::Walked(report), None),
            next_step(store_dir, None)
        ))
    })
}

/// A store that did not open. When it did not because it is damaged, the line says what of it
/// still reads (read from a copy, up to `salvage_limit` bytes) and how to restore it.
pub fn open_failure(err: StoreError, salvage_limit: u64, export: Option<&Path>) -> Failure {
    match &err {
        StoreError::Damaged { path, damage } => salvaged_failure(path, damage, salvage_limit, export).1,
        _ => err.into(),
    }
}

/// The line for a store that did not open because it is damaged, and the walk of its copy.
fn salvaged_failure(
    store_dir: &Path,
    damage: &Damage,
    salvage_limit: u64,
    export: Option<&Path>,
) -> (Option<VerifyReport>, Failure) {
    match salvage(store_dir, damage, salvage_limit) {
        Some(Ok(report)) => {
            let failure = failure(store_dir, damage, Reads::Walked(&report), export);
            (Some(report), failure)
        }
        Some(Err(why)) => (None, failure(store_dir, damage, Reads::Unknown(why), export)),
        None => (None, failure(store_dir, damage, Reads::Nothing, export)),
    }
}

/// `status` on a store that did not open: when it is damaged, `--json` still prints a status
/// document, with `store_damage` set and what the log would tell unknown (null).
pub fn status_unreadable(json: bool, err: StoreError) -> Failure {
    let damaged = matches!(err, StoreError::Damaged { .. } | StoreError::Corrupt { .. });
    let failure = open_failure(err, SALVAGE_LIMIT_BYTES, None);
    if json && damaged {
        let document = serde_json::json!({
            "phase": null, "next_step": null, "vault": null, "last_failure": null, "events": null,
            "head": null, "sealed_secrets": null, "log_anchor": null, "store_damage": failure.message,
        });
        crate::terminal::json_line(document);
        return Failure { reported: true, ..failure };
    }
    failure
}

/// `audit verify` on a store that did not open: when it is damaged, the walk of a copy of it
/// (whatever its size: locating the damage is what verify is for), then the line.
pub fn verify_unreadable(err: StoreError, json: bool) -> Failure {
    match &err {
        StoreError::Damaged { path, damage } => {
            let (report, failure) = salvaged_failure(path, damage, u64::MAX, None);
            let note = "read from a copy of sled's files (sled cannot open the store itself):";
            print_damaged_report(report.as_ref().map(|r| (r, note)), damage, failure, json)
        }
        _ => err.into(),
    }
}

/// Prints a damaged store's verify report (when there is one) with its damage, and hands back
/// the line to end with.
pub fn print_damaged_report(
    report: Option<(&VerifyReport, &str)>,
    damage: &Damage,
    failure: Failure,
    json: bool,
) -> Failure {
    if json {
        let mut value = report
            .and_then(|(r, _)| serde_json::to_value(r).ok())
            .unwrap_or_else(|| serde_json::json!({ "records": 0, "verified_head": null, "failure": null }));
        value["store_damage"] = serde_json::json!(failure.message);
        crate::terminal::json_line(value);
        return Failure { reported: true, ..failure };
    } else {
        if let Some((report, note)) = report {
            if !note.is_empty() {
                crate::terminal::outln!("{note}");
            }
            crate::views::print_report(report, false);
        }
        crate::terminal::outln!("store DAMAGED: {damage}");
    }
    failure
}

/// What still reads of a store sled cannot open, from a copy in a temporary directory (see
/// `regent_store::salvage`); None when there is nothing to read (sled's data file is gone).
pub fn salvage(store_dir: &Path, damage: &Damage, limit: u64) -> Option<Result<VerifyReport, String>> {
    if !matches!(damage, Damage::Unreadable { .. }) {
        return None;
    }
    let size = std::fs::metadata(store_dir.join("db")).map(|m| m.len()).unwrap_or(0);
    if size > limit {
        return Some(Err(format!(
            "which records still read is not checked for a store of {} MiB: `regent audit verify` checks it",
            size / (1024 * 1024)
        )));
    }
    let result = tempfile::tempdir()
        .map_err(|e| format!("which records still read is unknown (no temporary directory to copy it to: {e})"))
        .and_then(|scratch| {
            regent_store::salvage(store_dir, scratch.path()).map_err(|e| {
                tracing::debug!(error = %e, "reading a copy of the damaged store failed");
                "none of its records can be read back".to_string()
            })
        });
    Some(result)
}

fn reads_text(reads: Reads<'_>, damage: Option<&Damage>) -> String {
    let report = match reads {
        Reads::Walked(report) => report,
        Reads::Nothing => return "none of its records can be read".into(),
        Reads::Unknown(why) => return why,
    };
    let good = report.verified_head.position;
    let mut text = if good == 0 {
        "no record of it reads".to_string()
    } else {
        let verbs = if good == 1 { "reads and verifies" } else { "read and verify" };
        format!("{} still {verbs}", record_range(1, good))
    };
    match &report.failure {
        None => {}
        Some(failure) => match failure.problem {
            // The damage says so already.
            Problem::Truncated { expected_head, .. } if lost_already_said(damage, expected_head) => {}
            Problem::Truncated { last, expected_head } => {
                let lost = record_range(last + 1, expected_head);
                text.push_str(&format!(", {lost} {} lost", if last + 1 == expected_head { "is" } else { "are" }));
            }
            _ => text.push_str(&format!(", then {failure}")),
        },
    }
    text
}

/// Whether the damage names the records lost up to `head` already.
fn lost_already_said(damage: Option<&Damage>, head: u64) -> bool {
    matches!(damage, Some(Damage::RecordsLost { written, .. }) if written.position == head)
}

/// The next steps that work on a damaged store: move it aside (naming the exact `mv`), then
/// import the last export (naming `export` when the user gave one).
pub fn next_step(store_dir: &Path, export: Option<&Path>) -> String {
    format!(
        "move it aside with `{}`, then restore your last export with `{}` (without one, start again with `regent wizard`)",
        move_aside(store_dir, "damaged"),
        import_command(export)
    )
}

/// The `mv` that moves the store to a free name beside it, `store.<why>`.
pub fn move_aside(store_dir: &Path, why: &str) -> String {
    let dir = std::path::absolute(store_dir).unwrap_or_else(|_| store_dir.to_path_buf());
    format!("mv {} {}", shell_quote(&dir), shell_quote(&aside(&dir, why)))
}

/// `regent import FILE`, with the file when it is known.
pub fn import_command(export: Option<&Path>) -> String {
    match export {
        Some(file) => {
            format!("regent import {}", shell_quote(&std::path::absolute(file).unwrap_or_else(|_| file.into())))
        }
        None => "regent import FILE".into(),
    }
}

/// A name beside the store that does not exist yet, for the damaged store to be moved to.
fn aside(dir: &Path, why: &str) -> PathBuf {
    let name = dir.file_name().map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    let candidate = |n: u32| match n {
        1 => dir.with_file_name(format!("{name}.{why}")),
        n => dir.with_file_name(format!("{name}.{why}-{n}")),
    };
    (1..1000).map(candidate).find(|path| !path.exists()).unwrap_or_else(|| candidate(1000))
}

/// A path as a shell word: as it is when it needs no quoting, else in single quotes.
pub fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_quoted_for_the_shell_only_when_it_needs_it() {
        assert_eq!(shell_quote(Path::new("/var/lib/regent/store")), "/var/lib/regent/store");
        assert_eq!(shell_quote(Path::new("/home/a b/store")), "'/home/a b/store'");
        assert_eq!(shell_quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
        assert_eq!(shell_quote(Path::new("/tmp/$HOME")), "'/tmp/$HOME'");
    }

    #[test]
    fn the_store_is_moved_aside_to_a_name_that_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        assert_eq!(aside(&store, "damaged"), dir.path().join("store.damaged"));
        std::fs::create_dir(dir.path().join("store.damaged")).unwrap();
        assert_eq!(aside(&store, "damaged"), dir.path().join("store.damaged-2"));
        let mv = move_aside(&store, "damaged");
        assert_eq!(mv, format!("mv {} {}", store.display(), dir.path().join("store.damaged-2").display()));
    }
}
