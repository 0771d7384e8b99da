//! `regent import FILE`: restores the log from an export into an empty store, the way back from a
//! damaged one once it is moved aside. The store's import verifies the export's chain and its
//! header's head as it reads and leaves the store empty on any failure; the machine key and the
//! sealed secrets are never created, replaced or deleted here.

use std::io::BufReader;
use std::path::Path;

use regent_engine::projections;
use regent_store::StoreError;
use serde_json::json;

use crate::context::Context;
use crate::damage;
use crate::failure::Failure;

pub fn run(ctx: &Context, file: &Path) -> Result<u8, Failure> {
    let open = || {
        std::fs::File::open(file)
            .map(|f| BufReader::with_capacity(256 * 1024, f))
            .map_err(|e| Failure::refused(format!("cannot read {}: {e}; check the path", file.display())))
    };
    // The header first, so that a file that is no export is refused before anything is created.
    let (_header, records) = regent_store::read_export(open()?, false).map_err(|e| refused(e, file))?;
    drop(records);
    // A data dir of its own when there is none (an export brought to another machine), made as the
    // steps make it; the store inside is sled's to create.
    ctx.create_data_dir()?;
    let store_dir = ctx.store_dir();
    let store = ctx.open_store_as_is().map_err(|e| damage::open_failure(e, damage::SALVAGE_LIMIT_BYTES, Some(file)))?;
    if let Some(found) = store.damage() {
        return Err(damage::of_store(&store, found, Some(file)));
    }
    if !store.is_empty() {
        return Err(not_empty(&store_dir, store.len(), file));
    }
    let head = store.import(open()?).map_err(|e| match e {
        StoreError::NotEmpty { records } => not_empty(&store_dir, records, file),
        other => refused(other, file),
    })?;
    let (state, _) = projections::current_state(&store)?;
    let sealed = crate::views::sealed_health(ctx, &state);
    if ctx.json {
        let document = json!({
            "imported": { "file": file, "records": head.position, "store": store_dir },
            "head": head,
            "sealed_secrets": sealed,
        });
        crate::terminal::json_line(document);
    } else {
        crate::terminal::outln!(
            "imported {} from {} into {} (head {head})",
            crate::terminal::count(head.position, "record", "records"),
            file.display(),
            store_dir.display()
        );
        crate::terminal::outln!("{:<14}{sealed}", "secrets");
        crate::terminal::outln!("next: regent status");
    }
    Ok(0)
}

/// The store holds records already: importing over them would mix two logs.
fn not_empty(store_dir: &Path, records: u64, file: &Path) -> Failure {
    let holds = match records {
        0 => "what an interrupted import left behind".to_string(),
        n => crate::terminal::count(n, "record", "records"),
    };
    Failure::store(format!(
        "import refused: the store at {} already holds {holds}; to replace it with the export, move it aside with `{}`, then run `{}` again",
        store_dir.display(),
        damage::move_aside(store_dir, "before-import"),
        damage::import_command(Some(file))
    ))
    .because("store_not_empty")
}

/// The file's faults exit 1 (the store is left empty); the store's own exit 3.
fn refused(err: StoreError, file: &Path) -> Failure {
    let file_name = file.display();
    match err {
        StoreError::BadLogFile { line, detail } => Failure::refused(format!(
            "import refused: {file_name}, line {line}: {detail}; nothing was imported; import a file written by `regent audit export`"
        )),
        StoreError::ChainBroken(failure) => Failure::refused(format!(
            "import refused: the chain of {file_name} is broken at {failure}; nothing was imported; the file was altered or damaged: import another copy of the export"
        )),
        // The store names the file it reads "log file" (it has no path for it).
        StoreError::Io { path, source } if path.as_os_str() == "log file" => {
            Failure::refused(format!("cannot read {file_name}: {source}; check the file"))
        }
        other => other.into(),
    }
}
