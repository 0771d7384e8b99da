//! The `regent` command line: argument parsing, logging, and the exit codes of docs/cli.md.

mod anchor;
mod args;
mod build;
mod context;
#[cfg(test)]
mod contract;
mod damage;
mod data_dir;
mod failure;
mod guidance;
mod import;
mod manual;
mod proof;
mod quickstart;
mod replay;
mod secret_input;
mod steps;
mod terminal;
mod vault;
mod vault_log;
mod views;
mod wizard;
mod world;

use std::process::ExitCode;

use clap::Parser;
use regent_engine::model::{Command as EngineCommand, Weekday};
use regent_engine::projections::AuditFilter;
use regent_engine::service::SecretInputs;

use args::*;
use context::Context;
use failure::{EXIT_USAGE, Failure};

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns `regent audit | head` into a panic on the closed pipe.
    // Restore the default so that, like other Unix tools, regent just stops.
    // SAFETY: setting a signal's disposition to SIG_DFL before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // A script that asked for JSON reads the failure from stdout too.
            if err.use_stderr() && std::env::args_os().any(|a| a == "--json") {
                let first =
                    err.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
                terminal::json_line(serde_json::json!({ "error": Failure::usage(first).json() }));
            }
            return ExitCode::from(terminal::clap_error(err, EXIT_USAGE));
        }
    };
    init_logging(&cli.global, &cli.command);
    let json = cli.global.json;
    let (role, keeps_state) = data_dir_use(&cli.command);
    let outcome = Context::new(&cli.global, role, keeps_state).and_then(|ctx| run(&ctx, cli.command));
    match outcome {
        Ok(code) => ExitCode::from(terminal::exit_code(code)),
        Err(failure) => {
            if json && !failure.reported {
                terminal::json_line(serde_json::json!({ "error": failure.json() }));
            }
            terminal::errln!("regent: {}", failure.message);
            ExitCode::from(failure.exit)
        }
    }
}

/// Whose data dir a command uses, and whether it keeps state there at all (an export replayed,
/// a completion script or an admin call to a vault elsewhere keeps none).
fn data_dir_use(command: &Command) -> (data_dir::Role, bool) {
    match command {
        Command::Vault(VaultCommand::Serve { .. }) => (data_dir::Role::VaultService, true),
        // An admin command finds the service's token in the service's data dir.
        Command::Vault(_) => (data_dir::Role::VaultService, false),
        Command::Replay(_) | Command::Completions { .. } | Command::Man { .. } => (data_dir::Role::Agent, false),
        Command::Audit(AuditArgs { action: Some(AuditCommand::Verify { file: Some(_), .. }), .. }) => {
            (data_dir::Role::Agent, false)
        }
        _ => (data_dir::Role::Agent, true),
    }
}

fn init_logging(global: &Global, command: &Command) {
    // sled logs what it finds in damaged files in its own terms; the store's errors say it in the
    // user's (what is damaged, what still reads), so sled is heard only at -vv.
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error,sled=off",
        (false, 0) => "warn,sled=off",
        (false, 1) => "info,sled=off",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let format = match command {
        Command::Vault(VaultCommand::Serve { log_format, .. }) => *log_format,
        _ => LogFormat::Text,
    };
    terminal::init_logging(filter, format);
}

fn run(ctx: &Context, command: Command) -> Result<u8, Failure> {
    match command {
        Command::Folders(a) => steps::run(
            ctx,
            EngineCommand::ChooseFolders {
                install_dir: text_path(a.install_dir),
                scratch_dir: text_path(a.scratch_dir),
                backup_size_bytes: a.backup_size,
            },
            SecretInputs::default(),
        ),
        Command::Proxy(proxy) | Command::Properties { change: Some(PropertiesCommand::Proxy(proxy)) } => {
            run_proxy(ctx, proxy)
        }
        Command::Credentials(CredentialsCommand::Load { file }) => {
            let file = text_path(std::path::absolute(&file).unwrap_or(file));
            steps::run(ctx, EngineCommand::LoadCredentials { file }, SecretInputs::default())
        }
        Command::Passphrase(PassphraseCommand::Generate { save_to }) => {
            let save_to = text_path(std::path::absolute(&save_to).unwrap_or(save_to));
            steps::run(ctx, EngineCommand::SetPassphrase { save_to: Some(save_to) }, SecretInputs::default())
        }
        Command::Passphrase(PassphraseCommand::Set(source)) => {
            let passphrase = read_passphrase(&source, "--passphrase-stdin or --passphrase-file F")?;
            steps::run(
                ctx,
                EngineCommand::SetPassphrase { save_to: None },
                SecretInputs { passphrase: Some(passphrase), ..Default::default() },
            )
        }
        Command::Register(a) => {
            check_no_credentials(None, a.endpoint.as_deref())?;
            let ctx = &ctx.with_ca_file(a.ca_file.as_deref());
            let vault = vault_client(ctx)?;
            if let Some(file) = a.credentials {
                // Registered: a move (refused, recorded, if the file is this vault's or unusable);
                // not registered: the credentials step. Either way, then register.
                let file = text_path(std::path::absolute(&file).unwrap_or(file));
                let command = match steps::registration(ctx)? {
                    Some(_) => EngineCommand::Move { file },
                    None => EngineCommand::LoadCredentials { file },
                };
                steps::run_with_vault(ctx, command, SecretInputs::default(), &vault)?;
            }
            steps::run_with_vault(
                ctx,
                EngineCommand::Register { endpoint_override: a.endpoint },
                SecretInputs::default(),
                &vault,
            )
        }
        Command::Unregister => {
            // The CA file given last, as for every call to the vault (see `vault_client`).
            let vault = vault_client(ctx)?;
            steps::unregister(ctx, &vault)
        }
        Command::Status => views::status(ctx),
        Command::Properties { change: None } => views::properties(ctx),
        Command::Properties { change: Some(PropertiesCommand::ScratchDir { dir }) } => {
            steps::run(ctx, EngineCommand::MoveScratch { scratch_dir: text_path(dir) }, SecretInputs::default())
        }
        Command::Properties { change: Some(PropertiesCommand::Throttling(throttling)) } => {
            run_throttling(ctx, throttling)
        }
        Command::Properties { change: Some(PropertiesCommand::Passphrase(PassphraseChangeCommand::Change(a))) } => {
            change_passphrase(ctx, a)
        }
        Command::Audit(AuditArgs {
            action: Some(AuditCommand::Verify { file, head, against_vault, proof, vault_key, endpoint, ca_file }),
            ..
        }) => {
            if against_vault {
                anchor::verify_against_vault(&ctx.with_ca_file(ca_file.as_deref()), endpoint)
            } else if !proof.is_empty() {
                let ctx = ctx.with_ca_file(ca_file.as_deref());
                proof::verify(&ctx, file.as_deref(), &proof, vault_key.as_deref(), endpoint)
            } else if endpoint.is_some() || ca_file.is_some() {
                Err(Failure::usage(
                    "--endpoint and --ca-file go with --against-vault or --proof: add one of them, or drop them",
                ))
            } else {
                views::verify(ctx, file.as_deref(), head)
            }
        }
        Command::Audit(AuditArgs { action: Some(AuditCommand::Proof { output, endpoint, ca_file }), .. }) => {
            proof::write_own(&ctx.with_ca_file(ca_file.as_deref()), &output, endpoint)
        }
        Command::Audit(AuditArgs { action: Some(AuditCommand::Anchor { endpoint, ca_file }), .. }) => {
            anchor::anchor_now(&ctx.with_ca_file(ca_file.as_deref()), endpoint)
        }
        Command::Audit(AuditArgs { action: Some(AuditCommand::Export { output }), .. }) => {
            views::export(ctx, output.as_deref())
        }
        Command::Audit(AuditArgs { action: None, since, until, kind, limit, tail }) => {
            views::audit(ctx, AuditFilter { since, before: until, kind, limit, tail })
        }
        Command::Vault(command) => vault::run(ctx, command),
        Command::Quickstart => quickstart::run(ctx),
        Command::Replay(args) => replay::run(ctx, args),
        Command::Import { file } => import::run(ctx, &file),
        Command::Wizard(args) => wizard::run(ctx, args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "regent",
                &mut terminal::machine_stdout(),
            );
            Ok(0)
        }
        Command::Man { dir: Some(dir) } => {
            manual::write_pages(&dir)
                .map_err(|e| Failure::refused(format!("cannot write the manual pages into {}: {e}", dir.display())))?;
            Ok(0)
        }
        Command::Man { dir: None } => {
            manual::render_single(&mut terminal::machine_stdout())
                .map_err(|e| Failure::refused(format!("cannot write the manual page: {e}")))?;
            Ok(0)
        }
    }
}

/// Credentials in a host or URL would be recorded in the log and echoed in messages, so such a
/// value is refused before anything is recorded, and never repeated.
fn check_no_credentials(host: Option<&str>, endpoint: Option<&str>) -> Result<(), Failure> {
    if host.is_some_and(|h| h.contains('@')) {
        return Err(Failure::usage(
            "the proxy host must not carry a user or password; use --username and --password-env VAR",
        ));
    }
    let authority = endpoint.map(|e| e.split_once("://").map_or(e, |(_, rest)| rest).split('/').next().unwrap_or(""));
    if authority.is_some_and(|a| a.contains('@')) {
        return Err(Failure::usage("the endpoint URL must not carry a user or password"));
    }
    Ok(())
}

/// The vault client for a step, trusting the CA file the command was given, else the one given
/// last (at registration, say): every command that reaches the vault trusts what the registration
/// trusted. The head reported after the step goes to the same vault, through the same context.
fn vault_client(ctx: &Context) -> Result<regent_vault::HttpVaultClient, Failure> {
    let ca_file = anchor::vault_ca_file(ctx);
    regent_vault::HttpVaultClient::with_ca_file(ca_file.as_deref()).map_err(|e| match (&ctx.ca_file, &ca_file) {
        (None, Some(remembered)) => Failure::usage(format!(
            "{e} (the CA file {} was remembered from an earlier command); pass --ca-file F to trust another",
            remembered.display()
        )),
        _ => Failure::usage(e.to_string()),
    })
}

fn change_passphrase(ctx: &Context, a: PassphraseChangeArgs) -> Result<u8, Failure> {
    // Never from the command line: argv is visible to every user in `ps`.
    let pin = match &a.security_pin_env {
        Some(var) => secret_input::from_env("security PIN", var)?,
        None => secret_input::prompt("security PIN", false, "--security-pin-env VAR")?,
    };
    let (save_to, passphrase) = if a.generate {
        (a.save_to.map(|p| text_path(std::path::absolute(&p).unwrap_or(p))), None)
    } else {
        (None, Some(read_passphrase(&a.source, "--passphrase-stdin or --generate --save-to F")?))
    };
    let ctx = &ctx.with_ca_file(a.ca_file.as_deref());
    let vault = vault_client(ctx)?;
    let secrets = SecretInputs { passphrase, security_pin: Some(pin), ..Default::default() };
    steps::run_with_vault(ctx, EngineCommand::ChangePassphrase { save_to }, secrets, &vault)
}

fn run_proxy(ctx: &Context, proxy: ProxyCommand) -> Result<u8, Failure> {
    match proxy {
        ProxyCommand::Clear => steps::run(ctx, EngineCommand::ClearProxy, SecretInputs::default()),
        ProxyCommand::Set(a) => {
            check_no_credentials(Some(&a.host), None)?;
            let flags = "--password-stdin or --password-env VAR";
            let password = match (&a.password, &a.username) {
                (PasswordSource { password_stdin: true, .. }, _) => Some(secret_input::from_stdin("proxy password")?),
                (PasswordSource { password_env: Some(var), .. }, _) => {
                    Some(secret_input::from_env("proxy password", var)?)
                }
                (_, Some(_)) => Some(secret_input::prompt("proxy password", false, flags)?),
                (_, None) => None,
            };
            let command = EngineCommand::SetProxy {
                host: a.host,
                port: a.port,
                username: a.username,
                password_given: password.is_some(),
            };
            // On a registered machine the new proxy is tried against the vault before it is set.
            let vault = vault_client(ctx)?;
            steps::run_with_vault(ctx, command, SecretInputs { proxy_password: password, ..Default::default() }, &vault)
        }
    }
}

fn run_throttling(ctx: &Context, throttling: ThrottlingCommand) -> Result<u8, Failure> {
    let command = match throttling {
        ThrottlingCommand::Off => EngineCommand::ThrottlingOff,
        ThrottlingCommand::Set { work_days, work_hours, work_bandwidth, non_work_bandwidth } => {
            let work_days = Weekday::parse_set(&work_days).map_err(|e| Failure::usage(format!("--work-days: {e}")))?;
            let (start, end) = parse_hours(&work_hours)?;
            EngineCommand::SetThrottling {
                work_days,
                work_start: start,
                work_end: end,
                work_bps: work_bandwidth,
                non_work_bps: non_work_bandwidth,
            }
        }
    };
    steps::run(ctx, command, SecretInputs::default())
}

fn parse_hours(text: &str) -> Result<(chrono::NaiveTime, chrono::NaiveTime), Failure> {
    let bad = || Failure::usage(format!("--work-hours: '{text}' is not HH:MM-HH:MM, e.g. 09:00-17:00"));
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let time = |t: &str| chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| bad());
    Ok((time(start)?, time(end)?))
}

/// A path as the log records it: text. Bytes that are not UTF-8 become U+FFFD, which the engine
/// refuses as a path that is not text (recorded), instead of failing to write the step.
pub(crate) fn text_path(path: std::path::PathBuf) -> std::path::PathBuf {
    match path.into_os_string().into_string() {
        Ok(text) => text.into(),
        Err(raw) => raw.to_string_lossy().into_owned().into(),
    }
}

fn read_passphrase(source: &PassphraseSource, flags: &str) -> Result<regent_engine::service::SecretInput, Failure> {
    match source {
        PassphraseSource { passphrase_stdin: true, .. } => secret_input::from_stdin("passphrase"),
        PassphraseSource { passphrase_file: Some(path), .. } => secret_input::from_file("passphrase", path),
        _ => secret_input::prompt("passphrase", true, flags),
    }
}
