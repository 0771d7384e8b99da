//! The vault's protocol codes: the `error` of every refusal ([`ErrorBody`](crate::ErrorBody)).

use crate::code::codes;
use crate::reason::Reason;

codes! {
    /// Why the vault service refused a request or failed it. Stable: clients and scripts match on it.
    pub enum ErrorCode {
        /// The request is malformed: its body, its path or one of its fields. `400`.
        BadRequest = "bad_request",
        /// The body is not sent as JSON. `415`.
        UnsupportedMediaType = "unsupported_media_type",
        /// The body is larger than [`MAX_BODY_BYTES`](crate::MAX_BODY_BYTES)
        /// ([`MAX_LOG_HEAD_BODY_BYTES`](crate::MAX_LOG_HEAD_BODY_BYTES) for a log-head report). `413`.
        PayloadTooLarge = "payload_too_large",
        /// No route has this path. `404`.
        NotFound = "not_found",
        /// The route does not take this method. `405`.
        MethodNotAllowed = "method_not_allowed",
        /// An admin call without the admin token, or with another. `401`.
        Unauthorized = "unauthorized",
        /// The service failed. `500`.
        Internal = "internal",
        /// The service's log cannot be written: nothing was changed. `503`, reason `vault_error`.
        /// Also `GET /readyz` while the service is not ready (its log found damaged at start, or a
        /// write that failed to reach the disk since), without a reason.
        StoreUnavailable = "store_unavailable",
        /// A vault name outside 1 to 64 characters of `A-Z a-z 0-9 - _ .`. `400`.
        InvalidVaultName = "invalid_vault_name",
        /// A vault of that name exists already. `409`.
        VaultExists = "vault_exists",
        /// No vault of that name. `404`.
        VaultNotFound = "vault_not_found",
        /// No machine of that id in the vault (never registered, or removed). `404`.
        MachineNotFound = "machine_not_found",
        /// A signed request's timestamp more than
        /// [`MAX_CLOCK_SKEW_SECS`](crate::MAX_CLOCK_SKEW_SECS) from the service's clock. `403`, reason
        /// `vault_error`.
        ClockSkew = "clock_skew",
        /// A signed request whose nonce the service has seen: each attempt is signed afresh. `403`,
        /// reason `vault_error`.
        NonceReplayed = "nonce_replayed",
        /// A signature that does not verify, a certificate the vault never issued or that does not
        /// speak for the machine. `403`, reason `credentials_invalid`.
        CredentialsInvalid = "credentials_invalid",
        /// Credentials of another vault (or of a vault re-created under the same name). `403`, reason
        /// `credentials_wrong_vault`.
        CredentialsWrongVault = "credentials_wrong_vault",
        /// A registration with a credentials download older than the newest. `403`, reason
        /// `credentials_superseded`.
        CredentialsSuperseded = "credentials_superseded",
        /// A registration with an expired certificate. `403`, reason `credentials_expired`.
        CredentialsExpired = "credentials_expired",
        /// A PIN that is not 8 digits, wrong, used or expired. `403`, reason `security_pin_invalid`.
        SecurityPinInvalid = "security_pin_invalid",
        /// A request id answered (or being answered) before, sent with other values: another machine
        /// name, certificate or vault for a registration (a data dir copied to a second server),
        /// another machine or PIN for a PIN check. `409`, reason `request_id_conflict`.
        RequestIdConflict = "request_id_conflict",
        /// The machine a registration's request id made was removed: that request id is never
        /// answered or registered again. `410`, reason `machine_removed`; a PIN check of a removed
        /// machine too.
        MachineRemoved = "machine_removed",
        /// This machine sent [`MAX_PIN_FAILURES`](crate::MAX_PIN_FAILURES) wrong PINs in a row: its
        /// PIN checks are refused for [`PIN_LOCKOUT_SECS`](crate::PIN_LOCKOUT_SECS). `429` with
        /// `Retry-After`, reason `security_pin_invalid`.
        PinChecksLocked = "pin_checks_locked",
        /// A head lower than the one anchored: the agent's log lost records (or an old copy speaks).
        /// `409`, recorded.
        LogHeadRegressed = "log_head_regressed",
        /// Another hash at the position anchored, or records past it that do not follow the anchored
        /// record: the agent's log was rewritten (or forked from a copy). `409`, recorded.
        LogHeadConflict = "log_head_conflict",
        /// Records past the anchored head that follow it but do not form a chain up to the reported
        /// head (a record altered after its hash was taken, a gap, an end other than the head): the
        /// agent's log is damaged, or the report was forged. `409`, recorded.
        LogHeadProofInvalid = "log_head_proof_invalid",
        /// A report whose records cannot be records at all (not JSON, a line break inside, records
        /// where none belong). Not evidence of anything, so not recorded. `400`.
        LogHeadProofMalformed = "log_head_proof_malformed",
        /// More than [`MAX_PROOF_RECORDS`](crate::MAX_PROOF_RECORDS) records or
        /// [`MAX_PROOF_BYTES`](crate::MAX_PROOF_BYTES) bytes of them in one report. `400`.
        LogHeadProofTooLarge = "log_head_proof_too_large",
        /// No head was ever anchored for the machine. `404`.
        LogHeadNotFound = "log_head_not_found",
        /// A head past the anchored one whose records do not start right after it (none sent, or
        /// sent against an older anchor): read the anchor and report again. Not evidence of
        /// anything, so not recorded. `409`.
        LogHeadBaseRequired = "log_head_base_required",
    }
}

impl ErrorCode {
    /// The agent's reason spelled as this code, for the codes that are one (`credentials_expired`,
    /// ...). A refusal under such a code names that reason; others name theirs, if any, apart.
    pub fn as_reason(&self) -> Option<Reason> {
        match self {
            ErrorCode::CredentialsInvalid => Some(Reason::CredentialsInvalid),
            ErrorCode::CredentialsWrongVault => Some(Reason::CredentialsWrongVault),
            ErrorCode::CredentialsSuperseded => Some(Reason::CredentialsSuperseded),
            ErrorCode::CredentialsExpired => Some(Reason::CredentialsExpired),
            ErrorCode::SecurityPinInvalid => Some(Reason::SecurityPinInvalid),
            ErrorCode::RequestIdConflict => Some(Reason::RequestIdConflict),
            ErrorCode::MachineRemoved => Some(Reason::MachineRemoved),
            _ => None,
        }
    }

    /// A refusal of a log-head report that says the agent's log is not the one the vault saw (cut,
    /// rewritten, or its records past the anchor do not chain). The vault records these.
    pub fn is_tamper_evidence(&self) -> bool {
        matches!(self, ErrorCode::LogHeadRegressed | ErrorCode::LogHeadConflict | ErrorCode::LogHeadProofInvalid)
    }
}
