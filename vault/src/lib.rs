//! The vault service regent registers with, and the clients that talk to it.
//!
//! - The service ([`serve`], [`BackgroundServer`], [`run_until_signal`]): axum on tokio, plain HTTP or
//!   HTTPS (rustls). Its own state is an event log in a `regent-store` under the data directory, so it
//!   survives restarts (and `kill -9`: a registration is answered only once it is on disk) and can be
//!   audited like the agent's log. The admin API needs the token written to `DIR/admin.token`.
//! - [`AdminClient`]: the blocking client behind `regent vault create / credentials / pin / machines`.
//! - [`HttpVaultClient`]: the agent's side, implementing the engine's
//!   [`VaultClient`](regent_engine::ports::VaultClient) port: signed registration and PIN checks,
//!   proxies, retries (lost answers too: every call is idempotent), and every failure turned into one
//!   of the agent's reason codes (a TLS failure as what is wrong with the certificate). It also
//!   reports the head of the agent's log to the vault and reads it back ([`HeadSigner`],
//!   [`AnchorError`]). The client is why this crate depends on `regent-engine` (its port and
//!   `ProxyConfig`); the service uses nothing of the engine.
//! - [`rebuild_projections`] and [`migrate_to_postgres`]: the PostgreSQL tables made again from the
//!   log, and a sled vault's log moved into a database (`regent vault rebuild-projections`,
//!   `regent vault migrate`).
//! - [`protocol`]: `regent-protocol`, re-exported: the wire format both sides share (JSON over HTTP
//!   under `/v1`), the table of routes the router is built from, the exact bytes a registration, a PIN
//!   check and a log-head report sign, and the codes ([`ErrorCode`], [`Reason`](protocol::Reason)).
//!   `README.md` in this crate summarizes it.

mod admin;
mod api;
mod audit;
mod client;
mod error;
mod events;
mod export;
mod fleet;
mod http;
mod log_head;
mod maintenance;
mod metrics;
mod ops;
mod rules;
mod server;
mod service;
mod state;
mod storage;
mod tls;
mod token;
mod transparency;

pub use admin::AdminClient;
pub use client::{ClientOptions, HttpVaultClient};
pub use error::{AdminError, ClientError, DatabaseProblem, MoveError, VaultError};
#[doc(hidden)]
pub use maintenance::rebuild_projections_at;
pub use maintenance::{MigrateOptions, MigrationSummary, RebuildSummary, migrate_to_postgres, rebuild_projections};
/// The engine's anchoring port types, which this crate's client implements ([`HeadKeeper`]).
pub use regent_engine::anchoring::{AnchorError, HeadKeeper, HeadSigner};
pub use regent_protocol as protocol;
pub use regent_protocol::{Anchor, AnchorRefusal, CredentialsFile, ErrorCode, IssuedPin, MachineInfo, VaultInfo};
pub use server::{BackgroundServer, RunningServer, ServeConfig, ServerInfo, TlsFiles, run_until_signal, serve};
pub use token::{ADMIN_TOKEN_FILE, read_token_file};
