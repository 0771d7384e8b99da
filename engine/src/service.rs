//! Running one command: precheck, observe the world through the ports, decide, append.
//!
//! The log is held only while the engine reads and appends. A step that asks the vault
//! (registering, checking a security PIN, trying a new proxy) lets go of it for the call and opens
//! it again to record the answer, deciding against the state it then finds: nothing waits behind a
//! slow vault, and nothing the vault said is lost if another command appended meanwhile.
//!
//! Whatever is checked here without the vault is checked first: a step refused for a local reason
//! spends nothing remote (a PIN, a registration) and leaves nothing behind (a folder, a file).

use chrono::{DateTime, Utc};
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, Head, StoreError};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::anchoring::HeadSigner;
use crate::decide::{decide, precheck};
use crate::events::{self, STREAM};
use crate::model::{
    Command, CredentialFacts, CredentialsObserved, FolderFacts, Observations, Outcome, PassphraseObserved,
    PassphraseOrigin, PinAnswer, ProbeAnswer, RemovalAnswer, RemovalObserved, SealedRef, SecretKind, StepRecord,
    UnreadableKind, Unsealable, VaultIdentity,
};
use crate::ports::{LogAccess, PinCheck, PreparedFile, ProxyConfig, RegisterRequest, UnregisterRequest, World};
use crate::projections::{self, ProjectionError};
use crate::reason::Reason;
use crate::state::State;

/// The largest credentials file read; real ones are a few KiB.
pub const MAX_CREDENTIALS_BYTES: u64 = 1024 * 1024;

/// A secret as it came with a command. `Unusable` says why the input could not be one (more than
/// one line, too long, not text) without holding any of it: the step is then refused and recorded
/// like any other refusal.
pub enum SecretInput {
    Given(SecretString),
    Unusable(String),
}

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretInput::Given(_) => f.write_str("Given(<redacted>)"),
            SecretInput::Unusable(why) => f.debug_tuple("Unusable").field(why).finish(),
        }
    }
}

impl From<SecretString> for SecretInput {
    fn from(secret: SecretString) -> Self {
        SecretInput::Given(secret)
    }
}

/// Secrets that come with a command: from stdin, a file, an environment variable or a masked
/// prompt, never from the command itself.
#[derive(Default)]
pub struct SecretInputs {
    pub proxy_password: Option<SecretInput>,
    pub passphrase: Option<SecretInput>,
    pub security_pin: Option<SecretInput>,
}

/// A secret a step needs, which did not come with it (the interface says how to give it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeededSecret {
    ProxyPassword,
    Passphrase,
    SecurityPin,
}

impl std::fmt::Display for NeededSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NeededSecret::ProxyPassword => "proxy password",
            NeededSecret::Passphrase => "passphrase",
            NeededSecret::SecurityPin => "security PIN",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("the {0} is needed for this step")]
    MissingSecret(NeededSecret),
    #[error("cannot keep the secret safely: {0}; check that the data directory is writable")]
    Secrets(String),
    #[error("the operating system's random source failed: {0}")]
    Randomness(String),
    #[error("the step could not be written: {0}")]
    Encode(String),
}

/// What a command did: the recorded step, where, and the state after it.
#[derive(Debug)]
pub struct StepResult {
    pub record: StepRecord,
    pub position: u64,
    pub state: State,
    pub head: Head,
    /// For a generated passphrase only: the passphrase, to be shown to the operator once.
    pub generated_passphrase: Option<SecretString>,
    /// What the operator should know that the record does not say (a file that could not be
    /// put in place, superseded secrets that could not be removed).
    pub notes: Vec<String>,
}

/// A run of a command: its result, and the log still open, so that the caller can report the new
/// head before anyone else appends.
pub struct Executed {
    pub result: StepResult,
    pub store: EventStore,
}

/// Runs registration commands against the log.
pub struct Registrar<'a> {
    log: &'a dyn LogAccess,
    /// Sealed values to keep beside those the state refers to (named by the caller's own notes).
    keep: Vec<SealedRef>,
}

/// The observations of a step and what they left to finish once it is recorded.
struct Observed {
    observed: Observations,
    generated: Option<SecretString>,
    file: Option<PreparedFile>,
}

impl<'a> Registrar<'a> {
    pub fn new(log: &'a dyn LogAccess) -> Self {
        Registrar { log, keep: Vec::new() }
    }

    /// Keeps these sealed values too when superseded ones are removed.
    pub fn keeping(mut self, keep: Vec<SealedRef>) -> Self {
        self.keep = keep;
        self
    }

    pub fn state(&self) -> Result<(State, Head), EngineError> {
        let store = self.log.open()?;
        Ok(projections::current_state(&store)?)
    }

    /// Runs one command and records its outcome, accepted or refused.
    pub fn execute(
        &self,
        world: &World<'_>,
        actor: Actor,
        command: Command,
        secrets: SecretInputs,
    ) -> Result<Executed, EngineError> {
        let now = world.clock.now();
        let run = Run {
            registrar: self,
            world,
            meta: BatchMeta { recorded_at: now, actor, correlation_id: new_id(now, world)? },
        };
        let store = self.log.open()?;
        let (state, _) = projections::current_state(&store)?;
        let mut notes = finish_kept_file(&state, world);
        // The next contact with the vaults: unregistrations they were not told of are told first.
        let (store, state) = match command {
            Command::Register { .. } | Command::Move { .. } => run.tell_pending(store, state, &mut notes)?,
            _ => (store, state),
        };
        let observed = Observations { now: world.clock.now(), ..Observations::default() };
        if precheck(&state, &command).is_some() {
            let seen = Observed { observed, generated: None, file: None };
            return run.record(store, &state, command, seen, notes);
        }
        match command {
            Command::Register { .. } => run.register(store, state, command, notes),
            Command::ChangePassphrase { .. } => run.change_passphrase(store, state, command, secrets, notes),
            Command::SetProxy { .. } if state.registration.is_some() => {
                run.set_proxy(store, state, command, secrets, notes)
            }
            Command::Unregister | Command::Move { .. } | Command::FinishUnregister { .. } => {
                run.unregister(store, state, command, notes)
            }
            _ => {
                let mut seen = observe_local(&state, &command, secrets, world, observed)?;
                if let Some(created) = create_folders(&state, &command, &mut seen.observed, world) {
                    notes.extend(created);
                }
                run.record(store, &state, command, seen, notes)
            }
        }
    }
}

impl Registrar<'_> {
    /// Records what the vault's transparency log proved of a head just reported, when it was news
    /// ([`crate::anchoring::Witness::evidence`]), on the log the caller still holds open: the key
    /// taken at first contact, or the proof that did not hold. Decided like any step (replay
    /// checks it again); it moves the head, which the next report carries to the vault.
    pub fn record_vault_log(
        &self,
        store: EventStore,
        world: &World<'_>,
        actor: Actor,
        observed: crate::model::VaultLogObserved,
    ) -> Result<Executed, EngineError> {
        let now = world.clock.now();
        let run = Run {
            registrar: self,
            world,
            meta: BatchMeta { recorded_at: now, actor, correlation_id: new_id(now, world)? },
        };
        let (state, _) = projections::current_state(&store)?;
        let command = Command::WitnessVaultLog { machine_id: observed.machine_id.clone() };
        let observed = Observations { now, vault_log: Some(observed), ..Observations::default() };
        run.record(store, &state, command, Observed { observed, generated: None, file: None }, Vec::new())
    }
}

/// One command's run: the ports and the batch metadata every record of it shares.
struct Run<'r, 'a, 'w> {
    registrar: &'r Registrar<'a>,
    world: &'r World<'w>,
    meta: BatchMeta,
}

impl Run<'_, '_, '_> {
    /// Decides, appends, then finishes what the outcome asks for: a file moved into place or
    /// discarded, superseded secrets removed.
    fn record(
        &self,
        store: EventStore,
        state: &State,
        command: Command,
        seen: Observed,
        mut notes: Vec<String>,
    ) -> Result<Executed, EngineError> {
        let Observed { observed, generated, file } = seen;
        let outcome = decide(state, &command, &observed);
        let accepted = matches!(outcome, Outcome::Accepted(_));
        if let (Some(file), false) = (&file, accepted) {
            self.world.passphrase_files.discard(file);
        }
        let record = StepRecord { command, observed, outcome, build: Some(self.world.build.clone()) };
        let before = state;
        let (position, head, state) = self.append(&store, before, &record)?;
        if let (Some(file), true) = (&file, accepted)
            && let Err(problem) = self.world.passphrase_files.place(file)
        {
            notes.push(format!(
                "the passphrase could not be put at {} ({problem}); it is in {}: move it there, or somewhere safe",
                file.target.display(),
                file.temporary.display()
            ));
        }
        notes.extend(self.remove_superseded(before, &record.observed, &state));
        let generated = if accepted { generated } else { None };
        let result = StepResult { record, position, state, head, generated_passphrase: generated, notes };
        Ok(Executed { result, store })
    }

    fn append(
        &self,
        store: &EventStore,
        state: &State,
        record: &StepRecord,
    ) -> Result<(u64, Head, State), EngineError> {
        let event_id = new_id(record.observed.now, self.world)?;
        let event = events::encode(record, event_id).map_err(|e| EngineError::Encode(e.to_string()))?;
        let meta = BatchMeta { recorded_at: record.observed.now, ..self.meta.clone() };
        let appended = store.append(STREAM, ExpectedVersion::Exact(state.version), &meta, &[event])?;
        let state = state.clone().evolve(record);
        if appended.head.position % projections::CHECKPOINT_EVERY == 0 {
            projections::save_checkpoint(store, &state, appended.head);
        }
        Ok((appended.last_position, appended.head, state))
    }

    /// Removes the sealed values this step superseded (an old proxy password, earlier
    /// credentials, a changed passphrase) or sealed for nothing (a refused step): they must not
    /// stay decryptable by whoever gets the data directory. Only values the log named before or
    /// this step sealed are ever removed: a sealed file no state here names may belong to a log
    /// being restored elsewhere, and is left alone.
    fn remove_superseded(&self, before: &State, observed: &Observations, after: &State) -> Vec<String> {
        let (Some(before), Some(after)) = (before.sealed_refs(), after.sealed_refs()) else { return Vec::new() };
        let sealed_now = [
            observed.proxy_password.as_ref(),
            match &observed.credentials {
                Some(CredentialsObserved::Parsed { private_key, .. }) => Some(private_key),
                _ => None,
            },
            observed.passphrase.as_ref().and_then(|p| p.sealed.as_ref()),
            observed.passphrase.as_ref().and_then(|p| p.verifier_sealed.as_ref()),
        ];
        let mut gone: Vec<SealedRef> = Vec::new();
        for candidate in before.iter().chain(sealed_now.into_iter().flatten()) {
            let kept = after.contains(candidate) || self.registrar.keep.contains(candidate);
            if !kept && !gone.contains(candidate) {
                gone.push(candidate.clone());
            }
        }
        let failed: Vec<String> = gone.iter().filter_map(|r| self.world.secrets.remove(r).err()).collect();
        match failed.first() {
            None => Vec::new(),
            Some(e) => vec![format!("a superseded secret could not be removed ({e}); it stays sealed beside the log")],
        }
    }

    /// Tells a vault that `target` unregistered, with the log let go for the call: the key it
    /// registered with signs. Returns the log again, the state then, and what the vault said.
    fn tell_vault(
        &self,
        store: EventStore,
        state: &State,
        target: &crate::model::PendingRemoval,
    ) -> Result<(EventStore, State, RemovalObserved), EngineError> {
        let world = self.world;
        let request =
            signing_inputs(state, world, Ok(&target.private_key)).map(|(private_key, proxy)| UnregisterRequest {
                signer: HeadSigner {
                    endpoint: target.endpoint.clone(),
                    vault: target.vault.clone(),
                    machine_id: target.machine_id.clone(),
                    thumbprint: target.thumbprint.clone(),
                    private_key,
                    proxy,
                },
                request_id: self.meta.correlation_id.to_string(),
            });
        let observed =
            |answer| RemovalObserved { vault: target.vault.clone(), machine_id: target.machine_id.clone(), answer };
        let request = match request {
            Ok(request) => request,
            Err(Unsealable { secret, detail }) => {
                let reason = match secret {
                    SecretKind::ProxyPassword => crate::Reason::InvalidProxy,
                    _ => crate::Reason::CredentialsUnreadable,
                };
                let answer =
                    RemovalAnswer::Refused { reason, detail: format!("the call could not be signed: {detail}") };
                return Ok((store, state.clone(), observed(answer)));
            }
        };
        drop(store);
        let answer = world.vault.unregister(&request);
        drop(request);
        let store = self.registrar.log.open()?;
        let (state, _) = projections::current_state(&store)?;
        Ok((store, state, observed(answer)))
    }

    /// Unregisters (told to the vault, or marked not told when it cannot be), moves (the same, with
    /// another vault's credentials loaded, checked before the vault is told), or tells a vault of
    /// an earlier unregistration.
    fn unregister(
        &self,
        store: EventStore,
        state: State,
        command: Command,
        mut notes: Vec<String>,
    ) -> Result<Executed, EngineError> {
        let world = self.world;
        let mut observed = Observations { now: world.clock.now(), ..Observations::default() };
        let target = match &command {
            Command::FinishUnregister { machine_id } => {
                state.pending_removals.iter().find(|p| p.machine_id == *machine_id).cloned()
            }
            _ => state.registration.as_ref().and_then(|registration| {
                Some(crate::model::PendingRemoval {
                    vault: registration.vault.clone(),
                    machine_id: registration.machine_id.clone(),
                    endpoint: registration.endpoint.clone(),
                    thumbprint: registration.thumbprint.clone(),
                    private_key: registration_key(&state, registration)?,
                    unregistered_at: observed.now,
                })
            }),
        };
        if let Command::Move { file } = &command {
            observed.credentials = Some(observe_credentials(file, world)?);
            // A move refused for its own reasons (the file) tells the vault nothing.
            if crate::decide::check_move(&state, file, &observed).is_err() {
                let seen = Observed { observed, generated: None, file: None };
                return self.record(store, &state, command, seen, notes);
            }
        }
        let (store, state) = match target {
            Some(target) => {
                let (store, state, removal) = self.tell_vault(store, &state, &target)?;
                observed.now = world.clock.now();
                if let RemovalAnswer::Refused { detail, .. } = &removal.answer
                    && !matches!(command, Command::FinishUnregister { .. })
                {
                    notes.push(format!(
                        "vault {} was not told ({detail}): it lists machine {} until it is; the next register or unregister tells it",
                        removal.vault, removal.machine_id
                    ));
                }
                observed.removal = Some(removal);
                (store, state)
            }
            // A registration whose key the log never named (an old log): unregistered here only.
            None => (store, state),
        };
        self.record(store, &state, command, Observed { observed, generated: None, file: None }, notes)
    }

    /// Tells each vault of the unregistrations it was not told of; each one told is recorded
    /// (`RemovalCompleted`), one still not told only noted. Returns the log and the state after.
    fn tell_pending(
        &self,
        mut store: EventStore,
        mut state: State,
        notes: &mut Vec<String>,
    ) -> Result<(EventStore, State), EngineError> {
        for pending in state.pending_removals.clone() {
            let (reopened, now_state, removal) = self.tell_vault(store, &state, &pending)?;
            if let RemovalAnswer::Refused { detail, .. } = &removal.answer {
                notes.push(format!(
                    "vault {} still lists machine {}, unregistered here: it was not told ({detail})",
                    pending.vault, pending.machine_id
                ));
                (store, state) = (reopened, now_state);
                continue;
            }
            let observed =
                Observations { now: self.world.clock.now(), removal: Some(removal), ..Observations::default() };
            let command = Command::FinishUnregister { machine_id: pending.machine_id.clone() };
            let seen = Observed { observed, generated: None, file: None };
            let executed = self.record(reopened, &now_state, command, seen, Vec::new())?;
            if matches!(executed.result.record.outcome, Outcome::Accepted(_)) {
                notes.push(format!(
                    "vault {} was told of the unregistration of machine {} and removed it",
                    pending.vault, pending.machine_id
                ));
            }
            (store, state) = (executed.store, executed.result.state);
        }
        Ok((store, state))
    }

    /// Registers: starts an attempt (recorded) unless one is open, asks the vault with the log
    /// closed, then records its answer.
    fn register(
        &self,
        store: EventStore,
        state: State,
        command: Command,
        notes: Vec<String>,
    ) -> Result<Executed, EngineError> {
        let world = self.world;
        let Command::Register { endpoint_override } = &command else {
            return Err(EngineError::Encode("internal: not a registration".into()));
        };
        let (store, state) = if state.attempt.is_none() {
            let observed = Observations {
                now: world.clock.now(),
                request_id: Some(new_request_id(world)?),
                ..Observations::default()
            };
            let record = StepRecord {
                outcome: decide(&state, &command, &observed),
                command: command.clone(),
                observed,
                build: Some(world.build.clone()),
            };
            let (position, head, state) = self.append(&store, &state, &record)?;
            if let Outcome::Refused(_) = record.outcome {
                let result = StepResult { record, position, state, head, generated_passphrase: None, notes };
                return Ok(Executed { result, store });
            }
            (store, state)
        } else {
            (store, state)
        };
        let Some(attempt) = state.attempt.clone() else {
            return Err(EngineError::Encode("internal: a registration was started but is not in the state".into()));
        };
        let mut observed = Observations {
            now: world.clock.now(),
            request_id: Some(attempt.request_id.clone()),
            ..Observations::default()
        };
        // Everything the call needs is read while the log is held.
        let request =
            signing_inputs(&state, world, Ok(&attempt.private_key)).map(|(private_key, proxy)| RegisterRequest {
                endpoint: endpoint_override.clone().unwrap_or_else(|| attempt.endpoint.clone()),
                vault: attempt.vault.clone(),
                thumbprint: attempt.thumbprint.clone(),
                machine_name: world.machine_name.clone(),
                private_key,
                proxy,
                request_id: attempt.request_id.clone(),
            });
        let request = match request {
            Ok(request) => request,
            Err(unsealable) => {
                observed.unsealable = Some(unsealable);
                let seen = Observed { observed, generated: None, file: None };
                return self.record(store, &state, command, seen, notes);
            }
        };
        drop(store);
        let answer = world.vault.register(&request);
        drop(request);
        let store = self.registrar.log.open()?;
        let (state, _) = projections::current_state(&store)?;
        observed.now = world.clock.now();
        observed.vault = Some(answer);
        self.record(store, &state, command, Observed { observed, generated: None, file: None }, notes)
    }

    /// Changes the passphrase: every local rule first (the PIN's form, the passphrase, its file),
    /// then the PIN at the vault with the log closed, then the change, recorded.
    fn change_passphrase(
        &self,
        store: EventStore,
        state: State,
        command: Command,
        mut secrets: SecretInputs,
        notes: Vec<String>,
    ) -> Result<Executed, EngineError> {
        let world = self.world;
        let (Command::ChangePassphrase { save_to }, Some(registration)) = (&command, state.registration.clone()) else {
            return Err(EngineError::Encode("internal: not a passphrase change on a registered machine".into()));
        };
        let mut observed = Observations { now: world.clock.now(), ..Observations::default() };
        let pin = match secrets.security_pin.take() {
            None => {
                return Err(EngineError::MissingSecret(NeededSecret::SecurityPin));
            }
            Some(SecretInput::Unusable(problem)) => {
                observed.pin_problem = Some(format!("the security PIN given cannot be used: {problem}"));
                None
            }
            Some(SecretInput::Given(pin)) => {
                let text = pin.expose_secret();
                if text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) {
                    Some(pin)
                } else {
                    observed.pin_problem = Some("a security PIN is 8 digits".into());
                    None
                }
            }
        };
        let mut seen = Observed { observed, generated: None, file: None };
        let Some(pin) = pin else {
            return self.record(store, &state, command, seen, notes);
        };
        let (passphrase, generated) = passphrase_input(save_to.is_some(), &mut secrets, world)?;
        // Its file is only looked at now; it is written once the PIN is good (with the log held).
        let (facts, _) = observe_passphrase_locally(passphrase.as_ref(), save_to.as_deref(), false, world);
        let usable = passphrase_ok(&facts);
        seen.observed.passphrase = Some(facts);
        seen.generated = generated;
        // Refused before the vault is asked: the PIN stays good for the retry.
        let (Ok(passphrase), true) = (passphrase, usable) else {
            return self.record(store, &state, command, seen, notes);
        };
        let key = registration_key(&state, &registration);
        let key =
            key.as_ref().ok_or_else(|| "the key this machine registered with is not named in the log".to_string());
        let check = signing_inputs(&state, world, key).map(|(private_key, proxy)| PinCheck {
            endpoint: registration.endpoint.clone(),
            vault: registration.vault.clone(),
            machine_id: registration.machine_id.clone(),
            thumbprint: registration.thumbprint.clone(),
            private_key,
            pin,
            proxy,
            request_id: self.meta.correlation_id.to_string(),
        });
        let check = match check {
            Ok(check) => check,
            Err(unsealable) => {
                seen.observed.unsealable = Some(unsealable);
                return self.record(store, &state, command, seen, notes);
            }
        };
        drop(store);
        let answer = world.vault.check_pin(&check);
        drop(check);
        let store = self.registrar.log.open()?;
        let (state, _) = projections::current_state(&store)?;
        seen.observed.now = world.clock.now();
        let valid = matches!(answer, PinAnswer::Valid { issued_at } if crate::decide::pin_is_fresh(seen.observed.now, issued_at));
        seen.observed.pin = Some(answer);
        if valid
            && let Some(facts) = seen.observed.passphrase.as_mut()
            && passphrase_ok(facts)
        {
            if let Some(path) = save_to {
                match world.passphrase_files.prepare(path, &passphrase) {
                    Ok(prepared) => {
                        facts.saved_to = Some(prepared.target.clone());
                        seen.file = Some(prepared);
                    }
                    Err(problem) => facts.save_problem = Some(problem),
                }
            }
            if passphrase_ok(facts) {
                seal_passphrase(&passphrase, facts, world)?;
            }
        }
        self.record(store, &state, command, seen, notes)
    }
}

impl Run<'_, '_, '_> {
    /// Sets a proxy on a registered machine: the new proxy is tried against the vault first (a
    /// signed read that changes nothing there), with the log closed, and the answer recorded: a
    /// proxy that refuses the machine's user or password is not set (see `decide`).
    fn set_proxy(
        &self,
        store: EventStore,
        state: State,
        command: Command,
        mut secrets: SecretInputs,
        notes: Vec<String>,
    ) -> Result<Executed, EngineError> {
        let world = self.world;
        let (Command::SetProxy { host, port, username, password_given }, Some(registration)) =
            (&command, state.registration.clone())
        else {
            return Err(EngineError::Encode("internal: not a proxy set on a registered machine".into()));
        };
        let mut observed = Observations { now: world.clock.now(), ..Observations::default() };
        let mut password = None;
        if *password_given {
            match secrets.proxy_password.take() {
                None => return Err(EngineError::MissingSecret(NeededSecret::ProxyPassword)),
                Some(SecretInput::Unusable(problem)) => observed.proxy_password_problem = Some(problem),
                Some(SecretInput::Given(given)) => {
                    let sealed = world
                        .secrets
                        .seal(SecretKind::ProxyPassword, given.expose_secret().as_bytes())
                        .map_err(EngineError::Secrets)?;
                    observed.proxy_password = Some(sealed);
                    password = Some(given);
                }
            }
        }
        let mut seen = Observed { observed, generated: None, file: None };
        // Refused without the vault: nothing is tried.
        let port = u16::try_from(*port).ok();
        let (Some(port), Outcome::Accepted(_)) = (port, decide(&state, &command, &seen.observed)) else {
            return self.record(store, &state, command, seen, notes);
        };
        let key = registration_key(&state, &registration)
            .ok_or_else(|| "the key this machine registered with is not named in the log".to_string())
            .and_then(|key| world.secrets.open(SecretKind::CredentialsPrivateKey, &key));
        let private_key = match key {
            Ok(key) => key,
            Err(detail) => {
                seen.observed.vault_probe = Some(ProbeAnswer::Failed {
                    reason: Reason::CredentialsUnreadable,
                    detail: format!(
                        "the key this machine registered with cannot be opened ({detail}), so the new proxy was not tried"
                    ),
                });
                return self.record(store, &state, command, seen, notes);
            }
        };
        let probe = HeadSigner {
            endpoint: registration.endpoint.clone(),
            vault: registration.vault.clone(),
            machine_id: registration.machine_id.clone(),
            thumbprint: registration.thumbprint.clone(),
            private_key,
            proxy: Some(ProxyConfig { host: host.clone(), port, credentials: username.clone().zip(password) }),
        };
        drop(store);
        let answer = world.vault.probe(&probe);
        drop(probe);
        let store = self.registrar.log.open()?;
        let (state, _) = projections::current_state(&store)?;
        seen.observed.now = world.clock.now();
        seen.observed.vault_probe = Some(answer);
        self.record(store, &state, command, seen, notes)
    }
}

/// Observes what a command that needs no vault needs to know.
fn observe_local(
    state: &State,
    command: &Command,
    mut secrets: SecretInputs,
    world: &World<'_>,
    mut observed: Observations,
) -> Result<Observed, EngineError> {
    let mut generated = None;
    let mut file = None;
    match command {
        Command::ChooseFolders { install_dir, scratch_dir, .. } => {
            observed.install = Some(world.folders.probe(install_dir));
            observed.scratch = Some(world.folders.probe(scratch_dir));
        }
        Command::MoveScratch { scratch_dir } => {
            observed.scratch = Some(world.folders.probe(scratch_dir));
            // Resolved too, so a link to (or into) the install folder is caught.
            observed.install = state.folders.as_ref().map(|f| world.folders.probe(&f.install_dir));
        }
        Command::SetProxy { password_given: true, .. } => match secrets.proxy_password.take() {
            None => return Err(EngineError::MissingSecret(NeededSecret::ProxyPassword)),
            Some(SecretInput::Unusable(problem)) => observed.proxy_password_problem = Some(problem),
            Some(SecretInput::Given(password)) => {
                let sealed = world
                    .secrets
                    .seal(SecretKind::ProxyPassword, password.expose_secret().as_bytes())
                    .map_err(EngineError::Secrets)?;
                observed.proxy_password = Some(sealed);
            }
        },
        Command::LoadCredentials { file } => {
            observed.credentials = Some(observe_credentials(file, world)?);
        }
        Command::SetPassphrase { save_to } => {
            let (passphrase, made) = passphrase_input(save_to.is_some(), &mut secrets, world)?;
            let (mut facts, prepared) =
                observe_passphrase_locally(passphrase.as_ref(), save_to.as_deref(), true, world);
            if let Ok(passphrase) = &passphrase
                && passphrase_ok(&facts)
                && let Err(e) = seal_passphrase(passphrase, &mut facts, world)
            {
                if let Some(prepared) = &prepared {
                    world.passphrase_files.discard(prepared);
                }
                return Err(e);
            }
            observed.passphrase = Some(facts);
            generated = made;
            file = prepared;
        }
        Command::SetProxy { password_given: false, .. }
        | Command::ClearProxy
        | Command::Unregister
        | Command::Move { .. }
        | Command::FinishUnregister { .. }
        | Command::SetThrottling { .. }
        | Command::ThrottlingOff
        | Command::Register { .. }
        | Command::ChangePassphrase { .. }
        | Command::WitnessVaultLog { .. } => {}
    }
    Ok(Observed { observed, generated, file })
}

/// Folders are looked at before anything is created; once the step would be accepted, the missing
/// ones are created and looked at again, and that is what is recorded. A refused step creates
/// nothing. Returns what the operator should hear (nothing, usually).
fn create_folders(
    state: &State,
    command: &Command,
    observed: &mut Observations,
    world: &World<'_>,
) -> Option<Vec<String>> {
    let wanted: Vec<(&std::path::Path, bool)> = match command {
        Command::ChooseFolders { install_dir, scratch_dir, .. } => vec![(install_dir, true), (scratch_dir, false)],
        Command::MoveScratch { scratch_dir } => vec![(scratch_dir, false)],
        _ => return None,
    };
    if !matches!(decide(state, command, observed), Outcome::Accepted(_)) {
        return None;
    }
    for (path, install) in wanted {
        let slot = if install { &mut observed.install } else { &mut observed.scratch };
        let Some(before) = slot.as_ref().filter(|f| !f.existed && !f.created && !f.is_dir) else { continue };
        let before = before.clone();
        let after = match world.folders.create(path) {
            Ok(()) => FolderFacts { existed: false, created: true, ..world.folders.probe(path) },
            Err(problem) => {
                FolderFacts { problem: Some(format!("cannot create it: {problem}")), creatable: false, ..before }
            }
        };
        *slot = Some(after);
    }
    Some(Vec::new())
}

/// A fresh id for the log (a UUID, version 7) at `at`, a time the clock gave, with the rest from
/// the random source: ids, like everything else recorded, come through the ports.
fn new_id(at: DateTime<Utc>, world: &World<'_>) -> Result<Uuid, EngineError> {
    let mut random = [0u8; 10];
    world.random.fill(&mut random).map_err(EngineError::Randomness)?;
    // A time before 1970 comes only from a test's clock; its ids start at the epoch.
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    Ok(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
}

/// A fresh registration request id (a UUID, version 4, from the random source).
fn new_request_id(world: &World<'_>) -> Result<String, EngineError> {
    let mut bytes = [0u8; 16];
    world.random.fill(&mut bytes).map_err(EngineError::Randomness)?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid().to_string())
}

/// A run killed after it recorded a generated passphrase but before it moved its file into place
/// left the file beside its place: move it now. Returns what the operator should hear.
fn finish_kept_file(state: &State, world: &World<'_>) -> Vec<String> {
    let Some(encryption) = &state.encryption else { return Vec::new() };
    let (PassphraseOrigin::Generated { saved_to }, Some(sealed)) = (&encryption.origin, &encryption.sealed) else {
        return Vec::new();
    };
    if !world.passphrase_files.pending(saved_to) {
        return Vec::new();
    }
    let passphrase = world
        .secrets
        .open(SecretKind::Passphrase, sealed)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(SecretString::from);
    let Some(passphrase) = passphrase else { return Vec::new() };
    match world.passphrase_files.finish(saved_to, &passphrase) {
        Ok(true) => vec![format!(
            "the passphrase file {} was put in place (an earlier run stopped before it could)",
            saved_to.display()
        )],
        Ok(false) => Vec::new(),
        Err(problem) => {
            vec![format!("the passphrase file {} could not be put in place: {problem}", saved_to.display())]
        }
    }
}

/// The sealed key of the credentials the machine registered with.
fn registration_key(state: &State, registration: &crate::model::Registration) -> Option<SealedRef> {
    registration.private_key.clone().or_else(|| {
        state
            .credentials
            .as_ref()
            .filter(|c| c.facts.thumbprint == registration.thumbprint)
            .map(|c| c.private_key.clone())
    })
}

fn observe_credentials(file: &std::path::Path, world: &World<'_>) -> Result<CredentialsObserved, EngineError> {
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = match world.files.read(file, MAX_CREDENTIALS_BYTES) {
        Ok(bytes) => bytes,
        Err((kind, detail)) => return Ok(CredentialsObserved::Unreadable { kind, detail }),
    };
    let parsed = match regent_credentials::parse(&file_name, &bytes) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(CredentialsObserved::Invalid { detail: e.to_string() }),
    };
    let private_key = world
        .secrets
        .seal(SecretKind::CredentialsPrivateKey, parsed.private_key.pkcs8_der())
        .map_err(EngineError::Secrets)?;
    Ok(CredentialsObserved::Parsed { facts: credential_facts(&file_name, &parsed), private_key })
}

/// The facts of a credentials file's bytes, its key left unsealed: for a caller that only compares
/// a file with the state (the unattended wizard run again on a registered machine). Why the bytes
/// are not vault credentials, when they are not.
pub fn read_credential_facts(file_name: &str, bytes: &[u8]) -> Result<CredentialFacts, String> {
    regent_credentials::parse(file_name, bytes)
        .map(|parsed| credential_facts(file_name, &parsed))
        .map_err(|e| e.to_string())
}

/// The recorded facts of a parsed credentials file.
pub fn credential_facts(file_name: &str, parsed: &regent_credentials::VaultCredentials) -> CredentialFacts {
    CredentialFacts {
        file_name: file_name.to_string(),
        vault: VaultIdentity {
            name: parsed.identity.resource_name.clone(),
            subscription_id: parsed.identity.subscription_id.clone(),
            resource_group: parsed.identity.resource_group.clone(),
            location: parsed.identity.location.clone(),
            resource_id: parsed.identity.resource_id,
        },
        endpoint: parsed.endpoint.clone(),
        thumbprint: parsed.certificate.thumbprint.clone(),
        not_before: parsed.certificate.not_before,
        not_after: parsed.certificate.not_after,
        subject: parsed.certificate.subject.clone(),
        vault_key: parsed.transparency_log_key.clone(),
    }
}

/// The passphrase to use: generated (returned also as the second value, to show once) or given.
/// `Ok((None, _))`: the input given cannot be a passphrase (why is in the observation).
fn passphrase_input(
    generate: bool,
    secrets: &mut SecretInputs,
    world: &World<'_>,
) -> Result<(Result<SecretString, String>, Option<SecretString>), EngineError> {
    if generate {
        let mut failure = None;
        let passphrase = regent_secrets::generate_passphrase(|bytes: &mut [u8]| {
            if let Err(e) = world.random.fill(bytes) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            return Err(EngineError::Randomness(e));
        }
        let shown = SecretString::from(passphrase.expose_secret().to_string());
        return Ok((Ok(passphrase), Some(shown)));
    }
    match secrets.passphrase.take() {
        None => Err(EngineError::MissingSecret(NeededSecret::Passphrase)),
        Some(SecretInput::Given(passphrase)) => Ok((Ok(passphrase), None)),
        Some(SecretInput::Unusable(problem)) => Ok((Err(problem), None)),
    }
}

/// The facts of a passphrase that need no secret kept (its length, characters, whitespace), and,
/// when it is to be saved for the operator, its file: written beside its place when `write`,
/// otherwise only its place checked.
fn observe_passphrase_locally(
    passphrase: Result<&SecretString, &String>,
    save_to: Option<&std::path::Path>,
    write: bool,
    world: &World<'_>,
) -> (PassphraseObserved, Option<PreparedFile>) {
    let mut observed = PassphraseObserved {
        length: 0,
        printable_ascii: false,
        verifier: None,
        verifier_sealed: None,
        sealed: None,
        saved_to: None,
        save_problem: None,
        input_problem: None,
        blank: false,
        edge_whitespace: false,
    };
    let passphrase = match passphrase {
        Ok(passphrase) => passphrase,
        Err(problem) => {
            observed.input_problem = Some(problem.clone());
            return (observed, None);
        }
    };
    let facts = regent_secrets::PassphraseRules::check(passphrase);
    let text = passphrase.expose_secret();
    observed.length = facts.length;
    observed.printable_ascii = facts.printable_ascii;
    observed.blank = text.chars().all(char::is_whitespace);
    observed.edge_whitespace = !observed.blank && (text.trim() != text);
    let mut file = None;
    match save_to {
        Some(path) if write => match world.passphrase_files.prepare(path, passphrase) {
            Ok(prepared) => {
                observed.saved_to = Some(prepared.target.clone());
                file = Some(prepared);
            }
            Err(problem) => observed.save_problem = Some(problem),
        },
        Some(path) => match world.passphrase_files.check(path) {
            Ok(target) => observed.saved_to = Some(target),
            Err(problem) => observed.save_problem = Some(problem),
        },
        None => {}
    }
    (observed, file)
}

/// Whether the passphrase meets every rule that needs no vault (so it is worth a verifier).
fn passphrase_ok(facts: &PassphraseObserved) -> bool {
    facts.input_problem.is_none()
        && facts.save_problem.is_none()
        && !facts.blank
        && !facts.edge_whitespace
        && facts.printable_ascii
        && facts.length >= crate::decide::MIN_PASSPHRASE_CHARS
}

/// Seals the passphrase and its Argon2id verifier beside the log; the observation records their
/// references only.
fn seal_passphrase(
    passphrase: &SecretString,
    facts: &mut PassphraseObserved,
    world: &World<'_>,
) -> Result<(), EngineError> {
    let mut salt = [0u8; 16];
    world.random.fill(&mut salt).map_err(EngineError::Randomness)?;
    let verifier = regent_secrets::PassphraseVerifier::create(passphrase, &salt)
        .map_err(|e| EngineError::Secrets(e.to_string()))?;
    facts.verifier_sealed = Some(
        world.secrets.seal(SecretKind::PassphraseVerifier, verifier.phc().as_bytes()).map_err(EngineError::Secrets)?,
    );
    facts.sealed = Some(
        world
            .secrets
            .seal(SecretKind::Passphrase, passphrase.expose_secret().as_bytes())
            .map_err(EngineError::Secrets)?,
    );
    Ok(())
}

/// What a call to the vault is signed with and goes through, opened while the log is held: the
/// key `key` names, and the proxy with its password. Which one could not be opened, otherwise.
fn signing_inputs(
    state: &State,
    world: &World<'_>,
    key: Result<&SealedRef, String>,
) -> Result<(zeroize::Zeroizing<Vec<u8>>, Option<ProxyConfig>), Unsealable> {
    let unsealable = |secret| move |detail| Unsealable { secret, detail };
    let private_key = key
        .and_then(|key| world.secrets.open(SecretKind::CredentialsPrivateKey, key))
        .map_err(unsealable(SecretKind::CredentialsPrivateKey))?;
    let proxy = proxy_config(state, world.secrets).map_err(unsealable(SecretKind::ProxyPassword))?;
    Ok((private_key, proxy))
}

/// The proxy with its password opened, for the vault client.
pub(crate) fn proxy_config(
    state: &State,
    secrets: &dyn crate::ports::SecretKeeper,
) -> Result<Option<ProxyConfig>, String> {
    let Some(proxy) = &state.proxy else { return Ok(None) };
    let credentials = match (&proxy.username, &proxy.password) {
        (Some(user), Some(sealed)) => {
            let bytes = secrets.open(SecretKind::ProxyPassword, sealed)?;
            let password =
                String::from_utf8(bytes.to_vec()).map_err(|_| "the saved password is not text".to_string())?;
            Some((user.clone(), SecretString::from(password)))
        }
        _ => None,
    };
    Ok(Some(ProxyConfig { host: proxy.host.clone(), port: proxy.port, credentials }))
}

/// Removes sealed values the log names but nothing current refers to (nor `keep`), as builds that
/// kept every superseded secret left them (each step now removes what it supersedes). It reads the
/// whole log, so callers run it rarely. Sealed values the log never named are left alone: they may
/// be another log's. Returns how many went.
pub fn sweep_superseded(
    store: &EventStore,
    state: &State,
    secrets: &dyn crate::ports::SecretKeeper,
    keep: &[SealedRef],
) -> Result<usize, String> {
    let Some(mut current) = state.sealed_refs() else { return Ok(0) };
    current.extend(keep.iter().cloned());
    let recorded = projections::sealed_refs_recorded(store.read_stream(STREAM, 1)).map_err(|e| e.to_string())?;
    let superseded: Vec<&SealedRef> = recorded.iter().filter(|r| !current.contains(r)).collect();
    for sealed in &superseded {
        secrets.remove(sealed)?;
    }
    Ok(superseded.len())
}

/// Maps a file read error to what the user sees.
pub fn unreadable_kind(error: &std::io::Error) -> UnreadableKind {
    match error.kind() {
        std::io::ErrorKind::NotFound => UnreadableKind::Missing,
        std::io::ErrorKind::PermissionDenied => UnreadableKind::PermissionDenied,
        std::io::ErrorKind::IsADirectory => UnreadableKind::IsDirectory,
        _ => UnreadableKind::Other,
    }
}
