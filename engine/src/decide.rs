//! The rules: `decide(state, command, observations) -> outcome`. Pure: everything it needs from
//! the world arrives in `Observations`, which the outcome's event records.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::model::{
    Change, Command, CredentialFacts, CredentialsObserved, Encryption, FolderFacts, Folders, LoadedCredentials, Next,
    Observations, Outcome, PassphraseObserved, PassphraseOrigin, PinAnswer, ProbeAnswer, Proxy, Refusal, Registration,
    RegistrationAttempt, RemovalAnswer, SecretKind, Throttling, UnreadableKind, Unsealable, VaultAnswer,
};
use crate::reason::{Reason, Step, ends_registration_attempt};
use crate::state::State;
use crate::units::{format_bytes, format_rate};

/// Share of the declared backup size the scratch filesystem must have free, in percent.
pub const SCRATCH_FREE_PERCENT: u64 = 5;
pub const MIN_PASSPHRASE_CHARS: usize = 16;
pub const MIN_BANDWIDTH_BPS: u64 = 512_000;
pub const MAX_BANDWIDTH_BPS: u64 = 1_023_000_000;
/// How long a security PIN stays good after the vault issued it.
pub const PIN_VALIDITY: Duration = Duration::minutes(5);

/// Decides a command: the outcome to record.
pub fn decide(state: &State, command: &Command, observed: &Observations) -> Outcome {
    match precheck(state, command).map_or_else(|| decide_observed(state, command, observed), Err) {
        Ok(change) => Outcome::Accepted(change),
        Err(refusal) => Outcome::Refused(refusal),
    }
}

/// The rules that need no observation: order, phase, and the command's own values. The service
/// runs this before looking at the world, so a step out of order touches nothing.
pub fn precheck(state: &State, command: &Command) -> Option<Refusal> {
    let step = command.step();
    let refuse = |reason, message: String| Some(Refusal::new(step, reason, message));
    let registered = state.registration.as_ref();
    let first_missing = |needs_passphrase: bool| {
        if state.folders.is_none() {
            Some(Step::Folders)
        } else if state.credentials.is_none() {
            Some(Step::Credentials)
        } else if needs_passphrase && state.encryption.is_none() {
            Some(Step::Passphrase)
        } else {
            None
        }
    };
    let out_of_order = |missing: Step| {
        refuse(Reason::StepOutOfOrder, format!("the {missing} step comes first"))
            .map(|r| r.then([Next::Run(missing), Next::Run(step)]))
    };
    match command {
        Command::ChooseFolders { install_dir, scratch_dir, backup_size_bytes } => {
            if let Some(r) = registered {
                return refuse(
                    Reason::AlreadyRegistered,
                    format!("this machine is registered to vault {}; the scratch folder can still be moved", r.vault),
                )
                .map(|r| r.then([Next::Run(Step::ScratchFolder)]));
            }
            if *backup_size_bytes == 0 {
                return refuse(Reason::InvalidFolder, SIZE_ZERO.into());
            }
            check_folder_paths(install_dir, scratch_dir)
                .err()
                .and_then(|message| refuse(Reason::InvalidFolder, message))
        }
        Command::SetProxy { host, port, username, password_given } => {
            check_proxy(host, *port, username.as_deref(), *password_given)
                .err()
                .and_then(|message| refuse(Reason::InvalidProxy, message))
        }
        Command::ClearProxy => None,
        Command::LoadCredentials { file } => {
            if let Some(problem) = path_problem(file) {
                return refuse(
                    Reason::CredentialsUnreadable,
                    format!("the credentials file's path {problem}; copy the file to a path of plain text and load it from there"),
                )
                .map(|r| r.then([Next::Run(Step::Credentials)]));
            }
            state.folders.is_none().then_some(Step::Folders).and_then(out_of_order)
        }
        Command::SetPassphrase { save_to } | Command::ChangePassphrase { save_to }
            if save_to.as_deref().and_then(path_problem).is_some() =>
        {
            let problem = save_to.as_deref().and_then(path_problem).unwrap_or_default();
            refuse(
                Reason::PassphraseInvalid,
                format!("the file to save the passphrase to {problem}; name another file"),
            )
        }
        Command::SetPassphrase { .. } => {
            if registered.is_some() {
                return refuse(
                    Reason::AlreadyRegistered,
                    "this machine is registered; its passphrase is changed with a security PIN".into(),
                )
                .map(|r| r.then([Next::GetPin, Next::Run(Step::PassphraseChange)]));
            }
            first_missing(false).and_then(out_of_order)
        }
        Command::Register { .. } => {
            if let Some(r) = registered {
                return refuse(
                    Reason::AlreadyRegistered,
                    format!(
                        "this machine is already registered to vault {} as {}; to register again, unregister it first",
                        r.vault, r.machine_id
                    ),
                )
                .map(|r| r.then([Next::Run(Step::Unregister), Next::Run(Step::Register)]));
            }
            first_missing(true).and_then(out_of_order)
        }
        Command::WitnessVaultLog { machine_id } => {
            registered.is_none_or(|r| r.machine_id != *machine_id).then_some(()).and_then(|_| {
                refuse(Reason::StepOutOfOrder, format!("machine {machine_id} is not the one registered here"))
            })
        }
        Command::Unregister => registered.is_none().then_some(Step::Register).and_then(|_| {
            refuse(Reason::StepOutOfOrder, "this machine is not registered; there is nothing to unregister".into())
        }),
        Command::Move { file } => {
            if let Some(problem) = path_problem(file) {
                return refuse(
                    Reason::CredentialsUnreadable,
                    format!(
                        "the credentials file's path {problem}; copy the file to a path of plain text and use it from there"
                    ),
                );
            }
            registered.is_none().then_some(()).and_then(|_| {
                refuse(
                    Reason::StepOutOfOrder,
                    "this machine is not registered, so there is nothing to move: load the credentials and register"
                        .into(),
                )
                .map(|r| r.then([Next::Run(Step::Credentials), Next::Run(Step::Register)]))
            })
        }
        Command::FinishUnregister { machine_id } => {
            (!state.pending_removals.iter().any(|p| p.machine_id == *machine_id)).then_some(()).and_then(|_| {
                refuse(
                    Reason::StepOutOfOrder,
                    format!("no unregistration of machine {machine_id} waits to be told to its vault"),
                )
                .map(|r| r.then([Next::CheckStatus]))
            })
        }
        Command::MoveScratch { scratch_dir } => {
            let Some(folders) = &state.folders else {
                return out_of_order(Step::Folders);
            };
            check_folder_paths(&folders.install_dir, scratch_dir)
                .err()
                .and_then(|message| refuse(Reason::InvalidFolder, message))
        }
        Command::SetThrottling { work_days, work_start, work_end, work_bps, non_work_bps } => {
            let problem = if work_days.is_empty() {
                Some("name at least one work day, e.g. mon-fri".to_string())
            } else if work_start >= work_end {
                Some(format!("work hours must start before they end ({work_start}-{work_end}), e.g. 09:00-17:00"))
            } else {
                [("work", *work_bps), ("non-work", *non_work_bps)]
                    .into_iter()
                    .find(|(_, bps)| !(MIN_BANDWIDTH_BPS..=MAX_BANDWIDTH_BPS).contains(bps))
                    .map(|(which, bps)| {
                        format!(
                            "the {which} bandwidth {} is outside the allowed range, {} to {}",
                            format_rate(bps),
                            format_rate(MIN_BANDWIDTH_BPS),
                            format_rate(MAX_BANDWIDTH_BPS)
                        )
                    })
            };
            problem.and_then(|message| refuse(Reason::InvalidThrottling, message))
        }
        Command::ThrottlingOff => None,
        Command::ChangePassphrase { .. } => registered.is_none().then_some(()).and_then(|_| {
            refuse(
                Reason::StepOutOfOrder,
                "the passphrase is changed with a security PIN once registered; before registering, it is set as a step"
                    .into(),
            )
            .map(|r| r.then([Next::Run(Step::Passphrase)]))
        }),
    }
}

fn decide_observed(state: &State, command: &Command, observed: &Observations) -> Result<Change, Refusal> {
    let step = command.step();
    let refuse = |reason, message: String| Refusal::new(step, reason, message);
    let now = observed.now;
    match command {
        Command::ChooseFolders { install_dir, scratch_dir, backup_size_bytes } => {
            let install = needed(step, "install folder", observed.install.as_ref())?;
            let scratch = needed(step, "scratch folder", observed.scratch.as_ref())?;
            check_folder("install", install_dir, install).map_err(|m| refuse(Reason::InvalidFolder, m))?;
            let scratch_facts = check_scratch(step, scratch_dir, scratch, *backup_size_bytes)?;
            if let (Some(a), Some(b)) = (&install.resolved, &scratch.resolved) {
                check_folder_paths(a, b)
                    .map_err(|m| refuse(Reason::InvalidFolder, format!("{m} (after following symbolic links)")))?;
            }
            Ok(Change::FoldersChosen(Folders {
                install_dir: install_dir.clone(),
                scratch_dir: scratch_dir.clone(),
                backup_size_bytes: *backup_size_bytes,
                scratch_free_bytes: scratch_facts.free_bytes,
                scratch_filesystem: scratch_facts.filesystem.clone(),
            }))
        }
        Command::SetProxy { host, port, username, password_given } => {
            if let Some(problem) = &observed.proxy_password_problem {
                return Err(refuse(
                    Reason::InvalidProxy,
                    format!("the proxy password cannot be used: {problem}; give it as one line of at most 1 KiB"),
                ));
            }
            // A registered machine tried the new proxy against its vault first: a proxy that
            // refuses its user or password would cut the machine off, so it is not set. Any other
            // failure (the vault down, TLS) is not the proxy's to answer for: it is set, and the
            // interface warns.
            if let Some(ProbeAnswer::Failed {
                reason: reason @ (Reason::ProxyAuthFailed | Reason::InvalidProxy),
                detail,
            }) = &observed.vault_probe
            {
                return Err(refuse(
                    reason.clone(),
                    format!(
                        "the new proxy {host}:{port} was tried against the vault and refused ({detail}); the proxy setting is unchanged"
                    ),
                )
                .then([Next::Run(Step::Proxy)]));
            }
            let password = match password_given {
                true => Some(needed(step, "sealed proxy password", observed.proxy_password.as_ref())?.clone()),
                false => None,
            };
            // precheck refused ports out of range
            let port = u16::try_from(*port).map_err(|_| refuse(Reason::InvalidProxy, "invalid port".into()))?;
            Ok(Change::ProxySet(Proxy { host: host.clone(), port, username: username.clone(), password }))
        }
        Command::ClearProxy => Ok(Change::ProxyCleared),
        Command::LoadCredentials { file } => {
            let loaded = loaded_credentials(step, file, observed)?;
            if let Some(registration) = &state.registration
                && !same_vault(state, &loaded.facts)
            {
                return Err(refuse(
                    Reason::CredentialsWrongVault,
                    format!(
                        "The vault credentials file cannot be used: it was downloaded from vault {}, but this machine is registered to vault {}. Download credentials from vault {}, or move this machine to vault {} with this file {} (it unregisters from vault {} and registers with vault {}, keeping the passphrase)",
                        loaded.facts.vault.name,
                        registration.vault,
                        registration.vault,
                        loaded.facts.vault.name,
                        file.display(),
                        registration.vault,
                        loaded.facts.vault.name
                    ),
                )
                .then([Next::Move]));
            }
            Ok(Change::CredentialsLoaded(loaded))
        }
        Command::Move { file } => {
            let loaded = check_move(state, file, observed)?;
            let (machine_id, vault, vault_told) = unregistration(step, state, observed)?;
            Ok(Change::Unregistered { machine_id, vault, vault_told, new_credentials: Some(loaded) })
        }
        Command::FinishUnregister { machine_id } => {
            let pending = state
                .pending_removals
                .iter()
                .find(|p| p.machine_id == *machine_id)
                .ok_or_else(|| refuse(Reason::StepOutOfOrder, "".into()))?;
            let removal = needed(step, "vault's answer to the unregistration", observed.removal.as_ref())?;
            if removal.machine_id != pending.machine_id {
                return Err(refuse(Reason::StepOutOfOrder, "the vault was asked about another machine".into()));
            }
            match &removal.answer {
                RemovalAnswer::Removed { removed_at } => Ok(Change::RemovalCompleted {
                    machine_id: pending.machine_id.clone(),
                    vault: pending.vault.clone(),
                    removed_at: *removed_at,
                }),
                RemovalAnswer::NotFound { .. } => Ok(Change::RemovalCompleted {
                    machine_id: pending.machine_id.clone(),
                    vault: pending.vault.clone(),
                    removed_at: now,
                }),
                RemovalAnswer::Refused { reason, detail } => Err(refuse(
                    reason.clone(),
                    format!(
                        "vault {} still lists machine {}: it could not be told of the unregistration ({detail}); the machine stays unregistered here",
                        pending.vault, pending.machine_id
                    ),
                )
                .then([Next::Run(Step::Unregister)])),
            }
        }
        Command::SetPassphrase { save_to } => {
            let passphrase = needed(step, "passphrase", observed.passphrase.as_ref())?;
            let encryption = check_passphrase(step, state, save_to.as_deref(), passphrase, now)?;
            Ok(Change::PassphraseCreated(encryption))
        }
        Command::Register { endpoint_override } if observed.vault.is_none() && state.attempt.is_none() => {
            // Starting: the request id is recorded before the vault hears of it.
            let credentials = state.credentials.as_ref().ok_or_else(|| refuse(Reason::StepOutOfOrder, "".into()))?;
            check_validity(&credentials.facts, now).map_err(|m| refuse(Reason::CredentialsExpired, m))?;
            let request_id = needed(step, "registration request id", observed.request_id.as_ref())?;
            Ok(Change::RegistrationAttempted(RegistrationAttempt {
                request_id: request_id.clone(),
                thumbprint: credentials.facts.thumbprint.clone(),
                vault: credentials.facts.vault.clone(),
                endpoint: endpoint_override.clone().unwrap_or_else(|| credentials.facts.endpoint.clone()),
                private_key: credentials.private_key.clone(),
                vault_key: credentials.facts.vault_key.clone(),
                started_at: now,
            }))
        }
        Command::Register { endpoint_override } if state.attempt.is_some() => {
            let attempt = state.attempt.as_ref().ok_or_else(|| refuse(Reason::StepOutOfOrder, "".into()))?;
            if observed.request_id.as_ref() != Some(&attempt.request_id) {
                return Err(refuse(
                    Reason::StepOutOfOrder,
                    "the registration changed while the vault was asked (another regent command ran meanwhile)".into(),
                )
                .then([Next::CheckStatus, Next::Run(Step::Register)]));
            }
            if let Some(Unsealable { secret, detail }) = &observed.unsealable {
                return Err(unsealable_refusal(step, *secret, detail));
            }
            match needed(step, "vault's answer", observed.vault.as_ref())? {
                VaultAnswer::Registered { machine_id, vault, registered_at } => Ok(Change::Registered(Registration {
                    private_key: Some(attempt.private_key.clone()),
                    request_id: Some(attempt.request_id.clone()),
                    vault_key: attempt.vault_key.clone(),
                    ..registration(
                        machine_id,
                        vault,
                        *registered_at,
                        endpoint_override,
                        &attempt.endpoint,
                        &attempt.thumbprint,
                    )
                })),
                VaultAnswer::Refused { reason, detail } => {
                    let mut refusal = vault_refusal(step, reason.clone(), detail, &attempt.vault.name);
                    let loaded = state.credentials.as_ref().map(|c| c.facts.thumbprint.as_str());
                    if ends_registration_attempt(reason) && loaded != Some(attempt.thumbprint.as_str()) {
                        refusal.message.push_str(
                            " (this registration was started with the credentials loaded before the current ones; registering now starts one with the current ones)",
                        );
                        refusal.next = vec![Next::Run(Step::Register)];
                    }
                    Err(refusal)
                }
            }
        }
        Command::Register { endpoint_override } => {
            // A log written before schema 3: the answer came without a recorded start.
            let credentials = state.credentials.as_ref().ok_or_else(|| refuse(Reason::StepOutOfOrder, "".into()))?;
            check_validity(&credentials.facts, now).map_err(|m| refuse(Reason::CredentialsExpired, m))?;
            if let Some(Unsealable { secret, detail }) = &observed.unsealable {
                return Err(unsealable_refusal(step, *secret, detail));
            }
            match needed(step, "vault's answer", observed.vault.as_ref())? {
                VaultAnswer::Registered { machine_id, vault, registered_at } => Ok(Change::Registered(registration(
                    machine_id,
                    vault,
                    *registered_at,
                    endpoint_override,
                    &credentials.facts.endpoint,
                    &credentials.facts.thumbprint,
                ))),
                VaultAnswer::Refused { reason, detail } => {
                    Err(vault_refusal(step, reason.clone(), detail, &credentials.facts.vault.name))
                }
            }
        }
        Command::WitnessVaultLog { .. } => witness_vault_log(step, state, observed),
        Command::Unregister => {
            let (machine_id, vault, vault_told) = unregistration(step, state, observed)?;
            Ok(Change::Unregistered { machine_id, vault, vault_told, new_credentials: None })
        }
        Command::MoveScratch { scratch_dir } => {
            let folders = state.folders.as_ref().ok_or_else(|| refuse(Reason::StepOutOfOrder, "".into()))?;
            let scratch = needed(step, "scratch folder", observed.scratch.as_ref())?;
            let facts = check_scratch(step, scratch_dir, scratch, folders.backup_size_bytes)?;
            if let (Some(a), Some(b)) = (observed.install.as_ref().and_then(|i| i.resolved.as_ref()), &scratch.resolved)
            {
                check_folder_paths(a, b)
                    .map_err(|m| refuse(Reason::InvalidFolder, format!("{m} (after following symbolic links)")))?;
            }
            Ok(Change::ScratchMoved {
                scratch_dir: scratch_dir.clone(),
                scratch_free_bytes: facts.free_bytes,
                scratch_filesystem: facts.filesystem.clone(),
            })
        }
        Command::SetThrottling { work_days, work_start, work_end, work_bps, non_work_bps } => {
            Ok(Change::ThrottlingSet(Throttling {
                work_days: work_days.clone(),
                work_start: *work_start,
                work_end: *work_end,
                work_bps: *work_bps,
                non_work_bps: *non_work_bps,
            }))
        }
        Command::ThrottlingOff => Ok(Change::ThrottlingOff),
        Command::ChangePassphrase { save_to } => {
            // What can be refused here is refused before the vault is asked: a PIN is spent only
            // on a change that will be made.
            if let Some(problem) = &observed.pin_problem {
                return Err(refuse(Reason::SecurityPinInvalid, problem.clone())
                    .then([Next::GetPin, Next::Run(Step::PassphraseChange)]));
            }
            if let Some(passphrase) = &observed.passphrase {
                check_passphrase_rules(step, save_to.as_deref(), passphrase)?;
            }
            if let Some(Unsealable { secret, detail }) = &observed.unsealable {
                return Err(unsealable_refusal(step, *secret, detail));
            }
            match needed(step, "vault's answer on the security PIN", observed.pin.as_ref())? {
                PinAnswer::Refused { reason: Reason::SecurityPinInvalid, detail } => {
                    return Err(refuse(
                        Reason::SecurityPinInvalid,
                        format!("the security PIN was not accepted ({detail}); a new one is good for 5 minutes"),
                    )
                    .then([Next::GetPin, Next::Run(Step::PassphraseChange)]));
                }
                // The vault never judged the PIN (TLS, the network, the proxy, the vault itself):
                // said as what failed, so that a good PIN is not thrown away.
                PinAnswer::Refused { reason, detail } => return Err(pin_not_checked(step, reason.clone(), detail)),
                PinAnswer::Valid { issued_at } if !pin_is_fresh(now, *issued_at) => {
                    return Err(refuse(
                        Reason::SecurityPinInvalid,
                        format!("the security PIN was issued at {issued_at}, more than 5 minutes ago"),
                    )
                    .then([Next::GetPin, Next::Run(Step::PassphraseChange)]));
                }
                PinAnswer::Valid { .. } => {}
            }
            let passphrase = needed(step, "passphrase", observed.passphrase.as_ref())?;
            let encryption = check_passphrase(step, state, save_to.as_deref(), passphrase, now)?;
            Ok(Change::PassphraseChanged(encryption))
        }
    }
}

/// The credentials a step loads, from what reading and parsing the file gave: refused when it
/// could not be read, is not credentials, or is out of its validity.
fn loaded_credentials(step: Step, file: &Path, observed: &Observations) -> Result<LoadedCredentials, Refusal> {
    let refuse = |reason, message: String| Refusal::new(step, reason, message);
    let (facts, private_key) = match needed(step, "credentials file", observed.credentials.as_ref())? {
        CredentialsObserved::Unreadable { kind, detail } => {
            return Err(refuse(Reason::CredentialsUnreadable, unreadable_message(kind, detail)));
        }
        CredentialsObserved::Invalid { detail } => {
            return Err(refuse(
                Reason::CredentialsInvalid,
                format!(
                    "Invalid vault credentials provided: {detail}. The file is either corrupted or not a vault credentials file; download a new one from the vault"
                ),
            ));
        }
        CredentialsObserved::Parsed { facts, private_key } => (facts, private_key),
    };
    // A key the agent would trust from now on must be one: a broken one would make every proof
    // of the vault's log fail, and the agent would warn of the vault, not of the file.
    if let Some(key) = &facts.vault_key
        && let Err(e) = key.parse::<regent_protocol::transparency::NoteVerifier>()
    {
        return Err(refuse(
            Reason::CredentialsInvalid,
            format!(
                "Invalid vault credentials provided: its TransparencyLogKey is not a C2SP verifier key ({e}). The file is either corrupted or not a vault credentials file; download a new one from the vault"
            ),
        ));
    }
    check_validity(facts, observed.now).map_err(|m| refuse(Reason::CredentialsExpired, m))?;
    Ok(LoadedCredentials {
        file: file.to_path_buf(),
        facts: facts.clone(),
        private_key: private_key.clone(),
        loaded_at: observed.now,
    })
}

/// What a move needs before the vault it leaves is told: a registered machine, and usable
/// credentials of another vault. Checked first, so that a move refused for a reason of its own
/// never unregisters anything.
pub fn check_move(state: &State, file: &Path, observed: &Observations) -> Result<LoadedCredentials, Refusal> {
    let step = Step::Register;
    if let Some(refusal) = precheck(state, &Command::Move { file: file.to_path_buf() }) {
        return Err(refusal);
    }
    let loaded = loaded_credentials(step, file, observed)?;
    if let Some(registration) = &state.registration
        && same_vault(state, &loaded.facts)
    {
        return Err(Refusal::new(
            step,
            Reason::AlreadyRegistered,
            format!(
                "this machine is already registered to vault {} as {}, the vault these credentials are for; there is nothing to move",
                registration.vault, registration.machine_id
            ),
        ));
    }
    Ok(loaded)
}

/// The registration an unregistration ends, and whether its vault was told (None: a log from
/// before the vault was told at all).
fn unregistration(
    step: Step,
    state: &State,
    observed: &Observations,
) -> Result<(String, String, Option<bool>), Refusal> {
    let registration = state.registration.as_ref().ok_or_else(|| Refusal::new(step, Reason::StepOutOfOrder, ""))?;
    let told = match &observed.removal {
        None => None,
        Some(removal) if removal.machine_id != registration.machine_id => {
            return Err(Refusal::new(
                step,
                Reason::StepOutOfOrder,
                "the registration changed while the vault was told (another regent command ran meanwhile)",
            )
            .then([Next::CheckStatus]));
        }
        Some(removal) => Some(removal.answer.told()),
    };
    Ok((registration.machine_id.clone(), registration.vault.clone(), told))
}

/// The registration the vault's answer makes, at `endpoint_override` or else `endpoint`; the key
/// and request id are the caller's to add (a log before schema 3 recorded neither).
fn registration(
    machine_id: &str,
    vault: &str,
    registered_at: DateTime<Utc>,
    endpoint_override: &Option<String>,
    endpoint: &str,
    thumbprint: &str,
) -> Registration {
    Registration {
        vault: vault.to_string(),
        machine_id: machine_id.to_string(),
        registered_at,
        endpoint: endpoint_override.clone().unwrap_or_else(|| endpoint.to_string()),
        thumbprint: thumbprint.to_string(),
        private_key: None,
        request_id: None,
        vault_key: None,
    }
}

/// What the vault's transparency log proved of a reported head, checked again from what was
/// observed ([`crate::vault_log::check`]): the key taken at first contact when it held, the
/// problem when it did not.
fn witness_vault_log(step: Step, state: &State, observed: &Observations) -> Result<Change, Refusal> {
    let seen = needed(step, "vault's answer", observed.vault_log.as_ref())?;
    let head = seen.head;
    let checked = crate::vault_log::check(
        seen.seen.as_ref(),
        &seen.vault_key,
        seen.key_from,
        &seen.answer,
        &seen.vault,
        &seen.machine_id,
        head,
    );
    match checked {
        Ok(witnessed) if state.vault_key.is_none() => Ok(Change::VaultKeyTaken {
            vault: seen.vault.clone(),
            machine_id: seen.machine_id.clone(),
            vault_key: witnessed.vault_key,
            tree_size: witnessed.size,
        }),
        Ok(_) => Err(Refusal::new(
            step,
            Reason::StepOutOfOrder,
            "the vault's log held and its key is already trusted: there is nothing to record".to_string(),
        )),
        Err(problem) => Ok(Change::VaultLogInconsistent {
            vault: seen.vault.clone(),
            machine_id: seen.machine_id.clone(),
            position: head.position,
            problem: problem.to_string(),
            seen_checkpoint: seen.seen.as_ref().map(|w| w.checkpoint.clone()),
            checkpoint: seen.answer.checkpoint.clone(),
        }),
    }
}

/// The vault did not judge the security PIN: the refusal names what failed instead (a TLS
/// failure is never `security_pin_invalid`).
fn pin_not_checked(step: Step, reason: Reason, detail: &str) -> Refusal {
    let again = Next::Run(Step::PassphraseChange);
    let (message, next) = match &reason {
        Reason::VaultTlsFailed => (
            format!(
                "no trusted TLS connection to the vault could be made ({detail}); the security PIN was not sent, so it stays good for its 5 minutes"
            ),
            vec![again],
        ),
        Reason::VaultUnreachable => (
            format!(
                "the vault could not be reached to check the security PIN ({detail}); a PIN the vault never saw stays good for its 5 minutes"
            ),
            vec![again],
        ),
        Reason::ProxyAuthFailed => (
            format!("the proxy refused the user name or password ({detail}); the security PIN was not sent"),
            vec![Next::Run(Step::Proxy), again],
        ),
        _ => (format!("the vault did not check the security PIN ({detail})"), vec![again, Next::ExportLog]),
    };
    Refusal::new(step, reason, message).then(next)
}

/// A sealed secret the step needed could not be opened.
fn unsealable_refusal(step: Step, secret: SecretKind, detail: &str) -> Refusal {
    match secret {
        SecretKind::ProxyPassword => Refusal::new(
            step,
            Reason::InvalidProxy,
            format!("the saved proxy password cannot be opened ({detail}); set it again"),
        )
        .then([Next::Run(Step::Proxy)]),
        _ => Refusal::new(
            step,
            Reason::CredentialsUnreadable,
            format!("the saved credentials key cannot be opened ({detail}); load the vault credentials file again"),
        )
        .then([Next::Run(Step::Credentials)]),
    }
}

/// A PIN is good from when the vault issued it until 5 minutes later (a little clock skew either
/// way is tolerated by the same margin). Subtraction only: times come from the log, and adding to
/// an extreme recorded time would overflow.
pub fn pin_is_fresh(now: DateTime<Utc>, issued_at: DateTime<Utc>) -> bool {
    let age = now.signed_duration_since(issued_at);
    age <= PIN_VALIDITY && -age <= PIN_VALIDITY
}

/// An observation the command needed is missing: the record is incomplete, never a crash.
fn needed<'a, T>(step: Step, what: &str, value: Option<&'a T>) -> Result<&'a T, Refusal> {
    value.ok_or_else(|| {
        Refusal::new(
            step,
            Reason::VaultError,
            format!("internal: the {what} was not observed; this is a bug in regent, please report it"),
        )
        .then([Next::ExportLog])
    })
}

/// What makes a path unusable in the log: bytes that are not UTF-8. The command line turns them
/// into U+FFFD, so the path recorded would not be the path on disk. (Control characters are
/// allowed, as the filesystem allows them; every terminal view shows them escaped.)
fn path_problem(path: &Path) -> Option<String> {
    path.to_string_lossy()
        .contains('\u{fffd}')
        .then(|| "is not valid UTF-8 text (shown with U+FFFD where its bytes are not)".into())
}

const SIZE_ZERO: &str = "the backup size must be more than 0, e.g. 750GiB";

fn check_folder_paths(install: &Path, scratch: &Path) -> Result<(), String> {
    for (what, path) in [("install", install), ("scratch", scratch)] {
        if let Some(problem) = folder_path_problem(what, path) {
            return Err(problem);
        }
    }
    check_folder_pair(install, scratch)
}

/// A folder's path on its own: plain text, absolute.
fn folder_path_problem(what: &str, path: &Path) -> Option<String> {
    if let Some(problem) = path_problem(path) {
        return Some(format!("the {what} folder's path {problem}; choose a folder whose path is plain text"));
    }
    (!path.is_absolute())
        .then(|| format!("the {what} folder must be an absolute path, e.g. /opt/regent; got {}", path.display()))
}

/// Two absolute folders: different, neither inside the other.
fn check_folder_pair(install: &Path, scratch: &Path) -> Result<(), String> {
    let (install, scratch) = (normalize(install), normalize(scratch));
    if install == scratch {
        return Err(format!("the install and scratch folders must differ; both are {}", install.display()));
    }
    if scratch.starts_with(&install) || install.starts_with(&scratch) {
        return Err(format!(
            "neither folder may be inside the other: {} and {}; choose separate folders",
            install.display(),
            scratch.display()
        ));
    }
    Ok(())
}

/// Resolves `.` and `..` by the letters of the path (the observation resolves links).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn check_folder(what: &str, path: &Path, facts: &FolderFacts) -> Result<(), String> {
    if let Some(problem) = &facts.problem {
        return Err(format!("the {what} folder {} cannot be used: {problem}", path.display()));
    }
    if !facts.existed && !facts.created && !facts.is_dir {
        // Looked at before creating anything: it is created once the step is accepted.
        if facts.creatable {
            return Ok(());
        }
        return Err(format!(
            "the {what} folder {} does not exist and cannot be created: its nearest existing parent is not a folder this user may write to; create it, or choose another",
            path.display()
        ));
    }
    if !facts.is_dir {
        return Err(format!("the {what} folder {} is not a directory; choose a directory", path.display()));
    }
    if !facts.writable {
        return Err(format!(
            "the {what} folder {} is not writable by this user; choose another or fix its permissions",
            path.display()
        ));
    }
    Ok(())
}

fn check_scratch<'a>(
    step: Step,
    path: &Path,
    facts: &'a FolderFacts,
    backup_size: u64,
) -> Result<&'a FolderFacts, Refusal> {
    let refuse = |reason, message: String| Refusal::new(step, reason, message);
    check_folder("scratch", path, facts).map_err(|m| refuse(Reason::InvalidFolder, m))?;
    if let Some(message) = network_problem(path, facts) {
        return Err(refuse(Reason::InvalidFolder, message));
    }
    if let Some(message) = scratch_space_problem(facts, backup_size) {
        return Err(refuse(Reason::InsufficientScratchSpace, message));
    }
    Ok(facts)
}

fn network_problem(path: &Path, facts: &FolderFacts) -> Option<String> {
    facts.network.then(|| {
        format!(
            "the scratch folder {} is on a network share ({}); choose a folder on a local disk",
            path.display(),
            facts.filesystem
        )
    })
}

fn scratch_space_problem(facts: &FolderFacts, backup_size: u64) -> Option<String> {
    let required = required_scratch_bytes(backup_size);
    (facts.free_bytes < required).then(|| {
        format!(
            "the scratch folder's filesystem has {} free but needs at least {} ({SCRATCH_FREE_PERCENT}% of the {} backup); free space or choose another folder",
            format_bytes(facts.free_bytes),
            format_bytes(required),
            format_bytes(backup_size)
        )
    })
}

/// The folders rules of `decide`, for a screen that checks each answer as it is given and says
/// every problem at once. Each gives every problem it finds, in the words of the refusal, where
/// `decide` stops at the first. They are a convenience: the folders step's refusal is decide's.
pub mod folder_rules {
    use std::path::Path;

    use super::{
        FolderFacts, Reason, SIZE_ZERO, check_folder, check_folder_pair, folder_path_problem, network_problem,
        scratch_space_problem,
    };

    /// The install folder's answer, and what a look at it found.
    pub fn install_problems(path: &Path, facts: &FolderFacts) -> Vec<String> {
        match folder_path_problem("install", path) {
            Some(problem) => vec![problem],
            None => check_folder("install", path, facts).err().into_iter().collect(),
        }
    }

    /// The scratch folder's answer, given the install folder's (and where it resolves, once
    /// looked at): its own problems, then the two folders' together.
    pub fn scratch_problems(
        install_dir: &Path,
        install_resolved: Option<&Path>,
        path: &Path,
        facts: &FolderFacts,
    ) -> Vec<String> {
        if let Some(problem) = folder_path_problem("scratch", path) {
            return vec![problem];
        }
        let mut problems = Vec::new();
        let by_letters = folder_path_problem("install", install_dir).is_none();
        let pair = by_letters.then(|| check_folder_pair(install_dir, path).err()).flatten();
        let unresolved = pair.is_none();
        problems.extend(pair);
        problems.extend(check_folder("scratch", path, facts).err());
        problems.extend(network_problem(path, facts));
        if let (true, true, Some(a), Some(b)) = (by_letters, unresolved, install_resolved, facts.resolved.as_deref()) {
            problems.extend(check_folder_pair(a, b).err().map(|m| format!("{m} (after following symbolic links)")));
        }
        problems
    }

    /// The backup size, against the free space a look at the scratch folder found.
    pub fn backup_size_problems(backup_size: u64, scratch: &FolderFacts) -> Vec<(Reason, String)> {
        if backup_size == 0 {
            return vec![(Reason::InvalidFolder, SIZE_ZERO.into())];
        }
        let space = scratch.problem.is_none().then(|| scratch_space_problem(scratch, backup_size)).flatten();
        space.map(|m| (Reason::InsufficientScratchSpace, m)).into_iter().collect()
    }

    /// Every problem of the whole folders step, in the order `decide` checks: when there is any,
    /// decide refuses the step with the first.
    pub fn problems(
        install_dir: &Path,
        scratch_dir: &Path,
        backup_size: u64,
        install: &FolderFacts,
        scratch: &FolderFacts,
    ) -> Vec<(Reason, String)> {
        let invalid = |message: String| (Reason::InvalidFolder, message);
        let mut problems = Vec::new();
        if backup_size == 0 {
            problems.push(invalid(SIZE_ZERO.into()));
        }
        let install_path = folder_path_problem("install", install_dir);
        let scratch_path = folder_path_problem("scratch", scratch_dir);
        let paths_ok = install_path.is_none() && scratch_path.is_none();
        problems.extend(install_path.into_iter().chain(scratch_path).map(invalid));
        let pair = paths_ok.then(|| check_folder_pair(install_dir, scratch_dir).err()).flatten();
        let unresolved = pair.is_none();
        problems.extend(pair.map(invalid));
        if folder_path_problem("install", install_dir).is_none() {
            problems.extend(check_folder("install", install_dir, install).err().map(invalid));
        }
        if folder_path_problem("scratch", scratch_dir).is_none() {
            match check_folder("scratch", scratch_dir, scratch) {
                Err(message) => problems.push(invalid(message)),
                Ok(()) => {
                    problems.extend(network_problem(scratch_dir, scratch).map(invalid));
                    if backup_size > 0 {
                        problems.extend(
                            scratch_space_problem(scratch, backup_size).map(|m| (Reason::InsufficientScratchSpace, m)),
                        );
                    }
                }
            }
        }
        if let (true, true, Some(a), Some(b)) = (paths_ok, unresolved, &install.resolved, &scratch.resolved) {
            problems.extend(
                check_folder_pair(a, b).err().map(|m| invalid(format!("{m} (after following symbolic links)"))),
            );
        }
        problems
    }
}

/// 5% of the backup size, rounded up.
pub fn required_scratch_bytes(backup_size: u64) -> u64 {
    let required = (u128::from(backup_size) * u128::from(SCRATCH_FREE_PERCENT)).div_ceil(100);
    u64::try_from(required).unwrap_or(u64::MAX)
}

/// The largest backup whose [`required_scratch_bytes`] fits in `free` bytes.
pub fn largest_backup_bytes(free: u64) -> u64 {
    let largest = u128::from(free) * 100 / u128::from(SCRATCH_FREE_PERCENT);
    u64::try_from(largest).unwrap_or(u64::MAX)
}

fn check_proxy(host: &str, port: u32, username: Option<&str>, password_given: bool) -> Result<(), String> {
    let host_ok = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if !host_ok {
        return Err(format!("'{host}' is not a host name or IP address; e.g. proxy.example.com or 10.0.0.5"));
    }
    if !(1..=65535).contains(&port) {
        return Err(format!("port {port} is out of range; use 1 to 65535"));
    }
    match (username, password_given) {
        (Some(user), true) => {
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                return Err("the proxy user name must be non-empty, without ':' or control characters".into());
            }
            Ok(())
        }
        (None, false) => Ok(()),
        (Some(_), false) => Err("a proxy user needs a password".into()),
        (None, true) => Err("a proxy password needs a user name".into()),
    }
}

fn unreadable_message(kind: &UnreadableKind, detail: &str) -> String {
    let why = match kind {
        UnreadableKind::Missing => "the file does not exist".to_string(),
        UnreadableKind::PermissionDenied => "permission denied".to_string(),
        UnreadableKind::IsDirectory => "it is a directory, not a file".to_string(),
        UnreadableKind::TooLarge => format!("it is too large to be a vault credentials file ({detail})"),
        UnreadableKind::Other => detail.to_string(),
    };
    format!(
        "Unable to read the vault credentials file ({why}). Copy it to a local folder you can read and try again, or download a new one"
    )
}

/// A time in a message, as the audit table and status print one: to the second, UTC.
const TIME: &str = "%Y-%m-%d %H:%M:%S UTC";

fn check_validity(facts: &CredentialFacts, now: DateTime<Utc>) -> Result<(), String> {
    if now < facts.not_before {
        return Err(format!(
            "The vault credentials file is not valid until {}; check this machine's clock (it reads {})",
            facts.not_before.format(TIME),
            now.format(TIME)
        ));
    }
    if now > facts.not_after {
        return Err(format!(
            "Vault credentials file provided has expired (at {}). Download a new vault credentials file from the vault and use it within its validity",
            facts.not_after.format(TIME)
        ));
    }
    Ok(())
}

fn same_vault(state: &State, facts: &CredentialFacts) -> bool {
    match (&state.registration, &state.credentials) {
        (Some(registration), Some(loaded)) => {
            loaded.facts.vault == facts.vault
                || (registration.vault == facts.vault.name && loaded.facts.vault.resource_id == facts.vault.resource_id)
        }
        (Some(registration), None) => registration.vault == facts.vault.name,
        (None, _) => true,
    }
}

/// The rules a passphrase must meet, and its file must, before anything else is done with it.
fn check_passphrase_rules(step: Step, save_to: Option<&Path>, observed: &PassphraseObserved) -> Result<(), Refusal> {
    let refuse = |reason, message: String| Refusal::new(step, reason, message);
    if let Some(problem) = &observed.input_problem {
        return Err(refuse(
            Reason::PassphraseInvalid,
            format!("the passphrase given cannot be used: {problem}; give it as one line of at most 1 KiB"),
        ));
    }
    if observed.blank {
        return Err(refuse(
            Reason::PassphraseInvalid,
            "the passphrase is only whitespace; type a real one, or generate one".into(),
        )
        .then([Next::Run(Step::Passphrase)]));
    }
    if let (Some(path), Some(problem)) = (save_to, &observed.save_problem) {
        return Err(refuse(
            Reason::PassphraseInvalid,
            format!(
                "the generated passphrase could not be saved to {} ({problem}); name a new file in an existing folder",
                path.display()
            ),
        ));
    }
    if observed.length < MIN_PASSPHRASE_CHARS {
        return Err(refuse(
            Reason::PassphraseTooShort,
            format!(
                "the passphrase has {} characters; it needs at least {MIN_PASSPHRASE_CHARS} (or generate one)",
                observed.length
            ),
        )
        .then([Next::Run(Step::Passphrase)]));
    }
    if !observed.printable_ascii {
        return Err(refuse(
            Reason::PassphraseInvalid,
            "the passphrase may use only printable ASCII characters (letters, digits, punctuation and spaces)".into(),
        ));
    }
    if observed.edge_whitespace {
        return Err(refuse(
            Reason::PassphraseInvalid,
            "the passphrase starts or ends with whitespace, which is easy to lose when it is typed again; remove it"
                .into(),
        ));
    }
    Ok(())
}

fn check_passphrase(
    step: Step,
    state: &State,
    save_to: Option<&Path>,
    observed: &PassphraseObserved,
    now: DateTime<Utc>,
) -> Result<Encryption, Refusal> {
    let refuse = |reason, message: String| Refusal::new(step, reason, message);
    check_passphrase_rules(step, save_to, observed)?;
    if observed.verifier.is_none() && observed.verifier_sealed.is_none() {
        return Err(refuse(
            Reason::PassphraseInvalid,
            "internal: no verifier was computed; this is a bug in regent".into(),
        ));
    }
    let origin = match (save_to, &observed.saved_to) {
        (Some(_), Some(saved_to)) => PassphraseOrigin::Generated { saved_to: saved_to.clone() },
        (Some(path), None) => PassphraseOrigin::Generated { saved_to: path.to_path_buf() },
        (None, _) => PassphraseOrigin::Provided,
    };
    let mut warnings = Vec::new();
    if let (PassphraseOrigin::Generated { saved_to }, Some(folders)) = (&origin, &state.folders) {
        let saved = normalize(saved_to);
        for (what, dir) in [("install", &folders.install_dir), ("scratch", &folders.scratch_dir)] {
            if saved.starts_with(normalize(dir)) {
                warnings.push(format!(
                    "the passphrase file {} is inside the {what} folder; move it somewhere safe, off this machine: a lost passphrase cannot be recovered and backups cannot be restored without it",
                    saved_to.display()
                ));
            }
        }
    }
    Ok(Encryption {
        origin,
        verifier: observed.verifier.clone(),
        verifier_sealed: observed.verifier_sealed.clone(),
        sealed: observed.sealed.clone(),
        set_at: now,
        warnings,
    })
}

/// The vault's refusal of a registration, said as the refusal the agent records.
fn vault_refusal(step: Step, reason: Reason, detail: &str, vault: &str) -> Refusal {
    let (message, next) = match &reason {
        Reason::CredentialsWrongVault => (
            format!(
                "The vault credentials file cannot be used: it was not downloaded from vault {vault} as the vault sees it ({detail}). Download vault credentials from that vault's Quick Start page and load them, then register"
            ),
            vec![Next::Run(Step::Credentials), Next::Run(Step::Register)],
        ),
        Reason::RequestIdConflict => (
            format!(
                "vault {vault} made this registration's request for another machine or with other credentials ({detail}): this data directory was probably copied from another server; registering now starts a new registration for this machine"
            ),
            vec![Next::Run(Step::Register)],
        ),
        Reason::MachineRemoved => (
            format!(
                "vault {vault} removed the machine this registration made ({detail}); registering now registers this machine again as a new one"
            ),
            vec![Next::Run(Step::Register)],
        ),
        Reason::CredentialsSuperseded => (
            format!(
                "The vault credentials file is no longer valid: {}. Load the newest vault credentials file and register again",
                if detail.trim().is_empty() { "a newer one was downloaded from the vault" } else { detail }
            ),
            vec![Next::Run(Step::Credentials), Next::Run(Step::Register)],
        ),
        Reason::CredentialsExpired => (
            format!(
                "Vault credentials file provided has expired: {detail}. Download a new vault credentials file from the vault and use it within its validity"
            ),
            vec![Next::Run(Step::Credentials), Next::Run(Step::Register)],
        ),
        Reason::CredentialsInvalid => (
            format!(
                "Invalid vault credentials provided ({detail}). The file is either corrupted or does not have the latest credentials associated with the vault"
            ),
            vec![Next::Run(Step::Credentials), Next::Run(Step::Register)],
        ),
        Reason::ProxyAuthFailed => (
            format!("the proxy refused the user name or password ({detail}); set them again"),
            vec![Next::Run(Step::Proxy), Next::Run(Step::Register)],
        ),
        Reason::VaultUnreachable => (
            format!("the vault service could not be reached ({detail}); check the network and proxy settings"),
            vec![Next::Run(Step::Register)],
        ),
        Reason::VaultTlsFailed => (
            format!(
                "no trusted TLS connection to the vault could be made ({detail}); the vault did not see the registration, and the credentials were not judged"
            ),
            vec![Next::Run(Step::Register)],
        ),
        _ => {
            (format!("the vault refused the registration ({detail})"), vec![Next::Run(Step::Register), Next::ExportLog])
        }
    };
    Refusal::new(step, reason, message).then(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: &str, resolved: &str) -> FolderFacts {
        let ok = FolderFacts {
            resolved: Some(PathBuf::from(resolved)),
            existed: true,
            is_dir: true,
            writable: true,
            filesystem: "ext4".into(),
            free_bytes: 100 << 30,
            ..FolderFacts::default()
        };
        match kind {
            "file" => FolderFacts { is_dir: false, writable: false, ..ok },
            "read-only" => FolderFacts { writable: false, ..ok },
            "missing" => FolderFacts { existed: false, is_dir: false, writable: false, creatable: true, ..ok },
            "uncreatable" => FolderFacts { existed: false, is_dir: false, writable: false, ..ok },
            "broken" => FolderFacts { problem: Some("cannot read its free space".into()), ..ok },
            "network" => FolderFacts { network: true, filesystem: "nfs4".into(), ..ok },
            "small" => FolderFacts { free_bytes: 1 << 20, ..ok },
            _ => ok,
        }
    }

    #[test]
    fn the_folder_rules_list_every_problem_and_decide_refuses_with_the_first() {
        let kinds = ["ok", "file", "read-only", "missing", "uncreatable", "broken", "network", "small"];
        let paths = [
            ("/opt/regent", "/var/cache/regent"),
            ("opt/regent", "/var/cache/regent"),
            ("/opt/regent", "cache"),
            ("/opt/regent", "/opt/regent/cache"),
            ("/srv/x", "/srv/x/."),
        ];
        let resolutions = [("/opt/regent", "/var/cache/regent"), ("/data", "/data/cache")];
        let mut several = 0;
        for (install_dir, scratch_dir) in paths {
            for (install_resolved, scratch_resolved) in resolutions {
                for install_kind in kinds {
                    for scratch_kind in kinds {
                        for size in [0, 1 << 30, 1 << 50] {
                            let (install_dir, scratch_dir) = (PathBuf::from(install_dir), PathBuf::from(scratch_dir));
                            let install = facts(install_kind, install_resolved);
                            let scratch = facts(scratch_kind, scratch_resolved);
                            let problems = folder_rules::problems(&install_dir, &scratch_dir, size, &install, &scratch);
                            several += usize::from(problems.len() > 1);
                            let observed = Observations {
                                install: Some(install.clone()),
                                scratch: Some(scratch.clone()),
                                ..Observations::default()
                            };
                            let command = Command::ChooseFolders {
                                install_dir: install_dir.clone(),
                                scratch_dir: scratch_dir.clone(),
                                backup_size_bytes: size,
                            };
                            match decide(&State::default(), &command, &observed) {
                                Outcome::Accepted(_) => assert!(problems.is_empty(), "{command:?}: {problems:?}"),
                                Outcome::Refused(refusal) => assert_eq!(
                                    problems.first(),
                                    Some(&(refusal.reason.clone(), refusal.message.clone())),
                                    "{command:?} {install:?} {scratch:?}"
                                ),
                            }
                            // Each answer's own rules find nothing the whole step does not.
                            // (The screen asks for the size once the scratch folder is good.)
                            let mut each: Vec<String> = folder_rules::install_problems(&install_dir, &install);
                            let scratch_problems = folder_rules::scratch_problems(
                                &install_dir,
                                install.resolved.as_deref(),
                                &scratch_dir,
                                &scratch,
                            );
                            if scratch_problems.is_empty() {
                                each.extend(
                                    folder_rules::backup_size_problems(size, &scratch).into_iter().map(|p| p.1),
                                );
                            }
                            each.extend(scratch_problems);
                            let all: Vec<&String> = problems.iter().map(|p| &p.1).collect();
                            for problem in &each {
                                assert!(all.contains(&problem), "{problem} is not among {all:?}");
                            }
                            assert_eq!(each.is_empty(), problems.is_empty(), "{command:?}: {each:?} vs {all:?}");
                        }
                    }
                }
            }
        }
        assert!(several > 100, "many combinations have several problems at once");
    }
}
