//! Keeping the head of the log at the vault (an anchor), and checking the log against it.
//!
//! A hash chain shows any record that was changed, but not records cut off its end together with
//! every head kept beside it (the store's head and its durable-head file are in the same data
//! directory). So while the machine is registered, the head goes to the vault after every step
//! (best effort: the step's own result never depends on it), on demand, and a check asks the
//! vault for its anchor and walks the local log against it. The wire protocol is the vault's
//! (`vault/README.md`, "Log head"); this module is the agent's policy: when to report, who speaks
//! for the machine, what the local note keeps, and what a comparison means.
//!
//! Nothing here appends to the log: recording a report would move the head it reports. What the
//! vault's transparency log proved is news for the log only when it is a key taken at first
//! contact or a proof that did not hold; the caller records that after the step (a
//! [`Witness`]'s evidence), and the next report carries it. The note
//! (`log-anchor.json` in the data dir; its bytes are the caller's to read and write) keeps what
//! was anchored last, for which machine (with what it takes to speak for it again if the log
//! loses its registration) and the CA file last used, as a hint for `status` and later commands;
//! the head in it is never trusted for verification (the vault is asked).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use regent_protocol::{Anchor, ErrorCode, Reason};
use regent_store::{EventStore, Head, Problem, VerifyReport};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::events::{self, STREAM};
use crate::model::{Change, Outcome, Registration, SealedRef, SecretKind, VaultLogObserved};
use crate::ports::{ProxyConfig, SecretKeeper};
use crate::projections::ProjectionError;
use crate::state::State;
use crate::vault_log::{Inconsistency, KeyFrom, Witnessed};

/// The note's file name, beside the store in the data directory.
pub const NOTE_FILE: &str = "log-anchor.json";

/// The whole report after a step (the anchor read and every post of it) ends within this: the step
/// is done and recorded, and other regent commands wait for the store (5 s) meanwhile.
pub const AFTER_STEP_BUDGET: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// The port: somewhere to keep the head

/// What speaks for a registered machine at its vault: where, which machine, and the key it
/// registered with. Debug does not print the key.
pub struct HeadSigner {
    /// The vault service's address (the registration's, unless overridden).
    pub endpoint: String,
    pub vault: String,
    pub machine_id: String,
    /// The thumbprint of the certificate the machine registered with.
    pub thumbprint: String,
    /// That certificate's private key (PKCS#8 DER), from the agent's secrets area.
    pub private_key: Zeroizing<Vec<u8>>,
    pub proxy: Option<ProxyConfig>,
}

impl std::fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadSigner")
            .field("endpoint", &self.endpoint)
            .field("vault", &self.vault)
            .field("machine_id", &self.machine_id)
            .field("thumbprint", &self.thumbprint)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why keeping or reading the head failed. [`AnchorError::code`] is a stable code for scripts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The vault refused: `log_head_regressed`, `log_head_conflict`, `log_head_proof_invalid`,
    /// `machine_not_found`, `credentials_invalid`, `nonce_replayed`, `clock_skew`, ...
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// The call did not get an answer from the vault, or not a usable one, or could not be made:
    /// `vault_unreachable`, `proxy_auth_failed`, `vault_error`, `invalid_proxy`, `credentials_invalid`
    /// (an unusable key), `credentials_unreadable` (a key that cannot be opened).
    #[error("{detail}")]
    Failed { reason: Reason, detail: String },
    /// The agent's own log could not give the records a report carries: `log_unreadable`.
    #[error("{detail}")]
    LogUnreadable { detail: String },
    /// The report's time ran out while the vault was still taking the log's records in steps: it
    /// keeps them up to `mirrored` of `position`, and the next report goes on from there:
    /// `log_head_unfinished`.
    #[error(
        "the vault keeps this log's records up to {mirrored} of {position}; the next report (or `regent audit anchor`) sends the rest"
    )]
    Unfinished { mirrored: u64, position: u64 },
}

impl AnchorError {
    pub fn code(&self) -> &str {
        match self {
            AnchorError::Refused { code, .. } => code.code(),
            AnchorError::Failed { reason, .. } => reason.code(),
            AnchorError::LogUnreadable { .. } => "log_unreadable",
            AnchorError::Unfinished { .. } => "log_head_unfinished",
        }
    }

    /// A refusal that says the agent's log is not the one the vault saw (cut, rewritten, or its
    /// records past the anchor do not chain).
    pub fn is_tamper_evidence(&self) -> bool {
        matches!(self, AnchorError::Refused { code, .. } if code.is_tamper_evidence())
    }
}

/// Keeps the log's head somewhere outside the data directory (the vault) and reads it back.
pub trait HeadKeeper {
    /// Reports `head` of `log`, with the records past what is held (in steps if many), all of it
    /// within `budget` when one is given. The anchor held afterwards.
    /// `tree_size` is the size of the vault's transparency log the agent verified last: the answer
    /// then proves the new checkpoint consistent with it.
    fn report(
        &self,
        signer: &HeadSigner,
        log: &EventStore,
        head: Head,
        budget: Option<Duration>,
        tree_size: Option<u64>,
    ) -> Result<Anchor, AnchorError>;

    /// The anchor held for the machine, if any.
    fn fetch(&self, signer: &HeadSigner) -> Result<Option<Anchor>, AnchorError>;

    /// The key the vault says signs its checkpoints (trusted only on first contact), if it keeps a
    /// transparency log.
    fn vault_key(&self, signer: &HeadSigner) -> Result<Option<String>, AnchorError>;
}

// ---------------------------------------------------------------------------------------------
// The note

/// What the agent remembers of its anchor (`log-anchor.json`). Only a hint: never trusted for
/// verification.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Note {
    /// The CA file for the vault, as last given.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// The anchor the vault accepted last.
    #[serde(default)]
    anchored: Option<LastAnchor>,
    /// The last report that did not get through (only its code: messages may name hosts).
    #[serde(default)]
    last_failure: Option<FailedReport>,
    /// A machine registered by `regent quickstart`, whose vault runs only while quickstart does:
    /// its later steps are not reported (they could never get through, and would warn every time).
    #[serde(default)]
    quickstart_machine: Option<String>,
    /// The vault's transparency log as this agent verified it last ([`crate::vault_log`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vault_log: Option<Witnessed>,
}

/// The anchor the vault accepted last, with what it takes to speak for its machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastAnchor {
    pub vault: String,
    pub machine_id: String,
    pub position: u64,
    pub hash: String,
    pub anchored_at: DateTime<Utc>,
    /// What it takes to speak for the machine again when the log no longer shows its registration
    /// (a cut): the vault's address, the registration's certificate, and the sealed reference of
    /// its private key (a digest naming the sealed file; the key itself stays sealed). Absent in
    /// notes written by earlier versions.
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    thumbprint: Option<String>,
    #[serde(default)]
    registration_key: Option<SealedRef>,
}

impl LastAnchor {
    fn new(machine: &Machine, anchor: &Anchor) -> LastAnchor {
        LastAnchor {
            vault: machine.vault.clone(),
            machine_id: machine.machine_id.clone(),
            position: anchor.position,
            hash: anchor.hash.clone(),
            anchored_at: anchor.anchored_at,
            endpoint: Some(machine.endpoint.clone()),
            thumbprint: Some(machine.thumbprint.clone()),
            registration_key: Some(machine.key.clone()),
        }
    }

    /// The machine as this note names it, when it names everything needed to sign for it.
    pub fn machine(&self) -> Option<Machine> {
        Some(Machine {
            vault: self.vault.clone(),
            machine_id: self.machine_id.clone(),
            endpoint: self.endpoint.clone()?,
            thumbprint: self.thumbprint.clone()?,
            key: self.registration_key.clone()?,
        })
    }
}

/// A report that did not get through.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedReport {
    pub machine_id: String,
    pub position: u64,
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl Note {
    /// A missing or unreadable note is an empty one: it is only a hint.
    pub fn from_json(bytes: Option<&[u8]>) -> Note {
        bytes.and_then(|bytes| serde_json::from_slice(bytes).ok()).unwrap_or_default()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The CA file last given for the vault.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Remembers the CA file a command was given, for later commands.
    pub fn remember_ca_file(&mut self, ca_file: Option<&Path>) {
        if let Some(path) = ca_file {
            self.ca_file = Some(path.to_path_buf());
        }
    }

    /// The size of the vault's transparency log verified last.
    pub fn tree_size(&self) -> Option<u64> {
        self.vault_log.as_ref().map(|w| w.size)
    }

    /// The vault's transparency log as verified last.
    pub fn vault_log(&self) -> Option<&Witnessed> {
        self.vault_log.as_ref()
    }

    /// Keeps `witnessed`, a checkpoint verified since (`regent audit verify --against-vault`).
    pub fn keep_witnessed(&mut self, witnessed: Witnessed) {
        self.vault_log = Some(witnessed);
    }

    /// Checks the proof an answer carries for `head` ([`crate::vault_log::check`]) with the key the
    /// log trusts (from the credentials file, or taken at first contact), else the key verified
    /// before (a note from before the log recorded keys), else the key the vault names now (first
    /// contact), and keeps the checkpoint when it holds. What did not hold leaves the checkpoint
    /// kept as it was. The witness says what of it the log should record.
    pub fn witness(
        &mut self,
        keeper: &dyn HeadKeeper,
        signer: &HeadSigner,
        state: &State,
        anchor: &Anchor,
        head: Head,
    ) -> Option<Witness> {
        let answer = anchor.log.as_ref()?;
        let trusted = state.vault_key.as_ref().filter(|k| k.machine_id == signer.machine_id);
        // A checkpoint checked for another machine (before a move, or registering again) is of
        // another vault's log, or of this one under a key no longer trusted: it is not this one's past.
        if self.vault_log.as_ref().is_some_and(|seen| {
            seen.machine_id.as_ref().is_some_and(|m| *m != signer.machine_id)
                || trusted.is_some_and(|t| t.vault_key != seen.vault_key && t.from == KeyFrom::Credentials)
        }) {
            self.vault_log = None;
        }
        let (vault_key, key_from) = match (trusted, &self.vault_log) {
            (Some(trusted), _) => (trusted.vault_key.clone(), trusted.from),
            (None, Some(seen)) => (seen.vault_key.clone(), KeyFrom::FirstContact),
            // The vault did not say: nothing to check with, so nothing is kept (it is asked again).
            (None, None) => (keeper.vault_key(signer).ok().flatten()?, KeyFrom::FirstContact),
        };
        let observed = VaultLogObserved {
            vault: signer.vault.clone(),
            machine_id: signer.machine_id.clone(),
            head,
            vault_key,
            key_from,
            seen: self.vault_log.clone(),
            answer: answer.clone(),
        };
        let checked = crate::vault_log::check(
            observed.seen.as_ref(),
            &observed.vault_key,
            key_from,
            answer,
            &signer.vault,
            &signer.machine_id,
            head,
        );
        // News for the log: a key not recorded yet, once it proved a head; a problem not recorded
        // with this evidence yet (a vault that stays forked is said once, not after every step).
        let news = match &checked {
            Ok(_) => trusted.is_none(),
            Err(_) => state.vault_log_inconsistent.as_ref().is_none_or(|recorded| {
                recorded.machine_id != signer.machine_id
                    || recorded.seen_checkpoint.as_ref() != observed.seen.as_ref().map(|w| &w.checkpoint)
            }),
        };
        let checked = checked.map(|witnessed| {
            let size = witnessed.size;
            self.vault_log = Some(Witnessed { key_from, ..witnessed });
            size
        });
        Some(Witness { checked, evidence: news.then_some(observed), recorded: None })
    }

    /// Marks `machine_id` as registered with quickstart's in-process vault.
    pub fn mark_quickstart(&mut self, machine_id: &str) {
        self.quickstart_machine = Some(machine_id.to_string());
    }

    /// Whether `machine_id`'s vault was quickstart's, gone with it.
    pub fn is_quickstart(&self, machine_id: &str) -> bool {
        self.quickstart_machine.as_deref() == Some(machine_id)
    }

    /// The sealed keys the note names: they must stay sealed while it names them, since they speak
    /// for that machine when the log no longer shows its registration.
    pub fn sealed_keys(&self) -> Vec<SealedRef> {
        self.anchored.as_ref().and_then(|a| a.registration_key.clone()).into_iter().collect()
    }

    /// The anchor last accepted, for any machine.
    pub fn last_anchor(&self) -> Option<&LastAnchor> {
        self.anchored.as_ref()
    }

    /// The anchor last accepted for `machine_id`.
    pub fn anchor_of(&self, machine_id: &str) -> Option<&LastAnchor> {
        self.anchored.as_ref().filter(|a| a.machine_id == machine_id)
    }

    /// What became of a report of `machine_id`'s head at `position`, at `now`.
    pub fn record(
        &mut self,
        machine_id: &str,
        position: u64,
        result: &Result<(Machine, Anchor), AnchorError>,
        now: DateTime<Utc>,
    ) {
        match result {
            Ok((machine, anchor)) => self.anchored_now(machine, anchor),
            Err(e) => {
                self.last_failure = Some(FailedReport {
                    machine_id: machine_id.to_string(),
                    position,
                    reason: e.code().to_string(),
                    at: now,
                });
            }
        }
    }

    /// The vault holds `anchor` for the machine: a failed report at or before it is over (a
    /// refusal included: the vault took a later head since), so it is no longer shown.
    pub fn anchored_now(&mut self, machine: &Machine, anchor: &Anchor) {
        self.anchored = Some(LastAnchor::new(machine, anchor));
        if self
            .last_failure
            .as_ref()
            .is_some_and(|f| f.machine_id != machine.machine_id || f.position <= anchor.position)
        {
            self.last_failure = None;
        }
    }

    /// The failed report still worth showing for `machine_id`: one past what the vault holds.
    pub fn pending_failure(&self, machine_id: &str) -> Option<&FailedReport> {
        let anchored = self.anchor_of(machine_id);
        self.last_failure
            .as_ref()
            .filter(|f| f.machine_id == machine_id && anchored.is_none_or(|a| f.position > a.position))
    }

    /// A machine the note says was anchored past this log's head while the log shows no
    /// registration: the log was likely cut before it (an unregistered machine's last head is the
    /// log's).
    pub fn lost_registration(&self, head: Head) -> Option<&LastAnchor> {
        self.anchored.as_ref().filter(|a| a.position > head.position)
    }
}

// ---------------------------------------------------------------------------------------------
// Who speaks for the machine

/// Who the machine is at its vault, and where the key it registered with is sealed: what a report
/// or a read is signed with. Holds no secret (the key is named by its sealed reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub vault: String,
    pub machine_id: String,
    pub endpoint: String,
    pub thumbprint: String,
    pub key: SealedRef,
}

/// The sealed private key of the credentials the machine registered with: recorded with the
/// registration, else the loaded credentials when they are those, else the last load of them in
/// the log (credentials may be loaded again after registering; logs before schema 3).
pub fn registration_key(store: &EventStore, state: &State, registration: &Registration) -> Option<SealedRef> {
    if let Some(key) = &registration.private_key {
        return Some(key.clone());
    }
    if let Some(loaded) = &state.credentials
        && loaded.facts.thumbprint == registration.thumbprint
    {
        return Some(loaded.private_key.clone());
    }
    let mut found = None;
    for record in store.read_stream(STREAM, 1) {
        let Ok(record) = record else { break };
        if let Ok(step) = events::decode(&record)
            && let Outcome::Accepted(Change::CredentialsLoaded(loaded)) = &step.outcome
            && loaded.facts.thumbprint == registration.thumbprint
        {
            found = Some(loaded.private_key.clone());
        }
    }
    found
}

fn key_lost(machine_id: &str, detail: impl std::fmt::Display) -> AnchorError {
    AnchorError::Failed {
        reason: Reason::CredentialsUnreadable,
        detail: format!(
            "the private key of the credentials this machine registered with cannot be used ({detail}); \
             only that key speaks for machine {machine_id} at the vault"
        ),
    }
}

/// The machine as the log shows its registration.
pub fn machine_from_log(
    store: &EventStore,
    state: &State,
    registration: &Registration,
) -> Result<Machine, AnchorError> {
    let key = registration_key(store, state, registration)
        .ok_or_else(|| key_lost(&registration.machine_id, "it is not in the log"))?;
    Ok(Machine {
        vault: registration.vault.clone(),
        machine_id: registration.machine_id.clone(),
        endpoint: registration.endpoint.clone(),
        thumbprint: registration.thumbprint.clone(),
        key,
    })
}

/// Whether the log shows `machine_id`'s registration at all (an unregistered machine's log still
/// does). A log that does not, while the note names the machine as anchored, was cut before it.
pub fn log_shows_registration(store: &EventStore, machine_id: &str) -> Result<bool, ProjectionError> {
    for record in store.read_stream(STREAM, 1) {
        if let Outcome::Accepted(Change::Registered(registration)) = &events::decode(&record?)?.outcome
            && registration.machine_id == machine_id
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The private key `machine`'s sealed reference names, or why it cannot be opened.
pub fn private_key(secrets: &dyn SecretKeeper, machine: &Machine) -> Result<Zeroizing<Vec<u8>>, String> {
    secrets.open(SecretKind::CredentialsPrivateKey, &machine.key)
}

/// Signs for `machine` with `private_key` (the key its sealed reference names), through the
/// proxy the state sets, at `endpoint` unless the registration's.
pub fn signer(
    secrets: &dyn SecretKeeper,
    state: &State,
    machine: &Machine,
    endpoint: Option<&str>,
    private_key: Zeroizing<Vec<u8>>,
) -> Result<HeadSigner, AnchorError> {
    let proxy = crate::service::proxy_config(state, secrets).map_err(|detail| AnchorError::Failed {
        reason: Reason::InvalidProxy,
        detail: format!("the proxy password cannot be opened ({detail}); set the proxy again"),
    })?;
    Ok(HeadSigner {
        endpoint: endpoint.unwrap_or(&machine.endpoint).to_string(),
        vault: machine.vault.clone(),
        machine_id: machine.machine_id.clone(),
        thumbprint: machine.thumbprint.clone(),
        private_key,
        proxy,
    })
}

/// The machine the log shows registered, and its signer.
pub fn registered_signer(
    secrets: &dyn SecretKeeper,
    store: &EventStore,
    state: &State,
    registration: &Registration,
    endpoint: Option<&str>,
) -> Result<(Machine, HeadSigner), AnchorError> {
    let machine = machine_from_log(store, state, registration)?;
    let key = private_key(secrets, &machine).map_err(|detail| key_lost(&machine.machine_id, detail))?;
    let signer = signer(secrets, state, &machine, endpoint, key)?;
    Ok((machine, signer))
}

// ---------------------------------------------------------------------------------------------
// After every step, and on demand

/// What became of the report after a step.
pub struct StepReport {
    pub vault: String,
    pub position: u64,
    pub result: Result<Anchor, AnchorError>,
    /// The vault's proof of the head checked; `None` when nothing was proved (an older vault, or
    /// no answer).
    pub vault_log: Option<Witness>,
}

/// What the vault's proof of a reported head came to.
pub struct Witness {
    /// The tree size verified, or what did not hold.
    pub checked: Result<u64, Inconsistency>,
    /// What the log should record of it ([`crate::model::Command::WitnessVaultLog`]), when it is
    /// news: the caller appends it after the step it reported (it moves the head, and goes to
    /// the vault with the next report).
    pub evidence: Option<VaultLogObserved>,
    /// Where the caller recorded the evidence, once it has.
    pub recorded: Option<u64>,
}

/// Reports the head after a step when the machine is (or, for unregister, was) registered and its
/// vault is not quickstart's, within [`AFTER_STEP_BUDGET`]. The caller still holds the store, so
/// heads reach the vault in log order; it saves the note afterwards.
#[allow(clippy::too_many_arguments, reason = "the ports, the log and its state, and the note: one call after a step")]
pub fn after_step(
    keeper: &dyn HeadKeeper,
    secrets: &dyn SecretKeeper,
    store: &EventStore,
    state: &State,
    registration: Option<&Registration>,
    head: Head,
    note: &mut Note,
    now: DateTime<Utc>,
) -> Option<StepReport> {
    let registration = registration?;
    if note.is_quickstart(&registration.machine_id) {
        return None;
    }
    let seen = note.tree_size();
    let mut vault_log = None;
    let result = registered_signer(secrets, store, state, registration, None).and_then(|(machine, signer)| {
        let anchor = keeper.report(&signer, store, head, Some(AFTER_STEP_BUDGET), seen)?;
        vault_log = note.witness(keeper, &signer, state, &anchor, head);
        Ok((machine, anchor))
    });
    note.record(&registration.machine_id, head.position, &result, now);
    Some(StepReport {
        vault: registration.vault.clone(),
        position: head.position,
        result: result.map(|(_, a)| a),
        vault_log,
    })
}

/// Reports the head now, with the keeper's own retries. The note is updated with the outcome.
#[allow(clippy::too_many_arguments, reason = "the ports, the log and its state, and the note")]
pub fn report_now(
    keeper: &dyn HeadKeeper,
    secrets: &dyn SecretKeeper,
    store: &EventStore,
    state: &State,
    registration: &Registration,
    head: Head,
    endpoint: Option<&str>,
    note: &mut Note,
    now: DateTime<Utc>,
) -> Result<(Anchor, Option<Witness>), AnchorError> {
    let seen = note.tree_size();
    let mut vault_log = None;
    let result = registered_signer(secrets, store, state, registration, endpoint).and_then(|(machine, signer)| {
        let anchor = keeper.report(&signer, store, head, None, seen)?;
        vault_log = note.witness(keeper, &signer, state, &anchor, head);
        Ok((machine, anchor))
    });
    note.record(&registration.machine_id, head.position, &result, now);
    result.map(|(_, anchor)| (anchor, vault_log))
}

// ---------------------------------------------------------------------------------------------
// Checking the log against the anchor

/// Whose anchor a check is against, and how to ask for it.
pub enum CheckedMachine {
    /// The machine the log shows registered.
    Registered(Machine, HeadSigner),
    /// The log no longer shows the registration (cut before it); the note names the machine.
    Lost(Machine, HeadSigner),
}

/// Why there is no machine to check against.
pub enum NoMachine {
    /// Not registered, and the note names no machine this log lost.
    NotRegistered,
    /// The log lost the registration of the machine the note names, and its key is not to be found.
    KeyNotFound { lost: LastAnchor, detail: String },
    /// The machine is known, but cannot be signed for.
    Unsigned { vault: String, error: AnchorError },
}

/// Who to ask the vault about, and how: the machine the log shows registered, or, when the log no
/// longer shows any registration of it, the machine the note names as anchored.
pub fn machine_to_check(
    secrets: Result<&dyn SecretKeeper, AnchorError>,
    store: &EventStore,
    state: &State,
    note: &Note,
    endpoint: Option<&str>,
) -> Result<Result<CheckedMachine, NoMachine>, ProjectionError> {
    if let Some(registration) = &state.registration {
        let signed = secrets.and_then(|secrets| registered_signer(secrets, store, state, registration, endpoint));
        return Ok(match signed {
            Ok((machine, signer)) => Ok(CheckedMachine::Registered(machine, signer)),
            Err(error) => Err(NoMachine::Unsigned { vault: registration.vault.clone(), error }),
        });
    }
    let lost = match note.last_anchor() {
        Some(anchored) if !log_shows_registration(store, &anchored.machine_id)? => anchored.clone(),
        _ => return Ok(Err(NoMachine::NotRegistered)),
    };
    let key_not_found = |detail: String| NoMachine::KeyNotFound { lost: lost.clone(), detail };
    let Some(machine) = lost.machine() else {
        return Ok(Err(key_not_found("the note was written by an earlier regent and does not name it".into())));
    };
    let secrets = match secrets {
        Ok(secrets) => secrets,
        Err(e) => return Ok(Err(key_not_found(e.to_string()))),
    };
    let key = match private_key(secrets, &machine) {
        Ok(key) => key,
        Err(detail) => return Ok(Err(key_not_found(detail))),
    };
    Ok(match signer(secrets, state, &machine, endpoint, key) {
        Ok(signer) => Ok(CheckedMachine::Lost(machine, signer)),
        Err(error) => Err(NoMachine::Unsigned { vault: lost.vault.clone(), error }),
    })
}

/// How the local log compares with the vault's anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// The log holds the anchored record; the chain verifies.
    Match,
    /// The log ends before the anchored position.
    TailCut,
    /// The record at the anchored position is another one.
    Altered,
    /// The chain fails by itself (before reaching the anchor).
    ChainBroken,
}

/// Positions `from..=to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Range {
    pub from: u64,
    pub to: u64,
}

/// What a walk of the log against `anchor` found, and the records it concerns.
pub fn compare(report: &VerifyReport, anchor: Head) -> (Comparison, Option<Range>) {
    match report.failure.as_ref().map(|f| (f.position, &f.problem)) {
        None => (Comparison::Match, None),
        Some((_, Problem::Truncated { last, expected_head })) if *expected_head == anchor.position => {
            (Comparison::TailCut, Some(Range { from: last + 1, to: anchor.position }))
        }
        Some((position, Problem::HeadMismatch { expected, .. }))
            if position == anchor.position && *expected == anchor.hash =>
        {
            (Comparison::Altered, Some(Range { from: position, to: position }))
        }
        Some(_) => (Comparison::ChainBroken, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regent_store::{ChainFailure, Digest32};

    fn report(failure: Option<ChainFailure>, position: u64) -> VerifyReport {
        VerifyReport { records: position, verified_head: Head { position, hash: Digest32([1; 32]) }, failure }
    }

    fn machine(id: &str) -> Machine {
        Machine {
            vault: "v".into(),
            machine_id: id.into(),
            endpoint: "http://v".into(),
            thumbprint: "ab".repeat(32),
            key: SealedRef { id: "cd".repeat(32) },
        }
    }

    fn anchor(position: u64) -> Anchor {
        Anchor {
            machine_id: "m".into(),
            position,
            hash: "ef".repeat(32),
            anchored_at: Utc::now(),
            mirrored: Some(position),
            refusals: 0,
            last_refusal: None,
            log: None,
        }
    }

    #[test]
    fn a_failed_report_shows_until_the_vault_holds_a_head_past_it() {
        let mut note = Note::default();
        let refused = AnchorError::Refused { code: ErrorCode::LogHeadConflict, message: "m".into() };
        note.record("m", 7, &Err(refused), Utc::now());
        assert_eq!(note.pending_failure("m").map(|f| f.reason.as_str()), Some("log_head_conflict"));
        assert!(note.pending_failure("other").is_none());
        // An anchor before the failed one (verify found the vault's anchor behind it): still shown.
        note.anchored_now(&machine("m"), &anchor(6));
        assert!(note.pending_failure("m").is_some());
        // A later report went through: the failure is over.
        note.record("m", 8, &Ok((machine("m"), anchor(8))), Utc::now());
        assert!(note.pending_failure("m").is_none() && note.last_failure.is_none());
        // The note can speak for the machine again, naming its key only by reference.
        let anchored = note.last_anchor().unwrap();
        assert_eq!(anchored.machine().map(|m| m.key.id), Some("cd".repeat(32)));
        let text = String::from_utf8(note.to_json()).unwrap();
        assert!(text.contains("\"registration_key\": {"), "{text}");
        assert_eq!(note.sealed_keys(), [SealedRef { id: "cd".repeat(32) }]);
        // A note from before: no key reference, so no machine to sign for.
        let old: LastAnchor = serde_json::from_str(
            r#"{"vault":"v","machine_id":"m","position":3,"hash":"00","anchored_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(old.machine().is_none());
        // An unreadable note is an empty one.
        assert!(Note::from_json(Some(b"not json")).last_anchor().is_none());
    }

    #[test]
    fn comparisons_name_the_range() {
        let anchor = Head { position: 7, hash: Digest32([7; 32]) };
        assert_eq!(compare(&report(None, 9), anchor).0, Comparison::Match);
        let cut = ChainFailure { position: 5, problem: Problem::Truncated { last: 4, expected_head: 7 } };
        let (outcome, range) = compare(&report(Some(cut), 4), anchor);
        assert_eq!(outcome, Comparison::TailCut);
        assert_eq!(range, Some(Range { from: 5, to: 7 }));
        let altered = ChainFailure {
            position: 7,
            problem: Problem::HeadMismatch { expected: Digest32([7; 32]), found: Digest32([8; 32]) },
        };
        assert_eq!(compare(&report(Some(altered), 6), anchor).0, Comparison::Altered);
        let broken = ChainFailure {
            position: 3,
            problem: Problem::HashMismatch { stored: Digest32([1; 32]), computed: Digest32([2; 32]) },
        };
        assert_eq!(compare(&report(Some(broken), 2), anchor).0, Comparison::ChainBroken);
    }
}
