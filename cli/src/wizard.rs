//! `regent wizard`: the registration steps in the seed's order, folders → proxy → vault
//! credentials → encryption passphrase → register.
//!
//! On a terminal it asks: one screen per step that says what it needs and why, shows the
//! defaults, takes secrets masked and confirmed, and offers a refused screen again with the
//! answers filled in. `--unattended` runs the same steps from flags alone. Both run each step
//! through [`steps`] and the engine like the step commands do, so every answer is recorded,
//! accepted or refused, and a re-run resumes from what the log says is done.
//!
//! Longer than most modules on purpose: it is the conversation itself, each screen's prompts,
//! defaults and messages in the order a person meets them, with the answers carried from one screen
//! to the next. Every decision is the engine's: each answer is recorded through `steps.rs` as the
//! step commands record it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use inquire::InquireError;
use inquire::validator::Validation;
use regent_engine::State;
use regent_engine::decide::{SCRATCH_FREE_PERCENT, folder_rules, largest_backup_bytes};
use regent_engine::model::{Change, Command as EngineCommand, Outcome, PassphraseOrigin, Refusal};
use regent_engine::ports::FolderProbe;
use regent_engine::ports::VaultClient;
use regent_engine::projections;
use regent_engine::service::{SecretInputs, StepResult};
use regent_engine::units::{format_bytes, parse_size};
use regent_engine::{Reason, Step as StepName};

use crate::args::WizardArgs;
use crate::context::{Context, NoVault};
use crate::failure::Failure;
use crate::terminal::{self, errln};
use crate::world::DiskFolders;
use crate::{check_no_credentials, secret_input, steps, vault_client, world};

mod differences;

use differences::Difference;

pub fn run(ctx: &Context, args: WizardArgs) -> Result<u8, Failure> {
    if args.unattended { unattended(ctx, args) } else { interactive(ctx, args) }
}

/// `regent wizard --unattended`: the steps in order from flags, stopping at the first refusal; on
/// a registered machine, the flags compared with its state instead ([`differences`]). Under
/// `--json`, one document on stdout whatever happens: the steps run, the differences found, the
/// status and the error (docs/cli.md).
fn unattended(ctx: &Context, a: WizardArgs) -> Result<u8, Failure> {
    let mut run = Provisioning::default();
    let ended = provision(ctx, a, &mut run);
    if !ctx.json {
        return ended;
    }
    terminal::json_line(run.document(&ended));
    ended.map_err(|failure| failure.printed_if(true))
}

/// The failure code of a re-run whose flags disagree with the registered machine's state.
const STATE_DIFFERS: &str = "wizard_state_differs";

/// What an unattended run did, for its one JSON document.
#[derive(Default)]
struct Provisioning {
    steps: Vec<serde_json::Value>,
    differences: Vec<Difference>,
    status: Option<serde_json::Value>,
    /// The machine was registered when the run began: a comparison, not steps.
    registered_before: bool,
}

impl Provisioning {
    /// One step, recorded and said; its document kept.
    fn step(
        &mut self,
        ctx: &Context,
        command: EngineCommand,
        secrets: SecretInputs,
        vault: &dyn VaultClient,
    ) -> Result<u8, Failure> {
        let told = steps::tell(ctx, command, secrets, vault)?;
        self.status = told.document.get("status").cloned();
        self.steps.push(told.document);
        told.outcome
    }

    fn document(&self, ended: &Result<u8, Failure>) -> serde_json::Value {
        let refused = self.steps.last().is_some_and(|step| step["outcome"] == "refused");
        let outcome = match ended {
            Ok(_) if self.registered_before => "nothing_to_do",
            Ok(_) => "registered",
            Err(failure) if failure.reason == STATE_DIFFERS => "state_differs",
            Err(_) if refused => "refused",
            Err(_) => "failed",
        };
        serde_json::json!({
            "outcome": outcome,
            "steps": self.steps,
            "differences": self.differences,
            "status": self.status,
            "error": ended.as_ref().err().map(Failure::json),
        })
    }
}

/// The unattended run itself. Secrets are read before anything is recorded, so a missing one
/// records nothing.
fn provision(ctx: &Context, a: WizardArgs, run: &mut Provisioning) -> Result<u8, Failure> {
    check_no_credentials(a.proxy_host.as_deref(), a.endpoint.as_deref())?;
    // clap requires these with --unattended; an absent one is still a usage error, never a panic.
    let needed =
        |value: Option<PathBuf>, flag: &str| value.ok_or_else(|| Failure::usage(format!("--unattended needs {flag}")));
    let install_dir = crate::text_path(needed(a.install_dir, "--install-dir DIR")?);
    let scratch_dir = crate::text_path(needed(a.scratch_dir, "--scratch-dir DIR")?);
    let credentials = needed(a.credentials, "--credentials FILE")?;
    let backup_size_bytes = a.backup_size.ok_or_else(|| Failure::usage("--unattended needs --backup-size SIZE"))?;
    let proxy_password = match (&a.proxy_password_env, a.proxy_password_stdin) {
        (Some(var), _) => Some((secret_input::from_env("proxy password", var)?, "--proxy-password-env")),
        (None, true) => Some((secret_input::from_stdin("proxy password")?, "--proxy-password-stdin")),
        (None, false) if a.proxy_user.is_some() => {
            return Err(Failure::usage("--proxy-user needs --proxy-password-env VAR or --proxy-password-stdin"));
        }
        (None, false) => None,
    };
    let passphrase = match &a.passphrase_file {
        Some(path) => Some(secret_input::from_file("passphrase", path)?),
        None => None,
    };
    let ctx = &ctx.with_ca_file(a.ca_file.as_deref());
    let vault = vault_client(ctx)?;
    let (state, head) = projections::current_state(&ctx.open_store()?)?;
    let credentials = crate::text_path(std::path::absolute(&credentials).unwrap_or(credentials));
    if let Some(registration) = &state.registration {
        run.registered_before = true;
        run.status = serde_json::to_value(projections::status(&state, head)).ok();
        let area = ctx.secrets_area();
        let given = differences::Given {
            install_dir: &install_dir,
            scratch_dir: &scratch_dir,
            backup_size_bytes,
            proxy: a.proxy_host.as_deref().zip(a.proxy_port).map(|(host, port)| (host, port, a.proxy_user.as_deref())),
            proxy_password: proxy_password.as_ref().map(|(input, flag)| (input, *flag)),
            credentials: &credentials,
            generate_passphrase_to: a.generate_passphrase_to.as_deref(),
            passphrase: passphrase.as_ref(),
            endpoint: a.endpoint.as_deref(),
        };
        let area = area.as_ref().map_err(|failure| failure.message.as_str());
        run.differences = differences::differences(&state, registration, &given, area);
        let (vault, machine) = (&registration.vault, &registration.machine_id);
        if run.differences.is_empty() {
            errln!("already registered to vault {vault} as {machine}, and the flags match its state; nothing to do");
            return Ok(0);
        }
        for difference in &run.differences {
            errln!("differs: {difference}");
        }
        return Err(Failure::refused(format!(
            "wizard_state_differs: this machine is registered to vault {vault} as {machine}, and {} differ from its state (each said above); nothing was changed",
            match run.differences.len() {
                1 => "one of the flags given".to_string(),
                n => format!("{n} of the flags given"),
            }
        )));
    }
    run.step(
        ctx,
        EngineCommand::ChooseFolders { install_dir, scratch_dir, backup_size_bytes },
        SecretInputs::default(),
        &NoVault,
    )?;
    if let (Some(host), Some(port)) = (a.proxy_host, a.proxy_port) {
        let proxy_password = proxy_password.map(|(input, _)| input);
        let command =
            EngineCommand::SetProxy { host, port, username: a.proxy_user, password_given: proxy_password.is_some() };
        run.step(ctx, command, SecretInputs { proxy_password, ..Default::default() }, &NoVault)?;
    }
    run.step(ctx, EngineCommand::LoadCredentials { file: credentials }, SecretInputs::default(), &NoVault)?;
    // A re-run after a failed registration keeps the passphrase it already created: generating
    // again would refuse the existing file, and a new passphrase would orphan the saved one.
    if state.encryption.is_none() || passphrase.is_some() {
        let save_to = a.generate_passphrase_to.map(|p| crate::text_path(std::path::absolute(&p).unwrap_or(p)));
        run.step(
            ctx,
            EngineCommand::SetPassphrase { save_to },
            SecretInputs { passphrase, ..Default::default() },
            &NoVault,
        )?;
    }
    run.step(ctx, EngineCommand::Register { endpoint_override: a.endpoint }, SecretInputs::default(), &vault)
}

const NO_TERMINAL: &str = "`regent wizard` asks its questions on a terminal, and standard input is not one; \
     in a script, use `regent wizard --unattended --install-dir DIR --scratch-dir DIR --backup-size SIZE \
     --credentials FILE --generate-passphrase-to FILE` (see `regent wizard --help`)";

const STOPPED: &str = "wizard stopped; the steps done so far are kept: run `regent wizard` to resume";

/// The screens, in the seed's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Screen {
    Folders,
    Proxy,
    Credentials,
    Passphrase,
    Register,
}

impl Screen {
    const COUNT: u8 = 5;

    fn number(self) -> u8 {
        self as u8 + 1
    }

    fn title(self) -> &'static str {
        match self {
            Screen::Folders => "Folders",
            Screen::Proxy => "Proxy",
            Screen::Credentials => "Vault credentials",
            Screen::Passphrase => "Encryption passphrase",
            Screen::Register => "Register",
        }
    }

    fn following(self) -> Screen {
        match self {
            Screen::Folders => Screen::Proxy,
            Screen::Proxy => Screen::Credentials,
            Screen::Credentials => Screen::Passphrase,
            Screen::Passphrase | Screen::Register => Screen::Register,
        }
    }
}

/// What the screens offer as defaults: the flags given, else what the log holds, else regent's
/// own defaults; then each answer as typed, so a screen offered again is filled in.
struct Answers {
    install_dir: PathBuf,
    scratch_dir: PathBuf,
    backup_size: Option<String>,
    proxy: Option<ProxyAnswer>,
    credentials: Option<PathBuf>,
    save_to: Option<PathBuf>,
    own_passphrase: bool,
}

#[derive(Clone)]
struct ProxyAnswer {
    host: String,
    port: u32,
    username: Option<String>,
}

impl Answers {
    fn new(ctx: &Context, a: &WizardArgs, state: &State) -> Answers {
        let (install, scratch) = default_folders(ctx);
        let folders = state.folders.as_ref();
        let flags_proxy = a.proxy_host.clone().zip(a.proxy_port).map(|(host, port)| ProxyAnswer {
            host,
            port,
            username: a.proxy_user.clone(),
        });
        let state_proxy = state.proxy.as_ref().map(|p| ProxyAnswer {
            host: p.host.clone(),
            port: u32::from(p.port),
            username: p.username.clone(),
        });
        Answers {
            install_dir: a.install_dir.clone().or_else(|| folders.map(|f| f.install_dir.clone())).unwrap_or(install),
            scratch_dir: a.scratch_dir.clone().or_else(|| folders.map(|f| f.scratch_dir.clone())).unwrap_or(scratch),
            backup_size: a.backup_size.or_else(|| folders.map(|f| f.backup_size_bytes)).map(size_text),
            proxy: flags_proxy.or(state_proxy),
            credentials: a.credentials.clone().or_else(|| state.credentials.as_ref().map(|c| c.file.clone())),
            save_to: a.generate_passphrase_to.clone(),
            own_passphrase: state.encryption.as_ref().is_some_and(|e| e.origin == PassphraseOrigin::Provided),
        }
    }
}

struct Wizard<'a> {
    ctx: &'a Context,
    vault: &'a dyn VaultClient,
    endpoint: Option<String>,
    answers: Answers,
    /// An accepted proxy step is in the log: the proxy screen was answered (a cleared proxy
    /// leaves no trace in the state, so the log says it).
    proxy_answered: bool,
}

fn interactive(ctx: &Context, a: WizardArgs) -> Result<u8, Failure> {
    if ctx.json {
        return Err(Failure::usage(
            "`regent wizard` asks questions and has no JSON output; with --json, use `regent wizard --unattended ...` or the step commands",
        ));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(NO_TERMINAL));
    }
    check_no_credentials(a.proxy_host.as_deref(), a.endpoint.as_deref())?;
    let ctx = &ctx.with_ca_file(a.ca_file.as_deref());
    let vault = vault_client(ctx)?;
    let (state, proxy_answered) = {
        let store = ctx.open_store()?;
        let state = projections::current_state(&store)?.0;
        let answered =
            projections::step_accepted(store.read_stream(regent_engine::events::STREAM, 1), StepName::Proxy)?;
        (state, answered)
    };
    if let Some(r) = &state.registration {
        say(format!(
            "This machine is registered already, to vault {} as machine {} (since {}): there is nothing to do.",
            r.vault,
            r.machine_id,
            r.registered_at.format("%Y-%m-%d %H:%M UTC")
        ));
        say("See it with `regent properties`; `regent unregister` first to register again.");
        return Ok(0);
    }
    let answers = Answers::new(ctx, &a, &state);
    let mut wizard = Wizard { ctx, vault: &vault, endpoint: a.endpoint, answers, proxy_answered };
    wizard.walk(&state)
}

impl Wizard<'_> {
    fn walk(&mut self, state: &State) -> Result<u8, Failure> {
        say(format!(
            "This wizard registers this server with a backup vault in {} steps: folders, proxy, vault credentials,",
            Screen::COUNT
        ));
        say("encryption passphrase, register. Every answer is recorded in the audit log (`regent audit`).");
        say("Esc or Ctrl-C stops it; the steps done are kept, and `regent wizard` resumes.");
        let mut screen = self.first_not_done(state);
        // Going through every screen again: each leads to the next, not to the first one not done.
        let mut review = false;
        if screen != Screen::Folders {
            self.show_done(state);
            let question = format!("Keep these and continue at step {}, {}?", screen.number(), screen.title());
            let keep = ask(terminal::confirm(
                &question,
                true,
                Some("No goes through every screen again, with these answers filled in"),
            ))?;
            if !keep {
                review = true;
                screen = Screen::Folders;
            }
        }
        loop {
            match screen {
                Screen::Folders => self.folders()?,
                Screen::Proxy => self.proxy()?,
                Screen::Credentials => self.credentials()?,
                Screen::Passphrase => self.passphrase()?,
                Screen::Register => match self.register()? {
                    None => return Ok(0),
                    Some(back) => {
                        review = false;
                        screen = back;
                        continue;
                    }
                },
            }
            screen = if review { screen.following() } else { self.first_not_done(&self.state()?) };
        }
    }

    fn state(&self) -> Result<State, Failure> {
        Ok(projections::current_state(&self.ctx.open_store()?)?.0)
    }

    /// The screen of the engine's next step, with the two screens the engine has no step for: the
    /// proxy (optional, offered before the credentials until answered) and expired credentials,
    /// which are not done either.
    fn first_not_done(&self, state: &State) -> Screen {
        let expired = state.credentials.as_ref().is_some_and(|c| c.facts.not_after <= chrono::Utc::now());
        match state.next_step() {
            Some(StepName::Folders) => Screen::Folders,
            Some(StepName::Credentials) if !self.proxy_answered => Screen::Proxy,
            Some(StepName::Credentials) => Screen::Credentials,
            Some(_) if expired => Screen::Credentials,
            Some(StepName::Passphrase) => Screen::Passphrase,
            _ => Screen::Register,
        }
    }

    fn show_done(&self, state: &State) {
        say("");
        say("Resuming: these steps are done already.");
        let row = |label: &str, value: String| say(format!("  {label:<13}{value}"));
        if let Some(f) = &state.folders {
            row(
                "folders",
                format!(
                    "install {}, scratch {}, backup size {}",
                    f.install_dir.display(),
                    f.scratch_dir.display(),
                    format_bytes(f.backup_size_bytes)
                ),
            );
        }
        match &state.proxy {
            Some(p) => row("proxy", proxy_text(&p.host, u32::from(p.port), p.username.as_deref())),
            None if self.proxy_answered => row("proxy", "none: direct connection".into()),
            None => {}
        }
        if let Some(c) = &state.credentials {
            let expired = if c.facts.not_after < chrono::Utc::now() { " (expired: load a new file)" } else { "" };
            row(
                "credentials",
                format!(
                    "vault {}, valid until {}{expired}",
                    c.facts.vault.name,
                    c.facts.not_after.format("%Y-%m-%d %H:%M UTC")
                ),
            );
        }
        if let Some(e) = &state.encryption {
            row("passphrase", passphrase_origin(&e.origin));
        }
    }

    fn folders(&mut self) -> Result<(), Failure> {
        header(
            Screen::Folders,
            &[
                "regent needs two folders. The install folder holds the agent's files. The scratch folder is its cache",
                "while backups run: it must be on a local disk, and its filesystem needs free space of at least",
                &format!(
                    "{SCRATCH_FREE_PERCENT}% of the data you back up (37.5 GiB for 750 GiB), so regent asks how much that is."
                ),
                "Folders that do not exist yet are created.",
            ],
        );
        loop {
            // Each answer is checked as it is given, with the engine's own folder rules, against a
            // look at the folder (which creates nothing); every problem of an answer is said at once.
            let install_dir = ask_path(
                "Install folder:",
                Some(&self.answers.install_dir),
                "Where the agent is installed: an absolute path",
                |path| folder_rules::install_problems(path, &DiskFolders.probe(path)),
            )?;
            self.answers.install_dir = install_dir.clone();
            let install_resolved = DiskFolders.probe(&install_dir).resolved;
            let install = install_dir.clone();
            let scratch_dir = ask_path(
                "Scratch folder:",
                Some(&self.answers.scratch_dir),
                "The cache, on a local disk, not inside the install folder",
                move |path| {
                    folder_rules::scratch_problems(
                        &install,
                        install_resolved.as_deref(),
                        path,
                        &DiskFolders.probe(path),
                    )
                },
            )?;
            self.answers.scratch_dir = scratch_dir.clone();
            let help = size_help(&scratch_dir);
            let scratch = scratch_dir.clone();
            let size = ask(terminal::ask_text(
                "Backup data size:",
                self.answers.backup_size.as_deref(),
                &help,
                Some("e.g. 750GiB"),
                move |text: &str| {
                    let problems = match parse_size(text) {
                        Ok(bytes) => folder_rules::backup_size_problems(bytes, &DiskFolders.probe(&scratch))
                            .into_iter()
                            .map(|(_, problem)| problem)
                            .collect(),
                        Err(e) => vec![e],
                    };
                    Ok(invalid_if_any(problems))
                },
            ))?;
            let backup_size_bytes = match parse_size(&size) {
                Ok(bytes) => bytes,
                Err(e) => {
                    say(format!("{e}; try again"));
                    continue;
                }
            };
            self.answers.backup_size = Some(size.trim().to_string());
            let command = EngineCommand::ChooseFolders {
                install_dir: install_dir.clone(),
                scratch_dir: scratch_dir.clone(),
                backup_size_bytes,
            };
            let result = self.execute(command, SecretInputs::default(), &NoVault)?;
            match result.record.outcome {
                Outcome::Accepted(Change::FoldersChosen(f)) => {
                    say(format!(
                        "Folders chosen: install {}, scratch {} ({} free on {}).",
                        f.install_dir.display(),
                        f.scratch_dir.display(),
                        format_bytes(f.scratch_free_bytes),
                        f.scratch_filesystem
                    ));
                    return Ok(());
                }
                Outcome::Accepted(_) => return Ok(()),
                Outcome::Refused(refusal) => {
                    // Something changed since the answers were checked (or a rule the checks do
                    // not know): the engine's refusal is recorded; every problem is said at once.
                    tell_refusal(&refusal);
                    let (install, scratch) = (DiskFolders.probe(&install_dir), DiskFolders.probe(&scratch_dir));
                    let problems =
                        folder_rules::problems(&install_dir, &scratch_dir, backup_size_bytes, &install, &scratch);
                    for (reason, problem) in problems.iter().filter(|(_, p)| *p != refusal.message) {
                        say(format!("Also ({reason}): {problem}."));
                    }
                    say("Try again: your answers are filled in (Enter keeps one; Esc stops, keeping what is done).");
                }
            }
        }
    }

    fn proxy(&mut self) -> Result<(), Failure> {
        const DIRECT: &str = "Directly, without a proxy";
        const THROUGH: &str = "Through a proxy server";
        header(
            Screen::Proxy,
            &[
                "If this server reaches the internet through a proxy server, regent sends every call to the vault",
                "through it. A proxy that asks for a user name and password gets them here; the password is kept",
                "sealed on this machine, never in the log.",
            ],
        );
        loop {
            let starting = usize::from(self.answers.proxy.is_some());
            let choice = ask(choose("How does this server reach the vault?", vec![DIRECT, THROUGH], starting))?;
            if choice == DIRECT {
                if self.record(EngineCommand::ClearProxy, SecretInputs::default())?.is_some() {
                    self.answers.proxy = None;
                    self.proxy_answered = true;
                    say("No proxy: regent connects to the vault directly.");
                    return Ok(());
                }
                continue;
            }
            let previous = self.answers.proxy.clone();
            let host = ask(text(
                "Proxy host:",
                previous.as_ref().map(|p| p.host.as_str()),
                "The proxy server's name or IP address, e.g. proxy.example.com (no user or password here)",
                |text: &str| {
                    Ok(if text.trim().is_empty() {
                        Validation::Invalid("type the proxy's host name or IP address".into())
                    } else if text.contains('@') {
                        // It would be recorded in the log: the user and password are asked for next.
                        Validation::Invalid("no user or password in the host: they are asked for next".into())
                    } else {
                        Validation::Valid
                    })
                },
            ))?;
            let port_default = previous.as_ref().map(|p| p.port.to_string());
            let port =
                ask(text("Proxy port:", port_default.as_deref(), "1 to 65535, e.g. 3128 or 8080", |text: &str| {
                    Ok(match text.trim().parse::<u32>() {
                        Ok(_) => Validation::Valid,
                        Err(_) => Validation::Invalid("type the port as a number, e.g. 3128".into()),
                    })
                }))?;
            let Ok(port) = port.trim().parse::<u32>() else { continue };
            let had_user = previous.as_ref().is_some_and(|p| p.username.is_some());
            let login = ask(terminal::confirm("Does the proxy ask for a user name and password?", had_user, None))?;
            let (username, password) = if login {
                let user_default = previous.as_ref().and_then(|p| p.username.as_deref());
                let user = ask(text("Proxy user name:", user_default, "The user name the proxy asks for", any_text))?;
                let password = ask(secret_input::masked(
                    "Proxy password:",
                    Some("Type the password again:"),
                    Some("Not shown; kept sealed on this machine, never in the log"),
                ))?;
                (Some(user.trim().to_string()), Some(password))
            } else {
                (None, None)
            };
            let host = host.trim().to_string();
            self.answers.proxy = Some(ProxyAnswer { host: host.clone(), port, username: username.clone() });
            let command = EngineCommand::SetProxy { host, port, username, password_given: password.is_some() };
            let secrets = SecretInputs { proxy_password: password.map(Into::into), ..SecretInputs::default() };
            if let Some(Change::ProxySet(p)) = self.record(command, secrets)? {
                self.proxy_answered = true;
                say(format!("Proxy set: {}.", proxy_text(&p.host, u32::from(p.port), p.username.as_deref())));
                return Ok(());
            }
        }
    }

    fn credentials(&mut self) -> Result<(), Failure> {
        header(
            Screen::Credentials,
            &[
                "The vault credentials file (.VaultCredentials) proves to your vault that you allow this server to",
                "register. Download it from the vault (`regent vault credentials`, or the vault's portal). It expires",
                "(48 hours after the download by default), and only the newest download is valid: each download",
                "makes the earlier files useless.",
            ],
        );
        loop {
            let default = match &self.answers.credentials {
                Some(given) => Some(given.clone()),
                None => newest_credentials_file().map(|found| {
                    say(format!(
                        "The default below is the newest .VaultCredentials file in {}, downloaded {}.",
                        found.folder.display(),
                        found.modified.format("%Y-%m-%d %H:%M UTC")
                    ));
                    found.path
                }),
            };
            let file = ask_path(
                "Vault credentials file:",
                default.as_deref(),
                "The path of the downloaded file",
                no_problems,
            )?;
            let file = std::path::absolute(&file).unwrap_or(file);
            self.answers.credentials = Some(file.clone());
            if let Some(Change::CredentialsLoaded(c)) =
                self.record(EngineCommand::LoadCredentials { file }, SecretInputs::default())?
            {
                say(format!(
                    "Vault credentials loaded: vault {}, valid until {}.",
                    c.facts.vault.name,
                    c.facts.not_after.format("%Y-%m-%d %H:%M UTC")
                ));
                return Ok(());
            }
        }
    }

    fn passphrase(&mut self) -> Result<(), Failure> {
        const GENERATE: &str = "Generate a strong passphrase and save it to a file (recommended)";
        const OWN: &str = "Type my own passphrase";
        header(
            Screen::Passphrase,
            &[
                "Backups are encrypted with a passphrase that only you hold: regent keeps a verifier of it, not the",
                "passphrase, and the vault never sees it. Nobody can recover a lost passphrase, and without it",
                "backups cannot be restored. Generate one (recommended) and keep the file somewhere safe, off this",
                "machine; or type your own: at least 16 characters, printable ASCII only.",
            ],
        );
        if let Some(encryption) = &self.state()?.encryption {
            let question =
                format!("A passphrase was created already ({}). Keep it?", passphrase_origin(&encryption.origin));
            let keep = ask(terminal::confirm(&question, true, Some("No makes a new one, which replaces it")))?;
            if keep {
                return Ok(());
            }
        }
        loop {
            let choice = ask(choose(
                "How should the passphrase be made?",
                vec![GENERATE, OWN],
                usize::from(self.answers.own_passphrase),
            ))?;
            self.answers.own_passphrase = choice == OWN;
            let (command, secrets) = if choice == GENERATE {
                let default = match self.answers.save_to.clone() {
                    Some(given) => given,
                    None => {
                        let (default, why) = default_save_to(self.ctx);
                        say(why);
                        default
                    }
                };
                let save_to = ask_path(
                    "Save it to (a new file):",
                    Some(&default),
                    "A new file in an existing folder, mode 0600; regent never overwrites one",
                    no_problems,
                )?;
                let save_to = crate::text_path(std::path::absolute(&save_to).unwrap_or(save_to));
                self.answers.save_to = Some(save_to.clone());
                (EngineCommand::SetPassphrase { save_to: Some(save_to) }, SecretInputs::default())
            } else {
                let passphrase = ask(secret_input::masked(
                    "Passphrase:",
                    Some("Type it again:"),
                    Some("At least 16 characters, printable ASCII; not shown"),
                ))?;
                (
                    EngineCommand::SetPassphrase { save_to: None },
                    SecretInputs { passphrase: Some(passphrase.into()), ..Default::default() },
                )
            };
            let result = self.execute(command, secrets, &NoVault)?;
            let shown = steps::show_generated(terminal::Stream::Stderr, &result);
            if let Some(Change::PassphraseCreated(encryption)) = accepted(result) {
                if !shown {
                    say("Passphrase set. Keep it somewhere safe: nobody can recover it.");
                }
                for warning in &encryption.warnings {
                    say(format!("Warning: {warning}"));
                }
                return Ok(());
            }
        }
    }

    /// Registers, with a spinner while the vault answers. None once registered; after a refusal,
    /// the screen the operator chose to go back to.
    fn register(&mut self) -> Result<Option<Screen>, Failure> {
        const AGAIN: &str = "Try to register again";
        const PROXY: &str = "Change the proxy settings";
        const CREDENTIALS: &str = "Load another vault credentials file";
        const STOP: &str = "Stop here (the steps done are kept)";
        let state = self.state()?;
        let Some(credentials) = &state.credentials else { return Ok(Some(Screen::Credentials)) };
        let vault = credentials.facts.vault.name.clone();
        let endpoint = self.endpoint.clone().unwrap_or_else(|| credentials.facts.endpoint.clone());
        header(
            Screen::Register,
            &[&format!(
                "regent now registers this server ({}) with vault {vault} at {endpoint}.",
                regent_store::host_name()
            )],
        );
        if !ask(terminal::confirm("Register now?", true, None))? {
            return Err(Failure::stopped(STOPPED));
        }
        let spinner = terminal::Spinner::start(&format!("Registering with vault {vault}..."));
        let command = EngineCommand::Register { endpoint_override: self.endpoint.clone() };
        let result = steps::execute(self.ctx, command, SecretInputs::default(), self.vault);
        // The spinner goes before anything is said, or a warning would land on its line.
        spinner.finish_and_clear();
        let (result, anchored) = result?;
        if let Some(warning) = anchored.as_ref().and_then(crate::anchor::StepReportText::warning) {
            say(format!("Warning: {warning}"));
        }
        match result.record.outcome {
            Outcome::Accepted(Change::Registered(r)) => {
                say(format!("Registered: this server is machine {} in vault {}.", r.machine_id, r.vault));
                say("See it with `regent status` and `regent properties`; the record with `regent audit`.");
                Ok(None)
            }
            Outcome::Accepted(_) => Ok(None),
            Outcome::Refused(refusal) => {
                tell_refusal(&refusal);
                let starting = match refusal.reason {
                    Reason::ProxyAuthFailed | Reason::InvalidProxy => 1,
                    Reason::VaultUnreachable if state.proxy.is_some() => 1,
                    Reason::CredentialsExpired
                    | Reason::CredentialsSuperseded
                    | Reason::CredentialsInvalid
                    | Reason::CredentialsUnreadable
                    | Reason::CredentialsWrongVault => 2,
                    _ => 0,
                };
                let choice = ask(choose("What now?", vec![AGAIN, PROXY, CREDENTIALS, STOP], starting))?;
                match choice {
                    PROXY => Ok(Some(Screen::Proxy)),
                    CREDENTIALS => Ok(Some(Screen::Credentials)),
                    STOP => Err(Failure::refused(format!(
                        "{}: registration refused; the steps done so far are kept: run `regent wizard` to try again",
                        refusal.reason
                    ))),
                    _ => Ok(Some(Screen::Register)),
                }
            }
        }
    }

    /// Runs one step through the engine, recorded. The change when accepted; a refusal is told
    /// to the operator and gives None, for the screen to be offered again.
    fn record(&self, command: EngineCommand, secrets: SecretInputs) -> Result<Option<Change>, Failure> {
        Ok(accepted(self.execute(command, secrets, &NoVault)?))
    }

    /// One step through the engine, recorded; a log head the vault did not take is said here.
    fn execute(
        &self,
        command: EngineCommand,
        secrets: SecretInputs,
        vault: &dyn VaultClient,
    ) -> Result<StepResult, Failure> {
        let (result, anchored) = steps::execute(self.ctx, command, secrets, vault)?;
        if let Some(warning) = anchored.as_ref().and_then(crate::anchor::StepReportText::warning) {
            say(format!("Warning: {warning}"));
        }
        for note in &result.notes {
            say(format!("Note: {note}"));
        }
        Ok(result)
    }
}

fn accepted(result: StepResult) -> Option<Change> {
    match result.record.outcome {
        Outcome::Accepted(change) => Some(change),
        Outcome::Refused(refusal) => {
            tell_refusal(&refusal);
            say("Try again: your answers are filled in (Enter keeps one; Esc stops, keeping what is done).");
            None
        }
    }
}

fn tell_refusal(refusal: &Refusal) {
    say("");
    let said = crate::guidance::with_next(&refusal.message, &refusal.next);
    say(format!("Refused ({}): {}.", refusal.reason, said.trim_end_matches('.')));
}

/// One line from the wizard. It talks on stderr, where the prompts are, so stdout can be
/// redirected.
fn say(text: impl std::fmt::Display) {
    errln!("{text}");
}

/// A screen's title, then what it says, a line each.
fn header(screen: Screen, lines: &[&str]) {
    say("");
    say(format!("== Step {} of {}: {} ==", screen.number(), Screen::COUNT, screen.title()));
    for line in lines {
        say(line);
    }
}

/// A prompt's answer; Esc and Ctrl-C stop the wizard, keeping what is recorded.
fn ask<T>(answer: Result<T, InquireError>) -> Result<T, Failure> {
    answer.map_err(|e| match e {
        InquireError::OperationCanceled | InquireError::OperationInterrupted => Failure::stopped(STOPPED),
        InquireError::NotTTY => Failure::usage(NO_TERMINAL),
        other => Failure::refused(format!("cannot use the terminal: {other}")),
    })
}

/// A choice among a few options, with `starting` (the answer given before) offered first.
fn choose<'a>(question: &str, options: Vec<&'a str>, starting: usize) -> Result<&'a str, InquireError> {
    terminal::select(question, options, starting, "up and down arrows to move, Enter to choose")
}

/// A line of text, `default` offered (shown escaped; Enter gives it as it is).
fn text<V>(label: &str, default: Option<&str>, help: &str, validator: V) -> Result<String, InquireError>
where
    V: inquire::validator::StringValidator + Clone + 'static,
{
    terminal::ask_text(label, default, help, None, validator)
}

/// Any answer will do.
fn any_text(_: &str) -> Result<Validation, inquire::CustomUserError> {
    Ok(Validation::Valid)
}

/// A path, with `~/` meaning the home directory (no shell expands it here). `problems` checks the
/// path an answer names: every problem it finds is said at the prompt, joined, and the answer is
/// asked again.
fn ask_path<F>(label: &str, default: Option<&Path>, help: &str, problems: F) -> Result<PathBuf, Failure>
where
    F: Fn(&Path) -> Vec<String> + Clone + 'static,
{
    let default = default.map(|p| p.display().to_string());
    let answer = ask(text(label, default.as_deref(), help, move |text: &str| {
        Ok(if text.trim().is_empty() {
            Validation::Invalid("type a path".into())
        } else {
            invalid_if_any(problems(&expand_home(text)))
        })
    }))?;
    Ok(expand_home(&answer))
}

/// Any path will do (the step checks it).
fn no_problems(_: &Path) -> Vec<String> {
    Vec::new()
}

/// An answer's problems, all of them, as one message.
fn invalid_if_any(problems: Vec<String>) -> Validation {
    if problems.is_empty() { Validation::Valid } else { Validation::Invalid(problems.join("; ").into()) }
}

/// A path typed, with `~` and `~/` meaning the home directory.
fn expand_home(answer: &str) -> PathBuf {
    let answer = answer.trim();
    let home = || directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
    match (answer.strip_prefix("~/"), home()) {
        (Some(rest), Some(home)) => home.join(rest),
        (None, Some(home)) if answer == "~" => home,
        _ => PathBuf::from(answer),
    }
}

/// The root of a machine gets the usual system places; anyone else, folders under the data dir.
fn default_folders(ctx: &Context) -> (PathBuf, PathBuf) {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        (PathBuf::from("/opt/regent"), PathBuf::from("/var/cache/regent"))
    } else {
        let base = std::path::absolute(&ctx.data_dir).unwrap_or_else(|_| ctx.data_dir.clone());
        (base.join("install"), base.join("scratch"))
    }
}

/// Where a generated passphrase is saved unless the operator names another file, and the line that
/// says so. Anyone but root: a new file in their home directory (the data dir without one). Root:
/// a new file next to regent's data dir (`/var/lib/regent-passphrase.txt`), never root's home,
/// where a passphrase would sit unnoticed; nor inside the data dir, which a fresh start removes.
fn default_save_to(ctx: &Context) -> (PathBuf, String) {
    let data_dir = std::path::absolute(&ctx.data_dir).unwrap_or_else(|_| ctx.data_dir.clone());
    let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let (dir, place) = match (root, home, data_dir.parent()) {
        (true, _, Some(parent)) => (parent.to_path_buf(), format!("next to regent's data dir {}", data_dir.display())),
        (false, Some(home), _) => (home, "in your home directory".to_string()),
        _ => (data_dir.clone(), "in regent's data dir".to_string()),
    };
    let path = crate::quickstart::unused_path(&dir, "regent-passphrase", "txt");
    let told = match root {
        true => format!(
            "The default below is a new file {place}, readable by root only (not root's home): {}. Keep a copy off this machine.",
            path.display()
        ),
        false => format!("The default below is a new file {place}: {}.", path.display()),
    };
    (path, told)
}

/// A `.VaultCredentials` file found where a download lands.
struct FoundCredentials {
    path: PathBuf,
    folder: PathBuf,
    modified: chrono::DateTime<chrono::Utc>,
}

/// The newest `.VaultCredentials` file in the current directory or ~/Downloads, where a browser
/// puts a download.
fn newest_credentials_file() -> Option<FoundCredentials> {
    let mut places = vec![std::env::current_dir().ok()?];
    if let Some(dirs) = directories::UserDirs::new() {
        places.extend(dirs.download_dir().map(Path::to_path_buf));
    }
    places
        .iter()
        .filter_map(|dir| Some((dir, std::fs::read_dir(dir).ok()?)))
        .flat_map(|(dir, entries)| entries.filter_map(Result::ok).map(move |entry| (dir, entry)))
        .filter(|(_, entry)| entry.file_name().to_string_lossy().ends_with(".VaultCredentials"))
        .filter_map(|(dir, entry)| Some((entry.metadata().ok()?.modified().ok()?, entry.path(), dir)))
        .max()
        .map(|(modified, path, folder)| FoundCredentials { path, folder: folder.clone(), modified: modified.into() })
}

/// The backup size prompt's help: the free space the scratch folder's filesystem has now, and
/// the largest backup that fits the 5% rule.
fn size_help(scratch: &Path) -> String {
    let free = scratch.ancestors().find(|p| p.exists()).and_then(|p| world::free_bytes(p).ok());
    match free {
        Some(free) => format!(
            "e.g. 750GiB or 2TB; scratch has {} free: room for up to {}",
            format_bytes(free),
            format_bytes(largest_backup_bytes(free))
        ),
        None => format!("e.g. 750GiB or 2TB; scratch needs {SCRATCH_FREE_PERCENT}% of it free"),
    }
}

/// A size as the operator would type it: the shortest exact form (`750GiB`, `2TB`, `1536`).
fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 8] = [
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("PiB", 1 << 50),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("PB", 1_000_000_000_000_000),
    ];
    UNITS
        .iter()
        .filter(|(_, unit)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map(|(name, unit)| format!("{}{name}", bytes / unit))
        .chain(std::iter::once(bytes.to_string()))
        .min_by_key(String::len)
        .unwrap_or_default()
}

fn proxy_text(host: &str, port: u32, username: Option<&str>) -> String {
    match username {
        Some(user) => format!("{host}:{port}, user {user} (password set)"),
        None => format!("{host}:{port}"),
    }
}

fn passphrase_origin(origin: &PassphraseOrigin) -> String {
    match origin {
        PassphraseOrigin::Generated { saved_to } => format!("generated, saved to {}", saved_to.display()),
        PassphraseOrigin::Provided => "typed by you".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_is_offered_again_as_it_would_be_typed() {
        for (bytes, text) in
            [(1 << 30, "1GiB"), (750 << 30, "750GiB"), (2_000_000_000_000, "2TB"), (1536, "1536"), (1 << 50, "1PiB")]
        {
            assert_eq!(size_text(bytes), text);
            assert_eq!(parse_size(&size_text(bytes)), Ok(bytes));
        }
    }
}
