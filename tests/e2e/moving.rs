//! Moving a server between vaults, and unregistering, through the real binary against a real vault
//! service: after every step exactly one vault lists the machine (none after a plain unregister),
//! whether the old vault was reachable, and wherever the move was killed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Setup, refused_with};

/// The machine ids `vault` lists.
fn listed(setup: &Setup, vault: &str) -> Vec<String> {
    let out = setup.admin(&["machines", "--vault", vault, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let machines: Value = serde_json::from_slice(&out.stdout).unwrap();
    machines.as_array().unwrap().iter().map(|m| m["machine_id"].as_str().unwrap().to_string()).collect()
}

/// The vault and machine the agent records, if registered.
fn recorded(setup: &Setup, agent: &str) -> Option<(String, String)> {
    let properties = setup.json(agent, &["properties"]);
    let vault = &properties["vault"];
    vault["machine_id"].as_str().map(|id| (vault["name"].as_str().unwrap().to_string(), id.to_string()))
}

/// Exactly one live machine in all, at `vault`, and it is the agent's.
fn one_live_machine_at(setup: &Setup, agent: &str, vault: &str, vaults: &[&str]) {
    let (at, machine) = recorded(setup, agent).unwrap_or_else(|| panic!("{agent} is not registered"));
    assert_eq!(at, vault);
    for v in vaults {
        let machines = listed(setup, v);
        let expected = if *v == vault { vec![machine.clone()] } else { Vec::new() };
        assert_eq!(machines, expected, "vault {v}");
    }
}

fn ok(result: (i32, String)) -> String {
    assert_eq!(result.0, 0, "{}", result.1);
    result.1
}

#[test]
fn moving_a_server_between_two_vaults_leaves_exactly_one_live_machine_at_each_step() {
    let setup = Setup::new();
    for vault in ["a", "b"] {
        assert_eq!(setup.admin(&["create", vault]).status.code(), Some(0));
    }
    let a = setup.download("a", "a.VaultCredentials");
    let b = setup.download("b", "b.VaultCredentials");
    setup.prepare("agent", &a);
    ok(setup.step("agent", &["register"]));
    one_live_machine_at(&setup, "agent", "a", &["a", "b"]);
    let passphrase_set_at = setup.json("agent", &["properties"])["encryption"]["set_at"].clone();

    // Loading the other vault's file says how to move, exactly.
    let (code, stderr) = setup.step("agent", &["credentials", "load", b.to_str().unwrap()]);
    refused_with((code, stderr.clone()), "credentials_wrong_vault");
    assert!(stderr.contains(&format!("run `regent register --credentials {}`", b.display())), "{stderr}");
    one_live_machine_at(&setup, "agent", "a", &["a", "b"]);

    // The move: one command.
    let out = setup.regent("agent").args(["register", "--credentials"]).arg(&b).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("unregistered machine") && stdout.contains("registered to vault b"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", String::from_utf8_lossy(&out.stderr));
    one_live_machine_at(&setup, "agent", "b", &["a", "b"]);
    assert_eq!(setup.json("agent", &["properties"])["encryption"]["set_at"], passphrase_set_at, "passphrase kept");
    // Recorded as the pair: unregistered from a (with b's credentials), registered with b.
    let audit = String::from_utf8(setup.regent("agent").args(["--json", "audit"]).output().unwrap().stdout).unwrap();
    let kinds: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    let tail: Vec<&str> = kinds.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(tail, ["Unregistered", "RegistrationAttempted", "Registered"], "{kinds:?}");

    // Moving to the vault it is registered to already: refused, nothing changes.
    refused_with(setup.step("agent", &["register", "--credentials", b.to_str().unwrap()]), "already_registered");
    one_live_machine_at(&setup, "agent", "b", &["a", "b"]);

    // And back again.
    let a_again = setup.download("a", "a2.VaultCredentials");
    ok(setup.step("agent", &["register", "--credentials", a_again.to_str().unwrap()]));
    one_live_machine_at(&setup, "agent", "a", &["a", "b"]);

    // A plain unregister tells the vault: no machine listed anywhere.
    ok(setup.step("agent", &["unregister"]));
    assert!(listed(&setup, "a").is_empty() && listed(&setup, "b").is_empty());
    assert_eq!(setup.step("agent", &["audit", "verify"]).0, 0);
}

#[test]
fn the_admin_removes_a_machine_and_its_agent_registers_again_as_one_new_machine() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "a"]).status.code(), Some(0));
    let a = setup.download("a", "a.VaultCredentials");
    setup.prepare("agent", &a);
    ok(setup.step("agent", &["register"]));
    let (_, machine) = recorded(&setup, "agent").unwrap();
    let out = setup.admin(&["machines", "remove", "--vault", "a", &machine, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let removed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(removed["machine_id"], machine.as_str());
    assert!(listed(&setup, "a").is_empty());
    let again = setup.admin(&["machines", "remove", "--vault", "a", &machine]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("has no machine"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The agent's own unregistration finds it removed already: told, no warning.
    let stderr = ok(setup.step("agent", &["unregister"]));
    assert!(!stderr.contains("warning"), "{stderr}");
    ok(setup.step("agent", &["register"]));
    assert_eq!(listed(&setup, "a").len(), 1);
}

#[test]
fn an_unregistration_the_vault_could_not_hear_is_completed_at_the_next_contact() {
    let mut setup = Setup::new();
    assert_eq!(setup.admin(&["create", "a"]).status.code(), Some(0));
    let a = setup.download("a", "a.VaultCredentials");
    for agent in ["retry", "reregister"] {
        setup.prepare(agent, &a);
        ok(setup.step(agent, &["register"]));
    }
    assert_eq!(listed(&setup, "a").len(), 2);

    {
        let _down = setup.vault_down_fast();
        for agent in ["retry", "reregister"] {
            let stderr = ok(setup.step(agent, &["unregister"]));
            let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
            assert_eq!(warnings.len(), 1, "one line says the vault was not told: {stderr}");
            assert!(warnings[0].contains("was not told"), "{stderr}");
            assert!(recorded(&setup, agent).is_none());
        }
        // Still down: an explicit retry is a refused step, the unregistration still pending.
        refused_with(setup.step("retry", &["unregister"]), "vault_unreachable");
    }
    setup.start_vault();
    assert_eq!(listed(&setup, "a").len(), 2, "the vault was not told yet");
    // Status says which vault still lists which machine, and what tells it.
    let status = setup.json("retry", &["status"]);
    let pending = status["pending_unregistrations"].as_array().unwrap();
    assert_eq!((pending.len(), pending[0]["vault"].as_str()), (1, Some("a")), "{status}");
    let human = String::from_utf8(setup.regent("retry").arg("status").output().unwrap().stdout).unwrap();
    assert!(human.contains("not yet told") && human.contains("still lists machine"), "{human}");

    // `regent unregister` again completes it, recorded.
    ok(setup.step("retry", &["unregister"]));
    assert_eq!(listed(&setup, "a").len(), 1);
    let audit = String::from_utf8(
        setup.regent("retry").args(["--json", "audit", "--kind", "RemovalCompleted"]).output().unwrap().stdout,
    )
    .unwrap();
    assert_eq!(audit.lines().count(), 1, "{audit}");
    assert_eq!(setup.json("retry", &["status"])["pending_unregistrations"], serde_json::json!([]));
    refused_with(setup.step("retry", &["unregister"]), "step_out_of_order");

    // The next register completes it before registering: one machine, the new one.
    let stdout = String::from_utf8(setup.regent("reregister").arg("register").output().unwrap().stdout).unwrap();
    assert!(stdout.contains("registered to vault a"), "{stdout}");
    let (_, machine) = recorded(&setup, "reregister").unwrap();
    assert_eq!(listed(&setup, "a"), vec![machine]);
    for agent in ["retry", "reregister"] {
        assert_eq!(setup.step(agent, &["audit", "verify"]).0, 0);
    }
}

/// Runs the move until it is done: a run killed before may be registered at either vault, or
/// unregistered with the new credentials loaded.
fn move_until_done(setup: &Setup, agent: &str, file: &Path) {
    for _ in 0..20 {
        let (code, stderr) = setup.step(agent, &["register", "--credentials", file.to_str().unwrap()]);
        match code {
            0 => return,
            1 if stderr.contains("already_registered") => return,
            1 if stderr.contains("vault_unreachable") || stderr.contains("vault_error") => {
                std::thread::sleep(Duration::from_millis(200))
            }
            other => panic!("the move ended {other}: {stderr}"),
        }
    }
    panic!("{agent} never moved");
}

#[test]
fn a_move_killed_anywhere_and_run_again_ends_with_exactly_one_live_machine() {
    const ROUNDS: usize = 8;
    let setup = Setup::new();
    for vault in ["a", "b"] {
        assert_eq!(setup.admin(&["create", vault]).status.code(), Some(0));
    }
    let a = setup.download("a", "a.VaultCredentials");
    let b = setup.download("b", "b.VaultCredentials");
    // How long an undisturbed move takes, to spread the kill moments over it.
    setup.prepare("probe", &a);
    ok(setup.step("probe", &["register"]));
    let started = Instant::now();
    move_until_done(&setup, "probe", &b);
    let took = started.elapsed();
    let mut agents = vec!["probe".to_string()];
    let mut killed = 0;
    for round in 0..ROUNDS {
        let agent = format!("agent-{round}");
        setup.prepare(&agent, &a);
        ok(setup.step(&agent, &["register"]));
        let mut child = setup
            .regent_std(&agent)
            .args(["register", "--credentials"])
            .arg(&b)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread over the run: the nth round is killed n/ROUNDS of the way through (and later).
        std::thread::sleep(took.mul_f64((round as f64 + 0.5) / ROUNDS as f64 * 1.2));
        let _ = child.kill();
        killed += usize::from(!child.wait().unwrap().success());
        move_until_done(&setup, &agent, &b);
        agents.push(agent);
    }
    assert!(killed > 0, "no move was killed before it ended");
    assert!(listed(&setup, "a").is_empty(), "every machine left vault a");
    let mut at_b = listed(&setup, "b");
    at_b.sort();
    let mut recorded_at_b: Vec<String> = agents
        .iter()
        .map(|agent| {
            let (vault, machine) = recorded(&setup, agent).unwrap();
            assert_eq!(vault, "b");
            machine
        })
        .collect();
    recorded_at_b.sort();
    assert_eq!(at_b, recorded_at_b, "one machine per agent at vault b, each the agent's");
    for agent in &agents {
        assert_eq!(setup.step(agent, &["audit", "verify"]).0, 0);
    }
}
