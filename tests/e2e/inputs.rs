//! Bad input gets a clear error and a recorded refusal, never holds the store, and a step refused
//! for a local reason consumes nothing: no PIN, no folder, no file left behind. What is secret
//! leaves nothing usable behind.
#![allow(clippy::disallowed_macros, reason = "a test says what it measured on stderr, for whoever runs it")]

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use crate::support::{Setup, StepArgs, copy_dir, files_under, leaks, refused_with};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The number of events in `agent`'s log.
fn events(setup: &Setup, agent: &str) -> u64 {
    setup.json(agent, &["status"])["events"].as_u64().unwrap()
}

/// folders and credentials for `agent` (credentials written as the vault issues them).
fn folders_and_credentials(setup: &Setup, agent: &str) {
    let ok = |out: Output| assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    ok(setup.folders(agent));
    let credentials = setup.path(&format!("{agent}.VaultCredentials"));
    crate::support::write_credentials(&credentials, "vault-a", Utc::now() - chrono::Duration::minutes(5), 48);
    ok(setup.regent(agent).args(["credentials", "load"]).arg(&credentials).output().unwrap());
}

/// A proxy with a user and `password` for `agent`, accepted.
fn set_proxy_password(setup: &Setup, agent: &str, password: &str) {
    let out = setup
        .regent(agent)
        .args(["proxy", "set", "--host", "proxy.example", "--port", "3128", "--username", "u", "--password-stdin"])
        .write_stdin(format!("{password}\n"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Runs a command that must end within `limit` (it would otherwise block forever).
fn within(limit: Duration, mut command: Command) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: it blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fifo_or_a_device_given_as_a_file_is_refused_at_once_and_recorded() {
    let setup = Setup::new();
    folders_and_credentials(&setup, "a");
    let fifo = setup.path("creds.VaultCredentials");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let before = events(&setup, "a");
    for (file, says) in [(fifo.clone(), "a FIFO"), (PathBuf::from("/dev/zero"), "a device")] {
        let mut load = setup.regent_std("a");
        load.args(["credentials", "load"]).arg(&file);
        let out = within(Duration::from_secs(10), load);
        refused_with((out.status.code().unwrap_or(-1), stderr(&out)), "credentials_unreadable");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert_eq!(events(&setup, "a"), before + 2, "both refusals are recorded");
    // A passphrase file that is a FIFO is refused before anything is opened.
    let mut set = setup.regent_std("a");
    set.args(["passphrase", "set", "--passphrase-file"]).arg(&fifo);
    let out = within(Duration::from_secs(10), set);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
}

#[test]
fn a_secret_is_one_line_of_at_most_a_kibibyte_and_anything_else_is_refused_and_recorded() {
    let setup = Setup::new();
    folders_and_credentials(&setup, "a");
    let set = |stdin: &[u8]| {
        let out =
            setup.regent("a").args(["passphrase", "set", "--passphrase-stdin"]).write_stdin(stdin).output().unwrap();
        (out.status.code().unwrap_or(-1), stderr(&out))
    };
    let huge = vec![b'a'; 10 << 20];
    let cases: [(&[u8], &str, &str); 5] = [
        (&huge, "passphrase_invalid", "more than 1024 bytes"),
        (b"a good first line here\nand a second line\n", "passphrase_invalid", "more than one line"),
        (b"                    ", "passphrase_invalid", "only whitespace"),
        (b" a passphrase with a leading space\n", "passphrase_invalid", "starts or ends with whitespace"),
        (b"a passphrase with a trailing tab\t\n", "passphrase_invalid", "control character"),
    ];
    let mut expected = events(&setup, "a");
    for (stdin, reason, says) in cases {
        let (code, message) = set(stdin);
        refused_with((code, message.clone()), reason);
        assert!(message.contains(says), "{message}");
        assert!(!message.contains("second line"), "the secret is not repeated: {message}");
        expected += 1;
        assert_eq!(events(&setup, "a"), expected, "recorded: {message}");
    }
    assert_eq!(setup.json("a", &["status"])["phase"], "credentials_loaded");
    // The proxy password follows the same rules, from stdin or the environment.
    let proxy = ["proxy", "set", "--host", "proxy.example", "--port", "3128", "--username", "u"];
    let out = setup
        .regent("a")
        .args(proxy)
        .arg("--password-stdin")
        .write_stdin("first-line-secret\nsecond-line-secret\n")
        .output()
        .unwrap();
    refused_with((out.status.code().unwrap_or(-1), stderr(&out)), "invalid_proxy");
    let out =
        setup.regent("a").args(proxy).args(["--password-env", "PW"]).env("PW", "x".repeat(2000)).output().unwrap();
    refused_with((out.status.code().unwrap_or(-1), stderr(&out)), "invalid_proxy");
    // A good one, with its line break, is taken.
    let (code, message) = set(b"a perfectly good passphrase\n");
    assert_eq!(code, 0, "{message}");
    // Nothing of the refused inputs reached the log.
    let export = setup.regent("a").args(["audit", "export"]).output().unwrap().stdout;
    assert!(
        !leaks(&export, "and a second line") && !leaks(&export, "second-line-secret"),
        "a refused secret is in the export"
    );
}

#[test]
fn the_security_pin_never_comes_from_the_command_line() {
    let setup = Setup::new();
    let out = setup
        .regent("a")
        .args(["properties", "passphrase", "change", "--passphrase-stdin", "--security-pin", "87654321"])
        .write_stdin("a new passphrase here\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--security-pin"), "{}", stderr(&out));
    assert!(!setup.path("a").exists(), "nothing was recorded");
}

/// A registered agent `a` with a real vault `prod`.
fn registered(setup: &Setup) {
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    setup.prepare("a", &credentials);
    let (code, message) = setup.step("a", &["register"]);
    assert_eq!(code, 0, "{message}");
}

fn pin(setup: &Setup) -> String {
    let out = setup.admin(&["pin", "--vault", "prod"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_passphrase_change_refused_for_a_local_reason_leaves_the_pin_good() {
    let setup = Setup::new();
    registered(&setup);
    let pin = pin(&setup);
    let change = |stdin: &str, extra: &[&str]| {
        let out = setup
            .regent("a")
            .args(["properties", "passphrase", "change", "--security-pin-env", "PIN"])
            .args(extra)
            .env("PIN", &pin)
            .write_stdin(stdin)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), stderr(&out))
    };
    refused_with(change("too short\n", &["--passphrase-stdin"]), "passphrase_too_short");
    refused_with(change("   \n", &["--passphrase-stdin"]), "passphrase_invalid");
    let taken = setup.path("taken.txt");
    std::fs::write(&taken, "the operator's own file").unwrap();
    refused_with(change("", &["--generate", "--save-to", taken.to_str().unwrap()]), "passphrase_invalid");
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "the operator's own file", "never overwritten");
    // A PIN that is not one is refused here, without asking the vault.
    let out = setup
        .regent("a")
        .args(["properties", "passphrase", "change", "--passphrase-stdin", "--security-pin-env", "PIN"])
        .env("PIN", "12 34")
        .write_stdin("a good new passphrase\n")
        .output()
        .unwrap();
    refused_with((out.status.code().unwrap_or(-1), stderr(&out)), "security_pin_invalid");
    // The PIN was never spent: the change goes through with it.
    let (code, message) = change("a good new passphrase\n", &["--passphrase-stdin"]);
    assert_eq!(code, 0, "{message}");
    // And now it is used up.
    refused_with(change("another good passphrase\n", &["--passphrase-stdin"]), "security_pin_invalid");
}

/// Something on 127.0.0.1 that takes connections and never answers (a vault that hangs).
fn silent_listener() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, thread)
}

#[test]
fn register_does_not_hold_the_store_while_the_vault_is_slow_and_a_rerun_asks_with_the_same_request() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    setup.prepare("a", &credentials);
    let (addr, _listener) = silent_listener();
    let endpoint = format!("http://{addr}");
    let mut register =
        setup.regent_std("a").args(["register", "--endpoint", &endpoint]).stderr(Stdio::null()).spawn().unwrap();
    // Once the registration is started (recorded), other commands get the store at once.
    let started = Instant::now();
    let attempted = loop {
        let out = setup.regent("a").args(["--json", "audit", "--kind", "RegistrationAttempted"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        if !out.stdout.is_empty() {
            break out;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the registration was never started");
    };
    let asked = Instant::now();
    let status = setup.regent("a").args(["--json", "status"]).output().unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert!(asked.elapsed() < Duration::from_secs(3), "status waited {:?} for the store", asked.elapsed());
    assert!(!stderr(&status).contains("waiting"), "{}", stderr(&status));
    assert!(register.try_wait().unwrap().is_none(), "register is still waiting on the vault");
    // Killed while the vault was being asked: status says the registration is started, and the
    // next run asks again, with the same request.
    register.kill().unwrap();
    register.wait().unwrap();
    let started = setup.json("a", &["status"]);
    assert_eq!(started["registration_started"]["vault"], "prod", "{started}");
    let human = String::from_utf8(setup.regent("a").arg("status").output().unwrap().stdout).unwrap();
    assert!(human.contains("registration  started with vault prod"), "{human}");
    let (code, message) = setup.step("a", &["register", "--endpoint", &setup.url()]);
    assert_eq!(code, 0, "{message}");
    let audit = setup.regent("a").args(["--json", "audit", "--kind", "RegistrationAttempted"]).output().unwrap();
    assert_eq!(audit.stdout, attempted.stdout, "no second registration was started");
    let machines = setup.admin(&["machines", "--vault", "prod", "--json"]);
    let machines: Value = serde_json::from_slice(&machines.stdout).unwrap();
    assert_eq!(machines.as_array().unwrap().len(), 1);
    assert!(setup.json("a", &["status"])["registration_started"].is_null(), "the registration ended with it");
}

#[test]
fn a_path_that_is_not_utf8_is_refused_as_an_invalid_folder_and_recorded() {
    let setup = Setup::new();
    let raw = std::ffi::OsStr::from_bytes(b"/tmp/regent-not-utf8-\xff\xfe");
    let out = setup.regent("a").folders(raw, setup.path("s"), "1GiB").output().unwrap();
    refused_with((out.status.code().unwrap_or(-1), stderr(&out)), "invalid_folder");
    assert!(stderr(&out).contains("not valid UTF-8"), "{}", stderr(&out));
    assert_eq!(events(&setup, "a"), 1, "recorded");
    assert!(!Path::new(raw).exists() && !setup.path("s").exists(), "nothing was created");
}

#[test]
fn a_refused_folders_step_creates_no_folder() {
    let setup = Setup::new();
    let (install, scratch) = (setup.path("new/install"), setup.path("new/scratch"));
    let out = setup.regent("a").folders(&install, &scratch, "10000PB").output().unwrap();
    refused_with((out.status.code().unwrap_or(-1), stderr(&out)), "insufficient_scratch_space");
    assert!(!setup.path("new").exists(), "a refused step left a folder behind");
    let out = setup.regent("a").folders(&install, &scratch, "1GiB").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(install.is_dir() && scratch.is_dir());
}

/// Whether the log records a generated passphrase saved to `file`.
fn recorded_at(setup: &Setup, agent: &str, file: &Path) -> bool {
    let properties = setup.json(agent, &["properties"]);
    properties["encryption"]["saved_to"].as_str() == Some(file.to_str().unwrap())
}

#[test]
fn a_generated_passphrase_file_exists_only_if_the_log_says_so_wherever_generate_is_killed() {
    const ROUNDS: usize = 30;
    let setup = Setup::new();
    folders_and_credentials(&setup, "template");
    let file = |round: usize| setup.path(&format!("keep-{round}/passphrase.txt"));
    let generate = |agent: &str, file: &Path| {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        setup
            .regent_std(agent)
            .args(["passphrase", "generate", "--save-to"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one takes, to spread the kills over it.
    copy_dir(&setup.path("template"), &setup.path("probe"));
    let started = Instant::now();
    let mut probe = generate("probe", &setup.path("probe-keep/passphrase.txt"));
    assert!(probe.wait().unwrap().success());
    let took = started.elapsed();
    let mut killed = 0;
    for round in 0..ROUNDS {
        let agent = format!("agent-{round}");
        copy_dir(&setup.path("template"), &setup.path(&agent));
        let mut child = generate(&agent, &file(round));
        std::thread::sleep(took.mul_f64((round as f64 + 0.5) / ROUNDS as f64 * 1.2));
        let _ = child.kill();
        killed += usize::from(!child.wait().unwrap().success());
        // Right after the kill: a file there is one the log names.
        if file(round).exists() {
            assert!(recorded_at(&setup, &agent, &file(round)), "round {round}: a file the log does not name");
        }
        // The next command finishes a move the kill interrupted; generating again works if nothing was recorded.
        let (code, message) = setup.step(&agent, &["properties", "throttling", "off"]);
        assert_eq!(code, 0, "{message}");
        assert_eq!(file(round).exists(), recorded_at(&setup, &agent, &file(round)), "round {round}");
        if !file(round).exists() {
            let (code, message) =
                setup.step(&agent, &["passphrase", "generate", "--save-to", file(round).to_str().unwrap()]);
            assert_eq!(code, 0, "round {round}: a killed run blocks the next: {message}");
        }
        assert!(file(round).exists() && recorded_at(&setup, &agent, &file(round)));
        // Nothing but the file is left beside it.
        let beside: Vec<_> = std::fs::read_dir(file(round).parent().unwrap()).unwrap().collect();
        assert_eq!(beside.len(), 1, "round {round}: {beside:?}");
    }
    eprintln!("{killed} of {ROUNDS} runs were killed before they ended");
    assert!(killed > 0, "no run was killed in the middle");
}

#[test]
fn failures_under_json_print_an_error_document_on_stdout() {
    let setup = Setup::new();
    let doc = |out: &Output| -> Value {
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "one document: {text}");
        serde_json::from_str(lines[0]).unwrap()
    };
    // A refused step: its record, with the error in it.
    folders_and_credentials(&setup, "a");
    let out = setup
        .regent("a")
        .args(["--json", "credentials", "load"])
        .arg(setup.path("missing.VaultCredentials"))
        .output()
        .unwrap();
    let answer = doc(&out);
    assert_eq!(
        (answer["outcome"].as_str(), answer["error"]["code"].as_str()),
        (Some("refused"), Some("credentials_unreadable"))
    );
    assert_eq!(answer["error"]["exit"], 1);
    // A file that cannot be read, an admin call without a token, a usage error: the error alone.
    for (args, code, exit) in [
        (vec!["--json", "audit", "verify", "--file", "/nonexistent/log.jsonl"], "refused", 1),
        (
            vec![
                "--json",
                "vault",
                "machines",
                "--vault",
                "v",
                "--server",
                "http://127.0.0.1:9",
                "--token-file",
                "/nonexistent",
            ],
            "admin_token_unreadable",
            1,
        ),
        (vec!["--json", "folders", "--backup-size", "lots"], "usage", 2),
    ] {
        let out = setup.regent("a").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(exit), "{args:?}: {}", stderr(&out));
        let answer = doc(&out);
        assert_eq!(answer["error"]["code"], code, "{args:?}: {answer}");
        assert_eq!(answer["error"]["exit"], exit);
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(
            stderr(&out).lines().filter(|l| l.starts_with("regent: ") || l.starts_with("error:")).count(),
            1,
            "{}",
            stderr(&out)
        );
    }
    // An admin call the vault refuses carries the vault's own code.
    let out = setup.admin(&["create", "a-vault"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = setup.admin(&["create", "a-vault", "--json"]);
    assert_eq!((out.status.code(), doc(&out)["error"]["code"].as_str()), (Some(1), Some("vault_exists")));
}

#[test]
fn read_only_commands_create_no_data_dir() {
    let home = tempfile::tempdir().unwrap();
    // Root's default is /var/lib/regent, not the home (tests/e2e/data_dirs.rs): root runs these
    // as nobody, so that they look where a user's agent looks and nowhere real.
    // SAFETY: geteuid cannot fail.
    let nobody = (unsafe { libc::geteuid() } == 0).then_some(65534);
    if let Some(id) = nobody {
        std::os::unix::fs::chown(home.path(), Some(id), Some(id)).unwrap();
    }
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
        cmd.env_remove("REGENT_DATA_DIR").env_remove("XDG_DATA_HOME").env("HOME", home.path()).args(args);
        if let Some(id) = nobody {
            std::os::unix::process::CommandExt::uid(&mut cmd, id);
            std::os::unix::process::CommandExt::gid(&mut cmd, id);
        }
        cmd.output().unwrap()
    };
    for args in [&["status"][..], &["properties"], &["audit"], &["audit", "verify"], &["--json", "status"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let status: Value = serde_json::from_slice(&run(&["--json", "status"]).stdout).unwrap();
    assert_eq!((status["phase"].as_str(), status["events"].as_u64()), (Some("new"), Some(0)));
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "the default data dir was not created");
    // Named but missing: a mistake, said as one.
    let out = run(&["--data-dir", home.path().join("typo").to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).starts_with("regent: there is no data directory at "), "{}", stderr(&out));
    assert!(!home.path().join("typo").exists());
}

#[test]
fn superseded_secrets_are_removed_and_status_counts_what_is_there() {
    let setup = Setup::new();
    folders_and_credentials(&setup, "a");
    let proxy = |password: &str| set_proxy_password(&setup, "a", password);
    proxy("the-first-proxy-password");
    proxy("the-second-proxy-password");
    let sealed = || std::fs::read_dir(setup.path("a").join("secrets")).unwrap().count();
    // The credentials key and the second password.
    assert_eq!(sealed(), 2);
    assert!(setup.json("a", &["status"])["sealed_secrets"].as_str().unwrap().contains("(2 sealed)"));
    let (code, message) = setup.step("a", &["proxy", "clear"]);
    assert_eq!(code, 0, "{message}");
    assert_eq!(sealed(), 1);
    assert!(setup.json("a", &["status"])["sealed_secrets"].as_str().unwrap().contains("(1 sealed)"));
    // Nothing else is kept beside them (no temporary file of a seal, no old value).
    assert_eq!(files_under(&setup.path("a").join("secrets")).len(), 1);
}

#[test]
fn an_export_holds_no_verifier_and_an_older_log_that_does_is_named() {
    let setup = Setup::new();
    folders_and_credentials(&setup, "a");
    let out = setup
        .regent("a")
        .args(["passphrase", "set", "--passphrase-stdin"])
        .write_stdin("correct horse battery staple\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let export = setup.regent("a").args(["audit", "export"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&export.stdout).contains("$argon2"), "the export holds a verifier");
    assert!(stderr(&export).is_empty(), "{}", stderr(&export));
    // A log written before the verifier was sealed, imported: its export says which records hold one.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../replay-fixtures/schema-2.jsonl");
    let out = setup.regent("old").arg("import").arg(&fixture).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut file = std::fs::File::create(setup.path("old.jsonl")).unwrap();
    let export = setup.regent("old").args(["audit", "export"]).output().unwrap();
    file.write_all(&export.stdout).unwrap();
    assert_eq!(export.status.code(), Some(0));
    let warning = stderr(&export);
    assert!(
        warning.starts_with("warning: record 3 was written before regent sealed the passphrase verifier"),
        "{warning}"
    );
    assert_eq!(warning.lines().count(), 1, "{warning}");
}

#[test]
fn superseded_secrets_an_older_build_left_are_swept_and_other_logs_secrets_kept() {
    let setup = Setup::new();
    folders_and_credentials(&setup, "a");
    let secrets = setup.path("a").join("secrets");
    let proxy = |password: &str| set_proxy_password(&setup, "a", password);
    let before = files_under(&secrets);
    proxy("the-first-proxy-password");
    let first = files_under(&secrets).into_iter().find(|p| !before.contains(p)).expect("the first password's file");
    let kept = std::fs::read(&first).unwrap();
    proxy("the-second-proxy-password");
    assert!(!first.exists(), "the step that superseded it removed it");
    // What an older build left behind: the first password still sealed; and beside it a value no
    // state of this log names (another log's, say, being restored).
    std::fs::write(&first, kept).unwrap();
    let foreign = secrets.join(format!("{}.sealed", "ab".repeat(32)));
    std::fs::write(&foreign, b"not this log's").unwrap();
    let (code, message) = setup.step("a", &["properties", "throttling", "off"]);
    assert_eq!(code, 0, "{message}");
    assert!(!first.exists(), "the superseded password the log names was swept");
    assert!(foreign.exists(), "a sealed file the log never named is left alone");
}
