//! `regent vault export`, `regent vault rebuild-projections` and `regent vault migrate`: the vault
//! service's own log taken out (to audit it), its PostgreSQL tables made again from it, and a sled
//! vault moved to PostgreSQL.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use regent_vault::MoveError;

use crate::args::AdminArgs;
use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{self, outln};
use crate::vault::{admin_client, admin_failure, database_url_from_args};

/// The log (the service's own, or with `machine` = (vault, machine id) the records the vault keeps
/// of that machine's log) streams into a temporary file beside `output`; only once it verifies (its
/// chain and the head its header names) is it moved into place, never over a file. So `output` is a
/// whole, verified export or nothing.
pub fn export(ctx: &Context, admin: &AdminArgs, machine: Option<(&str, &str)>, output: &Path) -> Result<u8, Failure> {
    let cannot_write = |e: std::io::Error| {
        Failure::refused(format!("cannot write {}: {e}; choose a writable location", output.display()))
    };
    crate::views::new_file_only(output)?;
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let client = admin_client(ctx, admin)?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".regent-vault-log-")
        .suffix(".tmp")
        .tempfile_in(&directory)
        .map_err(cannot_write)?;
    let mut answer: Box<dyn Read> = match machine {
        Some((vault, machine_id)) => Box::new(client.export_machine_log(vault, machine_id).map_err(admin_failure)?),
        None => Box::new(client.export_log().map_err(admin_failure)?),
    };
    let what = match machine {
        Some((vault, machine_id)) => format!("machine {machine_id}'s log as vault {vault} keeps it"),
        None => "the vault service's log".to_string(),
    };
    let mut received: u64 = 0;
    {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, temporary.as_file_mut());
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = answer.read(&mut buffer).map_err(|e| {
                Failure::refused(format!(
                    "the vault service's answer broke off after {received} bytes ({e}); nothing was written to {}: \
                     run the export again",
                    output.display()
                ))
                .because("vault_unreachable")
            })?;
            if read == 0 {
                break;
            }
            received += read as u64;
            out.write_all(&buffer[..read]).map_err(cannot_write)?;
        }
        out.flush().map_err(cannot_write)?;
    }
    temporary.as_file().sync_all().map_err(cannot_write)?;
    let written = temporary.reopen().map_err(cannot_write)?;
    let (header, report) = regent_store::verify_export(BufReader::with_capacity(256 * 1024, written), None)?;
    if let Some(failure) = &report.failure {
        return Err(Failure::refused(format!(
            "{what}, as the vault service sent it, does not verify at {failure} (its header names head {}); nothing \
             was written to {}",
            header.head,
            output.display()
        ))
        .because("chain_broken"));
    }
    temporary.persist_noclobber(output).map_err(|e| cannot_write(e.error))?;
    if let Err(e) = std::fs::File::open(&directory).and_then(|dir| dir.sync_all()) {
        terminal::errln!("warning: wrote {} but could not sync {}: {e}", output.display(), directory.display());
    }
    if ctx.json {
        terminal::json_line(serde_json::json!({ "file": output, "records": report.records, "head": header.head }));
    } else {
        outln!(
            "exported {} of {} to {} (head {}; it verifies)",
            terminal::count(report.records, "record", "records"),
            what,
            output.display(),
            header.head
        );
    }
    Ok(0)
}

/// The database URL from `--database-url` or REGENT_VAULT_DATABASE_URL (a password only there).
fn database_url(given: Option<String>, command: &str) -> Result<String, Failure> {
    let url = given.ok_or_else(|| {
        Failure::usage(format!(
            "regent vault {command} needs the database: --database-url postgres://USER@HOST:PORT/DB or \
             REGENT_VAULT_DATABASE_URL"
        ))
    })?;
    database_url_from_args(url)
}

pub fn rebuild(ctx: &Context, database_url_given: Option<String>) -> Result<u8, Failure> {
    let url = database_url(database_url_given, "rebuild-projections")?;
    let summary = regent_vault::rebuild_projections(&url).map_err(move_failure)?;
    if ctx.json {
        terminal::json_line(serde_json::to_string(&summary).map_err(|e| Failure::store(e.to_string()))?);
    } else {
        outln!(
            "rebuilt the tables from {} (head {}): {}, {}",
            terminal::count(summary.records, "record", "records"),
            summary.head,
            terminal::count(summary.vaults, "vault", "vaults"),
            terminal::count(summary.machines, "machine", "machines")
        );
    }
    Ok(0)
}

pub fn migrate(ctx: &Context, database_url_given: Option<String>) -> Result<u8, Failure> {
    let url = database_url(database_url_given, "migrate")?;
    let options = regent_vault::MigrateOptions::default();
    let summary = regent_vault::migrate_to_postgres(&ctx.data_dir, &url, &options).map_err(move_failure)?;
    if ctx.json {
        terminal::json_line(serde_json::to_string(&summary).map_err(|e| Failure::store(e.to_string()))?);
    } else {
        let resumed = match summary.resumed_from {
            0 => String::new(),
            n => format!(", resuming after record {n}"),
        };
        outln!(
            "moved {} into the database ({} copied now{resumed}; head {}): {}, {}, {} of the machines' logs",
            terminal::count(summary.records, "record", "records"),
            summary.copied,
            summary.head,
            terminal::count(summary.vaults, "vault", "vaults"),
            terminal::count(summary.machines, "machine", "machines"),
            terminal::count(summary.kept, "record", "records")
        );
    }
    Ok(0)
}

fn move_failure(error: MoveError) -> Failure {
    let message = error.to_string();
    match error {
        MoveError::Store { source, .. } => Failure { message, ..Failure::from(source) },
        MoveError::NotAVaultDir { .. } => Failure::store(message).because("not_a_vault_data_dir"),
        MoveError::ChainBroken { .. } => Failure::refused(message).because("chain_broken"),
        MoveError::BadEvent { .. } => Failure::store(message).because("log_unreadable"),
        MoveError::OtherLog { .. } => Failure::store(message).because("database_holds_another_log"),
        MoveError::Concurrent { .. } => Failure::store(message).because("store_conflict"),
        _ => Failure::store(message),
    }
}
