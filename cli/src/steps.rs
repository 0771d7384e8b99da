//! The wizard steps and Change Properties actions: run through the engine, print the outcome.

use regent_engine::State;
use regent_engine::model::{Change, Command, Outcome, PassphraseOrigin, ProbeAnswer};
use regent_engine::ports::VaultClient;
use regent_engine::projections;
use regent_engine::service::{Executed, Registrar, SecretInputs, StepResult};
use regent_secrets::SecretsArea;
use regent_store::EventStore;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::anchor::{self, StepReportText};
use crate::context::{Context, NoVault, real_world};
use crate::failure::Failure;
use crate::terminal::{self, Stream, errln, outln};
use crate::world;
use regent_engine::anchoring::StepReport;

/// The registration the log holds now, if any.
pub fn registration(ctx: &Context) -> Result<Option<regent_engine::model::Registration>, Failure> {
    let log = ctx.log();
    Ok(Registrar::new(&log).state()?.0.registration)
}

/// `regent unregister`: unregisters (telling the vault), or, on a machine unregistered already
/// whose vault was not told then, tells it now (each such step recorded).
pub fn unregister(ctx: &Context, vault: &dyn VaultClient) -> Result<u8, Failure> {
    let log = ctx.log();
    let state = Registrar::new(&log).state()?.0;
    if state.registration.is_some() || state.pending_removals.is_empty() {
        return run_with_vault(ctx, Command::Unregister, SecretInputs::default(), vault);
    }
    let mut code = 0;
    for pending in state.pending_removals {
        code = run_with_vault(
            ctx,
            Command::FinishUnregister { machine_id: pending.machine_id },
            SecretInputs::default(),
            vault,
        )?;
    }
    Ok(code)
}

/// Runs a command that needs no vault.
pub fn run(ctx: &Context, command: Command, secrets: SecretInputs) -> Result<u8, Failure> {
    run_with_vault(ctx, command, secrets, &NoVault)
}

/// Runs a command, records it, prints what happened. A refusal exits 1 with one line on stderr.
pub fn run_with_vault(
    ctx: &Context,
    command: Command,
    secrets: SecretInputs,
    vault: &dyn VaultClient,
) -> Result<u8, Failure> {
    let told = tell(ctx, command, secrets, vault)?;
    if ctx.json {
        terminal::json_line(&told.document);
    }
    told.outcome.map_err(|failure| failure.printed_if(ctx.json))
}

/// A step run and recorded: its document (what `--json` prints for the step) and how the command
/// ends with it.
pub struct Told {
    pub document: serde_json::Value,
    pub outcome: Result<u8, Failure>,
}

/// Runs a command and records it, saying what happened as [`run_with_vault`] does, except that
/// under `--json` nothing is printed: the step's document is the caller's to print (the unattended
/// wizard prints one document for all its steps).
pub fn tell(ctx: &Context, command: Command, secrets: SecretInputs, vault: &dyn VaultClient) -> Result<Told, Failure> {
    let (result, anchored) = execute(ctx, command, secrets, vault)?;
    let told = report(ctx, &result, anchored.as_ref());
    if let Some(warning) = anchored.as_ref().and_then(StepReport::warning) {
        errln!("warning: {warning}");
    }
    Ok(told)
}

/// Runs a command through the engine and records its outcome, accepted or refused, printing
/// nothing: for callers that tell the operator themselves (the interactive wizard). The store is
/// closed again on return, so that other regent commands are not kept waiting. While the machine
/// is registered, the new head has been sent to the vault (see anchor.rs) before it returns.
pub fn execute(
    ctx: &Context,
    command: Command,
    secrets: SecretInputs,
    vault: &dyn VaultClient,
) -> Result<(StepResult, Option<StepReport>), Failure> {
    // A damaged store is refused here, with what still reads and how to restore it (the engine
    // would only hear that appends are refused).
    drop(ctx.open_store()?);
    let area = ctx.secrets_area()?;
    let keeper = world::SealedFiles(&area);
    let world = real_world(&keeper, vault);
    let log = ctx.log();
    // The key log-anchor.json names stays sealed: it speaks for the machine if the log was cut.
    let registrar = Registrar::new(&log).keeping(anchor::sealed_keys(ctx));
    // Unregister forgets the registration under which its own head is still reported.
    let before = match command {
        Command::Unregister | Command::Move { .. } => registrar.state()?.0.registration,
        _ => None,
    };
    let old_scratch = match command {
        Command::MoveScratch { .. } => registrar.state()?.0.folders.map(|f| f.scratch_dir),
        _ => None,
    };
    let Executed { mut result, store } = registrar.execute(&world, world::actor(), command, secrets)?;
    if matches!(result.record.outcome, Outcome::Accepted(_)) {
        anchor::remember_ca_file(ctx);
    }
    result.notes.extend(sweep_superseded(ctx, &store, &area, &result.state));
    result.notes.extend(setting_notes(&result, old_scratch.as_deref()));
    // Every step appends (refusals too), so while registered the new head goes to the vault. The
    // store stays open meanwhile: heads reach the vault in log order.
    // A vault told of the unregistration holds the machine no more, and one that could not be
    // told cannot be reached (the step said so): nothing to report to it.
    let told = matches!(&result.record.outcome, Outcome::Accepted(Change::Unregistered { vault_told: Some(_), .. }));
    let registration = result.state.registration.clone().or(before.filter(|_| !told));
    let mut anchored = anchor::after_step(ctx, &store, &area, &result.state, registration.as_ref(), result.head);
    if let Some(witness) = anchored.as_mut().and_then(|report| report.vault_log.as_mut()) {
        anchor::record_evidence(&registrar, store, &world, witness);
    }
    Ok((result, anchored))
}

/// What an accepted setting did not do, which the operator must hear: the scratch folder's
/// files stay where they were; a proxy the vault could not be reached through to check it.
fn setting_notes(result: &StepResult, old_scratch: Option<&std::path::Path>) -> Vec<String> {
    let Outcome::Accepted(change) = &result.record.outcome else { return Vec::new() };
    match change {
        Change::ScratchMoved { scratch_dir, .. } => match old_scratch.filter(|old| *old != scratch_dir.as_path()) {
            Some(old) => vec![format!(
                "only the setting changed: regent moved no files, so the agent's cache in {} stays there; while no backup runs, move its contents to {} (e.g. `mv {}/* {}/`) or remove them",
                old.display(),
                scratch_dir.display(),
                old.display(),
                scratch_dir.display()
            )],
            None => Vec::new(),
        },
        Change::ProxySet(proxy) => match &result.record.observed.vault_probe {
            Some(ProbeAnswer::Failed { reason, detail }) => vec![format!(
                "the proxy {}:{} is set, but the vault could not be reached through it to check it ({reason}: {detail}); the next step will tell, or run `regent audit anchor`",
                proxy.host, proxy.port
            )],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Where the count of sealed files after the last sweep is kept, in the data dir (see
/// [`sweep_superseded`]).
const SWEPT_FILE: &str = "secrets-swept";

/// Runs the engine's sweep of superseded secrets (`service::sweep_superseded`) only when the
/// secrets area holds more sealed files than after the last sweep: it reads the whole log.
fn sweep_superseded(ctx: &Context, store: &EventStore, area: &SecretsArea, state: &State) -> Vec<String> {
    let marker = ctx.data_dir.join(SWEPT_FILE);
    let Ok(count) = area.count() else { return Vec::new() };
    let swept: Option<usize> = std::fs::read_to_string(&marker).ok().and_then(|t| t.trim().parse().ok());
    if swept.is_some_and(|swept| count <= swept) {
        return Vec::new();
    }
    let secrets = crate::world::SealedFiles(area);
    if let Err(e) = regent_engine::service::sweep_superseded(store, state, &secrets, &anchor::sealed_keys(ctx)) {
        return vec![format!("a superseded secret could not be removed ({e}); it stays sealed beside the log")];
    }
    if let Ok(count) = area.count() {
        let _ = std::fs::write(&marker, count.to_string());
    }
    Vec::new()
}

fn report(ctx: &Context, result: &StepResult, anchored: Option<&StepReport>) -> Told {
    let log_anchor = anchored.map_or(serde_json::Value::Null, StepReport::json);
    let status = projections::status(&result.state, result.head);
    let summary = projections::summary(&result.record.outcome);
    let mut warnings = match &result.record.outcome {
        Outcome::Accepted(Change::PassphraseCreated(e) | Change::PassphraseChanged(e)) => e.warnings.clone(),
        _ => Vec::new(),
    };
    warnings.extend(result.notes.iter().cloned());
    match &result.record.outcome {
        Outcome::Accepted(_) => {
            let document = json!({
                "position": result.position,
                "outcome": "accepted",
                "reason": null,
                "summary": summary,
                "warnings": warnings,
                "status": status,
                "log_anchor": log_anchor,
            });
            if !ctx.json {
                outln!("{summary}");
                for warning in &warnings {
                    errln!("warning: {warning}");
                }
                if let Some(next) = result.state.next_step().filter(|_| ctx.next_hints) {
                    outln!("next: {}", crate::guidance::command_line(next));
                }
            }
            // In a script the passphrase stays in its file.
            if !ctx.json && terminal::stdout_is_terminal() {
                show_generated(Stream::Stdout, result);
            }
            Told { document, outcome: Ok(0) }
        }
        Outcome::Refused(refusal) => {
            let file = match &result.record.command {
                Command::LoadCredentials { file } | Command::Move { file } => Some(file.as_path()),
                _ => None,
            };
            let message = crate::guidance::with_next_for_file(&refusal.message, &refusal.next, file);
            let failure = Failure::refused(format!("{}: {message}", refusal.reason));
            for note in &result.notes {
                errln!("warning: {note}");
            }
            let document = json!({
                "position": result.position,
                "outcome": "refused",
                "reason": refusal.reason,
                "summary": summary,
                "message": refusal.message,
                "status": status,
                "log_anchor": log_anchor,
                "error": failure.json(),
            });
            Told { document, outcome: Err(failure) }
        }
    }
}

/// The passphrase a step generated, shown this once on `stream` when it is a terminal, and the file
/// it is saved in; false when the step generated none. The step commands show it on stdout, the
/// wizard on stderr, where it talks.
pub(crate) fn show_generated(stream: Stream, result: &StepResult) -> bool {
    let (Some(passphrase), Outcome::Accepted(Change::PassphraseCreated(made) | Change::PassphraseChanged(made))) =
        (&result.generated_passphrase, &result.record.outcome)
    else {
        return false;
    };
    let PassphraseOrigin::Generated { saved_to } = &made.origin else { return false };
    let say = |line: std::fmt::Arguments<'_>| terminal::write_line(stream, line);
    let on_terminal = match stream {
        Stream::Stdout => terminal::stdout_is_terminal(),
        Stream::Stderr => terminal::stderr_is_terminal(),
    };
    if on_terminal {
        say(format_args!(""));
        say(format_args!("Your passphrase, shown this once:"));
        say(format_args!(""));
        say(format_args!("    {}", passphrase.expose_secret()));
        say(format_args!(""));
    }
    say(format_args!(
        "It is saved in {} (readable by you only). Keep a copy somewhere safe, off this machine.",
        saved_to.display()
    ));
    say(format_args!("Nobody can recover this passphrase: without it, backups cannot be restored."));
    true
}
