//! The vault's wire protocol: JSON over HTTP(S), every path under `/v1`; beside it, at the root,
//! the operational routes a service manager and a monitor call ([`Route::is_operational`]).
//!
//! | method and path | who | body | answer |
//! | --- | --- | --- | --- |
//! | `GET /healthz` | anyone | | `200` [`Liveness`] |
//! | `GET /readyz` | anyone | | `200` [`Readiness`]; `503` [`ErrorBody`] ([`ErrorCode::StoreUnavailable`]) |
//! | `GET /metrics` | anyone | | `200` Prometheus text ([`METRICS_CONTENT_TYPE`]) |
//! | `GET /v1/health` | anyone | | `200` [`Health`] |
//! | `POST /v1/vaults` | admin | [`CreateVault`] | `201` [`VaultInfo`] |
//! | `GET /v1/vaults/{vault}` | admin | | `200` [`VaultInfo`] |
//! | `POST /v1/vaults/{vault}/credentials` | admin | [`DownloadCredentials`] | `200` [`CredentialsFile`] |
//! | `POST /v1/vaults/{vault}/pins` | admin | | `201` [`IssuedPin`] |
//! | `GET /v1/vaults/{vault}/machines` | admin | | `200` [`Machines`] |
//! | `DELETE /v1/vaults/{vault}/machines/{machine_id}` | admin | | `200` [`MachineInfo`] |
//! | `POST /v1/vaults/{vault}/registrations` | agent, signed | [`RegisterBody`] | `200` [`Registered`] |
//! | `POST /v1/vaults/{vault}/pin-checks` | the machine, signed | [`PinCheckBody`] | `200` [`PinValid`] |
//! | `POST /v1/vaults/{vault}/machines/{machine_id}/log-head` | agent, signed | [`HeadReport`] | `200` [`Anchor`] |
//! | `GET /v1/vaults/{vault}/machines/{machine_id}/log-head` | agent, signed headers | | `200` [`Anchor`] |
//! | `POST /v1/vaults/{vault}/machines/{machine_id}/unregistrations` | the machine, signed | [`UnregisterBody`] | `200` [`Unregistered`] |
//! | `GET /v1/log` | admin | | `200` the service's whole log as an export ([`LOG_EXPORT_CONTENT_TYPE`]) |
//! | `GET /v1/vaults/{vault}/machines/{machine_id}/log` | admin | | `200` the records kept of the machine's log, as an export |
//! | `GET /v1/vaults/{vault}/fleet?limit=N&after=CURSOR` | admin | | `200` [`Fleet`] |
//! | `GET /v1/vaults/{vault}/audit?machine=&since=&until=&kind=&actor=&outcome=&limit=&after=` | admin | | `200` [`FleetAudit`] |
//! | `GET /v1/checkpoint` | anyone | | `200` the latest checkpoint, a signed note ([`CHECKPOINT_CONTENT_TYPE`]) |
//! | `GET /v1/vaults/{vault}/machines/{machine_id}/proof?from=N` | admin | | `200` [`LoggedHead`] |
//! | `GET /v1/checkpoint/consistency?from=A&to=B` | anyone | | `200` [`ConsistencyProof`] |
//!
//! The routes are also [`ROUTES`], with who may call each ([`Access`]): the service's router is built
//! from that table and nothing else.
//!
//! Admin calls carry `Authorization: Bearer <token>`. Bodies are `application/json`, at most
//! [`MAX_BODY_BYTES`] ([`MAX_LOG_HEAD_BODY_BYTES`] for a log-head report). Every answer of the service carries the header [`SERVICE_HEADER`], so a client
//! can tell the service's 401 from a proxy's. Every refusal is an [`ErrorBody`] whose `error` is a
//! stable code of this protocol ([`ErrorCode`]) and whose `reason`, when the refusal is one the agent
//! records, is the agent's reason code ([`Reason`]: `credentials_superseded`, `security_pin_invalid`,
//! ...).
//!
//! A registration proves possession of the credentials' private key: the agent signs
//! [`registration_message`] (vault, resource id, machine name, certificate thumbprint, timestamp,
//! nonce, request id) with it, and the service verifies the signature with the certificate it issued
//! under that thumbprint. Its request id is bound to the certificate and machine name it first came
//! with: the same request id with others is [`ErrorCode::RequestIdConflict`], and one whose machine
//! was removed is [`ErrorCode::MachineRemoved`], for ever.
//!
//! A PIN check is signed by the machine ([`pin_check_message`], covering the PIN) with the key it
//! registered with, idempotent by request id, and counted per machine: [`MAX_PIN_FAILURES`] wrong
//! PINs in a row lock that machine's checks for [`PIN_LOCKOUT_SECS`] ([`ErrorCode::PinChecksLocked`]).
//!
//! A registered machine keeps its log head at the vault (an *anchor*): it signs
//! [`log_head_message`] with the private key of the credentials it registered with, and the service
//! verifies it with the certificate of that registration. Reading the anchor back is signed too
//! ([`log_head_read_message`], in the headers [`SIGNATURE_HEADERS`]). A head is never allowed to go
//! backwards or to change at a position already anchored: such a report is refused
//! ([`ErrorCode::LogHeadRegressed`], [`ErrorCode::LogHeadConflict`]) and the refusal is recorded,
//! since it is evidence that the agent's log was cut or rewritten. The vault keeps every record of
//! the machine's log (its *mirror*): a report carries the stored records past the position the vault
//! has mirrored up to ([`Anchor::mirrored`]; from position 1 on a machine's first report: no head is
//! taken on trust), the service walks them from there itself and keeps them (at most
//! [`MAX_PROOF_RECORDS`] records and [`MAX_PROOF_BYTES`] bytes a report; an agent further ahead
//! reports in steps, each resuming where the last stopped). A machine whose head was anchored before
//! the vault kept records (mirrored short of its anchor) catches up the same way: its steps behind
//! the anchor are kept without moving it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{ErrorCode, Reason};

/// The protocol's version, as `GET /v1/health` reports it. 2: PIN checks are signed by the machine
/// and request ids are bound to what they first came with. 3: the vault keeps every record of a
/// machine's log, and a first report carries them from position 1.
pub const PROTOCOL_VERSION: u32 = 4;
/// The path prefix of this version of the protocol.
pub const PREFIX: &str = "/v1";
/// The `Content-Type` of `GET /metrics`: Prometheus' text exposition format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";
/// The `Content-Type` of `GET /v1/log`: JSON Lines, the store's export format (a `regent-log`
/// header naming the head, then each record's stored bytes, one a line), which verifies on its own.
pub const LOG_EXPORT_CONTENT_TYPE: &str = "application/jsonl";
/// Present (value `1`) on every answer of the service.
pub const SERVICE_HEADER: &str = "x-regent-vault";
/// The largest request body the service reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How far a registration's timestamp may be from the service's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// How long a security PIN is good for.
pub const PIN_VALIDITY_SECS: i64 = 300;
/// Default validity of downloaded credentials, as the real portal: 48 hours.
pub const DEFAULT_VALIDITY_SECS: u64 = 48 * 3600;
/// The longest validity a download may ask for.
pub const MAX_VALIDITY_SECS: u64 = 30 * 24 * 3600;
/// A downloaded certificate is valid from this long before the download (clocks drift).
pub const NOT_BEFORE_BACKDATE_SECS: i64 = 600;

/// Who may call a route, and how the call proves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone. Such a route changes nothing.
    Anyone,
    /// `Authorization: Bearer <admin.token>`, checked before the body is read.
    Admin,
    /// Signed with the private key of a credentials file the vault issued (a registration).
    Credentials,
    /// Signed with the private key of the credentials *that machine* registered with, verified
    /// against that registration's certificate only.
    Machine,
}

/// The routes of the service, one per method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteId {
    /// `GET /healthz`: the process is up.
    Healthz,
    /// `GET /readyz`: the service can serve (its log answers and can be written).
    Readyz,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    Health,
    CreateVault,
    GetVault,
    DownloadCredentials,
    IssuePin,
    ListMachines,
    RemoveMachine,
    Register,
    CheckPin,
    ReportLogHead,
    ReadLogHead,
    Unregister,
    /// `GET /v1/log`: the service's own log, exported (the admin's, for an audit or a move).
    ExportLog,
    /// `GET /v1/vaults/{vault}/machines/{machine_id}/log`: the records the vault keeps of a
    /// machine's log, exported as the agent's own export is (it verifies with `regent audit verify`).
    ExportMachineLog,
    /// `GET /v1/vaults/{vault}/fleet`: the vault's machines as their logs make them, a page.
    ListFleet,
    /// `GET /v1/vaults/{vault}/audit`: the events of the vault's machines' logs, filtered, a page.
    FleetAudit,
    /// `GET /v1/checkpoint`: the service's transparency log's latest checkpoint, a C2SP signed note
    /// (`text/plain`), for anyone: it names no machine.
    Checkpoint,
    /// `GET /v1/vaults/{vault}/machines/{machine_id}/proof?from=N`: a machine's latest logged head,
    /// proved under the latest checkpoint ([`LoggedHead`]), with consistency from size N.
    MachineProof,
    /// `GET /v1/checkpoint/consistency?from=A&to=B`: the proof that the tree of A leaves is a prefix
    /// of the tree of B leaves ([`ConsistencyProof`]), for anyone holding both checkpoints: hashes
    /// only, naming no machine.
    CheckpointConsistency,
}

/// The HTTP methods the service answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// One route: what it is, where, and who may call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub id: RouteId,
    pub method: Method,
    /// The path as the router matches it (`{name}` for a segment).
    pub path: &'static str,
    pub access: Access,
}

impl Route {
    /// A route for running the service rather than for its clients (liveness, readiness, metrics):
    /// at the root, outside [`PREFIX`], answering anyone, changing nothing, carrying no name a
    /// request gave. They are not part of the protocol's version.
    pub fn is_operational(&self) -> bool {
        matches!(self.id, RouteId::Healthz | RouteId::Readyz | RouteId::Metrics)
    }
}

/// Every route of the service. The router is built from this table and nothing else, so a route
/// the table does not hold cannot be served, and `tests/routes.rs` attacks each one of them.
pub const ROUTES: [Route; 22] = [
    Route { id: RouteId::Healthz, method: Method::Get, path: "/healthz", access: Access::Anyone },
    Route { id: RouteId::Readyz, method: Method::Get, path: "/readyz", access: Access::Anyone },
    Route { id: RouteId::Metrics, method: Method::Get, path: "/metrics", access: Access::Anyone },
    Route { id: RouteId::Health, method: Method::Get, path: "/v1/health", access: Access::Anyone },
    Route { id: RouteId::CreateVault, method: Method::Post, path: "/v1/vaults", access: Access::Admin },
    Route { id: RouteId::GetVault, method: Method::Get, path: "/v1/vaults/{vault}", access: Access::Admin },
    Route {
        id: RouteId::DownloadCredentials,
        method: Method::Post,
        path: "/v1/vaults/{vault}/credentials",
        access: Access::Admin,
    },
    Route { id: RouteId::IssuePin, method: Method::Post, path: "/v1/vaults/{vault}/pins", access: Access::Admin },
    Route {
        id: RouteId::ListMachines,
        method: Method::Get,
        path: "/v1/vaults/{vault}/machines",
        access: Access::Admin,
    },
    Route {
        id: RouteId::RemoveMachine,
        method: Method::Delete,
        path: "/v1/vaults/{vault}/machines/{machine_id}",
        access: Access::Admin,
    },
    Route {
        id: RouteId::Register,
        method: Method::Post,
        path: "/v1/vaults/{vault}/registrations",
        access: Access::Credentials,
    },
    Route {
        id: RouteId::CheckPin,
        method: Method::Post,
        path: "/v1/vaults/{vault}/pin-checks",
        access: Access::Machine,
    },
    Route {
        id: RouteId::ReportLogHead,
        method: Method::Post,
        path: "/v1/vaults/{vault}/machines/{machine_id}/log-head",
        access: Access::Machine,
    },
    Route {
        id: RouteId::ReadLogHead,
        method: Method::Get,
        path: "/v1/vaults/{vault}/machines/{machine_id}/log-head",
        access: Access::Machine,
    },
    Route {
        id: RouteId::Unregister,
        method: Method::Post,
        path: "/v1/vaults/{vault}/machines/{machine_id}/unregistrations",
        access: Access::Machine,
    },
    Route { id: RouteId::ExportLog, method: Method::Get, path: "/v1/log", access: Access::Admin },
    Route {
        id: RouteId::ExportMachineLog,
        method: Method::Get,
        path: "/v1/vaults/{vault}/machines/{machine_id}/log",
        access: Access::Admin,
    },
    Route { id: RouteId::ListFleet, method: Method::Get, path: "/v1/vaults/{vault}/fleet", access: Access::Admin },
    Route { id: RouteId::FleetAudit, method: Method::Get, path: "/v1/vaults/{vault}/audit", access: Access::Admin },
    Route { id: RouteId::Checkpoint, method: Method::Get, path: "/v1/checkpoint", access: Access::Anyone },
    Route {
        id: RouteId::MachineProof,
        method: Method::Get,
        path: "/v1/vaults/{vault}/machines/{machine_id}/proof",
        access: Access::Admin,
    },
    Route {
        id: RouteId::CheckpointConsistency,
        method: Method::Get,
        path: "/v1/checkpoint/consistency",
        access: Access::Anyone,
    },
];

/// The media type of `GET /v1/checkpoint`: the signed note's text.
pub const CHECKPOINT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Wrong PINs in a row (authenticated, from one machine) that lock that machine's PIN checks.
pub const MAX_PIN_FAILURES: u32 = 5;
/// How long a machine's PIN checks stay locked after its last allowed wrong PIN.
pub const PIN_LOCKOUT_SECS: i64 = 15 * 60;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub service: String,
    pub protocol: u32,
    /// The verifier key of the vault's transparency log (a C2SP verifier key,
    /// `<name>+<key id>+<base64 key>`). Taken from here only on first contact, and recorded as such:
    /// the credentials file carries it otherwise. Absent from an older vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<String>,
}

/// `GET /healthz`: `{"status":"alive"}`, whatever the state of the log (a process that answers is
/// alive; restarting it for a disk problem would not help).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub status: String,
}

/// `GET /readyz` when the service can serve: `{"status":"ready"}`. Not ready is a `503`
/// [`ErrorBody`] under [`ErrorCode::StoreUnavailable`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVault {
    pub name: String,
}

/// A vault as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultInfo {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub resource_id: i64,
    pub created_at: DateTime<Utc>,
    /// The thumbprint of the newest credentials download, the only one a registration may use.
    pub newest_thumbprint: Option<String>,
    pub machines: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadCredentials {
    /// How long the certificate stays valid from now; [`DEFAULT_VALIDITY_SECS`] when absent.
    #[serde(default)]
    pub validity_seconds: Option<u64>,
}

/// A credentials download. `xml` holds the private key: Debug does not print it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsFile {
    pub file_name: String,
    pub xml: String,
    pub thumbprint: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsFile")
            .field("file_name", &self.file_name)
            .field("xml", &"<redacted>")
            .field("thumbprint", &self.thumbprint)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// A security PIN just issued. Debug does not print the PIN.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedPin {
    pub pin: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for IssuedPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedPin")
            .field("pin", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One registered machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub machine_id: String,
    pub machine_name: String,
    pub registered_at: DateTime<Utc>,
    /// The credentials download it registered with.
    pub thumbprint: String,
    /// The head of the machine's log as last anchored (null until it reports one).
    #[serde(default)]
    pub log_head: Option<Anchor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machines {
    pub vault: String,
    pub machines: Vec<MachineInfo>,
}

/// The most machines one page of [`Fleet`] holds, and how many it holds unless asked.
pub const MAX_FLEET_PAGE: usize = 1000;
pub const DEFAULT_FLEET_PAGE: usize = 100;

/// One page of a vault's fleet (`GET /v1/vaults/{vault}/fleet?limit=N&after=CURSOR`): its current
/// machines in registration order, each as the records the vault keeps of its log make it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    pub vault: String,
    pub machines: Vec<FleetMachine>,
    /// Where the next page starts (`after=`), when there is one.
    #[serde(default)]
    pub next: Option<String>,
}

/// A machine of the fleet: what its own log says (built at the vault with the agent's own
/// projections), beside what the vault holds of it. Never a password: a proxy says only whether it
/// authenticates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetMachine {
    pub machine_id: String,
    pub machine_name: String,
    pub registered_at: DateTime<Utc>,
    /// The agent's phase as its log says it (`registered`, ...); null before a record is kept.
    pub phase: Option<String>,
    pub proxy: Option<FleetProxy>,
    pub throttling: Option<FleetThrottling>,
    pub scratch_dir: Option<String>,
    pub passphrase_set_at: Option<DateTime<Utc>>,
    /// The NotAfter of the credentials loaded on the machine.
    pub credentials_expire_at: Option<DateTime<Utc>>,
    pub last_event: Option<FleetEvent>,
    pub anchor: FleetAnchor,
    /// Records the vault's build cannot read (kinds or schemas of a newer agent) are kept and
    /// skipped here: the row shows what this build understands.
    pub agent_newer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetProxy {
    pub host: String,
    pub port: u16,
    /// Whether the proxy takes a user and password (the password itself is never in the log).
    pub authenticates: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetThrottling {
    pub work_days: String,
    pub work_hours: String,
    pub work_bandwidth: String,
    pub non_work_bandwidth: String,
}

/// The last record of a machine's log the vault keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEvent {
    pub position: u64,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// The wizard step and its outcome (`accepted`, `refused`); null for a record this build
    /// cannot read.
    pub step: Option<String>,
    pub outcome: Option<String>,
}

/// What the vault holds of the machine's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetAnchor {
    /// `none` (no head reported yet), `current` (the records kept reach the anchored head),
    /// `catching_up` (anchored before the vault kept records, not caught up yet), `refused` (a
    /// report was refused after the last head accepted: a copy of the log is not the one the
    /// vault saw).
    pub status: String,
    pub position: Option<u64>,
    pub mirrored: u64,
    pub refusals: u64,
    pub last_refusal: Option<AnchorRefusal>,
}

/// The most entries one page of [`FleetAudit`] holds, and how many it holds unless asked.
pub const MAX_AUDIT_PAGE: usize = 1000;
pub const DEFAULT_AUDIT_PAGE: usize = 100;

/// One page of a vault's fleet audit (`GET /v1/vaults/{vault}/audit`): the events of its machines'
/// logs, accepted and refused, oldest first (by the time the agent recorded them, then machine,
/// then position), filtered by `machine`, `since`, `until` (RFC 3339; `until` exclusive), `kind` (a
/// step, an outcome or an event kind, as `regent audit --kind` takes), `actor` (as it is shown,
/// `user@host`), `outcome` (`accepted`, `refused`), at most `limit`, after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetAudit {
    pub vault: String,
    pub entries: Vec<FleetAuditEntry>,
    /// Where the next page starts (`after=`), when there is one.
    #[serde(default)]
    pub next: Option<String>,
}

/// One event of a machine's log, as `regent audit` shows it on that machine (the agent's own audit
/// entry), with the machine it is of. A record this build cannot read has no step or outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetAuditEntry {
    pub machine_id: String,
    pub position: u64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: String,
    pub step: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<Reason>,
    pub summary: String,
    pub correlation_id: String,
    /// The record's stored hash: a page is not a chain, but each entry names the record it shows.
    pub hash: String,
}

/// A registration, signed with the credentials' private key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The same for every retry of one registration: a retry gets the first answer.
    pub request_id: String,
    pub machine_name: String,
    /// The vault's `ResourceId` from the credentials file: a vault re-created under the same name is
    /// another vault.
    pub resource_id: i64,
    /// Lowercase hex SHA-256 of the certificate: which download signs.
    pub thumbprint: String,
    /// Unix seconds at the agent when it signed.
    pub timestamp: i64,
    /// Fresh for every attempt (retries too): a replayed nonce is refused.
    pub nonce: String,
    /// Base64 (standard alphabet) of the signature over [`registration_message`].
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub machine_id: String,
    pub vault: String,
    pub registered_at: DateTime<Utc>,
}

/// A PIN check, signed with the private key of the credentials the machine registered with. Debug
/// prints neither the PIN nor the signature (a signature over the PIN lets whoever holds it test
/// guesses of the PIN offline against the public certificate, so it is as secret as the PIN).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinCheckBody {
    /// The same for every retry of one check: a retry gets the first answer.
    pub request_id: String,
    pub machine_id: String,
    /// Lowercase hex SHA-256 of the certificate the machine registered with.
    pub thumbprint: String,
    pub pin: String,
    /// Unix seconds at the agent when it signed.
    pub timestamp: i64,
    /// Fresh for every attempt (retries too): a replayed nonce is refused.
    pub nonce: String,
    /// Base64 (standard alphabet) of the signature over [`pin_check_message`].
    pub signature: String,
}

impl fmt::Debug for PinCheckBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinCheckBody")
            .field("request_id", &self.request_id)
            .field("machine_id", &self.machine_id)
            .field("thumbprint", &self.thumbprint)
            .field("pin", &"<redacted>")
            .field("timestamp", &self.timestamp)
            .field("nonce", &self.nonce)
            .field("signature", &"<redacted>")
            .finish()
    }
}

impl PinCheckBody {
    /// The bytes this body's signature must cover, for `vault` (from the path).
    pub fn message(&self, vault: &str) -> Zeroizing<Vec<u8>> {
        pin_check_message(
            vault,
            &self.machine_id,
            &self.thumbprint,
            &self.request_id,
            &self.pin,
            self.timestamp,
            &self.nonce,
        )
    }
}

/// The exact bytes a PIN check signs, as [`registration_message`] is built, with its own header
/// line (so it never passes for another request). The PIN is signed too: a captured signature
/// cannot be sent with another PIN. The bytes hold the PIN, so they are zeroed when dropped.
pub fn pin_check_message(
    vault: &str,
    machine_id: &str,
    thumbprint: &str,
    request_id: &str,
    pin: &str,
    timestamp: i64,
    nonce: &str,
) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        format!(
            "regent-vault-pin-check-v1\nvault={vault}\nmachine_id={machine_id}\nthumbprint={thumbprint}\n\
             request_id={request_id}\npin={pin}\ntimestamp={timestamp}\nnonce={nonce}\n"
        )
        .into_bytes(),
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinValid {
    pub issued_at: DateTime<Utc>,
}

/// Every refusal and failure of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code of this protocol, e.g. `bad_request`, `unauthorized`, `vault_not_found`,
    /// `credentials_superseded`, `nonce_replayed`, `clock_skew`.
    pub error: ErrorCode,
    /// The agent's reason code when the refusal is one the agent records; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// One line for a person.
    pub message: String,
}

/// The exact bytes a registration signs: a fixed header line, then one `name=value` line per field,
/// in this order. Values never contain a line break (the service refuses control characters in every
/// field), so the encoding is unambiguous.
pub fn registration_message(
    vault: &str,
    resource_id: i64,
    machine_name: &str,
    thumbprint: &str,
    timestamp: i64,
    nonce: &str,
    request_id: &str,
) -> Vec<u8> {
    format!(
        "regent-vault-registration-v1\nvault={vault}\nresource_id={resource_id}\nmachine_name={machine_name}\n\
         thumbprint={thumbprint}\ntimestamp={timestamp}\nnonce={nonce}\nrequest_id={request_id}\n"
    )
    .into_bytes()
}

impl RegisterBody {
    /// The bytes this body's signature must cover, for `vault`.
    pub fn message(&self, vault: &str) -> Vec<u8> {
        registration_message(
            vault,
            self.resource_id,
            &self.machine_name,
            &self.thumbprint,
            self.timestamp,
            &self.nonce,
            &self.request_id,
        )
    }
}

/// A machine tells its vault it unregistered: signed with the private key of the credentials it
/// registered with, like a PIN check. Idempotent: a machine removed already (by itself or by the
/// admin) is answered with its removal again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnregisterBody {
    /// Names this unregistration in the vault's log; a retry may send another.
    pub request_id: String,
    /// Lowercase hex SHA-256 of the certificate the machine registered with.
    pub thumbprint: String,
    /// Unix seconds at the agent when it signed.
    pub timestamp: i64,
    /// Fresh for every attempt (retries too): a replayed nonce is refused.
    pub nonce: String,
    /// Base64 (standard alphabet) of the signature over [`unregistration_message`].
    pub signature: String,
}

impl UnregisterBody {
    /// The bytes this body's signature must cover, for `vault` and `machine_id` (from the path).
    pub fn message(&self, vault: &str, machine_id: &str) -> Vec<u8> {
        unregistration_message(vault, machine_id, &self.thumbprint, &self.request_id, self.timestamp, &self.nonce)
    }
}

/// The answer to an unregistration: the machine is removed (now, or it was before, at `removed_at`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unregistered {
    pub machine_id: String,
    pub vault: String,
    pub removed_at: DateTime<Utc>,
}

/// The exact bytes an unregistration signs, as [`registration_message`] is built, with its own
/// header line (so it never passes for another request).
pub fn unregistration_message(
    vault: &str,
    machine_id: &str,
    thumbprint: &str,
    request_id: &str,
    timestamp: i64,
    nonce: &str,
) -> Vec<u8> {
    format!(
        "regent-vault-unregistration-v1\nvault={vault}\nmachine_id={machine_id}\nthumbprint={thumbprint}\n\
         request_id={request_id}\ntimestamp={timestamp}\nnonce={nonce}\n"
    )
    .into_bytes()
}

/// The most records one report carries. An agent further past its anchor reports in steps.
pub const MAX_PROOF_RECORDS: usize = 256;
/// The most bytes of records (the stored lines, before JSON escaping) one report carries. A record
/// is at most `regent_store::MAX_RECORD_BYTES` (32 KiB), so a step always holds at least one.
pub const MAX_PROOF_BYTES: usize = 1024 * 1024;
/// The largest log-head report the service reads: the records as JSON strings (escaping at most
/// doubles a JSON line: only `"` and `\` are escaped) and the other fields.
pub const MAX_LOG_HEAD_BODY_BYTES: usize = 2 * MAX_PROOF_BYTES + MAX_BODY_BYTES;

/// The headers of a signed read of a log head: thumbprint, timestamp, nonce, signature (base64),
/// with the same meaning as in [`HeadReport`].
pub const SIGNATURE_HEADERS: [&str; 4] =
    ["x-regent-thumbprint", "x-regent-timestamp", "x-regent-nonce", "x-regent-signature"];

/// A machine reports the head of its log: signed with the private key of the credentials it
/// registered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadReport {
    /// Lowercase hex SHA-256 of the certificate the machine registered with.
    pub thumbprint: String,
    /// The position of the last record of the agent's log (1 or more).
    pub position: u64,
    /// That record's hash: 64 lowercase hex digits.
    pub hash: String,
    /// The records at M+1..=`position`, where M is [`Anchor::mirrored`] (0 before the machine's first
    /// report), each exactly as the agent's store holds it (one export line, without its line
    /// break). The service walks them from the last record it keeps, so a log cut back and grown
    /// past the anchor again cannot take its place, and keeps them. Empty for a head at or behind
    /// the one the vault holds.
    #[serde(default)]
    pub records: Vec<String>,
    /// Unix seconds at the agent when it signed.
    pub timestamp: i64,
    /// Fresh for every attempt: a replayed nonce is refused.
    pub nonce: String,
    /// Base64 (standard alphabet) of the signature over [`log_head_message`].
    pub signature: String,
    /// The size of the vault's transparency log the agent last verified: the answer proves the new
    /// checkpoint consistent with it. Not signed: it only chooses which proof answers, and the
    /// agent checks that proof against what it holds, so a changed value cannot pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_size: Option<u64>,
}

/// The head a vault keeps for a machine, and what it refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub machine_id: String,
    pub position: u64,
    pub hash: String,
    /// When the vault first accepted this head.
    pub anchored_at: DateTime<Utc>,
    /// The position up to which the vault keeps the machine's records (the next report's records
    /// start after it): the anchor's position, but for a machine anchored before the vault kept
    /// records, catching up. Absent from an older vault, which keeps none (its reports start after
    /// the anchor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<u64>,
    /// Reports the vault refused for this machine (heads that went backwards or conflicted).
    #[serde(default)]
    pub refusals: u64,
    /// The most recent of them.
    #[serde(default)]
    pub last_refusal: Option<AnchorRefusal>,
    /// The head as the vault's transparency log holds it, proved under its latest checkpoint.
    /// Absent from an older vault, and for a head anchored before the vault kept the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LoggedHead>,
}

/// A machine's latest head in the vault's transparency log, and the proofs that make it checkable
/// without trusting the connection (see [`crate::transparency`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedHead {
    /// The latest checkpoint: a C2SP signed note, signed by the vault's checkpoint key.
    pub checkpoint: String,
    /// The leaf's index in the tree.
    pub index: u64,
    /// Base64 (standard alphabet) of the leaf's bytes ([`crate::transparency::Leaf::encode`]).
    pub leaf: String,
    /// The inclusion proof of the leaf under the checkpoint, each hash lowercase hex.
    pub inclusion: Vec<String>,
    /// The consistency proof from an earlier size to the checkpoint's, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
}

/// A consistency proof between two sizes of the transparency log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    pub from: u64,
    /// Each hash lowercase hex.
    pub proof: Vec<String>,
}

/// `GET /v1/checkpoint/consistency?from=A&to=B`: the consistency proof between two sizes of the
/// transparency log (RFC 9162 §2.1.4), each size stated so that the answer says what it proves.
/// Checked with [`crate::transparency::verify_consistency`] against the roots of the two
/// checkpoints the caller holds; empty when `from == to` (the roots must then be equal). A proof
/// from size 0 is refused: RFC 9162 defines one only from a non-empty tree, and every tree extends
/// the empty one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Each hash lowercase hex.
    pub proof: Vec<String>,
}

/// A refused report: which code, and the head that was offered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRefusal {
    /// [`ErrorCode::LogHeadRegressed`], [`ErrorCode::LogHeadConflict`] or
    /// [`ErrorCode::LogHeadProofInvalid`].
    pub error: ErrorCode,
    pub position: u64,
    pub hash: String,
    pub refused_at: DateTime<Utc>,
}

/// SHA-256 (lowercase hex) over the records a report carries, each followed by a line break (the
/// lines of an export): what a report's signature covers of them.
pub fn records_digest<R: AsRef<[u8]>>(records: &[R]) -> String {
    let mut hasher = Sha256::new();
    for record in records {
        hasher.update(record.as_ref());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// The exact bytes a log-head report signs, as [`registration_message`] is built. The records are
/// signed through their count and [`records_digest`] (a record never holds a line break: the
/// service refuses one that does, so the digest is unambiguous).
#[allow(clippy::too_many_arguments, reason = "one argument per signed field, in the order they are signed")]
pub fn log_head_message<R: AsRef<[u8]>>(
    vault: &str,
    machine_id: &str,
    thumbprint: &str,
    position: u64,
    hash: &str,
    records: &[R],
    timestamp: i64,
    nonce: &str,
) -> Vec<u8> {
    let (count, digest) = (records.len(), records_digest(records));
    format!(
        "regent-vault-log-head-v2\nvault={vault}\nmachine_id={machine_id}\nthumbprint={thumbprint}\n\
         position={position}\nhash={hash}\nrecords={count}\nrecords_sha256={digest}\ntimestamp={timestamp}\n\
         nonce={nonce}\n"
    )
    .into_bytes()
}

/// The exact bytes a read of a log head signs. Its own header line: a read's signature can never
/// pass for a report's.
pub fn log_head_read_message(vault: &str, machine_id: &str, thumbprint: &str, timestamp: i64, nonce: &str) -> Vec<u8> {
    format!(
        "regent-vault-log-head-read-v1\nvault={vault}\nmachine_id={machine_id}\nthumbprint={thumbprint}\n\
         timestamp={timestamp}\nnonce={nonce}\n"
    )
    .into_bytes()
}

impl HeadReport {
    /// The bytes this body's signature must cover, for `vault` and `machine_id` (from the path).
    pub fn message(&self, vault: &str, machine_id: &str) -> Vec<u8> {
        log_head_message(
            vault,
            machine_id,
            &self.thumbprint,
            self.position,
            &self.hash,
            &self.records,
            self.timestamp,
            &self.nonce,
        )
    }
}

/// A vault name: 1 to 64 characters of `A-Z a-z 0-9 - _ .`, starting with a letter or digit, so that it
/// is safe in a URL path, a file name and a stream id as it is.
pub fn valid_vault_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed bytes are the protocol: changing them breaks every deployed agent.
    #[test]
    fn the_signed_message_is_stable() {
        let message = registration_message("vault-1", 42, "srv 1", &"ab".repeat(32), 1_700_000_000, "n0nce", "req-1");
        let expected = format!(
            "regent-vault-registration-v1\nvault=vault-1\nresource_id=42\nmachine_name=srv 1\nthumbprint={}\n\
             timestamp=1700000000\nnonce=n0nce\nrequest_id=req-1\n",
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(message).unwrap(), expected);
    }

    #[test]
    fn the_log_head_messages_are_stable_and_distinct() {
        let t = "cd".repeat(32);
        let h = "ef".repeat(32);
        let none: [&str; 0] = [];
        // SHA-256 of nothing.
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let report = log_head_message("v", "m-1", &t, 12, &h, &none, 1_700_000_000, "n0nce");
        assert_eq!(
            String::from_utf8(report).unwrap(),
            format!(
                "regent-vault-log-head-v2\nvault=v\nmachine_id=m-1\nthumbprint={t}\nposition=12\nhash={h}\n\
                 records=0\nrecords_sha256={empty}\ntimestamp=1700000000\nnonce=n0nce\n"
            )
        );
        // The records are signed through their digest, line by line: moving a byte across a line
        // boundary changes it.
        let records = ["{\"a\":1}", "{\"b\":2}"];
        assert_eq!(records_digest(&records), hex::encode(Sha256::digest(b"{\"a\":1}\n{\"b\":2}\n")));
        assert_ne!(records_digest(&records), records_digest(&["{\"a\":1}{\"b\":2}"]));
        let report = log_head_message("v", "m-1", &t, 12, &h, &records, 1_700_000_000, "n0nce");
        let digest = records_digest(&records);
        assert!(String::from_utf8(report).unwrap().contains(&format!("\nrecords=2\nrecords_sha256={digest}\n")));
        let read = log_head_read_message("v", "m-1", &t, 1_700_000_000, "n0nce");
        assert_eq!(
            String::from_utf8(read).unwrap(),
            format!(
                "regent-vault-log-head-read-v1\nvault=v\nmachine_id=m-1\nthumbprint={t}\ntimestamp=1700000000\nnonce=n0nce\n"
            )
        );
    }

    #[test]
    fn vault_names_are_safe_in_paths_and_stream_ids() {
        for good in ["a", "vault-1", "My_Vault.2", &"x".repeat(64)] {
            assert!(valid_vault_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "../x", "a b", "ä", &"x".repeat(65), "a\n"] {
            assert!(!valid_vault_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let pin = IssuedPin { pin: "12345678".into(), issued_at: Utc::now(), expires_at: Utc::now() };
        assert!(!format!("{pin:?}").contains("12345678"));
        let check = PinCheckBody {
            request_id: "r".into(),
            machine_id: "m".into(),
            thumbprint: "t".into(),
            pin: "87654321".into(),
            timestamp: 0,
            nonce: "n".into(),
            signature: "c2lnbmF0dXJlLWJ5dGVz".into(),
        };
        let shown = format!("{check:?}");
        assert!(!shown.contains("87654321"), "{shown}");
        assert!(!shown.contains("c2lnbmF0dXJlLWJ5dGVz"), "the signature covers the PIN: {shown}");
    }

    #[test]
    fn the_pin_check_message_is_stable_and_signs_the_pin() {
        let t = "ab".repeat(32);
        let message = pin_check_message("v", "m-1", &t, "req-1", "12345678", 1_700_000_000, "n0nce");
        assert_eq!(
            String::from_utf8(message.to_vec()).unwrap(),
            format!(
                "regent-vault-pin-check-v1\nvault=v\nmachine_id=m-1\nthumbprint={t}\nrequest_id=req-1\npin=12345678\n\
                 timestamp=1700000000\nnonce=n0nce\n"
            )
        );
        assert_ne!(message, pin_check_message("v", "m-1", &t, "req-1", "12345679", 1_700_000_000, "n0nce"));
    }

    #[test]
    fn the_unregistration_message_is_stable_and_distinct() {
        let t = "ab".repeat(32);
        let message = unregistration_message("v", "m-1", &t, "req-1", 1_700_000_000, "n0nce");
        assert_eq!(
            String::from_utf8(message.clone()).unwrap(),
            format!(
                "regent-vault-unregistration-v1\nvault=v\nmachine_id=m-1\nthumbprint={t}\nrequest_id=req-1\n\
                 timestamp=1700000000\nnonce=n0nce\n"
            )
        );
        assert_ne!(message, log_head_read_message("v", "m-1", &t, 1_700_000_000, "n0nce"));
    }

    #[test]
    fn the_route_table_holds_each_method_and_path_once() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            if route.is_operational() {
                assert!(!route.path.starts_with(PREFIX), "{route:?}: at the root, outside the protocol's version");
                assert_eq!((route.method, route.access), (Method::Get, Access::Anyone), "{route:?}");
            } else {
                assert!(route.path.starts_with(PREFIX), "{route:?}");
            }
            assert!(seen.insert((route.method, route.path)), "twice: {route:?}");
        }
        let ids: std::collections::HashSet<_> = ROUTES.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), ROUTES.len(), "one id per route");
    }
}
