//! What the service records in its own log: one stream per vault (`vault/<name>`), one event per
//! change. Nothing secret is recorded: certificates are public, a PIN is kept only as an HMAC under a
//! key derived from the admin token, and private keys are never kept at all (they leave with the
//! download).

use chrono::{DateTime, Utc};
use regent_credentials::VaultIdentity;
use regent_store::{NewEvent, Record};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::ErrorCode;

/// The schema version of every event kind below.
pub(crate) const SCHEMA: u32 = 1;

pub(crate) fn stream_of(vault: &str) -> String {
    format!("vault/{vault}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VaultCreated {
    pub identity: VaultIdentity,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CredentialsIssued {
    pub thumbprint: String,
    /// Base64 of the DER certificate (public): registrations are verified against it.
    pub certificate: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub file_name: String,
    pub issued_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinIssued {
    pub pin_id: Uuid,
    /// Hex HMAC-SHA256 of the PIN id and the PIN.
    pub digest: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinUsed {
    pub pin_id: Uuid,
    pub machine_id: String,
    pub used_at: DateTime<Utc>,
    /// When the PIN was issued: the answer a retry of the check gets again (absent in older logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// The check that used it (absent in logs written before checks were signed): its retries get
    /// this answer again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<PinCheckRecord>,
}

/// What a PIN check's event keeps of the check: enough to tell its retry (same request id, machine
/// and PIN) from another check under the same request id, and its nonce (a replay stays refused
/// after a restart). Never the PIN and never the signature (which would let the PIN be guessed
/// offline against the public certificate): only an HMAC of the PIN under the service's PIN key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinCheckRecord {
    pub request_id: String,
    /// Hex HMAC-SHA256 under the PIN key of the request id and the PIN presented.
    pub pin_digest: String,
    pub nonce: String,
    pub peer: String,
}

/// An authenticated PIN check with a PIN that matches no outstanding one. Counted per machine:
/// the last of [`crate::protocol::MAX_PIN_FAILURES`] in a row locks the machine's PIN checks
/// until `locked_until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinCheckFailed {
    pub machine_id: String,
    pub check: PinCheckRecord,
    pub failed_at: DateTime<Utc>,
    /// Set on the failure that locks the machine's PIN checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinsRevoked {
    pub pin_ids: Vec<Uuid>,
    pub why: String,
    pub revoked_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MachineRegistered {
    pub machine_id: String,
    pub machine_name: String,
    pub thumbprint: String,
    pub request_id: String,
    pub nonce: String,
    pub registered_at: DateTime<Utc>,
    /// The agent's address as the service saw it. Registrations are written in groups under the
    /// service's own actor, so who asked is recorded here.
    #[serde(default)]
    pub peer: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MachineRemoved {
    pub machine_id: String,
    pub removed_at: DateTime<Utc>,
    /// Set when the machine removed itself (a signed unregistration): its request id and nonce
    /// (a replay stays refused after a restart). Absent for the admin's removals and older logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unregistration: Option<UnregistrationRecord>,
}

/// What the log keeps of a machine's own, signed unregistration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnregistrationRecord {
    pub request_id: String,
    pub nonce: String,
    pub peer: String,
}

/// A machine's log head, accepted: it is at or past every head the machine anchored before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogHeadAnchored {
    pub machine_id: String,
    pub position: u64,
    pub hash: String,
    pub nonce: String,
    pub anchored_at: DateTime<Utc>,
    pub peer: String,
    /// The first position of the records the report carried, which the vault keeps beside its log
    /// (its mirror: `mirrored_from..=position`). Absent when it carried none (the same head again)
    /// and in logs written before the vault kept records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored_from: Option<u64>,
    /// The head is a leaf of the service's transparency log ([`crate::transparency`]): its index is
    /// the number of logged heads before it in the service's log. False in logs written before the
    /// vault kept the tree.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logged: bool,
    /// The index of the same machine's previous leaf, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_leaf: Option<u64>,
}

/// Records of a machine's log behind its anchored head, kept: a machine anchored before the vault
/// kept records catching up (`mirrored_from..=position`, ending at `hash`). The anchor does not move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogRecordsMirrored {
    pub machine_id: String,
    pub mirrored_from: u64,
    pub position: u64,
    pub hash: String,
    pub nonce: String,
    pub mirrored_at: DateTime<Utc>,
    pub peer: String,
}

/// A machine's log head, refused because it went backwards, conflicts with the anchored one, or
/// came with records that do not chain up to it. Kept as evidence: a correctly signed report of
/// such a head means the agent's log was cut, rewritten or damaged. The refused records themselves
/// are not kept (the mirror holds only records that chain), only how many there were and their
/// digest, which the signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogHeadRefused {
    pub machine_id: String,
    /// `log_head_regressed`, `log_head_conflict` or `log_head_proof_invalid` (any text reads back:
    /// an unknown code as [`ErrorCode::Unknown`]).
    pub error: ErrorCode,
    /// What was offered.
    pub position: u64,
    pub hash: String,
    /// The records sent with it: how many, and [`crate::protocol::records_digest`] of them.
    /// (Refusals recorded before records were sent held an `extends` field instead; it is ignored.)
    #[serde(default)]
    pub records: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_sha256: Option<String>,
    /// Where the records failed, in words (the first bad record and what is wrong with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the vault held then (and still holds).
    pub anchored_position: u64,
    pub anchored_hash: String,
    pub nonce: String,
    pub refused_at: DateTime<Utc>,
    pub peer: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VaultEvent {
    VaultCreated(VaultCreated),
    CredentialsIssued(CredentialsIssued),
    PinIssued(PinIssued),
    PinUsed(PinUsed),
    /// Written by builds that revoked every PIN of a vault after wrong guesses; still read.
    PinsRevoked(PinsRevoked),
    PinCheckFailed(PinCheckFailed),
    MachineRegistered(MachineRegistered),
    MachineRemoved(MachineRemoved),
    LogHeadAnchored(LogHeadAnchored),
    LogRecordsMirrored(LogRecordsMirrored),
    LogHeadRefused(LogHeadRefused),
}

impl VaultEvent {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            VaultEvent::VaultCreated(_) => "VaultCreated",
            VaultEvent::CredentialsIssued(_) => "CredentialsIssued",
            VaultEvent::PinIssued(_) => "PinIssued",
            VaultEvent::PinUsed(_) => "PinUsed",
            VaultEvent::PinsRevoked(_) => "PinsRevoked",
            VaultEvent::PinCheckFailed(_) => "PinCheckFailed",
            VaultEvent::MachineRegistered(_) => "MachineRegistered",
            VaultEvent::MachineRemoved(_) => "MachineRemoved",
            VaultEvent::LogHeadAnchored(_) => "LogHeadAnchored",
            VaultEvent::LogRecordsMirrored(_) => "LogRecordsMirrored",
            VaultEvent::LogHeadRefused(_) => "LogHeadRefused",
        }
    }

    /// The event to append, with a fresh id unless the caller fixes one (a registration's id comes
    /// from its request id, so the store itself refuses to write one request twice).
    pub(crate) fn to_new_event(&self, id: Option<Uuid>) -> Result<NewEvent, serde_json::Error> {
        let id = id.unwrap_or_else(Uuid::now_v7);
        let kind = self.kind();
        match self {
            VaultEvent::VaultCreated(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::CredentialsIssued(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::PinIssued(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::PinUsed(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::PinsRevoked(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::PinCheckFailed(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::MachineRegistered(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::MachineRemoved(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::LogHeadAnchored(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::LogRecordsMirrored(e) => NewEvent::with_id(id, kind, SCHEMA, e),
            VaultEvent::LogHeadRefused(e) => NewEvent::with_id(id, kind, SCHEMA, e),
        }
    }

    /// Reads a record of the service's log back. A kind or schema this build does not know is an
    /// error, never a guess.
    pub(crate) fn from_record(record: &Record) -> Result<VaultEvent, String> {
        if record.schema != SCHEMA {
            return Err(format!("{} has schema version {}; this build reads {SCHEMA}", record.kind, record.schema));
        }
        let text = |e: serde_json::Error| format!("{}: {e}", record.kind);
        Ok(match record.kind.as_str() {
            "VaultCreated" => VaultEvent::VaultCreated(record.payload_as().map_err(text)?),
            "CredentialsIssued" => VaultEvent::CredentialsIssued(record.payload_as().map_err(text)?),
            "PinIssued" => VaultEvent::PinIssued(record.payload_as().map_err(text)?),
            "PinUsed" => VaultEvent::PinUsed(record.payload_as().map_err(text)?),
            "PinsRevoked" => VaultEvent::PinsRevoked(record.payload_as().map_err(text)?),
            "PinCheckFailed" => VaultEvent::PinCheckFailed(record.payload_as().map_err(text)?),
            "MachineRegistered" => VaultEvent::MachineRegistered(record.payload_as().map_err(text)?),
            "MachineRemoved" => VaultEvent::MachineRemoved(record.payload_as().map_err(text)?),
            "LogHeadAnchored" => VaultEvent::LogHeadAnchored(record.payload_as().map_err(text)?),
            "LogRecordsMirrored" => VaultEvent::LogRecordsMirrored(record.payload_as().map_err(text)?),
            "LogHeadRefused" => VaultEvent::LogHeadRefused(record.payload_as().map_err(text)?),
            other => return Err(format!("unknown event kind {other:?}")),
        })
    }
}
