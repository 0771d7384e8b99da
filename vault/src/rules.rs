//! The vault's rules, pure: each decision takes the facts it needs (a slice of the state folded
//! from the log, read by the storage inside its transaction), the request and the time, and returns
//! the events to record and the answer, or a refusal that records nothing. No I/O, no clock, no
//! randomness: the HTTP layer authenticates and decodes, the storage loads the facts, appends the
//! events and updates its projections in one transaction, and a decision can be run again on
//! fresher facts when that transaction has to be retried.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use regent_credentials::VaultIdentity;
use regent_store::{Actor, ChainWalker, Digest32, Head, Problem};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::events::{
    CredentialsIssued, LogHeadAnchored, LogHeadRefused, LogRecordsMirrored, MachineRegistered, MachineRemoved,
    PinCheckFailed, PinCheckRecord, PinIssued, PinUsed, UnregistrationRecord, VaultCreated, VaultEvent,
};
use crate::protocol::{self, Anchor, ErrorCode, MachineInfo, PinValid, Reason, Registered, Unregistered, VaultInfo};
use crate::state::{
    AnchorHistory, HeldAnchor, IssuedCert, MirroredHead, PinGuard, PinOutcome, PinRecord, RegistrationKey,
};

/// An expired PIN is kept this long to tell "expired" from "wrong"; then it is forgotten.
pub(crate) const PIN_MEMORY: Duration = Duration::hours(1);

/// How long a nonce is remembered after it was seen: a request older than the clock-skew window is
/// refused by its timestamp anyway, so a nonce needs keeping only a little longer than the window is wide.
pub(crate) const NONCE_MEMORY: Duration = Duration::seconds(2 * protocol::MAX_CLOCK_SKEW_SECS + 60);

/// What a decision reads: the storage loads exactly this (and locks it, inside a transaction).
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    pub vault: String,
    /// A certificate by thumbprint, whichever vault issued it.
    pub thumbprint: Option<String>,
    /// A machine (live or removed), with its PIN guard and its anchor.
    pub machine: Option<String>,
    /// What a registration's request id was answered with.
    pub registration: Option<String>,
    /// What a PIN check's request id was answered with.
    pub pin_check: Option<String>,
    /// Whether this nonce was seen.
    pub nonce: Option<String>,
    /// The vault's outstanding PINs.
    pub pins: bool,
}

impl Scope {
    pub(crate) fn vault(vault: &str) -> Scope {
        Scope { vault: vault.to_string(), ..Scope::default() }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct VaultFacts {
    pub identity: VaultIdentity,
    pub created_at: DateTime<Utc>,
    /// The newest download's thumbprint: the only certificate a new registration may use.
    pub newest: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct CertFacts {
    /// The vault that issued it.
    pub vault: String,
    pub cert: IssuedCert,
}

#[derive(Clone, Debug)]
pub(crate) struct MachineFacts {
    /// As registered (no log head in it: that is `anchor`).
    pub info: MachineInfo,
    /// Set once removed.
    pub removed_at: Option<DateTime<Utc>>,
    pub guard: PinGuard,
    pub anchor: AnchorHistory,
}

/// A registration's request id that was answered.
#[derive(Clone, Debug)]
pub(crate) struct RegistrationFacts {
    pub key: RegistrationKey,
    pub answer: Registered,
    /// Its machine was removed: the request id is never answered or registered again.
    pub removed: bool,
}

/// A PIN check's request id, answered: bound to the machine and the PIN presented.
#[derive(Clone, Debug)]
pub(crate) struct PinCheckFacts {
    pub machine_id: String,
    /// HMAC of the request id and the PIN under the PIN key (never the PIN).
    pub pin_digest: [u8; 32],
    pub outcome: PinOutcome,
}

/// What the storage found for a [`Scope`]; `None` where there is nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    pub vault: Option<VaultFacts>,
    pub cert: Option<CertFacts>,
    pub machine: Option<MachineFacts>,
    pub registration: Option<RegistrationFacts>,
    pub pin_check: Option<PinCheckFacts>,
    pub nonce_seen: bool,
    /// Outstanding PINs (neither used nor revoked, expired at most [`PIN_MEMORY`] ago).
    pub pins: Vec<(Uuid, PinRecord)>,
}

/// One event to record, with its id when the decision fixes it (a registration's id comes from its
/// request id, so the log itself refuses to hold one request twice).
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub event: VaultEvent,
    pub id: Option<Uuid>,
}

/// What a decision comes to: events to record (all or none), by whom, and the answer, which may
/// itself be a refusal that is recorded (a wrong PIN, a refused log head: evidence).
#[derive(Debug)]
pub(crate) struct Decision<A> {
    pub events: Vec<Planned>,
    pub actor: Actor,
    /// The vault's stream must not exist yet (a vault being created).
    pub new_stream: bool,
    /// Records of a machine's log to keep beside the log, with the events.
    pub mirror: Option<Mirror>,
    pub outcome: Result<A, ApiError>,
}

/// Records of a machine's log a decision keeps (the vault's mirror of it): they chain on from the
/// last one kept, as the decision walked them, and run from `first` on.
#[derive(Clone, Debug)]
pub(crate) struct Mirror {
    pub vault: String,
    pub machine_id: String,
    pub first: u64,
    pub records: Vec<String>,
}

impl<A> Decision<A> {
    fn answer(actor: Actor, answer: A) -> Decision<A> {
        Decision { events: Vec::new(), actor, new_stream: false, mirror: None, outcome: Ok(answer) }
    }

    fn record(actor: Actor, event: VaultEvent, outcome: Result<A, ApiError>) -> Decision<A> {
        Decision { events: vec![Planned { event, id: None }], actor, new_stream: false, mirror: None, outcome }
    }
}

/// Who the service's own writes (registrations, written in groups) are recorded as.
pub(crate) fn service_actor() -> Actor {
    Actor { user: "regent-vault".into(), host: regent_store::host_name() }
}

pub(crate) fn admin_actor(peer: &str) -> Actor {
    Actor { user: "admin".into(), host: peer.to_string() }
}

pub(crate) fn machine_actor(machine_id: &str, peer: &str) -> Actor {
    Actor { user: format!("machine:{machine_id}"), host: peer.to_string() }
}

fn vault_of<'f>(facts: &'f Facts, vault: &str) -> Result<&'f VaultFacts, ApiError> {
    facts.vault.as_ref().ok_or_else(|| ApiError::vault_not_found(vault))
}

fn live_machine_not_found(vault: &str, machine_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::MachineNotFound,
        format!("vault {vault} has no machine {machine_id:?}"),
    )
}

fn machine_removed(vault: &str, machine_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        ErrorCode::MachineRemoved,
        format!("machine {machine_id} was removed from vault {vault}; register this server again"),
    )
    .with_reason(Reason::MachineRemoved)
}

/// The vault as the admin API shows it.
pub(crate) fn vault_info(vault: &VaultFacts, machines: usize) -> VaultInfo {
    VaultInfo {
        name: vault.identity.resource_name.clone(),
        subscription_id: vault.identity.subscription_id.clone(),
        resource_group: vault.identity.resource_group.clone(),
        location: vault.identity.location.clone(),
        resource_id: vault.identity.resource_id,
        created_at: vault.created_at,
        newest_thumbprint: vault.newest.clone(),
        machines,
    }
}

// ---------------------------------------------------------------------------------------------
// The admin's changes

pub(crate) fn create_vault(
    facts: &Facts,
    identity: &VaultIdentity,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Decision<VaultInfo>, ApiError> {
    let name = &identity.resource_name;
    if facts.vault.is_some() {
        return Err(vault_exists(name));
    }
    let event = VaultEvent::VaultCreated(VaultCreated { identity: identity.clone(), created_at: now });
    let info = vault_info(&VaultFacts { identity: identity.clone(), created_at: now, newest: None }, 0);
    let mut decision = Decision::record(actor, event, Ok(info));
    decision.new_stream = true;
    Ok(decision)
}

pub(crate) fn vault_exists(name: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::VaultExists, format!("a vault named {name:?} already exists"))
}

/// A download: recorded as the vault's newest certificate, which supersedes every earlier one for
/// new registrations.
pub(crate) fn issue_credentials(
    facts: &Facts,
    vault: &str,
    issued: &CredentialsIssued,
    actor: Actor,
) -> Result<Decision<()>, ApiError> {
    vault_of(facts, vault)?;
    Ok(Decision::record(actor, VaultEvent::CredentialsIssued(issued.clone()), Ok(())))
}

pub(crate) fn issue_pin(
    facts: &Facts,
    vault: &str,
    issued: &PinIssued,
    actor: Actor,
) -> Result<Decision<()>, ApiError> {
    vault_of(facts, vault)?;
    Ok(Decision::record(actor, VaultEvent::PinIssued(issued.clone()), Ok(())))
}

pub(crate) fn remove_machine(
    facts: &Facts,
    vault: &str,
    machine_id: &str,
    now: DateTime<Utc>,
    actor: Actor,
) -> Result<Decision<MachineInfo>, ApiError> {
    vault_of(facts, vault)?;
    let machine = facts
        .machine
        .as_ref()
        .filter(|m| m.removed_at.is_none())
        .ok_or_else(|| live_machine_not_found(vault, machine_id))?;
    let mut info = machine.info.clone();
    info.log_head = machine.anchor.anchor(machine_id);
    let event = VaultEvent::MachineRemoved(MachineRemoved {
        machine_id: machine_id.to_string(),
        removed_at: now,
        unregistration: None,
    });
    Ok(Decision::record(actor, event, Ok(info)))
}

// ---------------------------------------------------------------------------------------------
// Registration

/// A registration whose signature verified against the certificate this vault issued under its
/// thumbprint ([`registration_certificate`]).
#[derive(Clone, Debug)]
pub(crate) struct Registration {
    pub vault: String,
    pub resource_id: i64,
    pub machine_name: String,
    pub thumbprint: String,
    pub request_id: String,
    pub nonce: String,
    pub peer: String,
}

/// The certificate a registration is verified with: one this vault issued under the thumbprint,
/// for a vault of this resource id (`facts` hold the certificate the request names). Checked before the signature, and again (by [`register`])
/// inside the transaction.
pub(crate) fn registration_certificate(facts: &Facts, vault: &str, resource_id: i64) -> Result<Arc<[u8]>, ApiError> {
    let v = vault_of(facts, vault).map_err(|e| e.with_reason(Reason::CredentialsInvalid))?;
    if v.identity.resource_id != resource_id {
        return Err(ApiError::refused(
            ErrorCode::CredentialsWrongVault,
            format!("the credentials are for another vault with the name {vault} (resource id {resource_id})"),
        ));
    }
    match &facts.cert {
        Some(cert) if cert.vault == vault => Ok(cert.cert.der.clone()),
        Some(cert) => Err(ApiError::refused(
            ErrorCode::CredentialsWrongVault,
            format!("the credentials were downloaded from vault {}, not {vault}", cert.vault),
        )),
        None => Err(ApiError::refused(ErrorCode::CredentialsInvalid, "this vault never issued that certificate")),
    }
}

/// A verified registration: the same answer again for a request id answered before (bound to the
/// certificate and machine name it first came with), else a new machine if the certificate is the
/// vault's newest and within its validity.
pub(crate) fn register(
    facts: &Facts,
    request: &Registration,
    now: DateTime<Utc>,
) -> Result<Decision<Registered>, ApiError> {
    let vault = request.vault.as_str();
    registration_certificate(facts, vault, request.resource_id)?;
    if facts.nonce_seen {
        return Err(api::nonce_replayed());
    }
    let key = RegistrationKey { thumbprint: request.thumbprint.clone(), machine_name: request.machine_name.clone() };
    if let Some(answered) = &facts.registration {
        if answered.key != key {
            return Err(api::registration_conflict(&answered.key, &key));
        }
        if answered.removed {
            return Err(ApiError::new(
                StatusCode::GONE,
                ErrorCode::MachineRemoved,
                format!(
                    "the machine this registration made ({}) was removed from vault {vault}: its request id is not \
                     registered again; start a new registration",
                    answered.answer.machine_id
                ),
            )
            .with_reason(Reason::MachineRemoved));
        }
        return Ok(Decision::answer(service_actor(), answered.answer.clone()));
    }
    let v = vault_of(facts, vault)?;
    if v.newest.as_deref() != Some(request.thumbprint.as_str()) {
        return Err(ApiError::refused(
            ErrorCode::CredentialsSuperseded,
            "a newer credentials file was downloaded from the vault after this one",
        ));
    }
    if let Some(cert) = &facts.cert {
        if now > cert.cert.not_after {
            return Err(ApiError::refused(
                ErrorCode::CredentialsExpired,
                format!(
                    "the certificate's validity ended at {} by the vault's clock",
                    api::seconds(cert.cert.not_after)
                ),
            ));
        }
        if now < cert.cert.not_before {
            return Err(ApiError::refused(
                ErrorCode::CredentialsInvalid,
                format!("the certificate is not valid before {}", api::seconds(cert.cert.not_before)),
            ));
        }
    }
    let machine_id = derived_id("machine-id", vault, request.resource_id, &request.request_id).to_string();
    let event_id = derived_id("machine-registered-event", vault, request.resource_id, &request.request_id);
    let event = VaultEvent::MachineRegistered(MachineRegistered {
        machine_id: machine_id.clone(),
        machine_name: request.machine_name.clone(),
        thumbprint: request.thumbprint.clone(),
        request_id: request.request_id.clone(),
        nonce: request.nonce.clone(),
        registered_at: now,
        peer: request.peer.clone(),
    });
    Ok(Decision {
        events: vec![Planned { event, id: Some(event_id) }],
        actor: service_actor(),
        new_stream: false,
        mirror: None,
        outcome: Ok(Registered { machine_id, vault: vault.to_string(), registered_at: now }),
    })
}

/// A UUID (version 8) derived from the vault (name and resource id) and the request id: a retried
/// request gets the same machine id, and its event the same event id, whatever happened in between.
pub(crate) fn derived_id(purpose: &str, vault: &str, resource_id: i64, request_id: &str) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(b"regent-vault/");
    hasher.update(purpose.as_bytes());
    hasher.update([0]);
    hasher.update(vault.as_bytes());
    hasher.update([0]);
    hasher.update(resource_id.to_be_bytes());
    hasher.update(request_id.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

// ---------------------------------------------------------------------------------------------
// A machine's key

/// A machine's registration certificate, and whether the machine was removed since. Removed
/// machines are found too, so that a request signed by one can be told so once its signature
/// verifies (and only then: nobody else learns that a machine id was removed).
pub(crate) struct MachineKey {
    pub certificate: Arc<[u8]>,
    pub removed: bool,
}

/// The certificate a machine's requests are verified with: the one it registered with, and no
/// other. Its expiry and later downloads do not matter here: they limit who may enroll a machine,
/// while this key is the enrolled machine's identity. Any other certificate of the vault would let
/// every holder of a credentials file speak for every machine. `facts` hold the machine and the
/// certificate of the thumbprint the request names.
pub(crate) fn machine_key(
    facts: &Facts,
    vault: &str,
    machine_id: &str,
    thumbprint: &str,
) -> Result<MachineKey, ApiError> {
    vault_of(facts, vault)?;
    let machine = facts.machine.as_ref().ok_or_else(|| api::machine_not_found(vault, machine_id))?;
    if machine.info.thumbprint != thumbprint {
        return Err(match &facts.cert {
            Some(other) if other.vault != vault => ApiError::refused(
                ErrorCode::CredentialsWrongVault,
                format!("the request was signed with credentials of vault {}, not {vault}", other.vault),
            ),
            _ => ApiError::refused(
                ErrorCode::CredentialsInvalid,
                format!(
                    "machine {machine_id} registered with another certificate; only the key it registered with speaks for it"
                ),
            ),
        });
    }
    let certificate =
        facts.cert.as_ref().filter(|cert| cert.vault == vault).map(|cert| cert.cert.der.clone()).ok_or_else(|| {
            ApiError::refused(ErrorCode::CredentialsInvalid, "this vault never issued that certificate")
        })?;
    Ok(MachineKey { certificate, removed: machine.removed_at.is_some() })
}

/// [`machine_key`] for a request a removed machine may not make at all: its removal is not told.
pub(crate) fn live_machine_certificate(
    facts: &Facts,
    vault: &str,
    machine_id: &str,
    thumbprint: &str,
) -> Result<Arc<[u8]>, ApiError> {
    let key = machine_key(facts, vault, machine_id, thumbprint)?;
    if key.removed {
        return Err(api::machine_not_found(vault, machine_id));
    }
    Ok(key.certificate)
}

/// A live machine in the facts, refused as removed otherwise (it was removed while its request
/// waited for its turn).
fn live_machine<'f>(facts: &'f Facts, vault: &str, machine_id: &str) -> Result<&'f MachineFacts, ApiError> {
    match &facts.machine {
        Some(machine) if machine.removed_at.is_none() => Ok(machine),
        Some(_) => Err(machine_removed(vault, machine_id)),
        None => Err(api::machine_not_found(vault, machine_id)),
    }
}

// ---------------------------------------------------------------------------------------------
// PIN checks

/// A PIN check whose signature verified against the machine's own key.
#[derive(Clone, Debug)]
pub(crate) struct PinCheck {
    pub vault: String,
    pub machine_id: String,
    pub request_id: String,
    pub nonce: String,
    pub peer: String,
    /// [`crate::service`]'s HMAC of the request id and the PIN under the PIN key.
    pub check_digest: [u8; 32],
}

/// A PIN check, counted per machine: the [`protocol::MAX_PIN_FAILURES`]th wrong PIN in a row locks
/// that machine's checks for [`protocol::PIN_LOCKOUT_SECS`]. No guess ever revokes a PIN.
/// `matches(pin_id, digest)` tells whether the PIN presented is the outstanding one recorded
/// under that id and digest (the caller holds the PIN and the key).
pub(crate) fn check_pin(
    facts: &Facts,
    check: &PinCheck,
    matches: &dyn Fn(&Uuid, &[u8; 32]) -> bool,
    now: DateTime<Utc>,
) -> Result<Decision<PinValid>, ApiError> {
    let (vault, machine_id) = (check.vault.as_str(), check.machine_id.as_str());
    vault_of(facts, vault)?;
    if facts.nonce_seen {
        return Err(api::nonce_replayed());
    }
    let machine = live_machine(facts, vault, machine_id)?;
    let actor = machine_actor(machine_id, &check.peer);
    let guard = machine.guard;
    let locked = |now| guard.locked_until.filter(|until| now < *until);
    if let Some(answered) = &facts.pin_check {
        // Bound to its machine and PIN: the same request id with others is not a retry.
        if answered.machine_id != machine_id || !bool::from(answered.pin_digest.ct_eq(&check.check_digest)) {
            return Err(api::request_id_conflict(
                "this PIN check's request id was first sent by another machine or with another PIN; \
                 a new check needs a new request id",
            ));
        }
        return match answered.outcome {
            PinOutcome::Valid(issued_at) => Ok(Decision::answer(actor, PinValid { issued_at })),
            PinOutcome::Wrong => Err(match locked(now) {
                Some(until) => api::pin_checks_locked(until, now),
                None => api::pin_wrong(),
            }),
        };
    }
    if let Some(until) = locked(now) {
        return Err(api::pin_checks_locked(until, now));
    }
    let record = PinCheckRecord {
        request_id: check.request_id.clone(),
        pin_digest: hex::encode(check.check_digest),
        nonce: check.nonce.clone(),
        peer: check.peer.clone(),
    };
    // Compare against every outstanding PIN (each comparison is constant-time in `matches`).
    let matched = facts
        .pins
        .iter()
        .filter(|(_, pin)| now - pin.expires_at <= PIN_MEMORY)
        .find(|(id, pin)| matches(id, &pin.digest));
    match matched {
        Some((_, pin)) if now > pin.expires_at => Err(ApiError::refused(
            ErrorCode::SecurityPinInvalid,
            format!("the security PIN expired at {}; ask for a new one", api::seconds(pin.expires_at)),
        )),
        Some((pin_id, pin)) => {
            let event = VaultEvent::PinUsed(PinUsed {
                pin_id: *pin_id,
                machine_id: machine_id.to_string(),
                used_at: now,
                issued_at: Some(pin.issued_at),
                check: Some(record),
            });
            Ok(Decision::record(actor, event, Ok(PinValid { issued_at: pin.issued_at })))
        }
        None => {
            let locks = guard.wrong_in_row.saturating_add(1) >= protocol::MAX_PIN_FAILURES;
            let locks_until = locks.then(|| now + Duration::seconds(protocol::PIN_LOCKOUT_SECS));
            let event = VaultEvent::PinCheckFailed(PinCheckFailed {
                machine_id: machine_id.to_string(),
                check: record,
                failed_at: now,
                locked_until: locks_until,
            });
            // Counted before answering: a restart (or another process) must not forget a guess.
            let refusal = match locks_until {
                Some(until) => api::pin_checks_locked(until, now),
                None => api::pin_wrong(),
            };
            Ok(Decision::record(actor, event, Err(refusal)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Log heads

/// A log-head report whose signature verified against the machine's own key.
#[derive(Clone, Debug)]
pub(crate) struct HeadReport {
    pub vault: String,
    pub machine_id: String,
    pub reported: Head,
    /// As sent (lowercase hex).
    pub hash: String,
    pub records: Vec<String>,
    /// [`protocol::records_digest`] of the records, when there are any.
    pub records_sha256: Option<String>,
    pub nonce: String,
    pub peer: String,
}

/// What the records of a report come to, walked from the last record the vault keeps.
enum ProofWalk {
    /// They lead from the last record kept to the reported head, through the anchored one.
    Extends,
    /// They do not start right after the last record kept (none sent, or sent against an older
    /// answer).
    StartsElsewhere,
    /// The first one does not follow the last record kept, or the record at the anchored position
    /// is another: the agent's log holds another history than the one the vault saw.
    Forked(String),
    /// They follow on but do not chain up to the reported head.
    Broken(String),
    /// One is not a record at all.
    Malformed(String),
}

/// Walks a report's records from the last record kept (`from`, position 0 and the zero hash before
/// any) with the same walker the agent's own verify uses: each must be the next position, name the
/// hash before it, and hash to its stored hash; the record at the anchored position must be the
/// anchored head; the last must be the reported head. The vault computes every hash itself:
/// nothing the agent says about its log is taken on its word.
fn walk_proof(
    from: Head,
    anchored: Option<&HeldAnchor>,
    records: &[String],
    reported: Head,
) -> Result<ProofWalk, ApiError> {
    if records.is_empty() {
        return Ok(ProofWalk::StartsElsewhere);
    }
    let anchored = match anchored {
        Some(held) if held.position > from.position => Some((held.position, hex_digest(&held.hash)?)),
        _ => None,
    };
    let mut walker = ChainWalker::resume(from);
    for (index, record) in records.iter().enumerate() {
        match walker.push(None, record.as_bytes()) {
            Ok(hash) => {
                if let Some((position, held)) = anchored
                    && walker.head().position == position
                    && hash != held
                {
                    return Ok(ProofWalk::Forked(format!(
                        "record {position} hashes to {}…, not to the anchored head's hash {}…",
                        &hash.to_hex()[..16],
                        &held.to_hex()[..16]
                    )));
                }
            }
            Err(failure) => {
                return Ok(match (index, &failure.problem) {
                    (_, Problem::Malformed { .. }) => ProofWalk::Malformed(failure.to_string()),
                    (0, Problem::Gap { .. } | Problem::PositionMismatch { .. }) => ProofWalk::StartsElsewhere,
                    (0, Problem::BrokenLink { .. }) if from.position > 0 => ProofWalk::Forked(failure.to_string()),
                    _ => ProofWalk::Broken(failure.to_string()),
                });
            }
        }
    }
    let end = walker.head();
    Ok(if end == reported {
        ProofWalk::Extends
    } else if end.position == reported.position {
        ProofWalk::Broken(format!(
            "record {}: it hashes to {}…, not to the reported head's hash {}…",
            end.position,
            &end.hash.to_hex()[..16],
            &reported.hash.to_hex()[..16]
        ))
    } else {
        ProofWalk::Broken(format!(
            "the records end at position {}, not at the reported head {}",
            end.position, reported.position
        ))
    })
}

fn hex_digest(hash: &str) -> Result<Digest32, ApiError> {
    Digest32::from_hex(hash).ok_or_else(|| ApiError::internal("a kept head's hash cannot be read; restart the service"))
}

/// A report. Its records must run on from the last record the vault keeps of the machine's log
/// (from position 1 at first: no head is taken on trust) and lead, through the anchored head, to
/// the reported one: then they are kept, and the head is anchored when it is past the anchored one
/// (or kept without moving the anchor, for a machine catching up on records from before the vault
/// kept them). The same head again gets the same answer. A head that goes backwards or conflicts,
/// or records that do not chain, are refused, and the refusal recorded as evidence (unless it
/// repeats the last refusal).
pub(crate) fn report_head(
    facts: &Facts,
    report: &HeadReport,
    now: DateTime<Utc>,
) -> Result<Decision<Anchor>, ApiError> {
    let (vault, machine_id) = (report.vault.as_str(), report.machine_id.as_str());
    vault_of(facts, vault)?;
    if facts.nonce_seen {
        return Err(api::nonce_replayed());
    }
    let machine = match &facts.machine {
        Some(machine) if machine.removed_at.is_none() => machine,
        _ => return Err(api::machine_not_found(vault, machine_id)),
    };
    let actor = machine_actor(machine_id, &report.peer);
    let history = &machine.anchor;
    let position = report.reported.position;
    // The anchored head is a record the vault keeps once it keeps them that far: another hash at the
    // same position is its own record altered (its database edited). Walking on from the kept
    // records would accept the report and overwrite the evidence.
    if let (Some(held), Some(kept)) = (&history.head, &history.mirrored)
        && held.position == kept.position
        && held.hash != kept.hash
    {
        tracing::error!(vault, machine_id, position = held.position, "the anchored head is not the record kept there");
        return Err(ApiError::internal(format!(
            "the vault's record of machine {machine_id} does not hold: its anchored head {} is {}, the record it keeps \
             there {}: its database was edited; tell whoever runs the vault",
            held.position,
            held.hash.chars().take(16).collect::<String>(),
            kept.hash.chars().take(16).collect::<String>()
        )));
    }
    let mirrored = match &history.mirrored {
        Some(kept) => Head { position: kept.position, hash: hex_digest(&kept.hash)? },
        None => Head { position: 0, hash: Digest32::GENESIS },
    };
    // The report walked: its records kept (`keep`), or, for an agent older than the keeping, only
    // its head anchored.
    // The head, logged as a leaf of the transparency log (its index is the storage's to give).
    let logged = |mirrored_from: Option<u64>| {
        VaultEvent::LogHeadAnchored(LogHeadAnchored {
            machine_id: machine_id.to_string(),
            position,
            hash: report.hash.clone(),
            nonce: report.nonce.clone(),
            anchored_at: now,
            peer: report.peer.clone(),
            mirrored_from,
            logged: true,
            previous_leaf: history.leaf,
        })
    };
    let accept = |keep: bool| -> Result<Decision<Anchor>, ApiError> {
        let mut after = history.clone();
        let mirrored_from = mirrored.position + 1;
        if keep {
            after.mirrored = Some(MirroredHead { position, hash: report.hash.clone() });
        }
        let event = match &history.head {
            Some(held) if keep && position <= held.position => VaultEvent::LogRecordsMirrored(LogRecordsMirrored {
                machine_id: machine_id.to_string(),
                mirrored_from,
                position,
                hash: report.hash.clone(),
                nonce: report.nonce.clone(),
                mirrored_at: now,
                peer: report.peer.clone(),
            }),
            _ => {
                after.head = Some(HeldAnchor { position, hash: report.hash.clone(), anchored_at: now });
                logged(keep.then_some(mirrored_from))
            }
        };
        let answer = after.anchor(machine_id).ok_or_else(|| ApiError::internal("the log head cannot be anchored"))?;
        let mut decision = Decision::record(actor.clone(), event, Ok(answer));
        decision.mirror = keep.then(|| Mirror {
            vault: vault.to_string(),
            machine_id: machine_id.to_string(),
            first: mirrored_from,
            records: report.records.clone(),
        });
        Ok(decision)
    };
    let nothing_held = HeldAnchor { position: 0, hash: Digest32::GENESIS.to_hex(), anchored_at: now };
    let refuse = |code: ErrorCode, detail: Option<String>| -> Result<Decision<Anchor>, ApiError> {
        let held = history.head.as_ref().unwrap_or(&nothing_held);
        let again = history.last_refusal.as_ref().is_some_and(|last| {
            last.error == code
                && last.position == position
                && last.hash == report.hash
                && history.last_refused_records == report.records_sha256
        });
        let refusal = head_refusal(&code, detail.as_deref(), held, position);
        if again {
            // The same refused head as the last refusal: a retry adds no evidence.
            return Err(refusal);
        }
        let event = VaultEvent::LogHeadRefused(LogHeadRefused {
            machine_id: machine_id.to_string(),
            error: code,
            position,
            hash: report.hash.clone(),
            records: report.records.len() as u64,
            records_sha256: report.records_sha256.clone(),
            detail,
            anchored_position: held.position,
            anchored_hash: held.hash.clone(),
            nonce: report.nonce.clone(),
            refused_at: now,
            peer: report.peer.clone(),
        });
        // Recorded before answering: the refusal is the evidence, it must not be lost.
        Ok(Decision::record(actor.clone(), event, Err(refusal)))
    };
    let base_required = || {
        let next = mirrored.position + 1;
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::LogHeadBaseRequired,
            match &history.head {
                Some(held) => format!(
                    "the vault anchored head {} for this machine and keeps its records up to {}: a report \
                     must carry the records from position {next} on, as the agent's log holds them; read the \
                     anchor and report again",
                    held.position, mirrored.position
                ),
                None => "the vault keeps every record of a machine's log: its first report carries them from \
                         position 1 on, as the agent's log holds them"
                    .to_string(),
            },
        )
    };
    // What a walk comes to; `elsewhere` when the records do not start where it began.
    let walked = |walk: ProofWalk, keep: bool, elsewhere: &dyn Fn() -> Result<Decision<Anchor>, ApiError>| match walk {
        ProofWalk::Extends => accept(keep),
        ProofWalk::StartsElsewhere => elsewhere(),
        ProofWalk::Forked(detail) => refuse(ErrorCode::LogHeadConflict, Some(detail)),
        ProofWalk::Broken(detail) => refuse(ErrorCode::LogHeadProofInvalid, Some(detail)),
        ProofWalk::Malformed(detail) => Err(api::proof_malformed(format!("the records sent: {detail}"))),
    };
    // An agent older than the vault's keeping of records sends those after the anchor, not after
    // the last record kept: walked from the anchor, its head is anchored (never on trust), and its
    // records are not kept, since they do not follow on from the last one kept; a newer agent
    // catches up on them later.
    let older_agent = |held: Option<&HeldAnchor>| -> Result<Decision<Anchor>, ApiError> {
        let Some(held) = held.filter(|held| held.position > mirrored.position && position > held.position) else {
            return Err(base_required());
        };
        let from = Head { position: held.position, hash: hex_digest(&held.hash)? };
        walked(walk_proof(from, None, &report.records, report.reported)?, false, &|| Err(base_required()))
    };
    let held = history.head.as_ref();
    // The head the vault holds, again: nothing new to keep.
    if let Some(held) = held
        && position == held.position
        && report.hash == held.hash
        && (report.records.is_empty() || mirrored.position >= position)
    {
        if history.leaf.is_none() {
            // Anchored before the vault kept its tree: the head is logged now, the anchor unmoved.
            let answer = history.anchor(machine_id).ok_or_else(|| ApiError::internal("the log head cannot be read"))?;
            return Ok(Decision::record(actor.clone(), logged(None), Ok(answer)));
        }
        return history
            .anchor(machine_id)
            .map(|head| Decision::answer(actor.clone(), head))
            .ok_or_else(|| ApiError::internal("the log head cannot be read"));
    }
    match held {
        // A bare head behind or at the anchored position: evidence, as it always was.
        Some(held) if report.records.is_empty() && position == held.position => {
            refuse(ErrorCode::LogHeadConflict, None)
        }
        Some(held) if report.records.is_empty() && position < held.position => {
            refuse(ErrorCode::LogHeadRegressed, None)
        }
        // Records behind what is kept, or none where some are needed.
        _ if report.records.is_empty() || position <= mirrored.position => Err(base_required()),
        _ => walked(walk_proof(mirrored, held, &report.records, report.reported)?, true, &|| older_agent(held)),
    }
}

fn head_refusal(code: &ErrorCode, detail: Option<&str>, held: &HeldAnchor, position: u64) -> ApiError {
    let held_position = held.position;
    let shown = format!("{held_position}:{}…", held.hash.chars().take(16).collect::<String>());
    let message = match code {
        ErrorCode::LogHeadConflict => format!(
            "the vault anchored head {shown} for this machine, and the agent's log holds another record at \
             position {held_position}: it was rewritten, or restored from a copy and changed since"
        ),
        ErrorCode::LogHeadProofInvalid => format!(
            "the vault anchored head {shown} for this machine, and the records sent after it do not lead to \
             head {position} ({}): the agent's log is damaged or was altered; run `regent audit verify`",
            detail.unwrap_or("they do not chain")
        ),
        _ => format!(
            "the vault anchored head {shown} for this machine, and the agent's log ends at {position}: {} \
             missing from it (cut off, or an older copy restored)",
            if position + 1 == held_position {
                format!("record {held_position} is")
            } else {
                format!("records {}-{held_position} are", position + 1)
            }
        ),
    };
    ApiError::new(StatusCode::CONFLICT, code.clone(), message)
}

/// Reading a machine's anchor back (signed): what the vault holds, or that it holds nothing yet.
pub(crate) fn read_head(
    facts: &Facts,
    vault: &str,
    machine_id: &str,
    peer: &str,
) -> Result<Decision<Anchor>, ApiError> {
    vault_of(facts, vault)?;
    if facts.nonce_seen {
        return Err(api::nonce_replayed());
    }
    let machine = facts.machine.as_ref().ok_or_else(|| api::machine_not_found(vault, machine_id))?;
    let anchor = machine.anchor.anchor(machine_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::LogHeadNotFound,
            format!("machine {machine_id} has not anchored a log head at vault {vault} yet"),
        )
    })?;
    Ok(Decision::answer(machine_actor(machine_id, peer), anchor))
}

// ---------------------------------------------------------------------------------------------
// Unregistration

/// A machine's own unregistration whose signature verified against its key.
#[derive(Clone, Debug)]
pub(crate) struct Unregistration {
    pub vault: String,
    pub machine_id: String,
    pub request_id: String,
    pub nonce: String,
    pub peer: String,
}

/// The machine removes itself (recorded), or is answered with its earlier removal (nothing written).
pub(crate) fn unregister(
    facts: &Facts,
    request: &Unregistration,
    now: DateTime<Utc>,
) -> Result<Decision<Unregistered>, ApiError> {
    let (vault, machine_id) = (request.vault.as_str(), request.machine_id.as_str());
    vault_of(facts, vault)?;
    if facts.nonce_seen {
        return Err(api::nonce_replayed());
    }
    let machine = facts.machine.as_ref().ok_or_else(|| api::machine_not_found(vault, machine_id))?;
    let actor = machine_actor(machine_id, &request.peer);
    let answer = |removed_at| Unregistered { machine_id: machine_id.to_string(), vault: vault.to_string(), removed_at };
    if let Some(removed_at) = machine.removed_at {
        return Ok(Decision::answer(actor, answer(removed_at)));
    }
    let event = VaultEvent::MachineRemoved(MachineRemoved {
        machine_id: machine_id.to_string(),
        removed_at: now,
        unregistration: Some(UnregistrationRecord {
            request_id: request.request_id.clone(),
            nonce: request.nonce.clone(),
            peer: request.peer.clone(),
        }),
    });
    Ok(Decision::record(actor, event, Ok(answer(now))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_with_machine(removed_at: Option<DateTime<Utc>>, guard: PinGuard) -> Facts {
        let now = Utc::now();
        Facts {
            vault: Some(VaultFacts {
                identity: VaultIdentity {
                    resource_name: "v".into(),
                    subscription_id: "s".into(),
                    resource_group: "g".into(),
                    location: "l".into(),
                    resource_id: 7,
                    resource_type: "Vaults".into(),
                    provider_namespace: "p".into(),
                },
                created_at: now,
                newest: Some("t".into()),
            }),
            machine: Some(MachineFacts {
                info: MachineInfo {
                    machine_id: "m-1".into(),
                    machine_name: "srv".into(),
                    registered_at: now,
                    thumbprint: "t".into(),
                    log_head: None,
                },
                removed_at,
                guard,
                anchor: AnchorHistory::default(),
            }),
            ..Facts::default()
        }
    }

    /// `count` stored lines of an agent's log, each chained to the one before, and the head after them.
    fn agent_lines(count: u64, tag: &str) -> (Vec<String>, Vec<Head>) {
        let meta = regent_store::BatchMeta {
            recorded_at: Utc::now(),
            actor: Actor { user: "u".into(), host: "h".into() },
            correlation_id: Uuid::now_v7(),
        };
        let (mut lines, mut heads, mut previous) = (Vec::new(), Vec::new(), Digest32::GENESIS);
        for position in 1..=count {
            let event = regent_store::NewEvent::new("Tested", 1, &serde_json::json!({ "tag": tag })).unwrap();
            let (line, hash) = regent_store::encode_record(position, "s", position, &meta, &event, &previous).unwrap();
            lines.push(String::from_utf8(line).unwrap());
            heads.push(Head { position, hash });
            previous = hash;
        }
        (lines, heads)
    }

    fn report(head: Head, records: &[String]) -> HeadReport {
        HeadReport {
            vault: "v".into(),
            machine_id: "m-1".into(),
            reported: head,
            hash: head.hash.to_hex(),
            records: records.to_vec(),
            records_sha256: (!records.is_empty()).then(|| protocol::records_digest(records)),
            nonce: "nonce-0000000000003".into(),
            peer: "127.0.0.1".into(),
        }
    }

    fn with_anchor(anchor: AnchorHistory) -> Facts {
        let mut facts = facts_with_machine(None, PinGuard::default());
        if let Some(machine) = facts.machine.as_mut() {
            machine.anchor = anchor;
        }
        facts
    }

    #[test]
    fn an_anchored_head_that_is_not_the_record_kept_there_stops_every_report() {
        let now = Utc::now();
        let (lines, heads) = agent_lines(4, "a");
        let kept = |at: usize| MirroredHead { position: heads[at].position, hash: heads[at].hash.to_hex() };
        let edited = with_anchor(AnchorHistory {
            head: Some(HeldAnchor { position: 3, hash: "ab".repeat(32), anchored_at: now }),
            mirrored: Some(kept(2)),
            ..AnchorHistory::default()
        });
        for records in [&lines[3..], &[][..]] {
            let stopped = report_head(&edited, &report(heads[3], records), now).unwrap_err();
            assert_eq!(stopped.code, ErrorCode::Internal);
            assert!(stopped.message.contains("its database was edited"), "{}", stopped.message);
        }
        // The same records with the anchor they were kept with walk on as ever.
        let intact = with_anchor(AnchorHistory {
            head: Some(HeldAnchor { position: 3, hash: heads[2].hash.to_hex(), anchored_at: now }),
            mirrored: Some(kept(2)),
            ..AnchorHistory::default()
        });
        assert!(report_head(&intact, &report(heads[3], &lines[3..]), now).is_ok());
    }

    #[test]
    fn a_first_report_carries_the_log_from_record_one_and_what_it_carries_is_kept() {
        let now = Utc::now();
        let (lines, heads) = agent_lines(3, "a");
        let fresh = with_anchor(AnchorHistory::default());
        let bare = report_head(&fresh, &report(heads[2], &[]), now).unwrap_err();
        assert_eq!(bare.code, ErrorCode::LogHeadBaseRequired, "no head is taken on trust");
        let late = report_head(&fresh, &report(heads[2], &lines[1..]), now).unwrap_err();
        assert_eq!(late.code, ErrorCode::LogHeadBaseRequired);

        let decision = report_head(&fresh, &report(heads[2], &lines), now).unwrap();
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::LogHeadAnchored(e), .. }]
            if e.position == 3 && e.mirrored_from == Some(1)));
        let mirror = decision.mirror.unwrap();
        assert_eq!((mirror.first, mirror.records), (1, lines.clone()));
        assert_eq!(decision.outcome.unwrap().mirrored, Some(3));
    }

    #[test]
    fn an_anchor_from_before_records_were_kept_is_caught_up_to_and_checked_where_the_walk_reaches_it() {
        let now = Utc::now();
        let (lines, heads) = agent_lines(4, "b");
        let (other, _) = agent_lines(4, "other");
        let legacy = AnchorHistory {
            head: Some(HeldAnchor { position: 3, hash: heads[2].hash.to_hex(), anchored_at: now }),
            ..AnchorHistory::default()
        };
        let facts = with_anchor(legacy);
        // Behind the anchor: kept, the anchor stays.
        let decision = report_head(&facts, &report(heads[1], &lines[..2]), now).unwrap();
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::LogRecordsMirrored(e), .. }]
            if e.mirrored_from == 1 && e.position == 2));
        let answer = decision.outcome.unwrap();
        assert_eq!((answer.position, answer.mirrored), (3, Some(2)));
        // Through the anchor and past it: anchored.
        let decision = report_head(&facts, &report(heads[3], &lines), now).unwrap();
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::LogHeadAnchored(e), .. }]
            if e.position == 4 && e.mirrored_from == Some(1)));
        // Another history through the anchored position: a conflict, recorded, nothing kept.
        let mut forged = lines.clone();
        forged[2] = other[2].clone();
        let decision = report_head(&facts, &report(heads[3], &forged), now).unwrap();
        assert!(decision.mirror.is_none());
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::LogHeadRefused(_), .. }]));
        assert!(decision.outcome.is_err());
        // An older agent sends only the records after the anchor: walked from it, anchored, not kept.
        let decision = report_head(&facts, &report(heads[3], &lines[3..]), now).unwrap();
        assert!(decision.mirror.is_none());
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::LogHeadAnchored(e), .. }]
            if e.position == 4 && e.mirrored_from.is_none()));
        assert_eq!(decision.outcome.unwrap().mirrored, Some(0), "a newer agent catches up later");
        let mut other_fourth = lines[3..].to_vec();
        other_fourth[0] = other[3].clone();
        let decision = report_head(&facts, &report(heads[3], &other_fourth), now).unwrap();
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::LogHeadRefused(_), .. }]));
        // The anchored head alone, never logged in the tree: logged now (the anchor unmoved), and
        // the answer says how much is kept.
        let decision = report_head(&facts, &report(heads[2], &[]), now).unwrap();
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::LogHeadAnchored(e), .. }]
            if e.position == 3 && e.logged && e.previous_leaf.is_none() && e.mirrored_from.is_none()));
        assert_eq!(decision.outcome.unwrap().mirrored, Some(0));
        // Once logged, the same head again records nothing.
        let mut logged = facts.clone();
        if let Some(machine) = logged.machine.as_mut() {
            machine.anchor.leaf = Some(0);
        }
        let decision = report_head(&logged, &report(heads[2], &[]), now).unwrap();
        assert!(decision.events.is_empty());
    }

    fn unregistration() -> Unregistration {
        Unregistration {
            vault: "v".into(),
            machine_id: "m-1".into(),
            request_id: "u-1".into(),
            nonce: "nonce-0000000000001".into(),
            peer: "127.0.0.1".into(),
        }
    }

    #[test]
    fn an_unregistration_removes_a_live_machine_once_and_answers_a_removed_one_with_its_removal() {
        let now = Utc::now();
        let live = facts_with_machine(None, PinGuard::default());
        let decision = unregister(&live, &unregistration(), now).unwrap();
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::MachineRemoved(e), .. }]
            if e.unregistration.as_ref().is_some_and(|u| u.nonce == "nonce-0000000000001")));
        assert_eq!(decision.outcome.unwrap().removed_at, now);

        let removed_at = now - Duration::seconds(5);
        let removed = facts_with_machine(Some(removed_at), PinGuard::default());
        let again = unregister(&removed, &unregistration(), now).unwrap();
        assert!(again.events.is_empty(), "a removal is answered again, not written again");
        assert_eq!(again.outcome.unwrap().removed_at, removed_at);

        let replayed = Facts { nonce_seen: true, ..live };
        assert_eq!(unregister(&replayed, &unregistration(), now).unwrap_err().code, ErrorCode::NonceReplayed);
        let unknown = Facts { machine: None, ..removed };
        assert_eq!(unregister(&unknown, &unregistration(), now).unwrap_err().code, ErrorCode::MachineNotFound);
    }

    fn check() -> PinCheck {
        PinCheck {
            vault: "v".into(),
            machine_id: "m-1".into(),
            request_id: "c-1".into(),
            nonce: "nonce-0000000000002".into(),
            peer: "127.0.0.1".into(),
            check_digest: [7; 32],
        }
    }

    #[test]
    fn the_last_wrong_pin_of_a_run_locks_the_machine_and_a_lock_refuses_without_counting() {
        let now = Utc::now();
        let never = |_: &Uuid, _: &[u8; 32]| false;
        let guard = PinGuard { wrong_in_row: protocol::MAX_PIN_FAILURES - 1, locked_until: None };
        let decision = check_pin(&facts_with_machine(None, guard), &check(), &never, now).unwrap();
        let until = now + Duration::seconds(protocol::PIN_LOCKOUT_SECS);
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::PinCheckFailed(e), .. }]
            if e.locked_until == Some(until)));
        assert_eq!(decision.outcome.unwrap_err().code, ErrorCode::PinChecksLocked);

        let locked = PinGuard { wrong_in_row: 0, locked_until: Some(until) };
        let refused = check_pin(&facts_with_machine(None, locked), &check(), &never, now).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PinChecksLocked, "refused, and nothing recorded");
        // Once the lock ends, a wrong PIN starts a new run.
        let later = until + Duration::seconds(1);
        let decision = check_pin(&facts_with_machine(None, locked), &check(), &never, later).unwrap();
        assert!(matches!(decision.events.as_slice(), [Planned { event: VaultEvent::PinCheckFailed(e), .. }]
            if e.locked_until.is_none()));
    }

    #[test]
    fn a_good_pin_is_used_up_and_an_expired_one_is_refused_uncounted() {
        let now = Utc::now();
        let pin_id = Uuid::now_v7();
        let mut facts = facts_with_machine(None, PinGuard::default());
        facts.pins =
            vec![(pin_id, PinRecord { digest: [1; 32], issued_at: now, expires_at: now + Duration::minutes(5) })];
        let matches = |id: &Uuid, digest: &[u8; 32]| *id == pin_id && *digest == [1; 32];
        let decision = check_pin(&facts, &check(), &matches, now).unwrap();
        assert!(
            matches!(decision.events.as_slice(), [Planned { event: VaultEvent::PinUsed(e), .. }] if e.pin_id == pin_id)
        );
        let late = now + Duration::minutes(6);
        let expired = check_pin(&facts, &check(), &matches, late).unwrap_err();
        assert_eq!(expired.code, ErrorCode::SecurityPinInvalid);
        assert!(expired.message.contains("expired"), "{}", expired.message);
    }

    #[test]
    fn derived_ids_depend_on_vault_and_request() {
        let a = derived_id("machine-id", "v", 1, "r1");
        assert_eq!(a, derived_id("machine-id", "v", 1, "r1"));
        assert_ne!(a, derived_id("machine-id", "v", 1, "r2"));
        assert_ne!(a, derived_id("machine-id", "w", 1, "r1"));
        assert_ne!(a, derived_id("machine-id", "v", 2, "r1"));
        assert_ne!(a, derived_id("machine-registered-event", "v", 1, "r1"));
        // The separators keep fields apart.
        assert_ne!(derived_id("p", "ab", 1, "c"), derived_id("p", "a", 1, "bc"));
    }
}
