//! What the binary says when something fails: one line on stderr and the exit code of docs/cli.md.

use regent_engine::projections::ProjectionError;
use regent_engine::service::EngineError;
use regent_store::StoreError;

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_STORE: u8 = 3;
/// The operator stopped an interactive command at a prompt (Esc, Ctrl-C): 128 + SIGINT, as a
/// shell reports a command stopped with Ctrl-C.
pub const EXIT_STOPPED: u8 = 130;

/// Why a command failed: its exit code, a stable reason code for scripts (`--json` prints it as
/// `{"error": {"code", "message", "exit"}}`), and the one line a person reads.
#[derive(Debug)]
pub struct Failure {
    pub exit: u8,
    pub reason: String,
    pub message: String,
    /// The command already printed its JSON document (a refused step prints its record, with the
    /// error in it): nothing more goes to stdout.
    pub reported: bool,
}

impl Failure {
    /// Exit 1. A message that starts with a reason code (`credentials_expired: ...`) is that
    /// reason; any other is `refused`.
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure::with_exit(EXIT_REFUSED, "refused", message.into())
    }

    /// Exit 2: the command line asks for something that cannot be done as asked.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::with_exit(EXIT_USAGE, "usage", message.into())
    }

    /// Exit 3: the store (or the data directory around it) cannot be used.
    pub fn store(message: impl Into<String>) -> Failure {
        Failure::with_exit(EXIT_STORE, "store_unavailable", message.into())
    }

    pub fn stopped(message: impl Into<String>) -> Failure {
        Failure::with_exit(EXIT_STOPPED, "stopped", message.into())
    }

    /// The same failure under another reason code.
    pub fn because(mut self, reason: &str) -> Failure {
        self.reason = reason.to_string();
        self
    }

    fn with_exit(exit: u8, default: &str, message: String) -> Failure {
        let reason = leading_code(&message).unwrap_or(default).to_string();
        Failure { exit, reason, message, reported: false }
    }

    /// Marks the failure as said on stdout already when `json` (the command printed its document).
    pub fn printed_if(mut self, json: bool) -> Failure {
        self.reported |= json;
        self
    }

    /// What `--json` prints on stdout for this failure.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.reason, "message": self.message, "exit": self.exit })
    }
}

/// The reason code a message starts with (`log_tail_cut: records 5-7 ...`), if it does.
fn leading_code(message: &str) -> Option<&str> {
    let (code, _) = message.split_once(": ")?;
    let well_formed = !code.is_empty()
        && code.len() <= 64
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && code.contains('_');
    well_formed.then_some(code)
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        let (exit, reason) = match err {
            StoreError::Locked { .. } => (EXIT_STORE, "store_locked"),
            StoreError::Corrupt { .. } | StoreError::Damaged { .. } => (EXIT_STORE, "store_damaged"),
            StoreError::SyncFailed { .. } => (EXIT_STORE, "store_sync_failed"),
            StoreError::NotADirectory { .. } | StoreError::Io { .. } | StoreError::Internal(_) => {
                (EXIT_STORE, "store_unavailable")
            }
            // Another regent appended between our read and our write.
            StoreError::Conflict { .. } => (EXIT_STORE, "store_conflict"),
            StoreError::ChainBroken(_) => (EXIT_REFUSED, "chain_broken"),
            StoreError::BadLogFile { .. } => (EXIT_REFUSED, "log_file_invalid"),
            StoreError::NotEmpty { .. } => (EXIT_STORE, "store_not_empty"),
            _ => (EXIT_REFUSED, "refused"),
        };
        let message = match &err {
            StoreError::Conflict { .. } => {
                format!("{err}; another regent command changed the log meanwhile: run it again")
            }
            // Met while reading: a walk says how far the log still reads.
            StoreError::Corrupt { path, .. } => format!(
                "{err}; `regent audit verify` shows which records still read; {}",
                crate::damage::next_step(path, None)
            ),
            StoreError::Damaged { path, .. } => format!("{err}; {}", crate::damage::next_step(path, None)),
            _ => err.to_string(),
        };
        Failure { exit, reason: reason.to_string(), message, reported: false }
    }
}

impl From<ProjectionError> for Failure {
    fn from(err: ProjectionError) -> Self {
        match err {
            ProjectionError::Store(e) => e.into(),
            ProjectionError::Decode(e) => Failure::store(e.to_string()).because("log_unreadable"),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Store(e) => e.into(),
            EngineError::Projection(e) => e.into(),
            EngineError::MissingSecret(secret) => {
                Failure::usage(format!("{err}; give it with {}", crate::guidance::how_to_give(secret)))
                    .because("secret_missing")
            }
            EngineError::Secrets(_) => Failure::store(err.to_string()).because("secrets_unavailable"),
            EngineError::Randomness(_) => Failure::store(err.to_string()).because("randomness_failed"),
            EngineError::Encode(_) => Failure::store(err.to_string()).because("step_not_written"),
        }
    }
}

impl From<regent_secrets::SecretsError> for Failure {
    fn from(err: regent_secrets::SecretsError) -> Self {
        Failure::store(err.to_string()).because("secrets_unavailable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_reason_code_is_the_failures_reason() {
        assert_eq!(Failure::refused("log_tail_cut: records 5-7 are missing").reason, "log_tail_cut");
        assert_eq!(Failure::refused("cannot read x: No such file").reason, "refused");
        assert_eq!(Failure::usage("--output: must end in .VaultCredentials").reason, "usage");
        assert_eq!(Failure::store("Error: disk full").reason, "store_unavailable");
        let json = Failure::refused("credentials_expired: gone").json();
        assert_eq!(
            json,
            serde_json::json!({"code": "credentials_expired", "message": "credentials_expired: gone", "exit": 1})
        );
    }
}
