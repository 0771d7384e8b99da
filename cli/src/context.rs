//! What one command run needs: the data dir, the store (opened once), the secrets area, the world.

use std::path::{Path, PathBuf};

use regent_engine::Reason;
use regent_engine::anchoring::HeadSigner;
use regent_engine::model::{PinAnswer, ProbeAnswer, VaultAnswer};
use regent_engine::ports::{PinCheck, RegisterRequest, VaultClient, World};
use regent_secrets::{MachineKey, SecretsArea};
use regent_store::{EventStore, StoreError, StoreOptions};

use crate::args::Global;
use crate::damage;
use crate::data_dir::{self, Choice, Facts, Role};
use crate::failure::Failure;
use crate::terminal::errln;
use crate::world;

/// sled's page cache for the CLI: small, since a command reads at most the events since the
/// last checkpoint (sled's default is 1 GiB).
const CLI_CACHE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct Context {
    pub json: bool,
    pub data_dir: PathBuf,
    /// The data dir was named (`--data-dir`, `REGENT_DATA_DIR`), not the default: a read-only
    /// command refuses one that does not exist, since it is more likely mistyped than new.
    pub data_dir_named: bool,
    /// The CA file this command was given for the vault (`--ca-file`), for every call it makes
    /// (the step's and the head reported after it), remembered for later commands.
    pub ca_file: Option<PathBuf>,
    /// Whether an accepted step prints the `next: ...` command line. Off in quickstart, which
    /// runs the next step itself.
    pub next_hints: bool,
    /// Whether this command opened the store already (see `open_store_as_is`).
    opened: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Context {
    /// The context of a command run as `role`. `keeps_state`: the command reads or writes the
    /// data dir (not `replay`, `completions`, ...), so state left where an earlier build kept it
    /// is refused (see `data_dir`) rather than passed over.
    pub fn new(global: &Global, role: Role, keeps_state: bool) -> Result<Context, Failure> {
        let dirs = directories::BaseDirs::new();
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let facts = Facts { named: global.data_dir.as_deref(), root, user_data: dirs.as_ref().map(|d| d.data_dir()) };
        let data_dir = match data_dir::choose(role, facts, Path::exists) {
            Choice::Named(dir) | Choice::Default(dir) => dir,
            Choice::Moved { default, .. } if !keeps_state => default,
            Choice::Moved { found, holds, default, default_exists } => {
                return Err(Failure::usage(data_dir::moved_message(role, &found, &holds, &default, default_exists)));
            }
            Choice::NoHome => {
                return Err(Failure::usage(
                    "no home directory to keep data in; pass --data-dir DIR or set REGENT_DATA_DIR",
                ));
            }
        };
        Ok(Context {
            json: global.json,
            data_dir,
            data_dir_named: global.data_dir.is_some(),
            ca_file: None,
            next_hints: true,
            opened: Default::default(),
        })
    }

    /// The same context, for a command given `--ca-file` (made absolute: it is remembered).
    pub fn with_ca_file(&self, ca_file: Option<&Path>) -> Context {
        let ca_file = ca_file.map(|path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Context { ca_file: ca_file.or_else(|| self.ca_file.clone()), ..self.clone() }
    }

    /// The same context, for a command that runs the steps one after another itself.
    pub fn without_next_hints(&self) -> Context {
        Context { next_hints: false, ..self.clone() }
    }

    /// The log, opened anew for each phase of a step (see `regent_engine::ports::LogAccess`).
    pub fn log(&self) -> ContextLog<'_> {
        ContextLog(self)
    }

    /// The store for a command that only reads: `None` when nothing was recorded yet. Creates
    /// nothing: a data dir named but missing is a mistake said as one; the default one not made
    /// yet is a machine where nothing happened.
    pub fn open_existing_store(&self) -> Result<Option<EventStore>, Failure> {
        self.check_exists()?;
        if !self.data_dir.exists() || !self.store_dir().exists() {
            return Ok(None);
        }
        self.open_store().map(Some)
    }

    /// A data dir named but missing, or one that holds keys but no store: said as a failure.
    /// Otherwise fine, whether there is a store yet or not.
    fn check_exists(&self) -> Result<(), Failure> {
        if !self.data_dir.exists() {
            if self.data_dir_named {
                return Err(Failure::store(format!(
                    "there is no data directory at {} (named by --data-dir or REGENT_DATA_DIR); check the path, or start one there with a step such as `regent folders`",
                    self.data_dir.display()
                ))
                .because("data_dir_missing"));
            }
            return Ok(());
        }
        if !self.data_dir.is_dir() {
            return Err(Failure::store(format!(
                "the data directory {} is not a directory; pass the folder regent keeps its data in with --data-dir",
                self.data_dir.display()
            ))
            .because("data_dir_not_a_directory"));
        }
        if !self.store_dir().exists() {
            let holds = ["machine.key", "secrets", "log-anchor.json"]
                .into_iter()
                .filter(|name| self.data_dir.join(name).exists())
                .collect::<Vec<_>>();
            if holds.is_empty() {
                return Ok(());
            }
            return Err(Failure::store(format!(
                "the store folder {} is missing, though the data directory holds {}: the log was deleted or moved; put it back, or restore it from an export with `regent import FILE`",
                self.store_dir().display(),
                holds.join(", ")
            ))
            .because("store_damaged"));
        }
        Ok(())
    }

    /// As [`Context::open_existing_store`], but a damaged store is opened as it is (for the
    /// commands that show the damage).
    pub fn open_existing_store_as_is(&self) -> Result<Option<EventStore>, OpenError> {
        self.check_exists().map_err(OpenError::Failure)?;
        if !self.data_dir.exists() || !self.store_dir().exists() {
            return Ok(None);
        }
        self.open_store_as_is().map(Some).map_err(OpenError::Store)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// Opens the store, saying on stderr that we wait if another regent holds it. A damaged store
    /// is refused, with what still reads and how to restore it.
    pub fn open_store(&self) -> Result<EventStore, Failure> {
        let store = self.open_store_as_is().map_err(|e| damage::open_failure(e, damage::SALVAGE_LIMIT_BYTES, None))?;
        match store.damage() {
            Some(found) => Err(damage::of_store(&store, found, None)),
            None => Ok(store),
        }
    }

    /// Opens the store even when it was found damaged, for the commands that show the damage
    /// (status, verify, import).
    pub fn open_store_as_is(&self) -> Result<EventStore, StoreError> {
        damage::refuse_emptied(&self.store_dir())?;
        // The data dir is made 0700 here (it holds the machine key) before sled makes it with the
        // umask's mode. Read-only commands never get here without one. If it cannot be made,
        // opening the store says why.
        if !self.data_dir.exists() {
            let _ = regent_secrets::create_private_dir(&self.data_dir);
        }
        let options = StoreOptions { cache_bytes: CLI_CACHE_BYTES, ..StoreOptions::default() };
        let data_dir = self.data_dir.display().to_string();
        // After this command's own first open, a lock still held is most likely its own: sled lets
        // go of it a moment after a store is dropped (its I/O threads finish first). The wait
        // stays; the notice that another regent command holds it would be wrong.
        let first = !self.opened.swap(true, std::sync::atomic::Ordering::Relaxed);
        EventStore::open_with_notice(self.store_dir(), &options, |wait| {
            if first {
                errln!("regent: another regent command is using {data_dir}; waiting up to {} s for it", wait.as_secs());
            }
        })
    }

    /// Creates the data dir (mode 0700) and its missing parents, unless it exists.
    pub fn create_data_dir(&self) -> Result<(), Failure> {
        regent_secrets::create_private_dir(&self.data_dir).map_err(|e| {
            Failure::store(format!(
                "cannot create the data directory {}: {e}; choose another with --data-dir",
                self.data_dir.display()
            ))
        })
    }

    /// The sealed-secrets area, creating the data dir and machine key on first use.
    pub fn secrets_area(&self) -> Result<SecretsArea, Failure> {
        self.create_data_dir()?;
        let key = MachineKey::load_or_create(&self.data_dir)?;
        Ok(SecretsArea::open_dir(&self.data_dir, key)?)
    }
}

/// Why a store could not be opened as it is: a failure said already, or the store's own error.
pub enum OpenError {
    Failure(Failure),
    Store(StoreError),
}

/// The log as the engine opens it: through [`Context::open_store`], which waits for another
/// regent (saying so) and reports a damaged store.
pub struct ContextLog<'a>(&'a Context);

impl regent_engine::ports::LogAccess for ContextLog<'_> {
    /// A damaged store refuses appends itself; it is opened as it is, and the step's append says so.
    fn open(&self) -> Result<EventStore, StoreError> {
        self.0.open_store_as_is()
    }
}

/// The vault for commands that never reach it. Being asked anything is a bug, answered as one.
pub struct NoVault;

impl VaultClient for NoVault {
    fn register(&self, _: &RegisterRequest) -> VaultAnswer {
        VaultAnswer::Refused { reason: Reason::VaultError, detail: "internal: this command has no vault client".into() }
    }

    fn check_pin(&self, _: &PinCheck) -> PinAnswer {
        PinAnswer::Refused { reason: Reason::VaultError, detail: "internal: this command has no vault client".into() }
    }

    fn probe(&self, _: &HeadSigner) -> ProbeAnswer {
        ProbeAnswer::Failed { reason: Reason::VaultError, detail: "internal: this command has no vault client".into() }
    }
}

/// The real world, with `vault` for the commands that reach it.
pub fn real_world<'a>(secrets: &'a world::SealedFiles<'a>, vault: &'a dyn VaultClient) -> World<'a> {
    World {
        clock: &world::SystemClock,
        folders: &world::DiskFolders,
        files: &world::LocalFiles,
        random: &world::OsRandom,
        secrets,
        passphrase_files: &world::KeptPassphraseFiles,
        vault,
        machine_name: regent_store::host_name(),
        build: crate::build::recorded(),
    }
}
