//! The interactive `regent wizard`, driven through a pseudo-terminal like a person at a keyboard,
//! against a real vault service: refused screens offered again, the spinner, resuming after
//! Ctrl-C and Esc, and no typed secret on the screen or on disk.

use std::path::{Path, PathBuf};

use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

use crate::support::{Setup, files_under, leaks};

const DOWN: &str = "\x1b[B";
const UP: &str = "\x1b[A";
pub(crate) const ENTER: &str = "\r";
const CTRL_C: &str = "\x03";
const BACKSPACE: &str = "\x7f";
pub(crate) const ESC: &str = "\x1b";

/// One `regent` run on a pseudo-terminal, keeping everything it printed.
pub(crate) struct Pty {
    session: PtySession,
    transcript: String,
}

impl Pty {
    pub(crate) fn spawn(mut command: std::process::Command) -> Pty {
        command.env("TERM", "xterm");
        let session = rexpect::session::spawn_command(command, Some(30_000)).unwrap();
        Pty { session, transcript: String::new() }
    }

    /// Waits (30 s at most) until `needle` is printed; everything up to it joins the transcript.
    pub(crate) fn expect(&mut self, needle: &str) {
        match self.session.exp_string(needle) {
            Ok(before) => {
                self.transcript.push_str(&before);
                self.transcript.push_str(needle);
            }
            Err(e) => panic!("waiting for {needle:?}: {e}\n--- transcript so far ---\n{}", self.transcript),
        }
    }

    pub(crate) fn send(&mut self, keys: &str) {
        self.session.send(keys).unwrap();
        self.session.flush().unwrap();
    }

    /// Waits for a prompt, types `text` and Enter (an empty `text` takes the default shown).
    pub(crate) fn answer(&mut self, prompt: &str, text: &str) {
        self.expect(prompt);
        self.send(&format!("{text}{ENTER}"));
    }

    /// Waits for the end; the exit code and the transcript's bytes.
    pub(crate) fn finish(mut self) -> (i32, Vec<u8>) {
        match self.session.exp_eof() {
            Ok(rest) => self.transcript.push_str(&rest),
            Err(e) => panic!("waiting for the end: {e}\n--- transcript ---\n{}", self.transcript),
        }
        let code = match self.session.process().wait().unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("regent ended with {other:?}\n--- transcript ---\n{}", self.transcript),
        };
        // The reader hands over each byte as a char: back to the bytes printed.
        (code, self.transcript.chars().map(|c| c as u8).collect())
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wizard(setup: &Setup, agent: &str, args: &[&str]) -> Pty {
    let mut command = setup.regent_std(agent);
    // The default passphrase file goes to the home directory (the test's own), or as root next to
    // the data dir; the default credentials file is the newest in the current folder.
    command.env("HOME", setup.path("home")).current_dir(setup.dir.path()).arg("wizard").args(args);
    Pty::spawn(command)
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn prepared(vault: &str) -> (Setup, PathBuf) {
    let setup = Setup::new();
    std::fs::create_dir_all(setup.path("home")).unwrap();
    assert_eq!(setup.admin(&["create", vault]).status.code(), Some(0));
    let credentials = setup.download(vault, "prod.VaultCredentials");
    (setup, credentials)
}

fn folders(pty: &mut Pty, setup: &Setup) {
    pty.expect("Step 1 of 5: Folders");
    pty.answer("Install folder:", setup.path("install").to_str().unwrap());
    pty.answer("Scratch folder:", setup.path("scratch").to_str().unwrap());
    pty.answer("Backup data size:", "1GiB");
    pty.expect("Folders chosen");
}

fn path_text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn the_interactive_wizard_offers_refused_screens_again_and_registers() {
    let (setup, credentials) = prepared("prod");
    let proxy_password = "Pty-Proxy-Secret-4471";
    let short_passphrase = "short-pp-9931";
    let passphrase = "the typed passphrase of the pty test";
    std::fs::create_dir_all(setup.path("install")).unwrap();
    let a_file = setup.path("install").join("notes");
    std::fs::write(&a_file, b"x").unwrap();

    let mut pty = wizard(&setup, "agent", &[]);
    // Folders: each answer is checked as it is given, every problem said at once, and asked again
    // (nothing recorded): a scratch "folder" that is a file inside the install folder, then a
    // backup too large for the scratch filesystem's 5%.
    pty.expect("Step 1 of 5: Folders");
    pty.answer("Install folder:", "relative/install");
    pty.expect("must be an absolute path");
    pty.send(&BACKSPACE.repeat("relative/install".len()));
    pty.answer("", path_text(&setup.path("install")));
    pty.answer("Scratch folder:", path_text(&a_file));
    pty.expect("neither folder may be inside the other");
    pty.expect("is not a directory");
    pty.send(&BACKSPACE.repeat(path_text(&a_file).len()));
    pty.answer("", path_text(&setup.path("scratch")));
    pty.answer("Backup data size:", "1PB");
    pty.expect("free but needs at least");
    pty.send(&BACKSPACE.repeat(3));
    pty.answer("", "1GiB");
    pty.expect("Folders chosen");

    // Proxy: one that cannot be reached, with a user and a masked, confirmed password.
    pty.expect("Step 2 of 5: Proxy");
    pty.expect("How does this server reach the vault?");
    pty.send(&format!("{DOWN}{ENTER}"));
    pty.answer("Proxy host:", "127.0.0.1");
    pty.answer("Proxy port:", "1");
    pty.answer("Does the proxy ask for a user name and password?", "y");
    pty.answer("Proxy user name:", "svc");
    pty.answer("Proxy password:", proxy_password);
    pty.answer("Type the password again:", proxy_password);
    pty.expect("Proxy set: 127.0.0.1:1, user svc");

    pty.expect("Step 3 of 5: Vault credentials");
    pty.answer("Vault credentials file:", path_text(&credentials));
    pty.expect("Vault credentials loaded: vault prod");

    // Passphrase: a typed one under 16 characters is refused, then a good one.
    pty.expect("Step 4 of 5: Encryption passphrase");
    pty.expect("How should the passphrase be made?");
    pty.send(&format!("{DOWN}{ENTER}"));
    pty.answer("Passphrase:", short_passphrase);
    pty.answer("Type it again:", short_passphrase);
    pty.expect("Refused (passphrase_too_short)");
    pty.expect("How should the passphrase be made?");
    pty.send(ENTER); // the choice made before is offered first
    pty.answer("Passphrase:", passphrase);
    pty.answer("Type it again:", passphrase);
    pty.expect("Passphrase set.");

    // Register: the proxy cannot be reached; the wizard offers the proxy screen first.
    pty.expect("Step 5 of 5: Register");
    pty.answer("Register now?", "");
    pty.expect("Registering with vault prod");
    pty.expect("Refused (vault_unreachable)");
    pty.answer("What now?", "");
    pty.expect("Step 2 of 5: Proxy");
    pty.expect("How does this server reach the vault?");
    pty.send(&format!("{UP}{ENTER}"));
    pty.expect("No proxy: regent connects to the vault directly.");
    pty.expect("Step 5 of 5: Register");
    pty.answer("Register now?", "");
    pty.expect("Registered: this server is machine");
    let (code, transcript) = pty.finish();
    assert_eq!(code, 0, "{}", text(&transcript));

    let status = setup.json("agent", &["status"]);
    assert_eq!(status["phase"], "registered", "{status}");
    assert_eq!(setup.json("agent", &["properties"])["vault"]["name"], "prod");
    let audit = setup.regent("agent").args(["--json", "audit", "--kind", "refused"]).output().unwrap();
    let refused: Vec<serde_json::Value> =
        text(&audit.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let reasons: Vec<&str> = refused.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["passphrase_too_short", "vault_unreachable"], "answers refused at a prompt are not steps");

    for secret in [proxy_password, short_passphrase, passphrase] {
        assert!(!leaks(&transcript, secret), "a typed secret reached the terminal");
        for file in files_under(&setup.path("agent")) {
            assert!(!leaks(&std::fs::read(&file).unwrap(), secret), "a typed secret is in {}", file.display());
        }
    }

    // Run again once registered: it says so and ends.
    let mut again = wizard(&setup, "agent", &[]);
    again.expect("This machine is registered already, to vault prod");
    assert_eq!(again.finish().0, 0);
}

#[test]
fn the_interactive_wizard_resumes_after_ctrl_c_and_esc_at_the_first_step_not_done() {
    let (setup, _) = prepared("prod");

    // Ctrl-C at the credentials screen, after the folders and the proxy were answered.
    let mut pty = wizard(&setup, "agent", &[]);
    folders(&mut pty, &setup);
    pty.expect("How does this server reach the vault?");
    pty.send(ENTER);
    pty.expect("No proxy");
    pty.expect("Vault credentials file:");
    pty.send(CTRL_C);
    pty.expect("the steps done so far are kept: run `regent wizard` to resume");
    let (code, transcript) = pty.finish();
    assert_eq!(code, 130, "{}", text(&transcript));
    let status = setup.json("agent", &["status"]);
    assert_eq!((status["phase"].as_str(), status["events"].as_u64()), (Some("folders_chosen"), Some(2)));

    // Esc at the question whether to keep what is done: stopped again, nothing recorded.
    let mut pty = wizard(&setup, "agent", &[]);
    pty.expect("Resuming: these steps are done already.");
    pty.expect("Keep these and continue at step 3, Vault credentials?");
    pty.send(ESC);
    pty.expect("run `regent wizard` to resume");
    assert_eq!(pty.finish().0, 130);
    assert_eq!(setup.json("agent", &["status"])["events"], 2);

    // Resumed: straight to the credentials screen; a generated passphrase is shown once;
    // --endpoint applies as it does to `regent register`.
    let endpoint = setup.url();
    let newer = setup.download("prod", "newer.VaultCredentials");
    let mut pty = wizard(&setup, "agent", &["--endpoint", &endpoint]);
    pty.expect("proxy        none: direct connection");
    pty.answer("Keep these and continue at step 3, Vault credentials?", "");
    pty.expect("Step 3 of 5: Vault credentials");
    // The default is the newest download in the current folder, and it says so.
    let here = std::fs::canonicalize(setup.dir.path()).unwrap();
    pty.expect(&format!("The default below is the newest .VaultCredentials file in {}, downloaded ", here.display()));
    pty.answer("Vault credentials file:", "");
    pty.expect("Vault credentials loaded: vault prod");
    pty.expect("Step 4 of 5: Encryption passphrase");
    pty.answer("How should the passphrase be made?", ""); // generate, the first choice
    // The default passphrase file says where it is: in the home directory, or as root next to the
    // data dir, never in root's home.
    let saved = match is_root() {
        true => setup.path("regent-passphrase.txt"),
        false => setup.path("home").join("regent-passphrase.txt"),
    };
    let told = match is_root() {
        true => format!(
            "The default below is a new file next to regent's data dir {}, readable by root only (not root's home): {}.",
            setup.path("agent").display(),
            saved.display()
        ),
        false => format!("The default below is a new file in your home directory: {}.", saved.display()),
    };
    pty.expect(&told);
    pty.answer("Save it to (a new file):", "");
    pty.expect("Your passphrase, shown this once:");
    pty.expect("Nobody can recover this passphrase");
    pty.expect(&format!("with vault prod at {endpoint}."));
    pty.answer("Register now?", "");
    pty.expect("Registered: this server is machine");
    let (code, transcript) = pty.finish();
    let transcript = text(&transcript);
    assert_eq!(code, 0, "{transcript}");
    for earlier in ["Step 1 of 5", "Step 2 of 5"] {
        assert!(!transcript.contains(earlier), "resumed at a screen already done: {transcript}");
    }
    let generated = std::fs::read_to_string(&saved).unwrap();
    let generated = generated.trim();
    assert_eq!(transcript.matches(generated).count(), 1, "the generated passphrase is shown once");
    assert!(transcript.contains(&format!("It is saved in {}", saved.display())));
    assert_eq!(setup.json("agent", &["status"])["phase"], "registered");
    assert_eq!(
        setup.json("agent", &["properties"])["credentials"]["file"],
        path_text(&here.join("newer.VaultCredentials"))
    );
    assert!(newer.exists());
}

#[test]
fn the_interactive_wizard_needs_a_terminal_and_has_no_json() {
    let setup = Setup::new();
    for (args, hint) in [(vec!["wizard"], "--unattended"), (vec!["--json", "wizard"], "no JSON output")] {
        let out = setup.regent("agent").args(&args).write_stdin("").output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("regent: ") && stderr.contains(hint), "{stderr}");
    }
    assert!(!setup.path("agent").join("store").exists(), "a usage error opens no store");
}

#[test]
fn esc_or_ctrl_c_at_a_step_commands_masked_prompt_stops_it_with_130_recording_nothing() {
    let (setup, _) = prepared("prod");
    assert_eq!(setup.folders("agent").status.code(), Some(0));
    for key in [ESC, CTRL_C] {
        let mut command = setup.regent_std("agent");
        command.args(["passphrase", "set"]);
        let mut pty = Pty::spawn(command);
        pty.expect("Passphrase:");
        pty.send(key);
        pty.expect("regent: stopped at the passphrase prompt; nothing was recorded");
        let (code, transcript) = pty.finish();
        assert_eq!(code, 130, "{key:?}: {}", text(&transcript));
    }
    assert_eq!(setup.json("agent", &["status"])["events"], 1, "only the folders step is recorded");
}
