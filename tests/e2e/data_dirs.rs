//! Where regent keeps its state when no `--data-dir` or `REGENT_DATA_DIR` names it, through the
//! real binary. Every case of the rule is a unit test of `cli/src/data_dir.rs`; these check the
//! wiring without writing anywhere but a temporary home: as root, the default is `/var/lib/regent`,
//! which a test must not create, so only refusals (which happen before anything is opened) and
//! commands that keep no state run without `--data-dir` here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `regent` with `home` as the only place it can find a default data dir in.
fn regent_at_home(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env_remove("XDG_DATA_HOME").env("HOME", home).env("NO_COLOR", "1");
    cmd
}

/// A real agent's state at `dir` (one folders step), made with `--data-dir`.
fn agent_state_at(dir: &Path, scratch: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_regent"))
        .env_remove("REGENT_DATA_DIR")
        .arg("--data-dir")
        .arg(dir)
        .args(["folders", "--backup-size", "1GiB", "--install-dir"])
        .arg(scratch.join("install"))
        .arg("--scratch-dir")
        .arg(scratch.join("scratch"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn as_root_the_agents_state_left_in_roots_home_is_refused_with_the_mv_until_var_lib_has_one() {
    if !is_root() {
        // The refusal is root's only; a user's agent has always been in its home.
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let old = home.path().join(".local/share/regent");
    agent_state_at(&old, home.path());
    let system = Path::new("/var/lib/regent");
    let (system_was_there, system_has_state) = (system.exists(), system.join("store").exists());
    let out = regent_at_home(home.path()).arg("status").output().unwrap();
    if system_has_state {
        // This machine's root agent lives in /var/lib/regent already: the home's is not looked at.
        assert!(!stderr(&out).contains("data_dir_moved"), "{}", stderr(&out));
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = stderr(&out);
    let how = if system_was_there {
        format!("`rmdir /var/lib/regent && mv {0} /var/lib/regent`", old.display())
    } else {
        format!("`mv {} /var/lib/regent`", old.display())
    };
    assert!(
        line.starts_with(&format!("regent: data_dir_moved: this machine's registration is in {}", old.display())),
        "{line}"
    );
    assert!(line.contains(&how) && line.contains(&format!("--data-dir {}", old.display())), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    let out = regent_at_home(home.path())
        .args(["--json", "folders"])
        .args(["--install-dir", "/x", "--scratch-dir", "/y", "--backup-size", "1GiB"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((error["error"]["code"].as_str(), error["error"]["exit"].as_u64()), (Some("data_dir_moved"), Some(2)));
    // Commands that keep no state run as before.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../replay-fixtures/registered.jsonl");
    let out = regent_at_home(home.path()).arg("replay").arg(&fixture).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(regent_at_home(home.path()).args(["completions", "bash"]).output().unwrap().status.code(), Some(0));
    // Named, the old place still works; and nothing was made where the default is.
    let out = regent_at_home(home.path()).arg("--data-dir").arg(&old).args(["--json", "status"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["phase"], "folders_chosen");
    assert_eq!(system.exists(), system_was_there, "the default was created");
}

#[test]
fn a_vault_service_left_in_the_agents_folder_is_refused_with_the_move_before_it_starts() {
    let home = tempfile::tempdir().unwrap();
    let old = home.path().join(".local/share/regent");
    std::fs::create_dir_all(old.join("log")).unwrap();
    std::fs::write(old.join("admin.token"), "not a real token\n").unwrap();
    let default =
        if is_root() { PathBuf::from("/var/lib/regent-vault") } else { home.path().join(".local/share/regent-vault") };
    if default.join("log").exists() {
        // A vault service lives at the default already: it would start, on the real one.
        return;
    }
    let default_was_there = default.exists();
    let mut child = regent_at_home(home.path())
        .args(["vault", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("vault serve started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = stderr(&out);
    let how = format!("`mkdir -p -m 700 {0} && mv {1}/log {1}/admin.token {0}/`", default.display(), old.display());
    assert!(
        line.starts_with(&format!("regent: data_dir_moved: the vault service's state is in {}", old.display())),
        "{line}"
    );
    assert!(line.contains(&how), "{line}");
    assert_eq!(default.exists(), default_was_there, "the default was created");
}
