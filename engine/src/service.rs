//! Running one command: precheck, observe the world through the ports, decide, append.

use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, Head, StoreError};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::decide::{decide, precheck};
use crate::events::{self, STREAM};
use crate::model::{
    Command, CredentialFacts, CredentialsObserved, Observations, PassphraseObserved, SecretKind, StepRecord,
    UnreadableKind, Unsealable, VaultIdentity,
};
use crate::ports::{PinCheck, ProxyConfig, RegisterRequest, World};
use crate::projections::{self, ProjectionError};
use crate::state::State;

/// The largest credentials file read; real ones are a few KiB.
pub const MAX_CREDENTIALS_BYTES: u64 = 1024 * 1024;

/// Secrets that come with a command: from stdin, a file, an environment variable or a masked
/// prompt, never from the command itself.
#[derive(Default)]
pub struct SecretInputs {
    pub proxy_password: Option<SecretString>,
    pub passphrase: Option<SecretString>,
    pub security_pin: Option<SecretString>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("the {0} is needed for this step; give it with {1}")]
    MissingSecret(&'static str, &'static str),
    #[error("cannot keep the secret safely: {0}; check that the data directory is writable")]
    Secrets(String),
    #[error("the operating system's random source failed: {0}")]
    Randomness(String),
    #[error("the step could not be written: {0}")]
    Encode(String),
}

/// What a command did: the recorded step, where, and the state after it.
#[derive(Debug)]
pub struct StepResult {
    pub record: StepRecord,
    pub position: u64,
    pub state: State,
    pub head: Head,
    /// For a generated passphrase only: the passphrase, to be shown to the operator once.
    pub generated_passphrase: Option<SecretString>,
}

/// Runs registration commands against a store.
pub struct Registrar<'s> {
    store: &'s EventStore,
}

impl<'s> Registrar<'s> {
    pub fn new(store: &'s EventStore) -> Self {
        Registrar { store }
    }

    pub fn state(&self) -> Result<(State, Head), EngineError> {
        Ok(projections::current_state(self.store)?)
    }

    /// Runs one command and records its outcome, accepted or refused.
    pub fn execute(
        &self,
        world: &World<'_>,
        actor: Actor,
        command: Command,
        secrets: SecretInputs,
    ) -> Result<StepResult, EngineError> {
        let (state, _) = self.state()?;
        let correlation_id = Uuid::now_v7();
        let now = world.clock.now();
        let mut observed = Observations { now, ..Observations::default() };
        let mut generated = None;
        if precheck(&state, &command).is_none() {
            generated = observe(&state, &command, secrets, world, correlation_id, &mut observed)?;
        }
        let outcome = decide(&state, &command, &observed);
        let record = StepRecord { command, observed, outcome };
        let event = events::encode(&record).map_err(|e| EngineError::Encode(e.to_string()))?;
        let meta = BatchMeta { recorded_at: now, actor, correlation_id };
        let appended = self.store.append(STREAM, ExpectedVersion::Exact(state.version), &meta, &[event])?;
        let state = state.evolve(&record);
        if appended.head.position % projections::CHECKPOINT_EVERY == 0 {
            projections::save_checkpoint(self.store, &state, appended.head);
        }
        Ok(StepResult {
            record,
            position: appended.last_position,
            state,
            head: appended.head,
            generated_passphrase: generated,
        })
    }
}

/// Asks the world what the command needs to know. Returns a generated passphrase, if one was made.
fn observe(
    state: &State,
    command: &Command,
    mut secrets: SecretInputs,
    world: &World<'_>,
    correlation_id: Uuid,
    observed: &mut Observations,
) -> Result<Option<SecretString>, EngineError> {
    let now = observed.now;
    match command {
        Command::ChooseFolders { install_dir, scratch_dir, .. } => {
            observed.install = Some(world.folders.probe(install_dir, true));
            observed.scratch = Some(world.folders.probe(scratch_dir, true));
        }
        Command::MoveScratch { scratch_dir } => {
            observed.scratch = Some(world.folders.probe(scratch_dir, true));
            // Resolved too, so a link to (or into) the install folder is caught.
            observed.install = state.folders.as_ref().map(|f| world.folders.probe(&f.install_dir, false));
        }
        Command::SetProxy { password_given: true, .. } => {
            let password = secrets
                .proxy_password
                .take()
                .ok_or(EngineError::MissingSecret("proxy password", "--password-stdin or --password-env VAR"))?;
            let sealed = world
                .secrets
                .seal(SecretKind::ProxyPassword, password.expose_secret().as_bytes())
                .map_err(EngineError::Secrets)?;
            observed.proxy_password = Some(sealed);
        }
        Command::LoadCredentials { file } => {
            observed.credentials = Some(observe_credentials(file, world)?);
        }
        Command::SetPassphrase { save_to } => {
            let (passphrase, generated) = passphrase_input(save_to.is_some(), &mut secrets, world)?;
            observed.passphrase = Some(observe_passphrase(&passphrase, save_to.as_deref(), world)?);
            return Ok(generated);
        }
        Command::Register { endpoint_override } => {
            let Some(credentials) = &state.credentials else { return Ok(None) };
            let facts = &credentials.facts;
            if now < facts.not_before || now > facts.not_after {
                return Ok(None); // decide refuses expired credentials without asking the vault
            }
            let private_key = match world.secrets.open(SecretKind::CredentialsPrivateKey, &credentials.private_key) {
                Ok(key) => key,
                Err(detail) => {
                    observed.unsealable = Some(Unsealable { secret: SecretKind::CredentialsPrivateKey, detail });
                    return Ok(None);
                }
            };
            let proxy = match proxy_config(state, world) {
                Ok(proxy) => proxy,
                Err(detail) => {
                    observed.unsealable = Some(Unsealable { secret: SecretKind::ProxyPassword, detail });
                    return Ok(None);
                }
            };
            let request = RegisterRequest {
                endpoint: endpoint_override.clone().unwrap_or_else(|| facts.endpoint.clone()),
                vault: facts.vault.clone(),
                thumbprint: facts.thumbprint.clone(),
                machine_name: world.machine_name.clone(),
                private_key,
                proxy,
                request_id: correlation_id.to_string(),
            };
            observed.vault = Some(world.vault.register(&request));
        }
        Command::ChangePassphrase { save_to } => {
            let Some(registration) = &state.registration else { return Ok(None) };
            let pin = secrets.security_pin.take().ok_or(EngineError::MissingSecret(
                "security PIN",
                "--security-pin PIN (get one with `regent vault pin`)",
            ))?;
            let proxy = match proxy_config(state, world) {
                Ok(proxy) => proxy,
                Err(detail) => {
                    observed.unsealable = Some(Unsealable { secret: SecretKind::ProxyPassword, detail });
                    return Ok(None);
                }
            };
            let key = state
                .credentials
                .as_ref()
                .filter(|c| c.facts.thumbprint == registration.thumbprint)
                .ok_or_else(|| "the credentials this machine registered with are no longer loaded".to_string())
                .and_then(|c| world.secrets.open(SecretKind::CredentialsPrivateKey, &c.private_key));
            let private_key = match key {
                Ok(key) => key,
                Err(detail) => {
                    observed.unsealable = Some(Unsealable { secret: SecretKind::CredentialsPrivateKey, detail });
                    return Ok(None);
                }
            };
            let check = PinCheck {
                endpoint: registration.endpoint.clone(),
                vault: registration.vault.clone(),
                machine_id: registration.machine_id.clone(),
                thumbprint: registration.thumbprint.clone(),
                private_key,
                pin,
                proxy,
                request_id: correlation_id.to_string(),
            };
            let answer = world.vault.check_pin(&check);
            let valid = matches!(answer, crate::model::PinAnswer::Valid { issued_at }
                if crate::decide::pin_is_fresh(now, issued_at));
            observed.pin = Some(answer);
            if valid {
                let (passphrase, generated) = passphrase_input(save_to.is_some(), &mut secrets, world)?;
                observed.passphrase = Some(observe_passphrase(&passphrase, save_to.as_deref(), world)?);
                return Ok(generated);
            }
        }
        Command::SetProxy { password_given: false, .. }
        | Command::ClearProxy
        | Command::Unregister
        | Command::SetThrottling { .. }
        | Command::ThrottlingOff => {}
    }
    Ok(None)
}

fn observe_credentials(file: &std::path::Path, world: &World<'_>) -> Result<CredentialsObserved, EngineError> {
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = match world.files.read(file, MAX_CREDENTIALS_BYTES) {
        Ok(bytes) => bytes,
        Err((kind, detail)) => return Ok(CredentialsObserved::Unreadable { kind, detail }),
    };
    let parsed = match regent_credentials::parse(&file_name, &bytes) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(CredentialsObserved::Invalid { detail: e.to_string() }),
    };
    let private_key = world
        .secrets
        .seal(SecretKind::CredentialsPrivateKey, parsed.private_key.pkcs8_der())
        .map_err(EngineError::Secrets)?;
    Ok(CredentialsObserved::Parsed { facts: credential_facts(&file_name, &parsed), private_key })
}

/// The recorded facts of a parsed credentials file.
pub fn credential_facts(file_name: &str, parsed: &regent_credentials::VaultCredentials) -> CredentialFacts {
    CredentialFacts {
        file_name: file_name.to_string(),
        vault: VaultIdentity {
            name: parsed.identity.resource_name.clone(),
            subscription_id: parsed.identity.subscription_id.clone(),
            resource_group: parsed.identity.resource_group.clone(),
            location: parsed.identity.location.clone(),
            resource_id: parsed.identity.resource_id,
        },
        endpoint: parsed.endpoint.clone(),
        thumbprint: parsed.certificate.thumbprint.clone(),
        not_before: parsed.certificate.not_before,
        not_after: parsed.certificate.not_after,
        subject: parsed.certificate.subject.clone(),
    }
}

/// The passphrase to use: generated (returned also as the second value, to show once) or given.
fn passphrase_input(
    generate: bool,
    secrets: &mut SecretInputs,
    world: &World<'_>,
) -> Result<(SecretString, Option<SecretString>), EngineError> {
    if generate {
        let mut failure = None;
        let passphrase = regent_secrets::generate_passphrase(|bytes: &mut [u8]| {
            if let Err(e) = world.random.fill(bytes) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            return Err(EngineError::Randomness(e));
        }
        let shown = SecretString::from(passphrase.expose_secret().to_string());
        return Ok((passphrase, Some(shown)));
    }
    let passphrase = secrets
        .passphrase
        .take()
        .ok_or(EngineError::MissingSecret("passphrase", "--passphrase-stdin or --passphrase-file F"))?;
    Ok((passphrase, None))
}

fn observe_passphrase(
    passphrase: &SecretString,
    save_to: Option<&std::path::Path>,
    world: &World<'_>,
) -> Result<PassphraseObserved, EngineError> {
    let facts = regent_secrets::PassphraseRules::check(passphrase);
    let mut observed = PassphraseObserved {
        length: facts.length,
        printable_ascii: facts.printable_ascii,
        verifier: None,
        sealed: None,
        saved_to: None,
        save_problem: None,
    };
    if let Some(path) = save_to {
        match world.passphrase_files.save_new(path, passphrase) {
            Ok(saved) => observed.saved_to = Some(saved),
            Err(problem) => {
                observed.save_problem = Some(problem);
                return Ok(observed);
            }
        }
    }
    if facts.length < crate::decide::MIN_PASSPHRASE_CHARS || !facts.printable_ascii {
        return Ok(observed);
    }
    let mut salt = [0u8; 16];
    world.random.fill(&mut salt).map_err(EngineError::Randomness)?;
    let verifier = regent_secrets::PassphraseVerifier::create(passphrase, &salt)
        .map_err(|e| EngineError::Secrets(e.to_string()))?;
    observed.verifier = Some(verifier.phc().to_string());
    let sealed = world
        .secrets
        .seal(SecretKind::Passphrase, passphrase.expose_secret().as_bytes())
        .map_err(EngineError::Secrets)?;
    observed.sealed = Some(sealed);
    Ok(observed)
}

/// The proxy with its password opened, for the vault client.
fn proxy_config(state: &State, world: &World<'_>) -> Result<Option<ProxyConfig>, String> {
    let Some(proxy) = &state.proxy else { return Ok(None) };
    let credentials = match (&proxy.username, &proxy.password) {
        (Some(user), Some(sealed)) => {
            let bytes = world.secrets.open(SecretKind::ProxyPassword, sealed)?;
            let password =
                String::from_utf8(bytes.to_vec()).map_err(|_| "the saved password is not text".to_string())?;
            Some((user.clone(), SecretString::from(password)))
        }
        _ => None,
    };
    Ok(Some(ProxyConfig { host: proxy.host.clone(), port: proxy.port, credentials }))
}

/// Maps a file read error to what the user sees.
pub fn unreadable_kind(error: &std::io::Error) -> UnreadableKind {
    match error.kind() {
        std::io::ErrorKind::NotFound => UnreadableKind::Missing,
        std::io::ErrorKind::PermissionDenied => UnreadableKind::PermissionDenied,
        std::io::ErrorKind::IsADirectory => UnreadableKind::IsDirectory,
        _ => UnreadableKind::Other,
    }
}
