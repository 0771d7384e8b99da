//! The `regent` command line. This first cut covers the log itself (verify, export); the wizard
//! steps and views arrive with the engine.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use regent_store::{EventStore, Head, StoreError, StoreOptions, VerifyReport};

/// Exit codes of spec/cli.md.
const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_STORE: u8 = 3;

#[derive(Parser)]
#[command(name = "regent", version, about = "Registers this server with a backup vault, keeping an auditable log")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Where the agent keeps its store and keys.
    #[arg(long, global = true, env = "REGENT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The audit trail: verify the log, export it.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of the store, or of an exported log; names the first bad record.
    Verify {
        /// An exported log to check instead of the store.
        #[arg(long, value_name = "LOG")]
        file: Option<PathBuf>,
        /// A head kept elsewhere (POSITION:HASH) the log must reach; catches a cut-off tail.
        #[arg(long, value_name = "POSITION:HASH")]
        head: Option<Head>,
    },
    /// Write the log as JSON Lines; the export verifies on its own.
    Export {
        /// Where to write; standard output when absent.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// A failure with the exit code it maps to; its message is one line saying what to do next.
struct Failure {
    code: u8,
    message: String,
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        let code = match err {
            StoreError::Locked { .. }
            | StoreError::NotADirectory { .. }
            | StoreError::Io { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Internal(_) => EXIT_STORE,
            _ => EXIT_REFUSED,
        };
        Failure { code, message: err.to_string() }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("regent: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Audit(AuditCommand::Verify { file, head }) => {
            let report = match file {
                Some(file) => {
                    let input = std::fs::File::open(&file).map_err(|e| Failure {
                        code: EXIT_REFUSED,
                        message: format!("cannot read {}: {e}; check the path", file.display()),
                    })?;
                    regent_store::verify_export(BufReader::new(input), head)?.1
                }
                None => open_store(&cli.global)?.verify(head)?,
            };
            print_report(&report, cli.global.json);
            Ok(if report.is_ok() { 0 } else { EXIT_REFUSED })
        }
        Command::Audit(AuditCommand::Export { output }) => {
            let store = open_store(&cli.global)?;
            let writer = concat!("regent ", env!("CARGO_PKG_VERSION"));
            let head = match &output {
                Some(path) => export_to_file(&store, path, writer)?,
                None => store.export(&mut std::io::stdout().lock(), writer)?,
            };
            if let Some(path) = output {
                eprintln!("exported {} records to {} (head {head})", head.position, path.display());
            }
            Ok(0)
        }
    }
}

/// Writes the export to a temporary file beside the target and renames it, so a failed export
/// never leaves a truncated file where a good one is expected.
fn export_to_file(store: &EventStore, path: &Path, writer: &str) -> Result<Head, Failure> {
    let io = |e: std::io::Error| Failure {
        code: EXIT_REFUSED,
        message: format!("cannot write {}: {e}; choose a writable location", path.display()),
    };
    if path.exists() {
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("{} already exists; choose another file or remove it first", path.display()),
        });
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let head = {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        let head = store.export(&mut out, writer)?;
        out.flush().map_err(io)?;
        head
    };
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist_noclobber(path).map_err(|e| io(e.error))?;
    Ok(head)
}

fn open_store(global: &Global) -> Result<EventStore, Failure> {
    let data_dir = match &global.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir().ok_or_else(|| Failure {
            code: EXIT_USAGE,
            message: "no home directory to keep data in; pass --data-dir DIR or set REGENT_DATA_DIR".into(),
        })?,
    };
    let store_dir = data_dir.join("store");
    let store = EventStore::open_with_notice(&store_dir, &StoreOptions::default(), |wait| {
        eprintln!("regent: another regent command is using {}; waiting up to {wait:?}", data_dir.display());
    })?;
    Ok(store)
}

fn default_data_dir() -> Option<PathBuf> {
    let home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))?;
    Some(home.join("regent"))
}

fn print_report(report: &VerifyReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_else(|_| "{}".into()));
        return;
    }
    match &report.failure {
        None => println!("ok: {} records verified; head {}", report.records, report.verified_head),
        Some(failure) => {
            println!("FAILED at {failure}");
            println!("verified up to head {} ({} records)", report.verified_head, report.records);
        }
    }
}
