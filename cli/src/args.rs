//! The command line; `docs/cli.md` describes it, and `contract.rs` fails when the two disagree.
//! Secrets never come from arguments: only from stdin, a file, a named environment variable or a
//! masked prompt.
//!
//! Longer than most modules on purpose: it is the whole contract of the command line declared in
//! one place (clap derives parsing, help, completions and the manual page from it), and split
//! across files it would be harder to read as the contract it is. It holds no logic beyond
//! parsing values.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use regent_store::Head;

#[derive(Parser)]
#[command(
    name = "regent",
    version = crate::build::DESCRIPTION,
    about = "Registers this server with a backup vault, keeping a verifiable audit log",
    after_help = "Start with `regent wizard` (it asks for each answer) or `regent status`; the steps are folders, proxy, credentials, passphrase, register."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Where regent keeps its state [default: ~/.local/share/regent, as root /var/lib/regent;
    /// for `vault serve`, regent-vault in place of regent].
    // The help would show the variable's value as it is, control characters and all.
    #[arg(long, global = true, env = "REGENT_DATA_DIR", hide_env_values = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Machine-readable output on stdout (JSON; JSON Lines where a command streams).
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v, -vv); RUST_LOG is honoured.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// The whole job in one command: a vault in-process on 127.0.0.1, every step, registered.
    Quickstart,
    /// Choose the install and scratch (cache) folders.
    Folders(FoldersArgs),
    /// The proxy used for every call to the vault.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Load the vault credentials file downloaded from the vault.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Create the encryption passphrase (generated, or your own).
    #[command(subcommand)]
    Passphrase(PassphraseCommand),
    /// Register this machine with the vault named in the loaded credentials.
    Register(RegisterArgs),
    /// Forget the registration so that this machine can register again (recorded).
    Unregister,
    /// Phase, next step, last failure, and the head of the log.
    Status,
    /// The Change Properties view, and the commands that change it.
    Properties {
        #[command(subcommand)]
        change: Option<PropertiesCommand>,
    },
    /// The audit trail: who configured what, when, accepted or refused.
    Audit(AuditArgs),
    /// Rebuild state from an exported log, touching nothing else; --check re-decides every step.
    Replay(ReplayArgs),
    /// Restore the log from an export into an empty store (move a damaged store aside first).
    #[command(long_about = IMPORT_ABOUT, after_help = IMPORT_EXITS)]
    Import {
        /// An export made by `regent audit export`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// The wizard: every step in order, with prompts on a terminal; `--unattended` runs from flags.
    #[command(long_about = WIZARD_ABOUT, after_help = WIZARD_EXITS)]
    Wizard(WizardArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell the script is for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `regent man | man -l -`.
    Man {
        /// Write one page per command instead (regent.1, regent-vault-serve.1, ...) into this
        /// existing directory, replacing pages of those names.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The vault service (the local counterpart of the portal) and its admin commands.
    #[command(subcommand)]
    Vault(VaultCommand),
}

const WIZARD_ABOUT: &str = "The wizard: every registration step in order.

On a terminal, `regent wizard` asks for each answer in turn (folders, proxy, vault credentials,
encryption passphrase, register), says what it needs and why, takes secrets at a masked prompt,
and offers a refused screen again with the answers filled in. Every answer is recorded as the step
commands record it. Run again after a stop, it resumes at the first step not done yet. The step
flags below, given without --unattended, become the answers it offers (secrets are always typed).
--endpoint and --ca-file apply in both modes.

With --unattended it runs the same steps from the flags alone, for provisioning scripts, and stops
at the first refusal. Run again on a registered machine, it compares the flags with its state and
says each one that differs, with what changes it; with --json it prints one JSON object.";

const WIZARD_EXITS: &str = "Exit status:
  0    registered (or registered already, with --unattended flags that match its state)
  1    a step was refused and the wizard stopped, or --unattended flags differ from the
       registered machine's state (each difference said, nothing recorded)
  2    usage error, e.g. no terminal without --unattended, or --json without --unattended
  3    the store could not be used
  130  stopped at a prompt: Esc, Ctrl-C, or no to \"Register now?\"
The steps done before a stop are kept: run `regent wizard` again to resume.";

const IMPORT_ABOUT: &str = "Restore the log from an export into an empty store.

The export's hash chain is verified as it is read, and the file must reach the head its header
names: a broken or cut-short file is refused and nothing is imported. The store must be empty: move
a damaged or unwanted one aside first (the message names the `mv` to run). The machine key and the
sealed secrets are left as they are; `regent status` says which sealed values the log refers to
that cannot be read here (after an import on another machine, for instance).";

const IMPORT_EXITS: &str = "Exit status:
  0    imported
  1    the file is refused: not an export, a broken chain, cut short
  2    usage error
  3    the store cannot be used: not empty, damaged, locked";

const SERVE_ABOUT: &str = "Run the vault service in the foreground until SIGINT or SIGTERM.

`--data-dir DIR` is the vault's own directory: its log, and `admin.token` (mode 0600), written at the
first start, which the admin commands need. The service prints the address it listens on and the
token's path, then serves; it does not fork into the background (run it under systemd, say, whose
unit `regent-vault.service` the Debian package installs).

Each option can come from its environment variable instead (REGENT_VAULT_LISTEN,
REGENT_VAULT_TLS_CERT, REGENT_VAULT_TLS_KEY, REGENT_VAULT_PUBLIC_URL, REGENT_VAULT_LOG_FORMAT,
REGENT_VAULT_DATABASE_URL); an option given on the command line wins.

With `--database-url postgres://USER@HOST:PORT/DB` the log and the state live in that PostgreSQL
database, in the schema `regent_vault` (created and migrated at start), and several processes may
serve it at once behind a load balancer; `--data-dir` then holds only `admin.token`, and every
process must be given the same token file (the database keeps its SHA-256 and refuses another).
A password in `--database-url` is refused, since the command line is visible to every user: put
the URL in REGENT_VAULT_DATABASE_URL, or the password in PGPASSWORD or ~/.pgpass. A database it
cannot use (unreachable, a refused login, another application's schema, a newer build's, another
admin token) stops the start with one line and exit 3, before anything is written.

The address is fixed (127.0.0.1:8443 by default) because every credentials file names the
service's endpoint: a port that changed at each start would break the files already downloaded.";

const REBUILD_ABOUT: &str = "Make the PostgreSQL tables of the vault again from its log.

In one transaction: the tables are locked (requests wait until it ends) and emptied, and every event
of the log is applied again in order, as the service applied it, while the log's hash chain is
verified up to its head. A chain that does not verify changes nothing. The log itself, the stream
versions and the nonces of requests that recorded nothing are left as they are. Prints the records,
vaults and machines.";

const MIGRATE_ABOUT: &str = "Move a vault from sled into a PostgreSQL database.

`--data-dir DIR` is the sled vault's directory (its log and admin.token), and no `regent vault
serve` may hold it. The log is verified, then copied record by record, byte for byte, in batches of
1000, each one transaction with its tables, so a move stopped anywhere resumes when run again. The
database must be empty or hold a move of this very log stopped before; any other log is refused and
nothing is written. The database is bound to DIR's admin.token: give every `vault serve
--database-url` process that token file, and PINs issued before the move still work.";

/// How the log on stderr is written (`vault serve --log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line for a person, values escaped.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (`message` and the rest).
    Json,
}

#[derive(Args)]
pub struct WizardArgs {
    /// Run every step from the flags below, without prompts (for provisioning scripts).
    #[arg(
        long,
        requires = "install_dir",
        requires = "scratch_dir",
        requires = "backup_size",
        requires = "credentials",
        requires = "passphrase_source"
    )]
    pub unattended: bool,
    /// The install folder (required with --unattended).
    #[arg(long, value_name = "DIR")]
    pub install_dir: Option<PathBuf>,
    /// The scratch (cache) folder (required with --unattended).
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// How much data will be backed up, e.g. 750GiB (required with --unattended).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub backup_size: Option<u64>,
    /// The proxy's host name or IP address (with --proxy-port).
    #[arg(long, value_name = "HOST", requires = "proxy_port")]
    pub proxy_host: Option<String>,
    /// The proxy's port, 1 to 65535.
    #[arg(long, value_name = "PORT", requires = "proxy_host")]
    pub proxy_port: Option<u32>,
    /// The user name the proxy asks for (its password from --proxy-password-env or -stdin).
    #[arg(long, value_name = "USER", requires = "proxy_host")]
    pub proxy_user: Option<String>,
    /// Read the proxy password from this environment variable (with --unattended).
    #[arg(
        long,
        value_name = "VAR",
        requires = "proxy_user",
        requires = "unattended",
        conflicts_with = "proxy_password_stdin"
    )]
    pub proxy_password_env: Option<String>,
    /// Read the proxy password from the first line of standard input (with --unattended).
    #[arg(long, requires = "proxy_user", requires = "unattended")]
    pub proxy_password_stdin: bool,
    /// The vault credentials file (required with --unattended).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Generate the passphrase and save it to this new file, mode 0600 (with --unattended, this or
    /// --passphrase-file).
    #[arg(long, value_name = "FILE", group = "passphrase_source")]
    pub generate_passphrase_to: Option<PathBuf>,
    /// Use the passphrase on the first line of this file (with --unattended).
    #[arg(long, value_name = "F", group = "passphrase_source", requires = "unattended")]
    pub passphrase_file: Option<PathBuf>,
    /// The vault service's address, instead of the one in the credentials file.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// A CA certificate (PEM) to trust for an HTTPS vault.
    #[arg(long, value_name = "F")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// An export made by `regent audit export`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Re-decide every recorded step with this build's rules and the recorded observations, and
    /// report the first step decided differently (exit 1).
    #[arg(long)]
    pub check: bool,
    /// Stop after this position.
    #[arg(long, value_name = "POSITION")]
    pub until: Option<u64>,
    /// Replay even if the hash chain is broken (it is checked by default).
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Subcommand)]
pub enum VaultCommand {
    /// Run the service in the foreground until SIGINT or SIGTERM; `--data-dir DIR` is the vault's own
    /// directory. Prints the address.
    #[command(long_about = SERVE_ABOUT)]
    Serve {
        /// Address to listen on (port 0 picks a free one, different at each start).
        // The variables' values are not shown in the help: they would be printed as they are.
        #[arg(
            long,
            value_name = "ADDR",
            default_value = "127.0.0.1:8443",
            env = "REGENT_VAULT_LISTEN",
            hide_env_values = true
        )]
        listen: String,
        /// The service's certificate chain (PEM), for HTTPS (with --tls-key).
        #[arg(long, value_name = "F", requires = "tls_key", env = "REGENT_VAULT_TLS_CERT", hide_env_values = true)]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, value_name = "F", requires = "tls_cert", env = "REGENT_VAULT_TLS_KEY", hide_env_values = true)]
        tls_key: Option<PathBuf>,
        /// The address agents should use, written into credentials files (default: as reached).
        #[arg(long, value_name = "URL", env = "REGENT_VAULT_PUBLIC_URL", hide_env_values = true)]
        public_url: Option<String>,
        /// How the service logs on stderr: text lines, or one JSON object a line (for a collector).
        #[arg(
            long,
            value_name = "FORMAT",
            value_enum,
            default_value_t = LogFormat::Text,
            env = "REGENT_VAULT_LOG_FORMAT",
            hide_env_values = true
        )]
        log_format: LogFormat,
        /// PostgreSQL database for the log and the state (several processes may share it); default: sled under --data-dir.
        // A URL with a password is refused here (argv is readable by every user): give it in
        // REGENT_VAULT_DATABASE_URL, PGPASSWORD or ~/.pgpass instead.
        #[arg(long, value_name = "URL", env = "REGENT_VAULT_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Create a vault.
    Create {
        /// The vault's name: 1 to 64 of A-Z a-z 0-9 - _ .
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Download vault credentials; each download supersedes the previous one.
    Credentials {
        /// The vault the credentials are for.
        #[arg(long, value_name = "NAME")]
        vault: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// A new file (`.VaultCredentials`), mode 0600: it can register machines to the vault.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// How long the file stays valid, e.g. 48h, 10d, 30m; at most 30 days (the vault's limit).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        validity: Option<std::time::Duration>,
    },
    /// Print a security PIN, valid for 5 minutes and usable once.
    Pin {
        /// The vault the PIN is for.
        #[arg(long, value_name = "NAME")]
        vault: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Write the service's whole log to a new file, an export `regent audit verify --file` checks;
    /// with --vault and --machine, the records the vault keeps of that machine's log.
    Export {
        #[command(flatten)]
        admin: AdminArgs,
        /// With --machine: the vault the machine is registered to.
        #[arg(long, value_name = "NAME", requires = "machine")]
        vault: Option<String>,
        /// With --vault: export this machine's log as the vault keeps it, not the service's own.
        #[arg(long, value_name = "MACHINE_ID", requires = "vault")]
        machine: Option<String>,
        /// A new file: written beside it, verified, then moved into place (never over a file).
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
    /// Make the PostgreSQL tables again from the log, verifying its chain, in one transaction.
    #[command(long_about = REBUILD_ABOUT)]
    RebuildProjections {
        /// The service's PostgreSQL database (no password in it: use REGENT_VAULT_DATABASE_URL,
        /// PGPASSWORD or ~/.pgpass).
        #[arg(long, value_name = "URL", env = "REGENT_VAULT_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Move a vault from sled (its --data-dir) into a PostgreSQL database; run again, it resumes.
    #[command(long_about = MIGRATE_ABOUT)]
    Migrate {
        /// The PostgreSQL database to move it into (no password in it: use
        /// REGENT_VAULT_DATABASE_URL, PGPASSWORD or ~/.pgpass).
        #[arg(long, value_name = "URL", env = "REGENT_VAULT_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// The vault's transparency log: its latest checkpoint (a C2SP signed note), verified.
    Checkpoint {
        /// The vault service's address (`vault serve` listens on 127.0.0.1:8443 unless told otherwise).
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8443")]
        server: String,
        /// A CA certificate (PEM) to trust for an HTTPS service.
        #[arg(long, value_name = "F")]
        ca_file: Option<PathBuf>,
        /// Print the vault's public key instead (a C2SP verifier key, the format --vault-key reads).
        #[arg(long, conflicts_with = "vault_key")]
        public_key: bool,
        /// Verify with this key (a file holding a C2SP verifier key) rather than the one the service names.
        #[arg(long, value_name = "KEYFILE")]
        vault_key: Option<PathBuf>,
    },
    /// Write a proof bundle for a machine's latest head, as the vault logged it (the auditor's way:
    /// from the vault, not from the machine under audit); `regent audit verify --proof` checks it.
    Proof {
        /// The vault the machine is registered to.
        #[arg(long, value_name = "NAME")]
        vault: String,
        /// The machine whose latest logged head is proved.
        #[arg(long, value_name = "MACHINE_ID")]
        machine: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Where to write the bundle (a new file).
        #[arg(long, short, value_name = "BUNDLE")]
        output: PathBuf,
        /// Also carry a consistency proof from a tree of N heads (an earlier bundle's size).
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Check the bundle with this key (a file holding a C2SP verifier key) before writing it.
        #[arg(long, value_name = "KEYFILE")]
        vault_key: Option<PathBuf>,
    },
    /// One row per machine of a vault, as its own log (kept at the vault) makes it: phase, proxy,
    /// throttling, scratch folder, passphrase, credentials expiry, last event, anchor status.
    Fleet {
        /// The vault whose fleet is listed.
        #[arg(long, value_name = "NAME")]
        vault: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// At most this many machines (1 to 1000; 100 unless given).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Start after this point: the `next` an earlier page gave.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// The events of a vault's machines' logs, accepted and refused, oldest first, filtered; a page.
    Audit {
        /// The vault whose machines' events are shown.
        #[arg(long, value_name = "NAME")]
        vault: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Only this machine's events.
        #[arg(long, value_name = "MACHINE_ID")]
        machine: Option<String>,
        /// Only events at or after this time (UTC; formats as `regent audit --since`).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events up to this time, the second or the day it names included.
        #[arg(long, value_name = "TIME", value_parser = parse_until)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this step (e.g. proxy), outcome or event kind, as `regent audit --kind` takes.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Only events recorded by this actor, as the audit shows it (user@host).
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
        /// Only accepted or only refused steps.
        #[arg(long, value_name = "OUTCOME", value_parser = ["accepted", "refused"])]
        outcome: Option<String>,
        /// At most this many events (1 to 1000; 100 unless given).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Start after this point: the `next` an earlier page gave.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// List the machines registered to a vault; `remove` removes one.
    #[command(args_conflicts_with_subcommands = true)]
    Machines {
        #[command(subcommand)]
        action: Option<MachinesCommand>,
        /// The vault whose machines are listed (needed without a subcommand).
        #[arg(long, value_name = "NAME")]
        vault: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum MachinesCommand {
    /// Remove a machine from a vault: it leaves the list, and its agent must register again.
    Remove {
        /// The vault the machine is removed from.
        #[arg(long, value_name = "NAME")]
        vault: String,
        /// The machine's id, as `regent vault machines` lists it.
        #[arg(value_name = "MACHINE_ID")]
        machine_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
pub struct AdminArgs {
    /// The vault service's address (`vault serve` listens on 127.0.0.1:8443 unless told otherwise).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8443")]
    pub server: String,
    /// The admin token file [default: admin.token in the service's data dir, the --data-dir
    /// `vault serve` was given or its default].
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an HTTPS service.
    #[arg(long, value_name = "F")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct FoldersArgs {
    /// Where the agent is installed (an absolute path; created if missing).
    #[arg(long, value_name = "DIR")]
    pub install_dir: PathBuf,
    /// The scratch (cache) folder: its filesystem needs free space of at least 5% of the backup size.
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: PathBuf,
    /// How much data will be backed up, e.g. 750GiB, 2TB, 1048576.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub backup_size: u64,
}

#[derive(Subcommand)]
pub enum ProxyCommand {
    /// Use a proxy (optionally with a user and password).
    Set(ProxySetArgs),
    /// Connect directly, without a proxy.
    Clear,
}

#[derive(Args)]
pub struct ProxySetArgs {
    /// The proxy's host name or IP address (a user and password go in their own options).
    #[arg(long)]
    pub host: String,
    /// 1 to 65535.
    #[arg(long, value_parser = clap::value_parser!(u32))]
    pub port: u32,
    /// The user name the proxy asks for (its password from --password-stdin, --password-env or a
    /// masked prompt).
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    #[command(flatten)]
    pub password: PasswordSource,
}

#[derive(Args, Default)]
#[group(multiple = false)]
pub struct PasswordSource {
    /// Read the proxy password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Read the proxy password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

#[derive(Subcommand)]
pub enum CredentialsCommand {
    /// Load a `.VaultCredentials` file.
    Load {
        /// The `.VaultCredentials` file from `regent vault credentials` (or the portal).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum PassphraseCommand {
    /// Generate a strong passphrase and save it to a new file (mode 0600).
    Generate {
        /// A new file in an existing folder, somewhere safe: off this machine is best.
        #[arg(long, value_name = "FILE")]
        save_to: PathBuf,
    },
    /// Use your own passphrase: at least 16 characters, printable ASCII.
    Set(PassphraseSource),
}

#[derive(Args, Default)]
#[group(multiple = false)]
pub struct PassphraseSource {
    /// Read the passphrase from the first line of standard input.
    #[arg(long)]
    pub passphrase_stdin: bool,
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "F")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct RegisterArgs {
    /// Load this credentials file first; on a machine registered to another vault, move it there
    /// (unregister from the old vault, register with this one, the passphrase kept).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// The vault service's address, instead of the one in the credentials file.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// A CA certificate (PEM) to trust for an HTTPS vault, beside the system roots.
    #[arg(long, value_name = "F")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum PropertiesCommand {
    /// Set or clear the proxy (as `regent proxy`).
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Move the scratch folder (the same space rule applies).
    ScratchDir {
        /// The new scratch folder (an absolute path).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Bandwidth throttling by work days and hours.
    #[command(subcommand)]
    Throttling(ThrottlingCommand),
    /// Change the passphrase; needs a security PIN from the vault.
    #[command(subcommand)]
    Passphrase(PassphraseChangeCommand),
}

#[derive(Subcommand)]
pub enum ThrottlingCommand {
    /// Limit the bandwidth: one rate in work hours on work days, another outside them.
    Set {
        /// The work days, e.g. mon-fri, or sat,sun.
        #[arg(long, value_name = "DAYS")]
        work_days: String,
        /// The work hours, start before end, e.g. 09:00-17:00.
        #[arg(long, value_name = "HH:MM-HH:MM")]
        work_hours: String,
        /// In work hours, e.g. 512Kbps, 20Mbps (512 Kbps to 1023 Mbps).
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        work_bandwidth: u64,
        /// Outside work hours, e.g. 20Mbps (512 Kbps to 1023 Mbps).
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        non_work_bandwidth: u64,
    },
    /// No throttling: the full bandwidth at all times.
    Off,
}

#[derive(Subcommand)]
pub enum PassphraseChangeCommand {
    /// Change the passphrase (your own, or a generated one).
    Change(PassphraseChangeArgs),
}

#[derive(Args)]
pub struct PassphraseChangeArgs {
    #[command(flatten)]
    pub source: PassphraseSource,
    /// Generate the new passphrase (with --save-to).
    #[arg(long, requires = "save_to", conflicts_with_all = ["passphrase_stdin", "passphrase_file"])]
    pub generate: bool,
    /// Where to save the generated passphrase: a new file, mode 0600.
    #[arg(long, value_name = "F", requires = "generate")]
    pub save_to: Option<PathBuf>,
    /// Read the security PIN from `regent vault pin` (valid 5 minutes, used once) from this
    /// environment variable, for scripts; without it, it is asked for at a masked prompt. Never
    /// on the command line, where every user sees it in `ps`.
    #[arg(long, value_name = "VAR")]
    pub security_pin_env: Option<String>,
    /// A CA certificate (PEM) to trust for an HTTPS vault, beside the system roots.
    #[arg(long, value_name = "F")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: Option<AuditCommand>,
    /// Only entries at or after this time (UTC): as the table prints it (2026-11-24 09:00:00), RFC
    /// 3339 (2026-11-24T09:00:00Z) or a date (2026-11-24).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only entries up to this time, the second or the day it names included (formats as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_until)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this step (e.g. proxy), outcome (accepted, refused) or event kind (e.g. StepRefused).
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<String>,
    /// Only the oldest N entries.
    #[arg(long, value_name = "N", conflicts_with = "tail")]
    pub limit: Option<usize>,
    /// Only the newest N entries (still listed oldest first).
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the store, or of an exported log; names the first bad record.
    Verify {
        /// An exported log to check instead of the store.
        #[arg(long, value_name = "LOG")]
        file: Option<PathBuf>,
        /// A head kept elsewhere (POSITION:HASH) the log must reach; catches a cut-off tail.
        #[arg(long, value_name = "POSITION:HASH", value_parser = parse_head)]
        head: Option<Head>,
        /// Also check the log against the head this machine anchored at its vault (fetched, signed):
        /// catches a tail cut off together with every head kept beside the log.
        #[arg(long, conflicts_with_all = ["file", "head"])]
        against_vault: bool,
        /// A proof bundle (`regent audit proof`, `regent vault proof`), repeatable: the log's head
        /// must be its machine's latest head the vault logged, and the bundles' checkpoints views
        /// of one tree.
        #[arg(long, value_name = "BUNDLE", conflicts_with_all = ["head", "against_vault"])]
        proof: Vec<PathBuf>,
        /// With --proof: the vault's key (a file holding a C2SP verifier key); the one this
        /// machine's log trusts when absent.
        #[arg(long, value_name = "KEYFILE", requires = "proof")]
        vault_key: Option<PathBuf>,
        /// With --against-vault or --proof: the vault service's address, instead of the
        /// registration's (with --proof, asked only for consistency proofs the bundles lack).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// With --against-vault or --proof: a CA certificate (PEM) to trust for an HTTPS vault.
        #[arg(long, value_name = "F")]
        ca_file: Option<PathBuf>,
    },
    /// Write a proof bundle for this machine's head: reported to the vault now, proved under its
    /// signed checkpoint; `regent audit verify --file EXPORT --proof BUNDLE` checks it offline.
    Proof {
        /// Where to write the bundle (a new file).
        #[arg(long, short, value_name = "BUNDLE")]
        output: PathBuf,
        /// The vault service's address, instead of the registration's.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// A CA certificate (PEM) to trust for an HTTPS vault.
        #[arg(long, value_name = "F")]
        ca_file: Option<PathBuf>,
    },
    /// Send the head of the log to the vault now (done after every step while registered; this
    /// retries one that did not get through).
    Anchor {
        /// The vault service's address, instead of the registration's.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// A CA certificate (PEM) to trust for an HTTPS vault; remembered for later anchors.
        #[arg(long, value_name = "F")]
        ca_file: Option<PathBuf>,
    },
    /// Write the log as JSON Lines; the export verifies on its own and replays.
    Export {
        /// Where to write (a new file); standard output when absent.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

// The value parsers' messages quote what was typed, and clap prints them inside its own line: they
// are escaped here, where the value is known (see terminal::clap_error).

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    parse_duration_limit(text).map_err(escaped)
}

fn escaped(message: String) -> String {
    crate::terminal::escape(&message).into_owned()
}

fn parse_duration_text(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration like 48h, 10d or 30m"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{text}' needs a unit: s, m, h or d (e.g. 48h)")),
    };
    number
        .checked_mul(seconds)
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("'{text}' is not a usable duration"))
}

fn parse_head(text: &str) -> Result<Head, String> {
    text.parse().map_err(escaped)
}

fn parse_size(text: &str) -> Result<u64, String> {
    regent_engine::units::parse_size(text).map_err(escaped)
}

fn parse_rate(text: &str) -> Result<u64, String> {
    regent_engine::units::parse_rate(text).map_err(escaped)
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_time_text(text).map(|(start, _)| start).map_err(escaped)
}

/// `--until`: the end of the period the text names (exclusive), so that the day or the second it
/// names is in.
fn parse_until(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_time_text(text).map(|(start, length)| start + length).map_err(escaped)
}

/// A time as regent prints one (`2026-11-24 09:00:00`, with ` UTC` or not, or to the minute), RFC
/// 3339, or a date, all UTC: its start, and how long a period it names (a day, a second, ...).
fn parse_time_text(text: &str) -> Result<(chrono::DateTime<chrono::Utc>, chrono::TimeDelta), String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
    let trimmed = text.trim();
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(trimmed) {
        let length = if time.timestamp_subsec_nanos() == 0 { TimeDelta::seconds(1) } else { TimeDelta::nanoseconds(1) };
        return Ok((time.to_utc(), length));
    }
    let local = trimmed.strip_suffix("UTC").map_or(trimmed, str::trim_end);
    for (format, length) in [
        ("%Y-%m-%d %H:%M:%S", TimeDelta::seconds(1)),
        ("%Y-%m-%dT%H:%M:%S", TimeDelta::seconds(1)),
        ("%Y-%m-%d %H:%M", TimeDelta::minutes(1)),
        ("%Y-%m-%dT%H:%M", TimeDelta::minutes(1)),
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(local, format) {
            return Ok((time.and_utc(), length));
        }
    }
    NaiveDate::parse_from_str(local, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| (t.and_utc(), TimeDelta::days(1)))
        .ok_or_else(|| {
            format!(
                "'{text}' is not a time; use one as the audit table prints it (2026-11-24 09:00:00, UTC), RFC 3339 (2026-11-24T09:00:00Z) or a date (2026-11-24)"
            )
        })
}

fn parse_kind(text: &str) -> Result<String, String> {
    use regent_engine::model::{Change, Outcome};
    use regent_engine::projections::{AUDIT_OUTCOMES, AuditFilter};
    if AuditFilter::is_known_kind(text) {
        return Ok(text.to_string());
    }
    let steps: Vec<&str> = regent_engine::Step::ALL.iter().map(|s| s.name()).collect();
    let kinds: Vec<&str> = Change::KINDS.into_iter().chain([Outcome::REFUSED_KIND]).collect();
    Err(escaped(format!(
        "'{text}' is not a kind; use a step ({}), an outcome ({}) or an event kind ({})",
        steps.join(", "),
        AUDIT_OUTCOMES.join(", "),
        kinds.join(", ")
    )))
}

fn parse_duration_limit(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration_text(text)?;
    let max = regent_vault::protocol::MAX_VALIDITY_SECS;
    if duration.as_secs() > max {
        return Err(format!("'{}' is longer than the vault allows: at most {} days", text.trim(), max / 86_400));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_the_table_prints_them_as_rfc_3339_and_as_dates() {
        let at = |text: &str| parse_time_text(text).map(|(start, length)| (start.to_rfc3339(), length.num_seconds()));
        let second = Ok(("2026-12-02T02:26:28+00:00".to_string(), 1));
        assert_eq!(at("2026-12-02 02:26:28"), second);
        assert_eq!(at("2026-12-02 02:26:28 UTC"), second);
        assert_eq!(at("2026-12-02T02:26:28Z"), second);
        assert_eq!(at("2026-12-02T03:26:28+01:00"), second);
        assert_eq!(at("2026-12-02 02:26 UTC"), Ok(("2026-12-02T02:26:00+00:00".to_string(), 60)));
        assert_eq!(at("2026-12-02"), Ok(("2026-12-02T00:00:00+00:00".to_string(), 86_400)));
        assert!(at("yesterday").is_err());
        assert!(at("2026-12-02 25:00:00").is_err());
        let until = parse_until("2026-12-02").unwrap();
        assert_eq!(until.to_rfc3339(), "2026-12-03T00:00:00+00:00");
    }

    #[test]
    fn an_unknown_kind_lists_the_kinds_as_the_audit_spells_them() {
        assert_eq!(parse_kind("Proxy").as_deref(), Ok("Proxy"));
        let err = parse_kind("proxies").unwrap_err();
        for named in
            ["folders", "scratch_folder", "passphrase_change", "accepted", "refused", "StepRefused", "ThrottlingSet"]
        {
            assert!(err.contains(named), "{named}: {err}");
        }
    }

    /// Every command and every argument says what it is in `--help` and the manual page (clap's own
    /// `--help` and `--version` aside).
    #[test]
    fn every_command_and_argument_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) || arg.is_hide_set() {
                    continue;
                }
                let said = arg.get_help().or(arg.get_long_help()).is_some_and(|h| !h.to_string().trim().is_empty());
                if !said {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().or(sub.get_long_about()).is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        let mut root = <Cli as clap::CommandFactory>::command();
        root.build();
        walk(&root, "regent", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:?}");
    }

    #[test]
    fn the_validity_help_says_the_vaults_maximum() {
        let max_days = regent_vault::protocol::MAX_VALIDITY_SECS / 86_400;
        let root = <Cli as clap::CommandFactory>::command();
        let credentials = root.find_subcommand("vault").and_then(|v| v.find_subcommand("credentials")).unwrap();
        let validity = credentials.get_arguments().find(|a| a.get_id() == "validity").unwrap();
        let help = validity.get_help().unwrap().to_string();
        assert!(help.contains(&format!("at most {max_days} days")), "{help}");
    }

    #[test]
    fn a_validity_past_the_vaults_maximum_is_refused_here() {
        let max_days = regent_vault::protocol::MAX_VALIDITY_SECS / 86_400;
        assert!(parse_duration_limit(&format!("{max_days}d")).is_ok());
        let err = parse_duration_limit(&format!("{}d", max_days + 1)).unwrap_err();
        assert!(err.contains(&format!("at most {max_days} days")), "{err}");
    }
}
