//! What one command run needs: the data dir, the store (opened once), the secrets area, the world.

use std::path::{Path, PathBuf};

use regent_engine::Reason;
use regent_engine::model::{PinAnswer, VaultAnswer};
use regent_engine::ports::{PinCheck, RegisterRequest, VaultClient, World};
use regent_secrets::{MachineKey, SecretsArea};
use regent_store::{EventStore, StoreError, StoreOptions};

use crate::args::Global;
use crate::damage;
use crate::failure::Failure;
use crate::world;

/// sled's page cache for the CLI: small, since a command reads at most the events since the
/// last checkpoint (sled's default is 1 GiB).
const CLI_CACHE_BYTES: u64 = 8 * 1024 * 1024;

pub struct Context {
    pub json: bool,
    pub data_dir: PathBuf,
}

impl Context {
    pub fn new(global: &Global) -> Result<Context, Failure> {
        let data_dir = match &global.data_dir {
            Some(dir) => dir.clone(),
            None => directories::BaseDirs::new().map(|dirs| dirs.data_dir().join("regent")).ok_or_else(|| {
                Failure::usage("no home directory to keep data in; pass --data-dir DIR or set REGENT_DATA_DIR")
            })?,
        };
        Ok(Context { json: global.json, data_dir })
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
        let options = StoreOptions { cache_bytes: CLI_CACHE_BYTES, ..StoreOptions::default() };
        let data_dir = self.data_dir.display().to_string();
        EventStore::open_with_notice(self.store_dir(), &options, |wait| {
            eprintln!("regent: another regent command is using {data_dir}; waiting up to {} s for it", wait.as_secs());
        })
    }

    /// The sealed-secrets area, creating the data dir and machine key on first use.
    pub fn secrets_area(&self) -> Result<SecretsArea, Failure> {
        create_private_dir(&self.data_dir)?;
        let key = MachineKey::load_or_create(&self.data_dir)?;
        Ok(SecretsArea::open_dir(&self.data_dir, key)?)
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
        Failure::store(format!(
            "cannot create the data directory {}: {e}; choose another with --data-dir",
            dir.display()
        ))
    })
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
}

/// The real world, with `vault` for the commands that reach it.
pub fn real_world<'a>(secrets: &'a SecretsArea, vault: &'a dyn VaultClient) -> World<'a> {
    World {
        clock: &world::SystemClock,
        folders: &world::DiskFolders,
        files: &world::LocalFiles,
        random: &world::OsRandom,
        secrets,
        passphrase_files: &world::NewSecretFiles,
        vault,
        machine_name: world::host_name(),
    }
}
