//! Keeping the head of the log at the vault (an anchor), and checking the log against it.
//!
//! A hash chain shows any record that was changed, but not records cut off its end together with
//! every head kept beside it (the store's head and its durable-head file are in the same data
//! directory). So while the machine is registered, the head goes to the vault after every step
//! (best effort: the step's own result never depends on it), `regent audit anchor` sends it on
//! demand, and `regent audit verify --against-vault` checks that the local log holds the head the
//! vault kept.
//!
//! Nothing here appends to the log: recording a report would move the head it reports.
//! `<data-dir>/log-anchor.json` keeps what was anchored last, for which machine (with what it takes
//! to speak for it again if the log loses its registration) and the CA file used, as a hint for
//! `status` and later commands; the head in it is never trusted for verification (the vault is
//! asked).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use regent_engine::events::{self, STREAM};
use regent_engine::model::{Change, Outcome, Registration, SealedRef, SecretKind};
use regent_engine::ports::{ProxyConfig, SecretKeeper};
use regent_engine::{Reason, State, projections};
use regent_secrets::{MachineKey, SecretsArea};
use regent_store::{Digest32, EventStore, Head, Problem, VerifyReport};
use regent_vault::{ClientOptions, HttpVaultClient, LogHead, LogHeadError, MachineSigner};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{self, errln, outln};
use crate::world;

/// Beside the store in the data directory.
const ANCHOR_FILE: &str = "log-anchor.json";

/// The CA file this command was given for the vault (`register --ca-file`, `passphrase change
/// --ca-file`): the anchor after the step uses it, and it is remembered for later commands.
static CA_FILE: OnceLock<PathBuf> = OnceLock::new();

pub fn use_ca_file(ca_file: Option<&Path>) {
    if let Some(path) = ca_file {
        let _ = CA_FILE.set(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    }
}

/// The whole report after a step (the anchor read and every post of it) ends by then: the step is
/// done and recorded, and other regent commands wait for this one's store lock (5 s) meanwhile.
const AFTER_STEP_DEADLINE: Duration = Duration::from_secs(3);

/// After a step the vault gets one quick try, within [`AFTER_STEP_DEADLINE`] in all. `regent audit
/// anchor` retries longer.
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
// The local note

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AnchorNote {
    /// The CA file for the vault, as last given.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// The head the vault accepted last.
    #[serde(default)]
    anchored: Option<Anchored>,
    /// The last report that did not get through (only its code: messages may name hosts).
    #[serde(default)]
    last_failure: Option<NoteFailure>,
    /// A machine registered by `regent quickstart`, whose vault runs only while quickstart does:
    /// its later steps are not reported (they could never get through, and would warn every time).
    #[serde(default)]
    quickstart_machine: Option<String>,
}

/// The sealed keys the note names (of the machine anchored last): they must stay sealed while the
/// note names them, since they speak for that machine when the log no longer shows its registration.
pub fn sealed_keys(ctx: &Context) -> Vec<SealedRef> {
    AnchorNote::load(&ctx.data_dir).anchored.and_then(|a| a.registration_key).into_iter().collect()
}

/// Marks `machine_id` as registered with quickstart's in-process vault (see `quickstart_machine`).
pub fn mark_quickstart_machine(ctx: &Context, machine_id: &str) {
    let mut note = AnchorNote::load(&ctx.data_dir);
    note.quickstart_machine = Some(machine_id.to_string());
    note.save(&ctx.data_dir);
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Anchored {
    vault: String,
    machine_id: String,
    position: u64,
    hash: String,
    anchored_at: DateTime<Utc>,
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

impl Anchored {
    fn new(identity: &MachineIdentity, head: &LogHead) -> Anchored {
        Anchored {
            vault: identity.vault.clone(),
            machine_id: identity.machine_id.clone(),
            position: head.position,
            hash: head.hash.clone(),
            anchored_at: head.anchored_at,
            endpoint: Some(identity.endpoint.clone()),
            thumbprint: Some(identity.thumbprint.clone()),
            registration_key: Some(identity.key.clone()),
        }
    }

    /// The machine as this note names it, when it names everything needed to sign for it.
    fn identity(&self) -> Option<MachineIdentity> {
        Some(MachineIdentity {
            vault: self.vault.clone(),
            machine_id: self.machine_id.clone(),
            endpoint: self.endpoint.clone()?,
            thumbprint: self.thumbprint.clone()?,
            key: self.registration_key.clone()?,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct NoteFailure {
    machine_id: String,
    position: u64,
    reason: String,
    at: DateTime<Utc>,
}

impl AnchorNote {
    /// A missing or unreadable note is an empty one: it is only a hint.
    fn load(data_dir: &Path) -> AnchorNote {
        std::fs::read(data_dir.join(ANCHOR_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Written whole or not at all (a temporary file renamed over it); a failure is only logged.
    fn save(&self, data_dir: &Path) {
        let write = || -> std::io::Result<()> {
            let mut file = tempfile::NamedTempFile::new_in(data_dir)?;
            let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            file.write_all(&bytes)?;
            file.as_file().sync_all()?;
            file.persist(data_dir.join(ANCHOR_FILE)).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(error = %e, "cannot save {ANCHOR_FILE}; status may not show the last anchor");
        }
    }

    fn ca_file(&self) -> Option<PathBuf> {
        CA_FILE.get().cloned().or_else(|| self.ca_file.clone())
    }

    /// What became of a report of `machine_id`'s head at `position`.
    fn record(&mut self, machine_id: &str, position: u64, result: &Result<(MachineIdentity, LogHead), LogHeadError>) {
        if let Some(ca) = CA_FILE.get() {
            self.ca_file = Some(ca.clone());
        }
        match result {
            Ok((machine, head)) => self.anchored_now(machine, head),
            Err(e) => {
                self.last_failure = Some(NoteFailure {
                    machine_id: machine_id.to_string(),
                    position,
                    reason: e.code().to_string(),
                    at: Utc::now(),
                });
            }
        }
    }

    /// The vault holds `head` for the machine: a failed report at or before it is over (a refusal
    /// included: the vault took a later head since), so it is no longer shown.
    fn anchored_now(&mut self, machine: &MachineIdentity, head: &LogHead) {
        self.anchored = Some(Anchored::new(machine, head));
        if self.last_failure.as_ref().is_some_and(|f| f.machine_id != machine.machine_id || f.position <= head.position)
        {
            self.last_failure = None;
        }
    }

    /// The failed report still worth showing for `machine_id`: one past what the vault holds.
    fn pending_failure(&self, machine_id: &str) -> Option<&NoteFailure> {
        let anchored = self.anchored.as_ref().filter(|a| a.machine_id == machine_id);
        self.last_failure
            .as_ref()
            .filter(|f| f.machine_id == machine_id && anchored.is_none_or(|a| f.position > a.position))
    }
}

// ---------------------------------------------------------------------------------------------
// Who speaks for the machine

/// Opens the secrets area without creating a machine key (a lost key is reported, not replaced).
fn secrets_area(ctx: &Context) -> Result<SecretsArea, LogHeadError> {
    let unreadable = |e: regent_secrets::SecretsError| LogHeadError::Failed {
        reason: Reason::CredentialsUnreadable,
        detail: format!("the sealed secrets cannot be opened ({e}); the machine key or the secrets area was lost"),
    };
    let key = MachineKey::load(&ctx.data_dir).map_err(unreadable)?;
    SecretsArea::open_dir(&ctx.data_dir, key).map_err(unreadable)
}

/// Who the machine is at its vault, and where the key it registered with is sealed: what a report
/// or a read is signed with. Holds no secret (the key is named by its sealed reference).
#[derive(Clone, Debug)]
struct MachineIdentity {
    vault: String,
    machine_id: String,
    endpoint: String,
    thumbprint: String,
    key: SealedRef,
}

/// The sealed private key of the credentials the machine registered with: the loaded credentials
/// when they are those, else the last load of them in the log (credentials may be loaded again
/// after registering).
fn registration_key(store: &EventStore, state: &State, registration: &Registration) -> Option<SealedRef> {
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

fn key_lost(machine_id: &str, detail: impl std::fmt::Display) -> LogHeadError {
    LogHeadError::Failed {
        reason: Reason::CredentialsUnreadable,
        detail: format!(
            "the private key of the credentials this machine registered with cannot be used ({detail}); \
             only that key speaks for machine {machine_id} at the vault"
        ),
    }
}

/// The machine as the log shows its registration.
fn identity_from_log(
    store: &EventStore,
    state: &State,
    registration: &Registration,
) -> Result<MachineIdentity, LogHeadError> {
    let key = registration_key(store, state, registration)
        .ok_or_else(|| key_lost(&registration.machine_id, "it is not in the log"))?;
    Ok(MachineIdentity {
        vault: registration.vault.clone(),
        machine_id: registration.machine_id.clone(),
        endpoint: registration.endpoint.clone(),
        thumbprint: registration.thumbprint.clone(),
        key,
    })
}

fn proxy_config(state: &State, area: &SecretsArea) -> Result<Option<ProxyConfig>, LogHeadError> {
    let Some(proxy) = &state.proxy else { return Ok(None) };
    let credentials = match (&proxy.username, &proxy.password) {
        (Some(user), Some(sealed)) => {
            let unreadable = |detail: String| LogHeadError::Failed {
                reason: Reason::InvalidProxy,
                detail: format!("the proxy password cannot be opened ({detail}); set the proxy again"),
            };
            let bytes =
                SecretKeeper::open(&world::SealedFiles(area), SecretKind::ProxyPassword, sealed).map_err(unreadable)?;
            let password = String::from_utf8(bytes.to_vec()).map_err(|_| unreadable("it is not text".into()))?;
            Some((user.clone(), SecretString::from(password)))
        }
        _ => None,
    };
    Ok(Some(ProxyConfig { host: proxy.host.clone(), port: proxy.port, credentials }))
}

/// The private key `machine`'s sealed reference names, or why it cannot be opened.
fn private_key(area: &SecretsArea, machine: &MachineIdentity) -> Result<Zeroizing<Vec<u8>>, String> {
    SecretKeeper::open(&world::SealedFiles(area), SecretKind::CredentialsPrivateKey, &machine.key)
}

/// Signs for `machine` with `private_key`, the key its sealed reference names.
fn signer(
    area: &SecretsArea,
    state: &State,
    machine: &MachineIdentity,
    endpoint: Option<&str>,
    private_key: Zeroizing<Vec<u8>>,
) -> Result<MachineSigner, LogHeadError> {
    Ok(MachineSigner {
        endpoint: endpoint.unwrap_or(&machine.endpoint).to_string(),
        vault: machine.vault.clone(),
        machine_id: machine.machine_id.clone(),
        thumbprint: machine.thumbprint.clone(),
        private_key,
        proxy: proxy_config(state, area)?,
    })
}

/// The machine the log shows registered, and its signer.
fn registered_signer(
    store: &EventStore,
    area: &SecretsArea,
    state: &State,
    registration: &Registration,
    endpoint: Option<&str>,
) -> Result<(MachineIdentity, MachineSigner), LogHeadError> {
    let machine = identity_from_log(store, state, registration)?;
    let key = private_key(area, &machine).map_err(|detail| key_lost(&machine.machine_id, detail))?;
    let signer = signer(area, state, &machine, endpoint, key)?;
    Ok((machine, signer))
}

fn client(options: ClientOptions) -> Result<HttpVaultClient, LogHeadError> {
    HttpVaultClient::new(options).map_err(|e| LogHeadError::Failed {
        reason: Reason::VaultUnreachable,
        detail: format!("{e}; pass a readable CA certificate with --ca-file"),
    })
}

/// The first 16 characters (char-safe: the text may come from the network).
fn short(hash: &str) -> String {
    hash.chars().take(16).collect()
}

// ---------------------------------------------------------------------------------------------
// After every step

/// What became of the report after a step.
pub struct StepAnchor {
    vault: String,
    position: u64,
    result: Result<LogHead, LogHeadError>,
}

impl StepAnchor {
    pub fn json(&self) -> serde_json::Value {
        match &self.result {
            Ok(head) => json!({
                "anchored": true, "vault": self.vault, "position": self.position,
                "vault_position": head.position, "reason": null,
            }),
            Err(e) => json!({
                "anchored": false, "vault": self.vault, "position": self.position,
                "reason": e.code(), "message": e.to_string(),
            }),
        }
    }

    /// One line for stderr when the head did not get through.
    pub fn warning(&self) -> Option<String> {
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

/// Sends the head after a step, when the machine is (or, for unregister, was) registered. Runs
/// while the caller still holds the store, so heads reach the vault in log order.
pub fn after_step(
    ctx: &Context,
    store: &EventStore,
    area: &SecretsArea,
    state: &State,
    registration: Option<&Registration>,
    head: Head,
) -> Option<StepAnchor> {
    let registration = registration?;
    let mut note = AnchorNote::load(&ctx.data_dir);
    if note.quickstart_machine.as_deref() == Some(registration.machine_id.as_str()) {
        return None;
    }
    // One deadline for all of it: the store stays locked until this returns.
    let deadline = Instant::now() + AFTER_STEP_DEADLINE;
    let result = registered_signer(store, area, state, registration, None).and_then(|(machine, signer)| {
        let client = client(after_step_options(note.ca_file()))?;
        Ok((machine, client.report_log_head(&signer, store, head, Some(deadline))?))
    });
    note.record(&registration.machine_id, head.position, &result);
    note.save(&ctx.data_dir);
    let result = result.map(|(_, anchor)| anchor);
    Some(StepAnchor { vault: registration.vault.clone(), position: head.position, result })
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

pub fn anchor_now(ctx: &Context, endpoint: Option<String>, ca_file: Option<PathBuf>) -> Result<u8, Failure> {
    crate::check_no_credentials(None, endpoint.as_deref())?;
    use_ca_file(ca_file.as_deref());
    let store = ctx.open_existing_store()?.ok_or_else(|| not_registered("to send its log head to"))?;
    let (state, head, registration) = registered(&store, "to send its log head to")?;
    let mut note = AnchorNote::load(&ctx.data_dir);
    if endpoint.is_none() && note.quickstart_machine.as_deref() == Some(registration.machine_id.as_str()) {
        return Err(quickstart_vault_gone(&registration.vault));
    }
    // The store stays open: the head sent is the head of the log until the vault answers.
    let result = secrets_area(ctx)
        .and_then(|area| registered_signer(&store, &area, &state, &registration, endpoint.as_deref()))
        .and_then(|(machine, signer)| {
            let options = ClientOptions { ca_file: note.ca_file(), ..ClientOptions::default() };
            Ok((machine, client(options)?.report_log_head(&signer, &store, head, None)?))
        });
    drop(store);
    note.record(&registration.machine_id, head.position, &result);
    note.save(&ctx.data_dir);
    match result.map(|(_, anchor)| anchor) {
        Ok(anchor) => {
            if ctx.json {
                terminal::json_line(json!({
                    "anchored": true, "vault": registration.vault, "machine_id": registration.machine_id,
                    "position": head.position, "hash": head.hash, "anchor": anchor,
                }));
            } else {
                outln!(
                    "log head {head} anchored at vault {} (machine {}, since {})",
                    registration.vault,
                    registration.machine_id,
                    anchor.anchored_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
            Ok(0)
        }
        Err(e) if e.is_tamper_evidence() => Err(Failure::refused(format!(
            "{}: vault {} refused log head {}: {e}; run `regent audit verify --against-vault`",
            e.code(),
            registration.vault,
            head.position
        ))),
        Err(e) => Err(Failure::refused(format!(
            "{}: log head {} was not anchored at vault {}: {e}; retry `regent audit anchor` once the vault is reachable (--endpoint URL if it moved)",
            e.code(),
            head.position,
            registration.vault
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// regent audit verify --against-vault

/// How the local log compares with the vault's anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Comparison {
    /// The log holds the anchored record; the chain verifies.
    Match,
    /// The log ends before the anchored position.
    TailCut,
    /// The record at the anchored position is another one.
    Altered,
    /// The chain fails by itself (before reaching the anchor).
    ChainBroken,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Range {
    from: u64,
    to: u64,
}

fn compare(report: &VerifyReport, anchor: Head) -> (Comparison, Option<Range>) {
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

/// Whether the log shows `machine_id`'s registration at all (an unregistered machine's log still
/// does). A log that does not, while the note names the machine as anchored, was cut before it.
fn log_shows_registration(store: &EventStore, machine_id: &str) -> Result<bool, Failure> {
    for record in store.read_stream(STREAM, 1) {
        if let Ok(step) = events::decode(&record?)
            && let Outcome::Accepted(Change::Registered(registration)) = &step.outcome
            && registration.machine_id == machine_id
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The key of a machine the log lost cannot be found: said as such, never as "not registered".
fn registration_key_not_found(lost: &Anchored, detail: &str) -> Failure {
    Failure::refused(format!(
        "registration_key_not_found: this log no longer shows the registration of machine {} at vault {}, which \
         anchored it at position {} (log-anchor.json), and the key it registered with cannot be found ({detail}): \
         the log was probably cut; ask the vault's admin for the machine's head (`regent vault machines`) and check \
         this log with `regent audit verify --head POSITION:HASH`",
        lost.machine_id, lost.vault, lost.position
    ))
}

/// Who to ask the vault about, and how: the machine the log shows registered, or, when the log no
/// longer shows any registration of it, the machine the note names as anchored.
fn machine_to_check(
    ctx: &Context,
    store: &EventStore,
    note: &AnchorNote,
    endpoint: Option<&str>,
) -> Result<(MachineIdentity, MachineSigner, bool), Failure> {
    let (state, _) = projections::current_state(store)?;
    if let Some(registration) = &state.registration {
        let (machine, signer) = secrets_area(ctx)
            .and_then(|area| registered_signer(store, &area, &state, registration, endpoint))
            .map_err(|e| {
                Failure::refused(format!(
                    "{}: cannot ask vault {} for the anchored head: {e}",
                    e.code(),
                    registration.vault
                ))
            })?;
        return Ok((machine, signer, false));
    }
    let what = "whose anchor to check against";
    let lost = match &note.anchored {
        Some(anchored) if !log_shows_registration(store, &anchored.machine_id)? => anchored,
        _ => return Err(not_registered(what)),
    };
    let machine = lost.identity().ok_or_else(|| {
        registration_key_not_found(lost, "the note was written by an earlier regent and does not name it")
    })?;
    let area = secrets_area(ctx).map_err(|e| registration_key_not_found(lost, &e.to_string()))?;
    let key = private_key(&area, &machine).map_err(|detail| registration_key_not_found(lost, &detail))?;
    let signer = signer(&area, &state, &machine, endpoint, key).map_err(|e| {
        Failure::refused(format!("{}: cannot ask vault {} for the anchored head: {e}", e.code(), lost.vault))
    })?;
    Ok((machine, signer, true))
}

pub fn verify_against_vault(ctx: &Context, endpoint: Option<String>, ca_file: Option<PathBuf>) -> Result<u8, Failure> {
    crate::check_no_credentials(None, endpoint.as_deref())?;
    use_ca_file(ca_file.as_deref());
    let mut note = AnchorNote::load(&ctx.data_dir);
    // Read who the machine is, then let go of the store while the vault is asked.
    let store = ctx.open_existing_store()?.ok_or_else(|| not_registered("whose anchor to check against"))?;
    let (machine, signer, registration_lost) = machine_to_check(ctx, &store, &note, endpoint.as_deref())?;
    drop(store);
    if endpoint.is_none() && note.quickstart_machine.as_deref() == Some(machine.machine_id.as_str()) {
        return Err(quickstart_vault_gone(&machine.vault));
    }
    let options = ClientOptions { ca_file: note.ca_file(), ..ClientOptions::default() };
    let fetched = client(options).and_then(|client| client.fetch_log_head(&signer));
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

    let report = ctx.open_store()?.verify(Some(anchor_head))?;
    let (comparison, range) = compare(&report, anchor_head);
    let head = report.verified_head;
    let not_yet = (comparison == Comparison::Match && head.position > anchor.position)
        .then(|| Range { from: anchor.position + 1, to: head.position });
    if comparison == Comparison::Match && head.position >= anchor.position {
        note.anchored_now(&machine, &anchor);
        note.save(&ctx.data_dir);
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
                if let Some(r) = not_yet {
                    outln!("records {}-{} are not yet anchored (run `regent audit anchor`)", r.from, r.to);
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
                "warning: vault {} refused {} log head report(s) for this machine, the last at {refused_at} ({} for position {}): another copy of this log reported heads",
                machine.vault,
                anchor.refusals,
                refusal.error,
                refusal.position
            );
        } else if !ctx.json {
            outln!(
                "vault {} refused {} log head report(s) for this machine before its current anchor (the last at {refused_at})",
                machine.vault,
                anchor.refusals
            );
        }
    }
    let vault = &machine.vault;
    let outcome = match (comparison, range) {
        (Comparison::Match, _) => Ok(0),
        (Comparison::TailCut, Some(r)) => Err(Failure::refused(format!(
            "log_tail_cut: vault {vault} anchored this log at position {}, but it ends at {}: records {}-{} are missing (cut off, or an older copy was restored); restore an export that holds them (move the store aside, then `regent import FILE`) and find out who removed them",
            anchor.position, head.position, r.from, r.to
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

/// The vault `regent quickstart` ran in-process ended with it: nothing can be asked of it again.
fn quickstart_vault_gone(vault: &str) -> Failure {
    Failure::refused(format!(
        "anchor_unavailable: vault {vault} ran inside `regent quickstart` and ended with it, so no head kept there can be read again; `regent audit verify` checks this log's own chain (against a head kept elsewhere with --head POSITION:HASH)"
    ))
}

/// `status`: how far the vault's anchor is behind the log, from the local note (a hint).
pub fn status_json(ctx: &Context, state: &State, head: Head) -> serde_json::Value {
    let note = AnchorNote::load(&ctx.data_dir);
    let Some(registration) = &state.registration else {
        return match lost_registration(&note, head) {
            Some(a) => json!({
                "vault": a.vault, "machine_id": a.machine_id, "position": a.position, "past_log_head": true,
            }),
            None => serde_json::Value::Null,
        };
    };
    let anchored = note.anchored.as_ref().filter(|a| a.machine_id == registration.machine_id);
    let failure = note.pending_failure(&registration.machine_id);
    json!({
        "position": anchored.map(|a| a.position),
        "anchored_at": anchored.map(|a| a.anchored_at),
        "behind": anchored.map_or(head.position, |a| head.position.saturating_sub(a.position)),
        "last_failure": failure.map(|f| json!({"position": f.position, "reason": f.reason, "at": f.at})),
    })
}

/// A machine the note says was anchored past this log's head while the log shows no registration:
/// the log was likely cut before it (an unregistered machine's last head is the log's).
fn lost_registration(note: &AnchorNote, head: Head) -> Option<&Anchored> {
    note.anchored.as_ref().filter(|a| a.position > head.position)
}

/// `status`: the human line, or nothing when not registered (unless the log seems cut).
pub fn status_line(ctx: &Context, state: &State, head: Head) -> Option<String> {
    let note = AnchorNote::load(&ctx.data_dir);
    let Some(registration) = state.registration.as_ref() else {
        return lost_registration(&note, head).map(|a| {
            format!(
                "machine {} was anchored at vault {} at position {}, past this log's head, and this log shows no registration: run `regent audit verify --against-vault`",
                a.machine_id, a.vault, a.position
            )
        });
    };
    if note.quickstart_machine.as_deref() == Some(registration.machine_id.as_str()) {
        return Some("not kept: quickstart's vault runs only while `regent quickstart` does".into());
    }
    let anchored = note.anchored.as_ref().filter(|a| a.machine_id == registration.machine_id);
    let mut line = match anchored {
        None => "not anchored at the vault yet (`regent audit anchor`)".to_string(),
        // The note travels with the data dir: a restored copy says what it last reported, which
        // is all that can be known here without asking the vault.
        Some(a) if a.position == head.position => format!(
            "{} at vault {}, as last reported from this data dir (`regent audit verify --against-vault` asks the vault whether it holds a later head)",
            a.position, a.vault
        ),
        Some(a) if a.position < head.position => format!(
            "{} at vault {} ({} records not yet anchored: `regent audit anchor`)",
            a.position,
            a.vault,
            head.position - a.position
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

#[cfg(test)]
mod tests {
    use super::*;
    use regent_store::ChainFailure;
    use regent_vault::ErrorCode;

    fn report(failure: Option<ChainFailure>, position: u64) -> VerifyReport {
        VerifyReport { records: position, verified_head: Head { position, hash: Digest32([1; 32]) }, failure }
    }

    fn machine(id: &str) -> MachineIdentity {
        MachineIdentity {
            vault: "v".into(),
            machine_id: id.into(),
            endpoint: "http://v".into(),
            thumbprint: "ab".repeat(32),
            key: SealedRef { id: "cd".repeat(32) },
        }
    }

    fn head(position: u64) -> LogHead {
        LogHead {
            machine_id: "m".into(),
            position,
            hash: "ef".repeat(32),
            anchored_at: Utc::now(),
            refusals: 0,
            last_refusal: None,
        }
    }

    #[test]
    fn a_failed_report_shows_until_the_vault_holds_a_head_past_it() {
        let mut note = AnchorNote::default();
        let refused = LogHeadError::Refused { code: ErrorCode::LogHeadConflict, message: "m".into() };
        note.record("m", 7, &Err(refused));
        assert_eq!(note.pending_failure("m").map(|f| f.reason.as_str()), Some("log_head_conflict"));
        assert!(note.pending_failure("other").is_none());
        // A head before the failed one (verify found the vault's anchor behind it): still shown.
        note.anchored_now(&machine("m"), &head(6));
        assert!(note.pending_failure("m").is_some());
        // A later report went through: the failure is over.
        note.record("m", 8, &Ok((machine("m"), head(8))));
        assert!(note.pending_failure("m").is_none() && note.last_failure.is_none());
        // The note can speak for the machine again, naming its key only by reference.
        let anchored = note.anchored.as_ref().unwrap();
        assert_eq!(anchored.identity().map(|m| m.key.id), Some("cd".repeat(32)));
        let text = serde_json::to_string(&note).unwrap();
        assert!(text.contains("\"registration_key\":{\"id\":"), "{text}");
        // A note from before: no key reference, so no identity.
        let old: Anchored = serde_json::from_str(
            r#"{"vault":"v","machine_id":"m","position":3,"hash":"00","anchored_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(old.identity().is_none());
    }

    #[test]
    fn comparisons_name_the_range() {
        let anchor = Head { position: 7, hash: Digest32([7; 32]) };
        assert_eq!(compare(&report(None, 9), anchor).0, Comparison::Match);
        let cut = ChainFailure { position: 5, problem: Problem::Truncated { last: 4, expected_head: 7 } };
        let (outcome, range) = compare(&report(Some(cut), 4), anchor);
        assert_eq!(outcome, Comparison::TailCut);
        assert_eq!(range.map(|r| (r.from, r.to)), Some((5, 7)));
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
