//! What is recorded: the command asked, what the world was observed to say, and the outcome.
//!
//! Every event's payload is a [`StepRecord`]. Keeping the command and the observations beside the
//! outcome is what lets `replay --check` run `decide` again and compare: nothing decide needs is
//! missing from the log, and nothing secret is in it (secrets appear only as sealed references and
//! an Argon2id verifier).

use std::path::PathBuf;

use chrono::{DateTime, NaiveTime, Utc};
use regent_store::utc_time;
use serde::{Deserialize, Serialize};

use crate::reason::{Reason, Step};

/// What an operator asks for. Secrets never travel in a command: they come beside it and are
/// observed only as facts (length, a sealed reference, a verifier).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    ChooseFolders {
        install_dir: PathBuf,
        scratch_dir: PathBuf,
        backup_size_bytes: u64,
    },
    SetProxy {
        host: String,
        port: u32,
        username: Option<String>,
        password_given: bool,
    },
    ClearProxy,
    LoadCredentials {
        file: PathBuf,
    },
    /// `save_to` set: generate one and save it there; unset: the operator supplied it.
    SetPassphrase {
        save_to: Option<PathBuf>,
    },
    Register {
        endpoint_override: Option<String>,
    },
    Unregister,
    /// Unregister from the vault the machine is registered with and load another vault's
    /// credentials, to register there next (`regent register --credentials FILE`).
    Move {
        file: PathBuf,
    },
    /// Tell a vault of an unregistration it was not told of when it happened (unreachable then).
    FinishUnregister {
        machine_id: String,
    },
    MoveScratch {
        scratch_dir: PathBuf,
    },
    SetThrottling {
        work_days: Vec<Weekday>,
        work_start: NaiveTime,
        work_end: NaiveTime,
        work_bps: u64,
        non_work_bps: u64,
    },
    ThrottlingOff,
    ChangePassphrase {
        save_to: Option<PathBuf>,
    },
    /// The agent's own step, not an operator's: what the vault's transparency log proved of a head
    /// it anchored, recorded when it is news: the vault's key taken at first contact, or a proof
    /// that did not hold (evidence an auditor needs).
    WitnessVaultLog {
        machine_id: String,
    },
}

impl Command {
    pub fn step(&self) -> Step {
        match self {
            Command::ChooseFolders { .. } => Step::Folders,
            Command::SetProxy { .. } | Command::ClearProxy => Step::Proxy,
            Command::LoadCredentials { .. } => Step::Credentials,
            Command::SetPassphrase { .. } => Step::Passphrase,
            Command::Register { .. } => Step::Register,
            Command::Unregister | Command::FinishUnregister { .. } => Step::Unregister,
            Command::Move { .. } => Step::Register,
            Command::MoveScratch { .. } => Step::ScratchFolder,
            Command::SetThrottling { .. } | Command::ThrottlingOff => Step::Throttling,
            Command::WitnessVaultLog { .. } => Step::Register,
            Command::ChangePassphrase { .. } => Step::PassphraseChange,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    pub fn name(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self as usize]
    }

    /// The day's name with a capital, as the operator reads it: `Mon`.
    pub fn title(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self as usize]
    }

    /// `mon-fri`, `sat,sun`, `mon,tue,fri`, `mon,wed-fri`, and ranges over the weekend: `fri-mon`
    /// is Fri, Sat, Sun and Mon. The set of days, in week order (Mon first).
    pub fn parse_set(text: &str) -> Result<Vec<Weekday>, String> {
        let day = |name: &str| {
            let name = name.trim().to_ascii_lowercase();
            Weekday::ALL
                .into_iter()
                .find(|d| name.starts_with(d.name()) && d.name().len() <= name.len())
                .ok_or_else(|| format!("'{name}' is not a day; use mon, tue, wed, thu, fri, sat, sun"))
        };
        let mut days = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            match part.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (day(from)?, day(to)?);
                    // From `from` on, round the week if need be, to `to`.
                    let span = (to as usize + 7 - from as usize) % 7;
                    days.extend((0..=span).map(|i| Weekday::ALL[(from as usize + i) % 7]));
                }
                None => days.push(day(part)?),
            }
        }
        days.sort();
        days.dedup();
        if days.is_empty() {
            return Err("name at least one work day, e.g. mon-fri".into());
        }
        Ok(days)
    }

    /// A set of days as the operator reads it: in week order from Mon, unless it runs over the
    /// weekend (Sun and Mon both in it), when it starts after its longest stretch of days off, so
    /// that `fri-mon` reads `Fri, Sat, Sun, Mon`; `every day` for all seven.
    pub fn describe_set(days: &[Weekday]) -> String {
        let on = |i: usize| days.contains(&Weekday::ALL[i % 7]);
        if (0..7).all(on) {
            return "every day (Mon to Sun)".into();
        }
        let start = if !on(6) || !on(0) {
            0
        } else {
            // The day after the longest run of days off (the first such run on a tie).
            let mut best = (0, 0);
            for first in (0..7).filter(|&i| !on(i) && on(i + 6)) {
                let length = (first..first + 7).take_while(|&i| !on(i)).count();
                if length > best.1 {
                    best = (first + length, length);
                }
            }
            best.0 % 7
        };
        let ordered: Vec<&str> = (start..start + 7).filter(|&i| on(i)).map(|i| Weekday::ALL[i % 7].title()).collect();
        ordered.join(", ")
    }
}

/// A sealed secret kept beside the log: the log records only this reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRef {
    pub id: String,
}

/// What a look at one folder found. Recorded whole, so replay needs no disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FolderFacts {
    /// The path with symlinks resolved, once it exists.
    pub resolved: Option<PathBuf>,
    pub existed: bool,
    pub created: bool,
    pub is_dir: bool,
    pub writable: bool,
    /// The filesystem type, e.g. `ext4`, `nfs`, `cifs`.
    pub filesystem: String,
    pub network: bool,
    pub free_bytes: u64,
    /// Why the folder could not be used (cannot create, not a directory, ...), if it could not.
    pub problem: Option<String>,
    /// For a folder that does not exist yet: its nearest existing parent is a writable folder, so
    /// it can be created there (the filesystem and free space are that parent's). A folder is
    /// created only once the step is accepted, so a refused step leaves nothing behind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creatable: bool,
}

/// Why a credentials file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreadableKind {
    Missing,
    PermissionDenied,
    IsDirectory,
    TooLarge,
    Other,
}

/// The facts of a credentials file that decide anything. Never the private key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialFacts {
    pub file_name: String,
    pub vault: VaultIdentity,
    pub endpoint: String,
    pub thumbprint: String,
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub not_before: DateTime<Utc>,
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub not_after: DateTime<Utc>,
    pub subject: String,
    /// The C2SP verifier key of the vault's checkpoints, when the file names one
    /// (`TransparencyLogKey`); absent in files from a real portal and in logs before schema 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultIdentity {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub resource_id: i64,
}

/// What reading and parsing a credentials file gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "a recorded value made once per command and matched by value; boxing would only complicate the patterns"
)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CredentialsObserved {
    Unreadable { kind: UnreadableKind, detail: String },
    Invalid { detail: String },
    Parsed { facts: CredentialFacts, private_key: SealedRef },
}

/// Facts about a passphrase, never the passphrase, nor anything it could be guessed from offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PassphraseObserved {
    pub length: usize,
    /// Every character is printable ASCII (32 to 126).
    pub printable_ascii: bool,
    /// Logs written before schema 3 recorded the Argon2id verifier (a PHC string) here. An export
    /// is handed to others, and a verifier lets a weak typed passphrase be guessed offline, so it
    /// is now sealed beside the log and only its reference is recorded (`verifier_sealed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    /// The sealed Argon2id verifier; absent when the passphrase broke the rules (no point hashing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_sealed: Option<SealedRef>,
    pub sealed: Option<SealedRef>,
    /// For a generated passphrase: where it was saved, or why it could not be.
    pub saved_to: Option<PathBuf>,
    pub save_problem: Option<String>,
    /// Why the input could not be a passphrase at all (more than one line, too long, not text);
    /// the input itself is not looked at further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_problem: Option<String>,
    /// Nothing but whitespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blank: bool,
    /// Whitespace at its start or end (a copy-and-paste accident one cannot see, and cannot type again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edge_whitespace: bool,
}

/// The vault's answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum VaultAnswer {
    Registered {
        machine_id: String,
        vault: String,
        #[serde(deserialize_with = "utc_time::deserialize")]
        registered_at: DateTime<Utc>,
    },
    Refused {
        reason: Reason,
        detail: String,
    },
}

/// The vault's answer to a security PIN check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum PinAnswer {
    Valid {
        #[serde(deserialize_with = "utc_time::deserialize")]
        issued_at: DateTime<Utc>,
    },
    Refused {
        reason: Reason,
        detail: String,
    },
}

/// The vault's answer to a probe: a cheap signed read of the machine's anchored head, sent through
/// a new proxy before it is set on a registered machine (the read changes nothing at the vault).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ProbeAnswer {
    /// The vault service answered through the proxy (whatever it said of the machine).
    Reached,
    /// No answer from the vault service: the proxy refused, could not reach it, TLS failed, ...
    Failed { reason: Reason, detail: String },
}

/// The vault's answer to being told of an unregistration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum RemovalAnswer {
    /// The vault removed the machine (now, or before: by the admin, or an earlier try).
    Removed {
        #[serde(deserialize_with = "utc_time::deserialize")]
        removed_at: DateTime<Utc>,
    },
    /// The vault does not know the machine: nothing is listed there to remove.
    NotFound { detail: String },
    /// Not told: unreachable, refused, or the request could not be made.
    Refused { reason: Reason, detail: String },
}

impl RemovalAnswer {
    /// Whether the vault lists the machine no more.
    pub fn told(&self) -> bool {
        !matches!(self, RemovalAnswer::Refused { .. })
    }
}

/// What telling a vault of an unregistration came to, for which machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalObserved {
    pub vault: String,
    pub machine_id: String,
    pub answer: RemovalAnswer,
}

/// An unregistration the vault was not told of yet: what it takes to tell it (its registration's
/// endpoint, certificate and sealed key, kept until then).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRemoval {
    pub vault: String,
    pub machine_id: String,
    pub endpoint: String,
    pub thumbprint: String,
    pub private_key: SealedRef,
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub unregistered_at: DateTime<Utc>,
}

/// Everything the world said while a command ran. Only what the command needed is present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Observations {
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub now: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<FolderFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<FolderFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_password: Option<SealedRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsObserved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<PassphraseObserved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultAnswer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinAnswer>,
    /// A new proxy tried against the vault before it is set on a registered machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_probe: Option<ProbeAnswer>,
    /// A sealed secret the step needed could not be opened (machine key lost, file gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsealable: Option<Unsealable>,
    /// The registration request id: drawn fresh when a registration is started, and the one a
    /// vault's answer belongs to. Reused by every later run until an outcome ends the attempt, so
    /// the vault answers a retry with the machine it made, whatever was lost in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Why the proxy password given could not be one (more than one line, too long, not text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_password_problem: Option<String>,
    /// Why the security PIN given could not be one (not 8 digits, more than one line): refused
    /// before the vault is asked, so no attempt is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_problem: Option<String>,
    /// What the vault said when told of an unregistration (absent in logs before it was told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<RemovalObserved>,
    /// The vault's answer to a report of the log's head, with the key and checkpoint it was
    /// checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_log: Option<VaultLogObserved>,
}

/// A report's answer as the agent checked it against the vault's transparency log: all public
/// (a checkpoint, a leaf, hashes, a key), so the check can be made again by replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultLogObserved {
    pub vault: String,
    pub machine_id: String,
    /// The head reported.
    pub head: regent_store::Head,
    /// The key the checkpoint was checked with, and where the agent got it.
    pub vault_key: String,
    pub key_from: crate::vault_log::KeyFrom,
    /// The checkpoint verified before this answer, if any.
    pub seen: Option<crate::vault_log::Witnessed>,
    pub answer: regent_protocol::LoggedHead,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsealable {
    pub secret: SecretKind,
    pub detail: String,
}

/// What a sealed secret is. Also the associated data it is sealed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    ProxyPassword,
    CredentialsPrivateKey,
    Passphrase,
    PassphraseVerifier,
}

/// How a passphrase came to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum PassphraseOrigin {
    Generated { saved_to: PathBuf },
    Provided,
}

/// The folders as chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folders {
    pub install_dir: PathBuf,
    pub scratch_dir: PathBuf,
    pub backup_size_bytes: u64,
    pub scratch_free_bytes: u64,
    pub scratch_filesystem: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<SealedRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttling {
    pub work_days: Vec<Weekday>,
    pub work_start: NaiveTime,
    pub work_end: NaiveTime,
    pub work_bps: u64,
    pub non_work_bps: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    pub origin: PassphraseOrigin,
    /// The Argon2id verifier, in logs written before schema 3 only (see [`PassphraseObserved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    /// The sealed Argon2id verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_sealed: Option<SealedRef>,
    pub sealed: Option<SealedRef>,
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub set_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedCredentials {
    pub file: PathBuf,
    pub facts: CredentialFacts,
    pub private_key: SealedRef,
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub loaded_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub vault: String,
    pub machine_id: String,
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub registered_at: DateTime<Utc>,
    pub endpoint: String,
    pub thumbprint: String,
    /// The sealed private key of the credentials it registered with: the machine's identity at
    /// the vault (every later call is signed with it). Absent in logs written before schema 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<SealedRef>,
    /// The request id the vault made the machine for (absent before schema 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The key of the vault's transparency log, from the credentials file it registered with:
    /// from then on the agent trusts it, not the TLS connection. Absent when the file named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_key: Option<String>,
}

/// A registration started: recorded before the vault is asked, so that every later run asks
/// again with the same request id and the same credentials until an outcome ends it. The vault
/// makes one machine per request id, so no crash, lost answer or retry can make a second one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationAttempt {
    pub request_id: String,
    /// The credentials it is made with (their certificate, the vault they name, its endpoint).
    pub thumbprint: String,
    pub vault: VaultIdentity,
    pub endpoint: String,
    pub private_key: SealedRef,
    /// The key of the vault's transparency log the credentials named (absent before schema 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_key: Option<String>,
    #[serde(deserialize_with = "utc_time::deserialize")]
    pub started_at: DateTime<Utc>,
}

/// What a step changed, when it was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    FoldersChosen(Folders),
    ProxySet(Proxy),
    ProxyCleared,
    CredentialsLoaded(LoadedCredentials),
    PassphraseCreated(Encryption),
    RegistrationAttempted(RegistrationAttempt),
    Registered(Registration),
    Unregistered {
        machine_id: String,
        vault: String,
        /// Whether the vault was told (it lists the machine no more); `false`: it was not
        /// reachable, and the next `register` (or `unregister`) tells it. Absent in logs written
        /// before the vault was told at all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vault_told: Option<bool>,
        /// A move: the other vault's credentials, loaded with the same step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_credentials: Option<LoadedCredentials>,
    },
    /// A vault not told of an unregistration when it happened was told since.
    RemovalCompleted {
        machine_id: String,
        vault: String,
        #[serde(deserialize_with = "utc_time::deserialize")]
        removed_at: DateTime<Utc>,
    },
    ScratchMoved {
        scratch_dir: PathBuf,
        scratch_free_bytes: u64,
        scratch_filesystem: String,
    },
    ThrottlingSet(Throttling),
    ThrottlingOff,
    PassphraseChanged(Encryption),
    /// The vault's key taken at first contact (the credentials file named none): trusted from now
    /// on, as the vault's own first answer gave it.
    VaultKeyTaken {
        vault: String,
        machine_id: String,
        vault_key: String,
        /// The size of the tree its first checkpoint signed.
        tree_size: u64,
    },
    /// The vault's transparency log did not hold for a head it anchored: forked, shrank, signed by
    /// another key, or its proof broken. The step that was reported stands.
    VaultLogInconsistent {
        vault: String,
        machine_id: String,
        position: u64,
        /// What did not hold, in words.
        problem: String,
        /// The checkpoint verified before (the evidence), and the one the vault answered with.
        seen_checkpoint: Option<String>,
        checkpoint: String,
    },
}

impl Change {
    /// Every event kind a change is recorded as (what [`Change::kind`] gives), in step order.
    pub const KINDS: [&'static str; 14] = [
        "FoldersChosen",
        "ProxySet",
        "ProxyCleared",
        "CredentialsLoaded",
        "PassphraseCreated",
        "RegistrationAttempted",
        "Registered",
        "Unregistered",
        "ScratchMoved",
        "ThrottlingSet",
        "ThrottlingOff",
        "PassphraseChanged",
        "VaultKeyTaken",
        "VaultLogInconsistent",
    ];

    /// The event kind recorded in the log for this change (one of [`Change::KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::FoldersChosen(_) => "FoldersChosen",
            Change::ProxySet(_) => "ProxySet",
            Change::ProxyCleared => "ProxyCleared",
            Change::CredentialsLoaded(_) => "CredentialsLoaded",
            Change::PassphraseCreated(_) => "PassphraseCreated",
            Change::RegistrationAttempted(_) => "RegistrationAttempted",
            Change::Registered(_) => "Registered",
            Change::Unregistered { .. } => "Unregistered",
            Change::RemovalCompleted { .. } => "RemovalCompleted",
            Change::ScratchMoved { .. } => "ScratchMoved",
            Change::ThrottlingSet(_) => "ThrottlingSet",
            Change::ThrottlingOff => "ThrottlingOff",
            Change::PassphraseChanged(_) => "PassphraseChanged",
            Change::VaultKeyTaken { .. } => "VaultKeyTaken",
            Change::VaultLogInconsistent { .. } => "VaultLogInconsistent",
        }
    }
}

/// A refused step: the reason code, what happened in words, and what to do next as facts. The
/// message holds no command line or flag: how to do the next thing is the interface's to say
/// (the log outlives the flags of the build that wrote it), from `next`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub step: Step,
    pub reason: Reason,
    pub message: String,
    /// What to do next, in order. Absent in logs written before schema 3, whose messages said it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<Next>,
}

impl Refusal {
    pub fn new(step: Step, reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { step, reason, message: message.into(), next: Vec::new() }
    }

    /// The same refusal, saying what to do next.
    pub fn then(mut self, next: impl IntoIterator<Item = Next>) -> Refusal {
        self.next.extend(next);
        self
    }
}

/// Something to do after a refusal, as a fact; the interface says how (which command, which flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "step", rename_all = "snake_case")]
pub enum Next {
    /// Run this step (first, or again).
    Run(Step),
    /// Get a new security PIN from the vault.
    GetPin,
    /// Hand the log to support.
    ExportLog,
    /// Look at where registration stands.
    CheckStatus,
    /// Move this machine to the vault of the credentials file the step named.
    Move,
}

/// What decide concluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "a recorded value made once per command and matched by value; boxing would only complicate the patterns"
)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Accepted(Change),
    Refused(Refusal),
}

impl Outcome {
    pub const REFUSED_KIND: &'static str = "StepRefused";

    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Accepted(change) => change.kind(),
            Outcome::Refused(_) => Self::REFUSED_KIND,
        }
    }
}

/// The payload of every registration event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub command: Command,
    pub observed: Observations,
    pub outcome: Outcome,
    /// The build that recorded the step; None for a step recorded before schema 4, which did not
    /// say. Metadata: nothing decides on it, so `replay --check` compares no build.
    pub build: Option<BuildId>,
}

/// A build of regent, as the binary that records a step says it is (the engine knows no build of
/// its own: it records what it is given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildId {
    /// The package version, e.g. `0.1.0`.
    pub version: String,
    /// The commit it was built from (12 hex digits, `-dirty` when its sources differed), or `unknown`.
    pub commit: String,
    /// The commit's date (YYYY-MM-DD), or `unknown`.
    pub date: String,
}

impl std::fmt::Display for BuildId {
    /// `0.1.0 a5271b4c0d1e`: the version and the commit, what tells builds apart.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.version, self.commit)
    }
}

/// The payload schema version this build writes. 3: registrations are started
/// (`RegistrationAttempted`) before the vault is asked, and the passphrase verifier is sealed
/// beside the log instead of recorded. 4: each step names the build that recorded it (`build`).
/// 5: unregistrations tell the vault and machines move (`Move`, `FinishUnregister`,
/// `RemovalCompleted`, `removal`), and a new proxy is probed (`vault_probe`): a build of schema 4
/// would misread or refuse these steps, so it is told the log is newer than it reads.
/// 6: the vault's transparency log: its key recorded at registration or taken at first contact
/// (`WitnessVaultLog`, `VaultKeyTaken`), and a proof that did not hold (`VaultLogInconsistent`).
pub const SCHEMA_VERSION: u32 = 6;
