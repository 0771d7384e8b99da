//! Killed in the middle of `regent register`, the agent or the vault: retried, every agent ends
//! with exactly one machine at the vault, and it is the machine the agent records.
//!
//! The agent starts a registration by recording its request id before the vault hears of it, and
//! every later run asks again with that id until an outcome is recorded; the vault makes one
//! machine per request id. So no moment of a kill can leave two machines for one agent, or an
//! agent registered as a machine the vault does not list.
#![allow(clippy::disallowed_macros, reason = "a test says what it measured on stderr, for whoever runs it")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Setup, copy_dir};

/// A small deterministic generator (splitmix64): the kill moments vary, and a failing seed can be
/// run again (it is printed).
struct Moments(u64);

impl Moments {
    fn seeded() -> Moments {
        let seed = std::env::var("REGENT_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
        });
        eprintln!("kill moments: REGENT_CRASH_SEED={seed}");
        Moments(seed)
    }

    /// A duration in 0..=`max`.
    fn next(&mut self, max: Duration) -> Duration {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Duration::from_micros(z % (max.as_micros() as u64 + 1))
    }
}

fn regent(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env_remove("RUST_LOG").env("NO_COLOR", "1").arg("--data-dir").arg(data_dir);
    // `vault serve` is given its address; none of its other options may come from the caller's shell.
    for var in [
        "REGENT_VAULT_LISTEN",
        "REGENT_VAULT_TLS_CERT",
        "REGENT_VAULT_TLS_KEY",
        "REGENT_VAULT_PUBLIC_URL",
        "REGENT_VAULT_LOG_FORMAT",
        "REGENT_VAULT_DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `regent register` until the machine is registered (a retry after a kill may be refused
/// as unreachable while the vault restarts, or succeed at once). Returns how many runs it took.
fn register_until_done(data_dir: &Path) -> u32 {
    for run in 1..=20 {
        let out = regent(data_dir).args(["--json", "register"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => return run,
            Some(1) if stderr.contains("already_registered") => return run,
            Some(1) if stderr.contains("vault_unreachable") || stderr.contains("vault_error") => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("register ended {other:?}: {stderr}"),
        }
    }
    panic!("{} never registered", data_dir.display());
}

/// The machine id the agent records, from `properties --json`.
fn agent_machine(data_dir: &Path) -> String {
    let out = regent(data_dir).args(["--json", "properties"]).output().unwrap();
    let properties: Value = serde_json::from_slice(&out.stdout).unwrap();
    properties["vault"]["machine_id"].as_str().unwrap_or_else(|| panic!("not registered: {properties}")).to_string()
}

/// The vault's machines: their ids.
fn vault_machines(machines_json: &[u8]) -> Vec<String> {
    let machines: Value = serde_json::from_slice(machines_json).unwrap();
    machines.as_array().unwrap().iter().map(|m| m["machine_id"].as_str().unwrap().to_string()).collect()
}

/// One machine per agent, each agent's the vault's, no two agents sharing one.
fn assert_one_machine_per_agent(agents: &[PathBuf], machines: &[String]) {
    let recorded: Vec<String> = agents.iter().map(|a| agent_machine(a)).collect();
    let distinct: BTreeSet<&String> = recorded.iter().collect();
    assert_eq!(distinct.len(), agents.len(), "two agents recorded the same machine: {recorded:?}");
    assert_eq!(machines.len(), agents.len(), "machines at the vault {machines:?}, agents' {recorded:?}");
    let listed: BTreeSet<&String> = machines.iter().collect();
    assert_eq!(listed, distinct, "every agent's machine is the vault's, and only those");
}

/// How long one `regent register` takes here, to spread the kill moments over it.
fn time_one_registration(setup: &Setup, template: &Path) -> Duration {
    let probe = setup.path("probe-agent");
    copy_dir(template, &probe);
    let started = Instant::now();
    assert_eq!(register_until_done(&probe), 1);
    started.elapsed()
}

#[test]
fn an_agent_killed_anywhere_in_register_and_run_again_makes_exactly_one_machine() {
    const ROUNDS: usize = 30;
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    setup.prepare("template", &credentials);
    let template = setup.path("template");
    let took = time_one_registration(&setup, &template);
    let mut moments = Moments::seeded();
    let mut agents = vec![setup.path("probe-agent")];
    let mut cut_short = 0;
    for round in 0..ROUNDS {
        let agent = setup.path(&format!("agent-{round}"));
        copy_dir(&template, &agent);
        let mut child = regent(&agent).arg("register").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(moments.next(took + took / 2));
        // SIGKILL: no unwinding, no flush but what was acknowledged.
        let _ = child.kill();
        let status = child.wait().unwrap();
        cut_short += usize::from(!status.success());
        register_until_done(&agent);
        agents.push(agent);
    }
    eprintln!("{cut_short} of {ROUNDS} runs were killed before they ended");
    assert!(cut_short > 0, "no run was killed in the middle; the kill moments are too late");
    let listed = setup.admin(&["machines", "--vault", "prod", "--json"]);
    assert_eq!(listed.status.code(), Some(0));
    let machines = vault_machines(&listed.stdout);
    assert_one_machine_per_agent(&agents, &machines);
    // Each log still verifies.
    for agent in &agents {
        assert_eq!(regent(agent).args(["audit", "verify"]).output().unwrap().status.code(), Some(0));
    }
}

/// `regent vault serve` in a child process, killable with SIGKILL.
struct VaultProcess {
    child: Child,
    data_dir: PathBuf,
    listen: String,
}

impl VaultProcess {
    fn start(data_dir: &Path, listen: &str) -> VaultProcess {
        let mut last = String::new();
        // The port of a killed service may be held for a moment.
        for _ in 0..100 {
            let mut child = regent(data_dir)
                .args(["vault", "serve", "--listen", listen])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            stdout.read_line(&mut line).unwrap();
            // Drained to the end: a closed pipe would kill the service at its next line (SIGPIPE).
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
            if let Some(url) = line.trim().strip_prefix("listening on http://") {
                return VaultProcess { child, data_dir: data_dir.to_path_buf(), listen: url.to_string() };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = line;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the vault did not start: {last}");
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        *self = VaultProcess::start(&self.data_dir, &self.listen);
    }

    fn admin(&self, args: &[&str]) -> std::process::Output {
        regent(&self.data_dir)
            .arg("vault")
            .args(args)
            .arg("--server")
            .arg(self.url())
            .arg("--token-file")
            .arg(self.data_dir.join("admin.token"))
            .output()
            .unwrap()
    }
}

impl Drop for VaultProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_vault_killed_during_registrations_makes_no_extra_machine() {
    const ROUNDS: usize = 10;
    let setup = Setup::new();
    let mut vault = VaultProcess::start(&setup.path("child-vault"), "127.0.0.1:0");
    assert_eq!(vault.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.path("prod.VaultCredentials");
    let out = vault.admin(&["credentials", "--vault", "prod", "--output", credentials.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    setup.prepare("template", &credentials);
    let template = setup.path("template");
    let mut moments = Moments::seeded();
    let mut agents = Vec::new();
    let mut overlapped = 0;
    for round in 0..ROUNDS {
        // Two agents register at once while the vault is killed under them.
        let pair: Vec<PathBuf> = (0..2).map(|i| setup.path(&format!("agent-{round}-{i}"))).collect();
        let mut children = Vec::new();
        for agent in &pair {
            copy_dir(&template, agent);
            children.push(regent(agent).arg("register").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        }
        std::thread::sleep(moments.next(Duration::from_millis(150)));
        let killed_at = Instant::now();
        vault.kill_and_restart();
        for mut child in children {
            let status = child.wait().unwrap();
            // Still running when the vault went: its call was cut (it retried, or failed and the
            // next run asked again).
            overlapped += usize::from(!status.success() || killed_at.elapsed() > Duration::from_millis(50));
        }
        for agent in &pair {
            register_until_done(agent);
        }
        agents.extend(pair);
    }
    eprintln!("{overlapped} of {} registrations were in flight when the vault was killed", 2 * ROUNDS);
    assert!(overlapped > 0, "no registration was in flight when the vault was killed; the kill moments are too late");
    let listed = vault.admin(&["machines", "--vault", "prod", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", String::from_utf8_lossy(&listed.stderr));
    let machines = vault_machines(&listed.stdout);
    assert_one_machine_per_agent(&agents, &machines);
}
