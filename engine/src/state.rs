//! The registration's current state, folded from the log, and what it says about progress.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    Change, Encryption, Folders, LoadedCredentials, Next, Outcome, PendingRemoval, Proxy, Registration,
    RegistrationAttempt, SealedRef, StepRecord, Throttling, VaultAnswer,
};
use crate::reason::{Reason, Step, ends_registration_attempt};
use crate::vault_log::KeyFrom;

/// The state every view is computed from. Serializable: it is what a checkpoint saves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Events folded so far (the registration stream's version).
    pub version: u64,
    pub folders: Option<Folders>,
    pub proxy: Option<Proxy>,
    pub credentials: Option<LoadedCredentials>,
    pub encryption: Option<Encryption>,
    pub registration: Option<Registration>,
    /// A registration started and not ended yet: every `register` asks the vault again with its
    /// request id and credentials, until it is accepted or refused for good.
    #[serde(default)]
    pub attempt: Option<RegistrationAttempt>,
    /// An outcome of `attempt` was recorded (a refusal worth retrying): loading other credentials
    /// now starts a new attempt instead.
    #[serde(default)]
    pub attempt_answered: bool,
    pub throttling: Option<Throttling>,
    /// Unregistrations the vault was not told of yet (it was unreachable): each is told at the
    /// next `register` or `unregister`, and its key kept sealed until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_removals: Vec<PendingRemoval>,
    /// The most recent refusal that a later success of the same step has not resolved.
    #[serde(alias = "last_failure")]
    pub last_refusal: Option<LastRefusal>,
    /// When the log last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// The last time the vault refused a registration for the credentials it was made with
    /// (superseded, expired, invalid, another vault's): what the log knows of credentials that
    /// only the vault can judge. Kept past later steps; shown while those credentials are loaded.
    #[serde(default)]
    pub credentials_refused: Option<CredentialsRefused>,
    /// The key the agent trusts for the registered machine's vault's transparency log: from the
    /// credentials file it registered with, or taken at first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_key: Option<TrustedKey>,
    /// The last time the vault's log did not hold, as recorded (the evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_log_inconsistent: Option<RecordedInconsistency>,
}

/// A vault's checkpoint key, and where the agent got it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub machine_id: String,
    pub vault_key: String,
    pub from: KeyFrom,
}

/// A `VaultLogInconsistent` as the state keeps it: enough to say it once per piece of evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedInconsistency {
    pub machine_id: String,
    pub position: u64,
    pub seen_checkpoint: Option<String>,
}

/// The vault's refusal of a registration's credentials, as the log recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRefused {
    /// The certificate the refused registration was made with.
    pub thumbprint: String,
    pub reason: Reason,
    pub at: DateTime<Utc>,
}

/// The last refusal the state keeps ("last failure" in the status a script reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRefusal {
    pub step: Step,
    pub reason: Reason,
    pub message: String,
    /// What to do next (see [`crate::model::Refusal::next`]).
    #[serde(default)]
    pub next: Vec<Next>,
    pub at: DateTime<Utc>,
}

/// How far registration has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    New,
    FoldersChosen,
    CredentialsLoaded,
    PassphraseCreated,
    Registered,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::FoldersChosen => "folders_chosen",
            Phase::CredentialsLoaded => "credentials_loaded",
            Phase::PassphraseCreated => "passphrase_created",
            Phase::Registered => "registered",
        }
    }
}

impl State {
    pub fn phase(&self) -> Phase {
        match (&self.folders, &self.credentials, &self.encryption, &self.registration) {
            (_, _, _, Some(_)) => Phase::Registered,
            (Some(_), Some(_), Some(_), None) => Phase::PassphraseCreated,
            (Some(_), Some(_), None, None) => Phase::CredentialsLoaded,
            (Some(_), None, _, None) => Phase::FoldersChosen,
            (None, _, _, None) => Phase::New,
        }
    }

    /// The wizard step to run next; None once registered.
    pub fn next_step(&self) -> Option<Step> {
        match self.phase() {
            Phase::New => Some(Step::Folders),
            Phase::FoldersChosen => Some(Step::Credentials),
            Phase::CredentialsLoaded => Some(Step::Passphrase),
            Phase::PassphraseCreated => Some(Step::Register),
            Phase::Registered => None,
        }
    }

    /// Every sealed value the state still refers to, or None when one of them is not known (a
    /// registration from an old log whose key was never recorded): what must stay sealed beside
    /// the log. Anything else sealed there belongs to a superseded setting.
    pub fn sealed_refs(&self) -> Option<Vec<SealedRef>> {
        let mut refs = Vec::new();
        if let Some(password) = self.proxy.as_ref().and_then(|p| p.password.as_ref()) {
            refs.push(password.clone());
        }
        if let Some(credentials) = &self.credentials {
            refs.push(credentials.private_key.clone());
        }
        if let Some(registration) = &self.registration {
            refs.push(registration.private_key.clone()?);
        }
        if let Some(attempt) = &self.attempt {
            refs.push(attempt.private_key.clone());
        }
        refs.extend(self.pending_removals.iter().map(|p| p.private_key.clone()));
        if let Some(encryption) = &self.encryption {
            refs.extend(encryption.sealed.iter().cloned());
            refs.extend(encryption.verifier_sealed.iter().cloned());
        }
        Some(refs)
    }

    /// Folds one recorded step into the state.
    pub fn evolve(mut self, record: &StepRecord) -> State {
        self.version += 1;
        self.updated_at = Some(record.observed.now);
        match &record.outcome {
            Outcome::Refused(refusal) => {
                self.last_refusal = Some(LastRefusal {
                    step: refusal.step,
                    reason: refusal.reason.clone(),
                    message: refusal.message.clone(),
                    next: refusal.next.clone(),
                    at: record.observed.now,
                });
                // The vault judged the credentials a registration was made with.
                if let (Step::Register, Some(VaultAnswer::Refused { reason, .. })) =
                    (refusal.step, &record.observed.vault)
                    && matches!(
                        reason,
                        Reason::CredentialsSuperseded
                            | Reason::CredentialsExpired
                            | Reason::CredentialsInvalid
                            | Reason::CredentialsWrongVault
                    )
                {
                    let thumbprint = match (&self.attempt, &record.observed.request_id) {
                        (Some(attempt), Some(id)) if attempt.request_id == *id => Some(attempt.thumbprint.clone()),
                        _ => self.credentials.as_ref().map(|c| c.facts.thumbprint.clone()),
                    };
                    if let Some(thumbprint) = thumbprint {
                        self.credentials_refused =
                            Some(CredentialsRefused { thumbprint, reason: reason.clone(), at: record.observed.now });
                    }
                }
                // An outcome of the open attempt: a refusal for good ends it; any other
                // (unreachable, a failure of the vault or the proxy) leaves it open for the next run.
                if let (Some(attempt), Some(request_id)) = (&self.attempt, &record.observed.request_id)
                    && attempt.request_id == *request_id
                {
                    if ends_registration_attempt(&refusal.reason) {
                        self.attempt = None;
                        self.attempt_answered = false;
                    } else {
                        self.attempt_answered = true;
                    }
                }
            }
            Outcome::Accepted(change) => {
                // Starting a registration resolves nothing: only its outcome does.
                if self.last_refusal.as_ref().is_some_and(|f| f.step == record.command.step())
                    && !matches!(change, Change::RegistrationAttempted(_))
                {
                    self.last_refusal = None;
                }
                self.apply(change);
            }
        }
        self
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::FoldersChosen(folders) => self.folders = Some(folders.clone()),
            Change::ProxySet(proxy) => self.proxy = Some(proxy.clone()),
            Change::ProxyCleared => self.proxy = None,
            Change::CredentialsLoaded(credentials) => {
                // Other credentials after the vault answered the open attempt: the next register
                // starts afresh with them. Before any answer (a run killed mid-call), the attempt
                // stays with its own credentials: the vault may have made its machine.
                if self.attempt_answered
                    && self.attempt.as_ref().is_some_and(|a| a.thumbprint != credentials.facts.thumbprint)
                {
                    self.attempt = None;
                    self.attempt_answered = false;
                }
                self.credentials = Some(credentials.clone());
            }
            Change::PassphraseCreated(encryption) | Change::PassphraseChanged(encryption) => {
                self.encryption = Some(encryption.clone())
            }
            Change::RegistrationAttempted(attempt) => {
                self.attempt = Some(attempt.clone());
                self.attempt_answered = false;
            }
            Change::Registered(registration) => {
                let mut registration = registration.clone();
                // Logs before schema 3 did not record the key: it is the loaded credentials'.
                if registration.private_key.is_none() {
                    registration.private_key = self
                        .credentials
                        .as_ref()
                        .filter(|c| c.facts.thumbprint == registration.thumbprint)
                        .map(|c| c.private_key.clone());
                }
                if self.credentials_refused.as_ref().is_some_and(|r| r.thumbprint == registration.thumbprint) {
                    self.credentials_refused = None;
                }
                self.vault_key = registration.vault_key.clone().map(|vault_key| TrustedKey {
                    machine_id: registration.machine_id.clone(),
                    vault_key,
                    from: KeyFrom::Credentials,
                });
                self.vault_log_inconsistent = None;
                self.registration = Some(registration);
                self.attempt = None;
                self.attempt_answered = false;
            }
            Change::Unregistered { vault_told, new_credentials, .. } => {
                if let (Some(false), Some(registration)) = (vault_told, self.registration.take())
                    && let Some(private_key) = registration.private_key
                {
                    self.pending_removals.retain(|p| p.machine_id != registration.machine_id);
                    self.pending_removals.push(PendingRemoval {
                        vault: registration.vault,
                        machine_id: registration.machine_id,
                        endpoint: registration.endpoint,
                        thumbprint: registration.thumbprint,
                        private_key,
                        unregistered_at: self.updated_at.unwrap_or(registration.registered_at),
                    });
                }
                self.registration = None;
                self.vault_key = None;
                self.vault_log_inconsistent = None;
                self.attempt = None;
                self.attempt_answered = false;
                if let Some(credentials) = new_credentials {
                    self.credentials = Some(credentials.clone());
                }
            }
            Change::RemovalCompleted { machine_id, .. } => {
                self.pending_removals.retain(|p| p.machine_id != *machine_id);
            }
            Change::ScratchMoved { scratch_dir, scratch_free_bytes, scratch_filesystem } => {
                if let Some(folders) = &mut self.folders {
                    folders.scratch_dir = scratch_dir.clone();
                    folders.scratch_free_bytes = *scratch_free_bytes;
                    folders.scratch_filesystem = scratch_filesystem.clone();
                }
            }
            Change::ThrottlingSet(throttling) => self.throttling = Some(throttling.clone()),
            Change::ThrottlingOff => self.throttling = None,
            Change::VaultKeyTaken { machine_id, vault_key, .. } => {
                if self.registration.as_ref().is_some_and(|r| r.machine_id == *machine_id) {
                    let (machine_id, vault_key) = (machine_id.clone(), vault_key.clone());
                    self.vault_key = Some(TrustedKey { machine_id, vault_key, from: KeyFrom::FirstContact });
                }
            }
            Change::VaultLogInconsistent { machine_id, position, seen_checkpoint, .. } => {
                self.vault_log_inconsistent = Some(RecordedInconsistency {
                    machine_id: machine_id.clone(),
                    position: *position,
                    seen_checkpoint: seen_checkpoint.clone(),
                });
            }
        }
    }
}
