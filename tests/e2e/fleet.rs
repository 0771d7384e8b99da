//! `regent vault fleet` through the binary (issue 16): an agent registered through a real
//! tinyproxy that demands a user and password, with throttling set, shows in its vault's fleet as
//! its own `regent properties` shows it (the same projection, built at the vault from the records it
//! keeps), with its anchor current, and never the proxy's password.

use crate::support::{Setup, Tinyproxy, leaks, throttling_set};

const USER: &str = "fleet-svc";
const PASSWORD: &str = "Fleet-Proxy-Secret-7731";

#[test]
fn the_fleet_row_is_the_agents_own_properties_and_holds_no_password() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    setup.prepare("agent", &credentials);
    let proxy = Tinyproxy::start(USER, PASSWORD);
    let port = proxy.port.to_string();
    let ok = |out: std::process::Output, what: &str| {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(
        setup
            .regent("agent")
            .args(["proxy", "set", "--host", "127.0.0.1", "--port", &port, "--username", USER, "--password-stdin"])
            .write_stdin(format!("{PASSWORD}\n"))
            .output()
            .unwrap(),
        "proxy set",
    );
    ok(setup.regent("agent").arg("register").output().unwrap(), "register");
    ok(
        setup.regent("agent").args(throttling_set("mon-fri", "08:00-18:00", "512Kbps", "10Mbps")).output().unwrap(),
        "throttling set",
    );
    let properties = setup.json("agent", &["properties"]);
    let status = setup.json("agent", &["status"]);
    let machine_id = properties["vault"]["machine_id"].as_str().unwrap().to_string();

    let out = setup.admin(&["--json", "fleet", "--vault", "prod"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!leaks(&out.stdout, PASSWORD), "the proxy's password is not in the fleet");
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["machines"].as_array().map(Vec::len), Some(1), "{page}");
    let row = &page["machines"][0];
    assert_eq!(row["machine_id"], machine_id.as_str());
    assert_eq!(row["phase"], "registered");
    assert_eq!(row["proxy"], serde_json::json!({"host": "127.0.0.1", "port": proxy.port, "authenticates": true}));
    assert_eq!(row["throttling"]["work_hours"], properties["throttling"]["work_hours"]);
    assert_eq!(row["throttling"]["work_bandwidth"], properties["throttling"]["work_bandwidth"]);
    assert_eq!(row["scratch_dir"], properties["folders"]["scratch_dir"]);
    assert_eq!(row["passphrase_set_at"], properties["encryption"]["set_at"]);
    assert_eq!(row["credentials_expire_at"], properties["credentials"]["expires_at"]);
    assert_eq!((&row["last_event"]["step"], &row["last_event"]["outcome"]), (&"throttling".into(), &"accepted".into()));
    assert_eq!(row["last_event"]["position"], status["head"]["position"], "every record is at the vault");
    assert_eq!(row["anchor"]["status"], "current");
    assert_eq!(row["anchor"]["mirrored"], status["head"]["position"]);
    assert_eq!(row["agent_newer"], false);
    assert_eq!(page["next"], serde_json::Value::Null);

    // The table: a header and the machine's line, with the proxy's authentication but no password.
    let table = setup.admin(&["fleet", "--vault", "prod"]);
    assert_eq!(table.status.code(), Some(0), "{}", String::from_utf8_lossy(&table.stderr));
    let text = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("MACHINE ID") && lines[0].ends_with("ANCHOR"), "{text}");
    assert!(lines[1].starts_with(&machine_id), "{text}");
    assert!(lines[1].contains(&format!("127.0.0.1:{port} (auth)")) && lines[1].contains("registered"), "{text}");
    assert!(lines[1].contains("current at"), "{text}");
    assert!(!text.contains(PASSWORD));
    // The fleet's audit: the agent's own `regent audit` entries, at the vault; a refused step too.
    let refused = setup
        .regent("agent")
        .args(["credentials", "load"])
        .arg(setup.path("no-such.VaultCredentials"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    let own = setup.regent("agent").args(["--json", "audit"]).output().unwrap();
    let own: Vec<serde_json::Value> =
        String::from_utf8(own.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let out = setup.admin(&["--json", "audit", "--vault", "prod"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!leaks(&out.stdout, PASSWORD));
    let at_vault: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fields = |e: &serde_json::Value| {
        ["position", "at", "actor", "kind", "step", "outcome", "reason", "summary", "correlation_id"]
            .map(|f| e[f].clone())
    };
    assert_eq!(at_vault.iter().map(fields).collect::<Vec<_>>(), own.iter().map(fields).collect::<Vec<_>>());
    assert!(at_vault.iter().all(|e| e["machine_id"] == machine_id.as_str()));
    let refusals = setup.admin(&["--json", "audit", "--vault", "prod", "--outcome", "refused"]);
    let refusals: Vec<serde_json::Value> =
        String::from_utf8(refusals.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(refusals.len(), own.iter().filter(|e| e["outcome"] == "refused").count());
    assert!(refusals.iter().any(|e| e["reason"] == "credentials_unreadable"), "{refusals:?}");
    let proxy_steps = setup.admin(&["--json", "audit", "--vault", "prod", "--kind", "proxy", "--limit", "1"]);
    assert_eq!(proxy_steps.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&proxy_steps.stdout).lines().count(), 1);
    let table = setup.admin(&["audit", "--vault", "prod", "--limit", "2"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert_eq!(text.lines().count(), 4, "a heading, two entries, the next page: {text}");
    assert!(text.lines().last().unwrap().starts_with("more entries: --after "), "{text}");

    // A vault that does not exist, and a bad page size: one line, a code each.
    let missing = setup.admin(&["fleet", "--vault", "nowhere"]);
    assert_eq!(missing.status.code(), Some(1));
    let limit = setup.admin(&["fleet", "--vault", "prod", "--limit", "0"]);
    assert_eq!(limit.status.code(), Some(1), "{}", String::from_utf8_lossy(&limit.stderr));
    assert!(String::from_utf8_lossy(&limit.stderr).contains("limit must be 1 to 1000"));
}
