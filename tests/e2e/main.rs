//! End-to-end tests: the real `regent` binary on a real store in a temp dir.

mod anchor;
mod audit;
mod crash;
mod credentials_output;
mod damage;
mod data_dirs;
mod escape;
mod fixtures;
mod fleet;
mod help;
mod inputs;
mod large_logs;
mod moving;
mod quickstart;
mod register;
mod replay;
mod secret_scans;
mod serve;
mod settings;
mod snapshots;
mod steps;
mod support;
mod vault_database;
mod vault_kill;
mod vault_log;
mod wizard_pty;
