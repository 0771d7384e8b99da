//! The registration's current state, folded from the log, and what it says about progress.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    Change, Encryption, Folders, LoadedCredentials, Outcome, Proxy, Registration, StepRecord, Throttling,
};
use crate::reason::{Reason, Step};

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
    pub throttling: Option<Throttling>,
    /// The most recent refusal that a later success of the same step has not resolved.
    pub last_failure: Option<Failure>,
    /// When the log last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub step: Step,
    pub reason: Reason,
    pub message: String,
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

    /// Folds one recorded step into the state.
    pub fn evolve(mut self, record: &StepRecord) -> State {
        self.version += 1;
        self.updated_at = Some(record.observed.now);
        match &record.outcome {
            Outcome::Refused(refusal) => {
                self.last_failure = Some(Failure {
                    step: refusal.step,
                    reason: refusal.reason,
                    message: refusal.message.clone(),
                    at: record.observed.now,
                });
            }
            Outcome::Accepted(change) => {
                if self.last_failure.as_ref().is_some_and(|f| f.step == record.command.step()) {
                    self.last_failure = None;
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
            Change::CredentialsLoaded(credentials) => self.credentials = Some(credentials.clone()),
            Change::PassphraseCreated(encryption) | Change::PassphraseChanged(encryption) => {
                self.encryption = Some(encryption.clone())
            }
            Change::Registered(registration) => self.registration = Some(registration.clone()),
            Change::Unregistered { .. } => self.registration = None,
            Change::ScratchMoved { scratch_dir, scratch_free_bytes, scratch_filesystem } => {
                if let Some(folders) = &mut self.folders {
                    folders.scratch_dir = scratch_dir.clone();
                    folders.scratch_free_bytes = *scratch_free_bytes;
                    folders.scratch_filesystem = scratch_filesystem.clone();
                }
            }
            Change::ThrottlingSet(throttling) => self.throttling = Some(throttling.clone()),
            Change::ThrottlingOff => self.throttling = None,
        }
    }
}
