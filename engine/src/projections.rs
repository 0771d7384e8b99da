//! Views rebuilt from the log: status, the Change Properties view, the audit trail.
//!
//! State is folded from the log, resuming from a checkpoint when one matches the log. A
//! checkpoint is only a cache: without it the same state comes from folding everything.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use regent_store::{EventStore, Head, Record};
use serde::Serialize;

use crate::events::{self, DecodeError, STREAM};
use crate::model::{BuildId, Change, Outcome, PassphraseOrigin, StepRecord, Weekday};
use crate::reason::{Reason, Step};
use crate::state::{LastRefusal, State};

use crate::units::format_rate;

/// The checkpoint name for the folded state. Renamed whenever `State` gains what an older
/// checkpoint cannot hold (3: registration attempts), so an old one is never taken for current.
/// 4: the vault's refusal of the loaded credentials (`credentials_refused`).
pub const STATE_CHECKPOINT: &str = "registration-state-4";
/// Save a new checkpoint once this many events were folded past the last one.
pub const CHECKPOINT_EVERY: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] regent_store::StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Folds every record from the start of the log (or of an iterator of records).
pub fn fold<I>(records: I) -> Result<(State, Head), ProjectionError>
where
    I: IntoIterator<Item = Result<Record, regent_store::StoreError>>,
{
    fold_from(State::default(), Head::EMPTY, records)
}

/// Folds records onto a state that stands at `head`.
pub fn fold_from<I>(mut state: State, mut head: Head, records: I) -> Result<(State, Head), ProjectionError>
where
    I: IntoIterator<Item = Result<Record, regent_store::StoreError>>,
{
    for record in records {
        let record = record?;
        if record.stream == STREAM {
            state = state.evolve(&events::decode(&record)?);
        }
        head = Head { position: record.position, hash: record.hash };
    }
    Ok((state, head))
}

/// The current state of the store: from the checkpoint if it matches the log, then the events
/// since. Saves a fresh checkpoint when many events were folded.
pub fn current_state(store: &EventStore) -> Result<(State, Head), ProjectionError> {
    let checkpoint = store
        .load_checkpoint(STATE_CHECKPOINT)?
        .and_then(|cp| serde_json::from_slice::<State>(&cp.state).ok().map(|state| (state, cp.head)));
    let (state, head) = match checkpoint {
        Some((state, head)) => fold_from(state, head, store.read_all(head.position + 1))?,
        None => fold(store.read_all(1))?,
    };
    let since = head.position - store.load_checkpoint(STATE_CHECKPOINT)?.map_or(0, |cp| cp.head.position);
    if since >= CHECKPOINT_EVERY {
        save_checkpoint(store, &state, head);
    }
    Ok((state, head))
}

/// Saves the state as a checkpoint. A failure only costs speed later, so it is logged, not raised.
pub fn save_checkpoint(store: &EventStore, state: &State, head: Head) {
    let saved = serde_json::to_vec(state)
        .map_err(|e| e.to_string())
        .and_then(|bytes| store.save_checkpoint(STATE_CHECKPOINT, head, &bytes).map_err(|e| e.to_string()));
    if let Err(error) = saved {
        tracing::warn!(%error, "could not save the state checkpoint");
    }
}

/// The positions of the records that hold a passphrase verifier in the clear (written before
/// schema 3 sealed it beside the log): what an export of them lets someone guess offline.
pub fn records_holding_verifier<I>(records: I) -> Result<Vec<u64>, ProjectionError>
where
    I: IntoIterator<Item = Result<Record, regent_store::StoreError>>,
{
    let mut found = Vec::new();
    for record in records {
        let record = record?;
        if record.stream != STREAM {
            continue;
        }
        let step = events::decode(&record)?;
        let observed = step.observed.passphrase.as_ref().is_some_and(|p| p.verifier.is_some());
        let recorded = matches!(&step.outcome,
            Outcome::Accepted(Change::PassphraseCreated(e) | Change::PassphraseChanged(e)) if e.verifier.is_some());
        if observed || recorded {
            found.push(record.position);
        }
    }
    Ok(found)
}

/// Every sealed reference the log names, in any record: what may be removed from the secrets area
/// once nothing current refers to it (anything else sealed there is not this log's to remove).
pub fn sealed_refs_recorded<I>(records: I) -> Result<Vec<crate::model::SealedRef>, ProjectionError>
where
    I: IntoIterator<Item = Result<Record, regent_store::StoreError>>,
{
    use crate::model::CredentialsObserved;
    let mut found = Vec::new();
    for record in records {
        let record = record?;
        if record.stream != STREAM {
            continue;
        }
        let step = events::decode(&record)?;
        let observed = &step.observed;
        found.extend(observed.proxy_password.iter().cloned());
        if let Some(CredentialsObserved::Parsed { private_key, .. }) = &observed.credentials {
            found.push(private_key.clone());
        }
        if let Some(p) = &observed.passphrase {
            found.extend(p.sealed.iter().chain(&p.verifier_sealed).cloned());
        }
        if let Outcome::Accepted(change) = &step.outcome {
            match change {
                Change::ProxySet(p) => found.extend(p.password.iter().cloned()),
                Change::CredentialsLoaded(c) => found.push(c.private_key.clone()),
                Change::Unregistered { new_credentials: Some(c), .. } => found.push(c.private_key.clone()),
                Change::PassphraseCreated(e) | Change::PassphraseChanged(e) => {
                    found.extend(e.sealed.iter().chain(&e.verifier_sealed).cloned())
                }
                Change::RegistrationAttempted(a) => found.push(a.private_key.clone()),
                Change::Registered(r) => found.extend(r.private_key.iter().cloned()),
                _ => {}
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found.dedup();
    Ok(found)
}

/// Whether the log holds an accepted `step`: what the state cannot say of a step that may leave no
/// trace in it (a proxy cleared, or never set).
pub fn step_accepted<I>(records: I, step: Step) -> Result<bool, ProjectionError>
where
    I: IntoIterator<Item = Result<Record, regent_store::StoreError>>,
{
    for record in records {
        if let Some(decoded) = events::decode_step(&record?) {
            let decoded = decoded?;
            if decoded.command.step() == step && matches!(decoded.outcome, Outcome::Accepted(_)) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `regent status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub phase: &'static str,
    pub next_step: Option<&'static str>,
    /// The last refusal not resolved since (`last_failure` is the contract's name for it);
    /// `current` says whether it is of the step now due or earlier history.
    pub last_failure: Option<RefusalView>,
    pub events: u64,
    pub head: Head,
    /// Which vault this machine is registered to, when it is.
    pub vault: Option<String>,
    /// A registration started and not ended yet: `regent register` asks again with its request id.
    pub registration_started: Option<StartedView>,
    /// The vault this machine is registered to, or would register with, and where it is: before
    /// registration too (`vault` is only the registered one's name).
    pub vault_detail: Option<VaultDetail>,
    /// The loaded credentials: when they expire, and whether they are still good as far as this
    /// log knows.
    pub credentials: Option<CredentialsStatus>,
    /// Unregistrations the vault was not told of yet (it still lists those machines); the next
    /// `regent register` or `regent unregister` tells it.
    pub pending_unregistrations: Vec<PendingUnregistrationView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingUnregistrationView {
    pub vault: String,
    pub machine_id: String,
    pub endpoint: String,
    pub unregistered_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VaultDetail {
    pub name: String,
    pub endpoint: String,
    pub registered: bool,
    /// Where name and endpoint come from: `registration` (the vault's answer, at the endpoint it
    /// was asked at), `registration_started` (the registration waiting for an answer) or
    /// `credentials` (the loaded file; `register --endpoint` may override it).
    pub from: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialsStatus {
    pub file: PathBuf,
    pub vault: String,
    pub thumbprint: String,
    pub not_before: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `valid`, `expired`, `not_yet_valid` (by this machine's clock), `superseded` (the vault
    /// refused a registration with them because a newer file was downloaded) or `refused_by_vault`
    /// (the vault refused them otherwise, see `vault_refused`).
    pub state: &'static str,
    /// The vault's refusal of these credentials, as the log recorded it: only the vault knows of a
    /// newer download, and the agent learns of it only when a registration is refused.
    pub vault_refused: Option<VaultRefusedView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VaultRefusedView {
    pub reason: Reason,
    pub at: DateTime<Utc>,
    /// Where the log learned it: `register` (the vault's answer to a registration).
    pub learned_from: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StartedView {
    pub vault: String,
    pub request_id: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusalView {
    pub step: &'static str,
    pub reason: Reason,
    pub message: String,
    /// What to do next, as facts (`{"action": "run", "step": "folders"}`, `{"action": "get_pin"}`).
    pub next: Vec<crate::model::Next>,
    pub at: DateTime<Utc>,
    /// The refusal is of the step now due (or, once registered, of a change a registered machine
    /// makes); false: earlier history, which the step now due does not wait on.
    pub current: bool,
}

impl RefusalView {
    fn of(f: &LastRefusal, state: &State) -> Self {
        let current = match state.next_step() {
            Some(due) => f.step == due,
            None => matches!(
                f.step,
                Step::Proxy | Step::ScratchFolder | Step::Throttling | Step::PassphraseChange | Step::Unregister
            ),
        };
        RefusalView {
            step: f.step.name(),
            reason: f.reason.clone(),
            message: f.message.clone(),
            next: f.next.clone(),
            at: f.at,
            current,
        }
    }
}

/// Whether credentials valid from `not_before` to `not_after` are good at `now`, by the clock.
pub fn validity(not_before: DateTime<Utc>, not_after: DateTime<Utc>, now: DateTime<Utc>) -> &'static str {
    if now > not_after {
        "expired"
    } else if now < not_before {
        "not_yet_valid"
    } else {
        "valid"
    }
}

/// The status as of the log's last record (what a replay or a step's own document shows).
pub fn status(state: &State, head: Head) -> Status {
    status_at(state, head, state.updated_at.unwrap_or(DateTime::UNIX_EPOCH))
}

/// The status at `now` (the clock's time, given: the projection reads no clock).
pub fn status_at(state: &State, head: Head, now: DateTime<Utc>) -> Status {
    let vault_detail = match (&state.registration, &state.attempt, &state.credentials) {
        (Some(r), _, _) => Some(VaultDetail {
            name: r.vault.clone(),
            endpoint: r.endpoint.clone(),
            registered: true,
            from: "registration",
        }),
        (None, Some(a), _) => Some(VaultDetail {
            name: a.vault.name.clone(),
            endpoint: a.endpoint.clone(),
            registered: false,
            from: "registration_started",
        }),
        (None, None, Some(c)) => Some(VaultDetail {
            name: c.facts.vault.name.clone(),
            endpoint: c.facts.endpoint.clone(),
            registered: false,
            from: "credentials",
        }),
        (None, None, None) => None,
    };
    let credentials = state.credentials.as_ref().map(|c| {
        let refused = state.credentials_refused.as_ref().filter(|r| r.thumbprint == c.facts.thumbprint);
        let by_clock = validity(c.facts.not_before, c.facts.not_after, now);
        CredentialsStatus {
            file: c.file.clone(),
            vault: c.facts.vault.name.clone(),
            thumbprint: c.facts.thumbprint.clone(),
            not_before: c.facts.not_before,
            expires_at: c.facts.not_after,
            state: match refused.map(|r| &r.reason) {
                Some(Reason::CredentialsSuperseded) => "superseded",
                Some(_) if by_clock == "valid" => "refused_by_vault",
                _ => by_clock,
            },
            vault_refused: refused.map(|r| VaultRefusedView {
                reason: r.reason.clone(),
                at: r.at,
                learned_from: "register",
            }),
        }
    });
    Status {
        phase: state.phase().name(),
        next_step: state.next_step().map(|s| s.name()),
        last_failure: state.last_refusal.as_ref().map(|f| RefusalView::of(f, state)),
        events: head.position,
        head,
        vault: state.registration.as_ref().map(|r| r.vault.clone()),
        registration_started: state.attempt.as_ref().map(|a| StartedView {
            vault: a.vault.name.clone(),
            request_id: a.request_id.clone(),
            started_at: a.started_at,
        }),
        vault_detail,
        credentials,
        pending_unregistrations: state
            .pending_removals
            .iter()
            .map(|p| PendingUnregistrationView {
                vault: p.vault.clone(),
                machine_id: p.machine_id.clone(),
                endpoint: p.endpoint.clone(),
                unregistered_at: p.unregistered_at,
            })
            .collect(),
    }
}

/// The Change Properties view, grouped like the agent's tabs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Properties {
    pub folders: Option<FoldersView>,
    pub proxy: Option<ProxyView>,
    pub throttling: Option<ThrottlingView>,
    pub encryption: Option<EncryptionView>,
    pub vault: Option<VaultView>,
    pub credentials: Option<CredentialsView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FoldersView {
    pub install_dir: PathBuf,
    pub scratch_dir: PathBuf,
    pub backup_size_bytes: u64,
    pub scratch_free_bytes: u64,
    pub scratch_filesystem: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyView {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password_set: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThrottlingView {
    pub work_days: Vec<Weekday>,
    pub work_hours: String,
    pub work_bandwidth: String,
    pub non_work_bandwidth: String,
    pub work_bps: u64,
    pub non_work_bps: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EncryptionView {
    pub passphrase_set: bool,
    pub how: &'static str,
    pub saved_to: Option<PathBuf>,
    pub set_at: DateTime<Utc>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VaultView {
    pub name: String,
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub location: Option<String>,
    pub registered: bool,
    pub machine_id: Option<String>,
    pub registered_at: Option<DateTime<Utc>>,
    pub endpoint: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialsView {
    pub file: PathBuf,
    pub vault: String,
    pub thumbprint: String,
    pub not_before: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub loaded_at: DateTime<Utc>,
    /// `valid`, `expired` or `not_yet_valid`, by the clock at the time of the view.
    pub validity: &'static str,
    pub expired: bool,
}

/// The Change Properties view as of the log's last record (a replay's).
pub fn properties(state: &State) -> Properties {
    properties_at(state, state.updated_at.unwrap_or(DateTime::UNIX_EPOCH))
}

/// The Change Properties view at `now` (the clock's time, given).
pub fn properties_at(state: &State, now: DateTime<Utc>) -> Properties {
    let credentials = state.credentials.as_ref();
    let registration = state.registration.as_ref();
    let vault = match (registration, credentials) {
        (None, None) => None,
        (r, c) => Some(VaultView {
            name: r.map(|r| r.vault.clone()).or_else(|| c.map(|c| c.facts.vault.name.clone())).unwrap_or_default(),
            subscription_id: c.map(|c| c.facts.vault.subscription_id.clone()),
            resource_group: c.map(|c| c.facts.vault.resource_group.clone()),
            location: c.map(|c| c.facts.vault.location.clone()),
            registered: r.is_some(),
            machine_id: r.map(|r| r.machine_id.clone()),
            registered_at: r.map(|r| r.registered_at),
            endpoint: r.map(|r| r.endpoint.clone()).or_else(|| c.map(|c| c.facts.endpoint.clone())),
        }),
    };
    Properties {
        folders: state.folders.as_ref().map(|f| FoldersView {
            install_dir: f.install_dir.clone(),
            scratch_dir: f.scratch_dir.clone(),
            backup_size_bytes: f.backup_size_bytes,
            scratch_free_bytes: f.scratch_free_bytes,
            scratch_filesystem: f.scratch_filesystem.clone(),
        }),
        proxy: state.proxy.as_ref().map(|p| ProxyView {
            host: p.host.clone(),
            port: p.port,
            username: p.username.clone(),
            password_set: p.password.is_some(),
        }),
        throttling: state.throttling.as_ref().map(|t| ThrottlingView {
            work_days: t.work_days.clone(),
            work_hours: format!("{}-{}", t.work_start.format("%H:%M"), t.work_end.format("%H:%M")),
            work_bandwidth: format_rate(t.work_bps),
            non_work_bandwidth: format_rate(t.non_work_bps),
            work_bps: t.work_bps,
            non_work_bps: t.non_work_bps,
        }),
        encryption: state.encryption.as_ref().map(|e| EncryptionView {
            passphrase_set: true,
            how: match e.origin {
                PassphraseOrigin::Generated { .. } => "generated",
                PassphraseOrigin::Provided => "provided",
            },
            saved_to: match &e.origin {
                PassphraseOrigin::Generated { saved_to } => Some(saved_to.clone()),
                PassphraseOrigin::Provided => None,
            },
            set_at: e.set_at,
            warnings: e.warnings.clone(),
        }),
        vault,
        credentials: credentials.map(|c| CredentialsView {
            file: c.file.clone(),
            vault: c.facts.vault.name.clone(),
            thumbprint: c.facts.thumbprint.clone(),
            not_before: c.facts.not_before,
            expires_at: c.facts.not_after,
            loaded_at: c.loaded_at,
            validity: validity(c.facts.not_before, c.facts.not_after, now),
            expired: now > c.facts.not_after,
        }),
    }
}

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub position: u64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: String,
    pub step: &'static str,
    pub outcome: &'static str,
    pub reason: Option<Reason>,
    pub summary: String,
    pub correlation_id: String,
    /// The build that recorded the step; None (`null`) for steps recorded before builds said.
    pub build: Option<BuildId>,
}

impl AuditEntry {
    /// The build in a few words: `0.1.0 a5271b4c0d1e`, or `unknown` for a step that did not say.
    pub fn build_text(&self) -> String {
        self.build.as_ref().map_or_else(|| "unknown".into(), BuildId::to_string)
    }
}

/// Which audit entries to show.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time (exclusive: the caller makes `--until 2026-12-02` the next
    /// midnight, and a time to the second the next second, so the period it names is in).
    pub before: Option<DateTime<Utc>>,
    /// A kind, step or outcome (see [`AuditFilter::is_known_kind`]).
    pub kind: Option<String>,
    /// The oldest N entries that match.
    pub limit: Option<usize>,
    /// The newest N entries that match, still oldest first; at most N are held at a time.
    pub tail: Option<usize>,
}

/// The outcomes `--kind` takes.
pub const AUDIT_OUTCOMES: [&str; 2] = ["accepted", "refused"];

impl AuditFilter {
    /// Whether `kind` names something an entry can be: a step (`proxy`, `scratch_folder`, or
    /// `scratch-folder`), an outcome (`refused`) or an event kind (`StepRefused`), in any case.
    pub fn is_known_kind(kind: &str) -> bool {
        let step = kind.replace('-', "_");
        Step::ALL.iter().any(|s| s.name().eq_ignore_ascii_case(&step))
            || AUDIT_OUTCOMES.iter().any(|o| o.eq_ignore_ascii_case(kind))
            || Change::KINDS.iter().chain([&Outcome::REFUSED_KIND]).any(|k| k.eq_ignore_ascii_case(kind))
    }

    /// Matches the record's kind (`StepRefused`), its step (`proxy`) or its outcome (`refused`),
    /// case-insensitively, so that `--kind proxy` and `--kind refused` both do what one expects.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let kind_ok = self.kind.as_deref().is_none_or(|k| {
            k.eq_ignore_ascii_case(&entry.kind)
                || k.replace('-', "_").eq_ignore_ascii_case(entry.step)
                || k.eq_ignore_ascii_case(entry.outcome)
        });
        kind_ok && self.since.is_none_or(|since| entry.at >= since) && self.before.is_none_or(|b| entry.at < b)
    }
}

/// The audit trail, streamed: entries oldest first, filtered. With `tail`, the log is read to its
/// end holding only the last N entries, which are then given oldest first.
pub fn audit<'a, I>(
    records: I,
    filter: &'a AuditFilter,
) -> Box<dyn Iterator<Item = Result<AuditEntry, ProjectionError>> + 'a>
where
    I: IntoIterator<Item = Result<Record, regent_store::StoreError>> + 'a,
{
    let entries = records
        .into_iter()
        .map(|record| -> Result<Option<AuditEntry>, ProjectionError> {
            let record = record?;
            if record.stream != STREAM {
                return Ok(None);
            }
            let step = events::decode(&record)?;
            Ok(Some(audit_entry(&record, &step)))
        })
        .filter_map(move |entry| match entry {
            Ok(Some(entry)) if filter.matches(&entry) => Some(Ok(entry)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .take(filter.limit.unwrap_or(usize::MAX));
    match filter.tail {
        None => Box::new(entries),
        Some(n) => Box::new(Tail { entries: Some(entries), n, held: std::collections::VecDeque::new() }),
    }
}

/// The last `n` entries of `entries`, oldest first; an error is given as soon as it is met.
struct Tail<I> {
    entries: Option<I>,
    n: usize,
    held: std::collections::VecDeque<AuditEntry>,
}

impl<I: Iterator<Item = Result<AuditEntry, ProjectionError>>> Iterator for Tail<I> {
    type Item = Result<AuditEntry, ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entries) = self.entries.take() {
            for entry in entries {
                match entry {
                    Ok(entry) => {
                        if self.held.len() == self.n {
                            self.held.pop_front();
                        }
                        if self.n > 0 {
                            self.held.push_back(entry);
                        }
                    }
                    Err(e) => {
                        self.held.clear();
                        return Some(Err(e));
                    }
                }
            }
        }
        self.held.pop_front().map(Ok)
    }
}

pub fn audit_entry(record: &Record, step: &StepRecord) -> AuditEntry {
    let (outcome, reason) = match &step.outcome {
        Outcome::Accepted(_) => ("accepted", None),
        Outcome::Refused(r) => ("refused", Some(r.reason.clone())),
    };
    AuditEntry {
        position: record.position,
        at: record.recorded_at,
        actor: record.actor.to_string(),
        kind: record.kind.clone(),
        step: step.command.step().name(),
        outcome,
        reason,
        summary: summary(&step.outcome),
        correlation_id: record.correlation_id.to_string(),
        build: step.build.clone(),
    }
}

/// What happened, in one line.
pub fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Refused(r) => format!("{} refused: {}", r.step, r.message),
        Outcome::Accepted(change) => match change {
            Change::FoldersChosen(f) => format!(
                "folders chosen: install {}, scratch {} ({} backup)",
                f.install_dir.display(),
                f.scratch_dir.display(),
                crate::units::format_bytes(f.backup_size_bytes)
            ),
            Change::ProxySet(p) => format!(
                "proxy set to {}:{}{}",
                p.host,
                p.port,
                p.username.as_ref().map(|u| format!(" as {u} (password set)")).unwrap_or_default()
            ),
            Change::ProxyCleared => "proxy cleared: direct connection".into(),
            Change::CredentialsLoaded(c) => format!(
                "vault credentials loaded for vault {} (certificate {}…, expires {})",
                c.facts.vault.name,
                c.facts.thumbprint.get(..16).unwrap_or(&c.facts.thumbprint),
                c.facts.not_after.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Change::PassphraseCreated(e) | Change::PassphraseChanged(e) => {
                let verb = if matches!(change, Change::PassphraseCreated(_)) { "created" } else { "changed" };
                match &e.origin {
                    PassphraseOrigin::Generated { saved_to } => {
                        format!("passphrase {verb}: generated, saved to {}", saved_to.display())
                    }
                    PassphraseOrigin::Provided => format!("passphrase {verb}: provided by the operator"),
                }
            }
            Change::RegistrationAttempted(a) => format!(
                "registration started with vault {} (request {}, certificate {}…)",
                a.vault.name,
                a.request_id,
                a.thumbprint.get(..16).unwrap_or(&a.thumbprint)
            ),
            Change::Registered(r) => format!(
                "registered to vault {} as machine {}{}",
                r.vault,
                r.machine_id,
                if r.vault_key.is_some() { " (its log's key from the credentials file)" } else { "" }
            ),
            Change::Unregistered { machine_id, vault, vault_told, new_credentials } => {
                let told = match vault_told {
                    Some(true) => " (the vault removed it)",
                    Some(false) => " (the vault was not reachable: it still lists the machine until it is told)",
                    None => "",
                };
                let moving = new_credentials
                    .as_ref()
                    .map(|c| format!("; credentials of vault {} loaded to register there", c.facts.vault.name))
                    .unwrap_or_default();
                format!("unregistered machine {machine_id} from vault {vault}{told}{moving}")
            }
            Change::RemovalCompleted { machine_id, vault, .. } => {
                format!("vault {vault} was told of the unregistration of machine {machine_id} and removed it")
            }
            Change::ScratchMoved { scratch_dir, .. } => {
                format!("scratch folder set to {} (the setting only: no file was moved)", scratch_dir.display())
            }
            Change::ThrottlingSet(t) => format!(
                "throttling set: work days {}, {}-{} at {}, otherwise {}",
                Weekday::describe_set(&t.work_days),
                t.work_start.format("%H:%M"),
                t.work_end.format("%H:%M"),
                format_rate(t.work_bps),
                format_rate(t.non_work_bps)
            ),
            Change::ThrottlingOff => "throttling off".into(),
            Change::VaultKeyTaken { vault, machine_id, tree_size, .. } => format!(
                "the key of vault {vault}'s transparency log taken at first contact, for machine {machine_id} (its tree then held {tree_size} heads)"
            ),
            Change::VaultLogInconsistent { vault, position, problem, .. } => {
                format!("vault {vault}'s transparency log did not hold for log head {position}: {problem}")
            }
        },
    }
}
