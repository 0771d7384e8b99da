//! The stable reason codes of docs/cli.md: why the agent refused a step. The engine records them,
//! the binary prints them, and the vault names one in a refusal the agent records
//! ([`ErrorBody::reason`](crate::ErrorBody::reason)).

use crate::code::codes;

codes! {
    /// Why a step was refused. The snake_case names are a contract: scripts read them.
    pub enum Reason {
        InvalidFolder = "invalid_folder",
        InsufficientScratchSpace = "insufficient_scratch_space",
        InvalidProxy = "invalid_proxy",
        CredentialsUnreadable = "credentials_unreadable",
        CredentialsInvalid = "credentials_invalid",
        CredentialsExpired = "credentials_expired",
        CredentialsSuperseded = "credentials_superseded",
        CredentialsWrongVault = "credentials_wrong_vault",
        PassphraseTooShort = "passphrase_too_short",
        PassphraseInvalid = "passphrase_invalid",
        ProxyAuthFailed = "proxy_auth_failed",
        VaultUnreachable = "vault_unreachable",
        /// The vault's TLS could not be trusted (a certificate no trusted CA signed, another host's,
        /// expired, or no TLS at the other end): never a refusal of the credentials or the PIN.
        VaultTlsFailed = "vault_tls_failed",
        VaultError = "vault_error",
        AlreadyRegistered = "already_registered",
        StepOutOfOrder = "step_out_of_order",
        SecurityPinInvalid = "security_pin_invalid",
        InvalidThrottling = "invalid_throttling",
        /// The vault bound this registration's request id to another machine name, certificate or
        /// vault (a data dir copied to a second server): a new registration is needed.
        RequestIdConflict = "request_id_conflict",
        /// The vault removed the machine this registration made: register again for a new one.
        MachineRemoved = "machine_removed",
    }
}
