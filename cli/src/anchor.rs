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
//! `<data-dir>/log-anchor.json` keeps what was anchored last and the CA file used, as a hint for
//! `status` and later commands; it is never trusted for verification (the vault is asked).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regent_engine::events::{self, STREAM};
use regent_engine::model::{Change, Outcome, Registration, SealedRef, SecretKind};
use regent_engine::ports::{ProxyConfig, SecretKeeper};
use regent_engine::{State, projections};
use regent_secrets::{MachineKey, SecretsArea};
use regent_store::{Digest32, EventStore, Head, Problem, VerifyReport};
use regent_vault::{ClientOptions, HttpVaultClient, LogHead, LogHeadError, MachineSigner};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::context::Context;
use crate::failure::Failure;

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

/// After a step the vault gets one quick try: the step is done and recorded, and other regent
/// commands wait for this one's store lock (5 s) meanwhile. `regent audit anchor` retries longer.
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

    fn record(&mut self, registration: &Registration, position: u64, result: &Result<LogHead, LogHeadError>) {
        if let Some(ca) = CA_FILE.get() {
            self.ca_file = Some(ca.clone());
        }
        match result {
            Ok(head) => {
                self.anchored = Some(Anchored {
                    vault: registration.vault.clone(),
                    machine_id: registration.machine_id.clone(),
                    position: head.position,
                    hash: head.hash.clone(),
                    anchored_at: head.anchored_at,
                });
                self.last_failure = None;
            }
            Err(e) => {
                self.last_failure = Some(NoteFailure {
                    machine_id: registration.machine_id.clone(),
                    position,
                    reason: e.code().to_string(),
                    at: Utc::now(),
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Who speaks for the machine

/// Opens the secrets area without creating a machine key (a lost key is reported, not replaced).
fn secrets_area(ctx: &Context) -> Result<SecretsArea, LogHeadError> {
    let unreadable = |e: regent_secrets::SecretsError| LogHeadError::Refused {
        code: "credentials_unreadable".into(),
        message: format!("the sealed secrets cannot be opened ({e}); the machine key or the secrets area was lost"),
    };
    let key = MachineKey::load(&ctx.data_dir).map_err(unreadable)?;
    SecretsArea::open_dir(&ctx.data_dir, key).map_err(unreadable)
}

/// The sealed private key of the credentials the machine registered with: the loaded credentials
/// when they are those, else the last load of them in the log (credentials may be loaded again
/// after registering).
fn registration_key(store: &EventStore, state: &State, registration: &Registration) -> Option<SealedRef> {
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

fn proxy_config(state: &State, area: &SecretsArea) -> Result<Option<ProxyConfig>, LogHeadError> {
    let Some(proxy) = &state.proxy else { return Ok(None) };
    let credentials = match (&proxy.username, &proxy.password) {
        (Some(user), Some(sealed)) => {
            let unreadable = |detail: String| LogHeadError::Refused {
                code: "invalid_proxy".into(),
                message: format!("the proxy password cannot be opened ({detail}); set the proxy again"),
            };
            let bytes = SecretKeeper::open(area, SecretKind::ProxyPassword, sealed).map_err(unreadable)?;
            let password = String::from_utf8(bytes.to_vec()).map_err(|_| unreadable("it is not text".into()))?;
            Some((user.clone(), SecretString::from(password)))
        }
        _ => None,
    };
    Ok(Some(ProxyConfig { host: proxy.host.clone(), port: proxy.port, credentials }))
}

fn signer(
    store: &EventStore,
    area: &SecretsArea,
    state: &State,
    registration: &Registration,
    endpoint: Option<&str>,
) -> Result<MachineSigner, LogHeadError> {
    let lost = |detail: String| LogHeadError::Refused {
        code: "credentials_unreadable".into(),
        message: format!(
            "the private key of the credentials this machine registered with cannot be used ({detail}); \
             only that key speaks for machine {} at the vault",
            registration.machine_id
        ),
    };
    let sealed = registration_key(store, state, registration).ok_or_else(|| lost("it is not in the log".into()))?;
    let private_key = SecretKeeper::open(area, SecretKind::CredentialsPrivateKey, &sealed).map_err(lost)?;
    Ok(MachineSigner {
        endpoint: endpoint.unwrap_or(&registration.endpoint).to_string(),
        vault: registration.vault.clone(),
        machine_id: registration.machine_id.clone(),
        thumbprint: registration.thumbprint.clone(),
        private_key,
        proxy: proxy_config(state, area)?,
    })
}

fn client(options: ClientOptions) -> Result<HttpVaultClient, LogHeadError> {
    HttpVaultClient::new(options).map_err(|e| LogHeadError::Failed {
        reason: regent_engine::Reason::VaultUnreachable,
        detail: format!("{e}; pass a readable CA certificate with --ca-file"),
    })
}

/// The hash this log holds at a position, for a report to prove it extends the anchored head.
fn hash_at(store: &EventStore) -> impl Fn(u64) -> Option<String> + '_ {
    |position| store.hash_at(position).ok().flatten().map(|hash| hash.to_hex())
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
    let result = signer(store, area, state, registration, None).and_then(|signer| {
        client(after_step_options(note.ca_file()))?.report_log_head(
            &signer,
            head.position,
            &head.hash.to_hex(),
            &hash_at(store),
        )
    });
    note.record(registration, head.position, &result);
    note.save(&ctx.data_dir);
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
    let store = ctx.open_store()?;
    let (state, head, registration) = registered(&store, "to send its log head to")?;
    let mut note = AnchorNote::load(&ctx.data_dir);
    // The store stays open: the head sent is the head of the log until the vault answers.
    let result = secrets_area(ctx)
        .and_then(|area| signer(&store, &area, &state, &registration, endpoint.as_deref()))
        .and_then(|signer| {
            let options = ClientOptions { ca_file: note.ca_file(), ..ClientOptions::default() };
            client(options)?.report_log_head(&signer, head.position, &head.hash.to_hex(), &hash_at(&store))
        });
    drop(store);
    note.record(&registration, head.position, &result);
    note.save(&ctx.data_dir);
    match result {
        Ok(anchor) => {
            if ctx.json {
                println!(
                    "{}",
                    json!({
                        "anchored": true, "vault": registration.vault, "machine_id": registration.machine_id,
                        "position": head.position, "hash": head.hash, "anchor": anchor,
                    })
                );
            } else {
                println!(
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

pub fn verify_against_vault(ctx: &Context, endpoint: Option<String>, ca_file: Option<PathBuf>) -> Result<u8, Failure> {
    crate::check_no_credentials(None, endpoint.as_deref())?;
    use_ca_file(ca_file.as_deref());
    let mut note = AnchorNote::load(&ctx.data_dir);
    // Read who the machine is, then let go of the store while the vault is asked.
    let (signer, registration) = {
        let store = ctx.open_store()?;
        let (state, _, registration) = registered(&store, "whose anchor to check against")?;
        let signer = secrets_area(ctx)
            .and_then(|area| signer(&store, &area, &state, &registration, endpoint.as_deref()))
            .map_err(|e| {
                Failure::refused(format!(
                    "{}: cannot ask vault {} for the anchored head: {e}",
                    e.code(),
                    registration.vault
                ))
            })?;
        (signer, registration)
    };
    let options = ClientOptions { ca_file: note.ca_file(), ..ClientOptions::default() };
    let fetched = client(options).and_then(|client| client.fetch_log_head(&signer));
    let anchor = match fetched {
        Ok(Some(anchor)) => anchor,
        Ok(None) => {
            return Err(Failure::refused(format!(
                "log_head_not_anchored: vault {} holds no log head for machine {} yet; run `regent audit anchor`, then verify again",
                registration.vault, registration.machine_id
            )));
        }
        Err(e) => {
            return Err(Failure::refused(format!(
                "{}: cannot read the anchored log head from vault {}: {e}; retry once the vault is reachable (--endpoint URL if it moved)",
                e.code(),
                registration.vault
            )));
        }
    };
    let anchor_hash = Digest32::from_hex(&anchor.hash).ok_or_else(|| {
        Failure::refused(format!(
            "vault_error: vault {} answered a malformed hash; check the endpoint",
            registration.vault
        ))
    })?;
    let anchor_head = Head { position: anchor.position, hash: anchor_hash };

    let report = ctx.open_store()?.verify(Some(anchor_head))?;
    let (comparison, range) = compare(&report, anchor_head);
    let head = report.verified_head;
    let not_yet = (comparison == Comparison::Match && head.position > anchor.position)
        .then(|| Range { from: anchor.position + 1, to: head.position });
    if comparison == Comparison::Match && head.position >= anchor.position {
        note.anchored = Some(Anchored {
            vault: registration.vault.clone(),
            machine_id: registration.machine_id.clone(),
            position: anchor.position,
            hash: anchor.hash.clone(),
            anchored_at: anchor.anchored_at,
        });
        note.save(&ctx.data_dir);
    }

    if ctx.json {
        let mut value = serde_json::to_value(&report).map_err(|e| Failure::store(e.to_string()))?;
        value["against_vault"] = json!({
            "outcome": comparison,
            "vault": registration.vault,
            "machine_id": registration.machine_id,
            "anchor": anchor,
            "missing": if comparison == Comparison::TailCut { json!(range) } else { json!(null) },
            "mismatch": if comparison == Comparison::Altered { json!(range) } else { json!(null) },
            "not_yet_anchored": not_yet,
        });
        println!("{value}");
    } else {
        crate::views::print_report(&report, false);
        let at = anchor.anchored_at.format("%Y-%m-%d %H:%M:%S UTC");
        match comparison {
            Comparison::Match => {
                println!("vault anchor at {} matches (vault {}, anchored {at})", anchor.position, registration.vault);
                if let Some(r) = not_yet {
                    println!("records {}-{} are not yet anchored (run `regent audit anchor`)", r.from, r.to);
                }
            }
            Comparison::TailCut => {
                println!("vault anchor at {} (anchored {at}): this log does not reach it", anchor.position)
            }
            Comparison::Altered => {
                println!("vault anchor at {} (anchored {at}): another record there", anchor.position)
            }
            Comparison::ChainBroken => {
                println!("vault anchor at {} (anchored {at}); the log fails before it", anchor.position)
            }
        }
    }
    // When this log matches, refused reports are the only sign that another copy of it spoke; when
    // it does not, the failure line says more.
    if let (Comparison::Match, Some(refusal)) = (comparison, &anchor.last_refusal) {
        eprintln!(
            "warning: vault {} refused {} log head report(s) for this machine, the last at {} ({} for position {}): another copy of this log reported heads",
            registration.vault,
            anchor.refusals,
            refusal.refused_at.format("%Y-%m-%d %H:%M:%S UTC"),
            refusal.error,
            refusal.position
        );
    }
    let vault = &registration.vault;
    match (comparison, range) {
        (Comparison::Match, _) => Ok(0),
        (Comparison::TailCut, Some(r)) => Err(Failure::refused(format!(
            "log_tail_cut: vault {vault} anchored this log at position {}, but it ends at {}: records {}-{} are missing (cut off, or an older copy was restored); restore them from an export or backup and find out who removed them",
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
    }
}

/// `status`: how far the vault's anchor is behind the log, from the local note (a hint).
pub fn status_json(ctx: &Context, state: &State, head: Head) -> serde_json::Value {
    let Some(registration) = &state.registration else { return serde_json::Value::Null };
    let note = AnchorNote::load(&ctx.data_dir);
    let anchored = note.anchored.filter(|a| a.machine_id == registration.machine_id);
    let failure = note.last_failure.filter(|f| f.machine_id == registration.machine_id);
    json!({
        "position": anchored.as_ref().map(|a| a.position),
        "anchored_at": anchored.as_ref().map(|a| a.anchored_at),
        "behind": anchored.as_ref().map_or(head.position, |a| head.position.saturating_sub(a.position)),
        "last_failure": failure.map(|f| json!({"position": f.position, "reason": f.reason, "at": f.at})),
    })
}

/// `status`: the human line, or nothing when not registered.
pub fn status_line(ctx: &Context, state: &State, head: Head) -> Option<String> {
    let registration = state.registration.as_ref()?;
    let note = AnchorNote::load(&ctx.data_dir);
    let anchored = note.anchored.filter(|a| a.machine_id == registration.machine_id);
    let failure = note.last_failure.filter(|f| f.machine_id == registration.machine_id);
    if note.quickstart_machine.as_deref() == Some(registration.machine_id.as_str()) {
        return Some("not kept: quickstart's vault runs only while `regent quickstart` does".into());
    }
    let mut line = match &anchored {
        None => "not anchored at the vault yet (`regent audit anchor`)".to_string(),
        Some(a) if a.position == head.position => format!("{} at vault {} (up to date)", a.position, a.vault),
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
    if let Some(f) = failure
        && anchored.as_ref().is_none_or(|a| f.position > a.position)
    {
        line.push_str(&format!("; the last report failed: {}", f.reason));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regent_store::ChainFailure;

    fn report(failure: Option<ChainFailure>, position: u64) -> VerifyReport {
        VerifyReport { records: position, verified_head: Head { position, hash: Digest32([1; 32]) }, failure }
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
