//! The wizard steps and Change Properties actions: run through the engine, print the outcome.

use regent_engine::model::{Command, Outcome};
use regent_engine::ports::VaultClient;
use regent_engine::projections;
use regent_engine::service::{Registrar, SecretInputs, StepResult};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::context::{Context, NoVault, real_world};
use crate::failure::Failure;
use crate::world;

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
    report(ctx, &execute(ctx, command, secrets, vault)?)
}

/// Runs a command through the engine and records its outcome, accepted or refused, printing
/// nothing: for callers that tell the operator themselves (the interactive wizard). The store is
/// closed again on return, so that other regent commands are not kept waiting.
pub fn execute(
    ctx: &Context,
    command: Command,
    secrets: SecretInputs,
    vault: &dyn VaultClient,
) -> Result<StepResult, Failure> {
    let store = ctx.open_store()?;
    let area = ctx.secrets_area()?;
    let world = real_world(&area, vault);
    Ok(Registrar::new(&store).execute(&world, world::actor(), command, secrets)?)
}

fn report(ctx: &Context, result: &StepResult) -> Result<u8, Failure> {
    let status = projections::status(&result.state, result.head);
    let summary = projections::summary(&result.record.outcome);
    let warnings = match &result.record.outcome {
        Outcome::Accepted(
            regent_engine::model::Change::PassphraseCreated(e) | regent_engine::model::Change::PassphraseChanged(e),
        ) => e.warnings.clone(),
        _ => Vec::new(),
    };
    match &result.record.outcome {
        Outcome::Accepted(_) => {
            if ctx.json {
                let line = json!({
                    "position": result.position,
                    "outcome": "accepted",
                    "reason": null,
                    "summary": summary,
                    "warnings": warnings,
                    "status": status,
                });
                println!("{line}");
            } else {
                println!("{summary}");
                for warning in &warnings {
                    eprintln!("warning: {warning}");
                }
                if let Some(next) = result.state.next_step() {
                    println!("next: {}", next.command_line());
                }
            }
            if let Some(passphrase) = &result.generated_passphrase {
                show_generated_once(ctx, passphrase.expose_secret());
            }
            Ok(0)
        }
        Outcome::Refused(refusal) => {
            if ctx.json {
                let line = json!({
                    "position": result.position,
                    "outcome": "refused",
                    "reason": refusal.reason,
                    "summary": summary,
                    "message": refusal.message,
                    "status": status,
                });
                println!("{line}");
            }
            Err(Failure::refused(format!("{}: {}", refusal.reason, refusal.message)))
        }
    }
}

/// A generated passphrase is shown once, on a terminal only: in a script it stays in its file.
fn show_generated_once(ctx: &Context, passphrase: &str) {
    use std::io::IsTerminal;
    if ctx.json || !std::io::stdout().is_terminal() {
        return;
    }
    println!();
    println!("Your passphrase (shown once; it is also in the file you named):");
    println!("  {passphrase}");
    println!(
        "Keep it somewhere safe, off this machine. Nobody can recover it: without it, backups cannot be restored."
    );
}
