//! `regent vault ...`: the service and its admin commands.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use regent_vault::{AdminClient, ServeConfig};

use crate::args::{AdminArgs, MachinesCommand, VaultCommand};
use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{self, errln, outln};

pub fn run(ctx: &Context, command: VaultCommand) -> Result<u8, Failure> {
    match command {
        // The log format was applied when logging was set up (main.rs).
        VaultCommand::Serve { listen, tls_cert, tls_key, public_url, log_format: _, database_url } => {
            let address =
                listen.to_socket_addrs().ok().and_then(|mut addresses| addresses.next()).ok_or_else(|| {
                    Failure::usage(format!(
                        "--listen (or REGENT_VAULT_LISTEN): '{listen}' is not an address like 127.0.0.1:8443"
                    ))
                })?;
            let mut config = ServeConfig::new(&ctx.data_dir, address).with_writer(crate::build::writer());
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                config = config.with_tls(cert, key);
            }
            if let Some(url) = public_url {
                config = config.with_public_url(url);
            }
            if let Some(url) = database_url {
                config = config.with_database_url(database_url_from_args(url)?);
            }
            let json = ctx.json;
            regent_vault::run_until_signal(config, |info| {
                if json {
                    terminal::json_line(serde_json::json!({ "url": info.url, "admin_token": info.admin_token_path }));
                } else {
                    outln!("listening on {}", info.url);
                    outln!("admin token in {}", info.admin_token_path.display());
                }
            })
            .map_err(serve_failure)?;
            Ok(0)
        }
        VaultCommand::Create { name, admin } => {
            let vault = admin_client(ctx, &admin)?.create_vault(&name).map_err(admin_failure)?;
            print(ctx, &vault, || format!("created vault {} (subscription {})", vault.name, vault.subscription_id));
            Ok(0)
        }
        VaultCommand::Credentials { vault, admin, output, validity } => {
            if !output.to_string_lossy().to_ascii_lowercase().ends_with(".vaultcredentials") {
                return Err(Failure::usage("--output must end in .VaultCredentials, as the agent insists"));
            }
            let client = admin_client(ctx, &admin)?;
            // Checked before the vault is asked: a download supersedes every earlier one, so one
            // that cannot be written would cost the file the user has and the new one both.
            let target = NewCredentialsFile::prepare(&output)?;
            let file = client.download_credentials(&vault, validity).map_err(admin_failure)?;
            target.write(file.xml.as_bytes())?;
            let summary = serde_json::json!({
                "file": output, "thumbprint": file.thumbprint, "not_before": file.not_before, "not_after": file.not_after,
            });
            print(ctx, &summary, || {
                format!(
                    "wrote {} (valid until {}; any earlier download is no longer valid)",
                    output.display(),
                    file.not_after.format("%Y-%m-%d %H:%M:%S UTC")
                )
            });
            Ok(0)
        }
        VaultCommand::Pin { vault, admin } => {
            let pin = admin_client(ctx, &admin)?.issue_pin(&vault).map_err(admin_failure)?;
            if ctx.json {
                terminal::json_line(serde_json::json!({ "pin": pin.pin, "expires_at": pin.expires_at }));
            } else {
                outln!("{}", pin.pin);
                errln!("valid until {} (5 minutes), once", pin.expires_at.format("%Y-%m-%d %H:%M:%S UTC"));
            }
            Ok(0)
        }
        VaultCommand::Export { admin, vault, machine, output } => {
            let machine = vault.zip(machine);
            crate::vault_log::export(ctx, &admin, machine.as_ref().map(|(v, m)| (v.as_str(), m.as_str())), &output)
        }
        VaultCommand::RebuildProjections { database_url } => crate::vault_log::rebuild(ctx, database_url),
        VaultCommand::Migrate { database_url } => crate::vault_log::migrate(ctx, database_url),
        VaultCommand::Machines { action: Some(MachinesCommand::Remove { vault, machine_id, admin }), .. } => {
            let machine = admin_client(ctx, &admin)?.remove_machine(&vault, &machine_id).map_err(admin_failure)?;
            print(ctx, &machine, || {
                format!(
                    "removed machine {} ({}) from vault {vault}: it is listed no more, and its agent must register again",
                    machine.machine_id, machine.machine_name
                )
            });
            Ok(0)
        }
        VaultCommand::Checkpoint { server, ca_file, public_key, vault_key } => {
            checkpoint(ctx, &server, ca_file.as_deref(), public_key, vault_key.as_deref())
        }
        VaultCommand::Proof { vault, machine, admin, output, from, vault_key } => {
            let client = admin_client(ctx, &admin)?;
            crate::proof::write_for_auditor(ctx, &client, &vault, &machine, &output, from, vault_key.as_deref())
        }
        VaultCommand::Fleet { vault, admin, limit, after } => {
            let page = admin_client(ctx, &admin)?.fleet(&vault, limit, after.as_deref()).map_err(admin_failure)?;
            if ctx.json {
                terminal::json_line(serde_json::to_string(&page).map_err(|e| Failure::store(e.to_string()))?);
            } else {
                print_fleet(&page);
            }
            Ok(0)
        }
        VaultCommand::Audit { vault, admin, machine, since, until, kind, actor, outcome, limit, after } => {
            let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let query: Vec<(&str, String)> = [
                ("machine", machine),
                ("since", since.map(time)),
                ("until", until.map(time)),
                ("kind", kind),
                ("actor", actor),
                ("outcome", outcome),
                ("limit", limit.map(|n| n.to_string())),
                ("after", after),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value)))
            .collect();
            let page = admin_client(ctx, &admin)?.audit(&vault, &query).map_err(admin_failure)?;
            print_fleet_audit(ctx, &page)?;
            Ok(0)
        }
        VaultCommand::Machines { action: None, vault, admin } => {
            let vault = vault.ok_or_else(|| Failure::usage("regent vault machines needs --vault NAME"))?;
            let machines = admin_client(ctx, &admin)?.machines(&vault).map_err(admin_failure)?;
            if ctx.json {
                terminal::json_line(serde_json::to_string(&machines).map_err(|e| Failure::store(e.to_string()))?);
            } else {
                outln!("{:<40}  {:<20}  {:<19}  LOG HEAD", "MACHINE ID", "NAME", "REGISTERED (UTC)");
                for m in &machines {
                    outln!(
                        "{:<40}  {:<20}  {:<19}  {}",
                        m.machine_id,
                        m.machine_name,
                        m.registered_at.format("%Y-%m-%d %H:%M:%S"),
                        log_head_cell(m.log_head.as_ref())
                    );
                }
            }
            Ok(0)
        }
    }
}

/// The fleet's events: a table (the machine, then `regent audit`'s columns), or JSON Lines, one
/// entry a line; then how to get the next page (on stderr with `--json`, so stdout is entries only).
fn print_fleet_audit(ctx: &Context, page: &regent_vault::protocol::FleetAudit) -> Result<(), Failure> {
    if ctx.json {
        for entry in &page.entries {
            terminal::json_line(serde_json::to_string(entry).map_err(|e| Failure::store(e.to_string()))?);
        }
        if let Some(next) = &page.next {
            terminal::errln!("more entries: --after {next}");
        }
        return Ok(());
    }
    outln!(
        "{:<36}  {:>5}  {:<19}  {:<18}  {:<14}  {:<8}  {:<24}  SUMMARY",
        "MACHINE ID",
        "POS",
        "WHEN (UTC)",
        "WHO",
        "STEP",
        "OUTCOME",
        "REASON"
    );
    for e in &page.entries {
        outln!(
            "{:<36}  {:>5}  {:<19}  {:<18}  {:<14}  {:<8}  {:<24}  {}",
            e.machine_id,
            e.position,
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.step.as_deref().unwrap_or(&e.kind),
            e.outcome.as_deref().unwrap_or("-"),
            e.reason.as_ref().map_or("", |r| r.code()),
            e.summary
        );
    }
    if let Some(next) = &page.next {
        outln!("more entries: --after {next}");
    }
    Ok(())
}

/// The fleet as a table, one machine a line, and how to get the next page.
fn print_fleet(page: &regent_vault::protocol::Fleet) {
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string());
    outln!(
        "{:<36}  {:<16}  {:<18}  {:<22}  {:<24}  {:<16}  {:<16}  {:<16}  {:<28}  ANCHOR",
        "MACHINE ID",
        "NAME",
        "PHASE",
        "PROXY",
        "THROTTLING",
        "SCRATCH",
        "PASSPHRASE SET",
        "CREDENTIALS END",
        "LAST EVENT"
    );
    for m in &page.machines {
        let proxy = m.proxy.as_ref().map_or("direct".into(), |p| {
            format!("{}:{}{}", p.host, p.port, if p.authenticates { " (auth)" } else { "" })
        });
        let throttling = m
            .throttling
            .as_ref()
            .map_or("off".into(), |t| format!("{} {}/{}", t.work_hours, t.work_bandwidth, t.non_work_bandwidth));
        let last = m.last_event.as_ref().map_or("-".into(), |e| {
            format!(
                "{} {} {}",
                e.at.format("%Y-%m-%d %H:%M"),
                e.step.as_deref().unwrap_or(&e.kind),
                e.outcome.as_deref().unwrap_or("")
            )
        });
        let mut anchor = match m.anchor.position {
            Some(position) => format!("{} at {position} (kept {})", m.anchor.status, m.anchor.mirrored),
            None => m.anchor.status.clone(),
        };
        if m.agent_newer {
            anchor.push_str("; agent newer than the vault");
        }
        outln!(
            "{:<36}  {:<16}  {:<18}  {:<22}  {:<24}  {:<16}  {:<16}  {:<16}  {:<28}  {anchor}",
            m.machine_id,
            m.machine_name,
            m.phase.as_deref().unwrap_or("-"),
            proxy,
            throttling,
            m.scratch_dir.as_deref().unwrap_or("-"),
            time(m.passphrase_set_at),
            time(m.credentials_expire_at),
            last.trim_end()
        );
    }
    if let Some(next) = &page.next {
        outln!("more machines: --after {next}");
    }
}

/// The anchored head as `POSITION:HASH… at TIME`, with the refused reports (evidence that a copy of
/// the machine's log was cut or rewritten) when there were any.
fn log_head_cell(head: Option<&regent_vault::Anchor>) -> String {
    let Some(head) = head else { return "-".into() };
    let mut cell = format!(
        "{}:{}… at {}",
        head.position,
        head.hash.chars().take(12).collect::<String>(),
        head.anchored_at.format("%Y-%m-%d %H:%M:%S")
    );
    if let Some(last) = &head.last_refusal {
        cell.push_str(&format!(
            "  REFUSED {}, last {} for position {} at {}",
            terminal::count(head.refusals, "report", "reports"),
            last.error,
            last.position,
            last.refused_at.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    cell
}

/// Why `vault serve` did not start: a database problem under a code of its own (docs/cli.md), so
/// that a script tells a database still starting from a wrong password or a foreign schema.
fn serve_failure(err: regent_vault::VaultError) -> Failure {
    use regent_vault::{DatabaseProblem, VaultError};
    let failure = Failure::store(err.to_string());
    let VaultError::Database { problem, .. } = err else { return failure };
    match problem {
        DatabaseProblem::Url => failure.because("database_url_invalid"),
        DatabaseProblem::Unreachable => failure.because("database_unreachable"),
        DatabaseProblem::LoginRefused => failure.because("database_login_refused"),
        DatabaseProblem::PermissionDenied => failure.because("database_permission_denied"),
        DatabaseProblem::ForeignSchema => failure.because("database_schema_foreign"),
        DatabaseProblem::NewerSchema => failure.because("database_schema_newer"),
        DatabaseProblem::OtherToken => failure.because("database_token_mismatch"),
        DatabaseProblem::OtherCheckpointKey => failure.because("database_checkpoint_key_mismatch"),
        _ => failure.because("database_unavailable"),
    }
}

/// The database URL of `vault serve`. One given in argv (not from REGENT_VAULT_DATABASE_URL) must
/// not hold a password: every user on the machine can read another process's command line.
pub(crate) fn database_url_from_args(url: String) -> Result<String, Failure> {
    let from_env = std::env::var("REGENT_VAULT_DATABASE_URL").is_ok_and(|env| env == url);
    if !from_env && url_has_password(&url) {
        return Err(Failure::usage(
            "--database-url holds a password, which every user can read in the process list; put the URL in \
             REGENT_VAULT_DATABASE_URL instead, or the password in PGPASSWORD or ~/.pgpass",
        ));
    }
    Ok(url)
}

/// `scheme://user:password@host...`: a colon in the part before the last `@` of the authority.
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':')) || url.contains("password=")
}

/// A client of the service at `--server`, with the token `vault serve` wrote in its data dir
/// unless `--token-file` names another: on the service's machine, no flag is needed.
/// `regent vault checkpoint`: the latest checkpoint, verified with the key given, or else the key
/// the service names (which only shows the service signs what it serves: trust comes from a key
/// obtained another way, as the credentials file carries it).
fn checkpoint(
    ctx: &Context,
    server: &str,
    ca_file: Option<&std::path::Path>,
    public_key: bool,
    vault_key: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    use regent_vault::protocol::transparency::NoteVerifier;
    let client = AdminClient::without_token(server, ca_file).map_err(admin_failure)?;
    let named = || -> Result<NoteVerifier, Failure> {
        let health = client.service_health().map_err(admin_failure)?;
        let text = health.checkpoint_key.ok_or_else(|| {
            Failure::refused(format!("the vault at {server} keeps no transparency log (a build older than this one)"))
                .because("checkpoint_unavailable")
        })?;
        text.parse().map_err(|e| {
            Failure::refused(format!("the vault at {server} names a key that is not a verifier key: {e}"))
                .because("checkpoint_unverified")
        })
    };
    if public_key {
        let key = named()?;
        if ctx.json {
            terminal::json_line(serde_json::json!({ "vault_key": key.to_string() }));
        } else {
            terminal::outln!("{key}");
        }
        return Ok(0);
    }
    let (key, trusted) = match vault_key {
        Some(path) => (read_vault_key(path)?, true),
        None => (named()?, false),
    };
    let note = client.checkpoint().map_err(admin_failure)?;
    let checkpoint = key.verify(&note).map_err(|e| {
        Failure::refused(format!("the checkpoint the vault at {server} serves does not verify with {key}: {e}"))
            .because("checkpoint_unverified")
    })?;
    if ctx.json {
        let json = serde_json::json!({
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": hex::encode(checkpoint.root),
            "vault_key": key.to_string(),
            "key_given": trusted,
            "note": note,
        });
        terminal::json_line(json);
    } else {
        // Verified, so its lines are plain text; escaped all the same (outln! does).
        for line in note.lines() {
            terminal::outln!("{line}");
        }
        if !trusted {
            terminal::errln!(
                "verified with the key the service names ({key}); pass --vault-key KEYFILE to check against a key you trust"
            );
        }
    }
    Ok(0)
}

/// A C2SP verifier key from a file (`regent vault checkpoint --public-key` prints one): its first line.
pub(crate) fn read_vault_key(
    path: &std::path::Path,
) -> Result<regent_vault::protocol::transparency::NoteVerifier, Failure> {
    use std::io::Read as _;
    let shown = path.display();
    let unreadable = |detail: String| {
        Failure::usage(format!("the vault key file {shown}: {detail}")).because("vault_key_unreadable")
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(4096).read_to_string(&mut text))
        .map_err(|e| unreadable(e.to_string()))?;
    let line = text.lines().next().unwrap_or("").trim();
    line.parse()
        .map_err(|e| unreadable(format!("{e}; it should hold the line `regent vault checkpoint --public-key` prints")))
}

pub(crate) fn admin_client(ctx: &Context, args: &AdminArgs) -> Result<AdminClient, Failure> {
    let token_file = args.token_file.clone().unwrap_or_else(|| ctx.data_dir.join("admin.token"));
    AdminClient::from_token_file(&args.server, &token_file, args.ca_file.as_deref()).map_err(|e| {
        let unreadable = matches!(e, regent_vault::AdminError::TokenFile { .. });
        let failure = admin_failure(e);
        if unreadable && args.token_file.is_none() {
            let message = format!(
                "{}; on another machine than the service, pass its admin.token with --token-file F, or the service's --data-dir",
                failure.message
            );
            Failure { message, ..failure }
        } else {
            failure
        }
    })
}

/// An admin call's failure under the code the vault gave it (`vault_exists`, ...), or one of ours.
pub(crate) fn admin_failure(err: regent_vault::AdminError) -> Failure {
    use regent_vault::AdminError;
    let message = err.to_string();
    match &err {
        AdminError::NotFound { code, .. } | AdminError::Conflict { code, .. } | AdminError::Refused { code, .. } => {
            Failure::refused(message).because(code.code())
        }
        AdminError::Unauthorized => Failure::refused(message).because("unauthorized"),
        AdminError::Unreachable { .. } => Failure::refused(message).because("vault_unreachable"),
        AdminError::TokenFile { .. } => Failure::refused(message).because("admin_token_unreadable"),
        AdminError::BadUrl { .. } | AdminError::InvalidInput(_) => Failure::usage(message),
        AdminError::Protocol { .. } => Failure::refused(message).because("vault_error"),
        _ => Failure::refused(message),
    }
}

fn print<T: serde::Serialize>(ctx: &Context, value: &T, human: impl FnOnce() -> String) {
    if ctx.json {
        terminal::json_line(serde_json::to_string(value).unwrap_or_default());
    } else {
        outln!("{}", human());
    }
}

/// Where a download goes: a credentials file can register machines, so it is written 0600 and never
/// over another file, and everything that can fail on this machine's side is tried before the vault
/// issues anything.
struct NewCredentialsFile<'a> {
    path: &'a Path,
    directory: PathBuf,
    /// Created in the target's directory: proves it exists and takes new files.
    temporary: tempfile::NamedTempFile,
}

impl<'a> NewCredentialsFile<'a> {
    fn prepare(path: &'a Path) -> Result<NewCredentialsFile<'a>, Failure> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(Failure::refused(format!(
                    "{} already exists: nothing was downloaded (a download makes every earlier one invalid); \
                     name a new file with --output",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::refused(format!(
                    "cannot check {}: {e}; nothing was downloaded: name another file with --output",
                    path.display()
                )));
            }
        }
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Made as every key-holding file is (0600 whatever the umask, never over or through a
        // link), in the target's directory so that the final move is a rename within one filesystem.
        let temporary = tempfile::Builder::new()
            .prefix(".regent-credentials-")
            .suffix(".tmp")
            .make_in(&directory, regent_secrets::create_new_private_file)
            .map_err(|e| {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "it does not exist".to_string(),
                    _ => e.to_string(),
                };
                Failure::refused(format!(
                    "cannot write into {}: {why}; nothing was downloaded: create the directory or name a file \
                     elsewhere with --output",
                    directory.display()
                ))
            })?;
        Ok(NewCredentialsFile { path, directory, temporary })
    }

    /// Writes, syncs, and moves the file into place without replacing anything; then syncs the
    /// directory, so the name survives a power cut too.
    fn write(self, bytes: &[u8]) -> Result<(), Failure> {
        use std::io::Write;
        let NewCredentialsFile { path, directory, mut temporary } = self;
        let written = temporary.write_all(bytes).and_then(|()| temporary.as_file().sync_all());
        if let Err(e) = written {
            // The download is lost with the temporary file: say so, since it superseded the others.
            return Err(Failure::refused(format!(
                "cannot write {}: {e}; the vault issued new credentials that were not saved and earlier \
                 downloads are no longer valid: download again to a writable place",
                path.display()
            )));
        }
        if let Err(e) = temporary.persist_noclobber(path) {
            // Someone created the target meanwhile: keep the download where it is rather than lose it.
            let kept = e.file.keep().map(|(_, kept)| kept.display().to_string());
            return Err(Failure::refused(match kept {
                Ok(kept) => format!(
                    "cannot move the new credentials to {}: {}; they are in {kept}: move them yourself (earlier \
                     downloads are no longer valid)",
                    path.display(),
                    e.error
                ),
                Err(_) => format!(
                    "cannot move the new credentials to {}: {}; download again to a new file",
                    path.display(),
                    e.error
                ),
            }));
        }
        if let Err(e) = std::fs::File::open(&directory).and_then(|dir| dir.sync_all()) {
            // The file is in place; only its durability across a power cut is in doubt. Failing
            // here would have scripts download again, superseding this file.
            errln!("warning: wrote {} but could not sync {}: {e}", path.display(), directory.display());
        }
        Ok(())
    }
}
