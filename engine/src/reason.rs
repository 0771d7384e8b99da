//! The stable reason codes of docs/cli.md (from `regent-protocol`) and the steps they refuse.

use serde::{Deserialize, Serialize};

/// Why a step was refused. Defined with the protocol (the vault names one in a refusal the agent
/// records), so that the engine, the vault and the binary speak one vocabulary.
pub use regent_protocol::Reason;

/// Whether the vault's refusal of a registration ends the attempt for good: asking again with the
/// same request id can only be refused again (or, for a lost key, cannot be signed). The others
/// (unreachable, a failure of the vault, the proxy, a reason this build does not know) may not even
/// have reached the vault, which may have made the machine: the next run asks again with the same
/// request id.
pub fn ends_registration_attempt(reason: &Reason) -> bool {
    matches!(
        reason,
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
    /// Every step, in the order the wizard and then Change Properties take them.
    pub const ALL: [Step; 9] = [
        Step::Folders,
        Step::Proxy,
        Step::Credentials,
        Step::Passphrase,
        Step::Register,
        Step::Unregister,
        Step::ScratchFolder,
        Step::Throttling,
        Step::PassphraseChange,
    ];

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
