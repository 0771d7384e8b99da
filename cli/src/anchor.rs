//! The binary's side of keeping the log's head at the vault: which client and CA, where the note
//! lives, and what is printed. The policy (when to report, who speaks for the machine, what the
//! note keeps, what a comparison means) is the engine's (`regent_engine::anchoring`).
//!
//! Longer than most modules because three commands are said here in words and JSON: the warning
//! after a step, `regent audit anchor`, and `regent audit verify --against-vault` with every
//! outcome of the comparison (and the two lines of `status`); none of it decides anything.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use regent_engine::anchoring::{
    self, AnchorError, CheckedMachine, Comparison, LastAnchor, NOTE_FILE, NoMachine, Note, Range, StepReport, Witness,
};
use regent_engine::model::Outcome;
use regent_engine::model::{Registration, SealedRef};
use regent_engine::ports::World;
use regent_engine::service::Registrar;
use regent_engine::vault_log::{Inconsistency, KeyFrom, Proved, Witnessed};
use regent_engine::{Reason, State, projections};
use regent_secrets::{MachineKey, SecretsArea};
use regent_store::{Digest32, EventStore, Head, Problem};
use regent_vault::{ClientOptions, HttpVaultClient};
use serde_json::json;

use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{self, errln, outln};
use crate::world;

/// After a step the vault gets one quick try, within the engine's after-step budget in all.
/// `regent audit anchor` retries longer.
fn after_step_options(ca_file: Option<PathBuf>) -> ClientOptions {
    ClientOptions {
        ca_file,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        total_timeout: Duration::from_secs(2),
        attempts: 2,
        backoff: Duration::from_millis(250),
    }
}

// ---------------------------------------------------------------------------------------------
// The note's file

/// The note in the data dir; a missing or unreadable one is empty (it is only a hint).
fn load_note(ctx: &Context) -> Note {
    Note::from_json(std::fs::read(ctx.data_dir.join(NOTE_FILE)).ok().as_deref())
}

/// Written whole or not at all (a temporary file renamed over it); a failure is only logged. The
/// CA file this command was given is remembered with it once the vault answered through it
/// (`vault_answered`): a CA that fails is not what later commands should trust.
fn save_note(ctx: &Context, note: &mut Note, vault_answered: bool) {
    if vault_answered {
        note.remember_ca_file(ctx.ca_file.as_deref());
    }
    let write = || -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&ctx.data_dir)?;
        file.write_all(&note.to_json())?;
        file.as_file().sync_all()?;
        file.persist(ctx.data_dir.join(NOTE_FILE)).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(error = %e, "cannot save {NOTE_FILE}; status may not show the last anchor");
    }
}

/// The vault's transparency log as this machine verified it last (log-anchor.json), if it did.
pub fn witnessed(ctx: &Context) -> Option<regent_engine::vault_log::Witnessed> {
    load_note(ctx).vault_log().cloned()
}

/// The CA file to reach the vault with: this command's, else the one last given.
fn ca_file(ctx: &Context, note: &Note) -> Option<PathBuf> {
    ctx.ca_file.clone().or_else(|| note.ca_file().map(PathBuf::from))
}

/// The CA file a command that reaches the vault uses: its own `--ca-file`, else the one given
/// last (at registration, say), as the note remembers it.
pub fn vault_ca_file(ctx: &Context) -> Option<PathBuf> {
    ca_file(ctx, &load_note(ctx))
}

/// Remembers this command's `--ca-file` (if it was given one) for the commands after it: called
/// once a step that reached the vault through it was accepted.
pub fn remember_ca_file(ctx: &Context) {
    if ctx.ca_file.is_some() && ctx.data_dir.is_dir() {
        let mut note = load_note(ctx);
        save_note(ctx, &mut note, true);
    }
}

/// The sealed keys the note names (see [`Note::sealed_keys`]).
pub fn sealed_keys(ctx: &Context) -> Vec<SealedRef> {
    load_note(ctx).sealed_keys()
}

/// Marks `machine_id` as registered with quickstart's in-process vault.
pub fn mark_quickstart_machine(ctx: &Context, machine_id: &str) {
    let mut note = load_note(ctx);
    note.mark_quickstart(machine_id);
    save_note(ctx, &mut note, false);
}

/// Opens the secrets area without creating a machine key (a lost key is reported, not replaced).
fn secrets_area(ctx: &Context) -> Result<SecretsArea, AnchorError> {
    let unreadable = |e: regent_secrets::SecretsError| AnchorError::Failed {
        reason: Reason::CredentialsUnreadable,
        detail: format!("the sealed secrets cannot be opened ({e}); the machine key or the secrets area was lost"),
    };
    let key = MachineKey::load(&ctx.data_dir).map_err(unreadable)?;
    SecretsArea::open_dir(&ctx.data_dir, key).map_err(unreadable)
}

fn client(options: ClientOptions) -> Result<HttpVaultClient, AnchorError> {
    HttpVaultClient::new(options).map_err(|e| AnchorError::Failed {
        reason: Reason::VaultTlsFailed,
        detail: format!("{e}; pass a readable CA certificate with --ca-file"),
    })
}

/// The first 16 characters (char-safe: the text may come from the network).
fn short(hash: &str) -> String {
    hash.chars().take(16).collect()
}

// ---------------------------------------------------------------------------------------------
// After every step

/// How the report after a step is said: in the step's JSON, or as a warning line.
pub trait StepReportText {
    fn json(&self) -> serde_json::Value;
    fn warning(&self) -> Option<String>;
}

impl StepReportText for StepReport {
    fn json(&self) -> serde_json::Value {
        match &self.result {
            Ok(anchor) => json!({
                "anchored": true, "vault": self.vault, "position": self.position,
                "vault_position": anchor.position, "reason": null,
                "vault_log": vault_log_json(self.vault_log.as_ref()),
            }),
            Err(e) => json!({
                "anchored": false, "vault": self.vault, "position": self.position,
                "reason": e.code(), "message": e.to_string(),
            }),
        }
    }

    /// One line for stderr when the head did not get through, or the vault's proof of it did not hold.
    fn warning(&self) -> Option<String> {
        if let Some(witness @ Witness { checked: Err(problem), .. }) = &self.vault_log {
            return Some(vault_log_warning(&self.vault, self.position, problem, witness.recorded));
        }
        let e = self.result.as_ref().err()?;
        Some(if e.is_tamper_evidence() {
            format!(
                "vault {} refused log head {} ({}: {e}); this log is not the one the vault saw: run `regent audit verify --against-vault`",
                self.vault,
                self.position,
                e.code()
            )
        } else {
            format!(
                "log head {} was not anchored at vault {} ({}: {e}); the step itself is recorded: run `regent audit anchor` once the vault is reachable",
                self.position,
                self.vault,
                e.code()
            )
        })
    }
}

/// What the vault's proof of a head came to, for a JSON document: `null` when nothing was proved.
/// `recorded`: the record of this log that holds it (a key taken at first contact, a problem).
fn vault_log_json(vault_log: Option<&Witness>) -> serde_json::Value {
    match vault_log {
        None => serde_json::Value::Null,
        Some(Witness { checked: Ok(size), recorded, .. }) => {
            json!({ "verified": true, "tree_size": size, "recorded": recorded })
        }
        Some(Witness { checked: Err(problem), recorded, .. }) => json!({
            "verified": false, "reason": problem.code(), "message": problem.to_string(), "recorded": recorded,
        }),
    }
}

/// The warning for a vault whose proof did not hold: the step stands, the vault's word does not.
fn vault_log_warning(vault: &str, position: u64, problem: &Inconsistency, recorded: Option<u64>) -> String {
    let recorded = match recorded {
        Some(at) => format!("recorded in this machine's log as record {at}, and the checkpoint verified before kept"),
        None => "the checkpoint verified before is kept".to_string(),
    };
    format!(
        "{}: vault {vault} anchored log head {position}, but its transparency log does not hold: {problem}; {recorded} \
         as evidence (the data dir's {}): export the log with `regent audit export` and tell whoever audits the vault",
        problem.code(),
        anchoring::NOTE_FILE
    )
}

/// Records in the log what the vault's transparency log proved, when it is news (the key taken at
/// first contact, a proof that did not hold), on the store still held after the step it
/// reported. A failure to record it is logged: the step stands, and the note keeps the evidence.
pub fn record_evidence(registrar: &Registrar<'_>, store: EventStore, world: &World<'_>, witness: &mut Witness) {
    let Some(evidence) = witness.evidence.take() else { return };
    match registrar.record_vault_log(store, world, world::actor(), evidence) {
        Ok(executed) if matches!(executed.result.record.outcome, Outcome::Accepted(_)) => {
            witness.recorded = Some(executed.result.position);
        }
        Ok(executed) => {
            tracing::warn!(outcome = ?executed.result.record.outcome, "the vault log's evidence was not recorded")
        }
        Err(e) => tracing::warn!(error = %e, "the vault log's evidence could not be recorded"),
    }
}

/// Sends the head after a step (see [`anchoring::after_step`]). Runs while the caller still holds
/// the store, so heads reach the vault in log order.
pub fn after_step(
    ctx: &Context,
    store: &EventStore,
    area: &SecretsArea,
    state: &State,
    registration: Option<&Registration>,
    head: Head,
) -> Option<StepReport> {
    registration?;
    let mut note = load_note(ctx);
    let report = match client(after_step_options(ca_file(ctx, &note))) {
        Ok(keeper) => {
            let secrets = world::SealedFiles(area);
            anchoring::after_step(&keeper, &secrets, store, state, registration, head, &mut note, chrono::Utc::now())?
        }
        Err(e) => {
            let registration = registration?;
            if note.is_quickstart(&registration.machine_id) {
                return None;
            }
            StepReport { vault: registration.vault.clone(), position: head.position, result: Err(e), vault_log: None }
        }
    };
    let answered = matches!(report.result, Ok(_) | Err(AnchorError::Refused { .. }));
    save_note(ctx, &mut note, answered);
    Some(report)
}

// ---------------------------------------------------------------------------------------------
// regent audit anchor

fn not_registered(what: &str) -> Failure {
    Failure::refused(format!(
        "not_registered: this machine is not registered, so there is no vault {what}; register first with `regent register`"
    ))
}

fn registered(store: &EventStore, what: &str) -> Result<(State, Head, Registration), Failure> {
    let (state, head) = projections::current_state(store)?;
    let registration = state.registration.clone();
    match registration {
        Some(registration) => Ok((state, head, registration)),
        None => Err(not_registered(what)),
    }
}

/// A report of the head made on demand: for which registration and head, and what came of it
/// (the note saved, the evidence recorded).
pub struct Reported {
    pub registration: Registration,
    pub head: Head,
    pub result: Result<(regent_vault::protocol::Anchor, Option<Witness>), AnchorError>,
}

/// Reports the head of the log now (`regent audit anchor`, `regent audit proof`).
pub fn report(ctx: &Context, endpoint: Option<&str>) -> Result<Reported, Failure> {
    crate::check_no_credentials(None, endpoint)?;
    let store = ctx.open_existing_store()?.ok_or_else(|| not_registered("to send its log head to"))?;
    let (state, head, registration) = registered(&store, "to send its log head to")?;
    let mut note = load_note(ctx);
    if endpoint.is_none() && note.is_quickstart(&registration.machine_id) {
        return Err(quickstart_vault_gone(&registration.vault));
    }
    // The store stays open: the head sent is the head of the log until the vault answers.
    let options = ClientOptions { ca_file: ca_file(ctx, &note), ..ClientOptions::default() };
    let result = secrets_area(ctx).and_then(|area| {
        let keeper = client(options)?;
        let secrets = world::SealedFiles(&area);
        let now = chrono::Utc::now();
        let mut reported =
            anchoring::report_now(&keeper, &secrets, &store, &state, &registration, head, endpoint, &mut note, now);
        if let Ok((_, Some(witness))) = &mut reported {
            let log = ctx.log();
            let world = crate::context::real_world(&secrets, &keeper);
            record_evidence(&Registrar::new(&log), store, &world, witness);
        } else {
            drop(store);
        }
        reported
    });
    if let Err(e) = &result {
        // Said in the note even when the secrets could not be opened to try.
        if !matches!(note.pending_failure(&registration.machine_id), Some(f) if f.position == head.position) {
            let failed: Result<(anchoring::Machine, regent_vault::protocol::Anchor), AnchorError> = Err(e.clone());
            note.record(&registration.machine_id, head.position, &failed, chrono::Utc::now());
        }
    }
    save_note(ctx, &mut note, matches!(result, Ok(_) | Err(AnchorError::Refused { .. })));
    Ok(Reported { registration, head, result })
}

/// A report that did not get through, as the failure of `command` (which the operator retries).
pub fn report_failure(reported: &Reported, e: &AnchorError, command: &str) -> Failure {
    let vault = &reported.registration.vault;
    if e.is_tamper_evidence() {
        return Failure::refused(format!(
            "{}: vault {vault} refused log head {}: {e}; run `regent audit verify --against-vault`",
            e.code(),
            reported.head.position
        ));
    }
    Failure::refused(format!(
        "{}: log head {} was not anchored at vault {vault}: {e}; retry `{command}` once the vault is reachable (--endpoint URL if it moved)",
        e.code(),
        reported.head.position
    ))
}

pub fn anchor_now(ctx: &Context, endpoint: Option<String>) -> Result<u8, Failure> {
    let reported = report(ctx, endpoint.as_deref())?;
    let Reported { registration, head, result } = &reported;
    let (registration, head) = (registration.clone(), *head);
    match result {
        Ok((anchor, vault_log)) => {
            if ctx.json {
                terminal::json_line(json!({
                    "anchored": true, "vault": registration.vault, "machine_id": registration.machine_id,
                    "position": head.position, "hash": head.hash, "anchor": anchor,
                    "vault_log": vault_log_json(vault_log.as_ref()),
                }));
            } else {
                outln!(
                    "log head {head} anchored at vault {} (machine {}, since {})",
                    registration.vault,
                    registration.machine_id,
                    anchor.anchored_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
                if let Some(Witness { checked: Ok(size), .. }) = &vault_log {
                    outln!(
                        "the vault's transparency log proves it: in its signed tree of {size} heads, consistent with the last one checked"
                    );
                }
            }
            if let Some(witness @ Witness { checked: Err(problem), .. }) = &vault_log {
                let warning = vault_log_warning(&registration.vault, head.position, problem, witness.recorded);
                terminal::errln!("warning: {warning}");
            }
            Ok(0)
        }
        Err(e) => Err(report_failure(&reported, e, "regent audit anchor")),
    }
}

// ---------------------------------------------------------------------------------------------
// regent audit verify --against-vault

/// The key of a machine the log lost cannot be found: said as such, never as "not registered".
fn registration_key_not_found(lost: &LastAnchor, detail: &str) -> Failure {
    Failure::refused(format!(
        "registration_key_not_found: this log no longer shows the registration of machine {} at vault {}, which \
         anchored it at position {} (log-anchor.json), and the key it registered with cannot be found ({detail}): \
         the log was probably cut; ask the vault's admin for the machine's head (`regent vault machines`) and check \
         this log with `regent audit verify --head POSITION:HASH`",
        lost.machine_id, lost.vault, lost.position
    ))
}

/// Who to ask the vault about (see [`anchoring::machine_to_check`]), and whether the log lost its
/// registration.
fn machine_to_check(
    ctx: &Context,
    store: &EventStore,
    note: &Note,
    endpoint: Option<&str>,
) -> Result<(anchoring::Machine, anchoring::HeadSigner, bool), Failure> {
    let (state, _) = projections::current_state(store)?;
    let area = secrets_area(ctx);
    let secrets = area.as_ref().map(world::SealedFiles).map_err(Clone::clone);
    let secrets = secrets.as_ref().map(|s| s as &dyn regent_engine::ports::SecretKeeper).map_err(Clone::clone);
    match anchoring::machine_to_check(secrets, store, &state, note, endpoint)? {
        Ok(CheckedMachine::Registered(machine, signer)) => Ok((machine, signer, false)),
        Ok(CheckedMachine::Lost(machine, signer)) => Ok((machine, signer, true)),
        Err(NoMachine::NotRegistered) => Err(not_registered("whose anchor to check against")),
        Err(NoMachine::KeyNotFound { lost, detail }) => Err(registration_key_not_found(&lost, &detail)),
        Err(NoMachine::Unsigned { vault, error }) => {
            Err(Failure::refused(format!("{}: cannot ask vault {vault} for the anchored head: {error}", error.code())))
        }
    }
}

pub fn verify_against_vault(ctx: &Context, endpoint: Option<String>) -> Result<u8, Failure> {
    crate::check_no_credentials(None, endpoint.as_deref())?;
    let mut note = load_note(ctx);
    // Read who the machine is, then let go of the store while the vault is asked.
    let store = ctx.open_existing_store()?.ok_or_else(|| not_registered("whose anchor to check against"))?;
    let (machine, signer, registration_lost) = machine_to_check(ctx, &store, &note, endpoint.as_deref())?;
    let trusted = projections::current_state(&store)?.0.vault_key.filter(|k| k.machine_id == machine.machine_id);
    drop(store);
    if endpoint.is_none() && note.is_quickstart(&machine.machine_id) {
        return Err(quickstart_vault_gone(&machine.vault));
    }
    let options = ClientOptions { ca_file: ca_file(ctx, &note), ..ClientOptions::default() };
    let keeper = client(options);
    let fetched =
        keeper.as_ref().map_err(Clone::clone).and_then(|keeper| anchoring::HeadKeeper::fetch(keeper, &signer));
    let anchor = match fetched {
        Ok(Some(anchor)) => anchor,
        Ok(None) => {
            return Err(Failure::refused(format!(
                "log_head_not_anchored: vault {} holds no log head for machine {} yet; run `regent audit anchor`, then verify again",
                machine.vault, machine.machine_id
            )));
        }
        Err(e) => {
            return Err(Failure::refused(format!(
                "{}: cannot read the anchored log head from vault {}: {e}; retry once the vault is reachable (--endpoint URL if it moved)",
                e.code(),
                machine.vault
            )));
        }
    };
    let anchor_hash = Digest32::from_hex(&anchor.hash).ok_or_else(|| {
        Failure::refused(format!(
            "{}: vault {} answered a malformed hash; check the endpoint",
            Reason::VaultError,
            machine.vault
        ))
    })?;
    let anchor_head = Head { position: anchor.position, hash: anchor_hash };
    // The head is the vault's word only over TLS, unless its transparency log proves it: then it
    // must be the machine's latest leaf under a checkpoint signed by the key the log trusts.
    let proved = match (&anchor.log, &keeper) {
        (Some(logged), Ok(keeper)) => {
            let proved = prove_latest(keeper, &signer, trusted.as_ref(), &note, logged, anchor_head)?;
            note.keep_witnessed(proved.0.clone());
            Some(proved)
        }
        _ => None,
    };

    let report = ctx.open_store()?.verify(Some(anchor_head))?;
    let (comparison, range) = anchoring::compare(&report, anchor_head);
    let head = report.verified_head;
    let not_yet = (comparison == Comparison::Match && head.position > anchor.position)
        .then(|| Range { from: anchor.position + 1, to: head.position });
    if comparison == Comparison::Match && head.position >= anchor.position {
        note.anchored_now(&machine, &anchor);
        save_note(ctx, &mut note, true);
    }

    if ctx.json {
        let mut value = serde_json::to_value(&report).map_err(|e| Failure::store(e.to_string()))?;
        value["against_vault"] = json!({
            "outcome": comparison,
            "vault": machine.vault,
            "machine_id": machine.machine_id,
            "anchor": anchor,
            "missing": if comparison == Comparison::TailCut { json!(range) } else { json!(null) },
            "mismatch": if comparison == Comparison::Altered { json!(range) } else { json!(null) },
            "not_yet_anchored": not_yet,
            "registration": if registration_lost { "from_anchor_note" } else { "from_log" },
            "vault_log": proved.as_ref().map(|(w, p, from)| json!({
                "verified": true, "tree_size": w.size, "index": p.index, "key_from": from,
            })),
        });
        terminal::json_line(value);
    } else {
        crate::views::print_report(&report, false);
        if registration_lost {
            outln!(
                "this log no longer shows the registration of machine {} (vault {}): checked against its anchor, as log-anchor.json names it",
                machine.machine_id,
                machine.vault
            );
        }
        let at = anchor.anchored_at.format("%Y-%m-%d %H:%M:%S UTC");
        match comparison {
            Comparison::Match => {
                outln!("vault anchor at {} matches (vault {}, anchored {at})", anchor.position, machine.vault);
                if let Some((witnessed, proved, _)) = &proved {
                    outln!(
                        "the vault's transparency log proves it: head {} is machine {}'s latest leaf ({}) in its signed tree of {} heads",
                        anchor.position,
                        machine.machine_id,
                        proved.index,
                        witnessed.size
                    );
                }
                if let Some(r) = not_yet {
                    let are = if r.from == r.to { "is" } else { "are" };
                    outln!("{} {are} not yet anchored (run `regent audit anchor`)", terminal::positions(r.from, r.to));
                }
            }
            Comparison::TailCut => {
                outln!("vault anchor at {} (anchored {at}): this log does not reach it", anchor.position)
            }
            Comparison::Altered => {
                outln!("vault anchor at {} (anchored {at}): another record there", anchor.position)
            }
            Comparison::ChainBroken => {
                outln!("vault anchor at {} (anchored {at}); the log fails before it", anchor.position)
            }
        }
    }
    // When this log matches, refused reports are the only sign that another copy of it spoke; when
    // it does not, the failure line says more. A refusal older than the anchor is history: this
    // log reported past it since, so it is counted, not warned about.
    if let (Comparison::Match, Some(refusal)) = (comparison, &anchor.last_refusal) {
        let refused_at = refusal.refused_at.format("%Y-%m-%d %H:%M:%S UTC");
        if refusal.refused_at >= anchor.anchored_at {
            errln!(
                "warning: vault {} refused {} for this machine, the last at {refused_at} ({} for position {}): another copy of this log reported heads",
                machine.vault,
                terminal::count(anchor.refusals, "log head report", "log head reports"),
                refusal.error,
                refusal.position
            );
        } else if !ctx.json {
            outln!(
                "vault {} refused {} for this machine before its current anchor (the last at {refused_at})",
                machine.vault,
                terminal::count(anchor.refusals, "log head report", "log head reports")
            );
        }
    }
    let vault = &machine.vault;
    let outcome = match (comparison, range) {
        (Comparison::Match, _) => Ok(0),
        (Comparison::TailCut, Some(r)) => Err(Failure::refused(format!(
            "log_tail_cut: vault {vault} anchored this log at position {}, but it ends at {}: {} missing (cut off, or an older copy was restored); restore an export that holds {} (move the store aside, then `regent import FILE`) and find out who removed {}",
            anchor.position,
            head.position,
            if r.from == r.to { format!("record {} is", r.from) } else { format!("records {}-{} are", r.from, r.to) },
            if r.from == r.to { "it" } else { "them" },
            if r.from == r.to { "it" } else { "them" }
        ))),
        (Comparison::Altered, _) => Err(Failure::refused(format!(
            "log_head_mismatch: record {} is not the one vault {vault} anchored (vault {}…, this log {}…): the log was rewritten or comes from a forked copy; compare it with an export taken before",
            anchor.position,
            short(&anchor.hash),
            report.failure.as_ref().map_or(String::new(), |f| match &f.problem {
                Problem::HeadMismatch { found, .. } => short(&found.to_hex()),
                _ => String::new(),
            })
        ))),
        _ => Err(Failure::refused(format!(
            "chain_broken: the log fails its own check at {}; run `regent audit verify` for details",
            report.failure.as_ref().map_or_else(|| "an unknown record".to_string(), ToString::to_string)
        ))),
    };
    // The report went to stdout as the command's document.
    outcome.map_err(|failure| failure.printed_if(ctx.json))
}

/// Proves the vault's anchor with its transparency log: `logged` (the read's answer) is the
/// machine's latest leaf under a checkpoint signed by the key the log trusts (else the key checked
/// with before, else the one the vault names now), consistent with the checkpoint checked last,
/// and it is the anchor's head.
fn prove_latest(
    keeper: &HttpVaultClient,
    signer: &anchoring::HeadSigner,
    trusted: Option<&regent_engine::state::TrustedKey>,
    note: &Note,
    logged: &regent_vault::protocol::LoggedHead,
    anchor: Head,
) -> Result<(Witnessed, Proved, KeyFrom), Failure> {
    let seen = note.vault_log().filter(|w| w.machine_id.as_deref().is_none_or(|m| m == signer.machine_id));
    let inconsistent = |problem: &dyn std::fmt::Display| {
        Failure::refused(format!(
            "vault_log_inconsistent: vault {} answered for machine {}, but its transparency log does not hold: {problem}; its anchor is not proved, and this log was not checked against it: tell whoever audits the vault",
            signer.vault, signer.machine_id
        ))
    };
    let (key, from) = match (trusted, seen) {
        (Some(trusted), _) => (trusted.vault_key.clone(), trusted.from),
        (None, Some(seen)) => (seen.vault_key.clone(), KeyFrom::FirstContact),
        (None, None) => match anchoring::HeadKeeper::vault_key(keeper, signer) {
            Ok(Some(key)) => (key, KeyFrom::FirstContact),
            _ => return Err(inconsistent(&"it names no key to check its checkpoint with")),
        },
    };
    let mut logged = logged.clone();
    if let Some(seen) = seen {
        let size = key
            .parse::<regent_vault::protocol::transparency::NoteVerifier>()
            .ok()
            .and_then(|k| k.verify(&logged.checkpoint).ok())
            .map(|c| c.size);
        if let Some(size) = size.filter(|size| *size > seen.size) {
            let proof = keeper.consistency(signer, seen.size, size).map_err(|e| {
                Failure::refused(format!(
                    "{}: cannot get the vault's consistency proof from {} to {size} heads: {e}; retry once the vault is reachable",
                    e.code(),
                    seen.size
                ))
            })?;
            logged.consistency = Some(regent_vault::protocol::Consistency {
                from: seen.size,
                proof: proof.iter().map(hex::encode).collect(),
            });
        }
    }
    let (witnessed, proved) =
        regent_engine::vault_log::check_latest(seen, &key, from, &logged, &signer.vault, &signer.machine_id)
            .map_err(|e| inconsistent(&e))?;
    if proved.head() != anchor {
        let short = |hash: &str| hash.chars().take(16).collect::<String>();
        return Err(inconsistent(&format!(
            "its anchor is head {} ({}…), but its log's latest leaf for this machine is head {} ({}…)",
            anchor.position,
            short(&anchor.hash.to_hex()),
            proved.leaf.position,
            short(&hex::encode(proved.leaf.head))
        )));
    }
    Ok((witnessed, proved, from))
}

/// The vault `regent quickstart` ran in-process ended with it: nothing can be asked of it again.
fn quickstart_vault_gone(vault: &str) -> Failure {
    Failure::refused(format!(
        "anchor_unavailable: vault {vault} ran inside `regent quickstart` and ended with it, so no head kept there can be read again; `regent audit verify` checks this log's own chain (against a head kept elsewhere with --head POSITION:HASH)"
    ))
}

/// `status`: how far the vault's anchor is behind the log, from the local note (a hint).
pub fn status_json(ctx: &Context, state: &State, head: Head) -> serde_json::Value {
    let note = load_note(ctx);
    let Some(registration) = &state.registration else {
        return match note.lost_registration(head) {
            Some(a) => json!({
                "vault": a.vault, "machine_id": a.machine_id, "position": a.position, "past_log_head": true,
            }),
            None => serde_json::Value::Null,
        };
    };
    let anchored = note.anchor_of(&registration.machine_id);
    let failure = note.pending_failure(&registration.machine_id);
    json!({
        "position": anchored.map(|a| a.position),
        "anchored_at": anchored.map(|a| a.anchored_at),
        "behind": anchored.map_or(head.position, |a| head.position.saturating_sub(a.position)),
        "last_failure": failure.map(|f| json!({"position": f.position, "reason": f.reason, "at": f.at})),
    })
}

/// `status`: the human line, or nothing when not registered (unless the log seems cut).
pub fn status_line(ctx: &Context, state: &State, head: Head) -> Option<String> {
    let note = load_note(ctx);
    let Some(registration) = state.registration.as_ref() else {
        return note.lost_registration(head).map(|a| {
            format!(
                "machine {} was anchored at vault {} at position {}, past this log's head, and this log shows no registration: run `regent audit verify --against-vault`",
                a.machine_id, a.vault, a.position
            )
        });
    };
    if note.is_quickstart(&registration.machine_id) {
        return Some("not kept: quickstart's vault runs only while `regent quickstart` does".into());
    }
    let anchored = note.anchor_of(&registration.machine_id);
    let mut line = match anchored {
        None => "not anchored at the vault yet (`regent audit anchor`)".to_string(),
        // The note travels with the data dir: a restored copy says what it last reported, which
        // is all that can be known here without asking the vault.
        Some(a) if a.position == head.position => format!(
            "{} at vault {}, as last reported from this data dir (`regent audit verify --against-vault` asks the vault whether it holds a later head)",
            a.position, a.vault
        ),
        Some(a) if a.position < head.position => format!(
            "{} at vault {} ({} not yet anchored: `regent audit anchor`)",
            a.position,
            a.vault,
            terminal::count(head.position - a.position, "record", "records")
        ),
        Some(a) => format!(
            "{} at vault {}, past this log's head: run `regent audit verify --against-vault`",
            a.position, a.vault
        ),
    };
    if let Some(f) = note.pending_failure(&registration.machine_id) {
        line.push_str(&format!("; the last report failed: {}", f.reason));
    }
    Some(line)
}
