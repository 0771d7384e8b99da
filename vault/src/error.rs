//! The crate's typed errors. Each Display is one line saying what went wrong and what to do; none
//! carries a secret (tokens, PINs, keys and passwords never reach an error).

use std::net::SocketAddr;
use std::path::PathBuf;

use regent_store::{ChainFailure, StoreError};

use crate::protocol::ErrorCode;

/// Why the service could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },

    #[error("cannot {action} the admin token file {path}: {source}")]
    TokenFile { action: &'static str, path: PathBuf, source: std::io::Error },

    #[error("the admin token file {path} is empty or malformed; delete it and restart the service to get a new token")]
    BadTokenFile { path: PathBuf },

    #[error("cannot {action} the checkpoint key file {path}: {source}")]
    KeyFile { action: &'static str, path: PathBuf, source: std::io::Error },

    #[error(
        "the checkpoint key file {path} is malformed ({detail}); restore it from a backup (agents trust \
         that key), or, for a vault no agent has reported to, delete it and restart"
    )]
    BadKeyFile { path: PathBuf, detail: String },

    #[error("the vault's log cannot be used: {0}")]
    Store(#[from] StoreError),

    #[error("the vault's log holds an event it cannot read at position {position}: {detail}")]
    BadEvent { position: u64, detail: String },

    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },

    #[error("cannot use the TLS {what} {path}: {detail}")]
    Tls { what: &'static str, path: PathBuf, detail: String },

    #[error("the public URL {url:?} is not an http:// or https:// URL")]
    BadPublicUrl { url: String },

    #[error("cannot set up the service's metrics: {0}")]
    Metrics(String),

    /// The database (PostgreSQL) cannot be used: the text names why and what to do, never the URL
    /// or a password.
    #[error("{detail}")]
    Database { problem: DatabaseProblem, detail: String },

    #[error("cannot start the service's runtime: {0}")]
    Runtime(std::io::Error),

    #[error("the vault service stopped unexpectedly: {0}")]
    Stopped(String),
}

/// What kept the service from using its database, for a caller that acts on it (the CLI gives
/// each its own reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseProblem {
    /// The URL cannot be read, or is not a `postgres://` one.
    Url,
    /// Nothing answers at its host and port, or not in time, or TLS with it failed.
    Unreachable,
    /// The server refused the login: a wrong user or password, no `pg_hba.conf` entry, no `CONNECT`.
    LoginRefused,
    /// The role may connect but not create the schema or its tables.
    PermissionDenied,
    /// The schema `regent_vault` holds what regent did not write.
    ForeignSchema,
    /// The schema was migrated by a newer build.
    NewerSchema,
    /// The database serves another admin token than this process was given.
    OtherToken,
    /// The database's transparency log is signed with another checkpoint key.
    OtherCheckpointKey,
    /// Anything else the database said.
    Unavailable,
}

/// Why a rebuild of the projections or a move of a sled log to PostgreSQL did not go through. A
/// rebuild changes nothing unless it completes; a move stops between two committed batches and,
/// run again, resumes where it stopped. Each text says what to do, and never holds the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoveError {
    /// The database cannot be reached, read, migrated or written.
    #[error("{detail}")]
    Database { detail: String },

    /// The directory is not a vault service's data directory (no `admin.token`, no log).
    #[error("{path} is not a vault service's data directory: {detail}")]
    NotAVaultDir { path: PathBuf, detail: String },

    /// The sled log cannot be opened or read: held by a running `regent vault serve`, damaged.
    #[error("{detail}")]
    Store { detail: String, source: StoreError },

    /// A log's chain does not verify: `detail` says which log, where, and what was done.
    #[error("{detail}")]
    ChainBroken { failure: ChainFailure, detail: String },

    /// A record holds an event this build cannot read.
    #[error("{detail}")]
    BadEvent { position: u64, detail: String },

    /// The database holds another log than the one being moved (or a longer one).
    #[error("{detail}")]
    OtherLog { detail: String },

    /// Something else wrote to the database while the move ran.
    #[error("{detail}")]
    Concurrent { detail: String },
}

/// Why a client (the agent's or the admin's) could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot use the CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },

    #[error("cannot set up TLS: {0}")]
    Tls(String),

    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error(transparent)]
    Setup(#[from] ClientError),

    #[error("the server URL {url:?} is not an http:// or https:// URL")]
    BadUrl { url: String },

    #[error("cannot read the admin token file {path}: {detail}")]
    TokenFile { path: PathBuf, detail: String },

    #[error("invalid request: {0}")]
    InvalidInput(String),

    #[error("cannot reach the vault service at {url}: {detail}")]
    Unreachable { url: String, detail: String },

    #[error("the vault service refused the admin token; use the token from the service's admin.token file")]
    Unauthorized,

    #[error("{message}")]
    NotFound { code: ErrorCode, message: String },

    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },

    #[error("the vault service refused the request (HTTP {status}, {code}): {message}")]
    Refused { status: u16, code: ErrorCode, message: String },

    #[error("the vault service answered HTTP {status} with something unexpected: {detail}")]
    Protocol { status: u16, detail: String },
}

/// An error and its sources on one line, `outer: inner: innermost`, without repeats (reqwest and
/// hyper often repeat the inner text in the outer one).
pub(crate) fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}
