//! What the binary says when something fails: one line on stderr and the exit code of spec/cli.md.

use regent_engine::projections::ProjectionError;
use regent_engine::service::EngineError;
use regent_store::StoreError;

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_STORE: u8 = 3;
/// The operator stopped an interactive command at a prompt (Esc, Ctrl-C): 128 + SIGINT, as a
/// shell reports a command stopped with Ctrl-C.
pub const EXIT_STOPPED: u8 = 130;

#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_REFUSED, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_USAGE, message: message.into() }
    }

    pub fn store(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_STORE, message: message.into() }
    }

    pub fn stopped(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_STOPPED, message: message.into() }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        let code = match err {
            StoreError::Locked { .. }
            | StoreError::NotADirectory { .. }
            | StoreError::Io { .. }
            | StoreError::SyncFailed { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Damaged { .. }
            | StoreError::Internal(_) => EXIT_STORE,
            // Another regent appended between our read and our write.
            StoreError::Conflict { .. } => EXIT_STORE,
            _ => EXIT_REFUSED,
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
        Failure { code, message }
    }
}

impl From<ProjectionError> for Failure {
    fn from(err: ProjectionError) -> Self {
        match err {
            ProjectionError::Store(e) => e.into(),
            ProjectionError::Decode(e) => Failure::store(e.to_string()),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Store(e) => e.into(),
            EngineError::Projection(e) => e.into(),
            EngineError::MissingSecret(..) => Failure::usage(err.to_string()),
            EngineError::Secrets(_) | EngineError::Randomness(_) | EngineError::Encode(_) => {
                Failure::store(err.to_string())
            }
        }
    }
}

impl From<regent_secrets::SecretsError> for Failure {
    fn from(err: regent_secrets::SecretsError) -> Self {
        Failure::store(err.to_string())
    }
}
