//! The stable reason codes of spec/cli.md and the steps they refuse.

use serde::{Deserialize, Serialize};

/// Why a step was refused. The snake_case names are a contract: scripts read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    InvalidFolder,
    InsufficientScratchSpace,
    InvalidProxy,
    CredentialsUnreadable,
    CredentialsInvalid,
    CredentialsExpired,
    CredentialsSuperseded,
    CredentialsWrongVault,
    PassphraseTooShort,
    PassphraseInvalid,
    ProxyAuthFailed,
    VaultUnreachable,
    VaultError,
    AlreadyRegistered,
    StepOutOfOrder,
    SecurityPinInvalid,
    InvalidThrottling,
    /// The vault bound this registration's request id to another machine name, certificate or
    /// vault (a data dir copied to a second server): a new registration is needed.
    RequestIdConflict,
    /// The vault removed the machine this registration made: register again for a new one.
    MachineRemoved,
}

impl Reason {
    pub const ALL: [Reason; 19] = [
        Reason::InvalidFolder,
        Reason::InsufficientScratchSpace,
        Reason::InvalidProxy,
        Reason::CredentialsUnreadable,
        Reason::CredentialsInvalid,
        Reason::CredentialsExpired,
        Reason::CredentialsSuperseded,
        Reason::CredentialsWrongVault,
        Reason::PassphraseTooShort,
        Reason::PassphraseInvalid,
        Reason::ProxyAuthFailed,
        Reason::VaultUnreachable,
        Reason::VaultError,
        Reason::AlreadyRegistered,
        Reason::StepOutOfOrder,
        Reason::SecurityPinInvalid,
        Reason::InvalidThrottling,
        Reason::RequestIdConflict,
        Reason::MachineRemoved,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidFolder => "invalid_folder",
            Reason::InsufficientScratchSpace => "insufficient_scratch_space",
            Reason::InvalidProxy => "invalid_proxy",
            Reason::CredentialsUnreadable => "credentials_unreadable",
            Reason::CredentialsInvalid => "credentials_invalid",
            Reason::CredentialsExpired => "credentials_expired",
            Reason::CredentialsSuperseded => "credentials_superseded",
            Reason::CredentialsWrongVault => "credentials_wrong_vault",
            Reason::PassphraseTooShort => "passphrase_too_short",
            Reason::PassphraseInvalid => "passphrase_invalid",
            Reason::ProxyAuthFailed => "proxy_auth_failed",
            Reason::VaultUnreachable => "vault_unreachable",
            Reason::VaultError => "vault_error",
            Reason::AlreadyRegistered => "already_registered",
            Reason::StepOutOfOrder => "step_out_of_order",
            Reason::SecurityPinInvalid => "security_pin_invalid",
            Reason::InvalidThrottling => "invalid_throttling",
            Reason::RequestIdConflict => "request_id_conflict",
            Reason::MachineRemoved => "machine_removed",
        }
    }
}

impl Reason {
    /// Whether the vault's refusal of a registration ends the attempt for good: asking again with
    /// the same request id can only be refused again (or, for a lost key, cannot be signed). The
    /// others (unreachable, a failure of the vault, the proxy) may not even have reached the vault,
    /// which may have made the machine: the next run asks again with the same request id.
    pub fn ends_registration_attempt(self) -> bool {
        matches!(
            self,
            Reason::CredentialsUnreadable
                | Reason::CredentialsInvalid
                | Reason::CredentialsExpired
                | Reason::CredentialsSuperseded
                | Reason::CredentialsWrongVault
                | Reason::RequestIdConflict
                | Reason::MachineRemoved
                | Reason::AlreadyRegistered
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The wizard steps and Change Properties actions, as named in the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Folders,
    Proxy,
    Credentials,
    Passphrase,
    Register,
    Unregister,
    ScratchFolder,
    Throttling,
    PassphraseChange,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Folders => "folders",
            Step::Proxy => "proxy",
            Step::Credentials => "credentials",
            Step::Passphrase => "passphrase",
            Step::Register => "register",
            Step::Unregister => "unregister",
            Step::ScratchFolder => "scratch_folder",
            Step::Throttling => "throttling",
            Step::PassphraseChange => "passphrase_change",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
