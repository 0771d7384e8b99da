//! The service end to end inside the engine: real store, real sealing under a machine key, real
//! credentials files, and a test vault that checks the possession signature. Afterwards no secret
//! is anywhere under the data dir or in an export.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use regent_engine::anchoring::HeadSigner;
use regent_engine::model::*;
use regent_engine::ports::*;
use regent_engine::service::{EngineError, Registrar, SecretInput, SecretInputs, StepResult};
use regent_engine::{Reason, projections};
use regent_secrets::{ExposeSecret, MachineKey, SecretString, SecretsArea};
use regent_store::{Actor, EventStore, StoreOptions};

/// What the binary would say it is; the service records it beside every step.
fn this_build() -> BuildId {
    BuildId { version: "0.1.0".into(), commit: "a5271b4c0d1e".into(), date: "2026-12-01".into() }
}

/// Sealed files beside the log as the binary keeps them (its adapter is in its own world).
struct AreaKeeper(SecretsArea);

impl SecretKeeper for AreaKeeper {
    fn seal(&self, kind: SecretKind, secret: &[u8]) -> Result<SealedRef, String> {
        Ok(SealedRef { id: self.0.seal(area_kind(kind), secret).map_err(|e| e.to_string())?.id })
    }

    fn open(&self, kind: SecretKind, sealed: &SealedRef) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
        self.0.open(area_kind(kind), &regent_secrets::SecretRef { id: sealed.id.clone() }).map_err(|e| e.to_string())
    }

    fn remove(&self, sealed: &SealedRef) -> Result<(), String> {
        self.0.remove(&regent_secrets::SecretRef { id: sealed.id.clone() }).map_err(|e| e.to_string())
    }
}

fn area_kind(kind: SecretKind) -> regent_secrets::SecretKind {
    match kind {
        SecretKind::ProxyPassword => regent_secrets::SecretKind::ProxyPassword,
        SecretKind::CredentialsPrivateKey => regent_secrets::SecretKind::CredentialsPrivateKey,
        SecretKind::Passphrase => regent_secrets::SecretKind::Passphrase,
        SecretKind::PassphraseVerifier => regent_secrets::SecretKind::PassphraseVerifier,
    }
}

struct TestClock(Cell<DateTime<Utc>>);
impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.get()
    }
}

/// Folders as a disk would report them, with a chosen amount of free space.
struct TestFolders {
    free: u64,
}
impl FolderProbe for TestFolders {
    fn probe(&self, path: &Path) -> FolderFacts {
        let existed = path.exists();
        FolderFacts {
            resolved: Some(path.to_path_buf()),
            existed,
            is_dir: path.is_dir(),
            writable: existed,
            creatable: !existed,
            filesystem: "ext4".into(),
            free_bytes: self.free,
            ..FolderFacts::default()
        }
    }

    fn create(&self, path: &Path) -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())
    }
}

/// The store opened anew for each phase, as the binary does.
struct TestLog {
    dir: PathBuf,
    /// How long to wait for another holder: sled's background work may hold the lock for a
    /// moment after a store is dropped.
    wait: std::time::Duration,
}
impl LogAccess for TestLog {
    fn open(&self) -> Result<EventStore, regent_store::StoreError> {
        EventStore::open(&self.dir, &StoreOptions { lock_wait: self.wait, ..StoreOptions::default() })
    }
}

struct Files;
impl FileReader for Files {
    fn read(&self, path: &Path, _limit: u64) -> Result<Vec<u8>, (UnreadableKind, String)> {
        std::fs::read(path).map_err(|e| (regent_engine::service::unreadable_kind(&e), e.to_string()))
    }
}

struct Random;
impl Randomness for Random {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String> {
        regent_secrets::OsRandom.fill(bytes).map_err(|e| e.to_string())
    }
}

/// Kept files as the binary keeps them; `fail_next_place` makes the next move fail, as a run
/// killed between recording the step and moving its file would leave it.
struct KeptFiles {
    fail_next_place: Cell<bool>,
}
impl PassphraseFile for KeptFiles {
    fn check(&self, path: &Path) -> Result<PathBuf, String> {
        regent_secrets::check_kept_file(path).map_err(|e| e.to_string())?;
        Ok(path.to_path_buf())
    }
    fn prepare(&self, path: &Path, passphrase: &SecretString) -> Result<PreparedFile, String> {
        let pending = regent_secrets::prepare_kept_file(path, passphrase).map_err(|e| e.to_string())?;
        Ok(PreparedFile { target: path.to_path_buf(), temporary: pending.temporary().to_path_buf() })
    }
    fn place(&self, file: &PreparedFile) -> Result<PathBuf, String> {
        if self.fail_next_place.replace(false) {
            return Err("the run was stopped".into());
        }
        regent_secrets::PendingFile::waiting(&file.target, &file.temporary).place().map_err(|e| e.to_string())?;
        Ok(file.target.clone())
    }
    fn discard(&self, file: &PreparedFile) {
        regent_secrets::PendingFile::waiting(&file.target, &file.temporary).discard();
    }
    fn pending(&self, path: &Path) -> bool {
        !path.exists() && regent_secrets::kept_file_pending(path)
    }
    fn finish(&self, path: &Path, passphrase: &SecretString) -> Result<bool, String> {
        regent_secrets::finish_kept_file(path, passphrase).map_err(|e| e.to_string())
    }
}

/// A vault that registers a machine only if the request is signed by the key of the newest
/// certificate it issued (one machine per request id, as the real one), and checks PINs. What it
/// saw is kept for the test to inspect. `lose_next_answer`: the next registration is made but
/// its answer is lost on the way back.
struct TestVault {
    newest_certificate: RefCell<Vec<u8>>,
    registrations: Cell<u32>,
    machines: RefCell<Vec<(String, String)>>,
    proxies_seen: RefCell<Vec<Option<(String, String)>>>,
    pin: String,
    pin_issued_at: DateTime<Utc>,
    pin_checks: Cell<u32>,
    lose_next_answer: Cell<bool>,
    /// The agent's log, which must not be held while the vault is asked.
    log: PathBuf,
    log_was_held: Cell<bool>,
}
impl TestVault {
    fn check_log_is_free(&self) {
        // Held by the engine, it stays held until this call returns: 2 s is never enough then.
        if (TestLog { dir: self.log.clone(), wait: std::time::Duration::from_secs(2) }).open().is_err() {
            self.log_was_held.set(true);
        }
    }
}
impl VaultClient for TestVault {
    fn register(&self, request: &RegisterRequest) -> VaultAnswer {
        self.check_log_is_free();
        let answer = self.register_once(request);
        if self.lose_next_answer.replace(false) {
            return VaultAnswer::Refused { reason: Reason::VaultUnreachable, detail: "the connection dropped".into() };
        }
        answer
    }

    fn check_pin(&self, check: &PinCheck) -> PinAnswer {
        self.check_log_is_free();
        self.pin_checks.set(self.pin_checks.get() + 1);
        if check.pin.expose_secret() == self.pin {
            PinAnswer::Valid { issued_at: self.pin_issued_at }
        } else {
            PinAnswer::Refused { reason: Reason::SecurityPinInvalid, detail: "unknown PIN".into() }
        }
    }

    /// A proxy whose password is `wrong` refuses it; any other lets the machine through.
    fn probe(&self, probe: &HeadSigner) -> ProbeAnswer {
        self.check_log_is_free();
        let credentials = probe
            .proxy
            .as_ref()
            .and_then(|p| p.credentials.as_ref().map(|(user, pw)| (user.clone(), pw.expose_secret().to_string())));
        let refused = credentials.as_ref().is_some_and(|(_, pw)| pw == "wrong");
        self.proxies_seen.borrow_mut().push(credentials);
        if refused {
            return ProbeAnswer::Failed {
                reason: Reason::ProxyAuthFailed,
                detail: "the proxy refused the user name or password (HTTP 407)".into(),
            };
        }
        ProbeAnswer::Reached
    }
}
impl TestVault {
    fn register_once(&self, request: &RegisterRequest) -> VaultAnswer {
        if let Some((_, machine)) = self.machines.borrow().iter().find(|(id, _)| *id == request.request_id) {
            return VaultAnswer::Registered {
                machine_id: machine.clone(),
                vault: request.vault.name.clone(),
                registered_at: Utc::now(),
            };
        }
        self.proxies_seen.borrow_mut().push(
            request
                .proxy
                .as_ref()
                .and_then(|p| p.credentials.as_ref().map(|(user, pw)| (user.clone(), pw.expose_secret().to_string()))),
        );
        let key = match regent_credentials::PrivateKey::from_pkcs8_der(&request.private_key) {
            Ok(key) => key,
            Err(e) => return VaultAnswer::Refused { reason: Reason::CredentialsInvalid, detail: e.to_string() },
        };
        let message = format!("{}|{}|{}", request.vault.name, request.machine_name, request.request_id);
        let signature = key.sign(message.as_bytes()).unwrap();
        let certificate = self.newest_certificate.borrow();
        match regent_credentials::verify_signature(&certificate, message.as_bytes(), &signature) {
            Ok(()) => {
                self.registrations.set(self.registrations.get() + 1);
                let machine = format!("machine-{}", self.registrations.get());
                self.machines.borrow_mut().push((request.request_id.clone(), machine.clone()));
                VaultAnswer::Registered {
                    machine_id: machine,
                    vault: request.vault.name.clone(),
                    registered_at: Utc::now(),
                }
            }
            Err(_) => VaultAnswer::Refused {
                reason: Reason::CredentialsSuperseded,
                detail: "a newer credentials file was downloaded".into(),
            },
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    log: TestLog,
    area: AreaKeeper,
    clock: TestClock,
    folders: TestFolders,
    files: KeptFiles,
    vault: TestVault,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = TestLog { dir: dir.path().join("store"), wait: std::time::Duration::from_secs(5) };
        let area =
            AreaKeeper(SecretsArea::open_dir(dir.path(), MachineKey::load_or_create(dir.path()).unwrap()).unwrap());
        Fixture {
            log,
            area,
            clock: TestClock(Cell::new(Utc::now())),
            folders: TestFolders { free: 1 << 40 },
            files: KeptFiles { fail_next_place: Cell::new(false) },
            vault: TestVault {
                newest_certificate: RefCell::new(Vec::new()),
                registrations: Cell::new(0),
                machines: RefCell::new(Vec::new()),
                proxies_seen: RefCell::new(Vec::new()),
                pin: "12345678".into(),
                pin_issued_at: Utc::now(),
                pin_checks: Cell::new(0),
                lose_next_answer: Cell::new(false),
                log: dir.path().join("store"),
                log_was_held: Cell::new(false),
            },
            dir,
        }
    }

    fn store(&self) -> EventStore {
        self.log.open().unwrap()
    }

    fn world(&self) -> World<'_> {
        World {
            clock: &self.clock,
            folders: &self.folders,
            files: &Files,
            random: &Random,
            secrets: &self.area,
            passphrase_files: &self.files,
            vault: &self.vault,
            machine_name: "srv-01".into(),
            build: this_build(),
        }
    }

    fn run(&self, command: Command, secrets: SecretInputs) -> Result<StepResult, EngineError> {
        Registrar::new(&self.log)
            .execute(&self.world(), Actor { user: "ops".into(), host: "srv-01".into() }, command, secrets)
            .map(|executed| executed.result)
    }

    fn reason_of(&self, command: Command, secrets: SecretInputs) -> Option<Reason> {
        match self.run(command, secrets).unwrap().record.outcome {
            Outcome::Accepted(_) => None,
            Outcome::Refused(r) => Some(r.reason),
        }
    }

    /// Issues a credentials file for `vault` into the temp dir, making it the vault's newest.
    fn download_credentials(&self, vault: &str, name: &str) -> (PathBuf, Vec<u8>) {
        let now = self.clock.now();
        let issued = regent_credentials::issue(&regent_credentials::IssueRequest {
            identity: regent_credentials::VaultIdentity {
                resource_name: vault.into(),
                subscription_id: "00000000-0000-0000-0000-000000000001".into(),
                resource_group: "rg-backup".into(),
                location: "westeurope".into(),
                resource_id: 7,
                resource_type: "Vaults".into(),
                provider_namespace: "Microsoft.RecoveryServices".into(),
            },
            aad_authority: String::new(),
            aad_tenant_id: String::new(),
            service_principal_client_id: String::new(),
            endpoint: "http://127.0.0.1:1".into(),
            agent_links: vec![],
            transparency_log_key: None,
            not_before: now - Duration::minutes(10),
            not_after: now + Duration::hours(48),
        })
        .unwrap();
        let path = self.dir.path().join(name);
        std::fs::write(&path, issued.xml.as_bytes()).unwrap();
        let parsed = regent_credentials::parse(name, issued.xml.as_bytes()).unwrap();
        *self.vault.newest_certificate.borrow_mut() = parsed.certificate_der.clone();
        (path, parsed.private_key.pkcs8_der().to_vec())
    }
}

fn secret(text: &str) -> Option<SecretInput> {
    Some(SecretInput::Given(SecretString::from(text.to_string())))
}

fn folders(f: &Fixture) -> Command {
    Command::ChooseFolders {
        install_dir: f.dir.path().join("install"),
        scratch_dir: f.dir.path().join("scratch"),
        backup_size_bytes: 100 << 30,
    }
}

/// Every form a secret could leak in.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let mut forms = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(secret).into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret).into_bytes(),
    ];
    // A long binary secret (a key) also must not appear in part: check a 16-byte window of it.
    if secret.len() > 64 {
        let middle = &secret[secret.len() / 2..secret.len() / 2 + 16];
        forms.push(middle.to_vec());
        forms.push(hex::encode(middle).into_bytes());
    }
    forms
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

#[test]
fn a_scripted_registration_leaves_no_secret_in_any_file_or_export() {
    let f = Fixture::new();
    let proxy_password = "Pr0xy-Secret-Sauce-9911";
    let passphrase = "correct horse battery staple 42!";
    assert!(f.run(folders(&f), SecretInputs::default()).unwrap().state.folders.is_some());
    let proxy =
        Command::SetProxy { host: "proxy.corp".into(), port: 3128, username: Some("svc".into()), password_given: true };
    let done = f.run(proxy, SecretInputs { proxy_password: secret(proxy_password), ..Default::default() }).unwrap();
    assert!(done.state.proxy.unwrap().password.is_some());
    let (credentials, private_key) = f.download_credentials("vault-a", "vault-a.VaultCredentials");
    // The credentials file itself holds the key; the operator deletes it after loading. The check
    // below is about what regent keeps, so the file is moved out of the data dir first.
    let outside = tempfile::tempdir().unwrap();
    let moved = outside.path().join("vault-a.VaultCredentials");
    std::fs::rename(&credentials, &moved).unwrap();
    assert_eq!(f.reason_of(Command::LoadCredentials { file: moved }, SecretInputs::default()), None);
    let set = Command::SetPassphrase { save_to: None };
    assert_eq!(f.reason_of(set, SecretInputs { passphrase: secret(passphrase), ..Default::default() }), None);
    let done = f.run(Command::Register { endpoint_override: None }, SecretInputs::default()).unwrap();
    assert!(matches!(done.record.outcome, Outcome::Accepted(Change::Registered(_))), "{:?}", done.record.outcome);
    // The vault client got the proxy password opened from its sealed copy.
    assert_eq!(f.vault.proxies_seen.borrow()[0], Some(("svc".into(), proxy_password.into())));

    let mut export = Vec::new();
    f.store().export(&mut export, "test").unwrap();
    // Nothing from which the passphrase can be guessed offline either: no verifier.
    assert!(!String::from_utf8_lossy(&export).contains("$argon2"), "the export holds a passphrase verifier");
    let mut places: Vec<(String, Vec<u8>)> = vec![("export".into(), export)];
    for path in files_under(f.dir.path()) {
        places.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    assert!(places.len() > 5, "the store, the key and the sealed files are all searched");
    for (name, secret) in [
        ("proxy password", proxy_password.as_bytes()),
        ("passphrase", passphrase.as_bytes()),
        ("private key", &private_key[..]),
    ] {
        for form in forms(secret) {
            for (place, bytes) in &places {
                assert!(!bytes.windows(form.len()).any(|w| w == form.as_slice()), "the {name} was found in {place}");
            }
        }
    }
}

#[test]
fn a_stale_credentials_download_is_superseded_at_registration_and_the_newest_registers() {
    let f = Fixture::new();
    f.run(folders(&f), SecretInputs::default()).unwrap();
    let (first, _) = f.download_credentials("vault-a", "first.VaultCredentials");
    let (second, _) = f.download_credentials("vault-a", "second.VaultCredentials");
    f.run(Command::LoadCredentials { file: first }, SecretInputs::default()).unwrap();
    let set = Command::SetPassphrase { save_to: None };
    f.run(set, SecretInputs { passphrase: secret("sixteen chars ok"), ..Default::default() }).unwrap();
    let register = || Command::Register { endpoint_override: None };
    assert_eq!(f.reason_of(register(), SecretInputs::default()), Some(Reason::CredentialsSuperseded));
    f.run(Command::LoadCredentials { file: second }, SecretInputs::default()).unwrap();
    assert_eq!(f.reason_of(register(), SecretInputs::default()), None);
    let (state, head) = Registrar::new(&f.log).state().unwrap();
    let status = projections::status(&state, head);
    // folders, load, passphrase, started, superseded (which ends the attempt), load, started, registered
    assert_eq!((status.phase, status.events, status.vault.as_deref()), ("registered", 8, Some("vault-a")));
    assert_eq!(status.last_failure, None, "the registration failure was resolved by registering");
}

#[test]
fn a_generated_passphrase_is_saved_0600_never_overwrites_and_is_shown_once() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.run(folders(&f), SecretInputs::default()).unwrap();
    let (credentials, _) = f.download_credentials("vault-a", "v.VaultCredentials");
    f.run(Command::LoadCredentials { file: credentials }, SecretInputs::default()).unwrap();
    let safe = tempfile::tempdir().unwrap();
    let target = safe.path().join("passphrase.txt");
    let done = f.run(Command::SetPassphrase { save_to: Some(target.clone()) }, SecretInputs::default()).unwrap();
    let shown = done.generated_passphrase.expect("shown once");
    assert!(shown.expose_secret().len() >= 32);
    assert_eq!(std::fs::read_to_string(&target).unwrap().trim_end(), shown.expose_secret());
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    let Outcome::Accepted(Change::PassphraseCreated(encryption)) = done.record.outcome else { panic!() };
    assert_eq!(encryption.verifier, None, "the verifier is not recorded");
    let sealed = encryption.verifier_sealed.expect("sealed beside the log");
    let phc = f
        .area
        .0
        .open(regent_secrets::SecretKind::PassphraseVerifier, &regent_secrets::SecretRef { id: sealed.id })
        .unwrap();
    let verifier = regent_secrets::PassphraseVerifier::from_phc(std::str::from_utf8(&phc).unwrap()).unwrap();
    assert!(verifier.verify(&shown));
    // Generating again to the same file is refused, and the file is untouched.
    let again = f.run(Command::SetPassphrase { save_to: Some(target.clone()) }, SecretInputs::default()).unwrap();
    assert!(matches!(again.record.outcome, Outcome::Refused(ref r) if r.reason == Reason::PassphraseInvalid));
    assert_eq!(std::fs::read_to_string(&target).unwrap().trim_end(), shown.expose_secret());
    // A generated passphrase saved inside the scratch folder is accepted with a warning.
    let inside = f.dir.path().join("scratch/pp.txt");
    let done = f.run(Command::SetPassphrase { save_to: Some(inside) }, SecretInputs::default()).unwrap();
    let Outcome::Accepted(Change::PassphraseCreated(encryption)) = done.record.outcome else { panic!() };
    assert!(encryption.warnings[0].contains("scratch folder"));
}

#[test]
fn a_passphrase_change_needs_the_vaults_pin_and_a_wrong_one_is_recorded() {
    let f = Fixture::new();
    f.run(folders(&f), SecretInputs::default()).unwrap();
    let (credentials, _) = f.download_credentials("vault-a", "v.VaultCredentials");
    f.run(Command::LoadCredentials { file: credentials }, SecretInputs::default()).unwrap();
    let set = Command::SetPassphrase { save_to: None };
    f.run(set, SecretInputs { passphrase: secret("the first passphrase"), ..Default::default() }).unwrap();
    f.run(Command::Register { endpoint_override: None }, SecretInputs::default()).unwrap();
    let change = || Command::ChangePassphrase { save_to: None };
    let with = |pin: &str| SecretInputs {
        passphrase: secret("the second passphrase"),
        security_pin: secret(pin),
        ..Default::default()
    };
    assert_eq!(f.reason_of(change(), with("00000000")), Some(Reason::SecurityPinInvalid));
    assert_eq!(f.reason_of(change(), with("12345678")), None);
    f.clock.0.set(f.clock.now() + Duration::minutes(6));
    assert_eq!(f.reason_of(change(), with("12345678")), Some(Reason::SecurityPinInvalid), "the PIN is 6 minutes old");
    // Without a PIN at all the command cannot run, and says how to give one.
    let err =
        f.run(change(), SecretInputs { passphrase: secret("the third passphrase"), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("security PIN"), "{err}");
}

#[test]
fn a_lost_machine_key_is_reported_at_registration_not_a_crash() {
    let f = Fixture::new();
    f.run(folders(&f), SecretInputs::default()).unwrap();
    let (credentials, _) = f.download_credentials("vault-a", "v.VaultCredentials");
    f.run(Command::LoadCredentials { file: credentials }, SecretInputs::default()).unwrap();
    let set = Command::SetPassphrase { save_to: None };
    f.run(set, SecretInputs { passphrase: secret("sixteen chars ok"), ..Default::default() }).unwrap();
    // The machine key is replaced (a restore without it): the sealed key cannot be opened.
    let other = tempfile::tempdir().unwrap();
    let foreign =
        AreaKeeper(SecretsArea::open_dir(other.path(), MachineKey::load_or_create(other.path()).unwrap()).unwrap());
    std::fs::remove_dir_all(other.path().join("secrets")).unwrap();
    std::fs::rename(f.dir.path().join("secrets"), other.path().join("secrets")).unwrap();
    let world = World { secrets: &foreign, ..f.world() };
    let done = Registrar::new(&f.log)
        .execute(
            &world,
            Actor { user: "ops".into(), host: "h".into() },
            Command::Register { endpoint_override: None },
            SecretInputs::default(),
        )
        .unwrap()
        .result;
    assert!(matches!(done.record.outcome, Outcome::Refused(ref r) if r.reason == Reason::CredentialsUnreadable));
    assert_eq!(f.vault.registrations.get(), 0, "the vault was not asked");
}

#[test]
fn debug_of_secret_holding_types_shows_nothing() {
    let inputs = SecretInputs { passphrase: secret("a very secret passphrase"), ..Default::default() };
    let shown = format!("{:?}", inputs.passphrase);
    assert!(!shown.contains("very secret"), "{shown}");
    let f = Fixture::new();
    let (_, key) = f.download_credentials("v", "v.VaultCredentials");
    let parsed = regent_credentials::PrivateKey::from_pkcs8_der(&key).unwrap();
    let shown = format!("{parsed:?}");
    assert!(!shown.contains(&hex::encode(&key[..16])) && shown.contains("redacted"), "{shown}");
}

/// Folders, credentials and a passphrase: ready to register.
fn ready(f: &Fixture) {
    f.run(folders(f), SecretInputs::default()).unwrap();
    let (credentials, _) = f.download_credentials("vault-a", "v.VaultCredentials");
    f.run(Command::LoadCredentials { file: credentials }, SecretInputs::default()).unwrap();
    let set = Command::SetPassphrase { save_to: None };
    f.run(set, SecretInputs { passphrase: secret("sixteen chars ok"), ..Default::default() }).unwrap();
}

#[test]
fn a_registration_whose_answer_was_lost_is_asked_again_with_its_request_id_and_makes_one_machine() {
    let f = Fixture::new();
    ready(&f);
    f.vault.lose_next_answer.set(true);
    let register = || Command::Register { endpoint_override: None };
    assert_eq!(f.reason_of(register(), SecretInputs::default()), Some(Reason::VaultUnreachable));
    assert_eq!(f.vault.registrations.get(), 1, "the vault made the machine; the answer was lost");
    let done = f.run(register(), SecretInputs::default()).unwrap();
    let Outcome::Accepted(Change::Registered(registration)) = done.record.outcome else { panic!() };
    assert_eq!(registration.machine_id, "machine-1", "the machine the vault made for the first run");
    assert_eq!(f.vault.registrations.get(), 1, "no second machine");
    assert!(!f.vault.log_was_held.get(), "the log was closed while the vault was asked");
}

#[test]
fn a_passphrase_change_refused_for_a_local_reason_spends_no_pin() {
    let f = Fixture::new();
    ready(&f);
    f.run(Command::Register { endpoint_override: None }, SecretInputs::default()).unwrap();
    let change = Command::ChangePassphrase { save_to: None };
    for (passphrase, reason) in
        [("short", Reason::PassphraseTooShort), ("  padded passphrase here  ", Reason::PassphraseInvalid)]
    {
        let secrets =
            SecretInputs { passphrase: secret(passphrase), security_pin: secret("12345678"), ..Default::default() };
        assert_eq!(f.reason_of(change.clone(), secrets), Some(reason));
    }
    let unusable = SecretInputs {
        passphrase: Some(SecretInput::Unusable("it is more than one line".into())),
        security_pin: secret("12345678"),
        ..Default::default()
    };
    assert_eq!(f.reason_of(change.clone(), unusable), Some(Reason::PassphraseInvalid));
    let bad_pin = SecretInputs {
        passphrase: secret("a good new passphrase"),
        security_pin: secret("1234"),
        ..Default::default()
    };
    assert_eq!(f.reason_of(change.clone(), bad_pin), Some(Reason::SecurityPinInvalid));
    // A file that exists already: nothing spent, nothing overwritten.
    let taken = f.dir.path().join("taken.txt");
    std::fs::write(&taken, "mine").unwrap();
    let generate = Command::ChangePassphrase { save_to: Some(taken.clone()) };
    assert_eq!(
        f.reason_of(generate, SecretInputs { security_pin: secret("12345678"), ..Default::default() }),
        Some(Reason::PassphraseInvalid)
    );
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "mine");
    assert_eq!(f.vault.pin_checks.get(), 0, "the vault was never asked");
    let good = SecretInputs {
        passphrase: secret("a good new passphrase"),
        security_pin: secret("12345678"),
        ..Default::default()
    };
    assert_eq!(f.reason_of(change, good), None);
    assert_eq!(f.vault.pin_checks.get(), 1);
    assert!(!f.vault.log_was_held.get(), "the log was closed while the vault was asked");
}

#[test]
fn a_refused_folders_step_creates_no_folder_and_an_accepted_one_does() {
    let mut f = Fixture::new();
    f.folders = TestFolders { free: 1 };
    assert_eq!(f.reason_of(folders(&f), SecretInputs::default()), Some(Reason::InsufficientScratchSpace));
    assert!(!f.dir.path().join("install").exists() && !f.dir.path().join("scratch").exists());
    f.folders = TestFolders { free: 1 << 40 };
    let done = f.run(folders(&f), SecretInputs::default()).unwrap();
    assert!(matches!(done.record.outcome, Outcome::Accepted(_)));
    assert!(f.dir.path().join("install").is_dir() && f.dir.path().join("scratch").is_dir());
    let scratch = done.record.observed.scratch.unwrap();
    assert!(scratch.created && !scratch.existed, "what is recorded is the folder as created: {scratch:?}");
}

#[test]
fn a_generated_passphrase_file_exists_only_once_recorded_and_a_stopped_move_is_finished_later() {
    let f = Fixture::new();
    f.run(folders(&f), SecretInputs::default()).unwrap();
    let (credentials, _) = f.download_credentials("vault-a", "v.VaultCredentials");
    f.run(Command::LoadCredentials { file: credentials }, SecretInputs::default()).unwrap();
    let safe = tempfile::tempdir().unwrap();
    let target = safe.path().join("passphrase.txt");
    // The run stops after recording, before the move.
    f.files.fail_next_place.set(true);
    let done = f.run(Command::SetPassphrase { save_to: Some(target.clone()) }, SecretInputs::default()).unwrap();
    assert!(matches!(done.record.outcome, Outcome::Accepted(Change::PassphraseCreated(_))));
    assert!(!target.exists());
    assert!(done.notes.iter().any(|n| n.contains("could not be put")), "{:?}", done.notes);
    let shown = done.generated_passphrase.unwrap();
    // The next command, whatever it is, finishes the move with the recorded passphrase.
    let next = f.run(Command::ThrottlingOff, SecretInputs::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap().trim_end(), shown.expose_secret());
    assert!(next.notes.iter().any(|n| n.contains("was put in place")), "{:?}", next.notes);
    assert_eq!(std::fs::read_dir(safe.path()).unwrap().count(), 1, "nothing else is left beside it");
}

#[test]
fn superseded_secrets_are_removed_and_current_ones_kept() {
    let f = Fixture::new();
    let proxy = |password: &str| {
        let command = Command::SetProxy {
            host: "proxy.corp".into(),
            port: 3128,
            username: Some("u".into()),
            password_given: true,
        };
        f.run(command, SecretInputs { proxy_password: secret(password), ..Default::default() }).unwrap()
    };
    let first = proxy("first-password").state.proxy.unwrap().password.unwrap();
    let second = proxy("second-password").state.proxy.unwrap().password.unwrap();
    let open = |r: &SealedRef| {
        f.area.0.open(regent_secrets::SecretKind::ProxyPassword, &regent_secrets::SecretRef { id: r.id.clone() })
    };
    assert!(matches!(open(&first), Err(regent_secrets::SecretsError::NotFound { .. })), "the old password is gone");
    assert_eq!(&open(&second).unwrap()[..], b"second-password");
    assert_eq!(f.area.0.count().unwrap(), 1);
    ready(&f);
    // proxy password, credentials key, passphrase and its verifier
    assert_eq!(f.area.0.count().unwrap(), 4);
    f.run(Command::ClearProxy, SecretInputs::default()).unwrap();
    assert_eq!(f.area.0.count().unwrap(), 3, "a cleared proxy's password goes too");
}

#[test]
fn a_sealed_value_the_log_never_named_is_left_alone() {
    // A log lost and started again: the sealed values of the old one may be needed once it is
    // restored from an export, so a step on the new log must not remove them.
    let f = Fixture::new();
    let theirs = f.area.0.seal(regent_secrets::SecretKind::ProxyPassword, b"the old log's password").unwrap();
    ready(&f);
    let proxy =
        Command::SetProxy { host: "proxy.corp".into(), port: 3128, username: Some("u".into()), password_given: true };
    f.run(proxy, SecretInputs { proxy_password: secret("a new one"), ..Default::default() }).unwrap();
    f.run(Command::ClearProxy, SecretInputs::default()).unwrap();
    assert!(f.area.0.open(regent_secrets::SecretKind::ProxyPassword, &theirs).is_ok());
}

#[test]
fn event_and_correlation_ids_are_uuid_v7_from_the_clock_and_the_random_port() {
    let f = Fixture::new();
    f.clock.0.set(DateTime::from_timestamp(1_800_000_000, 123_000_000).unwrap());
    f.run(folders(&f), SecretInputs::default()).unwrap();
    f.run(Command::Register { endpoint_override: Some("http://127.0.0.1:1".into()) }, SecretInputs::default()).unwrap();
    let records: Vec<_> = f.store().read_all(1).map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    for record in &records {
        for id in [record.event_id, record.correlation_id] {
            assert_eq!(id.get_version_num(), 7, "{id}");
            let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!((seconds, nanos / 1_000_000), (1_800_000_000, 123), "{id} is of the clock's time");
        }
    }
    assert_ne!(records[0].event_id, records[1].event_id);
    assert_ne!(records[0].correlation_id, records[1].correlation_id, "one correlation id a command run");
}

#[test]
fn every_step_recorded_names_the_build_the_binary_gave_refusals_and_registration_starts_too() {
    let f = Fixture::new();
    // Refused first (nothing to register with yet), then the steps and a registration.
    assert_eq!(
        f.reason_of(Command::Register { endpoint_override: None }, SecretInputs::default()),
        Some(Reason::StepOutOfOrder)
    );
    assert!(f.run(folders(&f), SecretInputs::default()).unwrap().state.folders.is_some());
    let (credentials, _) = f.download_credentials("vault-a", "vault-a.VaultCredentials");
    assert_eq!(f.reason_of(Command::LoadCredentials { file: credentials }, SecretInputs::default()), None);
    let set = Command::SetPassphrase { save_to: None };
    let passphrase = "correct horse battery staple 42!";
    assert_eq!(f.reason_of(set, SecretInputs { passphrase: secret(passphrase), ..Default::default() }), None);
    let done = f.run(Command::Register { endpoint_override: None }, SecretInputs::default()).unwrap();
    assert!(matches!(done.record.outcome, Outcome::Accepted(Change::Registered(_))), "{:?}", done.record.outcome);
    assert_eq!(done.record.build, Some(this_build()));
    let records: Vec<_> = f.store().read_all(1).map(Result::unwrap).collect();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert!(kinds.contains(&"RegistrationAttempted") && kinds.contains(&"StepRefused"), "{kinds:?}");
    for record in &records {
        assert_eq!(record.schema, SCHEMA_VERSION, "{}", record.kind);
        let step = regent_engine::events::decode(record).unwrap();
        assert_eq!(step.build, Some(this_build()), "{}", record.kind);
    }
}
