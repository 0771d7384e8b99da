//! `regent quickstart`: the whole job on a fresh machine, on embedded defaults. A vault service
//! runs in-process on 127.0.0.1 with its own store under the data dir; the agent downloads
//! credentials from it and runs every wizard step through the same engine as the step commands.
//! Run again, it resumes where it stopped; once registered it only shows the views.

use std::path::PathBuf;

use regent_engine::model::Command as EngineCommand;
use regent_engine::projections;
use regent_engine::service::SecretInputs;
use regent_vault::{AdminClient, BackgroundServer, ServeConfig};

use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{errln, outln};
use crate::{steps, views};

const VAULT_NAME: &str = "quickstart-vault";
/// Small enough that 5% of it (512 MiB) fits on most scratch filesystems.
const BACKUP_SIZE: u64 = 10 << 30;

pub fn run(ctx: &Context) -> Result<u8, Failure> {
    let ctx = &ctx.without_next_hints();
    let home = ctx.data_dir.join("quickstart");
    std::fs::create_dir_all(&home)
        .map_err(|e| Failure::store(format!("cannot create {}: {e}; choose another --data-dir", home.display())))?;
    let phase = {
        let store = ctx.open_store()?;
        projections::current_state(&store)?.0.phase()
    };
    if phase == regent_engine::Phase::Registered {
        say(ctx, "This machine is registered already; here is where it stands.");
        return show_views(ctx);
    }

    say(ctx, "Starting a vault service on 127.0.0.1 (its data stays under the data dir)...");
    let listen = "127.0.0.1:0".parse().map_err(|_| Failure::store("internal: bad listen address"))?;
    let server = BackgroundServer::start(ServeConfig::new(ctx.data_dir.join("quickstart-vault-service"), listen))
        .map_err(|e| Failure::store(format!("cannot start the vault service: {e}")))?;
    let admin = AdminClient::from_token_file(server.url(), server.admin_token_path(), None)
        .map_err(|e| Failure::store(format!("cannot talk to the vault service: {e}")))?;
    if admin.vault(VAULT_NAME).is_err() {
        admin.create_vault(VAULT_NAME).map_err(|e| Failure::store(format!("cannot create the vault: {e}")))?;
        say(ctx, &format!("Created vault {VAULT_NAME} at {}.", server.url()));
    }
    // A fresh download every run: the service's address changes between runs, and only the newest
    // download is valid anyway.
    let credentials = download_credentials(&admin, &home)?;
    say(ctx, &format!("Downloaded vault credentials to {}.", credentials.display()));

    if phase == regent_engine::Phase::New {
        let folders = EngineCommand::ChooseFolders {
            install_dir: home.join("install"),
            scratch_dir: home.join("scratch"),
            backup_size_bytes: BACKUP_SIZE,
        };
        steps::run(ctx, folders, SecretInputs::default())?;
    }
    steps::run(ctx, EngineCommand::LoadCredentials { file: credentials }, SecretInputs::default())?;
    let state = projections::current_state(&ctx.open_store()?)?.0;
    if state.encryption.is_none() {
        let save_to = unused_path(&ctx.data_dir, "quickstart-passphrase", "txt");
        steps::run(ctx, EngineCommand::SetPassphrase { save_to: Some(save_to) }, SecretInputs::default())?;
    }
    say(ctx, "Registering with the vault...");
    let vault = regent_vault::HttpVaultClient::with_ca_file(None).map_err(|e| Failure::store(e.to_string()))?;
    // Its address changes on every run: a registration started by an earlier run (and not
    // answered) is asked again here, where the vault now is.
    let here = Some(server.url().to_string());
    steps::run_with_vault(ctx, EngineCommand::Register { endpoint_override: here }, SecretInputs::default(), &vault)?;
    drop(server);
    // The registration's head was anchored while the vault ran; later steps have nowhere to go.
    if let Some(registration) = projections::current_state(&ctx.open_store()?)?.0.registration {
        crate::anchor::mark_quickstart_machine(ctx, &registration.machine_id);
    }
    show_views(ctx)?;
    if !ctx.json {
        outln!();
        outln!("Next, try:");
        outln!("  regent audit verify                  check that the record was not altered");
        outln!("  regent audit export -o log.jsonl     hand the log to someone else; it verifies on its own");
        outln!("  regent properties throttling set --work-days mon-fri --work-hours 09:00-17:00 \\");
        outln!("      --work-bandwidth 512Kbps --non-work-bandwidth 20Mbps");
        outln!("  regent --help                        every command");
    }
    Ok(0)
}

fn show_views(ctx: &Context) -> Result<u8, Failure> {
    section(ctx, "Status");
    views::status(ctx)?;
    section(ctx, "Change Properties");
    views::properties(ctx)?;
    section(ctx, "Audit trail");
    views::audit(ctx, Default::default())
}

fn download_credentials(admin: &AdminClient, home: &std::path::Path) -> Result<PathBuf, Failure> {
    let file = admin
        .download_credentials(VAULT_NAME, None)
        .map_err(|e| Failure::store(format!("cannot download vault credentials: {e}")))?;
    let path = unused_path(home, VAULT_NAME, "VaultCredentials");
    // It holds the certificate's private key: made like every key-holding file.
    regent_secrets::write_new_private_file(&path, &[file.xml.as_bytes()])
        .map_err(|e| Failure::store(format!("cannot write the vault credentials: {e}")))?;
    Ok(path)
}

/// `<dir>/<stem>.<ext>`, or `<stem>-2.<ext>`, ... : generated files are never overwritten.
pub(crate) fn unused_path(dir: &std::path::Path, stem: &str, ext: &str) -> PathBuf {
    (1..)
        .map(|n| if n == 1 { dir.join(format!("{stem}.{ext}")) } else { dir.join(format!("{stem}-{n}.{ext}")) })
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{stem}.{ext}")))
}

/// Narration goes to stderr under --json, so stdout stays machine-readable.
fn say(ctx: &Context, text: &str) {
    if ctx.json { errln!("{text}") } else { outln!("{text}") }
}

fn section(ctx: &Context, title: &str) {
    if !ctx.json {
        outln!();
        outln!("== {title} ==");
    }
}
