//! The wizard steps and views through the real binary: outcomes, reason codes, JSON shapes, exit
//! codes, secrets, and concurrent commands on one data dir.

use std::path::PathBuf;
use std::process::Output;

use chrono::{Duration, Utc};
use serde_json::Value;

use crate::support::{Agent, StepArgs, files_under, leaks, throttling_set};

impl Agent {
    /// A credentials file issued like the vault does, valid from `from` for `hours`.
    fn credentials(&self, name: &str, vault: &str, from: chrono::DateTime<Utc>, hours: i64) -> PathBuf {
        let path = self.path(name);
        crate::support::write_credentials(&path, vault, from, hours);
        path
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A refusal: exit 1, one line on stderr naming the reason.
fn assert_refused(output: &Output, reason: &str) {
    assert_eq!(code(output), 1, "{reason}: {}", stderr(output));
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with(&format!("regent: {reason}: ")), "{err}");
}

#[test]
fn the_steps_up_to_the_passphrase_with_json_status_and_properties() {
    let agent = Agent::new();
    // A data dir named but not there yet is likely mistyped: status says so, and creates nothing.
    let output = agent.run(&["--json", "status"]);
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["error"]["code"], "data_dir_missing");
    assert_eq!(answer["error"]["exit"], 3);
    assert!(!agent.data_dir().exists(), "a read-only command created the data dir");
    std::fs::create_dir(agent.data_dir()).unwrap();
    let status = agent.json(&["status"]);
    assert_eq!((status["phase"].as_str(), status["next_step"].as_str()), (Some("new"), Some("folders")));
    assert!(status["last_failure"].is_null() && status["events"] == 0);
    assert_eq!(std::fs::read_dir(agent.data_dir()).unwrap().count(), 0, "status wrote nothing");

    assert_eq!(code(&agent.folders()), 0);
    let credentials = agent.credentials("v.VaultCredentials", "vault-prod", Utc::now() - Duration::minutes(10), 48);
    let output = agent.run(&["credentials", "load", credentials.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // A step run on its own names the one due next (quickstart, which runs it, does not).
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.lines().any(|line| line == "next: regent passphrase generate --save-to FILE"), "{stdout}");
    let output = agent.run_stdin(&["passphrase", "set", "--passphrase-stdin"], "a passphrase of 30 characters\n");
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    let status = agent.json(&["status"]);
    assert_eq!(status["phase"], "passphrase_created");
    assert_eq!(status["next_step"], "register");
    assert_eq!(status["events"], 3);
    assert_eq!(status["head"]["position"], 3);
    assert_eq!(status["head"]["hash"].as_str().map(str::len), Some(64));

    let properties = agent.json(&["properties"]);
    for key in ["folders", "proxy", "throttling", "encryption", "vault", "credentials"] {
        assert!(properties.get(key).is_some(), "properties has {key}");
    }
    assert!(properties["proxy"].is_null() && properties["throttling"].is_null());
    assert_eq!(properties["vault"]["name"], "vault-prod");
    assert_eq!(properties["vault"]["registered"], false);
    assert_eq!(properties["encryption"]["how"], "provided");
    assert_eq!(properties["credentials"]["thumbprint"].as_str().map(str::len), Some(64));

    let audit = agent.run(&["audit", "--json"]);
    let lines: Vec<Value> =
        String::from_utf8(audit.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["position"], i as u64 + 1);
        assert_eq!(line["outcome"], "accepted");
        assert!(line["reason"].is_null());
        for key in ["at", "actor", "kind", "summary"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
    }
    assert_eq!(lines[1]["kind"], "CredentialsLoaded");
}

#[test]
fn every_reason_code_that_needs_no_vault_is_reached_and_recorded() {
    let agent = Agent::new();
    let path = |name: &str| agent.path(name).to_str().unwrap().to_string();
    // Out of order: credentials before folders.
    let credentials = agent.credentials("v.VaultCredentials", "vault-a", Utc::now() - Duration::minutes(10), 48);
    assert_refused(&agent.run(&["credentials", "load", credentials.to_str().unwrap()]), "step_out_of_order");
    // Folders: nested, and not enough scratch space for 10 PB.
    let nested =
        agent.run(&["folders", "--install-dir", &path("i"), "--scratch-dir", &path("i/s"), "--backup-size", "1GiB"]);
    assert_refused(&nested, "invalid_folder");
    let relative =
        agent.run(&["folders", "--install-dir", "relative/i", "--scratch-dir", &path("s"), "--backup-size", "1GiB"]);
    assert_refused(&relative, "invalid_folder");
    let huge =
        agent.run(&["folders", "--install-dir", &path("i"), "--scratch-dir", &path("s"), "--backup-size", "10PB"]);
    assert_refused(&huge, "insufficient_scratch_space");
    assert!(stderr(&huge).contains("5%"), "{}", stderr(&huge));
    assert_eq!(code(&agent.folders()), 0);
    // Proxy: a port out of range, and a user without a password source (no terminal).
    assert_refused(&agent.run(&["proxy", "set", "--host", "proxy", "--port", "70000"]), "invalid_proxy");
    assert_refused(&agent.run(&["proxy", "set", "--host", "bad host", "--port", "80"]), "invalid_proxy");
    // Credentials: missing, a directory, the wrong extension, not XML, expired, not yet valid.
    assert_refused(&agent.run(&["credentials", "load", &path("missing.VaultCredentials")]), "credentials_unreadable");
    std::fs::create_dir(agent.path("dir.VaultCredentials")).unwrap();
    assert_refused(&agent.run(&["credentials", "load", &path("dir.VaultCredentials")]), "credentials_unreadable");
    let big = agent.path("big.VaultCredentials");
    std::fs::write(&big, vec![b'x'; 2 * 1024 * 1024]).unwrap();
    assert_refused(&agent.run(&["credentials", "load", big.to_str().unwrap()]), "credentials_unreadable");
    let wrong_extension = agent.path("v.xml");
    std::fs::copy(&credentials, &wrong_extension).unwrap();
    assert_refused(&agent.run(&["credentials", "load", wrong_extension.to_str().unwrap()]), "credentials_invalid");
    let garbage = agent.path("garbage.VaultCredentials");
    std::fs::write(&garbage, b"\x00\x01 not xml").unwrap();
    assert_refused(&agent.run(&["credentials", "load", garbage.to_str().unwrap()]), "credentials_invalid");
    let expired = agent.credentials("old.VaultCredentials", "vault-a", Utc::now() - Duration::hours(60), 48);
    let output = agent.run(&["credentials", "load", expired.to_str().unwrap()]);
    assert_refused(&output, "credentials_expired");
    assert!(stderr(&output).contains("has expired"));
    let future = agent.credentials("new.VaultCredentials", "vault-a", Utc::now() + Duration::hours(5), 48);
    assert_refused(&agent.run(&["credentials", "load", future.to_str().unwrap()]), "credentials_expired");
    assert_eq!(code(&agent.run(&["credentials", "load", credentials.to_str().unwrap()])), 0);
    // Passphrase: too short, not ASCII, and a generated one whose file exists already.
    assert_refused(&agent.run_stdin(&["passphrase", "set", "--passphrase-stdin"], "short\n"), "passphrase_too_short");
    assert_refused(
        &agent.run_stdin(&["passphrase", "set", "--passphrase-stdin"], "pässphräse mit ümläuten\n"),
        "passphrase_invalid",
    );
    std::fs::write(agent.path("taken.txt"), b"keep me").unwrap();
    assert_refused(&agent.run(&["passphrase", "generate", "--save-to", &path("taken.txt")]), "passphrase_invalid");
    assert_eq!(std::fs::read(agent.path("taken.txt")).unwrap(), b"keep me", "never overwritten");
    // Throttling out of range, and backwards hours.
    let throttle = |work: &str, hours: &str| agent.run(&throttling_set("mon-fri", hours, work, "20Mbps"));
    assert_refused(&throttle("2000Mbps", "09:00-17:00"), "invalid_throttling");
    assert_refused(&throttle("1Mbps", "17:00-09:00"), "invalid_throttling");
    let status = agent.json(&["status"]);
    assert_eq!(
        (status["last_failure"]["reason"].as_str(), status["last_failure"]["step"].as_str()),
        (Some("invalid_throttling"), Some("throttling"))
    );
    assert_eq!(code(&throttle("1Mbps", "09:00-17:00")), 0);
    assert!(agent.json(&["status"])["last_failure"].is_null(), "a later success of the same step resolves it");

    // Every refusal above is in the log, with its reason, and status keeps the last one.
    let audit = agent.run(&["audit", "--json", "--kind", "refused"]);
    let reasons: Vec<String> = String::from_utf8(audit.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["reason"].as_str().unwrap().to_string())
        .collect();
    for reason in [
        "step_out_of_order",
        "invalid_folder",
        "insufficient_scratch_space",
        "invalid_proxy",
        "credentials_unreadable",
        "credentials_invalid",
        "credentials_expired",
        "passphrase_too_short",
        "passphrase_invalid",
        "invalid_throttling",
    ] {
        assert!(reasons.iter().any(|r| r == reason), "{reason} is recorded: {reasons:?}");
    }
}

#[test]
fn usage_errors_exit_2_and_record_nothing() {
    let agent = Agent::new();
    for args in [
        vec!["folders", "--install-dir", "/a", "--scratch-dir", "/b", "--backup-size", "12XB"],
        vec!["folders", "--install-dir", "/a"],
        vec!["proxy", "set", "--host", "p", "--port", "x"],
        vec![
            "proxy",
            "set",
            "--host",
            "p",
            "--port",
            "1",
            "--username",
            "u",
            "--password-stdin",
            "--password-env",
            "X",
        ],
        throttling_set("funday", "09:00-17:00", "1Mbps", "1Mbps").to_vec(),
        vec!["passphrase", "set"],
        vec!["audit", "--since", "yesterday"],
        vec!["nonsense"],
    ] {
        let output = agent.run(&args);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"));
    }
    // An empty password on stdin is a usage error too, and names what to do.
    let output =
        agent.run_stdin(&["proxy", "set", "--host", "p", "--port", "1", "--username", "u", "--password-stdin"], "");
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("standard input held no proxy password"));
    // Credentials inside a host or URL are refused and never repeated.
    for args in [
        vec!["proxy", "set", "--host", "ops:Hunter2-secret@proxy", "--port", "3128"],
        vec!["register", "--endpoint", "https://ops:Hunter2-secret@vault.example"],
    ] {
        let output = agent.run(&args);
        assert_eq!(code(&output), 2, "{args:?}");
        assert!(!stderr(&output).contains("Hunter2-secret"), "the secret is echoed: {}", stderr(&output));
    }
    assert!(!agent.data_dir().exists(), "usage errors record nothing, not even a data dir");
}

#[test]
fn no_secret_reaches_output_logs_files_or_exports_even_at_vv() {
    let agent = Agent::new();
    let password = "Tiny-Proxy-Pass-7731";
    let passphrase = "my own passphrase for backups 2026";
    let mut seen = Vec::new();
    let mut keep = |output: Output| {
        seen.extend(output.stdout);
        seen.extend(output.stderr);
    };
    keep(agent.cmd().arg("-vv").folders(agent.path("i"), agent.path("s"), "1GiB").output().unwrap());
    keep(
        agent
            .cmd()
            .arg("-vv")
            .args([
                "proxy",
                "set",
                "--host",
                "proxy",
                "--port",
                "3128",
                "--username",
                "ops",
                "--password-env",
                "PROXY_PW",
            ])
            .env("PROXY_PW", password)
            .output()
            .unwrap(),
    );
    let credentials = agent.credentials("v.VaultCredentials", "vault-a", Utc::now() - Duration::minutes(10), 48);
    keep(agent.cmd().arg("-vv").args(["credentials", "load"]).arg(&credentials).output().unwrap());
    let passphrase_file = agent.path("pp.txt");
    std::fs::write(&passphrase_file, format!("{passphrase}\n")).unwrap();
    keep(
        agent.cmd().arg("-vv").args(["passphrase", "set", "--passphrase-file"]).arg(&passphrase_file).output().unwrap(),
    );
    keep(agent.cmd().arg("-vv").args(["--json", "status"]).output().unwrap());
    keep(agent.cmd().arg("-vv").args(["--json", "properties"]).output().unwrap());
    keep(agent.cmd().arg("-vv").args(["audit"]).output().unwrap());
    let export = agent.cmd().args(["audit", "export"]).output().unwrap();
    assert_eq!(code(&export), 0);
    let status = agent.json(&["status"]);
    assert_eq!(status["phase"], "passphrase_created", "the run must have gone through: {status}");
    assert_eq!(agent.json(&["properties"])["proxy"]["password_set"], true);
    for secret in [password, passphrase] {
        assert!(!leaks(&seen, secret), "a secret reached stdout or stderr");
        assert!(!leaks(&export.stdout, secret), "a secret reached the export");
        for file in files_under(&agent.data_dir()) {
            assert!(!leaks(&std::fs::read(&file).unwrap(), secret), "a secret is in {}", file.display());
        }
    }
}

#[test]
fn twenty_concurrent_commands_each_end_recorded_or_with_a_clear_error() {
    let agent = Agent::new();
    assert_eq!(code(&agent.folders()), 0);
    let children: Vec<_> = (0..20)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_regent"))
                .env_remove("REGENT_DATA_DIR")
                .arg("--data-dir")
                .arg(agent.data_dir())
                .args(["proxy", "set", "--host", &format!("proxy{i}"), "--port", "3128"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut recorded = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => recorded += 1,
            Some(3) => assert!(err.lines().last().unwrap_or("").contains("in use by another process"), "{err}"),
            other => panic!("exit {other:?}: {err}"),
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    let status = agent.json(&["status"]);
    assert_eq!(status["events"], 1 + recorded, "each success is exactly one event");
    assert!(recorded >= 1);
    assert_eq!(code(&agent.run(&["audit", "verify"])), 0);
}

#[test]
fn completions_and_the_manual_page_name_every_command() {
    let agent = Agent::new();
    let bash = String::from_utf8(agent.run(&["completions", "bash"]).stdout).unwrap();
    let man = String::from_utf8(agent.run(&["man"]).stdout).unwrap();
    for command in
        ["quickstart", "folders", "credentials", "passphrase", "register", "properties", "audit", "replay", "vault"]
    {
        assert!(bash.contains(command), "bash completion offers {command}");
        assert!(man.contains(command), "the manual names {command}");
    }
    assert!(man.starts_with(".ie") && man.contains(".TH regent 1"));
    assert_eq!(code(&agent.run(&["completions", "tcsh"])), 2);
}
